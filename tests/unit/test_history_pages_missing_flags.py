"""An option history page that does not say whether more follow is no evidence that nothing does (API.md 8.6).

Before, an order-history or trade-history page whose answer carried no ``hasNext`` was read
as the last page (``bool(raw.get("hasNext"))``): a missing field ended the walk, and what
the next page held (an order of ours, the fill that proves or disproves a close) was never
read, while the read counted as complete. Now a page without ``hasNext`` that is full (as
many rows as the walker asked for) is read on; where the walk cannot go on (no cursor, its
page cap) the read is cut short, no evidence, exactly as for a page that says more follow.
A short page without one is still the last page, a stated ``hasNext: false`` still ends it.

And the fill history is asked for one symbol with a ``symbol`` filter API.md 8.6 does not
list: an exchange that ignores it answers every symbol's fills, which the evidence read drops
and counts (DEBUG), never books.

``CloseEvidence`` runs over a paged fake of the trade history (the fakes of
tests/unit/test_reconciliation.py otherwise); ``PrefixOwnership`` through the real
``Reconciler`` as in tests/unit/test_prefix_history_truncated.py. Simulated clock only.
"""
from __future__ import annotations

import logging
from typing import Any

import pytest

import prefix_ownership
from clock import SimulatedClock
from close_evidence import CloseEvidence
from coincall_payloads import parse_fill_page, parse_order_page
from errors import PayloadError
from prefix_ownership import HISTORY_PAGE_SIZE
from tests.unit.test_prefix_history_truncated import (
    INCOMPLETE,
    OTHER_PREFIX,
    checked_store,
    incomplete_alerts,
    known,
    row,
)
from tests.unit.test_reconciliation import (
    BUY,
    SELL,
    SYM_C,
    SYM_P,
    T0,
    FakeClient,
    FakeLedger,
    FakeLifecycle,
    harness,
    ours,
    snapshot,
    start,
)

WINDOW = T0 - 600        # where the evidence read starts


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


class PagedTradeHistory(FakeClient):
    """A trade history served newest first in pages of the asked ``pageSize``, by ``fromId``
    (rows with a smaller ``id``), with no ``hasNext`` in any answer; ``symbol`` is ignored,
    as an exchange that does not know the filter would."""

    def __init__(self, rows: list[dict]) -> None:
        super().__init__()
        self.rows = rows
        self.trade_reads: list[dict] = []

    def trade_history(self, **params: Any) -> dict:
        self.trade_reads.append(params)
        rows = self.rows
        if "fromId" in params:
            rows = [item for item in rows if "id" in item and item["id"] < params["fromId"]]
        return {"list": rows[:params["pageSize"]]}


def outside_fill(side: int, qty: float, at: float, row_id: int | None, *, symbol: str = SYM_C) -> dict:
    """A trade-history row of an order that is not ours (no clientOrderId, orderId unknown)."""
    item = {"symbol": symbol, "orderId": 900_000 + (row_id or 0), "tradeSide": side, "qty": qty, "price": 310.0,
            "time": int(at * 1000)}
    if row_id is not None:
        item["id"] = row_id
    return item


def round_trips(pairs: int, first_id: int) -> list[dict]:
    """``pairs`` outside buys each undone by an outside sell on SYM_C: net nothing, newest first."""
    rows = []
    for n in range(pairs):
        at = T0 - 10 - n
        rows += [outside_fill(SELL, 0.01, at, first_id - 2 * n), outside_fill(BUY, 0.01, at - 0.5, first_id - 2 * n - 1)]
    return rows


def evidence_over(client: FakeClient) -> CloseEvidence:
    return CloseEvidence(client=client, ledger=FakeLedger(), lifecycle=FakeLifecycle(),
                         clock=SimulatedClock(start=T0, speed=0), interval_seconds=60.0)


def qty_of(found: list[tuple[float, float]]) -> float:
    return round(sum(qty for qty, _price in found), 8)


def others(count: int, first_order_id: int, at: float) -> list[dict]:
    """``count`` order-history rows of somebody else's orders, newest first, orderIds descending."""
    return [row(first_order_id - n, OTHER_PREFIX, at - n) for n in range(count)]


# ---------------------------------------------------------------------------------------------
# The page reader
# ---------------------------------------------------------------------------------------------


def test_a_page_without_has_next_may_be_followed_only_when_it_is_full():
    full = parse_fill_page({"list": [{"id": 3}, {"id": 2}]})
    assert not full.stated and full.more(2) and not full.more(3)          # full at 2, short at 3
    bare = parse_order_page([{"orderId": 9}, "junk"])                     # a bare list: a skipped row still counts
    assert not bare.stated and bare.more(2) and [o.order_id for o in bare.rows] == [9]
    said_no = parse_order_page({"list": [{"orderId": 9}, {"orderId": 8}], "hasNext": False})
    assert said_no.stated and not said_no.more(2)                         # stated false: the last page, full or not
    assert parse_order_page({"list": [{"orderId": 9}], "hasNext": 1}).more(500)


