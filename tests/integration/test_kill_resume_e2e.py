"""``python main.py kill`` and ``resume`` end to end (BEHAVIOUR.md 7.6, 7.8, incident 40).

The daemon runs in-process (``main.main``) against a simulator on the same speed-0 clock,
over real HTTP. "A daemon is running" is real here: the command line is invoked from inside
the daemon's own clock, while the daemon holds the instance lock, so it takes the queue path;
the daemon then executes the command on its next wake. Every assertion about orders reads
what the simulator received.
"""
from __future__ import annotations

import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

import main as main_module
from clock import SimulatedClock
from option_selection import strangle
from order_ledger import parse_client_order_id
from persistence import StateStore
from prefix_ownership import clock_trade_seq_floor
from strategy import StrategyConfig, max_hold_hours, min_available_margin_pct
from trade_execution import ExecutionParams

# Tuesday 2026-03-03 09:00 UTC.
START = datetime(2026, 3, 3, 9, 0, 0, tzinfo=timezone.utc).timestamp()
# A new state directory numbers its trades from the clock's floor (docs/RECOVERY.md L2).
FIRST_SEQ = clock_trade_seq_floor(START) + 1
T1, T2 = f"T{FIRST_SEQ:09d}", f"T{FIRST_SEQ + 1:09d}"
PREFIX = 101
FOREIGN_COID = 555_000_000_000_001_001  # another system's prefix (555)
KILL_INTENTS = (7, 8)


class HookClock(SimulatedClock):
    """The shared simulated clock; ``at(t, fn)`` runs ``fn`` once, inside the first sleep at or after t."""

    def __init__(self) -> None:
        super().__init__(start=START, speed=0)
        self._hooks: list[tuple[float, Callable[[], Any]]] = []

    def at(self, when: float, action: Callable[[], Any]) -> None:
        self._hooks.append((when, action))

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        due = [hook for hook in self._hooks if self.now() >= hook[0]]
        self._hooks = [hook for hook in self._hooks if hook not in due]
        for _, action in due:
            action()


def tiny_strangle(name: str, delta: float, hold_hours: float = 3.0) -> Callable[[], StrategyConfig]:
    """A long 0.01 strangle that enters at once, holds for hours and never cools down."""

    def factory() -> StrategyConfig:
        return StrategyConfig(
            name=name, legs=strangle(0.01, call_delta=delta, put_delta=-delta, dte="next", side=1),
            entry_conditions=[min_available_margin_pct(50)], exit_conditions=[max_hold_hours(hold_hours)],
            execution_mode="limit", max_concurrent_trades=1, max_trades_per_day=12, cooldown_seconds=0.0,
            check_interval_seconds=60.0,
            execution_params=ExecutionParams(fill_timeout_seconds=30.0, aggressive_buffer_pct=2.0,
                                             max_requote_rounds=10),
        )

    factory.__name__ = name
    return factory


ALPHA = tiny_strangle("alpha", 0.25)
BETA = tiny_strangle("beta", 0.15)


@pytest.fixture
def clock() -> HookClock:
    return HookClock()


@pytest.fixture
def exchange(sim_factory, clock):
    return sim_factory(clock=clock)


@pytest.fixture
def env(tmp_path, exchange) -> dict[str, str]:
    return {
        "LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state"), "TRADING_ENVIRONMENT": "sim",
        "POLL_INTERVAL_SECONDS": "10", "COINCALL_BASE_URL": exchange.base_url,
        "COINCALL_API_KEY_SIM": exchange.api_key, "COINCALL_API_SECRET_SIM": exchange.api_secret,
    }


def run(argv: list[str], clock: Any, env: dict, strategies=(ALPHA,)) -> int:
    return main_module.main(argv, clock=clock, env=env, dotenv_path=None, strategies=list(strategies))


def cli_from_inside_the_daemon(argv: list[str], env: dict, codes: list[int]) -> Callable[[], None]:
    """The operator's command line, run while the daemon holds the lock (its own clock)."""
    return lambda: codes.append(run(argv, SimulatedClock(start=START, speed=0), env))


