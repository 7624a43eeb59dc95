"""Our ledger's orders against the exchange's (docs/RECOVERY.md rows O1, O3-O8, R1-R3).

Why it exists: the ledger is our belief about every order we sent; the exchange is the truth,
but it answers late, lags fresh orders in its lists, reports some fills after an order is
final, and can forget an order altogether. ``OrderReconciler`` brings the ledger to the
exchange's view without ever deciding on a missing answer:

* at start-up every non-final order is queried by its ids (fills adopted, never-sent orders
  become NOT_PLACED), and RFQ accepts whose answer a crash may have lost are looked up in
  the block-trade list (R1-R3);
* every reconciliation, a live order the open list does not show is verified once it is 30 s
  old (O4, O5, O8: a younger one is never judged, incident 38), and an order settled VANISHED
  that the list shows again is believed;
* every 60 s, an order that ended unfilled in the last 10 minutes is polled once more, so a
  fill reported after the engines' grace is still adopted (O7, API.md 11.16).

Open orders with our prefix that the ledger does not know (O2) are not this class's:
``prefix_ownership.PrefixOwnership`` decides them.
"""
from __future__ import annotations

import logging
from typing import Any

from alerts import send_alert
from coincall_payloads import ExchangeOrder
from order_ledger import BLOCK_ACCEPT_EVENT, LATE_FILL_STATUSES, OrderStatus
from reconciliation_report import QTY_EPSILON, ReconcileReport
from rfq import AMBIGUOUS_RESOLVE_SECONDS, adopt_block_trade
from seams import AlertSender, ReconcilerClient, ReconcilerLedger, ReconcilerLifecycle, ReconcilerStore

logger = logging.getLogger(__name__)

ORDER_MIN_AGE_SECONDS = 30.0
# Orders cancelled or expired in this window are polled once more by the periodic run: a fill
# reported later than the engines' grace is still adopted (API.md 11.16).
LATE_FILL_WATCH_SECONDS = 600.0


