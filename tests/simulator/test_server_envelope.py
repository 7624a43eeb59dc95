"""Envelope, HTTP status, body encodings and request bookkeeping (API.md §3.1-3.2, §10.3-10.4, §13 item 3)."""
from __future__ import annotations

import re

import pytest
import requests

import auth

CREATE = "/open/option/order/create/v1"
RFQ_CREATE = "/open/option/blocktrade/request/create/v1"
RFQ_CANCEL = "/open/option/blocktrade/request/cancel/v1"
ENVELOPE_KEYS = {"code", "msg", "i18nArgs", "data"}


def test_success_envelope_shape(sim, signed_request):
    response = signed_request("GET", "/time", signed=False, raw=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    envelope = response.json()
    assert set(envelope) == ENVELOPE_KEYS
    assert envelope["code"] == 0 and envelope["msg"] == "Success" and envelope["i18nArgs"] is None
    assert envelope["data"] == {"serverTime": sim.clock.now_ms()}


def test_both_time_paths_are_served(sim, signed_request):
    assert signed_request("GET", "/open/public/time/v1", signed=False)["data"]["serverTime"] == sim.clock.now_ms()


def test_application_error_is_http_200_with_null_data(sim, signed_request):
    response = signed_request("GET", "/open/option/order/singleQuery/v1", {"orderId": 1}, raw=True)
    assert response.status_code == 200
    envelope = response.json()
    assert set(envelope) == ENVELOPE_KEYS
    assert envelope["code"] == 10584 and envelope["data"] is None


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/open/option/order/123/v1"),
        ("GET", "/open/option/order/1983131927527428096/v1"),
        ("GET", "/no/such/path"),
        ("POST", "/time"),
        ("GET", "/open/option/order/create/v1"),
        ("DELETE", "/open/option/order/cancel/v1"),
    ],
)
def test_unknown_routes_are_http_404(sim, signed_request, method, path):
    response = signed_request(method, path, raw=True)
    assert response.status_code == 404
    assert sim.requests[-1].http_status == 404
    assert sim.requests[-1].handler is None


def test_order_ids_are_json_integers(sim, signed_request, resting_bid):
    response = signed_request("POST", CREATE, resting_bid(client_order_id=1767225600001), raw=True)
    envelope = response.json()
    assert envelope["code"] == 0, envelope
    order_id = envelope["data"]
    assert isinstance(order_id, int) and 10**18 <= order_id < 2**63
    assert re.search(rf'"data":{order_id}\b', response.text)  # a bare number, never a float or string


def test_json_body_is_required_on_json_routes(sim, signed_request, resting_bid):
    envelope = signed_request("POST", CREATE, resting_bid(client_order_id=5001), body="form")
    assert envelope["code"] == 10567


def test_malformed_json_is_10004(sim):
    headers = auth.signed_headers("POST", CREATE, {}, sim.api_key, sim.api_secret, sim.clock.now_ms())
    headers["Content-Type"] = "application/json"
    for body in ('{"symbol": ', "[1, 2]", "\xff"):
        response = requests.post(sim.base_url + CREATE, data=body.encode("latin-1"), headers=headers, timeout=5)
        assert response.status_code == 200
        assert response.json()["code"] == 10004


def test_unexpected_exception_is_http_500_and_the_server_survives(sim, signed_request, monkeypatch):
    def broken(account, params):
        raise RuntimeError("bug in a handler")

    monkeypatch.setattr(sim.exchange, "server_time", broken)
    response = signed_request("GET", "/time", signed=False, raw=True)
    assert response.status_code == 500
    monkeypatch.undo()
    assert signed_request("GET", "/time", signed=False)["code"] == 0


