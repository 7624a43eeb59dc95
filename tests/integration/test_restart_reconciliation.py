"""One test per row of docs/RECOVERY.md, plus incidents 16, 18, 38 and 39 of BEHAVIOUR.md 8.

Every test meets the real simulator over loopback HTTP on a speed-0 simulated clock, with a
real on-disk state store. A "crash" closes the store and the connection and nothing else
(every write is committed as it happens); a "restart" builds a new daemon on the same state
directory and simulator, wired like ``app.run_locked`` (see ``restart_rig``). Between the
two lives the test changes the exchange the way the row describes: orders sent with no
clientOrderId (somebody else on the account), positions that vanish, time that passes an
expiry. States that a live run cannot stop in are written as the daemon writes them
(``TradeLifecycle`` and ``LedgerOrder`` records) next to orders that really exist on the
simulator.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import app
import main as main_module
from clock import SimulatedClock
from external_closes import EXIT_REASON_EXTERNAL, FLAG_PNL_ESTIMATED
from order_ledger import (
    BLOCK_ACCEPT_EVENT,
    Intent,
    LedgerOrder,
    OrderStatus,
    build_client_order_id,
    parse_client_order_id,
)
from prefix_ownership import FOREIGN_ORDERS_EVENT
from reconciliation_report import VERDICT_DEFERRED, VERDICT_EXTERNAL, VERDICT_OK, VERDICT_SHORTFALL
from rfq import RFQParams
from simulator.exchange import ExchangeConfig
from simulator.faults import FaultRule
from trade_lifecycle import EXIT_REASON_KILL, TradeLifecycle, TradeState

from tests.integration.restart_rig import (
    BUY,
    PREFIX,
    SELL,
    START,
    STRATEGY,
    Lives,
    Killed,
    Outside,
    SeedLeg,
    cancels_since,
    coid_of,
    creates_since,
    intent_of,
    order_view_state,
    pick_legs,
    place_as_daemon,
    record_placed,
    seed_trade,
    strangle_config,
    utc,
)

CLOSE_INTENTS = {3, 4}
UNWIND_INTENTS = {5, 6}
KILL_INTENTS = {7, 8}
# Tuesday 06:30 UTC: the next selectable expiry is today's 08:00 daily (90 minutes away).
EARLY = utc(2026, 3, 3, 6, 30)
EXPIRY_0800 = utc(2026, 3, 3, 8, 0)


@dataclass
class Rig:
    sim: Any
    clock: SimulatedClock
    lives: Lives
    outside: Outside


@pytest.fixture
def make_rig(sim_factory, signed_request_for, tmp_path):
    """``make_rig(start=START, root="", **simulator_options)``: a simulator on its own speed-0 clock + lives.

    ``root`` names a subdirectory of ``tmp_path`` for the state, so one test can run two rigs.
    """
    made: list[Lives] = []

    def make(start: float = START, *, root: str = "", **overrides: Any) -> Rig:
        clock = SimulatedClock(start=start, speed=0)
        sim = sim_factory(clock=clock, **overrides)
        lives = Lives(sim, tmp_path / root if root else tmp_path)
        made.append(lives)
        return Rig(sim, clock, lives, Outside(sim, signed_request_for(sim)))

    yield make
    for lives in made:
        lives.close_all()


@pytest.fixture
def rig(make_rig) -> Rig:
    return make_rig()


def is_reduce_only(record: Any) -> bool:
    return str(record.params.get("reduceOnly")) in ("1", "True", "true")


def stored_trade(rig: Rig, trade_id: str) -> dict:
    with rig.lives.store() as store:
        return store.load_trade(trade_id)


def stored_runner(rig: Rig, name: str = STRATEGY) -> dict:
    with rig.lives.store() as store:
        return store.load_runner_state(name) or {}


def rewrite_trade(rig: Rig, trade_id: str, **changes: Any) -> None:
    with rig.lives.store() as store:
        record = store.load_trade(trade_id)
        record.update(changes)
        store.save_trade(record)


def first_life_crashed_open(rig: Rig, **config: Any):
    """Life 1 opens a long strangle (0.01 a leg by default) and dies with it OPEN."""
    life = rig.lives.start([strangle_config(**config)])
    trade = life.run_until_open()
    life.crash()
    return trade


def exchange_fill_qty(sim: Any, order_ids: set[int]) -> float:
    return round(sum(float(f["qty"]) for f in sim.exchange.fills() if int(f["orderId"]) in order_ids), 8)


def orders_on(sim: Any, since: float, symbol: str) -> list[Any]:
    return [r for r in creates_since(sim, since) if r.params["symbol"] == symbol]


# =============================================================================================
# Per trade (the store side)
# =============================================================================================


def test_row_t1_pending_open_without_orders_fails_abandoned_and_counts_as_an_open_failure(rig):
    legs = pick_legs(rig.sim)
    with rig.lives.store() as store:
        trade_id = seed_trade(store, 1, legs, TradeState.PENDING_OPEN, created_at=rig.clock.now())
    rig.clock.advance(120)
    restarted = rig.clock.now()

    life = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    assert life.recovery["abandoned"] == [trade_id]
    life.run(120)

    trade = life.lifecycle.get(trade_id)
    assert trade.state is TradeState.FAILED and trade.failure_reason == "abandoned at restart"
    assert trade.opened_at is None and trade.failed_at == restarted
    runner = life.runner()
    assert runner.state.failed_today == [trade_id] and runner.state.opened_today == []
    assert runner.state.cooldown_anchor == restarted                 # the cooldown starts at the failure
    assert runner.stats.opened == 0 and runner.stats.failed == 1
    assert creates_since(rig.sim, restarted) == []                   # nothing for it, and no new trade in cooldown
    assert stored_runner(rig)["failed_today"] == [trade_id]
    assert stored_trade(rig, trade_id)["state"] == "FAILED"


def crash_after_the_open_orders_filled(rig: Rig, config) -> tuple[str, list[float]]:
    """Life 1 sends both open orders (they fill at once) and dies before polling them."""
    life = rig.lives.start([config()])
    assert life.run(60, until=lambda: bool(life.trades()) and len(life.ledger.orders(life.trades()[0].id)) == 2)
    trade = life.only_trade()
    assert trade.state is TradeState.OPENING                         # sent and filled; never polled
    order_ids = {o.order_id for o in life.ledger.orders(trade.id)}
    assert all(order_view_state(rig.sim, oid) == 1 for oid in order_ids)
    fill_times = [float(f["time"]) / 1000.0 for f in rig.sim.exchange.fills() if int(f["orderId"]) in order_ids]
    life.crash()
    return trade.id, fill_times


@pytest.mark.parametrize("persisted", ["OPENING", "PENDING_OPEN"])
def test_row_t2_open_interrupted_after_every_fill_becomes_open_with_one_callback(rig, persisted):
    opened: list[str] = []

    def config():
        return strangle_config(on_trade_opened=lambda trade, _snapshot: opened.append(trade.id))

    trade_id, _fill_times = crash_after_the_open_orders_filled(rig, config)
    if persisted == "PENDING_OPEN":
        rewrite_trade(rig, trade_id, state="PENDING_OPEN")
    rig.clock.advance(300)
    restarted = rig.clock.now()

    again = rig.lives.start([config()])
    assert again.run(30, until=lambda: again.only_trade().state is TradeState.OPEN)
    reloaded = again.only_trade()
    assert all(leg.open_filled == pytest.approx(0.01) and leg.net_qty == pytest.approx(0.01)
               for leg in reloaded.legs)
    assert creates_since(rig.sim, restarted) == [] and cancels_since(rig.sim, restarted) == []
    again.run(30)
    again.crash()
    third = rig.lives.start([config()])                             # and not again after one more restart
    third.run(30)
    assert opened == [trade_id]
    assert third.only_trade().state is TradeState.OPEN and third.only_trade().opened_notified


def test_row_t2_opened_at_is_the_last_fill_time_not_the_restart_time(rig):
    trade_id, fill_times = crash_after_the_open_orders_filled(rig, strangle_config)
    rig.clock.advance(300)

    again = rig.lives.start([strangle_config()])
    assert again.run(30, until=lambda: again.only_trade().state is TradeState.OPEN)
    assert again.only_trade().opened_at == pytest.approx(max(fill_times), abs=1.0)


@pytest.mark.parametrize("outcome", ["nothing_filled", "filled_while_canceling"])
def test_row_t3_live_open_orders_are_cancelled_and_polled_until_final_before_any_verdict(rig, outcome):
    legs = pick_legs(rig.sim)
    placed = [place_as_daemon(rig.outside, trade_seq=1, leg=leg, intent=Intent.OPEN, attempt=1, side=BUY,
                              qty=0.01, fill=False) for leg in legs]
    with rig.lives.store() as store:
        trade_id = seed_trade(store, 1, legs, TradeState.OPENING, created_at=rig.clock.now())
        for order in placed:
            record_placed(store, order, trade_seq=1, intent=Intent.OPEN, attempt=1)
    rig.sim.exchange.faults.hold_canceling_seconds = 45.0
    rig.clock.advance(60)
    restarted = rig.clock.now()

    life = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    life.wake()
    cancelled = {int(r.params["orderId"]) for r in cancels_since(rig.sim, restarted)}
    assert cancelled == {p.order_id for p in placed}
    life.wake(2)                                                     # two more polls: still 5 on the exchange
    assert all(order_view_state(rig.sim, p.order_id) == 5 for p in placed)
    assert life.lifecycle.get(trade_id).state is TradeState.OPENING  # CANCELING is not final: no verdict yet
    if outcome == "filled_while_canceling":
        for order in placed:
            assert rig.sim.exchange.force_fill(order.order_id, 0.01) == pytest.approx(0.01)
    life.run(60, until=lambda: life.lifecycle.get(trade_id).state is not TradeState.OPENING)

    trade = life.lifecycle.get(trade_id)
    assert trade.state is (TradeState.OPEN if outcome == "filled_while_canceling" else TradeState.FAILED)
    assert len(cancels_since(rig.sim, restarted)) == 2               # one cancel each, never repeated
    assert creates_since(rig.sim, restarted) == []


def test_row_t4_opening_whose_orders_ended_with_zero_fills_fails(rig):
    legs = pick_legs(rig.sim)
    placed = [place_as_daemon(rig.outside, trade_seq=1, leg=leg, intent=Intent.OPEN, attempt=1, side=BUY,
                              qty=0.01, fill=False) for leg in legs]
    with rig.lives.store() as store:
        trade_id = seed_trade(store, 1, legs, TradeState.OPENING, created_at=rig.clock.now())
        for order in placed:
            record_placed(store, order, trade_seq=1, intent=Intent.OPEN, attempt=1)
    for order in placed:                                             # cancelled while the daemon was down
        rig.outside.cancel(order.order_id)
    rig.clock.advance(60)
    restarted = rig.clock.now()

    life = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    life.run(30)

    trade = life.lifecycle.get(trade_id)
    assert trade.state is TradeState.FAILED and trade.opened_at is None and not trade.has_exposure
    assert all(o.status is OrderStatus.CANCELED for o in life.ledger.orders(trade_id))
    assert cancels_since(rig.sim, restarted) == [] and creates_since(rig.sim, restarted) == []
    assert life.runner().state.failed_today == [trade_id] and life.runner().state.opened_today == []


def test_row_t5_opening_with_some_fills_unwinds_exactly_the_filled_quantity(rig):
    legs = pick_legs(rig.sim)
    filled = place_as_daemon(rig.outside, trade_seq=1, leg=legs[0], intent=Intent.OPEN, attempt=1, side=BUY,
                             qty=0.01, fill=True)
    resting = place_as_daemon(rig.outside, trade_seq=1, leg=legs[1], intent=Intent.OPEN, attempt=1, side=BUY,
                              qty=0.01, fill=False)
    with rig.lives.store() as store:
        trade_id = seed_trade(store, 1, legs, TradeState.OPENING, created_at=rig.clock.now())
        for order in (filled, resting):
            record_placed(store, order, trade_seq=1, intent=Intent.OPEN, attempt=1)
    rig.clock.advance(60)
    restarted = rig.clock.now()

    life = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    assert life.run(60, until=lambda: life.lifecycle.get(trade_id).state is not TradeState.OPENING)
    assert life.lifecycle.get(trade_id).state is TradeState.UNWINDING
    [warning] = life.alerts("open_partial_unwind")
    assert warning.level == "WARNING" and warning.detail["legs"] == {legs[0].symbol: 0.01}
    assert order_view_state(rig.sim, resting.order_id) == 3            # the live open order was cancelled
    assert life.run(400, until=lambda: life.lifecycle.get(trade_id).state is TradeState.FAILED)

    sent = creates_since(rig.sim, restarted)
    assert sent and all(r.params["symbol"] == legs[0].symbol for r in sent)   # nothing on the unfilled leg
    assert all(intent_of(r) in UNWIND_INTENTS and is_reduce_only(r) and r.params["tradeSide"] in (SELL, "2")
               for r in sent)
    unwind_ids = {o.order_id for o in life.ledger.orders(trade_id, family=Intent.UNWIND)}
    assert exchange_fill_qty(rig.sim, unwind_ids) == pytest.approx(0.01)    # exactly what the open filled
    assert rig.outside.position(legs[0].symbol) == 0.0 and rig.outside.position(legs[1].symbol) == 0.0


@pytest.mark.parametrize("exposure", ["left", "none"])
def test_row_t6_unwinding_resumes_with_new_attempts_or_fails_when_flat(rig, exposure):
    legs = pick_legs(rig.sim)
    opened = place_as_daemon(rig.outside, trade_seq=1, leg=legs[0], intent=Intent.OPEN, attempt=1, side=BUY,
                             qty=0.01, fill=True)
    unwound = None
    if exposure == "none":
        unwound = place_as_daemon(rig.outside, trade_seq=1, leg=legs[0], intent=Intent.UNWIND, attempt=2,
                                  side=SELL, qty=0.01, fill=True)
    with rig.lives.store() as store:
        trade_id = seed_trade(store, 1, legs, TradeState.UNWINDING, created_at=rig.clock.now())
        record_placed(store, opened, trade_seq=1, intent=Intent.OPEN, attempt=1, status=OrderStatus.FILLED,
                      view=rig.outside.query(opened.order_id))
        if unwound is not None:
            record_placed(store, unwound, trade_seq=1, intent=Intent.UNWIND, attempt=2, status=OrderStatus.FILLED,
                          view=rig.outside.query(unwound.order_id))
    rig.clock.advance(60)
    restarted = rig.clock.now()

    life = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    assert life.run(400, until=lambda: life.lifecycle.get(trade_id).state is TradeState.FAILED)

    sent = creates_since(rig.sim, restarted)
    if exposure == "none":
        assert sent == []
        assert life.lifecycle.get(trade_id).failed_at == restarted        # decided on the first tick
    else:
        assert sent and all(r.params["symbol"] == legs[0].symbol and intent_of(r) in UNWIND_INTENTS
                            and is_reduce_only(r) for r in sent)
        attempts = [parse_client_order_id(coid_of(r)).attempt for r in sent]
        assert min(attempts) == 2 and attempts == sorted(set(attempts))   # new attempts, never reused
    assert rig.outside.position(legs[0].symbol) == 0.0


@pytest.mark.parametrize("persisted", ["OPEN", "PENDING_CLOSE"])
def test_row_t7_open_and_pending_close_continue_unchanged(rig, persisted):
    trade = first_life_crashed_open(rig)
    decided_at = rig.clock.now()
    if persisted == "PENDING_CLOSE":                                 # the exit was decided, then the crash
        rewrite_trade(rig, trade.id, state="PENDING_CLOSE", exit_reason="max_hold_hours",
                      exit_decided_at=decided_at, exit_detail={"source": "max_hold_hours"})
    rig.clock.advance(300)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    if persisted == "OPEN":
        again.run(130)                                               # start-up and two periodic checks
        reloaded = again.only_trade()
        assert reloaded.state is TradeState.OPEN and reloaded.exit_reason is None
        assert {leg.symbol: leg.net_qty for leg in reloaded.legs} == {leg.symbol: 0.01 for leg in trade.legs}
        assert creates_since(rig.sim, restarted) == [] and cancels_since(rig.sim, restarted) == []
        assert again.alerts() == [] and not again.runner().is_paused
        return
    assert again.run(300, until=lambda: again.only_trade().state is TradeState.CLOSED)
    sent = creates_since(rig.sim, restarted)
    assert sent[0].time_ms == restarted * 1000                       # the close starts on the first tick
    assert all(intent_of(r) in CLOSE_INTENTS and is_reduce_only(r) for r in sent)
    closed = again.only_trade()
    assert closed.exit_reason == "max_hold_hours" and closed.exit_decided_at == decided_at
    assert all(rig.outside.position(leg.symbol) == 0.0 for leg in trade.legs)


@pytest.mark.parametrize("close_orders", ["all_filled", "one_resting"])
def test_row_t8_closing_resolves_its_orders_then_closes_or_retries_only_the_rest(rig, close_orders):
    life = rig.lives.start([strangle_config()])
    trade = life.run_until_open()
    symbols = [leg.symbol for leg in trade.legs]
    if close_orders == "all_filled":
        assert life.lifecycle.force_close(trade.id, "manual")      # the close orders go out (and fill)
        assert life.only_trade().state is TradeState.CLOSING
        assert [o.status for o in life.ledger.live_orders(trade.id)] == [OrderStatus.LIVE] * 2
        life.crash()
    else:
        used = {leg.index: life.ledger.attempts_used(trade.seq, leg.index) for leg in trade.legs}
        life.crash()
        seeds = [SeedLeg.of(leg) for leg in trade.legs]
        sold = place_as_daemon(rig.outside, trade_seq=trade.seq, leg=seeds[0], intent=Intent.CLOSE,
                               attempt=used[0] + 1, side=SELL, qty=0.01, fill=True)
        resting = place_as_daemon(rig.outside, trade_seq=trade.seq, leg=seeds[1], intent=Intent.CLOSE,
                                  attempt=used[1] + 1, side=SELL, qty=0.01, fill=False)
        with rig.lives.store() as store:
            for placed, leg in ((sold, 0), (resting, 1)):
                record_placed(store, placed, trade_seq=trade.seq, intent=Intent.CLOSE, attempt=used[leg] + 1)
        rewrite_trade(rig, trade.id, state="CLOSING", exit_reason="manual", exit_decided_at=rig.clock.now())
    rig.clock.advance(120)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    assert again.run(400, until=lambda: again.only_trade().state is TradeState.CLOSED)
    closed = again.only_trade()
    assert closed.exit_reason == "manual"
    assert all(leg.close_filled == pytest.approx(0.01) and leg.net_qty == 0.0 for leg in closed.legs)
    assert all(rig.outside.position(symbol) == 0.0 for symbol in symbols)   # nothing sold twice
    sent = creates_since(rig.sim, restarted)
    if close_orders == "all_filled":
        assert sent == []
    else:
        assert order_view_state(rig.sim, resting.order_id) == 3
        assert orders_on(rig.sim, restarted, symbols[0]) == []              # the filled leg is never re-sold
        assert sent and all(intent_of(r) in CLOSE_INTENTS and is_reduce_only(r) for r in sent)
        assert min(parse_client_order_id(coid_of(r)).attempt for r in sent) > used[1] + 1
        assert float(sent[0].params["qty"]) == pytest.approx(0.01)         # the rest, from our fills


def delivery_requests_since(sim: Any, since: float) -> int:
    return sum(1 for r in sim.requests_for("delivery_prices") if r.time_ms >= since * 1000)


def test_row_t9_settling_keeps_polling_the_delivery_price(make_rig):
    rig = make_rig(start=EARLY)
    trade = first_life_crashed_open(rig)
    assert all(leg.expiry_ms == EXPIRY_0800 * 1000 for leg in trade.legs)
    outage = [rig.sim.faults.add(FaultRule("http_5xx", endpoint=name))
              for name in ("delivery_prices", "exercise_history")]     # no delivery price anywhere
    rig.clock.set_time(EXPIRY_0800 + 30)
    second = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    assert second.run(60, until=lambda: second.only_trade().state is TradeState.SETTLING), second.only_trade()
    second.crash()
    assert stored_trade(rig, trade.id)["state"] == "SETTLING"
    rig.clock.advance(120)
    restarted = rig.clock.now()

    third = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    third.run(40)
    assert third.only_trade().state is TradeState.SETTLING
    assert delivery_requests_since(rig.sim, restarted) >= 3          # polled again and again
    for rule in outage:
        rig.sim.faults.remove(rule)
    assert third.run(60, until=lambda: third.only_trade().state is TradeState.CLOSED)

    settled = third.only_trade()
    delivery = rig.sim.market.delivery_prices()[EXPIRY_0800 * 1000]
    assert settled.exit_reason == "expiry"
    assert all(leg.settlement is not None and leg.settlement.delivery_price == pytest.approx(delivery, abs=0.01)
               for leg in settled.legs)
    assert third.alerts("external_close") == [] and not third.runner().is_paused
    assert creates_since(rig.sim, restarted) == []


def test_row_t10_closed_and_failed_trades_are_restored_read_only(rig):
    life = rig.lives.start([strangle_config(hold_hours=1 / 60, cooldown_seconds=600.0)])
    trade = life.run_until_open()
    assert life.run(300, until=lambda: life.lifecycle.get(trade.id).state is TradeState.CLOSED)
    life.crash()
    with rig.lives.store() as store:                                 # a trade that failed to open, as stored
        failed_id = seed_trade(store, 2, pick_legs(rig.sim), TradeState.OPENING, created_at=rig.clock.now())
        record = store.load_trade(failed_id)
        record.update(state="FAILED", failed_at=rig.clock.now(), failure_reason="open failed with no fill",
                      realized_pnl=0.0)
        store.save_trade(record)
        before = {t["id"]: t for t in store.load_trades()}
        seq_before = store.counter("trade_seq")
    rig.clock.advance(60)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(hold_hours=1 / 60, cooldown_seconds=600.0)])
    again.run(120)

    with rig.lives.store() as store:
        after = {t["id"]: t for t in store.load_trades()}
        assert store.counter("trade_seq") == seq_before
    fields = ("state", "realized_pnl", "fees_paid", "opened_at", "closed_at", "failed_at", "exit_reason",
              "failure_reason", "legs")
    for trade_id in (trade.id, failed_id):
        assert {f: after[trade_id][f] for f in fields} == {f: before[trade_id][f] for f in fields}
    stats = again.runner().stats
    assert (stats.opened, stats.closed, stats.failed) == (1, 1, 1)
    assert stats.realized_pnl == pytest.approx(before[trade.id]["realized_pnl"])
    assert again.runner().state.cooldown_anchor == before[failed_id]["failed_at"]
    assert creates_since(rig.sim, restarted) == []                   # the restored cooldown holds
    assert [r for r in rig.sim.requests_for("query_order") if r.time_ms >= restarted * 1000] == []


def test_row_t11_trades_of_a_running_strategy_are_not_reported_unmanaged_at_restart(rig, caplog):
    trade = first_life_crashed_open(rig)
    caplog.set_level(logging.WARNING, logger="trade_lifecycle")

    again = rig.lives.start([strangle_config()])                     # wired in app.run_locked's order

    assert again.lifecycle.unmanaged_trades() == []
    assert not [r for r in caplog.records if "which is not running" in r.getMessage() and trade.id in r.getMessage()]


def test_row_t11_trades_of_a_strategy_no_longer_configured_are_unmanaged(make_rig):
    rig = make_rig(start=EARLY)
    life = rig.lives.start([strangle_config("gone_a", hold_hours=0.05), strangle_config("gone_b", hold_hours=0.05)])
    assert life.run(120, until=lambda: len(life.trades()) == 2
                    and all(t.state is TradeState.OPEN for t in life.trades()))
    killed, expiring = life.trades("gone_a")[0], life.trades("gone_b")[0]
    life.crash()
    rig.clock.advance(60)
    restarted = rig.clock.now()

    again = rig.lives.start([])                                      # STRATEGIES no longer has them
    assert {t.id for t in again.lifecycle.unmanaged_trades()} == {killed.id, expiring.id}
    again.run(600)                                                   # well past their 3-minute max hold
    assert [t.state for t in again.trades()] == [TradeState.OPEN, TradeState.OPEN]
    assert creates_since(rig.sim, restarted) == []
    for _check in range(2):                                          # a warning at every health check
        health = app.health_state(again.ctx, [], again.started_at)
        assert any(killed.id in w and expiring.id in w for w in health.get("warnings", [])), health
        assert health["reconciliation"]["kind"] in ("startup", "periodic")     # the last check is visible
        again.run(30)

    killed_at = rig.clock.now()
    assert again.lifecycle.force_close(killed.id, EXIT_REASON_KILL)  # the kill switch can close it
    assert again.run(300, until=lambda: again.lifecycle.get(killed.id).state is TradeState.CLOSED)
    assert again.lifecycle.get(killed.id).exit_reason == EXIT_REASON_KILL
    kills = creates_since(rig.sim, killed_at)
    assert kills and all(intent_of(r) in KILL_INTENTS and is_reduce_only(r) for r in kills)

    rig.clock.set_time(EXPIRY_0800 - 60)                             # expiry still applies
    assert again.run(180, until=lambda: again.lifecycle.get(expiring.id).state is TradeState.CLOSED)
    assert again.lifecycle.get(expiring.id).exit_reason == "expiry"
    assert all(leg.settlement is not None for leg in again.lifecycle.get(expiring.id).legs)


# =============================================================================================
# Per symbol (the exchange side)
# =============================================================================================


def verdicts(report: Any) -> dict[str, tuple[float, float, str]]:
    return {check.symbol: (check.ours, check.exchange, check.verdict) for check in report.symbols}


def test_row_s1_positions_equal_to_ours_need_nothing(rig):
    trade = first_life_crashed_open(rig)
    rig.clock.advance(300)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config()])
    again.wake()
    assert verdicts(again.reconciler.last_report) == {leg.symbol: (0.01, 0.01, VERDICT_OK) for leg in trade.legs}
    again.run(130)                                                   # and the periodic checks agree
    assert again.reconciler.last_report.kind == "periodic"
    assert {v for _o, _e, v in verdicts(again.reconciler.last_report).values()} == {VERDICT_OK}
    assert again.only_trade().state is TradeState.OPEN and again.alerts() == []
    assert not again.runner().is_paused
    assert creates_since(rig.sim, restarted) == [] and cancels_since(rig.sim, restarted) == []


def test_row_s2_positions_beyond_ours_are_external_logged_once_and_never_touched(rig, caplog):
    trade = first_life_crashed_open(rig)
    ours, other = trade.legs[0].symbol, pick_legs(rig.sim)[0].symbol
    assert other not in {leg.symbol for leg in trade.legs}
    rig.outside.crossing(ours, BUY, 0.01)                            # somebody adds to our symbol
    rig.outside.crossing(other, BUY, 0.02)                           # and holds a symbol we never traded
    foreign = rig.outside.resting(other, BUY, 0.01)
    rig.clock.advance(300)
    restarted = rig.clock.now()
    caplog.set_level(logging.INFO, logger="position_reconciliation")

    again = rig.lives.start([strangle_config()])
    again.wake()
    seen = verdicts(again.reconciler.last_report)
    assert seen[ours] == (0.01, 0.02, VERDICT_EXTERNAL) and seen[other] == (0.0, 0.02, VERDICT_EXTERNAL)
    again.run(200)                                                   # three periodic checks later

    logged = [r.getMessage() for r in caplog.records if "external, left alone" in r.getMessage()]
    assert len(logged) == 2 and all(r.levelno == logging.INFO for r in caplog.records
                                    if "external, left alone" in r.getMessage())
    assert rig.outside.position(ours) == pytest.approx(0.02) and rig.outside.position(other) == pytest.approx(0.02)
    assert order_view_state(rig.sim, foreign) == 0
    assert creates_since(rig.sim, restarted) == [] and cancels_since(rig.sim, restarted) == []
    assert again.only_trade().state is TradeState.OPEN
    assert [leg.net_qty for leg in again.only_trade().legs] == [0.01, 0.01]
    assert again.alerts() == [] and not again.runner().is_paused


def test_row_s3_exchange_short_of_ours_is_booked_as_an_external_close_on_fills_not_ours(rig):
    trade = first_life_crashed_open(rig, qty=0.02)
    symbols = [leg.symbol for leg in trade.legs]
    sold = {symbols[0]: rig.outside.crossing(symbols[0], SELL, 0.01),    # half of leg 0
            symbols[1]: rig.outside.crossing(symbols[1], SELL, 0.02)}    # all of leg 1
    rig.clock.advance(120)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(qty=0.02)])
    again.wake()

    trade = again.lifecycle.get(trade.id)
    critical = again.alerts("external_close", "CRITICAL")
    assert again.runner().is_paused and stored_runner(rig)["paused"] is True
    assert creates_since(rig.sim, restarted) == []
    fills = {f["orderId"]: f for f in rig.sim.exchange.fills()}
    assert [leg.external_qty for leg in trade.legs] == [0.01, 0.02]
    assert [leg.net_qty for leg in trade.legs] == [0.01, 0.0]
    for leg in trade.legs:                                           # priced from the fills that are not ours
        assert leg.external_price == pytest.approx(float(fills[sold[leg.symbol]]["price"]))
    assert FLAG_PNL_ESTIMATED not in trade.flags
    assert trade.state is TradeState.OPEN and len(critical) == 2
    assert rig.outside.position(symbols[0]) == pytest.approx(0.01)
    assert again.alerts("suspect_positions_read") == []


@pytest.mark.parametrize("how", ["open", "never_polled"])
def test_row_s6_a_position_gone_without_any_fill_is_a_suspect_read_never_a_close(rig, how):
    if how == "never_polled":                                        # OPENING: the daemon never saw its fills
        trade_id, _fill_times = crash_after_the_open_orders_filled(rig, lambda: strangle_config(qty=0.02))
        symbols = [leg["symbol"] for leg in stored_trade(rig, trade_id)["legs"]]
    else:
        trade = first_life_crashed_open(rig, qty=0.02)
        trade_id, symbols = trade.id, [leg.symbol for leg in trade.legs]
    held = {symbol: rig.outside.position(symbol) for symbol in symbols}
    for symbol in symbols:                                           # gone, and no fill says who took it
        rig.outside.flatten(symbol)
    rig.clock.advance(120)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(qty=0.02, cooldown_seconds=3600.0)])
    again.wake()
    again.run(200)                                                   # start-up and three periodic checks

    trade = again.lifecycle.get(trade_id)
    assert trade.state is TradeState.OPEN and [leg.net_qty for leg in trade.legs] == [0.02, 0.02]
    assert all(leg.external_qty == 0.0 for leg in trade.legs) and trade.exit_reason is None
    assert stored_trade(rig, trade_id)["state"] == "OPEN"
    [suspect] = again.alerts("suspect_positions_read")               # once, not at every check
    assert suspect.level == "CRITICAL" and set(suspect.detail["symbols"]) == set(symbols)
    assert again.alerts("external_close") == [] and not again.runner().is_paused
    assert "suspect_positions" in again.lifecycle.entry_holds and creates_since(rig.sim, restarted) == []
    assert again.reconciler.last_report.suspect == sorted(symbols)

    for symbol, qty in held.items():                                 # the positions show again
        rig.sim.exchange.set_position(None, symbol, qty, rig.outside.mark(symbol))
    again.run(130)
    [back] = again.alerts("positions_reappeared")
    assert back.level == "WARNING" and again.lifecycle.entry_holds == {}
    assert again.reconciler.last_report.suspect == []
    assert again.lifecycle.force_close(trade_id, "manual")           # and the trade is managed as before
    assert again.run(300, until=lambda: again.lifecycle.get(trade_id).state is TradeState.CLOSED)
    assert all(rig.outside.position(symbol) == 0.0 for symbol in symbols)
    assert all(is_reduce_only(r) for r in creates_since(rig.sim, restarted))


def close_as_an_older_version_did(rig: Rig, trade: Any, lost: dict[str, float]) -> None:
    """Rewrite a stored OPEN trade as older versions booked a missing position: CLOSED
    ``external_close`` at the mark, flagged ``pnl_estimated``, with no fill; strategy paused."""
    with rig.lives.store() as store:
        record = store.load_trade(trade.id)
        for leg in record["legs"]:
            leg["external_qty"] = lost[leg["symbol"]]
            leg["external_price"] = rig.outside.mark(leg["symbol"])
        record.update(state="CLOSED", exit_reason=EXIT_REASON_EXTERNAL, exit_decided_at=rig.clock.now(),
                      closed_at=rig.clock.now(), flags=[FLAG_PNL_ESTIMATED], realized_pnl=-1.0,
                      exit_detail={"source": "reconciliation"}, closed_notified=True)
        store.save_trade(record)
        store.save_runner_state(STRATEGY, {**(store.load_runner_state(STRATEGY) or {}), "paused": True,
                                           "pause_reason": "position closed outside the daemon"})


def test_row_x1_an_old_estimated_external_close_whose_positions_show_again_is_reopened(rig):
    trade = first_life_crashed_open(rig)
    close_as_an_older_version_did(rig, trade, {leg.symbol: 0.01 for leg in trade.legs})
    rig.clock.advance(300)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(hold_hours=0.25, cooldown_seconds=3600.0)])
    again.wake()

    reopened = again.lifecycle.get(trade.id)
    assert again.reconciler.last_report.reversed == [trade.id]
    assert reopened.state is TradeState.OPEN and reopened.exit_reason is None
    assert [leg.net_qty for leg in reopened.legs] == [0.01, 0.01] and FLAG_PNL_ESTIMATED not in reopened.flags
    assert stored_trade(rig, trade.id)["state"] == "OPEN"
    [alert] = again.alerts("external_close_reversed")
    assert alert.level == "CRITICAL" and alert.detail["trade_id"] == trade.id
    assert again.runner().is_paused                                  # entries stay paused until an operator resumes
    assert {v for _o, _e, v in verdicts(again.reconciler.last_report).values()} == {VERDICT_OK}
    # Managed by its own exit rule again: max_hold_hours(0.25) closes it, reduce-only, to flat.
    assert again.run(1200, until=lambda: again.lifecycle.get(trade.id).state is TradeState.CLOSED)
    closed = again.lifecycle.get(trade.id)
    assert closed.exit_reason.startswith("max_hold_hours(")
    assert creates_since(rig.sim, restarted) and all(is_reduce_only(r) for r in creates_since(rig.sim, restarted))
    assert all(rig.outside.position(leg.symbol) == 0.0 for leg in trade.legs)
    assert len(again.alerts("external_close_reversed")) == 1


def test_row_x2_positions_that_do_not_match_an_old_estimate_exactly_are_reported_not_taken_over(rig):
    trade = first_life_crashed_open(rig)
    close_as_an_older_version_did(rig, trade, {leg.symbol: 0.01 for leg in trade.legs})
    rig.outside.crossing(trade.legs[0].symbol, BUY, 0.01)            # 0.02 on the call: not what it lost
    rig.clock.advance(300)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(hold_hours=0.25, cooldown_seconds=3600.0)])
    again.wake()
    again.run(200)

    assert again.lifecycle.get(trade.id).state is TradeState.CLOSED and again.reconciler.last_report.reversed == []
    [alert] = again.alerts("external_close_unmatched")               # once, not at every check
    assert alert.level == "CRITICAL" and alert.detail["trade_id"] == trade.id
    assert again.alerts("external_close_reversed") == []
    assert creates_since(rig.sim, restarted) == [] and cancels_since(rig.sim, restarted) == []


def test_row_s4_opposite_side_blocks_the_symbol_until_an_operator_resumes(rig):
    trade = first_life_crashed_open(rig)
    flipped, other = trade.legs[0].symbol, trade.legs[1].symbol
    rig.outside.crossing(flipped, SELL, 0.02)                        # long 0.01 -> short 0.01
    rig.clock.advance(120)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config()])
    again.wake()
    [alert] = again.alerts("opposite_position")
    assert alert.level == "CRITICAL"
    assert again.ledger.is_blocked(flipped) and not again.ledger.is_blocked(other)
    assert again.runner().is_paused and stored_runner(rig)["paused"] is True

    assert again.lifecycle.force_close(trade.id, "manual")          # an exit: only the other leg may trade
    again.run(200)
    assert orders_on(rig.sim, restarted, flipped) == []
    assert orders_on(rig.sim, restarted, other) and rig.outside.position(other) == 0.0
    assert again.lifecycle.get(trade.id).state is not TradeState.CLOSED
    assert len(again.alerts("opposite_position")) == 1               # not repeated at each check

    rig.outside.crossing(flipped, BUY, 0.02)                         # the operator repairs the account...
    resumed_at = rig.clock.now()
    again.runner().resume()                                          # ...and resumes the strategy
    assert not again.ledger.is_blocked(flipped) and stored_runner(rig)["paused"] is False
    assert again.run(300, until=lambda: again.lifecycle.get(trade.id).state is TradeState.CLOSED)
    assert orders_on(rig.sim, resumed_at, flipped) and rig.outside.position(flipped) == 0.0


def test_row_s5_an_expired_leg_is_settled_not_compared(make_rig):
    rig = make_rig(start=EARLY)
    trade = first_life_crashed_open(rig)
    rig.clock.set_time(EXPIRY_0800 + 300)                            # the exchange settled and removed it
    assert all(rig.outside.position(leg.symbol) == 0.0 for leg in trade.legs)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    again.wake()
    assert not {leg.symbol for leg in trade.legs} & set(verdicts(again.reconciler.last_report))
    assert again.run(60, until=lambda: again.only_trade().state is TradeState.CLOSED)

    settled = again.only_trade()
    delivery = rig.sim.market.delivery_prices()[EXPIRY_0800 * 1000]
    assert settled.exit_reason == "expiry" and FLAG_PNL_ESTIMATED not in settled.flags
    assert all(leg.external_qty == 0.0 and leg.settlement.delivery_price == pytest.approx(delivery, abs=0.01)
               for leg in settled.legs)
    assert again.alerts("external_close") == [] and not again.runner().is_paused
    assert creates_since(rig.sim, restarted) == []


# =============================================================================================
# Orders
# =============================================================================================


def foreign_events(rig: Rig) -> list[dict]:
    """What the journal remembers of orders with our prefix that are not ours (row O2)."""
    with rig.lives.store() as store:
        return [event["payload"] for event in store.events(FOREIGN_ORDERS_EVENT)]


def queries_for(sim: Any, order_id: int, since: float) -> list[Any]:
    return [r for r in sim.requests_for("query_order")
            if r.time_ms >= since * 1000 and str(r.params.get("orderId")) == str(order_id)]


def daemon_resting_bid(life: Any, outside: Outside, symbol: str, trade_seq: int) -> Any:
    """An order the running daemon sends through its own ledger: a one-tick bid that rests."""
    tick = outside.tick_size(symbol)
    return life.ledger.place(trade_id=f"T{trade_seq:09d}", trade_seq=trade_seq, leg_index=0, intent=Intent.OPEN,
                             symbol=symbol, side=BUY, qty=0.01, price=tick, tick_size=tick)


def test_row_o1_a_listed_order_of_ours_in_the_ledger_is_left_to_its_owner(rig):
    trade = first_life_crashed_open(rig)
    leg = SeedLeg.of(trade.legs[0])
    with rig.lives.store() as store:
        attempt = max(int(o["attempt"]) for o in store.load_orders(trade.id) if o["leg_index"] == 0) + 1
    working = place_as_daemon(rig.outside, trade_seq=trade.seq, leg=leg, intent=Intent.CLOSE, attempt=attempt,
                              side=SELL, qty=0.01, fill=False)
    with rig.lives.store() as store:
        record_placed(store, working, trade_seq=trade.seq, intent=Intent.CLOSE, attempt=attempt)
    rig.clock.advance(60)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config()])
    again.run(130)                                                   # start-up and two periodic checks

    assert order_view_state(rig.sim, working.order_id) == 0
    assert cancels_since(rig.sim, restarted) == [] and foreign_events(rig) == []
    assert again.reconciler.last_report.kind == "periodic" and again.reconciler.last_report.orders_checked == 0
    assert again.alerts() == [] and again.ledger.get(working.coid).status is OrderStatus.LIVE


def test_row_o2_an_open_order_with_our_prefix_unknown_to_the_ledger_is_reported_never_cancelled(rig):
    trade = first_life_crashed_open(rig)
    rig.clock.advance(60)
    again = rig.lives.start([strangle_config()])
    again.wake()                                                     # start-up: all ours is known
    assert again.alerts() == [] and not again.runner().is_paused
    placed_at = rig.clock.now()
    stranger = build_client_order_id(PREFIX, 1, 0, Intent.OPEN, 9)  # another daemon on our prefix
    unknown = rig.outside.resting(trade.legs[0].symbol, BUY, 0.01, client_order_id=stranger)
    foreign = rig.outside.resting(trade.legs[0].symbol, BUY, 0.01)
    rig.clock.advance(1)
    after = rig.clock.now()

    again.run(70)                                                    # the next periodic check

    assert stranger in again.reconciler.last_report.foreign_orders
    assert order_view_state(rig.sim, unknown) == 0 and order_view_state(rig.sim, foreign) == 0   # untouched
    assert cancels_since(rig.sim, placed_at) == [] and creates_since(rig.sim, after) == []
    [event] = foreign_events(rig)
    assert event["client_order_ids"] == [stranger] and event["orders"][0]["order_id"] == unknown
    [alert] = again.alerts("prefix_conflict")
    assert alert.level == "CRITICAL" and alert.detail["client_order_ids"] == [stranger]
    assert "CLIENT_ORDER_PREFIX" in alert.message and str(stranger) in alert.message
    assert again.runner().is_paused and stored_runner(rig)["paused"] is True
    assert again.ledger.get(stranger) is None and again.only_trade().state is TradeState.OPEN
    assert again.store.counter("trade_seq") >= 1 + 1000              # our next ids stay clear of it
    again.run(130)
    assert len(again.alerts("prefix_conflict")) == 1                 # reported once


def test_row_o3_orders_without_our_prefix_are_never_cancelled_nor_counted(rig):
    symbol = pick_legs(rig.sim)[0].symbol
    others = [rig.outside.resting(symbol, BUY, 0.01),                                   # no clientOrderId
              rig.outside.resting(symbol, BUY, 0.01, client_order_id=202000000077011001),  # another daemon
              rig.outside.resting(symbol, BUY, 0.01, client_order_id=12345)]            # a manual tag
    started = rig.clock.now()

    life = rig.lives.start([])
    life.wake()
    startup = life.reconciler.last_report
    life.run(130)

    assert startup.orders_checked == 0 and startup.foreign_orders == []
    assert life.reconciler.last_report.orders_checked == 0 and life.reconciler.last_report.foreign_orders == []
    assert all(order_view_state(rig.sim, order_id) == 0 for order_id in others)
    assert cancels_since(rig.sim, started) == [] and life.alerts() == [] and foreign_events(rig) == []


def test_row_o4_a_fresh_order_missing_from_a_lagging_list_is_skipped(make_rig):
    rig = make_rig(exchange=ExchangeConfig(seed=7, pending_list_lag_seconds=20.0))
    symbol = pick_legs(rig.sim)[0].symbol
    life = rig.lives.start([])
    life.wake()
    order = daemon_resting_bid(life, rig.outside, symbol, trade_seq=5)
    placed_at = rig.clock.now()
    listed = rig.outside.call("GET", "/open/option/order/pending/v1", {"pageSize": 500})["data"]["list"]
    assert order.order_id not in {int(item["orderId"]) for item in listed}   # the list lags behind

    for age in (0.0, 15.0, 29.0):
        rig.clock.set_time(placed_at + age)
        report = life.reconciler.periodic(life.ctx.position_monitor.latest)
        assert report.orders_checked == 0 and report.orders_missing == []
    assert queries_for(rig.sim, order.order_id, placed_at) == []     # not even asked about
    assert life.alerts() == [] and order.status is OrderStatus.LIVE


@pytest.mark.parametrize("case", ["filled", "list_lag", "unknown"])
def test_row_o5_an_older_order_missing_from_the_list_is_queried(make_rig, case):
    lag = 120.0 if case == "list_lag" else 0.0
    rig = make_rig(exchange=ExchangeConfig(seed=7, pending_list_lag_seconds=lag))
    symbol = pick_legs(rig.sim)[0].symbol
    life = rig.lives.start([])
    life.wake()
    placed_at = rig.clock.now()
    if case == "unknown":                                            # an orderId the exchange never issued
        coid = build_client_order_id(PREFIX, 5, 0, Intent.OPEN, 1)
        life.ledger.restore([LedgerOrder(
            client_order_id=coid, trade_id="T000000005", trade_seq=5, leg_index=0, intent=Intent.OPEN, attempt=1,
            supersedes=None, symbol=symbol, side=BUY, qty=0.01, price=1.0, reduce_only=False,
            status=OrderStatus.LIVE, order_id=1990000000999999999, sent_at=placed_at, updated_at=placed_at,
        ).to_record()])
        order = life.ledger.get(coid)
    else:
        order = daemon_resting_bid(life, rig.outside, symbol, trade_seq=5)
    if case == "filled":
        assert rig.sim.exchange.force_fill(order.order_id, 0.01, price=order.price) == pytest.approx(0.01)
    rig.clock.set_time(placed_at + 31)

    reports = []
    for _check in range(3):
        reports.append(life.reconciler.periodic(life.ctx.position_monitor.latest))
        rig.clock.advance(60)

    assert reports[0].orders_checked == 1
    assert len(queries_for(rig.sim, order.order_id, placed_at)) >= 1
    if case == "filled":
        assert order.status is OrderStatus.FILLED and order.filled_qty == pytest.approx(0.01)
        assert order.avg_price == pytest.approx(order.price) and life.alerts() == []
    elif case == "list_lag":
        assert order.status is OrderStatus.LIVE and life.alerts() == []
        assert all(r.orders_missing == [] for r in reports)
    else:                                                            # by orderId, clientOrderId, history
        [alert] = life.alerts("order_vanished")                      # once, not at every check
        assert alert.level == "WARNING" and alert.detail["client_order_id"] == order.client_order_id
        assert [r.orders_vanished for r in reports] == [[order.client_order_id], [], []]
        assert order.status is OrderStatus.VANISHED and order.filled_qty == 0.0   # settled as not working
        assert [r for r in rig.sim.requests_for("query_order") if r.time_ms >= placed_at * 1000
                and str(r.params.get("clientOrderId")) == str(order.client_order_id)]
        assert [r for r in rig.sim.requests_for("order_history") if r.time_ms >= placed_at * 1000]
        assert life.alerts("order_missing") == []


def test_row_o6_every_page_of_open_orders_is_read(make_rig):
    rig = make_rig(exchange=ExchangeConfig(seed=7, max_open_orders=800))
    symbol = pick_legs(rig.sim)[0].symbol
    tick = rig.outside.tick_size(symbol)
    account = rig.sim.exchange.default_account
    orphan_coid = build_client_order_id(PREFIX, 88, 0, Intent.OPEN, 1)
    base = {"symbol": symbol, "qty": 0.01, "tradeSide": BUY, "tradeType": 1, "price": tick}
    orphan = rig.sim.exchange.create_order(account, {**base, "clientOrderId": orphan_coid})   # the oldest: last page
    foreign = [rig.sim.exchange.create_order(account, dict(base)) for _ in range(500)]
    started = rig.clock.now()

    life = rig.lives.start([])
    life.wake()

    pages = {str(r.params.get("page")) for r in rig.sim.requests_for("pending_orders") if r.time_ms >= started * 1000}
    assert {"1", "2"} <= pages
    assert life.reconciler.last_report.foreign_orders == [orphan_coid]   # found on the last page
    assert order_view_state(rig.sim, orphan) == 0                        # and left alone (row O2)
    assert sum(1 for o in rig.sim.exchange.orders() if int(o["orderId"]) in set(foreign) and o["state"] == 0) == 500


# =============================================================================================
# Quarantined store
# =============================================================================================


def nul_state_file(rig: Rig) -> Path:
    path = rig.lives.root / "state" / "trader.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00" * 65536)
    return path


def crashed_while_closing(rig: Rig) -> tuple[Any, list]:
    """A first life that crashed OPEN, then close orders resting on the book for every leg, recorded
    in the store as the daemon records them, and the trade rewritten to CLOSING."""
    trade = first_life_crashed_open(rig)
    with rig.lives.store() as store:
        used = {leg.index: max(int(o["attempt"]) for o in store.load_orders(trade.id) if o["leg_index"] == leg.index)
                for leg in trade.legs}
    closes = [place_as_daemon(rig.outside, trade_seq=trade.seq, leg=SeedLeg.of(leg), intent=Intent.CLOSE,
                              attempt=used[leg.index] + 1, side=SELL, qty=0.01, fill=False) for leg in trade.legs]
    with rig.lives.store() as store:
        for placed in closes:
            record_placed(store, placed, trade_seq=trade.seq, intent=Intent.CLOSE, attempt=used[placed.leg.index] + 1)
    rewrite_trade(rig, trade.id, state="CLOSING", exit_reason="max_hold_hours", exit_decided_at=rig.clock.now())
    return trade, closes


def test_row_o8_a_close_order_the_exchange_forgot_is_settled_vanished_and_closed_afresh(rig):
    trade, closes = crashed_while_closing(rig)
    assert rig.sim.exchange.forget_orders() >= 4                     # the exchange restarts without its orders
    rig.clock.advance(60)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    again.wake()
    startup = again.reconciler.last_report
    assert sorted(startup.orders_vanished) == sorted(p.coid for p in closes)
    assert all(again.ledger.get(p.coid).status is OrderStatus.VANISHED for p in closes)
    assert again.run(300, until=lambda: again.only_trade().state is TradeState.CLOSED)

    fresh = creates_since(rig.sim, restarted)
    assert fresh and all(is_reduce_only(r) and intent_of(r) in CLOSE_INTENTS for r in fresh)
    assert not {coid_of(r) for r in fresh} & {p.coid for p in closes}                  # new clientOrderIds
    assert all(rig.outside.position(leg.symbol) == 0.0 for leg in trade.legs)
    assert sorted(a.detail["client_order_id"] for a in again.alerts("order_vanished")) == sorted(p.coid for p in closes)
    again.run(300)
    assert len(again.alerts("order_vanished")) == 2                  # once each


@pytest.mark.parametrize("shows", ["position", "open_order", "recent_order"])
def test_row_q1_quarantine_with_anything_of_ours_on_the_exchange_starts_everything_paused(rig, shows):
    symbol = pick_legs(rig.sim)[0].symbol
    ours = build_client_order_id(PREFIX, 12, 0, Intent.OPEN, 1)
    order_id = None
    if shows == "position":
        rig.outside.crossing(symbol, BUY, 0.01)
    elif shows == "open_order":
        order_id = rig.outside.resting(symbol, BUY, 0.01, client_order_id=ours)
    else:
        rig.outside.cancel(rig.outside.resting(symbol, BUY, 0.01, client_order_id=ours))
    rig.clock.advance(3600)
    state_file = nul_state_file(rig)
    restarted = rig.clock.now()

    life = rig.lives.start([strangle_config()])
    assert life.ctx.store_quarantined is not None and life.ctx.store_quarantined.name.startswith("trader.db.corrupt.")
    assert state_file.exists() and life.ctx.store_quarantined.exists()
    life.run(60)

    [alert] = life.alerts("quarantine_start")
    assert alert.level == "CRITICAL"
    assert life.runner().is_paused and stored_runner(rig)["paused"] is True
    assert creates_since(rig.sim, restarted) == []
    if shows == "position":                                          # external until an operator decides
        assert verdicts(life.reconciler.last_report)[symbol] == (0.0, 0.01, VERDICT_EXTERNAL)
        assert rig.outside.position(symbol) == pytest.approx(0.01) and cancels_since(rig.sim, restarted) == []
    elif shows == "open_order":                                      # named, left alone (O2)
        assert order_view_state(rig.sim, order_id) == 0 and str(ours) in alert.message
        assert cancels_since(rig.sim, restarted) == [] and life.alerts("prefix_conflict") == []


def test_row_q2_quarantine_with_nothing_of_ours_starts_normally(rig, caplog):
    symbol = pick_legs(rig.sim)[0].symbol
    foreign = rig.outside.resting(symbol, BUY, 0.01)                 # somebody else's order only
    rig.clock.advance(600)
    nul_state_file(rig)
    restarted = rig.clock.now()
    caplog.set_level(logging.WARNING, logger="prefix_ownership")

    life = rig.lives.start([strangle_config()])
    trade = life.run_until_open(120)

    assert life.ctx.store_quarantined is not None
    assert life.alerts("quarantine_start") == [] and not life.runner().is_paused
    assert any("exchange shows nothing of ours: normal start" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    assert trade.state is TradeState.OPEN and creates_since(rig.sim, restarted)
    assert order_view_state(rig.sim, foreign) == 0


def test_row_q3_the_trade_sequence_restarts_above_any_of_our_ids_in_90_days_of_history(make_rig):
    rig = make_rig(start=START - 10 * 86400)
    symbol = pick_legs(rig.sim)[0].symbol
    old = build_client_order_id(PREFIX, 4242, 1, Intent.CLOSE, 17)
    rig.outside.cancel(rig.outside.resting(symbol, BUY, 0.01, client_order_id=old))   # ten days ago
    rig.clock.set_time(START)
    nul_state_file(rig)

    life = rig.lives.start([strangle_config()])
    trade = life.run_until_open(120)

    assert life.store.counter("trade_seq") == 4242 + 1000 + 1
    assert trade.seq == 4242 + 1000 + 1 and trade.id == "T000005243"
    sent = {parse_client_order_id(coid_of(r)).trade_seq for r in creates_since(rig.sim, START)}
    assert sent == {5243}
    assert life.alerts("quarantine_start") == [] and not life.runner().is_paused   # nothing recent: normal start


# =============================================================================================
# RFQ accepts
# =============================================================================================


def rfq_strangle():
    return strangle_config(qty=0.3, execution_mode="rfq", cooldown_seconds=3600.0,
                           rfq_params=RFQParams(timeout_seconds=60.0, min_improvement_pct=None, open_fallback=None))


def block_lookups_since(sim: Any, since: float) -> int:
    return sum(1 for r in sim.requests_for("blocktrade_order_list") if r.time_ms >= since * 1000)


def died_after_the_accept(rig: Rig) -> tuple[Any, TradeLifecycle]:
    """An RFQ strangle's life that dies right after the exchange executed its accept, before
    the answer was read; returns (that life, not crashed yet, and its trade)."""
    life = rig.lives.start([rfq_strangle()])
    accept = life.ctx.http.rfq_accept

    def accept_then_die(*args: Any, **kwargs: Any) -> Any:
        accept(*args, **kwargs)                                      # the exchange executed it...
        raise Killed("SIGKILL before the answer was read")          # ...and the process died

    life.ctx.http.rfq_accept = accept_then_die
    with pytest.raises(Killed):
        life.run(120)
    trade = life.only_trade()
    assert life.store.events(BLOCK_ACCEPT_EVENT)                     # recorded before it was sent
    return life, trade


def test_row_r1_an_accept_recorded_before_a_crash_is_adopted_from_the_block_trade_list(rig):
    life, trade = died_after_the_accept(rig)
    assert trade.state is TradeState.OPENING and life.ledger.orders(trade.id) == []   # no fill recorded
    life.crash()
    held = {leg.symbol: rig.outside.position(leg.symbol) for leg in trade.legs}
    assert held == {leg.symbol: pytest.approx(0.3) for leg in trade.legs}            # the accept happened
    rig.clock.advance(120)
    restarted = rig.clock.now()

    again = rig.lives.start([rfq_strangle()])
    again.wake()
    assert again.reconciler.last_report.block_fills_adopted == 2
    assert {v for _o, _e, v in verdicts(again.reconciler.last_report).values()} == {VERDICT_OK}
    assert again.run(30, until=lambda: again.only_trade().state is TradeState.OPEN)
    recorded = again.ledger.orders(trade.id)
    blocks = rig.sim.exchange.blocktrade_order_list(rig.sim.exchange.default_account, {})["list"]
    block_legs = {leg["instrumentName"]: leg for record in blocks for leg in record["legs"]}
    assert {o.symbol: (o.filled_qty, o.order_id) for o in recorded} == {
        symbol: (pytest.approx(0.3), int(block_legs[symbol]["orderId"])) for symbol in held}
    assert creates_since(rig.sim, restarted) == []
    again.crash()

    third = rig.lives.start([rfq_strangle()])                        # idempotent by the exchange orderId
    third.wake()
    assert third.reconciler.last_report.block_fills_adopted == 0
    assert len(third.ledger.orders(trade.id)) == 2
    assert [leg.open_filled for leg in third.only_trade().legs] == [pytest.approx(0.3)] * 2


def seed_close_accept(rig: Rig, trade: Any, age: float) -> None:
    """An RFQ close accept recorded ``age`` seconds ago for a request the exchange has no block trade for."""
    with rig.lives.store() as store:
        store.append_event(BLOCK_ACCEPT_EVENT, {
            "trade_id": trade.id, "trade_seq": trade.seq, "intent": int(Intent.CLOSE), "request_id": "987654321",
            "quote_id": "123456789", "legs": [[leg.index, leg.symbol, SELL] for leg in trade.legs]},
            rig.clock.now() - age)


def test_row_r2_a_recent_accept_without_its_block_trade_defers_its_symbols(rig):
    trade = first_life_crashed_open(rig)
    seed_close_accept(rig, trade, age=10.0)
    for leg in trade.legs:                                           # what an accepted close would leave
        rig.outside.flatten(leg.symbol)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    again.wake()
    startup = again.reconciler.last_report
    assert {v for _o, _e, v in verdicts(startup).values()} == {VERDICT_DEFERRED}
    assert startup.external_closes == [] and again.alerts("external_close") == []
    assert block_lookups_since(rig.sim, restarted) == 1

    again.run(55)                                                    # the first periodic check: still < 60 s
    assert again.only_trade().state is TradeState.OPEN and not again.runner().is_paused
    assert again.alerts("suspect_positions_read") == []
    assert again.run(180, until=lambda: bool(again.alerts("suspect_positions_read")))
    assert block_lookups_since(rig.sim, restarted) == 2              # looked up again, then given up (R3)
    # No block trade and no fill: the flat positions are a suspect read (S6), never a close.
    assert again.only_trade().state is TradeState.OPEN and again.alerts("external_close") == []
    assert creates_since(rig.sim, restarted) == []


@pytest.mark.parametrize("positions", ["intact", "gone"])
def test_row_r3_an_accept_with_no_block_trade_after_60_s_did_not_happen(rig, positions):
    trade = first_life_crashed_open(rig)
    seed_close_accept(rig, trade, age=90.0)
    if positions == "gone":
        for leg in trade.legs:
            rig.outside.flatten(leg.symbol)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    again.wake()
    startup = again.reconciler.last_report
    assert startup.block_fills_adopted == 0 and len(again.ledger.orders(trade.id)) == 2   # no fill invented
    expected = VERDICT_OK if positions == "intact" else VERDICT_SHORTFALL
    assert {v for _o, _e, v in verdicts(startup).values()} == {expected}                 # judged, not deferred
    again.run(130)
    assert block_lookups_since(rig.sim, restarted) == 1              # not looked up again
    reloaded = again.only_trade()
    assert reloaded.state is TradeState.OPEN and [leg.net_qty for leg in reloaded.legs] == [0.01, 0.01]
    if positions == "intact":
        assert again.alerts() == []
    else:                                                            # gone without a fill: suspect (S6)
        assert [a.kind for a in again.alerts()] == ["suspect_positions_read"]


# =============================================================================================
# Incidents (BEHAVIOUR.md section 8) about restarts and reconciliation
# =============================================================================================


def daemon_env(rig: Rig) -> dict[str, str]:
    return {
        "TRADING_ENVIRONMENT": "sim", "COINCALL_BASE_URL": rig.sim.base_url,
        "COINCALL_API_KEY_SIM": rig.sim.api_key, "COINCALL_API_SECRET_SIM": rig.sim.api_secret,
        "STATE_DIR": str(rig.lives.root / "state"), "LOG_DIR": str(rig.lives.root / "logs"),
        "POLL_INTERVAL_SECONDS": "10",
    }


def run_main(rig: Rig, *argv: str) -> int:
    """``python main.py ARGV`` in-process, against the test's simulator, on its clock."""
    return main_module.main(list(argv), clock=rig.clock, env=daemon_env(rig), dotenv_path=None,
                            strategies=[strangle_config])


