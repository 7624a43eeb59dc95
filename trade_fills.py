"""A trade's fills, read from our own order ledger: the only truth about its exposure and PnL.

Why this module exists: BEHAVIOUR.md 4.1 (incidents 4 and 33) rules that a leg's exposure is
its open fills minus its reducing fills (close, unwind, kill), as the ``OrderLedger`` recorded
them; account positions, ``upnl`` and pro-rating are never used. ``TradeFills`` is the one
place the lifecycle reads those fills, the times of the last ones and the orders still
working, so the rule is written once. The quantity helpers say when a sum of 0.01 lots is
zero, for every part of the lifecycle. ``FundingAttribution`` books the funding the exchange
paid or charged on our perpetual positions into the trades that held them (docs/PERPETUALS.md).
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from errors import TraderError
from order_ledger import Intent, OrderStatus
from seams import LifecycleLedger, PerpAccountClient

if TYPE_CHECKING:
    from coincall_payloads import FundingPayment
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


# ---------------------------------------------------------------------------------------------
# Funding of perpetual legs (issue 13, docs/PERPETUALS.md)
# ---------------------------------------------------------------------------------------------

FUNDING_HOURS_UTC = (0, 8, 16)
FUNDING_PERIOD_MS = 8 * 3600 * 1000
# A payment is read this long after its instant, so a record the exchange writes a little late
# is there; the window read around the instant is as wide on either side.
FUNDING_READ_DELAY_SECONDS = 60.0
FUNDING_WINDOW_MS = 10 * 60 * 1000
FUNDING_KEY = "funding"   # trade.metadata[FUNDING_KEY]: {"<symbol>@<instant ms>": amount booked}
FUNDING_CHECKED_KEY = "funding_checked_ms"


def funding_instants(after_ms: int, until_ms: int) -> list[int]:
    """The funding instants (00:00, 08:00, 16:00 UTC) in ``(after_ms, until_ms]``, oldest first."""
    first = (after_ms // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS
    return list(range(first, until_ms + 1, FUNDING_PERIOD_MS)) if first <= until_ms else []


class FundingAttribution:
    """Books each funding payment of a perpetual into the trades that held it at its instant.

    The exchange pays funding on the account's net position per symbol, at 00:00, 08:00 and
    16:00 UTC. After each instant (plus ``FUNDING_READ_DELAY_SECONDS``) the payments of every
    perp a trade holds are read once (``perp_funding_records`` around the instant) and split
    pro rata over the trades' signed quantities at the instant (our own fills up to it, from
    the ledger): a trade's share is its signed quantity over the payment's position, so a
    part of the position no trade holds (an external one) keeps its share of the payment.
    Each share is written into the trade's record (``metadata["funding"]``, keyed by symbol
    and instant) and into the leg's ``funding``; a key already there is never booked again,
    which makes the attribution idempotent across restarts. A failed read is retried at the
    next poll; nothing is guessed.
    """

    def __init__(self, client: PerpAccountClient, ledger: LifecycleLedger) -> None:
        self.client = client
        self.ledger = ledger

    def due(self, trade: TradeLifecycle, now: float) -> list[int]:
        """The instants this trade still has to check (after its opening, read delay passed)."""
        if not any(leg.is_perpetual for leg in trade.legs) or trade.opened_at is None:
            return []
        checked = int(trade.metadata.get(FUNDING_CHECKED_KEY) or int(float(trade.opened_at) * 1000))
        until = int((now - FUNDING_READ_DELAY_SECONDS) * 1000)
        if trade.closed_at is not None:
            until = min(until, int(float(trade.closed_at) * 1000))
        if trade.failed_at is not None:
            until = min(until, int(float(trade.failed_at) * 1000))
        return funding_instants(checked, until)

    def settled(self, trade: TradeLifecycle, now: float) -> bool:
        """True when ``due`` can never return an instant for this trade again: it has ended, and
        it holds no perp leg or its end is past the read delay (every instant up to its end was
        due by then, and ``due`` returning none means each was booked). The lifecycle skips such
        trades, so the check per poll does not grow with the trades of a long run."""
        if trade.is_active:
            return False
        if not any(leg.is_perpetual for leg in trade.legs):
            return True
        ended = trade.closed_at if trade.closed_at is not None else trade.failed_at
        return ended is not None and now - FUNDING_READ_DELAY_SECONDS >= float(ended)

    def held_at(self, trade: TradeLifecycle, leg_index: int, sign: int, instant_ms: int) -> float:
        """The leg's signed quantity at the instant: its open fills minus its reducing fills
        made by then (each order counted at its last fill's time)."""
        cutoff = instant_ms / 1000.0
        held = 0.0
        for order in self.ledger.orders(trade.id, leg_index):
            if order.filled_qty <= 0 or order.last_fill_at is None or float(order.last_fill_at) > cutoff:
                continue
            held += order.filled_qty if order.intent.family() is Intent.OPEN else -order.filled_qty
        return sign * clean_qty(held) if held > 0 else 0.0

    def attribute(self, trades: list[TradeLifecycle], now: float) -> list[tuple[TradeLifecycle, str, float]]:
        """Book every payment now due; returns (trade, key, amount) for each share booked."""
        wanted: dict[tuple[str, int], list[TradeLifecycle]] = {}
        for trade in trades:
            for instant in self.due(trade, now):
                for leg in trade.legs:
                    if not leg.is_perpetual:
                        continue
                    holders = wanted.setdefault((leg.symbol, instant), [])
                    if all(held is not trade for held in holders):
                        holders.append(trade)
        booked: list[tuple[TradeLifecycle, str, float]] = []
        failed: set[int] = set()
        for (symbol, instant), holders in sorted(wanted.items(), key=lambda item: item[0][1]):
            try:
                payments = self.client.perp_funding_records(symbol, start_ms=instant - FUNDING_WINDOW_MS,
                                                            end_ms=instant + FUNDING_WINDOW_MS)
            except (TraderError, OSError) as exc:
                logger.warning("funding records of %s at %d unavailable (%s): retried at the next poll",
                               symbol, instant, exc)
                failed.update(id(trade) for trade in holders)
                continue
            here = [p for p in payments if p.symbol == symbol and abs(p.time_ms - instant) <= FUNDING_WINDOW_MS]
            booked += self._split(symbol, instant, here, holders)
        for trade in trades:
            instants = self.due(trade, now)
            if instants and id(trade) not in failed:
                trade.metadata[FUNDING_CHECKED_KEY] = instants[-1]
        return booked

    def _split(self, symbol: str, instant: int, payments: list[FundingPayment],
               holders: list[TradeLifecycle]) -> list[tuple[TradeLifecycle, str, float]]:
        """Each payment over the holders pro rata by signed quantity: a trade's share of the fee is
        its signed quantity at the instant over the position the exchange paid on (a trade on
        the other side of the net position gets the opposite sign). When our trades together
        hold more than that position the shares are scaled down so no more than the payment
        is ever booked."""
        key = f"{symbol}@{instant}"
        held: dict[int, dict[int, float]] = {}
        for trade in holders:
            held[id(trade)] = {leg.index: self.held_at(trade, leg.index, leg.sign, instant)
                               for leg in trade.legs if leg.symbol == symbol}
        ours = math.fsum(qty for legs in held.values() for qty in legs.values())
        booked: list[tuple[TradeLifecycle, str, float]] = []
        for trade in holders:
            book = trade.metadata.setdefault(FUNDING_KEY, {})
            if key in book:
                continue
            amount = 0.0
            for payment in payments:
                position = payment.side.sign * float(payment.qty)
                if abs(position) < QTY_EPSILON:
                    continue
                scale = min(1.0, abs(position) / abs(ours)) if abs(ours) > QTY_EPSILON else 1.0
                for leg in trade.legs:
                    qty = held[id(trade)].get(leg.index, 0.0)
                    if leg.symbol != symbol or is_zero(qty):
                        continue
                    share = round(float(payment.fee) * qty / position * scale, 8)
                    leg.funding = round(leg.funding + share, 8)
                    amount += share
            book[key] = round(amount, 8)
            if amount:
                booked.append((trade, key, amount))
        return booked
