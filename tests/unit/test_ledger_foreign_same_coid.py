"""Two daemons, one clientOrderId: the ledger never adopts the other daemon's order (RECOVERY.md O2, O8-O10).

Two daemons on one account with one prefix (two new state directories started the same day)
build the same clientOrderIds, and each ledger records its own before sending it, so "the
ledger recorded this clientOrderId" does not make an exchange order under it ours. Before,
every lookup by clientOrderId adopted what it found: a create refused with 10577 (the id in
use by the other daemon's open order) took that order's orderId and fills, a cancel of an
order without an orderId cancelled it, a vanish check "corrected" our orderId to it, and the
reconciler's watch of a lost create adopted a clientOrderId shown under two orderIds.

Now an order found by our clientOrderId is adopted only when it can be ours: with an orderId
recorded, only that one; without, not one the exchange created before we sent ours (less
X-REQ-TS-DIFF). What cannot be ours is reported (CRITICAL ``prefix_conflict``, every strategy
paused), never adopted nor cancelled; a create refused as a duplicate is then REJECTED.
The ledger tests drive the real ``OrderLedger`` over a scripted exchange; the reconciler
tests reuse the rigs of tests/unit/test_prefix_same_coid.py and test_reconciliation.py.
"""
from __future__ import annotations

from typing import Any

import pytest

from clock import SimulatedClock
from contracts import Side
from coincall_payloads import parse_order
from errors import ExchangeError, OrderOutcomeUnknown
from order_ledger import Intent, LedgerOrder, OrderLedger, OrderStatus
from persistence import ORDER_HISTORY_WATERMARK, TRADE_SEQ_COUNTER, StateStore
from reconciliation import Reconciler
from tests.unit.test_prefix_same_coid import COID, OUR_ID, THEIR_ID, Exchange, PresumedOrder, conflict_messages, row
from tests.unit.test_reconciliation import (
    SYM_C,
    T0,
    FakeAlerts,
    FakeLedger,
    FakeLifecycle,
    FakeRunner,
    harness,
    snapshot,
    start,
)

NOT_FOUND = 10584
DUPLICATE_CLIENT_ID = 10577


class Venue:
    """An option exchange where two orders may carry one clientOrderId (one of them another daemon's).

    A lookup by clientOrderId answers the live order carrying it, else the newest (as the
    simulator does); ``forget`` hides an order from the lookup by orderId only.
    """

    def __init__(self, clock: SimulatedClock) -> None:
        self.clock = clock
        self.rows: list[dict[str, Any]] = []
        self.create_error: Exception | None = None
        self.create_delay = 0.0          # how long after our send the exchange stamps our order
        self.forgotten: set[int] = set()
        self.cancelled: list[Any] = []
        self._next_id = 1_900_000_000_000_000_001

    def add(self, order_id: int, coid: int, *, at: float, state: int = 0, fill: float = 0.0) -> dict[str, Any]:
        item = {"orderId": order_id, "clientOrderId": coid, "symbol": SYM_C, "qty": 0.1, "price": 100.0,
                "fillQty": fill, "avgPrice": 120.0 if fill else 0.0, "tradeSide": 1, "state": state,
                "reduceOnly": 0, "fee": 0.0, "createTime": int(at * 1000), "updateTime": int(at * 1000)}
        self.rows.append(item)
        return item

    def create_order(self, symbol: str, qty: Any, side: Any, price: Any, client_order_id: Any, *,
                     reduce_only: bool = False, time_in_force: str = "GTC", trade_type: int = 1) -> int:
        if self.create_error is not None and not isinstance(self.create_error, OrderOutcomeUnknown):
            raise self.create_error
        order_id, self._next_id = self._next_id, self._next_id + 1
        self.add(order_id, int(client_order_id), at=self.clock.now() + self.create_delay)
        if self.create_error is not None:
            raise self.create_error
        return order_id

    def cancel_order(self, order_id: Any = None, client_order_id: Any = None) -> None:
        self.cancelled.append(order_id if order_id is not None else client_order_id)

    def query_order(self, order_id: Any = None, client_order_id: Any = None) -> dict:
        if order_id is not None:
            found = [r for r in self.rows if r["orderId"] == int(order_id) and r["orderId"] not in self.forgotten]
        else:
            matches = [r for r in self.rows if r["clientOrderId"] == int(client_order_id)]
            live = [r for r in matches if r["state"] in (0, 2)]
            found = sorted(live or matches, key=lambda r: r["orderId"])[-1:]
        if not found:
            raise ExchangeError(NOT_FOUND, "order not exist", "GET singleQuery")
        return dict(found[0])

    def order_history(self, **filters: Any) -> dict:
        return {"list": [dict(r) for r in self.rows], "hasNext": False}


