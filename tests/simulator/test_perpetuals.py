"""The perpetual futures of the simulator over the wire (API.md §14, docs/SIMULATOR.md).

Every request is signed (or, for market data, also unsigned) and sent through HTTP exactly as
a client sends it. Covered: market data shapes (instruments feed, symbol ticker, both order
books with BTCUSD and BTC-USD, last trades, funding rate, futuresConfig), order types (LIMIT,
MARKET, POST_ONLY; GTC/IOC/FOK), clientOrderId uniqueness, reduce-only refusals and the clip
setting, amend, cancels, queries, pending pages, histories joined by orderId, positions with
signed delta, upnl and a liquidation estimate, leverage get/set and its lock, and the
separation of option and futures routes.
"""
from __future__ import annotations

from typing import Any

import pytest

from simulator.exchange import ExchangeConfig, PerpSettings
from tests.simulator.wire_types import boolean, conforms, flag01, int64_id, integer, number, numeric_text, ok, text

INSTRUMENTS = "/open/futures/market/instruments/v1"
SYMBOLS = "/open/futures/market/symbol/v1"
MARKET_BOOK = "/open/futures/market/orderbook"
BOOK = "/open/futures/order/orderbook/v1/{}"
LAST_TRADES = "/open/futures/trade/lasttrade/v1/{}"
FUNDING_RATE = "/open/public/fundingRate/v1"
CONFIG = "/open/public/config/v1"
CREATE = "/open/futures/order/create/v1"
MODIFY = "/open/futures/order/modify/v1"
CANCEL = "/open/futures/order/cancel/v1"
BATCH_CANCEL = "/open/futures/order/batchCancel/v1"
CANCEL_ALL = "/open/futures/order/cancelOpenOrders/v1/{}"
QUERY = "/open/futures/order/singleQuery/v1"
PENDING = "/open/futures/order/pending/v1"
ORDER_HISTORY = "/open/futures/order/history/v1"
TRADE_HISTORY = "/open/futures/trade/history/v1"
POSITIONS = "/open/futures/position/get/v1"
LEVERAGE = "/open/futures/leverage/current/v1"
SET_LEVERAGE = "/open/futures/leverage/set/v1"
OPTION_POSITIONS = "/open/option/position/get/v1"
OPTION_PENDING = "/open/option/order/pending/v1"
OPTION_QUERY = "/open/option/order/singleQuery/v1"
SUMMARY = "/open/account/summary/v1"

ORDER_FIELDS = {   # API.md §14.5
    "orderId": int64_id, "clientOrderId": integer, "symbol": text, "displayName": text, "qty": number,
    "remainQty": number, "fillQty": number, "price": number, "avgPrice": number, "tradeSide": integer,
    "tradeType": integer, "createTime": integer, "updateTime": integer, "reduceOnly": flag01,
    "leverage": integer, "fee": number, "state": integer, "timeInForce": text,
}
POSITION_FIELDS = {   # API.md §14.7
    "id": int64_id, "positionId": int64_id, "updateTime": integer, "userId": integer, "symbol": text,
    "displayName": text, "baseToken": text, "quoteToken": text, "qty": number, "tradeSide": integer,
    "avgPrice": number, "markPrice": number, "value": number, "initMargin": number, "maintMargin": number,
    "upnl": number, "roi": number, "leverage": integer, "delta": number,
}
FILL_FIELDS = {   # API.md §14.6
    "id": int64_id, "symbol": text, "displayName": text, "tradeSide": integer, "tradeType": integer,
    "price": number, "qty": number, "indexPrice": number, "orderId": int64_id, "tradeId": int64_id,
    "fee": number, "time": integer, "leverage": integer, "isTaker": flag01,
}


@pytest.fixture
def make_venue(sim_factory, signed_request_for):
    def build(**exchange: Any):
        options: dict[str, Any] = {"rate_limits_enabled": False}
        options["exchange"] = ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0, **exchange)
        handle = sim_factory(**options)
        return handle, signed_request_for(handle)

    return build


@pytest.fixture
def venue(make_venue):
    return make_venue()


def top(call, symbol: str = "BTCUSD") -> tuple[float, float]:
    book = ok(call("GET", BOOK.format(symbol)))
    return float(book["bids"][0]["price"]), float(book["asks"][0]["price"])


def create(call, **params: Any) -> dict:
    body = {"symbol": "BTCUSD", "tradeType": 1, **params}
    return call("POST", CREATE, body)


