"""After a lost or quarantined store the trade sequence never restarts below what was sent (audit P3).

docs/RECOVERY.md rows L2, Q3. Before, the sequence was re-seeded from the exchange's
order history alone, which reaches back 89 days: a store whose orders were older restarted
at 1 and built clientOrderIds it had already sent, although the quarantined file it had just
moved aside still held the counter.
Now (a) the quarantined file's counter is read, read-only, and the fresh store continues
1000 above it; (b) a lost memory whose history shows nothing of ours starts at a floor the
clock alone gives (``clock_trade_seq_floor``), which only grows with time and always fits
the 9-digit trade field of a clientOrderId. The first start of a new state directory
(nothing lost) still numbers its trades from 1.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from clock import SimulatedClock
from order_ledger import TRADE_SEQ_MAX, Intent, build_client_order_id
from persistence import QUARANTINE_SEQ_MARGIN, TRADE_SEQ_COUNTER, StateStore, salvage_counter
from prefix_ownership import (
    SEQ_CLOCK_EPOCH,
    SEQ_CLOCK_HEADROOM,
    SEQ_CLOCK_PER_DAY,
    SEQ_RESEED_MARGIN,
    clock_trade_seq_floor,
)
from reconciliation import Reconciler
from tests.unit.test_reconciliation import (
    SYM_C,
    T0,
    FakeAlerts,
    FakeClient,
    FakeLedger,
    FakeLifecycle,
    FakeRunner,
    FakeStore,
    snapshot,
)

DAY = 86_400.0


def reconcile_start(store: object, clock: SimulatedClock, *, quarantined: Path | None = None,
                    client: FakeClient | None = None, new_state_dir: bool = False) -> Reconciler:
    reconciler = Reconciler(client=client or FakeClient(), ledger=FakeLedger(), lifecycle=FakeLifecycle([]),
                            store=store, clock=clock, alerts=FakeAlerts(), journal=None, quarantined=quarantined)
    if new_state_dir:
        reconciler.note_new_state_dir()
    reconciler.attach_runners([FakeRunner("s1")])
    reconciler(snapshot(at=clock.now()))
    assert reconciler.started
    return reconciler


def three_trades_long_ago(path: Path, clock: SimulatedClock) -> list[int]:
    """Trades 1 to 3, 120 days before T0 (out of the exchange's 89-day history since)."""
    store, quarantined = StateStore.open(path, clock)
    used = [store.next_trade_seq() for _ in range(3)]
    assert used == [1, 2, 3] and quarantined is None
    store.close()
    return used


def overwrite(path: Path, offset: int, length: int = 4096) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\x00" * length)


# ---------------------------------------------------------------------------------------------
# The finding
# ---------------------------------------------------------------------------------------------


def test_row_q3_a_quarantine_with_nothing_of_ours_in_89_days_never_restarts_the_sequence_at_one(tmp_path):
    clock = SimulatedClock(start=T0 - 120 * DAY, speed=0)
    path = tmp_path / "trader.db"
    used = three_trades_long_ago(path, clock)
    clock.advance(120 * DAY)                                 # idle since; then the header is destroyed
    overwrite(path, 0)
    for sidecar in (tmp_path / "trader.db-wal", tmp_path / "trader.db-shm"):
        sidecar.unlink(missing_ok=True)

    store, quarantined = StateStore.open(path, clock)
    assert quarantined is not None and store.counter(TRADE_SEQ_COUNTER) == 0   # the file cannot be read at all
    reconcile_start(store, clock, quarantined=quarantined)

    seq = store.next_trade_seq()
    assert seq > max(used) and seq == clock_trade_seq_floor(T0) + 1
    build_client_order_id(101, seq, 99, Intent.KILL_REQUOTE, 999)     # fits the id


def test_row_q3_a_quarantined_file_that_still_reads_gives_its_counter_plus_the_margin(tmp_path):
    clock = SimulatedClock(start=T0, speed=0)
    path = tmp_path / "trader.db"
    store = StateStore(path, clock=clock)
    store.raise_counter_to(TRADE_SEQ_COUNTER, 4242)
    for number in range(400):                                # pages enough to damage one far from the counters
        store.append_event("filler", {"n": number, "text": "x" * 400}, T0)
    store.close()
    overwrite(path, path.stat().st_size - 3 * 4096)          # a page near the end: integrity check fails
    before = sorted(p.name for p in tmp_path.iterdir())

    store, quarantined = StateStore.open(path, clock)

    assert quarantined is not None
    assert store.counter(TRADE_SEQ_COUNTER) == 4242 + QUARANTINE_SEQ_MARGIN
    assert salvage_counter(quarantined, TRADE_SEQ_COUNTER) == 4242
    moved = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("trader.db.corrupt"))
    assert moved == [quarantined.name]                        # no sidecar left beside the evidence
    assert len(before) == 1


