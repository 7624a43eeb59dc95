"""Entry and exit conditions of CoincallTrader (BEHAVIOUR.md section 2).

Why one module: ``strategy`` and ``trade_lifecycle`` both re-export these factories, and they
must be the *same* objects, so they live here and nowhere else.

Every factory validates its arguments when it is called (a bad strategy file fails at
construction, before any request) and returns a small frozen, callable object with

* ``kind``  - ``"entry"`` (called as ``cond(snapshot)``) or ``"exit"`` (``cond(snapshot, trade)``);
* ``name``  - e.g. ``"profit_target(usd=50.0, mode=fair)"``; an exit's name becomes the exit reason;
* ``validate_at_start(now)`` - checks that need the clock (a ``utc_datetime_exit`` already in the
  past); the runner calls it when it starts;
* ``max_leg_index`` - the highest leg index the condition refers to (``None`` = no specific leg), so
  ``StrategyConfig`` can refuse ``leg_greek_limit(..., leg=3)`` on a two-leg strategy.

"Now" is always the ``timestamp`` of the snapshot being evaluated, never the wall clock: the same
snapshot gives the same answer, in production, in a replay and in a test.

The module also holds what the runner needs to *use* conditions safely: ``check_condition`` (the
``inspect.signature`` check of BEHAVIOUR.md §2.1, incident 21), and ``evaluate_entry`` / ``evaluate_exit``
/ ``judge_exit`` with ``ConditionHealth`` (errors never pass silently, incident 22).

Underlyings (issue 13): no condition reads an index or a chain itself. What a trade condition
reads (its PnL, its legs' greeks, the structure delta) comes from the legs' own quotes, and
every leg is quoted from its own underlying's chain, so an ETH trade is judged on ETH data.
The account-level conditions (``max_account_delta``, ``account_delta_limit``, margin, equity)
read the account snapshot and stay account-wide: the account's net delta adds the deltas of
every position, whatever its underlying.

The PnL of a trade is computed by the trade (``trade.pnl(mode)``, BEHAVIOUR.md §2.3); conditions only
compare it. ``trade.pnl`` raising ``StaleDataError`` means "unevaluable this tick": the PnL
condition lets it propagate so that ``judge_exit`` can report ``ExitVerdict.UNEVALUABLE`` (the
lifecycle tracks how long PnL exits stay unevaluable) and ``evaluate_exit`` returns False.
"""
from __future__ import annotations

import dataclasses

import inspect
import logging
import math
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any, Callable, ClassVar, Iterable, Protocol, Sequence

from clock import to_utc_datetime
from contracts import UNDERLYINGS, Side, parse_symbol, underlying_of
from errors import ConfigError, StaleDataError
from validation import invalid, is_int, is_number

logger = logging.getLogger(__name__)

ENTRY = "entry"
EXIT = "exit"
CONDITION_KINDS: tuple[str, ...] = (ENTRY, EXIT)

VALUATION_MODES: tuple[str, ...] = ("mark", "mid", "fair", "executable")
DEFAULT_VALUATION_MODE = "fair"
# Stop-type exits must fire on this many consecutive sane snapshots before a loss is realised.
STOP_CONFIRMATIONS = 2
GREEKS: tuple[str, ...] = ("delta", "gamma", "vega", "theta", "rho")
GREEK_SCALES: tuple[str, ...] = ("contract", "position")

# Consecutive failures of one condition before a health warning (BEHAVIOUR.md §2.1).
DEFAULT_FAILURE_THRESHOLD = 3

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_WEEKDAYS: tuple[str, ...] = (
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
)
_WEEKDAY_NUMBERS: dict[str, int] = {
    **{short: number for number, short in enumerate(WEEKDAYS)},
    **{full: number for number, full in enumerate(_FULL_WEEKDAYS)},
}

# An exact position symbol: an option (contracts.parse_symbol, API.md section 5) or a perpetual.
_PERPETUAL_SYMBOL = re.compile(r"^[A-Z0-9]+USD$")


# --------------------------------------------------------------------------------------------
# What conditions read (duck-typed; the account snapshot and the trade implement these).
# --------------------------------------------------------------------------------------------


class PositionLike(Protocol):
    @property
    def symbol(self) -> str: ...

    @property
    def qty(self) -> float: ...

    @property
    def delta(self) -> float: ...   # the position's delta (a perp's: its signed quantity)

    @property
    def missing_greeks(self) -> tuple[str, ...]: ...   # greeks the exchange did not send (counted as 0)


class SnapshotLike(Protocol):
    """The parts of an ``AccountSnapshot`` a condition may read."""

    @property
    def timestamp(self) -> float: ...  # epoch seconds, UTC

    @property
    def equity(self) -> float: ...

    @property
    def available_margin(self) -> float: ...

    @property
    def initial_margin(self) -> float: ...

    @property
    def net_delta(self) -> float: ...

    @property
    def positions(self) -> Sequence[PositionLike]: ...


class LegLike(Protocol):
    """The parts of a trade leg a condition may read."""

    @property
    def index(self) -> int: ...

    @property
    def side(self) -> Side: ...  # BUY: a long leg, SELL: a short one

    @property
    def net_qty(self) -> float: ...  # our quantity, a magnitude

    @property
    def is_perpetual(self) -> bool: ...  # a perp leg (a hedge's, or a ``perp()`` leg): delta 1, no other greek

    def greek(self, name: str) -> float | None: ...  # per contract of 1 unit of its underlying, last quote; None if stale


class TradeLike(Protocol):
    """The parts of a ``TradeLifecycle`` a condition may read."""

    @property
    def opened_at(self) -> float | None: ...

    @property
    def entry_premium(self) -> float: ...

    @property
    def legs(self) -> Sequence[LegLike]: ...

    def pnl(self, mode: str) -> float: ...  # raises StaleDataError when unevaluable

    def structure_delta(self) -> float: ...


# --------------------------------------------------------------------------------------------
# Argument validation: validation.invalid's one message shape, with the rule the value broke
# ("max_loss.usd = 0 is invalid: must be > 0. Fix: max_loss(100)").
# --------------------------------------------------------------------------------------------


def _number(
    factory: str,
    argument: str,
    value: Any,
    *,
    minimum: float,
    strictly_above: bool = False,
    maximum: float | None = None,
    fix: str,
) -> float:
    """A finite real number within bounds, returned as float; bool is not a number here."""
    if not is_number(value):
        real = isinstance(value, (int, float)) and not isinstance(value, bool)   # so: not finite
        raise invalid(factory, argument, value, rule="must be finite" if real else "must be a number", fix=fix)
    if strictly_above and value <= minimum:
        raise invalid(factory, argument, value, rule=f"must be > {minimum:g}", fix=fix)
    if not strictly_above and value < minimum:
        raise invalid(factory, argument, value, rule=f"must be >= {minimum:g}", fix=fix)
    if maximum is not None and value > maximum:
        raise invalid(factory, argument, value, rule=f"must be <= {maximum:g}", fix=fix)
    return float(value)


