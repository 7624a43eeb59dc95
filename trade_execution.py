"""Limit-order execution: its parameters, phased pricing, the fair value, the limit job and the router.

Why it is built this way (BEHAVIOUR.md §2.3, §6.2, §6.5; API.md §9, §11):

* The limit job sends one aggressive GTC limit order per leg and requotes it when a round
  times out, or, with ``ExecutionParams.phases``, reprices it phase by phase (fair, mark,
  mid, top of book, aggressive) behind a directional guard, floors and caps. Every price
  is derived from a fresh book and a sane chain row; none is ever invented.
* Orders, ids, fills and snapping belong to ``order_ledger``; the job lifecycle it shares
  with the smart job (finishing, grace, verdict, request budget) to ``execution_job``.
  This module supplies only what is particular to limit execution.
* ``fair_value`` is the one "fair" valuation rule: order pricing here and the trade
  lifecycle's PnL both use it, so the price we ask and the value we book cannot disagree.
* ``TradeExecutor`` picks the engine for an execution mode (``auto`` by the underlying
  notional) and starts its job; ``start`` sends nothing, ``advance`` does the work.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Protocol, Sequence

from clock import Clock
from contracts import Side
from errors import LedgerCapError, TraderError
from execution_job import (
    BOOK_MAX_AGE_SECONDS,
    MARK_MAX_AGE_SECONDS,
    PHASE_PRICING,
    ExecutionJob,
    LegTarget,
    LegWork,
    OrderBookJob,
    RequestBudget,
    checked_legs,
)
from order_ledger import (
    FILL_EPSILON,
    LOT,
    Intent,
    LedgerOrder,
    require_finite,
    snap_price,
    snap_qty,
)
from price_sanity import InsanePriceError, PriceBand, band_of, crossed_problem, mark_problem, side_problem
from seams import ExecutionEngine, Ledger, PriceSource, TradeRef, require
from validation import invalid, is_int, is_number, require_number


logger = logging.getLogger(__name__)


def fair_value(bid: float | None, ask: float | None, mark: float) -> float:
    """The ``fair`` valuation rule of BEHAVIOUR.md §2.3, for order prices and PnL alike.

    0 or None means that side of the book is empty. Both sides: the mark when it lies
    between them, else the mid. One side: the mark, but never through that side (a bid
    above the mark lifts the value to the bid, an ask below it caps it). No side: the mark.
    """
    b = bid if bid and bid > 0 else None
    a = ask if ask and ask > 0 else None
    if b is not None and a is not None:
        return mark if b <= mark <= a else (b + a) / 2.0
    if b is not None:
        return max(mark, b)
    if a is not None:
        return min(mark, a)
    return mark


# =====================================================================================
# Execution parameters
# =====================================================================================


PRICINGS = ("fair", "mid", "mark", "top_of_book", "aggressive")


@dataclass(frozen=True)
class ExecutionPhase:
    """One pricing phase of a phased limit execution (BEHAVIOUR.md §1.3, §6.2)."""

    pricing: str
    duration_seconds: float
    reprice_interval_seconds: float = 15.0
    buffer_pct: float = 0.0
    fair_aggression: float = 0.0

    def __post_init__(self) -> None:
        owner = "ExecutionPhase"
        if self.pricing not in PRICINGS:
            raise invalid(owner, "pricing", self.pricing, f"use one of {', '.join(PRICINGS)}")
        require_number(owner, "duration_seconds", self.duration_seconds, lambda v: v > 0, "must be > 0")
        require_number(owner, "reprice_interval_seconds", self.reprice_interval_seconds, lambda v: v >= 10,
                       "must be >= 10 seconds")
        require_number(owner, "buffer_pct", self.buffer_pct, lambda v: 0 <= v <= 50, "must be within 0..50")
        require_number(owner, "fair_aggression", self.fair_aggression, lambda v: 0 <= v <= 1,
                       "must be within 0..1")


LIMIT_PRICINGS = ("touch", "phased")


@dataclass(frozen=True)
class ExecutionParams:
    """Limit execution tunables (BEHAVIOUR.md §1.3); validated, never silently corrected."""

    fill_timeout_seconds: float = 30.0
    aggressive_buffer_pct: float = 2.0
    max_requote_rounds: int = 10
    phases: tuple[ExecutionPhase, ...] | None = None
    min_price_pct_of_fair: float | None = None
    max_price_pct_of_fair: float | None = None
    min_floor_price: float | None = None
    grace_seconds: float = 5.0
    price_wait_seconds: float = 60.0
    # Hedge orders: price only while the leg's mark is sane and within this fraction of its row's
    # underlying (a perpetual's index). The hedge decision checks the gap once; a requote 20 s
    # later must not price from a mark that has since left the index (None: no such check).
    max_mark_index_gap: float | None = None

    def __post_init__(self) -> None:
        owner = "ExecutionParams"
        require_number(owner, "fill_timeout_seconds", self.fill_timeout_seconds, lambda v: v > 0, "must be > 0")
        require_number(owner, "aggressive_buffer_pct", self.aggressive_buffer_pct, lambda v: 0 <= v <= 50,
                       "must be within 0..50")
        if not is_int(self.max_requote_rounds) or self.max_requote_rounds < 0:
            raise invalid(owner, "max_requote_rounds", self.max_requote_rounds, "must be an int >= 0")
        if self.phases is not None:
            if not isinstance(self.phases, (tuple, list)) or not self.phases \
                    or not all(isinstance(p, ExecutionPhase) for p in self.phases):
                raise invalid(owner, "phases", self.phases, "must be None or a non-empty tuple of ExecutionPhase")
            object.__setattr__(self, "phases", tuple(self.phases))
        if self.min_price_pct_of_fair is not None:
            require_number(owner, "min_price_pct_of_fair", self.min_price_pct_of_fair, lambda v: 0 <= v <= 1,
                           "must be None or within 0..1 (a fraction of fair value)")
        if self.max_price_pct_of_fair is not None:
            require_number(owner, "max_price_pct_of_fair", self.max_price_pct_of_fair, lambda v: v >= 1,
                           "must be None or >= 1 (a multiple of fair value)")
        if self.min_floor_price is not None:
            require_number(owner, "min_floor_price", self.min_floor_price, lambda v: v >= 0,
                           "must be None or >= 0 (USD)")
        require_number(owner, "grace_seconds", self.grace_seconds, lambda v: v >= 0, "must be >= 0")
        require_number(owner, "price_wait_seconds", self.price_wait_seconds, lambda v: v > 0, "must be > 0")
        if self.max_mark_index_gap is not None:
            require_number(owner, "max_mark_index_gap", self.max_mark_index_gap, lambda v: 0 < v < 1,
                           "must be None or within (0, 1) (a fraction of the index)")

    @classmethod
    def phased(cls, **overrides: Any) -> "ExecutionParams":
        """The recommended phases: fair 60 s, fair (aggression 0.5) 60 s, aggressive 120 s; reprice 15 s."""
        buffer = overrides.get("aggressive_buffer_pct", cls.aggressive_buffer_pct)
        phases = (
            ExecutionPhase("fair", 60.0, 15.0, fair_aggression=0.0),
            ExecutionPhase("fair", 60.0, 15.0, fair_aggression=0.5),
            ExecutionPhase("aggressive", 120.0, 15.0, buffer_pct=buffer),
        )
        return cls(**{**overrides, "phases": phases})

    @classmethod
    def with_pricing(cls, pricing: str, **overrides: Any) -> "ExecutionParams":
        """A limit pricing by name, for strategy factories and sweeps (``LIMIT_PRICINGS``).

        ``"touch"``: one aggressive phase (cross the touch by ``aggressive_buffer_pct``, requote
        on ``fill_timeout_seconds``), the seed's behaviour. ``"phased"``: the recommended phases
        (``phased``): work at fair value first, then cross.
        """
        if pricing == "touch":
            return cls(**overrides)
        if pricing == "phased":
            return cls.phased(**overrides)
        raise invalid("ExecutionParams", "pricing", pricing, f"must be one of {', '.join(LIMIT_PRICINGS)}")

    @classmethod
    def urgent(cls, **overrides: Any) -> "ExecutionParams":
        """The urgent profile for unwind and kill (BEHAVIOUR.md §4.3).

        Mark for 60 s repricing every 15 s, then aggressive with a 5 % buffer for 120 s
        repricing every 10 s. Up to 4 + 12 reprices can be wanted, so the replacement cap
        defaults to 20 (a few spare for orders the exchange ends by itself).
        """
        phases = (
            ExecutionPhase("mark", 60.0, 15.0),
            ExecutionPhase("aggressive", 120.0, 10.0, buffer_pct=5.0),
        )
        return cls(**{"max_requote_rounds": 20, **overrides, "phases": phases})


# =====================================================================================
# Phased pricing (pure; BEHAVIOUR.md §6.2 "Phased pricing", "Floors and caps")
# =====================================================================================


class NoPriceError(ValueError):
    """A leg cannot be priced now (a needed book side or the mark is missing): send nothing."""


def _present(value: float | None) -> float | None:
    """A usable positive finite number, or None (0 means the side is empty)."""
    if not is_number(value) or value <= 0:
        return None
    return float(value)


def phase_raw_price(phase: ExecutionPhase, side: int, bid: float | None, ask: float | None,
                    mark: float | None) -> float:
    """The unlimited, unsnapped target of one leg in ``phase`` (``NoPriceError`` if it has none).

    Each pricing mode needs only the inputs it uses, so a close with one empty side can
    still rest a passive order where that is meaningful, and nothing is ever invented.
    """
    side = Side.of(side)
    buying = side is Side.BUY
    b, a, m = _present(bid), _present(ask), _present(mark)
    pricing = phase.pricing
    if pricing == "aggressive":
        far = a if buying else b
        if far is None:
            raise NoPriceError(f"no {'ask' if buying else 'bid'} to cross for the aggressive {side.name.lower()}")
        buffer = phase.buffer_pct / 100.0
        return far * (1 + buffer) if buying else far * (1 - buffer)
    if pricing == "top_of_book":
        near = b if buying else a
        if near is None:
            raise NoPriceError(f"no {'bid' if buying else 'ask'} to join for the {side.name.lower()}")
        return near
    if pricing == "mid" and b is not None and a is not None:
        return (b + a) / 2.0
    if m is None:
        raise NoPriceError(f"no usable mark for {pricing} pricing")
    if pricing == "mark":
        return m
    fair = fair_value(b, a, m)
    if pricing == "mid":
        return fair  # one side empty: the §2.3 mid valuation degrades to the fair rule
    aggression = phase.fair_aggression
    if aggression == 0:
        return fair
    far = a if buying else b
    if far is None:
        raise NoPriceError(f"no {'ask' if buying else 'bid'} to move the fair {side.name.lower()} toward")
    return fair + aggression * (far - fair)


def apply_price_limits(price: float, side: int, params: ExecutionParams, fair: float | None) -> float:
    """Sells never below max(min_floor_price, min_price_pct_of_fair × f); buys never above
    max_price_pct_of_fair × f. A floor that stops a sell from crossing leaves it resting there."""
    if side == Side.SELL:
        floor = params.min_floor_price or 0.0
        if params.min_price_pct_of_fair is not None:
            if fair is None:
                raise NoPriceError("no fair value for the sell floor")
            floor = max(floor, params.min_price_pct_of_fair * fair)
        return max(price, floor)
    if params.max_price_pct_of_fair is not None:
        if fair is None:
            raise NoPriceError("no fair value for the buy cap")
        return min(price, params.max_price_pct_of_fair * fair)
    return price


def guard_price(price: float, side: int, previous: float | None) -> float:
    """Directional guard: within one phase a sell never goes lower, a buy never higher."""
    if previous is None:
        return price
    return max(price, previous) if side == Side.SELL else min(price, previous)


def phased_price(phase: ExecutionPhase, side: int, bid: float | None, ask: float | None, mark: float | None,
                 params: ExecutionParams, tick: float, previous: float | None = None) -> float:
    """The order price of one leg in ``phase``: target → floors/caps → tick snap → guard.

    ``previous`` is the leg's price earlier in the same phase (None after a phase change).
    Snapping is on the safe side (sells up, buys down), so it never breaks a floor or cap.
    """
    raw = phase_raw_price(phase, side, bid, ask, mark)
    m = _present(mark)
    fair = fair_value(_present(bid), _present(ask), m) if m is not None else None
    limited = apply_price_limits(raw, side, params, fair)
    return guard_price(snap_price(limited, tick, side), side, previous)


# =====================================================================================
# The limit job
# =====================================================================================


@dataclass
class _LegWork(LegWork):
    """A leg of a limit job: its requote rounds and, under phased pricing, its phase state."""

    round_started_at: float = 0.0
    rounds_used: int = 0
    wants_order: bool = True
    ending_round: bool = False
    exhausted: bool = False
    price: float | None = None
    priced_at: float | None = None
    # Phased pricing only:
    phase_index: int | None = None      # the phase the leg's price belongs to
    phase_ref: float | None = None      # the leg's price in that phase (directional guard)
    next_reprice_at: float = 0.0
    repricing: bool = False             # a cancel-and-replace is under way
    replace_now: bool = False           # our cancel finished: place the replacement at once
    cap_logged: bool = False


_PHASE_WORKING = "working"


@dataclass(frozen=True)
class _PriceReference:
    """What a leg's prices are checked against: its sanity band and its mark when that is sane."""

    band: PriceBand
    mark: float | None
    mark_problem: str | None

    def sane_sides(self, book: Any) -> Any:
        """The book without a top side outside the band: an insane side is never priced from."""
        bids = book.bids if book.best_bid is None or self.band.contains(book.best_bid) else ()
        asks = book.asks if book.best_ask is None or self.band.contains(book.best_ask) else ()
        if bids is book.bids and asks is book.asks:
            return book
        logger.debug("%s: book side outside the sanity band [%.2f, %.2f] ignored (bid %s, ask %s)",
                    book.symbol, self.band.low, self.band.high, book.best_bid, book.best_ask)
        return replace(book, bids=tuple(bids), asks=tuple(asks))

    def priceable(self, book: Any) -> tuple[Any, str | None]:
        """The book's sane sides, and why nothing may be priced from them (None: it may).

        Every fair value, mid and touch of this engine comes from the book this returns, so
        an insane side never moves a price, floor or cap. When the sane touches cross (bid at
        or above ask, ``price_sanity.crossed_problem``) one of them is wrong and we cannot tell
        which: the leg is unpriced this step, exactly as for a missing side.
        """
        sane = self.sane_sides(book)
        crossed = crossed_problem(sane.best_bid, sane.best_ask)
        if crossed is not None:
            logger.debug("%s: %s; no price this step", book.symbol, crossed)
        return sane, crossed

    def keep_inside(self, price: float, side: int) -> float:
        """A buy never above the band, a sell never below it (then snapped on the safe side)."""
        return self.band.clamp_buy(price) if side == Side.BUY else self.band.clamp_sell(price)


