"""Closes made outside the daemon: booked on evidence, reversed when booked without (RECOVERY.md S3, X1).

Why this module exists: somebody may close part of our position on the exchange (by hand, a
liquidation). The reconciler finds it on fills that are not ours (S3) and the lifecycle books
it here: the leg's ``external_qty`` and the average price of those fills, one CRITICAL alert.
Older versions also booked such closes when a position merely went missing, at an estimated
price (``pnl_estimated``); when the position shows again, the close is un-booked here (X1) and
the trade is managed again. A close of a perpetual leg booked on evidence is reversible the
same way (``external_close_perp``): one net position per symbol holds every fill of the
account, so a foreign fill there proves less than on an option, and a position that shows
again exactly as the close took it away is the trade's again. These are bookkeeping rules on the trade record; what the trade's
state becomes afterwards is decided by the lifecycle manager, which owns the state machine.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable

from alerts import send_alert
from contracts import is_perpetual_symbol
from seams import AlertSender
from trade_fills import QTY_EPSILON, clean_qty, is_zero
from trade_recorder import TradeRecorder

if TYPE_CHECKING:
    from trade_lifecycle import TradeLeg, TradeLifecycle

logger = logging.getLogger(__name__)

EXIT_REASON_EXTERNAL = "external_close"
FLAG_PNL_ESTIMATED = "pnl_estimated"     # written by older versions only: an external close with no fill
FLAG_EXTERNAL_REVERSED = "external_close_reversed"
FLAG_PERP_EVIDENCE = "external_close_perp"   # a perp leg closed outside the daemon, booked on its fills
# An external close an older version booked without evidence is reversible this long (RECOVERY.md X1).
REVERSAL_LOOKBACK_SECONDS = 7 * 24 * 3600.0
# Where a trade's metadata keeps its reversals: the latest one as it was ("legs", "was", ...) and,
# under ``REVERSED_TOTAL_KEY``, the quantity every reversal so far gave back, per symbol.
REVERSED_METADATA_KEY = "external_close_reversed"
REVERSED_TOTAL_KEY = "legs_total"


def reversed_quantities(record: object) -> dict[str, float]:
    """Per symbol, the quantity (unsigned) every reversal of a trade's external closes gave back.

    Why: the fills a reversed booking used are not evidence again (RECOVERY.md X1), however
    many times the trade was booked and reversed, so ``close_evidence`` discounts the sum.
    ``record`` is ``metadata["external_close_reversed"]``. A record written before the running
    total existed holds one reversal only (``legs``, signed): that one is the total.
    """
    if not isinstance(record, dict):
        return {}
    quantities = record.get(REVERSED_TOTAL_KEY)
    if not isinstance(quantities, dict):
        quantities = record.get("legs")
    if not isinstance(quantities, dict):
        return {}
    return {str(symbol): abs(float(qty)) for symbol, qty in quantities.items()}


def booked_on_perp_evidence(trade: TradeLifecycle) -> bool:
    """A trade ended ``external_close`` whose only externally closed legs are perpetuals (booked on fills)."""
    if trade.is_active or trade.exit_reason != EXIT_REASON_EXTERNAL or FLAG_PERP_EVIDENCE not in trade.flags:
        return False
    closed = [leg for leg in trade.legs if leg.external_qty > QTY_EPSILON]
    return bool(closed) and all(is_perpetual_symbol(leg.symbol) for leg in closed)


def booked_without_evidence(trade: TradeLifecycle) -> bool:
    """A trade whose external close is undone when its positions show again (docs/RECOVERY.md X1).

    An older version's close with no fill to prove it (``pnl_estimated``), or a perp close
    booked on fills (``booked_on_perp_evidence``). The name is kept from when only the first
    existed (``trade_lifecycle`` calls it).
    """
    estimated = not trade.is_active and trade.exit_reason == EXIT_REASON_EXTERNAL and FLAG_PNL_ESTIMATED in trade.flags
    return estimated or booked_on_perp_evidence(trade)


def ended_within_lookback(trade: TradeLifecycle, now: float) -> bool:
    """The trade ended no longer than ``REVERSAL_LOOKBACK_SECONDS`` ago (an external close is
    reversible that long)."""
    ended = trade.closed_at if trade.closed_at is not None else trade.failed_at
    return ended is not None and now - float(ended) <= REVERSAL_LOOKBACK_SECONDS


class ExternalCloses:
    """Books closes made outside the daemon on a trade's legs, and un-books those made without evidence."""

    def __init__(self, *, recorder: TradeRecorder, alerts: AlertSender | None) -> None:
        self.recorder = recorder
        self.alerts = alerts

    def book(self, trade: TradeLifecycle, leg: TradeLeg, qty: float, price: float, detail: str) -> bool:
        """Reduce ``leg`` by ``qty`` (never more than it holds) closed at ``price``; persist, then alert.

        ``price`` is the average of the fills, not ours, that closed it. False when the leg
        holds nothing more to book.
        """
        qty = min(clean_qty(qty), leg.net_qty)
        if is_zero(qty):
            return False
        total = leg.external_qty + qty
        leg.external_price = (leg.external_price * leg.external_qty + price * qty) / total
        leg.external_qty = clean_qty(total)
        if is_perpetual_symbol(leg.symbol) and FLAG_PERP_EVIDENCE not in trade.flags:
            trade.flags.append(FLAG_PERP_EVIDENCE)
        self.recorder.persist(trade, "external_close", leg=leg.index, qty=qty, price=price)
        send_alert(self.alerts, logger, "CRITICAL", "external_close",
                   f"trade {trade.id} ({trade.strategy}): {qty:g} {leg.symbol} closed outside the daemon "
                   f"at {price:g} (fills that are not ours); {detail}",
                   trade_id=trade.id, symbol=leg.symbol, qty=qty, price=price)
        return True

    @staticmethod
    def reversible(trades: Iterable[TradeLifecycle], now: float) -> list[TradeLifecycle]:
        """Of ``trades``, those whose external close is reversible (``booked_without_evidence``),
        ended recently (``REVERSAL_LOOKBACK_SECONDS``), whose externally closed legs have not
        expired: their positions may show again (X1)."""
        found = []
        for trade in trades:
            if not booked_without_evidence(trade) or not ended_within_lookback(trade, now):
                continue
            legs = [leg for leg in trade.legs if leg.external_qty > QTY_EPSILON]
            if legs and not any(leg.is_expired(now) for leg in legs):
                found.append(trade)
        return found

    @staticmethod
    def unbook(trade: TradeLifecycle, detail: str, now: float) -> dict[str, float]:
        """Give the legs their exposure back and forget the close decision; returns what was restored.

        What the trade had been is kept in ``metadata["external_close_reversed"]`` for the
        record; the flag ``pnl_estimated`` (or ``external_close_perp``) becomes ``external_close_reversed``. A trade that
        never opened forgets its failure too (the manager decides it again on its fills).
        The record describes the latest reversal, and adds what it gave back to the running
        total of every earlier one (``legs_total``): a second reversal must not make the fills
        of the first evidence again (``reversed_quantities``).
        """
        restored = {leg.symbol: leg.sign * leg.external_qty for leg in trade.legs if leg.external_qty > QTY_EPSILON}
        total = reversed_quantities(trade.metadata.get(REVERSED_METADATA_KEY))
        for leg in trade.legs:
            if leg.external_qty > QTY_EPSILON:
                total[leg.symbol] = clean_qty(total.get(leg.symbol, 0.0) + leg.external_qty)
        trade.metadata[REVERSED_METADATA_KEY] = {
            "at": now, "detail": detail, "legs": restored, REVERSED_TOTAL_KEY: total,
            "on_evidence": booked_on_perp_evidence(trade), "was": {
                "state": trade.state.value, "closed_at": trade.closed_at, "failed_at": trade.failed_at,
                "realized_pnl": trade.realized_pnl, "exit_detail": trade.exit_detail,
                "external_prices": {leg.symbol: leg.external_price for leg in trade.legs
                                    if leg.external_qty > QTY_EPSILON}}}
        for leg in trade.legs:
            leg.external_qty = 0.0
            leg.external_price = 0.0
        trade.flags = [flag for flag in trade.flags
                       if flag not in (FLAG_PNL_ESTIMATED, FLAG_PERP_EVIDENCE)] + [FLAG_EXTERNAL_REVERSED]
        trade.exit_reason = trade.exit_decided_at = trade.closed_at = trade.realized_pnl = None
        trade.exit_detail = {}
        if trade.opened_at is None:
            trade.failed_at = trade.failure_reason = None
        return restored

    def alert_reversed(self, trade: TradeLifecycle, detail: str, restored: dict[str, float], *, managed: bool) -> None:
        """The operator's CRITICAL alert once the trade is managed again (its strategy stays paused)."""
        opened = trade.opened_at is not None
        unmanaged = "" if managed else \
            " (its strategy is not running: it stays unmanaged, see `python main.py status`)"
        booked = ("on fills that were not ours" if trade.metadata.get(REVERSED_METADATA_KEY, {}).get("on_evidence")
                  else "at an estimated price, with no fill to prove it")
        send_alert(self.alerts, logger, "CRITICAL", "external_close_reversed",
                   f"trade {trade.id} ({trade.strategy}) had been booked closed outside the daemon {booked}; "
                   f"{detail}: the trade is "
                   f"{'OPEN' if opened else 'decided again on its fills'} and managed by its own exit rules "
                   f"again{unmanaged}. Its strategy stays paused for new entries: check the account, then "
                   f"`python main.py resume {trade.strategy}`", trade_id=trade.id, legs=restored)
