"""What may and may not prove that somebody else closed our position (docs/RECOVERY.md S3, X1, O9, O10).

Two ways our own fills passed for somebody else's:

* an order of ours whose fate rests on missing data (a presumed NOT_PLACED whose create answer
  was lost, a VANISHED one) may have filled; an option fill row carries no clientOrderId and
  the ledger never learnt that order's orderId, so its fill looked foreign: booked as an
  external close, then booked again as our close when the watch found the order. While such
  an order is watched, no shortfall on its symbol (or on its trade's) is judged;
* the record of a reversed booking (X1) was overwritten by the next reversal of the same
  trade, so the fills of the first became evidence again.

Driven through the real ``Reconciler`` with the fakes of tests/unit/test_reconciliation.py,
holding real ``LedgerOrder`` values, and a lifecycle that books our fills from the ledger.
"""
from __future__ import annotations

import logging
from typing import Any

import pytest

from clock import SimulatedClock
from contracts import Contract
from external_closes import (
    EXIT_REASON_EXTERNAL,
    REVERSED_METADATA_KEY,
    REVERSED_TOTAL_KEY,
    ExternalCloses,
    reversed_quantities,
)
from order_ledger import PRESUMED_VERDICT_HORIZON_SECONDS, Intent, LedgerOrder, OrderStatus
from reconciliation import Reconciler
from reconciliation_report import VERDICT_DEFERRED, VERDICT_SHORTFALL
from tests.unit.test_perp_reconciliation import PERP, Recorder, Rig, perp_fill, perp_trade
from tests.unit.test_reconciliation import (
    BUY,
    SELL,
    T0,
    FakeAlerts,
    FakeClient,
    FakeLedger,
    FakeLifecycle,
    FakeRunner,
    FakeStore,
    ours,
    position,
    snapshot,
)
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState

# Expiring weeks after T0: the legs are still held when a day of re-checks has passed.
LATE_EXPIRY_MS = 1_774_598_400_000          # 2026-03-27 08:00 UTC
CALL = "BTCUSD-27MAR26-92000-C"
PUT = "BTCUSD-27MAR26-88000-P"
OTHER = "BTCUSD-27MAR26-96000-C"
DEFERRAL_LOG = "no external close is judged there"
RESUMED_LOG = "is judged again"


def contract(symbol: str) -> Contract:
    return Contract(symbol=symbol, underlying="BTC", option_type=symbol[-1], strike=float(symbol.split("-")[2]),
                    expiry_ms=LATE_EXPIRY_MS)


def option_trade(seq: int, *symbols: str, qty: float = 0.01) -> TradeLifecycle:
    """A long trade on ``symbols`` (one leg each), opened at T0-600."""
    legs = [TradeLeg(index=index, contract=contract(symbol), side=BUY, qty=qty, open_filled=qty, open_vwap=400.0)
            for index, symbol in enumerate(symbols)]
    return TradeLifecycle(id=f"T{seq:09d}", seq=seq, strategy="s1", state=TradeState.OPEN, legs=legs,
                          created_at=T0 - 700, opened_at=T0 - 600)


def doubtful_close(trade: TradeLifecycle, leg: int = 0, *, status: OrderStatus = OrderStatus.NOT_PLACED,
                   order_id: int | None = None, verdict_at: float = T0 - 10) -> LedgerOrder:
    """Our close of ``trade``'s leg, sent at T0-60, settled on missing data at ``verdict_at``: a
    presumed NOT_PLACED (its create answer lost, the lookup by clientOrderId lagging: no orderId
    known) or a VANISHED one."""
    return LedgerOrder(ours(trade.seq, leg, Intent.CLOSE), trade.id, trade.seq, leg, Intent.CLOSE, 1, None,
                       trade.legs[leg].symbol, SELL, trade.legs[leg].qty, 350.0, True, status, order_id=order_id,
                       sent_at=T0 - 60, updated_at=verdict_at, presumed=True)


def option_fill(symbol: str, order_id: int, qty: float = 0.01, price: float = 350.0, *, at: float = T0 - 59) -> dict:
    """A trade-history row (no clientOrderId: API.md 8.6)."""
    return {"symbol": symbol, "orderId": order_id, "tradeSide": SELL, "qty": qty, "price": price,
            "time": int(at * 1000)}


class Ledger(FakeLedger):
    """The fake ledger over real ``LedgerOrder`` values; ``shows`` is what the exchange's lookups
    answer about an order by clientOrderId (orderId, filled qty, price), once it stops lagging."""

    def __init__(self, orders: list[LedgerOrder], clock: SimulatedClock) -> None:
        super().__init__([], verify_result="final")
        self._orders = list(orders)   # type: ignore[arg-type]
        self.clock = clock
        self.shows: dict[int, tuple[int, float, float]] = {}

    def live_orders(self, trade_id: str | None = None) -> list[Any]:
        return [o for o in self._orders if not o.status.is_final]

    def verify(self, order: Any) -> str:
        self.verified.append(order.client_order_id)
        seen = self.shows.get(order.client_order_id)
        if seen is None:
            return "vanished" if order.status is OrderStatus.VANISHED else "final"
        order.order_id, order.filled_qty, order.avg_price = seen
        order.status, order.presumed, order.updated_at = OrderStatus.FILLED, False, self.clock.now()
        return "final"


