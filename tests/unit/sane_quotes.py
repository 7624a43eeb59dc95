"""Believable prices for hand-built chain rows.

Leg selection skips rows the price sanity rule does not believe (BEHAVIOUR 3.1), so a fixture
whose every strike carries one made-up price would select nothing. ``fair_quote`` gives each
row its Black-Scholes value at the row's IV, with a spread that keeps both sides in the band.
"""
from __future__ import annotations

from price_sanity import black_scholes, time_to_expiry_years

MIN_MARK = 5.0


def fair_quote(option_type: str, strike: float, expiry_ms: int, underlying: float, now: float,
               iv: float = 0.5) -> tuple[float, float, float]:
    """(bid, ask, mark) of a believable row: the model value (at least ``MIN_MARK``) ± a spread
    of 5 % of it, between 0.5 and 20 USD."""
    t_years = time_to_expiry_years(expiry_ms, now)
    mark = max(MIN_MARK, round(black_scholes(option_type, underlying, float(strike), t_years, iv), 1))
    half_spread = max(0.5, min(0.05 * mark, 20.0))
    return mark - half_spread, mark + half_spread, mark
