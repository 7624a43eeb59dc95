"""Execution engines and an order book that cannot be right: crossed, or with an insane side.

Rule: never place an order from a missing, stale, zero or insane price. Two audit findings:

* F3, crossed book. With the mark at 100, a book of bid 250 / ask 110 has both touches inside
  the deliberately wide sanity band (about [13, 320]), yet one of them is wrong. The smart
  executor, the phased limit engine and the basic limit path used to buy at 250, 2.5 times
  the mark. Now a leg whose sane touches cross is unpriced for the step: nothing is placed,
  a working order is left alone, and the reason says "crossed book".
* F4, the basic limit path's sell floor and buy cap were computed from the raw book, an insane
  side included: a sell with bid 90 and an insane ask 5 got fair = mid(90, 5) = 47.5 and sold
  at 89, below its floor of 95. The fair value now comes from the sane sides, as in the
  phased path.

Each test also has its control: a normal, uncrossed book trades exactly as before.
"""
from __future__ import annotations

from typing import Any

import pytest

from clock import SimulatedClock
from contracts import Side
from execution_job import ExecutionJob, JobStatus, LegTarget
from multileg_orderbook import SmartExecConfig, SmartOrderbookExecutor
from order_ledger import Intent, OrderLedger
from price_sanity import band_of, crossed_problem
from tests.unit.engine_fakes import NOW, TRADE, Exchange, Market, sym
from trade_execution import ExecutionParams, ExecutionPhase, LimitFillManager

A, B = sym(120000), sym(80000, "P")     # marks 100: bands about [13, 320]
NORMAL: dict[str, Any] = dict(bids=((95.0, 5.0),), asks=((105.0, 5.0),))
CROSSED: dict[str, Any] = dict(bids=((250.0, 5.0),), asks=((110.0, 5.0),))   # bid 250 > ask 110, both in band


class Rig:
    """A simulated clock, the scripted market and exchange, and a ledger over them."""

    def __init__(self, book_a: dict[str, Any], book_b: dict[str, Any] | None = None) -> None:
        self.clock = SimulatedClock(start=NOW, speed=0)
        self.exchange = Exchange(self.clock)
        self.market = Market(self.clock)
        self.market.set(A, mark=100.0, **book_a)
        self.market.set(B, mark=100.0, **(book_b or NORMAL))
        self.ledger = OrderLedger(self.exchange, self.clock)

    def run(self, job: ExecutionJob, steps: int, every: float = 1.0) -> None:
        for _ in range(steps):
            job.advance(self.clock.now())
            self.clock.advance(every)

    def smart(self, legs: list[LegTarget], *, intent: Intent = Intent.OPEN, best_effort: bool = False) -> ExecutionJob:
        return SmartOrderbookExecutor(self.ledger, self.market, self.clock).start(
            TRADE, legs, intent, SmartExecConfig(chunk_count=1), best_effort=best_effort)

    def limit(self, legs: list[LegTarget], params: ExecutionParams, *, intent: Intent = Intent.OPEN,
              best_effort: bool = False) -> ExecutionJob:
        return LimitFillManager(self.ledger, self.market, self.clock).start(
            TRADE, legs, intent, params, best_effort=best_effort)


def _buy(symbol: str = A, index: int = 0) -> LegTarget:
    return LegTarget(index, symbol, Side.BUY, 1.0)


def _phased(pricing: str) -> ExecutionParams:
    return ExecutionParams(phases=(ExecutionPhase(pricing, 60.0, 15.0),))


# ---- the shared rule -------------------------------------------------------------------


def test_the_crossed_book_fixture_is_inside_the_band_on_both_sides() -> None:
    """Why the band alone does not catch it: both touches are believable on their own."""
    rig = Rig(CROSSED)
    band = band_of(rig.market.quote(A), A)
    assert band.contains(250.0) and band.contains(110.0)


@pytest.mark.parametrize("bid, ask, crossed", [
    (250.0, 110.0, True), (110.0, 110.0, True), (95.0, 105.0, False),
    (None, 110.0, False), (250.0, None, False), (250.0, 0.0, False), (0.0, 110.0, False),
    (float("nan"), 110.0, False),
])
def test_crossed_problem(bid: float | None, ask: float | None, crossed: bool) -> None:
    problem = crossed_problem(bid, ask)
    assert (problem is not None) is crossed
    if crossed:
        assert "crossed book" in problem  # type: ignore[operator]


