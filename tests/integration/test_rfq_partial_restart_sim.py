"""RECOVERY.md R1/R3 against the simulator: an RFQ open whose accept answer showed only leg 0,
then a crash, then a restart whose block-trade list does not show the record yet.

The trade must not be judged on leg 0 alone (no unwind order, row T5) while leg 1, filled on the
exchange, is unknown; the reconciler says so once at CRITICAL, keeps looking, and books leg 1
when the list shows the record: the trade then opens whole. See tests/unit/test_rfq_partial_restart.py.
"""
from __future__ import annotations

from typing import Any

import pytest

from errors import TransportError
from order_ledger import Intent
from trade_lifecycle import TradeState

from tests.integration.restart_rig import creates_since
from tests.integration.test_restart_reconciliation import Rig, make_rig, rfq_strangle, rig  # noqa: F401 - fixtures


def unreadable(*args: Any, **kwargs: Any) -> Any:
    raise TransportError("GET blocktrade orders", "server error", 503)


def lagging(*args: Any, **kwargs: Any) -> Any:
    """A block-trade list that answers, without our record (it lags, or lost it)."""
    return {"list": [], "hasNext": False}


def crash_with_leg_0_booked(rig: Rig) -> tuple[Any, list[str]]:  # noqa: F811 - the fixture's type
    """Life 1: the exchange executes the accept, but its answer shows leg 0 only; the block-trade
    list and the fill history cannot be read, so the job stays AMBIGUOUS with leg 0 booked."""
    life = rig.lives.start([rfq_strangle()])
    http = life.ctx.http
    accept = http.rfq_accept

    def accept_showing_leg_0(*args: Any, **kwargs: Any) -> Any:
        answer = accept(*args, **kwargs)
        answer["legs"] = answer["legs"][:1]
        return answer

    http.rfq_accept = accept_showing_leg_0
    http.blocktrade_orders = unreadable
    http.trade_history = unreadable
    assert life.run(120, until=lambda: bool(life.trades()) and len(life.ledger.orders(life.trades()[0].id)) == 1)
    life.run(30)
    trade = life.only_trade()
    assert trade.state is TradeState.OPENING
    booked = [life.ledger.leg_fill(trade.id, leg.index, Intent.OPEN)[0] for leg in trade.legs]
    assert booked[0] == pytest.approx(0.3) and booked[1] == 0.0
    life.crash()
    symbols = [leg.symbol for leg in trade.legs]
    assert all(rig.outside.position(symbol) == pytest.approx(0.3) for symbol in symbols)   # both legs traded
    return trade, symbols


def test_a_partly_booked_rfq_open_is_neither_unwound_nor_given_up_until_its_block_trade_shows(rig):  # noqa: F811
    trade, symbols = crash_with_leg_0_booked(rig)
    rig.clock.advance(300)
    restarted = rig.clock.now()

    again = rig.lives.start([rfq_strangle()])
    again.ctx.http.blocktrade_orders = lagging
    again.run(600)
    reloaded = again.only_trade()
    assert reloaded.state is TradeState.OPENING, f"judged on leg 0 alone: {reloaded.state}"
    assert creates_since(rig.sim, restarted) == []                       # no unwind of leg 0 alone
    assert [a.kind for a in again.alerts(level="CRITICAL")].count("rfq_block_trade_incomplete") == 1
    assert again.reconciler.accept_in_doubt(trade.id)

    del again.ctx.http.blocktrade_orders                                 # the list shows the record at last
    assert again.run(300, until=lambda: again.only_trade().state is TradeState.OPEN)
    reloaded = again.only_trade()
    assert [leg.open_filled for leg in reloaded.legs] == [pytest.approx(0.3)] * 2
    assert len(again.ledger.orders(trade.id)) == 2                       # leg 1 booked once
    assert creates_since(rig.sim, restarted) == []
