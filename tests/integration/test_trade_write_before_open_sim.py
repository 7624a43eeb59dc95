"""I5 at the open: nothing is sent for a trade whose state the store does not hold.

A failed write of a new trade's OPENING state used to be logged and passed over: the open
job's first step went out anyway. For an RFQ trade that step creates the RFQ and accepts a
quote; a crash before the accept's answer was booked left the store saying PENDING_OPEN with
no order, and the restart failed the trade as "abandoned" while its block trade sat on the
exchange, owned by no trade (audit of 2026-12-07). Now the open is given up before its first
request, and a restart that meets a PENDING_OPEN record with an RFQ accept recorded resolves
it as an open (RECOVERY.md T1).
"""
from __future__ import annotations

import pytest

from order_ledger import BLOCK_ACCEPT_EVENT
from persistence import StoreWriteError
from tests.integration.test_restart_reconciliation import (  # noqa: F401  (fixtures)
    died_after_the_accept,
    make_rig,
    rfq_strangle,
    rig,
)
from trade_lifecycle import TradeState


def fail_first_write_of(store, state: str) -> list[str]:
    """Make the store refuse the first trade record written in ``state`` (a busy or full disk)."""
    real_save = store.save_trade
    failed: list[str] = []

    def save_trade(record):
        if record.get("state") == state and not failed:
            failed.append(record["id"])
            raise StoreWriteError(f"save_trade {record['id']}: database is locked")
        return real_save(record)

    store.save_trade = save_trade
    return failed


def test_an_open_whose_opening_write_fails_sends_nothing(rig):
    life = rig.lives.start([rfq_strangle()])
    failed = fail_first_write_of(life.lifecycle.recorder.store, "OPENING")
    life.run(120)
    assert failed, "the OPENING write was never attempted"
    trade = life.lifecycle.get(failed[0])
    assert trade.state is TradeState.FAILED
    assert trade.failure_reason == "state write failed before the first order"
    assert not rig.sim.requests_for("rfq_create") and not life.store.events(BLOCK_ACCEPT_EVENT)
    assert all(rig.outside.position(leg.symbol) == 0 for leg in trade.legs)


def test_a_pending_open_record_with_an_accept_recorded_is_resolved_as_an_open_at_restart(rig):
    life, trade = died_after_the_accept(rig)
    # The record as a lost OPENING write leaves it (an older build, or a write lost with the disk).
    life.store.save_trade({**trade.to_record(), "state": TradeState.PENDING_OPEN.value})
    life.crash()
    held = {leg.symbol: rig.outside.position(leg.symbol) for leg in trade.legs}
    assert held == {leg.symbol: pytest.approx(0.3) for leg in trade.legs}
    rig.clock.advance(120)

    again = rig.lives.start([rfq_strangle()])
    assert trade.id not in again.recovery["abandoned"]
    again.run(120)
    after = again.lifecycle.get(trade.id)
    assert after.state is not TradeState.FAILED, after.failure_reason
    assert [leg.net_qty for leg in after.legs] == [pytest.approx(0.3)] * 2
