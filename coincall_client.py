"""The signed HTTP client for the Coincall REST API: the only module that talks to the exchange.

Why it looks the way it does (API.md sections 2, 3, 8, 10, 12; BEHAVIOUR.md 6.0, 7.3):

* Every attempt is signed afresh with the current ``ts``: a request re-sent with an old
  ``ts`` dies in the exchange's timestamp window after any long timeout.
* The signed parameter dictionary is exactly what goes on the wire (nulls dropped, numbers
  checked), because the exchange rebuilds the prehash from what it parsed.
* A transport failure is never dressed up as an exchange answer. Idempotent GETs are
  retried with back-off; order-changing POSTs are never re-sent, their failures become
  ``OrderOutcomeUnknown`` so the order ledger resolves them by querying.
* Client-side request budgets keep us under the exchange's rate limits, waiting on the
  injected clock instead of provoking code 10000.
* ``Reachability`` turns the stream of request outcomes into an UP/DOWN signal.

Response payloads of the options routes are returned as parsed JSON with the exchange's own
field names; the adapter, ``coincall_payloads.py``, turns them into typed values. JSON is
parsed with the standard library so 64-bit ids stay exact Python ints.

Perpetual futures (API.md 14) follow the same signing, retry and unknown-outcome rules. Their
methods are named ``perp_*`` and return the adapter's typed values directly (``PerpOrder``,
``PerpPosition``, ...): nothing above this layer ever reads a perp field name. Market-data
reads are keyed by underlying (``"ETH"``), order and account calls by the perp's symbol
(``"ETHUSD"``, ``coincall_payloads.perp_symbol``). Every perp call is signed, market data
included (API.md 14.9 #1), and list answers are walked to their last page.
"""
from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar
from urllib.parse import quote, urlencode

import requests

import auth
from clock import Clock
from config import Credentials
from contracts import Side
from errors import (
    AUTH_CODES,
    TRANSIENT_CODES,
    AuthError,
    ConfigError,
    EndpointNotFound,
    ExchangeError,
    OrderOutcomeUnknown,
    PayloadError,
    RateLimitedError,
    StaleDataError,
    TraderError,
    TransportError,
)
from json_body import decode_body
from coincall_payloads import (
    PERP_QUOTE,
    FundingPayment,
    FundingRate,
    NumberedPage,
    OrderBook,
    Page,
    PerpCancelAck,
    PerpFill,
    PerpInstrument,
    PerpOrder,
    PerpOrderType,
    PerpPosition,
    PerpPublicTrade,
    PerpSpec,
    PerpTicker,
    parse_funding_payment_page,
    parse_funding_rates,
    parse_perp_cancel_acks,
    parse_perp_fill_page,
    parse_perp_instruments,
    parse_perp_leverage,
    parse_perp_order_page,
    parse_perp_pending_page,
    parse_perp_positions,
    parse_perp_public_trades,
    parse_perp_specs,
    perp_order_book_from_api,
    perp_order_from_api,
    perp_symbol,
    perp_ticker_from_api,
)
from validation import invalid

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
ENCODINGS = ("json", "form")
RATE_LIMITED_CODES = frozenset({10000, 10605})
INVALID_PARAMETER_CODE = 10004
HTTP_TOO_MANY_REQUESTS = 429
MAX_PENDING_PAGES = 200
PENDING_PAGE_SIZE = 500      # the largest page the open-orders list serves (API.md 8.5)
TIME_OFFSET_WARN_SECONDS = 0.5
ORDER_ACTIONS_BUDGET = "order_actions"

# Rate-limit groups of API.md 3.4 as (requests, window seconds). "place" and "cancel" are
# not here: they share one client budget of ``order_actions_per_second`` (API.md 12 #10).
GROUP_LIMITS: dict[str, tuple[int, float]] = {
    "public_config": (10, 2.0),
    "positions": (5, 1.0),
    "pending": (5, 1.0),
    "history": (5, 1.0),
    "account": (2, 1.0),
    "orderbook": (30, 2.0),
    "funding_rate": (10, 2.0),
}
ORDER_ACTION_GROUPS = frozenset({"place", "cancel"})

# Perpetual futures (API.md 14). Page sizes: the open-order route's documented default, and
# the funding-record route's documented maximum; the history routes document neither (API.md 14.9 #11).
PERP_PENDING_PAGE_SIZE = 20
PERP_HISTORY_PAGE_SIZE = 50
PERP_FUNDING_PAGE_SIZE = 50
PERP_MAX_PAGES = 200
PERP_SENDABLE_TYPES = (PerpOrderType.LIMIT, PerpOrderType.MARKET, PerpOrderType.POST_ONLY)
HISTORY_DIRECTIONS = (None, "NEXT", "PREV")

_SAFE_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_URL_QUERY = re.compile(r"\?[^\s'\")]*")


# --------------------------------------------------------------------------------------
# Endpoint catalogue (our own copy of the few facts we need; the simulator is not imported)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One exchange route as the client uses it."""

    method: str
    path: str                 # "{name}" segments are filled by ``render_path``
    group: str | None = None  # rate-limit group, None = no client budget
    signed: bool = True
    idempotent: bool = True   # False: never re-sent (it may change exchange state)
    encoding: str = "query"   # "query", "json" or "form"

    def render_path(self, **segments: str) -> str:
        """The concrete path; segments must be plain tokens so the signed path is what the server sees."""
        path = self.path
        for name, value in segments.items():
            text = str(value)
            if not _SAFE_PATH_SEGMENT.match(text):
                raise ValueError(f"unsafe path segment {name}={text!r} for {self.path}")
            path = path.replace("{" + name + "}", text)
        if "{" in path:
            raise ValueError(f"missing path segment in {path}")
        return path

    def matches(self, method: str, path: str) -> bool:
        if method.upper() != self.method:
            return False
        want = self.path.strip("/").split("/")
        got = path.strip("/").split("/")
        return len(want) == len(got) and all(
            w == g or (w.startswith("{") and w.endswith("}")) for w, g in zip(want, got)
        )


