"""No entry on a structure with a blocked leg (audit entry2 B1; BEHAVIOUR.md 5 gate 10, 6.1 symbol blocks).

A symbol blocked "until an operator has looked" (here with the call ``rfq.block_wrong_side`` makes
after a block fill on the wrong side, which pauses no strategy) used to get new entries: the
runner never asked the ledger. In RFQ mode nothing refused it at all (the block trade put the
position on the blocked put, which the block then kept out of every close); in limit mode the
call's order went out and filled, the put was refused, and the call was unwound at a loss, at
every check until the daily failure pause, every day. Now the runner creates no trade.
"""
from __future__ import annotations

import pytest

from clock import SimulatedClock
from option_selection import resolve_legs
from rfq import RFQParams
from strategy import StrategyConfig
from tests.integration.restart_rig import START, DaemonLife, Lives, strangle_config
from trade_execution import ExecutionParams

WHY = "RFQ R1 (trade T000000009) filled SELL 0.3 but we asked to BUY: check the position on the exchange, then resume"


@pytest.fixture
def parts(sim_factory, tmp_path):
    clock = SimulatedClock(start=START, speed=0)
    sim = sim_factory(clock=clock)
    lives = Lives(sim, tmp_path)
    yield sim, lives
    lives.close_all()


def block_the_put(life: DaemonLife, config: StrategyConfig) -> str:
    """Block the put the strategy would choose now, as ``rfq.block_wrong_side`` does."""
    put = next(leg.symbol for leg in resolve_legs(config.legs, life.ctx.market_data) if leg.symbol.endswith("-P"))
    assert life.ledger.block_symbol_durably(put, WHY)
    return put


def test_an_rfq_entry_on_a_blocked_symbol_creates_no_trade_and_no_rfq(parts):
    sim, lives = parts
    config = strangle_config(qty=0.3, execution_mode="rfq", cooldown_seconds=3600.0,
                             rfq_params=RFQParams(timeout_seconds=60.0, min_improvement_pct=None,
                                                  open_fallback=None))
    life = lives.start([config])
    put = block_the_put(life, config)

    life.run(180)

    assert life.trades() == []
    assert sim.requests_for("rfq_create") == [] and sim.requests_for("rfq_accept") == []
    position = life.ctx.account_manager.snapshot().get_position(put)
    assert position is None or position.qty == 0
    runner = life.runners[0]
    assert not runner.is_paused
    assert runner.no_entry_reason is not None and put in runner.no_entry_reason
    assert runner.no_entry_reason.startswith("symbol blocked")


def test_a_limit_entry_on_a_blocked_symbol_sends_no_order_and_fails_nothing(parts, caplog):
    sim, lives = parts
    touch = ExecutionParams(fill_timeout_seconds=10.0, max_requote_rounds=5, grace_seconds=2.0,
                            price_wait_seconds=20.0)
    config = strangle_config(qty=0.1, execution_params=touch, cooldown_seconds=0.0)
    life = lives.start([config])
    put = block_the_put(life, config)

    with caplog.at_level("INFO", logger="strategy"):
        life.run(300)

    assert life.trades() == []
    assert sim.requests_for("create_order") == []
    runner = life.runners[0]
    assert not runner.is_paused and runner.status()["failed_today"] == 0
    said = [r for r in caplog.records if r.name == "strategy" and "no entry: symbol blocked" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING" and put in said[0].getMessage()
