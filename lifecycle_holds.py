"""The two holds on the lifecycle: the start-up hold (nothing moves) and the entry holds (no new trade).

Why this module exists: they are safety gates with different reach, set by different people.
The *hold* stops every order, exit and job step of the lifecycle until released; the
reconciler sets it at start-up, before our trades have been compared with the exchange's
positions. An *entry hold* stops only new trades, for every strategy, under a key (a suspect
positions read, a lost store), until that key is released; exits, closes and settlement go on.
Keeping both here keeps their rules (and their one log line each) in one place.
"""
from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)


class LifecycleHolds:
    """The start-up hold and the entry holds; the entry holds may be set from another thread."""

    def __init__(self) -> None:
        self._reason: str | None = None
        self._pinned: str | None = None
        self._logged = False
        self._entry_holds: dict[str, str] = {}
        self._entry_holds_lock = threading.Lock()

    # ---- the start-up hold: no order, no exit, no job step --------------------------------

    def hold(self, reason: str) -> None:
        """No order, no exit, no job step until ``release()`` (start-up, before positions are known)."""
        self._reason = reason
        self._logged = False

    def pin(self, reason: str) -> None:
        """A hold ``release()`` does not lift: only a new start does (a recovery that failed, so
        the lifecycle's memory of our trades and orders is incomplete and must not be acted on)."""
        self._pinned = reason
        self._logged = False

    def release(self) -> None:
        if self._reason is not None:
            logger.info("lifecycle released (was held: %s)", self._reason)
        self._reason = None

    @property
    def reason(self) -> str | None:
        return self._pinned or self._reason

    def on_hold(self) -> bool:
        """True while held; logged once per hold, not once per tick."""
        reason = self.reason
        if reason is None:
            return False
        if not self._logged:
            self._logged = True
            logger.warning("lifecycle on hold (%s): no order and no exit until it is lifted", reason)
        return True

    # ---- entry holds: no new trade, exits and closes go on -----------------------------------

    def hold_entries(self, key: str, reason: str) -> bool:
        """Stop every strategy's entries for ``key`` (e.g. a suspect positions read, a lost store)
        until ``release_entries(key)``; exits, closes and settlement go on. True if newly held."""
        with self._entry_holds_lock:
            new = key not in self._entry_holds
            self._entry_holds[key] = reason
        if new:
            logger.warning("entries held (%s): %s", key, reason)
        return new

    def release_entries(self, key: str) -> bool:
        """Lift the entry hold ``key``; True if it was held."""
        with self._entry_holds_lock:
            reason = self._entry_holds.pop(key, None)
        if reason is not None:
            logger.warning("entry hold lifted (%s; was: %s)", key, reason)
        return reason is not None

    @property
    def entry_holds(self) -> dict[str, str]:
        """The active entry holds, key -> reason (a copy)."""
        with self._entry_holds_lock:
            return dict(self._entry_holds)
