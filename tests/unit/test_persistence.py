"""StateStore: durable documents, exact ids, pragmas, migrations and quarantine."""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from clock import SimulatedClock
from persistence import (
    MIGRATIONS,
    PAGE_CACHE_KIB,
    SCHEMA_VERSION,
    StateStore,
    StoreError,
    StoreVersionError,
    StoreWriteError,
    quarantine_name,
)

# 2026-03-14T15:09:26Z
START = 1_773_500_966.0
STAMP = "20260314T150926Z"
BIG_COID = 101_000_000_042_010_003  # 18 digits: beyond float precision (2**53 ~ 9.0e15)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "trader.db"


@pytest.fixture
def store(db_path: Path, clock: SimulatedClock):
    opened, quarantined = StateStore.open(db_path, clock)
    assert quarantined is None
    yield opened
    opened.close()


def _reopen(db_path: Path, clock: SimulatedClock) -> StateStore:
    reopened, quarantined = StateStore.open(db_path, clock)
    assert quarantined is None
    return reopened


def _trade(seq: int, state: str = "OPEN", strategy: str = "short_strangle") -> dict:
    return {
        "id": f"T{seq:09d}",
        "seq": seq,
        "strategy": strategy,
        "state": state,
        "legs": [
            {"index": 0, "symbol": "BTCUSD-28MAR26-90000-C", "side": 2, "qty": 0.1, "open_vwap": 0.0123},
            {"index": 1, "symbol": "BTCUSD-28MAR26-70000-P", "side": 2, "qty": 0.1, "open_vwap": 0.0098},
        ],
        "realized_pnl": -1.25,
        "metadata": {"note": "ünïcödé", "nested": {"a": [1, 2, 3]}},
    }


def _order(coid: int, trade_id: str = "T000000042", status: str = "LIVE", order_id: int | None = None) -> dict:
    return {
        "client_order_id": coid,
        "trade_id": trade_id,
        "status": status,
        "order_id": order_id,
        "qty": 0.1,
        "price": 1234.5,
        "supersedes": None,
    }


# ------------------------------------------------------------------ set-up and pragmas


