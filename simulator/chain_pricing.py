"""Array versions of the simulator's smile, Black-Scholes greeks and implied volatility.

Why this module exists (issue 11): a chain call shows every strike of an expiry, and the
daemon reads a chain of every expiry it holds on every poll. Pricing one option at a time
in Python cost ~45 µs a side, more than half of a backtest's CPU. Here the same formulas as
``simulator.pricing`` run over all the strikes of one expiry at once (numpy, with scipy's
``erfc`` for the normal CDF): about 5 µs an option for a 74-option expiry, ~8x cheaper.

Every function is elementwise: an option's result never depends on which other strikes are
in the arrays (the implied-volatility solver freezes each element when it converges), so
a quote is the same whether one option or a whole chain was asked for. The results agree
with the scalar functions to floating-point rounding, not bit for bit.

Pure functions; no state.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import erfc

from simulator.pricing import DAYS_PER_YEAR, implied_vol

Array = np.ndarray

_MIN_STDDEV = 1e-12
_IV_LOW = 1e-4
_IV_HIGH = 20.0
_SQRT_2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_VOL_STEP_DONE = 1e-9       # a step this small ends the solve (IVs are shown to 6 decimals)
_VECTOR_STEPS = 5           # from the mark's vol nearly every option has converged by then

# splitmix64 constants (Steele, Lea and Flood): a counter-based generator, so the noise of
# one (symbol, bucket) is a pure function of its key and needs no generator object per book.
_GOLDEN = 0x9E3779B97F4A7C15
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_MASK_64 = (1 << 64) - 1


class GreekArrays(NamedTuple):
    """Price and greeks of every option of the arrays, in ``simulator.pricing``'s units."""

    price: Array
    delta: Array
    gamma: Array
    vega: Array
    theta: Array
    rho: Array


def _cdf(x: Array) -> Array:
    return 0.5 * erfc(-x / _SQRT_2)


def smile_ivs(strikes: Array, forward: float, atm: float, moneyness_scale: float, *, curvature: float,
              skew: float, iv_min: float, iv_max: float) -> Array:
    """SSVI implied vol of each strike (``MarketModel.surface_iv``), clamped to [iv_min, iv_max]."""
    z = curvature * np.log(strikes / forward) / moneyness_scale
    ratio = 0.5 * (1.0 + skew * z + np.sqrt((z + skew) ** 2 + 1.0 - skew * skew))
    return np.clip(atm * np.sqrt(ratio), iv_min, iv_max)


def greeks(is_call: Array, spot: float, strikes: Array, t_years: float, vols: Array,
           rate: float = 0.0) -> GreekArrays:
    """``pricing.bs_greeks`` for every option; an option with no time value is worth its intrinsic."""
    discount = math.exp(-rate * t_years) if t_years > 0 else 1.0
    sqrt_t = math.sqrt(t_years) if t_years > 0 else 0.0
    stddev = vols * sqrt_t
    live = stddev >= _MIN_STDDEV
    safe_stddev = np.where(live, stddev, 1.0)
    strike_discount = strikes * discount
    d1 = (np.log(spot / strike_discount) + 0.5 * safe_stddev * safe_stddev) / safe_stddev
    d2 = d1 - safe_stddev
    pdf_d1 = np.exp(-0.5 * d1 * d1) / _SQRT_2PI
    cdf_d1 = _cdf(d1)
    cdf_d2 = _cdf(d2)
    cdf_minus_d2 = 0.5 * erfc(d2 / _SQRT_2)
    cdf_minus_d1 = 0.5 * erfc(d1 / _SQRT_2)
    decay = -spot * pdf_d1 * vols / (2.0 * sqrt_t) if sqrt_t > 0 else np.zeros_like(vols)
    price = np.where(is_call, spot * cdf_d1 - strike_discount * cdf_d2,
                     strike_discount * cdf_minus_d2 - spot * cdf_minus_d1)
    delta = np.where(is_call, cdf_d1, cdf_d1 - 1.0)
    theta_year = np.where(is_call, decay - rate * strike_discount * cdf_d2,
                          decay + rate * strike_discount * cdf_minus_d2)
    rho = np.where(is_call, strikes * t_years * discount * cdf_d2 / 100.0,
                   -strikes * t_years * discount * cdf_minus_d2 / 100.0)
    gamma = pdf_d1 / (spot * safe_stddev)
    vega = spot * pdf_d1 * sqrt_t / 100.0
    if live.all():
        return GreekArrays(price, delta, gamma, vega, theta_year / DAYS_PER_YEAR, rho)
    intrinsic = _intrinsic(is_call, spot, strike_discount)
    dead_delta = np.where(intrinsic > 0, np.where(is_call, 1.0, -1.0), 0.0)
    zero = np.zeros_like(vols)
    return GreekArrays(np.where(live, price, intrinsic), np.where(live, delta, dead_delta),
                       np.where(live, gamma, zero), np.where(live, vega, zero),
                       np.where(live, theta_year / DAYS_PER_YEAR, zero), np.where(live, rho, zero))


def _intrinsic(is_call: Array, spot: float, strike_discount: Array) -> Array:
    forward_intrinsic = spot - strike_discount
    return np.where(is_call, np.maximum(0.0, forward_intrinsic), np.maximum(0.0, -forward_intrinsic))


