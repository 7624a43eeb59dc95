"""The client speaks Coincall perpetual futures (API.md 14) against canned HTTP answers.

Same rules as the options routes: every request signed (market data too, API.md 14.9 #1),
GETs retried with back-off, order POSTs sent exactly once and a lost answer reported as
``OrderOutcomeUnknown`` carrying the clientOrderId. Time is a speed-0 SimulatedClock, so
back-offs and rate-budget waits move simulated time only.
"""
from __future__ import annotations

import json
import random
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses

import auth
from clock import SimulatedClock
from coincall_client import PERP_MAX_PAGES, ClientSettings, CoincallClient
from coincall_payloads import PerpOrderState, PerpOrderType
from config import Credentials
from contracts import Side
from errors import (
    ConfigError,
    ExchangeError,
    OrderOutcomeUnknown,
    PayloadError,
    RateLimitedError,
    StaleDataError,
    TransportError,
)

BASE = "http://127.0.0.1:18080"
START = 1767225600.0
KEY = "demoKey123"
SECRET = "demoSecret456"
SEED = 7
BIG_ID = 1673571411341475840
AMENDED_ID = 3690324480192708608
COID = 101000000042013007

SYMBOLS = "/open/futures/market/symbol/v1"
FUNDING = "/open/public/fundingRate/v1"
CONFIG = "/open/public/config/v1"
INSTRUMENTS = "/open/futures/market/instruments/v1"
CREATE = "/open/futures/order/create/v1"
AMEND = "/open/futures/order/modify/v1"
CANCEL = "/open/futures/order/cancel/v1"
BATCH_CANCEL = "/open/futures/order/batchCancel/v1"
QUERY = "/open/futures/order/singleQuery/v1"
PENDING = "/open/futures/order/pending/v1"
HISTORY = "/open/futures/order/history/v1"
FILLS = "/open/futures/trade/history/v1"
POSITIONS = "/open/futures/position/get/v1"
LEVERAGE = "/open/futures/leverage/current/v1"
SET_LEVERAGE = "/open/futures/leverage/set/v1"
FUNDING_RECORDS = "/open/settle/future/record/v1"
LATEST_FUNDING = "/open/settle/future/latestRecord/v1"
OPTION_CREATE = "/open/option/order/create/v1"

ORDER = {"clientOrderId": COID, "orderId": BIG_ID, "symbol": "ETHUSD", "displayName": "ETH-PERP", "qty": 0.5,
         "remainQty": 0.5, "fillQty": 0, "price": 3000.5, "avgPrice": 0, "tradeSide": 1, "tradeType": 1,
         "createTime": 1767225600000, "updateTime": 1767225600000, "reduceOnly": 0, "leverage": 5, "fee": 0,
         "state": 0, "timeInForce": "GTC"}
FILL = {"id": 9, "symbol": "ETHUSD", "tradeSide": 1, "tradeType": 1, "price": 3000.5, "qty": 0.5, "orderId": BIG_ID,
        "tradeId": 1937785628783481000, "fee": 0.3, "time": 1767225600500, "isTaker": 0}
RECORD = {"id": 1, "symbol": "ETHUSD", "displayName": "ETHUSDT Perp", "tradeSide": 1, "qty": 2.0,
          "fundFee": -0.6, "fundRate": 0.0001, "ctime": 1767225600000}


def envelope(data=None, code=0, msg="Success"):
    return {"code": code, "msg": msg, "i18nArgs": None, "data": data}


def url(path):
    return BASE + path


def make_client(clock, credentials=None, **overrides):
    creds = credentials if credentials is not None else Credentials(KEY, SECRET, "COINCALL_API_KEY_TEST")
    return CoincallClient(ClientSettings(base_url=BASE, **overrides), creds, clock, rng=random.Random(SEED))


@pytest.fixture
def clock():
    return SimulatedClock(start=START, speed=0)


@pytest.fixture
def client(clock):
    c = make_client(clock)
    yield c
    c.close()


def query_of(request):
    return dict(parse_qsl(urlsplit(request.url).query))


def body_of(request):
    return json.loads(request.body.decode() if isinstance(request.body, bytes) else request.body)


def sent_params(request):
    return query_of(request) if request.method == "GET" else body_of(request)


def assert_signed(request):
    """The request carries a signature the exchange would verify from what was actually sent."""
    h = request.headers
    assert h["X-CC-APIKEY"] == KEY
    prehash = auth.build_prehash(request.method, urlsplit(request.url).path, sent_params(request),
                                 h["X-CC-APIKEY"], h["ts"], h["X-REQ-TS-DIFF"])
    assert h["sign"] == auth.sign(SECRET, prehash)