def world() -> tuple[SimulatedClock, Venue, OrderLedger]:
    clock = SimulatedClock(start=T0, speed=0)
    venue = Venue(clock)
    return clock, venue, OrderLedger(venue, clock, prefix=101)


def place(ledger: OrderLedger) -> LedgerOrder:
    return ledger.place(trade_id="T000000005", trade_seq=5, leg_index=0, intent=Intent.OPEN, symbol=SYM_C,
                        side=Side.BUY, qty=0.1, price=100.0, tick_size=1.0)


def their_order_under(coid: int, venue: Venue, *, age: float, fill: float = 0.0) -> dict[str, Any]:
    """The other daemon's order under ``coid``, created ``age`` seconds before now."""
    return venue.add(THEIR_ID, coid, at=venue.clock.now() - age, state=2 if fill else 0, fill=fill)


# ---------------------------------------------------------------------------------------------
# 1. A create answered 10577, and every lookup of an order without an orderId
# ---------------------------------------------------------------------------------------------


def test_a_create_refused_as_a_duplicate_by_an_older_order_under_our_id_is_rejected_not_adopted():
    clock, venue, ledger = world()
    venue.create_error = ExchangeError(DUPLICATE_CLIENT_ID, "Duplicated client order ID", "POST create")
    coid = 101_000_000_005_001_001
    their_order_under(coid, venue, age=40, fill=0.05)

    order = place(ledger)
    assert order.status is OrderStatus.UNKNOWN          # 10577 alone proves nothing (a replayed POST)
    assert ledger.refresh(order) is True

    assert order.status is OrderStatus.REJECTED and order.error_code == DUPLICATE_CLIENT_ID
    assert (order.order_id, order.filled_qty) == (None, 0.0)
    assert ledger.leg_fill("T000000005", 0, Intent.OPEN)[0] == 0.0        # their fill is not ours
    [foreign] = ledger.take_foreign_orders()
    assert (foreign.client_order_id, foreign.view.order_id, foreign.ours) == (coid, THEIR_ID, None)
    assert ledger.take_foreign_orders() == []                             # handed over once
    ledger.refresh(order)
    assert ledger.take_foreign_orders() == [] and order.status is OrderStatus.REJECTED


def test_an_unknown_create_whose_lookup_answers_an_older_order_is_never_cancelled_and_ends_presumed_not_placed():
    clock, venue, ledger = world()
    venue.create_error = ExchangeError(10000, "system busy", "POST create")    # outcome unknown, nothing made
    coid = 101_000_000_005_001_001
    their_order_under(coid, venue, age=40)
    order = place(ledger)
    venue.rows = [r for r in venue.rows if r["orderId"] == THEIR_ID]

    ledger.cancel(order)                                # polls first: only what it proves ours is cancelled
    assert order.status is OrderStatus.UNKNOWN and order.order_id is None   # within the create window: unknown
    clock.advance(120)                                  # past sent_at + diff + 30 s: ours is not found
    ledger.poll(order)
    ledger.cancel_until_final(order)

    assert venue.cancelled == []
    assert (order.status, order.order_id, order.presumed) == (OrderStatus.NOT_PLACED, None, True)   # reversible
    assert [f.view.order_id for f in ledger.take_foreign_orders()] == [THEIR_ID]


def test_a_presumed_not_placed_is_not_reversed_by_an_older_order_under_its_id():
    clock, venue, ledger = world()
    venue.create_error = OrderOutcomeUnknown("POST create", "read timed out", 0)
    order = place(ledger)
    venue.rows.clear()                                  # our create never reached the exchange
    clock.advance(60)
    ledger.poll(order)
    assert order.status is OrderStatus.NOT_PLACED and order.presumed
    venue.add(THEIR_ID, order.client_order_id, at=T0 - 30, state=1, fill=0.1)

    assert ledger.verify(order) == "final"

    assert order.status is OrderStatus.NOT_PLACED and order.presumed and order.order_id is None
    assert order.filled_qty == 0.0 and len(ledger.take_foreign_orders()) == 1


