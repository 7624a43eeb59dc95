"""RFQ audit, finding F2: a restart adopts an accept's block trade once, whatever ids it carries.

At every start-up the reconciler looks up the block trade of every recorded accept of an
active trade (``rfq.adopt_block_trade``, docs/RECOVERY.md R1). Its de-duplication compared
exchange orderIds only, and fell back to "an id-less fill of the same quantity" only when the
list's leg had no orderId: an accept answer without the orderId and a list with it (or the
reverse) booked the same fill twice, and the trade believed it held twice its position.
A block trade found without every leg readable must not resolve the accept either: its
legs not booked traded too (a block trade is all-or-nothing).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from clock import SimulatedClock
from execution_job import JobStatus
from order_ledger import BLOCK_ACCEPT_EVENT, Intent, OrderLedger
from order_reconciliation import OrderReconciler
from reconciliation_report import ReconcileReport
from rfq import AMBIGUOUS_RESOLVE_SECONDS, BlockTradeIncomplete, RFQParams, adopt_block_trade
from tests.unit.test_rfq import NoExchange, _drive
from tests.unit.test_rfq_safety import LONG_STRANGLE, NOW, REQUEST_ID, TRADE, BlockList, block_leg, our_block, rfq_env
from tests.unit.store_fakes import NoFloorsNoKeptBlocks

LATER = NOW + 3600.0


def accept_marker() -> dict[str, Any]:
    return {"trade_id": TRADE.id, "trade_seq": TRADE.seq, "intent": int(Intent.OPEN), "request_id": REQUEST_ID,
            "quote_id": "2", "legs": [[leg.leg_index, leg.symbol, int(leg.side)] for leg in LONG_STRANGLE],
            "rfq_created_at": NOW}


def listing(*records: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(blocktrade_orders=BlockList(list(records)))


def filled(ledger: OrderLedger) -> list[float]:
    return [ledger.leg_fill(TRADE.id, leg.leg_index, Intent.OPEN)[0] for leg in LONG_STRANGLE]


def without_order_ids(record: dict[str, Any]) -> dict[str, Any]:
    for leg in record["legs"]:
        del leg["orderId"]
    return record


def run_accept(answer: Any) -> Any:
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0), accept=answer)
    _drive(env.job, env.clock, 30.0)
    assert env.job.status is JobStatus.FILLED and filled(env.ledger) == [0.5, 0.5]
    return env


# ------------------------------------------------------------------ the same fill, ids on one side only

def test_an_accept_answer_without_order_ids_is_not_booked_again_from_a_list_with_them():
    env = run_accept(lambda quote_id: without_order_ids(our_block(LONG_STRANGLE)))
    for _restart in range(3):
        found, recorded = adopt_block_trade(listing(our_block(LONG_STRANGLE)), env.ledger, accept_marker(), LATER,
                                            since=NOW - 30.0)
        assert (found, recorded) == (True, 0)
    assert filled(env.ledger) == [0.5, 0.5] and len(env.ledger.orders(TRADE.id)) == 2


def test_an_accept_answer_with_order_ids_is_not_booked_again_from_a_list_without_them():
    env = run_accept(lambda quote_id: {"legs": our_block(LONG_STRANGLE)["legs"]})
    found, recorded = adopt_block_trade(listing(without_order_ids(our_block(LONG_STRANGLE))), env.ledger,
                                        accept_marker(), LATER, since=NOW - 30.0)
    assert (found, recorded) == (True, 0) and filled(env.ledger) == [0.5, 0.5]


def test_an_older_block_fill_of_the_same_leg_is_not_taken_for_this_one():
    """The de-duplication is bounded by the RFQ's creation: an id-less block fill of the same
    leg and family made hours before this RFQ (an earlier round) is another fill, and this
    block trade's legs are booked."""
    clock = SimulatedClock(start=NOW, speed=0)
    ledger = OrderLedger(NoExchange(), clock)
    for leg in LONG_STRANGLE:
        ledger.record_block_fill(trade_id=TRADE.id, trade_seq=TRADE.seq, leg_index=leg.leg_index,
                                 intent=Intent.OPEN, symbol=leg.symbol, side=leg.side, qty=0.5, price=90.0, fee=0.0,
                                 order_id=None, filled_at=NOW - 7200.0)
    found, recorded = adopt_block_trade(listing(without_order_ids(our_block(LONG_STRANGLE))), ledger,
                                        accept_marker(), LATER, since=NOW - 30.0)
    assert (found, recorded) == (True, 2) and filled(ledger) == [1.0, 1.0]


# ------------------------------------------------------------------ a block trade found without every leg

