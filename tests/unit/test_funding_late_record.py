"""Funding (docs/PERPETUALS.md): an answer without the record is no evidence that nothing was paid.

The exchange may list a funding record minutes after the instant; an empty answer read after
the 60 s delay was once booked as "no funding" for good and the payment was never booked.
"""
from __future__ import annotations

import pytest

from coincall_payloads import FundingPayment
from contracts import Side
from trade_fills import FUNDING_CHECKED_KEY, FUNDING_KEY, FUNDING_RECORD_PATIENCE_SECONDS, FundingAttribution
from tests.unit.test_perp_legs import FundingClient, FundingLedger, _perp_trade

INSTANT = 1_772_438_400_000   # 08:00 UTC


def _payment(fee: float = -1.0) -> FundingPayment:
    return FundingPayment(record_id=1, symbol="BTCUSD", side=Side.BUY, qty=0.01, rate=0.0001, fee=fee,
                          time_ms=INSTANT)


def test_a_record_listed_late_is_booked_when_it_shows():
    client = FundingClient([])
    trade = _perp_trade("A", Side.BUY, 0.01)            # held 0.01 at 08:00: a payment is due
    funding = FundingAttribution(client, FundingLedger({"A": 0.01}))
    funding.attribute([trade], INSTANT / 1000 + 120)
    assert FUNDING_KEY not in trade.metadata and FUNDING_CHECKED_KEY not in trade.metadata   # nothing decided
    assert funding.due(trade, INSTANT / 1000 + 180) == [INSTANT]
    client.payments = [_payment()]
    funding.attribute([trade], INSTANT / 1000 + 150)      # read again once a minute, not every poll
    assert client.reads == 1 and FUNDING_KEY not in trade.metadata
    funding.attribute([trade], INSTANT / 1000 + 900)
    assert trade.legs[0].funding == pytest.approx(-1.0)
    assert trade.metadata[FUNDING_KEY] == {f"BTCUSD@{INSTANT}": -1.0}
    assert funding.due(trade, INSTANT / 1000 + 960) == []


def test_no_record_after_the_patience_is_booked_as_no_payment_with_a_warning(caplog):
    client = FundingClient([])
    trade = _perp_trade("A", Side.BUY, 0.01)
    funding = FundingAttribution(client, FundingLedger({"A": 0.01}))
    funding.attribute([trade], INSTANT / 1000 + FUNDING_RECORD_PATIENCE_SECONDS + 1)
    assert trade.metadata[FUNDING_KEY] == {f"BTCUSD@{INSTANT}": 0.0}
    assert any("booked as no payment" in r.getMessage() for r in caplog.records)


def test_positions_that_net_to_nothing_expect_no_record():
    client = FundingClient([])
    long, short = _perp_trade("A", Side.BUY, 0.01), _perp_trade("B", Side.SELL, 0.01)
    funding = FundingAttribution(client, FundingLedger({"A": 0.01, "B": 0.01}))
    funding.attribute([long, short], INSTANT / 1000 + 120)
    assert long.metadata[FUNDING_KEY] == {f"BTCUSD@{INSTANT}": 0.0} == short.metadata[FUNDING_KEY]
