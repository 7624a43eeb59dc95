"""Lock-step simulated time: with the embedded simulator, `--speed` paces waits and changes nothing else.

Simulated time moves only while the daemon waits; `--speed N` makes each wait take `1/N` of its
length in real seconds. The same seed and start instant must therefore give the very same trades
and orders whether the run is paced or not (issue 11: above ~100x the old wall-coupled clock let the
daemon's own work consume simulated time and silently skipped entries).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

import main as main_module
from clock import SimulatedClock
from persistence import StateStore

# Tuesday 2026-03-03 10:00 UTC: a normal trading hour, away from the 08:00 expiry.
START = datetime(2026, 3, 3, 10, 0, 0, tzinfo=timezone.utc).timestamp()
RUN_FOR = "2400"   # simulated seconds: room for two micro_strangle round trips (15-minute holds)


def run_daemon(tmp_path: Path, extra_args: list[str]) -> tuple[list[tuple], list[tuple], SimulatedClock]:
    """One in-process daemon on the embedded simulator; its trades and orders, as comparable rows."""
    clock = SimulatedClock(start=START, speed=0)
    env = {"TRADING_ENVIRONMENT": "sim", "LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state"),
           "SIM_SEED": "11"}
    code = main_module.main([*extra_args, "--run-for", RUN_FOR, "--strategy", "micro_strangle"], clock=clock,
                            env=env, dotenv_path=None)
    assert code == 0
    store, _ = StateStore.open(tmp_path / "state" / "trader.db", clock)
    try:
        trades = sorted(
            (t["id"], t["state"], t.get("exit_reason"), t.get("opened_at"), t.get("closed_at"),
             t.get("realized_pnl"), tuple(leg["symbol"] for leg in t["legs"]))
            for t in store.load_trades())
        orders = sorted(
            (o["client_order_id"], o["symbol"], o["side"], o["qty"], o["price"], o["status"], o.get("filled_qty"),
             o.get("avg_price"), o.get("sent_at"))
            for o in store.load_orders())
    finally:
        store.close()
    return trades, orders, clock


@pytest.fixture(scope="module")
def unpaced(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[tuple], list[tuple], SimulatedClock]:
    return run_daemon(tmp_path_factory.mktemp("unpaced"), [])


def test_a_run_trades_and_its_clock_moves_only_by_waiting(unpaced):
    trades, orders, clock = unpaced
    assert len(trades) >= 2
    assert any(state == "CLOSED" for _, state, *_ in trades)
    assert orders
    assert clock.lockstep and clock.pace == 0
    # The run stops on the first wake at or after --run-for: within one wait slice of it.
    assert START + float(RUN_FOR) <= clock.now() < START + float(RUN_FOR) + 15


def test_paced_and_unpaced_runs_of_one_seed_give_identical_trades_and_orders(unpaced, tmp_path):
    trades, orders, _ = unpaced
    paced_trades, paced_orders, clock = run_daemon(tmp_path, ["--speed", "7200"])
    assert clock.lockstep and clock.pace == 7200
    assert paced_trades == trades
    assert paced_orders == orders


def test_a_paced_wait_moves_time_by_exactly_its_length():
    clock = SimulatedClock(start=START, speed=0, pace=1e6)
    clock.sleep(12.5)
    assert clock.now() == START + 12.5
    with pytest.raises(ValueError):
        SimulatedClock(start=START, speed=2.0, pace=10.0)
    wall = SimulatedClock(start=START, speed=2.0)
    with pytest.raises(ValueError):
        wall.set_pace(10.0)