def test_a_has_next_that_is_neither_a_boolean_nor_0_or_1_is_a_payload_error():
    """``bool("false")`` is True: an unreadable claim must not be read either way."""
    for junk in ("false", "yes", 2, [1]):
        with pytest.raises(PayloadError) as info:
            parse_fill_page({"list": [], "hasNext": junk})
        assert info.value.field == "hasNext"


# ---------------------------------------------------------------------------------------------
# The close evidence (trade history)
# ---------------------------------------------------------------------------------------------


def test_evidence_reads_on_past_a_full_fill_page_without_has_next():
    """The first page is somebody else's round trips, the second the sell that matters."""
    page_one = round_trips(HISTORY_PAGE_SIZE // 2, first_id=10_000)
    client = PagedTradeHistory(page_one + [outside_fill(SELL, 0.01, T0 - 500, 5_000)])

    found = evidence_over(client).fills(SYM_C, +1, WINDOW)

    assert qty_of(found) == 0.01
    assert [read.get("fromId") for read in client.trade_reads] == [None, page_one[-1]["id"]]


def test_evidence_from_a_full_fill_page_without_has_next_and_no_cursor_is_no_evidence(caplog):
    """Full, silent on more, and its last row gives no way on: the older pages (the opening
    side of a round trip, perhaps) are unread, and the read proves nothing."""
    rows = ([outside_fill(SELL, 0.02, T0 - 5, 10_001)] + round_trips(HISTORY_PAGE_SIZE // 2 - 1, first_id=10_000)
            + [outside_fill(BUY, 0.01, T0 - 400, None)])
    assert len(rows) == HISTORY_PAGE_SIZE
    client = PagedTradeHistory(rows)

    with caplog.at_level(logging.WARNING, logger="close_evidence"):
        found = evidence_over(client).fills(SYM_C, +1, WINDOW)

    assert found == []
    assert len(client.trade_reads) == 1
    assert "no evidence of a close" in caplog.text and "full without saying" in caplog.text


def test_fills_of_other_symbols_in_a_symbol_filtered_read_are_dropped_and_counted(caplog):
    """The filter ignored: the other symbol's sells are no close of ours, and are counted at DEBUG."""
    client = PagedTradeHistory([outside_fill(SELL, 0.05, T0 - 20, 12, symbol=SYM_P),
                                outside_fill(SELL, 0.05, T0 - 30, 11, symbol=SYM_P)])

    with caplog.at_level(logging.DEBUG, logger="close_evidence"):
        found = evidence_over(client).fills(SYM_C, +1, WINDOW)

    assert found == []
    assert f"fill history of {SYM_C}: 2 rows of other symbols dropped" in caplog.text


def test_an_ignored_symbol_filter_costs_a_page_and_the_fill_of_ours_on_the_next_still_counts(caplog):
    """A full page of another symbol's fills, without ``hasNext``, then our symbol's sell."""
    filler = [outside_fill(SELL, 0.01, T0 - 10 - n, 10_000 - n, symbol=SYM_P) for n in range(HISTORY_PAGE_SIZE)]
    client = PagedTradeHistory(filler + [outside_fill(SELL, 0.01, T0 - 500, 5_000)])

    with caplog.at_level(logging.DEBUG, logger="close_evidence"):
        found = evidence_over(client).fills(SYM_C, +1, WINDOW)

    assert found == [(pytest.approx(0.01), 310.0)]
    assert f"{HISTORY_PAGE_SIZE} rows of other symbols dropped" in caplog.text


# ---------------------------------------------------------------------------------------------
# The prefix owner (order history, RECOVERY.md L3, L4)
# ---------------------------------------------------------------------------------------------


def test_a_full_order_page_without_has_next_is_read_on_to_an_order_of_ours():
    h = harness([], ledger=FakeLedger([known(7, 20_000)]), store=checked_store(seq=10))
    page_one = [row(20_000, ours(7), T0 - 60)] + others(HISTORY_PAGE_SIZE - 1, 19_999, T0 - 120)
    h.client.history_pages = [
        {"list": page_one},                                             # full, no hasNext
        {"list": [row(5, ours(12), T0 - 1800)], "hasNext": False},      # ours(12): unknown, beyond
    ]

    start(h, snapshot())

    assert len(h.client.history_calls) == 2
    assert h.client.history_calls[1]["fromId"] == page_one[-1]["orderId"]
    assert h.alerts.kinds("CRITICAL") == ["store_behind"]
    assert h.reconciler.last_report.foreign_orders == [ours(12)]


def test_full_order_pages_without_has_next_up_to_the_page_cap_are_an_incomplete_read(monkeypatch):
    monkeypatch.setattr(prefix_ownership, "HISTORY_MAX_PAGES", 2)
    h = harness([], ledger=FakeLedger([known(7, 20_000)]), runners=["s1"], store=checked_store())
    h.client.history_pages = [
        {"list": [row(20_000, ours(7), T0 - 60)] + others(HISTORY_PAGE_SIZE - 1, 19_999, T0 - 120)},
        {"list": others(HISTORY_PAGE_SIZE, 15_000, T0 - 1800)},
        {"list": [], "hasNext": False},                                 # never read
    ]

    start(h, snapshot())

    assert len(h.client.history_calls) == 2
    assert h.alerts.kinds("CRITICAL") == [INCOMPLETE]
    assert h.runners["s1"].is_paused
    [(detail, message)] = incomplete_alerts(h)
    assert detail["pages"] == 2 and "did not say whether more pages follow" in message


# --- the other walkers: the vanish lookup, the RFQ fill read, the perp histories ----------------

def test_the_vanish_lookup_reads_on_past_a_full_page_without_has_next():
    """An order unknown by id and clientOrderId is VANISHED only once the history was read to its
    end: its row on the page after a full one without ``hasNext`` is found and believed."""
    from order_ledger import VANISH_HISTORY_PAGE_SIZE, OrderStatus
    from tests.unit.test_ledger_reversible import SYMBOL, Store, place, world

    clock, exchange, ledger, events = world(store=Store())
    order = place(ledger)
    exchange.hidden.add(order.client_order_id)
    ours = {"orderId": order.order_id, "clientOrderId": order.client_order_id, "symbol": SYMBOL, "tradeSide": 1,
            "qty": 0.1, "fillQty": 0.1, "avgPrice": 100.0, "fee": 0.01, "state": 1, "price": 100.0}
    others = [{"orderId": 9_000_000 + n, "symbol": SYMBOL, "tradeSide": 1, "qty": 0.1, "fillQty": 0.0, "state": 3,
               "price": 100.0} for n in range(VANISH_HISTORY_PAGE_SIZE)]

    def history(**filters: Any) -> dict:
        return {"list": [ours]} if "fromId" in filters else {"list": others}

    exchange.order_history = history            # type: ignore[method-assign]
    clock.advance(40.0)
    assert ledger.verify(order) != "vanished"
    assert order.status is not OrderStatus.VANISHED and "order_vanished" not in [kind for kind, _ in events]


def test_the_rfq_fill_read_reads_on_past_a_full_page_without_has_next():
    """The AMBIGUOUS accept's fill lookup: both legs on the page after a full page of other
    symbols that says nothing of more pages are booked (before, the walk stopped at page one)."""
    import rfq
    from tests.unit.test_rfq_audit_fill_history import C, P, fill_row, run as run_rfq

    filler = [{**fill_row(C, 700 + n, 0.5, row_id=1_000 + n), "symbol": "BTCUSD-1JAN27-1000-C"}
              for n in range(rfq.HISTORY_PAGE_SIZE)]
    last = {"list": [fill_row(C, 800, 0.5, row_id=11), fill_row(P, 801, 0.5, row_id=10)]}
    job, booked, client = run_rfq([{"list": filler}, last], {800: (C, 0.5), 801: (P, 0.5)})
    assert booked == [0.5, 0.5]
    assert all(read.get("pageSize") == rfq.HISTORY_PAGE_SIZE for read in client.history_reads)


def test_the_perp_history_walk_reads_on_past_a_full_page_without_has_next_and_ends_on_a_short_one():
    from coincall_client import Endpoints, _walk_cursor
    from coincall_payloads import Page

    def page(ids: list[int], *, stated: bool = False) -> Page[int]:
        return Page(rows=tuple(ids), has_next=False, next_cursor=ids[-1] if ids else None, stated=stated,
                    listed=len(ids))

    pages = {None: page([5, 4]), 4: page([3])}
    assert _walk_cursor(lambda cursor: pages[cursor], lambda n: n, Endpoints.PERP_ORDER_HISTORY, 2) == [5, 4, 3]
    stated_end = {None: page([5, 4], stated=True)}
    assert _walk_cursor(lambda cursor: stated_end[cursor], lambda n: n, Endpoints.PERP_ORDER_HISTORY, 2) == [5, 4]
    empty_after = {None: page([5, 4]), 4: page([])}
    assert _walk_cursor(lambda cursor: empty_after[cursor], lambda n: n, Endpoints.PERP_ORDER_HISTORY, 2) == [5, 4]
