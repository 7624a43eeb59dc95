"""The in-process transport (simulator/inprocess.py) answers exactly as the wire does.

A backtest reaches the embedded simulator without a socket, for speed; that is only
honest if nothing above the transport can tell. So: the same backtest over both gives
byte-identical results; the same signed request gives the same status, headers and body
bytes; a bad signature and injected faults end the same way; the in-process session
prepares the request exactly as ``requests.Session`` would.
"""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

import pytest
import requests

import auth
from backtest import SUMMARY_FILE, TRADES_FILE, BacktestPeriod, parse_instant, run_backtest
from clock import SimulatedClock, wall_seconds
from coincall_client import ClientSettings, CoincallClient
from config import Credentials, Settings, load_settings
from errors import AuthError, ConfigError, OrderOutcomeUnknown, TransportError
from exchange_connection import open_exchange
from main import STRATEGIES
from simulator import FaultRule, SimulatorConfig, SimulatorHandle, start_simulator
from simulator.inprocess import inprocess_session_factory, mount_inprocess
from simulator.routes import ROUTES, find_route
from stop_flag import StopFlag
from strategy_factories import build_strategy_configs
from tests.conftest import SIM_START

KEY = "INPROCESSKEYabcdefghijklmnopqrstuvw=="
SECRET = "inprocess-secret-0123456789"
TIME = "/time"
CREATE = "/open/option/order/create/v1"
SUMMARY = "/open/account/summary/v1"
RFQ_ACCEPT = "/open/option/blocktrade/request/accept/v1"


# --- two simulators, one per transport, in the same state ------------------------------------
@pytest.fixture
def twins():
    """A listening and a non-listening simulator: same seed, same key pair, each on its own frozen clock."""
    started: list[SimulatorHandle] = []

    def build(listen: bool) -> SimulatorHandle:
        handle = start_simulator(SimulatorConfig(seed=7, api_key=KEY, api_secret=SECRET),
                                 clock=SimulatedClock(start=SIM_START, speed=0), listen=listen)
        started.append(handle)
        return handle

    yield build(True), build(False)
    for handle in started:
        handle.stop()


def in_process_session(handle: SimulatorHandle) -> requests.Session:
    return mount_inprocess(requests.Session(), handle)


def signed(method: str, path: str, params: dict[str, Any], ts: int, *, secret: str = SECRET) -> dict[str, str]:
    return auth.signed_headers(method, path, params, KEY, secret, ts)


def send(session: requests.Session, base: str, method: str, path: str, params: dict[str, Any], ts: int,
         *, secret: str = SECRET, timeout: float = 5.0) -> requests.Response:
    """One signed request as a client sends it: GET with a query, POST with a JSON body."""
    headers = {"Content-Type": "application/json", **signed(method, path, params, ts, secret=secret)}
    if method == "GET":
        query = ("?" + urlencode(params)) if params else ""
        return session.request("GET", base + path + query, headers=headers, timeout=timeout)
    body = json.dumps(params, separators=(",", ":")).encode("utf-8")
    return session.request(method, base + path, data=body, headers=headers, timeout=timeout)


