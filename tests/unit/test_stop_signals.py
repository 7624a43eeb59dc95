"""Issue 9, finding 3: the SIGINT/SIGTERM handlers can be re-entered at any point and return.

The old handler called ``threading.Event.set()``, which takes the event's (non-re-entrant)
lock; a second signal delivered while the first handler held it re-entered ``set()`` in the
same thread and hung the daemon for good. The handler now does one attribute store, and the
loop's waits look at the flag every slice. The subprocess campaign is
``tests/faults/test_signal_bursts.py``; these tests pin the pieces.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import app
import main
from clock import SimulatedClock
from errors import SnapshotError
from position_monitor import PositionMonitor
from stop_flag import StopFlag

REPO_ROOT = Path(__file__).resolve().parents[2]
START = 1767225600.0

# Runs in a fresh interpreter: a regression hangs that interpreter (the test kills it at the
# timeout and fails), never the test session. Every opcode of the handler and of whatever
# it calls raises another stop signal, so a nested handler runs at each of those points,
# including wherever the outer one could hold a lock.
REENTRY_SCRIPT = r"""
import signal, sys
import main
from stop_flag import StopFlag

stop = StopFlag()
undo = main.install_signal_handlers(stop)
handler = signal.getsignal(signal.SIGTERM)
raised = []

def trace_calls(frame, event, arg):
    frame.f_trace_opcodes = True
    return trace_opcodes

def trace_opcodes(frame, event, arg):
    if event == "opcode" and len(raised) < 500:
        signum = signal.SIGINT if len(raised) % 2 else signal.SIGTERM
        raised.append(signum)
        signal.raise_signal(signum)      # its handler runs now, inside the traced one
    return trace_opcodes

sys.settrace(trace_calls)
handler(signal.SIGTERM, None)
handler(signal.SIGINT, None)
sys.settrace(None)
undo()
print(f"returned set={stop.is_set} reason={stop.reason} nested={len(raised)}")
"""


def test_the_handler_re_entered_at_every_opcode_returns():
    done = subprocess.run([sys.executable, "-c", REENTRY_SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    line = done.stdout.strip()
    assert line.startswith("returned set=True reason=SIG"), line
    assert int(line.rsplit("nested=", 1)[1]) >= 4            # the handler really was re-entered


def test_the_first_signal_is_the_reason_and_later_ones_change_nothing():
    stop = StopFlag()
    assert not stop.is_set and stop.reason == ""
    stop.signalled(signal.SIGTERM)
    stop.signalled(signal.SIGINT)
    stop.request("--run-for 10s of simulated time elapsed")
    assert stop.is_set and stop.reason == "SIGTERM"

    run_for = StopFlag()
    run_for.request("--run-for 10s of simulated time elapsed")
    run_for.signalled(signal.SIGINT)
    assert run_for.reason == "--run-for 10s of simulated time elapsed"


def test_the_old_constructor_is_refused_rather_than_read_as_a_reason():
    with pytest.raises(TypeError):
        StopFlag(threading.Event())  # type: ignore[call-arg]


@pytest.fixture
def restore_stop_handlers():
    previous = {signum: signal.getsignal(signum) for signum in main.STOP_SIGNALS}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_real_signals_only_set_the_flag_and_log_nothing(caplog, restore_stop_handlers):
    stop = StopFlag()
    undo = main.install_signal_handlers(stop)
    with caplog.at_level(logging.DEBUG):
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)        # no KeyboardInterrupt either
        signal.raise_signal(signal.SIGTERM)
    undo()
    assert stop.reason == "SIGTERM"
    assert caplog.records == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # restored


def test_the_process_entry_point_ignores_signals_once_its_run_is_over(restore_stop_handlers):
    stop = StopFlag()
    undo = main.install_signal_handlers(stop, ignore_on_undo=True)
    undo()
    assert all(signal.getsignal(signum) is signal.SIG_IGN for signum in main.STOP_SIGNALS)
    signal.raise_signal(signal.SIGTERM)            # would kill this process with the default handler
    assert not stop.is_set


class SignalAt(SimulatedClock):
    """A speed-0 clock that delivers a real SIGTERM to this process once time reaches ``at``."""

    def __init__(self, at: float) -> None:
        super().__init__(start=START, speed=0)
        self.at = at
        self.signalled_at: float | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.signalled_at is None and self.now() >= self.at:
            self.signalled_at = self.now()
            signal.raise_signal(signal.SIGTERM)


def test_wait_until_returns_within_one_slice_of_the_signal(restore_stop_handlers):
    clock = SignalAt(START + 7.2)
    stop = StopFlag()
    undo = main.install_signal_handlers(stop)
    try:
        app.wait_until(clock, START + 3600, stop)
    finally:
        undo()
    assert stop.reason == "SIGTERM"
    assert clock.now() - clock.signalled_at < app.MAX_SLEEP_SLICE_SECONDS + 1e-9
    assert app.MAX_SLEEP_SLICE_SECONDS <= 0.5


class Unreachable:
    """An account manager whose exchange never answers (the monitor only needs these two)."""

    reachability = SimpleNamespace(is_up=True)  # a failed snapshot here is not an outage

    def snapshot(self):
        raise SnapshotError("no answer")


def test_the_monitor_wait_ends_at_the_next_slice_once_the_stop_check_says_so(restore_stop_handlers):
    clock = SignalAt(START + 4.3)
    monitor = PositionMonitor(Unreachable(), clock, poll_interval=600.0, wait_slice=0.5)
    stop = StopFlag()
    monitor.set_stop_check(lambda: stop.is_set)
    undo = main.install_signal_handlers(stop)
    try:
        monitor.run_once()                         # would otherwise wait 600 s
    finally:
        undo()
    assert stop.is_set and monitor.stop_requested()
    assert clock.now() - clock.signalled_at <= 0.5
    monitor.set_stop_check(None)
    assert not monitor.stop_requested()