# ---------------------------------------------------------------------------------------------
# 2. The vanish check: an orderId recorded is the only one that is ours
# ---------------------------------------------------------------------------------------------


def test_an_order_not_found_by_its_orderid_never_takes_the_orderid_found_under_its_clientorderid():
    clock, venue, ledger = world()
    order = place(ledger)
    ours = order.order_id
    assert ours is not None
    venue.forgotten.add(ours)                          # the exchange forgot ours ...
    venue.rows = [r for r in venue.rows if r["orderId"] != ours]
    their_order_under(order.client_order_id, venue, age=-5, fill=0.1)   # ... the other daemon's came after
    venue.rows[-1]["state"] = 1
    clock.advance(31)

    verdict = ledger.verify(order)

    assert verdict == "vanished" and order.status is OrderStatus.VANISHED
    assert order.order_id == ours and order.filled_qty == 0.0          # our record kept, their fill not taken
    [foreign] = ledger.take_foreign_orders()                           # once, though seen twice (lookup, history)
    assert (foreign.view.order_id, foreign.ours) == (THEIR_ID, ours)

    clock.advance(60)                                                   # the reconciler's re-check of the verdict
    assert ledger.verify(order) == "vanished" and order.order_id == ours and order.filled_qty == 0.0


# ---------------------------------------------------------------------------------------------
# The ordinary case: our own order found by our clientOrderId is adopted as before
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.2, -3.0])     # created after we sent it; or before, by a skew within the diff
def test_our_own_lost_create_found_by_its_clientorderid_is_adopted_and_cancelled(delay):
    clock, venue, ledger = world()
    venue.create_delay = delay
    venue.create_error = OrderOutcomeUnknown("POST create", "read timed out", 0)
    order = place(ledger)
    made = venue.rows[-1]["orderId"]

    ledger.cancel(order)

    assert order.order_id == made and venue.cancelled == [made]
    assert order.status is OrderStatus.CANCEL_REQUESTED and ledger.take_foreign_orders() == []


def test_our_own_lost_create_on_an_exchange_clock_behind_ours_is_adopted():
    """Our clock 10 s ahead of the exchange's (the client signs with a -10 s offset): our own order
    is stamped 10 s before our send time by the exchange, and is still ours, not another daemon's."""
    clock, venue, _ledger = world()
    ledger = OrderLedger(venue, clock, prefix=101, exchange_offset=lambda: -10.0)
    venue.create_delay = -10.0
    venue.create_error = OrderOutcomeUnknown("POST create", "read timed out", 0)
    order = place(ledger)
    made = venue.rows[-1]["orderId"]

    ledger.cancel(order)

    assert order.order_id == made and venue.cancelled == [made] and ledger.take_foreign_orders() == []
    assert order.exchange_offset == -10.0                                            # kept with the order
    order.order_id, order.exchange_offset = None, 0.0
    assert ledger._not_ours(order, parse_order(venue.rows[-1])) is not None          # 10 s off, without it


def test_a_replayed_create_refused_as_a_duplicate_of_itself_is_adopted():
    clock, venue, ledger = world()
    venue.create_error = OrderOutcomeUnknown("POST create", "read timed out", 0)
    order = place(ledger)                               # the first delivery made our order ...
    order.error_code = DUPLICATE_CLIENT_ID              # ... and the answer we got was the replay's 10577

    assert ledger.refresh(order) is True

    assert order.status is OrderStatus.LIVE and order.order_id == venue.rows[-1]["orderId"]
    assert ledger.take_foreign_orders() == []


# ---------------------------------------------------------------------------------------------
# The reconciler: the conflict the ledger found is alerted and pauses; the watch never adopts
# ---------------------------------------------------------------------------------------------


def unknown_record(sent_at: float) -> dict:
    """Our opening order of trade 5, its create answered 10577, as the store keeps it."""
    return {"client_order_id": COID, "trade_id": "T000000005", "trade_seq": 5, "leg_index": 0, "intent": 1,
            "attempt": 1, "supersedes": None, "symbol": SYM_C, "side": 1, "qty": 0.01, "price": 400.0,
            "reduce_only": False, "status": "UNKNOWN", "order_id": None, "filled_qty": 0.0, "avg_price": 0.0,
            "fee": 0.0, "sent_at": sent_at, "updated_at": sent_at, "exchange_state": None,
            "error_code": DUPLICATE_CLIENT_ID, "error_msg": "Duplicated client order ID", "exchange_offset": 0.0}


