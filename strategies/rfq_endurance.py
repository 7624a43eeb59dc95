"""rfq_endurance: a long strangle executed through RFQ (block trade), held for half an hour.

It exercises the RFQ path end to end over long paper runs: create, quotes from the makers,
the per-leg screen comparison, accept, and a close through RFQ again. The size (0.5 BTC a
leg, about $90k of strikes) clears the exchange's $50k RFQ minimum. A quote must not be worse
than the order book (``min_improvement_pct=0``); if no acceptable quote comes, the open is
abandoned (no fallback) and the close falls back to limit orders.

The keyword parameters are the numbers a sweep varies (docs/SWEEPS.md); their defaults are
the strategy the daemon runs. The execution mode is not one of them: RFQ is what it exists for.
"""
from __future__ import annotations

import conditions as cond
from option_selection import strangle
from rfq import RFQParams
from strategy import StrategyConfig


def rfq_endurance(*, qty: float = 0.5, call_delta: float = 0.25, put_delta: float = -0.25,
                  min_available_margin_pct: float = 50, max_hold_hours: float = 0.5,
                  rfq_timeout_seconds: float = 60.0, min_improvement_pct: float = 0.0,
                  cooldown_seconds: float = 1800.0) -> StrategyConfig:
    return StrategyConfig(
        name="rfq_endurance",
        legs=strangle(qty, call_delta=call_delta, put_delta=put_delta, dte="next", side=1),
        entry_conditions=[cond.min_available_margin_pct(min_available_margin_pct)],
        exit_conditions=[cond.max_hold_hours(max_hold_hours)],
        execution_mode="rfq",
        rfq_params=RFQParams(timeout_seconds=rfq_timeout_seconds, min_improvement_pct=min_improvement_pct,
                             open_fallback=None, close_fallback="limit"),
        max_concurrent_trades=1,
        max_trades_per_day=6,
        cooldown_seconds=cooldown_seconds,
        check_interval_seconds=300.0,
    )
