"""The frozen-index gate holds at leg selection too (docs/BEHAVIOUR.md 7.2, incident 14).

The gate ran before leg selection, whose own index read can be the one that finds the index
frozen: a trade was created on it in the same tick. The real ``resolve_legs`` runs here.
"""
from __future__ import annotations

from clock import SimulatedClock
from conditions import max_hold_hours
from market_data import MarketData
from option_selection import LegSpec
from strategy import StrategyConfig
from tests.unit.test_market_data import EXP1, START, FakeClient
from tests.unit.test_runner_gates import Harness


def test_no_trade_is_created_on_an_index_that_the_selection_read_found_frozen():
    clock = SimulatedClock(start=START, speed=0)
    client = FakeClient(clock)
    market = MarketData(client, clock)
    cfg = StrategyConfig(name="frozen", legs=[LegSpec("C", 1, 0.1, {"type": "closestStrike", "value": 0})],
                         exit_conditions=[max_hold_hours(1)], check_interval_seconds=1.0, execution_mode="limit")
    h = Harness(cfg, clock=clock, start=START)
    h.ctx.market_data = market
    # No ask anywhere: every check resolves (reading a fresh index) and fails selection.
    for entry in client.chains[EXP1]:
        entry["callOption"]["ask"] = 0
    for _ in range(6):                       # t = 0, 10, ..., 50: index unchanged at 70000
        h.tick()
        h.advance(10)
    assert h.created == [] and not market.index_frozen_for("BTC")
    for entry in client.chains[EXP1]:        # the book comes back; the index still has not moved
        entry["callOption"]["ask"] = 130
    h.tick()                                 # t = 60
    frozen_now = market.index_frozen_for("BTC")
    assert frozen_now, "precondition: the index counts as frozen after this tick's reads"
    assert h.created == [], ("a trade was created in the very tick whose index read found the index "
                             "frozen (entry gate checked the frozen flag before the last read)")
