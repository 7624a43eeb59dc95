"""Trade lifecycle: states, PnL from our own fills, exits, closes, breaker and settlement.

BEHAVIOUR.md section 4 is the contract. Three ideas carry the whole module:

* **Our ledger is the only truth about exposure and PnL.** A leg's ``net_qty`` is its open
  fills minus its close/unwind/kill fills minus what was settled, all read from the
  ``OrderLedger``; account positions, ``upnl`` and pro-rating are never used (incidents 4, 33).
* **Nothing blocks.** Every execution is a job advanced one step per tick, so one trade's
  slow close never delays another trade's exit (incident 37); every wait is a deadline
  compared with the injected clock.
* **Every state change is written before the next request for that trade** (I5), so a crash
  between two steps leaves a store that says what really happened.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Callable, Iterable, Mapping, Sequence

from alerts import send_alert
from clock import Clock
from coincall_payloads import (
    ExerciseRecord,
    history_filters,
    parse_delivery_prices,
    parse_estimated_expiration_price,
    parse_exercise_records,
)
from conditions import (
    ConditionHealth,
    ExitCondition,
    ExitVerdict,
    account_delta_limit,
    condition_name,
    judge_exit,
    leg_greek_limit,
    max_hold_hours,
    max_loss,
    max_loss_pct,
    profit_target,
    profit_target_pct,
    structure_delta_limit,
    time_exit,
    utc_datetime_exit,
)
from contracts import Contract, Side
from errors import StaleDataError, TraderError
from execution_job import JobStatus, LegTarget
from option_selection import ResolvedLeg
from order_ledger import Intent, OrderStatus
from price_sanity import InsanePriceError, quote_problems
from seams import (
    AlertSender,
    JobStarter,
    LifecycleLedger,
    LifecycleStore,
    PriceSource,
    SettlementClient,
    require,
)
from trade_execution import MODES, ExecutionParams, fair_value

logger = logging.getLogger(__name__)

QTY_EPSILON = 1e-9               # below this a quantity is zero (fills are 0.01 lots)
QUOTE_MAX_AGE_SECONDS = 15.0     # exit valuation quotes (BEHAVIOUR 7.2)
HALT_SECONDS_BEFORE_EXPIRY = 15 * 60
TAKER_FEE_RATE = 0.0003          # estimated close fee of the executable valuation (2.3)
FEE_CAP_OF_PREMIUM = 0.125
DELIVERY_FEE_RATE = 0.00015      # API.md 4, none for daily options
BREAKER_ROUNDS = 10
BREAKER_FIRST_DELAY = 300.0
BREAKER_MAX_DELAY = 3600.0
UNEVALUABLE_ALERT_SECONDS = 60.0
DELIVERY_WARN_SECONDS = 3600.0
DELIVERY_ESTIMATE_SECONDS = 24 * 3600.0
DELIVERY_RETRY_SECONDS = 10.0
EXTERNAL_TRADE_ID = "T000000000"

EXIT_REASON_EXPIRY = "expiry"
EXIT_REASON_MANUAL = "manual"
EXIT_REASON_KILL = "kill_switch"
EXIT_REASON_EXTERNAL = "external_close"
FLAG_PNL_ESTIMATED = "pnl_estimated"     # written by older versions only: an external close with no fill
FLAG_EXTERNAL_REVERSED = "external_close_reversed"
# An external close an older version booked without evidence is reversible this long (RECOVERY.md X1).
REVERSAL_LOOKBACK_SECONDS = 7 * 24 * 3600.0


class TradeState(str, Enum):
    PENDING_OPEN = "PENDING_OPEN"
    OPENING = "OPENING"
    UNWINDING = "UNWINDING"
    OPEN = "OPEN"
    PENDING_CLOSE = "PENDING_CLOSE"
    CLOSING = "CLOSING"
    SETTLING = "SETTLING"
    CLOSED = "CLOSED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (TradeState.CLOSED, TradeState.FAILED)


TERMINAL_STATES = frozenset({TradeState.CLOSED, TradeState.FAILED})

_S = TradeState
# Every state change a trade may make (docs/RECOVERY.md and the lifecycle's docstrings give the
# events). ``LifecycleManager._set_state`` refuses anything else: a transition missing here is a
# bug, and failing loudly beats a trade silently in a state its rules do not cover.
TRANSITIONS: dict[TradeState, frozenset[TradeState]] = {
    _S.PENDING_OPEN: frozenset({_S.OPENING, _S.FAILED}),
    _S.OPENING: frozenset({_S.OPEN, _S.UNWINDING, _S.FAILED, _S.SETTLING}),
    _S.UNWINDING: frozenset({_S.FAILED, _S.SETTLING}),
    _S.OPEN: frozenset({_S.PENDING_CLOSE, _S.SETTLING, _S.CLOSED}),        # CLOSED: an evidenced external close
    _S.PENDING_CLOSE: frozenset({_S.CLOSING, _S.SETTLING, _S.CLOSED}),
    _S.CLOSING: frozenset({_S.CLOSED, _S.PENDING_CLOSE, _S.SETTLING}),
    _S.SETTLING: frozenset({_S.CLOSED, _S.FAILED}),
    # Terminal, except for reopening a close an older version booked without evidence
    # (RECOVERY.md X1): the trade goes back to where its fills put it.
    _S.CLOSED: frozenset({_S.OPEN}),
    _S.FAILED: frozenset({_S.OPENING}),
}


class IllegalTransition(RuntimeError):
    """A trade state change the transition table does not allow (a bug, never an exchange event)."""


def _zero(qty: float) -> bool:
    return abs(qty) < QTY_EPSILON


def _clean_qty(qty: float) -> float:
    """Sum of 0.01 lots without float residue; never negative."""
    value = round(float(qty), 8)
    return 0.0 if value < QTY_EPSILON else value


def is_daily_expiry(expiry_ms: int) -> bool:
    """Weeklies, monthlies and quarterlies expire on Fridays; every other expiry is a daily."""
    return datetime.fromtimestamp(expiry_ms / 1000.0, tz=timezone.utc).weekday() != 4


def intrinsic_value(option_type: str, strike: float, delivery: float) -> float:
    if option_type.upper().startswith("C"):
        return max(0.0, delivery - strike)
    return max(0.0, strike - delivery)


def estimated_delivery_fee(expiry_ms: int, qty: float, delivery: float, intrinsic: float) -> float:
    """API.md 4: min(qty x index x 0.015 %, qty x |settle - strike| x 12.5 %); dailies pay none."""
    if is_daily_expiry(expiry_ms):
        return 0.0
    return round(min(qty * delivery * DELIVERY_FEE_RATE, qty * intrinsic * FEE_CAP_OF_PREMIUM), 8)


# --------------------------------------------------------------------------------------------
# Legs and trades
# --------------------------------------------------------------------------------------------


@dataclass
class Settlement:
    """What expiry paid a leg: cash = sign x intrinsic x qty, fee per API.md 4."""

    delivery_price: float
    qty: float
    intrinsic: float
    cash: float
    fee: float
    fee_estimated: bool = False
    price_estimated: bool = False
    settled_at: float = 0.0

    def to_record(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> "Settlement":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class LegValue:
    """How one leg was valued: the price used and whether a fallback rule applied."""

    leg_index: int
    symbol: str
    price: float
    fee: float
    degraded: bool
    bid: float
    ask: float
    mark: float
    as_of: float


@dataclass
class Valuation:
    """``pnl(mode)`` with its evidence (kept in ``exit_detail`` when an exit fires)."""

    mode: str
    value: float
    cash: float
    fees: float
    legs: list[LegValue]

    @property
    def degraded(self) -> bool:
        return any(leg.degraded for leg in self.legs)

    def to_detail(self) -> dict:
        return {
            "mode": self.mode, "pnl": self.value, "cash": self.cash, "fees": self.fees,
            "degraded": self.degraded,
            "quotes": {leg.symbol: {"bid": leg.bid, "ask": leg.ask, "mark": leg.mark, "price": leg.price,
                                    "as_of": leg.as_of, "degraded": leg.degraded} for leg in self.legs},
        }


@dataclass
class TradeLeg:
    """One leg of a trade, with our fills aggregated from the ledger.

    ``close_*`` sums every reducing family (close, unwind, kill). ``adopted_qty`` is exposure
    that did not come from our open fills (positions adopted by the kill switch).
    ``external_qty`` is what somebody else closed (found by reconciliation on fills that are
    not ours, docs/RECOVERY.md S3); ``external_price`` is the average price of those fills.
    The option it trades is its ``contract`` (one value, never re-listed field by field).
    """

    index: int
    contract: Contract
    side: Side
    qty: float
    open_filled: float = 0.0
    open_vwap: float = 0.0
    open_fees: float = 0.0
    close_filled: float = 0.0
    close_vwap: float = 0.0
    close_fees: float = 0.0
    settlement: Settlement | None = None
    adopted_qty: float = 0.0
    external_qty: float = 0.0
    external_price: float = 0.0
    quote: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.side = Side.of(self.side)

    # The leg's documented read interface (BEHAVIOUR.md §4.1, what strategy callbacks see),
    # read through the contract: the identity is held once.
    @property
    def symbol(self) -> str:
        return self.contract.symbol

    @property
    def option_type(self) -> str:
        return self.contract.option_type

    @property
    def strike(self) -> float:
        return self.contract.strike

    @property
    def expiry_ms(self) -> int:
        return self.contract.expiry_ms

    @property
    def expiry(self) -> datetime:
        return self.contract.expiry

    @property
    def sign(self) -> int:
        return self.side.sign

    def open_target(self) -> LegTarget:
        """What the open job must do on this leg: the leg's own side and quantity."""
        return LegTarget(self.index, self.symbol, self.side, self.qty)

    def reducing_target(self) -> LegTarget:
        """What a close, unwind or kill must do: the opposite side, for what we still hold (4.4)."""
        return LegTarget(self.index, self.symbol, self.side.opposite, self.net_qty)

    @property
    def settled_qty(self) -> float:
        return self.settlement.qty if self.settlement is not None else 0.0

    @property
    def net_qty(self) -> float:
        """Open fills (+ adopted) - reducing fills - settled - closed externally."""
        return _clean_qty(self.open_filled + self.adopted_qty - self.close_filled - self.settled_qty
                          - self.external_qty)

    @property
    def fees(self) -> float:
        settlement_fee = self.settlement.fee if self.settlement is not None else 0.0
        return self.open_fees + self.close_fees + settlement_fee

    @property
    def open_cash(self) -> float:
        """Cash of the open fills: a buy pays, a sell receives (fees excluded)."""
        return -self.sign * self.open_vwap * self.open_filled

    @property
    def close_cash(self) -> float:
        return self.sign * self.close_vwap * self.close_filled

    @property
    def settlement_cash(self) -> float:
        return self.settlement.cash if self.settlement is not None else 0.0

    @property
    def external_cash(self) -> float:
        """Cash of the part closed outside the daemon, at its fills' price (same sign rule as a close)."""
        return self.sign * self.external_price * self.external_qty

    @property
    def cash(self) -> float:
        return self.open_cash + self.close_cash + self.settlement_cash + self.external_cash

    def is_frozen(self, now: float) -> bool:
        """Inside the pre-expiry halt: no new order on this symbol (BEHAVIOUR 4.5)."""
        return now >= self.contract.expiry_seconds - HALT_SECONDS_BEFORE_EXPIRY

    def is_expired(self, now: float) -> bool:
        return now >= self.contract.expiry_seconds

    def greek(self, name: str) -> float | None:
        """Per-contract greek of the last quote refresh; None when unknown."""
        if self.quote is None:
            return None
        value = getattr(self.quote, name, None)
        if value is None or isinstance(value, bool):
            return None
        value = float(value)
        return value if math.isfinite(value) else None

    def to_record(self) -> dict:
        """The stored form: the contract's fields flat beside the leg's, as records have always been."""
        return {
            "index": self.index, **self.contract.to_record(), "side": int(self.side), "qty": self.qty,
            "open_filled": self.open_filled, "open_vwap": self.open_vwap, "open_fees": self.open_fees,
            "close_filled": self.close_filled, "close_vwap": self.close_vwap, "close_fees": self.close_fees,
            "fees": self.fees, "net_qty": self.net_qty, "adopted_qty": self.adopted_qty,
            "external_qty": self.external_qty, "external_price": self.external_price,
            "settlement": self.settlement.to_record() if self.settlement is not None else None,
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> "TradeLeg":
        settlement = data.get("settlement")
        return cls(
            index=int(data["index"]), contract=Contract.from_record(data), side=Side.of(int(data["side"])),
            qty=float(data["qty"]), open_filled=float(data.get("open_filled", 0.0)),
            open_vwap=float(data.get("open_vwap", 0.0)), open_fees=float(data.get("open_fees", 0.0)),
            close_filled=float(data.get("close_filled", 0.0)), close_vwap=float(data.get("close_vwap", 0.0)),
            close_fees=float(data.get("close_fees", 0.0)), adopted_qty=float(data.get("adopted_qty", 0.0)),
            external_qty=float(data.get("external_qty", 0.0)), external_price=float(data.get("external_price", 0.0)),
            settlement=Settlement.from_record(settlement) if settlement else None,
        )


def _value_of_contract(mode: str, leg: TradeLeg, quote: Any) -> tuple[float, bool]:
    """The value of one contract under ``mode`` (BEHAVIOUR 2.3); returns (price, degraded)."""
    bid = float(quote.bid or 0.0)
    ask = float(quote.ask or 0.0)
    mark = float(quote.mark)
    if mode == "mark":
        return mark, False
    if mode == "mid":
        if bid > 0 and ask > 0:
            return (bid + ask) / 2.0, False
        return fair_value(bid, ask, mark), True
    if mode == "fair":
        return fair_value(bid, ask, mark), False
    if mode == "executable":
        if leg.sign > 0:
            return (bid if bid > 0 else 0.0), False
        if ask > 0:
            return ask, False
        return mark, True
    raise ValueError(f"unknown valuation mode {mode!r}; use mark, mid, fair or executable")


@dataclass
class TradeLifecycle:
    """One trade: its legs, state, timestamps and decisions (BEHAVIOUR 1.7, 4.1)."""

    id: str
    seq: int
    strategy: str
    state: TradeState
    legs: list[TradeLeg]
    execution_mode: str = "limit"
    created_at: float = 0.0
    opened_at: float | None = None
    exit_decided_at: float | None = None
    closed_at: float | None = None
    failed_at: float | None = None
    exit_reason: str | None = None
    exit_detail: dict = field(default_factory=dict)
    failure_reason: str | None = None
    realized_pnl: float | None = None
    fees_paid: float = 0.0
    metadata: dict = field(default_factory=dict)
    close_rounds: int = 0
    failed_rounds: int = 0
    unwind_rounds: int = 0
    breaker_trips: int = 0
    breaker_until: float | None = None
    flags: list[str] = field(default_factory=list)
    opened_notified: bool = False
    closed_notified: bool = False
    exit_condition_names: list[str] = field(default_factory=list)
    _clock: Clock | None = field(default=None, repr=False, compare=False)

    # ---- exposure -----------------------------------------------------------------

    def bind_clock(self, clock: Clock) -> None:
        """The clock that ``pnl`` measures quote age against (set by the manager)."""
        self._clock = clock

    def exposure(self) -> dict[int, float]:
        """Signed net quantity per leg index (+ long, - short), legs with exposure only."""
        return {leg.index: leg.sign * leg.net_qty for leg in self.legs if not _zero(leg.net_qty)}

    @property
    def has_exposure(self) -> bool:
        return any(not _zero(leg.net_qty) for leg in self.legs)

    @property
    def is_active(self) -> bool:
        return self.state not in TERMINAL_STATES

    @property
    def entry_premium(self) -> float:
        """Sum of the open fills' cash flows (negative = net debit), fees excluded."""
        return sum(leg.open_cash for leg in self.legs)

    def cash_flows(self) -> float:
        """Cash of every fill and settlement of this trade, fees excluded."""
        return sum(leg.cash for leg in self.legs)

    def total_fees(self) -> float:
        return sum(leg.fees for leg in self.legs)

    def realized(self) -> float:
        """Cash flows minus fees: the realized PnL once exposure is zero."""
        return round(self.cash_flows() - self.total_fees(), 8)

    # ---- valuation ----------------------------------------------------------------

    def _now(self, now: float | None) -> float | None:
        if now is not None:
            return float(now)
        return float(self._clock.now()) if self._clock is not None else None

    def _fresh_quote(self, leg: TradeLeg, now: float | None) -> Any:
        """The leg's quote when it is fresh and believable, else ``StaleDataError``.

        An insane quote (a mark of 0, a price outside the sanity band of ``price_sanity``)
        raises ``InsanePriceError``, a ``StaleDataError``: that snapshot of the leg is "no
        valuation" and PnL exits wait for a sane one (issue 9, finding 4).
        """
        quote = leg.quote
        if quote is None:
            raise StaleDataError(f"{self.id} leg {leg.index} {leg.symbol}: no quote")
        if now is not None and now - float(quote.as_of) > QUOTE_MAX_AGE_SECONDS:
            raise StaleDataError(f"{self.id} leg {leg.index} {leg.symbol}: quote is {now - float(quote.as_of):.1f} s "
                                 f"old (> {QUOTE_MAX_AGE_SECONDS:.0f} s)")
        problems = quote_problems(quote, leg.symbol)
        if problems:
            raise InsanePriceError(f"{self.id} leg {leg.index} {leg.symbol}: no valuation: " + "; ".join(problems))
        return quote

    def valuation(self, mode: str = "fair", *, now: float | None = None) -> Valuation:
        """PnL with evidence. Raises ``StaleDataError`` when a leg with exposure lacks a fresh mark."""
        mode = str(mode).lower()
        now = self._now(now)
        cash = self.cash_flows()
        fees = self.total_fees()
        value = cash - fees
        legs: list[LegValue] = []
        for leg in self.legs:
            qty = leg.net_qty
            if _zero(qty):
                continue
            quote = self._fresh_quote(leg, now)
            price, degraded = _value_of_contract(mode, leg, quote)
            fee = 0.0
            if mode == "executable":
                index = float(quote.underlying_price or 0.0)
                fee = min(qty * index * TAKER_FEE_RATE, qty * price * FEE_CAP_OF_PREMIUM)
            value += leg.sign * qty * price - fee
            legs.append(LegValue(leg.index, leg.symbol, price, fee, degraded, float(quote.bid or 0.0),
                                 float(quote.ask or 0.0), float(quote.mark), float(quote.as_of)))
        return Valuation(mode, round(value, 8), cash, fees, legs)

    def pnl(self, mode: str = "fair", *, now: float | None = None) -> float:
        """Our fills' cash - fees + value of what we still hold (BEHAVIOUR 2.3)."""
        return self.valuation(mode, now=now).value

    def structure_delta(self) -> float:
        """Sum of sign x net_qty x delta over our legs; StaleDataError if a delta is unknown or stale."""
        now = self._now(None)
        total = 0.0
        for leg in self.legs:
            if _zero(leg.net_qty):
                continue
            self._fresh_quote(leg, now)
            delta = leg.greek("delta")
            if delta is None:
                raise StaleDataError(f"{self.id} leg {leg.index} {leg.symbol}: no delta")
            total += leg.sign * leg.net_qty * delta
        return total

    # ---- records ------------------------------------------------------------------

    def to_record(self) -> dict:
        return {
            "id": self.id, "seq": self.seq, "strategy": self.strategy, "state": self.state.value,
            "legs": [leg.to_record() for leg in self.legs], "execution_mode": self.execution_mode,
            "created_at": self.created_at, "opened_at": self.opened_at, "exit_decided_at": self.exit_decided_at,
            "closed_at": self.closed_at, "failed_at": self.failed_at, "exit_reason": self.exit_reason,
            "exit_detail": self.exit_detail, "failure_reason": self.failure_reason,
            "realized_pnl": self.realized_pnl, "fees_paid": self.fees_paid, "metadata": self.metadata,
            "entry_premium": self.entry_premium, "close_rounds": self.close_rounds,
            "failed_rounds": self.failed_rounds, "unwind_rounds": self.unwind_rounds,
            "breaker_trips": self.breaker_trips, "breaker_until": self.breaker_until, "flags": list(self.flags),
            "opened_notified": self.opened_notified, "closed_notified": self.closed_notified,
            "exit_condition_names": list(self.exit_condition_names),
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> "TradeLifecycle":
        simple = ("execution_mode", "created_at", "opened_at", "exit_decided_at", "closed_at", "failed_at",
                  "exit_reason", "failure_reason", "realized_pnl", "fees_paid", "close_rounds", "failed_rounds",
                  "unwind_rounds", "breaker_trips", "breaker_until", "opened_notified", "closed_notified")
        trade = cls(id=str(data["id"]), seq=int(data["seq"]), strategy=str(data["strategy"]),
                    state=TradeState(data["state"]), legs=[TradeLeg.from_record(leg) for leg in data["legs"]])
        for name in simple:
            if name in data:
                setattr(trade, name, data[name])
        trade.exit_detail = dict(data.get("exit_detail") or {})
        trade.metadata = dict(data.get("metadata") or {})
        trade.flags = list(data.get("flags") or [])
        trade.exit_condition_names = list(data.get("exit_condition_names") or [])
        return trade


# --------------------------------------------------------------------------------------------
# The manager
# --------------------------------------------------------------------------------------------


def urgent_execution_params() -> ExecutionParams:
    """The urgent profile for unwind and kill (BEHAVIOUR 4.3): mark for 60 s repricing every
    15 s, then aggressive with a 5 % buffer for 120 s repricing every 10 s."""
    return ExecutionParams.urgent()


@dataclass
class _Streak:
    """One exit condition's run of consecutive sane evaluations that returned True.

    ``stamps`` are the quotes' ``as_of`` of the legs we held at the last counted evaluation,
    so the same quotes seen on two polls count once; ``seen`` goes into the exit detail (I3).
    """

    condition: Any
    stamps: tuple = ()
    seen: list = field(default_factory=list)


def _confirmations_of(cond: Any) -> int:
    """How many consecutive sane True results ``cond`` needs; a plain callable needs one."""
    return int(cond.confirmations) if isinstance(cond, ExitCondition) else 1


def _quote_stamps(trade: TradeLifecycle) -> tuple:
    return tuple(float(leg.quote.as_of) for leg in trade.legs if not _zero(leg.net_qty) and leg.quote is not None)


def _newer(stamps: tuple, previous: tuple) -> bool:
    """Every held leg's quote is newer than at the last counted evaluation (a leg set changed counts)."""
    if len(stamps) != len(previous):
        return True
    return all(now > before for now, before in zip(stamps, previous))


@dataclass
class _Runtime:
    """Per-trade state that lives only in memory (jobs, callbacks, conditions)."""

    exit_conditions: tuple = ()
    params: Any = None                      # ExecutionParams of the limit engine
    engine_params: dict = field(default_factory=dict)   # "smart" / "rfq" -> their own config
    on_opened: Callable[[TradeLifecycle], Any] | None = None
    on_closed: Callable[[TradeLifecycle], Any] | None = None
    job: Any = None
    job_kind: str | None = None
    pending_close_reason: str | None = None
    kill: bool = False
    unevaluable_since: float | None = None
    unevaluable_alerted: bool = False
    insane_since: float | None = None       # an episode of insane quotes (logged once, at its start)
    exit_streaks: dict = field(default_factory=dict)    # condition position -> _Streak (confirmations)
    next_settlement_check: float = 0.0
    delivery_warned: bool = False


@dataclass(frozen=True)
class StrategyHooks:
    """What a strategy gives each of its trades: exit rules, execution params, callbacks.

    Kept per strategy name so that trades reloaded after a restart get the rules of the
    strategy of the same name (BEHAVIOUR 4.7); a trade whose strategy is gone is unmanaged.
    """

    exit_conditions: tuple = ()
    execution_params: Any = None
    on_opened: Callable[[TradeLifecycle], Any] | None = None
    on_closed: Callable[[TradeLifecycle], Any] | None = None
    smart_config: Any = None
    rfq_params: Any = None


class LifecycleManager:
    """Owns every trade and drives it through BEHAVIOUR 4.2 one non-blocking step per tick."""

    callback_name = "LifecycleManager"   # how the monitor names this callback

    def __init__(self, *, ledger: LifecycleLedger, executor: JobStarter, market: PriceSource,
                 client: SettlementClient, clock: Clock, store: LifecycleStore | None = None,
                 alerts: AlertSender | None = None, exec_params_default: ExecutionParams | None = None,
                 urgent_params: ExecutionParams | None = None, quote_max_age: float = 5.0,
                 health: ConditionHealth | None = None, journal: Callable[[str, dict], Any] | None = None) -> None:
        require("LifecycleManager ledger", ledger, LifecycleLedger)
        require("LifecycleManager executor", executor, JobStarter)
        require("LifecycleManager market", market, PriceSource)
        require("LifecycleManager client", client, SettlementClient)
        require("LifecycleManager clock", clock, Clock)
        if store is not None:
            require("LifecycleManager store", store, LifecycleStore)
        if alerts is not None:
            require("LifecycleManager alerts", alerts, AlertSender)
        self.ledger = ledger
        self.executor = executor
        self.market = market
        self.client = client
        self.clock = clock
        self.store = store
        self.alerts = alerts
        self.journal = journal
        self.exec_params_default = exec_params_default or ExecutionParams()
        self.urgent_params = urgent_params or urgent_execution_params()
        self.quote_max_age = float(quote_max_age)
        self.health = health or ConditionHealth(on_alert=self._condition_alert)
        self._lock = threading.RLock()
        self._trades: dict[str, TradeLifecycle] = {}
        self._runtime: dict[str, _Runtime] = {}
        self._hooks: dict[str, StrategyHooks] = {}
        self._next_seq = 1
        self._last_snapshot: Any = None
        self._delivery_prices: dict[int, float] = {}
        self.persistence_errors = 0
        self.breaker_trips = 0
        self._hold_reason: str | None = None
        self._entry_holds: dict[str, str] = {}
        self._entry_holds_lock = threading.Lock()
        self._hold_logged = False

    def __repr__(self) -> str:
        return f"LifecycleManager(trades={len(self._trades)})"

    def __call__(self, snapshot: Any) -> None:
        """So that ``monitor.register(manager)`` also finds ``on_snapshot_error``."""
        self.tick(snapshot)

    # ---- queries --------------------------------------------------------------------

    def get(self, trade_id: str) -> TradeLifecycle | None:
        with self._lock:
            return self._trades.get(trade_id)

    def trades(self, strategy: str | None = None) -> list[TradeLifecycle]:
        with self._lock:
            return [t for t in sorted(self._trades.values(), key=lambda t: t.seq)
                    if strategy is None or t.strategy == strategy]

    def active_trades(self, strategy: str | None = None) -> list[TradeLifecycle]:
        return [t for t in self.trades(strategy) if t.is_active]

    def unmanaged_trades(self) -> list[TradeLifecycle]:
        """Active trades whose strategy is not running: no exit rule applies (BEHAVIOUR 4.7)."""
        with self._lock:
            return [t for t in self.active_trades() if t.seq != 0 and t.strategy not in self._hooks]

    def has_active_jobs(self) -> bool:
        """True while any job runs or a close/unwind waits for its next round (fast wakes)."""
        with self._lock:
            now = self.clock.now()
            for trade in self._trades.values():
                runtime = self._runtime.get(trade.id)
                if runtime is not None and runtime.job is not None:
                    return True
                if (trade.state in (TradeState.PENDING_CLOSE, TradeState.UNWINDING)
                        and not self._breaker_active(trade, runtime, now) and self._reducing_targets(trade, now)):
                    return True
            return False

    # ---- creation -------------------------------------------------------------------

    def create(self, strategy: str, resolved_legs: Sequence[ResolvedLeg], *, execution_mode: str = "limit",
               exit_conditions: Iterable[Any] = (), execution_params: ExecutionParams | None = None,
               metadata: dict | None = None, on_opened: Callable[[TradeLifecycle], Any] | None = None,
               on_closed: Callable[[TradeLifecycle], Any] | None = None, smart_config: Any = None,
               rfq_params: Any = None) -> TradeLifecycle:
        """§4.2 rows 1-2: persist PENDING_OPEN, start the open job, persist OPENING, take its first step.

        ``execution_mode`` is the runner's routing decision (``StrategyRunner`` asks
        ``TradeExecutor.route`` once, on the resolved legs) and is final: the trade stores it
        and every job of the trade uses it. ``auto`` is refused here: it is not a decision.
        """
        if not resolved_legs:
            raise ValueError("a trade needs at least one resolved leg")
        if execution_mode not in MODES:
            raise ValueError(f"execution_mode must be a routed mode, one of {', '.join(MODES)}; got "
                             f"{execution_mode!r} (the strategy runner routes 'auto' before creating the trade)")
        with self._lock:
            now = self.clock.now()
            seq = self._allocate_seq()
            legs = [TradeLeg(index=r.index, contract=r.contract, side=r.side, qty=float(r.qty), quote=r.row)
                    for r in resolved_legs]
            conditions = tuple(exit_conditions)
            trade = TradeLifecycle(id=f"T{seq:09d}", seq=seq, strategy=strategy, state=TradeState.PENDING_OPEN,
                                   legs=legs, execution_mode=execution_mode, created_at=now,
                                   metadata=dict(metadata or {}),
                                   exit_condition_names=[condition_name(c) for c in conditions])
            trade.bind_clock(self.clock)
            runtime = _Runtime(exit_conditions=conditions, params=execution_params or self.exec_params_default,
                               engine_params={"smart": smart_config, "rfq": rfq_params},
                               on_opened=on_opened, on_closed=on_closed)
            self._trades[trade.id] = trade
            self._runtime[trade.id] = runtime
            targets = [leg.open_target() for leg in legs]
            self._persist(trade, "created")
            try:
                runtime.job = self.executor.start(trade.execution_mode, trade, targets, Intent.OPEN,
                                                  self._params_for(runtime, trade.execution_mode),
                                                  best_effort=False)
                runtime.job_kind = "open"
            except Exception as error:  # noqa: BLE001 - an unstartable open is a failed trade, not a crash
                logger.exception("trade %s: the open job could not start", trade.id)
                self._fail(trade, now, f"open job could not start: {type(error).__name__}: {error}")
                return trade
            self._set_state(trade, TradeState.OPENING)
            self._step_job(trade, runtime, now)
            return trade

    def _allocate_seq(self) -> int:
        if self.store is not None:
            return int(self.store.next_trade_seq())
        seq = self._next_seq
        self._next_seq += 1
        return seq

    # ---- the tick -------------------------------------------------------------------

    def tick(self, snapshot: Any) -> None:
        """One wake: advance jobs, settle, evaluate exits on poll ticks, start closes at once."""
        if self._on_hold():
            return
        with self._lock:
            poll_tick = snapshot is not None and snapshot is not self._last_snapshot
            if snapshot is not None:
                self._last_snapshot = snapshot
            self._run(snapshot if poll_tick else None)

    def on_snapshot_error(self, error: Exception) -> None:
        """No snapshot this wake: jobs keep advancing, no exit is evaluated (incident 13)."""
        if self._on_hold():
            return
        logger.info("lifecycle tick without a snapshot (%s): jobs advance, exits wait", error)
        with self._lock:
            self._run(None)

    def _run(self, poll_snapshot: Any) -> None:
        now = self.clock.now()
        for trade in [t for t in sorted(self._trades.values(), key=lambda t: t.seq) if t.is_active]:
            try:
                self._tick_trade(trade, now, poll_snapshot)
            except Exception:  # one trade's bug never stops the others
                logger.exception("trade %s: tick failed in state %s", trade.id, trade.state.value)

    def _tick_trade(self, trade: TradeLifecycle, now: float, poll_snapshot: Any) -> None:
        runtime = self._runtime_of(trade)
        if runtime.job is None and trade.state in (TradeState.OPENING, TradeState.CLOSING):
            self._finish_interrupted_job(trade, runtime, now)
            return
        if runtime.job is not None:
            self._step_job(trade, runtime, now)
        self._sync_fills(trade)
        if not trade.is_active:
            return
        if self._handle_expiry(trade, runtime, now):
            return
        if trade.state is TradeState.OPEN and poll_snapshot is not None and runtime.job is None:
            self._refresh_quotes(trade, now)
            self._evaluate_exits(trade, runtime, poll_snapshot, now)
        self._drive(trade, runtime, now)

    def _runtime_of(self, trade: TradeLifecycle) -> _Runtime:
        runtime = self._runtime.get(trade.id)
        if runtime is None:
            runtime = _Runtime(params=self.exec_params_default)
            self._runtime[trade.id] = runtime
        return runtime

    # ---- jobs -----------------------------------------------------------------------

    def _step_job(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        """Advance the trade's job one step; on its end, apply the transition of its kind."""
        job = runtime.job
        try:
            status = job.advance(now)
        except Exception:  # noqa: BLE001 - retried on the next tick
            logger.exception("trade %s: %s job step failed", trade.id, runtime.job_kind)
            return
        if status == JobStatus.WORKING and not job.done:
            return
        kind = runtime.job_kind
        runtime.job = None
        runtime.job_kind = None
        try:
            result = job.result()
            reason = result.reason or ""
        except Exception:  # noqa: BLE001 - fills come from the ledger anyway
            logger.exception("trade %s: reading the %s job result failed", trade.id, kind)
            reason = ""
        self._sync_fills(trade)
        logger.info("trade %s: %s job ended %s %s", trade.id, kind, status.value, reason)
        if kind == "open":
            self._on_open_end(trade, runtime, now, reason)
        elif kind == "unwind":
            self._on_unwind_end(trade, runtime, now)
        else:
            self._on_close_end(trade, runtime, now)

    def _start_job(self, trade: TradeLifecycle, runtime: _Runtime, kind: str, intent: Intent,
                   targets: list[LegTarget], params: Any, mode: str) -> bool:
        runtime.job = self.executor.start(mode, trade, targets, intent, params, best_effort=True)
        runtime.job_kind = kind
        return True

    @staticmethod
    def _params_for(runtime: _Runtime, mode: str) -> Any:
        """The engine's own configuration (None = that engine's defaults); limit gets ExecutionParams."""
        if mode == "limit":
            return runtime.params
        return runtime.engine_params.get(mode)

    def _reducing_targets(self, trade: TradeLifecycle, now: float) -> list[LegTarget]:
        """One target per leg with exposure outside the halt: qty recomputed from fills (4.4)."""
        return [leg.reducing_target()
                for leg in trade.legs if not _zero(leg.net_qty) and not leg.is_frozen(now)
                and not self._symbol_blocked(leg.symbol)]

    def _symbol_blocked(self, symbol: str) -> bool:
        return bool(self.ledger.is_blocked(symbol))

    def _drive(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        """§4.2 rows 8 and 11: start the next unwind or close round when nothing is working."""
        if runtime.job is not None or trade.state not in (TradeState.PENDING_CLOSE, TradeState.UNWINDING):
            return
        if not trade.has_exposure:
            self._finish_flat(trade, runtime, now)
            return
        if self._resolve_stray_orders(trade):
            return
        if self._breaker_active(trade, runtime, now):
            return
        targets = self._reducing_targets(trade, now)
        if not targets:
            return  # every leg with exposure is frozen: wait for settlement
        if trade.state is TradeState.UNWINDING:
            intent = Intent.KILL if runtime.kill else Intent.UNWIND
            self._start_job(trade, runtime, "unwind", intent, targets, self.urgent_params, "limit")
            self._persist(trade, "unwind_round")
        else:
            if runtime.kill:
                kind, intent, params, mode = "kill", Intent.KILL, self.urgent_params, "limit"
            else:
                mode = trade.execution_mode if trade.failed_rounds == 0 else "limit"  # close fallback (4.4)
                kind, intent, params = "close", Intent.CLOSE, self._params_for(runtime, mode)
            self._start_job(trade, runtime, kind, intent, targets, params, mode)
            self._set_state(trade, TradeState.CLOSING)
        self._step_job(trade, runtime, now)

    def _resolve_stray_orders(self, trade: TradeLifecycle) -> bool:
        """Non-final orders with no job (left by a restart): make them final before a new round.

        A working order (LIVE/PARTIAL) is cancelled; anything else (cancel requested, unknown,
        recorded but maybe unsent) is polled until the exchange gives its final state. True
        while any remains, so no new order goes out on a leg that still has one.
        """
        try:
            live = list(self.ledger.live_orders(trade.id))
        except Exception:  # noqa: BLE001
            logger.exception("trade %s: reading live orders failed", trade.id)
            return True
        for order in live:
            try:
                if order.status in (OrderStatus.LIVE, OrderStatus.PARTIAL):
                    self.ledger.cancel(order)
                else:
                    self.ledger.poll(order)
            except Exception:  # noqa: BLE001 - polled again next tick
                logger.exception("trade %s: polling stray order %s failed", trade.id, order.client_order_id)
        if live:
            self._sync_fills(trade)
        return bool(live)

    # ---- transitions ------------------------------------------------------------------

    def _on_open_end(self, trade: TradeLifecycle, runtime: _Runtime, now: float, reason: str) -> None:
        """§4.2 rows 3-5 decided on our fills, whatever the job reported (cancel + grace already done)."""
        if all(leg.open_filled >= leg.qty - QTY_EPSILON for leg in trade.legs):
            trade.opened_at = self._last_fill_time(trade, Intent.OPEN, now)
            self._set_state(trade, TradeState.OPEN)
            self._notify_opened(trade, runtime)
            if runtime.pending_close_reason is not None:
                self._decide_exit(trade, runtime.pending_close_reason, {"source": runtime.pending_close_reason}, now)
                self._set_state(trade, TradeState.PENDING_CLOSE)
            return
        if not trade.has_exposure:
            placed = self._orders_placed(trade)
            self._fail(trade, now, reason or "open failed with no fill")
            if placed:
                self._alert("WARNING", "open_failed", f"trade {trade.id} ({trade.strategy}) failed to open: "
                            f"{trade.failure_reason}", trade_id=trade.id)
            return
        partial = {leg.symbol: leg.net_qty for leg in trade.legs if not _zero(leg.net_qty)}
        self._set_state(trade, TradeState.UNWINDING)
        self._alert("WARNING", "open_partial_unwind",
                    f"trade {trade.id} ({trade.strategy}) opened partially; unwinding "
                    + ", ".join(f"{symbol} {qty}" for symbol, qty in partial.items()),
                    trade_id=trade.id, legs=partial)

    def _on_unwind_end(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        if not trade.has_exposure:
            self._finish_flat(trade, runtime, now)
            return
        trade.unwind_rounds += 1
        self._after_failed_round(trade, runtime, now)
        self._persist(trade, "unwind_round_ended")

    def _on_close_end(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        if not trade.has_exposure:
            self._finish_flat(trade, runtime, now)
            return
        trade.close_rounds += 1
        self._after_failed_round(trade, runtime, now)
        self._set_state(trade, TradeState.PENDING_CLOSE)

    def _after_failed_round(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        """Circuit breaker (4.4): 10 failed rounds trip it; after that every failed round does."""
        trade.failed_rounds += 1
        if trade.failed_rounds < BREAKER_ROUNDS and trade.breaker_trips == 0:
            return
        delay = min(BREAKER_FIRST_DELAY * (2 ** trade.breaker_trips), BREAKER_MAX_DELAY)
        trade.breaker_trips += 1
        trade.breaker_until = now + delay
        self.breaker_trips += 1
        remaining = {leg.symbol: leg.net_qty for leg in trade.legs if not _zero(leg.net_qty)}
        self._alert("CRITICAL", "close_breaker",
                    f"trade {trade.id} ({trade.strategy}): {trade.failed_rounds} rounds without reaching zero "
                    f"exposure; next round in {delay:.0f} s" + (" (kill switch overrides)" if runtime.kill else ""),
                    trade_id=trade.id, remaining=remaining, delay_seconds=delay, trips=trade.breaker_trips)

    def _breaker_active(self, trade: TradeLifecycle, runtime: _Runtime | None, now: float) -> bool:
        if runtime is not None and runtime.kill:
            return False
        return trade.breaker_until is not None and now < trade.breaker_until

    def _finish_flat(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        """Zero exposure: CLOSED if the trade ever opened (§4.2 rows 12/16), else FAILED (§4.2 rows 7/16)."""
        trade.realized_pnl = trade.realized()
        if trade.opened_at is None:
            self._fail(trade, now, trade.failure_reason or "open incomplete; unwound")
            return
        trade.closed_at = now
        self._set_state(trade, TradeState.CLOSED)
        self._notify_closed(trade, runtime)

    def _fail(self, trade: TradeLifecycle, now: float, reason: str) -> None:
        trade.failed_at = now
        trade.failure_reason = trade.failure_reason or reason
        trade.realized_pnl = trade.realized()
        self._set_state(trade, TradeState.FAILED)

    def _decide_exit(self, trade: TradeLifecycle, reason: str, detail: dict, now: float) -> bool:
        """I3: the exit reason is written once, at decision time, never overwritten."""
        if trade.exit_reason is not None:
            return False
        trade.exit_reason = reason
        trade.exit_decided_at = now
        trade.exit_detail = detail
        return True

    # ---- exits ------------------------------------------------------------------------

    def _refresh_quotes(self, trade: TradeLifecycle, now: float) -> None:
        """Once per poll, quotes for legs we hold (the chain cache makes it one call per expiry)."""
        for leg in trade.legs:
            if _zero(leg.net_qty) or leg.is_expired(now):
                continue
            try:
                leg.quote = self.market.quote(leg.symbol, max_age=self.quote_max_age)
            except (TraderError, OSError) as error:
                logger.warning("trade %s: quote refresh of %s failed: %s", trade.id, leg.symbol, error)

    def _evaluate_exits(self, trade: TradeLifecycle, runtime: _Runtime, snapshot: Any, now: float) -> None:
        """§4.2 row 9: the first exit confirmed on enough snapshots decides; its close starts in this tick (incident 35).

        A condition decides only once it has returned True on ``confirmations`` consecutive
        evaluations, each on quotes newer than the last counted one (``ExitCondition.confirmations``:
        1, and 2 for ``max_loss*``; a plain callable has 1). A False or an error resets its streak.
        An unevaluable snapshot (stale or insane quotes) neither counts nor resets it: two sane
        readings that both show the loss are both real evidence, and resetting on every glitch
        would let a flapping feed postpone a genuine stop for ever (issue 9, ``price_sanity``).
        While a leg we hold has an insane quote, plain callables are not called at all: they may
        read quote fields directly, around the valuation's sanity rule.
        """
        insane = self._insane_legs(trade, now)
        self._note_insane(trade, runtime, insane, now)
        unevaluable = False
        for position, cond in enumerate(runtime.exit_conditions):
            name = condition_name(cond)
            if insane and not isinstance(cond, ExitCondition):
                verdict = ExitVerdict.UNEVALUABLE
            else:
                verdict = judge_exit(cond, snapshot, trade, health=self.health, strategy=trade.strategy,
                                     name=f"exit_conditions[{position}]:{name}")
            if verdict is ExitVerdict.UNEVALUABLE:
                unevaluable = True
                continue
            if verdict is not ExitVerdict.FIRED:
                runtime.exit_streaks.pop(position, None)
                continue
            streak = self._confirm(trade, runtime, position, cond, snapshot)
            required = _confirmations_of(cond)
            if len(streak.seen) < required:
                logger.info("trade %s: exit %s fired on %d of %d consecutive sane snapshots; waiting for the next",
                            trade.id, name, len(streak.seen), required)
                continue
            self._decide_exit(trade, name, self._exit_detail(trade, cond, snapshot, streak, required), now)
            self._set_state(trade, TradeState.PENDING_CLOSE)
            runtime.unevaluable_since = None
            runtime.exit_streaks.clear()
            return
        self._track_unevaluable(trade, runtime, unevaluable, now)

    @staticmethod
    def _insane_legs(trade: TradeLifecycle, now: float) -> list[str]:
        """Why the quotes of legs we hold are not believable (``price_sanity``); empty when all are."""
        found = []
        for leg in trade.legs:
            if _zero(leg.net_qty) or leg.is_expired(now) or leg.quote is None:
                continue
            problems = quote_problems(leg.quote, leg.symbol)
            if problems:
                found.append(f"leg {leg.index} {leg.symbol}: " + ", ".join(problems))
        return found

    @staticmethod
    def _note_insane(trade: TradeLifecycle, runtime: _Runtime, insane: list[str], now: float) -> None:
        """One WARNING when an episode of insane quotes starts and one INFO when it ends, not one per tick."""
        if insane:
            if runtime.insane_since is None:
                runtime.insane_since = now
                logger.warning("trade %s (%s): no valuation on this snapshot (%s); PnL exits wait for a sane one",
                               trade.id, trade.strategy, "; ".join(insane))
            return
        if runtime.insane_since is not None:
            logger.info("trade %s: quotes sane again after %.0f s; exits are evaluated again",
                        trade.id, now - runtime.insane_since)
            runtime.insane_since = None

    def _confirm(self, trade: TradeLifecycle, runtime: _Runtime, position: int, cond: Any, snapshot: Any) -> "_Streak":
        """Count this True toward ``cond``'s confirmations, unless its quotes are the ones already counted."""
        streak = runtime.exit_streaks.get(position)
        if streak is None or streak.condition is not cond:
            streak = _Streak(cond)
            runtime.exit_streaks[position] = streak
        stamps = _quote_stamps(trade)
        if streak.seen and not _newer(stamps, streak.stamps):
            logger.debug("trade %s: exit %s fired again on the same quotes; not a new confirmation",
                         trade.id, condition_name(cond))
            return streak
        streak.stamps = stamps
        mode = getattr(cond, "mode", None) or "fair"
        try:
            pnl: float | None = trade.valuation(mode).value
        except (StaleDataError, ValueError):
            pnl = None
        streak.seen.append({"snapshot_ts": snapshot.timestamp,
                            "quotes_as_of": min(stamps) if stamps else None, "mode": mode, "pnl": pnl})
        return streak

    def _exit_detail(self, trade: TradeLifecycle, cond: Any, snapshot: Any, streak: "_Streak | None" = None,
                     required: int = 1) -> dict:
        mode = getattr(cond, "mode", None) or "fair"
        detail: dict[str, Any] = {"condition": condition_name(cond), "snapshot_ts": snapshot.timestamp}
        try:
            detail.update(trade.valuation(mode).to_detail())
        except (StaleDataError, ValueError) as error:
            detail.update({"mode": mode, "pnl": None, "valuation_error": str(error)})
        detail["index"] = next((float(leg.quote.underlying_price) for leg in trade.legs
                                if leg.quote is not None and leg.quote.underlying_price), None)
        detail["confirmations"] = {"required": required, "seen": len(streak.seen) if streak is not None else 1,
                                   "evaluations": list(streak.seen) if streak is not None else []}
        return detail

    def _track_unevaluable(self, trade: TradeLifecycle, runtime: _Runtime, unevaluable: bool, now: float) -> None:
        if not unevaluable:
            if runtime.unevaluable_alerted:
                logger.info("trade %s: exits evaluable again", trade.id)
            runtime.unevaluable_since = None
            runtime.unevaluable_alerted = False
            return
        if runtime.unevaluable_since is None:
            runtime.unevaluable_since = now
        if not runtime.unevaluable_alerted and now - runtime.unevaluable_since >= UNEVALUABLE_ALERT_SECONDS:
            runtime.unevaluable_alerted = True
            self._alert("WARNING", "exit_unevaluable",
                        f"trade {trade.id} ({trade.strategy}): exits unevaluable for "
                        f"{now - runtime.unevaluable_since:.0f} s (stale, missing or insane quotes)", trade_id=trade.id)

    # ---- start-up hold and reconciliation support (reconciliation.py drives these) ---------

    def hold(self, reason: str) -> None:
        """No order, no exit, no job step until ``release()`` (start-up, before positions are known)."""
        self._hold_reason = reason
        self._hold_logged = False

    def release(self) -> None:
        if self._hold_reason is not None:
            logger.info("lifecycle released (was held: %s)", self._hold_reason)
        self._hold_reason = None

    @property
    def hold_reason(self) -> str | None:
        return self._hold_reason

    # ---- entry holds: no new trade, exits and closes go on -----------------------------------

    def hold_entries(self, key: str, reason: str) -> bool:
        """Stop every strategy's entries for ``key`` (e.g. a suspect positions read, a lost store)
        until ``release_entries(key)``; exits, closes and settlement go on. True if newly held."""
        with self._entry_holds_lock:
            new = key not in self._entry_holds
            self._entry_holds[key] = reason
        if new:
            logger.warning("entries held (%s): %s", key, reason)
        return new

    def release_entries(self, key: str) -> bool:
        """Lift the entry hold ``key``; True if it was held."""
        with self._entry_holds_lock:
            reason = self._entry_holds.pop(key, None)
        if reason is not None:
            logger.warning("entry hold lifted (%s; was: %s)", key, reason)
        return reason is not None

    @property
    def entry_holds(self) -> dict[str, str]:
        """The active entry holds, key -> reason (a copy)."""
        with self._entry_holds_lock:
            return dict(self._entry_holds)

    def _on_hold(self) -> bool:
        if self._hold_reason is None:
            return False
        if not self._hold_logged:
            self._hold_logged = True
            logger.warning("lifecycle on hold (%s): no order and no exit until it is lifted", self._hold_reason)
        return True

    def release_blocks(self, strategy: str | None = None) -> list[str]:
        """Operator resume: lift symbol blocks on this strategy's legs (every block when None)."""
        if strategy is None:
            return list(self.ledger.unblock(None))
        symbols = {leg.symbol for trade in self.trades(strategy) for leg in trade.legs}
        return list(self.ledger.unblock(symbols))

    def has_job(self, trade_id: str) -> bool:
        with self._lock:
            runtime = self._runtime.get(trade_id)
            return runtime is not None and runtime.job is not None

    def refresh_fills(self, trade_id: str) -> None:
        """Re-read a trade's fills from the ledger (after reconciliation adopted some)."""
        with self._lock:
            trade = self._trades.get(trade_id)
            if trade is not None:
                self._sync_fills(trade)
                self._persist(trade, "fills_reconciled")

    def record_external_close(self, trade_id: str, leg_index: int, qty: float, price: float, *,
                              detail: str) -> TradeLifecycle | None:
        """Part of a leg was closed outside the daemon (BEHAVIOUR 4.7): reduce it, account it, alert.

        Only called on evidence: ``price`` is the average of the fills, not ours, that closed
        it (reconciliation never books a missing position on an empty answer alone).
        ``qty`` is never more than the leg holds. Once no exposure is left the trade ends:
        CLOSED with reason ``external_close`` (unless a reason was already decided), or
        FAILED if it never opened. Working jobs of the trade are asked to stop first.
        """
        with self._lock:
            trade = self._trades.get(trade_id)
            if trade is None or not trade.is_active:
                return None
            leg = next((item for item in trade.legs if item.index == leg_index), None)
            if leg is None:
                return None
            qty = min(_clean_qty(qty), leg.net_qty)
            if _zero(qty):
                return trade
            total = leg.external_qty + qty
            leg.external_price = (leg.external_price * leg.external_qty + price * qty) / total
            leg.external_qty = _clean_qty(total)
            now = self.clock.now()
            self._persist(trade, "external_close", leg=leg_index, qty=qty, price=price)
            self._alert("CRITICAL", "external_close",
                        f"trade {trade.id} ({trade.strategy}): {qty:g} {leg.symbol} closed outside the daemon "
                        f"at {price:g} (fills that are not ours); {detail}",
                        trade_id=trade.id, symbol=leg.symbol, qty=qty, price=price)
            if not trade.has_exposure:
                runtime = self._runtime_of(trade)
                if runtime.job is not None:
                    runtime.job.request_stop(EXIT_REASON_EXTERNAL)
                    return trade  # the job ends on a later tick; _drive then finishes the trade flat
                self._decide_exit(trade, EXIT_REASON_EXTERNAL, {"source": "reconciliation", "detail": detail}, now)
                self._finish_flat(trade, runtime, now)
            return trade

    def reversible_external_closes(self) -> list[TradeLifecycle]:
        """Trades an older version ended as ``external_close`` without evidence (``pnl_estimated``).

        Only recent ones (``REVERSAL_LOOKBACK_SECONDS``) whose externally closed legs have not
        expired: their positions may show again, and then they are reopened (docs/RECOVERY.md X1).
        """
        now = self.clock.now()
        found = []
        for trade in self.trades():
            if trade.is_active or trade.exit_reason != EXIT_REASON_EXTERNAL or FLAG_PNL_ESTIMATED not in trade.flags:
                continue
            ended = trade.closed_at if trade.closed_at is not None else trade.failed_at
            if ended is None or now - float(ended) > REVERSAL_LOOKBACK_SECONDS:
                continue
            legs = [leg for leg in trade.legs if leg.external_qty > QTY_EPSILON]
            if legs and not any(leg.is_expired(now) for leg in legs):
                found.append(trade)
        return found

    def reverse_external_close(self, trade_id: str, detail: str) -> TradeLifecycle | None:
        """Undo an external close booked without evidence: the position showed again (X1).

        The legs get their exposure back (``external_qty`` cleared), the close decision is
        forgotten (kept in ``metadata["external_close_reversed"]`` for the record) and the
        trade is managed again: OPEN with its own exit rules if it had opened; OPENING if it
        never had, so that the next tick decides it on its fills like an interrupted open
        (OPEN, or an unwind of a partial open). Its strategy stays paused for entries until
        an operator resumes it. Returns None when the trade is not such a trade.
        """
        with self._lock:
            trade = self._trades.get(trade_id)
            if trade is None or trade.is_active or trade.exit_reason != EXIT_REASON_EXTERNAL \
                    or FLAG_PNL_ESTIMATED not in trade.flags:
                return None
            now = self.clock.now()
            restored = {leg.symbol: leg.sign * leg.external_qty for leg in trade.legs if leg.external_qty > QTY_EPSILON}
            trade.metadata["external_close_reversed"] = {
                "at": now, "detail": detail, "legs": restored, "was": {
                    "state": trade.state.value, "closed_at": trade.closed_at, "failed_at": trade.failed_at,
                    "realized_pnl": trade.realized_pnl, "exit_detail": trade.exit_detail,
                    "external_prices": {leg.symbol: leg.external_price for leg in trade.legs
                                        if leg.external_qty > QTY_EPSILON}}}
            for leg in trade.legs:
                leg.external_qty = 0.0
                leg.external_price = 0.0
            trade.flags = [flag for flag in trade.flags if flag != FLAG_PNL_ESTIMATED] + [FLAG_EXTERNAL_REVERSED]
            trade.exit_reason = trade.exit_decided_at = trade.closed_at = trade.realized_pnl = None
            trade.exit_detail = {}
            opened = trade.opened_at is not None
            if not opened:
                trade.failed_at = trade.failure_reason = None
            runtime = self._runtime_of(trade)
            runtime.pending_close_reason = None
            self._sync_fills(trade)
            self._set_state(trade, TradeState.OPEN if opened else TradeState.OPENING)
            managed = "" if trade.strategy in self._hooks or trade.seq == 0 else \
                " (its strategy is not running: it stays unmanaged, see `python main.py status`)"
            self._alert("CRITICAL", "external_close_reversed",
                        f"trade {trade.id} ({trade.strategy}) had been booked closed outside the daemon at an "
                        f"estimated price, with no fill to prove it; {detail}: the trade is "
                        f"{'OPEN' if opened else 'decided again on its fills'} and managed by its own exit rules "
                        f"again{managed}. Its strategy stays paused for new entries: check the account, then "
                        f"`python main.py resume {trade.strategy}`", trade_id=trade.id, legs=restored)
            return trade

    # ---- restart ----------------------------------------------------------------------

    def attach_strategy(self, strategy: str, *, exit_conditions: Iterable[Any] = (),
                        execution_params: ExecutionParams | None = None,
                        on_opened: Callable[[TradeLifecycle], Any] | None = None,
                        on_closed: Callable[[TradeLifecycle], Any] | None = None, smart_config: Any = None,
                        rfq_params: Any = None) -> None:
        """Register a strategy's rules; its trades already loaded (after a restart) get them now."""
        hooks = StrategyHooks(tuple(exit_conditions), execution_params, on_opened, on_closed, smart_config,
                              rfq_params)
        with self._lock:
            self._hooks[strategy] = hooks
            for trade in self._trades.values():
                if trade.strategy == strategy:
                    self._apply_hooks(self._runtime_of(trade), hooks)

    def _apply_hooks(self, runtime: _Runtime, hooks: StrategyHooks) -> None:
        runtime.exit_conditions = hooks.exit_conditions
        runtime.params = hooks.execution_params or self.exec_params_default
        runtime.engine_params = {"smart": hooks.smart_config, "rfq": hooks.rfq_params}
        runtime.on_opened = hooks.on_opened
        runtime.on_closed = hooks.on_closed

    def recover(self) -> dict:
        """Reload our trades and orders from the store after a restart (part of BEHAVIOUR 4.7).

        Every trade and ledger order comes back; a trade that never sent an order
        (PENDING_OPEN) fails as "abandoned at restart"; an open or close interrupted mid-job
        resumes on the next tick (its working orders are cancelled, then it is decided on our
        fills: OPEN / FAILED / UNWINDING, or CLOSED / PENDING_CLOSE); OPEN, PENDING_CLOSE,
        UNWINDING and SETTLING trades carry on as they were. Reconciliation against the
        exchange's positions is the recovery issue's work.
        """
        report: dict[str, Any] = {"restored": 0, "active": [], "abandoned": []}
        if self.store is None:
            return report
        with self._lock:
            self.ledger.restore(self.store.load_orders())
            now = self.clock.now()
            for record in self.store.load_trades():
                trade = TradeLifecycle.from_record(record)
                if trade.id in self._trades:
                    continue
                trade.bind_clock(self.clock)
                self._trades[trade.id] = trade
                self._next_seq = max(self._next_seq, trade.seq + 1)
                runtime = self._runtime_of(trade)
                hooks = self._hooks.get(trade.strategy)
                if hooks is not None:
                    self._apply_hooks(runtime, hooks)
                # Kill mode lives in memory: a trade the kill switch was closing keeps its
                # urgent, breaker-free kill orders after a restart.
                runtime.kill = runtime.kill or trade.exit_reason == EXIT_REASON_KILL or trade.seq == 0
                report["restored"] += 1
                if not trade.is_active:
                    continue
                self._sync_fills(trade)
                if trade.state is TradeState.PENDING_OPEN:
                    if not self.ledger.orders(trade.id):
                        self._fail(trade, now, "abandoned at restart")
                        report["abandoned"].append(trade.id)
                        continue
                    self._set_state(trade, TradeState.OPENING)
                # Runners attach their rules right after recovery; unmanaged_trades() then says
                # which trades stay without one (logged at start-up and in every health line).
                report["active"].append(f"{trade.id} {trade.strategy} {trade.state.value}")
            logger.info("recovered %d trades from the store; active: %s", report["restored"],
                        ", ".join(report["active"]) or "none")
            return report

    def _finish_interrupted_job(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        """OPENING/CLOSING without a job (the daemon restarted mid-execution).

        Cancel what is still working, then decide on our fills exactly as if the job had
        just ended: never re-sends the filled quantity, never leaves a partial open as is.
        """
        if self._resolve_stray_orders(trade):
            return
        self._sync_fills(trade)
        if trade.state is TradeState.OPENING:
            self._on_open_end(trade, runtime, now, "open interrupted by a restart")
        elif not trade.has_exposure:
            self._finish_flat(trade, runtime, now)
        else:
            self._set_state(trade, TradeState.PENDING_CLOSE)

    def force_close(self, trade_id: str, reason: str = EXIT_REASON_MANUAL) -> bool:
        """§4.2 rows 10/10b: close now (kill: urgent, breaker ignored). False if nothing to close."""
        with self._lock:
            trade = self._trades.get(trade_id)
            if trade is None or not trade.is_active:
                return False
            runtime = self._runtime_of(trade)
            now = self.clock.now()
            if reason == EXIT_REASON_KILL:
                runtime.kill = True
            if trade.state in (TradeState.PENDING_OPEN, TradeState.OPENING):
                runtime.pending_close_reason = runtime.pending_close_reason or reason
                if runtime.job is not None:
                    runtime.job.request_stop(reason)
                self._persist(trade, "close_requested")
                return True
            if trade.state is TradeState.OPEN:
                self._decide_exit(trade, reason, {"source": reason}, now)
                self._set_state(trade, TradeState.PENDING_CLOSE)
            elif trade.state is TradeState.CLOSING and runtime.kill and runtime.job_kind == "close":
                runtime.job.request_stop(reason)  # the next round goes out with kill intent
            elif trade.state is TradeState.SETTLING:
                return False
            self._drive(trade, runtime, now)
            return True

    def kill_all(self, include_external: bool = False) -> list[str]:
        """Kill switch (7.6): force-close every trade with exposure; optionally adopt other positions."""
        with self._lock:
            killed = [t.id for t in self.active_trades() if self.force_close(t.id, EXIT_REASON_KILL)]
            if include_external:
                external = self._adopt_external_positions()
                if external is not None and self.force_close(external.id, EXIT_REASON_KILL):
                    killed.append(external.id)
            return killed

    def _adopt_external_positions(self) -> TradeLifecycle | None:
        """Positions beyond our trades' exposure become legs of trade sequence 0 (reduce-only closes)."""
        snapshot = self._last_snapshot
        if snapshot is None:
            logger.warning("kill_all(include_external=True): no account snapshot yet; external positions skipped")
            return None
        ours: dict[str, float] = {}
        for trade in self.active_trades():
            for leg in trade.legs:
                ours[leg.symbol] = ours.get(leg.symbol, 0.0) + leg.sign * leg.net_qty
        existing = self._trades.get(EXTERNAL_TRADE_ID)
        legs: list[TradeLeg] = list(existing.legs) if existing is not None and existing.is_active else []
        now = self.clock.now()
        for position in snapshot.positions:
            signed = float(position.signed_qty)
            extra = _clean_qty(abs(signed - ours.get(position.symbol, 0.0)))
            if _zero(extra) or (signed - ours.get(position.symbol, 0.0)) * signed <= 0:
                continue
            try:
                instrument = self.market.instrument(position.symbol)
            except Exception:  # noqa: BLE001
                logger.exception("external position %s: instrument unknown; not adopted", position.symbol)
                continue
            if now >= instrument.expiry_ms / 1000.0:
                continue
            contract = Contract(symbol=position.symbol, underlying=instrument.base,
                                option_type=instrument.option_type, strike=float(instrument.strike),
                                expiry_ms=int(instrument.expiry_ms))
            legs.append(TradeLeg(index=len(legs), contract=contract, side=Side.BUY if signed > 0 else Side.SELL,
                                 qty=extra, adopted_qty=extra))
        if not legs or (existing is not None and existing.is_active and len(legs) == len(existing.legs)):
            return existing if existing is not None and existing.is_active else None
        trade = TradeLifecycle(id=EXTERNAL_TRADE_ID, seq=0, strategy="external", state=TradeState.OPEN, legs=legs,
                               created_at=now, opened_at=now, metadata={"external": True})
        trade.bind_clock(self.clock)
        self._trades[trade.id] = trade
        self._runtime[trade.id] = _Runtime(params=self.urgent_params, kill=True)
        self._persist(trade, "external_adopted")
        return trade

    # ---- expiry and settlement --------------------------------------------------------------

    def _handle_expiry(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> bool:
        """§4.2 rows 15-16: settle expired legs; SETTLING once every leg we hold has expired.

        Returns True when the trade is done for this tick (settling or just finished).
        """
        held = [leg for leg in trade.legs if not _zero(leg.net_qty)]
        expired = [leg for leg in held if leg.is_expired(now)]
        if not expired:
            if trade.state is TradeState.SETTLING and runtime.job is None and not trade.has_exposure:
                self._finish_flat(trade, runtime, now)
            return trade.state is TradeState.SETTLING
        all_expired = len(expired) == len(held)
        if runtime.job is not None:
            if all_expired:
                runtime.job.request_stop(EXIT_REASON_EXPIRY)
            return True  # live orders on expired symbols are left to the exchange and polled by the job
        if all_expired and trade.state is not TradeState.SETTLING:
            self._decide_exit(trade, EXIT_REASON_EXPIRY, {"source": EXIT_REASON_EXPIRY,
                                                           "legs": [leg.symbol for leg in expired]}, now)
            self._set_state(trade, TradeState.SETTLING)
        if now >= runtime.next_settlement_check:
            runtime.next_settlement_check = now + DELIVERY_RETRY_SECONDS
            for leg in expired:
                self._settle_leg(trade, runtime, leg, now)
        if not trade.has_exposure:
            self._finish_flat(trade, runtime, now)
            return True
        return all_expired

    def _settle_leg(self, trade: TradeLifecycle, runtime: _Runtime, leg: TradeLeg, now: float) -> None:
        qty = leg.net_qty
        contract = leg.contract
        delivery, estimated = self._delivery_price(contract.expiry_ms, now, trade, runtime)
        record = self._exercise_record(leg, qty)
        if delivery is None and record is not None:
            delivery = record.exercise_price
        if delivery is None:
            return
        intrinsic = intrinsic_value(contract.option_type, contract.strike, delivery)
        cash = round(leg.sign * intrinsic * qty, 8)
        if record is not None and record.fees is not None:
            fee, fee_estimated = record.fees, False
            exact_cash = record.settlement_cash_flow
            if exact_cash is not None:
                cash = exact_cash
        else:
            fee, fee_estimated = estimated_delivery_fee(contract.expiry_ms, qty, delivery, intrinsic), True
        leg.settlement = Settlement(delivery_price=delivery, qty=qty, intrinsic=intrinsic, cash=cash, fee=fee,
                                    fee_estimated=fee_estimated, price_estimated=estimated, settled_at=now)
        for flag, on in (("fee_estimated", fee_estimated), ("settlement_estimated", estimated)):
            if on and flag not in trade.flags:
                trade.flags.append(flag)
        trade.fees_paid = trade.total_fees()
        logger.info("trade %s leg %d %s settled: %s x %.2f intrinsic at delivery %.2f, fee %.2f", trade.id,
                    leg.index, leg.symbol, qty, intrinsic, delivery, fee)
        self._persist(trade, "leg_settled")

    def _delivery_price(self, expiry_ms: int, now: float, trade: TradeLifecycle,
                        runtime: _Runtime) -> tuple[float | None, bool]:
        """Delivery price of ``expiry_ms`` (cached); after 24 h, the estimated expiration price."""
        if expiry_ms in self._delivery_prices:
            return self._delivery_prices[expiry_ms], False
        try:
            price = find_delivery_price(self.client.delivery_prices(), expiry_ms)
        except Exception as error:  # noqa: BLE001 - retried later
            logger.warning("delivery prices unavailable: %s", error)
            price = None
        if price is not None:
            self._delivery_prices[expiry_ms] = price
            return price, False
        waited = now - expiry_ms / 1000.0
        if waited >= DELIVERY_WARN_SECONDS and not runtime.delivery_warned:
            runtime.delivery_warned = True
            self._alert("WARNING", "delivery_price_missing",
                        f"trade {trade.id}: no delivery price {waited / 60:.0f} min after expiry {expiry_ms}",
                        trade_id=trade.id, expiry_ms=expiry_ms)
        if waited >= DELIVERY_ESTIMATE_SECONDS:
            try:
                estimate = parse_estimated_expiration_price(self.client.estimated_expiration_price(expiry_ms))
            except Exception as error:  # noqa: BLE001
                logger.warning("estimated expiration price unavailable: %s", error)
                estimate = None
            if estimate is not None and estimate > 0:
                return estimate, True
        return None, False

    def _exercise_record(self, leg: TradeLeg, qty: float) -> ExerciseRecord | None:
        """The exchange's settlement record when it describes exactly our quantity (no pro-rating)."""
        try:
            data = self.client.exercise_history(**history_filters(symbol=leg.symbol))
        except Exception as error:  # noqa: BLE001 - the computed settlement is used instead
            logger.info("exercise history for %s unavailable: %s", leg.symbol, error)
            return None
        for record in parse_exercise_records(data):
            if record.symbol != leg.symbol:
                continue
            if record.qty is not None and abs(record.qty - qty) < QTY_EPSILON and (
                    record.side is None or record.side == leg.side):
                return record
        return None

    # ---- fills, persistence, notifications ------------------------------------------------------

    def _sync_fills(self, trade: TradeLifecycle) -> None:
        """Legs' fills from the ledger: open family, and close + unwind + kill together."""
        for leg in trade.legs:
            qty, vwap, fees = self.ledger.leg_fill(trade.id, leg.index, Intent.OPEN)
            leg.open_filled, leg.open_vwap, leg.open_fees = _clean_qty(qty), float(vwap or 0.0), float(fees or 0.0)
            total_qty = total_value = total_fees = 0.0
            for family in (Intent.CLOSE, Intent.UNWIND, Intent.KILL):
                qty, vwap, fees = self.ledger.leg_fill(trade.id, leg.index, family)
                total_qty += qty
                total_value += qty * (vwap or 0.0)
                total_fees += fees or 0.0
            leg.close_filled = _clean_qty(total_qty)
            leg.close_vwap = total_value / total_qty if total_qty > QTY_EPSILON else 0.0
            leg.close_fees = total_fees
        trade.fees_paid = trade.total_fees()

    def _last_fill_time(self, trade: TradeLifecycle, family: Intent, default: float) -> float:
        try:
            times = [float(o.last_fill_at or o.updated_at)
                     for o in self.ledger.orders(trade.id, family=family)
                     if float(o.filled_qty) > 0 and o.updated_at]
        except Exception:  # noqa: BLE001
            logger.exception("trade %s: reading fill times failed", trade.id)
            times = []
        return max(times) if times else default

    def _orders_placed(self, trade: TradeLifecycle) -> bool:
        try:
            return any(o.order_id is not None or str(o.status).endswith("UNKNOWN")
                       for o in self.ledger.orders(trade.id))
        except Exception:  # noqa: BLE001
            return True

    def _set_state(self, trade: TradeLifecycle, state: TradeState) -> None:
        previous = trade.state
        if state not in TRANSITIONS[previous]:
            raise IllegalTransition(f"trade {trade.id} ({trade.strategy}): {previous.value} -> {state.value} is not "
                                    f"a transition of the trade state machine")
        trade.state = state
        logger.info("trade %s (%s): %s -> %s", trade.id, trade.strategy, previous.value, state.value)
        self._persist(trade, "state", previous=previous.value)

    def _persist(self, trade: TradeLifecycle, event: str, **extra: Any) -> None:
        """I5: committed before the next request for this trade; a failed write is CRITICAL."""
        if self.store is None:
            return
        payload = {"trade_id": trade.id, "strategy": trade.strategy, "event": event, "state": trade.state.value,
                   **extra}
        try:
            self.store.save_trade(trade.to_record())
            if self.journal is not None:
                self.journal("trade", payload)
            else:
                self.store.append_event("trade", payload, self.clock.now())
        except Exception as error:  # noqa: BLE001 - exits go on; entries pause elsewhere
            self.persistence_errors += 1
            logger.critical("trade %s: persisting %s failed: %s", trade.id, event, error)
            self._alert("CRITICAL", "persistence_failed", f"trade {trade.id}: state write failed: {error}",
                        trade_id=trade.id)

    def _notify_opened(self, trade: TradeLifecycle, runtime: _Runtime) -> None:
        if trade.opened_notified:
            return
        trade.opened_notified = True
        self._persist(trade, "opened_notified")
        self._call_back(runtime.on_opened, trade, "on_opened")

    def _notify_closed(self, trade: TradeLifecycle, runtime: _Runtime) -> None:
        if trade.closed_notified:
            return
        trade.closed_notified = True
        self._persist(trade, "closed_notified")
        self._call_back(runtime.on_closed, trade, "on_closed")

    @staticmethod
    def _call_back(callback: Callable[[TradeLifecycle], Any] | None, trade: TradeLifecycle, name: str) -> None:
        if callback is None:
            return
        try:
            callback(trade)
        except Exception:  # noqa: BLE001 - a strategy callback never breaks the lifecycle
            logger.exception("trade %s: %s callback raised", trade.id, name)

    def _alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        send_alert(self.alerts, logger, level, kind, message, **detail)

    def _condition_alert(self, kind: str, detail: str) -> None:
        self._alert("WARNING", kind, detail)


def find_delivery_price(data: Any, expiry_ms: int) -> float | None:
    """The delivery price of ``expiry_ms`` in a ``get-delivery-prices`` answer (API.md 6.5), or None.

    A row's date is matched as epoch ms, or as a calendar date of the expiry's UTC day
    (``DeliveryPrice.covers``).
    """
    return next((row.price for row in parse_delivery_prices(data) if row.covers(expiry_ms)), None)


__all__ = [
    "TradeState", "TradeLeg", "TradeLifecycle", "LifecycleManager", "Settlement", "Valuation", "LegValue",
    "urgent_execution_params", "find_delivery_price", "estimated_delivery_fee", "intrinsic_value",
    "profit_target", "max_loss", "profit_target_pct", "max_loss_pct", "max_hold_hours", "time_exit",
    "utc_datetime_exit", "account_delta_limit", "structure_delta_limit", "leg_greek_limit",
]
