"""The operator view (issue 12): PnL figures, exit-rule progress, the view's contract, the board,
the log tail, the daily summary and the journal's trade payloads, with fakes and real trades."""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import app
import conditions
from account_manager import AccountSnapshot
from alerts import AlertSink
from clock import SimulatedClock
from coincall_payloads import PositionSnapshot
from config import load_settings
from contracts import Contract
from errors import SnapshotError, StaleDataError
from operations import format_status, status_json, status_report
from operator_view import (
    VIEW_FILE_NAME, DailySummary, LogTail, RunningPnl, ViewBoard, ViewPublisher, ViewSources, build_view, pnl_totals,
    realized_total,
)
from persistence import StateStore
from strategy import RunnerState
from tests.unit.test_trade_lifecycle import FRIDAY_EXPIRY_MS, make_row
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState
from trade_recorder import TradeRecorder

NOW = datetime(2026, 3, 3, 9, 0, tzinfo=timezone.utc).timestamp()
CALL = "BTCUSD-6MAR26-90000-C"
PUT = "BTCUSD-6MAR26-80000-P"

# The contract's keys (docs of the dashboard: /tmp/briefs/view_contract.md), exactly.
TOP_KEYS = {"generated_at", "generated_at_text", "environment", "simulated", "account", "totals", "strategies",
            "trades", "working_orders", "positions", "alerts", "health", "equity_curve", "log_tail"}
ACCOUNT_KEYS = {"equity", "available_margin", "initial_margin", "margin_utilization_pct", "greeks",
                "greeks_by_underlying"}
UNDERLYING_GREEK_KEYS = {"delta", "gamma", "theta", "vega", "perp_delta"}
POSITION_KEYS = {"symbol", "kind", "qty", "ours", "trade_ids"}
TOTALS_KEYS = {"realized_pnl", "unrealized_pnl_mark", "unrealized_pnl_executable", "fees", "trades_open",
               "trades_total"}
STRATEGY_KEYS = {"name", "state", "paused", "pause_reason", "next_entry_check", "next_entry_check_text",
                 "no_entry_reason", "trades_today", "open_trades", "realized_pnl", "unrealized_pnl_mark",
                 "unrealized_pnl_executable"}
TRADE_KEYS = {"id", "strategy", "state", "execution_mode", "opened_at", "opened_at_text", "closed_at",
              "closed_at_text", "entry_premium", "legs", "unrealized_pnl_mark", "unrealized_pnl_executable",
              "exit_rules", "exit_reason", "realized_pnl", "fees"}
LEG_KEYS = {"symbol", "side", "qty", "filled_qty", "avg_fill_price", "mark"}
ORDER_KEYS = {"client_order_id", "order_id", "trade_id", "symbol", "side", "qty", "price", "filled_qty", "status",
              "reduce_only"}
HEALTH_KEYS = {"last_poll_at", "last_poll_text", "exchange", "snapshot_error", "reconciliation",
               "reconciliation_age_seconds", "warnings"}


def contract(symbol: str) -> Contract:
    strike = float(symbol.split("-")[2])
    return Contract(symbol=symbol, underlying="BTC", option_type=symbol[-1], strike=strike, expiry_ms=FRIDAY_EXPIRY_MS)


def short_strangle(trade_id: str = "T000000001", seq: int = 1, *, strategy: str = "alpha",
                   state: TradeState = TradeState.OPEN, quoted: bool = True, **fields: Any) -> TradeLifecycle:
    """Sold 0.1 of each leg at 500 (call) and 400 (put), 0.5 USD fees per leg."""
    legs = [TradeLeg(index=0, contract=contract(CALL), side=2, qty=0.1, open_filled=0.1, open_vwap=500.0,
                     open_fees=0.5),
            TradeLeg(index=1, contract=contract(PUT), side=2, qty=0.1, open_filled=0.1, open_vwap=400.0,
                     open_fees=0.5)]
    if quoted:
        legs[0].quote = make_row(CALL, bid=440.0, ask=460.0, mark=450.0, as_of=NOW)
        legs[1].quote = make_row(PUT, bid=340.0, ask=360.0, mark=350.0, as_of=NOW)
    trade = TradeLifecycle(id=trade_id, seq=seq, strategy=strategy, state=state, legs=legs, opened_at=NOW - 3600,
                           created_at=NOW - 3700, fees_paid=1.0, exit_condition_names=["profit_target(usd=20.0)"],
                           **fields)
    trade.bind_clock(SimpleNamespace(now=lambda: NOW))
    return trade


def unwound(trade_id: str = "T000000002", seq: int = 2) -> TradeLifecycle:
    """A partial open that was unwound at a loss: FAILED, realized -12.5 USD (fees included)."""
    leg = TradeLeg(index=0, contract=contract(CALL), side=1, qty=0.1, open_filled=0.05, open_vwap=500.0,
                   open_fees=0.25, close_filled=0.05, close_vwap=260.0, close_fees=0.25)
    trade = TradeLifecycle(id=trade_id, seq=seq, strategy="alpha", state=TradeState.FAILED, legs=[leg],
                           created_at=NOW - 7200, failed_at=NOW - 7000, failure_reason="open incomplete; unwound",
                           fees_paid=0.5)
    trade.realized_pnl = trade.realized()
    return trade


def closed(trade_id: str = "T000000003", seq: int = 3, pnl: float = 30.0) -> TradeLifecycle:
    trade = short_strangle(trade_id, seq, state=TradeState.CLOSED, quoted=False, exit_reason="profit_target(usd=20.0)")
    trade.closed_at = NOW - 600
    trade.realized_pnl = pnl
    return trade


# ------------------------------------------------------------------------------------------ PnL figures


