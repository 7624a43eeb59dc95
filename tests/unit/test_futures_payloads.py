"""Perpetual-futures payloads -> typed values (coincall_payloads, API.md 14).

The readers are strict: a required field that is missing, a field present in a form that
cannot be read, or a code the adapter does not know raises an error naming the field
(``PayloadError``; ``StaleDataError`` for market data), never a silent default.
"""
from __future__ import annotations

import pytest

import order_ledger
from coincall_payloads import (
    PERP_FINAL_STATES,
    PERP_STATE_STATUS,
    FundingRate,
    PerpOrderState,
    PerpOrderType,
    funding_payment_from_api,
    parse_funding_payment_page,
    parse_funding_rates,
    parse_perp_cancel_acks,
    parse_perp_fill_page,
    parse_perp_instruments,
    parse_perp_leverage,
    parse_perp_order_page,
    parse_perp_pending_page,
    parse_perp_positions,
    parse_perp_public_trades,
    parse_perp_specs,
    perp_fill_from_api,
    perp_order_book_from_api,
    perp_order_from_api,
    perp_position_from_api,
    perp_spec_from_api,
    perp_symbol,
    perp_ticker_from_api,
)
from contracts import Side
from errors import PayloadError, StaleDataError

BIG_ID = 1673571411341475840          # 19 digits: above 2**53, a float would change it
BIG_COID = 3690324480192708607

BTC_CONFIG = {
    "symbol": "BTCUSD", "base": "BTC", "settle": "USD", "tickSize": 0.1, "tickDecimal": 1, "priceDecimal": 1,
    "minQty": 0.001, "qtyDecimal": 3, "limitMaxQty": 1000, "marketMaxQty": 120, "maxOrderNumber": 200,
    "positionQty": 100000000, "triggerLimit": 20, "makerFee": 0.0002, "takerFee": 0.0006,
}

ORDER = {
    "clientOrderId": BIG_COID, "orderId": BIG_ID, "symbol": "BTCUSD", "displayName": "BTC-PERP", "qty": 1.0,
    "remainQty": 0.4, "fillQty": 0.6, "price": 19000.5, "avgPrice": 18999.9, "tradeSide": 2, "tradeType": 1,
    "createTime": 1753459200000, "updateTime": 1753459201000, "reduceOnly": 1, "leverage": 3, "fee": 0.0123,
    "state": 2, "timeInForce": "IOC",
}

POSITION = {
    "id": 1584467417583730700, "positionId": 1584467417583730701, "updateTime": 1753459200000, "userId": 1,
    "symbol": "BTCUSD", "displayName": "BTC-PERP", "baseToken": "BTC", "quoteToken": "USD", "qty": 0.009,
    "tradeSide": 1, "avgPrice": 19642.5, "markPrice": 18900.38, "value": 176.7825, "initMargin": 35.3565,
    "maintMargin": 1.767825, "upnl": -6.679, "roi": -0.0378, "elp": None, "leverage": 5, "delta": 0.009,
}

FILL = {
    "id": 77, "contractId": None, "symbol": "ETHUSD", "displayName": "ETH-PERP", "tradeSide": 1, "tradeType": 1,
    "price": "3001.5", "qty": "0.25", "markPrice": None, "indexPrice": 3000.1, "orderId": BIG_ID,
    "tradeId": 1937785628783481000, "fee": 0.45, "time": 1753459200123, "leverage": 5, "isTaker": 1,
}


# ---------------------------------------------------------------------------- symbols, specs


@pytest.mark.parametrize("underlying, symbol", [("BTC", "BTCUSD"), ("eth", "ETHUSD"), (" SOL ", "SOLUSD")])
def test_perp_symbol_of_an_underlying(underlying, symbol):
    assert perp_symbol(underlying) == symbol


@pytest.mark.parametrize("bad", ["", "ETHUSD", "BTC-USD", "B/TC", None, 1])
def test_perp_symbol_refuses_what_is_not_a_coin(bad):
    with pytest.raises(ValueError):
        perp_symbol(bad)