def alerts_file(rig: Rig) -> list[dict]:
    path = rig.lives.root / "logs" / "alerts.log"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_incident_18_missing_position_at_restart_keeps_the_daemon_alive_and_the_trade_managed(rig):
    """BEHAVIOUR.md 8 row 18, as issue 9 (finding 1) changed it: a position removed while the daemon
    was down, with no fill to say who closed it, is a suspect read (RECOVERY.md S6), not a close."""
    assert run_main(rig, "--run-for", "60", "--strategy", STRATEGY) == 0
    with rig.lives.store() as store:
        [trade] = store.load_trades()
    assert trade["state"] == "OPEN"
    for leg in trade["legs"]:                                        # removed, not expired
        rig.outside.flatten(leg["symbol"])
    rig.clock.advance(300)
    restarted = rig.clock.now()

    assert run_main(rig, "--run-for", "300", "--strategy", STRATEGY) == 0   # alive to the end of the run

    kept = stored_trade(rig, trade["id"])
    assert kept["state"] == "OPEN" and kept["exit_reason"] is None  # kept, with its exit rules
    assert not stored_runner(rig).get("paused")
    assert [a for a in alerts_file(rig) if a["kind"] == "suspect_positions_read" and a["level"] == "CRITICAL"]
    assert [a for a in alerts_file(rig) if a["kind"] == "external_close"] == []
    assert creates_since(rig.sim, restarted) == []                   # entries held: no new trade either


