"""A ledger record written before ``exchange_offset`` existed (any version before a1a6f99) says
nothing of the offset its order was signed with. Read as 0.0, on a host whose clock is more than
X-REQ-TS-DIFF ahead of the exchange's, our own order, UNKNOWN at the restart, was judged another
daemon's: not adopted (its fill never booked), CRITICAL prefix_conflict, every strategy paused.
Such a record gets no creation-time judgement: it is adopted as before the check existed.
"""

from clock import SimulatedClock
from order_ledger import LedgerOrder, OrderLedger, OrderStatus
from tests.unit.test_ledger_foreign_same_coid import Venue, unknown_record
from tests.unit.test_prefix_same_coid import COID
from tests.unit.test_reconciliation import T0


def test_pre_upgrade_unknown_record_on_a_fast_host_is_not_called_foreign():
    clock = SimulatedClock(start=T0 + 20, speed=0)          # host clock, 10 s ahead of the exchange
    venue = Venue(clock)
    # stored by the previous version: no exchange_offset
    record = {k: v for k, v in unknown_record(T0).items() if k != "exchange_offset"}
    record["error_code"], record["error_msg"] = 10000, "system busy"
    assert "exchange_offset" not in record
    # our create reached the exchange: stamped on the exchange's clock, 10 s behind the host's
    venue.add(1_900_000_000_000_000_777, COID, at=T0 - 10 + 0.05, state=1, fill=0.01)
    ledger = OrderLedger(venue, clock, prefix=101, exchange_offset=lambda: -10.0)
    ledger.restore([record])
    order = ledger.get(COID)
    assert order is not None and order.status is OrderStatus.UNKNOWN

    ledger.poll(order)

    foreign = ledger.take_foreign_orders()
    assert not foreign, f"our own order judged another daemon's after the upgrade: {foreign[0].why}"
    assert order.status is OrderStatus.FILLED
