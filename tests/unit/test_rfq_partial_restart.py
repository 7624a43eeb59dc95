"""An RFQ accept partly booked before a crash is never given up after the restart (RECOVERY.md R1, R3).

A block trade is all-or-nothing on the exchange. The accept answer showed only leg 0 (leg 1
unreadable): the RFQ job booked leg 0 and went AMBIGUOUS, then the daemon died. After the
restart the block-trade list answers but does not show the record (it lags, or lost it). The
reconciler used to give the accept up (R3) on that silence, ``AcceptsInDoubt`` took its word,
and the trade was judged on leg 0 alone: UNWINDING (T5) unwound leg 0 while leg 1, filled on
the exchange, belonged to no trade (a naked leg). Evidence before belief: a leg seen keeps
the accept in doubt, looked up again, alerted CRITICAL once, until the record books the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clock import SimulatedClock
from contracts import Side
from errors import TransportError
from execution_job import JobStatus
from order_ledger import BLOCK_ACCEPT_EVENT, Intent, LedgerOrder, OrderLedger, OrderStatus
from order_reconciliation import OrderReconciler
from persistence import StateStore
from reconciliation_report import ReconcileReport
from rfq import AMBIGUOUS_RESOLVE_SECONDS, RFQExecutor, RFQParams, RFQPhase
from trade_fills import AcceptsInDoubt
from trade_lifecycle import TradeState
from tests.unit.test_lifecycle_safety import CALL, PUT, Watch, accept_marker, create_strangle, restart, tick
from tests.unit.test_lifecycle_safety import rig  # noqa: F401 - a fixture
from tests.unit.test_rfq import FakeMarket, NoExchange, _drive
from tests.unit.test_rfq_audit_restart_adoption import Lifecycle, listing
from tests.unit.test_rfq_safety import (LONG_STRANGLE, NOW, TRADE, BlockList, RecordingEngine, ScriptedClient,
                                        block_leg, failing_list, our_block)


@dataclass
class Alerts:
    """The alert sink: what was raised, in order."""

    sent: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)

    def alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        self.sent.append((level, kind, message, detail))

    def kinds(self, level: str) -> list[str]:
        return [kind for lvl, kind, _message, _detail in self.sent if lvl == level]


@dataclass
class Restarted:
    """The daemon after the crash: the same store, a new ledger, reconciler and accepts."""

    clock: SimulatedClock
    ledger: OrderLedger
    reconciler: OrderReconciler
    accepts: AcceptsInDoubt
    block_list: BlockList
    lifecycle: Lifecycle
    alerts: Alerts


def crash_after_one_leg_booked() -> tuple[SimulatedClock, StateStore]:
    """Life 1: the accept answer shows only leg 0 (leg 1 unreadable); leg 0 is booked, the job
    is AMBIGUOUS (block trade proven), the list and the fill history cannot be read; then the
    daemon dies."""
    clock = SimulatedClock(start=NOW, speed=0)
    leg0 = LONG_STRANGLE[0]
    answer = {"legs": [block_leg(leg0.symbol, leg0.side, leg0.qty, 98.0, 700)]}
    client = ScriptedClient(clock, LONG_STRANGLE, accept=lambda quote_id: answer, blocktrades=failing_list,
                            history=TransportError("GET trade history", "read timeout"))
    store = StateStore(":memory:", clock=clock)
    ledger = OrderLedger(client, clock, store=store)
    executor = RFQExecutor(client, ledger, FakeMarket(), clock, limit=RecordingEngine(ledger, FakeMarket()))
    job = executor.start(TRADE, LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0))
    _drive(job, clock, 30.0)
    assert job.phase is RFQPhase.AMBIGUOUS and job.status is JobStatus.WORKING
    assert filled(ledger) == [0.5, 0.0]
    return clock, store


def restart_with(clock: SimulatedClock, store: StateStore, records: list[dict[str, Any]]) -> Restarted:
    """Life 2 on the same store; the block-trade list answers with ``records``."""
    client = listing(*records)
    block_list: BlockList = client.blocktrade_orders
    ledger = OrderLedger(NoExchange(), clock, store=store)
    ledger.restore(store.iter_orders())
    lifecycle, alerts = Lifecycle(), Alerts()
    reconciler = OrderReconciler(client=client, ledger=ledger, lifecycle=lifecycle, store=store, alerts=alerts)
    accepts = AcceptsInDoubt(ledger)
    accepts.load(store.events(BLOCK_ACCEPT_EVENT), {TRADE.id})
    accepts.attach(reconciler)
    return Restarted(clock, ledger, reconciler, accepts, block_list, lifecycle, alerts)


def reconcile(daemon: Restarted, *, startup: bool = False) -> set[str]:
    now = daemon.clock.now()
    return daemon.reconciler.adopt_block_accepts(ReconcileReport("startup" if startup else "periodic", now), now,
                                                 startup=startup)


def filled(ledger: OrderLedger) -> list[float]:
    return [ledger.leg_fill(TRADE.id, leg.leg_index, Intent.OPEN)[0] for leg in LONG_STRANGLE]


# ------------------------------------------------------------------ the reconciler and the accepts

def test_a_partly_booked_accept_stays_in_doubt_when_the_list_does_not_show_its_record():
    clock, store = crash_after_one_leg_booked()
    clock.advance(10 * AMBIGUOUS_RESOLVE_SECONDS)
    daemon = restart_with(clock, store, [])                    # the list answers, without our record
    assert filled(daemon.ledger) == [0.5, 0.0]                 # leg 0 was booked before the crash
    doubtful = reconcile(daemon, startup=True)
    assert doubtful == {leg.symbol for leg in LONG_STRANGLE}   # R1: its symbols deferred, not R3
    assert daemon.reconciler.accept_in_doubt(TRADE.id)
    assert daemon.accepts.unresolved(TRADE.id), "trade released for judgement on a partial block trade"
    assert daemon.alerts.kinds("CRITICAL") == ["rfq_block_trade_incomplete"]
    message, detail = daemon.alerts.sent[0][2], daemon.alerts.sent[0][3]
    assert TRADE.id in message and LONG_STRANGLE[0].symbol in message and LONG_STRANGLE[1].symbol in message
    assert "block trades" in message and detail["legs_booked"] == [0] and detail["legs_missing"] == [1]


def test_the_partly_booked_accept_is_looked_up_again_alerted_once_and_its_missing_leg_booked_once():
    clock, store = crash_after_one_leg_booked()
    clock.advance(10 * AMBIGUOUS_RESOLVE_SECONDS)
    daemon = restart_with(clock, store, [])
    reconcile(daemon, startup=True)
    reads = len(daemon.block_list.reads)
    for _pass in range(3):                                      # the list keeps lagging
        clock.advance(60.0)
        assert reconcile(daemon) == {leg.symbol for leg in LONG_STRANGLE}
    assert len(daemon.block_list.reads) > reads                 # looked up again at every pass
    assert daemon.alerts.kinds("CRITICAL") == ["rfq_block_trade_incomplete"]   # said once
    assert daemon.accepts.unresolved(TRADE.id)
    daemon.block_list.records = [our_block(LONG_STRANGLE)]      # the record shows at last
    clock.advance(60.0)
    assert reconcile(daemon) == set()
    assert filled(daemon.ledger) == [0.5, 0.5] and daemon.lifecycle.refreshed == [TRADE.id]
    assert not daemon.reconciler.accept_in_doubt(TRADE.id) and daemon.accepts.unresolved(TRADE.id) == []
    # A later restart looks the same accept up again: nothing is booked twice.
    again = restart_with(clock, store, [our_block(LONG_STRANGLE)])
    assert reconcile(again, startup=True) == set() and filled(again.ledger) == [0.5, 0.5]


def test_a_partly_booked_accept_whose_list_cannot_be_read_is_alerted_too():
    clock, store = crash_after_one_leg_booked()
    clock.advance(10 * AMBIGUOUS_RESOLVE_SECONDS)
    daemon = restart_with(clock, store, [])
    daemon.block_list.fail_pages = {1, 2}
    assert reconcile(daemon, startup=True) == {leg.symbol for leg in LONG_STRANGLE}
    assert daemon.alerts.kinds("CRITICAL") == ["rfq_block_trade_incomplete"]
    assert "could not be read" in daemon.alerts.sent[0][2]


def test_an_accept_none_of_whose_legs_was_seen_is_still_given_up_after_the_window():
    """Row R3 unchanged for an accept with no evidence: no leg booked, the list read past it after
    the window without the record: it did not happen, silently."""
    clock = SimulatedClock(start=NOW, speed=0)
    store = StateStore(":memory:", clock=clock)
    OrderLedger(NoExchange(), clock, store=store).note_block_accept(
        trade_id=TRADE.id, trade_seq=TRADE.seq, intent=Intent.OPEN, request_id="77", quote_id="2",
        legs=[(leg.leg_index, leg.symbol, int(leg.side)) for leg in LONG_STRANGLE], rfq_created_at=NOW)
    clock.advance(AMBIGUOUS_RESOLVE_SECONDS - 1.0)
    daemon = restart_with(clock, store, [])
    assert reconcile(daemon, startup=True) == {leg.symbol for leg in LONG_STRANGLE}   # R2: too young
    clock.advance(2.0)
    assert reconcile(daemon) == set() and not daemon.reconciler.accept_in_doubt(TRADE.id)
    assert daemon.accepts.unresolved(TRADE.id) == [] and daemon.alerts.sent == []


# ------------------------------------------------------------------ AcceptsInDoubt alone

@dataclass
class Orders:
    """A ledger that holds the given orders (what ``AcceptsInDoubt`` reads)."""

    held: list[LedgerOrder]

    def orders(self, trade_id: str | None = None, leg_index: int | None = None,
               family: Intent | None = None) -> list[LedgerOrder]:
        return [order for order in self.held if trade_id is None or order.trade_id == trade_id]


def fill_of(leg_index: int, intent: Intent, *, reduce_only: bool, at: float) -> LedgerOrder:
    leg = LONG_STRANGLE[leg_index]
    return LedgerOrder(client_order_id=1000 + leg_index, trade_id=TRADE.id, trade_seq=TRADE.seq, leg_index=leg_index,
                       intent=intent, attempt=1, supersedes=None, symbol=leg.symbol, side=Side.SELL, qty=0.5,
                       price=98.0, reduce_only=reduce_only, status=OrderStatus.FILLED, filled_qty=0.5,
                       avg_price=98.0, sent_at=at, updated_at=at, last_fill_at=at)


def accepts_with(held: list[LedgerOrder], intent: Intent, watch: Watch) -> AcceptsInDoubt:
    accepts = AcceptsInDoubt(Orders(held))   # type: ignore[arg-type]
    event = {"id": 1, "ts": NOW, "kind": BLOCK_ACCEPT_EVENT,
             "payload": {"trade_id": TRADE.id, "trade_seq": TRADE.seq, "intent": int(intent), "request_id": "77",
                         "quote_id": "2", "legs": [[leg.leg_index, leg.symbol, 2] for leg in LONG_STRANGLE]}}
    accepts.load([event], {TRADE.id})
    accepts.attach(watch)
    return accepts


def test_accepts_in_doubt_keeps_a_partly_filled_accept_whatever_the_reconciler_says():
    accepts = accepts_with([fill_of(0, Intent.CLOSE, reduce_only=False, at=NOW + 1.0)], Intent.CLOSE,
                           Watch(doubt=set()))
    for _tick in range(3):
        assert [marker.request_id for marker in accepts.unresolved(TRADE.id)] == ["77"]


def test_accepts_in_doubt_still_takes_the_reconcilers_word_when_no_leg_of_the_block_trade_was_seen():
    """A reduce-only close fill is not the block trade's (a block trade carries no reduce-only
    flag): it is the limit fallback's after the accept was refuted, and proves nothing."""
    fallback = fill_of(0, Intent.CLOSE, reduce_only=True, at=NOW + 90.0)
    older = fill_of(1, Intent.CLOSE, reduce_only=False, at=NOW - 3600.0)   # an earlier round's
    assert accepts_with([fallback, older], Intent.CLOSE, Watch(doubt=set())).unresolved(TRADE.id) == []
    assert accepts_with([], Intent.CLOSE, Watch(doubt=set())).unresolved(TRADE.id) == []
    assert accepts_with([], Intent.CLOSE, Watch(doubt={TRADE.id})).unresolved(TRADE.id)


