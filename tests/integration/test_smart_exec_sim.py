"""SmartOrderbookExecutor jobs against the simulated exchange (BEHAVIOUR.md §6.3, §6.1; §8 rows 5-7, 11, 37).

Real HTTP and signing on loopback, a simulated clock driven in 2 s steps like the monitor's
execution tick. Every test checks the non-blocking budget (≤ 6 requests per advance).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from execution_job import JobStatus, LegTarget
from market_data import MarketData
from multileg_orderbook import SmartExecConfig, SmartOrderbookExecutor, chunk_targets
from order_ledger import Intent, OrderLedger, OrderStatus, parse_client_order_id, snap_price
from persistence import StateStore
from simulator import FaultRule
from simulator.exchange import ExchangeConfig

BUY, SELL = 1, 2
EXPIRY = "3MAR26"            # seed 7: liquid books on both sides around the 90,000 index
SHORT_CALL = f"BTCUSD-{EXPIRY}-92000-C"
SHORT_PUT = f"BTCUSD-{EXPIRY}-88000-P"
WING_CALL = f"BTCUSD-{EXPIRY}-94000-C"
WING_PUT = f"BTCUSD-{EXPIRY}-86000-P"
ATM_CALL = f"BTCUSD-{EXPIRY}-90000-C"
ATM_PUT = f"BTCUSD-{EXPIRY}-90000-P"
TRADE = SimpleNamespace(id="T000000011", seq=11)
MAX_REQUESTS = 6
FAST = dict(time_per_chunk_seconds=20.0, aggressive_attempts=3, aggressive_wait_seconds=4.0, grace_seconds=2.0)


def smart_rig(sim):
    """Client, market data, an in-memory ledger and the smart executor on ``sim``."""
    client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                            Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    market = MarketData(client, sim.clock)
    ledger = OrderLedger(client, sim.clock, store=StateStore(":memory:"))
    executor = SmartOrderbookExecutor(ledger, market, sim.clock, max_requests_per_step=MAX_REQUESTS)
    return SimpleNamespace(sim=sim, client=client, market=market, ledger=ledger, executor=executor)


@pytest.fixture
def env(sim):
    rig = smart_rig(sim)
    yield rig
    rig.client.close()


@pytest.fixture
def quiet_env(sim_factory):
    """No random fills at the touch: passive orders fill only when forced or traded through."""
    rig = smart_rig(sim_factory(exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0)))
    yield rig
    rig.client.close()


class Watch:
    """Per-tick checks: request budget, one live order per leg, balance across legs, chunk targets."""

    def __init__(self, env, job, chunk_count: int) -> None:
        self.env, self.job, self.chunk_count = env, job, chunk_count
        self.max_spread = 0.0
        self.chunk_fills: dict[int, list[float]] = {}

    def check(self) -> None:
        legs = self.job.result().legs
        for leg in legs:
            live = [o for o in self.env.ledger.orders(TRADE.id, leg.leg_index) if not o.status.is_final]
            assert len(live) <= 1, f"two live orders on leg {leg.leg_index}"
        fractions = [leg.filled_qty / leg.target_qty for leg in legs]
        spread = max(fractions) - min(fractions)
        self.max_spread = max(self.max_spread, spread)
        assert spread <= 1.0 / self.chunk_count + 1e-9, f"a leg ran ahead: {fractions}"
        self.chunk_fills.setdefault(self.job.chunk, [leg.filled_qty for leg in legs])


def _run(env, job, *, chunk_count: int, max_ticks: int = 300, before_tick=None) -> tuple:
    watch = Watch(env, job, chunk_count)
    for tick in range(max_ticks):
        if before_tick is not None:
            before_tick(tick)
        before = sum(env.sim.counts.values())
        status = job.advance(env.sim.clock.now())
        used = sum(env.sim.counts.values()) - before
        assert used <= MAX_REQUESTS, f"{used} requests in one advance"
        watch.check()
        if status is not JobStatus.WORKING:
            return job.result(), watch
        env.sim.clock.advance(2.0)
    raise AssertionError(f"job still working after {max_ticks} ticks: {job!r}")


def _exchange_orders(env, coids) -> list[dict]:
    wanted = set(coids)
    return [o for o in env.sim.exchange.orders() if o["clientOrderId"] in wanted]


def _assert_matches_exchange(env, result) -> None:
    """Per-leg qty, VWAP and fees equal the exchange's own order records."""
    for leg in result.legs:
        orders = _exchange_orders(env, leg.order_ids)
        qty = sum(o["fillQty"] for o in orders)
        notional = sum(o["fillQty"] * o["avgPrice"] for o in orders)
        assert leg.filled_qty == pytest.approx(qty)
        assert leg.vwap == pytest.approx(notional / qty if qty else 0.0)
        assert leg.fees == pytest.approx(sum(o["fee"] for o in orders))