def test_the_realized_total_counts_closed_and_failed_trades_and_nothing_active():
    failed = unwound()
    assert failed.realized_pnl == pytest.approx(-25.0 + 13.0 - 0.5)
    trades = [short_strangle(), failed, closed(pnl=30.0)]
    assert realized_total(trades) == pytest.approx(30.0 - 12.5)
    totals = pnl_totals(trades)
    assert totals.realized == pytest.approx(17.5) and totals.trades_open == 1 and totals.trades_total == 3
    # Sold 90 USD of premium, marked at 80 (held short): +10, less 1 USD of fees.
    assert totals.unrealized_mark == pytest.approx(9.0)
    assert totals.unrealized_executable is not None and totals.unrealized_executable < totals.unrealized_mark


class ListedTrades:
    """The lifecycle manager's three queries over a plain list (what RunningPnl reads)."""

    def __init__(self, trades: list[TradeLifecycle]) -> None:
        self.items = trades
        self.full_reads = 0

    def trades(self, strategy: str | None = None) -> list[TradeLifecycle]:
        self.full_reads += 1
        return list(self.items)

    def active_trades(self, strategy: str | None = None) -> list[TradeLifecycle]:
        return [t for t in self.items if t.is_active]

    def trade_count(self) -> int:
        return len(self.items)


def test_running_totals_equal_pnl_totals_and_walk_every_trade_only_when_the_set_changes():
    source = ListedTrades([short_strangle(), unwound(), closed(pnl=30.0)])
    running = RunningPnl(source)

    def same_as_pnl_totals() -> None:
        expected, got = pnl_totals(source.items), running.totals()
        assert got.realized == pytest.approx(expected.realized) and got.fees == pytest.approx(expected.fees)
        assert (got.trades_open, got.trades_total) == (expected.trades_open, expected.trades_total)
        assert got.unrealized_mark == expected.unrealized_mark
        assert got.unrealized_executable == expected.unrealized_executable

    same_as_pnl_totals()
    same_as_pnl_totals()
    same_as_pnl_totals()
    assert source.full_reads == 1                    # nothing changed: the finished part was kept
    source.items.append(closed("T000000004", 4, pnl=-8.0))
    same_as_pnl_totals()
    assert source.full_reads == 2
    # A close booked without evidence is reversed: the trade is active again, its PnL leaves the total.
    reopened = source.items[3]
    reopened.state, reopened.realized_pnl = TradeState.OPEN, None
    same_as_pnl_totals()
    assert running.totals().realized == pytest.approx(30.0 - 12.5) and source.full_reads == 3


def test_an_unvaluable_trade_makes_the_unrealized_total_unknown_never_zero():
    totals = pnl_totals([short_strangle(quoted=False), closed()])
    assert totals.unrealized_mark is None and totals.unrealized_executable is None
    assert totals.realized == pytest.approx(30.0)


