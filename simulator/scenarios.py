"""Market scenarios: named index paths and volatility regimes for backtests.

Why they are scripted paths: the market model follows a scripted index path exactly when one
is given, so a scenario is a deterministic path (a driftless random walk from the seed,
sampled every ``POINT_SECONDS``, shaped by the scenario) plus the implied-volatility level
that goes with it. Linear interpolation between points keeps the index moving every second,
so a scenario never looks like a frozen feed to the daemon. A path covers
``HORIZON_DAYS`` from its start; a backtest longer than that sees a flat index at the end.

* ``crash-day``: the index falls 20 % between 2 h and 8 h after the start and stays down;
  implied volatility 70 %.
* ``vol-spike``: realized volatility triples (150 % a year) from 2 h to 26 h after the start;
  implied volatility 100 % throughout (the surface has one level per run).
* ``expiry-gap``: the index gaps down 8 % five minutes before the first 08:00 UTC expiry
  that is at least an hour away, inside that expiry's settlement window.
* ``quiet-week``: realized volatility 12 % a year, implied 30 %.
* ``trend-week``: a steady drift of +15 % over the first 7 days (then flat), on a walk of 30 %
  realized volatility; implied volatility 45 %. Delta hedging is tested against it.

Every scenario moves every underlying: the returned config remembers its scenario
(``MarketConfig.scenario``), and the simulator shapes ETH's own walk the same way
(``underlyings.follow_scenario``). Names take ``-`` or ``_`` (``trend_week``).
"""
from __future__ import annotations

import dataclasses
import math
import random
from typing import Callable

from simulator.market import MarketConfig

POINT_SECONDS = 60
HORIZON_DAYS = 35
SECONDS_PER_YEAR = 365.0 * 86400.0
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
EXPIRY_HOUR_MS = 8 * HOUR_MS
SCENARIOS = ("crash-day", "vol-spike", "expiry-gap", "quiet-week", "trend-week")
TREND_WEEK_DRIFT = 0.15
TREND_WEEK_DAYS = 7


def _walk(seed: int, start_ms: int, start_index: float, annual_vol: Callable[[int], float],
          factor: Callable[[int], float]) -> tuple[tuple[int, float], ...]:
    """(epoch ms, index) every ``POINT_SECONDS``: a driftless walk times the scenario's factor."""
    rng = random.Random(seed)
    dt = POINT_SECONDS / SECONDS_PER_YEAR
    price = start_index
    points = [(start_ms, start_index * factor(0))]
    for k in range(1, HORIZON_DAYS * 86400 // POINT_SECONDS + 1):
        elapsed_ms = k * POINT_SECONDS * 1000
        sigma = annual_vol(elapsed_ms) * math.sqrt(dt)
        price *= math.exp(-0.5 * sigma * sigma + sigma * rng.gauss(0.0, 1.0))
        points.append((start_ms + elapsed_ms, price * factor(elapsed_ms)))
    return tuple(points)


def _ramp(start_ms: int, end_ms: int, to: float) -> Callable[[int], float]:
    """1.0 before ``start_ms``, ``to`` after ``end_ms``, linear in between (times since the start)."""
    def factor(elapsed_ms: int) -> float:
        if elapsed_ms <= start_ms:
            return 1.0
        if elapsed_ms >= end_ms:
            return to
        return 1.0 + (to - 1.0) * (elapsed_ms - start_ms) / (end_ms - start_ms)
    return factor


def first_expiry_gap_ms(start_ms: int) -> int:
    """Milliseconds after the start of the first 08:00 UTC at least an hour away."""
    candidate = (start_ms - EXPIRY_HOUR_MS) // DAY_MS * DAY_MS + EXPIRY_HOUR_MS
    while candidate - start_ms < HOUR_MS:
        candidate += DAY_MS
    return candidate - start_ms


def scenario_market(name: str, seed: int, start_ms: int, base: MarketConfig | None = None) -> MarketConfig:
    """The market config of scenario ``name`` for a run that starts at ``start_ms``."""
    name = name.replace("_", "-")
    market = _with_scenario(base if base is not None else MarketConfig(seed=seed), name)
    index = market.start_index
    flat: Callable[[int], float] = lambda _elapsed: 1.0  # noqa: E731
    if name == "crash-day":
        path = _walk(seed, start_ms, index, lambda _e: market.annual_vol, _ramp(2 * HOUR_MS, 8 * HOUR_MS, 0.80))
        return dataclasses.replace(market, scripted_path=path, atm_vol=0.70)
    if name == "vol-spike":
        def vol(elapsed_ms: int) -> float:
            return 1.50 if 2 * HOUR_MS <= elapsed_ms < 26 * HOUR_MS else market.annual_vol
        return dataclasses.replace(market, scripted_path=_walk(seed, start_ms, index, vol, flat), atm_vol=1.00)
    if name == "expiry-gap":
        gap = first_expiry_gap_ms(start_ms)
        step = _ramp(gap - 6 * 60_000, gap - 5 * 60_000, 0.92)
        path = _walk(seed, start_ms, index, lambda _e: market.annual_vol, step)
        return dataclasses.replace(market, scripted_path=path)
    if name == "quiet-week":
        path = _walk(seed, start_ms, index, lambda _e: 0.12, flat)
        return dataclasses.replace(market, scripted_path=path, annual_vol=0.12, atm_vol=0.30)
    if name == "trend-week":
        drift = _ramp(0, TREND_WEEK_DAYS * DAY_MS, 1.0 + TREND_WEEK_DRIFT)
        path = _walk(seed, start_ms, index, lambda _e: 0.30, drift)
        return dataclasses.replace(market, scripted_path=path, annual_vol=0.30, atm_vol=0.45)
    raise ValueError(f"unknown scenario {name!r}: use one of {', '.join(SCENARIOS)}")


def _with_scenario(market: MarketConfig, name: str) -> MarketConfig:
    """``market`` marked as built for scenario ``name`` (validated first: unknown names raise)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}: use one of {', '.join(SCENARIOS)}")
    return dataclasses.replace(market, scenario=name)