def test_incident_16_nul_state_file_is_quarantined_and_runners_start_paused(rig):
    rig.outside.crossing(pick_legs(rig.sim)[0].symbol, BUY, 0.01)    # the exchange shows a position
    state_file = nul_state_file(rig)
    rig.clock.advance(60)
    started = rig.clock.now()

    assert run_main(rig, "--run-for", "60", "--strategy", STRATEGY) == 0

    corrupt = list(state_file.parent.glob("trader.db.corrupt.*"))
    assert len(corrupt) == 1 and corrupt[0].read_bytes() == b"\x00" * 65536
    kinds = {a["kind"] for a in alerts_file(rig) if a["level"] == "CRITICAL"}
    assert {"state_quarantined", "quarantine_start"} <= kinds
    assert stored_runner(rig)["paused"] is True
    assert creates_since(rig.sim, started) == []


class PendingListSpy:
    """Wraps the client's ``all_pending_orders`` to note which working orders of ours a read missed.

    It only observes: the answer goes back to the reconciler unchanged.
    """

    def __init__(self, life: Any, young_seconds: float) -> None:
        self.life = life
        self.young_seconds = young_seconds
        self.real = life.ctx.http.all_pending_orders
        self.missed_young: list[int] = []
        life.ctx.http.all_pending_orders = self

    def __call__(self, *args: Any, **kwargs: Any) -> list:
        listed = self.real(*args, **kwargs)
        ids = {int(item["orderId"]) for item in listed if isinstance(item, dict) and item.get("orderId")}
        now = self.life.clock.now()
        for order in self.life.ledger.live_orders():
            if order.status is OrderStatus.LIVE and order.order_id not in ids \
                    and now - order.sent_at < self.young_seconds:
                self.missed_young.append(order.client_order_id)
        return listed


