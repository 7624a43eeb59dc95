"""The HTTP fault campaign (issue 5 acceptance): a simulated day with ~5 % of requests failing.

In-process on one speed-0 clock (see ``fault_day``): HTTP 5xx, 429, code 10000, timeouts,
dropped connections, accepted-but-lost responses on create, cancel and RFQ accept, plus
scheduled windows of a frozen index, empty book sides and cancels held in CANCELING. The
daemon must live through the whole day (exit 0 at ``--run-for``, a health line at least
every poll past 300 s), and after a drain with entries off the exchange's records must
satisfy the same invariants as the kill campaign.
"""
from __future__ import annotations

import logging

import pytest

from tests.faults.fault_day import (
    DAY_SECONDS,
    DAY_START,
    HEALTH_INTERVAL_SECONDS,
    POLL_INTERVAL_SECONDS,
    ScheduledClock,
    default_windows,
    run_fault_day,
)

logger = logging.getLogger(__name__)

REQUIRED_HTTP_MODES = {"http_5xx", "http_429", "code_10000", "timeout", "drop", "lost_response"}


@pytest.fixture
def day_sim(sim_factory):
    """The simulator and the daemon share one speed-0 clock that switches the fault windows."""
    clock = ScheduledClock(DAY_START, default_windows())
    handle = sim_factory(clock=clock, seed=7)
    clock.attach(handle)
    return handle, clock


@pytest.mark.slow
def test_a_day_with_five_percent_failing_requests_keeps_every_invariant(day_sim, tmp_path):
    handle, clock = day_sim
    report = run_fault_day(handle, clock, tmp_path, seed=5)
    summary = report.format()
    logger.info("%s", summary)

    # The daemon never died: --run-for ended the day (exit 0) and health lines kept coming.
    assert report.day_exit_code == 0 and report.drain_exit_code == 0, summary
    assert report.simulated_seconds >= DAY_SECONDS
    assert report.unexpected_errors == [], summary      # no exception or alert beyond the provoked breaker
    assert report.largest_health_gap <= HEALTH_INTERVAL_SECONDS + POLL_INTERVAL_SECONDS + 60.0, summary
    # Faults of every mode, about 5 % of all requests, every exchange-level window switched.
    assert REQUIRED_HTTP_MODES <= {mode for mode, count in report.faults_by_mode.items() if count > 0}, summary
    assert 0.045 <= report.fault_count / report.requests <= 0.08, summary
    assert len(report.windows_fired) == 2 * len(default_windows())
    # Trading happened through it all, and nothing is left open or unaccounted.
    assert report.tally is not None and report.tally.trades_opened >= 10, summary
    assert report.tally.hedged_trades >= 1 and report.tally.hedge_rebalances >= 1, summary   # issue 13
    assert report.violations == [], summary