def test_spec_reads_the_futures_config_entry():
    spec = perp_spec_from_api(BTC_CONFIG, symbol="BTCUSD")
    assert (spec.symbol, spec.base, spec.tick_size, spec.min_qty) == ("BTCUSD", "BTC", 0.1, 0.001)
    assert (spec.qty_decimals, spec.qty_step) == (3, 0.001)
    assert (spec.max_limit_qty, spec.max_market_qty) == (1000.0, 120.0)
    assert (spec.maker_fee, spec.taker_fee) == (0.0002, 0.0006)
    assert spec.max_leverage is None            # the config documents no such field: never guessed
    assert spec.max_open_orders == 200


def test_spec_reads_numbers_sent_as_strings_and_a_max_leverage_when_given():
    entry = {**BTC_CONFIG, "tickSize": "0.01", "minQty": "0.01", "qtyDecimal": "2", "maxLeverage": "125",
             "symbol": "ETHUSD", "base": "ETH"}
    spec = perp_spec_from_api(entry, symbol="ETHUSD")
    assert (spec.tick_size, spec.min_qty, spec.qty_step, spec.max_leverage) == (0.01, 0.01, 0.01, 125.0)


@pytest.mark.parametrize("field, value", [
    ("tickSize", None), ("tickSize", 0), ("tickSize", "abc"), ("minQty", -1), ("qtyDecimal", 2.5),
    ("qtyDecimal", None), ("makerFee", "n/a"),
])
def test_spec_with_a_missing_or_malformed_field_names_it(field, value):
    entry = {**BTC_CONFIG, field: value}
    with pytest.raises(PayloadError) as info:
        perp_spec_from_api(entry, symbol="BTCUSD")
    assert info.value.field == field
    assert field in str(info.value)


def test_specs_are_keyed_by_underlying_and_the_key_must_match_the_entry():
    config = {"optionConfig": {}, "futuresConfig": {
        "BTCUSD": BTC_CONFIG, "ETHUSD": {**BTC_CONFIG, "symbol": "ETHUSD", "base": "ETH", "tickSize": 0.01}}}
    specs = parse_perp_specs(config)
    assert sorted(specs) == ["BTC", "ETH"]
    assert specs["ETH"].symbol == "ETHUSD" and specs["ETH"].tick_size == 0.01
    with pytest.raises(PayloadError) as info:
        parse_perp_specs({"futuresConfig": {"ETHUSD": BTC_CONFIG}})
    assert info.value.field == "symbol"
    with pytest.raises(PayloadError) as info:
        parse_perp_specs({"optionConfig": {}})
    assert info.value.field == "futuresConfig"


def test_spec_without_base_derives_it_from_the_symbol():
    entry = {key: value for key, value in BTC_CONFIG.items() if key not in ("base", "symbol")}
    assert perp_spec_from_api(entry, symbol="XRPUSD").base == "XRP"


# ---------------------------------------------------------------------------- market data


@pytest.mark.parametrize("data", [
    [{"symbol": "ETHUSD", "price": 3000, "markPrice": 3001, "indexPrice": 3002, "baseToken": "ETH"},
     {"symbol": "BTCUSD", "price": 25614.7, "markPrice": 25661.25861712, "indexPrice": 25754.025,
      "baseToken": "BTC"}],
    {"symbol": "BTCUSD", "price": "25614.7", "markPrice": "25661.25861712", "indexPrice": "25754.025"},
])
def test_ticker_accepts_a_list_or_one_object(data):
    funding = FundingRate(symbol="BTCUSD", rate=-0.005, next_funding_ms=1753459200000, as_of_ms=None)
    ticker = perp_ticker_from_api(data, symbol="BTCUSD", as_of=12.0, funding=funding)
    assert (ticker.symbol, ticker.base, ticker.last) == ("BTCUSD", "BTC", 25614.7)
    assert (ticker.mark, ticker.index) == (25661.25861712, 25754.025)
    assert (ticker.funding_rate, ticker.next_funding_ms, ticker.as_of) == (-0.005, 1753459200000, 12.0)


