"""Logs for people (issue 12): the one time stamp, plain figures, news only when there is news.

The end-to-end side (a real run's log, an outage, a kill, a closed pipe) is in
tests/integration/test_logs_for_people_sim.py; these are the parts, with fakes.
"""
from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

import main as main_module
from clock import SimulatedClock
from display import fmt_duration, fmt_qty, fmt_stamp
from errors import SnapshotError
from position_monitor import PositionMonitor
from tests.unit.test_runner_gates import Counting, Harness, config, fake_resolution  # noqa: F401 - fixture

# Monday 2026-03-02 10:00:00 UTC.
START = datetime(2026, 3, 2, 10, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def logging_to(tmp_path):
    """``setup_logging`` of the command line, undone after the test; yields the log's path."""
    undo: list = []

    def start(clock) -> Path:
        undo.append(main_module.setup_logging(tmp_path, "INFO", clock))
        return tmp_path / main_module.LOG_FILE_NAME

    yield start
    for each in undo:
        each()


def test_every_line_is_stamped_with_the_run_clock_in_utc_once(logging_to, capsys):
    clock = SimulatedClock(start=START, speed=0)
    path = logging_to(clock)
    logging.getLogger("somewhere").info("first")
    clock.advance(3661.7)
    logging.getLogger("somewhere").warning("an hour later")

    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == ["2026-03-02 10:00:00 INFO    somewhere: first",
                     "2026-03-02 11:01:01 WARNING somewhere: an hour later"]
    assert capsys.readouterr().err.splitlines() == lines      # stderr shows the same, single time


def test_the_stamp_is_read_once_per_record_so_every_handler_agrees(logging_to, tmp_path):
    class Ticking(SimulatedClock):
        def now(self) -> float:          # every read moves time: two reads would disagree
            self.advance(1.0)
            return super().now()

    path = logging_to(Ticking(start=START, speed=0))
    second = logging.FileHandler(tmp_path / "second.log", encoding="utf-8")
    second.setFormatter(main_module.ClockFormatter(None))
    logging.getLogger().addHandler(second)
    try:
        logging.getLogger("somewhere").info("one record")
    finally:
        logging.getLogger().removeHandler(second)
        second.close()
    assert path.read_text(encoding="utf-8") == (tmp_path / "second.log").read_text(encoding="utf-8")


def test_without_a_clock_the_record_s_own_time_is_used():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "text", None, None)
    record.created = START + 59.9
    assert main_module.ClockFormatter(None).format(record) == "2026-03-02 10:00:59 INFO    x: text"


def test_numbers_and_times_for_people():
    assert fmt_stamp(START) == "2026-03-02 10:00:00"
    assert [fmt_qty(v) for v in (0.30000000000000004, -0.01, 1.25, -0.0, 2, None)] == ["0.3", "-0.01", "1.25", "0",
                                                                                         "2", "n/a"]
    assert [fmt_duration(s) for s in (0, 44.6, 185, 3600, 7620, 3 * 86400 + 4 * 3600, float("nan"))] == [
        "0 s", "45 s", "3 min 05 s", "1 h 00 min", "2 h 07 min", "3 d 04 h", "n/a"]


def no_entry_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if ": no entry: " in r.getMessage()]


def test_the_no_entry_reason_is_logged_once_per_change_and_readable_as_a_property(caplog):
    window = Counting(result=False)
    h = Harness(config(entry_conditions=[window], check_interval_seconds=60.0))
    assert h.runner.no_entry_reason is None                  # no check yet
    with caplog.at_level(logging.INFO, logger="strategy"):
        for check in range(5):                                # five checks, one reason: one line
            if check:
                h.advance(60)
            h.tick()
        blocked = h.runner.no_entry_reason
        h.tick()                                              # throttled: the last reason stays
        assert h.runner.no_entry_reason == blocked
        h.advance(60)
        window.result = True
        h.tick()                                              # a trade opens
        assert len(h.created) == 1 and h.runner.no_entry_reason is None
        for _ in range(4):                                    # it is still opening, check after check
            h.advance(60)
            h.tick()

    assert window.calls == 6
    assert blocked is not None and blocked.startswith("entry condition entry_conditions[0]:")
    assert blocked.endswith(" not met")
    assert no_entry_lines(caplog) == [f"strategy gates: no entry: {blocked}",
                                      f"strategy gates: no entry: trade {h.created[0].id} still opening"]
    assert h.runner.no_entry_reason == f"trade {h.created[0].id} still opening"


