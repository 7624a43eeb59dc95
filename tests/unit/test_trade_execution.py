"""Pure parts of trade_execution: client order ids, snapping, parameter validation, results."""
from __future__ import annotations

import random
from decimal import Decimal

import pytest

from errors import ConfigError
from trade_execution import (
    ClientOrderIdParts,
    ExecutionParams,
    ExecutionPhase,
    FillResult,
    Intent,
    JobStatus,
    LedgerOrder,
    LegFill,
    LegTarget,
    OrderStatus,
    TradeExecutor,
    build_client_order_id,
    fair_value,
    parse_client_order_id,
    snap_price,
    snap_qty,
    summarize_fills,
)


# ---- client order ids ---------------------------------------------------------------

def test_documented_example_id():
    assert build_client_order_id(101, 42, 1, Intent.CLOSE, 7) == 101000000042013007
    assert parse_client_order_id(101000000042013007) == ClientOrderIdParts(101, 42, 1, 3, 7)


@pytest.mark.parametrize("parts", [(100, 0, 0, 1, 0), (899, 999_999_999, 99, 8, 999), (101, 7, 3, 5, 12)])
def test_id_round_trip_and_int64(parts):
    coid = build_client_order_id(*parts)
    assert isinstance(coid, int) and len(str(coid)) == 18 and coid < 2**63
    assert parse_client_order_id(coid) == ClientOrderIdParts(*parts)


def test_ids_differ_by_intent_and_attempt():
    ids = {build_client_order_id(101, 1, 0, intent, attempt) for intent in Intent for attempt in (1, 2)}
    assert len(ids) == 16


@pytest.mark.parametrize("bad", [(99, 1, 1, 1, 1), (900, 1, 1, 1, 1), (101, 10**9, 1, 1, 1),
                                 (101, 1, 100, 1, 1), (101, 1, 1, 0, 1), (101, 1, 1, 9, 1), (101, 1, 1, 1, 1000),
                                 (101, 1.0, 1, 1, 1)])
def test_build_refuses_out_of_range(bad):
    with pytest.raises(ValueError):
        build_client_order_id(*bad)


@pytest.mark.parametrize("bad", [12345, 10100000004201300, 101000000042019007, 101000000042010007, 10100000004201300.0, True])
def test_parse_refuses_foreign_ids(bad):
    with pytest.raises(ValueError):
        parse_client_order_id(bad)


def test_intent_families_requotes_and_reduce_only():
    assert Intent.OPEN_REQUOTE.family() is Intent.OPEN
    assert Intent.CLOSE.requote() is Intent.CLOSE_REQUOTE
    assert Intent.KILL_REQUOTE.requote() is Intent.KILL_REQUOTE
    assert [i.reduce_only for i in Intent] == [False, False] + [True] * 6


# ---- snapping -----------------------------------------------------------------------

def test_float_residue_is_snapped_to_the_lot():
    assert snap_qty(0.6 - 0.1 - 0.2) == 0.3
    assert snap_qty(0.29999999999999993) == 0.3
    assert snap_qty(0.0099) == 0.0
    assert snap_qty(-0.5) == 0.0
    assert snap_qty(1.239) == 1.23


def test_random_fill_sequences_never_leave_off_lot_remainders():
    rng = random.Random(1234)
    for _ in range(1000):
        target = rng.randint(1, 500) / 100
        remaining = target
        exact = Decimal(str(target))
        while remaining >= 0.01:
            fill = rng.randint(1, max(1, int(round(remaining * 100)))) / 100
            remaining = snap_qty(remaining - fill)
            exact -= Decimal(str(fill))
            # the snapped float is exactly the decimal remainder, printable with 2 decimals
            assert Decimal(repr(remaining)) == exact, (target, fill, remaining)
            assert remaining == round(remaining, 2)


def test_incident_24_sub_tick_prices_become_one_tick():
    assert snap_price(0.4, 1.0, 2) == 1.0
    assert snap_price(0.4, 1.0, 1) == 1.0
    assert snap_price(0.04, 0.1, 1) == 0.1


def test_prices_snap_buys_down_sells_up_with_tolerance():
    assert snap_price(9.5, 1.0, 1) == 9.0
    assert snap_price(9.5, 1.0, 2) == 10.0
    assert snap_price(100.00000000001, 1.0, 2) == 100.0
    assert snap_price(1274.98, 1.0, 1) == 1274.0
    assert snap_price(12.34, 0.1, 2) == 12.4


@pytest.mark.parametrize("price", [0.0, -1.0, float("nan"), None])
def test_missing_prices_are_refused(price):
    with pytest.raises(ValueError):
        snap_price(price, 1.0, 1)


def test_fair_value_rule():
    assert fair_value(90, 110, 100) == 100
    assert fair_value(90, 110, 120) == 100
    assert fair_value(90, 0, 80) == 90
    assert fair_value(None, 110, 120) == 110
    assert fair_value(0, 0, 55) == 55


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


# ---- records, fills, results, routing -----------------------------------------------

def _order(coid: int, filled: float, avg: float, fee: float) -> LedgerOrder:
    return LedgerOrder(coid, "T000000001", 1, 0, Intent.OPEN, 1, None, "S", 1, 1.0, 100.0, False,
                       OrderStatus.FILLED, order_id=1900000000000000001, filled_qty=filled, avg_price=avg, fee=fee)


def test_record_round_trip_keeps_int_ids():
    order = _order(101000000001001001, 0.5, 120.0, 0.1)
    again = LedgerOrder.from_record(order.to_record())
    assert again == order and isinstance(again.intent, Intent) and again.status is OrderStatus.FILLED


def test_chain_vwap_and_fees():
    summary = summarize_fills([_order(1, 0.2, 100, 0.01), _order(2, 0.3, 110, 0.02), _order(3, 0.5, 120, 0.03)])
    assert (summary.qty, summary.vwap, summary.fees) == (1.0, 113.0, 0.06)


def test_total_cash_signs():
    result = FillResult(JobStatus.FILLED, [LegFill(0, "A", 2, 1.0, 1.0, 100.0, 1.0),
                                           LegFill(1, "B", 1, 0.5, 0.5, 50.0, 0.5)])
    assert result.total_cash == 100.0 - 25.0 - 1.5


@pytest.mark.parametrize("qtys, expected", [((0.5, 0.5), "rfq"), ((0.06, 0.06), "smart"), ((0.05, 0.05), "limit"),
                                             ((5.0,), "limit")])
def test_incident_32_auto_routing_uses_underlying_notional(qtys, expected):
    executor = TradeExecutor(limit=object(), smart=object(), rfq=object())  # type: ignore[arg-type]
    legs = [LegTarget(i, f"S{i}", 1, q) for i, q in enumerate(qtys)]
    assert executor.route("auto", legs, 90_000.0) == expected
    assert executor.route("limit", legs, 90_000.0) == "limit"


def test_auto_routing_needs_an_index_and_falls_back_without_engine():
    legs = [LegTarget(0, "A", 1, 0.5), LegTarget(1, "B", 1, 0.5)]
    with pytest.raises(ValueError):
        TradeExecutor(limit=object(), rfq=object()).route("auto", legs, 0.0)  # type: ignore[arg-type]
    assert TradeExecutor(limit=object()).route("auto", legs, 90_000.0) == "limit"  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError):
        TradeExecutor(limit=object()).start("rfq", None, legs, Intent.OPEN, None)  # type: ignore[arg-type]