def test_status_counts_failed_trades_in_realized_pnl_as_the_store_does(tmp_path):
    (tmp_path / "state").mkdir()
    trades = [short_strangle(), unwound(), closed(pnl=30.0)]
    with StateStore(tmp_path / "state" / "trader.db") as store:
        for trade in trades:
            store.save_trade(trade.to_record())
        stored = store.load_trades()
    env = {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state"), "TRADING_ENVIRONMENT": "sim"}
    report = status_report(load_settings(env, dotenv_path=None), SimulatedClock(start=NOW, speed=0))
    by_store = sum(t["realized_pnl"] or 0.0 for t in stored)
    assert report["store"]["realized_pnl"] == round(by_store, 2) == 17.5
    assert report["store"]["strategies"]["alpha"]["realized_pnl"] == 17.5
    assert report["store"]["strategies"]["alpha"]["failed"] == 1
    assert report["valuation"]["available"] is False      # no daemon has written a view here
    text = format_status(report)
    assert "realized PnL +17.50 USD" in text and "failed, realized +17.50 USD" in text
    assert "unrealized mark n/a / executable n/a" in text  # unknown, not 0


# ------------------------------------------------------------------------------------------ exit progress


class FakeTrade:
    def __init__(self, pnl: float | None = 10.0, *, premium: float = -100.0, opened_at: float | None = NOW - 3600,
                 delta: float | None = 0.1, greeks: tuple[float | None, ...] = (0.2, -0.3)) -> None:
        self._pnl, self.entry_premium, self.opened_at, self._delta = pnl, premium, opened_at, delta
        self.legs = [SimpleNamespace(index=i, side=2, net_qty=0.1, is_perpetual=False, greek=lambda name, g=g: g)
                     for i, g in enumerate(greeks)]

    def pnl(self, mode: str) -> float:
        if self._pnl is None:
            raise StaleDataError("no quote")
        return self._pnl

    def structure_delta(self) -> float:
        if self._delta is None:
            raise StaleDataError("no delta")
        return self._delta


SNAP = SimpleNamespace(timestamp=NOW, net_delta=-0.5, positions=())


@pytest.mark.parametrize("rule, trade, fraction, words", [
    (conditions.profit_target(20), FakeTrade(10.0), 0.5, "PnL +10.00 of a 20.00 USD target"),
    (conditions.profit_target(20), FakeTrade(-5.0), 0.0, "PnL -5.00"),
    (conditions.max_loss(40), FakeTrade(-10.0), 0.25, "against a 40.00 USD loss limit"),
    (conditions.profit_target_pct(50), FakeTrade(25.0, premium=-100.0), 0.5, "+25.0% of the premium, target 50%"),
    (conditions.max_loss_pct(100), FakeTrade(-150.0, premium=-100.0), 1.0, "loss limit 100%"),
    (conditions.max_hold_hours(4), FakeTrade(), 0.25, "3.00 h left until 4 h held"),
    (conditions.time_exit(10, 0), FakeTrade(opened_at=NOW - 3600), 0.5, "1.00 h left until 10:00 UTC"),
    (conditions.utc_datetime_exit(datetime(2026, 3, 3, 11, 0)), FakeTrade(opened_at=NOW - 3600), 1 / 3,
     "2.00 h left until 2026-03-03 11:00:00 UTC"),
    (conditions.account_delta_limit(1.0), FakeTrade(), 0.5, "account delta -0.5000, limit 1"),
    (conditions.structure_delta_limit(0.4), FakeTrade(delta=0.1), 0.25, "trade delta +0.1000, limit 0.4"),
    (conditions.leg_greek_limit("delta", 0.6), FakeTrade(greeks=(0.2, -0.3)), 0.5, "largest delta 0.3000"),
    (conditions.leg_greek_limit("delta", 0.25), FakeTrade(greeks=(0.3, None)), 1.0, "largest delta 0.3000"),
])
def test_every_exit_rule_says_how_close_it_is_to_firing(rule, trade, fraction, words):
    got, detail = rule.progress(SNAP, trade)
    assert got == pytest.approx(fraction) and words in detail


@pytest.mark.parametrize("rule, trade, words", [
    (conditions.profit_target(20), FakeTrade(None), "unevaluable: stale quotes"),
    (conditions.max_loss(20), FakeTrade(None), "unevaluable: stale quotes"),
    (conditions.profit_target_pct(50), FakeTrade(10.0, premium=0.0), "entry premium is 0"),
    (conditions.max_loss_pct(50), FakeTrade(None), "unevaluable: stale quotes"),
    (conditions.max_hold_hours(4), FakeTrade(opened_at=None), "not open yet"),
    (conditions.time_exit(16), FakeTrade(opened_at=None), "not open yet"),
    (conditions.utc_datetime_exit(datetime(2026, 3, 4)), FakeTrade(opened_at=None), "not open yet"),
    (conditions.structure_delta_limit(0.3), FakeTrade(delta=None), "unevaluable: stale quotes"),
    (conditions.leg_greek_limit("gamma", 0.3), FakeTrade(greeks=(0.1, None)), "unevaluable: gamma unavailable"),
    (conditions.leg_greek_limit("delta", 0.3, leg=5), FakeTrade(), "no leg with index 5"),
])
def test_a_rule_that_cannot_be_judged_says_why_and_gives_no_fraction(rule, trade, words):
    fraction, detail = rule.progress(SNAP, trade)
    assert fraction is None and words in detail


def test_progress_never_raises_and_a_custom_rule_is_unknown():
    fraction, detail = conditions.profit_target(10).progress(SNAP, object())
    assert fraction is None and detail.startswith("unevaluable: AttributeError")
    fraction, detail = conditions.account_delta_limit(1.0).progress(SimpleNamespace(timestamp=NOW), FakeTrade())
    assert fraction is None and "unevaluable" in detail
    assert conditions.exit_progress(lambda snapshot, trade: True, SNAP, FakeTrade()) == (
        None, "a custom rule: how close it is to firing cannot be said")
    assert conditions.exit_progress(conditions.profit_target(20), SNAP, FakeTrade(20.0))[0] == 1.0


# ------------------------------------------------------------------------------------------ the view


class FakeMonitor:
    def __init__(self, latest: Any = None, error: SnapshotError | None = None) -> None:
        self.latest, self.current_error = latest, error


def account(timestamp: float = NOW, equity: float = 100_000.123456, positions: tuple = ()) -> SimpleNamespace:
    by_underlying = {"BTC": {"delta": -0.123456789, "gamma": 0.0000123, "theta": -12.345678, "vega": 45.678912}}
    return SimpleNamespace(timestamp=timestamp, equity=equity, available_margin=90_000.0, initial_margin=10_000.0,
                           margin_utilization=10.0000012, net_delta=-0.123456789, net_gamma=0.0000123,
                           net_theta=-12.345678, net_vega=45.678912, positions=positions,
                           greeks_by_underlying=lambda: by_underlying if positions else {},
                           missing_greeks=lambda underlying=None: frozenset())


def runner(name: str = "alpha", *, paused: bool = False, rules: list | None = None,
           no_entry_reason: str | None = None) -> SimpleNamespace:
    state = RunnerState(last_entry_check=NOW - 30, paused=paused, pause_reason="paused from the dashboard" if paused
                        else "", opened_today=["T000000001"])
    return SimpleNamespace(name=name, config=SimpleNamespace(exit_conditions=rules or [conditions.profit_target(20)],
                                                             check_interval_seconds=60.0),
                           state=state, is_paused=paused, pause_reason=state.pause_reason,
                           no_entry_reason=no_entry_reason)


def sources(trades: list, *, snapshot: Any = None, runners: list | None = None, alerts: Any = None,
            orders: list | None = None, error: SnapshotError | None = None, entries: bool = True) -> ViewSources:
    return ViewSources(
        clock=SimpleNamespace(now=lambda: NOW), environment="sim", simulated=True,
        snapshots=FakeMonitor(snapshot, error), exchange_up=lambda: error is None,
        lifecycle=SimpleNamespace(trades=lambda strategy=None: list(trades)),
        ledger=SimpleNamespace(live_orders=lambda trade_id=None: list(orders or [])),
        runners=runners if runners is not None else [runner()], alerts=alerts,
        reconciler=SimpleNamespace(last_report=SimpleNamespace(at=NOW - 20, summary=lambda: "periodic: 2 order(s)")),
        warnings=lambda: ["margin utilization 85.0% is above 80%"], entries=entries)


def test_the_view_has_exactly_the_contracts_keys_and_rounded_figures():
    position = SimpleNamespace(symbol=CALL, signed_qty=-0.1, qty=0.1, missing_greeks=())
    foreign = SimpleNamespace(symbol="BTCUSD-6MAR26-70000-P", signed_qty=0.2, qty=0.2, missing_greeks=())
    order = SimpleNamespace(client_order_id=7, order_id=None, trade_id="T000000001", symbol=CALL,
                            side=SimpleNamespace(name="BUY"), qty=0.1, price=455.0, filled_qty=0.0,
                            status=SimpleNamespace(value="OPEN"), reduce_only=True)
    view = build_view(sources([short_strangle(), unwound(), closed()], snapshot=account(positions=(position, foreign)),
                              orders=[order]),
                      equity_curve=[(NOW - 60, 100_000.0)], log_tail=["a line"])
    doc = json.loads(json.dumps(view.to_json()))   # plain JSON
    assert set(doc) == TOP_KEYS
    assert set(doc["account"]) == ACCOUNT_KEYS and doc["account"]["equity"] == 100_000.12
    assert doc["account"]["greeks"] == {"delta": -0.1235, "gamma": 0.0, "theta": -12.3457, "vega": 45.6789}
    assert doc["account"]["greeks_by_underlying"] == {
        "BTC": {"delta": -0.1235, "gamma": 0.0, "theta": -12.3457, "vega": 45.6789, "perp_delta": 0.0}}
    assert set(doc["totals"]) == TOTALS_KEYS and doc["totals"]["realized_pnl"] == 17.5
    assert doc["totals"]["unrealized_pnl_mark"] == 9.0 and doc["totals"]["trades_open"] == 1
    [strategy] = doc["strategies"]
    assert set(strategy) == STRATEGY_KEYS
    assert strategy["state"] == "running" and strategy["next_entry_check"] == NOW + 30
    assert strategy["next_entry_check_text"] == "2026-03-03 09:00:30 UTC" and strategy["no_entry_reason"] is None
    assert strategy["trades_today"] == 1 and strategy["open_trades"] == 1 and strategy["realized_pnl"] == 17.5
    assert [t["id"] for t in doc["trades"]] == ["T000000003", "T000000002", "T000000001"]   # newest first
    assert all(set(t) == TRADE_KEYS for t in doc["trades"])
    open_trade = doc["trades"][2]
    assert open_trade["unrealized_pnl_mark"] == 9.0 and open_trade["realized_pnl"] is None
    assert open_trade["entry_premium"] == 90.0 and open_trade["opened_at_text"] == "2026-03-03 08:00:00 UTC"
    assert [set(leg) for leg in open_trade["legs"]] == [LEG_KEYS, LEG_KEYS]
    assert open_trade["legs"][0] == {"symbol": CALL, "side": "SELL", "qty": 0.1, "filled_qty": 0.1,
                                     "avg_fill_price": 500.0, "mark": 450.0}
    assert open_trade["exit_rules"] == [{"name": "profit_target(usd=20.0, mode=fair)", "fraction": 0.45,
                                         "detail": "PnL +9.00 of a 20.00 USD target (fair)"}]
    failed = doc["trades"][1]
    assert failed["state"] == "FAILED" and failed["realized_pnl"] == -12.5 and failed["unrealized_pnl_mark"] is None
    assert failed["exit_reason"] == "failed: open incomplete; unwound" and failed["closed_at"] == NOW - 7000
    assert doc["trades"][0]["exit_reason"] == "profit_target(usd=20.0)" and doc["trades"][0]["exit_rules"] == []
    [working] = doc["working_orders"]
    assert set(working) == ORDER_KEYS and working["side"] == "BUY" and working["status"] == "OPEN"
    assert doc["positions"] == [
        {"symbol": CALL, "kind": "option", "qty": -0.1, "ours": True, "trade_ids": ["T000000001"]},
        {"symbol": "BTCUSD-6MAR26-70000-P", "kind": "option", "qty": 0.2, "ours": False, "trade_ids": []}]
    assert all(set(p) == POSITION_KEYS for p in doc["positions"])
    assert set(doc["health"]) == HEALTH_KEYS and doc["health"]["exchange"] == "UP"
    assert doc["health"]["reconciliation"] == "periodic: 2 order(s)" and doc["health"]["reconciliation_age_seconds"] == 20
    assert doc["health"]["warnings"] == ["margin utilization 85.0% is above 80%"]
    assert doc["equity_curve"] == [[NOW - 60, 100_000.0]] and doc["log_tail"] == ["a line"]
    assert doc["generated_at_text"] == "2026-03-03 09:00:00 UTC" and doc["simulated"] is True


def test_stale_quotes_give_null_pnl_and_an_outage_shows_in_health():
    view = build_view(sources([short_strangle(quoted=False)], error=SnapshotError("exchange unreachable")))
    doc = view.to_json()
    assert doc["account"] is None and doc["positions"] is None      # unknown before any account read, never []
    [trade] = doc["trades"]
    assert trade["unrealized_pnl_mark"] is None and trade["unrealized_pnl_executable"] is None
    assert doc["totals"]["unrealized_pnl_mark"] is None and doc["strategies"][0]["unrealized_pnl_mark"] is None
    assert trade["exit_rules"] == [{"name": "profit_target(usd=20.0, mode=fair)", "fraction": None,
                                    "detail": "no account snapshot yet"}]
    assert doc["health"]["exchange"] == "DOWN" and doc["health"]["snapshot_error"] == "exchange unreachable"


def test_strategies_paused_stopped_and_without_a_runner():
    orphan = short_strangle("T000000009", 9, strategy="removed")
    doc = build_view(sources([short_strangle(), orphan], snapshot=account(), runners=[runner(paused=True)])).to_json()
    paused, stopped = doc["strategies"]
    assert paused["state"] == "paused" and paused["paused"] is True and paused["next_entry_check"] is None
    assert paused["pause_reason"] == "paused from the dashboard"
    assert stopped["name"] == "removed" and stopped["state"] == "stopped" and stopped["open_trades"] == 1
    orphan_view = next(t for t in doc["trades"] if t["id"] == "T000000009")
    assert orphan_view["exit_rules"] == [{"name": "profit_target(usd=20.0)", "fraction": None,
                                          "detail": "strategy not running: this rule is not applied"}]
    kill_run = build_view(sources([short_strangle()], snapshot=account(), entries=False)).to_json()
    assert kill_run["strategies"][0]["state"] == "stopped"


def test_alerts_newest_first_at_most_fifty_and_no_secret_in_the_view():
    clock = SimulatedClock(start=NOW, speed=0)
    sink = AlertSink(None, clock)
    for number in range(60):
        sink.alert("WARNING", "kind", f"alert {number}")
        clock.advance(1)
    doc = build_view(sources([short_strangle()], snapshot=account(), alerts=sink)).to_json()
    assert len(doc["alerts"]) == 50 and doc["alerts"][0]["message"] == "alert 59"
    assert doc["alerts"][0]["time"] == NOW + 59 and doc["alerts"][0]["time_text"] == "2026-03-03 09:00:59 UTC"
    text = json.dumps(doc).lower()
    assert not any(word in text for word in ("secret", "api_key", "signature", "token"))


def test_finished_trades_shown_are_bounded_and_active_ones_always_shown():
    trades = [closed(f"T{n:09d}", n) for n in range(1, 151)] + [short_strangle("T000000151", 151)]
    doc = build_view(sources(trades, snapshot=account())).to_json()
    assert len(doc["trades"]) == 101 and doc["trades"][0]["id"] == "T000000151"
    assert doc["totals"]["trades_total"] == 151 and doc["totals"]["realized_pnl"] == 150 * 30.0


# ------------------------------------------------------------------------------------------ board, tail, publisher


def test_the_board_swaps_views_and_keeps_a_bounded_spaced_equity_curve():
    board = ViewBoard(curve_points=3, curve_spacing_seconds=60)
    assert board.latest() is None and board.latest_json() is None
    for offset in (0, 30, 60, 120, 180, 240):
        board.note_equity(NOW + offset, 100.0 + offset)
    assert board.equity_curve() == ((NOW + 120, 220.0), (NOW + 180, 280.0), (NOW + 240, 340.0))
    view = build_view(sources([short_strangle()], snapshot=account()))
    document = board.publish(view)
    assert board.latest() is view and board.latest_json() is document and document == view.to_json()

    seen: list[Any] = []
    reader = threading.Thread(target=lambda: seen.extend(board.latest_json() for _ in range(200)))
    reader.start()
    for _ in range(50):
        board.publish(view)
    reader.join()
    assert all(isinstance(doc, dict) for doc in seen)


def test_the_log_tail_keeps_the_last_lines_in_the_log_files_format():
    target = logging.getLogger("test_operator_view.tail")
    target.propagate = False
    file_like = logging.StreamHandler()
    file_like.setFormatter(logging.Formatter("FMT %(levelname)s %(message)s"))
    target.addHandler(file_like)
    target.setLevel(logging.INFO)
    tail = LogTail(capacity=3)
    tail.install(target)
    try:
        for number in range(5):
            target.info("line %d", number)
        target.debug("not kept")
    finally:
        tail.remove()
        target.removeHandler(file_like)
    target.info("after removal")
    assert tail.lines() == ["FMT INFO line 2", "FMT INFO line 3", "FMT INFO line 4"]


def test_the_publisher_writes_the_view_for_status_and_a_valuation_event_every_five_minutes(tmp_path):
    events: list[tuple[str, dict]] = []
    clock = SimulatedClock(start=NOW, speed=0)
    trade = short_strangle()
    trade.bind_clock(clock)
    board, tail = ViewBoard(), LogTail()
    base = sources([trade])
    publisher = ViewPublisher(
        ViewSources(**{**base.__dict__, "clock": clock, "snapshots": FakeMonitor(account())}),
        board, log_tail=tail, journal=lambda kind, payload: events.append((kind, payload)), state_dir=tmp_path)
    snapshot = account()
    publisher(snapshot)
    publisher(snapshot)        # the same poll's snapshot: nothing new
    clock.advance(10)
    publisher(account(NOW + 10))
    written = json.loads((tmp_path / VIEW_FILE_NAME).read_text(encoding="utf-8"))
    assert written == board.latest_json() and written["generated_at"] == NOW + 10
    assert [kind for kind, _ in events] == ["valuation"]
    valuation = events[0][1]
    assert valuation["unrealized_pnl_mark"] == 9.0
    assert valuation["trades"] == [{"trade_id": "T000000001", "strategy": "alpha", "state": "OPEN",
                                    "unrealized_pnl_mark": 9.0, "unrealized_pnl_executable": pytest.approx(
                                        written["trades"][0]["unrealized_pnl_executable"])}]
    assert valuation["strategies"]["alpha"]["unrealized_pnl_mark"] == 9.0
    clock.advance(300)
    publisher(account(NOW + 310))
    assert [kind for kind, _ in events] == ["valuation", "valuation"]
    assert events[1][1]["unrealized_pnl_mark"] is None     # 5-minute-old quotes: unknown, not 0
    trade.legs[0].quote = make_row(CALL, bid=440.0, ask=460.0, mark=450.0, as_of=clock.now())
    trade.legs[1].quote = make_row(PUT, bid=340.0, ask=360.0, mark=350.0, as_of=clock.now())
    publisher(account(NOW + 310))
    written = json.loads((tmp_path / VIEW_FILE_NAME).read_text(encoding="utf-8"))
    assert [point[0] for point in written["equity_curve"]] == [NOW, NOW + 310]   # one point a minute at most

    env = {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path), "TRADING_ENVIRONMENT": "sim"}
    with StateStore(tmp_path / "trader.db") as store:
        store.save_trade(trade.to_record())
    report = status_report(load_settings(env, dotenv_path=None), clock)
    assert report["valuation"]["available"] is True and report["valuation"]["unrealized_pnl_mark"] == 9.0
    assert report["valuation"]["age_seconds"] is None          # a simulated run: only its own time is shown
    [active] = report["store"]["active_trades"]
    assert active["unrealized_pnl_mark"] == 9.0 and report["store"]["strategies"]["alpha"]["unrealized_pnl_mark"] == 9.0
    text = format_status(report)
    assert "valuation by the daemon at 2026-03-03 09:05:10 UTC (simulated time)" in text
    assert "uPnL mark +9.00 / executable" in text


