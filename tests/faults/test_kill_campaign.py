"""The kill campaign (issue 5 acceptance; BEHAVIOUR.md 8 row 17), in CI size.

A simulator process keeps its state while the real daemon, in a subprocess at 60x, is
killed with SIGKILL at seeded moments aimed at every lifecycle state (mid-open, partially
filled, mid-requote, mid-RFQ, open, mid-close) and restarted at once. The verdict comes from
the exchange's records after a drain run; see ``kill_harness`` and ``campaign_invariants``.

``CAMPAIGN_KILLS`` / ``CAMPAIGN_SEED`` / ``CAMPAIGN_FAULT_RATE`` scale it up (default 30 kills,
seed 17, 3 % of requests failing as well);
``python tests/faults/run_kill_campaign.py --kills N --seed S`` runs it outside pytest.
The verdict never depends on machine speed: a slow machine gets fewer trades and more
fallback-timed kills, and every invariant must hold all the same.
"""
from __future__ import annotations

import logging
import os

import pytest

from tests.faults.kill_harness import TARGETS, CampaignConfig, run_campaign

logger = logging.getLogger(__name__)

CI_KILLS = 30
CI_SEED = 17
CI_HTTP_FAULT_RATE = 0.03   # the kills come on top of failing requests (5xx, 429, 10000, drops, lost answers)
CI_MUTATION_RATE = 6.0      # and of code-0-but-wrong answer windows, per simulated hour (issue 9)


@pytest.mark.slow
def test_incident_17_sigkill_during_a_busy_run_never_corrupts_the_store(tmp_path):
    kills = int(os.environ.get("CAMPAIGN_KILLS", CI_KILLS))
    seed = int(os.environ.get("CAMPAIGN_SEED", CI_SEED))
    fault_rate = float(os.environ.get("CAMPAIGN_FAULT_RATE", CI_HTTP_FAULT_RATE))
    mutation_rate = float(os.environ.get("CAMPAIGN_MUTATION_RATE", CI_MUTATION_RATE))
    report = run_campaign(CampaignConfig(workdir=tmp_path / "campaign", kills=kills, seed=seed,
                                         http_fault_rate=fault_rate, mutation_rate=mutation_rate))
    summary = report.format()
    logger.info("%s", summary)

    assert len(report.kills) == kills and not report.self_exits, summary     # killed every time, never died alone
    assert {kill.target for kill in report.kills} == set(TARGETS)          # every lifecycle state was aimed at
    assert not report.store_failures, summary                               # incident 17: the store always opens
    assert report.drained and report.final_exit_code == 0, summary          # all terminal, clean SIGTERM exit
    assert report.tally is not None and report.tally.trades_opened >= 1, summary
    # issue 13: the hedged strategy rebalances right after each open, so hedge orders are in the run
    assert report.tally.hedged_trades >= 1 and report.tally.hedge_rebalances >= 1, summary
    assert report.violations == [], summary
