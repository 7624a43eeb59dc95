"""Entry gates that must hold (docs/BEHAVIOUR.md 7.2, 7.8; found by an audit, failing before its fix).

* A pause asked for while the runner sits in its timed daily open-failure pause (a
  reconciliation pause, an operator's) replaced nothing: the timed pause lifted at 00:00 UTC
  and the strategy opened again on an account nobody had looked at.
"""
from __future__ import annotations

from datetime import datetime, timezone

from commands import PauseRequest, pause_runner
from strategy_pauses import StrategyPauses
from tests.unit.test_runner_gates import Harness, config, fake_resolution  # noqa: F401 - the fixture

def _hit_daily_failure_pause(h):
    for _ in range(4):
        h.tick()
        for trade in h.lifecycle.active_trades():
            h.lifecycle.fail(trade)
        h.advance(10)
    assert h.runner.is_paused and h.runner.pause_reason == "daily_open_failures"


def test_reconciliation_pause_during_daily_failure_pause_survives_midnight():
    h = Harness(config(max_open_failures_per_day=2),
                start=datetime(2026, 3, 3, 22, 0, tzinfo=timezone.utc).timestamp())
    _hit_daily_failure_pause(h)
    created_before = len(h.created)
    pauses = StrategyPauses(h.lifecycle, h.store)
    pauses.attach([h.runner])
    # e.g. position_reconciliation: an opposite-side position found on one of our symbols (RECOVERY S4)
    pauses.pause("gates", "opposite-side position on BTCUSD-4MAR26-90000-C")
    h.clock.set_time(datetime(2026, 3, 4, 0, 0, 0, tzinfo=timezone.utc).timestamp())
    h.tick()
    # The reconciliation pause needs an operator's resume; it must not lift at midnight.
    assert h.runner.is_paused, "reconciliation pause was dropped: runner unpaused at 00:00 UTC"
    assert len(h.created) == created_before, "a trade was opened despite the reconciliation pause"


def test_operator_pause_during_daily_failure_pause_survives_midnight():
    h = Harness(config(max_open_failures_per_day=2),
                start=datetime(2026, 3, 3, 22, 0, tzinfo=timezone.utc).timestamp())
    _hit_daily_failure_pause(h)
    created_before = len(h.created)
    result = pause_runner(h.store, {"gates": h.runner}, PauseRequest(strategy="gates"))
    h.clock.set_time(datetime(2026, 3, 4, 0, 0, 0, tzinfo=timezone.utc).timestamp())
    h.tick()
    assert h.runner.is_paused, f"operator pause ({result}) was lost at 00:00 UTC"
    assert len(h.created) == created_before
