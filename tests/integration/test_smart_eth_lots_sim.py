"""ETH option structures in the smart engine, against the simulated exchange (BEHAVIOUR.md §6.3).

ETH options trade in steps of 0.1 (``contracts.UNDERLYINGS``), BTC options in 0.01. The smart
engine used to chunk and balance every leg on the BTC lot: an ETH strangle of 0.3 a leg in 5
chunks sent 0.06 orders the exchange refuses (10558), and a structure whose legs differ in
size opened one leg and left the other naked. Each leg is now worked on its own lot.

Real HTTP and signing on loopback; the simulated clock moves in 2 s steps like the monitor's
execution tick (no sleep). Passive orders never fill at random here, so fills come from the
aggressive fallback and the order sequence is deterministic.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from conditions import max_hold_hours
from contracts import UNDERLYINGS
from execution_job import JobStatus, LegTarget
from multileg_orderbook import SmartExecConfig, filled_fraction, leg_min_order
from option_selection import resolve_legs, strangle
from order_ledger import Intent
from simulator.exchange import ExchangeConfig
from strategy import StrategyConfig
from tests.integration.test_smart_exec_sim import smart_rig

TRADE = SimpleNamespace(id="T000000011", seq=11)
FAST = SmartExecConfig(time_per_chunk_seconds=20.0, aggressive_attempts=3, aggressive_wait_seconds=4.0,
                       grace_seconds=2.0)
ETH_STEP = UNDERLYINGS["ETH"].option_qty_step
MAX_REQUESTS = 6
EPS = 1e-9


@pytest.fixture
def rig(sim_factory):
    rig = smart_rig(sim_factory(exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0)))
    yield rig
    rig.client.close()


def _run(rig, job, *, each_tick=None, max_ticks: int = 400):
    for _ in range(max_ticks):
        before = sum(rig.sim.counts.values())
        status = job.advance(rig.sim.clock.now())
        assert sum(rig.sim.counts.values()) - before <= MAX_REQUESTS
        if each_tick is not None:
            each_tick()
        if status is not JobStatus.WORKING:
            return job.result()
        rig.sim.clock.advance(2.0)
    raise AssertionError(f"job still working after {max_ticks} ticks: {job!r}")


def _creates(rig) -> list[tuple[str, float, object]]:
    return [(c.params.get("symbol"), float(c.params["qty"]), c.code) for c in rig.sim.requests_for("create_order")]


def _off_step(rig) -> list[tuple[str, float, object]]:
    return [c for c in _creates(rig) if abs(c[1] / ETH_STEP - round(c[1] / ETH_STEP)) > 1e-9]


def test_eth_strangle_in_smart_mode_sends_only_whole_eth_lots_and_fills(rig):
    # Smart ETH is a supported configuration: the strategy is accepted as it is.
    config = StrategyConfig(name="eth_smart", legs=strangle(0.3, underlying="ETH", side=2),
                            execution_mode="smart", exit_conditions=[max_hold_hours(24)])
    legs = resolve_legs(config.legs, rig.market)
    targets = [LegTarget(leg.index, leg.symbol, leg.side, leg.qty) for leg in legs]
    assert [target.lot for target in targets] == [ETH_STEP, ETH_STEP]
    job = rig.executor.start(TRADE, targets, Intent.OPEN, FAST)
    result = _run(rig, job)
    creates = _creates(rig)
    assert creates, "no order was sent"
    assert _off_step(rig) == [], f"orders off the 0.1 ETH step: {_off_step(rig)[:4]}"
    assert all(code in (0, None) for _, _, code in creates), f"an order was refused: {creates}"
    assert result.status is JobStatus.FILLED, result.reason
    assert [leg.filled_qty for leg in result.legs] == pytest.approx([0.3, 0.3])


def test_eth_uneven_structure_in_smart_mode_never_leaves_a_leg_naked(rig):
    legs = resolve_legs(strangle(0.3, underlying="ETH", side=2), rig.market)
    # call 0.5 ETH, put 0.3 ETH: both valid ETH sizes (LegSpec and StrategyConfig accept them)
    targets = [LegTarget(0, legs[0].symbol, legs[0].side, 0.5), LegTarget(1, legs[1].symbol, legs[1].side, 0.3)]
    job = rig.executor.start(TRADE, targets, Intent.OPEN, FAST)
    chunk_count = FAST.chunk_count
    leads: list[str] = []

    def no_leg_ahead() -> None:
        # One chunk ahead at most: 1/N of a leg's total, or one of its minimum orders where one
        # chunk is less than a 0.1 lot (0.3 / 5 = 0.06); a leg with fills while the other has
        # none is exactly the naked position this guards against.
        fills = job.result().legs
        fractions = [filled_fraction(leg.filled_qty, leg.target_qty, ETH_STEP) for leg in fills]
        lowest = min(fractions)
        for leg, fraction in zip(fills, fractions):
            allowance = max(1.0 / chunk_count, leg_min_order(FAST.min_order_qty, ETH_STEP) / leg.target_qty)
            if fraction > lowest + allowance + EPS:
                leads.append(f"{leg.symbol} at {fraction:.3f} with the lowest at {lowest:.3f}")

    result = _run(rig, job, each_tick=no_leg_ahead)
    assert leads == [], leads[:4]
    assert _off_step(rig) == [], f"orders off the 0.1 ETH step: {_off_step(rig)[:4]}"
    assert result.status is JobStatus.FILLED, (
        f"open ended {result.status.value} with {[leg.filled_qty for leg in result.legs]}: {result.reason}")
    assert [leg.filled_qty for leg in result.legs] == pytest.approx([0.5, 0.3])