def test_open_creates_missing_directory_and_schema(db_path: Path, clock: SimulatedClock) -> None:
    assert not db_path.parent.exists()
    store, quarantined = StateStore.open(db_path, clock)
    try:
        assert quarantined is None
        assert db_path.is_file()
        assert store.schema_version() == SCHEMA_VERSION == 2
        tables = {row[0] for row in store._read("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"schema_version", "trades", "orders", "runner_state", "events", "counters", "commands"} <= tables
    finally:
        store.close()


def test_file_store_uses_wal_and_full_synchronous(store: StateStore) -> None:
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL


def test_file_store_caps_its_page_cache_so_memory_does_not_grow_with_the_file(store: StateStore) -> None:
    # SQLite's default cache (2 MiB) would fill as the store grows over weeks (issue 11).
    assert store.pragma("cache_size") == -PAGE_CACHE_KIB
    assert PAGE_CACHE_KIB < 2000


def test_wal_mode_is_recorded_in_the_file(db_path: Path, store: StateStore) -> None:
    store.save_trade(_trade(1))
    store.close()
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_memory_store_works_without_wal() -> None:
    with StateStore(":memory:") as store:
        assert store.pragma("journal_mode") == "memory"
        assert store.pragma("synchronous") == 2
        store.save_trade(_trade(7))
        assert store.load_trades() == [_trade(7)]


def test_pragma_rejects_injection(store: StateStore) -> None:
    with pytest.raises(ValueError):
        store.pragma("journal_mode; DROP TABLE trades")


def test_reopen_does_not_rerun_migrations(db_path: Path, store: StateStore, clock: SimulatedClock) -> None:
    store.save_trade(_trade(1))
    store.close()
    with _reopen(db_path, clock) as again:
        assert again.schema_version() == SCHEMA_VERSION
        assert [t["id"] for t in again.load_trades()] == ["T000000001"]
        versions = again._read("SELECT version FROM schema_version")
        assert versions == [(SCHEMA_VERSION,)]


def test_migrate_applies_later_steps_in_order(store: StateStore) -> None:
    later = MIGRATIONS + (
        (SCHEMA_VERSION + 1, ("CREATE TABLE later (id INTEGER PRIMARY KEY, doc TEXT)",)),
        (SCHEMA_VERSION + 2, ("ALTER TABLE later ADD COLUMN done INTEGER DEFAULT 0",)),
    )
    assert store.migrate(later) == SCHEMA_VERSION + 2
    assert store.schema_version() == SCHEMA_VERSION + 2
    columns = [row[1] for row in store._read("PRAGMA table_info(later)")]
    assert columns == ["id", "doc", "done"]


def test_failed_migration_step_rolls_back_to_previous_version(store: StateStore) -> None:
    broken = MIGRATIONS + (
        (SCHEMA_VERSION + 1, ("CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL")),
    )
    with pytest.raises(StoreError):
        store.migrate(broken)
    assert store.schema_version() == SCHEMA_VERSION
    assert store._read("SELECT name FROM sqlite_master WHERE name='half_done'") == []


def test_newer_schema_is_refused_not_quarantined(db_path: Path, store: StateStore, clock: SimulatedClock) -> None:
    store.migrate(MIGRATIONS + ((SCHEMA_VERSION + 1, ("CREATE TABLE future (x INTEGER)",)),))
    store.close()
    with pytest.raises(StoreVersionError):
        StateStore.open(db_path, clock)
    assert db_path.exists()
    assert list(db_path.parent.glob("*.corrupt.*")) == []


# ------------------------------------------------------------------ documents


def test_trade_round_trip_and_update(store: StateStore, clock: SimulatedClock) -> None:
    first = _trade(1, state="OPENING")
    store.save_trade(first)
    assert store.load_trades() == [first]
    assert store.load_trade("T000000001") == first

    clock.advance(5)
    updated = dict(first, state="OPEN", opened_at=START + 5)
    store.save_trade(updated)
    assert store.load_trades() == [updated]
    row = store._read("SELECT state, strategy, updated_at FROM trades WHERE id='T000000001'")
    assert row == [("OPEN", "short_strangle", START + 5)]


def test_trades_load_in_sequence_order_and_filter_by_strategy(store: StateStore) -> None:
    for seq, strategy in ((10, "b"), (2, "a"), (1, "b")):
        store.save_trade(_trade(seq, strategy=strategy))
    assert [t["id"] for t in store.load_trades()] == ["T000000001", "T000000002", "T000000010"]
    assert [t["id"] for t in store.load_trades(strategy="b")] == ["T000000001", "T000000010"]
    assert store.load_trade("T999999999") is None


def test_trade_without_id_is_refused(store: StateStore) -> None:
    with pytest.raises(ValueError):
        store.save_trade({"state": "OPEN"})
    assert store.load_trades() == []


def test_order_round_trip_keeps_18_digit_ids_exact(db_path: Path, store: StateStore, clock: SimulatedClock) -> None:
    exchange_id = 2_023_456_789_012_345_678
    record = _order(BIG_COID, order_id=exchange_id)
    store.save_order(record)
    store.save_order(_order(BIG_COID + 1, status="FILLED"))
    store.close()

    with _reopen(db_path, clock) as again:
        loaded = again.load_orders()
        assert loaded[0] == record
        assert type(loaded[0]["client_order_id"]) is int
        assert loaded[0]["client_order_id"] == BIG_COID
        assert loaded[0]["order_id"] == exchange_id
        assert float(BIG_COID) != BIG_COID  # the test would prove nothing otherwise
        raw = again._read("SELECT client_order_id, typeof(client_order_id) FROM orders ORDER BY 1")
        assert raw[0] == (BIG_COID, "integer")
        assert again.load_order(BIG_COID + 1)["status"] == "FILLED"


def test_order_update_replaces_the_document(store: StateStore) -> None:
    store.save_order(_order(BIG_COID, status="PENDING_SEND"))
    store.save_order(_order(BIG_COID, status="LIVE", order_id=77))
    assert store.load_orders() == [_order(BIG_COID, status="LIVE", order_id=77)]
    assert store._read("SELECT status FROM orders") == [("LIVE",)]


def test_orders_filter_by_trade_and_sort_by_client_order_id(store: StateStore) -> None:
    store.save_order(_order(BIG_COID + 5, trade_id="T000000001"))
    store.save_order(_order(BIG_COID + 1, trade_id="T000000002"))
    store.save_order(_order(BIG_COID + 2, trade_id="T000000001"))
    assert [o["client_order_id"] for o in store.load_orders()] == [BIG_COID + 1, BIG_COID + 2, BIG_COID + 5]
    assert [o["client_order_id"] for o in store.load_orders("T000000001")] == [BIG_COID + 2, BIG_COID + 5]


@pytest.mark.parametrize("bad", [float(BIG_COID), "101000000042010003", True, None, 2**63])
def test_order_id_must_be_an_exact_int64(store: StateStore, bad: object) -> None:
    with pytest.raises(ValueError):
        store.save_order(_order(BIG_COID) | {"client_order_id": bad})
    assert store.load_orders() == []


def test_runner_state_round_trip(db_path: Path, store: StateStore, clock: SimulatedClock) -> None:
    assert store.load_runner_state("short_strangle") is None
    state = {"paused": True, "pause_reason": "external_close", "day_opened": 2, "cooldown_anchor": START}
    store.save_runner_state("short_strangle", state)
    store.save_runner_state("iron_condor", {"paused": False})
    store.save_runner_state("short_strangle", state | {"day_opened": 3})
    store.close()
    with _reopen(db_path, clock) as again:
        assert again.load_runner_state("short_strangle") == state | {"day_opened": 3}
        assert again.runner_names() == ["iron_condor", "short_strangle"]


def test_enum_values_are_stored_by_value(store: StateStore) -> None:
    from enum import Enum

    class State(str, Enum):
        OPEN = "OPEN"

    store.save_trade({"id": "T000000003", "state": State.OPEN, "strategy": "s"})
    assert store.load_trade("T000000003")["state"] == "OPEN"
    assert store._read("SELECT state FROM trades") == [("OPEN",)]


def test_unencodable_document_is_a_counted_write_failure(store: StateStore, caplog) -> None:
    with caplog.at_level(logging.CRITICAL, logger="persistence"):
        with pytest.raises(StoreWriteError):
            store.save_trade({"id": "T000000004", "bad": object()})
    assert store.write_errors == 1
    assert "save_trade T000000004" in store.last_write_error
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    assert store.load_trades() == []


def test_write_failure_inside_sqlite_is_rolled_back_and_raised(store: StateStore) -> None:
    store._conn.execute("CREATE TRIGGER no_events BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    with pytest.raises(StoreWriteError, match="disk says no"):
        store.append_event("fill", {"qty": 1}, ts=START)
    assert store.write_errors == 1
    assert store.events() == []
    assert not store._conn.in_transaction


def test_closed_store_refuses_calls(store: StateStore) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError):
        store.load_trades()
    with pytest.raises(StoreError):
        store.save_trade(_trade(1))


# ------------------------------------------------------------------ counters


def test_trade_seq_starts_at_one_and_persists_across_reopen(db_path: Path, store: StateStore, clock: SimulatedClock) -> None:
    assert [store.next_trade_seq() for _ in range(3)] == [1, 2, 3]
    store.close()
    with _reopen(db_path, clock) as again:
        assert again.next_trade_seq() == 4
        assert again.counter("trade_seq") == 4


def test_named_counters_are_independent_and_can_only_be_raised(store: StateStore) -> None:
    assert store.counter("attempt:42:0") == 0
    assert store.next_counter("attempt:42:0") == 1
    assert store.next_counter("attempt:42:1") == 1
    assert store.raise_counter_to("trade_seq", 500) == 500
    assert store.raise_counter_to("trade_seq", 10) == 500
    assert store.next_trade_seq() == 501


def test_counters_are_unique_under_concurrent_threads(store: StateStore) -> None:
    seen: list[int] = []
    seen_lock = threading.Lock()

    def worker() -> None:
        mine = [store.next_trade_seq() for _ in range(25)]
        with seen_lock:
            seen.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(1, 101))


# ------------------------------------------------------------------ events


def test_events_keep_append_order_and_filter_by_kind(db_path: Path, store: StateStore, clock: SimulatedClock) -> None:
    ids = [
        store.append_event("order_sent", {"coid": BIG_COID}, ts=START + 2),
        store.append_event("fill", {"coid": BIG_COID, "qty": 0.05}, ts=START + 1),  # older ts, later append
        store.append_event("order_sent", {"coid": BIG_COID + 1}, ts=START + 3),
        store.append_event("trade_state", {"id": "T000000001", "to": "OPEN"}, ts=START + 4),
    ]
    assert ids == sorted(ids)
    store.close()
    with _reopen(db_path, clock) as again:
        every = again.events()
        assert [e["kind"] for e in every] == ["order_sent", "fill", "order_sent", "trade_state"]
        assert every[1] == {"id": ids[1], "ts": START + 1, "kind": "fill", "payload": {"coid": BIG_COID, "qty": 0.05}}
        sent = again.events("order_sent")
        assert [e["payload"]["coid"] for e in sent] == [BIG_COID, BIG_COID + 1]
        assert [e["kind"] for e in again.events(["fill", "trade_state"])] == ["fill", "trade_state"]
        assert again.events("nothing") == []
        assert again.events([]) == []
        assert [e["id"] for e in again.events(after_id=ids[1])] == ids[2:]
        assert [e["id"] for e in again.events(limit=2)] == ids[:2]


def test_events_are_append_only_ids_never_reused(store: StateStore) -> None:
    first = store.append_event("a", {}, ts=START)
    store._conn.execute("DELETE FROM events")  # even if rows vanish, AUTOINCREMENT moves on
    second = store.append_event("a", {}, ts=START)
    assert second > first


# ------------------------------------------------------------------ quarantine


def _assert_fresh_store_works(store: StateStore) -> None:
    assert store.integrity_problems() == []
    assert store.load_trades() == []
    assert store.next_trade_seq() == 1
    store.save_order(_order(BIG_COID))
    assert store.load_orders()[0]["client_order_id"] == BIG_COID


def test_nul_filled_file_is_quarantined_and_replaced(db_path: Path, clock: SimulatedClock, caplog) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"\x00" * 65536)
    with caplog.at_level(logging.CRITICAL, logger="persistence"):
        store, quarantined = StateStore.open(db_path, clock)
    try:
        assert quarantined == db_path.with_name(f"trader.db.corrupt.{STAMP}")
        assert quarantined.read_bytes() == b"\x00" * 65536
        assert any(r.levelno == logging.CRITICAL and str(quarantined) in r.getMessage() for r in caplog.records)
        _assert_fresh_store_works(store)
        assert store.pragma("journal_mode") == "wal"
    finally:
        store.close()


