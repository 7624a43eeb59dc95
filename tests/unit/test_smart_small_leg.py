"""A leg with fewer minimum orders than chunks must not hold the structure (BEHAVIOUR.md §6.3).

The finding: chunk targets are ``floor_lot(total × k / N)``, so a one-lot leg (0.01 BTC, 0.1
ETH) had a target of 0 in every chunk but the last. The working quantity is
``min(chunk target, cap) − filled``, so the least-filled leg's one-minimum-order step was cut
to 0: the small leg stayed at 0 % and capped every other leg at ``floor_lot(total / N)``. The
structure waited at its first chunk until the last one, and with 20 chunks of 30 s an open
ended PARTIAL (the lifecycle then unwinds it) on a market that filled every order at once.
A leg's chunk target is now at least ``k`` minimum orders (up to its total); the balance
cap still holds a small leg back once it is ahead.
Everything runs on a ``SimulatedClock(speed=0)``: no sleep, no network.
"""
from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from clock import SimulatedClock
from contracts import Side
from execution_job import JobStatus, LegTarget
from multileg_orderbook import SmartExecConfig, SmartOrderbookExecutor, chunk_targets, filled_fraction
from order_ledger import LOT, Intent, OrderLedger, snap_qty
from tests.unit.engine_fakes import FILLED, NOW, TRADE, Exchange, Market, sym

WING, PUT, CALL = sym(120000), sym(80000, "P"), sym(130000)
ETH_WING = "ETHUSD-9MAR26-120000-C"      # the fake market prices every row near 100 000
BOOK = dict(bids=((95.0, 50.0),), asks=((105.0, 50.0),))
TWENTY_FAST = SmartExecConfig(chunk_count=20, time_per_chunk_seconds=30.0)   # the rest: the defaults
TICK_SECONDS = 2.0                       # the monitor's execution tick
EPS = 1e-9


class FullLiquidityExchange(Exchange):
    """Every order fills completely, at its price, the first time it is queried."""

    def query_order(self, order_id: int | None = None, client_order_id: int | None = None) -> dict[str, Any]:
        row = self.rows[order_id] if order_id is not None else next(
            r for r in self.rows.values() if r["clientOrderId"] == client_order_id)
        if row["state"] != FILLED:
            self.fill(row["orderId"], row["qty"], row["price"])
        return super().query_order(order_id, client_order_id)

    def filled_on(self, symbol: str) -> float:
        return sum(row["fillQty"] for row in self.rows.values() if row["symbol"] == symbol)


def structure(wing: str = WING, wing_qty: float = 0.01) -> list[LegTarget]:
    """A small wing beside two 0.3 legs."""
    return [LegTarget(0, wing, Side.SELL, wing_qty),
            LegTarget(1, PUT, Side.SELL, 0.3),
            LegTarget(2, CALL, Side.BUY, 0.3)]


def make_job(legs: list[LegTarget], config: SmartExecConfig) -> SimpleNamespace:
    clock = SimulatedClock(start=NOW, speed=0)
    exchange = FullLiquidityExchange(clock)
    market = Market(clock)
    for leg in legs:
        market.set(leg.symbol, mark=100.0, **BOOK)
    job = SmartOrderbookExecutor(OrderLedger(exchange, clock), market, clock).start(TRADE, legs, Intent.OPEN, config)
    return SimpleNamespace(clock=clock, exchange=exchange, job=job, legs=legs)


def run(rig, config: SmartExecConfig, *, watched: str = PUT) -> tuple[float, list[str]]:
    """Advance the job tick by tick until it ends: what ``watched`` had filled before the last
    chunk began, and the balance violations seen after any step."""
    before_last, violations = 0.0, []
    for _ in range(5_000):
        if rig.job.done:
            break
        rig.job.advance(rig.clock.now())
        if rig.job.chunk < config.chunk_count:
            before_last = rig.exchange.filled_on(watched)
        violations += balance_violations(rig, config)
        rig.clock.advance(TICK_SECONDS)
    assert rig.job.done, "the job never ended"
    return before_last, violations


