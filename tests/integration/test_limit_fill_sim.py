"""LimitFillManager jobs against the simulated exchange (BEHAVIOUR.md §6.2, §4.3, §4.4; §8 rows 5-9, 25)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from execution_job import JobStatus, LegTarget
from market_data import MarketData
from order_ledger import Intent, OrderLedger, OrderStatus, parse_client_order_id, snap_price
from simulator.exchange import ExchangeConfig
from trade_execution import ExecutionParams, LimitFillManager

BUY, SELL = 1, 2
CALL = "BTCUSD-3MAR26-90000-C"   # seed 7: best ask 4.26 BTC deep, next level > 2 % away
PUT = "BTCUSD-3MAR26-90000-P"
TRADE = SimpleNamespace(id="T000000007", seq=7)


class RecordingMarket(MarketData):
    """MarketData that remembers every book it handed out (to check the prices the job used)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.books: list[tuple[float, str, object]] = []

    def order_book(self, symbol, *, max_age=3.0):
        book = super().order_book(symbol, max_age=max_age)
        self.books.append((self.clock.now(), symbol, book))
        return book


def _wire(sim):
    client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                            Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    market = RecordingMarket(client, sim.clock)
    ledger = OrderLedger(client, sim.clock)
    return client, market, ledger, LimitFillManager(ledger, market, sim.clock)


@pytest.fixture
def env(sim):
    client, market, ledger, manager = _wire(sim)
    yield SimpleNamespace(sim=sim, market=market, ledger=ledger, manager=manager)
    client.close()


@pytest.fixture
def rising_env(sim_factory):
    """No random touch fills and an index climbing 15 % in 5 min: a resting buy is left behind."""
    sim = sim_factory(exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0))
    start = sim.clock.now_ms()
    sim.market.set_scripted_path([(start, 90_000.0), (start + 300_000, 103_500.0)])
    client, market, ledger, manager = _wire(sim)
    yield SimpleNamespace(sim=sim, market=market, ledger=ledger, manager=manager)
    client.close()


def _run(job, sim, max_ticks=200, before_tick=None):
    for tick in range(max_ticks):
        if before_tick is not None:
            before_tick(tick)
        if job.advance(sim.clock.now()) is not JobStatus.WORKING:
            return job.result()
        sim.clock.advance(2.0)
    raise AssertionError(f"job still working after {max_ticks} ticks: {job!r}")


def _beyond_reach(env, extra: float) -> float:
    """A buy of CALL that the first order (limit 2 % over the ask) fills only partly, leaving ``extra``."""
    book = env.market.order_book(CALL)
    reach = snap_price(book.best_ask * 1.02, 1.0, BUY)
    return round(sum(size for price, size in book.asks if price <= reach) + extra, 2)


def _exchange_fills(sim, coids):
    orders = [o for o in sim.exchange.orders() if o["clientOrderId"] in set(coids)]
    qty = sum(o["fillQty"] for o in orders)
    notional = sum(o["fillQty"] * o["avgPrice"] for o in orders)
    return qty, notional / qty if qty else 0.0, sum(o["fee"] for o in orders)


def test_seed_defaults_fully_fill_a_two_leg_open(env):
    legs = [LegTarget(0, CALL, BUY, 0.5), LegTarget(1, PUT, BUY, 0.5)]
    job = env.manager.start(TRADE, legs, Intent.OPEN, ExecutionParams())
    assert env.sim.requests_for("create_order") == []        # start() sends nothing
    result = _run(job, env.sim)
    assert result.status is JobStatus.FILLED and job.done
    for leg in result.legs:
        qty, vwap, fees = _exchange_fills(env.sim, leg.order_ids)
        assert leg.filled_qty == qty == 0.5 and leg.vwap == pytest.approx(vwap) and leg.fees == pytest.approx(fees)
        assert env.sim.exchange.position_of(None, leg.symbol) == 0.5
    assert result.total_cash == pytest.approx(-sum(l.vwap * 0.5 + l.fees for l in result.legs))
    for request in env.sim.requests_for("create_order"):
        assert parse_client_order_id(request.params["clientOrderId"]).intent == 1
        assert request.params["reduceOnly"] == 0


