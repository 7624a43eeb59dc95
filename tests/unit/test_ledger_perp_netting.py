"""A perp close the account nets against another of our trades goes out whole, not reduce-only,
and only where our books explain the account exactly (docs/PERPETUALS.md, "Closes across
trades that net").

Trade T7's leg 2 is long 0.01 BTCUSD; the account is one-way, so what it shows is the sum of
every trade's legs. Each test changes one condition of ``OrderLedger._netting_close`` and
checks that the order then keeps the reduce-only cap (fail closed).
"""
from __future__ import annotations

from typing import Mapping

import pytest

from clock import SimulatedClock
from contracts import Side
from order_ledger import Intent, OrderLedger, OrderStatus
from tests.unit.test_ledger_perp_cap import Perps, close, ledger_for
from tests.unit.test_ledger_reversible import T0

OWN = ("T000000007", 2)   # the (trade, leg) ``close`` sells for


class Books:
    """Our trades' perp legs as the lifecycle would give them (``seams.PerpBooks``)."""

    def __init__(self, legs: Mapping[tuple[str, int], float]) -> None:
        self.legs = dict(legs)
        self.asked: list[str] = []

    def perp_legs(self, symbol: str) -> dict[tuple[str, int], float]:
        self.asked.append(symbol)
        return dict(self.legs)


def netting_ledger(account: float, legs: Mapping[tuple[str, int], float]) -> tuple[OrderLedger, Perps]:
    perps = Perps(SimulatedClock(start=T0, speed=0), position=account)
    ledger = ledger_for(perps)
    ledger.attach_perp_books(Books(legs))
    return ledger, perps


def test_a_close_netted_to_a_flat_account_goes_whole_and_without_reduce_only():
    ledger, perps = netting_ledger(0.0, {OWN: 0.01, ("T000000008", 0): -0.01})

    order = close(ledger, qty=0.01)

    assert order.status is OrderStatus.LIVE and order.reduce_only is False
    assert len(perps.posts) == 1
    assert perps.posts[0]["qty"] == pytest.approx(0.01) and perps.posts[0]["reduce_only"] is False


def test_a_close_partly_netted_goes_whole_through_zero_to_what_the_other_trade_holds():
    ledger, perps = netting_ledger(0.01, {OWN: 0.02, ("T000000008", 0): -0.01})

    order = close(ledger, qty=0.02)

    assert order.reduce_only is False and perps.posts[0]["qty"] == pytest.approx(0.02)


def test_a_close_the_account_covers_stays_reduce_only_without_asking_the_books():
    ledger, perps = netting_ledger(0.03, {OWN: 0.01, ("T000000008", 0): 0.02})

    order = close(ledger, qty=0.01)

    assert order.reduce_only is True and perps.posts[0]["reduce_only"] is True
    assert perps.posts[0]["qty"] == pytest.approx(0.01)


@pytest.mark.parametrize("account, legs, qty, sent, why", [
    (0.0, {OWN: 0.01, ("T000000008", 0): -0.01}, 0.02, None, "more than its own leg"),
    (0.0, {OWN: -0.01, ("T000000008", 0): 0.01}, 0.01, None, "its own leg is on the order's side"),
    (0.0, {("T000000008", 0): 0.0}, 0.01, None, "its own leg is not in the books"),
    (-0.01, {OWN: 0.01, ("T000000008", 0): -0.01}, 0.01, None, "a short nobody of ours explains"),
    (0.0, {OWN: 0.01, ("T000000008", 0): -0.02}, 0.01, None, "a fill not yet booked (books -0.01, account flat)"),
    (0.005, {OWN: 0.01}, 0.01, 0.005, "half the leg closed outside the daemon, not yet booked"),
])
def test_a_close_stays_capped_where_the_books_do_not_explain_the_account_or_its_own_leg(account, legs, qty, sent,
                                                                                         why):
    ledger, perps = netting_ledger(account, legs)

    order = close(ledger, qty=qty)

    assert order.reduce_only is True, why
    if sent is None:
        assert order.status is OrderStatus.NOT_PLACED and perps.posts == [], why   # capped at nothing
    else:
        assert [(post["qty"], post["reduce_only"]) for post in perps.posts] == [(pytest.approx(sent), True)], why


def test_without_books_attached_a_close_is_always_reduce_only():
    perps = Perps(SimulatedClock(start=T0, speed=0), position=0.0)

    order = close(ledger_for(perps), qty=0.01)

    assert order.status is OrderStatus.NOT_PLACED and order.reduce_only is True and perps.posts == []


def test_two_position_rows_on_the_symbol_keep_the_cap():
    ledger, perps = netting_ledger(0.01, {OWN: 0.02, ("T000000008", 0): -0.01})
    hedge_mode = perps.perp_positions()[0]
    perps.perp_positions = lambda: [hedge_mode, hedge_mode]   # type: ignore[method-assign]

    order = close(ledger, qty=0.02)

    assert order.reduce_only is True and perps.posts[0]["qty"] == pytest.approx(0.01)


def test_an_opening_perp_order_never_asks_the_books():
    books = Books({OWN: 0.01})
    perps = Perps(SimulatedClock(start=T0, speed=0), position=0.0)
    ledger = ledger_for(perps)
    ledger.attach_perp_books(books)
    ledger.place(trade_id="T000000007", trade_seq=7, leg_index=2, intent=Intent.OPEN, symbol="BTCUSD",
                 side=Side.BUY, qty=0.01, price=100_000.0, tick_size=0.1, lot=0.001)

    assert books.asked == [] and perps.posts[0]["reduce_only"] is False


def test_books_missing_perp_legs_are_refused_when_attached():
    ledger = ledger_for(Perps(SimulatedClock(start=T0, speed=0)))

    with pytest.raises(TypeError, match="perp_legs"):
        ledger.attach_perp_books(object())   # type: ignore[arg-type]