def assert_unsigned(request):
    assert "sign" not in request.headers and "X-CC-APIKEY" not in request.headers


# ---------------------------------------------------------------------------- market data


def test_ticker_reads_the_symbol_route_and_the_funding_rate_both_signed(client, rsps):
    rsps.add(responses.GET, url(SYMBOLS), json=envelope(
        {"symbol": "ETHUSD", "baseToken": "ETH", "price": 3001.0, "markPrice": 3000.25, "indexPrice": 2999.5}))
    rsps.add(responses.GET, url(FUNDING), json=envelope(
        [{"symbol": "ETHUSD", "rate": "0.00010000", "contractId": "2", "nextFundingTime": 1767254400000}]))
    ticker = client.perp_ticker("eth")
    assert (ticker.symbol, ticker.base, ticker.last, ticker.mark, ticker.index) == (
        "ETHUSD", "ETH", 3001.0, 3000.25, 2999.5)
    assert (ticker.funding_rate, ticker.next_funding_ms, ticker.as_of) == (0.0001, 1767254400000, START)
    assert [urlsplit(c.request.url).path for c in rsps.calls] == [SYMBOLS, FUNDING]
    for call in rsps.calls:
        assert query_of(call.request) == {"symbol": "ETHUSD"}
        assert_signed(call.request)


def test_ticker_accepts_a_list_answer_and_can_skip_the_funding_read(client, rsps):
    rsps.add(responses.GET, url(SYMBOLS), json=envelope([
        {"symbol": "BTCUSD", "price": 88000.0, "markPrice": 88001.0, "indexPrice": 88002.0},
        {"symbol": "ETHUSD", "price": 3001.0, "markPrice": 3000.25, "indexPrice": 2999.5}]))
    ticker = client.perp_ticker("ETH", with_funding=False)
    assert (ticker.symbol, ticker.mark, ticker.index, ticker.funding_rate) == ("ETHUSD", 3000.25, 2999.5, None)
    assert len(rsps.calls) == 1


def test_ticker_without_the_symbol_or_its_mark_is_stale(client, rsps):
    rsps.add(responses.GET, url(SYMBOLS), json=envelope([{"symbol": "BTCUSD", "markPrice": 1, "indexPrice": 1}]))
    with pytest.raises(StaleDataError):
        client.perp_ticker("ETH", with_funding=False)
    rsps.replace(responses.GET, url(SYMBOLS), json=envelope({"symbol": "ETHUSD", "indexPrice": 2999.5}))
    with pytest.raises(StaleDataError, match="markPrice"):
        client.perp_ticker("ETH", with_funding=False)


def test_funding_rate_of_an_underlying_the_answer_lacks_is_stale(client, rsps):
    rsps.add(responses.GET, url(FUNDING), json=envelope([{"symbol": "BTCUSD", "rate": "0.0001"}]))
    with pytest.raises(StaleDataError, match="ETHUSD"):
        client.perp_funding_rate("ETH")


def test_order_book_by_underlying_on_the_futures_route(client, rsps):
    rsps.add(responses.GET, url("/open/futures/order/orderbook/v1/BTCUSD"), json=envelope(
        {"symbol": "BTCUSD", "bids": [{"size": "0.001", "price": "18801"}, {"size": "2", "price": "18802.5"}],
         "asks": [{"size": "0.5", "price": "18810"}]}))
    book = client.perp_order_book("BTC")
    assert (book.symbol, book.best_bid, book.best_ask) == ("BTCUSD", 18802.5, 18810.0)
    assert book.bids == ((18802.5, 2.0), (18801.0, 0.001))
    assert_signed(rsps.calls[0].request)


def test_last_trades_by_underlying(client, rsps):
    rsps.add(responses.GET, url("/open/futures/trade/lasttrade/v1/ETHUSD"), json=envelope(
        [{"symbol": "ETHUSD", "price": "3000", "qty": "0.01", "time": 1767225600000, "tradeSide": 1}]))
    trades = client.perp_last_trades("ETH")
    assert [(t.symbol, t.price, t.qty, t.side) for t in trades] == [("ETHUSD", 3000.0, 0.01, Side.BUY)]
    assert_signed(rsps.calls[0].request)


