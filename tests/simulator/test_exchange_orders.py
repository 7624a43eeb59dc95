"""Order lifecycle, matching, validation and order queries of the simulated exchange.

Handlers are called directly, with params as the HTTP server passes them (GET values
as strings, JSON bodies as parsed JSON), against the real market model on a frozen
simulated clock.
"""
from __future__ import annotations


import pytest

from simulator.errors import SimError
from tests.simulator.exchange_builders import WEEKLY_6MAR26, DAILY_3MAR26, build, chain_symbol


def top(exchange, symbol):
    book = exchange.orderbook(None, {"symbol": symbol})
    bids = [(float(level["price"]), float(level["size"])) for level in book["bids"]]
    asks = [(float(level["price"]), float(level["size"])) for level in book["asks"]]
    return bids, asks


def order(exchange, account, order_id):
    return exchange.query_order(account, {"orderId": str(order_id)})


@pytest.fixture()
def env():
    clock, market, exchange = build()
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
    return clock, market, exchange, exchange.default_account, symbol


# ------------------------------------------------------------------ taker matching

def test_taker_buy_fills_at_best_ask_with_int64_id_and_fee(env):
    clock, market, exchange, account, symbol = env
    bids, asks = top(exchange, symbol)
    ask_price, ask_size = asks[0]
    order_id = exchange.create_order(account, {"symbol": symbol, "qty": 0.3, "tradeSide": 1, "tradeType": 1,
                                               "price": ask_price + 5, "clientOrderId": 1010001})
    assert isinstance(order_id, int) and len(str(order_id)) == 19
    view = order(exchange, account, order_id)
    assert view["state"] == 1
    assert view["fillQty"] == 0.3 and view["remainQty"] == 0.0 and view["qty"] == 0.3
    assert view["avgPrice"] == ask_price          # filled at the level price, not the limit
    assert view["price"] == ask_price + 5
    index = market.index_price()
    assert view["fee"] == pytest.approx(min(0.3 * index * 0.0003, 0.3 * ask_price * 0.125))
    assert view["reduceOnly"] == 0 and view["clientOrderId"] == 1010001
    assert isinstance(view["qty"], float) and isinstance(view["orderId"], int)
    assert exchange.position_of(account, symbol) == pytest.approx(0.3)


def test_partial_fill_against_short_depth_rests_remainder_and_consumes_depth(env):
    clock, market, exchange, account, symbol = env
    other = exchange.add_account("other")
    _, asks = top(exchange, symbol)
    price, size = asks[0]
    qty = round(size + 0.1, 2)
    order_id = exchange.create_order(account, {"symbol": symbol, "qty": qty, "tradeSide": 1, "tradeType": 1,
                                               "price": price})
    view = order(exchange, account, order_id)
    assert view["state"] == 2
    assert view["fillQty"] == pytest.approx(size)
    assert view["remainQty"] == pytest.approx(0.1)
    assert view["fillQty"] + view["remainQty"] == pytest.approx(view["qty"])
    bids, asks_after = top(exchange, symbol)
    assert asks_after[0][0] > price                    # the level is gone for everybody
    assert bids[0] == (price, pytest.approx(0.1))      # our resting remainder shows in the book
    second = exchange.create_order(other, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                           "price": price, "timeInForce": "IOC"})
    assert order(exchange, other, second)["fillQty"] == 0.0
    assert order(exchange, other, second)["state"] == 3


def test_ioc_fills_what_crosses_and_cancels_the_rest(env):
    clock, market, exchange, account, symbol = env
    _, asks = top(exchange, symbol)
    price, size = asks[0]
    order_id = exchange.create_order(account, {"symbol": symbol, "qty": round(size + 0.2, 2), "tradeSide": 1,
                                               "tradeType": 1, "price": price, "timeInForce": "IOC"})
    view = order(exchange, account, order_id)
    assert view["state"] == 3 and view["fillQty"] == pytest.approx(size)
    assert exchange.pending_orders(account, {})["total"] == 0


def test_fok_all_or_nothing(env):
    clock, market, exchange, account, symbol = env
    _, asks = top(exchange, symbol)
    price, size = asks[0]
    killed = exchange.create_order(account, {"symbol": symbol, "qty": round(size + 0.01, 2), "tradeSide": 1,
                                             "tradeType": 1, "price": price, "timeInForce": "FOK"})
    assert order(exchange, account, killed)["state"] == 3
    assert order(exchange, account, killed)["fillQty"] == 0.0
    filled = exchange.create_order(account, {"symbol": symbol, "qty": size, "tradeSide": 1, "tradeType": 1,
                                             "price": price, "timeInForce": "FOK"})
    assert order(exchange, account, filled)["state"] == 1