class LimitFillJob(OrderBookJob[_LegWork]):
    """BEHAVIOUR.md §6.2 as a tick-driven state machine: the basic algorithm, or phased
    pricing when ``params.phases`` is set (the phase clock starts when the orders go out)."""

    _ACTIVE_PHASES = (PHASE_PRICING, _PHASE_WORKING)
    # Cancels straight away (its working steps poll the order at their start).
    _POLL_BEFORE_CANCEL = False
    # A job whose legs all completed while finishing still waits for the grace poll.
    _CONCLUDE_COMPLETE_BEFORE_GRACE = False

    def __init__(self, manager: "LimitFillManager", trade: TradeRef, legs: Sequence[LegTarget], intent: Intent,
                 params: ExecutionParams, *, best_effort: bool, started_at: float) -> None:
        super().__init__(ledger=manager.ledger, market=manager.market, trade=trade, intent=intent,
                         best_effort=best_effort, started_at=started_at,
                         max_requests=manager.max_requests_per_step,
                         legs=[_LegWork(target=leg, total=snap_qty(leg.qty, leg.lot), round_started_at=started_at)
                               for leg in legs],
                         grace_seconds=params.grace_seconds)
        self.params = params
        self._phase = _PHASE_WORKING if best_effort else PHASE_PRICING
        self._phases = params.phases
        self._phases_start: float | None = started_at if best_effort else None

    def __repr__(self) -> str:
        return f"LimitFillJob({self.trade_id}, {self.intent.name}, {self._phase}, {self._status.value})"

    def _step_active(self, now: float, budget: RequestBudget) -> None:
        if self._phase == PHASE_PRICING:
            self._step_pricing(now, budget)
        if self._phase == _PHASE_WORKING:
            self._step_working(now, budget)

    # ---- pricing --------------------------------------------------------------------

    def _price(self, leg: _LegWork, now: float, budget: RequestBudget) -> float | None:
        """A fresh aggressive limit price for the leg, or None (never an invented or insane one)."""
        if leg.priced_at == now and leg.price is not None:
            return leg.price
        if self._phases is not None:
            return self._phased_leg_price(leg, now, budget)
        if not self._instrument(leg):
            return None
        if not budget.take():
            return None
        side = leg.target.side
        try:
            book = self._market.order_book(leg.target.symbol, max_age=BOOK_MAX_AGE_SECONDS)
        except TraderError as exc:
            leg.last_no_price = f"order book unavailable: {exc}"
            return None
        reference = self._reference(leg)
        if reference is None:
            return None
        buffer = self.params.aggressive_buffer_pct / 100.0
        buying = side == Side.BUY
        touch = book.best_ask if buying else book.best_bid
        if touch is None or not touch > 0:
            leg.last_no_price = f"no {'ask' if buying else 'bid'} on {leg.target.symbol}"
            return None
        insane = side_problem("ask" if buying else "bid", touch, reference.band)
        if insane is not None:
            leg.last_no_price = f"{leg.target.symbol}: {insane}"
            return None
        # The floor and cap read the fair value from the sane sides only: an insane far side
        # (a sell's ask at 5 with the mark at 100) must not drag the fair value, and the floor
        # with it, down to the mid of a wrong level.
        sane, crossed = reference.priceable(book)
        if crossed is not None:
            leg.last_no_price = f"{leg.target.symbol}: {crossed}"
            return None
        raw = touch * (1 + buffer) if buying else touch * (1 - buffer)
        guarded = self._apply_floor_and_cap(leg, raw, sane, reference)
        if guarded is None:
            return None
        try:
            # leg.tick is set: the leg's instrument is read before any price (mypy cannot see it).
            price = snap_price(reference.keep_inside(guarded, side), leg.tick, side)  # type: ignore[arg-type]
        except ValueError as exc:
            leg.last_no_price = str(exc)
            return None
        leg.price, leg.priced_at = price, now
        return price

    def _reference(self, leg: _LegWork) -> "_PriceReference | None":
        """The leg's sanity band and sane mark from its chain row (≤ 30 s); None = wait.

        Every price this job sends is checked against it (``price_sanity``): a book side
        outside the band is never priced from, the mark only when it is sane, and the final
        price stays inside the band. No row, or a row whose underlying or IV is itself
        insane, means no band: the leg waits exactly as it does for a missing price.
        """
        symbol = leg.target.symbol
        try:
            row = self._market.quote(symbol, max_age=MARK_MAX_AGE_SECONDS)
        except TraderError as exc:
            leg.last_no_price = f"no fresh chain row for {symbol} to check prices against: {exc}"
            return None
        try:
            band = band_of(row, symbol)
        except InsanePriceError as exc:
            leg.last_no_price = f"no sane reference for {symbol}: {exc}"
            return None
        problem = mark_problem(row.mark, band)
        limit = self.params.max_mark_index_gap
        if limit is not None:
            if problem is not None:
                leg.last_no_price = f"no sane mark on {symbol} to check against its index: {problem}"
                return None
            gap = abs(float(row.mark) - band.underlying) / band.underlying
            if gap > limit:
                leg.last_no_price = (f"mark {float(row.mark):g} of {symbol} is {gap:.2%} from its index "
                                     f"{band.underlying:g}, more than {limit:.2%}")
                return None
        return _PriceReference(band, None if problem else float(row.mark), problem)

    def _apply_floor_and_cap(self, leg: _LegWork, price: float, book: Any,
                             reference: "_PriceReference") -> float | None:
        """Sell floors and buy caps of §6.2; needs a sane mark only when a fair-based limit is set.

        ``book`` must be the sane sides (``_PriceReference.priceable``): the fair value is
        read from it, and a limit computed from an insane level is no limit.
        """
        params = self.params
        side = leg.target.side
        needs_fair = (side == Side.SELL and params.min_price_pct_of_fair is not None) or \
                     (side == Side.BUY and params.max_price_pct_of_fair is not None)
        fair = None
        if needs_fair:
            if reference.mark is None:
                leg.last_no_price = f"no sane mark on {leg.target.symbol} for the price guard: {reference.mark_problem}"
                return None
            fair = fair_value(book.best_bid, book.best_ask, reference.mark)
        if side == Side.SELL:
            floor = 0.0
            if params.min_floor_price is not None:
                floor = max(floor, params.min_floor_price)
            # The ignores below: fair is read only when this side's pct_of_fair is set (needs_fair).
            if fair is not None:
                floor = max(floor, params.min_price_pct_of_fair * fair)  # type: ignore[operator]
            return max(price, floor)
        if fair is not None:
            return min(price, params.max_price_pct_of_fair * fair)  # type: ignore[operator]
        return price

    def _phase_at(self, now: float) -> int | None:
        """Index of the pricing phase running at ``now``; None once the last one has ended.

        Before the orders go out (an open still pricing its legs) it is the first phase.
        """
        assert self._phases is not None
        if self._phases_start is None:
            return 0
        elapsed = now - self._phases_start
        for index, phase in enumerate(self._phases):
            if elapsed < phase.duration_seconds:
                return index
            elapsed -= phase.duration_seconds
        return None

    def _phased_leg_price(self, leg: _LegWork, now: float, budget: RequestBudget) -> float | None:
        """The leg's price in the current phase (floors, caps, snap, guard and sanity band applied), or None."""
        assert self._phases is not None
        index = self._phase_at(now)
        if index is None or not self._instrument(leg):
            return None
        if not budget.take():
            return None
        phase = self._phases[index]
        side = leg.target.side
        try:
            book = self._without_own_order(
                self._market.order_book(leg.target.symbol, max_age=BOOK_MAX_AGE_SECONDS), leg)
        except TraderError as exc:
            leg.last_no_price = f"order book unavailable: {exc}"
            return None
        reference = self._reference(leg)
        if reference is None:
            return None
        book, crossed = reference.priceable(book)
        if crossed is not None:
            # Every phase, the mark phase too: its floor and cap read the same book.
            leg.last_no_price = f"{leg.target.symbol}: {crossed}"
            return None
        if reference.mark is None and self._needs_mark(phase, side, book):
            if self.intent not in (Intent.KILL, Intent.UNWIND) or phase.pricing not in ("mark", "fair", "mid"):
                leg.last_no_price = f"no sane mark on {leg.target.symbol}: {reference.mark_problem}"
                return None
            # Kill and unwind must get out: with only the mark insane they cross the sane book.
            phase = replace(phase, pricing="aggressive", buffer_pct=0.0, fair_aggression=0.0)
        previous = leg.phase_ref if leg.phase_index == index else None
        try:
            # The ignores below: leg.tick is set, the instrument is read before any price.
            price = phased_price(phase, side, book.best_bid, book.best_ask, reference.mark, self.params,
                                 leg.tick, previous)  # type: ignore[arg-type]
            price = snap_price(reference.keep_inside(price, side), leg.tick, side)  # type: ignore[arg-type]
        except ValueError as exc:
            leg.last_no_price = f"{leg.target.symbol}: {exc}"
            return None
        leg.price, leg.priced_at = price, now
        return price

    def _needs_mark(self, phase: ExecutionPhase, side: int, book: Any) -> bool:
        """The mark is read only when the phase or a fair-based floor/cap uses it."""
        if phase.pricing in ("fair", "mark"):
            return True
        if phase.pricing == "mid" and (book.best_bid is None or book.best_ask is None):
            return True
        if side == Side.SELL:
            return self.params.min_price_pct_of_fair is not None
        return self.params.max_price_pct_of_fair is not None

    @staticmethod
    def _without_own_order(book: Any, leg: _LegWork) -> Any:
        """The book minus our own resting order, so the leg never prices against itself
        (the exchange shows resting orders in the public book)."""
        order = leg.order
        if order is None or order.status.is_final or order.order_id is None or leg.tick is None:
            return book
        if book.as_of < order.sent_at:
            return book  # read before the order existed: it cannot contain it
        own_qty = max(0.0, order.qty - order.filled_qty)
        levels = list(book.bids if order.side == Side.BUY else book.asks)
        for position, (price, size) in enumerate(levels):
            if abs(price - order.price) < leg.tick / 2:
                left = size - own_qty
                if left > FILL_EPSILON:
                    levels[position] = (price, left)
                else:
                    del levels[position]
                break
        else:
            return book
        if order.side == Side.BUY:
            return replace(book, bids=tuple(levels))
        return replace(book, asks=tuple(levels))

    # ---- phases ---------------------------------------------------------------------

    def _step_pricing(self, now: float, budget: RequestBudget) -> None:
        """Open: no order until every leg has a fresh price; FAILED after price_wait_seconds."""
        for leg in self._legs:
            if self._instrument(leg) and self._is_frozen(leg, now):
                self._finish_without_orders(f"leg {leg.target.leg_index} ({leg.target.symbol}) is frozen "
                                            f"before expiry")
                return
        missing = [leg for leg in self._legs if not leg.below_lot(leg.total) and self._price(leg, now, budget) is None]
        if not missing:
            self._phase = _PHASE_WORKING
            if self._phases is not None:
                self._phases_start = now
            for leg in self._legs:
                leg.round_started_at = now
            return
        if now - self.started_at >= self.params.price_wait_seconds:
            detail = "; ".join(leg.last_no_price or f"leg {leg.target.leg_index} unpriced" for leg in missing)
            self._finish_without_orders(f"no price within {self.params.price_wait_seconds:.0f} s: {detail}")

    def _step_working(self, now: float, budget: RequestBudget) -> None:
        phases_over = self._phases is not None and self._phase_at(now) is None
        for leg in self._rotated():
            try:
                if phases_over:
                    self._poll_leg(leg, budget)
                elif self._phases is not None:
                    self._step_leg_phased(leg, now, budget)
                else:
                    self._step_leg(leg, now, budget)
            except LedgerCapError as exc:
                self._begin_finishing(f"ledger cap: {exc}")
                return
        if all(self._complete(leg) for leg in self._legs):
            self._conclude("")
            return
        if phases_over:
            unfilled = [str(leg.target.leg_index) for leg in self._legs if not self._complete(leg)]
            self._begin_finishing(f"all pricing phases ended with leg(s) {', '.join(unfilled)} unfilled")
            return
        blocker = self._blocking_leg()
        if blocker is not None:
            self._begin_finishing(blocker)

    def _blocking_leg(self) -> str | None:
        """Why the job cannot complete, if it cannot."""
        open_legs = [leg for leg in self._legs if not self._complete(leg)]
        for leg in open_legs:
            if leg.exhausted and not self.best_effort:
                return f"leg {leg.target.leg_index} unfilled after {leg.rounds_used} requote rounds"
            if leg.frozen and not self.best_effort:
                return f"leg {leg.target.leg_index} ({leg.target.symbol}) frozen before expiry"
        if self.best_effort:
            exhausted = [leg for leg in open_legs if leg.exhausted]
            if exhausted:
                return f"leg {exhausted[0].target.leg_index} unfilled after {exhausted[0].rounds_used} requote rounds"
            if open_legs and all(leg.frozen and not leg.live for leg in open_legs):
                return "every unfilled leg is frozen before expiry"
        return None

    def _step_leg(self, leg: _LegWork, now: float, budget: RequestBudget) -> None:
        if leg.order is not None and not leg.order.status.is_final:
            if not budget.take():
                return
            self._ledger.poll(leg.order)
        if self._complete(leg):
            return
        if not self._instrument(leg):
            return
        if self._is_frozen(leg, now):
            leg.frozen = True
            return
        round_over = now - leg.round_started_at >= self.params.fill_timeout_seconds
        if round_over and not leg.ending_round:
            if leg.rounds_used >= self.params.max_requote_rounds:
                leg.exhausted = True
                return
            leg.ending_round = True
        if leg.ending_round and not self._cancel_until_final(leg, now, budget):
            return
        if leg.ending_round:
            leg.ending_round = False
            leg.rounds_used += 1
            leg.round_started_at = now
            leg.wants_order = True
            if self._complete(leg):
                return
        if leg.wants_order and not leg.live:
            self._place(leg, now, budget)

    def _poll_leg(self, leg: _LegWork, budget: RequestBudget) -> None:
        if leg.order is not None and not leg.order.status.is_final and budget.take():
            self._ledger.poll(leg.order)

    def _step_leg_phased(self, leg: _LegWork, now: float, budget: RequestBudget) -> None:
        """One tick of a leg under phased pricing.

        Poll; continue a cancel-and-replace; otherwise, when the phase changed or the
        leg's reprice interval elapsed, recompute the target and replace the order only
        if it moved by at least one tick and a replacement round is left.
        """
        self._poll_leg(leg, budget)
        if self._complete(leg) or not self._instrument(leg):
            return
        if self._is_frozen(leg, now):
            leg.frozen = True
            return
        index = self._phase_at(now)
        assert index is not None and self._phases is not None
        due = leg.phase_index != index or now >= leg.next_reprice_at
        if leg.repricing:
            if not self._cancel_until_final(leg, now, budget):
                return
            leg.repricing = False
            leg.replace_now = True
            if self._complete(leg):
                return
        if leg.order is None or leg.order.status.is_final:
            self._replace_missing_order(leg, now, budget, due)
            return
        if not due:
            return
        price = self._price(leg, now, budget)
        if price is None:
            return
        phase_changed = leg.phase_index != index
        leg.phase_index = index
        leg.next_reprice_at = now + self._phases[index].reprice_interval_seconds
        current = leg.order.price
        # leg.tick is set: a price was computed, which needs the instrument (mypy cannot see it).
        if abs(price - current) < leg.tick * (1 - 1e-9):  # type: ignore[operator]
            leg.phase_ref = current   # the resting price is this phase's reference
            return
        if leg.rounds_used >= self.params.max_requote_rounds:
            leg.phase_ref = current
            if not leg.cap_logged:
                leg.cap_logged = True
                logger.warning("job %s leg %d: all %d replacement rounds used; the order rests at %s",
                               self.trade_id, leg.target.leg_index, self.params.max_requote_rounds, current)
            return
        if phase_changed:
            leg.phase_ref = None      # a new phase may concede; its first price becomes the reference
        leg.repricing = True
        if not self._cancel_until_final(leg, now, budget):
            return
        leg.repricing = False
        leg.replace_now = True    # placed now, or on the next tick once the late-fill grace is over
        if not self._complete(leg):
            self._place(leg, now, budget)

    def _replace_missing_order(self, leg: _LegWork, now: float, budget: RequestBudget, due: bool) -> None:
        """No live order: the first one goes out at once, a replacement after our own cancel at
        once, and one for an order the exchange ended itself at the next reprice slot."""
        if leg.order is not None:
            if leg.rounds_used >= self.params.max_requote_rounds:
                leg.exhausted = True
                return
            if not (leg.replace_now or due):
                return
        self._place(leg, now, budget)


    def _place(self, leg: _LegWork, now: float, budget: RequestBudget) -> None:
        # A fill of the previous order reported late must be counted first (API.md 11.16).
        if not self._late_fill_settled(leg, now, budget):
            return
        remaining = self._remaining(leg)
        if leg.below_lot(remaining):
            leg.wants_order = False
            return
        price = self._price(leg, now, budget)
        if price is None:
            return
        if not budget.take():
            return
        previous = leg.order
        order = self._send_order(leg, remaining, price)
        if order is None:
            return
        leg.wants_order = False
        if self._phases is not None:
            self._after_phased_place(leg, order, previous is not None, now)

    def _after_phased_place(self, leg: _LegWork, order: LedgerOrder, is_replacement: bool, now: float) -> None:
        """A placed order sets the guard reference and the next reprice time of its phase."""
        assert self._phases is not None
        index = self._phase_at(now)
        leg.phase_index = index
        leg.phase_ref = order.price
        leg.replace_now = False
        if index is not None:
            leg.next_reprice_at = now + self._phases[index].reprice_interval_seconds
        if is_replacement:
            leg.rounds_used += 1


