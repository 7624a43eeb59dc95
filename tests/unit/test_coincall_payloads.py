"""The adapter's parse functions (coincall_payloads.py): Coincall payloads -> typed values.

What they promise (API.md 0, 7.1: numbers may be strings): string numbers and ids are read
exactly; an absent or unreadable optional field is None, never a made-up value; a field a
value cannot exist without is a typed error naming the field, never a ``KeyError``.
"""
from __future__ import annotations

from datetime import date

import pytest

from coincall_payloads import (
    DeliveryPrice,
    history_filters,
    next_page_filters,
    option_row_from_api,
    parse_accept_legs,
    parse_account_summary,
    parse_api_key,
    parse_block_trades,
    parse_delivery_prices,
    parse_estimated_expiration_price,
    parse_exercise_records,
    parse_fill_page,
    parse_order,
    parse_order_page,
    parse_orders,
    parse_position,
    parse_positions,
    parse_quotes,
    parse_rfq_created,
    positions_missing_greeks,
    read_account_figures,
    read_chain_lines,
    read_listing,
    read_position_rows,
    rfq_leg,
)
from contracts import Side
from errors import PayloadError, TraderError

BIG_ID = 1983131927527428097          # beyond float precision: must stay exact
EXPIRY_MS = 1774598400000             # 2026-03-27 08:00 UTC
CALL = "BTCUSD-27MAR26-100000-C"


# ---- orders ----------------------------------------------------------------------------------

def test_an_order_answer_with_string_numbers_and_ids_is_read_exactly():
    order = parse_order({"orderId": str(BIG_ID), "clientOrderId": "100000000101000001", "symbol": CALL,
                         "tradeSide": "2", "qty": "0.5", "price": "1250", "fillQty": "0.25", "avgPrice": "1249.5",
                         "fee": "0.4", "state": "2", "reduceOnly": 1, "createTime": "1767225600123",
                         "updateTime": 1767225601000})
    assert order is not None
    assert order.order_id == BIG_ID and order.client_order_id == 100000000101000001
    assert order.side is Side.SELL and order.symbol == CALL
    assert (order.qty, order.price, order.fill_qty, order.avg_price, order.fee) == (0.5, 1250.0, 0.25, 1249.5, 0.4)
    assert order.state == 2 and order.reduce_only == 1
    assert order.create_time_ms == 1767225600123.0 and order.update_time_ms == 1767225601000.0


def test_missing_or_unreadable_order_fields_are_none_never_a_made_up_value():
    order = parse_order({"orderId": 1.9e18, "tradeSide": 3, "fillQty": "n/a", "avgPrice": None, "state": True})
    assert order is not None
    assert order.order_id is None            # an id is never read through a float
    assert order.side is None                # neither BUY nor SELL
    assert order.fill_qty is None and order.avg_price is None and order.state is None
    assert order.client_order_id is None and order.symbol is None and order.fee is None


def test_an_answer_that_is_not_an_object_gives_no_order_view():
    assert parse_order(None) is None
    assert parse_order([{"orderId": 1}]) is None
    assert parse_orders([{"orderId": 1}, "junk", None, {"orderId": "2"}]) == [
        parse_order({"orderId": 1}), parse_order({"orderId": 2})]


# ---- history pages and their filters ---------------------------------------------------------

def test_an_order_history_page_carries_its_rows_and_the_cursor_of_the_last_one():
    page = parse_order_page({"list": [{"orderId": "7"}, "junk", {"orderId": 5}], "hasNext": True})
    assert [row.order_id for row in page.rows] == [7, 5]
    assert page.has_next is True and page.next_cursor == 5


def test_a_bare_list_or_an_empty_answer_has_no_next_page():
    assert parse_order_page([{"orderId": 1}]).has_next is False
    empty = parse_order_page({"hasNext": True})
    assert empty.rows == () and empty.next_cursor is None
    assert parse_order_page(None).rows == ()


def test_a_page_whose_list_is_not_a_list_is_a_payload_error_naming_the_field():
    with pytest.raises(PayloadError) as info:
        parse_order_page({"list": 5})
    assert info.value.field == "list" and isinstance(info.value, TraderError)


