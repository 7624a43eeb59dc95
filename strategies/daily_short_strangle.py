"""daily_short_strangle: sell a 0.2-delta strangle on the next daily expiry each morning.

Collects the overnight theta of the daily options. Entries only in the 09:00-12:00 UTC
window and once per UTC day; the trade leaves on a USD profit target, a USD stop, or after
20 hours (before the 08:00 expiry of the next day). Limit execution: at 0.1 BTC per leg the
notional (about 2 x 0.1 x index) would route to the smart engine under ``auto``.
"""
from __future__ import annotations

from option_selection import strangle
from strategy import (
    StrategyConfig,
    max_hold_hours,
    max_loss,
    min_available_margin_pct,
    profit_target,
    time_window,
)


def daily_short_strangle() -> StrategyConfig:
    return StrategyConfig(
        name="daily_short_strangle",
        legs=strangle(0.1, call_delta=0.20, put_delta=-0.20, dte="next", side=2),
        entry_conditions=[time_window(9, 12), min_available_margin_pct(60)],
        exit_conditions=[profit_target(usd=25.0), max_loss(usd=100.0), max_hold_hours(20)],
        execution_mode="limit",
        max_concurrent_trades=1,
        max_trades_per_day=1,
        check_interval_seconds=60.0,
    )