def test_a_failing_view_file_is_logged_once_and_never_raises(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("x", encoding="utf-8")
    publisher = ViewPublisher(sources([], snapshot=account()), ViewBoard(), state_dir=blocked)
    with caplog.at_level(logging.ERROR):
        publisher(account())
        publisher(account(NOW + 10))
    assert caplog.text.count("could not write") == 1


# ------------------------------------------------------------------------------------------ the daily summary


def test_the_daily_summary_is_written_once_when_the_utc_day_rolls(caplog):
    events: list[tuple[str, dict]] = []
    yesterday = NOW - 86_400
    opened_yesterday = short_strangle()
    opened_yesterday.opened_at = yesterday
    failed = unwound()
    failed.failed_at = yesterday + 60
    done = closed(pnl=30.0)
    done.closed_at = yesterday + 120
    trades = [opened_yesterday, failed, done]
    summary = DailySummary(SimpleNamespace(trades=lambda strategy=None: trades),
                           lambda kind, payload: events.append((kind, payload)))
    with caplog.at_level(logging.INFO, logger="operator_view"):
        summary(account(yesterday + 3600))
        summary(account(yesterday + 7200))
        summary(account(NOW))                 # 2026-03-03: the 2nd is summarised
        summary(account(NOW + 10))
    assert events == [("daily_summary", {"date": "2026-03-02", "realized_pnl": 17.5, "fees": 1.5,
                                         "trades_opened": 1, "trades_closed": 1, "trades_failed": 1,
                                         "unrealized_pnl_mark": 9.0, "equity": 100_000.12})]
    lines = [r.getMessage() for r in caplog.records if "daily summary" in r.getMessage()]
    assert lines == ["daily summary 2026-03-02: realized +17.50 USD (fees 1.50 USD), 1 opened, 1 closed, 1 failed; "
                     "unrealized (mark) +9.00 USD; equity 100,000.12 USD"]


# ------------------------------------------------------------------------------------------ journal payloads


def test_open_and_close_events_carry_fills_premium_reason_pnl_and_fees():
    events: list[dict] = []
    store = SimpleNamespace(save_trade=lambda record: None, append_event=lambda kind, payload, ts: None)
    recorder = TradeRecorder(store=store, clock=SimpleNamespace(now=lambda: NOW), alerts=None,
                             journal=lambda kind, payload: events.append({"kind": kind, **payload}))
    trade = short_strangle()
    recorder.persist(trade, "state", previous="OPENING")
    recorder.notify_opened(trade, None)
    opened, notified = events
    for event in (opened, notified):
        assert event["entry_premium"] == 90.0 and event["fees"] == 1.0
        assert event["legs"][0] == {"index": 0, "symbol": CALL, "side": "SELL", "qty": 0.1, "filled_qty": 0.1,
                                    "avg_price": 500.0}
    assert "realized_pnl" not in opened and notified["event"] == "opened_notified"

    recorder.persist(trade, "close_requested")
    assert set(events[-1]) == {"kind", "trade_id", "strategy", "event", "state"}   # no outcome mid-way

    done = closed(pnl=29.456)
    recorder.persist(done, "state", previous="CLOSING")
    recorder.notify_closed(done, None)
    for event in events[-2:]:
        assert event["exit_reason"] == "profit_target(usd=20.0)" and event["realized_pnl"] == 29.46
        assert event["fees"] == 1.0 and event["failure_reason"] is None
        assert event["legs"][1]["close_filled_qty"] == 0.0 and "close_avg_price" in event["legs"][1]
    failed = unwound()
    recorder.persist(failed, "state", previous="UNWINDING")
    assert events[-1]["failure_reason"] == "open incomplete; unwound" and events[-1]["realized_pnl"] == -12.5
    assert events[-1]["exit_reason"] is None and events[-1]["legs"][0]["close_avg_price"] == 260.0


def test_status_view_file_from_a_real_run_is_read_with_its_age(tmp_path):
    """Not simulated: the age is measured on the status process's clock."""
    view = build_view(sources([short_strangle()], snapshot=account()))
    document = {**view.to_json(), "simulated": False}
    (tmp_path / VIEW_FILE_NAME).write_text(json.dumps(document), encoding="utf-8")
    env = {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path), "TRADING_ENVIRONMENT": "sim"}
    report = status_report(load_settings(env, dotenv_path=None), SimulatedClock(start=NOW + 8, speed=0))
    assert report["valuation"]["age_seconds"] == 8.0
    assert "09:00:00 UTC, 8 s ago" in format_status(report)
    (tmp_path / VIEW_FILE_NAME).write_text("{not json", encoding="utf-8")
    report = status_report(load_settings(env, dotenv_path=None), SimulatedClock(start=NOW, speed=0))
    assert report["valuation"]["available"] is False and "unreadable" in report["valuation"]["note"]


