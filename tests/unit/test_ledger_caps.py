"""The ledger's caps stop runaway opening, never the way out (BEHAVIOUR 4.4: there is no last round).

Why: a kill fighting a book that refuses its prices (10531) or never fills sends about twenty
orders a leg every urgent round, and the kill switch has no breaker. Before this, the
300-orders-per-trade cap refused every order of the trade after about 45 minutes, and the
999-attempt id space of a leg after a few hours: the position could then never be closed by
the daemon again. Now the order count refuses opening orders only, and a reduce-only order
past 999 attempts takes ids its family never used (same clientOrderId format, never an id
used before), until the family has none left, which is refused loudly with what to do.
"""
from __future__ import annotations

import logging
from typing import Any

import pytest

from clock import SimulatedClock
from contracts import Side
from errors import ExchangeError, LedgerCapError
from order_ledger import MAX_ATTEMPT, Intent, LedgerOrder, OrderLedger, OrderStatus, build_client_order_id
from tests.unit.test_ledger_reversible import SYMBOL, T0, Exchange, Store

TRADE, SEQ, LEG = "T000000007", 7, 0


class RefusingExchange(Exchange):
    """Refuses every create (price out of band, 10531) until ``accept`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.accept = False
        self.refused = 0

    def create_order(self, symbol: str, qty: Any, side: Any, price: Any, client_order_id: Any, **kwargs: Any) -> int:
        if not self.accept:
            self.refused += 1
            raise ExchangeError(10531, "price out of band", "POST /open/option/order/create/v1")
        return super().create_order(symbol, qty, side, price, client_order_id, **kwargs)


def world(*, max_orders_per_trade: int = 300,
          store: Store | None = None) -> tuple[SimulatedClock, RefusingExchange, OrderLedger]:
    clock = SimulatedClock(start=T0, speed=0)
    exchange = RefusingExchange()
    return clock, exchange, OrderLedger(exchange, clock, store=store, max_orders_per_trade=max_orders_per_trade)


def send(ledger: OrderLedger, intent: Intent) -> LedgerOrder:
    return ledger.place(trade_id=TRADE, trade_seq=SEQ, leg_index=LEG, intent=intent, symbol=SYMBOL,
                        side=Side.SELL, qty=0.5, price=101.0, tick_size=1.0)


def rounds(ledger: OrderLedger, family: Intent, count: int) -> list[LedgerOrder]:
    """``count`` refused orders as an engine sends them: the family's intent, then its requotes."""
    return [send(ledger, family if n == 0 else family.requote()) for n in range(count)]


def test_the_order_count_stops_opening_but_never_a_reduce_only_order_and_says_so_once(caplog):
    _clock, exchange, ledger = world(max_orders_per_trade=5)
    rounds(ledger, Intent.OPEN, 5)
    with pytest.raises(LedgerCapError, match="reached 5 orders"):
        send(ledger, Intent.OPEN_REQUOTE)

    with caplog.at_level(logging.CRITICAL, logger="order_ledger"):
        kills = rounds(ledger, Intent.KILL, 3)
    exchange.accept = True
    last = send(ledger, Intent.KILL_REQUOTE)

    assert [o.status for o in kills] == [OrderStatus.REJECTED] * 3 and last.status is OrderStatus.LIVE
    passed = [r for r in caplog.records if r.getMessage().startswith("ledger cap passed")]
    assert len(passed) == 1 and TRADE in passed[0].getMessage()


def test_a_kill_fight_longer_than_both_caps_still_sends_its_order_on_a_new_id():
    _clock, exchange, ledger = world()
    fought = rounds(ledger, Intent.KILL, 1300)                # an afternoon of refused urgent rounds
    exchange.accept = True

    last = send(ledger, Intent.KILL_REQUOTE)

    assert last.status is OrderStatus.LIVE and last.intent.family() is Intent.KILL
    ids = [o.client_order_id for o in [*fought, last]]
    assert len(set(ids)) == len(ids) and exchange.refused == 1300
    assert all(o.intent.family() is Intent.KILL for o in fought)


def test_past_999_attempts_an_opening_is_refused_and_a_close_takes_the_lowest_attempt_its_digit_never_had():
    _clock, _exchange, ledger = world(max_orders_per_trade=10_000)   # the id space, not the order count
    for attempt in range(1, MAX_ATTEMPT + 1):                 # odd attempts CLOSE, even ones CLOSE_REQUOTE
        send(ledger, Intent.CLOSE if attempt % 2 else Intent.CLOSE_REQUOTE)

    with pytest.raises(LedgerCapError, match=f"used all {MAX_ATTEMPT} attempts"):
        send(ledger, Intent.OPEN)
    close, requote, kill = send(ledger, Intent.CLOSE), send(ledger, Intent.CLOSE_REQUOTE), send(ledger, Intent.KILL)

    assert (close.intent, close.attempt) == (Intent.CLOSE, 2)
    assert (requote.intent, requote.attempt) == (Intent.CLOSE_REQUOTE, 1)
    assert (kill.intent, kill.attempt) == (Intent.KILL, 1)
    assert kill.client_order_id == build_client_order_id(101, SEQ, LEG, Intent.KILL, 1)
    assert ledger.attempts_used(SEQ, LEG) == MAX_ATTEMPT


def test_a_restart_continues_on_spare_ids_without_ever_reusing_one():
    store = Store()
    clock, exchange, ledger = world(store=store)
    before = rounds(ledger, Intent.CLOSE, MAX_ATTEMPT + 40)

    again = OrderLedger(exchange, clock, store=store)
    again.restore(store.load_orders())
    after = rounds(again, Intent.CLOSE, 40)

    ids = [o.client_order_id for o in [*before, *after]]
    assert len(set(ids)) == len(ids) and all(o.intent.family() is Intent.CLOSE for o in after)


def test_a_family_with_no_id_left_is_refused_with_one_critical_naming_the_leg_and_what_to_do(caplog):
    _clock, exchange, ledger = world()
    rounds(ledger, Intent.CLOSE, 2 * MAX_ATTEMPT)             # every CLOSE and CLOSE_REQUOTE id is used

    with caplog.at_level(logging.CRITICAL, logger="order_ledger"):
        for _ in range(3):
            with pytest.raises(LedgerCapError, match="every clientOrderId of the CLOSE family"):
                send(ledger, Intent.CLOSE_REQUOTE)

    told = [r.getMessage() for r in caplog.records if "no CLOSE order can be sent" in r.getMessage()]
    assert len(told) == 1
    assert TRADE in told[0] and f"leg {LEG}" in told[0] and "python main.py kill" in told[0]
    exchange.accept = True
    assert send(ledger, Intent.KILL).status is OrderStatus.LIVE   # the kill has ids of its own


def test_a_block_fill_past_999_attempts_is_still_recorded():
    _clock, _exchange, ledger = world()
    rounds(ledger, Intent.CLOSE, MAX_ATTEMPT)                 # CLOSE had attempt 1, CLOSE_REQUOTE the rest

    fill = ledger.record_block_fill(trade_id=TRADE, trade_seq=SEQ, leg_index=LEG, intent=Intent.CLOSE,
                                    symbol=SYMBOL, side=Side.SELL, qty=0.5, price=101.0, fee=0.01,
                                    order_id=4242, filled_at=T0)

    assert fill.status is OrderStatus.FILLED and (fill.intent, fill.attempt) == (Intent.CLOSE, 2)
    assert ledger.leg_fill(TRADE, LEG, Intent.CLOSE)[0] == 0.5
