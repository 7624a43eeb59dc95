"""The ledger answers "which orders changed since t" and "which vanished" without walking them all.

Why (issue 11): the reconciliation asks both once a minute; walking every order ever sent
cost more each day of a month-long backtest. The answers must equal a walk, in recorded
order, whatever order the stamps arrive in (a block fill stamped in the past, a clock stepped
back, a restored store).
"""
from __future__ import annotations

import math
import random

import pytest

from clock import SimulatedClock
from order_ledger import Intent, OrderLedger, OrderStatus
from tests.unit.test_cost_flat import T0, MemoryStore, RandomExchange, _random_walk


def _changed_since(ledger: OrderLedger, since: float) -> list[int]:
    return [o.client_order_id for o in ledger.orders() if float(o.updated_at) >= since]


def _assert_answers_match_a_walk(ledger: OrderLedger, now: float) -> None:
    stamps = sorted({float(o.updated_at) for o in ledger.orders()})
    for since in [-math.inf, now - 600.0, now - 60.0, now, now + 1.0, *stamps[::7]]:
        assert [o.client_order_id for o in ledger.orders_updated_since(since)] == _changed_since(ledger, since)
    assert ledger.vanished_orders() == [o for o in ledger.orders() if o.status is OrderStatus.VANISHED]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_changed_since_equals_a_walk_after_random_sequences(seed):
    ledger, _store, clock = _random_walk(seed, 300)
    _assert_answers_match_a_walk(ledger, clock.now())


def test_stamps_out_of_time_order_still_answer_as_a_walk():
    ledger, store, clock = _random_walk(4, 200)
    rng = random.Random(4)
    ledger.record_block_fill(trade_id="T000000001", trade_seq=1, leg_index=0, intent=Intent.OPEN,
                             symbol="BTCUSD-27MAR26-90000-P", side=1, qty=0.01, price=120.0, fee=0.02,
                             order_id=99_001, filled_at=clock.now() - 5_000.0)      # stamped in the past
    clock = SimulatedClock(start=clock.now() - 3_000.0, speed=0)               # the clock steps back
    ledger._clock = clock
    for order in rng.sample(ledger.orders(), 10):
        ledger.recheck_final(order) if order.status.is_final else ledger.poll(order)
    _assert_answers_match_a_walk(ledger, clock.now())
    restored = OrderLedger(RandomExchange(clock, random.Random(0)), clock, store=store, max_live_per_symbol=50)
    restored.restore(store.load_orders())
    _assert_answers_match_a_walk(restored, clock.now())


def test_vanished_orders_follow_their_status():
    clock = SimulatedClock(start=T0, speed=0)
    ledger = OrderLedger(RandomExchange(clock, random.Random(9)), clock, store=MemoryStore(), max_live_per_symbol=50)
    placed = [ledger.place(trade_id="T000000001", trade_seq=1, leg_index=leg, intent=Intent.OPEN,
                           symbol=f"BTCUSD-27MAR26-{90000 + 1000 * leg}-C", side=1, qty=0.01, price=100.0,
                           tick_size=1.0) for leg in range(3)]
    ledger._update(placed[2], status=OrderStatus.VANISHED)
    ledger._update(placed[0], status=OrderStatus.VANISHED)
    assert ledger.vanished_orders() == [placed[0], placed[2]]                  # recorded order
    ledger._update(placed[0], status=OrderStatus.FILLED)                       # shown again, adopted
    assert ledger.vanished_orders() == [placed[2]]


def test_the_answer_costs_the_recent_orders_not_the_history():
    ledger, _store, clock = _random_walk(5, 400)
    clock.advance(10_000.0)
    assert ledger.orders_updated_since(clock.now() - 600.0) == []
    assert len(ledger._update_keys) == len(ledger.orders())                    # one entry per order
