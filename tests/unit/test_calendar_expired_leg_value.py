"""A calendar trade between its near leg's expiry and that leg's settlement (BEHAVIOUR 4.5).

Before, the near leg had no quote once expired and the trade no valuation until the delivery
price was listed (minutes, at worst a day): the far leg still traded, but every PnL exit of
the trade, its stop loss too, was unevaluable all that time. Now the expired leg is valued at
its intrinsic value at the settlement price: the delivery price when listed, else the
exchange's estimated expiration price (fixed once the expiry has passed), read again every
``EXPIRY_MARK_RETRY_SECONDS``; an old or missing one leaves the trade unevaluable, never
valued on it. Fakes of tests/unit/test_trade_lifecycle.py; simulated clock.
"""
from __future__ import annotations

import pytest

import conditions
from errors import StaleDataError
from execution_job import JobStatus
from order_ledger import Intent
from tests.unit.test_trade_lifecycle import MONDAY_EXPIRY_MS, PUT, World, resolved, world  # noqa: F401
from trade_lifecycle import TradeState

NEAR = "BTCUSD-2MAR26-82000-P"          # expires Monday 08:00; the estimate (81,000) puts it 1,000 in the money


def open_calendar(world: World, exits=()):
    world.market.set(NEAR, bid=90.0, ask=110.0, mark=100.0)
    trade = world.manager.create("cal", [resolved(NEAR, 0, 2, expiry_ms=MONDAY_EXPIRY_MS), resolved(PUT, 1, 2)],
                                 exit_conditions=exits)
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 100.0, 0.0, at=world.clock.now())
    world.ledger.fill(trade.id, 1, Intent.OPEN, 0.1, 200.0, 0.0, at=world.clock.now())
    world.executor.last.end(JobStatus.FILLED)
    world.clock.advance(2)
    world.poll()
    assert trade.state is TradeState.OPEN
    return trade


def past_the_near_expiry(world: World, seconds: float = 30.0) -> None:
    world.clock.set_time(MONDAY_EXPIRY_MS / 1000.0 + seconds)
    world.poll()


def test_the_expired_leg_is_valued_at_intrinsic_on_the_estimate_until_it_settles(world):
    trade = open_calendar(world)
    past_the_near_expiry(world)
    assert trade.state is TradeState.OPEN and trade.legs[0].settlement is None      # no delivery price listed
    valuation = trade.valuation("fair", now=world.clock.now())
    near = next(leg for leg in valuation.legs if leg.leg_index == 0)
    assert near.price == pytest.approx(1_000.0) and near.degraded                    # 82,000 - 81,000, an estimate
    assert valuation.value == pytest.approx(0.1 * 100 - 0.1 * 1_000 + 0.1 * 200 - 0.1 * 210, abs=1.0)

    world.client.delivery.append({"date": MONDAY_EXPIRY_MS, "delivery_price": "81500"})
    world.clock.advance(10)
    world.poll()
    assert trade.legs[0].settlement is not None and trade.legs[0].settlement.delivery_price == 81_500.0
    assert trade.state is TradeState.OPEN and trade.legs[0].expiry_mark is None      # settled: booked, not valued


def test_the_stop_loss_of_a_calendar_fires_between_the_near_expiry_and_its_settlement(world):
    trade = open_calendar(world, exits=[conditions.max_loss(50)])
    past_the_near_expiry(world)
    world.clock.advance(10)
    world.poll()
    world.clock.advance(10)
    world.poll()
    assert trade.state in (TradeState.PENDING_CLOSE, TradeState.CLOSING)
    assert trade.exit_reason is not None and trade.exit_reason.startswith("max_loss")
    assert [target.leg_index for target in world.executor.last.legs] == [1]          # only the living leg trades


def test_without_a_settlement_price_the_trade_is_unevaluable_not_valued_on_the_old_quote(world):
    trade = open_calendar(world, exits=[conditions.max_loss(50)])
    world.client.estimated_expiration_price = lambda end_time_ms, index="BTCUSD": []   # type: ignore[method-assign]
    past_the_near_expiry(world)
    with pytest.raises(StaleDataError):
        trade.valuation("fair", now=world.clock.now())
    for _ in range(3):
        world.clock.advance(10)
        world.poll()
    assert trade.state is TradeState.OPEN


def test_an_estimate_read_long_ago_is_not_used(world):
    trade = open_calendar(world)
    past_the_near_expiry(world)
    trade.valuation("fair", now=world.clock.now())                                    # read, fresh
    with pytest.raises(StaleDataError, match="settlement price read"):
        trade.valuation("fair", now=world.clock.now() + 60.0)


def test_rules_reading_quotes_do_not_read_the_expired_legs_last_quote(world):
    """Its last quote is from before the expiry: a plain callable (which may read it) is not called."""
    seen = []

    def reads_quotes(snapshot, trade):
        seen.append(trade.id)
        return False

    trade = open_calendar(world, exits=[reads_quotes])
    assert seen                                                                   # called before the expiry
    seen.clear()
    past_the_near_expiry(world)
    world.clock.advance(10)
    world.poll()
    assert trade.state is TradeState.OPEN and seen == []
