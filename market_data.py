"""Market data with enforced freshness: instruments, index, option chains, order books.

Why this module exists (BEHAVIOUR.md §3.1, §7.2; API.md §6, §11.8-11, 19, 21):

* Every datum carries the clock time of its fetch, and the TTL is enforced on **every** read
  path: an entry older than its limit is never returned, it is refetched. A cache that served
  expired entries once re-stamped an old index as fresh and froze the index for hours.
* There is no constant or fallback price anywhere. A failed fetch raises
  (``ExchangeError`` / ``TransportError`` / ``StaleDataError``); nothing returns empty.
* Greeks, IV and top of book come from the option chain: **one call per expiry**, never one
  option-detail call per strike.
* The exchange speaks camelCase with numbers sometimes as strings; exactly one adapter
  (the ``_*_from_api`` functions below) turns payloads into the dataclasses of this module.
* A frozen index (same value on >= 3 fresh reads spanning >= 60 s) is flagged, logged as a
  WARNING and alerted, until the value changes.

Thread safety: one lock guards the caches, the counters and the frozen-index tracker; it is
never held across an HTTP request (two threads may then fetch the same thing twice, which
costs a call but never serves stale data; a slower, older answer never replaces a newer one).
"""
from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

from api_values import finite_number
from clock import Clock
from errors import SelectionError, StaleDataError, TraderError

logger = logging.getLogger(__name__)

# The exchange fills an unknown IV with Double.MAX (API.md §6.2, ``lastPriceIv``).
_IV_SENTINEL_FLOOR = 1e300
_EXPIRY_HOUR_UTC = 8
_MONTHS = {name: number for number, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}
_SYMBOL_RE = re.compile(r"^(?P<base>[A-Z0-9]+)USD-(?P<day>\d{1,2})(?P<mon>[A-Z]{3})(?P<yy>\d{2})-"
                        r"(?P<strike>[0-9]+(?:\.[0-9]+)?)-(?P<type>[CP])$")

# Endpoint names used in ``MarketData.stats``; they equal the simulator's handler names so a
# benchmark can compare both sides.
EP_INSTRUMENTS = "instruments"
EP_CHAIN = "option_chain"
EP_INDEX = "futures_symbols"
EP_ORDERBOOK = "orderbook"

AlertSink = Callable[[str, str], None]


# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------

def _utc(expiry_ms: int) -> datetime:
    return datetime.fromtimestamp(expiry_ms / 1000.0, tz=timezone.utc)


@dataclass(frozen=True)
class Instrument:
    """One listed option (API.md §6.1)."""

    symbol: str
    base: str
    strike: float
    option_type: str  # "C" | "P"
    expiry_ms: int
    tick_size: float
    min_qty: float
    is_active: bool

    @property
    def expiry(self) -> datetime:
        """The expiry instant as an aware UTC datetime."""
        return _utc(self.expiry_ms)


@dataclass(frozen=True)
class OptionRow:
    """One option of a chain (API.md §6.2), normalised.

    ``bid``/``ask`` and their sizes are 0.0 when that book side is empty (the exchange's own
    convention). Greeks are ``None`` when the exchange did not send a usable number: a missing
    greek is never replaced by a made-up one. ``as_of`` is the clock time of the fetch.
    """

    symbol: str
    option_type: str
    strike: float
    expiry_ms: int
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    mark: float
    mark_iv: float
    bid_iv: float
    ask_iv: float
    delta: float | None
    gamma: float | None
    vega: float | None
    theta: float | None
    rho: float | None
    underlying_price: float
    as_of: float
    last_price_iv: float | None = None  # None when the exchange sent its Double.MAX sentinel

    @property
    def expiry(self) -> datetime:
        return _utc(self.expiry_ms)

    @property
    def has_bid(self) -> bool:
        return self.bid > 0

    @property
    def has_ask(self) -> bool:
        return self.ask > 0


