"""The records' cold archive answers every read exactly as the records kept as objects do.

Each test builds the same records twice, archives one of them, and compares every read path
with its un-archived twin: same items, same order, same types (compared by ``repr``, which
tells 1 from 1.0 and True from 1).
"""
from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest

from simulator.errors import SimError
from simulator.exchange import ST_CANCELED, ST_FILLED, ST_NEW, ST_PARTIAL, ExchangeConfig, Fill, Order, SimExchange
from simulator.records import _NEWEST_BATCH, FillRecords, OrderRecords
from tests.simulator.exchange_builders import WEEKLY_6MAR26, build, chain_symbol


def make_order(order_id: int, user: int, create_ms: int, *, client_id: int | None = None, state: int = ST_FILLED,
               update_ms: int | None = None, symbol: str = "S", fill_ids: list[int] | None = None) -> Order:
    return Order(order_id=order_id, user_id=user, symbol=symbol, side=1 + order_id % 2, trade_type=1,
                 time_in_force="GTC", price=100.5 + order_id, lots=3, reduce_only=order_id % 3 == 0,
                 client_order_id=client_id, create_ms=create_ms,
                 update_ms=create_ms + 5 if update_ms is None else update_ms, state=state, filled_lots=1,
                 fee=0.25, rpnl=-1.5, fill_ids=list(fill_ids or []), index_at_create=90_000.25)


def make_fill(trade_id: int, user: int, time_ms: int, symbol: str = "S", **changes: object) -> Fill:
    fill = Fill(trade_id=trade_id, order_id=trade_id // 2, user_id=user, symbol=symbol, side=1 + trade_id % 2,
                trade_type=1 if trade_id % 5 else 14, price=10.5 + trade_id, lots=1 + trade_id % 4, fee=0.01,
                time_ms=time_ms, is_taker=trade_id % 3 != 0, mark=11.0, index=90_000.0, iv=0.55,
                reduce_only=False, realized=0.0, report_price=10.5, block_trade_id=None if trade_id % 5 else 77)
    return dataclasses.replace(fill, **changes) if changes else fill


def same(a: object, b: object) -> None:
    """Equal, element by element, down to the types of the fields."""
    assert repr(a) == repr(b)


def random_orders(rng: random.Random, count: int) -> list[Order]:
    orders = []
    at = 1_000
    for order_id in range(1, count + 1):
        at += rng.randint(0, 50)
        created = at - (rng.randint(1, 200) if rng.random() < 0.05 else 0)     # a few out of time order
        finished = rng.random() < 0.8
        client_id = rng.choice([None, None, rng.randint(1, 40)])               # some ids reused
        orders.append(make_order(10 * order_id, user=rng.choice((1, 2, 3)), create_ms=created, client_id=client_id,
                                 state=ST_FILLED if finished else rng.choice((ST_NEW, ST_PARTIAL)),
                                 update_ms=created + rng.randint(0, 400),
                                 fill_ids=[rng.randint(1, 2 ** 62) for _ in range(rng.randint(0, 3))]))
    return orders


