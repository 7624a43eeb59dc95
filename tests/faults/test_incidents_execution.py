"""Incidents of order execution (BEHAVIOUR.md section 8, rows 4, 5, 12, 23, 25, 29).

Every test trades against the simulator over loopback on a speed-0 clock, through the
product's own client, ledger, executors and lifecycle (``LifecycleRig``).
"""
from __future__ import annotations

import dataclasses
import random
from decimal import Decimal
from types import SimpleNamespace

import pytest
import requests

from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from errors import ExchangeError
from execution_job import JobStatus, LegTarget
from option_selection import LegSpec, iron_condor, resolve_legs, straddle, strangle
from order_ledger import Intent, OrderStatus, snap_qty
from rfq import RFQExecutor, RFQParams
from simulator import FaultRule
from simulator.errors import SimError
from simulator.exchange import ExchangeConfig
from trade_execution import ExecutionParams
from trade_lifecycle import TradeState

from tests.faults.test_incident_rig import (
    OPEN_INTENTS,
    REDUCING_INTENTS,
    LifecycleRig,
    creates,
    intent_of,
    reduce_only_flag,
)

BUY, SELL = 1, 2
FAST = ExecutionParams(fill_timeout_seconds=6.0, max_requote_rounds=2, grace_seconds=2.0)


@pytest.fixture
def quiet_sim(sim_factory):
    """No random passive fills: an order fills only when it crosses (or a test forces it)."""
    return sim_factory(exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0))


@pytest.fixture
def rig(quiet_sim):
    built = LifecycleRig(quiet_sim)
    yield built
    built.close()


# ---------------------------------------------------------------------------------------------
# Row 4
# ---------------------------------------------------------------------------------------------


def test_incident_04_close_leg_without_bids_never_builds_a_naked_reverse_position(rig):
    """Long straddle close with empty put bids for 20 rounds: the call never goes below 0, sold = position;
    the breaker trips with a CRITICAL alert and the trade keeps its exposure, never FAILED."""
    trade = rig.open(straddle(0.1, dte=1), execution_params=FAST)
    call, put = trade.legs
    assert call.option_type == "C" and put.option_type == "P" and call.strike == put.strike
    rig.sim.market.set_empty_side(put.symbol, "bid")
    seen_call_positions: list[float] = []
    rig.after_tick.append(lambda: seen_call_positions.append(rig.sim.exchange.position_of(None, call.symbol)))

    assert rig.manager.force_close(trade.id, "manual")

    def next_round_or_breaker() -> bool:
        if trade.breaker_until is not None and trade.breaker_until > rig.clock.now():
            rig.clock.set_time(trade.breaker_until)     # the breaker's wait, skipped in one jump
        return trade.failed_rounds >= 20

    assert rig.drive(12 * 3600, until=next_round_or_breaker), (trade.state, trade.failed_rounds)
    assert min(seen_call_positions) >= 0.0                            # never a naked short call
    sold_call = sum(o.filled_qty for o in rig.ledger.orders(trade.id, leg_index=call.index) if o.side == SELL)
    assert sold_call == pytest.approx(0.1)                            # exactly the position, once
    assert rig.sim.exchange.position_of(None, call.symbol) == 0.0
    assert call.net_qty == 0.0 and put.net_qty == pytest.approx(0.1)
    assert trade.state in (TradeState.PENDING_CLOSE, TradeState.CLOSING) and trade.breaker_trips >= 1
    breaker_alerts = [a for a in rig.alerts.recent(100) if a.kind == "close_breaker"]
    assert breaker_alerts and all(a.level == "CRITICAL" for a in breaker_alerts)
    for record in creates(rig.sim):
        assert intent_of(record) in OPEN_INTENTS or reduce_only_flag(record)

    rig.sim.market.set_empty_side(put.symbol, None)                    # bids come back
    if trade.breaker_until is not None:
        rig.clock.set_time(max(rig.clock.now(), trade.breaker_until))
    assert rig.drive(600, until=lambda: trade.state is TradeState.CLOSED), trade.state
    assert rig.sim.exchange.position_of(None, put.symbol) == 0.0


# ---------------------------------------------------------------------------------------------
# Row 5
# ---------------------------------------------------------------------------------------------


