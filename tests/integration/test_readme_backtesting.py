"""The README's "Backtesting" commands work as written (issue 11: "the README's backtest command works
on a fresh clone and prints where the report is").

Each ``python main.py ...`` command of that section is taken from the README itself and run as a
subprocess from the repository's root with a clean environment. Only what would make a test slow
or leave files behind is appended (argparse keeps the last value): a short period, an ``--out``
under the test's temporary folder, ``--polls 1`` for the recorder. ``--open`` is honoured through
``BROWSER`` pointing at a tiny script that writes down the page it was asked to open. The sweep
example is validated (its runs take minutes; tests/integration/test_sweep.py runs sweeps).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import main as main_module
from sweep_spec import load_sweep

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
TIMEOUT_SECONDS = 300
SHORT_PERIOD = ["--days", "0.03"]


def section_commands() -> list[list[str]]:
    """Every ``python main.py`` command of the README's Backtesting section, in order, as argv lists."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Backtesting\n"):]
    section = section[:section.index("\n## ", 1)]
    found = re.findall(r"^(python main\.py [^\n`]+)$", section, flags=re.M)          # in code blocks
    found += re.findall(r"`(python main\.py [^`]+)`", section)                          # inline
    return [shlex.split(command)[2:] for command in found]


def run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(f"import sys\nopen({str(opened)!r}, 'a').write(sys.argv[1] + '\\n')\n", encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TRADING_ENVIRONMENT": "sim",
           "STATE_DIR": str(tmp_path / "state"), "LOG_DIR": str(tmp_path / "logs"),
           "BROWSER": f"{sys.executable} {browser} %s"}
    return subprocess.run([sys.executable, "main.py", *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_SECONDS, check=False)


def test_the_section_shows_the_month_the_replay_the_sweep_and_the_recorder():
    subcommands = [argv[0] for argv in section_commands()]
    assert subcommands.count("backtest") >= 2 and "sweep" in subcommands and "record" in subcommands
    month = section_commands()[0]
    assert month[:1] == ["backtest"] and "--days" in month and month[month.index("--days") + 1] == "30"
    assert "--open" in month


@pytest.mark.parametrize("position", [i for i, argv in enumerate(section_commands()) if argv[0] == "backtest"])
def test_each_backtest_command_runs_and_prints_where_the_report_is(position, tmp_path):
    argv = section_commands()[position]
    out = tmp_path / "run"
    result = run([*argv, *SHORT_PERIOD, "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"report: {out / 'report.html'}" in result.stdout
    assert (out / "report.html").is_file() and (out / "trades.csv").is_file()
    if "--open" in argv:
        assert (tmp_path / "opened.txt").read_text(encoding="utf-8").split() == [(out / "report.html").as_uri()]


def test_the_sweep_command_names_a_valid_sweep_file():
    sweeps = [argv for argv in section_commands() if argv[0] == "sweep"]
    for argv in sweeps:
        spec = load_sweep(REPO / argv[1], main_module.STRATEGIES)
        assert spec.combinations


def test_the_record_command_records_one_poll_from_the_embedded_simulator(tmp_path):
    [argv] = [argv for argv in section_commands() if argv[0] == "record" and "--out" in argv]
    out = tmp_path / "chain.csv"
    result = run([*argv, "--out", str(out), "--polls", "1"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in out.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    assert lines[0].startswith("exchange,symbol,timestamp") and len(lines) > 10
    assert all(line.startswith("coincall,BTCUSD-") for line in lines[1:])
