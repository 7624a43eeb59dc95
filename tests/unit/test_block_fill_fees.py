"""A block fill whose record leaves out its fee is booked with an estimate, never as free.

A block fill is final: nothing re-reads it. Booked at fee 0, the trade's PnL would be
overstated for good. The estimate is the taker schedule (``fees.option_taker_fee``), its
premium cap when the index is unknown, so the booked PnL is never better than the truth.
"""
from __future__ import annotations

import logging

import pytest

from clock import SimulatedClock
from coincall_payloads import parse_block_legs
from fees import FEE_CAP_OF_PREMIUM, TAKER_FEE_RATE, option_taker_fee
from order_ledger import Intent, OrderLedger
from rfq import adopt_block_trade
from tests.unit.test_rfq import NoExchange
from tests.unit.test_rfq_audit_restart_adoption import LATER, accept_marker, filled, listing, run_accept
from tests.unit.test_rfq_safety import LONG_STRANGLE, NOW, TRADE, our_block


def without_fees(record: dict, *, index: str | None = None) -> dict:
    for leg in record["legs"]:
        del leg["fee"]
        if index is not None:
            leg["indexPrice"] = index
    return record


def booked_fees(ledger: OrderLedger) -> list[float]:
    return [order.fee for order in ledger.orders(TRADE.id)]


def test_the_schedule_takes_the_lower_of_the_index_rate_and_the_premium_cap():
    assert option_taker_fee(0.5, 2000.0, 90_000.0) == pytest.approx(0.5 * 90_000.0 * TAKER_FEE_RATE)
    assert option_taker_fee(0.5, 10.0, 90_000.0) == pytest.approx(0.5 * 10.0 * FEE_CAP_OF_PREMIUM)
    # No index (or a nonsense one): the cap, the fee's upper bound.
    assert option_taker_fee(0.5, 2000.0, None) == pytest.approx(0.5 * 2000.0 * FEE_CAP_OF_PREMIUM)
    assert option_taker_fee(0.5, 2000.0, 0.0) == pytest.approx(0.5 * 2000.0 * FEE_CAP_OF_PREMIUM)


def test_a_leg_without_fee_parses_as_unknown_not_as_zero():
    legs = parse_block_legs([{"instrumentName": "X", "side": "BUY", "price": "10", "quantity": "0.5",
                              "indexPrice": "88012.5"},
                             {"instrumentName": "Y", "side": "BUY", "price": "10", "quantity": "0.5", "fee": "0"}])
    assert (legs[0].fee, legs[0].index_price) == (None, 88012.5)
    assert legs[1].fee == 0.0            # a reported zero is a fact, kept


def test_an_accept_answer_without_fees_books_the_estimate_and_says_so(caplog):
    record = without_fees(our_block(LONG_STRANGLE), index="90000")
    with caplog.at_level(logging.WARNING, logger="rfq"):
        env = run_accept(lambda quote_id: record)
    price = float(record["legs"][0]["price"])
    assert booked_fees(env.ledger) == [option_taker_fee(0.5, price, 90_000.0)] * 2
    assert all(fee > 0 for fee in booked_fees(env.ledger))
    assert "no fee reported; booked an estimated taker fee" in caplog.text


def test_a_block_trade_adopted_at_restart_without_fees_books_the_capped_estimate():
    ledger = OrderLedger(NoExchange(), SimulatedClock(start=NOW, speed=0))
    record = without_fees(our_block(LONG_STRANGLE))
    found, recorded = adopt_block_trade_once(ledger, record)
    assert (found, recorded) == (True, 2) and filled(ledger) == [0.5, 0.5]
    price = float(record["legs"][0]["price"])
    assert booked_fees(ledger) == [pytest.approx(0.5 * price * FEE_CAP_OF_PREMIUM)] * 2


def test_a_reported_fee_is_booked_as_reported():
    ledger = OrderLedger(NoExchange(), SimulatedClock(start=NOW, speed=0))
    adopt_block_trade_once(ledger, our_block(LONG_STRANGLE))
    assert booked_fees(ledger) == [0.1, 0.1]
    assert [order.intent for order in ledger.orders(TRADE.id)] == [int(Intent.OPEN)] * 2


def adopt_block_trade_once(ledger: OrderLedger, record: dict) -> tuple[bool, int]:
    return adopt_block_trade(listing(record), ledger, accept_marker(), LATER, since=NOW - 30.0)
