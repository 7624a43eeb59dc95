"""Reconciliation of perpetuals against the simulator: real HTTP, real signing, the simulated clock
(docs/RECOVERY.md S3, S6, X1, O2).

A perp position closed outside the daemon (a market order on the same account whose
clientOrderId is not ours) is booked on the perp fills that prove it, at their price; a perp
position that merely disappears (no fill) stays a suspect read; a booked close whose position
shows again is reversed; an open perp order with our prefix that the ledger does not know is
alerted and left open.
"""
from __future__ import annotations

from typing import Any

import pytest

import conditions
from contracts import Side
from external_closes import EXIT_REASON_EXTERNAL, FLAG_EXTERNAL_REVERSED, FLAG_PERP_EVIDENCE
from option_selection import perp
from order_ledger import Intent, build_client_order_id
from persistence import TRADE_SEQ_COUNTER
from reconciliation import Reconciler
from tests.integration.test_perp_legs_sim import PerpRig
from trade_lifecycle import TradeState

PERP = "BTCUSD"
NOT_OURS_COID = 4_242_4242      # no daemon of ours builds this id (not a valid prefix layout)


class ReconciledRig(PerpRig):
    """The perp rig with a reconciler that has the perp reads (``perp_client``), polled like the monitor does."""

    def __init__(self, sim: Any) -> None:
        super().__init__(sim)
        self.reconciler = Reconciler(client=self.client, ledger=self.ledger, lifecycle=self.manager,
                                     store=self.store, clock=self.clock, alerts=self.alerts,
                                     perp_client=self.client)

    def poll(self) -> None:
        self.snapshot = self.accounts.snapshot()
        self.last_poll = self.clock.now()
        self.reconciler(self.snapshot)
        self.manager.tick(self.snapshot)

    def alerts_of(self, kind: str) -> list[Any]:
        return [alert for alert in self.alerts.recent(1000) if alert.kind == kind]

    def outside_order(self, side: int, qty: float, client_order_id: int = NOT_OURS_COID) -> int:
        """A market order on our account that the daemon did not send (somebody's hand)."""
        return self.client.perp_create_order(PERP, qty, side, client_order_id, order_type=2, reduce_only=True)


@pytest.fixture
def rig(sim):
    built = ReconciledRig(sim)
    yield built
    built.close()


def open_long(rig: ReconciledRig, qty: float = 0.01):
    trade = rig.open(perp(qty, Side.BUY), exit_conditions=[conditions.max_hold_hours(48)])
    assert rig.reconciler.started and rig.position(PERP) == pytest.approx(qty)
    return trade


def test_a_perp_position_closed_outside_the_daemon_is_booked_on_its_fills_at_their_price(rig):
    trade = open_long(rig)
    order_id = rig.outside_order(Side.SELL, 0.004)
    assert rig.position(PERP) == pytest.approx(0.006)
    fills = [f for f in rig.client.perp_fills() if f.order_id == order_id]
    price = sum(f.qty * f.price for f in fills) / sum(f.qty for f in fills)

    rig.drive(240, step=10.0, poll_interval=10.0)

    leg = trade.legs[0]
    assert leg.external_qty == pytest.approx(0.004) and leg.external_price == pytest.approx(price)
    assert trade.state is TradeState.OPEN and leg.net_qty == pytest.approx(0.006)
    assert FLAG_PERP_EVIDENCE in trade.flags
    assert len(rig.alerts_of("external_close")) == 1 and rig.alerts_of("suspect_positions_read") == []
    rig.drive(180, step=10.0, poll_interval=10.0)
    assert leg.external_qty == pytest.approx(0.004)          # one fill never proves two closes


def test_a_perp_position_gone_without_any_fill_stays_a_suspect_read_until_it_shows_again(rig):
    trade = open_long(rig)
    rig.sim.exchange.set_position(None, PERP, 0.0, 0.0)     # vanished, no fill: not evidence

    rig.drive(240, step=10.0, poll_interval=10.0)

    assert trade.state is TradeState.OPEN and trade.legs[0].external_qty == 0.0
    assert len(rig.alerts_of("suspect_positions_read")) == 1 and rig.alerts_of("external_close") == []
    assert rig.reconciler.last_report is not None and rig.reconciler.last_report.suspect == [PERP]

    rig.sim.exchange.set_position(None, PERP, 0.01, trade.legs[0].open_vwap)
    rig.drive(180, step=10.0, poll_interval=10.0)
    assert len(rig.alerts_of("positions_reappeared")) == 1 and rig.reconciler.last_report.suspect == []
    assert trade.state is TradeState.OPEN and trade.legs[0].net_qty == pytest.approx(0.01)


def test_a_perp_close_booked_on_evidence_is_reversed_when_the_position_shows_again(rig):
    trade = open_long(rig)
    rig.outside_order(Side.SELL, 0.01)
    assert rig.drive(240, until=lambda: trade.state is TradeState.CLOSED, step=10.0, poll_interval=10.0)
    assert trade.exit_reason == EXIT_REASON_EXTERNAL and FLAG_PERP_EVIDENCE in trade.flags

    rig.sim.exchange.set_position(None, PERP, 0.01, trade.legs[0].open_vwap)   # it shows again, exactly
    assert rig.drive(240, until=lambda: trade.state is TradeState.OPEN, step=10.0, poll_interval=10.0)

    assert trade.legs[0].external_qty == 0.0 and trade.legs[0].net_qty == pytest.approx(0.01)
    assert FLAG_EXTERNAL_REVERSED in trade.flags and FLAG_PERP_EVIDENCE not in trade.flags
    [alert] = rig.alerts_of("external_close_reversed")
    assert "on fills that were not ours" in alert.message

    rig.sim.exchange.set_position(None, PERP, 0.0, 0.0)     # gone again, with no new fill
    rig.drive(240, step=10.0, poll_interval=10.0)
    assert trade.state is TradeState.OPEN and trade.legs[0].external_qty == 0.0   # the old fill proves nothing now
    assert rig.reconciler.last_report is not None and rig.reconciler.last_report.suspect == [PERP]


def test_an_unknown_open_perp_order_with_our_prefix_is_alerted_and_never_cancelled(rig):
    open_long(rig)
    coid = build_client_order_id(rig.ledger.prefix, 90, 0, Intent.OPEN, 1)   # a trade sequence we never used
    rig.store.raise_counter_to(TRADE_SEQ_COUNTER, 100)    # below the store's: a conflict, not a store behind
    price = round(rig.sim.exchange.perp_mark(PERP) * 0.97, 0)
    order_id = rig.client.perp_create_order(PERP, 0.002, Side.BUY, coid, price=price)

    rig.drive(180, step=10.0, poll_interval=10.0)

    [alert] = rig.alerts_of("prefix_conflict")
    assert str(coid) in alert.message and PERP in alert.message
    assert [o.order_id for o in rig.client.perp_pending_orders()] == [order_id]     # left open
    cancels = rig.sim.requests_for("futures_cancel_order") + rig.sim.requests_for("futures_batch_cancel")
    assert cancels == []
