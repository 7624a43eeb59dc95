"""smart_strangle: a short strangle worked in chunks on the order books (smart execution).

Why smart: 0.3 BTC a leg crossed at the touch on a wide options book gives away much of the
premium; quoting at mid in three balanced chunks (no leg more than one chunk ahead of the
other) fills near fair value, with an aggressive fallback at the end of each chunk. Held
at most half an hour, closed early at +40 % / -80 % of the credit.

The keyword parameters are the numbers a sweep varies (docs/SWEEPS.md); their defaults are
the strategy the daemon runs.
"""
from __future__ import annotations

import conditions as cond
from multileg_orderbook import SmartExecConfig
from option_selection import strangle
from strategy import StrategyConfig


def smart_strangle(*, qty: float = 0.3, call_delta: float = 0.20, put_delta: float = -0.20,
                   min_available_margin_pct: float = 60, profit_target_pct: float = 40, max_loss_pct: float = 80,
                   max_hold_hours: float = 0.5, cooldown_seconds: float = 1800.0, execution_mode: str = "smart",
                   chunk_count: int = 3, time_per_chunk_seconds: float = 60.0, quoting_strategy: str = "mid",
                   reprice_interval_seconds: float = 10.0, aggressive_attempts: int = 5,
                   aggressive_wait_seconds: float = 5.0) -> StrategyConfig:
    return StrategyConfig(
        name="smart_strangle",
        legs=strangle(qty, call_delta=call_delta, put_delta=put_delta, dte="next", side=2),
        entry_conditions=[cond.min_available_margin_pct(min_available_margin_pct)],
        exit_conditions=[cond.profit_target_pct(profit_target_pct), cond.max_loss_pct(max_loss_pct),
                         cond.max_hold_hours(max_hold_hours)],
        execution_mode=execution_mode,
        smart_config=SmartExecConfig(chunk_count=chunk_count, time_per_chunk_seconds=time_per_chunk_seconds,
                                     quoting_strategy=quoting_strategy,
                                     reprice_interval_seconds=reprice_interval_seconds,
                                     aggressive_attempts=aggressive_attempts,
                                     aggressive_wait_seconds=aggressive_wait_seconds),
        max_concurrent_trades=1,
        max_trades_per_day=4,
        cooldown_seconds=cooldown_seconds,
        check_interval_seconds=120.0,
    )