class BookingLifecycle(FakeLifecycle):
    """The fake lifecycle, whose trades re-read their close fills from the ledger (as the real one does)."""

    def __init__(self, trades: list[TradeLifecycle], ledger: Ledger) -> None:
        super().__init__(trades)
        self.ledger = ledger

    def get(self, trade_id: str) -> TradeLifecycle | None:
        return next((t for t in self._trades if t.id == trade_id), None)

    def refresh_fills(self, trade_id: str) -> None:
        trade = self.get(trade_id)
        if trade is None:
            return
        for leg in trade.legs:
            leg.close_filled = sum(o.filled_qty for o in self.ledger.orders() if o.trade_id == trade_id
                                   and o.leg_index == leg.index and o.intent.family() is Intent.CLOSE)


class World:
    def __init__(self, trades: list[TradeLifecycle], orders: list[LedgerOrder]) -> None:
        self.clock = SimulatedClock(start=T0, speed=0)
        self.client, self.alerts = FakeClient(), FakeAlerts()
        self.ledger = Ledger(orders, self.clock)
        self.lifecycle = BookingLifecycle(trades, self.ledger)
        self.reconciler = Reconciler(client=self.client, ledger=self.ledger, lifecycle=self.lifecycle,
                                     store=FakeStore(), clock=self.clock, alerts=self.alerts)
        self.runner = FakeRunner("s1")
        self.reconciler.attach_runners([self.runner])

    def periodic(self, *positions: Any, after: float = 60.0) -> Any:
        self.clock.advance(after)
        return self.reconciler.periodic(snapshot(*positions, at=self.clock.now()))


def verdict(report: Any, symbol: str) -> str:
    return next(check.verdict for check in report.symbols if check.symbol == symbol)


def logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(1 for record in caplog.records if text in record.getMessage())


# ---------------------------------------------------------------------------------------------
# R2: a fill of our own order presumed NOT_PLACED is not evidence of an external close
# ---------------------------------------------------------------------------------------------


def test_start_up_a_fill_of_our_presumed_not_placed_close_is_not_booked_as_an_external_close(caplog):
    trade = option_trade(1, CALL)
    w = World([trade], [doubtful_close(trade)])
    w.client.fills = [option_fill(CALL, 900)]           # it did fill, as orderId 900 (unknown to the ledger)

    with caplog.at_level(logging.INFO):
        report = w.reconciler.startup(snapshot())      # the position reads flat

    assert w.lifecycle.external == [] and report.external_closes == []
    assert verdict(report, CALL) == VERDICT_DEFERRED and not w.runner.is_paused
    assert "external_close" not in w.alerts.kinds()
    assert logged(caplog, DEFERRAL_LOG) == 1


def test_running_a_fill_of_our_presumed_not_placed_close_is_not_booked_on_two_agreeing_checks():
    trade = option_trade(1, CALL)
    w = World([trade], [])
    w.reconciler.startup(snapshot(position(CALL, 0.01)))
    w.ledger._orders.append(doubtful_close(trade, verdict_at=T0 + 50))   # presumed NOT_PLACED meanwhile
    w.client.fills = [option_fill(CALL, 900, at=T0 + 5)]

    reports = [w.periodic(after=60.0), w.periodic(after=5.0), w.periodic(after=5.0)]

    assert w.lifecycle.external == [] and not w.runner.is_paused
    assert [verdict(report, CALL) for report in reports] == [VERDICT_DEFERRED] * 3


def test_the_deferral_ends_when_the_verdict_is_reversed_and_our_fill_is_booked_once_as_our_close(caplog):
    trade = option_trade(1, CALL)
    close = doubtful_close(trade)
    w = World([trade], [close])
    w.client.fills = [option_fill(CALL, 900)]
    with caplog.at_level(logging.INFO):
        w.reconciler.startup(snapshot())
        w.ledger.shows[close.client_order_id] = (900, 0.01, 350.0)   # the lookup catches up

        report = w.periodic()                          # the watch's re-check finds it (O9)
        w.periodic()
        w.periodic()

    leg = trade.legs[0]
    assert close.status is OrderStatus.FILLED and "order_verdict_reversed" in w.alerts.kinds("CRITICAL")
    assert leg.close_filled == pytest.approx(0.01) and leg.external_qty == 0.0
    assert leg.close_filled + leg.external_qty <= leg.open_filled + 1e-9
    assert w.lifecycle.external == [] and not w.runner.is_paused and report.suspect == []
    assert logged(caplog, DEFERRAL_LOG) == 1 and logged(caplog, RESUMED_LOG) == 1