def test_a_fill_page_pages_by_id_or_by_trade_id_when_a_row_has_no_id():
    by_id = parse_fill_page({"list": [{"id": "11", "tradeId": "99", "tradeSide": 1, "tradeType": "14",
                                       "qty": "0.1", "price": "95", "time": "1767225600000",
                                       "orderId": "3"}], "hasNext": True})
    fill = by_id.rows[0]
    assert by_id.next_cursor == 11 and fill.side is Side.BUY and fill.trade_type == 14
    assert (fill.qty, fill.price, fill.time_ms, fill.order_id) == (0.1, 95.0, 1767225600000.0, 3)
    assert parse_fill_page({"list": [{"tradeId": "99"}]}).next_cursor == 99
    assert parse_fill_page({"list": [{"id": None, "tradeId": "99"}]}).next_cursor is None


def test_history_filters_drop_what_is_not_given_and_page_backwards_from_a_cursor():
    filters = history_filters(page_size=500, symbol=CALL, start_ms=1, end_ms=2)
    assert list(filters) == ["pageSize", "symbol", "startTime", "endTime"]
    assert history_filters(start_ms=5) == {"startTime": 5}
    assert next_page_filters({"pageSize": 500}, 42) == {"pageSize": 500, "fromId": 42, "direction": "NEXT"}


# ---- settlement --------------------------------------------------------------------------------

def test_exercise_records_read_string_numbers_and_keep_an_absent_side_absent():
    [record] = parse_exercise_records({"list": [{"symbol": CALL, "qty": "0.5", "exercisePrice": "101000",
                                                 "fees": "1.5", "settlementCashFlow": "499.25"}]})
    assert record.symbol == CALL and record.qty == 0.5 and record.side is None
    assert (record.exercise_price, record.fees, record.settlement_cash_flow) == (101000.0, 1.5, 499.25)


def test_an_exercise_record_with_an_unreadable_side_is_a_payload_error_not_any_side():
    with pytest.raises(PayloadError) as info:
        parse_exercise_records([{"symbol": CALL, "qty": 1, "tradeSide": "BUY"}])
    assert info.value.field == "tradeSide"
    assert parse_exercise_records([{"tradeSide": "2"}])[0].side == 2


def test_delivery_prices_match_an_expiry_by_epoch_ms_or_by_its_utc_day():
    rows = parse_delivery_prices({"list": [
        {"date": EXPIRY_MS, "delivery_price": "101000"},
        {"date": str(EXPIRY_MS + 1), "deliveryPrice": 99000},
        {"date": "2026-03-28", "delivery_price": "98000"},
        {"date": "garbage", "delivery_price": "97000"},
        {"date": EXPIRY_MS, "delivery_price": "0"},          # no usable price: skipped
        {"date": True, "delivery_price": "96000"},
        "junk",
    ]})
    assert [row.price for row in rows] == [101000.0, 99000.0, 98000.0, 97000.0, 96000.0]
    assert rows[0].covers(EXPIRY_MS) and not rows[1].covers(EXPIRY_MS)
    assert rows[2] == DeliveryPrice(price=98000.0, date_ms=None, day=date(2026, 3, 28))
    assert rows[2].covers(EXPIRY_MS + 86_400_000) and not rows[2].covers(EXPIRY_MS)
    assert not rows[3].covers(EXPIRY_MS) and not rows[4].covers(EXPIRY_MS)


def test_the_estimated_expiration_price_is_the_first_rows_or_none():
    assert parse_estimated_expiration_price([{"estimatedExpirationPrice": "100250.5"}]) == 100250.5
    assert parse_estimated_expiration_price([]) is None
    assert parse_estimated_expiration_price(["junk"]) is None
    assert parse_estimated_expiration_price({"estimatedExpirationPrice": 1}) is None


# ---- the account -------------------------------------------------------------------------------

def position(**overrides):
    payload = {"positionId": str(BIG_ID), "symbol": CALL, "tradeSide": 1, "qty": "0.5", "avgPrice": "1000",
               "markPrice": "1100", "delta": "0.2", "gamma": 0.001, "theta": "-5", "vega": "2"}
    payload.update(overrides)
    return payload


