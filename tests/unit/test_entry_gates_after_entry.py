"""Account-wide entry rules wait for a snapshot that shows every trade opened (audit entry2 B2;
BEHAVIOUR.md 5 gate 10).

Every runner of a wake reads the one snapshot fetched at its start. A trade another strategy
created or is still filling, or one (of any strategy) that turned OPEN after that read, is not
in it, so a rule on account figures (delta, margin, equity, positions) would be judged on an
account that is gone. Such rules now wait (no failure, the throttle not started, the reason
said once); rules that read no account figure do not.
"""
from __future__ import annotations

import logging

from clock import SimulatedClock
from conditions import max_account_delta, min_available_margin_pct, time_window
from tests.unit.test_runner_gates import (  # noqa: F401 (fake_resolution: autouse, fake legs)
    POLL,
    START,
    Counting,
    FakeLifecycle,
    FakeTrade,
    Harness,
    config,
    fake_resolution,
)
from trade_lifecycle import TradeState


def other_opening(now: float) -> FakeTrade:
    """Another strategy's trade, created at ``now`` and still opening."""
    return FakeTrade(id="T000000001", strategy="other", state=TradeState.OPENING, created_at=now)


def test_an_account_gate_waits_while_another_strategy_opens_and_for_a_snapshot_after_its_open_ended(caplog):
    h = Harness(config(entry_conditions=[max_account_delta(0.2)], check_interval_seconds=600.0))
    other = other_opening(h.clock.now())
    h.lifecycle._trades.append(other)

    with caplog.at_level(logging.INFO, logger="strategy"):
        h.tick()
        h.advance(POLL)
        h.tick()
    assert h.created == []
    assert h.runner.state.last_entry_check is None           # a wait is no check: the throttle has not started
    waits = [r for r in caplog.records if "account gates wait" in r.getMessage()]
    assert len(waits) == 1 and other.id in waits[0].getMessage()   # said once per episode

    h.advance(POLL)
    h.lifecycle.open(other)                 # the lifecycle saw it fill after this wake's snapshot was read
    h.tick()
    assert h.created == []
    assert "opened after this snapshot" in (h.runner.no_entry_reason or "")

    h.advance(POLL)
    h.tick()                                 # a snapshot taken after: judged (and passed) at once
    assert len(h.created) == 1


def test_a_strategy_with_several_trades_waits_for_a_snapshot_that_shows_its_own_last_one():
    # A trade open since before the runner started is in every snapshot: it holds nothing.
    held = FakeTrade(id="T000000000", strategy="other", state=TradeState.OPEN, created_at=START - 3600,
                     opened_at=START - 3500)
    h = Harness(config(entry_conditions=[min_available_margin_pct(50)], max_concurrent_trades=2),
                lifecycle=FakeLifecycle(SimulatedClock(start=START, speed=0), [held]))
    h.tick()
    assert len(h.created) == 1
    first = h.created[0]

    h.advance(POLL)
    h.lifecycle.open(first)
    h.tick()                                 # OPEN since this wake's snapshot: not in it
    assert len(h.created) == 1

    h.advance(POLL)
    h.tick()
    assert len(h.created) == 2


def test_only_the_rules_that_read_the_account_wait_while_another_strategy_opens():
    gated = Harness(config(name="gated", entry_conditions=[max_account_delta(0.2)]))
    timed = Harness(config(name="timed", entry_conditions=[time_window(0, 24)]), lifecycle=gated.lifecycle,
                    clock=gated.clock)
    gated.lifecycle._trades.append(other_opening(gated.clock.now()))
    snapshot = gated.snapshot()                  # the one snapshot of this wake
    gated.tick(snapshot)
    timed.tick(snapshot)
    assert [t.strategy for t in gated.lifecycle.created] == ["timed"]


def test_a_plain_callable_gets_the_whole_snapshot_so_it_waits_like_an_account_rule():
    counting = Counting(True)
    h = Harness(config(entry_conditions=[counting]))
    h.lifecycle._trades.append(other_opening(h.clock.now()))
    h.tick()
    assert h.created == [] and counting.calls == 0
