"""RFQ audit, finding F1: what an accept's answer, or part of a block trade, lets a job conclude.

A block trade is all-or-nothing on the exchange. Each test stands for a way evidence of only
part of it (or an answer without any readable leg) was turned into a verdict:

* an accept that answered (code 0) with an empty body was taken as "a block trade was seen",
  and 60 s later the job ended FAILED with no fill booked while the block trade existed;
* one leg of the block trade seen (in the accept answer, or the fill history) ended the job
  PARTIAL 60 s later: the lifecycle unwound the booked leg and the other, filled too, was left
  naked and unrecorded.

Only a block trade booked on every leg ends the job; anything less keeps it in AMBIGUOUS,
looking (block-trade list, then fill history), with one CRITICAL (BEHAVIOUR.md §6.4 step 5).
The fakes are those of tests/unit/test_rfq.py and tests/unit/test_rfq_safety.py.
"""
from __future__ import annotations

import logging
from typing import Any

from clock import SimulatedClock
from contracts import Side
from errors import OrderOutcomeUnknown, TransportError
from execution_job import JobStatus
from order_ledger import Intent, OrderLedger
from rfq import AMBIGUOUS_RESOLVE_SECONDS, RFQExecutor, RFQParams, RFQPhase
from tests.unit.test_rfq import FakeMarket, _drive
from tests.unit.test_rfq_safety import (
    CLOSE_LONG_STRANGLE,
    LONG_STRANGLE,
    NOW,
    REQUEST_ID,
    TRADE,
    RecordingEngine,
    ScriptedClient,
    block_leg,
    failing_list,
    kinds,
    our_block,
    position,
    rfq_env,
)
from tests.unit.test_trade_lifecycle import create_strangle
from tests.unit.test_trade_lifecycle import world  # noqa: F401 - a fixture
from trade_lifecycle import TradeState

HISTORY_DOWN = TransportError("GET trade history", "read timeout")


def booked(env: Any, intent: Intent = Intent.OPEN) -> list[float]:
    return [env.ledger.leg_fill(TRADE.id, leg.leg_index, intent)[0] for leg in LONG_STRANGLE]


def down_until(until: float, records: list[dict[str, Any]]):
    """A block-trade list that fails until ``until``, then shows ``records``."""
    def listing(now: float, **filters: Any) -> Any:
        if now < until:
            raise TransportError("GET blocktrade orders", "server error", 503)
        return {"list": records}
    return listing


def empty_list(now: float, **filters: Any) -> Any:
    return {"list": []}


def criticals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL and r.name == "rfq"]


# ------------------------------------------------------------------ an answer without a readable leg

def test_an_accept_answered_without_legs_while_every_lookup_fails_stays_unknown(caplog):
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0),
                  accept={},   # code 0 with an empty data object: the accept may well have traded
                  blocktrades=failing_list, history=HISTORY_DOWN)
    with caplog.at_level(logging.WARNING, logger="rfq"):
        _drive(env.job, env.clock, 400.0)
    assert env.job.status is JobStatus.WORKING and env.job.phase is RFQPhase.AMBIGUOUS, env.job.result().reason
    assert booked(env) == [0.0, 0.0]
    assert kinds(env.client).count("accept") == 1 and "cancel" not in kinds(env.client)
    assert env.limit.started == []                                   # no second open by the fallback
    assert len(criticals(caplog)) == 1                               # said once, as for an unanswered accept


def test_an_accept_answered_without_legs_is_booked_once_the_list_shows_it():
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0), accept={},
                  blocktrades=down_until(NOW + 150.0, [our_block(LONG_STRANGLE)]), history=HISTORY_DOWN)
    _drive(env.job, env.clock, 300.0)
    assert env.job.status is JobStatus.FILLED and env.job.accepted_quote_id == "2", env.job.result().reason
    assert booked(env) == [0.5, 0.5]
    assert env.clock.now() >= NOW + 150.0


