"""smart_strangle: a short strangle worked in chunks on the order books (smart execution).

Why smart: 0.3 BTC a leg crossed at the touch on a wide options book gives away much of the
premium; quoting at mid in three balanced chunks (no leg more than one chunk ahead of the
other) fills near fair value, with an aggressive fallback at the end of each chunk. Held
at most half an hour, closed early at +40 % / -80 % of the credit.
"""
from __future__ import annotations

from multileg_orderbook import SmartExecConfig
from option_selection import strangle
from strategy import (
    StrategyConfig,
    max_hold_hours,
    max_loss_pct,
    min_available_margin_pct,
    profit_target_pct,
)


def smart_strangle() -> StrategyConfig:
    return StrategyConfig(
        name="smart_strangle",
        legs=strangle(0.3, call_delta=0.20, put_delta=-0.20, dte="next", side=2),
        entry_conditions=[min_available_margin_pct(60)],
        exit_conditions=[profit_target_pct(40), max_loss_pct(80), max_hold_hours(0.5)],
        execution_mode="smart",
        smart_config=SmartExecConfig(chunk_count=3, time_per_chunk_seconds=60.0, quoting_strategy="mid",
                                     reprice_interval_seconds=10.0, aggressive_attempts=5,
                                     aggressive_wait_seconds=5.0),
        max_concurrent_trades=1,
        max_trades_per_day=4,
        cooldown_seconds=1800.0,
        check_interval_seconds=120.0,
    )
