"""Phased limit pricing against the simulated exchange (BEHAVIOUR.md §6.2; §8 rows 26, 27)."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from execution_job import JobStatus, LegTarget
from market_data import MarketData
from order_ledger import Intent, OrderLedger, parse_client_order_id, snap_price
from simulator.exchange import ExchangeConfig
from trade_execution import ExecutionParams, ExecutionPhase, LimitFillManager, fair_value

BUY, SELL = 1, 2
CALL = "BTCUSD-3MAR26-90000-C"   # seed 7 at start: bid 1056, ask 1249, mark 1140.4
PUT = "BTCUSD-3MAR26-90000-P"
TRADE = SimpleNamespace(id="T000000011", seq=11)


class RecordingMarket(MarketData):
    """MarketData that remembers the books and marks it handed out.

    ``bid_from_mark`` (test double for a collapsed book): replaces every bid the job sees
    by one level at that fraction of the current mark.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.books: list[tuple[float, str, object]] = []
        self.marks: list[tuple[float, str, float]] = []
        self.bid_from_mark: float | None = None

    def order_book(self, symbol, *, max_age=3.0):
        book = super().order_book(symbol, max_age=max_age)
        if self.bid_from_mark is not None:
            mark = super().quote(symbol, max_age=30.0).mark
            book = replace(book, bids=((round(mark * self.bid_from_mark), 5.0),))
        self.books.append((self.clock.now(), symbol, book))
        return book

    def quote(self, symbol, *, max_age=15.0):
        row = super().quote(symbol, max_age=max_age)
        self.marks.append((self.clock.now(), symbol, row.mark))
        return row

    def last_book(self, symbol, at_ms):
        return [b for t, s, b in self.books if s == symbol and t * 1000 <= at_ms][-1]

    def last_mark(self, symbol, at_ms):
        return [m for t, s, m in self.marks if s == symbol and t * 1000 <= at_ms][-1]


def _env(sim):
    client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                            Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    market = RecordingMarket(client, sim.clock)
    ledger = OrderLedger(client, sim.clock)
    return SimpleNamespace(sim=sim, client=client, market=market, ledger=ledger,
                           manager=LimitFillManager(ledger, market, sim.clock))


@pytest.fixture
def build(sim_factory):
    """``build(passive=0.0, index_path=None)`` → a wired environment on a fresh simulator."""
    made = []

    def make(passive: float = 0.0, index_path=None):
        sim = sim_factory(exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=passive))
        if index_path is not None:
            start = sim.clock.now_ms()
            sim.market.set_scripted_path([(start + dt * 1000, price) for dt, price in index_path])
        env = _env(sim)
        made.append(env)
        return env

    yield make
    for env in made:
        env.client.close()


def _run(job, sim, max_ticks=300, before_tick=None):
    for tick in range(max_ticks):
        if before_tick is not None:
            before_tick(tick)
        if job.advance(sim.clock.now()) is not JobStatus.WORKING:
            return job.result()
        sim.clock.advance(2.0)
    raise AssertionError(f"job still working after {max_ticks} ticks: {job!r}")


def _creates(env, symbol=None):
    return [r for r in env.sim.requests_for("create_order") if symbol is None or r.params["symbol"] == symbol]


def _phase_of(request, start, phases):
    elapsed = request.time_ms / 1000.0 - start
    for index, phase in enumerate(phases):
        if elapsed < phase.duration_seconds:
            return index
        elapsed -= phase.duration_seconds
    return len(phases)


