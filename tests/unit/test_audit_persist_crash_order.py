"""A crash between any two writes of the start-up memory check loses no verdict (RECOVERY.md L2-L4, O2; audit P2).

Before, the check committed its "done" markers before it acted: the order-history check time
(``order_history_checked_ms``) before the lost-store pause, and the ``foreign_orders``
journal ("reported") before the pause of a prefix conflict or a store behind. A process that
died in between (SIGKILL, power cut, OOM; here ``Crash``, a ``BaseException`` nothing
catches) left a store the next start took for a handled one: nothing paused, ever. Now the
floors and the trade sequence come first, then the pause and the kept block, then the alert,
then the journal, and the check time last: whatever write the crash stops at, the next start
sees the same evidence and takes the same verdict again.

Each scenario is run once to count its store writes, then once per write with the process
dying just before it, followed by a normal start. Store and ledger are the real ones; the
reconciler's fakes are those of tests/unit/test_reconciliation.py.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from clock import SimulatedClock
from order_ledger import Intent, OrderLedger, build_client_order_id
from persistence import ORDER_HISTORY_WATERMARK, TRADE_SEQ_COUNTER, StateStore
from prefix_ownership import FOREIGN_ORDERS_EVENT
from reconciliation import Reconciler
from tests.unit.test_reconciliation import SYM_C, T0, FakeClient, FakeLifecycle, long_trade, position, snapshot

SELL = 2


class Crash(BaseException):
    """The process dies here."""


class CrashingStore(StateStore):
    """A real store whose process dies just before its ``crash_at``-th public write (1-based)."""

    crash_at: int | None = None
    writes = 0

    @contextmanager
    def _write(self, what: str) -> Iterator[Any]:
        self.writes += 1
        if self.crash_at is not None and self.writes == self.crash_at:
            raise Crash(f"died before write {self.writes} ({what})")
        with super()._write(what) as conn:
            yield conn


class Exchange(FakeClient):
    """The reconciler's reads and the ledger's order endpoints; the history honours its window."""

    def __init__(self, rows: list[dict], pending: list[dict] | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.pending = list(pending or [])

    def order_history(self, **params: Any) -> dict:
        self.history_calls.append(params)
        low, high = params.get("startTime", 0), params.get("endTime", 10**15)
        return {"list": [row for row in self.rows if low <= row["createTime"] <= high], "hasNext": False}

    def create_order(self, *_args: Any, **_kw: Any) -> int:
        raise AssertionError("no order is sent by a start-up check")

    def query_order(self, order_id: int | None = None, client_order_id: int | None = None) -> dict:
        return {"orderId": order_id, "clientOrderId": client_order_id, "state": 1, "fillQty": 0.01}


class StoredRunner:
    """A runner whose pause is written to the store, as ``StrategyRunner``'s is."""

    def __init__(self, name: str, store: StateStore) -> None:
        self.name, self.store = name, store
        saved = store.load_runner_state(name) or {}
        self.is_paused = bool(saved.get("paused"))
        self.pause_reason = str(saved.get("pause_reason") or "")

    @property
    def paused_for_good(self) -> bool:
        return self.is_paused

    def pause(self, reason: str, *, until: float | None = None) -> None:
        self.store.save_runner_state(self.name, {"paused": True, "pause_reason": reason, "pause_until": None})
        self.is_paused, self.pause_reason = True, reason

    def resume(self) -> None:
        raise AssertionError("not used by this test")


class Alerts:
    def __init__(self, die_on: str | None = None) -> None:
        self.die_on = die_on
        self.kinds: list[str] = []

    def alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        if kind == self.die_on:
            raise Crash(f"died while alerting {kind}")
        self.kinds.append(kind)


def ours(seq: int, leg: int = 0, intent: Intent = Intent.OPEN, attempt: int = 1) -> int:
    return build_client_order_id(101, seq, leg, intent, attempt)


def start(store: StateStore, clock: SimulatedClock, exchange: Exchange, alerts: Alerts, *,
          trades: list | None = None, positions: tuple = ()) -> tuple[StoredRunner, OrderLedger]:
    ledger = OrderLedger(exchange, clock, prefix=101, store=store)
    ledger.restore(store.load_orders())
    runner = StoredRunner("s1", store)
    reconciler = Reconciler(client=exchange, ledger=ledger, lifecycle=FakeLifecycle(trades or []), store=store,
                            clock=clock, alerts=alerts, quarantined=None,
                            journal=lambda kind, payload: store.append_event(kind, dict(payload), clock.now()))
    reconciler.attach_runners([runner])
    reconciler(snapshot(*positions, at=clock.now()))
    assert reconciler.started
    return runner, ledger


# ---------------------------------------------------------------------------------------------
# The scenarios: the store as the earlier life left it, and what the exchange shows
# ---------------------------------------------------------------------------------------------