def open_store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state" / "trader.db")


def stored(tmp_path: Path) -> tuple[list[dict], list[dict], list[dict]]:
    with open_store(tmp_path) as store:
        return store.load_trades(), store.load_orders(), store.commands()


def runner_state(tmp_path: Path, name: str) -> dict:
    with open_store(tmp_path) as store:
        return store.load_runner_state(name) or {}


def our_creates(exchange, since: float = 0.0) -> list[tuple[Any, dict]]:
    """(decoded id, params) of every create with our prefix received at or after ``since``."""
    found = []
    for record in exchange.requests_for("create_order"):
        coid = record.params.get("clientOrderId")
        if coid is None or record.time_ms < since * 1000:
            continue
        parts = parse_client_order_id(int(coid))
        if parts.prefix == PREFIX:
            found.append((parts, record.params))
    return found


def positions(call) -> dict[str, float]:
    rows = call("GET", "/open/option/position/get/v1")["data"]
    return {row["symbol"]: float(row["qty"]) * (1 if row["tradeSide"] == 1 else -1) for row in rows
            if float(row["qty"]) > 0}


def pending_client_ids(call) -> set[int]:
    listed = call("GET", "/open/option/order/pending/v1", {"pageSize": 50})["data"]["list"]
    return {int(order["clientOrderId"]) for order in listed if order.get("clientOrderId") is not None}


def assert_kill_orders_only(exchange, since: float, trade_seqs: set[int]) -> None:
    creates = our_creates(exchange, since)
    assert creates, "the kill sent nothing"
    assert {parts.trade_seq for parts, _ in creates} <= trade_seqs
    assert all(parts.intent in KILL_INTENTS for parts, _ in creates), [p.intent for p, _ in creates]
    assert all(int(params["reduceOnly"]) == 1 for _, params in creates)


# ------------------------------------------------------------------------------------------------------------------


def test_kill_queued_to_a_running_daemon_flattens_our_trade_pauses_and_resume_lifts_it(tmp_path, clock, exchange,
                                                                                        env, signed_request_for,
                                                                                        capsys):
    codes: list[int] = []
    clock.at(START + 150, cli_from_inside_the_daemon(["kill", "--yes"], env, codes))
    assert run(["--run-for", "600"], clock, env) == 0

    assert codes == [1] and "stays queued" in capsys.readouterr().out  # the daemon was mid-sleep
    trades, _, commands = stored(tmp_path)
    [kill] = commands
    assert kill["status"] == "done" and kill["result"]["trades"] == [T1]
    applied_at = kill["result"]["applied_at"]
    assert START + 150 <= applied_at <= START + 162  # taken on the daemon's next wake
    [trade] = trades  # nothing opened after the kill
    assert trade["state"] == "CLOSED" and trade["exit_reason"] == "kill_switch"
    assert_kill_orders_only(exchange, applied_at, {FIRST_SEQ})
    assert positions(signed_request_for(exchange)) == {}
    assert kill["result"]["positions_left"] == []
    assert runner_state(tmp_path, "alpha")["paused"] is True
    assert runner_state(tmp_path, "alpha")["pause_reason"] == "kill switch (command 1)"

    # A restart keeps the pause: no entry.
    creates = len(exchange.requests_for("create_order"))
    assert run(["--run-for", "300"], clock, env) == 0
    assert len(exchange.requests_for("create_order")) == creates and len(stored(tmp_path)[0]) == 1

    # resume without a daemon: the stored pause is lifted; the next start trades again.
    assert run(["resume", "alpha"], clock, env) == 0
    assert "resumed alpha" in capsys.readouterr().out
    assert runner_state(tmp_path, "alpha")["paused"] is False
    assert run(["--run-for", "300"], clock, env) == 0
    trades = stored(tmp_path)[0]
    assert [t["id"] for t in trades] == [T1, T2] and trades[1]["state"] == "OPEN"


