"""A trade the kill switch was closing goes on with kill orders after a restart (audit 2026-12-07).

Kill mode (kill intents 7/8, the urgent profile, no breaker) used to live in memory and came
back at a restart only from the exit reason ``kill_switch``. An UNWINDING trade has no exit
reason, and an exit decided before the kill keeps its own, so such a trade restarted in its
ordinary mode: its first round after the start-up hold went out as an unwind or close with the
strategy's own engine, before the kill command re-applied kill mode later in the same wake.
``force_close`` now records the flag in the trade (``KILL_MODE_KEY``), and ``recover`` reads it.
"""
from __future__ import annotations

import pytest

from clock import SimulatedClock
from commands import KIND_KILL, CommandProcessor
from order_ledger import Intent, OrderStatus
from persistence import COMMAND_ACTIVE
from tests.integration.restart_rig import (
    BUY,
    SELL,
    START,
    Lives,
    Outside,
    creates_since,
    intent_of,
    pick_legs,
    place_as_daemon,
    record_placed,
    seed_trade,
    strangle_config,
)
from trade_lifecycle import EXIT_REASON_KILL, KILL_MODE_KEY, TradeState

KILL_INTENTS = {int(Intent.KILL), int(Intent.KILL) + 1}


@pytest.fixture
def parts(sim_factory, signed_request_for, tmp_path):
    clock = SimulatedClock(start=START, speed=0)
    sim = sim_factory(clock=clock)
    lives = Lives(sim, tmp_path)
    yield sim, clock, lives, Outside(sim, signed_request_for(sim))
    lives.close_all()


def seed_active_kill(store, trade_id: str, now: float) -> None:
    request = {"strategy": None, "all_positions": False}
    command_id = store.add_command(KIND_KILL, request)
    store.update_command(command_id, COMMAND_ACTIVE, {"applied_at": now, "request": request,
                                                      "paused": ["recon_strangle"], "trades": [trade_id]})


@pytest.mark.parametrize("state", ["UNWINDING", "PENDING_CLOSE_EARLIER_REASON"])
def test_a_killed_trade_goes_on_with_kill_orders_after_a_restart(parts, state):
    sim, clock, lives, outside = parts
    legs = pick_legs(sim)
    opened = place_as_daemon(outside, trade_seq=1, leg=legs[0], intent=Intent.OPEN, attempt=1, side=BUY,
                             qty=0.01, fill=True)
    # The previous life's last kill round on leg 0 ended unfilled (cancelled); it crashed before
    # sending the next round, so no order of the trade is working at the restart.
    last_kill = place_as_daemon(outside, trade_seq=1, leg=legs[0], intent=Intent.KILL, attempt=2, side=SELL,
                                qty=0.01, fill=False)
    outside.cancel(last_kill.order_id)
    with lives.store() as store:
        flag = {KILL_MODE_KEY: True}   # what force_close records (the next test)
        if state == "UNWINDING":
            trade_id = seed_trade(store, 1, legs[:1], TradeState.UNWINDING, created_at=clock.now(), metadata=flag)
        else:
            trade_id = seed_trade(store, 1, legs[:1], TradeState.PENDING_CLOSE, created_at=clock.now(),
                                  opened_at=clock.now(), exit_reason="max_hold_hours(hours=24.0)", metadata=flag)
        record_placed(store, opened, trade_seq=1, intent=Intent.OPEN, attempt=1, status=OrderStatus.FILLED,
                      view=outside.query(opened.order_id))
        record_placed(store, last_kill, trade_seq=1, intent=Intent.KILL, attempt=2, status=OrderStatus.CANCELED,
                      view=outside.query(last_kill.order_id))
        seed_active_kill(store, trade_id, clock.now())
    clock.advance(60)
    restarted = clock.now()

    life = lives.start([strangle_config(cooldown_seconds=3600.0)])
    life.ctx.position_monitor.register(CommandProcessor(life.ctx, life.runners))   # as app.run_locked
    restored = life.lifecycle.get(trade_id)
    life.run(600, until=lambda: not restored.is_active)

    intents = [intent_of(record) for record in creates_since(sim, restarted)]
    assert intents, "nothing was sent after the restart"
    assert set(intents) <= KILL_INTENTS, f"{state}: orders after the restart had intents {intents}"
    assert restored.state is (TradeState.FAILED if state == "UNWINDING" else TradeState.CLOSED)   # unwound


def test_force_close_by_the_kill_records_kill_mode_in_the_stored_trade(parts):
    sim, clock, lives, outside = parts
    legs = pick_legs(sim)
    opened = place_as_daemon(outside, trade_seq=1, leg=legs[0], intent=Intent.OPEN, attempt=1, side=BUY,
                             qty=0.01, fill=True)
    with lives.store() as store:
        trade_id = seed_trade(store, 1, legs[:1], TradeState.OPEN, created_at=clock.now(), opened_at=clock.now())
        record_placed(store, opened, trade_seq=1, intent=Intent.OPEN, attempt=1, status=OrderStatus.FILLED,
                      view=outside.query(opened.order_id))
    life = lives.start([strangle_config(cooldown_seconds=3600.0)])
    life.run(60, until=lambda: life.lifecycle.hold_reason is None)

    assert life.lifecycle.force_close(trade_id, EXIT_REASON_KILL)

    stored = [t for t in life.ctx.store.load_trades() if t["id"] == trade_id]
    assert stored and stored[0]["metadata"].get(KILL_MODE_KEY) is True
