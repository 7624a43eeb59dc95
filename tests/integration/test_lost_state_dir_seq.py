"""A whole state directory lost (trader.db and exchange_identity.json) with every order of ours
older than the exchange's 89-day history (audit of 2026-12-07).

The next start cannot tell itself from the first start of a new state directory. It used to
skip the clock floor there (docs/RECOVERY.md L2) and number its trades from 1 again, sending
clientOrderIds it had already sent; now every new directory starts at the clock's floor.
"""
from __future__ import annotations

import shutil

from app import StateIdentityGate
from config import load_settings
from stop_flag import StopFlag

from order_ledger import parse_client_order_id
from tests.integration.restart_rig import START, coid_of, creates_since, strangle_config
from tests.integration.test_restart_reconciliation import make_rig, rig  # noqa: F401  (fixtures)

DAY = 86_400.0


def start_like_run_locked(rig, configs):
    """A life, plus the state-directory gate app._start_and_loop runs before the first
    reconciliation (the rig omits it): it marks a directory without an exchange record new."""
    life = rig.lives.start(configs)
    env = {"TRADING_ENVIRONMENT": "sim", "COINCALL_BASE_URL": rig.sim.base_url,
           "COINCALL_API_KEY_SIM": rig.sim.api_key, "COINCALL_API_SECRET_SIM": rig.sim.api_secret,
           "STATE_DIR": str(life.state_dir), "LOG_DIR": str(life.log_dir), "POLL_INTERVAL_SECONDS": "10"}
    settings = load_settings(env, dotenv_path=None)
    assert StateIdentityGate(life.ctx, settings, StopFlag()).verify_at_start() is None
    return life


def test_a_lost_state_directory_never_reuses_a_client_order_id(make_rig):
    rig = make_rig(start=START - 100 * DAY)
    first_start = rig.clock.now()
    life = start_like_run_locked(rig, [strangle_config()])
    trade = life.run_until_open()
    life.crash()
    used = {coid_of(r) for r in creates_since(rig.sim, first_start)}
    assert used and {parse_client_order_id(c).trade_seq for c in used} == {trade.seq}

    rig.clock.set_time(START)                       # 100 days later: all of it is out of the 89-day history
    shutil.rmtree(life.state_dir)                   # the whole state directory is lost (disk, operator, redeploy)
    restarted = rig.clock.now()

    again = start_like_run_locked(rig, [strangle_config()])
    second = again.run_until_open(300)
    sent = {coid_of(r) for r in creates_since(rig.sim, restarted)}
    assert sent, "life 2 sent nothing"
    reused = sorted(sent & used)
    assert not reused, f"clientOrderIds sent again after the lost state directory: {reused} (trade seq {second.seq})"
