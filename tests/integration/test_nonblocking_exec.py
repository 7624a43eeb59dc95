"""Execution never blocks other trades (BEHAVIOUR.md 8 row 37), and a lost cancel response is
resolved by polling, never by a second order on the leg.

Trade A waits on an RFQ that gets no quote; trade B's exit fires meanwhile: B's close orders go
out in the very tick of the decision while A's RFQ job is still working.
"""
from __future__ import annotations

from types import SimpleNamespace

import conditions
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from market_data import MarketData
from multileg_orderbook import SmartOrderbookExecutor
from option_selection import resolve_legs, strangle
from order_ledger import Intent, OrderLedger
from persistence import StateStore
from rfq import RFQExecutor, RFQParams
from simulator import FaultRule
from simulator.exchange import ExchangeConfig
from trade_execution import LimitFillManager, TradeExecutor
from trade_lifecycle import LifecycleManager, TradeState


def build(sim):
    client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                            Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    market = MarketData(client, sim.clock)
    store = StateStore(":memory:")
    ledger = OrderLedger(client, sim.clock, store=store)
    limit = LimitFillManager(ledger, market, sim.clock)
    smart = SmartOrderbookExecutor(ledger, market, sim.clock)
    rfq = RFQExecutor(client, ledger, market, sim.clock, limit=limit, smart=smart)
    executor = TradeExecutor(limit, smart=smart, rfq=rfq)
    manager = LifecycleManager(ledger=ledger, executor=executor, market=market, client=client, clock=sim.clock,
                               store=store)
    return client, market, ledger, manager


def poll(manager, clock):
    manager.tick(SimpleNamespace(timestamp=clock.now(), net_delta=0.0, positions=()))


def test_incident_37_an_rfq_waiting_for_quotes_never_delays_another_trades_exit(sim_factory):
    sim = sim_factory(exchange=ExchangeConfig(rfq_min_notional_usd=None))
    client, market, ledger, manager = build(sim)
    clock = sim.clock
    # Trade B: a limit strangle that opens now, with a one-hour exit.
    trade_b = manager.create("b", resolve_legs(strangle(0.1, side=1), market),
                             exit_conditions=[conditions.max_hold_hours(1)])
    for _ in range(30):
        if trade_b.state is TradeState.OPEN:
            break
        clock.advance(2.0)
        poll(manager, clock)
    assert trade_b.state is TradeState.OPEN
    clock.advance(3600 - 70)
    poll(manager, clock)
    # Trade A: an RFQ that will get no quote for its whole 120 s window.
    sim.exchange.faults.rfq_no_quotes = True
    trade_a = manager.create("a", resolve_legs(strangle(0.5, side=1), market), execution_mode="rfq",
                             rfq_params=RFQParams(timeout_seconds=120.0, open_fallback=None))
    assert trade_a.state is TradeState.OPENING
    decided_at = None
    for _ in range(60):
        clock.advance(2.0)
        poll(manager, clock)
        if trade_b.exit_reason is not None and decided_at is None:
            decided_at = int(round(trade_b.exit_decided_at * 1000))
            break
    assert decided_at is not None
    assert trade_a.state is TradeState.OPENING  # A's RFQ is still waiting
    closes = [r for r in sim.requests_for("create_order") if r.time_ms >= decided_at and r.http_status == 200]
    assert closes and closes[0].time_ms == decided_at  # B's close went out in the deciding tick
    client.close()


def test_a_lost_cancel_response_is_resolved_by_polling_without_a_second_order(sim_factory):
    sim = sim_factory(exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0))
    client, market, ledger, _manager = build(sim)
    clock = sim.clock
    [leg] = resolve_legs(strangle(0.1, side=1), market)[:1]
    book = market.order_book(leg.symbol, max_age=0.0)
    resting = max(book.best_bid - 20.0, 1.0)   # far from the touch: it rests
    order = ledger.place(trade_id="T000000001", trade_seq=1, leg_index=0, intent=Intent.OPEN, symbol=leg.symbol,
                         side=1, qty=0.1, price=resting, tick_size=market.instrument(leg.symbol).tick_size)
    sim.faults.add(FaultRule(endpoint="cancel_order", mode="lost_response", count=1))
    ledger.cancel(order)                       # executed by the exchange, answer lost
    assert not order.status.is_final
    for _ in range(3):
        clock.advance(1.0)
        ledger.poll(order)
    assert order.status.is_final and order.status.name == "CANCELED"
    assert len(sim.requests_for("cancel_order")) == 1   # never re-sent blindly
    assert len(sim.requests_for("create_order")) == 1
    client.close()
