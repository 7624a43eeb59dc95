"""RFQ (block trade) execution: ask makers for one price on the whole structure.

Why it is built this way (BEHAVIOUR.md §1.3, §6.4, §8 rows 28-31, 37; API.md §10, §11.5-§11.7):

* A quote is only worth taking if it beats the screen, so every leg is measured against the
  book side WE would hit (a buy pays the ask, a sell receives the bid). Using the wrong side
  makes any quote look like a bargain; a missing side means there is no baseline at all, and
  then the improvement gate cannot pass (unless the strategy disabled it).
* Quote legs carry the MAKER's side. A quote is kept only if, on every leg, the maker does
  the opposite of what we want; a maker's mirrored (two-way) quote, or one mirrored leg of a
  mixed structure, would trade us the wrong way and is discarded leg by leg.
* The exchange refuses single-leg SELL RFQs: we ask as BUY and take a quote in which the maker
  BUYs, so the direction we want (SELL) is what the quote check uses.
* Accept is not idempotent. Only a coded exchange answer that proves the accept did nothing
  (``definitely_refused``) lets the next candidate be tried (still gated). Everything else (no
  answer, a timeout, HTTP 429 or another throttle, a code whose outcome is unknown, any
  unexpected error) is AMBIGUOUS: nothing is ever accepted again in this job, and the block
  trade is looked for in the private block-trade list (page after page, back to the RFQ's
  creation: the list is ordered by quote, not by trade time) and, when that list cannot be
  read, in our fill history. An accept that answered without every leg readable is AMBIGUOUS
  too: an answer proves nothing about a leg it does not show.
* A block trade is all-or-nothing: only every leg booked (or proven on the wrong side) ends
  the job. Evidence of some of its legs (a leg read from the accept answer, our record with
  a leg unreadable) proves the others traded too, so the job never ends PARTIAL or FAILED
  for a leg missing from the evidence, never calls such an accept "not accepted", and keeps
  looking. A fill above a leg's planned quantity is never booked.
* The fill history is only a hint (nothing in a fill row names the RFQ): the legs not yet
  booked are booked from it together or not at all, each from exactly one block fill of its
  symbol, side and planned quantity after the accept, from a read that reached its last page.
* Evidence before belief: "not accepted" is concluded only from a block-trade list read that
  answered, was begun at least ``AMBIGUOUS_RESOLVE_SECONDS`` after the accept, and was read
  back past the RFQ's creation (or to the list's end) without finding it. A failed or
  unfinished read is no evidence; while none has answered, the job stays WORKING in
  AMBIGUOUS, keeps looking every poll interval and says so once at CRITICAL, so the trade is
  never forgotten with a block trade possibly on the exchange. Even then an OPEN never falls
  back: a verdict drawn from a list's silence must not open the legs a second time. Closes,
  unwinds and kills may (reduce-only engines).
* A block trade carries no reduce-only flag: closing by RFQ a quantity the account does not
  hold would flip the position. A reducing job therefore reads the positions right before it
  creates the RFQ and again right before each accept, and uses the RFQ only when every leg's
  position has the sign the trade holds and at least the quantity to close. A failed, empty
  or different read sends the legs to the reduce-only fallback engine (limit when none is
  configured): a close never fails for that reason alone.
* Every block fill is written to the ``OrderLedger`` (``record_block_fill``) from the accept
  response's taker-side legs, matched by ``instrumentName``, never by position, with the
  string values parsed: the lifecycle sees RFQ fills exactly like order fills. A leg filled
  on the side we did not ask for is never booked as ours: CRITICAL, and the job does not end
  FILLED.
* No quote in time -> cancel the RFQ (never after a fill) -> the configured fallback engine
  runs the same legs inside this same job, or the job fails. Everything is a deadline
  checked in ``advance(now)`` with a bounded number of requests, so one trade waiting on
  makers never delays another trade's exits; quotes ranked in a step that ran out of
  requests are accepted in the next one.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Iterable, Mapping, Sequence, TypeGuard

from api_values import int_or_none
from clock import Clock
from coincall_payloads import (
    BlockLeg,
    BlockTrade,
    ExchangeFill,
    ExchangeOrder,
    PositionSnapshot,
    Quote,
    history_filters,
    next_page_filters,
    parse_accept_legs,
    parse_block_trade_page,
    parse_fill_page,
    parse_order,
    parse_positions,
    parse_quotes,
    parse_rfq_created,
    rfq_leg,
)
from contracts import Side
from display import fmt, fmt_duration, fmt_qty
from price_sanity import InsanePriceError, PriceBand, band_of, side_problem
from errors import (
    ExchangeError,
    RateLimitedError,
    SelectionError,
    TraderError,
    TransportError,
)
from execution_job import (
    BOOK_MAX_AGE_SECONDS,
    MARK_MAX_AGE_SECONDS,
    ExecutionJob,
    FillResult,
    JobStatus,
    LegFill,
    LegTarget,
    RequestBudget,
    checked_legs,
)
from fees import option_taker_fee
from order_ledger import LOT, Intent, LedgerOrder, snap_qty, summarize_fills
from seams import (
    ExecutionEngine,
    Ledger,
    PriceSource,
    ReconcilerClient,
    ReconcilerLedger,
    RfqClient,
    TradeRef,
    require,
    require_optional,
)
from trade_execution import ExecutionParams
from validation import invalid, is_number

logger = logging.getLogger(__name__)

FALLBACK_MODES: tuple[str | None, ...] = (None, "limit", "smart")
AMBIGUOUS_RESOLVE_SECONDS = 60.0
QTY_MATCH_TOLERANCE = 1e-9
# The block-trade list is read newest first, BLOCKTRADE_PAGE_SIZE records a page (well inside
# the documented limit of 499, so a shorter page is the end of the list), back to the RFQ's
# creation less BLOCKTRADE_SLACK_SECONDS (our clock against the exchange's record times), and
# never more than BLOCKTRADE_MAX_PAGES pages: a list we could not read to that point proves
# nothing. Why the creation and not the accept: the list is ordered by id, and a block trade's
# id is its quote's (API.md 10.3), so a quote made after ours but traded well before our
# accept sorts above ours. Its quote, hence its trade, still came after our RFQ was created:
# a record older than that proves ours is not further down.
BLOCKTRADE_PAGE_SIZE = 50
BLOCKTRADE_MAX_PAGES = 20
BLOCKTRADE_SLACK_SECONDS = 30.0
HISTORY_SLACK_SECONDS = 5.0
HISTORY_MAX_PAGES = 4     # fill-history pages read in one lookup; a read cut short there is no evidence
# Asked for explicitly: a page without ``hasNext`` is read on when it is full (``Page.more``).
HISTORY_PAGE_SIZE = 100
MAX_CANCEL_ATTEMPTS = 3
BLOCK_TRADE_TYPE = 14
RFQ_PARAMS = "RFQParams"


# =====================================================================================
# Parameters
# =====================================================================================


@dataclass(frozen=True)
class RFQParams:
    """RFQ tunables (BEHAVIOUR.md §1.3); validated at construction, never silently corrected.

    ``min_improvement_pct=None`` disables the screen gate (any well-formed quote may be taken).
    ``open_fallback`` / ``close_fallback`` name the engine that takes over the same legs when
    no quote is accepted: ``None`` (fail), ``"limit"`` or ``"smart"``.
    """

    timeout_seconds: float = 60.0
    poll_interval_seconds: float = 3.0
    min_improvement_pct: float | None = 0.0
    min_quote_life_seconds: float = 1.0
    open_fallback: str | None = None
    close_fallback: str | None = "limit"

    def __post_init__(self) -> None:
        owner = RFQ_PARAMS
        if not is_number(self.timeout_seconds) or self.timeout_seconds <= 0:
            raise invalid(owner, "timeout_seconds", self.timeout_seconds, "must be a number > 0 (seconds)")
        if not is_number(self.poll_interval_seconds) or self.poll_interval_seconds <= 0:
            raise invalid(owner, "poll_interval_seconds", self.poll_interval_seconds, "must be a number > 0 (seconds)")
        if self.min_improvement_pct is not None and not is_number(self.min_improvement_pct):
            raise invalid(owner, "min_improvement_pct", self.min_improvement_pct,
                          "must be a finite number (percent) or None to disable the gate")
        if not is_number(self.min_quote_life_seconds) or self.min_quote_life_seconds < 0:
            raise invalid(owner, "min_quote_life_seconds", self.min_quote_life_seconds,
                          "must be a number >= 0 (seconds)")
        for name in ("open_fallback", "close_fallback"):
            value = getattr(self, name)
            if value not in FALLBACK_MODES:
                raise invalid(owner, name, value, "use None, 'limit' or 'smart'")

    def fallback_for(self, intent: Intent) -> str | None:
        """Opens use ``open_fallback``; closes, unwinds and kills use ``close_fallback``."""
        return self.open_fallback if Intent(intent).family() is Intent.OPEN else self.close_fallback


# =====================================================================================
# Pure pieces: baseline, quotes, the gate
# =====================================================================================


def leg_baseline(side: int, qty: float, best_bid: float | None, best_ask: float | None) -> float | None:
    """What one leg costs on the screen for the side WE take (+ = we pay); None if that side is empty.

    A buy pays the best ask (+ask x qty), a sell receives the best bid (-bid x qty) (API.md §11.7).
    """
    if Side.of(side) is Side.BUY:
        return qty * best_ask if best_ask is not None and best_ask > 0 else None
    return -qty * best_bid if best_bid is not None and best_bid > 0 else None


def structure_baseline(legs: Sequence[LegTarget], books: Mapping[str, Any],
                       bands: Mapping[str, PriceBand]) -> float | None:
    """B = sum of the legs' screen costs; None as soon as one needed side (or book) is missing,
    or a needed touch is not believable (no sane band, or outside it): a glitched screen must
    never make a maker's quote look like an improvement."""
    parts: list[float] = []
    for leg in legs:
        book, band = books.get(leg.symbol), bands.get(leg.symbol)
        if book is None or band is None:
            return None
        buying = leg.side == Side.BUY
        touch = book.best_ask if buying else book.best_bid
        if side_problem("ask" if buying else "bid", touch, band) is not None:
            return None
        part = leg_baseline(leg.side, snap_qty(leg.qty), book.best_bid, book.best_ask)
        if part is None:
            return None
        parts.append(part)
    return math.fsum(parts)


