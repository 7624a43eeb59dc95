"""The shipped strategies take keyword parameters (for sweeps) whose defaults are what they always built.

Why: a sweep varies a factory's numbers (``micro_strangle(call_delta=0.3)``); the daemon calls the
factories with no argument. The bodies below are the factories as they were before they took
parameters, so a default that drifted would change live trading and fails here, field by field.
"""
from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Any, Callable

import pytest

from hedging import delta_hedge
from multileg_orderbook import SmartExecConfig
from option_selection import iron_condor as iron_condor_legs, strangle
from rfq import RFQParams
from strategies import (
    daily_short_strangle,
    hedged_strangle_btc,
    hedged_strangle_eth,
    iron_condor,
    micro_strangle,
    rfq_endurance,
    smart_strangle,
)
from strategy import (
    StrategyConfig,
    max_hold_hours,
    max_loss,
    max_loss_pct,
    min_available_margin_pct,
    profit_target,
    profit_target_pct,
    time_window,
    weekday_filter,
)
from trade_execution import ExecutionParams


def old_micro_strangle() -> StrategyConfig:
    return StrategyConfig(
        name="micro_strangle",
        legs=strangle(0.01, call_delta=0.25, put_delta=-0.25, dte="next", side=1),
        entry_conditions=[min_available_margin_pct(50)],
        exit_conditions=[profit_target_pct(30), max_loss_pct(60), max_hold_hours(0.25)],
        execution_mode="limit",
        max_concurrent_trades=1,
        max_trades_per_day=12,
        cooldown_seconds=900.0,
        check_interval_seconds=60.0,
        # Phased limit pricing since issue 11's comparison (docs/EXECUTION_DEFAULTS.md).
        execution_params=ExecutionParams.phased(fill_timeout_seconds=30.0, aggressive_buffer_pct=2.0,
                                                max_requote_rounds=10),
        metadata={"purpose": "smoke round trip"},
    )


def old_daily_short_strangle() -> StrategyConfig:
    return StrategyConfig(
        name="daily_short_strangle",
        legs=strangle(0.1, call_delta=0.20, put_delta=-0.20, dte="next", side=2),
        entry_conditions=[time_window(9, 12), min_available_margin_pct(60)],
        exit_conditions=[profit_target(usd=25.0), max_loss(usd=100.0), max_hold_hours(20)],
        execution_mode="limit",
        max_concurrent_trades=1,
        max_trades_per_day=1,
        check_interval_seconds=60.0,
        # Phased limit pricing since issue 11's re-measured comparison (docs/EXECUTION_DEFAULTS.md).
        execution_params=ExecutionParams.phased(),
    )


def old_iron_condor() -> StrategyConfig:
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


def old_rfq_endurance() -> StrategyConfig:
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


def old_smart_strangle() -> StrategyConfig:
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


def old_hedged_strangle(name: str, underlying: str, qty: float, band: float, max_hedge_qty: float,
                        profit_target_usd: float, max_loss_usd: float) -> StrategyConfig:
    return StrategyConfig(
        name=name,
        legs=strangle(qty, call_delta=0.25, put_delta=-0.25, dte={"min_days": 3, "max_days": 10, "target": "near"},
                      side=2, underlying=underlying),
        entry_conditions=[min_available_margin_pct(60)],
        exit_conditions=[profit_target(usd=profit_target_usd), max_loss(usd=max_loss_usd), max_hold_hours(72.0)],
        execution_mode="limit",
        max_concurrent_trades=1,
        max_trades_per_day=1,
        check_interval_seconds=60.0,
        hedge=delta_hedge(band=band, target=0.0, min_interval_seconds=300.0, max_hedge_qty=max_hedge_qty,
                          underlying=underlying, max_slippage_bps=20),
    )


def old_hedged_strangle_btc() -> StrategyConfig:
    return old_hedged_strangle("hedged_strangle_btc", "BTC", 0.1, 0.02, 0.2, 40.0, 150.0)


def old_hedged_strangle_eth() -> StrategyConfig:
    return old_hedged_strangle("hedged_strangle_eth", "ETH", 1.0, 0.3, 2.0, 20.0, 80.0)


PAIRS: list[tuple[Callable[..., StrategyConfig], Callable[[], StrategyConfig]]] = [
    (micro_strangle, old_micro_strangle), (daily_short_strangle, old_daily_short_strangle),
    (iron_condor, old_iron_condor), (rfq_endurance, old_rfq_endurance), (smart_strangle, old_smart_strangle),
    (hedged_strangle_btc, old_hedged_strangle_btc), (hedged_strangle_eth, old_hedged_strangle_eth),
]
IDS = [new.__name__ for new, _ in PAIRS]


def differences(new: StrategyConfig, old: StrategyConfig) -> list[str]:
    found = []
    for item in fields(StrategyConfig):
        a, b = getattr(new, item.name), getattr(old, item.name)
        if a != b or type(a) is not type(b):
            found.append(f"{item.name}: {a!r} != {b!r}")
    return found


@pytest.mark.parametrize(("new", "old"), PAIRS, ids=IDS)
def test_the_factory_with_no_argument_builds_exactly_the_old_strategy(new, old):
    assert differences(new(), old()) == []


def test_the_comparison_sees_a_changed_number():
    """The check is real: one parameter off its default is a difference."""
    assert differences(micro_strangle(call_delta=0.3), old_micro_strangle()) == [
        f"legs: {micro_strangle(call_delta=0.3).legs!r} != {old_micro_strangle().legs!r}"]


CHANGED_STRINGS = {("execution_mode", "limit"): "auto", ("execution_mode", "auto"): "limit",
                   ("execution_mode", "smart"): "limit", ("quoting_strategy", "mid"): "top_of_book",
                   ("limit_pricing", "touch"): "phased",
                   ("limit_pricing", "phased"): "touch"}


def another_value(name: str, default: Any) -> Any:
    """A valid value other than the default: ints one up, quantities doubled, other floats 10 % up
    (1 for a zero), modes swapped, booleans negated."""
    if isinstance(default, bool):   # before int: a bool is an int to Python
        return not default
    if isinstance(default, str):
        return CHANGED_STRINGS[(name, default)]
    if isinstance(default, int):
        return default + 1
    if name == "qty":
        return round(default * 2, 2)
    return default * 1.1 if default else 1.0


@pytest.mark.parametrize(("new", "old"), PAIRS, ids=IDS)
def test_every_parameter_is_keyword_only_and_reaches_the_config(new, old):
    """A parameter a factory accepted but ignored would make a sweep vary nothing."""
    parameters = inspect.signature(new).parameters.values()
    assert parameters and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
    ignored = [p.name for p in parameters if not differences(new(**{p.name: another_value(p.name, p.default)}),
                                                             old())]
    assert ignored == []


def test_limit_pricing_names_the_two_pricings_and_refuses_any_other():
    from errors import ConfigError
    from trade_execution import ExecutionParams

    assert ExecutionParams.with_pricing("touch", aggressive_buffer_pct=3.0) == ExecutionParams(aggressive_buffer_pct=3.0)
    assert ExecutionParams.with_pricing("phased") == ExecutionParams.phased()
    with pytest.raises(ConfigError, match="pricing.*must be one of touch, phased"):
        ExecutionParams.with_pricing("mid")
