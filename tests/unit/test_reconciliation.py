"""The pure parts of the reconciler and its decisions, with fakes where HTTP would add nothing.

``judge`` and ``ReconcileReport`` are pure. The decision logic (confirmation on two checks,
deferral, newest-trade-first booking, pricing from fills that are not ours, orphans, missing
orders, the quarantine probe, the start-up hold) is driven with small fakes of the client,
ledger, lifecycle and store, and real ``TradeLifecycle`` values. The same rows are tested
against the simulator in tests/integration/test_restart_reconciliation.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import pytest

from clock import SimulatedClock
from contracts import Contract
from errors import TransportError
from external_closes import FLAG_PNL_ESTIMATED
from order_ledger import BLOCK_ACCEPT_EVENT, Intent, OrderStatus, build_client_order_id
from order_reconciliation import ORDER_MIN_AGE_SECONDS
from position_reconciliation import judge
from prefix_ownership import (
    FOREIGN_ORDERS_EVENT,
    HISTORY_OVERLAP_SECONDS,
    SEQ_RESEED_LOOKBACK_SECONDS,
    SEQ_RESEED_MARGIN,
)
from reconciliation import Reconciler
from reconciliation_report import (
    VERDICT_DEFERRED,
    VERDICT_EXTERNAL,
    VERDICT_OK,
    VERDICT_OPPOSITE,
    VERDICT_SHORTFALL,
    ReconcileReport,
    SymbolCheck,
)
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
                       "external closes T000000001:B:0.01; paused s1")
    assert "unknown" not in summary and "missing" not in summary and "blocked" not in summary
    assert ReconcileReport("startup", T0).summary() == "startup: 0 order(s) checked; symbols none"


def test_report_event_keeps_every_symbol_but_the_ones_that_agree():
    report = ReconcileReport("startup", T0, orders_missing=[7], foreign_orders=[8], block_fills_adopted=2)
    report.symbols = [SymbolCheck("A", 0.01, 0.01, VERDICT_OK), SymbolCheck("B", 0.01, -0.01, VERDICT_OPPOSITE)]
    report.quarantine = {"positions": 1}

    event = report.to_event()

    assert event["symbols"] == [{"symbol": "B", "ours": 0.01, "exchange": -0.01, "verdict": VERDICT_OPPOSITE}]
    assert event["orders_missing"] == [7] and event["foreign_orders"] == [8]
    assert event["block_fills_adopted"] == 2 and event["quarantine"] == {"positions": 1}
    assert "unknown orders with our prefix 8" in report.summary() and "2 block fill(s) adopted" in report.summary()


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

    def vanished_orders(self) -> list[FakeOrder]:
        return [o for o in self.orders() if o.status is OrderStatus.VANISHED]

    def orders_updated_since(self, since: float) -> list[FakeOrder]:
        return [o for o in self.orders() if float(o.updated_at) >= since]

    def get(self, coid: int) -> FakeOrder | None:
        return next((o for o in self._orders if o.client_order_id == coid), None)

    def is_ours(self, coid: int) -> bool:
        return self.get(coid) is not None

    def known_order_ids(self) -> set[int]:
        return {o.order_id for o in self._orders if o.order_id is not None}

    def known_client_order_ids(self) -> list[int]:
        return [o.client_order_id for o in self._orders]

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


    def block_symbol_durably(self, symbol: str, reason: str) -> bool:
        return self.block_symbol(symbol, reason)
    def recheck_final(self, order: FakeOrder) -> float | None:
        raise AssertionError("not used by this test")

    def record_block_fill(self, **fill: Any) -> FakeOrder:
        raise AssertionError("not used by this test")

    def take_foreign_orders(self) -> list:
        return []


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
        self.fail_pending: Exception | None = None
        self.fail_history: Exception | None = None
        self.history_reads: dict[str, int] = {}                  # trade-history reads per symbol
        self.history_error: Exception | None = None

    def all_pending_orders(self) -> list[dict]:
        if self.fail_pending is not None:
            raise self.fail_pending
        return list(self.pending)

    def cancel_order(self, order_id: int | None = None, client_order_id: int | None = None) -> None:
        if self.cancel_error is not None:
            raise self.cancel_error
        self.cancelled.append({"order_id": order_id, "client_order_id": client_order_id})

    def trade_history(self, **params: Any) -> dict:
        symbol = params.get("symbol")
        self.history_reads[symbol] = self.history_reads.get(symbol, 0) + 1
        if self.history_error is not None:
            raise self.history_error
        return {"list": [f for f in self.fills if f["symbol"] == symbol]}

    def order_history(self, **params: Any) -> dict:
        self.history_calls.append(params)
        if self.fail_history is not None:
            raise self.fail_history
        index = len(self.history_calls) - 1
        return self.history_pages[index] if index < len(self.history_pages) else {"list": [], "hasNext": False}

    def blocktrade_orders(self, **params: Any) -> dict:
        self.block_lookups += 1
        return {"list": list(self.blocks)}


class FakeLifecycle:
    def __init__(self, trades: list[TradeLifecycle] | None = None) -> None:
        self._trades = list(trades or [])
        self.hold_reason: str | None = None
        self.external: list[tuple] = []
        self.jobs: set[str] = set()
        self.entry_holds: dict[str, str] = {}
        self.reversed: list[str] = []

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

    def record_external_close(self, trade_id: str, leg_index: int, qty: float, price: float, *,
                              detail: str) -> None:
        self.external.append((trade_id, leg_index, round(qty, 8), round(price, 8)))
        trade = next(t for t in self._trades if t.id == trade_id)
        trade.legs[leg_index].external_qty += qty

    def trades(self) -> list[TradeLifecycle]:
        return list(self._trades)

    def get(self, trade_id: str) -> TradeLifecycle | None:
        raise AssertionError("not used by this test")

    def hold_entries(self, key: str, reason: str) -> bool:
        new = key not in self.entry_holds
        self.entry_holds[key] = reason
        return new

    def release_entries(self, key: str) -> bool:
        return self.entry_holds.pop(key, None) is not None

    def reversible_external_closes(self) -> list[TradeLifecycle]:
        return [t for t in self._trades if not t.is_active and FLAG_PNL_ESTIMATED in t.flags]

    def reverse_external_close(self, trade_id: str, detail: str) -> TradeLifecycle | None:
        trade = next(t for t in self._trades if t.id == trade_id)
        self.reversed.append(trade_id)
        for leg in trade.legs:
            leg.external_qty = 0.0
        trade.flags.remove(FLAG_PNL_ESTIMATED)
        trade.state = TradeState.OPEN
        return trade


@dataclass
class FakeStore:
    marker_events: list[dict] = field(default_factory=list)
    runner_states: dict[str, dict] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    empty: bool = False                        # no trade and no order (a new or lost store)
    foreign_events: list[dict] = field(default_factory=list)
    path: str = "state/trader.db"

    def events(self, kind: str) -> list[dict]:
        if kind == FOREIGN_ORDERS_EVENT:
            return list(self.foreign_events)
        return [e for e in self.marker_events if kind == BLOCK_ACCEPT_EVENT]

    def holds_nothing(self) -> bool:
        return self.empty

    def counter(self, name: str) -> int:
        return self.counters.get(name, 0)

    def load_runner_state(self, name: str) -> dict | None:
        return self.runner_states.get(name)

    def save_runner_state(self, name: str, state: dict) -> None:
        self.runner_states[name] = dict(state)

    def raise_counter_to(self, name: str, value: int) -> int:
        self.counters[name] = max(self.counters.get(name, 0), value)
        return self.counters[name]

    def raise_client_id_floors(self, seen) -> int:
        """The floors of ids seen on the exchange and never recorded (docs/RECOVERY.md O2), as counters."""
        seen = list(seen)
        for trade_seq, leg, intent, attempt in seen:
            key = f"client_id_floor:{trade_seq}:{leg}:{intent}"
            self.counters[key] = max(self.counters.get(key, 0), attempt)
        return len(seen)


class FakeRunner:
    def __init__(self, name: str) -> None:
        self.name = name
        self.is_paused = False
        self.reasons: list[str] = []

    def pause(self, reason: str) -> None:
        self.is_paused = True
        self.reasons.append(reason)

    @property
    def pause_reason(self) -> str:
        return self.reasons[-1] if self.reasons else ""

    @property
    def paused_for_good(self) -> bool:
        return self.is_paused

    def resume(self) -> None:
        raise AssertionError("not used by this test")


class FakeAlerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict]] = []
        self.messages: list[str] = []

    def alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        self.sent.append((level, kind, detail))
        self.messages.append(message)

    def kinds(self, level: str | None = None) -> list[str]:
        return [kind for lvl, kind, _ in self.sent if level is None or lvl == level]


def long_trade(seq: int, qty: float, *, symbol: str = SYM_C, strategy: str = "s1",
               state: TradeState = TradeState.OPEN, opened_at: float | None = T0 - 600) -> TradeLifecycle:
    contract = Contract(symbol=symbol, underlying="BTC", option_type=symbol[-1], strike=92000.0, expiry_ms=EXPIRY_MS)
    leg = TradeLeg(index=0, contract=contract, side=BUY, qty=qty, open_filled=qty, open_vwap=400.0)
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
    runners: dict[str, FakeRunner]                # the runners attached to the reconciler, by name


def harness(trades: list[TradeLifecycle] | None = None, *, ledger: FakeLedger | None = None,
            runners: list[str] = ("s1",), quarantined: Any = None, store: FakeStore | None = None) -> Harness:
    clock = SimulatedClock(start=T0, speed=0)
    client, lifecycle, alerts = FakeClient(), FakeLifecycle(trades), FakeAlerts()
    store = store or FakeStore()
    ledger = ledger or FakeLedger()
    journal: list[tuple[str, dict]] = []
    reconciler = Reconciler(client=client, ledger=ledger, lifecycle=lifecycle, store=store, clock=clock,
                            alerts=alerts, journal=lambda kind, payload: journal.append((kind, payload)),
                            quarantined=quarantined)
    attached = {name: FakeRunner(name) for name in runners}
    reconciler.attach_runners(attached.values())
    return Harness(clock, client, ledger, lifecycle, store, alerts, journal, reconciler, attached)


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
    assert all(runner.is_paused for runner in h.runners.values())
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


def foreign_sell(qty: float, price: float, at: float, order_id: int = 700) -> dict:
    """A fill on SYM_C that no order of ours made, on the closing side of a long."""
    return {"symbol": SYM_C, "orderId": order_id, "tradeSide": SELL, "qty": qty, "price": price, "time": at * 1000}


def test_a_periodic_shortfall_acts_only_when_two_consecutive_checks_agree():
    h = harness([long_trade(1, 0.02)])
    h.client.fills = [foreign_sell(0.01, 300.0, T0 - 5)]
    start(h, snapshot(position(SYM_C, 0.02)))

    h.reconciler.periodic(snapshot(position(SYM_C, 0.01)))            # a lagging answer, perhaps
    assert h.lifecycle.external == []
    h.reconciler.periodic(snapshot(position(SYM_C, 0.0)))             # a different quantity: start again
    assert h.lifecycle.external == []
    h.reconciler.periodic(snapshot(position(SYM_C, 0.02)))            # caught up: nothing to do
    h.reconciler.periodic(snapshot(position(SYM_C, 0.01)))
    assert h.lifecycle.external == []
    h.reconciler.periodic(snapshot(position(SYM_C, 0.01)))            # the same twice in a row: act

    assert h.lifecycle.external == [("T000000001", 0, 0.01, 300.0)]
    assert h.alerts.sent == []                                          # the lifecycle raises that alert
    assert h.runners["s1"].is_paused


def test_the_start_up_check_acts_at_once_and_books_newest_trade_first():
    older, newer = long_trade(1, 0.02), long_trade(2, 0.01)
    h = harness([older, newer])
    h.client.fills = [foreign_sell(0.02, 300.0, T0 - 5)]

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
        {"symbol": SYM_C, "orderId": 605, "tradeSide": SELL, "qty": 0.01, "price": 777.0, "time": (T0 - 60) * 1000,
         "clientOrderId": ours(9)},                                   # our prefix: ours, even unknown to the ledger
        {"symbol": SYM_C, "orderId": 606, "tradeSide": SELL, "qty": 0.05, "price": 1.0, "time": (T0 - 900) * 1000},
    ]

    start(h, snapshot(position(SYM_C, 0.01)))                         # 0.02 closed outside

    [(trade_id, _leg, qty, price)] = h.lifecycle.external
    assert (trade_id, qty) == ("T000000001", 0.02)
    assert price == pytest.approx((0.01 * 300.0 + 0.01 * 330.0) / 0.02)   # our fills and the buy ignored
    assert h.alerts.kinds() == [] and h.lifecycle.entry_holds == {}


def test_s6_only_the_part_fills_explain_is_booked_the_rest_is_a_suspect_read():
    h = harness([long_trade(1, 0.02)])
    h.client.fills = [foreign_sell(0.01, 300.0, T0),
                      foreign_sell(0.05, 1.0, T0 - 3600, order_id=701)]   # before the trade opened: not evidence

    start(h, snapshot())                                              # flat

    assert h.lifecycle.external == [("T000000001", 0, 0.01, 300.0)]  # never anything at the mark
    assert h.alerts.kinds("CRITICAL") == ["suspect_positions_read"]
    assert h.alerts.sent[0][2]["symbols"] == {SYM_C: {"ours": 0.01, "exchange": 0.0}}
    assert list(h.lifecycle.entry_holds) == ["suspect_positions"]
    assert h.reconciler.last_report.suspect == [SYM_C]


def test_s6_a_flat_read_books_nothing_alerts_once_holds_entries_and_clears_when_the_positions_show():
    h = harness([long_trade(1, 0.02), long_trade(2, 0.01, symbol=SYM_P, strategy="s2")], runners=["s1", "s2"])
    start(h, snapshot(position(SYM_C, 0.02), position(SYM_P, 0.01)))

    for _check in range(5):                                           # "code 0, []" for five minutes
        h.clock.advance(60)
        h.reconciler.periodic(snapshot(at=h.clock.now()))

    assert h.lifecycle.external == [] and all(t.state is TradeState.OPEN for t in h.lifecycle.active_trades())
    assert h.alerts.kinds() == ["suspect_positions_read"]             # once for the episode, CRITICAL
    assert h.alerts.sent[0][0] == "CRITICAL" and set(h.alerts.sent[0][2]["symbols"]) == {SYM_C, SYM_P}
    assert "suspect_positions" in h.lifecycle.entry_holds
    assert not any(runner.is_paused for runner in h.runners.values())
    assert h.client.history_reads == {SYM_C: 4, SYM_P: 4}             # re-checked once per symbol and check

    h.clock.advance(60)
    h.reconciler.periodic(snapshot(position(SYM_C, 0.02), position(SYM_P, 0.01), at=h.clock.now()))

    assert h.lifecycle.entry_holds == {} and h.reconciler.last_report.suspect == []
    assert h.alerts.kinds() == ["suspect_positions_read", "positions_reappeared"]
    assert h.alerts.sent[1][0] == "WARNING"


def test_s6_evidence_that_arrives_later_books_the_close_then():
    h = harness([long_trade(1, 0.01)])
    start(h, snapshot())                                              # flat, no fill yet: suspect
    assert h.lifecycle.external == [] and h.alerts.kinds() == ["suspect_positions_read"]

    h.client.fills = [foreign_sell(0.01, 320.0, T0 + 30)]            # the trade history catches up
    h.clock.advance(60)
    h.reconciler.periodic(snapshot(at=h.clock.now()))

    assert h.lifecycle.external == [("T000000001", 0, 0.01, 320.0)]
    assert h.lifecycle.entry_holds == {} and h.alerts.kinds()[-1] == "suspect_positions_resolved"


def test_s6_fills_already_used_for_an_external_close_are_not_evidence_twice():
    trade = long_trade(1, 0.02)
    h = harness([trade])
    h.client.fills = [foreign_sell(0.01, 300.0, T0 - 5)]
    start(h, snapshot(position(SYM_C, 0.01)))
    assert h.lifecycle.external == [("T000000001", 0, 0.01, 300.0)] and trade.legs[0].net_qty == 0.01

    h.clock.advance(60)
    h.reconciler.periodic(snapshot(at=h.clock.now()))                 # the other 0.01 goes, without a fill
    h.clock.advance(60)
    h.reconciler.periodic(snapshot(at=h.clock.now()))

    assert len(h.lifecycle.external) == 1 and h.alerts.kinds() == ["suspect_positions_read"]


def test_an_unreadable_trade_history_is_no_evidence_and_is_read_again_at_the_next_check():
    h = harness([long_trade(1, 0.01)])
    h.client.history_error = TransportError("GET /open/option/trade/history/v1", "timeout")
    h.client.fills = [foreign_sell(0.01, 300.0, T0 - 5)]
    start(h, snapshot())
    assert h.lifecycle.external == [] and h.alerts.kinds() == ["suspect_positions_read"]

    h.client.history_error = None
    h.clock.advance(60)
    h.reconciler.periodic(snapshot(at=h.clock.now()))
    h.clock.advance(60)
    h.reconciler.periodic(snapshot(at=h.clock.now()))

    assert h.lifecycle.external == [("T000000001", 0, 0.01, 300.0)]


def test_an_opposite_position_blocks_the_symbol_and_pauses_every_strategy_with_a_leg_there():
    h = harness([long_trade(1, 0.01, strategy="s1"), long_trade(2, 0.01, strategy="s2", symbol=SYM_P),
                 long_trade(3, 0.01, strategy="gone")], runners=["s1", "s2"])

    start(h, snapshot(position(SYM_C, -0.02), position(SYM_P, 0.01)))

    assert list(h.ledger.blocked) == [SYM_C]
    assert h.alerts.kinds("CRITICAL") == ["opposite_position"]
    assert h.runners["s1"].is_paused and not h.runners["s2"].is_paused
    assert h.store.runner_states["gone"]["paused"] is True
    assert h.lifecycle.external == []
    h.reconciler.periodic(snapshot(position(SYM_C, -0.02), position(SYM_P, 0.01)))
    h.reconciler.periodic(snapshot(position(SYM_C, -0.02), position(SYM_P, 0.01)))
    assert h.alerts.kinds("CRITICAL") == ["opposite_position"]         # once, not at every check


def test_legs_of_settling_trades_and_expired_legs_are_not_compared():
    settling = long_trade(1, 0.01, state=TradeState.SETTLING)
    expired = long_trade(2, 0.01, symbol=SYM_P)
    expired.legs[0].contract = replace(expired.legs[0].contract, expiry_ms=int((T0 - 60) * 1000))
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


def test_row_o2_unknown_orders_with_our_prefix_are_reported_and_paused_on_never_cancelled_others_ignored():
    known = FakeOrder(ours(1), SYM_C, order_id=1)
    h = harness([], ledger=FakeLedger([known]), runners=["s1", "s2"], store=FakeStore(counters={"trade_seq": 20}))
    h.client.pending = [
        {"orderId": 1, "clientOrderId": ours(1), "symbol": SYM_C},                  # O1: in the ledger
        {"orderId": 2, "clientOrderId": ours(9), "symbol": SYM_C, "qty": 0.01,      # O2: not ours to touch
         "tradeSide": BUY, "price": 5.0},
        {"orderId": 3, "clientOrderId": 202000000001001001, "symbol": SYM_C},       # O3: another prefix
        {"orderId": 4, "clientOrderId": None, "symbol": SYM_C},                      # O3: no id
        {"orderId": 5, "clientOrderId": 42, "symbol": SYM_C},                        # O3: not our format
    ]

    start(h, snapshot())

    assert h.client.cancelled == []
    assert h.reconciler.last_report.foreign_orders == [ours(9)]
    [(kind, payload)] = [(k, p) for k, p in h.journal if k == FOREIGN_ORDERS_EVENT]
    assert payload["client_order_ids"] == [ours(9)] and payload["orders"][0]["order_id"] == 2
    assert h.alerts.kinds("CRITICAL") == ["prefix_conflict"]
    detail = h.alerts.sent[0][2]
    assert detail["client_order_ids"] == [ours(9)] and detail["count"] == 1
    assert all(runner.is_paused for runner in h.runners.values())
    assert h.store.counters["trade_seq"] == 9 + SEQ_RESEED_MARGIN          # our next ids stay clear of it
    assert "CLIENT_ORDER_PREFIX" in h.alerts.messages[0] and "python main.py resume" in h.alerts.messages[0]


def test_row_o2_an_unknown_order_is_reported_once_in_this_life_and_the_next():
    h = harness([], store=FakeStore(counters={"trade_seq": 20}))
    h.client.pending = [{"orderId": 2, "clientOrderId": ours(9), "symbol": SYM_C}]

    start(h, snapshot())
    h.clock.advance(60)
    again = h.reconciler.periodic(snapshot())

    assert again.foreign_orders == [] and h.alerts.kinds("CRITICAL") == ["prefix_conflict"]
    events = [{"payload": payload} for kind, payload in h.journal if kind == FOREIGN_ORDERS_EVENT]
    restarted = harness([], store=FakeStore(foreign_events=events, counters=dict(h.store.counters)))
    restarted.client.pending = list(h.client.pending)
    start(restarted, snapshot())
    assert restarted.alerts.sent == [] and not restarted.runners["s1"].is_paused


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
    assert all(runner.is_paused for runner in h.runners.values())
    assert h.reconciler.last_report.quarantine == {"positions": 0, "open_orders": 0, "recent_orders": 1,
                                                   "max_trade_seq": 4242}


def test_after_a_quarantine_only_old_history_of_ours_is_a_normal_start_with_a_reseeded_sequence():
    h = harness([], quarantined="state/trader.db.corrupt.x")
    h.client.history_pages = [{"list": [{"orderId": 70, "clientOrderId": ours(17),
                                         "createTime": (T0 - 40 * 86400) * 1000}], "hasNext": False}]
    h.client.pending = [{"orderId": 5, "clientOrderId": None, "symbol": SYM_C}]   # somebody else's

    start(h, snapshot())

    assert h.store.counters["trade_seq"] == 17 + SEQ_RESEED_MARGIN
    assert h.alerts.sent == [] and not h.runners["s1"].is_paused


def test_after_a_quarantine_an_open_order_of_ours_counts_and_is_named_not_cancelled():
    h = harness([], quarantined="state/trader.db.corrupt.x")
    h.client.pending = [{"orderId": 6, "clientOrderId": ours(31), "symbol": SYM_C}]

    start(h, snapshot())

    assert h.store.counters["trade_seq"] == 31 + SEQ_RESEED_MARGIN
    assert h.alerts.kinds("CRITICAL") == ["quarantine_start"]             # one alert naming it, no second one
    assert str(ours(31)) in next(m for m in h.alerts.messages if "quarantined" in m)
    assert h.client.cancelled == []


# ---------------------------------------------------------------------------------------------
# Lost memory: a missing store, a store behind the exchange, the history watch
# ---------------------------------------------------------------------------------------------


def test_row_l2_a_missing_store_with_a_position_starts_everything_paused():
    h = harness([], runners=["s1", "s2"], store=FakeStore(empty=True))

    start(h, snapshot(position(SYM_C, 0.01)))

    assert h.alerts.kinds("CRITICAL") == ["missing_store_start"]
    assert all(runner.is_paused for runner in h.runners.values())
    assert h.store.counters["order_history_checked_ms"] == int(T0 * 1000)   # checked: the next start is normal


def test_row_l2_a_first_start_with_positions_but_nothing_of_ours_in_the_history_is_normal():
    h = harness([], store=FakeStore(empty=True))
    h.reconciler.note_new_state_dir()

    start(h, snapshot(position(SYM_C, 0.01)))

    assert h.alerts.sent == [] and not h.runners["s1"].is_paused


def test_row_l2_a_first_start_with_orders_of_ours_in_the_history_is_a_lost_store():
    h = harness([], store=FakeStore(empty=True))
    h.reconciler.note_new_state_dir()
    h.client.history_pages = [{"list": [{"orderId": 70, "clientOrderId": ours(17),
                                         "createTime": (T0 - 40 * 86400) * 1000}], "hasNext": False}]

    start(h, snapshot(position(SYM_C, 0.01)))

    assert h.alerts.kinds("CRITICAL") == ["missing_store_start"]
    assert h.store.counters["trade_seq"] == 17 + SEQ_RESEED_MARGIN


def test_row_l3_orders_beyond_the_store_sequence_mean_the_store_is_behind():
    store = FakeStore(counters={"trade_seq": 10, "order_history_checked_ms": int((T0 - 3600) * 1000)})
    h = harness([], ledger=FakeLedger([FakeOrder(ours(10), SYM_C, order_id=1, live=False)]), store=store)
    h.client.history_pages = [{"list": [
        {"orderId": 1, "clientOrderId": ours(10), "createTime": (T0 - 3000) * 1000},       # known
        {"orderId": 2, "clientOrderId": ours(12), "createTime": (T0 - 1800) * 1000, "state": 1},
    ], "hasNext": False}]

    start(h, snapshot())

    assert h.client.history_calls[0]["startTime"] == int((T0 - 3600 - HISTORY_OVERLAP_SECONDS) * 1000)
    assert h.alerts.kinds("CRITICAL") == ["store_behind"]
    assert h.alerts.sent[0][2]["store_trade_seq"] == 10 and h.alerts.sent[0][2]["highest_trade_seq"] == 12
    assert h.store.counters["trade_seq"] == 12 + SEQ_RESEED_MARGIN
    assert h.runners["s1"].is_paused


def test_every_start_moves_the_sequence_past_our_known_orders_without_an_alert():
    store = FakeStore(counters={"trade_seq": 3, "order_history_checked_ms": int((T0 - 60) * 1000)})
    h = harness([], ledger=FakeLedger([FakeOrder(ours(7), SYM_C, order_id=1, live=False)]), store=store)
    h.client.history_pages = [{"list": [{"orderId": 1, "clientOrderId": ours(7), "createTime": T0 * 1000}],
                               "hasNext": False}]

    start(h, snapshot())

    assert h.store.counters["trade_seq"] == 7 and h.alerts.sent == []


def test_the_history_since_the_last_check_is_read_every_reconciliation_for_fast_filled_foreign_orders():
    h = harness([], store=FakeStore(counters={"order_history_checked_ms": int((T0 - 60) * 1000)}))
    start(h, snapshot())
    h.clock.advance(60)
    h.client.history_pages = h.client.history_pages[:1] + [
        {"list": [{"orderId": 8, "clientOrderId": ours(40), "createTime": (T0 + 30) * 1000, "state": 1}],
         "hasNext": False}]

    report = h.reconciler.periodic(snapshot())
    h.clock.advance(60)
    later = h.reconciler.periodic(snapshot())

    assert h.client.history_calls[1]["startTime"] == int((T0 - HISTORY_OVERLAP_SECONDS) * 1000)
    assert report.foreign_orders == [ours(40)] and later.foreign_orders == []
    assert h.alerts.kinds("CRITICAL") == ["prefix_conflict"] and h.runners["s1"].is_paused
    assert h.store.counters["order_history_checked_ms"] == int((T0 + 120) * 1000)


def test_a_failed_history_read_while_running_keeps_the_watermark_and_the_rest_of_the_check():
    h = harness([], store=FakeStore(counters={"order_history_checked_ms": int((T0 - 60) * 1000)}))
    start(h, snapshot())
    h.clock.advance(60)
    h.client.fail_history = TransportError("GET /open/option/order/history/v1", "timeout")

    report = h.reconciler.periodic(snapshot())

    assert report.kind == "periodic" and h.store.counters["order_history_checked_ms"] == int(T0 * 1000)


def test_a_start_up_check_that_cannot_pass_yet_keeps_the_hold():
    h = harness([])
    attempts: list[float] = []

    def not_yet() -> None:
        attempts.append(h.clock.now())
        raise TransportError("GET /open/auth/user/query-api", "connection refused")

    h.reconciler.add_startup_check(not_yet)
    h.reconciler(snapshot())
    assert not h.reconciler.started and h.lifecycle.hold_reason is not None and h.client.history_calls == []
    h.reconciler._startup_checks.clear()
    h.reconciler(snapshot())
    assert h.reconciler.started and attempts == [T0]


# ---------------------------------------------------------------------------------------------
# RFQ accepts recorded before sending
# ---------------------------------------------------------------------------------------------


def marker(trade: TradeLifecycle, intent: Intent = Intent.CLOSE) -> dict:
    return {"trade_id": trade.id, "trade_seq": trade.seq, "intent": int(intent), "request_id": "55",
            "quote_id": "66", "legs": [[0, trade.legs[0].symbol, SELL]]}


def test_an_accept_without_its_block_trade_defers_its_symbols_for_60_s_then_is_dropped():
    trade = long_trade(1, 0.01)
    h = harness([trade])
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
    assert h.lifecycle.external == []                                   # no block trade, no fill: nothing booked
    assert h.alerts.kinds("CRITICAL") == ["suspect_positions_read"]


def test_an_accept_whose_block_trade_list_does_not_answer_stays_in_doubt_until_one_does():
    """R3 gives an accept up only on a list that answered: a failed look-up is not an absence."""
    trade = long_trade(1, 0.01)
    h = harness([trade])
    h.store.marker_events = [{"ts": T0 - 10, "payload": marker(trade)}]
    assert h.reconciler.accept_in_doubt(trade.id)                       # nothing looked up yet: in doubt
    answer = h.client.blocktrade_orders
    h.client.blocktrade_orders = lambda **params: (_ for _ in ()).throw(TransportError("GET blocktrades", "503"))

    start(h, snapshot())
    for _ in range(5):                                                  # 10 s to 130 s after the accept
        h.clock.advance(30)
        h.reconciler.periodic(snapshot())
        assert h.reconciler.accept_in_doubt(trade.id)
        assert [c.verdict for c in h.reconciler.last_report.symbols] == [VERDICT_DEFERRED]
    assert not h.reconciler.accept_in_doubt("T000000099")               # no accept recorded for that one

    h.client.blocktrade_orders = answer                                 # the list answers, without our trade
    h.clock.advance(30)
    h.reconciler.periodic(snapshot())
    assert not h.reconciler.accept_in_doubt(trade.id)


def test_a_restart_reads_the_block_trade_list_back_to_the_rfq_of_the_accept_and_no_further():
    """The marker carries the RFQ's creation time: the look-up stops at older records. A marker of
    an older version has none, and a list longer than the page bound is then a failed read (the
    accept stays in doubt), never an absence."""
    from tests.unit.test_rfq_safety import BlockList, foreign_record

    trade = long_trade(1, 0.01)
    old_records = [foreign_record(10_000 + n, T0 - 7200.0 + n) for n in range(2_000)]
    for carries_time, pages_read, in_doubt in ((True, 1, False), (False, 20, True)):
        h = harness([trade])
        payload = {**marker(trade), **({"rfq_created_at": T0 - 100.0} if carries_time else {})}
        h.store.marker_events = [{"ts": T0 - 90, "payload": payload}]
        block_list = BlockList(old_records)
        h.client.blocktrade_orders = block_list
        start(h, snapshot())
        assert len(block_list.reads) == pages_read
        assert h.reconciler.accept_in_doubt(trade.id) is in_doubt


# ---------------------------------------------------------------------------------------------
# Vanished orders (row O8) and old estimated external closes (rows X1, X2)
# ---------------------------------------------------------------------------------------------


def test_o8_an_order_the_exchange_does_not_know_is_alerted_once_as_vanished():
    order = FakeOrder(ours(1), SYM_C, order_id=1, sent_at=T0 - 100)
    h = harness([], ledger=FakeLedger([order], verify_result="vanished"))

    start(h, snapshot())
    assert h.reconciler.last_report.orders_vanished == [ours(1)]
    order.live = False                                                  # the ledger settled it VANISHED
    order.status = OrderStatus.VANISHED
    h.reconciler.periodic(snapshot())

    assert h.reconciler.last_report.orders_vanished == []
    assert h.ledger.verified == [ours(1)]
    assert h.alerts.kinds() == ["order_vanished"] and h.alerts.sent[0][0] == "WARNING"
    assert h.alerts.sent[0][2]["client_order_id"] == ours(1)


def test_o8_a_vanished_order_the_open_list_shows_again_is_polled_and_believed():
    order = FakeOrder(ours(1), SYM_C, order_id=11, live=False, status=OrderStatus.VANISHED)
    h = harness([], ledger=FakeLedger([order]))
    h.client.pending = [{"orderId": 11, "clientOrderId": ours(1), "symbol": SYM_C}]

    start(h, snapshot())

    assert h.ledger.polled == [ours(1)] and h.alerts.kinds("CRITICAL") == []


def estimated_close(seq: int, qty: float, symbol: str = SYM_C) -> TradeLifecycle:
    """A trade an older version booked as closed outside at the mark, with no fill."""
    trade = long_trade(seq, qty, symbol=symbol, state=TradeState.CLOSED)
    trade.legs[0].external_qty = qty
    trade.exit_reason, trade.closed_at, trade.flags = "external_close", T0 - 300, [FLAG_PNL_ESTIMATED]
    return trade


def test_x1_an_old_estimate_whose_position_shows_again_exactly_is_reopened_at_once_at_start_up():
    old = estimated_close(1, 0.02)
    h = harness([old])

    start(h, snapshot(position(SYM_C, 0.02)))

    assert h.lifecycle.reversed == ["T000000001"] and old.state is TradeState.OPEN
    assert h.reconciler.last_report.reversed == ["T000000001"]
    assert [c.verdict for c in h.reconciler.last_report.symbols] == [VERDICT_OK]   # now ours again


def test_x1_while_running_a_reversal_needs_two_consecutive_checks_that_agree():
    old = estimated_close(1, 0.02)
    h = harness([old])
    start(h, snapshot())

    h.reconciler.periodic(snapshot(position(SYM_C, 0.02)))
    assert h.lifecycle.reversed == []
    h.reconciler.periodic(snapshot(position(SYM_C, 0.02)))
    assert h.lifecycle.reversed == ["T000000001"]


def test_x2_an_inexact_match_is_reported_once_and_never_taken_over():
    old = estimated_close(1, 0.02)
    h = harness([old])

    start(h, snapshot(position(SYM_C, 0.03)))
    for _check in range(3):
        h.reconciler.periodic(snapshot(position(SYM_C, 0.03)))

    assert h.lifecycle.reversed == [] and old.state is TradeState.CLOSED
    assert h.alerts.kinds() == ["external_close_unmatched"] and h.alerts.sent[0][0] == "CRITICAL"
