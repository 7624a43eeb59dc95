"""The daemon end to end, in-process: embedded simulator, real HTTP over loopback, simulated time.

A speed-0 ``SimulatedClock`` moves only when the monitor loop waits, so 30 simulated minutes
take a few wall seconds and nothing sleeps for real.
"""
from __future__ import annotations

import json
import re
import signal
from datetime import datetime, timezone
from pathlib import Path

import main as main_module
from clock import SimulatedClock
from persistence import StateStore
from prefix_ownership import clock_trade_seq_floor

# Tuesday 2026-03-03 09:00 UTC.
START = datetime(2026, 3, 3, 9, 0, 0, tzinfo=timezone.utc).timestamp()
# A new state directory numbers its trades from the clock's floor (docs/RECOVERY.md L2).
T1 = f"T{clock_trade_seq_floor(START) + 1:09d}"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "LOG_DIR": str(tmp_path / "logs"),
        "STATE_DIR": str(tmp_path / "state"),
        "TRADING_ENVIRONMENT": "sim",
        "POLL_INTERVAL_SECONDS": "10",
        **extra,
    }


def read_log(tmp_path: Path) -> str:
    return (tmp_path / "logs" / "trading.log").read_text(encoding="utf-8")


def stored_trades(tmp_path: Path) -> list[dict]:
    store = StateStore(tmp_path / "state" / "trader.db")
    try:
        return store.load_trades()
    finally:
        store.close()


def stored_orders(tmp_path: Path) -> list[dict]:
    store = StateStore(tmp_path / "state" / "trader.db")
    try:
        return store.load_orders()
    finally:
        store.close()


def test_micro_strangle_round_trip_in_thirty_simulated_minutes(tmp_path):
    clock = SimulatedClock(start=START, speed=0)
    code = main_module.main(["--run-for", "1800", "--strategy", "micro_strangle"], clock=clock,
                            env=env_for(tmp_path), dotenv_path=None)

    assert code == 0
    log = read_log(tmp_path)
    assert "PAPER TRADING on the embedded simulator" in log
    assert "strategies: micro_strangle" in log and "daily_short_strangle ready" not in log
    # Resolved by delta on the next daily expiry, both legs bought.
    resolved = re.search(r"resolved 2 legs at index [\d.]+: BUY 0\.01 (BTCUSD-4MAR26-\d+-C), BUY 0\.01 "
                         r"(BTCUSD-4MAR26-\d+-P)", log)
    assert resolved, "no resolution line"
    # Opened with fills and fees.
    opened = re.search(r"trade (T\d{9}) OPEN: BUY 0\.01 \S+-C @ ([\d.]+), BUY 0\.01 \S+-P @ ([\d.]+); "
                       r"fees ([\d.]+) USD; entry premium (-[\d.]+) USD", log)
    assert opened, "no open line with fills"
    trade_id = opened.group(1)
    call_px, put_px, fees = float(opened.group(2)), float(opened.group(3)), float(opened.group(4))
    assert call_px > 0 and put_px > 0 and fees > 0
    assert float(opened.group(5)) == round(-0.01 * (call_px + put_px), 2)
    # Closed by its exit, with realized PnL.
    closed = re.search(rf"trade {trade_id} CLOSED by (\S+): realized PnL (-?[\d.]+) USD", log)
    assert closed, "no close line"
    assert closed.group(1).startswith(("max_hold_hours", "profit_target_pct", "max_loss_pct"))
    assert "stopping: --run-for 1800s of simulated time elapsed" in log and "stopped cleanly" in log

    trade = next(t for t in stored_trades(tmp_path) if t["id"] == trade_id)
    assert trade["state"] == "CLOSED" and trade["strategy"] == "micro_strangle"
    snapshot = json.loads((tmp_path / "state" / "trades_snapshot.json").read_text(encoding="utf-8"))
    assert snapshot["strategies"]["micro_strangle"]["closed"] >= 1   # the human-readable copy follows the store
    # The event journal: every order and trade event, in the store and as JSON lines.
    lines = [json.loads(line) for line in (tmp_path / "logs" / "events.jsonl").read_text().splitlines()]
    kinds = {line["kind"] for line in lines}
    assert {"order_recorded", "order_updated", "trade"} <= kinds
    trade_events = [line["event"] for line in lines if line["kind"] == "trade" and line["trade_id"] == trade_id]
    assert trade_events[0] == "created" and trade_events[-1] != "created"
    recorded = [line for line in lines if line["kind"] == "order_recorded"]
    assert len(recorded) == len(stored_orders(tmp_path))  # one "recorded" event per ledger order
    assert round(trade["realized_pnl"], 2) == float(closed.group(2))
    assert trade["closed_at"] - trade["opened_at"] <= 1800
    # Health lines every 300 simulated seconds.
    health = [json.loads(line) for line in (tmp_path / "logs" / "health.log").read_text().splitlines()]
    assert 5 <= len(health) <= 7
    assert all("trades_per_state" in line and "equity" in line for line in health)
    assert 1790 <= clock.now() - START <= 1830


