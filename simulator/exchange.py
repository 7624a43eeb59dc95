"""The exchange model of the Coincall simulator: accounts, orders, matching, fees, margin,
positions, expiry settlement, histories and the RFQ taker flow.

Why it exists: the daemon must be tested against something that behaves like Coincall
in every way that has cost real money (API.md 11 and 13): string-typed numbers in some
payloads and not others, fills that land while a cancel is in flight, reduce-only
orders that refuse to flip a position, expiry at 08:00 UTC against a 30-minute index
average, RFQ quotes whose legs carry the maker's side. ``server.py`` handles HTTP,
signatures and envelopes; every route handler named in ``routes.py`` is a method here,
called as ``handler(account, params)`` and returning the envelope's ``data``.

Design in brief
---------------
* Time: nothing moves by itself. ``sync(now)`` walks an event loop up to ``now``:
  cancel transitions (4 -> 5 -> 3), the passive-fill engine on a fixed grid of
  ``engine_step_seconds``, RFQ maker events and 08:00 expiries, advancing the market to
  each event instant first. Every random draw comes from ``random.Random`` seeded by a
  string of stable parts (seed, order id, grid step ...), so a run is a pure function of
  the seed and the requests, whatever the slicing of time.
* Quantities are integer lots of the instrument's quantity step internally (no float
  residue): 0.01 BTC for BTC options, 0.1 ETH for ETH options, 0.001 BTC for BTCUSD and
  0.01 ETH for ETHUSD (``_units``); prices and money are floats rounded on output.
* Perpetuals (``BTCUSD``, ``ETHUSD``) share the orders, fills, positions, matching, passive
  fills and margin of the options; their own handlers (``futures_*``) serve the futures
  routes, and funding is an engine event at 00/08/16 UTC (``_run_funding``).
* Accounting is futures-style (API.md 13 #18): premium stays in a position's average
  price; cash moves with realized PnL and fees, so ``equity = cash + sum(upnl at mark)``.
* Matching: a limit order crosses the market model's synthetic book (depth consumed
  stays consumed while that book bucket lasts) and other accounts' resting orders,
  never its own account's orders. The rest rests (GTC) or is cancelled (IOC/FOK).
* Resting orders fill passively on the engine grid: when the book (net of the depth
  takers and earlier passive fills consumed) trades through them, or at/inside the
  touch with a seeded probability per minute.

Decisions on UNCERTAIN points are listed in ``ExchangeConfig``'s docstring.
"""
from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import json
import logging
import math
import random
import re
import secrets
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

from simulator.errors import SimError
from simulator.float_text import money_repr, rounded_repr
from simulator.market import MarkValues, OptionQuote
from simulator.market_source import MarketSource
from simulator.markets import Markets, option_base
from simulator.payload import RawJSON, SymbolTexts
from simulator.perpetuals import (
    FUNDING_INTERVAL_MS,
    PerpMarket,
    funding_boundary_at_or_before,
    next_funding_after,
)
from simulator.pricing import implied_vol, years_between
from simulator.records import FillRecords, OrderRecords
from simulator.rfq_makers import (
    BUY as RFQ_BUY,
    SELL as RFQ_SELL,
    SIDES as RFQ_SIDES,
    LegScreen,
    MakerSettings,
    QuoteLeg,
    RfqDesk,
    RfqLeg,
    opposite as rfq_opposite,
)

log = logging.getLogger(__name__)

# --- enums (API.md 0 #9-11) ---------------------------------------------------------------
SIDE_BUY = 1
SIDE_SELL = 2

TT_LIMIT = 1
TT_MARKET = 2
TT_POST_ONLY = 3
TT_BLOCK = 14

ST_NEW = 0
ST_FILLED = 1
ST_PARTIAL = 2
ST_CANCELED = 3
ST_PRE_CANCEL = 4
ST_CANCELING = 5
ST_INVALID = 6
ST_CANCEL_BY_EXERCISE = 10
LIVE_STATES = frozenset({ST_NEW, ST_PARTIAL, ST_PRE_CANCEL, ST_CANCELING})
FINAL_STATES = frozenset({ST_FILLED, ST_CANCELED, ST_INVALID, ST_CANCEL_BY_EXERCISE})

TIME_IN_FORCE = ("GTC", "IOC", "FOK")

# --- error codes (API.md 3.3) -----------------------------------------------------------------
E_NO_PERMISSION = 7001
E_NOT_ALLOWED = 10001
E_PARAM_ILLEGAL = 10004
E_PARAM_ERROR = 10005
E_INSUFFICIENT_BALANCE = 10529
E_ENTER_PRICE = 10530
E_PRICE_ABOVE_MAX = 10531
E_PRICE_BELOW_MIN = 10532
E_ENTER_AMOUNT = 10533
E_SIZE_ABOVE_MAX = 10534
E_TOO_MANY_ORDERS = 10535
E_INSUFFICIENT_POSITION = 10536
E_NOT_AUTHORIZED = 10554
E_QTY_BELOW_MIN = 10558
E_COUNT_LIMIT = 10572
E_UNKNOWN_INSTRUMENT = 10574
E_NEED_ORDER_ID = 10575
E_DUPLICATE_CLIENT_ID = 10577
E_ORDER_NOT_FOUND = 10584
E_NOT_TRADEABLE = 10620
E_ALREADY_CANCELLED = 11101
E_ALREADY_FILLED = 11102
E_BAD_TIME_IN_FORCE = 12012
E_PRICE_ILLEGAL = 40035
E_MARKET_NO_TIF = 12011
E_MARKET_NO_PRICE = 12013
E_LEVERAGE_LOCKED = 40038

LOT = 0.01                    # qty step of BTC options (qtyDecimal 2)
LOTS_PER_BTC = 100            # lots per BTC of a BTC option; other instruments: ``SimExchange._units``
ID_BASE = 1_990_000_000_000_000_000
ID_STRIDE = 4096
DAY_MS = 86_400_000
DOUBLE_MAX = 1.7976931348623157e308
FEE_CAP_DEFAULT = 12.5
BATCH_LIMIT = 40
PENDING_MAX_PAGE = 500
HISTORY_MAX_PAGE = 500
EXERCISE_MAX_PAGE = 50
HISTORY_MAX_RANGE_MS = 90 * DAY_MS
STATE_VERSION = 1

# Restarts without state (docs/SIMULATOR.md "Response mutations"): what a reset forgets.
RESET_ORDERS = "orders"   # open orders, order history and ids; positions, balances, fills survive
RESET_ALL = "all"         # a fresh account: orders, fills, positions, balances, RFQs, settlements
RESET_SCOPES: tuple[str, ...] = (RESET_ORDERS, RESET_ALL)


# =============================================================================== config


@dataclass
class PerpSettings:
    """How the perpetuals' UNCERTAIN behaviours are decided (docs/SIMULATOR.md, "Perpetual futures").

    ``reduce_only_excess``: a reduce-only order larger than the position is refused with 10536
    ("refuse", default) or cut to the position ("clip"). ``post_only_cross_code``: the code a
    post-only order that would cross is refused with (10001 as for options). ``client_order_id_scope``:
    a clientOrderId is refused (10577) when any order of the account's perpetuals ever carried it
    ("ever", default) or only an open one ("open", the options' rule). ``allow_fok``: API.md §14.9
    #3 (accepted by default). ``leverage_lock_scope``: a leverage change is refused (40038)
    while the account holds any perpetual position or open order ("account", default) or only
    one of that symbol ("symbol").
    """

    reduce_only_excess: str = "refuse"
    post_only_cross_code: int = 10001
    client_order_id_scope: str = "ever"
    allow_fok: bool = True
    leverage_lock_scope: str = "account"

    def __post_init__(self) -> None:
        if self.reduce_only_excess not in ("refuse", "clip"):
            raise ValueError("reduce_only_excess must be 'refuse' or 'clip'")
        if self.client_order_id_scope not in ("ever", "open"):
            raise ValueError("client_order_id_scope must be 'ever' or 'open'")
        if self.leverage_lock_scope not in ("account", "symbol"):
            raise ValueError("leverage_lock_scope must be 'account' or 'symbol'")


@dataclass
class ExchangeConfig:
    """Every knob of the exchange model.

    Decisions on API.md UNCERTAIN points (see API.md 12):
    * off-tick prices are truncated toward zero (``off_tick="reject"`` -> 40035);
    * a non-positive or junk price is 40035 / 10005, a missing one 10530;
    * FOK that cannot fill completely is accepted and immediately CANCELED (state 3, no
      fill), like IOC with nothing filled, rather than rejected at create;
    * post-only that would cross -> 10001 at create; reduce-only with no opposite position
      -> 10536 at create, excess cancelled at fill time (state 6 if nothing filled, else 3);
    * the halt from ``expiry - halt_minutes_before_expiry`` answers 10620;
    * RFQ quote edge: ``rfq_quote_edge_pct`` is the structure's cost versus the screen
      baseline (taker's touch per leg) in percent of ``|baseline|``; negative = better
      for the taker (improvement = -edge). ``rfq_maker_edges_pct`` pins one edge per
      maker (no jitter); otherwise each maker gets ``edge +- rfq_edge_jitter_pct``.

    Memory, not behaviour: finished orders last changed more than ``archive_after_seconds``
    ago, and fills older than that and than the 24 h volume window, move to the compact cold
    archive of ``simulator.records`` (every answer stays the same); the exchange looks for them
    at most once per ``archive_every_seconds`` of simulated time. None keeps everything as
    objects (a test compares both).
    """

    starting_balance_usd: float = 100_000.0
    taker_fee_rate: float = 0.0003
    maker_fee_rate: float = 0.0003
    block_taker_fee_rate: float = 0.0003
    block_maker_fee_rate: float = 0.0001
    fee_cap_pct_of_premium: float = FEE_CAP_DEFAULT
    delivery_fee_rate: float = 0.00015        # none for dailies
    off_tick: str = "truncate"                # or "reject" (40035)
    max_order_qty: float = 1000.0
    max_open_orders: int = 200
    halt_minutes_before_expiry: float = 15.0
    engine_step_seconds: float = 1.0          # passive-fill model grid
    passive_fill_prob_per_min_at_touch: float = 0.6
    cancel_latency_seconds: float = 0.0       # >0 holds cancelled orders in 4 then 5 before 3
    pending_list_lag_seconds: float = 0.0     # new orders appear in the pending list after N s
    show_own_orders_in_book: bool = True      # resting orders (all accounts) appear in the public book
    book_replenish_seconds: float = 10.0      # consumed synthetic depth comes back after this
    rfq_lifetime_seconds: float = 3600.0
    rfq_quote_validity_seconds: float = 300.0
    rfq_min_notional_usd: float | None = 50_000.0   # sum strike x qty, code 10001; None = off
    rfq_single_leg_must_buy: bool = True
    rfq_maker_count: int = 3
    rfq_quote_delay_seconds: tuple[float, float] = (2.0, 5.0)
    rfq_quote_edge_pct: float = -2.0
    rfq_maker_edges_pct: tuple[float, ...] | None = None
    rfq_edge_jitter_pct: float = 0.5
    rfq_withdraw_prob: float = 0.0
    rfq_quotes_include_request_id: bool = True
    position_greeks: str = "per_position"     # API.md 12 #4; or "per_contract"
    perp: PerpSettings = field(default_factory=PerpSettings)
    default_user_id: int = 1_695_796_692_000_001
    first_maker_user_id: int = 1_695_796_692_900_001
    seed: int = 7
    archive_after_seconds: float | None = 6 * 3600.0
    archive_every_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.off_tick not in ("truncate", "reject"):
            raise ValueError(f"off_tick must be 'truncate' or 'reject', got {self.off_tick!r}")
        if self.position_greeks not in ("per_position", "per_contract"):
            raise ValueError("position_greeks must be 'per_position' or 'per_contract'")
        if self.engine_step_seconds * 1000 < 1:
            raise ValueError("engine_step_seconds must be >= 0.001")
        if not 0.0 <= self.passive_fill_prob_per_min_at_touch <= 1.0:
            raise ValueError("passive_fill_prob_per_min_at_touch must be within [0, 1]")
        low, high = self.rfq_quote_delay_seconds
        if not 0 <= low <= high:
            raise ValueError("rfq_quote_delay_seconds must be (low, high) with 0 <= low <= high")
        if self.rfq_maker_count < 0 or self.max_open_orders < 1:
            raise ValueError("rfq_maker_count must be >= 0 and max_open_orders >= 1")
        if (self.archive_after_seconds is not None and not self.archive_after_seconds > 0) \
                or not self.archive_every_seconds > 0:
            raise ValueError("archive_after_seconds must be > 0 (or None) and archive_every_seconds > 0")


@dataclass
class ExchangeFaults:
    """Exchange-level faults, switchable at run time (API.md 13 #25)."""

    fill_report_lag_seconds: float = 0.0   # order views/fill history show fills only after this lag
    fill_on_next_cancel_qty: float = 0.0   # the next cancel first fills this qty (one shot)
    hold_canceling_seconds: float = 0.0    # keep cancelled orders in state 5 this long
    rfq_no_quotes: bool = False
    rfq_accept_fail_code: int | None = None
    rfq_reverse_accept_legs: bool = False  # accept response legs in reverse RFQ order


# =============================================================================== values


@dataclass
class Position:
    """One-way net position of an account in one symbol; ``lots`` signed (+ long)."""

    symbol: str
    lots: int
    avg_price: float
    position_id: int
    open_ms: int
    update_ms: int
    rspl: float = 0.0
    last_order_id: int = 0


@dataclass(slots=True)
class Order:
    """An order as the exchange keeps it; views are derived from it and its fills.

    Slotted, like ``Fill``: the exchange keeps every order for its history, so a per-order
    ``__dict__`` would be memory that grows with the run (about 40 % of each record).
    """

    order_id: int
    user_id: int
    symbol: str
    side: int
    trade_type: int
    time_in_force: str
    price: float
    lots: int
    reduce_only: bool
    client_order_id: int | None
    create_ms: int
    update_ms: int
    state: int = ST_NEW
    filled_lots: int = 0
    fee: float = 0.0
    rpnl: float = 0.0
    fill_ids: list[int] = field(default_factory=list)
    transitions: list[list[int]] = field(default_factory=list)   # [[at_ms, state], ...]
    index_at_create: float = 0.0

    @property
    def remaining_lots(self) -> int:
        return self.lots - self.filled_lots

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES


def _trades_through(order: Order, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> bool:
    """The book's best opposite level reaches a resting order's price: it then fills from every
    level through the price (``_passive_fill_lots``), so the whole book is needed."""
    eps = 1e-9
    if order.side == SIDE_BUY:
        return bool(asks) and asks[0][0] <= order.price + eps
    return bool(bids) and bids[0][0] >= order.price - eps


@dataclass(slots=True)
class Fill:
    """One execution of one order. ``report_price`` is what trade history shows."""

    trade_id: int
    order_id: int
    user_id: int
    symbol: str
    side: int
    trade_type: int
    price: float
    lots: int
    fee: float
    time_ms: int
    is_taker: bool
    mark: float
    index: float
    iv: float
    reduce_only: bool
    realized: float
    report_price: float
    block_trade_id: int | None = None


@dataclass
class FundingRecord:
    """One funding payment of one account in one perpetual (``settle/future/record``).

    ``fund_fee`` is signed as the exchange shows it: < 0 paid, > 0 received.
    """

    record_id: int
    user_id: int
    symbol: str
    trade_side: int
    lots: int
    fund_fee: float
    fund_rate: float
    mark: float
    time_ms: int


@dataclass
class _ScheduledReset:
    """A restart without state, due at ``at_ms`` on the simulated clock."""

    token: int
    at_ms: int
    scope: str
    on_fired: Callable[[], None] | None = None


@dataclass
class ExerciseRecord:
    """A position settled at expiry (``exercise/history``)."""

    user_id: int
    symbol: str
    time_ms: int
    lots: int
    trade_side: int
    strike: float
    exercise_price: float
    open_cash_flow: float
    settlement_cash_flow: float
    net_cash_flow: float
    fees: float


@dataclass
class BlockTrade:
    """An accepted RFQ quote from the taker's side; ``legs`` hold the taker-side fills."""

    block_trade_id: int
    request_id: int
    quote_id: int
    user_id: int
    time_ms: int
    legs: list[dict[str, Any]]


@dataclass(repr=False, eq=False)
class Account:
    """One API key = one account. The secret never appears in ``repr``."""

    user_id: int
    api_key: str
    api_secret: str
    name: str = "paper"
    read_only: bool = False
    rfq_maker_access: bool = False
    email: str = ""
    cash: float | None = None                 # None -> the exchange's starting balance
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)   # perpetual symbol -> leverage set

    def __repr__(self) -> str:
        key = (self.api_key[:4] + "...") if self.api_key else ""
        return (f"Account(user_id={self.user_id}, name={self.name!r}, api_key={key!r}, "
                f"read_only={self.read_only}, rfq_maker_access={self.rfq_maker_access})")


@dataclass(frozen=True)
class AccountMetrics:
    """Account-level numbers behind the summary (USD)."""

    cash: float
    equity: float
    upnl_mark: float
    upnl_last: float
    im_positions: float
    mm_positions: float
    im_orders: float

    @property
    def im(self) -> float:
        return self.im_positions + self.im_orders

    @property
    def available(self) -> float:
        return self.equity - self.im


# =============================================================================== parsing helpers

_INT_TEXT = re.compile(r"^[+-]?\d+$")
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _present(params: dict, name: str) -> bool:
    value = params.get(name)
    return value is not None and not (isinstance(value, str) and value.strip() == "")


def parse_int(value: Any, name: str, code: int = E_PARAM_ERROR) -> int:
    """An integer from a JSON int or a decimal string; floats only when exactly integral and small."""
    if isinstance(value, bool):
        raise SimError(code, f"Parameter {name} illegal")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    if isinstance(value, str) and _INT_TEXT.match(value.strip()):
        return int(value.strip())
    raise SimError(code, f"Parameter {name} illegal")


def parse_float(value: Any, name: str, code: int = E_PARAM_ERROR) -> float:
    """A finite float from a JSON number or a numeric string."""
    if isinstance(value, bool):
        raise SimError(code, f"Parameter {name} illegal")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        number = float(value.strip())
    else:
        raise SimError(code, f"Parameter {name} illegal")
    if not math.isfinite(number):
        raise SimError(code, f"Parameter {name} illegal")
    return number


def parse_flag(value: Any, name: str) -> bool:
    """0/1 flags (``reduceOnly``) sent as ints, strings or booleans."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    number = parse_int(value, name)
    if number not in (0, 1):
        raise SimError(E_PARAM_ERROR, f"Parameter {name} illegal")
    return number == 1


def _opt_int(params: dict, name: str, default: int | None = None) -> int | None:
    return parse_int(params[name], name) if _present(params, name) else default


def num_str(value: float, places: int = 8) -> str:
    """A number as plain decimal text (never scientific), trailing zeros trimmed."""
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _money(value: float) -> float:
    return round(value, 8) + 0.0   # + 0.0 turns -0.0 into 0.0


def _unit_places(units: int) -> int:
    """Decimals of a quantity counted in lots of ``1 / units``: 100 -> 2, 10 -> 1, 1000 -> 3."""
    return max(0, len(str(units)) - 1)


def _decimals(step: float) -> int:
    text = num_str(step, 10)
    return len(text.split(".")[1]) if "." in text else 0


def _side_name(side: int) -> str:
    return RFQ_BUY if side == SIDE_BUY else RFQ_SELL


def _side_code(name: str) -> int:
    return SIDE_BUY if name == RFQ_BUY else SIDE_SELL


# The fingerprint an entry of depth taken from a recorded level carries: such an entry is
# forgotten level by level (``SimExchange._forget_changed``), never by a fingerprint of the book.
_RECORDED_FP = "recorded"


@dataclass(frozen=True)
class _Recording:
    """One symbol's recorded rows in a replay (``MarketSource.recorded_rows``) and the market
    replaying them (whose ``current_row`` says which row is in force)."""

    source: MarketSource
    rows: Sequence[Any]
    times: Sequence[int]
    stale_ms: int


def _consumed_copy(entry: dict[str, Any]) -> dict[str, Any]:
    """A copy of one symbol's depth-taken entry, its maps copied too (state save and restore)."""
    return {name: dict(value) if isinstance(value, dict) else value for name, value in entry.items()}


class _IdSource:
    """Monotonic 19-digit int64 ids shared by every kind of record."""

    def __init__(self, counter: int = 0) -> None:
        self.counter = counter

    def next(self) -> int:
        self.counter += 1
        return ID_BASE + self.counter * ID_STRIDE


# ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` builds this encoder on every
# call; a chain call renders one side per listed option, so it is built once here instead.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class _TakerVolume:
    """Taker lots per symbol over a sliding window of the fills of one fills dict.

    Why: every chain call reports 24 h volume per symbol; scanning every fill ever made on
    each call made a long backtest's chain calls grow with its history. New fills are read
    once (the dict only grows; a reset replaces it, and then this is rebuilt) and leave the
    window from the oldest end; a fill out of time order re-sorts the window, so the sums
    are always those of a full scan.
    """

    def __init__(self, source: FillRecords) -> None:
        self.source = source
        self._seen = 0
        self._window: deque[Fill] = deque()
        self.lots: dict[str, int] = {}

    def update(self, since_ms: int) -> dict[str, int]:
        """The sums over taker fills with ``time_ms >= since_ms``."""
        if len(self.source) > self._seen:
            ordered = True
            for fill in self.source.since(self._seen):
                if not fill.is_taker or fill.time_ms < since_ms:
                    continue
                if self._window and fill.time_ms < self._window[-1].time_ms:
                    ordered = False
                self._window.append(fill)
                self.lots[fill.symbol] = self.lots.get(fill.symbol, 0) + fill.lots
            self._seen = len(self.source)
            if not ordered:
                self._window = deque(sorted(self._window, key=lambda f: f.time_ms))
        while self._window and self._window[0].time_ms < since_ms:
            fill = self._window.popleft()
            left = self.lots[fill.symbol] - fill.lots
            if left:
                self.lots[fill.symbol] = left
            else:
                del self.lots[fill.symbol]
        return self.lots


