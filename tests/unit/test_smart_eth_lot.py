"""The smart engine on each leg's own lot: ETH options trade in 0.1 steps (BEHAVIOUR.md §6.3).

The finding: every leg was chunked and balanced on the BTC lot (0.01), so an ETH strangle of
0.3 a leg in 5 chunks sent 0.06 orders the exchange refuses (10558), and a structure with
legs of different sizes opened one leg and left the other naked. ``LegTarget.lot`` now comes
from the symbol (never finer than the instrument's step) and the engine works each leg on it.
Everything runs on a ``SimulatedClock(speed=0)``: no sleep, no network.
"""
from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest

from clock import SimulatedClock
from contracts import UNDERLYINGS, Side
from execution_job import JobStatus, LegTarget, instrument_lot
from multileg_orderbook import (
    SmartExecConfig,
    SmartOrderbookExecutor,
    balance_cap,
    chunk_targets,
    filled_fraction,
    leg_min_order,
)
from order_ledger import LOT, Intent, OrderLedger, snap_qty
from tests.unit.engine_fakes import NOW, TRADE, Exchange, Market, sym

ETH_LOT = UNDERLYINGS["ETH"].option_qty_step
BTC_LOT = UNDERLYINGS["BTC"].option_qty_step
# The fake market prices every chain row against a 100 000 underlying: strikes near it.
ETH_CALL, ETH_PUT = "ETHUSD-9MAR26-120000-C", "ETHUSD-9MAR26-80000-P"
BTC_CALL = sym(120000)
BOOK = dict(bids=((95.0, 50.0),), asks=((105.0, 50.0),))
EPS = 1e-9


def on_step(qty: float, step: float) -> bool:
    return abs(qty / step - round(qty / step)) < 1e-9


# ---- LegTarget.lot --------------------------------------------------------------------


def test_the_steps_this_file_relies_on():
    assert (ETH_LOT, BTC_LOT, LOT) == (0.1, 0.01, 0.01)


@pytest.mark.parametrize("symbol, expected", [
    (BTC_CALL, 0.01),
    (ETH_CALL, 0.1),
    ("BTCUSD", UNDERLYINGS["BTC"].perp_qty_step),
    ("ETHUSD", UNDERLYINGS["ETH"].perp_qty_step),
    ("A", LOT),                          # contracts cannot read it: the option lot, as before
    ("SOLUSD-9MAR26-150-C", LOT),        # readable, but no underlying of the table
])
def test_the_lot_left_out_comes_from_the_symbol(symbol, expected):
    assert LegTarget(0, symbol, Side.BUY, 1.0).lot == expected
    assert instrument_lot(symbol) == (None if expected == LOT and symbol in ("A", "SOLUSD-9MAR26-150-C")
                                      else expected)


def test_a_given_lot_on_the_step_or_coarser_is_kept():
    assert LegTarget(0, ETH_CALL, Side.SELL, 0.3, 0.1).lot == 0.1
    assert LegTarget(0, ETH_CALL, Side.SELL, 0.4, 0.2).lot == 0.2
    assert LegTarget(0, BTC_CALL, Side.SELL, 0.3, 0.01).lot == 0.01
    assert LegTarget(0, "A", Side.SELL, 0.3, 0.001).lot == 0.001   # no known step: nothing to check against


def test_a_given_lot_finer_than_the_step_is_refused_naming_leg_symbol_lot_and_step():
    with pytest.raises(ValueError) as caught:
        LegTarget(3, ETH_CALL, Side.SELL, 0.3, 0.01)
    message = str(caught.value)
    for part in ("leg 3", ETH_CALL, "lot 0.01", "step 0.1"):
        assert part in message, message
    with pytest.raises(ValueError, match=r"leg 1 \(BTCUSD\).*lot 0.0001.*step 0.001"):
        LegTarget(1, "BTCUSD", Side.BUY, 0.5, 0.0001)
    with pytest.raises(ValueError, match="leg 0 .*lot 0.001.*step 0.01"):
        LegTarget(0, BTC_CALL, Side.BUY, 0.5, lot=0.001)


@pytest.mark.parametrize("lot", [0.0, -0.1, math.nan, math.inf])
def test_a_lot_that_is_no_step_is_still_refused(lot):
    with pytest.raises(ValueError, match="lot"):
        LegTarget(0, ETH_CALL, Side.BUY, 0.3, lot)