def test_a_position_with_string_numbers_is_read_and_its_pnl_computed_from_the_mark():
    parsed = parse_position(position(), timestamp=10.0)
    assert parsed.position_id == BIG_ID and parsed.side == "long" and parsed.signed_qty == 0.5
    assert parsed.unrealized_pnl == pytest.approx(50.0) and parsed.roi == pytest.approx(0.1)
    assert parsed.delta == pytest.approx(0.2) and parsed.timestamp == 10.0


@pytest.mark.parametrize("field", ["symbol", "tradeSide", "qty", "avgPrice", "markPrice"])
def test_a_position_without_a_required_field_is_a_payload_error_naming_it(field):
    payload = position()
    del payload[field]
    with pytest.raises(PayloadError) as info:
        parse_position(payload, timestamp=0.0)
    assert info.value.field == field and field in str(info.value)


def test_a_positions_answer_that_is_not_a_list_is_a_payload_error():
    with pytest.raises(PayloadError, match="not a list"):
        parse_positions({"list": []}, timestamp=0.0)
    assert parse_positions([], timestamp=0.0) == ()


def test_positions_missing_greeks_are_named_per_symbol():
    assert positions_missing_greeks([position(gamma=None, vega=None), position(symbol="X"), "junk"]) == [
        (CALL, ["gamma", "vega"])]
    assert positions_missing_greeks(None) == []


def test_a_position_without_a_greek_counts_it_as_zero_and_names_it_missing():
    parsed = parse_position(position(delta=None, vega=None), timestamp=0.0)
    assert parsed.delta == 0.0 and parsed.vega == 0.0 and parsed.missing_greeks == ("delta", "vega")
    assert parse_position(position(), timestamp=0.0).missing_greeks == ()
    # A real zero is a value, not a missing greek.
    assert parse_position(position(delta="0"), timestamp=0.0).missing_greeks == ()


def test_a_position_delta_larger_than_the_position_is_read_as_missing():
    # 0.5 long: a per-position delta beyond +-0.5 is impossible (45 for 0.45, a unit slip).
    parsed = parse_position(position(delta="22.5"), timestamp=0.0)
    assert parsed.missing_greeks == ("delta",) and parsed.delta == 0.0
    assert parse_position(position(delta="-0.5"), timestamp=0.0).missing_greeks == ()
    per_contract = parse_position(position(delta="1.5"), timestamp=0.0, position_greeks="per_contract")
    assert per_contract.missing_greeks == ("delta",)
    assert parse_position(position(delta="0.9"), timestamp=0.0,
                          position_greeks="per_contract").delta == pytest.approx(0.45)


@pytest.mark.parametrize("field, value", [("delta", "45"), ("delta", "-1.2"), ("gamma", "-0.0001"),
                                          ("vega", "-3")])
def test_a_chain_greek_no_option_can_have_is_read_as_missing(field, value):
    side = {"symbol": CALL, "index": "BTCUSD", "endTime": 1_774_598_400_000, "strike": 100000, "type": 1,
            "markPrice": "3300", "markIv": "0.5", "bid": "3250", "ask": "3350", "underlyingPrice": "100000",
            "delta": "0.45", "gamma": "0.00002", "vega": "40", "theta": "-60"}
    assert getattr(option_row_from_api(side, as_of=0.0), field) is not None
    side[field] = value
    row = option_row_from_api(side, as_of=0.0)
    assert getattr(row, field) is None
    # The other greeks and the prices are still read.
    assert row.theta == -60.0 and row.mark == 3300.0


def test_the_account_summary_reads_the_older_names_when_the_new_ones_are_absent():
    summary = parse_account_summary({"equityAmount": "100", "availableBalance": "80", "imAmount": "10",
                                     "mmAmount": "5", "unrealizedAmount": "-1"})
    assert (summary.equity, summary.available_margin, summary.initial_margin, summary.maintenance_margin,
            summary.unrealized_pnl) == (100.0, 80.0, 10.0, 5.0, -1.0)


def test_an_account_summary_without_equity_is_a_payload_error_naming_it():
    with pytest.raises(PayloadError) as info:
        parse_account_summary({"availableMargin": "1", "imAmount": "1", "mmAmount": "1", "unrealizedPnL": "0"})
    assert info.value.field == "equity"
    with pytest.raises(PayloadError, match="not an object"):
        parse_account_summary(["equity"])


