"""Verdicts the ledger reaches on missing data can be taken back (docs/RECOVERY.md rows O9, O10).

Why: NOT_PLACED after "not found" lookups and VANISHED rest on answers that did not come. The
exchange's lookups and lists lag fresh orders (incident 38) and forget orders during a
failover, so an order concluded NOT_PLACED may be working, and one settled VANISHED may have
filled. Kept for good, such a verdict frees the leg for a second order and leaves the first
one's fills to nobody. These tests drive the real ``OrderLedger`` over a scripted exchange
that can hide an order from every read and show it again.
"""
from __future__ import annotations

import logging
from typing import Any

import pytest

from clock import SimulatedClock
from contracts import Side
from errors import ExchangeError, LedgerCapError, OrderOutcomeUnknown
from order_ledger import (
    NOT_FOUND_BY_CLIENT_ID,
    PRESUMED_VERDICT_HORIZON_SECONDS,
    VERDICT_REVERSED_EVENT,
    Intent,
    LedgerOrder,
    OrderLedger,
    OrderStatus,
)
from tests.unit.store_fakes import NoFloorsNoKeptBlocks

T0 = 1_772_528_400.0          # 2026-03-03 09:00 UTC
SYMBOL = "BTCUSD-4MAR26-92000-C"
NOT_FOUND = 10584
LIVE, FILLED, PARTIAL, CANCELED = 0, 1, 2, 3


class Exchange:
    """The orders an option exchange holds, by clientOrderId, and what it lets the daemon see.

    ``hidden`` orders are unknown to every read (a lagging lookup, a failover); the truth is
    still there and shows again when they leave it.
    """

    def __init__(self) -> None:
        self.orders: dict[int, dict[str, Any]] = {}
        self.hidden: set[int] = set()
        self.lose_create_answer = False
        self.queries: list[dict[str, Any]] = []
        self._next_id = 1_900_000_000_000_000_001

    def create_order(self, symbol: str, qty: Any, side: Any, price: Any, client_order_id: Any, *,
                     reduce_only: bool = False, time_in_force: str = "GTC", trade_type: int = 1) -> int:
        order_id, self._next_id = self._next_id, self._next_id + 1
        self.orders[int(client_order_id)] = {
            "orderId": order_id, "clientOrderId": int(client_order_id), "symbol": symbol, "qty": float(qty),
            "fillQty": 0.0, "avgPrice": 0.0, "price": float(price), "tradeSide": int(side), "state": LIVE,
            "reduceOnly": int(reduce_only), "fee": 0.0, "createTime": 0, "updateTime": 0}
        if self.lose_create_answer:
            raise OrderOutcomeUnknown("POST create", "read timed out", int(client_order_id))
        return order_id

    def cancel_order(self, order_id: Any = None, client_order_id: Any = None) -> None:
        raise AssertionError("these tests cancel nothing")

    def query_order(self, order_id: Any = None, client_order_id: Any = None) -> dict:
        self.queries.append({"order_id": order_id, "client_order_id": client_order_id})
        for coid, row in self.orders.items():
            if coid in self.hidden:
                continue
            if (order_id is not None and row["orderId"] == int(order_id)) or \
                    (client_order_id is not None and coid == int(client_order_id)):
                return dict(row)
        raise ExchangeError(NOT_FOUND, "order not exist", "GET singleQuery")

    def order_history(self, **filters: Any) -> dict:
        return {"list": [dict(row) for coid, row in self.orders.items() if coid not in self.hidden],
                "hasNext": False}

    def fill(self, coid: int, qty: float, state: int) -> None:
        self.orders[coid].update(fillQty=qty, avgPrice=100.0, fee=0.01, state=state, updateTime=int(T0 * 1000))


