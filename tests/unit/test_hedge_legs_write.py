"""I5 on the hedge: the hedge legs are added to the trade record before the first hedge order.

``_hedge_legs`` persisted ``hedge_legs_added`` and ignored a failed write; the hedge order went
out anyway. A crash before the next successful write left a record without the hedge legs:
after the restart the trade did not know its perp, its close sent the options only and the perp
bought for the trade stayed on the account, managed by no trade (read as somebody else's, row
S2). Now a failed write takes the legs back out and no hedge order goes until the store takes them.
"""
from trade_lifecycle import HEDGE_LEGS_KEY
from tests.unit.test_hedge_safety import hedge_jobs, hedged_rig


def _fail_saves_with_hedge_legs(rig):
    """The store refuses (once) the first trade write that carries the hedge legs."""
    store = rig.store
    plain = store.save_trade
    state = {"failed": 0}

    def save_trade(record):
        if (record.get("metadata") or {}).get(HEDGE_LEGS_KEY) and not state["failed"]:
            state["failed"] += 1
            raise OSError("disk I/O error")
        return plain(record)

    store.save_trade = save_trade
    return state


def test_no_hedge_order_goes_out_when_the_hedge_legs_are_not_stored():
    rig, trade = hedged_rig()
    state = _fail_saves_with_hedge_legs(rig)
    rig.clock.advance(10)
    rig.poll()
    assert state["failed"] == 1, "the hedge legs' write was not attempted"
    jobs = hedge_jobs(rig)
    assert not jobs, (f"a hedge job was started although the record of its legs failed to be written: "
                      f"{[(j.intent, j.legs[0].leg_index, j.legs[0].qty) for j in jobs]}")


def test_once_the_store_takes_the_hedge_legs_the_hedge_goes_on_them():
    """The failed write takes the legs back out; the next poll adds them again, stores them, and
    only then sends the hedge order, on legs the stored record holds."""
    rig, trade = hedged_rig()
    state = _fail_saves_with_hedge_legs(rig)
    rig.clock.advance(10)
    rig.poll()
    assert state["failed"] == 1 and HEDGE_LEGS_KEY not in trade.metadata and not hedge_jobs(rig)
    rig.clock.advance(10)
    rig.poll()
    (job,) = hedge_jobs(rig)
    stored = [r for r in rig.store.saved if r["id"] == trade.id][-1]
    assert job.legs[0].leg_index in {int(i) for i in stored["metadata"][HEDGE_LEGS_KEY].values()}
    assert {leg["index"] for leg in stored["legs"]} >= {job.legs[0].leg_index}