def test_phased_open_fills_at_or_better_than_mid_on_a_quiet_book(build):
    env = build(passive=0.9, index_path=[(0, 90_000.0), (3600, 90_000.0)])
    legs = [LegTarget(0, CALL, BUY, 0.5), LegTarget(1, PUT, BUY, 0.5)]
    first_books = {s: env.market.order_book(s) for s in (CALL, PUT)}
    job = env.manager.start(TRADE, legs, Intent.OPEN, ExecutionParams.phased())
    result = _run(job, env.sim)
    assert result.status is JobStatus.FILLED, result.reason
    paid = mid_value = 0.0
    for leg in result.legs:
        book = first_books[leg.symbol]
        assert leg.filled_qty == pytest.approx(0.5) and env.sim.exchange.position_of(None, leg.symbol) == 0.5
        paid += leg.vwap * leg.filled_qty
        mid_value += (book.best_bid + book.best_ask) / 2 * leg.filled_qty
        assert leg.vwap < book.best_ask                    # never paid the far touch
    assert paid <= mid_value + 1e-9, f"structure paid {paid}, mid value {mid_value}"
    for request in _creates(env)[:2]:                      # the first orders rest at fair (the mark here)
        mark = env.market.last_mark(request.params["symbol"], request.time_ms)
        assert float(request.params["price"]) == snap_price(mark, 1.0, BUY)
        assert request.params["reduceOnly"] == 0


def test_open_prices_every_leg_before_any_order(build):
    env = build()
    env.sim.market.set_empty_side(PUT, "bid")       # top_of_book buy: nothing to join on the put
    params = ExecutionParams(phases=(ExecutionPhase("top_of_book", 60.0),))
    job = env.manager.start(TRADE, [LegTarget(0, CALL, BUY, 0.5), LegTarget(1, PUT, BUY, 0.5)], Intent.OPEN, params)
    for _ in range(5):
        job.advance(env.sim.clock.now())
        env.sim.clock.advance(2.0)
    assert _creates(env) == [] and not job.done
    env.sim.market.set_empty_side(PUT, None)
    env.sim.clock.advance(2.0)                       # past the 3 s book cache
    job.advance(env.sim.clock.now())
    creates = _creates(env)
    assert len(creates) == 2 and len({r.time_ms for r in creates}) == 1
    for request in creates:    # each buy joins its own bid
        book = env.market.last_book(request.params["symbol"], request.time_ms)
        assert float(request.params["price"]) == book.best_bid


def test_incident_26_a_sell_never_chases_a_falling_bid_within_a_phase(build):
    # The index falls 1,500 in 60 s: the call's bid drops by hundreds of ticks during phase 0.
    env = build(index_path=[(0, 90_000.0), (60, 88_500.0), (3600, 88_500.0)])
    phases = (ExecutionPhase("fair", 60.0, 10.0, fair_aggression=0.5),
              ExecutionPhase("aggressive", 60.0, 10.0, buffer_pct=2.0))
    job = env.manager.start(TRADE, [LegTarget(0, CALL, SELL, 0.5)], Intent.OPEN,
                            ExecutionParams(phases=phases, max_requote_rounds=20))
    start = env.sim.clock.now()
    result = _run(job, env.sim)
    creates = _creates(env)
    by_phase = {}
    for request in creates:
        by_phase.setdefault(_phase_of(request, start, phases), []).append(float(request.params["price"]))
    in_phase0 = [b.best_bid for t, s, b in env.market.books if t - start < 60.0]
    assert in_phase0[0] - min(in_phase0) >= 10.0, "the scenario needs the bid to fall 10 ticks in phase 0"
    assert by_phase[0] == sorted(by_phase[0]), f"phase-0 sell prices decreased: {by_phase[0]}"
    assert by_phase[1][0] < by_phase[0][-1]          # only the phase change concedes
    assert result.status is JobStatus.FILLED and env.sim.exchange.position_of(None, CALL) == pytest.approx(-0.5)


