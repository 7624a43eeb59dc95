"""The durable state of the daemon: one SQLite file (BEHAVIOUR.md 4.6, 4.7).

Why it looks the way it does:

* A crash between "order sent" and "order recorded" is how a daemon ends up with an
  order it does not know about. Every public write is therefore one SQLite transaction
  on a WAL database with ``synchronous=FULL``: when a call returns, the row is on disk.
* Documents (trades, ledger orders, runner state, events) are JSON blobs keyed by id.
  The schema stays small and stable while the records evolve with the code that owns
  them; the few columns next to the blob (state, status, strategy) exist for queries.
  JSON keeps Python ints exact, so 18-digit client order ids survive a round trip;
  a float id is refused rather than rounded.
* A file that is not a database, or fails ``PRAGMA integrity_check``, must never be
  used silently: ``StateStore.open`` renames it ``<name>.corrupt.<YYYYmmddTHHMMSSZ>``
  (time from the injected clock), logs CRITICAL and starts a fresh store. The caller
  learns the quarantined path and starts degraded (BEHAVIOUR.md 4.7). Errors that are
  not corruption (locked, permission denied, newer schema) are raised instead: moving a
  healthy database aside would lose its state. The quarantined file's trade sequence is
  read back read-only when it still can be, and the fresh store continues
  ``QUARANTINE_SEQ_MARGIN`` above it (docs/RECOVERY.md Q3).
* What must outlive any restart to keep a clientOrderId from being sent twice, or a block
  in force, lives in the existing tables (no schema step): clientOrderId floors as counters
  (``raise_client_id_floors``), kept symbol blocks and the store's exchange record as events
  (``keep_symbol_block``, ``record_identity``); the reconciler's memory of what was beyond our
  trades (docs/RECOVERY.md S2) as counters replaced whole (``save_known_positions``). A store
  written by this version still opens with the previous one.
* The schema is versioned: ``MIGRATIONS`` is an ordered list of ``(version, statements)``
  steps, each applied in its own transaction together with the new version number, so
  a new version adds a step without touching the ones already shipped.
* Operator commands (``kill``, ``resume``) are a queue in the same file (schema step 2):
  the command line may run while the daemon holds the instance lock, and the database is
  the one thing both processes may open. A command is ``pending`` until the daemon takes
  it, ``active`` while a kill runs (so a restart resumes it), then ``done`` or ``failed``.
* One connection (``check_same_thread=False``) behind one lock: the monitor thread, the
  command line and the tests may all call in; SQLite serialises nothing for us here.
* The file can be lost under a running daemon (deleted, replaced, truncated). SQLite keeps
  writing to the inode it opened and notices nothing, so the next start would find an
  empty store and trade as if nothing had happened (issue 9, finding 2). ``check_file``
  compares the path with the file opened (device, inode, size: one ``os.stat`` each of the
  database and its WAL) so the daemon can stop its entries at once. While our own inode is
  intact, ``relocate`` copies everything it holds, through SQLite's backup API, to
  ``<name>.recovered.<time>`` and moves this connection onto that copy, so every later write
  lands in a file that survives a restart, for the operator to put back (docs/RECOVERY.md,
  row L1). Staying on the lost inode is not safe: the WAL and shared-memory files are found
  by name, and the next connection opened on a replacement at our path (``status``, the
  snapshot exporter) would replay our WAL into that file and delete it from under us.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from clock import Clock, to_utc_datetime
from errors import TraderError
from seams import Store

logger = logging.getLogger(__name__)

MEMORY_PATH = ":memory:"
PAGE_CACHE_KIB = 256   # SQLite's page cache per connection (its default is 2 MiB): see StateStore._configure
TRADE_SEQ_COUNTER = "trade_seq"
# Until when (epoch ms) the exchange's order history has been read for orders carrying our
# prefix; written by the reconciler after each read. A store that never had it set has never
# finished a start-up reconciliation (docs/RECOVERY.md, rows L2 and L4).
ORDER_HISTORY_WATERMARK = "order_history_checked_ms"
RECOVERED_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# clientOrderIds with our prefix seen on the exchange that the ledger never recorded (an older
# copy of this store, another daemon with our prefix): the highest attempt seen, per (trade
# sequence, leg) and per (trade sequence, leg, intent digit), kept as counters named
# ``client_id_floor:<seq>:<leg>`` and ``client_id_floor:<seq>:<leg>:<intent>``. The ledger
# allocates above them, so such an id is never sent again, after a restart or a resume too
# (docs/RECOVERY.md rows O2, L3). Counters, not a table: no schema change, and a store written
# by this version still opens with the previous one.
CLIENT_ID_FLOOR_COUNTER = "client_id_floor"
# Symbol blocks that outlive a restart (row L3), as events replayed in order: a block kept,
# then the operator's lift (``StateStore.kept_symbol_blocks``).
SYMBOL_BLOCK_KEPT_EVENT = "symbol_block_kept"
SYMBOL_BLOCK_LIFTED_EVENT = "symbol_block_lifted"
# The reconciler's memory of what the latest positions read that was not short showed beyond our
# trades on each symbol (docs/RECOVERY.md S2; ``position_reconciliation.PositionReconciler``), kept
# as two counters a symbol: ``known_position:<symbol>:at_us`` (the read's time, microseconds) and
# ``known_position:<symbol>:beyond_nano`` (signed quantity, 1e-9 units, below every lot size).
# Replaced whole on each change (``save_known_positions``): as many rows as symbols remembered.
# Counters, not a table: no schema change, and a store written by this version still opens with
# the previous one, which ignores them.
KNOWN_POSITION_COUNTER = "known_position"
_KNOWN_AT_SCALE = 1_000_000
_KNOWN_BEYOND_SCALE = 1_000_000_000
# The exchange, account and environment the store belongs to (state_identity, row E1), kept
# inside the database as well as beside it: the latest event of this kind is the record.
IDENTITY_EVENT = "exchange_identity"
# After a quarantine, the fresh store's trade sequence starts this far above the one read from
# the quarantined file (when it can be read): pages lost to the corruption may have held a
# later value (docs/RECOVERY.md Q3).
QUARANTINE_SEQ_MARGIN = 1000
# The trade sequence field of a clientOrderId holds 9 digits (order_ledger.build_client_order_id):
# a value read back from a damaged file above this, less the margin, is not believed.
_TRADE_SEQ_FIELD_MAX = 999_999_999

# Operator command statuses: pending -> active (a kill being executed; survives restarts)
# -> done | failed. A command may also go straight from pending to done or failed.
COMMAND_PENDING = "pending"
COMMAND_ACTIVE = "active"
COMMAND_DONE = "done"
COMMAND_FAILED = "failed"
COMMAND_STATUSES = (COMMAND_PENDING, COMMAND_ACTIVE, COMMAND_DONE, COMMAND_FAILED)
OPEN_COMMAND_STATUSES = (COMMAND_PENDING, COMMAND_ACTIVE)
_COMMAND_TRANSITIONS = {
    COMMAND_PENDING: frozenset({COMMAND_PENDING, COMMAND_ACTIVE, COMMAND_DONE, COMMAND_FAILED}),
    COMMAND_ACTIVE: frozenset({COMMAND_ACTIVE, COMMAND_DONE, COMMAND_FAILED}),
    COMMAND_DONE: frozenset(),
    COMMAND_FAILED: frozenset(),
}
QUARANTINE_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"

# SQLite primary result codes that mean "this file is not a usable database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_CORRUPTION_CODES = frozenset({_SQLITE_CORRUPT, _SQLITE_NOTADB})

# The first 16 bytes of every SQLite 3 database file.
_SQLITE_MAGIC = b"SQLite format 3\x00"

# Files SQLite keeps next to a WAL database; they belong to the main file and move with it.
_SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# (version, statements): applied in order, each step in one transaction. Append only.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            "CREATE TABLE trades (id TEXT PRIMARY KEY, state TEXT, strategy TEXT,"
            " doc TEXT NOT NULL, updated_at REAL)",
            "CREATE INDEX trades_by_strategy ON trades (strategy)",
            "CREATE TABLE orders (client_order_id INTEGER PRIMARY KEY, trade_id TEXT,"
            " status TEXT, doc TEXT NOT NULL, updated_at REAL)",
            "CREATE INDEX orders_by_trade ON orders (trade_id)",
            "CREATE TABLE runner_state (name TEXT PRIMARY KEY, doc TEXT NOT NULL)",
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL,"
            " kind TEXT NOT NULL, doc TEXT NOT NULL)",
            "CREATE INDEX events_by_kind ON events (kind, id)",
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        ),
    ),
    (
        2,
        (
            # Operator commands (kill, resume) queued by the command line for the daemon.
            "CREATE TABLE commands (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
            " status TEXT NOT NULL, doc TEXT NOT NULL, created_at REAL, updated_at REAL)",
            "CREATE INDEX commands_by_status ON commands (status, id)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


class StoreError(TraderError):
    """The state store cannot do what was asked."""


class StoreCorruptError(StoreError):
    """The file is not a database or fails the integrity check (quarantine it)."""


class StoreVersionError(StoreError):
    """The database was written by a newer schema; refuse rather than guess."""


class StoreWriteError(StoreError):
    """A write did not reach the disk. BEHAVIOUR.md 4.6: entries pause, exits go on."""


@dataclass(frozen=True)
class FileIdentity:
    """Which file a path names and how long it is (one ``os.stat``).

    Device and inode tell "the same file" from "another file at the same path" (a restore,
    a copy moved over it); the size tells a truncation (our database never shrinks: no
    VACUUM, no auto_vacuum).
    """

    device: int
    inode: int
    size: int

    def same_file(self, other: "FileIdentity") -> bool:
        return (self.device, self.inode) == (other.device, other.inode)


def file_identity(path: str | Path) -> FileIdentity | None:
    """The identity of the file at ``path`` now, or None when nothing is there."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return FileIdentity(stat.st_dev, stat.st_ino, stat.st_size)


