"""An expired leg is paid at the delivery price only for what its close fills did not take
(docs/BEHAVIOUR.md 4.5, docs/RECOVERY.md O7, O9, O10).

Two ways the same quantity was once counted twice, a close at its fill price and a delivery
at the delivery price:

* a resting close order the exchange ends at 08:00 (EXPIRED, final) reports its fill a moment
  later (API.md 11.16); the leg was settled in the tick that saw the order end, before the one
  more poll every other path waits for: settlement now waits for that poll;
* a close order judged VANISHED (a verdict on missing data) is found filled days later; the
  settlement was fixed and the fill booked on top: the fills read again now cut the settlement
  to what the leg still held, and a finished trade's PnL is booked again.
"""
from __future__ import annotations

import pytest

import conditions
from order_ledger import Intent, OrderStatus
from settlement import Settlement
from trade_lifecycle import TradeState
from tests.unit.test_trade_lifecycle import CALL, MONDAY_EXPIRY_MS, open_trade, world  # noqa: F401 - the fixture
from tests.unit.test_lifecycle_safety import rig  # noqa: F401 - the fixture


def _at_expiry_with_close_order(rig, status):
    trade = open_trade(rig, exits=[conditions.max_hold_hours(1)], expiry_ms=MONDAY_EXPIRY_MS)  # short strangle
    rig.clock.set_time(MONDAY_EXPIRY_MS / 1000.0 - 600)     # 07:50: exit decided, legs frozen
    rig.poll()
    assert trade.state is TradeState.PENDING_CLOSE
    rig.clock.set_time(MONDAY_EXPIRY_MS / 1000.0)
    order = rig.ledger.order(trade.id, 0, CALL, Intent.CLOSE, status=status)
    rig.client.delivery.append({"date": MONDAY_EXPIRY_MS, "delivery_price": "95000"})   # call ITM by 5000
    return trade, order


def _never_twice(leg) -> None:
    assert leg.close_filled + leg.settled_qty <= leg.open_filled + 1e-9, (
        f"{leg.open_filled} opened, {leg.close_filled} closed and {leg.settled_qty} settled")


def test_an_order_the_exchange_just_ended_is_polled_once_more_before_the_leg_settles(rig):
    trade, order = _at_expiry_with_close_order(rig, OrderStatus.LIVE)
    rig.poll()                                        # polled, still working: the leg waits
    rig.ledger.end(order, OrderStatus.EXPIRED)        # ended at 08:00; its fill is reported late
    rig.ledger.late[order.client_order_id] = (0.1, 30.0)
    rig.clock.advance(1)
    rig.poll()
    call = trade.legs[0]
    assert call.settlement is None                    # inside the grace: not settled yet
    rig.clock.advance(10)
    rig.poll()                                        # the late-fill poll: the close filled 0.1
    rig.clock.advance(1)
    rig.poll()
    assert call.close_filled == pytest.approx(0.1) and call.net_qty == 0.0
    assert call.settled_qty == 0.0
    _never_twice(call)


def test_an_order_ended_without_a_late_fill_lets_the_leg_settle_after_its_poll(rig):
    trade, order = _at_expiry_with_close_order(rig, OrderStatus.LIVE)
    rig.poll()
    rig.ledger.end(order, OrderStatus.EXPIRED)
    rig.clock.advance(11)
    rig.poll()
    rig.clock.advance(1)
    rig.poll()
    call = trade.legs[0]
    assert call.settlement is not None and call.settled_qty == pytest.approx(0.1)
    assert call.settlement.cash == pytest.approx(-0.1 * 5000.0)


def test_a_vanished_close_found_filled_after_settlement_cuts_the_settlement_and_rebooks_the_pnl(rig):
    trade, order = _at_expiry_with_close_order(rig, OrderStatus.VANISHED)
    rig.clock.advance(1)
    rig.poll()
    call = trade.legs[0]
    assert call.settled_qty == pytest.approx(0.1)     # a 24 h verdict does not hold the delivery back
    for _ in range(3):
        rig.clock.advance(30)
        rig.poll()
    rig.ledger.book(order, 0.1, 30.0)                 # O10: found, filled before expiry
    rig.manager.refresh_fills(trade.id)
    _never_twice(call)
    assert call.settled_qty == 0.0 and call.settlement.cash == 0.0
    assert trade.state is TradeState.CLOSED
    assert trade.realized_pnl == pytest.approx(trade.realized())      # booked again: the close at 30
    saved = rig.store.saved[-1]
    assert saved["legs"][0]["settlement"]["qty"] == 0.0               # and persisted


def test_a_settlement_is_cut_pro_rata_and_never_grown():
    paid = Settlement(delivery_price=95_000.0, qty=0.3, intrinsic=5_000.0, cash=-1_500.0, fee=3.0)
    cut = paid.shrunk_to(0.1)
    assert (cut.qty, cut.cash, cut.fee, cut.delivery_price) == (0.1, pytest.approx(-500.0), pytest.approx(1.0),
                                                                  95_000.0)
    assert paid.shrunk_to(0.5) is paid and paid.shrunk_to(-1.0).qty == 0.0


# ------------------------------------------------------- an estimated settlement is revised


def _settled_at_the_estimate(world):
    """Short strangle 90000C / 80000P expired; no delivery price for 24 h: booked at the estimate 81,000."""
    from tests.unit.test_trade_lifecycle import MONDAY_EXPIRY_MS as expiry_ms
    trade = open_trade(world, expiry_ms=expiry_ms)
    world.clock.set_time(expiry_ms / 1000.0)
    world.poll()
    world.clock.advance(24 * 3600)
    world.poll()
    assert trade.state is TradeState.CLOSED and "settlement_estimated" in trade.flags
    return trade, expiry_ms


def test_an_estimated_settlement_is_rebooked_at_the_delivery_price_when_it_is_listed(world):
    trade, expiry_ms = _settled_at_the_estimate(world)
    before = trade.realized_pnl
    world.client.delivery.append({"date": expiry_ms, "delivery_price": "95000"})   # the call was 5,000 in the money
    for _ in range(7):
        world.clock.advance(10)
        world.poll()
    call = trade.legs[0]
    assert call.settlement.delivery_price == 95_000.0 and not call.settlement.price_estimated
    assert call.settlement.cash == pytest.approx(-0.1 * 5_000.0)
    assert trade.realized_pnl == pytest.approx(trade.realized()) and trade.realized_pnl < before - 400.0
    assert "settlement_estimated" not in trade.flags and "settlement_revised" in trade.flags
    assert world.store.saved[-1]["legs"][0]["settlement"]["delivery_price"] == 95_000.0
    calls = world.client.delivery_calls
    for _ in range(10):
        world.clock.advance(60)
        world.poll()
    assert world.client.delivery_calls == calls          # revised once: never asked again


def test_the_delivery_price_is_asked_once_a_minute_and_the_estimate_stands_after_a_week(world, caplog):
    trade, _expiry_ms = _settled_at_the_estimate(world)
    calls = world.client.delivery_calls
    for _ in range(12):                                   # two minutes of 10 s polls
        world.clock.advance(10)
        world.poll()
    assert world.client.delivery_calls - calls <= 3
    world.clock.advance(7 * 24 * 3600)
    world.poll()
    assert any("stays at the estimated expiration price" in r.getMessage() for r in caplog.records)
    calls = world.client.delivery_calls
    world.clock.advance(60)
    world.poll()
    assert world.client.delivery_calls == calls and "settlement_estimated" in trade.flags
