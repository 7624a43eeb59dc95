"""What a backtest changes in the daemon's settings, and that the environment cannot change it for live."""
from __future__ import annotations

from pathlib import Path

from backtest import backtest_settings
from clock import SimulatedClock
from config import load_settings
from persistence import StateStore

SYNCHRONOUS = {1: "NORMAL", 2: "FULL"}


def synchronous_of(store: StateStore) -> str:
    return SYNCHRONOUS[store._conn.execute("PRAGMA synchronous").fetchone()[0]]


def test_a_backtest_runs_in_process_without_per_write_fsync_checkpoints_or_snapshots(tmp_path):
    settings = backtest_settings(tmp_path / "out", seed=3, poll=10.0)
    assert settings.sim_transport == "inprocess"
    assert settings.sim_checkpoint_seconds is None
    assert settings.durable_state is False and settings.trades_snapshot_export is False
    assert settings.state_dir == tmp_path / "out" / "state"


def test_the_daemon_keeps_durable_state_and_no_environment_variable_turns_it_off(tmp_path):
    env = {"TRADING_ENVIRONMENT": "sim", "STATE_DIR": str(tmp_path), "DURABLE_STATE": "false",
           "SIM_TRANSPORT": "inprocess", "TRADES_SNAPSHOT_EXPORT": "false", "SIM_CHECKPOINT_SECONDS": "0"}
    settings = load_settings(env, dotenv_path=None)
    assert settings.durable_state is True and settings.trades_snapshot_export is True
    assert settings.sim_transport == "wire" and settings.sim_checkpoint_seconds == 60.0


def test_a_durable_store_commits_with_full_sync_and_a_backtest_store_with_normal(tmp_path):
    clock = SimulatedClock(start=1_772_409_600.0, speed=0)
    durable, _ = StateStore.open(Path(tmp_path) / "live" / "trader.db", clock)
    fast, _ = StateStore.open(Path(tmp_path) / "bt" / "trader.db", clock, durable=False)
    try:
        assert (synchronous_of(durable), synchronous_of(fast)) == ("FULL", "NORMAL")
    finally:
        durable.close()
        fast.close()