def _assert_chains(env, legs) -> None:
    """Per leg: first order with the job's intent, later ones requotes superseding the previous."""
    for leg in legs:
        orders = env.ledger.orders(TRADE.id, leg.leg_index)
        for before, after in zip(orders, orders[1:]):
            assert after.supersedes == before.client_order_id
            assert before.status.is_final                       # never two live orders on a leg
            assert after.intent is before.intent.requote()


def test_short_strangle_fills_in_balanced_chunks(env):
    config = SmartExecConfig(chunk_count=3, **FAST)
    legs = [LegTarget(0, SHORT_CALL, SELL, 1.0), LegTarget(1, SHORT_PUT, SELL, 1.0)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, config)
    assert env.sim.requests_for("create_order") == []           # start() sends nothing
    result, watch = _run(env, job, chunk_count=3)

    assert result.status is JobStatus.FILLED and result.reason == ""
    assert [leg.filled_qty for leg in result.legs] == pytest.approx([1.0, 1.0])
    _assert_matches_exchange(env, result)
    assert env.sim.exchange.position_of(None, SHORT_CALL) == pytest.approx(-1.0)
    assert env.sim.exchange.position_of(None, SHORT_PUT) == pytest.approx(-1.0)
    expected_cash = sum(leg.vwap * leg.filled_qty - leg.fees for leg in result.legs)
    assert result.total_cash == pytest.approx(expected_cash) and result.total_cash > 0     # a credit
    # Each chunk started only once every leg had reached the previous cumulative target.
    targets = chunk_targets(1.0, 3)
    for chunk in (2, 3):
        assert all(filled >= targets[chunk - 2] - 1e-9 for filled in watch.chunk_fills[chunk])
    _assert_chains(env, legs)
    creates = env.sim.requests_for("create_order")
    assert {parse_client_order_id(r.params["clientOrderId"]).intent for r in creates} <= {1, 2}
    assert all(r.params["reduceOnly"] == 0 for r in creates)
    assert len(creates) <= 3 * 2 * 6                             # a handful of orders per leg and chunk
    assert env.ledger.live_orders(TRADE.id) == []


def test_iron_condor_fills_fully_with_mid_quotes(env):
    config = SmartExecConfig(chunk_count=2, quoting_strategy="mid", **FAST)
    legs = [LegTarget(0, SHORT_CALL, SELL, 0.5), LegTarget(1, SHORT_PUT, SELL, 0.5),
            LegTarget(2, WING_CALL, BUY, 0.5), LegTarget(3, WING_PUT, BUY, 0.5)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, config)
    result, _ = _run(env, job, chunk_count=2)

    assert result.status is JobStatus.FILLED
    assert [leg.filled_qty for leg in result.legs] == pytest.approx([0.5] * 4)
    _assert_matches_exchange(env, result)
    signed = [env.sim.exchange.position_of(None, s) for s in (SHORT_CALL, SHORT_PUT, WING_CALL, WING_PUT)]
    assert signed == pytest.approx([-0.5, -0.5, 0.5, 0.5])
    assert result.total_cash > 0                                 # a short condor collects a credit
    _assert_chains(env, legs)
    assert len(env.sim.requests_for("create_order")) <= 2 * 4 * 6


