"""An outside round trip on one of our symbols is no evidence that our position was closed
(docs/RECOVERY.md S2, S3, S6; close_evidence.py).

Somebody else on the account (orders without our clientOrderIds) buys 0.01 of our call and
sells it again: the position never changed. Later a positions answer reads short of our trades
(the suspect read of S6: a maintenance or failover answer). The evidence used to count only
the outside fills on the closing side, so the sell that only undid their own buy "explained"
0.01 of the shortfall: an external close was booked (S3, not reversible for an option), and
when the positions showed again the 0.01 still held was "somebody else's" (S2), left on the
account after our trade closed. The evidence is now the NET outside flow of the window.

Driven through the real daemon on the simulator (``restart_rig``) on a speed-0 clock: every
wait moves simulated time only.
"""
from __future__ import annotations

import pytest

from tests.integration.restart_rig import BUY, SELL, strangle_config
from tests.integration.test_restart_reconciliation import (  # noqa: F401  (fixtures)
    first_life_crashed_open,
    make_rig,
    rig,
)
from trade_lifecycle import TradeState


def _held(rig, symbols):
    return {symbol: rig.outside.position(symbol) for symbol in symbols}


def _close_and_check_flat(rig, life, trade_id, symbols):
    """Close the trade (an operator's force close) and say what the account holds afterwards."""
    assert life.lifecycle.force_close(trade_id, "manual")
    life.run(300, until=lambda: life.lifecycle.get(trade_id).state is TradeState.CLOSED)
    assert life.lifecycle.get(trade_id).state is TradeState.CLOSED
    return _held(rig, symbols)


def test_an_outside_round_trip_is_not_evidence_that_our_position_was_closed_at_a_restart(rig):
    trade = first_life_crashed_open(rig, qty=0.02)
    symbols = [leg.symbol for leg in trade.legs]
    held = _held(rig, symbols)
    assert held == {symbols[0]: pytest.approx(0.02), symbols[1]: pytest.approx(0.02)}

    # Somebody else on the account scalps the call: buys 0.01, sells 0.01. Net: nothing changed.
    rig.outside.crossing(symbols[0], BUY, 0.01)
    rig.clock.advance(30)
    rig.outside.crossing(symbols[0], SELL, 0.01)
    assert rig.outside.position(symbols[0]) == pytest.approx(0.02)

    # The restart meets a positions answer that reads flat (maintenance / failover: issue 9).
    for symbol in symbols:
        rig.outside.flatten(symbol)
    rig.clock.advance(120)
    again = rig.lives.start([strangle_config(qty=0.02, cooldown_seconds=3600.0)])
    again.wake()

    live = again.lifecycle.get(trade.id)
    assert [leg.external_qty for leg in live.legs] == [0.0, 0.0]
    assert "external_close" not in [alert.kind for alert in again.alerts()]
    assert again.reconciler.last_report.suspect == sorted(symbols)       # S6: a suspect read

    # The positions show again, exactly as they were: nothing of ours was ever closed.
    for symbol, qty in held.items():
        rig.sim.exchange.set_position(None, symbol, qty, rig.outside.mark(symbol))
    again.run(200)

    live = again.lifecycle.get(trade.id)
    assert [leg.external_qty for leg in live.legs] == [0.0, 0.0], (
        "an outside buy+sell round trip was booked as an external close of our leg")
    assert [leg.net_qty for leg in live.legs] == [pytest.approx(0.02), pytest.approx(0.02)]
    assert live.state is TradeState.OPEN
    kinds = [alert.kind for alert in again.alerts()]
    assert "external_close" not in kinds and "positions_reappeared" in kinds

    left = _close_and_check_flat(rig, again, trade.id, symbols)
    assert left == {symbols[0]: pytest.approx(0.0), symbols[1]: pytest.approx(0.0)}, (
        f"the trade is CLOSED but the account still holds {left}: a position of ours that no trade manages")


def test_a_real_outside_close_after_an_outside_round_trip_is_still_booked_at_a_restart(rig):
    """The operator closes 0.01 of our call by hand on the exchange after somebody's round trip:
    the net outside flow is that 0.01, booked as before (S3), and nothing is left behind."""
    trade = first_life_crashed_open(rig, qty=0.02)
    symbols = [leg.symbol for leg in trade.legs]

    rig.outside.crossing(symbols[0], BUY, 0.01)          # somebody's round trip
    rig.clock.advance(30)
    rig.outside.crossing(symbols[0], SELL, 0.01)
    rig.clock.advance(30)
    rig.outside.crossing(symbols[0], SELL, 0.01)         # the operator's close of ours, by hand
    assert rig.outside.position(symbols[0]) == pytest.approx(0.01)
    rig.clock.advance(120)

    again = rig.lives.start([strangle_config(qty=0.02, cooldown_seconds=3600.0)])
    again.wake()
    again.run(120)

    live = again.lifecycle.get(trade.id)
    assert [leg.external_qty for leg in live.legs] == [pytest.approx(0.01), 0.0]
    assert [leg.net_qty for leg in live.legs] == [pytest.approx(0.01), pytest.approx(0.02)]
    assert "external_close" in [alert.kind for alert in again.alerts("external_close", "CRITICAL")]
    assert again.reconciler.last_report.suspect == []

    left = _close_and_check_flat(rig, again, trade.id, symbols)
    assert left == {symbols[0]: pytest.approx(0.0), symbols[1]: pytest.approx(0.0)}


def test_an_outside_round_trip_while_running_is_not_evidence_on_a_flat_read(rig):
    """The same without a restart: the running daemon has read the positions before the round
    trip; two agreeing flat reads afterwards are a suspect read, never a close."""
    life = rig.lives.start([strangle_config(qty=0.02, cooldown_seconds=3600.0)])
    trade = life.run_until_open()
    symbols = [leg.symbol for leg in trade.legs]
    life.run(180)                                        # a few periodic reconciliations read it right
    held = _held(rig, symbols)

    rig.outside.crossing(symbols[0], BUY, 0.01)
    rig.clock.advance(20)
    rig.outside.crossing(symbols[0], SELL, 0.01)
    for symbol in symbols:
        rig.outside.flatten(symbol)
    life.run(200)                                        # several agreeing flat reads

    live = life.lifecycle.get(trade.id)
    assert [leg.external_qty for leg in live.legs] == [0.0, 0.0]
    assert "suspect_positions_read" in [alert.kind for alert in life.alerts()]

    for symbol, qty in held.items():
        rig.sim.exchange.set_position(None, symbol, qty, rig.outside.mark(symbol))
    life.run(200)
    live = life.lifecycle.get(trade.id)
    assert [leg.external_qty for leg in live.legs] == [0.0, 0.0]
    assert "external_close" not in [alert.kind for alert in life.alerts()]

    left = _close_and_check_flat(rig, life, trade.id, symbols)
    assert left == {symbols[0]: pytest.approx(0.0), symbols[1]: pytest.approx(0.0)}