def test_incident_38_lagging_open_orders_list_raises_no_missing_alert(make_rig):
    """The open-orders list shows new orders 20 s late; 50 orders over an hour, each one fresh at a check."""
    rig = make_rig(exchange=ExchangeConfig(seed=7, pending_list_lag_seconds=20.0))
    symbols = [leg.symbol for leg in pick_legs(rig.sim)]
    life = rig.lives.start([])
    life.wake()                                                      # start-up; periodic checks every 6th wake
    spy = PendingListSpy(life, young_seconds=20.0)
    placed, reports = [], []
    for wake in range(1, 361):                                       # one hour of 10-second wakes
        life.wake()
        report = life.reconciler.last_report
        if not reports or report is not reports[-1]:
            reports.append(report)
        if wake % 6 == 5 and len(placed) < 55:                       # 10 s before the next check
            placed.append(daemon_resting_bid(life, rig.outside, symbols[len(placed) % 2], trade_seq=100 + len(placed)))
        for order in placed:                                         # each order works for about 70 s
            if order.status is OrderStatus.LIVE and rig.clock.now() - order.sent_at >= 70:
                life.ledger.cancel(order)

    assert len(placed) >= 50 and rig.clock.now() - placed[0].sent_at >= 3500
    assert len(set(spy.missed_young)) >= 50                          # each was missing from a list read
    assert len(reports) >= 60
    for order in placed:                                             # and none was queried while fresh
        assert [r for r in queries_for(rig.sim, order.order_id, order.sent_at)
                if r.time_ms < (order.sent_at + 30) * 1000] == []
    assert life.alerts("order_missing") == [] and all(r.orders_missing == [] for r in reports)
    assert all(r.foreign_orders == [] for r in reports)
    assert all(order.status is OrderStatus.CANCELED for order in placed[:-2])