# ---- smart executor --------------------------------------------------------------------


def test_smart_open_on_a_normal_book_joins_the_bids() -> None:
    rig = Rig(NORMAL)
    rig.run(rig.smart([_buy(A, 0), _buy(B, 1)]), 3)
    assert rig.exchange.prices_on(A) == [95.0] and rig.exchange.prices_on(B) == [95.0]


def test_smart_open_places_nothing_while_one_leg_is_crossed() -> None:
    rig = Rig(CROSSED)
    job = rig.smart([_buy(A, 0), _buy(B, 1)])
    rig.run(job, 4, every=2.0)
    assert rig.exchange.creates == [], "an open sends nothing while one leg is unpriced"
    rig.run(job, 2, every=120.0)
    assert job.status is JobStatus.FAILED
    assert "crossed book" in job.result().reason


def test_smart_open_trades_normally_once_the_book_uncrosses() -> None:
    rig = Rig(CROSSED)
    job = rig.smart([_buy(A, 0), _buy(B, 1)])
    rig.run(job, 3)
    assert rig.exchange.creates == []
    rig.market.set(A, mark=100.0, **NORMAL)
    rig.run(job, 3)
    assert rig.exchange.prices_on(A) == [95.0] and rig.exchange.prices_on(B) == [95.0]


def test_smart_working_quote_is_left_alone_when_its_book_crosses() -> None:
    rig = Rig(NORMAL)
    job = rig.smart([_buy(A, 0), _buy(B, 1)])
    rig.run(job, 2)
    assert rig.exchange.prices_on(A) == [95.0]
    rig.market.set(A, mark=100.0, **CROSSED)
    rig.run(job, 4, every=11.0)     # past the 10 s reprice interval, inside the 120 s chunk
    assert rig.exchange.prices_on(A) == [95.0]
    assert rig.exchange.cancels == []


def test_smart_aggressive_fallback_does_not_cross_a_crossed_book() -> None:
    rig = Rig(NORMAL)
    job = rig.smart([_buy(A, 0), _buy(B, 1)])
    rig.run(job, 2)
    rig.market.set(A, mark=100.0, **CROSSED)
    rig.clock.advance(121.0)        # the chunk's quoting time is over: aggressive fallback
    rig.run(job, 30, every=6.0)     # every aggressive attempt (10 × 5 s), then the finish
    assert rig.exchange.prices_on(A) == [95.0], "no aggressive buy from a crossed book"
    passive, *aggressive = rig.exchange.prices_on(B)
    assert passive == 95.0 and aggressive and set(aggressive) == {105.0}, "the sane leg crosses as before"
    assert job.status is JobStatus.FAILED
    assert "crossed book" in job.result().reason


# ---- phased limit engine -----------------------------------------------------------------


PHASE_PRICES = {"top_of_book": 95.0, "mid": 100.0, "fair": 100.0, "mark": 100.0, "aggressive": 105.0}


@pytest.mark.parametrize("pricing", sorted(PHASE_PRICES))
def test_phased_limit_on_a_normal_book_prices_as_before(pricing: str) -> None:
    rig = Rig(NORMAL)
    rig.run(rig.limit([_buy()], _phased(pricing)), 2)
    assert rig.exchange.prices_on(A) == [PHASE_PRICES[pricing]]


@pytest.mark.parametrize("pricing", sorted(PHASE_PRICES))
def test_phased_limit_places_nothing_from_a_crossed_book(pricing: str) -> None:
    rig = Rig(CROSSED)
    job = rig.limit([_buy()], _phased(pricing))
    rig.run(job, 5)
    assert rig.exchange.creates == []
    rig.run(job, 2, every=60.0)
    assert job.status is JobStatus.FAILED
    assert "crossed book" in job.result().reason


@pytest.mark.parametrize("pricing", ["top_of_book", "mid", "fair"])
def test_phased_limit_trades_normally_once_the_book_uncrosses(pricing: str) -> None:
    rig = Rig(CROSSED)
    job = rig.limit([_buy()], _phased(pricing))
    rig.run(job, 3)
    assert rig.exchange.creates == []
    rig.market.set(A, mark=100.0, **NORMAL)
    rig.run(job, 2)
    assert rig.exchange.prices_on(A) == [PHASE_PRICES[pricing]]