# ---- what people are shown: lenient --------------------------------------------------------------

def test_the_key_query_tells_read_only_and_the_account_id_as_text():
    assert parse_api_key({"readOnly": 1, "userId": 1695796692000001}) == parse_api_key(
        {"readOnly": "1", "userId": "1695796692000001"})
    info = parse_api_key({"readOnly": 0, "userId": 1695796692000001})
    assert info.read_only is False and info.user_id == "1695796692000001"
    assert parse_api_key({"userId": ""}).user_id is None
    assert parse_api_key(None).user_id is None and parse_api_key(None).read_only is False


def test_display_readers_show_what_is_given_and_none_for_the_rest():
    figures = read_account_figures({"equity": "10000.5", "imRatio": "0.15"})
    assert figures.equity == 10000.5 and figures.im_ratio == 0.15 and figures.available_margin is None
    [row] = read_position_rows([{"symbol": CALL, "tradeSide": "1", "qty": "0.5"}])
    assert row.side == 1 and row.qty == 0.5 and row.mark_price is None
    with pytest.raises(PayloadError):
        read_account_figures("junk")


def test_the_listing_counts_instruments_without_an_expiry_and_active_by_default():
    listed = read_listing([{"expirationTimestamp": str(EXPIRY_MS)}, {"isActive": False}])
    assert [(i.expiry_ms, i.is_active) for i in listed] == [(EXPIRY_MS, True), (None, False)]
    with pytest.raises(PayloadError) as info:
        read_listing([{"expirationTimestamp": "soon"}])
    assert info.value.field == "expirationTimestamp"


def test_chain_lines_keep_a_missing_side_missing():
    [line] = read_chain_lines([{"strike": "100000", "callOption": {"bid": "10", "markPrice": "12.5"},
                                "putOption": None}])
    assert line.strike == 100000.0 and line.put is None
    assert line.call is not None and (line.call.bid, line.call.ask, line.call.mark) == (10.0, None, 12.5)


# ---- RFQ and block trades --------------------------------------------------------------------

def test_rfq_create_leg_and_answer():
    assert rfq_leg(CALL, Side.SELL, "0.5") == {"instrumentName": CALL, "side": "SELL", "qty": "0.5"}
    created = parse_rfq_created({"requestId": 2004417712093184000, "expiryTime": "1767229200123"})
    assert created.request_id == "2004417712093184000" and created.expiry_ms == 1767229200123.0
    for unusable in ({"requestId": 1.5}, {"requestId": "  "}, {"requestId": True}, {}, None):
        assert parse_rfq_created(unusable).request_id is None


def test_quotes_that_cannot_be_used_are_dropped():
    good = {"quoteId": "9", "state": "open", "legs": [{"instrumentName": CALL, "side": "sell", "price": "2105",
                                                        "quantity": "0.5"}]}
    quotes = parse_quotes([good, {"quoteId": "8", "legs": []}, "junk", {**good, "quoteId": 1.5}])
    assert [q.quote_id for q in quotes] == ["9"]
    assert quotes[0].state == "OPEN" and quotes[0].legs[0].maker_side is Side.SELL and quotes[0].cost == 1052.5


def test_block_trades_and_accept_answers_give_taker_legs_with_strings_parsed():
    leg = {"instrumentName": CALL, "side": "BUY", "price": "2105", "quantity": "0.5", "fee": "13.2",
           "orderId": str(BIG_ID), "createTime": 1767225610000}
    [trade] = parse_block_trades({"list": [{"blockTradeId": 77, "requestId": 5, "legs": [leg, "junk"]}, "junk"]})
    assert trade.block_trade_id == "77" and trade.request_id == "5" and trade.quote_id == ""
    [block_leg] = trade.legs
    assert block_leg.side is Side.BUY and block_leg.order_id == BIG_ID and block_leg.created_at == 1767225610.0
    assert (block_leg.qty, block_leg.price, block_leg.fee) == (0.5, 2105.0, 13.2)
    assert parse_accept_legs({"legs": [leg]}) == [block_leg]
    assert parse_accept_legs({"legs": "none"}) == [] and parse_accept_legs(None) == []
    assert parse_block_trades([{"legs": [{"instrumentName": CALL}]}])[0].legs[0].side is None
