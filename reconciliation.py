"""Our records against the exchange's: at start-up and every minute (BEHAVIOUR.md 4.7, 6.1).

Why it exists: after a crash, a network outage or a manual intervention, the store can be
behind the exchange. Trading on a wrong picture is how a daemon sells a position twice,
leaves a naked leg, or cancels somebody else's order. The reconciler is the one place that
compares the two and applies the decision table of docs/RECOVERY.md:

* **Start-up** (first account snapshot after a start): every non-final ledger order is
  queried by its ids (fills adopted, never-sent orders become NOT_PLACED); RFQ accepts whose
  answer a crash may have lost are looked up in the block-trade list; then every symbol we
  hold is compared with the positions. Until this has succeeded the lifecycle is on hold:
  no order, no exit, no entry (a failed positions read is retried on the next poll, forever).
* **Every 60 s**: all pages of open orders against the ledger (live orders the list does
  not show are verified once they are 30 s old), the order history since the last check,
  then the positions again.

Memory and ownership (issue 9; docs/RECOVERY.md rows L1-L4, O2):

* the ledger records every order before it is sent, so an order on the exchange carrying
  our prefix that the ledger does not know was not sent by this store's daemon: another
  daemon with the same prefix, or a store restored from an older backup. It is never
  cancelled (not provably ours; incident 40): CRITICAL ``prefix_conflict`` naming it, every
  strategy paused, the trade sequence moved past it;
* at every start the order history since the store's last check (89 days for a store that
  never had one) is read for our prefix: the trade sequence is re-seeded above anything seen,
  so no clientOrderId is ever sent twice; unknown orders there mean the store is behind;
* a store that is missing (new or empty, never reconciled) or quarantined is a lost
  memory: if the exchange shows anything of ours, every strategy starts paused.

What the comparison decides, per symbol (signed quantities, ours = the active trades'):

* exchange covers ours on the same side: fine; anything beyond ours is somebody else's
  position, logged once and never touched;
* exchange short of ours: a disappearing position is not a close. Only the part that
  fills which are not ours explain (the exchange's trade history) is booked as an external
  close, at their price, CRITICAL alert, the strategy paused; the rest is a *suspect read*
  (an empty answer is not evidence): the trades stay as they are, entries are held, one
  CRITICAL alert, re-checked every minute until the positions show again or the evidence
  arrives;
* a position that shows again exactly as an older version's estimated external close took
  it away reopens that trade under its own exit rules (docs/RECOVERY.md X1);
* exchange on the opposite side: CRITICAL alert, the strategy is paused and no order goes
  to that symbol until an operator resumes it.

A symbol is only judged when our view of it is settled: no non-final order on it, no
execution job on its trades, no unresolved RFQ accept, and no order activity since the
positions were read. While running, a mismatch must also be seen on two consecutive checks
before anything is done, so a lagging positions answer never books a phantom close.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from account_manager import AccountSnapshot
from alerts import send_alert
from clock import Clock
from coincall_payloads import (
    ExchangeOrder,
    history_filters,
    next_page_filters,
    parse_fill_page,
    parse_order_page,
    parse_orders,
)
from errors import TraderError
from log_throttle import RepeatLimiter
from contracts import Side
from order_ledger import BLOCK_ACCEPT_EVENT, LATE_FILL_STATUSES, OrderStatus, parse_client_order_id
from persistence import ORDER_HISTORY_WATERMARK, TRADE_SEQ_COUNTER
from rfq import AMBIGUOUS_RESOLVE_SECONDS, adopt_block_trade
from seams import (
    AlertSender,
    ReconcilerClient,
    ReconcilerLedger,
    ReconcilerLifecycle,
    ReconcilerStore,
    RunnerControl,
    require,
)
from trade_lifecycle import TradeState

logger = logging.getLogger(__name__)

RECONCILE_INTERVAL_SECONDS = 60.0
ORDER_MIN_AGE_SECONDS = 30.0
QTY_EPSILON = 1e-9
HISTORY_PAGE_SIZE = 500
HISTORY_MAX_PAGES = 200
QUARANTINE_PROBE_SECONDS = 24 * 3600.0
SEQ_RESEED_LOOKBACK_SECONDS = 89 * 24 * 3600.0  # the history range limit is 90 days (API.md 8.6)
# After a quarantine the trade sequence jumps past anything seen on the exchange by this
# margin: orders older than the history we can read must never share a clientOrderId
# with a new one.
SEQ_RESEED_MARGIN = 1000
STARTUP_FAILURE_ALERT_AFTER = 3
# The history is read again this far before the last check: an order the history lists late
# (or stamped by a clock slightly behind ours) is not missed.
HISTORY_OVERLAP_SECONDS = 120.0
# The event that remembers orders with our prefix that are not ours (so one is reported once).
FOREIGN_ORDERS_EVENT = "foreign_orders"
# How many unknown orders an alert names (the journal keeps them all).
ALERT_NAMES_AT_MOST = 10
# Orders cancelled or expired in this window are polled once more by the periodic run: a fill
# reported later than the engines' grace is still adopted (API.md 11.16).
LATE_FILL_WATCH_SECONDS = 600.0
# A suspect positions read (docs/RECOVERY.md S6) holds every strategy's entries under this key.
SUSPECT_HOLD_KEY = "suspect_positions"
# Trade-history pages read per symbol when looking for the fills that explain a shortfall.
EVIDENCE_MAX_PAGES = 20

VERDICT_OK = "ok"
VERDICT_EXTERNAL = "external_position"
VERDICT_SHORTFALL = "shortfall"
VERDICT_OPPOSITE = "opposite_side"
VERDICT_DEFERRED = "deferred"


@dataclass(frozen=True)
class SymbolCheck:
    """One symbol's comparison: signed quantities (+ long, - short)."""

    symbol: str
    ours: float
    exchange: float
    verdict: str


