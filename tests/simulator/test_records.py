"""The exchange's order and fill records answer their lookups as a full scan would."""
from __future__ import annotations

import pytest

from simulator.exchange import Fill, Order
from simulator.records import FillRecords, OrderRecords


def order(order_id: int, user: int, create_ms: int, client_id: int | None = None, symbol: str = "S") -> Order:
    return Order(order_id=order_id, user_id=user, symbol=symbol, side=1, trade_type=1, time_in_force="GTC",
                 price=1.0, lots=1, reduce_only=False, client_order_id=client_id, create_ms=create_ms,
                 update_ms=create_ms)


def fill(trade_id: int, user: int, time_ms: int, symbol: str = "S") -> Fill:
    return Fill(trade_id=trade_id, order_id=1, user_id=user, symbol=symbol, side=1, trade_type=1, price=1.0,
                lots=1, fee=0.0, time_ms=time_ms, is_taker=True, mark=1.0, index=1.0, iv=0.5, reduce_only=False,
                realized=0.0, report_price=1.0)


def test_orders_by_window_and_client_id_match_a_scan():
    items = [order(i, user=1 + i % 2, create_ms=10 * i, client_id=7 if i in (3, 5) else None) for i in range(1, 40)]
    records = OrderRecords(items)
    for start, end in ((0, 1000), (55, 155), (100, 100), (101, 109), (500, 20)):
        for user in (1, 2, 3):
            scan = [o for o in items if o.user_id == user and start <= o.create_ms <= end]
            assert records.created_between(user, start, end) == scan
    assert [o.order_id for o in records.with_client_order_id(2, 7)] == [3, 5]
    assert records.with_client_order_id(1, 7) == []
    assert records[4] is items[3] and records.get(99) is None and 4 in records and len(records) == 39


def test_an_order_out_of_time_order_falls_back_to_a_scan():
    items = [order(1, 1, 100), order(2, 1, 50), order(3, 1, 200)]
    records = OrderRecords(items)
    assert [o.order_id for o in records.created_between(1, 40, 150)] == [1, 2]


def test_an_id_is_recorded_once():
    records = OrderRecords([order(1, 1, 0)])
    with pytest.raises(ValueError):
        records.add(order(1, 1, 5))
    fills = FillRecords([fill(1, 1, 0)])
    with pytest.raises(ValueError):
        fills.add(fill(1, 2, 0))


def test_fills_by_user_window_symbol_and_arrival():
    items = [fill(i, user=1 + i % 3, time_ms=5 * i, symbol="A" if i % 2 else "B") for i in range(1, 30)]
    records = FillRecords(items)
    for user in (1, 2, 3):
        assert records.of_user_between(user, 20, 90) == [f for f in items if f.user_id == user and 20 <= f.time_ms <= 90]
    assert records.on_symbol("A") == [f for f in items if f.symbol == "A"]
    assert records.on_symbol("C") == []
    assert records.since(25) == items[25:]