@dataclass(frozen=True)
class ChainSnapshot:
    """Rows of one or more expiries that share ONE index price and ONE ``as_of``.

    Selection works on a snapshot so that every leg of a structure is measured against the
    same index at the same moment (BEHAVIOUR.md §3.1).
    """

    index_price: float
    as_of: float
    rows: tuple[OptionRow, ...]
    instruments: Mapping[str, Instrument]
    _by_symbol: Mapping[str, OptionRow] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "_by_symbol", MappingProxyType({r.symbol: r for r in self.rows}))

    def expiries(self) -> list[int]:
        return sorted({row.expiry_ms for row in self.rows})

    def rows_for(self, expiry_ms: int, option_type: str | None = None) -> list[OptionRow]:
        """Rows of one expiry (optionally one type), sorted by strike."""
        wanted = option_type.upper() if option_type else None
        picked = [r for r in self.rows
                  if r.expiry_ms == expiry_ms and (wanted is None or r.option_type == wanted)]
        return sorted(picked, key=lambda r: (r.strike, r.option_type))

    def row(self, symbol: str) -> OptionRow | None:
        return self._by_symbol.get(symbol)

    def age(self, now: float) -> float:
        return now - self.as_of


@dataclass(frozen=True)
class OrderBook:
    """Depth of one option (API.md §6.4). An empty side is an empty tuple; there is no mark."""

    symbol: str
    bids: tuple[tuple[float, float], ...]  # (price, size), best (highest) first
    asks: tuple[tuple[float, float], ...]  # (price, size), best (lowest) first
    as_of: float

    @property
    def best_bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None


@dataclass(frozen=True)
class ParsedSymbol:
    """The parts of an option symbol (API.md §5); ``strike_text`` is the opaque identity token."""

    base: str
    expiry_ms: int
    strike_text: str
    strike: float
    option_type: str


def parse_symbol(symbol: str) -> ParsedSymbol:
    """Parse ``BTCUSD-5FEB26-80000-C`` style symbols; the day may have 1 or 2 digits.

    Raises ``ValueError`` for anything else. The expiry is the symbol date at 08:00 UTC; the
    exchange's ``expirationTimestamp`` stays authoritative when both are known.
    """
    match = _SYMBOL_RE.match(symbol.strip().upper()) if isinstance(symbol, str) else None
    if match is None or match["mon"] not in _MONTHS:
        raise ValueError(f"not an option symbol: {symbol!r}")
    when = datetime(2000 + int(match["yy"]), _MONTHS[match["mon"]], int(match["day"]),
                    _EXPIRY_HOUR_UTC, tzinfo=timezone.utc)
    return ParsedSymbol(
        base=match["base"],
        expiry_ms=int(when.timestamp() * 1000),
        strike_text=match["strike"],
        strike=float(match["strike"]),
        option_type=match["type"],
    )


# ---------------------------------------------------------------------------------------
# The one adapter: camelCase payloads -> values
# ---------------------------------------------------------------------------------------

def _required(raw: Mapping[str, Any], key: str, what: str) -> float:
    value = finite_number(raw.get(key))
    if value is None:
        raise StaleDataError(f"{what}: field {key!r} is missing or not a number ({raw.get(key)!r})")
    return value


def _side_value(raw: Mapping[str, Any], key: str) -> float:
    """Bid/ask price or size: absent or non-positive means the side is empty (0.0)."""
    value = finite_number(raw.get(key))
    return value if value is not None and value > 0 else 0.0


def _iv(raw: Any) -> float | None:
    """An implied vol, ignoring the Double.MAX sentinel."""
    value = finite_number(raw)
    if value is None or abs(value) >= _IV_SENTINEL_FLOOR:
        return None
    return value