def _locked(method: Callable) -> Callable:
    """Run a public method under the exchange lock (HTTP threads call concurrently)."""

    @functools.wraps(method)
    def wrapper(self: "SimExchange", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _cursor_page(items: list, key: Callable[[Any], int], from_id: int | None, direction: str,
                 size: int) -> tuple[list, bool, bool]:
    """Cursor paging over ``items`` sorted newest (largest id) first.

    NEXT = older than ``from_id``; PREV = newer than ``from_id`` (the ones nearest to it).
    Returns (page newest first, has_next = older records remain, has_pre = newer remain).
    """
    if from_id is None:
        page = items[:size]
        return page, len(items) > size, False
    if direction == "PREV":
        newer = [item for item in items if key(item) > from_id]
        page = newer[-size:]
        has_pre = len(newer) > len(page)
        boundary = key(page[-1]) if page else from_id + 1
        has_next = any(key(item) < boundary for item in items)
        return page, has_next, has_pre
    older = [item for item in items if key(item) < from_id]
    page = older[:size]
    has_next = len(older) > len(page)
    boundary = key(page[0]) if page else from_id - 1
    has_pre = any(key(item) > boundary for item in items)
    return page, has_next, has_pre


# =============================================================================== the exchange


class SimExchange:
    """The simulated Coincall exchange model. Thread-safe (one RLock)."""

    def __init__(self, config: ExchangeConfig, market: Any, clock: Any,
                 accounts: list[Account] | None = None) -> None:
        self.config = config
        self.market: Markets = Markets.of(market, config.seed)
        self.clock = clock
        self.faults = ExchangeFaults()
        self._lock = threading.RLock()
        self._ids = _IdSource()
        self._accounts_by_key: dict[str, Account] = {}
        self._accounts_by_uid: dict[int, Account] = {}
        self._orders = OrderRecords()
        self._live: set[int] = set()
        self._fills = FillRecords()
        self._exercises: list[ExerciseRecord] = []
        self._block_trades: list[BlockTrade] = []
        self._consumed: dict[str, dict[str, Any]] = {}
        self._last_price: dict[str, float] = {}
        self._chain_base_cache: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._chain_base_stamp: Any = None
        self._chain_text_heads: SymbolTexts[str] = SymbolTexts()
        # Listing entries as JSON text while trading, per base currency and symbol: (instrument, text).
        self._listing_texts: dict[str, SymbolTexts[tuple[Any, str]]] = {}
        self._taker_volume: _TakerVolume | None = None
        self._step_ms = max(1, int(round(config.engine_step_seconds * 1000)))
        self._now = int(market.now_ms)
        self._archive_every_ms = max(1, int(round(config.archive_every_seconds * 1000)))
        self._next_archive_ms = self._now + self._archive_every_ms
        self._last_step = self._now // self._step_ms
        self._pending_expiries: set[int] = set()
        self._settled_expiries: list[int] = []
        self._expiries_seen: list[int] = []   # the market's expiries at the last _refresh_expiries
        self._expiries_checked_ms = self._now  # the time _advance last looked at the listing
        self._resets: list[_ScheduledReset] = []
        self._reset_tokens = 0
        # What restarts without state forgot: invisible to the API, kept for the exchange's own
        # records (campaign invariants) and so trade history still names a forgotten order.
        self._forgotten_orders: dict[int, Order] = {}
        self._forgotten_fills: dict[int, Fill] = {}
        self._units_cache: dict[str, int] = {}
        # Per symbol: its recorded rows, their instants and the staleness limit (ms) when its market
        # replays a recording, None when it is synthetic (``_recording``).
        self._recordings: dict[str, _Recording | None] = {}
        self._funding: list[FundingRecord] = []
        self._funding_done_ms = funding_boundary_at_or_before(self._now)
        self._desk = RfqDesk(self._maker_settings(), config.seed, self._ids.next)
        for account in accounts or []:
            self._register(account)
        if not accounts:
            self.add_account()
        self._refresh_expiries()

    # ------------------------------------------------------------------ accounts

    def _maker_settings(self) -> MakerSettings:
        cfg = self.config
        return MakerSettings(
            maker_count=cfg.rfq_maker_count,
            delay_range_s=(cfg.rfq_quote_delay_seconds[0], cfg.rfq_quote_delay_seconds[1]),
            edge_pct=cfg.rfq_quote_edge_pct,
            maker_edges_pct=tuple(cfg.rfq_maker_edges_pct) if cfg.rfq_maker_edges_pct else None,
            edge_jitter_pct=cfg.rfq_edge_jitter_pct,
            validity_ms=int(round(cfg.rfq_quote_validity_seconds * 1000)),
            lifetime_ms=int(round(cfg.rfq_lifetime_seconds * 1000)),
            withdraw_prob=cfg.rfq_withdraw_prob,
            include_request_id=cfg.rfq_quotes_include_request_id,
            first_maker_user_id=cfg.first_maker_user_id,
        )

    def _register(self, account: Account) -> Account:
        if account.api_key in self._accounts_by_key:
            raise ValueError("an account with this api_key already exists")
        if account.user_id in self._accounts_by_uid:
            raise ValueError(f"user_id {account.user_id} already exists")
        if account.cash is None:
            account.cash = float(self.config.starting_balance_usd)
        self._accounts_by_key[account.api_key] = account
        self._accounts_by_uid[account.user_id] = account
        return account

    @_locked
    def add_account(self, name: str = "paper", *, api_key: str | None = None, api_secret: str | None = None,
                    read_only: bool = False, rfq_maker_access: bool = False, user_id: int | None = None,
                    balance: float | None = None, email: str = "") -> Account:
        """Create an account; random credentials unless given (44-char base64 key, 64-hex secret)."""
        if user_id is None:
            user_id = max(self._accounts_by_uid, default=self.config.default_user_id - 1) + 1
        account = Account(
            user_id=user_id,
            api_key=api_key or base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
            api_secret=api_secret or secrets.token_hex(32),
            name=name,
            read_only=read_only,
            rfq_maker_access=rfq_maker_access,
            email=email or f"{name}@sim.local",
            cash=balance,
        )
        return self._register(account)

    @_locked
    def account_for_key(self, api_key: str) -> Account | None:
        return self._accounts_by_key.get(api_key)

    @property
    def default_account(self) -> Account:
        with self._lock:
            return next(iter(self._accounts_by_uid.values()))

    @property
    def accounts(self) -> list[Account]:
        with self._lock:
            return list(self._accounts_by_uid.values())

    # ------------------------------------------------------------------ time

    @_locked
    def sync(self, now_ms: int | None = None) -> None:
        """Advance market and engine to ``now_ms`` (default: the clock), event by event."""
        target = int(self.clock.now_ms() if now_ms is None else now_ms)
        self._advance(target)

    def _advance(self, target: int) -> None:
        if target < self._now:
            return
        while True:
            moment = self._next_event_ms(target)
            if moment is None:
                break
            self.market.advance_to(moment)
            self._now = max(self._now, moment)
            self._run_events_at(moment)
        self.market.advance_to(target)
        self._now = target
        if not self._passive_candidates():
            self._last_step = max(self._last_step, target // self._step_ms)
        if target != self._expiries_checked_ms:
            # Only the exchange moves the market, and a listing changes only when market time
            # moves: several requests at one instant (a poll's snapshot) look once.
            self._expiries_checked_ms = target
            self._refresh_expiries()
        if self._now >= self._next_archive_ms:
            self._archive_old_records()

    def _archive_old_records(self) -> None:
        """Move old finished orders and old fills to the records' cold archive (memory only).

        Runs on simulated time, at most once per ``archive_every_seconds``. Orders: finished
        (not in ``_live``, no pending transition) and unchanged for ``archive_after_seconds``;
        nothing changes such an order again (``OrderRecords.archive`` says why). Fills: older
        than that and than the 24 h window of ``_TakerVolume``, so the volume never reads one
        back (it only reads fills it has not seen, and drops those out of its window).
        """
        self._next_archive_ms = (self._now // self._archive_every_ms + 1) * self._archive_every_ms
        after_s = self.config.archive_after_seconds
        if after_s is None:
            return
        cutoff = self._now - int(round(after_s * 1000))
        orders = self._orders.archive(cutoff, self._live)
        fills = self._fills.archive(min(cutoff, self._now - DAY_MS))
        if orders or fills:
            log.debug("archived %d orders and %d fills (now %d kept as objects: %d orders, %d fills)",
                      orders, fills, self._now, self._orders.hot_count, self._fills.hot_count)

    def _next_event_ms(self, target: int) -> int | None:
        # The earliest of the candidate instants, kept as one running minimum (every request
        # asks twice, and nearly always nothing is due).
        earliest: int | None = None
        if self._live:
            orders = self._orders
            for order_id in self._live:
                for at, _ in orders[order_id].transitions:
                    if earliest is None or at < earliest:
                        earliest = at
            if self._passive_candidates():
                step_at = (self._last_step + 1) * self._step_ms
                if earliest is None or step_at < earliest:
                    earliest = step_at
        rfq_event = self._desk.next_event_ms()
        if rfq_event is not None and (earliest is None or rfq_event < earliest):
            earliest = rfq_event
        if self._pending_expiries:
            expiry = min(self._pending_expiries)
            if earliest is None or expiry < earliest:
                earliest = expiry
        if self._resets:
            reset_at = min(reset.at_ms for reset in self._resets)
            if earliest is None or reset_at < earliest:
                earliest = reset_at
        if self.market.has_perps():
            funding_at = self._funding_done_ms + FUNDING_INTERVAL_MS
            if earliest is None or funding_at < earliest:
                earliest = funding_at
        if earliest is None:
            return None
        moment = max(earliest, self._now)
        return moment if moment <= target else None

    def _run_events_at(self, moment: int) -> None:
        self._run_resets(moment)
        self._apply_transitions(moment)
        if self._passive_candidates() and (self._last_step + 1) * self._step_ms <= moment:
            self._last_step += 1
            self._passive_step(self._last_step, moment)
        self._desk.process_due(moment, self._screen_for, not self.faults.rfq_no_quotes)
        due = sorted(e for e in self._pending_expiries if e <= moment)
        for expiry in due:
            self._settle_expiry(expiry)
        if due:
            self._refresh_expiries()   # expiries listed at this roll may pass within the same sync
        self._run_funding(moment)

    # ------------------------------------------------------------------ funding (perpetuals)

    def _run_funding(self, moment: int) -> None:
        """Settle every funding instant up to ``moment`` (00/08/16 UTC) for every perpetual position.

        fee = qty x mark x rate; a positive rate makes longs pay and shorts receive. The
        payment moves the account's cash (so its equity) and leaves a ``FundingRecord``.
        """
        while self._funding_done_ms + FUNDING_INTERVAL_MS <= moment:
            instant = self._funding_done_ms + FUNDING_INTERVAL_MS
            self._funding_done_ms = instant
            for perp in self.market.perps():
                self._settle_funding(perp, instant)

    def _settle_funding(self, perp: PerpMarket, instant: int) -> None:
        holders = [(uid, account) for uid, account in sorted(self._accounts_by_uid.items())
                   if perp.symbol in account.positions]
        if not holders:
            return
        rate = perp.funding_rate(instant)
        mark = perp.mark_price()
        units = perp.config.units
        for _uid, account in holders:
            position = account.positions[perp.symbol]
            qty = abs(position.lots) / units
            sign = 1 if position.lots > 0 else -1
            fund_fee = _money(-sign * qty * mark * rate)
            account.cash = float(account.cash or 0.0) + fund_fee
            self._funding.append(FundingRecord(
                record_id=self._ids.next(), user_id=account.user_id, symbol=perp.symbol,
                trade_side=SIDE_BUY if sign > 0 else SIDE_SELL, lots=abs(position.lots), fund_fee=fund_fee,
                fund_rate=rate, mark=mark, time_ms=instant))
        log.info("funding %s at %d: rate %.8f, mark %.2f, %d positions", perp.symbol, instant, rate, mark,
                 len(holders))

    # ------------------------------------------------------------------ restarts without state

    @_locked
    def schedule_reset(self, at_ms: int, scope: str, on_fired: Callable[[], None] | None = None) -> int:
        """Make the exchange restart without state (``scope``) at ``at_ms``; returns a token.

        The reset is an event of the engine's loop, so it happens at exactly ``at_ms``
        (fills due before it still happen, none after it touch forgotten orders), on the
        first ``sync`` that reaches that time; a time already past fires on the next sync.
        ``on_fired`` runs under the exchange lock when it happens.
        """
        if scope not in RESET_SCOPES:
            raise ValueError(f"reset scope must be one of {RESET_SCOPES}, got {scope!r}")
        self._reset_tokens += 1
        self._resets.append(_ScheduledReset(self._reset_tokens, int(at_ms), scope, on_fired))
        return self._reset_tokens

    @_locked
    def cancel_reset(self, token: int) -> bool:
        """Withdraw a scheduled reset; False when it already happened (or never existed)."""
        kept = [reset for reset in self._resets if reset.token != token]
        found = len(kept) != len(self._resets)
        self._resets = kept
        return found

    @_locked
    def forget_orders(self) -> int:
        """Restart now without order state (``RESET_ORDERS``); returns how many orders were forgotten."""
        self._sync_now()
        return self._forget_orders()

    @_locked
    def forget_everything(self) -> None:
        """Restart now as a fresh exchange with the same accounts (``RESET_ALL``)."""
        self._sync_now()
        self._forget_everything()

    def _run_resets(self, moment: int) -> None:
        due = sorted((r for r in self._resets if r.at_ms <= moment), key=lambda r: (r.at_ms, r.token))
        if not due:
            return
        self._resets = [r for r in self._resets if r.at_ms > moment]
        for reset in due:
            if reset.scope == RESET_ALL:
                self._forget_everything()
            else:
                self._forget_orders()
            if reset.on_fired is not None:
                reset.on_fired()

    def _forget_orders(self) -> int:
        """Drop every order (open or final) and its id; positions, balances and fills stay.

        Resting orders leave the book with them (the book overlay reads ``_live``). Fills
        keep naming their order's clientOrderId in trade history: the execution ledger is
        what the surviving positions were built from.
        """
        self._forgotten_orders.update(self._orders.as_dict())
        forgotten = len(self._orders)
        self._orders = OrderRecords()
        self._live = set()
        log.warning("simulated exchange restarted without its order state: %d orders forgotten", forgotten)
        return forgotten

    def _forget_everything(self) -> None:
        """A fresh account on every key: no orders, fills, positions, settlements or RFQs; the
        starting balance. Accounts (keys, secrets, ids, permissions), the market, the clock,
        the id sequence (ids are never reused) and exchange-level faults survive."""
        self._forgotten_orders.update(self._orders.as_dict())
        self._forgotten_fills.update(self._fills.as_dict())
        self._orders = OrderRecords()
        self._live = set()
        self._fills = FillRecords()
        self._exercises = []
        self._block_trades = []
        self._funding = []
        self._desk.load_state({})
        for account in self._accounts_by_uid.values():
            account.positions.clear()
            account.cash = float(self.config.starting_balance_usd)
        log.warning("simulated exchange restarted with nothing: every account is fresh")

    def _refresh_expiries(self) -> None:
        expiries = self.market.expiries()
        if expiries == self._expiries_seen:
            return          # nothing listed since the last look (the usual case: every request asks)
        self._expiries_seen = expiries
        settled = set(self._settled_expiries)
        for expiry in expiries:
            if expiry not in settled:
                self._pending_expiries.add(int(expiry))

    def _sync_now(self) -> int:
        """Bring everything to the clock's time; returns that time (ms)."""
        self._advance(int(self.clock.now_ms()))
        return self._now

    # ------------------------------------------------------------------ instruments & market

    def _units(self, symbol: str) -> int:
        """Lots per unit of the underlying for ``symbol``: 100 for BTC options (0.01 BTC), 10 for
        ETH options (0.1 ETH), 1000 for BTCUSD (0.001 BTC), 100 for ETHUSD (0.01 ETH).
        A symbol the venue never listed counts in BTC option lots."""
        units = self._units_cache.get(symbol)
        if units is None:
            perp = self.market.perp(symbol)
            if perp is not None:
                units = perp.config.units
            else:
                instrument = self.market.instrument(symbol)
                units = instrument.units if instrument is not None else LOTS_PER_BTC
            self._units_cache[symbol] = units
        return units

    def _qty_of(self, symbol: str, lots: int) -> float:
        """``lots`` of ``symbol`` in units of its underlying (0.01 BTC steps -> 2 decimals ...)."""
        units = self._units(symbol)
        return round(lots / units, _unit_places(units))

    def _qty_text(self, symbol: str, lots: int) -> str:
        return num_str(self._qty_of(symbol, lots), _unit_places(self._units(symbol)))

    def _lots_of(self, symbol: str, qty: float) -> int:
        return int(round(qty * self._units(symbol)))

    def _index_for(self, symbol: str) -> float:
        """The index of ``symbol``'s underlying (BTC for a BTC option or BTCUSD, ETH for ETH)."""
        return self.market.index_for(symbol)

    def _is_perp(self, symbol: str) -> bool:
        return self.market.perp(symbol) is not None

    def _instrument(self, symbol: Any) -> Any:
        """A listed, unexpired instrument or 10574."""
        if not isinstance(symbol, str) or not symbol:
            raise SimError(E_PARAM_ERROR, "Parameter symbol illegal")
        instrument = self.market.instrument(symbol)
        if instrument is None or self._now >= instrument.expiry_ms:
            raise SimError(E_UNKNOWN_INSTRUMENT, "Instrument ID does not exist")
        return instrument

    def _halt_ms(self, instrument: Any) -> int:
        return instrument.expiry_ms - int(round(self.config.halt_minutes_before_expiry * 60_000))

    def _halted(self, instrument: Any, now_ms: int) -> bool:
        return now_ms >= self._halt_ms(instrument)

    def _quote(self, symbol: str) -> Any | None:
        try:
            return self.market.quote(symbol)
        except KeyError:
            return None

    def _mark_values(self, symbol: str) -> MarkValues | None:
        """Mark and greeks without the book (``MarketModel.mark_values``); None when not quoted."""
        try:
            return self.market.mark_values(symbol)
        except KeyError:
            return None

    def _screen_for(self, symbol: str) -> LegScreen | None:
        instrument = self.market.instrument(symbol)
        quote = self._quote(symbol)
        if instrument is None or quote is None or self._halted(instrument, self._now):
            return None
        return LegScreen(bid=quote.bid, ask=quote.ask, mark=quote.mark, tick=instrument.tick_size)

    def _fingerprint(self, bids: list, asks: list) -> str:
        return hashlib.sha1(repr((bids, asks)).encode("ascii")).hexdigest()[:16]

    def _synthetic_book(self, symbol: str) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
        """The market's liquidity in lots, minus what earlier takers consumed.

        Synthetic market: consumed depth comes back after ``book_replenish_seconds`` or as soon as
        anything in the symbol's book changes. Recorded market (docs/HISTORY.md): depth a fill took
        stays taken, level by level, until that side's recorded level changes (``_forget_changed``).
        """
        try:
            bids, asks = self.market.book(symbol, 100)
        except KeyError:
            return [], []
        used = self._consumed.get(symbol)
        replenish_ms = self.config.book_replenish_seconds * 1000
        if used is not None and self._now - used["t"] >= replenish_ms:
            del self._consumed[symbol]
            used = None
        recording = self._recording(symbol) if used is not None else None
        if used is not None and recording is not None:
            used = self._forget_changed(symbol, used, recording, bids, asks)
        elif used is not None and used["fp"] != self._fingerprint(bids, asks):
            del self._consumed[symbol]
            used = None
        taken = used["levels"] if used else {}
        units = self._units(symbol)

        def side(levels: list, tag: str) -> list[tuple[float, int]]:
            out = []
            for price, size in levels:
                lots = int(round(size * units)) - taken.get(f"{tag}|{price:.8f}", 0)
                if lots > 0:
                    out.append((float(price), lots))
            return out

        return side(bids, "b"), side(asks, "a")

    def _consume(self, symbol: str, tag: str, price: float, lots: int) -> None:
        bids, asks = self.market.book(symbol, 100)
        key = f"{tag}|{price:.8f}"
        recording = self._recording(symbol)
        if recording is not None:
            self._consume_recorded(symbol, recording, tag, key, bids if tag == "b" else asks, lots)
            return
        fingerprint = self._fingerprint(bids, asks)
        used = self._consumed.get(symbol)
        if used is None or used["fp"] != fingerprint:
            used = {"fp": fingerprint, "t": self._now, "levels": {}}
            self._consumed[symbol] = used
        used["levels"][key] = used["levels"].get(key, 0) + lots

    # ------------------------------------------------------------------ depth taken from a recording

    def _recording(self, symbol: str) -> _Recording | None:
        """``symbol``'s recorded rows when its market replays a recording, else None (asked once)."""
        if symbol in self._recordings:
            return self._recordings[symbol]
        source = self.market.market_of(symbol)
        recorded = source.recorded_rows(symbol) if source is not None else None
        recording = None if source is None or recorded is None else _Recording(
            source=source, rows=recorded.rows, times=recorded.times, stale_ms=recorded.stale_ms)
        self._recordings[symbol] = recording
        return recording

    def _consume_recorded(self, symbol: str, recording: _Recording, tag: str, key: str,
                          levels: list, lots: int) -> None:
        """Take ``lots`` at ``key`` out of the recorded level in force now (``_synthetic_book``
        has just forgotten whatever no longer applies, so what is kept belongs to this row)."""
        row = recording.source.current_row(symbol)
        if row is None:
            return   # no recorded row, no recorded depth: nothing was there to take
        used = self._consumed.get(symbol)
        if used is None or "rows" not in used:
            used = {"fp": _RECORDED_FP, "t": self._now, "levels": {}, "recorded": {}, "rows": {}}
            self._consumed[symbol] = used
        if key not in used["levels"]:
            units = self._units(symbol)
            price = float(key.split("|", 1)[1])
            used["recorded"][key] = next((int(round(size * units)) for p, size in levels
                                          if abs(float(p) - price) < 1e-9), 0)
        used["rows"][tag] = row.time_ms
        used["levels"][key] = used["levels"].get(key, 0) + lots

    def _forget_changed(self, symbol: str, used: dict[str, Any], recording: _Recording,
                        bids: list, asks: list) -> dict[str, Any] | None:
        """Keep the depth taken from a recorded level while that side's recorded level is the same
        (price and amount) in every row since the take, with no stale gap between them; forget it
        otherwise. Sides are independent: a new bid gives back nothing taken from the ask."""
        units = self._units(symbol)
        row = recording.source.current_row(symbol)
        if "rows" not in used:
            # Saved before depth was kept per level: it held while the whole book was the same.
            if row is None or used["fp"] != self._fingerprint(bids, asks):
                del self._consumed[symbol]
                return None
            shown = {f"{tag}|{p:.8f}": int(round(size * units)) for tag, side in (("b", bids), ("a", asks))
                     for p, size in side}
            used = {"fp": _RECORDED_FP, "t": used["t"], "levels": dict(used["levels"]),
                    "recorded": {key: shown.get(key, 0) for key in used["levels"]},
                    "rows": {key[0]: row.time_ms for key in used["levels"]}}
            self._consumed[symbol] = used
        if row is None:
            del self._consumed[symbol]
            return None
        stale_now = self._now - row.time_ms > recording.stale_ms
        for tag in sorted({key[0] for key in used["levels"]}):
            keys = [key for key in used["levels"] if key[0] == tag]
            since = used["rows"].get(tag)
            if stale_now or since is None or not all(
                    self._level_held(recording, since, row.time_ms, tag, float(key.split("|", 1)[1]),
                                     used["recorded"].get(key, 0), units) for key in keys):
                for key in keys:
                    del used["levels"][key]
                    used["recorded"].pop(key, None)
                used["rows"].pop(tag, None)
            else:
                used["rows"][tag] = row.time_ms
        if not used["levels"]:
            del self._consumed[symbol]
            return None
        return used

    @staticmethod
    def _level_held(recording: _Recording, since_ms: int, until_ms: int, tag: str, price: float,
                    recorded_lots: int, units: int) -> bool:
        """Whether every row after the one of ``since_ms`` up to ``until_ms`` records the level
        ``price`` x ``recorded_lots`` on side ``tag``, each row following the one before within
        the staleness limit (a row after a stale gap is a new level, even at the same price and amount)."""
        times = recording.times
        start = bisect.bisect_right(times, since_ms) - 1     # the row that was in force then
        if start < 0 or times[start] != since_ms:
            return False
        end = bisect.bisect_right(times, until_ms)
        previous = since_ms
        for row in recording.rows[start + 1:end]:
            if row.time_ms - previous > recording.stale_ms + 1:    # the row before went stale first
                return False
            level_price, size = (row.bid, row.bid_size) if tag == "b" else (row.ask, row.ask_size)
            if (level_price <= 0 or size <= 0 or abs(level_price - price) > 1e-9
                    or int(round(size * units)) != recorded_lots):
                return False
            previous = row.time_ms
        return True

    def _resting_orders(self, symbol: str, side: int | None = None) -> list[Order]:
        orders = [self._orders[oid] for oid in self._live]
        return sorted((o for o in orders if o.symbol == symbol and o.trade_type != TT_BLOCK
                       and (side is None or o.side == side)), key=lambda o: o.order_id)

    def _public_book(self, symbol: str) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
        """What the order-book endpoint shows: synthetic depth plus resting orders, aggregated."""
        bids, asks = self._synthetic_book(symbol)
        if not self.config.show_own_orders_in_book:
            return bids, asks
        bid_map: dict[float, int] = dict()
        ask_map: dict[float, int] = dict()
        for price, lots in bids:
            bid_map[price] = bid_map.get(price, 0) + lots
        for price, lots in asks:
            ask_map[price] = ask_map.get(price, 0) + lots
        for order in self._resting_orders(symbol):
            target = bid_map if order.side == SIDE_BUY else ask_map
            target[order.price] = target.get(order.price, 0) + order.remaining_lots
        return (sorted(bid_map.items(), key=lambda kv: -kv[0]), sorted(ask_map.items()))

    def _has_book_overlay(self, symbol: str) -> bool:
        return symbol in self._overlaid_symbols()

    def _overlaid_symbols(self) -> set[str]:
        """Symbols whose public book is not the market's: depth consumed by trades, or resting orders shown."""
        symbols = set(self._consumed)
        if self.config.show_own_orders_in_book:
            symbols.update(self._orders[o].symbol for o in self._live)
        return symbols

    def _iv_of(self, instrument: Any, price: float, fallback: float) -> float:
        """IV of a price for the chain's bid/ask/last IVs; the mark IV when it cannot be solved."""
        if price <= 0:
            return 0.0
        try:
            market = self.market.market_of(instrument.symbol) or self.market.primary
            rate = getattr(market.config, "rate", 0.0)
            t_years = years_between(self._now, instrument.expiry_ms)
            return float(implied_vol(instrument.option_type, price, market.index_price(),
                                     instrument.strike, t_years, rate, guess=fallback or None))
        except (ValueError, ArithmeticError):
            return fallback

    # ------------------------------------------------------------------ margin & metrics

    def _short_margin_per_btc(self, instrument: Any, index: float, mark: float) -> float:
        """SM initial margin of one short unit (BTC or ETH): max(15% S - OTM, 10% S) + mark."""
        strike = instrument.strike
        otm = max(0.0, strike - index) if instrument.option_type == "C" else max(0.0, index - strike)
        return max(0.15 * index - otm, 0.10 * index) + mark

    def _position_lots(self, account: Account, symbol: str) -> int:
        position = account.positions.get(symbol)
        return position.lots if position else 0

    def _leverage(self, account: Account, perp: PerpMarket) -> int:
        return account.leverage.get(perp.symbol, perp.config.default_leverage)

    def _order_reserve(self, account: Account, order: Order, extra_position: int = 0) -> float:
        """Initial margin an open order reserves: premium for buys, short IM for opening sells;
        for a perpetual, opening qty x price / leverage (API.md §14.7)."""
        if order.reduce_only or order.trade_type == TT_BLOCK:
            return 0.0
        remaining = order.remaining_lots
        position = self._position_lots(account, order.symbol) + extra_position
        units = self._units(order.symbol)
        if order.side == SIDE_BUY:
            opening = max(0, remaining - max(0, -position))
        else:
            opening = max(0, remaining - max(0, position))
        perp = self.market.perp(order.symbol)
        if perp is not None:
            return opening / units * order.price / self._leverage(account, perp) if opening else 0.0
        if order.side == SIDE_BUY:
            return opening / units * order.price
        if opening == 0:
            return 0.0
        instrument = self.market.instrument(order.symbol)
        quote = self._quote(order.symbol)
        if instrument is None or quote is None:
            return 0.0
        index = self._index_for(order.symbol)
        return opening / units * self._short_margin_per_btc(instrument, index, quote.mark)

    def _perp_numbers(self, account: Account, position: Position, perp: PerpMarket) -> dict[str, float]:
        """A perpetual position: value and margins from the entry price, uPnL from the mark (API.md §14.7)."""
        cfg = perp.config
        mark = perp.mark_price()
        qty = abs(position.lots) / cfg.units
        sign = 1 if position.lots > 0 else -1
        leverage = self._leverage(account, perp)
        value = qty * position.avg_price
        upnl = (mark - position.avg_price) * qty * sign
        mm = qty * (position.avg_price * cfg.mm_rate(value) + cfg.liquidation_fee_rate * mark)
        return {
            "mark": mark, "index": perp.index_price(), "qty": qty, "sign": sign,
            "last": self._last_price.get(position.symbol, mark),
            "upnl_mark": upnl, "upnl_last": upnl, "im": value / leverage, "mm": mm, "value": value,
            "leverage": float(leverage),
        }

    def _position_numbers(self, account: Account, position: Position) -> dict[str, float]:
        perp = self.market.perp(position.symbol)
        if perp is not None:
            return self._perp_numbers(account, position, perp)
        instrument = self.market.instrument(position.symbol)
        values = self._mark_values(position.symbol)
        mark = values.mark if values else position.avg_price
        index = self._index_for(position.symbol)
        qty = abs(position.lots) / self._units(position.symbol)
        sign = 1 if position.lots > 0 else -1
        last = self._last_price.get(position.symbol, position.avg_price)
        im = mm = 0.0
        if position.lots < 0 and instrument is not None:
            im = qty * self._short_margin_per_btc(instrument, index, mark)
            mm = im / 2.0
        return {
            "mark": mark, "index": index, "qty": qty, "sign": sign, "last": last,
            "upnl_mark": (mark - position.avg_price) * qty * sign,
            "upnl_last": (last - position.avg_price) * qty * sign,
            "im": im, "mm": mm,
        }

    def _metrics(self, account: Account) -> AccountMetrics:
        upnl_mark = upnl_last = im_pos = mm_pos = 0.0
        for position in account.positions.values():
            numbers = self._position_numbers(account, position)
            upnl_mark += numbers["upnl_mark"]
            upnl_last += numbers["upnl_last"]
            im_pos += numbers["im"]
            mm_pos += numbers["mm"]
        im_orders = sum(self._order_reserve(account, self._orders[oid]) for oid in sorted(self._live)
                        if self._orders[oid].user_id == account.user_id)
        cash = float(account.cash or 0.0)
        return AccountMetrics(cash=cash, equity=cash + upnl_mark, upnl_mark=upnl_mark, upnl_last=upnl_last,
                              im_positions=im_pos, mm_positions=mm_pos, im_orders=im_orders)

    # ------------------------------------------------------------------ fills & positions

    def _fee(self, symbol: str, lots: int, price: float, rate: float) -> float:
        """Options: min(qty x index x rate, qty x price x cap%) (API.md 4); perpetuals: qty x price x rate."""
        qty = lots / self._units(symbol)
        if self._is_perp(symbol):
            return _money(qty * price * rate)
        index = self._index_for(symbol)
        cap = self.config.fee_cap_pct_of_premium / 100.0
        return _money(min(qty * index * rate, qty * price * cap))

    def _apply_to_position(self, account: Account, symbol: str, side: int, lots: int, price: float,
                           order_id: int) -> float:
        """Net ``lots`` into the position; returns the realized PnL of the reducing part."""
        signed = lots if side == SIDE_BUY else -lots
        position = account.positions.get(symbol)
        if position is None:
            account.positions[symbol] = Position(symbol=symbol, lots=signed, avg_price=price,
                                                 position_id=self._ids.next(), open_ms=self._now,
                                                 update_ms=self._now, last_order_id=order_id)
            return 0.0
        realized = 0.0
        if position.lots * signed > 0:
            total = abs(position.lots) + lots
            position.avg_price = (abs(position.lots) * position.avg_price + lots * price) / total
            position.lots += signed
        else:
            closing = min(abs(position.lots), lots)
            direction = 1 if position.lots > 0 else -1
            realized = (price - position.avg_price) * closing / self._units(symbol) * direction
            new_lots = position.lots + signed
            if new_lots != 0 and (new_lots > 0) != (position.lots > 0):
                position.avg_price = price   # flipped: the new side opens at this price
            position.lots = new_lots
            position.rspl += realized
        position.update_ms = self._now
        position.last_order_id = order_id
        if position.lots == 0:
            del account.positions[symbol]
        return realized

    def _reduce_cap(self, order: Order) -> int | None:
        """Lots a reduce-only order may still fill without flipping; None when not reduce-only."""
        if not order.reduce_only:
            return None
        account = self._accounts_by_uid.get(order.user_id)
        position = self._position_lots(account, order.symbol) if account else 0
        return max(0, -position) if order.side == SIDE_BUY else max(0, position)

    def _finish_unfillable(self, order: Order) -> None:
        """Cancel what a reduce-only order can no longer fill: 6 if nothing filled, else 3."""
        self._set_final(order, ST_INVALID if order.filled_lots == 0 else ST_CANCELED)

    def _set_final(self, order: Order, state: int) -> None:
        order.state = state
        order.transitions = []
        order.update_ms = self._now
        self._live.discard(order.order_id)

    def _fill(self, order: Order, lots: int, price: float, is_taker: bool, *, fee_rate: float | None = None,
              report_price: float | None = None, block_trade_id: int | None = None) -> int:
        """Execute up to ``lots`` of ``order`` at ``price``; returns the lots actually filled.

        Applies the reduce-only cap (the excess is cancelled at once), fees, cash, the
        position and the order's state.
        """
        cap = self._reduce_cap(order)
        lots = min(lots, order.remaining_lots)
        if cap is not None:
            if cap <= 0:
                self._finish_unfillable(order)
                return 0
            lots = min(lots, cap)
        if lots <= 0:
            return 0
        account = self._accounts_by_uid[order.user_id]
        perp = self.market.perp(order.symbol)
        quote = self._quote(order.symbol) if perp is None else None
        if fee_rate is None:
            if perp is not None:
                fee_rate = perp.config.taker_fee_rate if is_taker else perp.config.maker_fee_rate
            else:
                fee_rate = self.config.taker_fee_rate if is_taker else self.config.maker_fee_rate
        fee = self._fee(order.symbol, lots, price, fee_rate)
        realized = self._apply_to_position(account, order.symbol, order.side, lots, price, order.order_id)
        account.cash = float(account.cash or 0.0) + realized - fee
        mark = perp.mark_price() if perp is not None else (quote.mark if quote else price)
        fill = Fill(
            trade_id=self._ids.next(), order_id=order.order_id, user_id=order.user_id, symbol=order.symbol,
            side=order.side, trade_type=order.trade_type, price=price, lots=lots, fee=fee, time_ms=self._now,
            is_taker=is_taker, mark=mark, index=self._index_for(order.symbol),
            iv=quote.iv if quote else 0.0, reduce_only=order.reduce_only, realized=_money(realized),
            report_price=price if report_price is None else report_price, block_trade_id=block_trade_id,
        )
        self._fills.add(fill)
        order.fill_ids.append(fill.trade_id)
        order.filled_lots += lots
        order.fee = _money(order.fee + fee)
        order.rpnl = _money(order.rpnl + realized)
        order.update_ms = self._now
        if order.trade_type != TT_BLOCK:
            self._last_price[order.symbol] = price
        if order.filled_lots >= order.lots:
            self._set_final(order, ST_FILLED)
        else:
            if order.state == ST_NEW:
                order.state = ST_PARTIAL
            cap_after = self._reduce_cap(order)
            if cap_after is not None and cap_after <= 0:
                self._finish_unfillable(order)
        return lots

    # ------------------------------------------------------------------ matching

    def _crossing_levels(self, order: Order) -> list[tuple[float, int, Order | None]]:
        """Liquidity ``order`` would take, best first: synthetic levels and other accounts' orders."""
        bids, asks = self._synthetic_book(order.symbol)
        eps = 1e-9
        if order.side == SIDE_BUY:
            synthetic = [(p, l, None) for p, l in asks if p <= order.price + eps]
            others = [(o.price, o.remaining_lots, o) for o in self._resting_orders(order.symbol, SIDE_SELL)
                      if o.user_id != order.user_id and o.price <= order.price + eps]
            merged: list[tuple[float, int, Order | None]] = [*synthetic, *others]
            merged.sort(key=lambda lvl: (lvl[0], 0 if lvl[2] is not None else 1,
                                         lvl[2].order_id if lvl[2] is not None else 0))
        else:
            synthetic = [(p, l, None) for p, l in bids if p >= order.price - eps]
            others = [(o.price, o.remaining_lots, o) for o in self._resting_orders(order.symbol, SIDE_BUY)
                      if o.user_id != order.user_id and o.price >= order.price - eps]
            merged = [*synthetic, *others]
            merged.sort(key=lambda lvl: (-lvl[0], 0 if lvl[2] is not None else 1,
                                         lvl[2].order_id if lvl[2] is not None else 0))
        return merged

    def _match_taker(self, order: Order) -> None:
        """Cross ``order`` against the book; then rest (GTC) or cancel the remainder (IOC/FOK)."""
        levels = self._crossing_levels(order)
        if order.time_in_force == "FOK":
            available = sum(lots for _, lots, _ in levels)
            cap = self._reduce_cap(order)
            if cap is not None:
                available = min(available, cap)
            if available < order.remaining_lots:
                self._set_final(order, ST_CANCELED)
                return
        for price, lots, maker in levels:
            if not order.is_live or order.remaining_lots <= 0:
                break
            take = min(order.remaining_lots, lots)
            if maker is not None:
                if not maker.is_live:
                    continue
                maker_cap = self._reduce_cap(maker)
                if maker_cap is not None:
                    if maker_cap <= 0:
                        self._finish_unfillable(maker)
                        continue
                    take = min(take, maker_cap)
            got = self._fill(order, take, price, is_taker=True)
            if got <= 0:
                break
            if maker is not None:
                self._fill(maker, got, price, is_taker=False)
            else:
                self._consume(order.symbol, "a" if order.side == SIDE_BUY else "b", price, got)
        if order.is_live and order.time_in_force in ("IOC", "FOK"):
            self._set_final(order, ST_CANCELED)

    def _would_cross(self, order: Order) -> bool:
        return bool(self._crossing_levels(order))

    # ------------------------------------------------------------------ passive engine

    def _passive_candidates(self) -> bool:
        return any(self._orders[oid].trade_type in (TT_LIMIT, TT_POST_ONLY) for oid in self._live)

    def _passive_step(self, step: int, moment: int) -> None:
        """One grid step of the passive-fill model for every resting order (seeded per order/step)."""
        for order_id in sorted(self._live):
            order = self._orders.get(order_id)
            if order is None or not order.is_live or order.create_ms >= moment:
                continue
            if order.trade_type not in (TT_LIMIT, TT_POST_ONLY):
                continue
            if not self._is_perp(order.symbol):
                instrument = self.market.instrument(order.symbol)
                if instrument is None or self._halted(instrument, moment) or moment >= instrument.expiry_ms:
                    continue
            bids, asks = self._passive_book(order.symbol, top_only=True)
            if _trades_through(order, bids, asks):
                bids, asks = self._passive_book(order.symbol)   # every level through the price counts
            lots = self._passive_fill_lots(order, bids, asks, step)
            if lots > 0:
                self._consume_crossed(order, self._fill(order, lots, order.price, is_taker=False))

    def _passive_book(self, symbol: str, *, top_only: bool = False
                      ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The book (sizes in BTC) resting orders are matched against: the market's, minus the
        depth takers already consumed. A level a taker took cannot also fill a resting order
        until the book refreshes (API.md 13 #11: makers fill when the market trades through).
        ``top_only``: at least the best level of each side (all that decides unless the market
        trades through the order), without laying out the market's deeper levels."""
        if symbol not in self._consumed:
            try:
                return self.market.top_of_book(symbol) if top_only else self.market.book(symbol, 100)
            except KeyError:
                return [], []
        lot_bids, lot_asks = self._synthetic_book(symbol)
        units = self._units(symbol)
        return ([(price, lots / units) for price, lots in lot_bids],
                [(price, lots / units) for price, lots in lot_asks])

    def _consume_crossed(self, order: Order, lots: int) -> None:
        """Take a passive fill of ``lots`` out of the synthetic levels that traded through ``order``.

        The liquidity that filled a resting order cannot fill another order (or a taker)
        in the same book bucket; a fill at the touch, where nothing crossed, consumes nothing.
        """
        bids, asks = self._synthetic_book(order.symbol)
        if order.side == SIDE_BUY:
            tag, crossed = "a", [(p, l) for p, l in asks if p <= order.price + 1e-9]
        else:
            tag, crossed = "b", [(p, l) for p, l in bids if p >= order.price - 1e-9]
        for price, available in crossed:
            if lots <= 0:
                break
            take = min(lots, available)
            self._consume(order.symbol, tag, price, take)
            lots -= take

    def _touch_probability(self, inside: float) -> float:
        """Per-step fill probability at the touch, higher the more inside the spread."""
        per_minute = self.config.passive_fill_prob_per_min_at_touch
        if per_minute <= 0:
            return 0.0
        if per_minute >= 1.0:
            return 1.0
        rate_per_second = -math.log(1.0 - per_minute) / 60.0
        rate_per_second *= 1.0 + 3.0 * min(1.0, max(0.0, inside))
        return 1.0 - math.exp(-rate_per_second * self._step_ms / 1000.0)

    def _passive_fill_lots(self, order: Order, bids: list, asks: list, step: int) -> int:
        remaining = order.remaining_lots
        price = order.price
        eps = 1e-9
        units = self._units(order.symbol)
        if order.side == SIDE_BUY:
            if not asks:
                return 0   # nobody sells at all
            if _trades_through(order, bids, asks):
                through = sum(int(round(s * units)) for p, s in asks if p <= price + eps)
                return min(remaining, through)
            best = bids[0][0] if bids else None
            if best is not None and price < best - eps:
                return 0
            spread = asks[0][0] - best if best is not None else 0.0
            inside = (price - best) / spread if best is not None and spread > 0 else 0.5
        else:
            if not bids:
                return 0   # nobody buys at all
            if _trades_through(order, bids, asks):
                through = sum(int(round(s * units)) for p, s in bids if p >= price - eps)
                return min(remaining, through)
            best = asks[0][0] if asks else None
            if best is not None and price > best + eps:
                return 0
            spread = best - bids[0][0] if best is not None else 0.0
            inside = (best - price) / spread if best is not None and spread > 0 else 0.5
        rng = random.Random(f"{self.config.seed}:pf:{order.order_id}:{step}")
        if rng.random() >= self._touch_probability(inside):
            return 0
        return remaining if rng.random() < 0.5 else rng.randint(1, remaining)

    # ------------------------------------------------------------------ cancel machinery

    def _request_cancel(self, order: Order) -> None:
        """Cancel a live order: immediately (3) or through 4/5 when latency/hold is set."""
        if order.state == ST_FILLED:
            raise SimError(E_ALREADY_FILLED, "Cancel failed: order already filled")
        if order.state in FINAL_STATES:
            raise SimError(E_ALREADY_CANCELLED, "Cancel failed: order already cancelled")
        if order.state in (ST_PRE_CANCEL, ST_CANCELING):
            return
        late_qty = self.faults.fill_on_next_cancel_qty
        if late_qty > 0:
            self.faults.fill_on_next_cancel_qty = 0.0
            lots = min(order.remaining_lots, self._lots_of(order.symbol, late_qty))
            if lots > 0:
                self._fill(order, lots, order.price, is_taker=False)
            if order.state == ST_FILLED:
                raise SimError(E_ALREADY_FILLED, "Cancel failed: order already filled")
            if not order.is_live:
                raise SimError(E_ALREADY_CANCELLED, "Cancel failed: order already cancelled")
        latency_ms = int(round(self.config.cancel_latency_seconds * 1000))
        hold_ms = int(round(self.faults.hold_canceling_seconds * 1000))
        now = self._now
        order.update_ms = now
        if latency_ms > 0:
            order.state = ST_PRE_CANCEL
            order.transitions = [[now + latency_ms // 2, ST_CANCELING], [now + latency_ms + hold_ms, ST_CANCELED]]
        elif hold_ms > 0:
            order.state = ST_CANCELING
            order.transitions = [[now + hold_ms, ST_CANCELED]]
        else:
            self._set_final(order, ST_CANCELED)

    def _apply_transitions(self, moment: int) -> None:
        for order_id in sorted(self._live):
            order = self._orders[order_id]
            due = [t for t in order.transitions if t[0] <= moment]
            if not due:
                continue
            order.transitions = [t for t in order.transitions if t[0] > moment]
            last_state = due[-1][1]
            if last_state in FINAL_STATES:
                self._set_final(order, last_state)
                order.update_ms = due[-1][0]
            else:
                order.state = last_state
                order.update_ms = due[-1][0]

    # ------------------------------------------------------------------ expiry

    def _settle_expiry(self, expiry: int) -> None:
        """Cash-settle every position of ``expiry`` and kill its resting orders (state 10)."""
        self._pending_expiries.discard(expiry)
        if expiry in self._settled_expiries:
            return
        self._settled_expiries.append(expiry)
        # Each underlying settles at its own delivery price (the mean of its own index).
        deliveries = {base: self._delivery_price(expiry, base) for base in self.market.bases
                      if self._option_market(base).expiry_kind(expiry) is not None}
        kind = self.market.expiry_kind(expiry)
        expired_symbols: set[str] = set()
        for order_id in sorted(self._live):
            order = self._orders[order_id]
            instrument = self.market.instrument(order.symbol)
            if instrument is not None and instrument.expiry_ms == expiry:
                self._set_final(order, ST_CANCEL_BY_EXERCISE)
                expired_symbols.add(order.symbol)
        for account in self._accounts_by_uid.values():
            for symbol in sorted(account.positions):
                instrument = self.market.instrument(symbol)
                if instrument is None or instrument.expiry_ms != expiry:
                    continue
                expired_symbols.add(symbol)
                delivery = deliveries.get(instrument.base)
                if delivery is None:
                    delivery = deliveries[instrument.base] = self._delivery_price(expiry, instrument.base)
                self._settle_position(account, account.positions[symbol], instrument, delivery, kind, expiry)
        self._desk.expire_with_symbols(expired_symbols, expiry)
        prices = ", ".join(f"{base} {price:.2f}" for base, price in deliveries.items())
        log.info("expiry %d settled at delivery prices %s (%d symbols)", expiry, prices, len(expired_symbols))

    def _option_market(self, base: str) -> Any:
        """The option market of ``base`` (the primary's for an unknown base)."""
        return self.market.option_market(base) or self.market.primary

    def _delivery_price(self, expiry: int, base: str | None = None) -> float:
        market = self._option_market(base or self.market.primary_base)
        recorded = market.delivery_price(expiry)
        if recorded is not None:
            return float(recorded)
        window_ms = int(getattr(market.config, "delivery_window_seconds", 1800.0) * 1000)
        return float(market.index_average(expiry - window_ms, expiry))

    def _settle_position(self, account: Account, position: Position, instrument: Any, delivery: float,
                         kind: str | None, expiry: int) -> None:
        strike = instrument.strike
        intrinsic = max(0.0, delivery - strike) if instrument.option_type == "C" else max(0.0, strike - delivery)
        qty = abs(position.lots) / self._units(position.symbol)
        sign = 1 if position.lots > 0 else -1
        fee = 0.0
        if kind != "daily":
            cap = self.config.fee_cap_pct_of_premium / 100.0
            fee = _money(min(qty * delivery * self.config.delivery_fee_rate, qty * intrinsic * cap))
        realized = (intrinsic - position.avg_price) * qty * sign
        account.cash = float(account.cash or 0.0) + realized - fee
        open_flow = -position.avg_price * qty * sign
        settle_flow = intrinsic * qty * sign
        self._exercises.append(ExerciseRecord(
            user_id=account.user_id, symbol=position.symbol, time_ms=expiry, lots=abs(position.lots),
            trade_side=SIDE_BUY if sign > 0 else SIDE_SELL, strike=strike, exercise_price=_money(delivery),
            open_cash_flow=_money(open_flow), settlement_cash_flow=_money(settle_flow),
            net_cash_flow=_money(open_flow + settle_flow - fee), fees=fee,
        ))
        del account.positions[position.symbol]

    # ------------------------------------------------------------------ views

    def _fill_record(self, trade_id: int) -> Fill:
        """A fill by id, also one a ``forget_all`` erased (views of forgotten orders need it)."""
        fill = self._fills.get(trade_id)
        return fill if fill is not None else self._forgotten_fills[trade_id]

    def _visible_fills(self, order: Order) -> list[Fill]:
        lag_ms = int(round(self.faults.fill_report_lag_seconds * 1000))
        fills = [self._fill_record(t) for t in order.fill_ids]
        if lag_ms <= 0:
            return fills
        return [f for f in fills if f.time_ms <= self._now - lag_ms]

    def _order_view(self, order: Order, *, lagged: bool = True) -> dict[str, Any]:
        fills = self._visible_fills(order) if lagged else [self._fill_record(t) for t in order.fill_ids]
        filled = sum(f.lots for f in fills)
        units = self._units(order.symbol)
        notional = sum(f.price * f.lots for f in fills) / units
        state = order.state
        if filled < order.filled_lots and state in (ST_FILLED, ST_PARTIAL, ST_NEW):
            state = ST_PARTIAL if filled > 0 else ST_NEW
        symbol = order.symbol
        return {
            "orderId": order.order_id,
            "clientOrderId": order.client_order_id,
            "symbol": symbol,
            "displayName": self._display_name(symbol),
            "qty": self._qty_of(symbol, order.lots),
            "remainQty": self._qty_of(symbol, order.lots - filled),
            "fillQty": self._qty_of(symbol, filled),
            "price": order.price,
            "avgPrice": _money(notional / (filled / units)) if filled else 0.0,
            "tradeSide": order.side,
            "tradeType": order.trade_type,
            "timeInForce": order.time_in_force,
            "createTime": order.create_ms,
            "updateTime": order.update_ms,
            "reduceOnly": 1 if order.reduce_only else 0,
            "fee": _money(sum(f.fee for f in fills)),
            "rpnl": _money(sum(f.realized for f in fills)),
            "mmp": False,
            "state": state,
            "userId": order.user_id,
        }

    def _display_name(self, symbol: str) -> str:
        """``BTC-5FEB26-80000-C`` for an option, ``BTC-PERP`` for a perpetual, else the symbol."""
        perp = self.market.perp(symbol)
        if perp is not None:
            return perp.config.display_name
        instrument = self.market.instrument(symbol)
        return instrument.display_name if instrument else symbol

    def _fill_view(self, fill: Fill) -> dict[str, Any]:
        instrument = self.market.instrument(fill.symbol)
        return {
            "id": fill.trade_id,
            "optionId": instrument.option_id if instrument else 0,
            "symbol": fill.symbol,
            "displayName": self._display_name(fill.symbol),
            "tradeSide": fill.side,
            "tradeType": fill.trade_type,
            "price": fill.report_price,
            "qty": self._qty_of(fill.symbol, fill.lots),
            "iv": round(fill.iv, 6),
            "markPrice": fill.mark,
            "indexPrice": _money(fill.index),
            "orderId": fill.order_id,
            "tradeId": fill.trade_id,
            # No clientOrderId: the option fill history does not carry one (API.md 8.6); a
            # client finds whose a fill is by its orderId.
            "fee": fill.fee,
            "time": fill.time_ms,
            "reduceOnly": 1 if fill.reduce_only else 0,
            "isTaker": 1 if fill.is_taker else 0,
            "mmp": False,
        }

    def _position_view(self, account: Account, position: Position) -> dict[str, Any]:
        numbers = self._position_numbers(account, position)
        instrument = self.market.instrument(position.symbol)
        values = self._mark_values(position.symbol)
        qty, sign, avg = numbers["qty"], numbers["sign"], position.avg_price
        cost = avg * qty
        factor = qty * sign if self.config.position_greeks == "per_position" else 1.0

        def greek(name: str) -> float:
            return round(getattr(values, name) * factor, 8) if values else 0.0

        return {
            "id": position.position_id,
            "positionId": position.position_id,
            "orderId": position.last_order_id,
            "userId": account.user_id,
            "updateTime": position.update_ms,
            "symbol": position.symbol,
            "displayName": instrument.display_name if instrument else position.symbol,
            "qty": self._qty_of(position.symbol, abs(position.lots)),
            "tradeSide": SIDE_BUY if position.lots > 0 else SIDE_SELL,
            "avgPrice": _money(avg),
            "markPrice": numbers["mark"],
            "lastPrice": numbers["last"],
            "value": _money(numbers["mark"] * qty),
            "initMargin": _money(numbers["im"]),
            "maintMargin": _money(numbers["mm"]),
            "upnl": _money(numbers["upnl_last"]),
            "roi": round(numbers["upnl_last"] / cost, 8) if cost > 0 else 0.0,
            "upnlByMarkPrice": _money(numbers["upnl_mark"]),
            "roiByMarkPrice": round(numbers["upnl_mark"] / cost, 8) if cost > 0 else 0.0,
            "rspl": _money(position.rspl),
            "lockQty": 0.0,
            "indexPrice": _money(numbers["index"]),
            "delta": greek("delta"),
            "gamma": greek("gamma"),
            "vega": greek("vega"),
            "theta": greek("theta"),
            "rho": greek("rho"),
            "baseToken": instrument.base if instrument else "BTC",
            "quoteToken": "USD",
        }

    # ------------------------------------------------------------------ guards

    @staticmethod
    def _require(account: Account | None) -> Account:
        if account is None:
            raise SimError(E_NOT_AUTHORIZED, "Not authorized")
        return account

    def _require_trading(self, account: Account | None) -> Account:
        account = self._require(account)
        if account.read_only:
            raise SimError(E_NO_PERMISSION, "No permission")
        return account

    def _find_order(self, account: Account, params: dict, *, required: bool = True, perps: bool = False) -> Order:
        """The account's order by ``orderId`` (wins) or ``clientOrderId`` (newest).

        Options and perpetuals are separate books of orders: an option route never finds a
        perpetual's order (``perps=False``) and a futures route never an option's.
        """
        if _present(params, "orderId"):
            order_id = parse_int(params["orderId"], "orderId")
            order = self._orders.get(order_id)
            if order is None or order.user_id != account.user_id or self._is_perp(order.symbol) != perps:
                raise SimError(E_ORDER_NOT_FOUND, "Order does not exist")
            return order
        if _present(params, "clientOrderId"):
            client_id = parse_int(params["clientOrderId"], "clientOrderId")
            matches = [o for o in self._orders.with_client_order_id(account.user_id, client_id)
                       if self._is_perp(o.symbol) == perps]
            if not matches:
                raise SimError(E_ORDER_NOT_FOUND, "Order does not exist")
            live = [o for o in matches if o.is_live]
            return max(live or matches, key=lambda o: o.order_id)
        raise SimError(E_NEED_ORDER_ID, "Either client order ID or order ID is required")

    def _account_live_orders(self, account: Account, *, perps: bool = False) -> list[Order]:
        """The account's live orders of one product (options, or perpetuals with ``perps``)."""
        return [self._orders[oid] for oid in sorted(self._live) if self._orders[oid].user_id == account.user_id
                and self._is_perp(self._orders[oid].symbol) == perps]

    # ------------------------------------------------------------------ order validation

    def _parse_lots(self, value: Any, instrument: Any) -> int:
        return self._parse_qty_lots(value, instrument.units, instrument.min_qty, self.config.max_order_qty)

    @staticmethod
    def _parse_qty_lots(value: Any, units: int, min_qty: float, max_qty: float) -> int:
        """A quantity as whole lots of ``1 / units``: 10558 off the step or below the minimum, 10534 above the cap."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise SimError(E_ENTER_AMOUNT, "Please enter amount")
        qty = parse_float(value, "qty")
        lots_float = qty * units
        lots = int(round(lots_float))
        min_lots = int(round(min_qty * units))
        if qty <= 0 or abs(lots_float - lots) > 1e-6 or lots < max(1, min_lots):
            raise SimError(E_QTY_BELOW_MIN, "less.than.min.amount")
        if qty != lots / units:
            # On the step but for float residue (0.29999999999999993): not a valid size (API.md
            # 11.15); a client must snap and write the lot's own decimal.
            raise SimError(E_PARAM_ILLEGAL, "Parameter illegal: qty")
        if lots > int(round(max_qty * units)):
            raise SimError(E_SIZE_ABOVE_MAX, "order.size.exceeds.the.maximum.limit.per.order")
        return lots

    def _parse_price(self, value: Any, instrument: Any) -> float:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise SimError(E_ENTER_PRICE, "Please enter price")
        price = parse_float(value, "price")
        if price <= 0:
            raise SimError(E_PRICE_ILLEGAL, "Price illegal")
        tick = instrument.tick_size
        snapped = round(math.floor(price / tick + 1e-9) * tick, _decimals(tick))
        if abs(snapped - price) > 1e-9:
            if self.config.off_tick == "reject":
                raise SimError(E_PRICE_ILLEGAL, "Price illegal")
            log.debug("off-tick price %s truncated to %s", price, snapped)
        return snapped

    def _check_band(self, instrument: Any, price: float) -> None:
        """Price band of API.md 4 from the mark, the underlying and |delta|."""
        quote = self._quote(instrument.symbol)
        if quote is None:
            raise SimError(E_UNKNOWN_INSTRUMENT, "Instrument ID does not exist")
        spot = quote.underlying_price or quote.index_price
        widen = max(1.0, 4.0 * abs(quote.delta))
        low = max(instrument.tick_size, quote.mark - 0.01 * spot * widen)
        high = quote.mark + 0.05 * spot * widen
        if price > high + 1e-9:
            raise SimError(E_PRICE_ABOVE_MAX, "Order price above the max limit")
        if price < low - 1e-9:
            raise SimError(E_PRICE_BELOW_MIN, "Order price below the min limit")

    def _build_order(self, account: Account, params: dict) -> Order:
        """Validate a create request in the exchange's order; returns an unsaved order."""
        instrument = self._instrument(params.get("symbol"))
        side = parse_int(params.get("tradeSide"), "tradeSide") if _present(params, "tradeSide") else None
        if side not in (SIDE_BUY, SIDE_SELL):
            raise SimError(E_PARAM_ERROR, "Parameter tradeSide illegal")
        if not _present(params, "tradeType"):   # required (API.md 8.1), as on the futures route
            raise SimError(E_PARAM_ERROR, "Parameter tradeType illegal")
        trade_type = parse_int(params["tradeType"], "tradeType", E_PARAM_ILLEGAL)
        if trade_type not in (TT_LIMIT, TT_POST_ONLY):
            raise SimError(E_PARAM_ILLEGAL, "Parameter illegal: tradeType")
        tif = params.get("timeInForce") if _present(params, "timeInForce") else "GTC"
        if tif not in TIME_IN_FORCE:
            raise SimError(E_BAD_TIME_IN_FORCE, "Invalid timeInForce. Supported values: GTC | IOC")
        lots = self._parse_lots(params.get("qty"), instrument)
        price = self._parse_price(params.get("price"), instrument)
        client_id = _opt_int(params, "clientOrderId")
        reduce_only = parse_flag(params["reduceOnly"], "reduceOnly") if _present(params, "reduceOnly") else False
        if self._halted(instrument, self._now):
            raise SimError(E_NOT_TRADEABLE, "Option not ready, trading not allowed")
        self._check_band(instrument, price)
        live = self._account_live_orders(account)
        if client_id is not None and any(o.client_order_id == client_id for o in live):
            raise SimError(E_DUPLICATE_CLIENT_ID, "Duplicated client order ID")
        if len(live) >= self.config.max_open_orders:
            raise SimError(E_TOO_MANY_ORDERS, "Number of orders exceeds the max")
        order = Order(order_id=0, user_id=account.user_id, symbol=instrument.symbol, side=side,
                      trade_type=trade_type, time_in_force=tif, price=price, lots=lots, reduce_only=reduce_only,
                      client_order_id=client_id, create_ms=self._now, update_ms=self._now,
                      index_at_create=self._index_for(instrument.symbol))
        if reduce_only and not self._reduce_cap(order):
            raise SimError(E_INSUFFICIENT_POSITION, "Insufficient open positions")
        if trade_type == TT_POST_ONLY and self._would_cross(order):
            raise SimError(E_NOT_ALLOWED, "Operation not allowed: post-only order would cross")
        reserve = self._order_reserve(account, order)
        if reserve > 0 and reserve > self._metrics(account).available + 1e-9:
            raise SimError(E_INSUFFICIENT_BALANCE, "Insufficient available balance")
        return order

    def _place(self, account: Account, params: dict) -> Order:
        order = self._build_order(account, params)
        order.order_id = self._ids.next()
        self._orders.add(order)
        self._live.add(order.order_id)
        self._match_taker(order)
        return order

    # =========================================================================== handlers: public

    @_locked
    def server_time(self, account: Account | None, params: dict) -> dict:
        return {"serverTime": self._sync_now()}

    @_locked
    def public_config(self, account: Account | None, params: dict) -> dict:
        self._sync_now()
        cfg = self.config
        options: dict[str, dict[str, Any]] = {}
        for market in self.market.option_markets():
            tick = float(getattr(market.config, "tick_size", 1.0))
            base = getattr(market.config, "base", "BTC")
            step = float(getattr(market.config, "qty_step", LOT))
            options[f"{base}USD"] = {
                "symbol": f"{base}USD", "base": base, "settle": "USD", "multiplier": step,
                "tickSize": tick, "tickDecimal": _decimals(tick), "priceDecimal": _decimals(tick),
                "qtyDecimal": _decimals(step), "greeksDecimal": 4, "makerFee": cfg.maker_fee_rate,
                "takerFee": cfg.taker_fee_rate, "maxOrderNumber": cfg.max_open_orders, "limitMaxQty": cfg.max_order_qty,
                "marketMaxQty": 100.0, "maxPositionQty": 1000.0,
            }
        futures: dict[str, dict[str, Any]] = {}
        for perp in self.market.perps():
            pc = perp.config
            futures[pc.symbol] = {
                "symbol": pc.symbol, "base": pc.base, "settle": "USD", "multiplier": pc.qty_step,
                "tickSize": pc.tick_size, "tickDecimal": _decimals(pc.tick_size),
                "priceDecimal": _decimals(pc.tick_size), "minQty": pc.minimum_qty, "qtyDecimal": _decimals(pc.qty_step),
                "greeksDecimal": 4, "makerFee": pc.maker_fee_rate, "takerFee": pc.taker_fee_rate,
                "maxOrderNumber": pc.max_open_orders, "limitMaxQty": pc.limit_max_qty,
                "marketMaxQty": pc.market_max_qty, "positionQty": pc.position_max_qty, "maxPositionQty": pc.position_max_qty,
                "triggerLimit": 20, "maxLeverage": pc.max_leverage,
            }
        return {"optionConfig": options, "futuresConfig": futures}

    @_locked
    def instruments(self, account: Account | None, params: dict) -> list[dict]:
        self._sync_now()
        return [self._listing_entry(instrument, self._halted(instrument, self._now))
                for instrument in self._listed_of(self._listing_base(params))]

    @_locked
    def instruments_wire(self, account: Account | None, params: dict) -> RawJSON:
        """``instruments`` as JSON text: the same bytes as encoding its entries.

        Why: the daemon reads the listing every few minutes per underlying, and encoding 1,200
        entries anew each time was most of the call. An entry's text only changes when its
        instrument halts (the last minutes before expiry, encoded afresh then), so the trading
        text is kept per symbol; the texts of expired symbols are dropped once they are a
        quarter of the kept ones, so the memory follows the listing, not the run.
        """
        self._sync_now()
        base = self._listing_base(params)
        listed = self._listed_of(base)
        texts = self._listing_texts.setdefault(base, SymbolTexts())
        texts.prune(lambda: (i.symbol for i in listed))
        parts = []
        for instrument in listed:
            if self._halted(instrument, self._now):
                parts.append(_COMPACT_JSON.encode(self._listing_entry(instrument, True)))
                continue
            known = texts.get(instrument.symbol)
            if known is None or known[0] is not instrument:
                known = (instrument, _COMPACT_JSON.encode(self._listing_entry(instrument, False)))
                texts[instrument.symbol] = known
            parts.append(known[1])
        return RawJSON("[" + ",".join(parts) + "]")

    @staticmethod
    def _listing_base(params: dict) -> str:
        """The base currency a listing call asks for (BTC when it names none)."""
        return str(params.get("baseCurrency") or "BTC").upper()

    def _listed_of(self, base: str) -> list[Any]:
        """The listed options of ``base``, in listing order."""
        market = self.market.option_market(base)
        return [i for i in (market.instruments() if market is not None else []) if i.base == base]

    @staticmethod
    def _listing_entry(instrument: Any, halted: bool) -> dict[str, Any]:
        """One ``getInstruments`` entry, as the exchange lists it."""
        return {
            "baseCurrency": instrument.base,
            "symbolName": instrument.symbol,
            "strike": float(instrument.strike),
            "expirationTimestamp": instrument.expiry_ms,
            "isActive": not halted,
            "minQty": instrument.min_qty,
            "tickSize": instrument.tick_size,
            "startTimestamp": instrument.listed_ms,
        }

    def _chain_base(self, instrument: Any) -> dict[str, Any]:
        """The quote-derived fields of a chain row, computed once per market quote stamp.

        A chain call renders ~180 rows; only the per-account and trade-driven fields
        (own orders in the book, last price, volume, position) change between two calls
        inside one quote stamp, so the rest is cached here.
        """
        stamp = self.market.quote_stamp
        cached = self._chain_base_cache.get(instrument.symbol)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if self._chain_base_stamp != stamp:
            self._chain_base_cache.clear()
            self._chain_base_stamp = stamp
        quote = self.market.quote(instrument.symbol)
        is_call = instrument.option_type == "C"
        base = {
            "optionId": instrument.option_id,
            "index": f"{instrument.base}USD",
            "symbol": instrument.symbol,
            "baseToken": instrument.base,
            "displayName": instrument.display_name,
            "endTime": instrument.expiry_ms,
            "strike": float(instrument.strike),
            "lastPrice": 0.0,
            "markPrice": quote.mark,
            "volume": 0.0,
            "openInterest": 0.0,
            "bid": quote.bid, "bidSize": quote.bid_size, "bidIv": round(quote.bid_iv, 6),
            "ask": quote.ask, "askSize": quote.ask_size, "askIv": round(quote.ask_iv, 6),
            "markIv": round(quote.iv, 6),
            "type": 1 if is_call else 2,
            "lastPriceIv": DOUBLE_MAX,
            "underlyingPrice": quote.underlying_price,
            "breakeven": _money(instrument.strike + quote.mark if is_call else instrument.strike - quote.mark),
            "changeRate": 0.0,
            "changePrice": 0.0,
            "userPosition": 0.0,
            "delta": round(quote.delta, 8), "gamma": round(quote.gamma, 10), "vega": round(quote.vega, 8),
            "theta": round(quote.theta, 8), "rho": round(quote.rho, 8),
        }
        self._chain_base_cache[instrument.symbol] = (stamp, base)
        return base

    def _chain_side(self, account: Account | None, instrument: Any,
                    stats: dict[str, tuple[float, float]]) -> dict[str, Any]:
        row = dict(self._chain_base(instrument))
        symbol = instrument.symbol
        if symbol in stats:
            row["volume"], row["openInterest"] = stats[symbol]
        if self._has_book_overlay(symbol):
            quote = self.market.quote(symbol)
            bids, asks = self._public_book(symbol)
            bid, bid_size = (bids[0][0], self._qty_of(symbol, bids[0][1])) if bids else (0.0, 0.0)
            ask, ask_size = (asks[0][0], self._qty_of(symbol, asks[0][1])) if asks else (0.0, 0.0)
            row["bid"], row["bidSize"], row["ask"], row["askSize"] = bid, bid_size, ask, ask_size
            if bid != quote.bid:
                row["bidIv"] = round(self._iv_of(instrument, bid, quote.iv), 6)
            if ask != quote.ask:
                row["askIv"] = round(self._iv_of(instrument, ask, quote.iv), 6)
        last = self._last_price.get(symbol)
        if last is not None:
            row["lastPrice"] = last
            row["lastPriceIv"] = round(self._iv_of(instrument, last, row["markIv"]), 6)
        if account is not None:
            row["userPosition"] = self._qty_of(symbol, self._position_lots(account, symbol))
        return row

    def _symbol_stats(self) -> dict[str, tuple[float, float]]:
        """(24 h taker volume, open interest) in BTC per symbol, computed once per request."""
        since = self._now - DAY_MS
        if self._taker_volume is None or self._taker_volume.source is not self._fills:
            self._taker_volume = _TakerVolume(self._fills)
        volume = self._taker_volume.update(since)
        longs: dict[str, int] = {}
        shorts: dict[str, int] = {}
        for account in self._accounts_by_uid.values():
            for symbol, position in account.positions.items():
                if position.lots > 0:
                    longs[symbol] = longs.get(symbol, 0) + position.lots
                else:
                    shorts[symbol] = shorts.get(symbol, 0) - position.lots
        symbols = set(volume) | set(longs) | set(shorts)
        return {s: (self._qty_of(s, volume.get(s, 0)), self._qty_of(s, max(longs.get(s, 0), shorts.get(s, 0))))
                for s in symbols}

    def _chain_listing(self, params: dict) -> tuple[MarketSource | None, list[Any]]:
        """The option market a chain call asks for (None if none) and the instruments it shows."""
        index = str(params.get("index") or "BTCUSD").upper()
        end_time = _opt_int(params, "endTime")
        market = self.market.option_market(index[:-3]) if index.endswith("USD") else None
        if market is None:
            return None, []
        # One expiry asked: only its instruments are read (the same set, in listing order).
        listed = market.instruments() if end_time is None else market.instruments_for_expiry(end_time)
        return market, [i for i in listed
                        if f"{i.base}USD" == index and (end_time is None or i.expiry_ms == end_time)]

    @staticmethod
    def _chain_rows(instruments: list[Any], sides: Iterable[Any]) -> list[tuple[tuple[int, float], dict]]:
        """The chain's rows by (expiry, strike), each with its call and put side (``sides``: one per instrument)."""
        rows: dict[tuple[int, float], dict[str, Any]] = {}
        for instrument, side in zip(instruments, sides):
            row = rows.setdefault((instrument.expiry_ms, instrument.strike),
                                  {"strike": float(instrument.strike), "callOption": None, "putOption": None})
            row["callOption" if instrument.option_type == "C" else "putOption"] = side
        return [(k, rows[k]) for k in sorted(rows)]

    @_locked
    def option_chain(self, account: Account | None, params: dict) -> list[dict]:
        self._sync_now()
        stats = self._symbol_stats()
        instruments = self._chain_listing(params)[1]
        rendered = self._chain_rows(instruments, [self._chain_side(account, inst, stats) for inst in instruments])
        return [row for _key, row in rendered]

    @_locked
    def option_chain_wire(self, account: Account | None, params: dict) -> RawJSON:
        """``option_chain`` as JSON text: the same bytes as encoding its rows, at a fraction of the cost."""
        self._sync_now()
        stats = self._symbol_stats()
        self._chain_text_heads.prune(lambda: (i.symbol for i in self.market.instruments()))
        parts = []
        overlaid = self._overlaid_symbols()
        market, instruments = self._chain_listing(params)
        # Every side's quote at once (the same quotes, one lock and cache check for the chain).
        quotes = market.quotes([i.symbol for i in instruments]) if market is not None else []
        rows = self._chain_rows(instruments, self._chain_side_texts(account, instruments, quotes, stats, overlaid))
        for (_expiry, strike), row in rows:
            call = row["callOption"] if row["callOption"] is not None else "null"
            put = row["putOption"] if row["putOption"] is not None else "null"
            # repr() is what json writes for a finite float (strikes always are), without its encoder.
            parts.append(f'{{"strike":{float(strike)!r},"callOption":{call},"putOption":{put}}}')
        return RawJSON("[" + ",".join(parts) + "]")

    def _chain_side_texts(self, account: Account | None, instruments: Sequence[Any], quotes: Sequence[OptionQuote],
                          stats: dict[str, tuple[float, float]], overlaid: set[str]) -> list[str]:
        """Each chain side as compact JSON, byte for byte the encoding of ``_chain_side``'s dict.

        Nearly every side shows the market's quote and nothing else (no volume, own order,
        last trade or position of the caller): its text is formatted straight from the quote,
        a fraction of the cost of building the dict and running the JSON encoder over it, and
        a chain call formats every strike of an expiry (the backtests' largest single cost).
        The text that is the same for every side of one type and underlying price is formatted
        once per call. Any other side goes through the dict.
        """
        special = stats.keys() | self._last_price.keys() | overlaid
        if account is not None:   # the caller's own positions show in their sides
            special |= {symbol for symbol, position in account.positions.items() if position.lots}
        heads = self._chain_text_heads
        middles: dict[tuple[float, bool], str] = {}
        texts: list[str] = []
        for instrument, quote in zip(instruments, quotes):
            symbol = instrument.symbol
            mark, bid, ask, bid_size, ask_size = quote.mark, quote.bid, quote.ask, quote.bid_size, quote.ask_size
            underlying = quote.underlying_price
            if (symbol in special
                    or not math.isfinite(mark + bid + ask + bid_size + ask_size + quote.bid_iv + quote.ask_iv
                                         + quote.iv + underlying + quote.delta + quote.gamma + quote.vega
                                         + quote.theta + quote.rho)):
                texts.append(_COMPACT_JSON.encode(self._chain_side(account, instrument, stats)))
                continue
            head = heads.get(symbol)
            if head is None:
                head = self._chain_text_head(instrument)
                heads[symbol] = head
            is_call = instrument.option_type == "C"
            middle = middles.get((underlying, is_call))
            if middle is None:
                middle = (f',"type":{1 if is_call else 2},"lastPriceIv":{DOUBLE_MAX!r},'
                          f'"underlyingPrice":{underlying!r},"breakeven":')
                middles[(underlying, is_call)] = middle
            # rounded_repr(x, n) is repr(round(x, n)), the dict's encoding, in one conversion.
            breakeven = money_repr(instrument.strike + mark if is_call else instrument.strike - mark)
            texts.append(
                f'{head}{mark!r},"volume":0.0,"openInterest":0.0,"bid":{bid!r},"bidSize":{bid_size!r},'
                f'"bidIv":{rounded_repr(quote.bid_iv, 6)},"ask":{ask!r},"askSize":{ask_size!r},'
                f'"askIv":{rounded_repr(quote.ask_iv, 6)},"markIv":{rounded_repr(quote.iv, 6)}{middle}'
                f'{breakeven},"changeRate":0.0,"changePrice":0.0,"userPosition":0.0,'
                f'"delta":{rounded_repr(quote.delta, 8)},"gamma":{rounded_repr(quote.gamma, 10)},'
                f'"vega":{rounded_repr(quote.vega, 8)},"theta":{rounded_repr(quote.theta, 8)},'
                f'"rho":{rounded_repr(quote.rho, 8)}}}')
        return texts

    @staticmethod
    def _chain_text_head(instrument: Any) -> str:
        """The fields of a chain side that never change, up to ``"markPrice":`` (``_chain_base``'s order)."""
        fixed = _COMPACT_JSON.encode({
            "optionId": instrument.option_id, "index": f"{instrument.base}USD", "symbol": instrument.symbol,
            "baseToken": instrument.base, "displayName": instrument.display_name, "endTime": instrument.expiry_ms,
            "strike": float(instrument.strike), "lastPrice": 0.0,
        })
        return fixed[:-1] + ',"markPrice":'

    @_locked
    def option_detail(self, account: Account | None, params: dict) -> dict:
        self._sync_now()
        instrument = self._instrument(params.get("symbol"))
        side = self._chain_side(account, instrument, self._symbol_stats())
        quote = self.market.quote(instrument.symbol)
        last = self._last_price.get(instrument.symbol, 0.0)
        volume = side["volume"]
        return {
            "optionId": instrument.option_id,
            "symbol": instrument.symbol,
            "index": f"{instrument.base}USD",
            "displayName": instrument.display_name,
            "type": side["type"],
            "endTime": instrument.expiry_ms,
            "remainTime": max(0, instrument.expiry_ms - self._now),
            "strike": float(instrument.strike),
            "markPrice": quote.mark,
            "lastPrice": last,
            "premium": quote.mark,
            "changeRate": 0.0,
            "changePrice": 0.0,
            "price24hHigh": last,
            "price24hLow": last,
            "price24hOpen": last,
            "iv": round(quote.iv, 6),
            "indexPrice": _money(quote.index_price),
            "underlyingPrice": quote.underlying_price,
            "delta": side["delta"], "gamma": side["gamma"], "vega": side["vega"],
            "theta": side["theta"], "rho": side["rho"],
            "volume": volume,
            "volumeUsd": _money(volume * quote.index_price),
            "volume24h": volume,
            "volumeUsd24h": _money(volume * quote.index_price),
            "openInterest": side["openInterest"],
            "multiplier": instrument.qty_step,
            "breakeven": side["breakeven"],
            "bid": side["bid"],
            "ask": side["ask"],
        }

    @_locked
    def orderbook(self, account: Account | None, params: dict) -> dict:
        self._sync_now()
        instrument = self._instrument(params.get("symbol"))
        bids, asks = self._public_book(instrument.symbol)
        return {
            "optionName": instrument.symbol,
            "displayName": instrument.display_name,
            "strike": float(instrument.strike),
            "bids": [{"price": num_str(p), "size": self._qty_text(instrument.symbol, l)} for p, l in bids[:100]],
            "asks": [{"price": num_str(p), "size": self._qty_text(instrument.symbol, l)} for p, l in asks[:100]],
        }

    @_locked
    def last_trades(self, account: Account | None, params: dict) -> list[dict]:
        self._sync_now()
        symbol = params.get("symbol")
        instrument = self.market.instrument(symbol) if isinstance(symbol, str) else None
        if instrument is None:
            raise SimError(E_UNKNOWN_INSTRUMENT, "Instrument ID does not exist")
        prints: list[Fill] = []
        for f in self._fills.newest_on_symbol(instrument.symbol):   # newest first: ids grow with time
            if f.is_taker and f.trade_type != TT_BLOCK:
                prints.append(f)
                if len(prints) == 100:
                    break
        prints.sort(key=lambda f: f.trade_id, reverse=True)
        return [{"symbol": f.symbol, "displayName": instrument.display_name, "price": num_str(f.price),
                 "qty": self._qty_text(f.symbol, f.lots), "time": f.time_ms, "tradeSide": f.side} for f in prints[:100]]

    @_locked
    def futures_symbols(self, account: Account | None, params: dict) -> list[dict] | dict:
        self._sync_now()
        entries = [self._perp_symbol_entry(perp, position) for position, perp in enumerate(self.market.perps(), 1)]
        if _present(params, "symbol"):
            wanted = str(params["symbol"]).upper()
            for entry in entries:
                if entry["symbol"] == wanted:
                    return entry
            raise SimError(E_UNKNOWN_INSTRUMENT, "Instrument ID does not exist")
        return entries

    def _perp_stats(self, symbol: str) -> dict[str, float]:
        """Last price, 24 h open/high/low and taker volume of a perpetual (from its prints)."""
        since = self._now - DAY_MS
        prints = [f for f in self._fills.on_symbol_since(symbol, since) if f.is_taker]
        prices = [f.price for f in prints]
        volume = sum(f.lots for f in prints) / self._units(symbol)
        return {
            "last": self._last_price.get(symbol, 0.0), "open": prices[0] if prices else 0.0,
            "high": max(prices) if prices else 0.0, "low": min(prices) if prices else 0.0,
            "volume": volume, "volume_usd": sum(f.price * f.lots for f in prints) / self._units(symbol),
        }

    def _perp_symbol_entry(self, perp: PerpMarket, sort_index: int) -> dict[str, Any]:
        """One perpetual in ``futures/market/symbol`` (API.md §14.4): last price (the mark before
        any trade), mark and index; 24 h figures from this simulator's own prints."""
        cfg = perp.config
        mark = perp.mark_price()
        index = _money(perp.index_price())
        stats = self._perp_stats(cfg.symbol)
        last = stats["last"] or mark
        opened = stats["open"] or last
        return {
            "contractId": cfg.contract_id, "symbol": cfg.symbol, "symbolName": f"{cfg.base}/USD",
            "displayName": cfg.display_name, "baseToken": cfg.base, "quoteToken": "USD", "price": last,
            "markPrice": mark, "indexPrice": index, "changeRate": round((last - opened) / opened, 8) if opened else 0.0,
            "changePrice": _money(last - opened), "price24hHigh": stats["high"] or last,
            "price24hLow": stats["low"] or last, "price24hOpen": opened, "volume24h": round(stats["volume"], 8),
            "volumeUsd24h": _money(stats["volume_usd"]), "ts": self._now,
            "hasOption": self.market.option_market(cfg.base) is not None, "sortIdx": sort_index,
        }

    @_locked
    def estimated_expiration_price(self, account: Account | None, params: dict) -> list[dict]:
        self._sync_now()
        index = str(params.get("index") or "BTCUSD").upper()
        end_time = _opt_int(params, "endTime")
        market = self.market.option_market(index[:-3]) if index.endswith("USD") else None
        if market is None:
            return []
        known = set(market.expiries()) | set(self._settled_expiries)
        expiries = [end_time] if end_time is not None else sorted(market.expiries())
        out = []
        for expiry in expiries:
            if expiry not in known:
                continue
            price = market.estimated_delivery_price(expiry)
            out.append({"estimatedExpirationPrice": num_str(price, 2), "index": index, "endTime": expiry})
        return out

    @_locked
    def delivery_prices(self, account: Account | None, params: dict) -> dict:
        self._sync_now()
        index = str(params.get("symbol") or params.get("index") or "BTCUSD").upper()
        prices = self.market.delivery_prices_of(index[:-3]) if index.endswith("USD") else {}
        items = [{"date": expiry, "delivery_price": num_str(price, 2)}
                 for expiry, price in sorted(prices.items(), reverse=True)]
        return {"list": items, "records_total": len(items)}

    # =========================================================================== handlers: account

    @_locked
    def query_api_key(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        return {"userId": account.user_id, "apiKey": account.api_key, "readOnly": 1 if account.read_only else 0,
                "isMaster": True, "parentUid": 0}

    @_locked
    def user_info(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        return {"name": account.name, "email": account.email, "userId": account.user_id}

    @_locked
    def account_summary(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        self._sync_now()
        m = self._metrics(account)
        index = self.market.index_price()
        equity = m.equity
        im_ratio = m.im / equity if equity > 0 else 0.0
        mm_ratio = m.mm_positions / equity if equity > 0 else 0.0
        btc_value = equity / index if index > 0 else 0.0
        # Each figure formatted once: equity alone shows six times (a request every poll).
        equity_text, available, im, mm = (num_str(v, 6) for v in (equity, m.available, m.im, m.mm_positions))
        upnl, equity_money = num_str(m.upnl_mark, 6), _money(equity)
        coin = {
            "accountId": account.user_id, "coin": "USDT", "equityAmount": equity_text,
            "availableBalance": available, "cashBalanceAmount": num_str(m.cash, 6),
            "canWithdrawAmount": num_str(max(0.0, min(m.available, m.cash)), 6), "marginMode": 1,
            "marginBalance": equity_text, "unrealizedAmount": upnl,
            "imAmount": im, "mmAmount": mm,
            "btcValue": num_str(btc_value, 8), "dollarValue": equity_text, "usdtValue": equity_text,
            "decimal": 8,
        }
        return {
            "equity": equity_text,
            "availableMargin": available,
            "imAmount": im,
            "mmAmount": mm,
            "imRatio": num_str(im_ratio, 6),
            "mmRatio": num_str(mm_ratio, 6),
            "marginBalance": equity_text,
            "unrealizedPnL": upnl,
            "totalBtcValue": round(btc_value, 8),
            "totalDollarValue": equity_money,
            "totalUsdtValue": equity_money,
            "accounts": [coin],
        }

    @_locked
    def positions(self, account: Account | None, params: dict) -> list[dict]:
        account = self._require(account)
        self._sync_now()
        symbol = params.get("symbol") if _present(params, "symbol") else None
        return [self._position_view(account, account.positions[s]) for s in sorted(account.positions)
                if (symbol is None or s == symbol) and not self._is_perp(s)]

    # =========================================================================== handlers: orders

    @_locked
    def pending_orders(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        self._sync_now()
        page = max(1, _opt_int(params, "page", 1) or 1)
        size = _opt_int(params, "pageSize", 20) or 20
        size = min(max(1, size), PENDING_MAX_PAGE)
        symbol = params.get("symbol") if _present(params, "symbol") else None
        currency = str(params["currency"]).upper() if _present(params, "currency") else None
        lag_ms = int(round(self.config.pending_list_lag_seconds * 1000))
        views = []
        for order in self._pending_candidates(account):
            if order.create_ms > self._now - lag_ms or (symbol and order.symbol != symbol):
                continue
            if currency and not order.symbol.startswith(currency):
                continue
            view = self._order_view(order)
            if view["state"] not in LIVE_STATES:
                continue
            view["id"] = order.order_id
            view["initMargin"] = _money(self._order_reserve(account, order))
            view["indexPrice"] = _money(order.index_at_create)
            views.append(view)
        views.sort(key=lambda v: v["orderId"], reverse=True)
        total = len(views)
        page_total = max(1, -(-total // size)) if total else 0
        start = (page - 1) * size
        return {"list": views[start:start + size], "pageTotal": page_total, "total": total}

    def _pending_candidates(self, account: Account, *, perps: bool = False) -> list[Order]:
        """Live orders, plus orders whose fill is still hidden by the fill-report lag."""
        orders = self._account_live_orders(account, perps=perps)
        lag_ms = int(round(self.faults.fill_report_lag_seconds * 1000))
        if lag_ms > 0:
            # Only under the fill-report-lag fault: a resting order filled now may be old, so scan.
            orders += [o for o in self._orders.values_updated_after(self._now - lag_ms)
                       if o.user_id == account.user_id and not o.is_live
                       and o.state == ST_FILLED and o.update_ms > self._now - lag_ms
                       and self._is_perp(o.symbol) == perps]
        return orders

    @_locked
    def create_order(self, account: Account | None, params: dict) -> int:
        account = self._require_trading(account)
        self._sync_now()
        return self._place(account, params).order_id

    @_locked
    def batch_create_orders(self, account: Account | None, params: dict) -> list[dict]:
        account = self._require_trading(account)
        self._sync_now()
        orders = params.get("orders")
        if not isinstance(orders, list) or not orders:
            raise SimError(E_PARAM_ERROR, "Parameter orders illegal")
        if len(orders) > BATCH_LIMIT:
            raise SimError(E_COUNT_LIMIT, "Parameter orders count limit")
        results = []
        for item in orders:
            try:
                if not isinstance(item, dict):
                    raise SimError(E_PARAM_ERROR, "Parameter orders illegal")
                order = self._place(account, item)
                results.append({"code": 0, "msg": "Success", "i18nArgs": None, "data": order.order_id})
            except SimError as err:
                results.append({"code": err.code, "msg": err.msg, "i18nArgs": None, "data": None})
        return results

    @_locked
    def modify_order(self, account: Account | None, params: dict) -> int:
        account = self._require_trading(account)
        self._sync_now()
        order = self._find_order(account, params)
        if _present(params, "symbol") and params["symbol"] != order.symbol:
            raise SimError(E_PARAM_ERROR, "Parameter symbol mismatch")
        if order.state not in (ST_NEW, ST_PARTIAL) or order.trade_type == TT_BLOCK:
            raise SimError(E_NOT_ALLOWED, "Operation not allowed: order is not open")
        instrument = self._instrument(order.symbol)
        if self._halted(instrument, self._now):
            raise SimError(E_NOT_TRADEABLE, "Option not ready, trading not allowed")
        new_price = self._parse_price(params["price"], instrument) if _present(params, "price") else order.price
        new_lots = self._parse_lots(params["qty"], instrument) if _present(params, "qty") else order.lots
        if new_price != order.price:
            self._check_band(instrument, new_price)
        return self._apply_amend(order, new_price, new_lots, post_only_cross_code=E_NOT_ALLOWED)

    def _apply_amend(self, order: Order, new_price: float, new_lots: int, *, post_only_cross_code: int) -> int:
        """The amend itself, options and perpetuals alike: a post-only order that would now cross is
        refused (with the product's code); a quantity at or below what filled ends the order FILLED;
        otherwise the new price and size, matched at once if they now cross. Same orderId."""
        if order.trade_type == TT_POST_ONLY and new_price != order.price:
            if self._would_cross(Order(**{**asdict(order), "price": new_price})):
                raise SimError(post_only_cross_code, "Operation not allowed: post-only order would cross")
        order.price = new_price
        order.update_ms = self._now
        if new_lots <= order.filled_lots:
            order.lots = order.filled_lots
            self._set_final(order, ST_FILLED)
            return order.order_id
        order.lots = new_lots
        self._match_taker(order)
        return order.order_id

    @_locked
    def cancel_order(self, account: Account | None, params: dict) -> str:
        account = self._require_trading(account)
        self._sync_now()
        order = self._find_order(account, params)
        self._request_cancel(order)
        return "success"

    @_locked
    def batch_cancel_orders(self, account: Account | None, params: dict) -> list[dict]:
        account = self._require_trading(account)
        self._sync_now()
        return self._batch_cancel(account, params, perps=False)

    def _batch_cancel(self, account: Account, params: dict, *, perps: bool) -> list[dict]:
        """One ack per id of ``orderIdList`` (wins) or ``clientOrderIdList``: scode 0 ok, 1 failed.

        The same rules for the options' and the perpetuals' batch cancel; ``perps`` says which
        book of orders the ids name."""
        by_order = params.get("orderIdList")
        by_client = params.get("clientOrderIdList")
        key, values = ("orderId", by_order) if by_order else ("clientOrderId", by_client)
        if isinstance(values, str):
            values = [v for v in values.split(",") if v.strip()]
        if not isinstance(values, list) or not values:
            raise SimError(E_PARAM_ERROR, "Parameter orderIdList illegal")
        if len(values) > BATCH_LIMIT:
            raise SimError(E_COUNT_LIMIT, "Parameter orderIdList count limit")
        results = []
        for value in values:
            item: dict[str, Any] = {"clOrdId": None, "ordId": None, "ts": self._now, "scode": 0, "smsg": "success"}
            try:
                order = self._find_order(account, {key: value}, perps=perps)
                item["clOrdId"], item["ordId"] = order.client_order_id, order.order_id
                self._request_cancel(order)
            except SimError as err:
                if key == "orderId" and item["ordId"] is None:
                    item["ordId"] = value
                elif key == "clientOrderId" and item["clOrdId"] is None:
                    item["clOrdId"] = value
                item["scode"], item["smsg"] = 1, err.msg
            results.append(item)
        return results

    def _cancel_matching(self, account: Account, predicate: Callable[[Order], bool]) -> None:
        for order in self._account_live_orders(account):
            if order.state in (ST_NEW, ST_PARTIAL) and order.trade_type != TT_BLOCK and predicate(order):
                self._request_cancel(order)

    @_locked
    def cancel_open_orders(self, account: Account | None, params: dict) -> None:
        account = self._require_trading(account)
        self._sync_now()
        index = str(params.get("index") or "BTCUSD").upper()
        self._cancel_matching(account, lambda o: o.symbol.startswith(index + "-"))
        return None

    @_locked
    def cancel_orders_by_option(self, account: Account | None, params: dict) -> None:
        account = self._require_trading(account)
        self._sync_now()
        symbol = params.get("optionName")
        if not isinstance(symbol, str) or self.market.instrument(symbol) is None:
            raise SimError(E_UNKNOWN_INSTRUMENT, "Instrument ID does not exist")
        self._cancel_matching(account, lambda o: o.symbol == symbol)
        return None

    @_locked
    def query_order(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        self._sync_now()
        return self._order_view(self._find_order(account, params))

    # =========================================================================== handlers: histories

    def _time_window(self, params: dict, default_ms: int | None = DAY_MS) -> tuple[int, int]:
        end = parse_int(params["endTime"], "endTime") if _present(params, "endTime") else self._now
        start = _opt_int(params, "startTime", None)
        if start is None:
            start = end - default_ms if default_ms is not None else 0
        if end < start:
            raise SimError(E_PARAM_ERROR, "Parameter startTime/endTime illegal")
        if default_ms is not None and end - start > HISTORY_MAX_RANGE_MS:
            raise SimError(E_PARAM_ERROR, "Time range exceeds 90 days")
        return start, end

    def _cursor_args(self, params: dict, max_size: int, default_size: int = 20) -> tuple[int, int | None, str]:
        size = _opt_int(params, "pageSize", default_size) or default_size
        if size < 1 or size > max_size:
            raise SimError(E_PARAM_ERROR, f"Parameter pageSize must be within 1..{max_size}")
        from_id = _opt_int(params, "fromId", None)
        direction = str(params.get("direction") or "NEXT").upper()
        if direction not in ("NEXT", "PREV"):
            raise SimError(E_PARAM_ERROR, "Parameter direction illegal")
        return size, from_id, direction

    @_locked
    def order_history(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        self._sync_now()
        size, from_id, direction = self._cursor_args(params, HISTORY_MAX_PAGE)
        start, end = self._time_window(params)
        symbol = params.get("symbol") if _present(params, "symbol") else None
        orders = [o for o in self._orders.created_between(account.user_id, start, end)
                  if (symbol is None or o.symbol == symbol) and not self._is_perp(o.symbol)]
        orders.sort(key=lambda o: o.order_id, reverse=True)
        page, has_next, has_pre = _cursor_page(orders, lambda o: o.order_id, from_id, direction, size)
        return {"list": [self._order_view(o) for o in page], "hasNext": has_next, "hasPre": has_pre}

    @_locked
    def trade_history(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        self._sync_now()
        size, from_id, direction = self._cursor_args(params, HISTORY_MAX_PAGE)
        start, end = self._time_window(params)
        symbol = params.get("symbol") if _present(params, "symbol") else None
        lag_ms = int(round(self.faults.fill_report_lag_seconds * 1000))
        fills = [f for f in self._fills.of_user_between(account.user_id, start, min(end, self._now - lag_ms))
                 if (symbol is None or f.symbol == symbol) and not self._is_perp(f.symbol)]
        fills.sort(key=lambda f: f.trade_id, reverse=True)
        page, has_next, has_pre = _cursor_page(fills, lambda f: f.trade_id, from_id, direction, size)
        return {"list": [self._fill_view(f) for f in page], "hasNext": has_next, "hasPre": has_pre}

    @_locked
    def exercise_history(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        self._sync_now()
        size = _opt_int(params, "pageSize", 20) or 20
        if size < 1 or size > EXERCISE_MAX_PAGE:
            raise SimError(E_PARAM_ERROR, f"Parameter pageSize must be within 1..{EXERCISE_MAX_PAGE}")
        page = max(1, _opt_int(params, "page", 1) or 1)
        start, end = self._time_window(params, default_ms=None)
        symbol = params.get("symbol") if _present(params, "symbol") else None
        records = [r for r in self._exercises if r.user_id == account.user_id and start <= r.time_ms <= end
                   and (symbol is None or r.symbol == symbol)]
        records.sort(key=lambda r: (r.time_ms, r.symbol), reverse=True)
        first = (page - 1) * size
        chunk = records[first:first + size]
        items = [{
            "symbol": r.symbol, "time": r.time_ms, "qty": self._qty_of(r.symbol, r.lots), "tradeSide": r.trade_side,
            "strike": float(r.strike), "exercisePrice": r.exercise_price, "openCashFlow": r.open_cash_flow,
            "settlementCashFlow": r.settlement_cash_flow, "netCashFlow": r.net_cash_flow, "fees": r.fees,
        } for r in chunk]
        return {"list": items, "hasNext": first + size < len(records), "hasPrev": page > 1}

    # =========================================================================== handlers: RFQ

    def _parse_rfq_legs(self, raw: Any) -> list[RfqLeg]:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise SimError(E_PARAM_ERROR, "Parameter legs illegal") from None
        if not isinstance(raw, list) or not raw:
            raise SimError(E_PARAM_ERROR, "Parameter legs illegal")
        legs: list[RfqLeg] = []
        for item in raw:
            if not isinstance(item, dict):
                raise SimError(E_PARAM_ERROR, "Parameter legs illegal")
            instrument = self._instrument(item.get("instrumentName"))
            if self._halted(instrument, self._now):
                raise SimError(E_NOT_TRADEABLE, "Option not ready, trading not allowed")
            side = item.get("side")
            if side not in RFQ_SIDES:
                raise SimError(E_PARAM_ERROR, "Parameter side illegal")
            lots = self._parse_lots(item.get("qty"), instrument)
            if any(leg.symbol == instrument.symbol for leg in legs):
                raise SimError(E_PARAM_ERROR, "Parameter legs illegal: duplicate instrument")
            legs.append(RfqLeg(symbol=instrument.symbol, side=side, lots=lots))
        return legs

    def _rfq_view(self, rfq: Any) -> dict[str, Any]:
        return {
            "requestId": str(rfq.request_id),
            "createTime": rfq.create_ms,
            "expiryTime": rfq.expiry_ms,
            "legs": [{"instrumentName": leg.symbol, "qty": self._qty_text(leg.symbol, leg.lots), "side": leg.side}
                     for leg in rfq.legs],
            "state": rfq.state,
        }

    def _quote_view(self, quote: Any) -> dict[str, Any]:
        view: dict[str, Any] = {"quoteId": str(quote.quote_id)}
        if quote.include_request_id:
            view["requestId"] = str(quote.request_id)
        view.update({
            "userId": str(quote.maker_user_id),
            "state": quote.state,
            "createTime": quote.create_ms,
            "updateTime": quote.update_ms,
            "expiryTime": quote.expiry_ms,
            "legs": [{"instrumentName": leg.symbol, "side": leg.side, "price": num_str(leg.price),
                      "quantity": self._qty_text(leg.symbol, leg.lots)} for leg in quote.legs],
        })
        return view

    @_locked
    def rfq_create(self, account: Account | None, params: dict) -> dict:
        account = self._require_trading(account)
        self._sync_now()
        legs = self._parse_rfq_legs(params.get("legs"))
        if len({option_base(leg.symbol) for leg in legs}) > 1:
            raise SimError(E_NOT_ALLOWED, "Operation not allowed: RFQ legs must share one underlying")
        if self.config.rfq_single_leg_must_buy and len(legs) == 1 and legs[0].side != RFQ_BUY:
            raise SimError(E_NOT_ALLOWED, "Operation not allowed: a single-leg RFQ must be BUY")
        minimum = self.config.rfq_min_notional_usd
        if minimum is not None:
            notional = sum(self._instrument(leg.symbol).strike * leg.lots / self._units(leg.symbol)
                           for leg in legs)
            if notional < minimum - 1e-9:
                raise SimError(E_NOT_ALLOWED, f"Operation not allowed: RFQ notional below {num_str(minimum, 2)}")
        rfq = self._desk.create(account.user_id, legs, self._now)
        return self._rfq_view(rfq)

    def _parse_rfq_id(self, params: dict, name: str) -> int:
        if not _present(params, name):
            raise SimError(E_PARAM_ERROR, f"Parameter {name} empty")
        return parse_int(params[name], name)

    @_locked
    def rfq_quotes_received(self, account: Account | None, params: dict) -> list[dict]:
        account = self._require(account)
        self._sync_now()
        if _present(params, "requestId"):
            request_ids = [self._parse_rfq_id(params, "requestId")]
        else:
            request_ids = [r.request_id for r in self._desk.rfqs_of(account.user_id)]
        out: list[dict[str, Any]] = []
        for request_id in request_ids:
            rfq = self._desk.rfq(request_id)
            if rfq is None or rfq.user_id != account.user_id:
                continue
            out.extend(self._quote_view(q) for q in self._desk.quotes_of(request_id))
        return out

    @_locked
    def rfq_accept(self, account: Account | None, params: dict) -> dict:
        account = self._require_trading(account)
        self._sync_now()
        request_id = self._parse_rfq_id(params, "requestId")
        quote_id = self._parse_rfq_id(params, "quoteId")
        if self.faults.rfq_accept_fail_code is not None:
            raise SimError(int(self.faults.rfq_accept_fail_code), "Block trade accept failed (injected)")
        rfq, quote = self._desk.check_acceptable(account.user_id, request_id, quote_id, self._now)
        for leg in quote.legs:
            instrument = self._instrument(leg.symbol)
            if self._halted(instrument, self._now):
                raise SimError(E_NOT_TRADEABLE, "Option not ready, trading not allowed")
        self._check_block_margin(account, quote)
        block_trade_id = quote.quote_id
        legs_out: list[dict[str, Any]] = []
        for leg in quote.legs:
            legs_out.append(self._execute_block_leg(account, leg, block_trade_id))
        self._block_trades.append(BlockTrade(block_trade_id=block_trade_id, request_id=rfq.request_id,
                                             quote_id=quote.quote_id, user_id=account.user_id,
                                             time_ms=self._now, legs=legs_out))
        self._desk.mark_filled(rfq, quote, self._now, block_trade_id)
        shown = list(reversed(legs_out)) if self.faults.rfq_reverse_accept_legs else legs_out
        return {"userId": None, "blockTradeId": str(block_trade_id), "requestId": str(rfq.request_id),
                "quoteId": str(quote.quote_id), "role": "TAKER", "legs": [dict(leg) for leg in shown]}

    def _check_block_margin(self, account: Account, quote: Any) -> None:
        """Refuse an accept the account could not margin (premium for buys, short IM for sells)."""
        needed = 0.0
        for leg in quote.legs:
            side = _side_code(rfq_opposite(leg.side))
            probe = Order(order_id=0, user_id=account.user_id, symbol=leg.symbol, side=side, trade_type=TT_LIMIT,
                          time_in_force="GTC", price=leg.price, lots=leg.lots, reduce_only=False,
                          client_order_id=None, create_ms=self._now, update_ms=self._now)
            needed += self._order_reserve(account, probe)
        if needed > 0 and needed > self._metrics(account).available + 1e-9:
            raise SimError(E_INSUFFICIENT_BALANCE, "Insufficient available balance")

    def _execute_block_leg(self, account: Account, leg: QuoteLeg, block_trade_id: int) -> dict[str, Any]:
        """One taker-side block fill: an order with tradeType 14, price = mark, avgPrice = quote price."""
        quote = self.market.quote(leg.symbol)
        instrument = self._instrument(leg.symbol)
        side = _side_code(rfq_opposite(leg.side))
        order = Order(order_id=self._ids.next(), user_id=account.user_id, symbol=leg.symbol, side=side,
                      trade_type=TT_BLOCK, time_in_force="GTC", price=quote.mark, lots=leg.lots, reduce_only=False,
                      client_order_id=None, create_ms=self._now, update_ms=self._now,
                      index_at_create=self._index_for(leg.symbol))
        self._orders.add(order)
        self._live.add(order.order_id)
        self._fill(order, leg.lots, leg.price, is_taker=True, fee_rate=self.config.block_taker_fee_rate,
                   report_price=quote.mark, block_trade_id=block_trade_id)
        fill = self._fills[order.fill_ids[-1]]
        return {
            "instrumentName": leg.symbol,
            "baseToken": instrument.base,
            "quoteToken": "USDT",
            "side": _side_name(side),
            "price": num_str(leg.price),
            "quantity": self._qty_text(leg.symbol, leg.lots),
            "iv": num_str(quote.iv, 6),
            "markPrice": num_str(quote.mark),
            "indexPrice": num_str(self._index_for(leg.symbol), 2),
            "orderId": str(order.order_id),
            "tradeId": str(fill.trade_id),
            "fee": num_str(fill.fee),
            "createTime": self._now,
            "profit": num_str(fill.realized),
        }

    @_locked
    def rfq_cancel(self, account: Account | None, params: dict) -> bool:
        account = self._require_trading(account)
        self._sync_now()
        request_id = self._parse_rfq_id(params, "requestId")
        self._desk.cancel(account.user_id, request_id, self._now)
        return True

    @_locked
    def rfq_list(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        if not account.rfq_maker_access:
            raise SimError(404, "Not Found", http_status=404)
        self._sync_now()
        start, end = self._time_window(params, default_ms=3 * DAY_MS)
        wanted_state = str(params.get("state") or "").upper()
        request_id = _opt_int(params, "requestId", None)
        items = []
        for rfq in self._desk.rfqs_of(account.user_id):
            if request_id is not None and rfq.request_id != request_id:
                continue
            if not start <= rfq.create_ms <= end:
                continue
            if wanted_state == "OPEN" and rfq.state != "ACTIVE":
                continue
            if wanted_state == "CLOSED" and rfq.state == "ACTIVE":
                continue
            items.append({
                "requestId": str(rfq.request_id), "state": rfq.state, "role": "TAKER",
                "createTime": rfq.create_ms, "expiryTime": rfq.expiry_ms, "updateTime": rfq.update_ms,
                "legs": [{"instrumentName": leg.symbol, "side": leg.side, "quantity": self._qty_text(leg.symbol, leg.lots)}
                         for leg in rfq.legs],
            })
        return {"userId": str(account.user_id), "rfqList": items}

    def _block_trade_view(self, trade: BlockTrade) -> dict[str, Any]:
        return {
            "blockTradeId": str(trade.block_trade_id), "requestId": str(trade.request_id),
            "quoteId": str(trade.quote_id), "userId": str(trade.user_id), "role": "TAKER", "state": "FILLED",
            "createTime": trade.time_ms, "legs": [dict(leg) for leg in trade.legs],
        }

    def _block_trade_page(self, account: Account, params: dict, max_size: int,
                          symbol: str | None) -> dict[str, Any]:
        size, from_id, direction = self._cursor_args(params, max_size)
        wanted = _opt_int(params, "blocktradeId", None)
        trades = [t for t in self._block_trades if t.user_id == account.user_id
                  and (wanted is None or t.block_trade_id == wanted)
                  and (symbol is None or any(leg["instrumentName"] == symbol for leg in t.legs))]
        trades.sort(key=lambda t: t.block_trade_id, reverse=True)
        page, has_next, has_pre = _cursor_page(trades, lambda t: t.block_trade_id, from_id, direction, size)
        return {"list": [self._block_trade_view(t) for t in page], "hasNext": has_next, "hasPre": has_pre}

    @_locked
    def blocktrade_order_list(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        self._sync_now()
        return self._block_trade_page(account, params, HISTORY_MAX_PAGE - 1, None)

    @_locked
    def blocktrade_trade_detail(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        self._sync_now()
        symbol = params.get("symbol") if _present(params, "symbol") else None
        return self._block_trade_page(account, params, 49, symbol)

    # =========================================================================== handlers: perpetuals
    #
    # API.md §14.4-14.7. Perpetual orders are ``Order``s like the options' (same ids, matching,
    # passive fills, cancel machinery, fills and one-way positions); these handlers add the
    # futures routes' validation and views. Option routes never see them, and the other way round.

    def _perp_of(self, symbol: Any) -> PerpMarket:
        """The perpetual ``symbol`` names (``BTCUSD``, also ``BTC-USD``), or 10574."""
        if not isinstance(symbol, str) or not symbol.strip():
            raise SimError(E_PARAM_ERROR, "Parameter symbol illegal")
        perp = self.market.perp(symbol.strip().upper().replace("-", ""))
        if perp is None:
            raise SimError(E_UNKNOWN_INSTRUMENT, "Instrument ID does not exist")
        return perp

    def _perp_price(self, perp: PerpMarket, value: Any) -> float:
        """A limit price on the perpetual's tick (truncated, or 40035 with ``off_tick="reject"``)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise SimError(E_ENTER_PRICE, "Please enter price")
        price = parse_float(value, "price")
        if price <= 0:
            raise SimError(E_PRICE_ILLEGAL, "Price illegal")
        snapped = perp.snap_price(price)
        if abs(snapped - price) > 1e-9 and self.config.off_tick == "reject":
            raise SimError(E_PRICE_ILLEGAL, "Price illegal")
        if snapped <= 0:
            raise SimError(E_PRICE_ILLEGAL, "Price illegal")
        band = perp.config.price_band_pct / 100.0
        mark = perp.mark_price()
        if snapped > mark * (1 + band) + 1e-9:
            raise SimError(E_PRICE_ABOVE_MAX, "Order price above the max limit")
        if snapped < mark * (1 - band) - 1e-9:
            raise SimError(E_PRICE_BELOW_MIN, "Order price below the min limit")
        return snapped

    def _perp_client_id_taken(self, account: Account, client_id: int) -> bool:
        matches = [o for o in self._orders.with_client_order_id(account.user_id, client_id) if self._is_perp(o.symbol)]
        if self.config.perp.client_order_id_scope == "open":
            return any(o.is_live for o in matches)
        return bool(matches)

    def _build_perp_order(self, account: Account, params: dict) -> Order:
        """Validate a futures create request (API.md §14.5); returns an unsaved order."""
        settings = self.config.perp
        perp = self._perp_of(params.get("symbol"))
        cfg = perp.config
        side = parse_int(params.get("tradeSide"), "tradeSide") if _present(params, "tradeSide") else None
        if side not in (SIDE_BUY, SIDE_SELL):
            raise SimError(E_PARAM_ERROR, "Parameter tradeSide illegal")
        if not _present(params, "tradeType"):
            raise SimError(E_PARAM_ERROR, "Parameter tradeType illegal")
        trade_type = parse_int(params["tradeType"], "tradeType", E_PARAM_ILLEGAL)
        if trade_type not in (TT_LIMIT, TT_MARKET, TT_POST_ONLY):
            raise SimError(E_PARAM_ILLEGAL, "Parameter illegal: tradeType (stop orders are not simulated)")
        mark = perp.mark_price()
        if trade_type == TT_MARKET:
            if _present(params, "timeInForce"):
                raise SimError(E_MARKET_NO_TIF, "Market orders do not take timeInForce")
            if _present(params, "price"):
                raise SimError(E_MARKET_NO_PRICE, "Market orders do not take a price")
            tif = "IOC"
            slip = cfg.market_slippage_pct / 100.0
            price = perp.snap_price(mark * (1 + slip)) if side == SIDE_BUY else perp.snap_price(mark * (1 - slip))
            lots = self._parse_qty_lots(params.get("qty"), cfg.units, cfg.minimum_qty, cfg.market_max_qty)
        else:
            tif = str(params["timeInForce"]).upper() if _present(params, "timeInForce") else "GTC"
            if tif not in TIME_IN_FORCE or (tif == "FOK" and not settings.allow_fok):
                raise SimError(E_BAD_TIME_IN_FORCE, "Invalid timeInForce. Supported values: GTC | IOC")
            lots = self._parse_qty_lots(params.get("qty"), cfg.units, cfg.minimum_qty, cfg.limit_max_qty)
            price = self._perp_price(perp, params.get("price"))
        client_id = _opt_int(params, "clientOrderId")
        reduce_only = parse_flag(params["reduceOnly"], "reduceOnly") if _present(params, "reduceOnly") else False
        if client_id is not None and self._perp_client_id_taken(account, client_id):
            raise SimError(E_DUPLICATE_CLIENT_ID, "Duplicated client order ID")
        if len(self._account_live_orders(account, perps=True)) >= cfg.max_open_orders:
            raise SimError(E_TOO_MANY_ORDERS, "Number of orders exceeds the max")
        if reduce_only:
            position = self._position_lots(account, cfg.symbol)
            reducible = max(0, -position) if side == SIDE_BUY else max(0, position)
            if reducible == 0:
                raise SimError(E_INSUFFICIENT_POSITION, "Insufficient open positions")
            if lots > reducible:
                if settings.reduce_only_excess == "refuse":
                    raise SimError(E_INSUFFICIENT_POSITION, "Insufficient open positions")
                lots = reducible
        order = Order(order_id=0, user_id=account.user_id, symbol=cfg.symbol, side=side, trade_type=trade_type,
                      time_in_force=tif, price=price, lots=lots, reduce_only=reduce_only, client_order_id=client_id,
                      create_ms=self._now, update_ms=self._now, index_at_create=perp.index_price())
        if trade_type == TT_POST_ONLY and self._would_cross(order):
            raise SimError(settings.post_only_cross_code, "Operation not allowed: post-only order would cross")
        probe = order if trade_type != TT_MARKET else Order(**{**asdict(order), "price": mark})
        reserve = self._order_reserve(account, probe)
        if reserve > 0 and reserve > self._metrics(account).available + 1e-9:
            raise SimError(E_INSUFFICIENT_BALANCE, "Insufficient available balance")
        return order

    def _perp_order_view(self, account: Account, order: Order, *, lagged: bool = True) -> dict[str, Any]:
        """singleQuery (API.md §14.5): the order view plus leverage; a market order shows price 0."""
        view = self._order_view(order, lagged=lagged)
        perp = self.market.perp(order.symbol)
        if order.trade_type == TT_MARKET:
            view["price"] = 0.0
        view["leverage"] = self._leverage(account, perp) if perp is not None else 1
        view.pop("mmp", None)
        view.pop("userId", None)
        return view

    @_locked
    def futures_instruments(self, account: Account | None, params: dict) -> list[dict]:
        """``futures/market/instruments`` (§3.1): every value a string except the timestamp."""
        self._sync_now()
        out = []
        for perp in self.market.perps():
            cfg = perp.config
            ticker = perp.ticker()
            stats = self._perp_stats(cfg.symbol)
            last = stats["last"] or ticker.mark_price
            open_interest = sum(max(0, a.positions[cfg.symbol].lots) for a in self._accounts_by_uid.values()
                                if cfg.symbol in a.positions) / cfg.units
            rate = perp.estimated_funding_rate(self._now)
            out.append({
                "ticker_id": f"{cfg.base}-USD", "base_currency": cfg.base, "quote_currency": "USD",
                "last_price": num_str(last), "base_volume": num_str(stats["volume"]),
                "usd_volume": num_str(stats["volume_usd"]), "quote_volume": num_str(stats["volume_usd"]),
                "bid": num_str(ticker.bid), "ask": num_str(ticker.ask),
                "high": num_str(stats["high"] or last), "low": num_str(stats["low"] or last),
                "product_type": "Perpetual", "open_interest": num_str(open_interest),
                "open_interest_usd": num_str(open_interest * ticker.mark_price),
                "index_price": num_str(ticker.index_price), "funding_rate": num_str(rate),
                "next_funding_rate": num_str(rate), "next_funding_rate_timestamp": next_funding_after(self._now),
                "contract_type": "Vanilla", "contract_price": num_str(ticker.mark_price),
                "contract_price_currency": "USD",
            })
        return out

    def _perp_book_levels(self, symbol: str, depth: int) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
        bids, asks = self._public_book(symbol)
        return bids[:depth], asks[:depth]

    @_locked
    def futures_market_orderbook(self, account: Account | None, params: dict) -> dict:
        """``futures/market/orderbook?symbol=BTC-USD&depth=`` (§3.3): [price, size] string pairs."""
        self._sync_now()
        perp = self._perp_of(params.get("symbol"))
        depth = _opt_int(params, "depth", 1) or 1
        if depth not in (1, 10, 20, 50, 100):
            raise SimError(E_PARAM_ERROR, "Parameter depth illegal")
        bids, asks = self._perp_book_levels(perp.symbol, depth)
        return {"symbol": f"{perp.base}-USD",
                "bids": [[num_str(p), self._qty_text(perp.symbol, lots)] for p, lots in bids],
                "asks": [[num_str(p), self._qty_text(perp.symbol, lots)] for p, lots in asks],
                "timestamp": self._now}

    @_locked
    def futures_orderbook(self, account: Account | None, params: dict) -> dict:
        """``futures/order/orderbook/v1/{symbol}`` (§3.3): up to 100 levels of {size, price} strings."""
        self._sync_now()
        perp = self._perp_of(params.get("symbol"))
        bids, asks = self._perp_book_levels(perp.symbol, 100)
        return {"symbol": perp.symbol,
                "bids": [{"size": self._qty_text(perp.symbol, lots), "price": num_str(p)} for p, lots in bids],
                "asks": [{"size": self._qty_text(perp.symbol, lots), "price": num_str(p)} for p, lots in asks]}

    @_locked
    def futures_last_trades(self, account: Account | None, params: dict) -> list[dict]:
        """``futures/trade/lasttrade/v1/{symbol}`` (API.md §14.4): the 100 newest prints, newest first."""
        self._sync_now()
        perp = self._perp_of(params.get("symbol"))
        prints: list[Fill] = []
        for fill in self._fills.newest_on_symbol(perp.symbol):
            if fill.is_taker:
                prints.append(fill)
                if len(prints) == 100:
                    break
        prints.sort(key=lambda f: f.trade_id, reverse=True)
        return [{"symbol": f.symbol, "price": num_str(f.price), "qty": self._qty_text(f.symbol, f.lots),
                 "time": f.time_ms, "tradeSide": f.side} for f in prints]

    @_locked
    def funding_rate(self, account: Account | None, params: dict) -> list[dict]:
        """``public/fundingRate`` (API.md §14.4): the running period's rate per perpetual (``symbol`` a comma list)."""
        self._sync_now()
        wanted = None
        if _present(params, "symbol"):
            wanted = {s.strip().upper() for s in str(params["symbol"]).split(",") if s.strip()}
        out = []
        for perp in self.market.perps():
            if wanted is not None and perp.symbol not in wanted:
                continue
            out.append({"symbol": perp.symbol, "rate": f"{perp.estimated_funding_rate(self._now):.8f}",
                        "contractId": str(perp.config.contract_id), "nextFundingTime": next_funding_after(self._now),
                        "ts": self._now})
        return out

    @_locked
    def futures_create_order(self, account: Account | None, params: dict) -> int:
        account = self._require_trading(account)
        self._sync_now()
        order = self._build_perp_order(account, params)
        order.order_id = self._ids.next()
        self._orders.add(order)
        self._live.add(order.order_id)
        self._match_taker(order)
        return order.order_id

    @_locked
    def futures_modify_order(self, account: Account | None, params: dict) -> int:
        """Amend price and/or qty of an open limit order (API.md §14.5); answers the same orderId."""
        account = self._require_trading(account)
        self._sync_now()
        perp = self._perp_of(params.get("symbol"))
        order = self._find_order(account, params, perps=True)
        if order.symbol != perp.symbol:
            raise SimError(E_PARAM_ERROR, "Parameter symbol mismatch")
        if order.state not in (ST_NEW, ST_PARTIAL) or order.trade_type == TT_MARKET:
            raise SimError(E_NOT_ALLOWED, "Operation not allowed: order is not open")
        cfg = perp.config
        new_price = self._perp_price(perp, params["price"]) if _present(params, "price") else order.price
        new_lots = (self._parse_qty_lots(params["qty"], cfg.units, cfg.minimum_qty, cfg.limit_max_qty)
                    if _present(params, "qty") else order.lots)
        return self._apply_amend(order, new_price, new_lots, post_only_cross_code=self.config.perp.post_only_cross_code)

    @_locked
    def futures_cancel_order(self, account: Account | None, params: dict) -> None:
        """Cancel by orderId or clientOrderId (API.md §14.5); ``data`` is null (the options answer "success")."""
        account = self._require_trading(account)
        self._sync_now()
        self._request_cancel(self._find_order(account, params, perps=True))
        return None

    @_locked
    def futures_batch_cancel(self, account: Account | None, params: dict) -> list[dict]:
        """API.md §14.5: ``orderIdList`` wins over ``clientOrderIdList``; one ack per id (scode 0 ok, 1 failed)."""
        account = self._require_trading(account)
        self._sync_now()
        return self._batch_cancel(account, params, perps=True)

    @_locked
    def futures_cancel_open_orders(self, account: Account | None, params: dict) -> None:
        """``cancelOpenOrders/v1/{symbol}`` (API.md §14.5, a mutating GET): every open order of that perpetual."""
        account = self._require_trading(account)
        self._sync_now()
        perp = self._perp_of(params.get("symbol"))
        for order in self._account_live_orders(account, perps=True):
            if order.symbol == perp.symbol and order.state in (ST_NEW, ST_PARTIAL):
                self._request_cancel(order)
        return None

    @_locked
    def futures_query_order(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        self._sync_now()
        return self._perp_order_view(account, self._find_order(account, params, perps=True))

    @_locked
    def futures_pending_orders(self, account: Account | None, params: dict) -> dict:
        """API.md §14.5: open orders newest first, paged; items without fee/updateTime/state, with id and initMargin."""
        account = self._require(account)
        self._sync_now()
        page = max(1, _opt_int(params, "page", 1) or 1)
        size = min(max(1, _opt_int(params, "pageSize", 20) or 20), PENDING_MAX_PAGE)
        symbol = str(params["symbol"]).upper().replace("-", "") if _present(params, "symbol") else None
        lag_ms = int(round(self.config.pending_list_lag_seconds * 1000))
        views = []
        for order in self._pending_candidates(account, perps=True):
            if order.create_ms > self._now - lag_ms or (symbol and order.symbol != symbol):
                continue
            view = self._perp_order_view(account, order)
            if view["state"] not in LIVE_STATES:
                continue
            for hidden in ("fee", "updateTime", "state", "rpnl"):
                view.pop(hidden, None)
            view["id"] = order.order_id
            view["initMargin"] = _money(self._order_reserve(account, order))
            view["expression"] = None
            view["triggerPrice"] = None
            views.append(view)
        views.sort(key=lambda v: v["orderId"], reverse=True)
        total = len(views)
        start = (page - 1) * size
        return {"list": views[start:start + size], "pageTotal": -(-total // size) if total else 0, "total": total}

    @_locked
    def futures_order_history(self, account: Account | None, params: dict) -> dict:
        """API.md §14.6: ``pageSize`` required; cursor ``fromId`` (+ ``direction``), default window the last 24 h."""
        account = self._require(account)
        self._sync_now()
        if not _present(params, "pageSize"):
            raise SimError(E_PARAM_ERROR, "Parameter pageSize required")
        size, from_id, direction = self._cursor_args(params, HISTORY_MAX_PAGE)
        start, end = self._time_window(params)
        symbol = str(params["symbol"]).upper().replace("-", "") if _present(params, "symbol") else None
        orders = [o for o in self._orders.created_between(account.user_id, start, end)
                  if self._is_perp(o.symbol) and (symbol is None or o.symbol == symbol)]
        orders.sort(key=lambda o: o.order_id, reverse=True)
        page, has_next, has_pre = _cursor_page(orders, lambda o: o.order_id, from_id, direction, size)
        items = []
        for order in page:
            view = self._perp_order_view(account, order)
            for hidden in ("remainQty", "updateTime", "timeInForce"):
                view.pop(hidden, None)
            view["expression"] = None
            view["triggerPrice"] = None
            items.append(view)
        return {"list": items, "hasNext": has_next, "hasPre": has_pre}

    @_locked
    def futures_trade_history(self, account: Account | None, params: dict) -> dict:
        """API.md §14.6: fills newest first; no clientOrderId (join on orderId); ``contractId``/``markPrice`` null."""
        account = self._require(account)
        self._sync_now()
        size, from_id, direction = self._cursor_args(params, HISTORY_MAX_PAGE)
        start, end = self._time_window(params)
        symbol = str(params["symbol"]).upper().replace("-", "") if _present(params, "symbol") else None
        lag_ms = int(round(self.faults.fill_report_lag_seconds * 1000))
        fills = [f for f in self._fills.of_user_between(account.user_id, start, min(end, self._now - lag_ms))
                 if self._is_perp(f.symbol) and (symbol is None or f.symbol == symbol)]
        fills.sort(key=lambda f: f.trade_id, reverse=True)
        page, has_next, has_pre = _cursor_page(fills, lambda f: f.trade_id, from_id, direction, size)
        items = []
        for fill in page:
            perp = self.market.perp(fill.symbol)
            items.append({
                "id": fill.trade_id, "contractId": None, "symbol": fill.symbol,
                "displayName": self._display_name(fill.symbol), "tradeSide": fill.side,
                "tradeType": fill.trade_type, "price": fill.price, "qty": self._qty_of(fill.symbol, fill.lots),
                "markPrice": None, "indexPrice": _money(fill.index), "orderId": fill.order_id,
                "tradeId": fill.trade_id, "fee": fill.fee, "time": fill.time_ms,
                "leverage": self._leverage(account, perp) if perp is not None else 1,
                "isTaker": 1 if fill.is_taker else 0,
            })
        return {"list": items, "hasNext": has_next, "hasPre": has_pre}

    def _liquidation_price(self, numbers: dict[str, float], perp: PerpMarket, metrics: AccountMetrics) -> float | None:
        """The price of this perpetual at which the account's equity would fall to its maintenance margin,
        everything else held at today's marks (cross margin); None when no positive price does it.

        equity(P) = E + s q (P - M) and MM(P) = MMt + q f (P - M) give P = M + (MMt - E) / (q (s - f)).
        """
        qty, sign, mark = numbers["qty"], numbers["sign"], numbers["mark"]
        fee = perp.config.liquidation_fee_rate
        if qty <= 0:
            return None
        price = mark + (metrics.mm_positions - metrics.equity) / (qty * (sign - fee))
        return _money(price) if price > 0 else None

    def _perp_position_view(self, account: Account, position: Position, metrics: AccountMetrics) -> dict[str, Any]:
        perp = self.market.perp(position.symbol)
        assert perp is not None, "perpetual positions only"
        numbers = self._perp_numbers(account, position, perp)
        qty = numbers["qty"]
        value = numbers["value"]
        return {
            "id": position.position_id, "positionId": position.position_id, "updateTime": position.update_ms,
            "userId": account.user_id, "symbol": position.symbol, "displayName": perp.config.display_name,
            "baseToken": perp.base, "quoteToken": "USD", "qty": self._qty_of(position.symbol, abs(position.lots)),
            "tradeSide": SIDE_BUY if position.lots > 0 else SIDE_SELL, "avgPrice": _money(position.avg_price),
            "markPrice": numbers["mark"], "indexPrice": _money(numbers["index"]), "value": _money(value),
            "initMargin": _money(numbers["im"]), "maintMargin": _money(numbers["mm"]),
            "upnl": _money(numbers["upnl_mark"]), "roi": round(numbers["upnl_mark"] / value, 8) if value > 0 else 0.0,
            "rspl": _money(position.rspl), "elp": self._liquidation_price(numbers, perp, metrics),
            "leverage": int(numbers["leverage"]), "delta": round(qty * numbers["sign"], 8),
        }

    @_locked
    def futures_positions(self, account: Account | None, params: dict) -> list[dict]:
        """API.md §14.7: one-way positions, ``qty`` positive with ``tradeSide``; ``delta`` signed (+ long, - short)."""
        account = self._require(account)
        self._sync_now()
        symbol = str(params["symbol"]).upper().replace("-", "") if _present(params, "symbol") else None
        metrics = self._metrics(account)
        return [self._perp_position_view(account, account.positions[s], metrics) for s in sorted(account.positions)
                if self._is_perp(s) and (symbol is None or s == symbol)]

    @_locked
    def futures_leverage(self, account: Account | None, params: dict) -> dict:
        account = self._require(account)
        self._sync_now()
        perp = self._perp_of(params.get("symbol"))
        return {"userId": account.user_id, "symbol": perp.symbol, "currentLeverage": self._leverage(account, perp)}

    @_locked
    def futures_set_leverage(self, account: Account | None, params: dict) -> None:
        """API.md §14.7: 1..max_leverage; 40038 while the account holds a perpetual position or open order
        (``PerpSettings.leverage_lock_scope``: any perpetual, or only this symbol)."""
        account = self._require_trading(account)
        self._sync_now()
        perp = self._perp_of(params.get("symbol"))
        leverage = parse_int(params.get("leverage"), "leverage") if _present(params, "leverage") else 0
        if not 1 <= leverage <= perp.config.max_leverage:
            raise SimError(E_PARAM_ERROR, "Parameter leverage illegal")
        same_symbol = self.config.perp.leverage_lock_scope == "symbol"
        busy = any(self._is_perp(s) and (not same_symbol or s == perp.symbol) for s in account.positions) or any(
            not same_symbol or o.symbol == perp.symbol for o in self._account_live_orders(account, perps=True))
        if busy:
            raise SimError(E_LEVERAGE_LOCKED, "Leverage cannot be changed with open positions or orders")
        account.leverage[perp.symbol] = leverage
        return None

    def _funding_view(self, record: FundingRecord) -> dict[str, Any]:
        return {"id": record.record_id, "symbol": record.symbol, "displayName": f"{record.symbol[:-3]}USDT Perp",
                "tradeSide": record.trade_side, "qty": self._qty_of(record.symbol, record.lots),
                "fundFee": record.fund_fee, "fundRate": record.fund_rate, "ctime": record.time_ms}

    @_locked
    def funding_records(self, account: Account | None, params: dict) -> dict:
        """§6.1: own funding payments of one perpetual (``symbol`` required), newest first, paged (<= 50)."""
        account = self._require(account)
        self._sync_now()
        perp = self._perp_of(params.get("symbol"))
        size = _opt_int(params, "pageSize", 20) or 20
        if not 1 <= size <= 50:
            raise SimError(E_PARAM_ERROR, "Parameter pageSize must be within 1..50")
        page = max(1, _opt_int(params, "page", 1) or 1)
        start, end = self._time_window(params, default_ms=None)
        records = [r for r in self._funding if r.user_id == account.user_id and r.symbol == perp.symbol
                   and start <= r.time_ms <= end]
        records.sort(key=lambda r: r.record_id, reverse=True)
        total = len(records)
        chunk = records[(page - 1) * size:page * size]
        return {"list": [self._funding_view(r) for r in chunk], "pageTotal": -(-total // size) if total else 0,
                "total": total}

    @_locked
    def funding_latest_records(self, account: Account | None, params: dict) -> dict:
        """§6.2: payments since ``startTime`` (default now - 8 h; must be within the last 24 h)."""
        account = self._require(account)
        self._sync_now()
        symbol = self._perp_of(params["symbol"]).symbol if _present(params, "symbol") else None
        start = _opt_int(params, "startTime", None)
        if start is None:
            start = self._now - FUNDING_INTERVAL_MS
        elif start <= self._now - DAY_MS:
            raise SimError(E_PARAM_ERROR, "Parameter startTime must be within the last 24 hours")
        records = [r for r in self._funding if r.user_id == account.user_id and r.time_ms >= start
                   and (symbol is None or r.symbol == symbol)]
        records.sort(key=lambda r: r.record_id, reverse=True)
        return {"list": [self._funding_view(r) for r in records]}

    # =========================================================================== inspection (tests)

    def _account_arg(self, account: Account | None) -> Account:
        return account if account is not None else self.default_account

    @_locked
    def orders(self, account: Account | None = None) -> list[dict]:
        """True (unlagged) views of an account's orders, oldest first."""
        self._sync_now()
        account = self._account_arg(account)
        return [self._order_view(o, lagged=False) for o in sorted(self._orders.values(), key=lambda o: o.order_id)
                if o.user_id == account.user_id]

    @_locked
    def _inspected_fill(self, fill: Fill) -> dict[str, Any]:
        """A fill's wire view plus what only an inspector sees: ``fillPrice`` (the real price) and
        the order's ``clientOrderId`` (the wire's trade history does not carry it, API.md 8.6)."""
        view = self._fill_view(fill)
        order = self._orders.get(fill.order_id) or self._forgotten_orders.get(fill.order_id)
        view["clientOrderId"] = order.client_order_id if order else None
        view["fillPrice"] = fill.price
        return view

    def fills(self, account: Account | None = None) -> list[dict]:
        """Every fill of an account (unlagged), oldest first; adds ``fillPrice`` (the real price)
        and the order's ``clientOrderId`` (``_inspected_fill``)."""
        self._sync_now()
        account = self._account_arg(account)
        out = []
        for fill in self._fills.values():
            if fill.user_id == account.user_id:
                view = self._inspected_fill(fill)
                out.append(view)
        return out

    @_locked
    def forgotten_orders(self, account: Account | None = None) -> list[dict]:
        """Orders a restart without state made the exchange forget (true views, oldest first).

        Not reachable over the API: the exchange's own record, for invariants such as
        "no clientOrderId reused" that must hold across a forget_orders/forget_all.
        """
        account = self._account_arg(account)
        return [self._order_view(o, lagged=False) for o in sorted(self._forgotten_orders.values(),
                                                                  key=lambda o: o.order_id)
                if o.user_id == account.user_id]

    @_locked
    def forgotten_fills(self, account: Account | None = None) -> list[dict]:
        """Fills a ``forget_all`` erased (views with ``fillPrice``, oldest first); see ``forgotten_orders``."""
        account = self._account_arg(account)
        out = []
        for fill in sorted(self._forgotten_fills.values(), key=lambda f: f.trade_id):
            if fill.user_id == account.user_id:
                view = self._inspected_fill(fill)
                out.append(view)
        return out

    @_locked
    def position_of(self, account: Account | None, symbol: str) -> float:
        """Signed position in units of the underlying (+ long, - short, 0 flat); options and perpetuals."""
        self._sync_now()
        return self._qty_of(symbol, self._position_lots(self._account_arg(account), symbol))

    @_locked
    def set_position(self, account: Account | None, symbol: str, signed_qty: float, avg_price: float) -> None:
        """Create or replace a position by hand (a manual/foreign position); qty 0 removes it."""
        account = self._account_arg(account)
        if self.market.instrument(symbol) is None and not self._is_perp(symbol):
            raise KeyError(symbol)
        lots = self._lots_of(symbol, signed_qty)
        if lots == 0:
            account.positions.pop(symbol, None)
            return
        account.positions[symbol] = Position(symbol=symbol, lots=lots, avg_price=float(avg_price),
                                             position_id=self._ids.next(), open_ms=self._now, update_ms=self._now)

    @_locked
    def funding_history(self, account: Account | None = None) -> list[dict]:
        """Every funding payment of an account (views as ``settle/future/record``, oldest first)."""
        self._sync_now()
        account = self._account_arg(account)
        return [self._funding_view(r) for r in self._funding if r.user_id == account.user_id]

    @_locked
    def perp_mark(self, symbol: str) -> float:
        """The mark price of perpetual ``symbol`` now (KeyError for an unknown one)."""
        self._sync_now()
        perp = self.market.perp(symbol)
        if perp is None:
            raise KeyError(symbol)
        return perp.mark_price()

    @_locked
    def cash_of(self, account: Account | None = None) -> float:
        self._sync_now()
        return float(self._account_arg(account).cash or 0.0)

    @_locked
    def metrics_of(self, account: Account | None = None) -> AccountMetrics:
        self._sync_now()
        return self._metrics(self._account_arg(account))

    @_locked
    def force_fill(self, order_id: int, qty: float, price: float | None = None, is_taker: bool = False) -> float:
        """Fill a live order now (scripted market activity); returns the quantity actually filled
        (units of the underlying: BTC or ETH; options and perpetuals alike)."""
        self._sync_now()
        order = self._orders[order_id]
        if not order.is_live:
            return 0.0
        lots = self._fill(order, self._lots_of(order.symbol, qty), order.price if price is None else price, is_taker)
        return self._qty_of(order.symbol, lots)

    @_locked
    def inject_rfq_quote(self, request_id: int | str, legs: Iterable[tuple[str, str, float, float]],
                         maker_index: int = 0, validity_seconds: float | None = None) -> str:
        """Post a hand-made quote (symbol, maker side, price, qty per leg); returns its quoteId."""
        self._sync_now()
        quote_legs = [QuoteLeg(symbol=s, side=side, price=float(price), lots=self._lots_of(s, qty))
                      for s, side, price, qty in legs]
        validity_ms = None if validity_seconds is None else int(round(validity_seconds * 1000))
        quote = self._desk.post_quote(int(request_id), quote_legs, self._now, maker_index, validity_ms)
        return str(quote.quote_id)

    @_locked
    def rfq_state(self, request_id: int | str) -> str | None:
        self._sync_now()
        rfq = self._desk.rfq(int(request_id))
        return rfq.state if rfq else None

    @_locked
    def delivery_fee_kind(self, expiry_ms: int) -> str | None:
        return self.market.expiry_kind(expiry_ms)

    # =========================================================================== persistence

    @_locked
    def to_state(self) -> dict[str, Any]:
        """Everything to continue exactly where this exchange is (JSON-serialisable; holds secrets)."""
        return {
            "state_version": STATE_VERSION,
            "now_ms": self._now,
            "last_step": self._last_step,
            "id_counter": self._ids.counter,
            "accounts": [{
                "user_id": a.user_id, "api_key": a.api_key, "api_secret": a.api_secret, "name": a.name,
                "read_only": a.read_only, "rfq_maker_access": a.rfq_maker_access, "email": a.email,
                "cash": a.cash, "positions": [asdict(p) for p in a.positions.values()],
                "leverage": dict(a.leverage),
            } for a in self._accounts_by_uid.values()],
            "funding": [asdict(r) for r in self._funding],
            "funding_done_ms": self._funding_done_ms,
            "orders": [asdict(o) for o in self._orders.values()],
            "fills": [asdict(f) for f in self._fills.values()],
            "exercises": [asdict(r) for r in self._exercises],
            "block_trades": [asdict(t) for t in self._block_trades],
            "consumed": {s: _consumed_copy(u) for s, u in self._consumed.items()},
            "last_price": dict(self._last_price),
            "pending_expiries": sorted(self._pending_expiries),
            "settled_expiries": list(self._settled_expiries),
            "faults": asdict(self.faults),
            "rfq": self._desk.to_state(),
            "forgotten_orders": [asdict(o) for o in self._forgotten_orders.values()],
            "forgotten_fills": [asdict(f) for f in self._forgotten_fills.values()],
        }

    @classmethod
    def from_state(cls, config: ExchangeConfig, market: Any, clock: Any, state: dict[str, Any]) -> "SimExchange":
        """Rebuild an exchange saved by ``to_state``."""
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"unsupported exchange state version {state.get('state_version')!r}")
        accounts = []
        for raw in state["accounts"]:
            positions = {p["symbol"]: Position(**p) for p in raw.get("positions", [])}
            accounts.append(Account(user_id=raw["user_id"], api_key=raw["api_key"], api_secret=raw["api_secret"],
                                    name=raw.get("name", "paper"), read_only=raw.get("read_only", False),
                                    rfq_maker_access=raw.get("rfq_maker_access", False),
                                    email=raw.get("email", ""), cash=raw.get("cash"), positions=positions,
                                    leverage={str(k): int(v) for k, v in raw.get("leverage", {}).items()}))
        exchange = cls(config, market, clock, accounts=accounts)
        with exchange._lock:
            exchange._now = max(int(state["now_ms"]), exchange._now)
            exchange._last_step = int(state["last_step"])
            exchange._ids.counter = int(state["id_counter"])
            exchange._orders = OrderRecords(Order(**o) for o in state["orders"])
            exchange._live = {o.order_id for o in exchange._orders.values() if o.is_live}
            exchange._fills = FillRecords(Fill(**f) for f in state["fills"])
            exchange._exercises = [ExerciseRecord(**r) for r in state["exercises"]]
            exchange._block_trades = [BlockTrade(**t) for t in state["block_trades"]]
            exchange._consumed = {s: _consumed_copy(u) for s, u in state.get("consumed", {}).items()}
            exchange._last_price = dict(state.get("last_price", {}))
            exchange._pending_expiries = set(int(e) for e in state.get("pending_expiries", []))
            exchange._settled_expiries = [int(e) for e in state.get("settled_expiries", [])]
            exchange._pending_expiries -= set(exchange._settled_expiries)
            for name, value in state.get("faults", {}).items():
                if hasattr(exchange.faults, name):
                    setattr(exchange.faults, name, value)
            exchange._desk.load_state(state.get("rfq", {}))
            exchange._forgotten_orders = {o["order_id"]: Order(**o) for o in state.get("forgotten_orders", [])}
            exchange._forgotten_fills = {f["trade_id"]: Fill(**f) for f in state.get("forgotten_fills", [])}
            exchange._funding = [FundingRecord(**r) for r in state.get("funding", [])]
            if "funding_done_ms" in state:
                exchange._funding_done_ms = int(state["funding_done_ms"])
        return exchange
