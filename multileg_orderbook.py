"""Smart multi-leg execution on the order book: chunked, balanced, passive first (BEHAVIOUR.md §6.3).

Why it is built this way:

* A large multi-leg order sent at once moves every book it touches. The smart executor
  works the structure in ``chunk_count`` slices: each leg has cumulative chunk targets
  (``floor_lot(total × k / N)``, at least ``k`` minimum orders, the last one exactly the
  total), on the leg's OWN lot
  (``LegTarget.lot``: a BTC option's 0.01, an ETH option's 0.1; an order off the exchange's
  step is refused, 10558, and would leave the other legs naked), quoted passively for
  ``time_per_chunk_seconds`` and finished by an aggressive fallback that crosses the spread.
* A structure is only as safe as its least-filled leg. No leg may run more than one chunk
  ahead of the least-filled leg (by filled fraction), so a leg without liquidity holds the
  others back instead of leaving a naked position to unwind. The least-filled leg itself may
  always step by one minimum order (``min_order_qty`` rounded up to its lot, at least a
  lot), so a small leg whose chunk is below the exchange minimum still progresses instead
  of holding the structure at its first chunk until the job ends PARTIAL. A leg that is
  behind but still filling gets the next chunks to catch up; a leg with no fill in a whole
  chunk (passive and aggressive) ends the job early: PARTIAL or FAILED, and the lifecycle
  unwinds or retries.
* Every order goes through the ``OrderLedger``: deterministic client order ids, record
  before send, poll → cancel → poll until final → replace, replacements sized from the
  fills of the whole chain. Fills are read only from order status via the ledger, never
  from account positions, so the trade lifecycle sees exactly what this job obtained.
* Prices are never invented: a quote needs the book side (or, for ``mark``, the chain's
  mark) it is derived from, fresh; otherwise that leg simply does not quote this round.
* The job is non-blocking: ``advance(now)`` does at most ``max_requests_per_step``
  requests and every wait is a deadline compared with the injected clock.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any, Sequence

from clock import Clock
from contracts import Side, is_perpetual_symbol
from display import fmt_qty
from errors import LedgerCapError, TraderError
from execution_job import (
    BOOK_MAX_AGE_SECONDS,
    MARK_MAX_AGE_SECONDS,
    PHASE_PRICING,
    LegTarget,
    LegWork,
    OrderBookJob,
    OutOfBudget,
    RequestBudget,
    checked_legs,
)
from order_ledger import FILL_EPSILON, LOT, Intent, OrderStatus, snap_price, snap_qty
from price_sanity import InsanePriceError, PriceBand, band_of, crossed_problem, mark_problem
from seams import Ledger, PriceSource, TradeRef, require
from validation import invalid, is_int, is_number

logger = logging.getLogger(__name__)

QUOTING_STRATEGIES = ("top_of_book", "top_of_book_offset", "mid", "mark")
MAX_CHUNKS = 50
MIN_INTERVAL_SECONDS = 10.0
MAX_OFFSET_PCT = 50.0
# A leg whose orders the exchange refuses this many times in a row stops placing, so a
# systematic rejection (price band, margin) cannot burn the trade's order cap.
MAX_CONSECUTIVE_REJECTIONS = 3


# =====================================================================================
# Configuration
# =====================================================================================


SMART_CONFIG = "SmartExecConfig"


def _on_lot(qty: float, lot: float = LOT) -> bool:
    return abs(snap_qty(qty, lot) - qty) < FILL_EPSILON


@dataclass(frozen=True)
class SmartExecConfig:
    """Smart executor tunables (BEHAVIOUR.md §1.3); validated at construction, never corrected.

    ``min_order_qty``: the smallest working order; a smaller piece waits for a later chunk
    unless it completes the leg. The least-filled leg may always work ``min_order_qty``
    beyond its fills (its chunk target permitting: every target is at least ``k`` minimum
    orders, ``chunk_targets``), even past the one-chunk balance step.
    It is validated on the 0.01 lot; a leg on a coarser lot (an ETH option's 0.1) uses it
    rounded up to that lot (``leg_min_order``).
    ``grace_seconds``: after an incomplete job's last cancel, how long to wait before the
    final poll that catches late-reported fills (§8 row 9).
    """

    chunk_count: int = 5
    time_per_chunk_seconds: float = 120.0
    quoting_strategy: str = "top_of_book"
    offset_pct: float = 0.5
    reprice_interval_seconds: float = 10.0
    reprice_threshold_ticks: int = 1
    aggressive_attempts: int = 10
    aggressive_wait_seconds: float = 5.0
    min_order_qty: float = LOT
    grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        owner = SMART_CONFIG
        if not is_int(self.chunk_count) or not 1 <= self.chunk_count <= MAX_CHUNKS:
            raise invalid(owner, "chunk_count", self.chunk_count, f"use an int within 1..{MAX_CHUNKS}")
        for name in ("time_per_chunk_seconds", "reprice_interval_seconds"):
            value = getattr(self, name)
            if not is_number(value) or value < MIN_INTERVAL_SECONDS:
                raise invalid(owner, name, value, f"use a number of seconds >= {MIN_INTERVAL_SECONDS:.0f}")
        if self.quoting_strategy not in QUOTING_STRATEGIES:
            raise invalid(owner, "quoting_strategy", self.quoting_strategy,
                          f"use one of {', '.join(QUOTING_STRATEGIES)}")
        if not is_number(self.offset_pct) or not 0 <= self.offset_pct <= MAX_OFFSET_PCT:
            raise invalid(owner, "offset_pct", self.offset_pct, f"use a percentage within 0..{MAX_OFFSET_PCT:.0f}")
        if not is_int(self.reprice_threshold_ticks) or self.reprice_threshold_ticks < 1:
            raise invalid(owner, "reprice_threshold_ticks", self.reprice_threshold_ticks, "use an int >= 1")
        if not is_int(self.aggressive_attempts) or self.aggressive_attempts < 0:
            raise invalid(owner, "aggressive_attempts", self.aggressive_attempts,
                          "use an int >= 0 (0 disables the aggressive fallback)")
        if not is_number(self.aggressive_wait_seconds) or self.aggressive_wait_seconds <= 0:
            raise invalid(owner, "aggressive_wait_seconds", self.aggressive_wait_seconds,
                          "use a number of seconds > 0")
        if not is_number(self.min_order_qty) or self.min_order_qty < LOT or not _on_lot(self.min_order_qty):
            raise invalid(owner, "min_order_qty", self.min_order_qty, f"use a multiple of the {LOT} lot, >= {LOT}")
        if not is_number(self.grace_seconds) or self.grace_seconds < 0:
            raise invalid(owner, "grace_seconds", self.grace_seconds, "use a number of seconds >= 0")


# =====================================================================================
# Pure rules (unit-tested on their own)
# =====================================================================================


def chunk_targets(total: float, chunk_count: int, lot: float = LOT, *, min_order: float = 0.0) -> list[float]:
    """Cumulative per-chunk targets: ``max(floor_lot(total × k / N), min(total, k × min_order))``
    for k < N, then exactly the total.

    ``lot`` is the leg's own quantity step (an ETH option's 0.1): every target is on it.
    ``min_order`` is the leg's minimum order (``leg_min_order``). Without that floor a leg with
    fewer minimum orders than chunks (one lot in 20 chunks) has a target of 0, or a piece below
    its minimum, in its early chunks: the least-filled leg's one-minimum-order step is cut to
    that target, the small leg stays behind, and the balance cap holds every other leg with
    it until the last chunk, which then cannot do the rest (the open ends PARTIAL). With it, a
    small leg may step one minimum order per chunk; the balance cap still holds it back when
    it is ahead. A leg with at least one minimum order per chunk (``total / N >= min_order``)
    keeps its floored targets: ``floor_lot(total × k / N) >= k × min_order`` there.
    """
    if not is_int(chunk_count) or chunk_count < 1:
        raise ValueError(f"chunk_count must be an int >= 1, got {chunk_count!r}")
    whole = snap_qty(total, lot)
    exact = Decimal(repr(whole))
    step = Decimal(repr(snap_qty(min_order, lot)))
    targets = [max(snap_qty(float(exact * k / chunk_count), lot), min(whole, snap_qty(float(step * k), lot)))
               for k in range(1, chunk_count)]
    return targets + [whole]


def filled_fraction(filled: float, total: float, lot: float = LOT) -> float:
    """How much of its total a leg has filled (a leg with less than one ``lot`` to do counts as done)."""
    if total < lot:
        return 1.0
    return min(1.0, max(0.0, filled / total))


def balance_cap(total: float, lowest_fraction: float, chunk_count: int, lot: float = LOT) -> float:
    """The most a leg may have filled: its fraction stays within ``1/N`` of the least-filled leg.

    ``floor_lot(total × min(1, lowest + 1/N))`` on the leg's own ``lot``; floored so the cap
    is never exceeded.
    """
    if not is_int(chunk_count) or chunk_count < 1:
        raise ValueError(f"chunk_count must be an int >= 1, got {chunk_count!r}")
    fraction = min(1.0, max(0.0, lowest_fraction) + 1.0 / chunk_count)
    return min(snap_qty(total, lot), snap_qty(total * fraction, lot))


def leg_min_order(min_order_qty: float, lot: float = LOT) -> float:
    """The smallest working order of a leg on ``lot``: ``min_order_qty`` rounded UP to the lot, at least one lot.

    ``min_order_qty`` is validated on the 0.01 lot; an ETH option leg (lot 0.1) cannot send
    0.05, so its minimum is 0.1. On the 0.01 lot the configured value is returned unchanged.
    """
    if _on_lot(min_order_qty, lot):
        return max(min_order_qty, lot)
    lot_d = Decimal(repr(lot))
    lots = (Decimal(repr(min_order_qty)) / lot_d).to_integral_value(rounding=ROUND_CEILING)
    return max(float(lots * lot_d), lot)


def _usable(price: float | None) -> float | None:
    return price if is_number(price) and price > 0 else None


def passive_price(strategy: str, side: int, *, bid: float | None, ask: float | None, mark: float | None,
                  tick: float, offset_pct: float = 0.0) -> float | None:
    """The resting price of a leg under ``strategy``, snapped; None when its input is missing.

    ``top_of_book``: buy joins the bid, sell the ask. ``top_of_book_offset``: buy
    ``min(bid × (1 + off%), ask − tick)``, sell ``max(ask × (1 − off%), bid + tick)`` (the
    far-side bound applies when that side exists). ``mid``: both sides needed. ``mark``: the
    chain mark only; the book is not consulted.
    """
    side = Side.of(side)
    if strategy not in QUOTING_STRATEGIES:
        raise ValueError(f"unknown quoting strategy {strategy!r}")
    b, a, m = _usable(bid), _usable(ask), _usable(mark)
    raw: float | None
    if strategy == "mark":
        raw = m
    elif strategy == "mid":
        raw = (b + a) / 2.0 if b is not None and a is not None else None
    elif strategy == "top_of_book":
        raw = b if side is Side.BUY else a
    elif side is Side.BUY:
        raw = None if b is None else b * (1.0 + offset_pct / 100.0)
        if raw is not None and a is not None:
            raw = min(raw, a - tick)
    else:
        raw = None if a is None else a * (1.0 - offset_pct / 100.0)
        if raw is not None and b is not None:
            raw = max(raw, b + tick)
    usable = _usable(raw)
    if usable is None:
        return None
    return snap_price(usable, tick, side)


def aggressive_price(side: int, *, bid: float | None, ask: float | None, tick: float) -> float | None:
    """Cross the spread: buy at the best ask, sell at the best bid; None when that side is empty."""
    side = Side.of(side)
    touch = _usable(ask if side is Side.BUY else bid)
    return None if touch is None else snap_price(touch, tick, side)


def touch_without_own(levels: Sequence[tuple[float, float]], own_price: float | None,
                      own_qty: float) -> float | None:
    """Best price of one book side after removing our own resting quantity at ``own_price``.

    The public book shows our resting order; quoting against it would chase our own price
    (an offset quote would ratchet on every reprice).
    """
    for price, size in levels:
        if own_price is not None and own_qty > 0 and abs(price - own_price) < 1e-9:
            if size - own_qty > FILL_EPSILON:
                return price
            continue
        return price
    return None


# =====================================================================================
# The job
# =====================================================================================


@dataclass
class _Leg(LegWork):
    """A leg of a smart job: its chunk targets and the state of its passive and aggressive orders."""

    targets: list[float] = field(default_factory=list)
    aggressive: bool = False        # the current order crosses the spread (fallback round)
    replacing: bool = False         # a cancel is in progress; the replacement follows once final
    quoted_at: float | None = None  # last time the passive price was set or re-checked
    attempts: int = 0               # aggressive attempts used in the current chunk
    deadline: float | None = None   # aggressive order: cancel after this
    retry_at: float | None = None   # an unpriced aggressive attempt waits until this
    chunk_start_filled: float = 0.0  # fills when the current chunk began (progress check)
    rejections: int = 0


_QUOTING = "quoting"        # passive quotes of chunk k
_AGGRESSIVE = "aggressive"  # end of chunk k: cross the spread for the shortfall


class SmartExecutionJob(OrderBookJob[_Leg]):
    """BEHAVIOUR.md §6.3 as a tick-driven state machine (see the module docstring)."""

    _label = "smart job"
    _ACTIVE_PHASES = (PHASE_PRICING, _QUOTING, _AGGRESSIVE)
    _POLL_BEFORE_CANCEL = True      # at most once per step (``_poll``): a filled order needs no cancel
    _CONCLUDE_COMPLETE_BEFORE_GRACE = True   # grace is for an incomplete job's late fills (§8 row 9)

    def __init__(self, executor: "SmartOrderbookExecutor", trade: TradeRef, legs: Sequence[LegTarget], intent: Intent,
                 config: SmartExecConfig, *, best_effort: bool, started_at: float) -> None:
        super().__init__(ledger=executor.ledger, market=executor.market, trade=trade, intent=intent,
                         best_effort=best_effort, started_at=started_at,
                         max_requests=executor.max_requests_per_step,
                         legs=[_Leg(target=leg, total=snap_qty(leg.qty, leg.lot),
                                    targets=chunk_targets(leg.qty, config.chunk_count, leg.lot,
                                                          min_order=leg_min_order(config.min_order_qty, leg.lot)))
                               for leg in legs],
                         grace_seconds=config.grace_seconds)
        self.config = config
        self._chunk = 1
        self._chunk_started_at = started_at
        self._phase = _QUOTING if best_effort else PHASE_PRICING
        self._books: dict[str, Any] = {}
        self._own_in_book: dict[str, tuple[float | None, float]] = {}
        self._marks: dict[str, tuple[PriceBand, float | None] | None] = {}   # symbol -> (band, sane mark)

    def __repr__(self) -> str:
        return (f"SmartExecutionJob({self.trade_id}, {self.intent.name}, chunk {self._chunk}/"
                f"{self.config.chunk_count}, {self._phase}, {self._status.value})")

    # ---- public -----------------------------------------------------------------------

    @property
    def chunk(self) -> int:
        """The chunk being worked (1-based)."""
        return self._chunk

    # ---- the step ----------------------------------------------------------------------

    def _begin_step(self) -> None:
        """Books and chain rows are read at most once per step and symbol."""
        self._books = {}
        self._own_in_book = {}
        self._marks = {}

    def _step_active(self, now: float, budget: RequestBudget) -> None:
        if self._phase == PHASE_PRICING:
            self._step_pricing(now, budget)
        if self._phase == _QUOTING:
            self._step_quoting(now, budget)
        if self._phase == _AGGRESSIVE:
            self._step_aggressive(now, budget)

    def _conclusion_detail(self) -> str:
        return f" after chunk {self._chunk}/{self.config.chunk_count}"

    # ---- fills and quantities ----------------------------------------------------------

    def _lowest_fraction(self) -> float:
        fractions = [filled_fraction(self._filled(leg), leg.total, leg.lot)
                     for leg in self._legs if leg.total >= leg.lot]
        return min(fractions) if fractions else 1.0

    def _min_order(self, leg: _Leg) -> float:
        """The leg's smallest working order: ``min_order_qty`` rounded up to its lot (``leg_min_order``)."""
        return leg_min_order(self.config.min_order_qty, leg.lot)

    def _cap(self, leg: _Leg, filled: float) -> float:
        """Balance cap; the least-filled leg may always progress by one minimum order.

        The least-filled leg holds every other leg back, so it must always be able to send an
        order the exchange takes: its cap is at least ``min(total, filled + min_order_qty)``
        (``min_order_qty`` rounded up to the leg's lot, at least one lot). Without this, a small
        leg whose balance step ``floor_lot(total / N)`` is below its minimum order never places
        while the other legs fill their first chunk, and every open ends PARTIAL with a naked
        leg to unwind. The other legs stay within ``1 / chunk_count`` of the least-filled leg's
        fraction. Every quantity is on the leg's own lot.
        """
        lowest = self._lowest_fraction()
        cap = balance_cap(leg.total, lowest, self.config.chunk_count, leg.lot)
        if filled_fraction(filled, leg.total, leg.lot) <= lowest + 1e-12:
            cap = max(cap, min(leg.total, snap_qty(filled + self._min_order(leg), leg.lot)))
        return cap

    def _chunk_target(self, leg: _Leg) -> float:
        return leg.targets[self._chunk - 1]

    def _placeable_qty(self, leg: _Leg) -> float:
        """The quantity to work now: up to the chunk target and the balance cap, net of fills."""
        filled = self._filled(leg)
        desired = min(self._chunk_target(leg), self._cap(leg, filled))
        qty = snap_qty(max(0.0, desired - filled), leg.lot)
        if qty < leg.lot:
            return 0.0
        completes = filled + qty >= leg.total - FILL_EPSILON
        if qty < self._min_order(leg) - FILL_EPSILON and not completes:
            return 0.0
        return qty

    def _chunk_short(self, leg: _Leg) -> bool:
        """The leg missed the current chunk's target (pieces below its minimum order may wait)."""
        target = self._chunk_target(leg)
        need = snap_qty(max(0.0, target - self._filled(leg)), leg.lot)
        if need < leg.lot:
            return False
        return need >= self._min_order(leg) - FILL_EPSILON or target >= leg.total - FILL_EPSILON

    # ---- market data -------------------------------------------------------------------

    def _ensure_instrument(self, leg: _Leg, budget: RequestBudget) -> bool:
        """Tick and expiry of the leg's symbol, looked up once per job (the lookup is charged)."""
        if leg.tick is not None:
            return True
        budget.spend()
        return self._instrument(leg)

    def _frozen_now(self, leg: _Leg, now: float) -> bool:
        """No order from expiry − 15 min (BEHAVIOUR.md §4.5); once frozen, the leg stays frozen."""
        if not leg.frozen:
            leg.frozen = self._is_frozen(leg, now)
        return leg.frozen

    def _book(self, leg: _Leg, budget: RequestBudget) -> Any:
        """A fresh book (≤ 3 s), read at most once per step and symbol; None when unavailable."""
        symbol = leg.target.symbol
        if symbol not in self._books:
            budget.spend()
            try:
                book = self._market.order_book(symbol, max_age=BOOK_MAX_AGE_SECONDS)
            except TraderError as exc:
                leg.last_no_price = f"order book unavailable: {exc}"
                book = None
            self._books[symbol] = book
            # Decided now: a cancel later in this step does not take our order out of this book.
            self._own_in_book[symbol] = (None, 0.0) if book is None else self._own_resting(leg, book.as_of)
        return self._books[symbol]

    def _reference(self, leg: _Leg, budget: RequestBudget) -> tuple[PriceBand, float | None] | None:
        """The leg's sanity band and sane mark from the chain (≤ 30 s), read once per step and symbol.

        Every price this job sends is checked against the band (``price_sanity``, issue 9):
        a touch outside it is never priced from and the final price stays inside it. No row,
        or a row whose own underlying or IV is insane, means no band: the leg does not quote.
        """
        symbol = leg.target.symbol
        if symbol not in self._marks:
            # Not charged to the step budget: one chain call per expiry serves every symbol of
            # it for 30 s (MarketData's cache), so charging each leg would starve the books.
            reference: tuple[PriceBand, float | None] | None = None
            try:
                row = self._market.quote(symbol, max_age=MARK_MAX_AGE_SECONDS)
                band = band_of(row, symbol)
            except InsanePriceError as exc:
                leg.last_no_price = f"no sane reference for {symbol}: {exc}"
            except TraderError as exc:
                leg.last_no_price = f"no fresh chain row for {symbol}: {exc}"
            else:
                problem = mark_problem(row.mark, band)
                reference = (band, None if problem else float(row.mark))
                if problem is not None:
                    leg.last_no_price = f"no sane mark on {symbol}: {problem}"
            self._marks[symbol] = reference
        return self._marks[symbol]

    @staticmethod
    def _inside(band: PriceBand, price: float | None) -> float | None:
        """A touch the band believes, or None (an insane side is treated as empty)."""
        return price if price is not None and band.contains(price) else None

    def _crossed(self, leg: _Leg, bid: float | None, ask: float | None) -> bool:
        """True (and the reason recorded) when the sane touches cross: the leg is unpriced.

        A bid at or above the ask means one of the levels is wrong, even when both lie inside
        the wide sanity band; quoting from either could join a bid far above the mark.
        """
        problem = crossed_problem(bid, ask)
        if problem is None:
            return False
        leg.last_no_price = f"{leg.target.symbol}: {problem}"
        logger.debug("smart job %s leg %d: %s; no price this step", self.trade_id, leg.index, leg.last_no_price)
        return True

    @staticmethod
    def _keep_inside(band: PriceBand, price: float | None, side: int, tick: float) -> float | None:
        """A buy never above the band, a sell never below it, snapped on the safe side."""
        if price is None:
            return None
        return snap_price(band.clamp_buy(price) if side == Side.BUY else band.clamp_sell(price), tick, side)

    def _passive_price(self, leg: _Leg, budget: RequestBudget) -> float | None:
        if not self._ensure_instrument(leg, budget):
            return None
        reference = self._reference(leg, budget)
        if reference is None:
            return None
        band, sane_mark = reference
        side = leg.target.side
        strategy = self.config.quoting_strategy
        if strategy == "mark":
            mark = sane_mark
            bid = ask = None
        else:
            book = self._book(leg, budget)
            if book is None:
                return None
            own_price, own_qty = self._own_in_book[leg.target.symbol]
            bid = self._inside(band, touch_without_own(book.bids, own_price if side == Side.BUY else None, own_qty))
            ask = self._inside(band, touch_without_own(book.asks, own_price if side == Side.SELL else None, own_qty))
            if self._crossed(leg, bid, ask):
                return None
            mark = None
        # The ignores below: leg.tick is set by _ensure_instrument above (mypy cannot see it).
        price = passive_price(strategy, side, bid=bid, ask=ask, mark=mark, tick=leg.tick,  # type: ignore[arg-type]
                              offset_pct=self.config.offset_pct)
        if price is None and strategy != "mark":
            needed = "bid and ask" if strategy == "mid" else ("bid" if side == Side.BUY else "ask")
            leg.last_no_price = f"no {needed} on {leg.target.symbol} to quote {strategy} (an insane one counts as none)"
        return self._keep_inside(band, price, side, leg.tick)  # type: ignore[arg-type]

    @staticmethod
    def _own_resting(leg: _Leg, book_as_of: float) -> tuple[float | None, float]:
        """Price and open quantity of our order as a book read at ``book_as_of`` may show it.

        A live order is in the book; a just-cancelled one still is in a book fetched (and
        cached by MarketData) before we saw it final. Orders that never rested are not.
        """
        order = leg.order
        if order is None or order.status in (OrderStatus.REJECTED, OrderStatus.NOT_PLACED):
            return None, 0.0
        if order.status.is_final and order.updated_at <= book_as_of:
            return None, 0.0
        return order.price, max(0.0, order.qty - order.filled_qty)

    def _aggressive_price(self, leg: _Leg, budget: RequestBudget) -> float | None:
        if not self._ensure_instrument(leg, budget):
            return None
        reference = self._reference(leg, budget)
        if reference is None:
            return None
        band = reference[0]
        book = self._book(leg, budget)
        if book is None:
            return None
        side = leg.target.side
        bid, ask = self._inside(band, book.best_bid), self._inside(band, book.best_ask)
        if self._crossed(leg, bid, ask):
            return None
        # The ignores below: leg.tick is set by _ensure_instrument above (mypy cannot see it).
        price = aggressive_price(side, bid=bid, ask=ask, tick=leg.tick)  # type: ignore[arg-type]
        if price is None:
            leg.last_no_price = (f"no {'ask' if side == Side.BUY else 'bid'} on {leg.target.symbol} to cross "
                                 f"(an insane one counts as none)")
        return self._keep_inside(band, price, side, leg.tick)  # type: ignore[arg-type]

    # ---- order plumbing ----------------------------------------------------------------

    def _poll(self, leg: _Leg, now: float, budget: RequestBudget) -> None:
        """Poll the leg's order once per step (an order placed this step is not polled)."""
        order = leg.order
        if order is None or leg.polled_at == now:
            return
        budget.spend()
        self._ledger.poll(order)
        leg.polled_at = now

    def _place(self, leg: _Leg, qty: float, price: float, now: float, budget: RequestBudget, *,
               aggressive: bool) -> bool:
        """Place through the ledger (see ``OrderBookJob._send_order``); False when nothing rests."""
        budget.spend()
        order = self._send_order(leg, qty, price)
        if order is None:
            leg.rejections += 1
            return False
        leg.aggressive = aggressive
        leg.polled_at = now
        leg.rejections = leg.rejections + 1 if order.status is OrderStatus.REJECTED else 0
        logger.debug("smart job %s leg %d chunk %d: %s %s %.2f @ %s", self.trade_id, leg.index, self._chunk,
                     "aggressive" if aggressive else self.config.quoting_strategy,
                     leg.target.side.name.lower(), qty, price)
        return order.status is not OrderStatus.REJECTED

    def _blocked(self, leg: _Leg) -> bool:
        return leg.rejections >= MAX_CONSECUTIVE_REJECTIONS

    def _for_each_leg(self, now: float, budget: RequestBudget, work: Any) -> bool:
        """Run ``work(leg, now, budget)`` for every leg; False if the ledger cap stopped the job."""
        for leg in self._rotated():
            try:
                work(leg, now, budget)
            except OutOfBudget:
                continue
            except LedgerCapError as exc:
                self._begin_finishing(f"ledger cap: {exc}")
                return False
        return True

    # ---- phases --------------------------------------------------------------------------

    def _step_pricing(self, now: float, budget: RequestBudget) -> None:
        """Open: no order until every leg can be quoted (§8 row 6); FAILED after one chunk's time."""
        unpriced: list[_Leg] = []
        for leg in self._legs:
            if leg.total < leg.lot:
                continue
            try:
                if self._ensure_instrument(leg, budget) and self._frozen_now(leg, now):
                    self._finish_without_orders(f"leg {leg.index} ({leg.target.symbol}) is frozen before expiry")
                    return
                if self._passive_price(leg, budget) is None:
                    unpriced.append(leg)
            except OutOfBudget:
                unpriced.append(leg)
        if not unpriced:
            self._begin_chunk(1, now)
            return
        if now - self.started_at >= self.config.time_per_chunk_seconds:
            detail = "; ".join(leg.last_no_price or f"leg {leg.index} unpriced" for leg in unpriced)
            self._finish_without_orders(f"no price within {self.config.time_per_chunk_seconds:.0f} s: {detail}")

    def _begin_chunk(self, chunk: int, now: float) -> None:
        self._chunk = chunk
        self._chunk_started_at = now
        self._phase = _QUOTING
        for leg in self._legs:
            leg.attempts = 0
            leg.deadline = None
            leg.retry_at = None
            leg.chunk_start_filled = self._filled(leg)
        logger.info("smart job %s %s: chunk %d/%d (targets %s)", self.trade_id, self.intent.name, chunk,
                    self.config.chunk_count, ", ".join(fmt_qty(leg.targets[chunk - 1]) for leg in self._legs))

    def _step_quoting(self, now: float, budget: RequestBudget) -> None:
        if now >= self._chunk_started_at + self.config.time_per_chunk_seconds:
            self._phase = _AGGRESSIVE
            return
        for leg in self._legs:
            self._frozen_now(leg, now)  # no request: the expiry is known once the leg was priced
        if not self._for_each_leg(now, budget, self._quote_leg):
            return
        if self._all_complete() and not any(leg.live for leg in self._legs):
            self._conclude("")
            return
        if not self.best_effort:
            frozen = [leg for leg in self._legs if leg.frozen and not self._complete(leg)]
            if frozen:
                self._begin_finishing(f"leg {frozen[0].index} ({frozen[0].target.symbol}) frozen before expiry")

    def _quote_leg(self, leg: _Leg, now: float, budget: RequestBudget) -> None:
        order = leg.order
        if order is not None and not order.status.is_final:
            if not (leg.replacing or order.status is OrderStatus.CANCEL_REQUESTED):
                self._poll(leg, now, budget)
                if not order.status.is_final and not self._reprice_wanted(leg, now, budget):
                    return
                leg.replacing = not order.status.is_final
            if not self._cancel_until_final(leg, now, budget):
                return
            leg.replacing = False
        self._place_passive(leg, now, budget)

    def _reprice_wanted(self, leg: _Leg, now: float, budget: RequestBudget) -> bool:
        """Every reprice interval: replace when the target moved ≥ threshold ticks, or when the
        balance cap now allows a larger working quantity than the order has left."""
        order = leg.order
        assert order is not None
        if order.status not in (OrderStatus.LIVE, OrderStatus.PARTIAL) or leg.frozen:
            return False  # UNKNOWN is resolved by polling first; a frozen leg gets no replacement
        if leg.quoted_at is not None and now - leg.quoted_at < self.config.reprice_interval_seconds:
            return False
        price = self._passive_price(leg, budget)
        leg.quoted_at = now
        if price is None:
            return False  # keep the order priced on valid data; no new price is invented
        # leg.tick is set: a price was computed, which needs the instrument (mypy cannot see it).
        moved = abs(price - order.price) >= self.config.reprice_threshold_ticks * leg.tick - 1e-9  # type: ignore[operator]
        open_qty = snap_qty(max(0.0, order.qty - order.filled_qty), leg.lot)
        grows = self._placeable_qty(leg) - open_qty >= leg.lot - FILL_EPSILON
        if moved or grows:
            logger.debug("smart job %s leg %d: reprice %s -> %s%s", self.trade_id, leg.index, order.price, price,
                         " (larger quantity allowed)" if grows else "")
        return moved or grows

    def _place_passive(self, leg: _Leg, now: float, budget: RequestBudget) -> None:
        if leg.total < leg.lot or self._blocked(leg) or not self._late_fill_settled(leg, now, budget):
            return
        if not self._ensure_instrument(leg, budget) or self._frozen_now(leg, now):
            return
        qty = self._placeable_qty(leg)
        if qty < leg.lot:
            return
        price = self._passive_price(leg, budget)
        if price is None:
            return
        if self._place(leg, qty, price, now, budget, aggressive=False):
            leg.quoted_at = now

    def _step_aggressive(self, now: float, budget: RequestBudget) -> None:
        if not self._for_each_leg(now, budget, self._aggressive_leg):
            return
        if not all(self._settled(leg, now) for leg in self._legs):
            return
        if self._all_complete():
            self._conclude("")
            return
        short = [leg for leg in self._legs if self._chunk_short(leg)]
        stalled = [leg for leg in short if self._stalled(leg)]
        if stalled or self._chunk >= self.config.chunk_count:
            self._begin_finishing(self._shortfall_reason(stalled or short))
            return
        if short:
            # Progress was made: the lagging leg may catch up; the balance cap holds the others.
            logger.info("smart job %s: %s behind after chunk %d; continuing", self.trade_id,
                        ", ".join(f"leg {leg.index} at {self._filled(leg):.2f}/{self._chunk_target(leg):.2f}"
                                  for leg in short), self._chunk)
        self._begin_chunk(self._chunk + 1, now)

    def _stalled(self, leg: _Leg) -> bool:
        """No fill in the whole chunk, passive or aggressive, and not merely held back by the cap:
        the leg has no usable liquidity, so more chunks would only add exposure on the others."""
        filled = self._filled(leg)
        if filled > leg.chunk_start_filled + FILL_EPSILON:
            return False
        return self._cap(leg, filled) >= self._chunk_target(leg) - FILL_EPSILON

    def _shortfall_reason(self, short: list[_Leg]) -> str:
        if not short:
            return f"incomplete after chunk {self._chunk}/{self.config.chunk_count}"
        leg = min(short, key=lambda item: filled_fraction(self._filled(item), item.total, item.lot))  # the laggard
        detail = f"; {leg.last_no_price}" if leg.last_no_price else ""
        why = "frozen before expiry" if leg.frozen else (
            "orders rejected" if self._blocked(leg) else f"after {leg.attempts} aggressive attempts")
        if self._stalled(leg):
            why += " (no fill in the whole chunk)"
        return (f"leg {leg.index} ({leg.target.symbol}) filled {self._filled(leg):.2f} of the chunk "
                f"{self._chunk}/{self.config.chunk_count} target {self._chunk_target(leg):.2f} {why}{detail}")

    def _aggressive_leg(self, leg: _Leg, now: float, budget: RequestBudget) -> None:
        order = leg.order
        if order is not None and not order.status.is_final:
            resting = leg.aggressive and not leg.replacing and order.status is not OrderStatus.CANCEL_REQUESTED
            if resting:
                self._poll(leg, now, budget)
                if not order.status.is_final and leg.deadline is not None and now < leg.deadline:
                    return
            # A passive leftover of the chunk, or an aggressive order past its deadline.
            leg.replacing = not order.status.is_final
            if not self._cancel_until_final(leg, now, budget):
                return
            leg.replacing = False
        if leg.total < leg.lot or self._blocked(leg) or leg.attempts >= self.config.aggressive_attempts:
            return
        if leg.retry_at is not None and now < leg.retry_at:
            return
        if not self._late_fill_settled(leg, now, budget):
            return
        if leg.tick is not None and self._frozen_now(leg, now):
            return
        qty = self._placeable_qty(leg)
        if qty < leg.lot:
            return
        if budget.left < (2 if leg.tick is not None else 3):
            raise OutOfBudget  # (instrument,) book and place: an attempt is never half spent
        price = self._aggressive_price(leg, budget)
        leg.attempts += 1
        leg.retry_at = now + self.config.aggressive_wait_seconds
        if price is None:
            logger.info("smart job %s leg %d: aggressive attempt %d unpriced: %s", self.trade_id, leg.index,
                        leg.attempts, leg.last_no_price)
            return
        if leg.tick is not None and self._frozen_now(leg, now):
            return
        leg.retry_at = None
        if self._place(leg, qty, price, now, budget, aggressive=True):
            leg.deadline = now + self.config.aggressive_wait_seconds

    def _settled(self, leg: _Leg, now: float) -> bool:
        """Nothing more to do for this leg in this chunk's fallback."""
        if leg.live:
            return False
        if leg.total < leg.lot or self._placeable_qty(leg) < leg.lot or leg.frozen or self._blocked(leg):
            return True
        if leg.attempts >= self.config.aggressive_attempts:
            return leg.retry_at is None or now >= leg.retry_at
        return False