def compare_orders(twin: OrderRecords, records: OrderRecords, orders: list[Order]) -> None:
    same(list(records.values()), list(twin.values()))
    same(list(records), list(twin))
    same(records.as_dict(), twin.as_dict())
    assert len(records) == len(twin)
    for order in orders:
        same(records.get(order.order_id), twin.get(order.order_id))
        same(records[order.order_id], twin[order.order_id])
        assert order.order_id in records
    for missing in (0, 5, 10 * len(orders) + 10, -3, 7.5, "x"):
        assert records.get(missing) is None and missing not in records     # type: ignore[arg-type]
        with pytest.raises(KeyError):
            records[missing]                                               # type: ignore[index]
    for user in (1, 2, 3, 4):
        for client_id in range(0, 42):
            same(records.with_client_order_id(user, client_id), twin.with_client_order_id(user, client_id))
        times = sorted({o.create_ms for o in orders})
        for start, end in ((0, 10 ** 9), (times[0], times[len(times) // 3]), (times[len(times) // 2], times[-1]),
                           (times[-1] + 1, times[-1] + 9), (500, 400)):
            same(records.created_between(user, start, end), twin.created_between(user, start, end))
    for after in (0, orders[len(orders) // 2].update_ms, 10 ** 9):
        same([o for o in records.values_updated_after(after) if o.update_ms > after],
             [o for o in twin.values() if o.update_ms > after])


def test_archived_orders_answer_every_read_as_the_objects_did():
    rng = random.Random(5)
    orders = random_orders(rng, 400)
    twin, records = OrderRecords(), OrderRecords()
    live: set[int] = set()
    moved = 0
    for step, order in enumerate(orders):
        twin.add(order)
        records.add(dataclasses.replace(order, fill_ids=list(order.fill_ids)))
        if order.state != ST_FILLED:
            live.add(order.order_id)
        if step % 97 == 96:                            # several rounds, new orders in between
            moved += records.archive(order.create_ms - 300, live)
            compare_orders(twin, records, orders[:step + 1])
    moved += records.archive(10 ** 9, live)
    compare_orders(twin, records, orders)
    finished = sum(1 for o in orders if o.order_id not in live)
    assert moved == finished and records.hot_count == len(live)


def test_an_archived_order_is_found_by_id_and_by_client_order_id():
    records = OrderRecords([make_order(1, 7, 100, client_id=55), make_order(2, 7, 200, client_id=55, state=ST_NEW),
                            make_order(3, 7, 300, client_id=56)])
    assert records.archive(1_000, live={2}) == 2
    assert records.hot_count == 1 and len(records) == 3
    first = records.get(1)
    assert first is not None and first.client_order_id == 55 and first.state == ST_FILLED
    assert [o.order_id for o in records.with_client_order_id(7, 55)] == [1, 2]
    assert [o.order_id for o in records.with_client_order_id(7, 56)] == [3]
    assert records.with_client_order_id(8, 55) == []
    assert records[3].client_order_id == 56 and 3 in records
    with pytest.raises(ValueError):
        records.add(make_order(3, 7, 400))            # an archived id is still taken


def test_only_finished_orders_without_pending_transitions_and_old_enough_move():
    pending = make_order(1, 1, 100, state=ST_CANCELED)
    pending.transitions = [[500, ST_CANCELED]]
    records = OrderRecords([pending, make_order(2, 1, 100, state=ST_NEW), make_order(3, 1, 100),
                            make_order(4, 1, 100), make_order(5, 1, 100, update_ms=1_000)])
    assert records.archive(1_000, live={4}) == 1       # 4 is still resting per the exchange; 5 changed at the cutoff
    assert records.hot_count == 4 and len(records) == 5


def test_time_windows_spanning_hot_and_cold_orders():
    orders = [make_order(i, 1, 1_000 * i) for i in range(1, 21)]
    records = OrderRecords(orders)
    records.archive(10_500, live=())
    assert records.hot_count == 10
    same(records.created_between(1, 5_000, 15_000), orders[4:15])
    same(records.created_between(1, 0, 10_000), orders[:10])          # cold only
    same(records.created_between(1, 12_000, 30_000), orders[11:])     # hot only


def test_orders_of_unusual_values_come_back_identical():
    odd_price = make_order(1, 1, 100)
    odd_price.price = 100                              # an int where a float is usual (a hand-built state)
    nan_fee = make_order(2, 1, 100)
    nan_fee.fee = math.nan
    signed_zero = make_order(3, 1, 100)
    signed_zero.rpnl = -0.0
    huge_client_id = make_order(4, 1, 100, client_id=2 ** 70)   # beyond SQLite's integers: stays hot
    records = OrderRecords([odd_price, nan_fee, signed_zero, huge_client_id])
    assert records.archive(1_000, live=()) == 3
    assert repr(records[1]) == repr(odd_price) and type(records[1].price) is int
    assert repr(records[2]) == repr(nan_fee)
    assert math.copysign(1.0, records[3].rpnl) == -1.0
    assert records[4] is huge_client_id and [o.order_id for o in records.with_client_order_id(1, 2 ** 70)] == [4]


def test_a_cold_read_is_a_copy_and_a_hot_read_is_the_object():
    order = make_order(1, 1, 100)
    records = OrderRecords([order, make_order(2, 1, 5_000)])
    records.archive(1_000, live=())
    assert records[2] is not None and records.get(2) is records.get(2)
    assert records[1] == order and records[1] is not order


def test_many_archived_client_ids_grow_the_filter_and_stay_found():
    orders = [make_order(i, 1, i, client_id=i) for i in range(1, 5_001)]
    records = OrderRecords(orders)
    records.archive(10 ** 9, live=())
    assert records.hot_count == 0
    for client_id in (1, 1_024, 1_025, 2_500, 5_000):
        assert [o.order_id for o in records.with_client_order_id(1, client_id)] == [client_id]
    assert records.with_client_order_id(1, 5_001) == []


# ------------------------------------------------------------------ fills


def random_fills(rng: random.Random, count: int) -> list[Fill]:
    fills = []
    at = 1_000
    for trade_id in range(1, count + 1):
        at += rng.randint(0, 40)
        when = at - (rng.randint(1, 100) if rng.random() < 0.03 else 0)      # a few out of time order
        fills.append(make_fill(3 * trade_id, user=rng.choice((1, 2)), time_ms=when, symbol=rng.choice("ABC")))
    return fills


def compare_fills(twin: FillRecords, records: FillRecords, fills: list[Fill]) -> None:
    same(list(records.values()), list(twin.values()))
    same(list(records), list(twin))
    same(records.as_dict(), twin.as_dict())
    assert len(records) == len(twin)
    for fill in fills:
        same(records.get(fill.trade_id), twin.get(fill.trade_id))
        same(records[fill.trade_id], twin[fill.trade_id])
        assert fill.trade_id in records
    for missing in (0, 1, 3 * len(fills) + 3, 4.5):
        assert records.get(missing) is None and missing not in records     # type: ignore[arg-type]
    boundary = len(records) - records.hot_count
    for position in {*range(-3, 4), *range(boundary - 3, boundary + 4), *range(0, len(fills) + 3, 41),
                     len(fills) - 1, len(fills), len(fills) + 2}:
        same(records.since(position), twin.since(position))
    times = sorted(f.time_ms for f in fills)
    for symbol in "ABCD":
        same(records.on_symbol(symbol), twin.on_symbol(symbol))
        same(list(records.newest_on_symbol(symbol)), list(reversed(twin.on_symbol(symbol))))
        newest = records.newest_on_symbol(symbol)
        same([next(newest, None) for _ in range(3)], (list(reversed(twin.on_symbol(symbol))) + [None] * 3)[:3])
        for since in (0, times[len(times) // 4], times[-1], times[-1] + 1):
            same(records.on_symbol_since(symbol, since), [f for f in twin.on_symbol(symbol) if f.time_ms >= since])
    for user in (1, 2, 3):
        for start, end in ((0, 10 ** 9), (times[len(times) // 5], times[len(times) // 2]),
                           (times[-1] - 50, times[-1]), (900, 800)):
            same(records.of_user_between(user, start, end), twin.of_user_between(user, start, end))


def test_archived_fills_answer_every_read_as_the_objects_did():
    rng = random.Random(9)
    fills = random_fills(rng, 900)
    twin, records = FillRecords(), FillRecords()
    moved = 0
    for step, fill in enumerate(fills):
        twin.add(fill)
        records.add(fill)
        if step % 150 == 149:
            moved += records.archive(fill.time_ms - 500)
            assert len(records) - records.hot_count == moved
            compare_fills(twin, records, fills[:step + 1])
    assert moved > _NEWEST_BATCH                       # newest first crosses several batches of rows
    moved += records.archive(10 ** 9)
    compare_fills(twin, records, fills)
    assert moved == len(fills) and records.hot_count == 0


def test_fills_since_a_position_across_the_boundary_keep_their_positions():
    fills = [make_fill(i, 1, 100 * i) for i in range(1, 11)]
    records = FillRecords(fills)
    assert records.archive(450) == 4                   # positions 0..3 are rows now
    seen = len(records)
    records.add(make_fill(11, 1, 1_100))
    same(records.since(seen), [records[11]])
    same(records.since(2), fills[2:] + [records[11]])
    same(records.since(4), fills[4:] + [records[11]])
    assert records.since(len(records)) == []


def test_the_fill_archive_is_a_prefix_and_stops_at_a_fill_it_cannot_store():
    odd_time = make_fill(3, 1, 300)
    odd_time.time_ms = 300.0                           # a key field of an unusual type (hand-built state)
    fills = [make_fill(1, 1, 100), make_fill(2, 1, 500), odd_time, make_fill(4, 1, 50)]
    records = FillRecords(fills)
    assert records.archive(400) == 1                   # 2 is too recent: 4, older, waits behind it
    assert records.archive(10 ** 9) == 1               # stops at the odd one for good
    assert records.hot_count == 2
    same(list(records.values()), fills)
    same(records.of_user_between(1, 0, 1_000), fills)


def test_fills_of_unusual_values_come_back_identical():
    nan_iv = make_fill(1, 1, 100, iv=math.nan)
    int_price = make_fill(2, 1, 100, price=10)
    zero = make_fill(3, 1, 100, realized=-0.0)
    records = FillRecords([nan_iv, int_price, zero])
    assert records.archive(1_000) == 3
    assert repr(records[1]) == repr(nan_iv) and repr(records[2]) == repr(int_price)
    assert math.copysign(1.0, records[3].realized) == -1.0


# ------------------------------------------------------------------ the exchange, with and without the archive

HOUR = 3600.0


def twin_exchanges():
    """Two identical exchanges on their own clocks: one archives after 10 simulated minutes, one never."""
    worlds = []
    for after in (None, 600.0):
        clock, _market, exchange = build(archive_after_seconds=after, archive_every_seconds=60.0,
                                         engine_step_seconds=60.0)
        other = exchange.add_account("other", api_key="other-key", api_secret="0" * 64)
        worlds.append((clock, exchange, exchange.default_account, other))
    return worlds


def act(world, hour: int, symbols: list[str]) -> list[object]:
    """One simulated hour of trading; the same calls on either twin. Returns what each call answered."""
    clock, exchange, account, other = world
    symbol = symbols[hour % len(symbols)]
    book = exchange.orderbook(None, {"symbol": symbol})
    ask, bid = float(book["asks"][0]["price"]), float(book["bids"][0]["price"])
    answers = [
        attempt(exchange.create_order, account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                                 "price": ask + 50, "timeInForce": "IOC",
                                                 "clientOrderId": 500 + hour % 7}),     # ids reused
        attempt(exchange.create_order, account, {"symbol": symbol, "qty": 0.1, "tradeSide": 2, "tradeType": 1,
                                                 "price": max(1.0, bid - 50), "timeInForce": "IOC"}),
    ]
    resting = attempt(exchange.create_order, other, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                                     "price": max(1.0, bid - 100), "clientOrderId": 9_000 + hour})
    clock.advance(60)
    answers += [resting, attempt(exchange.cancel_order, other, {"orderId": str(resting)})]
    if hour % 5 == 0:
        answers.append(attempt(exchange.futures_create_order, account, {"symbol": "BTCUSD", "qty": 0.01,
                                                                        "tradeSide": 1 + hour % 2, "tradeType": 2}))
    clock.advance(HOUR - 60)
    return answers


def attempt(handler, *args):
    """A handler's answer, or its error code and message."""
    try:
        return handler(*args)
    except SimError as err:
        return [err.code, err.msg]


def snapshot(world, symbols: list[str]) -> str:
    """Every answer the tests compare, as one JSON text (types included: 1 and 1.0 differ)."""
    clock, exchange, account, other = world
    answers: dict[str, object] = {}
    for name, who in (("account", account), ("other", other)):
        answers[f"{name} orders"] = exchange.orders(who)
        answers[f"{name} fills"] = exchange.fills(who)
        answers[f"{name} pending"] = exchange.pending_orders(who, {"pageSize": "100"})
        now = clock.now_ms()
        for window in ({}, {"startTime": str(now - 3 * 86_400_000)},
                       {"startTime": str(now - 30 * 3_600_000), "endTime": str(now - 20 * 3_600_000)},
                       {"startTime": str(now - 600_000)}):
            for size in ("500", "7"):
                params = {"pageSize": size, **window}
                answers[f"{name} order history {params}"] = exchange.order_history(who, params)
                answers[f"{name} trade history {params}"] = exchange.trade_history(who, params)
                answers[f"{name} perp order history {params}"] = exchange.futures_order_history(who, params)
                answers[f"{name} perp trade history {params}"] = exchange.futures_trade_history(who, params)
        since = str(clock.now_ms() - 5 * 86_400_000)
        history = exchange.order_history(who, {"pageSize": "500", "startTime": since})["list"]
        for view in history:
            answers[f"{name} order {view['orderId']}"] = exchange.query_order(who, {"orderId": str(view["orderId"])})
            if view["clientOrderId"] is not None:
                answers[f"{name} client {view['clientOrderId']}"] = exchange.query_order(
                    who, {"clientOrderId": str(view["clientOrderId"])})
        if history:
            middle = history[len(history) // 2]["orderId"]
            answers[f"{name} paged"] = exchange.order_history(who, {"pageSize": "5", "fromId": str(middle),
                                                                    "startTime": since, "direction": "PREV"})
            oldest = str(history[-1]["orderId"])       # an old, finished order: refused the same way
            answers[f"{name} cancel old"] = attempt(exchange.cancel_order, who, {"orderId": oldest})
            answers[f"{name} modify old"] = attempt(exchange.modify_order, who, {"orderId": oldest, "price": "5"})
    exchange.faults.fill_report_lag_seconds = 2 * 86_400.0      # views then scan every finished order
    answers["lagged pending"] = exchange.pending_orders(account, {"pageSize": "100"})
    answers["lagged perp pending"] = exchange.futures_pending_orders(account, {"pageSize": "100"})
    answers["lagged trades"] = exchange.trade_history(account, {"pageSize": "500"})
    exchange.faults.fill_report_lag_seconds = 0.0
    for symbol in symbols:
        answers[f"prints {symbol}"] = exchange.last_trades(None, {"symbol": symbol})
    answers["perp prints"] = exchange.futures_last_trades(None, {"symbol": "BTCUSD"})
    answers["perp stats"] = exchange.futures_symbols(None, {"symbol": "BTCUSD"})
    state = exchange.to_state()
    answers["state"] = {key: state[key] for key in ("orders", "fills", "forgotten_orders", "forgotten_fills")}
    return json.dumps(answers, sort_keys=True)


def test_the_exchange_answers_the_same_with_and_without_the_archive():
    plain, archived = twin_exchanges()
    symbols = [chain_symbol(plain[1], WEEKLY_6MAR26, strike) for strike in (85_000, 90_000, 95_000)]
    assert symbols == [chain_symbol(archived[1], WEEKLY_6MAR26, strike) for strike in (85_000, 90_000, 95_000)]
    for hour in range(32):
        assert act(archived, hour, symbols) == act(plain, hour, symbols)
        if hour in (3, 27, 31):
            assert snapshot(archived, symbols) == snapshot(plain, symbols)
    exchange = archived[1]
    assert exchange._orders.hot_count < len(exchange._orders) and exchange._fills.hot_count < len(exchange._fills)
    assert plain[1]._orders.hot_count == len(plain[1]._orders)

    # A saved state holds every order and fill, archived or not; a loaded one starts them all as objects.
    clock, _, account, other = archived
    state = exchange.to_state()
    loaded = SimExchange.from_state(exchange.config, exchange.market, clock, state)
    assert loaded._orders.hot_count == len(loaded._orders) == len(exchange._orders)
    assert loaded.to_state() == state
    assert snapshot((clock, loaded, loaded.default_account, loaded.accounts[1]), symbols) \
        == snapshot(archived, symbols)

    # Restarts without state forget the archived records too.
    plain[1].forget_everything()
    exchange.forget_everything()
    assert snapshot(archived, symbols) == snapshot(plain, symbols)


def test_the_archive_settings_are_checked():
    assert ExchangeConfig(archive_after_seconds=None).archive_after_seconds is None
    for bad in ({"archive_after_seconds": 0.0}, {"archive_every_seconds": 0.0}, {"archive_after_seconds": -1.0}):
        with pytest.raises(ValueError):
            ExchangeConfig(**bad)
