"""Coincall payloads <-> typed values: with ``coincall_client.py``, the only module that knows
Coincall's field names.

Why it exists: the exchange speaks camelCase, sends numbers as JSON numbers or strings, and
names the same thing differently on different routes (``qty`` / ``quantity``, ``id`` /
``tradeId``, ``delivery_price`` / ``deliveryPrice``). Read in many places, those names and
quirks are re-learnt in each, and one reading drifts from the next. Here every answer the
product reads becomes a frozen value, and every request filter it sends is built, in one
place; the rest of the product reads attributes (``tests/unit/test_field_names_stay_at_the_adapter.py``
keeps it so).

How values are read (API.md 0, 7.1: numbers may be strings):

* Optional fields are optional here too: an absent or unreadable number, id or code is
  ``None`` (``api_values``' lenient readers), so the caller decides what a missing value means.
  Nothing is defaulted to a made-up number, and nothing absent becomes a positive answer.
* Fields a value cannot exist without raise a typed error naming the field, never a
  ``KeyError``: ``PayloadError`` for account, position and settlement payloads,
  ``StaleDataError`` for market data (no decision may be taken from it).
* The HTTP client returns the options routes' JSON as it came; parsing happens here, so a
  test fake that returns plain dicts goes through the same code as the real exchange. The
  perpetual-futures methods (``perp_*``) call the parsers of the last section themselves and
  return typed values; those parsers are strict (see that section).

Sections: market data (API.md 5, 6), what the start-up summary and ``status`` show, the
account (7), orders, fills and history pages (8), settlement (6.5, 8.6), RFQ and block
trades (10), perpetual futures (14).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import date, datetime, timezone
from enum import IntEnum
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Generic, TypeVar

from api_values import finite_number, int_or_none
from contracts import Contract, Side, parse_symbol
from display import fmt_time
from errors import PayloadError, StaleDataError

logger = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=IntEnum)


# ---------------------------------------------------------------------------------------
# Market data (API.md 6): instruments, chain rows, order books (symbols: contracts.parse_symbol)
# ---------------------------------------------------------------------------------------

# The exchange fills an unknown IV with Double.MAX (API.md §6.2, ``lastPriceIv``).
_IV_SENTINEL_FLOOR = 1e300


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


@dataclass(frozen=True, slots=True)
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


# Market payloads -> the values above: numbers may be strings; a required field that is
# missing or unreadable is a StaleDataError (no decision may be taken from such data).


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


def _strike(raw: Mapping[str, Any], symbol: str, what: str) -> float:
    """The row's ``strike``, which must be the symbol's own: a row whose strike contradicts its
    symbol is refused (``StaleDataError``), never priced, selected or settled on either.

    Why: the sanity band, the intrinsic value and the settlement are all built on the strike;
    a 60000 call sent with strike 80000 passes every price check at 300 while it is worth
    10,000. A symbol not of the ``BASE-DATE-STRIKE-T`` form is not compared.
    """
    strike = _required(raw, "strike", what)
    parts = symbol.split("-")
    if len(parts) == 4:
        try:
            named = float(parts[2])
        except ValueError:
            return strike
        if abs(named - strike) > 1e-9 * max(1.0, abs(named)):
            raise StaleDataError(f"{what}: strike {strike:g} contradicts the symbol's {named:g}")
    return strike


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
    parsed: Contract | None
    try:
        parsed = parse_symbol(symbol)
    except ValueError:
        parsed = None
    if expiry_ms is None:
        if parsed is None:
            raise StaleDataError(f"{what}: no expirationTimestamp and an unparseable symbol")
        expiry_ms = parsed.expiry_ms
    elif parsed is not None and parsed.expiry_ms != expiry_ms:
        logger.warning("%s: symbol date says %s, exchange says %s; using the exchange value",
                       symbol, fmt_time(parsed.expiry_ms / 1000.0), fmt_time(expiry_ms / 1000.0))
    base = raw.get("baseCurrency")
    if not isinstance(base, str) or not base:
        base = parsed.underlying if parsed is not None else ""
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


class ListingParser:
    """``instrument_from_api`` of every entry of a listing, reusing the last listing's
    instrument for an entry that is exactly as it was.

    Why: a listing is refetched every cache period and a backtest's strategies read it all
    day; parsing its 1,200 entries was ~5 % of the CPU of five strategies, while all but the
    new and expired strikes come back unchanged. An instrument is a pure function of its
    entry, so an entry equal to the last one *with the same value types* (``1 == 1.0 ==
    True`` in Python, not in the parser's checks) gives the same instrument or the same
    error. Only the last listing is kept (one parser per underlying), so memory stays flat.
    (The parser's one warning, a symbol date the exchange contradicts, is so logged when the
    entry appears or changes, not again on every refetch.)
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[Mapping[str, Any], tuple[type, ...], Instrument]] = {}

    def parse(self, data: list[Any]) -> tuple[Instrument, ...]:
        """Every entry's instrument, in order; the first bad entry raises ``StaleDataError``."""
        previous = self._last
        memo: dict[str, tuple[Mapping[str, Any], tuple[type, ...], Instrument]] = {}
        parsed: list[Instrument] = []
        for raw in data:
            symbol = raw.get("symbolName") if isinstance(raw, dict) else None
            if not isinstance(symbol, str):
                parsed.append(instrument_from_api(raw))       # raises the parser's error
                continue
            types = tuple(map(type, raw.values()))
            known = previous.get(symbol)
            if known is not None and known[0] == raw and known[1] == types:
                instrument = known[2]
            else:
                instrument = instrument_from_api(raw)
            memo[symbol] = (raw, types, instrument)
            parsed.append(instrument)
        self._last = memo
        return tuple(parsed)


# A greek outside what one option can have is not market data: a per-unit delta lies in
# [-1, 1] (a percent sent as a fraction, 45 for 0.45, would size a hedge 100 times too big),
# and a long option's gamma and vega are never negative. The slack covers the exchange's
# own rounding. Such a value is read as missing, so every gate on it fails closed.
DELTA_PER_UNIT_BOUND = 1.0 + 1e-6


def option_greek(raw: Mapping[str, Any], name: str) -> float | None:
    """One per-contract greek of a chain side; None when absent, not finite or impossible."""
    value = finite_number(raw.get(name))
    if value is None:
        return None
    if name == "delta" and abs(value) > DELTA_PER_UNIT_BOUND:
        return None
    if name in ("gamma", "vega") and value < 0:
        return None
    return value


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
        strike=_strike(raw, symbol, what),
        expiry_ms=expiry_ms,
        bid=_side_value(raw, "bid"),
        ask=_side_value(raw, "ask"),
        bid_size=_side_value(raw, "bidSize"),
        ask_size=_side_value(raw, "askSize"),
        mark=_required(raw, "markPrice", what),
        mark_iv=mark_iv if mark_iv is not None else math.nan,
        bid_iv=_iv(raw.get("bidIv")) or 0.0,
        ask_iv=_iv(raw.get("askIv")) or 0.0,
        delta=option_greek(raw, "delta"),
        gamma=option_greek(raw, "gamma"),
        vega=option_greek(raw, "vega"),
        theta=option_greek(raw, "theta"),
        rho=finite_number(raw.get("rho")),
        underlying_price=_required(raw, "underlyingPrice", what),
        as_of=as_of,
        last_price_iv=_iv(raw.get("lastPriceIv")),
    )


def _row_order(row: OptionRow) -> tuple[float, str]:
    return (row.strike, row.option_type)


