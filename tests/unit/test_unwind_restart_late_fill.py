"""A restart mid-unwind sizes the next unwind round only on every fill (RECOVERY.md T6).

An unwind job cancels its order; the exchange shows it CANCELED with nothing filled; the
daemon dies during the job's late-fill grace; the order had filled (API.md 11.16). After the
restart the trade is UNWINDING with no job. T3 and T8 poll such orders once more after the
grace before deciding; T6 did not: the next round was sized without the late fill, so a
reduce-only order went out for a position that was already flat (or, with another trade of
ours on the same symbol and side, would sell that trade's position). Found by an audit
(audit_exec2).

The fakes are those of tests/unit/test_lifecycle_safety.py.
"""
from __future__ import annotations

import pytest

from execution_job import JobStatus
from order_ledger import Intent, OrderStatus
from trade_lifecycle import EXIT_REASON_KILL, TradeLifecycle, TradeState
from tests.unit.test_lifecycle_safety import GRACE, restart, rig, sent, tick  # noqa: F401 - rig: a fixture
from tests.unit.test_trade_lifecycle import CALL, PUT, World, create_strangle


def unwinding_after_a_partial_open(rig: World, *, kill: bool = False) -> TradeLifecycle:
    """The call's open filled 0.1, the put's never did: the trade unwinds the call (in kill mode
    when ``kill``: its rounds then carry the kill intent)."""
    trade = create_strangle(rig)
    call = rig.ledger.order(trade.id, 0, CALL, Intent.OPEN)
    rig.ledger.book(call, 0.1, 100.0)
    put = rig.ledger.order(trade.id, 1, PUT, Intent.OPEN)
    rig.ledger.end(put, OrderStatus.CANCELED)
    rig.ledger.rechecked.add(put.client_order_id)              # the open job's own grace poll
    rig.executor.last.end(JobStatus.PARTIAL)
    rig.clock.advance(2)
    rig.poll()
    assert trade.state is TradeState.UNWINDING
    if kill:   # the kill switch lets the round in flight end; the next one carries the kill intent
        assert rig.manager.force_close(trade.id, EXIT_REASON_KILL)
        rig.executor.last.end(JobStatus.FAILED)
        rig.clock.advance(1)
        rig.poll()
    assert rig.executor.last.intent is (Intent.KILL if kill else Intent.UNWIND)
    return trade


def crash_after_cancelling_the_unwind_order(rig: World, trade: TradeLifecycle, intent: Intent,
                                            late_qty: float) -> int:
    """The round's order on the call: cancelled by its job, ``late_qty`` of it filled but not reported yet."""
    order = rig.ledger.order(trade.id, 0, CALL, intent)
    rig.ledger.end(order, OrderStatus.CANCELED)
    rig.ledger.late[order.client_order_id] = (late_qty, 95.0)
    return order.client_order_id


@pytest.mark.parametrize("intent", [Intent.UNWIND, Intent.KILL], ids=["unwind", "kill"])
def test_row_t6_an_interrupted_unwind_polls_its_cancelled_order_again_after_the_grace_before_a_new_round(
        rig, intent):
    trade = unwinding_after_a_partial_open(rig, kill=intent is Intent.KILL)
    jobs = len(rig.executor.jobs)
    cancelled = crash_after_cancelling_the_unwind_order(rig, trade, intent, 0.1)
    manager = restart(rig)
    manager.release()
    again = manager.get(trade.id)
    assert again.state is TradeState.UNWINDING
    tick(rig, manager)
    assert sent(rig, "recheck") == [] and len(rig.executor.jobs) == jobs     # within the grace: waits
    tick(rig, manager, GRACE)
    assert sent(rig, "recheck") == [cancelled]
    tick(rig, manager, GRACE)
    assert rig.executor.jobs[jobs:] == []                       # the late fill sold the whole call
    assert again.state is TradeState.FAILED and again.legs[0].close_filled == pytest.approx(0.1)


def test_row_t6_the_next_round_is_sized_on_the_late_fill_too(rig):
    trade = unwinding_after_a_partial_open(rig)
    jobs = len(rig.executor.jobs)
    crash_after_cancelling_the_unwind_order(rig, trade, Intent.UNWIND, 0.04)
    manager = restart(rig)
    manager.release()
    tick(rig, manager)
    tick(rig, manager, GRACE)
    started = rig.executor.jobs[jobs:]
    assert len(started) == 1 and started[0].intent is Intent.UNWIND
    assert [(leg.symbol, leg.qty) for leg in started[0].legs] == [(CALL, pytest.approx(0.06))]


def test_row_t6_a_late_fill_poll_without_an_answer_holds_the_next_round(rig):
    trade = unwinding_after_a_partial_open(rig)
    jobs = len(rig.executor.jobs)
    cancelled = crash_after_cancelling_the_unwind_order(rig, trade, Intent.UNWIND, 0.1)
    rig.ledger.no_answer.add(cancelled)
    manager = restart(rig)
    manager.release()
    tick(rig, manager, GRACE)
    tick(rig, manager, GRACE)
    assert sent(rig, "recheck") == [cancelled] * 2 and rig.executor.jobs[jobs:] == []
    rig.ledger.no_answer.clear()
    tick(rig, manager, GRACE)
    assert manager.get(trade.id).state is TradeState.FAILED and rig.executor.jobs[jobs:] == []


def test_row_t6_the_late_fill_poll_is_asked_once_per_order_and_never_again_once_settled(rig):
    trade = unwinding_after_a_partial_open(rig)
    jobs = len(rig.executor.jobs)
    cancelled = crash_after_cancelling_the_unwind_order(rig, trade, Intent.UNWIND, 0.0)   # it never filled
    rig.clock.advance(60)                                       # cancelled long before the restart
    manager = restart(rig)
    manager.release()
    tick(rig, manager)
    assert sent(rig, "recheck") == [cancelled]                  # past the grace: asked on the first tick
    assert len(rig.executor.jobs) == jobs + 1                   # and the round goes out on it
    rig.executor.last.end(JobStatus.FAILED)
    tick(rig, manager, 1)
    tick(rig, manager, 1)
    assert sent(rig, "recheck") == [cancelled] and len(rig.executor.jobs) == jobs + 2