def _option_type(raw: Mapping[str, Any], symbol: str) -> str:
    from_symbol = symbol.rsplit("-", 1)[-1].upper() if "-" in symbol else ""
    code = raw.get("type")
    from_code = {1: "C", 2: "P", "1": "C", "2": "P"}.get(code) if not isinstance(code, bool) else None
    if from_symbol in ("C", "P"):
        if from_code is not None and from_code != from_symbol:
            raise StaleDataError(f"{symbol}: type {code!r} contradicts the symbol suffix")
        return from_symbol
    if from_code is None:
        raise StaleDataError(f"{symbol!r}: cannot tell call from put")
    return from_code


def _int_ms(raw: Any) -> int | None:
    if raw is None or isinstance(raw, bool):
        return None
    try:
        return int(str(raw).strip())
    except ValueError:
        value = finite_number(raw)
        return int(value) if value is not None else None


def instrument_from_api(raw: Mapping[str, Any]) -> Instrument:
    """One entry of ``getInstruments`` (API.md §6.1) -> ``Instrument``."""
    if not isinstance(raw, Mapping):
        raise StaleDataError(f"instrument entry is not an object: {raw!r}")
    symbol = raw.get("symbolName")
    if not isinstance(symbol, str) or not symbol:
        raise StaleDataError(f"instrument without symbolName: {raw!r}")
    what = f"instrument {symbol}"
    expiry_ms = _int_ms(raw.get("expirationTimestamp"))
    parsed: ParsedSymbol | None
    try:
        parsed = parse_symbol(symbol)
    except ValueError:
        parsed = None
    if expiry_ms is None:
        if parsed is None:
            raise StaleDataError(f"{what}: no expirationTimestamp and an unparseable symbol")
        expiry_ms = parsed.expiry_ms
    elif parsed is not None and parsed.expiry_ms != expiry_ms:
        logger.warning("%s: symbol date says %d, exchange says %d; using the exchange value",
                       symbol, parsed.expiry_ms, expiry_ms)
    base = raw.get("baseCurrency")
    if not isinstance(base, str) or not base:
        base = parsed.base if parsed is not None else ""
    return Instrument(
        symbol=symbol,
        base=base.upper(),
        strike=_required(raw, "strike", what),
        option_type=_option_type(raw, symbol),
        expiry_ms=expiry_ms,
        tick_size=_required(raw, "tickSize", what),
        min_qty=_required(raw, "minQty", what),
        is_active=bool(raw.get("isActive", False)),
    )


def option_row_from_api(raw: Mapping[str, Any], *, as_of: float, expiry_hint: int | None = None,
                        index_name: str | None = None) -> OptionRow:
    """One side object of a chain row (API.md §6.2) -> ``OptionRow``.

    ``index_name`` (e.g. ``BTCUSD``), when given, must match the row's ``index`` or
    ``underlying`` key (the key name differs between API examples).
    """
    if not isinstance(raw, Mapping):
        raise StaleDataError(f"chain entry is not an object: {raw!r}")
    symbol = raw.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise StaleDataError(f"chain entry without symbol: {raw!r}")
    what = f"chain row {symbol}"
    row_index = raw.get("index", raw.get("underlying"))
    if index_name is not None and row_index is not None and str(row_index).upper() != index_name.upper():
        raise StaleDataError(f"{what}: belongs to index {row_index!r}, expected {index_name!r}")
    expiry_ms = _int_ms(raw.get("endTime"))
    if expiry_ms is None:
        expiry_ms = expiry_hint
    if expiry_ms is None:
        raise StaleDataError(f"{what}: no endTime")
    mark_iv = _iv(raw.get("markIv"))
    return OptionRow(
        symbol=symbol,
        option_type=_option_type(raw, symbol),
        strike=_required(raw, "strike", what),
        expiry_ms=expiry_ms,
        bid=_side_value(raw, "bid"),
        ask=_side_value(raw, "ask"),
        bid_size=_side_value(raw, "bidSize"),
        ask_size=_side_value(raw, "askSize"),
        mark=_required(raw, "markPrice", what),
        mark_iv=mark_iv if mark_iv is not None else math.nan,
        bid_iv=_iv(raw.get("bidIv")) or 0.0,
        ask_iv=_iv(raw.get("askIv")) or 0.0,
        delta=finite_number(raw.get("delta")),
        gamma=finite_number(raw.get("gamma")),
        vega=finite_number(raw.get("vega")),
        theta=finite_number(raw.get("theta")),
        rho=finite_number(raw.get("rho")),
        underlying_price=_required(raw, "underlyingPrice", what),
        as_of=as_of,
        last_price_iv=_iv(raw.get("lastPriceIv")),
    )


