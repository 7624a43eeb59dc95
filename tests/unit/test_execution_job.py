"""The shared job skeleton (execution_job): request budget, leg checks, finishing, grace, verdict.

The limit and smart jobs are tested end to end against the simulator; these tests pin the
lifecycle they share, on a minimal engine and a scripted exchange, so a change to it shows
here first. The ledger rules the skeleton must keep: a replacement is sized only after an
*answered* re-poll, "not found" is an answer, a create is never re-sent, unknown stays unknown.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from clock import SimulatedClock
from contracts import Side
from errors import ExchangeError, TransportError
from execution_job import (
    PHASE_DONE,
    PHASE_FINISHING,
    PHASE_GRACE,
    ExecutionJob,
    FillResult,
    JobStatus,
    LegFill,
    LegTarget,
    LegWork,
    OrderBookJob,
    OutOfBudget,
    RequestBudget,
    checked_legs,
)
from multileg_orderbook import SmartExecutionJob
from order_ledger import Intent, OrderLedger, OrderStatus
from rfq import RFQJob
from trade_execution import LimitFillJob

NOW = 1_772_431_200.0
SYMBOL = "BTCUSD-6MAR26-95000-C"
TRADE = SimpleNamespace(id="T000000001", seq=1)
CANCELED, FILLED, LIVE = 3, 1, 0


class ScriptedExchange:
    """Answers create, query and cancel from a per-order script; records every request."""

    def __init__(self, clock: SimulatedClock) -> None:
        self.clock = clock
        self.requests: list[str] = []
        self.orders: dict[int, dict[str, Any]] = {}
        self.fill_on_cancel = 0.0        # filled by the time the cancel lands
        self.late_fill = 0.0             # reported only by a poll after the cancel was confirmed
        self.fail_queries = 0            # the next N queries fail without an answer
        self.forgotten: set[int] = set()  # orders the exchange answers "not found" for
        self.hollow_answers: list[str] = []  # the next queries answer "empty", "foreign" or "no_fill"
        self._confirmed: set[int] = set()

    def create_order(self, symbol: str, qty: float, side: int, price: float, client_order_id: int,
                     **_: Any) -> int:
        self.requests.append("create")
        order_id = 1_900_000_000_000_000_000 + len(self.orders)
        self.orders[order_id] = {"orderId": order_id, "clientOrderId": client_order_id, "qty": qty,
                                 "fillQty": 0.0, "avgPrice": 0.0, "fee": 0.0, "state": LIVE}
        return order_id

    def query_order(self, order_id: int | None = None, client_order_id: int | None = None) -> dict:
        self.requests.append("query")
        if self.fail_queries:
            self.fail_queries -= 1
            raise TransportError("GET order", "timed out")
        if order_id in self.forgotten:
            raise ExchangeError(10584, "order not found", "GET order")
        if self.hollow_answers:
            kind = self.hollow_answers.pop(0)
            if kind == "empty":
                return {}                                     # code 0, data {}
            if kind == "foreign":
                return {"orderId": 42, "clientOrderId": 42, "qty": 1.0, "fillQty": 0.0, "avgPrice": 0.0,
                        "state": CANCELED}
            row = self.orders[order_id]
            return {key: value for key, value in row.items() if key not in ("fillQty", "avgPrice")}
        row = self.orders[order_id] if order_id is not None else next(
            o for o in self.orders.values() if o["clientOrderId"] == client_order_id)
        if row["state"] == CANCELED:
            if order_id in self._confirmed and self.late_fill:
                row["fillQty"], row["avgPrice"] = row["fillQty"] + self.late_fill, 100.0
                self.late_fill = 0.0
            self._confirmed.add(order_id)
        return {**row, "updateTime": int(self.clock.now() * 1000)}

    def cancel_order(self, order_id: int | None = None, **_: Any) -> None:
        self.requests.append("cancel")
        row = self.orders[order_id]
        if self.fill_on_cancel:
            row["fillQty"], row["avgPrice"] = self.fill_on_cancel, 100.0
        row["state"] = FILLED if row["fillQty"] >= row["qty"] else CANCELED

    def order_history(self, **filters: Any) -> Any:
        raise AssertionError("not used by this test")


class OneOrderJob(OrderBookJob[LegWork]):
    """The smallest engine: one order for one leg, then finishing when asked to stop."""

    _ACTIVE_PHASES = ("working",)
    _POLL_BEFORE_CANCEL = False
    _CONCLUDE_COMPLETE_BEFORE_GRACE = False

    def __init__(self, ledger: OrderLedger, clock: SimulatedClock, *, max_requests: int = 6,
                 grace_seconds: float = 5.0) -> None:
        leg = LegWork(target=LegTarget(0, SYMBOL, Side.BUY, 1.0), total=1.0, tick=1.0)
        super().__init__(ledger=ledger, market=None, trade=TRADE, intent=Intent.OPEN, best_effort=True,
                         started_at=clock.now(), max_requests=max_requests, legs=[leg],
                         grace_seconds=grace_seconds)
        self._phase = "working"

    def _step_active(self, now: float, budget: RequestBudget) -> None:
        leg = self._legs[0]
        if self._phase == "working" and leg.order is None and budget.take():
            self._send_order(leg, leg.total, 100.0)


def rig(**knobs: Any) -> tuple[SimulatedClock, ScriptedExchange, OrderLedger, OneOrderJob]:
    clock = SimulatedClock(start=NOW, speed=0)
    exchange = ScriptedExchange(clock)
    ledger = OrderLedger(exchange, clock)
    job_class = type("Job", (OneOrderJob,), knobs) if knobs else OneOrderJob
    return clock, exchange, ledger, job_class(ledger, clock)


def advance_counting(job: ExecutionJob, exchange: ScriptedExchange, now: float) -> int:
    before = len(exchange.requests)
    job.advance(now)
    return len(exchange.requests) - before


# ---- request budget and legs -----------------------------------------------------------


def test_the_budget_answers_or_raises_and_never_goes_below_zero():
    budget = RequestBudget(3)
    assert budget.take() and budget.left == 2
    assert not budget.take(3) and budget.left == 2        # nothing reserved when too few are left
    budget.spend(2)
    assert budget.left == 0 and not budget.take()
    with pytest.raises(OutOfBudget):
        budget.spend()
    assert budget.left == 0


def test_legs_are_refused_when_empty_or_repeated():
    with pytest.raises(ValueError, match="at least one leg"):
        checked_legs([])
    with pytest.raises(ValueError, match="duplicate leg indexes"):
        checked_legs([LegTarget(0, "A", Side.BUY, 1.0), LegTarget(0, "B", Side.BUY, 1.0)])
    legs = (LegTarget(0, "A", Side.BUY, 1.0), LegTarget(1, "B", Side.BUY, 1.0))
    assert checked_legs(iter(legs)) == list(legs)


def test_total_cash_signs():
    result = FillResult(JobStatus.FILLED, [LegFill(0, "A", 2, 1.0, 1.0, 100.0, 1.0),
                                           LegFill(1, "B", 1, 0.5, 0.5, 50.0, 0.5)])
    assert result.total_cash == 100.0 - 25.0 - 1.5


def test_an_engine_that_does_not_supply_its_working_step_cannot_be_built():
    class Incomplete(OrderBookJob[LegWork]):
        pass

    with pytest.raises(TypeError):
        Incomplete(ledger=None, market=None, trade=TRADE, intent=Intent.OPEN, best_effort=True,  # type: ignore
                   started_at=NOW, max_requests=6, legs=[], grace_seconds=0.0)


def test_every_engine_is_an_execution_job_and_states_its_request_pattern():
    assert issubclass(RFQJob, ExecutionJob)
    assert (LimitFillJob._POLL_BEFORE_CANCEL, LimitFillJob._CONCLUDE_COMPLETE_BEFORE_GRACE) == (False, False)
    assert (SmartExecutionJob._POLL_BEFORE_CANCEL, SmartExecutionJob._CONCLUDE_COMPLETE_BEFORE_GRACE) == (True, True)


# ---- finishing, grace, verdict -------------------------------------------------------------


def test_a_stop_before_any_order_fails_without_a_request():
    clock, exchange, _ledger, job = rig()
    job.request_stop("operator")
    job.request_stop("again")                               # a second request changes nothing
    assert job.advance(clock.now()) is JobStatus.FAILED
    assert exchange.requests == [] and job.phase == PHASE_DONE and job.result().reason == "operator"


def test_finishing_cancels_until_final_then_the_grace_poll_counts_a_late_fill():
    clock, exchange, ledger, job = rig()
    job.advance(clock.now())                                # the order goes out
    exchange.late_fill = 0.4
    job.request_stop("exit")
    assert advance_counting(job, exchange, clock.now()) == 2   # cancel, poll: final (CANCELED, no fill)
    assert job.phase == PHASE_GRACE and job.status is JobStatus.WORKING
    clock.advance(4.9)
    assert advance_counting(job, exchange, clock.now()) == 0   # the grace is a deadline, not a wait
    clock.advance(0.1)
    job.advance(clock.now())                                # the grace poll adopts the late fill
    result = job.result()
    assert job.status is JobStatus.PARTIAL and result.reason == "exit"
    assert result.legs[0].filled_qty == pytest.approx(0.4) and result.legs[0].order_ids == [
        o.client_order_id for o in ledger.orders()]
    assert exchange.requests.count("create") == 1           # never a second order


def test_the_grace_poll_resumes_on_the_next_step_when_the_budget_is_short():
    clock, exchange, _ledger, job = rig()
    job.advance(clock.now())
    job.request_stop("exit")
    job.advance(clock.now())
    clock.advance(5.0)
    job._max_requests = 0                                   # no request this step
    assert advance_counting(job, exchange, clock.now()) == 0 and job.phase == PHASE_GRACE
    job._max_requests = 6
    assert job.advance(clock.now()) is JobStatus.FAILED      # polled; nothing filled


@pytest.mark.parametrize("at_once", [True, False])
def test_a_job_complete_after_finishing_concludes_at_once_or_after_the_grace(at_once):
    clock, exchange, _ledger, job = rig(_CONCLUDE_COMPLETE_BEFORE_GRACE=at_once)
    job.advance(clock.now())
    exchange.fill_on_cancel = 1.0                           # filled while the cancel was on its way
    job.request_stop("exit")
    job.advance(clock.now())
    if at_once:
        assert job.status is JobStatus.FILLED and job.phase == PHASE_DONE
        return
    assert job.phase == PHASE_GRACE
    clock.advance(5.0)
    assert job.advance(clock.now()) is JobStatus.FILLED and job.result().reason == ""


def test_a_cancel_is_charged_its_worst_case_of_two_requests():
    clock, exchange, _ledger, job = rig()
    job.advance(clock.now())
    job.request_stop("exit")
    job._max_requests = 2
    job.advance(clock.now())
    assert exchange.requests[1:] == ["cancel"] and job.phase == PHASE_FINISHING   # a budget of 2: no poll after it
    job.advance(clock.now())                                # the confirming poll, on the next step if needed
    assert job.phase == PHASE_GRACE and exchange.requests[1:] == ["cancel", "query"]


def test_an_engine_that_polls_before_cancelling_sends_no_cancel_for_a_filled_order():
    clock, exchange, _ledger, job = rig(_POLL_BEFORE_CANCEL=True)
    job.advance(clock.now())
    [row] = exchange.orders.values()
    row.update(fillQty=1.0, avgPrice=100.0, state=FILLED)
    job.request_stop("exit")
    clock.advance(1.0)
    job.advance(clock.now())
    assert exchange.requests == ["create", "query"] and job._all_complete()


# ---- replacement only after an answered re-poll ---------------------------------------------


def test_a_replacement_waits_for_an_answered_re_poll_of_the_order_it_replaces():
    clock, exchange, ledger, job = rig()
    job.advance(clock.now())
    leg = job._legs[0]
    ledger.cancel(leg.order)
    ledger.poll(leg.order)
    assert leg.order.status is OrderStatus.CANCELED
    exchange.late_fill = 0.3
    assert not job._late_fill_settled(leg, clock.now(), RequestBudget(6))   # inside the grace
    clock.advance(5.0)
    assert not job._late_fill_settled(leg, clock.now(), RequestBudget(0))   # no request to ask with
    exchange.fail_queries = 1
    assert not job._late_fill_settled(leg, clock.now(), RequestBudget(6))   # no answer: not settled
    assert leg.order.filled_qty == 0.0
    assert job._late_fill_settled(leg, clock.now(), RequestBudget(6))       # answered: fill adopted
    assert leg.order.filled_qty == pytest.approx(0.3) and job._remaining(leg) == pytest.approx(0.7)


@pytest.mark.parametrize("hollow", ["empty", "foreign", "no_fill"])
def test_an_answer_that_says_nothing_of_the_fill_never_settles_the_replaced_order(hollow):
    """``code`` 0 with an empty ``data``, a view of another order, or a view without ``fillQty``:
    taken as the exchange's word, the replacement was sized as if no late fill could come."""
    clock, exchange, ledger, job = rig()
    job.advance(clock.now())
    leg = job._legs[0]
    ledger.cancel(leg.order)
    ledger.poll(leg.order)
    exchange.late_fill = 0.4
    clock.advance(5.0)
    exchange.hollow_answers = [hollow]
    assert not job._late_fill_settled(leg, clock.now(), RequestBudget(6))
    assert leg.order.status is OrderStatus.CANCELED and leg.order.order_id != 42
    assert job._late_fill_settled(leg, clock.now(), RequestBudget(6))       # a real answer: the fill
    assert job._remaining(leg) == pytest.approx(0.6)


