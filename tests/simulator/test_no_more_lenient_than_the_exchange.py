"""The simulator is no more lenient than the exchange docs/API.md describes (audit of 2026-12-07).

Wherever the simulator accepts or answers what the real exchange would not, a daemon bug hides
in every test and backtest. Each test states the API.md line it holds the simulator to.
Handlers are called directly (as tests/simulator/test_exchange_orders.py does), on a frozen clock.
"""
from __future__ import annotations

import pytest

from simulator.errors import SimError
from tests.simulator.test_exchange_orders import env  # noqa: F401  (the fixture: a frozen exchange and a weekly call)


def _top(exchange, symbol):
    book = exchange.orderbook(None, {"symbol": symbol})
    bids = [(float(level["price"]), float(level["size"])) for level in book["bids"]]
    asks = [(float(level["price"]), float(level["size"])) for level in book["asks"]]
    return bids, asks


# --------------------------------------------------------------------------------------------
# 1. Option fill history: API.md 8.6 lists no clientOrderId on a fill row. The simulator used
#    to add it, so close_evidence's test "a fill of our prefix" only ever ran against a field
#    production never sends (it now joins fills to the order history by orderId).
# --------------------------------------------------------------------------------------------

def test_option_trade_history_rows_carry_no_client_order_id(env):
    """API.md 8.6: Fills: GET /open/option/trade/history/v1 -> {list:[{id, optionId, symbol,
    displayName, tradeSide, tradeType, price, qty, iv, markPrice, indexPrice, orderId, tradeId,
    fee, time, reduceOnly, isTaker (0/1), mmp}], hasNext, hasPre}  -- no clientOrderId."""
    clock, market, exchange, account, symbol = env
    _, asks = _top(exchange, symbol)
    ask_price, _ = asks[0]
    exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                    "price": ask_price, "clientOrderId": 899_000_123_456_789})
    rows = exchange.trade_history(account, {"pageSize": "20"})["list"]
    assert rows, "the taker buy should have filled"
    leaked = [row["clientOrderId"] for row in rows if row.get("clientOrderId") is not None]
    assert not leaked, f"option fill rows carry clientOrderId {leaked}: the real trade history has none"


# --------------------------------------------------------------------------------------------
# 2. Quantities with float residue: API.md 11.15 says such a size is not valid and that every
#    quantity must be snapped before it is sent; the simulator used to round it silently.
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("qty", [0.29999999999999993, 0.30000000000000004, 0.1000000001])
def test_option_qty_with_float_residue_is_refused(env, qty):
    """API.md 11.15: "A quantity carrying float residue (0.5999999…) is not a valid size
    (another exchange refused such sizes as invalid parameters): every quantity is snapped to
    the 0.01 lot before it is sent."  API.md 8.1: qty "BTC, a multiple of 0.01"."""
    clock, market, exchange, account, symbol = env
    bids, _ = _top(exchange, symbol)
    price = bids[0][0] - 10          # rests, never trades
    with pytest.raises(SimError):
        exchange.create_order(account, {"symbol": symbol, "qty": qty, "tradeSide": 1, "tradeType": 1,
                                        "price": price, "clientOrderId": 899_000_000_000_001})


def test_perp_qty_with_float_residue_is_refused(env):
    """API.md 14.3: BTCUSD "minimum and step 0.001 (qtyDecimal 3)"; 11.15 as above."""
    clock, market, exchange, account, symbol = env
    mark = exchange.perp_mark("BTCUSD")
    price = round(mark * 0.98, 1)
    with pytest.raises(SimError):
        exchange.futures_create_order(account, {"symbol": "BTCUSD", "qty": 0.0030000000001, "tradeSide": 1,
                                                "tradeType": 1, "price": price,
                                                "clientOrderId": 899_000_000_000_002})


# --------------------------------------------------------------------------------------------
# 3. tradeType is a required parameter of an option create (API.md 8.1), as on the futures
#    route; the simulator used to default it to LIMIT.
# --------------------------------------------------------------------------------------------

def test_option_create_without_trade_type_is_refused(env):
    """API.md 8.1 table: "| `tradeType` | int | yes | 1 LIMIT, 3 POST_ONLY ... |"."""
    clock, market, exchange, account, symbol = env
    bids, _ = _top(exchange, symbol)
    with pytest.raises(SimError):
        exchange.create_order(account, {"symbol": symbol, "qty": 0.1, "tradeSide": 1,
                                        "price": bids[0][0] - 10, "clientOrderId": 899_000_000_000_003})
