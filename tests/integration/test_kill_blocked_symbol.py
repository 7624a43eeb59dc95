"""A kill or close whose held leg is on a blocked symbol (audit 2026-12-07).

A symbol block (an opposite-side reconciliation verdict, an L3 block kept over a restart)
means nothing is sent to that symbol until an operator has looked. Close rounds leave such a
leg out; before, they did so silently: a kill stayed active for ever with no alert naming the
block, and the only lift (``resume``) also lifted the kill's pause, so the strategy opened new
trades while the kill was still closing. Now the stall raises CRITICAL ``close_blocked`` (every
15 minutes) naming the trade, the symbol, the reason and the command, and a resume during a
kill lifts the blocks but keeps the kill's pause.
"""
from __future__ import annotations

import pytest

from clock import SimulatedClock
from commands import KIND_KILL, KIND_RESUME, CommandProcessor
from option_selection import strangle
from order_ledger import parse_client_order_id
from persistence import COMMAND_DONE
from tests.integration.restart_rig import START, Lives, creates_since, intent_of, strangle_config
from tests.integration.test_lifecycle_sim import Rig

OPEN_INTENTS = (1, 2)


@pytest.fixture
def rig(sim):
    built = Rig(sim)
    yield built
    built.close()


def test_a_kill_stuck_on_a_blocked_symbol_alerts_every_15_minutes_naming_the_block_and_the_fix(rig):
    trade = rig.open(strangle(0.1))
    call = trade.legs[0].symbol
    assert rig.ledger.block_symbol(call, "position on the exchange is -0.1, opposite to our +0.1")
    before = len(rig.alerts.recent(1000))

    assert rig.manager.kill_all() == [trade.id]
    rig.drive(3600)

    blocked = [a for a in rig.alerts.recent(1000)[before:] if a.kind == "close_blocked"]
    assert trade.is_active and trade.legs[0].net_qty > 0          # nothing goes to a blocked symbol
    assert not any(r.params["symbol"] == call for r in rig.creates(0) if parse_client_order_id(
        int(r.params["clientOrderId"])).intent >= 3)
    assert 4 <= len(blocked) <= 5                                  # an hour: every 15 minutes, not every tick
    assert all(a.level == "CRITICAL" for a in blocked)
    message = blocked[0].message
    assert trade.id in message and call in message and "opposite to our +0.1" in message
    assert f"python main.py resume {trade.strategy}" in message


@pytest.fixture
def parts(sim_factory, tmp_path):
    clock = SimulatedClock(start=START, speed=0)
    sim = sim_factory(clock=clock)
    lives = Lives(sim, tmp_path)
    yield sim, clock, lives
    lives.close_all()


def test_a_resume_during_the_kill_lifts_the_block_keeps_the_kill_pause_and_the_kill_finishes(parts):
    sim, clock, lives = parts
    life = lives.start([strangle_config()])
    life.ctx.position_monitor.register(CommandProcessor(life.ctx, life.runners))   # as app.run_locked
    trade = life.run_until_open()
    call = trade.legs[0].symbol
    life.ledger.block_symbol(call, f"position on {call} is -0.01, opposite to our +0.01")
    kill_id = life.store.add_command(KIND_KILL, {"strategy": None, "all_positions": False})
    life.run(1800)
    assert trade.is_active and life.store.command(kill_id)["status"] != COMMAND_DONE
    assert any(a.kind == "close_blocked" and call in a.message for a in life.alerts())

    resumed_at = clock.now()
    resume_id = life.store.add_command(KIND_RESUME, {"strategy": None})
    life.run(900, until=lambda: life.store.command(kill_id)["status"] == COMMAND_DONE)

    resume = life.store.command(resume_id)
    assert resume["status"] == COMMAND_DONE
    assert resume["result"]["unblocked"] == [call] and resume["result"]["resumed"] == []
    assert resume["result"]["kept_paused"] == [life.runner().name]
    assert life.runner().is_paused                                 # the kill's pause stays
    assert life.store.command(kill_id)["status"] == COMMAND_DONE and not trade.is_active
    life.run(600)
    opens = [r for r in creates_since(sim, resumed_at) if intent_of(r) in OPEN_INTENTS]
    assert opens == [], "a resume during a kill re-enabled entries"

    again = life.store.add_command(KIND_RESUME, {"strategy": None})   # the kill is done: now it resumes
    life.run(60, until=lambda: life.store.command(again)["status"] == COMMAND_DONE)
    assert life.store.command(again)["result"]["resumed"] == [life.runner().name]
    assert not life.runner().is_paused