def test_an_accept_answered_without_legs_is_resolved_like_an_unanswered_one():
    """No leg was read, so nothing proves a block trade: as for an accept without an answer, an
    answered list read back past the RFQ, begun 60 s or more after the accept, settles "not
    accepted" (an open: FAILED, no fallback)."""
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0, open_fallback="limit"), accept={},
                  blocktrades=empty_list)
    _drive(env.job, env.clock, 200.0)
    assert env.job.status is JobStatus.FAILED and "not accepted" in env.job.result().reason
    assert env.limit.started == [] and booked(env) == [0.0, 0.0]


# ------------------------------------------------------------------ part of the block trade

def test_an_accept_answer_with_one_unreadable_leg_is_not_a_partial_block_trade(caplog):
    good = block_leg(LONG_STRANGLE[0].symbol, Side.BUY, 0.5, 98.0, 700)
    bad = block_leg(LONG_STRANGLE[1].symbol, Side.BUY, 0.5, 98.0, 701)
    del bad["price"]                                                 # one leg of the answer cannot be read
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0), accept={"legs": [good, bad]},
                  blocktrades=failing_list, history=HISTORY_DOWN)
    with caplog.at_level(logging.WARNING, logger="rfq"):
        _drive(env.job, env.clock, 400.0)
    assert env.job.status is JobStatus.WORKING and env.job.phase is RFQPhase.AMBIGUOUS, env.job.result().reason
    assert booked(env) == [0.5, 0.0]                                 # what was read is booked, nothing invented
    [critical] = criticals(caplog)                                   # one CRITICAL, naming the leg not booked
    assert "proven" in critical and LONG_STRANGLE[1].symbol in critical and REQUEST_ID in critical


def test_the_rest_of_a_partly_answered_block_trade_is_booked_from_the_list_without_doubling():
    good = block_leg(LONG_STRANGLE[0].symbol, Side.BUY, 0.5, 98.0, 700)
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0), accept={"legs": [good]},
                  blocktrades=down_until(NOW + 200.0, [our_block(LONG_STRANGLE)]), history=HISTORY_DOWN)
    _drive(env.job, env.clock, 400.0)
    assert env.job.status is JobStatus.FILLED, env.job.result().reason
    assert booked(env) == [0.5, 0.5] and len(env.ledger.orders(TRADE.id)) == 2


def test_a_partly_answered_block_trade_is_never_called_not_accepted_from_the_lists_silence():
    """The answer proved the block trade (one leg read): a list that answers without it after the
    window contradicts the exchange's own answer and proves nothing. No cancel, no fallback."""
    good = block_leg(LONG_STRANGLE[0].symbol, Side.BUY, 0.5, 98.0, 700)
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0, open_fallback="limit"),
                  accept={"legs": [good]}, blocktrades=empty_list)
    _drive(env.job, env.clock, 400.0)
    assert env.job.phase is RFQPhase.AMBIGUOUS and not env.job.done, env.job.result().reason
    assert "cancel" not in kinds(env.client) and env.limit.started == []


def test_a_wrong_side_leg_with_the_other_leg_missing_keeps_looking():
    """A wrong-side leg ends the job only once every other leg is accounted for: the missing one
    traded with it and must be found before the lifecycle decides anything."""
    held = [position(leg.symbol, Side.BUY, 0.5, i + 1) for i, leg in enumerate(CLOSE_LONG_STRANGLE)]
    wrong = block_leg(CLOSE_LONG_STRANGLE[0].symbol, Side.BUY, 0.5, 102.0, 700)   # we asked to SELL
    env = rfq_env(CLOSE_LONG_STRANGLE, Intent.CLOSE, accept={"legs": [wrong]}, positions=held,
                  blocktrades=failing_list, history=HISTORY_DOWN)
    _drive(env.job, env.clock, 200.0)
    assert env.job.phase is RFQPhase.AMBIGUOUS and not env.job.done
    assert env.limit.started == []


