"""Pure parts of trade_execution: the fair value, execution parameters and routing."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import trade_lifecycle
from errors import ConfigError
from execution_job import LegTarget
from order_ledger import Intent
from trade_execution import ExecutionParams, ExecutionPhase, TradeExecutor, fair_value, phase_raw_price


# ---- the fair value ---------------------------------------------------------------------

def test_fair_value_rule():
    assert fair_value(90, 110, 100) == 100
    assert fair_value(90, 110, 120) == 100
    assert fair_value(90, 0, 80) == 90
    assert fair_value(None, 110, 120) == 110
    assert fair_value(0, 0, 55) == 55


@pytest.mark.parametrize("bid, ask, mark", [
    (90, 110, 100), (90, 110, 120), (90, 110, 80), (90, 0, 80), (90, 0, 95), (0, 110, 120), (0, 110, 100),
    (0, 0, 55), (None, 110, 120), (90, None, 80), (-5, 110, 120), (float("nan"), 110, 120), (90, float("nan"), 80),
])
def test_pnl_and_order_pricing_value_a_contract_by_the_same_fair_rule(bid, ask, mark):
    """One rule (BEHAVIOUR.md §2.3): the lifecycle's ``fair`` PnL valuation and the ``fair`` pricing
    phase of an order both give ``fair_value`` for every book shape, empty and unusable sides included."""
    quote = SimpleNamespace(bid=bid, ask=ask, mark=mark)
    for side in (1, 2):
        value, degraded = trade_lifecycle._value_of_contract("fair", SimpleNamespace(sign=1 if side == 1 else -1),
                                                             quote)
        assert (value, degraded) == (fair_value(bid, ask, mark), False)
        assert phase_raw_price(ExecutionPhase("fair", 60.0), side, bid, ask, mark) == value


# ---- parameters ---------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("fill_timeout_seconds", 0), ("aggressive_buffer_pct", 51), ("aggressive_buffer_pct", -1),
    ("max_requote_rounds", -1), ("max_requote_rounds", 1.5), ("min_price_pct_of_fair", 1.2),
    ("max_price_pct_of_fair", 0.9), ("min_floor_price", -1), ("grace_seconds", -1),
    ("price_wait_seconds", 0), ("phases", ()), ("fill_timeout_seconds", True),
])
def test_execution_params_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"ExecutionParams.{field}"):
        ExecutionParams(**{field: value})


@pytest.mark.parametrize("kwargs, field", [
    ({"pricing": "best"}, "pricing"), ({"duration_seconds": 0}, "duration_seconds"),
    ({"reprice_interval_seconds": 5}, "reprice_interval_seconds"), ({"fair_aggression": 1.5}, "fair_aggression"),
])
def test_execution_phase_validation(kwargs, field):
    args = {"pricing": "fair", "duration_seconds": 60.0, **kwargs}
    with pytest.raises(ConfigError, match=f"ExecutionPhase.{field}"):
        ExecutionPhase(**args)


def test_defaults_and_phased():
    params = ExecutionParams()
    assert (params.fill_timeout_seconds, params.aggressive_buffer_pct, params.max_requote_rounds) == (30.0, 2.0, 10)
    phased = ExecutionParams.phased(aggressive_buffer_pct=3.0)
    assert [(p.pricing, p.duration_seconds, p.fair_aggression) for p in phased.phases] == [
        ("fair", 60.0, 0.0), ("fair", 60.0, 0.5), ("aggressive", 120.0, 0.0)]
    assert phased.phases[2].buffer_pct == 3.0
    assert all(p.reprice_interval_seconds == 15.0 for p in phased.phases)


# ---- routing ----------------------------------------------------------------------------


class IdleEngine:
    """An execution engine routing may name but never starts (``seams.ExecutionEngine``)."""

    def start(self, trade, legs, intent, params, *, best_effort=False):
        raise AssertionError("not used by this test")


@pytest.mark.parametrize("qtys, expected", [((0.5, 0.5), "rfq"), ((0.06, 0.06), "smart"), ((0.05, 0.05), "limit"),
                                             ((5.0,), "limit")])
def test_incident_32_auto_routing_uses_underlying_notional(qtys, expected):
    executor = TradeExecutor(limit=IdleEngine(), smart=IdleEngine(), rfq=IdleEngine())
    legs = [LegTarget(i, f"S{i}", 1, q) for i, q in enumerate(qtys)]
    assert executor.route("auto", legs, 90_000.0) == expected
    assert executor.route("limit", legs, 90_000.0) == "limit"


def test_auto_routing_needs_an_index_and_every_mode_has_its_engine():
    legs = [LegTarget(0, "A", 1, 0.5), LegTarget(1, "B", 1, 0.5)]
    executor = TradeExecutor(limit=IdleEngine(), smart=IdleEngine(), rfq=IdleEngine())
    with pytest.raises(ValueError):
        executor.route("auto", legs, 0.0)
    with pytest.raises(ValueError, match="resolved"):
        executor.start("auto", None, legs, Intent.OPEN, None)
    with pytest.raises(TypeError):
        TradeExecutor(limit=IdleEngine())  # type: ignore[call-arg]  # the point: smart and rfq are required
