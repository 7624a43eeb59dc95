"""The S2 memory outlives a restart (docs/RECOVERY.md S2, S3, S6; position_reconciliation.py).

The net outside flow cannot explain more than what was not already somebody else's: from the
latest positions read that was not short, what that read showed beyond our trades is taken
out first. That memory used to live only in the running daemon. After a restart somebody
else's position on one of our symbols, seen before the restart and sold while the daemon was
down, read as an outside close of OUR trade, booked for good (and the leg we still hold then
managed by no trade). It is now kept in the state store, one replace per reconciliation that
changed it, and restored before the first reconciliation uses it; an unreadable or malformed
record is not believed (WARNING, no memory: the window's net flow alone decides, as before).

The real ``Reconciler`` over the fakes of tests/unit/test_reconciliation.py, with a real
``StateStore`` on a file reopened for the restart. Simulated clock only.
"""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Mapping

import pytest

from clock import SimulatedClock
from persistence import KNOWN_POSITION_COUNTER, StateStore, StoreError, StoreWriteError
from tests.unit.test_reconciliation import (
    BUY,
    SELL,
    SYM_C,
    SYM_P,
    T0,
    Harness,
    harness,
    long_trade,
    position,
    snapshot,
    start,
)

WINDOW = T0 - 600        # long_trade opened then


def fill(side: int, qty: float, price: float, at: float, order_id: int, symbol: str = SYM_C) -> dict:
    """A trade-history row no order of ours made."""
    return {"symbol": symbol, "orderId": order_id, "tradeSide": side, "qty": qty, "price": price,
            "time": int(at * 1000)}


class CountingStore:
    """``KnownPositionStore`` over a dict, counting the writes."""

    def __init__(self, known: Mapping[str, tuple[float, float]] | None = None) -> None:
        self.known = dict(known or {})
        self.saves: list[dict[str, tuple[float, float]]] = []
        self.fail_saves = 0

    def save_known_positions(self, known: Mapping[str, tuple[float, float]]) -> None:
        if self.fail_saves:
            self.fail_saves -= 1
            raise StoreWriteError("save_known_positions: disk I/O error")
        self.known = dict(known)
        self.saves.append(dict(known))

    def load_known_positions(self) -> dict[str, tuple[float, float]]:
        return dict(self.known)


class BrokenStore(CountingStore):
    """A store whose memory cannot be read."""

    def load_known_positions(self) -> dict[str, tuple[float, float]]:
        raise StoreError("state/trader.db: the known positions cannot be read: disk I/O error")


def life(store: object, *, trades_qty: float = 0.02, after: float = 0.0) -> Harness:
    """One daemon life's reconciler (a fresh harness), its memory kept in ``store``; its clock
    ``after`` seconds past T0."""
    h = harness([long_trade(1, trades_qty)])
    h.clock.advance(after)
    h.reconciler.positions.keep_known_in(store)
    return h


def periodic(h: Harness, *positions, after: float = 60.0):
    h.clock.advance(after)
    return h.reconciler.periodic(snapshot(*positions, at=h.clock.now()))


def reopen(path: Path, store: StateStore) -> StateStore:
    """The restart: the file closed as a crash leaves it (every write committed) and opened again."""
    store.close()
    again, quarantined = StateStore.open(path, SimulatedClock(start=T0, speed=0))
    assert quarantined is None
    return again


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "trader.db"


@pytest.fixture
def store(db: Path):
    opened, _quarantined = StateStore.open(db, SimulatedClock(start=T0, speed=0))
    yield opened
    if not opened.closed:
        opened.close()


# ---------------------------------------------------------------------------------------------
# Across a restart
# ---------------------------------------------------------------------------------------------


