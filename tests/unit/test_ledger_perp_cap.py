"""A reduce-only perp order is capped by a position read made before it is recorded.

Why (docs/PERPETUALS.md, issue 13): the cap needs the account's position, a GET the client may
retry for a minute or more. Three things follow, each tested here:

* ``sent_at``, the base of the "never reached the exchange" deadline (sent_at + X-REQ-TS-DIFF
  + 30 s), is stamped after that read, just before the POST: stamped before it, a lookup that
  lags the POST by a second could settle a working order NOT_PLACED and free its leg;
* the quantity committed before the POST is the capped one (a failed write sends nothing);
* a read that fails, or an empty answer (what an exchange in maintenance gives with ``code 0``),
  does not spend a clientOrderId on every attempt.
"""
from __future__ import annotations

from typing import Any

import pytest

from clock import SimulatedClock
from coincall_payloads import PerpOrder, PerpOrderState, PerpOrderType, PerpPosition
from contracts import Side
from errors import ExchangeError, OrderOutcomeUnknown, TransportError
from order_ledger import PERP_POSITION_RETRY_SECONDS, Intent, LedgerOrder, OrderLedger, OrderStatus
from tests.unit.test_ledger_reversible import T0, Store
from tests.unit.test_perp_legs import btc_perp_positions

NOT_FOUND = 10584


class NoOptions:
    """The option endpoints: never used by a perp order."""

    def create_order(self, *args: Any, **kwargs: Any) -> int:
        raise AssertionError("a perp order never goes to the option endpoints")

    cancel_order = query_order = order_history = create_order


class Perps:
    """The perp endpoints of a scripted exchange; ``read_seconds`` is how long a positions read
    takes (timeouts and retries), ``positions`` what it answers (None: the read fails)."""

    def __init__(self, clock: SimulatedClock, *, position: float | None = 0.01, read_seconds: float = 0.0) -> None:
        self.clock = clock
        self.position = position
        self.read_seconds = read_seconds
        self.lose_create = False
        self.lookup_lags = False
        self.reads = 0
        self.posts: list[dict[str, Any]] = []

    def perp_positions(self) -> list[PerpPosition]:
        self.reads += 1
        self.clock.advance(self.read_seconds)
        if self.position is None:
            raise TransportError("GET /open/futures/position/get/v1", "read timed out after 3 tries")
        return btc_perp_positions(self.position)

    def perp_create_order(self, symbol: str, qty: Any, side: Any, client_order_id: Any, **kwargs: Any) -> int:
        self.posts.append({"at": self.clock.now(), "qty": float(qty), "coid": int(client_order_id), **kwargs})
        if self.lose_create:
            raise OrderOutcomeUnknown("POST /open/futures/order/create/v1", "read timed out", int(client_order_id))
        return 777

    def perp_cancel_order(self, *, order_id: Any = None, client_order_id: Any = None) -> None:
        raise AssertionError("nothing is cancelled here")

    def perp_order(self, *, order_id: Any = None, client_order_id: Any = None) -> PerpOrder:
        if self.lookup_lags or not self.posts:
            raise ExchangeError(NOT_FOUND, "order not exist", "GET /open/futures/order/singleQuery/v1")
        post = self.posts[-1]
        return PerpOrder(order_id=777, client_order_id=post["coid"], symbol="BTCUSD", side=Side.SELL,
                         order_type=PerpOrderType.LIMIT, qty=post["qty"], filled_qty=0.0, remaining_qty=post["qty"],
                         price=post["price"], avg_price=None, fee=0.0, state=PerpOrderState.NEW, reduce_only=True,
                         time_in_force="GTC", leverage=10.0, create_time_ms=int(post["at"] * 1000),
                         update_time_ms=int(post["at"] * 1000))

    def perp_order_history(self, **filters: Any) -> list[PerpOrder]:
        return []


def ledger_for(perps: Perps, store: Store | None = None) -> OrderLedger:
    return OrderLedger(NoOptions(), perps.clock, store=store, perp_client=perps)


