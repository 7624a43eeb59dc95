"""Finished trades' orders leave memory for the state store, and every answer stays the same.

Why (issue 11): the ledger kept every order the daemon ever sent, about a kilobyte each with its
indexes, so a daemon's memory grew with its history (a month-long backtest measured it; a live
daemon running for a year would hold a hundred thousand orders). ``OrderLedger.archive_trade``
lets the store alone keep a finished trade's orders; what must never change is the answer to
"is this order ours?" (a forgotten order would make our own fills look like somebody else's)
and the fills of any trade that is read again.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from clock import SimulatedClock
from order_ledger import (
    ARCHIVE_QUIET_SECONDS,
    PRESUMED_VERDICT_HORIZON_SECONDS,
    ArchivedIds,
    Intent,
    OrderLedger,
    OrderStatus,
)
from persistence import StateStore
from tests.unit.test_cost_flat import T0, RandomExchange
from tests.unit.test_trade_lifecycle import fill_close, open_trade, world  # noqa: F401 - the fixture
from trade_lifecycle import ARCHIVE_SWEEP_SECONDS, TradeState

TRADES = ["T000000001", "T000000002", "T000000003"]
SYMBOL = "BTCUSD-27MAR26-{strike}-C"


class FailingStore:
    """A state store whose writes fail from a given moment on (disk full)."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.failing = False

    def save_order(self, record: dict) -> None:
        if self.failing:
            raise OSError("disk full")
        self.inner.save_order(record)

    def append_event(self, kind: str, payload: dict, ts: float) -> int:
        return self.inner.append_event(kind, payload, ts)

    def load_orders(self, trade_id: str | None = None) -> list[dict]:
        return self.inner.load_orders(trade_id)

    def load_order(self, client_order_id: int) -> dict | None:
        return self.inner.load_order(client_order_id)


def _trading(tmp_path: Path, seed: int = 1, steps: int = 120) -> tuple[OrderLedger, StateStore, SimulatedClock]:
    """A ledger over a real state store after a seeded walk of places, polls and cancels on three
    trades, then every order brought to a final state and left quiet past the archive's wait."""
    rng = random.Random(seed)
    clock = SimulatedClock(start=T0, speed=0)
    store = StateStore(tmp_path / "state.db", clock=clock)
    ledger = OrderLedger(RandomExchange(clock, rng), clock, store=store, max_live_per_symbol=50)
    for step in range(steps):
        clock.advance(rng.choice((0.5, 2.0, 40.0)))
        index = rng.randrange(len(TRADES))
        leg = rng.randrange(3)
        roll = rng.random()
        if roll < 0.5 and not _live_on(ledger, TRADES[index], leg):
            ledger.place(trade_id=TRADES[index], trade_seq=index + 1, leg_index=leg,
                         intent=rng.choice((Intent.OPEN, Intent.CLOSE)),
                         symbol=SYMBOL.format(strike=90000 + 1000 * leg), side=rng.choice((1, 2)),
                         qty=rng.choice((0.01, 0.02, 0.1)), price=100.0, tick_size=1.0)
        elif roll < 0.8 and ledger.live_orders():
            ledger.poll(rng.choice(ledger.live_orders()))
        elif ledger.live_orders():
            ledger.cancel(rng.choice(ledger.live_orders()))
        if step % 30 == 0:
            ledger.record_block_fill(trade_id=TRADES[index], trade_seq=index + 1, leg_index=leg,
                                     intent=Intent.OPEN, symbol=SYMBOL.format(strike=80000), side=1, qty=0.01,
                                     price=120.0, fee=0.02, order_id=7_000 + step, filled_at=clock.now())
    for _ in range(5):   # an order whose create timed out is resolved by a later poll
        clock.advance(60.0)
        for order in ledger.live_orders():
            ledger.poll(order)
            if not order.status.is_final:
                ledger.cancel_until_final(order)
    assert not ledger.live_orders()
    # A create that timed out and was never found is a presumed NOT_PLACED, which the exchange
    # may still contradict: its trade stays in memory for the horizon of that verdict
    # (docs/RECOVERY.md O9), every other one for the quiet hour.
    clock.advance(max(ARCHIVE_QUIET_SECONDS, PRESUMED_VERDICT_HORIZON_SECONDS) + 1.0)
    return ledger, store, clock


