"""The lifecycle manager's parts, each on its own (no manager): what they decide and write.

The whole lifecycle is covered through ``LifecycleManager`` in test_trade_lifecycle.py; these
tests pin each part's own rule, so a part can be read and changed alone.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from close_rounds import BREAKER_FIRST_DELAY, KILL_BREAKER_ALERT_EVERY_SECONDS, CloseRounds
from external_closes import EXIT_REASON_EXTERNAL, FLAG_PNL_ESTIMATED, REVERSAL_LOOKBACK_SECONDS, ExternalCloses
from lifecycle_holds import LifecycleHolds
from order_ledger import Intent
from settlement import DELIVERY_RETRY_SECONDS, DeliveryWatch, Settler, estimated_delivery_fee
from trade_execution import ExecutionParams
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState
from trade_recorder import TradeRecorder

from tests.unit.test_trade_lifecycle import (
    CALL,
    FRIDAY_EXPIRY_MS,
    MONDAY_EXPIRY_MS,
    PUT,
    START,
    FakeAlerts,
    FakeClient,
    FakeLedger,
    Journal,
    contract,
)


def trade(*, state: TradeState = TradeState.OPEN, mode: str = "smart", **fields) -> TradeLifecycle:
    legs = [TradeLeg(index=0, contract=contract(CALL), side=2, qty=0.1, open_filled=0.1),
            TradeLeg(index=1, contract=contract(PUT), side=2, qty=0.1, open_filled=0.1)]
    return TradeLifecycle(id="T000000001", seq=1, strategy="strat", state=state, legs=legs, execution_mode=mode,
                          **fields)


# ------------------------------------------------------------------------------ close rounds


def rounds(alerts: FakeAlerts | None = None) -> tuple[CloseRounds, FakeLedger]:
    ledger = FakeLedger(Journal())
    return CloseRounds(ledger=ledger, urgent_params=ExecutionParams.urgent(), alerts=alerts), ledger


def test_a_close_uses_the_trades_engine_first_then_the_limit_fallback_and_unwind_and_kill_are_urgent():
    plan, _ = rounds()
    params = {"limit": "limit-params", "smart": "smart-params"}
    first = plan.next_round(trade(), unwinding=False, kill=False, params_for=params.get)
    assert (first.kind, first.intent, first.mode, first.params) == ("close", Intent.CLOSE, "smart", "smart-params")
    retry = plan.next_round(trade(failed_rounds=1), unwinding=False, kill=False, params_for=params.get)
    assert (retry.mode, retry.params) == ("limit", "limit-params")
    for unwinding, kill, kind, intent in ((True, False, "unwind", Intent.UNWIND), (True, True, "unwind", Intent.KILL),
                                          (False, True, "kill", Intent.KILL)):
        urgent = plan.next_round(trade(), unwinding=unwinding, kill=kill, params_for=params.get)
        assert (urgent.kind, urgent.intent, urgent.mode, urgent.params) == (kind, intent, "limit",
                                                                             plan.urgent_params)


def test_round_targets_skip_blocked_symbols_and_legs_inside_the_halt():
    plan, ledger = rounds()
    ledger.blocked.add(PUT)
    assert [(t.symbol, t.side, t.qty) for t in plan.targets(trade(), START)] == [(CALL, 1, 0.1)]
    assert plan.targets(trade(), FRIDAY_EXPIRY_MS / 1000.0 - 60) == []


def test_ten_failed_rounds_trip_the_breaker_which_the_kill_switch_ignores():
    alerts = FakeAlerts()
    plan, _ = rounds(alerts)
    closing = trade()
    for _ in range(9):
        plan.after_failed_round(closing, kill=False, now=START)
    assert closing.breaker_until is None and plan.trips == 0
    plan.after_failed_round(closing, kill=False, now=START)
    assert closing.breaker_until == START + BREAKER_FIRST_DELAY and plan.trips == 1
    assert alerts.kinds("CRITICAL") == ["close_breaker"]
    assert plan.breaker_active(closing, kill=False, now=START + 1)
    assert not plan.breaker_active(closing, kill=True, now=START + 1)
    plan.after_failed_round(closing, kill=False, now=START)
    assert closing.breaker_until == START + 2 * BREAKER_FIRST_DELAY and plan.trips == 2


def test_a_kill_that_keeps_failing_alerts_at_most_every_fifteen_minutes_not_every_round():
    alerts = FakeAlerts()
    plan, _ = rounds(alerts)
    killing = trade()
    now = START
    for _ in range(100):                      # rounds a few seconds apart: the kill ignores the breaker
        plan.after_failed_round(killing, kill=True, now=now)
        now += 5.0
    assert alerts.kinds("CRITICAL") == ["close_breaker"] and plan.trips == 91
    plan.after_failed_round(killing, kill=True, now=START + 45 + KILL_BREAKER_ALERT_EVERY_SECONDS)
    assert alerts.kinds("CRITICAL") == ["close_breaker", "close_breaker"]


# ------------------------------------------------------------------------------ settlement


def test_settlement_is_tried_again_every_retry_interval_and_a_daily_pays_no_delivery_fee():
    watch = DeliveryWatch()
    assert Settler.due(watch, START)
    assert not Settler.due(watch, START + DELIVERY_RETRY_SECONDS - 1)
    assert Settler.due(watch, START + DELIVERY_RETRY_SECONDS)
    assert estimated_delivery_fee(MONDAY_EXPIRY_MS, 0.1, 82_000.0, 2_000.0) == 0.0
    assert estimated_delivery_fee(FRIDAY_EXPIRY_MS, 0.1, 82_000.0, 2_000.0) == pytest.approx(1.23)


def test_a_leg_waits_for_its_delivery_price_and_then_settles_at_intrinsic():
    client, alerts = FakeClient(), FakeAlerts()
    settler, expired, watch = Settler(client, alerts), trade(), DeliveryWatch()
    after = FRIDAY_EXPIRY_MS / 1000.0 + 60
    assert not settler.settle_leg(expired, expired.legs[1], watch, after)
    client.delivery.append({"date": FRIDAY_EXPIRY_MS, "delivery_price": "78000"})
    assert settler.settle_leg(expired, expired.legs[1], watch, after)
    settled = expired.legs[1].settlement
    assert (settled.intrinsic, settled.cash, settled.fee_estimated) == (2000.0, -200.0, True)
    assert "fee_estimated" in expired.flags and expired.legs[1].net_qty == 0.0


# ------------------------------------------------------------------------------ external closes


def test_an_external_close_is_booked_at_the_fills_price_persisted_then_alerted():
    journal, alerts = Journal(), FakeAlerts()
    store = SimpleNamespace(save_trade=lambda record: journal.append(("save", record["legs"][0]["external_qty"])),
                            append_event=lambda kind, payload, ts: journal.append(("event", payload["event"])))
    recorder = TradeRecorder(store=store, clock=SimpleNamespace(now=lambda: START), alerts=alerts, journal=None)
    closes, open_trade = ExternalCloses(recorder=recorder, alerts=alerts), trade()
    assert closes.book(open_trade, open_trade.legs[0], 0.5, 90.0, "seen on the fills")   # at most what it holds
    assert (open_trade.legs[0].external_qty, open_trade.legs[0].net_qty) == (0.1, 0.0)
    assert journal == [("save", 0.1), ("event", "external_close")] and alerts.kinds("CRITICAL") == ["external_close"]
    assert not closes.book(open_trade, open_trade.legs[0], 0.1, 90.0, "again")               # nothing left


def test_only_recent_closes_booked_without_evidence_are_reversible_and_unbooking_restores_them():
    def booked(ended: float) -> TradeLifecycle:
        closed = trade(state=TradeState.CLOSED, exit_reason=EXIT_REASON_EXTERNAL, closed_at=ended,
                       flags=[FLAG_PNL_ESTIMATED], opened_at=START - 3600)
        closed.legs[0].external_qty = 0.1
        return closed

    recent, old = booked(START - 60), booked(START - REVERSAL_LOOKBACK_SECONDS - 1)
    assert ExternalCloses.reversible([recent, old, trade()], START) == [recent]
    assert ExternalCloses.unbook(recent, "the position shows again", START) == {CALL: -0.1}
    assert recent.legs[0].external_qty == 0.0 and recent.exit_reason is None and recent.closed_at is None
    assert recent.flags == ["external_close_reversed"]
    assert recent.metadata["external_close_reversed"]["was"]["state"] == "CLOSED"


# ------------------------------------------------------------------------------ holds


def test_the_start_up_hold_is_logged_once_per_hold_and_entry_holds_are_keyed(caplog):
    caplog.set_level(logging.INFO, logger="lifecycle_holds")
    holds = LifecycleHolds()
    assert not holds.on_hold()
    holds.hold("start-up reconciliation")
    assert holds.on_hold() and holds.on_hold() and holds.reason == "start-up reconciliation"
    assert len([r for r in caplog.records if "lifecycle on hold" in r.getMessage()]) == 1
    holds.release()
    assert not holds.on_hold() and holds.reason is None
    assert holds.hold_entries("positions", "suspect read") and not holds.hold_entries("positions", "again")
    assert holds.entry_holds == {"positions": "again"}
    assert holds.release_entries("positions") and not holds.release_entries("positions")
    assert holds.entry_holds == {}