def test_incident_06_unpriced_leg_places_nothing_and_fails_after_price_wait(env):
    env.sim.market.set_empty_side(PUT, "ask")
    legs = [LegTarget(0, CALL, BUY, 0.5), LegTarget(1, PUT, BUY, 0.5)]
    job = env.manager.start(TRADE, legs, Intent.OPEN, ExecutionParams(price_wait_seconds=20.0))
    started = env.sim.clock.now()
    result = _run(job, env.sim)
    assert result.status is JobStatus.FAILED and "no ask" in result.reason
    assert env.sim.clock.now() - started >= 20.0
    assert env.sim.requests_for("create_order") == []
    assert env.sim.exchange.position_of(None, CALL) == 0.0 and env.ledger.orders() == []


def test_best_effort_close_continues_other_legs_when_one_leg_has_no_bid(env):
    env.sim.exchange.set_position(None, CALL, 0.5, 1000.0)
    env.sim.exchange.set_position(None, PUT, 0.5, 1000.0)
    env.sim.market.set_empty_side(PUT, "bid")
    legs = [LegTarget(0, CALL, SELL, 0.5), LegTarget(1, PUT, SELL, 0.5)]
    job = env.manager.start(TRADE, legs, Intent.CLOSE, ExecutionParams(), best_effort=True)
    for _ in range(5):
        job.advance(env.sim.clock.now())
        env.sim.clock.advance(2.0)
    assert env.sim.exchange.position_of(None, CALL) == 0.0        # the good leg closed
    assert env.ledger.orders(TRADE.id, leg_index=1) == []         # the bad leg was skipped
    assert not job.done
    env.sim.market.set_empty_side(PUT, None)                      # a bid comes back
    result = _run(job, env.sim)
    assert result.status is JobStatus.FILLED
    assert env.sim.exchange.position_of(None, PUT) == 0.0
    creates = env.sim.requests_for("create_order")
    assert len(creates) == 2
    for request in creates:
        assert parse_client_order_id(request.params["clientOrderId"]).intent == 3
        assert request.params["reduceOnly"] == 1


def test_requotes_on_a_moving_book_reprice_to_the_fresh_touch_and_sum_fills(rising_env):
    env = rising_env
    qty = _beyond_reach(env, 1.5)
    job = env.manager.start(TRADE, [LegTarget(0, CALL, BUY, qty)], Intent.OPEN,
                            ExecutionParams(fill_timeout_seconds=6.0))
    result = _run(job, env.sim)
    creates = env.sim.requests_for("create_order")
    assert len(creates) >= 2, "the scenario needs at least one requote"
    prices = []
    for request in creates:
        read = [b for t, s, b in env.market.books if s == CALL and t * 1000 <= request.time_ms]
        expected = snap_price(read[-1].best_ask * 1.02, 1.0, BUY)
        assert float(request.params["price"]) == expected
        prices.append(expected)
    assert prices == sorted(prices) and prices[-1] > prices[0]       # repriced up with the market
    intents = [parse_client_order_id(r.params["clientOrderId"]).intent for r in creates]
    assert intents == [1] + [2] * (len(creates) - 1)
    # Each replacement is exactly the remainder of the chain, and the chain sums to the target.
    orders = env.ledger.orders(TRADE.id, 0)
    for before, order in zip(orders, orders[1:]):
        done = sum(o.filled_qty for o in orders if o.attempt <= before.attempt)
        assert order.qty == pytest.approx(qty - done) and order.supersedes == before.client_order_id
    filled, vwap, fees = _exchange_fills(env.sim, result.legs[0].order_ids)
    assert result.status is JobStatus.FILLED and result.legs[0].filled_qty == pytest.approx(qty) == filled
    assert result.legs[0].vwap == pytest.approx(vwap) and result.legs[0].fees == pytest.approx(fees)
    assert env.sim.exchange.position_of(None, CALL) == pytest.approx(qty)


def test_fill_during_the_cancel_is_counted_and_only_the_remainder_replaced(rising_env):
    env = rising_env
    qty = _beyond_reach(env, 1.0)
    job = env.manager.start(TRADE, [LegTarget(0, CALL, BUY, qty)], Intent.OPEN,
                            ExecutionParams(fill_timeout_seconds=6.0))
    job.advance(env.sim.clock.now())
    env.sim.clock.advance(2.0)
    job.advance(env.sim.clock.now())
    first = env.ledger.orders(TRADE.id, 0)[0]
    assert first.status is OrderStatus.PARTIAL and first.filled_qty < qty
    env.sim.exchange.faults.fill_on_next_cancel_qty = 0.3
    result = _run(job, env.sim)
    orders = env.ledger.orders(TRADE.id, 0)
    assert first.status is OrderStatus.CANCELED and first.filled_qty == pytest.approx(qty - 1.0 + 0.3)
    assert orders[1].qty == pytest.approx(0.7) and orders[1].intent is Intent.OPEN_REQUOTE
    assert result.status is JobStatus.FILLED and result.legs[0].filled_qty == pytest.approx(qty)
    assert env.sim.exchange.position_of(None, CALL) == pytest.approx(qty)     # never overfilled