def test_post_only_that_would_cross_is_rejected_and_passive_one_rests(env):
    clock, market, exchange, account, symbol = env
    bids, asks = top(exchange, symbol)
    with pytest.raises(SimError) as err:
        exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 3,
                                        "price": asks[0][0]})
    assert err.value.code == 10001
    resting = exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 3,
                                              "price": bids[0][0]})
    view = order(exchange, account, resting)
    assert view["state"] == 0 and view["tradeType"] == 3 and view["avgPrice"] == 0


def test_orders_never_self_match_but_cross_other_accounts(env):
    clock, market, exchange, account, symbol = env
    other = exchange.add_account("other")
    bids, asks = top(exchange, symbol)
    inside = bids[0][0] + 10
    assert inside < asks[0][0]
    maker = exchange.create_order(account, {"symbol": symbol, "qty": 0.2, "tradeSide": 2, "tradeType": 1,
                                            "price": inside})
    own = exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                          "price": inside, "timeInForce": "IOC"})
    assert order(exchange, account, own)["fillQty"] == 0.0
    taker = exchange.create_order(other, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                          "price": inside, "timeInForce": "IOC"})
    assert order(exchange, other, taker)["fillQty"] == pytest.approx(0.1)
    maker_view = order(exchange, account, maker)
    assert maker_view["state"] == 2 and maker_view["fillQty"] == pytest.approx(0.1)
    fills = exchange.fills(account)
    assert fills[-1]["isTaker"] == 0 and fills[-1]["price"] == inside


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize("changes, code", [
    ({"qty": 0.005}, 10558),
    ({"qty": "0.015"}, 10558),
    ({"qty": 0}, 10558),
    ({"qty": 1000.01}, 10534),
    ({"qty": None}, 10533),
    ({"price": None}, 10530),
    ({"price": -5}, 40035),
    ({"price": "abc"}, 10005),
    ({"symbol": "BTCUSD-6MAR26-12345-C"}, 10574),
    ({"tradeType": 2}, 10004),
    ({"timeInForce": "DAY"}, 12012),
    ({"tradeSide": 3}, 10005),
    ({"clientOrderId": "abc"}, 10005),
    ({"clientOrderId": 1.5}, 10005),
    ({"reduceOnly": 7}, 10005),
])
def test_create_validation_codes(env, changes, code):
    clock, market, exchange, account, symbol = env
    bids, _ = top(exchange, symbol)
    params = {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": bids[-1][0]}
    params.update(changes)
    params = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(SimError) as err:
        exchange.create_order(account, params)
    assert err.value.code == code
    assert exchange.orders(account) == []


def test_price_band_limits(env):
    clock, market, exchange, account, symbol = env
    quote = market.quote(symbol)
    widen = max(1.0, 4 * abs(quote.delta))
    high = quote.mark + 0.05 * quote.underlying_price * widen
    with pytest.raises(SimError) as err:
        exchange.create_order(account, {"symbol": symbol, "qty": 0.01, "tradeSide": 2, "tradeType": 1,
                                        "price": int(high) + 5})
    assert err.value.code == 10531
    deep_itm = chain_symbol(exchange, WEEKLY_6MAR26, 70_000)
    itm_quote = market.quote(deep_itm)
    low = itm_quote.mark - 0.01 * itm_quote.underlying_price * max(1.0, 4 * abs(itm_quote.delta))
    assert low > 10
    with pytest.raises(SimError) as err:
        exchange.create_order(account, {"symbol": deep_itm, "qty": 0.01, "tradeSide": 1, "tradeType": 1,
                                        "price": 5})
    assert err.value.code == 10532


def test_off_tick_price_is_truncated_or_rejected():
    clock, market, exchange = build()
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
    bids, _ = top(exchange, symbol)
    order_id = exchange.create_order(exchange.default_account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1,
                                                                "tradeType": 1, "price": bids[-1][0] - 0.5})
    assert order(exchange, exchange.default_account, order_id)["price"] == bids[-1][0] - 1
    clock, market, strict = build(off_tick="reject")
    with pytest.raises(SimError) as err:
        strict.create_order(strict.default_account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1,
                                                     "tradeType": 1, "price": bids[-1][0] - 0.5})
    assert err.value.code == 40035


