"""The reconciler takes back verdicts reached on missing data (docs/RECOVERY.md rows O9, O10).

A presumed NOT_PLACED or a VANISHED order is watched: the open list and the order history are
matched against it on every pass, and it is re-queried by its ids with back-off (30 s doubling
to 10 minutes, a bounded number a pass) for a day. When the exchange answers, the ledger adopts
its view, the trade re-reads its fills and a CRITICAL ``order_verdict_reversed`` is raised once;
a VANISHED order still unknown after a day is a CRITICAL ``order_vanished_unresolved``, never a
silent drop. Driven through the real ``Reconciler`` and ``OrderLedger`` over the scripted
exchange of tests/unit/test_ledger_reversible.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from clock import SimulatedClock
from errors import LedgerCapError
from order_ledger import PRESUMED_VERDICT_HORIZON_SECONDS, Intent, LedgerOrder, OrderLedger, OrderStatus
from order_reconciliation import (
    PRESUMED_RECHECK_FIRST_SECONDS,
    PRESUMED_RECHECK_MAX_SECONDS,
    PRESUMED_RECHECKS_PER_PASS,
)
from reconciliation import Reconciler
from reconciliation_report import ReconcileReport
from tests.unit.test_ledger_reversible import FILLED, LIVE, PARTIAL, SYMBOL, T0, Exchange, Store, place


class ReconciledExchange(Exchange):
    """The scripted exchange, with the reads the reconciler compares against; ``history_lags``
    orders are known to the lookups but not yet to the order history."""

    def __init__(self) -> None:
        super().__init__()
        self.history_lags: set[int] = set()

    def all_pending_orders(self, currency: str | None = None) -> list[dict]:
        return [dict(row) for coid, row in self.orders.items()
                if coid not in self.hidden and row["state"] in (LIVE, PARTIAL)]

    def order_history(self, **filters: Any) -> dict:
        return {"list": [dict(row) for coid, row in self.orders.items()
                         if coid not in self.hidden and coid not in self.history_lags], "hasNext": False}

    def trade_history(self, **filters: Any) -> dict:
        return {"list": []}

    def blocktrade_orders(self, **filters: Any) -> dict:
        return {"list": []}

    def queried(self, order: LedgerOrder) -> int:
        """How many lookups asked for ``order`` (by either of its ids)."""
        return sum(1 for q in self.queries if q["client_order_id"] == order.client_order_id
                   or (order.order_id is not None and q["order_id"] == order.order_id))


@dataclass
class Trade:
    id: str
    is_active: bool = True


@dataclass
class Lifecycle:
    """The reconciler's view of the lifecycle: trades by id, and who was asked to re-read fills."""

    trades_by_id: dict[str, Trade] = field(default_factory=dict)
    refreshed: list[str] = field(default_factory=list)

    def hold(self, reason: str) -> None:
        pass

    def release(self) -> None:
        pass

    def hold_entries(self, key: str, reason: str) -> bool:
        return True

    def release_entries(self, key: str) -> bool:
        return False

    def get(self, trade_id: str) -> Trade | None:
        return self.trades_by_id.get(trade_id)

    def trades(self, strategy: str | None = None) -> list[Trade]:
        return list(self.trades_by_id.values())

    def active_trades(self, strategy: str | None = None) -> list[Trade]:
        return []   # no positions to compare: these tests are about orders

    def has_job(self, trade_id: str) -> bool:
        return False

    def refresh_fills(self, trade_id: str) -> None:
        self.refreshed.append(trade_id)

    def record_external_close(self, trade_id: str, leg_index: int, qty: float, price: float, *,
                              detail: str) -> None:
        raise AssertionError("no position is compared here")

    def reversible_external_closes(self) -> list[Trade]:
        return []

    def reverse_external_close(self, trade_id: str, detail: str) -> None:
        raise AssertionError("no position is compared here")


@dataclass
class ReconcilerStore:
    counters: dict[str, int] = field(default_factory=dict)
    path: str = "state/trader.db"

    def counter(self, name: str) -> int:
        return self.counters.get(name, 0)

    def raise_counter_to(self, name: str, value: int) -> int:
        self.counters[name] = max(self.counters.get(name, 0), int(value))
        return self.counters[name]


    def raise_client_id_floors(self, seen: Any) -> int:
        return len(list(seen))
    def events(self, kind: Any = None, *, after_id: int = 0, limit: int | None = None) -> list[dict]:
        return []

    def holds_nothing(self) -> bool:
        return False

    def load_runner_state(self, name: str) -> dict | None:
        return None

    def save_runner_state(self, name: str, state: dict) -> None:
        pass


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        self.sent.append((level, kind, message))

    def of(self, kind: str) -> list[tuple[str, str, str]]:
        return [sent for sent in self.sent if sent[1] == kind]


