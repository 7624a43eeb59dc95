"""Behaviour of the Coincall HTTP client against canned HTTP answers (``responses``).

Time is a speed-0 SimulatedClock: back-offs and rate-limit waits move simulated time
instantly, so the tests can assert exactly how much time the client waited.
"""
from __future__ import annotations

import json
import logging
import random
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses

import auth
from clock import SimulatedClock
from coincall_client import ClientSettings, CoincallClient, Reachability
from config import Credentials
from errors import (
    AuthError,
    ConfigError,
    EndpointNotFound,
    ExchangeError,
    OrderOutcomeUnknown,
    RateLimitedError,
    StaleDataError,
    TransportError,
)

BASE = "http://127.0.0.1:18080"
START = 1767225600.0          # 2026-01-01 00:00:00 UTC, the ts of API.md 2.5
START_MS = 1767225600000
KEY = "demoKey123"
SECRET = "demoSecret456"
BIG_ID = 1983131927527428096
COID = 101000000042013007
SYMBOL = "BTCUSD-27MAR26-100000-C"
SEED = 7

SUMMARY = "/open/account/summary/v1"
POSITIONS = "/open/option/position/get/v1"
CREATE = "/open/option/order/create/v1"
CANCEL = "/open/option/order/cancel/v1"
QUERY = "/open/option/order/singleQuery/v1"
ACCEPT = "/open/option/blocktrade/request/accept/v1"
RFQ_CANCEL = "/open/option/blocktrade/request/cancel/v1"
FUTURES = "/open/futures/market/symbol/v1"
PENDING = "/open/option/order/pending/v1"


def envelope(data=None, code=0, msg="Success"):
    return {"code": code, "msg": msg, "i18nArgs": None, "data": data}


def url(path):
    return BASE + path


@pytest.fixture
def clock():
    return SimulatedClock(start=START, speed=0)


def make_client(clock, credentials=None, **overrides):
    creds = credentials if credentials is not None else Credentials(KEY, SECRET, "COINCALL_API_KEY_TEST")
    return CoincallClient(ClientSettings(base_url=BASE, **overrides), creds, clock, rng=random.Random(SEED))


@pytest.fixture
def client(clock):
    c = make_client(clock)
    yield c
    c.close()


def backoff_delays(n, seed=SEED, base=1.0, jitter=0.25):
    rng = random.Random(seed)
    return [base * 2**i * (1 + rng.uniform(-jitter, jitter)) for i in range(n)]


def sent_params(request):
    """The parameters the server would parse from a captured request."""
    if request.method == "GET":
        return dict(parse_qsl(urlsplit(request.url).query))
    body = request.body.decode() if isinstance(request.body, bytes) else request.body
    if request.headers["Content-Type"] == "application/json":
        return json.loads(body)
    return dict(parse_qsl(body))


def assert_signature_valid(request, secret=SECRET):
    """Recompute the signature the way the exchange does, from what was actually sent."""
    h = request.headers
    prehash = auth.build_prehash(
        request.method, urlsplit(request.url).path, sent_params(request), h["X-CC-APIKEY"], h["ts"], h["X-REQ-TS-DIFF"]
    )
    assert h["sign"] == auth.sign(secret, prehash)


FAILURES = {
    "http503": dict(status=503, body="Service Unavailable"),
    "timeout": dict(body=requests.exceptions.ReadTimeout("read timed out")),
    "connection": dict(body=requests.exceptions.ConnectionError("connection refused")),
    "code10000": dict(json=envelope(code=10000, msg="Try again later")),
    "code10605": dict(json=envelope(code=10605, msg="Operation too frequent")),
    "code500": dict(json=envelope(code=500, msg="Internal server error")),
    "http429": dict(status=429, body="Too Many Requests"),
    "not_json": dict(status=200, body="<html>gateway</html>"),
}


# ---------------------------------------------------------------------------- envelope


def test_success_returns_envelope_data(client, rsps):
    rsps.add(responses.GET, url(SUMMARY), json=envelope({"equity": "1000.5", "availableMargin": "900"}))
    assert client.account_summary() == {"equity": "1000.5", "availableMargin": "900"}
    request = rsps.calls[0].request
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "CoincallTrader"
    assert rsps.calls[0].request.req_kwargs["timeout"] == (5.0, 30.0)


