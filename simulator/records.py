"""The exchange's order and fill records, indexed for the lookups its handlers make.

Why this module exists: a simulated exchange keeps every order and fill it ever made (trade
history, order history and the campaign invariants read them), so a handler that scanned
them all made a 30-day backtest's requests grow slower day after day. Each record set keeps
its items by id (a plain dict, so ``records[id]``, ``get``, ``values`` read as before) plus
the indexes the handlers look up by: per account in creation order (time windows are cut by
bisection), per account and ``clientOrderId``, and per symbol for fills.

Ids and times only grow in a run (the exchange's clock never goes back), so the per-account
lists are sorted by time as they are appended. Should an item ever arrive out of time order
(a hand-built state file), that list is marked unsorted and its window queries fall back to
a scan: always the answer of a full scan, only the cost differs.
"""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Callable, Generic, Iterable, Iterator, TypeVar

if TYPE_CHECKING:
    from simulator.exchange import Fill, Order

T = TypeVar("T")


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


class OrderRecords:
    """Every order by ``order_id``, with per-account and per-``clientOrderId`` indexes."""

    def __init__(self, orders: Iterable[Order] = ()) -> None:
        self.by_id: dict[int, Order] = {}
        self._by_user: dict[int, _TimeOrdered[Order]] = {}
        self._by_client_id: dict[tuple[int, int], list[Order]] = {}
        for order in orders:
            self.add(order)

    def add(self, order: Order) -> None:
        """Record a new order (its id never seen before: ids are never reused)."""
        if order.order_id in self.by_id:
            raise ValueError(f"order id {order.order_id} is already recorded")
        self.by_id[order.order_id] = order
        self._by_user.setdefault(order.user_id, _TimeOrdered(_created_ms)).append(order)
        if order.client_order_id is not None:
            self._by_client_id.setdefault((order.user_id, order.client_order_id), []).append(order)

    def __getitem__(self, order_id: int) -> Order:
        return self.by_id[order_id]

    def get(self, order_id: int) -> Order | None:
        return self.by_id.get(order_id)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self.by_id

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[int]:
        return iter(self.by_id)

    def values(self) -> Iterable[Order]:
        return self.by_id.values()

    def with_client_order_id(self, user_id: int, client_order_id: int) -> list[Order]:
        """The account's orders that carried ``client_order_id``, oldest first."""
        return list(self._by_client_id.get((user_id, client_order_id), ()))

    def created_between(self, user_id: int, start_ms: int, end_ms: int) -> list[Order]:
        """The account's orders created in ``[start_ms, end_ms]``, oldest first."""
        user = self._by_user.get(user_id)
        return user.between(start_ms, end_ms) if user is not None else []


class FillRecords:
    """Every fill by ``trade_id`` in arrival order, with per-account and per-symbol indexes."""

    def __init__(self, fills: Iterable[Fill] = ()) -> None:
        self.by_id: dict[int, Fill] = {}
        self.in_order: list[Fill] = []
        self._by_user: dict[int, _TimeOrdered[Fill]] = {}
        self._by_symbol: dict[str, list[Fill]] = {}
        for fill in fills:
            self.add(fill)

    def add(self, fill: Fill) -> None:
        """Record a new fill (its id never seen before)."""
        if fill.trade_id in self.by_id:
            raise ValueError(f"fill id {fill.trade_id} is already recorded")
        self.by_id[fill.trade_id] = fill
        self.in_order.append(fill)
        self._by_user.setdefault(fill.user_id, _TimeOrdered(_fill_ms)).append(fill)
        self._by_symbol.setdefault(fill.symbol, []).append(fill)

    def __getitem__(self, trade_id: int) -> Fill:
        return self.by_id[trade_id]

    def get(self, trade_id: int) -> Fill | None:
        return self.by_id.get(trade_id)

    def __contains__(self, trade_id: object) -> bool:
        return trade_id in self.by_id

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[int]:
        return iter(self.by_id)

    def values(self) -> Iterable[Fill]:
        return self.by_id.values()

    def since(self, position: int) -> list[Fill]:
        """The fills recorded after the first ``position`` ones, in arrival order."""
        return self.in_order[position:]

    def on_symbol(self, symbol: str) -> list[Fill]:
        """Every fill on ``symbol``, in arrival order."""
        return self._by_symbol.get(symbol, [])

    def of_user_between(self, user_id: int, start_ms: int, end_ms: int) -> list[Fill]:
        """The account's fills with ``start_ms <= time_ms <= end_ms``, in arrival order."""
        user = self._by_user.get(user_id)
        return user.between(start_ms, end_ms) if user is not None else []


def _created_ms(order: Order) -> int:
    return order.create_ms


def _fill_ms(fill: Fill) -> int:
    return fill.time_ms
