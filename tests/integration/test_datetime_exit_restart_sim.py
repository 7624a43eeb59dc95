"""A ``utc_datetime_exit`` whose moment passes while the daemon is down closes its trade at restart.

Before: the restarted runner refused the strategy (its deadline is in the past, incident 41),
so the daemon exited with code 2 and the trade the rule should have closed stayed open on the
exchange with nothing managing it, nor any other trade (audit of 2026-12-07). Now a past
deadline still refuses a strategy with no open trade; with one, the runner starts, the exit
fires at once, and the strategy takes no new entry until its configuration is fixed.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

import app
from conditions import utc_datetime_exit
from errors import ConfigError
from tests.integration.restart_rig import START, strangle_config
from tests.integration.test_restart_reconciliation import make_rig, rig  # noqa: F401  (fixtures)
from trade_lifecycle import TradeState

DEADLINE = datetime.fromtimestamp(START + 3600, tz=timezone.utc)     # 10:00 UTC on the start day


def closing_at_ten():
    return replace(strangle_config(qty=0.01, cooldown_seconds=60.0), exit_conditions=[utc_datetime_exit(DEADLINE)])


def start_runners(life, configs):
    runners = app.start_runners(configs, life.ctx, strict=True)
    life.runners = runners
    life.ctx.reconciler.attach_runners(runners)
    for runner in runners:
        life.ctx.position_monitor.register(runner)
    return runners


def test_a_restart_past_the_deadline_closes_the_trade_and_takes_no_new_entry(rig):
    life = rig.lives.start([closing_at_ten()])
    trade = life.run_until_open()
    life.crash()                                   # dies at about 09:01, before its 10:00 exit
    rig.clock.advance(2 * 3600)                    # back at about 11:01
    again = rig.lives.start([])
    start_runners(again, [closing_at_ten()])
    assert again.run(600, until=lambda: again.lifecycle.get(trade.id).state is TradeState.CLOSED)
    assert again.lifecycle.get(trade.id).exit_reason.startswith("utc_datetime_exit")
    assert all(rig.outside.position(leg.symbol) == 0 for leg in trade.legs)
    again.run(1800)                                # cooldown long past: still no new trade
    assert [t.id for t in again.trades()] == [trade.id]


def test_a_past_deadline_without_an_open_trade_still_refuses_the_start(rig):
    rig.clock.advance(3 * 3600)
    life = rig.lives.start([])
    with pytest.raises(ConfigError, match="already in the past"):
        start_runners(life, [closing_at_ten()])
