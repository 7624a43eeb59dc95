"""AlertSink and HealthReporter: JSON lines, clock time, failures swallowed, interval gating."""
from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path

import pytest

from alerts import ALERTS_FILE_NAME, AlertSink, normalize_level
from clock import SimulatedClock, iso_utc
from health import HEALTH_FILE_NAME, HealthReporter
from json_lines import to_json_line

# 2026-03-14T15:09:26Z
START = 1_773_500_966.0


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class _Side(str, Enum):
    SELL = "sell"


# ------------------------------------------------------------------ alerts


def test_alert_writes_one_json_line_with_clock_time(tmp_path: Path, clock: SimulatedClock) -> None:
    log_dir = tmp_path / "logs"  # created on first write
    sink = AlertSink(log_dir, clock)
    sink.alert("WARNING", "exchange_down", "3 consecutive failures", failures=3)
    clock.advance(90.5)
    sink.alert("critical", "external_close", "leg 1 closed outside the daemon", trade_id="T000000042", side=_Side.SELL)

    lines = _lines(log_dir / ALERTS_FILE_NAME)
    assert lines == [
        {"time": "2026-03-14T15:09:26.000Z", "level": "WARNING", "kind": "exchange_down",
         "message": "3 consecutive failures", "detail": {"failures": 3}},
        {"time": "2026-03-14T15:10:56.500Z", "level": "CRITICAL", "kind": "external_close",
         "message": "leg 1 closed outside the daemon", "detail": {"trade_id": "T000000042", "side": "sell"}},
    ]


def test_alert_goes_to_the_logger_at_its_level(tmp_path: Path, clock: SimulatedClock, caplog) -> None:
    sink = AlertSink(tmp_path, clock)
    with caplog.at_level(logging.INFO, logger="alerts"):
        sink.alert("WARNING", "breaker", "close breaker tripped")
        sink.alert("CRITICAL", "store_quarantined", "state store moved aside")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "alerts"]
    assert levels[0][0] == logging.WARNING and "breaker" in levels[0][1]
    assert levels[1][0] == logging.CRITICAL and "state store moved aside" in levels[1][1]


def test_alert_without_log_dir_only_logs_and_keeps_recent(clock: SimulatedClock, caplog) -> None:
    sink = AlertSink(None, clock)
    with caplog.at_level(logging.WARNING, logger="alerts"):
        sink.alert("WARNING", "k", "m")
    assert sink.path is None
    assert [a.kind for a in sink.recent(5)] == ["k"]
    assert any("m" in r.getMessage() for r in caplog.records)


def test_recent_returns_the_last_n_oldest_first(clock: SimulatedClock) -> None:
    sink = AlertSink(None, clock, keep=3)
    for number in range(5):
        sink.alert("WARNING", f"k{number}", "m")
    assert [a.kind for a in sink.recent(2)] == ["k3", "k4"]
    assert [a.kind for a in sink.recent(10)] == ["k2", "k3", "k4"]
    assert sink.recent(0) == []
    assert sink.count == 5
    assert sink.recent(1)[0].to_dict()["level"] == "WARNING"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("warn", "WARNING"), ("Warning", "WARNING"), ("CRITICAL", "CRITICAL"), ("info", "INFO"),
     ("bogus", "WARNING"), (logging.ERROR, "ERROR")],
)
def test_levels_are_normalized(given: object, expected: str) -> None:
    assert normalize_level(given) == expected


def test_unserialisable_and_non_finite_details_still_give_strict_json(tmp_path: Path, clock: SimulatedClock) -> None:
    sink = AlertSink(tmp_path, clock)
    sink.alert("WARNING", "odd", "details", thing=object(), nan=float("nan"), path=tmp_path, nested={"x": (1, 2)})
    raw = (tmp_path / ALERTS_FILE_NAME).read_text(encoding="utf-8")
    assert "NaN" not in raw
    detail = json.loads(raw)["detail"]
    assert detail["nan"] is None
    assert detail["path"] == str(tmp_path)
    assert detail["nested"] == {"x": [1, 2]}
    assert detail["thing"].startswith("<object object")


def test_sink_file_failure_is_swallowed_and_logged_once(tmp_path: Path, clock: SimulatedClock, caplog) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the log directory should be")
    sink = AlertSink(blocker, clock)
    with caplog.at_level(logging.WARNING, logger="alerts"):
        for _ in range(3):
            returned = sink.alert("CRITICAL", "k", "still reported")
            assert returned is not None and returned.kind == "k"
    failures = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(failures) == 1
    assert sink.file_failures == 3
    assert len(sink.recent(10)) == 3
    alert_logs = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(alert_logs) == 3  # the log path still carries every alert


def test_sink_file_recovery_is_noticed_and_failure_logged_again(tmp_path: Path, clock: SimulatedClock, caplog) -> None:
    log_dir = tmp_path / "logs"
    log_dir.write_text("blocker")
    sink = AlertSink(log_dir, clock)
    with caplog.at_level(logging.WARNING, logger="alerts"):
        sink.alert("WARNING", "a", "m")
        log_dir.unlink()
        sink.alert("WARNING", "b", "m")
        (log_dir / ALERTS_FILE_NAME).unlink()
        (log_dir / ALERTS_FILE_NAME).mkdir()  # now the file itself is unwritable
        sink.alert("WARNING", "c", "m")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot write" in m for m in messages) == 2
    assert any("writable again" in m for m in messages)