class ChainPayload:
    """One fetched chain of one expiry, kept as the exchange sent it; a row is parsed when read.

    Why: a poll values a handful of legs from a chain of hundreds of options, and parsing every
    row of every fetch cost more than all the rest of the daemon's work per poll. The checks
    are the same as a full parse (``option_row_from_api``), only applied where they matter:

    * At construction (the fetch): the payload is a list of objects, every side present is an
      object with a symbol, and at least one side belongs to ``expiry_ms``; otherwise
      ``StaleDataError``, as before. Sides of other expiries are dropped unparsed.
    * ``row(symbol)``: that symbol's side(s) parsed; a malformed one raises ``StaleDataError``
      on every read (never a row with a made-up field). A malformed row nobody reads is never
      parsed, so it no longer fails the quotes of the other symbols of its chain.
    * ``rows()``: every side parsed (any malformed one raises), sorted by strike and type, as
      ``chain_rows_from_api`` returns them; entries' snapshots are built from it.

    Parsed rows are kept per side, so each side is parsed at most once per fetch. Two threads
    may parse one side at the same time: both get equal rows, which is harmless.
    """

    __slots__ = ("as_of", "expiry_ms", "index_name", "_sides", "_by_symbol", "_parsed", "_rows")

    def __init__(self, data: Any, *, as_of: float, expiry_ms: int, index_name: str) -> None:
        if not isinstance(data, list):
            raise StaleDataError(f"option chain for {expiry_ms} is not a list: {type(data).__name__}")
        self.as_of = as_of
        self.expiry_ms = expiry_ms
        self.index_name = index_name
        sides: list[Mapping[str, Any]] = []
        by_symbol: dict[str, list[int]] = {}
        for entry in data:
            # ``type(x) is dict`` first: decoded JSON objects are dicts, and the Mapping check
            # goes through the ABC machinery (this loop sees every side of every chain call).
            if type(entry) is not dict and not isinstance(entry, Mapping):
                raise StaleDataError(f"option chain entry is not an object: {entry!r}")
            for key in ("callOption", "putOption"):
                side = entry.get(key)
                if side is None:
                    continue
                if type(side) is not dict and not isinstance(side, Mapping):
                    raise StaleDataError(f"chain entry is not an object: {side!r}")
                symbol = side.get("symbol")
                if not isinstance(symbol, str) or not symbol:
                    raise StaleDataError(f"chain entry without symbol: {side!r}")
                end_time = side.get("endTime")
                side_expiry = end_time if type(end_time) is int else _int_ms(end_time)   # the usual case first
                if (expiry_ms if side_expiry is None else side_expiry) != expiry_ms:
                    continue   # another expiry's row: never ours, never parsed
                by_symbol.setdefault(symbol, []).append(len(sides))
                sides.append(side)
        self._sides: tuple[Mapping[str, Any], ...] = tuple(sides)
        self._by_symbol = by_symbol
        self._parsed: list[OptionRow | None] = [None] * len(sides)
        self._rows: tuple[OptionRow, ...] | None = None

    def __len__(self) -> int:
        return len(self._sides)

    def _parse(self, position: int) -> OptionRow:
        row = self._parsed[position]
        if row is None:
            row = option_row_from_api(self._sides[position], as_of=self.as_of, expiry_hint=self.expiry_ms,
                                      index_name=self.index_name)
            self._parsed[position] = row
        return row

    def row(self, symbol: str) -> OptionRow | None:
        """``symbol``'s row (``None`` when the chain has none); ``StaleDataError`` when it is malformed.

        A symbol sent twice resolves as a full parse would: the first in strike and type order.
        """
        positions = self._by_symbol.get(symbol)
        if not positions:
            return None
        if len(positions) == 1:
            return self._parse(positions[0])
        return min((self._parse(position) for position in positions), key=_row_order)

    def rows(self) -> tuple[OptionRow, ...]:
        """Every row, parsed (any malformed row raises), sorted by strike and type."""
        if self._rows is None:
            self._rows = tuple(sorted((self._parse(position) for position in range(len(self._sides))),
                                      key=_row_order))
        return self._rows


def chain_rows_from_api(data: Any, *, as_of: float, expiry_ms: int, index_name: str) -> tuple[OptionRow, ...]:
    """A chain payload ``[{strike, callOption, putOption}, ...]`` -> rows of ``expiry_ms``.

    Rows of other expiries are dropped: the docs now mark ``endTime`` optional, so an
    exchange that ignores it must not leak other expiries into this one.
    """
    return ChainPayload(data, as_of=as_of, expiry_ms=expiry_ms, index_name=index_name).rows()


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
# What the start-up summary and ``status`` show (display only: missing is "n/a")
# ---------------------------------------------------------------------------------------
# These readers are lenient on purpose: a log line or a status report shows what the
# exchange gave and ``n/a`` for the rest. Trading decisions never read them; they read the
# strict parsers of the account and market-data sections.