def test_specs_come_from_the_public_config_signed(client, rsps):
    rsps.add(responses.GET, url(CONFIG), json=envelope({"futuresConfig": {
        "BTCUSD": {"symbol": "BTCUSD", "base": "BTC", "tickSize": 0.1, "minQty": 0.001, "qtyDecimal": 3,
                   "limitMaxQty": 1000, "marketMaxQty": 120, "makerFee": 0.0002, "takerFee": 0.0006},
        "ETHUSD": {"symbol": "ETHUSD", "base": "ETH", "tickSize": 0.01, "minQty": 0.01, "qtyDecimal": 2}}}))
    spec = client.perp_spec("ETH")
    assert (spec.symbol, spec.tick_size, spec.min_qty, spec.qty_step, spec.taker_fee) == (
        "ETHUSD", 0.01, 0.01, 0.01, None)
    assert sorted(client.perp_specs()) == ["BTC", "ETH"]
    assert_signed(rsps.calls[0].request)
    with pytest.raises(PayloadError, match="SOL"):
        client.perp_spec("SOL")


def test_instruments_feed(client, rsps):
    rsps.add(responses.GET, url(INSTRUMENTS), json=envelope([
        {"ticker_id": "BTC-USD", "base_currency": "BTC", "quote_currency": "USD", "last_price": "42782.0",
         "bid": "42777.9", "ask": "42779.6", "product_type": "Perpetual", "index_price": "42751.4",
         "funding_rate": "0.00016736", "next_funding_rate_timestamp": 1703606400000}]))
    [row] = client.perp_instruments()
    assert (row.symbol, row.bid, row.ask, row.funding_rate) == ("BTCUSD", 42777.9, 42779.6, 0.00016736)
    assert_signed(rsps.calls[0].request)


def test_market_data_signing_is_a_setting(clock, rsps):
    rsps.add(responses.GET, url(FUNDING), json=envelope([{"symbol": "BTCUSD", "rate": "0.0001"}]))
    unsigned = CoincallClient(ClientSettings(base_url=BASE, perp_sign_market_data=False), None, clock)
    assert unsigned.perp_funding_rate("BTC").rate == 0.0001
    assert_unsigned(rsps.calls[0].request)
    signing_without_keys = CoincallClient(ClientSettings(base_url=BASE), None, clock)
    with pytest.raises(ConfigError):
        signing_without_keys.perp_funding_rate("BTC")
    assert len(rsps.calls) == 1


def test_market_data_get_is_retried_with_a_fresh_signature(client, clock, rsps):
    rsps.add(responses.GET, url(FUNDING), status=503)
    rsps.add(responses.GET, url(FUNDING), json=envelope([{"symbol": "BTCUSD", "rate": "0.0001"}]))
    assert client.perp_funding_rate("BTC").rate == 0.0001
    assert len(rsps.calls) == 2
    assert clock.now() > START                  # backed off on the clock before the retry
    assert_signed(rsps.calls[1].request)


# ---------------------------------------------------------------------------- create


def test_limit_create_sends_the_documented_json_body_signed(client, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope(BIG_ID))
    assert client.perp_create_order("ETHUSD", 0.5, Side.BUY, COID, price=3000.5) == BIG_ID
    request = rsps.calls[0].request
    assert request.headers["Content-Type"] == "application/json"
    assert body_of(request) == {"symbol": "ETHUSD", "qty": 0.5, "tradeSide": 1, "tradeType": 1, "price": 3000.5,
                                "timeInForce": "GTC", "clientOrderId": COID, "reduceOnly": 0}
    assert f'"clientOrderId":{COID}' in request.body.decode()      # an integer, not a string
    assert "stp" not in body_of(request)
    assert_signed(request)


def test_reduce_only_ioc_sell_is_sent_as_1_and_a_digit_string_coid_as_an_integer(client, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope({"orderId": str(BIG_ID)}))
    order_id = client.perp_create_order("BTCUSD", 0.003, "SELL", str(COID), price=88000.0, time_in_force="IOC",
                                        reduce_only=True)
    assert order_id == BIG_ID
    body = body_of(rsps.calls[0].request)
    assert (body["reduceOnly"], body["timeInForce"], body["tradeSide"], body["clientOrderId"]) == (1, "IOC", 2, COID)


def test_post_only_is_a_trade_type_and_market_orders_carry_no_price_or_time_in_force(client, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope(BIG_ID))
    client.perp_create_order("BTCUSD", 0.01, 1, COID, order_type=PerpOrderType.POST_ONLY, price=88000.0)
    client.perp_create_order("BTCUSD", 0.01, 2, COID + 1, order_type=PerpOrderType.MARKET, reduce_only=True)
    post_only, market = (body_of(call.request) for call in rsps.calls)
    assert (post_only["tradeType"], post_only["price"], post_only["timeInForce"]) == (3, 88000.0, "GTC")
    assert market == {"symbol": "BTCUSD", "qty": 0.01, "tradeSide": 2, "tradeType": 2, "clientOrderId": COID + 1,
                      "reduceOnly": 1}


