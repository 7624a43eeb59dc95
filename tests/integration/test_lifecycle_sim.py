"""The trade lifecycle against the simulator: real HTTP, real signing, simulated clock.

A strangle goes OPENING -> OPEN -> (exit) -> CLOSING -> CLOSED with PnL from our own fills
(BEHAVIOUR.md 8 rows 33-35); a close leg without bids never makes the other leg sell twice
(row 4); a trade held past its 08:00 expiry settles at the simulator's delivery price (rows
19, 20, 36).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import conditions
from alerts import AlertSink
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from market_data import MarketData
from option_selection import resolve_legs, straddle, strangle
from order_ledger import OrderLedger, parse_client_order_id
from persistence import StateStore
from app import build_engines
from trade_execution import ExecutionParams
from trade_lifecycle import LifecycleManager, TradeState

FAST_CLOSE = ExecutionParams(fill_timeout_seconds=6.0, max_requote_rounds=2, grace_seconds=2.0)


class Rig:
    """Product services wired to one simulator, plus a tick driver like PositionMonitor's loop."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self.clock = sim.clock
        self.client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                                     Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
        self.market = MarketData(self.client, sim.clock)
        self.store = StateStore(":memory:")
        self.alerts = AlertSink(None, sim.clock)
        self.ledger = OrderLedger(self.client, sim.clock, store=self.store)
        self.executor = build_engines(self.client, self.ledger, self.market, sim.clock)
        self.manager = LifecycleManager(ledger=self.ledger, executor=self.executor, market=self.market,
                                        client=self.client, clock=sim.clock, store=self.store, alerts=self.alerts)
        self.snapshot = None
        self.last_poll = None
        self.opened: list = []
        self.closed: list = []

    def close(self) -> None:
        self.client.close()
        self.store.close()

    def poll(self) -> None:
        """A poll tick: a new snapshot object (the lifecycle evaluates exits on it)."""
        self.snapshot = SimpleNamespace(timestamp=self.clock.now(), net_delta=0.0, positions=())
        self.last_poll = self.clock.now()
        self.manager.tick(self.snapshot)

    def drive(self, seconds: float, until=None, step: float = 2.0, poll_interval: float = 10.0) -> bool:
        """Wake every ``step`` s; poll every ``poll_interval`` s; stop early when ``until()`` holds."""
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            self.clock.advance(step)
            if self.last_poll is None or self.clock.now() - self.last_poll >= poll_interval:
                self.poll()
            else:
                self.manager.tick(self.snapshot)
            if until is not None and until():
                return True
        return until() if until is not None else True

    def create(self, specs, **kwargs):
        legs = resolve_legs(specs, self.market)
        return self.manager.create("sim-strat", legs, on_opened=self.opened.append, on_closed=self.closed.append,
                                   **kwargs)

    def open(self, specs, **kwargs):
        trade = self.create(specs, **kwargs)
        assert self.drive(120, until=lambda: trade.state is not TradeState.OPENING), trade.state
        assert trade.state is TradeState.OPEN, (trade.state, trade.failure_reason)
        return trade

    def creates(self, since_ms: int = 0) -> list:
        return [r for r in self.sim.requests_for("create_order") if r.time_ms >= since_ms and r.http_status == 200]


@pytest.fixture
def rig(sim):
    built = Rig(sim)
    yield built
    built.close()


def ledger_cash(rig: Rig, trade) -> tuple[float, float]:
    """Cash flows and fees of every ledger order of the trade, computed independently."""
    cash = fees = 0.0
    for order in rig.ledger.orders(trade.id):
        signed = order.avg_price * order.filled_qty
        cash += signed if order.side == 2 else -signed
        fees += order.fee
    return cash, fees