def balance_violations(rig, config: SmartExecConfig) -> list[str]:
    """No leg's filled fraction above the least-filled leg's by more than one chunk or, for the
    leg that stepped as the least-filled one, one lot of it (the minimum order is one lot here)."""
    fractions = {leg.symbol: filled_fraction(rig.exchange.filled_on(leg.symbol), leg.qty, leg.lot)
                 for leg in rig.legs}
    lowest = min(fractions.values())
    return [f"{leg.symbol} at {fractions[leg.symbol]:.3f}, the lowest at {lowest:.3f}" for leg in rig.legs
            if fractions[leg.symbol] > lowest + max(1.0 / config.chunk_count, leg.lot / leg.qty) + EPS]


# ---- the finding, ported ----------------------------------------------------------------


@pytest.mark.parametrize("wing, wing_qty", [(WING, 0.01), (ETH_WING, 0.1)])
def test_full_liquidity_open_with_a_one_lot_leg_fills(wing, wing_qty):
    rig = make_job(structure(wing, wing_qty), TWENTY_FAST)
    _, violations = run(rig, TWENTY_FAST)
    filled = {leg.symbol: rig.exchange.filled_on(leg.symbol) for leg in rig.legs}
    assert rig.job.status is JobStatus.FILLED, (filled, rig.job.result().reason)
    assert filled == pytest.approx({wing: wing_qty, PUT: 0.3, CALL: 0.3})
    assert violations == []


def test_the_one_lot_leg_does_not_hold_the_structure_at_its_first_chunk():
    rig = make_job(structure(), TWENTY_FAST)
    before_last, _ = run(rig, TWENTY_FAST)
    # 19 chunks of 30 s on a market that fills every order: the 0.3 legs are far past 0.01.
    assert before_last > 0.1, before_last


def test_default_config_does_not_hold_the_structure_at_chunk_one_for_four_chunks():
    config = SmartExecConfig()       # 5 chunks of 120 s: the documented defaults
    rig = make_job(structure(), config)
    before_last, _ = run(rig, config)
    assert before_last >= 0.18, before_last   # chunk 4 of 5 targets 0.24 of a 0.3 leg
    assert rig.job.status is JobStatus.FILLED


def test_a_two_lot_leg_does_not_hold_the_structure_halfway():
    """A first-chunk floor alone is not enough: a 0.02 leg's targets stay at 0.01 from chunk 10
    to chunk 19, which caps the 0.3 legs at 55 % until the last chunk."""
    rig = make_job(structure(wing_qty=0.02), TWENTY_FAST)
    before_last, violations = run(rig, TWENTY_FAST)
    assert before_last >= 0.25, before_last   # chunk 19 of 20 targets 0.28 of a 0.3 leg
    assert rig.job.status is JobStatus.FILLED and violations == []


# ---- the targets ----------------------------------------------------------------------------


@pytest.mark.parametrize("total, count, lot, min_order, expected", [
    (0.01, 20, 0.01, 0.01, [0.01] * 20),                        # one lot: all of it in the first chunk
    (0.03, 5, 0.01, 0.01, [0.01, 0.02, 0.03, 0.03, 0.03]),      # one lot per chunk until done
    (0.1, 5, 0.01, 0.05, [0.05, 0.1, 0.1, 0.1, 0.1]),           # one minimum order per chunk
    (0.3, 5, 0.1, 0.1, [0.1, 0.2, 0.3, 0.3, 0.3]),              # an ETH leg on its 0.1 lot
    (0.3, 3, 0.01, 0.01, [0.1, 0.2, 0.3]),                      # a chunk above the minimum: unchanged
])
def test_chunk_targets_are_at_least_one_minimum_order_per_chunk(total, count, lot, min_order, expected):
    assert chunk_targets(total, count, lot, min_order=min_order) == pytest.approx(expected, abs=1e-12)


def test_a_leg_with_a_minimum_order_per_chunk_keeps_its_floored_targets():
    rng = random.Random(11)
    for _ in range(500):
        count = rng.randint(1, 50)
        lot = rng.choice([LOT, 0.1])
        min_order = lot * rng.randint(1, 5)
        total = snap_qty(rng.randint(1, 4000) * lot, lot)
        targets = chunk_targets(total, count, lot, min_order=min_order)
        assert len(targets) == count and targets[-1] == total
        assert all(a <= b + EPS for a, b in zip(targets, targets[1:]))      # cumulative
        assert all(snap_qty(t, lot) == t and t <= total + EPS for t in targets)  # on the lot, never beyond
        if total / count >= min_order - EPS:
            assert targets == chunk_targets(total, count, lot), (total, count, lot, min_order)