def test_targets_with_and_without_the_derived_lot_are_equal():
    assert LegTarget(0, ETH_CALL, Side.BUY, 0.3) == LegTarget(0, ETH_CALL, Side.BUY, 0.3, 0.1)
    assert LegTarget(0, BTC_CALL, Side.BUY, 0.3) == LegTarget(0, BTC_CALL, Side.BUY, 0.3, 0.01)


# ---- the pure rules on a 0.1 lot --------------------------------------------------------


@pytest.mark.parametrize("total, count, expected", [
    (0.3, 5, [0.0, 0.1, 0.1, 0.2, 0.3]),
    (0.5, 5, [0.1, 0.2, 0.3, 0.4, 0.5]),
    (1.0, 3, [0.3, 0.6, 1.0]),
    (0.35, 2, [0.1, 0.3]),                # the total itself is floored to the lot
    (0.05, 5, [0.0, 0.0, 0.0, 0.0, 0.0]),  # less than one lot: nothing to do
])
def test_chunk_targets_on_the_eth_lot(total, count, expected):
    assert chunk_targets(total, count, ETH_LOT) == pytest.approx(expected, abs=1e-12)


def test_chunk_targets_on_the_eth_lot_property():
    rng = random.Random(5)
    for _ in range(2_000):
        total = round(rng.uniform(0, 20), rng.choice([1, 2, 3]))
        count = rng.randint(1, 50)
        targets = chunk_targets(total, count, ETH_LOT)
        assert all(on_step(target, ETH_LOT) for target in targets), (total, count, targets)
        assert targets == sorted(targets)
        assert targets[-1] == snap_qty(total, ETH_LOT)


@pytest.mark.parametrize("total, lowest, count, expected", [
    (0.3, 0.0, 5, 0.0),      # one chunk of 0.3 is 0.06: below one lot, so no step by balance
    (0.5, 0.0, 5, 0.1),
    (0.5, 1 / 3, 5, 0.2),    # floor(0.5 × 0.533) on the 0.1 lot
    (0.3, 0.4, 5, 0.1),
    (0.3, 1.0, 5, 0.3),
])
def test_balance_cap_on_the_eth_lot(total, lowest, count, expected):
    assert balance_cap(total, lowest, count, ETH_LOT) == pytest.approx(expected, abs=1e-12)


def test_balance_cap_on_the_eth_lot_is_on_the_lot_and_never_above_the_rule():
    rng = random.Random(9)
    for _ in range(2_000):
        total = snap_qty(rng.uniform(0, 10), ETH_LOT)
        lowest, count = rng.random(), rng.randint(1, 20)
        cap = balance_cap(total, lowest, count, ETH_LOT)
        assert on_step(cap, ETH_LOT)
        assert cap <= total * min(1.0, lowest + 1 / count) + EPS


def test_filled_fraction_counts_a_leg_below_its_own_lot_as_done():
    assert filled_fraction(0.0, 0.05, ETH_LOT) == 1.0
    assert filled_fraction(0.0, 0.05) == 0.0                     # on the BTC lot it is work to do
    assert filled_fraction(0.1, 0.3, ETH_LOT) == pytest.approx(1 / 3)


@pytest.mark.parametrize("min_order_qty, lot, expected", [
    (0.01, 0.1, 0.1),     # at least one lot of the leg
    (0.05, 0.1, 0.1),     # rounded UP to the leg's lot
    (0.1, 0.1, 0.1),
    (0.15, 0.1, 0.2),
    (0.3, 0.1, 0.3),
    (0.05, 0.01, 0.05),   # on the BTC lot: the configured value unchanged
    (0.01, 0.01, 0.01),
    (0.01, 0.001, 0.01),
])
def test_leg_min_order(min_order_qty, lot, expected):
    assert leg_min_order(min_order_qty, lot) == pytest.approx(expected, abs=1e-12)


def test_the_btc_rules_are_those_of_the_default_lot():
    rng = random.Random(3)
    for _ in range(2_000):
        total = round(rng.uniform(0, 5), rng.choice([2, 3]))
        count, lowest = rng.randint(1, 12), rng.random()
        assert chunk_targets(total, count, BTC_LOT) == chunk_targets(total, count)
        assert balance_cap(total, lowest, count, BTC_LOT) == balance_cap(total, lowest, count)
        assert filled_fraction(lowest * total, total, BTC_LOT) == filled_fraction(lowest * total, total)
    for qty in (0.01, 0.02, 0.05, 0.1, 0.37):
        assert leg_min_order(qty, BTC_LOT) == qty


