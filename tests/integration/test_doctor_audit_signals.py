"""``python main.py doctor --orders`` stopped by SIGTERM or SIGINT between a create and its cancel:
the cleanup still runs, nothing is left working, the report is printed with a FAIL and exit 1.

Like tests/integration/test_doctor_kill.py: the simulator runs as its own process on 127.0.0.1 and
the doctor (the real CLI entry, ``main.main``) in a subprocess whose step hook signals itself. No
sleeping: the subprocesses are waited for, not timed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from doctor_orders import JOURNAL_FILE
from tests.integration.test_doctor_kill import _doctor_orders_open, remote_sim  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[2]

HARNESS = textwrap.dedent("""
    import functools, os, signal, sys
    import doctor, main
    base_url, key, secret, state_dir, at, signame = sys.argv[1:7]

    def step(name):
        if name == at:
            os.kill(os.getpid(), getattr(signal, signame))

    main.run_doctor = functools.partial(doctor.run_doctor, step=step)
    env = {"TRADING_ENVIRONMENT": "sim", "COINCALL_BASE_URL": base_url, "COINCALL_API_KEY_SIM": key,
           "COINCALL_API_SECRET_SIM": secret, "STATE_DIR": state_dir, "LOG_DIR": state_dir + "/logs"}
    code = main.main(["doctor", "--orders", "--samples", "1"], env=env, dotenv_path=None, strategies=[])
    print("HANDLERS-RESTORED" if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else "HANDLERS-LEFT")
    sys.exit(code)
""")


@pytest.mark.parametrize("signame,at", [("SIGTERM", "round_trip:created"), ("SIGINT", "round_trip:created"),
                                        ("SIGTERM", "perp:created"), ("SIGTERM", "run_started")])
def test_a_signalled_doctor_cleans_up_reports_and_exits_1(remote_sim, tmp_path, signame, at):
    base_url, key, secret = remote_sim
    assert _doctor_orders_open(base_url, key, secret) == []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    state_dir = tmp_path / "state"
    done = subprocess.run([sys.executable, "-c", HARNESS, base_url, key, secret, str(state_dir), at, signame],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert _doctor_orders_open(base_url, key, secret) == [], done.stdout[-3000:] + done.stderr[-2000:]
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    out = done.stdout
    assert f"FAIL  stopped: {signame} received" in out, out[-3000:]
    assert "PASS  no order left" in out, out[-3000:]
    assert "HANDLERS-RESTORED" in out
    assert '"orders": {}' in (state_dir / JOURNAL_FILE).read_text(encoding="utf-8")
    if at == "round_trip:created":   # the order in flight was cancelled; no later probe was sent
        assert "off_tick" not in out.split("probes (what the exchange answered):")[-1].split("assumptions")[0]