def request_legs(legs: Sequence[LegTarget]) -> list[dict[str, str]]:
    """The create-RFQ legs: our sides, qty as strings; a single-leg SELL is asked as BUY (API.md §11.6)."""
    single = len(legs) == 1
    out = []
    for leg in legs:
        side = Side.BUY if single else Side.of(leg.side)
        out.append(rfq_leg(leg.symbol, side, qty_text(snap_qty(leg.qty))))
    return out


def qty_text(qty: float) -> str:
    """A lot quantity as the plain decimal string RFQ legs use ("0.5", "1", "10")."""
    text = format(qty, ".2f").rstrip("0").rstrip(".")
    return text or "0"


def improvement_pct(baseline: float | None, cost: float) -> float | None:
    """(B - Q) / |B| x 100: positive = better than the screen, for debits and credits alike."""
    if baseline is None or abs(baseline) < 1e-12:
        return None
    return (baseline - cost) / abs(baseline) * 100.0


def quote_problem(quote: Quote, legs: Sequence[LegTarget], now: float, min_life_seconds: float,
                  bands: Mapping[str, PriceBand]) -> str | None:
    """Why the quote cannot be taken, or None if it is well-formed for our legs, alive long enough,
    and every leg price is believable (inside that leg's sanity band; no band, no accept)."""
    if quote.state != "OPEN":
        return f"state {quote.state or '?'}"
    if quote.expiry_time is None:
        # Fail closed: a quote whose remaining life cannot be read cannot pass the life check.
        return "no readable expiryTime: its remaining life cannot be checked"
    if quote.expiry_time - now < min_life_seconds:
        return f"{quote.expiry_time - now:.1f} s of life left"
    wanted = {leg.symbol: leg for leg in legs}
    seen: set[str] = set()
    for quote_leg in quote.legs:
        ours = wanted.get(quote_leg.symbol)
        if ours is None or quote_leg.symbol in seen:
            return f"instrument {quote_leg.symbol} is not one of our legs (or repeated)"
        seen.add(quote_leg.symbol)
        if abs(quote_leg.qty - snap_qty(ours.qty)) > QTY_MATCH_TOLERANCE:
            return f"{quote_leg.symbol} quantity {quote_leg.qty} != {snap_qty(ours.qty)}"
        if quote_leg.maker_side != Side.of(ours.side).opposite:
            return f"{quote_leg.symbol}: maker {quote_leg.maker_side.name} would trade us the wrong way"
        band = bands.get(quote_leg.symbol)
        if band is None:
            return f"{quote_leg.symbol}: no sane reference price to check the quote against"
        if quote_leg.price <= 0 or not band.contains(quote_leg.price):
            return f"{quote_leg.symbol}: " + (band.problem("quoted price", quote_leg.price)
                                               or f"quoted price {quote_leg.price:g} is not positive")
    if seen != set(wanted):
        return f"missing legs {sorted(set(wanted) - seen)}"
    return None


@dataclass(frozen=True)
class Candidate:
    """A quote that passed every check and the gate."""

    quote: Quote
    cost: float
    improvement: float | None


def rank_candidates(quotes: Iterable[Quote], legs: Sequence[LegTarget], baseline: float | None,
                    params: RFQParams, now: float, exclude: Iterable[str] = (), *,
                    bands: Mapping[str, PriceBand]) -> list[Candidate]:
    """Kept quotes that pass the gate, cheapest debit / largest credit first (Q ascending)."""
    skip = set(exclude)
    out: list[Candidate] = []
    for quote in quotes:
        if quote.quote_id in skip:
            continue
        problem = quote_problem(quote, legs, now, params.min_quote_life_seconds, bands)
        if problem is not None:
            logger.debug("quote %s discarded: %s", quote.quote_id, problem)
            continue
        cost = quote.cost
        improvement = improvement_pct(baseline, cost)
        if params.min_improvement_pct is not None:
            if improvement is None:
                logger.debug("quote %s: no screen baseline, the gate cannot pass", quote.quote_id)
                continue
            if improvement < params.min_improvement_pct - 1e-9:
                logger.debug("quote %s: improvement %.3f %% below %.3f %%", quote.quote_id, improvement,
                             params.min_improvement_pct)
                continue
        out.append(Candidate(quote, cost, improvement))
    out.sort(key=lambda c: c.cost)
    return out


def _history_fill_matches(rows: Sequence[ExchangeFill], leg: LegTarget, since: float) -> bool:
    """Whether one exchange order's fill rows (block fills, tradeType 14) read as ``leg``'s
    whole block fill: our symbol and side, exactly the leg's planned quantity in all, every
    row timed and none before ``since``."""
    if any(r.symbol != leg.symbol or r.side != Side.of(leg.side) or r.qty is None or r.qty <= 0
           or r.time_ms is None or r.time_ms / 1000.0 < since for r in rows):
        return False
    return abs(math.fsum(r.qty for r in rows if r.qty is not None) - leg.qty) <= QTY_MATCH_TOLERANCE


def definitely_refused(exc: BaseException) -> TypeGuard[ExchangeError]:
    """Whether an error from a non-idempotent RFQ POST proves the exchange did nothing.

    Only a coded answer does, and not every code: a throttle (HTTP 429 or 10000/10605,
    ``RateLimitedError``) may have been raised by a gateway after the request went through,
    and the codes of ``ExchangeError.outcome_unknown`` say outright that nobody knows. No
    answer (``TransportError``, ``OrderOutcomeUnknown``), a 404 from whatever answered, or an
    error we did not expect proves nothing either. Anything this refuses is AMBIGUOUS.
    """
    return isinstance(exc, ExchangeError) and not isinstance(exc, RateLimitedError) and not exc.outcome_unknown


def position_problem(legs: Sequence[LegTarget], positions: Iterable[PositionSnapshot]) -> str | None:
    """Why a reducing block trade on ``legs`` could open or flip a position, or None.

    A block trade has no reduce-only flag, so the exchange would fill a close for more than
    the account holds and leave the difference the other way round. A close leg's side is the
    opposite of what the trade holds (SELL closes a long), so the account's net position in
    that symbol must lie on the held side by at least the leg's quantity. Positions of one
    symbol are summed (several entries net out on the exchange too).
    """
    held: dict[str, float] = {}
    for position in positions:
        held[position.symbol] = held.get(position.symbol, 0.0) + position.signed_qty
    for leg in legs:
        holds_long = Side.of(leg.side) is Side.SELL
        signed = held.get(leg.symbol, 0.0)
        have = signed if holds_long else -signed
        if have < leg.qty - QTY_MATCH_TOLERANCE:
            return (f"leg {leg.leg_index} {leg.symbol}: closing {fmt_qty(leg.qty)} needs a "
                    f"{'long' if holds_long else 'short'} position of at least that, the exchange shows "
                    f"{fmt_qty(signed)} (signed)")
    return None


# =====================================================================================
# Block trades: the paged lookup and recovery
# =====================================================================================


def _record_time(record: BlockTrade) -> float | None:
    """When the block trade happened, from its legs' times (the latest, so a record counts as
    older than the accept only when all of it is); None when no leg carries one."""
    times = [leg.created_at for leg in record.legs if leg.created_at is not None]
    return max(times) if times else None