def test_mark_quotes_come_from_the_chain_never_the_book(quiet_env):
    env = quiet_env
    config = SmartExecConfig(chunk_count=1, quoting_strategy="mark", **FAST)
    legs = [LegTarget(0, ATM_CALL, BUY, 0.3), LegTarget(1, ATM_PUT, SELL, 0.3)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, config)
    for _ in range(3):
        job.advance(env.sim.clock.now())
        env.sim.clock.advance(2.0)
    creates = env.sim.requests_for("create_order")
    assert len(creates) == 2
    assert env.sim.requests_for("orderbook") == []               # quoting at mark reads no book
    for request in creates:
        leg = legs[parse_client_order_id(request.params["clientOrderId"]).leg_index]
        mark = env.market.quote(leg.symbol).mark                 # the chain row the job used
        assert float(request.params["price"]) == snap_price(mark, 1.0, leg.side)
    result, _ = _run(env, job, chunk_count=1)
    assert result.status is JobStatus.FILLED                     # the fallback crossed the spread


def test_partial_fill_then_completion_sums_the_chain(quiet_env):
    env = quiet_env
    config = SmartExecConfig(chunk_count=1, **FAST)
    legs = [LegTarget(0, ATM_CALL, BUY, 1.0), LegTarget(1, ATM_PUT, BUY, 1.0)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, config)
    forced = {}

    def partial(tick):
        if tick == 3:
            first = env.ledger.orders(TRADE.id, 0)[0]
            forced["qty"] = env.sim.exchange.force_fill(first.order_id, 0.4)

    result, _ = _run(env, job, chunk_count=1, before_tick=partial)
    assert forced["qty"] == pytest.approx(0.4)
    assert result.status is JobStatus.FILLED
    assert [leg.filled_qty for leg in result.legs] == pytest.approx([1.0, 1.0])
    orders = env.ledger.orders(TRADE.id, 0)
    assert orders[0].filled_qty == pytest.approx(0.4) and orders[0].status is OrderStatus.CANCELED
    for index, order in enumerate(orders[1:], start=1):          # every replacement is the remainder
        assert order.qty == pytest.approx(1.0 - sum(o.filled_qty for o in orders[:index]))
    _assert_matches_exchange(env, result)
    fills = [(o.filled_qty, o.avg_price) for o in orders if o.filled_qty > 0]
    assert result.legs[0].vwap == pytest.approx(sum(q * p for q, p in fills) / 1.0)
    assert env.sim.exchange.position_of(None, ATM_CALL) == pytest.approx(1.0)


def test_a_leg_without_liquidity_holds_the_other_back_and_the_job_ends_partial(env):
    env.sim.market.set_empty_side(SHORT_PUT, "bid")               # nobody buys the put
    config = SmartExecConfig(chunk_count=4, **FAST)
    legs = [LegTarget(0, SHORT_CALL, SELL, 1.0), LegTarget(1, SHORT_PUT, SELL, 1.0)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, config)
    result, watch = _run(env, job, chunk_count=4)

    assert result.status is JobStatus.PARTIAL
    assert "leg 1" in result.reason and "no bid" in result.reason
    call, put = result.legs
    assert put.filled_qty == 0.0
    assert 0 < call.filled_qty <= 0.25 + 1e-9                    # never more than one chunk ahead
    assert env.sim.exchange.position_of(None, SHORT_CALL) == pytest.approx(-call.filled_qty)
    for order in env.ledger.orders(TRADE.id, 0):
        assert order.qty <= 0.25 + 1e-9
    assert env.ledger.live_orders(TRADE.id) == []
    assert all(o["state"] not in (0, 2, 4, 5) for o in _exchange_orders(env, call.order_ids + put.order_ids))
    assert job.chunk == 1                                        # chunk 2 never started


def test_a_lagging_leg_that_progressed_continues_and_the_cap_holds_the_other_leg(quiet_env):
    env = quiet_env
    env.sim.market.set_empty_side(ATM_PUT, "bid")                # the put can rest at its ask, not cross
    config = SmartExecConfig(chunk_count=2, time_per_chunk_seconds=20.0, aggressive_attempts=2,
                             aggressive_wait_seconds=4.0, grace_seconds=2.0)
    legs = [LegTarget(0, SHORT_CALL, SELL, 1.0), LegTarget(1, ATM_PUT, SELL, 1.0)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, config)

    def someone_lifts_the_put(tick):
        if tick == 3:
            put_order = env.ledger.orders(TRADE.id, 1)[0]
            assert env.sim.exchange.force_fill(put_order.order_id, 0.2) == pytest.approx(0.2)

    result, watch = _run(env, job, chunk_count=2, before_tick=someone_lifts_the_put)
    assert 2 in watch.chunk_fills                                 # behind but progressing: chunk 2 ran
    assert watch.chunk_fills[2] == pytest.approx([0.5, 0.2])
    call, put = result.legs
    assert put.filled_qty == pytest.approx(0.2)
    assert call.filled_qty == pytest.approx(0.7)                  # capped at 0.2 + 1/2, not the 1.0 target
    assert watch.max_spread == pytest.approx(0.5)
    assert result.status is JobStatus.PARTIAL and "leg 1" in result.reason
    assert env.ledger.live_orders(TRADE.id) == []