def _every_order_of_ours_is_reconciled(rig: Rig) -> None:
    """25 orders of ours the ledger knows and 25 it does not, all open at the restart."""
    symbols = [leg.symbol for leg in pick_legs(rig.sim)]
    known, orphans = [], []
    with rig.lives.store() as store:
        for n in range(25):
            seq = 500 + n
            leg = SeedLeg(0, symbols[n % 2], "C", 0.0, 0, BUY, 0.01)
            placed = place_as_daemon(rig.outside, trade_seq=seq, leg=leg, intent=Intent.OPEN, attempt=1, side=BUY,
                                     qty=0.01, fill=False)
            record_placed(store, placed, trade_seq=seq, intent=Intent.OPEN, attempt=1)
            known.append(placed)
            coid = build_client_order_id(PREFIX, 700 + n, 0, Intent.OPEN, 1)
            orphans.append((coid, rig.outside.resting(symbols[n % 2], BUY, 0.01, client_order_id=coid)))
    rig.clock.advance(60)

    life = rig.lives.start([])
    life.wake()

    startup = life.reconciler.last_report
    assert sorted(startup.foreign_orders) == sorted(coid for coid, _ in orphans)   # every page, every one
    assert all(order_view_state(rig.sim, order_id) == 0 for _, order_id in orphans)  # not ours to cancel (O2)
    assert len(life.alerts("store_behind")) == 1
    assert all(order_view_state(rig.sim, p.order_id) == 0 for p in known)
    assert startup.orders_missing == [] and life.alerts("order_missing") == []
    life.run(130)
    assert life.reconciler.last_report.orders_checked == 0           # all listed: none needed a query
    assert all(life.ledger.get(p.coid).status is OrderStatus.LIVE for p in known)


