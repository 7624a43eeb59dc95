"""Outside-close evidence is the NET outside flow of the window (docs/RECOVERY.md S2, S3, S6).

A fill that is not ours on the closing side proves a close of OUR position only when it did not
merely undo an outside fill on the opening side: somebody else on the account who buys 0.01 of
our call and sells it again changed nothing of ours (the booking of S3 is not reversible for an
option, and the 0.01 we still hold would then be managed by no trade). So the evidence is the
closing-side outside fills minus the opening-side outside fills since the window start (the
oldest trade holding the symbol opened), never below zero, less what earlier external closes
used; and no more than the net flow since the latest positions read that was not short, less
what that read showed beyond our trades (S2): somebody else's own position is closed first.

``CloseEvidence`` is tested directly for the rule, then the real ``Reconciler`` over the fakes
of tests/unit/test_reconciliation.py for the bookings. Simulated clock only.
"""
from __future__ import annotations

import pytest

from clock import SimulatedClock
from close_evidence import KNOWN_READ_LAG_SECONDS, CloseEvidence, KnownPosition
from errors import TransportError
from order_ledger import Intent
from tests.unit.test_perp_reconciliation import PERP, Rig, perp_fill, perp_trade
from tests.unit.test_reconciliation import (
    BUY,
    SELL,
    SYM_C,
    T0,
    FakeClient,
    FakeLedger,
    FakeLifecycle,
    FakeOrder,
    harness,
    long_trade,
    ours,
    position,
    snapshot,
    start,
)
from trade_lifecycle import TradeLifecycle

WINDOW = T0 - 600        # long_trade opened then


def fill(side: int, qty: float, price: float, at: float, order_id: int, **extra) -> dict:
    """A trade-history row on SYM_C (no clientOrderId unless given)."""
    return {"symbol": SYM_C, "orderId": order_id, "tradeSide": side, "qty": qty, "price": price,
            "time": int(at * 1000), **extra}


def evidence(fills: list[dict], *, trades: list[TradeLifecycle] | None = None,
             ledger: FakeLedger | None = None) -> CloseEvidence:
    client = FakeClient()
    client.fills = fills
    return CloseEvidence(client=client, ledger=ledger or FakeLedger(), lifecycle=FakeLifecycle(trades or []),
                         clock=SimulatedClock(start=T0, speed=0), interval_seconds=60.0)


def total(found: list[tuple[float, float]]) -> float:
    return round(sum(qty for qty, _price in found), 8)


# ---------------------------------------------------------------------------------------------
# The rule (CloseEvidence.fills)
# ---------------------------------------------------------------------------------------------


def test_an_outside_round_trip_nets_to_no_evidence():
    found = evidence([fill(BUY, 0.01, 300.0, T0 - 300, 701), fill(SELL, 0.01, 310.0, T0 - 270, 702)])

    assert found.fills(SYM_C, +1, WINDOW) == []


def test_an_outside_round_trip_the_other_way_round_nets_to_no_evidence_either():
    """Sold first, bought back: the position is what it was, nothing of ours left."""
    found = evidence([fill(SELL, 0.01, 310.0, T0 - 300, 701), fill(BUY, 0.01, 300.0, T0 - 270, 702)])

    assert found.fills(SYM_C, +1, WINDOW) == []


def test_a_partial_round_trip_is_evidence_of_what_it_sold_beyond_what_it_bought():
    found = evidence([fill(BUY, 0.01, 300.0, T0 - 300, 701), fill(SELL, 0.02, 310.0, T0 - 270, 702)])

    assert found.fills(SYM_C, +1, WINDOW) == [(pytest.approx(0.01), 310.0)]


def test_the_net_flow_is_priced_from_the_newest_closing_fills():
    found = evidence([fill(SELL, 0.01, 290.0, T0 - 400, 700), fill(BUY, 0.01, 300.0, T0 - 300, 701),
                      fill(SELL, 0.01, 320.0, T0 - 200, 702)])

    assert found.fills(SYM_C, +1, WINDOW) == [(pytest.approx(0.01), 320.0)]


