"""Expiry of the simulated exchange: 08:00 UTC cash settlement against the 30-minute index
average, delivery fees (none for dailies), state 10 for resting orders, exercise records,
the 15-minute halt and the settlement-price endpoints."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from clock import SimulatedClock
from simulator.errors import SimError
from simulator.exchange import ExchangeConfig, SimExchange
from simulator.market import MarketConfig, MarketModel

DAILY_DAY_START = datetime(2026, 3, 3, 7, 0, tzinfo=timezone.utc).timestamp()
EXPIRY_3MAR26 = int(datetime(2026, 3, 3, 8, 0, tzinfo=timezone.utc).timestamp() * 1000)
FRIDAY_START = datetime(2026, 3, 6, 7, 0, tzinfo=timezone.utc).timestamp()
EXPIRY_6MAR26 = int(datetime(2026, 3, 6, 8, 0, tzinfo=timezone.utc).timestamp() * 1000)
HALF_HOUR_MS = 30 * 60 * 1000


def build(start: float, flat_index: float | None = None, **overrides):
    overrides.setdefault("passive_fill_prob_per_min_at_touch", 0.0)
    clock = SimulatedClock(start=start, speed=0)
    market = MarketModel(MarketConfig(seed=7), clock.now_ms())
    if flat_index is not None:
        now = clock.now_ms()
        market.set_scripted_path([(now, flat_index), (now + 86_400_000, flat_index)])
    exchange = SimExchange(ExchangeConfig(**overrides), market, clock)
    return clock, market, exchange


def symbol_for(market, expiry: int, strike: float, kind: str) -> str:
    for instrument in market.instruments():
        if instrument.expiry_ms == expiry and instrument.strike == strike and instrument.option_type == kind:
            return instrument.symbol
    raise AssertionError(f"no {kind} {strike} for expiry {expiry}")


def test_daily_expiry_settles_at_intrinsic_without_fee_and_kills_orders():
    clock, market, exchange = build(DAILY_DAY_START, flat_index=92_000.0)
    account = exchange.default_account
    call = symbol_for(market, EXPIRY_3MAR26, 85_000, "C")
    put = symbol_for(market, EXPIRY_3MAR26, 88_000, "P")
    otm_daily = symbol_for(market, EXPIRY_3MAR26, 95_000, "C")
    exchange.set_position(account, call, 0.1, 6_000.0)
    exchange.set_position(account, put, -0.2, 50.0)
    ask = float(exchange.orderbook(None, {"symbol": otm_daily})["asks"][0]["price"])
    doomed = exchange.create_order(account, {"symbol": otm_daily, "qty": 0.1, "tradeSide": 2, "tradeType": 1,
                                             "price": ask + 20})   # an OTM offer the decaying book never reaches
    clock.advance(40 * 60)
    estimate = exchange.estimated_expiration_price(None, {"index": "BTCUSD", "endTime": str(EXPIRY_3MAR26)})
    assert estimate[0]["estimatedExpirationPrice"] == "92000"

    clock.set_time(EXPIRY_3MAR26 / 1000 + 1)
    exchange.sync()
    assert exchange.positions(account, {}) == []
    assert exchange.query_order(account, {"orderId": str(doomed)})["state"] == 10
    # call: (7000 - 6000) x 0.1 = +100; short OTM put keeps its premium: 50 x 0.2 = +10; dailies pay no fee
    assert exchange.cash_of(account) == pytest.approx(100_000 + 100 + 10)
    records = exchange.exercise_history(account, {"pageSize": "50"})
    assert records["hasNext"] is False and records["hasPrev"] is False
    by_symbol = {r["symbol"]: r for r in records["list"]}
    assert by_symbol[call] == {"symbol": call, "time": EXPIRY_3MAR26, "qty": 0.1, "tradeSide": 1,
                               "strike": 85_000.0, "exercisePrice": 92_000.0, "openCashFlow": -600.0,
                               "settlementCashFlow": 700.0, "netCashFlow": 100.0, "fees": 0.0}
    assert by_symbol[put]["tradeSide"] == 2 and by_symbol[put]["netCashFlow"] == pytest.approx(10.0)
    prices = exchange.delivery_prices(None, {"symbol": "BTCUSD"})
    assert prices == {"list": [{"date": EXPIRY_3MAR26, "delivery_price": "92000"}], "records_total": 1}
    with pytest.raises(SimError) as err:
        exchange.option_detail(None, {"symbol": call})
    assert err.value.code == 10574
    with pytest.raises(SimError) as err:
        exchange.create_order(account, {"symbol": call, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": 10})
    assert err.value.code == 10574
    assert all(i["expirationTimestamp"] != EXPIRY_3MAR26 for i in exchange.instruments(None, {"baseCurrency": "BTC"}))


def test_delivery_price_is_the_30_minute_index_average_and_weekly_pays_delivery_fee():
    clock, market, exchange = build(FRIDAY_START)
    account = exchange.default_account
    strikes = sorted(i.strike for i in market.instruments() if i.expiry_ms == EXPIRY_6MAR26)
    low_strike = strikes[0]
    call = symbol_for(market, EXPIRY_6MAR26, low_strike, "C")
    assert market.expiry_kind(EXPIRY_6MAR26) != "daily"
    exchange.set_position(account, call, 0.3, 1_000.0)
    clock.set_time(EXPIRY_6MAR26 / 1000 + 5)
    exchange.sync()
    delivery = market.index_average(EXPIRY_6MAR26 - HALF_HOUR_MS, EXPIRY_6MAR26)
    [record] = exchange.exercise_history(account, {})["list"]
    assert record["exercisePrice"] == pytest.approx(delivery)
    intrinsic = max(0.0, delivery - low_strike)
    assert intrinsic > 0
    fee = min(0.3 * delivery * 0.00015, 0.3 * intrinsic * 0.125)
    assert record["fees"] == pytest.approx(fee)
    assert exchange.cash_of(account) == pytest.approx(100_000 + (intrinsic - 1_000.0) * 0.3 - fee)
    assert record["netCashFlow"] == pytest.approx((intrinsic - 1_000.0) * 0.3 - fee)


def test_long_call_k80000_delivery_82000_gains_200_minus_fee():
    clock, market, exchange = build(FRIDAY_START, flat_index=82_000.0)
    account = exchange.default_account
    call = symbol_for(market, EXPIRY_6MAR26, 80_000, "C")
    exchange.set_position(account, call, 0.1, 0.0)
    clock.set_time(EXPIRY_6MAR26 / 1000)
    exchange.sync()
    fee = min(0.1 * 82_000 * 0.00015, 0.1 * 2_000 * 0.125)
    assert exchange.cash_of(account) == pytest.approx(100_000 + 200 - fee)
    assert exchange.positions(account, {}) == []


def test_trading_halts_15_minutes_before_expiry():
    clock, market, exchange = build(DAILY_DAY_START)
    account = exchange.default_account
    daily = symbol_for(market, EXPIRY_3MAR26, 95_000, "C")
    later = [i.symbol for i in market.instruments() if i.expiry_ms > EXPIRY_3MAR26][0]
    ask = float(exchange.orderbook(None, {"symbol": daily})["asks"][0]["price"])
    resting = exchange.create_order(account, {"symbol": daily, "qty": 0.1, "tradeSide": 2, "tradeType": 1,
                                              "price": ask + 20})
    clock.set_time(EXPIRY_3MAR26 / 1000 - 15 * 60)
    with pytest.raises(SimError) as err:
        exchange.create_order(account, {"symbol": daily, "qty": 0.1, "tradeSide": 2, "tradeType": 1,
                                        "price": ask + 20})
    assert err.value.code == 10620
    active = {i["symbolName"]: i["isActive"] for i in exchange.instruments(None, {"baseCurrency": "BTC"})}
    assert active[daily] is False and active[later] is True
    with pytest.raises(SimError) as err:
        exchange.rfq_create(account, {"legs": [{"instrumentName": daily, "side": "BUY", "qty": "1"}]})
    assert err.value.code == 10620
    assert exchange.cancel_order(account, {"orderId": resting}) == "success"   # cancels still work
