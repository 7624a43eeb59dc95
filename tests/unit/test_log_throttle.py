"""RepeatLimiter: the first line of a condition at once, then at most one per interval with a count."""
from __future__ import annotations

import logging

import pytest

from clock import SimulatedClock
from log_throttle import RepeatLimiter

T0 = 1_772_528_400.0
log = logging.getLogger("tests.log_throttle")


def lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == log.name]


def test_a_condition_seen_every_two_seconds_for_an_hour_writes_twelve_lines_with_counts(caplog):
    clock = SimulatedClock(start=T0, speed=0)
    limiter = RepeatLimiter(clock, interval_seconds=300.0)
    caplog.set_level(logging.WARNING, logger=log.name)

    for _tick in range(1800):                                   # one hour of 2-second ticks
        limiter.warning(log, ("order", 7), "order %d is unknown to the exchange", 7)
        clock.advance(2.0)

    written = lines(caplog)
    assert len(written) == 12                                   # the first, then one per 5 minutes after it
    assert written[0] == "order 7 is unknown to the exchange"
    assert written[1] == "order 7 is unknown to the exchange (repeated 149 times in the last 5 min)"
    assert all(record.levelno == logging.WARNING for record in caplog.records)


def test_keys_are_independent_and_forget_starts_a_new_episode(caplog):
    clock = SimulatedClock(start=T0, speed=0)
    limiter = RepeatLimiter(clock, interval_seconds=60.0)
    caplog.set_level(logging.WARNING, logger=log.name)

    assert limiter.warning(log, "a", "a failed") is True
    assert limiter.warning(log, "b", "b failed") is True
    assert limiter.warning(log, "a", "a failed") is False
    assert limiter.suppressed("a") == 1
    limiter.forget("a")
    assert limiter.warning(log, "a", "a failed") is True        # a new episode: logged at once, no count

    assert lines(caplog) == ["a failed", "b failed", "a failed"]


def test_a_quiet_key_is_logged_plainly_after_the_interval():
    clock = SimulatedClock(start=T0, speed=0)
    limiter = RepeatLimiter(clock, interval_seconds=60.0)
    assert limiter.warning(log, "k", "once") is True
    clock.advance(61)
    assert limiter.warning(log, "k", "again") is True and limiter.suppressed("k") == 0


def test_the_interval_must_be_positive():
    with pytest.raises(ValueError):
        RepeatLimiter(SimulatedClock(start=T0, speed=0), interval_seconds=0)
