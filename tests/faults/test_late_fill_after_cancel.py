"""A fill reported late around a requote's cancel (API.md 11 quirk 16), found by the HTTP fault campaign.

The day campaign's "fill reports lag 5 s" window produced an over-filled open leg
(23 lots against a target of 20) and a ledger that never learned of the extra 3 lots:
the replacement of a requote is placed as soon as the cancel is confirmed, while the
exchange still shows the cancelled order with ``fillQty`` 0, and nothing polls that final
order again. The engines now poll a cancelled order once more ``grace_seconds`` after it
turned final before sizing its replacement.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from execution_job import JobStatus, LegTarget
from market_data import MarketData
from multileg_orderbook import SmartExecConfig, SmartOrderbookExecutor
from order_ledger import Intent, OrderLedger, OrderStatus
from persistence import StateStore
from simulator.exchange import ExchangeConfig
from trade_execution import ExecutionParams, ExecutionPhase, LimitFillManager

BUY = 1
CALL = "BTCUSD-3MAR26-90000-C"   # seed 7: a liquid at-the-money call with both book sides
TRADE = SimpleNamespace(id="T000000021", seq=21)
LAG_SECONDS = 5.0
LATE_FILL = 0.3
TICK_SECONDS = 2.0


@pytest.fixture
def rig(sim_factory):
    """No passive fills: an order fills only when it crosses or when the test forces it."""
    sim = sim_factory(exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0))
    client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                            Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    market = MarketData(client, sim.clock)
    ledger = OrderLedger(client, sim.clock, store=StateStore(":memory:"))
    yield SimpleNamespace(sim=sim, market=market, ledger=ledger)
    client.close()


def _exchange_filled(sim, coids) -> float:
    wanted = set(coids)
    return round(sum(o["fillQty"] for o in sim.exchange.orders() if o["clientOrderId"] in wanted), 8)


def _run_until_done(rig, job, before_tick, max_ticks: int = 200) -> None:
    for tick in range(max_ticks):
        before_tick(tick)
        if job.advance(rig.sim.clock.now()) is not JobStatus.WORKING:
            return
        rig.sim.clock.advance(TICK_SECONDS)
    raise AssertionError("the job did not end")


def _arm_late_fill_on_the_next_cancel(sim) -> None:
    sim.exchange.faults.fill_report_lag_seconds = LAG_SECONDS
    sim.exchange.faults.fill_on_next_cancel_qty = LATE_FILL


def test_a_phased_limit_requote_never_overfills_when_the_cancelled_order_reports_its_fill_late(rig):
    # The grace covers the lag: a report later than the grace is the reconciliation's (it re-polls).
    params = ExecutionParams(max_requote_rounds=5, grace_seconds=LAG_SECONDS + 1, phases=(
        ExecutionPhase("top_of_book", 20.0, 10.0),           # rests at the bid: nothing fills
        ExecutionPhase("aggressive", 40.0, 10.0, buffer_pct=5.0),   # crosses: the replacement fills at once
    ))
    job = LimitFillManager(rig.ledger, rig.market, rig.sim.clock).start(
        TRADE, [LegTarget(0, CALL, BUY, 1.0)], Intent.OPEN, params)
    started = rig.sim.clock.now()

    def before_tick(_tick: int) -> None:
        if rig.sim.clock.now() - started >= 18.0 and rig.sim.exchange.faults.fill_report_lag_seconds == 0.0:
            _arm_late_fill_on_the_next_cancel(rig.sim)       # the phase change at 20 s cancels the resting bid

    _run_until_done(rig, job, before_tick)
    rig.sim.clock.advance(LAG_SECONDS + 1)                   # every fill is visible by now
    coids = [o.client_order_id for o in rig.ledger.orders(TRADE.id)]
    assert rig.sim.exchange.faults.fill_on_next_cancel_qty == 0.0, "the late fill was never injected"
    assert rig.sim.exchange.position_of(None, CALL) == pytest.approx(1.0)          # never opened beyond target
    assert sum(o.filled_qty for o in rig.ledger.orders(TRADE.id)) == pytest.approx(_exchange_filled(rig.sim, coids))


def test_a_smart_reprice_never_overfills_when_the_cancelled_order_reports_its_fill_late(rig):
    config = SmartExecConfig(chunk_count=2, time_per_chunk_seconds=20.0, quoting_strategy="top_of_book",
                             reprice_interval_seconds=10.0, aggressive_attempts=3, aggressive_wait_seconds=4.0)
    job = SmartOrderbookExecutor(rig.ledger, rig.market, rig.sim.clock).start(
        TRADE, [LegTarget(0, CALL, BUY, 1.0)], Intent.OPEN, config)
    started = rig.sim.clock.now()

    def before_tick(_tick: int) -> None:
        if rig.sim.clock.now() - started >= 18.0 and rig.sim.exchange.faults.fill_report_lag_seconds == 0.0:
            _arm_late_fill_on_the_next_cancel(rig.sim)       # the chunk ends at 20 s: its order is cancelled

    _run_until_done(rig, job, before_tick)
    rig.sim.clock.advance(LAG_SECONDS + 1)
    coids = [o.client_order_id for o in rig.ledger.orders(TRADE.id)]
    assert rig.sim.exchange.faults.fill_on_next_cancel_qty == 0.0, "the late fill was never injected"
    assert rig.sim.exchange.position_of(None, CALL) == pytest.approx(1.0)
    assert sum(o.filled_qty for o in rig.ledger.orders(TRADE.id)) == pytest.approx(_exchange_filled(rig.sim, coids))
    assert all(o.status.is_final for o in rig.ledger.orders(TRADE.id))
    assert OrderStatus.CANCELED in {o.status for o in rig.ledger.orders(TRADE.id)}


def test_a_failed_recheck_never_lets_a_replacement_be_sized_from_stale_fills(rig):
    """Found by the fault day with issue 9's faults: the grace re-poll of the cancelled order hit
    an HTTP failure, the ledger took "no answer" for "no late fill", and the replacement bought
    the late-reported lots a second time (14 lots against a target of 10)."""
    from simulator.faults import HTTP_5XX, FaultRule

    params = ExecutionParams(max_requote_rounds=5, grace_seconds=LAG_SECONDS + 1, phases=(
        ExecutionPhase("top_of_book", 20.0, 10.0),
        ExecutionPhase("aggressive", 40.0, 10.0, buffer_pct=5.0),
    ))
    job = LimitFillManager(rig.ledger, rig.market, rig.sim.clock).start(
        TRADE, [LegTarget(0, CALL, BUY, 1.0)], Intent.OPEN, params)
    started = rig.sim.clock.now()
    aimed: list[int] = []
    armed_at: list[float] = []

    def before_tick(_tick: int) -> None:
        now = rig.sim.clock.now()
        if now - started >= 18.0 and not armed_at:
            armed_at.append(now)
            _arm_late_fill_on_the_next_cancel(rig.sim)      # the phase change at 20 s cancels the resting bid
        for order in rig.ledger.orders(TRADE.id):
            due = now - float(order.updated_at) >= params.grace_seconds
            late = bool(armed_at) and float(order.updated_at) >= armed_at[0]
            if order.status is OrderStatus.CANCELED and due and late and order.order_id not in aimed:
                aimed.append(order.order_id)   # the grace re-poll of this order fails twice
                rig.sim.faults.add(FaultRule(HTTP_5XX, endpoint="query_order", count=2,
                                             params_match={"orderId": order.order_id}))

    _run_until_done(rig, job, before_tick)
    rig.sim.clock.advance(LAG_SECONDS + 1)
    coids = [o.client_order_id for o in rig.ledger.orders(TRADE.id)]
    assert rig.sim.exchange.faults.fill_on_next_cancel_qty == 0.0, "the late fill was never injected"
    assert aimed, "no recheck was aimed at"
    assert rig.sim.faults.counts.get(HTTP_5XX, 0) >= 1, "the recheck never failed"
    assert rig.sim.exchange.position_of(None, CALL) == pytest.approx(1.0)          # never opened beyond target
    assert sum(o.filled_qty for o in rig.ledger.orders(TRADE.id)) == pytest.approx(_exchange_filled(rig.sim, coids))
