"""Market data with enforced freshness: instruments, index, option chains, order books.

Why this module exists (BEHAVIOUR.md §3.1, §7.2; API.md §6, §11.8-11, 19, 21):

* Every datum carries the clock time of its fetch, and the TTL is enforced on **every** read
  path: an entry older than its limit is never returned, it is refetched. A cache that served
  expired entries once re-stamped an old index as fresh and froze the index for hours.
* There is no constant or fallback price anywhere. A failed fetch raises
  (``ExchangeError`` / ``TransportError`` / ``StaleDataError``); nothing returns empty.
* Greeks, IV and top of book come from the option chain: **one call per expiry**, never one
  option-detail call per strike. A fetched chain is kept as sent (``ChainPayload``) and a row
  is parsed when read, once per fetch: a poll values a few legs of a chain of hundreds. A
  read row that is malformed raises ``StaleDataError`` and drops that fetch from the cache
  (the next read refetches, as when a whole-chain parse failed); an entry's snapshot parses
  every row, so any malformed row still fails it.
* The exchange speaks camelCase with numbers sometimes as strings; the payloads become
  values (``Instrument``, ``OptionRow``, ``OrderBook``) in ``coincall_payloads``, the one
  adapter, so this module never reads a field name.
* A frozen index (same value on >= 3 fresh reads spanning >= 60 s) is flagged, logged as a
  WARNING and alerted, until the value changes.

Thread safety: one lock guards the caches, the counters and the frozen-index tracker; it is
never held across an HTTP request (two threads may then fetch the same thing twice, which
costs a call but never serves stale data; a slower, older answer never replaces a newer one).
"""
from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable, Generic, Iterable, Mapping, TypeGuard, TypeVar

from clock import Clock
from coincall_payloads import (
    ChainPayload,
    Instrument,
    OptionRow,
    OrderBook,
    instrument_from_api,
    order_book_from_api,
)
from contracts import parse_symbol
from errors import SelectionError, StaleDataError, TraderError
from seams import MarketDataClient, require

logger = logging.getLogger(__name__)

# Endpoint names used in ``MarketData.stats``; they equal the simulator's handler names so a
# benchmark can compare both sides.
EP_INSTRUMENTS = "instruments"
EP_CHAIN = "option_chain"
EP_INDEX = "futures_symbols"
EP_ORDERBOOK = "orderbook"

AlertHook = Callable[[str, str], None]


# ---------------------------------------------------------------------------------------
# Values (one payload's values, Instrument, OptionRow and OrderBook, are coincall_payloads')
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    fetched_at: float