def test_kill_of_strategy_alpha_leaves_beta_trading(tmp_path, clock, exchange, env, signed_request_for):
    codes: list[int] = []
    clock.at(START + 150, cli_from_inside_the_daemon(["kill", "--strategy", "alpha", "--yes"], env, codes))
    assert run(["--run-for", "400"], clock, env, strategies=(ALPHA, BETA)) == 0

    assert codes == [1]
    trades, orders, [kill] = stored(tmp_path)
    by_strategy = {t["strategy"]: t for t in trades}
    assert len(trades) == 2
    alpha, beta = by_strategy["alpha"], by_strategy["beta"]
    assert kill["status"] == "done" and kill["result"]["trades"] == [alpha["id"]]
    assert alpha["state"] == "CLOSED" and alpha["exit_reason"] == "kill_switch"
    assert beta["state"] == "OPEN" and beta["exit_reason"] is None
    assert {o["intent"] for o in orders if o["trade_id"] == beta["id"]} <= {1, 2}
    assert_kill_orders_only(exchange, kill["result"]["applied_at"], {alpha["seq"]})
    held = positions(signed_request_for(exchange))
    assert set(held) == {leg["symbol"] for leg in beta["legs"]}  # only beta's legs are still held
    assert runner_state(tmp_path, "alpha")["paused"] is True
    assert runner_state(tmp_path, "beta")["paused"] is False


# ------------------------------------------------------------------------------------------------------------------


def open_alpha_and_add_manual_activity(tmp_path, clock, exchange, env, call) -> tuple[dict, str, str]:
    """Alpha opens; then someone else rests a bid and buys 0.05 on alpha's call, by hand."""
    assert run(["--run-for", "120"], clock, env) == 0
    [trade] = stored(tmp_path)[0]
    assert trade["state"] == "OPEN"
    call_symbol = next(leg["symbol"] for leg in trade["legs"] if leg["symbol"].endswith("-C"))
    put_symbol = next(leg["symbol"] for leg in trade["legs"] if leg["symbol"].endswith("-P"))
    answer = call("POST", "/open/option/order/create/v1", {
        "symbol": call_symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": 1.0,
        "clientOrderId": FOREIGN_COID})
    assert answer["code"] == 0, answer
    book = requests.get(f"{exchange.base_url}/open/option/order/orderbook/v1/{call_symbol}", timeout=5).json()["data"]
    answer = call("POST", "/open/option/order/create/v1", {
        "symbol": call_symbol, "qty": 0.05, "tradeSide": 1, "tradeType": 1, "price": float(book["asks"][0]["price"])})
    assert answer["code"] == 0, answer
    assert positions(call) == {call_symbol: pytest.approx(0.06), put_symbol: pytest.approx(0.01)}
    return trade, call_symbol, put_symbol


def test_incident_40_kill_touches_only_our_exposure_and_prefix(tmp_path, clock, exchange, env, signed_request_for,
                                                              capsys):
    call = signed_request_for(exchange)
    trade, call_symbol, put_symbol = open_alpha_and_add_manual_activity(tmp_path, clock, exchange, env, call)

    before = (len(exchange.requests_for("create_order")), exchange.counts["cancel_order"])
    assert run(["kill"], clock, env) == 2  # no --yes: nothing at all
    assert (len(exchange.requests_for("create_order")), exchange.counts["cancel_order"]) == before

    killed_from = clock.now()
    assert run(["kill", "--yes"], clock, env) == 0  # no daemon: runs in this process until done
    out = capsys.readouterr().out
    assert "executing kill command 1" in out and f"1 trade(s) killed ({T1} CLOSED)" in out
    [closed] = stored(tmp_path)[0]
    assert closed["state"] == "CLOSED" and closed["exit_reason"] == "kill_switch"
    assert_kill_orders_only(exchange, killed_from, {FIRST_SEQ})
    # Our exposure is gone; the manual position and the manual order are untouched.
    assert positions(call) == {call_symbol: pytest.approx(0.05)}
    assert FOREIGN_COID in pending_client_ids(call)
    cancels = [r.params for r in exchange.requests_for("cancel_order")]
    assert all(int(p.get("clientOrderId") or 0) != FOREIGN_COID for p in cancels)
    assert exchange.counts["cancel_open_orders"] == 0 and exchange.counts["batch_cancel_orders"] == 0
    assert exchange.counts["cancel_orders_by_option"] == 0


