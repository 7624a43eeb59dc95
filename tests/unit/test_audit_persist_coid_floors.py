"""A clientOrderId already on the exchange is never sent again (docs/RECOVERY.md O2, L3; audit P1).

Before, the only guard against re-using an id with our prefix that the exchange showed and
the ledger never recorded (a store restored from an older copy, another daemon with our
prefix) was the in-memory symbol block of the reconciler: a restart (the order already
journaled as reported, so nothing blocked again) or the operator's ``resume`` ended it, and
the ledger's attempt counter, counted from the stored records alone, handed the same id out.
Now every such id whose trade sequence the store has reached is a floor kept by the store
(``StateStore.raise_client_id_floors``), which the ledger allocates above
(``OrderLedger._allocate``); and the block of a store behind the exchange (row L3) on a symbol
our trades hold is kept by the store until the resume that lifts it.

The reconciler's fakes are those of tests/unit/test_reconciliation.py; the ledger and the
store are the real ones, on a file in ``tmp_path``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clock import SimulatedClock
from errors import LedgerCapError
from order_ledger import Intent, OrderLedger, build_client_order_id
from persistence import ORDER_HISTORY_WATERMARK, TRADE_SEQ_COUNTER, StateStore, StoreError, client_id_floor_name
from prefix_ownership import FOREIGN_ORDERS_EVENT
from reconciliation import Reconciler
from tests.unit.test_reconciliation import (
    SYM_C,
    SYM_P,
    T0,
    FakeAlerts,
    FakeClient,
    FakeLifecycle,
    FakeRunner,
    long_trade,
    position,
    snapshot,
)

SELL = 2
TRADE = "T000000005"


class Exchange(FakeClient):
    """The reconciler's fake reads plus the ledger's order endpoints; remembers every id sent.

    Its order history honours ``startTime``/``endTime`` as the exchange does, so a restart
    reads only what was created since the store's last check.
    """

    def __init__(self, history: list[dict] | None = None, pending: list[dict] | None = None) -> None:
        super().__init__()
        self.created: list[int] = []
        self.rows = list(history or [])
        self.pending = list(pending or [])

    def order_history(self, **params: Any) -> dict:
        self.history_calls.append(params)
        low, high = params.get("startTime", 0), params.get("endTime", 10**15)
        return {"list": [row for row in self.rows if low <= row["createTime"] <= high], "hasNext": False}

    def create_order(self, symbol: str, qty: float, side: int, price: float, client_order_id: int,
                     **_kw: Any) -> int:
        self.created.append(int(client_order_id))
        return 9000 + len(self.created)

    def query_order(self, order_id: int | None = None, client_order_id: int | None = None) -> dict:
        return {"orderId": order_id, "clientOrderId": client_order_id, "state": 0, "fillQty": 0}


def ours(seq: int, leg: int = 0, intent: Intent = Intent.OPEN, attempt: int = 1) -> int:
    return build_client_order_id(101, seq, leg, intent, attempt)


FOREIGN = ours(5, 0, Intent.CLOSE, 2)   # sent by the newer copy of this store, after the backup


def foreign_row(coid: int = FOREIGN, *, symbol: str = SYM_C, order_id: int = 77, state: int = 3) -> dict:
    return {"orderId": order_id, "clientOrderId": coid, "symbol": symbol, "createTime": (T0 - 1800) * 1000,
            "state": state, "tradeSide": SELL, "qty": 0.01, "fillQty": 0}


def own_open_row() -> dict:
    return {"orderId": 1, "clientOrderId": ours(5), "symbol": SYM_C, "createTime": (T0 - 7200) * 1000, "state": 1}


def open_record(seq: int = 5, attempt: int = 1) -> dict:
    """The filled opening order of trade ``seq``, leg 0 (long 0.01 SYM_C), as the store keeps it."""
    return {"client_order_id": ours(seq, attempt=attempt), "trade_id": f"T{seq:09d}", "trade_seq": seq,
            "leg_index": 0, "intent": 1, "attempt": attempt, "supersedes": None, "symbol": SYM_C, "side": 1,
            "qty": 0.01, "price": 400.0, "reduce_only": False, "status": "FILLED", "order_id": attempt,
            "filled_qty": 0.01, "avg_price": 400.0, "fee": 0.0, "sent_at": T0 - 7200, "updated_at": T0 - 7200,
            "exchange_state": 1}


def restored_backup(path: Path, clock: SimulatedClock, *, seq: int = 5) -> StateStore:
    """An older copy of the store: trade 5 open, its opening order filled, checked an hour ago."""
    store = StateStore(path, clock=clock)
    store.raise_counter_to(TRADE_SEQ_COUNTER, seq)
    store.raise_counter_to(ORDER_HISTORY_WATERMARK, int((T0 - 3600) * 1000))
    store.save_order(open_record())
    return store


def start_daemon(store: StateStore, clock: SimulatedClock, exchange: Exchange,
                 trades: list | None = None) -> tuple[OrderLedger, Reconciler, FakeAlerts]:
    ledger = OrderLedger(exchange, clock, prefix=101, store=store)
    ledger.restore(store.load_orders())
    alerts = FakeAlerts()
    reconciler = Reconciler(client=exchange, ledger=ledger, lifecycle=FakeLifecycle(trades or [long_trade(5, 0.01)]),
                            store=store, clock=clock, alerts=alerts,
                            journal=lambda kind, payload: store.append_event(kind, dict(payload), clock.now()))
    reconciler.attach_runners([FakeRunner("s1")])
    reconciler(snapshot(position(SYM_C, 0.01), at=clock.now()))
    assert reconciler.started
    return ledger, reconciler, alerts


def close_leg(ledger: OrderLedger, *, symbol: str = SYM_C, seq: int = 5):
    return ledger.place(trade_id=f"T{seq:09d}", trade_seq=seq, leg_index=0, intent=Intent.CLOSE, symbol=symbol,
                        side=SELL, qty=0.01, price=400.0, tick_size=1.0)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=T0, speed=0)


# ---------------------------------------------------------------------------------------------
# The finding: after a restart, after a resume
# ---------------------------------------------------------------------------------------------


def test_row_o2_after_a_restart_the_ledger_never_sends_an_id_already_seen_on_the_exchange(tmp_path, clock):
    store = restored_backup(tmp_path / "trader.db", clock)
    first, _reconciler, alerts = start_daemon(store, clock, Exchange([own_open_row(), foreign_row()]))
    assert alerts.kinds("CRITICAL") == ["prefix_conflict"] and first.is_blocked(SYM_C)
    assert store.client_id_floor(5, 0) == 2 and store.client_id_floor(5, 0, Intent.CLOSE) == 2
    store.close()

    clock.advance(300)                        # crash / restart: the foreign order is journaled as reported
    store = StateStore(tmp_path / "trader.db", clock=clock)
    exchange = Exchange([own_open_row(), foreign_row()])
    second, _reconciler, alerts = start_daemon(store, clock, exchange)
    assert alerts.kinds("CRITICAL") == []    # reported once
    order = close_leg(second)                # exits go on while strategies are paused

    assert exchange.created == [order.client_order_id] == [ours(5, 0, Intent.CLOSE, 3)]
    assert FOREIGN not in exchange.created


def test_row_o2_after_the_operator_resume_the_ledger_never_sends_an_id_already_seen(tmp_path, clock):
    store = restored_backup(tmp_path / "trader.db", clock)
    exchange = Exchange([own_open_row(), foreign_row()])
    ledger, _reconciler, _alerts = start_daemon(store, clock, exchange)
    assert ledger.is_blocked(SYM_C)

    assert ledger.unblock(None) == [SYM_C]    # `python main.py resume` lifts the block
    order = close_leg(ledger)

    assert order.client_order_id == ours(5, 0, Intent.CLOSE, 3) and exchange.created == [order.client_order_id]


def test_an_open_foreign_order_seen_while_running_raises_the_floor_at_once(tmp_path, clock):
    store = restored_backup(tmp_path / "trader.db", clock)
    exchange = Exchange([own_open_row()])
    ledger, reconciler, alerts = start_daemon(store, clock, exchange)
    foreign = ours(5, 0, Intent.CLOSE, 7)
    exchange.pending = [{"orderId": 78, "clientOrderId": foreign, "symbol": SYM_C, "qty": 0.01, "tradeSide": SELL,
                         "price": 5.0, "state": 0, "createTime": (T0 + 30) * 1000}]
    clock.advance(61)

    reconciler(snapshot(position(SYM_C, 0.01), at=clock.now()))

    assert alerts.kinds("CRITICAL") == ["prefix_conflict"]
    assert store.client_id_floor(5, 0) == 7
    ledger.unblock(None)
    assert close_leg(ledger).client_order_id == ours(5, 0, Intent.CLOSE, 8)


def test_foreign_ids_journaled_by_an_older_version_get_their_floor_at_the_next_start(tmp_path, clock):
    """A store written before the floors existed: the ``foreign_orders`` journal names the id."""
    store = restored_backup(tmp_path / "trader.db", clock)
    store.append_event(FOREIGN_ORDERS_EVENT, {"source": "history", "client_order_ids": [FOREIGN]}, T0 - 600)
    assert store.client_id_floor(5, 0) == 0
    exchange = Exchange([own_open_row()])    # the foreign order is no longer in the window read

    ledger, _reconciler, alerts = start_daemon(store, clock, exchange)

    assert alerts.kinds("CRITICAL") == [] and not ledger.is_blocked(SYM_C)
    assert store.client_id_floor(5, 0, Intent.CLOSE) == 2
    assert close_leg(ledger).client_order_id == ours(5, 0, Intent.CLOSE, 3)


def test_an_id_beyond_the_store_sequence_needs_no_floor_the_sequence_passes_it(tmp_path, clock):
    store = restored_backup(tmp_path / "trader.db", clock)
    beyond = ours(9, 0, Intent.OPEN, 1)      # a trade the store never reached (row L3)
    start_daemon(store, clock, Exchange([own_open_row(), foreign_row(beyond, symbol=SYM_P)]))

    assert store.client_id_floor(9, 0) == 0
    assert store.next_trade_seq() > 9


# ---------------------------------------------------------------------------------------------
# The ledger's allocation above the floors
# ---------------------------------------------------------------------------------------------


def test_the_counter_continues_above_the_highest_floor_of_the_leg_whatever_its_intent(tmp_path, clock):
    store = StateStore(tmp_path / "trader.db", clock=clock)
    store.raise_client_id_floors([(5, 0, int(Intent.KILL), 40), (5, 0, int(Intent.CLOSE), 12), (5, 1, 1, 90)])
    exchange = Exchange()
    ledger = OrderLedger(exchange, clock, prefix=101, store=store)
    ledger.restore([open_record()])

    order = close_leg(ledger)

    assert order.attempt == 41 and exchange.created == [ours(5, 0, Intent.CLOSE, 41)]


def test_a_spare_id_past_attempt_999_is_looked_for_above_the_floor_of_its_digit(tmp_path, clock):
    store = StateStore(tmp_path / "trader.db", clock=clock)
    store.raise_client_id_floors([(5, 0, int(Intent.CLOSE), 6)])
    exchange = Exchange()
    ledger = OrderLedger(exchange, clock, prefix=101, store=store)
    ledger.restore([open_record(attempt=999)])    # the leg's counter is used up

    order = close_leg(ledger)

    assert (order.intent, order.attempt) == (Intent.CLOSE, 7)
    assert exchange.created == [ours(5, 0, Intent.CLOSE, 7)]


def test_floors_are_never_lowered_and_survive_a_reopen(tmp_path, clock):
    store = StateStore(tmp_path / "trader.db", clock=clock)
    assert store.raise_client_id_floors([]) == 0
    store.raise_client_id_floors([(5, 0, 3, 9), (5, 0, 4, 2)])
    store.raise_client_id_floors([(5, 0, 3, 4)])
    store.close()

    again = StateStore(tmp_path / "trader.db", clock=clock)
    assert (again.client_id_floor(5, 0), again.client_id_floor(5, 0, 3), again.client_id_floor(5, 0, 4)) == (9, 9, 2)
    assert again.counter(client_id_floor_name(5, 0, 3)) == 9 and again.client_id_floor(6, 0) == 0
    with pytest.raises(ValueError):
        again.raise_client_id_floors([(5, 0, 3, -1)])


def test_a_floor_that_cannot_be_read_sends_nothing(tmp_path, clock, monkeypatch):
    store = StateStore(tmp_path / "trader.db", clock=clock)
    exchange = Exchange()
    ledger = OrderLedger(exchange, clock, prefix=101, store=store)
    ledger.restore([open_record()])

    def unreadable(*_args: Any) -> int:
        raise StoreError("disk I/O error")

    monkeypatch.setattr(store, "client_id_floor", unreadable)
    with pytest.raises(StoreError):
        close_leg(ledger)
    assert exchange.created == [] and store.load_orders(TRADE) == []


# ---------------------------------------------------------------------------------------------
# Row L3: the block of a store behind the exchange outlives a restart, until the resume
# ---------------------------------------------------------------------------------------------


def test_row_l3_the_block_on_a_symbol_our_trades_hold_is_kept_until_the_resume_lifts_it(tmp_path, clock):
    store = restored_backup(tmp_path / "trader.db", clock, seq=5)
    behind = [own_open_row(), foreign_row(ours(8, 0, Intent.CLOSE, 1), symbol=SYM_C, order_id=80),
              foreign_row(ours(9, 0, Intent.OPEN, 1), symbol=SYM_P, order_id=81)]
    first, _reconciler, alerts = start_daemon(store, clock, Exchange(behind))
    assert alerts.kinds("CRITICAL") == ["store_behind"]
    assert first.is_blocked(SYM_C) and first.is_blocked(SYM_P)
    assert store.kept_symbol_blocks() == {SYM_C: first.blocked_symbols()[SYM_C]}   # ours hold orders on SYM_C only
    store.close()

    clock.advance(300)                       # restart: nothing is unknown any more
    store = StateStore(tmp_path / "trader.db", clock=clock)
    second, _reconciler, alerts = start_daemon(store, clock, Exchange(behind))
    assert alerts.kinds("CRITICAL") == []
    assert second.is_blocked(SYM_C) and not second.is_blocked(SYM_P)
    with pytest.raises(LedgerCapError, match="blocked"):
        close_leg(second)                    # a stale trade's exit must not close somebody else's position

    assert second.unblock([SYM_C]) == [SYM_C]    # the operator's resume of the strategy
    assert store.kept_symbol_blocks() == {}
    store.close()
    store = StateStore(tmp_path / "trader.db", clock=clock)
    third = OrderLedger(Exchange(), clock, prefix=101, store=store)
    assert not third.is_blocked(SYM_C)


def test_a_kept_block_whose_lift_cannot_be_written_stays(tmp_path, clock, monkeypatch):
    store = StateStore(tmp_path / "trader.db", clock=clock)
    ledger = OrderLedger(Exchange(), clock, prefix=101, store=store)
    assert ledger.block_symbol_durably(SYM_C, "the state store is behind the exchange on this symbol")
    assert ledger.block_symbol(SYM_P, "opposite side")

    def unwritable(_symbols: Any) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(store, "lift_symbol_blocks", unwritable)
    assert ledger.unblock(None) == [SYM_P]
    assert ledger.is_blocked(SYM_C) and store.kept_symbol_blocks() == {SYM_C: ledger.blocked_symbols()[SYM_C]}
