"""Reconciliation of perpetuals: the evidence of an external close comes from the perp fill
history, and open perp orders with our prefix are listed (docs/RECOVERY.md S3, S6, X1, O2).

Driven with the fakes of tests/unit/test_reconciliation.py plus a fake of the perp reads
(``seams.PerpReconcilerClient``); the same rows against the simulator are in
tests/integration/test_perp_reconciliation_sim.py.
"""
from __future__ import annotations

from typing import Any

import pytest

from clock import SimulatedClock
from coincall_payloads import PerpFill, PerpOrder, PerpOrderState, PerpOrderType
from contracts import Contract, Side
from errors import TransportError
from external_closes import (
    EXIT_REASON_EXTERNAL,
    FLAG_EXTERNAL_REVERSED,
    FLAG_PERP_EVIDENCE,
    ExternalCloses,
    booked_on_perp_evidence,
    booked_without_evidence,
)
from order_ledger import Intent
from persistence import TRADE_SEQ_COUNTER
from prefix_ownership import perp_open_order
from reconciliation import Reconciler
from seams import PerpReconcilerClient, missing_members
from tests.unit.test_reconciliation import (
    BUY,
    SELL,
    T0,
    FakeAlerts,
    FakeClient,
    FakeLedger,
    FakeLifecycle,
    FakeOrder,
    FakeRunner,
    FakeStore,
    long_trade,
    ours,
    position,
    snapshot,
)
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState

PERP = "BTCUSD"
FOREIGN_PREFIX_COID = 77_000_001        # a clientOrderId no daemon of ours builds (prefix 101 expected)


class FakePerpClient:
    """The perp reads of the reconciler: open orders, fills (no clientOrderId) and order history."""

    def __init__(self) -> None:
        self.open: list[PerpOrder] = []
        self.fills: list[PerpFill] = []
        self.history: list[PerpOrder] = []
        self.fill_reads: list[dict] = []
        self.history_reads = 0
        self.fills_error: Exception | None = None

    def perp_pending_orders(self, symbol: str | None = None) -> list[PerpOrder]:
        return list(self.open)

    def perp_fills(self, *, start_ms: int | None = None, end_ms: int | None = None,
                   page_size: int = 50) -> list[PerpFill]:
        self.fill_reads.append({"start_ms": start_ms, "end_ms": end_ms})
        if self.fills_error is not None:
            raise self.fills_error
        return list(self.fills)

    def perp_order_history(self, *, start_ms: int | None = None, end_ms: int | None = None,
                           page_size: int = 50) -> list[PerpOrder]:
        self.history_reads += 1
        return list(self.history)


def perp_fill(order_id: int, side: int, qty: float, price: float, *, at: float, trade_id: int = 1,
              symbol: str = PERP) -> PerpFill:
    return PerpFill(trade_id=trade_id, order_id=order_id, symbol=symbol, side=Side(side),
                    order_type=PerpOrderType.MARKET, price=price, qty=qty, fee=0.0, time_ms=int(at * 1000),
                    is_taker=True, mark_price=None, index_price=None, cursor=trade_id)


def perp_order(order_id: int, coid: int | None, side: int = BUY, qty: float = 0.01, *,
               state: PerpOrderState | None = None, symbol: str = PERP) -> PerpOrder:
    return PerpOrder(order_id=order_id, client_order_id=coid, symbol=symbol, side=Side(side),
                     order_type=PerpOrderType.LIMIT, qty=qty, filled_qty=0.0, remaining_qty=qty, price=70_000.0,
                     avg_price=None, fee=None, state=state, reduce_only=False, time_in_force="GTC", leverage=None,
                     create_time_ms=int(T0 * 1000), update_time_ms=None)


def perp_trade(seq: int, qty: float, *, side: int = BUY, strategy: str = "s1") -> TradeLifecycle:
    leg = TradeLeg(index=0, contract=Contract.perpetual("BTC"), side=side, qty=qty, open_filled=qty,
                   open_vwap=70_000.0)
    return TradeLifecycle(id=f"T{seq:09d}", seq=seq, strategy=strategy, state=TradeState.OPEN, legs=[leg],
                          created_at=T0 - 700, opened_at=T0 - 600)