@pytest.mark.parametrize("kwargs", [
    dict(price=None),                                           # a limit order needs a price
    dict(price=0.0),
    dict(price=float("nan")),
    dict(price=100.0, qty=0.0),
    dict(price=100.0, qty=-1),
    dict(price=100.0, qty=1e-05),                               # would go out in scientific notation
    dict(price=100.0, time_in_force="FOK"),                     # FOK is off by default (API.md 14.9 #3)
    dict(price=100.0, time_in_force="GTX"),
    dict(price=100.0, order_type=PerpOrderType.STOP_LIMIT),
    dict(price=100.0, order_type=7),
    dict(order_type=PerpOrderType.MARKET, price=100.0),         # a market order carries no price
    dict(price=100.0, client_order_id=1.5e17),                  # a float id would lose digits
    dict(price=100.0, symbol="BTC-USD"),
    dict(price=100.0, side=3),
])
def test_create_refuses_unsendable_orders_before_sending(client, rsps, kwargs):
    args = {"symbol": "BTCUSD", "qty": 0.01, "side": 1, "client_order_id": COID, **kwargs}
    with pytest.raises(ValueError):
        client.perp_create_order(args.pop("symbol"), args.pop("qty"), args.pop("side"), args.pop("client_order_id"),
                                 **args)
    assert len(rsps.calls) == 0


def test_fok_is_sent_only_when_the_setting_allows_it(clock, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope(BIG_ID))
    client = make_client(clock, perp_allow_fok=True)
    client.perp_create_order("BTCUSD", 0.01, 1, COID, price=88000.0, time_in_force="FOK")
    assert body_of(rsps.calls[0].request)["timeInForce"] == "FOK"


