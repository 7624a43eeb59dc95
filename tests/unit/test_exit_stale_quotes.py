"""Exit rules that read the legs' quotes directly obey the quotes' freshness (BEHAVIOUR.md 4.2 row 9).

A failed quote refresh leaves the last quote on the leg (the exit's evidence and the views read
it). The valuation behind the PnL exits refuses an old quote by itself; ``leg_greek_limit`` and
plain callables read the leg and its quote directly, so the exit evaluator must not let them
judge a held leg whose quote is missing or older than ``quote_max_age``: they are unevaluable
(neither fire nor clear), as with an insane quote, and the 60 s alert still comes.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import conditions
from contracts import Side
from exit_evaluation import UNEVALUABLE_ALERT_SECONDS, ExitEvaluator, ExitWatch
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState

from tests.unit.test_trade_lifecycle import (  # noqa: F401 - world is a fixture
    CALL, PUT, START, FakeAlerts, FakeMarket, contract, make_row, open_trade, world,
)

GREEK_LIMIT = conditions.leg_greek_limit("delta", 0.5)


def poll(world, seconds: float = 10.0) -> None:  # noqa: F811 - world is the fixture's value
    world.clock.advance(seconds)
    world.poll()


def blown_delta_quote(world, symbol: str, *, age: float) -> object:  # noqa: F811
    """A row of ``symbol`` whose delta (0.6) is beyond ``GREEK_LIMIT``, fetched ``age`` s ago."""
    return make_row(symbol, bid=100.0, ask=110.0, mark=105.0, delta=0.6, as_of=world.clock.now() - age)


# ----------------------------------------------------------------------------- leg_greek_limit


def test_a_stale_quote_never_fires_leg_greek_limit_and_a_fresh_one_does(world):  # noqa: F811
    trade = open_trade(world, exits=[GREEK_LIMIT])
    world.market.fail = True                  # every refresh fails: the legs keep their last quotes
    world.clock.advance(10)
    trade.legs[0].quote = blown_delta_quote(world, CALL, age=6.0)   # an old greek beyond the limit
    world.poll()
    assert trade.state is TradeState.OPEN and trade.exit_reason is None
    world.market.fail = False
    world.market.set(CALL, bid=100.0, ask=110.0, mark=105.0, delta=0.6)
    poll(world)
    assert trade.exit_reason == GREEK_LIMIT.name and trade.state is not TradeState.OPEN


def test_a_stale_quote_below_the_limit_is_unevaluable_not_a_pass(world):  # noqa: F811
    trade = open_trade(world, exits=[GREEK_LIMIT])
    runtime = world.manager._runtime_of(trade)
    world.market.fail = True
    poll(world)
    assert runtime.exits.unevaluable_since == world.clock.now()   # the old 0.3 is no "below 0.5"
    world.market.fail = False
    poll(world)
    assert runtime.exits.unevaluable_since is None and trade.state is TradeState.OPEN


def evaluator_trade(world) -> TradeLifecycle:  # noqa: F811
    """An OPEN short strangle, both legs held, for the evaluator alone (no refresh in between)."""
    legs = [TradeLeg(index, contract(symbol), Side.SELL, 0.1, open_filled=0.1, open_vwap=100.0)
            for index, symbol in enumerate((CALL, PUT))]
    trade = TradeLifecycle(id="T1", seq=1, strategy="strat", state=TradeState.OPEN, legs=legs, opened_at=START)
    trade.bind_clock(world.clock)
    return trade


def judge(world, trade: TradeLifecycle, cond) -> str | None:  # noqa: F811
    evaluator = ExitEvaluator(market=FakeMarket(world.clock), alerts=FakeAlerts(), quote_max_age=5.0)
    snapshot = SimpleNamespace(timestamp=world.clock.now(), net_delta=0.0, positions=())
    decision = evaluator.evaluate(trade, [cond], ExitWatch(), snapshot, world.clock.now())
    return decision.reason if decision is not None else None


def test_only_the_stale_leg_is_unknown_a_fresh_leg_beyond_the_limit_still_fires(world):  # noqa: F811
    trade = evaluator_trade(world)
    trade.legs[0].quote = make_row(CALL, bid=100.0, ask=110.0, mark=105.0, delta=0.3, as_of=world.clock.now())
    trade.legs[1].quote = blown_delta_quote(world, PUT, age=5.5)
    assert judge(world, trade, conditions.leg_greek_limit("delta", 0.5, leg=1)) is None
    trade.legs[1].quote = blown_delta_quote(world, PUT, age=5.0)     # exactly quote_max_age old: fresh
    assert judge(world, trade, conditions.leg_greek_limit("delta", 0.5, leg=1)) is not None
    trade.legs[0].quote = blown_delta_quote(world, CALL, age=0.0)
    trade.legs[1].quote = make_row(PUT, bid=200.0, ask=220.0, mark=210.0, delta=0.3,
                                   as_of=world.clock.now() - 30.0)
    assert judge(world, trade, GREEK_LIMIT) == GREEK_LIMIT.name          # the fresh leg 0 is evidence
    assert trade.legs[1].greek("delta") == 0.3    # outside an evaluation the last quote reads as before


# ----------------------------------------------------------------------------- plain callables


def test_plain_callables_are_not_called_while_a_held_leg_quote_is_stale_or_missing(world):  # noqa: F811
    seen = []
    trade = open_trade(world, exits=[lambda snapshot, t: seen.append(t.legs[0].quote.mark) or False])
    seen.clear()
    world.market.fail = True
    poll(world)
    trade.legs[0].quote = None
    poll(world)
    assert seen == [] and trade.state is TradeState.OPEN
    world.market.fail = False
    poll(world)
    assert seen == [105.0]
    assert trade.legs[1].quote is not None and trade.legs[1].quote.as_of == world.clock.now()


# ----------------------------------------------------------------------------- the 60 s alert


@pytest.mark.parametrize("exits", [[GREEK_LIMIT], [lambda snapshot, t: False]], ids=["greek_limit", "callable"])
def test_a_minute_of_stale_quotes_raises_the_unevaluable_alert_for_quote_reading_rules(world, exits):  # noqa: F811
    trade = open_trade(world, exits=exits)
    world.market.fail = True
    for _ in range(int(UNEVALUABLE_ALERT_SECONDS // 10)):    # unevaluable from the first failed poll on
        poll(world)
    assert "exit_unevaluable" not in world.alerts.kinds()
    poll(world)
    assert world.alerts.kinds("WARNING").count("exit_unevaluable") == 1 and trade.state is TradeState.OPEN
