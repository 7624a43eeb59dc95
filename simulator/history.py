"""Recorded option-chain history as the simulated exchange's market (docs/HISTORY.md).

Why: a backtest on the synthetic market tells how the daemon behaves, not what a strategy
would have earned; for that the simulator must show what the market really showed, and fill
only what the market really offered. This module reads the ``options_chain`` CSV layout that
Tardis.dev publishes for Deribit (and that ``recorder.py`` writes for Coincall), converts it to
what Coincall shows (USD prices on its tick, BTC sizes in 0.01 lots, Coincall symbols) and
serves it through the same surface as ``market.MarketModel`` (``market_source.MarketSource``).

The model, in one paragraph: each row is one instrument's state at one instant. At simulated
time ``t`` an instrument shows its latest row at or before ``t`` (never a later one: no look
ahead); a row older than the staleness limit shows no book at all. The book is the recorded
best bid and best ask with their amounts, one level a side; a side the row lacks is an empty
side. Nothing is invented: no mid, no depth beyond the recorded amount, no probability of a
fill at the touch (``recorded_exchange_config``). The index is the underlying price recorded
with the nearest unexpired expiry among those recorded within the staleness limit (a stale
expiry does not hold it; with none that fresh it keeps the latest recorded value and is stale).
An expiry settles at the mean of that index over its delivery window, counting only the time
it was fresh; a window with nothing fresh settles at the latest recorded underlying and is
reported (``settlements``) and logged as not covered by the recording. The recording holds no
perpetual: the venue's perpetual (``RecordedPerpMarket``) is the synthetic one around the
recorded index, and shows no book (so fills nothing) while that index is stale.
"""
from __future__ import annotations

import bisect
import csv
import dataclasses
import gzip
import io
import logging
import math
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from simulator.calendar import FRIDAY, QUARTER_MONTHS, format_strike, format_symbol, last_friday_ms, parse_symbol
from simulator.market import Book, Instrument, MarketConfig, MarketModel, MarkValues, OptionQuote
from simulator.market_source import RecordedRows
from simulator.perpetuals import PerpConfig, PerpMarket
from simulator.side_faults import EmptySides

if TYPE_CHECKING:  # config imports the exchange, which must not import this module back
    from simulator.config import SimulatorConfig
    from simulator.exchange import ExchangeConfig
    from simulator.market_source import MarketSource

log = logging.getLogger(__name__)

STATE_VERSION = 1
STATE_KIND = "history"

# The Tardis.dev ``options_chain`` columns, in their order (docs/HISTORY.md "Format").
COLUMNS: tuple[str, ...] = (
    "exchange", "symbol", "timestamp", "local_timestamp", "type", "strike_price", "expiration",
    "open_interest", "last_price", "bid_price", "bid_amount", "bid_iv", "ask_price", "ask_amount", "ask_iv",
    "mark_price", "mark_iv", "underlying_index", "underlying_price", "delta", "gamma", "vega", "theta", "rho",
)
REQUIRED_COLUMNS: tuple[str, ...] = (
    "exchange", "symbol", "timestamp", "type", "strike_price", "expiration", "bid_price", "bid_amount",
    "ask_price", "ask_amount", "mark_price", "underlying_price",
)
# Prices of these venues are quoted in the base coin (BTC) and converted with the row's
# underlying price; prices of the others are already in USD.
COIN_QUOTED_EXCHANGES = frozenset({"deribit"})
USD_QUOTED_EXCHANGES = frozenset({"coincall"})
LOT_BTC = 0.01
DEFAULT_STALE_SECONDS = 300.0
_TYPES = {"call": "C", "put": "P"}


class HistoryFormatError(ValueError):
    """The file is not an ``options_chain`` CSV this reader understands; says where and why."""


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One recorded state of one option, converted to Coincall units (USD, BTC, fractions).

    ``bid``/``ask`` are 0.0 with a 0.0 size when the recording had no such side.
    """

    time_ms: int
    symbol: str
    expiry_ms: int
    strike: float
    option_type: str
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    mark: float
    mark_iv: float
    bid_iv: float
    ask_iv: float
    underlying_price: float
    delta: float
    gamma: float
    vega: float
    theta: float
    rho: float


@dataclass(frozen=True)
class HistoryData:
    """A whole file, parsed: every kept row per symbol in time order, and what it says of the index."""

    path: str
    base: str
    rows: dict[str, list[HistoryRow]]
    skipped_rows: int

    @property
    def row_count(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    @property
    def start_ms(self) -> int:
        return min(rows[0].time_ms for rows in self.rows.values())

    @property
    def end_ms(self) -> int:
        return max(rows[-1].time_ms for rows in self.rows.values())


# ---------------------------------------------------------------------------------------- reading


def _open_text(path: str | os.PathLike[str]) -> io.TextIOBase:
    """The file as text; ``.gz`` files are decompressed on the fly (Tardis ships them so)."""
    if os.fspath(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _data_lines(handle: io.TextIOBase) -> Iterator[str]:
    """The file's lines without ``#`` comment lines (the recorder documents its currency in one)."""
    for line in handle:
        if not line.startswith("#"):
            yield line