def _partial_open_legs(rig: LifecycleRig):
    """A long strangle whose put asks for 50 BTC more than the book offers within the 2 % buffer."""
    legs = resolve_legs(strangle(0.1, side=1, dte=1), rig.market)
    put = legs[1]
    book = rig.market.order_book(put.symbol)
    reachable = sum(size for price, size in book.asks if price <= book.best_ask * 1.02)
    # A resolved leg's quantity is its spec's (read through, never copied): grow the spec.
    return [legs[0], dataclasses.replace(put, spec=dataclasses.replace(put.spec, qty=snap_qty(reachable + 50.0)))]


def test_incident_05_every_close_unwind_and_kill_order_is_reduce_only(rig):
    """Every create with intent digit 3-8 carries reduceOnly=1 (opens never do); the simulator
    refuses reduce-only growth."""
    closed = rig.open(strangle(0.1, side=1, dte=1), execution_params=FAST)
    assert rig.manager.force_close(closed.id, "manual")
    assert rig.drive(600, until=lambda: closed.state is TradeState.CLOSED), closed.state

    killed = rig.open(strangle(0.1, side=1, dte=1), execution_params=FAST)
    assert rig.manager.force_close(killed.id, "kill_switch")
    assert rig.drive(900, until=lambda: killed.state is TradeState.CLOSED), killed.state

    partial_legs = _partial_open_legs(rig)
    unwound = rig.manager.create("incident", partial_legs,
                                 execution_params=ExecutionParams(fill_timeout_seconds=6.0, max_requote_rounds=0,
                                                                  grace_seconds=2.0))
    rig.sim.market.set_empty_side(partial_legs[1].symbol, "ask")   # the put's rest can never fill now
    assert rig.drive(120, until=lambda: unwound.state is not TradeState.OPENING), unwound.state
    assert unwound.state is TradeState.UNWINDING
    rig.sim.market.set_empty_side(partial_legs[1].symbol, None)
    assert rig.drive(900, until=lambda: unwound.state is TradeState.FAILED), unwound.state

    sent = creates(rig.sim, accepted_only=True)
    assert {3, 5, 7} <= {intent_of(r) for r in sent}                  # a close, an unwind and a kill went out
    for record in creates(rig.sim):
        if intent_of(record) in REDUCING_INTENTS:
            assert reduce_only_flag(record), record.params
        else:
            assert intent_of(record) in OPEN_INTENTS and not reduce_only_flag(record), record.params
    for trade in (closed, killed, unwound):
        for leg in trade.legs:
            assert leg.net_qty == 0.0 and rig.sim.exchange.position_of(None, leg.symbol) == 0.0

    # The exchange's side of the rule: a reduce-only order that would grow a position is refused.
    symbol = closed.legs[0].symbol
    price = rig.market.order_book(symbol, max_age=0).best_ask
    with pytest.raises(ExchangeError) as flat:
        rig.client.create_order(symbol, 0.1, SELL, price, 101_000_000_000_001_001, reduce_only=True)
    rig.sim.exchange.set_position(None, symbol, 0.5, price)
    with pytest.raises(ExchangeError) as growing:
        rig.client.create_order(symbol, 0.1, BUY, price, 101_000_000_000_001_002, reduce_only=True)
    assert flat.value.code == growing.value.code == 10536
    assert rig.sim.exchange.position_of(None, symbol) == 0.5


# ---------------------------------------------------------------------------------------------
# Row 12
# ---------------------------------------------------------------------------------------------