# --------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------


def is_corruption(exc: BaseException) -> bool:
    """True when a sqlite error says the file itself is unusable (not locked, not busy)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in _CORRUPTION_CODES
    # Without an error code, only the plain DatabaseError class means "bad file".
    return type(exc) is sqlite3.DatabaseError


def foreign_header(path: Path) -> str | None:
    """Why ``path`` cannot be a SQLite database judging by its first bytes, else None.

    A missing or empty file is fine (SQLite creates the database in it).
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    if not head or head == _SQLITE_MAGIC:
        return None
    return f"{path}: not a SQLite database (header {head[:16]!r})"


def quarantine_name(path: Path, clock: Clock) -> Path:
    """``<name>.corrupt.<YYYYmmddTHHMMSSZ>`` next to ``path``, never an existing file."""
    stamp = to_utc_datetime(clock.now()).strftime(QUARANTINE_STAMP_FORMAT)
    candidate = path.with_name(f"{path.name}.corrupt.{stamp}")
    serial = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.corrupt.{stamp}.{serial}")
        serial += 1
    return candidate


def client_id_floor_name(trade_seq: int, leg_index: int, intent: int | None = None) -> str:
    """The counter holding a clientOrderId floor (``StateStore.raise_client_id_floors``)."""
    base = f"{CLIENT_ID_FLOOR_COUNTER}:{int(trade_seq)}:{int(leg_index)}"
    return base if intent is None else f"{base}:{int(intent)}"


def salvage_counter(path: Path, name: str) -> int | None:
    """One counter of a database that was moved aside, read without writing to it; None when unreadable.

    The file is opened read-only (``mode=ro``: SQLite neither checkpoints nor deletes its
    sidecars, and a WAL moved aside with it is read), so the quarantined evidence stays as it
    was for a human; the empty sidecars SQLite creates to read a WAL database are removed.
    """
    sidecars = [Path(f"{path}{suffix}") for suffix in _SIDECAR_SUFFIXES]
    already = {sidecar for sidecar in sidecars if sidecar.exists()}
    try:
        uri = f"{Path(path).resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=1.0)
    except (sqlite3.Error, OSError, ValueError):
        return None
    try:
        row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
        for sidecar in sidecars:
            if sidecar not in already:
                try:
                    sidecar.unlink(missing_ok=True)
                except OSError:
                    pass
    if row is None or isinstance(row[0], bool) or not isinstance(row[0], int):
        return None
    return int(row[0])


