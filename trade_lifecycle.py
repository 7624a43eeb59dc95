"""Trade lifecycle: the trade, its state machine, and the manager that drives every trade through it.

BEHAVIOUR.md section 4 is the contract. This module holds the values (``TradeLeg``,
``TradeLifecycle``, PnL from our own fills), the transition table, and ``LifecycleManager``,
the coordinator: creation, the tick, jobs, close rounds, the kill switch, restart recovery,
the expiry halt, and the one state setter. Each other job has a module of its own, which
the manager owns and hands exactly what it needs: ``trade_fills`` (our fills from the ledger),
``trade_recorder`` (the I5 writes and the strategy callbacks), ``exit_evaluation`` (the exit
rules), ``close_rounds`` (what a round sends, the breaker), ``settlement`` (what expiry paid),
``external_closes`` (closes made outside the daemon) and ``lifecycle_holds`` (the start-up
and entry holds). Three ideas carry the whole lifecycle:

* **Our ledger is the only truth about exposure and PnL.** A leg's ``net_qty`` is its open
  fills minus its close/unwind/kill fills minus what was settled, all read from the
  ``OrderLedger``; account positions, ``upnl`` and pro-rating are never used (incidents 4, 33).
* **Nothing blocks.** Every execution is a job advanced one step per tick, so one trade's
  slow close never delays another trade's exit (incident 37); every wait is a deadline
  compared with the injected clock.
* **Every state change is written before the next request for that trade** (I5), so a crash
  between two steps leaves a store that says what really happened.
* **Nothing ends while it may still gain a fill** (I2). A trade becomes CLOSED or FAILED only
  through ``_end_flat``: its working orders resolved (cancelled or polled until final, then
  polled once more after the late-fill grace) and no RFQ accept of it in doubt. Zero exposure
  with an order still out is not flat: the trade keeps its state, and a fill that comes is
  unwound or closed like any other exposure.
"""
from __future__ import annotations

import bisect
import logging
import math
import re
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from alerts import send_alert
from clock import Clock
from close_rounds import CloseRounds
from coincall_payloads import PositionSnapshot
from conditions import (
    ConditionHealth,
    account_delta_limit,
    condition_name,
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
from contracts import DEFAULT_UNDERLYING, UNDERLYINGS, Contract, Side, is_perpetual_symbol, underlying_of
from display import fmt, fmt_duration, fmt_qty
from errors import ConfigError, StaleDataError, TraderError
from execution_job import JobStatus, LegTarget
from exit_evaluation import ExitEvaluator, ExitWatch
from external_closes import EXIT_REASON_EXTERNAL, ExternalCloses, booked_without_evidence, ended_within_lookback
from fees import FEE_CAP_OF_PREMIUM, PERP_TAKER_FEE_RATE, TAKER_FEE_RATE
from hedging import HedgeConfig, HedgeDecision, HedgeOrder, HedgeState, decide
from leg_market import LegMarket
from lifecycle_holds import LifecycleHolds
from option_selection import ResolvedLeg
from order_ledger import BLOCK_ACCEPT_EVENT, BLOCK_ACCEPT_REFUSED_EVENT, LOT, Intent, LedgerOrder, open_block_accepts
from price_sanity import InsanePriceError, quote_problems
from seams import (
    AlertSender,
    BlockAcceptWatch,
    JobStarter,
    LifecycleLedger,
    LifecycleStore,
    PerpAccountClient,
    PriceSource,
    SettlementClient,
    require,
    require_optional,
)
from settlement import (
    EXERCISE_WINDOW_SECONDS,
    REVISION_WINDOW_SECONDS,
    DeliveryWatch,
    ExpiryMark,
    Settlement,
    Settler,
    estimated_delivery_fee,
    intrinsic_value,
)
from trade_execution import MODES, ExecutionParams, fair_value
from trade_fills import (
    QTY_EPSILON,
    REDUCING_FAMILIES,
    AcceptsInDoubt,
    FundingAttribution,
    TradeFills,
    clean_qty,
    is_zero,
)
from trade_recorder import TradeRecorder

if TYPE_CHECKING:
    from account_manager import AccountSnapshot

logger = logging.getLogger(__name__)

QUOTE_MAX_AGE_SECONDS = 15.0     # exit valuation quotes (BEHAVIOUR 7.2)
HALT_SECONDS_BEFORE_EXPIRY = 15 * 60
# How often the trades that ended for good are offered to the ledger's archive (their orders
# then live in the state store only; ``OrderLedger.archive_trade`` decides when each may go).
ARCHIVE_SWEEP_SECONDS = 600.0
# The entry hold a stored trade record that recovery cannot read sets (only a restart lifts it).
UNREADABLE_RECORDS_HOLD = "unreadable_trade_records"
# The kill switch's ``--all-positions`` adopts the account's other positions into a trade of this
# strategy name. Each adoption is a new trade with a fresh sequence from the one global sequence
# (``_allocate_seq``): the ledger keys fills by (trade, leg) and clientOrderIds by (sequence, leg),
# so a reused id would count an earlier adoption's fills as the new one's.
EXTERNAL_STRATEGY = "external"
# The id every adoption had before that rule (sequence 0); such trades still load from older stores.
EXTERNAL_TRADE_ID = "T000000000"
# A job whose step raises is retried every tick; after this many failures in a row the operator is
# told (its orders may be working with nobody driving them), then again at most every interval.
JOB_STEP_FAILURES_BEFORE_ALERT = 5
JOB_STEP_ALERT_EVERY_SECONDS = 900.0
# A job still working this long after its first step is beyond every engine's own time limits
# (a limit job's phases, a smart job's chunks, an RFQ's quote window and fallback): an RFQ accept
# in doubt waiting for evidence, or orders resting with nobody filling them. A person is told
# (CRITICAL ``job_overdue``), again at most every JOB_OVERDUE_ALERT_EVERY_SECONDS while it lasts.
JOB_OVERDUE_SECONDS = 1800.0
JOB_OVERDUE_ALERT_EVERY_SECONDS = 3600.0
# A trade whose whole tick raises (a close that cannot start, a bug in a transition) is driven by
# nobody: no exit, close, unwind or settlement step happens while it lasts. After this many failed
# ticks in a row a CRITICAL alert (again at most every interval while it lasts); the traceback is
# logged on the first failure, when the error changes and at most every TRADE_TICK_LOG_EVERY_SECONDS.
TRADE_TICK_FAILURES_BEFORE_ALERT = 3
TRADE_TICK_ALERT_EVERY_SECONDS = 3600.0
TRADE_TICK_LOG_EVERY_SECONDS = 300.0
TRADE_TICK_ERROR_CHARS = 300     # the error text an alert carries, at most
# Final orders polled once more per tick while an interrupted job waits for late fills (a bound on
# the requests one tick makes; the rest are polled on the next ticks).
INTERRUPTED_RECHECKS_PER_TICK = 20
# The intents of an unwind's rounds (a kill's too): what a restart mid-unwind may have left in
# its late-fill grace (RECOVERY.md T6).
UNWIND_FAMILIES = (Intent.UNWIND, Intent.KILL)
# An RFQ accept still unresolved this long after the trade first waited on it is a CRITICAL alert
# (the reconciler settles one within about two minutes: rows R2-R3).
ACCEPT_DOUBT_ALERT_SECONDS = 300.0

EXIT_REASON_EXPIRY = "expiry"
EXIT_REASON_MANUAL = "manual"
EXIT_REASON_KILL = "kill_switch"
# A delta-hedged trade (docs/HEDGING.md) keeps in its record: the bound hedge config it opened
# with, the hedge's state (HedgeState) and the indexes of its two hedge legs (a long and a short
# perp leg: a hedge that changes side reduces one to zero and opens the other, never flips one).
# A trade the kill switch force-closed keeps that in its record, so a restart brings it back in
# kill mode whatever its state or exit reason (UNWINDING has none; an exit decided before the
# kill keeps its own): its next round then carries kill intents and the urgent profile.
KILL_MODE_KEY = "kill_mode"
HEDGE_CONFIG_KEY = "hedge_config"
HEDGE_STATE_KEY = "hedge"
HEDGE_LEGS_KEY = "hedge_legs"
# The exit (its ``exit_decided_at``) for which the recorded hedge was last brought in line
# with the fills, before the first close round of that exit (see ``_hedge_record_at_exit``).
HEDGE_EXIT_SYNC_KEY = "hedge_synced_for_exit"
# Orders the hedge legs of one trade may use for rebalancing. The ledger refuses a trade's
# 301st order (max_orders_per_trade); stopping the rebalances well before keeps room for the
# close of every leg, hedge included, which must never meet the cap.
HEDGE_ORDER_BUDGET = 200
HEDGE_ORDERS_PER_JOB = 4                  # one order and three requotes (hedge_execution_params)


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
    _S.SETTLING: frozenset({_S.CLOSED, _S.FAILED, _S.PENDING_CLOSE}),   # PENDING_CLOSE: a perp still held
    # Terminal, except for reopening a close an older version booked without evidence
    # (RECOVERY.md X1): the trade goes back to where its fills put it.
    _S.CLOSED: frozenset({_S.OPEN}),
    _S.FAILED: frozenset({_S.OPENING}),
}


def _fill_marks(trade: "TradeLifecycle") -> tuple[tuple[float, float], ...]:
    """Each leg's (open filled, closed filled): what a change of the trade's fills changes."""
    return tuple((leg.open_filled, leg.close_filled) for leg in trade.legs)


class IllegalTransition(RuntimeError):
    """A trade state change the transition table does not allow (a bug, never an exchange event)."""