class SmartOrderbookExecutor:
    """Starts smart jobs (BEHAVIOUR.md §6.3). ``start`` sends nothing; ``advance`` does the work.

    Opening (intent OPEN) and closing (CLOSE / UNWIND / KILL) use the same algorithm;
    reduce-only comes from the intent through the ledger.
    """

    def __init__(self, ledger: Ledger, market: PriceSource, clock: Clock, *, max_requests_per_step: int = 6) -> None:
        require("SmartOrderbookExecutor ledger", ledger, Ledger)
        require("SmartOrderbookExecutor market", market, PriceSource)
        require("SmartOrderbookExecutor clock", clock, Clock)
        if not is_int(max_requests_per_step) or max_requests_per_step < 3:
            raise ValueError("max_requests_per_step must be an int >= 3 (book, price and place in one step)")
        self.ledger = ledger
        self.market = market
        self.clock = clock
        self.max_requests_per_step = max_requests_per_step

    def __repr__(self) -> str:
        return f"SmartOrderbookExecutor(max_requests_per_step={self.max_requests_per_step})"

    def start(self, trade: TradeRef, legs: list[LegTarget], intent: Intent, params: Any, *,
              best_effort: bool = False) -> SmartExecutionJob:
        """A job for ``legs``; ``params`` is a SmartExecConfig (anything else → the defaults).

        Each leg is chunked and balanced on its own lot (``LegTarget.lot``: BTC options 0.01,
        ETH options 0.1). Refuses (``ValueError``, before any order) a perpetual leg: this
        engine is for option structures. Strategy configuration already routes perpetual legs
        to the limit engine (``StrategyConfig._check_perpetual_legs``, ``route_trade``); this
        keeps the engine failing closed if one ever reaches it.
        """
        legs = checked_legs(legs)
        perps = [leg for leg in legs if is_perpetual_symbol(leg.symbol)]
        if perps:
            detail = ", ".join(f"leg {leg.leg_index} ({leg.symbol}) is a perpetual (lot {leg.lot:g})" for leg in perps)
            raise ValueError(f"the smart engine trades option legs only; {detail}: use the limit engine")
        if isinstance(params, SmartExecConfig):
            config = params
        else:
            if params is not None:
                logger.info("smart executor got %s, not a SmartExecConfig: using the defaults",
                            type(params).__name__)
            config = SmartExecConfig()
        return SmartExecutionJob(self, trade, legs, Intent(intent), config, best_effort=best_effort,
                                 started_at=self.clock.now())