def test_error_code_raises_exchange_error_with_code_msg_endpoint(client, rsps):
    rsps.add(responses.GET, url(f"/open/option/detail/v1/{SYMBOL}"),
             json=envelope(code=10574, msg="Instrument ID does not exist"))
    with pytest.raises(ExchangeError) as info:
        client.option_detail(SYMBOL)
    exc = info.value
    assert type(exc) is ExchangeError
    assert (exc.code, exc.msg, exc.endpoint) == (10574, "Instrument ID does not exist",
                                                 f"GET /open/option/detail/v1/{SYMBOL}")
    assert len(rsps.calls) == 1


def test_negative_legacy_code_is_an_exchange_error(client, rsps):
    rsps.add(responses.GET, url(SUMMARY), json={"code": -40004, "msg": "Invalid symbol."})
    with pytest.raises(ExchangeError) as info:
        client.account_summary()
    assert info.value.code == -40004


def test_endpoint_in_errors_has_no_query_values(client, rsps):
    rsps.add(responses.GET, url(QUERY), json=envelope(code=10584, msg="Order does not exist"))
    with pytest.raises(ExchangeError) as info:
        client.query_order(order_id=BIG_ID)
    assert info.value.endpoint == f"GET {QUERY}"
    assert str(BIG_ID) not in str(info.value)


@pytest.mark.parametrize("code", [4002, 4003, 10006, 10556, 10562])
def test_auth_codes_raise_auth_error_without_retry(client, rsps, code):
    rsps.add(responses.GET, url(SUMMARY), json=envelope(code=code, msg="auth"))
    with pytest.raises(AuthError) as info:
        client.account_summary()
    assert info.value.code == code
    assert len(rsps.calls) == 1


def test_http_404_raises_endpoint_not_found_and_proves_reachability(clock, rsps):
    client = make_client(clock, max_retries=0)
    rsps.add(responses.GET, url(POSITIONS), status=503)
    rsps.add(responses.GET, url(POSITIONS), status=503)
    with pytest.raises(TransportError):
        client.positions()
    with pytest.raises(TransportError):
        client.positions()
    assert client.reachability.consecutive_failures == 2
    rsps.add(responses.GET, url("/open/option/blocktrade/rfqList/v1"), status=404)
    with pytest.raises(EndpointNotFound) as info:
        client.get("/open/option/blocktrade/rfqList/v1")
    assert info.value.endpoint == "GET /open/option/blocktrade/rfqList/v1"
    assert client.reachability.consecutive_failures == 0
    assert rsps.calls[-1].request.url.endswith("/rfqList/v1")


def test_http_5xx_is_transport_error_with_status(clock, rsps):
    client = make_client(clock, max_retries=0)
    rsps.add(responses.GET, url(SUMMARY), status=502, body="bad gateway")
    with pytest.raises(TransportError) as info:
        client.account_summary()
    assert info.value.status == 502


# ---------------------------------------------------------------------------- GET retries


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_get_is_retried_with_backoff_and_fresh_signature(client, clock, rsps, kind):
    rsps.add(responses.GET, url(POSITIONS), **FAILURES[kind])
    rsps.add(responses.GET, url(POSITIONS), **FAILURES[kind])
    rsps.add(responses.GET, url(POSITIONS), json=envelope([{"symbol": SYMBOL, "qty": 0.5}]))

    assert client.positions() == [{"symbol": SYMBOL, "qty": 0.5}]

    assert len(rsps.calls) == 3
    delays = backoff_delays(2)
    assert clock.now() - START == pytest.approx(sum(delays))
    assert 0.75 * 3 <= clock.now() - START <= 1.25 * 3
    stamps = [int(c.request.headers["ts"]) for c in rsps.calls]
    signs = [c.request.headers["sign"] for c in rsps.calls]
    assert len(set(stamps)) == 3 and len(set(signs)) == 3
    assert stamps[0] == START_MS
    assert stamps[1] - stamps[0] == pytest.approx(delays[0] * 1000, abs=2)
    assert stamps[2] - stamps[1] == pytest.approx(delays[1] * 1000, abs=2)
    for call in rsps.calls:
        assert_signature_valid(call.request)


def test_get_retries_exhausted_raises_last_error_after_1_2_4_seconds(client, clock, rsps, caplog):
    rsps.add(responses.GET, url(POSITIONS), status=503)
    with caplog.at_level(logging.WARNING, logger="coincall_client"):
        with pytest.raises(TransportError) as info:
            client.positions()
    assert info.value.status == 503
    assert len(rsps.calls) == 4
    assert clock.now() - START == pytest.approx(sum(backoff_delays(3)))
    assert 0.75 * 7 <= clock.now() - START <= 1.25 * 7
    assert "giving up" in caplog.text


