"""A close RFQ accept recorded before a crash, with the trade's CLOSING write lost (PENDING_CLOSE
at restart): no new close round while the accept is still in doubt (one used to start).

T1 guards the same lost write for an open (PENDING_OPEN with an accept recorded -> OPENING, wait);
T8 waits for a close accept only when the record says CLOSING. PENDING_CLOSE (T7) goes straight
to ``_drive``, which did not ask ``_accept_in_doubt`` before sizing a round on books that do not
hold the block trade's close fills yet.
"""
from trade_lifecycle import TradeState
from tests.unit.test_lifecycle_safety import restart_with_a_close_accept_in_doubt
from tests.unit.test_lifecycle_safety import rig  # noqa: F401 - fixture
from tests.unit.test_trade_lifecycle import open_trade


def test_pending_close_with_a_close_accept_in_doubt_starts_no_new_close_round(rig):  # noqa: F811
    trade = open_trade(rig)
    rig.manager.force_close(trade.id)
    assert trade.state is TradeState.CLOSING
    # The CLOSING write was lost (persistence_failed): the store's last record says PENDING_CLOSE.
    saved = rig.store.saved
    while saved and saved[-1]["id"] == trade.id and saved[-1]["state"] == "CLOSING":
        saved.pop()
    assert [r["state"] for r in saved if r["id"] == trade.id][-1] == "PENDING_CLOSE"
    # The close job's RFQ accept had been recorded (note_block_accept) and sent; then the crash.
    manager, jobs = restart_with_a_close_accept_in_doubt(rig, trade)
    again = manager.get(trade.id)
    new = rig.executor.jobs[jobs:]
    assert new == [], (f"a new {[j.intent.name for j in new]} round went out for "
                       f"{[(t.symbol, t.qty) for j in new for t in j.legs]} while the close accept (whose block "
                       f"trade may have closed these legs) is in doubt; "
                       f"state {again.state.value}")