def test_a_reason_whose_figures_alone_move_is_logged_once(caplog):
    h = Harness(config(check_interval_seconds=60.0))
    stale = h.snapshot()
    with caplog.at_level(logging.INFO, logger="strategy"):
        for _ in range(3):                                    # the snapshot gets older at every check
            h.advance(60)
            h.tick(type(stale).build(equity=100_000.0, available_margin=90_000.0, initial_margin=0.0,
                                      maintenance_margin=0.0, unrealized_pnl=0.0, positions=(),
                                      timestamp=stale.timestamp))
    assert no_entry_lines(caplog) == ["strategy gates: no entry: snapshot 60 s old (limit 20 s)"]
    assert h.runner.no_entry_reason == "snapshot 180 s old (limit 20 s)"   # the latest, for the view
    assert h.created == []


def test_the_same_legs_are_logged_once_other_legs_again(caplog, fake_resolution):
    h = Harness(config(check_interval_seconds=60.0, max_concurrent_trades=1))
    h.runner._netting_conflict = lambda resolved, snapshot: "netting"    # blocked after resolution, every check
    with caplog.at_level(logging.INFO, logger="strategy"):
        for _ in range(3):
            h.tick()
            h.advance(60)
    resolved = [r.getMessage() for r in caplog.records if ": resolved " in r.getMessage()]
    assert len(fake_resolution) == 3 and len(resolved) == 1
    assert resolved[0].startswith("strategy gates: resolved 2 legs at index 90000.00: SELL 0.1 ")


class Outage:
    """An account whose snapshots fail from the second poll on; DOWN from the fourth."""

    def __init__(self) -> None:
        self.polls = 0
        self.reachability = type("Reach", (), {"is_up": True})()

    def snapshot(self):
        self.polls += 1
        if self.polls == 1 or self.polls > 8:
            from account_manager import AccountSnapshot
            return AccountSnapshot.build(equity=1.0, available_margin=1.0, initial_margin=0.0,
                                         maintenance_margin=0.0, unrealized_pnl=0.0, positions=(), timestamp=START)
        self.reachability.is_up = self.polls < 4
        raise SnapshotError(f"positions: HTTP 503 (poll {self.polls})")


def test_every_failed_poll_says_how_long_what_failed_and_when_the_next_poll_comes(caplog):
    clock = SimulatedClock(start=START, speed=0)
    account = Outage()
    monitor = PositionMonitor(account, clock, poll_interval=10.0)
    with caplog.at_level(logging.INFO, logger="position_monitor"):
        for _ in range(9):
            monitor.run_once()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]

    assert lines[0] == ("WARNING", "account snapshot failed, no decision this tick: positions: HTTP 503 (poll 2); "
                                   "next poll in 10 s")
    assert lines[1] == ("INFO", "account snapshot failing for 10 s (since 2026-03-02 10:00:10, 2 polls in a row, "
                                "exchange UP): positions: HTTP 503 (poll 3); no decision this tick; next poll in 10 s")
    assert lines[2] == ("INFO", "account snapshot failing for 20 s (since 2026-03-02 10:00:10, 3 polls in a row, "
                                "exchange DOWN): positions: HTTP 503 (poll 4); no decision this tick; next poll in 30 s")
    assert len(lines) == 1 + 6 + 1 and all(level == "INFO" for level, _ in lines[1:])
    assert lines[-1] == ("INFO", "account snapshot back after 2 min 50 s of failed polls (7 in a row)")


def test_the_cli_output_stream_is_not_replaced(capsys):
    """``quiet_on_closed_pipe`` touches stdout only when the pipe broke."""
    stdout = sys.stdout
    assert main_module.quiet_on_closed_pipe(lambda: print("x") or 0) == 0
    assert sys.stdout is stdout and capsys.readouterr().out == "x\n"