class Rig:
    def __init__(self, trades: list[TradeLifecycle], *, ledger: FakeLedger | None = None,
                 perp: bool = True) -> None:
        self.clock = SimulatedClock(start=T0, speed=0)
        self.client, self.lifecycle, self.alerts = FakeClient(), FakeLifecycle(trades), FakeAlerts()
        self.perp = FakePerpClient()
        self.ledger = ledger or FakeLedger()
        self.store = FakeStore()
        self.reconciler = Reconciler(client=self.client, ledger=self.ledger, lifecycle=self.lifecycle,
                                     store=self.store, clock=self.clock, alerts=self.alerts,
                                     perp_client=self.perp if perp else None)
        self.runner = FakeRunner("s1")
        self.reconciler.attach_runners([self.runner])


def test_the_coincall_client_implements_the_perp_reads_and_a_half_client_is_refused():
    from coincall_client import CoincallClient
    assert missing_members(CoincallClient, PerpReconcilerClient) == []
    with pytest.raises(TypeError, match="missing perp_fills, perp_order_history"):
        Reconciler(client=FakeClient(), ledger=FakeLedger(), lifecycle=FakeLifecycle(), store=None,
                   clock=SimulatedClock(start=T0, speed=0), perp_client=FakeClient())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# S3 / S6 for a perpetual: evidence from the perp fill history
# ---------------------------------------------------------------------------------------------


def test_s3_a_perp_shortfall_explained_by_a_fill_that_is_not_ours_is_booked_at_its_price():
    trade = perp_trade(1, 0.01)
    rig = Rig([trade], ledger=FakeLedger([FakeOrder(ours(1), PERP, order_id=500, live=False)]))
    rig.perp.fills = [perp_fill(500, BUY, 0.01, 69_000.0, at=T0 - 600, trade_id=1),      # our open: ours
                      perp_fill(900, SELL, 0.004, 71_000.0, at=T0 - 60, trade_id=2)]     # somebody's close
    rig.perp.history = [perp_order(900, None, SELL, 0.004, state=PerpOrderState.FILLED)]   # a manual order

    report = rig.reconciler.startup(snapshot(position(PERP, 0.006)))

    assert rig.lifecycle.external == [(trade.id, 0, 0.004, 71_000.0)]
    assert report.external_closes == [f"{trade.id}:{PERP}:0.004"] and report.suspect == []
    assert rig.runner.is_paused
    assert rig.client.history_reads == {}            # the option trade history holds no perp fill
    assert rig.perp.fill_reads[0]["start_ms"] == int((T0 - 600) * 1000)   # since the trade opened


def test_s6_a_perp_shortfall_with_only_our_own_fills_stays_a_suspect_read():
    trade = perp_trade(1, 0.01)
    rig = Rig([trade], ledger=FakeLedger([FakeOrder(ours(1), PERP, order_id=500, live=False),
                                          FakeOrder(ours(1, intent=Intent.CLOSE), PERP, order_id=501, live=False)]))
    rig.perp.fills = [perp_fill(500, BUY, 0.01, 69_000.0, at=T0 - 600, trade_id=1),
                      perp_fill(501, SELL, 0.01, 70_500.0, at=T0 - 30, trade_id=2)]   # our own close order

    report = rig.reconciler.startup(snapshot())

    assert rig.lifecycle.external == [] and report.suspect == [PERP]
    assert rig.alerts.kinds("CRITICAL") == ["suspect_positions_read"]
    assert "suspect_positions" in rig.lifecycle.entry_holds
    # one read: the start-up's prefix check (prefix_ownership); nothing left to join for the evidence
    assert rig.perp.history_reads == 1


def test_a_perp_fill_whose_order_carries_our_prefix_is_not_evidence():
    trade = perp_trade(1, 0.01)
    rig = Rig([trade])
    rig.perp.fills = [perp_fill(900, SELL, 0.01, 71_000.0, at=T0 - 60)]
    rig.perp.history = [perp_order(900, ours(9, intent=Intent.CLOSE), SELL, state=PerpOrderState.FILLED)]

    report = rig.reconciler.startup(snapshot())

    assert rig.lifecycle.external == [] and report.suspect == [PERP]


def test_fills_on_another_symbol_on_the_opening_side_or_before_the_trade_opened_are_not_evidence():
    trade = perp_trade(1, 0.01)
    rig = Rig([trade])
    rig.perp.fills = [perp_fill(901, SELL, 0.01, 3_000.0, at=T0 - 60, symbol="ETHUSD", trade_id=1),
                      perp_fill(902, BUY, 0.01, 71_000.0, at=T0 - 60, trade_id=2),
                      perp_fill(903, SELL, 0.01, 71_000.0, at=T0 - 900, trade_id=3)]

    report = rig.reconciler.startup(snapshot())

    assert rig.lifecycle.external == [] and report.suspect == [PERP]


