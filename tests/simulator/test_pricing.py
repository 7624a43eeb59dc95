"""Black-Scholes prices, greeks (Coincall units) and the implied-vol solver of the simulator."""
from __future__ import annotations

import math

import pytest

from simulator.pricing import (
    DAYS_PER_YEAR,
    bs_greeks,
    bs_price,
    implied_vol,
    price_bounds,
    years_between,
)

SPOT = 90_000.0
CASES = [  # (strike, years, vol, rate)
    (90_000.0, 7 / 365, 0.5, 0.0),
    (80_000.0, 30 / 365, 0.6, 0.0),
    (110_000.0, 0.5, 0.45, 0.03),
    (95_000.0, 1 / 365, 0.8, 0.0),
    (60_000.0, 0.25, 0.7, 0.05),
]


@pytest.mark.parametrize("strike,years,vol,rate", CASES)
def test_put_call_parity(strike: float, years: float, vol: float, rate: float) -> None:
    call = bs_price("C", SPOT, strike, years, vol, rate)
    put = bs_price("P", SPOT, strike, years, vol, rate)
    assert call - put == pytest.approx(SPOT - strike * math.exp(-rate * years), abs=1e-6)


@pytest.mark.parametrize("strike,years,vol,rate", CASES)
def test_greek_signs(strike: float, years: float, vol: float, rate: float) -> None:
    call = bs_greeks("C", SPOT, strike, years, vol, rate)
    put = bs_greeks("P", SPOT, strike, years, vol, rate)
    assert 0 < call.delta < 1 and -1 < put.delta < 0
    assert call.delta - put.delta == pytest.approx(1.0)
    assert call.gamma > 0 and put.gamma == pytest.approx(call.gamma)
    assert call.vega > 0 and put.vega == pytest.approx(call.vega)
    assert call.theta < 0                        # a long call always decays
    if rate == 0:
        assert put.theta < 0                     # so does a put when money earns nothing
    assert call.rho > 0 and put.rho < 0
    assert call.price == pytest.approx(bs_price("C", SPOT, strike, years, vol, rate))


@pytest.mark.parametrize("option_type", ["C", "P"])
@pytest.mark.parametrize("strike,years,vol,rate", CASES)
def test_greeks_match_finite_differences(option_type: str, strike: float, years: float,
                                         vol: float, rate: float) -> None:
    def price(spot: float = SPOT, t: float = years, v: float = vol, r: float = rate) -> float:
        return bs_price(option_type, spot, strike, t, v, r)

    greeks = bs_greeks(option_type, SPOT, strike, years, vol, rate)
    ds = 1.0
    assert greeks.delta == pytest.approx((price(SPOT + ds) - price(SPOT - ds)) / (2 * ds), abs=1e-6)
    assert greeks.gamma == pytest.approx(
        (price(SPOT + 10) - 2 * price() + price(SPOT - 10)) / 100, rel=1e-3, abs=1e-9)
    # vega: USD per 1 vol point (0.01)
    assert greeks.vega == pytest.approx((price(v=vol + 0.0001) - price(v=vol - 0.0001)) / 0.02, rel=1e-5)
    # theta: USD per calendar day, i.e. the value lost when one day less remains
    dt = 1e-5
    assert greeks.theta == pytest.approx(
        -(price(t=years + dt) - price(t=years - dt)) / (2 * dt) / DAYS_PER_YEAR, rel=1e-4)
    # rho: USD per 1 percentage point of rate
    assert greeks.rho == pytest.approx((price(r=rate + 0.0001) - price(r=rate - 0.0001)) / 0.02, rel=1e-5)


def test_one_day_atm_greeks_are_in_exchange_units() -> None:
    greeks = bs_greeks("C", SPOT, SPOT, 1 / 365, 0.5)
    # ATM price ~ 0.4 * S * vol * sqrt(T) ~ 940 USD; vega ~ price / (100 * vol); theta ~ -price / 2 per day
    assert greeks.price == pytest.approx(0.3989 * SPOT * 0.5 * math.sqrt(1 / 365), rel=0.01)
    assert greeks.vega == pytest.approx(greeks.price / 50, rel=0.01)
    assert greeks.theta == pytest.approx(-greeks.price / 2, rel=0.01)


def test_expired_or_zero_vol_option_is_worth_intrinsic() -> None:
    assert bs_price("C", SPOT, 80_000, 0.0, 0.5) == 10_000
    assert bs_price("P", SPOT, 80_000, 0.0, 0.5) == 0
    assert bs_price("P", SPOT, 95_000, 0.1, 0.0) == 5_000
    greeks = bs_greeks("P", SPOT, 95_000, 0.0, 0.5)
    assert (greeks.price, greeks.delta, greeks.gamma, greeks.vega, greeks.theta) == (5_000, -1.0, 0, 0, 0)


