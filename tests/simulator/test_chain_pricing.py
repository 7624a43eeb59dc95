"""The array pricing of a whole expiry agrees with the one-option formulas it replaces in the chain."""
from __future__ import annotations

import numpy as np
import pytest

from simulator.chain_pricing import greeks, implied_vols, smile_ivs, uniforms
from simulator.pricing import bs_greeks, bs_price, implied_vol

SPOT = 90_000.0
STRIKES = np.array([40_000.0, 70_000.0, 85_000.0, 89_000.0, 90_000.0, 91_000.0, 100_000.0, 130_000.0, 200_000.0] * 2)
IS_CALL = np.array([True] * 9 + [False] * 9)


@pytest.mark.parametrize("t_years", [1.0 / 365 / 24, 2.0 / 365, 30.0 / 365, 1.0])
@pytest.mark.parametrize("rate", [0.0, 0.03])
def test_greeks_match_the_scalar_formulas(t_years, rate):
    vols = np.linspace(0.3, 1.2, len(STRIKES))
    arrays = greeks(IS_CALL, SPOT, STRIKES, t_years, vols, rate)
    for i, (strike, call) in enumerate(zip(STRIKES.tolist(), IS_CALL.tolist())):
        scalar = bs_greeks("C" if call else "P", SPOT, strike, t_years, float(vols[i]), rate)
        for name in ("price", "delta", "gamma", "vega", "theta", "rho"):
            assert float(getattr(arrays, name)[i]) == pytest.approx(getattr(scalar, name), rel=1e-9, abs=1e-12), name


def test_an_option_without_time_value_is_worth_its_intrinsic():
    arrays = greeks(IS_CALL, SPOT, STRIKES, 0.0, np.full(len(STRIKES), 0.5))
    intrinsic = np.where(IS_CALL, np.maximum(0.0, SPOT - STRIKES), np.maximum(0.0, STRIKES - SPOT))
    assert (arrays.price == intrinsic).all() and (arrays.gamma == 0).all() and (arrays.vega == 0).all()
    assert arrays.delta.tolist() == [1.0 if p > 0 and c else (-1.0 if p > 0 else 0.0)
                                     for p, c in zip(intrinsic.tolist(), IS_CALL.tolist())]


@pytest.mark.parametrize("t_years", [1.0 / 365 / 24, 2.0 / 365, 90.0 / 365])
def test_implied_vols_reprice_like_the_scalar_solver(t_years):
    true_vols = np.linspace(0.2, 2.5, len(STRIKES))
    prices = np.array([bs_price("C" if c else "P", SPOT, k, t_years, v)
                       for c, k, v in zip(IS_CALL.tolist(), STRIKES.tolist(), true_vols.tolist())])
    prices = np.round(prices, 2)          # book prices are on a tick, as in the chain
    solved = implied_vols(IS_CALL, prices, SPOT, STRIKES, t_years, 0.0, np.full(len(STRIKES), 0.6))
    for i, (strike, call) in enumerate(zip(STRIKES.tolist(), IS_CALL.tolist())):
        kind = "C" if call else "P"
        scalar = implied_vol(kind, float(prices[i]), SPOT, strike, t_years, guess=0.6)
        assert (solved[i] > 0) == (scalar > 0)
        if scalar > 0:      # both reprice within the solvers' tolerance (1e-10 of the price)...
            assert bs_price(kind, SPOT, strike, t_years, float(solved[i])) == pytest.approx(prices[i], rel=1e-9)
            if bs_greeks(kind, SPOT, strike, t_years, scalar).vega > 1.0:    # ...and agree where vol is well defined
                assert float(solved[i]) == pytest.approx(scalar, rel=1e-7)


def test_a_price_no_vol_reaches_has_no_implied_vol():
    t_years = 7.0 / 365
    strikes = np.array([80_000.0, 80_000.0, 100_000.0, 100_000.0, 90_000.0])
    calls = np.array([True, True, False, True, False])
    prices = np.array([0.0,              # an empty book side
                       9_000.0,          # a call below its intrinsic (10,000)
                       9_999.0,          # a put below its intrinsic
                       SPOT + 1.0,       # a call above the index
                       -5.0])
    assert implied_vols(calls, prices, SPOT, strikes, t_years).tolist() == [0.0] * 5
    assert implied_vols(calls, np.full(5, 100.0), SPOT, strikes, 0.0).tolist() == [0.0] * 5


def test_one_option_is_priced_the_same_alone_or_in_a_chain():
    t_years = 3.0 / 365
    vols = smile_ivs(STRIKES, SPOT, 0.5, 0.5 * np.sqrt(t_years), curvature=0.8, skew=-0.15, iv_min=0.15, iv_max=3.0)
    whole = greeks(IS_CALL, SPOT, STRIKES, t_years, vols)
    prices = np.round(whole.price * 0.97, 0)
    solved = implied_vols(IS_CALL, prices, SPOT, STRIKES, t_years, 0.0, vols)
    for i in (0, 4, 13):
        alone = greeks(IS_CALL[i:i + 1], SPOT, STRIKES[i:i + 1], t_years, vols[i:i + 1])
        assert alone.price[0] == whole.price[i] and alone.delta[0] == whole.delta[i]
        assert implied_vols(IS_CALL[i:i + 1], prices[i:i + 1], SPOT, STRIKES[i:i + 1], t_years, 0.0,
                            vols[i:i + 1])[0] == solved[i]


def test_uniforms_are_a_pure_function_of_key_and_counter():
    keys = np.array([1, 2, 2**63 + 5], dtype=np.uint64)
    first = uniforms(keys, 17, 4)
    assert first.shape == (4, 3) and ((first >= 0) & (first < 1)).all()
    assert (uniforms(keys[1:2], 17, 4)[:, 0] == first[:, 1]).all()      # independent of its neighbours
    assert (uniforms(keys, 18, 4) != first).all()                        # a new bucket, new noise
    draws = uniforms(np.arange(20_000, dtype=np.uint64), 3, 1)[0]
    assert 0.49 < draws.mean() < 0.51 and draws.min() < 0.01 and draws.max() > 0.99
