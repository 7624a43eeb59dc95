"""No new exposure on a blocked symbol (audit entry2 B1; BEHAVIOUR.md 5 gate 10, 6.1 symbol blocks).

The runner refuses an entry whose resolved legs include a symbol the ledger blocks: no trade,
no failed open, no pause, the reason said once. The RFQ engine, whose block trades are no
orders the ledger could refuse, refuses on its own too (defence in depth): no RFQ created,
no quote accepted, no fallback engine started, so nothing is sent.
"""
from __future__ import annotations

import logging

import pytest

from execution_job import JobStatus
from order_ledger import Intent
from rfq import RFQParams
from tests.unit.test_rfq import NOW, P85, _drive
from tests.unit.test_rfq_safety import CLOSE_LONG_STRANGLE, LONG_STRANGLE, kinds, rfq_env
from tests.unit.test_runner_gates import Harness, config, fake_resolution  # noqa: F401 (autouse: fake legs)

WHY = "position on the exchange is -0.1, opposite to our +0.1"
PUT = "BTCUSD-4MAR26-91000-P"            # leg 1 of the strangle the runner gate tests resolve


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


def test_an_entry_with_a_blocked_leg_creates_nothing_says_so_once_and_counts_no_failure(caplog):
    h = Harness(config(max_open_failures_per_day=1))
    h.ledger.blocks[PUT] = WHY
    h.ledger.blocks["BTCUSD-4MAR26-80000-P"] = "a symbol of no leg"
    with caplog.at_level(logging.INFO, logger="strategy"):
        for _ in range(5):
            h.tick()
            h.advance(10.0)

    assert h.created == []
    assert not h.runner.is_paused and h.runner.status()["failed_today"] == 0
    said = [r for r in caplog.records if "no entry" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert f"leg 1 {PUT} ({WHY})" in said[0].getMessage() and "80000" not in said[0].getMessage()

    del h.ledger.blocks[PUT]                     # python main.py resume NAME; the other block stays
    h.tick()
    assert len(h.created) == 1


# ---------------------------------------------------------------------------------------------
# The RFQ engine
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("legs, intent, params", [
    (LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0, open_fallback="limit")),
    (CLOSE_LONG_STRANGLE, Intent.CLOSE, RFQParams(timeout_seconds=300.0, close_fallback="limit")),
], ids=["open", "close"])
def test_no_rfq_is_created_with_a_blocked_leg_and_no_fallback_sends_the_other_legs(legs, intent, params):
    env = rfq_env(legs, intent, params)
    env.ledger.block_symbol(P85, WHY)

    _drive(env.job, env.clock, 60.0)

    assert "create" not in kinds(env.client) and "accept" not in kinds(env.client)
    assert env.job.status is JobStatus.FAILED and env.job.fallback_mode is None
    assert env.limit.started == [] and env.client.orders == []
    reason = env.job.result().reason
    assert P85 in reason and WHY in reason


def test_a_block_that_arrives_while_quotes_come_in_stops_the_accept_cancels_the_rfq_and_sends_nothing():
    env = rfq_env(LONG_STRANGLE, Intent.OPEN, RFQParams(timeout_seconds=300.0, open_fallback="limit"),
                  quotes_from=NOW + 10.0)
    _drive(env.job, env.clock, 4.0)
    assert env.job.request_id is not None and "accept" not in kinds(env.client)   # created, no quote yet

    env.ledger.block_symbol(P85, WHY)            # e.g. a reconciliation verdict in between
    _drive(env.job, env.clock, 60.0)

    assert "accept" not in kinds(env.client) and kinds(env.client)[-1] == "cancel"
    assert env.job.status is JobStatus.FAILED and env.job.fallback_mode is None
    assert env.limit.started == [] and env.client.orders == []
    assert P85 in env.job.result().reason
