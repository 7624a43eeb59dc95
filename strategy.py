"""Strategies: their configuration and the runner that opens their trades.

Why it looks the way it does (BEHAVIOUR.md 1.2, 1.7, 5):

* ``StrategyConfig`` refuses every mistake at construction, before any request: a strategy
  file that is wrong must stop the daemon at start-up (exit 2), never misbehave at 09:00 on
  a trading day. The condition signatures are checked there too (incident 21).
  ``build_strategy_configs`` calls the factories of ``main.STRATEGIES`` and names the
  strategy of any error raised inside one.
* ``StrategyRunner`` only ever *opens* trades (and force-closes them on ``kill``). Exits belong
  to the lifecycle, which evaluates them on every poll tick. The runner's gates run in the
  order of section 5; the counters that decide whether another trade may open today are
  derived from the trades themselves *and* persisted, so a restart inside an entry window
  cannot open a second trade (incident 1), and a daily quota blocks until 00:00 UTC only,
  never for good (incident 2).
* The runner receives the daemon's services (``RunnerServices``, provided by
  ``app.TradingContext``); it builds none of them. The wiring lives in ``app.py``.
* A strategy trades one underlying (``StrategyConfig.underlying``, the legs' own; a structure
  mixing BTC and ETH legs is refused at start-up). Its data gate reads that underlying's
  index and frozen flag, its notional is qty x that index, and its quantity caps are in
  units of that underlying; messages name it (issue 13).

The condition factories are re-exported from ``conditions``: ``strategy.profit_target is
conditions.profit_target``.
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Protocol, Sequence

from account_manager import AccountSnapshot
from clock import Clock
from conditions import (
    ConditionHealth,
    EntryCondition,
    account_delta_limit,
    check_condition,
    condition_name,
    evaluate_entry,
    leg_greek_limit,
    max_account_delta,
    max_hold_hours,
    max_loss,
    max_loss_pct,
    max_margin_utilization,
    min_available_margin_pct,
    min_equity,
    no_existing_position_in,
    profit_target,
    profit_target_pct,
    structure_delta_limit,
    time_exit,
    time_window,
    utc_datetime_exit,
    utc_time_window,
    weekday_filter,
)
from contracts import DEFAULT_UNDERLYING, Side
from display import fmt_qty
from errors import ConfigError, TraderError
from hedging import HedgeConfig
from multileg_orderbook import SmartExecConfig
from option_selection import LegSpec, ResolvedLeg, resolve_legs
from position_monitor import PositionMonitor
from rfq import RFQParams
from seams import (
    AccountSource,
    AlertSender,
    MarketDataSource,
    ModeRouter,
    RunnerLifecycle,
    Store,
    SymbolBlocks,
    require,
)
from trade_execution import ExecutionParams
from trade_lifecycle import TradeState
from validation import invalid, is_int, is_number, refuse_unknown_keywords

logger = logging.getLogger(__name__)

EXECUTION_MODES: tuple[str, ...] = ("auto", "limit", "rfq", "smart")
MAX_LEGS = 8
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# The metadata keys lifted into typed fields, with the class each value must be and where
# that class lives (for the message).
RECOGNISED_METADATA: tuple[tuple[str, type, str], ...] = (
    ("execution_params", ExecutionParams, "trade_execution.ExecutionParams"),
    ("smart_config", SmartExecConfig, "multileg_orderbook.SmartExecConfig"),
    ("rfq_params", RFQParams, "rfq.RFQParams"),
)

# Size caps (issue 9): a quantity like 1e9 BTC is a typo, never a trade. Each strategy may set
# its own caps; the ceilings bound the caps themselves so that a cap cannot be switched off.
# Quantity caps are in units of the strategy's underlying (10 BTC, or 10 ETH for an ETH
# strategy); the notional cap, in USD, is what compares sizes across underlyings.
DEFAULT_MAX_LEG_QTY = 10.0                      # units of the underlying per leg
DEFAULT_MAX_STRUCTURE_QTY = 20.0                # units of the underlying, the sum of |qty| over the legs
DEFAULT_MAX_STRUCTURE_NOTIONAL_USD = 2_000_000.0  # USD, sum of qty x index when the trade is created
QTY_CAP_CEILING = 1_000.0
NOTIONAL_CAP_CEILING_USD = 1_000_000_000.0
MIN_CHECK_INTERVAL_SECONDS = 1.0

INDEX_MAX_AGE_SECONDS = 15.0          # section 7.2: entries need an index <= 15 s old
SNAPSHOT_MAX_AGE_POLLS = 2.0          # ... and a snapshot <= 2 poll intervals old
OPENING_STATES = frozenset({TradeState.PENDING_OPEN, TradeState.OPENING, TradeState.UNWINDING})
# An open whose fills are not all in yet: no snapshot shows what it will hold (account gates wait).
OPEN_IN_FLIGHT = frozenset({TradeState.PENDING_OPEN, TradeState.OPENING})
TERMINAL_STATES = frozenset({TradeState.CLOSED, TradeState.FAILED})
# Pause reasons that the runner sets by itself and lifts at 00:00 UTC.
DAILY_FAILURE_PAUSE = "daily_open_failures"
# The free-standing figures of a block reason (an age, a price, a time; not the digits of a symbol,
# a trade id, an index like [0] or a parameter like hour=9): a reason whose figures alone moved is no news.
_FIGURES = re.compile(r"(?<![\w\[=.:\-])\d+(?:[.:]\d+)*(?![\w\]])")
# Block reasons worth a WARNING rather than an INFO line.
WARNING_BLOCKS: tuple[str, ...] = ("leg selection failed", "trade creation failed", "index unavailable",
                                   "index frozen", "exchange unreachable", "symbol blocked")


# --------------------------------------------------------------------------------------------
# StrategyConfig
# --------------------------------------------------------------------------------------------


def _json_problem(value: Any) -> str | None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


class StrategyConfigError(ConfigError):
    """A ``ConfigError`` raised by ``StrategyConfig``: its message already names the strategy.

    ``build_strategy_configs`` passes it through unchanged; any other error raised inside a
    strategy's factory is attributed to the strategy by ``factory_failure``.
    """

    def __init__(self, strategy: str | None, message: str) -> None:
        super().__init__(message)
        self.strategy = strategy


@dataclass(eq=False)
class StrategyConfig:
    """One strategy: what to trade, when to enter, when to leave, how to execute (section 1.2).

    Validated in ``__post_init__``; every error is a ``ConfigError`` naming the strategy, the
    field, the bad value and the fix. Recognised ``metadata`` keys (``execution_params``,
    ``smart_config``, ``rfq_params``) are lifted into the typed fields, so the README form
    ``metadata={"execution_params": ExecutionParams(...)}`` and the field form behave the same.
    """

    name: str
    legs: list[LegSpec]
    entry_conditions: list[Callable[[Any], bool]] = field(default_factory=list)
    exit_conditions: list[Callable[[Any, Any], bool]] = field(default_factory=list)
    execution_mode: str = "auto"
    max_concurrent_trades: int = 1
    max_trades_per_day: int = 0
    cooldown_seconds: float = 0.0
    check_interval_seconds: float = 60.0
    on_trade_closed: Callable[[Any, Any], None] | None = None
    metadata: dict = field(default_factory=dict)
    execution_params: ExecutionParams | None = None
    smart_config: SmartExecConfig | None = None
    rfq_params: RFQParams | None = None
    on_trade_opened: Callable[[Any, Any], None] | None = None
    max_open_failures_per_day: int = 3
    hold_to_expiry: bool = False
    max_leg_qty: float = DEFAULT_MAX_LEG_QTY
    max_structure_qty: float = DEFAULT_MAX_STRUCTURE_QTY
    max_structure_notional_usd: float = DEFAULT_MAX_STRUCTURE_NOTIONAL_USD
    hedge: HedgeConfig | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "StrategyConfig":
        # A misspelled field (``exit_condition=``) would otherwise be a bare TypeError from the
        # dataclass __init__ that names neither the strategy nor the intended field.
        if args or kwargs:
            name = kwargs.get("name", args[0] if args else None)
            owner = f"strategy {name!r}" if isinstance(name, str) else "StrategyConfig"
            names = [f.name for f in fields(cls)]
            strategy = name if isinstance(name, str) else None
            try:
                refuse_unknown_keywords(owner, names, args, kwargs)
            except ConfigError as exc:
                raise StrategyConfigError(strategy, str(exc)) from None
            missing = [key for key in names[:2] if key not in kwargs and names.index(key) >= len(args)]
            if missing:
                raise StrategyConfigError(strategy, f"{owner}: {', '.join(missing)} missing: every strategy needs "
                                                    f"a name and legs, e.g. StrategyConfig(name=\"my_strategy\", "
                                                    f"legs=strangle(0.1), ...)")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        try:
            self._check_name()
            self._check_size_caps()
            self._check_legs()
            self._check_conditions()
            self._check_exit_policy()
            self._check_choices_and_limits()
            self._check_perpetual_legs()
            self._check_hedge()
            self._check_callbacks()
            self._lift_metadata()
        except StrategyConfigError:
            raise
        except ConfigError as exc:  # ours (validation.invalid with this strategy as owner), check_condition's
            label = self.name if isinstance(self.name, str) else "?"
            text = str(exc)
            prefix = self._owner
            raise StrategyConfigError(label, text if text.startswith(prefix) else f"{prefix}: {text}") from None

    # ---- helpers -----------------------------------------------------------------------

    @property
    def _owner(self) -> str:
        """How refusals name this strategy: ``strategy 'name'`` (``validation.invalid``'s owner)."""
        return f"strategy {self.name if isinstance(self.name, str) else '?'!r}"

    def _check_name(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            # No strategy to attribute it to: the name itself is what is wrong.
            raise StrategyConfigError(None, str(invalid("StrategyConfig", "name", self.name,
                                                        "use 1-64 characters among letters, digits, '_', '.', '-'")))

    @property
    def underlying(self) -> str:
        """The underlying every leg trades (validated: one per structure)."""
        return self.legs[0].underlying

    def _qty_unit(self) -> str:
        """The unit of the quantity caps in messages: the legs' underlying once they say one
        (the caps are checked before the legs, so this reads them without trusting them)."""
        legs = self.legs if isinstance(self.legs, (list, tuple)) else []
        named = {leg.underlying for leg in legs if isinstance(leg, LegSpec)}
        return named.pop() if len(named) == 1 else DEFAULT_UNDERLYING

    def _check_size_caps(self) -> None:
        """The caps themselves: positive, finite, and below a ceiling that keeps them caps."""
        unit_qty = self._qty_unit()
        for field_name, minimum, ceiling, unit in (
                ("max_leg_qty", 0.01, QTY_CAP_CEILING, unit_qty),
                ("max_structure_qty", 0.01, QTY_CAP_CEILING * MAX_LEGS, unit_qty),
                ("max_structure_notional_usd", 1.0, NOTIONAL_CAP_CEILING_USD, "USD")):
            value = getattr(self, field_name)
            if not is_number(value) or not minimum <= value <= ceiling:
                default = getattr(type(self), field_name)
                raise invalid(self._owner, field_name, value, f"use a number of {unit} from {minimum:g} to "
                                                              f"{ceiling:g} (default {default:g}), or leave it out")
            setattr(self, field_name, float(value))

    def _check_legs(self) -> None:
        owner = self._owner
        if isinstance(self.legs, LegSpec) or not isinstance(self.legs, (list, tuple)):
            raise invalid(owner, "legs", self.legs, "use a list of LegSpec (e.g. strangle(0.1))")
        legs = list(self.legs)
        if not legs:
            raise invalid(owner, "legs", legs, "give at least one LegSpec")
        if len(legs) > MAX_LEGS:
            raise invalid(owner, "legs", f"<{len(legs)} legs>", f"use at most {MAX_LEGS} legs")
        for index, leg in enumerate(legs):
            if not isinstance(leg, LegSpec):
                raise invalid(owner, f"legs[{index}]", leg, "use a LegSpec")
        unit = legs[0].underlying
        for index, leg in enumerate(legs):
            if leg.underlying != unit:
                raise invalid(owner, f"legs[{index}].underlying", leg.underlying,
                              f"one structure trades one underlying and legs[0] trades {unit!r}: give every leg "
                              f"underlying={unit!r}, or put the {leg.underlying} legs in a strategy of their own")
        for index, leg in enumerate(legs):
            source = leg.depends_on
            if source is not None and (source >= len(legs) or source == index):
                raise invalid(owner, f"legs[{index}].strike_criteria['from_leg']", source,
                              f"use the index of another leg (0..{len(legs) - 1})")
            if leg.qty > self.max_leg_qty:
                raise invalid(owner, f"legs[{index}].qty", leg.qty,
                              f"it is above max_leg_qty={self.max_leg_qty:g} {unit} per leg; use a smaller "
                              f"quantity, or raise max_leg_qty if this size is deliberate")
        total = math.fsum(abs(leg.qty) for leg in legs)
        if total > self.max_structure_qty + 1e-9:
            raise invalid(owner, "legs", f"<{len(legs)} legs, {total:g} {unit} in total>",
                          f"the structure's quantity (sum of |qty| over its legs) is above "
                          f"max_structure_qty={self.max_structure_qty:g} {unit}; use smaller legs, or raise "
                          f"max_structure_qty if this size is deliberate")
        self.legs = legs

    def _check_conditions(self) -> None:
        for list_name, kind in (("entry_conditions", "entry"), ("exit_conditions", "exit")):
            conditions = getattr(self, list_name)
            if not isinstance(conditions, (list, tuple)):
                raise invalid(self._owner, list_name, conditions, f"use a list of {kind} conditions")
            conditions = list(conditions)
            for index, cond in enumerate(conditions):
                check_condition(cond, kind, f"strategy {self.name!r}: {list_name}[{index}]")
            setattr(self, list_name, conditions)
        for index, cond in enumerate(self.exit_conditions):
            highest = getattr(cond, "max_leg_index", None)
            if is_int(highest) and highest >= len(self.legs):
                raise invalid(self._owner, f"exit_conditions[{index}]", condition_name(cond),
                              f"it refers to leg {highest} but the strategy has {len(self.legs)} "
                              f"leg(s) (indexes 0..{len(self.legs) - 1})")

    def _check_exit_policy(self) -> None:
        """A trade must have a way out: exits, or an explicit decision to hold it to expiry.

        Why: a strategy that forgot its exits would leave every position (a naked short
        strangle included) unmanaged until expiry. Saying ``hold_to_expiry=True`` makes that a
        decision instead of an omission; exits *and* hold_to_expiry contradict each other.
        """
        owner = self._owner
        if not isinstance(self.hold_to_expiry, bool):
            raise invalid(owner, "hold_to_expiry", self.hold_to_expiry, "use True or False")
        if self.hold_to_expiry and self.exit_conditions:
            raise invalid(owner, "hold_to_expiry", True,
                          f"it contradicts exit_conditions={[condition_name(c) for c in self.exit_conditions]}; "
                          f"remove the exit conditions to hold every trade to expiry, or remove hold_to_expiry")
        if not self.hold_to_expiry and not self.exit_conditions:
            raise invalid(owner, "exit_conditions", self.exit_conditions,
                          "a strategy with no exit condition holds every trade until expiry (or a kill); add "
                          "one, e.g. exit_conditions=[max_hold_hours(24)], or say hold_to_expiry=True if "
                          "that is what you mean")

    def _check_perpetual_legs(self) -> None:
        """Perp legs trade through the limit engine only (docs/PERPETUALS.md).

        Coincall's RFQs are block trades of options, so ``rfq`` cannot carry a perp leg; the
        smart engine works option books in balanced chunks on the option lot and is not
        taught the perp's own step, so it refuses too. ``auto`` routes a structure with a
        perp leg to ``limit`` (``route_trade``). A structure of perp legs only never expires,
        so it cannot be held to expiry.
        """
        perps = [index for index, leg in enumerate(self.legs) if leg.is_perpetual]
        if not perps:
            return
        if self.execution_mode in ("smart", "rfq"):
            raise invalid(self._owner, "execution_mode", self.execution_mode,
                          f"legs {perps} are perpetual futures, which the {self.execution_mode} engine does not "
                          f"trade (RFQs are option block trades; smart works option books); use "
                          f"execution_mode='limit' (or 'auto', which routes a structure with a perp to limit)")
        if self.hold_to_expiry and len(perps) == len(self.legs):
            raise invalid(self._owner, "hold_to_expiry", True,
                          "a structure of perpetual legs only never expires; give it exit_conditions instead")

    def _check_hedge(self) -> None:
        """A delta hedge (docs/HEDGING.md) is bound to the structure's underlying here, at start-up.

        Its orders are perp orders, which only the limit engine trades: ``smart`` and ``rfq``
        are refused (``auto`` routes a hedged strategy to ``limit``, ``route_trade``), so every
        job of a hedged trade, its closes included, can carry the hedge legs.
        """
        if self.hedge is None:
            return
        if not isinstance(self.hedge, HedgeConfig):
            raise invalid(self._owner, "hedge", self.hedge, "use delta_hedge(...) from hedging, or None")
        if self.execution_mode in ("smart", "rfq"):
            raise invalid(self._owner, "execution_mode", self.execution_mode,
                          f"a delta hedge trades the perpetual, which the {self.execution_mode} engine does not "
                          f"trade; use execution_mode='limit' (or 'auto', which routes a hedged strategy to limit)")
        self.hedge = self.hedge.bind(self.underlying)

    def _check_choices_and_limits(self) -> None:
        owner = self._owner
        if self.execution_mode not in EXECUTION_MODES:
            raise invalid(owner, "execution_mode", self.execution_mode, f"use one of {', '.join(EXECUTION_MODES)}")
        for field_name, minimum in (("max_concurrent_trades", 1), ("max_trades_per_day", 0),
                                    ("max_open_failures_per_day", 1)):
            value = getattr(self, field_name)
            if not is_int(value) or value < minimum:
                raise invalid(owner, field_name, value, f"use a whole number >= {minimum}")
        if not is_number(self.cooldown_seconds) or self.cooldown_seconds < 0:
            raise invalid(owner, "cooldown_seconds", self.cooldown_seconds, "use a number of seconds >= 0")
        self.cooldown_seconds = float(self.cooldown_seconds)
        interval = self.check_interval_seconds
        if not is_number(interval) or interval < MIN_CHECK_INTERVAL_SECONDS:
            # 0 used to mean "every poll"; a poll is at least a second apart, so say so with a number.
            raise invalid(owner, "check_interval_seconds", interval,
                          f"use a number of seconds >= {MIN_CHECK_INTERVAL_SECONDS:g}, e.g. 10, or the poll "
                          f"interval (POLL_INTERVAL_SECONDS, 10 by default) to consider an entry on every poll")
        self.check_interval_seconds = float(interval)

    def _check_callbacks(self) -> None:
        for field_name in ("on_trade_opened", "on_trade_closed"):
            callback = getattr(self, field_name)
            if callback is None:
                continue
            if not callable(callback):
                raise invalid(self._owner, field_name, callback, "use a function (trade, snapshot) -> None, or None")
            try:
                inspect.signature(callback).bind("trade", "snapshot")
            except (TypeError, ValueError):
                raise invalid(self._owner, field_name, getattr(callback, "__name__", callback),
                              "it must accept two arguments (trade, snapshot)") from None

    def _lift_metadata(self) -> None:
        owner = self._owner
        if not isinstance(self.metadata, Mapping):
            raise invalid(owner, "metadata", self.metadata, "use a dict")
        metadata = dict(self.metadata)
        for key, expected, where in RECOGNISED_METADATA:
            given = getattr(self, key)
            if key in metadata:
                lifted = metadata.pop(key)
                if given is not None:
                    raise invalid(owner, key, given, f"it is also given as metadata[{key!r}]; keep one of the two")
                given = lifted
            if given is not None and not isinstance(given, expected):
                raise invalid(owner, key, given, f"use a {where}")
            setattr(self, key, given)
        for key, value in metadata.items():
            if not isinstance(key, str):
                raise invalid(owner, "metadata", key, "use string keys (metadata is stored as JSON)")
            problem = _json_problem(value)
            if problem is not None:
                raise invalid(owner, f"metadata[{key!r}]", value, f"metadata must be JSON-serialisable ({problem})")
        self.metadata = metadata

    def all_conditions(self) -> list[Any]:
        return [*self.entry_conditions, *self.exit_conditions]

    def validate_at_start(self, now: float) -> None:
        """The checks that need the clock (a ``utc_datetime_exit`` already in the past).

        A condition may define ``validate_at_start(now)``; user-written conditions need not,
        so its absence is not an error. A refusal names this strategy.
        """
        for cond in self.all_conditions():
            validate = getattr(cond, "validate_at_start", None)
            if callable(validate):
                try:
                    validate(now)
                except ConfigError as exc:
                    raise StrategyConfigError(self.name, f"strategy {self.name!r}: {exc}") from None

    def __repr__(self) -> str:
        return (f"StrategyConfig(name={self.name!r}, legs={len(self.legs)}, execution_mode={self.execution_mode!r}, "
                f"entry={[condition_name(c) for c in self.entry_conditions]}, "
                f"exit={[condition_name(c) for c in self.exit_conditions]})")


# --------------------------------------------------------------------------------------------
# StrategyRunner
# --------------------------------------------------------------------------------------------


def utc_day(epoch_seconds: float) -> str:
    """The UTC calendar date of an instant, as ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).date().isoformat()


def next_utc_midnight(epoch_seconds: float) -> float:
    day = datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()


def route_trade(config: StrategyConfig, resolved: Sequence[ResolvedLeg], executor: ModeRouter) -> str:
    """The execution mode of one trade of ``config``: its ``execution_mode`` routed once, on the resolved legs.

    The one place a strategy's mode is decided (``auto`` by the notional at the snapshot's
    index): the runner passes the answer to ``LifecycleManager.create``, which stores it and
    never routes again, and ``main.py check`` prints it through this same call. A structure
    with a perpetual leg, or with a delta hedge, trades on the limit engine (the only one
    that trades perps).
    """
    if config.hedge is not None or any(leg.is_perpetual for leg in config.legs):
        return "limit"
    return executor.route(config.execution_mode, resolved, resolved[0].index_price)


@dataclass
class RunnerState:
    """What a runner must remember across a restart (section 5, last paragraph)."""

    last_entry_check: float | None = None
    paused: bool = False
    pause_reason: str = ""
    pause_until: float | None = None        # set for the daily open-failure pause
    cooldown_anchor: float | None = None
    day: str = ""
    opened_today: list[str] = field(default_factory=list)
    failed_today: list[str] = field(default_factory=list)
    opened_sent: list[str] = field(default_factory=list)   # on_trade_opened delivered
    closed_sent: list[str] = field(default_factory=list)   # on_trade_closed delivered

    def to_dict(self) -> dict:
        return {
            "last_entry_check": self.last_entry_check, "paused": self.paused, "pause_reason": self.pause_reason,
            "pause_until": self.pause_until, "cooldown_anchor": self.cooldown_anchor, "day": self.day,
            "opened_today": list(self.opened_today), "failed_today": list(self.failed_today),
            "opened_sent": list(self.opened_sent), "closed_sent": list(self.closed_sent),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunnerState":
        def number(key: str) -> float | None:
            value = data.get(key)
            return float(value) if is_number(value) else None

        def ids(key: str) -> list[str]:
            value = data.get(key) or []
            return [str(item) for item in value] if isinstance(value, list) else []

        return cls(
            last_entry_check=number("last_entry_check"), paused=bool(data.get("paused", False)),
            pause_reason=str(data.get("pause_reason") or ""), pause_until=number("pause_until"),
            cooldown_anchor=number("cooldown_anchor"), day=str(data.get("day") or ""),
            opened_today=ids("opened_today"), failed_today=ids("failed_today"),
            opened_sent=ids("opened_sent"), closed_sent=ids("closed_sent"),
        )


@dataclass(frozen=True)
class RunnerStats:
    opened: int = 0
    closed: int = 0
    failed: int = 0
    wins: int = 0
    losses: int = 0
    realized_pnl: float = 0.0
    fees: float = 0.0


class RunnerServices(Protocol):
    """The daemon's services a runner reads; ``app.TradingContext`` provides them.

    A runner builds none of them (``app.build_context`` wires them once), so this module
    depends only on what lies below it.
    """

    @property
    def clock(self) -> Clock: ...

    @property
    def store(self) -> Store: ...

    @property
    def alerts(self) -> AlertSender: ...

    @property
    def market_data(self) -> MarketDataSource: ...

    @property
    def account_manager(self) -> AccountSource: ...

    @property
    def position_monitor(self) -> PositionMonitor: ...

    @property
    def executor(self) -> ModeRouter: ...

    @property
    def lifecycle_manager(self) -> RunnerLifecycle: ...

    @property
    def ledger(self) -> SymbolBlocks: ...

    @property
    def condition_health(self) -> ConditionHealth: ...


class StrategyRunner:
    """Opens the trades of one strategy; registered on the monitor after the lifecycle.

    ``tick(snapshot)`` runs on every monitor wake: callbacks are delivered on every wake,
    entries are considered on poll ticks only (a new snapshot object), through the gates of
    section 5 in order. Nothing here waits or sleeps; nothing here closes a position except
    ``kill``.
    """

    def __init__(self, config: StrategyConfig, ctx: RunnerServices) -> None:
        if not isinstance(config, StrategyConfig):
            raise ConfigError(f"StrategyRunner needs a StrategyConfig, got {type(config).__name__}")
        require("StrategyRunner lifecycle_manager", ctx.lifecycle_manager, RunnerLifecycle)
        require("StrategyRunner market_data", ctx.market_data, MarketDataSource)
        require("StrategyRunner executor", ctx.executor, ModeRouter)
        require("StrategyRunner store", ctx.store, Store)
        require("StrategyRunner alerts", ctx.alerts, AlertSender)
        require("StrategyRunner clock", ctx.clock, Clock)
        require("StrategyRunner ledger", ctx.ledger, SymbolBlocks)
        self.config = config
        self.ctx = ctx
        self.name = config.name
        self._last_snapshot: Any = None
        self._last_block: str | None = None
        # A start-up check that failed while trades of the strategy were open (``_start``): no entry.
        self._config_block: str | None = None
        self._last_resolution: str | None = None   # the legs last resolved, logged when they change
        self._pending_callbacks: set[str] = set()
        # The per-tick view (``_tick_trades``): the leading trades of this strategy that ended and
        # were fully handled (callbacks delivered, counted) need no look until the day rolls.
        self._settled = 0                       # how many leading trades are settled
        self._settled_last: Any = None          # the last settled trade (the prefix still holds?)
        self._settled_ids: set[str] = set()
        self._opened_sent: set[str] = set()     # mirrors of the persisted lists, for lookups
        self._closed_sent: set[str] = set()
        # What gate 10's account-wide rules may trust (``_watch_account``): the active trades of
        # every strategy whose open had ended at the last look, and when (our clock) and which
        # one was last seen ended for the first time.
        self._account_settled: set[str] = set()
        self._account_moved: tuple[float, str] | None = None
        self.callback_name = f"StrategyRunner[{self.name}]"   # how the monitor names this callback
        saved = self._load_state()
        self.state = RunnerState.from_dict(saved) if saved is not None else RunnerState()
        self._saved = self.state.to_dict() if saved is not None else None
        self._saved_fingerprint: tuple | None = None     # of the state last saved (``_persist``)
        if saved is None:
            # Trades that finished before this runner ever existed get no late callbacks.
            self._mark_history_delivered()
        # Exit rules and callbacks for this strategy's trades, including any reloaded at restart
        # (called, never probed: a lifecycle without it must fail here, not leave trades unmanaged).
        ctx.lifecycle_manager.attach_strategy(
            self.name, exit_conditions=list(config.exit_conditions), execution_params=config.execution_params,
            on_opened=self._hook, on_closed=self._hook, smart_config=config.smart_config,
            rfq_params=config.rfq_params)
        self._watch_account(initial=True)
        self._start(ctx.clock.now())

    # ---- start-up ----------------------------------------------------------------------

    def _start(self, now: float) -> None:
        """Clock-dependent checks (a past ``utc_datetime_exit``) and start-up warnings.

        A check that fails refuses the start (incident 41), unless trades of this strategy are
        still open: refusing then would leave them without their exits (a restart after the
        deadline of a ``utc_datetime_exit`` is exactly when its trade must close). The runner
        then starts to manage them, and takes no new entry until the configuration is fixed.
        """
        try:
            self.config.validate_at_start(now)
        except StrategyConfigError as error:
            active = self.ctx.lifecycle_manager.active_trades(self.name)
            if not active:
                raise
            self._config_block = str(error)
            logger.warning("%s; %d trade(s) of strategy %s are open (%s): the runner starts to manage them, and "
                           "takes no new entry until the configuration is fixed", error, len(active), self.name,
                           ", ".join(trade.id for trade in active))
        if not self.config.exit_conditions:
            logger.warning("strategy %s has no exit conditions: its trades close only at expiry or by kill",
                           self.name)
        if self.state.paused:
            logger.warning("strategy %s starts paused: %s", self.name, self.state.pause_reason)
        logger.info("strategy %s ready: %d legs, mode %s, entry %s, exit %s", self.name, len(self.config.legs),
                    self.config.execution_mode,
                    ", ".join(condition_name(c) for c in self.config.entry_conditions) or "none",
                    ", ".join(condition_name(c) for c in self.config.exit_conditions) or "none")
        if self.config.hedge is not None:
            logger.info("strategy %s: %s", self.name, self.config.hedge.describe())

    def _load_state(self) -> dict | None:
        try:
            return self.ctx.store.load_runner_state(self.name)
        except Exception:
            logger.exception("strategy %s: could not load its saved state; starting paused", self.name)
            return {"paused": True, "pause_reason": "runner state unreadable at start-up"}

    def _mark_history_delivered(self) -> None:
        for trade in self._trades():
            if trade.opened_at is not None:
                self.state.opened_sent.append(trade.id)
            if trade.state in TERMINAL_STATES:
                self.state.closed_sent.append(trade.id)

    # ---- public face -------------------------------------------------------------------

    @property
    def is_paused(self) -> bool:
        return self.state.paused

    @property
    def paused_for_good(self) -> bool:
        """Paused until somebody resumes it; a pause that lifts itself (``pause_until``, the
        daily open-failure pause) is not, and any other pause asked meanwhile replaces it."""
        return self.state.paused and self.state.pause_until is None

    def pause(self, reason: str, *, until: float | None = None) -> None:
        """Stop opening trades (open trades keep their exits). Persisted."""
        self.state.paused = True
        self.state.pause_reason = reason or "paused"
        self.state.pause_until = until
        logger.warning("strategy %s paused: %s", self.name, self.state.pause_reason)
        self._persist()

    def resume(self) -> None:
        """Lift the pause, and any symbol block reconciliation put on this strategy's legs."""
        if self.is_paused:
            logger.warning("strategy %s resumed (was: %s)", self.name, self.pause_reason)
        self.state.paused = False
        self.state.pause_reason = ""
        self.state.pause_until = None
        self._persist()
        self.ctx.lifecycle_manager.release_blocks(self.name)

    @property
    def pause_reason(self) -> str:
        return self.state.pause_reason

    @property
    def no_entry_reason(self) -> str | None:
        """Why the last entry check opened no trade (None: it opened one, or none ran yet).

        The reason the log states once per change (``_note_block``), for the operator's view;
        a check skipped by the strategy's own interval ("throttled") leaves the last one.
        """
        return self._last_block

    def kill(self, reason: str = "kill_switch") -> list[str]:
        """Pause, then force-close every active trade of this strategy; returns their ids."""
        self.pause(f"killed: {reason}")
        closed: list[str] = []
        for trade in self.ctx.lifecycle_manager.active_trades(self.name):
            try:
                self.ctx.lifecycle_manager.force_close(trade.id, reason)
                closed.append(trade.id)
            except Exception:
                logger.exception("strategy %s: force-close of %s failed", self.name, trade.id)
        return closed

    @property
    def stats(self) -> RunnerStats:
        trades = self._trades()
        closed = [t for t in trades if t.state == TradeState.CLOSED]
        return RunnerStats(
            opened=sum(1 for t in trades if t.opened_at is not None),
            closed=len(closed),
            failed=sum(1 for t in trades if t.state == TradeState.FAILED),
            wins=sum(1 for t in closed if (t.realized_pnl or 0.0) > 0),
            losses=sum(1 for t in closed if (t.realized_pnl or 0.0) <= 0),
            realized_pnl=math.fsum(t.realized_pnl or 0.0 for t in trades if t.state in TERMINAL_STATES),
            fees=math.fsum(t.fees_paid or 0.0 for t in trades),
        )

    def status(self) -> dict:
        trades = self._trades()
        stats = self.stats
        return {
            "strategy": self.name,
            "underlying": self.config.underlying,
            "paused": self.is_paused,
            "pause_reason": self.pause_reason,
            "active_trades": [t.id for t in trades if t.state not in TERMINAL_STATES],
            "opened_today": len(self.state.opened_today),
            "failed_today": len(self.state.failed_today),
            "last_entry_check": self.state.last_entry_check,
            "cooldown_anchor": self.state.cooldown_anchor,
            "blocked_by": self._last_block,
            "stats": stats.__dict__.copy(),
        }

    def on_snapshot_error(self, error: Exception) -> None:
        """No snapshot, no decision (incident 13); the lifecycle keeps executing."""
        logger.debug("strategy %s: no entry this tick (%s)", self.name, error)

    # ---- the tick ----------------------------------------------------------------------

    def __call__(self, snapshot: AccountSnapshot) -> None:
        """``monitor.register(runner)``: the monitor then also finds ``on_snapshot_error``."""
        self.tick(snapshot)

    def tick(self, snapshot: AccountSnapshot) -> None:
        poll_tick = snapshot is not self._last_snapshot
        self._last_snapshot = snapshot
        now = float(snapshot.timestamp)
        trades, full = self._tick_trades(now)
        self._watch_account()
        self._deliver_callbacks(trades, snapshot, full=full)            # gate 1
        self._observe(trades, now)
        self._settle(trades)
        if poll_tick:
            reason = self._entry(snapshot, trades, now)
            self._note_block(reason)
        self._persist()

    def _tick_trades(self, now: float) -> tuple[list[Any], bool]:
        """The trades this tick must look at, and whether that is every trade of the strategy.

        Why: a tick that walks every trade ever made costs more each day (a month of a busy
        strategy is thousands of trades). Every look at a trade that ended and was handled
        (both callbacks delivered, counted in the day's counters and the cooldown) changes
        nothing, so the trades before the first one that is not so (``_settled``) are skipped.
        Everything else is looked at as before, in the same order, so the result is the same
        as a walk of every trade. A full walk is made instead at the first tick (trades
        reloaded at a restart), when the UTC day rolls (today's counters start from every
        trade again, whatever a clock did), when the lifecycle's list no longer starts with
        the settled trades (a trade replaced or inserted), and when a settled trade is active
        again (a close reversed, docs/RECOVERY.md X1).
        """
        trades = self._trades()
        settled = self._settled
        full = (settled == 0 or self.state.day != utc_day(now) or len(trades) < settled
                or trades[settled - 1] is not self._settled_last
                or any(t.id in self._settled_ids for t in self.ctx.lifecycle_manager.active_trades(self.name)))
        if full:
            self._settled, self._settled_last = 0, None
            self._settled_ids.clear()
            return trades, True
        return trades[settled:], False

    def _settle(self, trades: list[Any]) -> None:
        """Extend the settled prefix over the leading trades of ``trades`` that ended and were handled."""
        for trade in trades:
            if trade.state not in TERMINAL_STATES or trade.id not in self._closed_sent \
                    or (trade.opened_at is not None and trade.id not in self._opened_sent):
                return
            self._settled += 1
            self._settled_last = trade
            self._settled_ids.add(trade.id)

    def _entry(self, snapshot: AccountSnapshot, trades: list[Any], now: float) -> str | None:
        """Gates 2-11; returns why no trade was created (None when one was)."""
        # Every gate must pass, so their order only decides what is reported and what it
        # costs: the index read (a REST call) comes last, right before resolution, so a
        # strategy outside its window or at its limits makes no market-data request at all.
        reason = (self._config_block and f"configuration refused at start: {self._config_block}"
                  or self._gate_paused(now) or self._gate_throttle(now) or self._gate_data(snapshot)
                  or self._gate_single_flight(trades) or self._gate_concurrency(trades)
                  or self._gate_cooldown(now) or self._gate_daily_quota() or self._gate_open_failures(now))
        if reason is not None:
            return reason
        # Not a check: the throttle does not start, so the next snapshot is looked at at once.
        reason = self._gate_account_view(snapshot)
        if reason is not None:
            return reason
        self.state.last_entry_check = now
        for index, cond in enumerate(self.config.entry_conditions):               # gate 10
            label = f"entry_conditions[{index}]:{condition_name(cond)}"
            if not evaluate_entry(cond, snapshot, health=self.ctx.condition_health, strategy=self.name,
                                  name=label):
                return f"entry condition {label} not met"
        reason = self._gate_index()
        if reason is not None:
            return reason
        return self._open(snapshot)

    def _gate_paused(self, now: float) -> str | None:
        until = self.state.pause_until
        if self.state.paused and until is not None and now >= until:
            logger.warning("strategy %s: pause (%s) lifted at 00:00 UTC", self.name, self.state.pause_reason)
            self.state.paused, self.state.pause_reason, self.state.pause_until = False, "", None
        if self.is_paused:
            return f"paused: {self.pause_reason}"
        return None

    def _gate_throttle(self, now: float) -> str | None:
        last = self.state.last_entry_check
        if last is not None and now - last < self.config.check_interval_seconds:
            return "throttled"
        return None

    def _gate_data(self, snapshot: AccountSnapshot) -> str | None:
        # Every gate reads its collaborator directly: a gate that cannot be evaluated must raise
        # (the entry is then blocked and logged), never pass because an attribute was missing.
        hold = self.ctx.lifecycle_manager.hold_reason
        if hold is not None:
            return f"lifecycle on hold: {hold}"
        entry_holds = self.ctx.lifecycle_manager.entry_holds
        if entry_holds:
            return "entries held: " + "; ".join(f"{key}: {reason}" for key, reason in sorted(entry_holds.items()))
        write_errors = int(self.ctx.store.write_errors) + int(self.ctx.lifecycle_manager.persistence_errors)
        if write_errors:
            # BEHAVIOUR 4.6: a trade we could not record must never be opened; exits go on.
            return f"state store write failed ({write_errors} error(s)): entries stop until a restart"
        if not self.ctx.account_manager.reachability.is_up:
            return "exchange unreachable"
        limit = SNAPSHOT_MAX_AGE_POLLS * self.ctx.position_monitor.poll_interval
        age = self.ctx.clock.now() - float(snapshot.timestamp)
        if age > limit:
            return f"snapshot {age:.0f} s old (limit {limit:.0f} s)"
        return None

    def _watch_account(self, *, initial: bool = False) -> None:
        """Note when an open of any strategy was first seen ended (for ``_gate_account_view``).

        Why: the lifecycle ticks after the wake's snapshot was read, so a trade it turns OPEN
        (or UNWINDING) in this wake may have filled after that read. Looked at on every wake;
        a trade that appears already past its open (adopted, reloaded) counts the same. At
        construction the trades already there are taken as known: they are in any snapshot
        to come.
        """
        settled = {t.id for t in self.ctx.lifecycle_manager.active_trades() if t.state not in OPEN_IN_FLIGHT}
        new = settled - self._account_settled
        if new and not initial:
            self._account_moved = (self.ctx.clock.now(), min(new))
        self._account_settled = settled

    def _gate_account_view(self, snapshot: AccountSnapshot) -> str | None:
        """Account-wide entry rules are judged only on a snapshot that shows every trade we opened.

        Why (BEHAVIOUR.md 5, gate 10): every runner of a wake reads the one snapshot fetched at
        its start. A trade another strategy created earlier in the wake, or one still filling,
        or one that turned OPEN after the read, is not in it: two strategies with
        ``max_account_delta(0.2)`` would each pass on delta 0 and leave the account at 0.5,
        and a strategy with ``max_concurrent_trades > 1`` would enter again before its own
        last trade shows. So these rules wait while any open is in flight (a trade created
        after the snapshot is one) and until a snapshot newer than the last open seen ended:
        no failure, the reason logged once. Rules that read no account figure (a time window)
        never wait; a plain callable gets the whole snapshot, so it counts as account-wide.
        """
        if not any(not isinstance(cond, EntryCondition) or cond.reads_account
                   for cond in self.config.entry_conditions):
            return None
        for trade in self.ctx.lifecycle_manager.active_trades():
            if trade.state in OPEN_IN_FLIGHT:
                return f"account gates wait: trade {trade.id} ({trade.strategy}) is still opening"
        moved = self._account_moved
        if moved is not None and float(snapshot.timestamp) <= moved[0]:
            return f"account gates wait: trade {moved[1]} opened after this snapshot was taken"
        return None

    def _gate_index(self) -> str | None:
        """Data gate, second half: the strategy's own underlying's index no older than 15 s and
        not frozen (incidents 14, 15). Another underlying's frozen index does not block it."""
        underlying = self.config.underlying
        try:
            self.ctx.market_data.index_price(underlying, max_age=INDEX_MAX_AGE_SECONDS)
        except Exception as exc:  # no index, no decision (incident 15)
            return f"index unavailable ({underlying}): {exc}"
        if self.ctx.market_data.index_frozen_for(underlying):
            return f"index frozen ({underlying})"
        return None

    @staticmethod
    def _gate_single_flight(trades: list[Any]) -> str | None:
        opening = [t.id for t in trades if t.state in OPENING_STATES]
        return f"trade {opening[0]} still opening" if opening else None

    def _gate_concurrency(self, trades: list[Any]) -> str | None:
        active = sum(1 for t in trades if t.state not in TERMINAL_STATES)
        limit = self.config.max_concurrent_trades
        return f"{active} active trade(s) (max {limit})" if active >= limit else None

    def _gate_cooldown(self, now: float) -> str | None:
        anchor = self.state.cooldown_anchor
        if anchor is not None and now - anchor < self.config.cooldown_seconds:
            until = datetime.fromtimestamp(anchor + self.config.cooldown_seconds, tz=timezone.utc)
            return f"cooldown until {until:%Y-%m-%d %H:%M:%S}Z"
        return None

    def _gate_daily_quota(self) -> str | None:
        limit = self.config.max_trades_per_day
        if limit and len(self.state.opened_today) >= limit:
            return f"daily quota reached ({limit}); next entry after 00:00 UTC"
        return None

    def _gate_open_failures(self, now: float) -> str | None:
        limit = self.config.max_open_failures_per_day
        failures = len(self.state.failed_today)
        if failures < limit:
            return None
        detail = (f"strategy {self.name}: {failures} trades failed to open today (limit {limit}); "
                  f"entries paused until 00:00 UTC")
        logger.warning("health: %s", detail)
        self._alert("WARNING", DAILY_FAILURE_PAUSE, detail)
        self.pause(DAILY_FAILURE_PAUSE, until=next_utc_midnight(now))
        return f"paused: {DAILY_FAILURE_PAUSE}"

    def _open(self, snapshot: AccountSnapshot) -> str | None:
        """Gates 10 (legs) and 11: resolve, route, create. Returns a reason when nothing opened."""
        try:
            resolved = resolve_legs(self.config.legs, self.ctx.market_data)
        except TraderError as exc:
            return f"leg selection failed: {exc}"
        # The selection read the index again (with its chain): that read may be the one that
        # finds it frozen, and strikes chosen from a frozen index are the incident-14 entry.
        if self.ctx.market_data.index_frozen_for(self.config.underlying):
            return f"index frozen ({self.config.underlying}) at leg selection"
        self._note_resolution(resolved)
        blocked = self._blocked_legs(resolved)
        if blocked is not None:
            return blocked
        too_big = self._notional_refusal(resolved)
        if too_big is not None:
            return too_big
        conflict = self._netting_conflict(resolved, snapshot)
        if conflict is not None:
            return conflict
        index_price = resolved[0].index_price
        mode = route_trade(self.config, resolved, self.ctx.executor)
        try:
            trade = self.ctx.lifecycle_manager.create(
                self.name, resolved, execution_mode=mode, exit_conditions=list(self.config.exit_conditions),
                execution_params=self.config.execution_params, metadata=self._trade_metadata(),
                on_opened=self._hook, on_closed=self._hook, smart_config=self.config.smart_config,
                rfq_params=self.config.rfq_params,
            )
        except Exception:
            logger.exception("strategy %s: creating the trade failed", self.name)
            return "trade creation failed"
        logger.info("strategy %s: trade %s created (%s, %s index %.2f): %s", self.name, trade.id, mode,
                    self.config.underlying, index_price,
                    ", ".join(f"{leg.side.name} {leg.qty:g} {leg.symbol}" for leg in resolved))
        return None

    def _trade_metadata(self) -> dict:
        """The new trade's metadata: the strategy's own, and its bound hedge config, kept in the
        record so the lifecycle (and a restart) hedges the trade by the rules it opened with."""
        metadata = dict(self.config.metadata)
        if self.config.hedge is not None:
            metadata["hedge_config"] = self.config.hedge.to_record()
        return metadata

    def _note_resolution(self, resolved: list[ResolvedLeg]) -> None:
        """Log the legs an entry check chose when they differ from the last check's.

        A strategy blocked after resolution (netting, notional) resolves again at every check;
        the same legs again are not news, other strikes are.
        """
        legs = ", ".join(f"{leg.side.name} {fmt_qty(leg.qty)} {leg.symbol}" for leg in resolved)
        if legs == self._last_resolution:
            return
        self._last_resolution = legs
        # The symbols name the underlying (ETHUSD-...), and the index is that underlying's.
        logger.info("strategy %s: resolved %d legs at index %.2f: %s", self.name, len(resolved),
                    float(resolved[0].index_price), legs)

    def _blocked_legs(self, resolved: list[ResolvedLeg]) -> str | None:
        """No trade with a leg on a symbol the ledger blocks until an operator resumes (BEHAVIOUR.md 6.1).

        Why here and not at the order: the ledger refuses the blocked leg's order only after
        the other legs' orders went out (limit: they fill and are unwound at a loss, every
        check until the daily failure pause), and a block trade has no order to refuse. No
        trade is created, so nothing counts as a failed open; the reason is logged once.
        """
        blocks = self.ctx.ledger.blocked_symbols()
        hits = [f"leg {leg.index} {leg.symbol} ({blocks[leg.symbol]})" for leg in resolved if leg.symbol in blocks]
        if not hits:
            return None
        return "symbol blocked until an operator resumes: " + "; ".join(hits)

    def _notional_refusal(self, resolved: list[ResolvedLeg]) -> str | None:
        """No trade whose USD notional (sum of qty x index) exceeds ``max_structure_notional_usd``.

        The quantities are capped at configuration time; the index is only known here, right
        after leg resolution, so this is where a structure that grew expensive with the market
        is refused: no trade, no order. The index is the snapshot's the legs resolved on, i.e.
        the structure's own underlying's (an ETH strangle is ETH qty x the ETH index). The
        reason returned is stable (it does not carry the moving index), so the runner logs it
        once per change; the numbers are logged with it.
        """
        cap = self.config.max_structure_notional_usd
        quantity = math.fsum(abs(float(leg.qty)) for leg in resolved)
        index_price = float(resolved[0].index_price)
        notional = quantity * index_price
        if math.isfinite(notional) and index_price > 0 and notional <= cap:
            return None
        reason = f"structure notional above max_structure_notional_usd={cap:,.0f} USD"
        if reason != self._last_block:
            unit = self.config.underlying
            logger.warning("strategy %s: no trade: %g %s x %s index %s = %s USD is above max_structure_notional_usd="
                           "%s USD; reduce the legs' qty or raise max_structure_notional_usd", self.name, quantity,
                           unit, unit, f"{index_price:,.2f}", f"{notional:,.0f}", f"{cap:,.0f}")
        return reason

    def _netting_conflict(self, resolved: list[ResolvedLeg], snapshot: AccountSnapshot) -> str | None:
        """No leg on the opposite side of a position the account already holds on that symbol.

        The account is one-way netted: a long for this trade and a short for another (or for
        somebody else) on one symbol leave one net position, and the reduce-only close of the
        smaller side would be refused (10536) until the other is gone. Skipping the entry is
        the only safe answer; the next check may pick other strikes.
        """
        held: dict[str, list[tuple[Side, str]]] = {}
        for trade in self.ctx.lifecycle_manager.active_trades():
            for trade_leg in trade.legs:
                held.setdefault(trade_leg.symbol, []).append((Side.of(trade_leg.side), trade.id))
        for leg in resolved:
            sign = leg.side.sign
            for side, trade_id in held.get(leg.symbol, ()):
                if side != leg.side:
                    return (f"leg {leg.index} {leg.symbol} would net against the opposite side held by trade "
                            f"{trade_id} (one-way account: a reduce-only close would be refused)")
            position = snapshot.get_position(leg.symbol)
            if position is not None and position.signed_qty * sign < 0:
                return (f"leg {leg.index} {leg.symbol} would net against the account's {position.signed_qty:+g} "
                        f"position (one-way account: a reduce-only close would be refused)")
        return None

    # ---- callbacks and counters --------------------------------------------------------

    def _hook(self, trade: Any, *_: Any) -> None:
        """Given to the lifecycle: marks a transition; delivery happens in this runner's tick."""
        self._pending_callbacks.add(trade.id)

    def _deliver_callbacks(self, trades: list[Any], snapshot: AccountSnapshot, *, full: bool) -> None:
        """Deliver each trade's opened and closed callbacks once. ``trades`` is every trade of the
        strategy when ``full`` (then ids of trades the lifecycle does not know are dropped from
        the persisted lists), else the ones not settled (``_tick_trades``)."""
        if full:
            self._opened_sent, self._closed_sent = set(self.state.opened_sent), set(self.state.closed_sent)
        opened_sent, closed_sent = self._opened_sent, self._closed_sent
        for trade in trades:
            if trade.opened_at is not None and trade.id not in opened_sent:
                self.state.opened_sent.append(trade.id)
                opened_sent.add(trade.id)
                self._log_opened(trade)
                self._call(self.config.on_trade_opened, "on_trade_opened", trade, snapshot)
            if trade.state in TERMINAL_STATES and trade.id not in closed_sent:
                self.state.closed_sent.append(trade.id)
                closed_sent.add(trade.id)
                self._log_closed(trade)
                self._call(self.config.on_trade_closed, "on_trade_closed", trade, snapshot)
        self._pending_callbacks.clear()
        if full:
            # Trades never leave the lifecycle's list while it runs, so the ids it knows are
            # settled by a full walk; ticks in between only append ids of trades it listed.
            known = {t.id for t in trades}
            self.state.opened_sent = [i for i in self.state.opened_sent if i in known]
            self.state.closed_sent = [i for i in self.state.closed_sent if i in known]
            self._opened_sent.intersection_update(known)
            self._closed_sent.intersection_update(known)

    def _call(self, callback: Callable[[Any, Any], None] | None, what: str, trade: Any, snapshot: Any) -> None:
        if callback is None:
            return
        try:
            callback(trade, snapshot)
        except Exception:
            logger.exception("strategy %s: %s raised for trade %s (ignored)", self.name, what, trade.id)

    def _log_opened(self, trade: Any) -> None:
        fills = ", ".join(f"{Side.of(leg.side).name} {leg.open_filled:g} {leg.symbol} "
                          f"@ {leg.open_vwap:.2f}" for leg in trade.legs)
        logger.info("strategy %s: trade %s OPEN: %s; fees %.4f USD; entry premium %.2f USD", self.name, trade.id,
                    fills, trade.fees_paid or 0.0, trade.entry_premium)

    def _log_closed(self, trade: Any) -> None:
        if trade.state == TradeState.FAILED:
            logger.warning("strategy %s: trade %s FAILED: %s; realized PnL %.2f USD, fees %.4f USD", self.name,
                           trade.id, trade.failure_reason, trade.realized_pnl or 0.0, trade.fees_paid or 0.0)
            return
        logger.info("strategy %s: trade %s CLOSED by %s: realized PnL %.2f USD, fees %.4f USD", self.name,
                    trade.id, trade.exit_reason, trade.realized_pnl or 0.0, trade.fees_paid or 0.0)

    def _observe(self, trades: list[Any], now: float) -> None:
        """Roll the UTC day and merge what the trades say into the persisted counters."""
        day = utc_day(now)
        if self.state.day != day:
            if self.state.day:
                logger.info("strategy %s: new UTC day %s (yesterday: %d opened, %d failed)", self.name, day,
                            len(self.state.opened_today), len(self.state.failed_today))
            self.state.day = day
            self.state.opened_today, self.state.failed_today = [], []
        for trade in trades:
            if trade.opened_at is not None and utc_day(trade.opened_at) == day \
                    and trade.id not in self.state.opened_today:
                self.state.opened_today.append(trade.id)
            failed_at = trade.failed_at
            if trade.state == TradeState.FAILED and failed_at is not None and utc_day(failed_at) == day \
                    and trade.id not in self.state.failed_today:
                self.state.failed_today.append(trade.id)
            for ended in (trade.closed_at, trade.failed_at):
                if ended is not None and (self.state.cooldown_anchor is None or ended > self.state.cooldown_anchor):
                    self.state.cooldown_anchor = float(ended)

    # ---- plumbing ----------------------------------------------------------------------

    def _trades(self) -> list[Any]:
        return list(self.ctx.lifecycle_manager.trades(self.name))

    def _note_block(self, reason: str | None) -> None:
        """Log why no trade opened, once per change of reason (a gate is not news every tick).

        Two reasons that differ only in their figures (a snapshot's age, the index quoted in a
        selection error) are the same news: the first is logged, ``no_entry_reason`` keeps the
        latest.
        """
        if reason is not None and reason != "throttled" and (
                self._last_block is None or _FIGURES.sub("#", reason) != _FIGURES.sub("#", self._last_block)):
            level = logging.WARNING if reason.startswith(WARNING_BLOCKS) else logging.INFO
            logger.log(level, "strategy %s: no entry: %s", self.name, reason)
        if reason != "throttled":
            self._last_block = reason

    def _alert(self, level: str, kind: str, detail: str) -> None:
        try:
            self.ctx.alerts.alert(level, kind, detail, strategy=self.name)
        except Exception:
            logger.exception("alert failed: %s", detail)

    def _fingerprint(self) -> tuple:
        """What says whether the state changed, without copying it: every scalar, and each list by
        identity and length (this class only appends to its lists or replaces them)."""
        state = self.state
        return (state.last_entry_check, state.paused, state.pause_reason, state.pause_until,
                state.cooldown_anchor, state.day,
                state.opened_today, len(state.opened_today), state.failed_today, len(state.failed_today),
                state.opened_sent, len(state.opened_sent), state.closed_sent, len(state.closed_sent))

    def _persist(self) -> None:
        """Save the state when it changed (every tick asks; few ticks change it).

        ``to_dict`` copies every delivered trade id, the whole history, so it is made only when
        the fingerprint moved (a tuple compare: the same list object is equal at once).
        """
        fingerprint = self._fingerprint()
        if fingerprint == self._saved_fingerprint:
            return
        current = self.state.to_dict()
        if current == self._saved:
            self._saved_fingerprint = fingerprint
            return
        try:
            self.ctx.store.save_runner_state(self.name, current)
        except Exception:
            logger.exception("strategy %s: could not save its state (will retry next tick)", self.name)
            return
        self._saved = current
        self._saved_fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"StrategyRunner({self.name!r}, paused={self.is_paused})"


__all__ = [
    "StrategyConfig", "StrategyRunner", "RunnerServices", "RunnerState", "RunnerStats", "build_strategy_configs",
    "check_unique_names", "utc_day", "next_utc_midnight", "route_trade", "EXECUTION_MODES",
    "StrategyConfigError", "factory_failure", "FactorySite",
    "time_window", "utc_time_window", "weekday_filter", "min_available_margin_pct", "min_equity",
    "max_account_delta", "max_margin_utilization", "no_existing_position_in",
    "profit_target", "max_loss", "profit_target_pct", "max_loss_pct", "max_hold_hours", "time_exit",
    "utc_datetime_exit", "account_delta_limit", "structure_delta_limit", "leg_greek_limit",
]