def test_truncated_file_is_quarantined_and_replaced(db_path: Path, store: StateStore, clock: SimulatedClock) -> None:
    for seq in range(1, 200):
        store.save_trade(_trade(seq))
    store.close()
    assert not db_path.with_name("trader.db-wal").exists() or db_path.with_name("trader.db-wal").stat().st_size == 0
    size = db_path.stat().st_size
    with db_path.open("r+b") as handle:
        handle.truncate(size // 2)

    clock.advance(61)
    fresh, quarantined = StateStore.open(db_path, clock)
    try:
        assert quarantined is not None
        assert quarantined.name == "trader.db.corrupt.20260314T151027Z"
        assert quarantined.stat().st_size == size // 2
        _assert_fresh_store_works(fresh)
    finally:
        fresh.close()


def test_text_file_is_quarantined(db_path: Path, clock: SimulatedClock) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_text("this is not a database\n" * 200)
    store, quarantined = StateStore.open(db_path, clock)
    try:
        assert quarantined is not None and quarantined.exists()
        _assert_fresh_store_works(store)
    finally:
        store.close()


def test_quarantine_moves_wal_sidecars_with_the_file(db_path: Path, clock: SimulatedClock) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"\x00" * 4096)
    db_path.with_name("trader.db-wal").write_bytes(b"stale wal")
    store, quarantined = StateStore.open(db_path, clock)
    try:
        assert quarantined is not None
        assert quarantined.with_name(quarantined.name + "-wal").read_bytes() == b"stale wal"
        _assert_fresh_store_works(store)
    finally:
        store.close()