def test_a_block_leg_above_the_planned_quantity_is_never_booked():
    big = [block_leg(leg.symbol, leg.side, 2.0, 98.0, 700 + leg.leg_index) for leg in LONG_STRANGLE]
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, accept={"legs": big}, blocktrades=failing_list, history=HISTORY_DOWN)
    _drive(env.job, env.clock, 120.0)
    assert booked(env) == [0.0, 0.0] and env.job.phase is RFQPhase.AMBIGUOUS


def test_one_leg_seen_in_an_unfinished_fill_history_is_not_a_partial_block_trade():
    """List down; the fill history's first page shows leg 0's block fill only and says more pages
    follow (leg 1 further on, or not indexed yet). Nothing is booked from an unfinished read,
    and the job keeps looking instead of handing the lifecycle a PARTIAL."""

    class HistoryClient(ScriptedClient):
        def trade_history(self, **filters: Any) -> Any:
            self.calls.append(("trade_history", filters))
            leg = LONG_STRANGLE[0]
            return {"list": [{"orderId": "700", "symbol": leg.symbol, "tradeSide": 1, "tradeType": 14,
                              "qty": "0.5", "price": "98", "time": int(NOW * 1000), "id": 1}], "hasNext": True}

        def query_order(self, order_id=None, client_order_id=None):
            self.calls.append(("query_order", order_id))
            return {"orderId": str(order_id), "symbol": LONG_STRANGLE[0].symbol, "tradeSide": 1, "qty": "0.5",
                    "fillQty": "0.5", "avgPrice": "98", "fee": "0.1", "state": 1}

    clock = SimulatedClock(start=NOW, speed=0)
    client = HistoryClient(clock, LONG_STRANGLE, accept=OrderOutcomeUnknown("POST accept", "read timeout"),
                           blocktrades=failing_list)
    ledger = OrderLedger(client, clock)
    market = FakeMarket()
    job = RFQExecutor(client, ledger, market, clock, limit=RecordingEngine(ledger, market)).start(
        TRADE, LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0))
    _drive(job, clock, 150.0)
    assert [ledger.leg_fill(TRADE.id, leg.leg_index, Intent.OPEN)[0] for leg in LONG_STRANGLE] == [0.0, 0.0]
    assert job.status is JobStatus.WORKING and job.phase is RFQPhase.AMBIGUOUS, job.result().reason


# ------------------------------------------------------------------ a long outage, a stop, the lifecycle

def test_a_stop_during_a_long_outage_does_not_abandon_a_proven_block_trade():
    """A kill or an exit asks the job to stop: an accept in doubt is still resolved first, however
    long the outage, and the block trade is booked when the list comes back."""
    good = block_leg(LONG_STRANGLE[0].symbol, Side.BUY, 0.5, 98.0, 700)
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0), accept={"legs": [good]},
                  blocktrades=down_until(NOW + 6 * 3600.0, [our_block(LONG_STRANGLE)]), history=HISTORY_DOWN)
    _drive(env.job, env.clock, 60.0)
    env.job.request_stop("kill")
    _drive(env.job, env.clock, 6 * 3600.0 - 60.0 - AMBIGUOUS_RESOLVE_SECONDS, step=30.0)
    assert env.job.phase is RFQPhase.AMBIGUOUS and not env.job.done
    _drive(env.job, env.clock, 300.0)
    assert env.job.status is JobStatus.FILLED and booked(env) == [0.5, 0.5]


def test_the_lifecycle_keeps_a_trade_whose_rfq_open_is_in_doubt_opening_for_as_long_as_it_lasts(world):  # noqa: F811
    """The lifecycle has no job deadline: an open job still WORKING (an RFQ accept in AMBIGUOUS)
    keeps its trade OPENING, so the strategy's single-flight gate holds its next entry, and the
    trade is judged on its fills only when the job ends."""
    trade = create_strangle(world, execution_mode="rfq")
    for _ in range(24):
        world.clock.advance(900.0)
        world.poll()
    assert trade.state is TradeState.OPENING and world.executor.last.advances
    assert len(world.executor.jobs) == 1                             # nothing re-sent meanwhile
