"""The order ledger: every order the daemon sends, recorded before it is sent and followed until final.

What the ledger guarantees, and why (BEHAVIOUR.md §4.7, §6.1, §8; API.md §8, §9, §11):

* **Deterministic ids, never reused.** Every order gets an 18-digit ``clientOrderId``
  ``PPP TTTTTTTTT LL I AAA`` that encodes the instance prefix, trade, leg, intent and an
  attempt that only ever grows per (trade, leg), also across restarts (``restore``). Two
  intentions for one leg can never share an idempotency key, and an order whose create
  answer was lost can always be found again by that id. An id with our prefix that the
  exchange shows and this ledger never recorded (an older copy of the store, another daemon
  with our prefix) is a floor the store keeps: the attempts of its leg continue above it
  (``_id_floor``), after a restart or an operator's resume too (docs/RECOVERY.md O2, L3).
* **Recorded before it is sent.** ``place`` commits the order as PENDING_SEND to the store
  *before* the POST; if that write fails the order is never sent. A crash between the two
  leaves a record recovery can resolve, never an order nobody knows.
* **Unknown stays unknown.** A create POST is never re-sent. An unanswered or ambiguous
  create becomes UNKNOWN and is resolved only by ``singleQuery?clientOrderId=``: found
  means it exists, "not found" past the clock-skew window means NOT_PLACED. A failed poll
  decides nothing (``refresh`` returns False), and a timeout is never read as "not found".
* **A verdict on missing data can be taken back.** NOT_PLACED after "not found" lookups and
  VANISHED rest on answers that did not come, not on the exchange's word, so the order is
  marked ``presumed``. Whenever the exchange later shows it (a poll, ``verify``, the
  reconciler's open list, order history or its back-off re-checks), its orderId, state and
  fills are adopted as the real state of that ledger order (persisted, CRITICAL once,
  ``order_verdict_reversed`` event): a working order blocks its leg again and its fills
  count for its trade. A presumed NOT_PLACED stays in memory (not archived) for
  ``PRESUMED_VERDICT_HORIZON_SECONDS`` and a VANISHED order for good, so the check can still
  reach them. A NOT_PLACED the ledger knows for certain (it never sent the POST) is not
  presumed and is never re-asked.
* **Fills are facts, counted once.** Exchange states 4 and 5 are not final; fills can land
  during a cancel and be reported after it (API.md 11.16). Cumulative fills never decrease,
  and a replacement is sized only after the order it replaces has been re-polled and the
  exchange *answered* (``settled_for_replacement``), so nothing is bought or sold twice.
* **Verify before believing an order gone.** ``verify`` looks an order the exchange does
  not show up by orderId, by clientOrderId and in the order history before settling it
  VANISHED; a young order is only "missing" (the exchange's lists lag fresh orders).
* **Caps.** No second non-final order on a (trade, leg), a bounded number of opening orders
  per trade, of live orders per symbol and trade, and no order at all on a symbol blocked
  by reconciliation: a runaway loop fails loudly (``LedgerCapError``) instead of trading.
  The per-trade count never refuses a reduce-only order (close, unwind, kill): a trade that
  has fought a long time to get out must still be able to get out (BEHAVIOUR 4.4: there is
  no last round); passing it is logged CRITICAL once per trade so a human looks.
* **The id space of a leg.** The attempt counter of a (trade, leg) runs to 999 whatever the
  intent. When it is used up, a reduce-only order (and a block fill, a fact to record) takes
  the lowest attempt never used with its own intent digit or its requote partner's: the
  same family, so every fill sum reads it where it did, and never an id the ledger (memory
  or archive) has recorded. When the family has none left, the order is refused with a
  CRITICAL naming the trade, the leg and what an operator can do.
* **Block fills.** RFQ fills are recorded as FILLED ledger orders with the next attempt id,
  and an RFQ accept is journaled before it is sent (``note_block_accept``), so the
  lifecycle reads every fill, order or block trade, from the ledger alone.
* **Snapping.** Quantities are floored to the lot with a tolerance (no ``0.5999…``),
  prices are snapped on the safe side and never below one tick, and no price is ever
  invented. The execution engines use the same rules, so they import them from here.
* **Perpetuals through the same door** (issue 13, docs/PERPETUALS.md). An order on a
  perpetual's symbol (``BTCUSD``) gets its id from the same scheme, is recorded before it
  is sent, and follows the same states; only the endpoints differ, and the switch is here,
  once: ``perp_create_order`` (LIMIT, GTC or IOC), ``perp_order`` (by orderId, or by
  clientOrderId while the outcome is unknown), ``perp_cancel_order`` and the perp order
  history, through the ``PerpLedgerClient`` part handed to the ledger. Its lot is the
  perp's quantity step (``place(lot=...)``). A reduce-only perp order is capped at the
  position the account holds on the side it reduces: the exchange refuses a reduce-only
  order larger than the position (10536), and an order that could flip the position is
  never sent. That position read comes *before* the order is recorded, so the capped
  quantity is what is committed and ``sent_at`` (the base of the "never reached the
  exchange" deadline) is stamped just before the POST, however long the read took. A read
  that fails records nothing; one that leaves nothing to reduce records NOT_PLACED once and
  refuses the symbol's reduce-only orders for ``PERP_POSITION_RETRY_SECONDS`` before an id
  is spent (an empty ``code 0`` answer during maintenance would otherwise burn one id per
  attempt).
"""
from __future__ import annotations

import bisect
import logging
from array import array
import math
import threading
from dataclasses import asdict, dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import Enum, IntEnum
from typing import Any, Callable, Container, Iterable, NoReturn, Sequence

from clock import Clock, iso_utc
from coincall_payloads import (
    ExchangeOrder,
    PerpOrder,
    PerpOrderState,
    PerpOrderType,
    PerpPosition,
    history_filters,
    next_page_filters,
    parse_order,
    parse_order_page,
)
from contracts import Side, is_perpetual_symbol
from errors import (
    EndpointNotFound,
    ExchangeError,
    LedgerCapError,
    OrderOutcomeUnknown,
    RateLimitedError,
    TraderError,
    TransportError,
)
from log_throttle import RepeatLimiter
from seams import LedgerClient, LedgerStore, PerpBooks, PerpLedgerClient, require, require_optional

logger = logging.getLogger(__name__)

LOT = 0.01
QTY_TOLERANCE = Decimal("1e-9")
TICK_TOLERANCE = Decimal("1e-9")
MAX_ATTEMPT = 999
# The trade sequence field of a clientOrderId: 9 digits (``PPP TTTTTTTTT LL I AAA``).
TRADE_SEQ_MAX = 999_999_999
UNKNOWN_RESOLVE_SECONDS = 30.0
# How much earlier than our send (on the exchange's clock) our own order may be stamped by the
# exchange: a request signed up to 1 s ahead is accepted and an offset under 0.5 s is left
# uncorrected (API.md 2.2), plus margin. An order created earlier than that is not ours
# (``OrderLedger._not_ours``); X-REQ-TS-DIFF when larger.
CREATE_TIME_SLACK_SECONDS = 2.0
# An order younger than this is never judged missing: the exchange's lists and lookups lag
# fresh orders (incident 38), so a not-found answer right after a send is normal.
VANISH_MIN_AGE_SECONDS = 30.0
# A cancel answered but the order still shown working this long after: the cancel did not
# take (a "not found" answer for a fresh order the lookups lag behind, incident 38), and the
# order is cancelled again rather than waited on for ever (``_status_for``).
CANCEL_RECHECK_SECONDS = 15.0
# The order-history search of a vanish verification: pages of 500 (API.md 8.6), from a
# minute before the order was sent (clock skew) to now.
VANISH_HISTORY_PAGE_SIZE = 500
VANISH_HISTORY_MAX_PAGES = 20
VANISH_HISTORY_MARGIN_SECONDS = 60.0
ORDER_VANISHED_EVENT = "order_vanished"
# Store event written before an RFQ accept is sent (see OrderLedger.note_block_accept).
BLOCK_ACCEPT_EVENT = "rfq_accept_sent"
# The exchange refused that accept with a code that proves nothing traded (``rfq.definitely_refused``):
# the marker is closed, so fills of a later fallback on the same legs are never taken for its block trade.
BLOCK_ACCEPT_REFUSED_EVENT = "rfq_accept_refused"
FILL_EPSILON = 1e-9
FILL_MEMO_LIMIT = 4096   # remembered leg_fill answers (a cache: cleared, never wrong, when full)
# How long every order of a finished trade must have been final and unchanged before the
# ledger lets the store alone keep them (``OrderLedger.archive_trade``): far beyond the window
# in which an exchange still reports a late fill (seconds, API.md 11.16) and the reconciler's
# late-fill watch (10 minutes), so nothing still asks about them on the hot paths.
ARCHIVE_QUIET_SECONDS = 3600.0
# How long a verdict reached on missing data (NOT_PLACED after "not found" lookups, VANISHED)
# stays open to the exchange's word: a presumed NOT_PLACED is kept in memory (not archived)
# that long (a VANISHED one for good), and the reconciler re-asks for it with back-off until
# then (``order_reconciliation``). A day is far beyond any lag of the exchange's lookups and
# lists seen so far (seconds to minutes, incident 38).
PRESUMED_VERDICT_HORIZON_SECONDS = 24 * 3600.0
VERDICT_REVERSED_EVENT = "order_verdict_reversed"
# Why a presumed NOT_PLACED was decided; records written before the ``presumed`` mark carry
# only this text, so it is how they are recognised (``LedgerOrder.from_record``).
NOT_FOUND_BY_CLIENT_ID = "not found by clientOrderId"
# After a positions read that left a reduce-only perp order nothing to send (or failed),
# further reduce-only orders on that symbol and side are refused for this long without a
# request and without spending a clientOrderId.
PERP_POSITION_RETRY_SECONDS = 30.0

# Create-order answers that do not prove nothing happened (BEHAVIOUR.md §6.1).
_UNKNOWN_CREATE_CODES = frozenset({500, 10000, 10582, 10577, 10576, 10583, 10537, 4005, 10605})
# The create answers that say another order holds the clientOrderId (10577: an open option
# order; 10576: any perp order that ever carried it). Unknown on their own (the first request
# of a replayed POST may be ours), but an order under that id created before ours was sent
# proves the refusal was of OUR request: the order is then REJECTED (``_foreign_order``).
_DUPLICATE_ID_CODES = frozenset({10576, 10577})
# Journal event of an order the exchange showed under one of our clientOrderIds that is not ours.
FOREIGN_ORDER_EVENT = "foreign_order_under_our_id"

_ID_DIGITS = 18


# =====================================================================================
# Intents and client order ids
# =====================================================================================


def open_block_accepts(accepts: Iterable[dict], refusals: Iterable[dict]) -> list[dict]:
    """The ``BLOCK_ACCEPT_EVENT`` events (``accepts``, in order) whose accept the exchange did
    not explicitly refuse (``refusals``: the ``BLOCK_ACCEPT_REFUSED_EVENT`` events): the accepts
    a restart must look up (docs/RECOVERY.md R1-R3)."""
    def key(payload: Any) -> tuple[Any, str, str]:
        payload = payload or {}
        return payload.get("trade_id"), str(payload.get("request_id")), str(payload.get("quote_id"))

    refused = {key(event.get("payload")) for event in refusals}
    return [event for event in accepts if key(event.get("payload")) not in refused]


# Fees are cumulative per order and only grow: a larger fee in a later answer is adopted.
FEE_EPSILON = 1e-9


class Intent(IntEnum):
    """Why an order exists; the digit ``I`` of the client order id."""

    OPEN = 1
    OPEN_REQUOTE = 2
    CLOSE = 3
    CLOSE_REQUOTE = 4
    UNWIND = 5
    UNWIND_REQUOTE = 6
    KILL = 7
    KILL_REQUOTE = 8

    def family(self) -> "Intent":
        """The first intent of the pair: fills of an order and its requotes belong together."""
        return Intent(self.value - 1) if self.value % 2 == 0 else self

    def requote(self) -> "Intent":
        """The requote partner (the even intent of the family)."""
        return Intent(self.family().value + 1)

    @property
    def reduce_only(self) -> bool:
        """Every close, unwind and kill order may only reduce a position (API.md §11.13)."""
        return self.family() is not Intent.OPEN


@dataclass(frozen=True)
class ClientOrderIdParts:
    """The decoded fields of a client order id ``PPP TTTTTTTTT LL I AAA``."""

    prefix: int
    trade_seq: int
    leg_index: int
    intent: int
    attempt: int


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be within {low}..{high}, got {value}")
    return value