def _live_on(ledger: OrderLedger, trade_id: str, leg: int) -> bool:
    return any(o.leg_index == leg for o in ledger.live_orders(trade_id))


def _picture(ledger: OrderLedger, trade_id: str) -> dict:
    """Everything a reader learns about one trade's orders: their records and each leg's fills."""
    records = sorted((o.to_record() for o in ledger.orders(trade_id)), key=lambda r: r["client_order_id"])
    fills = {(leg, family): ledger.leg_fill(trade_id, leg, family)
             for leg in range(3) for family in (Intent.OPEN, Intent.CLOSE)}
    return {"records": records, "fills": fills}


def test_an_archived_trade_leaves_memory_but_stays_ours_and_reads_back_the_same(tmp_path):
    ledger, _store, _clock = _trading(tmp_path)
    before = {trade_id: _picture(ledger, trade_id) for trade_id in TRADES}
    known_ids, known_coids = ledger.known_order_ids(), set(ledger.known_client_order_ids())
    archived = [o.client_order_id for o in ledger.orders(TRADES[0])]
    assert archived

    assert ledger.archive_trade(TRADES[0]) is True
    in_memory = {o.client_order_id for o in ledger.orders()}
    assert in_memory.isdisjoint(archived)                              # gone from memory ...
    assert ledger.known_order_ids() == known_ids                       # ... but still ours
    assert set(ledger.known_client_order_ids()) == known_coids
    assert all(ledger.is_ours(coid) for coid in archived)
    assert not ledger.is_ours(101_999_999_999)
    assert ledger.orders_updated_since(T0 - 1.0) == [o for o in ledger.orders() if o.trade_id != TRADES[0]]
    for trade_id in TRADES[1:]:
        assert _picture(ledger, trade_id) == before[trade_id]          # the others untouched

    assert _picture(ledger, TRADES[0]) == before[TRADES[0]]            # read back from the store
    assert {o.client_order_id for o in ledger.orders()} >= set(archived)


def test_get_brings_an_archived_order_back_with_its_trade(tmp_path):
    ledger, _store, _clock = _trading(tmp_path, seed=2)
    order = ledger.orders(TRADES[1])[0]
    record = order.to_record()
    assert ledger.archive_trade(TRADES[1])
    again = ledger.get(order.client_order_id)
    assert again is not None and again.to_record() == record
    assert ledger.get(order.client_order_id) is again                  # back in memory, one object
    assert ledger.archive_trade(TRADES[1])                             # and may leave again


def test_a_new_order_on_an_archived_trade_never_reuses_a_client_order_id(tmp_path):
    ledger, _store, _clock = _trading(tmp_path, seed=3)
    used = {o.client_order_id for o in ledger.orders(TRADES[2])}
    count = len(used)
    assert ledger.archive_trade(TRADES[2])
    order = ledger.place(trade_id=TRADES[2], trade_seq=3, leg_index=0, intent=Intent.CLOSE,
                         symbol=SYMBOL.format(strike=90000), side=1, qty=0.01, price=100.0, tick_size=1.0)
    assert order.client_order_id not in used
    assert len(ledger.orders(TRADES[2])) == count + 1                  # the caps count every order


@pytest.mark.parametrize("why", ["live", "vanished", "presumed_not_placed", "recent", "no_store", "write_fails",
                                 "huge_id"])