def test_incident_35_close_starts_in_the_deciding_tick_of_a_max_hold_exit(rig):
    trade = rig.open(strangle(0.1), exit_conditions=[conditions.max_hold_hours(1)])
    assert len(trade.legs) == 2 and rig.opened == [trade]
    open_cash, open_fees = ledger_cash(rig, trade)
    assert trade.entry_premium == pytest.approx(open_cash) and trade.entry_premium > 0  # sold: credit
    assert trade.fees_paid == pytest.approx(open_fees) and open_fees > 0
    assert all(leg.open_filled == pytest.approx(0.1) for leg in trade.legs)
    assert rig.store.load_trade(trade.id)["state"] == "OPEN"
    rig.clock.advance(10)
    rig.sim.reset_stats()
    rig.poll()  # quotes of both legs refreshed: one chain call for their one expiry, no detail call
    assert rig.sim.counts["option_chain"] == 1 and rig.sim.counts["option_detail"] == 0
    assert all(leg.quote.as_of == rig.clock.now() for leg in trade.legs)

    rig.drive(3600 - 60, until=lambda: trade.state is not TradeState.OPEN)
    assert trade.state is TradeState.OPEN  # not yet: opened < 1 h ago
    assert rig.drive(120, until=lambda: trade.exit_reason is not None)
    decided_ms = int(round(trade.exit_decided_at * 1000))
    assert trade.exit_reason == "max_hold_hours(hours=1.0)"
    close_creates = [r for r in rig.creates(decided_ms)]
    assert close_creates and close_creates[0].time_ms == decided_ms  # row 35: same tick as the decision
    for record in close_creates:
        assert record.params.get("reduceOnly") in (1, "1", True)
        assert parse_client_order_id(int(record.params["clientOrderId"])).intent in (3, 4)

    assert rig.drive(300, until=lambda: trade.state is TradeState.CLOSED), trade.state
    cash, fees = ledger_cash(rig, trade)
    assert trade.realized_pnl == pytest.approx(cash - fees)  # row 33: our fills minus our fees
    assert trade.fees_paid == pytest.approx(fees)
    assert rig.opened == [trade] and rig.closed == [trade]  # row 34: once each
    assert rig.store.load_trade(trade.id)["state"] == "CLOSED"
    assert not rig.ledger.live_orders(trade.id)
    positions = rig.client.positions()
    assert not [p for p in positions if p.get("symbol") in {leg.symbol for leg in trade.legs}]


def test_close_leg_without_bids_never_sells_the_other_leg_twice(rig):
    trade = rig.open(strangle(0.1, side=1), execution_params=FAST_CLOSE)  # long: the close sells
    call, put = trade.legs
    rig.sim.market.set_empty_side(put.symbol, "bid")
    assert rig.manager.force_close(trade.id, "manual")
    rig.drive(240)
    assert call.net_qty == 0.0 and put.net_qty == pytest.approx(0.1)
    assert trade.state in (TradeState.CLOSING, TradeState.PENDING_CLOSE) and trade.close_rounds >= 2
    sold_call = sum(o.filled_qty for o in rig.ledger.orders(trade.id, leg_index=call.index) if o.side == 2)
    assert sold_call == pytest.approx(0.1)
    held = {p["symbol"]: p for p in rig.client.positions()}
    assert call.symbol not in held  # never a naked short call
    assert all(r.params.get("reduceOnly") in (1, "1", True) for r in rig.creates()
               if parse_client_order_id(int(r.params["clientOrderId"])).intent >= 3)

    rig.sim.market.set_empty_side(put.symbol, None)
    assert rig.drive(300, until=lambda: trade.state is TradeState.CLOSED), trade.state
    assert trade.exit_reason == "manual" and rig.closed == [trade]
    cash, fees = ledger_cash(rig, trade)
    assert trade.realized_pnl == pytest.approx(cash - fees)


def expiry_of(trade) -> float:
    return trade.legs[0].expiry_ms / 1000.0


def test_trade_held_past_expiry_settles_at_the_delivery_price(rig):
    trade = rig.open(straddle(0.1, dte=0))  # long call + put, same strike: one ends in the money
    assert len({leg.expiry_ms for leg in trade.legs}) == 1
    expiry = expiry_of(trade)
    assert rig.drive(expiry - rig.clock.now() + 60, step=30.0, poll_interval=30.0,
                     until=lambda: trade.state is TradeState.CLOSED), trade.state
    assert trade.exit_reason == "expiry"  # row 36: an undecided trade at expiry
    prices = rig.client.delivery_prices()["list"]
    delivery = next(float(p["delivery_price"]) for p in prices if int(p["date"]) == trade.legs[0].expiry_ms)
    records = {r["symbol"]: r for r in rig.client.exercise_history()["list"]}
    for leg in trade.legs:
        intrinsic = max(0.0, delivery - leg.strike) if leg.option_type == "C" else max(0.0, leg.strike - delivery)
        assert leg.settlement.delivery_price == pytest.approx(delivery)
        assert leg.settlement.cash == pytest.approx(intrinsic * 0.1, abs=0.01)  # long: + intrinsic x qty
        # the exchange's exact record wins over the cent-rounded delivery price (section 4.5)
        assert leg.settlement.cash == pytest.approx(float(records[leg.symbol]["settlementCashFlow"]))
        assert leg.settlement.fee == pytest.approx(float(records[leg.symbol]["fees"]))
        assert leg.net_qty == 0.0
    assert sum(leg.settlement.cash for leg in trade.legs) > 0  # incident 19: ITM is not settled at zero
    cash, fees = ledger_cash(rig, trade)
    settled = sum(leg.settlement.cash - leg.settlement.fee for leg in trade.legs)
    assert trade.realized_pnl == pytest.approx(cash - fees + settled)
    assert rig.closed == [trade] and trade.state is TradeState.CLOSED