def test_sigterm_leaves_the_open_trade_alone(tmp_path):
    """Incident 3: the signal stops the loop; no order after it, the trade stays OPEN."""

    class SignallingClock(SimulatedClock):
        def __init__(self) -> None:
            super().__init__(start=START, speed=0)
            self.signalled = False

        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if not self.signalled and self.now() - START >= 120:
                self.signalled = True
                self.signal_time = self.now()
                signal.raise_signal(signal.SIGTERM)

    clock = SignallingClock()
    previous = signal.getsignal(signal.SIGTERM)
    code = main_module.main(["--strategy", "micro_strangle"], clock=clock, env=env_for(tmp_path), dotenv_path=None)

    assert code == 0
    assert signal.getsignal(signal.SIGTERM) is previous
    log = read_log(tmp_path)
    assert "stopping: SIGTERM" in log
    assert re.search(r"shutdown leaves 0 working order\(s\) and 1 trade\(s\) with exposure", log)
    [trade] = stored_trades(tmp_path)
    assert trade["state"] == "OPEN"
    orders = stored_orders(tmp_path)
    assert orders and all(order["sent_at"] < clock.signal_time for order in orders)
    assert all(int(order["intent"]) in (1, 2) for order in orders)  # open intents only: nothing closed


def test_check_resolves_and_prints_legs_without_any_order(tmp_path, sim, capsys):
    env = env_for(tmp_path, COINCALL_BASE_URL=sim.base_url, COINCALL_API_KEY_SIM=sim.api_key,
                  COINCALL_API_SECRET_SIM=sim.api_secret)
    code = main_module.main(["check"], clock=sim.clock, env=env, dotenv_path=None)

    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("micro_strangle", "daily_short_strangle", "iron_condor", "rfq_endurance"):
        assert f"{name}: " in out
    assert re.search(r"micro_strangle: 2 legs at index [\d,.]+, execution limit -> limit", out)
    assert re.search(r"iron_condor: 4 legs .* execution auto -> limit", out)
    assert "rfq_endurance: 2 legs" in out and "execution rfq -> rfq" in out
    assert len(re.findall(r"  leg \d: (BUY|SELL) ", out)) == 12  # 2 + 2 + 4 + 2 + 2 legs
    assert "5 of 5 strategies OK; no order was sent" in out
    assert sim.counts["create_order"] == 0
    assert not (tmp_path / "state" / "trader.db").exists()


def test_check_exits_2_when_a_strategy_cannot_resolve(tmp_path, sim, capsys):
    from option_selection import LegSpec
    from strategy import StrategyConfig

    def impossible() -> StrategyConfig:
        return StrategyConfig(name="impossible", legs=[LegSpec("C", 1, 0.01, {"type": "strike", "value": 1.0})],
                              hold_to_expiry=True)

    env = env_for(tmp_path, COINCALL_BASE_URL=sim.base_url, COINCALL_API_KEY_SIM=sim.api_key,
                  COINCALL_API_SECRET_SIM=sim.api_secret)
    code = main_module.main(["check"], clock=sim.clock, env=env, dotenv_path=None, strategies=[impossible])
    assert code == 2
    assert "impossible: FAILED" in capsys.readouterr().out
    assert sim.counts["create_order"] == 0