def test_duplicate_client_order_id_among_open_orders(env):
    clock, market, exchange, account, symbol = env
    bids, _ = top(exchange, symbol)
    params = {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": bids[-1][0],
              "clientOrderId": 101000000042011001}
    first = exchange.create_order(account, params)
    with pytest.raises(SimError) as err:
        exchange.create_order(account, params)
    assert err.value.code == 10577
    exchange.cancel_order(account, {"orderId": first})
    second = exchange.create_order(account, params)
    assert second > first
    assert exchange.query_order(account, {"clientOrderId": "101000000042011001"})["orderId"] == second


def test_open_order_cap_margin_read_only_and_halt():
    clock, market, exchange = build(max_open_orders=3)
    account = exchange.default_account
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
    bids, _ = top(exchange, symbol)
    for _ in range(3):
        exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                        "price": bids[-1][0]})
    with pytest.raises(SimError) as err:
        exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                        "price": bids[-1][0]})
    assert err.value.code == 10535
    rich = exchange.add_account("rich")
    with pytest.raises(SimError) as err:   # 100 BTC x ~1700 USD premium > 100k balance
        exchange.create_order(rich, {"symbol": symbol, "qty": 100, "tradeSide": 1, "tradeType": 1,
                                     "price": bids[-1][0]})
    assert err.value.code == 10529
    viewer = exchange.add_account("viewer", read_only=True)
    with pytest.raises(SimError) as err:
        exchange.create_order(viewer, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                       "price": bids[-1][0]})
    assert err.value.code == 7001
    daily = chain_symbol(exchange, DAILY_3MAR26, 90_000)
    exchange.cancel_open_orders(account, {"index": "BTCUSD"})   # keep the 20 h jump cheap
    clock.set_time(DAILY_3MAR26 / 1000 - 14 * 60)
    with pytest.raises(SimError) as err:
        exchange.create_order(rich, {"symbol": daily, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": 10})
    assert err.value.code == 10620


# ------------------------------------------------------------------ cancel and queries

def test_cancel_and_query_codes(env):
    clock, market, exchange, account, symbol = env
    bids, asks = top(exchange, symbol)
    resting = exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                              "price": bids[-1][0]})
    assert exchange.cancel_order(account, {"orderId": resting}) == "success"
    assert order(exchange, account, resting)["state"] == 3
    with pytest.raises(SimError) as err:
        exchange.cancel_order(account, {"orderId": resting})
    assert err.value.code == 11101
    filled = exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                             "price": asks[0][0]})
    with pytest.raises(SimError) as err:
        exchange.cancel_order(account, {"orderId": filled})
    assert err.value.code == 11102
    with pytest.raises(SimError) as err:
        exchange.query_order(account, {"orderId": "1990000000000000001"})
    assert err.value.code == 10584
    with pytest.raises(SimError) as err:
        exchange.query_order(account, {})
    assert err.value.code == 10575
    other = exchange.add_account("other")
    with pytest.raises(SimError) as err:   # another account's order does not exist for us
        exchange.query_order(other, {"orderId": str(resting)})
    assert err.value.code == 10584


def test_cancel_latency_goes_through_4_and_5_and_a_late_fill_counts():
    clock, market, exchange = build(cancel_latency_seconds=2.0)
    account = exchange.default_account
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
    bids, _ = top(exchange, symbol)
    order_id = exchange.create_order(account, {"symbol": symbol, "qty": 1.0, "tradeSide": 1, "tradeType": 1,
                                               "price": bids[0][0]})
    exchange.cancel_order(account, {"orderId": order_id})
    assert order(exchange, account, order_id)["state"] == 4
    clock.advance(1.0)
    assert order(exchange, account, order_id)["state"] == 5
    assert exchange.force_fill(order_id, 0.4) == pytest.approx(0.4)   # a fill lands while CANCELING
    assert order(exchange, account, order_id)["state"] == 5
    clock.advance(1.0)
    view = order(exchange, account, order_id)
    assert view["state"] == 3 and view["fillQty"] == pytest.approx(0.4)
    assert exchange.position_of(account, symbol) == pytest.approx(0.4)


