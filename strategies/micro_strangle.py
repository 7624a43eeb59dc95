"""micro_strangle: buy a tiny strangle, hold it briefly, sell it back.

Why it exists: it is the smallest complete round trip the daemon can make (resolve by
delta, open with limit orders, value the position, close on an exit), so a paper run of a
few simulated minutes shows every stage in the log. The size (0.01 BTC per leg) keeps the
risk to a few dollars of premium even on a real account.

The keyword parameters are the numbers a sweep varies (``python main.py sweep``,
docs/SWEEPS.md); their defaults are the strategy the daemon runs. Limit pricing is phased
(fair value first, then across the touch): on the same seeds it cost 6 % of the half-spread
instead of 100 % and halved the loss of the round trips (docs/EXECUTION_DEFAULTS.md).
"""
from __future__ import annotations

import conditions as cond
from option_selection import strangle
from strategy import StrategyConfig
from trade_execution import ExecutionParams


def micro_strangle(*, qty: float = 0.01, call_delta: float = 0.25, put_delta: float = -0.25,
                   min_available_margin_pct: float = 50, profit_target_pct: float = 30, max_loss_pct: float = 60,
                   max_hold_hours: float = 0.25, cooldown_seconds: float = 900.0, execution_mode: str = "limit",
                   fill_timeout_seconds: float = 30.0, aggressive_buffer_pct: float = 2.0,
                   max_requote_rounds: int = 10, limit_pricing: str = "phased") -> StrategyConfig:
    return StrategyConfig(
        name="micro_strangle",
        # Long (side=1) 0.25-delta call and put on the next daily expiry.
        legs=strangle(qty, call_delta=call_delta, put_delta=put_delta, dte="next", side=1),
        entry_conditions=[cond.min_available_margin_pct(min_available_margin_pct)],
        exit_conditions=[cond.profit_target_pct(profit_target_pct), cond.max_loss_pct(max_loss_pct),
                         cond.max_hold_hours(max_hold_hours)],
        execution_mode=execution_mode,
        max_concurrent_trades=1,
        max_trades_per_day=12,
        cooldown_seconds=cooldown_seconds,
        check_interval_seconds=60.0,
        execution_params=ExecutionParams.with_pricing(limit_pricing, fill_timeout_seconds=fill_timeout_seconds,
                                                      aggressive_buffer_pct=aggressive_buffer_pct,
                                                      max_requote_rounds=max_requote_rounds),
        metadata={"purpose": "smoke round trip"},
    )