@dataclass
class Rig:
    clock: SimulatedClock
    exchange: ReconciledExchange
    ledger: OrderLedger
    lifecycle: Lifecycle
    alerts: Alerts
    reconciler: Reconciler

    def snapshot(self) -> SimpleNamespace:
        return SimpleNamespace(timestamp=self.clock.now(), positions=[])

    def start(self) -> None:
        self.reconciler(self.snapshot())
        assert self.reconciler.started

    def periodic(self) -> ReconcileReport:
        return self.reconciler.periodic(self.snapshot())

    def every_minute(self, minutes: int, step: float = 60.0) -> None:
        for _ in range(minutes):
            self.clock.advance(step)
            self.periodic()


def rig(*, trade_active: bool = True) -> Rig:
    clock = SimulatedClock(start=T0, speed=0)
    exchange = ReconciledExchange()
    ledger = OrderLedger(exchange, clock, store=Store(), max_live_per_symbol=50)
    lifecycle = Lifecycle({f"T{seq:09d}": Trade(f"T{seq:09d}", trade_active) for seq in range(1, 40)})
    alerts = Alerts()
    reconciler = Reconciler(client=exchange, ledger=ledger, lifecycle=lifecycle, store=ReconcilerStore(),
                            clock=clock, alerts=alerts)
    return Rig(clock, exchange, ledger, lifecycle, alerts, reconciler)


def not_placed(r: Rig) -> LedgerOrder:
    """The create answer was lost and the lookups lag past the deadline: a presumed NOT_PLACED."""
    r.exchange.lose_create_answer = True
    order = place(r.ledger)
    r.exchange.lose_create_answer = False
    r.exchange.hidden.add(order.client_order_id)
    r.clock.advance(40.0)
    r.ledger.poll(order)
    assert order.status is OrderStatus.NOT_PLACED and order.presumed
    return order


def vanished(r: Rig, trade_seq: int = 1) -> LedgerOrder:
    """A live order the exchange forgets: settled VANISHED by the reconciliation (row O8)."""
    order = place(r.ledger, trade_seq=trade_seq)
    assert order.status is OrderStatus.LIVE
    r.exchange.hidden.add(order.client_order_id)
    return order


# ---------------------------------------------------------------------------------------------
# Row O9: a presumed NOT_PLACED
# ---------------------------------------------------------------------------------------------


def test_row_o9_a_not_placed_order_the_open_list_shows_is_adopted_alerted_once_and_blocks_its_leg():
    r = rig()
    order = not_placed(r)
    r.start()
    r.exchange.hidden.discard(order.client_order_id)
    r.exchange.fill(order.client_order_id, 0.05, PARTIAL)   # working, part filled, listed open
    r.clock.advance(10.0)                                     # before its first back-off re-check

    report = r.periodic()

    assert order.status is OrderStatus.PARTIAL and order.filled_qty == 0.05 and not order.presumed
    assert report.foreign_orders == [] and report.late_fills == [order.client_order_id]
    (reversal,) = r.alerts.of("order_verdict_reversed")
    assert reversal[0] == "CRITICAL" and "concluded NOT_PLACED was found on the exchange" in reversal[2]
    assert r.lifecycle.refreshed == ["T000000001"]           # its fills are booked to the trade
    with pytest.raises(LedgerCapError):
        place(r.ledger, Intent.OPEN_REQUOTE)                  # the leg sees it live: no second order
    r.every_minute(3)
    assert len(r.alerts.of("order_verdict_reversed")) == 1


def test_row_o9_a_not_placed_order_that_filled_is_adopted_from_the_order_history_in_the_same_pass():
    r = rig()
    order = not_placed(r)
    r.start()
    r.exchange.hidden.discard(order.client_order_id)
    r.exchange.fill(order.client_order_id, 0.1, FILLED)     # final: the open list never shows it
    r.clock.advance(10.0)

    report = r.periodic()

    assert order.status is OrderStatus.FILLED and order.filled_qty == 0.1
    assert report.late_fills == [order.client_order_id] and r.lifecycle.refreshed == ["T000000001"]
    assert [level for level, _kind, _text in r.alerts.of("order_verdict_reversed")] == ["CRITICAL"]


def test_row_o9_a_not_placed_order_is_rechecked_with_back_off_when_no_list_shows_it():
    r = rig()
    order = not_placed(r)
    r.start()
    r.exchange.hidden.discard(order.client_order_id)
    r.exchange.history_lags.add(order.client_order_id)      # only the lookup knows it (a fill, nothing listed)
    r.exchange.fill(order.client_order_id, 0.1, FILLED)

    r.every_minute(1)

    assert order.status is OrderStatus.FILLED and r.lifecycle.refreshed == ["T000000001"]
    assert len(r.alerts.of("order_verdict_reversed")) == 1