def test_hold_canceling_fault_then_filled_instead_of_cancelled(env):
    clock, market, exchange, account, symbol = env
    bids, _ = top(exchange, symbol)
    order_id = exchange.create_order(account, {"symbol": symbol, "qty": 0.5, "tradeSide": 1, "tradeType": 1,
                                               "price": bids[0][0]})
    exchange.faults.hold_canceling_seconds = 20.0
    exchange.cancel_order(account, {"orderId": order_id})
    clock.advance(10)
    assert order(exchange, account, order_id)["state"] == 5
    assert exchange.pending_orders(account, {})["list"][0]["state"] == 5
    exchange.force_fill(order_id, 0.5)
    assert order(exchange, account, order_id)["state"] == 1
    clock.advance(20)
    assert order(exchange, account, order_id)["state"] == 1


def test_fill_on_next_cancel_is_one_shot(env):
    clock, market, exchange, account, symbol = env
    bids, _ = top(exchange, symbol)
    first = exchange.create_order(account, {"symbol": symbol, "qty": 1.0, "tradeSide": 1, "tradeType": 1,
                                            "price": bids[0][0]})
    second = exchange.create_order(account, {"symbol": symbol, "qty": 1.0, "tradeSide": 1, "tradeType": 1,
                                             "price": bids[0][0]})
    exchange.faults.fill_on_next_cancel_qty = 0.3
    exchange.cancel_order(account, {"orderId": first})
    view = order(exchange, account, first)
    assert view["state"] == 3 and view["fillQty"] == pytest.approx(0.3) and view["avgPrice"] == bids[0][0]
    exchange.cancel_order(account, {"orderId": second})
    assert order(exchange, account, second)["fillQty"] == 0.0
    assert exchange.faults.fill_on_next_cancel_qty == 0.0


def test_fill_report_lag_hides_fills_from_views_for_a_while(env):
    clock, market, exchange, account, symbol = env
    exchange.faults.fill_report_lag_seconds = 3.0
    _, asks = top(exchange, symbol)
    order_id = exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                               "price": asks[0][0]})
    early = order(exchange, account, order_id)
    assert early["state"] == 0 and early["fillQty"] == 0.0 and early["avgPrice"] == 0
    assert exchange.trade_history(account, {"pageSize": "20"})["list"] == []
    assert exchange.pending_orders(account, {})["list"][0]["state"] == 0   # still looks open
    assert exchange.position_of(account, symbol) == pytest.approx(0.1)   # positions are real
    clock.advance(3.0)
    late = order(exchange, account, order_id)
    assert late["state"] == 1 and late["fillQty"] == pytest.approx(0.1)
    assert len(exchange.trade_history(account, {"pageSize": "20"})["list"]) == 1
    assert exchange.pending_orders(account, {})["total"] == 0


# ------------------------------------------------------------------ passive fills

def test_passive_fill_inside_the_spread_is_maker_and_deterministic():
    def run():
        clock, market, exchange = build(passive_fill_prob_per_min_at_touch=0.9)
        account = exchange.default_account
        symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
        bids, asks = top(exchange, symbol)
        exchange.create_order(account, {"symbol": symbol, "qty": 2.0, "tradeSide": 1, "tradeType": 1,
                                        "price": bids[0][0] + 1})
        exchange.create_order(account, {"symbol": symbol, "qty": 2.0, "tradeSide": 2, "tradeType": 1,
                                        "price": asks[0][0] - 1})
        for _ in range(30):
            clock.advance(10)
            exchange.sync()
        return [(f["time"], f["qty"], f["tradeSide"], f["isTaker"]) for f in exchange.fills(account)]

    first, second = run(), run()
    assert first == second
    assert first, "a resting order inside the spread must fill within 5 minutes at 90 %/min"
    assert all(is_taker == 0 for *_, is_taker in first)


def test_resting_order_far_from_touch_never_fills_by_chance():
    clock, market, exchange = build(passive_fill_prob_per_min_at_touch=1.0)
    account = exchange.default_account
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
    bids, _ = top(exchange, symbol)
    order_id = exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                               "price": bids[-1][0] - 300})
    market.set_scripted_path([(clock.now_ms(), 90_000.0), (clock.now_ms() + 3_600_000, 90_000.0)])
    clock.advance(120)
    assert order(exchange, account, order_id)["fillQty"] == 0.0