# ------------------------------------------------------------------ market data


def test_market_data_shapes_for_both_perpetuals(venue):
    handle, call = venue
    listed = ok(call("GET", SYMBOLS, signed=False))
    assert [e["symbol"] for e in listed] == ["BTCUSD", "ETHUSD"]
    btc, eth = listed
    assert btc["displayName"] == "BTC-PERP" and eth["displayName"] == "ETH-PERP" and eth["hasOption"] is True
    assert btc["indexPrice"] == pytest.approx(handle.market.index_of("BTC"), abs=1e-6)
    assert eth["indexPrice"] == pytest.approx(handle.market.index_of("ETH"), abs=1e-6)
    assert 1_000 < eth["indexPrice"] < 10_000 and btc["indexPrice"] > 10 * eth["indexPrice"]
    for entry in listed:   # the mark sits within the premium bound of the index
        assert abs(entry["markPrice"] / entry["indexPrice"] - 1) < 0.001
        assert isinstance(entry["sortIdx"], int) and boolean(entry["hasOption"])
    assert ok(call("GET", SYMBOLS, {"symbol": "ETHUSD"}))["symbol"] == "ETHUSD"

    feed = ok(call("GET", INSTRUMENTS, signed=False))
    assert [f["ticker_id"] for f in feed] == ["BTC-USD", "ETH-USD"]
    for item in feed:
        assert item["product_type"] == "Perpetual" and integer(item["next_funding_rate_timestamp"])
        for name in ("last_price", "bid", "ask", "index_price", "funding_rate", "open_interest"):
            assert numeric_text(item[name]), (name, item[name])
        assert float(item["bid"]) < float(item["ask"])

    for symbol in ("BTC-USD", "BTCUSD"):   # both spellings (docs/SIMULATOR.md, perpetual uncertainties)
        book = ok(call("GET", MARKET_BOOK, {"symbol": symbol, "depth": 10}, signed=False))
        assert book["symbol"] == "BTC-USD" and len(book["bids"]) == 10 and len(book["asks"]) == 10
        assert all(isinstance(level, list) and numeric_text(level[0]) and numeric_text(level[1])
                   for level in book["bids"] + book["asks"])
        prices = [float(p) for p, _size in book["bids"]]
        assert prices == sorted(prices, reverse=True) and float(book["asks"][0][0]) > prices[0]
    assert ok(call("GET", MARKET_BOOK, {"symbol": "BTC-USD"}))["bids"].__len__() == 1   # default depth 1
    assert call("GET", MARKET_BOOK, {"symbol": "BTCUSD", "depth": 7})["code"] == 10005
    assert call("GET", MARKET_BOOK, {"symbol": "DOGE-USD"})["code"] == 10574

    full = ok(call("GET", BOOK.format("ETHUSD")))
    assert full["symbol"] == "ETHUSD" and len(full["bids"]) == 20
    assert all(numeric_text(level["size"]) and numeric_text(level["price"]) for level in full["asks"])
    assert all(round(float(level["size"]) * 100) == pytest.approx(float(level["size"]) * 100) for level in full["asks"])

    rates = ok(call("GET", FUNDING_RATE, signed=False))
    assert [r["symbol"] for r in rates] == ["BTCUSD", "ETHUSD"]
    assert rates[0]["contractId"] == "1" and numeric_text(rates[0]["rate"])
    assert rates[0]["nextFundingTime"] % (8 * 3_600_000) == 0 and rates[0]["nextFundingTime"] > handle.clock.now_ms()
    assert [r["symbol"] for r in ok(call("GET", FUNDING_RATE, {"symbol": "ETHUSD"}))] == ["ETHUSD"]

    config = ok(call("GET", CONFIG, signed=False))
    btc_config = config["futuresConfig"]["BTCUSD"]
    assert (btc_config["tickSize"], btc_config["minQty"], btc_config["qtyDecimal"]) == (0.1, 0.001, 3)
    assert (btc_config["makerFee"], btc_config["takerFee"], btc_config["limitMaxQty"]) == (0.0002, 0.0006, 1000.0)
    assert config["futuresConfig"]["ETHUSD"]["minQty"] == 0.01
    assert config["optionConfig"]["ETHUSD"]["qtyDecimal"] == 1 and config["optionConfig"]["BTCUSD"]["qtyDecimal"] == 2


# ------------------------------------------------------------------ orders