def test_tiny_time_to_expiry_stays_finite() -> None:
    greeks = bs_greeks("C", SPOT, 90_500, 1e-9, 0.5)
    assert all(math.isfinite(x) for x in (greeks.price, greeks.delta, greeks.gamma, greeks.vega, greeks.theta))


def test_bad_option_type_is_rejected() -> None:
    with pytest.raises(ValueError):
        bs_price("X", SPOT, SPOT, 0.1, 0.5)


@pytest.mark.parametrize("option_type", ["C", "P"])
@pytest.mark.parametrize("strike", [50_000.0, 80_000.0, 90_000.0, 100_000.0, 150_000.0])
@pytest.mark.parametrize("vol", [0.15, 0.5, 1.2, 2.9])
def test_implied_vol_round_trip(option_type: str, strike: float, vol: float) -> None:
    years = 20 / 365
    price = bs_price(option_type, SPOT, strike, years, vol)
    lower, upper = price_bounds(option_type, SPOT, strike, years)
    if price - lower < 1e-3:   # numerically no time value left: nothing to recover
        recovered = implied_vol(option_type, price, SPOT, strike, years)
        assert recovered == 0.0 or recovered == pytest.approx(vol, rel=1e-2)
        return
    assert implied_vol(option_type, price, SPOT, strike, years) == pytest.approx(vol, rel=1e-6)


def test_implied_vol_round_trip_with_rate() -> None:
    price = bs_price("P", SPOT, 85_000, 0.5, 0.55, 0.04)
    assert implied_vol("P", price, SPOT, 85_000, 0.5, 0.04) == pytest.approx(0.55, rel=1e-7)


@pytest.mark.parametrize("price", [0.0, -5.0, 9_999.0, 10_000.0, 90_000.0, 95_000.0])
def test_implied_vol_is_zero_outside_no_arbitrage_bounds(price: float) -> None:
    # call struck at 80k with spot 90k: bounds are (10_000, 90_000)
    assert implied_vol("C", price, SPOT, 80_000, 0.1) == 0.0


def test_implied_vol_is_zero_for_missing_price_or_expired_option() -> None:
    assert implied_vol("C", None, SPOT, 90_000, 0.1) == 0.0  # type: ignore[arg-type]
    assert implied_vol("C", 500.0, SPOT, 90_000, 0.0) == 0.0


def test_years_between_uses_a_365_day_year_and_never_goes_negative() -> None:
    assert years_between(0, 365 * 86_400_000) == pytest.approx(1.0)
    assert years_between(10, 5) == 0.0


def _newton_on_full_greeks(option_type: str, price: float, strike: float, years: float,
                           rate: float, guess: float) -> float:
    """The solver as first written (each step from ``bs_greeks``): the reference the
    price-and-vega-only solver must reproduce bit for bit, so no published IV moved."""
    low, high = 1e-4, 20.0
    lower, upper = price_bounds(option_type, SPOT, strike, years, rate)
    if not lower < price < upper or bs_price(option_type, SPOT, strike, years, high, rate) < price \
            or bs_price(option_type, SPOT, strike, years, low, rate) > price:
        return 0.0
    vol = guess
    for _ in range(200):
        greeks = bs_greeks(option_type, SPOT, strike, years, vol, rate)
        error = greeks.price - price
        if abs(error) < 1e-10 * price:
            return vol
        if error > 0:
            high = vol
        else:
            low = vol
        vega_per_unit = greeks.vega * 100.0
        candidate = vol - error / vega_per_unit if vega_per_unit > 1e-12 else -1.0
        vol = candidate if low < candidate < high else 0.5 * (low + high)
        if high - low < 1e-12:
            break
    return vol


@pytest.mark.parametrize("strike,years,vol,rate", CASES)
@pytest.mark.parametrize("option_type", ["C", "P"])
def test_implied_vol_iterates_exactly_as_a_full_greeks_newton(option_type: str, strike: float, years: float,
                                                                vol: float, rate: float) -> None:
    theo = bs_price(option_type, SPOT, strike, years, vol, rate)
    for price in (theo, theo * 0.93, theo * 1.07, float(math.floor(theo * 0.9)), float(math.ceil(theo * 1.1))):
        for guess in (vol, 0.5, 2.5):
            assert implied_vol(option_type, price, SPOT, strike, years, rate, guess=guess) == \
                _newton_on_full_greeks(option_type, price, strike, years, rate, guess)
