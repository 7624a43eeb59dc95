"""Every price of a hedge order's limit job honours the decision's mark-to-index gap.

``hedging.decide`` refuses a rebalance while the perpetual's mark is more than
``max_mark_index_gap`` from the index. It decides once; the job then requotes at 20 s
intervals, and each requote is priced afresh. With ``ExecutionParams.max_mark_index_gap``
the job re-applies the gap to every price: a mark that has left the index makes the leg
wait instead of buying at the dislocated touch.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from clock import SimulatedClock
from coincall_payloads import OptionRow, OrderBook, PerpOrder, PerpOrderState, PerpOrderType
from contracts import Side
from errors import ConfigError
from execution_job import LegTarget
from order_ledger import Intent, OrderLedger
from trade_execution import ExecutionParams, LimitFillManager

NOW = 1_772_431_200.0
PERP = "BTCUSD"
INDEX = 100_000.0


class DislocatingPerp:
    """``PriceSource``: the perp at the index, and from ``NOW + 15`` its mark and book 4.5 % above it."""

    def __init__(self, clock: SimulatedClock) -> None:
        self.clock = clock

    def _prices(self) -> tuple[float, float, float]:
        if self.clock.now() < NOW + 15:
            return INDEX, INDEX - 5, INDEX + 5
        return INDEX * 1.045, INDEX * 1.0445, INDEX * 1.046

    def quote(self, symbol: str, *, max_age: float = 30.0) -> OptionRow:
        mark, bid, ask = self._prices()
        return OptionRow(symbol=PERP, option_type="PERP", strike=0.0, expiry_ms=0, bid=bid, ask=ask, bid_size=1.0,
                         ask_size=1.0, mark=mark, mark_iv=0.0, bid_iv=0.0, ask_iv=0.0, delta=1.0, gamma=0.0,
                         vega=0.0, theta=0.0, rho=0.0, underlying_price=INDEX, as_of=self.clock.now())

    def order_book(self, symbol: str, *, max_age: float = 3.0) -> OrderBook:
        _, bid, ask = self._prices()
        return OrderBook(symbol=PERP, bids=((bid, 5.0),), asks=((ask, 5.0),), as_of=self.clock.now())

    def instrument(self, symbol: str):
        return SimpleNamespace(tick_size=0.5, expiry_ms=0, min_qty=0.001, is_active=True)


class NoOptionOrders:
    """The option half of the ledger's client: this test sends none."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("no option order in this test")

    create_order = cancel_order = query_order = order_history = _refuse


class RestingPerpExchange:
    """Perp orders that rest unfilled until cancelled; records every create's price."""

    def __init__(self) -> None:
        self.prices: list[float] = []
        self.orders: dict[int, tuple[int, str, Side, float, float, PerpOrderState]] = {}

    def perp_create_order(self, symbol, qty, side, client_order_id, *, order_type=PerpOrderType.LIMIT, price=None,
                          time_in_force="GTC", reduce_only=False):
        order_id = 7_000 + len(self.prices)
        self.prices.append(float(price))
        self.orders[order_id] = (client_order_id, symbol, Side.of(side), float(qty), float(price),
                                 PerpOrderState.NEW)
        return order_id

    def perp_cancel_order(self, *, order_id=None, client_order_id=None):
        coid, symbol, side, qty, price, _ = self.orders[order_id]
        self.orders[order_id] = (coid, symbol, side, qty, price, PerpOrderState.CANCELED)

    def perp_order(self, *, order_id=None, client_order_id=None):
        if order_id is None:
            order_id = next(key for key, value in self.orders.items() if value[0] == client_order_id)
        coid, symbol, side, qty, price, state = self.orders[order_id]
        return PerpOrder(order_id=order_id, client_order_id=coid, symbol=symbol, side=side,
                         order_type=PerpOrderType.LIMIT, qty=qty, filled_qty=0.0, remaining_qty=qty, price=price,
                         avg_price=None, fee=0.0, state=state, reduce_only=False, time_in_force="GTC",
                         leverage=None, create_time_ms=None, update_time_ms=None)

    def perp_order_history(self, *, start_ms=None, end_ms=None, **filters):
        return []

    def perp_positions(self):
        return []


def _buy_the_hedge(gap: float | None) -> list[float]:
    clock = SimulatedClock(start=NOW, speed=0)
    exchange = RestingPerpExchange()
    ledger = OrderLedger(NoOptionOrders(), clock, perp_client=exchange)
    params = ExecutionParams(fill_timeout_seconds=20.0, aggressive_buffer_pct=0.0, max_requote_rounds=3,
                             min_price_pct_of_fair=0.998, max_price_pct_of_fair=1.002, grace_seconds=5.0,
                             max_mark_index_gap=gap)
    job = LimitFillManager(ledger, DislocatingPerp(clock), clock).start(
        SimpleNamespace(id="T000000011", seq=11), [LegTarget(2, PERP, Side.BUY, 0.5, 0.001)], Intent.OPEN, params,
        best_effort=True)
    while not job.done and clock.now() < NOW + 90:
        job.advance(clock.now())
        clock.advance(2.0)
    return exchange.prices


def test_no_requote_is_priced_while_the_mark_is_beyond_the_gap():
    prices = _buy_the_hedge(gap=0.01)
    assert prices and all(price <= INDEX * 1.01 for price in prices), prices


def test_without_the_gap_the_requotes_follow_the_dislocated_mark():
    """The control: the same job without the gap buys 4.6 % over the index (what the gap prevents)."""
    assert any(price > INDEX * 1.04 for price in _buy_the_hedge(gap=None))


@pytest.mark.parametrize("gap", [0.0, 1.0, -0.01, float("nan")])
def test_the_gap_must_be_a_fraction_of_the_index(gap):
    with pytest.raises(ConfigError, match="ExecutionParams.max_mark_index_gap"):
        ExecutionParams(max_mark_index_gap=gap)


def test_a_hedge_orders_job_carries_its_configurations_gap():
    from hedging import delta_hedge
    from trade_lifecycle import hedge_execution_params

    config = delta_hedge(band=0.05, max_hedge_qty=1.0).bind("BTC")
    assert hedge_execution_params(config).max_mark_index_gap == config.max_mark_index_gap
