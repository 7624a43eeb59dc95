"""Logs for people, on the embedded or in-process simulator (issue 12).

What an operator reads must be plain: one time per line (the run's clock), no Python repr,
no epoch, rounded figures; a line per poll while an outage lasts and while a kill works; a
``kill`` without a daemon that says at once what it does; ``status`` and ``check`` that end
quietly when their reader goes away. These run the product's own code on simulated time.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest

import main as main_module
import operator_cli
from app import build_context
from clock import SimulatedClock
from config import load_settings
from option_selection import strangle
from simulator.faults import FaultRule
from strategy import StrategyConfig, max_hold_hours, min_available_margin_pct
from trade_execution import ExecutionParams

ROOT = Path(__file__).resolve().parents[2]
# Tuesday 2026-03-03 10:00 UTC: every shipped strategy's window is open, away from the 08:00 expiry.
START = datetime(2026, 3, 3, 10, 0, 0, tzinfo=timezone.utc).timestamp()

# What reads like Python rather than like a sentence: a dict or list repr, a dataclass repr,
# float noise, an epoch number (10 digits in seconds, 13 in milliseconds; ids are longer).
REPR_PATTERNS = {
    "dict or list repr": re.compile(r"\{'|\['|\{\"|\[\""),
    "dataclass repr": re.compile(r"\b[A-Z][A-Za-z]+\((?:[a-z_]+=)"),
    "float with more than 6 decimals": re.compile(r"\d\.\d{7,}"),
    "epoch number": re.compile(r"(?<![\d.])1\d{9}(?:\d{3})?(?![\d.])"),
}
STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S+: ")


def sim_env(tmp_path: Path) -> dict[str, str]:
    return {"TRADING_ENVIRONMENT": "sim", "LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state")}


def read_log(tmp_path: Path) -> list[str]:
    return (tmp_path / "logs" / "trading.log").read_text(encoding="utf-8").splitlines()


def pythonish(lines: list[str]) -> list[str]:
    return [f"{name}: {line}" for line in lines for name, pattern in REPR_PATTERNS.items() if pattern.search(line)]


def test_the_patterns_catch_what_the_log_used_to_show():
    before = [
        "app: strategy micro_strangle: RunnerStats(opened=4, closed=4, failed=0, realized_pnl=-4.65911532, "
        "fees=4.3291153200000005)",
        "app: recovery: {'restored': 0, 'active': [], 'abandoned': []}",
        "rfq: rfq job T000000002 OPEN: RFQ 1990000000000012288 created ([{'instrumentName': 'X'}]), baseline 295.00, "
        "waiting until 1796332479",
        "coincall_payloads: X: symbol date says 1772611200000, exchange says 1772697600000",
    ]
    found = pythonish(before)
    assert {line.split(":", 1)[0] for line in found} == set(REPR_PATTERNS)
    assert pythonish(["rfq: RFQ 1990000000000012288 created, account 1695796692000001, order 101000000042013007",
                      "equity=99,941.29 fees 0.5400 USD, index 90000.00, strike 91,500"]) == []


def test_a_short_simulated_run_reads_like_sentences(tmp_path):
    """Every shipped strategy for two simulated hours: trades open and close, the log says so plainly."""
    code = main_module.main(["--run-for", "7200"], clock=SimulatedClock(start=START, speed=0), env=sim_env(tmp_path),
                            dotenv_path=None)

    assert code == 0
    lines = read_log(tmp_path)
    assert len(lines) > 100 and any(" OPEN: " in line for line in lines) and any(" CLOSED by " in line
                                                                                 for line in lines)
    assert pythonish(lines) == []
    # One time per line, at its start, in the run's simulated clock (never the wall clock).
    stamps = [STAMP.match(line) for line in lines]
    assert all(stamps), [line for line, match in zip(lines, stamps) if match is None][:3]
    moments = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
               for m in stamps if m]
    assert moments[0] == START and START + 7200 <= moments[-1] < START + 7260 and moments == sorted(moments)
    # Said once, at the start, that the times are simulated.
    said = [line for line in lines if "every time stamp in this log is simulated time" in line]
    assert len(said) == 1 and lines.index(said[0]) < 15
    # Nothing repeated without news: the same legs are resolved once, not at every entry check.
    resolutions = [line.split(" INFO ", 1)[1] for line in lines if ": resolved " in line]
    assert len(resolutions) == len(set(resolutions)) or all(
        a != b for a, b in zip(resolutions, resolutions[1:]))
    # The figures at shutdown are a sentence, rounded.
    summary = [line for line in lines if "app: strategy micro_strangle:" in line]
    assert summary and re.search(r"\d+ opened, \d+ closed \(\d+ won, \d+ lost\), \d+ failed; realized PnL "
                                 r"-?[\d,]+\.\d\d USD, fees [\d,]+\.\d\d USD$", summary[-1])


def test_an_outage_logs_one_progress_line_per_poll(sim, tmp_path, caplog):
    """503 on every endpoint for three simulated minutes: each failed poll says how long, what, and when next."""
    settings = load_settings({"TRADING_ENVIRONMENT": "sim", "COINCALL_BASE_URL": sim.base_url,
                              "COINCALL_API_KEY_SIM": sim.api_key, "COINCALL_API_SECRET_SIM": sim.api_secret,
                              "STATE_DIR": str(tmp_path / "state"), "LOG_DIR": str(tmp_path / "logs")},
                             dotenv_path=None)
    ctx = build_context(settings, clock=sim.clock, state_dir=tmp_path / "state", log_dir=tmp_path / "logs")
    monitor = ctx.position_monitor
    try:
        until = sim.clock.now() + 30
        while sim.clock.now() < until:                       # healthy first
            monitor.run_once()
        rule = sim.faults.add(FaultRule(mode="http_5xx", http_status=503))
        outage_from = sim.clock.now()
        polls = 0
        with caplog.at_level(logging.INFO, logger="position_monitor"):
            while sim.clock.now() < outage_from + 180:
                before = monitor.last_error_at
                monitor.run_once()
                polls += monitor.last_error_at != before
            sim.faults.remove(rule)
            while monitor.current_error is not None:
                monitor.run_once()
    finally:
        ctx.close()

    lines = [r for r in caplog.records if r.name == "position_monitor"]
    first, *progress, back = lines
    assert first.levelname == "WARNING" and "account snapshot failed" in first.getMessage()
    assert "next poll in" in first.getMessage()
    assert polls >= 4 and len(progress) == polls - 1          # one line per failed poll, no more, no fewer
    for record in progress:
        text = record.getMessage()
        assert record.levelname == "INFO"
        assert re.search(r"account snapshot failing for \d+ (s|min \d\d s) \(since 2026-03-02 \d\d:\d\d:\d\d, "
                         r"\d+ polls in a row, exchange (UP|DOWN)\): .+; no decision this tick; next poll in \d+ s$",
                         text), text
    assert "exchange DOWN" in progress[-1].getMessage() and "next poll in 30 s" in progress[-1].getMessage()
    assert back.levelname == "INFO" and back.getMessage().startswith("account snapshot back after")
    assert pythonish([r.getMessage() for r in lines]) == []


def long_strangle() -> StrategyConfig:
    """A long 0.01 strangle that enters at once and holds for hours."""
    return StrategyConfig(
        name="alpha", legs=strangle(0.01, call_delta=0.25, put_delta=-0.25, dte="next", side=1),
        entry_conditions=[min_available_margin_pct(50)], exit_conditions=[max_hold_hours(3)],
        execution_mode="limit", max_concurrent_trades=1, check_interval_seconds=60.0,
        execution_params=ExecutionParams(fill_timeout_seconds=30.0, aggressive_buffer_pct=2.0,
                                         max_requote_rounds=10),
    )


def test_a_kill_without_a_daemon_says_at_once_what_it_does_and_reports_every_poll(tmp_path, capsys, monkeypatch):
    env = sim_env(tmp_path)
    clock = SimulatedClock(start=START, speed=0)
    assert main_module.main(["--run-for", "300"], clock=clock, env=env, dotenv_path=None,
                            strategies=[long_strangle]) == 0
    capsys.readouterr()

    said_before_start_up: list[str] = []
    real_run_locked = operator_cli.run_locked

    def run_locked(*args, **kwargs):   # what the operator had read before anything started
        said_before_start_up.append(capsys.readouterr().out)
        return real_run_locked(*args, **kwargs)

    monkeypatch.setattr(operator_cli, "run_locked", run_locked)
    code = main_module.main(["kill", "--yes"], clock=clock, env=env, dotenv_path=None, strategies=[long_strangle])
    out = capsys.readouterr().out

    assert code == 0
    [before] = said_before_start_up
    assert before.startswith("no daemon holds ") and "this process runs the kill (every strategy) itself" in before
    assert "kill command 1 done" in out
    progress = [line for line in out.splitlines() if re.match(r"kill command 1: \d+ trade\(s\) still closing", line)]
    details = [line for line in out.splitlines() if line.startswith("  trade T")]
    assert progress and details
    assert re.search(r"still holds BTCUSD-\S+ [+-][\d.]+.*; \d+ kill order\(s\) sent, [\d.]+ filled", details[0])
    # The log says it too, every poll, stamped with the run's simulated clock.
    log = read_log(tmp_path)
    assert any(" INFO    trade_lifecycle: kill in progress: trade T" in line for line in log)
    assert pythonish([line for line in log if "kill in progress" in line or "kill command" in line]) == []


def _run_with_reader_gone(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """``python main.py ARGV`` whose stdout reader is gone before the first line (``| head`` done reading)."""
    process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, cwd=cwd)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode("utf-8", "replace")
    return process.wait(timeout=120), err


@pytest.fixture
def process_env(tmp_path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
            "TRADING_ENVIRONMENT": "sim", "STATE_DIR": str(tmp_path / "state"), "LOG_DIR": str(tmp_path / "logs"),
            "LOG_LEVEL": "WARNING"}


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["check", "--strategy", "micro_strangle"]])
def test_a_closed_pipe_ends_status_and_check_quietly(tmp_path, process_env, argv):
    code, err = _run_with_reader_gone(argv, process_env, tmp_path)
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err


def test_quiet_on_closed_pipe_returns_the_command_code_when_the_reader_stays():
    calls: list[int] = []
    command: Callable[[], int] = lambda: calls.append(1) or 2   # noqa: E731 - a one-line command
    assert main_module.quiet_on_closed_pipe(command) == 2 and calls == [1]