def test_the_reconciler_raises_prefix_conflict_and_pauses_for_the_order_the_ledger_refused(tmp_path):
    clock = SimulatedClock(start=T0, speed=0)
    theirs = row(THEIR_ID, at=T0 - 60, state=0, fill=0.0)
    exchange = Exchange([theirs])
    exchange.pending = [theirs]                         # the other daemon's order, resting
    store = StateStore(tmp_path / "trader.db", clock=clock)
    store.raise_counter_to(TRADE_SEQ_COUNTER, 5)
    store.raise_counter_to(ORDER_HISTORY_WATERMARK, int((T0 - 3600) * 1000))
    store.save_order(unknown_record(T0 - 10))
    ledger = OrderLedger(exchange, clock, prefix=101, store=store)
    ledger.restore(store.load_orders())
    alerts, runner = FakeAlerts(), FakeRunner("s1")
    reconciler = Reconciler(client=exchange, ledger=ledger, lifecycle=FakeLifecycle([]), store=store, clock=clock,
                            alerts=alerts)
    reconciler.attach_runners([runner])

    reconciler(snapshot(at=clock.now()))

    assert reconciler.started
    [message] = conflict_messages(alerts)
    assert str(COID) in message and f"orderId {THEIR_ID}" in message
    assert runner.is_paused and ledger.is_blocked(SYM_C) and exchange.cancelled == []
    order = ledger.get(COID)
    assert order is not None and (order.status, order.order_id) == (OrderStatus.REJECTED, None)
    assert [r["status"] for r in store.load_orders()] == ["REJECTED"]
    assert reconciler.last_report is not None and reconciler.last_report.foreign_orders == [COID]

    clock.advance(61)                                   # alerted once
    reconciler.periodic(snapshot(at=clock.now()))
    assert len(conflict_messages(alerts)) == 1 and exchange.cancelled == []


def test_a_watched_lost_create_refused_as_a_duplicate_is_rejected_not_reversed():
    lost = PresumedOrder(COID, SYM_C, order_id=None, live=False, status=OrderStatus.NOT_PLACED)
    h = harness([], ledger=FakeLedger([lost]))
    start(h, snapshot())
    lost.status = OrderStatus.REJECTED                  # what the ledger's look-up settled meanwhile
    h.clock.advance(61)

    h.reconciler.periodic(snapshot(at=h.clock.now()))

    assert "order_verdict_reversed" not in h.alerts.kinds()


def test_the_watch_never_looks_up_a_clientorderid_listed_open_under_two_orderids():
    lost = PresumedOrder(COID, SYM_C, order_id=None, live=False, status=OrderStatus.NOT_PLACED)
    h = harness([], ledger=FakeLedger([lost]))
    start(h, snapshot())
    h.client.pending = [row(OUR_ID, at=T0 + 5, state=0, fill=0.0), row(THEIR_ID, at=T0 + 6, state=0, fill=0.0)]
    h.clock.advance(61)

    h.reconciler.periodic(snapshot(at=h.clock.now()))

    assert h.ledger.polled == [] and h.ledger.verified == [] and lost.order_id is None
    assert len(conflict_messages(h.alerts)) == 1 and h.runners["s1"].is_paused and h.client.cancelled == []


def test_the_watch_never_looks_up_a_clientorderid_the_history_showed_under_two_orderids():
    lost = PresumedOrder(COID, SYM_C, order_id=None, live=False, status=OrderStatus.NOT_PLACED)
    h = harness([], ledger=FakeLedger([lost]))
    start(h, snapshot())
    h.client.history_pages = [{"list": [row(OUR_ID, at=T0 + 5), row(THEIR_ID, at=T0 + 6)], "hasNext": False}]
    h.client.history_calls.clear()
    h.clock.advance(20)                                 # the history shows both before the first re-check
    h.reconciler.periodic(snapshot(at=h.clock.now()))
    assert len(conflict_messages(h.alerts)) == 1

    for _ in range(3):                                  # re-checks due: none asks by clientOrderId
        h.clock.advance(61)
        h.reconciler.periodic(snapshot(at=h.clock.now()))

    assert h.ledger.polled == [] and h.ledger.verified == [] and lost.order_id is None
    assert len(conflict_messages(h.alerts)) == 1
