"""The exchange's order and fill records, indexed for the lookups its handlers make.

Why this module exists: a simulated exchange keeps every order and fill it ever made (trade
history, order history and the campaign invariants read them), so a handler that scanned
them all made a 30-day backtest's requests grow slower day after day. Each record set keeps
its items by id plus the indexes the handlers look up by: per account in creation order
(time windows are cut by bisection), per account and ``clientOrderId``, and per symbol for
fills.

Ids and times only grow in a run (the exchange's clock never goes back), so the per-account
lists are sorted by time as they are appended. Should an item ever arrive out of time order
(a hand-built state file), that list is marked unsorted and its window queries fall back to
a scan: always the answer of a full scan, only the cost differs.

The cold archive. Kept as Python objects, every order cost about 950 bytes and every fill
about 600 for the rest of the run: a backtest's memory grew by the day. Records the exchange
will never change again (finished orders, old fills; the exchange decides when, see
``OrderRecords.archive`` and ``FillRecords.archive``) move to rows of an in-memory SQLite
table, several times more compact. Every read answers exactly as before (same items, same
order, same types: a row is rebuilt into an equal ``Order`` or ``Fill``), and the hot paths
(recent orders and fills, time windows of the last minutes, newest prints) read the table
only when the answer may be in it, which small summaries of the archived rows tell (the
range of their ids and times per account and per symbol, a Bloom filter of their
``clientOrderId``). A rebuilt item is a copy: the exchange must not change an archived one,
which is why only items it can no longer change are archived.
"""
from __future__ import annotations

import array
import bisect
import dataclasses
import heapq
import logging
import pickle
import sqlite3
from typing import (TYPE_CHECKING, Any, Callable, Collection, Generic, Iterable, Iterator, Sequence,
                    TypeVar)

if TYPE_CHECKING:
    from simulator.exchange import Fill, Order

log = logging.getLogger(__name__)

T = TypeVar("T")

_INT64_MIN = -(2 ** 63)
_INT64_MAX = 2 ** 63 - 1
_NEWEST_BATCH = 128     # rows read at a time when the archive is walked newest first


class _TimeOrdered(Generic[T]):
    """Items of one account in arrival order, with their times for bisection."""

    def __init__(self, time_of: Callable[[T], int]) -> None:
        self._time_of = time_of
        self.items: list[T] = []
        self.times: list[int] = []
        self.sorted = True

    def append(self, item: T) -> None:
        at = self._time_of(item)
        if self.times and at < self.times[-1]:
            self.sorted = False
        self.items.append(item)
        self.times.append(at)

    def between(self, start_ms: int, end_ms: int) -> list[T]:
        """Items with ``start_ms <= time <= end_ms``, in arrival order."""
        if not self.sorted:
            return [item for item in self.items if start_ms <= self._time_of(item) <= end_ms]
        low = bisect.bisect_left(self.times, start_ms)
        high = bisect.bisect_right(self.times, end_ms)
        return self.items[low:high]

    def retain(self, keep: Callable[[T], bool]) -> None:
        """Keep only the items ``keep`` accepts, in their order (the others went to the archive)."""
        self.items = [item for item in self.items if keep(item)]
        self.times = [self._time_of(item) for item in self.items]
        self._recheck_sorted()

    def drop_first(self, count: int) -> None:
        """Forget the ``count`` oldest arrivals (they went to the archive)."""
        del self.items[:count]
        del self.times[:count]
        self._recheck_sorted()

    def _recheck_sorted(self) -> None:
        if not self.sorted:
            self.sorted = all(a <= b for a, b in zip(self.times, self.times[1:]))


# =============================================================================== row codec

def _is_int64(value: object) -> bool:
    return type(value) is int and _INT64_MIN <= value <= _INT64_MAX


def _is_text(value: object) -> bool:
    """A str SQLite stores and gives back unchanged (a lone surrogate cannot be UTF-8 encoded)."""
    if type(value) is not str:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_ids(value: object) -> bool:
    return type(value) is list and all(_is_int64(item) for item in value)