def test_the_view_module_has_a_file_name_status_can_find():
    assert VIEW_FILE_NAME == "operator_view.json" and Path(VIEW_FILE_NAME).suffix == ".json"


def test_a_strategys_reason_for_no_entry_is_shown_while_it_runs_and_not_when_stopped():
    blocked = runner(no_entry_reason="max_concurrent_trades reached (1)")
    [running] = build_view(sources([], runners=[blocked])).to_json()["strategies"]
    assert running["state"] == "running" and running["no_entry_reason"] == "max_concurrent_trades reached (1)"
    [stopped] = build_view(sources([], runners=[blocked], entries=False)).to_json()["strategies"]
    assert stopped["state"] == "stopped" and stopped["no_entry_reason"] is None


def held(symbol: str, signed_qty: float, greeks: tuple[float, float, float, float]) -> PositionSnapshot:
    delta, gamma, theta, vega = greeks
    return PositionSnapshot(position_id=1, symbol=symbol, qty=abs(signed_qty), side="long" if signed_qty > 0 else
                            "short", signed_qty=signed_qty, entry_price=100.0, mark_price=100.0, unrealized_pnl=0.0,
                            roi=0.0, delta=delta, gamma=gamma, theta=theta, vega=vega, timestamp=NOW)


def mixed_account() -> AccountSnapshot:
    """A BTC option and a BTC perp (short 0.05), an ETH option: the greeks split per underlying."""
    return AccountSnapshot.build(
        equity=50_000.0, available_margin=40_000.0, initial_margin=5_000.0, maintenance_margin=2_500.0,
        unrealized_pnl=0.0, timestamp=NOW,
        positions=[held(CALL, -0.1, (-0.0312345, -0.0000456, 12.345678, -20.5)),
                   held("BTCUSD", -0.05, (-0.05, 0.0, 0.0, 0.0)),
                   held("ETHUSD-6MAR26-3000-P", 1.0, (-0.3012345, 0.0009, -3.3, 4.4))])