@pytest.mark.parametrize("entry, field", [
    ({"symbol": "BTCUSD", "indexPrice": 100.0}, "markPrice"),
    ({"symbol": "BTCUSD", "markPrice": 0, "indexPrice": 100.0}, "markPrice"),
    ({"symbol": "BTCUSD", "markPrice": 100.0, "indexPrice": "-1"}, "indexPrice"),
    ({"symbol": "BTCUSD", "markPrice": "abc", "indexPrice": 100.0}, "markPrice"),
    ({"symbol": "ETHUSD", "markPrice": 100.0, "indexPrice": 100.0}, "symbol"),
])
def test_ticker_without_a_usable_mark_or_index_is_stale_and_names_the_field(entry, field):
    with pytest.raises(StaleDataError) as info:
        perp_ticker_from_api(entry, symbol="BTCUSD", as_of=0.0)
    assert field in str(info.value)
    assert isinstance(info.value.__cause__, PayloadError) and info.value.__cause__.field == field


def test_ticker_without_funding_leaves_it_none_and_refuses_another_symbols_rate():
    entry = {"symbol": "BTCUSD", "markPrice": 100.0, "indexPrice": 101.0}
    ticker = perp_ticker_from_api(entry, symbol="BTCUSD", as_of=0.0)
    assert (ticker.last, ticker.funding_rate, ticker.next_funding_ms) == (None, None, None)
    other = FundingRate(symbol="ETHUSD", rate=0.0001, next_funding_ms=None, as_of_ms=None)
    with pytest.raises(StaleDataError):
        perp_ticker_from_api(entry, symbol="BTCUSD", as_of=0.0, funding=other)


def test_funding_rates_read_string_rates_and_key_by_symbol():
    data = [{"symbol": "BTCUSD", "rate": "-0.00500000", "contractId": "1", "nextFundingTime": 1753459200000,
             "ts": 1687250525704},
            {"symbol": "ETHUSD", "rate": "0.0001", "contractId": "2", "nextFundingTime": 1753459200000}]
    rates = parse_funding_rates(data)
    assert rates["BTCUSD"] == FundingRate("BTCUSD", -0.005, 1753459200000, 1687250525704)
    assert rates["ETHUSD"].rate == 0.0001 and rates["ETHUSD"].as_of_ms is None
    with pytest.raises(StaleDataError, match="rate"):
        parse_funding_rates([{"symbol": "BTCUSD", "rate": None}])


def test_instruments_feed_reads_strings_and_skips_what_is_not_perpetual():
    data = [
        {"ticker_id": "BTC-USD", "base_currency": "BTC", "quote_currency": "USD", "last_price": "42782.00000000",
         "bid": "42777.9", "ask": "42779.6", "product_type": "Perpetual", "open_interest": "9.35800000",
         "index_price": "42751.48738636", "funding_rate": "0.00016736", "next_funding_rate": "0.0001",
         "next_funding_rate_timestamp": 1703606400000},
        {"ticker_id": "BTC-27DEC24", "base_currency": "BTC", "product_type": "Futures"},
        {"ticker_id": "ETH-USD", "base_currency": "ETH", "quote_currency": "USD", "bid": "", "ask": "0",
         "product_type": "Perpetual"},
    ]
    rows = parse_perp_instruments(data)
    assert [row.symbol for row in rows] == ["BTCUSD", "ETHUSD"]
    btc = rows[0]
    assert (btc.ticker_id, btc.last, btc.bid, btc.ask) == ("BTC-USD", 42782.0, 42777.9, 42779.6)
    assert (btc.index, btc.funding_rate, btc.next_funding_ms) == (42751.48738636, 0.00016736, 1703606400000)
    assert (rows[1].bid, rows[1].ask, rows[1].last) == (None, None, None)
    with pytest.raises(StaleDataError, match="base_currency"):
        parse_perp_instruments([{"ticker_id": "X-USD", "product_type": "Perpetual"}])


def test_perp_order_book_is_sorted_best_first_and_checks_the_symbol():
    data = {"symbol": "BTCUSD", "bids": [{"size": "0.5", "price": "100.0"}, {"size": "0.1", "price": "101.0"}],
            "asks": [{"size": "0.2", "price": "103"}, {"size": "0.3", "price": "102"}]}
    book = perp_order_book_from_api(data, symbol="BTCUSD", as_of=5.0)
    assert book.bids == ((101.0, 0.1), (100.0, 0.5)) and book.asks == ((102.0, 0.3), (103.0, 0.2))
    with pytest.raises(StaleDataError):
        perp_order_book_from_api({**data, "symbol": "ETHUSD"}, symbol="BTCUSD", as_of=5.0)