class BlockTradeWalk:
    """One read of the private block-trade list, newest record first, a page at a time.

    Why a walk and not one page: the list is not filtered by time, so the newest page of a
    busy account may end before the accept; reading only it would call a block trade absent
    that is one page further down. A walk is ``finished`` when it found the record of our RFQ
    (or quote), reached a page shorter than asked for whose answer does not say ``hasNext``
    true (the end of the list: a page cut short by the exchange's own page limit still says
    there is more; a full page whose ``hasNext`` says false is read on, since a wrong flag
    must never end the search early), or a page holding
    a record older than ``since`` (what follows cannot be ours when ``since`` is no later than
    the RFQ's creation: ``BLOCKTRADE_SLACK_SECONDS``). Only a finished walk that
    found nothing says "absent". It can be read over several steps (a step's request budget),
    and every failure to read a page raises: the caller must never take it for absence.
    """

    def __init__(self, request_id: str, quote_id: str | None, since: float | None) -> None:
        self.request_id = str(request_id)
        self.quote_id = None if quote_id is None else str(quote_id)
        self.since = since
        self.pages = 0
        self.found: BlockTrade | None = None
        self.finished = False
        self._filters = history_filters(page_size=BLOCKTRADE_PAGE_SIZE)
        self._seen: set[tuple[str | None, str, str]] = set()

    def __repr__(self) -> str:
        return (f"BlockTradeWalk(rfq={self.request_id}, quote={self.quote_id}, pages={self.pages}, "
                f"finished={self.finished}, found={self.found is not None})")

    def matches(self, record: BlockTrade) -> bool:
        return record.request_id == self.request_id or (self.quote_id is not None
                                                        and record.quote_id == self.quote_id)

    def read_page(self, client: RfqClient | ReconcilerClient) -> None:
        """Read the next page. ``TraderError`` / ``ValueError`` when it cannot be read, and a
        ``TransportError`` when the cursor stalls or the page bound is reached unfinished."""
        if self.finished:
            return
        where = "GET block-trade list"
        if self.pages >= BLOCKTRADE_MAX_PAGES:
            raise TransportError(where, f"more than {BLOCKTRADE_MAX_PAGES} pages without reaching the accept: "
                                        f"not searched to the end")
        page = parse_block_trade_page(client.blocktrade_orders(**self._filters))
        records = page.records
        self.pages += 1
        fresh = 0
        for record in records:
            key = (record.block_trade_id, record.request_id, record.quote_id)
            if key not in self._seen:
                self._seen.add(key)
                fresh += 1
            if self.matches(record):
                self.found = record
                self.finished = True
                return
        if len(records) < BLOCKTRADE_PAGE_SIZE and page.has_next is not True:
            self.finished = True       # the end of the list: a short page the answer does not contradict
            return
        if self.since is not None and any(t is not None and t < self.since for t in map(_record_time, records)):
            self.finished = True       # back before our RFQ: nothing further down can be ours
            return
        cursor = int_or_none(records[-1].block_trade_id)
        if cursor is None or fresh == 0:
            raise TransportError(where, f"page {self.pages} gives no way on (last id "
                                        f"{records[-1].block_trade_id!r}, {fresh} new records)")
        self._filters = next_page_filters(self._filters, cursor)


def find_block_trade(client: RfqClient | ReconcilerClient, request_id: str, quote_id: str | None, *,
                     since: float | None = None) -> BlockTrade | None:
    """Our block trade for this RFQ (or quote) from the private block-trade list, or None.

    None only when the list was read to its end, or back past ``since`` (an epoch time; None
    reads to the end within the page bound); a page that cannot be read raises, so a failed
    read is never an absence.
    """
    walk = BlockTradeWalk(request_id, quote_id, since)
    while not walk.finished:
        walk.read_page(client)
    return walk.found


class BlockTradeIncomplete(ValueError):
    """Our block trade is proven (its record was found) but not every leg of it could be
    booked: a leg is unreadable or missing from the record, and no fill of it is booked yet.

    A block trade is all-or-nothing on the exchange, so the legs not booked are filled too:
    nothing may be decided from what was booked (a trade judged on it would unwind the booked
    legs and leave the others naked). Raised after the readable legs were booked; a
    ``ValueError``, so the reconciler treats it as a read that decided nothing and the accept
    stays in doubt, looked up again at the next pass (docs/RECOVERY.md R1).
    """


def _fill_time(order: LedgerOrder) -> float:
    """When an order of the ledger filled: the exchange's time of its latest fill, else its last change."""
    return float(order.last_fill_at if order.last_fill_at is not None else order.updated_at)


def _booked_block_fill(ledger: ReconcilerLedger, marker: Mapping[str, Any], leg_index: int, symbol: str,
                       leg: BlockLeg, since: float | None) -> LedgerOrder | None:
    """The fill already in the ledger for this leg of the marker's block trade, or None.

    Why: the accept answer, the block-trade list and a restart's lookup describe the same
    fills, and the exchange orderId is not on every one of them (an accept answer without
    it, a list without it, or the reverse). Two fills whose orderIds are both known are the
    same fill only when the ids are equal; when either lacks one, a fill of this trade, leg
    and intent family on the same instrument, of the leg's side and quantity (when the list
    says them), made no earlier than ``since`` (the RFQ's creation less the list's slack), is
    this leg already booked. Counting one fill twice makes a trade close what it does not
    hold; a fill missed here is what position reconciliation sees (BEHAVIOUR.md 4.7).
    """
    family = Intent(int(marker["intent"])).family()
    for order in ledger.orders(str(marker["trade_id"]), leg_index, family):
        if order.symbol != symbol or order.filled_qty <= QTY_MATCH_TOLERANCE:
            continue
        if leg.order_id is not None and order.order_id is not None:
            if order.order_id == leg.order_id:
                return order
            continue                       # two different exchange orders: two different fills
        if not order.status.is_final:
            continue
        if leg.side is not None and order.side != leg.side:
            continue
        if leg.qty is not None and abs(order.filled_qty - leg.qty) > QTY_MATCH_TOLERANCE:
            continue
        if since is not None and _fill_time(order) < since:
            continue
        return order
    return None


def block_wrong_side(ledger: ReconcilerLedger, symbol: str, reason: str) -> None:
    """No order on ``symbol`` after a block fill on the side we did not ask for, until an operator has looked.

    Why: that fill is a position our books do not hold; a strategy that entered again there,
    or a close sized on our books, would trade on a wrong picture of the account. The block
    outlives a restart and is lifted by ``python main.py resume NAME``.
    """
    try:
        ledger.block_symbol_durably(symbol, reason + ": check the position on the exchange, then resume")
    except Exception:  # noqa: BLE001 - the block holds in memory for this run; the write failure is logged
        logger.critical("symbol %s: the block could not be written to the store (it holds until a restart)",
                        symbol, exc_info=True)


def booked_fee(reported: float | None, qty: float, price: float, index: float | None, what: str) -> float:
    """The fee to book for a block fill: the reported one, or an estimate said at WARNING.

    Why: a fill booked with fee 0 because its record left ``fee`` out would overstate the
    trade's PnL for good (a block fill is final, nothing re-reads it). The estimate is the
    taker schedule (``fees.option_taker_fee``), its premium cap when the index is unknown:
    never lower than the truth.
    """
    if reported is not None:
        return reported
    estimate = option_taker_fee(qty, price, index)
    logger.warning("%s: no fee reported; booked an estimated taker fee of %s", what, fmt(estimate, 4))
    return estimate