def test_an_unreadable_perp_fill_history_is_no_evidence_and_without_perp_reads_there_is_none():
    rig = Rig([perp_trade(1, 0.01)])
    rig.perp.fills_error = TransportError("GET /open/futures/trade/history/v1", "connection refused")
    report = rig.reconciler.startup(snapshot())
    assert rig.lifecycle.external == [] and report.suspect == [PERP]

    bare = Rig([perp_trade(1, 0.01)], perp=False)
    report = bare.reconciler.startup(snapshot())
    assert bare.lifecycle.external == [] and report.suspect == [PERP] and bare.perp.fill_reads == []


def test_an_option_shortfall_still_reads_the_option_trade_history_only():
    trade = long_trade(1, 0.01)
    rig = Rig([trade])
    rig.client.fills = [{"symbol": trade.legs[0].symbol, "tradeSide": SELL, "qty": 0.01, "price": 380.0,
                         "orderId": 77, "time": int((T0 - 60) * 1000)}]

    rig.reconciler.startup(snapshot())

    assert rig.lifecycle.external == [(trade.id, 0, 0.01, 380.0)] and rig.perp.fill_reads == []


def test_a_fill_used_by_a_reversed_booking_proves_no_second_close():
    trade = perp_trade(1, 0.01)
    trade.metadata["external_close_reversed"] = {"legs": {PERP: 0.01}}
    rig = Rig([trade])
    rig.perp.fills = [perp_fill(900, SELL, 0.01, 71_000.0, at=T0 - 60)]

    report = rig.reconciler.startup(snapshot())

    assert rig.lifecycle.external == [] and report.suspect == [PERP]


# ---------------------------------------------------------------------------------------------
# X1 for a perpetual: a booking on evidence is reversible
# ---------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.persisted: list[tuple[str, dict]] = []

    def persist(self, trade: TradeLifecycle, event: str, **detail: Any) -> None:
        self.persisted.append((event, detail))


def test_a_perp_close_booked_on_evidence_is_flagged_reversible_and_unbooking_restores_it():
    trade = perp_trade(1, 0.01, side=SELL)
    alerts = FakeAlerts()
    external = ExternalCloses(recorder=Recorder(), alerts=alerts)   # type: ignore[arg-type]

    assert external.book(trade, trade.legs[0], 0.01, 71_000.0, "test")
    assert FLAG_PERP_EVIDENCE in trade.flags
    assert not booked_without_evidence(trade)               # still active: nothing to reverse
    trade.state, trade.exit_reason, trade.closed_at = TradeState.CLOSED, EXIT_REASON_EXTERNAL, T0
    assert booked_on_perp_evidence(trade) and booked_without_evidence(trade)
    assert ExternalCloses.reversible([trade], T0 + 60) == [trade]
    assert ExternalCloses.reversible([trade], T0 + 8 * 24 * 3600) == []      # too old

    restored = ExternalCloses.unbook(trade, "shows again", T0 + 60)

    assert restored == {PERP: -0.01} and trade.legs[0].external_qty == 0.0
    assert trade.flags == [FLAG_EXTERNAL_REVERSED] and trade.metadata["external_close_reversed"]["on_evidence"]
    external.alert_reversed(trade, "shows again", restored, managed=True)
    assert "on fills that were not ours" in alerts.messages[-1]


def test_an_option_close_booked_on_evidence_is_not_reversible():
    trade = long_trade(1, 0.01)
    ExternalCloses(recorder=Recorder(), alerts=None).book(trade, trade.legs[0], 0.01, 380.0, "test")  # type: ignore[arg-type]
    trade.state, trade.exit_reason, trade.closed_at = TradeState.CLOSED, EXIT_REASON_EXTERNAL, T0
    assert FLAG_PERP_EVIDENCE not in trade.flags and not booked_without_evidence(trade)


# ---------------------------------------------------------------------------------------------
# O2 for perpetuals: open perp orders with our prefix that the ledger does not know
# ---------------------------------------------------------------------------------------------


