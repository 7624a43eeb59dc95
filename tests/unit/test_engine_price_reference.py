"""An order engine's price reference when the chain row lacks its mark IV (``price_sanity.band_of``).

The limit engine checks every touch against the leg's band. With the every-vol band a
missing IV used to give (about [0, index] for a call) a stray ask at 50 times the mark was
bought at ask plus the aggressive buffer; judged at the vol the mark implies, that ask is
an insane side and nothing is sent from it. The last test checks that the guard is no
stricter than it must be: a sane ask on the same row is traded.
"""
from __future__ import annotations

from types import SimpleNamespace

from clock import SimulatedClock
from coincall_payloads import OrderBook, option_row_from_api
from contracts import Side
from execution_job import LegTarget
from order_ledger import Intent, OrderLedger
from trade_execution import ExecutionParams, LimitFillManager

NOW = 1_772_431_200.0
SYMBOL = "BTCUSD-9MAR26-120000-C"
EXPIRY_MS = int((NOW + 7 * 86_400) * 1000)
MARK = 100.0


class RowWithoutIv:
    """``PriceSource``: a chain row as the exchange sends it but without ``markIv``, and one book."""

    def __init__(self, clock: SimulatedClock, ask: float) -> None:
        self.clock = clock
        self.ask = ask

    def quote(self, symbol: str, *, max_age: float = 30.0):
        raw = {"symbol": SYMBOL, "index": "BTCUSD", "endTime": EXPIRY_MS, "strike": 120_000, "type": 1,
               "markPrice": str(MARK), "bid": "90", "bidSize": "1", "ask": str(self.ask), "askSize": "1",
               "underlyingPrice": "100000", "delta": "0.05"}
        return option_row_from_api(raw, as_of=self.clock.now(), expiry_hint=EXPIRY_MS, index_name="BTCUSD")

    def order_book(self, symbol: str, *, max_age: float = 3.0) -> OrderBook:
        return OrderBook(symbol=symbol, bids=((90.0, 1.0),), asks=((self.ask, 1.0),), as_of=self.clock.now())

    def instrument(self, symbol: str):
        return SimpleNamespace(tick_size=1.0, expiry_ms=EXPIRY_MS, min_qty=0.01, is_active=True)


class RecordingExchange:
    """The order calls the ledger makes; every create rests unfilled."""

    def __init__(self) -> None:
        self.prices: list[float] = []

    def create_order(self, symbol, qty, side, price, client_order_id, *, reduce_only=False, time_in_force="GTC",
                     trade_type=1):
        self.prices.append(float(price))
        return 5_000 + len(self.prices)

    def cancel_order(self, order_id=None, client_order_id=None):
        return None

    def query_order(self, order_id=None, client_order_id=None):
        return {"orderId": order_id, "clientOrderId": client_order_id, "state": 0, "fillQty": "0", "avgPrice": "0",
                "qty": "1", "price": "1", "symbol": SYMBOL, "tradeSide": 1}

    def order_history(self, **filters):
        return []


def _buy_one(ask: float) -> list[float]:
    clock = SimulatedClock(start=NOW, speed=0)
    exchange = RecordingExchange()
    manager = LimitFillManager(OrderLedger(exchange, clock), RowWithoutIv(clock, ask), clock)
    job = manager.start(SimpleNamespace(id="T000000007", seq=7), [LegTarget(0, SYMBOL, Side.BUY, 1.0)], Intent.OPEN,
                        ExecutionParams())
    for _ in range(3):
        job.advance(clock.now())
        clock.advance(1.0)
    return exchange.prices


def test_no_buy_from_an_ask_at_fifty_times_the_mark_of_a_row_without_mark_iv():
    assert [price for price in _buy_one(ask=MARK * 50) if price > 3 * MARK] == []


def test_a_sane_ask_on_a_row_without_mark_iv_is_still_traded():
    prices = _buy_one(ask=110.0)
    assert prices and all(price <= 3 * MARK for price in prices)