def _an_order_held_in_canceling_then_filled_counts_and_is_not_replaced(rig: Rig) -> None:
    """A stray close order cancelled at the restart stays in state 5 for two polls, then fills."""
    trade, closes = crashed_while_closing(rig)
    rig.sim.exchange.faults.hold_canceling_seconds = 120.0
    rig.clock.advance(60)
    restarted = rig.clock.now()

    again = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    again.wake()                                                     # the stray close orders are cancelled
    assert len(cancels_since(rig.sim, restarted)) == 2
    again.wake(2)                                                    # two polls, both still in state 5
    assert all(order_view_state(rig.sim, p.order_id) == 5 for p in closes)
    assert all(again.ledger.get(p.coid).status is OrderStatus.CANCEL_REQUESTED for p in closes)
    assert again.only_trade().state is TradeState.CLOSING and creates_since(rig.sim, restarted) == []
    for placed in closes:                                            # then they fill after all
        assert rig.sim.exchange.force_fill(placed.order_id, 0.01) == pytest.approx(0.01)
    assert again.run(60, until=lambda: again.only_trade().state is TradeState.CLOSED)

    closed = again.only_trade()
    assert all(leg.close_filled == pytest.approx(0.01) for leg in closed.legs)
    assert creates_since(rig.sim, restarted) == []                   # no replacement, early or late
    assert all(rig.outside.position(leg.symbol) == 0.0 for leg in trade.legs)


def test_incident_39_all_pages_read_and_canceling_is_not_final(make_rig):
    _every_order_of_ours_is_reconciled(make_rig(root="pages"))
    _an_order_held_in_canceling_then_filled_counts_and_is_not_replaced(make_rig(root="canceling"))
