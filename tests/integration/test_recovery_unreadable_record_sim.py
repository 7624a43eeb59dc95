"""A restart never acts on half a memory (RECOVERY.md, "Unrecoverable inconsistency").

Before: one stored trade record recovery could not read (a state a newer build wrote, a
damaged row) made ``LifecycleManager.recover`` raise part-way. The trades after it were not
loaded and the ledger's orders were never restored, while the daemon went on: a loaded OPEN
trade read zero fills, a manual close sent nothing and ended it, and its position on the
exchange belonged to nobody (audit of 2026-12-07). Now the bad record is set aside, loudly,
every other trade and every order comes back, and no strategy enters until a restart reads
it; a recovery that fails anyway pins the lifecycle's hold (nothing moves) and says so.
"""
from __future__ import annotations

import pytest

import app
from tests.integration.test_restart_reconciliation import (  # noqa: F401  (fixtures)
    first_life_crashed_open,
    make_rig,
    rig,
)
from trade_lifecycle import UNREADABLE_RECORDS_HOLD, TradeState

QTY = 0.01


def test_an_unreadable_record_is_set_aside_and_every_other_trade_is_managed(rig):
    trade = first_life_crashed_open(rig, qty=QTY)
    symbols = [leg.symbol for leg in trade.legs]
    with rig.lives.store() as store:
        # A record this build cannot read; it sorts after the good trade.
        store.save_trade({"id": "T999999999", "seq": 999999999, "strategy": "other", "state": "ARCHIVED",
                          "legs": []})
    rig.clock.advance(60)
    life = rig.lives.start([])
    assert life.recovery["unreadable"] == ["T999999999"]
    assert [a.kind for a in life.alerts(level="CRITICAL")] == ["trade_record_unreadable"]
    assert UNREADABLE_RECORDS_HOLD in life.lifecycle.holds.entry_holds
    again = life.lifecycle.get(trade.id)
    assert again.state is TradeState.OPEN and [leg.net_qty for leg in again.legs] == [QTY, QTY]
    life.run(60)
    # The operator closes it: the close goes out and the position is gone from the exchange.
    assert life.lifecycle.force_close(trade.id, "manual")
    assert life.run(600, until=lambda: again.state is TradeState.CLOSED), again.state
    assert all(rig.outside.position(symbol) == 0 for symbol in symbols)


def test_a_recovery_that_fails_pins_the_hold_and_alerts(rig, monkeypatch):
    trade = first_life_crashed_open(rig, qty=QTY)
    life = rig.lives.start([])

    def broken() -> dict:
        raise RuntimeError("store read failed half way")

    monkeypatch.setattr(life.lifecycle, "recover", broken)
    assert app.recover(life.ctx) is False
    assert [a.kind for a in life.alerts(level="CRITICAL")] == ["recovery_failed"]
    life.run(120)          # the start-up reconciliation runs, and would release an ordinary hold
    assert life.lifecycle.hold_reason.startswith("restart recovery failed")
    creates = len(rig.sim.requests_for("create_order"))
    assert life.lifecycle.force_close(trade.id, "manual") in (True, False)
    life.run(120)
    assert len(rig.sim.requests_for("create_order")) == creates      # nothing moves on half a memory
    assert all(rig.outside.position(leg.symbol) == pytest.approx(QTY) for leg in trade.legs)
