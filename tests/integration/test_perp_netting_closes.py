"""Perp legs of two of our trades that the one-way account nets (docs/PERPETUALS.md, "Closes
across trades that net"), on the simulator over loopback.

Trade 1 bought 0.01 BTCUSD, trade 2 sold 0.01 BTCUSD (two delta-hedged strategies with opposite
deltas, say): the account shows 0. A reduce-only close of either is capped at nothing, so
before the fix each kill order was settled NOT_PLACED and the kill never finished (found by
the kill audit of 2026-12-07). Where our books explain the account exactly, such a close
now goes out whole and without reduce-only, and the account moves by that leg alone.
"""
from __future__ import annotations

import pytest

import conditions
from contracts import Side
from option_selection import perp
from order_ledger import Intent
from trade_lifecycle import EXIT_REASON_KILL, EXIT_REASON_MANUAL, TradeState
from tests.integration.test_perp_legs_sim import PerpRig


@pytest.fixture
def rig(sim):
    built = PerpRig(sim)
    yield built
    built.close()


def test_kill_finishes_when_our_trades_perp_legs_net_to_zero(rig):
    long_trade = rig.open(perp(0.01, Side.BUY), strategy="alpha", exit_conditions=[conditions.max_hold_hours(24)])
    short_trade = rig.open(perp(0.01, Side.SELL), strategy="beta", exit_conditions=[conditions.max_hold_hours(24)])
    assert rig.position("BTCUSD") == pytest.approx(0.0)      # one-way account: the two legs net out
    assert long_trade.legs[0].net_qty == pytest.approx(0.01)
    assert short_trade.legs[0].net_qty == pytest.approx(0.01)

    killed = rig.manager.kill_all()
    assert set(killed) == {long_trade.id, short_trade.id}
    done = rig.drive(1800, until=lambda: not long_trade.is_active and not short_trade.is_active)

    kill_orders = [o for t in (long_trade, short_trade) for o in rig.ledger.orders(t.id)
                   if o.intent.family() is Intent.KILL]
    assert rig.position("BTCUSD") == pytest.approx(0.0)
    assert done, (f"kill never finishes: {long_trade.state.value}/{short_trade.state.value} after 30 min, "
                  f"account flat, {len(kill_orders)} kill orders recorded "
                  f"({sum(1 for o in kill_orders if o.order_id is None)} never sent)")

    assert long_trade.state is short_trade.state is TradeState.CLOSED
    assert {t.exit_reason for t in (long_trade, short_trade)} == {EXIT_REASON_KILL}
    assert long_trade.legs[0].net_qty == pytest.approx(0.0) and short_trade.legs[0].net_qty == pytest.approx(0.0)


def test_closing_one_of_two_netted_trades_leaves_the_account_with_the_other_trades_leg(rig):
    long_trade = rig.open(perp(0.02, Side.BUY), strategy="alpha", exit_conditions=[conditions.max_hold_hours(24)])
    short_trade = rig.open(perp(0.01, Side.SELL), strategy="beta", exit_conditions=[conditions.max_hold_hours(24)])
    assert rig.position("BTCUSD") == pytest.approx(0.01)

    assert rig.manager.force_close(long_trade.id, EXIT_REASON_MANUAL)
    assert rig.drive(1800, until=lambda: not long_trade.is_active)

    assert long_trade.state is TradeState.CLOSED and long_trade.legs[0].net_qty == pytest.approx(0.0)
    assert short_trade.state is TradeState.OPEN and short_trade.legs[0].net_qty == pytest.approx(0.01)
    assert rig.position("BTCUSD") == pytest.approx(-0.01)      # exactly what the open trade holds
    closes = [o for o in rig.ledger.orders(long_trade.id) if o.intent.family() is Intent.CLOSE]
    assert [(o.qty, o.reduce_only) for o in closes if o.filled_qty > 0] == [(pytest.approx(0.02), False)]

    rig.drive(120, until=lambda: False)                        # the remaining trade still lives
    assert short_trade.is_active and rig.position("BTCUSD") == pytest.approx(-0.01)