def _is_fresh(entry: _Entry[T] | None, now: float, limit: float) -> TypeGuard[_Entry[T]]:
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

    ``client`` is a ``MarketDataClient`` (``CoincallClient``, or a test's fake of those endpoints);
    ``clock`` stamps every fetch. ``stats`` counts REST calls per endpoint name.
    """

    def __init__(self, client: MarketDataClient, clock: Clock, *, ttl_seconds: float = 30.0,
                 frozen_after_seconds: float = 60.0, frozen_min_reads: int = 3,
                 on_alert: AlertHook | None = None, base: str = "BTC") -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds!r}")
        if frozen_min_reads < 2:
            raise ValueError(f"frozen_min_reads must be >= 2, got {frozen_min_reads!r}")
        require("MarketData client", client, MarketDataClient)
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
        self._chains: dict[int, _Entry[ChainPayload]] = {}
        # Symbol -> instrument maps of the cached listings, built once per fetched value (keyed
        # by the value's identity), so one lookup is a dict lookup, not a scan. (A chain keeps
        # its own symbol index: ``ChainPayload.row``.)
        self._by_symbol: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}
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

    def _symbol_map(self, items: tuple[Any, ...]) -> dict[str, Any]:
        """``items`` (instruments) by symbol, the first of a repeated symbol winning as in a
        scan; built once per cached value and dropped with it."""
        with self._lock:
            known = self._by_symbol.get(id(items))
            if known is not None and known[0] is items:
                return known[1]
            mapping: dict[str, Any] = {}
            for item in items:
                mapping.setdefault(item.symbol, item)
            live = {id(entry.value) for entry in self._instruments.values()}
            for key in [key for key in self._by_symbol if key not in live]:
                del self._by_symbol[key]
            self._by_symbol[id(items)] = (items, mapping)
            return mapping

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
        return list(self._listing(base))

    def _listing(self, base: str) -> tuple[Instrument, ...]:
        key = base.upper()
        with self._lock:
            entry = self._instruments.get(key)
            if _is_fresh(entry, self._clock.now(), self._ttl):
                return entry.value
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
        return parsed

    def instrument(self, symbol: str) -> Instrument:
        """The listed instrument ``symbol``; ``SelectionError`` if the exchange does not list it."""
        try:
            base = parse_symbol(symbol).underlying
        except ValueError:
            base = self._base
        found = self._symbol_map(self._listing(base)).get(symbol)
        if found is None:
            raise SelectionError(f"unknown instrument {symbol!r}")
        return found

    def _cached_instrument(self, symbol: str) -> Instrument | None:
        """The instrument from a fresh cache entry, without any call."""
        now = self._clock.now()
        with self._lock:
            fresh = [entry.value for entry in self._instruments.values() if _is_fresh(entry, now, self._ttl)]
        for listing in fresh:
            found = self._symbol_map(listing).get(symbol)
            if found is not None:
                return found
        return None

    # ---- index ---------------------------------------------------------------------

    def index_price(self, *, max_age: float | None = None) -> float:
        """The index price, no older than ``min(ttl, max_age)``; ``max_age=0`` always reads fresh."""
        limit = self._limit(max_age)
        with self._lock:
            if _is_fresh(self._index, self._clock.now(), limit):
                return self._index.value
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
        entry = self._chain_entry(int(expiry_ms), max_age)
        return self._parsed(entry, lambda payload: payload.rows())

    def _chain_entry(self, key: int, max_age: float | None) -> _Entry[ChainPayload]:
        """The cached fetch of expiry ``key`` if no older than ``min(ttl, max_age)``, else a new one."""
        limit = self._limit(max_age)
        with self._lock:
            entry = self._chains.get(key)
            if _is_fresh(entry, self._clock.now(), limit):
                return entry
        return self._fetch_chain(key)

    def _parsed(self, entry: _Entry[ChainPayload], read: Callable[[ChainPayload], T]) -> T:
        """``read(payload)``; a malformed row read raises and forgets this fetch, so the next read
        refetches (as when the whole chain failed to parse at its fetch) instead of failing on
        the same bytes until the entry expires."""
        try:
            return read(entry.value)
        except StaleDataError:
            with self._lock:
                key = entry.value.expiry_ms
                if self._chains.get(key) is entry:
                    del self._chains[key]
            raise

    def _fetch_chain(self, expiry_ms: int) -> _Entry[ChainPayload]:
        self._count(EP_CHAIN)
        data = self._client.option_chain(expiry_ms, index=self._index_name)
        fetched_at = self._clock.now()
        payload = ChainPayload(data, as_of=fetched_at, expiry_ms=expiry_ms, index_name=self._index_name)
        if not len(payload):
            raise StaleDataError(f"the exchange returned no options for expiry {expiry_ms}")
        entry = _Entry(payload, fetched_at)
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
            parsed = [self._parsed(chain, lambda payload: payload.rows()) for chain in chains]
        except SelectionError:
            raise
        except TraderError as exc:
            raise SelectionError(f"chain snapshot failed: {exc}") from exc
        span = self._clock.monotonic() - started
        if span > max_build_seconds:
            raise SelectionError(f"chain snapshot took {span:.1f} s (> {max_build_seconds} s): not consistent")
        as_of = index.fetched_at
        rows = tuple(replace(row, as_of=as_of) for chain_rows in parsed for row in chain_rows)
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
        """``symbol``'s row in its (cached or refetched) chain: one dict lookup per quote, the row
        parsed once per fetched chain and shared by every trade that polls it."""
        entry = self._chain_entry(int(expiry_ms), max_age)
        row = self._parsed(entry, lambda payload: payload.row(symbol))
        if row is None:
            raise SelectionError(f"{symbol!r} is not in the chain of expiry {expiry_ms}")
        return row

    def order_book(self, symbol: str, *, max_age: float = 3.0) -> OrderBook:
        """The book of ``symbol``, no older than ``min(ttl, max_age)``."""
        limit = self._limit(max_age)
        with self._lock:
            entry = self._books.get(symbol)
            if _is_fresh(entry, self._clock.now(), limit):
                return entry.value
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