def test_an_outside_position_seen_before_a_restart_and_sold_while_down_is_no_close_of_ours(db, store):
    """Somebody else bought 0.01 of our call before our trade opened (outside the window); the
    reads showed it beyond ours (S2). The daemon stops; they sell it; the restart reads flat (a
    maintenance answer). The window's net flow alone says 0.01 was sold: without the memory
    that books 0.01 of OUR trade as closed outside. With it, nothing is booked: a suspect read."""
    first = life(store)
    first.client.fills = [fill(BUY, 0.01, 300.0, WINDOW - 3600, 701)]
    start(first, snapshot(position(SYM_C, 0.03)))
    periodic(first, position(SYM_C, 0.03))
    assert first.reconciler.positions.known_positions() == {SYM_C: (T0 + 60, pytest.approx(0.01))}

    store = reopen(db, store)
    second = life(store, after=1800)
    second.client.fills = [fill(BUY, 0.01, 300.0, WINDOW - 3600, 701),
                           fill(SELL, 0.01, 310.0, T0 + 600, 702)]          # theirs, while we were down

    start(second, snapshot(at=second.clock.now()))                           # flat

    assert second.lifecycle.external == []
    assert second.reconciler.last_report.suspect == [SYM_C]
    assert second.alerts.kinds("CRITICAL") == ["suspect_positions_read"]
    report = periodic(second, position(SYM_C, 0.02))                         # ours shows again
    assert report.suspect == [] and second.lifecycle.external == []
    store.close()


def test_after_a_restart_a_genuine_outside_close_beyond_what_was_theirs_is_still_booked(db, store):
    """The memory takes out what was theirs first, no more: their 0.01 and 0.01 of ours sold
    while the daemon was down, the restart reads 0.01: 0.01 of ours is booked, priced from the
    newest outside sell."""
    first = life(store)
    first.client.fills = [fill(BUY, 0.01, 300.0, WINDOW - 3600, 701)]
    start(first, snapshot(position(SYM_C, 0.03)))

    store = reopen(db, store)
    second = life(store, after=1800)
    second.client.fills = [fill(BUY, 0.01, 300.0, WINDOW - 3600, 701),
                           fill(SELL, 0.01, 310.0, T0 + 600, 702),           # theirs
                           fill(SELL, 0.01, 330.0, T0 + 900, 703)]           # ours, by hand
    start(second, snapshot(position(SYM_C, 0.01), at=second.clock.now()))

    assert second.lifecycle.external == [("T000000001", 0, 0.01, 330.0)]
    assert second.reconciler.last_report.suspect == []
    store.close()


def test_the_memory_is_restored_equal_to_what_was_saved(db, store):
    first = life(store)
    start(first, snapshot(position(SYM_C, 0.03), position(SYM_P, -0.05)))   # S2 on one, theirs on the other
    saved = first.reconciler.positions.known_positions()
    assert saved == {SYM_C: (T0, pytest.approx(0.01)), SYM_P: (T0, pytest.approx(-0.05))}

    store = reopen(db, store)
    restored = store.load_known_positions()
    assert restored == {symbol: (at, pytest.approx(beyond, abs=1e-9)) for symbol, (at, beyond) in saved.items()}
    second = life(store, after=600)
    assert second.reconciler.positions.known_positions() == restored
    store.close()


def test_the_memory_is_replaced_not_appended_and_forgets_a_symbol_nobody_holds(store):
    h = life(store)
    start(h, snapshot(position(SYM_C, 0.03), position(SYM_P, 0.01)))
    for _minute in range(5):
        periodic(h, position(SYM_C, 0.03), position(SYM_P, 0.01))
    periodic(h, position(SYM_C, 0.02))                                     # nothing on SYM_P either side

    assert store.load_known_positions() == {SYM_C: (h.clock.now(), pytest.approx(0.0))}
    rows = store._read("SELECT COUNT(*) FROM counters WHERE name LIKE ?", (f"{KNOWN_POSITION_COUNTER}:%",))
    assert rows == [(2,)]                                                    # one symbol: its two values


# ---------------------------------------------------------------------------------------------
# Writes: one per reconciliation that changed the memory, none otherwise
# ---------------------------------------------------------------------------------------------


def test_one_write_per_reconciliation_that_changed_the_memory_and_none_when_unchanged():
    kept = CountingStore()
    h = life(kept)
    start(h, snapshot(position(SYM_C, 0.03), position(SYM_P, 0.01)))        # two symbols: one write
    assert len(kept.saves) == 1

    h.reconciler.periodic(snapshot(position(SYM_C, 0.03), position(SYM_P, 0.01), at=T0))   # the same read
    assert len(kept.saves) == 1

    periodic(h, position(SYM_C, 0.03), position(SYM_P, 0.01))               # a newer read: the times move
    assert len(kept.saves) == 2 and kept.known == h.reconciler.positions.known_positions()


