"""The daemon re-measures the exchange's clock while it runs (API.md 2.2: every 10 minutes).

Before, the signing offset was measured at start and after a 10557 only: a host clock that
drifted in between had its next create refused (an open then failed half-way and was
unwound). The loop now asks ``sync_time_if_due`` on every wake; a failed read keeps the offset.
"""
from __future__ import annotations

import main as main_module
from simulator.faults import FaultRule
from tests.integration.test_daemon_e2e import env_for


def run_for(tmp_path, sim, seconds: int) -> int:
    env = env_for(tmp_path, COINCALL_BASE_URL=sim.base_url, COINCALL_API_KEY_SIM=sim.api_key,
                  COINCALL_API_SECRET_SIM=sim.api_secret)
    return main_module.main(["--run-for", str(seconds), "--strategy", "micro_strangle"], clock=sim.clock, env=env,
                            dotenv_path=None)


def test_the_server_time_is_read_again_every_ten_minutes(tmp_path, sim):
    before = sim.counts.get("server_time", 0)
    assert run_for(tmp_path, sim, 1900) == 0
    # once at start, then at 10, 20 and 30 minutes
    assert sim.counts["server_time"] - before == 4


def test_a_failing_read_is_said_and_tried_again_at_the_next_wake(tmp_path, sim):
    sim.faults.add(FaultRule(mode="http_5xx", endpoint="server_time", count=3))   # start-up and two wakes
    before = sim.counts.get("server_time", 0)
    assert run_for(tmp_path, sim, 60) == 0
    log = (tmp_path / "logs" / "trading.log").read_text()
    assert "could not read the exchange time at start-up" in log
    assert log.count("server time re-sync failed") == 1                           # said once, not every wake
    assert sim.counts["server_time"] - before == 4                                # then it worked: no more asks
