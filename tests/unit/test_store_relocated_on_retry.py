"""A lost store copied only on the retry is named in trader.lock and in a ``state_store_lost`` alert.

Why this test exists (audit of the loop, bug 2): ``StoreWatch.check`` moved the daemon onto
``trader.db.recovered.<time>`` on its retry (the first copy failed: the disk was full for a
moment) without calling the reaction again. ``app.store_lost_reaction`` is what publishes the
copy in ``trader.lock`` (RECOVERY.md L1), so the lock file still named ``trader.db``: the
command line queued ``kill`` and ``pause`` into a file the daemon never reads, and the only
alert said that no copy could be made. A retry that works now does what a first success does.
"""
from __future__ import annotations

import os
import resource
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

from alerts import AlertSink
from app import store_lost_reaction
from clock import SimulatedClock
from instance_lock import InstanceLock
from lifecycle_holds import LifecycleHolds
from persistence import StateStore, StoreWatch

# 2026-03-03 09:00 UTC
START = 1_772_528_400.0
RETRY_SECONDS = 60.0


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def lock(state: Path) -> Iterator[InstanceLock]:
    held = InstanceLock(state)
    assert held.acquire()
    yield held
    held.release()


@pytest.fixture
def store(state: Path, clock: SimulatedClock, lock: InstanceLock) -> Iterator[StateStore]:
    opened = StateStore(state / "trader.db", clock=clock)
    lock.publish_store(opened.path)
    for seq in range(50):   # enough history that the copy needs more than the disk gives at first
        opened.save_trade({"id": f"T{seq:09d}", "state": "CLOSED", "strategy": "s", "pad": "x" * 2000})
    yield opened
    opened.close()


def restore_an_old_copy_over(path: Path) -> None:
    """Somebody (a backup job, an operator) puts another database where the daemon's was."""
    other = path.with_name("old.db")
    StateStore(other).close()
    os.replace(other, path)


def check_with_a_full_disk(watch: StoreWatch) -> str | None:
    """``watch.check()`` while files cannot grow past 8 KiB (the recovery copy fails)."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))
    try:
        return watch.check()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_copy_made_on_the_retry_is_published_in_the_lock_file_and_named_in_an_alert(state, clock, lock, store):
    holds = LifecycleHolds()
    alerts = AlertSink(None, clock)
    ctx = SimpleNamespace(store=store, lifecycle_manager=holds, alerts=alerts)
    watch = StoreWatch(store, clock, store_lost_reaction(ctx, lock), retry_seconds=RETRY_SECONDS)
    assert watch.check() is None

    restore_an_old_copy_over(state / "trader.db")
    assert check_with_a_full_disk(watch) is not None
    assert store.relocated_from is None                                  # the first copy failed
    [first] = alerts.recent(10)
    assert first.kind == "state_store_lost" and first.detail["recovery_copy"] is None
    assert set(holds.entry_holds) == {"state_store_lost"}

    clock.advance(RETRY_SECONDS + 1)
    watch.check()                                                        # the retry: the copy works now

    copy = Path(store.path)
    assert store.relocated_from == str(state / "trader.db") and copy != state / "trader.db" and copy.exists()
    assert InstanceLock(state).holder_store() == copy.resolve()          # where the command line queues
    second = alerts.recent(10)[-1]
    assert second.level == "CRITICAL" and second.kind == "state_store_lost"
    assert second.detail["recovery_copy"] == str(copy) and str(copy) in second.message
    assert set(holds.entry_holds) == {"state_store_lost"}                # held once, still held

    # A kill queued where the lock file points is one the daemon reads.
    cli = StateStore(InstanceLock(state).holder_store(), clock=clock)
    cli.add_command("kill", {"strategy": None})
    cli.close()
    assert [command["kind"] for command in store.commands(("pending", "active"))] == ["kill"]

    clock.advance(RETRY_SECONDS + 1)
    assert watch.check() is None and len(alerts.recent(10)) == 2        # the copy is watched like the original
