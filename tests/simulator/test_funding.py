"""Funding of the simulated perpetuals: at 00/08/16 UTC on the injected clock, with the right sign.

fee = qty x mark x rate; a positive rate makes longs pay and shorts receive (API.md §14.7). The
payment lands in the account's cash (so its equity) and in the records of §6.1 and §6.2.
"""
from __future__ import annotations

from typing import Any

import pytest

from clock import SimulatedClock
from simulator.exchange import ExchangeConfig
from simulator.perpetuals import PerpConfig, PerpMarket, btc_perp_config, eth_perp_config
from tests.conftest import SIM_START
from tests.simulator.wire_types import ok

CREATE = "/open/futures/order/create/v1"
RECORDS = "/open/settle/future/record/v1"
LATEST = "/open/settle/future/latestRecord/v1"
FUNDING_RATE = "/open/public/fundingRate/v1"
SUMMARY = "/open/account/summary/v1"
BOOK = "/open/futures/order/orderbook/v1/BTCUSD"
EIGHT_HOURS_MS = 8 * 3_600_000


def build(sim_factory, signed_request_for, **sim: Any):
    handle = sim_factory(rate_limits_enabled=False,
                         exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0), **sim)
    return handle, signed_request_for(handle)


def market_order(call, side: int, qty: float, client_id: int, symbol: str = "BTCUSD") -> int:
    return ok(call("POST", CREATE, {"symbol": symbol, "qty": qty, "tradeSide": side, "tradeType": 2,
                                    "clientOrderId": client_id}))


def test_funding_is_paid_at_0800_utc_longs_pay_shorts_receive(sim_factory, signed_request_for, sim_clock):
    handle, call = build(sim_factory, signed_request_for)
    other = handle.exchange.add_account("short")
    market_order(call, 1, 0.5, 1)
    handle.exchange.set_position(other, "BTCUSD", -0.5, handle.exchange.perp_mark("BTCUSD"))
    funding_at = (sim_clock.now_ms() // EIGHT_HOURS_MS + 1) * EIGHT_HOURS_MS   # 08:00 UTC (start 06:00)
    assert funding_at % 86_400_000 == 8 * 3_600_000
    sim_clock.advance((funding_at - sim_clock.now_ms()) / 1000 - 1)
    assert ok(call("GET", RECORDS, {"symbol": "BTCUSD"}))["list"] == []       # one second before: nothing
    cash_before = handle.exchange.cash_of()
    other_before = handle.exchange.cash_of(other)
    sim_clock.advance(2)
    records = ok(call("GET", RECORDS, {"symbol": "BTCUSD"}))
    assert records["total"] == 1
    record = records["list"][0]
    perp = handle.market.perp("BTCUSD")
    assert isinstance(perp, PerpMarket)
    rate = perp.funding_rate(funding_at)
    assert rate > 0                                                             # the default premium model
    assert record["ctime"] == funding_at and record["fundRate"] == rate and record["tradeSide"] == 1
    assert record["qty"] == 0.5 and record["fundFee"] < 0
    paid = -record["fundFee"]
    mark = paid / (0.5 * rate)
    assert mark == pytest.approx(handle.market.index_of("BTC"), rel=0.01)       # qty x mark x rate
    assert handle.exchange.cash_of() == pytest.approx(cash_before - paid, abs=1e-8)
    received = handle.exchange.funding_history(other)
    assert len(received) == 1 and received[0]["fundFee"] == pytest.approx(paid) and received[0]["tradeSide"] == 2
    assert handle.exchange.cash_of(other) == pytest.approx(other_before + paid, abs=1e-8)
    assert ok(call("GET", LATEST))["list"] == records["list"]
    assert ok(call("GET", LATEST, {"symbol": "ETHUSD"}))["list"] == []
    assert call("GET", RECORDS)["code"] == 10005                                # symbol is required
    assert call("GET", LATEST, {"startTime": sim_clock.now_ms() - 25 * 3_600_000})["code"] == 10005

    sim_clock.advance(8 * 3600)                                                 # 16:00: the next one
    history = ok(call("GET", RECORDS, {"symbol": "BTCUSD"}))["list"]
    assert [r["ctime"] for r in history] == [funding_at + EIGHT_HOURS_MS, funding_at]


def test_a_negative_rate_makes_shorts_pay_and_the_public_rate_is_the_running_estimate(
        sim_factory, signed_request_for, sim_clock):
    negative = PerpConfig(premium_bias=-0.002, seed=7)
    handle, call = build(sim_factory, signed_request_for, perpetuals=(negative, eth_perp_config(7)))
    market_order(call, 2, 0.2, 1)
    perp = handle.market.perp("BTCUSD")
    assert isinstance(perp, PerpMarket)
    published = ok(call("GET", FUNDING_RATE, {"symbol": "BTCUSD"}))[0]
    assert float(published["rate"]) == pytest.approx(perp.estimated_funding_rate(sim_clock.now_ms()))
    funding_at = (sim_clock.now_ms() // EIGHT_HOURS_MS + 1) * EIGHT_HOURS_MS
    sim_clock.advance((funding_at - sim_clock.now_ms()) / 1000 + 1)
    record = ok(call("GET", RECORDS, {"symbol": "BTCUSD"}))["list"][0]
    assert record["fundRate"] < 0 and record["tradeSide"] == 2 and record["fundFee"] < 0   # a short pays
    assert record["fundRate"] == pytest.approx(-0.002 + 0.0005, abs=2e-4)   # premium plus the clamped interest


def test_funding_rate_model_is_a_pure_function_of_seed_and_time():
    class Index:
        now_ms = 1_772_431_200_000

        def index_price(self) -> float:
            return 90_000.0

    first, second = PerpMarket(btc_perp_config(3), Index()), PerpMarket(btc_perp_config(3), Index())
    instants = [1_772_438_400_000 + k * EIGHT_HOURS_MS for k in range(5)]
    assert [first.funding_rate(t) for t in instants] == [second.funding_rate(t) for t in instants]
    cfg = btc_perp_config(3)
    for t in instants:
        assert -cfg.funding_rate_cap <= first.funding_rate(t) <= cfg.funding_rate_cap
    other_seed = PerpMarket(btc_perp_config(4), Index())
    assert [other_seed.premium(t) for t in instants] != [first.premium(t) for t in instants]


def test_funding_lands_in_equity_and_is_deterministic(sim_factory, signed_request_for, sim_clock):
    def run() -> tuple[list[dict], list[dict], str]:
        clock = SimulatedClock(start=SIM_START, speed=0)
        handle, call = build(sim_factory, signed_request_for, clock=clock)
        market_order(call, 1, 0.3, 1)
        market_order(call, 2, 5.0, 2, symbol="ETHUSD")
        bid = float(ok(call("GET", BOOK))["bids"][0]["price"])
        ok(call("POST", CREATE, {"symbol": "BTCUSD", "qty": 0.2, "tradeSide": 1, "tradeType": 1,
                                 "price": round(bid - 60, 1), "clientOrderId": 3}))
        clock.advance(20 * 3600)
        return handle.exchange.funding_history(), handle.exchange.fills(), ok(call("GET", SUMMARY))["equity"]

    first = run()
    second = run()
    assert first == second
    passive = [f for f in first[1] if f["clientOrderId"] == 3]   # the resting bid filled as the index moved
    assert sum(f["qty"] for f in passive) == pytest.approx(0.2) and all(f["isTaker"] == 0 for f in passive)
    assert [r["symbol"] for r in first[0]] == ["BTCUSD", "ETHUSD"] * 3    # 08:00, 16:00 and 00:00 UTC
