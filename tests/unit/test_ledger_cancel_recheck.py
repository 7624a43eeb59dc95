"""A cancel that did not take is sent again (``OrderLedger._status_for``, CANCEL_RECHECK_SECONDS).

A cancel answered "not found" for an order that is in fact still working (the exchange's
lookups lag fresh orders, incident 38) was taken as a cancel: the order was marked
CANCEL_REQUESTED and never cancelled again. It kept resting on the book (and could keep
filling after a kill), and the job and the trade could never end while it did. Now an
order still shown working CANCEL_RECHECK_SECONDS after its cancel, or after a restart, is
working again and is cancelled again.
"""
from __future__ import annotations

from clock import SimulatedClock
from errors import ExchangeError
from order_ledger import CANCEL_RECHECK_SECONDS, Intent, OrderLedger, OrderStatus
from execution_job import LegTarget
from trade_execution import ExecutionParams, LimitFillManager
from multileg_orderbook import SmartExecConfig, SmartOrderbookExecutor
from trade_fills import TradeFills
from tests.unit.engine_fakes import NOW, TRADE, Exchange, Market, sym, LIVE


class LaggingCancelExchange(Exchange):
    """The first cancel of each order is answered 10584 (a lookup that lags a fresh order);
    the order stays live. Later cancels work."""

    def __init__(self, clock):
        super().__init__(clock)
        self.lagged = set()

    def cancel_order(self, order_id=None, client_order_id=None):
        if order_id not in self.lagged:
            self.lagged.add(order_id)
            self.cancels.append(order_id)
            raise ExchangeError(10584, "order does not exist", "POST cancel")
        return super().cancel_order(order_id=order_id)


def _rig():
    clock = SimulatedClock(start=NOW, speed=0)
    market = Market(clock)
    exchange = LaggingCancelExchange(clock)
    ledger = OrderLedger(exchange, clock)
    s = sym(100000)
    market.set(s, mark=1000.0, bids=((990.0, 5.0),), asks=((1010.0, 5.0),))
    return clock, market, exchange, ledger, s


def test_a_limit_job_stopped_after_a_lagged_cancel_answer_cancels_the_order_again():
    clock, market, exchange, ledger, s = _rig()
    manager = LimitFillManager(ledger, market, clock)
    job = manager.start(TRADE, [LegTarget(0, s, 1, 1.0)], Intent.OPEN, ExecutionParams.phased())
    job.advance(clock.now())
    assert len(exchange.creates) == 1
    order_id = exchange.creates[0]["order_id"]
    clock.advance(1.0)
    job.request_stop("exit decided")          # e.g. kill / stop right after the send
    for _ in range(600):                       # ten minutes of ticks
        job.advance(clock.now())
        clock.advance(1.0)
    row = exchange.rows[order_id]
    # The order is still working on the exchange, the ledger believes a cancel is pending,
    # and no second cancel was ever sent: the job never ends.
    assert row["state"] != LIVE and job.done, (
        f"exchange state {row['state']} (0=live), ledger {ledger.get(exchange.creates[0]['coid']).status}, "
        f"cancels sent {exchange.cancels}, job done {job.done}")


def test_a_smart_reprice_after_a_lagged_cancel_answer_cancels_again_and_ends():
    clock, market, exchange, ledger, s = _rig()
    executor = SmartOrderbookExecutor(ledger, market, clock)
    config = SmartExecConfig(chunk_count=1, time_per_chunk_seconds=60.0, reprice_interval_seconds=10.0)
    job = executor.start(TRADE, [LegTarget(0, s, 1, 0.5)], Intent.OPEN, config)
    job.advance(clock.now())
    assert len(exchange.creates) == 1
    order_id = exchange.creates[0]["order_id"]
    # The market moves: the passive buy wants a reprice after 10 s.
    market.set(s, mark=1000.0, bids=((995.0, 5.0),), asks=((1010.0, 5.0),))
    for _ in range(1800):
        clock.advance(1.0)
        job.advance(clock.now())
    row = exchange.rows[order_id]
    assert row["state"] != LIVE and job.done, (
        f"exchange state {row['state']} (0=live), ledger {ledger.get(exchange.creates[0]['coid']).status}, "
        f"cancels sent {exchange.cancels}, creates {len(exchange.creates)}, job done {job.done}, phase {job.phase}")


class _Trade:
    id = TRADE.id
    legs = ()

    def total_fees(self):
        return 0.0


def test_after_a_restart_a_cancel_requested_order_still_working_is_cancelled_again():
    """After a restart the stray-order handling cancels a CANCEL_REQUESTED order the exchange
    still shows working (before, it only polled it, and the trade never ended)."""
    clock, market, exchange, ledger, s = _rig()
    order = ledger.place(trade_id=TRADE.id, trade_seq=TRADE.seq, leg_index=0, intent=Intent.OPEN, symbol=s,
                         side=1, qty=1.0, price=1000.0, tick_size=1.0)
    clock.advance(1.0)
    ledger.cancel(order)                        # answered 10584: the lookup lags the fresh order
    assert order.status is OrderStatus.CANCEL_REQUESTED
    # restart: a new ledger restores the record
    ledger2 = OrderLedger(exchange, clock)
    ledger2.restore([order.to_record()])
    fills = TradeFills(ledger2)
    for _ in range(120):
        clock.advance(5.0)
        fills.resolve_stray_orders(_Trade())
    row = exchange.rows[order.order_id]
    assert row["state"] != LIVE, (f"after 10 minutes of ticks the order is still working on the exchange "
                                  f"(state {row['state']}), ledger {ledger2.get(order.client_order_id).status}, "
                                  f"cancels sent {len(exchange.cancels)}")


def test_a_cancel_is_not_sent_again_before_the_recheck_interval():
    """Within CANCEL_RECHECK_SECONDS a working view is the exchange catching up: no second cancel."""
    clock, market, exchange, ledger, s = _rig()
    order = ledger.place(trade_id=TRADE.id, trade_seq=TRADE.seq, leg_index=0, intent=Intent.OPEN, symbol=s,
                         side=1, qty=1.0, price=1000.0, tick_size=1.0)
    ledger.cancel(order)
    clock.advance(CANCEL_RECHECK_SECONDS - 1.0)
    ledger.poll(order)
    assert order.status is OrderStatus.CANCEL_REQUESTED
    clock.advance(2.0)
    ledger.poll(order)
    assert order.status is OrderStatus.LIVE and len(exchange.cancels) == 1
    ledger.cancel(order)
    ledger.poll(order)
    assert exchange.rows[order.order_id]["state"] != LIVE and order.status.is_final
