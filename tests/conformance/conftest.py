"""The conformance suite's one fixture: the exchange under test (docs/CONFORMANCE.md).

``target`` is, by default, a simulator started in this process on a frozen simulated clock.
With ``pytest -m live`` and ``COINCALL_LIVE_BASE_URL``, ``COINCALL_LIVE_API_KEY`` and
``COINCALL_LIVE_API_SECRET`` set, it is that endpoint instead, reached like any exchange.
A live target on a host other than 127.0.0.1 is used only when the run selected ``-m live``:
a plain ``python -m pytest`` never talks to anything but the loopback interface.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from clock import Clock, RealClock, SimulatedClock
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from doctor_orders import OrderRunContext, cleanup, DoctorJournal

LIVE_URL = "COINCALL_LIVE_BASE_URL"
LIVE_KEY = "COINCALL_LIVE_API_KEY"
LIVE_SECRET = "COINCALL_LIVE_API_SECRET"
# Conformance orders use the doctor id range (intent digit 0) under a prefix of their own, so
# a cleanup by prefix finds them and no daemon or doctor id can ever be hit.
CONFORMANCE_PREFIX = 899


@dataclass
class Target:
    client: CoincallClient
    clock: Clock
    live: bool
    credentials: Credentials
    base_url: str
    sim: object | None = None
    placed: list[int] = field(default_factory=list)

    def skip_live(self, why: str) -> None:
        """Skip, loudly, what a live account cannot do safely."""
        if self.live:
            pytest.skip(f"LIVE TARGET: not run against a real account: {why}")


def _live_selected(config: pytest.Config) -> bool:
    return "live" in str(config.getoption("-m") or "")


@pytest.fixture
def target(request, sim_factory, sim_clock, tmp_path):
    url = os.environ.get(LIVE_URL)
    # Live only when the run asked for it with -m live: a plain run never leaves 127.0.0.1.
    if _live_selected(request.config):
        if not url:
            pytest.skip(f"-m live needs {LIVE_URL}, {LIVE_KEY} and {LIVE_SECRET}")
        key, secret = os.environ.get(LIVE_KEY), os.environ.get(LIVE_SECRET)
        if not key or not secret:
            pytest.skip(f"-m live needs {LIVE_KEY} and {LIVE_SECRET}")
        credentials = Credentials(key, secret, source=LIVE_KEY)
        clock: Clock = RealClock()
        client = CoincallClient(ClientSettings(base_url=url, max_retries=2), credentials, clock)
        built = Target(client, clock, live=True, credentials=credentials, base_url=url)
    else:
        sim = sim_factory()
        credentials = Credentials(sim.api_key, sim.api_secret, source="simulator")
        client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0), credentials, sim_clock)
        built = Target(client, sim_clock, live=False, credentials=credentials, base_url=sim.base_url, sim=sim)
    client.sync_time()
    yield built
    context = OrderRunContext(client=client, clock=built.clock, prefix=CONFORMANCE_PREFIX, state_dir=tmp_path,
                              environment="conformance", base_url=built.base_url, credentials=credentials,
                              ts_diff_ms=5000)
    lines = cleanup(context, DoctorJournal(tmp_path / "journal.json"))
    client.close()
    assert not [line for line in lines if line.status == "FAIL"], lines
