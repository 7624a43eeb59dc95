"""deploy/coincall-trader.service: the rules docs/DEPLOY.md promises, read from the file itself.

The unit is parsed (systemd's format: sections, ``Key=value``, repeated keys accumulate) and
checked rule by rule; where ``systemd-analyze`` exists it also verifies the unit, on a copy
whose install prefix points at a throw-away tree (verify checks that the executable exists).
"""
from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app import EXIT_CONFIG, EXIT_OK, EXIT_STARTUP_FAILURE
from config import Settings
from position_monitor import PositionMonitor

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "coincall-trader.service"
PREFIX = "/opt/coincall-trader"
EXIT_LOCKED = 3   # another daemon holds the state directory (main.py's docstring, BEHAVIOUR.md 7.5)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values...]}}``; comments and blank lines skipped, continuations joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if logical:
            logical.append(line)
            line = " ".join(part.rstrip("\\").strip() for part in logical)
            if raw.rstrip().endswith("\\"):
                continue
            logical = []
        elif line.endswith("\\"):
            logical = [line]
            continue
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            current = sections.setdefault(header.group(1), {})
            continue
        assert current is not None, f"a setting outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def one(unit: dict, section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values and len(values) == 1, f"[{section}] {key} must be set once, got {values}"
    return values[0]


def test_the_unit_has_its_three_sections(unit):
    assert set(unit) == {"Unit", "Service", "Install"}
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in one(unit, "Unit", "After")


def test_it_runs_main_py_run_with_the_venv_python_as_a_dedicated_user(unit):
    user = one(unit, "Service", "User")
    assert user not in ("root", "") and one(unit, "Service", "Group") == user
    assert one(unit, "Service", "WorkingDirectory") == PREFIX
    assert one(unit, "Service", "ExecStart") == f"{PREFIX}/.venv/bin/python main.py run"
    assert one(unit, "Service", "EnvironmentFile") == f"{PREFIX}/.env"
    assert one(unit, "Service", "Type") == "simple"


def test_it_restarts_on_failure_never_after_a_clean_exit_nor_for_what_a_restart_cannot_heal(unit):
    assert one(unit, "Service", "Restart") == "on-failure"          # exit 0 (a signal, --run-for): stays stopped
    assert float(one(unit, "Service", "RestartSec")) >= 5
    prevented = {int(code) for code in one(unit, "Service", "RestartPreventExitStatus").split()}
    assert prevented == {EXIT_CONFIG, EXIT_LOCKED}
    assert EXIT_OK not in prevented and EXIT_STARTUP_FAILURE not in prevented   # a failed start is retried


def test_the_stop_timeout_outlasts_a_tick_and_the_shutdown(unit):
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    stop = float(one(unit, "Service", "TimeoutStopSec"))
    # A tick is finished, never cut: its requests may each wait the client's timeout (30 s by
    # default), and the monitor gives a busy tick 35 s. The unit must outlast both, twice over.
    request_timeout = Settings().request_timeout_seconds
    busy_tick = inspect.signature(PositionMonitor).parameters["join_timeout"].default
    assert stop >= 2 * max(request_timeout, busy_tick)
    why = UNIT.read_text(encoding="utf-8").split("TimeoutStopSec")[0].rsplit("[Service]", 1)[1]
    assert "tick" in why and "shutdown" in why                       # the comment says why


def test_the_hardening_leaves_state_and_logs_writable_and_nothing_else(unit):
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert one(unit, "Service", "PrivateTmp") == "yes"
    assert one(unit, "Service", "ReadWritePaths").split() == [f"{PREFIX}/state", f"{PREFIX}/logs"]
    families = one(unit, "Service", "RestrictAddressFamilies").split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)      # the exchange, the embedded simulator


def test_the_deploy_guide_covers_what_an_operator_needs():
    guide = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    for needle in ("python3 -m venv .venv", "chmod 600", "TRADING_ENVIRONMENT=testnet", "checklist",
                   "Upgrades and rollbacks", ".backup", "trader.db-wal", "ssh -N -L 8780:127.0.0.1:8780",
                   "DASHBOARD_ENABLED", "DASHBOARD_TOKEN", "logs/", "deploy/coincall-trader.service"):
        assert needle in guide, needle
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/DEPLOY.md" in readme


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here: the unit is checked by the parser tests only")
    app = tmp_path / "app"
    (app / ".venv" / "bin").mkdir(parents=True)
    (app / "state").mkdir()
    (app / "logs").mkdir()
    (app / ".env").write_text("TRADING_ENVIRONMENT=sim\n", encoding="utf-8")
    os.symlink(sys.executable, app / ".venv" / "bin" / "python")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(PREFIX, str(app)), encoding="utf-8")

    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)

    about_ours = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    if result.returncode != 0 and not about_ours and "Failed to" in result.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0 and about_ours == [], result.stdout + result.stderr
