"""Our records against the exchange's: at start-up and every minute (BEHAVIOUR.md 4.7, 6.1).

Why it exists: after a crash, a network outage or a manual intervention, the store can be
behind the exchange. Trading on a wrong picture is how a daemon sells a position twice,
leaves a naked leg, or cancels somebody else's order. The reconciler is the one place that
compares the two and applies the decision table of docs/RECOVERY.md. It is the coordinator
the monitor calls: when to run, in which order, and what holds until the first run has
succeeded; each table is decided by a collaborator it owns, which can be read alone next
to its rows:

* ``order_reconciliation.OrderReconciler``: ledger orders by their ids, orders the open list
  does not show, vanished orders, late fills, RFQ accepts whose answer a crash may have lost
  (rows O1, O3-O8, R1-R3);
* ``prefix_ownership.PrefixOwnership``: orders with our prefix that the ledger does not know
  (open option and perp orders), the trade-sequence re-seed, a quarantined, missing or older
  store (rows O2, L2-L4, Q1-Q3);
* ``position_reconciliation.PositionReconciler``: positions against our trades, external
  closes on evidence only (``close_evidence``: the option trade history, the perp fill
  history), suspect reads, reversal of old estimated closes and of perp closes (rows S1-S6,
  X1-X2);
* ``strategy_pauses.StrategyPauses``: how any of them stops a strategy's entries.

When it runs:

* **Start-up** (first account snapshot after a start): every non-final ledger order is
  queried by its ids (fills adopted, never-sent orders become NOT_PLACED); RFQ accepts whose
  answer a crash may have lost are looked up in the block-trade list; our order history is
  checked against the store's memory; then the open orders, and every symbol we hold is
  compared with the positions. Until this has succeeded the lifecycle is on hold: no order,
  no exit, no entry (a failed read is retried on the next poll, forever).
* **Every 60 s**: all pages of open orders against the ledger (live orders the list does
  not show are verified once they are 30 s old), the order history since the last check,
  orders that ended unfilled in the last minutes, then the positions again. A run that
  fails (any exception) is retried at the next interval; 3 failed runs in a row over at least
  3 minutes raise a CRITICAL ``reconciliation_failing`` (hourly while it lasts) and the first
  run that completes after it a WARNING ``reconciliation_recovered``.

The perp reads (open perp orders, perp fills and order history) come from ``perp_client``
(``seams.PerpReconcilerClient``). Without it, open perp orders are not listed and a perp
shortfall is never explained by fills (it stays a suspect read).

A symbol is only judged when our view of it is settled: no non-final order on it, no
execution job on its trades, no unresolved RFQ accept, and no order activity since the
positions were read. A shortfall is not judged either while an order of ours on it (or on
its trade) is a verdict on missing data still watched (a presumed NOT_PLACED or VANISHED
order, rows O9, O10): that order may have filled, and its fill would pass for somebody
else's. While running, a mismatch must also be seen on two consecutive checks
before anything is done, so a lagging positions answer never books a phantom close.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from account_manager import AccountSnapshot
from alerts import send_alert
from clock import Clock, iso_utc
from close_evidence import orders_in_doubt
from coincall_payloads import ExchangeOrder, parse_orders
from display import fmt_duration, fmt_stamp
from errors import RateLimitedError, TraderError, TransportError
from order_ledger import OrderStatus
from order_reconciliation import LATE_FILL_WATCH_SECONDS, ORDER_MIN_AGE_SECONDS, OrderReconciler
from position_reconciliation import PositionReconciler
from prefix_ownership import PrefixOwnership, perp_open_order
from reconciliation_report import ReconcileReport
from seams import (
    AlertSender,
    PerpReconcilerClient,
    ReconcilerClient,
    ReconcilerLedger,
    ReconcilerLifecycle,
    ReconcilerStore,
    RunnerControl,
    require,
    require_optional,
)
from strategy_pauses import StrategyPauses

logger = logging.getLogger(__name__)

RECONCILE_INTERVAL_SECONDS = 60.0
STARTUP_FAILURE_ALERT_AFTER = 3
# The periodic pass failing this many runs in a row over at least this long: CRITICAL
# ``reconciliation_failing``, again every REALERT seconds while it lasts. Late fills, foreign
# orders and outside closes go unseen meanwhile. Both bounds keep chance runs of transient
# faults quiet (a run makes several reads, none retried inside a tick: at 5 % failing requests
# about one run in six fails, and streaks of 3 come about once a day, measured by the HTTP
# fault campaign); what the alert is for (a bug, a read that never works) fails every run.
PERIODIC_FAILURE_ALERT_RUNS = 3
PERIODIC_FAILURE_ALERT_SECONDS = 180.0
PERIODIC_FAILURE_REALERT_SECONDS = 3600.0
# Failures that mean "the exchange gave no usable answer" (what the client's Reachability counts
# towards DOWN): maybe an outage, which ``exchange_unreachable`` covers, so a streak ending in one
# is said only once an account read after that run shows the exchange answering.
NO_ANSWER_ERRORS: tuple[type[Exception], ...] = (TransportError, RateLimitedError)


@dataclass
class FailedRuns:
    """The periodic runs that failed in a row (any exception); only a completed run ends it."""

    since: float            # clock time of the first failed run
    runs: int = 0
    error: str = ""         # the last failure, "Type: message"
    read_at: float = 0.0    # the account read (snapshot time) the last failed run started from
    no_answer: bool = False  # the last failure was the exchange giving no answer
    alerted_at: float | None = None


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
                 evidence_interval_seconds: float | None = None,
                 perp_client: PerpReconcilerClient | None = None) -> None:
        require("Reconciler client", client, ReconcilerClient)
        require("Reconciler ledger", ledger, ReconcilerLedger)
        require("Reconciler lifecycle", lifecycle, ReconcilerLifecycle)
        require_optional("Reconciler store", store, ReconcilerStore)
        require("Reconciler clock", clock, Clock)
        require_optional("Reconciler alerts", alerts, AlertSender)
        require_optional("Reconciler perp client", perp_client, PerpReconcilerClient)
        self.client = client
        self.perp_client = perp_client
        self.ledger = ledger
        self.lifecycle = lifecycle
        self.clock = clock
        self.alerts = alerts
        self.journal = journal
        self.interval_seconds = float(interval_seconds)
        self.pauses = StrategyPauses(lifecycle, store)
        self.orders = OrderReconciler(client=client, ledger=ledger, lifecycle=lifecycle, store=store, alerts=alerts,
                                      order_min_age_seconds=order_min_age_seconds, pauses=self.pauses)
        self.ownership = PrefixOwnership(client=client, ledger=ledger, store=store, clock=clock, pauses=self.pauses,
                                         alerts=alerts, journal=journal, quarantined=quarantined,
                                         interval_seconds=self.interval_seconds, perp_client=perp_client)
        # The trade history of a symbol is read at most once per reconciliation interval.
        self.positions = PositionReconciler(
            client=client, ledger=ledger, lifecycle=lifecycle, clock=clock, pauses=self.pauses, alerts=alerts,
            evidence_interval_seconds=self.interval_seconds if evidence_interval_seconds is None
            else evidence_interval_seconds, perp_client=perp_client)
        self.started = False
        self.last_report: ReconcileReport | None = None
        self._next_run_at: float | None = None
        self._startup_failures = 0
        self._startup_checks: list[Callable[[], None]] = []
        self.failed_runs: FailedRuns | None = None   # the periodic pass's failing streak, if any
        lifecycle.hold("start-up reconciliation: positions not read yet")

    def __repr__(self) -> str:
        return f"Reconciler(started={self.started})"

    def attach_runners(self, runners: Iterable[RunnerControl]) -> None:
        attached = list(runners)
        for runner in attached:
            require("Reconciler runner", runner, RunnerControl)
        self.pauses.attach(attached)

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
        self.ownership.note_new_state_dir()

    def accept_in_doubt(self, trade_id: str) -> bool:
        """``seams.BlockAcceptWatch``: an RFQ accept of this trade recorded before a restart is not
        resolved yet (``OrderReconciler.accept_in_doubt``)."""
        return self.orders.accept_in_doubt(trade_id)

    def block_trade_found(self, trade_id: str, request_id: str) -> bool:
        """``seams.BlockAcceptWatch``: ``OrderReconciler.block_trade_found``."""
        return self.orders.block_trade_found(trade_id, request_id)

    # ---- monitor callbacks ---------------------------------------------------------------

    def __call__(self, snapshot: AccountSnapshot) -> None:
        now = self.clock.now()
        if not self.started:
            self._try_startup(snapshot, now)
            return
        if self._next_run_at is None or now >= self._next_run_at:
            self._run_periodic(snapshot, now)
        self._judge_failed_runs(snapshot, now)

    def _run_periodic(self, snapshot: AccountSnapshot, now: float) -> None:
        """One periodic run; a failure of any kind is counted here, never raised to the monitor.

        Why here: the next run is a full interval away, so the monitor's own count of a callback
        failing in a row was reset by the wakes in between and never reached its alert; a run
        that fails is only seen by counting runs.
        """
        self._next_run_at = now + self.interval_seconds
        try:
            self.periodic(snapshot)
        except Exception as exc:  # noqa: BLE001 - a bug here must not stop the exits; it is counted and alerted
            if isinstance(exc, TraderError):
                logger.warning("periodic reconciliation incomplete (%s); next in %.0f s", exc, self.interval_seconds)
            else:
                logger.exception("periodic reconciliation crashed; next in %.0f s", self.interval_seconds)
            self._run_failed(f"{type(exc).__name__}: {exc}", isinstance(exc, NO_ANSWER_ERRORS), snapshot, now)
            return
        report = self.last_report
        if report is not None and report.unread:
            # A step passed over a read it could not make (the order history): not a complete run.
            self._run_failed("; ".join(report.unread), report.unread_no_answer, snapshot, now)
            return
        self._run_completed(now)

    def _run_failed(self, error: str, no_answer: bool, snapshot: AccountSnapshot, now: float) -> None:
        """Count a failed run: ``error`` says what failed, ``no_answer`` whether the exchange gave none."""
        streak = self.failed_runs
        if streak is None:
            streak = self.failed_runs = FailedRuns(since=now)
        streak.runs += 1
        streak.error = error
        streak.read_at = float(snapshot.timestamp)
        streak.no_answer = no_answer

    def _run_completed(self, now: float) -> None:
        streak, self.failed_runs = self.failed_runs, None
        if streak is None:
            return
        lasted = fmt_duration(now - streak.since)
        logger.log(logging.WARNING if streak.alerted_at is not None else logging.INFO,
                   "periodic reconciliation completes again after %d failed run(s) in %s", streak.runs, lasted)
        if streak.alerted_at is None:
            return
        # The late-fill recheck looks back only so far: orders that ended before it are not asked again.
        missed = (f"; orders that ended more than {fmt_duration(LATE_FILL_WATCH_SECONDS)} before are not "
                  f"re-checked for late fills: compare the positions on the exchange with `python main.py status`"
                  if now - streak.since > LATE_FILL_WATCH_SECONDS else "")
        self._alert("WARNING", "reconciliation_recovered",
                    f"periodic reconciliation completes again after {streak.runs} failed runs in {lasted}{missed}",
                    runs=streak.runs, since=iso_utc(streak.since), failing_seconds=round(now - streak.since, 3))

    def _judge_failed_runs(self, snapshot: AccountSnapshot, now: float) -> None:
        """CRITICAL ``reconciliation_failing`` once the streak is long enough, hourly while it lasts.

        Judged on every wake with a snapshot, so a streak whose last failure was the exchange
        giving no answer (an outage: ``exchange_unreachable`` speaks for it) is said once an
        account read after that run shows the exchange answering, as ``snapshots_failing`` is
        said only while the exchange answers. A failed poll delivers no snapshot: nothing is
        judged then.
        """
        streak = self.failed_runs
        if streak is None or streak.runs < PERIODIC_FAILURE_ALERT_RUNS \
                or now - streak.since < PERIODIC_FAILURE_ALERT_SECONDS:
            return
        if streak.no_answer and float(snapshot.timestamp) <= streak.read_at:
            return
        if streak.alerted_at is not None and now - streak.alerted_at < PERIODIC_FAILURE_REALERT_SECONDS:
            return
        streak.alerted_at = now
        lasted = fmt_duration(now - streak.since)
        self._alert("CRITICAL", "reconciliation_failing",
                    f"periodic reconciliation has failed {streak.runs} runs in a row for {lasted} (since "
                    f"{fmt_stamp(streak.since)} UTC; last: {streak.error}): late fills are not booked, orders with "
                    f"our prefix the daemon does not know and closes made outside it are not seen, vanished orders "
                    f"are not settled; exits and entries go on from what the daemon believes. It is retried every "
                    f"{fmt_duration(self.interval_seconds)}: read the error in trading.log; compare the open orders "
                    f"and positions on the exchange with `python main.py status`; if it lasts, pause each strategy "
                    f"(`python main.py pause NAME`) and report it",
                    runs=streak.runs, since=iso_utc(streak.since), failing_seconds=round(now - streak.since, 3),
                    error=streak.error)

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
            self.pauses.pause_every("start-up reconciliation failed")
            self._finish_startup(now)
            return
        self._finish_startup(now)
        logger.info("reconciliation %s", report.summary())

    def _finish_startup(self, now: float) -> None:
        self.started = True
        self._next_run_at = now + self.interval_seconds
        self.lifecycle.release()

    def startup(self, snapshot: AccountSnapshot) -> ReconcileReport:
        """Apply the decision table once; raises ``TraderError`` (nothing decided) to be retried.

        The steps of docs/RECOVERY.md "Order of work at start-up", 6.1 to 6.6.
        """
        for check in self._startup_checks:
            check()
        now = self.clock.now()
        report = ReconcileReport("startup", now)
        unsettled = self.orders.poll_non_final(report)
        unsettled |= self.orders.adopt_block_accepts(report, now, startup=True)
        self.orders.refresh_active_trades()
        listed = self._open_orders()
        report.quarantine = self.ownership.memory_check(snapshot, listed, report, now)
        self._reconcile_orders(report, now, listed)
        self.positions.compare(snapshot, report, unsettled, confirm=False, in_doubt=self._in_doubt(now))
        self._journal(report)
        self.last_report = report
        return report

    # ---- periodic ------------------------------------------------------------------------

    def periodic(self, snapshot: AccountSnapshot) -> ReconcileReport:
        now = self.clock.now()
        report = ReconcileReport("periodic", now)
        unsettled = self.orders.adopt_block_accepts(report, now, startup=False)
        self._reconcile_orders(report, now)
        self.ownership.watch_history(report, now)
        self.orders.recheck_recent_finals(report, now)
        unsettled |= self._unsettled(snapshot)
        self.positions.compare(snapshot, report, unsettled, confirm=True, in_doubt=self._in_doubt(now))
        if any((report.orders_missing, report.foreign_orders, report.block_fills_adopted, report.late_fills,
                report.external_closes, report.blocked_symbols, report.orders_vanished, report.reversed)):
            logger.warning("reconciliation %s", report.summary())
            self._journal(report)
        else:
            logger.debug("reconciliation %s", report.summary())
        self.last_report = report
        return report

    def _unsettled(self, snapshot: AccountSnapshot) -> set[str]:
        """Symbols our view of which is not settled: a non-final order, order activity since the
        positions were read, or an execution job on a trade holding them (not judged this time)."""
        unsettled = {order.symbol for order in self.ledger.live_orders()}
        snapshot_ts = float(snapshot.timestamp)
        unsettled |= {order.symbol for order in self.ledger.orders_updated_since(snapshot_ts)}
        for trade in self.lifecycle.active_trades():
            if self.lifecycle.has_job(trade.id):
                unsettled |= {leg.symbol for leg in trade.legs}
        return unsettled

    def _in_doubt(self, now: float) -> dict[str, str]:
        """Symbols on which no external close is judged, with why: an order of ours there, or on
        any leg of the same active trade, is a verdict on missing data still watched
        (``close_evidence.verdict_in_doubt``, RECOVERY.md O9, O10).

        Why: that order may have filled, and the trade history cannot tell its fill from
        somebody else's; booking it as an external close, then as our close when the
        exchange shows the order, would count it twice. Read after the orders were reconciled
        in this pass, so a verdict reversed in it ends the doubt at once; a verdict past its
        day of re-checks is doubted no longer and the normal table applies.
        """
        doubtful = orders_in_doubt(self.ledger, now)
        if not doubtful:
            return {}
        trades = {trade.id: trade for trade in self.lifecycle.active_trades()}
        reasons: dict[str, str] = {}
        for order in doubtful:
            verdict = "VANISHED" if order.status is OrderStatus.VANISHED else "presumed NOT_PLACED"
            reason = (f"order {order.client_order_id} ({order.symbol}, trade {order.trade_id}) is {verdict} "
                      f"on missing data")
            reasons.setdefault(order.symbol, reason)
            trade = trades.get(order.trade_id)
            for leg in trade.legs if trade is not None else ():
                reasons.setdefault(leg.symbol, reason)
        return reasons

    # ---- orders ----------------------------------------------------------------------------

    def _reconcile_orders(self, report: ReconcileReport, now: float,
                          listed: list[ExchangeOrder] | None = None) -> None:
        """All pages of open option and perp orders vs the ledger (BEHAVIOUR 6.1); ``listed`` if already read.

        Orders with our prefix the ledger does not know are the prefix owner's (row O2; others
        are ignored, O3); ledger orders the list does not show are verified (O4, O5, O8).
        """
        if listed is None:
            listed = self._open_orders()
        self.ownership.unknown_orders(listed, report, source="open")
        self.orders.verify_unlisted(report, now, listed)

    def _open_orders(self) -> list[ExchangeOrder]:
        """Every open option order and, with the perp reads, every open perp order (all pages).

        A failed read of either raises ``TraderError``: nothing is decided on half a list.
        """
        listed = parse_orders(self.client.all_pending_orders())
        if self.perp_client is not None:
            listed += [perp_open_order(order) for order in self.perp_client.perp_pending_orders()]
        return listed

    # ---- alerts, journal -------------------------------------------------------------------

    def _alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        send_alert(self.alerts, logger, level, kind, message, **detail)

    def _journal(self, report: ReconcileReport) -> None:
        if self.journal is None:
            return
        try:
            self.journal("reconciliation", report.to_event())
        except Exception:  # noqa: BLE001
            logger.exception("journal write of the reconciliation report failed")