def adopt_block_trade(client: ReconcilerClient, ledger: ReconcilerLedger, marker: Mapping[str, Any],
                      now: float, *, since: float | None = None) -> tuple[bool, int]:
    """Recovery: record the fills of an RFQ accept whose answer a crash may have lost.

    ``marker`` is the payload ``OrderLedger.note_block_accept`` committed before the accept
    was sent; ``since``, when given, must be no later than the RFQ's creation less some slack
    (the list is ordered by quote, not by trade time: see ``BLOCKTRADE_SLACK_SECONDS``); it
    lets the lookup stop there instead of reading to the end of the list. Returns (block trade
    found, legs newly recorded); a failed read raises (nothing is decided).

    Idempotent whatever ids either side carries: a leg already booked for this trade, leg and
    intent family (``_booked_block_fill``) is not booked again, and each leg of the marker is
    booked at most once, at the record's quantity (the quote's, which is the planned one). A
    leg filled on the side we did not ask for is not booked as ours (CRITICAL): the operator
    must look at it. A record found with a leg of ours that is unreadable or absent, and not
    booked yet, raises ``BlockTradeIncomplete`` once the readable legs are booked: the accept
    stays in doubt (a partial block trade must never be judged as the whole of it).
    """
    record = find_block_trade(client, str(marker["request_id"]), str(marker.get("quote_id") or "") or None,
                              since=since)
    if record is None:
        return False, 0
    ours = {str(symbol): (int(index), int(side)) for index, symbol, side in marker.get("legs") or []}
    known = ledger.known_order_ids()
    recorded = 0
    settled: set[str] = set()            # the marker's legs booked (now or before) or proven on the wrong side
    for leg in record.legs:
        if leg.symbol not in ours:
            logger.critical("block trade of RFQ %s has a leg on %r, which is not ours", marker["request_id"],
                            leg.symbol)
            continue
        if leg.symbol in settled:
            logger.critical("block trade of RFQ %s names %s twice; the second is not booked", marker["request_id"],
                            leg.symbol)
            continue
        index, wanted_side = ours[leg.symbol]
        if (leg.order_id is not None and leg.order_id in known) \
                or _booked_block_fill(ledger, marker, index, leg.symbol, leg, since) is not None:
            settled.add(leg.symbol)
            continue
        if leg.side is None or leg.qty is None or leg.qty <= 0 or leg.price is None or leg.price <= 0:
            logger.critical("block trade of RFQ %s: leg %s unreadable; fill NOT recorded", marker["request_id"],
                            leg.symbol)
            continue
        settled.add(leg.symbol)
        if leg.side != Side.of(wanted_side):
            logger.critical("trade %s: block trade of RFQ %s filled %s %s %s but we asked to %s; NOT booked as "
                            "our fill: check this position on the exchange", marker["trade_id"],
                            marker["request_id"], leg.side.name, leg.qty, leg.symbol, Side.of(wanted_side).name)
            block_wrong_side(ledger, leg.symbol, f"RFQ {marker['request_id']} (trade {marker['trade_id']}) filled "
                                                 f"{leg.side.name} {leg.qty} there, the side we did not ask for")
            continue
        ledger.record_block_fill(trade_id=str(marker["trade_id"]), trade_seq=int(marker["trade_seq"]),
                                 leg_index=index, intent=Intent(int(marker["intent"])), symbol=leg.symbol,
                                 side=leg.side, qty=leg.qty, price=leg.price,
                                 fee=booked_fee(leg.fee, leg.qty, leg.price, leg.index_price,
                                                f"block trade of RFQ {marker['request_id']} leg {leg.symbol}"),
                                 order_id=leg.order_id,
                                 filled_at=now if leg.created_at is None else leg.created_at)
        recorded += 1
        logger.warning("trade %s: adopted block fill %s %s %s @ %s of RFQ %s (accept answer lost at a restart)",
                       marker["trade_id"], leg.side.name, leg.qty, leg.symbol, leg.price,
                       marker["request_id"])
    unsettled = sorted(set(ours) - settled)
    if unsettled:
        raise BlockTradeIncomplete(
            f"block trade {record.block_trade_id} of RFQ {marker['request_id']} (trade {marker['trade_id']}) found "
            f"without a readable fill for {', '.join(unsettled)} ({recorded} leg(s) booked now): a block trade is "
            f"all-or-nothing, so the accept stays in doubt until every leg is booked")
    return True, recorded


# =====================================================================================
# The job
# =====================================================================================


class RFQPhase(str, Enum):
    BASELINE = "BASELINE"      # validate legs, read the screen, create the RFQ
    CREATED = "CREATED"        # RFQ live, first quote poll not yet due
    WAITING = "WAITING"        # polling quotes until the deadline
    ACCEPTING = "ACCEPTING"    # sending accepts (within one step)
    AMBIGUOUS = "AMBIGUOUS"    # an accept's fate is unknown: looking for the block trade until evidence
    CANCELLING = "CANCELLING"  # cancel the RFQ, then fallback or fail
    FALLBACK = "FALLBACK"      # another engine works the same legs inside this job
    DONE = "DONE"
    FAILED = "FAILED"