def test_incident_09_late_reported_fill_at_exhaustion_is_counted_and_nothing_unwound(rising_env):
    env = rising_env
    qty = _beyond_reach(env, 1.0)
    legs = [LegTarget(0, PUT, SELL, 0.2), LegTarget(1, CALL, BUY, qty)]
    params = ExecutionParams(fill_timeout_seconds=6.0, max_requote_rounds=0, grace_seconds=5.0)
    job = env.manager.start(TRADE, legs, Intent.OPEN, params)
    state = {}

    def late_fill(tick):
        if tick == 3:                                  # the exhaustion tick (t = 6 s)
            call_order = env.ledger.orders(TRADE.id, 1)[0]
            assert call_order.status is OrderStatus.PARTIAL
            env.sim.exchange.faults.fill_report_lag_seconds = 3.0
            state["filled"] = env.sim.exchange.force_fill(call_order.order_id, qty)

    result = _run(job, env.sim, before_tick=late_fill)
    assert state["filled"] == pytest.approx(1.0)
    assert result.status is JobStatus.FILLED, result.reason
    assert [leg.filled_qty for leg in result.legs] == pytest.approx([0.2, qty])
    assert len(env.sim.requests_for("create_order")) == 2            # no replacement, no unwind


def test_no_replacement_while_the_cancel_is_still_in_progress(rising_env):
    env = rising_env
    env.sim.exchange.faults.hold_canceling_seconds = 8.0
    qty = _beyond_reach(env, 1.0)
    job = env.manager.start(TRADE, [LegTarget(0, CALL, BUY, qty)], Intent.OPEN,
                            ExecutionParams(fill_timeout_seconds=6.0))
    seen_canceling = []

    def watch(tick):
        orders = env.ledger.orders(TRADE.id, 0)
        if orders and orders[0].exchange_state == 5:
            seen_canceling.append(tick)
            assert len(orders) == 1                    # nothing placed while state 5 lasts

    result = _run(job, env.sim, before_tick=watch)
    assert len(seen_canceling) >= 2
    assert result.status is JobStatus.FILLED and result.legs[0].filled_qty == pytest.approx(qty)


def test_request_stop_cancels_and_reports_partial(rising_env):
    env = rising_env
    qty = _beyond_reach(env, 1.0)
    job = env.manager.start(TRADE, [LegTarget(0, CALL, BUY, qty)], Intent.OPEN, ExecutionParams())
    job.advance(env.sim.clock.now())
    env.sim.clock.advance(2.0)
    job.request_stop("kill switch")
    result = _run(job, env.sim)
    assert result.status is JobStatus.PARTIAL and result.reason == "kill switch"
    assert env.ledger.live_orders(TRADE.id) == []
    assert 0 < result.legs[0].filled_qty < qty


def test_grace_poll_counts_a_fill_reported_after_the_cancel_confirmed(rising_env):
    env = rising_env
    qty = _beyond_reach(env, 1.0)
    params = ExecutionParams(fill_timeout_seconds=6.0, max_requote_rounds=0, grace_seconds=5.0)
    job = env.manager.start(TRADE, [LegTarget(0, CALL, BUY, qty)], Intent.OPEN, params)

    def late_fill(tick):
        if tick == 3:                  # at exhaustion the cancel fills 0.5, reported 3 s late
            env.sim.exchange.faults.fill_report_lag_seconds = 3.0
            env.sim.exchange.faults.fill_on_next_cancel_qty = 0.5

    result = _run(job, env.sim, before_tick=late_fill)
    order = env.ledger.orders(TRADE.id, 0)[0]
    truth, _, _ = _exchange_fills(env.sim, [order.client_order_id])
    assert order.status is OrderStatus.CANCELED
    assert result.status is JobStatus.PARTIAL
    assert result.legs[0].filled_qty == pytest.approx(truth) == pytest.approx(qty - 0.5)
