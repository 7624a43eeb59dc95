"""The scheduler of the daemon: wake, maybe poll the account, run the callbacks, wait
(BEHAVIOUR.md 6.0, 7.1, 7.3).

Why it looks the way it does:

* ``PositionMonitor`` is the one loop that drives trading. It never sleeps inside a tick;
  it waits between ticks on the injected clock in short slices, so ``stop()`` or the
  daemon's stop flag (``set_stop_check``: a signal handler only sets a plain flag,
  ``stop_flag.StopFlag``) is noticed quickly, and on a speed-0 simulated clock a wait
  moves simulated time only.
* Every callback is isolated: one that raises is logged and counted (a health warning
  after three in a row) and the others still run, so one broken strategy cannot starve
  the exits of the others.
* A callback never receives a made-up snapshot: when the latest poll failed it gets the
  error, through its ``on_snapshot_error``. Every callback is a ``seams.MonitorCallback``
  (a ``callback_name``, ``__call__`` and ``on_snapshot_error``), checked when it is
  registered, so a callback without an error path fails at start-up, not in an outage.
* While the exchange is DOWN the poll interval backs off (min(3 x poll interval, 60 s)),
  and while executions are active (``set_busy``) the wakes come every exec tick, so fills
  are followed closely without polling the account more often.
* A failing poll says so every time, with how long the polls have been failing, the last
  error and when the next one comes: an operator watching an outage sees it go on, poll by
  poll, instead of one line and then silence.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from account_manager import AccountSnapshot
from clock import Clock
from display import fmt_duration, fmt_stamp
from errors import SnapshotError
from seams import AccountSource, MonitorCallback, require
from validation import invalid, is_number

logger = logging.getLogger(__name__)

# Consecutive failures of one callback that raise a health warning (BEHAVIOUR.md 7.1).
CALLBACK_FAILURE_WARN_AFTER = 3
# Reachability back-off of BEHAVIOUR.md 7.3: poll every min(3 x poll interval, 60 s) while DOWN.
DOWN_POLL_FACTOR = 3.0
# Account reads failing this long, and this many polls in a row, while the exchange answers:
# CRITICAL ``snapshots_failing`` (exits are not evaluated meanwhile; an outage has its own
# alert, ``exchange_unreachable``). The count keeps a slow poll's chance runs of transient
# failures quiet (three failed one-minute polls happen a few times a day at 5 % failing
# requests, measured by the HTTP fault campaign); what it is for fails every poll.
BLIND_ALERT_SECONDS = 120.0
BLIND_ALERT_POLLS = 6
DOWN_POLL_CAP_SECONDS = 60.0
# Float slack when comparing elapsed clock seconds with an interval.
_SCHEDULE_EPSILON = 1e-6


AlertHook = Callable[[str, str], None]


@dataclass
class _Registration:
    callback: MonitorCallback
    name: str
    consecutive_failures: int = 0
    warned: bool = field(default=False)


class PositionMonitor:
    """The daemon loop of BEHAVIOUR.md 6.0: wake, maybe poll, run callbacks, wait.

    Every wake runs the registered callbacks, in registration order, with the current
    state: the latest good snapshot, or - when the most recent poll failed - the error,
    delivered to ``callback.on_snapshot_error(err)`` (a callback never receives a made-up
    snapshot). A poll (a fresh snapshot) happens when
    ``poll_interval`` has passed since the previous one; between polls callbacks get the
    same snapshot object again, so "is this a poll tick" is "did the snapshot change".

    Wakes come every ``exec_tick_interval`` while ``busy()`` is True, else every
    ``poll_interval``. While the exchange is DOWN the poll interval backs off to
    min(3 x poll_interval, 60 s) (never below ``poll_interval``).
    """

    def __init__(
        self,
        account_manager: AccountSource,
        clock: Clock,
        *,
        poll_interval: float = 10.0,
        exec_tick_interval: float = 2.0,
        wait_slice: float = 0.5,
        on_alert: AlertHook | None = None,
        on_critical: AlertHook | None = None,
        join_timeout: float = 35.0,
    ) -> None:
        for name, value in (("poll_interval", poll_interval), ("exec_tick_interval", exec_tick_interval),
                            ("wait_slice", wait_slice)):
            if not (is_number(value) and value > 0):
                raise invalid("PositionMonitor", name, value, "use a positive number of seconds")
        require("PositionMonitor account_manager", account_manager, AccountSource)
        self._account_manager = account_manager
        self._clock = clock
        self.poll_interval = float(poll_interval)
        self.exec_tick_interval = float(exec_tick_interval)
        self._wait_slice = float(wait_slice)
        self._on_alert = on_alert
        # What stops supervision (a callback failing in a row, a poll failing on a bug) goes to a
        # person's phone: notifications default to CRITICAL only.
        self._on_critical = on_critical if on_critical is not None else on_alert
        self._join_timeout = join_timeout
        self._lock = threading.Lock()
        self._registrations: list[_Registration] = []
        self._busy: Callable[[], bool] | None = None
        self._latest: AccountSnapshot | None = None
        self._current_error: SnapshotError | None = None
        self._last_poll_at: float | None = None
        self.last_error: SnapshotError | None = None
        self.last_error_at: float | None = None
        self._failing_since: float | None = None   # clock time of the first failed poll of a streak
        self._failed_polls = 0
        self._unexpected_alerted = False   # one CRITICAL per streak of polls failing on a bug
        self._blind_alerted = False        # one CRITICAL per streak of failed polls while the exchange is up
        self.ticks = 0
        self._stop_event = threading.Event()
        self._stop_check: Callable[[], bool] | None = None
        self._thread: threading.Thread | None = None

    # ---- configuration -------------------------------------------------------------

    def register(self, callback: MonitorCallback) -> None:
        """Add a callback; callbacks run in registration order. ``TypeError`` if it is not a
        ``MonitorCallback`` (no name or no ``on_snapshot_error``)."""
        require("PositionMonitor.register callback", callback, MonitorCallback)
        with self._lock:
            self._registrations.append(_Registration(callback, str(callback.callback_name)))

    def set_busy(self, busy: Callable[[], bool] | None) -> None:
        """``busy()`` True (execution jobs active) → wake every ``exec_tick_interval``."""
        self._busy = busy

    def set_stop_check(self, check: Callable[[], bool] | None) -> None:
        """``check()`` True ends the wait between ticks at the next slice (None: only ``stop()``).

        The daemon's signal handlers may only set a plain flag (no ``Event``, whose lock a
        re-entered handler deadlocks on), so the wait reads that flag itself, every
        ``wait_slice`` of clock time; a tick in progress is always finished.
        """
        self._stop_check = check

    def stop_requested(self) -> bool:
        """True once ``stop()`` was called or the stop check says so."""
        if self._stop_event.is_set():
            return True
        check = self._stop_check
        return check is not None and bool(check())

    # ---- state for health and callers ---------------------------------------------

    @property
    def latest(self) -> AccountSnapshot | None:
        """The last good snapshot (None before the first success)."""
        return self._latest

    @property
    def current_error(self) -> SnapshotError | None:
        """The error of the latest poll, None once a snapshot succeeded again (``last_error`` keeps it)."""
        return self._current_error

    @property
    def failing_callbacks(self) -> dict[str, int]:
        """Callbacks that failed at least 3 times in a row, with their failure counts."""
        with self._lock:
            return {r.name: r.consecutive_failures for r in self._registrations
                    if r.consecutive_failures >= CALLBACK_FAILURE_WARN_AFTER}

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> AccountSnapshot:
        """Take a snapshot now (``SnapshotError`` on failure); a good one becomes ``latest``."""
        snap = self._account_manager.snapshot()
        self._latest = snap
        return snap

    # ---- scheduling ----------------------------------------------------------------

    def is_busy(self) -> bool:
        busy = self._busy
        if busy is None:
            return False
        try:
            return bool(busy())
        except Exception:
            # Guessing "busy" only costs extra wakes; guessing "idle" could stall a fill.
            logger.exception("busy() predicate failed; assuming execution is active")
            return True

    def effective_poll_interval(self) -> float:
        """``poll_interval``, backed off while the exchange is DOWN (BEHAVIOUR.md 7.3)."""
        if not self._account_manager.reachability.is_up:
            return max(self.poll_interval, min(DOWN_POLL_FACTOR * self.poll_interval, DOWN_POLL_CAP_SECONDS))
        return self.poll_interval

    def current_interval(self) -> float:
        """Seconds between wakes right now."""
        poll = self.effective_poll_interval()
        return min(self.exec_tick_interval, poll) if self.is_busy() else poll

    def _poll_due(self, now: float) -> bool:
        last = self._last_poll_at
        return last is None or now - last >= self.effective_poll_interval() - _SCHEDULE_EPSILON

    # ---- the loop ------------------------------------------------------------------

    def run_once(self) -> bool:
        """One loop iteration: the tick, then the wait until the next wake.

        Returns True when this tick took a fresh, good snapshot. The wait is measured
        from the start of the tick (deadline based), so a slow tick does not drift the
        schedule; on a speed-0 ``SimulatedClock`` the wait moves simulated time only.
        """
        started = self._clock.monotonic()
        fresh = self._tick(started)
        duration = self._clock.monotonic() - started
        if duration > self.poll_interval:
            logger.warning("monitor tick took %.1f s, longer than the poll interval of %.1f s",
                           duration, self.poll_interval)
        self._wait_until_next_wake(started)
        return fresh

    def _tick(self, now: float) -> bool:
        self.ticks += 1
        fresh = False
        if self._poll_due(now):
            self._last_poll_at = now
            fresh = self._poll()
        error, snap = self._current_error, self._latest
        if error is not None:
            self._dispatch_error(error)
        elif snap is not None:
            self._dispatch(snap)
        return fresh

    def _poll(self) -> bool:
        try:
            snap = self._account_manager.snapshot()
        except SnapshotError as exc:
            self._failed_poll(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a bug in the account read must not stop the callbacks
            # Delivered like any failed poll: every callback still runs (on_snapshot_error), so
            # working close and unwind jobs, a queued kill and reconciliation go on; and since
            # it is a bug, not an outage, a person is told at once (the traceback is in the log).
            if not self._unexpected_alerted:
                logger.exception("account snapshot failed on an unexpected error")
                self._unexpected_alerted = True
                self._critical("snapshot_unexpected_error",
                               f"the account read failed on an unexpected error ({type(exc).__name__}: {exc}); "
                               f"entries and exits wait, working jobs go on; see trading.log for the traceback")
            error = SnapshotError(f"unexpected error reading the account: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._failed_poll(error)
            return False
        self._latest = snap
        self._current_error = None
        self._unexpected_alerted = False
        if self._failing_since is not None:
            logger.log(logging.WARNING if self._blind_alerted else logging.INFO,
                       "account snapshot back after %s of failed polls (%d in a row)",
                       fmt_duration(self._clock.now() - self._failing_since), self._failed_polls)
            self._failing_since, self._failed_polls = None, 0
            self._blind_alerted = False
        logger.debug("snapshot: %s", snap.summary_str())
        return True

    def _failed_poll(self, exc: SnapshotError) -> None:
        """This wake's state is the error: every callback gets ``on_snapshot_error``."""
        self._current_error = exc
        self.last_error = exc
        self.last_error_at = self._clock.now()
        self._log_failed_poll(exc, self.last_error_at)

    def _log_failed_poll(self, error: SnapshotError, now: float) -> None:
        """One line per failed poll: the first a warning, the next ones the outage's progress.

        How long the polls have failed, the last error and when the next poll comes (backed
        off while the exchange is DOWN), so the log shows an outage going on, poll by poll.
        """
        retry = fmt_duration(self.effective_poll_interval())
        if self._failing_since is None:
            self._failing_since, self._failed_polls = now, 1
            logger.warning("account snapshot failed, no decision this tick: %s; next poll in %s", error, retry)
            return
        self._failed_polls += 1
        up = self._account_manager.reachability.is_up
        exchange = "UP" if up else "DOWN"
        if up and not self._blind_alerted and not self._unexpected_alerted \
                and now - self._failing_since >= BLIND_ALERT_SECONDS and self._failed_polls >= BLIND_ALERT_POLLS:
            # The exchange answers but the account read does not (a payload it cannot read): no
            # outage alert covers it, and no exit is evaluated meanwhile (incident 13). A bug's
            # failure has had its own CRITICAL (``snapshot_unexpected_error``) already.
            self._blind_alerted = True
            self._critical("snapshots_failing",
                           f"the account read has failed for {fmt_duration(now - self._failing_since)} "
                           f"({self._failed_polls} polls in a row) while the exchange answers: no exit is evaluated "
                           f"(stop losses and time exits wait) and no entry is taken until it reads again; last "
                           f"error: {error}")
        logger.info("account snapshot failing for %s (since %s, %d polls in a row, exchange %s): %s; "
                    "no decision this tick; next poll in %s", fmt_duration(now - self._failing_since),
                    fmt_stamp(self._failing_since), self._failed_polls, exchange, error, retry)

    def _registrations_copy(self) -> list[_Registration]:
        with self._lock:
            return list(self._registrations)

    def _dispatch(self, snap: AccountSnapshot) -> None:
        for registration in self._registrations_copy():
            self._run_isolated(registration, registration.callback, snap)

    def _dispatch_error(self, error: SnapshotError) -> None:
        for registration in self._registrations_copy():
            self._run_isolated(registration, registration.callback.on_snapshot_error, error)

    def _run_isolated(self, registration: _Registration, function: Callable[[Any], Any], argument: Any) -> None:
        try:
            function(argument)
        except Exception:
            registration.consecutive_failures += 1
            logger.exception("monitor callback %s failed (%d in a row)", registration.name,
                             registration.consecutive_failures)
            if registration.consecutive_failures >= CALLBACK_FAILURE_WARN_AFTER and not registration.warned:
                registration.warned = True
                self._critical("callback_failing",
                            f"monitor callback {registration.name} failed {registration.consecutive_failures} "
                            f"times in a row")
            return
        if registration.warned:
            logger.warning("monitor callback %s recovered after %d failures", registration.name,
                           registration.consecutive_failures)
        registration.consecutive_failures = 0
        registration.warned = False

    def _critical(self, kind: str, detail: str) -> None:
        logger.error("HEALTH: %s", detail)
        if self._on_critical is not None:
            try:
                self._on_critical(kind, detail)
            except Exception:
                logger.exception("alert hook failed for %s", kind)

    def _wait_until_next_wake(self, tick_started: float) -> None:
        """Sleep on the clock in slices, re-reading the interval so a new job shortens it."""
        while not self.stop_requested():
            remaining = tick_started + self.current_interval() - self._clock.monotonic()
            if remaining <= _SCHEDULE_EPSILON:
                return
            self._clock.sleep(min(self._wait_slice, remaining))

    def _loop(self) -> None:
        logger.info("position monitor started (poll %.1f s, exec tick %.1f s)",
                    self.poll_interval, self.exec_tick_interval)
        while not self.stop_requested():
            try:
                self.run_once()
            except Exception:
                # The loop is the daemon's heartbeat: log and keep going after one interval.
                logger.exception("position monitor iteration failed")
                self._wait_until_next_wake(self._clock.monotonic())
        logger.info("position monitor stopped")

    def start(self) -> None:
        """Start the single daemon thread (no-op when it is already running)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                logger.debug("position monitor already running")
                return
            self._stop_event.clear()
            self._thread = threading.Thread(target=self._loop, name="position-monitor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the loop to stop and join it; a tick in progress is finished, not cut."""
        self._stop_event.set()
        thread = self._thread
        if thread is None:
            return
        thread.join(self._join_timeout)
        if thread.is_alive():
            logger.warning("position monitor thread still busy %.0f s after stop()", self._join_timeout)
        else:
            self._thread = None

    def __repr__(self) -> str:
        return (f"PositionMonitor(poll_interval={self.poll_interval}, exec_tick_interval={self.exec_tick_interval}, "
                f"running={self.is_running})")
