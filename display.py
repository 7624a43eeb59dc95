"""Numbers, quantities, instants and lengths of time written for people: the log, the status
lines, the start-up summary, ``check``.

Display only: a value that is missing or not a finite number is shown as ``n/a``, never
invented, so a line never claims a figure the exchange did not give. Every log line that
carries a figure goes through here, so an operator never reads ``27.023336469999997``, an
epoch number or a Python ``repr``.
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


def fmt_stamp(epoch_seconds: float) -> str:
    """``2026-03-03 09:00:00``: the time stamp that starts every log line (UTC, to the second).

    No zone letter: the stamp is always UTC, and in a simulated run the log says once at the
    start that its stamps are simulated time.
    """
    return to_utc_datetime(epoch_seconds).strftime("%Y-%m-%d %H:%M:%S")


def fmt_qty(value: Any) -> str:
    """``0.3``, ``-0.01``, ``1.25``: a quantity without float noise (``0.30000000000000004``)."""
    number = finite_number(value)
    if number is None:
        return "n/a"
    text = f"{number:.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def fmt_duration(seconds: float) -> str:
    """``45 s``, ``3 min 05 s``, ``2 h 07 min``, ``3 d 04 h``: a length of time for people."""
    total = finite_number(seconds)
    if total is None:
        return "n/a"
    whole = int(round(max(0.0, total)))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def fmt_value(value: Any) -> str:
    """One value for a log line: lists and tuples as ``a, b``, floats without noise, text as is."""
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return ", ".join(fmt_value(item) for item in items)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def fmt_fields(fields: Any) -> str:
    """``kind=x, symbols=A, B``: a mapping of details for a log line, with no Python reprs."""
    return "; ".join(f"{key}={fmt_value(value)}" for key, value in dict(fields).items())
