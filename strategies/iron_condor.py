"""iron_condor: a small short iron condor on the weekly expiry, managed in percent of credit.

Sells the 0.20-delta call and put and buys wings 5,000 USD further out, on the expiry closest
to a week away within 4 to 10 days (weekly options expire on Fridays; the dailies of the next
three days are skipped). Leaves at 50 % of the credit kept or when the loss reaches 1.5 times the
credit (narrower wings collect so little credit that crossing the spread alone would trip a
stop of 100 %). Weekdays only, at most one per day. ``auto`` routing: 4 x 0.01 BTC is far below the
smart and RFQ thresholds, so it trades with limit orders.
"""
from __future__ import annotations

from option_selection import iron_condor as iron_condor_legs
from strategy import (
    StrategyConfig,
    max_loss_pct,
    min_available_margin_pct,
    profit_target_pct,
    time_window,
    weekday_filter,
)


def iron_condor() -> StrategyConfig:
    return StrategyConfig(
        name="iron_condor",
        legs=iron_condor_legs(0.01, call_delta=0.20, put_delta=-0.20, wing_width=5000.0,
                              dte={"dte": 7, "dte_min": 4, "dte_max": 10}, side=2),
        entry_conditions=[weekday_filter(["mon", "tue", "wed", "thu", "fri"]), time_window(10, 16),
                          min_available_margin_pct(50)],
        exit_conditions=[profit_target_pct(50), max_loss_pct(150)],
        execution_mode="auto",
        max_concurrent_trades=1,
        max_trades_per_day=1,
        check_interval_seconds=300.0,
    )