def test_integrity_check_failure_quarantines(db_path: Path, store: StateStore, clock: SimulatedClock, monkeypatch) -> None:
    store.save_trade(_trade(1))
    store.close()
    monkeypatch.setattr(StateStore, "integrity_problems", lambda self: ["*** in database main *** Page 3: btreeInitPage() returns error code 11"])
    fresh, quarantined = StateStore.open(db_path, clock)
    monkeypatch.undo()
    try:
        assert quarantined is not None
        assert quarantined.exists()
        assert fresh.load_trades() == []
    finally:
        fresh.close()
    # The quarantined file is the real old database, still readable for forensics.
    with StateStore(quarantined) as old:
        assert [t["id"] for t in old.load_trades()] == ["T000000001"]


def test_quarantine_names_never_collide(tmp_path: Path, clock: SimulatedClock) -> None:
    path = tmp_path / "trader.db"
    first = quarantine_name(path, clock)
    assert first.name == f"trader.db.corrupt.{STAMP}"
    first.write_bytes(b"x")
    second = quarantine_name(path, clock)
    assert second != first and second.name.startswith(f"trader.db.corrupt.{STAMP}")


def test_healthy_store_is_never_quarantined(db_path: Path, store: StateStore, clock: SimulatedClock) -> None:
    store.save_trade(_trade(1))
    store.close()
    with _reopen(db_path, clock) as again:
        assert again.load_trade("T000000001") == _trade(1)
    assert list(db_path.parent.glob("*.corrupt.*")) == []


