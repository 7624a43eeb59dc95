"""Issue 9, finding 4: no decision on an insane price.

A chain snapshot with marks and prices of 0 once closed a freshly opened 0.25-delta strangle
by ``max_loss_pct``, realising a loss the market never had. Here the simulator's response
mutations (``zero_prices`` / ``corrupt_prices`` on the option chain: a real mode of the
simulator, not a mock) serve such snapshots to the product's own services
(``LifecycleRig``: client, market data, ledger, limit engine, lifecycle over real HTTP on
127.0.0.1, speed-0 clock). Everything is asserted from the exchange's own records (its
request log, its orders, its positions):

* while the chain is insane no close order is ever sent and nothing is realised; the trade
  stays OPEN and "no valuation" is logged once for the episode, not once per poll;
* the insane window spans several polls, so the two-confirmation rule alone would not have
  saved the trade: the valuation's sanity rule does;
* a real adverse move (time decay of the long strangle with the index pinned) held over two
  consecutive sane polls does fire the stop, and the exit detail records both confirmations;
* a kill switch during an insane chain sends nothing until a sane band exists again, and with
  only the mark insane it crosses the sane book at once, never below the band.
"""
from __future__ import annotations

import logging

import pytest

from conditions import max_loss_pct
from option_selection import strangle
from order_ledger import parse_client_order_id
from simulator import Mutation
from trade_execution import ExecutionParams
from trade_lifecycle import EXIT_REASON_KILL, TradeState

from tests.faults.test_incident_rig import (
    REDUCING_INTENTS,
    LifecycleRig,
    creates,
    exchange_cash,
    exchange_orders_of,
    intent_of,
    reduce_only_flag,
)

BUY, SELL = 1, 2
HOUR = 3600.0
POLL = 10.0
INDEX = 90_000.0
FAST = ExecutionParams(fill_timeout_seconds=6.0, max_requote_rounds=3, grace_seconds=2.0)
STOP_PCT = 30.0


@pytest.fixture
def rig(sim):
    now_ms = sim.clock.now_ms()
    sim.market.set_scripted_path([(now_ms, INDEX), (now_ms + int(48 * HOUR * 1000), INDEX)])
    sim.clock.advance(60)
    built = LifecycleRig(sim)
    yield built
    built.close()


def reducing_creates(sim, trade_seq: int, *, since: float | None = None, until: float | None = None) -> list:
    return [r for r in creates(sim, since=since, until=until)
            if intent_of(r) in REDUCING_INTENTS
            and parse_client_order_id(int(r.params["clientOrderId"])).trade_seq == trade_seq]


def poll_every(rig: LifecycleRig, seconds: float, polls: int) -> None:
    """``polls`` poll ticks, ``seconds`` apart, like the daemon's monitor loop."""
    for _ in range(polls):
        rig.clock.advance(seconds)
        rig.poll()


def positions(sim, trade) -> dict[str, float]:
    return {leg.symbol: sim.exchange.position_of(None, leg.symbol) for leg in trade.legs}


def no_valuation_lines(caplog, trade_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "exit_evaluation" and r.getMessage().startswith(f"trade {trade_id} ")
            and "no valuation on this snapshot" in r.getMessage()]


def test_row_p1_zero_marks_over_several_polls_close_nothing_and_a_real_loss_held_over_two_sane_polls_fires(rig, caplog):
    caplog.set_level(logging.INFO)
    sim = rig.sim
    trade = rig.open(strangle(0.1, call_delta=0.25, put_delta=-0.25, dte=1, side=BUY), execution_params=FAST,
                     exit_conditions=[max_loss_pct(STOP_PCT)])
    premium = abs(trade.entry_premium)
    held = positions(sim, trade)
    assert all(qty == pytest.approx(0.1) for qty in held.values())
    assert trade.pnl() > -STOP_PCT / 100 * premium                  # a sane market: the stop is far

    # Three consecutive polls read a chain whose marks, bids, asks and underlying are all 0.
    zero_from = rig.clock.now() + POLL / 2
    zero_until = zero_from + 3 * POLL
    sim.mutations.add(Mutation("zero_prices", endpoint="option_chain", start=zero_from, end=zero_until))
    poll_every(rig, POLL, 3)
    assert sim.mutations.counts["zero_prices"] >= 3                  # the lifecycle really read the zeros
    assert all(leg.quote.mark == 0.0 for leg in trade.legs)
    # With those zeros the long strangle would have been "worth" nothing: a loss of the whole premium.
    assert trade.cash_flows() - trade.total_fees() < -STOP_PCT / 100 * premium
    poll_every(rig, POLL, 3)                                          # sane again

    assert trade.state is TradeState.OPEN and trade.exit_reason is None and trade.realized_pnl is None
    assert reducing_creates(sim, trade.seq) == []                    # no close, unwind or kill ever sent
    assert positions(sim, trade) == held                             # nothing realised on the exchange
    assert len(no_valuation_lines(caplog, trade.id)) == 1            # once per episode, not per poll
    assert any(f"trade {trade.id}: quotes sane again" in r.getMessage() for r in caplog.records)
    glitch_over = rig.clock.now()

    # A real adverse move: the index stays pinned and the long strangle decays until the stop.
    assert rig.drive(12 * HOUR, until=lambda: trade.state is TradeState.CLOSED, poll_interval=60.0,
                     idle_step=60.0), trade.state
    assert trade.exit_reason == f"max_loss_pct(pct={STOP_PCT}, mode=fair)"
    confirmations = trade.exit_detail["confirmations"]
    assert confirmations["required"] == 2 and confirmations["seen"] == 2
    first, second = confirmations["evaluations"]
    assert glitch_over < first["snapshot_ts"] < second["snapshot_ts"] == trade.exit_decided_at
    assert first["quotes_as_of"] < second["quotes_as_of"]            # two distinct sane snapshots
    assert all(e["pnl"] <= -STOP_PCT / 100 * premium for e in (first, second))

    closes = reducing_creates(sim, trade.seq)
    assert closes and all(reduce_only_flag(r) for r in closes)
    assert min(r.time_ms for r in closes) / 1000 >= trade.exit_decided_at
    assert all(qty == 0 for qty in positions(sim, trade).values())
    cash, fees = exchange_cash(exchange_orders_of(sim, trade.seq))
    assert trade.realized_pnl == pytest.approx(cash - fees)
    # The loss realised is the market's (a decayed strangle sold at its bid), not the zero marks'.
    assert -premium - 1.0 < trade.realized_pnl < 0


