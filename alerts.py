"""Operator alerts (BEHAVIOUR.md 7.7).

Why it looks the way it does:

* Everything that needs a human goes through one ``AlertSink``: one JSON line per alert
  in ``logs/alerts.log`` (easy to tail, grep or ship) plus the main log at the alert's
  level, so an operator reading either sees it.
* An alert is raised exactly when something is already going wrong. If the sink itself
  fails (disk full, directory removed, an unprintable detail), raising would turn a
  warning into a crashed tick, so ``alert`` never raises; the file is a ``JsonLineFile``,
  which logs a failing write once per failure streak.
* Timestamps come from the injected clock, so a simulated 48-hour run writes simulated
  times and tests can assert them.
* Listeners (``add_listener``: the notifier, issue 12) are told of each alert after it is
  written; a failing listener is logged and never reaches the caller, for the same reason.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from clock import Clock, iso_utc
from display import fmt_fields
from json_lines import JsonLineFile
from seams import AlertSender

logger = logging.getLogger(__name__)

ALERTS_FILE_NAME = "alerts.log"
RECENT_ALERTS_KEPT = 200

AlertListener = Callable[["Alert"], object]

# Accepted spellings of a level and the logging level each maps to.
_LEVELS: dict[str, int] = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


# --------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """One alert as written to ``alerts.log``."""

    time: str
    level: str
    kind: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "level": self.level,
            "kind": self.kind,
            "message": self.message,
            "detail": dict(self.detail),
        }


def normalize_level(level: Any) -> str:
    """Upper-case level name; unknown levels become WARNING (an alert is never quieter)."""
    if isinstance(level, int) and not isinstance(level, bool):
        level = logging.getLevelName(level)
    name = str(level).strip().upper()
    if name == "WARN":
        return "WARNING"
    return name if name in _LEVELS else "WARNING"


class AlertSink:
    """Alerts to ``<log_dir>/alerts.log`` (when ``log_dir`` is given) and the logger.

    ``recent(n)`` returns the last alerts held in memory (for status output and tests).
    """

    def __init__(self, log_dir: Path | str | None, clock: Clock, *, keep: int = RECENT_ALERTS_KEPT) -> None:
        self._clock = clock
        self._file = JsonLineFile(Path(log_dir) / ALERTS_FILE_NAME) if log_dir is not None else None
        self._recent: deque[Alert] = deque(maxlen=max(1, int(keep)))
        self._lock = threading.Lock()
        self._listeners: list[AlertListener] = []
        self.count = 0

    def add_listener(self, listener: AlertListener) -> None:
        """Call ``listener(alert)`` after each alert is written (log and file).

        It runs on the thread that raised the alert, so it must be quick (the notifier only
        queues); whatever it raises is logged here and never reaches the alert's caller.
        """
        with self._lock:
            self._listeners.append(listener)

    @property
    def path(self) -> Path | None:
        return self._file.path if self._file is not None else None

    @property
    def file_failures(self) -> int:
        return self._file.failures if self._file is not None else 0

    def alert(self, level: str, kind: str, message: str, **detail: Any) -> Alert | None:
        """Record one alert; returns it, or None if even building it failed. Never raises."""
        try:
            record = Alert(
                time=iso_utc(self._clock.now()),
                level=normalize_level(level),
                kind=str(kind),
                message=str(message),
                detail=dict(detail),
            )
        except Exception as exc:  # noqa: BLE001 - the sink never raises
            self._log_safely(logging.ERROR, "alert %r could not be built: %s", kind, exc)
            return None
        with self._lock:
            self._recent.append(record)
            self.count += 1
        self._log_safely(
            _LEVELS[record.level],
            "ALERT %s: %s%s",
            record.kind,
            record.message,
            f" ({fmt_fields(record.detail)})" if record.detail else "",
        )
        if self._file is not None:
            self._file.append(record.to_dict())
        self._tell_listeners(record)
        return record

    def _tell_listeners(self, record: Alert) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(record)
            except Exception as exc:  # noqa: BLE001 - the sink never raises
                self._log_safely(logging.ERROR, "alert listener failed on %s: %s", record.kind, exc)

    def recent(self, n: int = 20) -> list[Alert]:
        """The last ``n`` alerts, oldest first."""
        if n <= 0:
            return []
        with self._lock:
            items = list(self._recent)
        return items[-n:]

    @staticmethod
    def _log_safely(level: int, fmt: str, *args: Any) -> None:
        try:
            logger.log(level, fmt, *args)
        except Exception:  # noqa: BLE001 - the sink never raises
            pass

    def __repr__(self) -> str:
        return f"AlertSink(path={self.path}, count={self.count})"


def send_alert(sink: AlertSender | None, log: logging.Logger, level: str, kind: str, message: str, **detail: Any) -> None:
    """Log an alert on the caller's logger, then hand it to ``sink`` (may be None); never raises.

    The one way product modules raise an alert: the module's own log line says where it came
    from, the sink keeps ``alerts.log``; a failing sink must never stop trading.
    """
    log.log(_LEVELS[normalize_level(level)], "%s: %s", kind, message)
    if sink is None:
        return
    try:
        sink.alert(level, kind, message, **detail)
    except Exception:  # noqa: BLE001 - an alert sink never blocks trading
        log.exception("alert sink failed for %s", kind)
