"""The delta-hedge policy (hedging.py): pure decisions from hand-built inputs, no market, no clock."""
from __future__ import annotations

import json
import math
import random

import pytest

from contracts import Side
from errors import ConfigError
from hedging import (
    HedgeAction,
    HedgeConfig,
    HedgeState,
    ceil_to_step,
    decide,
    delta_hedge,
    floor_to_step,
)

NOW = 1_780_000_000.0
STEP = 0.001
TICK = 0.5
MARK = 100_000.0
MARKET = dict(perp_step=STEP, perp_tick=TICK, perp_mark=MARK, perp_bid=99_990.0, perp_ask=100_010.0,
              index=100_005.0, quote_age_seconds=1.0, max_quote_age_seconds=10.0, structure_size=10.0)


def run(config: HedgeConfig, structure_delta: float, hedge_qty: float = 0.0, *, now: float = NOW,
        last_rebalance_at: float | None = None, **market):
    return decide(config, structure_delta=structure_delta, hedge_qty=hedge_qty, now=now,
                  last_rebalance_at=last_rebalance_at, **(MARKET | market))


BTC = delta_hedge(band=0.05, underlying="BTC")


# --- the band and the rebalance -----------------------------------------------------------------

@pytest.mark.parametrize("structure_delta", [0.0, 0.05, -0.05, 0.049, -0.0321])
def test_inside_the_band_nothing_is_done(structure_delta):
    decision = run(BTC, structure_delta)
    assert decision.action is HedgeAction.HOLD
    assert decision.orders == ()
    assert "inside band" in decision.reason


def test_a_long_structure_delta_outside_the_band_sells_the_perp_back_to_target():
    decision = run(BTC, 0.3)
    assert decision.action is HedgeAction.ORDER
    (order,) = decision.orders
    assert (order.side, order.qty, order.reduce_only) == (Side.SELL, 0.3, False)
    assert decision.total_delta == pytest.approx(0.3)
    assert decision.signed_qty == pytest.approx(-0.3)


def test_a_short_total_buys_back_to_a_non_zero_target_counting_the_hedge_held():
    config = delta_hedge(band=0.05, target=0.1, underlying="BTC")
    decision = run(config, -0.4, hedge_qty=0.2)          # total -0.2, target +0.1: buy 0.3
    (order,) = decision.orders
    assert (order.side, order.qty, order.reduce_only) == (Side.BUY, 0.3, False)


def test_band_edge_mode_stops_one_step_inside_the_band():
    config = delta_hedge(band=0.05, rebalance_to="band_edge", underlying="BTC")
    decision = run(config, 0.3)
    (order,) = decision.orders
    assert (order.side, order.qty) == (Side.SELL, 0.251)
    after = 0.3 - order.qty
    assert 0 < after < 0.05                               # inside, on the side it came from


def test_band_edge_mode_short_side_mirrors():
    config = delta_hedge(band=0.1, rebalance_to="band_edge", underlying="ETH")
    decision = run(config, -0.55, perp_step=0.01)
    (order,) = decision.orders
    assert (order.side, order.qty) == (Side.BUY, 0.46)
    assert -0.1 < -0.55 + order.qty < 0


def test_the_quantity_is_rounded_down_to_the_step_never_over_hedging():
    decision = run(BTC, 0.1239)
    (order,) = decision.orders
    assert order.qty == 0.123                              # not 0.124: that would pass the target
    decision = run(delta_hedge(band=0.05, underlying="ETH"), -0.1999, perp_step=0.01)
    assert decision.orders[0].qty == 0.19


def test_max_order_qty_caps_one_rebalance_and_says_so():
    config = delta_hedge(band=0.05, max_order_qty=0.1, underlying="BTC")
    decision = run(config, 0.35)
    (order,) = decision.orders
    assert order.qty == 0.1
    assert decision.capped and "capped" in decision.reason


def test_max_hedge_qty_caps_the_hedge_after_the_order():
    config = delta_hedge(band=0.05, max_hedge_qty=0.5, underlying="BTC")
    decision = run(config, 0.9, hedge_qty=-0.3)            # wants to sell 0.6 -> hedge -0.9; room 0.2
    (order,) = decision.orders
    assert (order.side, order.qty) == (Side.SELL, 0.2)
    assert decision.capped