@pytest.mark.parametrize("unanswered", ["timeout", "empty"])
def test_the_job_ends_only_once_its_last_poll_was_answered(unanswered):
    """The verdict (FAILED, PARTIAL) is acted on at once: a grace poll without an answer proves
    no absence of a late fill, so the job stays WORKING and asks again."""
    clock, exchange, ledger, job = rig()
    job.advance(clock.now())
    exchange.late_fill = 0.4
    job.request_stop("exit")
    job.advance(clock.now())                                # cancel, poll: CANCELED, no fill yet
    clock.advance(5.0)
    if unanswered == "timeout":
        exchange.fail_queries = 2
    else:
        exchange.hollow_answers = ["empty", "empty"]
    assert job.advance(clock.now()) is JobStatus.WORKING and job.phase == PHASE_GRACE
    clock.advance(2.0)
    assert job.advance(clock.now()) is JobStatus.WORKING
    clock.advance(2.0)
    assert job.advance(clock.now()) is JobStatus.PARTIAL
    assert job.result().legs[0].filled_qty == pytest.approx(0.4)


def test_not_found_is_an_answer_that_settles_the_replaced_order():
    clock, exchange, ledger, job = rig()
    job.advance(clock.now())
    leg = job._legs[0]
    ledger.cancel(leg.order)
    ledger.poll(leg.order)
    exchange.forgotten.add(leg.order.order_id)
    clock.advance(5.0)
    assert job._late_fill_settled(leg, clock.now(), RequestBudget(1))
    assert leg.order.status is OrderStatus.CANCELED and leg.order.filled_qty == 0.0   # nothing invented