def test_the_view_splits_the_greeks_per_underlying_options_and_perps_and_says_each_positions_kind():
    doc = json.loads(json.dumps(build_view(sources([], snapshot=mixed_account())).to_json()))
    by_underlying = doc["account"]["greeks_by_underlying"]
    assert list(by_underlying) == ["BTC", "ETH"]
    assert all(set(greeks) == UNDERLYING_GREEK_KEYS for greeks in by_underlying.values())
    assert by_underlying["BTC"] == {"delta": -0.0812, "gamma": -0.0, "theta": 12.3457, "vega": -20.5,
                                    "perp_delta": -0.05}
    assert by_underlying["ETH"] == {"delta": -0.3012, "gamma": 0.0009, "theta": -3.3, "vega": 4.4, "perp_delta": 0.0}
    # The account-wide figures stay the sum of everything, as before.
    assert doc["account"]["greeks"]["delta"] == -0.3825
    assert [(p["symbol"], p["kind"], p["qty"]) for p in doc["positions"]] == [
        (CALL, "option", -0.1), ("BTCUSD", "perpetual", -0.05), ("ETHUSD-6MAR26-3000-P", "option", 1.0)]


def test_a_greek_a_position_came_without_is_shown_unknown_not_as_the_zero_it_is_counted_as():
    blind = dataclasses.replace(held("ETHUSD-6MAR26-3000-P", 1.0, (0.0, 0.0009, -3.3, 4.4)), missing_greeks=("delta",))
    snapshot = AccountSnapshot.build(
        equity=50_000.0, available_margin=40_000.0, initial_margin=5_000.0, maintenance_margin=2_500.0,
        unrealized_pnl=0.0, timestamp=NOW, positions=[held(CALL, -0.1, (-0.0312345, -0.0000456, 12.345678, -20.5)),
                                                      blind])
    doc = json.loads(json.dumps(build_view(sources([], snapshot=snapshot)).to_json()))
    assert doc["account"]["greeks"]["delta"] is None and doc["account"]["greeks"]["vega"] == -16.1
    assert doc["account"]["greeks_by_underlying"]["ETH"]["delta"] is None
    assert doc["account"]["greeks_by_underlying"]["ETH"]["vega"] == 4.4
    assert doc["account"]["greeks_by_underlying"]["BTC"]["delta"] == -0.0312
    assert app.status_delta_text(snapshot) == "BTC:-0.031/ETH:n/a"


