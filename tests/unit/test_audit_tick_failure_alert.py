"""Audit: a trade whose tick fails on every tick is alerted, not only logged (BEHAVIOUR.md §4.2).

The finding: ``LifecycleManager._run`` caught any exception of one trade's tick and only logged
it. A close the engine refuses every time left a trade whose exit had fired in PENDING_CLOSE
with its exposure, retried and logged forever, with no alert and no health flag. Now, like a
failing job step (``job_step_failing``), consecutive tick failures of a trade raise a CRITICAL
``trade_tick_failing`` (rate-limited), a tick that works again says ``trade_tick_recovered``, and
``LifecycleManager.failing_trades()`` shows the failing trades to the health state. Everything
runs on a ``SimulatedClock(speed=0)`` over the lifecycle test fakes: no sleep, no network.
"""
from __future__ import annotations

import conditions
from execution_job import JobStatus
from order_ledger import Intent
from trade_lifecycle import (
    TRADE_TICK_ALERT_EVERY_SECONDS,
    TRADE_TICK_ERROR_CHARS,
    TRADE_TICK_FAILURES_BEFORE_ALERT,
    TradeState,
)
from tests.unit.test_trade_lifecycle import FakeLedger, build_world, open_trade
from tests.unit.test_trade_lifecycle import world  # noqa: F401 - a fixture

POLL = 10.0


def exit_fired(world) -> None:
    """Let the one-hour exit of the trades fire on the next poll."""
    world.clock.advance(3600)


def polls(world, count: int) -> None:
    for _ in range(count):
        world.poll()
        world.clock.advance(POLL)


def refuse_jobs_of(world, *trade_ids: str, message: str = "the engine refused the job") -> None:
    """The engine refuses every job of ``trade_ids``; the other trades' jobs start as usual."""
    real_start = world.executor.start
    refused = set(trade_ids)

    def start(mode, trade, legs, intent, params, *, best_effort=False):
        if trade.id in refused:
            raise RuntimeError(message)
        return real_start(mode, trade, legs, intent, params, best_effort=best_effort)

    world.executor.start = start


def tick_alerts(world, level: str | None = None) -> list[tuple]:
    return [sent for sent in world.alerts.sent
            if sent[1].startswith("trade_tick_") and (level is None or sent[0] == level)]


# ---- the finding, ported ----------------------------------------------------------------------


def test_a_close_that_never_starts_is_alerted():
    world = build_world(lambda journal, clock: FakeLedger(journal))
    trade = open_trade(world, exits=[conditions.max_hold_hours(1)])
    world.executor.fail_start = True          # the engine refuses every close job (a bug, a bad book)
    exit_fired(world)
    polls(world, 60)                           # ten minutes of polls at 10 s
    assert trade.state is TradeState.PENDING_CLOSE and trade.has_exposure   # the exit fired, nothing closes
    critical = tick_alerts(world, "CRITICAL")
    assert [kind for _, kind, _, _ in critical] == ["trade_tick_failing"]   # once: rate-limited, not every poll
    _, _, message, detail = critical[0]
    assert trade.id in message and "PENDING_CLOSE" in message
    assert "RuntimeError: the engine refused the job" in message and "still holds a position" in message
    assert detail["trade_id"] == trade.id and detail["state"] == "PENDING_CLOSE"
    assert detail["failures"] == TRADE_TICK_FAILURES_BEFORE_ALERT
    assert detail["failing_seconds"] == (TRADE_TICK_FAILURES_BEFORE_ALERT - 1) * POLL
    assert detail["error"] == "RuntimeError: the engine refused the job"
    # The health state can show it: the trade and how long (injected clock) it has been failing.
    assert world.manager.failing_trades() == {trade.id: 60 * POLL}


# ---- threshold, rate limit, recovery ---------------------------------------------------------


def test_the_alert_waits_for_a_few_failures_then_repeats_at_most_hourly(world):
    trade = open_trade(world, exits=[conditions.max_hold_hours(1)])
    world.executor.fail_start = True
    exit_fired(world)
    polls(world, TRADE_TICK_FAILURES_BEFORE_ALERT - 1)
    assert tick_alerts(world) == [] and world.manager.failing_trades() == {}   # a blip is not news yet
    polls(world, 1)
    assert len(tick_alerts(world, "CRITICAL")) == 1 and trade.id in world.manager.failing_trades()
    first_at = world.clock.now() - POLL
    world.clock.set_time(first_at + TRADE_TICK_ALERT_EVERY_SECONDS - POLL)
    polls(world, 1)
    assert len(tick_alerts(world, "CRITICAL")) == 1                                # throttled
    world.clock.set_time(first_at + TRADE_TICK_ALERT_EVERY_SECONDS)
    polls(world, 1)
    again = tick_alerts(world, "CRITICAL")
    assert len(again) == 2 and "1 h 00 min" in again[1][2]                       # how long it has lasted
    assert world.manager.failing_trades()[trade.id] >= TRADE_TICK_ALERT_EVERY_SECONDS