def _float(raw: str | None) -> float | None:
    """A number from a CSV field; None for an empty field or something that is not a finite number."""
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _tick_decimals(tick: float) -> int:
    text = f"{tick:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def coincall_symbol(symbol: str, exchange: str, base: str) -> str | None:
    """The Coincall symbol of a recorded one (``BTC-27DEC24-60000-C`` -> ``BTCUSD-27DEC24-60000-C``).

    None when the symbol is of another underlying (``ETH-...``, ``BTC_USDC-...``): the file may
    hold every coin, the market serves one. Raises ``HistoryFormatError`` for a malformed symbol.
    """
    parts = symbol.split("-")
    if len(parts) != 4:
        raise HistoryFormatError(f"not an option symbol: {symbol!r}")
    underlying, date_token, strike_token, option_type = parts
    coin = underlying[:-3] if exchange in USD_QUOTED_EXCHANGES and underlying.endswith("USD") else underlying
    if coin != base:
        return None
    # Deribit writes a decimal strike with a 'd' (``8d6`` is 8.6).
    strike_text = strike_token.replace("d", ".")
    try:
        parsed = parse_symbol(f"{base}USD-{date_token}-{strike_text}-{option_type}")
    except ValueError as exc:
        raise HistoryFormatError(str(exc)) from exc
    return format_symbol(base, parsed.expiry_ms, parsed.strike, parsed.option_type)


class _RowConverter:
    """Turns one CSV record into a ``HistoryRow`` in Coincall units (docs/HISTORY.md "Conversion")."""

    def __init__(self, base: str, tick_size: float) -> None:
        self.base = base
        self.tick = tick_size
        self.tick_dp = _tick_decimals(tick_size)

    def _floor_tick(self, price: float) -> float:
        return round(math.floor(price / self.tick + 1e-9) * self.tick, self.tick_dp)

    def _ceil_tick(self, price: float) -> float:
        return round(math.ceil(price / self.tick - 1e-9) * self.tick, self.tick_dp)

    @staticmethod
    def _lots(amount: float | None) -> float:
        """An amount in BTC floored to the 0.01 lot (a fraction of a lot cannot be traded)."""
        if amount is None or amount <= 0:
            return 0.0
        return round(math.floor(amount / LOT_BTC + 1e-9) * LOT_BTC, 2)

    def convert(self, record: dict[str, str], line: int) -> HistoryRow | None:
        exchange = (record.get("exchange") or "").strip().lower()
        if exchange not in COIN_QUOTED_EXCHANGES and exchange not in USD_QUOTED_EXCHANGES:
            raise HistoryFormatError(f"line {line}: unknown exchange {exchange!r} (prices of "
                                     f"{sorted(COIN_QUOTED_EXCHANGES)} are in the coin, of "
                                     f"{sorted(USD_QUOTED_EXCHANGES)} in USD)")
        try:
            symbol = coincall_symbol((record.get("symbol") or "").strip(), exchange, self.base)
        except HistoryFormatError as exc:
            raise HistoryFormatError(f"line {line}: {exc}") from None
        if symbol is None:
            return None
        parsed = parse_symbol(symbol)
        stamp_us = _float(record.get("timestamp"))
        expiration_us = _float(record.get("expiration"))
        underlying = _float(record.get("underlying_price"))
        mark = _float(record.get("mark_price"))
        strike = _float(record.get("strike_price"))
        option_type = _TYPES.get((record.get("type") or "").strip().lower())
        if stamp_us is None or expiration_us is None or underlying is None or underlying <= 0 or mark is None:
            raise HistoryFormatError(f"line {line}: timestamp, expiration, underlying_price and mark_price "
                                     f"are needed on every row")
        if int(expiration_us) // 1000 != parsed.expiry_ms or option_type != parsed.option_type \
                or strike is None or abs(strike - parsed.strike) > 1e-9:
            raise HistoryFormatError(f"line {line}: expiration, type or strike_price disagree with {symbol}")
        factor = underlying if exchange in COIN_QUOTED_EXCHANGES else 1.0
        bid, bid_size = self._side(record, "bid", factor, self._floor_tick)
        ask, ask_size = self._side(record, "ask", factor, self._ceil_tick)
        if bid and ask and bid >= ask:   # a crossed recording: the bid is not believed
            bid, bid_size = 0.0, 0.0
        return HistoryRow(
            time_ms=int(stamp_us) // 1000, symbol=symbol, expiry_ms=parsed.expiry_ms, strike=parsed.strike,
            option_type=parsed.option_type, bid=bid, bid_size=bid_size, ask=ask, ask_size=ask_size,
            mark=round(max(0.0, mark * factor), 2), mark_iv=self._iv(record.get("mark_iv")),
            bid_iv=self._iv(record.get("bid_iv")) if bid else 0.0,
            ask_iv=self._iv(record.get("ask_iv")) if ask else 0.0,
            underlying_price=round(underlying, 2),
            delta=_float(record.get("delta")) or 0.0, gamma=_float(record.get("gamma")) or 0.0,
            vega=_float(record.get("vega")) or 0.0, theta=_float(record.get("theta")) or 0.0,
            rho=_float(record.get("rho")) or 0.0,
        )

    def _side(self, record: dict[str, str], side: str, factor: float,
              snap: Any) -> tuple[float, float]:
        """(USD price on the tick, BTC size in lots) of one side; (0, 0) when it was not offered."""
        price = _float(record.get(f"{side}_price"))
        size = self._lots(_float(record.get(f"{side}_amount")))
        if price is None or price <= 0 or size <= 0:
            return 0.0, 0.0
        usd = float(snap(price * factor))
        if usd < self.tick:
            return 0.0, 0.0
        return usd, size

    @staticmethod
    def _iv(raw: str | None) -> float:
        """A recorded IV in percent (``55.91``) as a fraction (``0.5591``); 0.0 when missing."""
        value = _float(raw)
        return value / 100.0 if value is not None and value > 0 else 0.0