# What a field holds, as (exactly this type?, to a column value, from a column value). A value
# that fails the check is not lost: the whole item is then kept pickled (see ``_Codec``).
_KINDS: dict[str, tuple[Callable[[object], bool], Callable[[Any], Any], Callable[[Any], Any]]] = {
    "int": (_is_int64, lambda v: v, lambda v: v),
    "opt_int": (lambda v: v is None or _is_int64(v), lambda v: v, lambda v: v),
    # NaN would come back as NULL: it is not a plain float here.
    "float": (lambda v: type(v) is float and v == v, lambda v: v, lambda v: v),
    "bool": (lambda v: type(v) is bool, int, bool),
    "str": (_is_text, lambda v: v, lambda v: v),
    "ids": (_is_ids, lambda v: array.array("q", v).tobytes(), lambda v: array.array("q", v).tolist()),
    # Not stored at all: only archived when empty, rebuilt as a new empty list.
    "empty_list": (lambda v: type(v) is list and not v, lambda v: None, lambda v: []),
}

# "symbol": a str stored as a number (``_Codec``), "ids": a list of int64 as one blob.
_ORDER_SPEC: tuple[tuple[str, str], ...] = (
    ("order_id", "int"), ("user_id", "int"), ("symbol", "symbol"), ("side", "int"), ("trade_type", "int"),
    ("time_in_force", "str"), ("price", "float"), ("lots", "int"), ("reduce_only", "bool"),
    ("client_order_id", "opt_int"), ("create_ms", "int"), ("update_ms", "int"), ("state", "int"),
    ("filled_lots", "int"), ("fee", "float"), ("rpnl", "float"), ("fill_ids", "ids"),
    ("transitions", "empty_list"), ("index_at_create", "float"),
)
_ORDER_KEYS = ("order_id", "user_id", "client_order_id", "create_ms", "update_ms")

_FILL_SPEC: tuple[tuple[str, str], ...] = (
    ("trade_id", "int"), ("order_id", "int"), ("user_id", "int"), ("symbol", "symbol"), ("side", "int"),
    ("trade_type", "int"), ("price", "float"), ("lots", "int"), ("fee", "float"), ("time_ms", "int"),
    ("is_taker", "bool"), ("mark", "float"), ("index", "float"), ("iv", "float"), ("reduce_only", "bool"),
    ("realized", "float"), ("report_price", "float"), ("block_trade_id", "opt_int"),
)
_FILL_KEYS = ("trade_id", "user_id", "symbol", "time_ms")


class _Codec:
    """One record class as a table row: its fields as columns, exactly as they were.

    The key fields (the ones queries filter on) must hold their plain type or the item is not
    archived at all. Any other field that does not (a NaN, a numpy float from a hand-built
    state) makes the item travel pickled in the ``odd`` column, key columns still filled in,
    so it comes back identical either way; the exchange's own records always fit the columns.

    A symbol is stored as its number in a small table of the symbols seen (``symbol_number``):
    a row and an index entry then hold one small int instead of a 22-character name, and the
    few symbols one run trades cost little.
    """

    def __init__(self, cls: type, spec: tuple[tuple[str, str], ...], keys: tuple[str, ...]) -> None:
        names = [f.name for f in dataclasses.fields(cls)]
        if names != [name for name, _ in spec]:
            raise TypeError(f"the archive's columns for {cls.__name__} do not match its fields {names}")
        self.cls = cls
        self._symbol_numbers: dict[str, int] = {}
        self._symbols: list[str] = []
        self._kinds = {**_KINDS, "symbol": (_is_text, self._number_of, self._symbols.__getitem__)}
        self._spec = [(name, self._kinds[kind], kind == "empty_list") for name, kind in spec]
        self._keys = frozenset(keys)
        self.columns = [name for name, kind in spec if kind != "empty_list"]
        # Decoding, prepared once (a history read rebuilds many rows): the columns whose value
        # needs converting back, and where the unstored empty lists go.
        self._converted = [(self.columns.index(name), self._kinds[kind][2]) for name, kind in spec
                           if kind in ("bool", "ids", "symbol")]
        self._empty_lists = [position for position, (_, kind) in enumerate(spec) if kind == "empty_list"]

    def _number_of(self, symbol: str) -> int:
        number = self._symbol_numbers.get(symbol)
        if number is None:
            number = self._symbol_numbers[symbol] = len(self._symbols)
            self._symbols.append(symbol)
        return number

    def symbol_number(self, symbol: str) -> int | None:
        """The number ``symbol`` is stored as; None when no archived item has it."""
        return self._symbol_numbers.get(symbol)

    def fits(self, item: object) -> bool:
        """Whether ``item`` can be archived: one of ours, its key fields of their plain type."""
        if type(item) is not self.cls:
            return False
        return all(kind[0](getattr(item, name)) for name, kind, _ in self._spec if name in self._keys)

    def encode(self, item: object) -> tuple[Any, ...]:
        """The values of ``columns`` then ``odd`` (the pickled item, or None when the columns say it all).

        Only for an item that ``fits``."""
        values = [(kind, getattr(item, name), unstored) for name, kind, unstored in self._spec]
        if all(kind[0](value) for kind, value, _ in values):
            return (*[kind[1](value) for kind, value, unstored in values if not unstored], None)
        keys_only = [kind[1](value) if name in self._keys else None
                     for (name, _, unstored), (kind, value, _) in zip(self._spec, values) if not unstored]
        return (*keys_only, pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))

    def decode(self, row: Sequence[Any]) -> Any:
        """The item ``encode`` stored as ``row`` (the values of ``columns`` then ``odd``)."""
        if row[-1] is not None:
            return pickle.loads(row[-1])
        values = list(row[:-1])
        for position, convert in self._converted:
            values[position] = convert(values[position])
        for position in self._empty_lists:
            values.insert(position, [])
        return self.cls(*values)