def _model_and_vega(signs: Array, spot: float, strike_discount: Array, log_moneyness: Array,
                    sqrt_t: float, vols: Array) -> tuple[Array, Array, Array]:
    """Black-Scholes price, vega per unit of vol and ``d1 * d2 / vol`` (vomma over vega).

    ``signs`` is +1 for a call, -1 for a put.

    ``sign * (S N(sign d1) - K' N(sign d2))`` is the call or the put formula term for term
    (never put-call parity, which loses a cheap put's digits to cancellation).
    """
    stddev = vols * sqrt_t
    d1 = (log_moneyness + 0.5 * stddev * stddev) / stddev
    d2 = d1 - stddev
    model = signs * (spot * (0.5 * erfc(-signs * d1 / _SQRT_2))
                     - strike_discount * (0.5 * erfc(-signs * d2 / _SQRT_2)))
    vega = spot * (np.exp(-0.5 * d1 * d1) / _SQRT_2PI) * sqrt_t
    return model, vega, d1 * d2 / vols


def implied_vols(is_call: Array, prices: Array, spot: float, strikes: Array, t_years: float,
                 rate: float = 0.0, guesses: Array | None = None) -> Array:
    """``pricing.implied_vol`` for every option: 0.0 where no volatility reprices the price.

    0.0 is the exchange's value for an empty book side (a price of 0) and the honest answer
    for a price at or outside the no-arbitrage bounds. Halley steps from ``guesses`` (the
    marks' vols: two or three steps), bisection whenever a step would leave the bracket. Solve
    a chain's bids and asks in one call: the cost is per step, not per option. Results agree
    with the scalar solver within its tolerance (the price repriced to 1e-10 of itself).
    """
    result = np.zeros_like(prices, dtype=float)
    if t_years <= 0 or spot <= 0:
        return result
    discount = math.exp(-rate * t_years)
    strike_discount = strikes * discount
    lower = _intrinsic(is_call, spot, strike_discount)
    upper = np.where(is_call, spot, strike_discount)
    solvable = (prices > 0) & (strikes > 0) & (prices > lower) & (prices < upper)
    index = np.nonzero(solvable)[0]
    count = len(index)
    if not count:
        return result
    sqrt_t = math.sqrt(t_years)
    signs = np.where(is_call[index], 1.0, -1.0)
    target, sd = prices[index], strike_discount[index]
    log_moneyness = np.log(spot / sd)
    # Both ends of the bracket in one evaluation: a price no vol in [low, high] reaches has no IV.
    ends, _, _ = _model_and_vega(np.tile(signs, 2), spot, np.tile(sd, 2), np.tile(log_moneyness, 2), sqrt_t,
                                 np.repeat([_IV_HIGH, _IV_LOW], count))
    bracketed = (ends[:count] >= target) & (ends[count:] <= target)
    index, signs, target, sd, log_moneyness = (
        index[bracketed], signs[bracketed], target[bracketed], sd[bracketed], log_moneyness[bracketed])
    low = np.full(len(index), _IV_LOW)
    high = np.full(len(index), _IV_HIGH)
    start = guesses[index] if guesses is not None else np.full(len(index), 0.5)
    vol = np.where((start > low) & (start < high), start, 0.5)
    tolerance = 1e-10 * target
    moving = np.ones(len(index), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for step in range(_VECTOR_STEPS + 1):
            model, vega, curvature = _model_and_vega(signs, spot, sd, log_moneyness, sqrt_t, vol)
            error = model - target
            moving &= ~(np.abs(error) < tolerance)
            if step == _VECTOR_STEPS or not moving.any():
                break       # the last evaluation only checks the last step
            above = error > 0
            high = np.where(moving & above, vol, high)
            low = np.where(moving & ~above, vol, low)
            # Halley's step (vomma = vega * d1 * d2 / vol): cubic convergence from the mark's vol.
            halley = 2.0 * error * vega / (2.0 * vega * vega - error * vega * curvature)
            candidate = np.where(vega > 1e-12, vol - halley, -1.0)
            inside = (candidate > low) & (candidate < high)
            stepped = np.where(moving, np.where(inside, candidate, 0.5 * (low + high)), vol)
            # Also done: a step under 1e-9 of vol. A deep in-the-money option's price is mostly
            # intrinsic, and its relative tolerance is below the rounding of the formula itself,
            # so the price test alone would bisect it for dozens of steps to move the 12th digit.
            moving &= ((high - low) >= 1e-12) & (np.abs(stepped - vol) >= _VOL_STEP_DONE)
            vol = stepped
    active = np.nonzero(moving)[0]
    # The few still moving finish one at a time: a vector step costs the same for two options
    # as for a hundred.
    for position in active.tolist():
        vol[position] = implied_vol("C" if signs[position] > 0 else "P", float(target[position]), spot,
                                    float(sd[position] / discount), t_years, rate, guess=float(vol[position]))
    result[index] = vol
    return result


def uniforms(keys: Array, counter: int, count: int) -> Array:
    """``count`` uniform [0, 1) numbers per key for ``counter``: shape (count, len(keys)).

    A pure function of (key, counter): splitmix64 over ``key + counter * golden``. Used for
    the books' noise, where a per-book generator object cost more than the book's pricing.
    """
    state = keys + np.uint64((counter * _GOLDEN) & _MASK_64)
    out = np.empty((count, len(keys)))
    step = np.uint64(_GOLDEN)
    for row in range(count):
        state = state + step
        z = state
        z = (z ^ (z >> np.uint64(30))) * _MIX_1
        z = (z ^ (z >> np.uint64(27))) * _MIX_2
        z = z ^ (z >> np.uint64(31))
        out[row] = (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return out