def _check_header(fields: Sequence[str] | None, path: str) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in (fields or ())]
    if missing:
        raise HistoryFormatError(f"{path}: not an options_chain CSV, missing columns {missing}")


def read_history(path: str | os.PathLike[str], *, base: str = "BTC", tick_size: float = 1.0,
                 thin_seconds: float = 0.0) -> HistoryData:
    """Parse a Tardis-layout ``options_chain`` CSV (plain or ``.gz``) into rows per symbol.

    ``thin_seconds`` keeps at most one row per symbol per that many seconds (the first one
    after the gap; later rows of the gap are dropped, never moved earlier, so thinning only
    makes quotes staler, never early). Rows of other underlyings are skipped and counted.
    """
    converter = _RowConverter(base, tick_size)
    rows: dict[str, list[HistoryRow]] = {}
    skipped = 0
    name = os.fspath(path)
    with _open_text(path) as handle:
        reader = csv.DictReader(_data_lines(handle))
        _check_header(reader.fieldnames, name)
        for record in reader:
            row = converter.convert(record, reader.line_num)
            if row is None:
                skipped += 1
                continue
            rows.setdefault(row.symbol, []).append(row)
    if not rows:
        raise HistoryFormatError(f"{name}: no {base} option rows")
    thin_ms = max(0, round(thin_seconds * 1000))
    for symbol, symbol_rows in rows.items():
        symbol_rows.sort(key=lambda r: r.time_ms)   # stable: of two rows at one instant, the later line wins
        rows[symbol] = _thinned(_last_per_instant(symbol_rows), thin_ms)
    data = HistoryData(path=name, base=base, rows=rows, skipped_rows=skipped)
    log.info("history %s: %d rows of %d %s options, %s..%s (%d rows of other underlyings skipped)",
             name, data.row_count, len(rows), base, _iso(data.start_ms), _iso(data.end_ms), skipped)
    return data


def _last_per_instant(rows: list[HistoryRow]) -> list[HistoryRow]:
    kept: list[HistoryRow] = []
    for row in rows:
        if kept and kept[-1].time_ms == row.time_ms:
            kept[-1] = row
        else:
            kept.append(row)
    return kept


def _thinned(rows: list[HistoryRow], thin_ms: int) -> list[HistoryRow]:
    if thin_ms <= 0:
        return rows
    kept: list[HistoryRow] = []
    for row in rows:
        if not kept or row.time_ms - kept[-1].time_ms >= thin_ms:
            kept.append(row)
    return kept