def test_a_hedge_at_its_cap_holds_and_names_the_cap():
    config = delta_hedge(band=0.05, max_hedge_qty=0.5, underlying="BTC")
    decision = run(config, 0.9, hedge_qty=-0.5)
    assert decision.action is HedgeAction.HOLD and decision.capped
    assert "max_hedge_qty" in decision.reason


def test_a_reduction_is_allowed_even_beyond_the_cap():
    config = delta_hedge(band=0.05, max_hedge_qty=0.5, underlying="BTC")
    decision = run(config, 0.0, hedge_qty=-0.8)            # config lowered since: buying back reduces
    (order,) = decision.orders
    assert (order.side, order.qty, order.reduce_only) == (Side.BUY, 0.8, True)


def test_the_hedge_never_grows_beyond_what_the_structure_can_need():
    """Option legs of 1.0 in all can have a delta of ±1.0 at most: a delta reported a hair
    above (believed, 1.001 per contract) is hedged only to the size, plus |target|."""
    config = delta_hedge(band=0.05, max_hedge_qty=5.0, underlying="BTC")
    decision = run(config, 1.001, structure_size=1.0)          # wants to sell 1.001: the size allows 1.0
    assert [(o.side, o.qty) for o in decision.orders] == [(Side.SELL, 1.0)] and decision.capped
    with_target = run(delta_hedge(band=0.05, target=0.2, max_hedge_qty=5.0, underlying="BTC"), -1.001,
                      structure_size=1.0)                      # wants +1.201: size 1.0 + |target| 0.2
    assert [(o.side, o.qty) for o in with_target.orders] == [(Side.BUY, 1.2)] and with_target.capped
    at_it = run(delta_hedge(band=0.001, max_hedge_qty=5.0, underlying="BTC"), 1.001, hedge_qty=-0.995,
                structure_size=1.0, perp_min_qty=0.01)         # room 0.005 below the minimum
    assert at_it.action is HedgeAction.HOLD and "structure's size" in at_it.reason


def test_a_structure_delta_beyond_its_size_is_a_wrong_greek_and_refused():
    """A delta per contract above 1 cannot be true: hedging it would put on a perp position
    that nothing in the structure offsets."""
    decision = run(BTC, 0.5, structure_size=0.2)
    assert decision.action is HedgeAction.REFUSED and "wrong delta" in decision.reason and not decision.orders
    assert run(BTC, 0.2002, structure_size=0.2).action is HedgeAction.ORDER      # 1.001 per contract: believed


def test_an_order_below_the_perp_minimum_is_not_sent():
    config = delta_hedge(band=0.05, rebalance_to="band_edge", underlying="BTC")
    decision = run(config, 0.0505, perp_min_qty=0.01)      # band edge: 0.0015 to trade, minimum 0.01
    assert decision.action is HedgeAction.HOLD
    assert "below the perp minimum" in decision.reason


def test_an_exchange_step_coarser_than_the_table_floors_to_the_listed_step():
    decision = run(BTC, 0.3333, perp_step=0.01)
    assert decision.orders[0].qty == 0.33


# --- the minimum interval --------------------------------------------------------------------------

def test_too_soon_after_the_last_rebalance_waits_and_says_when():
    config = delta_hedge(band=0.05, min_interval_seconds=300, underlying="BTC")
    decision = run(config, 0.3, now=NOW, last_rebalance_at=NOW - 120)
    assert decision.action is HedgeAction.WAIT
    assert decision.allowed_at == NOW + 180
    assert "180" in decision.reason and decision.orders == ()


def test_once_the_interval_has_passed_the_rebalance_goes():
    config = delta_hedge(band=0.05, min_interval_seconds=300, underlying="BTC")
    assert run(config, 0.3, now=NOW, last_rebalance_at=NOW - 300).action is HedgeAction.ORDER


def test_inside_the_band_holds_before_the_interval_is_even_looked_at():
    config = delta_hedge(band=0.05, min_interval_seconds=300, underlying="BTC")
    assert run(config, 0.01, last_rebalance_at=NOW - 1).action is HedgeAction.HOLD


# --- price protection ----------------------------------------------------------------------------

