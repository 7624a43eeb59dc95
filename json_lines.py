"""Append-only JSON-lines files: ``alerts.log``, ``health.log`` and the event journal.

Why it looks the way it does:

* One line of strict JSON per record, so a file can be tailed, grepped or shipped, and a
  line cut by a crash spoils only itself. Enums are written by value and non-finite floats
  as null (strict JSON has no NaN); anything else unknown is written as its ``str``.
* These files are written exactly when something is already going wrong. A failing write
  (disk full, directory removed) must never turn into a crashed tick, so ``append`` never
  raises: the failure is logged once, and logged again only after the file has worked in
  between.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from enum import Enum
from pathlib import Path
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

# Leaf types written as they are (exact types: a str or int Enum must still go by its value).
_AS_IS = frozenset({str, int, bool, type(None)})


def _plain(value: Any) -> Any:
    """A JSON-safe copy: enums by value, non-finite floats as null, containers walked."""
    if type(value) in _AS_IS:   # the usual leaf, without the checks below (Mapping's is slow)
        return value
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item) for item in value]
    return value


def to_json_line(doc: Mapping[str, Any]) -> str:
    """One line of strict JSON; anything unknown is written as its ``str``."""
    return json.dumps(_plain(doc), default=str, allow_nan=False, separators=(",", ":"))


class JsonLineFile:
    """Appends JSON lines to one file and reports a broken file once per failure streak."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.failures = 0
        self._broken = False
        self._lock = threading.Lock()

    def append(self, doc: Mapping[str, Any]) -> bool:
        """Write one line; True on success. Never raises."""
        try:
            line = to_json_line(doc) + "\n"
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line)
        except Exception as exc:  # noqa: BLE001 - a log file must never break trading
            self._note_failure(exc)
            return False
        if self._broken:
            self._broken = False
            logger.warning("%s is writable again", self.path)
        return True

    def _note_failure(self, exc: Exception) -> None:
        self.failures += 1
        if self._broken:
            return
        self._broken = True
        try:
            logger.error("cannot write %s (%s); further failures are not logged until it works", self.path, exc)
        except Exception:  # noqa: BLE001 - even logging may fail on a broken handler
            pass