def test_kill_all_positions_also_closes_the_manual_position(tmp_path, clock, exchange, env, signed_request_for,
                                                           capsys):
    call = signed_request_for(exchange)
    open_alpha_and_add_manual_activity(tmp_path, clock, exchange, env, call)

    killed_from = clock.now()
    assert run(["kill", "--all-positions", "--yes"], clock, env) == 0
    [kill] = stored(tmp_path)[2]
    # The manual position is adopted as a new trade with the next sequence (never a reused id).
    assert kill["status"] == "done" and kill["result"]["trades"] == [T1, T2]
    assert {row["state"] for row in kill["result"]["final"].values()} == {"CLOSED"}
    assert positions(call) == {}
    assert_kill_orders_only(exchange, killed_from, {FIRST_SEQ, FIRST_SEQ + 1})
    assert any(parts.trade_seq == FIRST_SEQ + 1 for parts, _ in our_creates(exchange, killed_from))
    assert FOREIGN_COID in pending_client_ids(call)  # positions are closed; other people's orders stay
    assert "no position left on the account" in capsys.readouterr().out


def test_an_interrupted_kill_stays_active_and_the_next_start_finishes_it(tmp_path, clock, exchange, env,
                                                                          signed_request_for, capsys):
    assert run(["--run-for", "120"], clock, env) == 0
    killed_from = clock.now()
    clock.at(killed_from + 3, lambda: signal.raise_signal(signal.SIGINT))  # Ctrl-C two wakes into the kill
    previous = signal.getsignal(signal.SIGINT)

    assert run(["kill", "--yes"], clock, env) == 1
    assert signal.getsignal(signal.SIGINT) is previous
    assert "interrupted (SIGINT)" in capsys.readouterr().out
    [trade], _, [kill] = stored(tmp_path)
    assert kill["status"] == "active" and trade["state"] not in ("CLOSED", "FAILED")
    assert any(leg["net_qty"] > 0 for leg in trade["legs"])

    # The daemon starts again: it re-applies the active kill and finishes it; the pause holds.
    assert run(["--run-for", "600"], clock, env) == 0
    [trade], _, [kill] = stored(tmp_path)
    assert kill["status"] == "done" and trade["state"] == "CLOSED" and trade["exit_reason"] == "kill_switch"
    assert_kill_orders_only(exchange, killed_from, {FIRST_SEQ})  # before and after the restart
    assert positions(signed_request_for(exchange)) == {}
    assert runner_state(tmp_path, "alpha")["paused"] is True


def test_a_resume_without_a_daemon_during_a_kill_keeps_its_pause_and_lifts_kept_blocks(tmp_path, clock, exchange,
                                                                                       env, capsys):
    assert run(["--run-for", "120"], clock, env) == 0
    clock.at(clock.now() + 3, lambda: signal.raise_signal(signal.SIGINT))   # the kill is left active
    assert run(["kill", "--yes"], clock, env) == 1
    [trade], _, [kill] = stored(tmp_path)
    symbol = trade["legs"][0]["symbol"]
    with open_store(tmp_path) as store:
        store.keep_symbol_block(symbol, "kept by the test")
        store.keep_symbol_block("BTCUSD-1JAN30-1000-C", "a symbol of no trade of alpha")
    capsys.readouterr()

    assert run(["resume", "alpha"], clock, env) == 0

    out = capsys.readouterr().out
    assert "kept paused while a kill closes their trades: alpha" in out and f"unblocked: {symbol}" in out
    assert runner_state(tmp_path, "alpha")["paused"] is True
    with open_store(tmp_path) as store:
        assert store.kept_symbol_blocks() == {"BTCUSD-1JAN30-1000-C": "a symbol of no trade of alpha"}
    # The next start finishes the kill (the lifted block lets its orders out); the pause holds.
    assert run(["--run-for", "600"], clock, env) == 0
    [trade], _, commands = stored(tmp_path)
    assert commands[0]["status"] == "done" and trade["state"] == "CLOSED"
    assert runner_state(tmp_path, "alpha")["paused"] is True
    assert run(["resume", "alpha"], clock, env) == 0                       # the kill is done: it resumes
    assert runner_state(tmp_path, "alpha")["paused"] is False