class OrderReconciler:
    """Non-final orders, unlisted and vanished orders, late fills, lost RFQ accepts.

    Built and called by ``reconciliation.Reconciler`` (which checked the collaborators against
    their Protocols), in the order of docs/RECOVERY.md "Order of work at start-up".
    """

    def __init__(self, *, client: ReconcilerClient, ledger: ReconcilerLedger, lifecycle: ReconcilerLifecycle,
                 store: ReconcilerStore | None, alerts: AlertSender | None,
                 order_min_age_seconds: float = ORDER_MIN_AGE_SECONDS) -> None:
        self.client = client
        self.ledger = ledger
        self.lifecycle = lifecycle
        self.store = store
        self.alerts = alerts
        self.order_min_age_seconds = float(order_min_age_seconds)
        self._alerted_missing: set[int] = set()
        self._late_checked: set[int] = set()
        self._pending_markers: list[tuple[float, dict]] = []

    def __repr__(self) -> str:
        return f"OrderReconciler(accepts_in_doubt={len(self._pending_markers)})"

    # ---- start-up: every non-final order by its ids -------------------------------------------

    def poll_non_final(self, report: ReconcileReport) -> set[str]:
        """Query every non-final ledger order (fills adopted); returns their symbols, not judged this time."""
        unsettled = {order.symbol for order in self.ledger.live_orders()}
        for order in self.ledger.live_orders():
            self.ledger.poll(order)
            report.orders_checked += 1
        return unsettled

    # ---- RFQ accepts whose answer may be lost (rows R1-R3) ----------------------------------------

    def adopt_block_accepts(self, report: ReconcileReport, now: float, *, startup: bool) -> set[str]:
        """Look up block trades for recorded accepts of active trades; returns symbols still in doubt."""
        if startup:
            self._pending_markers = self._markers_of_active_trades()
        doubtful: set[str] = set()
        still_pending: list[tuple[float, dict]] = []
        for ts, marker in self._pending_markers:
            found, recorded = adopt_block_trade(self.client, self.ledger, marker, now)
            report.block_fills_adopted += recorded
            if recorded:
                self.lifecycle.refresh_fills(str(marker["trade_id"]))
            if not found and now - ts < AMBIGUOUS_RESOLVE_SECONDS:
                still_pending.append((ts, marker))
                doubtful |= {str(symbol) for _index, symbol, _side in marker.get("legs") or []}
        self._pending_markers = still_pending
        return doubtful

    def _markers_of_active_trades(self) -> list[tuple[float, dict]]:
        active = {trade.id for trade in self.lifecycle.active_trades()}
        if not active or self.store is None:
            return []
        markers = []
        for event in self.store.events(BLOCK_ACCEPT_EVENT):
            payload = event.get("payload") or {}
            if payload.get("trade_id") in active:
                markers.append((float(event.get("ts") or 0.0), payload))
        return markers

    def refresh_active_trades(self) -> None:
        """Every active trade re-reads its fills from the ledger (after the polls and block fills above)."""
        for trade in self.lifecycle.active_trades():
            self.lifecycle.refresh_fills(trade.id)

    # ---- orders the open list does not show ----------------------------------------------------

    def verify_unlisted(self, report: ReconcileReport, now: float, listed: list[ExchangeOrder]) -> None:
        """Rows O4, O5, O8: ledger orders the open list (all pages, ``listed``) does not show, and
        vanished ones it shows again."""
        listed_ids = {item.order_id for item in listed if item.order_id is not None}
        for order in self.ledger.vanished_orders():
            if order.status is OrderStatus.VANISHED and order.order_id in listed_ids:
                logger.warning("order %d, settled VANISHED, is listed open again: adopting the exchange's view",
                               order.client_order_id)
                self.ledger.poll(order)
                self.lifecycle.refresh_fills(order.trade_id)
        for order in self.ledger.live_orders():
            if order.order_id is None or order.order_id in listed_ids:
                continue
            if now - float(order.sent_at) < self.order_min_age_seconds:
                continue  # the list lags behind fresh orders (incident 38)
            report.orders_checked += 1
            verdict = self.ledger.verify(order)
            if verdict == "vanished":
                self._order_vanished(order, report)
            elif verdict == "missing" and order.client_order_id not in self._alerted_missing:
                self._alerted_missing.add(order.client_order_id)
                report.orders_missing.append(order.client_order_id)
                self._alert("WARNING", "order_missing",
                            f"order {order.client_order_id} ({order.symbol}, trade {order.trade_id}) is live in "
                            f"our ledger but unknown to the exchange", client_order_id=order.client_order_id)

    def _order_vanished(self, order: Any, report: ReconcileReport) -> None:
        """The exchange forgot the order (the ledger settled it VANISHED): alert once, let the trade move on."""
        report.orders_vanished.append(order.client_order_id)
        self.lifecycle.refresh_fills(order.trade_id)
        if order.client_order_id in self._alerted_missing:
            return
        self._alerted_missing.add(order.client_order_id)
        self._alert("WARNING", "order_vanished",
                    f"order {order.client_order_id} ({order.symbol}, trade {order.trade_id}) is unknown to the "
                    f"exchange by orderId, by clientOrderId and in its order history: settled as not working with "
                    f"{order.filled_qty:g} of {order.qty:g} filled; its trade moves on (a close is sent again for "
                    f"what the trade still holds, under a new clientOrderId)",
                    client_order_id=order.client_order_id, order_id=order.order_id, symbol=order.symbol,
                    trade_id=order.trade_id, filled_qty=order.filled_qty)

    # ---- late fills ------------------------------------------------------------------------------

    def recheck_recent_finals(self, report: ReconcileReport, now: float) -> None:
        """Poll once more every order that ended unfilled in the last minutes (late fill reports)."""
        # Orders changed in the watch window (and a second more: the test below decides, exactly).
        for order in self.ledger.orders_updated_since(now - LATE_FILL_WATCH_SECONDS - 1.0):
            if order.status not in LATE_FILL_STATUSES or order.filled_qty >= order.qty - QTY_EPSILON:
                continue
            age = now - float(order.updated_at)
            if order.client_order_id in self._late_checked or not (
                    self.order_min_age_seconds <= age <= LATE_FILL_WATCH_SECONDS):
                continue
            report.orders_checked += 1
            gained = self.ledger.recheck_final(order)
            if gained is None:
                continue  # no answer: asked again at the next reconciliation
            self._late_checked.add(order.client_order_id)
            if gained <= QTY_EPSILON:
                continue
            report.late_fills.append(order.client_order_id)
            trade = self.lifecycle.get(order.trade_id)
            if trade is not None and trade.is_active:
                self.lifecycle.refresh_fills(trade.id)
                continue
            self._alert("CRITICAL", "late_fill_after_close",
                        f"order {order.client_order_id} of trade {order.trade_id} reported a fill of "
                        f"{order.filled_qty:g} {order.symbol} after the trade ended: that position is not managed "
                        f"by any trade; close it (`python main.py kill --all-positions --yes`) or by hand",
                        client_order_id=order.client_order_id, symbol=order.symbol)

    def _alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        send_alert(self.alerts, logger, level, kind, message, **detail)