def test_salvage_of_a_file_that_is_no_database_gives_nothing(tmp_path):
    junk = tmp_path / "trader.db.corrupt.x"
    junk.write_bytes(b"\x00" * 8192)
    assert salvage_counter(junk, TRADE_SEQ_COUNTER) is None
    assert salvage_counter(tmp_path / "missing", TRADE_SEQ_COUNTER) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [junk.name]


# ---------------------------------------------------------------------------------------------
# Row L2: a missing store
# ---------------------------------------------------------------------------------------------


def test_row_l2_a_missing_store_with_nothing_in_the_history_starts_at_the_clock_floor():
    clock = SimulatedClock(start=T0, speed=0)
    store = FakeStore(empty=True)                            # lost; the directory's exchange record is still there

    reconcile_start(store, clock)

    assert store.counters[TRADE_SEQ_COUNTER] == clock_trade_seq_floor(T0) > 0


def test_row_l2_the_first_start_of_a_new_state_directory_also_numbers_from_the_clock_floor():
    """Nothing tells a new state directory from one deleted whole (its exchange record goes with
    it); an earlier install's orders older than the 89-day history must never see their ids again
    (audit of 2026-12-07: from 1, seq 1's clientOrderIds were sent again)."""
    clock = SimulatedClock(start=T0, speed=0)
    store = FakeStore(empty=True)

    reconcile_start(store, clock, new_state_dir=True)

    assert store.counters[TRADE_SEQ_COUNTER] == clock_trade_seq_floor(T0) > 0


def test_row_l2_orders_of_ours_in_the_history_reseed_from_them_as_before():
    clock = SimulatedClock(start=T0, speed=0)
    store = FakeStore(empty=True)
    client = FakeClient()
    client.history_pages = [{"list": [{"orderId": 1, "clientOrderId": build_client_order_id(101, 42, 0, 1, 1),
                                       "symbol": SYM_C, "createTime": (T0 - 40 * DAY) * 1000, "state": 1}],
                             "hasNext": False}]

    reconcile_start(store, clock, client=client)

    assert store.counters[TRADE_SEQ_COUNTER] == 42 + SEQ_RESEED_MARGIN


def test_a_store_that_remembers_is_never_moved_by_the_clock():
    clock = SimulatedClock(start=T0, speed=0)
    store = FakeStore(counters={TRADE_SEQ_COUNTER: 7, "order_history_checked_ms": int((T0 - 60) * 1000)})

    reconcile_start(store, clock)

    assert store.counters[TRADE_SEQ_COUNTER] == 7


# ---------------------------------------------------------------------------------------------
# The floor's arithmetic
# ---------------------------------------------------------------------------------------------


def test_the_clock_floor_grows_a_day_at_a_time_and_is_zero_before_its_epoch():
    assert clock_trade_seq_floor(SEQ_CLOCK_EPOCH - 1) == 0 == clock_trade_seq_floor(0)
    assert clock_trade_seq_floor(SEQ_CLOCK_EPOCH + DAY - 1) == 0
    assert clock_trade_seq_floor(SEQ_CLOCK_EPOCH + DAY) == SEQ_CLOCK_PER_DAY
    assert clock_trade_seq_floor(T0) == 792 * SEQ_CLOCK_PER_DAY                # 2026-03-03: day 792
    assert clock_trade_seq_floor(T0 + 89 * DAY) - clock_trade_seq_floor(T0) == 89 * SEQ_CLOCK_PER_DAY


@pytest.mark.parametrize("years", [1, 50, 269, 270, 1000])
def test_the_clock_floor_always_leaves_room_in_the_nine_digit_trade_field(years):
    floor = clock_trade_seq_floor(SEQ_CLOCK_EPOCH + years * 365.25 * DAY)
    assert floor + SEQ_CLOCK_HEADROOM <= TRADE_SEQ_MAX
    build_client_order_id(899, floor + SEQ_CLOCK_HEADROOM, 99, 8, 999)