def history_span(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(first, last) row timestamp of a history file in epoch ms, every underlying included.

    For choosing a run's period (the clock of a history run starts at the first row); reads
    only the ``timestamp`` column.
    """
    first: int | None = None
    last: int | None = None
    name = os.fspath(path)
    with _open_text(path) as handle:
        reader = csv.reader(_data_lines(handle))
        header = next(reader, None)
        _check_header(header, name)
        assert header is not None
        column = header.index("timestamp")
        for record in reader:
            stamp = _float(record[column]) if len(record) > column else None
            if stamp is None:
                continue
            ms = int(stamp) // 1000
            first = ms if first is None else min(first, ms)
            last = ms if last is None else max(last, ms)
    if first is None or last is None:
        raise HistoryFormatError(f"{name}: no rows")
    return first, last


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def expiry_kind_of(expiry_ms: int) -> str:
    """Coincall's kind of an expiry from its date: the last Friday of a quarter month is
    ``quarterly``, of another month ``monthly``, another Friday ``weekly``, else ``daily``
    (the delivery fee depends on it: none for dailies)."""
    moment = datetime.fromtimestamp(expiry_ms / 1000, tz=timezone.utc)
    if moment.weekday() != FRIDAY:
        return "daily"
    if last_friday_ms(moment.year, moment.month) == expiry_ms:
        return "quarterly" if moment.month in QUARTER_MONTHS else "monthly"
    return "weekly"


# ---------------------------------------------------------------------------------------- the market


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a passed expiry of a replay settled (``HistoryMarket.settlements``).

    ``fresh_ms`` is how many milliseconds of the delivery window (the ``window_ms`` ending at
    the expiry, the expiry included) had an index recorded within the staleness limit; ``price``
    is that index's mean over them, to the cent.
    ``covered`` False means nothing in the window was fresh: ``price`` is then the latest
    underlying recorded at or before the expiry, recorded at ``price_time_ms``, which is not a
    settlement the recording supports (the run says so in a warning).
    """

    expiry_ms: int
    price: float
    window_ms: int
    fresh_ms: int
    price_time_ms: int

    @property
    def covered(self) -> bool:
        return self.fresh_ms > 0


class HistoryMarket:
    """Recorded quotes as the exchange's market; the surface of ``market_source.MarketSource``.

    Thread-safe: every public method takes one lock. Deterministic: a pure function of the
    file and the simulated time (and the fault switches a test flips).
    """

    def __init__(self, data: HistoryData, config: MarketConfig, start_ms: int, *,
                 stale_seconds: float = DEFAULT_STALE_SECONDS) -> None:
        if stale_seconds <= 0:
            raise ValueError("stale_seconds must be positive")
        self._data = data
        self._config = config
        self._lock = threading.RLock()
        self._now_ms = int(start_ms)
        self._stale_ms = round(stale_seconds * 1000)
        self._frozen_value: float | None = None
        self._empty_sides = EmptySides()
        self._fault_version = 0
        self._rows = data.rows
        self._times = {symbol: [row.time_ms for row in rows] for symbol, rows in data.rows.items()}
        self._instruments = {symbol: self._instrument_of(rows[0]) for symbol, rows in data.rows.items()}
        self._listing = sorted(self._instruments.values(), key=lambda i: (i.expiry_ms, i.strike, i.option_type))
        self._expiry_times, self._expiry_prices = self._underlying_by_expiry()
        self._index_times, self._index_values, self._index_fresh = self._index_series()
        self._window_ms = round(config.delivery_window_seconds * 1000)
        self._settlements: dict[int, Settlement] = {}
        self._change_times = self._quote_change_times()
        self._quote_cache: dict[str, OptionQuote] = {}
        self._cache_stamp: tuple[Any, ...] | None = None

    def _instrument_of(self, row: HistoryRow) -> Instrument:
        cfg = self._config
        return Instrument(symbol=row.symbol, base=self._data.base, strike=row.strike,
                          strike_token=format_strike(row.strike), option_type=row.option_type,
                          expiry_ms=row.expiry_ms, listed_ms=row.time_ms, tick_size=cfg.tick_size,
                          min_qty=cfg.min_qty, kind=expiry_kind_of(row.expiry_ms))

    def _index_series(self) -> tuple[list[int], list[float], list[bool]]:
        """The index as a step function of time: (instants it may change, its value, whether fresh).

        At ``t`` the index is the latest underlying price of the nearest unexpired expiry among
        those with a row at most the staleness limit old: an expiry whose rows stopped does not
        hold the index while others are recorded. When no expiry is that fresh, the index is the
        most recently recorded underlying price (of an unexpired expiry if any) and is stale.
        An expiry counts up to and including its instant (its price then is what it settles on),
        so the index can change at a row, at a row turning stale without a successor, and 1 ms
        after an expiry.
        """
        stale = self._stale_ms
        events: set[int] = set()
        for expiry, expiry_times in self._expiry_times.items():
            events.update(expiry_times)
            events.add(expiry + 1)
            for current, following in zip(expiry_times, [*expiry_times[1:], None]):
                if following is None or following - current > stale:
                    events.add(current + stale + 1)
        points = sorted(((t, expiry, price) for expiry, expiry_times in self._expiry_times.items()
                         for t, price in zip(expiry_times, self._expiry_prices[expiry])), key=lambda p: p[0])
        latest: dict[int, tuple[int, float]] = {}     # expiry -> (time, price) of its latest row so far
        consumed = 0
        times: list[int] = []
        values: list[float] = []
        fresh_flags: list[bool] = []
        for t in sorted(events):
            while consumed < len(points) and points[consumed][0] <= t:
                row_time, expiry, price = points[consumed]
                latest[expiry] = (row_time, price)   # stable sort: of one instant, the later row wins
                consumed += 1
            if not latest:
                continue
            live = [expiry for expiry in latest if expiry >= t]
            fresh = [expiry for expiry in live if t - latest[expiry][0] <= stale]
            if fresh:
                chosen = min(fresh)
            else:
                # Nothing fresh: the latest recorded price (ties: the nearer expiry), marked stale.
                chosen = max(live or latest, key=lambda e: (latest[e][0], -e))
            value = latest[chosen][1]
            if not values or (values[-1], fresh_flags[-1]) != (value, bool(fresh)):
                times.append(t)
                values.append(value)
                fresh_flags.append(bool(fresh))
        return times, values, fresh_flags

    def _underlying_by_expiry(self) -> tuple[dict[int, list[int]], dict[int, list[float]]]:
        pairs: dict[int, list[tuple[int, float]]] = {}
        for rows in self._rows.values():
            for row in rows:
                pairs.setdefault(row.expiry_ms, []).append((row.time_ms, row.underlying_price))
        times: dict[int, list[int]] = {}
        prices: dict[int, list[float]] = {}
        for expiry, points in pairs.items():
            points.sort(key=lambda p: p[0])
            times[expiry] = [t for t, _ in points]
            prices[expiry] = [p for _, p in points]
        return times, prices

    def _quote_change_times(self) -> list[int]:
        """Every instant a quote can change: a new row, or a row turning stale without a successor."""
        changes: set[int] = set(self._index_times)
        for times in self._times.values():
            changes.update(times)
            for current, following in zip(times, [*times[1:], None]):
                if following is None or following - current > self._stale_ms:
                    changes.add(current + self._stale_ms + 1)
        for instrument in self._listing:
            changes.add(instrument.expiry_ms)
        return sorted(changes)

    # ------------------------------------------------------------------ the surface

    @property
    def config(self) -> MarketConfig:
        return self._config

    @property
    def now_ms(self) -> int:
        return self._now_ms

    @property
    def data(self) -> HistoryData:
        return self._data

    @property
    def start_ms(self) -> int:
        return self._data.start_ms

    @property
    def end_ms(self) -> int:
        return self._data.end_ms

    def advance_to(self, now_ms: int) -> None:
        """Move to ``now_ms`` (never backwards); the recording decides what is then visible."""
        with self._lock:
            self._now_ms = max(self._now_ms, int(now_ms))

    def index_price(self) -> float:
        """The index now (``_index_series``; the last recorded value while stale, frozen while frozen)."""
        with self._lock:
            if self._frozen_value is not None:
                return self._frozen_value
            return self._index_at(self._now_ms)

    def _index_at(self, t_ms: int) -> float:
        position = bisect.bisect_right(self._index_times, t_ms) - 1
        return self._index_values[max(0, position)]

    def index_fresh(self) -> bool:
        """Whether the index now comes from a row at most the staleness limit old.

        False before the first row and during a gap of the recording: the replay's perpetual
        then shows no book (``RecordedPerpMarket``). Independent of ``freeze_index``.
        """
        with self._lock:
            position = bisect.bisect_right(self._index_times, self._now_ms) - 1
            return position >= 0 and self._index_fresh[position]

    def _fresh_mean(self, start_ms: int, end_ms: int) -> tuple[float | None, int]:
        """(mean, milliseconds counted) of the index over the instants of [start_ms, end_ms] at
        which it was fresh, each millisecond weighing the same; (None, 0) when it never was."""
        times, values, fresh = self._index_times, self._index_values, self._index_fresh
        if end_ms < start_ms or not times:
            return None, 0
        total = 0.0
        counted = 0
        position = max(0, bisect.bisect_right(times, start_ms) - 1)
        while position < len(times) and times[position] <= end_ms:
            if fresh[position]:
                low = max(start_ms, times[position])
                high = min(end_ms, times[position + 1] - 1) if position + 1 < len(times) else end_ms
                if high >= low:
                    total += values[position] * (high - low + 1)
                    counted += high - low + 1
            position += 1
        return (total / counted if counted else None), counted

    def index_average(self, start_ms: int, end_ms: int) -> float:
        """Mean of the index over the part of [start_ms, end_ms] it was fresh (``_fresh_mean``);
        ``ValueError`` when it never was: an average of stale values is never given."""
        with self._lock:
            start_ms, end_ms = int(start_ms), int(end_ms)
            if end_ms < start_ms:
                raise ValueError("index_average needs start_ms <= end_ms")
            mean, _counted = self._fresh_mean(start_ms, end_ms)
            if mean is None:
                raise ValueError(f"no index recorded within {self._stale_ms} ms in [{start_ms}, {end_ms}]")
            return mean

    def _latest_underlying(self, at_ms: int) -> tuple[int, float] | None:
        """(time, price) of the latest underlying recorded at or before ``at_ms``, of any expiry."""
        best: tuple[int, float] | None = None
        for expiry, times in self._expiry_times.items():
            position = bisect.bisect_right(times, at_ms) - 1
            if position >= 0 and (best is None or times[position] > best[0]):
                best = (times[position], self._expiry_prices[expiry][position])
        return best

    def _settlement(self, expiry_ms: int) -> Settlement | None:
        """How ``expiry_ms`` settles once passed (cached: rows at or before it never change)."""
        settled = self._settlements.get(expiry_ms)
        if settled is not None or self._now_ms < expiry_ms or expiry_ms not in self._expiry_times:
            return settled
        mean, fresh_ms = self._fresh_mean(expiry_ms - self._window_ms + 1, expiry_ms)
        if mean is not None:
            settled = Settlement(expiry_ms=expiry_ms, price=round(mean, 2), window_ms=self._window_ms,
                                 fresh_ms=fresh_ms, price_time_ms=expiry_ms)
        else:
            latest = self._latest_underlying(expiry_ms)
            if latest is None:
                return None
            settled = Settlement(expiry_ms=expiry_ms, price=latest[1], window_ms=self._window_ms, fresh_ms=0,
                                 price_time_ms=latest[0])
            log.warning("history %s: expiry %s is NOT covered by the recording: no underlying price recorded "
                        "within %.0f s at any time of its %.0f s delivery window; it settles at %.2f, recorded "
                        "%.0f s before the expiry, a price the recording does not support", self._data.path,
                        _iso(expiry_ms), self._stale_ms / 1000, self._window_ms / 1000, settled.price,
                        (expiry_ms - settled.price_time_ms) / 1000)
        self._settlements[expiry_ms] = settled
        return settled

    def delivery_price(self, expiry_ms: int) -> float | None:
        """Once ``expiry_ms`` has passed: its settlement price (``_settlement``); None before."""
        with self._lock:
            settled = self._settlement(int(expiry_ms))
            return settled.price if settled is not None else None

    def delivery_prices(self) -> dict[int, float]:
        with self._lock:
            out: dict[int, float] = {}
            for expiry in sorted(self._expiry_times):
                if expiry <= self._now_ms and self._visible_expiry(expiry):
                    settled = self._settlement(expiry)
                    if settled is not None:
                        out[expiry] = settled.price
            return out

    def settlements(self) -> list[Settlement]:
        """How every passed expiry of the recording settled, by expiry; see ``Settlement.covered``."""
        with self._lock:
            out = [self._settlement(expiry) for expiry in sorted(self._expiry_times)
                   if expiry <= self._now_ms and self._visible_expiry(expiry)]
            return [settled for settled in out if settled is not None]

    def estimated_delivery_price(self, expiry_ms: int) -> float:
        """The delivery price once passed; inside the window the fresh index's mean so far; else the index."""
        with self._lock:
            expiry_ms = int(expiry_ms)
            if self._now_ms >= expiry_ms:
                settled = self._settlement(expiry_ms)
                if settled is not None:
                    return settled.price
                return self.index_price()
            mean, _counted = self._fresh_mean(expiry_ms - self._window_ms + 1, self._now_ms)
            return round(mean, 2) if mean is not None else self.index_price()

    def _visible_expiry(self, expiry_ms: int) -> bool:
        times = self._expiry_times.get(expiry_ms)
        return times is not None and bool(times) and times[0] <= self._now_ms

    def instruments(self) -> list[Instrument]:
        """Instruments recorded at or before now and not yet expired, by (expiry, strike, type)."""
        with self._lock:
            now = self._now_ms
            return [i for i in self._listing if i.listed_ms <= now < i.expiry_ms]

    def instruments_for_expiry(self, expiry_ms: int) -> list[Instrument]:
        with self._lock:
            now = self._now_ms
            return [i for i in self._listing if i.expiry_ms == int(expiry_ms) and i.listed_ms <= now < i.expiry_ms]

    def instrument(self, symbol: str) -> Instrument | None:
        """An instrument recorded at or before now (expired ones included); None otherwise."""
        with self._lock:
            instrument = self._instruments.get(symbol)
            if instrument is None or instrument.listed_ms > self._now_ms:
                return None
            return instrument

    def expiries(self) -> list[int]:
        with self._lock:
            now = self._now_ms
            return sorted({i.expiry_ms for i in self._listing if i.listed_ms <= now < i.expiry_ms})

    def expiry_kind(self, expiry_ms: int) -> str | None:
        with self._lock:
            return expiry_kind_of(int(expiry_ms)) if self._visible_expiry(int(expiry_ms)) else None

    def is_expired(self, symbol: str) -> bool:
        with self._lock:
            instrument = self.instrument(symbol)
            if instrument is None:
                raise KeyError(symbol)
            return self._now_ms >= instrument.expiry_ms

    def _live_instrument(self, symbol: str) -> Instrument:
        instrument = self.instrument(symbol)
        if instrument is None:
            raise KeyError(symbol)
        if self._now_ms >= instrument.expiry_ms:
            raise KeyError(f"{symbol} has expired")
        return instrument

    @property
    def quote_stamp(self) -> tuple[Any, ...]:
        """Equal stamps mean identical quotes and books: the count of quote changes so far."""
        with self._lock:
            return (bisect.bisect_right(self._change_times, self._now_ms), self._fault_version)

    def recorded_rows(self, symbol: str) -> RecordedRows:
        """``symbol``'s recorded rows, their instants and the staleness limit (``market_source.MarketSource``)."""
        return RecordedRows(rows=self._rows.get(symbol, []), times=self._times.get(symbol, []),
                            stale_ms=self._stale_ms)

    def current_row(self, symbol: str) -> HistoryRow | None:
        """The row in force for ``symbol`` now (stale or not); None before its first row."""
        with self._lock:
            times = self._times.get(symbol)
            if not times:
                return None
            position = bisect.bisect_right(times, self._now_ms) - 1
            return self._rows[symbol][position] if position >= 0 else None

    def quotes(self, symbols: Sequence[str]) -> list[OptionQuote]:
        """``quote`` of each symbol, in order."""
        return [self.quote(symbol) for symbol in symbols]

    def quote(self, symbol: str) -> OptionQuote:
        """The latest recorded state at or before now; ``KeyError`` for unknown, unlisted or expired.

        A row older than the staleness limit keeps its mark and greeks but shows no book.
        """
        with self._lock:
            stamp = self.quote_stamp
            if stamp != self._cache_stamp:
                self._cache_stamp = stamp
                self._quote_cache.clear()
            cached = self._quote_cache.get(symbol)
            if cached is not None:
                return cached
            self._live_instrument(symbol)
            row = self.current_row(symbol)
            assert row is not None, "a listed instrument has a row at or before now"
            bids, asks = self._book_of(row)
            bid, bid_size = bids[0] if bids else (0.0, 0.0)
            ask, ask_size = asks[0] if asks else (0.0, 0.0)
            quote = OptionQuote(
                symbol=symbol, time_ms=row.time_ms, index_price=self.index_price(),
                underlying_price=row.underlying_price, mark=row.mark, iv=row.mark_iv, delta=row.delta,
                gamma=row.gamma, vega=row.vega, theta=row.theta, rho=row.rho, bid=bid, ask=ask,
                bid_size=bid_size, ask_size=ask_size, bid_iv=row.bid_iv if bids else 0.0,
                ask_iv=row.ask_iv if asks else 0.0,
            )
            self._quote_cache[symbol] = quote
            return quote

    def mark_values(self, symbol: str) -> MarkValues:
        """``symbol``'s mark and greeks from its quote (a recorded row costs nothing to read)."""
        return MarkValues.of(self.quote(symbol))

    def book(self, symbol: str, depth: int = 100) -> Book:
        """The recorded best bid and ask with their amounts (one level a side); a missing side is empty."""
        with self._lock:
            self._live_instrument(symbol)
            row = self.current_row(symbol)
            assert row is not None, "a listed instrument has a row at or before now"
            bids, asks = self._book_of(row)
            depth = max(0, int(depth))
            return bids[:depth], asks[:depth]

    def top_of_book(self, symbol: str) -> Book:
        """The recorded book is one level a side already."""
        return self.book(symbol, 1)

    def _book_of(self, row: HistoryRow) -> Book:
        if self._now_ms - row.time_ms > self._stale_ms:
            return [], []
        bids = [(row.bid, row.bid_size)] if row.bid > 0 and row.bid_size > 0 else []
        asks = [(row.ask, row.ask_size)] if row.ask > 0 and row.ask_size > 0 else []
        bid_empty, ask_empty = self._empty_sides.of(row.symbol)
        return ([] if bid_empty else bids), ([] if ask_empty else asks)

    # ------------------------------------------------------------------ fault switches

    def freeze_index(self, frozen: bool) -> None:
        """Publish the index of this moment until unfrozen (a stale feed); the recording goes on."""
        with self._lock:
            if frozen and self._frozen_value is None:
                self._frozen_value = self._index_at(self._now_ms)
            elif not frozen:
                self._frozen_value = None
            self._fault_version += 1

    @property
    def index_frozen(self) -> bool:
        return self._frozen_value is not None

    def set_empty_side(self, pattern: str, side: str | None) -> None:
        """Empty one recorded side of every symbol matching ``pattern`` (as ``MarketModel`` does)."""
        with self._lock:
            self._empty_sides.set(pattern, side)
            self._fault_version += 1

    def set_scripted_path(self, points: Sequence[tuple[int, float]] | None) -> None:
        """Refused: a recorded market follows its file (scripted paths are for the synthetic market)."""
        if points:
            raise ValueError("a recorded market follows its file: a scripted index path needs the synthetic market")

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        """Where the replay is; the rows themselves stay in their file (checked on restore)."""
        with self._lock:
            return {
                "state_version": STATE_VERSION,
                "kind": STATE_KIND,
                "file": self._data.path,
                "rows": self._data.row_count,
                "start_ms": self._data.start_ms,
                "end_ms": self._data.end_ms,
                "now_ms": self._now_ms,
                "stale_ms": self._stale_ms,
                "frozen_value": self._frozen_value,
                "empty_sides": self._empty_sides.to_state(),
            }

    @classmethod
    def from_state(cls, data: HistoryData, config: MarketConfig, state: dict[str, Any]) -> "HistoryMarket":
        """Continue a replay saved by ``to_state`` over the same recording (``ValueError`` otherwise)."""
        if state.get("state_version") != STATE_VERSION or state.get("kind") != STATE_KIND:
            raise ValueError("the saved market is not a history replay this version can continue")
        if (int(state["rows"]), int(state["start_ms"]), int(state["end_ms"])) != \
                (data.row_count, data.start_ms, data.end_ms):
            raise ValueError(f"the saved replay was of another recording than {data.path}")
        market = cls(data, config, int(state["now_ms"]), stale_seconds=int(state["stale_ms"]) / 1000)
        frozen = state.get("frozen_value")
        market._frozen_value = float(frozen) if frozen is not None else None
        market._empty_sides = EmptySides(state.get("empty_sides"))
        return market


class RecordedPerpMarket(PerpMarket):
    """The venue's perpetual in a replay: the synthetic perpetual around the recorded index,
    with no book (so no fill, taker or resting) while that index is stale.

    Why: an options chain records no perpetual. Its book (half-spread, depth, sizes) is the
    simulator's model around the recorded underlying price; while the recording is fresh that
    model is anchored to a price the market showed, but during a gap it would be anchored to a
    price nobody refreshed, and a hedge could trade on it at will (docs/HISTORY.md).
    """

    def __init__(self, config: PerpConfig, underlying: HistoryMarket) -> None:
        super().__init__(config, underlying)
        self._recorded = underlying

    def book(self, depth: int = 100) -> Book:
        if not self._recorded.index_fresh():
            return [], []
        return super().book(depth)


def perp_market(config: PerpConfig, underlying: MarketSource) -> PerpMarket:
    """The perpetual ``config`` on ``underlying``'s index: ``RecordedPerpMarket`` on a replay,
    the synthetic ``PerpMarket`` (unchanged) on any other market."""
    if isinstance(underlying, HistoryMarket):
        return RecordedPerpMarket(config, underlying)
    return PerpMarket(config, underlying)


# ---------------------------------------------------------------------------------------- wiring


def recorded_exchange_config(base: ExchangeConfig) -> ExchangeConfig:
    """The exchange settings a recorded market needs so that fills come only from the recording.

    * no fill at the touch by probability: a resting order fills only when a later recorded
      quote trades through it (``passive_fill_prob_per_min_at_touch`` 0);
    * depth a fill took stays taken until the recorded level changes (price or amount), never
      merely because time passed: the recording does not know of our trades;
    * no simulated RFQ makers: nothing in the recording says what a block would have cost, and
      a quote priced off the mark would be the fill at mid that a backtest must never show.

    The one thing a replay cannot take from the recording is the perpetual's book: it is the
    model's, and shows nothing while the recorded index is stale (``RecordedPerpMarket``).
    """
    return dataclasses.replace(base, passive_fill_prob_per_min_at_touch=0.0,
                               book_replenish_seconds=float(10 * 365 * 86_400), rfq_maker_count=0)


def _history_data(config: SimulatorConfig, market_config: MarketConfig) -> HistoryData:
    assert config.history_file is not None
    return read_history(config.history_file, base=market_config.base, tick_size=market_config.tick_size,
                        thin_seconds=config.history_thin_seconds)


def build_market(config: SimulatorConfig, start_ms: int) -> MarketSource:
    """The market of a fresh simulator: the recording of ``history_file``, else the synthetic one.

    A history run must start inside its recording (``history_span``): before its first row
    nothing is listed, after its last every quote is stale.
    """
    market_config = config.market_config()
    if config.history_file is None:
        return MarketModel(market_config, start_ms)
    data = _history_data(config, market_config)
    if not data.start_ms <= start_ms <= data.end_ms:
        raise ValueError(f"the simulated clock ({_iso(start_ms)}) is outside {config.history_file} "
                         f"({_iso(data.start_ms)}..{_iso(data.end_ms)}): start it at history_span(path)[0]")
    return HistoryMarket(data, market_config, start_ms, stale_seconds=config.history_stale_seconds)


def restore_market(config: SimulatorConfig, state: dict[str, Any]) -> MarketSource:
    """The market saved in a state file, of the kind the configuration asks for."""
    market_config = config.market_config()
    saved_history = state.get("kind") == STATE_KIND
    if config.history_file is None:
        if saved_history:
            raise ValueError("the state file holds a history replay; configure its history_file to continue it")
        return MarketModel.from_state(market_config, state)
    if not saved_history:
        raise ValueError("the state file holds the synthetic market, not a replay of the history_file")
    return HistoryMarket.from_state(_history_data(config, market_config), market_config, state)


__all__ = [
    "COLUMNS",
    "HistoryData",
    "HistoryFormatError",
    "HistoryMarket",
    "HistoryRow",
    "RecordedPerpMarket",
    "Settlement",
    "build_market",
    "coincall_symbol",
    "expiry_kind_of",
    "history_span",
    "perp_market",
    "read_history",
    "recorded_exchange_config",
    "restore_market",
]