def test_row_p1_prices_corrupted_x1000_never_close_a_short_strangle(rig, caplog):
    caplog.set_level(logging.INFO)
    sim = rig.sim
    trade = rig.open(strangle(0.1, call_delta=0.25, put_delta=-0.25, dte=1, side=SELL), execution_params=FAST,
                     exit_conditions=[max_loss_pct(50)])
    held = positions(sim, trade)
    start = rig.clock.now() + POLL / 2
    sim.mutations.add(Mutation("corrupt_prices", endpoint="option_chain", start=start, end=start + 3 * POLL,
                               factor=1000.0))
    poll_every(rig, POLL, 6)

    assert sim.mutations.counts["corrupt_prices"] >= 3
    assert trade.state is TradeState.OPEN and trade.exit_reason is None
    assert reducing_creates(sim, trade.seq) == [] and positions(sim, trade) == held
    assert len(no_valuation_lines(caplog, trade.id)) == 1


def test_row_p3_a_kill_waits_while_the_chain_is_insane_and_goes_out_once_it_is_sane(rig):
    sim = rig.sim
    trade = rig.open(strangle(0.1, call_delta=0.25, put_delta=-0.25, dte=1, side=BUY), execution_params=FAST,
                     exit_conditions=[max_loss_pct(STOP_PCT)])
    start = rig.clock.now() + 1
    end = start + 30.0
    sim.mutations.add(Mutation("zero_prices", endpoint="option_chain", start=start, end=end))
    rig.clock.advance(2)
    rig.manager.market.invalidate()                                   # the kill reads the chain now
    assert rig.manager.force_close(trade.id, EXIT_REASON_KILL)
    rig.drive(end - rig.clock.now() - 1, step=2.0)
    assert reducing_creates(sim, trade.seq) == []                    # no sane band: nothing priced
    assert rig.drive(300, until=lambda: trade.state is TradeState.CLOSED, step=2.0), trade.state
    kills = reducing_creates(sim, trade.seq)
    assert kills and min(r.time_ms for r in kills) / 1000 >= end
    assert all(reduce_only_flag(r) for r in kills)
    assert all(qty == 0 for qty in positions(sim, trade).values())


def test_row_p3_a_kill_with_only_the_mark_insane_crosses_the_sane_book_at_once(rig):
    sim = rig.sim
    trade = rig.open(strangle(0.1, call_delta=0.25, put_delta=-0.25, dte=1, side=BUY), execution_params=FAST,
                     exit_conditions=[max_loss_pct(STOP_PCT)])
    marks = {leg.symbol: leg.quote.mark for leg in trade.legs}
    start = rig.clock.now() + 1
    sim.mutations.add(Mutation("zero_prices", endpoint="option_chain", start=start, end=start + 600,
                               fields=("markPrice",)))
    rig.clock.advance(2)
    rig.manager.market.invalidate()
    assert rig.manager.force_close(trade.id, EXIT_REASON_KILL)
    assert rig.drive(120, until=lambda: trade.state is TradeState.CLOSED, step=2.0), trade.state

    kills = reducing_creates(sim, trade.seq)
    # Urgent pricing would rest at the mark for 60 s; with the mark insane it crossed the book at once.
    assert kills and max(r.time_ms for r in kills) / 1000 < start + 60
    for record in kills:
        assert int(record.params["tradeSide"]) == SELL and reduce_only_flag(record)
        assert float(record.params["price"]) >= marks[record.params["symbol"]] / 3   # never a give-away
    assert all(qty == 0 for qty in positions(sim, trade).values())