# --------------------------------------------------------------------------------------------
# Legs and trades
# --------------------------------------------------------------------------------------------


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
    ``entry_market`` is the market of the chain row the leg was chosen on; ``exit_market`` the
    leg's last quote when the exit was decided (or when an unwind began): what the fills are
    measured against afterwards (execution cost vs mid, the greeks' share of the PnL).
    A perpetual leg (``contract.is_perpetual``) never expires or freezes, snaps on its own
    quantity step, and books the funding the exchange paid or charged it in ``funding``
    (signed cash: + received, − paid; docs/PERPETUALS.md), part of its cash and so of PnL.
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
    entry_market: LegMarket | None = None
    exit_market: LegMarket | None = None
    funding: float = 0.0
    quote: Any = field(default=None, repr=False, compare=False)
    # An expired leg not yet settled: the price it is valued at meanwhile (``ExpiryMark``), set
    # by the lifecycle at each tick from the settler; in memory only.
    expiry_mark: ExpiryMark | None = field(default=None, repr=False, compare=False)
    # Set by the exit evaluator, only while it judges the exits, on a held leg whose quote is
    # missing or older than its limit: the last quote stays (evidence, views), its greeks do not count.
    quote_stale: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.side = Side.of(self.side)

    @property
    def is_perpetual(self) -> bool:
        return self.contract.is_perpetual

    @property
    def lot(self) -> float:
        """The quantity step an order on this leg is snapped to: the underlying's perp or option step.

        ETH options trade in steps of 0.1, not the BTC lot of 0.01: an order cut on the wrong
        grid is refused by the exchange (10558), and an engine that keeps working the other
        legs leaves the refused one naked.
        """
        spec = UNDERLYINGS.get(self.contract.underlying)
        if spec is None:
            return LOT
        return spec.perp_qty_step if self.contract.is_perpetual else spec.option_qty_step

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
        return LegTarget(self.index, self.symbol, self.side, self.qty, self.lot)

    def reducing_target(self) -> LegTarget:
        """What a close, unwind or kill must do: the opposite side, for what we still hold (4.4)."""
        return LegTarget(self.index, self.symbol, self.side.opposite, self.net_qty, self.lot)

    @property
    def settled_qty(self) -> float:
        return self.settlement.qty if self.settlement is not None else 0.0

    @property
    def net_qty(self) -> float:
        """Open fills (+ adopted) - reducing fills - settled - closed externally."""
        return clean_qty(self.open_filled + self.adopted_qty - self.close_filled - self.settled_qty
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
        return self.open_cash + self.close_cash + self.settlement_cash + self.external_cash + self.funding

    def is_frozen(self, now: float) -> bool:
        """Inside the pre-expiry halt: no new order on this symbol (BEHAVIOUR 4.5). A perp never is."""
        if self.contract.is_perpetual:
            return False
        return now >= self.contract.expiry_seconds - HALT_SECONDS_BEFORE_EXPIRY

    def is_expired(self, now: float) -> bool:
        """Past the expiry; a perpetual never expires."""
        return not self.contract.is_perpetual and now >= self.contract.expiry_seconds

    def greek(self, name: str) -> float | None:
        """Per-contract greek of the last quote refresh; None when unknown.

        None too while ``quote_stale``: a refresh that failed leaves the old quote on the leg, and
        a greek minutes old must neither fire ``leg_greek_limit`` nor pass for "below the limit".
        """
        if self.quote is None or self.quote_stale:
            return None
        value = getattr(self.quote, name, None)
        if value is None or isinstance(value, bool):
            return None
        value = float(value)
        return value if math.isfinite(value) else None

    def note_exit_market(self) -> None:
        """Keep the last quote known as the market the exit was judged on (nothing when there is none)."""
        if self.quote is not None:
            self.exit_market = LegMarket.of(self.quote)

    def to_record(self) -> dict:
        """The stored form: the contract's fields flat beside the leg's, as records have always been."""
        return {
            "index": self.index, **self.contract.to_record(), "side": int(self.side), "qty": self.qty,
            "open_filled": self.open_filled, "open_vwap": self.open_vwap, "open_fees": self.open_fees,
            "close_filled": self.close_filled, "close_vwap": self.close_vwap, "close_fees": self.close_fees,
            "fees": self.fees, "net_qty": self.net_qty, "adopted_qty": self.adopted_qty,
            "external_qty": self.external_qty, "external_price": self.external_price,
            "settlement": self.settlement.to_record() if self.settlement is not None else None,
            "entry_market": self.entry_market.to_record() if self.entry_market is not None else None,
            "exit_market": self.exit_market.to_record() if self.exit_market is not None else None,
            "funding": self.funding, "kind": self.contract.kind,
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
            entry_market=LegMarket.from_record(data.get("entry_market")),
            exit_market=LegMarket.from_record(data.get("exit_market")),
            funding=float(data.get("funding", 0.0) or 0.0),
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
        return {leg.index: leg.sign * leg.net_qty for leg in self.legs if not is_zero(leg.net_qty)}

    @property
    def has_exposure(self) -> bool:
        return any(not is_zero(leg.net_qty) for leg in self.legs)

    @property
    def is_active(self) -> bool:
        return self.state not in TERMINAL_STATES

    def forget_quotes(self) -> None:
        """Drop the legs' last quotes of a trade that ended for good.

        Why: a finished trade stays in memory for the views and the runners, and its legs' last
        chain rows were about a quarter of its size (a month of five strategies is hundreds of
        trades). Nothing reads them once it has ended: the exit's market is kept in each leg's
        ``exit_market``, the records never held quotes, and a trade that trades again is
        quoted afresh at its next refresh.
        """
        for leg in self.legs:
            leg.quote = None

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
            if is_zero(qty):
                continue
            if now is not None and leg.is_expired(now):
                expired = self._expired_value(leg, mode, now)
                value += leg.sign * qty * expired.price - expired.fee
                legs.append(expired)
                continue
            quote = self._fresh_quote(leg, now)
            price, degraded = _value_of_contract(mode, leg, quote)
            fee = 0.0
            if mode == "executable" and leg.is_perpetual:
                fee = qty * price * PERP_TAKER_FEE_RATE
            elif mode == "executable":
                index = float(quote.underlying_price or 0.0)
                fee = min(qty * index * TAKER_FEE_RATE, qty * price * FEE_CAP_OF_PREMIUM)
            value += leg.sign * qty * price - fee
            legs.append(LegValue(leg.index, leg.symbol, price, fee, degraded, float(quote.bid or 0.0),
                                 float(quote.ask or 0.0), float(quote.mark), float(quote.as_of)))
        return Valuation(mode, round(value, 8), cash, fees, legs)

    def _expired_value(self, leg: TradeLeg, mode: str, now: float) -> LegValue:
        """An expired leg not settled yet: its intrinsic value at the settlement price (``ExpiryMark``),
        less the delivery fee in ``executable`` mode; ``StaleDataError`` without a mark read
        within ``QUOTE_MAX_AGE_SECONDS``.

        Why: its quote ends at the expiry; without this a calendar trade, whose far leg is
        still open, had no valuation (its stop loss blind) until the delivery price was listed.
        An estimate is a degraded value (``LegValue.degraded``); the booked settlement decides.
        """
        mark = leg.expiry_mark
        if mark is None:
            raise StaleDataError(f"{self.id} leg {leg.index} {leg.symbol}: expired, no settlement price yet")
        if now - mark.as_of > QUOTE_MAX_AGE_SECONDS:
            raise StaleDataError(f"{self.id} leg {leg.index} {leg.symbol}: expired, settlement price read "
                                 f"{now - mark.as_of:.1f} s ago (> {QUOTE_MAX_AGE_SECONDS:.0f} s)")
        intrinsic = intrinsic_value(leg.option_type, leg.strike, mark.price)
        fee = (estimated_delivery_fee(leg.expiry_ms, leg.net_qty, mark.price, intrinsic)
               if mode == "executable" else 0.0)
        return LegValue(leg.index, leg.symbol, intrinsic, fee, not mark.final, 0.0, 0.0, intrinsic, mark.as_of)

    def pnl(self, mode: str = "fair", *, now: float | None = None) -> float:
        """Our fills' cash - fees + value of what we still hold (BEHAVIOUR 2.3)."""
        return self.valuation(mode, now=now).value

    def hedge_leg_indexes(self) -> tuple[int, ...]:
        """The indexes of the delta hedge's perp legs (none before the first hedge order)."""
        legs = self.metadata.get(HEDGE_LEGS_KEY) or {}
        return tuple(int(legs[side]) for side in ("long", "short") if side in legs)

    def hedge_qty(self) -> float:
        """The hedge the trade holds, signed (long > 0), from the hedge legs' fills only."""
        hedge = self.hedge_leg_indexes()
        value = round(math.fsum(leg.sign * leg.net_qty for leg in self.legs if leg.index in hedge), 8)
        return 0.0 if is_zero(value) else value

    def structure_delta(self, *, exclude: Sequence[int] = ()) -> float:
        """Sum of sign x net_qty x delta over our legs (those of ``exclude`` left out: the hedge's
        when the hedge asks); StaleDataError if a delta is unknown or stale."""
        now = self._now(None)
        total = 0.0
        for leg in self.legs:
            if is_zero(leg.net_qty) or leg.index in exclude:
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


def positions_beyond_ours(positions: Iterable[PositionSnapshot], ours: Mapping[str, float], market: PriceSource,
                          now: float, *, first_index: int) -> list[TradeLeg]:
    """The account's positions beyond our trades' exposure, as adopted legs (kill switch, BEHAVIOUR 7.6).

    Only what lies beyond our exposure on the account's own side is adopted; a contract that
    has expired or that the market does not know is left alone. Legs are numbered from
    ``first_index`` (after the legs the external trade already has).
    """
    legs: list[TradeLeg] = []
    for position in positions:
        signed = float(position.signed_qty)
        extra = clean_qty(abs(signed - ours.get(position.symbol, 0.0)))
        if is_zero(extra) or (signed - ours.get(position.symbol, 0.0)) * signed <= 0:
            continue
        if is_perpetual_symbol(position.symbol):
            underlying = underlying_of(position.symbol)
            if underlying not in UNDERLYINGS:
                logger.warning("external position %s: a perpetual of no underlying we trade; not adopted",
                               position.symbol)
                continue
            contract = Contract.perpetual(str(underlying))
        else:
            try:
                instrument = market.instrument(position.symbol)
            except Exception:  # noqa: BLE001
                logger.exception("external position %s: instrument unknown; not adopted", position.symbol)
                continue
            if now >= instrument.expiry_ms / 1000.0:
                continue
            contract = Contract(symbol=position.symbol, underlying=instrument.base,
                                option_type=instrument.option_type, strike=float(instrument.strike),
                                expiry_ms=int(instrument.expiry_ms))
        legs.append(TradeLeg(index=first_index + len(legs), contract=contract,
                             side=Side.BUY if signed > 0 else Side.SELL, qty=extra, adopted_qty=extra))
    return legs


def is_external_trade(trade: TradeLifecycle) -> bool:
    """A trade the kill switch made of positions none of ours held (``--all-positions``).

    Such a trade has no strategy and no exit rule: it is closed in kill mode and never counted
    as unmanaged. Recognised by its mark; sequence 0 is how older versions made every one.
    """
    return trade.metadata.get("external") is True or trade.seq == 0


def kill_progress(trade: TradeLifecycle, orders: Sequence[LedgerOrder]) -> str:
    """One line for people on a trade the kill switch is closing: what it still holds, what was sent.

    Why: a kill runs rounds of reduce-only orders for as long as the books need (minutes on a
    thin book); without a line per poll the operator cannot tell a kill at work from a hang.
    ``orders`` are the trade's orders from the ledger (our own record, the truth on what was
    sent); the holdings are the trade's net fills per leg.
    """
    held = ", ".join(f"{trade.legs[index].symbol} {'+' if qty > 0 else ''}{fmt_qty(qty)}"
                     for index, qty in sorted(trade.exposure().items()))
    kills = [order for order in orders if order.intent.family() is Intent.KILL]
    working = [order for order in orders if not order.status.is_final]
    text = (f"trade {trade.id} ({trade.strategy}) {trade.state.value}: still holds {held or 'nothing'}; "
            f"{len(kills)} kill order(s) sent, {fmt_qty(math.fsum(order.filled_qty for order in kills))} filled")
    if working:
        text += "; working: " + ", ".join(f"{order.side.name} {fmt_qty(order.qty - order.filled_qty)} {order.symbol} "
                                          f"@ {fmt(order.price)}" for order in working)
    return text


def urgent_execution_params() -> ExecutionParams:
    """The urgent profile for unwind and kill (BEHAVIOUR 4.3): mark for 60 s repricing every
    15 s, then aggressive with a 5 % buffer for 120 s repricing every 10 s."""
    return ExecutionParams.urgent()


@dataclass
class _TickFailure:
    """A trade whose tick has raised on every tick since ``since`` (``LifecycleManager._tick_failed``)."""

    since: float                             # clock time of the first failure of the streak
    failures: int = 0                        # ticks that raised in a row
    error: str = ""                          # the last error, "Type: message"
    logged_at: float | None = None           # when its traceback was last logged
    alerted_at: float | None = None          # when ``trade_tick_failing`` was last sent


@dataclass
class _HedgeWork:
    """One hedge order in flight: what it was decided on, and its leg's fills before it started
    (the fills it adds are read as the difference, never assumed from what was asked)."""

    leg_index: int
    intent: Intent
    order: HedgeOrder
    before: tuple[float, float, float]     # (qty, qty x vwap, fees) of the leg and intent family
    mark: float
    structure_delta: float
    hedge_before: float
    reason: str
    new_rebalance: bool
    follow_up: HedgeOrder | None


def hedge_execution_params(config: HedgeConfig) -> ExecutionParams:
    """The limit job of one hedge order: at the touch, requoted a few times, never beyond
    fair × (1 ± max_slippage), and priced only while the perp's mark is within
    ``max_mark_index_gap`` of the index: the decision's price protection, applied again to
    every requote (the market the decision saw may be gone 20 s later)."""
    slippage = config.max_slippage_bps / 10_000.0
    return ExecutionParams(fill_timeout_seconds=20.0, aggressive_buffer_pct=0.0, max_requote_rounds=3,
                           min_price_pct_of_fair=1.0 - slippage, max_price_pct_of_fair=1.0 + slippage,
                           grace_seconds=5.0, max_mark_index_gap=config.max_mark_index_gap)


def _error_text(error: BaseException) -> str:
    """``Type: message`` of an error, cut to ``TRADE_TICK_ERROR_CHARS`` (what an alert carries)."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= TRADE_TICK_ERROR_CHARS else text[:TRADE_TICK_ERROR_CHARS - 1] + "…"


def _reason_shape(reason: str) -> str:
    """A reason with its numbers blanked: "logged once per change" means a change of kind, not of
    the seconds left or the last digit of a delta."""
    return re.sub(r"[-+]?\d[\d.,:e+-]*", "#", reason)


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
    exits: ExitWatch = field(default_factory=ExitWatch)            # confirmations, unevaluable/insane episodes
    hedge: _HedgeWork | None = None          # the hedge order in flight (job kind "hedge")
    hedge_note: str | None = None            # the last hedge reason logged (logged once per change)
    delivery: DeliveryWatch = field(default_factory=DeliveryWatch)   # settlement retries
    step_failures: int = 0                   # the job's steps that raised in a row
    watched_job: Any = None                  # the job ``job_since`` is about (``_watch_job_age``)
    job_since: float | None = None           # when that job was first stepped
    job_overdue_alerted_at: float | None = None
    step_alerted_at: float | None = None     # when those failures were last alerted
    # Why an open ended without a fill, kept while the trade waits for its orders to be final
    # before it is FAILED (the job that said it is gone by then).
    open_end_reason: str | None = None
    accept_wait_since: float | None = None   # since when the trade waits on an RFQ accept in doubt
    accept_alerted: bool = False
    # The unwind and kill orders this process did not see through a job's grace have had their
    # late-fill poll (``_unwind_fills_settled``); every later round's orders get the job's own.
    unwind_fills_settled: bool = False

    def params_for(self, mode: str) -> Any:
        """The engine's own configuration (None = that engine's defaults); limit gets ExecutionParams."""
        if mode == "limit":
            return self.params
        return self.engine_params.get(mode)

    def apply(self, hooks: StrategyHooks, default_params: ExecutionParams) -> None:
        """Take the rules of the trade's strategy (attached by its runner, also after a restart)."""
        self.exit_conditions = hooks.exit_conditions
        self.params = hooks.execution_params or default_params
        self.engine_params = {"smart": hooks.smart_config, "rfq": hooks.rfq_params}
        self.on_opened = hooks.on_opened
        self.on_closed = hooks.on_closed


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



def _revisable(leg: TradeLeg) -> bool:
    """A settled leg whose settlement is an estimate the exchange may still correct: its price
    (the estimated expiration price) or its fee (no exercise record yet; dailies pay none)."""
    settlement = leg.settlement
    return settlement is not None and (settlement.price_estimated
                                       or settlement.fee_revisable(leg.contract.expiry_ms))

class LifecycleManager:
    """Owns every trade and drives it through BEHAVIOUR 4.2 one non-blocking step per tick.

    The coordinator: it keeps the trades and their in-memory runtime and the one state setter
    (``_set_state``, which enforces ``TRANSITIONS``); it runs the jobs and the close rounds,
    the kill switch, restart recovery and the expiry halt, and decides what every part's
    answer does to a trade's state. Its parts do one job each and are handed exactly what
    they need: ``TradeFills`` reads our fills from the ledger, ``TradeRecorder`` writes every
    change before the next request (I5) and calls the strategy back once, ``ExitEvaluator``
    judges the exit rules, ``CloseRounds`` plans each reducing round and keeps the breaker,
    ``Settler`` says what expiry paid a leg, ``ExternalCloses`` books (and un-books) closes
    made outside the daemon, ``LifecycleHolds`` keeps the start-up hold and the entry holds.
    """

    callback_name = "LifecycleManager"   # how the monitor names this callback

    def __init__(self, *, ledger: LifecycleLedger, executor: JobStarter, market: PriceSource,
                 client: SettlementClient, clock: Clock, store: LifecycleStore | None = None,
                 alerts: AlertSender | None = None, exec_params_default: ExecutionParams | None = None,
                 urgent_params: ExecutionParams | None = None, quote_max_age: float = 5.0,
                 health: ConditionHealth | None = None, journal: Callable[[str, dict], Any] | None = None,
                 funding_client: PerpAccountClient | None = None,
                 block_accepts: BlockAcceptWatch | None = None) -> None:
        require("LifecycleManager ledger", ledger, LifecycleLedger)
        require_optional("LifecycleManager funding_client", funding_client, PerpAccountClient)
        require("LifecycleManager executor", executor, JobStarter)
        require("LifecycleManager market", market, PriceSource)
        require("LifecycleManager client", client, SettlementClient)
        require("LifecycleManager clock", clock, Clock)
        require_optional("LifecycleManager store", store, LifecycleStore)
        require_optional("LifecycleManager alerts", alerts, AlertSender)
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
        # 5 s, below the poll interval (10 s by default): each poll values the held legs on a
        # chain fetched in that poll (one call per expiry, shared by every trade and by the engines' fair values, whose
        # limit is 30 s), so exit confirmations count new quotes; 15 s (BEHAVIOUR 7.2) is the
        # valuation's own refusal limit (QUOTE_MAX_AGE_SECONDS), not a reason to refetch less.
        self.quote_max_age = float(quote_max_age)
        self.fills = TradeFills(ledger)
        self.funding = FundingAttribution(funding_client, ledger) if funding_client is not None else None
        self.rounds = CloseRounds(ledger=ledger, urgent_params=self.urgent_params, alerts=alerts)
        self.recorder = TradeRecorder(store=store, clock=clock, alerts=alerts, journal=journal)
        self.exits = ExitEvaluator(market=market, alerts=alerts, quote_max_age=self.quote_max_age, health=health)
        self.settler = Settler(client, alerts)
        self.holds = LifecycleHolds()
        self.external = ExternalCloses(recorder=self.recorder, alerts=alerts)
        self.accepts = AcceptsInDoubt(ledger)
        if block_accepts is not None:
            self.watch_block_accepts(block_accepts)
        self._lock = threading.RLock()
        self._start_indexes()
        self._next_seq = 1
        self._last_snapshot: Any = None
        self._without_snapshot = False   # said once per stretch of wakes without a snapshot
        # Trades whose tick raises, by id, while the streak lasts (``_tick_failed``, ``failing_trades``).
        self._tick_failures: dict[str, _TickFailure] = {}
        self._scope: frozenset[str] | None = None   # act_only_on: the strategies this run acts on

    def _start_indexes(self) -> None:
        """Empty trade indexes: the record of every trade and the small sets the hot paths read."""
        # Every trade, finished ones included (``get``, ``trades``, reports and status), also in
        # sequence order overall and per strategy, so listing them needs no sort.
        self._trades: dict[str, TradeLifecycle] = {}
        self._in_order: list[TradeLifecycle] = []
        self._by_strategy: dict[str, list[TradeLifecycle]] = {}
        # The hot set the tick walks: trades that were active when last seen. A trade that has
        # ended leaves it (and its runtime) at the next look (``_active_locked``), so the cost
        # of a tick is that of the open trades, not of the history.
        self._active: dict[str, TradeLifecycle] = {}
        self._runtime: dict[str, _Runtime] = {}
        self._hooks: dict[str, StrategyHooks] = {}
        # The trades whose funding may still be due: every trade until it has ended and
        # ``FundingAttribution.settled`` says nothing can be due again (then it leaves, so the
        # per-poll check does not grow with the run's history).
        self._funding_watch: dict[str, TradeLifecycle] = {}
        # Ended trades with a leg settled at the estimated expiration price, until the delivery
        # price revises it or REVISION_WINDOW_SECONDS after the expiry (``_revise_estimates``).
        self._estimated: dict[str, TradeLifecycle] = {}
        # Ended trades whose external close was booked without evidence (reversible, RECOVERY.md
        # X1): the once-a-minute reversal check reads these instead of every trade ever made.
        self._reversible: dict[str, TradeLifecycle] = {}
        # Ended trades whose orders the ledger may still hold in memory: offered to its archive
        # by ``_archive_finished`` until it takes them, so a long-running daemon does not keep
        # every order it ever sent.
        self._archive_due: dict[str, TradeLifecycle] = {}
        self._archive_swept_at: float | None = None

    def __repr__(self) -> str:
        return f"LifecycleManager(trades={len(self._trades)})"

    def watch_block_accepts(self, watch: BlockAcceptWatch) -> None:
        """The reconciler's answer on RFQ accepts recorded before a restart (RECOVERY.md R1-R3).

        Handed over after construction because the reconciler is built with this manager.
        Without it an accept in doubt is resolved only by its fills reaching our ledger, and
        a trade whose accept never happened waits (fail closed, with a CRITICAL alert).
        """
        require("LifecycleManager block_accepts", watch, BlockAcceptWatch)
        self.accepts.attach(watch)

    def __call__(self, snapshot: Any) -> None:
        """So that ``monitor.register(manager)`` also finds ``on_snapshot_error``."""
        self.tick(snapshot)

    @property
    def persistence_errors(self) -> int:
        """State writes that failed (the runners pause entries on them; exits go on)."""
        return self.recorder.errors

    @property
    def breaker_trips(self) -> int:
        """Circuit-breaker trips since start-up, every trade together (the health line shows them)."""
        return self.rounds.trips

    # ---- queries --------------------------------------------------------------------

    def get(self, trade_id: str) -> TradeLifecycle | None:
        with self._lock:
            return self._trades.get(trade_id)

    def trades(self, strategy: str | None = None) -> list[TradeLifecycle]:
        """Every trade (finished ones included), in sequence order."""
        with self._lock:
            return list(self._in_order if strategy is None else self._by_strategy.get(strategy, ()))

    def trade_count(self) -> int:
        """How many trades there are, finished ones included (without copying the list)."""
        with self._lock:
            return len(self._in_order)

    def perp_legs(self, symbol: str) -> dict[tuple[str, int], float]:
        """{(trade id, leg index): signed net quantity} of the active trades' legs on the perpetual
        ``symbol`` (``seams.PerpBooks``): what the ledger compares with the account's one net
        position before a close that the account nets against another trade goes out whole."""
        with self._lock:
            return {(trade.id, leg.index): leg.sign * leg.net_qty for trade in self._active_locked()
                    for leg in trade.legs if leg.symbol == symbol and abs(leg.net_qty) > QTY_EPSILON}

    def active_trades(self, strategy: str | None = None) -> list[TradeLifecycle]:
        with self._lock:
            return [t for t in self._active_locked() if strategy is None or t.strategy == strategy]

    def _active_locked(self) -> list[TradeLifecycle]:
        """The active trades in sequence order; ended ones leave the hot set here (lock held).

        An ended trade keeps its record (``trades``, ``get``, the store); only the per-tick
        structures forget it. Its runtime goes too, unless the trade may still be reopened
        (an external close booked without evidence, docs/RECOVERY.md X1) or a job is still
        attached, so nothing a later step could need is dropped.
        """
        active: list[TradeLifecycle] = []
        for trade in list(self._active.values()):
            if trade.is_active:
                active.append(trade)
                continue
            del self._active[trade.id]
            self._note_ended(trade)
            runtime = self._runtime.get(trade.id)
            if runtime is not None and runtime.job is None and not booked_without_evidence(trade):
                del self._runtime[trade.id]
        active.sort(key=lambda t: t.seq)
        return active

    def _register(self, trade: TradeLifecycle) -> None:
        """Add ``trade`` (or replace the trade of that id) in every index (lock held)."""
        previous = self._trades.get(trade.id)
        if previous is not None:
            self._in_order.remove(previous)
            self._by_strategy[previous.strategy].remove(previous)
            self._active.pop(previous.id, None)
        self._trades[trade.id] = trade
        for ordered in (self._in_order, self._by_strategy.setdefault(trade.strategy, [])):
            ordered.insert(bisect.bisect_right(ordered, trade.seq, key=lambda t: t.seq), trade)
        self._funding_watch[trade.id] = trade
        self._reversible.pop(trade.id, None)
        self._archive_due.pop(trade.id, None)
        if trade.is_active:
            self._active[trade.id] = trade
        else:
            self._note_ended(trade)

    def _note_ended(self, trade: TradeLifecycle) -> None:
        """Index an ended trade: for the archive of its orders, and when its external close may
        be undone (lock held)."""
        self._archive_due[trade.id] = trade
        if booked_without_evidence(trade):
            self._reversible[trade.id] = trade
        if any(_revisable(leg) for leg in trade.legs):
            self._estimated[trade.id] = trade

    def unmanaged_trades(self) -> list[TradeLifecycle]:
        """Active trades whose strategy is not running: no exit rule applies (BEHAVIOUR 4.7)."""
        with self._lock:
            return [t for t in self.active_trades() if not is_external_trade(t) and t.strategy not in self._hooks]

    def has_active_jobs(self) -> bool:
        """True while any job runs or a close/unwind waits for its next round (fast wakes)."""
        with self._lock:
            now = self.clock.now()
            if any(runtime.job is not None for runtime in self._runtime.values()):
                return True
            for trade in self._active_locked():
                runtime = self._runtime.get(trade.id)
                kill = runtime is not None and runtime.kill
                if (trade.state in (TradeState.PENDING_CLOSE, TradeState.UNWINDING)
                        and not self.rounds.breaker_active(trade, kill=kill, now=now)
                        and self.rounds.targets(trade, now)):
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
            legs = [TradeLeg(index=r.index, contract=r.contract, side=r.side, qty=float(r.qty), quote=r.row,
                             entry_market=LegMarket.of(r.row) if r.row is not None else None)
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
            self._register(trade)
            self._runtime[trade.id] = runtime
            targets = [leg.open_target() for leg in legs]
            if not self._persist(trade, "created"):
                # I5: nothing is sent for a trade the store does not hold (no entry without a record).
                self._fail(trade, now, "state write failed before the open")
                return trade
            try:
                runtime.job = self.executor.start(trade.execution_mode, trade, targets, Intent.OPEN,
                                                  runtime.params_for(trade.execution_mode),
                                                  best_effort=False)
                runtime.job_kind = "open"
            except Exception as error:  # noqa: BLE001 - an unstartable open is a failed trade, not a crash
                logger.exception("trade %s: the open job could not start", trade.id)
                reason = f"open job could not start: {type(error).__name__}: {error}"
                if not self.fills.orders_recorded(trade):
                    self._fail(trade, now, reason)
                    return trade
                # The engine recorded an order before it raised: that order may exist. The trade
                # goes on as an open without its job, which resolves the orders and decides on
                # the fills (I2: never FAILED with a non-final order).
                runtime.open_end_reason = reason
                self._set_state(trade, TradeState.OPENING)
                return trade
            if not self._set_state(trade, TradeState.OPENING):
                # I5: the store still says PENDING_OPEN with nothing sent. Sending now would let
                # a crash leave orders a restart does not look for; nothing has gone out, so the
                # open is given up (the job's first request is in its first step).
                runtime.job, runtime.job_kind = None, None
                self._fail(trade, now, "state write failed before the first order")
                return trade
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
        if self.holds.on_hold():
            return
        with self._lock:
            poll_tick = snapshot is not None and snapshot is not self._last_snapshot
            if snapshot is not None:
                self._last_snapshot = snapshot
                self._without_snapshot = False
            self._run(snapshot if poll_tick else None)

    def on_snapshot_error(self, error: Exception) -> None:
        """No snapshot this wake: jobs keep advancing, no exit is evaluated (incident 13)."""
        if self.holds.on_hold():
            return
        # Once per stretch without a snapshot: the monitor says every poll how the outage goes.
        logger.log(logging.DEBUG if self._without_snapshot else logging.INFO,
                   "lifecycle tick without a snapshot (%s): jobs advance, exits wait", error)
        self._without_snapshot = True
        with self._lock:
            self._run(None)

    def act_only_on(self, strategies: Iterable[str]) -> None:
        """Tick only the trades of ``strategies`` (and any trade in kill mode) from now on.

        Why: an operator's ``kill --strategy A`` run without a daemon is a whole daemon for the
        time of the kill; ticking every trade would run B's exits, hedges and close rounds
        (and leave them half done when the kill ends and the process exits). B's trades are
        left exactly as the stopped daemon left them, for its next start.
        """
        with self._lock:
            self._scope = frozenset(strategies)
        logger.warning("lifecycle: acting only on the trades of %s (and trades in kill mode) for this run",
                       ", ".join(sorted(self._scope)) or "no strategy")

    def _in_scope(self, trade: TradeLifecycle) -> bool:
        return self._scope is None or trade.strategy in self._scope or self._runtime_of(trade).kill

    def _run(self, poll_snapshot: Any) -> None:
        now = self.clock.now()
        if poll_snapshot is not None:
            self._attribute_funding(now)
            self._revise_estimates(now)
        for trade in self._active_locked():
            if not self._in_scope(trade):
                continue
            try:
                self._tick_trade(trade, now, poll_snapshot)
                if poll_snapshot is not None and trade.is_active and self._runtime_of(trade).kill:
                    logger.info("kill in progress: %s", kill_progress(trade, self.ledger.orders(trade.id)))
            except Exception as error:  # noqa: BLE001 - one trade's bug never stops the others
                self._tick_failed(trade, now, error)
            else:
                if trade.id in self._tick_failures:
                    self._tick_recovered(trade, now)
        self._forget_ended_tick_failures(now)
        self._archive_finished(now)

    # ---- a trade whose tick keeps failing --------------------------------------------------

    def _tick_failed(self, trade: TradeLifecycle, now: float, error: Exception) -> None:
        """Count a failed tick of ``trade``; after ``TRADE_TICK_FAILURES_BEFORE_ALERT`` in a row, a CRITICAL alert.

        Why: the tick is what drives a trade (its job, exits, close and unwind rounds, expiry).
        One that raises on every tick (the engine refuses the close job, a bug in a transition)
        leaves the trade with its exposure and nobody driving it; a traceback per tick in the
        log says nothing to anybody. Mirrors ``job_step_failing``: the alert names the trade,
        its state, the error and how long it has lasted (injected clock), and repeats at most
        every ``TRADE_TICK_ALERT_EVERY_SECONDS``; ``failing_trades`` shows it to the health state.
        """
        failure = self._tick_failures.get(trade.id)
        if failure is None:
            failure = self._tick_failures[trade.id] = _TickFailure(since=now)
        failure.failures += 1
        text = _error_text(error)
        lasted = fmt_duration(now - failure.since)
        if (failure.logged_at is None or _reason_shape(text) != _reason_shape(failure.error)
                or now - failure.logged_at >= TRADE_TICK_LOG_EVERY_SECONDS):
            failure.logged_at = now
            logger.exception("trade %s: tick failed in state %s (%d in a row for %s); the other trades go on",
                             trade.id, trade.state.value, failure.failures, lasted)
        else:
            logger.debug("trade %s: tick failed again in state %s (%d in a row): %s", trade.id, trade.state.value,
                         failure.failures, text)
        failure.error = text
        if failure.failures < TRADE_TICK_FAILURES_BEFORE_ALERT:
            return
        if failure.alerted_at is not None and now - failure.alerted_at < TRADE_TICK_ALERT_EVERY_SECONDS:
            return
        failure.alerted_at = now
        exposure = "; it still holds a position" if trade.has_exposure else ""
        self._alert("CRITICAL", "trade_tick_failing",
                    f"trade {trade.id} ({trade.strategy}) {trade.state.value}: its tick has failed {failure.failures} "
                    f"times in a row for {lasted} ({text}); nothing drives this trade (no exit, close, unwind or "
                    f"settlement step) while it lasts{exposure}. It is retried every tick: check the traceback in "
                    f"the log and the trade's orders and position on the exchange (`python main.py status`)",
                    trade_id=trade.id, state=trade.state.value, failures=failure.failures,
                    failing_seconds=round(now - failure.since, 3), error=text)

    def _tick_recovered(self, trade: TradeLifecycle, now: float) -> None:
        """The trade's tick works again: the streak ends (said as an alert when it was alerted)."""
        failure = self._tick_failures.pop(trade.id)
        lasted = fmt_duration(now - failure.since)
        logger.warning("trade %s: tick works again in state %s after %d failure(s) in %s", trade.id,
                       trade.state.value, failure.failures, lasted)
        if failure.alerted_at is not None:
            self._alert("WARNING", "trade_tick_recovered",
                        f"trade {trade.id} ({trade.strategy}) {trade.state.value}: its tick works again after "
                        f"{failure.failures} failures in {lasted}",
                        trade_id=trade.id, state=trade.state.value, failures=failure.failures)

    def _forget_ended_tick_failures(self, now: float) -> None:
        """A trade that is no longer active is not ticked: its streak (if any) ends here."""
        for trade_id in [key for key in self._tick_failures if key not in self._active]:
            failure = self._tick_failures.pop(trade_id)
            trade = self._trades.get(trade_id)
            state = trade.state.value if trade is not None else "gone"
            logger.warning("trade %s: no longer active (%s) after %d failed tick(s)", trade_id, state,
                           failure.failures)
            if failure.alerted_at is not None:
                self._alert("WARNING", "trade_tick_recovered",
                            f"trade {trade_id} is no longer active ({state}) after {failure.failures} failed ticks "
                            f"in {fmt_duration(now - failure.since)}: it is not ticked any more",
                            trade_id=trade_id, state=state, failures=failure.failures)

    def failing_trades(self) -> dict[str, float]:
        """Active trades whose tick has failed ``TRADE_TICK_FAILURES_BEFORE_ALERT`` times or more in a
        row (the ones ``trade_tick_failing`` is about): trade id -> seconds since the streak began,
        by the injected clock, in the order the streaks began. Read-only, for the health state."""
        with self._lock:
            now = self.clock.now()
            return {trade_id: max(0.0, now - failure.since) for trade_id, failure in self._tick_failures.items()
                    if failure.failures >= TRADE_TICK_FAILURES_BEFORE_ALERT}

    def _archive_finished(self, now: float) -> None:
        """Offer the ledger the orders of trades that ended for good, every ``ARCHIVE_SWEEP_SECONDS``.

        A trade qualifies once nothing can still change it: it is not active, no job or
        runtime is attached, its external close cannot be undone (``_reversible``) and no
        funding can still be due (``_funding_watch``). The ledger adds its own conditions
        (every order final and quiet for an hour) and says False until they hold: the trade
        is then offered again at the next sweep. Reading the orders later brings them back.
        A trade the ledger took also forgets its legs' last quotes (``forget_quotes``).
        """
        if self._archive_swept_at is not None and now - self._archive_swept_at < ARCHIVE_SWEEP_SECONDS:
            return
        self._archive_swept_at = now
        for trade in list(self._archive_due.values()):
            if trade.is_active:
                del self._archive_due[trade.id]   # trading again: offered when it ends again
                continue
            if (trade.id in self._reversible or trade.id in self._runtime
                    or (self.funding is not None and trade.id in self._funding_watch)):
                continue
            try:
                archived = self.ledger.archive_trade(trade.id)
            except Exception:  # noqa: BLE001 - the archive only saves memory: trading goes on
                logger.exception("trade %s: archiving its orders failed", trade.id)
                continue
            if archived:
                del self._archive_due[trade.id]
                trade.forget_quotes()

    def _revise_estimates(self, now: float) -> None:
        """Settlements booked at the estimated expiration price, re-booked at the delivery price
        once the exchange lists it (BEHAVIOUR 4.5): the trade's PnL follows, with a warning.
        After ``REVISION_WINDOW_SECONDS`` past the expiry the estimate stands, said once."""
        for trade in list(self._estimated.values()):
            pending = [leg for leg in trade.legs if _revisable(leg)]
            if not pending or trade.is_active:
                del self._estimated[trade.id]
                continue
            revised: list[dict[str, Any]] = []
            for leg in pending:
                try:
                    settlement = self.settler.revise_leg(leg, now)
                except Exception:  # noqa: BLE001 - asked again at the next poll
                    logger.exception("trade %s leg %d: revising its estimated settlement failed", trade.id, leg.index)
                    continue
                estimate = leg.settlement
                if settlement is None or estimate is None:
                    continue
                revised.append({"leg": leg.index, "estimate": estimate.delivery_price,
                                "delivery": settlement.delivery_price,
                                "cash_change": round(settlement.cash - estimate.cash, 8),
                                "fee_change": round(settlement.fee - estimate.fee, 8)})
                leg.settlement = settlement
            if revised:
                before = trade.realized_pnl
                trade.fees_paid = trade.total_fees()
                trade.realized_pnl = trade.realized()
                if not any(leg.settlement is not None and leg.settlement.price_estimated for leg in trade.legs):
                    trade.flags[:] = [flag for flag in trade.flags if flag != "settlement_estimated"]
                if not any(leg.settlement is not None and leg.settlement.fee_estimated for leg in trade.legs):
                    trade.flags[:] = [flag for flag in trade.flags if flag != "fee_estimated"]
                if "settlement_revised" not in trade.flags:
                    trade.flags.append("settlement_revised")
                self._persist(trade, "settlement_revised", legs=revised, realized_before=before)
                if any(item["estimate"] != item["delivery"] for item in revised):
                    self._alert("WARNING", "settlement_revised",
                                f"trade {trade.id} ({trade.strategy}): settled at the estimated expiration price "
                                f"{revised[0]['estimate']:,.2f}, now re-booked at the delivery price "
                                f"{revised[0]['delivery']:,.2f}; realized PnL {fmt(before)} -> "
                                f"{fmt(trade.realized_pnl)} USD", trade_id=trade.id, legs=revised)
                else:
                    logger.info("trade %s (%s): settlement fee re-booked from the exchange's exercise record; "
                                "realized PnL %s -> %s USD", trade.id, trade.strategy, fmt(before),
                                fmt(trade.realized_pnl))
                continue
            expiry = max(leg.contract.expiry_ms for leg in pending) / 1000.0
            priced = any(leg.settlement is not None and leg.settlement.price_estimated for leg in pending)
            window = REVISION_WINDOW_SECONDS if priced else EXERCISE_WINDOW_SECONDS
            if now - expiry >= window:
                del self._estimated[trade.id]
                logger.warning("trade %s (%s): %s %.0f h after expiry; the settlement stays %s", trade.id,
                               trade.strategy, "no delivery price" if priced else "no exercise record", window / 3600,
                               "at the estimated expiration price" if priced else "with its estimated fee")

    def _attribute_funding(self, now: float) -> None:
        """Book the funding payments of our perp legs after each funding instant (docs/PERPETUALS.md)."""
        if self.funding is None:
            return
        candidates: list[TradeLifecycle] = []
        for trade in list(self._funding_watch.values()):
            if self.funding.due(trade, now):
                candidates.append(trade)
            elif self.funding.settled(trade, now):
                del self._funding_watch[trade.id]
        if not candidates:
            return
        try:
            booked = self.funding.attribute(candidates, now)
        except Exception:  # noqa: BLE001 - funding is retried at the next poll; trading goes on
            logger.exception("funding attribution failed")
            return
        amounts: dict[str, list[tuple[str, float]]] = {}
        for trade, key, amount in booked:
            amounts.setdefault(trade.id, []).append((key, amount))
        for trade in candidates:
            if trade.realized_pnl is not None and not trade.is_active:
                trade.realized_pnl = trade.realized()
            for key, amount in amounts.get(trade.id, []):
                logger.info("trade %s (%s): funding %s %+.6f USD", trade.id, trade.strategy, key, amount)
            self._persist(trade, "funding", funding=[{"key": key, "amount": amount}
                                                     for key, amount in amounts.get(trade.id, [])])

    def _tick_trade(self, trade: TradeLifecycle, now: float, poll_snapshot: Any) -> None:
        runtime = self._runtime_of(trade)
        if runtime.job is None and trade.state in (TradeState.OPENING, TradeState.CLOSING):
            self._finish_interrupted_job(trade, runtime, now)
            return
        if runtime.job is not None:
            self._step_job(trade, runtime, now)
        before = _fill_marks(trade)
        self.fills.sync(trade)
        if _fill_marks(trade) != before:
            # The record follows the fills, not only the state: what ``status`` and the
            # dashboard read from the store must not show a leg flat that holds a fill.
            self._persist(trade, "fills")
        if not trade.is_active:
            return
        if self._handle_expiry(trade, runtime, now):
            return
        # An OPEN trade's only job is a hedge rebalance: its exits are judged all the same (a stop
        # must not wait for a rebalance to finish), and an exit stops the rebalance, whose fills
        # are booked before the close round flattens every leg, hedge included.
        hedging = runtime.job is not None and runtime.job_kind == "hedge"
        if trade.state is TradeState.OPEN and poll_snapshot is not None and (runtime.job is None or hedging):
            self.exits.refresh_quotes(trade, now)
            self._evaluate_exits(trade, runtime, poll_snapshot, now)
            if hedging and trade.state is not TradeState.OPEN and runtime.job is not None:
                runtime.job.request_stop(trade.exit_reason or "exit")
            elif not hedging:
                self._hedge_tick(trade, runtime, now)
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
        except Exception as error:  # noqa: BLE001 - retried on the next tick
            logger.exception("trade %s: %s job step failed", trade.id, runtime.job_kind)
            self._job_step_failed(trade, runtime, now, error)
            return
        if runtime.step_failures:
            logger.warning("trade %s: the %s job steps again after %d failed step(s)", trade.id, runtime.job_kind,
                           runtime.step_failures)
            runtime.step_failures = 0
            runtime.step_alerted_at = None
        if status == JobStatus.WORKING and not job.done:
            self._watch_job_age(trade, runtime, job, now)
            return
        kind = runtime.job_kind
        runtime.watched_job = runtime.job_since = runtime.job_overdue_alerted_at = None
        runtime.job = None
        runtime.job_kind = None
        try:
            result = job.result()
            reason = result.reason or ""
        except Exception:  # noqa: BLE001 - fills come from the ledger anyway
            logger.exception("trade %s: reading the %s job result failed", trade.id, kind)
            reason = ""
        self.fills.sync(trade)
        logger.info("trade %s: %s job ended %s%s", trade.id, kind, status.value, f" ({reason})" if reason else "")
        if kind == "open":
            self._on_open_end(trade, runtime, now, reason)
        elif kind == "hedge":
            self._on_hedge_end(trade, runtime, now)
        elif kind == "unwind":
            self._on_unwind_end(trade, runtime, now)
        else:
            self._on_close_end(trade, runtime, now)

    def _watch_job_age(self, trade: TradeLifecycle, runtime: _Runtime, job: Any, now: float) -> None:
        """A CRITICAL ``job_overdue`` once a job has been working ``JOB_OVERDUE_SECONDS``.

        Why: every engine bounds its own work, except where waiting is the right thing to do
        (an RFQ accept whose fate is unknown is looked up until the exchange says; a block
        trade proven by some of its legs is looked for until every leg is booked). Waiting is
        right, waiting silently is not: the trade holds its strategy's next entry and may hold
        a position nobody else will see to.
        """
        if runtime.watched_job is not job:
            runtime.watched_job, runtime.job_since, runtime.job_overdue_alerted_at = job, now, None
            return
        since = runtime.job_since if runtime.job_since is not None else now
        if now - since < JOB_OVERDUE_SECONDS:
            return
        alerted = runtime.job_overdue_alerted_at
        if alerted is not None and now - alerted < JOB_OVERDUE_ALERT_EVERY_SECONDS:
            return
        runtime.job_overdue_alerted_at = now
        phase = job.phase.value if isinstance(job.phase, Enum) else str(job.phase)
        self._alert("CRITICAL", "job_overdue",
                    f"trade {trade.id} ({trade.strategy}) {trade.state.value}: its {runtime.job_kind} job "
                    f"(phase {phase}) has been working for {fmt_duration(now - since)}; it goes on (an RFQ accept "
                    f"in doubt waits for the "
                    f"exchange's evidence), but check the exchange's orders and block trades for this trade "
                    f"(`python main.py status`)", trade_id=trade.id, job=runtime.job_kind, phase=str(phase),
                    working_seconds=round(now - since, 3))

    def _job_step_failed(self, trade: TradeLifecycle, runtime: _Runtime, now: float, error: Exception) -> None:
        """Count a failed step; after ``JOB_STEP_FAILURES_BEFORE_ALERT`` in a row, a CRITICAL alert.

        Why: a step that raises on every tick (a bug, a payload the engine cannot read) is
        retried forever, and a log line per tick says nothing to anybody: meanwhile the job's
        orders may rest on the book and the trade's exposure is driven by nobody. The alert
        repeats at most every ``JOB_STEP_ALERT_EVERY_SECONDS`` while it goes on.
        """
        runtime.step_failures += 1
        if runtime.step_failures < JOB_STEP_FAILURES_BEFORE_ALERT:
            return
        if runtime.step_alerted_at is not None and now - runtime.step_alerted_at < JOB_STEP_ALERT_EVERY_SECONDS:
            return
        runtime.step_alerted_at = now
        self._alert("CRITICAL", "job_step_failing",
                    f"trade {trade.id} ({trade.strategy}) {trade.state.value}: its {runtime.job_kind} job failed "
                    f"{runtime.step_failures} steps in a row ({type(error).__name__}: {error}); it is retried every "
                    f"tick, but its orders may be working with nobody driving them: check the log and the "
                    f"exchange (`python main.py status`)",
                    trade_id=trade.id, job=runtime.job_kind, failures=runtime.step_failures)

    def _start_job(self, trade: TradeLifecycle, runtime: _Runtime, kind: str, intent: Intent,
                   targets: list[LegTarget], params: Any, mode: str) -> bool:
        runtime.job = self.executor.start(mode, trade, targets, intent, params, best_effort=True)
        runtime.job_kind = kind
        return True

    def _drive(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        """§4.2 rows 8 and 11: start the next unwind or close round when nothing is working."""
        if runtime.job is not None or trade.state not in (TradeState.PENDING_CLOSE, TradeState.UNWINDING):
            return
        if trade.state is TradeState.UNWINDING and not self._unwind_fills_settled(trade, runtime, now):
            return
        if self._accept_in_doubt(trade, runtime, now):
            # An RFQ accept recorded before a restart may have traded these legs (a CLOSING write
            # lost before it left the trade PENDING_CLOSE): no round is sized until it is settled.
            return
        if not trade.has_exposure:
            self._end_flat(trade, runtime, now)   # waits while an order may still fill: then a round
            return
        if self.fills.resolve_stray_orders(trade):
            return
        if not self.fills.strays_settled(trade, now, self._grace_seconds(runtime), INTERRUPTED_RECHECKS_PER_TICK):
            return  # a round is sized on fills: the ones a cancelled stray may still report included
        self._hedge_record_at_exit(trade, now)
        if self.rounds.breaker_active(trade, kill=runtime.kill, now=now):
            return
        targets = self.rounds.targets(trade, now)
        if not targets:
            return  # every leg with exposure is frozen: wait for settlement
        unwinding = trade.state is TradeState.UNWINDING
        plan = self.rounds.next_round(trade, unwinding=unwinding, kill=runtime.kill, params_for=runtime.params_for)
        self._start_job(trade, runtime, plan.kind, plan.intent, targets, plan.params, plan.mode)
        if unwinding:
            self._persist(trade, "unwind_round")
        else:
            self._set_state(trade, TradeState.CLOSING)
        self._step_job(trade, runtime, now)

    # ---- transitions ------------------------------------------------------------------

    def _on_open_end(self, trade: TradeLifecycle, runtime: _Runtime, now: float, reason: str) -> None:
        """§4.2 rows 3-5 decided on our fills, whatever the job reported (cancel + grace already done).

        A leg closed outside the daemon during the open (RECOVERY.md S3) breaks the structure:
        the trade never becomes OPEN then, and whatever it still holds is unwound.
        FAILED waits until no order of the trade is working (``_end_flat``): the trade stays
        OPENING without a job, and ``_finish_interrupted_job`` decides again on the fills.
        """
        broken = any(leg.external_qty > QTY_EPSILON for leg in trade.legs)
        if not broken and all(leg.open_filled >= leg.qty - QTY_EPSILON for leg in trade.legs):
            trade.opened_at = self.fills.last_fill_time(trade, Intent.OPEN, now)
            self._set_state(trade, TradeState.OPEN)
            self.recorder.notify_opened(trade, runtime.on_opened)
            if runtime.pending_close_reason is not None:
                self._decide_exit(trade, runtime.pending_close_reason, {"source": runtime.pending_close_reason}, now)
                self._set_state(trade, TradeState.PENDING_CLOSE)
            return
        if not trade.has_exposure:
            runtime.open_end_reason = runtime.open_end_reason or reason or "open failed with no fill"
            placed = self.fills.orders_placed(trade)
            if not self._end_flat(trade, runtime, now, failure=runtime.open_end_reason):
                return
            if placed:
                self._alert("WARNING", "open_failed", f"trade {trade.id} ({trade.strategy}) failed to open: "
                            f"{trade.failure_reason}", trade_id=trade.id)
            return
        partial = {leg.symbol: leg.net_qty for leg in trade.legs if not is_zero(leg.net_qty)}
        for leg in trade.legs:   # an unwind has no exit decision: its fills are measured against the last quote
            leg.note_exit_market()
        self._set_state(trade, TradeState.UNWINDING)
        self._alert("WARNING", "open_partial_unwind",
                    f"trade {trade.id} ({trade.strategy}) opened partially; unwinding "
                    + ", ".join(f"{symbol} {qty}" for symbol, qty in partial.items()),
                    trade_id=trade.id, legs=partial)

    def _on_unwind_end(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        if not trade.has_exposure:
            self._end_flat(trade, runtime, now)   # else still UNWINDING: ``_drive`` judges it again
            return
        trade.unwind_rounds += 1
        self.rounds.after_failed_round(trade, kill=runtime.kill, now=now)
        self._persist(trade, "unwind_round_ended")

    def _on_close_end(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        if not trade.has_exposure:
            if not self._end_flat(trade, runtime, now):
                # An order still working: back to PENDING_CLOSE (no round counted), where
                # ``_drive`` ends the trade once they are final, or closes what they filled.
                self._set_state(trade, TradeState.PENDING_CLOSE)
            return
        trade.close_rounds += 1
        self.rounds.after_failed_round(trade, kill=runtime.kill, now=now)
        self._set_state(trade, TradeState.PENDING_CLOSE)

    def _end_flat(self, trade: TradeLifecycle, runtime: _Runtime, now: float, *,
                  failure: str | None = None) -> bool:
        """Zero exposure: end the trade for good, once nothing can still add a fill (I2). True if it ended.

        Why: zero exposure now is not zero exposure for good. An order still working can fill
        after the trade has ended, and an RFQ accept a restart cut from its answer can turn into
        fills when its block trade is found; either would then be a position no trade manages
        (a naked leg with no alert and no unwind). So every way to CLOSED or FAILED passes here:
        the trade's non-final orders are resolved first (cancelled, or polled, until final),
        and its accepts in doubt must be settled; until then the trade keeps its state and the
        next tick judges its exposure again (a fill that came meanwhile is unwound or closed).
        """
        if not self._ready_to_end(trade, runtime, now):
            return False
        if trade.has_exposure:   # a fill arrived while its orders were being resolved
            return False
        self._finish_flat(trade, runtime, now, failure=failure)
        return True

    def _ready_to_end(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> bool:
        """No order of the trade is working (stray ones are resolved now, and polled once more after
        the late-fill grace) and no accept is in doubt."""
        if self.fills.resolve_stray_orders(trade):
            return False
        if not self.fills.strays_settled(trade, now, self._grace_seconds(runtime), INTERRUPTED_RECHECKS_PER_TICK):
            return False
        return not self._accept_in_doubt(trade, runtime, now)

    def _accept_in_doubt(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> bool:
        """Whether an RFQ accept recorded before a restart may still bring fills (RECOVERY.md T4, R1-R3).

        Said once in the log when the wait begins; a CRITICAL alert if it lasts longer than
        ``ACCEPT_DOUBT_ALERT_SECONDS`` (the reconciler settles one in about two minutes).
        """
        markers = self.accepts.unresolved(trade.id)
        if not markers:
            if runtime.accept_wait_since is not None:
                logger.info("trade %s: no RFQ accept in doubt any more; judged on its fills", trade.id)
                runtime.accept_wait_since = None
                runtime.accept_alerted = False
            return False
        requests = ", ".join(marker.request_id for marker in markers)
        if runtime.accept_wait_since is None:
            runtime.accept_wait_since = now
            logger.warning("trade %s (%s) %s: an RFQ accept recorded before the restart (RFQ %s) is not resolved "
                           "yet; the trade is not judged until its block trade is found or given up", trade.id,
                           trade.strategy, trade.state.value, requests)
        elif not runtime.accept_alerted and now - runtime.accept_wait_since >= ACCEPT_DOUBT_ALERT_SECONDS:
            runtime.accept_alerted = True
            watched = ("" if self.accepts.watched else
                       " (the reconciler's answer is not wired: only the block trade's fills can settle it)")
            self._alert("CRITICAL", "rfq_accept_in_doubt",
                        f"trade {trade.id} ({trade.strategy}) {trade.state.value}: the RFQ accept recorded before "
                        f"the restart (RFQ {requests}) has been unresolved for "
                        f"{now - runtime.accept_wait_since:.0f} s{watched}; the trade is neither judged nor "
                        f"ended meanwhile: check the exchange's block trades", trade_id=trade.id,
                        requests=[marker.request_id for marker in markers])
        return True

    def _finish_flat(self, trade: TradeLifecycle, runtime: _Runtime, now: float, *,
                     failure: str | None = None) -> None:
        """Zero exposure: CLOSED if the trade ever opened (§4.2 rows 12/16), else FAILED (§4.2 rows 7/16).

        Only ``_end_flat`` and ``record_external_close`` call this, each after checking that no
        order of the trade is working and no accept is in doubt.
        """
        trade.realized_pnl = trade.realized()
        if trade.opened_at is None:
            self._fail(trade, now, failure or trade.failure_reason or "open incomplete; unwound")
            return
        trade.closed_at = now
        self._set_state(trade, TradeState.CLOSED)
        self.recorder.notify_closed(trade, runtime.on_closed)

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
        for leg in trade.legs:
            leg.note_exit_market()
        return True

    # ---- exits --------------------------------------------------------------------------------

    def _evaluate_exits(self, trade: TradeLifecycle, runtime: _Runtime, snapshot: Any, now: float) -> None:
        """§4.2 row 9: the first exit confirmed on enough snapshots decides; its close starts in this
        tick (incident 35). ``ExitEvaluator`` judges; the decision and the state change are made here."""
        decision = self.exits.evaluate(trade, runtime.exit_conditions, runtime.exits, snapshot, now)
        if decision is not None:
            self._decide_exit(trade, decision.reason, decision.detail, now)
            self._set_state(trade, TradeState.PENDING_CLOSE)

    # ---- the delta hedge (docs/HEDGING.md) -------------------------------------------------------

    def _hedge_config(self, trade: TradeLifecycle) -> HedgeConfig | None:
        """The hedge the trade opened with (its record's bound config), or None for an unhedged trade."""
        data = trade.metadata.get(HEDGE_CONFIG_KEY)
        if data is None:
            return None
        try:
            return HedgeConfig.from_record(data).bind(trade.legs[0].contract.underlying)
        except ConfigError as error:
            self._hedge_note(trade, self._runtime_of(trade), f"hedge config refused: {error}", level=logging.ERROR)
            return None

    def _hedge_note(self, trade: TradeLifecycle, runtime: _Runtime, reason: str, *, level: int = logging.INFO) -> None:
        """Log a hedge reason once per change of kind (no line per tick while it stays the same)."""
        shape = _reason_shape(reason)
        if shape == runtime.hedge_note:
            return
        runtime.hedge_note = shape
        logger.log(level, "trade %s (%s) hedge: %s", trade.id, trade.strategy, reason)

    def _hedge_state(self, trade: TradeLifecycle, now: float) -> HedgeState | None:
        """The stored HedgeState, brought in line with the fills (they win); None if the record is bad."""
        try:
            state = HedgeState.from_record(trade.metadata.get(HEDGE_STATE_KEY))
        except ValueError as error:
            self._hedge_note(trade, self._runtime_of(trade), f"hedge record refused, no hedging: {error}",
                             level=logging.ERROR)
            return None
        held = trade.hedge_qty()
        if abs(state.hedge_qty - held) > QTY_EPSILON:
            # Fills booked without their job (a restart mid-order, an order resolved late): the fills
            # are the truth, and the interval restarts so a rebalance is never repeated at once.
            logger.warning("trade %s hedge: the record said %+g, the fills say %+g; the fills win",
                           trade.id, state.hedge_qty, held)
            state = HedgeState(hedge_qty=held, last_rebalance_at=now, rebalances=state.rebalances,
                               fees_usd=state.fees_usd, slippage_usd=state.slippage_usd)
            trade.metadata[HEDGE_STATE_KEY] = state.to_record()
            self._persist(trade, "hedge_resynced", hedge_qty=held)
        return state

    def _hedge_record_at_exit(self, trade: TradeLifecycle, now: float) -> None:
        """Once per exit, before its first close round: the recorded hedge brought in line with the fills.

        A rebalance order whose job was lost (a restart mid-hedge) is resolved by the stray-order
        check, and its fills booked, only after the restart; when the exit comes before the next
        hedge tick, the record would otherwise keep the hedge of before that order. Here every
        earlier order is final and no close order exists yet, so the fills are the hedge held at
        the exit. Persisted with the exit's time, so a later round (or a restart mid-close, when
        close fills have reduced the legs) never rewrites it.
        """
        if trade.state is not TradeState.PENDING_CLOSE or trade.exit_decided_at is None:
            return
        if trade.metadata.get(HEDGE_CONFIG_KEY) is None or not trade.hedge_leg_indexes():
            return
        if trade.metadata.get(HEDGE_EXIT_SYNC_KEY) == trade.exit_decided_at:
            return
        self.fills.sync(trade)                  # the legs from the ledger: every fill booked so far
        self._hedge_state(trade, now)           # resynced (and persisted) when the fills disagree
        trade.metadata[HEDGE_EXIT_SYNC_KEY] = trade.exit_decided_at
        self._persist(trade, "hedge_exit_synced", hedge_qty=trade.hedge_qty())

    def _hedge_tick(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        """After the exits of a poll: ask the policy and start its order (one hedge job at a time)."""
        config = self._hedge_config(trade)
        if config is None or trade.state is not TradeState.OPEN or runtime.job is not None or runtime.kill:
            return
        asked = self._decide_hedge(trade, runtime, config, now, second_part=False)
        if asked is None:
            return
        decision, mark, structure_delta = asked
        follow_up = decision.orders[1] if len(decision.orders) > 1 else None
        self._start_hedge_order(trade, runtime, config, decision.orders[0], follow_up=follow_up, mark=mark,
                                structure_delta=structure_delta, reason=decision.reason, new_rebalance=True, now=now)

    def _decide_hedge(self, trade: TradeLifecycle, runtime: _Runtime, config: HedgeConfig, now: float, *,
                      second_part: bool) -> tuple[HedgeDecision, float, float] | None:
        """The policy's answer on what the market and the fills show now, with the perp's mark and
        the structure delta it was decided on; None (the reason noted once) when no order is wanted.

        ``second_part``: the opening part of a split rebalance, asked again once its reducing part
        has filled. The reducing part may have worked for a minute or more, so the second part is
        decided afresh on a fresh quote and delta like any rebalance, except that the interval since
        the last rebalance is not waited for (it is the same rebalance, and the reducing part just
        set that time).
        """
        if self.fills.resolve_stray_orders(trade):
            self._hedge_note(trade, runtime, "waiting for an earlier order of the trade to be final")
            return None
        hedge_legs = trade.hedge_leg_indexes()
        # A hedge order a restart left (cancelled as a stray, or cut off in its job's grace) may
        # still report a fill: the rebalance it made must be seen before another is decided.
        grace = self._grace_seconds(runtime)
        if not (self.fills.strays_settled(trade, now, grace, INTERRUPTED_RECHECKS_PER_TICK)
                and self.fills.late_fills_settled_on(trade, set(hedge_legs), now, grace,
                                                     INTERRUPTED_RECHECKS_PER_TICK)):
            self._hedge_note(trade, runtime, "waiting for the late-fill poll of an earlier hedge order")
            return None
        options = [leg for leg in trade.legs if leg.index not in hedge_legs and not is_zero(leg.net_qty)]
        if any(leg.is_frozen(now) for leg in options):
            self._hedge_note(trade, runtime, "hold: an option leg is in its pre-expiry halt")
            return None
        state = self._hedge_state(trade, now)
        if state is None:
            return None
        used = sum(1 for order in self.ledger.orders(trade.id) if order.leg_index in hedge_legs)
        if used + HEDGE_ORDERS_PER_JOB > HEDGE_ORDER_BUDGET:
            self._hedge_note(trade, runtime, f"hold: the hedge used {used} orders of its budget of "
                                             f"{HEDGE_ORDER_BUDGET}; no more rebalancing (the close keeps its room)",
                             level=logging.WARNING)
            return None
        symbol = config.perp_symbol
        try:
            quote = self.market.quote(symbol, max_age=self.quote_max_age)
            spec = self.market.instrument(symbol)
        except (TraderError, OSError) as error:
            self._hedge_note(trade, runtime, f"refused: no {symbol} quote ({error})", level=logging.WARNING)
            return None
        try:
            structure_delta = trade.structure_delta(exclude=hedge_legs)
        except StaleDataError as error:
            self._hedge_note(trade, runtime, f"refused: structure delta unknown ({error})", level=logging.WARNING)
            return None
        hedge_qty = trade.hedge_qty()
        structure_size = math.fsum(leg.net_qty for leg in trade.legs if leg.index not in hedge_legs)
        # The quote was read during this poll, after ``now``: its age is taken on the clock as it
        # is now (a clock stepped back gives a negative age, which the policy refuses: fail closed).
        quote_age = float(self.clock.now()) - float(quote.as_of)
        decision = decide(config, structure_delta=structure_delta, hedge_qty=hedge_qty, now=now,
                          last_rebalance_at=None if second_part else state.last_rebalance_at,
                          perp_step=UNDERLYINGS[config.underlying or ""].perp_qty_step, perp_tick=spec.tick_size,
                          perp_mark=quote.mark, perp_bid=quote.bid, perp_ask=quote.ask, index=quote.underlying_price,
                          quote_age_seconds=quote_age, max_quote_age_seconds=self.quote_max_age,
                          structure_size=structure_size, perp_min_qty=spec.min_qty)
        if not decision.wants_order:
            prefix = "second part dropped, " if second_part else ""
            self._hedge_note(trade, runtime, f"{prefix}{decision.action.value}: {decision.reason}",
                             level=logging.WARNING if decision.capped or second_part else logging.INFO)
            return None
        runtime.hedge_note = None
        logger.info("trade %s (%s) hedge%s: structure delta %+.4f, hedge %+g: %s", trade.id, trade.strategy,
                    " (second part)" if second_part else "", structure_delta, hedge_qty, decision.reason)
        return decision, float(quote.mark), structure_delta

    def _hedge_legs(self, trade: TradeLifecycle, config: HedgeConfig) -> tuple[TradeLeg, TradeLeg] | None:
        """The trade's long and short hedge legs, added (and persisted) before its first hedge order;
        None when they could not be persisted (taken back out: no hedge order this poll).

        Why (I5): a hedge order opens a position. Sent on legs the store does not hold, a crash
        before the next good write leaves a perp that no trade knows after the restart (read as
        somebody else's, never closed), and a new pair of hedge legs would reuse the indexes.
        """
        indexes = trade.metadata.get(HEDGE_LEGS_KEY)
        if not indexes:
            first = max(leg.index for leg in trade.legs) + 1
            contract = Contract.perpetual(config.underlying or "")
            # qty is the most the leg may hold (the hedge cap): what it holds is its fills.
            added = [TradeLeg(index=first, contract=contract, side=Side.BUY, qty=config.max_hedge_qty),
                     TradeLeg(index=first + 1, contract=contract, side=Side.SELL, qty=config.max_hedge_qty)]
            trade.legs.extend(added)
            indexes = {"long": first, "short": first + 1}
            trade.metadata[HEDGE_LEGS_KEY] = indexes
            if not self._persist(trade, "hedge_legs_added", legs=indexes):
                del trade.legs[-len(added):]
                del trade.metadata[HEDGE_LEGS_KEY]
                return None
        by_index = {leg.index: leg for leg in trade.legs}
        return by_index[int(indexes["long"])], by_index[int(indexes["short"])]

    def _start_hedge_order(self, trade: TradeLifecycle, runtime: _Runtime, config: HedgeConfig, order: HedgeOrder, *,
                           follow_up: HedgeOrder | None, mark: float, structure_delta: float, reason: str,
                           new_rebalance: bool, now: float) -> None:
        """One hedge order as a limit job on a hedge leg: a reduce-only order reduces the leg that
        holds the hedge (CLOSE family, capped at the account's position by the ledger), an
        opening order adds to the leg of its side (OPEN family)."""
        legs = self._hedge_legs(trade, config)
        if legs is None:
            self._hedge_note(trade, runtime, "hold: the hedge legs could not be stored; no hedge order until the "
                                             "store takes them", level=logging.WARNING)
            return
        long_leg, short_leg = legs
        if order.reduce_only:
            leg, intent = (long_leg if order.side is Side.SELL else short_leg), Intent.CLOSE
        else:
            leg, intent = (long_leg if order.side is Side.BUY else short_leg), Intent.OPEN
        qty, vwap, fees = self.ledger.leg_fill(trade.id, leg.index, intent)
        runtime.hedge = _HedgeWork(leg.index, intent, order, (qty, qty * (vwap or 0.0), fees or 0.0), mark,
                                   structure_delta, trade.hedge_qty(), reason, new_rebalance, follow_up)
        target = LegTarget(leg.index, leg.symbol, order.side, order.qty, leg.lot)
        try:
            self._start_job(trade, runtime, "hedge", intent, [target], hedge_execution_params(config), "limit")
        except Exception:  # noqa: BLE001 - no hedge this poll; the next poll decides again
            logger.exception("trade %s: the hedge job could not start", trade.id)
            runtime.hedge = None
            return
        self._step_job(trade, runtime, now)

    def _on_hedge_end(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        """Book what the hedge job filled (from the ledger), record the rebalance, send a split's second part."""
        work, runtime.hedge = runtime.hedge, None
        if work is None:
            return
        qty, vwap, fees = self.ledger.leg_fill(trade.id, work.leg_index, work.intent)
        filled = clean_qty(qty - work.before[0])
        state = HedgeState.from_record(trade.metadata.get(HEDGE_STATE_KEY))
        price = 0.0
        if filled > 0:
            price = (qty * (vwap or 0.0) - work.before[1]) / filled
            state = state.after_fill(work.order.side, filled, price, (fees or 0.0) - work.before[2], work.mark,
                                     at=now, new_rebalance=work.new_rebalance)
        held = trade.hedge_qty()
        if abs(state.hedge_qty - held) > QTY_EPSILON:
            logger.warning("trade %s hedge: the booked state says %+g, the fills say %+g; the fills win",
                           trade.id, state.hedge_qty, held)
            state = HedgeState(hedge_qty=held, last_rebalance_at=now if filled > 0 else state.last_rebalance_at,
                               rebalances=state.rebalances, fees_usd=state.fees_usd,
                               slippage_usd=state.slippage_usd)
        trade.metadata[HEDGE_STATE_KEY] = state.to_record()
        self._persist(trade, "hedge_rebalance", side=work.order.side.name.lower(), asked=work.order.qty,
                      filled=filled, price=round(price, 8), reduce_only=work.order.reduce_only, reason=work.reason,
                      structure_delta=round(work.structure_delta, 8), hedge_before=work.hedge_before,
                      hedge_after=held, delta_before=round(work.structure_delta + work.hedge_before, 8),
                      delta_after=round(work.structure_delta + held, 8), rebalances=state.rebalances,
                      cost_usd=round(state.cost_usd, 8))
        logger.info("trade %s (%s) hedge: %s %g of %g at %g; hedge %+g -> %+g, total delta %+.4f -> %+.4f",
                    trade.id, trade.strategy, work.order.side.name.lower(), filled, work.order.qty, price,
                    work.hedge_before, held, work.structure_delta + work.hedge_before, work.structure_delta + held)
        follow = work.follow_up
        if follow is None or trade.state is not TradeState.OPEN or runtime.kill:
            return
        if filled < work.order.qty - QTY_EPSILON or not is_zero(held):
            self._hedge_note(trade, runtime, "the reducing part did not fill completely: the opening part is "
                                             "dropped and the next poll decides afresh")
            return
        config = self._hedge_config(trade)
        if config is not None:
            self._start_second_part(trade, runtime, config, follow, now)

    def _start_second_part(self, trade: TradeLifecycle, runtime: _Runtime, config: HedgeConfig, planned: HedgeOrder,
                           now: float) -> None:
        """The opening part of a split rebalance, on a fresh decision (never the one of the reducing part).

        Why: the reducing part's job may have requoted for a minute or more; the delta it was
        sized on may be gone. The second part goes out only when a decision on fresh quotes still
        wants to open on the planned side, and never for more than was planned (the per-rebalance
        cap was split over both parts); otherwise it is dropped and the next poll decides.
        """
        self.exits.refresh_quotes(trade, now)
        asked = self._decide_hedge(trade, runtime, config, now, second_part=True)
        if asked is None:
            return
        decision, mark, structure_delta = asked
        fresh = decision.orders[0]
        if len(decision.orders) != 1 or fresh.reduce_only or fresh.side is not planned.side:
            self._hedge_note(trade, runtime, f"second part dropped: a fresh decision wants {decision.reason}, not "
                                             f"{planned.side.name.lower()} {planned.qty:g}; the next poll decides",
                             level=logging.WARNING)
            return
        order = replace(fresh, qty=min(fresh.qty, planned.qty))
        self._start_hedge_order(trade, runtime, config, order, follow_up=None, mark=mark,
                                structure_delta=structure_delta, reason=decision.reason + " (second part)",
                                new_rebalance=False, now=now)

    # ---- the holds (lifecycle_holds.LifecycleHolds) -------------------------------------------

    def hold(self, reason: str) -> None:
        """No order, no exit, no job step until ``release()`` (start-up, before positions are known)."""
        self.holds.hold(reason)

    def release(self) -> None:
        self.holds.release()

    @property
    def hold_reason(self) -> str | None:
        return self.holds.reason

    def hold_entries(self, key: str, reason: str) -> bool:
        """No new trade for any strategy until ``release_entries(key)``; exits go on. True if newly held."""
        return self.holds.hold_entries(key, reason)

    def release_entries(self, key: str) -> bool:
        return self.holds.release_entries(key)

    @property
    def entry_holds(self) -> dict[str, str]:
        return self.holds.entry_holds

    # ---- reconciliation support (reconciliation.py drives these) ---------------------------

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
                revised = self.fills.sync(trade)
                if revised and trade.realized_pnl is not None and not trade.is_active:
                    trade.realized_pnl = trade.realized()   # a settlement cut by a late close fill
                self._persist(trade, "fills_reconciled", **({"settlement_revised": revised} if revised else {}))

    def record_external_close(self, trade_id: str, leg_index: int, qty: float, price: float, *,
                              detail: str) -> TradeLifecycle | None:
        """Part of a leg was closed outside the daemon (BEHAVIOUR 4.7): reduce it, account it, alert.

        Only called on evidence: ``price`` is the average of the fills, not ours, that closed
        it (reconciliation never books a missing position on an empty answer alone).
        ``qty`` is never more than the leg holds. Once no exposure is left the exit reason is
        ``external_close`` (unless one was already decided) and the trade ends: CLOSED, or
        FAILED if it never opened; but only when nothing can still add a fill (I2). A working
        job is asked to stop and ends it on a later tick; an order that is still working (say
        the other leg's open order of an open a restart interrupted) or an RFQ accept in
        doubt keeps the trade in its state (an OPEN one moves to PENDING_CLOSE) until the
        tick has resolved them: this call may come while the lifecycle is on hold, so it
        sends nothing itself. A fill that arrives meanwhile is exposure to unwind or close.
        """
        with self._lock:
            trade = self._trades.get(trade_id)
            if trade is None or not trade.is_active:
                return None
            leg = next((item for item in trade.legs if item.index == leg_index), None)
            if leg is None:
                return None
            now = self.clock.now()
            if not self.external.book(trade, leg, qty, price, detail):
                return trade
            if trade.has_exposure:
                return trade
            runtime = self._runtime_of(trade)
            self._decide_exit(trade, EXIT_REASON_EXTERNAL, {"source": "reconciliation", "detail": detail}, now)
            if runtime.job is not None:
                if trade.state is TradeState.OPEN:   # a hedge rebalance: its end leads to ``_drive``
                    self._set_state(trade, TradeState.PENDING_CLOSE)
                runtime.job.request_stop(EXIT_REASON_EXTERNAL)
                return trade
            if (not self.fills.has_non_final_orders(trade) and not self.fills.strays_pending(trade)
                    and not self._accept_in_doubt(trade, runtime, now)):
                self._finish_flat(trade, runtime, now)
                return trade
            if trade.state is TradeState.OPEN:
                self._set_state(trade, TradeState.PENDING_CLOSE)
            working = self.fills.non_final_orders(trade)
            reasons = (["its orders could not be read"] if working is None else
                       [f"{order.intent.name.lower()} order {order.client_order_id} on {order.symbol} is "
                        f"{order.status.value}" for order in working])
            if self.fills.strays_pending(trade):
                reasons.append("orders it just cancelled wait for their last poll")
            if self.accepts.unresolved(trade.id):
                reasons.append("an RFQ accept recorded before the restart is in doubt")
            self._alert("WARNING", "external_close_waits",
                        f"trade {trade.id} ({trade.strategy}) holds nothing after the close outside the daemon, "
                        f"but it cannot end yet: {'; '.join(reasons)}. That is resolved first, and whatever "
                        f"those orders fill is unwound or closed", trade_id=trade.id,
                        orders=[order.client_order_id for order in working or ()])
            return trade

    def reversible_external_closes(self) -> list[TradeLifecycle]:
        """Trades an older version ended as ``external_close`` without evidence (``pnl_estimated``).

        Only recent ones (``REVERSAL_LOOKBACK_SECONDS``) whose externally closed legs have not
        expired: their positions may show again, and then they are reopened (docs/RECOVERY.md X1).
        """
        now = self.clock.now()
        with self._lock:
            self._active_locked()       # indexes a trade that ended since the last tick
            for trade in list(self._reversible.values()):   # reopened, or past the look-back: never again
                if trade.is_active or not booked_without_evidence(trade) or not ended_within_lookback(trade, now):
                    del self._reversible[trade.id]
            return self.external.reversible(self._reversible.values(), now)

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
            if trade is None or not booked_without_evidence(trade):
                return None
            restored = self.external.unbook(trade, detail, self.clock.now())
            runtime = self._runtime_of(trade)
            runtime.pending_close_reason = None
            self.fills.sync(trade)
            self._set_state(trade, TradeState.OPEN if trade.opened_at is not None else TradeState.OPENING)
            self._active[trade.id] = trade   # managed again: back in the hot set the tick walks
            self._reversible.pop(trade.id, None)
            self._funding_watch[trade.id] = trade   # and its perps may earn funding again
            self.external.alert_reversed(trade, detail, restored,
                                         managed=trade.strategy in self._hooks or is_external_trade(trade))
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
            for trade in self._by_strategy.get(strategy, ()):
                # An ended trade that left the hot set has no runtime and needs none.
                if trade.is_active or trade.id in self._runtime:
                    self._runtime_of(trade).apply(hooks, self.exec_params_default)

    def recover(self) -> dict:
        """Reload our trades and orders from the store after a restart (part of BEHAVIOUR 4.7).

        Every trade comes back, and every ledger order but those of trades that ended for
        good, which stay in the store (read back when asked for); a trade that never sent an order
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
            now = self.clock.now()
            restored: list[TradeLifecycle] = []
            report["unreadable"] = []
            for record in self.store.load_trades():
                try:
                    trade = TradeLifecycle.from_record(record)
                except (KeyError, TypeError, ValueError) as error:
                    # One bad record must not cost the others their memory (nor the ledger its
                    # orders): it is set aside, loudly, and no strategy enters while it is.
                    self._set_aside(record, error, report)
                    continue
                if trade.id in self._trades:
                    continue
                trade.bind_clock(self.clock)
                self._register(trade)
                self._next_seq = max(self._next_seq, trade.seq + 1)
                restored.append(trade)
            # The orders of trades that ended for good may stay in the store (the ledger
            # decides, as for a trade archived while running): a restart after a long history
            # does not read all of it into memory.
            self.ledger.restore(self.store.iter_orders(), ended_trades=self._ended_for_good(restored, now))
            # RFQ accepts recorded before the crash: a trade with one is not judged (nor ended)
            # until the accept is resolved (RECOVERY.md T4, R1-R3).
            in_doubt = self.accepts.load(open_block_accepts(self.store.events(BLOCK_ACCEPT_EVENT),
                                                            self.store.events(BLOCK_ACCEPT_REFUSED_EVENT)),
                                         {trade.id for trade in restored if trade.is_active})
            report["accepts_recorded"] = in_doubt
            for trade in restored:
                report["restored"] += 1
                if not trade.is_active and not booked_without_evidence(trade):
                    # No runtime: an ended trade needs none, and one would keep it (and its
                    # orders) out of the archive for the life of the process.
                    continue
                runtime = self._runtime_of(trade)
                hooks = self._hooks.get(trade.strategy)
                if hooks is not None:
                    runtime.apply(hooks, self.exec_params_default)
                # A trade the kill switch was closing keeps its urgent, breaker-free kill orders
                # after a restart: from its record (KILL_MODE_KEY), its exit reason, or adoption.
                runtime.kill = (runtime.kill or trade.metadata.get(KILL_MODE_KEY) is True
                                or trade.exit_reason == EXIT_REASON_KILL or is_external_trade(trade))
                if not trade.is_active:
                    continue
                self.fills.sync(trade)
                if trade.state is TradeState.PENDING_OPEN:
                    # An order recorded or an RFQ accept recorded is evidence the open went out
                    # (its record's OPENING write may have failed): it resolves as an open does.
                    if not self.ledger.orders(trade.id) and not self.accepts.unresolved(trade.id):
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

    def _set_aside(self, record: Mapping[str, Any], error: Exception, report: dict) -> None:
        """A stored trade record recovery cannot read: CRITICAL, and entries held until a restart reads it."""
        trade_id = str(record.get("id") if isinstance(record, Mapping) else None)
        report["unreadable"].append(trade_id)
        message = (f"stored trade {trade_id} cannot be read ({type(error).__name__}: {error}): it is not managed "
                   f"(its positions and orders stay on the exchange) and no strategy enters until it is. "
                   f"Operator: check the trade on the exchange, repair or remove its record, restart")
        self.holds.hold_entries(UNREADABLE_RECORDS_HOLD, f"unreadable trade record(s): {trade_id}")
        self._alert("CRITICAL", "trade_record_unreadable", message, trade_id=trade_id)

    def pin_hold(self, reason: str) -> None:
        """A hold nothing but a restart lifts: no order, no exit, no job step (recovery failed)."""
        self.holds.pin(reason)

    def _ended_for_good(self, trades: Iterable[TradeLifecycle], now: float) -> set[str]:
        """The ids of the trades nothing can change any more: ended, no external close that
        may be undone, no funding still to book (what ``_archive_finished`` waits for)."""
        return {trade.id for trade in trades
                if not trade.is_active and not booked_without_evidence(trade)
                and (self.funding is None or (not self.funding.due(trade, now) and self.funding.settled(trade, now)))}

    def _finish_interrupted_job(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> None:
        """OPENING/CLOSING without a job (the daemon restarted mid-execution; RECOVERY.md T3-T5, T8).

        What the job would have done before its verdict, then its verdict: cancel what is
        still working and poll it until final; wait the grace and poll once more every final
        order that may still report a late fill (API.md 11.16: the restart cut the engines'
        own wait short); wait while an RFQ accept recorded before the crash is unresolved
        (its block trade may still bring fills). Only then decide on our fills, exactly as if
        the job had just ended: never re-sends the filled quantity, never leaves a partial
        open as is, never ends a trade on fills that are not all in.
        """
        if self.fills.resolve_stray_orders(trade):
            return
        families = (Intent.OPEN,) if trade.state is TradeState.OPENING else REDUCING_FAMILIES
        if not self.fills.late_fills_settled(trade, now, self._grace_seconds(runtime), INTERRUPTED_RECHECKS_PER_TICK,
                                             families=families):
            return
        if self._accept_in_doubt(trade, runtime, now):
            return
        self.fills.sync(trade)
        if trade.state is TradeState.OPENING:
            self._on_open_end(trade, runtime, now, runtime.open_end_reason or "open interrupted by a restart")
        elif not trade.has_exposure:
            if not self._end_flat(trade, runtime, now):
                self._set_state(trade, TradeState.PENDING_CLOSE)
        else:
            self._set_state(trade, TradeState.PENDING_CLOSE)

    def _unwind_fills_settled(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> bool:
        """RECOVERY.md T6: an UNWINDING trade's fills are all in before its next round is sized or it ends.

        Why: UNWINDING is the state both between rounds and during one, so after a restart
        nothing says whether the last round's job had its grace poll: an unwind order can read
        cancelled with nothing filled and report its fill later (API.md 11.16). A round sized
        without that fill sends a reduce-only order for a position already flat, and, with
        another trade of ours on that symbol and side, sells that trade's position. So once per
        process, as T3/T8 do for an interrupted open or close, the trade's stray orders are
        made final and every final unwind and kill order (requotes included) that may still
        report a fill is polled once more after the grace. A trade that turned UNWINDING in
        this process has none left to poll and passes at once; once passed, nothing is read.
        """
        if runtime.unwind_fills_settled:
            return True
        if self.fills.resolve_stray_orders(trade):
            return False
        if not self.fills.late_fills_settled(trade, now, self._grace_seconds(runtime), INTERRUPTED_RECHECKS_PER_TICK,
                                             families=UNWIND_FAMILIES):
            return False
        runtime.unwind_fills_settled = True
        return True

    def _grace_seconds(self, runtime: _Runtime) -> float:
        """The late-fill grace of the trade's limit parameters (the engines wait as long)."""
        params = runtime.params if isinstance(runtime.params, ExecutionParams) else self.exec_params_default
        return float(params.grace_seconds)

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
                if trade.metadata.get(KILL_MODE_KEY) is not True:
                    trade.metadata[KILL_MODE_KEY] = True
                    self._persist(trade, "kill_mode")
            if trade.state in (TradeState.PENDING_OPEN, TradeState.OPENING):
                runtime.pending_close_reason = runtime.pending_close_reason or reason
                if runtime.job is not None:
                    runtime.job.request_stop(reason)
                self._persist(trade, "close_requested")
                return True
            if trade.state is TradeState.OPEN:
                self._decide_exit(trade, reason, {"source": reason}, now)
                self._set_state(trade, TradeState.PENDING_CLOSE)
                if runtime.job is not None and runtime.job_kind == "hedge":
                    runtime.job.request_stop(reason)  # the close round (hedge legs included) follows it
            elif trade.state is TradeState.CLOSING and runtime.kill and runtime.job_kind == "close":
                runtime.job.request_stop(reason)  # the next round goes out with kill intent
            elif trade.state is TradeState.SETTLING and not self._close_perps_of_settling(
                    trade, runtime, [leg for leg in trade.legs if not is_zero(leg.net_qty)]):
                return False
            if not self.holds.on_hold():  # held: decided and recorded now, sent by the first tick after
                self._drive(trade, runtime, now)
            return True

    def kill_all(self, include_external: bool = False) -> list[str]:
        """Kill switch (7.6): force-close every trade with exposure; optionally adopt other positions.

        Trades an earlier ``--all-positions`` adopted are active trades like any other and are
        killed with them; what the account holds beyond every active trade becomes a new one.
        """
        with self._lock:
            killed = [t.id for t in self.active_trades() if self.force_close(t.id, EXIT_REASON_KILL)]
            if include_external:
                if self._last_snapshot is None:
                    logger.warning("kill_all(include_external=True): no account snapshot yet; external positions "
                                   "skipped")
                else:
                    external = self.adopt_external(self._last_snapshot)
                    if external is not None:
                        killed.append(external)
            return killed

    def adopt_external(self, snapshot: AccountSnapshot, *, skip: frozenset[str] = frozenset()) -> str | None:
        """The positions of ``snapshot`` beyond our active trades' exposure, adopted as a new trade
        of strategy ``external`` and force-closed (reduce-only, kill intent); its id, or None when
        the account holds nothing beyond our trades. Positions on the symbols of ``skip`` are
        left out (the kill adopts those once its own trades have ended).

        The kill switch passes a snapshot it read for this purpose (``commands``): what is adopted
        must be what the account holds now, not what it held at the last poll.
        """
        with self._lock:
            if skip:
                snapshot = replace(snapshot, positions=tuple(p for p in snapshot.positions if p.symbol not in skip))
            external = self._adopt_external_positions(snapshot)
            if external is not None and self.force_close(external.id, EXIT_REASON_KILL):
                return external.id
            return None

    def _adopt_external_positions(self, snapshot: AccountSnapshot) -> TradeLifecycle | None:
        """Positions beyond our active trades' exposure become the legs of a new trade (reduce-only closes).

        Why a new trade every time, with a sequence from the one global sequence: the ledger
        keys fills by (trade id, leg index) and clientOrderIds by (trade sequence, leg index),
        so a trade id or sequence used before (every adoption once was ``T000000000``, sequence
        0) would count the fills of an earlier adoption's leg as fills of the new leg of the
        same index, and a kill would stop short of what the account holds. The store's
        sequence is the same one strategy trades take theirs from, and it is re-seeded above
        every sequence in the exchange's order history at a restart (RECOVERY.md L4), so no
        clientOrderId of an adopted trade can equal an earlier one's.
        """
        ours: dict[str, float] = {}
        for trade in self.active_trades():
            for leg in trade.legs:
                ours[leg.symbol] = ours.get(leg.symbol, 0.0) + leg.sign * leg.net_qty
        now = self.clock.now()
        legs = positions_beyond_ours(snapshot.positions, ours, self.market, now, first_index=0)
        if not legs:
            return None
        seq = self._allocate_seq()
        trade = TradeLifecycle(id=f"T{seq:09d}", seq=seq, strategy=EXTERNAL_STRATEGY, state=TradeState.OPEN,
                               legs=legs, created_at=now, opened_at=now, metadata={"external": True})
        trade.bind_clock(self.clock)
        self._register(trade)
        self._runtime[trade.id] = _Runtime(params=self.urgent_params, kill=True)
        self._persist(trade, "external_adopted")
        logger.warning("kill switch: positions beyond our trades adopted as trade %s: %s", trade.id,
                       ", ".join(f"{leg.symbol} {'+' if leg.sign > 0 else '-'}{fmt_qty(leg.qty)}" for leg in legs))
        return trade

    # ---- expiry and settlement --------------------------------------------------------------

    def _handle_expiry(self, trade: TradeLifecycle, runtime: _Runtime, now: float) -> bool:
        """§4.2 rows 15-16: settle expired legs; SETTLING once every leg we hold has expired.

        Returns True when the trade is done for this tick (settling or just finished). A leg is
        settled only once no order on it is working: an order left by a restart (no job polls
        it) is polled here until the exchange has ended it, so a fill it reports on the way is
        counted as a close, never paid a second time at the delivery price; an order the
        exchange has just ended gets its late-fill poll first (``late_fills_settled_on``). A
        close fill known only later still (a VANISHED or presumed NOT_PLACED verdict reversed)
        cuts the settlement when the fills are read again (``TradeFills.sync``).
        """
        held = [leg for leg in trade.legs if not is_zero(leg.net_qty)]
        if self._close_perps_before_expiry(trade, runtime, held, now):
            return False
        if self._close_perps_of_settling(trade, runtime, held):
            return False
        expired = [leg for leg in held if leg.is_expired(now)]
        if not expired:
            if trade.state is TradeState.SETTLING and runtime.job is None and not trade.has_exposure:
                self._end_flat(trade, runtime, now)
            return trade.state is TradeState.SETTLING
        all_expired = len(expired) == len(held)
        if runtime.job is not None:
            if all_expired:
                runtime.job.request_stop(EXIT_REASON_EXPIRY)
            return True  # live orders on expired symbols are left to the exchange and polled by the job
        if self.fills.poll_non_final_on(trade, {leg.index for leg in expired}):
            return True  # settled once the exchange has ended them (BEHAVIOUR 4.5)
        if not self.fills.late_fills_settled_on(trade, {leg.index for leg in expired}, now,
                                                self._grace_seconds(runtime), INTERRUPTED_RECHECKS_PER_TICK):
            return True  # an order the exchange just ended may still report a fill: its late-fill poll first
        expired = [leg for leg in expired if not is_zero(leg.net_qty)]   # what they filled is a close
        held = [leg for leg in trade.legs if not is_zero(leg.net_qty)]
        all_expired = len(expired) == len(held)
        if not expired:
            return False
        if all_expired and trade.state is not TradeState.SETTLING:
            # No order may still work on a leg that does not expire (a hedge order a restart left
            # resting): cancelled and given its late-fill poll first, or it could fill once the
            # trade is settling and leave a perp that nothing closes.
            living = {leg.index for leg in trade.legs if not leg.is_expired(now)}
            if living and (self.fills.resolve_stray_orders(trade)
                           or not self.fills.late_fills_settled_on(trade, living, now, self._grace_seconds(runtime),
                                                                   INTERRUPTED_RECHECKS_PER_TICK)):
                return True
            if any(not is_zero(leg.net_qty) for leg in trade.legs if leg.index in living):
                return False   # such an order filled: the perp goes with its options first
            self._decide_exit(trade, EXIT_REASON_EXPIRY, {"source": EXIT_REASON_EXPIRY,
                                                           "legs": [leg.symbol for leg in expired]}, now)
            self._set_state(trade, TradeState.SETTLING)
        if self.settler.due(runtime.delivery, now):
            for leg in expired:
                if self.settler.settle_leg(trade, leg, runtime.delivery, now):
                    self._persist(trade, "leg_settled")
        for leg in expired:
            # Until it is settled, the leg is valued at its settlement price (a calendar's far leg
            # still trades, and its exits need the whole trade's value).
            leg.expiry_mark = (None if is_zero(leg.net_qty) else
                               self.settler.expiry_mark(leg.contract.underlying or DEFAULT_UNDERLYING,
                                                        leg.expiry_ms, now))
        if not trade.has_exposure:
            self._end_flat(trade, runtime, now)
            return True
        return all_expired

    def _close_perps_of_settling(self, trade: TradeLifecycle, runtime: _Runtime, held: list[TradeLeg]) -> bool:
        """A SETTLING trade that holds a perp (an order that filled after the options expired)
        goes back to PENDING_CLOSE, so a close round sends the perp: a perp never settles, and
        left there it would be a naked position no exit, close round or kill ever touched."""
        if trade.state is not TradeState.SETTLING or runtime.job is not None:
            return False
        perps = [leg for leg in held if leg.is_perpetual]
        if not perps:
            return False
        detail = ", ".join(f"{leg.symbol} {leg.sign * leg.net_qty:+g}" for leg in perps)
        self._alert("CRITICAL", "settling_perp_held",
                    f"trade {trade.id} ({trade.strategy}) is settling its expired options but holds {detail}: "
                    f"closing it now (reduce-only)", trade_id=trade.id)
        self._set_state(trade, TradeState.PENDING_CLOSE)
        return True

    def _close_perps_before_expiry(self, trade: TradeLifecycle, runtime: _Runtime, held: list[TradeLeg],
                                   now: float) -> bool:
        """A perp leg leaves with the options it stands beside (docs/PERPETUALS.md): once every
        option leg the trade holds is in its pre-expiry halt, an OPEN trade's exit is decided
        ("expiry") and its close round sends the perp legs (the frozen options are left to
        settle); once it holds no option leg at all (they were closed outside the daemon), the
        exit is decided at once (``external_close``). A perp never settles: without this it
        would outlive its structure."""
        options = [leg for leg in held if not leg.is_perpetual]
        if trade.state is not TradeState.OPEN or runtime.job is not None or not any(leg.is_perpetual for leg in held):
            return False
        if not options:
            if not any(not leg.is_perpetual for leg in trade.legs):
                return False   # a structure of perp legs alone: its own exits decide
            # Every option it stood beside is gone (closed outside the daemon, say): the perp,
            # a hedge inside its band included, would stay open with no structure to hedge.
            self._decide_exit(trade, EXIT_REASON_EXTERNAL, {"source": "options_gone",
                                                            "perpetuals": "closed once no option leg is held"}, now)
            self._set_state(trade, TradeState.PENDING_CLOSE)
            return True
        if not all(leg.is_frozen(now) for leg in options):
            return False
        self._decide_exit(trade, EXIT_REASON_EXPIRY, {"source": EXIT_REASON_EXPIRY,
                                                       "legs": [leg.symbol for leg in options],
                                                       "perpetuals": "closed before the options expire"}, now)
        self._set_state(trade, TradeState.PENDING_CLOSE)
        return True

    # ---- state and persistence ----------------------------------------------------------------

    def _set_state(self, trade: TradeLifecycle, state: TradeState) -> bool:
        """Move ``trade`` to ``state`` (a transition of TRANSITIONS) and write it; False when the write failed."""
        previous = trade.state
        if state not in TRANSITIONS[previous]:
            raise IllegalTransition(f"trade {trade.id} ({trade.strategy}): {previous.value} -> {state.value} is not "
                                    f"a transition of the trade state machine")
        trade.state = state
        logger.info("trade %s (%s): %s -> %s", trade.id, trade.strategy, previous.value, state.value)
        return self._persist(trade, "state", previous=previous.value)

    def _persist(self, trade: TradeLifecycle, event: str, **extra: Any) -> bool:
        """I5: committed before the next request for this trade (``TradeRecorder.persist``); False if not."""
        return self.recorder.persist(trade, event, **extra)

    def _alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        send_alert(self.alerts, logger, level, kind, message, **detail)


__all__ = [
    "TradeState", "TradeLeg", "TradeLifecycle", "LifecycleManager", "Valuation", "LegValue",
    "urgent_execution_params",
    "profit_target", "max_loss", "profit_target_pct", "max_loss_pct", "max_hold_hours", "time_exit",
    "utc_datetime_exit", "account_delta_limit", "structure_delta_limit", "leg_greek_limit",
]