def test_a_short_is_closed_by_buys_and_opened_by_sells():
    found = evidence([fill(SELL, 0.01, 300.0, T0 - 300, 701), fill(BUY, 0.03, 310.0, T0 - 270, 702)])

    assert found.fills(SYM_C, -1, WINDOW) == [(pytest.approx(0.02), 310.0)]
    assert found.fills(SYM_C, +1, WINDOW) == []          # the same flow opens a long: no close of one


def test_an_outside_buy_before_the_window_does_not_offset_and_a_read_that_saw_it_does():
    """Bought before our trade opened, sold inside the window. The window's net flow alone says
    0.01 (the buy is not in it). A positions read after the buy showed it beyond ours (S2): what
    was beyond ours is taken out first, and the sell proves nothing of ours."""
    rows = [fill(BUY, 0.01, 300.0, WINDOW - 3600, 701), fill(SELL, 0.01, 310.0, T0 - 100, 702)]

    assert evidence(rows).fills(SYM_C, +1, WINDOW) == [(pytest.approx(0.01), 310.0)]
    seen_beyond = KnownPosition(at=T0 - 300, beyond=0.01)
    assert evidence(rows).fills(SYM_C, +1, WINDOW, seen_beyond) == []
    seen_before_we_opened = KnownPosition(at=WINDOW - 1800, beyond=0.01)      # we held nothing then
    assert evidence(rows).fills(SYM_C, +1, WINDOW, seen_before_we_opened) == []


def test_a_read_that_showed_nothing_beyond_ours_after_an_outside_sell_leaves_that_sell_no_evidence():
    """The position read right (S1) after the sell: the sell closed somebody else's position."""
    rows = [fill(BUY, 0.01, 300.0, WINDOW - 3600, 701), fill(SELL, 0.01, 310.0, T0 - 300, 702)]

    known = KnownPosition(at=T0 - 300 + KNOWN_READ_LAG_SECONDS + 1, beyond=0.0)
    assert evidence(rows).fills(SYM_C, +1, WINDOW, known) == []


def test_a_genuine_outside_close_is_evidence_with_or_without_a_known_read():
    rows = [fill(SELL, 0.01, 310.0, T0 - 100, 702)]

    assert evidence(rows).fills(SYM_C, +1, WINDOW) == [(pytest.approx(0.01), 310.0)]
    known = KnownPosition(at=T0 - 300, beyond=0.0)
    assert evidence(rows).fills(SYM_C, +1, WINDOW, known) == [(pytest.approx(0.01), 310.0)]


def test_what_was_beyond_ours_is_taken_out_first_and_the_rest_is_evidence():
    """0.01 beyond ours at the read; then 0.02 sold outside: 0.01 of it was ours."""
    rows = [fill(SELL, 0.01, 300.0, T0 - 200, 701), fill(SELL, 0.01, 320.0, T0 - 100, 702)]

    known = KnownPosition(at=T0 - 300, beyond=0.01)
    assert evidence(rows).fills(SYM_C, +1, WINDOW, known) == [(pytest.approx(0.01), 320.0)]


def test_a_round_trip_seen_beyond_ours_then_a_genuine_close_is_evidence_of_the_close():
    """The read saw the outside buy (beyond ours 0.01); the round trip's sell and the operator's
    close came after: the net since the read less what was beyond is the operator's 0.01."""
    rows = [fill(BUY, 0.01, 300.0, T0 - 500, 701), fill(SELL, 0.01, 310.0, T0 - 200, 702),
            fill(SELL, 0.01, 330.0, T0 - 100, 703)]

    known = KnownPosition(at=T0 - 300, beyond=0.01)
    assert evidence(rows).fills(SYM_C, +1, WINDOW, known) == [(pytest.approx(0.01), 330.0)]
    assert evidence(rows).fills(SYM_C, +1, WINDOW) == [(pytest.approx(0.01), 330.0)]