def test_the_deferral_ends_when_the_watch_of_a_presumed_not_placed_expires(caplog):
    """A day of re-checks without the exchange showing the order: the NOT_PLACED verdict stands,
    and the table applies again as to any other fill (the one that matches no order of ours is
    evidence)."""
    trade = option_trade(1, CALL)
    w = World([trade], [doubtful_close(trade)])
    w.client.fills = [option_fill(CALL, 900)]
    with caplog.at_level(logging.INFO):
        w.reconciler.startup(snapshot())
        within = [w.periodic(after=3600.0) for _hour in range(23)]
        w.clock.set_time(T0 - 10 + PRESUMED_VERDICT_HORIZON_SECONDS - 30)
        last_in_doubt = w.periodic(after=0.0)
        first_after, second_after = w.periodic(after=60.0), w.periodic(after=60.0)

    assert all(verdict(report, CALL) == VERDICT_DEFERRED for report in [*within, last_in_doubt])
    assert verdict(first_after, CALL) == VERDICT_SHORTFALL           # seen once: acts if the next agrees
    assert second_after.external_closes == [f"{trade.id}:{CALL}:0.01"]
    assert w.lifecycle.external == [(trade.id, 0, 0.01, 350.0)]
    assert logged(caplog, DEFERRAL_LOG) == 1 and logged(caplog, RESUMED_LOG) == 1


def test_a_vanished_order_defers_the_judgement_until_its_watch_ends_unresolved():
    trade = option_trade(1, CALL)
    vanished = doubtful_close(trade, status=OrderStatus.VANISHED, order_id=800)
    w = World([trade], [vanished])
    w.client.fills = [option_fill(CALL, 900)]           # somebody's fill (not the vanished order's 800)

    startup = w.reconciler.startup(snapshot())
    w.clock.set_time(T0 - 10 + PRESUMED_VERDICT_HORIZON_SECONDS + 1)
    w.periodic(after=0.0)
    w.periodic()

    assert verdict(startup, CALL) == VERDICT_DEFERRED
    assert "order_vanished_unresolved" in w.alerts.kinds("CRITICAL")
    assert w.lifecycle.external == [(trade.id, 0, 0.01, 350.0)]      # the table applies again


def test_no_external_close_is_booked_on_any_leg_of_a_trade_with_an_order_in_doubt():
    """The put was closed by somebody else (fill 901), but the call's close of the same trade is a
    presumed NOT_PLACED: nothing is booked on that trade; another trade is judged as always."""
    strangle, other = option_trade(1, CALL, PUT), option_trade(2, OTHER)
    w = World([strangle, other], [doubtful_close(strangle, 0)])
    w.client.fills = [option_fill(PUT, 901, price=120.0), option_fill(OTHER, 902, price=90.0)]

    report = w.reconciler.startup(snapshot(position(CALL, 0.01)))

    assert verdict(report, PUT) == VERDICT_DEFERRED
    assert w.lifecycle.external == [(other.id, 0, 0.01, 90.0)]


def test_an_opposite_side_is_still_acted_on_while_an_order_is_in_doubt():
    """Deferral is about booking closes: an opposite position books nothing, and may be the very
    over-close a presumed NOT_PLACED that filled caused; the symbol is blocked as always (S4)."""
    trade = option_trade(1, CALL)
    w = World([trade], [doubtful_close(trade)])

    w.reconciler.startup(snapshot(position(CALL, -0.01)))

    assert CALL in w.ledger.blocked and w.runner.is_paused and w.lifecycle.external == []


def test_an_order_in_doubt_defers_no_symbol_it_does_not_touch():
    trade, other = option_trade(1, CALL), option_trade(2, OTHER)
    w = World([trade, other], [doubtful_close(trade)])
    w.client.fills = [option_fill(OTHER, 902, price=90.0)]

    report = w.reconciler.startup(snapshot(position(CALL, 0.01)))

    assert w.lifecycle.external == [(other.id, 0, 0.01, 90.0)]
    assert report.external_closes == [f"{other.id}:{OTHER}:0.01"]


# ---------------------------------------------------------------------------------------------
# R3: every reversal of a trade's external close counts, not the last one only
# ---------------------------------------------------------------------------------------------


def _book_and_reverse(external: ExternalCloses, trade: TradeLifecycle, at: float) -> None:
    assert external.book(trade, trade.legs[0], 0.01, 71_000.0, "foreign sell")
    trade.state, trade.exit_reason, trade.closed_at = TradeState.CLOSED, EXIT_REASON_EXTERNAL, at
    ExternalCloses.unbook(trade, "the position shows again", at + 60)      # X1
    trade.state = TradeState.OPEN


