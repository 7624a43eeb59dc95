"""Whether (and why) the daemon should stop: written by signal handlers, read by the loop.

A module of its own because both ends need it and neither may import the other's side:
the command line (``main.py``) installs the handlers that set it, the start-up and loop
(``app.py``) and the scheduler's waits (``PositionMonitor.set_stop_check``) read it.
"""
from __future__ import annotations

import signal


class StopFlag:
    """Whether (and why) the daemon should stop: written by signal handlers, read by the loop.

    A Python signal handler runs in the main thread between two bytecodes, so it can start
    inside another handler or while that thread holds any lock. ``threading.Event.set()``
    takes the event's lock: a second SIGTERM arriving while the first handler held it
    re-entered ``set()`` and deadlocked the daemon with its state lock held (issue 9,
    finding 3). So the handler's side, ``signalled``, is one plain attribute store: no lock,
    no logging, no I/O, no listener. The reason text and the "stopping: SIGTERM" line are
    produced by normal code after the loop has noticed the flag; waits notice it within one
    clock slice (``app.wait_until``, ``PositionMonitor.set_stop_check``).
    """

    __slots__ = ("signal_number", "requested")

    def __init__(self) -> None:
        self.signal_number = 0      # the first stop signal; written by the handler only
        self.requested = ""         # a stop asked for by normal code (``--run-for``, a finished kill)

    def signalled(self, signum: int) -> None:
        """The whole of a signal handler's work; safe to re-enter at any point."""
        if not self.signal_number:
            self.signal_number = signum

    def request(self, reason: str) -> None:
        """Stop from normal code; the first reason (signal or request) is the one reported."""
        if not self.is_set:
            self.requested = reason

    @property
    def is_set(self) -> bool:
        return bool(self.signal_number) or bool(self.requested)

    @property
    def reason(self) -> str:
        """``SIGTERM``, ``SIGINT`` or the requested reason; empty while not set."""
        if self.requested:
            return self.requested
        if self.signal_number:
            return signal.Signals(self.signal_number).name
        return ""

    def __repr__(self) -> str:
        return f"StopFlag(is_set={self.is_set}, reason={self.reason!r})"