# ---- jobs on the ETH lot (fake exchange) ---------------------------------------------------


class LotExchange(Exchange):
    """Refuses (as the exchange does) any order off its symbol's step; otherwise fills each new
    order by ``fill_share(symbol, qty)`` at its price (0 = rests)."""

    def __init__(self, clock: SimulatedClock, totals: dict[str, float], fill_share) -> None:
        super().__init__(clock)
        self.totals = totals
        self.fill_share = fill_share
        self.off_step: list[tuple[str, float]] = []
        self.beyond_plan: list[tuple[str, float, float]] = []

    def filled_on(self, symbol: str) -> float:
        return sum(row["fillQty"] for row in self.rows.values() if row["symbol"] == symbol)

    def create_order(self, symbol, qty, side, price, client_order_id, **kwargs):
        qty = float(qty)
        step = instrument_lot(symbol) or LOT
        if not on_step(qty, step):
            self.off_step.append((symbol, qty))
        before = self.filled_on(symbol)
        if before + qty > self.totals[symbol] + EPS:
            self.beyond_plan.append((symbol, before, qty))
        order_id = super().create_order(symbol, qty, side, price, client_order_id, **kwargs)
        share = snap_qty(min(qty, max(0.0, self.fill_share(symbol, qty))), step)
        if share > 0:
            self.fill(order_id, share, float(price))
        return order_id


def make_config(**overrides) -> SmartExecConfig:
    values = dict(chunk_count=5, time_per_chunk_seconds=10.0, reprice_interval_seconds=10.0,
                  aggressive_attempts=1, aggressive_wait_seconds=2.0, grace_seconds=0.0)
    values.update(overrides)
    return SmartExecConfig(**values)


def make_job(legs: list[LegTarget], config: SmartExecConfig, fill_share=lambda symbol, qty: qty):
    clock = SimulatedClock(start=NOW, speed=0)
    exchange = LotExchange(clock, {leg.symbol: leg.qty for leg in legs}, fill_share)
    market = Market(clock)
    for leg in legs:
        market.set(leg.symbol, mark=100.0, **BOOK)
    job = SmartOrderbookExecutor(OrderLedger(exchange, clock), market, clock).start(TRADE, legs, Intent.OPEN, config)
    return SimpleNamespace(clock=clock, exchange=exchange, job=job, legs=legs)


def lead_violations(rig, config: SmartExecConfig) -> list[str]:
    """No leg more than one chunk ahead of the least-filled one. On a coarse lot one chunk may be
    less than a lot, so a leg may lead by one chunk or by one of its minimum orders."""
    totals = rig.exchange.totals
    fractions = {s: filled_fraction(rig.exchange.filled_on(s), totals[s], ETH_LOT) for s in totals}
    lowest = min(fractions.values())
    bad = []
    for symbol, fraction in fractions.items():
        allowance = max(1.0 / config.chunk_count, leg_min_order(config.min_order_qty, ETH_LOT) / totals[symbol])
        if fraction > lowest + allowance + EPS:
            bad.append(f"{symbol} at {fraction:.3f}, the lowest at {lowest:.3f}")
    return bad


def run(rig, config: SmartExecConfig, *, max_ticks: int = 3_000) -> list[str]:
    seen: list[str] = []
    for _ in range(max_ticks):
        if rig.job.done:
            break
        rig.job.advance(rig.clock.now())
        seen += lead_violations(rig, config)
        rig.clock.advance(1.0)
    assert rig.job.done, "the job never ended"
    return seen


def test_an_eth_strangle_is_worked_in_whole_eth_lots_and_fills():
    config = make_config()
    rig = make_job([LegTarget(0, ETH_CALL, Side.SELL, 0.3), LegTarget(1, ETH_PUT, Side.SELL, 0.3)], config)
    assert run(rig, config) == []
    result = rig.job.result()
    assert rig.job.status is JobStatus.FILLED, result.reason
    assert rig.exchange.off_step == [] and rig.exchange.beyond_plan == []
    assert {leg.symbol: leg.filled_qty for leg in result.legs} == pytest.approx({ETH_CALL: 0.3, ETH_PUT: 0.3})
    assert [c["qty"] for c in rig.exchange.creates] and all(c["qty"] >= ETH_LOT - EPS for c in rig.exchange.creates)


