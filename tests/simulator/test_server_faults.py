"""Injected HTTP faults: deterministic, per endpoint, and honest about what executed (API.md §13 item 25)."""
from __future__ import annotations

import pytest
import requests

from simulator import FaultPlan, FaultRule

CREATE = "/open/option/order/create/v1"
SINGLE = "/open/option/order/singleQuery/v1"


def order_exists(call, client_order_id: int) -> bool:
    envelope = call("GET", SINGLE, {"clientOrderId": client_order_id})
    assert envelope["code"] in (0, 10584), envelope
    return envelope["code"] == 0


# --- FaultPlan on its own ------------------------------------------------------------------
def test_rule_validation():
    with pytest.raises(ValueError):
        FaultRule(mode="explode")
    with pytest.raises(ValueError):
        FaultRule(mode="http_5xx", http_status=404)
    with pytest.raises(ValueError):
        FaultRule(mode="drop", probability=1.5)


def test_count_rule_fires_for_the_next_n_matching_requests_only():
    plan = FaultPlan(seed=1)
    rule = plan.add(FaultRule(mode="code_10000", endpoint="create_order", count=2))
    fired = [plan.decide(h, "/p", {}).mode for h in ("server_time", "create_order", "create_order", "create_order")]
    assert fired == [None, "code_10000", "code_10000", None]
    assert rule.fired == 2
    assert plan.rules == []
    assert plan.counts == {"code_10000": 2}


def test_rules_match_on_path_pattern_and_params():
    plan = FaultPlan(seed=1)
    plan.add(FaultRule(mode="drop", path="/open/option/order/*", params_match={"orderId": 5}))
    assert plan.decide("cancel_order", "/open/option/order/cancel/v1", {"orderId": 5}).mode == "drop"
    assert plan.decide("cancel_order", "/open/option/order/cancel/v1", {"orderId": "5"}).mode == "drop"
    assert plan.decide("cancel_order", "/open/option/order/cancel/v1", {"orderId": 6}).mode is None
    assert plan.decide("server_time", "/time", {"orderId": 5}).mode is None


def test_endpoint_patterns_use_fnmatch():
    plan = FaultPlan(seed=1)
    plan.add(FaultRule(mode="http_429", endpoint="rfq_*"))
    assert plan.decide("rfq_accept", "/x", {}).mode == "http_429"
    assert plan.decide("create_order", "/x", {}).mode is None


def test_seeded_probability_rules_are_deterministic():
    def pattern(seed: int) -> list[bool]:
        plan = FaultPlan(seed=seed)
        plan.add(FaultRule(mode="http_5xx", endpoint="positions", probability=0.3))
        return [plan.decide("positions", "/p", {}).rule is not None for _ in range(200)]

    first = pattern(11)
    assert first == pattern(11)
    assert first != pattern(12)
    assert 30 < sum(first) < 90  # roughly 30 %


def test_latency_rules_add_up_and_let_the_next_rule_decide():
    plan = FaultPlan(seed=1)
    plan.add(FaultRule(mode="latency", seconds=1.5, count=1))
    plan.add(FaultRule(mode="latency", seconds=0.5, count=1))
    plan.add(FaultRule(mode="lost_response", count=1))
    decision = plan.decide("create_order", "/p", {})
    assert decision.latency_seconds == pytest.approx(2.0)
    assert decision.mode == "lost_response"
    assert plan.counts == {"latency": 2, "lost_response": 1}
    assert plan.decide("create_order", "/p", {}).label is None


def test_global_chaos_is_seeded_and_limited_to_endpoints():
    def run(seed: int) -> list[str | None]:
        plan = FaultPlan(seed=seed)
        plan.set_global(rate=0.2, modes=("code_10000", "http_5xx"), endpoints=("create_order",))
        return [plan.decide(h, "/p", {}).mode for h in ["create_order", "server_time"] * 100]

    modes = run(3)
    assert modes == run(3)
    assert all(m is None for m in modes[1::2])  # server_time is never hit
    fired = [m for m in modes[0::2] if m is not None]
    assert {"code_10000", "http_5xx"} <= set(fired)
    assert 5 < len(fired) < 40


def test_clear_and_rate_zero_switch_everything_off():
    plan = FaultPlan(seed=1)
    plan.add(FaultRule(mode="drop"))
    plan.set_global(rate=1.0, modes=("code_10000",))
    plan.clear()
    assert plan.decide("create_order", "/p", {}).mode is None
    plan.set_global(rate=1.0, modes=("code_10000",))
    plan.set_global(rate=0.0)
    assert plan.decide("create_order", "/p", {}).mode is None


