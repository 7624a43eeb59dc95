"""Two daemons, one clientOrderId: an order under an id of ours with another orderId is not ours (RECOVERY.md O2).

Two fresh daemons started the same day on one account with one prefix (different state
directories) both start their trade sequence at the clock's floor, so both build the same
clientOrderIds. Before, the prefix check asked only whether the ledger had recorded the
clientOrderId, and each ledger had (under its own order): the other daemon's order passed
for ours, was never reported, and the ledger's look-up of a lost create could adopt it.
Now an order whose clientOrderId the ledger recorded under another orderId, or a
clientOrderId shown under two orderIds while the ledger holds none, is decided like an
unknown one: CRITICAL ``prefix_conflict`` naming it, every strategy paused, reported once,
never cancelled, and the ledger's record is left as it was.

The reconciler's fakes are those of tests/unit/test_reconciliation.py (and the perp reads of
tests/unit/test_perp_reconciliation.py); where the ledger's record matters, the ledger and the
store are the real ones, on a file in ``tmp_path``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from clock import SimulatedClock
from coincall_payloads import PerpOrderState
from order_ledger import OrderLedger, OrderStatus
from persistence import ORDER_HISTORY_WATERMARK, TRADE_SEQ_COUNTER, StateStore
from prefix_ownership import SEQ_RESEED_MARGIN
from reconciliation import Reconciler
from reconciliation_report import ReconcileReport
from tests.unit.test_perp_reconciliation import PERP, Rig, perp_order
from tests.unit.test_reconciliation import (
    SYM_C,
    T0,
    FakeAlerts,
    FakeClient,
    FakeLedger,
    FakeLifecycle,
    FakeOrder,
    FakeRunner,
    harness,
    long_trade,
    ours,
    position,
    snapshot,
    start,
)

SELL = 2
COID = ours(5)          # trade 5, leg 0, open, attempt 1: built by both daemons
OUR_ID = 11             # the orderId our ledger recorded for it
THEIR_ID = 22           # the other daemon's order under the same clientOrderId


def row(order_id: int, *, at: float, state: int = 1, fill: float = 0.01, price: float = 400.0,
        coid: int = COID) -> dict:
    """An option order with clientOrderId ``coid`` as the exchange lists it."""
    return {"orderId": order_id, "clientOrderId": coid, "symbol": SYM_C, "createTime": at * 1000,
            "updateTime": at * 1000, "state": state, "tradeSide": 1, "qty": 0.01, "fillQty": fill,
            "avgPrice": price if fill else 0, "price": price, "fee": 0.0}


class Exchange(FakeClient):
    """The reconciler's fake reads plus the ledger's order look-ups, over one table of orders.

    The history honours ``startTime``/``endTime``; a look-up by clientOrderId answers the live
    order carrying it, else the newest (as the simulator does when two orders share one).
    """

    def __init__(self, rows: list[dict]) -> None:
        super().__init__()
        self.rows = list(rows)
        self.queries: list[dict] = []

    def order_history(self, **params: Any) -> dict:
        self.history_calls.append(params)
        low, high = params.get("startTime", 0), params.get("endTime", 10**15)
        return {"list": [r for r in self.rows if low <= r["createTime"] <= high], "hasNext": False}

    def create_order(self, symbol: str, qty: float, side: int, price: float, client_order_id: int,
                     **_kw: Any) -> int:
        raise AssertionError("these tests send no order")

    def query_order(self, order_id: int | None = None, client_order_id: int | None = None) -> dict:
        self.queries.append({"order_id": order_id, "client_order_id": client_order_id})
        if order_id is not None:
            return next(r for r in self.rows if r["orderId"] == order_id)
        matches = [r for r in self.rows if r["clientOrderId"] == client_order_id]
        live = [r for r in matches if r["state"] in (0, 2)]
        return max(live or matches, key=lambda r: r["orderId"])


def our_record() -> dict:
    """Our opening order of trade 5 (long 0.01 SYM_C at 400, orderId 11), as the store keeps it."""
    return {"client_order_id": COID, "trade_id": "T000000005", "trade_seq": 5, "leg_index": 0, "intent": 1,
            "attempt": 1, "supersedes": None, "symbol": SYM_C, "side": 1, "qty": 0.01, "price": 400.0,
            "reduce_only": False, "status": "FILLED", "order_id": OUR_ID, "filled_qty": 0.01, "avg_price": 400.0,
            "fee": 0.0, "sent_at": T0 - 1800, "updated_at": T0 - 1800, "exchange_state": 1}


@dataclass
class Daemon:
    store: StateStore
    ledger: OrderLedger
    reconciler: Reconciler
    alerts: FakeAlerts
    runner: FakeRunner


def start_daemon(tmp_path: Any, clock: SimulatedClock, exchange: Exchange, *, held: float = 0.01) -> Daemon:
    """A store that has traded (trade 5 open, checked an hour ago), its ledger, and the start-up reconciliation."""
    store = StateStore(tmp_path / "trader.db", clock=clock)
    store.raise_counter_to(TRADE_SEQ_COUNTER, 5)
    store.raise_counter_to(ORDER_HISTORY_WATERMARK, int((T0 - 3600) * 1000))
    store.save_order(our_record())
    ledger = OrderLedger(exchange, clock, prefix=101, store=store)
    ledger.restore(store.load_orders())
    alerts, runner = FakeAlerts(), FakeRunner("s1")
    reconciler = Reconciler(client=exchange, ledger=ledger, lifecycle=FakeLifecycle([long_trade(5, 0.01)]),
                            store=store, clock=clock, alerts=alerts,
                            journal=lambda kind, payload: store.append_event(kind, dict(payload), clock.now()))
    reconciler.attach_runners([runner])
    reconciler(snapshot(position(SYM_C, held), at=clock.now()))
    assert reconciler.started
    return Daemon(store, ledger, reconciler, alerts, runner)


def assert_our_record_unchanged(daemon: Daemon) -> None:
    order = daemon.ledger.get(COID)
    assert order is not None
    assert (order.order_id, order.status) == (OUR_ID, OrderStatus.FILLED)
    assert (order.filled_qty, order.avg_price) == (0.01, 400.0)
    assert [r["order_id"] for r in daemon.store.load_orders()] == [OUR_ID]


def conflict_messages(alerts: FakeAlerts) -> list[str]:
    return [message for (level, kind, _detail), message in zip(alerts.sent, alerts.messages)
            if level == "CRITICAL" and kind == "prefix_conflict"]


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=T0, speed=0)


# ---------------------------------------------------------------------------------------------
# The finding: an order of the other daemon under a clientOrderId our ledger recorded
# ---------------------------------------------------------------------------------------------


def test_row_o2_an_open_order_under_our_clientorderid_with_another_orderid_is_a_prefix_conflict(tmp_path, clock):
    exchange = Exchange([row(OUR_ID, at=T0 - 1800)])
    daemon = start_daemon(tmp_path, clock, exchange)
    assert daemon.alerts.kinds("CRITICAL") == [] and not daemon.runner.is_paused
    theirs = row(THEIR_ID, at=T0 + 30, state=0, fill=0.0, price=5.0)
    exchange.rows.append(theirs)
    exchange.pending = [theirs]            # the other daemon's order, resting
    clock.advance(61)

    report = daemon.reconciler.periodic(snapshot(position(SYM_C, 0.01), at=clock.now()))

    [message] = conflict_messages(daemon.alerts)
    assert f"orderId {THEIR_ID}" in message and str(COID) in message
    assert report.foreign_orders == [COID] and daemon.runner.is_paused
    assert exchange.cancelled == []
    assert_our_record_unchanged(daemon)
    assert daemon.store.next_trade_seq() > 5 + SEQ_RESEED_MARGIN

    clock.advance(61)                      # reported once
    daemon.reconciler.periodic(snapshot(position(SYM_C, 0.01), at=clock.now()))
    assert len(conflict_messages(daemon.alerts)) == 1 and exchange.cancelled == []


def test_row_o2_a_history_row_under_our_clientorderid_with_another_orderid_is_a_conflict_at_start(tmp_path, clock):
    exchange = Exchange([row(OUR_ID, at=T0 - 1800), row(THEIR_ID, at=T0 - 1700, price=380.0)])

    daemon = start_daemon(tmp_path, clock, exchange, held=0.02)   # their fill is on the account too

    [message] = conflict_messages(daemon.alerts)
    assert f"orderId {THEIR_ID}" in message and f"orderId {OUR_ID}" not in message
    assert daemon.runner.is_paused and exchange.cancelled == [] and exchange.queries == []   # never looked up
    assert_our_record_unchanged(daemon)
    assert daemon.ledger.is_blocked(SYM_C)  # one of our trade sequences is in use there

    daemon.store.close()                   # a restart: reported once, remembered in the journal
    clock.advance(300)
    again = start_daemon(tmp_path, clock, exchange, held=0.02)
    assert conflict_messages(again.alerts) == [] and exchange.cancelled == []
    assert_our_record_unchanged(again)


def test_row_o2_a_history_row_under_our_clientorderid_with_another_orderid_while_running(tmp_path, clock):
    exchange = Exchange([row(OUR_ID, at=T0 - 1800)])
    daemon = start_daemon(tmp_path, clock, exchange)
    exchange.rows.append(row(THEIR_ID, at=T0 + 20, price=380.0))   # filled at once: never listed open
    clock.advance(61)

    report = daemon.reconciler.periodic(snapshot(position(SYM_C, 0.01), at=clock.now()))

    assert len(conflict_messages(daemon.alerts)) == 1 and report.foreign_orders == [COID]
    assert daemon.runner.is_paused and exchange.cancelled == []
    assert_our_record_unchanged(daemon)


def test_row_o2_perp_orders_under_our_clientorderid_with_another_orderid_are_a_conflict():
    perp_coid = ours(6)
    rig = Rig([], ledger=FakeLedger([FakeOrder(perp_coid, PERP, order_id=500, live=False)]))
    rig.store.counters[TRADE_SEQ_COUNTER] = 6       # the store has reached the trade of its order
    rig.perp.history = [perp_order(500, perp_coid, state=PerpOrderState.FILLED),
                        perp_order(900, perp_coid, state=PerpOrderState.FILLED)]
    rig.perp.open = [perp_order(901, perp_coid)]

    report = rig.reconciler.startup(snapshot())

    kinds = rig.alerts.kinds("CRITICAL")
    assert kinds == ["prefix_conflict"] and report.foreign_orders == [perp_coid] and rig.runner.is_paused
    message = rig.alerts.messages[0]
    assert "orderId 900" in message and "orderId 901" in message and "orderId 500" not in message
    assert rig.client.cancelled == [] and rig.ledger.verified == []


# ---------------------------------------------------------------------------------------------
# Two orderIds under one clientOrderId while the ledger holds none (a create whose answer was lost)
# ---------------------------------------------------------------------------------------------


@dataclass
class PresumedOrder(FakeOrder):
    """A ledger order concluded NOT_PLACED on missing answers: no orderId, watched for a reversal."""

    presumed: bool = True


def test_two_orderids_under_one_clientorderid_the_ledger_holds_none_for_are_a_conflict_and_not_adopted():
    lost = PresumedOrder(COID, SYM_C, order_id=None, live=False, status=OrderStatus.NOT_PLACED)
    h = harness([], ledger=FakeLedger([lost]))
    start(h, snapshot())
    h.client.history_pages = [{"list": [row(OUR_ID, at=T0 + 5), row(THEIR_ID, at=T0 + 6)], "hasNext": False}]
    h.client.history_calls.clear()
    report = ReconcileReport("periodic", T0)

    h.reconciler.ownership.watch_history(report, T0)

    assert h.ledger.verified == [] and lost.order_id is None       # neither is taken for ours
    [message] = [m for (_l, kind, _d), m in zip(h.alerts.sent, h.alerts.messages) if kind == "prefix_conflict"]
    assert f"orderId {OUR_ID}" in message and f"orderId {THEIR_ID}" in message
    assert report.foreign_orders == [COID] and h.runners["s1"].is_paused and h.client.cancelled == []


# ---------------------------------------------------------------------------------------------
# Our own orders stay quiet (these guard the check against firing on the ordinary case)
# ---------------------------------------------------------------------------------------------


def test_our_own_order_under_its_own_orderid_in_the_open_list_and_the_history_is_no_conflict(tmp_path, clock):
    ours_open = row(OUR_ID, at=T0 - 1800, state=0, fill=0.0)
    exchange = Exchange([ours_open])
    exchange.pending = [ours_open]
    daemon = start_daemon(tmp_path, clock, exchange)
    clock.advance(61)
    daemon.reconciler.periodic(snapshot(position(SYM_C, 0.01), at=clock.now()))

    assert conflict_messages(daemon.alerts) == [] and not daemon.runner.is_paused
    assert daemon.store.counter(TRADE_SEQ_COUNTER) == 5


def test_a_lost_create_shown_once_by_the_history_is_still_adopted_as_ours():
    lost = PresumedOrder(COID, SYM_C, order_id=None, live=False, status=OrderStatus.NOT_PLACED)
    h = harness([], ledger=FakeLedger([lost]))
    start(h, snapshot())
    h.client.history_pages = [{"list": [row(OUR_ID, at=T0 + 5)], "hasNext": False}]
    h.client.history_calls.clear()

    h.reconciler.ownership.watch_history(ReconcileReport("periodic", T0), T0)

    assert h.ledger.verified == [COID] and h.alerts.kinds("CRITICAL") == []
    assert not h.runners["s1"].is_paused