def test_accepts_in_doubt_resolves_an_accept_once_every_leg_is_booked():
    both = [fill_of(0, Intent.OPEN, reduce_only=False, at=NOW), fill_of(1, Intent.OPEN, reduce_only=False, at=NOW)]
    assert accepts_with(both, Intent.OPEN, Watch(doubt={TRADE.id})).unresolved(TRADE.id) == []


# ------------------------------------------------------------------ the consequence in the lifecycle

def test_a_partly_booked_block_trade_is_not_unwound_as_a_partial_open(rig):  # noqa: F811 - the fixture
    trade = create_strangle(rig, execution_mode="rfq")
    at = rig.clock.now()
    call = rig.ledger.order(trade.id, 0, CALL, Intent.OPEN, status=OrderStatus.LIVE)
    rig.ledger.book(call, 0.1, 100.0)                 # leg 0 of the block trade booked before the crash
    watch = Watch(doubt=set())                        # a reconciler that gave the accept up (R3)
    manager = restart(rig, recorded=[accept_marker(trade, Intent.OPEN, at)], watch=watch)
    manager.release()
    jobs = len(rig.executor.jobs)
    for _tick in range(4):
        tick(rig, manager, 10)
    again = manager.get(trade.id)
    assert again.state is TradeState.OPENING, f"trade judged on half a block trade: {again.state}"
    assert len(rig.executor.jobs) == jobs             # no unwind of leg 0 alone while leg 1 is unknown
    # The block-trade list shows the record: leg 1 is booked, and the trade opens whole.
    put = rig.ledger.order(trade.id, 1, PUT, Intent.OPEN, status=OrderStatus.LIVE)
    rig.ledger.book(put, 0.1, 100.0)
    manager.refresh_fills(trade.id)
    tick(rig, manager, 1)
    assert again.state is TradeState.OPEN and len(rig.executor.jobs) == jobs


def test_a_partly_booked_accept_whose_block_trade_the_list_showed_is_settled():
    """The list showed the record (its legs booked from it, R1); a leg still without a fill is
    one the record does not give us (shown on the other side, say), not one to wait for: the
    trade is judged instead of being held in doubt for good with no way out."""
    leg_zero_only = [fill_of(0, Intent.OPEN, reduce_only=False, at=NOW + 1.0)]
    found = Watch(doubt=set(), found={(TRADE.id, "77")})
    assert accepts_with(leg_zero_only, Intent.OPEN, found).unresolved(TRADE.id) == []
    elsewhere = Watch(doubt=set(), found={(TRADE.id, "78")})         # another RFQ of the trade was found
    assert accepts_with(leg_zero_only, Intent.OPEN, elsewhere).unresolved(TRADE.id)
