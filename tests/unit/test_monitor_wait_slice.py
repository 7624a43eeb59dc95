"""The monitor's wait between ticks: sliced on clocks that wait for real, one slice on an unpaced
lock-step clock (where slicing only repeated the same checks, about a tenth of a backtest's CPU)."""
from __future__ import annotations

from app import MAX_SLEEP_SLICE_SECONDS, monitor_wait_slice
from clock import RealClock, SimulatedClock


def test_an_unpaced_lockstep_clock_waits_a_whole_poll_at_once():
    assert monitor_wait_slice(SimulatedClock(start=0.0, speed=0), 10.0) == 10.0


def test_clocks_that_wait_for_real_keep_half_second_slices():
    assert monitor_wait_slice(SimulatedClock(start=0.0, speed=0, pace=60.0), 10.0) == MAX_SLEEP_SLICE_SECONDS
    assert monitor_wait_slice(SimulatedClock(start=0.0, speed=60.0), 10.0) == MAX_SLEEP_SLICE_SECONDS
    assert monitor_wait_slice(RealClock(), 10.0) == MAX_SLEEP_SLICE_SECONDS == 0.5