def test_the_fills_of_two_reversed_bookings_prove_no_third_close():
    trade = perp_trade(1, 0.01)                          # long 0.01 BTCUSD, opened T0-600
    external = ExternalCloses(recorder=Recorder(), alerts=None)   # type: ignore[arg-type]
    _book_and_reverse(external, trade, T0 - 500)         # 1st booking on fill 900, reversed
    _book_and_reverse(external, trade, T0 - 300)         # 2nd booking on fill 901, reversed
    rig = Rig([trade])
    rig.perp.fills = [perp_fill(900, SELL, 0.01, 71_000.0, at=T0 - 550, trade_id=1),
                      perp_fill(901, SELL, 0.01, 71_000.0, at=T0 - 350, trade_id=2)]

    report = rig.reconciler.startup(snapshot())          # flat, with no new fill

    assert rig.lifecycle.external == [] and report.suspect == [PERP]
    assert reversed_quantities(trade.metadata[REVERSED_METADATA_KEY]) == {PERP: 0.02}
    assert trade.metadata[REVERSED_METADATA_KEY]["legs"] == {PERP: 0.01}     # the latest reversal, as before


def test_a_reversal_recorded_in_the_old_format_is_carried_into_the_running_total():
    trade = perp_trade(1, 0.01)
    trade.metadata[REVERSED_METADATA_KEY] = {"legs": {PERP: 0.01}}          # one reversal, older version
    _book_and_reverse(ExternalCloses(recorder=Recorder(), alerts=None), trade, T0 - 300)  # type: ignore[arg-type]
    rig = Rig([trade])
    rig.perp.fills = [perp_fill(900, SELL, 0.01, 71_000.0, at=T0 - 550, trade_id=1),
                      perp_fill(901, SELL, 0.01, 71_000.0, at=T0 - 350, trade_id=2)]

    report = rig.reconciler.startup(snapshot())

    assert rig.lifecycle.external == [] and report.suspect == [PERP]
    assert trade.metadata[REVERSED_METADATA_KEY][REVERSED_TOTAL_KEY] == {PERP: 0.02}


def test_a_fill_beyond_the_reversed_ones_is_still_evidence():
    trade = perp_trade(1, 0.01)
    external = ExternalCloses(recorder=Recorder(), alerts=None)   # type: ignore[arg-type]
    _book_and_reverse(external, trade, T0 - 500)
    _book_and_reverse(external, trade, T0 - 300)
    rig = Rig([trade])
    rig.perp.fills = [perp_fill(900, SELL, 0.01, 71_000.0, at=T0 - 550, trade_id=1),
                      perp_fill(901, SELL, 0.01, 71_000.0, at=T0 - 350, trade_id=2),
                      perp_fill(902, SELL, 0.01, 72_000.0, at=T0 - 60, trade_id=3)]     # a new foreign close

    rig.reconciler.startup(snapshot())

    assert rig.lifecycle.external == [(trade.id, 0, 0.01, 72_000.0)]


@pytest.mark.parametrize("record, expected", [
    ({"legs": {PERP: -0.01}}, {PERP: 0.01}),                                  # old format, signed (a short)
    ({"legs": {PERP: 0.01}, REVERSED_TOTAL_KEY: {PERP: 0.03}}, {PERP: 0.03}),
    ({}, {}),
    (None, {}),
    ({"legs": "corrupt"}, {}),
])
def test_reversed_quantities_reads_both_formats(record, expected):
    assert reversed_quantities(record) == expected


def test_a_close_fill_of_ours_learnt_after_an_external_close_cuts_the_external_booking():
    """The lifecycle's own guard (RECOVERY.md, after the S rows): should an external close have
    been booked from what was our own fill, the fill read later replaces it; never both."""
    import pytest

    from order_ledger import Intent, OrderStatus
    from tests.unit.test_lifecycle_safety import SafetyLedger, build_world
    from tests.unit.test_trade_lifecycle import CALL, open_trade

    rig = build_world(SafetyLedger)
    trade = open_trade(rig)                                  # short strangle, 0.1 each
    rig.manager.record_external_close(trade.id, 0, 0.1, 350.0, detail="evidence: orderId 900")
    order = rig.ledger.order(trade.id, 0, CALL, Intent.CLOSE, status=OrderStatus.NOT_PLACED)
    rig.ledger.book(order, 0.1, 350.0)                       # O9: the exchange shows it filled (orderId 900)
    rig.manager.refresh_fills(trade.id)
    call = trade.legs[0]
    assert call.close_filled == pytest.approx(0.1) and call.external_qty == 0.0
    assert rig.store.saved[-1]["legs"][0]["external_qty"] == 0.0