def test_incident_27_no_sell_below_the_floor_in_any_phase_when_the_bid_collapses(build):
    env = build(index_path=[(0, 90_000.0), (3600, 90_000.0)])
    env.sim.market.set_empty_side(CALL, "bid")        # nobody really buys: the sell can only rest
    env.market.bid_from_mark = 0.1                    # the job sees a bid at 10 % of fair
    phases = (ExecutionPhase("fair", 30.0, 10.0), ExecutionPhase("fair", 30.0, 10.0, fair_aggression=1.0),
              ExecutionPhase("mid", 30.0, 10.0), ExecutionPhase("top_of_book", 30.0, 10.0),
              ExecutionPhase("aggressive", 30.0, 10.0, buffer_pct=10.0))
    params = ExecutionParams(phases=phases, min_price_pct_of_fair=0.8, grace_seconds=2.0)
    job = env.manager.start(TRADE, [LegTarget(0, CALL, SELL, 0.5)], Intent.OPEN, params)
    start = env.sim.clock.now()
    result = _run(job, env.sim)
    creates = _creates(env)
    assert len(creates) >= 2
    for request in creates:
        book = env.market.last_book(CALL, request.time_ms)
        fair = fair_value(book.best_bid, book.best_ask, env.market.last_mark(CALL, request.time_ms))
        assert book.best_bid < 0.8 * fair                       # the book wanted a lower price
        assert float(request.params["price"]) >= snap_price(0.8 * fair, 1.0, SELL)
    # It worked through every phase, resting at the floor, and sold nothing.
    assert env.sim.clock.now() - start >= sum(p.duration_seconds for p in phases)
    floor_orders = [r for r in creates if _phase_of(r, start, phases) >= 1]
    assert floor_orders, "the fair_aggression=1 phase must move the sell down to the floor"
    assert result.status is JobStatus.FAILED and env.sim.exchange.position_of(None, CALL) == 0.0
    assert env.ledger.live_orders(TRADE.id) == []


def test_escalation_reaches_aggressive_and_fills(build):
    env = build(index_path=[(0, 90_000.0), (3600, 90_000.0)])
    phases = (ExecutionPhase("fair", 30.0, 10.0), ExecutionPhase("mid", 30.0, 10.0),
              ExecutionPhase("aggressive", 30.0, 10.0, buffer_pct=2.0))
    job = env.manager.start(TRADE, [LegTarget(0, CALL, BUY, 0.5)], Intent.OPEN,
                            ExecutionParams(phases=phases))
    start = env.sim.clock.now()
    result = _run(job, env.sim)
    creates = _creates(env)
    assert result.status is JobStatus.FILLED and result.legs[0].filled_qty == pytest.approx(0.5)
    last = creates[-1]
    assert _phase_of(last, start, phases) == 2
    book = env.market.last_book(CALL, last.time_ms)
    assert float(last.params["price"]) == snap_price(book.best_ask * 1.02, 1.0, BUY)
    assert [_phase_of(r, start, phases) for r in creates][0] == 0
    intents = [parse_client_order_id(r.params["clientOrderId"]).intent for r in creates]
    assert intents == [1] + [2] * (len(creates) - 1)
    # Replacements are chained and never two live orders at once.
    orders = env.ledger.orders(TRADE.id, 0)
    assert all(b.supersedes == a.client_order_id for a, b in zip(orders, orders[1:]))
    assert env.sim.exchange.position_of(None, CALL) == pytest.approx(0.5)


def test_max_requote_rounds_caps_replacements_then_the_job_cancels_and_fails(build):
    env = build(index_path=[(0, 90_000.0), (3600, 90_000.0)])
    phases = (ExecutionPhase("top_of_book", 20.0, 10.0), ExecutionPhase("fair", 20.0, 10.0),
              ExecutionPhase("mid", 20.0, 10.0), ExecutionPhase("mark", 20.0, 10.0))
    params = ExecutionParams(phases=phases, max_requote_rounds=1, grace_seconds=2.0)
    job = env.manager.start(TRADE, [LegTarget(0, CALL, BUY, 0.5)], Intent.OPEN, params)
    start = env.sim.clock.now()
    result = _run(job, env.sim)
    assert len(_creates(env)) == 2                               # the first order + one replacement
    assert env.sim.clock.now() - start >= 80.0                   # it still waited for the phases to end
    assert result.status is JobStatus.FAILED and env.ledger.live_orders(TRADE.id) == []
    assert all(o.status.is_final for o in env.ledger.orders(TRADE.id))
