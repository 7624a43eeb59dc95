"""An order history read that stops before the start of its window is not a check of it (RECOVERY.md row L4).

``PrefixOwnership`` reads our order history newest first, at most ``HISTORY_MAX_PAGES``
pages. Before, a read that ran out of pages (or met a page saying more follow with no
cursor to follow) ended silently and both callers took the whole window as checked: the
trade sequence was re-seeded from a part of it, unknown orders were decided from a part of
it, and the check time moved past the unread, oldest part for good. Not having read a part
is no evidence that no order of ours is there, so now such a read raises CRITICAL
``order_history_incomplete`` naming the unread part, pauses every strategy and re-seeds the
trade sequence with the margin, at a start and while running. The reconciler and its fakes
are those of tests/unit/test_reconciliation.py; ``HISTORY_MAX_PAGES`` is made 2 so a
truncated read is two pages.
"""
from __future__ import annotations

import pytest

import prefix_ownership
from clock import iso_utc
from prefix_ownership import HISTORY_INCOMPLETE_REASON, HISTORY_OVERLAP_SECONDS, SEQ_RESEED_MARGIN
from tests.unit.test_reconciliation import (
    SYM_C,
    T0,
    FakeLedger,
    FakeOrder,
    FakeStore,
    Harness,
    harness,
    ours,
    position,
    snapshot,
    start,
)

OTHER_PREFIX = 202000000009001001       # somebody else's order (prefix 202)
INCOMPLETE = "order_history_incomplete"


@pytest.fixture
def two_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read takes at most two pages, so a window of three is truncated."""
    monkeypatch.setattr(prefix_ownership, "HISTORY_MAX_PAGES", 2)


def row(order_id: int | None, coid: int, at: float) -> dict:
    """A history row created at ``at`` (epoch seconds); ``order_id`` is the next page's cursor."""
    item = {"clientOrderId": coid, "symbol": SYM_C, "createTime": at * 1000, "state": 1}
    if order_id is not None:
        item["orderId"] = order_id
    return item


def page(*rows: dict, more: bool) -> dict:
    return {"list": list(rows), "hasNext": more}


def checked_store(*, seq: int = 3, checked_at: float = T0 - 3600) -> FakeStore:
    """A store with a history: its trade sequence and the time of its last history check."""
    return FakeStore(counters={"trade_seq": seq, "order_history_checked_ms": int(checked_at * 1000)})


def known(seq: int, order_id: int) -> FakeOrder:
    """An order of ours the ledger holds, final (so nothing else of the reconciler touches it)."""
    return FakeOrder(ours(seq), SYM_C, order_id=order_id, live=False)


def incomplete_alerts(h: Harness) -> list[tuple[dict, str]]:
    return [(detail, message) for (level, kind, detail), message in zip(h.alerts.sent, h.alerts.messages)
            if kind == INCOMPLETE and level == "CRITICAL"]


# ---------------------------------------------------------------------------------------------
# At start-up
# ---------------------------------------------------------------------------------------------


def test_row_l4_a_truncated_read_at_start_alerts_pauses_every_strategy_and_reseeds_with_the_margin(two_pages):
    h = harness([], ledger=FakeLedger([known(7, 20)]), runners=["s1", "s2"], store=checked_store())
    h.client.history_pages = [
        page(row(20, ours(7), T0 - 60), more=True),
        page(row(10, OTHER_PREFIX, T0 - 1800), more=True),       # the 2nd and last page allowed: more follow
        page(row(5, ours(99), T0 - 3000), more=False),           # never read
    ]

    start(h, snapshot())

    assert len(h.client.history_calls) == 2
    assert h.alerts.kinds("CRITICAL") == [INCOMPLETE]
    assert all(runner.is_paused for runner in h.runners.values())
    assert h.runners["s1"].pause_reason == HISTORY_INCOMPLETE_REASON
    assert h.reconciler.last_report.paused == ["s1", "s2"]
    assert h.store.counters["trade_seq"] == 7 + SEQ_RESEED_MARGIN          # as if unknown orders were seen
    assert h.store.counters["order_history_checked_ms"] == int(T0 * 1000)   # moved on, with alert and pause
    [(detail, message)] = incomplete_alerts(h)
    since = T0 - 3600 - HISTORY_OVERLAP_SECONDS
    assert detail["source"] == "start-up" and detail["pages"] == 2 and detail["rows_read"] == 2
    assert (detail["since"], detail["until"]) == (iso_utc(since), iso_utc(T0))
    assert (detail["unread_from"], detail["unread_to"]) == (iso_utc(since), iso_utc(T0 - 1800))
    assert iso_utc(since) in message and iso_utc(T0 - 1800) in message
    assert "101" in message and "by hand" in message and "python main.py resume" in message


