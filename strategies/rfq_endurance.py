"""rfq_endurance: a long strangle executed through RFQ (block trade), held for an hour.

It exercises the RFQ path end to end over long paper runs. Until the RFQ engine lands the
runner reports once that the mode is unavailable and pauses this strategy for the run; the
other strategies are not affected.
"""
from __future__ import annotations

from option_selection import strangle
from strategy import StrategyConfig, max_hold_hours, min_available_margin_pct


def rfq_endurance() -> StrategyConfig:
    return StrategyConfig(
        name="rfq_endurance",
        legs=strangle(0.5, call_delta=0.25, put_delta=-0.25, dte="next", side=1),
        entry_conditions=[min_available_margin_pct(50)],
        exit_conditions=[max_hold_hours(1)],
        execution_mode="rfq",
        max_concurrent_trades=1,
        max_trades_per_day=6,
        cooldown_seconds=1800.0,
        check_interval_seconds=300.0,
    )
