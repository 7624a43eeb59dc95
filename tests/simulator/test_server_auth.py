"""The simulator authenticates like Coincall: key, timestamp window, signature (API.md §2, §13 items 1-2)."""
from __future__ import annotations

import json

import pytest
import requests

import auth
from simulator.server import verify_signature

DEMO_KEY = "demoKey123"
DEMO_SECRET = "demoSecret456"
DEMO_TS = "1767225600000"


def demo_headers(sign: str, diff: str = "5000") -> dict[str, str]:
    return {"X-CC-APIKEY": DEMO_KEY, "sign": sign, "ts": DEMO_TS, "X-REQ-TS-DIFF": diff}


# --- the four worked vectors of API.md §2.5, through the server's verifier ---------------
VECTORS = [
    pytest.param(
        "POST",
        "/open/option/order/create/v1",
        json.loads(
            '{"symbol":"BTCUSD-27MAR26-100000-C","qty":0.1,"tradeSide":1,"tradeType":1,'
            '"price":1250.5,"clientOrderId":1767225600001}'
        ),
        "98AA07EEFB12E8DC1AED43297025523E0E12C72A5703CA9F9074549E99E6B681",
        id="a-create-json",
    ),
    pytest.param(
        "GET",
        "/open/option/order/singleQuery/v1",
        {"orderId": "1983131927527428096"},
        "3745BF68920A2DFAB8A999B8E84008BEE19FAD55DB930555940B863126B7E107",
        id="b-get-query",
    ),
    pytest.param(
        "GET",
        "/open/account/summary/v1",
        {},
        "330E90CE640DDAF5BCDF1A66B8BFD0DD8A9913B1D58014648B78893B1E59E713",
        id="c-get-no-params",
    ),
    pytest.param(
        "POST",
        "/open/option/blocktrade/request/create/v1",
        json.loads(
            '{"legs":[{"instrumentName":"BTCUSD-27MAR26-100000-C","side":"BUY","qty":"0.5"},'
            '{"instrumentName":"BTCUSD-27MAR26-80000-P","side":"BUY","qty":"0.5"}]}'
        ),
        "A41FEE06A3B504A75FDDDE2AC9828D2937EA7B9EBAEE0EBE786927FC2C79253C",
        id="d-nested-list",
    ),
]


@pytest.mark.parametrize("method,path,params,expected", VECTORS)
def test_worked_vectors_verify(method, path, params, expected):
    assert verify_signature(method, path, params, demo_headers(expected), DEMO_SECRET)


@pytest.mark.parametrize("method,path,params,expected", VECTORS)
def test_worked_vectors_fail_with_wrong_secret_or_tampered_ts(method, path, params, expected):
    assert not verify_signature(method, path, params, demo_headers(expected), "otherSecret")
    tampered = demo_headers(expected)
    tampered["ts"] = "1767225600001"
    assert not verify_signature(method, path, params, tampered, DEMO_SECRET)


def test_verifier_reads_headers_case_insensitively():
    headers = {"x-cc-apikey": DEMO_KEY, "SIGN": "330E90CE640DDAF5BCDF1A66B8BFD0DD8A9913B1D58014648B78893B1E59E713",
               "Ts": DEMO_TS, "x-req-ts-diff": "5000"}
    assert verify_signature("GET", "/open/account/summary/v1", {}, headers, DEMO_SECRET)


def test_missing_diff_header_means_5000():
    headers = demo_headers("330E90CE640DDAF5BCDF1A66B8BFD0DD8A9913B1D58014648B78893B1E59E713")
    del headers["X-REQ-TS-DIFF"]
    assert verify_signature("GET", "/open/account/summary/v1", {}, headers, DEMO_SECRET)


def test_boolean_signed_as_json_or_python_text_is_accepted():
    params = {"flag": True, "symbol": "X"}
    for text in ("true", "True"):
        prehash = f"POST/p?flag={text}&symbol=X&uuid={DEMO_KEY}&ts={DEMO_TS}&x-req-ts-diff=5000"
        assert verify_signature("POST", "/p", params, demo_headers(auth.sign(DEMO_SECRET, prehash)), DEMO_SECRET)
    wrong = f"POST/p?flag=1&symbol=X&uuid={DEMO_KEY}&ts={DEMO_TS}&x-req-ts-diff=5000"
    assert not verify_signature("POST", "/p", params, demo_headers(auth.sign(DEMO_SECRET, wrong)), DEMO_SECRET)


def test_verifier_needs_all_headers():
    good = "330E90CE640DDAF5BCDF1A66B8BFD0DD8A9913B1D58014648B78893B1E59E713"
    for missing in ("X-CC-APIKEY", "sign", "ts"):
        headers = demo_headers(good)
        del headers[missing]
        assert not verify_signature("GET", "/open/account/summary/v1", {}, headers, DEMO_SECRET)


# --- over HTTP -----------------------------------------------------------------------------
SUMMARY = "/open/account/summary/v1"
QUERY_API = "/open/auth/user/query-api"
AUTH_CODES = {4003, 10557}


def test_good_signature_on_get_query_is_accepted(sim, signed_request):
    envelope = signed_request("GET", QUERY_API)
    assert envelope["code"] == 0
    assert envelope["data"]["apiKey"] == sim.api_key
    summary = signed_request("GET", SUMMARY)
    assert summary["code"] == 0


def test_good_signature_on_get_with_params_is_accepted(sim, signed_request):
    envelope = signed_request("GET", "/open/option/order/pending/v1", {"pageSize": 20})
    assert envelope["code"] == 0
    assert sim.requests[-1].params == {"pageSize": "20"}


