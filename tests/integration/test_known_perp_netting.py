"""KNOWN BUG, open (audit of 2026-12-07): a kill of two of our trades whose perp legs net to zero.

Trade 1 bought 0.01 BTCUSD, trade 2 sold 0.01 BTCUSD (two delta-hedged strategies with opposite
deltas, say). The account's one-way perp position is 0, so each trade's reduce-only kill order is
capped at nothing and settled NOT_PLACED: the kill never finishes. The right end is both trades
flat (nothing is left on the account). Kept here as a strict xfail so the fix turns it green and
CI then asks for the marker to go; the design options are in the closing note of 2026-12-07.
"""
from __future__ import annotations

import pytest

import conditions
from contracts import Side
from option_selection import perp
from order_ledger import Intent
from trade_lifecycle import EXIT_REASON_KILL, TradeState
from tests.integration.test_perp_legs_sim import PerpRig


@pytest.fixture
def rig(sim):
    built = PerpRig(sim)
    yield built
    built.close()


@pytest.mark.xfail(strict=True, reason="open: reduce-only closes cannot end perp legs that net to zero across "
                                       "two of our trades (closing note 2026-12-07)")
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
