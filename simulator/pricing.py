"""Black-Scholes prices, greeks and implied volatility for the simulated BTC options.

Why: the simulator must show a client what Coincall shows (API.md 6.2/6.3): a mark, an
``iv``, greeks per 1-BTC contract with theta and vega in USD, and ``bidIv``/``askIv``
for the book. Black-Scholes on the index (rate 0 by default, so the forward equals the
index) is the simplest model that makes all of these mutually consistent.

Units (all per 1 BTC of underlying, prices in USD):

* ``delta``  dV/dS
* ``gamma``  d2V/dS2 (per USD of index)
* ``vega``   USD per 1 vol point (IV +0.01)
* ``theta``  USD per calendar day (365-day year); negative for a long option
* ``rho``    USD per 1 percentage point of rate (+0.01)

Pure functions; no state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DAYS_PER_YEAR = 365.0
MS_PER_YEAR = DAYS_PER_YEAR * 86_400_000

# Below this total standard deviation an option is worth its (discounted) intrinsic value;
# it keeps d1/d2 finite in the last instants before expiry.
_MIN_STDDEV = 1e-12
_IV_LOW = 1e-4
_IV_HIGH = 20.0
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SQRT_2 = math.sqrt(2.0)
# Module-level bindings: these run ~10^6 times per simulated hour of a backtest.
_erfc = math.erfc
_exp = math.exp
_log = math.log
_sqrt = math.sqrt


@dataclass(frozen=True)
class Greeks:
    """Price and sensitivities of one option (per 1-BTC contract)."""

    price: float
    delta: float
    gamma: float
    vega: float
    theta: float
    rho: float


def years_between(start_ms: int, end_ms: int) -> float:
    """Time from ``start_ms`` to ``end_ms`` in 365-day years (0 if already past)."""
    return max(0.0, (end_ms - start_ms) / MS_PER_YEAR)


def norm_cdf(x: float) -> float:
    return 0.5 * _erfc(-x / _SQRT_2)


def norm_pdf(x: float) -> float:
    return _exp(-0.5 * x * x) / _SQRT_2PI


def _check_type(option_type: str) -> bool:
    """True for a call; raises for anything that is neither 'C' nor 'P'."""
    if option_type == "C":
        return True
    if option_type == "P":
        return False
    raise ValueError(f"option_type must be 'C' or 'P', got {option_type!r}")


def _intrinsic(is_call: bool, spot: float, strike: float, discount: float) -> float:
    forward_intrinsic = spot - strike * discount
    return max(0.0, forward_intrinsic) if is_call else max(0.0, -forward_intrinsic)


def bs_price(option_type: str, spot: float, strike: float, t_years: float, vol: float,
             rate: float = 0.0) -> float:
    """Black-Scholes value of a European option (USD per 1 BTC)."""
    is_call = _check_type(option_type)
    discount = math.exp(-rate * t_years) if t_years > 0 else 1.0
    stddev = vol * math.sqrt(t_years) if t_years > 0 and vol > 0 else 0.0
    if stddev < _MIN_STDDEV:
        return _intrinsic(is_call, spot, strike, discount)
    d1 = (math.log(spot / (strike * discount)) + 0.5 * stddev * stddev) / stddev
    d2 = d1 - stddev
    if is_call:
        return spot * norm_cdf(d1) - strike * discount * norm_cdf(d2)
    return strike * discount * norm_cdf(-d2) - spot * norm_cdf(-d1)


def bs_greeks(option_type: str, spot: float, strike: float, t_years: float, vol: float,
              rate: float = 0.0) -> Greeks:
    """Price and greeks in the units of the module docstring."""
    is_call = _check_type(option_type)
    discount = math.exp(-rate * t_years) if t_years > 0 else 1.0
    stddev = vol * math.sqrt(t_years) if t_years > 0 and vol > 0 else 0.0
    if stddev < _MIN_STDDEV:
        price = _intrinsic(is_call, spot, strike, discount)
        in_money = price > 0
        delta = (1.0 if is_call else -1.0) if in_money else 0.0
        return Greeks(price=price, delta=delta, gamma=0.0, vega=0.0, theta=0.0, rho=0.0)

    # Each normal CDF value is computed once and reused (the expressions are those of the
    # textbook formulas term for term, so every result is bit-for-bit what they give).
    sqrt_t = _sqrt(t_years)
    d1 = (_log(spot / (strike * discount)) + 0.5 * stddev * stddev) / stddev
    d2 = d1 - stddev
    pdf_d1 = _exp(-0.5 * d1 * d1) / _SQRT_2PI
    gamma = pdf_d1 / (spot * stddev)
    vega = spot * pdf_d1 * sqrt_t / 100.0
    decay = -spot * pdf_d1 * vol / (2.0 * sqrt_t)
    cdf_d1 = 0.5 * _erfc(-d1 / _SQRT_2)
    if is_call:
        cdf_d2 = 0.5 * _erfc(-d2 / _SQRT_2)
        price = spot * cdf_d1 - strike * discount * cdf_d2
        delta = cdf_d1
        theta_year = decay - rate * strike * discount * cdf_d2
        rho = strike * t_years * discount * cdf_d2 / 100.0
    else:
        cdf_minus_d2 = 0.5 * _erfc(d2 / _SQRT_2)
        price = strike * discount * cdf_minus_d2 - spot * (0.5 * _erfc(d1 / _SQRT_2))
        delta = cdf_d1 - 1.0
        theta_year = decay + rate * strike * discount * cdf_minus_d2
        rho = -strike * t_years * discount * cdf_minus_d2 / 100.0
    return Greeks(price=price, delta=delta, gamma=gamma, vega=vega,
                  theta=theta_year / DAYS_PER_YEAR, rho=rho)


def price_bounds(option_type: str, spot: float, strike: float, t_years: float,
                 rate: float = 0.0) -> tuple[float, float]:
    """No-arbitrage (lower, upper) bounds of an option price."""
    is_call = _check_type(option_type)
    discount = math.exp(-rate * t_years) if t_years > 0 else 1.0
    lower = _intrinsic(is_call, spot, strike, discount)
    upper = spot if is_call else strike * discount
    return lower, upper


def implied_vol(option_type: str, price: float, spot: float, strike: float, t_years: float,
                rate: float = 0.0, guess: float | None = None) -> float:
    """The volatility that reprices ``price``; 0.0 when no volatility can.

    0.0 is what the exchange shows for an empty book side, and it is also the honest
    answer for a price at or outside the no-arbitrage bounds (e.g. a bid below intrinsic)
    or an expired option: there is no volatility to report, so none is invented.
    """
    if price is None or not price > 0 or t_years <= 0 or spot <= 0 or strike <= 0:
        return 0.0
    is_call = _check_type(option_type)
    discount = _exp(-rate * t_years)
    lower = _intrinsic(is_call, spot, strike, discount)
    upper = spot if is_call else strike * discount
    if price <= lower or price >= upper:
        return 0.0
    # What does not depend on the volatility is computed once per solve, not once per step;
    # each term is the same expression as in bs_price/bs_greeks, so every iterate is too.
    sqrt_t = _sqrt(t_years)
    strike_discount = strike * discount
    log_moneyness = _log(spot / strike_discount)

    def price_at(vol: float) -> float:
        stddev = vol * sqrt_t
        if stddev < _MIN_STDDEV:
            return lower
        d1 = (log_moneyness + 0.5 * stddev * stddev) / stddev
        d2 = d1 - stddev
        if is_call:
            return spot * (0.5 * _erfc(-d1 / _SQRT_2)) - strike_discount * (0.5 * _erfc(-d2 / _SQRT_2))
        return strike_discount * (0.5 * _erfc(d2 / _SQRT_2)) - spot * (0.5 * _erfc(d1 / _SQRT_2))

    if price_at(_IV_HIGH) < price:
        return 0.0
    low, high = _IV_LOW, _IV_HIGH
    if price_at(low) > price:
        return 0.0  # needs a volatility below anything meaningful
    # Start Newton from a nearby volatility (e.g. the mark's) when the caller has one:
    # a bid/ask IV is then found in two or three steps instead of a dozen. A step needs
    # only the price and vega, not the full greeks.
    vol = guess if guess is not None and low < guess < high else 0.5
    tolerance = 1e-10 * price  # relative: cheap wings must be solved as precisely as ATM
    for _ in range(200):
        stddev = vol * sqrt_t
        if stddev < _MIN_STDDEV:
            model, vega_per_unit = lower, 0.0
        else:
            d1 = (log_moneyness + 0.5 * stddev * stddev) / stddev
            d2 = d1 - stddev
            if is_call:
                model = spot * (0.5 * _erfc(-d1 / _SQRT_2)) - strike_discount * (0.5 * _erfc(-d2 / _SQRT_2))
            else:
                model = strike_discount * (0.5 * _erfc(d2 / _SQRT_2)) - spot * (0.5 * _erfc(d1 / _SQRT_2))
            # Rounded through "USD per vol point" exactly as Greeks.vega is, then scaled back.
            vega_per_unit = spot * (_exp(-0.5 * d1 * d1) / _SQRT_2PI) * sqrt_t / 100.0 * 100.0
        error = model - price
        if abs(error) < tolerance:
            return vol
        if error > 0:
            high = vol
        else:
            low = vol
        candidate = vol - error / vega_per_unit if vega_per_unit > 1e-12 else -1.0
        # Newton when it stays inside the bracket, bisection otherwise: always converges.
        vol = candidate if low < candidate < high else 0.5 * (low + high)
        if high - low < 1e-12:
            break
    return vol