def test_limit_order_rests_then_market_order_fills_and_positions_show_it(venue):
    handle, call = venue
    bid, ask = top(call)
    resting = ok(create(call, qty=0.01, tradeSide=1, price=bid - 50, clientOrderId=101))
    view = ok(call("GET", QUERY, {"clientOrderId": 101}))
    conforms(view, ORDER_FIELDS, "singleQuery")
    assert view["orderId"] == resting and view["state"] == 0 and view["timeInForce"] == "GTC"
    pending = ok(call("GET", PENDING))
    assert pending["total"] == 1 and pending["list"][0]["id"] == resting and pending["list"][0]["initMargin"] > 0
    assert ok(call("GET", OPTION_PENDING))["total"] == 0                     # option routes do not see it
    assert call("GET", OPTION_QUERY, {"orderId": resting})["code"] == 10584

    market = ok(create(call, qty=0.005, tradeSide=1, tradeType=2, clientOrderId=102))
    filled = ok(call("GET", QUERY, {"orderId": market}))
    assert filled["state"] == 1 and filled["fillQty"] == 0.005 and filled["price"] == 0.0
    assert filled["avgPrice"] >= ask and filled["fee"] == pytest.approx(0.005 * filled["avgPrice"] * 0.0006, abs=1e-6)

    positions = ok(call("GET", POSITIONS))
    assert len(positions) == 1
    position = positions[0]
    conforms(position, POSITION_FIELDS, "position")
    assert position["qty"] == 0.005 and position["tradeSide"] == 1 and position["delta"] == 0.005
    assert position["value"] == pytest.approx(0.005 * position["avgPrice"])
    assert position["initMargin"] == pytest.approx(position["value"] / 10)   # default leverage 10
    assert position["upnl"] == pytest.approx(0.005 * (position["markPrice"] - position["avgPrice"]), abs=1e-6)
    assert position["elp"] is None          # 100,000 USD of equity: no positive price liquidates 0.005 BTC
    assert ok(call("GET", OPTION_POSITIONS)) == []                            # and options positions stay apart
    assert handle.exchange.position_of(None, "BTCUSD") == 0.005

    fills = ok(call("GET", TRADE_HISTORY))["list"]
    assert len(fills) == 1 and "clientOrderId" not in fills[0]
    conforms(fills[0], FILL_FIELDS, "fill")
    assert fills[0]["orderId"] == market and fills[0]["isTaker"] == 1 and fills[0]["contractId"] is None
    history = ok(call("GET", ORDER_HISTORY, {"pageSize": 10}))["list"]
    assert [o["orderId"] for o in history] == [market, resting]
    assert call("GET", ORDER_HISTORY)["code"] == 10005                        # pageSize is required
    trades = ok(call("GET", LAST_TRADES.format("BTCUSD"), signed=False))
    assert trades[0]["qty"] == "0.005" and trades[0]["tradeSide"] == 1


def test_short_position_has_negative_delta_and_liquidation_above(venue):
    _handle, call = venue
    ok(create(call, qty=0.02, tradeSide=2, tradeType=2, clientOrderId=7))
    position = ok(call("GET", POSITIONS))[0]
    assert position["tradeSide"] == 2 and position["qty"] == 0.02 and position["delta"] == -0.02
    assert position["elp"] > position["markPrice"]
    assert position["upnl"] == pytest.approx(0.02 * (position["avgPrice"] - position["markPrice"]), abs=1e-6)


def test_liquidation_estimate_of_a_long_on_a_small_account(make_venue):
    _handle, call = make_venue(starting_balance_usd=2_000.0)
    ok(create(call, qty=0.1, tradeSide=1, tradeType=2, clientOrderId=1))
    position = ok(call("GET", POSITIONS))[0]
    summary = ok(call("GET", SUMMARY))
    equity, maintenance = float(summary["equity"]), float(summary["mmAmount"])
    expected = position["markPrice"] - (equity - maintenance) / (0.1 * (1 - 0.0005))
    assert 0 < position["elp"] < position["markPrice"] and position["elp"] == pytest.approx(expected, abs=0.01)