def test_a_kill_of_alpha_without_a_daemon_leaves_betas_due_exit_to_the_daemon(tmp_path, clock, exchange, env):
    """``kill --strategy alpha`` run by the command line is a daemon for the time of the kill: it
    used to tick every trade, so beta's exit, due while no daemon ran, was carried out by it."""
    beta = tiny_strangle("beta", 0.15, hold_hours=0.1)
    assert run(["--run-for", "120"], clock, env, strategies=(ALPHA, beta)) == 0
    trades = {t["strategy"]: t for t in stored(tmp_path)[0]}
    assert trades["alpha"]["state"] == trades["beta"]["state"] == "OPEN"
    beta_seq = trades["beta"]["seq"]
    clock.advance(3600)                              # beta's 6-minute hold is past due

    killed_from = clock.now()
    assert run(["kill", "--strategy", "alpha", "--yes"], clock, env, strategies=(ALPHA, beta)) == 0

    trades = {t["strategy"]: t for t in stored(tmp_path)[0]}
    assert trades["alpha"]["state"] == "CLOSED" and trades["beta"]["state"] == "OPEN"
    assert [params["symbol"] for parts, params in our_creates(exchange, killed_from)
            if parts.trade_seq == beta_seq] == []
    # The daemon's next start runs beta's exit as usual.
    assert run(["--run-for", "600"], clock, env, strategies=(ALPHA, beta)) == 0
    trades = {t["strategy"]: t for t in stored(tmp_path)[0] if t["seq"] == beta_seq}
    assert trades["beta"]["state"] == "CLOSED"


def test_a_kill_from_the_command_line_after_the_daemons_store_was_lost_goes_where_it_writes(tmp_path, clock,
                                                                                            exchange, env,
                                                                                            signed_request_for,
                                                                                            capsys):
    """The daemon writes to a recovered copy once its store is lost (row L1); the command line used
    to create a new, empty trader.db at the old path and queue the kill there, where nobody read it."""
    def delete_store() -> None:
        for name in ("trader.db", "trader.db-wal", "trader.db-shm"):
            (tmp_path / "state" / name).unlink(missing_ok=True)

    codes: list[int] = []
    clock.at(START + 150, delete_store)
    clock.at(START + 200, cli_from_inside_the_daemon(["kill", "--yes"], env, codes))
    assert run(["--run-for", "900"], clock, env) == 0

    out = capsys.readouterr().out
    [recovered] = sorted((tmp_path / "state").glob("trader.db.recovered*"))
    # Exit 1: the command line runs inside the daemon's wait here, so the daemon takes the
    # command only after it gave up waiting (as in the tests above).
    assert codes == [1] and f"the daemon writes to {recovered.resolve()}" in out
    assert not (tmp_path / "state" / "trader.db").exists()             # no stray store was created
    with StateStore(recovered) as store:
        [kill] = store.commands()
    assert kill["kind"] == "kill" and kill["status"] == "done"
    assert positions(signed_request_for(exchange)) == {}


def test_a_command_for_a_daemon_whose_store_is_gone_is_refused_not_queued_into_a_new_file(tmp_path, clock, exchange,
                                                                                           env, capsys):
    from instance_lock import InstanceLock

    assert run(["--run-for", "30"], clock, env) == 0
    held = InstanceLock(tmp_path / "state")           # a daemon holds the lock; it said where its store is
    assert held.acquire()
    try:
        held.publish_store(tmp_path / "state" / "gone.db")
        assert run(["pause", "alpha"], clock, env) == 1
    finally:
        held.release()
    err = capsys.readouterr().err
    assert "gone.db does not exist" in err and "nothing was queued" in err
    assert not (tmp_path / "state" / "gone.db").exists()