def _object(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise PayloadError(what, f"{what} is a {type(raw).__name__}, not an object")
    return raw


def _objects(raw: Any, what: str) -> list[Mapping[str, Any]]:
    """Every entry of a list answer, each an object (an entry that is not is a ``PayloadError``)."""
    if not isinstance(raw, (list, tuple)):
        raise PayloadError(what, f"{what} is a {type(raw).__name__}, not a list")
    return [_object(entry, f"{what} entry") for entry in raw]


def _text(raw: Any) -> str | None:
    return raw if isinstance(raw, str) else None


@dataclass(frozen=True)
class ApiKeyInfo:
    """What the key query (API.md 1) or the user info tells about our key and account.

    ``user_id`` is the account's id as text (None when the answer has none); ``read_only``
    is True only when the answer says so (``readOnly`` 1).
    """

    read_only: bool
    user_id: str | None


def parse_api_key(raw: Any) -> ApiKeyInfo:
    """The key query or user info answer; an answer that is not an object tells nothing."""
    if not isinstance(raw, Mapping):
        return ApiKeyInfo(read_only=False, user_id=None)
    user = raw.get("userId")
    return ApiKeyInfo(read_only=str(raw.get("readOnly")) == "1",
                      user_id=None if user is None or isinstance(user, bool) or user == "" else str(user))


@dataclass(frozen=True)
class AccountFigures:
    """The account summary's figures as shown to people (API.md 7.1); None = not given."""

    equity: float | None
    available_margin: float | None
    initial_margin: float | None
    maintenance_margin: float | None
    im_ratio: float | None
    unrealized_pnl: float | None


def read_account_figures(raw: Any) -> AccountFigures:
    summary = _object(raw, "account summary")
    return AccountFigures(
        equity=finite_number(summary.get("equity")),
        available_margin=finite_number(summary.get("availableMargin")),
        initial_margin=finite_number(summary.get("imAmount")),
        maintenance_margin=finite_number(summary.get("mmAmount")),
        im_ratio=finite_number(summary.get("imRatio")),
        unrealized_pnl=finite_number(summary.get("unrealizedPnL")),
    )


@dataclass(frozen=True)
class PositionRow:
    """One position as ``status`` shows it (API.md 7.2); None = not given or unreadable."""

    symbol: str | None
    side: int | None          # tradeSide: 1 long, 2 short
    qty: float | None
    avg_price: float | None
    mark_price: float | None


def read_position_rows(raw: Any) -> list[PositionRow]:
    return [PositionRow(symbol=_text(p.get("symbol")), side=int_or_none(p.get("tradeSide")),
                        qty=finite_number(p.get("qty")), avg_price=finite_number(p.get("avgPrice")),
                        mark_price=finite_number(p.get("markPrice")))
            for p in _objects(raw or [], "positions answer")]


@dataclass(frozen=True)
class ListedInstrument:
    """An instrument as the start-up summary counts it: its expiry (None when the entry
    has none) and whether it trades (an entry without ``isActive`` counts as active)."""

    expiry_ms: int | None
    is_active: bool


def read_listing(raw: Any) -> list[ListedInstrument]:
    listed = []
    for entry in _objects(raw, "instruments answer"):
        expiry: int | None = None
        if "expirationTimestamp" in entry:
            value = entry["expirationTimestamp"]
            try:
                expiry = int(value)
            except (TypeError, ValueError):
                raise PayloadError("expirationTimestamp",
                                   f"instrument expirationTimestamp is {value!r}, not a time") from None
        listed.append(ListedInstrument(expiry_ms=expiry, is_active=bool(entry.get("isActive", True))))
    return listed


@dataclass(frozen=True)
class SideFigures:
    """One side (call or put) of a chain line as shown to people; None = not given."""

    bid: float | None
    ask: float | None
    mark: float | None
    delta: float | None


@dataclass(frozen=True)
class ChainLine:
    """One strike of a chain answer (API.md 6.2) as the start-up summary shows it."""

    strike: float | None
    call: SideFigures | None
    put: SideFigures | None


def _side_figures(raw: Any) -> SideFigures | None:
    if not raw:
        return None
    side = _object(raw, "chain side")
    return SideFigures(bid=finite_number(side.get("bid")), ask=finite_number(side.get("ask")),
                       mark=finite_number(side.get("markPrice")), delta=option_greek(side, "delta"))


def read_chain_lines(raw: Any) -> list[ChainLine]:
    return [ChainLine(strike=finite_number(entry.get("strike")), call=_side_figures(entry.get("callOption")),
                      put=_side_figures(entry.get("putOption")))
            for entry in _objects(raw, "option chain answer")]


# ---------------------------------------------------------------------------------------
# The account (API.md 7.1, 7.2): strict, a snapshot is never guessed
# ---------------------------------------------------------------------------------------

LONG = "long"
SHORT = "short"
GREEK_NAMES = ("delta", "gamma", "theta", "vega")

# tradeSide codes of API.md 0 #9 (1 = BUY/long, 2 = SELL/short).
_TRADE_SIDES: dict[str, str] = {"1": LONG, "2": SHORT, "BUY": LONG, "SELL": SHORT}


@dataclass(frozen=True)
class PositionSnapshot:
    """One exchange position at snapshot time.

    ``qty`` is the magnitude (>= 0) and ``side`` the direction, taken from ``tradeSide``
    only (API.md 7.2). ``unrealized_pnl`` and ``roi`` are mark based. Greeks are position
    level: per-contract greek x ``signed_qty``.
    """

    position_id: int
    symbol: str
    qty: float
    side: str
    signed_qty: float
    entry_price: float
    mark_price: float
    unrealized_pnl: float
    roi: float
    delta: float
    gamma: float
    theta: float
    vega: float
    timestamp: float
    # The greeks the exchange sent as null or left out: counted as 0 above (so the snapshot
    # still serves PnL exits), and unknown to anything that gates on them (``conditions``).
    missing_greeks: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccountSummary:
    """The account summary's numbers (API.md 7.1), every one of them present and finite."""

    equity: float
    available_margin: float
    initial_margin: float
    maintenance_margin: float
    unrealized_pnl: float


def _parse_number(value: Any, name: str) -> float:
    """A finite float from a JSON number or numeric string (the exchange sends both)."""
    if isinstance(value, bool) or value is None:
        raise PayloadError(name, f"{name} is {value!r}, not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise PayloadError(name, f"{name} is {value!r}, not a number") from None
    else:
        raise PayloadError(name, f"{name} is a {type(value).__name__}, not a number")
    if not math.isfinite(number):
        raise PayloadError(name, f"{name} is {value!r}, not a finite number")
    return number


def _first_number(payload: Mapping[str, Any], *keys: str) -> float | None:
    """The first of ``keys`` present with a non-null value, parsed; None when all absent."""
    for key in keys:
        if payload.get(key) is not None:
            return _parse_number(payload[key], key)
    return None


def _required_number(payload: Mapping[str, Any], *keys: str) -> float:
    number = _first_number(payload, *keys)
    if number is None:
        raise PayloadError(keys[0], f"field {' / '.join(keys)} is missing")
    return number


def _parse_id(value: Any, name: str) -> int:
    """An int64 id from a JSON integer or a digit string; never through float."""
    if isinstance(value, bool):
        raise PayloadError(name, f"{name} is {value!r}, not an id")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise PayloadError(name, f"{name} is {value!r}, not an integer id")


def _parse_side(value: Any) -> str:
    side = _TRADE_SIDES.get(str(value).strip().upper()) if value is not None else None
    if side is None:
        raise PayloadError("tradeSide", f"tradeSide is {value!r}, expected 1 (long) or 2 (short)")
    return side


def parse_position(
    payload: Mapping[str, Any], *, timestamp: float, position_greeks: str = "per_position"
) -> PositionSnapshot:
    """Normalise one position of API.md 7.2.

    Direction comes only from ``tradeSide``; ``qty`` is taken as a magnitude. The
    mark-based PnL pair (``upnlByMarkPrice``/``roiByMarkPrice``) is optional: without it
    PnL is recomputed from mark and entry (``upnl``/``roi`` are last-trade based and
    deliberately not used). ``position_greeks`` says how the payload's greeks are meant:
    "per_position" (already x qty x sign) or "per_contract" (multiplied by signed qty here).
    """
    if not isinstance(payload, Mapping):
        raise PayloadError("positions", f"position entry is a {type(payload).__name__}, not an object")
    symbol = payload.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise PayloadError("symbol", f"position symbol is {symbol!r}")
    raw_id = payload.get("positionId", payload.get("id"))
    position_id = _parse_id(raw_id, f"positionId of {symbol}")
    side = _parse_side(payload.get("tradeSide"))
    sign = 1.0 if side == LONG else -1.0
    qty = abs(_required_number(payload, "qty"))
    signed_qty = qty * sign
    entry = _required_number(payload, "avgPrice")
    mark = _required_number(payload, "markPrice")
    upnl = _first_number(payload, "upnlByMarkPrice")
    if upnl is None:
        upnl = (mark - entry) * signed_qty
    roi = _first_number(payload, "roiByMarkPrice")
    if roi is None:
        cost = entry * qty
        roi = upnl / cost if cost > 0 else 0.0
    factor = 1.0 if position_greeks == "per_position" else signed_qty
    # A null greek counts as 0 in the sums (the caller warns): failing the whole snapshot over
    # it would also block every PnL exit, which is the worse outcome. It is also named in
    # ``missing_greeks``, so a gate on that greek cannot take the 0 for a value.
    read = {name: _first_number(payload, name) for name in GREEK_NAMES}
    # A delta larger than the position itself (per unit: beyond [-1, 1]) is impossible for an
    # option or a perpetual: read as missing, so the delta gates fail closed on it.
    delta_per_unit = read["delta"] if position_greeks == "per_contract" or read["delta"] is None \
        else (read["delta"] / qty if qty > 0 else None)
    if delta_per_unit is not None and abs(delta_per_unit) > DELTA_PER_UNIT_BOUND:
        read["delta"] = None
    greeks = {name: (value or 0.0) * factor for name, value in read.items()}
    return PositionSnapshot(
        position_id=position_id,
        symbol=symbol,
        qty=qty,
        side=side,
        signed_qty=signed_qty,
        entry_price=entry,
        mark_price=mark,
        unrealized_pnl=upnl,
        roi=roi,
        delta=greeks["delta"],
        gamma=greeks["gamma"],
        theta=greeks["theta"],
        vega=greeks["vega"],
        timestamp=timestamp,
        missing_greeks=tuple(name for name, value in read.items() if value is None),
    )


def parse_positions(payload: Any, *, timestamp: float,
                    position_greeks: str = "per_position") -> tuple[PositionSnapshot, ...]:
    """Every position of the positions answer (API.md 7.2), zero quantities included."""
    if not isinstance(payload, list):
        raise PayloadError("positions", f"positions answer is a {type(payload).__name__}, not a list")
    return tuple(parse_position(p, timestamp=timestamp, position_greeks=position_greeks) for p in payload)


def parse_account_summary(payload: Any) -> AccountSummary:
    """The summary of API.md 7.1; the older flat shape's names are read when the new ones are absent."""
    if not isinstance(payload, Mapping):
        raise PayloadError("account summary", f"account summary is a {type(payload).__name__}, not an object")
    return AccountSummary(
        equity=_required_number(payload, "equity", "equityAmount"),
        available_margin=_required_number(payload, "availableMargin", "availableBalance"),
        initial_margin=_required_number(payload, "imAmount"),
        maintenance_margin=_required_number(payload, "mmAmount"),
        unrealized_pnl=_required_number(payload, "unrealizedPnL", "unrealizedAmount"),
    )


def positions_missing_greeks(payload: Any) -> list[tuple[str, list[str]]]:
    """(symbol, greeks the entry lacks) for each position entry sent without some greeks."""
    if not isinstance(payload, list):
        return []
    missing = []
    for entry in payload:
        if not isinstance(entry, Mapping):
            continue
        names = [name for name in GREEK_NAMES if entry.get(name) is None]
        if names:
            missing.append((str(entry.get("symbol")), names))
    return missing


# ---------------------------------------------------------------------------------------
# Orders, fills and history pages (API.md 8.4-8.6)
# ---------------------------------------------------------------------------------------

HISTORY_NEXT = "NEXT"   # cursor paging towards older rows (id < fromId)


def _trade_side(raw: Any) -> Side | None:
    """``tradeSide`` 1 or 2 as a ``Side``; None when absent or anything else."""
    code = int_or_none(raw)
    return Side(code) if code in (1, 2) else None


def _flag(raw: Any) -> int | None:
    """A 0/1 flag sent as a number, a digit string or a boolean; None if absent or unreadable."""
    if isinstance(raw, bool):
        return int(raw)
    return int_or_none(raw)


@dataclass(frozen=True)
class ExchangeOrder:
    """One order as the exchange shows it: a single query (API.md 8.4), an open order (8.5)
    or an order-history row (8.6).

    Every field may be absent on some route, so every field is optional: None means the
    answer did not carry it in a readable form (ids and codes are exact integers, never read
    through a float). ``side`` is ``tradeSide`` (1 BUY, 2 SELL); times are epoch ms.
    """

    order_id: int | None
    client_order_id: int | None
    symbol: str | None
    side: Side | None
    qty: float | None
    price: float | None
    fill_qty: float | None
    avg_price: float | None
    fee: float | None
    state: int | None
    reduce_only: int | None
    create_time_ms: float | None
    update_time_ms: float | None


def _order_from(raw: Mapping[str, Any]) -> ExchangeOrder:
    return ExchangeOrder(
        order_id=int_or_none(raw.get("orderId")),
        client_order_id=int_or_none(raw.get("clientOrderId")),
        symbol=_text(raw.get("symbol")),
        side=_trade_side(raw.get("tradeSide")),
        qty=finite_number(raw.get("qty")),
        price=finite_number(raw.get("price")),
        fill_qty=finite_number(raw.get("fillQty")),
        avg_price=finite_number(raw.get("avgPrice")),
        fee=finite_number(raw.get("fee")),
        state=int_or_none(raw.get("state")),
        reduce_only=_flag(raw.get("reduceOnly")),
        create_time_ms=finite_number(raw.get("createTime")),
        update_time_ms=finite_number(raw.get("updateTime")),
    )


def parse_order(raw: Any) -> ExchangeOrder | None:
    """A single-order answer; None when it is not an object (no view of the order at all)."""
    return _order_from(raw) if isinstance(raw, Mapping) else None


def parse_orders(raw: Iterable[Any] | None) -> list[ExchangeOrder]:
    """The orders of a list answer (open orders); entries that are not objects are skipped."""
    return [_order_from(item) for item in raw or [] if isinstance(item, Mapping)]


@dataclass(frozen=True)
class ExchangeFill:
    """One fill of the trade history (API.md 8.6). ``trade_type`` 14 marks a block (RFQ) fill;
    ``client_order_id`` is read when a row carries one; ``time_ms`` is epoch ms."""

    order_id: int | None
    client_order_id: int | None
    symbol: str | None
    side: Side | None
    trade_type: int | None
    qty: float | None
    price: float | None
    time_ms: float | None
    cursor: int | None      # the row's ``id`` (``tradeId`` when it has no ``id``): where the next page starts


def _fill_from(raw: Mapping[str, Any]) -> ExchangeFill:
    return ExchangeFill(
        order_id=int_or_none(raw.get("orderId")),
        client_order_id=int_or_none(raw.get("clientOrderId")),
        symbol=_text(raw.get("symbol")),
        side=_trade_side(raw.get("tradeSide")),
        trade_type=int_or_none(raw.get("tradeType")),
        qty=finite_number(raw.get("qty")),
        price=finite_number(raw.get("price")),
        time_ms=finite_number(raw.get("time")),
        cursor=int_or_none(raw.get("id", raw.get("tradeId"))),
    )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a cursor-paged history (API.md 8.6).

    ``next_cursor`` is the last row's id (None on an empty page or a row without one).
    ``has_next`` is what the answer said of more pages, ``stated`` whether it said anything:
    an answer without ``hasNext`` (a bare list, the field missing) is no evidence that nothing
    follows, so a walker asks ``more`` with the page size it asked for, never ``has_next``
    alone. ``listed`` counts the answer's list as sent, rows that are not objects too: a
    skipped row must not make a full page look short.
    """

    rows: tuple[T, ...]
    has_next: bool
    next_cursor: int | None
    stated: bool
    listed: int

    def more(self, page_size: int) -> bool:
        """Whether a page may follow: the stated ``hasNext``; unstated, whether this page is
        full (as many rows as asked for). A short page without one is the last page."""
        if self.stated:
            return self.has_next
        return self.listed >= page_size


def _list_rows(raw: Any, parse: Callable[[Mapping[str, Any]], T]) -> tuple[tuple[T, ...], int]:
    """The parsed rows of ``{list, ...}`` (or of a bare list) and the list's length; rows that
    are not objects are skipped."""
    items = raw.get("list") if isinstance(raw, Mapping) else raw
    if items is not None and not isinstance(items, Iterable):
        raise PayloadError("list", f"history page list is a {type(items).__name__}, not a list")
    listed = list(items or [])
    return tuple(parse(item) for item in listed if isinstance(item, Mapping)), len(listed)


def _page(raw: Any, parse: Callable[[Mapping[str, Any]], T], cursor: Callable[[T], int | None],
          what: str) -> Page[T]:
    """A page of an option history: its rows and what it said of more (``Page``). A ``hasNext``
    that is neither a boolean nor 0/1 is a ``PayloadError``: an unreadable claim is no answer."""
    rows, listed = _list_rows(raw, parse)
    stated = _opt_flag(raw, "hasNext", what) if isinstance(raw, Mapping) else None
    return Page(rows=rows, has_next=bool(stated), next_cursor=cursor(rows[-1]) if rows else None,
                stated=stated is not None, listed=listed)


def parse_order_page(raw: Any) -> Page[ExchangeOrder]:
    """A page of the order history; the cursor is the last row's ``orderId``."""
    return _page(raw, _order_from, lambda order: order.order_id, "order history")


def parse_fill_page(raw: Any) -> Page[ExchangeFill]:
    """A page of the trade (fill) history; the cursor is the last row's ``id`` / ``tradeId``."""
    return _page(raw, _fill_from, lambda fill: fill.cursor, "trade history")


def history_filters(*, page_size: int | None = None, symbol: str | None = None, start_ms: int | None = None,
                    end_ms: int | None = None) -> dict[str, Any]:
    """The query of a history read (order, trade, exercise or block-trade history); None = not sent."""
    filters = {"pageSize": page_size, "symbol": symbol, "startTime": start_ms, "endTime": end_ms}
    return {key: value for key, value in filters.items() if value is not None}


def next_page_filters(filters: Mapping[str, Any], cursor: int) -> dict[str, Any]:
    """``filters`` moved to the page after the row ``cursor`` (older rows)."""
    return {**filters, "fromId": cursor, "direction": HISTORY_NEXT}


# ---------------------------------------------------------------------------------------
# Settlement (API.md 6.5, 8.6): delivery prices, estimates, exercise records
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExerciseRecord:
    """One settlement record of the exercise history (API.md 8.6).

    ``side`` is None only when the record has no ``tradeSide``; one it cannot read as an
    integer is a ``PayloadError`` (an unreadable side never passes for "any side").
    """

    symbol: str | None
    qty: float | None
    side: int | None
    exercise_price: float | None
    fees: float | None
    settlement_cash_flow: float | None


def _exercise_from(raw: Mapping[str, Any]) -> ExerciseRecord:
    side = raw.get("tradeSide")
    if side is not None:
        try:
            side = int(side)
        except (TypeError, ValueError):
            raise PayloadError("tradeSide", f"exercise record tradeSide is {side!r}, not 1 or 2") from None
    return ExerciseRecord(
        symbol=_text(raw.get("symbol")),
        qty=finite_number(raw.get("qty")),
        side=side,
        exercise_price=finite_number(raw.get("exercisePrice")),
        fees=finite_number(raw.get("fees")),
        settlement_cash_flow=finite_number(raw.get("settlementCashFlow")),
    )


def parse_exercise_records(raw: Any) -> list[ExerciseRecord]:
    """The records of an exercise-history answer (``{list}`` or a bare list)."""
    return list(_list_rows(raw, _exercise_from)[0])


@dataclass(frozen=True)
class DeliveryPrice:
    """One row of the delivery prices (API.md 6.5): a positive price and the expiry it is for.

    The row's ``date`` is epoch ms (a number or digit text: ``date_ms``) or a calendar date
    text (``day``, the expiry's UTC day); a row with neither matches no expiry.
    """

    price: float
    date_ms: int | None
    day: date | None

    def covers(self, expiry_ms: int) -> bool:
        if self.date_ms is not None:
            return self.date_ms == int(expiry_ms)
        if self.day is not None:
            return self.day == datetime.fromtimestamp(expiry_ms / 1000.0, tz=timezone.utc).date()
        return False


def _delivery_date(raw: Any) -> tuple[int | None, date | None]:
    if isinstance(raw, bool) or raw is None:
        return None, None
    if isinstance(raw, (int, float)):
        return int(raw), None
    text = str(raw).strip()
    if text.isdigit():
        return int(text), None
    try:
        return None, date.fromisoformat(text[:10])
    except ValueError:
        return None, None


def parse_delivery_prices(raw: Any) -> list[DeliveryPrice]:
    """Rows with a usable (finite, positive) price; the snake_case name is the documented one."""
    rows = []
    for item in _list_rows(raw, lambda item: item)[0]:
        price = finite_number(item.get("delivery_price", item.get("deliveryPrice")))
        if price is None or price <= 0:
            continue
        date_ms, day = _delivery_date(item.get("date"))
        rows.append(DeliveryPrice(price=price, date_ms=date_ms, day=day))
    return rows


def parse_estimated_expiration_price(raw: Any) -> float | None:
    """The first row's estimated settlement price (API.md 6.5), None when there is none."""
    first = raw[0] if isinstance(raw, list) and raw else None
    return finite_number(first.get("estimatedExpirationPrice")) if isinstance(first, Mapping) else None


# ---------------------------------------------------------------------------------------
# RFQ and block trades (API.md 10): sides are "BUY"/"SELL" text, ids come back as text
# ---------------------------------------------------------------------------------------

def _side_named(raw: Any) -> Side | None:
    """The side an RFQ answer names ("BUY"/"SELL"), or None when it names none."""
    try:
        return Side.from_text(raw)
    except ValueError:
        return None


def rfq_leg(symbol: str, side: Side, qty_text: str) -> dict[str, str]:
    """One leg of a create-RFQ body (API.md 10.1): the side by name, qty as plain decimal text."""
    return {"instrumentName": symbol, "side": side.name, "qty": qty_text}


@dataclass(frozen=True)
class RfqCreated:
    """The create-RFQ answer: the request's id (None when the answer has no usable one) and
    its expiry in epoch ms (None if absent)."""

    request_id: str | None
    expiry_ms: float | None


def parse_rfq_created(raw: Any) -> RfqCreated:
    if not isinstance(raw, Mapping):
        return RfqCreated(request_id=None, expiry_ms=None)
    request_id = raw.get("requestId")
    usable = request_id is not None and not isinstance(request_id, (bool, float)) and str(request_id).strip()
    return RfqCreated(request_id=str(request_id).strip() if usable else None,
                      expiry_ms=finite_number(raw.get("expiryTime")))


@dataclass(frozen=True)
class QuoteLeg:
    """One quote leg; ``maker_side`` is the MAKER's side (we take the opposite)."""

    symbol: str
    maker_side: Side
    price: float
    qty: float


@dataclass(frozen=True)
class Quote:
    """A maker quote as received (API.md §10.2); ``expiry_time`` in epoch seconds, None if absent."""

    quote_id: str
    state: str
    expiry_time: float | None
    legs: tuple[QuoteLeg, ...]

    @property
    def cost(self) -> float:
        """Q, taker view (+ = we pay): maker-SELL legs we pay for, maker-BUY legs pay us."""
        return math.fsum(leg.price * leg.qty if leg.maker_side == Side.SELL else -leg.price * leg.qty
                         for leg in self.legs)


def parse_quote(raw: Any) -> Quote | None:
    """A ``Quote`` from the wire (string numbers parsed), or None if it is not usable as one."""
    if not isinstance(raw, Mapping):
        return None
    quote_id = raw.get("quoteId")
    legs_raw = raw.get("legs")
    if quote_id is None or isinstance(quote_id, (bool, float)) or not isinstance(legs_raw, list) or not legs_raw:
        return None
    legs = []
    for item in legs_raw:
        if not isinstance(item, Mapping):
            return None
        symbol = item.get("instrumentName")
        side = _side_named(item.get("side"))
        price = finite_number(item.get("price"))
        qty = finite_number(item.get("quantity", item.get("qty")))
        if not symbol or side is None or price is None or price <= 0 or qty is None or qty <= 0:
            return None
        legs.append(QuoteLeg(str(symbol), side, price, qty))
    expiry_ms = finite_number(raw.get("expiryTime"))
    return Quote(str(quote_id), str(raw.get("state") or "").upper(),
                 None if expiry_ms is None else expiry_ms / 1000.0, tuple(legs))


def parse_quotes(raw: Iterable[Any] | None) -> list[Quote]:
    """The usable quotes of a quotes-received answer (unusable ones are dropped)."""
    return [quote for quote in (parse_quote(item) for item in raw or []) if quote is not None]


@dataclass(frozen=True)
class BlockLeg:
    """One taker-side leg of a block trade (accept answer or block-trade record), parsed."""

    symbol: str
    side: Side | None
    qty: float | None
    price: float | None
    fee: float | None           # None when the record leaves it out (the booking estimates it)
    order_id: int | None
    created_at: float | None
    index_price: float | None = None


def parse_block_legs(legs: Any) -> list[BlockLeg]:
    """Legs are matched by ``instrumentName`` later, never by position; values may be strings."""
    parsed: list[BlockLeg] = []
    for raw in legs if isinstance(legs, list) else []:
        if not isinstance(raw, Mapping):
            continue
        created_ms = finite_number(raw.get("createTime"))
        parsed.append(BlockLeg(
            symbol=str(raw.get("instrumentName") or ""),
            side=_side_named(raw.get("side")),
            qty=finite_number(raw.get("quantity", raw.get("qty"))),
            price=finite_number(raw.get("price")),
            fee=finite_number(raw.get("fee")),
            order_id=int_or_none(raw.get("orderId")),
            created_at=None if created_ms is None else created_ms / 1000.0,
            index_price=finite_number(raw.get("indexPrice")),
        ))
    return parsed


def parse_accept_legs(raw: Any) -> list[BlockLeg]:
    """The taker-side legs of an accept answer (API.md 10.3); none when it has no leg list."""
    return parse_block_legs(raw.get("legs") if isinstance(raw, Mapping) else None)


@dataclass(frozen=True)
class BlockTrade:
    """One record of the private block-trade list (API.md 10.6); ids as text ("" when absent)."""

    block_trade_id: str | None
    request_id: str
    quote_id: str
    legs: tuple[BlockLeg, ...]


def parse_block_trades(raw: Any) -> list[BlockTrade]:
    """The records of a block-trade list answer (``{list}`` or a bare list)."""
    return list(parse_block_trade_page(raw).records)


@dataclass(frozen=True)
class BlockTradePage:
    """One page of the private block-trade list: its records, and what the answer said of more.

    ``has_next`` is the answer's ``hasNext`` when it carries one as a boolean, None when it
    does not (a bare list, or the field missing): the reader then has only the page's length
    to go by, and the two are read together, never one alone (``rfq.BlockTradeWalk``).
    """

    records: tuple[BlockTrade, ...]
    has_next: bool | None


def parse_block_trade_page(raw: Any) -> BlockTradePage:
    """A block-trade list answer as a ``BlockTradePage``."""
    stated = raw.get("hasNext") if isinstance(raw, Mapping) else None
    return BlockTradePage(records=_list_rows(raw, _block_trade_from)[0],
                          has_next=stated if isinstance(stated, bool) else None)


def _block_trade_from(record: Mapping[str, Any]) -> BlockTrade:
    block_id = record.get("blockTradeId")
    return BlockTrade(block_trade_id=None if block_id is None else str(block_id),
                      request_id=str(record.get("requestId") or ""), quote_id=str(record.get("quoteId") or ""),
                      legs=tuple(parse_block_legs(record.get("legs"))))


# ---------------------------------------------------------------------------------------
# Perpetual futures (API.md 14): USDT-margined perps, one per underlying (``<BASE>USD``)
# ---------------------------------------------------------------------------------------
# Why the readers below are stricter than the options readers above: the perp values feed
# a hedger that sends orders without a person in the loop, so a field that is present but
# unreadable, or a code this adapter does not know, is never read as "absent" or as a
# neighbouring value. Absent optional fields are None; a malformed one is a ``PayloadError``
# naming the field. Market data (tickers, books, trades, funding rates, the instruments
# feed) raises ``StaleDataError`` instead, chained to that ``PayloadError``, because no
# decision may be taken from it (the convention of the options market data above).

PERP_QUOTE = "USD"


def perp_symbol(underlying: str) -> str:
    """The perpetual's API symbol of an underlying: ``"ETH"`` -> ``"ETHUSD"`` (API.md 14.1)."""
    base = underlying.strip().upper() if isinstance(underlying, str) else ""
    if not base.isalnum():
        raise ValueError(f"underlying must be a coin name such as 'BTC' or 'ETH', got {underlying!r}")
    if base.endswith(PERP_QUOTE) and len(base) > len(PERP_QUOTE):
        raise ValueError(f"underlying must be the coin ('BTC'), not the symbol ({underlying!r})")
    return base + PERP_QUOTE


class PerpOrderType(IntEnum):
    """``tradeType`` of a perp order (API.md 14.8). The client sends only the first three."""

    LIMIT = 1
    MARKET = 2
    POST_ONLY = 3
    STOP_LIMIT = 4
    STOP_MARKET = 5


class PerpOrderState(IntEnum):
    """``state`` of a perp order (API.md 14.8), by the exchange's own code."""

    WAITING_EFFECT = -2     # an untriggered conditional order (we send none)
    PRE = -1
    NEW = 0
    FILLED = 1
    PARTIALLY_FILLED = 2
    CANCELED = 3
    PRE_CANCEL = 4          # cancel accepted, not done: fills may still land
    CANCELING = 5
    INVALID = 6


# Each perp state as the order ledger's ``OrderStatus`` value (order_ledger.OrderStatus; the
# ledger sits above this module, so the value is named here and a unit test keeps the two in
# step). The codes -1 to 6 mean what they mean for options (API.md 8.4) and map the same way;
# -2 (conditional, not yet triggered) is working, so LIVE. 4 and 5 are not final.
PERP_STATE_STATUS: Mapping[PerpOrderState, str] = {
    PerpOrderState.WAITING_EFFECT: "LIVE",
    PerpOrderState.PRE: "LIVE",
    PerpOrderState.NEW: "LIVE",
    PerpOrderState.FILLED: "FILLED",
    PerpOrderState.PARTIALLY_FILLED: "PARTIAL",
    PerpOrderState.CANCELED: "CANCELED",
    PerpOrderState.PRE_CANCEL: "CANCEL_REQUESTED",
    PerpOrderState.CANCELING: "CANCEL_REQUESTED",
    PerpOrderState.INVALID: "INVALID",
}
PERP_FINAL_STATES = frozenset({PerpOrderState.FILLED, PerpOrderState.CANCELED, PerpOrderState.INVALID})

TIME_IN_FORCE_VALUES = ("GTC", "IOC", "FOK")


# ---- strict field readers (PayloadError naming the field) ------------------------------

def _perp_object(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise PayloadError(what, f"{what} is a {type(raw).__name__}, not an object")
    return raw


def _perp_list(raw: Any, what: str) -> list[Any]:
    if not isinstance(raw, list):
        raise PayloadError(what, f"{what} is a {type(raw).__name__}, not a list")
    return raw


def _opt_number(raw: Mapping[str, Any], key: str, what: str) -> float | None:
    """An optional number: None when absent or null (or ``""``), ``PayloadError`` when unreadable."""
    value = raw.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PayloadError(key, f"{what}: field {key!r} is {value!r}, not a number")
    try:
        number = float(value)
    except ValueError:
        raise PayloadError(key, f"{what}: field {key!r} is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise PayloadError(key, f"{what}: field {key!r} is {value!r}, not a finite number")
    return number


def _req_number(raw: Mapping[str, Any], key: str, what: str) -> float:
    number = _opt_number(raw, key, what)
    if number is None:
        raise PayloadError(key, f"{what}: field {key!r} is missing")
    return number


def _req_positive(raw: Mapping[str, Any], key: str, what: str) -> float:
    number = _req_number(raw, key, what)
    if number <= 0:
        raise PayloadError(key, f"{what}: field {key!r} is {raw.get(key)!r}, not a positive number")
    return number


def _opt_price(raw: Mapping[str, Any], key: str, what: str) -> float | None:
    """A price that the exchange writes as 0 (or leaves out) when there is none: None then."""
    number = _opt_number(raw, key, what)
    if number is None or number == 0:
        return None
    if number < 0:
        raise PayloadError(key, f"{what}: field {key!r} is {raw.get(key)!r}, a negative price")
    return number


def _opt_id(raw: Mapping[str, Any], key: str, what: str) -> int | None:
    """A 64-bit id as an exact int (JSON integer or digit string, never a float); None when absent."""
    value = raw.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise PayloadError(key, f"{what}: field {key!r} is {value!r}, not an integer id")


def _req_id(raw: Mapping[str, Any], key: str, what: str) -> int:
    value = _opt_id(raw, key, what)
    if value is None:
        raise PayloadError(key, f"{what}: field {key!r} is missing")
    return value


def _opt_ms(raw: Mapping[str, Any], key: str, what: str) -> int | None:
    """An epoch-ms time (an integer, or a float or string holding one); None when absent."""
    number = _opt_number(raw, key, what)
    if number is None:
        return None
    if not number.is_integer() or number < 0:
        raise PayloadError(key, f"{what}: field {key!r} is {raw.get(key)!r}, not a time in ms")
    return int(number)


def _req_ms(raw: Mapping[str, Any], key: str, what: str) -> int:
    value = _opt_ms(raw, key, what)
    if value is None:
        raise PayloadError(key, f"{what}: field {key!r} is missing")
    return value


def _req_text(raw: Mapping[str, Any], key: str, what: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(key, f"{what}: field {key!r} is {value!r}, not a name")
    return value.strip()


def _opt_text(raw: Mapping[str, Any], key: str, what: str) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(key, f"{what}: field {key!r} is {value!r}, not text")
    return value.strip()


def _opt_code(raw: Mapping[str, Any], key: str, what: str) -> int | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    code = int_or_none(value)
    if code is None:
        raise PayloadError(key, f"{what}: field {key!r} is {value!r}, not an integer code")
    return code


def _opt_flag(raw: Mapping[str, Any], key: str, what: str) -> bool | None:
    """A 0/1 flag (number, digit string or boolean); None when absent; anything else is an error."""
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    code = int_or_none(value)
    if code not in (0, 1):
        raise PayloadError(key, f"{what}: field {key!r} is {value!r}, not 0 or 1")
    return code == 1


def _req_side(raw: Mapping[str, Any], key: str, what: str) -> Side:
    value = raw.get(key)
    code = int_or_none(value) if not isinstance(value, bool) else None
    if code not in (1, 2):
        raise PayloadError(key, f"{what}: field {key!r} is {value!r}, expected 1 or 2")
    return Side(code)


def _opt_enum(raw: Mapping[str, Any], key: str, what: str, enum: type[E]) -> E | None:
    code = _opt_code(raw, key, what)
    if code is None:
        return None
    try:
        return enum(code)
    except ValueError:
        raise PayloadError(key, f"{what}: field {key!r} is {code}, not a known {enum.__name__}") from None


def _market(parse: Callable[[], T]) -> T:
    """Run a market-data parse; a ``PayloadError`` becomes ``StaleDataError`` (no decision on it)."""
    try:
        return parse()
    except PayloadError as exc:
        raise StaleDataError(str(exc)) from exc


# ---- contract specification (API.md 14.3) -----------------------------------------------

@dataclass(frozen=True)
class PerpSpec:
    """One perpetual's contract specification from ``futuresConfig`` of the public config.

    Quantities are in the base coin; ``qty_step`` is ``10 ** -qty_decimals``. Limits and
    fees the config leaves out are None, never a guessed default; so is ``max_leverage``,
    which no documented field carries (API.md 14.9 #10).
    """

    symbol: str
    base: str
    tick_size: float
    min_qty: float
    qty_decimals: int
    qty_step: float
    max_limit_qty: float | None
    max_market_qty: float | None
    maker_fee: float | None
    taker_fee: float | None
    max_leverage: float | None
    max_open_orders: int | None


def perp_spec_from_api(raw: Any, *, symbol: str | None = None) -> PerpSpec:
    """One entry of ``futuresConfig``; ``symbol`` is its key in the map (checked against the entry)."""
    what = f"futuresConfig {symbol or '?'}"
    entry = _perp_object(raw, what)
    named = _opt_text(entry, "symbol", what)
    if symbol is not None and named is not None and named != symbol:
        raise PayloadError("symbol", f"{what}: entry names symbol {named!r}")
    name = named or symbol
    if not name:
        raise PayloadError("symbol", f"{what}: no symbol")
    what = f"futuresConfig {name}"
    base = _opt_text(entry, "base", what)
    if base is None:
        if not name.endswith(PERP_QUOTE) or len(name) == len(PERP_QUOTE):
            raise PayloadError("base", f"{what}: no base and the symbol does not end in {PERP_QUOTE}")
        base = name[: -len(PERP_QUOTE)]
    decimals = _req_number(entry, "qtyDecimal", what)
    if not decimals.is_integer() or not 0 <= decimals <= 12:
        raise PayloadError("qtyDecimal", f"{what}: field 'qtyDecimal' is {entry.get('qtyDecimal')!r}")
    places = int(decimals)
    max_orders = _opt_number(entry, "maxOrderNumber", what)
    return PerpSpec(
        symbol=name,
        base=base.upper(),
        tick_size=_req_positive(entry, "tickSize", what),
        min_qty=_req_positive(entry, "minQty", what),
        qty_decimals=places,
        qty_step=round(10.0 ** -places, places),
        max_limit_qty=_opt_number(entry, "limitMaxQty", what),
        max_market_qty=_opt_number(entry, "marketMaxQty", what),
        maker_fee=_opt_number(entry, "makerFee", what),
        taker_fee=_opt_number(entry, "takerFee", what),
        max_leverage=_opt_number(entry, "maxLeverage", what),
        max_open_orders=None if max_orders is None else int(max_orders),
    )


def parse_perp_specs(public_config: Any) -> dict[str, PerpSpec]:
    """Every perp of the public config (``data.futuresConfig``), keyed by underlying (``"BTC"``)."""
    config = _perp_object(public_config, "public config")
    futures = _perp_object(config.get("futuresConfig"), "futuresConfig")
    specs: dict[str, PerpSpec] = {}
    for symbol, entry in futures.items():
        spec = perp_spec_from_api(entry, symbol=str(symbol))
        if spec.base in specs:
            raise PayloadError("futuresConfig", f"futuresConfig lists two perps for {spec.base}")
        specs[spec.base] = spec
    return specs


# ---- market data (API.md 14.4) -----------------------------------------------------------

@dataclass(frozen=True)
class PerpInstrument:
    """One row of the instruments feed (API.md 14.4, all numbers strings there).

    ``symbol`` is the API symbol (``BTCUSD``) built from the row's base and quote; the feed's
    own ``ticker_id`` (``BTC-USD``) is kept as ``ticker_id``. Empty book sides are None.
    """

    symbol: str
    ticker_id: str
    base: str
    last: float | None
    bid: float | None
    ask: float | None
    index: float | None
    funding_rate: float | None
    next_funding_rate: float | None
    next_funding_ms: int | None
    open_interest: float | None


def _perp_instrument(raw: Any) -> PerpInstrument:
    entry = _perp_object(raw, "perp instrument")
    ticker = _req_text(entry, "ticker_id", "perp instrument")
    what = f"perp instrument {ticker}"
    base = _req_text(entry, "base_currency", what).upper()
    quote = (_opt_text(entry, "quote_currency", what) or PERP_QUOTE).upper()
    return PerpInstrument(
        symbol=base + quote,
        ticker_id=ticker,
        base=base,
        last=_opt_price(entry, "last_price", what),
        bid=_opt_price(entry, "bid", what),
        ask=_opt_price(entry, "ask", what),
        index=_opt_price(entry, "index_price", what),
        funding_rate=_opt_number(entry, "funding_rate", what),
        next_funding_rate=_opt_number(entry, "next_funding_rate", what),
        next_funding_ms=_opt_ms(entry, "next_funding_rate_timestamp", what),
        open_interest=_opt_number(entry, "open_interest", what),
    )


def parse_perp_instruments(raw: Any) -> list[PerpInstrument]:
    """The instruments feed; a row that is not a perpetual (``product_type``) is left out."""
    def parse() -> list[PerpInstrument]:
        rows = []
        for entry in _perp_list(raw, "perp instruments"):
            kind = _opt_text(_perp_object(entry, "perp instrument"), "product_type", "perp instrument")
            if kind is not None and kind.lower() != "perpetual":
                continue
            rows.append(_perp_instrument(entry))
        return rows
    return _market(parse)


@dataclass(frozen=True)
class FundingRate:
    """The current funding rate of one perp (API.md 14.4): rate per 8 h period as a fraction."""

    symbol: str
    rate: float
    next_funding_ms: int | None
    as_of_ms: int | None


def _funding_rate(raw: Any) -> FundingRate:
    entry = _perp_object(raw, "funding rate")
    symbol = _req_text(entry, "symbol", "funding rate")
    what = f"funding rate {symbol}"
    return FundingRate(symbol=symbol, rate=_req_number(entry, "rate", what),
                       next_funding_ms=_opt_ms(entry, "nextFundingTime", what), as_of_ms=_opt_ms(entry, "ts", what))


def parse_funding_rates(raw: Any) -> dict[str, FundingRate]:
    """The funding-rate answer (a list, or one object), keyed by symbol."""
    def parse() -> dict[str, FundingRate]:
        entries = raw if isinstance(raw, list) else [_perp_object(raw, "funding rates")]
        return {rate.symbol: rate for rate in map(_funding_rate, entries)}
    return _market(parse)


@dataclass(frozen=True)
class PerpTicker:
    """Last, mark and index of one perp (the symbol endpoint, API.md 14.4), with its funding.

    ``mark`` and ``index`` are always positive numbers (a ticker without them is stale data);
    ``last`` is None when the exchange sent none. ``funding_rate`` / ``next_funding_ms`` are
    None when the ticker was read without the funding endpoint.
    """

    symbol: str
    base: str
    last: float | None
    mark: float
    index: float
    funding_rate: float | None
    next_funding_ms: int | None
    as_of: float


def _symbol_entries(raw: Any) -> list[Mapping[str, Any]]:
    """The symbol endpoint's ``data``: a list of objects, or one object (API.md 14.9 #9)."""
    entries = raw if isinstance(raw, list) else [raw]
    return [_perp_object(entry, "perp symbol entry") for entry in entries]


def perp_ticker_from_api(raw: Any, *, symbol: str, as_of: float, funding: FundingRate | None = None) -> PerpTicker:
    """``symbol``'s entry of the symbol endpoint's answer (list or object) -> ``PerpTicker``."""
    def parse() -> PerpTicker:
        entry = next((e for e in _symbol_entries(raw) if e.get("symbol") == symbol), None)
        if entry is None:
            raise PayloadError("symbol", f"perp symbols carry no {symbol} entry")
        what = f"perp ticker {symbol}"
        base = _opt_text(entry, "baseToken", what) or symbol[: -len(PERP_QUOTE)]
        if funding is not None and funding.symbol != symbol:
            raise PayloadError("symbol", f"{what}: funding rate of {funding.symbol} given")
        return PerpTicker(
            symbol=symbol,
            base=base.upper(),
            last=_opt_price(entry, "price", what),
            mark=_req_positive(entry, "markPrice", what),
            index=_req_positive(entry, "indexPrice", what),
            funding_rate=None if funding is None else funding.rate,
            next_funding_ms=None if funding is None else funding.next_funding_ms,
            as_of=as_of,
        )
    return _market(parse)


def perp_order_book_from_api(raw: Any, *, symbol: str, as_of: float) -> OrderBook:
    """A perp order book (``{symbol, bids:[{size, price}], asks}``) -> the shared ``OrderBook``."""
    book = order_book_from_api(raw, symbol=symbol, as_of=as_of)
    named = raw.get("symbol")
    if named is not None and named != symbol:
        raise StaleDataError(f"order book {symbol}: the answer is for {named!r}")
    return book


@dataclass(frozen=True)
class PerpPublicTrade:
    """One public trade of a perp (last trades, API.md 14.4); ``side`` is the taker's."""

    symbol: str
    price: float
    qty: float
    side: Side
    time_ms: int


def parse_perp_public_trades(raw: Any, *, symbol: str) -> list[PerpPublicTrade]:
    def parse() -> list[PerpPublicTrade]:
        trades = []
        for entry in _perp_list(raw, f"last trades {symbol}"):
            item = _perp_object(entry, f"last trade {symbol}")
            what = f"last trade {symbol}"
            trades.append(PerpPublicTrade(symbol=_opt_text(item, "symbol", what) or symbol,
                                          price=_req_positive(item, "price", what),
                                          qty=_req_positive(item, "qty", what),
                                          side=_req_side(item, "tradeSide", what), time_ms=_req_ms(item, "time", what)))
        return trades
    return _market(parse)


# ---- orders and fills (API.md 14.5, 14.6) -------------------------------------------------

@dataclass(frozen=True)
class PerpOrder:
    """One perp order: a single query, an open-order row or an order-history row (API.md 14.5).

    ``state`` is None on open-order rows (that route leaves it out: they are open by
    definition); ``status`` is the ledger's ``OrderStatus`` value for the state
    (``PERP_STATE_STATUS``). ``client_order_id`` is None when the order carries none (absent
    or 0: our ids are never 0; API.md 14.9 #12). ``price`` is None for market orders and ``avg_price`` until
    something fills (the exchange writes 0). ``fee`` is cumulative, as the exchange reports it.
    """

    order_id: int
    client_order_id: int | None
    symbol: str
    side: Side
    order_type: PerpOrderType
    qty: float
    filled_qty: float | None
    remaining_qty: float | None
    price: float | None
    avg_price: float | None
    fee: float | None
    state: PerpOrderState | None
    reduce_only: bool | None
    time_in_force: str | None
    leverage: float | None
    create_time_ms: int | None
    update_time_ms: int | None

    @property
    def status(self) -> str | None:
        """The order ledger's ``OrderStatus`` value of ``state`` (None without a state)."""
        return None if self.state is None else PERP_STATE_STATUS[self.state]

    @property
    def is_final(self) -> bool:
        """True only for a state that never changes again (filled, canceled, invalid)."""
        return self.state in PERP_FINAL_STATES


def perp_order_from_api(raw: Any) -> PerpOrder:
    entry = _perp_object(raw, "perp order")
    order_id = _req_id(entry, "orderId", "perp order")
    what = f"perp order {order_id}"
    order_type = _opt_enum(entry, "tradeType", what, PerpOrderType)
    if order_type is None:
        raise PayloadError("tradeType", f"{what}: field 'tradeType' is missing")
    tif = _opt_text(entry, "timeInForce", what)
    if tif is not None:
        tif = tif.upper()
        if tif not in TIME_IN_FORCE_VALUES:
            raise PayloadError("timeInForce", f"{what}: field 'timeInForce' is {entry.get('timeInForce')!r}")
    coid = _opt_id(entry, "clientOrderId", what)
    return PerpOrder(
        order_id=order_id,
        client_order_id=coid or None,
        symbol=_req_text(entry, "symbol", what),
        side=_req_side(entry, "tradeSide", what),
        order_type=order_type,
        qty=_req_positive(entry, "qty", what),
        filled_qty=_opt_number(entry, "fillQty", what),
        remaining_qty=_opt_number(entry, "remainQty", what),
        price=_opt_price(entry, "price", what),
        avg_price=_opt_price(entry, "avgPrice", what),
        fee=_opt_number(entry, "fee", what),
        state=_opt_enum(entry, "state", what, PerpOrderState),
        reduce_only=_opt_flag(entry, "reduceOnly", what),
        time_in_force=tif,
        leverage=_opt_number(entry, "leverage", what),
        create_time_ms=_opt_ms(entry, "createTime", what),
        update_time_ms=_opt_ms(entry, "updateTime", what),
    )


def parse_perp_orders(raw: Any) -> list[PerpOrder]:
    """The orders of a list answer (every entry must be a readable order)."""
    return [perp_order_from_api(entry) for entry in _perp_list(raw, "perp orders")]


@dataclass(frozen=True)
class PerpFill:
    """One fill of our perp orders (API.md 14.6). There is no ``clientOrderId`` on a fill:
    join it to its order by ``order_id``. ``cursor`` is where the next history page starts."""

    trade_id: int
    order_id: int
    symbol: str
    side: Side
    order_type: PerpOrderType | None
    price: float
    qty: float
    fee: float | None
    time_ms: int
    is_taker: bool | None
    mark_price: float | None
    index_price: float | None
    cursor: int


def perp_fill_from_api(raw: Any) -> PerpFill:
    entry = _perp_object(raw, "perp fill")
    trade_id = _req_id(entry, "tradeId", "perp fill")
    what = f"perp fill {trade_id}"
    row_id = _opt_id(entry, "id", what)
    return PerpFill(
        trade_id=trade_id,
        order_id=_req_id(entry, "orderId", what),
        symbol=_req_text(entry, "symbol", what),
        side=_req_side(entry, "tradeSide", what),
        order_type=_opt_enum(entry, "tradeType", what, PerpOrderType),
        price=_req_positive(entry, "price", what),
        qty=_req_positive(entry, "qty", what),
        fee=_opt_number(entry, "fee", what),
        time_ms=_req_ms(entry, "time", what),
        is_taker=_opt_flag(entry, "isTaker", what),
        mark_price=_opt_price(entry, "markPrice", what),
        index_price=_opt_price(entry, "indexPrice", what),
        cursor=row_id if row_id is not None else trade_id,
    )


def _perp_history_page(raw: Any, parse: Callable[[Any], T], cursor: Callable[[T], int], what: str) -> Page[T]:
    page = _perp_object(raw, what)
    rows = tuple(parse(entry) for entry in _perp_list(page.get("list") or [], f"{what} list"))
    has_next = _opt_flag(page, "hasNext", what)
    return Page(rows=rows, has_next=bool(has_next), next_cursor=cursor(rows[-1]) if rows else None,
                stated=has_next is not None, listed=len(rows))


def parse_perp_order_page(raw: Any) -> Page[PerpOrder]:
    """A page of the perp order history (``{list, hasNext, hasPre}``); the cursor is the last
    ``orderId`` (API.md 14.9 #7)."""
    return _perp_history_page(raw, perp_order_from_api, lambda order: order.order_id, "perp order history")


def parse_perp_fill_page(raw: Any) -> Page[PerpFill]:
    """A page of the perp fill history; the cursor is the last row's ``id`` (its ``tradeId`` without one)."""
    return _perp_history_page(raw, perp_fill_from_api, lambda fill: fill.cursor, "perp fill history")


@dataclass(frozen=True)
class PerpCancelAck:
    """One row of a batch-cancel answer (API.md 14.5): accepted or not, never "done"."""

    order_id: int | None
    client_order_id: int | None
    accepted: bool
    message: str


def parse_perp_cancel_acks(raw: Any) -> list[PerpCancelAck]:
    acks = []
    for entry in _perp_list(raw if raw is not None else [], "batch cancel answer"):
        item = _perp_object(entry, "batch cancel row")
        code = _opt_code(item, "scode", "batch cancel row")
        if code is None:
            raise PayloadError("scode", f"batch cancel row {item!r}: field 'scode' is missing")
        coid = _opt_id(item, "clOrdId", "batch cancel row")
        acks.append(PerpCancelAck(order_id=_opt_id(item, "ordId", "batch cancel row"), client_order_id=coid or None,
                                  accepted=code == 0, message=_opt_text(item, "smsg", "batch cancel row") or ""))
    return acks


# ---- positions, leverage, funding payments (API.md 14.7) -----------------------------

@dataclass(frozen=True)
class PerpPosition:
    """One perp position (API.md 14.7). One-way: ``qty`` is the magnitude, ``side`` comes from
    ``tradeSide`` only (BUY = long, SELL = short; never from ``delta``), ``signed_qty`` is
    + long / − short. ``liquidation_price`` is None when the exchange has none (null or ≤ 0).
    ``avg_price`` is required of an open position; only a flat row (``qty`` 0) may lack it (None)."""

    position_id: int | None
    symbol: str
    side: Side
    qty: float
    signed_qty: float
    avg_price: float | None
    mark_price: float | None
    unrealized_pnl: float | None
    initial_margin: float | None
    maintenance_margin: float | None
    leverage: float | None
    liquidation_price: float | None
    update_time_ms: int | None


def perp_position_from_api(raw: Any) -> PerpPosition:
    entry = _perp_object(raw, "perp position")
    symbol = _req_text(entry, "symbol", "perp position")
    what = f"perp position {symbol}"
    side = _req_side(entry, "tradeSide", what)
    qty = _req_number(entry, "qty", what)
    if qty < 0:
        raise PayloadError("qty", f"{what}: field 'qty' is {entry.get('qty')!r}; expected a magnitude")
    position_id = _opt_id(entry, "positionId", what)
    liquidation = _opt_number(entry, "elp", what)
    return PerpPosition(
        position_id=position_id if position_id is not None else _opt_id(entry, "id", what),
        symbol=symbol,
        side=side,
        qty=qty,
        signed_qty=qty * side.sign,
        avg_price=_req_number(entry, "avgPrice", what) if qty > 0 else _opt_number(entry, "avgPrice", what),
        mark_price=_opt_price(entry, "markPrice", what),
        unrealized_pnl=_opt_number(entry, "upnl", what),
        initial_margin=_opt_number(entry, "initMargin", what),
        maintenance_margin=_opt_number(entry, "maintMargin", what),
        leverage=_opt_number(entry, "leverage", what),
        liquidation_price=liquidation if liquidation is not None and liquidation > 0 else None,
        update_time_ms=_opt_ms(entry, "updateTime", what),
    )


def parse_perp_positions(raw: Any) -> list[PerpPosition]:
    """Every position of the answer (a list; null means none)."""
    return [perp_position_from_api(entry) for entry in _perp_list(raw if raw is not None else [], "perp positions")]


def parse_perp_leverage(raw: Any, *, symbol: str) -> float:
    """The current leverage of ``symbol`` (``{userId, symbol, currentLeverage}``)."""
    entry = _perp_object(raw, f"leverage of {symbol}")
    named = entry.get("symbol")
    if named is not None and named != symbol:
        raise PayloadError("symbol", f"leverage of {symbol}: the answer is for {named!r}")
    return _req_positive(entry, "currentLeverage", f"leverage of {symbol}")


@dataclass(frozen=True)
class FundingPayment:
    """One funding payment of our account (API.md 14.7). ``fee`` is signed as the exchange
    reports it: < 0 paid, > 0 received. ``side`` is the position's (BUY = long)."""

    record_id: int | None
    symbol: str
    side: Side
    qty: float
    rate: float
    fee: float
    time_ms: int


def funding_payment_from_api(raw: Any) -> FundingPayment:
    entry = _perp_object(raw, "funding record")
    symbol = _req_text(entry, "symbol", "funding record")
    what = f"funding record {symbol}"
    return FundingPayment(
        record_id=_opt_id(entry, "id", what),
        symbol=symbol,
        side=_req_side(entry, "tradeSide", what),
        qty=_req_number(entry, "qty", what),
        rate=_req_number(entry, "fundRate", what),
        fee=_req_number(entry, "fundFee", what),
        time_ms=_req_ms(entry, "ctime", what),
    )


@dataclass(frozen=True)
class NumberedPage(Generic[T]):
    """One page of a page-numbered list (``{list, pageTotal, total}``; API.md 14.5, 14.7).
    ``page_total`` / ``total`` are None when the answer leaves them out."""

    rows: tuple[T, ...]
    page_total: int | None
    total: int | None


def _numbered_page(raw: Any, parse: Callable[[Any], T], what: str) -> NumberedPage[T]:
    if isinstance(raw, list):   # a bare list: everything there is, on one page
        return NumberedPage(rows=tuple(parse(entry) for entry in raw), page_total=1, total=len(raw))
    page = _perp_object(raw if raw is not None else {}, what)
    rows = tuple(parse(entry) for entry in _perp_list(page.get("list") or [], f"{what} list"))
    return NumberedPage(rows=rows, page_total=_opt_code(page, "pageTotal", what), total=_opt_code(page, "total", what))


def parse_perp_pending_page(raw: Any) -> NumberedPage[PerpOrder]:
    """One page of the open perp orders."""
    return _numbered_page(raw, perp_order_from_api, "perp open orders")


def parse_funding_payment_page(raw: Any) -> NumberedPage[FundingPayment]:
    """One page of funding payments (the latest-records route answers the same shape)."""
    return _numbered_page(raw, funding_payment_from_api, "funding records")