def test_no_snapshot_means_no_account_and_a_flat_account_has_no_underlying():
    assert build_view(sources([])).to_json()["account"] is None
    flat = AccountSnapshot.build(equity=1.0, available_margin=1.0, initial_margin=0.0, maintenance_margin=0.0,
                                 unrealized_pnl=0.0, positions=[], timestamp=NOW)
    assert build_view(sources([], snapshot=flat)).to_json()["account"]["greeks_by_underlying"] == {}


def test_status_shows_the_net_delta_per_underlying_with_its_perp_part_from_the_daemons_view(tmp_path):
    env = {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path), "TRADING_ENVIRONMENT": "sim"}
    settings, clock = load_settings(env, dotenv_path=None), SimulatedClock(start=NOW, speed=0)
    view_file = tmp_path / VIEW_FILE_NAME
    view_file.write_text(json.dumps(build_view(sources([], snapshot=mixed_account())).to_json()), encoding="utf-8")
    report = status_report(settings, clock)
    document = json.loads(status_json(report))
    assert document["valuation"]["greeks_by_underlying"] == {
        "BTC": {"delta": -0.0812, "gamma": -0.0, "theta": 12.3457, "vega": -20.5, "perp_delta": -0.05},
        "ETH": {"delta": -0.3012, "gamma": 0.0009, "theta": -3.3, "vega": 4.4, "perp_delta": 0.0}}
    assert ("  net delta per underlying (options and perpetuals): BTC -0.0812 (perp -0.0500), "
            "ETH -0.3012 (perp +0.0000)") in format_status(report).splitlines()
    # A flat account has no such line; an unread account (no snapshot) says nothing rather than "flat".
    view_file.write_text(json.dumps(build_view(sources([], snapshot=account())).to_json()), encoding="utf-8")
    flat = status_report(settings, clock)
    assert flat["valuation"]["greeks_by_underlying"] == {} and "net delta per underlying" not in format_status(flat)
    view_file.write_text(json.dumps(build_view(sources([])).to_json()), encoding="utf-8")
    unknown = status_report(settings, clock)
    assert unknown["valuation"]["greeks_by_underlying"] is None
    assert "net delta per underlying" not in format_status(unknown)