@pytest.mark.parametrize("changes, words", [
    ({"perp_mark": None}, "mark None"),
    ({"perp_mark": 0.0}, "mark 0.0"),
    ({"perp_mark": math.nan}, "mark nan"),
    ({"perp_bid": 0.0}, "bid 0.0"),
    ({"perp_ask": None}, "ask None"),
    ({"perp_ask": math.inf}, "ask inf"),
    ({"index": 0.0}, "index 0.0"),
    ({"perp_tick": 0.0}, "tick 0.0"),
    ({"quote_age_seconds": 11.0}, "stale"),
    ({"quote_age_seconds": None}, "quote age None"),
    ({"quote_age_seconds": -1.0}, "quote age -1.0"),
    ({"max_quote_age_seconds": 0.0}, "max quote age"),
    ({"perp_bid": 100_010.0}, "crossed or locked"),
    ({"perp_bid": 100_020.0}, "crossed or locked"),
    ({"perp_mark": 102_000.0, "perp_bid": 101_990.0, "perp_ask": 102_010.0}, "from index"),
    ({"perp_bid": 90_000.0}, "outside the sanity band"),
])
def test_every_doubtful_price_refuses_the_order(changes, words):
    decision = run(BTC, 0.3, **changes)
    assert decision.action is HedgeAction.REFUSED
    assert decision.orders == ()
    assert words in decision.reason


@pytest.mark.parametrize("name", ["structure_delta", "hedge_qty"])
def test_an_unknown_delta_refuses(name):
    values = {"structure_delta": 0.3, "hedge_qty": 0.0} | {name: math.nan}
    decision = decide(BTC, now=NOW, last_rebalance_at=None, **values, **MARKET)
    assert decision.action is HedgeAction.REFUSED and name.replace("_", " ") in decision.reason


def test_a_buy_pays_the_ask_when_it_is_inside_the_slippage_cap():
    decision = run(BTC, -0.3)
    assert decision.orders[0].price == 100_010.0


def test_a_buy_never_pays_above_mark_plus_slippage_snapped_down():
    # cap = 100_000 * 1.002 = 100_200; ask far above it; tick 7 -> 100_198 (never 100_205)
    decision = run(BTC, -0.3, perp_ask=100_400.0, perp_tick=7.0)
    price = decision.orders[0].price
    assert price <= 100_200.0 and price == 100_198.0 - 100_198.0 % 7


def test_a_sell_never_accepts_below_mark_minus_slippage_snapped_up():
    decision = run(BTC, 0.3, perp_bid=99_500.0, perp_tick=7.0)
    price = decision.orders[0].price
    assert price >= 99_800.0 and price % 7 == 0 and price - 7 < 99_800.0
    assert run(BTC, 0.3).orders[0].price == 99_990.0       # the bid, inside the cap


# --- reduce-only and no flip ------------------------------------------------------------------------

def test_an_order_that_only_reduces_the_hedge_is_reduce_only():
    decision = run(BTC, -0.1, hedge_qty=0.5)               # total 0.4: sell 0.4 of a 0.5 long hedge
    (order,) = decision.orders
    assert (order.side, order.qty, order.reduce_only) == (Side.SELL, 0.4, True)


def test_an_order_that_would_cross_zero_is_split_reduce_only_first():
    decision = run(BTC, 0.3, hedge_qty=0.1)                # total 0.4: sell 0.4 of a 0.1 long hedge
    reduce, open_ = decision.orders
    assert (reduce.side, reduce.qty, reduce.reduce_only) == (Side.SELL, 0.1, True)
    assert (open_.side, open_.qty, open_.reduce_only) == (Side.SELL, 0.3, False)
    assert decision.signed_qty == pytest.approx(-0.4)
    assert "two orders" in decision.reason


def test_no_single_order_flips_the_hedge_over_random_inputs():
    rng = random.Random(7)
    for _ in range(500):
        hedge = round(rng.uniform(-1, 1), 3)
        decision = run(BTC, round(rng.uniform(-2, 2), 4), hedge)
        position = hedge
        for order in decision.orders:
            after = round(position + order.signed_qty, 9)
            if order.reduce_only:
                assert abs(after) <= abs(position) and after * position >= 0
            else:
                assert position * order.side.sign >= 0     # an opening order never meets an opposite hedge
            position = after


