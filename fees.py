"""Coincall's fee schedule as the daemon estimates it (docs/API.md §4, §10, §14.3).

Why a module of its own: the valuation's close-fee estimate, the delivery fee of an expired
leg and the fee of a block-trade leg whose record leaves it out all follow one schedule, and
an estimate written in three places drifts. Estimates only: a fee the exchange reports is
always what is booked.
"""
from __future__ import annotations

TAKER_FEE_RATE = 0.0003          # options, taker: of the index per contract (also block trades, taker side)
PERP_TAKER_FEE_RATE = 0.0006     # perpetuals, taker: of the notional (API.md §14.3)
DELIVERY_FEE_RATE = 0.00015      # options at delivery: of the index per contract (dailies pay none)
FEE_CAP_OF_PREMIUM = 0.125       # an option fee never exceeds 12.5 % of the premium it is charged on


def option_taker_fee(qty: float, price: float, index: float | None) -> float:
    """The taker fee of ``qty`` option contracts at ``price``: min(qty x index x rate, qty x price x cap).

    Without an index price the cap alone is the estimate: it is the fee's upper bound, so PnL
    booked on it is never better than the truth.
    """
    cap = qty * price * FEE_CAP_OF_PREMIUM
    if index is None or not index > 0:
        return round(cap, 8)
    return round(min(qty * index * TAKER_FEE_RATE, cap), 8)