def test_book_trading_through_a_resting_bid_fills_it_at_its_price():
    clock, market, exchange = build()
    account = exchange.default_account
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
    bids, _ = top(exchange, symbol)
    price = bids[0][0]
    order_id = exchange.create_order(account, {"symbol": symbol, "qty": 0.2, "tradeSide": 1, "tradeType": 1,
                                               "price": price})
    now = clock.now_ms()
    market.set_scripted_path([(now, 90_000.0), (now + 60_000, 85_000.0), (now + 3_600_000, 85_000.0)])
    clock.advance(90)
    view = order(exchange, account, order_id)
    assert view["state"] == 1 and view["avgPrice"] == price
    fill = exchange.fills(account)[-1]
    assert fill["isTaker"] == 0 and fill["fee"] == pytest.approx(
        min(0.2 * fill["indexPrice"] * 0.0003, 0.2 * price * 0.125))


# ------------------------------------------------------------------ reduce-only

def test_reduce_only_rejected_without_opposite_position_and_never_flips(env):
    clock, market, exchange, account, symbol = env
    bids, asks = top(exchange, symbol)
    with pytest.raises(SimError) as err:
        exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 2, "tradeType": 1,
                                        "price": bids[0][0], "reduceOnly": 1})
    assert err.value.code == 10536
    exchange.create_order(account, {"symbol": symbol, "qty": 0.3, "tradeSide": 1, "tradeType": 1,
                                    "price": asks[0][0]})
    close = exchange.create_order(account, {"symbol": symbol, "qty": 1.0, "tradeSide": 2, "tradeType": 1,
                                            "price": bids[-1][0], "reduceOnly": 1})
    view = order(exchange, account, close)
    assert view["fillQty"] == pytest.approx(0.3) and view["state"] == 3 and view["reduceOnly"] == 1
    assert exchange.position_of(account, symbol) == 0.0
    assert exchange.positions(account, {}) == []


def test_reduce_only_resting_order_is_invalid_when_the_position_went_away(env):
    clock, market, exchange, account, symbol = env
    bids, asks = top(exchange, symbol)
    exchange.set_position(account, symbol, 0.5, asks[0][0])
    close = exchange.create_order(account, {"symbol": symbol, "qty": 0.5, "tradeSide": 2, "tradeType": 1,
                                            "price": asks[0][0] + 50, "reduceOnly": 1})
    exchange.set_position(account, symbol, 0.0, 0.0)     # closed elsewhere
    assert exchange.force_fill(close, 0.5) == 0.0
    assert order(exchange, account, close)["state"] == 6
    assert exchange.position_of(account, symbol) == 0.0


# ------------------------------------------------------------------ batch, modify, bulk cancel

def test_batch_create_and_batch_cancel_item_shapes(env):
    clock, market, exchange, account, symbol = env
    bids, _ = top(exchange, symbol)
    good = {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": bids[-1][0],
            "timeInForce": "GTC", "clientOrderId": 77}
    bad = dict(good, qty=0.001, clientOrderId=78)
    items = exchange.batch_create_orders(account, {"orders": [good, bad]})
    assert items[0]["code"] == 0 and isinstance(items[0]["data"], int)
    assert items[1] == {"code": 10558, "msg": items[1]["msg"], "i18nArgs": None, "data": None}
    results = exchange.batch_cancel_orders(account, {"orderIdList": [items[0]["data"], 1990000000000000001]})
    assert results[0]["scode"] == 0 and results[0]["ordId"] == items[0]["data"] and results[0]["clOrdId"] == 77
    assert results[1]["scode"] == 1
    assert set(results[0]) == {"clOrdId", "ordId", "ts", "scode", "smsg"}


def test_modify_price_and_qty(env):
    clock, market, exchange, account, symbol = env
    bids, asks = top(exchange, symbol)
    order_id = exchange.create_order(account, {"symbol": symbol, "qty": 0.5, "tradeSide": 1, "tradeType": 1,
                                               "price": bids[-1][0]})
    assert exchange.modify_order(account, {"symbol": symbol, "orderId": order_id, "price": bids[0][0]}) == order_id
    assert order(exchange, account, order_id)["price"] == bids[0][0]
    exchange.modify_order(account, {"symbol": symbol, "orderId": order_id, "price": asks[0][0], "qty": 0.2})
    view = order(exchange, account, order_id)
    assert view["state"] == 1 and view["qty"] == 0.2


