"""Rate limits per group and per user/IP, on the simulated clock (API.md §3.4, §13 item 4)."""
from __future__ import annotations

from clock import SimulatedClock
from simulator.routes import RATE_LIMITS
from simulator.server import RateLimiter

SUMMARY = "/open/account/summary/v1"
POSITIONS = "/open/option/position/get/v1"


# --- the token bucket itself -------------------------------------------------------------
def test_bucket_allows_the_table_burst_then_refuses():
    clock = SimulatedClock(start=1_000_000.0, speed=0)
    limiter = RateLimiter(clock)
    assert [limiter.allow("user:1", "account") for _ in range(3)] == [True, True, False]


def test_bucket_refills_with_simulated_time_only():
    clock = SimulatedClock(start=1_000_000.0, speed=0)
    limiter = RateLimiter(clock)
    for _ in range(2):
        assert limiter.allow("user:1", "account")
    clock.advance(0.49)
    assert not limiter.allow("user:1", "account")
    clock.advance(0.01)  # half a window = one token at 2 per second
    assert limiter.allow("user:1", "account")
    assert not limiter.allow("user:1", "account")


def test_buckets_are_per_identity_and_per_group():
    clock = SimulatedClock(start=1_000_000.0, speed=0)
    limiter = RateLimiter(clock)
    for _ in range(2):
        assert limiter.allow("user:1", "account")
    assert not limiter.allow("user:1", "account")
    assert limiter.allow("user:2", "account")
    assert limiter.allow("user:1", "positions")
    assert limiter.allow("user:1", None)  # ungrouped endpoints are unlimited


def test_bucket_never_holds_more_than_its_capacity():
    clock = SimulatedClock(start=1_000_000.0, speed=0)
    limiter = RateLimiter(clock)
    capacity, _window = RATE_LIMITS["place"]
    clock.advance(3600)
    allowed = sum(limiter.allow("user:1", "place") for _ in range(capacity + 5))
    assert allowed == capacity


# --- through the server ------------------------------------------------------------------
def test_account_summary_third_call_within_a_second_is_throttled(sim, signed_request):
    assert signed_request("GET", SUMMARY)["code"] == 0
    assert signed_request("GET", SUMMARY)["code"] == 0
    throttled = signed_request("GET", SUMMARY)
    assert throttled == {"code": 10000, "msg": "Try again later", "i18nArgs": None, "data": None}
    sim.clock.advance(1.0)
    assert signed_request("GET", SUMMARY)["code"] == 0


def test_groups_are_independent(sim, signed_request):
    for _ in range(2):
        signed_request("GET", SUMMARY)
    assert signed_request("GET", SUMMARY)["code"] == 10000
    assert signed_request("GET", POSITIONS)["code"] == 0


def test_positions_allow_five_per_second(sim, signed_request):
    codes = [signed_request("GET", POSITIONS)["code"] for _ in range(6)]
    assert codes == [0, 0, 0, 0, 0, 10000]


def test_public_group_is_counted_per_ip_for_unsigned_calls(sim, signed_request):
    capacity, _window = RATE_LIMITS["public_config"]
    codes = [signed_request("GET", "/open/public/config/v1", signed=False)["code"] for _ in range(capacity + 1)]
    assert codes[-1] == 10000
    assert all(code != 10000 for code in codes[:-1])
    # The signed caller is a different identity (its user id), with its own bucket.
    assert signed_request("GET", "/open/public/config/v1")["code"] != 10000


def test_unlimited_endpoints_are_never_throttled(sim, signed_request):
    assert all(signed_request("GET", "/time", signed=False)["code"] == 0 for _ in range(40))


def test_throttled_requests_do_not_reach_the_exchange(sim, signed_request, monkeypatch):
    calls = []
    original = sim.exchange.account_summary

    def counting(account, params):
        calls.append(params)
        return original(account, params)

    monkeypatch.setattr(sim.exchange, "account_summary", counting)
    for _ in range(4):
        signed_request("GET", SUMMARY)
    assert len(calls) == 2
    assert [r.code for r in sim.requests_for("account_summary")] == [0, 0, 10000, 10000]


def test_http429_throttle_mode(sim_factory, signed_request_for):
    sim = sim_factory(throttle_mode="http429")
    call = signed_request_for(sim)
    assert call("GET", SUMMARY)["code"] == 0
    assert call("GET", SUMMARY)["code"] == 0
    response = call("GET", SUMMARY, raw=True)
    assert response.status_code == 429


def test_rate_limits_can_be_disabled(sim_factory, signed_request_for):
    sim = sim_factory(rate_limits_enabled=False)
    call = signed_request_for(sim)
    assert all(call("GET", SUMMARY)["code"] == 0 for _ in range(6))
