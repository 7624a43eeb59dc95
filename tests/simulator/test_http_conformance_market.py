"""Over-the-wire conformance of the public, user and account routes (API.md §1, §2.2, §4, §6, §7, §13 6-9, 17-18).

Every call goes through real HTTP with the ``signed_request`` helper, and the JSON is
parsed by the stdlib, so a type asserted here is the type a client really receives:
an int stays an int, a number sent as a string stays a string. Field names and JSON
types are checked against API.md, field by field; extra fields are allowed, but fields
that API.md says do not exist (``impliedVolatility``, a book ``mark``) must be absent.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone

import pytest

from simulator.routes import ROUTES
from tests.simulator.wire_types import boolean, conforms, int64_id, integer, number, numeric_text, ok, text

INSTRUMENTS = "/open/option/getInstruments/BTC"
CHAIN = "/open/option/get/v1/BTCUSD"
DETAIL = "/open/option/detail/v1/{}"
BOOK = "/open/option/order/orderbook/v1/{}"
LAST_TRADES = "/open/option/trade/lasttrade/v1/{}"
FUTURES = "/open/futures/market/symbol/v1"
ESTIMATED = "/open/option/getEstimatedExpirationPrice/v1"
DELIVERY = "/open/option/get-delivery-prices/v1"
CONFIG = "/open/public/config/v1"
QUERY_API = "/open/auth/user/query-api"
USER_INFO = "/open/user/info/v1"
SUMMARY = "/open/account/summary/v1"
POSITIONS = "/open/option/position/get/v1"
CREATE = "/open/option/order/create/v1"

DOUBLE_MAX = 1.7976931348623157e308
HOUR_MS = 3_600_000
SYMBOL = re.compile(r"^BTCUSD-([1-9]|[12]\d|3[01])(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)\d\d-\d+-[CP]$")


# --- schemas from API.md ----------------------------------------------------------------------
INSTRUMENT_FIELDS = {
    "baseCurrency": text, "symbolName": text, "strike": number, "expirationTimestamp": integer,
    "isActive": boolean, "minQty": number, "tickSize": number, "startTimestamp": integer,
}
CHAIN_SIDE_FIELDS = {
    "optionId": int64_id, "symbol": text, "baseToken": text, "displayName": text, "endTime": integer,
    "strike": number, "lastPrice": number, "markPrice": number, "volume": number, "openInterest": number,
    "bid": number, "bidSize": number, "bidIv": number, "ask": number, "askSize": number, "askIv": number,
    "markIv": number, "type": integer, "underlyingPrice": number, "breakeven": number, "changeRate": number,
    "changePrice": number, "userPosition": number, "delta": number, "gamma": number, "vega": number,
    "theta": number, "rho": number,
}
DETAIL_FIELDS = {
    "optionId": int64_id, "symbol": text, "index": text, "displayName": text, "type": integer,
    "endTime": integer, "remainTime": integer, "strike": number, "markPrice": number, "lastPrice": number,
    "premium": number, "changeRate": number, "changePrice": number, "price24hHigh": number,
    "price24hLow": number, "price24hOpen": number, "iv": number, "indexPrice": number,
    "underlyingPrice": number, "delta": number, "gamma": number, "vega": number, "theta": number,
    "rho": number, "volume": number, "volumeUsd": number, "volume24h": number, "volumeUsd24h": number,
    "openInterest": number, "multiplier": number, "breakeven": number, "bid": number, "ask": number,
}
FUTURES_FIELDS = {
    "contractId": integer, "symbol": text, "symbolName": text, "displayName": text, "baseToken": text,
    "quoteToken": text, "price": number, "markPrice": number, "indexPrice": number, "changeRate": number,
    "changePrice": number, "price24hHigh": number, "price24hLow": number, "price24hOpen": number,
    "volume24h": number, "volumeUsd24h": number, "ts": integer, "hasOption": boolean, "sortIdx": integer,
}
SUMMARY_STRING_FIELDS = ("equity", "availableMargin", "imAmount", "mmAmount", "imRatio", "mmRatio",
                         "marginBalance", "unrealizedPnL")
SUMMARY_NUMBER_FIELDS = ("totalBtcValue", "totalDollarValue", "totalUsdtValue")
COIN_FIELDS = ("accountId", "coin", "equityAmount", "availableBalance", "cashBalanceAmount", "canWithdrawAmount",
               "marginMode", "marginBalance", "unrealizedAmount", "imAmount", "mmAmount", "btcValue",
               "dollarValue", "usdtValue", "decimal")
POSITION_FIELDS = {
    "id": int64_id, "positionId": int64_id, "orderId": integer, "userId": int64_id, "updateTime": integer,
    "symbol": text, "displayName": text, "qty": number, "tradeSide": integer, "avgPrice": number,
    "markPrice": number, "value": number, "initMargin": number, "maintMargin": number, "upnl": number,
    "roi": number, "rspl": number, "lockQty": number, "indexPrice": number, "delta": number, "gamma": number,
    "vega": number, "theta": number, "rho": number, "baseToken": text, "quoteToken": text,
    "upnlByMarkPrice": number, "roiByMarkPrice": number, "lastPrice": number,
}
OPTION_CONFIG_FIELDS = {
    "symbol": text, "base": text, "settle": text, "multiplier": number, "tickSize": number,
    "tickDecimal": integer, "priceDecimal": integer, "qtyDecimal": integer, "greeksDecimal": integer,
    "makerFee": number, "takerFee": number, "maxOrderNumber": integer, "limitMaxQty": number,
    "marketMaxQty": number, "maxPositionQty": number,
}


# --- helpers ------------------------------------------------------------------------------------
def second_expiry(call) -> int:
    """The second-nearest expiry: the nearest may be inside its pre-expiry halt."""
    return sorted({i["expirationTimestamp"] for i in ok(call("GET", INSTRUMENTS))})[1]


def chain_rows(call, expiry: int) -> list[dict]:
    return ok(call("GET", CHAIN, {"endTime": expiry}))


def atm_call(call) -> str:
    """The call nearest the index on the second expiry (liquid, both book sides)."""
    index = ok(call("GET", FUTURES, {"symbol": "BTCUSD"}))["indexPrice"]
    rows = chain_rows(call, second_expiry(call))
    return min(rows, key=lambda r: abs(r["strike"] - index))["callOption"]["symbol"]


# --- every route of the table answers over HTTP ------------------------------------------------------
def test_every_route_answers_http_200_with_a_coincall_envelope(sim_factory, signed_request_for):
    """Each route of ``routes.ROUTES`` is reachable and wraps its answer in the §3.1 envelope."""
    venue = sim_factory(rate_limits_enabled=False)
    call = signed_request_for(venue)
    desk = venue.exchange.add_account("desk", rfq_maker_access=True)   # rfqList needs maker access
    symbol = atm_call(call)
    for route in ROUTES:
        path = route.path.format(baseCurrency="BTC", index="BTCUSD", symbol=symbol, optionName=symbol)
        params = {"requestId": "1", "quoteId": "1"} if route.body == "form" else {}
        response = call(route.method, path, params, body="form" if route.body == "form" else "json",
                        key=desk.api_key, secret=desk.api_secret, raw=True)
        assert response.status_code == 200, (route.path, response.status_code)
        envelope = response.json()
        assert set(envelope) == {"code", "msg", "i18nArgs", "data"}, route.path
        assert integer(envelope["code"]) and envelope["code"] >= 0, (route.path, envelope)
    assert {record.handler for record in venue.requests} >= {route.handler for route in ROUTES}


# --- time, config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/time", "/open/public/time/v1"])
def test_server_time_is_an_int_ms_on_both_paths(sim, signed_request, sim_clock, path):
    for signed in (False, True):
        data = ok(signed_request("GET", path, signed=signed))
        assert set(data) == {"serverTime"}
        assert integer(data["serverTime"]) and data["serverTime"] == sim_clock.now_ms()


def test_public_config_option_config_btcusd(sim, signed_request):
    data = ok(signed_request("GET", CONFIG, signed=False))
    option = data["optionConfig"]["BTCUSD"]
    conforms(option, OPTION_CONFIG_FIELDS, "optionConfig.BTCUSD")
    assert option["symbol"] == "BTCUSD" and option["base"] == "BTC" and option["settle"] == "USD"
    assert option["multiplier"] == 0.01 and option["qtyDecimal"] == 2
    assert option["tickSize"] == 1.0 and option["maxOrderNumber"] == 200
    assert option["limitMaxQty"] == 1000 and option["makerFee"] == option["takerFee"] == 0.0003
    assert isinstance(data["futuresConfig"], dict)


# --- market data ----------------------------------------------------------------------------------
def test_instruments_field_types_symbols_and_0800_expiries(sim, signed_request, sim_clock):
    instruments = ok(signed_request("GET", INSTRUMENTS, signed=False))
    assert instruments == ok(signed_request("GET", INSTRUMENTS))   # signed or not, same answer
    assert len(instruments) > 100
    for item in instruments:
        conforms(item, INSTRUMENT_FIELDS, item.get("symbolName", "instrument"))
        assert item["baseCurrency"] == "BTC"
        assert SYMBOL.match(item["symbolName"]), item["symbolName"]
        assert item["expirationTimestamp"] % 86_400_000 == 8 * HOUR_MS       # 08:00 UTC
        assert item["expirationTimestamp"] > sim_clock.now_ms()
        assert item["startTimestamp"] <= sim_clock.now_ms()
        assert item["minQty"] == 0.01 and item["tickSize"] == 1.0
        assert float(item["symbolName"].split("-")[2]) == item["strike"]
    assert all(i["isActive"] for i in instruments)   # 06:00: nothing is inside a 15-minute halt yet
    listed = sorted({i["expirationTimestamp"] for i in instruments})
    expected = [(3, 2), (3, 3), (3, 4),                   # dailies: today, +1, +2 (Monday 2 March)
                (3, 6), (3, 13), (3, 20),                 # weeklies (Fridays)
                (3, 27), (4, 24), (5, 29),                # monthlies (last Fridays)
                (6, 26), (9, 25), (12, 25)]               # quarterlies (March is also the 27th)
    assert listed == [int(datetime(2026, m, d, 8, tzinfo=timezone.utc).timestamp() * 1000) for m, d in expected]
    assert any(re.match(r"^BTCUSD-\dMAR26-", i["symbolName"]) for i in instruments)   # day not zero-padded
    assert ok(signed_request("GET", "/open/option/getInstruments/SOL", signed=False)) == []   # not listed


def test_chain_rows_carry_every_documented_field_with_its_type(sim, signed_request):
    expiry = second_expiry(signed_request)
    rows = chain_rows(signed_request, expiry)
    assert rows and [r["strike"] for r in rows] == sorted(r["strike"] for r in rows)
    for row in rows:
        assert number(row["strike"])
        for side_name, type_code, suffix in (("callOption", 1, "-C"), ("putOption", 2, "-P")):
            side = row[side_name]
            conforms(side, CHAIN_SIDE_FIELDS, f"{row['strike']}.{side_name}")
            assert side.get("index", side.get("underlying")) == "BTCUSD"
            assert side["type"] == type_code and side["symbol"].endswith(suffix)
            assert side["endTime"] == expiry and side["strike"] == row["strike"]
            iv = side["lastPriceIv"]
            assert isinstance(iv, float) and (iv == DOUBLE_MAX or math.isfinite(iv))
            if side["bid"] == 0:
                assert side["bidSize"] == 0
            if side["ask"] == 0:
                assert side["askSize"] == 0
            assert 0 < side["markIv"] < 5
    # Nothing traded yet: lastPriceIv is the Double.MAX sentinel (API.md §6.2).
    assert all(r["callOption"]["lastPriceIv"] == DOUBLE_MAX for r in rows)
    # Without endTime the chain spans every expiry (the parameter is optional).
    every = ok(signed_request("GET", CHAIN, signed=False))
    assert len(every) > len(rows)
    # Deep OTM options have no bid: 0 price and 0 size, never null (API.md §6.2, §11 #21).
    no_bid = [side for r in every for side in (r["callOption"], r["putOption"]) if side["bid"] == 0]
    assert no_bid and all(number(s["bid"]) and s["bidSize"] == 0 for s in no_bid)


def test_option_detail_has_iv_index_underlying_and_undocumented_bid_ask(sim, signed_request, sim_clock):
    symbol = atm_call(signed_request)
    detail = ok(signed_request("GET", DETAIL.format(symbol), signed=False))
    conforms(detail, DETAIL_FIELDS, "detail")
    assert "impliedVolatility" not in detail                     # API.md §11 #9
    assert detail["symbol"] == symbol and detail["index"] == "BTCUSD" and detail["type"] == 1
    assert detail["remainTime"] == detail["endTime"] - sim_clock.now_ms()
    assert detail["indexPrice"] == ok(signed_request("GET", FUTURES, {"symbol": "BTCUSD"}))["indexPrice"]
    assert detail["underlyingPrice"] > 0 and 0 < detail["iv"] < 5
    book = ok(signed_request("GET", BOOK.format(symbol)))
    assert detail["bid"] == float(book["bids"][0]["price"]) and detail["ask"] == float(book["asks"][0]["price"])
    side = next(r["callOption"] for r in chain_rows(signed_request, detail["endTime"])
                if r["callOption"]["symbol"] == symbol)
    assert side["markPrice"] == detail["markPrice"] and side["markIv"] == detail["iv"]
    assert side["optionId"] == detail["optionId"]
    assert signed_request("GET", DETAIL.format("BTCUSD-2MAR26-1-C"))["code"] == 10574


def test_order_book_strings_sorted_without_mark_and_empty_side(sim, signed_request):
    symbol = atm_call(signed_request)
    book = ok(signed_request("GET", BOOK.format(symbol), signed=False))
    assert set(book) >= {"optionName", "displayName", "strike", "bids", "asks"}
    assert "mark" not in book and "markPrice" not in book         # API.md §11 #8
    assert book["optionName"] == symbol and number(book["strike"])
    assert book["bids"] and book["asks"]
    for level in book["bids"] + book["asks"]:
        assert set(level) == {"price", "size"}
        assert numeric_text(level["price"]) and numeric_text(level["size"]), level
    bids = [float(level["price"]) for level in book["bids"]]
    asks = [float(level["price"]) for level in book["asks"]]
    assert bids == sorted(bids, reverse=True) and len(set(bids)) == len(bids)
    assert asks == sorted(asks) and len(set(asks)) == len(asks)
    assert bids[0] < asks[0]

    sim.market.set_empty_side(symbol, "ask")                     # fault switch: empty one side
    empty = ok(signed_request("GET", BOOK.format(symbol)))
    assert empty["asks"] == [] and empty["bids"]
    detail = ok(signed_request("GET", DETAIL.format(symbol)))
    assert detail["ask"] == 0
    side = next(r["callOption"] for r in chain_rows(signed_request, detail["endTime"])
                if r["callOption"]["symbol"] == symbol)
    assert side["ask"] == 0 and side["askSize"] == 0 and side["bid"] > 0


def test_futures_symbol_is_a_list_without_param_and_an_object_with_it(sim, signed_request, sim_clock):
    listed = ok(signed_request("GET", FUTURES, signed=False))
    assert isinstance(listed, list) and listed
    for item in listed:
        conforms(item, FUTURES_FIELDS, "futures")
    single = ok(signed_request("GET", FUTURES, {"symbol": "BTCUSD"}, signed=False))
    conforms(single, FUTURES_FIELDS, "futures?symbol")
    assert single["symbol"] == "BTCUSD" and single["indexPrice"] > 0
    assert single in listed

    def index() -> float:
        return ok(signed_request("GET", FUTURES, {"symbol": "BTCUSD"}, signed=False))["indexPrice"]

    assert index() == single["indexPrice"]          # the clock is frozen: so is the index
    sim_clock.advance(60)
    moved = index()
    assert moved != single["indexPrice"]            # it moves with simulated time only
    sim.market.freeze_index(True)                   # fault switch (API.md §13 #9)
    sim_clock.advance(60)
    assert index() == moved


def test_last_trades_estimated_and_delivery_prices(sim, signed_request, sim_clock):
    symbol = atm_call(signed_request)
    assert ok(signed_request("GET", LAST_TRADES.format(symbol), signed=False)) == []
    book = ok(signed_request("GET", BOOK.format(symbol)))
    ask, size = book["asks"][0]["price"], book["asks"][0]["size"]
    qty = min(0.1, float(size))
    ok(signed_request("POST", CREATE, {"symbol": symbol, "qty": qty, "tradeSide": 1, "tradeType": 1,
                                       "price": float(ask), "timeInForce": "IOC"}))
    trades = ok(signed_request("GET", LAST_TRADES.format(symbol)))
    assert len(trades) == 1
    conforms(trades[0], {"symbol": text, "displayName": text, "price": numeric_text, "qty": numeric_text,
                         "time": integer, "tradeSide": integer}, "lasttrade")
    assert float(trades[0]["price"]) == float(ask) and float(trades[0]["qty"]) == qty
    assert trades[0]["time"] == sim_clock.now_ms() and trades[0]["tradeSide"] == 1

    estimated = ok(signed_request("GET", ESTIMATED, {"index": "BTCUSD"}, signed=False))
    assert estimated
    for item in estimated:
        conforms(item, {"estimatedExpirationPrice": numeric_text, "index": text, "endTime": integer}, "estimated")
    delivery = ok(signed_request("GET", DELIVERY, {"symbol": "BTCUSD"}, signed=False))
    assert delivery == {"list": [], "records_total": 0}          # nothing has expired yet


# --- user and account -----------------------------------------------------------------------------
def test_query_api_and_user_info(sim, signed_request):
    data = ok(signed_request("GET", QUERY_API))
    conforms(data, {"userId": int64_id, "apiKey": text, "readOnly": integer, "parentUid": integer}, "query-api")
    assert "isMaster" in data and data["readOnly"] == 0 and data["apiKey"] == sim.api_key
    viewer = sim.exchange.add_account("viewer", read_only=True)
    as_viewer = ok(signed_request("GET", QUERY_API, key=viewer.api_key, secret=viewer.api_secret))
    assert as_viewer["readOnly"] == 1 and as_viewer["userId"] == viewer.user_id
    info = ok(signed_request("GET", USER_INFO))
    conforms(info, {"name": text, "email": text, "userId": int64_id}, "user-info")
    assert info["userId"] == data["userId"]
    assert signed_request("GET", USER_INFO, signed=False)["code"] == 4003


def test_account_summary_strings_numbers_and_identities(sim_factory, signed_request_for):
    venue = sim_factory(rate_limits_enabled=False)
    call = signed_request_for(venue)
    flat = ok(call("GET", SUMMARY))
    assert "userId" not in flat                                   # API.md §7.1: not in the summary
    for name in SUMMARY_STRING_FIELDS:
        assert numeric_text(flat[name]), (name, flat[name])
    for name in SUMMARY_NUMBER_FIELDS:
        assert number(flat[name]), (name, flat[name])
    assert float(flat["equity"]) == 100_000 and float(flat["imAmount"]) == 0
    coins = flat["accounts"]
    assert isinstance(coins, list) and len(coins) == 1
    assert not [name for name in COIN_FIELDS if name not in coins[0]]
    assert coins[0]["marginMode"] in (1, 2)

    symbol = atm_call(call)
    venue.exchange.set_position(None, symbol, -0.5, 1000.0)       # a short needs initial margin
    short = ok(call("GET", SUMMARY))
    equity, im, mm = (float(short[k]) for k in ("equity", "imAmount", "mmAmount"))
    assert im > 0 and mm > 0
    assert float(short["availableMargin"]) == pytest.approx(equity - im, abs=1e-5)
    assert float(short["imRatio"]) == pytest.approx(im / equity, abs=1e-6)
    assert float(short["mmRatio"]) == pytest.approx(mm / equity, abs=1e-6)
    position = ok(call("GET", POSITIONS))[0]
    assert float(short["unrealizedPnL"]) == pytest.approx(position["upnlByMarkPrice"], abs=1e-5)
    assert equity == pytest.approx(100_000 + position["upnlByMarkPrice"], abs=1e-5)


def test_positions_magnitude_side_and_position_level_greeks(sim, signed_request):
    assert ok(signed_request("GET", POSITIONS)) == []
    symbol = atm_call(signed_request)
    detail = ok(signed_request("GET", DETAIL.format(symbol)))
    sim.exchange.set_position(None, symbol, -0.3, 900.0)
    [short] = ok(signed_request("GET", POSITIONS))
    conforms(short, POSITION_FIELDS, "position")
    assert short["symbol"] == symbol and short["qty"] == 0.3 and short["tradeSide"] == 2
    assert short["avgPrice"] == 900.0 and short["markPrice"] == detail["markPrice"]
    assert short["upnlByMarkPrice"] == pytest.approx((detail["markPrice"] - 900.0) * 0.3 * -1, abs=1e-6)
    assert short["roiByMarkPrice"] == pytest.approx(short["upnlByMarkPrice"] / (900.0 * 0.3), abs=1e-6)
    assert short["upnl"] == 0.0          # last-price based, and nothing traded since the position opened
    for greek in ("delta", "gamma", "vega", "theta", "rho"):
        assert short[greek] == pytest.approx(detail[greek] * 0.3 * -1, rel=1e-6, abs=1e-8), greek
    assert short["baseToken"] == "BTC" and short["quoteToken"] == "USD"
    sim.exchange.set_position(None, symbol, 0.2, 900.0)
    [long] = ok(signed_request("GET", POSITIONS, {"symbol": symbol}))
    assert long["qty"] == 0.2 and long["tradeSide"] == 1 and long["delta"] > 0


# --- the calendar keeps rolling for 48 hours, and signed requests keep working --------------------
def test_48_hours_in_hourly_steps_keep_listing_rolling_and_requests_accepted(sim, signed_request, sim_clock):
    start_ms = sim_clock.now_ms()                                 # Monday 06:00 UTC
    start_expiries = {i["expirationTimestamp"] for i in ok(signed_request("GET", INSTRUMENTS))}
    seen = set(start_expiries)
    for _hour in range(48):
        sim_clock.advance(3600)
        now = sim_clock.now_ms()
        assert ok(signed_request("GET", "/time", signed=False))["serverTime"] == now
        instruments = ok(signed_request("GET", INSTRUMENTS))
        expiries = sorted({i["expirationTimestamp"] for i in instruments})
        assert expiries[0] > now                                  # expired options vanish at 08:00
        assert expiries[0] - now <= 24 * HOUR_MS                  # there is always a daily
        assert sum(1 for e in expiries if e <= now + 72 * HOUR_MS) >= 3
        seen |= set(expiries)
        summary = signed_request("GET", SUMMARY)                  # signed with the same simulated clock
        assert summary["code"] == 0, summary
    final = {i["expirationTimestamp"] for i in ok(signed_request("GET", INSTRUMENTS))}
    assert sorted(start_expiries)[:2] == sorted(start_expiries - final)    # 2 and 3 March expired
    assert final - start_expiries == {start_ms + 74 * HOUR_MS}    # Thursday's daily was listed since
    assert seen == start_expiries | final
    assert ok(signed_request("GET", DELIVERY, {"symbol": "BTCUSD"}))["records_total"] == 2
