"""ETH options, the simulator's second underlying, over the wire: listing, chain, book, margin, settlement.

ETH has its own index path, surface, strike grid and contract (0.1 ETH steps, tick 0.01); every
options endpoint keyed by base, index or symbol answers for it, and its options settle at ETH's
own delivery price (docs/SIMULATOR.md "ETH options").
"""
from __future__ import annotations

import pytest

from simulator.exchange import ExchangeConfig
from simulator.markets import Markets
from tests.simulator.wire_types import ok

INSTRUMENTS = "/open/option/getInstruments/ETH"
CHAIN = "/open/option/get/v1/ETHUSD"
DETAIL = "/open/option/detail/v1/{}"
BOOK = "/open/option/order/orderbook/v1/{}"
CREATE = "/open/option/order/create/v1"
POSITIONS = "/open/option/position/get/v1"
EXERCISES = "/open/settle/exercise/history/v1"
DELIVERY = "/open/option/get-delivery-prices/v1"
ESTIMATED = "/open/option/getEstimatedExpirationPrice/v1"
SYMBOLS = "/open/futures/market/symbol/v1"


@pytest.fixture
def venue(sim_factory, signed_request_for):
    handle = sim_factory(rate_limits_enabled=False, exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0,
                                                                             rfq_min_notional_usd=None))
    return handle, signed_request_for(handle)


def first_expiry_symbol(call, kind: str = "C") -> tuple[str, int, float]:
    """An ETH option of the first expiry near the money with both sides quoted: (symbol, expiry, strike)."""
    instruments = ok(call("GET", INSTRUMENTS))
    expiry = min(i["expirationTimestamp"] for i in instruments)
    index = ok(call("GET", SYMBOLS, {"symbol": "ETHUSD"}))["indexPrice"]
    rows = ok(call("GET", CHAIN, {"endTime": expiry}))
    row = min(rows, key=lambda r: abs(r["strike"] - index))
    side = row["callOption" if kind == "C" else "putOption"]
    return side["symbol"], expiry, row["strike"]


def test_eth_listing_chain_detail_and_book(venue):
    handle, call = venue
    instruments = ok(call("GET", INSTRUMENTS, signed=False))
    assert instruments and all(i["baseCurrency"] == "ETH" for i in instruments)
    assert all(i["minQty"] == 0.1 and i["tickSize"] == 0.01 for i in instruments)
    assert all(i["symbolName"].startswith("ETHUSD-") for i in instruments)
    index = handle.market.index_of("ETH")
    strikes = sorted({i["strike"] for i in instruments})
    assert 1_000 < min(strikes) < index < max(strikes) < 10_000
    assert all(s % 25 == 0 for s in strikes)
    btc_expiries = {i["expirationTimestamp"] for i in ok(call("GET", "/open/option/getInstruments/BTC"))}
    assert {i["expirationTimestamp"] for i in instruments} == btc_expiries        # the same 08:00 calendar

    symbol, expiry, strike = first_expiry_symbol(call)
    rows = ok(call("GET", CHAIN, {"endTime": expiry}, signed=False))
    assert all(r["callOption"]["index"] == "ETHUSD" for r in rows)
    side = next(r["callOption"] for r in rows if r["strike"] == strike)
    assert side["underlyingPrice"] == pytest.approx(index, rel=0.01) and 0 < side["markIv"] < 3
    detail = ok(call("GET", DETAIL.format(symbol)))
    assert detail["index"] == "ETHUSD" and detail["multiplier"] == 0.1
    assert detail["indexPrice"] == pytest.approx(index, abs=1e-6)
    book = ok(call("GET", BOOK.format(symbol)))
    sizes = [float(level["size"]) * 10 for level in book["asks"]]
    assert sizes and all(abs(size - round(size)) < 1e-9 for size in sizes)                # 0.1 ETH steps
    estimated = ok(call("GET", ESTIMATED, {"index": "ETHUSD", "endTime": expiry}))
    assert estimated[0]["index"] == "ETHUSD" and float(estimated[0]["estimatedExpirationPrice"]) == pytest.approx(
        index, abs=0.01)
    assert ok(call("GET", SYMBOLS, {"symbol": "ETHUSD"}))["indexPrice"] == pytest.approx(index)


