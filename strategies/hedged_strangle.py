"""hedged_strangle_btc / hedged_strangle_eth: a short strangle kept near delta-neutral with the perpetual.

Sells a 0.25-delta strangle on the nearest expiry 3 to 10 days out and keeps the structure's delta inside a band
by trading the underlying's perpetual (``delta_hedge``, docs/HEDGING.md): the premium is
collected while a trend moves the short strangle's delta, and the hedge pays for what the
trend would otherwise cost. The hedge is flattened in the same close as the options, its
fills and funding are part of the trade's PnL. Limit execution: the smart and RFQ engines
do not trade perpetuals.

Sizes are small on purpose: 0.1 BTC a leg with a 0.02 BTC band; 1 ETH a leg with a
0.3 ETH band. The exits are those of the other strangles: a USD profit target, a USD stop
and a maximum holding time.

``hedged=False`` builds the same strategy (same name, legs, entries and exits) without the
hedge, so a sweep can compare the two over the same seeds and markets
(``sweeps/hedged_vs_unhedged_*.toml``, docs/HEDGING_COMPARISON.md).
"""
from __future__ import annotations

import conditions as cond
from hedging import delta_hedge
from option_selection import strangle
from strategy import StrategyConfig
from validation import invalid


def _hedged_strangle(name: str, underlying: str, *, qty: float, band: float, max_hedge_qty: float,
                     min_interval_seconds: float, profit_target_usd: float, max_loss_usd: float,
                     max_hold_hours: float, call_delta: float, put_delta: float, min_days: int, max_days: int,
                     hedged: bool) -> StrategyConfig:
    if not isinstance(hedged, bool):   # 1 or "no" would silently pick a side of the comparison
        raise invalid(name, "hedged", hedged, "use true or false")
    hedge = delta_hedge(band=band, target=0.0, min_interval_seconds=min_interval_seconds, max_hedge_qty=max_hedge_qty,
                        underlying=underlying, max_slippage_bps=20) if hedged else None
    return StrategyConfig(
        name=name,
        legs=strangle(qty, call_delta=call_delta, put_delta=put_delta, dte={"min_days": min_days, "max_days": max_days, "target": "near"},
                      side=2, underlying=underlying),
        entry_conditions=[cond.min_available_margin_pct(60)],
        exit_conditions=[cond.profit_target(usd=profit_target_usd), cond.max_loss(usd=max_loss_usd),
                         cond.max_hold_hours(max_hold_hours)],
        execution_mode="limit",
        max_concurrent_trades=1,
        max_trades_per_day=1,
        check_interval_seconds=60.0,
        hedge=hedge,
    )


def hedged_strangle_btc(*, qty: float = 0.1, band: float = 0.02, max_hedge_qty: float = 0.2,
                        min_interval_seconds: float = 300.0, profit_target_usd: float = 40.0,
                        max_loss_usd: float = 150.0, max_hold_hours: float = 72.0, call_delta: float = 0.25,
                        put_delta: float = -0.25, min_days: int = 3, max_days: int = 10,
                        hedged: bool = True) -> StrategyConfig:
    """0.1 BTC short strangle, delta kept within 0 ± 0.02 BTC with BTCUSD (``hedged=False``: no hedge)."""
    return _hedged_strangle("hedged_strangle_btc", "BTC", qty=qty, band=band, max_hedge_qty=max_hedge_qty,
                            min_interval_seconds=min_interval_seconds, profit_target_usd=profit_target_usd,
                            max_loss_usd=max_loss_usd, max_hold_hours=max_hold_hours, call_delta=call_delta,
                            put_delta=put_delta, min_days=min_days, max_days=max_days, hedged=hedged)


def hedged_strangle_eth(*, qty: float = 1.0, band: float = 0.3, max_hedge_qty: float = 2.0,
                        min_interval_seconds: float = 300.0, profit_target_usd: float = 20.0,
                        max_loss_usd: float = 80.0, max_hold_hours: float = 72.0, call_delta: float = 0.25,
                        put_delta: float = -0.25, min_days: int = 3, max_days: int = 10,
                        hedged: bool = True) -> StrategyConfig:
    """1 ETH short strangle, delta kept within 0 ± 0.3 ETH with ETHUSD (``hedged=False``: no hedge)."""
    return _hedged_strangle("hedged_strangle_eth", "ETH", qty=qty, band=band, max_hedge_qty=max_hedge_qty,
                            min_interval_seconds=min_interval_seconds, profit_target_usd=profit_target_usd,
                            max_loss_usd=max_loss_usd, max_hold_hours=max_hold_hours, call_delta=call_delta,
                            put_delta=put_delta, min_days=min_days, max_days=max_days, hedged=hedged)
