"""The pure parts of the reconciler and its decisions, with fakes where HTTP would add nothing.

``judge`` and ``ReconcileReport`` are pure. The decision logic (confirmation on two checks,
deferral, newest-trade-first booking, pricing from fills that are not ours, orphans, missing
orders, the quarantine probe, the start-up hold) is driven with small fakes of the client,
ledger, lifecycle and store, and real ``TradeLifecycle`` values. The same rows are tested
against the simulator in tests/integration/test_restart_reconciliation.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from clock import SimulatedClock
from errors import TransportError
from reconciliation import (
    ORDER_MIN_AGE_SECONDS,
    SEQ_RESEED_LOOKBACK_SECONDS,
    SEQ_RESEED_MARGIN,
    VERDICT_DEFERRED,
    VERDICT_EXTERNAL,
    VERDICT_OK,
    VERDICT_OPPOSITE,
    VERDICT_SHORTFALL,
    ReconcileReport,
    Reconciler,
    SymbolCheck,
    judge,
)
from trade_execution import BLOCK_ACCEPT_EVENT, Intent, OrderStatus, build_client_order_id
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState

T0 = 1_772_528_400.0           # 2026-03-03 09:00 UTC
EXPIRY_MS = 1_772_611_200_000  # 2026-03-04 08:00 UTC
SYM_C = "BTCUSD-4MAR26-92000-C"
SYM_P = "BTCUSD-4MAR26-88000-P"
BUY, SELL = 1, 2


# ---------------------------------------------------------------------------------------------
# judge and the report
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ours, exchange, verdict", [
    (0.0, 0.0, VERDICT_OK),
    (0.0, 0.01, VERDICT_EXTERNAL),            # a position where we hold nothing
    (0.0, -0.01, VERDICT_EXTERNAL),
    (0.01, 0.01, VERDICT_OK),                 # S1
    (-0.02, -0.02, VERDICT_OK),
    (0.01, 0.02, VERDICT_EXTERNAL),           # S2: more than ours, same side
    (-0.01, -0.03, VERDICT_EXTERNAL),
    (0.02, 0.01, VERDICT_SHORTFALL),          # S3: short of ours
    (0.01, 0.0, VERDICT_SHORTFALL),           # S3: flat
    (-0.02, -0.01, VERDICT_SHORTFALL),
    (0.01, -0.01, VERDICT_OPPOSITE),          # S4
    (-0.01, 0.02, VERDICT_OPPOSITE),
    (0.01, 0.01 + 1e-12, VERDICT_OK),         # float residue is not a difference
    (0.03, 0.03 - 1e-12, VERDICT_OK),
    (1e-12, 0.0, VERDICT_OK),
])
def test_judge_gives_the_per_symbol_verdict_from_signed_quantities(ours, exchange, verdict):
    assert judge(ours, exchange) == verdict


def test_report_summary_counts_verdicts_and_names_only_what_happened():
    report = ReconcileReport("periodic", T0, orders_checked=3)
    report.symbols = [SymbolCheck("A", 0.01, 0.01, VERDICT_OK), SymbolCheck("B", 0.01, 0.0, VERDICT_SHORTFALL),
                      SymbolCheck("C", 0.0, 0.01, VERDICT_EXTERNAL), SymbolCheck("D", 0.0, 0.02, VERDICT_EXTERNAL)]
    report.external_closes = ["T000000001:B:0.01"]
    report.paused = ["s1"]

    summary = report.summary()

    assert summary == ("periodic: 3 order(s) checked; symbols external_position=2, ok=1, shortfall=1; "
                       "external closes ['T000000001:B:0.01']; paused ['s1']")
    assert "orphans" not in summary and "missing" not in summary and "blocked" not in summary
    assert ReconcileReport("startup", T0).summary() == "startup: 0 order(s) checked; symbols none"


def test_report_event_keeps_every_symbol_but_the_ones_that_agree():
    report = ReconcileReport("startup", T0, orders_missing=[7], orphans_cancelled=[8], block_fills_adopted=2)
    report.symbols = [SymbolCheck("A", 0.01, 0.01, VERDICT_OK), SymbolCheck("B", 0.01, -0.01, VERDICT_OPPOSITE)]
    report.quarantine = {"positions": 1}

    event = report.to_event()

    assert event["symbols"] == [{"symbol": "B", "ours": 0.01, "exchange": -0.01, "verdict": VERDICT_OPPOSITE}]
    assert event["orders_missing"] == [7] and event["orphans_cancelled"] == [8]
    assert event["block_fills_adopted"] == 2 and event["quarantine"] == {"positions": 1}
    assert "orphans cancelled [8]" in report.summary() and "2 block fill(s) adopted" in report.summary()


# ---------------------------------------------------------------------------------------------
# Fakes
# ---------------------------------------------------------------------------------------------


@dataclass
class FakeOrder:
    client_order_id: int
    symbol: str
    order_id: int | None = None
    trade_id: str = "T000000001"
    sent_at: float = T0
    updated_at: float = T0
    live: bool = True
    status: OrderStatus = OrderStatus.LIVE
    qty: float = 0.1
    filled_qty: float = 0.0


class FakeLedger:
    prefix = 101

    def __init__(self, orders: list[FakeOrder] | None = None, verify_result: str = "live") -> None:
        self._orders = list(orders or [])
        self.verify_result = verify_result
        self.polled: list[int] = []
        self.verified: list[int] = []
        self.blocked: dict[str, str] = {}

    def live_orders(self, trade_id: str | None = None) -> list[FakeOrder]:
        return [o for o in self._orders if o.live]

    def orders(self, trade_id: str | None = None) -> list[FakeOrder]:
        return list(self._orders)

    def get(self, coid: int) -> FakeOrder | None:
        return next((o for o in self._orders if o.client_order_id == coid), None)

    def poll(self, order: FakeOrder) -> FakeOrder:
        self.polled.append(order.client_order_id)
        return order

    def verify(self, order: FakeOrder) -> str:
        self.verified.append(order.client_order_id)
        return self.verify_result

    def block_symbol(self, symbol: str, reason: str) -> bool:
        if symbol in self.blocked:
            return False
        self.blocked[symbol] = reason
        return True


class FakeClient:
    def __init__(self) -> None:
        self.pending: list[dict] = []
        self.fills: list[dict] = []
        self.history_pages: list[dict] = [{"list": [], "hasNext": False}]
        self.history_calls: list[dict] = []
        self.blocks: list[dict] = []
        self.block_lookups = 0
        self.cancelled: list[dict] = []
        self.cancel_error: Exception | None = None
        self.marks: dict[str, float] = {}
        self.fail_pending: Exception | None = None

    def all_pending_orders(self) -> list[dict]:
        if self.fail_pending is not None:
            raise self.fail_pending
        return list(self.pending)

    def cancel_order(self, order_id: int | None = None, client_order_id: int | None = None) -> None:
        if self.cancel_error is not None:
            raise self.cancel_error
        self.cancelled.append({"order_id": order_id, "client_order_id": client_order_id})

    def trade_history(self, **params: Any) -> dict:
        return {"list": [f for f in self.fills if f["symbol"] == params.get("symbol")]}

    def option_detail(self, symbol: str) -> dict:
        return {"markPrice": self.marks[symbol]}

    def order_history(self, **params: Any) -> dict:
        self.history_calls.append(params)
        return self.history_pages[len(self.history_calls) - 1]

    def blocktrade_orders(self, **params: Any) -> dict:
        self.block_lookups += 1
        return {"list": list(self.blocks)}


class FakeLifecycle:
    def __init__(self, trades: list[TradeLifecycle] | None = None) -> None:
        self._trades = list(trades or [])
        self.hold_reason: str | None = None
        self.external: list[tuple] = []
        self.jobs: set[str] = set()

    def hold(self, reason: str) -> None:
        self.hold_reason = reason

    def release(self) -> None:
        self.hold_reason = None

    def active_trades(self) -> list[TradeLifecycle]:
        return [t for t in self._trades if t.is_active]

    def refresh_fills(self, trade_id: str) -> None:
        pass

    def has_job(self, trade_id: str) -> bool:
        return trade_id in self.jobs

    def record_external_close(self, trade_id: str, leg_index: int, qty: float, price: float, *, estimated: bool,
                              detail: str) -> None:
        self.external.append((trade_id, leg_index, round(qty, 8), round(price, 8), estimated))
        trade = next(t for t in self._trades if t.id == trade_id)
        trade.legs[leg_index].external_qty += qty


@dataclass
class FakeStore:
    marker_events: list[dict] = field(default_factory=list)
    runner_states: dict[str, dict] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def events(self, kind: str) -> list[dict]:
        return [e for e in self.marker_events if kind == BLOCK_ACCEPT_EVENT]

    def load_runner_state(self, name: str) -> dict | None:
        return self.runner_states.get(name)

    def save_runner_state(self, name: str, state: dict) -> None:
        self.runner_states[name] = dict(state)

    def raise_counter_to(self, name: str, value: int) -> int:
        self.counters[name] = max(self.counters.get(name, 0), value)
        return self.counters[name]


class FakeRunner:
    def __init__(self, name: str) -> None:
        self.name = name
        self.is_paused = False
        self.reasons: list[str] = []

    def pause(self, reason: str) -> None:
        self.is_paused = True
        self.reasons.append(reason)


class FakeAlerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict]] = []

    def alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        self.sent.append((level, kind, detail))

    def kinds(self, level: str | None = None) -> list[str]:
        return [kind for lvl, kind, _ in self.sent if level is None or lvl == level]


def long_trade(seq: int, qty: float, *, symbol: str = SYM_C, strategy: str = "s1",
               state: TradeState = TradeState.OPEN, opened_at: float | None = T0 - 600) -> TradeLifecycle:
    leg = TradeLeg(index=0, symbol=symbol, option_type=symbol[-1], strike=92000.0, expiry_ms=EXPIRY_MS, side=BUY,
                   qty=qty, open_filled=qty, open_vwap=400.0)
    return TradeLifecycle(id=f"T{seq:09d}", seq=seq, strategy=strategy, state=state, legs=[leg],
                          created_at=T0 - 700, opened_at=opened_at)


def position(symbol: str, signed: float, mark: float | None = 410.0) -> SimpleNamespace:
    return SimpleNamespace(symbol=symbol, signed_qty=signed, mark_price=mark)


def snapshot(*positions: SimpleNamespace, at: float = T0) -> SimpleNamespace:
    return SimpleNamespace(timestamp=at, positions=list(positions))


@dataclass
class Harness:
    clock: SimulatedClock
    client: FakeClient
    ledger: FakeLedger
    lifecycle: FakeLifecycle
    store: FakeStore
    alerts: FakeAlerts
    journal: list[tuple[str, dict]]
    reconciler: Reconciler


def harness(trades: list[TradeLifecycle] | None = None, *, ledger: FakeLedger | None = None,
            runners: list[str] = ("s1",), quarantined: Any = None) -> Harness:
    clock = SimulatedClock(start=T0, speed=0)
    client, lifecycle, store, alerts = FakeClient(), FakeLifecycle(trades), FakeStore(), FakeAlerts()
    ledger = ledger or FakeLedger()
    journal: list[tuple[str, dict]] = []
    reconciler = Reconciler(client=client, ledger=ledger, lifecycle=lifecycle, store=store, clock=clock,
                            alerts=alerts, journal=lambda kind, payload: journal.append((kind, payload)),
                            quarantined=quarantined)
    reconciler.attach_runners([FakeRunner(name) for name in runners])
    return Harness(clock, client, ledger, lifecycle, store, alerts, journal, reconciler)


def ours(seq: int, leg: int = 0, intent: Intent = Intent.OPEN, attempt: int = 1) -> int:
    return build_client_order_id(101, seq, leg, intent, attempt)


# ---------------------------------------------------------------------------------------------
# The start-up hold
# ---------------------------------------------------------------------------------------------


def test_the_lifecycle_is_held_from_construction_until_the_first_successful_start_up():
    h = harness([long_trade(1, 0.01)])
    assert h.lifecycle.hold_reason is not None and not h.reconciler.started

    h.reconciler(snapshot(position(SYM_C, 0.01)))

    assert h.reconciler.started and h.lifecycle.hold_reason is None
    assert h.journal[-1][0] == "reconciliation" and h.journal[-1][1]["kind"] == "startup"


def test_a_failing_start_up_keeps_the_hold_retries_and_alerts_once_after_three_failures():
    h = harness([long_trade(1, 0.01)])
    h.client.fail_pending = TransportError("GET /open/option/order/pending/v1", "connection refused")

    for _attempt in range(5):
        h.reconciler(snapshot(position(SYM_C, 0.01)))
        h.clock.advance(10)

    assert not h.reconciler.started and h.lifecycle.hold_reason is not None
    assert h.alerts.kinds("CRITICAL") == ["reconciliation_blocked"]
    h.client.fail_pending = None
    h.reconciler(snapshot(position(SYM_C, 0.01)))
    assert h.reconciler.started and h.lifecycle.hold_reason is None


def test_a_crash_inside_the_start_up_pauses_every_strategy_and_lifts_the_hold():
    h = harness([long_trade(1, 0.01, strategy="gone")], runners=["s1", "s2"])
    h.client.fail_pending = ZeroDivisionError("a bug")

    h.reconciler(snapshot(position(SYM_C, 0.01)))

    assert h.reconciler.started and h.lifecycle.hold_reason is None     # exits keep running
    assert h.alerts.kinds("CRITICAL") == ["reconciliation_failed"]
    assert all(runner.is_paused for runner in h.reconciler._runners.values())
    assert h.store.runner_states["gone"]["paused"] is True             # a strategy with no runner: in the store


def test_start_up_polls_every_non_final_order_and_defers_its_symbols():
    order = FakeOrder(ours(1), SYM_C, order_id=11)
    h = harness([long_trade(1, 0.02)], ledger=FakeLedger([order]))
    h.client.pending = [{"orderId": 11, "clientOrderId": ours(1), "symbol": SYM_C}]

    report = h.reconciler.startup(snapshot(position(SYM_C, 0.0)))

    assert h.ledger.polled == [ours(1)] and report.orders_checked == 1
    assert [(c.symbol, c.verdict) for c in report.symbols] == [(SYM_C, VERDICT_DEFERRED)]
    assert h.lifecycle.external == [] and h.alerts.sent == []


# ---------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------


def start(h: Harness, snap: SimpleNamespace) -> None:
    h.reconciler(snap)
    assert h.reconciler.started


def test_a_periodic_shortfall_acts_only_when_two_consecutive_checks_agree():
    h = harness([long_trade(1, 0.02)])
    start(h, snapshot(position(SYM_C, 0.02)))

    h.reconciler.periodic(snapshot(position(SYM_C, 0.01)))            # a lagging answer, perhaps
    assert h.lifecycle.external == []
    h.reconciler.periodic(snapshot(position(SYM_C, 0.0)))             # a different quantity: start again
    assert h.lifecycle.external == []
    h.reconciler.periodic(snapshot(position(SYM_C, 0.02)))            # caught up: nothing to do
    h.reconciler.periodic(snapshot(position(SYM_C, 0.01)))
    assert h.lifecycle.external == []
    h.reconciler.periodic(snapshot(position(SYM_C, 0.01)))            # the same twice in a row: act

    assert h.lifecycle.external == [("T000000001", 0, 0.01, 410.0, True)]
    assert h.alerts.sent == []                                          # the lifecycle raises that alert
    assert h.reconciler._runners["s1"].is_paused


def test_the_start_up_check_acts_at_once_and_books_newest_trade_first():
    older, newer = long_trade(1, 0.02), long_trade(2, 0.01)
    h = harness([older, newer])

    start(h, snapshot(position(SYM_C, 0.01)))                         # 0.02 of our 0.03 is gone

    assert [(e[0], e[2]) for e in h.lifecycle.external] == [("T000000002", 0.01), ("T000000001", 0.01)]
    assert h.reconciler.last_report.external_closes == ["T000000002:" + SYM_C + ":0.01",
                                                        "T000000001:" + SYM_C + ":0.01"]


def test_an_external_close_is_priced_from_fills_that_are_not_ours_on_the_closing_side_newest_first():
    mine = FakeOrder(ours(1), SYM_C, order_id=500, live=False)
    h = harness([long_trade(1, 0.03)], ledger=FakeLedger([mine]))
    h.client.fills = [
        {"symbol": SYM_C, "orderId": 500, "tradeSide": SELL, "qty": 0.01, "price": 999.0, "time": (T0 - 10) * 1000},
        {"symbol": SYM_C, "orderId": 601, "tradeSide": BUY, "qty": 0.03, "price": 888.0, "time": (T0 - 20) * 1000},
        {"symbol": SYM_C, "orderId": 602, "tradeSide": SELL, "qty": 0.01, "price": 300.0, "time": (T0 - 30) * 1000},
        {"symbol": SYM_C, "orderId": 603, "tradeSide": SELL, "qty": 0.02, "price": 330.0, "time": (T0 - 40) * 1000},
        {"symbol": SYM_C, "orderId": 604, "tradeSide": SELL, "qty": 0.05, "price": 100.0, "time": (T0 - 50) * 1000},
    ]

    start(h, snapshot(position(SYM_C, 0.01)))                         # 0.02 closed outside

    [(trade_id, _leg, qty, price, estimated)] = h.lifecycle.external
    assert (trade_id, qty, estimated) == ("T000000001", 0.02, False)
    assert price == pytest.approx((0.01 * 300.0 + 0.01 * 330.0) / 0.02)   # our fill and the buy ignored


def test_without_enough_foreign_fills_an_external_close_is_estimated_at_the_mark():
    h = harness([long_trade(1, 0.02)])
    h.client.fills = [{"symbol": SYM_C, "orderId": 700, "tradeSide": SELL, "qty": 0.01, "price": 300.0,
                       "time": T0 * 1000}]
    h.client.marks[SYM_C] = 415.0

    start(h, snapshot())                                              # flat, and no position to read a mark from

    assert h.lifecycle.external == [("T000000001", 0, 0.02, 415.0, True)]


def test_an_opposite_position_blocks_the_symbol_and_pauses_every_strategy_with_a_leg_there():
    h = harness([long_trade(1, 0.01, strategy="s1"), long_trade(2, 0.01, strategy="s2", symbol=SYM_P),
                 long_trade(3, 0.01, strategy="gone")], runners=["s1", "s2"])

    start(h, snapshot(position(SYM_C, -0.02), position(SYM_P, 0.01)))

    assert list(h.ledger.blocked) == [SYM_C]
    assert h.alerts.kinds("CRITICAL") == ["opposite_position"]
    assert h.reconciler._runners["s1"].is_paused and not h.reconciler._runners["s2"].is_paused
    assert h.store.runner_states["gone"]["paused"] is True
    assert h.lifecycle.external == []
    h.reconciler.periodic(snapshot(position(SYM_C, -0.02), position(SYM_P, 0.01)))
    h.reconciler.periodic(snapshot(position(SYM_C, -0.02), position(SYM_P, 0.01)))
    assert h.alerts.kinds("CRITICAL") == ["opposite_position"]         # once, not at every check


def test_legs_of_settling_trades_and_expired_legs_are_not_compared():
    settling = long_trade(1, 0.01, state=TradeState.SETTLING)
    expired = long_trade(2, 0.01, symbol=SYM_P)
    expired.legs[0].expiry_ms = int((T0 - 60) * 1000)
    h = harness([settling, expired])

    start(h, snapshot())

    assert h.reconciler.last_report.symbols == [] and h.lifecycle.external == []


def test_a_symbol_with_an_execution_job_or_an_order_update_since_the_snapshot_is_deferred():
    busy, quiet = long_trade(1, 0.01), long_trade(2, 0.01, symbol=SYM_P)
    updated = FakeOrder(ours(2), SYM_P, order_id=9, updated_at=T0 + 5, live=False)
    h = harness([busy, quiet], ledger=FakeLedger([updated]))
    start(h, snapshot(position(SYM_C, 0.01), position(SYM_P, 0.01)))
    h.lifecycle.jobs.add(busy.id)

    for _check in range(3):
        report = h.reconciler.periodic(snapshot(at=T0 + 1))
    assert {c.symbol: c.verdict for c in report.symbols} == {SYM_C: VERDICT_DEFERRED, SYM_P: VERDICT_DEFERRED}
    assert h.lifecycle.external == []


def test_positions_beyond_ours_are_external_and_never_booked():
    h = harness([long_trade(1, 0.01)])

    start(h, snapshot(position(SYM_C, 0.05), position(SYM_P, -0.01)))

    assert {c.symbol: c.verdict for c in h.reconciler.last_report.symbols} == {SYM_C: VERDICT_EXTERNAL,
                                                                                SYM_P: VERDICT_EXTERNAL}
    assert h.lifecycle.external == [] and h.ledger.blocked == {} and h.alerts.sent == []


# ---------------------------------------------------------------------------------------------
# Orders
# ---------------------------------------------------------------------------------------------


def test_orphans_carry_our_prefix_and_are_journaled_then_cancelled_others_are_ignored():
    known = FakeOrder(ours(1), SYM_C, order_id=1)
    h = harness([], ledger=FakeLedger([known]))
    h.client.pending = [
        {"orderId": 1, "clientOrderId": ours(1), "symbol": SYM_C},                  # O1: in the ledger
        {"orderId": 2, "clientOrderId": ours(9), "symbol": SYM_C, "qty": 0.01},     # O2: an orphan
        {"orderId": 3, "clientOrderId": 202000000001001001, "symbol": SYM_C},       # O3: another prefix
        {"orderId": 4, "clientOrderId": None, "symbol": SYM_C},                      # O3: no id
        {"orderId": 5, "clientOrderId": 42, "symbol": SYM_C},                        # O3: not our format
    ]

    start(h, snapshot())

    assert h.client.cancelled == [{"order_id": 2, "client_order_id": None}]
    assert h.reconciler.last_report.orphans_cancelled == [ours(9)]
    assert [kind for kind, _ in h.journal][:1] == ["orphan_order"] and h.journal[0][1]["order_id"] == 2
    assert h.alerts.kinds("CRITICAL") == ["orphan_order"]


def test_an_orphan_whose_cancel_fails_is_not_reported_cancelled_and_is_tried_again():
    h = harness([])
    h.client.pending = [{"orderId": 2, "clientOrderId": ours(9), "symbol": SYM_C}]
    h.client.cancel_error = TransportError("POST /open/option/order/cancel/v1", "timeout")

    start(h, snapshot())
    assert h.reconciler.last_report.orphans_cancelled == [] and h.alerts.kinds("CRITICAL") == []
    h.client.cancel_error = None
    report = h.reconciler.periodic(snapshot())
    assert report.orphans_cancelled == [ours(9)] and h.client.cancelled == [{"order_id": 2, "client_order_id": None}]


def test_a_live_order_missing_from_the_list_is_verified_only_once_old_and_alerted_once():
    fresh = FakeOrder(ours(1), SYM_C, order_id=1, sent_at=T0)
    h = harness([], ledger=FakeLedger([fresh], verify_result="missing"))
    start(h, snapshot())
    assert h.ledger.verified == []                                      # younger than 30 s: the list lags

    h.clock.advance(ORDER_MIN_AGE_SECONDS)
    first = h.reconciler.periodic(snapshot())
    second = h.reconciler.periodic(snapshot())

    assert h.ledger.verified == [ours(1), ours(1)]
    assert first.orders_missing == [ours(1)] and second.orders_missing == []
    assert h.alerts.kinds() == ["order_missing"] and h.alerts.sent[0][0] == "WARNING"


@pytest.mark.parametrize("verdict", ["final", "live", "error"])
def test_a_verified_order_that_exists_or_cannot_be_read_raises_no_alert(verdict):
    h = harness([], ledger=FakeLedger([FakeOrder(ours(1), SYM_C, order_id=1, sent_at=T0 - 100)],
                                      verify_result=verdict))
    start(h, snapshot())
    assert h.reconciler.last_report.orders_checked == 2                 # the start-up poll, then the verify
    assert h.alerts.sent == [] and h.reconciler.last_report.orders_missing == []


# ---------------------------------------------------------------------------------------------
# Quarantine probe and trade-sequence re-seed
# ---------------------------------------------------------------------------------------------


def test_after_a_quarantine_our_recent_history_pauses_everything_and_reseeds_the_sequence():
    h = harness([], runners=["s1", "s2"], quarantined="state/trader.db.corrupt.x")
    h.client.history_pages = [
        {"list": [{"orderId": 90, "clientOrderId": ours(4242), "createTime": (T0 - 3600) * 1000},
                  {"orderId": 80, "clientOrderId": 202000000009001001, "createTime": (T0 - 60) * 1000}],
         "hasNext": True},
        {"list": [{"orderId": 70, "clientOrderId": ours(17), "createTime": (T0 - 40 * 86400) * 1000}],
         "hasNext": False},
    ]

    start(h, snapshot())

    assert h.client.history_calls[1]["fromId"] == 80                   # every page, by cursor
    assert h.client.history_calls[0]["startTime"] == int((T0 - SEQ_RESEED_LOOKBACK_SECONDS) * 1000)
    assert 89 * 86400 <= SEQ_RESEED_LOOKBACK_SECONDS <= 90 * 86400      # the exchange's history limit
    assert h.store.counters["trade_seq"] == 4242 + SEQ_RESEED_MARGIN
    assert h.alerts.kinds("CRITICAL") == ["quarantine_start"]
    assert all(runner.is_paused for runner in h.reconciler._runners.values())
    assert h.reconciler.last_report.quarantine == {"positions": 0, "open_orders": 0, "recent_orders": 1,
                                                   "max_trade_seq": 4242}


def test_after_a_quarantine_only_old_history_of_ours_is_a_normal_start_with_a_reseeded_sequence():
    h = harness([], quarantined="state/trader.db.corrupt.x")
    h.client.history_pages = [{"list": [{"orderId": 70, "clientOrderId": ours(17),
                                         "createTime": (T0 - 40 * 86400) * 1000}], "hasNext": False}]
    h.client.pending = [{"orderId": 5, "clientOrderId": None, "symbol": SYM_C}]   # somebody else's

    start(h, snapshot())

    assert h.store.counters["trade_seq"] == 17 + SEQ_RESEED_MARGIN
    assert h.alerts.sent == [] and not h.reconciler._runners["s1"].is_paused


def test_after_a_quarantine_an_open_order_of_ours_counts_and_is_cancelled_as_an_orphan():
    h = harness([], quarantined="state/trader.db.corrupt.x")
    h.client.pending = [{"orderId": 6, "clientOrderId": ours(31), "symbol": SYM_C}]

    start(h, snapshot())

    assert h.store.counters["trade_seq"] == 31 + SEQ_RESEED_MARGIN
    assert sorted(h.alerts.kinds("CRITICAL")) == ["orphan_order", "quarantine_start"]
    assert h.client.cancelled == [{"order_id": 6, "client_order_id": None}]


# ---------------------------------------------------------------------------------------------
# RFQ accepts recorded before sending
# ---------------------------------------------------------------------------------------------


def marker(trade: TradeLifecycle, intent: Intent = Intent.CLOSE) -> dict:
    return {"trade_id": trade.id, "trade_seq": trade.seq, "intent": int(intent), "request_id": "55",
            "quote_id": "66", "legs": [[0, trade.legs[0].symbol, SELL]]}


def test_an_accept_without_its_block_trade_defers_its_symbols_for_60_s_then_is_dropped():
    trade = long_trade(1, 0.01)
    h = harness([trade])
    h.client.marks[SYM_C] = 410.0
    h.store.marker_events = [{"ts": T0 - 10, "payload": marker(trade)},
                             {"ts": T0 - 10, "payload": {**marker(trade), "trade_id": "T000000099"}}]  # not active

    start(h, snapshot())                                                # flat: maybe the accepted close
    assert [c.verdict for c in h.reconciler.last_report.symbols] == [VERDICT_DEFERRED]
    assert h.client.block_lookups == 1

    h.clock.advance(30)
    h.reconciler.periodic(snapshot())                                   # 40 s: still in doubt
    assert h.client.block_lookups == 2 and h.lifecycle.external == []
    h.clock.advance(30)
    h.reconciler.periodic(snapshot())                                   # 70 s: the accept did not happen
    h.reconciler.periodic(snapshot())
    assert h.client.block_lookups == 3                                  # looked up one last time, then dropped
    assert h.lifecycle.external == [("T000000001", 0, 0.01, 410.0, True)]
