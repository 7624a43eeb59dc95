"""``status`` reads the store the daemon writes to, also after its store was lost (RECOVERY.md L1).

When ``STATE_DIR/trader.db`` is deleted under a running daemon, it copies what it holds to
``trader.db.recovered.<time>``, writes there, and names that copy in ``trader.lock``
(``InstanceLock.publish_store``), as the command line's ``kill`` and ``pause`` follow. ``status``
used to read ``trader.db`` only and print "no state yet" while the account held positions. It
now reads the store the lock's holder names when that file exists, says it is the daemon's
recovered store, and never creates a store file.
"""
from __future__ import annotations

import contextlib
import io
import json

from clock import SimulatedClock
from config import load_settings
from instance_lock import InstanceLock
from operations import format_status, status_report
from persistence import StateStore
from tests.integration.test_kill_resume_e2e import (  # noqa: F401 - fixtures
    START, clock, env, exchange, positions, run,
)
from tests.unit.test_operator_view import NOW, short_strangle

RECOVERED = "trader.db.recovered.20260303T090232Z"


def _settings(tmp_path):
    env = {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state"), "TRADING_ENVIRONMENT": "sim"}
    return load_settings(env, dotenv_path=None)


def _recovered_store_with_a_trade(tmp_path):
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / RECOVERED
    with StateStore(path) as store:
        store.save_trade(short_strangle().to_record())
    return path


def test_status_reads_the_recovered_store_the_lock_holder_names(tmp_path):
    recovered = _recovered_store_with_a_trade(tmp_path)
    daemon = InstanceLock(tmp_path / "state")          # the daemon holds the lock and named its copy
    assert daemon.acquire()
    try:
        daemon.publish_store(recovered)
        report = status_report(_settings(tmp_path), SimulatedClock(start=NOW, speed=0))
    finally:
        daemon.release()

    store = report["store"]
    assert store["available"] is True and store["path"] == str(recovered.resolve())
    assert [t["id"] for t in store["active_trades"]] == ["T000000001"]
    assert store["recovered_from"] == str(tmp_path / "state" / "trader.db")
    text = format_status(report)
    assert "the daemon's recovered store" in text and "1 active trade(s)" in text and "no state yet" not in text
    assert not (tmp_path / "state" / "trader.db").exists()          # status created no store


def test_status_falls_back_to_trader_db_when_the_named_store_is_gone_and_creates_nothing(tmp_path):
    (tmp_path / "state").mkdir()
    daemon = InstanceLock(tmp_path / "state")
    assert daemon.acquire()
    try:
        daemon.publish_store(tmp_path / "state" / RECOVERED)     # moved back or deleted since
        report = status_report(_settings(tmp_path), SimulatedClock(start=NOW, speed=0))
    finally:
        daemon.release()
    store = report["store"]
    assert store["path"] == str(tmp_path / "state" / "trader.db") and store["available"] is False
    assert "recovered_from" not in store
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["trader.lock"]


def test_status_reads_trader_db_when_the_lock_names_it_or_nothing(tmp_path):
    (tmp_path / "state").mkdir()
    with StateStore(tmp_path / "state" / "trader.db") as store:
        store.save_trade(short_strangle().to_record())
    daemon = InstanceLock(tmp_path / "state")
    assert daemon.acquire()
    try:
        bare = status_report(_settings(tmp_path), SimulatedClock(start=NOW, speed=0))   # pid only, no store line
        daemon.publish_store(tmp_path / "state" / "trader.db")
        named = status_report(_settings(tmp_path), SimulatedClock(start=NOW, speed=0))
    finally:
        daemon.release()
    for report in (bare, named):
        assert report["store"]["path"] == str(tmp_path / "state" / "trader.db")
        assert len(report["store"]["active_trades"]) == 1 and "recovered_from" not in report["store"]


def test_status_while_the_daemon_writes_to_a_recovered_copy_shows_its_trades(tmp_path, clock, exchange, env,
                                                                               signed_request_for):
    """End to end on the simulator: the daemon's store is deleted under it; ``status`` follows."""
    def delete_store() -> None:
        for name in ("trader.db", "trader.db-wal", "trader.db-shm"):
            (tmp_path / "state" / name).unlink(missing_ok=True)

    reports: list[dict] = []

    def status() -> None:
        out = io.StringIO()
        # The store part only (no exchange requests from this process): embedded-simulator settings.
        status_env = {k: v for k, v in env.items() if k not in ("COINCALL_BASE_URL", "COINCALL_API_KEY_SIM",
                                                                  "COINCALL_API_SECRET_SIM")}
        with contextlib.redirect_stdout(out):
            assert run(["status", "--json"], SimulatedClock(start=START, speed=0), status_env) == 0
        reports.append(json.loads(out.getvalue()))

    clock.at(START + 150, delete_store)
    clock.at(START + 300, status)
    assert run(["--run-for", "400"], clock, env) == 0

    [report] = reports
    store = report["store"]
    [recovered] = sorted((tmp_path / "state").glob("trader.db.recovered*"))
    assert positions(signed_request_for(exchange))                       # the account holds the trade
    assert store["available"] is True and store["path"] == str(recovered.resolve())
    assert [t["strategy"] for t in store["active_trades"]] == ["alpha"]
    assert store["recovered_from"] == str(tmp_path / "state" / "trader.db")
    assert not (tmp_path / "state" / "trader.db").exists()               # status created no store