class RFQJob(ExecutionJob):
    """BEHAVIOUR.md §6.4 as a tick-driven state machine (see the module docstring)."""

    _label = "rfq job"

    def __init__(self, executor: "RFQExecutor", trade: TradeRef, legs: Sequence[LegTarget], intent: Intent,
                 params: RFQParams, *, best_effort: bool, started_at: float) -> None:
        super().__init__(ledger=executor.ledger, market=executor.market, trade=trade, intent=intent,
                         best_effort=best_effort, started_at=started_at,
                         max_requests=executor.max_requests_per_step)
        self._executor = executor
        self._client = executor.client
        self._trade = trade
        self.params = params
        self.legs = [replace(leg, qty=snap_qty(leg.qty)) for leg in legs]
        self._by_symbol = {leg.symbol: leg for leg in self.legs}
        self._phase = RFQPhase.BASELINE
        self._validated: set[str] = set()
        self._books: dict[str, Any] = {}
        self._bands: dict[str, PriceBand] = {}
        self.baseline: float | None = None
        self.request_id: str | None = None
        self._created_at: float | None = None      # when the create was sent: the block-trade lookup's horizon
        self.rfq_expiry: float | None = None
        self._deadline: float | None = None
        self._next_poll_at = 0.0
        self.tried_quote_ids: list[str] = []
        self._deferred: tuple[list[Quote], float] | None = None   # quotes ranked, their accept due next step
        self.accepted_quote_id: str | None = None
        self._never_accept = False
        self._ambiguous_quote_id: str | None = None
        self._ambiguous_since: float | None = None
        self._next_lookup_at = 0.0
        self._walk: BlockTradeWalk | None = None  # a block-trade list read still under way
        self._walk_began_at = 0.0
        self._absence_proven = False              # a full list read after the window found nothing
        self._unresolved_logged = False           # the CRITICAL of an unresolved accept, said once
        self._accept_refuted = False              # "not accepted" concluded from the list's silence
        self._block_trade_seen = False            # a leg read from the accept answer, or our list record, proves it
        self._position_guard = ""                 # why a reducing RFQ gave way (positions read), or ""
        self._cancel_attempts = 0
        self._block_orders: dict[int, int] = {}   # leg_index -> client order id of its block fill
        self._wrong_side: dict[int, str] = {}     # leg_index -> a block fill on the side we did not ask for
        self._unbookable_said: set[str] = set()   # legs / symbols whose unbookable evidence was logged once
        self.fallback_mode: str | None = None
        self.fallback_reason = ""                 # why the RFQ gave way to the fallback engine
        self._inner: ExecutionJob | None = None

    def __repr__(self) -> str:
        return f"RFQJob({self.trade_id}, {self.intent.name}, {self._phase.value}, {self._status.value})"

    @property
    def _created_id(self) -> str:
        """The id of the RFQ this job created; a ``ValueError`` (as the client gives for a
        missing id) when it has none, which no step after the create can meet."""
        if self.request_id is None:
            raise ValueError("request_id must be an id (int or string), got None")
        return self.request_id

    # ---- the step -------------------------------------------------------------------

    def _step(self, now: float, budget: RequestBudget) -> None:
        if self._stop_reason is not None:
            self._apply_stop()
        if self._phase is RFQPhase.BASELINE:
            self._step_baseline(now, budget)
        if self._phase in (RFQPhase.CREATED, RFQPhase.WAITING):
            self._step_waiting(now, budget)
        if self._phase is RFQPhase.AMBIGUOUS:
            self._step_ambiguous(now, budget)
        if self._phase is RFQPhase.CANCELLING:
            self._step_cancelling(now, budget)
        if self._phase is RFQPhase.FALLBACK and budget.left == self._max_requests:
            self._step_fallback(now)

    def result(self) -> FillResult:
        inner = self._inner.result() if self._inner is not None else None
        inner_ids = {leg.leg_index: list(leg.order_ids) for leg in inner.legs} if inner is not None else {}
        legs = []
        for leg in self.legs:
            ids = ([self._block_orders[leg.leg_index]] if leg.leg_index in self._block_orders else []) \
                + inner_ids.get(leg.leg_index, [])
            summary = summarize_fills(o for o in (self._ledger.get(c) for c in ids) if o is not None)
            legs.append(LegFill(leg.leg_index, leg.symbol, leg.side, leg.qty, summary.qty, summary.vwap,
                                summary.fees, ids))
        reason = self._reason
        if inner is not None and inner.reason:
            reason = f"{reason}; {self.fallback_mode} fallback: {inner.reason}" if reason else inner.reason
        return FillResult(self._status, legs, "" if self._status is JobStatus.FILLED else reason)

    # ---- stop -----------------------------------------------------------------------

    def _on_stop(self, reason: str) -> None:
        """Nothing more is accepted; the RFQ is cancelled (after resolving an ambiguity); no fallback."""
        if self._inner is not None:
            self._inner.request_stop(reason)

    def _apply_stop(self) -> None:
        if self._phase is RFQPhase.BASELINE:
            self._finish(JobStatus.FAILED, f"stopped before the RFQ was created: {self._stop_reason}")
        elif self._phase in (RFQPhase.CREATED, RFQPhase.WAITING):
            self._begin_cancelling(f"stopped: {self._stop_reason}")

    # ---- BASELINE ---------------------------------------------------------------------

    def _step_baseline(self, now: float, budget: RequestBudget) -> None:
        """Validate every leg and read the screen (over several ticks if the budget is short), then create."""
        if now - self.started_at >= self.params.timeout_seconds:
            self._reason = f"no screen baseline / leg data within {self.params.timeout_seconds:.0f} s"
            self._begin_fallback(now)
            return
        for leg in self.legs:
            if leg.symbol not in self._validated:
                if not budget.take():
                    return
                problem = self._validate_leg(leg)
                if problem == "retry":
                    return
                if problem is not None:
                    self._finish(JobStatus.FAILED, problem)
                    return
            if self.params.min_improvement_pct is not None and leg.symbol not in self._books:
                if not budget.take():
                    return
                try:
                    self._books[leg.symbol] = self._market.order_book(leg.symbol, max_age=BOOK_MAX_AGE_SECONDS)
                except TraderError as exc:
                    logger.warning("rfq job %s: order book of %s unavailable (%s); retrying", self.trade_id,
                                   leg.symbol, exc)
                    return
        if self.params.min_improvement_pct is not None:
            self._read_bands()
            self.baseline = structure_baseline(self.legs, self._books, self._bands)
            if self.baseline is None:
                logger.warning("rfq job %s: a needed book side is empty; no baseline, no quote can pass the "
                               "%.2f %% gate", self.trade_id, self.params.min_improvement_pct)
        blocked = self._blocked_legs()
        if blocked is not None:
            self._finish(JobStatus.FAILED, f"no RFQ created: {blocked}")
            return
        if not budget.take(2 if self._reducing else 1):
            return
        if self._reducing and not self._positions_allow_rfq(now, "before creating the RFQ"):
            self._begin_fallback(now)
            return
        self._create(now)

    # ---- the position guard of a reducing RFQ ---------------------------------------------

    @property
    def _reducing(self) -> bool:
        """A close, unwind or kill: its block trade must not be able to flip a position."""
        return self.intent.family() is not Intent.OPEN

    def _positions_allow_rfq(self, now: float, when: str) -> bool:
        """Read the positions (one request, already taken from the budget) and say whether a
        reducing block trade on our legs stays inside them (``position_problem``).

        Fail closed: a failed or unreadable read is a no, exactly like a position that does
        not match; the reason is kept so the fallback can say why it took over.
        """
        try:
            positions = parse_positions(self._client.positions(), timestamp=now)
        except (TraderError, ValueError) as exc:
            problem: str | None = f"the positions read failed ({exc})"
        else:
            problem = position_problem(self.legs, positions)
        if problem is None:
            return True
        self._position_guard = f"no RFQ for a reducing trade {when}: {problem}"
        self._reason = self._position_guard
        logger.warning("rfq job %s %s: %s; the reduce-only fallback takes the legs", self.trade_id,
                       self.intent.name, self._position_guard)
        return False

    def _blocked_legs(self) -> str | None:
        """The legs on symbols the ledger blocks, in words; None when there are none.

        Why: the ledger refuses orders on a blocked symbol, but a block trade is no order, so
        this engine asks it itself before it creates an RFQ, accepts a quote or hands the legs
        to a fallback (whose orders on the other legs would go out before the blocked leg's is
        refused). The job then fails with nothing sent (BEHAVIOUR.md 6.1, symbol blocks).
        """
        blocks = self._ledger.blocked_symbols()
        hits = [f"{leg.symbol} ({blocks[leg.symbol]})" for leg in self.legs if leg.symbol in blocks]
        return f"symbol blocked until an operator resumes: {'; '.join(hits)}" if hits else None

    def _validate_leg(self, leg: LegTarget) -> str | None:
        """None if the leg may be asked for; a reason to fail; or "retry" when the data is unavailable."""
        try:
            instrument = self._market.instrument(leg.symbol)
        except SelectionError as exc:
            return f"leg {leg.leg_index}: {exc}"
        except TraderError as exc:
            logger.warning("rfq job %s: instrument lookup for %s failed (%s); retrying", self.trade_id,
                           leg.symbol, exc)
            return "retry"
        if not instrument.is_active:
            return f"leg {leg.leg_index}: {leg.symbol} is not active"
        minimum = max(LOT, float(instrument.min_qty or 0.0))
        if leg.qty < minimum - QTY_MATCH_TOLERANCE:
            return f"leg {leg.leg_index}: qty {leg.qty} is below the minimum {minimum}"
        self._validated.add(leg.symbol)
        return None

    def _create(self, now: float) -> None:
        """Create the RFQ (sent once: not idempotent). Without a usable answer the fallback
        takes over; an RFQ created after all has no id here, so it is never accepted and
        expires by itself, which is why only the log, not the decision, depends on the kind
        of error."""
        legs = request_legs(self.legs)
        try:
            data = self._client.rfq_create(legs)
        except (TraderError, ValueError) as exc:
            if definitely_refused(exc):
                self._reason = f"RFQ create rejected: {exc.code} {exc.msg}"
            else:
                self._reason = f"RFQ create outcome unknown ({exc}); if it exists it is never accepted"
                logger.warning("rfq job %s: RFQ create has no definitive answer (%s); an RFQ it may have created "
                               "is never accepted and expires by itself", self.trade_id, exc)
            self._begin_fallback(now)
            return
        created = parse_rfq_created(data)
        if created.request_id is None:
            self._reason = "RFQ create answered without a requestId"
            self._begin_fallback(now)
            return
        self.request_id = created.request_id
        self._created_at = now
        self.rfq_expiry = None if created.expiry_ms is None else created.expiry_ms / 1000.0
        self._deadline = now + self.params.timeout_seconds
        if self.rfq_expiry is not None:
            self._deadline = min(self._deadline, self.rfq_expiry)
        self._next_poll_at = now + self.params.poll_interval_seconds
        self._phase = RFQPhase.CREATED
        single = len(self.legs) == 1   # asked as request_legs asks it: a single leg as BUY
        asked = ", ".join(f"{(Side.BUY if single else Side.of(leg.side)).name} {fmt_qty(snap_qty(leg.qty))} "
                          f"{leg.symbol}" for leg in self.legs)
        logger.info("rfq job %s %s: RFQ %s created (%s), baseline %s, taking quotes for up to %s", self.trade_id,
                    self.intent.name, self.request_id, asked,
                    "none" if self.baseline is None else f"{self.baseline:.2f}", fmt_duration(self._deadline - now))

    # ---- WAITING / ACCEPTING ------------------------------------------------------------

    def _step_waiting(self, now: float, budget: RequestBudget) -> None:
        assert self._deadline is not None
        if now >= self._deadline:
            self._begin_cancelling(f"no acceptable quote within {now - self.started_at:.0f} s")
            return
        if self._deferred is not None:
            self._accept_deferred(now, budget)
            return
        if now < self._next_poll_at or not budget.take():
            return
        self._phase = RFQPhase.WAITING
        self._next_poll_at = now + self.params.poll_interval_seconds
        try:
            raw = self._client.rfq_quotes(self._created_id)
        except (TraderError, ValueError) as exc:
            logger.warning("rfq job %s: quote poll failed (%s); next poll in %.0f s", self.trade_id, exc,
                           self.params.poll_interval_seconds)
            return
        quotes = parse_quotes(raw)
        if quotes and not self._refresh_baseline(budget):
            self._next_poll_at = now  # out of requests: rank on the next tick, with fresh books
            return
        candidates = rank_candidates(quotes, self.legs, self.baseline, self.params, now, self.tried_quote_ids,
                                     bands=self._bands)
        logger.debug("rfq job %s: %d quotes, %d candidates", self.trade_id, len(quotes), len(candidates))
        if candidates and not self._never_accept:
            self._accept_best(candidates, quotes, now, budget)

    def _accept_deferred(self, now: float, budget: RequestBudget) -> None:
        """Accept quotes ranked on the previous step, which ran out of requests before it could.

        Why: a poll, a book per leg and an accept (plus the positions read of a reducing job)
        can need more requests than one step may send (an iron condor close: 1 + 4 + 2 > 6),
        and polling again would spend the next step the same way. The quotes are ranked again
        at ``now`` (their remaining life checked) against the screen read one step earlier;
        older than one poll interval, they are dropped and the job polls afresh.
        """
        assert self._deferred is not None
        quotes, ranked_at = self._deferred
        self._deferred = None
        if now - ranked_at > self.params.poll_interval_seconds or self._never_accept:
            return
        candidates = rank_candidates(quotes, self.legs, self.baseline, self.params, now, self.tried_quote_ids,
                                     bands=self._bands)
        if candidates:
            self._accept_best(candidates, quotes, now, budget)

    def _refresh_baseline(self, budget: RequestBudget) -> bool:
        """Re-read the screen (books at most 3 s old) before judging quotes; False if out of budget.

        Quotes arrive seconds after the RFQ, and a cheap option's touch moves by more than the
        makers' edge in that time: judged against the screen of the create, a good quote can
        look bad and a bad one good. A book that cannot be read now is dropped: an older screen
        is no baseline (the market may have fallen since, and a maker's quote above today's
        touch would look like an improvement on yesterday's), so no quote passes the gate
        until a fresh read gives one.
        """
        if self.params.min_improvement_pct is None:
            self._read_bands()  # no gate, but every quoted leg price must still be believable
            return True
        for leg in self.legs:
            if not budget.take():
                return False
            try:
                self._books[leg.symbol] = self._market.order_book(leg.symbol, max_age=BOOK_MAX_AGE_SECONDS)
            except TraderError as exc:
                self._books.pop(leg.symbol, None)
                logger.warning("rfq job %s: order book of %s unavailable (%s); no baseline until it is read",
                               self.trade_id, leg.symbol, exc)
        self._read_bands()
        self.baseline = structure_baseline(self.legs, self._books, self._bands)
        return True

    def _read_bands(self) -> None:
        """Each leg's sanity band from its chain row (≤ 30 s); a leg without a sane row has none,
        so no quote for it can pass (``quote_problem``) and there is no baseline."""
        for leg in self.legs:
            try:
                self._bands[leg.symbol] = band_of(self._market.quote(leg.symbol, max_age=MARK_MAX_AGE_SECONDS),
                                                  leg.symbol)
            except (TraderError, InsanePriceError) as exc:
                self._bands.pop(leg.symbol, None)
                logger.warning("rfq job %s: no sane reference price for %s (%s); no quote can be accepted",
                               self.trade_id, leg.symbol, exc)

    def _accept_best(self, candidates: list[Candidate], quotes: list[Quote], now: float,
                     budget: RequestBudget) -> None:
        """Accept in rank order. Only a coded refusal that proves nothing happened
        (``definitely_refused``) moves on to the next candidate; any other outcome is AMBIGUOUS and
        stops everything. A reducing job re-reads the positions right before each accept. Out
        of requests, the quotes wait for the next step (``_accept_deferred``)."""
        self._phase = RFQPhase.ACCEPTING
        for candidate in candidates:
            quote_id = candidate.quote.quote_id
            if self._blocked_legs() is not None:
                self._begin_cancelling(f"quote {quote_id} not accepted")   # the fallback then refuses too
                return
            if not budget.take(2 if self._reducing else 1):
                self._deferred = (quotes, now)
                break
            if self._reducing and not self._positions_allow_rfq(now, f"before accepting quote {quote_id}"):
                self._begin_cancelling(self._position_guard)
                return
            try:
                self._ledger.note_block_accept(
                    trade_id=self.trade_id, trade_seq=self.trade_seq, intent=self.intent,
                    request_id=str(self.request_id), quote_id=str(quote_id),
                    legs=[(leg.leg_index, leg.symbol, leg.side) for leg in self.legs],
                    rfq_created_at=self._created_at)
            except Exception:  # noqa: BLE001 - an accept we could not record is never sent
                logger.critical("rfq job %s: could not record the accept of quote %s; not accepting",
                                self.trade_id, quote_id, exc_info=True)
                break
            self.tried_quote_ids.append(quote_id)
            logger.info("rfq job %s: accepting quote %s, cost %.2f, improvement %s", self.trade_id, quote_id,
                        candidate.cost, "n/a" if candidate.improvement is None else f"{candidate.improvement:.2f} %")
            try:
                data = self._client.rfq_accept(self._created_id, quote_id)
            except Exception as exc:  # noqa: BLE001 - whatever is not a proven refusal may have traded
                if definitely_refused(exc):
                    logger.warning("rfq job %s: accept of quote %s refused (%s %s); next candidate", self.trade_id,
                                   quote_id, exc.code, exc.msg)
                    self._ledger.note_block_accept_refused(trade_id=self.trade_id, request_id=str(self.request_id),
                                                           quote_id=str(quote_id), why=f"{exc.code} {exc.msg}")
                    continue
                self._begin_ambiguous(quote_id, now, f"{type(exc).__name__}: {exc}")
                return
            self._never_accept = True
            self._record_block_legs(parse_accept_legs(data), now, f"accept of {quote_id}")
            if self._block_orders or self._wrong_side:
                # A leg of the answer was read: the block trade exists (all of it: it is all-or-nothing).
                self._block_trade_seen = True
                self.accepted_quote_id = quote_id
            if self._all_legs_accounted():
                self._settle_block_trade()
            else:
                # An answer without every leg readable proves nothing about the legs it does not
                # show: unknown, never "not filled". Resolved like an accept without an answer.
                self._begin_ambiguous(quote_id, now, "the accept answered without a readable leg" if not
                                      self._block_trade_seen else "the accept answered without every leg readable")
            return
        if self._phase is RFQPhase.ACCEPTING:
            self._phase = RFQPhase.WAITING

    # ---- AMBIGUOUS --------------------------------------------------------------------

    def _begin_ambiguous(self, quote_id: str, now: float, why: str) -> None:
        logger.warning("rfq job %s: accept of quote %s is AMBIGUOUS (%s); never accepting again, resolving from "
                       "the block-trade list", self.trade_id, quote_id, why)
        self._never_accept = True
        self._ambiguous_quote_id = quote_id
        self._ambiguous_since = now
        self._next_lookup_at = now
        self._phase = RFQPhase.AMBIGUOUS

    def _step_ambiguous(self, now: float, budget: RequestBudget) -> None:
        """Look for the block trade every poll interval until there is evidence either way.

        Every leg accounted for (booked, or proven on the wrong side) -> done. A block trade is
        all-or-nothing, so evidence of only some of its legs (a leg read from the accept
        answer, our record with a leg unreadable) proves the others traded too: the job never
        ends PARTIAL or FAILED because a leg is missing from the evidence, and such a block
        trade is never called "not accepted". Otherwise, after ``AMBIGUOUS_RESOLVE_SECONDS``,
        "not accepted" only on a list read begun after the window that answered and found
        nothing (``_absence_proven``). Until then the job stays here (CRITICAL once) and keeps
        looking: a failed read decides nothing, however long it has been.
        """
        assert self._ambiguous_since is not None
        if now >= self._next_lookup_at and budget.take():
            self._next_lookup_at = now + self.params.poll_interval_seconds
            self._lookup_block_trade(now, budget)
            if self._all_legs_accounted():
                self._settle_block_trade()
                return
        if now - self._ambiguous_since < AMBIGUOUS_RESOLVE_SECONDS:
            return
        proven = self._block_trade_seen or bool(self._block_orders) or bool(self._wrong_side)
        if self._absence_proven and not proven:
            logger.warning("rfq job %s: the block-trade list, read back past the RFQ %.0f s or more after the accept, "
                           "has no block trade for RFQ %s quote %s: not accepted", self.trade_id,
                           AMBIGUOUS_RESOLVE_SECONDS, self.request_id, self._ambiguous_quote_id)
            self._accept_refuted = True
            self._begin_cancelling(f"accept of quote {self._ambiguous_quote_id} had no readable answer and the "
                                   f"block-trade list shows no block trade for it: not accepted")
            return
        if not self._unresolved_logged:
            self._unresolved_logged = True
            if proven:
                missing = [f"leg {leg.leg_index} {leg.symbol}" for leg in self.legs
                           if leg.leg_index not in self._block_orders and leg.leg_index not in self._wrong_side]
                logger.critical("rfq job %s: the block trade of RFQ %s quote %s is proven, but after %s there is "
                                "still no readable fill for %s; a block trade is all-or-nothing, so the trade stays "
                                "in execution and the lookups go on. Operator: check the exchange's block trades "
                                "for this RFQ", self.trade_id, self.request_id, self._ambiguous_quote_id,
                                fmt_duration(now - self._ambiguous_since), ", ".join(missing))
            else:
                logger.critical("rfq job %s: accept of RFQ %s quote %s is still unresolved after %s: no block-trade "
                                "list read made after the first %.0f s has answered; the trade stays in execution "
                                "and the lookups go on. Operator: check the exchange's block trades for this RFQ",
                                self.trade_id, self.request_id, self._ambiguous_quote_id,
                                fmt_duration(now - self._ambiguous_since), AMBIGUOUS_RESOLVE_SECONDS)

    def _lookup_block_trade(self, now: float, budget: RequestBudget) -> None:
        """Our block trade from the private list (one request already taken from ``budget``,
        one more per further page); the fill history when the list cannot be read.

        A list read may span steps when the budget runs short: it is kept and continued on
        the next step, and its time is when it began. Only a read begun at least
        ``AMBIGUOUS_RESOLVE_SECONDS`` after the accept may prove the absence (the list may lag
        the trade); a failed read is dropped and proves nothing.
        """
        assert self._ambiguous_since is not None
        if self._walk is None:
            created_at = self._ambiguous_since if self._created_at is None else self._created_at
            self._walk = BlockTradeWalk(str(self.request_id), self._ambiguous_quote_id,
                                        since=created_at - BLOCKTRADE_SLACK_SECONDS)
            self._walk_began_at = now
        walk = self._walk
        try:
            walk.read_page(self._client)
            while not walk.finished:
                if not budget.take():
                    self._next_lookup_at = now  # continue this read on the next step
                    return
                walk.read_page(self._client)
        except (TraderError, ValueError) as exc:
            self._walk = None
            logger.warning("rfq job %s: block-trade list unreadable (%s); reading the fill history",
                           self.trade_id, exc)
            self._lookup_fill_history(now, budget)
            return
        self._walk = None
        if walk.found is not None:
            self._block_trade_seen = True
            self._record_block_legs(walk.found.legs, now, f"block trade {walk.found.block_trade_id}")
        elif self._walk_began_at - self._ambiguous_since >= AMBIGUOUS_RESOLVE_SECONDS:
            self._absence_proven = True

    def _lookup_fill_history(self, now: float, budget: RequestBudget) -> None:
        """The fill history, a hint while the block-trade list cannot be read.

        Nothing in a fill row ties it to our RFQ, so a block fill (tradeType 14) on one of our
        symbols may be somebody else's (another strategy's RFQ, a manual one). The legs not yet
        booked are booked from it only all together, and only when each of them has exactly
        one exchange order in a history read to its end that is a block fill of that symbol,
        on our side, for exactly the leg's planned quantity, made after the accept (less
        ``HISTORY_SLACK_SECONDS``), within ``HISTORY_SLACK_SECONDS`` of the others, not already
        in the ledger, and whose order, queried, says the same. Anything less books nothing:
        the job stays in AMBIGUOUS and looks again (an unfinished read is not evidence).
        """
        missing = [leg for leg in self.legs
                   if leg.leg_index not in self._block_orders and leg.leg_index not in self._wrong_side]
        if not missing or not budget.take():
            return
        # _ambiguous_since is set by _begin_ambiguous, the only way into this phase (mypy cannot see it).
        since = self._ambiguous_since - HISTORY_SLACK_SECONDS  # type: ignore[operator]
        rows = self._read_fill_history(since, budget)
        if rows is None:
            return
        known = self._ledger.known_order_ids()
        # A fill row is one execution: an order's rows together are its fill.
        by_order: dict[int, list[ExchangeFill]] = {}
        for row in rows:
            if row.trade_type == BLOCK_TRADE_TYPE and row.order_id is not None and row.order_id not in known:
                by_order.setdefault(row.order_id, []).append(row)
        chosen: list[tuple[LegTarget, int, float]] = []
        for leg in missing:
            matches = [(order_id, min(r.time_ms for r in group if r.time_ms is not None) / 1000.0)
                       for order_id, group in by_order.items()
                       if _history_fill_matches(group, leg, since)]
            if len(matches) != 1:
                logger.debug("rfq job %s: the fill history shows %d block fill(s) matching leg %d (%s %s %s) "
                            "exactly; nothing booked from it", self.trade_id, len(matches), leg.leg_index,
                            leg.side.name, fmt_qty(leg.qty), leg.symbol)
                return
            chosen.append((leg, *matches[0]))
        times = [at for _leg, _order_id, at in chosen]
        if max(times) - min(times) > HISTORY_SLACK_SECONDS:
            logger.debug("rfq job %s: the block fills in the fill history are %.0f s apart, not one block trade; "
                        "nothing booked from them", self.trade_id, max(times) - min(times))
            return
        confirmed: list[tuple[LegTarget, ExchangeOrder, int, float]] = []
        for leg, order_id, at in chosen:
            if not budget.take():
                self._next_lookup_at = now  # out of requests: the whole lookup again on the next step
                return
            try:
                order = parse_order(self._client.query_order(order_id=order_id))
            except (TraderError, ValueError) as exc:
                logger.warning("rfq job %s: block order %d unreadable (%s)", self.trade_id, order_id, exc)
                return
            if order is None or order.symbol != leg.symbol or order.side != leg.side or order.fill_qty is None \
                    or abs(order.fill_qty - leg.qty) > QTY_MATCH_TOLERANCE or order.avg_price is None \
                    or order.avg_price <= 0:
                logger.debug("rfq job %s: block order %d does not read as leg %d's fill (%r); nothing booked",
                            self.trade_id, order_id, leg.leg_index, order)
                return
            confirmed.append((leg, order, order_id, at))
        for leg, order, order_id, at in confirmed:
            self._record_leg(leg, order.side, order.fill_qty, order.avg_price, order.fee, None, order_id, at,
                             f"fill history order {order_id}")

    def _read_fill_history(self, since: float, budget: RequestBudget) -> list[ExchangeFill] | None:
        """Every fill row since ``since``, page after page (the first request already taken from
        ``budget``); None when the read failed or could not reach the last page in this step."""
        filters = history_filters(page_size=HISTORY_PAGE_SIZE, start_ms=int(since * 1000))
        rows: list[ExchangeFill] = []
        cursors: set[int] = set()
        for page_no in range(HISTORY_MAX_PAGES):
            if page_no and not budget.take():
                return None
            try:
                page = parse_fill_page(self._client.trade_history(**filters))
            except (TraderError, ValueError) as exc:
                logger.warning("rfq job %s: fill history unavailable (%s)", self.trade_id, exc)
                return None
            rows.extend(page.rows)
            if not page.more(HISTORY_PAGE_SIZE):
                return rows
            cursor = page.next_cursor
            if cursor is None or cursor in cursors:
                logger.warning("rfq job %s: the fill history says more pages follow but gives no way on; "
                               "an unfinished read proves nothing", self.trade_id)
                return None
            cursors.add(cursor)
            filters = next_page_filters(filters, cursor)
        logger.warning("rfq job %s: the fill history has more than %d pages since the accept; an unfinished read "
                       "proves nothing", self.trade_id, HISTORY_MAX_PAGES)
        return None

    # ---- fills ------------------------------------------------------------------------

    def _record_block_legs(self, legs: Iterable[BlockLeg], now: float, source: str) -> None:
        """Taker-side legs (accept answer or block-trade record) into the ledger, matched by instrumentName."""
        for block_leg in legs:
            leg = self._by_symbol.get(block_leg.symbol)
            if leg is None:
                self._say_once(f"foreign {block_leg.symbol}", logging.CRITICAL,
                               "rfq job %s: %s has a leg on %r, which is not one of ours", self.trade_id, source,
                               block_leg.symbol)
                continue
            self._record_leg(leg, block_leg.side, block_leg.qty, block_leg.price, block_leg.fee,
                             block_leg.index_price, block_leg.order_id,
                             now if block_leg.created_at is None else block_leg.created_at, source)

    def _say_once(self, key: str, level: int, msg: str, *args: Any) -> None:
        """Log evidence we cannot book at ``level`` the first time, at DEBUG after: the lookups
        that keep finding it must not repeat it every poll interval."""
        logger.log(level if key not in self._unbookable_said else logging.DEBUG, msg, *args)
        self._unbookable_said.add(key)

    def _record_leg(self, leg: LegTarget, side: Side | None, qty: float | None, price: float | None,
                    fee: float | None, index: float | None, order_id: int | None, filled_at: float,
                    source: str) -> None:
        """Book one block fill as our leg's, once. A fill on the side we did not ask for is not
        ours to book: under our leg and intent it would count as exposure we asked for (a close
        "done" that in fact doubled the position). It is kept in ``_wrong_side`` and said at
        CRITICAL, and the job cannot end FILLED (``_finish_with_fills`` finds the leg unfilled).
        An unreadable leg, or one above the leg's planned quantity (never booked: quantities
        never exceed the plan), is not booked and stays unaccounted for: the job keeps looking."""
        if leg.leg_index in self._block_orders or leg.leg_index in self._wrong_side:
            return  # one block trade per job: each leg is recorded once
        if side is None or qty is None or qty <= 0 or price is None or price <= 0:
            self._say_once(f"unreadable {leg.leg_index}", logging.ERROR,
                           "rfq job %s: %s leg %s is unreadable (side %r, qty %r, price %r); fill NOT recorded, "
                           "still looking for it", self.trade_id, source, leg.symbol, side, qty, price)
            return
        if qty > leg.qty + QTY_MATCH_TOLERANCE:
            self._say_once(f"oversized {leg.leg_index}", logging.CRITICAL,
                           "rfq job %s: %s leg %s shows %s filled, more than the %s planned; NOT booked. Operator: "
                           "check this position on the exchange (RFQ %s)", self.trade_id, source, leg.symbol,
                           fmt_qty(qty), fmt_qty(leg.qty), self.request_id)
            return
        if side != leg.side:
            self._wrong_side[leg.leg_index] = (f"leg {leg.leg_index} {leg.symbol} filled {side.name} "
                                               f"{fmt_qty(qty)} @ {fmt(price)} (order {order_id}) but we asked to "
                                               f"{leg.side.name}")
            logger.critical("rfq job %s %s: %s: %s; NOT booked as our fill. Operator: check this position on the "
                            "exchange (RFQ %s)", self.trade_id, self.intent.name, source,
                            self._wrong_side[leg.leg_index], self.request_id)
            block_wrong_side(self._ledger, leg.symbol, f"RFQ {self.request_id} (trade {self.trade_id}) filled "
                                                       f"{side.name} {fmt_qty(qty)} there, the side we did not ask for")
            return
        fee = booked_fee(fee, qty, price, index, f"rfq job {self.trade_id}: {source} leg {leg.symbol}")
        order: LedgerOrder = self._ledger.record_block_fill(
            trade_id=self.trade_id, trade_seq=self.trade_seq, leg_index=leg.leg_index, intent=self.intent,
            symbol=leg.symbol, side=side, qty=qty, price=price, fee=fee, order_id=order_id, filled_at=filled_at)
        self._block_orders[leg.leg_index] = order.client_order_id
        logger.info("rfq job %s: %s leg %d %s %s %s @ %s (fee %s)", self.trade_id, source, leg.leg_index,
                    side.name, fmt_qty(qty), leg.symbol, fmt(price), fmt(fee, 4))

    def _all_legs_accounted(self) -> bool:
        """Every leg's fill is known: booked, or proven on the side we did not ask for."""
        return all(leg.leg_index in self._block_orders or leg.leg_index in self._wrong_side for leg in self.legs)

    def _settle_block_trade(self) -> None:
        """Every leg accounted for: FILLED, or (a leg on the wrong side) ended with what was booked."""
        self._block_trade_seen = True
        self.accepted_quote_id = self.accepted_quote_id or self._ambiguous_quote_id
        self._finish_with_fills(self._wrong_side_reason() if self._wrong_side else "")

    def _wrong_side_reason(self) -> str:
        return "block trade on the wrong side, not booked: " + "; ".join(self._wrong_side.values())

    def _finish_with_fills(self, reason: str) -> None:
        complete = all(self._leg_filled(leg) >= leg.qty - QTY_MATCH_TOLERANCE for leg in self.legs)
        status = JobStatus.FILLED if complete else (JobStatus.PARTIAL if self._block_orders else JobStatus.FAILED)
        self._finish(status, reason if not complete else "")

    def _leg_filled(self, leg: LegTarget) -> float:
        coid = self._block_orders.get(leg.leg_index)
        order = self._ledger.get(coid) if coid is not None else None
        return order.filled_qty if order is not None else 0.0

    # ---- CANCELLING / FALLBACK ------------------------------------------------------------

    def _begin_cancelling(self, reason: str) -> None:
        self._reason = reason
        self._phase = RFQPhase.CANCELLING

    def _step_cancelling(self, now: float, budget: RequestBudget) -> None:
        if self._block_orders or self._block_trade_seen:
            self._finish_with_fills(self._reason)  # never cancel (nor fall back) after a fill
            return
        needs_cancel = self.request_id is not None and (self.rfq_expiry is None or now < self.rfq_expiry)
        if needs_cancel and self._cancel_attempts < MAX_CANCEL_ATTEMPTS:
            if not budget.take():
                return
            self._cancel_attempts += 1
            try:
                self._client.rfq_cancel(self._created_id)
            except (TraderError, ValueError) as exc:
                if definitely_refused(exc):
                    logger.info("rfq job %s: RFQ %s not cancelled (%s %s): no longer active", self.trade_id,
                                self.request_id, exc.code, exc.msg)
                elif self._cancel_attempts < MAX_CANCEL_ATTEMPTS:
                    logger.warning("rfq job %s: cancel of RFQ %s has no answer (%s); trying again",
                                   self.trade_id, self.request_id, exc)
                    return
                else:
                    logger.warning("rfq job %s: RFQ %s left to expire by itself (%s)", self.trade_id,
                                   self.request_id, exc)
            else:
                logger.info("rfq job %s: RFQ %s cancelled", self.trade_id, self.request_id)
        self._begin_fallback(now)

    def _begin_fallback(self, now: float) -> None:
        """Hand the same legs to the configured engine inside this job, or fail.

        Two exceptions to the configuration. An OPEN whose accept was concluded "not
        accepted" from the block-trade list's silence never falls back: were the verdict
        wrong, a second open would double the position, so the job fails and says why. A
        reducing job the position guard kept off the RFQ always falls back (limit when no
        fallback is configured): its engines send reduce-only orders, and a close must not
        fail only because the RFQ was unsafe.
        """
        if self._stop_reason is not None:
            self._finish(JobStatus.FAILED, self._reason or f"stopped: {self._stop_reason}")
            return
        blocked = self._blocked_legs()
        if blocked is not None:
            self._finish(JobStatus.FAILED, f"{self._reason}; no fallback: {blocked}" if self._reason
                         else f"no fallback: {blocked}")
            return
        if self._accept_refuted and not self._reducing:
            self._finish(JobStatus.FAILED, f"{self._reason}; no fallback for an open after an unanswered accept: "
                                           f"the verdict rests on the list's silence, and opening the legs again "
                                           f"could double the position")
            return
        mode = self.params.fallback_for(self.intent)
        if mode is None and self._position_guard:
            logger.warning("rfq job %s %s: no close fallback is configured; the limit engine (reduce-only) takes "
                           "the legs the position guard kept off the RFQ", self.trade_id, self.intent.name)
            mode = "limit"
        if mode is None:
            self._finish(JobStatus.FAILED, f"{self._reason}; no fallback configured")
            return
        engine = self._executor.limit if mode == "limit" else self._executor.smart
        if engine is None and mode == "smart" and self._executor.limit is not None:
            logger.warning("rfq job %s: smart fallback requested but no smart engine is configured; using limit",
                           self.trade_id)
            mode, engine = "limit", self._executor.limit
        if engine is None:
            self._finish(JobStatus.FAILED, f"{self._reason}; the {mode} fallback engine is not configured")
            return
        params = self._executor.limit_params if mode == "limit" else self._executor.smart_params
        try:
            self._inner = engine.start(self._trade, list(self.legs), self.intent, params,
                                       best_effort=self.best_effort)
        except Exception as exc:  # noqa: BLE001 - an unstartable fallback is a failed job, not a crash
            logger.exception("rfq job %s: the %s fallback could not start", self.trade_id, mode)
            self._finish(JobStatus.FAILED, f"{self._reason}; {mode} fallback could not start: {exc}")
            return
        self.fallback_mode = mode
        self.fallback_reason = self._reason
        self._phase = RFQPhase.FALLBACK
        logger.info("rfq job %s %s: %s; falling back to %s", self.trade_id, self.intent.name, self._reason, mode)

    def _step_fallback(self, now: float) -> None:
        assert self._inner is not None
        status = self._inner.advance(now)
        if status is JobStatus.WORKING and not self._inner.done:
            return
        self._status = status
        self._phase = RFQPhase.DONE if status is not JobStatus.FAILED else RFQPhase.FAILED

    def _finish(self, status: JobStatus, reason: str) -> None:
        self._status = status
        self._reason = reason
        self._phase = RFQPhase.FAILED if status is JobStatus.FAILED else RFQPhase.DONE
        log = logger.info if status is JobStatus.FILLED else logger.warning
        log("rfq job %s %s ended %s%s", self.trade_id, self.intent.name, status.value, f": {reason}" if reason else "")


