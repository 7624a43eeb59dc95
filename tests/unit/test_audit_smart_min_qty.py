"""Audit: the smart executor with ``min_order_qty`` above a small leg's chunk (BEHAVIOUR.md §6.3).

The finding: the least-filled leg's cap was ``max(floor_lot(total / N), filled + 0.01)``. A
0.1 leg with ``chunk_count=5`` and ``min_order_qty=0.05`` got a cap of 0.02, below the
minimum, so it never placed, while the 1.0 leg filled its first chunk: every open ended
PARTIAL and the lifecycle unwound the big leg (a guaranteed losing round trip). The least-filled
leg may now always step by one minimum order; the balance rule between legs still holds.
Everything runs on a ``SimulatedClock(speed=0)``: no sleep, no network.
"""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from clock import SimulatedClock
from contracts import Side
from execution_job import JobStatus, LegTarget
from multileg_orderbook import SmartExecConfig, SmartOrderbookExecutor, filled_fraction
from order_ledger import LOT, Intent, OrderLedger, snap_qty
from seams import Ledger, PriceSource, protocol_members
from tests.unit.engine_fakes import NOW, TRADE, Exchange, Market, sym

A, B, C = sym(120000), sym(80000, "P"), sym(130000)
BOOK = dict(bids=((95.0, 50.0),), asks=((105.0, 50.0),))
EPS = 1e-9


class ScriptedExchange(Exchange):
    """Fills each new order at its price by a share ``fill_share(symbol, qty)`` returns (0 = rests),
    and records every order below ``min_order_qty`` that does not complete its leg."""

    def __init__(self, clock: SimulatedClock, totals: dict[str, float], min_order_qty: float,
                 fill_share=lambda symbol, qty: qty) -> None:
        super().__init__(clock)
        self.totals = totals
        self.min_order_qty = min_order_qty
        self.fill_share = fill_share
        self.below_minimum: list[tuple[str, float, float]] = []
        self.beyond_plan: list[tuple[str, float, float]] = []

    def filled_on(self, symbol: str) -> float:
        return sum(row["fillQty"] for row in self.rows.values() if row["symbol"] == symbol)

    def create_order(self, symbol, qty, side, price, client_order_id, **kwargs):
        before = self.filled_on(symbol)
        qty = float(qty)
        if qty < self.min_order_qty - EPS and abs(before + qty - self.totals[symbol]) > EPS:
            self.below_minimum.append((symbol, before, qty))
        if before + qty > self.totals[symbol] + EPS:
            self.beyond_plan.append((symbol, before, qty))
        order_id = super().create_order(symbol, qty, side, price, client_order_id, **kwargs)
        share = snap_qty(min(qty, max(0.0, self.fill_share(symbol, qty))))
        if share > 0:
            self.fill(order_id, share, float(price))
        return order_id


def make_config(**overrides) -> SmartExecConfig:
    values = dict(chunk_count=5, time_per_chunk_seconds=10.0, reprice_interval_seconds=10.0,
                  aggressive_attempts=1, aggressive_wait_seconds=2.0, min_order_qty=0.05, grace_seconds=0.0)
    values.update(overrides)
    return SmartExecConfig(**values)


def make_job(legs: list[LegTarget], config: SmartExecConfig, fill_share=lambda symbol, qty: qty):
    clock = SimulatedClock(start=NOW, speed=0)
    totals = {leg.symbol: leg.qty for leg in legs}
    exchange = ScriptedExchange(clock, totals, config.min_order_qty, fill_share)
    market = Market(clock)
    for leg in legs:
        market.set(leg.symbol, mark=100.0, **BOOK)
    job = SmartOrderbookExecutor(OrderLedger(exchange, clock), market, clock).start(TRADE, legs, Intent.OPEN, config)
    return SimpleNamespace(clock=clock, exchange=exchange, job=job)


def filled_by_symbol(rig) -> dict[str, float]:
    return {symbol: rig.exchange.filled_on(symbol) for symbol in rig.exchange.totals}


def balance_violations(rig, config: SmartExecConfig) -> list[str]:
    """The balance rule: no leg's filled fraction above the least-filled leg's by more than one
    chunk (1/N) or, for a leg stepping as the least-filled one, one minimum order."""
    filled = filled_by_symbol(rig)
    totals = rig.exchange.totals
    fractions = {symbol: filled_fraction(filled[symbol], totals[symbol]) for symbol in totals}
    lowest = min(fractions[symbol] for symbol in totals if totals[symbol] >= LOT)
    bad = []
    for symbol, fraction in fractions.items():
        allowance = max(1.0 / config.chunk_count, config.min_order_qty / totals[symbol])
        if fraction > lowest + allowance + EPS:
            bad.append(f"{symbol} at {fraction:.3f} with the lowest at {lowest:.3f} (allowance {allowance:.3f})")
    return bad


def run(rig, config: SmartExecConfig, *, max_ticks: int = 2_000) -> list[str]:
    """Advance the job one simulated second at a time; the balance violations seen after any step."""
    seen: list[str] = []
    for _ in range(max_ticks):
        if rig.job.done:
            break
        rig.job.advance(rig.clock.now())
        seen += balance_violations(rig, config)
        rig.clock.advance(1.0)
    assert rig.job.done, "the job never ended"
    return seen


# ---- the finding, ported ----------------------------------------------------------------


