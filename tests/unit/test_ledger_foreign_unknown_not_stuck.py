"""An UNKNOWN create whose clientOrderId lookup answers only another daemon's order is not found:
past the create window it is a presumed NOT_PLACED (reversible), not UNKNOWN for good with the
leg's job (an open, a close, a kill) waiting on it for ever.

An option clientOrderId held by an open order (10577: "an open option order") at the moment we sent
ours proves our create was refused, whatever answer (5xx, timeout) we got: it made nothing.
"""

from errors import ExchangeError
from order_ledger import OrderStatus
from tests.unit.test_ledger_foreign_same_coid import THEIR_ID, place, their_order_under, world


def test_unknown_create_shadowed_by_an_open_foreign_order_never_settles():
    clock, venue, ledger = world()
    venue.create_error = ExchangeError(10000, "system busy", "POST create")   # answer lost: outcome unknown
    coid = 101_000_000_005_001_001
    their_order_under(coid, venue, age=40)          # the other daemon's order, OPEN (state 0), before ours
    order = place(ledger)
    venue.rows = [r for r in venue.rows if r["orderId"] == THEIR_ID]   # our create made nothing (10577 inside)
    for _ in range(24 * 60):                        # a day of polls, one a minute
        clock.advance(60)
        ledger.poll(order)
    assert order.status.is_final, f"after 24 h our order is still {order.status.value}: its job waits for good"
    assert ledger.verify(order) != "live", "the reconciler is told our order is working on the exchange"