def test_row_l4_a_truncated_read_still_decides_what_it_read(two_pages):
    h = harness([], ledger=FakeLedger([known(7, 20)]), store=checked_store(seq=10))
    h.client.history_pages = [
        page(row(20, ours(7), T0 - 60), row(15, ours(12), T0 - 120), more=True),   # ours(12): unknown, beyond
        page(row(10, OTHER_PREFIX, T0 - 1800), more=True),
    ]

    start(h, snapshot())

    assert h.alerts.kinds("CRITICAL") == ["store_behind", INCOMPLETE]
    assert h.reconciler.last_report.foreign_orders == [ours(12)]
    assert h.store.counters["trade_seq"] == 12 + SEQ_RESEED_MARGIN


def test_row_l2_a_missing_store_with_nothing_of_ours_read_but_a_truncated_read_starts_paused(two_pages):
    h = harness([], store=FakeStore(empty=True))
    h.reconciler.note_new_state_dir()
    h.client.history_pages = [page(row(20, OTHER_PREFIX, T0 - 60), more=True),
                              page(row(10, OTHER_PREFIX, T0 - 86400), more=True)]

    start(h, snapshot(position(SYM_C, 0.01)))

    assert h.alerts.kinds("CRITICAL") == [INCOMPLETE]         # not a "normal start": the rest was not read
    assert h.runners["s1"].is_paused


@pytest.mark.parametrize("second_page", [
    page(more=True),                                           # no row: no cursor
    page(row(None, OTHER_PREFIX, T0 - 1800), more=True),       # a last row without an orderId: no cursor
], ids=["empty-page", "row-without-order-id"])
def test_row_l4_a_page_saying_more_follow_without_a_cursor_is_not_the_end(second_page):
    h = harness([], ledger=FakeLedger([known(7, 20)]), store=checked_store())
    h.client.history_pages = [page(row(20, ours(7), T0 - 60), more=True), second_page]

    start(h, snapshot())

    assert len(h.client.history_calls) == 2
    assert h.alerts.kinds("CRITICAL") == [INCOMPLETE]
    assert "no cursor" in incomplete_alerts(h)[0][0]["why"]
    assert h.runners["s1"].is_paused and h.store.counters["trade_seq"] == 7 + SEQ_RESEED_MARGIN


def test_row_l4_a_cursor_that_does_not_move_is_not_the_end():
    h = harness([], ledger=FakeLedger([known(7, 50)]), store=checked_store())
    h.client.history_pages = [page(row(50, ours(7), T0 - 60), more=True),
                              page(row(50, ours(7), T0 - 60), more=True)]      # the same page again

    start(h, snapshot())

    assert [call.get("fromId") for call in h.client.history_calls] == [None, 50]   # not read a 3rd time
    assert h.alerts.kinds("CRITICAL") == [INCOMPLETE]
    assert "does not move" in incomplete_alerts(h)[0][0]["why"]
    assert h.runners["s1"].is_paused


def test_row_l4_a_complete_read_of_every_page_allowed_raises_nothing_and_pauses_nothing(two_pages):
    h = harness([], ledger=FakeLedger([known(7, 20), known(5, 10)]), runners=["s1", "s2"],
                store=checked_store())
    h.client.history_pages = [page(row(20, ours(7), T0 - 60), more=True),
                              page(row(10, ours(5), T0 - 1800), more=False),      # the last page allowed, the end
                              page(more=False)]                                   # the first running read

    start(h, snapshot())
    h.clock.advance(60)
    running = h.reconciler.periodic(snapshot())

    assert [call.get("fromId") for call in h.client.history_calls] == [None, 20, None]
    assert h.alerts.sent == [] and not any(runner.is_paused for runner in h.runners.values())
    assert h.reconciler.last_report is running and running.paused == []
    assert h.store.counters["trade_seq"] == 7                                   # no margin: nothing unknown
    assert h.store.counters["order_history_checked_ms"] == int((T0 + 60) * 1000)