def test_an_unknown_open_perp_order_with_our_prefix_is_listed_alerted_and_never_cancelled():
    rig = Rig([])
    rig.store.counters[TRADE_SEQ_COUNTER] = 100          # the store has reached beyond it: not a store behind
    unknown = ours(40)
    rig.perp.open = [perp_order(910, unknown), perp_order(911, FOREIGN_PREFIX_COID), perp_order(912, None)]

    report = rig.reconciler.startup(snapshot())

    assert report.foreign_orders == [unknown]
    assert rig.alerts.kinds("CRITICAL") == ["prefix_conflict"]
    assert PERP in rig.alerts.messages[0] and str(unknown) in rig.alerts.messages[0]
    assert rig.runner.is_paused and rig.client.cancelled == []
    rig.clock.advance(61)
    rig.reconciler.periodic(snapshot(at=rig.clock.now()))
    assert rig.alerts.kinds("CRITICAL") == ["prefix_conflict"]             # reported once


def test_a_live_perp_order_of_ours_listed_open_is_not_verified_and_an_unlisted_one_is():
    listed, unlisted = FakeOrder(ours(1), PERP, order_id=920), FakeOrder(ours(2), PERP, order_id=921)
    rig = Rig([], ledger=FakeLedger([listed, unlisted]))
    rig.perp.open = [perp_order(920, ours(1))]
    rig.clock.advance(120)

    rig.reconciler.startup(snapshot(at=rig.clock.now()))

    assert rig.ledger.verified == [ours(2)] and rig.alerts.kinds("CRITICAL") == []


def test_an_open_perp_order_of_ours_beyond_the_store_sequence_means_the_store_is_behind():
    rig = Rig([])
    rig.perp.open = [perp_order(950, ours(40))]

    report = rig.reconciler.startup(snapshot())

    assert rig.alerts.kinds("CRITICAL") == ["store_behind"] and report.foreign_orders == [ours(40)]
    assert PERP in rig.ledger.blocked and rig.client.cancelled == []


def test_a_missing_store_with_an_open_perp_order_of_ours_starts_paused():
    rig = Rig([])
    rig.store.empty = True
    rig.perp.open = [perp_order(930, ours(3))]

    report = rig.reconciler.startup(snapshot())

    assert rig.alerts.kinds("CRITICAL") == ["missing_store_start"] and rig.runner.is_paused
    assert report.quarantine is not None and report.quarantine["open_orders"] == 1
    assert rig.client.cancelled == []


def test_the_open_perp_order_view_keeps_ids_side_and_state():
    view = perp_open_order(perp_order(940, ours(4), SELL, 0.02, state=PerpOrderState.PARTIALLY_FILLED))
    assert (view.order_id, view.client_order_id, view.symbol, view.side, view.qty, view.state,
            view.reduce_only) == (940, ours(4), PERP, Side.SELL, 0.02, 2, 0)
    assert perp_open_order(perp_order(941, None)).state is None


def test_a_filled_perp_order_of_ours_in_the_history_reseeds_the_sequence_and_shows_the_store_behind():
    """A structure of perp legs alone leaves no option order: the perp history must be read too, or a
    store restored from an old backup would send its clientOrderIds again."""
    rig = Rig([])
    rig.store.counters[TRADE_SEQ_COUNTER] = 10
    rig.perp.history = [perp_order(960, ours(40), state=PerpOrderState.FILLED),
                        perp_order(961, FOREIGN_PREFIX_COID, state=PerpOrderState.FILLED)]

    report = rig.reconciler.startup(snapshot())

    assert rig.store.counters[TRADE_SEQ_COUNTER] > 40
    assert rig.alerts.kinds("CRITICAL") == ["store_behind"] and report.foreign_orders == [ours(40)]
    assert rig.client.cancelled == []


def test_a_perp_order_of_ours_that_filled_between_two_checks_is_still_seen():
    rig = Rig([])
    rig.store.counters[TRADE_SEQ_COUNTER] = 100
    rig.reconciler.startup(snapshot())
    assert rig.alerts.kinds("CRITICAL") == []
    rig.perp.history = [perp_order(970, ours(50), state=PerpOrderState.FILLED)]   # never listed open
    rig.clock.advance(61)

    rig.reconciler.periodic(snapshot(at=rig.clock.now()))

    assert rig.alerts.kinds("CRITICAL") == ["prefix_conflict"] and rig.runner.is_paused
    assert rig.client.cancelled == []
