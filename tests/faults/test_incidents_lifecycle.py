"""Incidents of the trade lifecycle (BEHAVIOUR.md section 8, rows 19, 20, 33, 34, 36).

Settlement and exit reasons run on ``LifecycleRig`` (the product's services wired to a
simulator whose index follows a scripted path, so delivery prices are known in advance);
the callback rows run the whole daemon, because callbacks are delivered by its runners.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from clock import SimulatedClock
from option_selection import LegSpec, straddle, strangle
from simulator import SimulatorConfig, start_simulator
from strategy import StrategyConfig, max_hold_hours, profit_target, utc_datetime_exit
from trade_execution import ExecutionParams
from trade_lifecycle import TradeState

from tests.faults.test_incident_rig import (
    DaemonFiles,
    LifecycleRig,
    creates,
    daemon_env,
    exchange_cash,
    exchange_orders_of,
    run_daemon,
    utc,
)

BUY, SELL = 1, 2
HOUR = 3600.0
FAST = ExecutionParams(fill_timeout_seconds=6.0, max_requote_rounds=3, grace_seconds=2.0)


@pytest.fixture
def rig(sim):
    built = LifecycleRig(sim)
    yield built
    built.close()


def hold_index(sim, price: float, hours: float) -> None:
    """Pin the simulator's index at ``price`` for ``hours`` (then the strikes are listed around it)."""
    now_ms = sim.clock.now_ms()
    sim.market.set_scripted_path([(now_ms, price), (now_ms + int(hours * HOUR * 1000), price)])
    sim.clock.advance(60)


def test_incident_19_an_expired_in_the_money_option_settles_at_intrinsic_value(rig):
    """Long 0.1 call K 80,000, delivery 82,000: +200 USD minus fee, reason ``expiry``."""
    hold_index(rig.sim, 82_000.0, hours=4)
    trade = rig.open([LegSpec("C", BUY, 0.1, {"type": "strike", "value": 80_000.0}, {"dte": 0})],
                     execution_params=FAST)
    [leg] = trade.legs
    assert leg.strike == 80_000.0 and leg.open_filled == pytest.approx(0.1)
    expiry = leg.expiry_ms / 1000.0
    assert rig.drive(expiry - rig.clock.now() + 900, until=lambda: trade.state is TradeState.CLOSED,
                     idle_step=300.0, poll_interval=300.0), trade.state

    settlement = leg.settlement
    assert settlement.delivery_price == pytest.approx(82_000.0)
    assert settlement.intrinsic == pytest.approx(2_000.0) and settlement.qty == pytest.approx(0.1)
    assert settlement.cash == pytest.approx(200.0)                     # not zero: intrinsic x qty
    [record] = [r for r in rig.client.exercise_history()["list"] if r["symbol"] == leg.symbol]
    assert settlement.fee == pytest.approx(float(record["fees"]))
    assert trade.exit_reason == "expiry" and leg.net_qty == 0.0
    open_cash, open_fees = exchange_cash(exchange_orders_of(rig.sim, trade.seq))
    assert trade.realized_pnl == pytest.approx(open_cash - open_fees + 200.0 - settlement.fee)
    assert rig.sim.exchange.position_of(None, leg.symbol) == 0.0


def test_incident_20_no_order_inside_the_pre_expiry_halt_then_settling_then_closed(rig):
    """Exit decided 07:50 on legs expiring 08:00: no create on those symbols from 07:45; SETTLING at 08:00;
    then CLOSED, keeping the decided reason."""
    expiry = utc(2026, 3, 2, 8)
    decide_at = datetime(2026, 3, 2, 7, 50, tzinfo=timezone.utc)
    trade = rig.open(strangle(0.1, dte=0, side=1), execution_params=FAST,
                     exit_conditions=[utc_datetime_exit(decide_at)])
    assert {leg.expiry_ms for leg in trade.legs} == {int(expiry * 1000)}
    symbols = {leg.symbol for leg in trade.legs}

    rig.drive(utc(2026, 3, 2, 7, 40) - rig.clock.now(), idle_step=600.0, poll_interval=600.0)
    assert trade.state is TradeState.OPEN
    assert rig.drive(expiry - rig.clock.now() + 900, until=lambda: trade.state is TradeState.CLOSED,
                     idle_step=30.0, poll_interval=30.0), trade.state
    assert trade.exit_reason.startswith("utc_datetime_exit")          # decided before expiry, kept
    assert decide_at.timestamp() <= trade.exit_decided_at < decide_at.timestamp() + 60
    assert [r for r in creates(rig.sim, since=expiry - 900) if r.params["symbol"] in symbols] == []
    assert rig.trade_states(trade.id)[-4:] == ["OPEN", "PENDING_CLOSE", "SETTLING", "CLOSED"]
    settling_at = [e["ts"] for e in rig.store.events("trade")
                   if e["payload"]["trade_id"] == trade.id and e["payload"]["state"] == "SETTLING"]
    assert settling_at and expiry <= settling_at[0] < expiry + 60
    assert all(leg.settlement is not None and leg.net_qty == 0.0 for leg in trade.legs)


