"""JSON text of rounded floats, the same characters as ``repr(round(value, places))`` at a third of the cost.

Why: a chain call writes about ten rounded numbers (implied vols, greeks, break-even) for
every strike of an expiry, and the backtests make about fourteen thousand chain calls a
simulated day. ``round`` and ``repr`` each run a correctly rounded decimal conversion;
fixed-point formatting runs one.

Why the texts agree: ``round(x, n)`` is the float nearest the decimal that ``f"{x:.{n}f}"``
writes (CPython rounds through that very conversion). A decimal of at most 15 significant
digits is the shortest text of its nearest float (doubles keep 15 digits apart), so
``repr`` of that float writes those digits, without the trailing zeros and with ``.0`` for a
whole number. ``repr`` switches to exponent notation below 1e-4 and from 1e16 up, and longer
decimals need not be shortest: outside ``[1e-4, 10 ** (15 - places))`` the built-in pair
answers (as it does for NaN and infinities). ``tests/unit/test_float_text.py`` compares the
two over random and edge values.
"""
from __future__ import annotations

# Below this magnitude repr writes an exponent (1e-4 itself is still positional).
_POSITIONAL_FLOOR = 1e-4
# Per number of places: the magnitude from which a fixed-point text has more than 15 digits.
_DIGITS_CEILING = tuple(10.0 ** (15 - places) for places in range(15))
# Per number of places: the fixed-point format spec (built once, not on every call).
_FIXED_SPECS = tuple(f".{places}f" for places in range(15))


def rounded_repr(value: float, places: int) -> str:
    """``repr(round(value, places))`` for 1 <= ``places`` <= 14 (with 0 places there is no point to trim to)."""
    magnitude = abs(value)
    if not (_POSITIONAL_FLOOR <= magnitude < _DIGITS_CEILING[places]):
        # Zero, exponent notation, or more than 15 digits: the built-in pair decides.
        return repr(round(value, places))
    text = format(value, _FIXED_SPECS[places]).rstrip("0")
    return text + "0" if text[-1] == "." else text


def money_repr(value: float) -> str:
    """The text of ``round(value, 8) + 0.0``: eight places, never ``-0.0``."""
    text = rounded_repr(value, 8)
    return "0.0" if text == "-0.0" else text
