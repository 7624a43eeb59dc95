"""option_selection on a live simulator chain, through CoincallClient and MarketData.

These tests pin the request budget of selection (BEHAVIOUR.md §3.1, §8 row 42): one chain
call per expiry involved and never a per-option detail call.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from contracts import Side
from errors import SelectionError
from market_data import MarketData
from option_selection import LegSpec, SelectedOption, find_option, iron_condor, resolve_legs, strangle


@pytest.fixture
def market(sim):
    client = CoincallClient(ClientSettings(base_url=sim.base_url),
                            Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    return MarketData(client, sim.clock)


def expiry_on(day: int, month: int = 3) -> int:
    return int(datetime(2026, month, day, 8, tzinfo=timezone.utc).timestamp() * 1000)


def test_iron_condor_by_delta_one_chain_call_no_detail(sim, market):
    market.instruments("BTC")  # warm the instrument cache: the budget below is selection's own
    sim.reset_stats()
    legs = resolve_legs(iron_condor(0.1, call_delta=0.2, put_delta=-0.2, wing_width=1000, dte=1), market,
                        now=sim.clock.now())
    counts = sim.counts
    assert counts["option_chain"] == 1
    assert counts["option_detail"] == 0
    assert len(legs) == 4 and {leg.contract.expiry_ms for leg in legs} == {expiry_on(3)}
    short_call, short_put, long_call, long_put = legs
    assert [l.side for l in legs] == [Side.SELL, Side.SELL, Side.BUY, Side.BUY]
    sc, sp, lc, lp = (leg.contract.strike for leg in legs)
    assert lp < sp < sc < lc
    assert lc - sc >= 1000 and sp - lp >= 1000
    assert short_call.row.delta == pytest.approx(0.2, abs=0.05)
    assert short_put.row.delta == pytest.approx(-0.2, abs=0.05)
    assert len({l.as_of for l in legs}) == 1 and len({l.index_price for l in legs}) == 1
    assert short_call.row.bid > 0 and long_call.row.ask > 0  # a quote on the traded side


def test_two_expiries_cost_two_chain_calls(sim, market):
    sim.reset_stats()
    specs = [LegSpec("C", 2, 0.1, {"type": "delta", "value": 0.3}, {"dte": 1}),
             LegSpec("C", 1, 0.1, {"type": "delta", "value": 0.3}, {"dte": 4})]
    legs = resolve_legs(specs, market, now=sim.clock.now())
    assert [l.contract.expiry_ms for l in legs] == [expiry_on(3), expiry_on(6)]
    assert sim.counts["option_chain"] == 2 and sim.counts["option_detail"] == 0


def test_incident_42_low_delta_leg_one_chain_call_no_detail_far_otm_strike(sim, market):
    """§8 row 42: a 0.05-delta leg examines every strike of the chain, not only near-ATM ones."""
    sim.reset_stats()
    legs = resolve_legs([LegSpec("C", 2, 0.1, {"type": "delta", "value": 0.05}, {"dte": 1})], market,
                        now=sim.clock.now())
    assert sim.counts["option_chain"] == 1 and sim.counts["option_detail"] == 0
    picked = legs[0]
    contract = picked.contract
    rows = [r for r in market.chain(contract.expiry_ms) if r.option_type == "C" and r.delta is not None and r.bid > 0]
    best = min(rows, key=lambda r: (abs(r.delta - 0.05), r.strike))
    assert contract.strike == best.strike
    assert contract.strike > picked.index_price * 1.04  # far out of the money
    assert picked.row.delta == pytest.approx(0.05, abs=0.02)


def test_find_option_with_market_returns_selected_option(sim, market):
    sim.reset_stats()
    chosen = find_option("P", expiry={"dte": 4}, delta={"min": -0.3, "max": -0.1}, market=market)
    assert isinstance(chosen, SelectedOption)
    assert chosen.expiry_ms == expiry_on(6) and -0.3 <= chosen.delta <= -0.1
    assert chosen.strike < chosen.index_price and chosen.otm_pct > 0
    assert sim.counts["option_chain"] == 1 and sim.counts["option_detail"] == 0


def test_sell_leg_skips_strikes_without_a_bid(sim, market):
    now = sim.clock.now()
    atm = resolve_legs([LegSpec("C", 2, 0.1, {"type": "closestStrike"}, {"dte": 1})], market, now=now)[0]
    sim.market.set_empty_side(atm.symbol, "bid")
    market.invalidate()
    again = resolve_legs([LegSpec("C", 2, 0.1, {"type": "closestStrike"}, {"dte": 1})], market, now=now)[0]
    assert again.symbol != atm.symbol and again.row.bid > 0
    bought = resolve_legs([LegSpec("C", 1, 0.1, {"type": "closestStrike"}, {"dte": 1})], market, now=now)[0]
    assert bought.symbol == atm.symbol  # the ask side is still quoted


def test_missing_expiry_is_selection_error_before_any_chain_call(sim, market):
    sim.reset_stats()
    with pytest.raises(SelectionError, match="available dtes"):
        resolve_legs(strangle(0.1, dte=3), market, now=sim.clock.now())
    assert sim.counts["option_chain"] == 0


def test_now_defaults_to_the_market_clock(sim, market):
    sim.clock.advance(3600 + 1800)  # 07:30: today's 08:00 expiry is inside the 60-minute guard
    legs = resolve_legs(strangle(0.1), market)
    assert {l.contract.expiry_ms for l in legs} == {expiry_on(3)}