def chain_rows_from_api(data: Any, *, as_of: float, expiry_ms: int, index_name: str) -> tuple[OptionRow, ...]:
    """A chain payload ``[{strike, callOption, putOption}, ...]`` -> rows of ``expiry_ms``.

    Rows of other expiries are dropped: the docs now mark ``endTime`` optional, so an
    exchange that ignores it must not leak other expiries into this one.
    """
    if not isinstance(data, list):
        raise StaleDataError(f"option chain for {expiry_ms} is not a list: {type(data).__name__}")
    rows: list[OptionRow] = []
    for entry in data:
        if not isinstance(entry, Mapping):
            raise StaleDataError(f"option chain entry is not an object: {entry!r}")
        for key in ("callOption", "putOption"):
            side = entry.get(key)
            if side is None:
                continue
            row = option_row_from_api(side, as_of=as_of, expiry_hint=expiry_ms, index_name=index_name)
            if row.expiry_ms == expiry_ms:
                rows.append(row)
    return tuple(sorted(rows, key=lambda r: (r.strike, r.option_type)))


def _book_side(levels: Any, symbol: str, descending: bool) -> tuple[tuple[float, float], ...]:
    if levels is None:
        return ()
    if not isinstance(levels, list):
        raise StaleDataError(f"order book {symbol}: a side is not a list")
    parsed: list[tuple[float, float]] = []
    for level in levels:
        if isinstance(level, Mapping):
            price, size = finite_number(level.get("price")), finite_number(level.get("size"))
        elif isinstance(level, (list, tuple)) and len(level) >= 2:
            price, size = finite_number(level[0]), finite_number(level[1])
        else:
            raise StaleDataError(f"order book {symbol}: unreadable level {level!r}")
        if price is None or size is None:
            raise StaleDataError(f"order book {symbol}: unreadable level {level!r}")
        if price > 0 and size > 0:
            parsed.append((price, size))
    parsed.sort(key=lambda pair: pair[0], reverse=descending)
    return tuple(parsed)


def order_book_from_api(data: Any, *, symbol: str, as_of: float) -> OrderBook:
    """An order-book payload (API.md §6.4; price/size as strings) -> ``OrderBook``."""
    if not isinstance(data, Mapping):
        raise StaleDataError(f"order book {symbol} is not an object")
    return OrderBook(
        symbol=symbol,
        bids=_book_side(data.get("bids"), symbol, descending=True),
        asks=_book_side(data.get("asks"), symbol, descending=False),
        as_of=as_of,
    )


# ---------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    fetched_at: float


def _is_fresh(entry: _Entry[Any] | None, now: float, limit: float) -> bool:
    """Fresh = fetched no longer than ``limit`` ago (and not in the future: a clock jump)."""
    if entry is None or limit <= 0:
        return False
    age = now - entry.fetched_at
    return 0 <= age <= limit


def _store_if_newer(cache: dict[Any, _Entry[Any]], key: Any, entry: _Entry[Any]) -> None:
    current = cache.get(key)
    if current is None or current.fetched_at <= entry.fetched_at:
        cache[key] = entry