class RFQExecutor:
    """Starts RFQ jobs (BEHAVIOUR.md §6.4). ``start`` sends nothing; ``advance`` does the work.

    ``limit`` / ``smart`` are the fallback engines; ``limit_params`` (default ``ExecutionParams()``)
    and ``smart_params`` (default None = the smart engine's defaults) configure them.
    """

    def __init__(self, client: RfqClient, ledger: Ledger, market: PriceSource, clock: Clock, *,
                 limit: ExecutionEngine | None = None, smart: ExecutionEngine | None = None,
                 limit_params: ExecutionParams | None = None, smart_params: Any = None,
                 max_requests_per_step: int = 6) -> None:
        if max_requests_per_step < 2:
            raise ValueError("max_requests_per_step must be >= 2")
        require("RFQExecutor client", client, RfqClient)
        require("RFQExecutor ledger", ledger, Ledger)
        require("RFQExecutor market", market, PriceSource)
        require("RFQExecutor clock", clock, Clock)
        require_optional("RFQExecutor limit", limit, ExecutionEngine)
        require_optional("RFQExecutor smart", smart, ExecutionEngine)
        self.client = client
        self.ledger = ledger
        self.market = market
        self.clock = clock
        self.limit = limit
        self.smart = smart
        self.limit_params = limit_params if limit_params is not None else ExecutionParams()
        self.smart_params = smart_params
        self.max_requests_per_step = max_requests_per_step

    def __repr__(self) -> str:
        return f"RFQExecutor(limit={self.limit is not None}, smart={self.smart is not None})"

    def start(self, trade: TradeRef, legs: list[LegTarget], intent: Intent, params: RFQParams | None, *,
              best_effort: bool = False) -> RFQJob:
        if params is None:
            params = RFQParams()
        if not isinstance(params, RFQParams):
            raise invalid("RFQExecutor.start", "params", params, "pass RFQParams or None")
        legs = checked_legs(legs)
        symbols = [leg.symbol for leg in legs]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"an RFQ cannot carry the same instrument twice: {symbols}")
        return RFQJob(self, trade, legs, Intent(intent), params, best_effort=best_effort,
                      started_at=self.clock.now())