def test_cancel_open_orders_and_by_option(env):
    clock, market, exchange, account, symbol = env
    other_symbol = chain_symbol(exchange, WEEKLY_6MAR26, 95_000)
    for sym in (symbol, symbol, other_symbol):
        bids, _ = top(exchange, sym)
        exchange.create_order(account, {"symbol": sym, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                        "price": bids[-1][0]})
    assert exchange.cancel_orders_by_option(account, {"optionName": symbol}) is None
    remaining = exchange.pending_orders(account, {})["list"]
    assert [o["symbol"] for o in remaining] == [other_symbol]
    exchange.cancel_open_orders(account, {"index": "BTCUSD"})
    assert exchange.pending_orders(account, {})["total"] == 0


# ------------------------------------------------------------------ pending list and histories

def test_pending_orders_paging_and_fields(env):
    clock, market, exchange, account, symbol = env
    bids, _ = top(exchange, symbol)
    for n in range(25):
        exchange.create_order(account, {"symbol": symbol, "qty": 0.01, "tradeSide": 1, "tradeType": 1,
                                        "price": bids[-1][0] - n, "clientOrderId": 500 + n})
    first = exchange.pending_orders(account, {})
    assert len(first["list"]) == 20 and first["pageTotal"] == 2 and first["total"] == 25
    second = exchange.pending_orders(account, {"page": "2", "pageSize": "20"})
    assert len(second["list"]) == 5
    every = exchange.pending_orders(account, {"pageSize": "500"})
    assert len(every["list"]) == 25
    assert {o["orderId"] for o in first["list"]} | {o["orderId"] for o in second["list"]} == \
        {o["orderId"] for o in every["list"]}
    item = every["list"][0]
    for key in ("id", "orderId", "clientOrderId", "symbol", "displayName", "qty", "remainQty", "fillQty", "price",
                "avgPrice", "initMargin", "tradeSide", "tradeType", "createTime", "updateTime", "reduceOnly",
                "indexPrice", "state"):
        assert key in item
    assert item["state"] == 0 and item["initMargin"] > 0


def test_pending_list_lag():
    clock, market, exchange = build(pending_list_lag_seconds=5.0)
    account = exchange.default_account
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
    bids, _ = top(exchange, symbol)
    exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                    "price": bids[-1][0]})
    assert exchange.pending_orders(account, {})["total"] == 0
    clock.advance(5)
    assert exchange.pending_orders(account, {})["total"] == 1


def test_order_and_trade_history_cursor_paging(env):
    clock, market, exchange, account, symbol = env
    bids, asks = top(exchange, symbol)
    ids = []
    for _ in range(5):
        ids.append(exchange.create_order(account, {"symbol": symbol, "qty": 0.01, "tradeSide": 1, "tradeType": 1,
                                                   "price": asks[0][0] + 100}))
        clock.advance(1)
    page = exchange.order_history(account, {"pageSize": "2"})
    assert [o["orderId"] for o in page["list"]] == [ids[4], ids[3]]
    assert page["hasNext"] is True and page["hasPre"] is False
    older = exchange.order_history(account, {"pageSize": "2", "fromId": str(ids[3]), "direction": "NEXT"})
    assert [o["orderId"] for o in older["list"]] == [ids[2], ids[1]]
    assert older["hasNext"] is True and older["hasPre"] is True
    newer = exchange.order_history(account, {"pageSize": "2", "fromId": str(ids[1]), "direction": "PREV"})
    assert [o["orderId"] for o in newer["list"]] == [ids[3], ids[2]]
    assert newer["hasPre"] is True and newer["hasNext"] is True
    trades = exchange.trade_history(account, {"pageSize": "10"})
    assert len(trades["list"]) == 5 and trades["hasNext"] is False
    fill = trades["list"][0]
    assert fill["isTaker"] == 1 and fill["tradeType"] == 1 and fill["fee"] > 0 and fill["orderId"] == ids[4]
    window = exchange.trade_history(account, {"pageSize": "10", "startTime": str(clock.now_ms() - 2500),
                                              "endTime": str(clock.now_ms())})
    assert len(window["list"]) == 2
    with pytest.raises(SimError) as err:
        exchange.order_history(account, {"pageSize": "501"})
    assert err.value.code == 10005