def test_public_trades_read_side_and_strings():
    trades = parse_perp_public_trades([{"symbol": "BTCUSD", "price": "18898", "qty": "0.001", "time": 1700000000000,
                                        "tradeSide": 2}], symbol="BTCUSD")
    assert [(t.price, t.qty, t.side, t.time_ms) for t in trades] == [(18898.0, 0.001, Side.SELL, 1700000000000)]
    with pytest.raises(StaleDataError, match="tradeSide"):
        parse_perp_public_trades([{"price": "1", "qty": "1", "time": 1, "tradeSide": 0}], symbol="BTCUSD")


# ---------------------------------------------------------------------------- orders


def test_order_reads_every_field_and_keeps_19_digit_ids_exact():
    order = perp_order_from_api(ORDER)
    assert order.order_id == BIG_ID and order.client_order_id == BIG_COID
    assert (order.symbol, order.side, order.order_type) == ("BTCUSD", Side.SELL, PerpOrderType.LIMIT)
    assert (order.qty, order.filled_qty, order.remaining_qty) == (1.0, 0.6, 0.4)
    assert (order.price, order.avg_price, order.fee, order.leverage) == (19000.5, 18999.9, 0.0123, 3.0)
    assert (order.state, order.status, order.is_final) == (PerpOrderState.PARTIALLY_FILLED, "PARTIAL", False)
    assert (order.reduce_only, order.time_in_force) == (True, "IOC")
    assert (order.create_time_ms, order.update_time_ms) == (1753459200000, 1753459201000)


def test_ids_sent_as_digit_strings_survive_and_float_ids_are_refused():
    order = perp_order_from_api({**ORDER, "orderId": str(BIG_ID), "clientOrderId": str(BIG_COID)})
    assert (order.order_id, order.client_order_id) == (BIG_ID, BIG_COID)
    with pytest.raises(PayloadError) as info:
        perp_order_from_api({**ORDER, "orderId": float(BIG_ID)})
    assert info.value.field == "orderId"


def test_market_order_before_any_fill_has_no_price_and_no_average():
    order = perp_order_from_api({**ORDER, "tradeType": 2, "price": 0, "avgPrice": 0, "fillQty": 0, "state": 0,
                                 "clientOrderId": 0, "reduceOnly": 0})
    assert (order.order_type, order.price, order.avg_price) == (PerpOrderType.MARKET, None, None)
    assert (order.client_order_id, order.reduce_only, order.status) == (None, False, "LIVE")


def test_open_order_row_without_state_fee_or_update_time():
    row = {key: value for key, value in ORDER.items() if key not in ("fee", "updateTime", "state", "timeInForce")}
    order = perp_order_from_api({**row, "id": 5, "initMargin": 3.2, "expression": None, "triggerPrice": None})
    assert (order.state, order.status, order.fee, order.update_time_ms) == (None, None, None, None)
    assert order.is_final is False


@pytest.mark.parametrize("field, value", [
    ("state", 10), ("state", "x"), ("tradeType", 14), ("tradeType", None), ("tradeSide", 3), ("tradeSide", None),
    ("timeInForce", "GTX"), ("reduceOnly", 2), ("qty", 0), ("qty", "lots"), ("symbol", ""), ("orderId", None),
    ("createTime", "yesterday"), ("avgPrice", -1),
])
def test_unknown_or_malformed_order_fields_are_named(field, value):
    with pytest.raises(PayloadError) as info:
        perp_order_from_api({**ORDER, field: value})
    assert info.value.field == field