def test_good_signature_on_json_body_is_accepted(sim, signed_request):
    envelope = signed_request("POST", "/open/option/order/cancel/v1", {"orderId": 1983131927527428096})
    assert envelope["code"] not in AUTH_CODES | {10004, 10567}
    record = sim.requests_for("cancel_order")[-1]
    assert record.params == {"orderId": 1983131927527428096}  # parsed as int, not float
    assert record.code == envelope["code"]


def test_good_signature_on_form_body_is_accepted(sim, signed_request):
    envelope = signed_request(
        "POST", "/open/option/blocktrade/request/cancel/v1", {"requestId": "2004417712093184000"}, body="form"
    )
    assert envelope["code"] not in AUTH_CODES | {10004, 10567}
    assert sim.requests_for("rfq_cancel")[-1].params == {"requestId": "2004417712093184000"}


def test_bad_signature_is_refused_with_4003(sim, signed_request):
    envelope = signed_request("GET", SUMMARY, secret="not-the-secret")
    assert envelope["code"] == 4003
    assert envelope["data"] is None


def test_signature_over_other_params_is_refused(sim, signed_request):
    headers = auth.signed_headers("GET", SUMMARY, {"a": "1"}, sim.api_key, sim.api_secret, sim.clock.now_ms())
    response = requests.get(sim.base_url + SUMMARY, params={"a": "2"}, headers=headers, timeout=5)
    assert response.json()["code"] == 4003


def test_unknown_key_is_refused_with_4003(sim, signed_request):
    envelope = signed_request("GET", SUMMARY, key="unknownKey==", secret="whatever")
    assert envelope["code"] == 4003


def test_timestamp_window_edges(sim, signed_request):
    now = sim.clock.now_ms()
    assert signed_request("GET", QUERY_API, ts=now - 5000)["code"] == 0
    assert signed_request("GET", QUERY_API, ts=now - 5001)["code"] == 10557
    assert signed_request("GET", QUERY_API, ts=now + 999)["code"] == 0
    assert signed_request("GET", QUERY_API, ts=now + 1000)["code"] == 10557
    assert signed_request("GET", QUERY_API, ts=now + 3_600_000)["code"] == 10557


def test_larger_diff_widens_the_window_up_to_the_cap(sim, signed_request):
    now = sim.clock.now_ms()
    assert signed_request("GET", QUERY_API, ts=now - 20_000, diff=30_000)["code"] == 0
    # The client cannot widen the window beyond max_ts_diff_ms (60 s).
    assert signed_request("GET", QUERY_API, ts=now - 70_000, diff=100_000)["code"] == 10557


def test_absent_diff_header_means_5000(sim, signed_request):
    now = sim.clock.now_ms()
    assert signed_request("GET", QUERY_API, ts=now - 4000, diff=None)["code"] == 0
    assert signed_request("GET", QUERY_API, ts=now - 6000, diff=None)["code"] == 10557


def test_old_request_is_refused_once_the_clock_moves_on(sim, signed_request):
    ts = sim.clock.now_ms()
    sim.clock.advance(6)
    assert signed_request("GET", QUERY_API, ts=ts)["code"] == 10557


def test_unsigned_public_endpoints_work(sim, signed_request):
    envelope = signed_request("GET", "/time", signed=False)
    assert envelope["code"] == 0
    assert envelope["data"]["serverTime"] == sim.clock.now_ms()
    assert signed_request("GET", "/open/option/getInstruments/BTC", signed=False)["code"] == 0


def test_signed_public_endpoint_is_accepted(sim, signed_request):
    assert signed_request("GET", "/open/option/getInstruments/BTC")["code"] == 0


def test_unsigned_signed_endpoint_is_refused(sim, signed_request):
    assert signed_request("GET", SUMMARY, signed=False)["code"] == 4003
    assert signed_request("POST", "/open/option/order/cancel/v1", {"orderId": 1}, signed=False)["code"] == 4003


def test_key_without_signature_is_refused(sim):
    headers = {"X-CC-APIKEY": sim.api_key, "ts": str(sim.clock.now_ms())}
    assert requests.get(sim.base_url + SUMMARY, headers=headers, timeout=5).json()["code"] == 4003


def test_wrong_signature_on_public_endpoint_is_refused(sim, signed_request):
    assert signed_request("GET", "/open/option/getInstruments/BTC", secret="bad")["code"] == 4003
    assert signed_request("GET", "/time", key="nobody", secret="bad")["code"] == 4003


def test_url_parameter_order_does_not_matter(sim):
    params = {"pageSize": "20", "page": "1"}
    path = "/open/option/order/pending/v1"
    headers = auth.signed_headers("GET", path, params, sim.api_key, sim.api_secret, sim.clock.now_ms())
    unsorted_url = f"{sim.base_url}{path}?pageSize=20&page=1"
    response = requests.get(unsorted_url, headers=headers, timeout=5)
    assert response.status_code == 200
    assert response.json()["code"] not in AUTH_CODES
    assert sim.requests[-1].params == params


def test_path_parameters_are_not_part_of_the_prehash(sim, signed_request):
    envelope = signed_request("GET", "/open/option/order/cancelOpenOrders/v1/BTCUSD")
    assert envelope["code"] not in AUTH_CODES
    assert sim.requests[-1].params == {"index": "BTCUSD"}


def test_request_log_never_holds_the_secret(sim, signed_request):
    signed_request("GET", SUMMARY)
    signed_request("GET", SUMMARY, secret="wrong")
    record = sim.requests[-1]
    assert record.api_key == sim.api_key
    assert record.code == 4003
    assert all(sim.api_secret not in repr(r) for r in sim.requests)
    assert sim.api_secret not in repr(sim)