def test_incident_12_a_retried_get_is_signed_with_a_fresh_timestamp(sim, signed_request):
    """The first GET times out (after 10 s of exchange-side delay) -> the retry has a new ts and no 10557."""
    client = CoincallClient(ClientSettings(base_url=sim.base_url, timeout_seconds=0.2, max_retries=3),
                            Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    try:
        sim.faults.add(FaultRule(mode="latency", endpoint="positions", count=1, seconds=10.0))
        sim.faults.add(FaultRule(mode="timeout", endpoint="positions", count=1, seconds=1.0))
        assert client.positions() == []
    finally:
        client.close()
    first, retry = sim.requests_for("positions")
    assert first.fault == "timeout" and first.http_status is None
    assert retry.fault is None and retry.http_status == 200 and retry.code == 0
    assert int(retry.headers_ts) > int(first.headers_ts) + 10_000    # signed at its own send time
    assert retry.time_ms - int(retry.headers_ts) < 5_000
    # The first signature, re-sent now, is exactly what the exchange refuses.
    replay = signed_request("GET", "/open/option/position/get/v1", ts=int(first.headers_ts))
    assert replay["code"] == 10557


# ---------------------------------------------------------------------------------------------
# Row 23
# ---------------------------------------------------------------------------------------------


def _cancel_and_confirm(rig: LifecycleRig, order) -> None:
    rig.ledger.cancel(order)
    for _ in range(10):
        rig.clock.advance(1.0)
        rig.ledger.poll(order)
        if order.status.is_final:
            return
    raise AssertionError(f"order {order.client_order_id} never became final: {order.status}")


def _on_the_lot(qty: float) -> bool:
    """Exactly a whole number of 0.01 lots, as the float that goes into the JSON body."""
    return (Decimal(repr(qty)) * 100) % 1 == 0


def test_incident_23_float_residue_quantities_are_sent_on_the_lot(rig):
    """0.6 - 0.1 - 0.2 is sent as 0.3; over 1,000 random fill sequences no remainder is off the lot,
    and a sample of them is accepted by the simulator."""
    legs = resolve_legs([LegSpec("C", BUY, 0.1, {"type": "closestStrike"}, {"dte": 1})], rig.market)
    symbol = legs[0].symbol
    book = rig.market.order_book(symbol)
    resting = max(1.0, book.best_bid - 20)                           # a bid that waits on the book
    residue = 0.6 - (0.1 + 0.2)                                      # a 0.6 target after fills of 0.1 and 0.2
    assert residue != 0.3
    order = rig.ledger.place(trade_id="T000000001", trade_seq=1, leg_index=0, intent=Intent.OPEN, symbol=symbol,
                             side=BUY, qty=residue, price=resting, tick_size=1.0)
    assert order.status is OrderStatus.LIVE and order.qty == 0.3
    [sent] = creates(rig.sim)
    assert sent.params["qty"] == 0.3 and sent.code == 0
    _cancel_and_confirm(rig, order)

    rng = random.Random(23)
    samples: list[float] = []
    for sequence in range(1000):
        target = rng.randint(1, 500) / 100
        remaining = target
        while remaining >= 0.01:
            fill = rng.randint(1, max(1, int(round(remaining * 100)))) * 0.01   # float lots, as fills arrive
            remaining = snap_qty(remaining - fill)
            assert _on_the_lot(remaining), (target, fill, remaining)
            if remaining and sequence < 40 and len(samples) < 40:
                samples.append(remaining)
    for seq, qty in enumerate(samples, start=2):
        placed = rig.ledger.place(trade_id=f"T{seq:09d}", trade_seq=seq, leg_index=0, intent=Intent.OPEN,
                                  symbol=symbol, side=BUY, qty=qty, price=resting, tick_size=1.0)
        assert placed.status is OrderStatus.LIVE, (qty, placed.error_code)
        _cancel_and_confirm(rig, placed)
    codes = [r.code for r in creates(rig.sim)]
    assert len(codes) == 1 + len(samples) and set(codes) == {0}       # no off-lot rejection (10558)


# ---------------------------------------------------------------------------------------------
# Row 25
# ---------------------------------------------------------------------------------------------


def test_incident_25_one_rejected_leg_never_blocks_the_other_legs_of_a_close(rig, monkeypatch):
    """4-leg close, leg 3 rejected with 10531: legs 1, 2, 4 close; leg 3 is retried; CLOSED when it fills."""
    trade = rig.open(iron_condor(0.1, dte=1), execution_params=FAST)
    assert len(trade.legs) == 4
    third = trade.legs[2]
    rejecting = {"on": True}
    real_band_check = rig.sim.exchange._check_band

    def band_check(instrument, price):
        # The simulator's own band check, with leg 3's symbol out of band while "on".
        if rejecting["on"] and instrument.symbol == third.symbol:
            raise SimError(10531, "Order price above the max limit")
        return real_band_check(instrument, price)

    monkeypatch.setattr(rig.sim.exchange, "_check_band", band_check)
    since = rig.clock.now()
    assert rig.manager.force_close(trade.id, "manual")
    others = [leg for leg in trade.legs if leg is not third]
    assert rig.drive(300, until=lambda: all(leg.net_qty == 0.0 for leg in others)), \
        [(leg.index, leg.net_qty) for leg in trade.legs]
    assert rig.drive(120, until=lambda: len([r for r in creates(rig.sim, since=since)
                                             if r.params["symbol"] == third.symbol]) >= 2)
    tries = [r for r in creates(rig.sim, since=since) if r.params["symbol"] == third.symbol]
    assert {r.code for r in tries} == {10531}                        # retried, each time refused
    assert third.net_qty == pytest.approx(0.1) and trade.state is not TradeState.CLOSED
    for leg in others:
        assert rig.sim.exchange.position_of(None, leg.symbol) == 0.0

    rejecting["on"] = False
    if trade.breaker_until is not None:
        rig.clock.set_time(max(rig.clock.now(), trade.breaker_until))
    assert rig.drive(900, until=lambda: trade.state is TradeState.CLOSED), trade.state
    assert rig.sim.exchange.position_of(None, third.symbol) == 0.0 and third.net_qty == 0.0
    assert rig.closed == [trade] and trade.exit_reason == "manual"


# ---------------------------------------------------------------------------------------------
# Row 29
# ---------------------------------------------------------------------------------------------


def _screen_cost(sim, legs) -> float:
    """The hand computation: read each book over HTTP; a BUY pays the best ask, a SELL receives the best bid."""
    total = 0.0
    for leg in legs:
        book = requests.get(f"{sim.base_url}/open/option/order/orderbook/v1/{leg.symbol}", timeout=5).json()["data"]
        if leg.side == BUY:
            total += float(book["asks"][0]["price"]) * leg.qty
        else:
            total -= float(book["bids"][0]["price"]) * leg.qty
    return total


def test_incident_29_rfq_baseline_per_leg_by_our_side_and_a_mirrored_leg_quote_is_discarded(sim_factory):
    """Iron condor with a known book: baseline = hand computation; a quote with one mirrored leg is discarded."""
    sim = sim_factory(exchange=ExchangeConfig(rfq_min_notional_usd=None, passive_fill_prob_per_min_at_touch=0.0))
    rig = LifecycleRig(sim)
    try:
        sim.exchange.faults.rfq_no_quotes = True                     # only the quotes this test posts
        rfq = RFQExecutor(rig.client, rig.ledger, rig.market, sim.clock, limit=rig.executor.limit)
        resolved = resolve_legs(iron_condor(0.1, dte=1), rig.market)
        legs = [LegTarget(leg.index, leg.symbol, int(leg.side), leg.qty) for leg in resolved]
        assert [leg.side for leg in legs] == [SELL, SELL, BUY, BUY]     # short condor: mixed sides
        job = rfq.start(SimpleNamespace(id="T000000029", seq=29), legs, Intent.OPEN,
                        RFQParams(timeout_seconds=30.0, min_improvement_pct=0.0))
        for _ in range(5):                                            # same instant: the books do not move
            job.advance(sim.clock.now())
            if job.request_id is not None:
                break
        assert job.request_id is not None
        assert job.baseline == pytest.approx(_screen_cost(sim, legs), abs=1e-9)
        assert job.baseline < 0                                       # a credit structure

        books = {leg.symbol: requests.get(f"{sim.base_url}/open/option/order/orderbook/v1/{leg.symbol}",
                                          timeout=5).json()["data"] for leg in legs}

        def maker_legs(better: float, mirror: int | None = None):
            out = []
            for leg in legs:
                book = books[leg.symbol]
                if leg.side == BUY:     # we buy, the maker sells: cheaper than the ask
                    side, price = "SELL", float(book["asks"][0]["price"]) * (1 - better)
                else:                   # we sell, the maker buys: more than the bid
                    side, price = "BUY", float(book["bids"][0]["price"]) * (1 + better)
                if leg.leg_index == mirror:
                    side = "BUY" if side == "SELL" else "SELL"
                out.append((leg.symbol, side, max(1.0, round(price)), leg.qty))
            return out

        mirrored = sim.exchange.inject_rfq_quote(job.request_id, maker_legs(0.30, mirror=2), maker_index=0)
        good = sim.exchange.inject_rfq_quote(job.request_id, maker_legs(0.15), maker_index=1)
        for _ in range(30):
            sim.clock.advance(2.0)
            if job.advance(sim.clock.now()) is not JobStatus.WORKING:
                break
        result = job.result()
        assert result.status is JobStatus.FILLED, result.reason
        assert job.accepted_quote_id == good
        assert [r.params["quoteId"] for r in sim.requests_for("rfq_accept")] == [good]
        assert mirrored != good
        for leg in legs:                                              # the trade holds exactly our sides
            expected = leg.qty if leg.side == BUY else -leg.qty
            assert sim.exchange.position_of(None, leg.symbol) == pytest.approx(expected)
    finally:
        rig.close()
