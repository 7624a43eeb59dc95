"""Somebody else's position on one of our symbols, seen before a restart, stays theirs after it
(docs/RECOVERY.md S2, S3, S6; position_reconciliation.py, persistence.py).

The daemon reads 0.01 of our call beyond our trade (S2: somebody else's). It dies; while it is
down they sell their 0.01; the restart meets a positions answer that reads flat (a maintenance
answer, issue 9). The window's net outside flow is that sell: the memory of what was beyond
ours lived in the old process only, so the restart booked 0.01 of OUR leg as closed outside (not
reversible for an option), and when the positions showed again the 0.01 we still hold was
"somebody else's", left on the account after our trade closed. The memory is now kept in the
state store and restored before the first reconciliation: nothing is booked, a suspect read.

Driven through the real daemon on the simulator (``restart_rig``: ``app.build_context`` wires
the store) on a speed-0 clock: every wait moves simulated time only.
"""
from __future__ import annotations

import pytest

from tests.integration.restart_rig import SELL, strangle_config
from tests.integration.test_restart_reconciliation import (  # noqa: F401  (fixtures)
    make_rig,
    rig,
)
from trade_lifecycle import TradeState


def test_an_outside_position_seen_before_a_restart_and_sold_while_down_is_not_a_close_of_ours(rig):
    config = strangle_config(qty=0.02, cooldown_seconds=3600.0)
    first = rig.lives.start([config])
    trade = first.run_until_open()
    symbols = [leg.symbol for leg in trade.legs]
    call = symbols[0]

    # Somebody else's 0.01 of our call, with no fill of it in our window (bought before our
    # trade opened, or moved in): the running daemon reads it beyond ours (S2) and remembers.
    rig.sim.exchange.set_position(None, call, 0.03, rig.outside.mark(call))
    first.run(180)
    assert first.reconciler.positions.known_positions()[call][1] == pytest.approx(0.01)
    first.crash()

    rig.outside.crossing(call, SELL, 0.01)               # they sell theirs while the daemon is down
    assert rig.outside.position(call) == pytest.approx(0.02)
    held = {symbol: rig.outside.position(symbol) for symbol in symbols}
    for symbol in symbols:                               # the restart reads flat (maintenance)
        rig.outside.flatten(symbol)
    rig.clock.advance(120)

    again = rig.lives.start([config])
    again.wake()

    live = again.lifecycle.get(trade.id)
    assert [leg.external_qty for leg in live.legs] == [0.0, 0.0], (
        "somebody else's sale of their own position was booked as an outside close of our leg")
    assert "external_close" not in [alert.kind for alert in again.alerts()]
    assert again.reconciler.last_report.suspect == sorted(symbols)        # S6: a suspect read

    for symbol, qty in held.items():                     # the positions show again
        rig.sim.exchange.set_position(None, symbol, qty, rig.outside.mark(symbol))
    again.run(200)
    live = again.lifecycle.get(trade.id)
    assert [leg.external_qty for leg in live.legs] == [0.0, 0.0]
    assert [leg.net_qty for leg in live.legs] == [pytest.approx(0.02), pytest.approx(0.02)]
    assert "positions_reappeared" in [alert.kind for alert in again.alerts()]

    assert again.lifecycle.force_close(trade.id, "manual")
    again.run(300, until=lambda: again.lifecycle.get(trade.id).state is TradeState.CLOSED)
    assert again.lifecycle.get(trade.id).state is TradeState.CLOSED
    left = {symbol: rig.outside.position(symbol) for symbol in symbols}
    assert left == {symbols[0]: pytest.approx(0.0), symbols[1]: pytest.approx(0.0)}, (
        f"the trade is CLOSED but the account still holds {left}: a position of ours that no trade manages")
