"""Market scenarios of the simulator (backtest --scenario): each path has the shape its name promises."""
from __future__ import annotations

import math
import statistics
from datetime import datetime, timezone

import pytest

from backtest import backtest_settings
from errors import ConfigError
from simulator.market import MarketModel
from simulator.scenarios import HOUR_MS, SCENARIOS, first_expiry_gap_ms, scenario_market

START_MS = int(datetime(2026, 3, 3, 10, 0, tzinfo=timezone.utc).timestamp() * 1000)


def index_at(model: MarketModel, t_ms: int) -> float:
    model.advance_to(t_ms)
    return model.index_price()


def test_crash_day_falls_twenty_percent_and_keeps_moving():
    model = MarketModel(scenario_market("crash-day", 7, START_MS), START_MS)
    before = index_at(model, START_MS + 2 * HOUR_MS)
    after = index_at(model, START_MS + 8 * HOUR_MS)
    assert after / before == pytest.approx(0.80, abs=0.03)
    later = [index_at(model, START_MS + 9 * HOUR_MS + k * 1000) for k in range(0, 120, 10)]
    assert len(set(later)) == len(later)          # never a flat (frozen-looking) index


def test_vol_spike_triples_realized_volatility_in_its_window():
    model = MarketModel(scenario_market("vol-spike", 7, START_MS), START_MS)

    def realized(start_h: float, hours: float) -> float:
        prices = [index_at(model, START_MS + int((start_h * 3600 + k * 60) * 1000)) for k in range(int(hours * 60))]
        returns = [math.log(b / a) for a, b in zip(prices, prices[1:])]
        return statistics.pstdev(returns) * math.sqrt(365 * 24 * 60)

    calm, spike = realized(0.0, 2.0), realized(4.0, 6.0)
    assert spike > 2.0 * calm and spike == pytest.approx(1.5, rel=0.3)


def test_expiry_gap_drops_eight_percent_just_before_the_first_expiry():
    gap = first_expiry_gap_ms(START_MS)
    assert gap == 22 * HOUR_MS                     # 10:00 -> the next day's 08:00
    model = MarketModel(scenario_market("expiry-gap", 7, START_MS), START_MS)
    before = index_at(model, START_MS + gap - 7 * 60_000)
    after = index_at(model, START_MS + gap - 4 * 60_000)
    assert after / before == pytest.approx(0.92, abs=0.01)


def test_quiet_week_is_quiet():
    config = scenario_market("quiet-week", 7, START_MS)
    model = MarketModel(config, START_MS)
    prices = [index_at(model, START_MS + k * 3_600_000) for k in range(0, 24 * 7, 6)]
    assert max(prices) / min(prices) < 1.15 and config.atm_vol == 0.30


def test_every_scenario_is_deterministic_and_unknown_ones_are_refused(tmp_path):
    for name in SCENARIOS:
        assert scenario_market(name, 3, START_MS) == scenario_market(name, 3, START_MS)
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario_market("meteor", 3, START_MS)
    with pytest.raises(ConfigError, match="crash-day"):
        backtest_settings(tmp_path, 3, 10.0, "meteor")
    assert backtest_settings(tmp_path, 3, 10.0, "crash-day").sim_scenario == "crash-day"
