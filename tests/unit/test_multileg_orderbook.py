"""Pure rules of the smart executor (BEHAVIOUR.md §1.3, §6.3): configuration, chunk targets,
the balance cap and the quoting prices per strategy."""
from __future__ import annotations

import dataclasses
import random
from types import SimpleNamespace

import pytest

from clock import SimulatedClock
from errors import ConfigError
from execution_job import JobStatus, LegTarget
from multileg_orderbook import (
    SmartExecConfig,
    SmartOrderbookExecutor,
    aggressive_price,
    balance_cap,
    chunk_targets,
    filled_fraction,
    passive_price,
    touch_without_own,
)
from order_ledger import Intent, snap_qty
from seams import Ledger, PriceSource, protocol_members
from trade_execution import ExecutionParams

BUY, SELL = 1, 2


# ---- configuration ------------------------------------------------------------------------


def test_defaults_are_the_documented_ones_and_frozen():
    config = SmartExecConfig()
    assert (config.chunk_count, config.time_per_chunk_seconds, config.quoting_strategy, config.offset_pct,
            config.reprice_interval_seconds, config.reprice_threshold_ticks, config.aggressive_attempts,
            config.aggressive_wait_seconds, config.min_order_qty) == (5, 120.0, "top_of_book", 0.5, 10.0, 1, 10,
                                                                      5.0, 0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.chunk_count = 3  # type: ignore[misc]


@pytest.mark.parametrize("strategy", ["top_of_book", "top_of_book_offset", "mid", "mark"])
def test_every_documented_strategy_is_accepted(strategy):
    assert SmartExecConfig(quoting_strategy=strategy).quoting_strategy == strategy


@pytest.mark.parametrize("field, value", [
    ("chunk_count", 0), ("chunk_count", 51), ("chunk_count", 2.0), ("chunk_count", True),
    ("time_per_chunk_seconds", 9.0), ("time_per_chunk_seconds", float("nan")), ("time_per_chunk_seconds", "120"),
    ("quoting_strategy", "fair"), ("quoting_strategy", "TOP_OF_BOOK"),
    ("offset_pct", -0.1), ("offset_pct", 51.0), ("offset_pct", float("inf")),
    ("reprice_interval_seconds", 9.99), ("reprice_interval_seconds", None),
    ("reprice_threshold_ticks", 0), ("reprice_threshold_ticks", 1.5),
    ("aggressive_attempts", -1), ("aggressive_attempts", 2.0),
    ("aggressive_wait_seconds", 0.0), ("aggressive_wait_seconds", -5.0),
    ("min_order_qty", 0.005), ("min_order_qty", 0.015), ("min_order_qty", 0),
    ("grace_seconds", -1.0),
])
def test_invalid_values_raise_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError) as info:
        SmartExecConfig(**{field: value})
    assert f"SmartExecConfig.{field}" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_boundaries_are_accepted():
    config = SmartExecConfig(chunk_count=50, time_per_chunk_seconds=10.0, reprice_interval_seconds=10.0,
                             offset_pct=0.0, aggressive_attempts=0, min_order_qty=0.05, grace_seconds=0.0)
    assert config.chunk_count == 50 and config.aggressive_attempts == 0
    assert SmartExecConfig(chunk_count=1).chunk_count == 1


# ---- chunk targets ------------------------------------------------------------------------


@pytest.mark.parametrize("total, count, expected", [
    (1.0, 5, [0.2, 0.4, 0.6, 0.8, 1.0]),
    (0.3, 3, [0.1, 0.2, 0.3]),                 # 0.3 / 3 is 0.09999… in floats: floored with tolerance
    (0.07, 3, [0.02, 0.04, 0.07]),             # floor to the lot; the last chunk is the total
    (0.03, 5, [0.0, 0.01, 0.01, 0.02, 0.03]),
    (1.0, 1, [1.0]),
    (0.6 - 0.1 - 0.2, 2, [0.15, 0.3]),         # a float residue total is snapped first
])
def test_chunk_targets_are_cumulative_floored_and_end_at_the_total(total, count, expected):
    assert chunk_targets(total, count) == pytest.approx(expected)