# --- configuration refusals --------------------------------------------------------------------------

@pytest.mark.parametrize("options, words", [
    ({"band": 0}, "delta_hedge.band = 0 is invalid: use a positive delta"),
    ({"band": -0.1}, "delta_hedge.band = -0.1"),
    ({"band": True}, "delta_hedge.band = True"),
    ({"band": 0.005, "underlying": "ETH"}, "use at least 0.01"),
    ({"band": 0.005}, "every underlying"),
    ({"target": math.nan}, "delta_hedge.target = nan"),
    ({"target": 0.5, "max_hedge_qty": 0.2}, "delta_hedge.target = 0.5 is invalid: beyond what the hedge may hold"),
    ({"target": -1.5}, "use a target within ±max_hedge_qty (1)"),
    ({"min_interval_seconds": -1}, "delta_hedge.min_interval_seconds = -1 is invalid: use seconds >= 0"),
    ({"max_hedge_qty": 0}, "delta_hedge.max_hedge_qty = 0 is invalid: use a positive quantity"),
    ({"max_hedge_qty": 0.0015, "underlying": "BTC"}, "multiple of the perp step (BTC step 0.001)"),
    ({"max_hedge_qty": 0.005}, "use at least 0.01"),
    ({"max_order_qty": 0.125, "underlying": "ETH"}, "delta_hedge.max_order_qty = 0.125"),
    ({"max_order_qty": "0.1"}, "delta_hedge.max_order_qty = '0.1'"),
    ({"underlying": "SOL"}, "delta_hedge.underlying = 'SOL' is invalid: use one of 'BTC', 'ETH'"),
    ({"max_slippage_bps": 0}, "delta_hedge.max_slippage_bps = 0"),
    ({"max_slippage_bps": 900}, "(0, 500]"),
    ({"max_mark_index_gap": 0.2}, "delta_hedge.max_mark_index_gap = 0.2"),
    ({"on_close": "keep"}, "delta_hedge.on_close = 'keep' is invalid: use 'flatten'"),
    ({"rebalance_to": "edge"}, "delta_hedge.rebalance_to = 'edge' is invalid: use one of 'target', 'band_edge'"),
])
def test_bad_configuration_is_refused_naming_field_value_and_fix(options, words):
    with pytest.raises(ConfigError) as caught:
        delta_hedge(**options)
    assert words in str(caught.value)


def test_a_misspelled_keyword_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"max_hedge=0.5 is not an argument \(did you mean 'max_hedge_qty'\?\)"):
        delta_hedge(max_hedge=0.5)


def test_defaults_and_binding_to_the_structure_underlying():
    config = delta_hedge()
    assert (config.band, config.target, config.min_interval_seconds, config.max_hedge_qty) == (0.05, 0.0, 300.0, 1.0)
    assert (config.on_close, config.rebalance_to, config.underlying) == ("flatten", "target", None)
    with pytest.raises(ConfigError, match="not bound"):
        config.perp_symbol
    assert config.bind("ETH").perp_symbol == "ETHUSD"
    with pytest.raises(ConfigError, match="the structure trades 'BTC'"):
        delta_hedge(underlying="ETH").bind("BTC")
    assert "0 ± 0.05" in config.bind("BTC").describe()


# --- the state in the trade record ------------------------------------------------------------------

def test_state_record_round_trip_through_json():
    state = HedgeState()
    state = state.after_fill(Side.SELL, 0.3, 99_990.0, 18.0, MARK, at=NOW)
    state = state.after_fill(Side.BUY, 0.1, 100_010.0, 6.0, MARK, at=NOW + 400)
    assert state.hedge_qty == pytest.approx(-0.2)
    assert state.rebalances == 2 and state.last_rebalance_at == NOW + 400
    assert state.fees_usd == 24.0
    assert state.slippage_usd == pytest.approx(3.0 + 1.0)  # sold 10 under mark on 0.3, bought 10 over on 0.1
    assert state.cost_usd == pytest.approx(28.0)
    again = HedgeState.from_record(json.loads(json.dumps(state.to_record())))
    assert again == state