def test_grace_poll_counts_a_fill_reported_after_the_last_cancel(quiet_env):
    env = quiet_env
    config = SmartExecConfig(chunk_count=1, time_per_chunk_seconds=20.0, aggressive_attempts=0, grace_seconds=5.0)
    legs = [LegTarget(0, ATM_CALL, BUY, 1.0), LegTarget(1, ATM_PUT, BUY, 1.0)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, config)

    def late_fill(tick):
        if tick == 10:                                            # the chunk ends: its orders are cancelled
            assert job.phase == "quoting"
            env.sim.exchange.faults.fill_report_lag_seconds = 3.0
            env.sim.exchange.faults.fill_on_next_cancel_qty = 0.5

    result, _ = _run(env, job, chunk_count=1, before_tick=late_fill)
    truth = [sum(o["fillQty"] for o in _exchange_orders(env, leg.order_ids)) for leg in result.legs]
    assert sorted(truth) == pytest.approx([0.0, 0.5])
    assert [leg.filled_qty for leg in result.legs] == pytest.approx(truth)
    assert result.status is JobStatus.PARTIAL


def test_open_with_a_leg_that_cannot_be_quoted_places_nothing(env):
    env.sim.market.set_empty_side(SHORT_PUT, "both")
    config = SmartExecConfig(chunk_count=2, **FAST)
    legs = [LegTarget(0, SHORT_CALL, SELL, 1.0), LegTarget(1, SHORT_PUT, SELL, 1.0)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, config)
    started = env.sim.clock.now()
    result, _ = _run(env, job, chunk_count=2)
    assert result.status is JobStatus.FAILED and "no ask" in result.reason
    assert env.sim.clock.now() - started >= 20.0
    assert env.sim.requests_for("create_order") == [] and env.ledger.orders() == []


def test_no_order_on_a_leg_inside_the_pre_expiry_halt(env):
    env.sim.clock.advance(106 * 60)                                # 07:46 UTC: 2MAR26 halts at 07:45
    legs = [LegTarget(0, "BTCUSD-2MAR26-92000-C", SELL, 0.2), LegTarget(1, SHORT_PUT, SELL, 0.2)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, SmartExecConfig(chunk_count=2, **FAST))
    result, _ = _run(env, job, chunk_count=2)
    assert result.status is JobStatus.FAILED and "frozen" in result.reason
    assert env.sim.requests_for("create_order") == []


def test_lost_create_response_is_resolved_by_client_order_id_without_duplicate(env):
    env.sim.faults.add(FaultRule(endpoint="create_order", mode="lost_response", count=1))
    config = SmartExecConfig(chunk_count=2, **FAST)
    legs = [LegTarget(0, SHORT_CALL, SELL, 0.4), LegTarget(1, SHORT_PUT, SELL, 0.4)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, config)
    seen_unknown = []

    def watch_unknown(_tick):
        seen_unknown.extend(o.client_order_id for o in env.ledger.orders(TRADE.id)
                            if o.status is OrderStatus.UNKNOWN)

    result, _ = _run(env, job, chunk_count=2, before_tick=watch_unknown)
    assert result.status is JobStatus.FILLED
    assert seen_unknown, "the lost response should have left an order UNKNOWN"
    lost = env.ledger.get(seen_unknown[0])
    assert lost.order_id is not None and lost.status.is_final      # adopted from the exchange
    ours = _exchange_orders(env, [o.client_order_id for o in env.ledger.orders(TRADE.id)])
    coids = [o["clientOrderId"] for o in ours]
    assert len(coids) == len(set(coids)) == len(env.ledger.orders(TRADE.id))
    assert len(env.sim.requests_for("create_order")) == len(coids)   # no POST was re-sent
    _assert_matches_exchange(env, result)
    assert env.sim.exchange.position_of(None, SHORT_CALL) == pytest.approx(-0.4)


