"""Perpetuals and ETH through the simulator's machinery: state save/restore, faults, scenarios.

A restored simulator must continue with the perpetual orders, positions, leverage and funding
records and both underlyings' markets; a perpetual create whose answer is lost must have landed
exactly once (and its clientOrderId then refuses a blind retry); every scenario moves ETH too.
"""
from __future__ import annotations

import pytest
import requests

from clock import SimulatedClock
from simulator import FaultRule, SimulatorConfig
from simulator.exchange import ExchangeConfig
from simulator.market import MarketModel
from simulator.markets import Markets
from simulator.scenarios import SCENARIOS, scenario_market
from tests.conftest import SIM_START
from tests.simulator.wire_types import ok

CREATE = "/open/futures/order/create/v1"
QUERY = "/open/futures/order/singleQuery/v1"
PENDING = "/open/futures/order/pending/v1"
POSITIONS = "/open/futures/position/get/v1"
RECORDS = "/open/settle/future/record/v1"
LEVERAGE = "/open/futures/leverage/current/v1"
SET_LEVERAGE = "/open/futures/leverage/set/v1"
BOOK = "/open/futures/order/orderbook/v1/{}"
NO_LIMITS = {"rate_limits_enabled": False, "exchange": ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0)}


def test_state_round_trip_keeps_perpetuals_funding_and_both_markets(tmp_path, sim_factory, signed_request_for):
    state_file = str(tmp_path / "state.json")
    clock = SimulatedClock(start=SIM_START, speed=0)
    first = sim_factory(clock=clock, state_file=state_file, **NO_LIMITS)
    call = signed_request_for(first)
    ok(call("POST", SET_LEVERAGE, {"symbol": "ETHUSD", "leverage": 3}))
    ok(call("POST", CREATE, {"symbol": "BTCUSD", "qty": 0.25, "tradeSide": 2, "tradeType": 2, "clientOrderId": 1}))
    ok(call("POST", CREATE, {"symbol": "ETHUSD", "qty": 2.5, "tradeSide": 1, "tradeType": 2, "clientOrderId": 2}))
    clock.advance(2 * 3600 + 60)                                    # past the 08:00 funding
    eth_bid = float(ok(call("GET", BOOK.format("ETHUSD")))["bids"][0]["price"])
    resting = ok(call("POST", CREATE, {"symbol": "ETHUSD", "qty": 1.0, "tradeSide": 1, "tradeType": 1,
                                       "price": round(eth_bid - 5, 2), "clientOrderId": 3}))
    positions = ok(call("GET", POSITIONS))
    records = ok(call("GET", RECORDS, {"symbol": "ETHUSD"}))["list"]
    assert len(records) == 1 and records[0]["tradeSide"] == 1
    eth_index = first.market.index_of("ETH")
    first.stop()

    second = sim_factory(clock=clock, state_file=state_file, **NO_LIMITS)
    again = signed_request_for(second)
    assert second.market.index_of("ETH") == eth_index
    assert ok(again("GET", POSITIONS)) == positions
    assert ok(again("GET", RECORDS, {"symbol": "ETHUSD"}))["list"] == records
    assert [o["orderId"] for o in ok(again("GET", PENDING))["list"]] == [resting]
    assert ok(again("GET", LEVERAGE, {"symbol": "ETHUSD"}))["currentLeverage"] == 3
    assert again("POST", CREATE, {"symbol": "BTCUSD", "qty": 0.1, "tradeSide": 1, "tradeType": 2,
                                  "clientOrderId": 1})["code"] == 10577   # ids stay taken after a restart

    # Funding carries on from the restored state: 16:00 is paid once, 08:00 is not paid again.
    clock.advance(8 * 3600)
    later = ok(again("GET", RECORDS, {"symbol": "BTCUSD"}))["list"]
    assert [r["ctime"] - later[1]["ctime"] for r in later] == [8 * 3_600_000, 0] and later[0]["fundFee"] > 0


def test_a_lost_perpetual_create_landed_once_and_a_blind_retry_is_refused(sim_factory, signed_request_for):
    handle = sim_factory(**NO_LIMITS)
    call = signed_request_for(handle)
    handle.faults.add(FaultRule(mode="lost_response", endpoint="futures_create_order", count=1))
    body = {"symbol": "BTCUSD", "qty": 0.01, "tradeSide": 1, "tradeType": 2, "clientOrderId": 77}
    with pytest.raises(requests.ConnectionError):
        call("POST", CREATE, body)
    found = ok(call("GET", QUERY, {"clientOrderId": 77}))
    assert found["state"] == 1 and found["fillQty"] == 0.01
    assert call("POST", CREATE, body)["code"] == 10577
    assert handle.exchange.position_of(None, "BTCUSD") == 0.01
    assert handle.faults.counts == {"lost_response": 1}


def test_faults_and_side_switches_reach_the_perpetual_book(sim_factory, signed_request_for):
    handle = sim_factory(**NO_LIMITS)
    call = signed_request_for(handle)
    handle.faults.add(FaultRule(mode="http_5xx", endpoint="futures_orderbook", count=1))
    assert call("GET", BOOK.format("BTCUSD"), raw=True).status_code >= 500
    handle.market.set_empty_side("BTCUSD", "ask")
    book = ok(call("GET", BOOK.format("BTCUSD")))
    assert book["asks"] == [] and book["bids"]
    assert call("POST", CREATE, {"symbol": "BTCUSD", "qty": 0.01, "tradeSide": 1, "tradeType": 2,
                                 "clientOrderId": 1})["code"] == 0
    assert ok(call("GET", QUERY, {"clientOrderId": 1}))["state"] == 3      # nothing to buy: cancelled unfilled


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_moves_eth_too(name):
    start_ms = int(SIM_START * 1000)
    config = SimulatorConfig(seed=7, market=scenario_market(name, 7, start_ms))
    eth = config.eth_market_config()
    assert eth is not None and eth.base == "ETH" and eth.scenario == name.replace("_", "-")
    assert eth.scripted_path and eth.scripted_path[0][1] == pytest.approx(3_000.0, rel=0.01)


def test_trend_week_lifts_both_indexes_about_15_percent():
    start_ms = int(SIM_START * 1000)
    config = SimulatorConfig(seed=7, market=scenario_market("trend_week", 7, start_ms))
    eth_config = config.eth_market_config()
    assert eth_config is not None
    btc, eth = MarketModel(config.market_config(), start_ms), MarketModel(eth_config, start_ms)
    markets = Markets({"BTC": btc, "ETH": eth})
    markets.advance_to(start_ms + 7 * 86_400_000)
    assert markets.index_of("BTC") / 90_000.0 == pytest.approx(1.15, abs=0.08)
    assert markets.index_of("ETH") / 3_000.0 == pytest.approx(1.15, abs=0.08)
    assert markets.index_of("ETH") / 3_000.0 != pytest.approx(markets.index_of("BTC") / 90_000.0, abs=1e-6)