def missing_store(path: Path, clock: SimulatedClock, crash_at: int | None) -> CrashingStore:
    """Row L2: the store was lost (empty); our order of an hour ago and a position are on the exchange."""
    store = CrashingStore(path, clock=clock)
    store.crash_at = crash_at
    return store


MISSING_ROWS = [{"orderId": 70, "clientOrderId": ours(17), "symbol": SYM_C, "createTime": (T0 - 3600) * 1000,
                 "state": 1}]


def with_history(path: Path, clock: SimulatedClock, crash_at: int | None) -> CrashingStore:
    """A store with a past: trade 5 open (its opening order filled), sequence 20, checked a minute ago."""
    store = CrashingStore(path, clock=clock)
    store.save_runner_state("s1", {"paused": False})
    store.save_trade({"id": "T000000005", "state": "OPEN", "strategy": "s1"})
    store.save_order({"client_order_id": ours(5), "trade_id": "T000000005", "trade_seq": 5, "leg_index": 0,
                      "intent": 1, "attempt": 1, "supersedes": None, "symbol": SYM_C, "side": 1, "qty": 0.01,
                      "price": 400.0, "reduce_only": False, "status": "FILLED", "order_id": 1, "filled_qty": 0.01,
                      "avg_price": 400.0, "fee": 0.0, "sent_at": T0 - 7200, "updated_at": T0 - 7200,
                      "exchange_state": 1})
    store.raise_counter_to(ORDER_HISTORY_WATERMARK, int((T0 - 60) * 1000))
    store.raise_counter_to(TRADE_SEQ_COUNTER, 20)
    store.writes = 0
    store.crash_at = crash_at
    return store


FOREIGN_OPEN = ours(9)   # another daemon with our prefix, trade sequence below ours: row O2
FOREIGN_PENDING = [{"orderId": 2, "clientOrderId": FOREIGN_OPEN, "symbol": SYM_C, "qty": 0.01, "tradeSide": 1,
                    "price": 5.0, "state": 0, "createTime": (T0 - 30) * 1000}]
BEHIND = ours(24, 0, Intent.CLOSE, 1)   # a newer copy of this store closed on SYM_C: row L3
BEHIND_ROWS = [{"orderId": 90, "clientOrderId": BEHIND, "symbol": SYM_C, "createTime": (T0 - 40) * 1000,
                "state": 1, "tradeSide": SELL, "qty": 0.01, "fillQty": 0.01}]


def run_lives(tmp_path: Path, build: Any, exchange: Any, crash_at: int | None, **start_kw: Any
              ) -> tuple[StateStore, StoredRunner, OrderLedger, list[str], int]:
    """The first life (dying before write ``crash_at``, if it gets that far), then a normal one."""
    clock = SimulatedClock(start=T0, speed=0)
    path = tmp_path / f"crash_{crash_at}" / "trader.db"
    path.parent.mkdir()
    store = build(path, clock, crash_at)
    first = Alerts()
    died = False
    try:
        start(store, clock, exchange(), first, **start_kw)
    except Crash:
        died = True
    writes = store.writes
    store.close()
    assert died == (crash_at is not None and crash_at <= writes)
    clock.advance(30)                                       # restarted by systemd
    store = StateStore(path, clock=clock)
    second = Alerts()
    runner, ledger = start(store, clock, exchange(), second, **start_kw)
    return store, runner, ledger, first.kinds + second.kinds, writes


def writes_of(tmp_path: Path, build: Any, exchange: Any, **start_kw: Any) -> int:
    """How many store writes the scenario's start makes when nothing dies."""
    clock = SimulatedClock(start=T0, speed=0)
    path = tmp_path / "count" / "trader.db"
    path.parent.mkdir()
    store = build(path, clock, None)
    start(store, clock, exchange(), Alerts(), **start_kw)
    store.close()
    assert store.writes > 2
    return store.writes


# ---------------------------------------------------------------------------------------------
# Rows L2, O2, L3: a crash before any write of the check
# ---------------------------------------------------------------------------------------------


def test_row_l2_a_crash_before_any_write_of_a_missing_store_start_still_ends_paused(tmp_path):
    kw = {"positions": (position(SYM_C, 0.01),)}
    total = writes_of(tmp_path, missing_store, lambda: Exchange(MISSING_ROWS), **kw)
    for crash_at in range(1, total + 1):
        store, runner, _ledger, alerts, _writes = run_lives(tmp_path, missing_store, lambda: Exchange(MISSING_ROWS),
                                                           crash_at, **kw)
        assert runner.is_paused, f"died before write {crash_at}: the lost store's pause is lost"
        assert "missing_store_start" in alerts, f"died before write {crash_at}: never alerted"
        assert store.counter(ORDER_HISTORY_WATERMARK) > 0
        assert store.counter(TRADE_SEQ_COUNTER) >= 17 + 1000
        store.close()