class MarketData:
    """Cached, TTL-enforced access to Coincall market data for one base currency.

    ``client`` is a ``CoincallClient`` (or anything with the same market-data methods);
    ``clock`` stamps every fetch. ``stats`` counts REST calls per endpoint name.
    """

    def __init__(self, client: Any, clock: Clock, *, ttl_seconds: float = 30.0,
                 frozen_after_seconds: float = 60.0, frozen_min_reads: int = 3,
                 on_alert: AlertSink | None = None, base: str = "BTC") -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds!r}")
        if frozen_min_reads < 2:
            raise ValueError(f"frozen_min_reads must be >= 2, got {frozen_min_reads!r}")
        self._client = client
        self._clock = clock
        self._ttl = float(ttl_seconds)
        self._frozen_after = float(frozen_after_seconds)
        self._frozen_min_reads = int(frozen_min_reads)
        self._on_alert = on_alert
        self._base = base.upper()
        self._index_name = f"{self._base}USD"
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self._instruments: dict[str, _Entry[tuple[Instrument, ...]]] = {}
        self._index: _Entry[float] | None = None
        self._chains: dict[int, _Entry[tuple[OptionRow, ...]]] = {}
        self._books: dict[str, _Entry[OrderBook]] = {}
        # Frozen-index tracker: value, first and last read time of the current run, run length.
        self._run_value: float | None = None
        self._run_started: float = 0.0
        self._run_last: float = 0.0
        self._run_reads = 0
        self._frozen = False


    @property
    def clock(self) -> Clock:
        """The clock every freshness decision is taken on (selection reads "now" from it)."""
        return self._clock
    def __repr__(self) -> str:
        return f"MarketData(base={self._base!r}, ttl={self._ttl})"

    # ---- helpers -------------------------------------------------------------------

    def _limit(self, max_age: float | None) -> float:
        return self._ttl if max_age is None else min(self._ttl, float(max_age))

    def _count(self, endpoint: str) -> None:
        with self._lock:
            self.stats[endpoint] += 1

    def stats_snapshot(self) -> Counter[str]:
        """A copy of the call counters (safe to read while other threads fetch)."""
        with self._lock:
            return Counter(self.stats)

    def reset_stats(self) -> None:
        with self._lock:
            self.stats.clear()

    # ---- instruments ---------------------------------------------------------------

    def instruments(self, base: str = "BTC") -> list[Instrument]:
        """All listed options of ``base``, cached at most ``ttl_seconds``."""
        key = base.upper()
        with self._lock:
            entry = self._instruments.get(key)
            if _is_fresh(entry, self._clock.now(), self._ttl):
                return list(entry.value)  # type: ignore[union-attr]
        self._count(EP_INSTRUMENTS)
        data = self._client.instruments(key)
        fetched_at = self._clock.now()
        if not isinstance(data, list):
            raise StaleDataError(f"instruments for {key} is not a list: {type(data).__name__}")
        if not data:
            raise StaleDataError(f"the exchange lists no {key} instruments")
        parsed = tuple(instrument_from_api(raw) for raw in data)
        with self._lock:
            _store_if_newer(self._instruments, key, _Entry(parsed, fetched_at))
        return list(parsed)

    def instrument(self, symbol: str) -> Instrument:
        """The listed instrument ``symbol``; ``SelectionError`` if the exchange does not list it."""
        try:
            base = parse_symbol(symbol).base
        except ValueError:
            base = self._base
        for item in self.instruments(base):
            if item.symbol == symbol:
                return item
        raise SelectionError(f"unknown instrument {symbol!r}")

    def _cached_instrument(self, symbol: str) -> Instrument | None:
        """The instrument from a fresh cache entry, without any call."""
        now = self._clock.now()
        with self._lock:
            for entry in self._instruments.values():
                if _is_fresh(entry, now, self._ttl):
                    for item in entry.value:
                        if item.symbol == symbol:
                            return item
        return None

    # ---- index ---------------------------------------------------------------------

    def index_price(self, *, max_age: float | None = None) -> float:
        """The index price, no older than ``min(ttl, max_age)``; ``max_age=0`` always reads fresh."""
        limit = self._limit(max_age)
        with self._lock:
            if _is_fresh(self._index, self._clock.now(), limit):
                return self._index.value  # type: ignore[union-attr]
        return self._fetch_index().value

    def _fetch_index(self) -> _Entry[float]:
        self._count(EP_INDEX)
        value = float(self._client.index_price())
        if not math.isfinite(value) or value <= 0:
            raise StaleDataError(f"unusable index price {value!r}")
        entry = _Entry(value, self._clock.now())
        with self._lock:
            if self._index is None or self._index.fetched_at <= entry.fetched_at:
                self._index = entry
            alert = self._track_index_locked(entry)
        if alert is not None:
            self._alert("index_frozen", alert)
        return entry

    def _track_index_locked(self, entry: _Entry[float]) -> str | None:
        """Update the frozen-index tracker with one fresh read; returns alert detail when it trips."""
        if entry.fetched_at < self._run_last:
            return None  # a late answer from a concurrent read: it proves nothing about now
        if self._run_value is None or entry.value != self._run_value:
            if self._frozen:
                logger.info("index moved again (%.2f -> %.2f): index no longer frozen",
                            self._run_value, entry.value)
            self._run_value = entry.value
            self._run_started = entry.fetched_at
            self._run_reads = 1
            self._run_last = entry.fetched_at
            self._frozen = False
            return None
        self._run_reads += 1
        self._run_last = entry.fetched_at
        span = self._run_last - self._run_started
        if self._frozen or self._run_reads < self._frozen_min_reads or span < self._frozen_after:
            return None
        self._frozen = True
        detail = (f"{self._index_name} index unchanged at {entry.value} on {self._run_reads} fresh reads "
                  f"over {span:.0f} s: entries blocked until it moves")
        logger.warning("index frozen: %s", detail)
        return detail

    def _alert(self, kind: str, detail: str) -> None:
        if self._on_alert is None:
            return
        try:
            self._on_alert(kind, detail)
        except Exception:  # an alert sink must never break market data
            logger.exception("alert sink failed for %s", kind)

    def index_age(self) -> float | None:
        """Seconds since the last successful index fetch; ``None`` if never fetched."""
        with self._lock:
            entry = self._index
        return None if entry is None else self._clock.now() - entry.fetched_at

    @property
    def index_frozen(self) -> bool:
        with self._lock:
            return self._frozen

    # ---- chains --------------------------------------------------------------------

    def chain(self, expiry_ms: int, *, max_age: float | None = None) -> tuple[OptionRow, ...]:
        """All options of one expiry, no older than ``min(ttl, max_age)`` (one call when refetched)."""
        key = int(expiry_ms)
        limit = self._limit(max_age)
        with self._lock:
            entry = self._chains.get(key)
            if _is_fresh(entry, self._clock.now(), limit):
                return entry.value  # type: ignore[union-attr]
        return self._fetch_chain(key).value

    def _fetch_chain(self, expiry_ms: int) -> _Entry[tuple[OptionRow, ...]]:
        self._count(EP_CHAIN)
        data = self._client.option_chain(expiry_ms, index=self._index_name)
        fetched_at = self._clock.now()
        rows = chain_rows_from_api(data, as_of=fetched_at, expiry_ms=expiry_ms, index_name=self._index_name)
        if not rows:
            raise StaleDataError(f"the exchange returned no options for expiry {expiry_ms}")
        entry = _Entry(rows, fetched_at)
        with self._lock:
            _store_if_newer(self._chains, expiry_ms, entry)
        return entry

    def chain_snapshot(self, expiries: Iterable[int], *, max_build_seconds: float = 5.0) -> ChainSnapshot:
        """One consistent snapshot: instruments (cache), a fresh index, one fresh chain call per expiry.

        All rows are stamped with the snapshot's ``as_of`` (the index fetch time, the oldest
        piece). Any failure, or a build spanning more than ``max_build_seconds``, raises
        ``SelectionError``: no partial snapshot is ever returned.
        """
        wanted = sorted({int(e) for e in expiries})
        if not wanted:
            raise SelectionError("chain_snapshot needs at least one expiry")
        started = self._clock.monotonic()
        try:
            listed = self.instruments(self._base)
            index = self._fetch_index()
            chains = [self._fetch_chain(expiry) for expiry in wanted]
        except SelectionError:
            raise
        except TraderError as exc:
            raise SelectionError(f"chain snapshot failed: {exc}") from exc
        span = self._clock.monotonic() - started
        if span > max_build_seconds:
            raise SelectionError(f"chain snapshot took {span:.1f} s (> {max_build_seconds} s): not consistent")
        as_of = index.fetched_at
        rows = tuple(replace(row, as_of=as_of) for chain in chains for row in chain.value)
        self._verify_snapshot(rows, as_of, wanted)
        return ChainSnapshot(
            index_price=index.value,
            as_of=as_of,
            rows=rows,
            instruments=MappingProxyType({item.symbol: item for item in listed}),
        )

    @staticmethod
    def _verify_snapshot(rows: tuple[OptionRow, ...], as_of: float, wanted: list[int]) -> None:
        stamps = {row.as_of for row in rows}
        if stamps != {as_of}:
            raise SelectionError(f"chain snapshot rows carry {len(stamps)} different as_of values")
        symbols = [row.symbol for row in rows]
        if len(set(symbols)) != len(symbols):
            raise SelectionError("chain snapshot has duplicate symbols")
        missing = set(wanted) - {row.expiry_ms for row in rows}
        if missing:
            raise SelectionError(f"chain snapshot has no rows for expiries {sorted(missing)}")

    # ---- quotes and books ----------------------------------------------------------

    def quote(self, symbol: str, *, max_age: float = 15.0) -> OptionRow:
        """One option's row, taken from the chain of its expiry (one call serves all its symbols)."""
        known = self._cached_instrument(symbol)
        if known is not None:
            return self._row_in_chain(symbol, known.expiry_ms, max_age)
        try:
            guessed = parse_symbol(symbol).expiry_ms
        except ValueError:
            return self._row_in_chain(symbol, self.instrument(symbol).expiry_ms, max_age)
        try:
            return self._row_in_chain(symbol, guessed, max_age)
        except (SelectionError, StaleDataError):
            # The symbol date is only a guess; the exchange's listing is authoritative.
            listed = self.instrument(symbol).expiry_ms
            if listed == guessed:
                raise
            return self._row_in_chain(symbol, listed, max_age)

    def _row_in_chain(self, symbol: str, expiry_ms: int, max_age: float) -> OptionRow:
        for row in self.chain(expiry_ms, max_age=max_age):
            if row.symbol == symbol:
                return row
        raise SelectionError(f"{symbol!r} is not in the chain of expiry {expiry_ms}")

    def order_book(self, symbol: str, *, max_age: float = 3.0) -> OrderBook:
        """The book of ``symbol``, no older than ``min(ttl, max_age)``."""
        limit = self._limit(max_age)
        with self._lock:
            entry = self._books.get(symbol)
            if _is_fresh(entry, self._clock.now(), limit):
                return entry.value  # type: ignore[union-attr]
        self._count(EP_ORDERBOOK)
        data = self._client.orderbook(symbol)
        fetched_at = self._clock.now()
        book = order_book_from_api(data, symbol=symbol, as_of=fetched_at)
        with self._lock:
            _store_if_newer(self._books, symbol, _Entry(book, fetched_at))
        return book

    def invalidate(self) -> None:
        """Forget every cached datum (the frozen-index tracker is kept: it is about fresh reads)."""
        with self._lock:
            self._instruments.clear()
            self._index = None
            self._chains.clear()
            self._books.clear()
