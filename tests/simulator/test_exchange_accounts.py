"""Accounts, positions, fees, margin, public market data and persistence of the simulated exchange."""
from __future__ import annotations

import base64
import json
import re

import pytest

from clock import SimulatedClock
from simulator.errors import SimError
from simulator.exchange import ExchangeConfig, SimExchange
from simulator.market import MarketConfig, MarketModel
from tests.simulator.exchange_builders import DAILY_3MAR26, START, WEEKLY_6MAR26, build, chain_symbol


def best(exchange, symbol):
    book = exchange.orderbook(None, {"symbol": symbol})
    return float(book["bids"][0]["price"]), float(book["asks"][0]["price"])


def resting(exchange, account, symbol, side, qty=2.0):
    """An order that rests (far from the touch) so that force_fill can fill it at chosen prices."""
    bid, ask = best(exchange, symbol)
    price = bid - 20 if side == 1 else ask + 20
    return exchange.create_order(account, {"symbol": symbol, "qty": qty, "tradeSide": side, "tradeType": 1,
                                           "price": price})


def fee(qty, price, index, rate=0.0003):
    return min(qty * index * rate, qty * price * 0.125)


# ------------------------------------------------------------------ accounts and keys

def test_default_account_credentials_and_repr():
    _, _, exchange = build()
    account = exchange.default_account
    assert len(account.api_key) == 44 and account.api_key.endswith("=")
    assert len(base64.b64decode(account.api_key)) == 32
    assert re.fullmatch(r"[0-9a-f]{64}", account.api_secret)
    assert account.api_secret not in repr(account) and account.api_key not in repr(account)
    assert exchange.account_for_key(account.api_key) is account
    assert exchange.account_for_key("nope") is None
    info = exchange.query_api_key(account, {})
    assert info == {"userId": account.user_id, "apiKey": account.api_key, "readOnly": 0, "isMaster": True,
                    "parentUid": 0}
    viewer = exchange.add_account("viewer", read_only=True)
    assert exchange.query_api_key(viewer, {})["readOnly"] == 1
    assert exchange.user_info(account, {})["userId"] == account.user_id
    with pytest.raises(SimError):
        exchange.account_summary(None, {})


def test_given_accounts_are_used_as_is():
    clock = SimulatedClock(start=START, speed=0)
    market = MarketModel(MarketConfig(seed=7), clock.now_ms())
    from simulator.exchange import Account
    mine = Account(user_id=42, api_key="demoKey123", api_secret="demoSecret456", name="fixed")
    exchange = SimExchange(ExchangeConfig(), market, clock, accounts=[mine])
    assert exchange.default_account is mine and exchange.accounts == [mine]
    assert exchange.cash_of(mine) == 100_000.0


# ------------------------------------------------------------------ fees

def test_fee_is_index_rate_or_capped_at_12_5_percent_of_premium():
    _, market, exchange = build()
    account = exchange.default_account
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
    order_id = resting(exchange, account, symbol, 1)
    index = market.index_price()
    exchange.force_fill(order_id, 1.0, price=50.0)      # 12.5 % of 50 = 6.25 < 27 (0.03 % of 90k)
    exchange.force_fill(order_id, 1.0, price=1000.0)    # 0.03 % of the index wins
    fills = exchange.fills(account)
    assert fills[0]["fee"] == pytest.approx(6.25)
    assert fills[1]["fee"] == pytest.approx(1.0 * index * 0.0003)
    view = exchange.query_order(account, {"orderId": order_id})
    assert view["fee"] == pytest.approx(6.25 + index * 0.0003)   # cumulative
    assert view["avgPrice"] == pytest.approx(525.0)


# ------------------------------------------------------------------ positions

