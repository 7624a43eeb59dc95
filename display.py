"""Numbers and instants written for people: the status lines, the start-up summary, ``check``.

Display only: a value that is missing or not a finite number is shown as ``n/a``, never
invented, so a line never claims a figure the exchange did not give.
"""
from __future__ import annotations

from typing import Any

from api_values import finite_number
from clock import to_utc_datetime


def fmt(value: Any, digits: int = 2) -> str:
    """``65,000.00`` for a number (or numeric text), ``n/a`` for anything else."""
    number = finite_number(value)
    return "n/a" if number is None else f"{number:,.{digits}f}"


def fmt_time(epoch_seconds: float) -> str:
    """``2026-03-03 09:00:00Z``: an instant to the second, in UTC."""
    return to_utc_datetime(epoch_seconds).strftime("%Y-%m-%d %H:%M:%SZ")
