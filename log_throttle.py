"""Identical warnings, rate-limited to one line with a count.

Why it exists: a condition that lasts (an order the exchange no longer knows, an endpoint
that keeps failing) is seen again on every tick. Logging it every time once wrote 16,000
identical lines (4.8 MB) in a few hours and buried everything else in the log (issue 9,
finding 5). ``RepeatLimiter`` logs the first occurrence of a key at once, then at most one
line per ``interval_seconds`` saying how many times it was seen in between; time comes from
the injected clock, so tests on a simulated clock see exactly what an operator would.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Hashable

from clock import Clock

DEFAULT_REPEAT_INTERVAL_SECONDS = 300.0
MAX_KEYS = 2000   # a bound on memory: the oldest keys are forgotten first


@dataclass
class _Seen:
    last_logged_at: float
    suppressed: int = 0


class RepeatLimiter:
    """``log(logger, level, key, msg, *args)``: the first line of ``key`` now, then one per interval.

    The line that ends a quiet interval carries ``(repeated N times in the last M min)``.
    ``forget(key)`` ends an episode (the condition cleared), so its next occurrence is new.
    """

    def __init__(self, clock: Clock, *, interval_seconds: float = DEFAULT_REPEAT_INTERVAL_SECONDS) -> None:
        if not interval_seconds > 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds!r}")
        self._clock = clock
        self.interval_seconds = float(interval_seconds)
        self._seen: dict[Hashable, _Seen] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RepeatLimiter(interval={self.interval_seconds:g}s, keys={len(self._seen)})"

    def log(self, log: logging.Logger, level: int, key: Hashable, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than an interval ago; True if logged."""
        now = float(self._clock.now())
        repeated, elapsed = 0, 0.0
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                self._remember(key, now)
            elif now - seen.last_logged_at >= self.interval_seconds:
                repeated, elapsed = seen.suppressed, now - seen.last_logged_at
                seen.last_logged_at, seen.suppressed = now, 0
            else:
                seen.suppressed += 1
                return False
        if repeated:
            log.log(level, msg + " (repeated %d times in the last %.0f min)", *args, repeated, elapsed / 60.0)
        else:
            log.log(level, msg, *args)
        return True

    def warning(self, log: logging.Logger, key: Hashable, msg: str, *args: Any) -> bool:
        return self.log(log, logging.WARNING, key, msg, *args)

    def suppressed(self, key: Hashable) -> int:
        """Occurrences of ``key`` not logged since its last line."""
        with self._lock:
            seen = self._seen.get(key)
            return seen.suppressed if seen is not None else 0

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def _remember(self, key: Hashable, now: float) -> None:
        if len(self._seen) >= MAX_KEYS:
            oldest = min(self._seen, key=lambda k: self._seen[k].last_logged_at)
            del self._seen[oldest]
        self._seen[key] = _Seen(now)