def test_order_refusals(venue):
    _handle, call = venue
    bid, ask = top(call)
    assert ok(create(call, qty=0.01, tradeSide=1, price=bid - 10, clientOrderId=5))
    assert create(call, qty=0.01, tradeSide=1, price=bid - 10, clientOrderId=5)["code"] == 10577
    assert create(call, qty=0.0005, tradeSide=1, price=bid, clientOrderId=6)["code"] == 10558   # below 0.001
    assert create(call, qty=0.0015, tradeSide=1, price=bid, clientOrderId=6)["code"] == 10558   # off the step
    assert create(call, qty=2000, tradeSide=1, price=bid, clientOrderId=6)["code"] == 10534
    assert create(call, qty=0.01, tradeSide=1, tradeType=2, price=bid, clientOrderId=6)["code"] == 12013
    assert create(call, qty=0.01, tradeSide=1, tradeType=2, timeInForce="GTC", clientOrderId=6)["code"] == 12011
    assert create(call, qty=0.01, tradeSide=1, timeInForce="DAY", price=bid, clientOrderId=6)["code"] == 12012
    assert create(call, qty=0.01, tradeSide=1, tradeType=4, price=bid, clientOrderId=6)["code"] == 10004
    assert create(call, qty=0.01, tradeSide=1, clientOrderId=6)["code"] == 10530                # limit needs a price
    assert create(call, qty=0.01, tradeSide=1, price=bid * 1.2, clientOrderId=6)["code"] == 10531
    assert create(call, qty=0.01, tradeSide=1, price=bid * 0.8, clientOrderId=6)["code"] == 10532
    assert create(call, symbol="DOGEUSD", qty=1, tradeSide=1, price=1, clientOrderId=6)["code"] == 10574
    assert create(call, qty=0.01, tradeSide=1, tradeType=3, price=ask, clientOrderId=6)["code"] == 10001  # post-only
    assert create(call, qty=0.01, tradeSide=2, price=ask, reduceOnly=1, clientOrderId=6)["code"] == 10536
    assert create(call, qty=500, tradeSide=1, price=bid, clientOrderId=6)["code"] == 10529   # 45M USD at 10x
    assert ok(create(call, qty=0.01, tradeSide=1, tradeType=3, price=bid, clientOrderId=6))   # post-only resting


def test_reduce_only_refuses_growth_and_excess_unless_clipping(make_venue):
    _handle, call = make_venue()
    ok(create(call, qty=0.01, tradeSide=1, tradeType=2, clientOrderId=1))
    bid, ask = top(call)
    assert create(call, qty=0.01, tradeSide=1, price=bid, reduceOnly=1, clientOrderId=2)["code"] == 10536  # grows
    assert create(call, qty=0.02, tradeSide=2, price=bid, reduceOnly=1, clientOrderId=2)["code"] == 10536  # flips
    closing = ok(create(call, qty=0.01, tradeSide=2, tradeType=2, reduceOnly=1, clientOrderId=3))
    assert ok(call("GET", QUERY, {"orderId": closing}))["state"] == 1 and ok(call("GET", POSITIONS)) == []

    _handle, clipped = make_venue(perp=PerpSettings(reduce_only_excess="clip", post_only_cross_code=10002))
    ok(create(clipped, qty=0.01, tradeSide=1, tradeType=2, clientOrderId=1))
    order = ok(create(clipped, qty=0.05, tradeSide=2, tradeType=2, reduceOnly=1, clientOrderId=2))
    view = ok(clipped("GET", QUERY, {"orderId": order}))
    assert view["qty"] == 0.01 and view["fillQty"] == 0.01 and ok(clipped("GET", POSITIONS)) == []
    _bid, ask = top(clipped)
    assert create(clipped, qty=0.01, tradeSide=1, tradeType=3, price=ask, clientOrderId=3)["code"] == 10002


