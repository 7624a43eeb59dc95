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
* Everything is keyed by underlying (issue 13): BTC and ETH options share expiry dates, so
  a chain is cached per (underlying, expiry), an index and its frozen tracker per
  underlying, a listing per base; a quote finds its chain from its symbol. A call that names
  no underlying means the instance's ``base`` (BTC), so callers written for BTC alone are
  unchanged. ``index_frozen`` is True while any underlying's index is frozen (the health
  flag); ``index_frozen_for(underlying)`` is what an entry gate reads.
* A perpetual (``BTCUSD``) is read through the same three calls as an option (issue 13):
  ``instrument`` gives its tick and quantity step from the exchange's ``PerpSpec`` (strike
  0, expiry 0, option type ``PERP``), ``order_book`` its book, and ``quote`` a row of the
  same shape as an option's: bid and ask from the book (what a close executes against),
  mark and index from the ticker, delta 1 and the other greeks 0. The same freshness rules
  apply; ``as_of`` is the older of the two reads. Without a ``perp_client`` a perp symbol
  is unknown (``SelectionError``).

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
    ListingParser,
    OptionRow,
    OrderBook,
    order_book_from_api,
)
from coincall_payloads import PerpSpec
from contracts import DEFAULT_UNDERLYING, PERPETUAL, index_name, is_perpetual_symbol, parse_symbol, underlying_of
from errors import SelectionError, StaleDataError, TraderError
from seams import MarketDataClient, PerpMarketClient, require, require_optional

logger = logging.getLogger(__name__)

# Endpoint names used in ``MarketData.stats``; they equal the simulator's handler names so a
# benchmark can compare both sides.
EP_INSTRUMENTS = "instruments"
EP_CHAIN = "option_chain"
EP_INDEX = "futures_symbols"
EP_ORDERBOOK = "orderbook"
EP_PERP_TICKER = "futures_ticker"
EP_PERP_BOOK = "futures_orderbook"
EP_PERP_SPEC = "futures_config"
PERP_SPEC_TTL_SECONDS = 3600.0   # a contract specification changes rarely; read it hourly
# Chains and books are cached per expiry and per symbol, and every read asks for at most the
# TTL: an entry older than that is never served again. Dropped at most every PRUNE_EVERY_SECONDS,
# so a month-long run does not keep the chain of every expiry and the book of every symbol it
# ever read (issue 11: memory flat over a long run).
PRUNE_EVERY_SECONDS = 300.0

AlertHook = Callable[[str, str], None]


# ---------------------------------------------------------------------------------------
# Values (one payload's values, Instrument, OptionRow and OrderBook, are coincall_payloads')
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChainSnapshot:
    """Rows of one or more expiries that share ONE index price and ONE ``as_of``.

    Selection works on a snapshot so that every leg of a structure is measured against the
    same index at the same moment (BEHAVIOUR.md §3.1). A snapshot is of ONE ``underlying``:
    its rows, its instruments and its ``index_price`` are that underlying's, and selection
    refuses a snapshot of another underlying than the legs'.
    """

    index_price: float
    as_of: float
    rows: tuple[OptionRow, ...]
    instruments: Mapping[str, Instrument]
    underlying: str = DEFAULT_UNDERLYING
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
K = TypeVar("K")


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


def _drop_unservable(cache: dict[K, _Entry[T]], now: float, limit: float) -> None:
    """Remove the entries of ``cache`` that are no longer fresh within ``limit`` (never served again)."""
    for key in [key for key, entry in cache.items() if not _is_fresh(entry, now, limit)]:
        del cache[key]


def _store_if_newer(cache: dict[Any, _Entry[Any]], key: Any, entry: _Entry[Any]) -> None:
    current = cache.get(key)
    if current is None or current.fetched_at <= entry.fetched_at:
        cache[key] = entry


@dataclass
class _IndexRun:
    """The frozen-index tracker of one underlying: the current run of equal fresh reads."""

    value: float | None = None
    started: float = 0.0
    last: float = 0.0
    reads: int = 0
    frozen: bool = False