def test_every_perp_state_maps_to_a_ledger_status_the_way_the_ledger_maps_option_states():
    assert set(PERP_STATE_STATUS) == set(PerpOrderState)
    for state, status in PERP_STATE_STATUS.items():
        ledger_status = order_ledger.OrderStatus(status)       # a real OrderStatus value
        if int(state) in order_ledger._STATE_STATUS:
            assert order_ledger._STATE_STATUS[int(state)] is ledger_status, state
        assert (state in PERP_FINAL_STATES) == ledger_status.is_final, state
    assert PERP_STATE_STATUS[PerpOrderState.WAITING_EFFECT] == "LIVE"
    assert PERP_STATE_STATUS[PerpOrderState.PRE_CANCEL] == PERP_STATE_STATUS[PerpOrderState.CANCELING] \
        == "CANCEL_REQUESTED"


def test_pending_page_reads_page_counts_and_every_order():
    page = parse_perp_pending_page({"list": [ORDER, {**ORDER, "orderId": BIG_ID + 1}], "pageTotal": 3, "total": 41})
    assert [o.order_id for o in page.rows] == [BIG_ID, BIG_ID + 1]
    assert (page.page_total, page.total) == (3, 41)
    empty = parse_perp_pending_page({"list": [], "pageTotal": 0, "total": 0})
    assert empty.rows == () and empty.page_total == 0
    with pytest.raises(PayloadError):
        parse_perp_pending_page({"list": [ORDER, "junk"], "pageTotal": 1})


def test_order_history_page_cursor_is_the_last_order_id():
    page = parse_perp_order_page({"list": [ORDER, {**ORDER, "orderId": BIG_ID - 5}], "hasNext": True,
                                  "hasPre": False})
    assert page.has_next is True and page.next_cursor == BIG_ID - 5
    last = parse_perp_order_page({"list": [], "hasNext": False, "hasPre": True})
    assert (last.rows, last.has_next, last.next_cursor) == ((), False, None)


# ---------------------------------------------------------------------------- fills, cancels


def test_fill_reads_strings_ids_and_the_taker_flag():
    fill = perp_fill_from_api(FILL)
    assert (fill.trade_id, fill.order_id, fill.cursor) == (1937785628783481000, BIG_ID, 77)
    assert (fill.symbol, fill.side, fill.order_type) == ("ETHUSD", Side.BUY, PerpOrderType.LIMIT)
    assert (fill.price, fill.qty, fill.fee, fill.time_ms) == (3001.5, 0.25, 0.45, 1753459200123)
    assert (fill.is_taker, fill.mark_price, fill.index_price) == (True, None, 3000.1)


def test_fill_without_row_id_pages_by_trade_id_and_missing_fields_are_named():
    assert perp_fill_from_api({**FILL, "id": None}).cursor == FILL["tradeId"]
    page = parse_perp_fill_page({"list": [FILL, {**FILL, "id": 70, "tradeId": 5}], "hasNext": 1})
    assert page.has_next is True and page.next_cursor == 70
    for field in ("orderId", "tradeId", "price", "time"):
        with pytest.raises(PayloadError) as info:
            perp_fill_from_api({**FILL, field: None})
        assert info.value.field == field


def test_batch_cancel_acks():
    acks = parse_perp_cancel_acks([
        {"clOrdId": BIG_COID, "ordId": BIG_ID, "ts": 1, "scode": 0, "smsg": ""},
        {"clOrdId": None, "ordId": BIG_ID + 1, "ts": 1, "scode": 1, "smsg": "order does not exist"},
    ])
    assert [(a.order_id, a.client_order_id, a.accepted, a.message) for a in acks] == [
        (BIG_ID, BIG_COID, True, ""), (BIG_ID + 1, None, False, "order does not exist")]
    assert parse_perp_cancel_acks(None) == []
    with pytest.raises(PayloadError) as info:
        parse_perp_cancel_acks([{"ordId": 1}])
    assert info.value.field == "scode"


# ---------------------------------------------------------------------------- positions, funding


def test_long_position_reads_every_figure():
    position = perp_position_from_api(POSITION)
    assert (position.position_id, position.symbol, position.side) == (1584467417583730701, "BTCUSD", Side.BUY)
    assert (position.qty, position.signed_qty, position.avg_price, position.mark_price) == (
        0.009, 0.009, 19642.5, 18900.38)
    assert (position.unrealized_pnl, position.initial_margin, position.maintenance_margin) == (
        -6.679, 35.3565, 1.767825)
    assert (position.leverage, position.liquidation_price, position.update_time_ms) == (5.0, None, 1753459200000)


