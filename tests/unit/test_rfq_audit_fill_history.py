"""RFQ audit, finding F3: the fill history is a hint, never proof that a block fill is ours.

While the block-trade list cannot be read, an AMBIGUOUS accept is looked for in the fill
history. Nothing in a fill row ties it to our RFQ: the lookup used to book ANY block fill
(tradeType 14) on one of our symbols since the accept as our leg, at whatever quantity (a
2.0 fill of somebody else's RFQ booked on our 0.5 leg, and the job said FILLED). Now the legs
are booked from it only together, each from exactly one block fill of its symbol, side and
planned quantity after the accept, from a read that reached its last page.
"""
from __future__ import annotations

from typing import Any

from clock import SimulatedClock
from errors import OrderOutcomeUnknown
from execution_job import JobStatus, LegTarget
from order_ledger import Intent, OrderLedger
from rfq import RFQExecutor, RFQParams, RFQPhase
from tests.unit.test_rfq import FakeMarket, _drive
from tests.unit.test_rfq_safety import LONG_STRANGLE, NOW, TRADE, RecordingEngine, ScriptedClient, failing_list


def fill_row(leg: LegTarget, order_id: int, qty: float, *, at: float = NOW + 1.0, side: int = 1,
             row_id: int | None = None) -> dict[str, Any]:
    return {"orderId": str(order_id), "symbol": leg.symbol, "tradeSide": side, "tradeType": 14, "qty": str(qty),
            "price": "98", "time": int(at * 1000), "id": row_id if row_id is not None else order_id}


class HistoryClient(ScriptedClient):
    """List down; the fill history answers its first page, and its last one to a read that pages
    on (``fromId``); the order query answers from ``orders`` (order id -> (leg, qty))."""

    def __init__(self, clock: SimulatedClock, pages: list[dict[str, Any]], orders: dict[int, tuple[LegTarget, float]]):
        super().__init__(clock, LONG_STRANGLE, accept=OrderOutcomeUnknown("POST accept", "read timeout"),
                         blocktrades=failing_list)
        self.pages = pages
        self.order_answers = orders
        self.history_reads: list[dict[str, Any]] = []

    def trade_history(self, **filters: Any) -> Any:
        self.history_reads.append(filters)
        return self.pages[-1] if "fromId" in filters else self.pages[0]

    def query_order(self, order_id=None, client_order_id=None):
        leg, qty = self.order_answers[int(order_id)]
        return {"orderId": str(order_id), "symbol": leg.symbol, "tradeSide": int(leg.side), "qty": str(qty),
                "fillQty": str(qty), "avgPrice": "98", "fee": "0.1", "state": 1}


def run(pages: list[dict[str, Any]], orders: dict[int, tuple[LegTarget, float]], seconds: float = 30.0):
    clock = SimulatedClock(start=NOW, speed=0)
    client = HistoryClient(clock, pages, orders)
    ledger = OrderLedger(client, clock)
    market = FakeMarket()
    job = RFQExecutor(client, ledger, market, clock, limit=RecordingEngine(ledger, market)).start(
        TRADE, LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0))
    _drive(job, clock, seconds)
    booked = [ledger.leg_fill(TRADE.id, leg.leg_index, Intent.OPEN)[0] for leg in LONG_STRANGLE]
    return job, booked, client


C, P = LONG_STRANGLE


def test_a_foreign_block_fill_of_another_quantity_is_never_booked_as_our_leg():
    job, booked, _client = run([{"list": [fill_row(C, 800, 2.0), fill_row(P, 801, 2.0)]}],
                               {800: (C, 2.0), 801: (P, 2.0)})
    assert booked == [0.0, 0.0]                                      # never more than planned, never not ours
    assert job.status is JobStatus.WORKING and job.phase is RFQPhase.AMBIGUOUS


def test_every_leg_matching_exactly_books_the_block_trade():
    job, booked, _client = run([{"list": [fill_row(C, 800, 0.5), fill_row(P, 801, 0.5)]}],
                               {800: (C, 0.5), 801: (P, 0.5)})
    assert booked == [0.5, 0.5] and job.status is JobStatus.FILLED


def test_one_leg_matching_books_nothing():
    job, booked, _client = run([{"list": [fill_row(C, 800, 0.5), fill_row(P, 801, 2.0)]}],
                               {800: (C, 0.5), 801: (P, 2.0)})
    assert booked == [0.0, 0.0] and job.phase is RFQPhase.AMBIGUOUS


def test_two_candidates_for_one_leg_book_nothing():
    job, booked, _client = run([{"list": [fill_row(C, 800, 0.5), fill_row(C, 802, 0.5), fill_row(P, 801, 0.5)]}],
                               {800: (C, 0.5), 801: (P, 0.5), 802: (C, 0.5)})
    assert booked == [0.0, 0.0] and job.phase is RFQPhase.AMBIGUOUS


def test_fills_before_the_accept_on_the_wrong_side_or_far_apart_book_nothing():
    before = [fill_row(C, 800, 0.5, at=NOW - 600.0), fill_row(P, 801, 0.5, at=NOW - 600.0)]
    wrong_side = [fill_row(C, 800, 0.5, side=2), fill_row(P, 801, 0.5, side=2)]
    apart = [fill_row(C, 800, 0.5, at=NOW + 1.0), fill_row(P, 801, 0.5, at=NOW + 25.0)]
    for rows in (before, wrong_side, apart):
        job, booked, _client = run([{"list": rows}], {800: (C, 0.5), 801: (P, 0.5)})
        assert booked == [0.0, 0.0] and job.phase is RFQPhase.AMBIGUOUS, rows


def test_an_order_that_does_not_read_as_the_leg_books_nothing():
    job, booked, _client = run([{"list": [fill_row(C, 800, 0.5), fill_row(P, 801, 0.5)]}],
                               {800: (C, 0.5), 801: (P, 2.0)})           # the order says 2.0
    assert booked == [0.0, 0.0] and job.phase is RFQPhase.AMBIGUOUS


def test_a_read_that_says_more_pages_follow_is_read_on_and_only_a_finished_read_counts():
    first = {"list": [fill_row(C, 800, 0.5, row_id=11)], "hasNext": True}
    second = {"list": [fill_row(P, 801, 0.5, row_id=10)], "hasNext": False}
    job, booked, client = run([first, second], {800: (C, 0.5), 801: (P, 0.5)})
    assert booked == [0.5, 0.5] and job.status is JobStatus.FILLED
    assert [read["fromId"] for read in client.history_reads if "fromId" in read] == [11]


def test_a_read_that_cannot_reach_its_last_page_books_nothing():
    stuck = {"list": [fill_row(C, 800, 0.5, row_id=11), fill_row(P, 801, 0.5, row_id=12)], "hasNext": True}
    job, booked, _client = run([stuck], {800: (C, 0.5), 801: (P, 0.5)}, seconds=150.0)
    assert booked == [0.0, 0.0] and job.phase is RFQPhase.AMBIGUOUS


def test_a_fill_split_over_rows_counts_as_its_order():
    rows = [fill_row(C, 800, 0.2, row_id=1), fill_row(C, 800, 0.3, row_id=2), fill_row(P, 801, 0.5, row_id=3)]
    job, booked, _client = run([{"list": rows}], {800: (C, 0.5), 801: (P, 0.5)})
    assert booked == [0.5, 0.5] and job.status is JobStatus.FILLED