def build_client_order_id(prefix: int, trade_seq: int, leg_index: int, intent: int, attempt: int) -> int:
    """The 18-digit id of BEHAVIOUR.md §6.1; the same inputs always give the same id.

    Example: prefix 101, trade 42, leg 1, close (3), attempt 7 -> 101000000042013007.
    """
    _check_int("prefix", prefix, 100, 899)
    _check_int("trade_seq", trade_seq, 0, TRADE_SEQ_MAX)
    _check_int("leg_index", leg_index, 0, 99)
    _check_int("intent", int(intent) if isinstance(intent, Intent) else intent, 1, 8)
    _check_int("attempt", attempt, 0, MAX_ATTEMPT)
    return (((prefix * 1_000_000_000 + trade_seq) * 100 + leg_index) * 10 + int(intent)) * 1000 + attempt


def parse_client_order_id(coid: int) -> ClientOrderIdParts:
    """Decode an id built by ``build_client_order_id``; ``ValueError`` for anything else."""
    if isinstance(coid, bool) or not isinstance(coid, int):
        raise ValueError(f"client order id must be an int, got {coid!r}")
    if len(str(coid)) != _ID_DIGITS or coid < 0:
        raise ValueError(f"client order id {coid} does not have {_ID_DIGITS} digits")
    attempt = coid % 1000
    rest = coid // 1000
    intent = rest % 10
    rest //= 10
    leg_index = rest % 100
    rest //= 100
    trade_seq = rest % 1_000_000_000
    prefix = rest // 1_000_000_000
    if not 100 <= prefix <= 899 or not 1 <= intent <= 8:
        raise ValueError(f"client order id {coid} is not one of ours (prefix {prefix}, intent {intent})")
    return ClientOrderIdParts(prefix, trade_seq, leg_index, intent, attempt)


def _exhausted_action(family: Intent, symbol: str) -> str:
    """What an operator can do for a leg whose ``family`` has no clientOrderId left."""
    if family in (Intent.CLOSE, Intent.UNWIND):
        return (f"The kill switch (`python main.py kill --strategy <its strategy> --yes`) closes it with KILL orders, "
                f"which have ids of their own; or close {symbol} by hand (the reconciler books a close made "
                f"outside on the exchange's fills)")
    if family is Intent.KILL:
        return (f"Close {symbol} by hand on the exchange; the reconciler books that close on the exchange's fills "
                f"(docs/RECOVERY.md S3)")
    return "No further order is sent for this leg; check the trade with `python main.py status`"


# =====================================================================================
# Snapping (API.md §9)
# =====================================================================================