def answer(response: requests.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, sorted(response.headers.items()), response.content


def a_resting_bid(handle: SimulatorHandle, session: requests.Session, client_order_id: int) -> dict[str, Any]:
    """Create-order params for a small BUY ten ticks under the best bid of a mid-strike call."""
    instruments = session.get(handle.base_url + "/open/option/getInstruments/BTC", timeout=5).json()["data"]
    expiry = sorted({i["expirationTimestamp"] for i in instruments})[1]
    calls = sorted((i for i in instruments if i["expirationTimestamp"] == expiry and i["symbolName"].endswith("-C")),
                   key=lambda i: i["strike"])
    middle = len(calls) // 2
    for inst in calls[middle:] + calls[:middle]:
        book = session.get(f"{handle.base_url}/open/option/order/orderbook/v1/{inst['symbolName']}",
                           timeout=5).json()["data"]
        if book["bids"]:
            tick = float(inst["tickSize"])
            return {"symbol": inst["symbolName"], "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                    "price": max(tick, float(book["bids"][0]["price"]) - 10 * tick),
                    "clientOrderId": client_order_id}
    raise AssertionError("no call with a bid")


# --- (b) the same signed request, the same answer -------------------------------------------------
def test_the_server_time_is_answered_with_the_same_status_headers_and_bytes(twins):
    wire, inproc = twins
    ts = wire.clock.now_ms()
    with requests.Session() as over_wire, in_process_session(inproc) as in_process:
        by_wire = send(over_wire, wire.base_url, "GET", TIME, {}, ts)
        by_call = send(in_process, inproc.base_url, "GET", TIME, {}, ts)
    assert by_wire.status_code == 200 and by_wire.json()["data"]["serverTime"] == ts
    assert answer(by_call) == answer(by_wire)
    assert by_call.reason == by_wire.reason == "OK"
    assert by_call.encoding == by_wire.encoding


def test_a_signed_order_is_answered_with_the_same_bytes_and_leaves_the_same_request_log(twins):
    wire, inproc = twins
    with requests.Session() as over_wire, in_process_session(inproc) as in_process:
        params = a_resting_bid(wire, over_wire, 4242)
        assert a_resting_bid(inproc, in_process, 4242) == params
        ts = wire.clock.now_ms()
        by_wire = send(over_wire, wire.base_url, "POST", CREATE, params, ts)
        by_call = send(in_process, inproc.base_url, "POST", CREATE, params, ts)
        assert by_wire.json()["code"] == 0 and by_wire.json()["data"]
        assert answer(by_call) == answer(by_wire)
        for handle in twins:
            handle.clock.advance(1.0)
        ts = wire.clock.now_ms()
        query = {"clientOrderId": 4242}
        assert answer(send(in_process, inproc.base_url, "GET", "/open/option/order/singleQuery/v1", query, ts)) == \
            answer(send(over_wire, wire.base_url, "GET", "/open/option/order/singleQuery/v1", query, ts))
    assert inproc.requests == wire.requests
    assert inproc.counts == wire.counts


def test_a_form_body_an_unknown_path_and_an_oversized_body_end_the_same_way(twins):
    wire, inproc = twins
    ts = wire.clock.now_ms()
    form = {"requestId": "123", "quoteId": "456"}
    headers = {"Content-Type": "application/x-www-form-urlencoded", **signed("POST", RFQ_ACCEPT, form, ts)}
    huge = b"{" + b" " * (4 * 1024 * 1024 + 1) + b"}"
    with requests.Session() as over_wire, in_process_session(inproc) as in_process:
        pairs = [
            (over_wire.post(wire.base_url + RFQ_ACCEPT, data=urlencode(form), headers=headers, timeout=5),
             in_process.post(inproc.base_url + RFQ_ACCEPT, data=urlencode(form), headers=headers, timeout=5)),
            (over_wire.get(wire.base_url + "/open/no/such/v1", timeout=5),
             in_process.get(inproc.base_url + "/open/no/such/v1", timeout=5)),
            (over_wire.post(wire.base_url + CREATE, data=huge, headers={"Content-Type": "application/json"}, timeout=5),
             in_process.post(inproc.base_url + CREATE, data=huge, headers={"Content-Type": "application/json"},
                             timeout=5)),
        ]
    statuses = [by_wire.status_code for by_wire, _ in pairs]
    assert statuses == [200, 404, 413]
    for by_wire, by_call in pairs:
        assert answer(by_call) == answer(by_wire)
    assert pairs[2][1].headers["Connection"] == "close"
    assert inproc.requests == wire.requests


# --- (c) a bad signature ------------------------------------------------------------------------------
def test_a_bad_signature_is_rejected_in_process_exactly_as_over_the_wire(twins):
    wire, inproc = twins
    ts = wire.clock.now_ms()
    with requests.Session() as over_wire, in_process_session(inproc) as in_process:
        by_wire = send(over_wire, wire.base_url, "GET", SUMMARY, {}, ts, secret="not-the-secret")
        by_call = send(in_process, inproc.base_url, "GET", SUMMARY, {}, ts, secret="not-the-secret")
    assert by_wire.status_code == 200 and by_wire.json()["code"] == 4003
    assert answer(by_call) == answer(by_wire)
    assert inproc.requests == wire.requests

    def summary_with_a_wrong_secret(handle: SimulatorHandle, **factory: Callable[[], Any]) -> AuthError:
        client = CoincallClient(ClientSettings(base_url=handle.base_url), Credentials(KEY, "wrong-secret"),
                                handle.clock, **factory)
        with pytest.raises(AuthError) as caught:
            client.account_summary()
        return caught.value

    over_wire_error = summary_with_a_wrong_secret(wire)
    in_process_error = summary_with_a_wrong_secret(inproc, session_factory=inprocess_session_factory(inproc))
    assert (in_process_error.code, str(in_process_error)) == (over_wire_error.code, str(over_wire_error))


# --- (d) faults ---------------------------------------------------------------------------------------
def test_a_timeout_fault_raises_read_timeout_at_once_and_the_order_exists(twins):
    _, inproc = twins
    with in_process_session(inproc) as in_process:
        params = a_resting_bid(inproc, in_process, 7006)
        inproc.faults.add(FaultRule(mode="timeout", endpoint="create_order", count=1, seconds=30.0, execute=True))
        started = wall_seconds()
        with pytest.raises(requests.ReadTimeout):
            send(in_process, inproc.base_url, "POST", CREATE, params, inproc.clock.now_ms(), timeout=0.2)
        assert wall_seconds() - started < 5.0            # nobody waited the 30 s hold
        record = inproc.requests_for("create_order")[-1]
        assert (record.http_status, record.fault, record.code) == (None, "timeout", 0)
        found = send(in_process, inproc.base_url, "GET", "/open/option/order/singleQuery/v1",
                     {"clientOrderId": 7006}, inproc.clock.now_ms()).json()
    assert found["code"] == 0


def test_a_hold_shorter_than_the_read_timeout_and_a_drop_end_as_connection_errors(twins):
    wire, inproc = twins
    for handle in twins:
        handle.faults.add(FaultRule(mode="timeout", endpoint="server_time", count=1, seconds=0.05))
        handle.faults.add(FaultRule(mode="drop", endpoint="account_summary", count=1))
    with requests.Session() as over_wire, in_process_session(inproc) as in_process:
        for session, handle in ((over_wire, wire), (in_process, inproc)):
            with pytest.raises(requests.ConnectionError) as hung_up:
                send(session, handle.base_url, "GET", TIME, {}, handle.clock.now_ms(), timeout=5.0)
            assert not isinstance(hung_up.value, requests.Timeout)
            with pytest.raises(requests.ConnectionError):
                send(session, handle.base_url, "GET", SUMMARY, {}, handle.clock.now_ms())
    assert [(r.handler, r.http_status, r.fault) for r in inproc.requests] == \
        [(r.handler, r.http_status, r.fault) for r in wire.requests]


def test_the_client_sees_a_lost_create_as_an_unknown_outcome_in_process(twins):
    _, inproc = twins
    client = CoincallClient(ClientSettings(base_url=inproc.base_url), Credentials(KEY, SECRET), inproc.clock,
                            session_factory=inprocess_session_factory(inproc))
    with in_process_session(inproc) as in_process:
        params = a_resting_bid(inproc, in_process, 7100)
    inproc.faults.add(FaultRule(mode="lost_response", endpoint="create_order", count=1))
    with pytest.raises(OrderOutcomeUnknown):
        client.create_order(params["symbol"], params["qty"], 1, params["price"], 7100)
    assert client.query_order(client_order_id=7100)["clientOrderId"] in (7100, "7100")


# --- the client over both transports ------------------------------------------------------------------
def exercise(client: CoincallClient, clock: SimulatedClock) -> list[Any]:
    """A run of the client's calls, signed and unsigned, GET, JSON and form POSTs, and what each returned."""
    results: list[Any] = [client.server_time(), client.public_config(), client.user_info(),
                          client.account_summary(), client.positions(), client.index_price()]
    instruments = client.instruments("BTC")
    expiry = sorted({i["expirationTimestamp"] for i in instruments})[1]
    results += [instruments, client.option_chain(expiry)]
    calls = sorted((i for i in instruments if i["expirationTimestamp"] == expiry and i["symbolName"].endswith("-C")),
                   key=lambda i: i["strike"])
    chosen = next(i for i in calls[len(calls) // 2:] if client.orderbook(i["symbolName"])["bids"])
    book = client.orderbook(chosen["symbolName"])
    tick = float(chosen["tickSize"])
    order_id = client.create_order(chosen["symbolName"], 0.1, 1, max(tick, float(book["bids"][0]["price"]) - 10 * tick),
                                   5001)
    clock.advance(2.0)
    results += [book, order_id, client.query_order(order_id=order_id), client.all_pending_orders()]
    client.cancel_order(order_id=order_id)
    clock.advance(1.0)
    results += [client.query_order(client_order_id=5001), client.order_history(), client.trade_history()]
    put = next(i for i in instruments if i["expirationTimestamp"] == expiry and i["symbolName"].endswith("-P")
               and i["strike"] <= chosen["strike"])
    rfq = client.rfq_create([{"instrumentName": chosen["symbolName"], "side": "BUY", "qty": "0.5"},
                             {"instrumentName": put["symbolName"], "side": "BUY", "qty": "0.5"}])
    clock.advance(6.0)
    quotes = client.rfq_quotes(rfq["requestId"])
    results += [rfq, quotes]
    if quotes:
        results.append(client.rfq_accept(rfq["requestId"], quotes[0]["quoteId"]))
    else:
        results.append(client.rfq_cancel(rfq["requestId"]))
    clock.advance(1.0)
    results += [client.positions(), client.account_summary(), client.blocktrade_orders()]
    return results


def test_the_client_gets_the_same_answers_over_both_transports(twins):
    wire, inproc = twins
    over_wire = CoincallClient(ClientSettings(base_url=wire.base_url), Credentials(KEY, SECRET), wire.clock)
    in_process = CoincallClient(ClientSettings(base_url=inproc.base_url), Credentials(KEY, SECRET), inproc.clock,
                                session_factory=inprocess_session_factory(inproc))
    by_wire = exercise(over_wire, wire.clock)
    assert exercise(in_process, inproc.clock) == by_wire
    assert inproc.requests == wire.requests
    assert len(wire.requests) > 20
    assert {"create_order", "cancel_order", "rfq_create", "rfq_accept"} <= set(wire.counts)
    over_wire.close()
    in_process.close()


# --- the in-process session prepares what requests prepares ---------------------------------------
@pytest.mark.parametrize("method, path, body, content_type", [
    ("GET", "/open/option/get/v1/BTCUSD?endTime=1772784000000", None, "application/json"),
    ("GET", "/open/option/order/orderbook/v1/BTCUSD-3MAR26-70000-C", None, "application/json"),
    ("GET", "/open/option/trade/history/v1?pageSize=100&symbol=BTCUSD-3MAR26-70000-C&x=a%20b%2Fc~", None,
     "application/json"),
    ("POST", CREATE, b'{"symbol":"BTCUSD-3MAR26-70000-C","qty":0.1}', "application/json"),
    ("POST", RFQ_ACCEPT, b"requestId=1&quoteId=2", "application/x-www-form-urlencoded"),
    ("POST", "/open/option/blocktrade/request/cancel/v1", b"", "application/x-www-form-urlencoded"),
])
def test_the_in_process_session_prepares_the_request_requests_would(twins, method, path, body, content_type):
    _, inproc = twins
    url = inproc.base_url + path
    headers = {"Content-Type": content_type, "User-Agent": "CoincallTrader",
               **signed(method, path.split("?")[0], {}, 1_772_431_200_000)}
    reference = requests.Session()
    reference.trust_env = False
    expected = reference.prepare_request(requests.Request(method, url, data=body, headers=headers))
    session = inprocess_session_factory(inproc)()
    for _ in range(2):                                    # the second time from its caches
        prepared = session.prepare(method, url, body, headers)
        assert (prepared.method, prepared.url, list(prepared.headers.items()), prepared.body) == \
            (expected.method, expected.url, list(expected.headers.items()), expected.body)


@pytest.mark.parametrize("method, path, body, headers", [
    ("POST", "/a", None, {"Content-Length": None}),                  # a None removes, then "0" is added
    ("POST", "/a", b"abc", {"content-length": "99"}),                # the body's length wins, in place
    ("GET", "/a", None, {"accept": None, "user-agent": "U"}),        # defaults removed and re-spelt
    ("PUT", "/a", b"", {}),
    ("delete", "/a?b=c d", None, {}),                                # method upper-cased, URL re-quoted
])
def test_the_in_process_session_merges_headers_as_requests_does(twins, method, path, body, headers):
    _, inproc = twins
    url = inproc.base_url + path
    reference = requests.Session()
    reference.trust_env = False
    expected = reference.prepare_request(requests.Request(method, url, data=body, headers=headers))
    prepared = inprocess_session_factory(inproc)().prepare(method, url, body, headers)
    assert (prepared.method, prepared.url, list(prepared.headers.items()), prepared.body) == \
        (expected.method, expected.url, list(expected.headers.items()), expected.body)


def test_the_client_s_session_reads_the_status_reason_headers_and_bytes_the_wire_delivers(twins):
    """The session the client is given answers with a light response, not a ``requests.Response``:
    what the client reads of it (status, reason, headers - also the echoed ``Connection: close``
    - and body bytes) must be what the wire delivers, for a success, an error and a HEAD."""
    wire, inproc = twins
    session = inprocess_session_factory(inproc)()
    ts = wire.clock.now_ms()
    cases = [("GET", SUMMARY, {}), ("GET", SUMMARY, {"Connection": "close"}), ("GET", "/no/such/path", {}),
             ("HEAD", TIME, {})]
    with requests.Session() as over_wire:
        for method, path, extra in cases:
            headers = {"Content-Type": "application/json", **signed(method, path, {}, ts), **extra}
            by_wire = over_wire.request(method, wire.base_url + path, headers=headers, timeout=5)
            by_call = session.request(method, inproc.base_url + path, data=None, headers=headers, timeout=(5, 5),
                                      allow_redirects=False)
            assert not isinstance(by_call, requests.Response)
            assert (by_call.status_code, by_call.reason, sorted(by_call.headers.items()), by_call.content) == \
                (by_wire.status_code, by_wire.reason, sorted(by_wire.headers.items()), by_wire.content), (method, path)
    assert inproc.requests == wire.requests


def test_the_in_process_session_refuses_other_hosts_and_a_malformed_header(twins):
    _, inproc = twins
    session = inprocess_session_factory(inproc)()
    with pytest.raises(requests.exceptions.InvalidSchema):
        session.request("GET", "http://127.0.0.1:1/time", data=None, headers={}, timeout=(1, 1),
                        allow_redirects=False)
    with pytest.raises(requests.exceptions.InvalidHeader):
        session.request("GET", inproc.base_url + TIME, data=None, headers={"User-Agent": "x\r\ny"},
                        timeout=(1, 1), allow_redirects=False)


# --- the route table's fast look-up ---------------------------------------------------------------
def test_find_route_answers_what_a_scan_of_the_table_in_order_answers():
    def scanned(method: str, path: str):
        for route in ROUTES:
            params = route.match(method, path)
            if params is not None:
                return route, params
        return None

    paths = {route.path.replace("{", "").replace("}", "") for route in ROUTES} | {route.path for route in ROUTES}
    paths |= {"/open/option/get/v1/BTCUSD", "/open/option/order/orderbook/v1/BTCUSD-3MAR26-70000-C",
              "/time/", "/", "", "/open/option/order/cancelOpenOrders/v1/BTCUSD", "/nope"}
    for method in ("GET", "POST", "DELETE", "get"):
        for path in paths:
            assert find_route(method, path) == scanned(method, path), (method, path)


# --- settings and the connection ------------------------------------------------------------------
def test_the_daemon_keeps_the_wire_and_a_transport_must_be_known():
    assert load_settings({"TRADING_ENVIRONMENT": "sim"}, dotenv_path=None).sim_transport == "wire"
    assert load_settings({"TRADING_ENVIRONMENT": "sim", "SIM_TRANSPORT": "inprocess"},
                         dotenv_path=None).sim_transport == "wire"   # never read from the environment
    with pytest.raises(ConfigError, match="sim_transport 'socket'"):
        Settings(sim_transport="socket")


def test_open_exchange_in_process_binds_no_port_and_a_rebuilt_session_stays_in_process(tmp_path):
    settings = dataclasses.replace(
        load_settings({"TRADING_ENVIRONMENT": "sim", "STATE_DIR": str(tmp_path / "state")}, dotenv_path=None),
        sim_state_file=tmp_path / "state" / "simulator.json", sim_transport="inprocess")
    clock = SimulatedClock(start=SIM_START, speed=0)
    with open_exchange(settings, clock) as connection:
        handle = connection.simulator
        assert isinstance(handle, SimulatorHandle) and not handle.listening
        assert connection.base_url == handle.base_url == "http://inprocess.simulator"
        assert connection.client.server_time() == clock.now_ms()
        connection.client._rebuild_session()
        assert connection.client.account_summary() is not None
        assert [r.handler for r in handle.requests] == ["server_time", "account_summary"]
    assert (tmp_path / "state" / "simulator.json").exists()


def test_an_unreachable_in_process_simulator_is_a_transport_error_not_a_hang(twins):
    _, inproc = twins
    client = CoincallClient(ClientSettings(base_url=inproc.base_url, max_retries=0), Credentials(KEY, SECRET),
                            inproc.clock, session_factory=inprocess_session_factory(inproc))
    inproc.faults.add(FaultRule(mode="drop", endpoint="positions", count=1))
    with pytest.raises(TransportError, match="ConnectionError"):
        client.positions()


# --- (a) a backtest over both transports ---------------------------------------------------------
@pytest.mark.slow
def test_a_backtest_gives_byte_identical_results_over_the_wire_and_in_process(tmp_path):
    configs = [c for c in build_strategy_configs(STRATEGIES) if c.name == "micro_strangle"]
    period = BacktestPeriod(parse_instant("2026-03-03T10:00", "--from"), parse_instant("2026-03-03T12:30", "--to"))
    outputs: dict[str, Path] = {}
    for transport in ("wire", "inprocess"):
        out = tmp_path / transport
        code = run_backtest(configs, period, seed=7, poll=10.0, out_dir=out, stop=StopFlag(),
                            progress_stream=io.StringIO(), transport=transport)
        assert code == 0
        outputs[transport] = out
    trades = (outputs["wire"] / TRADES_FILE).read_bytes()
    assert trades.count(b"\n") >= 2                        # a header and at least one trade
    assert (outputs["inprocess"] / TRADES_FILE).read_bytes() == trades
    assert (outputs["inprocess"] / SUMMARY_FILE).read_bytes() == (outputs["wire"] / SUMMARY_FILE).read_bytes()
    assert json.loads((outputs["wire"] / SUMMARY_FILE).read_text(encoding="utf-8"))["total"]["trades"] >= 1