def test_a_record_with_an_unreadable_leg_books_the_rest_and_keeps_the_accept_in_doubt():
    clock = SimulatedClock(start=NOW, speed=0)
    ledger = OrderLedger(NoExchange(), clock)
    record = our_block(LONG_STRANGLE)
    del record["legs"][1]["price"]
    with pytest.raises(BlockTradeIncomplete, match=LONG_STRANGLE[1].symbol):
        adopt_block_trade(listing(record), ledger, accept_marker(), LATER, since=NOW - 30.0)
    assert filled(ledger) == [0.5, 0.0]
    # The same record read whole later: the missing leg is booked, the booked one not again.
    found, recorded = adopt_block_trade(listing(our_block(LONG_STRANGLE)), ledger, accept_marker(), LATER,
                                        since=NOW - 30.0)
    assert (found, recorded) == (True, 1) and filled(ledger) == [0.5, 0.5]


def test_a_record_without_one_of_our_legs_keeps_the_accept_in_doubt():
    clock = SimulatedClock(start=NOW, speed=0)
    ledger = OrderLedger(NoExchange(), clock)
    record = our_block(LONG_STRANGLE)
    del record["legs"][1]
    with pytest.raises(BlockTradeIncomplete):
        adopt_block_trade(listing(record), ledger, accept_marker(), LATER, since=NOW - 30.0)
    assert filled(ledger) == [0.5, 0.0]


def test_a_record_whose_unreadable_leg_is_already_booked_resolves_the_accept():
    env = run_accept(lambda quote_id: {"legs": our_block(LONG_STRANGLE)["legs"]})
    record = our_block(LONG_STRANGLE)
    del record["legs"][1]["price"]
    assert adopt_block_trade(listing(record), env.ledger, accept_marker(), LATER, since=NOW - 30.0) == (True, 0)


class Lifecycle:
    """The two calls the reconciler's accept look-up makes on the lifecycle."""

    def __init__(self) -> None:
        self.refreshed: list[str] = []

    def active_trades(self) -> list[Any]:
        return [SimpleNamespace(id=TRADE.id)]

    def refresh_fills(self, trade_id: str) -> None:
        self.refreshed.append(trade_id)


class Store(NoFloorsNoKeptBlocks):
    def __init__(self, marker: dict[str, Any], at: float) -> None:
        self.marker, self.at = marker, at

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [{"ts": self.at, "payload": self.marker}] if kind == BLOCK_ACCEPT_EVENT else []


def test_the_reconciler_keeps_an_accept_in_doubt_while_its_block_trade_is_incomplete_past_the_window():
    """Row R3 gives an accept up after 60 s only when the list answered without it: a record
    found with a leg unreadable is the block trade itself, and the accept stays in doubt (its
    symbols deferred, the trade not judged) until every leg is booked."""
    clock = SimulatedClock(start=NOW, speed=0)
    ledger = OrderLedger(NoExchange(), clock)
    partial = our_block(LONG_STRANGLE)
    partial["legs"][1]["quantity"] = "x"
    block_list = BlockList([partial])
    reconciler = OrderReconciler(client=SimpleNamespace(blocktrade_orders=block_list), ledger=ledger,
                                 lifecycle=Lifecycle(), store=Store(accept_marker(), NOW), alerts=None)
    now = NOW + 10 * AMBIGUOUS_RESOLVE_SECONDS
    doubtful = reconciler.adopt_block_accepts(ReconcileReport("startup", now), now, startup=True)
    assert doubtful == {leg.symbol for leg in LONG_STRANGLE} and reconciler.accept_in_doubt(TRADE.id)
    assert filled(ledger) == [0.5, 0.0]
    block_list.records = [our_block(LONG_STRANGLE)]                  # read whole at the next pass
    report = ReconcileReport("periodic", now + 60.0)
    assert reconciler.adopt_block_accepts(report, now + 60.0, startup=False) == set()
    assert not reconciler.accept_in_doubt(TRADE.id) and report.block_fills_adopted == 1
    assert filled(ledger) == [0.5, 0.5]


def test_a_block_leg_without_an_order_id_is_still_booked_once_across_restarts():
    clock = SimulatedClock(start=NOW, speed=0)
    ledger = OrderLedger(NoExchange(), clock)
    record = our_block(LONG_STRANGLE)
    del record["legs"][0]["orderId"]
    record["legs"][1] = block_leg(LONG_STRANGLE[1].symbol, LONG_STRANGLE[1].side, 0.5, 98.0, 701)
    for _restart in range(3):
        adopt_block_trade(listing(record), ledger, accept_marker(), NOW, since=NOW - 30.0)
    assert filled(ledger) == [0.5, 0.5]
