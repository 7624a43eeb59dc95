"""``kill --all-positions`` arriving while one of our trades is OPENING and its open order has
already filled on the exchange, the fill not polled yet (audit, 2026-12-07).

Before, the kill's own positions read, in the wake it began, adopted that fill as an "external"
position, so the same contracts were closed twice and the kill never finished. Now positions on
the symbols our active trades trade are adopted only from a second read, once the kill's own
trades have ended; the kill finishes with the account flat.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from commands import CommandProcessor
from contracts import Side
from option_selection import perp, resolve_legs
from persistence import COMMAND_DONE
from trade_lifecycle import TradeState
from tests.integration.test_perp_legs_sim import PerpRig


@pytest.fixture
def rig(sim):
    built = PerpRig(sim)
    yield built
    built.close()


def test_all_positions_kill_during_an_open_whose_fill_is_not_polled_yet(rig):
    rig.poll()
    trade = rig.manager.create("alpha", resolve_legs(perp(0.01, Side.BUY), rig.market))
    assert trade.state is TradeState.OPENING
    # Our open order filled on the exchange at once; the lifecycle has not polled it yet.
    assert rig.position("BTCUSD") == pytest.approx(0.01), "fixture: the open order did not fill at once"
    assert trade.legs[0].net_qty == pytest.approx(0.0)

    ctx = SimpleNamespace(store=rig.store, clock=rig.clock, ledger=rig.ledger, lifecycle_manager=rig.manager,
                          account_manager=rig.accounts, alerts=rig.alerts)
    processor = CommandProcessor(ctx, [])
    command_id = rig.store.add_command("kill", {"strategy": None, "all_positions": True})
    processor.process()                         # the kill is taken in this wake

    def kill_done() -> bool:
        processor.process()
        return rig.store.command(command_id)["status"] == COMMAND_DONE

    done = rig.drive(1800, until=kill_done)
    command = rig.store.command(command_id)
    trades = {t.id: (t.strategy, t.state.value, round(t.legs[0].net_qty, 6)) for t in rig.manager.trades()}
    assert done and rig.position("BTCUSD") == pytest.approx(0.0), (
        f"kill {command['status']} after 30 min; account BTCUSD {rig.position('BTCUSD')}; "
        f"kill trades {command['result']['trades']}; trades {trades}")
    assert command["result"]["trades"] == [trade.id], "our own open fill was adopted as an external position"
