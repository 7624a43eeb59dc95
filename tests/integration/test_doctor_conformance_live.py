"""The conformance suite's live mode, run against a second simulator process as if it were remote."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_live_mode_passes_against_a_separate_simulator_process():
    simulator = subprocess.Popen([sys.executable, "-m", "simulator", "--port", "0", "--seed", "11",
                                  "--no-rate-limits", "--log-level", "WARNING"], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = dict(simulator.stdout.readline().strip().split("=", 1) for _ in range(3))
        assert lines["COINCALL_BASE_URL"].startswith("http://127.0.0.1:")
        env = {**os.environ, "COINCALL_LIVE_BASE_URL": lines["COINCALL_BASE_URL"],
               "COINCALL_LIVE_API_KEY": lines["COINCALL_API_KEY_SIM"],
               "COINCALL_LIVE_API_SECRET": lines["COINCALL_API_SECRET_SIM"]}
        run = subprocess.run([sys.executable, "-m", "pytest", "tests/conformance", "-m", "live", "-rs", "-p",
                              "no:randomly"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        simulator.send_signal(signal.SIGTERM)
        simulator.wait(timeout=30)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert re.search(r"\b8 passed", output) and re.search(r"\b2 skipped", output), output[-3000:]
    assert output.count("LIVE TARGET: not run against a real account") == 2
