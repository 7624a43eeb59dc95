"""RECOVERY.md T6 on the real simulator: a restart mid-unwind sizes no round on fills that are not all in.

The unwind order the ledger last saw CANCELED with nothing filled (its fill not reported yet
when the daemon died, API.md 11.16) had filled on the exchange: the position is flat. Before,
the restarted daemon sent ten reduce-only unwind orders for it (all refused); with another
trade of ours on the same symbol and side, the reduce-only order would have sold that trade's
position. Now the order is polled once more after the grace, as in T3 and T8, and the trade
ends on its fills (audit_exec2). (The start-up reconciliation still reads the position short of
the trade before that poll: its suspect read holds entries until the next periodic pass, and
books nothing.)
"""
from __future__ import annotations

import pytest

from order_ledger import Intent, OrderStatus
from tests.integration.restart_rig import (
    BUY,
    SELL,
    creates_since,
    pick_legs,
    place_as_daemon,
    record_placed,
    seed_trade,
    strangle_config,
)
from tests.integration.test_restart_reconciliation import make_rig, rig  # noqa: F401  (fixtures)
from trade_lifecycle import TradeState


def test_row_t6_an_unwind_order_cancelled_before_its_fill_was_reported_is_polled_again_before_a_new_round(rig):
    legs = pick_legs(rig.sim)
    opened = place_as_daemon(rig.outside, trade_seq=1, leg=legs[0], intent=Intent.OPEN, attempt=1, side=BUY,
                             qty=0.01, fill=True)
    unwound = place_as_daemon(rig.outside, trade_seq=1, leg=legs[0], intent=Intent.UNWIND, attempt=2,
                              side=SELL, qty=0.01, fill=True)
    with rig.lives.store() as store:
        trade_id = seed_trade(store, 1, legs, TradeState.UNWINDING, created_at=rig.clock.now())
        record_placed(store, opened, trade_seq=1, intent=Intent.OPEN, attempt=1, status=OrderStatus.FILLED,
                      view=rig.outside.query(opened.order_id))
        # What the ledger last saw of the unwind order: cancelled, nothing filled.
        view = dict(rig.outside.query(unwound.order_id))
        view.update(fillQty=0.0, avgPrice=0.0, fee=0.0, state=3)
        record_placed(store, unwound, trade_seq=1, intent=Intent.UNWIND, attempt=2, status=OrderStatus.CANCELED,
                      view=view)
    rig.clock.advance(10)
    restarted = rig.clock.now()

    life = rig.lives.start([strangle_config(cooldown_seconds=3600.0)])
    assert life.run(120, until=lambda: life.lifecycle.get(trade_id).state is TradeState.FAILED)
    sent = creates_since(rig.sim, restarted)
    assert sent == [], (f"{len(sent)} unwind order(s) sent on a position the exchange already shows flat: "
                        f"{[(r.params.get('symbol'), r.params.get('qty'), r.params.get('tradeSide')) for r in sent]}")
    failed = life.lifecycle.get(trade_id)
    assert failed.legs[0].close_filled == pytest.approx(failed.legs[0].open_filled)
    assert rig.outside.position(legs[0].symbol) == 0.0