def test_a_fill_between_poll_and_cancel_is_counted_and_only_the_rest_replaced(quiet_env):
    env = quiet_env
    env.sim.exchange.faults.fill_on_next_cancel_qty = 0.3
    config = SmartExecConfig(chunk_count=1, **FAST)
    legs = [LegTarget(0, ATM_CALL, BUY, 1.0), LegTarget(1, ATM_PUT, BUY, 1.0)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, config)
    result, _ = _run(env, job, chunk_count=1)

    assert env.sim.exchange.faults.fill_on_next_cancel_qty == 0.0   # the fault fired
    assert result.status is JobStatus.FILLED
    hit = [o for o in env.ledger.orders(TRADE.id) if o.status is OrderStatus.CANCELED and o.filled_qty > 0]
    assert hit and hit[0].filled_qty >= 0.3 - 1e-9
    for leg in legs:
        orders = env.ledger.orders(TRADE.id, leg.leg_index)
        for index, order in enumerate(orders[1:], start=1):
            assert order.qty == pytest.approx(1.0 - sum(o.filled_qty for o in orders[:index]))
        assert env.sim.exchange.position_of(None, leg.symbol) == pytest.approx(1.0)   # never overfilled
    _assert_matches_exchange(env, result)


@pytest.mark.parametrize("intent, digits", [(Intent.CLOSE, {3, 4}), (Intent.KILL, {7, 8})])
def test_closes_are_reduce_only(env, intent, digits):
    env.sim.exchange.set_position(None, SHORT_CALL, -0.6, 400.0)
    env.sim.exchange.set_position(None, SHORT_PUT, -0.6, 400.0)
    config = SmartExecConfig(chunk_count=2, **FAST)
    legs = [LegTarget(0, SHORT_CALL, BUY, 0.6), LegTarget(1, SHORT_PUT, BUY, 0.6)]
    job = env.executor.start(TRADE, legs, intent, config, best_effort=True)
    result, _ = _run(env, job, chunk_count=2)

    assert result.status is JobStatus.FILLED
    assert env.sim.exchange.position_of(None, SHORT_CALL) == 0.0
    assert env.sim.exchange.position_of(None, SHORT_PUT) == 0.0
    creates = env.sim.requests_for("create_order")
    assert creates
    for request in creates:
        assert request.params["reduceOnly"] == 1
        assert parse_client_order_id(request.params["clientOrderId"]).intent in digits
    assert all(o.reduce_only for o in env.ledger.orders(TRADE.id))


def test_reprice_cancels_and_confirms_before_replacing_on_a_rising_market(sim_factory):
    sim = sim_factory(exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0))
    sim.exchange.faults.hold_canceling_seconds = 3.0              # cancels linger in state 5
    start = sim.clock.now_ms()
    sim.market.set_scripted_path([(start, 90_000.0), (start + 120_000, 96_000.0)])
    env = smart_rig(sim)
    config = SmartExecConfig(chunk_count=1, time_per_chunk_seconds=60.0, aggressive_attempts=3,
                             aggressive_wait_seconds=4.0)
    job = env.executor.start(TRADE, [LegTarget(0, ATM_CALL, BUY, 0.5)], Intent.OPEN, config)
    seen_canceling = []

    def watch_canceling(tick):
        orders = env.ledger.orders(TRADE.id, 0)
        if orders and orders[-1].exchange_state == 5:
            seen_canceling.append(tick)

    result, _ = _run(env, job, chunk_count=1, before_tick=watch_canceling)
    env.client.close()
    assert result.status is JobStatus.FILLED and seen_canceling

    orders = env.ledger.orders(TRADE.id, 0)
    creates = env.sim.requests_for("create_order")
    assert len(orders) >= 3, "the rising bid should have caused reprices"
    created_at = {r.params["clientOrderId"]: r.time_ms for r in creates}
    cancels = env.sim.requests_for("cancel_order")
    for before, after in zip(orders, orders[1:]):
        cancel_times = [r.time_ms for r in cancels if int(r.params["orderId"]) == before.order_id]
        assert cancel_times and max(cancel_times) <= created_at[after.client_order_id]
        assert after.supersedes == before.client_order_id and after.intent is Intent.OPEN_REQUOTE
    quoting = [o for o in orders if created_at[o.client_order_id] < created_at[orders[0].client_order_id] + 60_000]
    times = [created_at[o.client_order_id] for o in quoting]
    assert all(b - a >= 10_000 for a, b in zip(times, times[1:]))   # at most one reprice per interval
    prices = [o.price for o in quoting]
    assert prices == sorted(prices) and prices[-1] > prices[0]     # followed the bid up


