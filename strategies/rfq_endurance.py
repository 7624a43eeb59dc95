"""rfq_endurance: a long strangle executed through RFQ (block trade), held for half an hour.

It exercises the RFQ path end to end over long paper runs: create, quotes from the makers,
the per-leg screen comparison, accept, and a close through RFQ again. The size (0.5 BTC a
leg, about $90k of strikes) clears the exchange's $50k RFQ minimum. A quote must not be worse
than the order book (``min_improvement_pct=0``); if no acceptable quote comes, the open is
abandoned (no fallback) and the close falls back to limit orders.
"""
from __future__ import annotations

from option_selection import strangle
from rfq import RFQParams
from strategy import StrategyConfig, max_hold_hours, min_available_margin_pct


def rfq_endurance() -> StrategyConfig:
    return StrategyConfig(
        name="rfq_endurance",
        legs=strangle(0.5, call_delta=0.25, put_delta=-0.25, dte="next", side=1),
        entry_conditions=[min_available_margin_pct(50)],
        exit_conditions=[max_hold_hours(0.5)],
        execution_mode="rfq",
        rfq_params=RFQParams(timeout_seconds=60.0, min_improvement_pct=0.0, open_fallback=None,
                             close_fallback="limit"),
        max_concurrent_trades=1,
        max_trades_per_day=6,
        cooldown_seconds=1800.0,
        check_interval_seconds=300.0,
    )