def test_the_ledger_keeps_a_trade_that_may_still_change(tmp_path, why):
    ledger, store, clock = _trading(tmp_path, seed=4)
    trade_id = TRADES[0]
    orders = ledger.orders(trade_id)
    if why == "live":
        while not ledger.live_orders(trade_id):   # the walk's exchange rejects some creates
            ledger.place(trade_id=trade_id, trade_seq=1, leg_index=2, intent=Intent.CLOSE,
                         symbol=SYMBOL.format(strike=92000), side=1, qty=0.01, price=100.0, tick_size=1.0)
        clock.advance(ARCHIVE_QUIET_SECONDS + 1.0)
    elif why == "vanished":
        ledger._update(orders[0], status=OrderStatus.VANISHED)
        clock.advance(ARCHIVE_QUIET_SECONDS + 1.0)
    elif why == "presumed_not_placed":   # concluded on lookups that found nothing: reversible for a day
        ledger._update(orders[0], status=OrderStatus.NOT_PLACED, presumed=True)
        clock.advance(ARCHIVE_QUIET_SECONDS + 1.0)
    elif why == "recent":
        ledger._update(orders[0], error_msg="touched")
        clock.advance(ARCHIVE_QUIET_SECONDS - 1.0)
    elif why == "no_store":
        ledger._store = None
    elif why == "huge_id":
        orders[0].order_id = 2 ** 64   # no exchange numbers so, but the arrays could not hold it
    else:
        failing = FailingStore(store)
        ledger._store = failing
        failing.failing = True
    count = len(ledger.orders(trade_id))
    assert ledger.archive_trade(trade_id) is False
    assert len([o for o in ledger.orders() if o.trade_id == trade_id]) == count   # nothing dropped


def test_a_restart_restores_archived_orders_from_the_store(tmp_path):
    ledger, store, clock = _trading(tmp_path, seed=5)
    before = {trade_id: _picture(ledger, trade_id) for trade_id in TRADES}
    for trade_id in TRADES:
        assert ledger.archive_trade(trade_id)
    assert ledger.orders() == []
    restored = OrderLedger(RandomExchange(clock, random.Random(0)), clock, store=store, max_live_per_symbol=50)
    restored.restore(store.load_orders())
    assert {trade_id: _picture(restored, trade_id) for trade_id in TRADES} == before


def test_a_restart_leaves_the_orders_of_ended_trades_in_the_store_and_answers_the_same(tmp_path):
    ledger, store, clock = _trading(tmp_path, seed=9)
    before = {trade_id: _picture(ledger, trade_id) for trade_id in TRADES}
    every_id = sorted(int(r["client_order_id"]) for r in store.load_orders())
    attempts = {(seq, leg): ledger.attempts_used(seq, leg) for seq in (1, 2, 3) for leg in range(3)}
    # One order of the second trade changed a minute ago: that trade may not leave memory yet.
    recent = store.load_orders(TRADES[1])[0]
    recent["updated_at"] = clock.now() - 60.0
    store.save_order(recent)
    before[TRADES[1]]["records"] = [recent if r["client_order_id"] == recent["client_order_id"] else r
                                    for r in before[TRADES[1]]["records"]]

    restored = OrderLedger(RandomExchange(clock, random.Random(0)), clock, store=store, max_live_per_symbol=50)
    restored.restore(store.iter_orders(), ended_trades={TRADES[0], TRADES[1]})

    in_memory = {o.trade_id for o in restored.orders()}
    assert in_memory == {TRADES[1], TRADES[2]}           # the first stays in the store alone
    assert sorted(o.client_order_id for o in restored.orders() if o.trade_id == TRADES[1]) == sorted(
        r["client_order_id"] for r in before[TRADES[1]]["records"])   # loaded whole, not in part
    assert all(restored.is_ours(coid) for coid in every_id)
    assert restored.known_order_ids() == ledger.known_order_ids()
    assert {key: restored.attempts_used(*key) for key in attempts} == attempts   # no id is ever reused
    assert {trade_id: _picture(restored, trade_id) for trade_id in TRADES} == before   # read back the same
    assert {o.trade_id for o in restored.orders()} == set(TRADES)


