"""A fill first read from an answer without its ``fee`` takes the fee a later answer carries.

Fees are cumulative per order, like the fill; the ledger used to adopt the fee only together
with a fill that grew, so a FILLED answer without ``fee`` (absent or null) left the order's fee
at 0 for good, and the trade's realized PnL overstated by it (audit of 2026-12-07).
"""
from __future__ import annotations

import pytest

from clock import SimulatedClock
from order_ledger import Intent, OrderLedger, OrderStatus
from tests.unit.test_ledger_reversible import FILLED, T0, Exchange, Store, place


def filled_without_fee() -> tuple[SimulatedClock, OrderLedger, Exchange, object]:
    clock = SimulatedClock(start=T0, speed=0)
    exchange = Exchange()
    ledger = OrderLedger(exchange, clock, store=Store())
    order = place(ledger)
    row = exchange.orders[order.client_order_id]
    row.update(fillQty=0.1, avgPrice=100.0, state=FILLED, updateTime=int(T0 * 1000))
    del row["fee"]
    clock.advance(5)
    ledger.poll(order)
    return clock, ledger, exchange, order


def test_a_fee_that_comes_after_the_fill_is_adopted():
    clock, ledger, exchange, order = filled_without_fee()
    assert order.status is OrderStatus.FILLED and order.filled_qty == pytest.approx(0.1) and not order.fee

    exchange.orders[order.client_order_id]["fee"] = 4.25
    clock.advance(5)
    assert ledger.recheck_final(order) == 0.0               # no new fill, only the fee

    assert ledger.leg_fill(order.trade_id, 0, Intent.OPEN)[2] == pytest.approx(4.25)


def test_a_smaller_or_missing_fee_never_lowers_the_recorded_one():
    clock, ledger, exchange, order = filled_without_fee()
    row = exchange.orders[order.client_order_id]
    row["fee"] = 4.25
    clock.advance(5)
    ledger.recheck_final(order)
    for later in (1.0, None):
        if later is None:
            del row["fee"]
        else:
            row["fee"] = later
        clock.advance(5)
        ledger.recheck_final(order)
        assert order.fee == pytest.approx(4.25)
