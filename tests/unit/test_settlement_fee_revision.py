"""A settlement booked before the exchange wrote its exercise record takes the record's fee later.

The record is written hours after the expiry (the exchange's own example is stamped about 9.5 h
after 08:00), so the read made when the delivery price appears often finds nothing and the
delivery fee is estimated (flag ``fee_estimated``). That was a verdict on missing data that
nothing ever revised (audit of 2026-12-07): now the record is read again every
``EXERCISE_RETRY_SECONDS`` for ``EXERCISE_WINDOW_SECONDS``. A daily expiry pays no delivery fee,
so its record is not asked for.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from contracts import Contract
from settlement import EXERCISE_RETRY_SECONDS, DeliveryWatch, Settler
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState

WEEKLY = datetime(2026, 3, 6, 8, 0, tzinfo=timezone.utc)       # a Friday: it pays a delivery fee
DAILY = datetime(2026, 3, 4, 8, 0, tzinfo=timezone.utc)        # a Wednesday daily: it pays none


class Exchange:
    """The delivery price is listed at once; the exercise record only once ``records`` has it."""

    def __init__(self, expiry_ms: int) -> None:
        self.expiry_ms = expiry_ms
        self.records: list[dict] = []
        self.exercise_reads = 0

    def delivery_prices(self, symbol: str = "BTCUSD") -> dict:
        return {"list": [{"date": self.expiry_ms, "delivery_price": "82000"}], "records_total": 1}

    def estimated_expiration_price(self, end_time_ms: int, index: str = "BTCUSD") -> list:
        return []

    def exercise_history(self, **filters: object) -> dict:
        self.exercise_reads += 1
        return {"list": list(self.records), "hasNext": False, "hasPrev": False}


def long_call(expiry: datetime) -> tuple[TradeLifecycle, TradeLeg, str]:
    symbol = f"BTCUSD-{expiry.day}MAR26-80000-C"
    contract = Contract(symbol=symbol, underlying="BTC", option_type="C", strike=80_000.0,
                        expiry_ms=int(expiry.timestamp() * 1000))
    leg = TradeLeg(index=0, contract=contract, side=1, qty=0.5)
    leg.open_filled, leg.open_vwap = 0.5, 500.0
    return TradeLifecycle(id="T000000001", seq=1, strategy="s", state=TradeState.OPEN, legs=[leg]), leg, symbol


def settled(expiry: datetime) -> tuple[TradeLifecycle, TradeLeg, str, Exchange, Settler, float]:
    """A long call of ``expiry`` settled a minute after it (delivery price listed, no record yet)."""
    trade, leg, symbol = long_call(expiry)
    exchange = Exchange(leg.contract.expiry_ms)
    settler = Settler(exchange, alerts=None)
    settled_at = expiry.timestamp() + 60
    assert settler.settle_leg(trade, leg, DeliveryWatch(), settled_at)
    return trade, leg, symbol, exchange, settler, settled_at


def revise_for(settler: Settler, leg: TradeLeg, start: float, minutes: int) -> None:
    for minute in range(1, minutes + 1):
        revised = settler.revise_leg(leg, start + 60 * minute)
        if revised is not None:
            leg.settlement = revised


def test_an_exercise_record_written_after_the_settlement_replaces_the_estimated_fee_and_cash():
    trade, leg, symbol, exchange, settler, settled_at = settled(WEEKLY)
    assert leg.settlement is not None and leg.settlement.fee_estimated and "fee_estimated" in trade.flags

    exchange.records.append({"symbol": symbol, "time": leg.contract.expiry_ms + 600_000, "qty": 0.5,
                             "tradeSide": 1, "strike": 80_000.0, "exercisePrice": 82_000.0,
                             "openCashFlow": -250.0, "settlementCashFlow": 999.5, "netCashFlow": 749.5,
                             "fees": 4.80})
    reads = exchange.exercise_reads
    revise_for(settler, leg, settled_at, 120)

    assert not leg.settlement.fee_estimated
    assert leg.settlement.fee == pytest.approx(4.80) and leg.settlement.cash == pytest.approx(999.5)
    assert exchange.exercise_reads - reads <= 120 * 60 / EXERCISE_RETRY_SECONDS + 1   # throttled, not every tick


def test_a_record_of_another_quantity_is_never_taken():
    trade, leg, symbol, exchange, settler, settled_at = settled(WEEKLY)
    exchange.records.append({"symbol": symbol, "time": leg.contract.expiry_ms, "qty": 0.7, "tradeSide": 1,
                             "strike": 80_000.0, "exercisePrice": 82_000.0, "settlementCashFlow": 1400.0,
                             "fees": 6.0})

    revise_for(settler, leg, settled_at, 60)

    assert leg.settlement.fee_estimated                                    # no pro-rating of somebody's record


def test_a_daily_expiry_pays_no_delivery_fee_and_its_record_is_not_asked_again():
    _trade, leg, _symbol, exchange, settler, settled_at = settled(DAILY)
    assert leg.settlement.fee == 0.0
    reads = exchange.exercise_reads

    revise_for(settler, leg, settled_at, 120)

    assert exchange.exercise_reads == reads