def test_chunk_targets_property_over_random_totals():
    rng = random.Random(4)
    for _ in range(500):
        total = rng.randint(1, 5000) / 100
        count = rng.randint(1, 50)
        targets = chunk_targets(total, count)
        assert len(targets) == count and targets[-1] == snap_qty(total)
        assert all(a <= b + 1e-12 for a, b in zip(targets, targets[1:]))
        assert all(snap_qty(t) == t for t in targets)                         # every target on the lot
        assert all(t <= total * k / count + 1e-9 for k, t in enumerate(targets[:-1], start=1))


def test_chunk_targets_refuse_a_bad_count():
    with pytest.raises(ValueError):
        chunk_targets(1.0, 0)


# ---- balance cap --------------------------------------------------------------------------


@pytest.mark.parametrize("total, lowest, count, expected", [
    (1.0, 0.0, 5, 0.2),        # nobody filled yet: one chunk
    (1.0, 0.4, 5, 0.6),        # least-filled leg at 40 %: at most 60 %
    (1.0, 0.9, 5, 1.0),        # never beyond the total
    (0.07, 0.0, 3, 0.02),      # floored: the cap is never exceeded
    (2.0, 0.25, 4, 1.0),       # a 2x leg (butterfly body) is measured by fraction
    (1.0, 0.0, 1, 1.0),        # one chunk: no constraint
])
def test_balance_cap(total, lowest, count, expected):
    assert balance_cap(total, lowest, count) == pytest.approx(expected)


def test_balance_cap_keeps_every_fraction_within_one_chunk_of_the_lowest():
    rng = random.Random(9)
    for _ in range(500):
        count = rng.randint(1, 20)
        total = rng.randint(1, 500) / 100
        lowest = rng.random()
        cap = balance_cap(total, lowest, count)
        assert filled_fraction(cap, total) <= lowest + 1.0 / count + 1e-9
        assert snap_qty(cap) == cap


def test_filled_fraction():
    assert filled_fraction(0.25, 1.0) == 0.25
    assert filled_fraction(0.5, 0.5) == 1.0
    assert filled_fraction(0.0, 0.0) == 1.0          # nothing to do counts as done


# ---- quoting prices -----------------------------------------------------------------------


@pytest.mark.parametrize("strategy, side, bid, ask, mark, tick, offset, expected", [
    ("top_of_book", BUY, 100.0, 110.0, 500.0, 1.0, 0.5, 100.0),       # buy joins the bid
    ("top_of_book", SELL, 100.0, 110.0, 500.0, 1.0, 0.5, 110.0),      # sell joins the ask
    ("top_of_book_offset", BUY, 100.0, 110.0, None, 1.0, 5.0, 105.0),  # bid x 1.05
    ("top_of_book_offset", BUY, 100.0, 104.0, None, 1.0, 5.0, 103.0),  # ... but below the ask by a tick
    ("top_of_book_offset", BUY, 100.0, None, None, 1.0, 5.0, 105.0),   # no ask: no bound to apply
    ("top_of_book_offset", SELL, 100.0, 110.0, None, 1.0, 5.0, 105.0),  # ask x 0.95 = 104.5, sells snap up
    ("top_of_book_offset", SELL, 106.0, 110.0, None, 1.0, 5.0, 107.0),  # ... but above the bid by a tick
    ("top_of_book_offset", BUY, 100.0, 110.0, None, 0.1, 0.5, 100.5),
    ("mid", BUY, 100.0, 111.0, None, 1.0, 0.5, 105.0),                 # 105.5: buys snap down
    ("mid", SELL, 100.0, 111.0, None, 1.0, 0.5, 106.0),                # sells snap up
    ("mark", BUY, 100.0, 110.0, 101.3, 1.0, 0.5, 101.0),
    ("mark", SELL, None, None, 101.3, 1.0, 0.5, 102.0),                # the mark needs no book
    ("mark", BUY, 100.0, 110.0, 0.4, 1.0, 0.5, 1.0),                   # never below one tick
])
def test_passive_prices_per_strategy(strategy, side, bid, ask, mark, tick, offset, expected):
    price = passive_price(strategy, side, bid=bid, ask=ask, mark=mark, tick=tick, offset_pct=offset)
    assert price == pytest.approx(expected)


