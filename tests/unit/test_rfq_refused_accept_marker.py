"""An accept the exchange refused with a code that proves nothing traded closes its marker.

Why: the accept marker (``note_block_accept``) is what a restart looks up (RECOVERY.md R1-R3),
and an accept with part of its block trade booked is now held in doubt until every leg is
booked (a block trade is all-or-nothing). After a proven refusal the RFQ job tries the next
quote or hands the legs to its fallback engine; without a record of the refusal, fills of
that fallback on the same legs would pass, after a crash, for part of the refused accept's
block trade, and a partly filled fallback would hold the trade in doubt for good.
"""
from __future__ import annotations

from clock import SimulatedClock
from errors import ExchangeError
from order_ledger import (
    BLOCK_ACCEPT_EVENT,
    BLOCK_ACCEPT_REFUSED_EVENT,
    Intent,
    OrderLedger,
    open_block_accepts,
)
from persistence import StateStore
from rfq import RFQExecutor, RFQParams
from tests.unit.test_rfq import FakeMarket, _drive
from tests.unit.test_rfq_safety import LONG_STRANGLE, NOW, TRADE, RecordingEngine, ScriptedClient
from trade_fills import AcceptsInDoubt


def refused_everywhere() -> tuple[SimulatedClock, StateStore, OrderLedger]:
    clock = SimulatedClock(start=NOW, speed=0)
    client = ScriptedClient(clock, LONG_STRANGLE,
                            accept=ExchangeError(50014, "Block trade quote not valid", "POST accept"))
    store = StateStore(":memory:", clock=clock)
    ledger = OrderLedger(client, clock, store=store)
    market = FakeMarket()
    executor = RFQExecutor(client, ledger, market, clock, limit=RecordingEngine(ledger, market))
    job = executor.start(TRADE, LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=10.0))
    _drive(job, clock, 30.0)
    return clock, store, ledger


def open_markers(store: StateStore) -> list[dict]:
    return open_block_accepts(store.events(BLOCK_ACCEPT_EVENT), store.events(BLOCK_ACCEPT_REFUSED_EVENT))


def test_every_refused_accept_is_recorded_and_leaves_no_marker_to_look_up():
    _clock, store, _ledger = refused_everywhere()

    sent = store.events(BLOCK_ACCEPT_EVENT)
    refused = store.events(BLOCK_ACCEPT_REFUSED_EVENT)
    assert len(sent) == 2 and len(refused) == 2                     # both quotes tried, both refused
    assert {e["payload"]["quote_id"] for e in refused} == {e["payload"]["quote_id"] for e in sent}
    assert "50014" in refused[0]["payload"]["why"]
    assert open_markers(store) == []


def test_fallback_fills_after_a_refused_accept_never_hold_the_trade_in_doubt():
    clock, store, ledger = refused_everywhere()
    # The fallback (or anything else) then filled leg 0 of the open only, and the daemon died.
    leg = LONG_STRANGLE[0]
    ledger.record_block_fill(trade_id=TRADE.id, trade_seq=TRADE.seq, leg_index=leg.leg_index, intent=Intent.OPEN,
                             symbol=leg.symbol, side=leg.side, qty=leg.qty, price=98.0, fee=0.1, order_id=9001,
                             filled_at=clock.now())

    accepts = AcceptsInDoubt(ledger)
    accepts.load(open_markers(store), {TRADE.id})

    assert accepts.unresolved(TRADE.id) == []


def test_an_accept_without_a_refusal_is_still_looked_up():
    clock = SimulatedClock(start=NOW, speed=0)
    store = StateStore(":memory:", clock=clock)
    ledger = OrderLedger(ScriptedClient(clock, LONG_STRANGLE), clock, store=store)
    for quote in ("1", "2"):
        ledger.note_block_accept(trade_id=TRADE.id, trade_seq=TRADE.seq, intent=Intent.OPEN, request_id="77",
                                 quote_id=quote, legs=[(leg.leg_index, leg.symbol, int(leg.side))
                                                       for leg in LONG_STRANGLE])
    ledger.note_block_accept_refused(trade_id=TRADE.id, request_id="77", quote_id="1", why="50014 not valid")

    assert [e["payload"]["quote_id"] for e in open_markers(store)] == ["2"]
