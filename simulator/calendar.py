"""Expiry calendar and option symbols of the simulated Coincall exchange.

Why a module of its own: both the market model (what is listed) and the exchange
(what a client asked for, when it settles) must agree on one spelling of a symbol and
one notion of "expiry", and both rules are easy to get subtly wrong (API.md 5): the day
is *not* zero-padded, the year has two digits and every expiry is 08:00 UTC of the date.

Everything here is pure: functions of their arguments, no clock reads.
"""
from __future__ import annotations

import calendar as _stdlib_calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

EXPIRY_HOUR_UTC = 8
DAY_MS = 86_400_000
FRIDAY = 4  # datetime.weekday()

# How many expiries of each kind the exchange lists (API.md 4, "Expiry cycle").
DAILY_COUNT = 3
WEEKLY_COUNT = 3
MONTHLY_COUNT = 3
QUARTERLY_COUNT = 4
QUARTER_MONTHS = (3, 6, 9, 12)

# Longer-lived kinds win when one date qualifies for several (a quarterly Friday is also
# a monthly, a weekly and, two days before, a daily).
KIND_RANK = {"daily": 0, "weekly": 1, "monthly": 2, "quarterly": 3}
KINDS = tuple(KIND_RANK)

_DATE_TOKEN = re.compile(r"^(\d{1,2})([A-Z]{3})(\d{2})$")
_STRIKE_TOKEN = re.compile(r"^\d+(\.\d+)?$")
_BASE = re.compile(r"^[A-Z0-9]+$")


@dataclass(frozen=True)
class ParsedSymbol:
    """The parts of an option symbol; ``strike_token`` keeps the exact spelling for identity."""

    base: str
    expiry_ms: int
    strike: float
    strike_token: str
    option_type: str  # 'C' | 'P'