def test_rate_limited_get_exhausted_raises_rate_limited_error(client, rsps):
    rsps.add(responses.GET, url(POSITIONS), status=429)
    with pytest.raises(RateLimitedError) as info:
        client.positions()
    assert info.value.code == 429
    assert len(rsps.calls) == 4


@pytest.mark.parametrize("code", [10004, 10001, 10584, 11101])
def test_definitive_errors_are_not_retried(client, clock, rsps, code):
    rsps.add(responses.GET, url(QUERY), json=envelope(code=code, msg="no"))
    with pytest.raises(ExchangeError):
        client.query_order(client_order_id=COID)
    assert len(rsps.calls) == 1
    assert clock.now() == START


# ---------------------------------------------------------------------------- POST: never re-sent


def _create(client):
    return client.create_order(SYMBOL, 0.1, 1, 1250.5, COID)


@pytest.mark.parametrize("kind", ["timeout", "connection", "http503", "not_json"])
def test_create_order_is_never_resent_on_transport_failure(client, clock, rsps, kind):
    rsps.add(responses.POST, url(CREATE), **FAILURES[kind])
    with pytest.raises(OrderOutcomeUnknown) as info:
        _create(client)
    assert len(rsps.calls) == 1
    assert info.value.client_order_id == COID
    assert info.value.endpoint == f"POST {CREATE}"
    assert clock.now() == START


def test_create_order_code_10000_is_rate_limited_with_unknown_outcome(client, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope(code=10000, msg="Try again later"))
    with pytest.raises(RateLimitedError) as info:
        _create(client)
    assert info.value.outcome_unknown is True
    assert len(rsps.calls) == 1


def test_create_order_http_429_is_rate_limited_and_not_resent(client, rsps):
    rsps.add(responses.POST, url(CREATE), status=429)
    with pytest.raises(RateLimitedError) as info:
        _create(client)
    assert info.value.code == 429
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("code", [10529, 10558, 10577, 500])
def test_create_order_exchange_errors_are_raised_once(client, rsps, code):
    rsps.add(responses.POST, url(CREATE), json=envelope(code=code, msg="rejected"))
    with pytest.raises(ExchangeError) as info:
        _create(client)
    assert info.value.code == code
    assert len(rsps.calls) == 1