class Store(NoFloorsNoKeptBlocks):
    """The ledger's part of the state store: every committed record, in write order."""

    def __init__(self) -> None:
        self.saved: list[dict] = []
        self.events: list[tuple[str, dict]] = []
        self.fail_saves = False

    def save_order(self, record: dict) -> None:
        if self.fail_saves:
            raise OSError("disk full")
        self.saved.append(dict(record))

    def load_orders(self, trade_id: str | None = None) -> list[dict]:
        latest: dict[int, dict] = {}
        for record in self.saved:
            latest[int(record["client_order_id"])] = record
        return [r for _, r in sorted(latest.items()) if trade_id is None or r["trade_id"] == trade_id]

    def load_order(self, client_order_id: int) -> dict | None:
        return next((r for r in reversed(self.saved) if int(r["client_order_id"]) == client_order_id), None)

    def append_event(self, kind: str, payload: dict, ts: float) -> int:
        self.events.append((kind, payload))
        return len(self.events)


def world(*, store: Store | None = None) -> tuple[SimulatedClock, Exchange, OrderLedger, list[tuple[str, dict]]]:
    clock = SimulatedClock(start=T0, speed=0)
    exchange = Exchange()
    events: list[tuple[str, dict]] = []
    ledger = OrderLedger(exchange, clock, store=store, on_event=lambda kind, payload: events.append((kind, payload)))
    return clock, exchange, ledger, events


def place(ledger: OrderLedger, intent: Intent = Intent.OPEN, trade_seq: int = 1) -> LedgerOrder:
    return ledger.place(trade_id=f"T{trade_seq:09d}", trade_seq=trade_seq, leg_index=0, intent=intent,
                        symbol=SYMBOL, side=Side.BUY, qty=0.1, price=100.0, tick_size=1.0)


def presumed_not_placed(clock: SimulatedClock, exchange: Exchange, ledger: OrderLedger) -> LedgerOrder:
    """An order whose create answer was lost and whose lookup lags past the deadline: NOT_PLACED."""
    exchange.lose_create_answer = True
    order = place(ledger)
    exchange.lose_create_answer = False
    assert order.status is OrderStatus.UNKNOWN
    exchange.hidden.add(order.client_order_id)
    clock.advance(40.0)                       # past sent_at + X-REQ-TS-DIFF (5 s) + 30 s
    ledger.poll(order)
    assert order.status is OrderStatus.NOT_PLACED and order.presumed and order.reversible
    return order


# ---------------------------------------------------------------------------------------------
# NOT_PLACED after "not found" (row O9)
# ---------------------------------------------------------------------------------------------


def test_a_not_placed_concluded_on_a_lagging_lookup_is_reversed_when_the_exchange_shows_it(caplog):
    store = Store()
    clock, exchange, ledger, events = world(store=store)
    order = presumed_not_placed(clock, exchange, ledger)
    coid = order.client_order_id
    exchange.hidden.discard(coid)
    exchange.fill(coid, 0.05, PARTIAL)
    clock.advance(60.0)

    with caplog.at_level(logging.CRITICAL, logger="order_ledger"):
        ledger.poll(order)
        ledger.poll(order)                    # a second look changes nothing and says nothing

    assert order.status is OrderStatus.PARTIAL and order.order_id == exchange.orders[coid]["orderId"]
    assert order.filled_qty == 0.05 and not order.presumed and not order.reversible
    assert order in ledger.live_orders("T000000001")
    assert store.saved[-1]["status"] == "PARTIAL" and store.saved[-1]["filled_qty"] == 0.05
    reversals = [r for r in caplog.records if "concluded NOT_PLACED was found on the exchange" in r.getMessage()]
    assert len(reversals) == 1 and reversals[0].levelno == logging.CRITICAL
    assert [payload["reversed_from"] for kind, payload in events if kind == VERDICT_REVERSED_EVENT] == ["NOT_PLACED"]
    assert ledger.leg_fill("T000000001", 0, Intent.OPEN)[0] == 0.05    # its fill counts for its trade
    with pytest.raises(LedgerCapError, match="already has a non-final order"):
        place(ledger, Intent.OPEN_REQUOTE)    # the leg is not free: no second order goes out


def test_a_presumed_not_placed_is_asked_by_client_order_id_and_a_not_found_changes_nothing():
    clock, exchange, ledger, _events = world()
    order = presumed_not_placed(clock, exchange, ledger)
    stamp = order.updated_at
    exchange.queries.clear()
    clock.advance(300.0)

    assert ledger.verify(order) == "final"
    ledger.poll(order)

    assert exchange.queries == [{"order_id": None, "client_order_id": order.client_order_id}] * 2
    assert order.status is OrderStatus.NOT_PLACED and order.updated_at == stamp   # the verdict keeps its age