def close(ledger: OrderLedger, qty: float = 0.02) -> LedgerOrder:
    return ledger.place(trade_id="T000000007", trade_seq=7, leg_index=2, intent=Intent.CLOSE, symbol="BTCUSD",
                        side=Side.SELL, qty=qty, price=100_000.0, tick_size=0.1, lot=0.001)


def test_sent_at_is_stamped_after_a_slow_position_read_so_a_lagging_lookup_does_not_settle_it_not_placed():
    clock = SimulatedClock(start=T0, speed=0)
    perps = Perps(clock, position=0.01, read_seconds=65.0)   # two read timeouts and a back-off
    perps.lose_create, perps.lookup_lags = True, True
    ledger = ledger_for(perps)

    order = close(ledger)
    clock.advance(1.0)
    ledger.poll(order)                                        # the lookup lags the POST by a second

    assert order.sent_at == perps.posts[0]["at"] == T0 + 65.0
    assert order.status is OrderStatus.UNKNOWN
    clock.advance(33.0)
    ledger.poll(order)
    assert order.status is OrderStatus.UNKNOWN                # 34 s after the POST: inside its 35 s window
    perps.lookup_lags = False
    ledger.poll(order)
    assert order.status is OrderStatus.LIVE and order.order_id == 777


def test_the_capped_quantity_and_the_send_time_are_committed_before_the_post():
    clock = SimulatedClock(start=T0, speed=0)
    perps = Perps(clock, position=0.004, read_seconds=20.0)
    store = Store()

    order = close(ledger_for(perps, store), qty=0.01)

    first = store.saved[0]
    assert first["status"] == "PENDING_SEND" and first["qty"] == pytest.approx(0.004)
    assert first["sent_at"] == perps.posts[0]["at"] and perps.posts[0]["qty"] == pytest.approx(0.004)
    assert order.qty == pytest.approx(0.004) and order.status is OrderStatus.LIVE


def test_a_failed_commit_of_a_capped_order_sends_nothing():
    clock = SimulatedClock(start=T0, speed=0)
    perps = Perps(clock, position=0.004)
    store = Store()
    store.fail_saves = True

    with pytest.raises(OSError):
        close(ledger_for(perps, store), qty=0.01)

    assert perps.posts == []


def test_a_failed_position_read_records_nothing_and_is_not_repeated_on_every_attempt():
    clock = SimulatedClock(start=T0, speed=0)
    perps = Perps(clock, position=None)
    ledger = ledger_for(perps)

    for _ in range(5):
        with pytest.raises(ValueError, match="nothing recorded, nothing sent"):
            close(ledger)
        clock.advance(5.0)

    assert ledger.orders("T000000007") == [] and ledger.attempts_used(7, 2) == 0
    assert perps.reads == 1 and perps.posts == []
    clock.advance(PERP_POSITION_RETRY_SECONDS)
    perps.position = 0.01
    assert close(ledger).status is OrderStatus.LIVE and perps.reads == 2


def test_an_empty_positions_answer_spends_one_id_and_then_waits_without_a_request():
    clock = SimulatedClock(start=T0, speed=0)
    perps = Perps(clock, position=0.0)                        # code 0, no rows: maintenance, or truly flat
    ledger = ledger_for(perps)

    first = close(ledger)
    assert first.status is OrderStatus.NOT_PLACED and not first.presumed   # it was never sent
    for _ in range(5):
        clock.advance(5.0)
        with pytest.raises(ValueError, match="no BTCUSD position to reduce"):
            close(ledger)

    assert ledger.attempts_used(7, 2) == 1 and perps.reads == 1 and perps.posts == []
    clock.advance(PERP_POSITION_RETRY_SECONDS)
    perps.position = 0.02                                     # the position shows again
    assert close(ledger).status is OrderStatus.LIVE and ledger.attempts_used(7, 2) == 2