def test_cancel_is_never_resent(client, rsps):
    rsps.add(responses.POST, url(CANCEL), body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(OrderOutcomeUnknown) as info:
        client.cancel_order(client_order_id=COID)
    assert len(rsps.calls) == 1
    assert info.value.client_order_id == COID


def test_create_order_body_signed_and_typed(client, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope(BIG_ID))
    order_id = client.create_order(SYMBOL, 0.1, "SELL", 1250.0, str(COID), reduce_only=True, time_in_force="IOC")
    assert order_id == BIG_ID
    request = rsps.calls[0].request
    assert request.headers["Content-Type"] == "application/json"
    raw = request.body.decode()
    assert " " not in raw
    assert json.loads(raw) == {
        "symbol": SYMBOL, "qty": 0.1, "tradeSide": 2, "tradeType": 1, "price": 1250.0,
        "timeInForce": "IOC", "clientOrderId": COID, "reduceOnly": 1,
    }
    assert f'"clientOrderId":{COID}' in raw
    assert_signature_valid(request)


@pytest.mark.parametrize("qty", [1e-05, float("nan"), 0.0, -0.1])
def test_create_order_refuses_unsendable_numbers_before_sending(client, rsps, qty):
    with pytest.raises(ValueError):
        client.create_order(SYMBOL, qty, 1, 100.0, COID)
    assert len(rsps.calls) == 0


def test_booleans_and_float_ids_are_refused(client, rsps):
    with pytest.raises(ValueError):
        client.post(CREATE, {"symbol": SYMBOL, "mmp": True})
    with pytest.raises(ValueError):
        client.cancel_order(order_id=1.9e18)
    with pytest.raises(ValueError):
        client.cancel_order()
    assert len(rsps.calls) == 0


def test_create_order_code_0_without_order_id_is_unknown_outcome(client, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope(None))
    with pytest.raises(OrderOutcomeUnknown) as info:
        _create(client)
    assert info.value.client_order_id == COID


# ---------------------------------------------------------------------------- RFQ encoding


def test_rfq_accept_switches_from_form_to_json_on_10004_and_remembers(client, rsps):
    accepted = {"blockTradeId": "2004417790113628161", "requestId": "2004417712093184000", "legs": []}
    rsps.add(responses.POST, url(ACCEPT), json=envelope(code=10004, msg="Parameter illegal"))
    rsps.add(responses.POST, url(ACCEPT), json=envelope(accepted))

    assert client.rfq_accept("2004417712093184000", 2004417790113628161) == accepted

    first, second = (c.request for c in rsps.calls)
    assert first.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert first.body.decode() == "requestId=2004417712093184000&quoteId=2004417790113628161"
    assert second.headers["Content-Type"] == "application/json"
    assert json.loads(second.body) == {"requestId": "2004417712093184000", "quoteId": "2004417790113628161"}
    # Signing is identical for both encodings (API.md 10.3): same params, same prehash.
    for request in (first, second):
        assert_signature_valid(request)
    assert client.rfq_body_encoding == "json"

    rsps.add(responses.POST, url(RFQ_CANCEL), json=envelope(True))
    assert client.rfq_cancel("2004417712093184000") is True
    assert rsps.calls[-1].request.headers["Content-Type"] == "application/json"
    assert len(rsps.calls) == 3


def test_rfq_accept_second_10004_raises_and_keeps_encoding(client, rsps):
    rsps.add(responses.POST, url(ACCEPT), json=envelope(code=10004, msg="Parameter illegal"))
    with pytest.raises(ExchangeError) as info:
        client.rfq_accept("1", "2")
    assert info.value.code == 10004
    assert len(rsps.calls) == 2
    assert client.rfq_body_encoding == "form"


def test_rfq_accept_form_success_does_not_switch(client, rsps):
    rsps.add(responses.POST, url(ACCEPT), json=envelope({"requestId": "1"}))
    client.rfq_accept("1", "2")
    assert len(rsps.calls) == 1
    assert client.rfq_body_encoding == "form"


@pytest.mark.parametrize("failure", [dict(body=requests.exceptions.ReadTimeout("slow")),
                                     dict(json=envelope(code=50014, msg="quote not valid"))])
def test_rfq_accept_other_failures_are_never_resent(client, rsps, failure):
    rsps.add(responses.POST, url(ACCEPT), **failure)
    with pytest.raises((OrderOutcomeUnknown, ExchangeError)):
        client.rfq_accept("1", "2")
    assert len(rsps.calls) == 1


def test_rfq_create_sends_string_qty_and_drops_nested_nulls(client, rsps):
    rsps.add(responses.POST, url("/open/option/blocktrade/request/create/v1"),
             json=envelope({"requestId": "2004417712093184000", "state": "ACTIVE"}))
    data = client.rfq_create([
        {"instrumentName": SYMBOL, "side": "BUY", "qty": 0.5, "note": None},
        {"instrumentName": "BTCUSD-27MAR26-80000-P", "side": "BUY", "qty": "0.5"},
    ])
    assert data["requestId"] == "2004417712093184000"
    request = rsps.calls[0].request
    assert "null" not in request.body.decode()
    assert json.loads(request.body) == {"legs": [
        {"instrumentName": SYMBOL, "side": "BUY", "qty": "0.5"},
        {"instrumentName": "BTCUSD-27MAR26-80000-P", "side": "BUY", "qty": "0.5"},
    ]}
    assert_signature_valid(request)


# ---------------------------------------------------------------------------- rate budgets


def _record_times(rsps, method, path, clock, data=None):
    times = []

    def answer(request):
        times.append(clock.now() - START)
        return 200, {}, json.dumps(envelope(data))

    rsps.add_callback(method, url(path), callback=answer)
    return times


def test_third_account_summary_within_a_second_waits_on_the_clock(client, clock, rsps):
    times = _record_times(rsps, responses.GET, SUMMARY, clock, {})
    for _ in range(3):
        client.account_summary()
    assert times == pytest.approx([0.0, 0.0, 1.0])


def test_place_and_cancel_share_the_order_action_budget(client, clock, rsps):
    create_times = _record_times(rsps, responses.POST, CREATE, clock, BIG_ID)
    cancel_times = _record_times(rsps, responses.POST, CANCEL, clock, "success")
    for i in range(10):
        client.create_order(SYMBOL, 0.1, 1, 100.0, COID + i)
    for _ in range(6):
        client.cancel_order(order_id=BIG_ID)
    assert create_times == [0.0] * 10
    assert cancel_times[:5] == [0.0] * 5
    assert cancel_times[5] == pytest.approx(1.0)


def test_unbudgeted_endpoints_never_wait(client, clock, rsps):
    rsps.add(responses.GET, url("/open/option/getInstruments/BTC"), json=envelope([]))
    for _ in range(40):
        client.instruments("BTC")
    assert clock.now() == START


# ---------------------------------------------------------------------------- ids, nulls, signing


def test_big_ids_round_trip_exactly(client, rsps):
    raw = ('{"code":0,"msg":"Success","i18nArgs":null,"data":{"orderId":1983131927527428096,'
           '"clientOrderId":101000000042013007,"tradeId":1983131927527428097,"state":1,"fillQty":0.1}}')
    rsps.add(responses.GET, url(QUERY), body=raw, content_type="application/json")
    rsps.add(responses.POST, url(CANCEL), json=envelope("success"))

    order = client.query_order(order_id=str(BIG_ID))
    assert order["orderId"] == BIG_ID and type(order["orderId"]) is int
    assert order["clientOrderId"] == COID
    assert order["tradeId"] == BIG_ID + 1
    assert int(float(BIG_ID + 1)) != BIG_ID + 1  # a float parse would have lost it

    assert dict(parse_qsl(urlsplit(rsps.calls[0].request.url).query)) == {"orderId": str(BIG_ID)}
    assert client.cancel_order(order_id=str(BIG_ID)) is None
    assert rsps.calls[1].request.body.decode() == '{"orderId":1983131927527428096}'


def test_null_params_are_dropped_and_signature_matches_what_was_sent(client, rsps):
    rsps.add(responses.GET, url("/open/option/order/history/v1"), json=envelope({"list": []}))
    rsps.add(responses.POST, url(CREATE), json=envelope(BIG_ID))
    client.order_history(startTime=None, endTime=1767225600000, fromId=None)
    client.post(CREATE, {"symbol": SYMBOL, "qty": 0.1, "price": 100.0, "stp": None, "clientOrderId": COID})

    get_request, post_request = (c.request for c in rsps.calls)
    assert dict(parse_qsl(urlsplit(get_request.url).query)) == {"pageSize": "100", "endTime": "1767225600000"}
    assert "null" not in post_request.body.decode() and "stp" not in post_request.body.decode()
    for request in (get_request, post_request):
        assert_signature_valid(request)


def test_get_query_signature_equals_api_md_vector_b(client, rsps):
    rsps.add(responses.GET, url(QUERY), json=envelope({"orderId": BIG_ID}))
    client.query_order(order_id=BIG_ID)
    headers = rsps.calls[0].request.headers
    assert headers["ts"] == "1767225600000"
    assert headers["X-REQ-TS-DIFF"] == "5000"
    assert headers["X-CC-APIKEY"] == KEY
    assert headers["sign"] == "3745BF68920A2DFAB8A999B8E84008BEE19FAD55DB930555940B863126B7E107"


def test_get_without_params_equals_api_md_vector_c(client, rsps):
    rsps.add(responses.GET, url(SUMMARY), json=envelope({}))
    client.account_summary()
    request = rsps.calls[0].request
    assert request.url == url(SUMMARY)
    assert request.headers["sign"] == "330E90CE640DDAF5BCDF1A66B8BFD0DD8A9913B1D58014648B78893B1E59E713"


def test_market_data_is_unsigned_and_works_without_credentials(clock, rsps):
    client = CoincallClient(ClientSettings(base_url=BASE), None, clock)
    rsps.add(responses.GET, url(f"/open/option/order/orderbook/v1/{SYMBOL}"),
             json=envelope({"bids": [{"price": "10", "size": "1"}], "asks": []}))
    assert client.orderbook(SYMBOL)["bids"][0]["price"] == "10"
    headers = rsps.calls[0].request.headers
    assert "sign" not in headers and "X-CC-APIKEY" not in headers
    with pytest.raises(ConfigError):
        client.account_summary()
    assert len(rsps.calls) == 1


def test_option_chain_sends_end_time_only_when_given(client, rsps):
    rsps.add(responses.GET, url("/open/option/get/v1/BTCUSD"), json=envelope([]))
    client.option_chain()
    client.option_chain(end_time_ms=1773302400000)
    assert urlsplit(rsps.calls[0].request.url).query == ""
    assert urlsplit(rsps.calls[1].request.url).query == "endTime=1773302400000"


def test_path_segments_must_be_plain_tokens(client, rsps):
    with pytest.raises(ValueError):
        client.option_detail("BTCUSD/../x")
    assert len(rsps.calls) == 0


# ---------------------------------------------------------------------------- reachability, session


def test_reachability_down_after_three_failures_and_up_after_success(clock, rsps):
    client = make_client(clock, max_retries=0)
    events = []
    client.reachability.add_listener(lambda event: events.append((event.kind, event.detail)))
    rsps.add(responses.GET, url(POSITIONS), body=requests.exceptions.ConnectTimeout("no route"))
    for expected_up in (True, True, False):
        with pytest.raises(TransportError):
            client.positions()
        assert client.reachability.is_up is expected_up
    assert client.reachability.consecutive_failures == 3
    assert client.reachability.down_since == START
    assert [e for e, _ in events] == ["DOWN"]

    clock.advance(40)
    rsps.replace(responses.GET, url(POSITIONS), json=envelope([]))
    client.positions()
    assert client.reachability.is_up
    assert client.reachability.consecutive_failures == 0
    assert client.reachability.last_success == START + 40
    assert [e for e, _ in events] == ["DOWN", "UP"]
    assert "recovered after 40 s" in events[1][1]


def test_definitive_errors_prove_reachability_but_throttling_does_not(clock, rsps):
    client = make_client(clock, max_retries=0)
    rsps.add(responses.GET, url(POSITIONS), json=envelope(code=10605, msg="too frequent"))
    rsps.add(responses.GET, url(POSITIONS), json=envelope(code=10000, msg="later"))
    rsps.add(responses.GET, url(POSITIONS), json=envelope(code=10004, msg="bad"))
    for _ in range(2):
        with pytest.raises(RateLimitedError):
            client.positions()
    assert client.reachability.consecutive_failures == 2
    with pytest.raises(ExchangeError):
        client.positions()
    assert client.reachability.consecutive_failures == 0


def test_broken_listener_does_not_break_requests(clock, rsps):
    client = make_client(clock, max_retries=0, down_after_failures=1)

    def broken(event):
        raise RuntimeError("sink down")

    client.reachability.add_listener(broken)
    rsps.add(responses.GET, url(POSITIONS), status=500)
    with pytest.raises(TransportError):
        client.positions()
    assert not client.reachability.is_up


def test_session_is_rebuilt_after_five_consecutive_failures(clock, rsps):
    sessions = []

    def factory():
        sessions.append(requests.Session())
        return sessions[-1]

    client = CoincallClient(ClientSettings(base_url=BASE, max_retries=3), Credentials(KEY, SECRET), clock,
                            rng=random.Random(SEED), session_factory=factory)
    rsps.add(responses.GET, url(POSITIONS), status=503)
    with pytest.raises(TransportError):
        client.positions()          # 4 failed attempts
    assert len(sessions) == 1
    with pytest.raises(TransportError):
        client.positions()          # the 5th failure rebuilds, then 3 more
    assert len(sessions) == 2
    assert client._current_session() is sessions[1]


def test_reachability_standalone_transitions():
    reach = Reachability(down_after_failures=2)
    events = []
    reach.add_listener(lambda e: events.append(e.kind))
    reach.record_failure(100.0, "x")
    reach.record_success(101.0)
    reach.record_failure(102.0)
    reach.record_failure(103.0)
    reach.record_failure(104.0)
    reach.record_success(110.0)
    assert events == ["DOWN", "UP"]


# ---------------------------------------------------------------------------- index price, paging


@pytest.mark.parametrize("data", [
    [{"symbol": "ETHUSD", "indexPrice": 3000.0}, {"symbol": "BTCUSD", "indexPrice": 88012.5, "markPrice": 1.0}],
    {"symbol": "BTCUSD", "indexPrice": "88012.5", "markPrice": "88000"},
])
def test_index_price_accepts_list_and_object(client, rsps, data):
    rsps.add(responses.GET, url(FUTURES), json=envelope(data))
    assert client.index_price() == 88012.5
    assert urlsplit(rsps.calls[0].request.url).query == "symbol=BTCUSD"


@pytest.mark.parametrize("data", [
    {"symbol": "BTCUSD", "markPrice": 88000.0},
    {"symbol": "BTCUSD", "indexPrice": 0},
    {"symbol": "BTCUSD", "indexPrice": "-1"},
    {"symbol": "BTCUSD", "indexPrice": "abc"},
    [{"symbol": "ETHUSD", "indexPrice": 3000.0}],
    None,
])
def test_index_price_missing_or_nonpositive_raises_without_fallback(client, rsps, data):
    rsps.add(responses.GET, url(FUTURES), json=envelope(data))
    with pytest.raises(StaleDataError):
        client.index_price()


def test_all_pending_orders_follows_page_total(client, clock, rsps):
    seen = []

    def answer(request):
        query = dict(parse_qsl(urlsplit(request.url).query))
        seen.append(query)
        page = int(query["page"])
        items = [{"orderId": BIG_ID + page * 10 + i} for i in range(2)]
        return 200, {}, json.dumps(envelope({"list": items, "pageTotal": 3, "total": 6}))

    rsps.add_callback(responses.GET, url(PENDING), callback=answer)
    orders = client.all_pending_orders()
    assert [q["page"] for q in seen] == ["1", "2", "3"]
    assert all(q["pageSize"] == "500" for q in seen)
    assert [o["orderId"] for o in orders] == [BIG_ID + p * 10 + i for p in (1, 2, 3) for i in range(2)]


@pytest.mark.parametrize("shape, pages", [
    ({"total": 1200}, 3),                 # no pageTotal: total says 3 pages of 500
    ({}, 3),                              # neither: full pages go on, the short third ends it
    ({"pageTotal": None, "total": "x"}, 3),
])
def test_all_pending_orders_without_page_total_reads_on_not_one_page(client, clock, rsps, shape, pages):
    """A missing pageTotal used to end the walk after page 1: a partial list taken for the whole."""
    seen = []

    def answer(request):
        page = int(dict(parse_qsl(urlsplit(request.url).query))["page"])
        seen.append(page)
        size = 500 if page < 3 else 200
        items = [{"orderId": BIG_ID + page * 1000 + i} for i in range(size)]
        return 200, {}, json.dumps(envelope({"list": items, **shape}))

    rsps.add_callback(responses.GET, url(PENDING), callback=answer)
    orders = client.all_pending_orders()
    assert seen == list(range(1, pages + 1)) and len(orders) == 1200


# ---------------------------------------------------------------------------- secrets


LONG_KEY = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdef=="
LONG_SECRET = "TopSecret-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def test_credentials_repr_masks_key_and_hides_secret():
    creds = Credentials(LONG_KEY, LONG_SECRET, "COINCALL_API_KEY_PROD")
    for text in (repr(creds), str(creds), f"{creds}"):
        assert LONG_SECRET not in text
        assert LONG_KEY not in text
        assert "AbCd…(44 chars)" in text
        assert "COINCALL_API_KEY_PROD" in text


def test_empty_credentials_name_the_source_not_the_value():
    with pytest.raises(ConfigError) as info:
        Credentials("", LONG_SECRET, "COINCALL_API_KEY_PROD")
    assert "COINCALL_API_KEY_PROD" in str(info.value)
    assert LONG_SECRET not in str(info.value)


def test_client_repr_and_logs_never_contain_secrets(clock, rsps, caplog):
    client = make_client(clock, credentials=Credentials(LONG_KEY, LONG_SECRET, "COINCALL_API_KEY_PROD"))
    assert LONG_SECRET not in repr(client) and LONG_KEY not in repr(client)
    rsps.add(responses.GET, url(SUMMARY), body=requests.exceptions.ConnectionError("refused"))
    rsps.add(responses.GET, url(POSITIONS), json=envelope(code=4003, msg="Token auth fail"))
    rsps.add(responses.POST, url(CREATE), status=503)
    raised = []
    with caplog.at_level(logging.DEBUG):
        for action in (client.account_summary, client.positions, lambda: _create(client)):
            with pytest.raises(Exception) as info:
                action()
            raised.append(info.value)
    assert caplog.records, "expected debug/warning records"
    assert any("attempt" in r.getMessage() for r in caplog.records)
    for text in [caplog.text] + [repr(e) + str(e) for e in raised]:
        assert LONG_SECRET not in text
        assert LONG_KEY not in text


# ---------------------------------------------------------------------------- time sync


def test_time_sync_offset_is_applied_to_ts(client, clock, rsps, caplog):
    rsps.add(responses.GET, url("/time"), json=envelope({"serverTime": START_MS + 2000}))
    rsps.add(responses.GET, url(SUMMARY), json=envelope({}))
    with caplog.at_level(logging.WARNING, logger="coincall_client"):
        assert client.sync_time() == pytest.approx(2.0)
    assert "offset" in caplog.text
    assert client.time_offset_seconds == pytest.approx(2.0)
    assert "sign" not in rsps.calls[0].request.headers
    client.account_summary()
    assert rsps.calls[1].request.headers["ts"] == str(START_MS + 2000)
    assert_signature_valid(rsps.calls[1].request)


def test_small_time_offset_is_not_applied(client, rsps):
    rsps.add(responses.GET, url("/time"), json=envelope({"serverTime": START_MS + 300}))
    rsps.add(responses.GET, url(SUMMARY), json=envelope({}))
    assert client.sync_time() == pytest.approx(0.3)
    client.account_summary()
    assert rsps.calls[1].request.headers["ts"] == str(START_MS)


def test_sync_time_if_due_respects_the_interval(client, clock, rsps):
    rsps.add(responses.GET, url("/time"), json=envelope({"serverTime": START_MS}))
    assert client.sync_time_if_due() == pytest.approx(0.0)
    assert client.sync_time_if_due() is None
    clock.advance(600)
    rsps.replace(responses.GET, url("/time"), json=envelope({"serverTime": START_MS + 600_000}))
    assert client.sync_time_if_due() == pytest.approx(0.0)
    assert len(rsps.calls) == 2


def test_code_10557_on_get_resyncs_and_retries_once_immediately(client, clock, rsps):
    rsps.add(responses.GET, url(SUMMARY), json=envelope(code=10557, msg="Timestamp request expired"))
    rsps.add(responses.GET, url(SUMMARY), json=envelope({"equity": "1"}))
    rsps.add(responses.GET, url("/time"), json=envelope({"serverTime": START_MS + 7000}))
    assert client.account_summary() == {"equity": "1"}
    paths = [urlsplit(c.request.url).path for c in rsps.calls]
    assert paths == [SUMMARY, "/time", SUMMARY]
    assert clock.now() == START
    assert rsps.calls[2].request.headers["ts"] == str(START_MS + 7000)


def test_code_10557_on_post_resyncs_but_is_not_resent(client, rsps):
    rsps.add(responses.POST, url(CREATE), json=envelope(code=10557, msg="Timestamp request expired"))
    rsps.add(responses.GET, url("/time"), json=envelope({"serverTime": START_MS + 7000}))
    with pytest.raises(ExchangeError) as info:
        _create(client)
    assert info.value.code == 10557
    assert [urlsplit(c.request.url).path for c in rsps.calls] == [CREATE, "/time"]
    assert client.time_offset_seconds == pytest.approx(7.0)


def test_a_stale_timestamp_code_from_the_override_file_also_resyncs(clock, rsps):
    # doctor --orders found the exchange answering 10558 to a stale ts: the override names it.
    client = make_client(clock, timestamp_code=10558)
    rsps.add(responses.GET, url(SUMMARY), json=envelope(code=10558, msg="ts out of window"))
    rsps.add(responses.GET, url(SUMMARY), json=envelope({"equity": "1"}))
    rsps.add(responses.GET, url("/time"), json=envelope({"serverTime": START_MS + 7000}))
    assert client.account_summary() == {"equity": "1"}
    assert [urlsplit(c.request.url).path for c in rsps.calls] == [SUMMARY, "/time", SUMMARY]
    # Without the override the same code is an ordinary refusal: no resync, no second try.
    plain = make_client(clock)
    rsps.replace(responses.GET, url(SUMMARY), json=envelope(code=10558, msg="ts out of window"))
    calls_before = len(rsps.calls)
    with pytest.raises(ExchangeError):
        plain.account_summary()
    assert [urlsplit(c.request.url).path for c in rsps.calls[calls_before:]] == [SUMMARY]


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize("overrides", [
    {"base_url": "api.coincall.com"},
    {"rfq_body_encoding": "xml"},
    {"max_retries": -1},
    {"backoff_jitter": 1.5},
    {"order_actions_per_second": 0},
])
def test_bad_settings_raise_config_error(overrides):
    values = {"base_url": BASE, **overrides}
    with pytest.raises(ConfigError):
        ClientSettings(**values)