def _integer(factory: str, argument: str, value: Any, low: int, high: int, fix: str) -> int:
    """An int (not bool, not float) in ``[low, high]``."""
    if not is_int(value):
        raise invalid(factory, argument, value, rule=f"must be an int from {low} to {high}", fix=fix)
    if not low <= value <= high:
        raise invalid(factory, argument, value, rule=f"must be from {low} to {high}", fix=fix)
    return value


def _choice(factory: str, argument: str, value: Any, allowed: tuple[str, ...], fix: str) -> str:
    """One of ``allowed``, any case; returned lower-cased."""
    if isinstance(value, str) and value.strip().lower() in allowed:
        return value.strip().lower()
    raise invalid(factory, argument, value, rule=f"must be one of {', '.join(allowed)}", fix=fix)


def _percentage(factory: str, argument: str, value: Any, fraction: Any, *, minimum: float,
                strictly_above: bool = False, maximum: float | None = None, example: float) -> float:
    """A percentage written in percent (30 means 30 %), or as a fraction when ``fraction=True``.

    Why: ``profit_target_pct(0.3)`` meant as 30 % silently becomes 0.3 %, a target reached by
    the first tick of noise (issue 9). A value strictly between 0 and 1 is therefore refused
    unless the strategy says explicitly that it writes fractions; 0 stays allowed where it
    means something (``min_available_margin_pct(0)``). The value is returned in percent, so
    the condition's ``name`` always shows percent (``pct=30.0``).
    """
    if not isinstance(fraction, bool):
        raise invalid(factory, "fraction", fraction, rule="must be True or False",
                      fix=f"leave it out (percent, {factory}({example:g}) is {example:g} %) or pass fraction=True "
                          f"to write {example / 100:g} for {example:g} %")
    if fraction:
        high = None if maximum is None else maximum / 100.0
        as_fraction = _number(factory, argument, value, minimum=minimum / 100.0, strictly_above=strictly_above,
                              maximum=high, fix=f"with fraction=True write {example / 100:g} for {example:g} %")
        return round(as_fraction * 100.0, 9)
    percent = _number(factory, argument, value, minimum=minimum, strictly_above=strictly_above, maximum=maximum,
                      fix=f"give a percentage, e.g. {factory}({example:g}) for {example:g} %")
    if 0.0 < percent < 1.0:
        scaled = round(percent * 100.0, 9)
        raise invalid(
            factory, argument, value,
            rule=f"percentages are written in percent ({scaled:g} means {scaled:g} %), so {value!r} would mean "
                 f"{value!r} %, less than one percent",
            fix=f"write {factory}({scaled:g}) for {scaled:g} %, or {factory}({value!r}, fraction=True) to mark "
                f"{value!r} as a fraction (a true {value!r} % is {factory}({percent / 100.0:g}, fraction=True))")
    return percent


def _confirmations(factory: str, value: Any) -> int:
    return _integer(factory, "confirmations", value, 1, 20,
                    f"give how many consecutive sane snapshots must agree, e.g. {factory}(..., confirmations=2)")


def _without_default_confirmations(condition: Any) -> Sequence[tuple[str, Any]]:
    """Name arguments without ``confirmations`` at its default, so exit reasons stay short."""
    return tuple((f.name, getattr(condition, f.name)) for f in dataclasses.fields(condition)
                 if f.name != "confirmations" or getattr(condition, f.name) != STOP_CONFIRMATIONS)


def _mode(factory: str, mode: Any) -> str:
    return _choice(
        factory, "mode", mode, VALUATION_MODES,
        f'use one of {", ".join(VALUATION_MODES)} (default "{DEFAULT_VALUATION_MODE}")',
    )


def _as_utc_datetime(factory: str, argument: str, value: Any, fix: str) -> datetime:
    """A datetime in UTC: naive means UTC, aware is converted."""
    if not isinstance(value, datetime):
        raise invalid(factory, argument, value, rule="must be a datetime.datetime", fix=fix)
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _is_utc_tzinfo(value: time) -> bool:
    """True for a time of day that is naive or explicitly UTC (offset 0 or a UTC zone)."""
    if value.tzinfo is None:
        return True
    if getattr(value.tzinfo, "key", None) in ("UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu"):
        return True
    return value.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------------------------
# Small shared helpers.
# --------------------------------------------------------------------------------------------


def _format_value(value: Any) -> str:
    """Render an argument for a condition name: no quotes, floats as floats."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_format_value(item) for item in value) + "]"
    return str(value)


def _now(snapshot: SnapshotLike) -> float:
    """The decision time: the snapshot's timestamp (never the wall clock)."""
    stamp = getattr(snapshot, "timestamp", None)
    if stamp is None or isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        raise StaleDataError(f"snapshot has no usable timestamp ({stamp!r})")
    return float(stamp)


def _pnl(trade: TradeLike, mode: str) -> float:
    """``trade.pnl(mode)``; a non-finite value is as unevaluable as a stale one."""
    value = trade.pnl(mode)
    if not is_number(value):
        raise StaleDataError(f"trade pnl({mode}) is not a finite number: {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# Base classes.
# --------------------------------------------------------------------------------------------


class Condition:
    """Common face of every factory-made condition (frozen dataclass subclasses)."""

    kind: ClassVar[str]
    factory: ClassVar[str]
    max_leg_index: ClassVar[int | None] = None
    # Declared for the type checker: every concrete condition is a @dataclass, which sets it.
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def _name_arguments(self) -> Sequence[tuple[str, Any]]:
        """The factory's arguments as shown in ``name``: by default the dataclass fields."""
        return tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))

    @property
    def name(self) -> str:
        arguments = ", ".join(f"{key}={_format_value(value)}" for key, value in self._name_arguments())
        return f"{self.factory}({arguments})"

    def validate_at_start(self, now: float) -> None:
        """Clock-dependent checks, run by the runner at start; most conditions have none."""

    def __repr__(self) -> str:
        return f"<{self.kind} condition {self.name}>"

    def __str__(self) -> str:
        return self.name


class EntryCondition(Condition):
    """``cond(snapshot) -> bool``: may a new trade open now?"""

    kind: ClassVar[str] = ENTRY
    # Reads account-wide figures (equity, margin, delta, positions): the runner judges such a
    # rule only on a snapshot that shows every trade the daemon has opened (BEHAVIOUR.md 5,
    # gate 10), since one taken before another strategy's entry would pass an account that is gone.
    reads_account: ClassVar[bool] = False

    def __call__(self, snapshot: SnapshotLike) -> bool:
        return bool(self._passes(snapshot))

    def _passes(self, snapshot: SnapshotLike) -> bool:
        raise NotImplementedError