def test_offset_quotes_do_not_chase_our_own_bid(quiet_env):
    """The public book shows our resting bid; pricing off it would ratchet +offset per reprice."""
    env = quiet_env
    config = SmartExecConfig(chunk_count=1, time_per_chunk_seconds=60.0, quoting_strategy="top_of_book_offset",
                             offset_pct=5.0, aggressive_attempts=1, aggressive_wait_seconds=4.0)
    job = env.executor.start(TRADE, [LegTarget(0, ATM_CALL, BUY, 0.5)], Intent.OPEN, config)
    market_bids, passive = [], []

    def record(_tick):
        if job.phase in ("pricing", "quoting"):
            market_bids.append(env.sim.market.book(ATM_CALL, 1)[0][0][0])   # the market's own depth
            passive[:] = env.ledger.orders(TRADE.id, 0)

    _run(env, job, chunk_count=1, before_tick=record)
    assert len(passive) >= 3, "the moving book should have caused reprices"
    ceiling = snap_price(max(market_bids) * 1.05, 1.0, BUY)
    assert all(o.price <= ceiling for o in passive), ([o.price for o in passive], ceiling)


def test_request_stop_cancels_confirms_and_reports(quiet_env):
    env = quiet_env
    config = SmartExecConfig(chunk_count=2, **FAST)
    legs = [LegTarget(0, ATM_CALL, BUY, 0.5), LegTarget(1, ATM_PUT, BUY, 0.5)]
    job = env.executor.start(TRADE, legs, Intent.OPEN, config)
    for _ in range(3):
        job.advance(env.sim.clock.now())
        env.sim.clock.advance(2.0)
    live = env.ledger.live_orders(TRADE.id)
    assert len(live) == 2
    env.sim.exchange.force_fill(live[0].order_id, 0.1)
    job.request_stop("kill switch")
    result, _ = _run(env, job, chunk_count=2)
    assert result.status is JobStatus.PARTIAL and result.reason == "kill switch"
    assert sorted(leg.filled_qty for leg in result.legs) == pytest.approx([0.0, 0.1])
    assert env.ledger.live_orders(TRADE.id) == []
    states = [o["state"] for o in _exchange_orders(env, [o.client_order_id for o in env.ledger.orders(TRADE.id)])]
    assert states and all(s == 3 for s in states)


def test_two_jobs_advance_side_by_side_without_blocking_each_other(env):
    """Non-blocking (§6.0, §8 row 37): each advance returns after a bounded number of requests,
    so a second trade's job makes progress in the same ticks as a long first one."""
    long_job = env.executor.start(TRADE, [LegTarget(0, SHORT_CALL, SELL, 1.0), LegTarget(1, SHORT_PUT, SELL, 1.0)],
                                  Intent.OPEN, SmartExecConfig(chunk_count=5, **FAST))
    other = SimpleNamespace(id="T000000012", seq=12)
    short_job = env.executor.start(other, [LegTarget(0, WING_CALL, BUY, 0.2), LegTarget(1, WING_PUT, BUY, 0.2)],
                                   Intent.OPEN, SmartExecConfig(chunk_count=1, **FAST))
    for _ in range(60):
        for job in (long_job, short_job):
            before = sum(env.sim.counts.values())
            job.advance(env.sim.clock.now())
            assert sum(env.sim.counts.values()) - before <= MAX_REQUESTS
        if short_job.done:
            break
        env.sim.clock.advance(2.0)
    assert short_job.status is JobStatus.FILLED
    assert not long_job.done                                     # still working its chunks meanwhile