def expiry_ms_for_date(year: int, month: int, day: int) -> int:
    """08:00 UTC of a calendar date, in epoch milliseconds."""
    moment = datetime(year, month, day, EXPIRY_HOUR_UTC, tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1000


def _utc(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)


def date_token(expiry_ms: int) -> str:
    """``5FEB26`` for 2026-02-05: day without zero padding, upper-case month, 2-digit year."""
    moment = _utc(expiry_ms)
    return f"{moment.day}{MONTHS[moment.month - 1]}{moment.year % 100:02d}"


def format_strike(strike: float) -> str:
    """Integer strikes without ``.0`` (BTC); other strikes in their shortest exact form."""
    value = float(strike)
    if value <= 0 or value != value:
        raise ValueError(f"strike must be a positive number, got {strike!r}")
    if value.is_integer():
        return str(int(value))
    return repr(value)


def format_symbol(base: str, expiry_ms: int, strike: float, option_type: str) -> str:
    """``BTCUSD-5FEB26-80000-C`` from its parts."""
    if option_type not in ("C", "P"):
        raise ValueError(f"option_type must be 'C' or 'P', got {option_type!r}")
    if not _BASE.match(base or ""):
        raise ValueError(f"invalid base currency {base!r}")
    return f"{base}USD-{date_token(expiry_ms)}-{format_strike(strike)}-{option_type}"


def parse_symbol(symbol: str) -> ParsedSymbol:
    """Split a symbol into its parts; raises ``ValueError`` for anything not a valid option symbol.

    Accepts a 1- or 2-digit day because real symbols are not zero-padded but a padded
    spelling is still unambiguous.
    """
    if not isinstance(symbol, str):
        raise ValueError(f"symbol must be a string, got {type(symbol).__name__}")
    parts = symbol.split("-")
    if len(parts) != 4:
        raise ValueError(f"not an option symbol: {symbol!r}")
    pair, date_part, strike_token, option_type = parts
    if not pair.endswith("USD") or not _BASE.match(pair[:-3] or ""):
        raise ValueError(f"bad underlying in symbol {symbol!r}")
    match = _DATE_TOKEN.match(date_part)
    if not match:
        raise ValueError(f"bad date token in symbol {symbol!r}")
    day_text, month_text, year_text = match.groups()
    if month_text not in MONTHS:
        raise ValueError(f"bad month in symbol {symbol!r}")
    try:
        expiry_ms = expiry_ms_for_date(2000 + int(year_text), MONTHS.index(month_text) + 1, int(day_text))
    except ValueError as exc:  # e.g. 31FEB26
        raise ValueError(f"impossible date in symbol {symbol!r}") from exc
    if not _STRIKE_TOKEN.match(strike_token) or float(strike_token) <= 0:
        raise ValueError(f"bad strike in symbol {symbol!r}")
    if option_type not in ("C", "P"):
        raise ValueError(f"bad option type in symbol {symbol!r}")
    return ParsedSymbol(
        base=pair[:-3],
        expiry_ms=expiry_ms,
        strike=float(strike_token),
        strike_token=strike_token,
        option_type=option_type,
    )


def last_friday_ms(year: int, month: int) -> int:
    """08:00 UTC of the last Friday of a month."""
    last_day = _stdlib_calendar.monthrange(year, month)[1]
    moment = datetime(year, month, last_day, tzinfo=timezone.utc)
    back = (moment.weekday() - FRIDAY) % 7
    friday = moment - timedelta(days=back)
    return expiry_ms_for_date(friday.year, friday.month, friday.day)


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _first_expiry_instant_after(now_ms: int) -> datetime:
    """The first 08:00 UTC strictly after ``now_ms``."""
    moment = _utc(now_ms)
    candidate = moment.replace(hour=EXPIRY_HOUR_UTC, minute=0, second=0, microsecond=0)
    if int(candidate.timestamp() * 1000) <= now_ms:
        candidate += timedelta(days=1)
    return candidate


def _dailies(now_ms: int) -> list[int]:
    first = _first_expiry_instant_after(now_ms)
    return [int((first + timedelta(days=i)).timestamp()) * 1000 for i in range(DAILY_COUNT)]


def _weeklies(now_ms: int) -> list[int]:
    first = _first_expiry_instant_after(now_ms)
    first += timedelta(days=(FRIDAY - first.weekday()) % 7)
    return [int((first + timedelta(days=7 * i)).timestamp()) * 1000 for i in range(WEEKLY_COUNT)]


def _month_ends(now_ms: int, count: int, months: tuple[int, ...] | None) -> list[int]:
    """Last Fridays strictly after ``now_ms`` of the next ``count`` eligible months."""
    moment = _utc(now_ms)
    year, month = moment.year, moment.month
    found: list[int] = []
    while len(found) < count:
        if months is None or month in months:
            expiry = last_friday_ms(year, month)
            if expiry > now_ms:
                found.append(expiry)
        year, month = _next_month(year, month)
    return found


def raw_expiry_schedule(now_ms: int) -> list[tuple[int, str]]:
    """Every (expiry, kind) the exchange lists at ``now_ms``, before de-duplication.

    The market model uses this to give an expiry the strikes of every kind it currently
    qualifies for (a quarterly gets finer strikes once it is also this week's Friday).
    """
    entries = [(e, "daily") for e in _dailies(now_ms)]
    entries += [(e, "weekly") for e in _weeklies(now_ms)]
    entries += [(e, "monthly") for e in _month_ends(now_ms, MONTHLY_COUNT, None)]
    entries += [(e, "quarterly") for e in _month_ends(now_ms, QUARTERLY_COUNT, QUARTER_MONTHS)]
    return sorted(entries, key=lambda entry: (entry[0], KIND_RANK[entry[1]]))


def expiry_schedule(now_ms: int) -> list[tuple[int, str]]:
    """Sorted unique (expiry_ms, kind) listed at ``now_ms``; a date keeps its longest-lived kind.

    Dailies: the next 3 08:00 UTC instants strictly after now; weeklies: the next 3 Fridays;
    monthlies: the last Friday of the next 3 months (this month too if still ahead);
    quarterlies: the last Friday of the next 4 of Mar/Jun/Sep/Dec.
    """
    best: dict[int, str] = {}
    for expiry, kind in raw_expiry_schedule(now_ms):
        if expiry not in best or KIND_RANK[kind] > KIND_RANK[best[expiry]]:
            best[expiry] = kind
    return sorted(best.items())