def test_a_restart_reloads_the_open_trade_closes_it_by_its_exit_and_never_opens_a_second(tmp_path):
    """Incident 1 and 3: stop with an OPEN trade, start again on the same state directory."""
    env = env_for(tmp_path)
    # First run: the micro strangle opens (its max-hold exit is 15 min away) and the run stops.
    first = main_module.main(["--run-for", "120", "--strategy", "micro_strangle"],
                             clock=SimulatedClock(start=START, speed=0), env=env, dotenv_path=None)
    assert first == 0
    [trade] = stored_trades(tmp_path)
    assert trade["state"] == "OPEN"
    orders_after_first = {o["client_order_id"] for o in stored_orders(tmp_path)}
    assert orders_after_first and all(o["intent"] in (1, 2) for o in stored_orders(tmp_path))

    # Second run, later the same morning, on the same state (daemon store + paper account).
    second = main_module.main(["--run-for", "1800", "--strategy", "micro_strangle"],
                              clock=SimulatedClock(start=START + 300, speed=0), env=env, dotenv_path=None)
    assert second == 0
    log = read_log(tmp_path)
    assert "recovered 1 trades from the store" in log
    trades = stored_trades(tmp_path)
    reloaded = next(t for t in trades if t["id"] == trade["id"])
    assert reloaded["state"] == "CLOSED"
    assert reloaded["exit_reason"].startswith(("max_hold_hours", "profit_target_pct", "max_loss_pct"))
    # While the reloaded trade was active, no second trade was opened (max_concurrent_trades=1).
    others = [t for t in trades if t["id"] != trade["id"]]
    assert all(t["created_at"] >= reloaded["closed_at"] for t in others)
    # Every order of the close went out reduce-only, and no open order of the first trade was re-sent.
    closes = [o for o in stored_orders(tmp_path) if o["trade_id"] == trade["id"] and o["intent"] >= 3]
    assert closes and all(o["reduce_only"] for o in closes)
    assert {o["client_order_id"] for o in stored_orders(tmp_path)
            if o["trade_id"] == trade["id"] and o["intent"] in (1, 2)} == orders_after_first


import pytest  # noqa: E402


@pytest.mark.parametrize("strategy, mode", [("rfq_endurance", "rfq"), ("smart_strangle", "smart")])
def test_rfq_and_smart_strategies_open_and_close_through_their_engine(tmp_path, strategy, mode):
    """Issue 4 acceptance: `python main.py --speed 60 --run-for 3600 --strategy NAME`, in-process."""
    code = main_module.main(["--run-for", "3600", "--strategy", strategy], clock=SimulatedClock(start=START, speed=0),
                            env=env_for(tmp_path), dotenv_path=None)
    assert code == 0
    log = read_log(tmp_path)
    assert f"{mode} job {T1} OPEN" in log and f"{mode} job {T1} CLOSE" in log
    closed = re.search(rf"trade {T1} CLOSED by (\S+): realized PnL (-?[\d.]+) USD, fees ([\d.]+) USD", log)
    assert closed and float(closed.group(3)) > 0
    [trade] = [t for t in stored_trades(tmp_path) if t["id"] == T1]
    assert trade["execution_mode"] == mode and trade["state"] == "CLOSED"
    if mode == "smart":  # every close order went to the book reduce-only (block trades carry no such flag)
        closes = [o for o in stored_orders(tmp_path) if o["trade_id"] == T1 and o["intent"] >= 3]
        assert closes and all(o["reduce_only"] for o in closes)


def test_status_reports_the_store_and_the_external_exchange_without_sending_orders(tmp_path, sim, capsys):
    """`python main.py status [--json]` next to a daemon that trades on a separate simulator."""
    env = env_for(tmp_path, COINCALL_BASE_URL=sim.base_url, COINCALL_API_KEY_SIM=sim.api_key,
                  COINCALL_API_SECRET_SIM=sim.api_secret)
    assert main_module.main(["--run-for", "120", "--strategy", "micro_strangle"], clock=sim.clock, env=env,
                            dotenv_path=None) == 0
    capsys.readouterr()
    creates = len(sim.requests_for("create_order"))

    assert main_module.main(["status", "--json"], clock=sim.clock, env=env, dotenv_path=None) == 0
    report = json.loads(capsys.readouterr().out)
    [active] = report["store"]["active_trades"]
    assert active["strategy"] == "micro_strangle" and active["state"] == "OPEN" and len(active["exposure"]) == 2
    assert report["exchange"]["available"] is True
    held = {p["symbol"]: p["qty"] for p in report["exchange"]["positions"]}
    assert all(held[symbol] == abs(qty) for symbol, qty in active["exposure"].items())

    assert main_module.main(["status"], clock=sim.clock, env=env, dotenv_path=None) == 0
    text = capsys.readouterr().out
    assert active["id"] in text and "micro_strangle" in text and "exchange: equity" in text
    assert len(sim.requests_for("create_order")) == creates  # read-only


def test_status_without_state_says_so(tmp_path, capsys):
    assert main_module.main(["status"], env=env_for(tmp_path), dotenv_path=None) == 0
    out = capsys.readouterr().out
    assert "no state yet" in out and "embedded simulator" in out