def test_a_tick_that_works_again_says_so_and_a_new_streak_counts_from_zero(world):
    trade = open_trade(world, exits=[conditions.max_hold_hours(1)])
    world.executor.fail_start = True
    exit_fired(world)
    polls(world, TRADE_TICK_FAILURES_BEFORE_ALERT)
    assert [kind for _, kind, _, _ in tick_alerts(world)] == ["trade_tick_failing"]
    world.executor.fail_start = False          # the engine takes the close again
    polls(world, 1)
    assert trade.state is TradeState.CLOSING and world.executor.last.intent is Intent.CLOSE
    recovered = tick_alerts(world)[-1]
    assert recovered[:2] == ("WARNING", "trade_tick_recovered") and trade.id in recovered[2]
    assert world.manager.failing_trades() == {}
    # The close round ends with exposure left; the next one is refused again: a fresh streak.
    world.executor.last.end(JobStatus.PARTIAL)
    world.executor.fail_start = True
    polls(world, TRADE_TICK_FAILURES_BEFORE_ALERT)
    kinds = [kind for _, kind, _, _ in tick_alerts(world)]
    assert kinds == ["trade_tick_failing", "trade_tick_recovered", "trade_tick_failing"]


def test_a_failure_that_heals_before_the_threshold_raises_nothing(world):
    trade = open_trade(world, exits=[conditions.max_hold_hours(1)])
    world.executor.fail_start = True
    exit_fired(world)
    polls(world, TRADE_TICK_FAILURES_BEFORE_ALERT - 1)
    world.executor.fail_start = False
    polls(world, 1)
    assert trade.state is TradeState.CLOSING
    assert tick_alerts(world) == [] and world.manager.failing_trades() == {}


def test_the_alert_carries_a_bounded_error_text(world):
    trade = open_trade(world, exits=[conditions.max_hold_hours(1)])
    refuse_jobs_of(world, trade.id, message="x" * 5000)
    exit_fired(world)
    polls(world, TRADE_TICK_FAILURES_BEFORE_ALERT)
    (_, _, message, detail), = tick_alerts(world, "CRITICAL")
    assert len(detail["error"]) == TRADE_TICK_ERROR_CHARS and detail["error"].startswith("RuntimeError: xxx")
    assert "x" * 400 not in message


# ---- one trade's failure never stops the others ----------------------------------------------


def test_a_failing_trade_does_not_stop_the_other_trades(world):
    bad = open_trade(world, exits=[conditions.max_hold_hours(1)])
    good = open_trade(world, exits=[conditions.max_hold_hours(1)])
    assert bad.seq < good.seq                  # the failing trade is ticked first
    refuse_jobs_of(world, bad.id)
    exit_fired(world)
    polls(world, 1)
    assert bad.state is TradeState.PENDING_CLOSE and good.state is TradeState.CLOSING
    close = next(job for job in world.executor.jobs if job.trade.id == good.id and job.intent is Intent.CLOSE)
    world.ledger.fill(good.id, 0, Intent.CLOSE, 0.1, 60.0, 0.3)
    world.ledger.fill(good.id, 1, Intent.CLOSE, 0.1, 150.0, 0.4)
    close.end(JobStatus.FILLED)
    polls(world, TRADE_TICK_FAILURES_BEFORE_ALERT)
    assert good.state is TradeState.CLOSED and world.closed == [good]
    assert bad.state is TradeState.PENDING_CLOSE
    failing = tick_alerts(world, "CRITICAL")
    assert len(failing) == 1 and failing[0][3]["trade_id"] == bad.id
    assert list(world.manager.failing_trades()) == [bad.id]


def test_a_trade_that_ends_while_failing_leaves_the_failing_list(world):
    trade = open_trade(world, exits=[conditions.max_hold_hours(1)])
    world.executor.fail_start = True
    exit_fired(world)
    polls(world, TRADE_TICK_FAILURES_BEFORE_ALERT)
    assert trade.id in world.manager.failing_trades()
    trade.state = TradeState.CLOSED            # ended by another path (an operator, a restart's book)
    polls(world, 2)
    assert world.manager.failing_trades() == {}
    assert tick_alerts(world)[-1][:2] == ("WARNING", "trade_tick_recovered")


def test_failing_trades_is_a_read_only_copy(world):
    trade = open_trade(world, exits=[conditions.max_hold_hours(1)])
    world.executor.fail_start = True
    exit_fired(world)
    polls(world, TRADE_TICK_FAILURES_BEFORE_ALERT)
    shown = world.manager.failing_trades()
    shown.clear()
    assert trade.id in world.manager.failing_trades()
