"""A fill reported later than the engines' grace is still adopted: the periodic reconciliation
polls every order that ended unfilled in the last ten minutes once more (API.md 11.16).

Without it the ledger would keep a cancelled order at zero while the exchange holds its fill:
the trade would under-count its exposure and its close would leave that quantity behind.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from alerts import AlertSink
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from order_ledger import Intent, OrderLedger, OrderStatus
from persistence import StateStore
from reconciliation import Reconciler
from simulator.exchange import ExchangeConfig
from tests.conftest import resting_bid_params

LAG_SECONDS = 40.0
LATE_FILL = 0.3


class OneTradeLifecycle:
    """Just what the reconciler asks of the lifecycle, around one trade id."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.refreshed: list[str] = []
        self.hold_reason: str | None = None

    def hold(self, reason: str) -> None:
        self.hold_reason = reason

    def release(self) -> None:
        self.hold_reason = None

    def active_trades(self) -> list:
        return []

    def get(self, trade_id: str):
        return SimpleNamespace(id=trade_id, is_active=self.active)

    def refresh_fills(self, trade_id: str) -> None:
        self.refreshed.append(trade_id)

    def has_job(self, trade_id: str) -> bool:
        return False

    def trades(self) -> list:
        return []

    def reversible_external_closes(self) -> list:
        return []

    def _unused(self, *args, **kwargs):
        raise AssertionError("not used by this test")

    # The rest of seams.ReconcilerLifecycle: no position mismatch arises in these tests.
    hold_entries = release_entries = record_external_close = reverse_external_close = _unused


@pytest.fixture
def rig(sim_factory):
    sim = sim_factory(exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0))
    client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                            Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    ledger = OrderLedger(client, sim.clock, store=StateStore(":memory:"))
    yield SimpleNamespace(sim=sim, client=client, ledger=ledger)
    client.close()


def _cancelled_with_a_late_fill(rig):
    """A resting bid cancelled while the exchange fills 0.3 of it and reports that 40 s later."""
    params = resting_bid_params(rig.sim, 0, qty=1.0)
    order = rig.ledger.place(trade_id="T000000007", trade_seq=7, leg_index=0, intent=Intent.OPEN,
                             symbol=params["symbol"], side=1, qty=1.0, price=params["price"], tick_size=1.0)
    assert order.status is OrderStatus.LIVE
    rig.sim.exchange.faults.fill_report_lag_seconds = LAG_SECONDS
    rig.sim.exchange.faults.fill_on_next_cancel_qty = LATE_FILL
    rig.ledger.cancel(order)
    rig.ledger.poll(order)
    assert order.status is OrderStatus.CANCELED and order.filled_qty == 0.0   # the fill is not shown yet
    return order


def _reconciler(rig, lifecycle, alerts=None) -> Reconciler:
    reconciler = Reconciler(client=rig.client, ledger=rig.ledger, lifecycle=lifecycle, store=None,
                            clock=rig.sim.clock, alerts=alerts)
    reconciler.started = True
    return reconciler


def _snapshot(rig):
    return SimpleNamespace(timestamp=rig.sim.clock.now(), positions=())


def test_row_o7_a_fill_reported_after_the_grace_is_adopted_by_the_periodic_run(rig):
    order = _cancelled_with_a_late_fill(rig)
    lifecycle = OneTradeLifecycle(active=True)
    reconciler = _reconciler(rig, lifecycle)

    rig.sim.clock.advance(10)
    first = reconciler.periodic(_snapshot(rig))        # too young: a 30 s minimum age, nothing polled
    assert first.late_fills == [] and order.filled_qty == 0.0

    rig.sim.clock.advance(LAG_SECONDS)
    second = reconciler.periodic(_snapshot(rig))
    assert second.late_fills == [order.client_order_id]
    assert order.filled_qty == pytest.approx(LATE_FILL) and order.status is OrderStatus.CANCELED
    assert lifecycle.refreshed == ["T000000007"]       # the trade re-reads its fills from the ledger

    queries = len(rig.sim.requests_for("query_order"))
    rig.sim.clock.advance(60)
    assert reconciler.periodic(_snapshot(rig)).late_fills == []
    assert len(rig.sim.requests_for("query_order")) == queries   # each order is re-polled once


def test_row_o7_a_late_fill_on_a_trade_that_already_ended_raises_a_critical_alert(rig):
    order = _cancelled_with_a_late_fill(rig)
    alerts = AlertSink(None, rig.sim.clock)
    reconciler = _reconciler(rig, OneTradeLifecycle(active=False), alerts)

    rig.sim.clock.advance(LAG_SECONDS + 5)
    report = reconciler.periodic(_snapshot(rig))
    assert report.late_fills == [order.client_order_id]
    late = [a for a in alerts.recent() if a.kind == "late_fill_after_close"]
    assert len(late) == 1 and late[0].level == "CRITICAL" and order.symbol in late[0].message