def test_the_second_order_of_a_split_is_the_same_rebalance_and_no_fill_changes_nothing():
    state = HedgeState().after_fill(Side.SELL, 0.1, MARK, 1.0, MARK, at=NOW)
    state = state.after_fill(Side.SELL, 0.3, MARK, 1.0, MARK, at=NOW + 5, new_rebalance=False)
    assert state.rebalances == 1 and state.hedge_qty == pytest.approx(-0.4)
    assert state.after_fill(Side.BUY, 0.0, MARK, 0.0, MARK, at=NOW + 9) is state


def test_a_missing_record_is_a_hedge_that_never_traded_and_a_bad_one_is_refused():
    assert HedgeState.from_record(None) == HedgeState()
    with pytest.raises(ValueError, match="hedge_qty"):
        HedgeState.from_record({"hedge_qty": "lots"})
    with pytest.raises(ValueError, match="rebalances"):
        HedgeState.from_record({"rebalances": -1})
    with pytest.raises(ValueError, match="unknown key"):
        HedgeState.from_record({"hedge": 0.1})


# --- step helpers ------------------------------------------------------------------------------------

def test_step_helpers_round_in_the_safe_direction_despite_binary_floats():
    assert floor_to_step(0.3, 0.001) == 0.3
    assert floor_to_step(0.2999, 0.001) == 0.299
    assert ceil_to_step(99_800.0, 7.0) == 99_806.0
    assert ceil_to_step(99_806.0, 7.0) == 99_806.0
    assert ceil_to_step(0.1001, 0.01) == 0.11


# --- the property: after applying each decision the total is back in the band (or the decision says why) --

@pytest.mark.parametrize("rebalance_to", ["target", "band_edge"])
@pytest.mark.parametrize("underlying, step", [("BTC", 0.001), ("ETH", 0.01)])
def test_random_walk_keeps_the_total_within_band_plus_a_step(rebalance_to, underlying, step):
    config = delta_hedge(band=0.05, max_hedge_qty=2.0, min_interval_seconds=60, rebalance_to=rebalance_to,
                         underlying=underlying)
    rng = random.Random(13)
    state = HedgeState()
    structure = 0.0
    now = NOW
    actions: dict[HedgeAction, int] = {}
    for _ in range(2_000):
        now += 30
        structure += rng.gauss(0, 0.08)
        decision = run(config, structure, state.hedge_qty, now=now, last_rebalance_at=state.last_rebalance_at,
                       perp_step=step)
        for order in decision.orders:                     # every order fills in full at its price
            state = state.after_fill(order.side, order.qty, order.price, 0.0, MARK, at=now,
                                     new_rebalance=order is decision.orders[0])
        total = structure + state.hedge_qty
        actions[decision.action] = actions.get(decision.action, 0) + 1
        if abs(total - config.target) > config.band + step + 1e-9:
            # Outside band + step only with a reason: waiting for the interval, or a cap.
            assert decision.action is HedgeAction.WAIT or decision.capped, decision.reason
        if decision.action is HedgeAction.ORDER and not decision.capped:
            reach = step if rebalance_to == "target" else config.band
            assert abs(total - config.target) < reach + 1e-9, decision.reason
        assert abs(state.hedge_qty) <= config.max_hedge_qty + 1e-9
    assert actions.get(HedgeAction.ORDER, 0) > 50 and actions.get(HedgeAction.WAIT, 0) > 50


def test_a_split_whose_reducing_part_is_below_the_minimum_holds_rather_than_flip_in_one_order():
    """Hedge +0.005 with a perp minimum of 0.01: the reducing part cannot be sent, and the
    opening part alone (an ordinary sell of 0.025) would take the hedge from long to short."""
    config = delta_hedge(band=0.02, max_hedge_qty=0.2, underlying="BTC")
    decision = decide(config, structure_delta=0.025, hedge_qty=0.005, now=1_000.0, last_rebalance_at=None,
                      perp_step=0.001, perp_tick=0.1, perp_mark=85_000.0, perp_bid=84_995.0, perp_ask=85_005.0,
                      index=85_000.0, quote_age_seconds=0.0, max_quote_age_seconds=15.0, structure_size=0.1,
                      perp_min_qty=0.01)
    assert decision.action is HedgeAction.HOLD and not decision.orders
    assert "flip it through zero" in decision.reason
