"""Phased pricing as pure functions (BEHAVIOUR.md §6.2 "Phased pricing", "Floors and caps"; §1.3)."""
from __future__ import annotations

import pytest

from trade_execution import (
    ExecutionParams,
    ExecutionPhase,
    NoPriceError,
    apply_price_limits,
    guard_price,
    phase_raw_price,
    phased_price,
)

BUY, SELL = 1, 2
BID, ASK, MARK = 90.0, 110.0, 104.0      # mark inside the spread: fair = 104


def phase(pricing: str, **kwargs) -> ExecutionPhase:
    return ExecutionPhase(pricing, 60.0, **kwargs)


@pytest.mark.parametrize("pricing, kwargs, side, expected", [
    ("fair", {}, BUY, 104.0),
    ("fair", {}, SELL, 104.0),
    ("fair", {"fair_aggression": 0.5}, BUY, 107.0),       # 104 + 0.5 (110 - 104)
    ("fair", {"fair_aggression": 0.5}, SELL, 97.0),       # 104 - 0.5 (104 - 90)
    ("fair", {"fair_aggression": 1.0}, SELL, 90.0),
    ("mid", {}, BUY, 100.0),
    ("mark", {}, SELL, 104.0),
    ("top_of_book", {}, BUY, 90.0),                        # a buy joins the bid
    ("top_of_book", {}, SELL, 110.0),                      # a sell joins the ask
    ("aggressive", {"buffer_pct": 5.0}, BUY, 115.5),
    ("aggressive", {"buffer_pct": 5.0}, SELL, 85.5),
    ("aggressive", {}, SELL, 90.0),
])
def test_each_pricing_mode(pricing, kwargs, side, expected):
    assert phase_raw_price(phase(pricing, **kwargs), side, BID, ASK, MARK) == pytest.approx(expected)


def test_fair_uses_mid_when_the_mark_is_outside_the_spread():
    assert phase_raw_price(phase("fair"), BUY, BID, ASK, 130.0) == pytest.approx(100.0)
    assert phase_raw_price(phase("fair", fair_aggression=0.5), SELL, BID, ASK, 130.0) == pytest.approx(95.0)


def test_mid_with_one_side_degrades_to_the_fair_rule():
    assert phase_raw_price(phase("mid"), SELL, 0.0, ASK, MARK) == pytest.approx(104.0)   # min(mark, ask)
    assert phase_raw_price(phase("mid"), BUY, BID, None, 80.0) == pytest.approx(90.0)    # max(mark, bid)


@pytest.mark.parametrize("pricing, kwargs, side, bid, ask, mark", [
    ("aggressive", {}, BUY, BID, None, MARK),            # nothing to cross
    ("aggressive", {}, SELL, 0.0, ASK, MARK),
    ("top_of_book", {}, BUY, None, ASK, MARK),           # nothing to join
    ("top_of_book", {}, SELL, BID, 0.0, MARK),
    ("mark", {}, SELL, BID, ASK, None),
    ("mark", {}, SELL, BID, ASK, 0.0),
    ("fair", {}, BUY, BID, ASK, None),
    ("fair", {"fair_aggression": 0.5}, SELL, None, ASK, MARK),   # no bid to move toward
    ("mid", {}, BUY, None, ASK, None),
])
def test_missing_inputs_give_no_price(pricing, kwargs, side, bid, ask, mark):
    with pytest.raises(NoPriceError):
        phase_raw_price(phase(pricing, **kwargs), side, bid, ask, mark)


def test_fair_with_zero_aggression_can_rest_without_the_far_side():
    assert phase_raw_price(phase("fair"), SELL, None, ASK, MARK) == pytest.approx(104.0)


def test_guard_keeps_sells_from_going_lower_and_buys_from_going_higher():
    assert guard_price(95.0, SELL, 100.0) == 100.0
    assert guard_price(105.0, SELL, 100.0) == 105.0
    assert guard_price(105.0, BUY, 100.0) == 100.0
    assert guard_price(95.0, BUY, 100.0) == 95.0
    assert guard_price(95.0, SELL, None) == 95.0


def test_floors_and_caps():
    pct = ExecutionParams(min_price_pct_of_fair=0.8, max_price_pct_of_fair=1.1)
    assert apply_price_limits(10.0, SELL, pct, 100.0) == pytest.approx(80.0)
    assert apply_price_limits(90.0, SELL, pct, 100.0) == pytest.approx(90.0)
    assert apply_price_limits(130.0, BUY, pct, 100.0) == pytest.approx(110.0)
    assert apply_price_limits(100.0, BUY, pct, 100.0) == pytest.approx(100.0)
    both = ExecutionParams(min_price_pct_of_fair=0.8, min_floor_price=85.0)
    assert apply_price_limits(10.0, SELL, both, 100.0) == pytest.approx(85.0)    # the higher floor wins
    usd = ExecutionParams(min_floor_price=50.0)
    assert apply_price_limits(10.0, SELL, usd, None) == pytest.approx(50.0)      # a USD floor needs no fair
    assert apply_price_limits(10.0, BUY, usd, None) == pytest.approx(10.0)
    with pytest.raises(NoPriceError):
        apply_price_limits(10.0, SELL, pct, None)


def test_row_27_floor_holds_in_every_phase_when_the_bid_collapses():
    """fair 100, bid collapses to 10, floor 0.8 × fair → no phase prices a sell below 80."""
    params = ExecutionParams(min_price_pct_of_fair=0.8)
    phases = [phase("fair"), phase("fair", fair_aggression=1.0), phase("mid"), phase("mark"),
              phase("top_of_book"), phase("aggressive", buffer_pct=10.0)]
    prices = [phased_price(p, SELL, 10.0, 120.0, 100.0, params, 1.0) for p in phases]
    assert min(prices) >= 80.0
    assert prices[1] == prices[-1] == 80.0       # where the floor stops the sell from crossing it rests at 80


def test_buy_cap_holds_after_snapping():
    params = ExecutionParams(max_price_pct_of_fair=1.05)
    price = phased_price(phase("aggressive", buffer_pct=20.0), BUY, 95.0, 101.0, 100.3, params, 1.0)
    assert price == 105.0          # 1.05 × 100.3 = 105.315, snapped down


def test_phased_price_snaps_then_guards():
    params = ExecutionParams()
    assert phased_price(phase("mid"), SELL, 90.0, 101.0, 95.0, params, 1.0) == 96.0        # 95.5 snapped up
    assert phased_price(phase("mid"), SELL, 90.0, 101.0, 95.0, params, 1.0, previous=99.0) == 99.0
    assert phased_price(phase("mid"), BUY, 90.0, 101.0, 95.0, params, 1.0) == 95.0         # snapped down
    assert phased_price(phase("mid"), BUY, 90.0, 101.0, 95.0, params, 1.0, previous=93.0) == 93.0


def test_urgent_profile():
    urgent = ExecutionParams.urgent()
    assert [(p.pricing, p.duration_seconds, p.reprice_interval_seconds, p.buffer_pct) for p in urgent.phases] == [
        ("mark", 60.0, 15.0, 0.0), ("aggressive", 120.0, 10.0, 5.0)]
    assert urgent.max_requote_rounds >= 16
    assert ExecutionParams.urgent(max_requote_rounds=3).max_requote_rounds == 3