class _KeyFilter:
    """A Bloom filter over hashable keys: "certainly absent" or "perhaps present".

    Why: a lookup by ``clientOrderId`` is on a hot path (each new perpetual order checks its
    id is free; order status by clientOrderId), and the answer is almost always only among the
    recent orders. Holding every archived key exactly would cost about 60 bytes each; this costs
    1.5 bytes (12 bits, 5 hashes: under 1 % false "perhaps" when full, when it is rebuilt twice as
    large), and a false "perhaps" only costs one indexed read of the table, whose answer is the same.
    """

    _BITS_PER_KEY = 12
    _HASHES = 5
    _MIX = 0x9E3779B97F4A7C15
    _MASK = (1 << 64) - 1

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1024, capacity)
        self._size = self.capacity * self._BITS_PER_KEY
        self._bits = bytearray((self._size + 7) // 8)
        self.count = 0

    def _positions(self, key: object) -> Iterator[int]:
        mixed = (hash(key) * self._MIX) & self._MASK
        first, step = mixed >> 32, (mixed & 0xFFFF_FFFF) | 1
        for i in range(self._HASHES):
            yield (first + i * step) % self._size

    def add(self, key: object) -> None:
        for position in self._positions(key):
            self._bits[position >> 3] |= 1 << (position & 7)
        self.count += 1

    def may_hold(self, key: object) -> bool:
        return all(self._bits[position >> 3] & (1 << (position & 7)) for position in self._positions(key))


class _ColdTable:
    """The archived items of one record set: one table of an in-memory SQLite database.

    The connection is used under the exchange's lock only, from whichever thread holds it
    (the HTTP server's threads, or the backtest's), hence ``check_same_thread=False``.
    Columns carry no declared type, so SQLite keeps each value exactly as given (an int stays
    an int, a float a float); the first column is the table's rowid.
    """

    def __init__(self, codec: _Codec, rowid: str, extra: Sequence[str], indexes: Sequence[str]) -> None:
        self.codec = codec
        self._conn = sqlite3.connect(":memory:", check_same_thread=False)
        columns = [_quoted(c) for c in (*extra, *codec.columns) if c != rowid]
        self._insert_columns = [_quoted(c) for c in (*extra, *codec.columns, "odd")]
        self.item_columns = ", ".join(_quoted(c) for c in (*codec.columns, "odd"))
        self._conn.execute(f"CREATE TABLE cold ({rowid} INTEGER PRIMARY KEY, {', '.join(columns)}, odd)")
        for number, index in enumerate(indexes):
            self._conn.execute(f"CREATE INDEX cold_{number} ON cold {index}")
        self.count = 0

    def insert(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of the extra columns' values followed by ``codec.encode(item)``."""
        marks = ", ".join("?" for _ in self._insert_columns)
        with self._conn:
            cursor = self._conn.executemany(
                f"INSERT INTO cold ({', '.join(self._insert_columns)}) VALUES ({marks})", rows)
            self.count += cursor.rowcount

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def items(self, where: str, params: Sequence[Any] = ()) -> list[Any]:
        """The items of the rows ``where`` selects (a WHERE/ORDER BY/LIMIT tail), in its order."""
        decode = self.codec.decode
        return [decode(row) for row in self._conn.execute(f"SELECT {self.item_columns} FROM cold {where}", params)]

    def keyed_items(self, key: str, where: str, params: Sequence[Any] = ()) -> list[tuple[int, Any]]:
        """(``key`` column, item) of the rows ``where`` selects, in its order."""
        decode = self.codec.decode
        return [(row[0], decode(row[1:])) for row in
                self._conn.execute(f"SELECT {key}, {self.item_columns} FROM cold {where}", params)]


def _quoted(name: str) -> str:
    """A column name as an SQL identifier (a field may be named like a keyword: ``index``)."""
    return f'"{name}"'


def _first(pair: tuple[int, Any]) -> int:
    return pair[0]


def _widen(span: list[int] | None, low: int, high: int) -> list[int]:
    """``[min, max]`` grown to cover ``low..high``."""
    if span is None:
        return [low, high]
    span[0], span[1] = min(span[0], low), max(span[1], high)
    return span


def _overlaps(span: list[int] | None, start: int, end: int) -> bool:
    return span is not None and span[0] <= end and span[1] >= start


def _may_be_id(span: list[int] | None, key: object) -> bool:
    """Whether an id lookup could find ``key`` among archived ids spanning ``span``."""
    return span is not None and isinstance(key, (int, float)) and span[0] <= key <= span[1]


class OrderRecords:
    """Every order by ``order_id``, with per-account and per-``clientOrderId`` indexes.

    Orders the exchange will never change again move to a cold table (``archive``); every
    read answers as if they had stayed. Items come in the order they were added (``seq``):
    hot ones keep it in their dict and lists, cold rows carry it, and reads merge the two.
    """

    def __init__(self, orders: Iterable[Order] = ()) -> None:
        self._hot: dict[int, Order] = {}
        self._seq: dict[int, int] = {}
        self._next_seq = 0
        self._by_user: dict[int, _TimeOrdered[Order]] = {}
        self._by_client_id: dict[tuple[int, int], list[Order]] = {}
        self._row_codec: _Codec | None = None
        self._cold: _ColdTable | None = None
        self._cold_ids: list[int] | None = None           # [min, max] archived order_id
        self._cold_created: dict[int, list[int]] = {}     # user -> [min, max] archived create_ms
        self._cold_last_update: int | None = None
        self._cold_clients = _KeyFilter(0)
        for order in orders:
            self.add(order)

    def add(self, order: Order) -> None:
        """Record a new order (its id never seen before: ids are never reused)."""
        if order.order_id in self:
            raise ValueError(f"order id {order.order_id} is already recorded")
        self._hot[order.order_id] = order
        self._seq[order.order_id] = self._next_seq
        self._next_seq += 1
        self._by_user.setdefault(order.user_id, _TimeOrdered(_created_ms)).append(order)
        if order.client_order_id is not None:
            self._by_client_id.setdefault((order.user_id, order.client_order_id), []).append(order)

    # ------------------------------------------------------------------ reads

    def __getitem__(self, order_id: int) -> Order:
        order = self.get(order_id)
        if order is None:
            raise KeyError(order_id)
        return order

    def get(self, order_id: int) -> Order | None:
        order = self._hot.get(order_id)
        if order is None and self._cold is not None and _may_be_id(self._cold_ids, order_id):
            found = self._cold.items("WHERE order_id = ?", (order_id,))
            return found[0] if found else None
        return order

    def __contains__(self, order_id: object) -> bool:
        if order_id in self._hot:
            return True
        return (self._cold is not None and _may_be_id(self._cold_ids, order_id)
                and bool(self._cold.rows("SELECT 1 FROM cold WHERE order_id = ?", (order_id,))))

    def __len__(self) -> int:
        return len(self._hot) + (self._cold.count if self._cold is not None else 0)

    def __iter__(self) -> Iterator[int]:
        if self._cold is None:
            return iter(self._hot)
        cold = ((seq, order_id) for seq, order_id in self._cold.rows("SELECT seq, order_id FROM cold ORDER BY seq"))
        hot = ((self._seq[order_id], order_id) for order_id in self._hot)
        return (order_id for _, order_id in heapq.merge(cold, hot, key=_first))

    def values(self) -> Iterable[Order]:
        """Every order, in the order they were added."""
        if self._cold is None:
            return self._hot.values()
        return self._merged(self._cold.keyed_items("seq", "ORDER BY seq"), self._hot.values())

    def as_dict(self) -> dict[int, Order]:
        """Every order by id, in the order they were added (a new dict)."""
        return {order.order_id: order for order in self.values()}

    @property
    def hot_count(self) -> int:
        """How many orders are kept as objects (the others are archived rows)."""
        return len(self._hot)

    def with_client_order_id(self, user_id: int, client_order_id: int) -> list[Order]:
        """The account's orders that carried ``client_order_id``, oldest first."""
        hot = self._by_client_id.get((user_id, client_order_id), ())
        if self._cold is None or not self._cold_clients.may_hold((user_id, client_order_id)):
            return list(hot)
        cold = self._cold.keyed_items("seq", "WHERE user_id = ? AND client_order_id = ? ORDER BY seq",
                                      (user_id, client_order_id))
        return self._merged(cold, hot)

    def created_between(self, user_id: int, start_ms: int, end_ms: int) -> list[Order]:
        """The account's orders created in ``[start_ms, end_ms]``, oldest first."""
        user = self._by_user.get(user_id)
        hot = user.between(start_ms, end_ms) if user is not None else []
        if self._cold is None or not _overlaps(self._cold_created.get(user_id), start_ms, end_ms):
            return hot
        cold = self._cold.keyed_items("seq", "WHERE user_id = ? AND create_ms BETWEEN ? AND ? ORDER BY seq",
                                      (user_id, start_ms, end_ms))
        return self._merged(cold, hot)

    def values_updated_after(self, after_ms: int) -> Iterable[Order]:
        """``values()`` less archived orders whose ``update_ms <= after_ms``: for a caller that filters
        on ``update_ms > after_ms`` anyway (and then gets the answer of ``values()``), without
        reading the archive when nothing archived was updated that late."""
        if self._cold is None or self._cold_last_update is None or self._cold_last_update <= after_ms:
            return self._hot.values()
        return self._merged(self._cold.keyed_items("seq", "WHERE update_ms > ? ORDER BY seq", (after_ms,)),
                            self._hot.values())

    def _merged(self, cold: list[tuple[int, Order]], hot: Iterable[Order]) -> list[Order]:
        """Cold (seq, order) pairs and hot orders (both in seq order) as one list in seq order."""
        if not cold:
            return list(hot)
        seq = self._seq
        pairs = heapq.merge(cold, ((seq[order.order_id], order) for order in hot), key=_first)
        return [order for _, order in pairs]

    # ------------------------------------------------------------------ the archive

    def archive(self, before_ms: int, live: Collection[int]) -> int:
        """Move the orders that are finished and unchanged since before ``before_ms`` to the cold
        table; returns how many moved.

        Finished means: not in ``live`` (the exchange's set of resting orders), not in a live
        state, no state transition pending. Why that is safe: every place the exchange changes
        an order (fills, cancels and their transitions, amends, expiry, ``force_fill``) acts
        only on a live order or on one it is creating, and a finished order never becomes live
        again; a cancel or an amend of a finished order is refused before anything is changed.
        So the copy a cold read returns is never written to, and equals the order it replaces.
        """
        codec = self._codec()
        gone = [order for order in self._hot.values() if order.order_id not in live and not order.is_live
                and type(order.update_ms) is int and order.update_ms < before_ms
                and type(order.transitions) is list and not order.transitions and codec.fits(order)]
        if not gone:
            return 0
        cold = self._cold_table()
        cold.insert((self._seq[order.order_id], *codec.encode(order)) for order in gone)
        gone_ids = {order.order_id for order in gone}
        for order in gone:
            self._note_cold(order)
            del self._hot[order.order_id]
            del self._seq[order.order_id]
        # A dict keeps its largest table after deletions: copies are sized for what is left.
        self._hot, self._seq = dict(self._hot), dict(self._seq)
        self._drop_from_indexes(gone, gone_ids)
        if self._cold_clients.count > self._cold_clients.capacity:
            self._rebuild_client_filter()
        return len(gone)

    def _codec(self) -> _Codec:
        """The row codec, made at the first archive (it numbers the symbols it stores)."""
        if self._row_codec is None:
            from simulator.exchange import Order   # imported here: the exchange imports this module
            self._row_codec = _Codec(Order, _ORDER_SPEC, _ORDER_KEYS)
        return self._row_codec

    def _cold_table(self) -> _ColdTable:
        if self._cold is None:
            self._cold = _ColdTable(self._codec(), rowid="order_id", extra=("seq",),
                                    indexes=("(user_id, create_ms)",
                                             "(user_id, client_order_id) WHERE client_order_id IS NOT NULL"))
        return self._cold

    def _note_cold(self, order: Order) -> None:
        """Widen the summaries that tell a read whether the cold table may hold its answer."""
        self._cold_ids = _widen(self._cold_ids, order.order_id, order.order_id)
        self._cold_created[order.user_id] = _widen(self._cold_created.get(order.user_id),
                                                   order.create_ms, order.create_ms)
        if self._cold_last_update is None or order.update_ms > self._cold_last_update:
            self._cold_last_update = order.update_ms
        if order.client_order_id is not None:
            self._cold_clients.add((order.user_id, order.client_order_id))

    def _drop_from_indexes(self, gone: list[Order], gone_ids: set[int]) -> None:
        for user_id in {order.user_id for order in gone}:
            user = self._by_user[user_id]
            user.retain(lambda o: o.order_id not in gone_ids)
            if not user.items:
                del self._by_user[user_id]
        keys: set[tuple[int, int]] = set()
        for order in gone:
            if order.client_order_id is not None:
                keys.add((order.user_id, order.client_order_id))
        for key in keys:
            kept = [o for o in self._by_client_id[key] if o.order_id not in gone_ids]
            if kept:
                self._by_client_id[key] = kept
            else:
                del self._by_client_id[key]
        if keys:
            self._by_client_id = dict(self._by_client_id)      # sized for what is left, as ``_hot``

    def _rebuild_client_filter(self) -> None:
        """A filter twice as large, from the table, once the old one holds more keys than it was sized for."""
        assert self._cold is not None
        keys = self._cold.rows("SELECT user_id, client_order_id FROM cold WHERE client_order_id IS NOT NULL")
        fresh = _KeyFilter(2 * len(keys))
        for user_id, client_order_id in keys:
            fresh.add((user_id, client_order_id))
        self._cold_clients = fresh


class FillRecords:
    """Every fill by ``trade_id`` in arrival order, with per-account and per-symbol indexes.

    Fills never change once made. The oldest ones move to a cold table (``archive``), always a
    prefix of the arrival order, so a fill's position in that order never changes: positions
    below ``_cold_count`` are rows (the table's rowid is the position), the others are hot.
    """

    def __init__(self, fills: Iterable[Fill] = ()) -> None:
        self._hot: dict[int, Fill] = {}
        self._recent: list[Fill] = []                     # the hot fills in arrival order
        self._by_user: dict[int, _TimeOrdered[Fill]] = {}
        self._by_symbol: dict[str, list[Fill]] = {}
        self._row_codec: _Codec | None = None
        self._cold: _ColdTable | None = None
        self._cold_count = 0
        self._cold_ids: list[int] | None = None           # [min, max] archived trade_id
        self._cold_times: dict[int, list[int]] = {}       # user -> [min, max] archived time_ms
        self._cold_symbols: dict[str, int] = {}           # symbol -> latest archived time_ms
        self._blocked_at: int | None = None               # position of a fill that cannot be archived
        for fill in fills:
            self.add(fill)

    def add(self, fill: Fill) -> None:
        """Record a new fill (its id never seen before)."""
        if fill.trade_id in self:
            raise ValueError(f"fill id {fill.trade_id} is already recorded")
        self._hot[fill.trade_id] = fill
        self._recent.append(fill)
        self._by_user.setdefault(fill.user_id, _TimeOrdered(_fill_ms)).append(fill)
        self._by_symbol.setdefault(fill.symbol, []).append(fill)

    # ------------------------------------------------------------------ reads

    def __getitem__(self, trade_id: int) -> Fill:
        fill = self.get(trade_id)
        if fill is None:
            raise KeyError(trade_id)
        return fill

    def get(self, trade_id: int) -> Fill | None:
        fill = self._hot.get(trade_id)
        if fill is None and self._cold is not None and _may_be_id(self._cold_ids, trade_id):
            found = self._cold.items("WHERE trade_id = ?", (trade_id,))
            return found[0] if found else None
        return fill

    def __contains__(self, trade_id: object) -> bool:
        if trade_id in self._hot:
            return True
        return (self._cold is not None and _may_be_id(self._cold_ids, trade_id)
                and bool(self._cold.rows("SELECT 1 FROM cold WHERE trade_id = ?", (trade_id,))))

    def __len__(self) -> int:
        return self._cold_count + len(self._recent)

    def __iter__(self) -> Iterator[int]:
        if self._cold is None:
            return iter(self._hot)
        cold = [trade_id for (trade_id,) in self._cold.rows("SELECT trade_id FROM cold ORDER BY pos")]
        return iter([*cold, *self._hot])

    def values(self) -> Iterable[Fill]:
        """Every fill in arrival order."""
        if self._cold is None:
            return self._hot.values()
        return [*self._cold.items("ORDER BY pos"), *self._recent]

    def as_dict(self) -> dict[int, Fill]:
        """Every fill by id, in arrival order (a new dict)."""
        return {fill.trade_id: fill for fill in self.values()}

    @property
    def hot_count(self) -> int:
        """How many fills are kept as objects (the others are archived rows)."""
        return len(self._recent)

    def since(self, position: int) -> list[Fill]:
        """The fills recorded after the first ``position`` ones, in arrival order."""
        if position < 0:
            position = max(0, len(self) + position)
        if position >= self._cold_count:
            return self._recent[position - self._cold_count:]
        assert self._cold is not None
        return [*self._cold.items("WHERE pos >= ? ORDER BY pos", (position,)), *self._recent]

    def on_symbol(self, symbol: str) -> list[Fill]:
        """Every fill on ``symbol``, in arrival order."""
        hot = self._by_symbol.get(symbol, [])
        if self._cold is None or symbol not in self._cold_symbols:
            return hot
        return [*self._cold.items("WHERE symbol = ? ORDER BY pos", (self._cold.codec.symbol_number(symbol),)),
                *hot]

    def newest_on_symbol(self, symbol: str) -> Iterator[Fill]:
        """Every fill on ``symbol``, newest (last arrived) first, read only as far as it is consumed."""
        yield from reversed(self._by_symbol.get(symbol, []))
        if self._cold is None or symbol not in self._cold_symbols:
            return
        number = self._cold.codec.symbol_number(symbol)
        below = self._cold_count
        while True:
            batch = self._cold.keyed_items("pos", "WHERE symbol = ? AND pos < ? ORDER BY pos DESC LIMIT ?",
                                           (number, below, _NEWEST_BATCH))
            for _, fill in batch:
                yield fill
            if len(batch) < _NEWEST_BATCH:
                return
            below = batch[-1][0]

    def on_symbol_since(self, symbol: str, since_ms: int) -> list[Fill]:
        """The fills on ``symbol`` with ``time_ms >= since_ms``, in arrival order."""
        hot = [fill for fill in self._by_symbol.get(symbol, ()) if fill.time_ms >= since_ms]
        latest = self._cold_symbols.get(symbol)
        if self._cold is None or latest is None or latest < since_ms:
            return hot
        cold = self._cold.items("WHERE symbol = ? AND time_ms >= ? ORDER BY pos",
                                (self._cold.codec.symbol_number(symbol), since_ms))
        return [*cold, *hot]

    def of_user_between(self, user_id: int, start_ms: int, end_ms: int) -> list[Fill]:
        """The account's fills with ``start_ms <= time_ms <= end_ms``, in arrival order."""
        user = self._by_user.get(user_id)
        hot = user.between(start_ms, end_ms) if user is not None else []
        if self._cold is None or not _overlaps(self._cold_times.get(user_id), start_ms, end_ms):
            return hot
        cold = self._cold.items("WHERE user_id = ? AND time_ms BETWEEN ? AND ? ORDER BY pos",
                                (user_id, start_ms, end_ms))
        return [*cold, *hot]

    # ------------------------------------------------------------------ the archive

    def archive(self, before_ms: int) -> int:
        """Move the oldest fills, as long as each has ``time_ms < before_ms``, to the cold table;
        returns how many moved.

        Only a prefix of the arrival order moves, so positions (``since``) stay what they were
        and every cold fill arrived before every hot one. Fills are never changed after they are
        made, so the copy a cold read returns equals the fill it replaces. A fill whose key
        fields are not of their plain type (only a hand-built state could hold one) stops the
        archive there, for good: correct, merely less compact.
        """
        codec = self._codec()
        moving = 0
        for fill in self._recent:
            if type(fill.time_ms) is not int or fill.time_ms >= before_ms:
                break
            if not codec.fits(fill):
                self._note_blocked(fill, self._cold_count + moving)
                break
            moving += 1
        if not moving:
            return 0
        cold = self._cold_table()
        gone, self._recent = self._recent[:moving], self._recent[moving:]
        start = self._cold_count
        cold.insert((start + offset, *cold.codec.encode(fill)) for offset, fill in enumerate(gone))
        self._cold_count += moving
        for fill in gone:
            self._note_cold(fill)
            del self._hot[fill.trade_id]
        self._hot = dict(self._hot)     # a dict keeps its largest table after deletions: a copy is sized to fit
        self._drop_from_indexes(gone)
        return moving

    def _codec(self) -> _Codec:
        """The row codec, made at the first archive (it numbers the symbols it stores)."""
        if self._row_codec is None:
            from simulator.exchange import Fill   # imported here: the exchange imports this module
            self._row_codec = _Codec(Fill, _FILL_SPEC, _FILL_KEYS)
        return self._row_codec

    def _cold_table(self) -> _ColdTable:
        if self._cold is None:
            self._cold = _ColdTable(self._codec(), rowid="pos", extra=("pos",),
                                    indexes=("(trade_id)", "(user_id, time_ms)", "(symbol)"))
        return self._cold

    def _note_cold(self, fill: Fill) -> None:
        """Widen the summaries that tell a read whether the cold table may hold its answer."""
        self._cold_ids = _widen(self._cold_ids, fill.trade_id, fill.trade_id)
        self._cold_times[fill.user_id] = _widen(self._cold_times.get(fill.user_id), fill.time_ms, fill.time_ms)
        latest = self._cold_symbols.get(fill.symbol)
        if latest is None or fill.time_ms > latest:
            self._cold_symbols[fill.symbol] = fill.time_ms

    def _note_blocked(self, fill: Fill, position: int) -> None:
        if self._blocked_at != position:
            self._blocked_at = position
            log.warning("fill %r cannot be archived (a key field of an unexpected type): older fills stay in "
                        "memory from position %d on", getattr(fill, "trade_id", None), position)

    def _drop_from_indexes(self, gone: list[Fill]) -> None:
        """Cut the archived fills off the front of the per-account and per-symbol lists."""
        per_user: dict[int, int] = {}
        per_symbol: dict[str, int] = {}
        for fill in gone:
            per_user[fill.user_id] = per_user.get(fill.user_id, 0) + 1
            per_symbol[fill.symbol] = per_symbol.get(fill.symbol, 0) + 1
        for user_id, count in per_user.items():
            user = self._by_user[user_id]
            if count == len(user.items):
                del self._by_user[user_id]
            else:
                user.drop_first(count)
        for symbol, count in per_symbol.items():
            kept = self._by_symbol[symbol][count:]
            if kept:
                self._by_symbol[symbol] = kept
            else:
                del self._by_symbol[symbol]


def _created_ms(order: Order) -> int:
    return order.create_ms


def _fill_ms(fill: Fill) -> int:
    return fill.time_ms