def test_nothing_held_and_nothing_shown_writes_nothing():
    kept = CountingStore()
    h = harness([])
    h.reconciler.positions.keep_known_in(kept)
    start(h, snapshot())
    periodic(h)

    assert kept.saves == []


def test_a_restored_memory_unchanged_by_a_deferred_read_is_not_written_again():
    kept = CountingStore({SYM_C: (T0 - 300, 0.01)})
    h = life(kept)
    start(h, snapshot(position(SYM_C, 0.01)))                   # short, and explained by nothing: S6

    assert h.reconciler.positions.known_positions() == {SYM_C: (T0 - 300, 0.01)}
    assert kept.saves == []


def test_a_failed_write_changes_nothing_of_the_reconciliation_and_is_tried_again(caplog):
    kept = CountingStore()
    kept.fail_saves = 1
    h = life(kept)
    with caplog.at_level(logging.WARNING, logger="position_reconciliation"):
        start(h, snapshot(position(SYM_C, 0.03)))

    assert h.reconciler.last_report is not None and kept.saves == []
    assert "tried again at the next reconciliation" in caplog.text
    h.reconciler.periodic(snapshot(position(SYM_C, 0.03), at=T0))          # memory unchanged, store behind
    assert kept.saves == [{SYM_C: (T0, pytest.approx(0.01))}]


# ---------------------------------------------------------------------------------------------
# A memory that cannot be believed is not used
# ---------------------------------------------------------------------------------------------


def test_a_malformed_record_is_a_warning_and_the_start_goes_on_without_memory(db, store, caplog):
    store.save_known_positions({SYM_C: (T0 - 300, 0.01)})
    store.close()
    raw = sqlite3.connect(db)
    try:
        raw.execute("UPDATE counters SET value = 'garbage' WHERE name = ?",
                    (f"{KNOWN_POSITION_COUNTER}:{SYM_C}:beyond_nano",))
        raw.commit()
    finally:
        raw.close()
    store, _quarantined = StateStore.open(db, SimulatedClock(start=T0, speed=0))
    with pytest.raises(StoreError):
        store.load_known_positions()

    with caplog.at_level(logging.WARNING, logger="position_reconciliation"):
        h = life(store)
    assert "cannot be read" in caplog.text and h.reconciler.positions.known_positions() == {}
    h.client.fills = [fill(SELL, 0.01, 310.0, T0 - 100, 702)]
    start(h, snapshot(position(SYM_C, 0.01)))                                # as before the memory was kept
    assert h.lifecycle.external == [("T000000001", 0, 0.01, 310.0)]
    assert store.load_known_positions() == {}                                # the malformed rows replaced
    store.close()


def test_a_symbol_with_one_of_its_two_rows_is_malformed(store):
    store.raise_counter_to(f"{KNOWN_POSITION_COUNTER}:{SYM_C}:at_us", int(T0 * 1_000_000))

    with pytest.raises(StoreError, match="malformed"):
        store.load_known_positions()


def test_a_memory_that_cannot_be_read_is_a_warning_and_no_memory(caplog):
    with caplog.at_level(logging.WARNING, logger="position_reconciliation"):
        h = life(BrokenStore())

    assert "cannot be read" in caplog.text
    assert h.reconciler.positions.known_positions() == {}
    start(h, snapshot(position(SYM_C, 0.02)))
    assert h.reconciler.started


def test_a_store_without_the_memory_api_is_refused_at_wiring():
    with pytest.raises(TypeError, match="KnownPositionStore"):
        harness([]).reconciler.positions.keep_known_in(object())      # type: ignore[arg-type]


def test_a_value_that_is_not_finite_is_never_written(store):
    with pytest.raises(ValueError):
        store.save_known_positions({SYM_C: (T0, float("nan"))})
    assert store.load_known_positions() == {}

