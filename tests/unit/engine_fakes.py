"""A scripted market and exchange for driving the execution engines without a network.

Why a module of its own: engine tests need a ``PriceSource`` whose chain row and book can be
changed between steps (a book that crosses, then uncrosses) and a ``LedgerClient`` that
records every create and cancel, so a test can say exactly what was sent. Nothing here
sleeps or reads the wall clock: everything runs on a ``SimulatedClock(speed=0)``.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from clock import SimulatedClock
from coincall_payloads import OptionRow, OrderBook, option_row_from_api

NOW = 1_772_431_200.0
EXPIRY_MS = int((NOW + 7 * 86_400) * 1000)
TRADE = SimpleNamespace(id="T000000007", seq=7)
LIVE, FILLED, PARTIAL, CANCELED = 0, 1, 2, 3

Levels = tuple[tuple[float, float], ...]


def sym(strike: int, kind: str = "C") -> str:
    """A BTC option symbol of the fakes' one expiry."""
    return f"BTCUSD-9MAR26-{strike}-{kind}"


class Market:
    """``PriceSource``: per symbol a chain row (no mark IV, so the band is implied from the
    mark, underlying 100 000) and a book; ``set`` replaces both at any time."""

    def __init__(self, clock: SimulatedClock) -> None:
        self.clock = clock
        self.marks: dict[str, float] = {}
        self.books: dict[str, tuple[Levels, Levels]] = {}

    def set(self, symbol: str, *, mark: float, bids: Levels = (), asks: Levels = ()) -> None:
        self.marks[symbol] = mark
        self.books[symbol] = (tuple(bids), tuple(asks))

    def quote(self, symbol: str, *, max_age: float = 30.0) -> OptionRow:
        strike = int(symbol.split("-")[2])
        raw = {"symbol": symbol, "index": "BTCUSD", "endTime": EXPIRY_MS, "strike": strike,
               "type": 1 if symbol.endswith("C") else 2,
               "markPrice": str(self.marks[symbol]), "bid": "0", "bidSize": "0", "ask": "0", "askSize": "0",
               "underlyingPrice": "100000", "delta": "0.3"}
        return option_row_from_api(raw, as_of=self.clock.now(), expiry_hint=EXPIRY_MS, index_name="BTCUSD")

    def order_book(self, symbol: str, *, max_age: float = 3.0) -> OrderBook:
        bids, asks = self.books[symbol]
        return OrderBook(symbol=symbol, bids=bids, asks=asks, as_of=self.clock.now())

    def instrument(self, symbol: str) -> Any:
        return SimpleNamespace(tick_size=1.0, expiry_ms=EXPIRY_MS, min_qty=0.01, is_active=True)


class Exchange:
    """``LedgerClient``: orders rest LIVE until ``fill``; creates and cancels are recorded."""

    def __init__(self, clock: SimulatedClock) -> None:
        self.clock = clock
        self.rows: dict[int, dict[str, Any]] = {}
        self.creates: list[dict[str, Any]] = []
        self.cancels: list[int] = []

    def create_order(self, symbol: str, qty: float, side: int, price: float, client_order_id: int, *,
                     reduce_only: bool = False, time_in_force: str = "GTC", trade_type: int = 1) -> int:
        order_id = 9_000 + len(self.creates)
        self.creates.append(dict(symbol=symbol, qty=float(qty), side=int(side), price=float(price),
                                 coid=client_order_id, reduce_only=reduce_only, order_id=order_id))
        self.rows[order_id] = {"orderId": order_id, "clientOrderId": client_order_id, "symbol": symbol,
                               "qty": float(qty), "price": float(price), "fillQty": 0.0, "avgPrice": 0.0,
                               "fee": 0.0, "state": LIVE, "tradeSide": int(side)}
        return order_id

    def fill(self, order_id: int, qty: float, price: float) -> None:
        row = self.rows[order_id]
        row["fillQty"], row["avgPrice"] = qty, price
        row["state"] = FILLED if qty >= row["qty"] - 1e-9 else PARTIAL

    def query_order(self, order_id: int | None = None, client_order_id: int | None = None) -> dict[str, Any]:
        row = self.rows[order_id] if order_id is not None else next(
            r for r in self.rows.values() if r["clientOrderId"] == client_order_id)
        return {**row, "updateTime": int(self.clock.now() * 1000)}

    def cancel_order(self, order_id: int | None = None, client_order_id: int | None = None) -> None:
        assert order_id is not None
        self.cancels.append(order_id)
        row = self.rows[order_id]
        if row["state"] in (LIVE, PARTIAL):
            row["state"] = CANCELED

    def order_history(self, **filters: Any) -> list[dict[str, Any]]:
        return []

    def prices_on(self, symbol: str) -> list[float]:
        return [create["price"] for create in self.creates if create["symbol"] == symbol]