# ---------------------------------------------------------------------------------------------
# While running
# ---------------------------------------------------------------------------------------------


def running_harness(runners: list[str]) -> Harness:
    """Started normally (one complete page) with a store checked a minute ago."""
    h = harness([], ledger=FakeLedger([known(40, 30)]), runners=runners, store=checked_store(checked_at=T0 - 60))
    start(h, snapshot())
    assert h.alerts.sent == [] and len(h.client.history_calls) == 1
    return h


def truncated_minute(h: Harness, newest: float) -> None:
    """The next running read: two pages, both saying more follow."""
    h.client.history_pages += [page(row(30, ours(40), newest), more=True),
                               page(row(29, OTHER_PREFIX, newest - 10), more=True)]


def test_row_l4_a_truncated_read_while_running_alerts_pauses_and_reseeds_with_the_margin(two_pages):
    h = running_harness(["s1", "s2"])
    h.clock.advance(60)
    truncated_minute(h, T0 + 30)

    report = h.reconciler.periodic(snapshot())

    assert len(h.client.history_calls) == 3
    assert h.alerts.kinds("CRITICAL") == [INCOMPLETE]
    [(detail, _message)] = incomplete_alerts(h)
    assert detail["source"] == "running" and detail["pages"] == 2
    assert detail["unread_from"] == iso_utc(T0 - HISTORY_OVERLAP_SECONDS) and detail["unread_to"] == iso_utc(T0 + 20)
    assert report.paused == ["s1", "s2"] and all(runner.is_paused for runner in h.runners.values())
    assert h.store.counters["trade_seq"] == 40 + SEQ_RESEED_MARGIN
    assert h.store.counters["order_history_checked_ms"] == int((T0 + 60) * 1000)


def test_row_l4_while_running_the_alert_is_once_per_episode_and_every_unread_window_is_named(two_pages):
    h = running_harness(["s1"])
    h.clock.advance(60)
    truncated_minute(h, T0 + 30)
    h.reconciler.periodic(snapshot())                          # alerted, paused
    h.clock.advance(60)
    truncated_minute(h, T0 + 90)

    again = h.reconciler.periodic(snapshot())

    assert h.alerts.kinds("CRITICAL") == [INCOMPLETE]            # still paused: logged, not alerted again
    assert again.paused == [] and h.runners["s1"].is_paused
    assert h.store.counters["order_history_checked_ms"] == int((T0 + 120) * 1000)   # no re-read of the pages

    h.clock.advance(60)
    h.client.history_pages.append(page(more=False))             # read to the end again
    h.reconciler.periodic(snapshot())

    assert h.alerts.kinds("CRITICAL") == [INCOMPLETE, INCOMPLETE]   # the episode's unnamed window, named
    closing = incomplete_alerts(h)[1][0]
    assert closing["earlier_unread_windows"] == 1 and closing["unread_to"] == iso_utc(T0 + 80)
    assert h.runners["s1"].is_paused                              # only an operator's resume lifts it


def test_row_l4_a_truncated_read_after_a_resume_pauses_and_alerts_again(two_pages):
    h = running_harness(["s1"])
    h.clock.advance(60)
    truncated_minute(h, T0 + 30)
    h.reconciler.periodic(snapshot())
    h.runners["s1"].is_paused = False                           # the operator resumed
    h.clock.advance(60)
    truncated_minute(h, T0 + 90)

    report = h.reconciler.periodic(snapshot())

    assert h.alerts.kinds("CRITICAL") == [INCOMPLETE, INCOMPLETE]
    assert report.paused == ["s1"] and h.runners["s1"].is_paused