def test_netting_average_price_realized_pnl_and_flip():
    _, market, exchange = build()
    account = exchange.default_account
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
    buy = resting(exchange, account, symbol, 1, qty=1.0)
    exchange.force_fill(buy, 0.5, price=1000.0)
    exchange.force_fill(buy, 0.5, price=1200.0)
    [position] = exchange.positions(account, {})
    assert position["qty"] == 1.0 and position["tradeSide"] == 1 and position["avgPrice"] == pytest.approx(1100.0)
    sell = resting(exchange, account, symbol, 2, qty=1.5)
    exchange.force_fill(sell, 0.4, price=1300.0)
    [position] = exchange.positions(account, {})
    assert position["qty"] == pytest.approx(0.6) and position["rspl"] == pytest.approx(80.0)
    assert position["avgPrice"] == pytest.approx(1100.0)
    exchange.force_fill(sell, 1.1, price=1250.0)          # closes 0.6 (+90) and opens 0.5 short
    [position] = exchange.positions(account, {})
    assert position["tradeSide"] == 2 and position["qty"] == pytest.approx(0.5)
    assert position["avgPrice"] == pytest.approx(1250.0)
    assert exchange.position_of(account, symbol) == pytest.approx(-0.5)
    fees = sum(f["fee"] for f in exchange.fills(account))
    assert exchange.cash_of(account) == pytest.approx(100_000 + 80 + 90 - fees)
    quote = market.quote(symbol)
    assert position["upnl"] == pytest.approx(0.0)        # last trade price == avg price
    assert position["lastPrice"] == 1250.0
    assert position["upnlByMarkPrice"] == pytest.approx((quote.mark - 1250.0) * 0.5 * -1)
    assert position["delta"] == pytest.approx(quote.delta * 0.5 * -1)
    assert position["theta"] == pytest.approx(quote.theta * 0.5 * -1)
    assert isinstance(position["qty"], float) and isinstance(position["positionId"], int)
    for key in ("id", "positionId", "orderId", "userId", "updateTime", "symbol", "displayName", "markPrice",
                "value", "initMargin", "maintMargin", "roi", "rspl", "lockQty", "indexPrice", "gamma", "vega",
                "rho", "baseToken", "quoteToken", "roiByMarkPrice"):
        assert key in position


def test_short_margin_formula_and_per_contract_greeks():
    _, market, exchange = build(position_greeks="per_contract")
    account = exchange.default_account
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 95_000)
    exchange.set_position(account, symbol, -2.0, 800.0)
    [position] = exchange.positions(account, {})
    quote = market.quote(symbol)
    index = market.index_price()
    otm = max(0.0, 95_000 - index)
    expected_im = 2.0 * (max(0.15 * index - otm, 0.10 * index) + quote.mark)
    assert position["initMargin"] == pytest.approx(expected_im)
    assert position["maintMargin"] == pytest.approx(expected_im / 2)
    assert position["delta"] == pytest.approx(quote.delta)       # per contract, unsigned
    assert position["qty"] == 2.0 and position["tradeSide"] == 2


def test_account_summary_identity_and_string_types():
    _, market, exchange = build()
    account = exchange.default_account
    call = chain_symbol(exchange, WEEKLY_6MAR26, 95_000)
    put = chain_symbol(exchange, WEEKLY_6MAR26, 85_000, "P")
    exchange.set_position(account, call, -1.0, 700.0)
    exchange.set_position(account, put, 0.5, 900.0)
    buy = resting(exchange, account, put, 1, qty=1.0)
    summary = exchange.account_summary(account, {})
    for key in ("equity", "availableMargin", "imAmount", "mmAmount", "imRatio", "mmRatio", "marginBalance",
                "unrealizedPnL"):
        assert isinstance(summary[key], str), key
    for key in ("totalBtcValue", "totalDollarValue", "totalUsdtValue"):
        assert isinstance(summary[key], float), key
    positions = exchange.positions(account, {})
    upnl = sum(p["upnlByMarkPrice"] for p in positions)
    equity = float(summary["equity"])
    assert equity == pytest.approx(exchange.cash_of(account) + upnl, abs=1e-4)
    assert float(summary["unrealizedPnL"]) == pytest.approx(upnl, abs=1e-4)
    im = float(summary["imAmount"])
    order_reserve = exchange.pending_orders(account, {})["list"][0]["initMargin"]
    assert order_reserve == pytest.approx(1.0 * exchange.query_order(account, {"orderId": buy})["price"])
    assert im == pytest.approx(sum(p["initMargin"] for p in positions) + order_reserve, abs=1e-4)
    assert float(summary["availableMargin"]) == pytest.approx(equity - im, abs=1e-4)
    assert float(summary["imRatio"]) == pytest.approx(im / equity, abs=1e-6)
    assert float(summary["mmRatio"]) == pytest.approx(float(summary["mmAmount"]) / equity, abs=1e-6)
    coin = summary["accounts"][0]
    assert coin["coin"] == "USDT" and coin["marginMode"] == 1 and isinstance(coin["equityAmount"], str)


def test_positions_empty_when_flat():
    _, _, exchange = build()
    assert exchange.positions(exchange.default_account, {}) == []


# ------------------------------------------------------------------ public market data

def test_time_config_and_instruments():
    clock, market, exchange = build()
    assert exchange.server_time(None, {}) == {"serverTime": clock.now_ms()}
    config = exchange.public_config(None, {})["optionConfig"]["BTCUSD"]
    assert config["tickSize"] == 1.0 and config["qtyDecimal"] == 2 and config["maxOrderNumber"] == 200
    assert config["limitMaxQty"] == 1000.0 and config["takerFee"] == 0.0003
    instruments = exchange.instruments(None, {"baseCurrency": "BTC"})
    assert len(instruments) == len(market.instruments())
    first = instruments[0]
    assert set(first) == {"baseCurrency", "symbolName", "strike", "expirationTimestamp", "isActive", "minQty",
                          "tickSize", "startTimestamp"}
    assert first["isActive"] is True and first["minQty"] == 0.01
    assert first["expirationTimestamp"] % 86_400_000 == 8 * 3_600_000
    assert exchange.instruments(None, {"baseCurrency": "ETH"}) == []


