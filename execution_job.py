"""What every execution job is, and the one lifecycle the order-book jobs share.

Why it is built this way (BEHAVIOUR.md §6.0, §6.2, §6.3, §8 row 9; API.md §11.16):

* A job is non-blocking: ``advance(now)`` does at most a fixed number of exchange requests
  (one ``RequestBudget`` per step) and every wait is a deadline compared with the clock,
  so one trade's slow execution never delays another trade's exit. ``ExecutionJob`` owns
  that contract for every engine (limit, smart, RFQ): the step template, the stop request
  (which only marks the job; the engine acts on it in its next step) and the shared reads.
* The limit and smart jobs work legs on the order book and end the same way, so
  ``OrderBookJob`` owns that ending once: on a stop, a ledger cap or a leg that cannot
  complete, cancel every live order and poll it until it is final; then wait
  ``grace_seconds`` and poll once more every order that could still report a late fill;
  then the verdict (FILLED, PARTIAL or FAILED) from the fills in the ledger, never from
  account positions. The engines supply only their working phases and pricing.
* Every replacement order is sized only after the order it replaces has been re-polled
  and the exchange answered (``OrderLedger.settled_for_replacement``), and every order
  goes through the ``OrderLedger``: record before send, never a second create POST, an
  unknown outcome stays unknown until the exchange resolves it.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Generic, Iterable, Sequence, TypeVar

from contracts import UNDERLYINGS, Side, is_perpetual_symbol, underlying_of
from errors import LedgerCapError, TraderError
from order_ledger import (
    FILL_EPSILON,
    LOT,
    FillSummary,
    Intent,
    LedgerOrder,
    OrderStatus,
    require_finite,
    snap_qty,
    summarize_fills,
)
from seams import Ledger, PriceSource, TradeRef

logger = logging.getLogger(__name__)

BOOK_MAX_AGE_SECONDS = 3.0
MARK_MAX_AGE_SECONDS = 30.0
# No order on a leg from its expiry minus this (BEHAVIOUR.md §4.5): the exchange halts it.
HALT_BEFORE_EXPIRY_SECONDS = 15 * 60
# A cancel is charged two requests: ``OrderLedger.cancel`` resolves an UNKNOWN order (or
# re-polls after an "already final" answer) inside the call, and the per-step budget
# (BEHAVIOUR.md §6.0) counts the worst case.
CANCEL_COST = 2


# =====================================================================================
# Targets and results
# =====================================================================================


def instrument_lot(symbol: Any) -> float | None:
    """The quantity step ``contracts`` knows for ``symbol``; None when it cannot tell.

    A perpetual trades on its underlying's ``perp_qty_step``, an option on its underlying's
    ``option_qty_step`` (BTC 0.01, ETH 0.1). A symbol outside the grammar, or of an
    underlying the table does not list, has no known step.
    """
    if not isinstance(symbol, str):
        return None
    underlying = underlying_of(symbol)
    spec = UNDERLYINGS.get(underlying) if underlying is not None else None
    if spec is None:
        return None
    return spec.perp_qty_step if is_perpetual_symbol(symbol) else spec.option_qty_step


@dataclass(frozen=True)
class LegTarget:
    """What one leg of a job must do. ``side`` is the side of THIS order (a close of a short leg buys).

    ``lot`` is the instrument's quantity step, so a job snaps and chunks each leg on its own
    grid. Left out, it comes from the symbol (``instrument_lot``): an option's underlying
    option step (BTC 0.01, ETH 0.1), a perpetual's own step (BTC 0.001, ETH 0.01), and
    ``LOT`` for a symbol ``contracts`` cannot read. A given lot finer than the symbol's step
    is refused (``ValueError``): orders cut on it would be refused by the exchange (10558),
    and a job that keeps working the other legs would leave the refused one naked. A coarser
    lot is accepted (every multiple of it is on the exchange's grid too).
    """

    leg_index: int
    symbol: str
    side: Side
    qty: float
    # None (the default) = the symbol's own step; always a float once constructed.
    lot: float = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "side", Side.of(self.side))
        except ValueError:
            raise ValueError(f"LegTarget.side must be 1 (buy) or 2 (sell), got {self.side!r}") from None
        require_finite("LegTarget.qty", self.qty)
        if self.qty < 0:
            raise ValueError(f"LegTarget.qty must be >= 0, got {self.qty!r}")
        step = instrument_lot(self.symbol)
        if self.lot is None:
            object.__setattr__(self, "lot", LOT if step is None else step)
            return
        if require_finite("LegTarget.lot", self.lot) <= 0:
            raise ValueError(f"LegTarget.lot must be > 0, got {self.lot!r}")
        if step is not None and self.lot < step - FILL_EPSILON:
            raise ValueError(f"LegTarget leg {self.leg_index} ({self.symbol}): lot {self.lot:g} is finer than the "
                             f"instrument's quantity step {step:g}; orders on it would be refused")


class JobStatus(str, Enum):
    WORKING = "WORKING"
    FILLED = "FILLED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"


@dataclass
class LegFill:
    """One leg's outcome; ``order_ids`` are the client order ids this job placed for it."""

    leg_index: int
    symbol: str
    side: Side
    target_qty: float
    filled_qty: float
    vwap: float
    fees: float
    order_ids: list[int] = field(default_factory=list)


@dataclass
class FillResult:
    status: JobStatus
    legs: list[LegFill]
    reason: str = ""

    @property
    def total_cash(self) -> float:
        """Σ sells +price·qty, buys −price·qty, minus fees (negative = net debit)."""
        total = Decimal(0)
        for leg in self.legs:
            cash = Decimal(repr(float(leg.vwap))) * Decimal(repr(float(leg.filled_qty)))
            total += cash if leg.side == Side.SELL else -cash
            total -= Decimal(repr(float(leg.fees)))
        return float(total)


# =====================================================================================
# The request budget of one step
# =====================================================================================


class OutOfBudget(Exception):
    """This step's request allowance is spent; the work resumes on the next step."""


class RequestBudget:
    """At most ``limit`` exchange requests in one ``advance`` (BEHAVIOUR.md §6.0).

    Two ways to ask, for two styles of caller: ``take`` answers (False = do not send),
    ``spend`` raises ``OutOfBudget`` so a deep call chain unwinds to the loop over legs.
    """

    def __init__(self, limit: int) -> None:
        self.left = limit

    def __repr__(self) -> str:
        return f"RequestBudget(left={self.left})"

    def take(self, count: int = 1) -> bool:
        """Reserve ``count`` requests; False (nothing reserved) when fewer are left."""
        if self.left < count:
            return False
        self.left -= count
        return True

    def spend(self, count: int = 1) -> None:
        """Reserve ``count`` requests or raise ``OutOfBudget``."""
        if not self.take(count):
            raise OutOfBudget


# =====================================================================================
# Every job
# =====================================================================================


class ExecutionJob(ABC):
    """The shared job contract: non-blocking ``advance(now)``; ``result()`` at any time.

    A subclass supplies ``_step`` (the work of one step within its budget) and ``result``;
    it keeps its state in ``_status``, ``_phase``, ``_reason`` and ``_stop_reason``.
    """

    _label: ClassVar[str] = "job"       # how the engine names its jobs in the log

    def __init__(self, *, ledger: Ledger, market: PriceSource, trade: TradeRef, intent: Intent, best_effort: bool,
                 started_at: float, max_requests: int) -> None:
        self._ledger = ledger
        self._market = market
        self._max_requests = max_requests
        self.trade_id = str(trade.id)
        self.trade_seq = int(trade.seq)
        self.intent = Intent(intent).family()
        self.best_effort = best_effort
        self.started_at = started_at
        self._phase: Any = None
        self._status = JobStatus.WORKING
        self._reason = ""
        self._stop_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.status is not JobStatus.WORKING

    @property
    def status(self) -> JobStatus:
        return self._status

    @property
    def phase(self) -> Any:
        return self._phase

    def advance(self, now: float) -> JobStatus:
        """One step: at most the engine's request budget, no waiting."""
        if self.done:
            return self._status
        self._step(now, RequestBudget(self._max_requests))
        return self._status

    @abstractmethod
    def _step(self, now: float, budget: RequestBudget) -> None:
        """The engine's work of one step."""

    @abstractmethod
    def result(self) -> FillResult:
        """The fills so far (final once ``done``)."""

    def request_stop(self, reason: str) -> None:
        """Stop working: the next ``advance`` cancels and confirms every live order, then a verdict."""
        if self.done or self._stop_reason is not None:
            return
        self._stop_reason = reason or "stop requested"
        logger.info("%s %s %s: stop requested (%s)", self._label, self.trade_id, self.intent.name,
                    self._stop_reason)
        self._on_stop(self._stop_reason)

    def _on_stop(self, reason: str) -> None:
        """Engine hook, called once when a stop is requested."""


# =====================================================================================
# The order-book jobs (limit and smart)
# =====================================================================================


PHASE_PRICING = "pricing"      # open: no order until every leg has a price
PHASE_FINISHING = "finishing"  # cancel everything live, confirm final
PHASE_GRACE = "grace"          # wait grace_seconds, poll every order once more, then the verdict
PHASE_DONE = "done"


@dataclass
class LegWork:
    """Mutable progress of one leg on the order book; engines extend it with their own fields."""

    target: LegTarget
    total: float                    # the leg's quantity, snapped to the lot
    order: LedgerOrder | None = None
    order_ids: list[int] = field(default_factory=list)
    tick: float | None = None
    expiry_ms: int | None = None
    frozen: bool = False
    polled_at: float | None = None  # step time of the last poll of the current order
    last_no_price: str = ""

    @property
    def index(self) -> int:
        return self.target.leg_index

    @property
    def lot(self) -> float:
        """The leg's quantity step (``LegTarget.lot``)."""
        return self.target.lot

    def below_lot(self, qty: float) -> bool:
        """Less than one lot of this leg: nothing to send."""
        return qty < self.target.lot - FILL_EPSILON

    @property
    def live(self) -> bool:
        return self.order is not None and not self.order.status.is_final


LegT = TypeVar("LegT", bound=LegWork)


class OrderBookJob(ExecutionJob, Generic[LegT]):
    """The lifecycle the limit and smart jobs share: step template, finishing, grace, verdict.

    A subclass supplies its working phases (``_ACTIVE_PHASES``, ``_step_active``) and its
    pricing, and states where its request pattern differs (the class attributes below).
    """

    # What each engine states about itself (no defaults: a new engine decides each one).
    # The phases in which a stop request begins finishing.
    _ACTIVE_PHASES: ClassVar[tuple[str, ...]]
    # Poll the order before cancelling it, at most once per step (a filled order then needs
    # no cancel), or cancel straight away.
    _POLL_BEFORE_CANCEL: ClassVar[bool]
    # When finishing leaves every leg complete: the verdict at once, or only after the grace poll.
    _CONCLUDE_COMPLETE_BEFORE_GRACE: ClassVar[bool]

    def __init__(self, *, ledger: Ledger, market: PriceSource, trade: TradeRef, intent: Intent, best_effort: bool,
                 started_at: float, max_requests: int, legs: Sequence[LegT], grace_seconds: float) -> None:
        super().__init__(ledger=ledger, market=market, trade=trade, intent=intent, best_effort=best_effort,
                         started_at=started_at, max_requests=max_requests)
        self._legs: list[LegT] = list(legs)
        self._grace_seconds = grace_seconds
        self._grace_deadline: float | None = None
        self._grace_queue: list[LedgerOrder] | None = None
        self._grace_unanswered_logged = False
        self._rotation = 0

    # ---- the step ------------------------------------------------------------------------

    def _step(self, now: float, budget: RequestBudget) -> None:
        self._begin_step()
        if self._stop_reason is not None and self._phase in self._ACTIVE_PHASES:
            self._begin_finishing(self._stop_reason)
        self._step_active(now, budget)
        if self._phase == PHASE_FINISHING:
            self._step_finishing(now, budget)
        if self._phase == PHASE_GRACE:
            self._step_grace(now, budget)

    def _begin_step(self) -> None:
        """Engine hook at the start of every step (before any request)."""

    @abstractmethod
    def _step_active(self, now: float, budget: RequestBudget) -> None:
        """The engine's working phases; it moves on by ``_begin_finishing`` or ``_conclude``."""

    # ---- fills ---------------------------------------------------------------------------

    def result(self) -> FillResult:
        legs = []
        for leg in self._legs:
            summary = self._summary(leg)
            legs.append(LegFill(leg.index, leg.target.symbol, leg.target.side, leg.total,
                                summary.qty, summary.vwap, summary.fees, list(leg.order_ids)))
        return FillResult(self._status, legs, self._reason)

    def _orders_of(self, leg: LegWork) -> list[LedgerOrder]:
        return [o for o in (self._ledger.get(c) for c in leg.order_ids) if o is not None]

    def _summary(self, leg: LegWork) -> FillSummary:
        """This job's fills on the leg, from order status in the ledger (never positions)."""
        return summarize_fills(self._orders_of(leg))

    def _filled(self, leg: LegWork) -> float:
        return self._summary(leg).qty

    def _remaining(self, leg: LegWork) -> float:
        return snap_qty(max(0.0, leg.total - self._filled(leg)), leg.lot)

    def _complete(self, leg: LegWork) -> bool:
        return leg.below_lot(self._remaining(leg))

    def _all_complete(self) -> bool:
        return all(self._complete(leg) for leg in self._legs)

    def _rotated(self) -> list[LegT]:
        """Legs from a rotating start, so a tight request budget serves every leg in turn."""
        count = len(self._legs)
        if count == 0:
            return []
        start = self._rotation % count
        self._rotation += 1
        return self._legs[start:] + self._legs[:start]

    # ---- instrument ----------------------------------------------------------------------

    def _instrument(self, leg: LegWork) -> bool:
        """Tick and expiry of the leg's symbol (looked up once per job)."""
        if leg.tick is not None:
            return True
        try:
            instrument = self._market.instrument(leg.target.symbol)
        except TraderError as exc:
            leg.last_no_price = f"instrument lookup failed: {exc}"
            return False
        leg.tick = float(instrument.tick_size)
        # A perpetual never expires: no halt before an expiry (unknown expiry = not frozen).
        leg.expiry_ms = None if is_perpetual_symbol(leg.target.symbol) else int(instrument.expiry_ms)
        return True

    @staticmethod
    def _is_frozen(leg: LegWork, now: float) -> bool:
        """Within the halt before the leg's expiry (unknown expiry: not frozen)."""
        if leg.expiry_ms is None:
            return False
        return now >= leg.expiry_ms / 1000.0 - HALT_BEFORE_EXPIRY_SECONDS

    # ---- orders --------------------------------------------------------------------------

    def _late_fill_settled(self, leg: LegWork, now: float, budget: RequestBudget) -> bool:
        """A fill of the previous order reported late is counted before any replacement (API.md 11.16)."""
        return self._ledger.settled_for_replacement(leg.order, now, self._grace_seconds, budget.take)

    def _send_order(self, leg: LegWork, qty: float, price: float) -> LedgerOrder | None:
        """Place through the ledger: the first order of the leg with the job's intent, later ones as
        requotes superseding the previous order (fills accumulate over the chain). None = refused."""
        previous = leg.order
        intent = self.intent if previous is None else self.intent.requote()
        try:
            order = self._ledger.place(
                trade_id=self.trade_id, trade_seq=self.trade_seq, leg_index=leg.index, intent=intent,
                symbol=leg.target.symbol, side=leg.target.side, qty=qty, price=price,
                # leg.tick is set: an order is priced only after its instrument was read.
                tick_size=leg.tick,  # type: ignore[arg-type]
                supersedes=None if previous is None else previous.client_order_id,
                max_live_per_trade=len(self._legs), lot=leg.lot,
            )
        except LedgerCapError:
            raise
        except (ValueError, TraderError) as exc:
            logger.warning("%s %s leg %d: order not placed: %s", self._label, self.trade_id, leg.index, exc)
            return None
        leg.order = order
        leg.order_ids.append(order.client_order_id)
        return order

    def _cancel_until_final(self, leg: LegWork, now: float, budget: RequestBudget) -> bool:
        """(Poll →) cancel → poll until the leg's order is final, over several steps if the
        budget is short; True once it is final (or there is none)."""
        order = leg.order
        if order is None or order.status.is_final:
            return True
        if order.status is not OrderStatus.CANCEL_REQUESTED:
            if self._POLL_BEFORE_CANCEL and leg.polled_at != now:
                if not budget.take():
                    return False
                self._ledger.poll(order)
                leg.polled_at = now
                if order.status.is_final:
                    return True
            # poll() above may have changed order.status; mypy keeps its narrowing from the first test.
            if order.status is not OrderStatus.CANCEL_REQUESTED:  # type: ignore[comparison-overlap]
                if not budget.take(CANCEL_COST):
                    return False
                self._ledger.cancel(order)
                if order.status.is_final:
                    return True
        if not budget.take():
            return False
        self._ledger.poll(order)
        leg.polled_at = now
        return order.status.is_final

    # ---- finishing -----------------------------------------------------------------------

    def _begin_finishing(self, reason: str) -> None:
        if self._phase in (PHASE_FINISHING, PHASE_GRACE, PHASE_DONE):
            return
        logger.info("%s %s %s finishing: %s", self._label, self.trade_id, self.intent.name, reason)
        self._reason = reason
        if not any(leg.order_ids for leg in self._legs):
            self._finish_without_orders(reason)
            return
        self._phase = PHASE_FINISHING

    def _finish_without_orders(self, reason: str) -> None:
        logger.warning("%s %s %s failed before any order: %s", self._label, self.trade_id, self.intent.name, reason)
        self._reason = reason
        self._phase = PHASE_DONE
        self._status = JobStatus.FAILED

    def _step_finishing(self, now: float, budget: RequestBudget) -> None:
        all_final = True
        for leg in self._rotated():
            try:
                if not self._cancel_until_final(leg, now, budget):
                    all_final = False
            except OutOfBudget:
                all_final = False
        if not all_final:
            return
        if self._CONCLUDE_COMPLETE_BEFORE_GRACE and self._all_complete():
            self._conclude("")
            return
        self._phase = PHASE_GRACE
        self._grace_deadline = now + self._grace_seconds

    def _step_grace(self, now: float, budget: RequestBudget) -> None:
        """After the grace wait, poll once more every order that could still show a late fill.

        The job concludes only once every one of them was answered with its filled quantity: a
        poll that failed (or answered nothing) proves no absence of a late fill, and the job's
        verdict (FAILED, PARTIAL) is acted on at once by the lifecycle. Such an order stays at
        the head of the queue and is asked again at the next step.
        """
        if self._grace_deadline is None or now < self._grace_deadline:
            return
        if self._grace_queue is None:
            self._grace_queue = [o for leg in self._legs for o in self._orders_of(leg)
                                 if o.order_id is not None and o.status is not OrderStatus.FILLED]
        while self._grace_queue:
            if not budget.take():
                return
            if self._ledger.recheck_final(self._grace_queue[0]) is None:
                if not self._grace_unanswered_logged:
                    self._grace_unanswered_logged = True
                    logger.warning("%s %s %s: the last poll of order %d went unanswered; the job ends once the "
                                   "exchange says what it filled", self._label, self.trade_id, self.intent.name,
                                   self._grace_queue[0].client_order_id)
                return
            self._grace_queue.pop(0)
        self._conclude(self._reason)

    def _conclude(self, reason: str) -> None:
        if self._all_complete():
            self._status, reason = JobStatus.FILLED, ""
        elif any(self._filled(leg) > 0 for leg in self._legs):
            self._status = JobStatus.PARTIAL
        else:
            self._status = JobStatus.FAILED
        self._reason = reason
        self._phase = PHASE_DONE
        log = logger.info if self._status is JobStatus.FILLED else logger.warning
        log("%s %s %s ended %s%s%s", self._label, self.trade_id, self.intent.name, self._status.value,
            self._conclusion_detail(), f": {reason}" if reason else "")

    def _conclusion_detail(self) -> str:
        """Engine hook: where the job stood when it ended, for the log line."""
        return ""


def checked_legs(legs: Iterable[LegTarget]) -> list[LegTarget]:
    """``legs`` as a list, refused (``ValueError``) when empty or when a leg index repeats."""
    chosen = list(legs)
    if not chosen:
        raise ValueError("an execution job needs at least one leg")
    indexes = [leg.leg_index for leg in chosen]
    if len(set(indexes)) != len(indexes):
        raise ValueError(f"duplicate leg indexes in {indexes}")
    return chosen