@dataclass
class ReconcileReport:
    """What one reconciliation saw and did (logged and written to the event journal)."""

    kind: str
    at: float
    orders_checked: int = 0
    orders_missing: list[int] = field(default_factory=list)
    foreign_orders: list[int] = field(default_factory=list)
    late_fills: list[int] = field(default_factory=list)
    orders_vanished: list[int] = field(default_factory=list)
    block_fills_adopted: int = 0
    symbols: list[SymbolCheck] = field(default_factory=list)
    external_closes: list[str] = field(default_factory=list)
    suspect: list[str] = field(default_factory=list)
    reversed: list[str] = field(default_factory=list)
    blocked_symbols: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    quarantine: dict | None = None

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for check in self.symbols:
            counts[check.verdict] = counts.get(check.verdict, 0) + 1
        parts = [f"{self.kind}: {self.orders_checked} order(s) checked",
                 "symbols " + (", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none")]
        if self.block_fills_adopted:
            parts.append(f"{self.block_fills_adopted} block fill(s) adopted")
        noteworthy = (("missing orders", self.orders_missing), ("unknown orders with our prefix", self.foreign_orders),
                      ("late fills adopted on", self.late_fills), ("external closes", self.external_closes),
                      ("vanished orders", self.orders_vanished), ("suspect positions", self.suspect),
                      ("external closes reversed", self.reversed), ("blocked", self.blocked_symbols), ("paused", self.paused), ("quarantine", self.quarantine))
        parts += [f"{label} {value}" for label, value in noteworthy if value]
        return "; ".join(parts)

    def to_event(self) -> dict:
        return {
            "kind": self.kind, "orders_checked": self.orders_checked, "orders_missing": self.orders_missing,
            "foreign_orders": self.foreign_orders, "late_fills": self.late_fills,
            "block_fills_adopted": self.block_fills_adopted,
            "symbols": [check.__dict__ for check in self.symbols if check.verdict != VERDICT_OK],
            "external_closes": self.external_closes, "blocked_symbols": self.blocked_symbols,
            "paused": self.paused, "quarantine": self.quarantine,
            "orders_vanished": self.orders_vanished, "suspect": self.suspect, "reversed": self.reversed,
        }


@dataclass
class _Holding:
    """Our exposure on one symbol, and the (trade, leg) pairs that make it up."""

    signed: float = 0.0
    legs: list[tuple[Any, Any]] = field(default_factory=list)


def _sign(value: float) -> int:
    return 1 if value > QTY_EPSILON else -1 if value < -QTY_EPSILON else 0


def judge(ours: float, exchange: float) -> str:
    """The verdict for one symbol from the two signed quantities (pure)."""
    if _sign(ours) == 0:
        return VERDICT_OK if _sign(exchange) == 0 else VERDICT_EXTERNAL
    if _sign(exchange) == -_sign(ours):
        return VERDICT_OPPOSITE
    if abs(exchange) < abs(ours) - QTY_EPSILON:
        return VERDICT_SHORTFALL
    return VERDICT_EXTERNAL if abs(exchange) > abs(ours) + QTY_EPSILON else VERDICT_OK


def _shown(value: object) -> str:
    """A value of an exchange order as an alert shows it: ``?`` when the exchange did not give it."""
    return "?" if value is None else str(value)


def _trade_seqs(orders: Iterable[ExchangeOrder]) -> list[int]:
    """The trade sequences encoded in the clientOrderIds of ``orders`` (orders without one have none)."""
    return [parse_client_order_id(order.client_order_id).trade_seq for order in orders
            if order.client_order_id is not None]


def _vwap_of_newest(fills: list[tuple[float, float]], qty: float) -> float:
    """VWAP of the first ``qty`` of ``fills`` ((qty, price), newest first)."""
    remaining, value = qty, 0.0
    for fill_qty, price in fills:
        take = min(remaining, fill_qty)
        value += take * price
        remaining -= take
        if remaining <= QTY_EPSILON:
            break
    return value / qty