def test_uneven_eth_legs_fill_together_without_a_naked_leg():
    config = make_config()
    rig = make_job([LegTarget(0, ETH_CALL, Side.SELL, 0.5), LegTarget(1, ETH_PUT, Side.SELL, 0.3)], config)
    assert run(rig, config) == []
    assert rig.job.status is JobStatus.FILLED, rig.job.result().reason
    assert rig.exchange.off_step == [] and rig.exchange.beyond_plan == []


def test_the_minimum_order_is_rounded_up_to_the_eth_lot():
    config = make_config(min_order_qty=0.05)
    rig = make_job([LegTarget(0, ETH_CALL, Side.BUY, 1.0), LegTarget(1, ETH_PUT, Side.BUY, 0.2)], config)
    assert run(rig, config) == []
    assert rig.job.status is JobStatus.FILLED, rig.job.result().reason
    assert rig.exchange.off_step == []
    assert min(c["qty"] for c in rig.exchange.creates) >= ETH_LOT - EPS


def test_an_eth_leg_without_liquidity_holds_the_other_at_one_chunk():
    config = make_config(aggressive_attempts=2)
    rig = make_job([LegTarget(0, ETH_CALL, Side.SELL, 1.0), LegTarget(1, ETH_PUT, Side.SELL, 0.3)], config,
                   fill_share=lambda symbol, qty: 0.0 if symbol == ETH_PUT else qty)
    assert run(rig, config) == []
    assert rig.job.status is JobStatus.PARTIAL
    assert rig.exchange.filled_on(ETH_CALL) == pytest.approx(0.2)   # one chunk of 1.0 in 5
    assert rig.exchange.filled_on(ETH_PUT) == 0.0
    assert rig.exchange.off_step == []


@pytest.mark.parametrize("seed", range(12))
def test_eth_lots_and_balance_hold_under_random_partial_fills(seed):
    rng = random.Random(seed)
    config = make_config(chunk_count=rng.randint(2, 8), min_order_qty=rng.choice([0.01, 0.05, 0.1, 0.2]),
                         aggressive_attempts=rng.randint(1, 3))
    totals = [round(rng.randint(1, 15) * ETH_LOT, 1) for _ in range(2)]
    rig = make_job([LegTarget(0, ETH_CALL, Side.SELL, totals[0]), LegTarget(1, ETH_PUT, Side.BUY, totals[1])],
                   config, fill_share=lambda symbol, qty: rng.choice([0.0, qty / 2, qty]))
    assert run(rig, config) == []
    assert rig.exchange.off_step == [] and rig.exchange.beyond_plan == []
    assert rig.job.status in (JobStatus.FILLED, JobStatus.PARTIAL, JobStatus.FAILED)


def test_mixed_btc_and_eth_legs_each_use_their_own_lot():
    config = make_config()
    rig = make_job([LegTarget(0, BTC_CALL, Side.BUY, 0.07), LegTarget(1, ETH_PUT, Side.BUY, 0.4)], config)
    run(rig, config)
    assert rig.job.status is JobStatus.FILLED, rig.job.result().reason
    assert rig.exchange.off_step == []
    assert any(not on_step(c["qty"], ETH_LOT) for c in rig.exchange.creates if c["symbol"] == BTC_CALL)


# ---- start --------------------------------------------------------------------------------


def _executor():
    clock = SimulatedClock(start=NOW, speed=0)
    return SmartOrderbookExecutor(OrderLedger(Exchange(clock), clock), Market(clock), clock)


def test_start_takes_eth_option_legs():
    job = _executor().start(TRADE, [LegTarget(0, ETH_CALL, Side.SELL, 0.3), LegTarget(1, ETH_PUT, Side.SELL, 0.3)],
                            Intent.OPEN, make_config())
    assert job.status is JobStatus.WORKING


@pytest.mark.parametrize("perp", ["BTCUSD", "ETHUSD"])
def test_start_still_refuses_a_perpetual_leg(perp):
    with pytest.raises(ValueError, match=rf"leg 1 \({perp}\) is a perpetual.*limit engine"):
        _executor().start(TRADE, [LegTarget(0, ETH_CALL, Side.SELL, 0.3), LegTarget(1, perp, Side.BUY, 0.5)],
                          Intent.OPEN, make_config())