@pytest.mark.parametrize("delta", [0.5, -0.5, None])
def test_short_is_negative_from_trade_side_whatever_delta_says(delta):
    position = perp_position_from_api({**POSITION, "tradeSide": 2, "qty": "0.5", "delta": delta})
    assert (position.side, position.qty, position.signed_qty) == (Side.SELL, 0.5, -0.5)


@pytest.mark.parametrize("elp, expected", [(None, None), (0, None), (-86087698.84, None), ("12000.5", 12000.5)])
def test_liquidation_price_is_none_when_null_or_not_positive(elp, expected):
    assert perp_position_from_api({**POSITION, "elp": elp}).liquidation_price == expected


def test_position_id_falls_back_to_id_and_malformed_positions_are_named():
    row = {key: value for key, value in POSITION.items() if key != "positionId"}
    assert perp_position_from_api(row).position_id == 1584467417583730700
    for field, value in (("tradeSide", 0), ("qty", -0.1), ("qty", None), ("avgPrice", None), ("upnl", "?"),
                         ("symbol", None)):
        with pytest.raises(PayloadError) as info:
            perp_position_from_api({**POSITION, field: value})
        assert info.value.field == field
    flat = perp_position_from_api({**POSITION, "qty": 0, "avgPrice": None, "markPrice": None, "upnl": None})
    assert (flat.qty, flat.signed_qty, flat.avg_price, flat.mark_price) == (0.0, 0.0, None, None)
    assert parse_perp_positions(None) == []
    assert [p.symbol for p in parse_perp_positions([POSITION, {**POSITION, "symbol": "ETHUSD"}])] == [
        "BTCUSD", "ETHUSD"]


def test_leverage_answer():
    assert parse_perp_leverage({"userId": 1, "symbol": "BTCUSD", "currentLeverage": 5}, symbol="BTCUSD") == 5.0
    with pytest.raises(PayloadError):
        parse_perp_leverage({"symbol": "ETHUSD", "currentLeverage": 5}, symbol="BTCUSD")
    with pytest.raises(PayloadError) as info:
        parse_perp_leverage({"symbol": "BTCUSD"}, symbol="BTCUSD")
    assert info.value.field == "currentLeverage"


def test_funding_payment_keeps_the_exchange_sign():
    paid = funding_payment_from_api({"id": 379372, "symbol": "TONUSD", "displayName": "TONUSDT Perp",
                                     "tradeSide": 1, "qty": 2.0, "fundFee": -0.00114441, "fundRate": 0.0001,
                                     "ctime": 1746576000018})
    assert (paid.record_id, paid.symbol, paid.side, paid.qty) == (379372, "TONUSD", Side.BUY, 2.0)
    assert (paid.rate, paid.fee, paid.time_ms) == (0.0001, -0.00114441, 1746576000018)
    received = funding_payment_from_api({"symbol": "BTCUSD", "tradeSide": 2, "qty": "1", "fundFee": "1.0817",
                                         "fundRate": "0.00001145", "ctime": "1746604800015"})
    assert (received.record_id, received.side, received.fee) == (None, Side.SELL, 1.0817)
    for field in ("fundFee", "fundRate", "ctime", "tradeSide"):
        with pytest.raises(PayloadError) as info:
            funding_payment_from_api({"symbol": "BTCUSD", "tradeSide": 1, "qty": 1, "fundFee": 1, "fundRate": 1,
                                      "ctime": 1, field: None})
        assert info.value.field == field


def test_funding_page_shapes():
    record = {"id": 1, "symbol": "BTCUSD", "tradeSide": 1, "qty": 1, "fundFee": -1, "fundRate": 0.0001, "ctime": 5}
    page = parse_funding_payment_page({"list": [record], "pageTotal": 2, "total": 60})
    assert (len(page.rows), page.page_total, page.total) == (1, 2, 60)
    bare = parse_funding_payment_page([record, {**record, "id": 2}])
    assert (len(bare.rows), bare.page_total) == (2, 1)
    assert parse_funding_payment_page({"list": None}).rows == ()
