"""The injected clocks: simulated time moves only as told; the real clock is sane."""
from __future__ import annotations

import threading
from datetime import timezone

import pytest

from clock import Clock, RealClock, SimulatedClock, to_utc_datetime

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_frozen_clock_starts_where_told_and_does_not_move_by_itself():
    clock = SimulatedClock(start=START, speed=0)
    assert clock.now() == START
    assert clock.now() == START
    assert clock.now_ms() == int(START * 1000)
    assert clock.utcnow().isoformat() == "2026-01-01T00:00:00+00:00"


def test_advance_moves_time_exactly_and_returns_the_new_time():
    clock = SimulatedClock(start=START, speed=0)
    assert clock.advance(90.5) == START + 90.5
    assert clock.now() == START + 90.5
    assert clock.now_ms() == int((START + 90.5) * 1000)


def test_sleep_on_a_frozen_clock_advances_instantly():
    clock = SimulatedClock(start=START, speed=0)
    clock.sleep(3600)
    assert clock.now() == START + 3600
    clock.sleep(0)
    clock.sleep(-5)
    assert clock.now() == START + 3600


def test_time_never_goes_backwards():
    clock = SimulatedClock(start=START, speed=0)
    with pytest.raises(ValueError):
        clock.advance(-1)
    clock.advance(10)
    with pytest.raises(ValueError):
        clock.set_time(START)
    assert clock.now() == START + 10


def test_set_time_jumps_forward_to_an_absolute_instant():
    clock = SimulatedClock(start=START, speed=0)
    clock.set_time(START + 86_400)
    assert clock.now() == START + 86_400


def test_monotonic_follows_simulated_time():
    clock = SimulatedClock(start=START, speed=0)
    first = clock.monotonic()
    clock.advance(5)
    assert clock.monotonic() - first == pytest.approx(5)


def test_negative_speed_is_refused():
    with pytest.raises(ValueError):
        SimulatedClock(start=START, speed=-1)
    clock = SimulatedClock(start=START, speed=0)
    with pytest.raises(ValueError):
        clock.set_speed(-0.5)


def test_set_speed_keeps_time_continuous_and_zero_refreezes_it():
    clock = SimulatedClock(start=START, speed=0)
    clock.advance(100)
    clock.set_speed(1000)
    assert clock.speed == 1000
    assert clock.now() >= START + 100  # continuous: no jump back to the start
    clock.set_speed(0)
    frozen = clock.now()
    assert clock.now() == frozen
    clock.sleep(7)
    assert clock.now() == frozen + 7


def test_running_clock_is_monotonic_under_concurrent_readers():
    clock = SimulatedClock(start=START, speed=50)
    readings: list[list[float]] = [[] for _ in range(4)]

    def read(out: list[float]) -> None:
        for _ in range(2000):
            out.append(clock.now())

    threads = [threading.Thread(target=read, args=(out,)) for out in readings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for out in readings:
        assert all(b >= a for a, b in zip(out, out[1:]))
        assert out[0] >= START


def test_both_clocks_satisfy_the_protocol():
    assert isinstance(RealClock(), Clock)
    assert isinstance(SimulatedClock(start=START), Clock)


def test_real_clock_is_sane_without_sleeping():
    clock = RealClock()
    now = clock.now()
    assert now > 1_700_000_000  # after Nov 2023
    assert abs(clock.now_ms() - now * 1000) < 60_000
    assert clock.utcnow().tzinfo == timezone.utc
    first, second = clock.monotonic(), clock.monotonic()
    assert second >= first
    clock.sleep(0)  # returns at once
    clock.sleep(-1)


def test_to_utc_datetime_is_aware_utc():
    moment = to_utc_datetime(START)
    assert moment.tzinfo == timezone.utc
    assert (moment.year, moment.month, moment.day, moment.hour) == (2026, 1, 1, 0)
