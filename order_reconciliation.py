"""Our ledger's orders against the exchange's (docs/RECOVERY.md rows O1, O3-O8, R1-R3).

Why it exists: the ledger is our belief about every order we sent; the exchange is the truth,
but it answers late, lags fresh orders in its lists, reports some fills after an order is
final, and can forget an order altogether. ``OrderReconciler`` brings the ledger to the
exchange's view without ever deciding on a missing answer:

* at start-up every non-final order is queried by its ids (fills adopted, never-sent orders
  become NOT_PLACED), and RFQ accepts whose answer a crash may have lost are looked up in
  the block-trade list (R1-R3). An accept with a leg of its block trade already in our
  ledger is never given up on a list that does not show the record (a block trade is
  all-or-nothing: the other legs traded too); it stays in doubt, is looked up again at
  every pass, and is alerted CRITICAL once (``rfq_block_trade_incomplete``);
* every reconciliation, a live order the open list does not show is verified once it is 30 s
  old (O4, O5, O8: a younger one is never judged, incident 38);
* every 60 s, an order that ended unfilled in the last 10 minutes is polled once more, so a
  fill reported after the engines' grace is still adopted (O7, API.md 11.16);
* a verdict reached on missing data is never final for the reconciler (O9, O10): an order the
  ledger holds as a presumed NOT_PLACED or as VANISHED is watched. When the open list shows
  it (by clientOrderId or orderId), it is polled at once; the order history
  ``prefix_ownership`` reads does the same for it; and it is re-queried by its ids with
  back-off (30 s doubling to 10 min, ``PRESUMED_RECHECKS_PER_PASS`` requests a pass at most)
  for ``PRESUMED_VERDICT_HORIZON_SECONDS`` after the verdict. When the exchange answers, the
  ledger adopts its view (the verdict is reversed) and this class raises the CRITICAL
  ``order_verdict_reversed`` once and has the trade re-read its fills; a VANISHED order still
  unknown at the horizon is alerted CRITICAL (``order_vanished_unresolved``) and kept
  (never archived, still matched against the open list), never dropped in silence.

Open orders with our prefix that the ledger does not know (O2) are not this class's:
``prefix_ownership.PrefixOwnership`` decides them. Another daemon's order the ledger itself
met under one of our clientOrderIds (a lookup by clientOrderId answered it, and the ledger
refused it: ``OrderLedger.take_foreign_orders``) is raised here as the same CRITICAL
``prefix_conflict``, with every strategy paused and its symbol blocked, since prefix ownership
cannot tell such an order from our lost create. And the watch never looks up by clientOrderId
an order the ledger holds no orderId for when that clientOrderId is contested (shown under two
orderIds, or reported not ours): the lookup could answer the other order.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from alerts import send_alert
from coincall_payloads import ExchangeOrder
from errors import TraderError
from order_ledger import (
    BLOCK_ACCEPT_EVENT,
    BLOCK_ACCEPT_REFUSED_EVENT,
    LATE_FILL_STATUSES,
    PRESUMED_VERDICT_HORIZON_SECONDS,
    ForeignOrder,
    LedgerOrder,
    OrderStatus,
    open_block_accepts,
)
from reconciliation_report import QTY_EPSILON, ReconcileReport
from rfq import AMBIGUOUS_RESOLVE_SECONDS, BLOCKTRADE_SLACK_SECONDS, BlockTradeIncomplete, adopt_block_trade
from seams import AlertSender, ReconcilerClient, ReconcilerLedger, ReconcilerLifecycle, ReconcilerStore
from strategy_pauses import StrategyPauses
from trade_fills import AcceptEvidence, AcceptMarker, accept_evidence

logger = logging.getLogger(__name__)

ORDER_MIN_AGE_SECONDS = 30.0
# Orders cancelled or expired in this window are polled once more by the periodic run: a fill
# reported later than the engines' grace is still adopted (API.md 11.16).
LATE_FILL_WATCH_SECONDS = 600.0
# The back-off of the re-checks of a verdict on missing data (rows O9, O10): the first 30 s
# after the verdict (the lists and lookups lag fresh orders by seconds, incident 38), then
# doubling to 10 minutes, so a day of re-checks costs about 150 requests an order; and at most
# this many re-checks a pass, the earliest due first (the rest wait for the next pass).
PRESUMED_RECHECK_FIRST_SECONDS = 30.0
PRESUMED_RECHECK_MAX_SECONDS = 600.0
PRESUMED_RECHECKS_PER_PASS = 10
# How many orders a ``prefix_conflict`` alert names (the rest are counted).
CONFLICT_NAMES_AT_MOST = 10


def _lookup_horizon(marker: dict) -> float | None:
    """How far back the block-trade list is read for an accept marker: the RFQ's creation less
    the slack of the list's order (``rfq.BLOCKTRADE_SLACK_SECONDS``); None (to the end of the
    list, within its page bound) for a marker written before it carried that time."""
    created = marker.get("rfq_created_at")
    if not isinstance(created, (int, float)) or isinstance(created, bool) or not math.isfinite(created):
        return None
    return float(created) - BLOCKTRADE_SLACK_SECONDS


def _describe_foreign(found: list[ForeignOrder]) -> str:
    parts = []
    for item in found[:CONFLICT_NAMES_AT_MOST]:
        view = item.view
        side = view.side.name if view.side is not None else "?"
        ours = f"ours is orderId {item.ours}" if item.ours is not None else "we hold no orderId for it"
        parts.append(f"{item.client_order_id} ({item.symbol} {side} {view.qty} @ {view.price}, orderId {view.order_id}; "
                     f"{ours}: {item.why})")
    more = f" and {len(found) - CONFLICT_NAMES_AT_MOST} more" if len(found) > CONFLICT_NAMES_AT_MOST else ""
    return ", ".join(parts) + more


def presumed_not_placed(ledger: ReconcilerLedger, now: float) -> list[LedgerOrder]:
    """The orders the ledger holds as a presumed NOT_PLACED within the horizon of their verdict.

    Found among the orders changed since ``now - PRESUMED_VERDICT_HORIZON_SECONDS``: the
    verdict is the order's last change (nothing changes it until the exchange answers, and
    that answer ends it), and the ledger keeps such an order in memory that long.
    """
    return [order for order in ledger.orders_updated_since(now - PRESUMED_VERDICT_HORIZON_SECONDS)
            if order.status is OrderStatus.NOT_PLACED and order.presumed]


@dataclass
class _Recheck:
    """A watched verdict on missing data: the order, the verdict, and when to ask again."""

    order: LedgerOrder
    verdict: OrderStatus       # NOT_PLACED or VANISHED when it was first watched
    filled_before: float       # what the ledger had counted when it was first watched
    due: float
    interval: float
    expired: bool = False      # a VANISHED order past the horizon: alerted, no longer re-queried


class OrderReconciler:
    """Non-final orders, unlisted and vanished orders, late fills, lost RFQ accepts.

    Built and called by ``reconciliation.Reconciler`` (which checked the collaborators against
    their Protocols), in the order of docs/RECOVERY.md "Order of work at start-up".
    """

    def __init__(self, *, client: ReconcilerClient, ledger: ReconcilerLedger, lifecycle: ReconcilerLifecycle,
                 store: ReconcilerStore | None, alerts: AlertSender | None,
                 order_min_age_seconds: float = ORDER_MIN_AGE_SECONDS, pauses: StrategyPauses | None = None) -> None:
        self.client = client
        self.ledger = ledger
        self.lifecycle = lifecycle
        self.store = store
        self.alerts = alerts
        self.pauses = pauses
        # clientOrderIds the watch never looks up for an order without an orderId: shown under
        # two orderIds, or reported not ours (this pass's and earlier passes' ``foreign_orders``).
        self._contested: set[int] = set()
        self.order_min_age_seconds = float(order_min_age_seconds)
        self._alerted_missing: set[int] = set()
        self._late_checked: set[int] = set()
        self._pending_markers: list[tuple[float, dict]] = []
        self._markers_loaded = False   # the start-up look-up of recorded accepts has run
        # Accepts kept in doubt past the window because part of their block trade is booked
        # (``_partly_booked``), by (trade, RFQ, quote, record time): alerted CRITICAL once each.
        self._incomplete_alerted: set[tuple[str, str, str, float]] = set()
        # (trade, RFQ) whose block trade the list showed since this start (``block_trade_found``).
        self._found_block_trades: set[tuple[str, str]] = set()
        # Verdicts on missing data under watch (rows O9, O10), by clientOrderId, and the time the
        # ledger was last scanned for new ones. A VANISHED order stays watched past the horizon
        # (``expired``: the open list is still matched, no re-query); a restart alerts it again.
        self._watch: dict[int, _Recheck] = {}
        self._watch_scanned_at: float | None = None

    def __repr__(self) -> str:
        return f"OrderReconciler(accepts_in_doubt={len(self._pending_markers)})"

    # ---- start-up: every non-final order by its ids -------------------------------------------

    def poll_non_final(self, report: ReconcileReport) -> set[str]:
        """Query every non-final ledger order (fills adopted); returns their symbols, not judged this time."""
        unsettled = {order.symbol for order in self.ledger.live_orders()}
        for order in self.ledger.live_orders():
            self.ledger.poll(order)
            report.orders_checked += 1
        # Watched from now on, so a verdict the order history reversed before the open orders
        # are read is still alerted (``verify_unlisted`` sees the change).
        self._refresh_watch(report.at)
        return unsettled

    # ---- RFQ accepts whose answer may be lost (rows R1-R3) ----------------------------------------

    def adopt_block_accepts(self, report: ReconcileReport, now: float, *, startup: bool) -> set[str]:
        """Look up block trades for recorded accepts of active trades; returns symbols still in doubt.

        An accept is given up ("did not happen", R3) only on a block-trade list that answered,
        was read at least ``AMBIGUOUS_RESOLVE_SECONDS`` after the accept was recorded, and
        reached back past it, and only when no leg of its block trade is in our ledger. A read
        that fails decides nothing: the accept stays in doubt (its symbols too) and is looked
        up again at the next pass, and the other accepts are still looked up in this one.

        Why a booked leg overrules the list (evidence before belief): a block trade is
        all-or-nothing, so one leg booked from the accept's answer proves every leg traded,
        while a list that does not show the record may only lag or have lost it. Giving such an
        accept up would let its trade unwind the booked legs (RECOVERY.md T5) and leave the
        others, filled on the exchange, in no trade: naked. So it stays in doubt (R1), is
        looked up again at every pass, and is alerted CRITICAL once (``_partly_booked``);
        when the list shows the record, its missing legs are booked once (``adopt_block_trade``).
        """
        if startup or not self._markers_loaded:
            self._pending_markers = self._markers_of_active_trades()
            self._markers_loaded = True
        doubtful: set[str] = set()
        still_pending: list[tuple[float, dict]] = []
        for ts, marker in self._pending_markers:
            try:
                found, recorded = adopt_block_trade(self.client, self.ledger, marker, now,
                                                    since=_lookup_horizon(marker))
            except BlockTradeIncomplete as exc:
                logger.warning("block trade of the RFQ accept of trade %s found incomplete (%s); still in doubt",
                               marker.get("trade_id"), exc)
                found, recorded, answered = False, 0, False
                seen = "its block-trade record was found without a readable fill for them"
            except (TraderError, ValueError) as exc:
                logger.warning("block trade of the RFQ accept of trade %s not looked up (%s); still in doubt",
                               marker.get("trade_id"), exc)
                found, recorded, answered = False, 0, False
                seen = "the block-trade list could not be read"
            else:
                answered = True
                seen = "the block-trade list, read back past the accept, does not show the record (it may lag or " \
                       "have lost it)"
            report.block_fills_adopted += recorded
            if recorded:
                self.lifecycle.refresh_fills(str(marker["trade_id"]))
            if found:
                self._found_block_trades.add((str(marker.get("trade_id")), str(marker.get("request_id"))))
                self._incomplete_resolved(ts, marker, recorded)
                continue
            if now - ts < AMBIGUOUS_RESOLVE_SECONDS or self._partly_booked(ts, marker, seen) or not answered:
                still_pending.append((ts, marker))
                doubtful |= {str(symbol) for _index, symbol, _side in marker.get("legs") or []}
                continue
            logger.info("RFQ accept of trade %s (RFQ %s quote %s): no block trade in the list read back past it "
                        "%.0f s or more after the accept, and none of its legs booked: it did not happen",
                        marker.get("trade_id"), marker.get("request_id"), marker.get("quote_id"),
                        AMBIGUOUS_RESOLVE_SECONDS)
        self._pending_markers = still_pending
        return doubtful

    def _partly_booked(self, ts: float, marker: dict, seen: str) -> bool:
        """Whether an accept past its look-up window, whose block trade was not found, must stay
        in doubt on the evidence of our own ledger: some of its legs booked and others not
        (``trade_fills.accept_evidence``), or the ledger unreadable (no evidence either way).

        Said once at CRITICAL per accept (like the RFQ job's own "block trade proven" case):
        the trade, the legs booked, the legs missing, what the look-up saw (``seen``), and what
        the operator should check. An accept none of whose legs is booked returns False: R3 as
        before. So does one whose every leg is booked: nothing of it is missing, its trade is
        judged on its fills.
        """
        accept = AcceptMarker.from_event({"ts": ts, "payload": marker})
        if accept is None:
            return False
        try:
            evidence = accept_evidence(self.ledger, accept)
        except Exception:  # noqa: BLE001 - an unreadable ledger is no evidence: keep it in doubt
            logger.exception("trade %s: reading its fills to judge the RFQ accept of RFQ %s failed; still in doubt",
                             accept.trade_id, accept.request_id)
            return True
        if not evidence.partial:
            return False
        key = self._incomplete_key(ts, marker)
        if key not in self._incomplete_alerted:
            self._incomplete_alerted.add(key)
            self._alert_incomplete(accept, marker, evidence, seen)
        return True

    def _alert_incomplete(self, accept: AcceptMarker, marker: dict, evidence: AcceptEvidence, seen: str) -> None:
        """The CRITICAL of an accept whose block trade is proven by a booked leg but not all booked."""
        symbols = {int(index): str(symbol) for index, symbol, _side in marker.get("legs") or []}
        booked = [f"leg {index} {symbols.get(index, '?')}" for index in evidence.booked]
        missing = [f"leg {index} {symbols.get(index, '?')}" for index in evidence.missing]
        self._alert("CRITICAL", "rfq_block_trade_incomplete",
                    f"trade {accept.trade_id}: the RFQ accept of RFQ {accept.request_id} quote "
                    f"{marker.get('quote_id')} recorded before the restart has {', '.join(booked)} booked but no "
                    f"fill for {', '.join(missing)}, and {seen}. A block trade is all-or-nothing, so the missing "
                    f"legs are filled on the exchange: the accept stays in doubt, the trade is neither judged nor "
                    f"unwound, and the list is read again at every reconciliation (the missing legs are booked when "
                    f"it shows the record). Operator: check the exchange's block trades for this RFQ and the "
                    f"positions in {', '.join(symbols.get(index, '?') for index in evidence.missing)}",
                    trade_id=accept.trade_id, request_id=accept.request_id, quote_id=marker.get("quote_id"),
                    legs_booked=list(evidence.booked), legs_missing=list(evidence.missing))

    def _incomplete_resolved(self, ts: float, marker: dict, recorded: int) -> None:
        """An accept alerted as incomplete whose block trade the list now shows (its legs booked)."""
        key = self._incomplete_key(ts, marker)
        if key in self._incomplete_alerted:
            self._incomplete_alerted.discard(key)
            logger.warning("trade %s: the block trade of RFQ %s is listed at last; %d missing leg(s) booked now, "
                           "the accept is resolved", marker.get("trade_id"), marker.get("request_id"), recorded)

    @staticmethod
    def _incomplete_key(ts: float, marker: dict) -> tuple[str, str, str, float]:
        return (str(marker.get("trade_id")), str(marker.get("request_id")), str(marker.get("quote_id")), float(ts))

    def accept_in_doubt(self, trade_id: str) -> bool:
        """``seams.BlockAcceptWatch``: an accept of this trade recorded before the restart is not
        resolved yet (also True before the start-up look-up has run: nothing is known yet)."""
        if not self._markers_loaded:
            return True
        return any(str(marker.get("trade_id")) == str(trade_id) for _ts, marker in self._pending_markers)

    def block_trade_found(self, trade_id: str, request_id: str) -> bool:
        """``seams.BlockAcceptWatch``: the list showed this RFQ's block trade since this start."""
        return (str(trade_id), str(request_id)) in self._found_block_trades

    def _markers_of_active_trades(self) -> list[tuple[float, dict]]:
        active = {trade.id for trade in self.lifecycle.active_trades()}
        if not active or self.store is None:
            return []
        markers = []
        for event in open_block_accepts(self.store.events(BLOCK_ACCEPT_EVENT),
                                        self.store.events(BLOCK_ACCEPT_REFUSED_EVENT)):
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
        """Rows O4, O5, O8: ledger orders the open list (all pages, ``listed``) does not show; rows
        O9, O10: verdicts on missing data the list shows, or whose re-check is due."""
        self._refresh_watch(now)
        self._sweep(report)
        self._note_contested(report, listed)
        self._listed_again(report, now, listed)
        listed_ids = {item.order_id for item in listed if item.order_id is not None}
        for order in self.ledger.live_orders():
            if order.order_id is None or order.order_id in listed_ids:
                continue
            if now - float(order.sent_at) < self.order_min_age_seconds:
                continue  # the list lags behind fresh orders (incident 38)
            report.orders_checked += 1
            verdict = self.ledger.verify(order)
            if verdict == "vanished":
                self._order_vanished(order, report)
                self._watch_order(order)
            elif verdict == "missing" and order.client_order_id not in self._alerted_missing:
                self._alerted_missing.add(order.client_order_id)
                report.orders_missing.append(order.client_order_id)
                self._alert("WARNING", "order_missing",
                            f"order {order.client_order_id} ({order.symbol}, trade {order.trade_id}) is live in "
                            f"our ledger but unknown to the exchange", client_order_id=order.client_order_id)
        self._recheck_due(report, now)
        self.foreign_under_our_ids(report)

    # ---- another daemon's orders under our clientOrderIds (row O2) -------------------------------

    def _note_contested(self, report: ReconcileReport, listed: list[ExchangeOrder]) -> None:
        """Remember the clientOrderIds of ours a lookup may answer with another daemon's order.

        Reported not ours (``report.foreign_orders``: by prefix ownership or by this class), or
        listed open under two orderIds: a lookup by clientOrderId answers one of them, and with
        no orderId of our own nothing tells which is ours (``prefix_ownership._reused_ids``).
        """
        self._contested.update(coid for coid in report.foreign_orders if self.ledger.is_ours(coid))
        shown: dict[int, set[int]] = {}
        for item in listed:
            if item.client_order_id is not None and item.order_id is not None:
                shown.setdefault(item.client_order_id, set()).add(item.order_id)
        self._contested.update(coid for coid, ids in shown.items() if len(ids) > 1 and self.ledger.is_ours(coid))

    def _looked_up_safely(self, order: LedgerOrder) -> bool:
        """Whether the watch may ask about ``order`` (its lookup goes by clientOrderId when the
        ledger holds no orderId): not when that clientOrderId is contested (``_note_contested``).
        The verdict then stands until its horizon; the conflict is the operator's (row O2)."""
        if order.order_id is not None or order.client_order_id not in self._contested:
            return True
        self._repeat_contested(order)
        return False

    def _repeat_contested(self, order: LedgerOrder) -> None:
        logger.warning("order %d: its clientOrderId is shown under another daemon's order too; not looked up by "
                       "clientOrderId (the answer could be theirs): the verdict %s stands", order.client_order_id,
                       order.status.value)

    def foreign_under_our_ids(self, report: ReconcileReport) -> None:
        """Orders the ledger found under our clientOrderIds that are not ours: the verdict of row O2.

        Why here: prefix ownership decides the orders it reads, but an order found by a lookup
        is one it may not tell from ours (a lone order under a clientOrderId the ledger holds no
        orderId for reads as our lost create). So: CRITICAL ``prefix_conflict`` (the kind
        prefix ownership raises, so operators see one kind), every strategy paused (persisted;
        lifted by ``resume``), their symbols blocked (our next clientOrderIds there may equal
        the other daemon's), never cancelled. A clientOrderId already reported (by prefix
        ownership, or here) is not alerted again (``_contested``).
        """
        found = [item for item in self.ledger.take_foreign_orders() if item.client_order_id not in self._contested]
        if not found:
            return
        coids = list(dict.fromkeys(item.client_order_id for item in found))
        self._contested.update(coids)
        report.foreign_orders.extend(coids)
        reason = f"orders of another daemon under our clientOrderIds (prefix {self.ledger.prefix})"
        if self.pauses is not None:
            report.paused.extend(self.pauses.pause_every(reason))
        blocked = list(dict.fromkeys(item.symbol for item in found))
        for symbol in blocked:
            if self.ledger.block_symbol(symbol, reason):
                report.blocked_symbols.append(symbol)
        self._alert("CRITICAL", "prefix_conflict",
                    f"{len(found)} order(s) on the exchange carry a clientOrderId our ledger sent itself but are "
                    f"not ours: {_describe_foreign(found)}. Another daemon uses prefix {self.ledger.prefix} on this "
                    f"account and built the same ids. They are left untouched and not adopted (our records are "
                    f"kept); every strategy is paused and no order of ours goes to {', '.join(blocked)} until a "
                    f"resume. Fix: give each daemon on the account its own CLIENT_ORDER_PREFIX (100-899); cancel "
                    f"those orders by hand if they are yours; then `python main.py resume`",
                    client_order_ids=coids[:CONFLICT_NAMES_AT_MOST], count=len(found), source="lookup")

    # ---- verdicts on missing data (rows O9, O10) -------------------------------------------------

    def _refresh_watch(self, now: float) -> None:
        """Watch every verdict on missing data the ledger reached since the last scan.

        The first scan reaches back over the whole horizon (a restart's watch is rebuilt from
        the store's orders); later ones over what changed since, so a pass costs the orders of
        the last minute, not the day's.
        """
        since = now - PRESUMED_VERDICT_HORIZON_SECONDS if self._watch_scanned_at is None \
            else self._watch_scanned_at - 1.0
        for order in self.ledger.orders_updated_since(since):
            if order.status is OrderStatus.NOT_PLACED and order.presumed:
                self._watch_order(order)
        for order in self.ledger.vanished_orders():
            self._watch_order(order)
        self._watch_scanned_at = now

    def _watch_order(self, order: LedgerOrder) -> None:
        """Put a NOT_PLACED or VANISHED order under watch; its first re-check 30 s after the verdict."""
        coid = order.client_order_id
        if coid in self._watch:
            return
        if order.status not in (OrderStatus.NOT_PLACED, OrderStatus.VANISHED):
            return
        self._watch[coid] = _Recheck(order, order.status, float(order.filled_qty),
                                     float(order.updated_at) + PRESUMED_RECHECK_FIRST_SECONDS,
                                     PRESUMED_RECHECK_FIRST_SECONDS)

    def _sweep(self, report: ReconcileReport) -> None:
        """Watched orders whose verdict was reversed since the last look (by a poll, an engine, the
        order history read): alert and book, once."""
        for coid, entry in list(self._watch.items()):
            if entry.order.status is not entry.verdict:
                del self._watch[coid]
                self._adopted(entry, report)

    def _listed_again(self, report: ReconcileReport, now: float, listed: list[ExchangeOrder]) -> None:
        """A watched order the open list shows (its clientOrderId, or its orderId) exists: poll it now.

        The poll (by clientOrderId for a presumed NOT_PLACED) brings the exchange's whole view,
        fills and state, into the ledger. A lookup that still lags behind the list leaves the
        verdict as it is until the next pass (the list is read again then).
        """
        listed_coids = {item.client_order_id for item in listed if item.client_order_id is not None}
        listed_ids = {item.order_id for item in listed if item.order_id is not None}
        for coid, entry in list(self._watch.items()):
            order = entry.order
            if coid not in listed_coids and (order.order_id is None or order.order_id not in listed_ids):
                continue
            if not self._looked_up_safely(order):
                continue
            logger.warning("order %d, settled %s, is listed open on the exchange: adopting the exchange's view",
                           coid, entry.verdict.value)
            report.orders_checked += 1
            self.ledger.poll(order)
            if order.status is not entry.verdict:
                del self._watch[coid]
                self._adopted(entry, report)
            elif not entry.expired:
                entry.due = now   # re-checked in the next pass whatever its back-off said

    def _recheck_due(self, report: ReconcileReport, now: float) -> None:
        """Re-query the watched orders whose back-off is due; give up on those past the horizon."""
        for coid, entry in list(self._watch.items()):
            if not entry.expired and now - float(entry.order.updated_at) >= PRESUMED_VERDICT_HORIZON_SECONDS:
                self._horizon_reached(entry)
        due = sorted((entry for entry in self._watch.values() if entry.due <= now), key=lambda entry: entry.due)
        for entry in due[:PRESUMED_RECHECKS_PER_PASS]:
            if not self._looked_up_safely(entry.order):
                entry.interval = PRESUMED_RECHECK_MAX_SECONDS
                entry.due = now + entry.interval
                continue
            report.orders_checked += 1
            answer = self.ledger.verify(entry.order)
            if entry.order.status is not entry.verdict:
                self._watch.pop(entry.order.client_order_id, None)
                self._adopted(entry, report)
                continue
            if answer != "error":   # a failed request learnt nothing: asked again as soon
                entry.interval = min(entry.interval * 2.0, PRESUMED_RECHECK_MAX_SECONDS)
            entry.due = now + entry.interval

    def _adopted(self, entry: _Recheck, report: ReconcileReport) -> None:
        """The exchange showed an order we had concluded NOT_PLACED or VANISHED; the ledger took its view.

        The trade re-reads its fills (a working order then blocks its leg and the lifecycle
        resolves it); an ended trade cannot, so what the order did is nobody's and an operator
        must act. CRITICAL for a reversed NOT_PLACED always (a second order may have gone out
        on the leg it freed); for a VANISHED one when it is working or filled more.
        """
        order = entry.order
        if order.status is OrderStatus.REJECTED:
            # Not a reversal: the order under its clientOrderId is another daemon's, so the
            # refusal of our create (clientOrderId in use) stands as the exchange's word.
            logger.warning("order %d, concluded %s, is REJECTED: its clientOrderId is held by an order that is not "
                           "ours", order.client_order_id, entry.verdict.value)
            return
        gained = float(order.filled_qty) - entry.filled_before
        if gained > QTY_EPSILON:
            report.late_fills.append(order.client_order_id)
        trade = self.lifecycle.get(order.trade_id)
        active = trade is not None and trade.is_active
        if active:
            self.lifecycle.refresh_fills(order.trade_id)
        working = not order.status.is_final
        text = (f"order {order.client_order_id} ({order.symbol}, trade {order.trade_id} leg {order.leg_index}) "
                f"concluded {entry.verdict.value} was found on the exchange: {order.status.value}, "
                f"{order.filled_qty:g} of {order.qty:g} filled (orderId {order.order_id}); adopted as its real state")
        if active:
            text += ("; its fills are booked to the trade and its leg waits for it (a replacement may have been sent "
                     "meanwhile: check the trade's position)")
        elif working or gained > QTY_EPSILON:
            text += (f"; the trade has ended, so {'this working order' if working else 'that fill'} is managed by no "
                     f"trade: cancel the order and close what it filled by hand, or "
                     f"`python main.py kill --all-positions --yes`")
        critical = entry.verdict is OrderStatus.NOT_PLACED or working or gained > QTY_EPSILON
        self._alert("CRITICAL" if critical else "WARNING", "order_verdict_reversed", text,
                    client_order_id=order.client_order_id, order_id=order.order_id, symbol=order.symbol,
                    trade_id=order.trade_id, verdict=entry.verdict.value, status=order.status.value,
                    filled_qty=order.filled_qty)

    def _horizon_reached(self, entry: _Recheck) -> None:
        """A day of re-checks without an answer: a NOT_PLACED stands; a VANISHED order is a human's."""
        order = entry.order
        if entry.verdict is OrderStatus.NOT_PLACED:
            del self._watch[order.client_order_id]
            logger.info("order %d: still unknown to the exchange %.0f h after it was concluded NOT_PLACED; the "
                        "verdict stands", order.client_order_id, PRESUMED_VERDICT_HORIZON_SECONDS / 3600)
            return
        entry.expired, entry.due = True, math.inf
        self._alert("CRITICAL", "order_vanished_unresolved",
                    f"order {order.client_order_id} ({order.symbol}, trade {order.trade_id} leg {order.leg_index}, "
                    f"orderId {order.order_id}) has been unknown to the exchange for "
                    f"{PRESUMED_VERDICT_HORIZON_SECONDS / 3600:.0f} h of re-checks ({order.filled_qty:g} of "
                    f"{order.qty:g} filled as last seen); it stays VANISHED and is no longer re-queried, but the open "
                    f"list is still watched for it. Check it on the exchange (order history, fills) and compare the "
                    f"position with `python main.py status`",
                    client_order_id=order.client_order_id, order_id=order.order_id, symbol=order.symbol,
                    trade_id=order.trade_id, filled_qty=order.filled_qty)

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
        """Poll once more every order that ended unfilled in the last minutes (late fill reports).

        A VANISHED order is not among them: its re-checks are the watch's (row O10), with
        back-off for a day rather than once. A verdict the order history reversed earlier in
        this pass is alerted here, in the same pass.
        """
        self._sweep(report)
        self._note_contested(report, [])
        self.foreign_under_our_ids(report)   # found by this pass's order-history read, or a poll
        # Orders changed in the watch window (and a second more: the test below decides, exactly).
        for order in self.ledger.orders_updated_since(now - LATE_FILL_WATCH_SECONDS - 1.0):
            if order.status not in LATE_FILL_STATUSES or order.filled_qty >= order.qty - QTY_EPSILON:
                continue
            if order.status is OrderStatus.VANISHED:
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