# ------------------------------------------------------------------------------ the health and status lines


def fake_context(snapshot: AccountSnapshot | None) -> SimpleNamespace:
    """What ``app.health_state`` and ``app.StatusReporter`` read of the context, and nothing more."""
    lifecycle = SimpleNamespace(trades=lambda strategy=None: [], active_trades=lambda strategy=None: [],
                                trade_count=lambda: 0, breaker_trips=0, unmanaged_trades=lambda: [],
                                hold_reason=None, persistence_errors=0, failing_trades=lambda: {})
    return SimpleNamespace(
        clock=SimpleNamespace(now=lambda: NOW),
        position_monitor=SimpleNamespace(latest=snapshot, current_error=None, failing_callbacks=[]),
        lifecycle_manager=lifecycle,
        market_data=SimpleNamespace(index_age=lambda underlying="BTC": 1.0, index_frozen=False,
                                    index_frozen_for=lambda underlying: False,
                                    index_price=lambda underlying, max_age=None: 90_000.0),
        account_manager=SimpleNamespace(reachability=SimpleNamespace(is_up=True)),
        ledger=SimpleNamespace(live_orders=lambda trade_id=None: [], blocked_symbols=lambda: []),
        condition_health=SimpleNamespace(unhealthy=lambda: []), store=SimpleNamespace(write_errors=0),
        reconciler=None)


def options_only_btc() -> AccountSnapshot:
    return AccountSnapshot.build(equity=50_000.0, available_margin=40_000.0, initial_margin=5_000.0,
                                 maintenance_margin=2_500.0, unrealized_pnl=0.0, timestamp=NOW,
                                 positions=[held(CALL, -0.1, (-0.0312345, -0.0000456, 12.345678, -20.5))])


def test_the_health_line_carries_the_net_delta_per_underlying():
    state = app.health_state(fake_context(mixed_account()), [], NOW - 60)
    assert state["delta_by_underlying"] == {"BTC": pytest.approx(-0.0812345, abs=1e-6),
                                            "ETH": pytest.approx(-0.3012345, abs=1e-6)}
    assert state["net_delta"] == pytest.approx(-0.382469, abs=1e-6)
    assert app.health_state(fake_context(options_only_btc()), [], NOW - 60)["delta_by_underlying"] == {
        "BTC": pytest.approx(-0.0312345, abs=1e-6)}
    assert "delta_by_underlying" not in app.health_state(fake_context(None), [], NOW - 60)


def test_the_health_state_names_a_trade_whose_tick_keeps_failing():
    ctx = fake_context(None)
    assert app.health_state(ctx, [], NOW - 60)["failing_trades"] == {}
    ctx.lifecycle_manager.failing_trades = lambda: {"T000000007": 125.0}
    state = app.health_state(ctx, [], NOW - 60)
    assert state["failing_trades"] == {"T000000007": 125.0}
    assert any("T000000007 for 2 min 05 s" in warning and "nothing drives them" in warning for warning in state["warnings"])


def test_the_status_line_adds_the_delta_per_underlying_only_with_two_underlyings_or_a_perp(caplog):
    def status_line(snapshot: AccountSnapshot) -> str:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="app"):
            app.StatusReporter(fake_context(snapshot), [])(snapshot)
        [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("status ")]
        return line

    assert status_line(mixed_account()).endswith(" paused=- delta=BTC:-0.081/ETH:-0.301")
    assert status_line(options_only_btc()).endswith(" paused=-")       # the line as it always was
    perp_only = AccountSnapshot.build(equity=1.0, available_margin=1.0, initial_margin=0.0, maintenance_margin=0.0,
                                      unrealized_pnl=0.0, timestamp=NOW,
                                      positions=[held("BTCUSD", 0.25, (0.25, 0.0, 0.0, 0.0))])
    assert status_line(perp_only).endswith(" delta=BTC:+0.250")


def test_the_status_line_throttle_writes_one_line_per_period_of_clock_time(caplog):
    """A backtest asks for one status line per simulated hour; the daemon's default is one per poll."""
    clock_now = [NOW]
    ctx = fake_context(options_only_btc())
    ctx.clock = SimpleNamespace(now=lambda: clock_now[0])
    reporter = app.StatusReporter(ctx, [], every=3600.0)
    written = []
    with caplog.at_level(logging.INFO, logger="app"):
        for offset in (0.0, 10.0, 3599.0, 3600.0, 3610.0, 7200.0):
            clock_now[0] = NOW + offset
            caplog.clear()
            reporter(options_only_btc())                 # a new snapshot each poll
            if any(r.getMessage().startswith("status ") for r in caplog.records):
                written.append(offset)
    assert written == [0.0, 3600.0, 7200.0]

    every_poll = app.StatusReporter(ctx, [])
    with caplog.at_level(logging.INFO, logger="app"):
        caplog.clear()
        for _ in range(3):
            every_poll(options_only_btc())
    assert sum(r.getMessage().startswith("status ") for r in caplog.records) == 3