def _encode(doc: Any) -> str:
    """JSON text of a document; ints stay ints (no float conversion ever happens)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _decode(text: str) -> Any:
    return json.loads(text)


def _command_row(row: Sequence[Any]) -> dict:
    """One ``commands`` row as the dict ``StateStore.commands`` returns."""
    doc = _decode(row[3])
    return {
        "id": int(row[0]), "kind": row[1], "status": row[2], "payload": doc.get("payload") or {},
        "result": doc.get("result"), "created_at": row[4], "updated_at": row[5],
    }


def _exact_order_id(record: dict) -> int:
    """The record's client order id as an exact int64, or ValueError."""
    value = record.get("client_order_id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"order record needs an int client_order_id, got {value!r}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"client_order_id {value} does not fit in int64")
    return value


def _trade_id(record: dict) -> str:
    value = record.get("id")
    if not isinstance(value, str) or not value:
        raise ValueError(f"trade record needs a non-empty str id, got {value!r}")
    return value


def _inserted_row_id(cursor: sqlite3.Cursor, what: str) -> int:
    """The id SQLite gave the row an INSERT just wrote (it always gives one)."""
    row_id = cursor.lastrowid
    if row_id is None:
        raise StoreError(f"{what}: SQLite reported no id for the inserted row")
    return int(row_id)


