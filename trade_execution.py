"""Order execution: the order ledger, limit-order fill jobs and the executor router.

Why it is built this way (BEHAVIOUR.md §4.3, §4.4, §6.0-§6.2, §8; API.md §8, §9, §11):

* Every order gets a deterministic 18-digit ``clientOrderId`` that encodes trade, leg,
  intent and a never-reused attempt, so two intentions for one leg can never share an
  idempotency key and a lost create response can be resolved by querying that id.
* The ledger records an order (PENDING_SEND) *before* the POST and never re-sends a POST:
  an unanswered create becomes UNKNOWN and is resolved by ``singleQuery?clientOrderId=``.
* Exchange states 4 and 5 are not final: fills can still land during a cancel. Replacement
  orders are sized from the fills of the whole requote chain, never from the previous
  order's intent, so nothing is bought or sold twice.
* Quantities are floored to the lot with a tolerance (no ``0.5999…``), prices are snapped
  on the safe side and never below one tick, and no price is ever invented.
* Execution is a non-blocking job: ``advance(now)`` does a bounded number of requests and
  every wait is a deadline compared with the clock, so one trade never delays another.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import Enum, IntEnum
from typing import Any, Callable, Iterable, Sequence

from api_values import finite_number, int_or_none
from errors import (
    ConfigError,
    EndpointNotFound,
    ExchangeError,
    LedgerCapError,
    OrderOutcomeUnknown,
    RateLimitedError,
    TraderError,
    TransportError,
)
from log_throttle import RepeatLimiter
from price_sanity import InsanePriceError, PriceBand, band_of, mark_problem, side_problem

logger = logging.getLogger(__name__)

LOT = 0.01
QTY_TOLERANCE = Decimal("1e-9")
TICK_TOLERANCE = Decimal("1e-9")
MAX_ATTEMPT = 999
BUY = 1
SELL = 2
HALT_BEFORE_EXPIRY_SECONDS = 15 * 60
UNKNOWN_RESOLVE_SECONDS = 30.0
# An order younger than this is never judged missing: the exchange's lists and lookups lag
# fresh orders (incident 38), so a not-found answer right after a send is normal.
VANISH_MIN_AGE_SECONDS = 30.0
# The order-history search of a vanish verification: pages of 500 (API.md 8.6), from a
# minute before the order was sent (clock skew) to now.
VANISH_HISTORY_PAGE_SIZE = 500
VANISH_HISTORY_MAX_PAGES = 20
VANISH_HISTORY_MARGIN_SECONDS = 60.0
ORDER_VANISHED_EVENT = "order_vanished"
# Store event written before an RFQ accept is sent (see OrderLedger.note_block_accept).
BLOCK_ACCEPT_EVENT = "rfq_accept_sent"
BOOK_MAX_AGE_SECONDS = 3.0
MARK_MAX_AGE_SECONDS = 30.0
FILL_EPSILON = 1e-9

# Create-order answers that do not prove nothing happened (BEHAVIOUR.md §6.1).
_UNKNOWN_CREATE_CODES = frozenset({500, 10000, 10582, 10577, 10576, 10583, 10537, 4005, 10605})

_ID_DIGITS = 18


# =====================================================================================
# Intents and client order ids
# =====================================================================================


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
    _check_int("trade_seq", trade_seq, 0, 999_999_999)
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


# =====================================================================================
# Snapping (API.md §9)
# =====================================================================================


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def snap_qty(qty: float, lot: float = LOT) -> float:
    """Floor ``qty`` to the lot with a 1e-9 tolerance (0.29999999999999993 -> 0.3); < lot -> 0.0."""
    value = _finite("qty", qty)
    lot_d = Decimal(repr(_finite("lot", lot)))
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
    value = _finite("price", price)
    tick_value = _finite("tick", tick)
    if value <= 0:
        raise ValueError(f"price must be > 0, got {price!r}")
    if tick_value <= 0:
        raise ValueError(f"tick must be > 0, got {tick!r}")
    if side not in (BUY, SELL):
        raise ValueError(f"side must be 1 (buy) or 2 (sell), got {side!r}")
    tick_d = Decimal(repr(tick_value))
    units = Decimal(value) / tick_d
    if side == BUY:
        ticks = (units + TICK_TOLERANCE).to_integral_value(rounding=ROUND_FLOOR)
    else:
        ticks = (units - TICK_TOLERANCE).to_integral_value(rounding=ROUND_CEILING)
    return float(max(ticks, Decimal(1)) * tick_d)


def fair_value(bid: float | None, ask: float | None, mark: float) -> float:
    """The ``fair`` valuation rule of BEHAVIOUR.md §2.3 (0 or None = that side is empty)."""
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
# later, and an exchange that shows it again is believed (``OrderLedger._status_for``).
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


@dataclass
class LedgerOrder:
    """One order as the ledger knows it; ``filled_qty``/``avg_price``/``fee`` are this order's own."""

    client_order_id: int
    trade_id: str
    trade_seq: int
    leg_index: int
    intent: Intent
    attempt: int
    supersedes: int | None
    symbol: str
    side: int
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

    def to_record(self) -> dict:
        """A JSON-safe dict (ids stay ints) for the state store."""
        record = asdict(self)
        record["intent"] = int(self.intent)
        record["status"] = self.status.value
        return record

    @classmethod
    def from_record(cls, d: dict) -> "LedgerOrder":
        values = dict(d)
        values["intent"] = Intent(int(values["intent"]))
        values["status"] = OrderStatus(values["status"])
        values["client_order_id"] = int(values["client_order_id"])
        for key in ("order_id", "supersedes"):
            if values.get(key) is not None:
                values[key] = int(values[key])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class FillSummary:
    """Filled quantity, VWAP and fees over a set of orders."""

    qty: float
    vwap: float
    fees: float


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

    def __init__(self, client: Any, clock: Any, *, prefix: int = 101, ts_diff_ms: int = 5000, store: Any = None,
                 on_event: EventSink | None = None, max_orders_per_trade: int = 300,
                 max_live_per_symbol: int = 4) -> None:
        _check_int("prefix", prefix, 100, 899)
        self._client = client
        self._clock = clock
        self.prefix = prefix
        self._ts_diff_seconds = ts_diff_ms / 1000.0
        self._store = store
        self._on_event = on_event
        self._max_orders_per_trade = max_orders_per_trade
        self._max_live_per_symbol = max_live_per_symbol
        self._lock = threading.RLock()
        self._orders: dict[int, LedgerOrder] = {}
        self._attempts: dict[tuple[int, int], int] = {}
        self._blocked: dict[str, str] = {}   # symbol -> why no order may go there (reconciliation)
        self._rechecked: set[int] = set()    # final orders polled once more after the late-fill grace
        self._repeats = RepeatLimiter(clock)  # one line per condition and interval, with a count

    def __repr__(self) -> str:
        return f"OrderLedger(prefix={self.prefix}, orders={len(self._orders)})"

    # ---- queries --------------------------------------------------------------------

    def get(self, client_order_id: int) -> LedgerOrder | None:
        with self._lock:
            return self._orders.get(client_order_id)

    def orders(self, trade_id: str | None = None, leg_index: int | None = None,
               family: Intent | None = None) -> list[LedgerOrder]:
        """Orders in the order they were recorded, optionally filtered."""
        with self._lock:
            return [o for o in self._orders.values()
                    if (trade_id is None or o.trade_id == trade_id)
                    and (leg_index is None or o.leg_index == leg_index)
                    and (family is None or o.intent.family() is Intent(family).family())]

    def live_orders(self, trade_id: str | None = None) -> list[LedgerOrder]:
        """Non-final orders (PENDING_SEND and UNKNOWN included: they may exist)."""
        return [o for o in self.orders(trade_id) if not o.status.is_final]

    def leg_fill(self, trade_id: str, leg_index: int, family: Intent) -> tuple[float, float, float]:
        """(filled qty, VWAP, fees) summed over every order of that leg and intent family."""
        summary = summarize_fills(self.orders(trade_id, leg_index, family))
        return summary.qty, summary.vwap, summary.fees

    def attempts_used(self, trade_seq: int, leg_index: int) -> int:
        with self._lock:
            return self._attempts.get((trade_seq, leg_index), 0)

    def restore(self, records: Iterable[dict]) -> None:
        """Load orders from ``store.load_orders()``; attempt counters continue after the highest."""
        with self._lock:
            for record in records:
                order = LedgerOrder.from_record(record)
                self._orders[order.client_order_id] = order
                key = (order.trade_seq, order.leg_index)
                self._attempts[key] = max(self._attempts.get(key, 0), order.attempt)

    # ---- place ------------------------------------------------------------------------

    def place(self, *, trade_id: str, trade_seq: int, leg_index: int, intent: Intent, symbol: str, side: int,
              qty: float, price: float, tick_size: float, supersedes: int | None = None,
              max_live_per_trade: int | None = None) -> LedgerOrder:
        """Record, then send one GTC limit order; returns it LIVE, REJECTED or UNKNOWN.

        Refuses (``ValueError``) a quantity below the lot or a missing price, and
        (``LedgerCapError``, nothing sent) any cap violation or a second non-final order on
        the same (trade, leg).
        """
        intent = Intent(intent)
        if side not in (BUY, SELL):
            raise ValueError(f"side must be 1 (buy) or 2 (sell), got {side!r}")
        snapped_qty = snap_qty(qty)
        if snapped_qty < LOT:
            raise ValueError(f"quantity {qty!r} is below the {LOT} lot: nothing to send")
        snapped_price = snap_price(price, tick_size, side)
        with self._lock:
            self._check_caps(trade_id, leg_index, symbol, max_live_per_trade)
            key = (trade_seq, leg_index)
            attempt = self._attempts.get(key, 0) + 1
            if attempt > MAX_ATTEMPT:
                self._cap_violation(trade_id, symbol, f"leg {leg_index} of {trade_id} used all {MAX_ATTEMPT} attempts")
            coid = build_client_order_id(self.prefix, trade_seq, leg_index, intent, attempt)
            now = self._clock.now()
            order = LedgerOrder(
                client_order_id=coid, trade_id=trade_id, trade_seq=trade_seq, leg_index=leg_index,
                intent=intent, attempt=attempt, supersedes=supersedes, symbol=symbol, side=side,
                qty=snapped_qty, price=snapped_price, reduce_only=intent.reduce_only,
                status=OrderStatus.PENDING_SEND, sent_at=now, updated_at=now,
            )
            self._attempts[key] = attempt
            self._orders[coid] = order
            self._record_before_send(order)
        self._send(order)
        return order

    def _check_caps(self, trade_id: str, leg_index: int, symbol: str, max_live_per_trade: int | None) -> None:
        if symbol in self._blocked:
            self._cap_violation(trade_id, symbol, f"{symbol} is blocked ({self._blocked[symbol]}) until an "
                                                  f"operator resumes the strategy")
        mine = [o for o in self._orders.values() if o.trade_id == trade_id]
        if any(o.leg_index == leg_index and not o.status.is_final for o in mine):
            self._cap_violation(trade_id, symbol, f"leg {leg_index} of {trade_id} already has a non-final order")
        if len(mine) >= self._max_orders_per_trade:
            self._cap_violation(trade_id, symbol, f"{trade_id} reached {self._max_orders_per_trade} orders")
        live_symbol = sum(1 for o in self._orders.values() if o.symbol == symbol and not o.status.is_final)
        if live_symbol >= self._max_live_per_symbol:
            self._cap_violation(trade_id, symbol, f"{symbol} already has {live_symbol} live orders")
        if max_live_per_trade is not None:
            live_trade = sum(1 for o in mine if not o.status.is_final)
            if live_trade >= max_live_per_trade:
                self._cap_violation(trade_id, symbol, f"{trade_id} already has {live_trade} live orders")

    def _cap_violation(self, trade_id: str, symbol: str, detail: str) -> None:
        logger.critical("ledger cap: %s; no order sent", detail)
        self._emit("ledger_cap", {"trade_id": trade_id, "symbol": symbol, "detail": detail})
        raise LedgerCapError(detail)

    def _record_before_send(self, order: LedgerOrder) -> None:
        """Commit PENDING_SEND; if that fails the order is never sent."""
        if self._store is not None:
            try:
                self._store.save_order(order.to_record())
            except Exception as exc:
                order.status = OrderStatus.NOT_PLACED
                order.error_msg = f"state store write failed before send: {exc}"
                logger.critical("order %d not sent: %s", order.client_order_id, order.error_msg)
                raise
        self._emit("order_recorded", order.to_record())

    def _send(self, order: LedgerOrder) -> None:
        try:
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
            self._update(order, status=OrderStatus.REJECTED, error_code=404, error_msg=str(exc))
        except Exception as exc:  # an unexpected failure may still have sent it: resolve by query
            logger.exception("order %d: unexpected failure while sending", order.client_order_id)
            self._set_unknown(order, None, f"{type(exc).__name__}: {exc}")
        else:
            self._update(order, status=OrderStatus.LIVE, order_id=int(order_id))

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
        or None when the exchange gave no answer (the order stays to be rechecked)."""
        before = order.filled_qty
        if not self.refresh(order):
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

    def unblock(self, symbols: Iterable[str] | None = None) -> list[str]:
        """Lift the blocks on ``symbols`` (all when None); returns the symbols unblocked."""
        with self._lock:
            chosen = list(self._blocked) if symbols is None else [s for s in symbols if s in self._blocked]
            for symbol in chosen:
                del self._blocked[symbol]
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
                          quote_id: str, legs: Sequence[tuple[int, str, int]]) -> None:
        """Commit "we are about to accept this RFQ quote" before the accept is sent.

        An accepted quote becomes positions at once, but its fills reach the ledger only
        when the answer arrives: a crash in between would leave positions no trade knows.
        Recovery reads these markers and looks the block trade up (``rfq.adopt_block_trade``).
        Raises when the store cannot record it, so the accept is never sent unrecorded.
        """
        payload = {"trade_id": trade_id, "trade_seq": int(trade_seq), "intent": int(intent),
                   "request_id": str(request_id), "quote_id": str(quote_id),
                   "legs": [[int(index), str(symbol), int(side)] for index, symbol, side in legs]}
        if self._store is not None:
            self._store.append_event(BLOCK_ACCEPT_EVENT, payload, self._clock.now())
        logger.info("trade %s: accept of RFQ %s quote %s recorded before sending", trade_id, request_id, quote_id)

    def verify(self, order: LedgerOrder) -> str:
        """Ask the exchange about one order (reconciliation): "final", "live", "vanished",
        "missing" or "error".

        An order we hold an orderId for that the exchange answers "not found" is looked up
        again by clientOrderId and in the order history (API.md 8.4, 8.6); only when all
        three say the exchange does not know it, and it is at least
        ``VANISH_MIN_AGE_SECONDS`` old, is it settled VANISHED ("vanished": the caller alerts
        once). A younger one is "missing" (the lookups lag fresh orders); any failed request
        is "error" and decides nothing (a timeout is not "not found").
        """
        try:
            data = self._client.query_order(order_id=order.order_id) if order.order_id is not None \
                else self._client.query_order(client_order_id=order.client_order_id)
        except ExchangeError as exc:
            if not exc.is_not_found:
                self._repeats.warning(logger, (order.client_order_id, "verify"), "verify of order %d failed: %s",
                                      order.client_order_id, exc)
                return "error"
            if order.order_id is None:
                self._not_found(order)
                return "final" if order.status.is_final else "missing"
            return self._verify_vanished(order)
        except (TransportError, EndpointNotFound) as exc:
            self._repeats.warning(logger, (order.client_order_id, "verify"), "verify of order %d failed: %s",
                                  order.client_order_id, exc)
            return "error"
        if isinstance(data, dict):
            self._apply_view(order, data)
        return "final" if order.status.is_final else "live"

    def _verify_vanished(self, order: LedgerOrder) -> str:
        """Not found by orderId: by clientOrderId, then the order history, then the verdict."""
        if order.status is OrderStatus.VANISHED:
            return "vanished"
        if self._clock.now() - float(order.sent_at) < VANISH_MIN_AGE_SECONDS:
            return "missing"
        try:
            data = self._client.query_order(client_order_id=order.client_order_id)
        except ExchangeError as exc:
            if not exc.is_not_found:
                logger.warning("verify of order %d by clientOrderId failed: %s", order.client_order_id, exc)
                return "error"
            data = None
        except (TransportError, EndpointNotFound) as exc:
            logger.warning("verify of order %d by clientOrderId failed: %s", order.client_order_id, exc)
            return "error"
        if data is None:
            try:
                data = self._find_in_history(order)
            except (TraderError, OSError) as exc:
                logger.warning("order history lookup of order %d failed: %s", order.client_order_id, exc)
                return "error"
        if isinstance(data, dict):
            known_as = int_or_none(data.get("orderId"))
            if known_as is not None and known_as != order.order_id:
                logger.warning("order %d is known to the exchange as orderId %d, not %s: corrected",
                               order.client_order_id, known_as, order.order_id)
                self._update(order, order_id=known_as)
            self._apply_view(order, data)
            return "final" if order.status.is_final else "live"
        self._settle_vanished(order)
        return "vanished"

    def _find_in_history(self, order: LedgerOrder) -> dict | None:
        """The order's row in the order history since it was sent (every page), or None."""
        params: dict[str, Any] = {
            "pageSize": VANISH_HISTORY_PAGE_SIZE,
            "startTime": int((float(order.sent_at) - VANISH_HISTORY_MARGIN_SECONDS) * 1000),
            "endTime": self._clock.now_ms(),
        }
        for _page in range(VANISH_HISTORY_MAX_PAGES):
            data = self._client.order_history(**params)
            items = data.get("list") if isinstance(data, dict) else data
            items = [item for item in items or [] if isinstance(item, dict)]
            for item in items:
                if int_or_none(item.get("orderId")) == order.order_id or \
                        int_or_none(item.get("clientOrderId")) == order.client_order_id:
                    return item
            last_id = int_or_none(items[-1].get("orderId")) if items else None
            if not (isinstance(data, dict) and data.get("hasNext")) or last_id is None:
                return None
            params = {**params, "fromId": last_id, "direction": "NEXT"}
        raise TransportError("GET order history", f"more than {VANISH_HISTORY_MAX_PAGES} pages since the order "
                                                  f"was sent: not searched to the end")

    def _settle_vanished(self, order: LedgerOrder) -> None:
        """The exchange does not know the order: final, its known fills kept, journaled."""
        logger.warning("order %d (orderId %s, %s, trade %s) is unknown to the exchange by orderId, by clientOrderId "
                       "and in its order history: settled VANISHED with %s filled", order.client_order_id,
                       order.order_id, order.symbol, order.trade_id, round(order.filled_qty, 8))
        self._update(order, status=OrderStatus.VANISHED,
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

    def refresh(self, order: LedgerOrder) -> bool:
        """``poll``, telling whether the exchange answered (True: its view adopted, or "not found")
        or not (False: a failed request; nothing learnt, the order unchanged)."""
        if order.status in (OrderStatus.REJECTED, OrderStatus.NOT_PLACED):
            return True
        try:
            if order.order_id is not None:
                data = self._client.query_order(order_id=order.order_id)
            else:
                data = self._client.query_order(client_order_id=order.client_order_id)
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
        if not isinstance(data, dict):
            return False
        self._apply_view(order, data)
        return True

    def _not_found(self, order: LedgerOrder) -> None:
        if order.order_id is not None:
            # Decided by ``verify`` (the reconciliation's check of orders the open list does not
            # show); a poll only notes it, once per interval: it used to write this every tick.
            self._repeats.warning(logger, (order.client_order_id, "not_found"),
                                  "order %d (orderId %d) is unknown to the exchange", order.client_order_id,
                                  order.order_id)
            return
        deadline = order.sent_at + self._ts_diff_seconds + UNKNOWN_RESOLVE_SECONDS
        if self._clock.now() >= deadline:
            logger.warning("order %d never reached the exchange: NOT_PLACED", order.client_order_id)
            self._update(order, status=OrderStatus.NOT_PLACED, error_msg="not found by clientOrderId")

    def _apply_view(self, order: LedgerOrder, data: dict) -> None:
        """Adopt the exchange's view: ids, cumulative fills (never decreasing), status."""
        changes: dict[str, Any] = {}
        order_id = int_or_none(data.get("orderId"))
        if order_id is not None and order.order_id is None:
            changes["order_id"] = order_id
        fill = finite_number(data.get("fillQty")) or 0.0
        if fill > order.filled_qty + FILL_EPSILON:
            changes["filled_qty"] = fill
            # When it filled, not when we heard of it: a restart may learn of fills hours later.
            update_ms = finite_number(data.get("updateTime"))
            now = self._clock.now()
            changes["last_fill_at"] = min(update_ms / 1000.0, now) if update_ms and update_ms > 0 else now
            avg = finite_number(data.get("avgPrice"))
            if avg is not None and avg > 0:
                changes["avg_price"] = avg
            fee = finite_number(data.get("fee"))
            if fee is not None:
                changes["fee"] = fee
        elif fill < order.filled_qty - FILL_EPSILON:
            logger.warning("order %d: exchange reports fillQty %s below the recorded %s; keeping ours",
                           order.client_order_id, fill, order.filled_qty)
        state = int_or_none(data.get("state"))
        if state is not None:
            changes["exchange_state"] = state
            status = self._status_for(order, state)
            if status is not None and status != order.status:
                changes["status"] = status
        if changes:
            self._update(order, **changes)

    @staticmethod
    def _status_for(order: LedgerOrder, state: int) -> OrderStatus | None:
        mapped = _STATE_STATUS.get(state)
        if mapped is None:
            logger.warning("order %d: unknown exchange state %r", order.client_order_id, state)
            return None
        if order.status is OrderStatus.VANISHED:
            return mapped  # the exchange shows it again: evidence beats the verdict on missing data
        if order.status.is_final and not mapped.is_final:
            return None  # a lagging view never reopens a final order
        if order.status is OrderStatus.CANCEL_REQUESTED and not mapped.is_final:
            return OrderStatus.CANCEL_REQUESTED  # the cancel was accepted; wait for a final state
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
            self._client.cancel_order(order_id=order.order_id)
        except ExchangeError as exc:
            if exc.is_already_final or exc.is_not_found:
                self.poll(order)
                if not order.status.is_final:
                    # The exchange says it is final but the view lags: stop cancelling, keep polling.
                    self._update(order, status=OrderStatus.CANCEL_REQUESTED)
            else:
                self._repeats.warning(logger, (order.client_order_id, "cancel"), "cancel of order %d failed: %s",
                                      order.client_order_id, exc)
            return order
        except (OrderOutcomeUnknown, TransportError, EndpointNotFound) as exc:
            self._repeats.warning(logger, (order.client_order_id, "cancel"),
                                  "cancel of order %d has no answer (%s); polling next", order.client_order_id, exc)
            return order
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
            order.updated_at = self._clock.now()
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

    # ---- block-trade fills (RFQ; BEHAVIOUR.md §6.4 step 7) ----------------- begin rfq.py helper

    def record_block_fill(self, *, trade_id: str, trade_seq: int, leg_index: int, intent: Intent, symbol: str,
                          side: int, qty: float, price: float, fee: float, order_id: int | None,
                          filled_at: float) -> LedgerOrder:
        """Record a fill that already happened as an RFQ block trade; nothing is sent.

        Why: the lifecycle reads every fill through ``leg_fill``, so an RFQ fill must live in
        the ledger like any order fill. It gets the next never-reused attempt of its (trade,
        leg), so its client order id cannot collide with a limit order before or after it, and
        it is stored FILLED at once (the block trade is final when the accept answers). The
        reported quantity and price are kept as reported: a fill is a fact, not an order to snap.
        """
        intent = Intent(intent)
        if side not in (BUY, SELL):
            raise ValueError(f"side must be 1 (buy) or 2 (sell), got {side!r}")
        fill_qty = _finite("qty", qty)
        fill_price = _finite("price", price)
        fill_fee = _finite("fee", fee)
        if fill_qty <= 0 or fill_price <= 0:
            raise ValueError(f"a block fill needs qty > 0 and price > 0, got {qty!r} @ {price!r}")
        with self._lock:
            key = (trade_seq, leg_index)
            attempt = self._attempts.get(key, 0) + 1
            if attempt > MAX_ATTEMPT:
                self._cap_violation(trade_id, symbol, f"leg {leg_index} of {trade_id} used all {MAX_ATTEMPT} "
                                                      f"attempts; block fill of {fill_qty} {symbol} NOT recorded")
            coid = build_client_order_id(self.prefix, trade_seq, leg_index, intent, attempt)
            order = LedgerOrder(
                client_order_id=coid, trade_id=trade_id, trade_seq=trade_seq, leg_index=leg_index,
                intent=intent, attempt=attempt, supersedes=None, symbol=symbol, side=side,
                qty=fill_qty, price=fill_price, reduce_only=False,  # a block trade carries no reduce-only flag
                status=OrderStatus.FILLED, order_id=None if order_id is None else int(order_id),
                filled_qty=fill_qty, avg_price=fill_price, fee=fill_fee,
                sent_at=filled_at, updated_at=filled_at, exchange_state=1, last_fill_at=filled_at,
            )
            self._attempts[key] = attempt
            self._orders[coid] = order
            record = order.to_record()
        if self._store is not None:
            try:
                self._store.save_order(record)
            except Exception:  # the fill is real: keep it in memory and shout
                logger.critical("state store write failed for block fill %d (%s %s @ %s)", coid, fill_qty,
                                symbol, fill_price, exc_info=True)
        self._emit("order_recorded", record)
        return order

    # ---- end rfq.py helper ------------------------------------------------------------------


# =====================================================================================
# Execution parameters
# =====================================================================================


PRICINGS = ("fair", "mid", "mark", "top_of_book", "aggressive")


def _bad(owner: str, name: str, value: Any, rule: str) -> ConfigError:
    return ConfigError(f"{owner}.{name} = {value!r} is invalid: {rule}")


def _require_number(owner: str, name: str, value: Any, ok: Callable[[float], bool], rule: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise _bad(owner, name, value, rule)


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
            raise _bad(owner, "pricing", self.pricing, f"use one of {', '.join(PRICINGS)}")
        _require_number(owner, "duration_seconds", self.duration_seconds, lambda v: v > 0, "must be > 0")
        _require_number(owner, "reprice_interval_seconds", self.reprice_interval_seconds, lambda v: v >= 10,
                        "must be >= 10 seconds")
        _require_number(owner, "buffer_pct", self.buffer_pct, lambda v: 0 <= v <= 50, "must be within 0..50")
        _require_number(owner, "fair_aggression", self.fair_aggression, lambda v: 0 <= v <= 1,
                        "must be within 0..1")


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

    def __post_init__(self) -> None:
        owner = "ExecutionParams"
        _require_number(owner, "fill_timeout_seconds", self.fill_timeout_seconds, lambda v: v > 0, "must be > 0")
        _require_number(owner, "aggressive_buffer_pct", self.aggressive_buffer_pct, lambda v: 0 <= v <= 50,
                        "must be within 0..50")
        if isinstance(self.max_requote_rounds, bool) or not isinstance(self.max_requote_rounds, int) \
                or self.max_requote_rounds < 0:
            raise _bad(owner, "max_requote_rounds", self.max_requote_rounds, "must be an int >= 0")
        if self.phases is not None:
            if not isinstance(self.phases, (tuple, list)) or not self.phases \
                    or not all(isinstance(p, ExecutionPhase) for p in self.phases):
                raise _bad(owner, "phases", self.phases, "must be None or a non-empty tuple of ExecutionPhase")
            object.__setattr__(self, "phases", tuple(self.phases))
        if self.min_price_pct_of_fair is not None:
            _require_number(owner, "min_price_pct_of_fair", self.min_price_pct_of_fair, lambda v: 0 <= v <= 1,
                            "must be None or within 0..1 (a fraction of fair value)")
        if self.max_price_pct_of_fair is not None:
            _require_number(owner, "max_price_pct_of_fair", self.max_price_pct_of_fair, lambda v: v >= 1,
                            "must be None or >= 1 (a multiple of fair value)")
        if self.min_floor_price is not None:
            _require_number(owner, "min_floor_price", self.min_floor_price, lambda v: v >= 0,
                            "must be None or >= 0 (USD)")
        _require_number(owner, "grace_seconds", self.grace_seconds, lambda v: v >= 0, "must be >= 0")
        _require_number(owner, "price_wait_seconds", self.price_wait_seconds, lambda v: v > 0, "must be > 0")

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
    if value is None or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def _side_name(side: int) -> str:
    return "buy" if side == BUY else "sell"


def phase_raw_price(phase: ExecutionPhase, side: int, bid: float | None, ask: float | None,
                    mark: float | None) -> float:
    """The unlimited, unsnapped target of one leg in ``phase`` (``NoPriceError`` if it has none).

    Each pricing mode needs only the inputs it uses, so a close with one empty side can
    still rest a passive order where that is meaningful, and nothing is ever invented.
    """
    b, a, m = _present(bid), _present(ask), _present(mark)
    pricing = phase.pricing
    if pricing == "aggressive":
        far = a if side == BUY else b
        if far is None:
            raise NoPriceError(f"no {'ask' if side == BUY else 'bid'} to cross for the aggressive {_side_name(side)}")
        buffer = phase.buffer_pct / 100.0
        return far * (1 + buffer) if side == BUY else far * (1 - buffer)
    if pricing == "top_of_book":
        near = b if side == BUY else a
        if near is None:
            raise NoPriceError(f"no {'bid' if side == BUY else 'ask'} to join for the {_side_name(side)}")
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
    far = a if side == BUY else b
    if far is None:
        raise NoPriceError(f"no {'ask' if side == BUY else 'bid'} to move the fair {_side_name(side)} toward")
    return fair + aggression * (far - fair)


def apply_price_limits(price: float, side: int, params: ExecutionParams, fair: float | None) -> float:
    """Sells never below max(min_floor_price, min_price_pct_of_fair × f); buys never above
    max_price_pct_of_fair × f. A floor that stops a sell from crossing leaves it resting there."""
    if side == SELL:
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
    return max(price, previous) if side == SELL else min(price, previous)


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


@dataclass(frozen=True)
class LegTarget:
    """What one leg of a job must do. ``side`` is the side of THIS order (a close of a short leg buys)."""

    leg_index: int
    symbol: str
    side: int
    qty: float

    def __post_init__(self) -> None:
        if self.side not in (BUY, SELL):
            raise ValueError(f"LegTarget.side must be 1 (buy) or 2 (sell), got {self.side!r}")
        _finite("LegTarget.qty", self.qty)
        if self.qty < 0:
            raise ValueError(f"LegTarget.qty must be >= 0, got {self.qty!r}")


# =====================================================================================
# Jobs and results
# =====================================================================================


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
    side: int
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
            total += cash if leg.side == SELL else -cash
            total -= Decimal(repr(float(leg.fees)))
        return float(total)


class ExecutionJob:
    """The shared job interface: non-blocking ``advance(now)``; ``result()`` at any time.

    Engines keep their state in ``_status``, ``_phase`` and ``_stop_reason``; the base class
    serves the common reads and the stop request (which only marks the job: the engine acts
    on it in its next ``advance``).
    """

    trade_id: str = ""
    _label = "job"                      # how the engine names its jobs in the log
    _status: JobStatus = JobStatus.WORKING
    _phase: Any = None
    _stop_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.status is not JobStatus.WORKING

    @property
    def status(self) -> JobStatus:
        return self._status

    @property
    def phase(self) -> Any:
        return self._phase

    def advance(self, now: float) -> JobStatus:  # pragma: no cover - overridden
        raise NotImplementedError

    def result(self) -> FillResult:  # pragma: no cover - overridden
        raise NotImplementedError

    def request_stop(self, reason: str) -> None:
        """Stop working: the next ``advance`` cancels and confirms every live order, then a verdict."""
        if self.done or self._stop_reason is not None:
            return
        self._stop_reason = reason or "stop requested"
        logger.info("%s %s %s: stop requested (%s)", self._label, self.trade_id,
                    getattr(getattr(self, "intent", None), "name", "?"), self._stop_reason)
        self._on_stop()

    def _on_stop(self) -> None:
        """Engine hook, called once when a stop is requested."""


class _Budget:
    """At most ``limit`` exchange requests in one ``advance`` (BEHAVIOUR.md §6.0)."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclass
class _LegWork:
    """Mutable progress of one leg inside a job."""

    target: LegTarget
    target_qty: float
    order: LedgerOrder | None = None
    order_ids: list[int] = field(default_factory=list)
    round_started_at: float = 0.0
    rounds_used: int = 0
    wants_order: bool = True
    ending_round: bool = False
    exhausted: bool = False
    frozen: bool = False
    tick: float | None = None
    expiry_ms: int | None = None
    price: float | None = None
    priced_at: float | None = None
    last_no_price: str = ""
    # Phased pricing only:
    phase_index: int | None = None      # the phase the leg's price belongs to
    phase_ref: float | None = None      # the leg's price in that phase (directional guard)
    next_reprice_at: float = 0.0
    repricing: bool = False             # a cancel-and-replace is under way
    replace_now: bool = False           # our cancel finished: place the replacement at once
    cap_logged: bool = False


_PHASE_PRICING = "pricing"      # open: waiting until every leg has a price
_PHASE_WORKING = "working"
_PHASE_FINISHING = "finishing"  # cancel everything live, confirm final
_PHASE_GRACE = "grace"          # wait grace_seconds, then poll every order once more
_PHASE_DONE = "done"


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

    def keep_inside(self, price: float, side: int) -> float:
        """A buy never above the band, a sell never below it (then snapped on the safe side)."""
        return self.band.clamp_buy(price) if side == BUY else self.band.clamp_sell(price)


class LimitFillJob(ExecutionJob):
    """BEHAVIOUR.md §6.2 as a tick-driven state machine: the basic algorithm, or phased
    pricing when ``params.phases`` is set (the phase clock starts when the orders go out)."""

    def __init__(self, manager: "LimitFillManager", trade: Any, legs: Sequence[LegTarget], intent: Intent,
                 params: ExecutionParams, *, best_effort: bool, started_at: float) -> None:
        self._ledger = manager.ledger
        self._market = manager.market
        self._max_requests = manager.max_requests_per_step
        self.trade_id = str(trade.id)
        self.trade_seq = int(trade.seq)
        self.intent = Intent(intent).family()
        self.params = params
        self.best_effort = best_effort
        self.started_at = started_at
        self._legs = [_LegWork(target=leg, target_qty=snap_qty(leg.qty)) for leg in legs]
        self._phase = _PHASE_WORKING if best_effort else _PHASE_PRICING
        self._status = JobStatus.WORKING
        self._reason = ""
        self._stop_reason: str | None = None
        self._grace_deadline: float | None = None
        self._grace_queue: list[LedgerOrder] | None = None
        self._rotation = 0
        self._phases = params.phases
        self._phases_start: float | None = started_at if best_effort else None
        for leg in self._legs:
            leg.round_started_at = started_at

    def __repr__(self) -> str:
        return f"LimitFillJob({self.trade_id}, {self.intent.name}, {self._phase}, {self._status.value})"

    # ---- public -----------------------------------------------------------------------

    def result(self) -> FillResult:
        legs = []
        for leg in self._legs:
            summary = self._leg_summary(leg)
            legs.append(LegFill(leg.target.leg_index, leg.target.symbol, leg.target.side, leg.target_qty,
                                summary.qty, summary.vwap, summary.fees, list(leg.order_ids)))
        return FillResult(self._status, legs, self._reason)

    def advance(self, now: float) -> JobStatus:
        if self.done:
            return self._status
        budget = _Budget(self._max_requests)
        if self._stop_reason is not None and self._phase in (_PHASE_PRICING, _PHASE_WORKING):
            self._begin_finishing(self._stop_reason)
        if self._phase == _PHASE_PRICING:
            self._step_pricing(now, budget)
        if self._phase == _PHASE_WORKING:
            self._step_working(now, budget)
        if self._phase == _PHASE_FINISHING:
            self._step_finishing(now, budget)
        if self._phase == _PHASE_GRACE:
            self._step_grace(now, budget)
        return self._status

    # ---- fills ----------------------------------------------------------------------

    def _leg_summary(self, leg: _LegWork) -> FillSummary:
        orders = [o for o in (self._ledger.get(coid) for coid in leg.order_ids) if o is not None]
        return summarize_fills(orders)

    def _remaining(self, leg: _LegWork) -> float:
        return snap_qty(max(0.0, leg.target_qty - self._leg_summary(leg).qty))

    def _leg_complete(self, leg: _LegWork) -> bool:
        return self._remaining(leg) < LOT

    # ---- pricing --------------------------------------------------------------------

    def _instrument(self, leg: _LegWork) -> bool:
        """Tick and expiry of the leg's symbol (looked up once per job)."""
        if leg.tick is not None:
            return True
        try:
            instrument = self._market.instrument(leg.target.symbol)
        except TraderError as exc:
            leg.last_no_price = f"instrument lookup failed: {exc}"
            return False
        leg.tick = float(instrument.tick_size)
        leg.expiry_ms = int(instrument.expiry_ms)
        return True

    def _is_frozen(self, leg: _LegWork, now: float) -> bool:
        if leg.expiry_ms is None:
            return False
        return now >= leg.expiry_ms / 1000.0 - HALT_BEFORE_EXPIRY_SECONDS

    def _price(self, leg: _LegWork, now: float, budget: _Budget) -> float | None:
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
        touch = book.best_ask if side == BUY else book.best_bid
        if touch is None or not touch > 0:
            leg.last_no_price = f"no {'ask' if side == BUY else 'bid'} on {leg.target.symbol}"
            return None
        insane = side_problem("ask" if side == BUY else "bid", touch, reference.band)
        if insane is not None:
            leg.last_no_price = f"{leg.target.symbol}: {insane}"
            return None
        raw = touch * (1 + buffer) if side == BUY else touch * (1 - buffer)
        guarded = self._apply_floor_and_cap(leg, raw, book, reference)
        if guarded is None:
            return None
        try:
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
        return _PriceReference(band, None if problem else float(row.mark), problem)

    def _apply_floor_and_cap(self, leg: _LegWork, price: float, book: Any,
                             reference: "_PriceReference") -> float | None:
        """Sell floors and buy caps of §6.2; needs a sane mark only when a fair-based limit is set."""
        params = self.params
        side = leg.target.side
        needs_fair = (side == SELL and params.min_price_pct_of_fair is not None) or \
                     (side == BUY and params.max_price_pct_of_fair is not None)
        fair = None
        if needs_fair:
            if reference.mark is None:
                leg.last_no_price = f"no sane mark on {leg.target.symbol} for the price guard: {reference.mark_problem}"
                return None
            fair = fair_value(book.best_bid, book.best_ask, reference.mark)
        if side == SELL:
            floor = 0.0
            if params.min_floor_price is not None:
                floor = max(floor, params.min_floor_price)
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

    def _phased_leg_price(self, leg: _LegWork, now: float, budget: _Budget) -> float | None:
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
        book = reference.sane_sides(book)
        if reference.mark is None and self._needs_mark(phase, side, book):
            if self.intent not in (Intent.KILL, Intent.UNWIND) or phase.pricing not in ("mark", "fair", "mid"):
                leg.last_no_price = f"no sane mark on {leg.target.symbol}: {reference.mark_problem}"
                return None
            # Kill and unwind must get out: with only the mark insane they cross the sane book.
            phase = replace(phase, pricing="aggressive", buffer_pct=0.0, fair_aggression=0.0)
        previous = leg.phase_ref if leg.phase_index == index else None
        try:
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
        if side == SELL:
            return self.params.min_price_pct_of_fair is not None
        return self.params.max_price_pct_of_fair is not None

    @staticmethod
    def _without_own_order(book: Any, leg: _LegWork) -> Any:
        """The book minus our own resting order, so the leg never prices against itself
        (the exchange shows resting orders in the public book)."""
        order = leg.order
        if order is None or order.status.is_final or order.order_id is None or leg.tick is None:
            return book
        if getattr(book, "as_of", 0.0) < order.sent_at:
            return book  # read before the order existed: it cannot contain it
        own_qty = max(0.0, order.qty - order.filled_qty)
        levels = list(book.bids if order.side == BUY else book.asks)
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
        if order.side == BUY:
            return replace(book, bids=tuple(levels))
        return replace(book, asks=tuple(levels))

    # ---- phases ---------------------------------------------------------------------

    def _step_pricing(self, now: float, budget: _Budget) -> None:
        """Open: no order until every leg has a fresh price; FAILED after price_wait_seconds."""
        for leg in self._legs:
            if self._instrument(leg) and self._is_frozen(leg, now):
                self._finish_without_orders(f"leg {leg.target.leg_index} ({leg.target.symbol}) is frozen "
                                            f"before expiry")
                return
        missing = [leg for leg in self._legs if leg.target_qty >= LOT and self._price(leg, now, budget) is None]
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

    def _finish_without_orders(self, reason: str) -> None:
        logger.warning("job %s %s failed before any order: %s", self.trade_id, self.intent.name, reason)
        self._reason = reason
        self._phase = _PHASE_DONE
        self._status = JobStatus.FAILED

    def _ordered_legs(self) -> list[_LegWork]:
        """Legs starting at a rotating offset, so a tight budget serves every leg in turn."""
        count = len(self._legs)
        if count == 0:
            return []
        start = self._rotation % count
        self._rotation += 1
        return self._legs[start:] + self._legs[:start]

    def _step_working(self, now: float, budget: _Budget) -> None:
        phases_over = self._phases is not None and self._phase_at(now) is None
        for leg in self._ordered_legs():
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
        if all(self._leg_complete(leg) for leg in self._legs):
            self._conclude("")
            return
        if phases_over:
            unfilled = [str(leg.target.leg_index) for leg in self._legs if not self._leg_complete(leg)]
            self._begin_finishing(f"all pricing phases ended with leg(s) {', '.join(unfilled)} unfilled")
            return
        blocker = self._blocking_leg()
        if blocker is not None:
            self._begin_finishing(blocker)

    def _blocking_leg(self) -> str | None:
        """Why the job cannot complete, if it cannot."""
        open_legs = [leg for leg in self._legs if not self._leg_complete(leg)]
        for leg in open_legs:
            if leg.exhausted and not self.best_effort:
                return f"leg {leg.target.leg_index} unfilled after {leg.rounds_used} requote rounds"
            if leg.frozen and not self.best_effort:
                return f"leg {leg.target.leg_index} ({leg.target.symbol}) frozen before expiry"
        if self.best_effort:
            exhausted = [leg for leg in open_legs if leg.exhausted]
            if exhausted:
                return f"leg {exhausted[0].target.leg_index} unfilled after {exhausted[0].rounds_used} requote rounds"
            if open_legs and all(leg.frozen and self._no_live(leg) for leg in open_legs):
                return "every unfilled leg is frozen before expiry"
        return None

    @staticmethod
    def _no_live(leg: _LegWork) -> bool:
        return leg.order is None or leg.order.status.is_final

    def _step_leg(self, leg: _LegWork, now: float, budget: _Budget) -> None:
        if leg.order is not None and not leg.order.status.is_final:
            if not budget.take():
                return
            self._ledger.poll(leg.order)
        if self._leg_complete(leg):
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
        if leg.ending_round and not self._cancel_until_final(leg, budget):
            return
        if leg.ending_round:
            leg.ending_round = False
            leg.rounds_used += 1
            leg.round_started_at = now
            leg.wants_order = True
            if self._leg_complete(leg):
                return
        if leg.wants_order and self._no_live(leg):
            self._place(leg, now, budget)

    def _poll_leg(self, leg: _LegWork, budget: _Budget) -> None:
        if leg.order is not None and not leg.order.status.is_final and budget.take():
            self._ledger.poll(leg.order)

    def _step_leg_phased(self, leg: _LegWork, now: float, budget: _Budget) -> None:
        """One tick of a leg under phased pricing.

        Poll; continue a cancel-and-replace; otherwise, when the phase changed or the
        leg's reprice interval elapsed, recompute the target and replace the order only
        if it moved by at least one tick and a replacement round is left.
        """
        self._poll_leg(leg, budget)
        if self._leg_complete(leg) or not self._instrument(leg):
            return
        if self._is_frozen(leg, now):
            leg.frozen = True
            return
        index = self._phase_at(now)
        assert index is not None and self._phases is not None
        due = leg.phase_index != index or now >= leg.next_reprice_at
        if leg.repricing:
            if not self._cancel_until_final(leg, budget):
                return
            leg.repricing = False
            leg.replace_now = True
            if self._leg_complete(leg):
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
        if not self._cancel_until_final(leg, budget):
            return
        leg.repricing = False
        leg.replace_now = True    # placed now, or on the next tick once the late-fill grace is over
        if not self._leg_complete(leg):
            self._place(leg, now, budget)

    def _replace_missing_order(self, leg: _LegWork, now: float, budget: _Budget, due: bool) -> None:
        """No live order: the first one goes out at once, a replacement after our own cancel at
        once, and one for an order the exchange ended itself at the next reprice slot."""
        if leg.order is not None:
            if leg.rounds_used >= self.params.max_requote_rounds:
                leg.exhausted = True
                return
            if not (leg.replace_now or due):
                return
        self._place(leg, now, budget)

    def _cancel_until_final(self, leg: _LegWork, budget: _Budget) -> bool:
        """Cancel the leg's live order and poll it; True once it is final (or there is none)."""
        order = leg.order
        if order is None or order.status.is_final:
            return True
        if order.status is not OrderStatus.CANCEL_REQUESTED:
            if not budget.take():
                return False
            self._ledger.cancel(order)
            if order.status.is_final:
                return True
        if not budget.take():
            return False
        self._ledger.poll(order)
        return order.status.is_final

    def _place(self, leg: _LegWork, now: float, budget: _Budget) -> None:
        # A fill of the previous order reported late must be counted first (API.md 11.16).
        if not self._ledger.settled_for_replacement(leg.order, now, self.params.grace_seconds, budget.take):
            return
        remaining = self._remaining(leg)
        if remaining < LOT:
            leg.wants_order = False
            return
        price = self._price(leg, now, budget)
        if price is None:
            return
        if not budget.take():
            return
        previous = leg.order
        intent = self.intent if previous is None else self.intent.requote()
        try:
            order = self._ledger.place(
                trade_id=self.trade_id, trade_seq=self.trade_seq, leg_index=leg.target.leg_index, intent=intent,
                symbol=leg.target.symbol, side=leg.target.side, qty=remaining, price=price,
                tick_size=leg.tick,  # type: ignore[arg-type]
                supersedes=None if previous is None else previous.client_order_id,
                max_live_per_trade=len(self._legs),
            )
        except LedgerCapError:
            raise
        except (ValueError, TraderError) as exc:
            logger.warning("job %s leg %d: order not placed: %s", self.trade_id, leg.target.leg_index, exc)
            return
        leg.order = order
        leg.order_ids.append(order.client_order_id)
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

    # ---- finishing --------------------------------------------------------------------

    def _begin_finishing(self, reason: str) -> None:
        if self._phase in (_PHASE_FINISHING, _PHASE_GRACE, _PHASE_DONE):
            return
        logger.info("job %s %s finishing: %s", self.trade_id, self.intent.name, reason)
        self._reason = reason
        if not any(leg.order_ids for leg in self._legs):
            self._finish_without_orders(reason)
            return
        self._phase = _PHASE_FINISHING

    def _step_finishing(self, now: float, budget: _Budget) -> None:
        all_final = True
        for leg in self._ordered_legs():
            if not self._cancel_until_final(leg, budget):
                all_final = False
        if not all_final:
            return
        self._phase = _PHASE_GRACE
        self._grace_deadline = now + self.params.grace_seconds

    def _step_grace(self, now: float, budget: _Budget) -> None:
        """After the grace wait, poll once more every order that could still show a late fill."""
        if self._grace_deadline is None or now < self._grace_deadline:
            return
        if self._grace_queue is None:
            self._grace_queue = [
                o for leg in self._legs for o in (self._ledger.get(c) for c in leg.order_ids)
                if o is not None and o.order_id is not None and o.status is not OrderStatus.FILLED
            ]
        while self._grace_queue:
            if not budget.take():
                return
            self._ledger.poll(self._grace_queue.pop(0))
        self._conclude(self._reason)

    def _conclude(self, reason: str) -> None:
        complete = all(self._leg_complete(leg) for leg in self._legs)
        anything = any(self._leg_summary(leg).qty > 0 for leg in self._legs)
        if complete:
            self._status = JobStatus.FILLED
            reason = ""
        elif anything:
            self._status = JobStatus.PARTIAL
        else:
            self._status = JobStatus.FAILED
        self._reason = reason
        self._phase = _PHASE_DONE
        log = logger.info if self._status is JobStatus.FILLED else logger.warning
        log("job %s %s ended %s%s", self.trade_id, self.intent.name, self._status.value,
            f": {reason}" if reason else "")


class LimitFillManager:
    """Starts limit-order jobs (BEHAVIOUR.md §6.2). ``start`` sends nothing; ``advance`` does the work."""

    def __init__(self, ledger: OrderLedger, market: Any, clock: Any, *, max_requests_per_step: int = 6) -> None:
        if max_requests_per_step < 2:
            raise ValueError("max_requests_per_step must be >= 2")
        self.ledger = ledger
        self.market = market
        self.clock = clock
        self.max_requests_per_step = max_requests_per_step

    def start(self, trade: Any, legs: list[LegTarget], intent: Intent, params: ExecutionParams, *,
              best_effort: bool = False) -> ExecutionJob:
        if not legs:
            raise ValueError("an execution job needs at least one leg")
        indexes = [leg.leg_index for leg in legs]
        if len(set(indexes)) != len(indexes):
            raise ValueError(f"duplicate leg indexes in {indexes}")
        return LimitFillJob(self, trade, legs, Intent(intent), params, best_effort=best_effort,
                            started_at=self.clock.now())


# =====================================================================================
# Routing
# =====================================================================================


MODES = ("limit", "smart", "rfq")


class TradeExecutor:
    """Routes a trade to an execution engine (BEHAVIOUR.md §6.5) and starts its job."""

    def __init__(self, limit: LimitFillManager, *, smart: Any = None, rfq: Any = None,
                 rfq_notional_threshold: float = 50_000.0, smart_notional_threshold: float = 10_000.0) -> None:
        self.limit = limit
        self.smart = smart
        self.rfq = rfq
        self.rfq_notional_threshold = float(rfq_notional_threshold)
        self.smart_notional_threshold = float(smart_notional_threshold)

    def route(self, mode: str, legs: list[LegTarget], index_price: float) -> str:
        """The engine for ``mode``; ``auto`` uses the underlying notional Σ qty × index (never a mark)."""
        if mode in MODES:
            return mode
        if mode != "auto":
            raise ValueError(f"execution mode must be one of auto, {', '.join(MODES)}; got {mode!r}")
        if len(legs) <= 1:
            return "limit"
        index = _finite("index_price", index_price)
        if index <= 0:
            raise ValueError(f"index_price must be > 0, got {index_price!r}: no index, no routing")
        notional = sum(leg.qty for leg in legs) * index
        if notional >= self.rfq_notional_threshold:
            chosen = "rfq"
        elif notional >= self.smart_notional_threshold:
            chosen = "smart"
        else:
            chosen = "limit"
        if chosen != "limit" and self._engine(chosen) is None:
            logger.warning("auto routing chose %s (notional %.0f USD) but no %s executor is configured; "
                           "using limit", chosen, notional, chosen)
            return "limit"
        return chosen

    def _engine(self, mode: str) -> Any:
        return {"limit": self.limit, "smart": self.smart, "rfq": self.rfq}.get(mode)

    def start(self, mode: str, trade: Any, legs: list[LegTarget], intent: Intent, params: Any, *,
              best_effort: bool = False) -> ExecutionJob:
        if mode == "limit":
            return self.limit.start(trade, legs, intent, params, best_effort=best_effort)
        if mode not in MODES:
            raise ValueError(f"execution mode must be resolved to one of {MODES}, got {mode!r}")
        engine = self._engine(mode)
        if engine is None:
            raise NotImplementedError(f"the {mode} executor arrives with the execution-engines issue")
        return engine.start(trade, legs, intent, params, best_effort=best_effort)