def test_valid_header_with_garbage_body_is_quarantined(db_path: Path, clock: SimulatedClock) -> None:
    """The header check passes; SQLite itself must reject the file."""
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"SQLite format 3\x00" + b"\x00" * (65536 - 16))
    store, quarantined = StateStore.open(db_path, clock)
    try:
        assert quarantined is not None and quarantined.stat().st_size == 65536
        _assert_fresh_store_works(store)
    finally:
        store.close()


def test_empty_file_is_a_new_database_not_corruption(db_path: Path, clock: SimulatedClock) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.touch()
    store, quarantined = StateStore.open(db_path, clock)
    try:
        assert quarantined is None
        _assert_fresh_store_works(store)
    finally:
        store.close()


def test_unopenable_path_is_an_error_not_a_quarantine(tmp_path: Path, clock: SimulatedClock) -> None:
    directory = tmp_path / "trader.db"
    directory.mkdir()  # a directory where the file should be: not corruption, do not move it
    with pytest.raises(StoreError):
        StateStore.open(directory, clock)
    assert directory.is_dir()
    assert list(tmp_path.glob("*.corrupt.*")) == []


# ------------------------------------------------------------------ schema 2: the command queue


def _write_version_1_database(path: Path) -> None:
    """A database exactly as the version-1 code left it: step 1 only, one trade, one order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = sqlite3.connect(path)
    try:
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        version, statements = MIGRATIONS[0]
        assert version == 1
        for statement in statements:
            raw.execute(statement)
        raw.execute("INSERT INTO schema_version (version) VALUES (1)")
        trade = _trade(42, state="OPEN")
        raw.execute("INSERT INTO trades (id, state, strategy, doc, updated_at) VALUES (?, ?, ?, ?, ?)",
                    (trade["id"], "OPEN", trade["strategy"], json.dumps(trade), START))
        order = _order(BIG_COID, status="LIVE", order_id=987_654_321_012)
        raw.execute("INSERT INTO orders (client_order_id, trade_id, status, doc, updated_at) VALUES (?, ?, ?, ?, ?)",
                    (BIG_COID, "T000000042", "LIVE", json.dumps(order), START))
        raw.execute("INSERT INTO counters (name, value) VALUES ('trade_seq', 42)")
        raw.commit()
    finally:
        raw.close()


def test_version_1_database_migrates_to_2_and_keeps_every_row(db_path: Path, clock: SimulatedClock) -> None:
    """Issue 5 "bad state": a schema from an older version is migrated, not quarantined."""
    _write_version_1_database(db_path)
    store, quarantined = StateStore.open(db_path, clock)
    try:
        assert quarantined is None and list(db_path.parent.glob("*.corrupt.*")) == []
        assert store.schema_version() == SCHEMA_VERSION == 2
        assert store.load_trades() == [_trade(42, state="OPEN")]
        [order] = store.load_orders()
        assert order["client_order_id"] == BIG_COID and order["order_id"] == 987_654_321_012
        assert store.counter("trade_seq") == 42 and store.next_trade_seq() == 43
        assert store.commands() == []
        command_id = store.add_command("kill", {"strategy": None, "all_positions": False})
        assert [c["id"] for c in store.commands("pending")] == [command_id]
    finally:
        store.close()
    with _reopen(db_path, clock) as again:  # the migration is not re-run, the queue persisted
        assert again.schema_version() == 2
        assert [c["kind"] for c in again.commands()] == ["kill"]


def test_command_queue_round_trip(db_path: Path, store: StateStore, clock: SimulatedClock) -> None:
    first = store.add_command("kill", {"strategy": "alpha", "all_positions": False})
    clock.advance(5)
    second = store.add_command("resume", {"strategy": None})
    assert second > first
    [pending_kill, pending_resume] = store.commands("pending")
    assert pending_kill == {"id": first, "kind": "kill", "status": "pending",
                            "payload": {"strategy": "alpha", "all_positions": False}, "result": None,
                            "created_at": START, "updated_at": START}
    assert pending_resume["created_at"] == START + 5

    clock.advance(1)
    active = store.update_command(first, "active", {"trades": ["T000000001"]})
    assert active["status"] == "active" and active["updated_at"] == START + 6
    assert active["result"] == {"trades": ["T000000001"]}
    store.update_command(first, "active")  # no result given: the previous one stays
    assert store.command(first)["result"] == {"trades": ["T000000001"]}
    store.update_command(first, "done", {"trades": ["T000000001"], "final": {"T000000001": "CLOSED"}})
    store.update_command(second, "failed", {"error": "unknown strategy"})

    assert [c["id"] for c in store.commands(("pending", "active"))] == []
    assert [(c["id"], c["status"]) for c in store.commands()] == [(first, "done"), (second, "failed")]
    assert store.commands([]) == []
    store.close()
    with _reopen(db_path, clock) as again:
        assert again.command(first)["result"]["final"] == {"T000000001": "CLOSED"}
        assert again.command(999) is None


def test_finished_commands_never_change_and_nothing_goes_back_to_pending(store: StateStore) -> None:
    command_id = store.add_command("kill", {})
    store.update_command(command_id, "active")
    with pytest.raises(ValueError, match="cannot become pending"):
        store.update_command(command_id, "pending")
    store.update_command(command_id, "done")
    for status in ("active", "failed", "done"):
        with pytest.raises(ValueError, match="is done"):
            store.update_command(command_id, status)
    with pytest.raises(ValueError, match="unknown command status"):
        store.update_command(command_id, "cancelled")
    with pytest.raises(ValueError, match="no command"):
        store.update_command(12345, "done")
    with pytest.raises(ValueError):
        store.add_command("", {})
    with pytest.raises(ValueError):
        store.add_command("kill", ["not", "a", "dict"])  # type: ignore[arg-type]
    assert store.command(command_id)["status"] == "done"


# --------------------------------------------------------------------------------------
# The file under a running daemon (docs/RECOVERY.md row L1)
# --------------------------------------------------------------------------------------


def test_a_store_knows_whether_this_open_created_it_and_whether_it_holds_anything(db_path, clock) -> None:
    first, _ = StateStore.open(db_path, clock)
    assert first.created and first.holds_nothing()
    first.save_trade({"id": "T000000001", "state": "OPEN"})
    first.close()
    again, _ = StateStore.open(db_path, clock)
    try:
        assert not again.created and not again.holds_nothing()
    finally:
        again.close()


@pytest.mark.parametrize("how, expected", [
    ("deleted", "the database file was deleted"),
    ("replaced", "the database file was replaced by another file"),
    ("truncated", "the database file was truncated"),
    ("wal_deleted", "its write-ahead log trader.db-wal was deleted"),
])
def test_check_file_tells_what_happened_to_the_file_and_stays_lost(store, db_path, how, expected) -> None:
    store.save_trade({"id": "T000000001", "state": "OPEN"})
    assert store.check_file() is None and store.lost is None       # the WAL is noted once it exists
    if how == "deleted":
        db_path.unlink()
    elif how == "replaced":
        other = db_path.with_name("other.db")
        other.write_bytes(db_path.read_bytes())
        other.replace(db_path)
    elif how == "truncated":
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")      # pages into the main file first
        assert store.check_file() is None
        with db_path.open("r+b") as handle:
            handle.truncate(db_path.stat().st_size // 2)
    else:
        store.wal_path.unlink()

    assert store.check_file().startswith(expected)
    assert store.lost.startswith(expected) and store.check_file() == store.lost   # sticky
    assert store.losses == [store.lost]


def test_a_lost_store_moves_onto_a_complete_copy_and_keeps_writing_there(store, db_path, clock) -> None:
    store.save_trade({"id": "T000000001", "state": "OPEN"})
    store.next_trade_seq()
    db_path.unlink()
    assert store.check_file() == "the database file was deleted"

    copy = store.relocate()

    assert copy is not None and copy.name == f"trader.db.recovered.{STAMP}" and copy.parent == db_path.parent
    assert store.path == str(copy) and store.relocated_from == str(db_path) and store.lost is None
    store.save_trade({"id": "T000000002", "state": "OPEN"})
    assert store.check_file() is None                               # the copy is watched from now on
    store.close()
    reopened = StateStore(copy)
    try:
        assert [t["id"] for t in reopened.load_trades()] == ["T000000001", "T000000002"]
        assert reopened.counter("trade_seq") == 1 and reopened.integrity_problems() == []
    finally:
        reopened.close()


def test_a_truncated_store_cannot_be_copied(store, db_path) -> None:
    store.save_trade({"id": "T000000001", "state": "OPEN"})
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.check_file()
    with db_path.open("r+b") as handle:
        handle.truncate(1024)
    assert store.check_file().startswith("the database file was truncated")
    assert store.relocate() is None and list(db_path.parent.glob("*.recovered*")) == []


def test_the_store_watch_reports_a_loss_once_and_relocates(store, db_path, clock) -> None:
    from persistence import StoreWatch

    seen: list[tuple[str, Path | None]] = []
    watch = StoreWatch(store, clock, lambda problem, copy: seen.append((problem, copy)))
    store.save_trade({"id": "T000000001", "state": "OPEN"})
    watch(None)
    assert seen == []
    db_path.unlink()
    watch(None)
    watch.on_snapshot_error(RuntimeError("exchange down"))

    [(problem, copy)] = seen
    assert problem == "the database file was deleted" and copy is not None and copy.exists()


def test_a_wal_left_next_to_a_missing_database_is_moved_aside_before_opening(db_path, clock) -> None:
    first, _ = StateStore.open(db_path, clock)
    first.save_trade({"id": "T000000001", "state": "OPEN"})
    wal = db_path.with_name("trader.db-wal")
    kept = wal.read_bytes()
    assert kept                                                     # committed pages live in the WAL
    leftover = wal.with_name("saved-wal")
    leftover.write_bytes(kept)
    first.close()
    db_path.unlink()
    leftover.replace(wal)                                           # the database is gone, its WAL is not

    fresh, quarantined = StateStore.open(db_path, clock)
    try:
        assert quarantined is None and fresh.holds_nothing() and fresh.integrity_problems() == []
        assert (db_path.parent / f"trader.db-wal.orphaned.{STAMP}").read_bytes() == kept
    finally:
        fresh.close()