def test_archived_ids_added_at_once_answer_like_ids_added_one_by_one():
    rng = random.Random(3)
    pairs = [(rng.randrange(1, 2**62), rng.choice((None, rng.randrange(1, 2**62)))) for _ in range(500)]
    one_by_one, at_once = ArchivedIds(), ArchivedIds()
    for coid, order_id in pairs:
        one_by_one.add(coid, order_id)
    at_once.add(*pairs[0])
    at_once.add_many(pairs[1:] + pairs[:50])               # repeats change nothing
    assert at_once.client_order_ids() == one_by_one.client_order_ids()
    assert at_once.order_ids() == one_by_one.order_ids()
    assert all(at_once.holds(coid) for coid, _ in pairs) and not at_once.holds(pairs[0][0] + 1)


# ---- the lifecycle offers the trades that ended for good --------------------------------


def _closed_trade(world):
    trade = open_trade(world)
    world.manager.force_close(trade.id)
    world.poll()
    fill_close(world, trade)
    assert trade.state is TradeState.CLOSED
    return trade


def test_a_closed_trade_is_offered_to_the_archive_once_it_is_taken(world):  # noqa: F811
    trade = _closed_trade(world)
    world.ledger.archive_answer = False                  # the ledger says "not yet"
    world.clock.advance(ARCHIVE_SWEEP_SECONDS)
    world.poll()
    assert world.ledger.archived == []
    assert all(leg.quote is not None for leg in trade.legs)   # refused: the trade keeps everything
    world.ledger.archive_answer = True
    world.clock.advance(ARCHIVE_SWEEP_SECONDS / 2)
    world.poll()
    assert world.ledger.archived == []                   # one sweep per interval
    world.clock.advance(ARCHIVE_SWEEP_SECONDS / 2)
    world.poll()
    assert world.ledger.archived == [trade.id]
    # Taken: the legs' last quotes go, the market the exit was judged on stays.
    assert [leg.quote for leg in trade.legs] == [None] * len(trade.legs)
    assert all(leg.exit_market is not None for leg in trade.legs)
    world.clock.advance(ARCHIVE_SWEEP_SECONDS)
    world.poll()
    assert world.ledger.archived == [trade.id]           # taken: never offered again
    assert world.manager.get(trade.id) is trade


def test_open_and_reversible_trades_are_never_offered(world):  # noqa: F811
    trade = open_trade(world)
    closed = _closed_trade(world)
    world.manager._reversible[closed.id] = closed        # an external close that may be undone
    for _ in range(3):
        world.clock.advance(ARCHIVE_SWEEP_SECONDS)
        world.poll()
    assert trade.state is TradeState.OPEN and world.ledger.archived == []
    del world.manager._reversible[closed.id]
    world.clock.advance(ARCHIVE_SWEEP_SECONDS)
    world.poll()
    assert world.ledger.archived == [closed.id]



def test_archived_ids_answer_like_a_dict_in_sixteen_bytes_an_order():
    ids = ArchivedIds()
    twin: dict[int, int | None] = {}
    rng = random.Random(7)
    for _ in range(2_000):
        coid = rng.randrange(1, 10**18)
        if rng.random() < 0.2 and twin:
            gone = rng.choice(sorted(twin))
            ids.discard(gone)
            del twin[gone]
            continue
        order_id = None if rng.random() < 0.1 else rng.randrange(1, 2**63)
        ids.add(coid, order_id)
        twin.setdefault(coid, order_id)
    assert ids.client_order_ids() == sorted(twin)
    assert sorted(ids.order_ids()) == sorted(o for o in twin.values() if o is not None)
    assert all(ids.holds(coid) for coid in twin) and not ids.holds(10**18 + 1)
    assert len(ids) == len(twin)
    assert not ArchivedIds.fits(2**63, 1) and not ArchivedIds.fits(5, 2**63) and ArchivedIds.fits(5, None)