def test_row_o2_a_crash_before_any_write_of_a_prefix_conflict_still_ends_paused_and_reported(tmp_path):
    kw = {"trades": [long_trade(5, 0.01)], "positions": (position(SYM_C, 0.01),)}
    total = writes_of(tmp_path, with_history, lambda: Exchange([], FOREIGN_PENDING), **kw)
    for crash_at in range(1, total + 1):
        store, runner, _ledger, alerts, _writes = run_lives(tmp_path, with_history,
                                                           lambda: Exchange([], FOREIGN_PENDING), crash_at, **kw)
        assert runner.is_paused, f"died before write {crash_at}: the prefix conflict's pause is lost"
        assert "prefix_conflict" in alerts, f"died before write {crash_at}: never alerted"
        reported = [coid for event in store.events(FOREIGN_ORDERS_EVENT)
                    for coid in event["payload"]["client_order_ids"]]
        assert FOREIGN_OPEN in reported
        store.close()


def test_row_l3_a_crash_before_any_write_of_a_store_behind_still_ends_paused_and_blocked(tmp_path):
    kw = {"trades": [long_trade(5, 0.01)], "positions": (position(SYM_C, 0.01),)}
    total = writes_of(tmp_path, with_history, lambda: Exchange(BEHIND_ROWS), **kw)
    for crash_at in range(1, total + 1):
        store, runner, ledger, alerts, _writes = run_lives(tmp_path, with_history, lambda: Exchange(BEHIND_ROWS),
                                                          crash_at, **kw)
        assert runner.is_paused, f"died before write {crash_at}: the store-behind pause is lost"
        assert "store_behind" in alerts, f"died before write {crash_at}: never alerted"
        assert ledger.is_blocked(SYM_C), f"died before write {crash_at}: the symbol block is lost"
        assert store.counter(TRADE_SEQ_COUNTER) >= 24 + 1000
        store.close()


# ---------------------------------------------------------------------------------------------
# The auditor's crash points: in the alert, in the pause
# ---------------------------------------------------------------------------------------------


def test_row_l2_dying_while_alerting_leaves_the_pause_and_the_next_start_checks_again(tmp_path):
    clock = SimulatedClock(start=T0, speed=0)
    store = StateStore(tmp_path / "trader.db", clock=clock)
    with pytest.raises(Crash):
        start(store, clock, Exchange(MISSING_ROWS), Alerts(die_on="missing_store_start"),
              positions=(position(SYM_C, 0.01),))
    assert store.counter(ORDER_HISTORY_WATERMARK) == 0              # the check is not marked done
    assert store.load_runner_state("s1")["paused"] is True          # the pause came first
    store.close()

    clock.advance(30)
    store = StateStore(tmp_path / "trader.db", clock=clock)
    alerts = Alerts()
    runner, _ledger = start(store, clock, Exchange(MISSING_ROWS), alerts, positions=(position(SYM_C, 0.01),))
    assert runner.is_paused and alerts.kinds == ["missing_store_start"]
    assert store.counter(ORDER_HISTORY_WATERMARK) > 0


class DyingRunner(StoredRunner):
    def pause(self, reason: str, *, until: float | None = None) -> None:
        raise Crash("died before the pause was written")


def test_row_o2_dying_in_the_pause_leaves_the_foreign_order_unreported_for_the_next_start(tmp_path):
    clock = SimulatedClock(start=T0, speed=0)
    store = with_history(tmp_path / "trader.db", clock, None)
    exchange = Exchange([], FOREIGN_PENDING)
    ledger = OrderLedger(exchange, clock, prefix=101, store=store)
    ledger.restore(store.load_orders())
    reconciler = Reconciler(client=exchange, ledger=ledger, lifecycle=FakeLifecycle([long_trade(5, 0.01)]),
                            store=store, clock=clock, alerts=Alerts(), quarantined=None,
                            journal=lambda kind, payload: store.append_event(kind, dict(payload), clock.now()))
    reconciler.attach_runners([DyingRunner("s1", store)])
    with pytest.raises(Crash):
        reconciler(snapshot(position(SYM_C, 0.01), at=clock.now()))
    assert store.events(FOREIGN_ORDERS_EVENT) == []                 # not marked reported before the pause
    store.close()

    clock.advance(30)
    store = StateStore(tmp_path / "trader.db", clock=clock)
    alerts = Alerts()
    runner, _ledger = start(store, clock, Exchange([], FOREIGN_PENDING), alerts, trades=[long_trade(5, 0.01)],
                            positions=(position(SYM_C, 0.01),))
    assert runner.is_paused and alerts.kinds == ["prefix_conflict"]
    assert [e["payload"]["client_order_ids"] for e in store.events(FOREIGN_ORDERS_EVENT)] == [[FOREIGN_OPEN]]