def test_a_not_placed_the_ledger_never_sent_is_never_asked_again():
    store = Store()
    clock, exchange, ledger, _events = world(store=store)
    store.fail_saves = True
    with pytest.raises(OSError):
        place(ledger)                         # the record failed: the POST was never made
    (order,) = ledger.orders("T000000001")
    assert order.status is OrderStatus.NOT_PLACED and not order.presumed and exchange.orders == {}

    ledger.poll(order)
    assert ledger.verify(order) == "final" and exchange.queries == []


def test_a_presumed_not_placed_stays_in_memory_until_its_horizon():
    store = Store()
    clock, exchange, ledger, _events = world(store=store)
    presumed_not_placed(clock, exchange, ledger)
    clock.advance(2 * 3600.0)                 # quiet for far longer than the archive's hour

    assert ledger.archive_trade("T000000001") is False
    clock.advance(PRESUMED_VERDICT_HORIZON_SECONDS)
    assert ledger.archive_trade("T000000001") is True


def test_a_restart_keeps_a_presumed_not_placed_reversible_and_reads_old_records_as_the_verdict_they_were():
    store = Store()
    clock, exchange, ledger, _events = world(store=store)
    order = presumed_not_placed(clock, exchange, ledger)
    clock.advance(2 * 3600.0)
    legacy = dict(store.saved[-1])
    del legacy["presumed"]                    # as a version before the mark wrote it
    assert legacy["error_msg"] == NOT_FOUND_BY_CLIENT_ID

    again = OrderLedger(exchange, clock, store=store)
    again.restore([legacy], ended_trades={"T000000001"})     # the trade failed: its orders may be archived

    restored = again.orders("T000000001")[0]
    assert restored.presumed and restored.reversible and again.archive_trade("T000000001") is False
    exchange.hidden.discard(order.client_order_id)
    exchange.fill(order.client_order_id, 0.1, FILLED)
    again.poll(restored)
    assert restored.status is OrderStatus.FILLED and restored.filled_qty == 0.1


# ---------------------------------------------------------------------------------------------
# VANISHED (row O10)
# ---------------------------------------------------------------------------------------------


def test_a_vanished_order_is_asked_again_by_order_id_and_client_order_id_and_believed_when_found():
    clock, exchange, ledger, events = world(store=Store())
    order = place(ledger)
    exchange.hidden.add(order.client_order_id)
    clock.advance(40.0)
    assert ledger.verify(order) == "vanished" and order.presumed
    exchange.queries.clear()

    clock.advance(30.0)
    assert ledger.verify(order) == "vanished"
    assert exchange.queries == [{"order_id": order.order_id, "client_order_id": None},
                                {"order_id": None, "client_order_id": order.client_order_id}]

    exchange.hidden.discard(order.client_order_id)
    exchange.fill(order.client_order_id, 0.1, FILLED)
    assert ledger.verify(order) == "final"
    assert order.status is OrderStatus.FILLED and order.filled_qty == 0.1 and not order.presumed
    assert [payload["reversed_from"] for kind, payload in events if kind == VERDICT_REVERSED_EVENT] == ["VANISHED"]
    assert ledger.vanished_orders() == []


@pytest.mark.parametrize("page", [{"list": [], "hasNext": True},
                                  {"list": [{"symbol": SYMBOL, "state": 3}], "hasNext": True}])
def test_a_history_page_that_claims_more_without_a_way_on_is_no_proof_of_absence(page):
    """An order unknown by id is VANISHED only when the history was read to its end: a page that
    says more follow but gives no cursor (empty, or a row without orderId) leaves it unread."""
    clock, exchange, ledger, events = world(store=Store())
    order = place(ledger)
    exchange.hidden.add(order.client_order_id)
    exchange.order_history = lambda **filters: page            # type: ignore[method-assign]
    clock.advance(40.0)
    assert ledger.verify(order) == "error"
    assert order.status is OrderStatus.LIVE and "order_vanished" not in [kind for kind, _payload in events]