class ExitCondition(Condition):
    """``cond(snapshot, trade) -> bool``: should this open trade close now?

    ``confirmations`` is how many consecutive evaluations (each on its own sane snapshot) must
    fire before the lifecycle acts: 1 for most exits; stop-type exits (``max_loss*``) default
    to 2, so a single glitched quote can never realise a loss the market did not have.
    """

    kind: ClassVar[str] = EXIT
    confirmations: int = 1

    def __call__(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        return bool(self._fires(snapshot, trade))

    def _fires(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        raise NotImplementedError

    def progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        """How close this rule is to firing: ``(fraction, detail)``, for people (the operator view).

        ``fraction`` is 0 when far, 1 when the rule fires now (clamped to ``[0, 1]``), None when
        it cannot be said; ``detail`` says why in words. Why it never raises: the view is built
        on the monitor thread every poll, and a rule that cannot be judged (stale quotes, a
        trade not open yet) must show as unknown, never break the view or pass for "far".
        Display only: the lifecycle decides exits with ``__call__``, never with this.
        """
        try:
            return self._progress(snapshot, trade)
        except StaleDataError:
            return None, "unevaluable: stale quotes"
        except Exception as error:  # noqa: BLE001 - a display figure never raises
            return None, f"unevaluable: {type(error).__name__}: {error}"

    def _progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        return None, "how close this rule is to firing is not measured"


def _fraction(value: float, limit: float) -> float:
    """``value / limit`` clamped to ``[0, 1]``; a zero limit is reached by any positive value."""
    if limit <= 0:
        return 1.0 if value > 0 else 0.0
    return min(1.0, max(0.0, value / limit))


def _elapsed_progress(start: float | None, deadline: float, now: float, what: str) -> tuple[float | None, str]:
    """Elapsed share of ``start`` → ``deadline`` (a trade's time exits), with the time left in words."""
    if start is None:
        return None, "not open yet"
    left = deadline - now
    fraction = _fraction(now - start, deadline - start) if deadline > start else 1.0
    if left <= 0:
        return fraction, f"{what} reached"
    return fraction, f"{left / 3600.0:.2f} h left until {what}"


def exit_progress(cond: Any, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
    """``progress`` of any exit rule: a factory-made one measures itself, a plain function cannot.

    Never raises, like ``ExitCondition.progress``.
    """
    if isinstance(cond, ExitCondition):
        return cond.progress(snapshot, trade)
    return None, "a custom rule: how close it is to firing cannot be said"


# --------------------------------------------------------------------------------------------
# Entry conditions (BEHAVIOUR.md §2.2).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class TimeWindow(EntryCondition):
    start_hour: int
    end_hour: int
    factory: ClassVar[str] = "time_window"

    def _passes(self, snapshot: SnapshotLike) -> bool:
        hour = to_utc_datetime(_now(snapshot)).hour
        if self.start_hour < self.end_hour:
            return self.start_hour <= hour < self.end_hour
        return hour >= self.start_hour or hour < self.end_hour  # wraps midnight


def time_window(start_hour: int, end_hour: int) -> TimeWindow:
    """Pass while the UTC hour h of now is in ``[start_hour, end_hour)``; wraps midnight if start > end."""
    fix = "give whole UTC hours, e.g. time_window(9, 17) or time_window(22, 2) across midnight"
    start = _integer("time_window", "start_hour", start_hour, 0, 23, fix)
    end = _integer("time_window", "end_hour", end_hour, 0, 24, fix)
    if start == end:
        raise invalid("time_window", "end_hour", end_hour,
                      rule=f"must differ from start_hour={start} (the window would be empty)", fix=fix)
    return TimeWindow(start, end)


@dataclass(frozen=True, repr=False)
class UtcTimeWindow(EntryCondition):
    """A daily ``[start, end)`` on the UTC time of day, or an absolute ``[start, end)``."""

    start: time | datetime
    end: time | datetime
    factory: ClassVar[str] = "utc_time_window"


    @property
    def is_absolute(self) -> bool:
        return isinstance(self.start, datetime)

    def _passes(self, snapshot: SnapshotLike) -> bool:
        now = to_utc_datetime(_now(snapshot))
        if isinstance(self.start, datetime) and isinstance(self.end, datetime):
            return self.start <= now < self.end
        of_day = now.time()  # naive UTC time of day
        start, end = _naive(self.start), _naive(self.end)
        if start < end:
            return start <= of_day < end
        return of_day >= start or of_day < end  # wraps midnight

    def validate_at_start(self, now: float) -> None:
        """An absolute window that has already ended can never pass (incident 41)."""
        if isinstance(self.end, datetime) and self.end <= to_utc_datetime(now):
            raise invalid("utc_time_window", "end", self.end.isoformat(),
                          rule=f"it is already in the past (now {to_utc_datetime(now).isoformat()})",
                          fix="give a future window, or a daily window with datetime.time values")


def _naive(value: time | datetime) -> time:
    return value.replace(tzinfo=None) if isinstance(value, time) else value.time()


def utc_time_window(start: time | datetime, end: time | datetime) -> UtcTimeWindow:
    """Daily window for ``datetime.time`` values (UTC), absolute window for ``datetime`` values."""
    factory = "utc_time_window"
    fix = ("pass two datetime.time values (daily, UTC) or two datetime.datetime values (absolute), "
           "e.g. utc_time_window(time(9, 30), time(16, 0))")
    if isinstance(start, datetime) and isinstance(end, datetime):
        start_utc = _as_utc_datetime(factory, "start", start, fix)
        end_utc = _as_utc_datetime(factory, "end", end, fix)
        if end_utc <= start_utc:
            raise invalid(factory, "end", end, rule=f"must be after start={start_utc.isoformat()}", fix=fix)
        return UtcTimeWindow(start_utc, end_utc)
    for argument, value in (("start", start), ("end", end)):
        if not isinstance(value, (time, datetime)):
            raise invalid(factory, argument, value, rule="must be a datetime.time or datetime.datetime", fix=fix)
    if isinstance(start, datetime) or isinstance(end, datetime):
        raise invalid(factory, "end", end, rule=f"must be the same type as start={start!r}", fix=fix)
    for argument, value in (("start", start), ("end", end)):
        if not _is_utc_tzinfo(value):
            raise invalid(factory, argument, value, rule="a time of day must be naive or UTC",
                          fix="express the window in UTC (all times are UTC)")
    if _naive(start) == _naive(end):
        raise invalid(factory, "end", end, rule="must differ from start (the window would be empty)", fix=fix)
    return UtcTimeWindow(_naive(start), _naive(end))


@dataclass(frozen=True, repr=False)
class WeekdayFilter(EntryCondition):
    days: tuple[int, ...]  # 0 = Monday ... 6 = Sunday, sorted, unique
    factory: ClassVar[str] = "weekday_filter"

    def _name_arguments(self) -> Sequence[tuple[str, Any]]:
        return (("days", tuple(WEEKDAYS[day] for day in self.days)),)

    def _passes(self, snapshot: SnapshotLike) -> bool:
        return to_utc_datetime(_now(snapshot)).weekday() in self.days


def weekday_filter(days: Iterable[str] | str) -> WeekdayFilter:
    """Pass on the listed UTC weekdays (``"mon"``..``"sun"`` or full names, any case)."""
    factory = "weekday_filter"
    fix = 'list weekdays such as ["mon", "tue"] or ["Monday"]'
    items = [days] if isinstance(days, str) else days
    try:
        names = list(items)
    except TypeError:
        raise invalid(factory, "days", days, rule="must be a list of weekday names", fix=fix) from None
    if not names:
        raise invalid(factory, "days", days, rule="must not be empty", fix=fix)
    unknown = [name for name in names if not isinstance(name, str) or name.strip().lower() not in _WEEKDAY_NUMBERS]
    if unknown:
        raise invalid(factory, "days", days,
                      rule=f"unknown weekday name(s) {', '.join(repr(name) for name in unknown)}", fix=fix)
    numbers = sorted({_WEEKDAY_NUMBERS[name.strip().lower()] for name in names})
    return WeekdayFilter(tuple(numbers))


@dataclass(frozen=True, repr=False)
class MinAvailableMarginPct(EntryCondition):
    pct: float
    factory: ClassVar[str] = "min_available_margin_pct"
    reads_account: ClassVar[bool] = True

    def _passes(self, snapshot: SnapshotLike) -> bool:
        equity = float(snapshot.equity)
        return equity > 0 and float(snapshot.available_margin) / equity * 100.0 >= self.pct


def min_available_margin_pct(pct: float, *, fraction: bool = False) -> MinAvailableMarginPct:
    """Pass when equity > 0 and available margin is at least ``pct`` % of equity.

    ``pct`` is in percent (50 means 50 %); ``fraction=True`` reads it as a fraction (0.5).
    """
    return MinAvailableMarginPct(_percentage("min_available_margin_pct", "pct", pct, fraction,
                                             minimum=0, maximum=100, example=50))


@dataclass(frozen=True, repr=False)
class MinEquity(EntryCondition):
    usd: float
    factory: ClassVar[str] = "min_equity"
    reads_account: ClassVar[bool] = True

    def _passes(self, snapshot: SnapshotLike) -> bool:
        return float(snapshot.equity) >= self.usd


def min_equity(usd: float) -> MinEquity:
    """Pass when account equity is at least ``usd``."""
    return MinEquity(_number("min_equity", "usd", usd, minimum=0,
                             fix="give a USD amount >= 0, e.g. min_equity(1000)"))


def _account_delta(snapshot: SnapshotLike, underlying: str | None) -> float:
    """The account's net delta (options and perpetuals: a perp's delta is its signed quantity),
    or only ``underlying``'s positions when a condition names one (issue 13).

    StaleDataError when a position it adds came without its delta: the snapshot counts it as
    0 (so PnL exits still run), but a delta gate on that 0 would pass an account it cannot
    see, so the gate is unevaluable instead (an entry is refused, an exit waits) until the
    exchange sends the delta again.
    """
    counted = [p for p in snapshot.positions if underlying is None or underlying_of(p.symbol) == underlying]
    unknown = sorted(p.symbol for p in counted if "delta" in p.missing_greeks and p.qty)
    if unknown:
        raise StaleDataError(f"account delta unknown: the exchange sent no delta for {', '.join(unknown)}")
    if underlying is None:
        return float(snapshot.net_delta)
    return math.fsum(float(p.delta) for p in counted)


def _check_delta_underlying(factory: str, underlying: Any) -> str | None:
    if underlying is None:
        return None
    if not isinstance(underlying, str) or underlying not in UNDERLYINGS:
        raise invalid(factory, "underlying", underlying,
                      fix=f"use one of {', '.join(repr(u) for u in UNDERLYINGS)} (upper case), or leave it out "
                          f"for the whole account")
    return underlying


class _UnderlyingNamed:
    """Conditions whose ``underlying`` shows in their name only when one is named."""

    def _name_arguments(self) -> Sequence[tuple[str, Any]]:
        return tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                     if not (f.name == "underlying" and getattr(self, f.name) is None))


@dataclass(frozen=True, repr=False)
class MaxAccountDelta(_UnderlyingNamed, EntryCondition):
    limit: float
    underlying: str | None = None
    factory: ClassVar[str] = "max_account_delta"
    reads_account: ClassVar[bool] = True

    def _passes(self, snapshot: SnapshotLike) -> bool:
        return abs(_account_delta(snapshot, self.underlying)) <= self.limit


def max_account_delta(limit: float, *, underlying: str | None = None) -> MaxAccountDelta:
    """Pass when the account's absolute net delta (options and perps; only ``underlying``'s
    positions when given) is at most ``limit``."""
    return MaxAccountDelta(_number("max_account_delta", "limit", limit, minimum=0,
                                   fix="give a delta limit >= 0, e.g. max_account_delta(0.5)"),
                           _check_delta_underlying("max_account_delta", underlying))


@dataclass(frozen=True, repr=False)
class MaxMarginUtilization(EntryCondition):
    pct: float
    factory: ClassVar[str] = "max_margin_utilization"
    reads_account: ClassVar[bool] = True

    def _passes(self, snapshot: SnapshotLike) -> bool:
        equity = float(snapshot.equity)
        return equity > 0 and float(snapshot.initial_margin) / equity * 100.0 <= self.pct


def max_margin_utilization(pct: float, *, fraction: bool = False) -> MaxMarginUtilization:
    """Pass when equity > 0 and initial margin is at most ``pct`` % of equity.

    ``pct`` is in percent (60 means 60 %); ``fraction=True`` reads it as a fraction (0.6).
    """
    return MaxMarginUtilization(_percentage("max_margin_utilization", "pct", pct, fraction,
                                            minimum=0, maximum=100, example=60))


@dataclass(frozen=True, repr=False)
class NoExistingPositionIn(EntryCondition):
    symbols: tuple[str, ...]  # exact symbols or fnmatch patterns
    factory: ClassVar[str] = "no_existing_position_in"
    reads_account: ClassVar[bool] = True

    def _passes(self, snapshot: SnapshotLike) -> bool:
        for position in snapshot.positions:
            if abs(float(position.qty)) > 0 and self.matches(position.symbol):
                return False
        return True

    def matches(self, symbol: str) -> bool:
        return any(fnmatchcase(symbol, pattern) for pattern in self.symbols)


def _is_pattern(entry: str) -> bool:
    return "*" in entry or "?" in entry


def _is_option_symbol(entry: str) -> bool:
    """An exact option symbol, written as the exchange writes it (upper case)."""
    try:
        parse_symbol(entry)
    except ValueError:
        return False
    return entry == entry.upper()


def no_existing_position_in(symbols: Iterable[str] | str) -> NoExistingPositionIn:
    """Pass when no held position matches any of ``symbols`` (exact symbols or fnmatch patterns)."""
    factory = "no_existing_position_in"
    fix = 'list exact symbols ("BTCUSD-27MAR26-100000-C") or patterns with * or ? ("BTCUSD-*-P")'
    items = [symbols] if isinstance(symbols, str) else symbols
    try:
        entries = list(items)
    except TypeError:
        raise invalid(factory, "symbols", symbols, rule="must be a list of symbols or patterns", fix=fix) from None
    if not entries:
        raise invalid(factory, "symbols", symbols, rule="must not be empty", fix=fix)
    unusable = [
        entry for entry in entries
        if not isinstance(entry, str) or not entry or any(ch.isspace() for ch in entry)
        or not (_is_pattern(entry) or _is_option_symbol(entry) or _PERPETUAL_SYMBOL.match(entry))
    ]
    if unusable:
        raise invalid(factory, "symbols", symbols,
                      rule=f"not a symbol or pattern: {', '.join(repr(entry) for entry in unusable)} "
                           f"(symbols are upper case, day not zero-padded)", fix=fix)
    return NoExistingPositionIn(tuple(dict.fromkeys(entries)))


# --------------------------------------------------------------------------------------------
# Exit conditions (BEHAVIOUR.md §2.4).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ProfitTarget(ExitCondition):
    usd: float
    mode: str = DEFAULT_VALUATION_MODE
    factory: ClassVar[str] = "profit_target"

    def _fires(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        return _pnl(trade, self.mode) >= self.usd

    def _progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        pnl = _pnl(trade, self.mode)
        return _fraction(pnl, self.usd), f"PnL {pnl:+.2f} of a {self.usd:.2f} USD target ({self.mode})"


def profit_target(usd: float, mode: str = DEFAULT_VALUATION_MODE) -> ProfitTarget:
    """Fire when the trade's PnL (``mode`` valuation) reaches ``usd``."""
    amount = _number("profit_target", "usd", usd, minimum=0, strictly_above=True,
                     fix="give a positive USD amount, e.g. profit_target(50)")
    return ProfitTarget(amount, _mode("profit_target", mode))


@dataclass(frozen=True, repr=False)
class MaxLoss(ExitCondition):
    usd: float
    mode: str = DEFAULT_VALUATION_MODE
    confirmations: int = field(default=STOP_CONFIRMATIONS, kw_only=True)
    factory: ClassVar[str] = "max_loss"

    def _name_arguments(self) -> Sequence[tuple[str, Any]]:
        return _without_default_confirmations(self)

    def _fires(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        return _pnl(trade, self.mode) <= -self.usd

    def _progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        pnl = _pnl(trade, self.mode)
        return _fraction(-pnl, self.usd), f"PnL {pnl:+.2f} against a {self.usd:.2f} USD loss limit ({self.mode})"


def max_loss(usd: float, mode: str = DEFAULT_VALUATION_MODE, *,
             confirmations: int = STOP_CONFIRMATIONS) -> MaxLoss:
    """Fire when the trade's PnL falls to ``-usd`` or below on ``confirmations`` consecutive
    sane snapshots."""
    amount = _number("max_loss", "usd", usd, minimum=0, strictly_above=True,
                     fix="give the loss as a positive USD amount, e.g. max_loss(100)")
    return MaxLoss(amount, _mode("max_loss", mode), confirmations=_confirmations("max_loss", confirmations))


def _pnl_pct(trade: TradeLike, mode: str) -> float | None:
    """PnL as % of the absolute entry premium; None when the premium is 0 (no base to compare)."""
    premium = float(trade.entry_premium)
    if premium == 0 or not math.isfinite(premium):
        return None
    return _pnl(trade, mode) / abs(premium) * 100.0


@dataclass(frozen=True, repr=False)
class ProfitTargetPct(ExitCondition):
    pct: float
    mode: str = DEFAULT_VALUATION_MODE
    factory: ClassVar[str] = "profit_target_pct"

    def _fires(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        pct = _pnl_pct(trade, self.mode)
        return pct is not None and pct >= self.pct

    def _progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        pct = _pnl_pct(trade, self.mode)
        if pct is None:
            return None, "entry premium is 0: no base for a percentage"
        return _fraction(pct, self.pct), f"PnL {pct:+.1f}% of the premium, target {self.pct:g}% ({self.mode})"


def profit_target_pct(pct: float, mode: str = DEFAULT_VALUATION_MODE, *, fraction: bool = False) -> ProfitTargetPct:
    """Fire when PnL reaches ``pct`` % of the absolute entry premium (never when it is 0).

    ``pct`` is in percent (50 means 50 %); ``fraction=True`` reads it as a fraction (0.5).
    """
    value = _percentage("profit_target_pct", "pct", pct, fraction, minimum=0, strictly_above=True, example=50)
    return ProfitTargetPct(value, _mode("profit_target_pct", mode))


@dataclass(frozen=True, repr=False)
class MaxLossPct(ExitCondition):
    pct: float
    mode: str = DEFAULT_VALUATION_MODE
    confirmations: int = field(default=STOP_CONFIRMATIONS, kw_only=True)
    factory: ClassVar[str] = "max_loss_pct"

    def _name_arguments(self) -> Sequence[tuple[str, Any]]:
        return _without_default_confirmations(self)

    def _fires(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        pct = _pnl_pct(trade, self.mode)
        return pct is not None and pct <= -self.pct

    def _progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        pct = _pnl_pct(trade, self.mode)
        if pct is None:
            return None, "entry premium is 0: no base for a percentage"
        return _fraction(-pct, self.pct), f"PnL {pct:+.1f}% of the premium, loss limit {self.pct:g}% ({self.mode})"


def max_loss_pct(pct: float, mode: str = DEFAULT_VALUATION_MODE, *,
                 confirmations: int = STOP_CONFIRMATIONS, fraction: bool = False) -> MaxLossPct:
    """Fire when the loss reaches ``pct`` % of the absolute entry premium (never when it is 0),
    on ``confirmations`` consecutive sane snapshots.

    ``pct`` is in percent (100 means 100 %); ``fraction=True`` reads it as a fraction (1.0).
    """
    value = _percentage("max_loss_pct", "pct", pct, fraction, minimum=0, strictly_above=True, example=100)
    return MaxLossPct(value, _mode("max_loss_pct", mode),
                      confirmations=_confirmations("max_loss_pct", confirmations))


@dataclass(frozen=True, repr=False)
class MaxHoldHours(ExitCondition):
    hours: float
    factory: ClassVar[str] = "max_hold_hours"

    def _fires(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        if trade.opened_at is None:
            return False
        return _now(snapshot) - float(trade.opened_at) >= self.hours * 3600.0

    def _progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        if trade.opened_at is None:
            return None, "not open yet"
        opened = float(trade.opened_at)
        return _elapsed_progress(opened, opened + self.hours * 3600.0, _now(snapshot), f"{self.hours:g} h held")


def max_hold_hours(hours: float) -> MaxHoldHours:
    """Fire once the trade has been open for ``hours``."""
    return MaxHoldHours(_number("max_hold_hours", "hours", hours, minimum=0, strictly_above=True,
                                fix="give a positive number of hours, e.g. max_hold_hours(24)"))


@dataclass(frozen=True, repr=False)
class TimeExit(ExitCondition):
    hour: int
    minute: int = 0
    factory: ClassVar[str] = "time_exit"

    def deadline(self, opened_at: float) -> float:
        """The first instant with UTC time hour:minute strictly after ``opened_at`` (incident 44)."""
        opened = to_utc_datetime(float(opened_at))
        target = opened.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        if target <= opened:
            target += timedelta(days=1)
        return target.timestamp()

    def _fires(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        if trade.opened_at is None:
            return False
        return _now(snapshot) >= self.deadline(trade.opened_at)

    def _progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        if trade.opened_at is None:
            return None, "not open yet"
        return _elapsed_progress(float(trade.opened_at), self.deadline(trade.opened_at), _now(snapshot),
                                 f"{self.hour:02d}:{self.minute:02d} UTC")


def time_exit(hour: int, minute: int = 0) -> TimeExit:
    """Fire at the first UTC ``hour:minute`` after the trade opened (opened 17:00, 16:00 → next day)."""
    fix = "give a UTC time of day as whole numbers, e.g. time_exit(16, 30)"
    return TimeExit(_integer("time_exit", "hour", hour, 0, 23, fix),
                    _integer("time_exit", "minute", minute, 0, 59, fix))


@dataclass(frozen=True, repr=False)
class UtcDatetimeExit(ExitCondition):
    at: datetime  # aware UTC
    factory: ClassVar[str] = "utc_datetime_exit"

    def _name_arguments(self) -> Sequence[tuple[str, Any]]:
        return (("dt", self.at),)

    def _fires(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        return _now(snapshot) >= self.at.timestamp()

    def _progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        opened = float(trade.opened_at) if trade.opened_at is not None else None
        return _elapsed_progress(opened, self.at.timestamp(), _now(snapshot),
                                 f"{self.at:%Y-%m-%d %H:%M:%S} UTC")

    def validate_at_start(self, now: float) -> None:
        """A deadline already passed when the runner starts is a configuration error (incident 41)."""
        if self.at.timestamp() <= now:
            raise invalid("utc_datetime_exit", "dt", self.at.isoformat(),
                          rule=f"it is already in the past (now {to_utc_datetime(now).isoformat()})",
                          fix="give a future UTC datetime")


def utc_datetime_exit(dt: datetime) -> UtcDatetimeExit:
    """Fire at or after the UTC datetime ``dt`` (naive means UTC)."""
    return UtcDatetimeExit(_as_utc_datetime(
        "utc_datetime_exit", "dt", dt,
        "give a datetime.datetime, e.g. utc_datetime_exit(datetime(2026, 3, 27, 7, 0))"))


@dataclass(frozen=True, repr=False)
class AccountDeltaLimit(_UnderlyingNamed, ExitCondition):
    limit: float
    underlying: str | None = None
    factory: ClassVar[str] = "account_delta_limit"

    def _fires(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        return abs(_account_delta(snapshot, self.underlying)) > self.limit

    def _progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        delta = _account_delta(snapshot, self.underlying)
        if not math.isfinite(delta):
            raise StaleDataError(f"account delta is not a number ({delta!r})")
        return _fraction(abs(delta), self.limit), f"account delta {delta:+.4f}, limit {self.limit:g}"


def account_delta_limit(limit: float, *, underlying: str | None = None) -> AccountDeltaLimit:
    """Fire when the account's absolute net delta (options and perps; only ``underlying``'s
    positions when given) exceeds ``limit``."""
    return AccountDeltaLimit(_number("account_delta_limit", "limit", limit, minimum=0,
                                     fix="give a delta limit >= 0, e.g. account_delta_limit(1.0)"),
                             _check_delta_underlying("account_delta_limit", underlying))


@dataclass(frozen=True, repr=False)
class StructureDeltaLimit(ExitCondition):
    limit: float
    factory: ClassVar[str] = "structure_delta_limit"

    def _fires(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        delta = trade.structure_delta()
        if delta is None or not math.isfinite(delta):
            raise StaleDataError(f"structure delta is unavailable ({delta!r})")
        return abs(float(delta)) > self.limit

    def _progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        delta = trade.structure_delta()
        if delta is None or not math.isfinite(delta):
            raise StaleDataError(f"structure delta is unavailable ({delta!r})")
        return _fraction(abs(float(delta)), self.limit), f"trade delta {float(delta):+.4f}, limit {self.limit:g}"


def structure_delta_limit(limit: float) -> StructureDeltaLimit:
    """Fire when the absolute delta of the trade's own legs exceeds ``limit``."""
    return StructureDeltaLimit(_number("structure_delta_limit", "limit", limit, minimum=0,
                                       fix="give a delta limit >= 0, e.g. structure_delta_limit(0.3)"))


@dataclass(frozen=True, repr=False)
class LegGreekLimit(ExitCondition):
    greek: str
    limit: float
    leg: int | None = None
    scale: str = "contract"
    factory: ClassVar[str] = "leg_greek_limit"


    # A class constant elsewhere; here the leg it reads is the instance's own (so a property).
    @property
    def max_leg_index(self) -> int | None:  # type: ignore[override]
        return self.leg

    def _leg_value(self, leg: LegLike) -> float | None:
        greek = leg.greek(self.greek)
        if greek is None or not math.isfinite(greek):
            return None
        if self.scale == "position":
            return Side.of(leg.side).sign * float(leg.net_qty) * float(greek)
        return float(greek)

    def _legs(self, trade: TradeLike) -> list[LegLike]:
        """The legs the limit reads: leg ``leg``, or every option leg; either only while we hold it.

        Why: a leg we no longer hold keeps its last quote, whose greek means nothing now; and a
        perp leg (the delta hedge's) has delta 1 by definition, so "any leg's delta above 0.4"
        would fire the moment a hedge was put on. ``LookupError`` for an index the trade lacks.
        """
        legs = [leg for leg in trade.legs if self.leg is None or leg.index == self.leg]
        if not legs:
            raise LookupError(f"{self.name}: the trade has no leg with index {self.leg}")
        return [leg for leg in legs if abs(float(leg.net_qty)) > 1e-12
                and (self.leg is not None or not leg.is_perpetual)]

    def _fires(self, snapshot: SnapshotLike, trade: TradeLike) -> bool:
        legs = self._legs(trade)
        unknown = 0
        for leg in legs:
            value = self._leg_value(leg)
            if value is None:
                unknown += 1
            elif abs(value) > self.limit:
                return True
        if unknown:
            raise StaleDataError(f"{self.name}: {self.greek} unavailable on {unknown} leg(s)")
        return False

    def _progress(self, snapshot: SnapshotLike, trade: TradeLike) -> tuple[float | None, str]:
        try:
            legs = self._legs(trade)
        except LookupError:
            return None, f"the trade has no leg with index {self.leg}"
        values = [self._leg_value(leg) for leg in legs]
        known = [abs(value) for value in values if value is not None]
        largest = max(known, default=0.0)
        if len(known) < len(values) and largest <= self.limit:   # an unknown leg might be the one that fires
            return None, f"unevaluable: {self.greek} unavailable on {len(values) - len(known)} leg(s)"
        return _fraction(largest, self.limit), f"largest {self.greek} {largest:.4f} ({self.scale}), limit {self.limit:g}"


def leg_greek_limit(greek: str, limit: float, leg: int | None = None, scale: str = "contract") -> LegGreekLimit:
    """Fire when any leg (or leg ``leg``) has ``abs(greek) > limit``, per contract or per position."""
    factory = "leg_greek_limit"
    name = _choice(factory, "greek", greek, GREEKS, f"use one of {', '.join(GREEKS)}")
    value = _number(factory, "limit", limit, minimum=0,
                    fix='give a limit >= 0, e.g. leg_greek_limit("delta", 0.4)')
    if leg is not None:
        leg = _integer(factory, "leg", leg, 0, 7, "give a leg index (0 = first leg) or None for any leg")
    chosen_scale = _choice(factory, "scale", scale, GREEK_SCALES,
                           'use "contract" (per contract of one unit of the underlying, e.g. 1 ETH) or '
                           '"position" (sign x our qty x greek)')
    return LegGreekLimit(name, value, leg, chosen_scale)


# --------------------------------------------------------------------------------------------
# Signature check (BEHAVIOUR.md §2.1, incident 21).
# --------------------------------------------------------------------------------------------

_EXPECTED_ARGUMENTS: dict[str, tuple[str, ...]] = {ENTRY: ("snapshot",), EXIT: ("snapshot", "trade")}
_LIST_NAMES: dict[str, str] = {ENTRY: "entry_conditions", EXIT: "exit_conditions"}


def condition_name(cond: Any) -> str:
    """A readable name for any condition: ``.name`` of factory objects, else the function name."""
    name = getattr(cond, "name", None)
    if isinstance(name, str) and name:
        return name
    value = getattr(cond, "__name__", None)
    if isinstance(value, str) and value:
        return value
    return type(cond).__name__


def _callable_label(cond: Any) -> str:
    name = getattr(cond, "__name__", None)
    if isinstance(name, str) and name:
        return name
    return condition_name(cond)


def _bare_signature(signature: inspect.Signature) -> str:
    """``(snap, trade)`` without annotations: what the user wrote, readable in one line."""
    parameters = [parameter.replace(annotation=inspect.Parameter.empty)
                  for parameter in signature.parameters.values()]
    return str(signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty))


def _argument_count(signature: inspect.Signature) -> str:
    parameters = signature.parameters.values()
    if any(parameter.kind is inspect.Parameter.VAR_POSITIONAL for parameter in parameters):
        return "a variable number of arguments"
    count = sum(1 for parameter in parameters
                if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))
    required_keywords = [parameter.name for parameter in parameters
                         if parameter.kind is inspect.Parameter.KEYWORD_ONLY
                         and parameter.default is inspect.Parameter.empty]
    text = f"{count} argument{'s' if count != 1 else ''}"
    if required_keywords:
        text += f" and requires keyword argument(s) {', '.join(required_keywords)}"
    return text


def check_condition(obj: Any, kind: str, where: str) -> None:
    """Refuse ``obj`` unless it can be called as an ``kind`` condition; ``where`` prefixes the error.

    Catches the silent killer of incident 21: an exit-shaped ``lambda s, t: ...`` in
    ``entry_conditions`` would raise TypeError on every tick and never enter.
    """
    if kind not in CONDITION_KINDS:
        raise ValueError(f"kind must be one of {CONDITION_KINDS}, got {kind!r}")
    other = EXIT if kind == ENTRY else ENTRY
    expected = ", ".join(_EXPECTED_ARGUMENTS[kind])
    if not callable(obj):
        raise ConfigError(f"{where}: {obj!r} is not callable; {kind} conditions are functions taking "
                          f"({expected}) and returning a bool")
    declared_kind = getattr(obj, "kind", None)
    if isinstance(declared_kind, str) and declared_kind in CONDITION_KINDS and declared_kind != kind:
        raise ConfigError(f"{where}: {condition_name(obj)} is an {declared_kind} condition; {kind} conditions "
                          f"take ({expected}). Move it to {_LIST_NAMES[declared_kind]}")
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: the signature of {condition_name(obj)} cannot be inspected; wrap it in a "
                          f"def taking ({expected})") from None
    try:
        signature.bind(*_EXPECTED_ARGUMENTS[kind])
    except TypeError:
        message = (f"{where}: {_callable_label(obj)}{_bare_signature(signature)} takes "
                   f"{_argument_count(signature)}; {kind} conditions take ({expected}).")
        if _accepts(signature, len(_EXPECTED_ARGUMENTS[other])):
            message += f" Did you put an {other} condition here?"
        raise ConfigError(message) from None


def _accepts(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Safe evaluation and condition health (BEHAVIOUR.md §2.1, incident 22).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionFailure:
    """One condition failing in a row, as the health report shows it."""

    strategy: str
    condition: str
    kind: str
    consecutive: int
    last_error: str


class ConditionHealth:
    """Counts consecutive failures per (strategy, condition name).

    Why: a condition that raises blocks entries (or never fires an exit) quietly, tick after
    tick. At ``threshold`` consecutive failures it logs one WARNING naming strategy and condition
    (exits also call ``on_alert``); a clean evaluation resets the streak. Thread-safe: the runner
    and the monitor may evaluate from different threads.
    """

    def __init__(self, *, threshold: int = DEFAULT_FAILURE_THRESHOLD,
                 on_alert: Callable[[str, str], None] | None = None) -> None:
        if not is_int(threshold) or threshold < 1:
            raise invalid("ConditionHealth", "threshold", threshold, "use an int >= 1")
        self.threshold = threshold
        self._on_alert = on_alert
        self._lock = threading.Lock()
        self._streaks: dict[tuple[str, str], ConditionFailure] = {}

    def record_success(self, strategy: str, condition: str) -> None:
        with self._lock:
            ended = self._streaks.pop((strategy, condition), None)
        if ended is not None and ended.consecutive >= self.threshold:
            logger.info("condition %s of strategy %s evaluates cleanly again after %d failures",
                        condition, strategy, ended.consecutive)

    def record_failure(self, strategy: str, condition: str, kind: str, error: str) -> int:
        """Count one failure; returns the length of the current streak."""
        key = (strategy, condition)
        with self._lock:
            previous = self._streaks.get(key)
            count = (previous.consecutive if previous else 0) + 1
            self._streaks[key] = ConditionFailure(strategy, condition, kind, count, error)
        if count == self.threshold:
            detail = (f"{kind} condition {condition} of strategy {strategy} failed {count} times in a row "
                      f"(last: {error})")
            logger.warning("health: %s", detail)
            if kind == EXIT and self._on_alert is not None:
                try:
                    self._on_alert("exit_condition_failing", detail)
                except Exception:  # an alert sink must never break evaluation
                    logger.exception("alert sink failed for %s", detail)
        return count

    def consecutive_failures(self, strategy: str, condition: str) -> int:
        with self._lock:
            streak = self._streaks.get((strategy, condition))
        return streak.consecutive if streak else 0

    def unhealthy(self) -> list[ConditionFailure]:
        """Conditions currently failing at or beyond the threshold (for the health view)."""
        with self._lock:
            return [streak for streak in self._streaks.values() if streak.consecutive >= self.threshold]


class ExitVerdict(Enum):
    FIRED = "fired"
    NOT_FIRED = "not_fired"
    UNEVALUABLE = "unevaluable"  # StaleDataError: data too old to decide this tick
    ERROR = "error"              # raised, or returned a non-bool


def _not_bool(name: str, result: Any) -> str:
    return f"{name} returned {result!r} ({type(result).__name__}), not a bool"


def evaluate_entry(cond: Callable[[Any], Any], snapshot: Any, *,
                   health: ConditionHealth | None = None, strategy: str = "", name: str | None = None) -> bool:
    """Run one entry condition safely: True only for a real ``True``; any error blocks.

    ``name`` overrides the health key and log name (e.g. ``"entry_conditions[1]:<lambda>"`` so
    that two lambdas of one strategy are counted apart).
    """
    name = name or condition_name(cond)
    try:
        result = cond(snapshot)
    except Exception as error:
        logger.exception("strategy %s: entry condition %s raised; entry blocked", strategy, name)
        if health is not None:
            health.record_failure(strategy, name, ENTRY, f"{type(error).__name__}: {error}")
        return False
    if not isinstance(result, bool):
        problem = _not_bool(name, result)
        logger.error("strategy %s: entry condition %s; entry blocked", strategy, problem)
        if health is not None:
            health.record_failure(strategy, name, ENTRY, problem)
        return False
    if health is not None:
        health.record_success(strategy, name)
    return result


def judge_exit(cond: Callable[[Any, Any], Any], snapshot: Any, trade: Any, *,
               health: ConditionHealth | None = None, strategy: str = "",
               name: str | None = None) -> ExitVerdict:
    """Run one exit condition safely and say what happened.

    ``UNEVALUABLE`` (stale data) neither counts as a failure nor resets the streak: staleness has
    its own 60 s rule in the lifecycle (BEHAVIOUR.md §2.3). ``name`` as in ``evaluate_entry``.
    """
    name = name or condition_name(cond)
    try:
        result = cond(snapshot, trade)
    except StaleDataError as error:
        logger.debug("strategy %s: exit condition %s not evaluable this tick: %s", strategy, name, error)
        return ExitVerdict.UNEVALUABLE
    except Exception as error:
        logger.exception("strategy %s: exit condition %s raised; counted as not fired", strategy, name)
        if health is not None:
            health.record_failure(strategy, name, EXIT, f"{type(error).__name__}: {error}")
        return ExitVerdict.ERROR
    if not isinstance(result, bool):
        problem = _not_bool(name, result)
        logger.error("strategy %s: exit condition %s; counted as not fired", strategy, problem)
        if health is not None:
            health.record_failure(strategy, name, EXIT, problem)
        return ExitVerdict.ERROR
    if health is not None:
        health.record_success(strategy, name)
    return ExitVerdict.FIRED if result else ExitVerdict.NOT_FIRED


def evaluate_exit(cond: Callable[[Any, Any], Any], snapshot: Any, trade: Any, *,
                  health: ConditionHealth | None = None, strategy: str = "", name: str | None = None) -> bool:
    """True only when the exit condition cleanly returned ``True``."""
    verdict = judge_exit(cond, snapshot, trade, health=health, strategy=strategy, name=name)
    return verdict is ExitVerdict.FIRED


ENTRY_FACTORIES: tuple[Callable[..., EntryCondition], ...] = (
    time_window, utc_time_window, weekday_filter, min_available_margin_pct,
    min_equity, max_account_delta, max_margin_utilization, no_existing_position_in,
)
EXIT_FACTORIES: tuple[Callable[..., ExitCondition], ...] = (
    profit_target, max_loss, max_hold_hours, time_exit, utc_datetime_exit,
    account_delta_limit, structure_delta_limit, leg_greek_limit,
    profit_target_pct, max_loss_pct,
)

__all__ = [
    "ENTRY", "EXIT", "VALUATION_MODES", "GREEKS", "GREEK_SCALES", "WEEKDAYS",
    "SnapshotLike", "TradeLike", "LegLike", "PositionLike",
    "Condition", "EntryCondition", "ExitCondition",
    "time_window", "utc_time_window", "weekday_filter", "min_available_margin_pct", "min_equity",
    "max_account_delta", "max_margin_utilization", "no_existing_position_in",
    "profit_target", "max_loss", "profit_target_pct", "max_loss_pct", "max_hold_hours", "time_exit",
    "utc_datetime_exit", "account_delta_limit", "structure_delta_limit", "leg_greek_limit",
    "check_condition", "condition_name", "evaluate_entry", "evaluate_exit", "judge_exit", "exit_progress",
    "ExitVerdict", "ConditionHealth", "ConditionFailure", "ENTRY_FACTORIES", "EXIT_FACTORIES",
]