def test_exit_decided_in_the_halt_sends_nothing_and_settles(rig):
    trade = rig.open(strangle(0.1, dte=0))
    expiry = expiry_of(trade)
    rig.drive(expiry - 600 - rig.clock.now(), step=60.0, poll_interval=60.0)  # until 07:50
    since_ms = int((expiry - 900) * 1000)
    assert rig.manager.force_close(trade.id, "manual")
    assert trade.state is TradeState.PENDING_CLOSE and trade.exit_reason == "manual"
    assert rig.drive(900, step=10.0, until=lambda: trade.state is TradeState.CLOSED), trade.state
    symbols = {leg.symbol for leg in trade.legs}
    assert not [r for r in rig.creates(since_ms) if r.params.get("symbol") in symbols]  # row 20
    assert trade.exit_reason == "manual" and all(leg.settlement is not None for leg in trade.legs)


def restarted(rig: Rig) -> Rig:
    """A fresh ledger and manager on the same store, client and simulator: a daemon restart."""
    again = Rig.__new__(Rig)
    again.sim, again.clock, again.client, again.market = rig.sim, rig.clock, rig.client, rig.market
    again.store, again.alerts = rig.store, rig.alerts
    again.ledger = OrderLedger(rig.client, rig.clock, store=rig.store)
    again.executor = build_engines(again.client, again.ledger, again.market, rig.clock)
    again.manager = LifecycleManager(ledger=again.ledger, executor=again.executor, market=again.market,
                                     client=again.client, clock=rig.clock, store=rig.store, alerts=rig.alerts)
    again.snapshot, again.last_poll, again.opened, again.closed = None, None, [], []
    return again


def test_an_open_interrupted_by_a_restart_is_decided_on_fills_then_managed_by_its_exit(rig):
    trade = rig.create(strangle(0.1))  # the open job placed its orders; the "process dies" here
    assert rig.store.load_trade(trade.id)["state"] == "OPENING"
    sent = len(rig.creates())
    assert sent == 2

    after = restarted(rig)
    after.manager.attach_strategy("sim-strat", exit_conditions=[conditions.max_hold_hours(1)],
                                  on_opened=after.opened.append, on_closed=after.closed.append)
    report = after.manager.recover()
    assert report["restored"] == 1 and after.manager.unmanaged_trades() == []
    reloaded = after.manager.get(trade.id)
    assert after.drive(60, until=lambda: reloaded.state is TradeState.OPEN), reloaded.state
    assert len(after.creates()) == sent  # nothing re-sent: the open was decided on the fills
    assert all(leg.open_filled == pytest.approx(0.1) for leg in reloaded.legs)
    assert after.opened == [reloaded]  # the callback was not delivered before the restart

    assert after.drive(3700, until=lambda: reloaded.state is TradeState.CLOSED), reloaded.state
    assert reloaded.exit_reason == "max_hold_hours(hours=1.0)"


def test_a_trade_that_never_sent_an_order_is_abandoned_at_restart(rig):
    trade = rig.create(strangle(0.1))
    # A second trade whose process died after recording it, before its first order.
    record = rig.store.load_trade(trade.id)
    record.update(id="T000000099", seq=99, state="PENDING_OPEN")
    rig.store.save_trade(record)

    after = restarted(rig)
    report = after.manager.recover()
    assert report["restored"] == 2 and report["abandoned"] == ["T000000099"]
    abandoned = after.manager.get("T000000099")
    assert abandoned.state is TradeState.FAILED and abandoned.failure_reason == "abandoned at restart"
    assert after.manager.get(trade.id).state is TradeState.OPENING  # it has orders: decided on its fills
