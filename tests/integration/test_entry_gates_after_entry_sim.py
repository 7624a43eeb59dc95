"""Account gates of several strategies are not judged on one snapshot taken before the wake's
entries (audit entry2 B2; BEHAVIOUR.md 5 gate 10).

Strategies ``a`` and ``b`` each buy 0.5 of a 0.5-delta call (about +0.25 delta) under
``max_account_delta(0.2)``. Both runners tick on the first poll's snapshot, read before ``a``'s
trade existed: ``b`` used to pass on delta 0 and open too, leaving the account at +0.5. Now
``b`` waits until a snapshot shows ``a``'s trade, and then refuses. A strategy whose entry
rules read no account figure still enters in the same wake as ``a``.
"""
from __future__ import annotations

import pytest

from clock import SimulatedClock
from conditions import max_account_delta, time_window
from option_selection import LegSpec
from strategy import StrategyConfig, max_hold_hours
from tests.integration.restart_rig import QUICK, START, Lives

LIMIT = 0.2


@pytest.fixture
def lives(sim_factory, tmp_path):
    started = Lives(sim_factory(clock=SimulatedClock(start=START, speed=0)), tmp_path)
    yield started
    started.close_all()


def long_call(name: str, entry_conditions: list) -> StrategyConfig:
    return StrategyConfig(
        name=name,
        legs=[LegSpec("C", 1, 0.5, {"type": "delta", "value": 0.5}, {"dte": "next"})],   # ~ +0.25 BTC delta
        entry_conditions=entry_conditions,
        exit_conditions=[max_hold_hours(24)],
        execution_mode="limit", max_concurrent_trades=1, check_interval_seconds=1.0,
        execution_params=QUICK,
    )


def test_the_second_strategy_waits_for_a_snapshot_with_the_first_trade_and_refuses_on_its_delta(lives):
    configs = [long_call("a", [max_account_delta(LIMIT)]), long_call("b", [max_account_delta(LIMIT)]),
               long_call("c", [time_window(0, 24)])]
    life = lives.start(configs)

    life.run(120)

    trades = life.trades()
    opened = [(t.strategy, t.id, t.state.value, t.created_at) for t in trades]
    delta = life.ctx.account_manager.snapshot().net_delta
    assert sorted(t.strategy for t in trades) == ["a", "c"], (
        f"account delta now {delta:+.3f} with max_account_delta({LIMIT}): {opened}")
    first, timed = (next(t for t in trades if t.strategy == name) for name in ("a", "c"))
    assert timed.created_at == first.created_at              # no account rule: the same wake
    b = next(runner for runner in life.runners if runner.name == "b")
    assert b.no_entry_reason == "entry condition entry_conditions[0]:max_account_delta(limit=0.2) not met"
