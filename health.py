"""The periodic health line (BEHAVIOUR.md 7.4).

Why it looks the way it does:

* The reporter only formats what it is given. The caller (the daemon loop) assembles
  the state from the monitor's latest snapshot and the services it already has, so a
  health check never sends a request of its own and never touches trading objects.
* It is called on every tick and decides itself whether a line is due: at most one
  line per ``interval_seconds`` of the injected clock (the first call writes at once,
  so a fresh start is visible). A simulated clock therefore gates it in tests without
  any real waiting.
* Writing the line must never disturb trading: a failed write is logged once per
  failure streak (see ``json_lines.JsonLineFile``) and reported as ``False``.
* ``state["warnings"]`` (a list of strings, e.g. margin utilization above 80 %) is
  also logged at WARNING so it reaches the main log, not only the health file.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Mapping

from clock import Clock, iso_utc
from json_lines import JsonLineFile

logger = logging.getLogger(__name__)

HEALTH_FILE_NAME = "health.log"
DEFAULT_INTERVAL_SECONDS = 300.0
# Float slack when comparing elapsed clock seconds with the interval.
_EPSILON = 1e-6


class HealthReporter:
    """Writes one JSON line to ``<log_dir>/health.log`` at most every interval."""

    def __init__(
        self,
        clock: Clock,
        log_dir: Path | str | None,
        *,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        if not interval_seconds > 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds!r}")
        self._clock = clock
        self._interval = float(interval_seconds)
        self._file = JsonLineFile(Path(log_dir) / HEALTH_FILE_NAME) if log_dir is not None else None
        self._started = clock.monotonic()
        self._last_at: float | None = None
        self._lock = threading.Lock()
        self.reports = 0
        self.last_report: dict[str, Any] | None = None

    @property
    def path(self) -> Path | None:
        return self._file.path if self._file is not None else None

    @property
    def interval_seconds(self) -> float:
        return self._interval

    def due(self) -> bool:
        """True when no line was written yet or the interval has passed since the last."""
        with self._lock:
            return self._due_locked(self._clock.monotonic())

    def _due_locked(self, now: float) -> bool:
        return self._last_at is None or now - self._last_at >= self._interval - _EPSILON

    def maybe_report(self, state: Mapping[str, Any]) -> bool:
        """Write a line if one is due; True when a line was written."""
        now = self._clock.monotonic()
        with self._lock:
            if not self._due_locked(now):
                return False
            self._last_at = now
        return self._emit(state, now)

    def report(self, state: Mapping[str, Any]) -> bool:
        """Write a line now (start-up, shutdown, on demand) and restart the interval."""
        now = self._clock.monotonic()
        with self._lock:
            self._last_at = now
        return self._emit(state, now)

    def _emit(self, state: Mapping[str, Any], now: float) -> bool:
        line = self.format(state, now)
        self.last_report = line
        self.reports += 1
        self._log_warnings(line.get("warnings"))
        if self._file is None:
            logger.info("health %s", line)
            return True
        return self._file.append(line)

    def format(self, state: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
        """The line as a dict: time and uptime first, then the caller's fields unchanged."""
        moment = self._clock.monotonic() if now is None else now
        line: dict[str, Any] = {
            "time": iso_utc(self._clock.now()),
            "uptime_seconds": round(moment - self._started, 3),
        }
        line.update(state)
        return line

    @staticmethod
    def _log_warnings(warnings: Any) -> None:
        if not warnings:
            return
        if isinstance(warnings, str):
            warnings = [warnings]
        try:
            for warning in warnings:
                logger.warning("health: %s", warning)
        except TypeError:
            logger.warning("health: %s", warnings)

    def __repr__(self) -> str:
        return f"HealthReporter(path={self.path}, interval={self._interval}, reports={self.reports})"
