"""RFQ money safety: what an RFQ job may conclude, and from what evidence (BEHAVIOUR.md §6.4).

Each test stands for a way an RFQ could lose money without anyone noticing:

* an accept whose fate is unknown called "not accepted" although no lookup ever answered (a
  block trade on the exchange that no trade manages), or although the only answers came
  before the list could show it;
* an OPEN falling back to the order book after such a verdict (the position opened twice);
* HTTP 429 or another non-proof on the accept taken for a refusal (a second quote accepted);
* the block-trade lookup reading one page of a long list and calling our block trade absent;
* a close by RFQ for more than the account holds (a block trade has no reduce-only flag: it
  flips the position);
* a block fill on the side we did not ask for booked as ours (a close "done" that doubled).

The fakes of tests/unit/test_rfq.py are reused; the clients here script the exchange's answers.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from clock import SimulatedClock
from coincall_payloads import parse_positions
from contracts import Side
from errors import (
    AuthError,
    EndpointNotFound,
    ExchangeError,
    OrderOutcomeUnknown,
    RateLimitedError,
    StaleDataError,
    TransportError,
)
from execution_job import ExecutionJob, FillResult, JobStatus, LegTarget, RequestBudget
from order_ledger import BLOCK_ACCEPT_EVENT, Intent, OrderLedger
from rfq import (
    AMBIGUOUS_RESOLVE_SECONDS,
    BLOCKTRADE_MAX_PAGES,
    BLOCKTRADE_PAGE_SIZE,
    RFQExecutor,
    RFQParams,
    RFQPhase,
    adopt_block_trade,
    definitely_refused,
    find_block_trade,
    position_problem,
)
from tests.unit.test_rfq import C95, C96, NOW, P84, P85, FakeClient, FakeMarket, NoExchange, _drive

BUY, SELL = Side.BUY, Side.SELL
TRADE = SimpleNamespace(id="T000000005", seq=5)
REQUEST_ID = "77"                       # what FakeClient.rfq_create answers
LONG_STRANGLE = [LegTarget(0, C95, BUY, 0.5), LegTarget(1, P85, BUY, 0.5)]
CLOSE_LONG_STRANGLE = [LegTarget(0, C95, SELL, 0.5), LegTarget(1, P85, SELL, 0.5)]


# ------------------------------------------------------------------ exchange answers

def position(symbol: str, side: Side, qty: float, position_id: int = 1) -> dict[str, Any]:
    """One entry of the positions answer (API.md 7.2): tradeSide 1 long, 2 short."""
    return {"positionId": position_id, "symbol": symbol, "tradeSide": int(side), "qty": str(qty),
            "avgPrice": "100", "markPrice": "100"}


def block_leg(symbol: str, side: Side, qty: float, price: float, order_id: int) -> dict[str, Any]:
    """A taker-side leg of an accept answer or of a block-trade record (API.md 10.3)."""
    return {"instrumentName": symbol, "side": side.name, "price": str(price), "quantity": str(qty), "fee": "0.1",
            "orderId": str(order_id), "createTime": int(NOW * 1000)}


def block_record(block_id: int, request_id: str, quote_id: str, legs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"blockTradeId": str(block_id), "requestId": request_id, "quoteId": quote_id, "legs": legs}


def foreign_record(block_id: int, at: float | None) -> dict[str, Any]:
    """Someone else's (an earlier RFQ's) block trade; ``at`` None: its legs carry no time."""
    leg = block_leg("BTCUSD-6MAR26-70000-P", BUY, 0.1, 10.0, 500_000 + block_id)
    if at is None:
        del leg["createTime"]
    else:
        leg["createTime"] = int(at * 1000)
    return block_record(block_id, f"r{block_id}", f"q{block_id}", [leg])


def our_block(legs: list[LegTarget], quote_id: str = "2", *, sides: dict[int, Side] | None = None,
              block_id: int = 9_000) -> dict[str, Any]:
    """Our block trade: every leg filled at 98 on our side unless ``sides`` says otherwise."""
    sides = sides or {}
    return block_record(block_id, REQUEST_ID, quote_id,
                        [block_leg(leg.symbol, sides.get(leg.leg_index, leg.side), leg.qty, 98.0, 700 + leg.leg_index)
                         for leg in legs])


class BlockList:
    """The private block-trade list, newest first, cursor-paged like the exchange (API.md 8.6):
    ``fromId`` with direction NEXT gives the records with a smaller id."""

    def __init__(self, records: list[dict[str, Any]], *, fail_pages: set[int] = frozenset(),
                 ignore_cursor: bool = False, page_cap: int | None = None, has_next: bool | None = None,
                 bare: bool = False) -> None:
        self.records = sorted(records, key=lambda r: int(r["blockTradeId"]), reverse=True)
        self.fail_pages = set(fail_pages)
        self.ignore_cursor = ignore_cursor
        self.page_cap = page_cap      # the exchange's own page limit, below what is asked
        self.has_next = has_next      # a fixed (wrong) hasNext on every page
        self.bare = bare              # a bare list, no hasNext at all
        self.reads: list[dict[str, Any]] = []

    def __call__(self, **filters: Any) -> Any:
        self.reads.append(filters)
        if len(self.reads) in self.fail_pages:
            raise TransportError("GET blocktrade orders", "server error", 503)
        size = int(filters["pageSize"])
        if self.page_cap is not None:
            size = min(size, self.page_cap)
        rows = self.records
        if "fromId" in filters and not self.ignore_cursor:
            assert filters["direction"] == "NEXT"
            rows = [r for r in rows if int(r["blockTradeId"]) < int(filters["fromId"])]
        if self.bare:
            return rows[:size]
        return {"list": rows[:size], "hasNext": len(rows) > size if self.has_next is None else self.has_next}


# ------------------------------------------------------------------ a scripted client and job

class ScriptedClient(FakeClient):
    """FakeClient whose quotes fit any legs, and whose accept, block-trade list, fill history
    and positions answer what the test scripts (a callable of the clock, or an exception)."""

    def __init__(self, clock: SimulatedClock, legs: list[LegTarget], *, accept: Any = None,
                 blocktrades: Callable[..., Any] | None = None, history: Exception | None = None,
                 positions: Any = None, create: Exception | None = None, quotes_from: float = NOW) -> None:
        super().__init__(clock, legs, accept if isinstance(accept, BaseException) else None)
        self.quotes_from = quotes_from
        self.accept_answer = accept
        self.blocktrade_script = blocktrades or (lambda **filters: {"list": []})
        self.history_error = history
        self.positions_script = positions
        self.create_error = create
        self.orders: list[tuple] = []

    def rfq_create(self, legs):
        if self.create_error is not None:
            self.calls.append(("create", legs))
            raise self.create_error
        return super().rfq_create(legs)

    def rfq_quotes(self, request_id):
        """Two quotes in which the maker takes the other side of every leg; quote "2" is the better."""
        self.calls.append(("quotes", request_id))
        if self.clock.now() < self.quotes_from:
            return []
        expiry = int((self.clock.now() + 300) * 1000)
        return [{"quoteId": str(n), "state": "OPEN", "expiryTime": expiry,
                 "legs": [{"instrumentName": leg.symbol, "side": "SELL" if leg.side == BUY else "BUY",
                           "price": str(100 - n if leg.side == BUY else 100 + n), "quantity": str(leg.qty)}
                          for leg in self.legs]} for n in (1, 2)]

    def rfq_accept(self, request_id, quote_id):
        self.calls.append(("accept", quote_id))
        answer = self.accept_answer
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(quote_id)
        return answer

    def blocktrade_orders(self, **filters):
        self.calls.append(("blocktrades", filters))
        return self.blocktrade_script(now=self.clock.now(), **filters)

    def trade_history(self, **filters):
        self.calls.append(("trade_history", filters))
        if self.history_error is not None:
            raise self.history_error
        return {"list": []}

    def positions(self):
        self.calls.append(("positions",))
        script = self.positions_script
        if isinstance(script, BaseException):
            raise script
        return script(self.clock.now()) if callable(script) else script

    def create_order(self, *args, **kwargs):
        self.orders.append((args, kwargs))
        raise AssertionError("an RFQ job never places an order itself")


class HeldJob(ExecutionJob):
    """A fallback job that stays WORKING: these tests only ask whether the fallback started."""

    def _step(self, now: float, budget: RequestBudget) -> None:
        return None

    def result(self) -> FillResult:
        return FillResult(self._status, [])


class RecordingEngine:
    """An ``ExecutionEngine`` that records what it was asked to work."""

    def __init__(self, ledger: OrderLedger, market: FakeMarket) -> None:
        self.ledger = ledger
        self.market = market
        self.started: list[tuple[list[LegTarget], Intent]] = []

    def start(self, trade, legs, intent, params, *, best_effort=False):
        self.started.append((list(legs), Intent(intent)))
        return HeldJob(ledger=self.ledger, market=self.market, trade=trade, intent=intent, best_effort=best_effort,
                       started_at=NOW, max_requests=4)


def rfq_env(legs: list[LegTarget], intent: Intent, params: RFQParams = RFQParams(timeout_seconds=300.0), *,
            max_requests_per_step: int = 6, **script: Any):
    clock = SimulatedClock(start=NOW, speed=0)
    client = ScriptedClient(clock, legs, **script)
    ledger = OrderLedger(client, clock)
    market = FakeMarket()
    limit = RecordingEngine(ledger, market)
    executor = RFQExecutor(client, ledger, market, clock, limit=limit, max_requests_per_step=max_requests_per_step)
    job = executor.start(TRADE, legs, intent, params)
    return SimpleNamespace(clock=clock, client=client, ledger=ledger, limit=limit, job=job)


def kinds(client: ScriptedClient) -> list[str]:
    return [call[0] for call in client.calls]


def failing_list(**filters: Any) -> Any:
    raise TransportError("GET blocktrade orders", "server error", 503)


# ------------------------------------------------------------------ 1. failed lookups are no evidence

def test_failed_lookups_never_turn_an_unknown_accept_into_not_accepted(caplog):
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, accept=OrderOutcomeUnknown("POST accept", "read timeout"),
                  blocktrades=failing_list, history=TransportError("GET trade history", "read timeout"))
    with caplog.at_level(logging.WARNING, logger="rfq"):
        _drive(env.job, env.clock, 400.0)
    assert not env.job.done and env.job.status is JobStatus.WORKING and env.job.phase is RFQPhase.AMBIGUOUS
    assert kinds(env.client).count("accept") == 1 and "cancel" not in kinds(env.client)
    # It keeps looking, at the poll interval, long after the window.
    lookups = [c for c in env.client.calls if c[0] == "blocktrades"]
    assert len(lookups) >= (400.0 - AMBIGUOUS_RESOLVE_SECONDS) / RFQParams().poll_interval_seconds / 2
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1                                        # said once, not every poll
    message = critical[0].getMessage()
    assert TRADE.id in message and REQUEST_ID in message and "quote 2" in message and "block trades" in message


def test_an_empty_list_read_inside_the_window_is_not_evidence():
    """The list may lag the trade: an answer before ``AMBIGUOUS_RESOLVE_SECONDS`` proves nothing,
    and once it fails after that, nothing has been proven."""
    answered: list[float] = []

    def lagging_then_down(now: float, **filters: Any) -> Any:
        if now < NOW + 30.0:
            answered.append(now)
            return {"list": []}
        raise TransportError("GET blocktrade orders", "read timeout")

    env = rfq_env(LONG_STRANGLE, Intent.OPEN, accept=TransportError("POST accept", "read timeout"),
                  blocktrades=lagging_then_down, history=TransportError("GET trade history", "read timeout"))
    _drive(env.job, env.clock, 200.0)
    assert len(answered) >= 2                                        # it did answer, empty, inside the window
    assert env.job.phase is RFQPhase.AMBIGUOUS and not env.job.done


def test_a_block_trade_found_after_an_outage_is_booked_and_the_job_fills():
    def down_then_there(now: float, **filters: Any) -> Any:
        if now < NOW + 150.0:
            raise TransportError("GET blocktrade orders", "server error", 503)
        return {"list": [our_block(LONG_STRANGLE)]}

    env = rfq_env(LONG_STRANGLE, Intent.OPEN, accept=OrderOutcomeUnknown("POST accept", "read timeout"),
                  blocktrades=down_then_there, history=TransportError("GET trade history", "read timeout"))
    _drive(env.job, env.clock, 300.0)
    assert env.job.status is JobStatus.FILLED and env.job.accepted_quote_id == "2"
    for leg in LONG_STRANGLE:
        assert env.ledger.leg_fill(TRADE.id, leg.leg_index, Intent.OPEN) == (0.5, 98.0, 0.1)


def test_an_answered_list_after_an_outage_settles_not_accepted():
    """The verdict needs one list read that answered after the window; when it comes, the job
    ends (an open: FAILED, no fallback)."""
    def down_then_empty(now: float, **filters: Any) -> Any:
        if now < NOW + 150.0:
            raise TransportError("GET blocktrade orders", "server error", 503)
        return {"list": []}

    env = rfq_env(LONG_STRANGLE, Intent.OPEN, accept=OrderOutcomeUnknown("POST accept", "read timeout"),
                  blocktrades=down_then_empty, history=TransportError("GET trade history", "read timeout"))
    _drive(env.job, env.clock, 300.0)
    assert env.job.status is JobStatus.FAILED and "not accepted" in env.job.result().reason
    assert env.clock.now() >= NOW + 150.0                            # not before the list answered


# ------------------------------------------------------------------ 2. no second open after "not accepted"

def test_an_open_never_falls_back_after_not_accepted_even_with_a_fallback_configured():
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0, open_fallback="limit"),
                  accept=OrderOutcomeUnknown("POST accept", "read timeout"))
    _drive(env.job, env.clock, 200.0)
    assert env.job.status is JobStatus.FAILED and env.job.fallback_mode is None
    assert env.limit.started == [] and env.client.orders == []
    assert "no fallback for an open" in env.job.result().reason
    assert kinds(env.client)[-1] == "cancel"                         # the RFQ itself is still cancelled


def test_a_close_may_fall_back_after_not_accepted():
    held = [position(C95, BUY, 0.5, 1), position(P85, BUY, 0.5, 2)]
    env = rfq_env(CLOSE_LONG_STRANGLE, Intent.CLOSE, RFQParams(timeout_seconds=300.0, close_fallback="limit"),
                  accept=OrderOutcomeUnknown("POST accept", "read timeout"), positions=held)
    _drive(env.job, env.clock, 200.0)
    assert env.job.fallback_mode == "limit" and env.job.phase is RFQPhase.FALLBACK
    assert env.limit.started == [(CLOSE_LONG_STRANGLE, Intent.CLOSE)]


# ------------------------------------------------------------------ 3. only a proven refusal is a refusal

@pytest.mark.parametrize("error", [
    RateLimitedError(429, "HTTP 429 Too Many Requests", "POST accept"),
    RateLimitedError(10605, "Too many requests", "POST accept"),
    ExchangeError(10537, "unknown result", "POST accept"),
    ExchangeError(500, "system busy", "POST accept"),
    TransportError("POST accept", "read timeout"),
    OrderOutcomeUnknown("POST accept", "connection reset"),
    EndpointNotFound("POST accept"),
    ValueError("an answer we cannot read"),
    RuntimeError("a bug below the client"),
], ids=["http429", "throttle10605", "unknown10537", "transient500", "transport", "outcome_unknown", "http404",
        "value_error", "unexpected"])
def test_an_accept_without_a_proven_refusal_is_ambiguous_and_no_other_quote_is_taken(error):
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=10.0), accept=error,
                  blocktrades=failing_list, history=TransportError("GET trade history", "read timeout"))
    _drive(env.job, env.clock, 60.0)
    assert [c[1] for c in env.client.calls if c[0] == "accept"] == ["2"]
    assert env.job.phase is RFQPhase.AMBIGUOUS


def test_a_proven_refusal_lets_the_next_candidate_be_tried():
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=10.0),
                  accept=ExchangeError(50014, "Block trade quote not valid", "POST accept"))
    _drive(env.job, env.clock, 30.0)
    assert [c[1] for c in env.client.calls if c[0] == "accept"] == ["2", "1"]


@pytest.mark.parametrize("error, refused", [
    (ExchangeError(50014, "quote not valid", "x"), True),
    (ExchangeError(10001, "minimum notional", "x"), True),
    (AuthError(10557, "timestamp expired", "x"), True),
    (RateLimitedError(429, "HTTP 429", "x"), False),
    (RateLimitedError(10000, "busy", "x"), False),
    (ExchangeError(10583, "outcome unknown", "x"), False),
    (TransportError("x", "timeout"), False),
    (OrderOutcomeUnknown("x", "timeout"), False),
    (EndpointNotFound("x"), False),
    (ValueError("x"), False),
])
def test_only_a_coded_answer_that_proves_nothing_happened_is_a_refusal(error, refused):
    assert definitely_refused(error) is refused


def test_an_rfq_create_throttled_is_not_called_rejected_and_nothing_is_ever_accepted():
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, create=RateLimitedError(429, "HTTP 429 Too Many Requests", "POST"))
    _drive(env.job, env.clock, 30.0)
    assert env.job.status is JobStatus.FAILED and "outcome unknown" in env.job.result().reason
    assert kinds(env.client) == ["create"]                           # no quote poll, no accept, once only


# ------------------------------------------------------------------ 4. every page of the block-trade list

def client_of(block_list: BlockList) -> SimpleNamespace:
    return SimpleNamespace(blocktrade_orders=block_list)


def test_the_lookup_pages_back_until_it_finds_our_block_trade():
    newer = [foreign_record(10_000 + n, None) for n in range(120)]   # 120 later block trades, no times
    block_list = BlockList(newer + [our_block(LONG_STRANGLE, block_id=9_000)])
    found = find_block_trade(client_of(block_list), REQUEST_ID, "2", since=NOW - 30.0)
    assert found is not None and found.request_id == REQUEST_ID
    assert len(block_list.reads) == 3
    assert block_list.reads[1]["fromId"] == 10_070 and block_list.reads[2]["fromId"] == 10_020
    assert all(r["pageSize"] == BLOCKTRADE_PAGE_SIZE for r in block_list.reads)


def test_the_lookup_stops_at_records_older_than_our_rfq():
    records = [foreign_record(10_000 + n, NOW - 3600.0 + n) for n in range(200)]   # all an hour old
    block_list = BlockList(records)
    assert find_block_trade(client_of(block_list), REQUEST_ID, "2", since=NOW - 30.0) is None
    assert len(block_list.reads) == 1


def test_a_page_cut_short_by_the_exchange_is_not_the_end_while_it_says_there_is_more():
    """The exchange answers 20 records to a pageSize of 50 and says hasNext: reading on finds the
    accept at the 31st record (a short page alone once ended the search: 'not accepted')."""
    newer = [foreign_record(10_000 + n, None) for n in range(30)]
    block_list = BlockList(newer + [our_block(LONG_STRANGLE, block_id=9_000)], page_cap=20)
    found = find_block_trade(client_of(block_list), REQUEST_ID, "2", since=NOW - 30.0)
    assert found is not None and found.request_id == REQUEST_ID
    assert len(block_list.reads) == 2


def test_a_full_page_that_says_no_more_is_read_on():
    """A wrong hasNext false on full pages never ends the search early: a short page does."""
    newer = [foreign_record(10_000 + n, None) for n in range(BLOCKTRADE_PAGE_SIZE + 10)]
    block_list = BlockList(newer + [our_block(LONG_STRANGLE, block_id=9_000)], has_next=False)
    assert find_block_trade(client_of(block_list), REQUEST_ID, "2", since=NOW - 30.0) is not None


@pytest.mark.parametrize("bare", [True, False])
def test_a_short_page_that_does_not_say_there_is_more_ends_the_list(bare):
    block_list = BlockList([foreign_record(10_000 + n, None) for n in range(12)], bare=bare)
    assert find_block_trade(client_of(block_list), REQUEST_ID, "2", since=NOW - 30.0) is None
    assert len(block_list.reads) == 1


def test_an_unreadable_page_is_a_failed_read_not_an_absence():
    block_list = BlockList([foreign_record(10_000 + n, None) for n in range(120)], fail_pages={2})
    with pytest.raises(TransportError):
        find_block_trade(client_of(block_list), REQUEST_ID, "2", since=NOW - 30.0)


def test_a_list_longer_than_the_page_bound_or_a_stalled_cursor_is_a_failed_read():
    endless = [foreign_record(10_000 + n, None) for n in range(BLOCKTRADE_PAGE_SIZE * (BLOCKTRADE_MAX_PAGES + 1))]
    with pytest.raises(TransportError, match="pages"):
        find_block_trade(client_of(BlockList(endless)), REQUEST_ID, "2", since=NOW - 30.0)
    stalled = BlockList(endless[:BLOCKTRADE_PAGE_SIZE * 2], ignore_cursor=True)
    with pytest.raises(TransportError, match="no way on"):
        find_block_trade(client_of(stalled), REQUEST_ID, "2", since=NOW - 30.0)


def test_the_job_reads_a_long_list_over_several_steps_and_concludes_only_at_its_end():
    """A step's budget is short: the read goes on from where it was, and its absence counts once
    it reached the end; a failure of one page on the way proves nothing."""
    # 220 records without times: 5 pages, more than one step's budget of 4 requests can read.
    block_list = BlockList([foreign_record(10_000 + n, None) for n in range(220)])

    def listing(now: float, **filters: Any) -> Any:
        return block_list(**filters)

    env = rfq_env(LONG_STRANGLE, Intent.OPEN, accept=OrderOutcomeUnknown("POST accept", "read timeout"),
                  blocktrades=listing, max_requests_per_step=4)
    _drive(env.job, env.clock, 300.0)
    assert env.job.status is JobStatus.FAILED and "not accepted" in env.job.result().reason
    assert [read.get("fromId") for read in block_list.reads[:5]] == [None, 10_170, 10_120, 10_070, 10_020]


def test_the_job_finds_a_block_trade_below_the_first_page():
    block_list = BlockList([foreign_record(10_000 + n, None) for n in range(120)]
                           + [our_block(LONG_STRANGLE, block_id=9_000)])

    def listing(now: float, **filters: Any) -> Any:
        return block_list(**filters)

    env = rfq_env(LONG_STRANGLE, Intent.OPEN, accept=OrderOutcomeUnknown("POST accept", "read timeout"),
                  blocktrades=listing)
    _drive(env.job, env.clock, 120.0)
    assert env.job.status is JobStatus.FILLED


def test_a_later_quote_traded_long_before_our_accept_does_not_end_the_lookup():
    """The list is ordered by id, and a block trade's id is its quote's: a quote made after ours
    but traded 40 s before our accept sorts above ours. Only records older than our RFQ's
    creation end the read, so ours, on the next page, is still found."""
    def with_our_trade_on_page_two(now: float, **filters: Any) -> Any:
        records = [foreign_record(10_000 + n, NOW + 10.0) for n in range(BLOCKTRADE_PAGE_SIZE)]
        ours = our_block(LONG_STRANGLE, block_id=9_000)
        for leg in ours["legs"]:
            leg["createTime"] = int((NOW + 52.0) * 1000)
        return BlockList(records + [ours])(**filters)

    env = rfq_env(LONG_STRANGLE, Intent.OPEN, accept=OrderOutcomeUnknown("POST accept", "read timeout"),
                  blocktrades=with_our_trade_on_page_two, quotes_from=NOW + 50.0)
    _drive(env.job, env.clock, 200.0)
    assert env.job.status is JobStatus.FILLED and env.job.accepted_quote_id == "2"


# ------------------------------------------------------------------ 5. a close by RFQ never exceeds the position

@pytest.mark.parametrize("held, why", [
    ([position(C95, BUY, 0.5), position(P85, BUY, 0.5)], None),
    ([position(C95, BUY, 0.8), position(P85, BUY, 0.5)], None),
    ([position(C95, BUY, 0.4), position(P85, BUY, 0.5)], "leg 0"),            # less than we close
    ([position(C95, SELL, 0.5), position(P85, BUY, 0.5)], "leg 0"),           # the other sign
    ([position(C95, BUY, 0.5)], "leg 1"),                                     # gone
    ([], "leg 0"),                                                            # nothing at all
    ([position(C95, BUY, 0.3, 1), position(C95, BUY, 0.2, 2), position(P85, BUY, 0.5, 3)], None),  # summed
])
def test_position_problem_needs_the_held_sign_and_at_least_the_close_quantity(held, why):
    problem = position_problem(CLOSE_LONG_STRANGLE, parse_positions(held, timestamp=NOW))
    assert (problem is None) if why is None else (problem is not None and why in problem)
    short_close = [LegTarget(0, C95, BUY, 0.5)]                               # closing a short call
    assert position_problem(short_close, parse_positions([position(C95, SELL, 0.5)], timestamp=NOW)) is None
    assert position_problem(short_close, parse_positions([position(C95, BUY, 0.5)], timestamp=NOW)) is not None


def test_a_close_by_rfq_reads_the_positions_before_the_create_and_before_the_accept():
    held = [position(C95, BUY, 0.5, 1), position(P85, BUY, 0.5, 2)]
    answer = {"legs": [block_leg(leg.symbol, leg.side, leg.qty, 102.0, 700 + leg.leg_index)
                       for leg in CLOSE_LONG_STRANGLE]}
    env = rfq_env(CLOSE_LONG_STRANGLE, Intent.CLOSE, accept=answer, positions=held)
    _drive(env.job, env.clock, 60.0)
    assert env.job.status is JobStatus.FILLED
    sequence = [k for k in kinds(env.client) if k in ("positions", "create", "accept")]
    assert sequence == ["positions", "create", "positions", "accept"]


def test_an_iron_condor_closes_by_rfq_although_its_accept_needs_more_than_one_steps_requests():
    """Poll + 4 books + positions + accept is 7 requests, one step may send 6: the ranked quotes
    are accepted on the next step, the positions read right before the accept."""
    closing = [LegTarget(0, C95, BUY, 1.0), LegTarget(1, P85, BUY, 1.0), LegTarget(2, C96, SELL, 1.0),
               LegTarget(3, P84, SELL, 1.0)]                            # a short iron condor, bought back
    held = [position(C95, SELL, 1.0, 1), position(P85, SELL, 1.0, 2), position(C96, BUY, 1.0, 3),
            position(P84, BUY, 1.0, 4)]
    answer = {"legs": [block_leg(leg.symbol, leg.side, leg.qty, 98.0 if leg.side == BUY else 102.0, 700 + i)
                       for i, leg in enumerate(closing)]}
    env = rfq_env(closing, Intent.CLOSE, accept=answer, positions=held)
    _drive(env.job, env.clock, 60.0)
    assert env.job.status is JobStatus.FILLED and env.job.fallback_mode is None
    sequence = [k for k in kinds(env.client) if k in ("positions", "create", "quotes", "accept")]
    assert sequence == ["positions", "create", "quotes", "positions", "accept"]


@pytest.mark.parametrize("held", [
    [position(C95, BUY, 0.3, 1), position(P85, BUY, 0.5, 2)],        # an external close not yet booked
    [position(C95, SELL, 0.5, 1), position(P85, BUY, 0.5, 2)],
    [],
    TransportError("GET positions", "server error", 503),
    {"not": "a list"},
], ids=["short", "flipped", "empty", "failed", "unreadable"])
def test_a_close_the_positions_do_not_cover_goes_to_the_reduce_only_fallback_without_an_rfq(held):
    # No close fallback configured: the guard still hands the legs to the limit engine.
    env = rfq_env(CLOSE_LONG_STRANGLE, Intent.CLOSE, RFQParams(close_fallback=None), positions=held)
    _drive(env.job, env.clock, 20.0)
    assert "create" not in kinds(env.client) and "accept" not in kinds(env.client)
    assert env.job.fallback_mode == "limit" and env.limit.started == [(CLOSE_LONG_STRANGLE, Intent.CLOSE)]
    assert "no RFQ for a reducing trade" in env.job.fallback_reason


@pytest.mark.parametrize("intent", [Intent.UNWIND, Intent.KILL])
def test_unwinds_and_kills_by_rfq_are_guarded_too(intent):
    env = rfq_env(CLOSE_LONG_STRANGLE, intent, positions=[])
    _drive(env.job, env.clock, 20.0)
    assert "create" not in kinds(env.client) and env.limit.started == [(CLOSE_LONG_STRANGLE, intent)]


def test_a_position_that_changes_before_the_accept_stops_the_accept():
    def shrinking(now: float) -> list[dict[str, Any]]:
        qty = 0.5 if now < NOW + 2.0 else 0.2                        # closed elsewhere while quotes came in
        return [position(C95, BUY, qty, 1), position(P85, BUY, 0.5, 2)]

    env = rfq_env(CLOSE_LONG_STRANGLE, Intent.CLOSE, RFQParams(close_fallback=None), positions=shrinking,
                  accept=AssertionError("never accepted"))
    _drive(env.job, env.clock, 30.0)
    assert "create" in kinds(env.client) and "accept" not in kinds(env.client)
    assert "cancel" in kinds(env.client)                             # the RFQ is withdrawn
    assert env.job.fallback_mode == "limit" and "before accepting quote 2" in env.job.fallback_reason


def test_an_open_never_reads_the_positions():
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, accept={"legs": [block_leg(leg.symbol, leg.side, leg.qty, 98.0, 700 + i)
                                                               for i, leg in enumerate(LONG_STRANGLE)]})
    _drive(env.job, env.clock, 30.0)
    assert env.job.status is JobStatus.FILLED and "positions" not in kinds(env.client)


# ------------------------------------------------------------------ 6. a wrong-side block fill is not ours

def test_a_block_leg_on_the_wrong_side_is_not_booked_and_the_job_does_not_fill(caplog):
    held = [position(C95, BUY, 0.5, 1), position(P85, BUY, 0.5, 2)]
    legs = [block_leg(C95, SELL, 0.5, 102.0, 700), block_leg(P85, BUY, 0.5, 102.0, 701)]   # leg 1 bought!
    env = rfq_env(CLOSE_LONG_STRANGLE, Intent.CLOSE, accept={"legs": legs}, positions=held)
    with caplog.at_level(logging.CRITICAL, logger="rfq"):
        _drive(env.job, env.clock, 60.0)
    assert env.job.status is JobStatus.PARTIAL and "wrong side" in env.job.result().reason
    assert env.ledger.leg_fill(TRADE.id, 0, Intent.CLOSE)[0] == 0.5
    assert env.ledger.leg_fill(TRADE.id, 1, Intent.CLOSE)[0] == 0.0     # not booked as our sell
    assert env.job.fallback_mode is None                                 # a block trade happened: no fallback
    assert any("NOT booked" in r.getMessage() and P85 in r.getMessage() for r in caplog.records
               if r.levelno == logging.CRITICAL)
    # A position our books do not hold is there now: no order goes to that symbol until resumed.
    assert list(env.ledger.blocked_symbols()) == [P85]
    assert "the side we did not ask for" in env.ledger.blocked_symbols()[P85]


def test_every_leg_on_the_wrong_side_fails_the_job_without_a_fallback():
    legs = [block_leg(leg.symbol, SELL, leg.qty, 98.0, 700 + leg.leg_index) for leg in LONG_STRANGLE]
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0, open_fallback="limit"),
                  accept={"legs": legs})
    _drive(env.job, env.clock, 60.0)
    assert env.job.status is JobStatus.FAILED and "wrong side" in env.job.result().reason
    assert env.limit.started == [] and env.ledger.orders(TRADE.id) == []


def test_recovery_does_not_adopt_a_wrong_side_block_leg(caplog):
    clock = SimulatedClock(start=NOW, speed=0)
    ledger = OrderLedger(NoExchange(), clock)
    marker = {"trade_id": TRADE.id, "trade_seq": TRADE.seq, "intent": int(Intent.OPEN), "request_id": REQUEST_ID,
              "quote_id": "2", "legs": [[leg.leg_index, leg.symbol, int(leg.side)] for leg in LONG_STRANGLE]}
    record = our_block(LONG_STRANGLE, sides={1: SELL})
    with caplog.at_level(logging.CRITICAL, logger="rfq"):
        found, recorded = adopt_block_trade(client_of(BlockList([record])), ledger, marker, NOW)
    assert (found, recorded) == (True, 1)
    assert ledger.leg_fill(TRADE.id, 0, Intent.OPEN)[0] == 0.5 and ledger.leg_fill(TRADE.id, 1, Intent.OPEN)[0] == 0
    assert any("NOT booked" in r.getMessage() for r in caplog.records)
    assert list(ledger.blocked_symbols()) == [LONG_STRANGLE[1].symbol]


def test_a_restart_that_finds_a_block_leg_without_an_order_id_again_does_not_count_it_twice(caplog):
    """A leg is deduplicated by its orderId; one sent without it is recorded once, not at every
    restart that looks the same accept up (a doubled fill makes the trade close what it lacks)."""
    clock = SimulatedClock(start=NOW, speed=0)
    ledger = OrderLedger(NoExchange(), clock)
    marker = {"trade_id": TRADE.id, "trade_seq": TRADE.seq, "intent": int(Intent.OPEN), "request_id": REQUEST_ID,
              "quote_id": "2", "legs": [[leg.leg_index, leg.symbol, int(leg.side)] for leg in LONG_STRANGLE]}
    record = our_block(LONG_STRANGLE)
    del record["legs"][0]["orderId"]
    for _restart in range(3):
        adopt_block_trade(client_of(BlockList([record])), ledger, marker, NOW)
    assert ledger.leg_fill(TRADE.id, 0, Intent.OPEN)[0] == 0.5 and ledger.leg_fill(TRADE.id, 1, Intent.OPEN)[0] == 0.5


# ------------------------------------------------------------------ the accept marker's horizon

def test_the_accept_marker_carries_the_rfq_creation_time_that_bounds_a_restart_lookup():
    """Recovery reads the block-trade list back to the RFQ's creation (less the list's slack) and
    no further: the marker committed before the accept must say when the RFQ was created."""
    from persistence import StateStore

    env = rfq_env(LONG_STRANGLE, Intent.OPEN, accept=OrderOutcomeUnknown("POST accept", "read timeout"),
                  blocktrades=failing_list, history=TransportError("GET trade history", "read timeout"))
    store = StateStore(":memory:", clock=env.clock)
    env.ledger = OrderLedger(env.client, env.clock, store=store)
    executor = RFQExecutor(env.client, env.ledger, FakeMarket(), env.clock, limit=RecordingEngine(env.ledger,
                                                                                                  FakeMarket()))
    created_at = env.clock.now()
    job = executor.start(TRADE, LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0))
    _drive(job, env.clock, 30.0)
    [event] = store.events(BLOCK_ACCEPT_EVENT)
    assert event["payload"]["rfq_created_at"] == created_at
    assert event["payload"]["request_id"] == REQUEST_ID


# ------------------------------------------------------------------ the screen a quote is judged on

class ScreenThatGoesDark(FakeMarket):
    """The books read once, at the create (bid 100 / ask 120); every later read fails."""

    def __init__(self) -> None:
        self.book_reads = 0

    def order_book(self, symbol, *, max_age=3.0):
        self.book_reads += 1
        if self.book_reads <= 2:                          # the two legs' baseline at the create
            return super().order_book(symbol, max_age=max_age)
        raise StaleDataError(f"order book of {symbol}: rate limited")


def test_a_quote_is_never_judged_against_a_screen_that_could_not_be_read_again():
    """The gate compares a quote with the screen of the moment. A book read at the create and
    not since is no screen: the market may have fallen, and a maker's price above today's
    touch would look like an improvement on the old one. No accept until the books read again."""
    clock = SimulatedClock(start=NOW, speed=0)
    client = FakeClient(clock, LONG_STRANGLE)
    market = ScreenThatGoesDark()
    ledger = OrderLedger(client, clock)
    executor = RFQExecutor(client, ledger, market, clock, limit=RecordingEngine(ledger, market))
    job = executor.start(TRADE, LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=60.0, min_improvement_pct=1.0))
    _drive(job, clock, 70.0)
    assert market.book_reads > 2                             # it tried to read the screen again
    assert "accept" not in kinds(client) and job.baseline is None