def test_row_o9_a_reversed_order_of_an_ended_trade_is_named_as_managed_by_no_trade():
    r = rig(trade_active=False)
    order = not_placed(r)
    r.start()
    r.exchange.hidden.discard(order.client_order_id)
    r.exchange.fill(order.client_order_id, 0.1, FILLED)

    r.every_minute(1)

    (reversal,) = r.alerts.of("order_verdict_reversed")
    assert reversal[0] == "CRITICAL" and "managed by no trade" in reversal[2] and r.lifecycle.refreshed == []


def test_row_o9_a_not_placed_order_the_exchange_never_shows_is_left_alone_after_the_horizon():
    r = rig()
    order = not_placed(r)
    r.start()
    r.every_minute(int(PRESUMED_VERDICT_HORIZON_SECONDS / 600) + 6, step=600.0)
    asked = r.exchange.queried(order)
    r.every_minute(12, step=600.0)

    assert r.exchange.queried(order) == asked and r.alerts.sent == []
    assert order.status is OrderStatus.NOT_PLACED and r.ledger.archive_trade("T000000001") is True


# ---------------------------------------------------------------------------------------------
# Row O10: VANISHED
# ---------------------------------------------------------------------------------------------


def recheck_times(r: Rig, order: LedgerOrder, minutes: int) -> list[float]:
    """The passes, over ``minutes``, in which the order was looked up."""
    times = []
    for _ in range(minutes):
        r.clock.advance(60.0)
        before = r.exchange.queried(order)
        r.periodic()
        if r.exchange.queried(order) > before:
            times.append(r.clock.now())
    return times


def test_row_o10_a_vanished_order_is_requeried_with_doubling_back_off_and_its_late_fill_is_booked():
    r = rig()
    order = vanished(r)
    r.start()
    r.every_minute(1)                                       # 60 s old: settled VANISHED (O8)
    assert order.status is OrderStatus.VANISHED and len(r.alerts.of("order_vanished")) == 1
    settled_at = order.updated_at

    times = recheck_times(r, order, 60)

    gaps = [b - a for a, b in zip([settled_at, *times], times)]
    assert gaps[0] <= PRESUMED_RECHECK_FIRST_SECONDS + 60.0
    assert gaps == sorted(gaps) and max(gaps) <= PRESUMED_RECHECK_MAX_SECONDS + 60.0
    assert len(times) <= 10                                  # an hour costs a handful, not one a minute
    r.exchange.hidden.discard(order.client_order_id)
    r.exchange.fill(order.client_order_id, 0.1, FILLED)     # it filled while the exchange had forgotten it

    r.every_minute(11)

    assert order.status is OrderStatus.FILLED and order.filled_qty == 0.1
    assert r.ledger.leg_fill("T000000001", 0, Intent.OPEN)[0] == 0.1 and "T000000001" in r.lifecycle.refreshed
    assert [level for level, _kind, _text in r.alerts.of("order_verdict_reversed")] == ["CRITICAL"]


def test_row_o10_a_vanished_order_unknown_for_a_day_is_alerted_once_kept_and_still_matched_in_the_open_list():
    r = rig()
    order = vanished(r)
    r.start()
    r.every_minute(1)
    assert order.status is OrderStatus.VANISHED

    r.every_minute(int(PRESUMED_VERDICT_HORIZON_SECONDS / 600) + 6, step=600.0)
    asked = r.exchange.queried(order)
    r.every_minute(12, step=600.0)

    (unresolved,) = r.alerts.of("order_vanished_unresolved")
    assert unresolved[0] == "CRITICAL" and str(order.client_order_id) in unresolved[2]
    assert r.exchange.queried(order) == asked                # no more lookups past the horizon
    assert r.ledger.vanished_orders() == [order] and r.ledger.archive_trade("T000000001") is False
    r.exchange.hidden.discard(order.client_order_id)        # listed open again, a day later
    r.every_minute(1)
    assert order.status is OrderStatus.LIVE and len(r.alerts.of("order_verdict_reversed")) == 1


def test_the_rechecks_of_one_pass_are_bounded():
    r = rig()
    orders = [vanished(r, trade_seq=seq) for seq in range(1, 16)]
    r.start()
    r.every_minute(1)
    assert all(order.status is OrderStatus.VANISHED for order in orders)
    before = {order.client_order_id: r.exchange.queried(order) for order in orders}

    r.clock.advance(60.0)
    r.periodic()

    asked = [order for order in orders if r.exchange.queried(order) > before[order.client_order_id]]
    assert len(asked) == PRESUMED_RECHECKS_PER_PASS
    r.clock.advance(1.0)
    r.periodic()
    assert all(r.exchange.queried(order) > before[order.client_order_id] for order in orders)