def test_eth_quantities_are_in_tenths_and_short_margin_uses_the_eth_index(venue):
    handle, call = venue
    symbol, _expiry, strike = first_expiry_symbol(call, "P")
    book = ok(call("GET", BOOK.format(symbol)))
    bid, ask = float(book["bids"][0]["price"]), float(book["asks"][0]["price"])
    base = {"symbol": symbol, "tradeSide": 2, "tradeType": 1, "price": bid}
    assert call("POST", CREATE, {**base, "qty": 0.05, "clientOrderId": 1})["code"] == 10558
    assert call("POST", CREATE, {**base, "qty": 0.15, "clientOrderId": 1})["code"] == 10558
    order = ok(call("POST", CREATE, {**base, "qty": 0.1, "clientOrderId": 1}))
    assert ok(call("GET", "/open/option/order/singleQuery/v1", {"orderId": order}))["fillQty"] == 0.1
    position = ok(call("GET", POSITIONS))[0]
    assert position["symbol"] == symbol and position["qty"] == 0.1 and position["tradeSide"] == 2
    assert position["baseToken"] == "ETH"
    index = handle.market.index_of("ETH")
    otm = max(0.0, index - strike)
    expected_im = 0.1 * (max(0.15 * index - otm, 0.10 * index) + position["markPrice"])
    assert position["initMargin"] == pytest.approx(expected_im, rel=1e-6)
    assert position["indexPrice"] == pytest.approx(index, abs=1e-6)
    assert handle.exchange.position_of(None, symbol) == -0.1
    fee = ok(call("GET", "/open/option/trade/history/v1"))["list"][0]["fee"]
    assert fee == pytest.approx(min(0.1 * index * 0.0003, 0.1 * bid * 0.125), abs=1e-8)


def test_eth_options_settle_at_eth_delivery_price(venue, sim_clock):
    handle, call = venue
    symbol, expiry, strike = first_expiry_symbol(call)
    ask = float(ok(call("GET", BOOK.format(symbol)))["asks"][0]["price"])
    ok(call("POST", CREATE, {"symbol": symbol, "qty": 1.0, "tradeSide": 1, "tradeType": 1, "price": ask,
                             "clientOrderId": 9}))
    cash_before = handle.exchange.cash_of()
    sim_clock.advance((expiry - sim_clock.now_ms()) / 1000 + 120)
    assert ok(call("GET", POSITIONS)) == []
    markets = handle.market
    assert isinstance(markets, Markets)
    delivery = markets.delivery_price_of("ETH", expiry)
    assert delivery is not None and 1_000 < delivery < 10_000
    assert delivery != markets.delivery_price_of("BTC", expiry)
    record = ok(call("GET", EXERCISES))["list"][0]
    assert record["symbol"] == symbol and record["exercisePrice"] == pytest.approx(delivery, abs=1e-6)
    intrinsic = max(0.0, delivery - strike)
    assert record["settlementCashFlow"] == pytest.approx(intrinsic, abs=1e-6)
    assert handle.exchange.cash_of() == pytest.approx(cash_before + intrinsic - ask - record["fees"], abs=1e-6)
    eth_prices = ok(call("GET", DELIVERY, {"symbol": "ETHUSD"}))["list"]
    assert eth_prices[0]["date"] == expiry and float(eth_prices[0]["delivery_price"]) == pytest.approx(delivery,
                                                                                                      abs=0.01)
    btc_prices = ok(call("GET", DELIVERY, {"symbol": "BTCUSD"}))["list"]
    assert float(btc_prices[0]["delivery_price"]) > 10_000


def test_eth_moves_independently_but_deterministically(sim_factory):
    first, second, other = sim_factory(), sim_factory(), sim_factory(seed=8)
    for handle in (first, second, other):
        handle.clock.advance(0)
    first.exchange.sync(first.clock.now_ms() + 3_600_000)
    second.exchange.sync(second.clock.now_ms() + 3_600_000)
    other.exchange.sync(other.clock.now_ms() + 3_600_000)
    assert first.market.index_of("ETH") == second.market.index_of("ETH")
    assert first.market.index_of("ETH") != other.market.index_of("ETH")
    eth_move = first.market.index_of("ETH") / 3_000.0
    btc_move = first.market.index_of("BTC") / 90_000.0
    assert eth_move != pytest.approx(btc_move, abs=1e-9)


def test_rfq_legs_must_share_one_underlying(venue):
    _handle, call = venue
    eth_symbol, _expiry, _strike = first_expiry_symbol(call)
    btc = ok(call("GET", "/open/option/getInstruments/BTC"))[0]["symbolName"]
    legs = [{"instrumentName": eth_symbol, "side": "BUY", "qty": "1"},
            {"instrumentName": btc, "side": "SELL", "qty": "0.1"}]
    assert call("POST", "/open/option/blocktrade/request/create/v1", {"legs": legs})["code"] == 10001