FAILURES = {
    "timeout": dict(body=requests.exceptions.ReadTimeout("read timed out")),
    "connection_reset": dict(body=requests.exceptions.ConnectionError("connection reset by peer")),
    "http503": dict(status=503, body="Service Unavailable"),
    "http502_html": dict(status=502, body="<html>bad gateway</html>"),
    "not_json": dict(status=200, body="<html>gateway</html>"),
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_a_lost_create_answer_is_an_unknown_outcome_with_the_coid_and_never_resent(client, clock, rsps, kind):
    rsps.add(responses.POST, url(CREATE), **FAILURES[kind])
    with pytest.raises(OrderOutcomeUnknown) as info:
        client.perp_create_order("BTCUSD", 0.01, 1, COID, price=88000.0)
    assert info.value.client_order_id == COID
    assert info.value.endpoint == f"POST {CREATE}"
    assert len(rsps.calls) == 1
    assert clock.now() == START                 # no back-off: nothing was going to be re-sent


def test_create_answered_without_a_usable_order_id_is_an_unknown_outcome(client, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope(None))
    with pytest.raises(OrderOutcomeUnknown) as info:
        client.perp_create_order("BTCUSD", 0.01, 1, COID, price=88000.0)
    assert info.value.client_order_id == COID


def test_unknown_create_is_resolved_by_client_order_id(client, rsps):
    rsps.add(responses.POST, url(CREATE), body=requests.exceptions.ReadTimeout("slow"))
    rsps.add(responses.GET, url(QUERY), json=envelope(ORDER))
    with pytest.raises(OrderOutcomeUnknown) as info:
        client.perp_create_order("ETHUSD", 0.5, 1, COID, price=3000.5)
    order = client.perp_order_by_client_id(info.value.client_order_id)
    assert (order.order_id, order.client_order_id, order.state) == (BIG_ID, COID, PerpOrderState.NEW)
    assert query_of(rsps.calls[1].request) == {"clientOrderId": str(COID)}


@pytest.mark.parametrize("code, msg", [
    (10536, "Insufficient open positions"), (10558, "Less than min qty"), (10529, "Insufficient balance"),
    (12012, "timeInForce must be GTC | IOC"), (10609, "Contract abnormal"),
])
def test_create_refusals_carry_code_and_message_and_are_not_resent(client, rsps, code, msg):
    rsps.add(responses.POST, url(CREATE), json=envelope(code=code, msg=msg))
    with pytest.raises(ExchangeError) as info:
        client.perp_create_order("BTCUSD", 0.01, 2, COID, price=88000.0, reduce_only=True)
    assert (info.value.code, info.value.msg, info.value.endpoint) == (code, msg, f"POST {CREATE}")
    assert info.value.outcome_unknown is False
    assert len(rsps.calls) == 1


def test_duplicate_client_order_id_is_an_exchange_error_whose_outcome_is_unknown(client, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope(code=10577, msg="Duplicate client order id"))
    with pytest.raises(ExchangeError) as info:
        client.perp_create_order("BTCUSD", 0.01, 1, COID, price=88000.0)
    assert (info.value.code, info.value.outcome_unknown) == (10577, True)
    assert len(rsps.calls) == 1


def test_throttled_create_is_not_resent(client, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope(code=10000, msg="Try again later"))
    with pytest.raises(RateLimitedError):
        client.perp_create_order("BTCUSD", 0.01, 1, COID, price=88000.0)
    assert len(rsps.calls) == 1


def test_order_actions_share_the_15_per_second_budget_with_options(client, clock, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope(BIG_ID))
    rsps.add(responses.POST, url(CANCEL), json=envelope(None))
    rsps.add(responses.POST, url(OPTION_CREATE), json=envelope(BIG_ID))
    for i in range(7):
        client.perp_create_order("BTCUSD", 0.01, 1, COID + i, price=88000.0)
        client.perp_cancel_order(client_order_id=COID + i)
    client.create_order("BTCUSD-27MAR26-100000-C", 0.1, 1, 100.0, COID + 99)
    assert clock.now() == START                  # 15 actions: all within the first second
    client.perp_create_order("BTCUSD", 0.01, 1, COID + 100, price=88000.0)
    assert clock.now() == pytest.approx(START + 1.0)


# ---------------------------------------------------------------------------- amend, cancel


def test_amend_by_client_order_id_returns_the_id_the_answer_gives(client, rsps):
    rsps.add(responses.POST, url(AMEND), json=envelope(AMENDED_ID))
    assert client.perp_amend_order("ETHUSD", client_order_id=COID, price=3001.0) == AMENDED_ID
    request = rsps.calls[0].request
    assert body_of(request) == {"clientOrderId": COID, "symbol": "ETHUSD", "price": 3001.0}
    assert_signed(request)


def test_amend_by_order_id_with_qty_and_price(client, rsps):
    rsps.add(responses.POST, url(AMEND), json=envelope(BIG_ID))
    client.perp_amend_order("ETHUSD", order_id=BIG_ID, qty=0.25, price=3001.0)
    assert body_of(rsps.calls[0].request) == {"orderId": BIG_ID, "symbol": "ETHUSD", "qty": 0.25, "price": 3001.0}


def test_amend_needs_one_reference_and_something_to_change(client, rsps):
    with pytest.raises(ValueError):
        client.perp_amend_order("ETHUSD", client_order_id=COID)
    with pytest.raises(ValueError):
        client.perp_amend_order("ETHUSD", price=3001.0)
    with pytest.raises(ValueError):
        client.perp_amend_order("ETHUSD", order_id=BIG_ID, client_order_id=COID, price=3001.0)
    with pytest.raises(ValueError):
        client.perp_amend_order("ETHUSD", order_id=BIG_ID, qty=-1)
    assert len(rsps.calls) == 0


def test_a_lost_amend_answer_is_an_unknown_outcome_never_resent(client, rsps):
    rsps.add(responses.POST, url(AMEND), body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(OrderOutcomeUnknown) as info:
        client.perp_amend_order("ETHUSD", client_order_id=COID, qty=0.2)
    assert info.value.client_order_id == COID
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("ref, body", [
    (dict(order_id=BIG_ID), {"orderId": BIG_ID}),
    (dict(client_order_id=str(COID)), {"clientOrderId": COID}),
])
def test_cancel_by_order_id_or_client_order_id(client, rsps, ref, body):
    rsps.add(responses.POST, url(CANCEL), json=envelope(None))
    assert client.perp_cancel_order(**ref) is None
    assert body_of(rsps.calls[0].request) == body
    assert_signed(rsps.calls[0].request)


def test_cancel_is_never_resent_and_reports_the_coid(client, rsps):
    rsps.add(responses.POST, url(CANCEL), status=504)
    with pytest.raises(OrderOutcomeUnknown) as info:
        client.perp_cancel_order(client_order_id=COID)
    assert info.value.client_order_id == COID
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("code", [11101, 11102, 10584])
def test_cancel_of_a_final_or_unknown_order_carries_the_code(client, rsps, code):
    rsps.add(responses.POST, url(CANCEL), json=envelope(code=code, msg="cancel failed"))
    with pytest.raises(ExchangeError) as info:
        client.perp_cancel_order(order_id=BIG_ID)
    assert (info.value.code, info.value.msg) == (code, "cancel failed")
    assert info.value.is_already_final == (code in (11101, 11102))
    assert info.value.is_not_found == (code == 10584)
    assert len(rsps.calls) == 1


def test_batch_cancel_by_client_order_ids(client, rsps):
    rsps.add(responses.POST, url(BATCH_CANCEL), json=envelope([
        {"clOrdId": COID, "ordId": BIG_ID, "ts": 1, "scode": 0, "smsg": ""},
        {"clOrdId": COID + 1, "ordId": None, "ts": 1, "scode": 1, "smsg": "not found"}]))
    acks = client.perp_batch_cancel(client_order_ids=[COID, str(COID + 1)])
    assert [(a.client_order_id, a.order_id, a.accepted) for a in acks] == [(COID, BIG_ID, True),
                                                                          (COID + 1, None, False)]
    assert body_of(rsps.calls[0].request) == {"clientOrderIdList": [COID, COID + 1]}
    assert_signed(rsps.calls[0].request)


def test_batch_cancel_by_order_ids_and_its_preconditions(client, rsps):
    rsps.add(responses.POST, url(BATCH_CANCEL), json=envelope([]))
    client.perp_batch_cancel(order_ids=[BIG_ID])
    assert body_of(rsps.calls[0].request) == {"orderIdList": [BIG_ID]}
    for kwargs in ({}, {"order_ids": [BIG_ID], "client_order_ids": [COID]}, {"order_ids": [1.0]}):
        with pytest.raises(ValueError):
            client.perp_batch_cancel(**kwargs)
    assert len(rsps.calls) == 1


def test_batch_cancel_timeout_is_unknown_and_not_resent(client, rsps):
    rsps.add(responses.POST, url(BATCH_CANCEL), body=requests.exceptions.ConnectionError("reset"))
    with pytest.raises(OrderOutcomeUnknown):
        client.perp_batch_cancel(order_ids=[BIG_ID])
    assert len(rsps.calls) == 1


# ---------------------------------------------------------------------------- queries


def test_single_query_by_order_id_keeps_19_digit_ids(client, rsps):
    rsps.add(responses.GET, url(QUERY), json=envelope({**ORDER, "state": 1, "fillQty": 0.5, "avgPrice": 3000.4}))
    order = client.perp_order(order_id=BIG_ID)
    assert query_of(rsps.calls[0].request) == {"orderId": str(BIG_ID)}
    assert (order.order_id, order.client_order_id) == (BIG_ID, COID)
    assert (order.state, order.status, order.is_final, order.avg_price) == (
        PerpOrderState.FILLED, "FILLED", True, 3000.4)
    assert_signed(rsps.calls[0].request)


def test_query_of_an_unknown_order_is_10584_after_no_retry(client, rsps):
    rsps.add(responses.GET, url(QUERY), json=envelope(code=10584, msg="Order does not exist"))
    with pytest.raises(ExchangeError) as info:
        client.perp_order_by_client_id(COID)
    assert (info.value.code, info.value.is_not_found) == (10584, True)
    assert len(rsps.calls) == 1


def test_pending_orders_walk_every_page_and_keep_each_order_once(client, rsps):
    seen = []

    def answer(request):
        query = query_of(request)
        seen.append(query)
        page = int(query["page"])
        rows = [{**ORDER, "orderId": BIG_ID + page * 10 + i} for i in range(2)]
        if page == 3:
            rows.append({**ORDER, "orderId": BIG_ID + 10})       # shifted onto a later page
        return 200, {}, json.dumps(envelope({"list": rows, "pageTotal": 3, "total": 6}))

    rsps.add_callback(responses.GET, url(PENDING), callback=answer)
    orders = client.perp_pending_orders(symbol="ETHUSD")
    assert [q["page"] for q in seen] == ["1", "2", "3"]
    assert all(q["pageSize"] == "20" and q["symbol"] == "ETHUSD" for q in seen)
    assert [o.order_id for o in orders] == [BIG_ID + p * 10 + i for p in (1, 2, 3) for i in range(2)]
    assert_signed(rsps.calls[0].request)


def test_pending_orders_without_page_total_follow_total_then_short_pages(client, rsps):
    full = [{**ORDER, "orderId": BIG_ID + i} for i in range(20)]
    rsps.add(responses.GET, url(PENDING), json=envelope({"list": full, "total": 21}))
    rsps.add(responses.GET, url(PENDING), json=envelope({"list": [{**ORDER, "orderId": BIG_ID + 20}], "total": 21}))
    assert len(client.perp_pending_orders()) == 21
    assert len(rsps.calls) == 2
    rsps.replace(responses.GET, url(PENDING), json=envelope({"list": full[:3]}))
    assert len(client.perp_pending_orders()) == 3
    assert len(rsps.calls) == 3


def test_pending_orders_that_never_end_are_an_error_not_a_partial_list(client, rsps):
    rsps.add(responses.GET, url(PENDING), json=envelope({"list": [ORDER], "pageTotal": PERP_MAX_PAGES + 5}))
    with pytest.raises(TransportError, match="pages"):
        client.perp_pending_orders()
    assert len(rsps.calls) == PERP_MAX_PAGES


def _cursor_pages(rows_by_cursor):
    """A history route paged by ``fromId``: the page for each cursor (None = the first)."""
    seen = []

    def answer(request):
        query = query_of(request)
        seen.append(query)
        rows, has_next = rows_by_cursor[query.get("fromId")]
        return 200, {}, json.dumps(envelope({"list": rows, "hasNext": has_next, "hasPre": False}))

    return seen, answer


def test_order_history_walks_the_from_id_cursor(client, rsps):
    first = [{**ORDER, "orderId": BIG_ID - i, "state": 3} for i in range(2)]
    second = [{**ORDER, "orderId": BIG_ID - 2, "state": 1}]
    seen, answer = _cursor_pages({None: (first, True), str(BIG_ID - 1): (second, False)})
    rsps.add_callback(responses.GET, url(HISTORY), callback=answer)
    orders = client.perp_order_history(start_ms=1767139200000, end_ms=1767225600000)
    assert [o.order_id for o in orders] == [BIG_ID, BIG_ID - 1, BIG_ID - 2]
    assert seen == [{"pageSize": "50", "startTime": "1767139200000", "endTime": "1767225600000"},
                    {"pageSize": "50", "startTime": "1767139200000", "endTime": "1767225600000",
                     "fromId": str(BIG_ID - 1)}]                 # no "direction" unless configured
    assert_signed(rsps.calls[1].request)


def test_history_direction_is_sent_with_the_cursor_when_configured(clock, rsps):
    seen, answer = _cursor_pages({None: ([FILL], True), "9": ([{**FILL, "id": 8, "tradeId": 5}], False)})
    rsps.add_callback(responses.GET, url(FILLS), callback=answer)
    fills = make_client(clock, perp_history_direction="NEXT").perp_fills()
    assert [f.trade_id for f in fills] == [FILL["tradeId"], 5]
    assert "direction" not in seen[0] and seen[1]["direction"] == "NEXT" and seen[1]["fromId"] == "9"


def test_fills_walk_by_row_id_and_join_orders_by_order_id(client, rsps):
    seen, answer = _cursor_pages({None: ([FILL, {**FILL, "id": 8, "tradeId": 7}], True),
                                  "8": ([{**FILL, "id": 3, "tradeId": 2}], False)})
    rsps.add_callback(responses.GET, url(FILLS), callback=answer)
    fills = client.perp_fills()
    assert [(f.trade_id, f.order_id, f.price, f.is_taker) for f in fills] == [
        (FILL["tradeId"], BIG_ID, 3000.5, False), (7, BIG_ID, 3000.5, False), (2, BIG_ID, 3000.5, False)]
    assert [q.get("fromId") for q in seen] == [None, "8"]


def test_a_history_cursor_that_brings_nothing_new_is_an_error(client, rsps):
    rsps.add(responses.GET, url(HISTORY), json=envelope({"list": [ORDER], "hasNext": True}))
    with pytest.raises(TransportError, match="no new rows"):
        client.perp_order_history()
    assert len(rsps.calls) == 2


def test_an_empty_page_that_claims_more_is_an_error_not_the_end(client, rsps):
    rsps.add(responses.GET, url(HISTORY), json=envelope({"list": [], "hasNext": True}))
    with pytest.raises(TransportError, match="no new rows"):
        client.perp_order_history()


# ---------------------------------------------------------------------------- positions, leverage, funding


def test_positions_are_signed_by_trade_side(client, rsps):
    rsps.add(responses.GET, url(POSITIONS), json=envelope([
        {"id": BIG_ID, "symbol": "BTCUSD", "qty": 0.009, "tradeSide": 1, "avgPrice": 19642.5, "markPrice": 18900.38,
         "initMargin": 35.3565, "maintMargin": 1.767825, "upnl": -6.679, "elp": None, "leverage": 5, "delta": 0.009},
        {"id": BIG_ID + 1, "symbol": "ETHUSD", "qty": 1.5, "tradeSide": 2, "avgPrice": 3000, "markPrice": 2990,
         "upnl": 15, "elp": 4100.5, "leverage": 10, "delta": 1.5}]))
    btc, eth = client.perp_positions()
    assert (btc.position_id, btc.signed_qty, btc.liquidation_price) == (BIG_ID, 0.009, None)
    assert (eth.signed_qty, eth.avg_price, eth.liquidation_price, eth.leverage) == (-1.5, 3000.0, 4100.5, 10.0)
    assert_signed(rsps.calls[0].request)


def test_a_positions_get_that_fails_is_retried_then_raises(client, rsps):
    rsps.add(responses.GET, url(POSITIONS), body=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(TransportError):
        client.perp_positions()
    assert len(rsps.calls) == 4                  # 1 + max_retries


def test_leverage_get_and_set(client, rsps):
    rsps.add(responses.GET, url(LEVERAGE), json=envelope({"userId": 7, "symbol": "ETHUSD", "currentLeverage": 5}))
    rsps.add(responses.POST, url(SET_LEVERAGE), json=envelope(None))
    assert client.perp_leverage("ETHUSD") == 5.0
    assert query_of(rsps.calls[0].request) == {"symbol": "ETHUSD"}
    client.perp_set_leverage("ETHUSD", 3)
    assert body_of(rsps.calls[1].request) == {"symbol": "ETHUSD", "leverage": 3}
    for call in rsps.calls:
        assert_signed(call.request)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError):
            client.perp_set_leverage("ETHUSD", bad)
    assert len(rsps.calls) == 2


def test_leverage_change_blocked_by_open_positions_is_40038_and_not_resent(client, rsps):
    rsps.add(responses.POST, url(SET_LEVERAGE), json=envelope(code=40038, msg="Leverage cannot be changed"))
    with pytest.raises(ExchangeError) as info:
        client.perp_set_leverage("BTCUSD", 10)
    assert (info.value.code, info.value.msg) == (40038, "Leverage cannot be changed")
    assert len(rsps.calls) == 1


def test_a_lost_set_leverage_answer_is_sent_again_because_it_is_idempotent(client, rsps):
    rsps.add(responses.POST, url(SET_LEVERAGE), body=requests.exceptions.ReadTimeout("slow"))
    rsps.add(responses.POST, url(SET_LEVERAGE), json=envelope(None))
    client.perp_set_leverage("BTCUSD", 10)
    assert [body_of(call.request) for call in rsps.calls] == [{"symbol": "BTCUSD", "leverage": 10}] * 2


def test_funding_records_walk_every_page(client, rsps):
    seen = []

    def answer(request):
        query = query_of(request)
        seen.append(query)
        page = int(query["page"])
        rows = [{**RECORD, "id": page * 100 + i, "ctime": RECORD["ctime"] + page} for i in range(2)]
        return 200, {}, json.dumps(envelope({"list": rows, "pageTotal": 2, "total": 4}))

    rsps.add_callback(responses.GET, url(FUNDING_RECORDS), callback=answer)
    payments = client.perp_funding_records("ETHUSD", start_ms=1767139200000)
    assert [p.record_id for p in payments] == [100, 101, 200, 201]
    assert all(p.fee == -0.6 and p.side is Side.BUY for p in payments)
    assert seen == [{"symbol": "ETHUSD", "page": str(page), "pageSize": "50", "startTime": "1767139200000"}
                    for page in (1, 2)]
    assert_signed(rsps.calls[0].request)


def test_latest_funding_records(client, rsps):
    rsps.add(responses.GET, url(LATEST_FUNDING), json=envelope({"list": [RECORD, {**RECORD, "id": 2, "fundFee": 0.2}]}))
    payments = client.perp_latest_funding_records()
    assert [(p.record_id, p.fee) for p in payments] == [(1, -0.6), (2, 0.2)]
    assert query_of(rsps.calls[0].request) == {}
    client.perp_latest_funding_records("ETHUSD", start_ms=1767200000000)
    assert query_of(rsps.calls[1].request) == {"symbol": "ETHUSD", "startTime": "1767200000000"}


def test_bad_history_direction_setting_is_a_config_error():
    with pytest.raises(ConfigError):
        ClientSettings(base_url=BASE, perp_history_direction="older")