def require_finite(name: str, value: Any) -> float:
    """``value`` as a finite float; ``ValueError`` naming ``name`` for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def snap_qty(qty: float, lot: float = LOT) -> float:
    """Floor ``qty`` to the lot with a 1e-9 tolerance (0.29999999999999993 -> 0.3); < lot -> 0.0."""
    value = require_finite("qty", qty)
    lot_d = Decimal(repr(require_finite("lot", lot)))
    if lot_d <= 0:
        raise ValueError(f"lot must be > 0, got {lot}")
    if value <= 0:
        return 0.0
    lots = ((Decimal(value) + QTY_TOLERANCE) / lot_d).to_integral_value(rounding=ROUND_FLOOR)
    return float(lots * lot_d) if lots >= 1 else 0.0


def snap_price(price: float, tick: float, side: int) -> float:
    """Snap to the tick on the safe side: buys down, sells up; never below one tick.

    A missing, zero or negative price is refused (``ValueError``): no price is invented.
    """
    value = require_finite("price", price)
    tick_value = require_finite("tick", tick)
    if value <= 0:
        raise ValueError(f"price must be > 0, got {price!r}")
    if tick_value <= 0:
        raise ValueError(f"tick must be > 0, got {tick!r}")
    side = Side.of(side)
    tick_d = Decimal(repr(tick_value))
    units = Decimal(value) / tick_d
    if side is Side.BUY:
        ticks = (units + TICK_TOLERANCE).to_integral_value(rounding=ROUND_FLOOR)
    else:
        ticks = (units - TICK_TOLERANCE).to_integral_value(rounding=ROUND_CEILING)
    return float(max(ticks, Decimal(1)) * tick_d)


# =====================================================================================
# Perpetual orders seen as the ledger sees every order
# =====================================================================================


def perp_order_view(order: PerpOrder) -> ExchangeOrder:
    """A perp order in the shape the ledger adopts (``ExchangeOrder``).

    The states -1 to 6 mean what they mean for options (API.md §14.8); -2, a conditional
    order not yet triggered, is working: it is read as NEW. An open-order row has no state.
    """
    state: int | None = None
    if order.state is not None:
        state = int(PerpOrderState.NEW if order.state is PerpOrderState.WAITING_EFFECT else order.state)
    return ExchangeOrder(
        order_id=order.order_id, client_order_id=order.client_order_id, symbol=order.symbol, side=order.side,
        qty=order.qty, price=order.price, fill_qty=order.filled_qty, avg_price=order.avg_price, fee=order.fee,
        state=state, reduce_only=None if order.reduce_only is None else int(order.reduce_only),
        create_time_ms=None if order.create_time_ms is None else float(order.create_time_ms),
        update_time_ms=None if order.update_time_ms is None else float(order.update_time_ms),
    )


# =====================================================================================
# Ledger orders
# =====================================================================================


class OrderStatus(str, Enum):
    """Our view of one order (BEHAVIOUR.md §6.1)."""

    PENDING_SEND = "PENDING_SEND"
    UNKNOWN = "UNKNOWN"
    LIVE = "LIVE"
    PARTIAL = "PARTIAL"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    NOT_PLACED = "NOT_PLACED"
    EXPIRED = "EXPIRED"
    INVALID = "INVALID"
    # The exchange does not know the order any more (by orderId, by clientOrderId, nor in its
    # order history): settled as not working, its known fills kept (docs/RECOVERY.md O8).
    VANISHED = "VANISHED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATUSES


# Final statuses whose order may still report a fill for a few seconds (API.md 11.16). A
# vanished order is among them: the verdict rests on missing data, so it is polled once more
# later, and an exchange that shows it again is believed (``OrderLedger._status_for``); the
# reconciler keeps re-checking it with back-off for a day (``order_reconciliation``).
LATE_FILL_STATUSES = frozenset({OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.INVALID,
                                OrderStatus.VANISHED})

_FINAL_STATUSES = frozenset({
    OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED,
    OrderStatus.NOT_PLACED, OrderStatus.EXPIRED, OrderStatus.INVALID, OrderStatus.VANISHED,
})

# Exchange ``state`` -> status (API.md §8.4). 4 and 5 keep the order non-final.
_STATE_STATUS = {
    -10: OrderStatus.INVALID,
    -1: OrderStatus.LIVE,
    0: OrderStatus.LIVE,
    1: OrderStatus.FILLED,
    2: OrderStatus.PARTIAL,
    3: OrderStatus.CANCELED,
    4: OrderStatus.CANCEL_REQUESTED,
    5: OrderStatus.CANCEL_REQUESTED,
    6: OrderStatus.INVALID,
    10: OrderStatus.EXPIRED,
}


@dataclass(slots=True)
class LedgerOrder:
    """One order as the ledger knows it; ``filled_qty``/``avg_price``/``fee`` are this order's own.

    Slotted: the ledger keeps every order it ever sent, so a per-order ``__dict__`` would be
    memory that grows with the daemon's history (about 40 % of each record).
    """

    client_order_id: int
    trade_id: str
    trade_seq: int
    leg_index: int
    intent: Intent
    attempt: int
    supersedes: int | None
    symbol: str
    side: Side
    qty: float
    price: float
    reduce_only: bool
    status: OrderStatus
    order_id: int | None = None
    filled_qty: float = 0.0
    avg_price: float = 0.0
    fee: float = 0.0
    sent_at: float = 0.0
    updated_at: float = 0.0
    exchange_state: int | None = None
    error_code: int | None = None
    error_msg: str = ""
    last_fill_at: float | None = None   # the exchange's time of the latest fill we saw (updateTime)
    # The status is a presumption from answers that did not come (NOT_PLACED after "not found"
    # lookups, VANISHED), not the exchange's word: the exchange showing the order reverses it.
    presumed: bool = False
    # The exchange's clock less ours when the order was recorded (the client's signing offset):
    # ``sent_at`` on the exchange's clock is ``sent_at + exchange_offset``, whatever the offset
    # is later (a clock corrected meanwhile must not make our own order look older than its send).
    # None for a record written before it was kept: no creation-time judgement is made on it.
    exchange_offset: float | None = None

    def __post_init__(self) -> None:
        self.side = Side.of(self.side)   # stored records carry the plain code

    @property
    def reversible(self) -> bool:
        """Whether the status is a verdict on missing data the exchange may still contradict:
        VANISHED always (it has no other ground), NOT_PLACED when presumed."""
        return self.status is OrderStatus.VANISHED or (self.presumed and self.status is OrderStatus.NOT_PLACED)

    def to_record(self) -> dict:
        """A JSON-safe dict (ids and the side stay ints) for the state store.

        ``presumed`` is written only when set: the record of every other order keeps the shape it
        always had. ``exchange_offset`` is written for every order recorded since it exists (0.0
        included), so its absence tells a record written before.
        """
        record = asdict(self)
        record["intent"] = int(self.intent)
        record["side"] = int(self.side)
        record["status"] = self.status.value
        if not self.presumed:
            del record["presumed"]
        if self.exchange_offset is None:
            del record["exchange_offset"]
        return record

    @classmethod
    def from_record(cls, d: dict) -> "LedgerOrder":
        """The order a stored record describes.

        A record written before the ``presumed`` mark existed is read as the verdict it was:
        VANISHED always rested on missing answers, and NOT_PLACED did when its reason is the
        "not found" lookup (the other NOT_PLACED reasons mean the POST was never made).
        """
        values = dict(d)
        values["intent"] = Intent(int(values["intent"]))
        values["status"] = OrderStatus(values["status"])
        values["client_order_id"] = int(values["client_order_id"])
        for key in ("order_id", "supersedes"):
            if values.get(key) is not None:
                values[key] = int(values[key])
        if "presumed" not in values:
            status = values["status"]
            values["presumed"] = status is OrderStatus.VANISHED or (
                status is OrderStatus.NOT_PLACED and values.get("error_msg") == NOT_FOUND_BY_CLIENT_ID)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


class ArchivedIds:
    """The client and exchange ids of archived orders, 16 bytes an order (two sorted arrays).

    Why not a dict: the ids are all that stays in memory of an archived order, for as long as
    the daemon runs, and a dict of two ints costs about 100 bytes an entry. Lookups bisect;
    an insert shifts the arrays, and archiving happens a few dozen times a day.
    """

    NO_ORDER_ID = 0   # an order the exchange never numbered (exchange ids are positive)
    _LARGEST = 2 ** 63 - 1

    @classmethod
    def fits(cls, client_order_id: int, order_id: int | None) -> bool:
        """Whether both ids fit the arrays (positive 64-bit integers; no id is ever None but the exchange's)."""
        return 0 < client_order_id <= cls._LARGEST and (order_id is None or 0 < order_id <= cls._LARGEST)

    def __init__(self) -> None:
        self._coids = array("q")
        self._order_ids = array("q")

    def __len__(self) -> int:
        return len(self._coids)

    def _at(self, client_order_id: int) -> int | None:
        at = bisect.bisect_left(self._coids, client_order_id)
        return at if at < len(self._coids) and self._coids[at] == client_order_id else None

    def holds(self, client_order_id: int) -> bool:
        return self._at(client_order_id) is not None

    def add(self, client_order_id: int, order_id: int | None) -> None:
        if self.holds(client_order_id):
            return
        at = bisect.bisect_left(self._coids, client_order_id)
        self._coids.insert(at, client_order_id)
        self._order_ids.insert(at, self.NO_ORDER_ID if order_id is None else order_id)

    def add_many(self, ids: Iterable[tuple[int, int | None]]) -> None:
        """Add many (client order id, exchange id) pairs at once: one sort, not an insert each."""
        merged = dict(zip(self._coids, self._order_ids))
        for client_order_id, order_id in ids:
            merged.setdefault(client_order_id, self.NO_ORDER_ID if order_id is None else order_id)
        ordered = sorted(merged.items())
        self._coids = array("q", (coid for coid, _ in ordered))
        self._order_ids = array("q", (order_id for _, order_id in ordered))

    def discard(self, client_order_id: int) -> None:
        at = self._at(client_order_id)
        if at is not None:
            del self._coids[at]
            del self._order_ids[at]

    def client_order_ids(self) -> list[int]:
        return self._coids.tolist()

    def order_ids(self) -> list[int]:
        return [order_id for order_id in self._order_ids if order_id != self.NO_ORDER_ID]


@dataclass(frozen=True, slots=True)
class FillSummary:
    """Filled quantity, VWAP and fees over a set of orders."""

    qty: float
    vwap: float
    fees: float


@dataclass(frozen=True)
class ForeignOrder:
    """An order the exchange showed under one of our clientOrderIds that cannot be ours.

    Why it is kept: two daemons with our prefix build the same clientOrderIds, so a lookup by
    clientOrderId can answer the other daemon's order. The ledger does not adopt it and hands
    it to the reconciler (``take_foreign_orders``), which raises the ``prefix_conflict`` of
    docs/RECOVERY.md O2 and pauses every strategy.
    """

    client_order_id: int
    ours: int | None          # the orderId the ledger holds for that clientOrderId (None: none yet)
    view: ExchangeOrder       # the other order, as the exchange showed it
    why: str                  # why it cannot be ours
    symbol: str               # our order's symbol (the view may not carry one)
    trade_id: str


def _view_problem(order: LedgerOrder, view: ExchangeOrder) -> str | None:
    """Why ``view`` is no answer about ``order`` (None when it is one).

    ``code`` 0 with an empty ``data`` parses to a view of nothing; a view naming another order
    (a routing or caching fault) would write that order's fills into ours.
    """
    if view.state is None and view.fill_qty is None:
        return "the answer carries neither a state nor a filled quantity"
    if view.client_order_id is not None and view.client_order_id != order.client_order_id:
        return f"the answer is about clientOrderId {view.client_order_id}"
    if view.order_id is not None and order.order_id is not None and view.order_id != order.order_id:
        return f"the answer is about orderId {view.order_id}, not {order.order_id}"
    return None


def summarize_fills(orders: Iterable[LedgerOrder]) -> FillSummary:
    """Σ fills, VWAP = Σ(fill × avg) / Σ fill, Σ fees; exact decimal sums of the reported values."""
    qty = Decimal(0)
    notional = Decimal(0)
    fees = Decimal(0)
    for order in orders:
        if order.filled_qty <= 0:
            fees += Decimal(repr(float(order.fee)))
            continue
        filled = Decimal(repr(float(order.filled_qty)))
        qty += filled
        notional += filled * Decimal(repr(float(order.avg_price)))
        fees += Decimal(repr(float(order.fee)))
    vwap = float(notional / qty) if qty > 0 else 0.0
    return FillSummary(float(qty), vwap, float(fees))


EventSink = Callable[[str, dict], None]


class OrderLedger:
    """Every order the daemon sends, recorded before it is sent and followed until final.

    ``store`` (optional) gets ``save_order(record)`` before each send and on every change;
    ``on_event(kind, payload)`` (optional) gets every order event (kinds ``order_recorded``,
    ``order_updated``, ``ledger_cap``). Thread-safe bookkeeping; requests run outside the lock.
    """

    def __init__(self, client: LedgerClient, clock: Clock, *, prefix: int = 101, ts_diff_ms: int = 5000,
                 store: LedgerStore | None = None, on_event: EventSink | None = None, max_orders_per_trade: int = 300,
                 max_live_per_symbol: int = 4, perp_client: PerpLedgerClient | None = None,
                 exchange_offset: Callable[[], float] | None = None) -> None:
        _check_int("prefix", prefix, 100, 899)
        require("OrderLedger client", client, LedgerClient)
        require_optional("OrderLedger perp_client", perp_client, PerpLedgerClient)
        self._perp_client = perp_client
        self._perp_books: PerpBooks | None = None
        require("OrderLedger clock", clock, Clock)
        require_optional("OrderLedger store", store, LedgerStore)
        self._client = client
        self._clock = clock
        self.prefix = prefix
        self._ts_diff_seconds = ts_diff_ms / 1000.0
        # The exchange's clock less ours (the client's signing offset), so an exchange time is
        # compared with ours on one clock (``_not_ours``); None: the clocks agree.
        self._exchange_offset = exchange_offset
        self._store = store
        self._on_event = on_event
        self._max_orders_per_trade = max_orders_per_trade
        self._max_live_per_symbol = max_live_per_symbol
        self._lock = threading.RLock()
        # Every order, in the order it was recorded (``get`` and the unfiltered ``orders``).
        self._orders: dict[int, LedgerOrder] = {}
        # The indexes every per-poll lookup reads, so its cost is that of one trade or leg and
        # never grows with history: orders by trade and by (trade, leg), both in recorded
        # order, and the non-final orders keyed by their recording position (``_position``).
        self._by_trade: dict[str, list[LedgerOrder]] = {}
        self._by_leg: dict[tuple[str, int], list[LedgerOrder]] = {}
        self._live: dict[int, LedgerOrder] = {}
        self._position: dict[int, int] = {}
        self._recorded = 0   # orders ever added: the next recording position
        # For the reconciler's once-a-minute questions, which would otherwise walk every order
        # ever sent: the VANISHED orders, and every order's (updated_at, position, id) kept
        # sorted, so "changed since t" is a bisection (whatever order the stamps came in: a
        # block fill stamped in the past, a clock stepped back, a restored store).
        self._vanished: dict[int, LedgerOrder] = {}
        self._update_keys: list[tuple[float, int, int]] = []
        self._update_key_of: dict[int, tuple[float, int, int]] = {}
        # ``leg_fill`` answers, valid while their leg's version (bumped by every change to an
        # order of the leg) is unchanged: a trade's fills are re-read on every tick, but only
        # change when one of its orders does. Bounded: cleared when it grows past the limit.
        self._leg_version: dict[tuple[str, int], int] = {}
        self._fill_memo: dict[tuple[str, int, Intent], tuple[int, FillSummary]] = {}
        self._attempts: dict[tuple[int, int], int] = {}
        # Once a leg's attempt counter is used up: per (trade_seq, leg, intent digit), the highest
        # attempt looked at for a spare id (every one below it is taken), and the legs and
        # families already reported, so each CRITICAL is written once (``_allocate``).
        self._spare_cursor: dict[tuple[int, int, Intent], int] = {}
        self._spare_noted: set[tuple[int, int, Intent | None]] = set()
        self._cap_passed: set[str] = set()   # trades whose reduce-only orders went past the order count
        # (symbol, side of the order) -> until when a reduce-only perp order there is refused
        # before any request, and why (``_perp_reduce_cap``).
        self._perp_retry_at: dict[tuple[str, Side], tuple[float, str]] = {}
        self._blocked: dict[str, str] = {}   # symbol -> why no order may go there (reconciliation)
        self._kept_blocks: set[str] = set()  # the blocks the store keeps across restarts (row L3)
        self._rechecked: set[int] = set()    # final orders polled once more after the late-fill grace
        # Orders of finished trades that only the store keeps (``archive_trade``): what is left
        # in memory of each is its exchange id, so the answers "is this order ours?" never
        # depend on what was archived; and the trades they belong to.
        self._archived = ArchivedIds()
        self._archived_trades: set[str] = set()
        self._repeats = RepeatLimiter(clock)  # one line per condition and interval, with a count
        # When each order's cancel was last requested (memory only: after a restart an order
        # still CANCEL_REQUESTED and shown working is cancelled again at once, ``_status_for``).
        self._cancel_requested_at: dict[int, float] = {}
        # Orders found under our clientOrderIds that are not ours (``_not_ours``): every
        # (clientOrderId, orderId) seen, so each is reported once a life, and those not yet
        # handed to the reconciler (``take_foreign_orders``).
        self._foreign_seen: set[tuple[int, int | None]] = set()
        self._foreign_new: list[ForeignOrder] = []
        self._restore_kept_blocks()

    def __repr__(self) -> str:
        return f"OrderLedger(prefix={self.prefix}, orders={len(self._orders)})"

    def _restore_kept_blocks(self) -> None:
        """The symbol blocks an earlier run kept (row L3) are in force again from construction.

        Why: a block that must last until an operator lifts it would otherwise end with the
        process, and the next start (the unknown orders behind it already reported) would
        not put it back.
        """
        if self._store is None:
            return
        kept = self._store.kept_symbol_blocks()
        with self._lock:
            for symbol, reason in kept.items():
                self._blocked[symbol] = reason
                self._kept_blocks.add(symbol)
        for symbol, reason in sorted(kept.items()):
            logger.critical("symbol %s blocked (kept from an earlier run until an operator resumes): %s",
                            symbol, reason)

    # ---- queries --------------------------------------------------------------------

    def get(self, client_order_id: int) -> LedgerOrder | None:
        """The order of that id; an archived one is first brought back into memory (with the
        rest of its trade), so whatever the caller does next to it is indexed as before."""
        with self._lock:
            order = self._orders.get(client_order_id)
            if order is None and self._archived.holds(client_order_id):
                self._unarchive(client_order_id)
                order = self._orders.get(client_order_id)
            return order

    def is_ours(self, client_order_id: int) -> bool:
        """True for any order this ledger recorded, archived ones included (no store read)."""
        with self._lock:
            return client_order_id in self._orders or self._archived.holds(client_order_id)

    def known_order_ids(self) -> set[int]:
        """The exchange ids of every order this ledger recorded, archived ones included: what
        tells our fills from somebody else's (close evidence, RFQ block fills)."""
        with self._lock:
            known = {o.order_id for o in self._orders.values() if o.order_id is not None}
            known.update(self._archived.order_ids())
            return known

    def known_client_order_ids(self) -> list[int]:
        """The client order ids of every order this ledger recorded, archived ones included."""
        with self._lock:
            return [*self._orders, *self._archived.client_order_ids()]

    def orders(self, trade_id: str | None = None, leg_index: int | None = None,
               family: Intent | None = None) -> list[LedgerOrder]:
        """Orders in the order they were recorded, optionally filtered.

        With a trade (and leg) the answer comes from the indexes: the cost is that of the
        trade's own orders, however many orders the ledger has seen. The orders of an archived
        trade are brought back from the store first (``archive_trade``). Without a trade, the
        answer is the orders kept in memory: ask ``known_order_ids``/``is_ours`` whether an
        order is ours.
        """
        with self._lock:
            if trade_id is not None and trade_id in self._archived_trades:
                self._unarchive_trade(trade_id)
            if trade_id is None:
                candidates: Iterable[LedgerOrder] = self._orders.values()
                if leg_index is not None:
                    candidates = [o for o in candidates if o.leg_index == leg_index]
            elif leg_index is None:
                candidates = self._by_trade.get(trade_id, ())
            else:
                candidates = self._by_leg.get((trade_id, leg_index), ())
            if family is None:
                return list(candidates)
            wanted = Intent(family).family()
            return [o for o in candidates if o.intent.family() is wanted]

    def vanished_orders(self) -> list[LedgerOrder]:
        """Orders settled VANISHED, in recorded order (the cost is theirs, not the history's)."""
        with self._lock:
            return self._in_recorded_order(self._vanished.values())

    def orders_updated_since(self, since: float) -> list[LedgerOrder]:
        """Every order whose ``updated_at`` is ``>= since``, in recorded order.

        Why: "what changed lately" is asked every reconciliation, and the answer is a few
        orders among all those ever sent: a bisection of the sorted stamps finds them. An
        order stamped NaN is never ``>= since`` and is not indexed.
        """
        with self._lock:
            first = bisect.bisect_left(self._update_keys, (float(since),))
            return self._in_recorded_order(self._orders[coid] for _stamp, _position, coid in self._update_keys[first:])

    def _in_recorded_order(self, orders: Iterable[LedgerOrder]) -> list[LedgerOrder]:
        position = self._position
        return sorted(orders, key=lambda o: position[o.client_order_id])

    def _note_update(self, order: LedgerOrder) -> None:
        """``order`` was added or its ``updated_at`` set (lock held): re-file it under its stamp."""
        coid = order.client_order_id
        keys = self._update_keys
        old = self._update_key_of.pop(coid, None)
        if old is not None:
            at = bisect.bisect_left(keys, old)
            if at < len(keys) and keys[at] == old:
                del keys[at]
        stamp = float(order.updated_at)
        if math.isnan(stamp):
            return
        key = (stamp, self._position[coid], coid)
        bisect.insort(keys, key)
        self._update_key_of[coid] = key

    def live_orders(self, trade_id: str | None = None) -> list[LedgerOrder]:
        """Non-final orders (PENDING_SEND and UNKNOWN included: they may exist), in recorded order."""
        with self._lock:
            live = [o for o in self._live.values() if trade_id is None or o.trade_id == trade_id]
            position = self._position
            live.sort(key=lambda o: position[o.client_order_id])
            return live

    def leg_fill(self, trade_id: str, leg_index: int, family: Intent) -> tuple[float, float, float]:
        """(filled qty, VWAP, fees) summed over every order of that leg and intent family."""
        key = (trade_id, leg_index, Intent(family).family())
        with self._lock:
            version = self._leg_version.get((trade_id, leg_index), 0)
            known = self._fill_memo.get(key)
            if known is not None and known[0] == version:
                summary = known[1]
            else:
                summary = summarize_fills(self.orders(trade_id, leg_index, family))
                if len(self._fill_memo) >= FILL_MEMO_LIMIT:
                    self._fill_memo.clear()
                self._fill_memo[key] = (version, summary)
        return summary.qty, summary.vwap, summary.fees

    def _touch(self, order: LedgerOrder) -> None:
        """An order of this leg was added or changed: its fill sums must be recomputed (lock held)."""
        leg = (order.trade_id, order.leg_index)
        self._leg_version[leg] = self._leg_version.get(leg, 0) + 1

    def attempts_used(self, trade_seq: int, leg_index: int) -> int:
        with self._lock:
            return self._attempts.get((trade_seq, leg_index), 0)

    def restore(self, records: Iterable[dict], *, ended_trades: Container[str] = frozenset()) -> None:
        """Load orders from the store's records after a restart; attempt counters continue
        after the highest.

        The orders of ``ended_trades`` (trades the lifecycle says ended for good) stay in the
        store alone when every order of the trade could be archived now (``_may_archive``):
        only their ids and attempt counters come into memory, as for a trade archived while
        running. Why: a restart after a year of trading would otherwise hold a year of orders
        (about 3.5 kB each once parsed) for the life of the process. A trade with any order
        that may not be archived yet is loaded whole, and reading an archived trade's orders
        later brings them back (``orders(trade_id)``, ``get``), so nothing is lost either way.
        """
        with self._lock:
            now = self._clock.now()
            held: dict[str, list[tuple[int, int | None]]] = {}
            loaded_whole: set[str] = set()
            for record in records:
                order = LedgerOrder.from_record(record)
                key = (order.trade_seq, order.leg_index)
                self._attempts[key] = max(self._attempts.get(key, 0), order.attempt)
                trade_id = order.trade_id
                if self._store is not None and trade_id in ended_trades and trade_id not in loaded_whole:
                    if self._may_archive(order, now):
                        held.setdefault(trade_id, []).append((order.client_order_id, order.order_id))
                        continue
                    loaded_whole.add(trade_id)
                self._add(order)
            for trade_id in loaded_whole:
                if held.pop(trade_id, None) and self._store is not None:
                    for record in self._store.load_orders(trade_id):   # the ones held back so far
                        if int(record["client_order_id"]) not in self._orders:
                            self._add(LedgerOrder.from_record(record))
            self._archived.add_many(pair for pairs in held.values() for pair in pairs)
            self._archived_trades.update(held)
            in_memory = len(self._orders)
        if held:
            logger.info("restart: the orders of %d ended trades stay in the state store (%d orders in memory)",
                        len(held), in_memory)

    def _may_archive(self, order: LedgerOrder, now: float) -> bool:
        """Whether ``order`` can leave memory: final, not live, unchanged for
        ``ARCHIVE_QUIET_SECONDS``, and with ids the archive can hold (lock held).

        Not while it may be reversed: VANISHED never (the reconciler watches it for good once
        its re-checks end), a presumed NOT_PLACED not before ``PRESUMED_VERDICT_HORIZON_SECONDS``
        after its verdict. Why: the reconciler finds such orders among those in memory
        (``vanished_orders``, ``orders_updated_since``); one archived early could no longer be
        matched when the exchange shows it, and its fills would belong to no trade.
        """
        if order.status is OrderStatus.VANISHED:
            return False
        if order.reversible and now - float(order.updated_at) < PRESUMED_VERDICT_HORIZON_SECONDS:
            return False
        return (order.status.is_final and order.client_order_id not in self._live
                and now - float(order.updated_at) >= ARCHIVE_QUIET_SECONDS
                and ArchivedIds.fits(order.client_order_id, order.order_id))

    def _add(self, order: LedgerOrder) -> None:
        """Put ``order`` in the ledger and its indexes (lock held); a known id is replaced in place,
        keeping its recorded position, as the plain dict of orders always did."""
        coid = order.client_order_id
        previous = self._orders.get(coid)
        self._orders[coid] = order
        if previous is None:
            self._position[coid] = self._recorded
            self._recorded += 1
            self._by_trade.setdefault(order.trade_id, []).append(order)
            self._by_leg.setdefault((order.trade_id, order.leg_index), []).append(order)
        else:
            self._touch(previous)
            self._unindex(previous)
            self._insert_at_position(self._by_trade.setdefault(order.trade_id, []), order)
            self._insert_at_position(self._by_leg.setdefault((order.trade_id, order.leg_index), []), order)
        self._track_live(order)
        self._touch(order)
        self._note_update(order)

    # ---- archive: finished trades' orders kept by the store alone ------------------------

    def archive_trade(self, trade_id: str) -> bool:
        """Let the store alone keep the orders of a finished trade; True when none is left in memory.

        Why: the ledger would otherwise hold every order the daemon ever sent (about a kilobyte
        each with its indexes), so its memory would grow with its history. The lifecycle asks
        only for trades that have ended for good; the ledger still answers False ("ask again
        later") while any order of the trade is not final, is VANISHED or a presumed NOT_PLACED
        younger than ``PRESUMED_VERDICT_HORIZON_SECONDS`` (verdicts on missing data, which the
        exchange may yet reverse: ``_may_archive``), or changed less than
        ``ARCHIVE_QUIET_SECONDS`` ago, and whenever there is no store to read them back from.
        Every order is written to the store once more first: a failed write keeps the trade.
        What stays in memory is each order's client and exchange id (``is_ours``,
        ``known_order_ids``) and the attempt counters (a client order id is never reused).
        Reading an archived order (``get``, ``orders(trade_id)``) brings its trade back.
        """
        with self._lock:
            if trade_id in self._archived_trades:
                return True
            orders = list(self._by_trade.get(trade_id, ()))
            if not orders:
                return True
            if self._store is None:
                return False
            now = self._clock.now()
            if not all(self._may_archive(order, now) for order in orders):
                return False
            try:
                for order in orders:
                    self._store.save_order(order.to_record())
            except Exception:  # the store must hold them before memory lets go
                logger.warning("trade %s: its orders stay in memory (state store write failed)", trade_id,
                               exc_info=True)
                return False
            for order in orders:
                self._forget(order)
            for leg in {order.leg_index for order in orders}:
                self._by_leg.pop((trade_id, leg), None)
                self._leg_version.pop((trade_id, leg), None)
            self._by_trade.pop(trade_id, None)
            for key in [key for key in self._fill_memo if key[0] == trade_id]:
                del self._fill_memo[key]
            self._archived_trades.add(trade_id)
        logger.debug("trade %s: %d finished orders archived to the state store", trade_id, len(orders))
        return True

    def _forget(self, order: LedgerOrder) -> None:
        """Drop ``order`` from memory, keeping its ids (lock held; its trade's indexes go with the trade)."""
        coid = order.client_order_id
        del self._orders[coid]
        del self._position[coid]
        key = self._update_key_of.pop(coid, None)
        if key is not None:
            at = bisect.bisect_left(self._update_keys, key)
            if at < len(self._update_keys) and self._update_keys[at] == key:
                del self._update_keys[at]
        self._rechecked.discard(coid)
        self._archived.add(coid, order.order_id)

    def _unarchive(self, client_order_id: int) -> None:
        """Bring back the trade of an archived order (lock held)."""
        assert self._store is not None, "orders are archived only with a store"
        record = self._store.load_order(client_order_id)
        if record is None:
            raise LookupError(f"archived order {client_order_id} is missing from the state store")
        self._unarchive_trade(str(record["trade_id"]))

    def _unarchive_trade(self, trade_id: str) -> None:
        """Read a trade's archived orders back into memory and every index (lock held).

        They come back in client-order-id order, after every order recorded so far: recorded
        order among them is not kept by the store, and nothing that reads them depends on it.
        """
        assert self._store is not None, "orders are archived only with a store"
        for record in self._store.load_orders(trade_id):
            order = LedgerOrder.from_record(record)
            self._archived.discard(order.client_order_id)
            if order.client_order_id not in self._orders:
                self._add(order)
        self._archived_trades.discard(trade_id)
        logger.info("trade %s: archived orders read back from the state store", trade_id)

    def _unindex(self, order: LedgerOrder) -> None:
        """Take ``order`` out of the trade and leg indexes (it is being replaced)."""
        coid = order.client_order_id
        trade_bucket = self._by_trade.get(order.trade_id, [])
        trade_bucket[:] = [o for o in trade_bucket if o.client_order_id != coid]
        leg_key = (order.trade_id, order.leg_index)
        leg_bucket = self._by_leg.get(leg_key, [])
        leg_bucket[:] = [o for o in leg_bucket if o.client_order_id != coid]
        if not trade_bucket:
            self._by_trade.pop(order.trade_id, None)
        if not leg_bucket:
            self._by_leg.pop(leg_key, None)

    def _insert_at_position(self, bucket: list[LedgerOrder], order: LedgerOrder) -> None:
        position = self._position[order.client_order_id]
        at = next((i for i, o in enumerate(bucket) if self._position[o.client_order_id] > position), len(bucket))
        bucket.insert(at, order)

    def _track_live(self, order: LedgerOrder) -> None:
        """Keep the sets of non-final and of VANISHED orders in step with ``order``'s status (lock held)."""
        if order.status.is_final:
            self._live.pop(order.client_order_id, None)
        else:
            self._live[order.client_order_id] = order
        if order.status is OrderStatus.VANISHED:
            self._vanished[order.client_order_id] = order
        else:
            self._vanished.pop(order.client_order_id, None)

    # ---- place ------------------------------------------------------------------------

    def place(self, *, trade_id: str, trade_seq: int, leg_index: int, intent: Intent, symbol: str, side: int,
              qty: float, price: float, tick_size: float, supersedes: int | None = None,
              max_live_per_trade: int | None = None, lot: float = LOT) -> LedgerOrder:
        """Record, then send one GTC limit order; returns it LIVE, REJECTED or UNKNOWN (NOT_PLACED
        for a reduce-only perp order the account's position leaves nothing to send).

        Refuses (``ValueError``) a quantity below the lot or a missing price, and
        (``LedgerCapError``, nothing sent) any cap violation or a second non-final order on
        the same (trade, leg). ``lot`` is the instrument's quantity step (a perp's is finer
        than the options' 0.01); an order on a perpetual goes to the perp endpoints. The
        returned order may carry its intent's requote partner as intent once the leg's attempt
        counter is used up (``_allocate``).

        A reduce-only perp order reads the account's position *before* it is recorded
        (``_perp_reduce_cap``): the quantity committed is the capped one, and ``sent_at`` is
        stamped after that read, just before the POST. Why: the read is a GET that may retry
        for a minute or more, and the "never reached the exchange" deadline is counted from
        ``sent_at``; stamped before the read, a lagging lookup right after the POST could
        settle a live order NOT_PLACED. A read that fails raises ``ValueError`` with nothing
        recorded (no clientOrderId spent).
        """
        intent = Intent(intent)
        side = Side.of(side)
        if is_perpetual_symbol(symbol):
            self._perp_api(symbol)   # no perp client: refused before anything is recorded
        snapped_qty = snap_qty(qty, lot)
        if snapped_qty < lot - FILL_EPSILON:
            raise ValueError(f"quantity {qty!r} is below the {lot:g} lot: nothing to send")
        snapped_price = snap_price(price, tick_size, side)
        unsent = ""
        reduce_only = intent.reduce_only
        if intent.reduce_only and is_perpetual_symbol(symbol):
            with self._lock:   # a refusal costs no position read
                if trade_id in self._archived_trades:
                    self._unarchive_trade(trade_id)
                self._check_caps(trade_id, leg_index, symbol, intent, max_live_per_trade)
            snapped_qty, unsent, reduce_only = self._perp_reduce_cap(trade_id, leg_index, symbol, side, snapped_qty)
        with self._lock:
            if trade_id in self._archived_trades:   # a trade trading again counts all its orders
                self._unarchive_trade(trade_id)
            self._check_caps(trade_id, leg_index, symbol, intent, max_live_per_trade)
            digit, attempt = self._allocate(trade_id, trade_seq, leg_index, intent, symbol,
                                            spare_ids=intent.reduce_only)
            coid = build_client_order_id(self.prefix, trade_seq, leg_index, digit, attempt)
            now = self._clock.now()   # after any position read: the POST follows the commit below
            order = LedgerOrder(
                client_order_id=coid, trade_id=trade_id, trade_seq=trade_seq, leg_index=leg_index,
                intent=digit, attempt=attempt, supersedes=supersedes, symbol=symbol, side=side,
                qty=snapped_qty, price=snapped_price, reduce_only=reduce_only,
                status=OrderStatus.NOT_PLACED if unsent else OrderStatus.PENDING_SEND, sent_at=now, updated_at=now,
                error_msg=unsent, exchange_offset=self._offset_now(),
            )
            self._add(order)
            if unsent:
                self._record_unsent(order)
            else:
                self._record_before_send(order)
        if unsent:
            logger.warning("order %d on %s not sent: %s", coid, symbol, unsent)
        else:
            self._send(order)
        return order

    def _check_caps(self, trade_id: str, leg_index: int, symbol: str, intent: Intent,
                    max_live_per_trade: int | None) -> None:
        """Refuse (``LedgerCapError``) an order a cap forbids (lock held).

        The count of a trade's orders stops runaway *opening* only. A reduce-only order goes
        past it (logged CRITICAL once per trade): after a long kill fight against refusals or
        an empty book the count is reached, and refusing the close then would leave the
        position with no way out (BEHAVIOUR 4.4: there is no last round).
        """
        if symbol in self._blocked:
            self._cap_violation(trade_id, symbol, f"{symbol} is blocked ({self._blocked[symbol]}) until an "
                                                  f"operator resumes the strategy")
        mine = self._by_trade.get(trade_id, ())
        if any(not o.status.is_final for o in self._by_leg.get((trade_id, leg_index), ())):
            self._cap_violation(trade_id, symbol, f"leg {leg_index} of {trade_id} already has a non-final order")
        if len(mine) >= self._max_orders_per_trade:
            if not intent.reduce_only:
                self._cap_violation(trade_id, symbol, f"{trade_id} reached {self._max_orders_per_trade} orders")
            if trade_id not in self._cap_passed:
                self._cap_passed.add(trade_id)
                detail = (f"{trade_id} has {len(mine)} orders, at or past the cap of {self._max_orders_per_trade}; "
                          f"its reduce-only {intent.name} orders on {symbol} still go out (the cap stops runaway "
                          f"opening, never a way out): look at why its closes do not fill")
                logger.critical("ledger cap passed: %s", detail)
                self._emit("ledger_cap_passed", {"trade_id": trade_id, "symbol": symbol, "detail": detail})
        live_symbol = sum(1 for o in self._live.values() if o.symbol == symbol)
        if live_symbol >= self._max_live_per_symbol:
            self._cap_violation(trade_id, symbol, f"{symbol} already has {live_symbol} live orders")
        if max_live_per_trade is not None:
            live_trade = sum(1 for o in self._live.values() if o.trade_id == trade_id)
            if live_trade >= max_live_per_trade:
                self._cap_violation(trade_id, symbol, f"{trade_id} already has {live_trade} live orders")

    def _allocate(self, trade_id: str, trade_seq: int, leg_index: int, intent: Intent, symbol: str, *,
                  spare_ids: bool) -> tuple[Intent, int]:
        """The intent digit and attempt of the next clientOrderId of a (trade, leg) (lock held).

        The counter hands out 1 to 999 in turn, whatever the intent, so up to there an id is
        new by construction. Past it an opening order is refused: a runaway open must stop.
        With ``spare_ids`` (a reduce-only order, a block fill) the id space is not used up yet:
        the same attempt under another intent digit is another id, and each attempt went to
        one digit only. The lowest attempt that no recorded order (in memory or archived) has
        with the intent's own digit, then with its requote partner's, is taken; the family is
        kept, so the fill sums per family (the lifecycle's, the hedge's) read it where they
        read the rest. No id is ever taken twice: every id is recorded before it is sent, and
        ``is_ours`` answers for the archive too. When the family has nothing left: CRITICAL
        once with what an operator can do, then ``LedgerCapError``.

        Ids with our prefix that the exchange shows and this ledger never recorded (a store
        restored from an older copy, another daemon with our prefix) are floors kept by the
        store (``_id_floor``): the counter continues above the highest attempt seen on the
        leg, and a spare id is looked for above the highest seen with its digit, so such an
        id is never sent again (docs/RECOVERY.md O2, L3).
        """
        key = (trade_seq, leg_index)
        attempt = max(self._attempts.get(key, 0), self._id_floor(trade_seq, leg_index, None)) + 1
        if attempt <= MAX_ATTEMPT:
            self._attempts[key] = attempt
            return intent, attempt
        if not spare_ids:
            self._cap_violation(trade_id, symbol, f"leg {leg_index} of {trade_id} used all {MAX_ATTEMPT} attempts")
        family = intent.family()
        for digit in (intent, family if intent is not family else family.requote()):
            cursor = (trade_seq, leg_index, digit)
            first = max(self._spare_cursor.get(cursor, 0), self._id_floor(trade_seq, leg_index, digit)) + 1
            for spare in range(first, MAX_ATTEMPT + 1):
                self._spare_cursor[cursor] = spare
                if self.is_ours(build_client_order_id(self.prefix, trade_seq, leg_index, digit, spare)):
                    continue
                if (trade_seq, leg_index, None) not in self._spare_noted:
                    self._spare_noted.add((trade_seq, leg_index, None))
                    logger.critical("trade %s leg %d (%s) used all %d attempts; its %s orders continue on the "
                                    "attempts its %s family never used (no clientOrderId is used twice)", trade_id,
                                    leg_index, symbol, MAX_ATTEMPT, intent.name, family.name)
                return digit, spare
        if (trade_seq, leg_index, family) not in self._spare_noted:
            self._spare_noted.add((trade_seq, leg_index, family))
            logger.critical("trade %s leg %d (%s): every clientOrderId of the %s family is used; no %s order can be "
                            "sent for this leg any more. %s", trade_id, leg_index, symbol, family.name, family.name,
                            _exhausted_action(family, symbol))
        self._cap_violation(trade_id, symbol, f"leg {leg_index} of {trade_id} used every clientOrderId of the "
                                              f"{family.name} family")

    def _id_floor(self, trade_seq: int, leg_index: int, intent: int | None) -> int:
        """The highest attempt of (trade_seq, leg_index) (one intent digit, or any) that the exchange
        showed with our prefix and this ledger never recorded (``persistence.raise_client_id_floors``).

        Read from the store at each allocation, so a floor the reconciler wrote is in force at
        once and after any restart. A failed read raises: nothing is recorded or sent.
        """
        if self._store is None:
            return 0
        return int(self._store.client_id_floor(trade_seq, leg_index, None if intent is None else int(intent)))

    def _cap_violation(self, trade_id: str, symbol: str, detail: str) -> NoReturn:
        logger.critical("ledger cap: %s; no order sent", detail)
        self._emit("ledger_cap", {"trade_id": trade_id, "symbol": symbol, "detail": detail})
        raise LedgerCapError(detail)

    def _record_unsent(self, order: LedgerOrder) -> None:
        """Record an order that will not be sent (lock held): best effort, since nothing can reach
        the exchange under its id; a failed write is logged and the id stays spent in memory."""
        if self._store is not None:
            try:
                self._store.save_order(order.to_record())
            except Exception:
                logger.warning("state store write failed for unsent order %d", order.client_order_id,
                               exc_info=True)
        self._emit("order_recorded", order.to_record())

    def _record_before_send(self, order: LedgerOrder) -> None:
        """Commit PENDING_SEND; if that fails the order is never sent."""
        if self._store is not None:
            try:
                self._store.save_order(order.to_record())
            except Exception as exc:
                order.status = OrderStatus.NOT_PLACED
                order.error_msg = f"state store write failed before send: {exc}"
                with self._lock:
                    self._track_live(order)
                    self._touch(order)
                logger.critical("order %d not sent: %s", order.client_order_id, order.error_msg)
                raise
        self._emit("order_recorded", order.to_record())

    # ---- perpetuals -------------------------------------------------------------------

    def _perp_api(self, symbol: str) -> PerpLedgerClient:
        """The perp endpoints; ``ValueError`` (nothing sent) when the ledger was built without them."""
        if self._perp_client is None:
            raise ValueError(f"{symbol} is a perpetual and this ledger has no perpetual client: nothing sent")
        return self._perp_client

    def attach_perp_books(self, books: PerpBooks) -> None:
        """Our trades' perp legs (the lifecycle's books), read before a reduce-only perp order
        is capped (``_netting_close``). Attached by the wiring once the lifecycle exists, since
        the lifecycle is built on this ledger; without it a close is always reduce-only."""
        require("OrderLedger perp books", books, PerpBooks)
        self._perp_books = books

    def _perp_position_rows(self, symbol: str) -> list[PerpPosition]:
        """The account's position rows on ``symbol`` (one on a one-way account)."""
        return [position for position in self._perp_api(symbol).perp_positions() if position.symbol == symbol]

    def _perp_reduce_cap(self, trade_id: str, leg_index: int, symbol: str, side: Side,
                         qty: float) -> tuple[float, str, bool]:
        """The quantity a closing perp order may be sent with, why it cannot be sent at all
        ("" when it can), and whether it goes reduce-only; called before the order is recorded.

        Reduce-only, capped at the account's position on the other side, is the rule. The one
        exception is a close the account nets against another of our trades (``_netting_close``):
        it goes out whole and without the flag, so the account moves by this leg alone.

        Nothing to reduce (flat, or only a position on the order's own side) and no netting
        close comes back as a reason: the order is recorded NOT_PLACED and never sent, as it
        always was. The exchange also gives an empty list with ``code 0`` during maintenance,
        which is no evidence of a flat account (issue 9), and every attempt would spend a
        clientOrderId of the leg and a read; so for ``PERP_POSITION_RETRY_SECONDS`` after such
        an answer, or after a failed read, a reduce-only order on that symbol and side is
        refused with ``ValueError`` before any request or id. A failed read is itself such a
        refusal.
        """
        key = (symbol, side)
        with self._lock:
            held = self._perp_retry_at.get(key)
        if held is not None and self._clock.now() < held[0]:
            raise ValueError(f"reduce-only {side.name} {symbol}: {held[1]}; the position is read again in "
                             f"{held[0] - self._clock.now():.0f} s: nothing recorded, nothing sent")
        try:
            rows = self._perp_position_rows(symbol)
        except (TraderError, OSError) as exc:
            self._hold_perp_reduce(key, f"the position read failed ({exc})")
            raise ValueError(f"reduce-only {side.name} {symbol}: the position read before it failed ({exc}): "
                             f"nothing recorded, nothing sent") from exc
        reducible = next((float(row.qty) for row in rows if row.side is side.opposite), 0.0)
        if reducible < qty - FILL_EPSILON:
            netting = self._netting_close(trade_id, leg_index, symbol, side, qty, rows)
            if netting:
                with self._lock:
                    self._perp_retry_at.pop(key, None)
                logger.warning("%s %s %s of %s leg %d goes without reduce-only: %s", side.name, qty, symbol, trade_id,
                               leg_index, netting)
                return qty, "", False
        if reducible <= FILL_EPSILON:
            why = f"the account holds no {symbol} position to reduce"
            self._hold_perp_reduce(key, why)
            return qty, f"reduce-only: {why}", True
        with self._lock:
            self._perp_retry_at.pop(key, None)
        if reducible < qty - FILL_EPSILON:
            # The exchange's position is a whole number of its steps: no snapping needed.
            capped = round(reducible, 8)
            logger.warning("reduce-only %s %s: qty capped at the account's position, %s instead of %s", side.name,
                           symbol, capped, qty)
            return capped, "", True
        return qty, "", True

    def _netting_close(self, trade_id: str, leg_index: int, symbol: str, side: Side, qty: float,
                       rows: Sequence[PerpPosition]) -> str:
        """Why a close the account's position cannot cover may go out whole, not reduce-only
        ("" when it may not: the reduce-only cap then applies).

        The account nets every trade's perp legs into one position, so a close of our long
        0.01 while another of our trades is short 0.01 finds a flat account: reduce-only, it
        is capped at nothing and the trade can never end (a kill of both never finished). Sent
        whole and without the flag, it moves the account by exactly this leg, to what our
        other trades hold. That is only safe where our books explain the account *exactly*,
        so every condition must hold, else the cap stands (fail closed):

        * the books are attached, and this (trade, leg) holds at least ``qty`` on the side
          the order reduces (a close never goes beyond its own leg);
        * the account shows at most one position row for the symbol (one-way);
        * the sum of our active trades' legs on the symbol equals the account's signed
          position. A fill not yet booked, a position of somebody else, or one closed
          outside the daemon breaks the equality and keeps the order reduce-only.

        An empty position list is read as flat here too: then our legs sum to zero, and the
        order moves the account by this leg alone, which a close of it must do in any case.
        """
        books = self._perp_books
        if books is None or len(rows) > 1:
            return ""
        legs = books.perp_legs(symbol)
        own = legs.get((trade_id, leg_index), 0.0)
        if side.sign * own >= -FILL_EPSILON or qty > abs(own) + FILL_EPSILON:
            return ""
        ours = math.fsum(legs.values())
        account = math.fsum(row.signed_qty for row in rows)
        if abs(ours - account) > FILL_EPSILON:
            return ""
        return (f"the account's {account:+g} is our trades' legs netted ({len(legs)} legs, this one {own:+g}); a "
                f"reduce-only close would be capped at {max(0.0, -side.sign * account):g}, so it goes whole and the "
                f"account moves by this leg alone")

    def _hold_perp_reduce(self, key: tuple[str, Side], why: str) -> None:
        """No reduce-only perp order on ``key`` for ``PERP_POSITION_RETRY_SECONDS``: the engines ask
        on every tick, and each ask would otherwise cost a position read (and an id)."""
        with self._lock:
            self._perp_retry_at[key] = (self._clock.now() + PERP_POSITION_RETRY_SECONDS, why)

    def _send_perp(self, order: LedgerOrder) -> int:
        """Send a perp order (LIMIT GTC); a reduce-only one was capped before it was recorded."""
        return self._perp_api(order.symbol).perp_create_order(
            order.symbol, order.qty, order.side, order.client_order_id, order_type=PerpOrderType.LIMIT,
            price=order.price, time_in_force="GTC", reduce_only=order.reduce_only)

    def _query_view(self, order: LedgerOrder, *, by_client_id: bool) -> ExchangeOrder | None:
        """The exchange's view of ``order`` by orderId (or clientOrderId): the one place that
        knows a perp order is read from the perp endpoint. Raises what the client raises."""
        if is_perpetual_symbol(order.symbol):
            client = self._perp_api(order.symbol)
            found = client.perp_order(client_order_id=order.client_order_id) if by_client_id \
                else client.perp_order(order_id=order.order_id)
            return perp_order_view(found)
        data = self._client.query_order(client_order_id=order.client_order_id) if by_client_id \
            else self._client.query_order(order_id=order.order_id)
        return parse_order(data)

    def _send(self, order: LedgerOrder) -> None:
        try:
            if is_perpetual_symbol(order.symbol):
                order_id = self._send_perp(order)
            else:
                order_id = self._client.create_order(
                    order.symbol, order.qty, order.side, order.price, order.client_order_id,
                    reduce_only=order.reduce_only, time_in_force="GTC", trade_type=1,
                )
        except (OrderOutcomeUnknown, TransportError) as exc:
            self._set_unknown(order, None, str(exc))
        except ExchangeError as exc:
            if isinstance(exc, RateLimitedError) or exc.code in _UNKNOWN_CREATE_CODES or exc.outcome_unknown:
                self._set_unknown(order, exc.code, exc.msg)
            else:
                self._update(order, status=OrderStatus.REJECTED, error_code=exc.code, error_msg=exc.msg)
                logger.warning("order %d on %s rejected: %s %s", order.client_order_id, order.symbol,
                               exc.code, exc.msg)
        except EndpointNotFound as exc:
            # A 404 from whatever answered (a gateway mid-rollout, a misroute) proves nothing
            # about the order service behind it: resolved by clientOrderId like a 5xx, and a
            # route that is really missing ends as a presumed NOT_PLACED (reversible).
            self._set_unknown(order, 404, str(exc))
        except Exception as exc:  # an unexpected failure may still have sent it: resolve by query
            logger.exception("order %d: unexpected failure while sending", order.client_order_id)
            self._set_unknown(order, None, f"{type(exc).__name__}: {exc}")
        else:
            self._update(order, status=OrderStatus.LIVE, order_id=int(order_id))

    def _offset_now(self) -> float:
        """The exchange's clock less ours now (0.0 when the ledger was given no offset)."""
        return float(self._exchange_offset()) if self._exchange_offset is not None else 0.0

    def _set_unknown(self, order: LedgerOrder, code: int | None, msg: str) -> None:
        logger.warning("order %d on %s: outcome unknown (%s); resolving by clientOrderId",
                       order.client_order_id, order.symbol, msg)
        self._update(order, status=OrderStatus.UNKNOWN, error_code=code, error_msg=msg)

    # ---- late fills (API.md 11.16) -------------------------------------------------------

    def late_fill_possible(self, order: LedgerOrder) -> bool:
        """A final, not fully filled order that has not been polled again since it turned final.

        The exchange can show a cancelled order with ``fillQty`` 0 and report its fill a few
        seconds later; whatever replaces it must wait for one more poll after a grace.
        """
        return (order.status in LATE_FILL_STATUSES and order.filled_qty < order.qty - FILL_EPSILON
                and order.client_order_id not in self._rechecked)

    def settled_for_replacement(self, order: LedgerOrder | None, now: float, grace_seconds: float,
                                may_request: Callable[[], bool]) -> bool:
        """True once ``order`` can no longer report a fill we have not seen, so its replacement
        may be sized; both execution engines ask this before replacing an order.

        A final, not fully filled order is polled once more ``grace_seconds`` after it
        turned final (``may_request`` grants that request from the caller's budget).
        """
        if order is None or not self.late_fill_possible(order):
            return True
        if now - float(order.updated_at) < grace_seconds or not may_request():
            return False
        # Only an answer settles it: a failed poll proves nothing, and sizing the replacement
        # from the fills seen before it would buy a late-reported fill twice.
        return self.recheck_final(order) is not None

    def recheck_final(self, order: LedgerOrder) -> float | None:
        """Poll a final order once more (late fill adopted); returns the quantity that appeared,
        or None when the exchange gave no answer (the order stays to be rechecked).

        Only a view that says how much filled (``fillQty``) settles the question: an answer
        without it says nothing about a late fill, and an engine would size a replacement on
        it as if there were none.
        """
        before = order.filled_qty
        if not self.refresh(order, need_fill=True):
            return None
        with self._lock:
            self._rechecked.add(order.client_order_id)
        gained = order.filled_qty - before
        if gained > FILL_EPSILON:
            logger.warning("order %d on %s: a fill of %s was reported after it turned final (adopted)",
                           order.client_order_id, order.symbol, round(gained, 8))
        return gained

    # ---- symbol blocks (BEHAVIOUR 4.7: an opposite-side position stops orders there) ------

    def block_symbol(self, symbol: str, reason: str) -> bool:
        """No order on ``symbol`` until ``unblock``; True when the block is new."""
        with self._lock:
            if symbol in self._blocked:
                return False
            self._blocked[symbol] = reason
        logger.critical("symbol %s blocked: %s", symbol, reason)
        self._emit("symbol_blocked", {"symbol": symbol, "reason": reason})
        return True

    def block_symbol_durably(self, symbol: str, reason: str) -> bool:
        """``block_symbol`` that outlives a restart: kept by the store until ``unblock`` (row L3).

        The block is in force in memory first, then written; a failed write raises (the block
        stays for this run) so the caller does not go on to record its verdict as handled.
        Without a store that keeps blocks it is ``block_symbol``. True when the block is new.
        """
        new = self.block_symbol(symbol, reason)
        if self._store is None:
            return new
        with self._lock:
            if symbol in self._kept_blocks or symbol not in self._blocked:
                return new
        self._store.keep_symbol_block(symbol, reason)
        with self._lock:
            self._kept_blocks.add(symbol)
        return new

    def unblock(self, symbols: Iterable[str] | None = None) -> list[str]:
        """Lift the blocks on ``symbols`` (all when None); returns the symbols unblocked.

        A block the store keeps (``block_symbol_durably``) is lifted in the store first; when
        that write fails it stays (logged CRITICAL) and is not among the symbols returned.
        """
        with self._lock:
            chosen = list(self._blocked) if symbols is None else [s for s in symbols if s in self._blocked]
            kept = [symbol for symbol in chosen if symbol in self._kept_blocks]
        if kept and self._store is not None:
            try:
                self._store.lift_symbol_blocks(kept)
            except Exception as exc:  # noqa: BLE001 - the block stays, fail closed
                logger.critical("symbols %s stay blocked: lifting their kept blocks failed (%s); resume again",
                                ", ".join(kept), exc)
                chosen = [symbol for symbol in chosen if symbol not in kept]
        with self._lock:
            for symbol in chosen:
                self._blocked.pop(symbol, None)
                self._kept_blocks.discard(symbol)
        for symbol in chosen:
            logger.warning("symbol %s unblocked by the operator", symbol)
            self._emit("symbol_unblocked", {"symbol": symbol})
        return chosen

    def is_blocked(self, symbol: str) -> bool:
        with self._lock:
            return symbol in self._blocked

    def blocked_symbols(self) -> dict[str, str]:
        with self._lock:
            return dict(self._blocked)

    # ---- durable markers for requests that are not orders -----------------------------

    def note_block_accept(self, *, trade_id: str, trade_seq: int, intent: Intent, request_id: str,
                          quote_id: str, legs: Sequence[tuple[int, str, int]],
                          rfq_created_at: float | None = None) -> None:
        """Commit "we are about to accept this RFQ quote" before the accept is sent.

        ``rfq_created_at`` (when the RFQ was created) bounds how far back a restart looks the
        block trade up in the exchange's list (``rfq.adopt_block_trade``); without it the
        lookup reads the list to its end (within its page bound).

        An accepted quote becomes positions at once, but its fills reach the ledger only
        when the answer arrives: a crash in between would leave positions no trade knows.
        Recovery reads these markers and looks the block trade up (``rfq.adopt_block_trade``).
        Raises when the store cannot record it, so the accept is never sent unrecorded.
        """
        payload = {"trade_id": trade_id, "trade_seq": int(trade_seq), "intent": int(intent),
                   "request_id": str(request_id), "quote_id": str(quote_id),
                   "legs": [[int(index), str(symbol), int(side)] for index, symbol, side in legs]}
        if rfq_created_at is not None:
            payload["rfq_created_at"] = float(rfq_created_at)
        if self._store is not None:
            self._store.append_event(BLOCK_ACCEPT_EVENT, payload, self._clock.now())
        logger.info("trade %s: accept of RFQ %s quote %s recorded before sending", trade_id, request_id, quote_id)

    def note_block_accept_refused(self, *, trade_id: str, request_id: str, quote_id: str, why: str) -> None:
        """Record that the exchange refused an accept ``note_block_accept`` recorded, with a code
        that proves nothing traded: its marker is closed (``open_block_accepts``).

        Why: after a refusal the RFQ job may try the next quote or hand the legs to its
        fallback engine; after a crash, the fills of that fallback would otherwise pass for
        part of this accept's block trade, and a partly filled fallback would hold the trade
        in doubt for good. A write that fails is logged CRITICAL and not raised: the accept did
        not happen either way, and the marker left open only keeps the trade waiting (fail closed).
        """
        payload = {"trade_id": trade_id, "request_id": str(request_id), "quote_id": str(quote_id), "why": why}
        if self._store is None:
            return
        try:
            self._store.append_event(BLOCK_ACCEPT_REFUSED_EVENT, payload, self._clock.now())
        except Exception:  # noqa: BLE001 - see the docstring
            logger.critical("trade %s: could not record the refusal of the accept of RFQ %s quote %s; after a restart "
                            "it is looked up as an accept in doubt", trade_id, request_id, quote_id, exc_info=True)

    def verify(self, order: LedgerOrder) -> str:
        """Ask the exchange about one order (reconciliation): "final", "live", "vanished",
        "missing" or "error".

        An order we hold an orderId for that the exchange answers "not found" is looked up
        again by clientOrderId and in the order history (API.md 8.4, 8.6); only when all
        three say the exchange does not know it, and it is at least
        ``VANISH_MIN_AGE_SECONDS`` old, is it settled VANISHED ("vanished": the caller alerts
        once). A younger one is "missing" (the lookups lag fresh orders); any failed request
        is "error" and decides nothing (a timeout is not "not found").

        A verdict on missing data is asked again the same way, so the reconciler can re-check
        it: a presumed NOT_PLACED by clientOrderId ("final" while still not found), a VANISHED
        by orderId then by clientOrderId ("vanished" while still not found; the history since
        it was sent was searched when it was settled and only grows). Found, the exchange's
        view is adopted and the verdict is reversed. A NOT_PLACED the ledger knows was never
        sent is "final" without a request.
        """
        if order.status is OrderStatus.NOT_PLACED and not order.presumed:
            return "final"
        by_client_id = order.order_id is None or order.status is OrderStatus.NOT_PLACED
        try:
            view = self._query_view(order, by_client_id=by_client_id)
        except ExchangeError as exc:
            if not exc.is_not_found:
                self._repeats.warning(logger, (order.client_order_id, "verify"), "verify of order %d failed: %s",
                                      order.client_order_id, exc)
                return "error"
            if by_client_id:
                self._not_found(order)
                return "final" if order.status.is_final else "missing"
            return self._verify_vanished(order)
        except (TransportError, EndpointNotFound) as exc:
            self._repeats.warning(logger, (order.client_order_id, "verify"), "verify of order %d failed: %s",
                                  order.client_order_id, exc)
            return "error"
        if view is not None:
            why = self._not_ours(order, view) if by_client_id else None
            if why is not None:
                self._foreign_order(order, view, why)
            else:
                self._apply_view(order, view)
        return "final" if order.status.is_final else "live"

    def _verify_vanished(self, order: LedgerOrder) -> str:
        """Not found by orderId: by clientOrderId, then the order history, then the verdict.

        An order already VANISHED is asked by clientOrderId only (its re-check): the history
        was searched when it was settled, and reading it again would cost more pages with
        every hour while the order's row would be the same.
        """
        settled = order.status is OrderStatus.VANISHED
        if not settled and self._clock.now() - float(order.sent_at) < VANISH_MIN_AGE_SECONDS:
            return "missing"
        found = True
        view: ExchangeOrder | None = None
        try:
            view = self._query_view(order, by_client_id=True)
        except ExchangeError as exc:
            if not exc.is_not_found:
                logger.warning("verify of order %d by clientOrderId failed: %s", order.client_order_id, exc)
                return "error"
            found = False
        except (TransportError, EndpointNotFound) as exc:
            logger.warning("verify of order %d by clientOrderId failed: %s", order.client_order_id, exc)
            return "error"
        why = self._not_ours(order, view) if view is not None else None
        if view is not None and why is not None:
            # Another daemon's order under our clientOrderId: not ours, so the exchange does not
            # show ours under it either; our record (and its orderId) is kept (RECOVERY.md O8).
            self._foreign_order(order, view, why)
            view, found = None, False
        if not found:
            if settled:
                return "vanished"
            try:
                view = self._find_in_history(order)
            except (TraderError, OSError) as exc:
                logger.warning("order history lookup of order %d failed: %s", order.client_order_id, exc)
                return "error"
        if view is not None:
            self._apply_view(order, view)
            return "final" if order.status.is_final else "live"
        self._settle_vanished(order)
        return "vanished"

    def _find_in_history(self, order: LedgerOrder) -> ExchangeOrder | None:
        """The order's row in the order history since it was sent (every page), or None."""
        if is_perpetual_symbol(order.symbol):
            rows = self._perp_api(order.symbol).perp_order_history(
                start_ms=int((float(order.sent_at) - VANISH_HISTORY_MARGIN_SECONDS) * 1000),
                end_ms=self._clock.now_ms())
            return next((view for view in map(perp_order_view, rows) if self._is_ours_in_history(order, view)),
                        None)
        filters = history_filters(page_size=VANISH_HISTORY_PAGE_SIZE,
                                  start_ms=int((float(order.sent_at) - VANISH_HISTORY_MARGIN_SECONDS) * 1000),
                                  end_ms=self._clock.now_ms())
        used: set[int] = set()
        for _page in range(VANISH_HISTORY_MAX_PAGES):
            page = parse_order_page(self._client.order_history(**filters))
            for row in page.rows:
                if self._is_ours_in_history(order, row):
                    return row
            if not page.more(VANISH_HISTORY_PAGE_SIZE):   # unstated and full: read on
                return None
            cursor = page.next_cursor
            # More pages follow but no cursor leads there (an empty page, a row without an
            # orderId, a cursor already used): the rest is unread, and absence unproven.
            if cursor is None or cursor in used:
                raise TransportError("GET order history", f"page {_page + 1} says more follow but gives no way on "
                                                          f"(cursor {cursor!r}): not searched to the end")
            used.add(cursor)
            filters = next_page_filters(filters, cursor)
        raise TransportError("GET order history", f"more than {VANISH_HISTORY_MAX_PAGES} pages since the order "
                                                  f"was sent: not searched to the end")

    def _is_ours_in_history(self, order: LedgerOrder, row: ExchangeOrder) -> bool:
        """Whether an order-history row is ``order``: its orderId, or its clientOrderId on a row
        that can be ours (``_not_ours``; a row that cannot is reported, never adopted)."""
        if order.order_id is not None and row.order_id == order.order_id:
            return True
        if row.client_order_id != order.client_order_id:
            return False
        why = self._not_ours(order, row)
        if why is not None:
            self._foreign_order(order, row, why)
        return why is None

    # ---- orders of another daemon under our clientOrderIds (docs/RECOVERY.md O2, O8) -----------

    def _not_ours(self, order: LedgerOrder, view: ExchangeOrder) -> str | None:
        """Why ``view``, found under ``order``'s clientOrderId, cannot be ``order`` (None: it can be).

        Why: two daemons with our prefix build the same clientOrderIds (two new state
        directories start at the same clock floor the same day), so "found by our
        clientOrderId" is no proof. What is: with an orderId recorded, only that orderId is
        ours; without one, an order the exchange created before we sent ours (less
        X-REQ-TS-DIFF, the clock skew the daemon is configured to live with: a request is
        accepted only when signed less than 1 s ahead of the exchange's clock) is not the
        order our request made. A view of another clientOrderId, an empty one, or one
        without a (positive) creation time proves nothing here (``_view_problem`` decides
        the first two) and keeps the ordinary case: adopted as before.
        """
        if view.client_order_id is not None and view.client_order_id != order.client_order_id:
            return None
        if view.state is None and view.fill_qty is None:
            return None
        if order.order_id is not None:
            if view.order_id is not None and view.order_id != order.order_id:
                return f"it is orderId {view.order_id}, and ours is orderId {order.order_id}"
            return None
        created_ms = view.create_time_ms
        if created_ms is None or not created_ms > 0:
            return None
        if order.exchange_offset is None:
            return None   # recorded before the offset was kept: its send time on the exchange's clock is unknown
        created = created_ms / 1000.0
        sent = float(order.sent_at) + order.exchange_offset    # when we sent ours, on the exchange's clock
        # The exchange takes a request signed up to 1 s ahead of its clock, and the client leaves
        # an offset under 0.5 s uncorrected: our own order can be stamped that much before ``sent``.
        if created < sent - max(self._ts_diff_seconds, CREATE_TIME_SLACK_SECONDS):
            return (f"it was created at {iso_utc(created)}, {sent - created:.1f} s before we sent ours "
                    f"({iso_utc(sent)}, exchange time)")
        return None

    def _foreign_order(self, order: LedgerOrder, view: ExchangeOrder, why: str) -> bool:
        """An order that is not ours showed under ``order``'s clientOrderId: never adopted; True
        when that settled our order (REJECTED, below).

        Our record stays as it was (its orderId, state and fills), and the order is kept for
        the reconciler (``take_foreign_orders``: CRITICAL ``prefix_conflict``, every strategy
        paused). One exception settles our order: its create was refused because the
        clientOrderId was in use (10577/10576) and the order holding it is not ours, so the
        refusal was of our request, which made nothing: REJECTED, the exchange's own word.
        """
        key = (order.client_order_id, view.order_id)
        with self._lock:
            new = key not in self._foreign_seen
            if new:
                self._foreign_seen.add(key)
                self._foreign_new.append(ForeignOrder(order.client_order_id, order.order_id, view, why,
                                                      order.symbol, order.trade_id))
        if new:
            logger.critical("order %d (%s, trade %s): the exchange shows another order under its clientOrderId "
                            "(orderId %s): %s. Not ours: not adopted, our record kept (another daemon uses prefix "
                            "%d on this account?)", order.client_order_id, order.symbol, order.trade_id,
                            view.order_id, why, self.prefix)
            self._emit(FOREIGN_ORDER_EVENT, {"client_order_id": order.client_order_id, "order_id": order.order_id,
                                             "foreign_order_id": view.order_id, "why": why})
        refused = (order.order_id is None and order.error_code in _DUPLICATE_ID_CODES
                   and (order.status is OrderStatus.UNKNOWN or order.reversible))
        if refused:
            logger.warning("order %d on %s: its create was refused (%s: clientOrderId in use) by an order that is "
                           "not ours: REJECTED", order.client_order_id, order.symbol, order.error_code)
            self._update(order, status=OrderStatus.REJECTED, presumed=False,
                         error_msg=f"{order.error_msg} (the clientOrderId is held by orderId {view.order_id}, "
                                   f"not ours: {why})")
            return True
        if order.order_id is None and order.status in (OrderStatus.UNKNOWN, OrderStatus.PENDING_SEND):
            # Only somebody else's order under the id: ours is not found. Past the create window it
            # is a presumed NOT_PLACED like any order not found (reversed if ours shows up), never
            # UNKNOWN for good with its job waiting on it.
            self._not_found(order)
            return order.status.is_final
        return False

    def take_foreign_orders(self) -> list[ForeignOrder]:
        """The orders found under our clientOrderIds that are not ours since the last call, each
        once a life (the reconciler raises the ``prefix_conflict`` and pauses every strategy)."""
        with self._lock:
            found, self._foreign_new = self._foreign_new, []
        return found

    def _settle_vanished(self, order: LedgerOrder) -> None:
        """The exchange does not know the order: final, its known fills kept, journaled."""
        logger.warning("order %d (orderId %s, %s, trade %s) is unknown to the exchange by orderId, by clientOrderId "
                       "and in its order history: settled VANISHED with %s filled", order.client_order_id,
                       order.order_id, order.symbol, order.trade_id, round(order.filled_qty, 8))
        self._update(order, status=OrderStatus.VANISHED, presumed=True,
                     error_msg="unknown to the exchange by orderId, clientOrderId and order history")
        with self._lock:
            self._rechecked.discard(order.client_order_id)
        self._emit(ORDER_VANISHED_EVENT, order.to_record())

    # ---- poll / cancel ---------------------------------------------------------------

    def poll(self, order: LedgerOrder) -> LedgerOrder:
        """Query the order (by orderId, or clientOrderId while its fate is unknown) and adopt its state.

        Also queries final orders, so a late-reported fill is still counted (API.md §11.16).
        Request failures are logged and leave the order unchanged (retried next tick).
        """
        self.refresh(order)
        return order

    def refresh(self, order: LedgerOrder, *, need_fill: bool = False) -> bool:
        """``poll``, telling whether the exchange answered (True: its view adopted, or "not found")
        or not (False: a failed request; nothing learnt, the order unchanged).

        An answer is a view of this order that says something: an empty ``data`` (``code`` 0
        with no field), or a view whose orderId or clientOrderId is another order's, is no
        answer and changes nothing. With ``need_fill`` a view without a readable ``fillQty``
        is no answer either (its state is still adopted as far as ``_apply_view`` allows).

        REJECTED and a NOT_PLACED the ledger knows was never sent are answers already: no
        request. A presumed NOT_PLACED is asked by clientOrderId (its orderId, if a view ever
        gave one, is the exchange's and may be the one it lost): found, the verdict is reversed.
        """
        if order.status is OrderStatus.REJECTED or (order.status is OrderStatus.NOT_PLACED and not order.presumed):
            return True
        by_client_id = order.order_id is None or order.status is OrderStatus.NOT_PLACED
        try:
            view = self._query_view(order, by_client_id=by_client_id)
        except ExchangeError as exc:
            if exc.is_not_found:
                self._not_found(order)
                return True  # an answer: the exchange does not know it (``verify`` decides what that means)
            self._repeats.warning(logger, (order.client_order_id, "poll"), "poll of order %d failed: %s",
                                  order.client_order_id, exc)
            return False
        except (TransportError, EndpointNotFound) as exc:
            self._repeats.warning(logger, (order.client_order_id, "poll"), "poll of order %d failed: %s",
                                  order.client_order_id, exc)
            return False
        if view is None:
            return False
        if by_client_id:
            why = self._not_ours(order, view)
            if why is not None:
                # Nothing learnt about our order, unless the refusal of our create is now proven.
                return self._foreign_order(order, view, why)
        problem = _view_problem(order, view)
        if problem is not None:
            self._repeats.warning(logger, (order.client_order_id, "poll_view"), "poll of order %d: %s; nothing "
                                  "learnt, asked again later", order.client_order_id, problem)
            return False
        self._apply_view(order, view)
        if need_fill and view.fill_qty is None:
            self._repeats.warning(logger, (order.client_order_id, "poll_fill"), "poll of order %d: the answer "
                                  "carries no readable fillQty; a late fill is still possible", order.client_order_id)
            return False
        return True

    def _not_found(self, order: LedgerOrder) -> None:
        """The exchange answered "not found": decide only what that answer can decide.

        A presumed NOT_PLACED or a VANISHED stays as it is (nothing new was learnt; its stamp
        is kept, since the reconciler measures the verdict's age from it). An UNKNOWN or
        PENDING_SEND order not found by clientOrderId past ``sent_at`` + X-REQ-TS-DIFF + 30 s
        becomes a *presumed* NOT_PLACED: the exchange refuses a request older than that
        window, so the order most likely never reached it; but the answer may be a lagging
        lookup (incident 38), so the exchange showing it later reverses the verdict.
        """
        if order.status in (OrderStatus.NOT_PLACED, OrderStatus.VANISHED):
            return
        if order.order_id is not None:
            # Decided by ``verify`` (the reconciliation's check of orders the open list does not
            # show); a poll only notes it, once per interval: it used to write this every tick.
            self._repeats.warning(logger, (order.client_order_id, "not_found"),
                                  "order %d (orderId %d) is unknown to the exchange", order.client_order_id,
                                  order.order_id)
            return
        deadline = order.sent_at + self._ts_diff_seconds + UNKNOWN_RESOLVE_SECONDS
        if self._clock.now() >= deadline:
            logger.warning("order %d never reached the exchange (not found by clientOrderId %.0f s after it was "
                           "sent): NOT_PLACED, reversed if the exchange shows it later", order.client_order_id,
                           self._clock.now() - float(order.sent_at))
            self._update(order, status=OrderStatus.NOT_PLACED, error_msg=NOT_FOUND_BY_CLIENT_ID, presumed=True)

    def _apply_view(self, order: LedgerOrder, view: ExchangeOrder) -> None:
        """Adopt the exchange's view: ids, cumulative fills (never decreasing), status."""
        changes: dict[str, Any] = {}
        order_id = view.order_id
        if order_id is not None and order.order_id is None:
            changes["order_id"] = order_id
        fill, avg = view.fill_qty, view.avg_price
        if fill is not None and fill > order.filled_qty + FILL_EPSILON and (avg is None or not avg > 0):
            # A new fill without its price (the exchange sets avgPrice with the first fill) would be
            # booked at a VWAP of nothing, and the trade's PnL with it: wait for a view with both.
            self._repeats.warning(logger, (order.client_order_id, "fill_without_price"),
                                  "order %d: the exchange reports fillQty %s but no readable avgPrice; "
                                  "the fill is booked when a view carries both", order.client_order_id, fill)
            fill = None
        if fill is None:
            pass   # no readable fill: nothing learnt about fills (and no final state, below)
        elif fill > order.filled_qty + FILL_EPSILON and avg is not None:   # avg > 0 here, as checked above
            changes["filled_qty"] = fill
            # When it filled, not when we heard of it: a restart may learn of fills hours later.
            update_ms = view.update_time_ms
            now = self._clock.now()
            changes["last_fill_at"] = min(update_ms / 1000.0, now) if update_ms and update_ms > 0 else now
            changes["avg_price"] = avg
            fee = view.fee
            if fee is not None:
                changes["fee"] = fee
        elif fill < order.filled_qty - FILL_EPSILON:
            logger.warning("order %d: exchange reports a filled quantity of %s, below the recorded %s; keeping ours",
                           order.client_order_id, fill, order.filled_qty)
        if "fee" not in changes and view.fee is not None and order.filled_qty > 0 \
                and view.fee > (order.fee or 0.0) + FEE_EPSILON:
            # The fee is cumulative like the fill: an answer that came without it (read as
            # nothing) must not stand for a free fill once a later answer carries it.
            changes["fee"] = view.fee
        reversing = order.reversible
        state = view.state
        if state is not None:
            status = self._status_for(order, state)
            if status is not None and status.is_final and fill is None:
                # "Done" without how much filled is no evidence of the fill: adopting it would let
                # an executor replace what may have filled. Kept as it is until a view says both.
                self._repeats.warning(logger, (order.client_order_id, "final_without_fill"),
                                      "order %d: the exchange says state %s but sends no readable fill (fillQty, "
                                      "with avgPrice for a new fill); kept %s until it does", order.client_order_id,
                                      state, order.status.value)
                status = None
            else:
                changes["exchange_state"] = state
            if status is not None and status != order.status:
                changes["status"] = status
        reversed_from = order.status if reversing and "status" in changes else None
        if reversed_from is not None:
            changes["presumed"] = False
            changes["error_msg"] = f"{reversed_from.value} reversed: the exchange shows the order"
        if changes:
            self._update(order, **changes)
        if reversed_from is not None:
            self._verdict_reversed(order, reversed_from)

    def _verdict_reversed(self, order: LedgerOrder, reversed_from: OrderStatus) -> None:
        """The exchange showed an order we had concluded NOT_PLACED or VANISHED: say so, once.

        Its view is already the order's (persisted by ``_update``): a working order blocks
        its leg again (no second order goes out on it) and its fills count for its trade.
        What may have happened meanwhile (a replacement sent on the free leg) needs a human.
        """
        logger.critical("order %d (%s %s %s, trade %s leg %d) concluded %s was found on the exchange: %s, %s of %s "
                        "filled, orderId %s; adopted as its real state (another order may have been sent for its leg "
                        "meanwhile: check the trade)", order.client_order_id, order.side.name, order.qty,
                        order.symbol, order.trade_id, order.leg_index, reversed_from.value, order.status.value,
                        round(order.filled_qty, 8), order.qty, order.order_id)
        self._emit(VERDICT_REVERSED_EVENT, {**order.to_record(), "reversed_from": reversed_from.value})

    def _status_for(self, order: LedgerOrder, state: int) -> OrderStatus | None:
        mapped = _STATE_STATUS.get(state)
        if mapped is None:
            logger.warning("order %d: unknown exchange state %r", order.client_order_id, state)
            return None
        if order.reversible:
            return mapped  # the exchange shows it (again): evidence beats the verdict on missing data
        if order.status.is_final and not mapped.is_final:
            return None  # a lagging view never reopens a final order
        if order.status is OrderStatus.CANCEL_REQUESTED and not mapped.is_final:
            if mapped is OrderStatus.CANCEL_REQUESTED:
                return mapped  # the exchange itself says it is cancelling
            requested_at = self._cancel_requested_at.get(order.client_order_id)
            quiet = math.inf if requested_at is None else self._clock.now() - requested_at
            if quiet < CANCEL_RECHECK_SECONDS:
                return OrderStatus.CANCEL_REQUESTED  # the cancel was accepted; wait for a final state
            # Still working this long after the cancel: the cancel did not take (an answer of
            # "not found" for an order the lookups had not caught up with, a cancel lost
            # after its answer). Working again, so the engines and the stray check cancel it
            # again; waiting for a final state that never comes would leave it resting for good.
            self._cancel_requested_at.pop(order.client_order_id, None)
            logger.warning("order %d (%s %s %s): cancel requested %s but the exchange still shows it %s; "
                           "cancelling again", order.client_order_id, order.side.name, order.qty, order.symbol,
                           "before this start" if requested_at is None else f"{quiet:.0f} s ago", mapped.value)
        return mapped

    def cancel(self, order: LedgerOrder) -> LedgerOrder:
        """Request a cancel (CANCEL_REQUESTED); the caller polls until the order is final."""
        if order.status.is_final:
            return order
        if order.order_id is None:
            self.poll(order)  # resolve an UNKNOWN first: we only cancel what exists
            if order.order_id is None or order.status.is_final:
                return order
        try:
            if is_perpetual_symbol(order.symbol):
                self._perp_api(order.symbol).perp_cancel_order(order_id=order.order_id)
            else:
                self._client.cancel_order(order_id=order.order_id)
        except ExchangeError as exc:
            if exc.is_already_final or exc.is_not_found:
                self.poll(order)
                if not order.status.is_final:
                    # The exchange says it is final but the view lags: stop cancelling, keep polling
                    # (for CANCEL_RECHECK_SECONDS: a view still working then is cancelled again).
                    self._cancel_requested_at[order.client_order_id] = self._clock.now()
                    self._update(order, status=OrderStatus.CANCEL_REQUESTED)
            else:
                self._repeats.warning(logger, (order.client_order_id, "cancel"), "cancel of order %d failed: %s",
                                      order.client_order_id, exc)
            return order
        except (OrderOutcomeUnknown, TransportError, EndpointNotFound) as exc:
            self._repeats.warning(logger, (order.client_order_id, "cancel"),
                                  "cancel of order %d has no answer (%s); polling next", order.client_order_id, exc)
            return order
        self._cancel_requested_at[order.client_order_id] = self._clock.now()
        self._update(order, status=OrderStatus.CANCEL_REQUESTED)
        return order

    def cancel_until_final(self, order: LedgerOrder, max_requests: int = 8) -> LedgerOrder:
        """Poll → cancel → poll until the order is final, within ``max_requests`` requests.

        For one-off use outside a job (shutdown with ``--cancel-open-orders-on-exit``): no
        waiting, fills are adopted on every poll; an order still not final is left to the
        next start's recovery.
        """
        for _ in range(max(1, max_requests) // 2):
            if order.status.is_final:
                break
            if order.status in (OrderStatus.LIVE, OrderStatus.PARTIAL) or order.order_id is None:
                self.cancel(order)
            self.poll(order)
        return order

    # ---- bookkeeping ----------------------------------------------------------------

    def _update(self, order: LedgerOrder, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(order, name, value)
            if order.status.is_final:
                self._cancel_requested_at.pop(order.client_order_id, None)
            order.updated_at = self._clock.now()
            if self._orders.get(order.client_order_id) is order:
                self._track_live(order)
                self._note_update(order)
            self._touch(order)
            record = order.to_record()
        if self._store is not None:
            try:
                self._store.save_order(record)
            except Exception:
                logger.critical("state store write failed for order %d", order.client_order_id, exc_info=True)
        self._emit("order_updated", record)

    def _emit(self, kind: str, payload: dict) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, payload)
        except Exception:  # an event sink must never break order handling
            logger.exception("order event sink failed for %s", kind)

    # ---- block-trade fills (RFQ; BEHAVIOUR.md §6.4 step 7) ---------------------------------

    def record_block_fill(self, *, trade_id: str, trade_seq: int, leg_index: int, intent: Intent, symbol: str,
                          side: int, qty: float, price: float, fee: float, order_id: int | None,
                          filled_at: float) -> LedgerOrder:
        """Record a fill that already happened as an RFQ block trade; nothing is sent.

        Why: the lifecycle reads every fill through ``leg_fill``, so an RFQ fill must live in
        the ledger like any order fill. It gets the next never-reused attempt of its (trade,
        leg), so its client order id cannot collide with a limit order before or after it, and
        it is stored FILLED at once (the block trade is final when the accept answers). Once the
        leg's counter is used up it takes a spare id of its family (``_allocate``): a fill is
        recorded whatever the count. The reported quantity and price are kept as reported: a fill is a fact, not an order to snap.
        """
        intent = Intent(intent)
        side = Side.of(side)
        fill_qty = require_finite("qty", qty)
        fill_price = require_finite("price", price)
        fill_fee = require_finite("fee", fee)
        if fill_qty <= 0 or fill_price <= 0:
            raise ValueError(f"a block fill needs qty > 0 and price > 0, got {qty!r} @ {price!r}")
        with self._lock:
            if trade_id in self._archived_trades:
                self._unarchive_trade(trade_id)
            # A fill that happened must be recorded: spare ids of its family once the counter is used up.
            digit, attempt = self._allocate(trade_id, trade_seq, leg_index, intent, symbol, spare_ids=True)
            coid = build_client_order_id(self.prefix, trade_seq, leg_index, digit, attempt)
            order = LedgerOrder(
                client_order_id=coid, trade_id=trade_id, trade_seq=trade_seq, leg_index=leg_index,
                intent=digit, attempt=attempt, supersedes=None, symbol=symbol, side=side,
                qty=fill_qty, price=fill_price, reduce_only=False,  # a block trade carries no reduce-only flag
                status=OrderStatus.FILLED, order_id=None if order_id is None else int(order_id),
                filled_qty=fill_qty, avg_price=fill_price, fee=fill_fee,
                sent_at=filled_at, updated_at=filled_at, exchange_state=1, last_fill_at=filled_at,
            )
            self._add(order)
            record = order.to_record()
        if self._store is not None:
            try:
                self._store.save_order(record)
            except Exception:  # the fill is real: keep it in memory and shout
                logger.critical("state store write failed for block fill %d (%s %s @ %s)", coid, fill_qty,
                                symbol, fill_price, exc_info=True)
        self._emit("order_recorded", record)
        return order