def test_chain_detail_book_and_trades():
    clock, market, exchange = build()
    account = exchange.default_account
    rows = exchange.option_chain(None, {"index": "BTCUSD", "endTime": str(WEEKLY_6MAR26)})
    assert rows == sorted(rows, key=lambda r: r["strike"]) and len(rows) > 10
    side = rows[len(rows) // 2]["callOption"]
    for key in ("optionId", "index", "symbol", "baseToken", "displayName", "endTime", "strike", "lastPrice",
                "markPrice", "volume", "openInterest", "bid", "bidSize", "bidIv", "ask", "askSize", "askIv",
                "markIv", "type", "lastPriceIv", "underlyingPrice", "breakeven", "changeRate", "changePrice",
                "userPosition", "delta", "gamma", "vega", "theta", "rho"):
        assert key in side, key
    assert side["lastPriceIv"] == 1.7976931348623157e308 and side["type"] == 1
    assert exchange.option_chain(None, {"index": "BTCUSD", "endTime": "1772000000000"}) == []
    everything = exchange.option_chain(None, {"index": "BTCUSD"})
    assert len(everything) > len(rows)

    symbol = side["symbol"]
    detail = exchange.option_detail(None, {"symbol": symbol})
    quote = market.quote(symbol)
    assert detail["iv"] == pytest.approx(quote.iv, abs=1e-6) and "impliedVolatility" not in detail
    assert detail["bid"] == quote.bid and detail["ask"] == quote.ask
    assert detail["indexPrice"] == pytest.approx(market.index_price())
    assert detail["remainTime"] == WEEKLY_6MAR26 - clock.now_ms()
    with pytest.raises(SimError) as err:
        exchange.option_detail(None, {"symbol": "BTCUSD-6MAR26-1-C"})
    assert err.value.code == 10574

    book = exchange.orderbook(None, {"symbol": symbol})
    assert "mark" not in book and "markPrice" not in book
    prices = [float(level["price"]) for level in book["bids"]]
    assert prices == sorted(prices, reverse=True)
    asks = [float(level["price"]) for level in book["asks"]]
    assert asks == sorted(asks)
    assert all(isinstance(level["price"], str) and isinstance(level["size"], str) for level in book["bids"])
    market.set_empty_side(symbol, "bid")
    assert exchange.orderbook(None, {"symbol": symbol})["bids"] == []
    assert exchange.option_chain(None, {"index": "BTCUSD", "endTime": str(WEEKLY_6MAR26)})[
        len(rows) // 2]["callOption"]["bid"] == 0
    market.set_empty_side("*", None)

    _, ask = best(exchange, symbol)
    exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": ask})
    trades = exchange.last_trades(None, {"symbol": symbol})
    assert trades[0]["price"] == str(int(ask)) and trades[0]["qty"] == "0.1" and trades[0]["tradeSide"] == 1
    side_after = [r for r in exchange.option_chain(account, {"index": "BTCUSD", "endTime": str(WEEKLY_6MAR26)})
                  if r["callOption"]["symbol"] == symbol][0]["callOption"]
    assert side_after["lastPrice"] == ask and side_after["lastPriceIv"] < 10
    assert side_after["userPosition"] == 0.1 and side_after["volume"] == 0.1


def _wire_matches_rows(exchange, account, expiry) -> int:
    params = {"index": "BTCUSD", "endTime": str(expiry)}
    rows = exchange.option_chain(account, params)
    wire = str(exchange.option_chain_wire(account, params))
    assert wire == json.dumps(rows, separators=(",", ":"), ensure_ascii=False)
    return len(rows)


def test_the_chain_text_is_the_encoding_of_its_rows_in_every_state():
    """The wire chain formats plain sides from the quote directly; byte for byte, it must still be
    the JSON of ``option_chain``: plain sides, a traded side (last price, volume, open interest),
    a held side (userPosition), a side with our order in the book, an emptied side, and later steps."""
    clock, market, exchange = build(show_own_orders_in_book=True)
    account = exchange.default_account
    assert _wire_matches_rows(exchange, None, WEEKLY_6MAR26) > 10
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
    other = chain_symbol(exchange, WEEKLY_6MAR26, 95_000, "P")
    _, ask = best(exchange, symbol)
    exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": ask})
    resting(exchange, account, other, 1)
    market.set_empty_side(chain_symbol(exchange, WEEKLY_6MAR26, 85_000, "P"), "ask")
    for _ in range(3):
        for who in (None, account):
            _wire_matches_rows(exchange, who, WEEKLY_6MAR26)
        clock.advance(7.0)


def test_the_listing_text_is_the_encoding_of_its_entries_while_trading_halted_and_expired():
    """``instruments_wire`` keeps each entry's text; byte for byte it must still be the JSON of
    ``instruments``: at the start, once the daily expiry halts (its entries say inactive), and
    after it expired (its entries are gone), for each base currency."""
    clock, _market, exchange = build()

    def matches(base: str) -> list[dict]:
        entries = exchange.instruments(None, {"baseCurrency": base})
        assert str(exchange.instruments_wire(None, {"baseCurrency": base})) == json.dumps(
            entries, separators=(",", ":"), ensure_ascii=False)
        return entries

    assert all(e["isActive"] for e in matches("BTC")) and len(matches("BTC")) > 50
    matches("ETH")
    clock.advance((DAILY_3MAR26 - 10 * 60_000) / 1000 - clock.now())
    halted = [e for e in matches("BTC") if not e["isActive"]]
    assert halted and all(e["expirationTimestamp"] == DAILY_3MAR26 for e in halted)
    clock.advance(20 * 60)
    after = matches("BTC")
    assert after and all(e["expirationTimestamp"] > DAILY_3MAR26 and e["isActive"] for e in after)


def test_futures_symbol_list_or_object_and_settlement_prices():
    clock, market, exchange = build()
    listing = exchange.futures_symbols(None, {})
    assert isinstance(listing, list) and listing[0]["symbol"] == "BTCUSD"
    single = exchange.futures_symbols(None, {"symbol": "BTCUSD"})
    assert isinstance(single, dict) and single["indexPrice"] == pytest.approx(market.index_price())
    assert single["ts"] == clock.now_ms()
    estimated = exchange.estimated_expiration_price(None, {"index": "BTCUSD", "endTime": str(WEEKLY_6MAR26)})
    assert estimated == [{"estimatedExpirationPrice": estimated[0]["estimatedExpirationPrice"],
                          "index": "BTCUSD", "endTime": WEEKLY_6MAR26}]
    assert float(estimated[0]["estimatedExpirationPrice"]) == pytest.approx(market.index_price(), abs=0.01)
    assert exchange.delivery_prices(None, {"symbol": "BTCUSD"}) == {"list": [], "records_total": 0}


# ------------------------------------------------------------------ persistence

def test_state_round_trip_continues_identically():
    clock, market, exchange = build(passive_fill_prob_per_min_at_touch=0.8, rfq_min_notional_usd=None)
    account = exchange.default_account
    other = exchange.add_account("other", rfq_maker_access=True)
    symbol = chain_symbol(exchange, WEEKLY_6MAR26, 90_000)
    bid, ask = best(exchange, symbol)
    exchange.create_order(account, {"symbol": symbol, "qty": 0.5, "tradeSide": 1, "tradeType": 1, "price": ask})
    exchange.create_order(account, {"symbol": symbol, "qty": 1.0, "tradeSide": 2, "tradeType": 1,
                                    "price": ask - 1, "clientOrderId": 9})
    exchange.create_order(other, {"symbol": symbol, "qty": 1.0, "tradeSide": 1, "tradeType": 1, "price": bid + 1})
    rfq = exchange.rfq_create(account, {"legs": [{"instrumentName": symbol, "side": "BUY", "qty": "0.2"}]})
    clock.advance(1)
    exchange.faults.hold_canceling_seconds = 1.0

    saved = json.loads(json.dumps(exchange.to_state()))
    market_copy = MarketModel.from_state(MarketConfig(seed=7), json.loads(json.dumps(market.to_state())))
    restored = SimExchange.from_state(exchange.config, market_copy, clock, saved)
    twin = restored.account_for_key(account.api_key)
    assert twin is not None and twin.api_secret == account.api_secret
    assert restored.faults.hold_canceling_seconds == 1.0
    assert restored.orders(twin) == exchange.orders(account)
    assert restored.positions(twin, {}) == exchange.positions(account, {})
    assert restored.account_summary(twin, {}) == exchange.account_summary(account, {})

    for _ in range(36):         # six minutes: a resting order at the touch fills with p = 0.8 a minute
        clock.advance(10)
        exchange.sync()
        restored.sync()
    assert restored.fills(twin) == exchange.fills(account)
    assert len(exchange.fills(account)) >= 2       # passive fills happened after the restore point
    assert restored.rfq_quotes_received(twin, {"requestId": rfq["requestId"]}) == \
        exchange.rfq_quotes_received(account, {"requestId": rfq["requestId"]})
    assert restored.rfq_list(restored.account_for_key(other.api_key), {}) == exchange.rfq_list(other, {})