class Endpoints:
    """The routes of API.md used by CoincallTrader (a namespace of constants)."""

    SERVER_TIME = Endpoint("GET", "/time", signed=False)
    PUBLIC_CONFIG = Endpoint("GET", "/open/public/config/v1", "public_config", signed=False)
    INSTRUMENTS = Endpoint("GET", "/open/option/getInstruments/{base}", signed=False)
    OPTION_CHAIN = Endpoint("GET", "/open/option/get/v1/{index}", signed=False)
    OPTION_DETAIL = Endpoint("GET", "/open/option/detail/v1/{symbol}", signed=False)
    ORDERBOOK = Endpoint("GET", "/open/option/order/orderbook/v1/{symbol}", "orderbook", signed=False)
    LAST_TRADES = Endpoint("GET", "/open/option/trade/lasttrade/v1/{symbol}", signed=False)
    FUTURES_SYMBOLS = Endpoint("GET", "/open/futures/market/symbol/v1", signed=False)
    ESTIMATED_EXPIRATION_PRICE = Endpoint("GET", "/open/option/getEstimatedExpirationPrice/v1", signed=False)
    DELIVERY_PRICES = Endpoint("GET", "/open/option/get-delivery-prices/v1", signed=False)
    QUERY_API_KEY = Endpoint("GET", "/open/auth/user/query-api")
    USER_INFO = Endpoint("GET", "/open/user/info/v1")
    ACCOUNT_SUMMARY = Endpoint("GET", "/open/account/summary/v1", "account")
    POSITIONS = Endpoint("GET", "/open/option/position/get/v1", "positions")
    PENDING_ORDERS = Endpoint("GET", "/open/option/order/pending/v1", "pending")
    CREATE_ORDER = Endpoint("POST", "/open/option/order/create/v1", "place", idempotent=False, encoding="json")
    CANCEL_ORDER = Endpoint("POST", "/open/option/order/cancel/v1", "cancel", idempotent=False, encoding="json")
    QUERY_ORDER = Endpoint("GET", "/open/option/order/singleQuery/v1", "pending")
    ORDER_HISTORY = Endpoint("GET", "/open/option/order/history/v1", "history")
    TRADE_HISTORY = Endpoint("GET", "/open/option/trade/history/v1", "history")
    EXERCISE_HISTORY = Endpoint("GET", "/open/settle/exercise/history/v1", "history")
    RFQ_CREATE = Endpoint("POST", "/open/option/blocktrade/request/create/v1", "place", idempotent=False, encoding="json")
    RFQ_QUOTES = Endpoint("GET", "/open/option/blocktrade/request/getQuotesReceived/v1")
    RFQ_ACCEPT = Endpoint("POST", "/open/option/blocktrade/request/accept/v1", "place", idempotent=False, encoding="form")
    RFQ_CANCEL = Endpoint("POST", "/open/option/blocktrade/request/cancel/v1", "cancel", idempotent=False, encoding="form")
    BLOCKTRADE_ORDERS = Endpoint("GET", "/open/option/blocktrade/orderList/v1", "history")

    # Perpetual futures (API.md 14). Creates and amends share the options' "place" budget and
    # cancels their "cancel" budget: one client-wide budget of order actions (API.md 14.9 #2).
    PERP_INSTRUMENTS = Endpoint("GET", "/open/futures/market/instruments/v1")
    PERP_ORDERBOOK = Endpoint("GET", "/open/futures/order/orderbook/v1/{symbol}", "orderbook")
    PERP_LAST_TRADES = Endpoint("GET", "/open/futures/trade/lasttrade/v1/{symbol}")
    FUNDING_RATE = Endpoint("GET", "/open/public/fundingRate/v1", "funding_rate")
    PERP_CREATE_ORDER = Endpoint("POST", "/open/futures/order/create/v1", "place", idempotent=False, encoding="json")
    PERP_AMEND_ORDER = Endpoint("POST", "/open/futures/order/modify/v1", "place", idempotent=False, encoding="json")
    PERP_CANCEL_ORDER = Endpoint("POST", "/open/futures/order/cancel/v1", "cancel", idempotent=False, encoding="json")
    PERP_BATCH_CANCEL = Endpoint("POST", "/open/futures/order/batchCancel/v1", "cancel", idempotent=False,
                                 encoding="json")
    PERP_QUERY_ORDER = Endpoint("GET", "/open/futures/order/singleQuery/v1", "pending")
    PERP_PENDING_ORDERS = Endpoint("GET", "/open/futures/order/pending/v1", "pending")
    PERP_ORDER_HISTORY = Endpoint("GET", "/open/futures/order/history/v1", "history")
    PERP_TRADE_HISTORY = Endpoint("GET", "/open/futures/trade/history/v1", "history")
    PERP_POSITIONS = Endpoint("GET", "/open/futures/position/get/v1", "positions")
    PERP_LEVERAGE = Endpoint("GET", "/open/futures/leverage/current/v1")
    # Setting a leverage is idempotent (the same value twice is the same state), so a lost
    # answer may be re-sent like a GET; a refusal (40038) is definitive and is not.
    PERP_SET_LEVERAGE = Endpoint("POST", "/open/futures/leverage/set/v1", encoding="json")
    FUNDING_RECORDS = Endpoint("GET", "/open/settle/future/record/v1", "history")
    LATEST_FUNDING_RECORDS = Endpoint("GET", "/open/settle/future/latestRecord/v1", "history")

    @classmethod
    def all(cls) -> tuple[Endpoint, ...]:
        return tuple(v for v in vars(cls).values() if isinstance(v, Endpoint))

    @classmethod
    def find(cls, method: str, path: str) -> Endpoint | None:
        return next((e for e in cls.all() if e.matches(method, path)), None)


# --------------------------------------------------------------------------------------
# Values: settings
# --------------------------------------------------------------------------------------


# An outage lasting this long (clock seconds from its first failed request) is reported
# (EXCHANGE_OUTAGE_ALERT_SECONDS; issue 9, finding 6).
DEFAULT_OUTAGE_ALERT_SECONDS = 120.0


