"""Reading Coincall's loosely typed numeric fields (API.md 0, 7.1: numbers may be JSON strings).

One lenient reader for every adapter of the product: a value the exchange sent as a number
or a numeric string becomes a float; anything absent, boolean, non-numeric or non-finite is
``None``, so callers decide explicitly what a missing value means (never a silent 0).
"""
from __future__ import annotations

import math
from typing import Any


def finite_number(raw: Any) -> float | None:
    """A finite float from a JSON number or numeric string; ``None`` if absent or unusable."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def int_or_none(raw: Any) -> int | None:
    """An exact integer (e.g. a 19-digit id) from a JSON integer or digit string; never via float."""
    if raw is None or isinstance(raw, (bool, float)):
        return None
    try:
        return int(str(raw).strip())
    except ValueError:
        return None
