"""What the daemon relies on the exchange to do, written once for every target (docs/CONFORMANCE.md).

Each scenario runs against the simulator by default and against a real endpoint under
``pytest -m live`` (tests/conformance/conftest.py). Orders are tiny post-only buys priced at
half the bid from a fresh book (``doctor_orders.choose_safe_quote``), always cancelled; what
could trade on a real account (a crossing post-only, a partial fill) is skipped, loudly, there.
"""
from __future__ import annotations

import itertools

import pytest

from coincall_client import ClientSettings, CoincallClient
from coincall_payloads import PerpOrderType, parse_order, parse_orders, parse_rfq_created
from config import Credentials
from contracts import Side
from doctor_orders import choose_safe_quote, doctor_client_order_id
from errors import AuthError, ExchangeError
from tests.conformance.conftest import CONFORMANCE_PREFIX

pytestmark = [pytest.mark.conformance, pytest.mark.live]

_ids = itertools.count(1)


def _coid(target) -> int:
    run = (target.clock.now_ms() // 1000) % 999_999_999
    return doctor_client_order_id(CONFORMANCE_PREFIX, run, next(_ids) % 100)


def _quote(target):
    quote, why = choose_safe_quote(target.client, target.clock)
    if quote is None:
        pytest.skip(f"no safe option book: {why}")
    return quote


def _place(target, quote, *, price=None, reduce_only=False, post_only=True) -> tuple[int, int]:
    coid = _coid(target)
    order_id = target.client.create_order(quote.symbol, quote.min_qty, Side.BUY, price or quote.price, coid,
                                          reduce_only=reduce_only, trade_type=3 if post_only else 1)
    return order_id, coid


def test_create_query_by_both_ids_cancel_and_final_state(target):
    quote = _quote(target)
    order_id, coid = _place(target, quote)
    by_id = parse_order(target.client.query_order(order_id=order_id))
    by_coid = parse_order(target.client.query_order(client_order_id=coid))
    assert by_id.order_id == by_coid.order_id == order_id and by_coid.client_order_id == coid
    assert by_id.state in (-1, 0) and by_id.price == pytest.approx(quote.price)
    target.client.cancel_order(order_id=order_id)
    assert parse_order(target.client.query_order(order_id=order_id)).state in (3, 4, 5)


def test_an_unknown_order_is_an_exchange_error_with_a_code(target):
    with pytest.raises(ExchangeError) as raised:
        target.client.query_order(client_order_id=_coid(target))
    assert raised.value.code != 0 and raised.value.msg
    with pytest.raises(ExchangeError):
        target.client.cancel_order(client_order_id=_coid(target))


def test_a_reduce_only_order_without_a_position_is_refused(target):
    quote = _quote(target)
    with pytest.raises(ExchangeError) as raised:
        _place(target, quote, reduce_only=True)
    assert raised.value.code == 10536


def test_a_post_only_order_that_would_cross_is_refused(target):
    target.skip_live("if the exchange did not honour post-only, a buy at the ask would trade")
    quote = _quote(target)
    with pytest.raises(ExchangeError) as raised:
        _place(target, quote, price=quote.ask)
    assert raised.value.code == 10001


def test_a_partial_fill_is_reported_as_state_2_with_its_fill_quantity(target):
    target.skip_live("a partial fill needs a real trade")
    quote = _quote(target)
    book = target.client.orderbook(quote.symbol)
    asks = book["asks"]
    size = float(asks[0]["size"])
    order_id = target.client.create_order(quote.symbol, round(size + 1.0, 2), Side.BUY, float(asks[0]["price"]),
                                          _coid(target), trade_type=1)
    order = parse_order(target.client.query_order(order_id=order_id))
    assert order.state == 2 and 0 < order.fill_qty < order.qty
    target.client.cancel_order(order_id=order_id)


def test_open_orders_page_through_every_order(target):
    quote = _quote(target)
    placed = {_place(target, quote)[0] for _ in range(3)}
    first = target.client.pending_orders(page=1, page_size=2)
    assert len(first["list"]) <= 2
    seen = {o.order_id for o in parse_orders(target.client.all_pending_orders())}
    assert placed <= seen
    for order_id in placed:
        target.client.cancel_order(order_id=order_id)


def test_rfq_create_and_cancel(target):
    quote = _quote(target)
    strike = float(quote.symbol.split("-")[2])
    qty = max(quote.min_qty, round(50_000.0 / strike + 0.01, 2))
    created = parse_rfq_created(target.client.rfq_create([{"instrumentName": quote.symbol, "side": "BUY",
                                                             "qty": qty}]))
    target.client.rfq_cancel(created.request_id)


def test_error_envelopes_are_typed(target):
    bad = CoincallClient(ClientSettings(base_url=target.base_url, max_retries=0),
                         Credentials("not-a-key-at-all", "nope-nope"), target.clock)
    with pytest.raises(AuthError) as raised:
        bad.account_summary()
    assert raised.value.code != 0
    bad.close()
    with pytest.raises(ExchangeError) as invalid:
        target.client.create_order("BTCUSD-1JAN20-1000-C", 0.01, Side.BUY, 1.0, _coid(target), trade_type=3)
    assert invalid.value.code != 0 and invalid.value.msg


def test_perp_post_only_round_trip_with_an_amend(target):
    spec = target.client.perp_spec("BTC")
    book = target.client.perp_order_book("BTC")
    if not book.bids:
        pytest.skip("the BTCUSD book has no bid")
    price = round(book.bids[0][0] * 0.97, 1)
    coid = _coid(target)
    order_id = target.client.perp_create_order(spec.symbol, spec.min_qty, Side.BUY, coid,
                                               order_type=PerpOrderType.POST_ONLY, price=price)
    assert target.client.perp_order_by_client_id(coid).order_id == order_id
    target.client.perp_amend_order(spec.symbol, client_order_id=coid, price=round(price * 0.99, 1))
    target.client.perp_cancel_order(client_order_id=coid)
    assert target.client.perp_order_by_client_id(coid).state is not None


def test_perp_reduce_only_without_a_position_is_refused(target):
    spec = target.client.perp_spec("BTC")
    book = target.client.perp_order_book("BTC")
    if not book.bids:
        pytest.skip("the BTCUSD book has no bid")
    with pytest.raises(ExchangeError) as raised:
        target.client.perp_create_order(spec.symbol, spec.min_qty, Side.SELL, _coid(target),
                                        order_type=PerpOrderType.POST_ONLY, price=round(book.asks[0][0] * 1.03, 1),
                                        reduce_only=True)
    assert raised.value.code == 10536