@pytest.mark.parametrize("strategy, side, bid, ask, mark", [
    ("top_of_book", BUY, None, 110.0, 105.0),        # nothing to join
    ("top_of_book", SELL, 100.0, 0.0, 105.0),        # 0 = empty side
    ("top_of_book_offset", BUY, 0.0, 110.0, 105.0),
    ("top_of_book_offset", SELL, 100.0, None, 105.0),
    ("mid", BUY, 100.0, None, 105.0),                # mid needs both sides, never the mark
    ("mid", SELL, None, 110.0, 105.0),
    ("mark", BUY, 100.0, 110.0, None),               # no mark: the book is not a substitute
    ("mark", SELL, 100.0, 110.0, 0.0),
    ("mark", SELL, 100.0, 110.0, float("nan")),
])
def test_missing_inputs_give_no_price(strategy, side, bid, ask, mark):
    assert passive_price(strategy, side, bid=bid, ask=ask, mark=mark, tick=1.0, offset_pct=0.5) is None


def test_aggressive_prices_cross_the_spread():
    assert aggressive_price(BUY, bid=100.0, ask=110.5, tick=1.0) == 110.0     # snapped on the safe side
    assert aggressive_price(BUY, bid=100.0, ask=110.0, tick=1.0) == 110.0
    assert aggressive_price(SELL, bid=100.0, ask=110.0, tick=1.0) == 100.0
    assert aggressive_price(BUY, bid=100.0, ask=None, tick=1.0) is None
    assert aggressive_price(SELL, bid=0.0, ask=110.0, tick=1.0) is None


def test_own_resting_quantity_is_removed_from_the_touch():
    bids = [(100.0, 0.5), (99.0, 1.0)]
    assert touch_without_own(bids, 100.0, 0.5) == 99.0          # we were alone at 100
    assert touch_without_own(bids, 100.0, 0.3) == 100.0         # others rest there too
    assert touch_without_own(bids, 98.0, 0.5) == 100.0          # our order is elsewhere
    assert touch_without_own(bids, None, 0.0) == 100.0
    assert touch_without_own([(100.0, 0.5)], 100.0, 0.5) is None


# ---- executor entry point -----------------------------------------------------------------


def _untouchable(protocol: type):
    """A collaborator implementing ``protocol`` that fails the test if anything is used on it."""

    def refuse(name: str):
        def member(self, *args, **kwargs):
            raise AssertionError(f"start() must not touch {name}")
        return member

    methods, attributes = protocol_members(protocol)
    body = {name: refuse(name) for name in methods}
    body.update({name: property(refuse(name)) for name in attributes})
    return type(f"Untouchable{protocol.__name__}", (), body)()


def _executor():
    clock = SimulatedClock(start=1_000.0, speed=0)
    return SmartOrderbookExecutor(_untouchable(Ledger), _untouchable(PriceSource), clock)


def test_start_sends_nothing_and_falls_back_to_default_config():
    trade = SimpleNamespace(id="T000000001", seq=1)
    legs = [LegTarget(0, "BTCUSD-3MAR26-90000-C", BUY, 0.5), LegTarget(1, "BTCUSD-3MAR26-90000-P", BUY, 0.5)]
    for params in (None, ExecutionParams(), {"chunk_count": 2}):
        job = _executor().start(trade, legs, Intent.OPEN, params)
        assert job.config == SmartExecConfig() and job.status is JobStatus.WORKING and not job.done
    custom = SmartExecConfig(chunk_count=2)
    job = _executor().start(trade, legs, Intent.CLOSE_REQUOTE, custom, best_effort=True)
    assert job.config is custom and job.intent is Intent.CLOSE and job.trade_id == "T000000001"
    assert [leg.filled_qty for leg in job.result().legs] == [0.0, 0.0]


def test_start_refuses_empty_or_duplicate_legs():
    trade = SimpleNamespace(id="T000000001", seq=1)
    with pytest.raises(ValueError):
        _executor().start(trade, [], Intent.OPEN, None)
    leg = LegTarget(0, "BTCUSD-3MAR26-90000-C", BUY, 0.5)
    with pytest.raises(ValueError):
        _executor().start(trade, [leg, leg], Intent.OPEN, None)
