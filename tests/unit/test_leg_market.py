"""``LegMarket``: the market a leg's decisions were made on, captured by the lifecycle and kept in its records.

The entry snapshot is the chain row the leg was chosen on; the exit snapshot is the leg's last
quote when the exit was decided (or when an unwind began). Records written before snapshots
existed load with None; a snapshot is valid JSON (a NaN IV is stored as None).
"""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from coincall_payloads import OptionRow
from contracts import Side
from execution_job import JobStatus
from leg_market import LegMarket
from order_ledger import Intent
from tests.unit.test_trade_lifecycle import (  # noqa: F401 - world is a fixture
    CALL,
    FRIDAY_EXPIRY_MS,
    PUT,
    RECORD_BEFORE_CONTRACTS,
    contract,
    make_row,
    world,
)
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState


def row(symbol: str = CALL, **changes) -> OptionRow:
    values = dict(symbol=symbol, option_type=symbol[-1], strike=float(symbol.split("-")[2]), expiry_ms=FRIDAY_EXPIRY_MS,
                  bid=100.0, ask=110.0, bid_size=1.0, ask_size=1.0, mark=105.0, mark_iv=0.52, bid_iv=0.5, ask_iv=0.54,
                  delta=0.31, gamma=0.00012, vega=21.5, theta=-48.0, rho=1.0, underlying_price=85_000.0,
                  as_of=1_772_431_200.0)
    values.update(changes)
    return OptionRow(**values)


def test_a_snapshot_keeps_the_rows_prices_iv_index_greeks_and_time():
    market = LegMarket.of(row())
    assert market == LegMarket(bid=100.0, ask=110.0, mark=105.0, mark_iv=0.52, underlying_price=85_000.0,
                               delta=0.31, gamma=0.00012, theta=-48.0, vega=21.5, as_of=1_772_431_200.0)
    assert market.mid == 105.0 and market.half_spread == 5.0 and market.two_sided


@pytest.mark.parametrize("bid, ask", [(0.0, 110.0), (100.0, 0.0), (0.0, 0.0), (112.0, 110.0)])
def test_a_one_sided_empty_or_crossed_book_has_no_mid(bid, ask):
    market = LegMarket.of(row(bid=bid, ask=ask))
    assert market.mid is None and market.half_spread is None and not market.two_sided


def test_unknown_greeks_and_a_nan_iv_stay_unknown_and_the_record_is_strict_json():
    market = LegMarket.of(row(delta=None, gamma=None, mark_iv=math.nan, theta=math.inf))
    assert market.delta is None and market.gamma is None and market.mark_iv is None and market.theta is None
    text = json.dumps(market.to_record(), allow_nan=False)
    assert LegMarket.from_record(json.loads(text)) == market


def test_record_round_trip_and_a_missing_record_is_none():
    market = LegMarket.of(row())
    assert LegMarket.from_record(market.to_record()) == market
    assert LegMarket.from_record(None) is None and LegMarket.from_record({}) is None


def test_a_trade_legs_snapshots_survive_its_record():
    leg = TradeLeg(0, contract(CALL), Side.BUY, 0.1, open_filled=0.1, open_vwap=108.0,
                   entry_market=LegMarket.of(row()), exit_market=LegMarket.of(row(bid=90.0, ask=96.0, as_of=2e9)))
    trade = TradeLifecycle(id="T000000001", seq=1, strategy="s", state=TradeState.CLOSED, legs=[leg])
    record = json.loads(json.dumps(trade.to_record(), allow_nan=False))
    again = TradeLifecycle.from_record(record)
    assert again.legs[0].entry_market == leg.entry_market and again.legs[0].exit_market == leg.exit_market
    assert again.to_record() == trade.to_record()


def test_a_record_written_before_snapshots_loads_them_as_none():
    trade = TradeLifecycle.from_record(RECORD_BEFORE_CONTRACTS)
    assert all(leg.entry_market is None and leg.exit_market is None for leg in trade.legs)
    assert all(leg["entry_market"] is None and leg["exit_market"] is None for leg in trade.to_record()["legs"])


def resolved_with_rows(world, side: int) -> list[SimpleNamespace]:
    now = world.clock.now()
    rows = [make_row(CALL, bid=100.0, ask=110.0, mark=105.0, as_of=now),
            make_row(PUT, bid=200.0, ask=220.0, mark=210.0, as_of=now)]
    return [SimpleNamespace(index=i, symbol=r.symbol, contract=contract(r.symbol), side=Side(side), qty=0.1, row=r,
                            index_price=85_000.0) for i, r in enumerate(rows)]


def test_the_entry_snapshot_is_the_row_the_leg_was_chosen_on_and_is_stored_at_creation(world):
    legs = resolved_with_rows(world, 2)
    trade = world.manager.create("strat", legs)
    assert [leg.entry_market for leg in trade.legs] == [LegMarket.of(r.row) for r in legs]
    assert all(leg.exit_market is None for leg in trade.legs)
    first_save = world.store.saved[0]
    assert first_save["state"] == "PENDING_OPEN"
    assert [leg["entry_market"] for leg in first_save["legs"]] == [LegMarket.of(r.row).to_record() for r in legs]


def test_the_exit_snapshot_is_the_quote_the_exit_was_decided_on(world):
    trade = world.manager.create("strat", resolved_with_rows(world, 2))
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 100.0, 0.5, at=world.clock.now())
    world.ledger.fill(trade.id, 1, Intent.OPEN, 0.1, 200.0, 0.6, at=world.clock.now())
    world.executor.last.end(JobStatus.FILLED)
    world.clock.advance(2)
    world.poll()
    assert trade.state is TradeState.OPEN
    world.market.set(CALL, bid=80.0, ask=86.0, mark=83.0)
    world.market.set(PUT, bid=150.0, ask=160.0, mark=155.0)
    world.clock.advance(10)
    world.poll()                                   # quotes refreshed on this poll
    decided_at = world.clock.now()
    world.clock.advance(1)
    assert world.manager.force_close(trade.id)
    call, put = trade.legs
    assert (call.exit_market.bid, call.exit_market.ask, call.exit_market.as_of) == (80.0, 86.0, decided_at)
    assert (put.exit_market.bid, put.exit_market.ask) == (150.0, 160.0)
    assert call.entry_market.bid == 100.0        # the entry snapshot is not touched
    saved = next(record for record in world.store.saved if record["state"] == "PENDING_CLOSE")
    assert saved["legs"][0]["exit_market"]["bid"] == 80.0   # written with the decision, before the close


def test_an_unwind_has_no_exit_decision_and_keeps_the_last_quote_known(world):
    trade = world.manager.create("strat", resolved_with_rows(world, 1))
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 110.0, 0.5)
    world.ledger.fill(trade.id, 1, Intent.OPEN, 0.03, 220.0, 0.2)
    world.executor.last.end(JobStatus.PARTIAL, "rounds exhausted")
    world.poll()
    assert trade.state is TradeState.UNWINDING and trade.exit_reason is None
    assert [leg.exit_market for leg in trade.legs] == [leg.entry_market for leg in trade.legs]


def test_a_leg_without_any_quote_gets_no_exit_snapshot():
    leg = TradeLeg(0, contract(PUT), Side.SELL, 0.1)
    leg.note_exit_market()
    assert leg.exit_market is None
