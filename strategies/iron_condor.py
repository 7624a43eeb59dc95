"""iron_condor: a small short iron condor on the weekly expiry, managed in percent of credit.

Sells the 0.20-delta call and put and buys wings 5,000 USD further out, on the expiry closest
to a week away within 4 to 10 days (weekly options expire on Fridays; the dailies of the next
three days are skipped). Leaves at 50 % of the credit kept or when the loss reaches 1.5 times the
credit (narrower wings collect so little credit that crossing the spread alone would trip a
stop of 100 %). Weekdays only, at most one per day. ``auto`` routing: 4 x 0.01 BTC is far below the
smart and RFQ thresholds, so it trades with limit orders.

The keyword parameters are the numbers a sweep varies (docs/SWEEPS.md); their defaults are
the strategy the daemon runs.
"""
from __future__ import annotations

import conditions as cond
from option_selection import iron_condor as iron_condor_legs
from strategy import StrategyConfig


def iron_condor(*, qty: float = 0.01, call_delta: float = 0.20, put_delta: float = -0.20, wing_width: float = 5000.0,
                dte: int = 7, dte_min: int = 4, dte_max: int = 10, entry_start_hour: int = 10,
                entry_end_hour: int = 16, min_available_margin_pct: float = 50, profit_target_pct: float = 50,
                max_loss_pct: float = 150, execution_mode: str = "auto") -> StrategyConfig:
    return StrategyConfig(
        name="iron_condor",
        legs=iron_condor_legs(qty, call_delta=call_delta, put_delta=put_delta, wing_width=wing_width,
                              dte={"dte": dte, "dte_min": dte_min, "dte_max": dte_max}, side=2),
        entry_conditions=[cond.weekday_filter(["mon", "tue", "wed", "thu", "fri"]),
                          cond.time_window(entry_start_hour, entry_end_hour),
                          cond.min_available_margin_pct(min_available_margin_pct)],
        exit_conditions=[cond.profit_target_pct(profit_target_pct), cond.max_loss_pct(max_loss_pct)],
        execution_mode=execution_mode,
        max_concurrent_trades=1,
        max_trades_per_day=1,
        check_interval_seconds=300.0,
    )
