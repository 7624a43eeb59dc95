"""The event journal: one record per trade and order event (BEHAVIOUR.md 4.6, 6.1, 7.7).

"Logs for people, events for machines": every order recorded, updated or capped and every
trade transition goes to the store's append-only ``events`` table (queried by recovery and
``status``) and, as one JSON line, to ``logs/events.jsonl``. A failure of either never stops
trading: the store logs its own write errors, the file is best effort.

Listeners (``add_listener``: the notifier, issue 12) are told of each event after it is
written. The lifecycle journals a trade's change inside its I5 write, so a listener that
raised would look like a failed state write: whatever a listener raises is logged here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from clock import Clock, iso_utc
from json_lines import JsonLineFile
from seams import EventStore

logger = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"

EventListener = Callable[[str, Mapping[str, Any]], object]


class EventJournal:
    """``record(kind, payload)``: the store's event table plus ``<log_dir>/events.jsonl``."""

    def __init__(self, clock: Clock, *, store: EventStore | None = None, log_dir: str | Path | None = None) -> None:
        self.clock = clock
        self.store = store
        self.file = JsonLineFile(Path(log_dir) / EVENTS_FILE) if log_dir is not None else None
        self._listeners: list[EventListener] = []

    def add_listener(self, listener: EventListener) -> None:
        """Call ``listener(kind, payload)`` after each event is written; it must be quick (it
        runs inside the caller's write) and whatever it raises is logged, never passed on."""
        self._listeners.append(listener)

    def record(self, kind: str, payload: Mapping[str, Any]) -> None:
        now = self.clock.now()
        doc = dict(payload)
        if self.store is not None:
            try:
                self.store.append_event(kind, doc, now)
            except Exception:  # noqa: BLE001 - the store already counted and logged it
                logger.debug("event %s not stored", kind, exc_info=True)
        if self.file is not None:
            self.file.append({"time": iso_utc(now), "kind": kind, **doc})
        for listener in list(self._listeners):
            try:
                listener(kind, doc)
            except Exception as exc:  # noqa: BLE001 - a listener never fails the write that told it
                logger.error("event listener failed on %s: %s", kind, exc)

    __call__ = record
