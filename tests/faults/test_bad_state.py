"""Bad state files at start-up (issue 5 "Bad state"): the daemon starts, nothing is lost on the exchange.

Each test first runs a real daemon until it holds an OPEN trade on its own simulator, stops
it, damages ``state/trader.db`` the way a disk or an upgrade would, and starts it again.
A file full of NUL bytes is incident 16 (tests/integration/test_restart_reconciliation.py).

* truncated file: quarantined as ``trader.db.corrupt.<time>``, a fresh store, the exchange's
  position of ours makes every strategy start paused, no order is sent on its symbols;
* a schema from an older version (1: before the command queue): migrated in place, the
  trade comes back and is closed by its own exit, no second trade.
"""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from clock import SimulatedClock
from option_selection import strangle
from persistence import SCHEMA_VERSION, StateStore
from strategy import StrategyConfig, max_hold_hours
from tests.faults.test_incident_rig import DaemonFiles, creates, daemon_env, run_daemon
from trade_execution import ExecutionParams

# Tuesday 2026-03-03 09:00 UTC.
START = datetime(2026, 3, 3, 9, 0, tzinfo=timezone.utc).timestamp()
NAME = "bad_state"


def held_strangle() -> StrategyConfig:
    return StrategyConfig(
        name=NAME,
        legs=strangle(0.01, dte="next", side=1),
        exit_conditions=[max_hold_hours(0.5)],
        execution_mode="limit",
        max_concurrent_trades=1,
        max_trades_per_day=1,
        check_interval_seconds=1.0,
        execution_params=ExecutionParams(fill_timeout_seconds=10.0, aggressive_buffer_pct=3.0),
    )


def open_a_trade(tmp_path: Path, sim_factory):
    """A first daemon life that ends (cleanly) with one OPEN trade and its positions on the exchange."""
    clock = SimulatedClock(start=START, speed=0)
    sim = sim_factory(clock=clock)
    env = daemon_env(tmp_path, sim)
    assert run_daemon(["--run-for", "300"], clock=clock, env=env, strategies=[held_strangle]) == 0
    files = DaemonFiles(tmp_path)
    [trade] = files.trades()
    assert trade["state"] == "OPEN"
    symbols = [leg["symbol"] for leg in trade["legs"]]
    positions = {symbol: sim.exchange.position_of(None, symbol) for symbol in symbols}
    assert all(qty == 0.01 for qty in positions.values())
    return clock, sim, env, files, trade, positions


def test_a_truncated_state_file_is_quarantined_and_the_daemon_starts_paused_touching_nothing(tmp_path, sim_factory):
    clock, sim, env, files, trade, positions = open_a_trade(tmp_path, sim_factory)
    db = files.state / "trader.db"
    size = db.stat().st_size
    with db.open("r+b") as handle:
        handle.truncate(size // 2)
    restarted_at = clock.now()

    assert run_daemon(["--run-for", "3600"], clock=clock, env=env, strategies=[held_strangle]) == 0

    quarantined = list(files.state.glob("trader.db.corrupt.*"))
    assert len(quarantined) == 1 and quarantined[0].stat().st_size == size // 2   # kept as it was, for a human
    kinds = {(alert["level"], alert["kind"]) for alert in files.alerts()}
    assert {("CRITICAL", "state_quarantined"), ("CRITICAL", "quarantine_start")} <= kinds
    runner = files.runner_state(NAME)
    assert runner is not None and runner["paused"] and "quarantined" in runner["pause_reason"]
    # Nothing lost or touched on the exchange: no order at all after the restart, positions as they were.
    assert creates(sim, since=restarted_at) == []
    assert {symbol: sim.exchange.position_of(None, symbol) for symbol in positions} == positions
    assert files.trades() == []                                  # the fresh store invents nothing


def _downgrade_to_version_1(db: Path) -> None:
    """What a store written before the command queue looks like: schema 1, same tables but ``commands``."""
    conn = sqlite3.connect(db)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "commands" in tables
        conn.execute("DROP TABLE commands")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        conn.commit()
    finally:
        conn.close()


def test_a_store_of_an_older_schema_is_migrated_and_its_trade_is_closed_by_its_own_exit(tmp_path, sim_factory):
    clock, sim, env, files, trade, positions = open_a_trade(tmp_path, sim_factory)
    db = files.state / "trader.db"
    _downgrade_to_version_1(db)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
    finally:
        conn.close()

    assert run_daemon(["--run-for", "3600"], clock=clock, env=env, strategies=[held_strangle]) == 0

    assert list(files.state.glob("trader.db.corrupt.*")) == []
    store = StateStore(db)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        trades = store.load_trades()
    finally:
        store.close()
    assert [t["id"] for t in trades] == [trade["id"]]              # restored, and no second trade that day
    assert trades[0]["state"] == "CLOSED" and trades[0]["exit_reason"] == "max_hold_hours(hours=0.5)"
    assert all(sim.exchange.position_of(None, symbol) == 0.0 for symbol in positions)
