"""One step of the daemon's loop that may fail without stopping the others, and never silently.

Why it exists: the loop runs several independent steps per wake (the monitor's tick, the
health line, the per-wake hook that saves the paper account, a run's "finished" question).
When they shared one ``try``, a step that failed on every wake starved the ones after it for
the rest of the run, and a failure that repeats forever was only a traceback per wake in the
log. Each step now runs under its own ``StepGuard``: the first failure of a streak is logged
with its traceback, later ones as one line per ``LOG_EVERY_SECONDS``; a streak of
``ALERT_AFTER`` failures raises one CRITICAL ``loop_step_failing`` alert (again every
``REALERT_SECONDS`` while it lasts), and the first success after an alert says so.
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from clock import Clock
from display import fmt_duration
from seams import AlertSender

logger = logging.getLogger(__name__)

ALERT_AFTER = 3
REALERT_SECONDS = 3600.0
LOG_EVERY_SECONDS = 300.0

T = TypeVar("T")


class StepGuard:
    """Runs one named loop step; a failure is caught, counted, logged and alerted on."""

    def __init__(self, name: str, clock: Clock, alerts: AlertSender | None) -> None:
        self.name = name
        self._clock = clock
        self._alerts = alerts
        self.failures = 0                      # in a row
        self.failing_since: float | None = None
        self._last_logged_at: float | None = None
        self._alerted_at: float | None = None

    def run(self, step: Callable[[], T]) -> T | None:
        """``step()``'s result, or None when it raised (the error is handled here)."""
        try:
            result = step()
        except Exception as error:  # noqa: BLE001 - the loop outlives any one step
            self._failed(error)
            return None
        if self.failures:
            self._recovered()
        return result

    def _failed(self, error: Exception) -> None:
        now = self._clock.now()
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
            self._last_logged_at = now
            logger.exception("daemon loop step %r failed; the other steps go on", self.name)
        elif self._last_logged_at is None or now - self._last_logged_at >= LOG_EVERY_SECONDS:
            self._last_logged_at = now
            logger.error("daemon loop step %r still failing (%d in a row for %s): %s: %s", self.name, self.failures,
                         fmt_duration(now - self.failing_since), type(error).__name__, error)
        if self.failures < ALERT_AFTER:
            return
        if self._alerted_at is not None and now - self._alerted_at < REALERT_SECONDS:
            return
        self._alerted_at = now
        if self._alerts is not None:
            self._alerts.alert("CRITICAL", "loop_step_failing",
                               f"the daemon's {self.name} step has failed {self.failures} times in a row for "
                               f"{fmt_duration(now - self.failing_since)} ({type(error).__name__}: {error}); "
                               f"see trading.log for the traceback", step=self.name, failures=self.failures)

    def _recovered(self) -> None:
        since = self.failing_since if self.failing_since is not None else self._clock.now()
        logger.warning("daemon loop step %r works again after %d failures in %s", self.name, self.failures,
                       fmt_duration(self._clock.now() - since))
        if self._alerted_at is not None and self._alerts is not None:
            self._alerts.alert("WARNING", "loop_step_recovered",
                               f"the daemon's {self.name} step works again after {self.failures} failures",
                               step=self.name)
        self.failures, self.failing_since, self._last_logged_at, self._alerted_at = 0, None, None, None


__all__ = ["ALERT_AFTER", "REALERT_SECONDS", "StepGuard"]