def test_ioc_fok_amend_and_cancels(venue):
    handle, call = venue
    bid, ask = top(call)
    ioc = ok(create(call, qty=0.01, tradeSide=1, price=bid - 20, timeInForce="IOC", clientOrderId=1))
    assert ok(call("GET", QUERY, {"orderId": ioc}))["state"] == 3
    fok = ok(create(call, qty=5, tradeSide=1, price=ask, timeInForce="FOK", clientOrderId=2))   # > the touch
    fok_view = ok(call("GET", QUERY, {"orderId": fok}))
    assert fok_view["state"] == 3 and fok_view["fillQty"] == 0
    order = ok(create(call, qty=0.01, tradeSide=1, price=bid - 20, clientOrderId=3))
    assert ok(call("POST", MODIFY, {"symbol": "BTCUSD", "orderId": order, "qty": 0.02, "price": bid - 30})) == order
    amended = ok(call("GET", QUERY, {"clientOrderId": 3}))
    assert amended["qty"] == 0.02 and amended["price"] == pytest.approx(bid - 30)
    assert call("POST", MODIFY, {"symbol": "ETHUSD", "orderId": order, "qty": 0.02})["code"] == 10005
    assert call("POST", CANCEL, {"clientOrderId": 3}) == {"code": 0, "msg": "Success", "i18nArgs": None, "data": None}
    assert call("POST", CANCEL, {})["code"] == 10575
    assert call("POST", CANCEL, {"orderId": order})["code"] == 11101
    first = ok(create(call, qty=0.01, tradeSide=1, price=bid - 20, clientOrderId=4))
    second = ok(create(call, qty=0.01, tradeSide=1, price=bid - 21, clientOrderId=5))
    acks = ok(call("POST", BATCH_CANCEL, {"orderIdList": [first, 42]}))
    assert [(a["ordId"], a["scode"]) for a in acks] == [(first, 0), (42, 1)]
    ok(create(call, symbol="ETHUSD", qty=0.1, tradeSide=1, price=round(top(call, "ETHUSD")[0] - 2, 2), clientOrderId=6))
    assert ok(call("GET", CANCEL_ALL.format("BTCUSD"))) is None
    states = {o["orderId"]: o["state"] for o in handle.exchange.orders()}
    assert states[second] == 3 and [o["symbol"] for o in ok(call("GET", PENDING))["list"]] == ["ETHUSD"]


def test_resting_limit_order_fills_when_the_market_trades_through(make_venue, sim_clock):
    handle, call = make_venue()
    bid, _ask = top(call)
    order = ok(create(call, qty=0.01, tradeSide=1, price=bid, clientOrderId=1))
    start = handle.market.index_of("BTC")
    handle.market.set_scripted_path([(sim_clock.now_ms(), start), (sim_clock.now_ms() + 60_000, start * 0.99)])
    sim_clock.advance(120)
    view = ok(call("GET", QUERY, {"orderId": order}))
    assert view["state"] == 1 and view["avgPrice"] == pytest.approx(bid)
    fill = ok(call("GET", TRADE_HISTORY))["list"][0]
    assert fill["isTaker"] == 0 and fill["fee"] == pytest.approx(0.01 * bid * 0.0002, abs=1e-8)


def test_leverage_get_set_and_lock(venue):
    _handle, call = venue
    assert ok(call("GET", LEVERAGE, {"symbol": "BTCUSD"}))["currentLeverage"] == 10
    assert ok(call("POST", SET_LEVERAGE, {"symbol": "BTCUSD", "leverage": 20})) is None
    assert ok(call("GET", LEVERAGE, {"symbol": "BTCUSD"}))["currentLeverage"] == 20
    assert call("POST", SET_LEVERAGE, {"symbol": "BTCUSD", "leverage": 200})["code"] == 10005
    ok(create(call, qty=0.01, tradeSide=1, tradeType=2, clientOrderId=1))
    position = ok(call("GET", POSITIONS))[0]
    assert position["leverage"] == 20 and position["initMargin"] == pytest.approx(position["value"] / 20)
    assert call("POST", SET_LEVERAGE, {"symbol": "ETHUSD", "leverage": 5})["code"] == 40038   # account-wide lock


def test_account_summary_includes_perpetual_margin_fees_and_upnl(venue):
    handle, call = venue
    before = ok(call("GET", SUMMARY))
    ok(create(call, qty=0.1, tradeSide=1, tradeType=2, clientOrderId=1))
    after = ok(call("GET", SUMMARY))
    position = ok(call("GET", POSITIONS))[0]
    metrics = handle.exchange.metrics_of()
    fee = ok(call("GET", TRADE_HISTORY))["list"][0]["fee"]
    assert metrics.cash == pytest.approx(float(before["equity"]) - fee)
    assert float(after["unrealizedPnL"]) == pytest.approx(position["upnl"], abs=1e-5)
    assert float(after["imAmount"]) == pytest.approx(position["initMargin"], abs=1e-5)
    assert float(after["mmAmount"]) == pytest.approx(position["maintMargin"], abs=1e-5)
    assert float(after["equity"]) == pytest.approx(metrics.cash + position["upnl"], abs=1e-5)
    bid, _ask = top(call)
    ok(create(call, qty=0.1, tradeSide=1, price=bid - 100, clientOrderId=2))
    with_order = ok(call("GET", SUMMARY))
    assert float(with_order["imAmount"]) == pytest.approx(position["initMargin"] + 0.1 * (bid - 100) / 10, rel=1e-3)