def test_incident_36_the_exit_reason_is_the_decision_or_expiry(rig):
    """A trade held 30 h and closed by ``profit_target`` keeps that reason; an undecided trade at expiry
    gets ``expiry``."""
    start_ms = rig.clock.now_ms()
    rig.sim.market.set_scripted_path([(start_ms, 90_000.0), (start_ms + int(29.9 * HOUR * 1000), 90_000.0),
                                      (start_ms + int(30 * HOUR * 1000), 96_000.0)])
    held = rig.open([LegSpec("C", BUY, 0.1, {"type": "closestStrike"}, {"dte": 2})], execution_params=FAST,
                    exit_conditions=[profit_target(200.0)])
    undecided = rig.open(straddle(0.1, dte=0), execution_params=FAST)

    assert rig.drive(31 * HOUR, until=lambda: held.state is TradeState.CLOSED and undecided.state is
                     TradeState.CLOSED, idle_step=900.0, poll_interval=900.0), (held.state, undecided.state)
    assert held.exit_reason == "profit_target(usd=200.0, mode=fair)"
    assert held.closed_at - held.opened_at >= 30 * HOUR - 900
    assert held.exit_detail["pnl"] >= 200.0
    assert undecided.exit_reason == "expiry"
    assert all(leg.settlement is not None for leg in undecided.legs)


# ---------------------------------------------------------------------------------------------
# Rows 33 and 34: the callbacks of one daemon round trip
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """The daemon opens one 0.1 long strangle, holds it 15 min and closes it, recording its callbacks."""
    tmp_path = tmp_path_factory.mktemp("round_trip")
    clock = SimulatedClock(start=utc(2026, 3, 3, 9, 0), speed=0)
    sim = start_simulator(SimulatorConfig(seed=7), clock=clock)
    opened: list[dict] = []
    closed: list[dict] = []

    def on_opened(trade, snapshot) -> None:
        opened.append({"id": trade.id, "seq": trade.seq, "state": trade.state.value,
                       "entry_premium": trade.entry_premium, "fees": trade.fees_paid,
                       "filled": [leg.open_filled for leg in trade.legs], "snapshot_ts": snapshot.timestamp})

    def on_closed(trade, snapshot) -> None:
        closed.append({"id": trade.id, "seq": trade.seq, "state": trade.state.value,
                       "realized_pnl": trade.realized_pnl, "fees": trade.fees_paid, "reason": trade.exit_reason})

    def strategy() -> StrategyConfig:
        return StrategyConfig(name="callbacks", legs=strangle(0.1, dte="next", side=1),
                              exit_conditions=[max_hold_hours(0.25)], execution_mode="limit",
                              max_concurrent_trades=1, max_trades_per_day=1, check_interval_seconds=1.0,
                              execution_params=FAST, on_trade_opened=on_opened, on_trade_closed=on_closed)

    try:
        code = run_daemon(["--strategy", "callbacks", "--run-for", "1800"], clock=clock,
                          env=daemon_env(tmp_path, sim), strategies=[strategy])
        yield {"code": code, "sim": sim, "opened": opened, "closed": closed, "files": DaemonFiles(tmp_path)}
    finally:
        sim.stop()


def test_incident_33_realized_pnl_comes_from_our_fills_and_fees(round_trip):
    """Round trip with known fills and fees: exact ``realized_pnl``, passed to ``on_trade_closed``."""
    assert round_trip["code"] == 0
    [closed] = round_trip["closed"]
    assert closed["state"] == "CLOSED" and closed["reason"] == "max_hold_hours(hours=0.25)"
    orders = exchange_orders_of(round_trip["sim"], closed["seq"])
    assert {int(o["tradeSide"]) for o in orders} == {BUY, SELL}
    cash, fees = exchange_cash(orders)                                 # the exchange's truth
    assert fees > 0
    assert closed["realized_pnl"] == pytest.approx(cash - fees, abs=1e-9)
    assert closed["fees"] == pytest.approx(fees, abs=1e-9)
    [stored] = [t for t in round_trip["files"].trades() if t["id"] == closed["id"]]
    assert stored["realized_pnl"] == pytest.approx(cash - fees, abs=1e-9)
    for leg in stored["legs"]:                                        # positions are gone; PnL is not
        assert round_trip["sim"].exchange.position_of(None, leg["symbol"]) == 0.0


def test_incident_34_on_trade_opened_fires_once_on_open_with_the_filled_entry_premium(round_trip):
    """``on_trade_opened`` fires once, on the OPEN transition, with ``entry_premium`` equal to the fills."""
    [opened] = round_trip["opened"]
    assert opened["state"] == "OPEN"
    assert opened["filled"] == [pytest.approx(0.1), pytest.approx(0.1)]
    opens = [o for o in exchange_orders_of(round_trip["sim"], opened["seq"])
             if int(o["tradeSide"]) == BUY]
    cash, fees = exchange_cash(opens)
    assert opened["entry_premium"] == pytest.approx(cash, abs=1e-9) and opened["entry_premium"] < 0
    assert opened["fees"] == pytest.approx(fees, abs=1e-9)
    [stored] = [t for t in round_trip["files"].trades() if t["id"] == opened["id"]]
    assert stored["opened_notified"] is True and stored["entry_premium"] == pytest.approx(cash, abs=1e-9)