def test_alert_never_raises_even_if_the_clock_fails(tmp_path: Path) -> None:
    class BrokenClock:
        def now(self) -> float:
            raise RuntimeError("clock is gone")

    sink = AlertSink(tmp_path, BrokenClock())
    assert sink.alert("CRITICAL", "k", "m") is None


def test_iso_utc_and_json_line_helpers() -> None:
    assert iso_utc(START + 0.25) == "2026-03-14T15:09:26.250Z"
    assert json.loads(to_json_line({"big": 101_000_000_042_010_003})) == {"big": 101_000_000_042_010_003}
    assert "\n" not in to_json_line({"text": "two\nlines"})


# ------------------------------------------------------------------ health


def test_health_first_call_writes_then_gates_on_the_interval(tmp_path: Path, clock: SimulatedClock) -> None:
    reporter = HealthReporter(clock, tmp_path, interval_seconds=300)
    assert reporter.maybe_report({"equity": 1000.0}) is True
    clock.advance(299)
    assert reporter.maybe_report({"equity": 1001.0}) is False
    clock.advance(1)
    assert reporter.maybe_report({"equity": 1002.0}) is True
    clock.advance(10)
    assert reporter.maybe_report({"equity": 1003.0}) is False
    clock.advance(600)  # a long gap writes one line, not a backlog
    assert reporter.maybe_report({"equity": 1004.0}) is True
    assert reporter.maybe_report({"equity": 1005.0}) is False

    lines = _lines(tmp_path / HEALTH_FILE_NAME)
    assert [line["equity"] for line in lines] == [1000.0, 1002.0, 1004.0]
    assert [line["uptime_seconds"] for line in lines] == [0.0, 300.0, 910.0]
    assert lines[1]["time"] == "2026-03-14T15:14:26.000Z"
    assert reporter.reports == 3


def test_health_line_carries_the_given_state_unchanged(tmp_path: Path, clock: SimulatedClock) -> None:
    reporter = HealthReporter(clock, tmp_path)
    state = {
        "equity": 12_345.67,
        "available_margin": 10_000.0,
        "margin_utilization": 0.19,
        "net_delta": -0.034,
        "positions": 2,
        "trades_per_state": {"OPEN": 1, "CLOSING": 1},
        "index": {"price": 84_000.5, "age_seconds": 1.2},
        "frozen": False,
        "reachability": "UP",
        "paused_runners": ["short_strangle"],
        "persistence_errors": 0,
        "snapshot_age_seconds": None,
    }
    assert reporter.maybe_report(state) is True
    (line,) = _lines(tmp_path / HEALTH_FILE_NAME)
    assert {key: line[key] for key in state} == state
    assert reporter.last_report is not None and reporter.last_report["equity"] == 12_345.67


def test_health_warnings_reach_the_main_log(tmp_path: Path, clock: SimulatedClock, caplog) -> None:
    reporter = HealthReporter(clock, tmp_path)
    with caplog.at_level(logging.WARNING, logger="health"):
        reporter.maybe_report({"warnings": ["margin utilization 85% > 80%", "equity below 500"]})
    messages = [r.getMessage() for r in caplog.records if r.name == "health"]
    assert messages == ["health: margin utilization 85% > 80%", "health: equity below 500"]


def test_health_report_forces_a_line_and_restarts_the_interval(tmp_path: Path, clock: SimulatedClock) -> None:
    reporter = HealthReporter(clock, tmp_path, interval_seconds=60)
    assert reporter.maybe_report({"n": 1}) is True
    clock.advance(30)
    assert reporter.report({"n": 2}) is True
    clock.advance(59)
    assert reporter.due() is False
    clock.advance(1)
    assert reporter.due() is True
    assert [line["n"] for line in _lines(tmp_path / HEALTH_FILE_NAME)] == [1, 2]


def test_health_write_failure_is_swallowed(tmp_path: Path, clock: SimulatedClock, caplog) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("not a directory")
    reporter = HealthReporter(clock, blocker, interval_seconds=10)
    with caplog.at_level(logging.WARNING):
        assert reporter.maybe_report({"equity": 1.0}) is False
        clock.advance(10)
        assert reporter.maybe_report({"equity": 1.0}) is False
    assert sum("cannot write" in r.getMessage() for r in caplog.records) == 1


def test_health_without_log_dir_reports_to_the_logger(clock: SimulatedClock, caplog) -> None:
    reporter = HealthReporter(clock, None)
    with caplog.at_level(logging.INFO, logger="health"):
        assert reporter.maybe_report({"equity": 5.0}) is True
    assert reporter.path is None
    assert any("equity" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", [0, -5])
def test_health_interval_must_be_positive(clock: SimulatedClock, bad: float) -> None:
    with pytest.raises(ValueError):
        HealthReporter(clock, None, interval_seconds=bad)