@dataclass(frozen=True)
class ClientSettings:
    """Tunables of the client; defaults are those of API.md / BEHAVIOUR.md."""

    base_url: str
    ts_diff_ms: int = auth.DEFAULT_TS_DIFF_MS
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 5.0
    max_retries: int = 3
    backoff_base_seconds: float = 1.0
    backoff_jitter: float = 0.25
    rfq_body_encoding: str = "form"
    order_actions_per_second: float = 15.0
    down_after_failures: int = 3
    outage_alert_seconds: float = DEFAULT_OUTAGE_ALERT_SECONDS
    rebuild_session_after_failures: int = 5
    user_agent: str = "CoincallTrader"
    time_sync_interval_seconds: float = 600.0
    # Perpetual futures: the UNCERTAIN points of API.md 14.9, with their defaults.
    perp_sign_market_data: bool = True        # 14.9 #1: sign the market-data reads too
    perp_allow_fok: bool = False              # 14.9 #3: FOK may be refused (12012 lists GTC|IOC)
    perp_history_direction: str | None = None  # 14.9 #6: send only fromId unless set ("NEXT"/"PREV")
    # API.md 12 #11: the code a stale signing ts is refused with (10557 documented); `doctor --orders`
    # probes it and the override file may name another. Either code triggers one time resync.
    timestamp_code: int = 10557

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^/\s]+", self.base_url or ""):
            raise invalid("ClientSettings", "base_url", self.base_url, "use e.g. https://api.coincall.com")
        self._require(self.rfq_body_encoding in ENCODINGS, "rfq_body_encoding", "must be 'form' or 'json'")
        self._require(0 < self.ts_diff_ms <= 60_000, "ts_diff_ms", "must be in (0, 60000]")
        self._require(self.timeout_seconds > 0, "timeout_seconds", "must be > 0")
        self._require(self.connect_timeout_seconds > 0, "connect_timeout_seconds", "must be > 0")
        self._require(self.max_retries >= 0, "max_retries", "must be >= 0")
        self._require(self.backoff_base_seconds >= 0, "backoff_base_seconds", "must be >= 0")
        self._require(0 <= self.backoff_jitter < 1, "backoff_jitter", "must be in [0, 1)")
        self._require(self.order_actions_per_second > 0, "order_actions_per_second", "must be > 0")
        self._require(self.down_after_failures >= 1, "down_after_failures", "must be >= 1")
        self._require(math.isfinite(self.outage_alert_seconds) and self.outage_alert_seconds >= 1,
                      "outage_alert_seconds", "must be a number of seconds >= 1")
        self._require(self.rebuild_session_after_failures >= 1, "rebuild_session_after_failures", "must be >= 1")
        self._require(self.time_sync_interval_seconds > 0, "time_sync_interval_seconds", "must be > 0")
        self._require(self.perp_history_direction in HISTORY_DIRECTIONS, "perp_history_direction",
                      "must be None, 'NEXT' or 'PREV'")

    def _require(self, ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise invalid("ClientSettings", name, getattr(self, name), rule)


# --------------------------------------------------------------------------------------
# Reachability (BEHAVIOUR.md 7.3)
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReachabilityEvent:
    """One transition of ``Reachability``, as its listeners receive it.

    ``at`` is the clock time of the request outcome that caused it; ``outage_started_at``
    the time of the first failed request of the outage (None when no failure was seen);
    ``failures`` the failed requests of the outage so far (for UP/RECOVERED: in total).
    """

    kind: str
    detail: str
    at: float
    outage_started_at: float | None
    failures: int
    last_error: str

    @property
    def outage_seconds(self) -> float:
        """How long the outage has lasted (UNREACHABLE) or lasted (UP, RECOVERED)."""
        return self.at - self.outage_started_at if self.outage_started_at is not None else 0.0


ReachabilityListener = Callable[[ReachabilityEvent], None]


class Reachability:
    """UP/DOWN state of the exchange from consecutive request outcomes.

    A failure is "no usable answer or throttled"; anything else proves the exchange is
    there. Listeners get a ``ReachabilityEvent`` on transitions only:

    * ``DOWN`` after ``down_after_failures`` consecutive failures (the monitor backs off),
      ``UP`` at the first success after it;
    * ``UNREACHABLE`` once per outage, at the first failure recorded at least
      ``outage_alert_seconds`` after the outage's first failure (time, not a count: a poll
      backed off to 30 s needs minutes of failures either way), ``RECOVERED`` at the first
      success after it, with the outage's length.

    An outage is the run of consecutive failures: one success ends it.
    """

    DOWN = "DOWN"
    UP = "UP"
    UNREACHABLE = "UNREACHABLE"
    RECOVERED = "RECOVERED"

    def __init__(self, down_after_failures: int = 3,
                 outage_alert_seconds: float = DEFAULT_OUTAGE_ALERT_SECONDS) -> None:
        self._threshold = down_after_failures
        self.outage_alert_seconds = float(outage_alert_seconds)
        self._lock = threading.Lock()
        self._listeners: list[ReachabilityListener] = []
        self.is_up = True
        self.consecutive_failures = 0
        self.down_since: float | None = None
        self.last_success: float | None = None
        self.failing_since: float | None = None
        self.last_error = ""
        self.outage_reported = False

    def add_listener(self, listener: ReachabilityListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: ReachabilityListener) -> None:
        self._listeners.remove(listener)

    def record_success(self, now: float) -> None:
        with self._lock:
            recovered = not self.is_up
            reported = self.outage_reported
            outage_start, failures, last_error = self.failing_since, self.consecutive_failures, self.last_error
            self.is_up = True
            self.consecutive_failures = 0
            self.down_since = None
            self.failing_since = None
            self.outage_reported = False
            self.last_success = now
        if not (recovered or reported):
            return
        seconds = now - outage_start if outage_start is not None else 0.0
        if recovered:
            detail = f"Coincall reachable again: recovered after {seconds:.0f} s"
            logger.warning(detail)
            self._notify(ReachabilityEvent(self.UP, detail, now, outage_start, failures, last_error))
        if reported:
            detail = f"Coincall outage over after {seconds:.0f} s ({failures} failed requests)"
            self._notify(ReachabilityEvent(self.RECOVERED, detail, now, outage_start, failures, last_error))

    def record_failure(self, now: float, reason: str = "") -> None:
        with self._lock:
            self.consecutive_failures += 1
            self.last_error = reason
            if self.failing_since is None:
                self.failing_since = now
            went_down = self.is_up and self.consecutive_failures >= self._threshold
            if went_down:
                self.is_up = False
                self.down_since = now
            report = not self.outage_reported and now - self.failing_since >= self.outage_alert_seconds
            if report:
                self.outage_reported = True
            count, outage_start = self.consecutive_failures, self.failing_since
        if went_down:
            detail = f"Coincall unreachable: {count} consecutive failures (last: {reason or 'unknown'})"
            logger.warning(detail)
            self._notify(ReachabilityEvent(self.DOWN, detail, now, outage_start, count, reason))
        if report:
            detail = (f"Coincall unreachable for {now - outage_start:.0f} s: {count} consecutive failures "
                      f"(last: {reason or 'unknown'})")
            self._notify(ReachabilityEvent(self.UNREACHABLE, detail, now, outage_start, count, reason))

    def _notify(self, event: ReachabilityEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must never break a request
                logger.exception("reachability listener failed on %s", event.kind)

    def __repr__(self) -> str:
        state = "UP" if self.is_up else "DOWN"
        return f"Reachability({state}, consecutive_failures={self.consecutive_failures})"


# --------------------------------------------------------------------------------------
# Client-side request budgets
# --------------------------------------------------------------------------------------


class _SlidingWindowBudget:
    """At most ``limit`` requests in any ``window`` seconds, the way the exchange counts.

    A classic token bucket of capacity N refilling N/window can let 2N requests through in
    one window and so trip the exchange's limit; a sliding window cannot. Each caller
    reserves its send time under the lock and then waits outside it.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._sent: deque[float] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def reserve(self, now: float) -> float:
        """Reserve the next slot; returns how long the caller must wait (0 if none)."""
        with self._lock:
            start = now
            if len(self._sent) == self.limit:
                start = max(now, self._sent[0] + self.window)
            self._sent.append(start)
        return start - now


class RequestBudgets:
    """Per-group budgets (API.md 3.4) on the injected clock; waiting never raises."""

    def __init__(self, clock: Clock, order_actions_per_second: float) -> None:
        self._clock = clock
        self._budgets: dict[str, _SlidingWindowBudget] = {
            name: _SlidingWindowBudget(limit, window) for name, (limit, window) in GROUP_LIMITS.items()
        }
        actions = max(1, int(order_actions_per_second))
        self._budgets[ORDER_ACTIONS_BUDGET] = _SlidingWindowBudget(actions, actions / order_actions_per_second)

    def acquire(self, group: str | None) -> float:
        """Wait (on the clock) until a request of ``group`` may go; returns the seconds waited."""
        if group is None:
            return 0.0
        key = ORDER_ACTIONS_BUDGET if group in ORDER_ACTION_GROUPS else group
        budget = self._budgets.get(key)
        if budget is None:
            return 0.0
        wait = budget.reserve(self._clock.monotonic())
        if wait > 0:
            logger.debug("rate budget %s full: waiting %.3f s", key, wait)
            self._clock.sleep(wait)
        return wait


# --------------------------------------------------------------------------------------
# Parameter hygiene
# --------------------------------------------------------------------------------------


def _sendable(value: Any, name: str) -> Any:
    """``value`` ready to send, or ValueError: no nulls, no booleans, no scientific floats."""
    if isinstance(value, Mapping):
        return {str(k): _sendable(v, f"{name}.{k}") for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_sendable(v, f"{name}[]") for v in value if v is not None]
    if isinstance(value, bool):
        raise ValueError(f"parameter {name}: booleans are never sent to Coincall (use 0/1)")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"parameter {name}: {value} is not a finite number")
        return _checked_float(float(value), name)
    if isinstance(value, float):
        return _checked_float(value, name)
    if isinstance(value, (int, str)):
        return value
    raise ValueError(f"parameter {name}: unsupported type {type(value).__name__}")


def _checked_float(value: float, name: str) -> float:
    text = repr(value)
    if not math.isfinite(value) or "e" in text or "E" in text:
        raise ValueError(
            f"parameter {name}: {text} would be sent in scientific or non-finite form; snap it first"
        )
    return value


def clean_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The dict that is both signed and sent: top-level and nested nulls dropped, values checked."""
    return _sendable(dict(params or {}), "params")


def _as_int_id(value: Any, name: str) -> int:
    """A 64-bit id as an int, from an int or a decimal string; floats are refused."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"{name} must be an integer id (int or digit string), got {type(value).__name__}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and value.strip().isdigit():
        result = int(value.strip())
    else:
        raise ValueError(f"{name} must be an integer id (int or digit string), got {value!r}")
    if not 0 <= result < 2**63:
        raise ValueError(f"{name} {result} is outside the int64 range")
    return result


def _as_str_id(value: Any, name: str) -> str:
    """RFQ endpoints take ids as strings; accept ints or strings."""
    if isinstance(value, (bool, float)) or value is None:
        raise ValueError(f"{name} must be an id (int or string), got {value!r}")
    text = str(value).strip()
    if not text:
        raise ValueError(f"{name} is empty")
    return text


def _side_code(side: Any) -> int:
    """The wire's ``tradeSide`` for a ``Side``, its code, or its name (``ValueError`` otherwise)."""
    if isinstance(side, bool):
        raise ValueError(f"side must be 1/'BUY' or 2/'SELL', got {side!r}")
    return int(Side.from_text(side) if isinstance(side, str) else Side.of(side))


def _plain_decimal_text(value: Any, name: str) -> str:
    """A quantity as the plain decimal string RFQ legs expect ("0.5")."""
    if isinstance(value, str):
        return value
    checked = _sendable(value, name)
    if isinstance(checked, float) and checked.is_integer():
        return repr(checked)
    return str(checked)


def _require_positive(name: str, number: Any) -> None:
    """A positive finite number (int, float or Decimal), or ``ValueError`` before anything is sent."""
    if isinstance(number, bool) or not isinstance(number, (int, float, Decimal)):
        raise ValueError(f"{name} must be a positive number, got {number!r}")
    finite = number.is_finite() if isinstance(number, Decimal) else math.isfinite(number)
    if not finite or not number > 0:
        raise ValueError(f"{name} must be a positive finite number, got {number!r}")


def _perp_order_type(order_type: Any) -> PerpOrderType:
    """A sendable perp order type (LIMIT, MARKET or POST_ONLY); conditional orders are never sent."""
    if isinstance(order_type, bool):
        raise ValueError(f"order_type must be a PerpOrderType, got {order_type!r}")
    try:
        kind = PerpOrderType(order_type)
    except ValueError:
        raise ValueError(f"order_type must be a PerpOrderType, got {order_type!r}") from None
    if kind not in PERP_SENDABLE_TYPES:
        raise ValueError(f"order_type must be LIMIT, MARKET or POST_ONLY, got {kind.name}")
    return kind


def _perp_symbol_arg(symbol: str) -> str:
    """A perp symbol as the order routes take it (``BTCUSD``), checked before anything is sent."""
    if (not isinstance(symbol, str) or not symbol.isalnum() or not symbol.isupper()
            or not symbol.endswith(PERP_QUOTE) or symbol == PERP_QUOTE):
        raise ValueError(f"symbol must be a perp symbol such as 'BTCUSD', got {symbol!r}")
    return symbol


def _order_id_or_unknown(data: Any, endpoint: Endpoint, client_order_id: int | None) -> int:
    """The ``orderId`` of a create/amend answer; code 0 without a usable one is an unknown outcome."""
    order_id = data.get("orderId") if isinstance(data, Mapping) else data
    try:
        return _as_int_id(order_id, "orderId")
    except ValueError:
        raise OrderOutcomeUnknown(endpoint.method + " " + endpoint.path, "code 0 without a usable orderId",
                                  client_order_id) from None


_Row = TypeVar("_Row")


def _walk_cursor(read: Callable[[int | None], Page[_Row]], key: Callable[[_Row], int],
                 endpoint: Endpoint, page_size: int) -> list[_Row]:
    """Every row of a cursor-paged history (API.md 14.6). A page that brings nothing new or no
    cursor while claiming more (or, saying nothing, full: ``Page.more``), or more than
    ``PERP_MAX_PAGES`` pages, is a ``TransportError``: a partial history is never passed off
    as the whole of it."""
    rows: dict[int, _Row] = {}
    cursor: int | None = None
    for _ in range(PERP_MAX_PAGES):
        page = read(cursor)
        before = len(rows)
        for row in page.rows:
            rows.setdefault(key(row), row)
        if not page.more(page_size):
            return list(rows.values())
        if page.next_cursor is None or len(rows) == before or page.next_cursor == cursor:
            raise TransportError(endpoint.method + " " + endpoint.path,
                                 f"history cursor {page.next_cursor} brought no new rows")
        cursor = page.next_cursor
    raise TransportError(endpoint.method + " " + endpoint.path, f"more than {PERP_MAX_PAGES} history pages")


def _funding_key(payment: FundingPayment) -> tuple[Any, ...]:
    if payment.record_id is not None:
        return (payment.record_id,)
    return (payment.symbol, payment.time_ms, payment.side, payment.qty, payment.fee)


def _scrub(text: str) -> str:
    """A library error message without URL query strings."""
    return _URL_QUERY.sub("", text)


def _rendered_pairs(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(k, auth.render_value(v)) for k, v in params.items()]


# --------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One logical request, fully prepared except for the per-attempt signature."""

    method: str
    path: str
    params: dict[str, Any]   # exactly what is signed and sent
    encoding: str            # "query", "json" or "form"
    signed: bool
    group: str | None
    client_order_id: int | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"

    def url(self, base_url: str) -> str:
        url = base_url + self.path
        if self.encoding == "query" and self.params:
            url += "?" + urlencode(_rendered_pairs(self.params), quote_via=quote)
        return url

    def body(self) -> bytes | None:
        if self.encoding == "json":
            return json.dumps(self.params, separators=(",", ":")).encode("utf-8")
        if self.encoding == "form":
            return urlencode(_rendered_pairs(self.params), quote_via=quote).encode("utf-8")
        return None

    @property
    def content_type(self) -> str:
        return FORM_CONTENT_TYPE if self.encoding == "form" else JSON_CONTENT_TYPE


@dataclass(frozen=True)
class ObservedResponse:
    """One answer exactly as it arrived, for a ``ResponseObserver`` (payload capture, ``doctor``).

    ``params`` are the request's parameters as signed and sent; ``route`` the catalogue's path
    template (``/open/option/get/v1/{index}``) when the path is a known route. ``secrets`` are
    the values of this request that must never be written anywhere: the API key and the
    signature (the observer's redaction scrubs them from everything it keeps).
    """

    method: str
    path: str
    route: str | None
    params: Mapping[str, Any]
    encoding: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed_seconds: float
    received_at_ms: int
    secrets: tuple[str, ...] = ()


class ResponseObserver(Protocol):
    """Told of every answer the client receives (HTTP status and body, whatever they say).

    It must be quick and must not raise; the client logs and ignores an observer that does,
    since looking at an answer may never change what happens to it.
    """

    def observe(self, response: ObservedResponse) -> None: ...


class HttpResponse(Protocol):
    """What the client reads of an HTTP answer (a ``requests.Response`` has all three)."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


class HttpSession(Protocol):
    """What the client asks of its HTTP session: one request, and closing.

    A ``requests.Session`` in the daemon; a backtest's in-process session
    (``simulator.inprocess.InProcessSession``) reaches the embedded simulator without a
    socket, preparing the same request.
    """

    def request(self, method: str, url: str, *, data: bytes | None, headers: dict[str, str],
                timeout: tuple[float, float], allow_redirects: bool) -> HttpResponse: ...

    def close(self) -> None: ...


def _is_retryable(exc: Exception) -> bool:
    if isinstance(exc, TransportError):
        return True
    return isinstance(exc, ExchangeError) and (
        isinstance(exc, RateLimitedError) or exc.code in TRANSIENT_CODES
    )


def _is_reachability_failure(exc: Exception) -> bool:
    return isinstance(exc, (TransportError, RateLimitedError))


class CoincallClient:
    """Signed REST client for Coincall (see the module docstring for the rules it keeps)."""

    def __init__(
        self,
        settings: ClientSettings,
        credentials: Credentials | None,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        session_factory: Callable[[], HttpSession] = requests.Session,
        observer: ResponseObserver | None = None,
    ) -> None:
        self._settings = settings
        self._observer = observer
        self._credentials = credentials
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._session_factory = session_factory
        self._session_lock = threading.Lock()
        self._session = session_factory()
        self._base_url = settings.base_url.rstrip("/")
        self._budgets = RequestBudgets(clock, settings.order_actions_per_second)
        self._rfq_encoding = settings.rfq_body_encoding
        self._offset_ms = 0
        self._last_time_sync: float | None = None
        self.reachability = Reachability(settings.down_after_failures, settings.outage_alert_seconds)

    # ---- generic requests -------------------------------------------------------------

    def get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        signed: bool = True,
        group: str | None = None,
    ) -> Any:
        """GET ``path``; returns the envelope's ``data``. Idempotent, so retried on transient failures."""
        call = _Call("GET", path, clean_params(params), "query", signed, self._group_for("GET", path, group))
        return self._execute(call, idempotent=True)

    def post(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        encoding: str = "json",
        group: str | None = None,
        idempotent: bool = False,
    ) -> Any:
        """Signed POST; returns ``data``. Non-idempotent POSTs are sent exactly once."""
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        params = clean_params(body)
        coid = params.get("clientOrderId")
        call = _Call(
            "POST",
            path,
            params,
            encoding,
            True,
            self._group_for("POST", path, group),
            coid if isinstance(coid, int) else None,
        )
        return self._execute(call, idempotent=idempotent)

    @property
    def rfq_body_encoding(self) -> str:
        """The RFQ accept/cancel body encoding currently in use (learned on code 10004)."""
        return self._rfq_encoding

    @property
    def time_offset_seconds(self) -> float:
        """The offset added to the local clock when signing (0 unless |offset| > 0.5 s)."""
        return self._offset_ms / 1000.0

    def close(self) -> None:
        with self._session_lock:
            self._session.close()

    def __repr__(self) -> str:
        creds = repr(self._credentials) if self._credentials is not None else "None"
        return f"CoincallClient(base_url={self._base_url!r}, credentials={creds}, {self.reachability!r})"

    # ---- time --------------------------------------------------------------------------

    def sync_time(self) -> float:
        """Measure the offset to the exchange clock (seconds) and sign with it if it exceeds 0.5 s."""
        before = self._clock.now()
        server_ms = self.server_time()
        after = self._clock.now()
        offset = server_ms / 1000.0 - (before + after) / 2.0
        if abs(offset) > TIME_OFFSET_WARN_SECONDS:
            logger.warning("Coincall server time is %+.3f s from the local clock; signing with that offset", offset)
            self._offset_ms = int(round(offset * 1000))
        else:
            self._offset_ms = 0
        self._last_time_sync = after
        return offset

    def sync_time_if_due(self) -> float | None:
        """Re-sync if never done or older than ``time_sync_interval_seconds``; for the monitor loop."""
        last = self._last_time_sync
        if last is not None and self._clock.now() - last < self._settings.time_sync_interval_seconds:
            return None
        return self.sync_time()

    def _signing_ts_ms(self) -> int:
        return self._clock.now_ms() + self._offset_ms

    # ---- endpoints: public market data ---------------------------------------------

    def server_time(self) -> int:
        """Exchange time in ms (``GET /time``)."""
        data = self._get(Endpoints.SERVER_TIME)
        value = data.get("serverTime") if isinstance(data, Mapping) else data
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
            raise TransportError(Endpoints.SERVER_TIME.method + " /time", "no serverTime in the answer")
        return int(value)

    def public_config(self) -> Any:
        return self._get(Endpoints.PUBLIC_CONFIG)

    def instruments(self, base: str = "BTC") -> Any:
        return self._get(Endpoints.INSTRUMENTS, segments={"base": base})

    def option_chain(self, end_time_ms: int | None = None, index: str = "BTCUSD") -> Any:
        params = {"endTime": None if end_time_ms is None else int(end_time_ms)}
        return self._get(Endpoints.OPTION_CHAIN, params, segments={"index": index})

    def option_detail(self, symbol: str) -> Any:
        return self._get(Endpoints.OPTION_DETAIL, segments={"symbol": symbol})

    def orderbook(self, symbol: str) -> Any:
        return self._get(Endpoints.ORDERBOOK, segments={"symbol": symbol})

    def last_trades(self, symbol: str) -> Any:
        return self._get(Endpoints.LAST_TRADES, segments={"symbol": symbol})

    def futures_symbols(self, symbol: str | None = "BTCUSD") -> Any:
        return self._get(Endpoints.FUTURES_SYMBOLS, {"symbol": symbol})

    def index_price(self, underlying: str = "BTC") -> float:
        """The ``underlying`` index (``BTC``, ``ETH``) from the futures symbol endpoint (API.md 6.6):
        ``indexPrice`` of ``<UNDERLYING>USD`` only, never a fallback."""
        symbol = f"{underlying.upper()}USD"
        data = self.futures_symbols(symbol)
        entry = data
        if isinstance(data, list):
            entry = next((e for e in data if isinstance(e, Mapping) and e.get("symbol") == symbol), None)
        if not isinstance(entry, Mapping) or entry.get("symbol", symbol) != symbol:
            raise StaleDataError(f"Coincall futures symbols carry no {symbol} entry: no index price")
        raw = entry.get("indexPrice")
        try:
            value = float(raw) if raw is not None and not isinstance(raw, bool) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise StaleDataError(f"Coincall {symbol} indexPrice is unusable ({raw!r}): no index price")
        return value

    def delivery_prices(self, symbol: str = "BTCUSD") -> Any:
        return self._get(Endpoints.DELIVERY_PRICES, {"symbol": symbol})

    def estimated_expiration_price(self, end_time_ms: int, index: str = "BTCUSD") -> Any:
        return self._get(Endpoints.ESTIMATED_EXPIRATION_PRICE, {"index": index, "endTime": int(end_time_ms)})

    # ---- endpoints: account --------------------------------------------------------

    def query_api_key(self) -> Any:
        return self._get(Endpoints.QUERY_API_KEY)

    def user_info(self) -> Any:
        return self._get(Endpoints.USER_INFO)

    def account_summary(self) -> Any:
        return self._get(Endpoints.ACCOUNT_SUMMARY)

    def positions(self) -> Any:
        return self._get(Endpoints.POSITIONS)

    # ---- endpoints: orders ---------------------------------------------------------

    def pending_orders(self, page: int = 1, page_size: int = 500, currency: str | None = None) -> Any:
        params = {"page": int(page), "pageSize": int(page_size), "currency": currency}
        return self._get(Endpoints.PENDING_ORDERS, params)

    def all_pending_orders(self, currency: str | None = None) -> list[Any]:
        """Every open order: the endpoint returns 20 per page by default, so every page is read.

        The walk ends at ``pageTotal``; an answer without a usable one ends at ``total``, else at
        a short page (as ``perp_pending_orders`` does). Stopping after the first page because
        ``pageTotal`` was missing would pass a partial list off as the whole of it.
        """
        orders: list[Any] = []
        page = 1
        while True:
            data = self.pending_orders(page=page, page_size=PENDING_PAGE_SIZE, currency=currency)
            if isinstance(data, list):  # unexpected bare list: nothing to page through
                return orders + data
            if not isinstance(data, Mapping):
                raise TransportError(Endpoints.PENDING_ORDERS.method + " " + Endpoints.PENDING_ORDERS.path,
                                     "pending orders answer is not an object")
            rows = data.get("list") or []
            orders.extend(rows)
            page_total, total = data.get("pageTotal"), data.get("total")
            if isinstance(page_total, int) and not isinstance(page_total, bool):
                done = page >= page_total
            elif isinstance(total, int) and not isinstance(total, bool):
                done = page * PENDING_PAGE_SIZE >= total
            else:
                done = len(rows) < PENDING_PAGE_SIZE
            if done:
                return orders
            if page >= MAX_PENDING_PAGES:
                raise TransportError(Endpoints.PENDING_ORDERS.method + " " + Endpoints.PENDING_ORDERS.path,
                                     f"more than {MAX_PENDING_PAGES} pages of open orders")
            page += 1

    def create_order(
        self,
        symbol: str,
        qty: float | Decimal,
        side: int | str,
        price: float | Decimal,
        client_order_id: int | str,
        *,
        reduce_only: bool = False,
        time_in_force: str = "GTC",
        trade_type: int = 1,
    ) -> int:
        """Place one limit order; returns the exchange ``orderId``. Sent exactly once."""
        if time_in_force not in ("GTC", "IOC"):
            raise ValueError(f"time_in_force must be GTC or IOC, got {time_in_force!r}")
        if trade_type not in (1, 3):
            raise ValueError(f"trade_type must be 1 (LIMIT) or 3 (POST_ONLY), got {trade_type!r}")
        for name, number in (("qty", qty), ("price", price)):
            if isinstance(number, bool) or not isinstance(number, (int, float, Decimal)) or not number > 0:
                raise ValueError(f"{name} must be a positive number, got {number!r}")
        coid = _as_int_id(client_order_id, "client_order_id")
        body = {
            "symbol": symbol,
            "qty": qty,
            "tradeSide": _side_code(side),
            "tradeType": int(trade_type),
            "price": price,
            "timeInForce": time_in_force,
            "clientOrderId": coid,
            "reduceOnly": 1 if reduce_only else 0,
        }
        data = self._post(Endpoints.CREATE_ORDER, body, client_order_id=coid)
        order_id = data.get("orderId") if isinstance(data, Mapping) else data
        try:
            return _as_int_id(order_id, "orderId")
        except ValueError:
            raise OrderOutcomeUnknown(
                "POST " + Endpoints.CREATE_ORDER.path, "code 0 without a usable orderId", coid
            ) from None

    def cancel_order(self, order_id: int | str | None = None, client_order_id: int | str | None = None) -> None:
        """Request a cancel (the ack means accepted, not done: poll the order). Sent exactly once."""
        body, coid = self._order_ref(order_id, client_order_id)
        self._post(Endpoints.CANCEL_ORDER, body, client_order_id=coid)

    def query_order(self, order_id: int | str | None = None, client_order_id: int | str | None = None) -> dict:
        body, _ = self._order_ref(order_id, client_order_id)
        data = self._get(Endpoints.QUERY_ORDER, body)
        if not isinstance(data, dict):
            raise TransportError("GET " + Endpoints.QUERY_ORDER.path, "order query answer is not an object")
        return data

    def order_history(self, **filters: Any) -> Any:
        return self._get(Endpoints.ORDER_HISTORY, {"pageSize": 100, **filters})

    def trade_history(self, **filters: Any) -> Any:
        return self._get(Endpoints.TRADE_HISTORY, {"pageSize": 100, **filters})

    def exercise_history(self, **filters: Any) -> Any:
        return self._get(Endpoints.EXERCISE_HISTORY, {"pageSize": 50, **filters})

    # ---- endpoints: RFQ (taker) ----------------------------------------------------

    def rfq_create(self, legs: Sequence[Mapping[str, Any]]) -> dict:
        """Create an RFQ. Leg ``qty`` is sent as a plain decimal string (API.md 10.1). Sent exactly once."""
        if not legs:
            raise ValueError("an RFQ needs at least one leg")
        prepared = []
        for i, leg in enumerate(legs):
            if not isinstance(leg, Mapping) or not leg.get("instrumentName"):
                raise ValueError(f"RFQ leg {i} needs an instrumentName")
            item = dict(leg)
            if "qty" in item and item["qty"] is not None:
                item["qty"] = _plain_decimal_text(item["qty"], f"legs[{i}].qty")
            prepared.append(item)
        return self._post(Endpoints.RFQ_CREATE, {"legs": prepared})

    def rfq_quotes(self, request_id: int | str) -> list:
        data = self._get(Endpoints.RFQ_QUOTES, {"requestId": _as_str_id(request_id, "request_id")})
        return list(data or [])

    def rfq_accept(self, request_id: int | str, quote_id: int | str) -> dict:
        """Accept a quote. Not idempotent: the only second send is the 10004 encoding switch."""
        body = {"requestId": _as_str_id(request_id, "request_id"), "quoteId": _as_str_id(quote_id, "quote_id")}
        return self._post_rfq_form_endpoint(Endpoints.RFQ_ACCEPT, body)

    def rfq_cancel(self, request_id: int | str) -> Any:
        body = {"requestId": _as_str_id(request_id, "request_id")}
        return self._post_rfq_form_endpoint(Endpoints.RFQ_CANCEL, body)

    def blocktrade_orders(self, **filters: Any) -> Any:
        return self._get(Endpoints.BLOCKTRADE_ORDERS, filters)

    # ---- endpoints: perpetual futures, market data (API.md 14.3, 14.4) -------------
    # Keyed by underlying ("BTC", "ETH"); every read is signed unless
    # ``perp_sign_market_data`` is off (API.md 14.9 #1).

    def _perp_market_get(self, endpoint: Endpoint, params: Mapping[str, Any] | None = None, *,
                         segments: Mapping[str, str] | None = None) -> Any:
        return self._get(endpoint, params, segments=segments, signed=self._settings.perp_sign_market_data)

    def perp_specs(self) -> dict[str, PerpSpec]:
        """Every perp's contract specification (``futuresConfig`` of the public config), by underlying."""
        return parse_perp_specs(self._perp_market_get(Endpoints.PUBLIC_CONFIG))

    def perp_spec(self, underlying: str) -> PerpSpec:
        """``underlying``'s perp specification; ``PayloadError`` when the exchange lists none."""
        base = perp_symbol(underlying)[: -len(PERP_QUOTE)]
        specs = self.perp_specs()
        if base not in specs:
            raise PayloadError("futuresConfig", f"futuresConfig lists no perpetual for {base}")
        return specs[base]

    def perp_instruments(self) -> list[PerpInstrument]:
        """The instruments feed: last, bid/ask, index and funding of every perp."""
        return parse_perp_instruments(self._perp_market_get(Endpoints.PERP_INSTRUMENTS))

    def perp_funding_rate(self, underlying: str) -> FundingRate:
        """``underlying``'s current funding rate and next funding time (``StaleDataError`` if absent)."""
        symbol = perp_symbol(underlying)
        rates = parse_funding_rates(self._perp_market_get(Endpoints.FUNDING_RATE, {"symbol": symbol}))
        if symbol not in rates:
            raise StaleDataError(f"Coincall funding rates carry no {symbol} entry")
        return rates[symbol]

    def perp_ticker(self, underlying: str, *, with_funding: bool = True) -> PerpTicker:
        """Last, mark and index of ``underlying``'s perp (the symbol route, list or object),
        plus its funding rate (a second read) unless ``with_funding`` is False."""
        symbol = perp_symbol(underlying)
        asked_at = self._clock.now()   # an answer is as old as its request, never fresher
        data = self._perp_market_get(Endpoints.FUTURES_SYMBOLS, {"symbol": symbol})
        funding = self.perp_funding_rate(underlying) if with_funding else None
        return perp_ticker_from_api(data, symbol=symbol, as_of=asked_at, funding=funding)

    def perp_order_book(self, underlying: str) -> OrderBook:
        """``underlying``'s perp book (``/open/futures/order/orderbook/v1/<SYMBOL>``), best first."""
        symbol = perp_symbol(underlying)
        asked_at = self._clock.now()   # an answer is as old as its request, never fresher
        data = self._perp_market_get(Endpoints.PERP_ORDERBOOK, segments={"symbol": symbol})
        return perp_order_book_from_api(data, symbol=symbol, as_of=asked_at)

    def perp_last_trades(self, underlying: str) -> list[PerpPublicTrade]:
        symbol = perp_symbol(underlying)
        data = self._perp_market_get(Endpoints.PERP_LAST_TRADES, segments={"symbol": symbol})
        return parse_perp_public_trades(data, symbol=symbol)

    # ---- endpoints: perpetual futures, orders (API.md 14.5, 14.6) ------------------

    def perp_create_order(
        self,
        symbol: str,
        qty: float | Decimal,
        side: int | str,
        client_order_id: int | str,
        *,
        order_type: PerpOrderType | int = PerpOrderType.LIMIT,
        price: float | Decimal | None = None,
        time_in_force: str = "GTC",
        reduce_only: bool = False,
    ) -> int:
        """Place one perp order; returns the exchange ``orderId``. Sent exactly once.

        LIMIT and POST_ONLY need a positive ``price``; MARKET carries neither price nor
        ``timeInForce`` (12011/12013). ``timeInForce`` is GTC or IOC (FOK only with
        ``perp_allow_fok``, API.md 14.9 #3); ``stp`` is never sent (14.9 #4); ``reduceOnly`` and the
        integer ``clientOrderId`` always are. A lost answer raises ``OrderOutcomeUnknown``
        carrying the clientOrderId: resolve it with ``perp_order_by_client_id``.
        """
        kind = _perp_order_type(order_type)
        allowed = ("GTC", "IOC", "FOK") if self._settings.perp_allow_fok else ("GTC", "IOC")
        if time_in_force not in allowed:
            raise ValueError(f"time_in_force must be one of {allowed}, got {time_in_force!r}")
        _require_positive("qty", qty)
        if kind is PerpOrderType.MARKET:
            if price is not None:
                raise ValueError("a MARKET perp order carries no price")
        else:
            _require_positive("price", price)
        coid = _as_int_id(client_order_id, "client_order_id")
        body = {
            "symbol": _perp_symbol_arg(symbol),
            "qty": qty,
            "tradeSide": _side_code(side),
            "tradeType": int(kind),
            "price": None if kind is PerpOrderType.MARKET else price,
            "timeInForce": None if kind is PerpOrderType.MARKET else time_in_force,
            "clientOrderId": coid,
            "reduceOnly": 1 if reduce_only else 0,
        }
        data = self._post(Endpoints.PERP_CREATE_ORDER, body, client_order_id=coid)
        return _order_id_or_unknown(data, Endpoints.PERP_CREATE_ORDER, coid)

    def perp_amend_order(
        self,
        symbol: str,
        *,
        order_id: int | str | None = None,
        client_order_id: int | str | None = None,
        qty: float | Decimal | None = None,
        price: float | Decimal | None = None,
    ) -> int:
        """Change an open perp order's qty and/or price; returns the ``orderId`` the answer gives.

        Whether an amend issues a new orderId is UNCERTAIN (API.md 14.9 #5): keep tracking the
        order by its clientOrderId and take the returned id. Sent exactly once; a lost answer
        raises ``OrderOutcomeUnknown`` (with the clientOrderId when the order was named by it).
        """
        if qty is None and price is None:
            raise ValueError("an amend changes qty, price or both: give at least one")
        if qty is not None:
            _require_positive("qty", qty)
        if price is not None:
            _require_positive("price", price)
        ref, coid = self._order_ref(order_id, client_order_id)
        body = {**ref, "symbol": _perp_symbol_arg(symbol), "qty": qty, "price": price}
        data = self._post(Endpoints.PERP_AMEND_ORDER, body, client_order_id=coid)
        return _order_id_or_unknown(data, Endpoints.PERP_AMEND_ORDER, coid)

    def perp_cancel_order(self, *, order_id: int | str | None = None,
                          client_order_id: int | str | None = None) -> None:
        """Request a cancel (accepted, not done: poll the order). Sent exactly once."""
        body, coid = self._order_ref(order_id, client_order_id)
        self._post(Endpoints.PERP_CANCEL_ORDER, body, client_order_id=coid)

    def perp_batch_cancel(self, *, order_ids: Sequence[int | str] = (),
                          client_order_ids: Sequence[int | str] = ()) -> list[PerpCancelAck]:
        """Request cancels of several orders named one way (ids or clientOrderIds); the answer
        says which were accepted, not which are done. Sent exactly once."""
        if bool(order_ids) == bool(client_order_ids):
            raise ValueError("give order_ids or client_order_ids (one non-empty list)")
        if order_ids:
            body = {"orderIdList": [_as_int_id(value, "order_ids[]") for value in order_ids]}
        else:
            body = {"clientOrderIdList": [_as_int_id(value, "client_order_ids[]") for value in client_order_ids]}
        return parse_perp_cancel_acks(self._post(Endpoints.PERP_BATCH_CANCEL, body))

    def perp_order(self, *, order_id: int | str | None = None, client_order_id: int | str | None = None) -> PerpOrder:
        """One perp order by orderId or clientOrderId (an unknown one: ``ExchangeError`` 10584)."""
        params, _ = self._order_ref(order_id, client_order_id)
        return perp_order_from_api(self._get(Endpoints.PERP_QUERY_ORDER, params))

    def perp_order_by_client_id(self, client_order_id: int | str) -> PerpOrder:
        """The order our ``client_order_id`` names: how an unknown create outcome is resolved."""
        return self.perp_order(client_order_id=client_order_id)

    def perp_pending_orders_page(self, page: int = 1, page_size: int = PERP_PENDING_PAGE_SIZE,
                                 symbol: str | None = None) -> NumberedPage[PerpOrder]:
        params = {"page": int(page), "pageSize": int(page_size),
                  "symbol": None if symbol is None else _perp_symbol_arg(symbol)}
        return parse_perp_pending_page(self._get(Endpoints.PERP_PENDING_ORDERS, params))

    def perp_pending_orders(self, symbol: str | None = None) -> list[PerpOrder]:
        """Every open perp order, every page walked (``pageTotal``, else ``total``, else a short
        page ends it); an order seen on two pages (the list moved under us) is kept once."""
        orders: dict[int, PerpOrder] = {}
        for page in range(1, PERP_MAX_PAGES + 1):
            answer = self.perp_pending_orders_page(page, PERP_PENDING_PAGE_SIZE, symbol)
            for order in answer.rows:
                orders.setdefault(order.order_id, order)
            if answer.page_total is not None:
                done = page >= answer.page_total
            elif answer.total is not None:
                done = page * PERP_PENDING_PAGE_SIZE >= answer.total
            else:
                done = len(answer.rows) < PERP_PENDING_PAGE_SIZE
            if done:
                return list(orders.values())
        raise TransportError("GET " + Endpoints.PERP_PENDING_ORDERS.path,
                             f"more than {PERP_MAX_PAGES} pages of open perp orders")

    def perp_order_history_page(self, *, from_id: int | None = None, start_ms: int | None = None,
                                end_ms: int | None = None,
                                page_size: int = PERP_HISTORY_PAGE_SIZE) -> Page[PerpOrder]:
        """One page of the order history (newest first; ``from_id`` = the previous page's cursor)."""
        data = self._get(Endpoints.PERP_ORDER_HISTORY, self._history_params(from_id, start_ms, end_ms, page_size))
        return parse_perp_order_page(data)

    def perp_order_history(self, *, start_ms: int | None = None, end_ms: int | None = None,
                           page_size: int = PERP_HISTORY_PAGE_SIZE) -> list[PerpOrder]:
        """Every order of the window (the exchange's default: the last 24 h), every page walked."""
        def read(cursor: int | None) -> Page[PerpOrder]:
            return self.perp_order_history_page(from_id=cursor, start_ms=start_ms, end_ms=end_ms,
                                                page_size=page_size)
        return _walk_cursor(read, lambda order: order.order_id, Endpoints.PERP_ORDER_HISTORY, page_size)

    def perp_fills_page(self, *, from_id: int | None = None, start_ms: int | None = None,
                        end_ms: int | None = None, page_size: int = PERP_HISTORY_PAGE_SIZE) -> Page[PerpFill]:
        """One page of our perp fills (join them to orders by ``order_id``)."""
        data = self._get(Endpoints.PERP_TRADE_HISTORY, self._history_params(from_id, start_ms, end_ms, page_size))
        return parse_perp_fill_page(data)

    def perp_fills(self, *, start_ms: int | None = None, end_ms: int | None = None,
                   page_size: int = PERP_HISTORY_PAGE_SIZE) -> list[PerpFill]:
        """Every fill of the window, every page walked."""
        def read(cursor: int | None) -> Page[PerpFill]:
            return self.perp_fills_page(from_id=cursor, start_ms=start_ms, end_ms=end_ms, page_size=page_size)
        return _walk_cursor(read, lambda fill: fill.trade_id, Endpoints.PERP_TRADE_HISTORY, page_size)

    def _history_params(self, from_id: int | None, start_ms: int | None, end_ms: int | None,
                        page_size: int) -> dict[str, Any]:
        cursor = None if from_id is None else _as_int_id(from_id, "from_id")
        direction = self._settings.perp_history_direction if cursor is not None else None
        return {"pageSize": int(page_size), "fromId": cursor, "direction": direction,
                "startTime": None if start_ms is None else int(start_ms),
                "endTime": None if end_ms is None else int(end_ms)}

    # ---- endpoints: perpetual futures, positions, leverage, funding (API.md 14.7) --

    def perp_positions(self) -> list[PerpPosition]:
        """Every perp position; the side comes from ``tradeSide``, never from ``delta``."""
        return parse_perp_positions(self._get(Endpoints.PERP_POSITIONS))

    def perp_leverage(self, symbol: str) -> float:
        symbol = _perp_symbol_arg(symbol)
        return parse_perp_leverage(self._get(Endpoints.PERP_LEVERAGE, {"symbol": symbol}), symbol=symbol)

    def perp_set_leverage(self, symbol: str, leverage: int) -> None:
        """Set ``symbol``'s leverage; refused with 40038 while positions or orders exist."""
        if isinstance(leverage, bool) or not isinstance(leverage, int) or leverage < 1:
            raise ValueError(f"leverage must be a whole number >= 1, got {leverage!r}")
        self._post(Endpoints.PERP_SET_LEVERAGE, {"symbol": _perp_symbol_arg(symbol), "leverage": leverage})

    def perp_funding_records(self, symbol: str, *, start_ms: int | None = None,
                             end_ms: int | None = None) -> list[FundingPayment]:
        """Our funding payments on ``symbol`` in the window, every page walked."""
        payments: dict[tuple[Any, ...], FundingPayment] = {}
        for page in range(1, PERP_MAX_PAGES + 1):
            params = {"symbol": _perp_symbol_arg(symbol), "page": page, "pageSize": PERP_FUNDING_PAGE_SIZE,
                      "startTime": None if start_ms is None else int(start_ms),
                      "endTime": None if end_ms is None else int(end_ms)}
            answer = parse_funding_payment_page(self._get(Endpoints.FUNDING_RECORDS, params))
            for payment in answer.rows:
                payments.setdefault(_funding_key(payment), payment)
            if answer.page_total is not None:
                done = page >= answer.page_total
            elif answer.total is not None:
                done = page * PERP_FUNDING_PAGE_SIZE >= answer.total
            else:
                done = len(answer.rows) < PERP_FUNDING_PAGE_SIZE
            if done:
                return list(payments.values())
        raise TransportError("GET " + Endpoints.FUNDING_RECORDS.path,
                             f"more than {PERP_MAX_PAGES} pages of funding records")

    def perp_latest_funding_records(self, symbol: str | None = None, *,
                                    start_ms: int | None = None) -> list[FundingPayment]:
        """The latest funding payments (all symbols without ``symbol``; the exchange's window is
        the last 8 h by default, and ``start_ms`` must lie within the last 24 h)."""
        params = {"symbol": None if symbol is None else _perp_symbol_arg(symbol),
                  "startTime": None if start_ms is None else int(start_ms)}
        return list(parse_funding_payment_page(self._get(Endpoints.LATEST_FUNDING_RECORDS, params)).rows)

    # ---- plumbing: endpoint helpers ------------------------------------------------

    def _get(self, endpoint: Endpoint, params: Mapping[str, Any] | None = None, *,
             segments: Mapping[str, str] | None = None, signed: bool | None = None) -> Any:
        # The endpoint is known, so its group is too: no search of the catalogue per request
        # (``get`` would find this same endpoint for the rendered path). ``signed`` overrides
        # the endpoint's own flag (the perp market-data reads follow a setting).
        path = endpoint.render_path(**(segments or {}))
        sign = endpoint.signed if signed is None else signed
        call = _Call("GET", path, clean_params(params), "query", sign, endpoint.group)
        return self._execute(call, idempotent=True)

    def _post(self, endpoint: Endpoint, body: Mapping[str, Any], *, encoding: str | None = None,
              client_order_id: int | None = None) -> Any:
        call = _Call(
            "POST",
            endpoint.path,
            clean_params(body),
            encoding or endpoint.encoding,
            True,
            endpoint.group,
            client_order_id,
        )
        return self._execute(call, idempotent=endpoint.idempotent)

    def _post_rfq_form_endpoint(self, endpoint: Endpoint, body: Mapping[str, Any]) -> Any:
        """Send with the learned encoding; on 10004 (definitive) re-send once with the other (API.md 12 #3)."""
        encoding = self._rfq_encoding
        try:
            return self._post(endpoint, body, encoding=encoding)
        except ExchangeError as exc:
            if exc.code != INVALID_PARAMETER_CODE:
                raise
            other = "json" if encoding == "form" else "form"
            logger.warning("%s %s rejected as %s body (code 10004); re-sending once as %s",
                           endpoint.method, endpoint.path, encoding, other)
        result = self._post(endpoint, body, encoding=other)
        if self._rfq_encoding != other:
            logger.warning("RFQ accept/cancel body encoding switched to %s", other)
            self._rfq_encoding = other
        return result

    @staticmethod
    def _order_ref(order_id: Any, client_order_id: Any) -> tuple[dict[str, int], int | None]:
        if (order_id is None) == (client_order_id is None):
            raise ValueError("give exactly one of order_id or client_order_id")
        if order_id is not None:
            return {"orderId": _as_int_id(order_id, "order_id")}, None
        coid = _as_int_id(client_order_id, "client_order_id")
        return {"clientOrderId": coid}, coid

    @staticmethod
    def _group_for(method: str, path: str, group: str | None) -> str | None:
        if group is not None:
            return group
        known = Endpoints.find(method, path)
        return known.group if known else None

    # ---- plumbing: attempts, retries, classification ---------------------------------

    def _execute(self, call: _Call, *, idempotent: bool) -> Any:
        if call.signed and self._credentials is None:
            raise ConfigError(f"{call.endpoint} needs API credentials, but none are configured")
        retries = 0
        attempt = 0
        resynced = False
        while True:
            attempt += 1
            try:
                return self._attempt(call, attempt)
            except (TransportError, ExchangeError) as exc:
                if isinstance(exc, ExchangeError) and not resynced and (
                        exc.is_timestamp or exc.code == self._settings.timestamp_code):
                    resynced = True
                    self._resync_after_timestamp_error(call.endpoint)
                    if idempotent:
                        continue
                    raise
                if not idempotent:
                    if isinstance(exc, TransportError):
                        raise OrderOutcomeUnknown(call.endpoint, exc.reason, call.client_order_id) from exc
                    raise
                if not _is_retryable(exc):
                    raise
                if retries >= self._settings.max_retries:
                    logger.warning("%s failed after %d attempts, giving up: %s", call.endpoint, attempt, exc)
                    raise
                delay = self._backoff_delay(retries)
                retries += 1
                logger.info("%s attempt %d failed (%s); retrying in %.2f s", call.endpoint, attempt, exc, delay)
                self._clock.sleep(delay)

    def _backoff_delay(self, retry_index: int) -> float:
        jitter = self._settings.backoff_jitter
        factor = 1.0 + self._rng.uniform(-jitter, jitter) if jitter else 1.0
        return self._settings.backoff_base_seconds * (2 ** retry_index) * factor

    def _resync_after_timestamp_error(self, endpoint: str) -> None:
        logger.warning("%s: timestamp rejected (10557); re-syncing with server time", endpoint)
        try:
            self.sync_time()
        except TraderError as exc:
            logger.warning("time re-sync failed: %s", exc)

    def _attempt(self, call: _Call, attempt: int) -> Any:
        """One signed send and its classification; records reachability."""
        self._budgets.acquire(call.group)
        headers = {"Content-Type": call.content_type, "User-Agent": self._settings.user_agent}
        if call.signed:
            creds = self._credentials
            assert creds is not None  # checked in _execute
            headers.update(
                auth.signed_headers(call.method, call.path, call.params, creds.api_key, creds.api_secret,
                                    self._signing_ts_ms(), self._settings.ts_diff_ms)
            )
        started = self._clock.monotonic()
        try:
            response = self._current_session().request(
                call.method,
                call.url(self._base_url),
                data=call.body(),
                headers=headers,
                timeout=(self._settings.connect_timeout_seconds, self._settings.timeout_seconds),
                allow_redirects=False,
            )
            status, content = response.status_code, response.content
        except requests.RequestException as exc:
            failure = TransportError(call.endpoint, f"{type(exc).__name__}: {_scrub(str(exc))}")
            self._log_attempt(call, attempt, started, failure.reason)
            self._record_outcome(failure)
            raise failure from None
        if self._observer is not None:
            self._observe(call, headers, status, response.headers, content, started)
        try:
            data = self._classify(call.endpoint, status, content)
        except (TransportError, ExchangeError, EndpointNotFound) as exc:
            self._log_attempt(call, attempt, started, f"HTTP {status}: {exc}")
            self._record_outcome(exc)
            raise
        self._log_attempt(call, attempt, started, f"HTTP {status} code 0")
        self._record_outcome(None)
        return data

    def _observe(self, call: _Call, sent_headers: Mapping[str, str], status: int,
                 received_headers: Mapping[str, str], content: bytes, started: float) -> None:
        """Hand the answer to the observer (capture); its failure never touches the request."""
        observer = self._observer
        assert observer is not None
        known = Endpoints.find(call.method, call.path)
        secrets = tuple(value for value in (sent_headers.get(auth.HEADER_API_KEY), sent_headers.get(auth.HEADER_SIGN))
                        if value)
        try:
            observer.observe(ObservedResponse(
                method=call.method, path=call.path, route=known.path if known is not None else None,
                params=dict(call.params), encoding=call.encoding, status=status,
                headers={str(k): str(v) for k, v in dict(received_headers or {}).items()}, body=content,
                elapsed_seconds=self._clock.monotonic() - started, received_at_ms=self._clock.now_ms(),
                secrets=secrets))
        except Exception:  # an observer must never break a request
            logger.warning("response observer failed on %s", call.endpoint, exc_info=True)

    @staticmethod
    def _classify(endpoint: str, status: int, content: bytes) -> Any:
        """Envelope rules of API.md 3.1/3.2: data on code 0, typed errors otherwise."""
        if status == 404:
            raise EndpointNotFound(endpoint)
        if status == HTTP_TOO_MANY_REQUESTS:
            raise RateLimitedError(HTTP_TOO_MANY_REQUESTS, "HTTP 429 Too Many Requests", endpoint)
        if status >= 500:
            raise TransportError(endpoint, "server error", status)
        try:
            envelope = decode_body(content)
        except (UnicodeDecodeError, ValueError):
            raise TransportError(endpoint, "body is not JSON", status) from None
        if not isinstance(envelope, dict) or "code" not in envelope:
            raise TransportError(endpoint, "body is not a Coincall envelope", status)
        code = envelope.get("code")
        if isinstance(code, bool) or not isinstance(code, int):
            try:
                code = int(str(code))
            except ValueError:
                raise TransportError(endpoint, f"envelope code {code!r} is not an integer", status) from None
        if code == 0:
            if status != 200:
                raise TransportError(endpoint, "success envelope with a non-200 status", status)
            return envelope.get("data")
        msg = envelope.get("msg")
        msg = msg if isinstance(msg, str) else ""
        data = envelope.get("data")
        if code in AUTH_CODES:
            raise AuthError(code, msg, endpoint, data)
        if code in RATE_LIMITED_CODES:
            raise RateLimitedError(code, msg, endpoint, data)
        raise ExchangeError(code, msg, endpoint, data)

    def _record_outcome(self, exc: Exception | None) -> None:
        now = self._clock.now()
        if exc is None or not _is_reachability_failure(exc):
            self.reachability.record_success(now)
            return
        self.reachability.record_failure(now, str(exc))
        threshold = self._settings.rebuild_session_after_failures
        if self.reachability.consecutive_failures % threshold == 0:
            self._rebuild_session()

    def _rebuild_session(self) -> None:
        with self._session_lock:
            old = self._session
            self._session = self._session_factory()
        try:
            old.close()
        except Exception:  # closing a broken session must not hide the real failure
            logger.debug("closing the old HTTP session failed", exc_info=True)
        logger.warning("HTTP session rebuilt after %d consecutive failures", self.reachability.consecutive_failures)

    def _current_session(self) -> HttpSession:
        with self._session_lock:
            return self._session

    def _log_attempt(self, call: _Call, attempt: int, started: float, outcome: str) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            elapsed = self._clock.monotonic() - started
            logger.debug("%s attempt %d: %s in %.3f s", call.endpoint, attempt, outcome, elapsed)
