"""A trade's fills, read from our own order ledger: the only truth about its exposure and PnL.

Why this module exists: BEHAVIOUR.md 4.1 (incidents 4 and 33) rules that a leg's exposure is
its open fills minus its reducing fills (close, unwind, kill), as the ``OrderLedger`` recorded
them; account positions, ``upnl`` and pro-rating are never used. ``TradeFills`` is the one
place the lifecycle reads those fills, the times of the last ones and the orders still
working, so the rule is written once. The quantity helpers say when a sum of 0.01 lots is
zero, for every part of the lifecycle.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from order_ledger import Intent, OrderStatus
from seams import LifecycleLedger

if TYPE_CHECKING:
    from trade_lifecycle import TradeLifecycle

logger = logging.getLogger(__name__)

QTY_EPSILON = 1e-9               # below this a quantity is zero (fills are 0.01 lots)
REDUCING_FAMILIES = (Intent.CLOSE, Intent.UNWIND, Intent.KILL)


def is_zero(qty: float) -> bool:
    return abs(qty) < QTY_EPSILON


def clean_qty(qty: float) -> float:
    """Sum of 0.01 lots without float residue; never negative."""
    value = round(float(qty), 8)
    return 0.0 if value < QTY_EPSILON else value


class TradeFills:
    """What the ledger says about one trade: its legs' fills, the time of its last fill, whether
    it ever sent an order, and the orders a restart left without a job."""

    def __init__(self, ledger: LifecycleLedger) -> None:
        self.ledger = ledger

    def sync(self, trade: TradeLifecycle) -> None:
        """Legs' fills from the ledger: open family, and close + unwind + kill together."""
        for leg in trade.legs:
            qty, vwap, fees = self.ledger.leg_fill(trade.id, leg.index, Intent.OPEN)
            leg.open_filled, leg.open_vwap, leg.open_fees = clean_qty(qty), float(vwap or 0.0), float(fees or 0.0)
            total_qty = total_value = total_fees = 0.0
            for family in REDUCING_FAMILIES:
                qty, vwap, fees = self.ledger.leg_fill(trade.id, leg.index, family)
                total_qty += qty
                total_value += qty * (vwap or 0.0)
                total_fees += fees or 0.0
            leg.close_filled = clean_qty(total_qty)
            leg.close_vwap = total_value / total_qty if total_qty > QTY_EPSILON else 0.0
            leg.close_fees = total_fees
        trade.fees_paid = trade.total_fees()

    def last_fill_time(self, trade: TradeLifecycle, family: Intent, default: float) -> float:
        """When the latest fill of ``family`` happened (the exchange's time when known); ``default`` if none."""
        try:
            times = [float(o.last_fill_at or o.updated_at)
                     for o in self.ledger.orders(trade.id, family=family)
                     if float(o.filled_qty) > 0 and o.updated_at]
        except Exception:  # noqa: BLE001
            logger.exception("trade %s: reading fill times failed", trade.id)
            times = []
        return max(times) if times else default

    def orders_placed(self, trade: TradeLifecycle) -> bool:
        """Whether any order of the trade may have reached the exchange (an open that failed then alerts)."""
        try:
            return any(o.order_id is not None or str(o.status).endswith("UNKNOWN")
                       for o in self.ledger.orders(trade.id))
        except Exception:  # noqa: BLE001
            return True

    def resolve_stray_orders(self, trade: TradeLifecycle) -> bool:
        """Non-final orders with no job (left by a restart): make them final before a new round.

        A working order (LIVE/PARTIAL) is cancelled; anything else (cancel requested, unknown,
        recorded but maybe unsent) is polled until the exchange gives its final state. True
        while any remains, so no new order goes out on a leg that still has one.
        """
        try:
            live = list(self.ledger.live_orders(trade.id))
        except Exception:  # noqa: BLE001
            logger.exception("trade %s: reading live orders failed", trade.id)
            return True
        for order in live:
            try:
                if order.status in (OrderStatus.LIVE, OrderStatus.PARTIAL):
                    self.ledger.cancel(order)
                else:
                    self.ledger.poll(order)
            except Exception:  # noqa: BLE001 - polled again next tick
                logger.exception("trade %s: polling stray order %s failed", trade.id, order.client_order_id)
        if live:
            self.sync(trade)
        return bool(live)