def test_the_fills_of_our_orders_count_neither_way():
    """Our own open (orderId in the ledger) does not offset an outside close; our own close (by
    orderId, or by our prefix on the row) proves none."""
    ledger = FakeLedger([FakeOrder(ours(1), SYM_C, order_id=500, live=False),
                         FakeOrder(ours(1, intent=Intent.CLOSE), SYM_C, order_id=501, live=False)])
    rows = [fill(BUY, 0.01, 300.0, T0 - 400, 500),                                      # our open
            fill(SELL, 0.01, 999.0, T0 - 300, 501),                                     # our close
            fill(SELL, 0.01, 888.0, T0 - 250, 502, clientOrderId=ours(9)),              # our prefix
            fill(SELL, 0.01, 310.0, T0 - 200, 702)]                                     # somebody else's

    assert evidence(rows, ledger=ledger).fills(SYM_C, +1, WINDOW) == [(pytest.approx(0.01), 310.0)]
    assert evidence(rows[:3], ledger=ledger).fills(SYM_C, +1, WINDOW) == []


def test_earlier_external_closes_are_discounted_from_the_net_flow():
    trade = long_trade(1, 0.03)
    trade.legs[0].external_qty = 0.01                    # booked earlier from one of these sells
    rows = [fill(BUY, 0.01, 300.0, T0 - 400, 701), fill(SELL, 0.02, 310.0, T0 - 300, 702),
            fill(SELL, 0.01, 330.0, T0 - 200, 703)]

    assert total(evidence(rows, trades=[trade]).fills(SYM_C, +1, WINDOW)) == 0.01


# ---------------------------------------------------------------------------------------------
# Through the reconciler (rows S3, S6)
# ---------------------------------------------------------------------------------------------


def test_startup_an_outside_round_trip_and_a_flat_read_book_nothing_it_is_a_suspect_read():
    h = harness([long_trade(1, 0.02)])
    h.client.fills = [fill(BUY, 0.01, 300.0, T0 - 300, 701), fill(SELL, 0.01, 310.0, T0 - 270, 702)]

    start(h, snapshot())                                 # flat: maintenance, failover

    assert h.lifecycle.external == []
    assert h.reconciler.last_report.suspect == [SYM_C]
    assert h.alerts.kinds("CRITICAL") == ["suspect_positions_read"]


def test_startup_a_partial_round_trip_books_its_net_and_the_rest_is_a_suspect_read():
    h = harness([long_trade(1, 0.02)])
    h.client.fills = [fill(BUY, 0.01, 300.0, T0 - 300, 701), fill(SELL, 0.02, 310.0, T0 - 270, 702)]

    start(h, snapshot())

    assert h.lifecycle.external == [("T000000001", 0, 0.01, 310.0)]
    assert h.reconciler.last_report.suspect == [SYM_C]


def test_startup_a_genuine_outside_close_is_booked_as_before():
    h = harness([long_trade(1, 0.02)])
    h.client.fills = [fill(SELL, 0.01, 310.0, T0 - 100, 702)]

    start(h, snapshot(position(SYM_C, 0.01)))            # the operator closed 0.01 by hand

    assert h.lifecycle.external == [("T000000001", 0, 0.01, 310.0)]
    assert h.reconciler.last_report.suspect == [] and h.alerts.kinds("CRITICAL") == []


def periodic(h, *positions, after: float = 60.0):
    h.clock.advance(after)
    return h.reconciler.periodic(snapshot(*positions, at=h.clock.now()))


def test_running_an_outside_position_seen_beyond_ours_then_sold_is_no_evidence_on_a_flat_read():
    """Somebody else bought 0.01 before our trade opened; the reads showed it beyond ours (S2).
    They sell it; then the positions read flat twice: nothing of ours is booked."""
    h = harness([long_trade(1, 0.02)])
    h.client.fills = [fill(BUY, 0.01, 300.0, WINDOW - 3600, 701)]
    start(h, snapshot(position(SYM_C, 0.03)))            # S2: 0.01 beyond ours
    periodic(h, position(SYM_C, 0.03))
    h.client.fills.append(fill(SELL, 0.01, 310.0, h.clock.now() + 30, 702))

    reports = [periodic(h), periodic(h), periodic(h)]

    assert h.lifecycle.external == []
    assert reports[-1].suspect == [SYM_C]


