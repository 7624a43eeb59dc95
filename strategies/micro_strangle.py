"""micro_strangle: buy a tiny strangle, hold it briefly, sell it back.

Why it exists: it is the smallest complete round trip the daemon can make (resolve by
delta, open with limit orders, value the position, close on an exit), so a paper run of a
few simulated minutes shows every stage in the log. The size (0.01 BTC per leg) keeps the
risk to a few dollars of premium even on a real account.
"""
from __future__ import annotations

from option_selection import strangle
from strategy import (
    StrategyConfig,
    max_hold_hours,
    max_loss_pct,
    min_available_margin_pct,
    profit_target_pct,
)
from trade_execution import ExecutionParams


def micro_strangle() -> StrategyConfig:
    return StrategyConfig(
        name="micro_strangle",
        # Long (side=1) 0.25-delta call and put on the next daily expiry.
        legs=strangle(0.01, call_delta=0.25, put_delta=-0.25, dte="next", side=1),
        entry_conditions=[min_available_margin_pct(50)],
        exit_conditions=[profit_target_pct(30), max_loss_pct(60), max_hold_hours(0.25)],
        execution_mode="limit",
        max_concurrent_trades=1,
        max_trades_per_day=12,
        cooldown_seconds=900.0,
        check_interval_seconds=60.0,
        execution_params=ExecutionParams(fill_timeout_seconds=30.0, aggressive_buffer_pct=2.0,
                                         max_requote_rounds=10),
        metadata={"purpose": "smoke round trip"},
    )
