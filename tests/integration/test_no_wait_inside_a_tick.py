"""No code waits inside a tick (BEHAVIOUR 6.0): the daemon's client never sleeps to retry a GET.

A retry that waits inside the call would hold up every other trade's exits for seconds; the
daemon instead reports the failure at once and every reader tries again on its next tick.
"""
from __future__ import annotations

import pytest

from app import build_context
from config import load_settings
from errors import SnapshotError
from simulator.faults import FaultRule


def test_a_failed_positions_read_returns_at_once_and_the_next_tick_reads_again(sim, tmp_path):
    settings = load_settings({"TRADING_ENVIRONMENT": "sim", "COINCALL_BASE_URL": sim.base_url,
                              "COINCALL_API_KEY_SIM": sim.api_key, "COINCALL_API_SECRET_SIM": sim.api_secret,
                              "STATE_DIR": str(tmp_path / "state"), "LOG_DIR": str(tmp_path / "logs")},
                             dotenv_path=None)
    ctx = build_context(settings, clock=sim.clock, state_dir=tmp_path / "state", log_dir=tmp_path / "logs")
    try:
        sim.faults.add(FaultRule(mode="http_5xx", endpoint="positions", count=1, http_status=503))
        before = sim.clock.now()
        with pytest.raises(SnapshotError):
            ctx.account_manager.snapshot()
        assert sim.clock.now() == before                  # no back-off sleep inside the call
        assert len(sim.requests_for("positions")) == 1    # and no hidden second attempt
        snapshot = ctx.account_manager.snapshot()         # the next tick's read succeeds
        assert snapshot.timestamp == before and len(sim.requests_for("positions")) == 2
    finally:
        ctx.close()
