"""The order ledger against the simulated exchange over loopback (BEHAVIOUR.md §6.1, §8 rows 5, 7, 8, 10, 11, 39)."""
from __future__ import annotations

import pytest

from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from errors import LedgerCapError
from market_data import MarketData
from order_ledger import Intent, OrderLedger, OrderStatus, parse_client_order_id
from simulator import FaultRule, Mutation
from tests.unit.store_fakes import NoFloorsNoKeptBlocks

BUY, SELL = 1, 2


class RecordingStore(NoFloorsNoKeptBlocks):
    """A StateStore double that also notes how many creates the exchange had seen at each save."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self.saved: list[tuple[str, int]] = []

    def save_order(self, record: dict) -> None:
        self.saved.append((record["status"], len(self.sim.requests_for("create_order"))))

    def append_event(self, kind: str, payload: dict, ts: float) -> int:
        raise AssertionError("not used by this test")   # only RFQ accepts write an event

    def load_orders(self, trade_id: str | None = None) -> list[dict]:
        raise AssertionError("not used by this test")   # nothing is archived here

    def load_order(self, client_order_id: int) -> dict | None:
        raise AssertionError("not used by this test")


@pytest.fixture
def client(sim):
    c = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                       Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    yield c
    c.close()


@pytest.fixture
def market(client, sim):
    return MarketData(client, sim.clock)


@pytest.fixture
def resting(market):
    """(symbol, tick, resting buy price) for a liquid call of the second expiry."""
    index = market.index_price()
    instruments = market.instruments()
    expiry = sorted({i.expiry_ms for i in instruments})[1]
    calls = sorted((i for i in instruments if i.expiry_ms == expiry and i.option_type == "C"),
                   key=lambda i: abs(i.strike - index))
    for inst in calls:
        book = market.order_book(inst.symbol)
        if book.best_bid and book.best_ask:
            return inst.symbol, inst.tick_size, book.best_bid - 10 * inst.tick_size
    raise AssertionError("no two-sided call")


def _place(ledger, symbol, tick, price, *, intent=Intent.OPEN, qty=1.0, side=BUY, leg=0, seq=1, supersedes=None):
    return ledger.place(trade_id=f"T{seq:09d}", trade_seq=seq, leg_index=leg, intent=intent, symbol=symbol,
                        side=side, qty=qty, price=price, tick_size=tick, supersedes=supersedes)


def _confirm_final(ledger, order, sim, max_polls=20):
    for _ in range(max_polls):
        ledger.poll(order)
        if order.status.is_final:
            return order
        sim.clock.advance(2.0)
    raise AssertionError(f"order {order.client_order_id} never became final: {order.status}")


def test_order_recorded_pending_send_before_the_post(sim, client, resting):
    symbol, tick, price = resting
    store = RecordingStore(sim)
    events: list[tuple[str, str]] = []
    ledger = OrderLedger(client, sim.clock, store=store, on_event=lambda kind, rec: events.append((kind, rec["status"])))
    order = _place(ledger, symbol, tick, price)
    assert order.status is OrderStatus.LIVE and isinstance(order.order_id, int)
    assert store.saved[0] == ("PENDING_SEND", 0)     # committed while the exchange had seen no create
    assert store.saved[-1] == ("LIVE", 1)
    assert events[0] == ("order_recorded", "PENDING_SEND")
    body = sim.requests_for("create_order")[0].params
    assert body["clientOrderId"] == order.client_order_id and body["reduceOnly"] == 0
    assert body["timeInForce"] == "GTC" and body["tradeType"] == 1


def test_incident_11_lost_create_response_is_adopted_by_client_order_id_without_resend(sim, client, resting):
    symbol, tick, price = resting
    ledger = OrderLedger(client, sim.clock)
    sim.faults.add(FaultRule(endpoint="create_order", mode="lost_response", count=1))
    order = _place(ledger, symbol, tick, price)
    assert order.status is OrderStatus.UNKNOWN and order.order_id is None
    with pytest.raises(LedgerCapError):   # no second order on the leg while the first is unknown
        _place(ledger, symbol, tick, price)
    sim.clock.advance(2.0)
    ledger.poll(order)
    on_exchange = [o for o in sim.exchange.orders() if o["clientOrderId"] == order.client_order_id]
    assert len(on_exchange) == 1 and len(sim.exchange.orders()) == 1
    assert order.status is OrderStatus.LIVE and order.order_id == on_exchange[0]["orderId"]
    assert len(sim.requests_for("create_order")) == 1
    assert sim.requests_for("query_order")[0].params == {"clientOrderId": str(order.client_order_id)}


def test_dropped_create_becomes_not_placed_after_the_deadline(sim, client, resting):
    symbol, tick, price = resting
    ledger = OrderLedger(client, sim.clock)
    sim.faults.add(FaultRule(endpoint="create_order", mode="drop", count=1))
    order = _place(ledger, symbol, tick, price)
    assert order.status is OrderStatus.UNKNOWN
    sim.clock.advance(10.0)
    ledger.poll(order)
    assert order.status is OrderStatus.UNKNOWN     # too early to conclude
    sim.clock.advance(26.0)                         # past sent_at + 5 s diff + 30 s
    ledger.poll(order)
    assert order.status is OrderStatus.NOT_PLACED and sim.exchange.orders() == []


def test_definitive_rejection_is_rejected(sim, client, resting):
    symbol, tick, price = resting
    ledger = OrderLedger(client, sim.clock)
    order = _place(ledger, symbol, tick, price, intent=Intent.CLOSE, side=SELL)   # reduce-only, no position
    assert order.status is OrderStatus.REJECTED and order.error_code == 10536
    assert sim.requests_for("create_order")[0].params["reduceOnly"] == 1
    assert ledger.live_orders() == []


def test_caps_refuse_before_sending(sim, client, resting):
    symbol, tick, price = resting
    ledger = OrderLedger(client, sim.clock, max_live_per_symbol=2, max_orders_per_trade=3)
    _place(ledger, symbol, tick, price, leg=0)
    _place(ledger, symbol, tick, price, leg=1)
    with pytest.raises(LedgerCapError):
        _place(ledger, symbol, tick, price, leg=2)
    with pytest.raises(ValueError):
        _place(ledger, symbol, tick, price, leg=3, qty=0.004)
    assert len(sim.requests_for("create_order")) == 2


def test_cancel_waits_through_canceling_then_counts_the_fill(sim, client, resting):
    symbol, tick, price = resting
    ledger = OrderLedger(client, sim.clock)
    sim.exchange.faults.hold_canceling_seconds = 30.0
    order = _place(ledger, symbol, tick, price)
    ledger.cancel(order)
    for _ in range(2):                               # held in state 5 for two polls: not final
        sim.clock.advance(2.0)
        ledger.poll(order)
        assert order.exchange_state == 5 and order.status is OrderStatus.CANCEL_REQUESTED
        assert not order.status.is_final and ledger.live_orders() == [order]
    with pytest.raises(LedgerCapError):              # no early replacement on that leg
        _place(ledger, symbol, tick, price, intent=Intent.OPEN_REQUOTE, supersedes=order.client_order_id)
    sim.exchange.force_fill(order.order_id, 1.0, price)
    sim.clock.advance(2.0)
    ledger.poll(order)
    assert order.status is OrderStatus.FILLED and order.filled_qty == 1.0
    assert ledger.leg_fill("T000000001", 0, Intent.OPEN)[0] == 1.0


def test_incident_07_fill_between_poll_and_cancel_only_the_remainder_is_replaced(sim, client, resting):
    symbol, tick, price = resting
    ledger = OrderLedger(client, sim.clock)
    first = _place(ledger, symbol, tick, price)
    ledger.poll(first)
    assert first.filled_qty == 0.0
    sim.exchange.faults.fill_on_next_cancel_qty = 0.3
    ledger.cancel(first)
    _confirm_final(ledger, first, sim)
    filled, _, _ = ledger.leg_fill("T000000001", 0, Intent.OPEN)
    assert first.status is OrderStatus.CANCELED and filled == 0.3
    second = _place(ledger, symbol, tick, price, qty=1.0 - filled, intent=Intent.OPEN_REQUOTE,
                    supersedes=first.client_order_id)
    assert second.qty == 0.7 and second.supersedes == first.client_order_id
    sim.exchange.force_fill(second.order_id, 0.7)
    _confirm_final(ledger, second, sim)
    assert ledger.leg_fill("T000000001", 0, Intent.OPEN)[0] == 1.0
    assert sim.exchange.position_of(None, symbol) == 1.0


def test_incident_08_fills_accumulate_across_a_requote_chain_with_vwap(sim, client, resting):
    symbol, tick, price = resting
    ledger = OrderLedger(client, sim.clock)
    previous = None
    for qty, fill_price in ((1.0, 100.0), (0.8, 110.0), (0.5, 120.0)):
        intent = Intent.OPEN if previous is None else Intent.OPEN_REQUOTE
        order = _place(ledger, symbol, tick, price, qty=qty, intent=intent,
                       supersedes=None if previous is None else previous.client_order_id)
        sim.exchange.force_fill(order.order_id, {1.0: 0.2, 0.8: 0.3, 0.5: 0.5}[qty], fill_price)
        if qty != 0.5:
            ledger.cancel(order)
        _confirm_final(ledger, order, sim)
        previous = order
    filled, vwap, fees = ledger.leg_fill("T000000001", 0, Intent.OPEN)
    exchange_fees = sum(o["fee"] for o in sim.exchange.orders())
    assert filled == 1.0 and vwap == pytest.approx(113.0, abs=1e-9)
    assert fees == pytest.approx(exchange_fees) and fees > 0
    assert [o.intent for o in ledger.orders("T000000001")] == [Intent.OPEN, Intent.OPEN_REQUOTE, Intent.OPEN_REQUOTE]


def test_incident_10_close_rounds_never_share_an_id_and_kill_ids_decode_to_intent_7(sim, client, resting):
    symbol, tick, price = resting
    sim.exchange.set_position(None, symbol, 2.0, price)
    ledger = OrderLedger(client, sim.clock)
    sell_price = price + 40 * tick                  # rests above the ask
    round1 = _place(ledger, symbol, tick, sell_price, intent=Intent.CLOSE, side=SELL)   # take-profit close
    assert round1.status is OrderStatus.LIVE
    ledger.cancel(round1)
    _confirm_final(ledger, round1, sim)             # round 1 is final before round 2 starts
    round2 = _place(ledger, symbol, tick, sell_price, intent=Intent.CLOSE, side=SELL)   # stop-loss close
    ledger.cancel(round2)
    _confirm_final(ledger, round2, sim)
    kill = _place(ledger, symbol, tick, sell_price, intent=Intent.KILL, side=SELL)
    ids = [o.client_order_id for o in ledger.orders()]
    assert len(set(ids)) == 3
    assert [parse_client_order_id(i).attempt for i in ids] == [1, 2, 3]
    assert parse_client_order_id(kill.client_order_id).intent == 7
    for request in sim.requests_for("create_order"):
        intent = parse_client_order_id(request.params["clientOrderId"]).intent
        assert intent >= 3 and request.params["reduceOnly"] == 1


def test_restore_continues_attempts(sim, client, resting):
    symbol, tick, price = resting
    ledger = OrderLedger(client, sim.clock)
    order = _place(ledger, symbol, tick, price)
    ledger.cancel(order)
    _confirm_final(ledger, order, sim)
    again = OrderLedger(client, sim.clock)
    again.restore([o.to_record() for o in ledger.orders()])
    assert again.attempts_used(1, 0) == 1
    nxt = _place(again, symbol, tick, price, intent=Intent.OPEN_REQUOTE, supersedes=order.client_order_id)
    assert parse_client_order_id(nxt.client_order_id).attempt == 2



@pytest.mark.parametrize("dropped", [("fillQty",), ("avgPrice",)], ids=["no fillQty", "no avgPrice"])
def test_a_fill_or_final_state_is_adopted_only_from_a_view_that_carries_the_fill_and_its_price(
        sim, client, resting, dropped):
    """"Cancelled" without fillQty says the order is done, not how much of it filled: adopting it
    would let an executor re-place what may have filled. A fill without avgPrice would be booked
    at a VWAP of nothing (and the trade's PnL with it). The ledger keeps the order live (no
    replacement on its leg) and adopts state and fill once a view carries both."""
    symbol, tick, price = resting
    ledger = OrderLedger(client, sim.clock)
    order = _place(ledger, symbol, tick, price)
    sim.exchange.force_fill(order.order_id, 0.4, price)
    ledger.cancel(order)
    blind = sim.mutations.add(Mutation("drop_fields", endpoint="query_order", fields=dropped))
    for _ in range(3):
        sim.clock.advance(2.0)
        ledger.poll(order)
        assert not order.status.is_final and order.filled_qty == 0.0
        assert ledger.live_orders() == [order]
    assert blind.applied >= 3
    with pytest.raises(LedgerCapError):              # no replacement while its fill is unknown
        _place(ledger, symbol, tick, price, qty=1.0, intent=Intent.OPEN_REQUOTE, supersedes=order.client_order_id)
    sim.mutations.remove(blind)
    sim.clock.advance(2.0)
    ledger.poll(order)
    assert order.status is OrderStatus.CANCELED and order.filled_qty == 0.4
    assert ledger.leg_fill("T000000001", 0, Intent.OPEN)[:2] == (0.4, pytest.approx(price))