class MarketData:
    """Cached, TTL-enforced access to Coincall market data, keyed by underlying (issue 13).

    Every datum is kept per underlying: one index (and one frozen-index tracker) per
    underlying, one instrument listing per base, one chain cache entry per (underlying,
    expiry): two underlyings share expiry dates, so an expiry alone never names a chain.
    ``base`` is the underlying a call means when it names none (``"BTC"``), which keeps every
    caller written before ETH unchanged. ``quote`` and ``order_book`` read the underlying from
    the symbol. The freshness rules are the same for every underlying.

    ``client`` is a ``MarketDataClient`` (``CoincallClient``, or a test's fake of those endpoints);
    ``clock`` stamps every fetch. ``stats`` counts REST calls per endpoint name (all underlyings).
    """

    def __init__(self, client: MarketDataClient, clock: Clock, *, ttl_seconds: float = 30.0,
                 frozen_after_seconds: float = 60.0, frozen_min_reads: int = 3,
                 on_alert: AlertHook | None = None, base: str = DEFAULT_UNDERLYING,
                 perp_client: PerpMarketClient | None = None) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds!r}")
        if frozen_min_reads < 2:
            raise ValueError(f"frozen_min_reads must be >= 2, got {frozen_min_reads!r}")
        require("MarketData client", client, MarketDataClient)
        require_optional("MarketData perp_client", perp_client, PerpMarketClient)
        self._client = client
        self._perp_client = perp_client
        self._perp_specs: dict[str, _Entry[PerpSpec]] = {}
        self._perp_tickers: dict[str, _Entry[Any]] = {}
        self._clock = clock
        self._ttl = float(ttl_seconds)
        self._frozen_after = float(frozen_after_seconds)
        self._frozen_min_reads = int(frozen_min_reads)
        self._on_alert = on_alert
        self._base = base.upper()
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self._instruments: dict[str, _Entry[tuple[Instrument, ...]]] = {}
        self._index: dict[str, _Entry[float]] = {}
        self._chains: dict[tuple[str, int], _Entry[ChainPayload]] = {}
        # Symbol -> instrument maps of the cached listings, built once per fetched value (keyed
        # by the value's identity), so one lookup is a dict lookup, not a scan. (A chain keeps
        # its own symbol index: ``ChainPayload.row``.)
        self._by_symbol: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._books: dict[str, _Entry[OrderBook]] = {}
        self._listing_parsers: dict[str, ListingParser] = {}
        self._runs: dict[str, _IndexRun] = {}
        self._pruned_at: float | None = None

    @property
    def clock(self) -> Clock:
        """The clock every freshness decision is taken on (selection reads "now" from it)."""
        return self._clock

    @property
    def base(self) -> str:
        """The underlying a call means when it names none."""
        return self._base

    def __repr__(self) -> str:
        return f"MarketData(base={self._base!r}, ttl={self._ttl})"

    # ---- helpers -------------------------------------------------------------------

    def _underlying(self, underlying: str | None) -> str:
        """The cache key of ``underlying`` (``None``: this instance's ``base``)."""
        return self._base if underlying is None else underlying.upper()

    def _of_symbol(self, symbol: str) -> str:
        """The underlying a symbol belongs to; ``base`` for a symbol outside the grammar."""
        return underlying_of(symbol) or self._base

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

    def instruments(self, base: str | None = None) -> list[Instrument]:
        """All listed options of ``base`` (default: this instance's base), cached at most ``ttl_seconds``."""
        return list(self._listing(self._underlying(base)))

    def _listing(self, key: str) -> tuple[Instrument, ...]:
        with self._lock:
            entry = self._instruments.get(key)
            if _is_fresh(entry, self._clock.now(), self._ttl):
                return entry.value
        self._count(EP_INSTRUMENTS)
        fetched_at = self._clock.now()   # stamped when asked (``_fetch_chain``)
        data = self._client.instruments(key)
        if not isinstance(data, list):
            raise StaleDataError(f"instruments for {key} is not a list: {type(data).__name__}")
        parsed = self._parse_listing(key, data)
        # A listing of another base is never kept as this one's: selection would pick its strikes.
        ours = tuple(item for item in parsed if item.base == key)
        if len(ours) != len(parsed):
            logger.warning("instruments for %s: dropped %d entries of other bases (%s)", key,
                           len(parsed) - len(ours), ", ".join(sorted({i.base for i in parsed} - {key})))
        if not ours:
            raise StaleDataError(f"the exchange lists no {key} instruments")
        with self._lock:
            _store_if_newer(self._instruments, key, _Entry(ours, fetched_at))
        return ours

    def _parse_listing(self, key: str, data: list[Any]) -> tuple[Instrument, ...]:
        """``data`` parsed by ``key``'s ``ListingParser`` (one per underlying: it keeps the last listing)."""
        with self._lock:
            parser = self._listing_parsers.setdefault(key, ListingParser())
        return parser.parse(data)

    def instrument(self, symbol: str) -> Instrument:
        """The listed instrument ``symbol``; ``SelectionError`` if the exchange does not list it."""
        if is_perpetual_symbol(symbol):
            return self._perp_instrument(symbol)
        found = self._symbol_map(self._listing(self._of_symbol(symbol))).get(symbol)
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

    def index_price(self, underlying: str | None = None, *, max_age: float | None = None) -> float:
        """``underlying``'s index (default: ``base``), no older than ``min(ttl, max_age)``;
        ``max_age=0`` always reads fresh."""
        key = self._underlying(underlying)
        limit = self._limit(max_age)
        with self._lock:
            entry = self._index.get(key)
            if _is_fresh(entry, self._clock.now(), limit):
                return entry.value
        return self._fetch_index(key).value

    def _fetch_index(self, key: str) -> _Entry[float]:
        self._count(EP_INDEX)
        asked_at = self._clock.now()   # an answer is as old as its request (``_fetch_chain``)
        value = float(self._client.index_price(key))
        if not math.isfinite(value) or value <= 0:
            raise StaleDataError(f"unusable {index_name(key)} index price {value!r}")
        entry = _Entry(value, asked_at)
        with self._lock:
            _store_if_newer(self._index, key, entry)
            alert = self._track_index_locked(key, entry)
        if alert is not None:
            self._alert("index_frozen", alert)
        return entry

    def _track_index_locked(self, key: str, entry: _Entry[float]) -> str | None:
        """Update ``key``'s frozen-index tracker with one fresh read; returns alert detail when it trips."""
        run = self._runs.setdefault(key, _IndexRun())
        if entry.fetched_at < run.last:
            return None  # a late answer from a concurrent read: it proves nothing about now
        if run.value is None or entry.value != run.value:
            if run.frozen:
                logger.info("%s index moved again (%.2f -> %.2f): index no longer frozen",
                            index_name(key), run.value, entry.value)
            self._runs[key] = _IndexRun(value=entry.value, started=entry.fetched_at, last=entry.fetched_at, reads=1)
            return None
        run.reads += 1
        run.last = entry.fetched_at
        span = run.last - run.started
        if run.frozen or run.reads < self._frozen_min_reads or span < self._frozen_after:
            return None
        run.frozen = True
        detail = (f"{index_name(key)} index unchanged at {entry.value} on {run.reads} fresh reads "
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

    def index_age(self, underlying: str | None = None) -> float | None:
        """Seconds since ``underlying``'s last successful index fetch (default: ``base``); ``None`` if never."""
        with self._lock:
            entry = self._index.get(self._underlying(underlying))
        return None if entry is None else self._clock.now() - entry.fetched_at

    @property
    def index_frozen(self) -> bool:
        """True while ANY underlying's index is frozen: the health line's flag (a frozen feed is
        news whichever underlying it is). Entry gates use ``index_frozen_for`` instead, so a
        frozen ETH index blocks ETH entries only."""
        with self._lock:
            return any(run.frozen for run in self._runs.values())

    def index_frozen_for(self, underlying: str | None = None) -> bool:
        """True while ``underlying``'s index (default: ``base``) is frozen."""
        with self._lock:
            run = self._runs.get(self._underlying(underlying))
            return run is not None and run.frozen

    # ---- chains --------------------------------------------------------------------

    def chain(self, expiry_ms: int, *, underlying: str | None = None,
              max_age: float | None = None) -> tuple[OptionRow, ...]:
        """All options of one expiry of ``underlying`` (default: ``base``), no older than
        ``min(ttl, max_age)`` (one call when refetched)."""
        key = (self._underlying(underlying), int(expiry_ms))
        entry = self._chain_entry(key, max_age)
        return self._parsed(key, entry, lambda payload: payload.rows())

    def _chain_entry(self, key: tuple[str, int], max_age: float | None) -> _Entry[ChainPayload]:
        """The cached fetch of chain ``key`` if no older than ``min(ttl, max_age)``, else a new one."""
        limit = self._limit(max_age)
        with self._lock:
            entry = self._chains.get(key)
            if _is_fresh(entry, self._clock.now(), limit):
                return entry
        return self._fetch_chain(key)

    def _parsed(self, key: tuple[str, int], entry: _Entry[ChainPayload], read: Callable[[ChainPayload], T]) -> T:
        """``read(payload)``; a malformed row read raises and forgets this fetch, so the next read
        refetches (as when the whole chain failed to parse at its fetch) instead of failing on
        the same bytes until the entry expires."""
        try:
            return read(entry.value)
        except StaleDataError:
            with self._lock:
                if self._chains.get(key) is entry:
                    del self._chains[key]
            raise

    def _fetch_chain(self, key: tuple[str, int]) -> _Entry[ChainPayload]:
        underlying, expiry_ms = key
        index = index_name(underlying)
        self._count(EP_CHAIN)
        # Stamped when asked, not when answered: the exchange may have built the answer at any
        # moment in between, and a slow or retried request must not look fresher than it is.
        fetched_at = self._clock.now()
        data = self._client.option_chain(expiry_ms, index=index)
        payload = ChainPayload(data, as_of=fetched_at, expiry_ms=expiry_ms, index_name=index)
        if not len(payload):
            raise StaleDataError(f"the exchange returned no options for {underlying} expiry {expiry_ms}")
        entry = _Entry(payload, fetched_at)
        with self._lock:
            _store_if_newer(self._chains, key, entry)
            self._prune_unservable(fetched_at)
        return entry

    def _prune_unservable(self, now: float) -> None:
        """Drop the chains and books too old to be served (caller holds the lock)."""
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = now
        _drop_unservable(self._chains, now, self._ttl)
        _drop_unservable(self._books, now, self._ttl)

    def chain_snapshot(self, expiries: Iterable[int], *, underlying: str | None = None,
                       max_build_seconds: float = 5.0) -> ChainSnapshot:
        """One consistent snapshot of ``underlying`` (default: ``base``): its instruments (cache),
        a fresh index, one fresh chain call per expiry.

        All rows are stamped with the snapshot's ``as_of`` (the index fetch time, the oldest
        piece). Any failure, or a build spanning more than ``max_build_seconds``, raises
        ``SelectionError``: no partial snapshot is ever returned.
        """
        key = self._underlying(underlying)
        wanted = sorted({int(e) for e in expiries})
        if not wanted:
            raise SelectionError("chain_snapshot needs at least one expiry")
        started = self._clock.monotonic()
        try:
            listed = self.instruments(key)
            index = self._fetch_index(key)
            chains = [((key, expiry), self._fetch_chain((key, expiry))) for expiry in wanted]
            parsed = [self._parsed(chain_key, chain, lambda payload: payload.rows()) for chain_key, chain in chains]
        except SelectionError:
            raise
        except TraderError as exc:
            raise SelectionError(f"{key} chain snapshot failed: {exc}") from exc
        span = self._clock.monotonic() - started
        if span > max_build_seconds:
            raise SelectionError(f"chain snapshot took {span:.1f} s (> {max_build_seconds} s): not consistent")
        as_of = index.fetched_at
        rows = tuple(replace(row, as_of=as_of) for chain_rows in parsed for row in chain_rows)
        self._verify_snapshot(rows, as_of, wanted, key)
        return ChainSnapshot(
            index_price=index.value,
            as_of=as_of,
            rows=rows,
            instruments=MappingProxyType({item.symbol: item for item in listed}),
            underlying=key,
        )

    @staticmethod
    def _verify_snapshot(rows: tuple[OptionRow, ...], as_of: float, wanted: list[int], underlying: str) -> None:
        stamps = {row.as_of for row in rows}
        if stamps != {as_of}:
            raise SelectionError(f"chain snapshot rows carry {len(stamps)} different as_of values")
        symbols = [row.symbol for row in rows]
        if len(set(symbols)) != len(symbols):
            raise SelectionError("chain snapshot has duplicate symbols")
        strangers = sorted({symbol for symbol in symbols if underlying_of(symbol) not in (underlying, None)})
        if strangers:
            raise SelectionError(f"{underlying} chain snapshot holds options of another underlying: {strangers[:3]}")
        missing = set(wanted) - {row.expiry_ms for row in rows}
        if missing:
            raise SelectionError(f"chain snapshot has no rows for expiries {sorted(missing)}")

    # ---- quotes and books ----------------------------------------------------------

    def quote(self, symbol: str, *, max_age: float = 15.0) -> OptionRow:
        """One option's row, taken from the chain of its underlying and expiry (one call serves
        all the symbols of that chain). The underlying is the symbol's own (``ETHUSD-...`` is
        looked up in ETH's chain, never in BTC's cache). A perpetual's row is built from its
        ticker and book (``perp_quote``)."""
        if is_perpetual_symbol(symbol):
            return self.perp_quote(symbol, max_age=max_age)
        known = self._cached_instrument(symbol)
        if known is not None:
            return self._row_in_chain(symbol, known.base or self._of_symbol(symbol), known.expiry_ms, max_age)
        try:
            parsed = parse_symbol(symbol)
        except ValueError:
            listed = self.instrument(symbol)
            return self._row_in_chain(symbol, listed.base or self._base, listed.expiry_ms, max_age)
        guessed = parsed.expiry_ms
        try:
            return self._row_in_chain(symbol, parsed.underlying, guessed, max_age)
        except (SelectionError, StaleDataError):
            # The symbol date is only a guess; the exchange's listing is authoritative.
            listed_expiry = self.instrument(symbol).expiry_ms
            if listed_expiry == guessed:
                raise
            return self._row_in_chain(symbol, parsed.underlying, listed_expiry, max_age)

    def _row_in_chain(self, symbol: str, underlying: str, expiry_ms: int, max_age: float) -> OptionRow:
        """``symbol``'s row in its (cached or refetched) chain: one dict lookup per quote, the row
        parsed once per fetched chain and shared by every trade that polls it."""
        key = (underlying.upper(), int(expiry_ms))
        entry = self._chain_entry(key, max_age)
        row = self._parsed(key, entry, lambda payload: payload.row(symbol))
        if row is None:
            raise SelectionError(f"{symbol!r} is not in the chain of {key[0]} expiry {expiry_ms}")
        return row

    def order_book(self, symbol: str, *, max_age: float = 3.0) -> OrderBook:
        """The book of ``symbol``, no older than ``min(ttl, max_age)``.

        Books are kept per symbol, and a symbol names its underlying (``contracts.underlying_of``),
        so two underlyings' books can never share an entry."""
        limit = self._limit(max_age)
        with self._lock:
            entry = self._books.get(symbol)
            if _is_fresh(entry, self._clock.now(), limit):
                return entry.value
        if is_perpetual_symbol(symbol):
            self._count(EP_PERP_BOOK)
            book = self._perp(symbol).perp_order_book(self._of_symbol(symbol))
            fetched_at = book.as_of
        else:
            self._count(EP_ORDERBOOK)
            fetched_at = self._clock.now()   # stamped when asked (``_fetch_chain``)
            data = self._client.orderbook(symbol)
            book = order_book_from_api(data, symbol=symbol, as_of=fetched_at)
        with self._lock:
            _store_if_newer(self._books, symbol, _Entry(book, fetched_at))
            self._prune_unservable(self._clock.now())
        return book

    # ---- perpetuals ------------------------------------------------------------------

    def _perp(self, symbol: str) -> PerpMarketClient:
        if self._perp_client is None:
            raise SelectionError(f"{symbol!r} is a perpetual and this market data has no perpetual client")
        return self._perp_client

    def perp_spec(self, underlying: str) -> PerpSpec:
        """``underlying``'s perpetual specification (tick, minimum, step), cached an hour."""
        key = underlying.upper()
        with self._lock:
            entry = self._perp_specs.get(key)
            if _is_fresh(entry, self._clock.now(), PERP_SPEC_TTL_SECONDS):
                return entry.value
        client = self._perp(index_name(key))
        self._count(EP_PERP_SPEC)
        spec = client.perp_spec(key)
        with self._lock:
            _store_if_newer(self._perp_specs, key, _Entry(spec, self._clock.now()))
        return spec

    def _perp_instrument(self, symbol: str) -> Instrument:
        """A perpetual as an ``Instrument``: its tick and its quantity step as ``min_qty`` (the
        minimum and the step are one number on Coincall, API.md §14.3), no strike, no expiry."""
        underlying = self._of_symbol(symbol)
        spec = self.perp_spec(underlying)
        return Instrument(symbol=symbol, base=underlying, strike=0.0, option_type=PERPETUAL, expiry_ms=0,
                          tick_size=float(spec.tick_size), min_qty=max(float(spec.min_qty), float(spec.qty_step)),
                          is_active=True)

    def perp_ticker(self, symbol: str, *, max_age: float = 15.0) -> Any:
        """The perp's ticker (mark, index), no older than ``min(ttl, max_age)``; funding is not read."""
        limit = self._limit(max_age)
        with self._lock:
            entry = self._perp_tickers.get(symbol)
            if _is_fresh(entry, self._clock.now(), limit):
                return entry.value
        client = self._perp(symbol)
        self._count(EP_PERP_TICKER)
        ticker = client.perp_ticker(self._of_symbol(symbol), with_funding=False)
        with self._lock:
            _store_if_newer(self._perp_tickers, symbol, _Entry(ticker, float(ticker.as_of)))
        return ticker

    def perp_quote(self, symbol: str, *, max_age: float = 15.0) -> OptionRow:
        """A perp's quote in the shape of an option row: bid/ask and sizes from its book, mark and
        index from its ticker, delta 1, other greeks and IVs 0; ``as_of`` the older read."""
        ticker = self.perp_ticker(symbol, max_age=max_age)
        book = self.order_book(symbol, max_age=max_age)
        bid = book.bids[0] if book.bids else (0.0, 0.0)
        ask = book.asks[0] if book.asks else (0.0, 0.0)
        return OptionRow(symbol=symbol, option_type=PERPETUAL, strike=0.0, expiry_ms=0,
                         bid=float(bid[0]), ask=float(ask[0]), bid_size=float(bid[1]), ask_size=float(ask[1]),
                         mark=float(ticker.mark), mark_iv=0.0, bid_iv=0.0, ask_iv=0.0, delta=1.0, gamma=0.0,
                         vega=0.0, theta=0.0, rho=0.0, underlying_price=float(ticker.index),
                         as_of=min(float(ticker.as_of), float(book.as_of)))

    def invalidate(self) -> None:
        """Forget every cached datum (the frozen-index tracker is kept: it is about fresh reads)."""
        with self._lock:
            self._perp_specs.clear()
            self._perp_tickers.clear()
            self._instruments.clear()
            self._index.clear()
            self._chains.clear()
            self._books.clear()