class LimitFillManager:
    """Starts limit-order jobs (BEHAVIOUR.md §6.2). ``start`` sends nothing; ``advance`` does the work."""

    def __init__(self, ledger: Ledger, market: PriceSource, clock: Clock, *, max_requests_per_step: int = 6) -> None:
        if max_requests_per_step < 2:
            raise ValueError("max_requests_per_step must be >= 2")
        require("LimitFillManager ledger", ledger, Ledger)
        require("LimitFillManager market", market, PriceSource)
        require("LimitFillManager clock", clock, Clock)
        self.ledger = ledger
        self.market = market
        self.clock = clock
        self.max_requests_per_step = max_requests_per_step

    def start(self, trade: TradeRef, legs: list[LegTarget], intent: Intent, params: ExecutionParams, *,
              best_effort: bool = False) -> ExecutionJob:
        return LimitFillJob(self, trade, checked_legs(legs), Intent(intent), params, best_effort=best_effort,
                            started_at=self.clock.now())


# =====================================================================================
# Routing
# =====================================================================================


MODES = ("limit", "smart", "rfq")


class Quantity(Protocol):
    """What routing reads of a leg: its quantity (a resolved leg, or a job's leg target)."""

    @property
    def qty(self) -> float: ...


class TradeExecutor:
    """Routes a trade to an execution engine (BEHAVIOUR.md §6.5) and starts its job."""

    def __init__(self, limit: ExecutionEngine, *, smart: ExecutionEngine, rfq: ExecutionEngine,
                 rfq_notional_threshold: float = 50_000.0, smart_notional_threshold: float = 10_000.0) -> None:
        # Every mode has its engine: a strategy's execution_mode can never meet a missing one.
        require("TradeExecutor limit", limit, ExecutionEngine)
        require("TradeExecutor smart", smart, ExecutionEngine)
        require("TradeExecutor rfq", rfq, ExecutionEngine)
        self.limit = limit
        self.smart = smart
        self.rfq = rfq
        self.rfq_notional_threshold = float(rfq_notional_threshold)
        self.smart_notional_threshold = float(smart_notional_threshold)

    def route(self, mode: str, legs: Sequence[Quantity], index_price: float) -> str:
        """The engine for ``mode``; ``auto`` uses the underlying notional Σ qty × index (never a mark).

        The strategy runner calls this once per trade, on the resolved legs, and its answer is
        final: the lifecycle stores it and starts every job of the trade with it (a close after
        failed rounds falls back to ``limit``, a decision of its own).
        """
        if mode in MODES:
            return mode
        if mode != "auto":
            raise ValueError(f"execution mode must be one of auto, {', '.join(MODES)}; got {mode!r}")
        if len(legs) <= 1:
            return "limit"
        index = require_finite("index_price", index_price)
        if index <= 0:
            raise ValueError(f"index_price must be > 0, got {index_price!r}: no index, no routing")
        notional = sum(leg.qty for leg in legs) * index
        if notional >= self.rfq_notional_threshold:
            chosen = "rfq"
        elif notional >= self.smart_notional_threshold:
            chosen = "smart"
        else:
            chosen = "limit"
        return chosen

    def start(self, mode: str, trade: TradeRef, legs: list[LegTarget], intent: Intent, params: Any, *,
              best_effort: bool = False) -> ExecutionJob:
        engines = {"limit": self.limit, "smart": self.smart, "rfq": self.rfq}
        if mode not in engines:
            raise ValueError(f"execution mode must be resolved to one of {MODES}, got {mode!r}")
        return engines[mode].start(trade, legs, intent, params, best_effort=best_effort)