class Reconciler:
    """Start-up and periodic reconciliation; registered on the monitor before the lifecycle.

    Construction puts the lifecycle on hold; the first successful start-up reconciliation
    releases it. ``attach_runners`` gives it the runners it may pause (strategies without a
    runner get the pause written to their stored runner state).
    """

    callback_name = "Reconciler"   # how the monitor names this callback

    def __init__(self, *, client: ReconcilerClient, ledger: ReconcilerLedger, lifecycle: ReconcilerLifecycle,
                 store: ReconcilerStore | None, clock: Clock, alerts: AlertSender | None = None,
                 journal: Callable[[str, Mapping[str, Any]], None] | None = None, quarantined: Path | None = None,
                 interval_seconds: float = RECONCILE_INTERVAL_SECONDS,
                 order_min_age_seconds: float = ORDER_MIN_AGE_SECONDS,
                 evidence_interval_seconds: float | None = None) -> None:
        require("Reconciler client", client, ReconcilerClient)
        require("Reconciler ledger", ledger, ReconcilerLedger)
        require("Reconciler lifecycle", lifecycle, ReconcilerLifecycle)
        if store is not None:
            require("Reconciler store", store, ReconcilerStore)
        require("Reconciler clock", clock, Clock)
        if alerts is not None:
            require("Reconciler alerts", alerts, AlertSender)
        self.client = client
        self.ledger = ledger
        self.lifecycle = lifecycle
        self.store = store
        self.clock = clock
        self.alerts = alerts
        self.journal = journal
        self.quarantined = quarantined
        self.interval_seconds = float(interval_seconds)
        self.order_min_age_seconds = float(order_min_age_seconds)
        # The trade history of a symbol is read at most once per reconciliation interval.
        self.evidence_interval_seconds = float(self.interval_seconds if evidence_interval_seconds is None
                                               else evidence_interval_seconds)
        self._runners: dict[str, RunnerControl] = {}
        self.started = False
        self.last_report: ReconcileReport | None = None
        self._next_run_at: float | None = None
        self._startup_failures = 0
        self._seen_external: set[str] = set()
        self._alerted_missing: set[int] = set()
        self._late_checked: set[int] = set()
        self._suspects: dict[str, tuple[str, float, float]] = {}   # mismatches awaiting confirmation
        self._suspect: dict[str, tuple[float, float]] = {}   # symbol -> (ours, exchange) read short, no evidence
        self._evidence_cache: dict[tuple[str, int, float], tuple[float, list[tuple[float, float, float]]]] = {}
        self._reversals_pending: dict[str, tuple] = {}
        self._unmatched_reported: set[str] = set()
        self._repeats = RepeatLimiter(clock)
        self._pending_markers: list[tuple[float, dict]] = []
        self._foreign: set[int] | None = None      # orders with our prefix known not to be ours
        self._new_state_dir = False
        self._startup_checks: list[Callable[[], None]] = []
        lifecycle.hold("start-up reconciliation: positions not read yet")

    def __repr__(self) -> str:
        return f"Reconciler(started={self.started})"

    def attach_runners(self, runners: Iterable[RunnerControl]) -> None:
        attached = list(runners)
        for runner in attached:
            require("Reconciler runner", runner, RunnerControl)
        self._runners = {runner.name: runner for runner in attached}

    def add_startup_check(self, check: Callable[[], None]) -> None:
        """Run ``check()`` before the start-up reconciliation; a ``TraderError`` from it means
        "not yet": nothing is reconciled or released, and it is tried again on the next poll.
        ``main`` uses it when the state directory's exchange could not be verified at start."""
        self._startup_checks.append(check)

    def note_new_state_dir(self) -> None:
        """This start is the state directory's first (no exchange record before it).

        A new, empty store then has lost nothing: positions on the account are only
        evidence of a lost store when orders of ours show in the history too.
        """
        self._new_state_dir = True

    # ---- monitor callbacks ---------------------------------------------------------------

    def __call__(self, snapshot: AccountSnapshot) -> None:
        now = self.clock.now()
        if not self.started:
            self._try_startup(snapshot, now)
            return
        if self._next_run_at is not None and now < self._next_run_at:
            return
        self._next_run_at = now + self.interval_seconds
        try:
            self.periodic(snapshot)
        except TraderError as exc:
            logger.warning("periodic reconciliation incomplete (%s); next in %.0f s", exc, self.interval_seconds)

    def on_snapshot_error(self, error: Exception) -> None:
        if not self.started:
            logger.warning("start-up reconciliation waits for the positions (%s): no order, no exit, no entry",
                           error)

    # ---- start-up ------------------------------------------------------------------------

    def _try_startup(self, snapshot: AccountSnapshot, now: float) -> None:
        try:
            report = self.startup(snapshot)
        except TraderError as exc:
            self._startup_failures += 1
            logger.warning("start-up reconciliation failed (%s); retrying on the next poll", exc)
            if self._startup_failures == STARTUP_FAILURE_ALERT_AFTER:
                self._alert("CRITICAL", "reconciliation_blocked",
                            f"start-up reconciliation failed {self._startup_failures} times ({exc}): the daemon "
                            f"places no order until it succeeds")
            return
        except Exception as exc:  # noqa: BLE001 - a bug here must not freeze the exits
            logger.exception("start-up reconciliation crashed")
            self._alert("CRITICAL", "reconciliation_failed",
                        f"start-up reconciliation crashed ({type(exc).__name__}: {exc}); entries paused, "
                        f"exits continue")
            for name in self._strategy_names():
                self._pause(name, "start-up reconciliation failed")
            self._finish_startup(now)
            return
        self._finish_startup(now)
        logger.info("reconciliation %s", report.summary())

    def _finish_startup(self, now: float) -> None:
        self.started = True
        self._next_run_at = now + self.interval_seconds
        self.lifecycle.release()

    def startup(self, snapshot: AccountSnapshot) -> ReconcileReport:
        """Apply the decision table once; raises ``TraderError`` (nothing decided) to be retried."""
        for check in self._startup_checks:
            check()
        now = self.clock.now()
        report = ReconcileReport("startup", now)
        unsettled = {order.symbol for order in self.ledger.live_orders()}
        for order in self.ledger.live_orders():
            self.ledger.poll(order)
            report.orders_checked += 1
        unsettled |= self._adopt_block_accepts(report, now, startup=True)
        self._refresh_active_trades()
        listed = parse_orders(self.client.all_pending_orders())
        report.quarantine = self._memory_check(snapshot, listed, report, now)
        self._reconcile_orders(report, now, listed)
        self._compare_positions(snapshot, report, unsettled, confirm=False)
        self._journal(report)
        self.last_report = report
        return report

    # ---- periodic ------------------------------------------------------------------------

    def periodic(self, snapshot: AccountSnapshot) -> ReconcileReport:
        now = self.clock.now()
        report = ReconcileReport("periodic", now)
        unsettled = self._adopt_block_accepts(report, now, startup=False)
        self._reconcile_orders(report, now)
        self._watch_history(report, now)
        self._recheck_recent_finals(report, now)
        unsettled |= {order.symbol for order in self.ledger.live_orders()}
        snapshot_ts = float(snapshot.timestamp)
        unsettled |= {order.symbol for order in self.ledger.orders() if float(order.updated_at) >= snapshot_ts}
        for trade in self.lifecycle.active_trades():
            if self.lifecycle.has_job(trade.id):
                unsettled |= {leg.symbol for leg in trade.legs}
        self._compare_positions(snapshot, report, unsettled, confirm=True)
        if any((report.orders_missing, report.foreign_orders, report.block_fills_adopted, report.late_fills,
                report.external_closes, report.blocked_symbols, report.orders_vanished, report.reversed)):
            logger.warning("reconciliation %s", report.summary())
            self._journal(report)
        else:
            logger.debug("reconciliation %s", report.summary())
        self.last_report = report
        return report

    # ---- RFQ accepts whose answer may be lost --------------------------------------------

    def _adopt_block_accepts(self, report: ReconcileReport, now: float, *, startup: bool) -> set[str]:
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

    def _refresh_active_trades(self) -> None:
        for trade in self.lifecycle.active_trades():
            self.lifecycle.refresh_fills(trade.id)

    # ---- orders ----------------------------------------------------------------------------

    def _reconcile_orders(self, report: ReconcileReport, now: float,
                          listed: list[ExchangeOrder] | None = None) -> None:
        """All pages of open orders vs the ledger (BEHAVIOUR 6.1); ``listed`` if already read."""
        if listed is None:
            listed = parse_orders(self.client.all_pending_orders())
        listed_ids: set[int] = set()
        unknown: list[ExchangeOrder] = []
        for item in listed:
            coid = item.client_order_id
            if item.order_id is not None:
                listed_ids.add(item.order_id)
            if coid is None or not self._is_ours(coid) or self.ledger.get(coid) is not None:
                continue
            unknown.append(item)
        self._unknown_orders(unknown, report, source="open")
        self._verify_unlisted(report, now, listed_ids)

    def _verify_unlisted(self, report: ReconcileReport, now: float, listed_ids: set[int]) -> None:
        """Rows O4, O5, O8: ledger orders the open list does not show, and vanished ones it shows again."""
        for order in self.ledger.orders():
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

    def _recheck_recent_finals(self, report: ReconcileReport, now: float) -> None:
        """Poll once more every order that ended unfilled in the last minutes (late fill reports)."""
        for order in self.ledger.orders():
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

    def _is_ours(self, client_order_id: int) -> bool:
        try:
            return parse_client_order_id(client_order_id).prefix == self.ledger.prefix
        except (ValueError, TypeError):
            return False

    def _unknown_orders(self, items: list[ExchangeOrder], report: ReconcileReport, *, source: str) -> None:
        """Orders with our prefix that the ledger never recorded: reported once, never touched.

        The ledger records every order before sending it, so such an order was not sent by
        this store's daemon: another daemon with our prefix, or a restored older store. It is
        not provably ours, so it is not cancelled (incident 40); entries stop instead, and the
        operator is told which orders and what to do (docs/RECOVERY.md row O2).
        """
        new = self._not_yet_reported(items)
        if not new:
            return
        coids = [coid for coid, _item in new]
        report.foreign_orders.extend(coids)
        self._remember_foreign(new, source)
        highest = max(parse_client_order_id(coid).trade_seq for coid in coids)
        reseeded = self._reseed([highest], margin=True)
        reason = f"orders with our clientOrderId prefix {self.ledger.prefix} that are not ours on the exchange"
        for name in self._strategy_names():
            if self._pause(name, reason):
                report.paused.append(name)
        blocked = self._block_symbols(new, report, reason, every_symbol=False)
        block_text = (f"; no order of ours goes to {', '.join(blocked)} (one of our trade sequences is in use "
                      f"there) until a resume" if blocked else "")
        sequence = reseeded if reseeded is not None else self._counter(TRADE_SEQ_COUNTER)
        self._alert("CRITICAL", "prefix_conflict",
                    f"{len(coids)} {source} order(s) on the exchange carry our clientOrderId prefix "
                    f"{self.ledger.prefix} but are not in our ledger: {self._describe(new)}. Another daemon uses "
                    f"prefix {self.ledger.prefix} on this account, or this state directory was restored from an "
                    f"older copy. They are left untouched (not provably ours); every strategy is paused and our "
                    f"trade sequence continues above {sequence}{block_text}. Fix: give each daemon on the account "
                    f"its own CLIENT_ORDER_PREFIX (100-899), or, if an older state was restored, stop this daemon and "
                    f"start it on the newest state directory; cancel those orders by hand if they are yours; then "
                    f"`python main.py resume`",
                    client_order_ids=coids[:ALERT_NAMES_AT_MOST], count=len(coids), source=source,
                    highest_trade_seq=highest)

    def _block_symbols(self, unknown: list[tuple[int, ExchangeOrder]], report: ReconcileReport, reason: str,
                       *, every_symbol: bool) -> list[str]:
        """No order of ours where an unknown order could be mistaken for ours, until an operator resumes.

        A trade sequence we used ourselves means its next clientOrderIds may equal the
        unknown ones (an exchange lookup by clientOrderId would then find the wrong order);
        ``every_symbol`` (a store behind the exchange) also blocks symbols whose picture is
        stale, so a reduce-only exit cannot close a position some unknown trade holds.
        """
        ours = {parse_client_order_id(order.client_order_id).trade_seq for order in self.ledger.orders()}
        blocked: list[str] = []
        for coid, item in unknown:
            symbol = item.symbol
            if not symbol or symbol in blocked:
                continue
            if every_symbol or parse_client_order_id(coid).trade_seq in ours:
                blocked.append(symbol)
                if self.ledger.block_symbol(symbol, reason):
                    report.blocked_symbols.append(symbol)
        return blocked

    def _copies_text(self) -> str:
        copies = self._recovery_copies()
        return f" (a recovery copy exists: {', '.join(str(c) for c in copies)})" if copies else ""

    def _store(self) -> ReconcilerStore:
        """The store, for the steps that run only when there is one (the start-up memory check)."""
        if self.store is None:
            raise ValueError("this reconciliation step needs the state store")
        return self.store

    def _recovery_copies(self) -> list[Path]:
        path = Path(self._store().path)
        return sorted(path.parent.glob(path.name + ".recovered*"))

    def _not_yet_reported(self, items: Iterable[ExchangeOrder]) -> list[tuple[int, ExchangeOrder]]:
        """(clientOrderId, item) of the unknown orders of ours not reported before, in order."""
        known = self._foreign_orders()
        found: dict[int, ExchangeOrder] = {}
        for item in items:
            coid = item.client_order_id
            if coid is None or coid in known or coid in found or not self._is_ours(coid):
                continue
            if self.ledger.get(coid) is None:
                found[coid] = item
        return list(found.items())

    def _foreign_orders(self) -> set[int]:
        """Orders already reported as not ours: this life's, and earlier lives' from the journal."""
        if self._foreign is None:
            self._foreign = set()
            if self.store is not None:
                for event in self.store.events(FOREIGN_ORDERS_EVENT):
                    ids = (event.get("payload") or {}).get("client_order_ids") or []
                    self._foreign.update(int(coid) for coid in ids if isinstance(coid, int))
        return self._foreign

    def _remember_foreign(self, new: list[tuple[int, ExchangeOrder]], source: str,
                          keep: set[int] | None = None) -> None:
        """Reported once: in memory for this life, in the journal for the next ones.

        ``keep`` limits what the journal keeps to the orders a later start can see again
        (open ones, and history inside the re-read overlap); None keeps them all.
        """
        coids = [coid for coid, _item in new]
        self._foreign_orders().update(coids)
        kept = [coid for coid in coids if keep is None or coid in keep]
        if self.journal is not None and kept:
            self.journal(FOREIGN_ORDERS_EVENT, {
                "source": source, "client_order_ids": kept,
                "orders": [self._order_detail(coid, item) for coid, item in new[:ALERT_NAMES_AT_MOST]]})

    def _seen_again(self, new: list[tuple[int, ExchangeOrder]], now: float) -> set[int]:
        """The orders a later start may see again: open ones and those inside the history overlap."""
        open_states = {None, -1, 0, 2, 4, 5}   # not final (PRE, NEW, PARTIAL, cancelling), or no state
        recent = now - 2 * HISTORY_OVERLAP_SECONDS
        return {coid for coid, item in new
                if item.state in open_states or self._created(item) >= recent}

    @staticmethod
    def _order_detail(coid: int, item: ExchangeOrder) -> dict:
        return {"client_order_id": coid, "order_id": item.order_id, "symbol": item.symbol, "side": item.side,
                "qty": item.qty, "fill_qty": item.fill_qty, "price": item.price, "state": item.state,
                "reduce_only": item.reduce_only}

    @staticmethod
    def _describe(new: list[tuple[int, ExchangeOrder]]) -> str:
        parts = []
        for coid, item in new[:ALERT_NAMES_AT_MOST]:
            side = item.side.name if item.side is not None else "?"
            parts.append(f"{coid} ({_shown(item.symbol)} {side} {_shown(item.qty)} @ {_shown(item.price)}, "
                         f"orderId {_shown(item.order_id)})")
        more = f" and {len(new) - ALERT_NAMES_AT_MOST} more" if len(new) > ALERT_NAMES_AT_MOST else ""
        return ", ".join(parts) + more

    # ---- positions -------------------------------------------------------------------------

    def _holdings(self, now: float) -> dict[str, _Holding]:
        holdings: dict[str, _Holding] = {}
        for trade in self.lifecycle.active_trades():
            if trade.state is TradeState.SETTLING:
                continue
            for leg in trade.legs:
                if abs(leg.net_qty) <= QTY_EPSILON or leg.is_expired(now):
                    continue  # expired legs are settled by the lifecycle (BEHAVIOUR 4.5)
                holding = holdings.setdefault(leg.symbol, _Holding())
                holding.signed += leg.sign * leg.net_qty
                holding.legs.append((trade, leg))
        return holdings

    @staticmethod
    def _positions(snapshot: AccountSnapshot) -> dict[str, tuple[float, Any]]:
        positions: dict[str, tuple[float, Any]] = {}
        for position in snapshot.positions:
            signed = float(position.signed_qty)
            previous = positions.get(position.symbol, (0.0, position))[0]
            positions[position.symbol] = (previous + signed, position)
        return positions

    def _compare_positions(self, snapshot: AccountSnapshot, report: ReconcileReport, unsettled: set[str], *,
                           confirm: bool) -> None:
        """The per-symbol table (docs/RECOVERY.md S1-S6, X1-X2) on one positions read.

        ``confirm``: a shortfall, an opposite side or a reappearing old estimate acts only
        when the previous check saw the same quantities (periodic runs); the start-up acts at
        once. A shortfall books an external close only for the part that fills which are not
        ours explain; the rest is a suspect read (``_update_suspicion``).
        """
        now = self.clock.now()
        positions = self._positions(snapshot)
        self._reverse_old_estimates(self._holdings(now), positions, unsettled, report, confirm=confirm)
        holdings = self._holdings(now)
        pending: dict[str, tuple[str, float, float]] = {}
        unexplained: dict[str, tuple[float, float]] = {}
        carried: set[str] = set()
        for symbol in sorted(set(holdings) | set(positions)):
            ours = holdings[symbol].signed if symbol in holdings else 0.0
            exchange, _position = positions.get(symbol, (0.0, None))
            verdict = judge(ours, exchange)
            if symbol in unsettled and verdict in (VERDICT_SHORTFALL, VERDICT_OPPOSITE):
                verdict = VERDICT_DEFERRED
            report.symbols.append(SymbolCheck(symbol, round(ours, 8), round(exchange, 8), verdict))
            if verdict == VERDICT_DEFERRED:
                carried.add(symbol)   # not judged now: a suspicion on it stands
                continue
            if verdict == VERDICT_EXTERNAL:
                if symbol not in self._seen_external:
                    self._seen_external.add(symbol)
                    logger.info("position %s %+g is beyond our trades' %+g: external, left alone", symbol,
                                exchange, ours)
                continue
            if verdict not in (VERDICT_SHORTFALL, VERDICT_OPPOSITE):
                continue
            key = (verdict, round(ours, 8), round(exchange, 8))
            pending[symbol] = key
            if confirm and self._suspects.get(symbol) != key:
                carried.add(symbol)
                logger.warning("reconciliation: %s %s (ours %+g, exchange %+g); acting if the next check agrees",
                               symbol, verdict, ours, exchange)
                continue
            if verdict == VERDICT_OPPOSITE:
                self._opposite_side(symbol, holdings[symbol], exchange, report)
                continue
            left = self._shortfall(symbol, holdings[symbol], exchange, report)
            if left > QTY_EPSILON:   # what our trades still hold there after what evidence booked
                unexplained[symbol] = (round(exchange + _sign(ours) * left, 8), round(exchange, 8))
        self._suspects = pending
        self._update_suspicion(unexplained, carried, holdings, positions, report)

    def _opposite_side(self, symbol: str, holding: _Holding, exchange: float, report: ReconcileReport) -> None:
        strategies = sorted({trade.strategy for trade, _leg in holding.legs})
        reason = f"position on {symbol} is {exchange:+g}, opposite to our {holding.signed:+g}"
        if self.ledger.block_symbol(symbol, reason):
            report.blocked_symbols.append(symbol)
            self._alert("CRITICAL", "opposite_position",
                        f"{reason}: no order on {symbol} and strategies {strategies} paused until an operator "
                        f"resumes them", symbol=symbol, ours=holding.signed, exchange=exchange)
        for name in strategies:
            if self._pause(name, f"opposite-side position on {symbol}"):
                report.paused.append(name)

    # ---- shortfalls: evidence before belief ----------------------------------------------------

    def _shortfall(self, symbol: str, holding: _Holding, exchange: float, report: ReconcileReport) -> float:
        """Book the part of a shortfall that fills which are not ours explain; returns the rest.

        A position that disappears is not a close: only fills on the closing side that no
        order of ours made (the exchange's trade history, since the trade opened) prove that
        somebody closed it. That part is booked on the legs, newest trade first, at the price
        of those fills; what no fill explains is left as it is (a suspect read).
        """
        missing = abs(holding.signed) - max(0.0, abs(exchange))
        direction = _sign(holding.signed)
        legs = sorted((pair for pair in holding.legs if pair[1].sign == direction),
                      key=lambda pair: pair[0].seq, reverse=True)
        since = min(float(trade.opened_at or trade.created_at) for trade, _leg in legs)
        fills = self._evidence(symbol, direction, since)
        evidenced = min(missing, sum(qty for qty, _price in fills))
        if evidenced <= QTY_EPSILON:
            return missing
        price = _vwap_of_newest(fills, evidenced)
        todo = evidenced
        for trade, leg in legs:
            if todo <= QTY_EPSILON:
                break
            qty = min(todo, leg.net_qty)
            self.lifecycle.record_external_close(
                trade.id, leg.index, qty, price,
                detail=f"exchange shows {exchange:+g} on {symbol} against our {holding.signed:+g}; "
                       f"{evidenced:g} explained by fills that are not ours at {price:g}")
            todo -= qty
            report.external_closes.append(f"{trade.id}:{symbol}:{qty:g}")
            if self._pause(trade.strategy, f"position on {symbol} closed outside the daemon"):
                report.paused.append(trade.strategy)
        for key in [key for key in self._evidence_cache if key[0] == symbol]:
            del self._evidence_cache[key]        # read again next time: what was booked is discounted
        return max(0.0, missing - evidenced)

    def _evidence(self, symbol: str, direction: int, since: float) -> list[tuple[float, float]]:
        """(qty, price) of fills on ``symbol`` not made by us, on the closing side, newest first.

        Fills since ``since`` (the oldest trade holding the symbol opened), minus the oldest
        ones already used to book external closes of our trades since then. Read at most
        once per symbol per ``evidence_interval_seconds``; an unreadable history is no
        evidence (retried on the next check).
        """
        key = (symbol, direction, round(since, 3))
        cached = self._evidence_cache.get(key)
        now = self.clock.now()
        if cached is not None and now - cached[0] < self.evidence_interval_seconds:
            fills = cached[1]
        else:
            try:
                fills = self._foreign_closing_fills(symbol, direction, since)
            except TraderError as exc:
                self._repeats.warning(logger, ("history", symbol), "fill history of %s unavailable (%s): no "
                                      "evidence of a close this time", symbol, exc)
                fills = []
            self._evidence_cache[key] = (now, fills)
        oldest_first = sorted(fills, key=lambda fill: fill[0])
        skip = self._already_booked(symbol, since)
        usable: list[tuple[float, float]] = []
        for _time, qty, price in oldest_first:
            used = min(skip, qty)
            skip -= used
            if qty - used > QTY_EPSILON:
                usable.append((qty - used, price))
        usable.reverse()
        return usable

    def _foreign_closing_fills(self, symbol: str, direction: int, since: float) -> list[tuple[float, float, float]]:
        """(time, qty, price) of every fill in the trade history of ``symbol`` since ``since``
        (all pages) on the closing side whose order is not ours (by orderId or by prefix)."""
        closing_side = Side.SELL if direction > 0 else Side.BUY
        ours = {o.order_id for o in self.ledger.orders() if o.order_id is not None}
        filters = history_filters(page_size=HISTORY_PAGE_SIZE, symbol=symbol, start_ms=int(since * 1000),
                                  end_ms=self.clock.now_ms())
        found: list[tuple[float, float, float]] = []
        for _page in range(EVIDENCE_MAX_PAGES):
            page = parse_fill_page(self.client.trade_history(**filters))
            for fill in page.rows:
                if fill.symbol != symbol or fill.side != closing_side:
                    continue
                if fill.order_id in ours or self._coid_is_ours(fill.client_order_id):
                    continue
                when = (fill.time_ms or 0.0) / 1000.0
                qty, price = fill.qty, fill.price
                if when < since or qty is None or price is None or qty <= 0 or price < 0:
                    continue
                found.append((when, qty, price))
            cursor = page.next_cursor
            if not page.has_next or cursor is None:
                break
            filters = next_page_filters(filters, cursor)
        return found

    def _already_booked(self, symbol: str, since: float) -> float:
        """External quantity booked on ``symbol`` by trades active or ended since ``since``."""
        total = 0.0
        for trade in self.lifecycle.trades():
            ended = trade.closed_at if trade.closed_at is not None else trade.failed_at
            if trade.is_active or (ended is not None and float(ended) >= since):
                total += sum(leg.external_qty for leg in trade.legs if leg.symbol == symbol)
        return total

    def _update_suspicion(self, unexplained: dict[str, tuple[float, float]], carried: set[str],
                          holdings: dict[str, _Holding], positions: dict[str, tuple[float, Any]],
                          report: ReconcileReport) -> None:
        """Start, extend or end a suspect-read episode (docs/RECOVERY.md row S6).

        Our trades are kept exactly as they are (exits and closes go on); entries are held
        while any symbol we hold reads short without evidence; the operator hears once when
        it starts and once when it ends.
        """
        before = self._suspect
        now_suspect = {symbol: value for symbol, value in before.items() if symbol in carried}
        now_suspect.update(unexplained)
        report.suspect = sorted(now_suspect)
        if now_suspect and not before:
            self._start_suspicion(now_suspect, positions)
        elif now_suspect and set(now_suspect) - set(before):
            added = sorted(set(now_suspect) - set(before))
            logger.warning("suspect positions read now also on %s", ", ".join(added))
            self.lifecycle.hold_entries(SUSPECT_HOLD_KEY, self._suspect_reason(now_suspect))
        elif before and not now_suspect:
            self._end_suspicion(before, holdings, positions)
        self._suspect = now_suspect

    def _start_suspicion(self, suspect: dict[str, tuple[float, float]], positions: dict[str, tuple[float, Any]]) -> None:
        reason = self._suspect_reason(suspect)
        self.lifecycle.hold_entries(SUSPECT_HOLD_KEY, reason)
        flat = "the account reads flat" if not positions else "positions read short"
        listing = "; ".join(f"{symbol}: exchange {exchange:+g}, our trades {ours:+g}"
                            for symbol, (ours, exchange) in sorted(suspect.items()))
        self._alert("CRITICAL", "suspect_positions_read",
                    f"{flat} while our trades hold exposure, and no fill that is not ours explains it ({listing}). "
                    f"Nothing is booked as closed: the trades stay as they are and keep their exit rules; new "
                    f"entries are held until the positions show again. Check the positions on the exchange "
                    f"(web UI or `python main.py status`); if they are really gone, find out who closed them: a "
                    f"close is booked as soon as its fills appear in the trade history",
                    symbols={symbol: {"ours": ours, "exchange": exchange}
                             for symbol, (ours, exchange) in sorted(suspect.items())})

    def _end_suspicion(self, before: dict[str, tuple[float, float]], holdings: dict[str, _Holding],
                       positions: dict[str, tuple[float, Any]]) -> None:
        self.lifecycle.release_entries(SUSPECT_HOLD_KEY)
        how: dict[str, str] = {}
        for symbol in sorted(before):
            if symbol not in holdings:
                how[symbol] = "no longer held by our trades"
            elif symbol in positions:
                how[symbol] = f"shows {positions[symbol][0]:+g} again"
            else:
                how[symbol] = "resolved"
        shown = [symbol for symbol, text in how.items() if text.startswith("shows")]
        text = "; ".join(f"{symbol} {value}" for symbol, value in how.items())
        if shown:
            self._alert("WARNING", "positions_reappeared",
                        f"the positions read as missing show again ({text}): suspicion cleared, entries resume",
                        symbols=how)
        else:
            self._alert("WARNING", "suspect_positions_resolved",
                        f"the suspect positions read is over ({text}): entries resume", symbols=how)

    @staticmethod
    def _suspect_reason(suspect: dict[str, tuple[float, float]]) -> str:
        return "positions read short of our trades without evidence on " + ", ".join(sorted(suspect))

    # ---- reversal of external closes booked without evidence (older versions) -----------------

    def _reverse_old_estimates(self, holdings: dict[str, _Holding], positions: dict[str, tuple[float, Any]],
                               unsettled: set[str], report: ReconcileReport, *, confirm: bool) -> None:
        """A position that shows again exactly as an old estimated external close took it away.

        Older versions booked a missing position as closed at the mark (``pnl_estimated``)
        with no fill to back it. When the exchange shows, beyond what our active trades hold,
        exactly the quantities such a recent trade lost on every one of its legs, that trade
        is reopened so that its own exit rules manage the position again (docs/RECOVERY.md
        X1). Anything less than an exact match is only reported (X2): it could be somebody
        else's position, and the daemon never takes over a position on a guess.
        """
        extra = {symbol: positions.get(symbol, (0.0, None))[0] - (holdings[symbol].signed if symbol in holdings
                                                                   else 0.0)
                 for symbol in set(positions) | set(holdings)}
        pending: dict[str, tuple] = {}
        for trade in sorted(self.lifecycle.reversible_external_closes(), key=lambda t: t.seq, reverse=True):
            need: dict[str, float] = {}
            for leg in trade.legs:
                if leg.external_qty > QTY_EPSILON:
                    need[leg.symbol] = need.get(leg.symbol, 0.0) + leg.sign * leg.external_qty
            if not need or any(symbol in unsettled for symbol in need):
                continue
            if all(abs(extra.get(symbol, 0.0) - qty) <= QTY_EPSILON for symbol, qty in need.items()):
                key = tuple(sorted((symbol, round(qty, 8)) for symbol, qty in need.items()))
                pending[trade.id] = key
                if confirm and self._reversals_pending.get(trade.id) != key:
                    continue
                if self.lifecycle.reverse_external_close(
                        trade.id, f"the exchange shows {', '.join(f'{s} {q:+g}' for s, q in key)} beyond our "
                                  f"active trades again") is not None:
                    report.reversed.append(trade.id)
                    for symbol, qty in need.items():
                        extra[symbol] = extra.get(symbol, 0.0) - qty
                continue
            if any(_sign(extra.get(symbol, 0.0)) == _sign(qty) for symbol, qty in need.items()):
                self._report_unmatched(trade, need, extra)
        self._reversals_pending = pending

    def _report_unmatched(self, trade: Any, need: dict[str, float], extra: dict[str, float]) -> None:
        if trade.id in self._unmatched_reported:
            return
        self._unmatched_reported.add(trade.id)
        shows = ", ".join(f"{symbol} {extra.get(symbol, 0.0):+g} (trade lost {qty:+g})" for symbol, qty in need.items())
        self._alert("CRITICAL", "external_close_unmatched",
                    f"trade {trade.id} ({trade.strategy}) was booked closed outside the daemon without evidence, and "
                    f"the exchange shows positions on its symbols again beyond our trades ({shows}), but not exactly "
                    f"what it lost: not reopened. Those positions are managed by no trade. Check them; close them "
                    f"with `python main.py kill --all-positions --yes` or by hand", trade_id=trade.id,
                    need=need, shows={symbol: extra.get(symbol, 0.0) for symbol in need})

    # ---- lost memory: quarantined, missing or older store ---------------------------------------

    def _memory_check(self, snapshot: AccountSnapshot, listed: list[ExchangeOrder], report: ReconcileReport,
                      now: float) -> dict | None:
        """At every start: does the store remember everything the exchange shows of ours?

        Reads our order history since the store's last check (89 days for a store that never
        had one), re-seeds the trade sequence above every trade sequence seen (plus
        ``SEQ_RESEED_MARGIN`` when some are unknown to the ledger), then decides:
        a quarantined or missing store is rows Q1-Q3 / L2; unknown orders behind a store
        that has a history are row L3 (store behind the exchange) or O2. Returns the probe
        for the report (None when nothing was lost or unknown).
        """
        if self.store is None:
            return None
        lost = self._lost_memory()
        watermark = self._counter(ORDER_HISTORY_WATERMARK) / 1000.0
        since = now - SEQ_RESEED_LOOKBACK_SECONDS
        if lost is None and watermark > 0:
            since = max(since, watermark - HISTORY_OVERLAP_SECONDS)
        until_ms = self.clock.now_ms()
        history = self._prefixed_history(since, until_ms)
        prefixed_open = [item for item in listed if self._coid_is_ours(item.client_order_id)]
        seen = history + prefixed_open
        seqs = _trade_seqs(seen)
        unknown = self._not_yet_reported(seen)
        counter_before = self._counter(TRADE_SEQ_COUNTER)
        reseeded = self._reseed(seqs, margin=bool(unknown))
        self.store.raise_counter_to(ORDER_HISTORY_WATERMARK, until_ms)
        if reseeded is not None:
            logger.warning("trade sequence re-seeded to %d from the exchange's order history", reseeded)
        if lost is not None:
            return self._lost_memory_start(lost, snapshot, prefixed_open, history, unknown, report, now)
        if not unknown:
            return None
        highest = max(parse_client_order_id(coid).trade_seq for coid, _item in unknown)
        if highest <= counter_before:
            self._unknown_orders([item for _coid, item in unknown], report, source="start-up")
            return {"unknown_orders": len(unknown), "max_trade_seq": highest}
        return self._store_behind(unknown, report, counter_before, highest)

    def _lost_memory(self) -> str | None:
        """Why the store cannot be trusted to know our orders, or None."""
        if self.quarantined is not None:
            return "quarantined"
        if self._counter(ORDER_HISTORY_WATERMARK) == 0 and self._store().holds_nothing():
            return "missing"
        return None

    def _store_behind(self, unknown: list[tuple[int, ExchangeOrder]], report: ReconcileReport,
                      counter_before: int, highest: int) -> dict:
        """Row L3: the exchange shows our orders beyond the store's sequence (an older copy)."""
        coids = [coid for coid, _item in unknown]
        report.foreign_orders.extend(coids)
        self._remember_foreign(unknown, "history", keep=self._seen_again(unknown, self.clock.now()))
        for name in self._strategy_names():
            if self._pause(name, "the state store is behind the exchange"):
                report.paused.append(name)
        blocked = self._block_symbols(unknown, report, "the state store is behind the exchange on this symbol",
                                      every_symbol=True)
        sequence = self._counter(TRADE_SEQ_COUNTER)
        self._alert("CRITICAL", "store_behind",
                    f"the exchange shows {len(coids)} order(s) with our prefix {self.ledger.prefix} that the state "
                    f"store {self._store().path} does not know, up to trade sequence {highest} while the store had "
                    f"reached {counter_before}: {self._describe(unknown)}. The store is older than the exchange "
                    f"(restored from a backup?) or another daemon uses this prefix. Every strategy starts paused; "
                    f"trades of the missing period are not managed and their positions count as external; the trade "
                    f"sequence continues above {sequence}; no order goes to {', '.join(blocked) or 'their symbols'} "
                    f"(our picture of them is stale). Fix: stop the daemon and start it on the newest state "
                    f"directory if there is one{self._copies_text()}; otherwise check `python main.py status`, close "
                    f"or keep what those orders opened by hand, then `python main.py resume` (lifts the pause and "
                    f"the symbol block)",
                    client_order_ids=coids[:ALERT_NAMES_AT_MOST], count=len(coids), store_trade_seq=counter_before,
                    highest_trade_seq=highest)
        return {"unknown_orders": len(coids), "max_trade_seq": highest, "store_trade_seq": counter_before}

    def _lost_memory_start(self, lost: str, snapshot: AccountSnapshot, prefixed_open: list[ExchangeOrder],
                           history: list[ExchangeOrder], unknown: list[tuple[int, ExchangeOrder]],
                           report: ReconcileReport, now: float) -> dict:
        """Rows Q1-Q3 and L2: a fresh store; pause everything if the exchange shows anything of ours."""
        positions = [p.symbol for p in snapshot.positions]
        recent = [item for item in history if self._created(item) >= now - QUARANTINE_PROBE_SECONDS]
        seqs = _trade_seqs(history + prefixed_open)
        probe = {"positions": len(positions), "open_orders": len(prefixed_open), "recent_orders": len(recent),
                 "max_trade_seq": max(seqs) if seqs else 0}
        if unknown:
            report.foreign_orders.extend(coid for coid, _item in unknown)
            self._remember_foreign(unknown, "start-up", keep=self._seen_again(unknown, now))
        # A first start on an account with positions of its own has lost nothing.
        positions_count = bool(positions) and (lost == "quarantined" or not self._new_state_dir or bool(history))
        if not (positions_count or prefixed_open or recent):
            level = logging.WARNING if lost == "quarantined" or history else logging.INFO
            logger.log(level, "state store %s (%s) but the exchange shows nothing of ours: normal start",
                       "quarantined" if lost == "quarantined" else "is new or empty", self.quarantined or lost)
            return probe
        what = (f"the state store was quarantined ({self.quarantined})" if lost == "quarantined" else
                f"the state store {self._store().path} is new or empty (deleted or lost?)")
        kind = "quarantine_start" if lost == "quarantined" else "missing_store_start"
        self._alert("CRITICAL", kind,
                    f"{what} and the exchange shows {len(positions)} position(s), {len(prefixed_open)} open order(s) "
                    f"and {len(recent)} order(s) in the last 24 h with our prefix {self.ledger.prefix}: every strategy "
                    f"starts paused; those positions and orders are not managed by any trade and are left untouched"
                    f"{self._open_orders_text(prefixed_open)}. The trade sequence continues above "
                    f"{self._counter(TRADE_SEQ_COUNTER)}, so no clientOrderId is sent twice. What to do: "
                    f"{self._lost_memory_fix()}", **probe)
        for name in self._strategy_names():
            self._pause(name, f"state {'quarantined' if lost == 'quarantined' else 'store missing'} at start-up")
        return probe

    def _open_orders_text(self, prefixed_open: list[ExchangeOrder]) -> str:
        if not prefixed_open:
            return ""
        named = [(item.client_order_id, item) for item in prefixed_open if item.client_order_id is not None]
        return f" (open: {self._describe(named)})"

    def _lost_memory_fix(self) -> str:
        copies = self._recovery_copies()
        restore = (f"a recovery copy exists ({', '.join(str(c) for c in copies)}): stop the daemon, move the newest "
                   f"one to {self._store().path} and start again; otherwise " if copies else "")
        return (f"{restore}check `python main.py status`; close what you do not want with `python main.py kill "
                f"--all-positions --yes` or by hand, cancel the open orders listed if they are yours, then "
                f"`python main.py resume`")

    def _reseed(self, seqs: Iterable[int], *, margin: bool) -> int | None:
        """Raise the trade sequence above every one seen (never lowers it); the new value, or None."""
        highest = max(seqs, default=0)
        if highest <= 0:
            return None
        target = highest + (SEQ_RESEED_MARGIN if margin else 0)
        if target <= self._counter(TRADE_SEQ_COUNTER):
            return None
        return self._store().raise_counter_to(TRADE_SEQ_COUNTER, target)

    def _counter(self, name: str) -> int:
        return int(self.store.counter(name)) if self.store is not None else 0

    def _watch_history(self, report: ReconcileReport, now: float) -> None:
        """While running: orders of ours created since the last check that the ledger does not know.

        One history page per reconciliation as a rule (the read starts at the previous
        check), so a foreign order that filled between two checks is still seen. A failed
        read is retried at the next reconciliation from the same point.
        """
        if self.store is None:
            return
        watermark = self._counter(ORDER_HISTORY_WATERMARK) / 1000.0
        since = max(now - SEQ_RESEED_LOOKBACK_SECONDS,
                    (watermark if watermark > 0 else now - self.interval_seconds) - HISTORY_OVERLAP_SECONDS)
        until_ms = self.clock.now_ms()
        try:
            history = self._prefixed_history(since, until_ms)
        except TraderError as exc:
            logger.warning("order history unavailable (%s): checked again at the next reconciliation", exc)
            return
        self._unknown_orders(history, report, source="history")
        self.store.raise_counter_to(ORDER_HISTORY_WATERMARK, until_ms)

    @staticmethod
    def _created(item: ExchangeOrder) -> float:
        return (item.create_time_ms or 0.0) / 1000.0

    def _coid_is_ours(self, client_order_id: int | None) -> bool:
        return client_order_id is not None and self._is_ours(client_order_id)

    def _prefixed_history(self, since: float, until_ms: int) -> list[ExchangeOrder]:
        """Every order of ours in the history window ``[since, until_ms]``, all pages (cursor paging).

        At most ``HISTORY_MAX_PAGES`` pages of ``HISTORY_PAGE_SIZE``: the cost of a start is
        one request per 500 orders of ours since the last check.
        """
        found: list[ExchangeOrder] = []
        filters = history_filters(page_size=HISTORY_PAGE_SIZE, start_ms=int(since * 1000), end_ms=int(until_ms))
        for _page in range(HISTORY_MAX_PAGES):
            page = parse_order_page(self.client.order_history(**filters))
            found.extend(item for item in page.rows if self._coid_is_ours(item.client_order_id))
            cursor = page.next_cursor
            if not page.has_next or cursor is None:
                break
            filters = next_page_filters(filters, cursor)
        return found

    # ---- pausing, alerts, journal ----------------------------------------------------------------

    def _strategy_names(self) -> list[str]:
        names = set(self._runners)
        names |= {trade.strategy for trade in self.lifecycle.active_trades() if trade.seq != 0}
        return sorted(names)

    def _pause(self, name: str, reason: str) -> bool:
        """Pause a strategy (persisted); True if it was not paused before."""
        runner = self._runners.get(name)
        if runner is not None:
            if runner.is_paused:
                return False
            runner.pause(reason)
            return True
        if self.store is None:
            return False
        try:
            state = dict(self.store.load_runner_state(name) or {})
            if state.get("paused"):
                return False
            state.update(paused=True, pause_reason=reason, pause_until=None)
            self.store.save_runner_state(name, state)
        except Exception:  # noqa: BLE001 - logged; entries of a non-running strategy cannot happen anyway
            logger.exception("could not persist the pause of strategy %s", name)
            return False
        logger.warning("strategy %s (not running) paused in the store: %s", name, reason)
        return True

    def _alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        send_alert(self.alerts, logger, level, kind, message, **detail)

    def _journal(self, report: ReconcileReport) -> None:
        if self.journal is None:
            return
        try:
            self.journal("reconciliation", report.to_event())
        except Exception:  # noqa: BLE001
            logger.exception("journal write of the reconciliation report failed")