def _text_or_none(value: Any) -> str | None:
    """A column value for an enum-ish field: str enums give their value."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


# --------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------


class StateStore:
    """SQLite-backed documents: trades, orders, runner state, events, counters.

    ``StateStore(path)`` opens (or creates) the database and brings its schema up to
    date; it does not run the integrity check. Start-up code uses ``StateStore.open``,
    which does, and quarantines a bad file.
    """

    def __init__(self, path: str | Path, *, clock: Clock | None = None, durable: bool = True) -> None:
        self._path = str(path)
        self._clock = clock
        self._durable = durable
        self._lock = threading.RLock()
        self._closed = False
        self.write_errors = 0
        self.last_write_error = ""
        before = None if self._path == MEMORY_PATH else file_identity(self._path)
        # True when this open created the database (no file, or an empty one, was there).
        self.created = before is None or before.size == 0
        self._opened_file: FileIdentity | None = None
        self._opened_wal: FileIdentity | None = None
        self._largest_size = 0
        self._lost: str | None = None
        self.losses: list[str] = []          # every loss seen by check_file, oldest first
        self.relocated_from: str | None = None
        try:
            self._conn = sqlite3.connect(
                self._path, check_same_thread=False, isolation_level=None
            )
        except sqlite3.DatabaseError as exc:
            raise self._classify(exc, "open") from exc
        try:
            self._configure()
            self.migrate()
        except BaseException:
            self._conn.close()
            self._closed = True
            raise
        if self._path != MEMORY_PATH:
            self._opened_file = file_identity(self._path)
            self._largest_size = self._opened_file.size if self._opened_file is not None else 0

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | Path, clock: Clock, *, durable: bool = True) -> tuple["StateStore", Path | None]:
        """Open the store for the daemon; quarantine a corrupt file and start fresh.

        Returns ``(store, quarantined_path)``; ``quarantined_path`` is None on a normal
        start. The parent directory is created when missing. ``durable=False`` (backtests
        only, ``Settings.durable_state``): commits survive a crash of the process but not a
        power cut, which saves an fsync per write; a backtest that dies is run again.
        """
        if str(path) == MEMORY_PATH:
            return cls(MEMORY_PATH, clock=clock, durable=durable), None
        file_path = Path(path)
        file_path.parent.mkdir(parents=True, exist_ok=True)
        cls._set_aside_stale_sidecars(file_path, clock)
        header_problem = foreign_header(file_path)
        if header_problem is not None:
            # Decided before SQLite opens it: SQLite would delete the WAL sidecars on close.
            return cls._fresh_after_quarantine(file_path, clock, durable, header_problem)
        try:
            store = cls(file_path, clock=clock, durable=durable)
        except StoreCorruptError as exc:
            reason = str(exc)
        else:
            try:
                problems = store.integrity_problems()
            except BaseException:
                store.close()
                raise
            if not problems:
                return store, None
            store.close()
            reason = "; ".join(problems[:5])
        return cls._fresh_after_quarantine(file_path, clock, durable, reason)

    @classmethod
    def _fresh_after_quarantine(cls, file_path: Path, clock: Clock, durable: bool,
                                reason: str) -> tuple["StateStore", Path]:
        """Move the unusable file aside and open a fresh store there, its trade sequence
        continued from the quarantined file when that can still be read."""
        quarantined = cls._quarantine(file_path, clock, reason)
        fresh = cls(file_path, clock=clock, durable=durable)
        try:
            fresh._seed_from_quarantined(quarantined)
        except BaseException:
            fresh.close()
            raise
        return fresh, quarantined

    def _seed_from_quarantined(self, quarantined: Path) -> int | None:
        """Start the fresh store's trade sequence above the one the quarantined file still holds.

        Why: the sequence is the middle of every clientOrderId, and the exchange's order history
        (89 days) does not show orders older than that, so a fresh store seeded from the history
        alone could hand out trade sequences, hence clientOrderIds, already sent. The file just
        moved aside often still answers a read of its ``counters`` table (an integrity check
        failing on other pages); the value read, plus ``QUARANTINE_SEQ_MARGIN``, becomes the
        fresh store's floor. Best effort: a file that cannot be read gives nothing here, and
        the start-up reconciliation still seeds from the history and the clock
        (``prefix_ownership``). Returns the new counter, or None.
        """
        salvaged = salvage_counter(quarantined, TRADE_SEQ_COUNTER)
        if salvaged is None:
            logger.warning("the quarantined store %s cannot be read for its trade sequence; the start-up "
                           "reconciliation seeds it from the exchange's history and the clock", quarantined)
            return None
        if not 0 <= salvaged <= _TRADE_SEQ_FIELD_MAX - QUARANTINE_SEQ_MARGIN:
            logger.critical("the quarantined store %s holds trade sequence %d, which no clientOrderId can carry: "
                            "not used", quarantined, salvaged)
            return None
        seeded = self.raise_counter_to(TRADE_SEQ_COUNTER, salvaged + QUARANTINE_SEQ_MARGIN)
        logger.critical("the quarantined store %s had reached trade sequence %d: the fresh store continues above "
                        "%d, so no clientOrderId it sent is sent again", quarantined, salvaged, seeded)
        return seeded

    @staticmethod
    def _set_aside_stale_sidecars(path: Path, clock: Clock) -> None:
        """A WAL or journal left by a database that is gone belongs to nothing: move it aside.

        Left in place, SQLite could replay pages of the lost database into the fresh one
        (a half database). They are kept, renamed, for a human.
        """
        current = file_identity(path)
        if current is not None and current.size > 0:
            return
        stamp = to_utc_datetime(clock.now()).strftime(QUARANTINE_STAMP_FORMAT)
        for suffix in _SIDECAR_SUFFIXES:
            sidecar = path.with_name(path.name + suffix)
            if not sidecar.exists():
                continue
            target = sidecar.with_name(f"{sidecar.name}.orphaned.{stamp}")
            try:
                sidecar.rename(target)
            except OSError as exc:
                raise StoreError(f"cannot move the stale {sidecar} aside: {exc}") from exc
            logger.warning("state store %s is missing or empty but %s was left behind; moved to %s",
                           path, sidecar.name, target)

    @staticmethod
    def _quarantine(path: Path, clock: Clock, reason: str) -> Path:
        """Move a bad database (and its WAL sidecars) aside, logging CRITICAL."""
        target = quarantine_name(path, clock)
        try:
            path.rename(target)
            for suffix in _SIDECAR_SUFFIXES:
                sidecar = path.with_name(path.name + suffix)
                if sidecar.exists():
                    sidecar.rename(target.with_name(target.name + suffix))
        except OSError as exc:
            logger.critical("state store %s is unusable (%s) and cannot be moved aside: %s", path, reason, exc)
            raise StoreError(f"cannot quarantine {path}: {exc}") from exc
        logger.critical(
            "state store %s is unusable (%s); moved to %s and starting a fresh store",
            path, reason, target,
        )
        return target

    def _configure(self) -> None:
        """WAL and synchronous=FULL: a committed transaction survives a power cut (NORMAL when not durable).

        The page cache is capped at ``PAGE_CACHE_KIB``: SQLite's default (2 MiB per connection)
        fills as the file grows, so a daemon's memory would creep for its first weeks (issue 11:
        memory flat over a long run). The store is written far more than read, and its reads
        are small (counters, one trade's rows); the operating system caches the file anyway.
        """
        with self._lock:
            try:
                if self._path != MEMORY_PATH:
                    mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise StoreError(f"could not switch {self._path} to WAL (got {mode!r})")
                    self._conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
                self._conn.execute("PRAGMA synchronous=FULL" if self._durable else "PRAGMA synchronous=NORMAL")
            except sqlite3.DatabaseError as exc:
                raise self._classify(exc, "configure") from exc

    def _classify(self, exc: sqlite3.DatabaseError, action: str) -> StoreError:
        if is_corruption(exc):
            return StoreCorruptError(f"{self._path}: {exc} (during {action})")
        return StoreError(f"{self._path}: {exc} (during {action})")

    # ---------------------------------------------------------------- schema

    def schema_version(self) -> int:
        """The version recorded in the file; 0 for a database without our schema."""
        with self._lock:
            try:
                table = self._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
                ).fetchone()
                if table is None:
                    return 0
                row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._classify(exc, "read schema version") from exc
            return int(row[0]) if row and row[0] is not None else 0

    def migrate(self, steps: Sequence[tuple[int, Sequence[str]]] = MIGRATIONS) -> int:
        """Apply every step newer than the file's version, in order; returns the version.

        Each step runs in one transaction together with the version bump, so a crash
        mid-migration leaves the previous version intact.
        """
        with self._lock:
            current = self.schema_version()
            latest = steps[-1][0] if steps else 0
            if current > latest:
                raise StoreVersionError(
                    f"{self._path} has schema version {current}; this code knows up to {latest}"
                )
            for version, statements in steps:
                if version <= current:
                    continue
                try:
                    with self._transaction():
                        self._conn.execute(
                            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
                        )
                        for statement in statements:
                            self._conn.execute(statement)
                        self._conn.execute("DELETE FROM schema_version")
                        self._conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                except sqlite3.DatabaseError as exc:
                    raise self._classify(exc, f"migrate to version {version}") from exc
                logger.info("state store %s migrated to schema version %d", self._path, version)
                current = version
            return current

    def integrity_problems(self) -> list[str]:
        """What ``PRAGMA integrity_check`` reports; empty when the file is sound."""
        with self._lock:
            self._require_open()
            try:
                rows = self._conn.execute("PRAGMA integrity_check").fetchall()
            except sqlite3.DatabaseError as exc:
                if is_corruption(exc):
                    return [str(exc)]
                raise self._classify(exc, "integrity check") from exc
        messages = [str(row[0]) for row in rows]
        return [] if messages == ["ok"] else messages

    def pragma(self, name: str) -> Any:
        """Read one pragma (for tests and the health report), e.g. ``journal_mode``."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a pragma name: {name!r}")
        with self._lock:
            self._require_open()
            row = self._conn.execute(f"PRAGMA {name}").fetchone()
        return None if row is None else row[0]

    # ---------------------------------------------------------------- transactions

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        with self._lock:
            self._require_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One public write: one transaction; a failure is counted, logged CRITICAL, raised."""
        try:
            with self._transaction() as conn:
                yield conn
        except sqlite3.Error as exc:
            raise self._write_failed(what, exc) from exc

    def _write_failed(self, what: str, exc: BaseException) -> StoreWriteError:
        with self._lock:
            self.write_errors += 1
            self.last_write_error = f"{what}: {exc}"
        logger.critical("state store write failed (%s): %s", what, exc)
        return StoreWriteError(f"{what}: {exc}")

    def _encode_for(self, what: str, doc: Any) -> str:
        """JSON of a document about to be written; an unencodable one is a failed write."""
        try:
            return _encode(doc)
        except (TypeError, ValueError) as exc:
            raise self._write_failed(what, exc) from exc

    def _require_open(self) -> None:
        if self._closed:
            raise StoreError(f"state store {self._path} is closed")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            self._require_open()
            return self._conn.execute(sql, params).fetchall()

    def _now(self) -> float | None:
        return self._clock.now() if self._clock is not None else None

    # ---------------------------------------------------------------- counters

    def next_counter(self, name: str) -> int:
        """Increment a persisted counter and return its new value (first call: 1)."""
        with self._write(f"next_counter {name}") as conn:
            conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, 1)"
                " ON CONFLICT(name) DO UPDATE SET value = value + 1",
                (name,),
            )
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def counter(self, name: str) -> int:
        """Current value of a counter (0 when never incremented)."""
        rows = self._read("SELECT value FROM counters WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def raise_counter_to(self, name: str, value: int) -> int:
        """Make a counter at least ``value`` (never lowers it); returns the result.

        Recovery uses this so a sequence never hands out a number already seen on the
        exchange, e.g. after a quarantined store restarted the counter at zero.
        """
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"counter value must be an int, got {value!r}")
        with self._write(f"raise_counter_to {name}") as conn:
            conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
                (name, value),
            )
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def next_trade_seq(self) -> int:
        """The next trade sequence number (1, 2, ...), persisted before it is returned."""
        return self.next_counter(TRADE_SEQ_COUNTER)

    # ---------------------------------------------------------------- clientOrderId floors

    def raise_client_id_floors(self, seen: Iterable[tuple[int, int, int, int]]) -> int:
        """Record ``(trade_seq, leg_index, intent, attempt)`` of clientOrderIds with our prefix seen on
        the exchange that the ledger never recorded: one transaction, never lowering a floor.

        The ledger allocates every later attempt of that (trade sequence, leg) above the highest
        attempt recorded here (``client_id_floor``), so an id that exists on the exchange is
        never sent again, whatever is lost from memory (a restart, an operator's resume).
        Returns how many counters the write touched (0: nothing to write, no transaction).
        """
        floors: dict[str, int] = {}
        for trade_seq, leg_index, intent, attempt in seen:
            for name, value in (("trade_seq", trade_seq), ("leg_index", leg_index), ("intent", intent),
                                ("attempt", attempt)):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"client id floor {name} must be an int >= 0, got {value!r}")
            for name in (client_id_floor_name(trade_seq, leg_index),
                         client_id_floor_name(trade_seq, leg_index, intent)):
                floors[name] = max(floors.get(name, 0), attempt)
        if not floors:
            return 0
        with self._write("raise_client_id_floors") as conn:
            conn.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
                sorted(floors.items()),
            )
        return len(floors)

    def client_id_floor(self, trade_seq: int, leg_index: int, intent: int | None = None) -> int:
        """The highest attempt of (trade_seq, leg_index) seen on the exchange and never recorded by
        the ledger, for one intent digit or (None) any; 0 when none was."""
        return self.counter(client_id_floor_name(trade_seq, leg_index, intent))

    # ---------------------------------------------------------------- the reconciler's S2 memory

    def save_known_positions(self, known: Mapping[str, tuple[float, float]]) -> None:
        """Replace the stored S2 memory (symbol -> (read time, beyond ours signed)) by ``known``.

        One transaction: the old rows go and the new ones come together, so a crash leaves
        either memory whole, and the rows never outnumber the symbols remembered (an upsert of
        the whole memory, never an append). ``ValueError`` for a value that is not finite.
        """
        prefix = f"{KNOWN_POSITION_COUNTER}:"
        rows: list[tuple[str, int]] = []
        for symbol, (at, beyond) in sorted(known.items()):
            if not isinstance(symbol, str) or not symbol:
                raise ValueError(f"known position symbol must be a non-empty str, got {symbol!r}")
            if not (math.isfinite(at) and math.isfinite(beyond)):
                raise ValueError(f"known position of {symbol} must be finite, got ({at!r}, {beyond!r})")
            rows.append((f"{prefix}{symbol}:at_us", round(at * _KNOWN_AT_SCALE)))
            rows.append((f"{prefix}{symbol}:beyond_nano", round(beyond * _KNOWN_BEYOND_SCALE)))
        with self._write("save_known_positions") as conn:
            conn.execute("DELETE FROM counters WHERE substr(name, 1, ?) = ?", (len(prefix), prefix))
            conn.executemany("INSERT INTO counters (name, value) VALUES (?, ?)", rows)

    def load_known_positions(self) -> dict[str, tuple[float, float]]:
        """The stored S2 memory, symbol -> (read time, beyond ours signed); empty when none.

        ``StoreError`` when it cannot be read or is malformed (a value that is not an integer,
        a read time not after the epoch, a symbol with one of its two rows only): a part of
        that memory is not believed, the caller decides without it.
        """
        prefix = f"{KNOWN_POSITION_COUNTER}:"
        try:
            rows = self._read("SELECT name, value FROM counters WHERE substr(name, 1, ?) = ?", (len(prefix), prefix))
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: the known positions cannot be read: {exc}") from exc
        parts: dict[str, dict[str, int]] = {}
        for name, value in rows:
            symbol, _sep, field = str(name)[len(prefix):].rpartition(":")
            if not symbol or field not in ("at_us", "beyond_nano") or isinstance(value, bool) \
                    or not isinstance(value, int):
                raise StoreError(f"{self._path}: malformed known position row {name!r} = {value!r}")
            parts.setdefault(symbol, {})[field] = value
        known: dict[str, tuple[float, float]] = {}
        for symbol, fields in sorted(parts.items()):
            if set(fields) != {"at_us", "beyond_nano"} or fields["at_us"] <= 0:
                raise StoreError(f"{self._path}: malformed known position of {symbol}: {fields}")
            known[symbol] = (fields["at_us"] / _KNOWN_AT_SCALE, fields["beyond_nano"] / _KNOWN_BEYOND_SCALE)
        return known

    # ---------------------------------------------------------------- whose store this is

    def record_identity(self, identity: Mapping[str, str]) -> None:
        """Keep the exchange record of this store inside it (``state_identity``; row E1)."""
        doc = {str(key): str(value) for key, value in dict(identity).items()}
        self.append_event(IDENTITY_EVENT, doc, self._now() or 0.0)

    def stored_identity(self) -> dict | None:
        """The exchange record kept inside this store (the latest), or None."""
        rows = self._read("SELECT doc FROM events WHERE kind = ? ORDER BY id DESC LIMIT 1", (IDENTITY_EVENT,))
        if not rows:
            return None
        doc = _decode(rows[0][0])
        return doc if isinstance(doc, dict) else None

    # ---------------------------------------------------------------- symbol blocks kept across restarts

    def keep_symbol_block(self, symbol: str, reason: str) -> None:
        """Record that no order may go to ``symbol`` until an operator lifts it (survives restarts)."""
        if not isinstance(symbol, str) or not symbol:
            raise ValueError(f"symbol must be a non-empty str, got {symbol!r}")
        self.append_event(SYMBOL_BLOCK_KEPT_EVENT, {"symbol": symbol, "reason": str(reason)}, self._now() or 0.0)

    def lift_symbol_blocks(self, symbols: Iterable[str]) -> None:
        """Record the operator's lift of the kept blocks on ``symbols``."""
        chosen = sorted({str(symbol) for symbol in symbols})
        if chosen:
            self.append_event(SYMBOL_BLOCK_LIFTED_EVENT, {"symbols": chosen}, self._now() or 0.0)

    def kept_symbol_blocks(self) -> dict[str, str]:
        """The blocks kept and not lifted since, symbol -> reason (the events replayed in order)."""
        blocks: dict[str, str] = {}
        for event in self.events((SYMBOL_BLOCK_KEPT_EVENT, SYMBOL_BLOCK_LIFTED_EVENT)):
            payload = event["payload"] if isinstance(event["payload"], dict) else {}
            if event["kind"] == SYMBOL_BLOCK_KEPT_EVENT:
                symbol = payload.get("symbol")
                if isinstance(symbol, str) and symbol:
                    blocks[symbol] = str(payload.get("reason") or "kept from an earlier run")
            else:
                for symbol in payload.get("symbols") or []:
                    blocks.pop(str(symbol), None)
        return blocks

    # ---------------------------------------------------------------- trades

    def save_trade(self, record: dict) -> None:
        """Insert or replace the trade document keyed by ``record["id"]``."""
        trade_id = _trade_id(record)
        doc = self._encode_for(f"save_trade {trade_id}", record)
        with self._write(f"save_trade {trade_id}") as conn:
            conn.execute(
                "INSERT INTO trades (id, state, strategy, doc, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET state = excluded.state,"
                " strategy = excluded.strategy, doc = excluded.doc, updated_at = excluded.updated_at",
                (
                    trade_id,
                    _text_or_none(record.get("state")),
                    _text_or_none(record.get("strategy")),
                    doc,
                    self._now(),
                ),
            )

    def load_trades(self, strategy: str | None = None) -> list[dict]:
        """Every trade document ordered by id (ids are zero-padded, so by sequence)."""
        if strategy is None:
            rows = self._read("SELECT doc FROM trades ORDER BY id")
        else:
            rows = self._read("SELECT doc FROM trades WHERE strategy = ? ORDER BY id", (strategy,))
        return [_decode(row[0]) for row in rows]

    def load_trade(self, trade_id: str) -> dict | None:
        rows = self._read("SELECT doc FROM trades WHERE id = ?", (trade_id,))
        return _decode(rows[0][0]) if rows else None

    # ---------------------------------------------------------------- orders

    def save_order(self, record: dict) -> None:
        """Insert or replace the ledger order keyed by its int ``client_order_id``."""
        coid = _exact_order_id(record)
        doc = self._encode_for(f"save_order {coid}", record)
        with self._write(f"save_order {coid}") as conn:
            conn.execute(
                "INSERT INTO orders (client_order_id, trade_id, status, doc, updated_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(client_order_id) DO UPDATE SET trade_id = excluded.trade_id,"
                " status = excluded.status, doc = excluded.doc, updated_at = excluded.updated_at",
                (
                    coid,
                    _text_or_none(record.get("trade_id")),
                    _text_or_none(record.get("status")),
                    doc,
                    self._now(),
                ),
            )

    def load_orders(self, trade_id: str | None = None) -> list[dict]:
        """Every order document ordered by client order id (trade, leg, intent, attempt)."""
        if trade_id is None:
            rows = self._read("SELECT doc FROM orders ORDER BY client_order_id")
        else:
            rows = self._read(
                "SELECT doc FROM orders WHERE trade_id = ? ORDER BY client_order_id", (trade_id,)
            )
        return [_decode(row[0]) for row in rows]

    def iter_orders(self, page_size: int = 2000) -> Iterator[dict]:
        """Every order document in client order id order, read a page at a time.

        Why not ``load_orders()``: a restart reads the whole history of orders, and a list of
        every document would all be in memory at once; each page is read under the lock, so a
        write between pages is never torn.
        """
        after = -(2**63)
        while True:
            rows = self._read("SELECT client_order_id, doc FROM orders WHERE client_order_id > ?"
                              " ORDER BY client_order_id LIMIT ?", (after, page_size))
            for _, doc in rows:
                yield _decode(doc)
            if len(rows) < page_size:
                return
            after = rows[-1][0]

    def load_order(self, client_order_id: int) -> dict | None:
        rows = self._read("SELECT doc FROM orders WHERE client_order_id = ?", (client_order_id,))
        return _decode(rows[0][0]) if rows else None

    # ---------------------------------------------------------------- runner state

    def save_runner_state(self, name: str, state: dict) -> None:
        """Insert or replace the persisted state of one strategy runner."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"runner name must be a non-empty str, got {name!r}")
        doc = self._encode_for(f"save_runner_state {name}", state)
        with self._write(f"save_runner_state {name}") as conn:
            conn.execute(
                "INSERT INTO runner_state (name, doc) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET doc = excluded.doc",
                (name, doc),
            )

    def load_runner_state(self, name: str) -> dict | None:
        rows = self._read("SELECT doc FROM runner_state WHERE name = ?", (name,))
        return _decode(rows[0][0]) if rows else None

    def runner_names(self) -> list[str]:
        return [row[0] for row in self._read("SELECT name FROM runner_state ORDER BY name")]

    # ---------------------------------------------------------------- events

    def append_event(self, kind: str, payload: dict, ts: float) -> int:
        """Append one event (append-only table); returns its id."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"event kind must be a non-empty str, got {kind!r}")
        doc = self._encode_for(f"append_event {kind}", payload)
        with self._write(f"append_event {kind}") as conn:
            cursor = conn.execute(
                "INSERT INTO events (ts, kind, doc) VALUES (?, ?, ?)", (float(ts), kind, doc)
            )
            event_id = _inserted_row_id(cursor, "append_event")
        return event_id

    def events(
        self,
        kind: str | Iterable[str] | None = None,
        *,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict]:
        """Events in append order as ``{"id", "ts", "kind", "payload"}``.

        ``kind`` filters on one kind or any of several; ``after_id`` skips events
        already seen; ``limit`` caps the number returned (oldest first).
        """
        clauses = ["id > ?"]
        params: list[Any] = [after_id]
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            if not kinds:
                return []
            clauses.append(f"kind IN ({', '.join('?' for _ in kinds)})")
            params.extend(kinds)
        sql = f"SELECT id, ts, kind, doc FROM events WHERE {' AND '.join(clauses)} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        rows = self._read(sql, params)
        return [
            {"id": int(row[0]), "ts": row[1], "kind": row[2], "payload": _decode(row[3])}
            for row in rows
        ]

    # ---------------------------------------------------------------- commands

    def add_command(self, kind: str, payload: dict) -> int:
        """Queue an operator command (``pending``); returns its id (ids only increase).

        The command line writes here and the daemon reads it on its next wake, so a kill
        survives the daemon being down or restarted before it ran (BEHAVIOUR.md 4.6, 7.6).
        """
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"command kind must be a non-empty str, got {kind!r}")
        if not isinstance(payload, dict):
            raise ValueError(f"command payload must be a dict, got {type(payload).__name__}")
        doc = self._encode_for(f"add_command {kind}", {"payload": payload, "result": None})
        now = self._now()
        with self._write(f"add_command {kind}") as conn:
            cursor = conn.execute(
                "INSERT INTO commands (kind, status, doc, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (kind, COMMAND_PENDING, doc, now, now),
            )
            command_id = _inserted_row_id(cursor, "add_command")
        return command_id

    def commands(self, status: str | Iterable[str] | None = None) -> list[dict]:
        """Commands in id order as ``{"id", "kind", "status", "payload", "result", "created_at",
        "updated_at"}``; ``status`` filters on one status or any of several."""
        sql = "SELECT id, kind, status, doc, created_at, updated_at FROM commands"
        params: list[Any] = []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            if not statuses:
                return []
            sql += f" WHERE status IN ({', '.join('?' for _ in statuses)})"
            params.extend(statuses)
        return [_command_row(row) for row in self._read(sql + " ORDER BY id", params)]

    def command(self, command_id: int) -> dict | None:
        rows = self._read(
            "SELECT id, kind, status, doc, created_at, updated_at FROM commands WHERE id = ?", (command_id,)
        )
        return _command_row(rows[0]) if rows else None

    def update_command(self, command_id: int, status: str, result: Any = None) -> dict:
        """Move a command on (see ``COMMAND_STATUSES``); ``result`` None keeps the previous one.

        A finished command (done or failed) never changes again, and nothing goes back to
        pending: a kill that was reported done must not be re-run by a later start.
        Returns the updated command.
        """
        if status not in COMMAND_STATUSES:
            raise ValueError(f"unknown command status {status!r}; use one of {', '.join(COMMAND_STATUSES)}")
        what = f"update_command {command_id}"
        with self._write(what) as conn:
            row = conn.execute("SELECT status, doc FROM commands WHERE id = ?", (command_id,)).fetchone()
            if row is None:
                raise ValueError(f"no command with id {command_id}")
            current, doc = str(row[0]), _decode(row[1])
            if status not in _COMMAND_TRANSITIONS.get(current, frozenset()):
                raise ValueError(f"command {command_id} is {current}; it cannot become {status}")
            if result is not None:
                doc["result"] = result
            text = self._encode_for(what, doc)
            conn.execute(
                "UPDATE commands SET status = ?, doc = ?, updated_at = ? WHERE id = ?",
                (status, text, self._now(), command_id),
            )
        updated = self.command(command_id)
        assert updated is not None
        return updated

    def holds_nothing(self) -> bool:
        """True when the store has no trade and no ledger order (fresh, or emptied)."""
        trades = self._read("SELECT 1 FROM trades LIMIT 1")
        orders = self._read("SELECT 1 FROM orders LIMIT 1")
        return not trades and not orders

    # ---------------------------------------------------------------- the file under us

    @property
    def wal_path(self) -> Path:
        return Path(self._path + "-wal")

    @property
    def lost(self) -> str | None:
        """What happened to the file we write, once ``check_file`` has seen it lost, else None.

        Sticky for that file: our writes go to an inode nobody will open again, even if
        something reappears at the path. ``relocate`` moves us to a new file and clears it.
        """
        return self._lost

    def check_file(self) -> str | None:
        """Is the file we write still the one at our path? None if so, else what happened.

        Cheap enough for every tick: one ``os.stat`` of the database and one of its WAL.
        An in-memory or closed store has no file to lose.
        """
        if self._opened_file is None or self._closed or self._lost is not None:
            return self._lost
        problem = self._database_problem() or self._wal_problem()
        if problem is not None:
            self._lost = problem
            self.losses.append(problem)
            logger.critical("state store %s: %s", self._path, problem)
        return self._lost

    def _database_problem(self) -> str | None:
        opened = self._opened_file
        assert opened is not None
        now = file_identity(self._path)
        if now is None:
            return "the database file was deleted"
        if not now.same_file(opened):
            return "the database file was replaced by another file"
        if now.size < self._largest_size:
            return f"the database file was truncated ({self._largest_size} -> {now.size} bytes)"
        self._largest_size = now.size
        return None

    def _wal_problem(self) -> str | None:
        """The WAL holds committed transactions not yet copied into the database."""
        now = file_identity(self.wal_path)
        if self._opened_wal is None:
            self._opened_wal = now   # SQLite creates it at the first write, then keeps it
            return None
        if now is None:
            return f"its write-ahead log {self.wal_path.name} was deleted"
        if not now.same_file(self._opened_wal):
            return f"its write-ahead log {self.wal_path.name} was replaced by another file"
        return None

    def relocate(self) -> Path | None:
        """After a loss: copy everything to ``<name>.recovered.<time>`` and write there from now on.

        Only while our inode is intact (deleted or replaced, not truncated: a truncated
        inode lost its pages). SQLite's backup API reads through our open connection, WAL
        included, so the copy is a consistent database with every committed transaction;
        it is written under a temporary name and renamed. Returns the new path, or None
        (logged CRITICAL) when it cannot be done: the daemon then goes on from memory.
        """
        with self._lock:
            if self._lost is None or "truncated" in self._lost or self._closed:
                return None
            target = self._recovered_name()
            temp = target.with_name(f".{target.name}.tmp")
            try:
                destination = sqlite3.connect(str(temp))
                try:
                    self._conn.backup(destination)
                finally:
                    destination.close()
                os.replace(temp, target)
                fresh = sqlite3.connect(str(target), check_same_thread=False, isolation_level=None)
            except (OSError, sqlite3.Error) as exc:
                logger.critical("could not copy the lost state store %s to %s: %s", self._path, target, exc)
                try:
                    temp.unlink()
                except OSError:
                    pass
                return None
            old, origin = self._conn, self._path
            self._conn, self._path = fresh, str(target)
            self._configure()
            old.close()
            self.relocated_from = self.relocated_from or origin
            self._lost = None
            self._opened_file = file_identity(target)
            self._largest_size = self._opened_file.size if self._opened_file is not None else 0
            self._opened_wal = None
        logger.critical("state store %s was lost; everything it held is in %s, where the daemon now writes",
                        origin, target)
        return target

    def _recovered_name(self) -> Path:
        base = Path(self.relocated_from or self._path)
        stamp = ""
        if self._clock is not None:
            stamp = "." + to_utc_datetime(self._clock.now()).strftime(RECOVERED_STAMP_FORMAT)
        candidate = base.with_name(f"{base.name}.recovered{stamp}")
        serial = 1
        while candidate.exists():
            candidate = base.with_name(f"{base.name}.recovered{stamp}.{serial}")
            serial += 1
        return candidate

    # ---------------------------------------------------------------- life

    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Commit nothing pending (every write already committed) and release the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateStore({self._path!r}, closed={self._closed})"


