"""``doctor --orders`` killed with SIGKILL leaves no order once the next doctor has run.

The simulator runs as its own process (``python -m simulator``) so its records survive the
doctor's death; each doctor runs in a subprocess whose step hook sends itself SIGKILL at one
point of the round trip. Afterwards the exchange's own open-order lists are read, a plain
``doctor`` (read-only) is run, and the lists must hold no doctor order. Everything on
127.0.0.1; no sleeping (the subprocesses are waited for, not timed).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clock import RealClock
from coincall_client import ClientSettings, CoincallClient
from coincall_payloads import parse_orders
from config import Credentials, Settings
from doctor import DoctorOptions, run_doctor
from doctor_orders import JOURNAL_FILE, is_doctor_order_id

ROOT = Path(__file__).resolve().parents[2]

HARNESS = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from clock import RealClock
    from config import Credentials, Settings
    from doctor import DoctorOptions, run_doctor

    base_url, key, secret, state_dir, kill_at = sys.argv[1:6]
    settings = Settings(environment="sim", base_url=base_url, credentials=Credentials(key, secret, source="test"),
                        state_dir=Path(state_dir), log_dir=Path(state_dir) / "logs")

    def step(name):
        if name == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    report = run_doctor(settings, RealClock(), [], DoctorOptions(orders=True, samples=1), step=step)
    sys.exit(report.exit_code)
""")


@pytest.fixture(scope="module")
def remote_sim():
    process = subprocess.Popen([sys.executable, "-m", "simulator", "--port", "0", "--seed", "7", "--no-rate-limits", "--log-level",
                                "WARNING"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
        yield lines["COINCALL_BASE_URL"], lines["COINCALL_API_KEY_SIM"], lines["COINCALL_API_SECRET_SIM"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _doctor_orders_open(base_url: str, key: str, secret: str) -> list[int]:
    client = CoincallClient(ClientSettings(base_url=base_url, max_retries=0), Credentials(key, secret), RealClock())
    try:
        options = [o.client_order_id for o in parse_orders(client.all_pending_orders())]
        perps = [o.client_order_id for o in client.perp_pending_orders()]
    finally:
        client.close()
    return [coid for coid in options + perps if coid is not None and is_doctor_order_id(coid, 101)]


@pytest.mark.parametrize("kill_at", ["round_trip:journaled", "round_trip:created", "round_trip:queried",
                                     "off_tick:created", "perp:created", "cleanup"])
def test_a_killed_doctor_leaves_no_order_after_the_next_run(remote_sim, tmp_path, kill_at):
    base_url, key, secret = remote_sim
    state_dir = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", HARNESS, base_url, key, secret, str(state_dir), kill_at],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    journal = (state_dir / JOURNAL_FILE).read_text(encoding="utf-8")
    left = _doctor_orders_open(base_url, key, secret)
    if kill_at.endswith(":created"):
        assert left, "the kill came after the create: the exchange holds the doctor order"
        assert all(str(coid) in journal for coid in left), "every order on the exchange was journaled first"
    settings = Settings(environment="sim", base_url=base_url, credentials=Credentials(key, secret, source="test"),
                        state_dir=state_dir, log_dir=tmp_path / "logs")
    report = run_doctor(settings, RealClock(), [], DoctorOptions(samples=1))
    assert _doctor_orders_open(base_url, key, secret) == []
    assert not [l for l in report.lines if l.check == "doctor orders" and l.status == "FAIL"]
