"""Perpetual legs end to end against the simulator (docs/PERPETUALS.md): real HTTP, real signing,
the simulated clock.

A structure with an option leg and a perp leg opens, is valued, exits and closes flat on the
exchange; a reduce-only close never flips a position smaller than the trade believes; funding
across an 08:00 boundary lands in the trade's PnL; a BTC and an ETH structure side by side
never mix their perps.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import conditions
from account_manager import AccountManager
from alerts import AlertSink
from app import build_engines
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from contracts import Side
from market_data import MarketData
from option_selection import LegSpec, perp, resolve_legs, strangle
from order_ledger import Intent, OrderLedger, OrderStatus, parse_client_order_id
from persistence import StateStore
from simulator import FaultRule
from trade_execution import ExecutionParams
from trade_lifecycle import LifecycleManager, TradeState
from tests.integration.test_lifecycle_sim import Rig


class PerpRig(Rig):
    """Product services wired to one simulator with their perp parts; the options rig's tick
    driver (``drive``) and ``close``, with a poll that reads the real account snapshot."""

    def __init__(self, sim, store: StateStore | None = None) -> None:
        self.sim = sim
        self.clock = sim.clock
        self.client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                                     Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
        self.market = MarketData(self.client, sim.clock, perp_client=self.client)
        self.accounts = AccountManager(self.client, sim.clock, perp_client=self.client)
        self.store = store if store is not None else StateStore(":memory:")
        self.alerts = AlertSink(None, sim.clock)
        self.ledger = OrderLedger(self.client, sim.clock, store=self.store, perp_client=self.client)
        self.executor = build_engines(self.client, self.ledger, self.market, sim.clock)
        self.manager = LifecycleManager(ledger=self.ledger, executor=self.executor, market=self.market,
                                        client=self.client, clock=sim.clock, store=self.store, alerts=self.alerts,
                                        funding_client=self.client)
        self.ledger.attach_perp_books(self.manager)
        self.snapshot = None
        self.last_poll = None

    def poll(self) -> None:
        self.snapshot = self.accounts.snapshot()
        self.last_poll = self.clock.now()
        self.manager.tick(self.snapshot)

    def open(self, specs, strategy: str = "perp-strat", **kwargs):
        legs = resolve_legs(specs, self.market)
        trade = self.manager.create(strategy, legs, **kwargs)
        assert self.drive(180, until=lambda: trade.state is not TradeState.OPENING), trade.state
        assert trade.state is TradeState.OPEN, (trade.state, trade.failure_reason)
        return trade

    def position(self, symbol: str) -> float:
        return self.sim.exchange.position_of(None, symbol)


@pytest.fixture
def rig(sim):
    built = PerpRig(sim)
    yield built
    built.close()


def call_and_perp(qty: float = 0.1, perp_qty: float = 0.005, underlying: str = "BTC") -> list[LegSpec]:
    call = LegSpec(option_type="C", side=Side.SELL, qty=qty, strike_criteria={"type": "delta", "value": 0.3},
                   underlying=underlying)
    return [call] + perp(perp_qty, Side.BUY, underlying=underlying)


def test_an_option_and_a_perp_open_are_valued_exit_and_close_flat(rig):
    trade = rig.open(call_and_perp(), exit_conditions=[conditions.max_hold_hours(1)])
    call, hedge = trade.legs
    assert hedge.is_perpetual and hedge.symbol == "BTCUSD" and hedge.lot == 0.001
    assert hedge.open_filled == pytest.approx(0.005) and call.open_filled == pytest.approx(0.1)
    assert rig.position("BTCUSD") == pytest.approx(0.005)
    perp_orders = rig.ledger.orders(trade.id, leg_index=1)
    assert perp_orders and all(parse_client_order_id(o.client_order_id).leg_index == 1 for o in perp_orders)
    assert all(not o.reduce_only for o in perp_orders)

    rig.drive(30)
    value = trade.valuation("mark")
    perp_value = next(leg for leg in value.legs if leg.symbol == "BTCUSD")
    assert perp_value.mark == pytest.approx(rig.sim.exchange.perp_mark("BTCUSD"), rel=1e-3)
    assert trade.valuation("executable").value < trade.valuation("mark").value   # exit costs
    assert rig.snapshot.delta_of("BTC") == pytest.approx(
        sum(p.delta for p in rig.snapshot.positions))

    assert rig.drive(3700, until=lambda: trade.state is TradeState.CLOSED), (trade.state, trade.failure_reason)
    assert rig.position("BTCUSD") == 0.0 and rig.position(call.symbol) == 0.0
    closes = [o for o in rig.ledger.orders(trade.id, leg_index=1) if o.intent.family() is Intent.CLOSE]
    assert closes and all(o.reduce_only for o in closes)
    assert hedge.close_filled == pytest.approx(0.005)
    expected = (hedge.close_vwap - hedge.open_vwap) * 0.005 - hedge.fees
    assert hedge.cash - hedge.fees == pytest.approx(expected, abs=1e-6)
    assert trade.realized_pnl == pytest.approx(trade.cash_flows() - trade.total_fees())


def test_a_reduce_only_close_never_flips_a_smaller_position(rig):
    trade = rig.open(perp(0.01, Side.BUY), exit_conditions=[conditions.max_hold_hours(1)])
    assert rig.position("BTCUSD") == pytest.approx(0.01)
    # Somebody else sold part of it: the account holds less than the trade believes.
    rig.sim.exchange.set_position(None, "BTCUSD", 0.004, trade.legs[0].open_vwap)
    rig.manager.force_close(trade.id)
    rig.drive(300, until=lambda: rig.position("BTCUSD") == 0.0)
    assert rig.position("BTCUSD") == 0.0           # closed what existed, never went short
    rig.drive(120)
    assert rig.position("BTCUSD") == 0.0
    sent = [o for o in rig.ledger.orders(trade.id) if o.intent.family() is Intent.CLOSE]
    assert sent and all(o.reduce_only and o.qty <= 0.004 + 1e-9 for o in sent if o.order_id is not None)


def test_funding_across_an_0800_boundary_lands_in_the_trade_pnl(rig):
    trade = rig.open(perp(0.01, Side.SELL), exit_conditions=[conditions.max_hold_hours(20)])
    now_ms = int(rig.clock.now() * 1000)
    period = 8 * 3600 * 1000
    instant = (now_ms // period + 1) * period
    rig.drive((instant - now_ms) / 1000.0 + 120, step=60.0, poll_interval=60.0)
    paid = [r for r in rig.sim.exchange.funding_history() if r["symbol"] == "BTCUSD"]
    assert len(paid) == 1
    fee = float(paid[0]["fundFee"])
    leg = trade.legs[0]
    assert fee != 0 and leg.funding == pytest.approx(fee, abs=1e-8)
    assert trade.metadata["funding"] == {f"BTCUSD@{instant}": pytest.approx(fee, abs=1e-8)}
    before = trade.realized()
    rig.poll()                                   # read again: never booked twice
    assert leg.funding == pytest.approx(fee, abs=1e-8) and trade.realized() == pytest.approx(before)
    stored = rig.store.load_trade(trade.id)
    assert stored["legs"][0]["funding"] == pytest.approx(fee, abs=1e-8)
    events = [e for e in rig.store.events("trade") if e["payload"].get("event") == "funding"]
    assert events and events[-1]["payload"]["funding"][0]["amount"] == pytest.approx(fee, abs=1e-8)
    rig.manager.force_close(trade.id)
    assert rig.drive(300, until=lambda: trade.state is TradeState.CLOSED)
    expected = (leg.open_vwap - leg.close_vwap) * 0.01 - leg.fees + fee
    assert trade.realized_pnl == pytest.approx(expected, abs=1e-6)


def test_a_restart_with_a_perp_order_in_flight_resolves_it_by_client_order_id(sim):
    first = PerpRig(sim)
    sim.faults.add(FaultRule(endpoint="futures_create_order", mode="lost_response", count=1))
    sim.faults.add(FaultRule(endpoint="futures_query_order", mode="http_5xx", count=50))   # no answer before the crash
    legs = resolve_legs(perp(0.02, Side.BUY), first.market)
    trade = first.manager.create("perp-strat", legs, exit_conditions=[conditions.max_hold_hours(1)])
    first.drive(4, until=lambda: bool(first.ledger.orders(trade.id)))
    (order,) = first.ledger.orders(trade.id)
    assert order.status is OrderStatus.UNKNOWN and order.order_id is None
    first.client.close()   # the daemon dies here; its store survives
    sim.faults.clear()

    second = PerpRig(sim, store=first.store)
    second.ledger.restore(second.store.load_orders())
    second.manager.recover()
    second.manager.attach_strategy("perp-strat", exit_conditions=[conditions.max_hold_hours(1)])
    resumed = second.manager.get(trade.id)
    assert resumed is not None
    assert second.drive(180, until=lambda: resumed.state is TradeState.OPEN), resumed.state
    creates = [r for r in sim.requests_for("futures_create_order")
               if int(r.params["clientOrderId"]) == order.client_order_id]
    assert len(creates) == 1                                  # never sent twice
    adopted = second.ledger.get(order.client_order_id)
    assert adopted is not None and adopted.order_id is not None and adopted.status is not OrderStatus.UNKNOWN
    assert second.position("BTCUSD") == pytest.approx(0.02)   # no duplicate, no loss
    assert resumed.legs[0].net_qty == pytest.approx(0.02)
    second.close()


def test_the_kill_switch_leaves_options_and_perps_flat(rig):
    trade = rig.open(call_and_perp(perp_qty=0.01), exit_conditions=[conditions.max_hold_hours(24)])
    rig.sim.exchange.set_position(None, "ETHUSD", -0.5, 2000.0)     # not ours: only --all-positions takes it
    rig.poll()
    assert rig.manager.kill_all(include_external=True)
    assert rig.drive(600, until=lambda: not rig.manager.active_trades()), \
        [(t.id, t.state, t.legs) for t in rig.manager.active_trades()]
    assert rig.position("BTCUSD") == 0.0 and rig.position(trade.legs[0].symbol) == 0.0
    assert rig.position("ETHUSD") == 0.0
    kills = [o for t in rig.manager.trades() for o in rig.ledger.orders(t.id) if o.intent.family() is Intent.KILL]
    assert kills and all(o.reduce_only for o in kills)


def test_a_btc_and_an_eth_structure_with_perps_never_mix(rig):
    btc = rig.open(call_and_perp(perp_qty=0.003), strategy="btc", exit_conditions=[conditions.max_hold_hours(1)])
    eth = rig.open(strangle(0.2, underlying="ETH") + perp(0.05, Side.SELL, underlying="ETH"), strategy="eth",
                   exit_conditions=[conditions.max_hold_hours(2)])
    assert [leg.symbol for leg in btc.legs if leg.is_perpetual] == ["BTCUSD"]
    assert [leg.symbol for leg in eth.legs if leg.is_perpetual] == ["ETHUSD"]
    assert rig.position("BTCUSD") == pytest.approx(0.003) and rig.position("ETHUSD") == pytest.approx(-0.05)
    rig.poll()
    by_underlying = rig.snapshot.greeks_by_underlying()
    assert set(by_underlying) == {"BTC", "ETH"}
    assert rig.snapshot.delta_of("ETH") == pytest.approx(
        sum(p.delta for p in rig.snapshot.positions if p.symbol.startswith("ETH")))
    assert rig.drive(3700, until=lambda: btc.state is TradeState.CLOSED)
    assert eth.state is TradeState.OPEN and rig.position("ETHUSD") == pytest.approx(-0.05)
    assert rig.position("BTCUSD") == 0.0
    assert all(o.symbol != "ETHUSD" for o in rig.ledger.orders(btc.id))
    assert all(o.symbol != "BTCUSD" for o in rig.ledger.orders(eth.id))