# --------------------------------------------------------------------------------------
# Watching the file under a running daemon
# --------------------------------------------------------------------------------------


class StoreWatch:
    """A monitor callback: is the store's file still ours? (docs/RECOVERY.md row L1).

    Runs on every wake, snapshot or not (``on_snapshot_error`` too), before the runners:
    one ``os.stat`` of the database and one of its WAL. When the file is found lost it
    moves the store onto a recovery copy (``StateStore.relocate``) and calls
    ``on_lost(problem, new_path_or_None)`` once per lost file; a relocation that failed is
    tried again every ``retry_seconds``, and one that then works calls ``on_lost(problem,
    new_path)`` as a first success would: the reaction publishes the copy (``trader.lock``)
    and names it, so it must take being called twice for one loss. The reaction (alert,
    entry hold, lock file) is the caller's: this module knows nothing of trading.
    """

    callback_name = "StoreWatch"   # how the monitor names this callback

    def __init__(self, store: Store, clock: Clock, on_lost: Callable[[str, Path | None], None], *,
                 retry_seconds: float = 60.0) -> None:
        self._store = store
        self._clock = clock
        self._on_lost = on_lost
        self._retry_seconds = float(retry_seconds)
        self._reported: str | None = None
        self._tried_at: float | None = None

    def __repr__(self) -> str:
        return f"StoreWatch({self._store.path!r}, lost={self._store.lost!r})"

    def __call__(self, _snapshot: Any) -> None:
        self.check()

    def on_snapshot_error(self, _error: Exception) -> None:
        self.check()

    def check(self) -> str | None:
        """The problem with the file we write now, or None while it is the one we opened."""
        problem = self._store.check_file()
        if problem is None:
            return None
        now = self._clock.now()
        if self._reported is None:
            self._reported = problem
            self._tried_at = now
            moved = self._store.relocate()
            self._on_lost(problem, moved)
            if moved is not None:
                self._reported = None   # the copy is watched like the original from now on
        elif self._tried_at is not None and now - self._tried_at >= self._retry_seconds:
            self._tried_at = now
            moved = self._store.relocate()
            if moved is not None:
                # The daemon writes to the copy from now on: unless it is said (and published),
                # the command line queues into the file at the old path, which nobody reads.
                self._on_lost(problem, moved)
                self._reported = None
        return problem
