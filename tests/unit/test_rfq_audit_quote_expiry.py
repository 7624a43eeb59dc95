"""RFQ audit, finding F5: a quote whose remaining life cannot be read is not accepted.

A quote is taken only while it is valid for at least ``min_quote_life_seconds``
(BEHAVIOUR.md §6.4 step 3). A quote without a readable ``expiryTime`` skipped that check: a
gate that cannot be evaluated let the accept through. It now fails closed.
"""
from __future__ import annotations

import logging

import pytest

from clock import SimulatedClock
from coincall_payloads import parse_quote
from execution_job import JobStatus, LegTarget
from order_ledger import Intent, OrderLedger
from rfq import RFQExecutor, RFQParams, quote_problem, rank_candidates
from tests.unit.test_rfq import BUY, C95, NOW, P85, WIDE, FakeMarket, _drive
from tests.unit.test_rfq_safety import LONG_STRANGLE, TRADE, ScriptedClient, kinds

LEGS = [LegTarget(0, C95, BUY, 1.0), LegTarget(1, P85, BUY, 1.0)]


def raw_quote(expiry) -> dict:
    raw = {"quoteId": "9", "state": "OPEN",
           "legs": [{"instrumentName": C95, "side": "SELL", "price": "500", "quantity": "1"},
                    {"instrumentName": P85, "side": "SELL", "price": "500", "quantity": "1"}]}
    if expiry is not None:
        raw["expiryTime"] = expiry
    return raw


@pytest.mark.parametrize("expiry", [None, "soon", float("nan")], ids=["missing", "text", "nan"])
def test_a_quote_without_a_readable_expiry_time_is_not_accepted(expiry, caplog):
    quote = parse_quote(raw_quote(expiry))
    assert quote is not None and quote.expiry_time is None
    problem = quote_problem(quote, LEGS, NOW, 1.0, WIDE)
    assert problem is not None and "expiryTime" in problem
    with caplog.at_level(logging.DEBUG, logger="rfq"):
        assert rank_candidates([quote], LEGS, None, RFQParams(min_improvement_pct=None), NOW, bands=WIDE) == []
    assert any("expiryTime" in r.getMessage() for r in caplog.records)


def test_a_quote_with_its_expiry_time_is_still_judged_on_it():
    assert quote_problem(parse_quote(raw_quote(int((NOW + 300) * 1000))), LEGS, NOW, 1.0, WIDE) is None
    assert "life left" in quote_problem(parse_quote(raw_quote(int((NOW + 0.5) * 1000))), LEGS, NOW, 1.0, WIDE)


class QuotesWithoutExpiry(ScriptedClient):
    def rfq_quotes(self, request_id):
        quotes = super().rfq_quotes(request_id)
        for quote in quotes:
            del quote["expiryTime"]
        return quotes


def test_a_job_never_accepts_a_quote_without_an_expiry_time():
    clock = SimulatedClock(start=NOW, speed=0)
    client = QuotesWithoutExpiry(clock, LONG_STRANGLE, accept=AssertionError("accepted"))
    ledger = OrderLedger(client, clock)
    job = RFQExecutor(client, ledger, FakeMarket(), clock).start(TRADE, LONG_STRANGLE, Intent.OPEN,
                                                                 RFQParams(timeout_seconds=20.0))
    _drive(job, clock, 40.0)
    assert "quotes" in kinds(client) and "accept" not in kinds(client)
    assert job.status is JobStatus.FAILED and "no acceptable quote" in job.result().reason