def test_phased_limit_leaves_its_working_order_when_the_book_crosses() -> None:
    """A sell at mid: the directional guard lets a sell go up, so only the crossed-book rule stops
    a requote at mid(250, 110) = 180; the order priced on valid data keeps working."""
    rig = Rig(NORMAL)
    job = rig.limit([LegTarget(0, A, Side.SELL, 1.0)], _phased("mid"), intent=Intent.CLOSE, best_effort=True)
    rig.run(job, 2)
    assert rig.exchange.prices_on(A) == [100.0]
    rig.market.set(A, mark=100.0, **CROSSED)
    rig.run(job, 3, every=16.0)     # past the 15 s reprice interval, inside the 60 s phase
    assert rig.exchange.prices_on(A) == [100.0]
    assert rig.exchange.cancels == []


# ---- basic limit path ----------------------------------------------------------------------


def test_basic_limit_on_a_normal_book_crosses_the_ask_as_before() -> None:
    rig = Rig(NORMAL)
    rig.run(rig.limit([_buy()], ExecutionParams()), 2)
    assert rig.exchange.prices_on(A) == [107.0]     # 105 × 1.02, a buy snapped down


def test_basic_limit_places_nothing_from_a_crossed_book() -> None:
    rig = Rig(CROSSED)
    job = rig.limit([_buy()], ExecutionParams())
    rig.run(job, 5)
    assert rig.exchange.creates == []
    rig.run(job, 2, every=60.0)
    assert job.status is JobStatus.FAILED
    assert "crossed book" in job.result().reason


def test_basic_limit_close_waits_on_a_crossed_book_and_trades_once_it_uncrosses() -> None:
    rig = Rig(CROSSED)
    job = rig.limit([LegTarget(0, A, Side.SELL, 1.0)], ExecutionParams(), intent=Intent.CLOSE, best_effort=True)
    rig.run(job, 3)
    assert rig.exchange.creates == []
    rig.market.set(A, mark=100.0, **NORMAL)
    rig.run(job, 2)
    assert rig.exchange.prices_on(A) == [94.0]      # 95 × 0.98 = 93.1, a sell snapped up


def test_basic_limit_sell_floor_comes_from_the_sane_sides() -> None:
    """F4: the insane ask 5 is ignored, fair = max(mark 100, bid 90) = 100, floor 95 (not 45)."""
    rig = Rig(dict(bids=((90.0, 5.0),), asks=((5.0, 5.0),)))
    band = band_of(rig.market.quote(A), A)
    assert band.contains(90.0) and not band.contains(5.0)
    job = rig.limit([LegTarget(0, A, Side.SELL, 1.0)], ExecutionParams(min_price_pct_of_fair=0.95),
                    intent=Intent.CLOSE, best_effort=True)
    rig.run(job, 2)
    assert rig.exchange.prices_on(A) == [95.0]


def test_basic_limit_buy_cap_comes_from_the_sane_sides() -> None:
    """The mirror: an insane bid 400 is ignored, fair = min(mark 100, ask 110) = 100, cap 105.
    From the raw book fair was mid(400, 110) = 255 and the buy went out at 112."""
    rig = Rig(dict(bids=((400.0, 5.0),), asks=((110.0, 5.0),)))
    band = band_of(rig.market.quote(A), A)
    assert band.contains(110.0) and not band.contains(400.0)
    rig.run(rig.limit([_buy()], ExecutionParams(max_price_pct_of_fair=1.05)), 2)
    assert rig.exchange.prices_on(A) == [105.0]


def test_basic_limit_cap_and_floor_on_a_sane_book_are_unchanged() -> None:
    """Control: with both sides sane and uncrossed the fair value, and so the limits, are as before."""
    rig = Rig(dict(bids=((90.0, 5.0),), asks=((110.0, 5.0),)))
    rig.run(rig.limit([_buy()], ExecutionParams(max_price_pct_of_fair=1.05)), 2)
    assert rig.exchange.prices_on(A) == [105.0]     # fair = mark 100 (between the sides), cap 105