def test_a_small_leg_below_the_minimum_chunk_is_placed_and_the_open_fills():
    config = make_config()
    rig = make_job([LegTarget(0, A, Side.BUY, 1.0), LegTarget(1, B, Side.BUY, 0.1)], config)
    violations = run(rig, config)
    result = rig.job.result()
    assert rig.job.status is JobStatus.FILLED, (rig.job.status, result.reason)
    assert {leg.symbol: leg.filled_qty for leg in result.legs} == pytest.approx({A: 1.0, B: 0.1})
    placed_b = [create["qty"] for create in rig.exchange.creates if create["symbol"] == B]
    assert placed_b and all(qty >= config.min_order_qty - EPS for qty in placed_b)   # never below the minimum
    assert sum(placed_b) == pytest.approx(0.1)                                         # never beyond the plan
    assert rig.exchange.below_minimum == [] and rig.exchange.beyond_plan == []
    assert violations == []


def test_the_big_leg_waits_for_the_small_one_before_running_ahead():
    config = make_config()
    rig = make_job([LegTarget(0, A, Side.BUY, 1.0), LegTarget(1, B, Side.BUY, 0.1)], config)
    while not rig.job.done:
        rig.job.advance(rig.clock.now())
        filled = filled_by_symbol(rig)
        if filled[B] < EPS:
            assert filled[A] <= 0.2 + EPS          # one chunk ahead of a leg at zero, no more
        rig.clock.advance(1.0)
    assert rig.job.status is JobStatus.FILLED


# ---- the balance rule still holds ------------------------------------------------------------


def test_a_small_leg_without_liquidity_still_holds_the_big_leg_at_one_chunk():
    config = make_config()
    rig = make_job([LegTarget(0, A, Side.BUY, 1.0), LegTarget(1, B, Side.BUY, 0.1)], config,
                   fill_share=lambda symbol, qty: qty if symbol == A else 0.0)
    violations = run(rig, config)
    filled = filled_by_symbol(rig)
    assert rig.job.status in (JobStatus.PARTIAL, JobStatus.FAILED)
    assert filled[B] == 0.0 and filled[A] <= 0.2 + EPS       # the big leg never ran past one chunk
    placed_b = [create["qty"] for create in rig.exchange.creates if create["symbol"] == B]
    assert placed_b and all(qty >= config.min_order_qty - EPS for qty in placed_b)   # it did try, at the minimum
    assert rig.exchange.below_minimum == [] and rig.exchange.beyond_plan == [] and violations == []


@pytest.mark.parametrize("seed", range(12))
def test_balance_rule_and_minimum_hold_under_random_partial_fills(seed):
    rng = random.Random(seed)
    chunk_count = rng.choice([2, 3, 5, 8])
    min_order_qty = rng.choice([0.01, 0.03, 0.05, 0.1])
    config = make_config(chunk_count=chunk_count, min_order_qty=min_order_qty)
    totals = [rng.choice([1.0, 0.5, 0.3]), rng.choice([0.1, 0.07, 0.04]), rng.choice([0.2, 0.03, 1.2])]
    legs = [LegTarget(index, symbol, Side.BUY, total) for index, (symbol, total) in enumerate(zip((A, B, C), totals))]

    def fill_share(symbol: str, qty: float) -> float:
        return rng.choice([0.0, qty / 2, qty, qty])

    rig = make_job(legs, config, fill_share)
    violations = run(rig, config)
    assert violations == [], (totals, chunk_count, min_order_qty)
    assert rig.exchange.below_minimum == [] and rig.exchange.beyond_plan == []
    filled = filled_by_symbol(rig)
    assert all(filled[symbol] <= total + EPS for symbol, total in zip((A, B, C), totals))


@pytest.mark.parametrize("chunk_count, min_order_qty, totals", [
    (5, 0.05, (1.0, 0.1)),
    (50, 0.05, (1.0, 0.1)),          # 50 chunks: both legs' first chunks are below the minimum
    (5, 0.1, (1.0, 0.1)),            # the minimum is the small leg's whole quantity
    (5, 0.05, (0.5, 0.03)),          # a leg smaller than the minimum goes in one order, whole
    (3, 0.05, (0.1, 0.1, 0.1)),
])
def test_with_full_liquidity_every_open_fills_without_breaking_the_rules(chunk_count, min_order_qty, totals):
    config = make_config(chunk_count=chunk_count, min_order_qty=min_order_qty)
    legs = [LegTarget(index, symbol, Side.BUY, total) for index, (symbol, total) in enumerate(zip((A, B, C), totals))]
    rig = make_job(legs, config)
    violations = run(rig, config, max_ticks=10_000)
    assert rig.job.status is JobStatus.FILLED, rig.job.result().reason
    assert violations == [] and rig.exchange.below_minimum == [] and rig.exchange.beyond_plan == []


# ---- the lot: options only ------------------------------------------------------------------


def untouchable(protocol: type):
    """A collaborator implementing ``protocol`` that fails the test if anything is used on it."""

    def refuse(name: str):
        def member(self, *args, **kwargs):
            raise AssertionError(f"start() must not touch {name}")
        return member

    methods, attributes = protocol_members(protocol)
    body = {name: refuse(name) for name in methods}
    body.update({name: property(refuse(name)) for name in attributes})
    return type(f"Untouchable{protocol.__name__}", (), body)()


def test_a_leg_on_another_lot_is_refused_at_start_before_any_order():
    clock = SimulatedClock(start=NOW, speed=0)
    executor = SmartOrderbookExecutor(untouchable(Ledger), untouchable(PriceSource), clock)
    legs = [LegTarget(0, A, Side.BUY, 0.5), LegTarget(1, "BTCUSD", Side.SELL, 0.123, lot=0.001)]
    with pytest.raises(ValueError, match="leg 1 .*lot 0.001"):
        executor.start(TRADE, legs, Intent.OPEN, make_config())
    assert executor.start(TRADE, legs[:1], Intent.OPEN, make_config()).status is JobStatus.WORKING
