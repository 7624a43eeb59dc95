"""A job still working past every engine's own limits is told to a person (BEHAVIOUR.md §4.2).

Waiting can be right (an RFQ accept whose fate is unknown is looked up until the exchange says;
a block trade proven by some of its legs is looked for until every leg is booked), waiting
silently is not: the trade holds its strategy's next entry and may hold a position. After
``JOB_OVERDUE_SECONDS`` a CRITICAL ``job_overdue`` names the trade and the job, repeated at most
every ``JOB_OVERDUE_ALERT_EVERY_SECONDS``; a job that ends in time says nothing.
"""
from __future__ import annotations

from execution_job import JobStatus
from trade_lifecycle import JOB_OVERDUE_ALERT_EVERY_SECONDS, JOB_OVERDUE_SECONDS, TradeState
from tests.unit.test_trade_lifecycle import FakeLedger, build_world, create_strangle, open_trade
from tests.unit.test_trade_lifecycle import world  # noqa: F401 - a fixture

POLL = 10.0


def overdue_alerts(world) -> list[tuple]:
    return [sent for sent in world.alerts.sent if sent[1] == "job_overdue"]


def run_polls(world, seconds: float) -> None:
    for _ in range(int(seconds // POLL)):
        world.poll()
        world.clock.advance(POLL)


def test_an_open_job_working_past_the_limit_is_alerted_once_then_hourly():
    world = build_world(lambda journal, clock: FakeLedger(journal))
    trade = create_strangle(world)
    run_polls(world, JOB_OVERDUE_SECONDS - POLL)
    assert overdue_alerts(world) == [] and trade.state is TradeState.OPENING
    run_polls(world, 3 * POLL)
    [(level, _, message, detail)] = overdue_alerts(world)
    assert level == "CRITICAL" and trade.id in message and "open job" in message and "30 min" in message
    assert detail["trade_id"] == trade.id and detail["job"] == "open"
    run_polls(world, JOB_OVERDUE_ALERT_EVERY_SECONDS - 4 * POLL)
    assert len(overdue_alerts(world)) == 1
    run_polls(world, 5 * POLL)
    assert len(overdue_alerts(world)) == 2


def test_jobs_that_end_in_time_say_nothing_even_when_the_trade_lives_long():
    world = build_world(lambda journal, clock: FakeLedger(journal))
    open_trade(world)                                  # an open job that ended at once
    run_polls(world, 3 * JOB_OVERDUE_SECONDS)          # the trade lives on, with no job working
    assert overdue_alerts(world) == []


def test_the_age_is_per_job_not_per_trade():
    world = build_world(lambda journal, clock: FakeLedger(journal))
    trade = create_strangle(world)
    run_polls(world, JOB_OVERDUE_SECONDS - 6 * POLL)
    world.ledger.fill(trade.id, 0, world.executor.last.intent, 0.1, 100.0, 0.5, at=world.clock.now())
    world.ledger.fill(trade.id, 1, world.executor.last.intent, 0.1, 200.0, 0.6, at=world.clock.now())
    world.executor.last.end(JobStatus.FILLED)
    run_polls(world, 2 * POLL)
    assert trade.state is TradeState.OPEN and overdue_alerts(world) == []