def test_running_what_was_beyond_ours_goes_first_and_a_genuine_close_after_it_is_booked():
    h = harness([long_trade(1, 0.02)])
    h.client.fills = [fill(BUY, 0.01, 300.0, WINDOW - 3600, 701)]
    start(h, snapshot(position(SYM_C, 0.03)))
    periodic(h, position(SYM_C, 0.03))
    now = h.clock.now()
    h.client.fills += [fill(SELL, 0.01, 310.0, now + 20, 702),     # theirs
                       fill(SELL, 0.01, 330.0, now + 40, 703)]     # ours, closed by the operator by hand

    periodic(h, position(SYM_C, 0.01))
    report = periodic(h, position(SYM_C, 0.01))          # two agreeing checks

    assert h.lifecycle.external == [("T000000001", 0, 0.01, 330.0)]
    assert report.suspect == []


def test_running_an_outside_round_trip_after_a_right_read_is_no_evidence():
    h = harness([long_trade(1, 0.02)])
    start(h, snapshot(position(SYM_C, 0.02)))
    periodic(h, position(SYM_C, 0.02))
    now = h.clock.now()
    h.client.fills = [fill(BUY, 0.01, 300.0, now + 10, 701), fill(SELL, 0.01, 310.0, now + 40, 702)]
    periodic(h, position(SYM_C, 0.03), after=20.0)       # between the two: S2

    reports = [periodic(h), periodic(h), periodic(h)]

    assert h.lifecycle.external == [] and reports[-1].suspect == [SYM_C]
    report = periodic(h, position(SYM_C, 0.02))          # the positions show again
    assert report.suspect == [] and h.lifecycle.external == []


def test_a_perp_round_trip_is_no_evidence_either():
    rig = Rig([perp_trade(1, 0.01)])
    rig.perp.fills = [perp_fill(900, BUY, 0.01, 71_000.0, at=T0 - 300, trade_id=1),
                      perp_fill(901, SELL, 0.01, 71_100.0, at=T0 - 200, trade_id=2)]

    report = rig.reconciler.startup(snapshot())

    assert rig.lifecycle.external == [] and report.suspect == [PERP]


def test_a_perp_partial_round_trip_books_its_net():
    rig = Rig([perp_trade(1, 0.02)])
    rig.perp.fills = [perp_fill(900, BUY, 0.01, 71_000.0, at=T0 - 300, trade_id=1),
                      perp_fill(901, SELL, 0.02, 71_100.0, at=T0 - 200, trade_id=2)]

    report = rig.reconciler.startup(snapshot())

    assert rig.lifecycle.external == [("T000000001", 0, 0.01, 71_100.0)] and report.suspect == [PERP]


# ---------------------------------------------------------------------------------------------
# Whose a fill is: the order history, joined by orderId (option fills carry no clientOrderId)
# ---------------------------------------------------------------------------------------------


def test_a_fill_of_an_order_of_ours_the_ledger_has_no_order_id_for_is_ours_through_the_order_history():
    """API.md 8.6: option fill rows name no clientOrderId. An order of ours whose orderId the
    ledger never learnt (its answer lost) filled: the order history, joined by orderId, says it
    carries our prefix, so its fill is no evidence of an outside close."""
    found = evidence([fill(SELL, 0.01, 310.0, T0 - 270, 702)])
    client = found.client
    client.history_pages = [{"list": [{"orderId": 702, "clientOrderId": ours(3, 0, Intent.CLOSE), "symbol": SYM_C,
                                       "tradeSide": SELL, "qty": 0.01, "state": 1, "fillQty": 0.01}],
                             "hasNext": False}]

    assert found.fills(SYM_C, +1, WINDOW) == []


def test_an_order_history_that_cannot_be_read_to_its_end_is_no_evidence():
    found = evidence([fill(SELL, 0.01, 310.0, T0 - 270, 702)])
    found.client.fail_history = TransportError("GET /open/option/order/history/v1", "timeout")

    assert found.fills(SYM_C, +1, WINDOW) == []


def test_a_fill_history_cut_short_is_no_evidence():
    """More pages than the read takes: the newest pages alone could miss the opening side of a
    round trip, and the net flow would be overstated."""
    found = evidence([])

    pages = iter(range(1000, 0, -1))

    def endless(**params):
        row = next(pages)
        return {"list": [fill(SELL, 0.01, 310.0, T0 - 270, row, id=row)], "hasNext": True}

    found.client.trade_history = endless
    assert found.fills(SYM_C, +1, WINDOW) == []