# --- over HTTP -----------------------------------------------------------------------------
def test_http_5xx_answers_without_executing(sim, signed_request, resting_bid):
    sim.faults.add(FaultRule(mode="http_5xx", endpoint="create_order", http_status=502, count=1))
    params = resting_bid(client_order_id=7001)
    response = signed_request("POST", CREATE, params, raw=True)
    assert response.status_code == 502
    assert not order_exists(signed_request, 7001)
    record = sim.requests_for("create_order")[-1]
    assert (record.http_status, record.fault, record.code) == (502, "http_5xx", None)
    # The next identical request goes through (the rule was for one request).
    assert signed_request("POST", CREATE, params)["code"] == 0
    assert order_exists(signed_request, 7001)


def test_code_10000_answers_without_executing(sim, signed_request, resting_bid):
    sim.faults.add(FaultRule(mode="code_10000", endpoint="create_order", count=1))
    envelope = signed_request("POST", CREATE, resting_bid(client_order_id=7002))
    assert envelope == {"code": 10000, "msg": "Try again later", "i18nArgs": None, "data": None}
    assert not order_exists(signed_request, 7002)


def test_http_429_answers_without_executing(sim, signed_request, resting_bid):
    sim.faults.add(FaultRule(mode="http_429", endpoint="create_order", count=1))
    assert signed_request("POST", CREATE, resting_bid(client_order_id=7003), raw=True).status_code == 429
    assert not order_exists(signed_request, 7003)


def test_drop_closes_the_connection_without_executing(sim, signed_request, resting_bid):
    sim.faults.add(FaultRule(mode="drop", endpoint="create_order", count=1))
    with pytest.raises(requests.ConnectionError):
        signed_request("POST", CREATE, resting_bid(client_order_id=7004))
    assert not order_exists(signed_request, 7004)
    record = sim.requests_for("create_order")[-1]
    assert (record.http_status, record.fault) == (None, "drop")


def test_lost_response_executes_the_create_exactly_once(sim, signed_request, resting_bid):
    sim.faults.add(FaultRule(mode="lost_response", endpoint="create_order", count=1))
    with pytest.raises(requests.ConnectionError):
        signed_request("POST", CREATE, resting_bid(client_order_id=7005))
    assert sim.counts["create_order"] == 1
    found = signed_request("GET", SINGLE, {"clientOrderId": 7005})
    assert found["code"] == 0 and found["data"]["clientOrderId"] == 7005
    pending = signed_request("GET", "/open/option/order/pending/v1")["data"]
    assert [o["clientOrderId"] for o in pending["list"]].count(7005) == 1
    record = sim.requests_for("create_order")[-1]
    assert (record.http_status, record.code, record.fault) == (None, 0, "lost_response")
    assert sim.faults.counts == {"lost_response": 1}


def test_timeout_holds_the_connection_after_executing(sim, signed_request, resting_bid):
    sim.faults.add(FaultRule(mode="timeout", endpoint="create_order", count=1, seconds=5.0, execute=True))
    with pytest.raises(requests.Timeout):
        signed_request("POST", CREATE, resting_bid(client_order_id=7006), timeout=0.2)
    assert order_exists(signed_request, 7006)


def test_timeout_without_execute_changes_nothing(sim, signed_request, resting_bid):
    sim.faults.add(FaultRule(mode="timeout", endpoint="create_order", count=1, seconds=5.0))
    with pytest.raises(requests.Timeout):
        signed_request("POST", CREATE, resting_bid(client_order_id=7007), timeout=0.2)
    assert not order_exists(signed_request, 7007)


def test_latency_advances_the_simulated_clock(sim, signed_request):
    sim.faults.add(FaultRule(mode="latency", endpoint="server_time", seconds=2.5, count=1))
    before = sim.clock.now_ms()
    envelope = signed_request("GET", "/time", signed=False)
    assert envelope["code"] == 0
    assert sim.clock.now_ms() - before == 2500
    # The handler ran after the delay: the server time it reports is the late one.
    assert envelope["data"]["serverTime"] == before + 2500
    assert sim.requests[-1].fault == "latency"


def test_probability_rule_over_http_is_reproducible(sim_factory, signed_request_for):
    def statuses() -> list[int]:
        handle = sim_factory(seed=21)
        handle.faults.add(FaultRule(mode="http_5xx", endpoint="server_time", probability=0.5))
        call = signed_request_for(handle)
        return [call("GET", "/time", signed=False, raw=True).status_code for _ in range(20)]

    first = statuses()
    assert first == statuses()
    assert {200, 503} == set(first)


def test_faults_only_hit_their_endpoint(sim, signed_request):
    sim.faults.add(FaultRule(mode="http_5xx", endpoint="create_order"))
    assert signed_request("GET", "/time", signed=False)["code"] == 0
    assert signed_request("GET", "/open/account/summary/v1")["code"] == 0