def test_request_records_and_counters(sim, signed_request):
    sim.reset_stats()
    signed_request("GET", "/time", signed=False)
    signed_request("GET", "/time", signed=False)
    signed_request("GET", "/open/option/order/pending/v1", {"pageSize": 5})
    signed_request("GET", "/nowhere", raw=True)
    assert sim.counts["server_time"] == 2
    assert sim.counts["pending_orders"] == 1
    records = sim.requests_for("pending_orders")
    assert len(records) == 1
    record = records[0]
    assert (record.method, record.path, record.http_status, record.code, record.fault) == (
        "GET", "/open/option/order/pending/v1", 200, 0, None)
    assert record.api_key == sim.api_key and record.headers_ts == str(sim.clock.now_ms())
    assert record.time_ms == sim.clock.now_ms()
    assert len(sim.requests) == 4
    sim.reset_stats()
    assert sim.requests == [] and sim.counts == {}


def test_request_log_is_bounded(sim_factory, signed_request_for):
    sim = sim_factory(request_log_limit=3)
    call = signed_request_for(sim)
    for _ in range(5):
        call("GET", "/time", signed=False)
    assert len(sim.requests) == 3
    assert sim.counts["server_time"] == 5


def test_keep_alive_connection_is_reused(sim, signed_request):
    first = signed_request("GET", "/time", signed=False, raw=True)
    second = signed_request("GET", "/time", signed=False, raw=True)
    assert first.headers.get("Connection", "keep-alive").lower() != "close"
    assert second.status_code == 200
    assert sim.open_connections == 1  # one socket served both requests


# --- RFQ accept/cancel body encodings (API.md §10.3-10.4, §12 #3) ---------------------------
def rfq_legs(call) -> list[dict]:
    """Two liquid legs from the chain whose strikes make the notional clear the $50k minimum."""
    instruments = call("GET", "/open/option/getInstruments/BTC", signed=False)["data"]
    expiries = sorted({i["expirationTimestamp"] for i in instruments})
    later = [i for i in instruments if i["expirationTimestamp"] == expiries[-1] and i["symbolName"].endswith("-C")]
    later.sort(key=lambda i: i["strike"])
    mid = len(later) // 2
    return [
        {"instrumentName": later[mid]["symbolName"], "side": "BUY", "qty": "1"},
        {"instrumentName": later[mid + 1]["symbolName"], "side": "SELL", "qty": "1"},
    ]


def create_rfq(call) -> str:
    envelope = call("POST", RFQ_CREATE, {"legs": rfq_legs(call)})
    assert envelope["code"] == 0, envelope
    return str(envelope["data"]["requestId"])


@pytest.mark.parametrize("body", ["form", "json"])
def test_rfq_cancel_accepts_both_encodings_by_default(sim, signed_request, body):
    request_id = create_rfq(signed_request)
    envelope = signed_request("POST", RFQ_CANCEL, {"requestId": request_id}, body=body)
    assert envelope == {"code": 0, "msg": "Success", "i18nArgs": None, "data": True}


@pytest.mark.parametrize(
    "mode,refused,allowed", [("form_only", "json", "form"), ("json_only", "form", "json")]
)
def test_rfq_strict_body_modes(sim_factory, signed_request_for, mode, refused, allowed):
    sim = sim_factory(rfq_body_mode=mode)
    call = signed_request_for(sim)
    request_id = create_rfq(call)
    for path in (RFQ_CANCEL, "/open/option/blocktrade/request/accept/v1"):
        envelope = call("POST", path, {"requestId": request_id, "quoteId": "1"}, body=refused)
        assert envelope["code"] == 10004
    assert call("POST", RFQ_CANCEL, {"requestId": request_id}, body=allowed)["data"] is True


def test_form_fields_are_strings_and_json_keeps_types(sim, signed_request):
    signed_request("POST", RFQ_CANCEL, {"requestId": 123}, body="form")
    assert sim.requests[-1].params == {"requestId": "123"}
    signed_request("POST", RFQ_CANCEL, {"requestId": 123}, body="json")
    assert sim.requests[-1].params == {"requestId": 123}
