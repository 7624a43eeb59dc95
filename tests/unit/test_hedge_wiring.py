"""Delta hedging wired into the strategy config and the lifecycle (docs/HEDGING.md), on fakes.

The policy itself is tested in test_hedging.py; here: a hedge is validated and bound at
start-up, routes to the limit engine, and the lifecycle asks the policy after the exits of a
poll, starts one limit job on a hedge leg (OPEN to add, CLOSE reduce-only to reduce), books
the hedge from the ledger's fills, logs a waiting reason once, refuses on a stale perp quote,
and closes the hedge legs with the structure (the kill switch included).
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

import conditions as cond
from coincall_payloads import OptionRow
from contracts import PERPETUAL, Side
from errors import ConfigError, StaleDataError
from execution_job import JobStatus
from hedging import HedgeConfig, delta_hedge
from option_selection import strangle
from order_ledger import Intent
from strategies import hedged_strangle_btc, hedged_strangle_eth
from strategy import StrategyConfig, route_trade
import trade_lifecycle
from tests.unit.test_trade_lifecycle import CALL, PUT, FakeOrder, World, create_strangle, world  # noqa: F401 - the fixture
from trade_lifecycle import (
    HEDGE_CONFIG_KEY,
    HEDGE_LEGS_KEY,
    HEDGE_STATE_KEY,
    EXIT_REASON_KILL,
    TradeLifecycle,
    TradeState,
)

# ------------------------------------------------------------------------------ configuration


def _config(**overrides):
    base = dict(name="hedged", legs=strangle(0.1), exit_conditions=[cond.max_hold_hours(24)],
                execution_mode="limit", hedge=delta_hedge(band=0.02))
    return StrategyConfig(**{**base, **overrides})


def test_no_hedge_by_default():
    assert StrategyConfig(name="plain", legs=strangle(0.1), exit_conditions=[cond.max_hold_hours(1)]).hedge is None


def test_the_hedge_is_bound_to_the_structure_underlying():
    assert _config().hedge.underlying == "BTC" and _config().hedge.perp_symbol == "BTCUSD"
    eth = _config(legs=strangle(1.0, underlying="ETH"), hedge=delta_hedge(band=0.3))
    assert eth.hedge.perp_symbol == "ETHUSD"


def test_a_hedge_on_another_underlying_is_refused():
    with pytest.raises(ConfigError, match="hedge it with its own perpetual"):
        _config(hedge=delta_hedge(band=0.02, underlying="ETH"))


@pytest.mark.parametrize("mode", ["smart", "rfq"])
def test_smart_and_rfq_are_refused_with_the_fix(mode):
    with pytest.raises(ConfigError, match="execution_mode='limit'"):
        _config(execution_mode=mode)


def test_a_hedge_that_is_not_a_hedge_config_is_refused():
    with pytest.raises(ConfigError, match="delta_hedge"):
        _config(hedge={"band": 0.02})


def test_auto_routes_a_hedged_strategy_to_limit():
    executor = SimpleNamespace(route=lambda mode, legs, index: "smart")
    config = _config(execution_mode="auto")
    assert route_trade(config, [SimpleNamespace(index_price=85_000.0)], executor) == "limit"


def test_the_config_survives_the_trade_record():
    config = _config().hedge
    assert HedgeConfig.from_record(config.to_record()) == config
    with pytest.raises(ConfigError):
        HedgeConfig.from_record({**config.to_record(), "band": -1})


def test_the_shipped_hedged_strangles():
    btc, eth = hedged_strangle_btc(), hedged_strangle_eth()
    assert (btc.hedge.perp_symbol, btc.hedge.band, btc.legs[0].qty) == ("BTCUSD", 0.02, 0.1)
    assert (eth.hedge.perp_symbol, eth.hedge.band, eth.legs[0].qty) == ("ETHUSD", 0.3, 1.0)
    assert btc.execution_mode == eth.execution_mode == "limit" and btc.exit_conditions and eth.exit_conditions


# ------------------------------------------------------------------------------ the lifecycle

PERP_MARK = 85_000.0


def _perp_row(clock, *, age: float = 0.0, bid: float = 84_995.0, ask: float = 85_005.0) -> OptionRow:
    return OptionRow(symbol="BTCUSD", option_type=PERPETUAL, strike=0.0, expiry_ms=0, bid=bid, ask=ask,
                     bid_size=5.0, ask_size=5.0, mark=PERP_MARK, mark_iv=0.0, bid_iv=0.0, ask_iv=0.0, delta=1.0,
                     gamma=0.0, vega=0.0, theta=0.0, rho=0.0, underlying_price=PERP_MARK,
                     as_of=clock.now() - age)


@pytest.fixture
def hedged(world: World):
    """``world`` whose market also quotes the perp; returns (world, open hedged strangle)."""
    market = world.market
    plain_quote = market.quote
    market.perp_age = 0.0
    market.perp_down = False
    market.perp_fetch_seconds = 0.0   # how long the perp read takes: a real clock moves during a tick

    def quote(symbol: str, *, max_age: float = 15.0):
        if symbol == "BTCUSD" and market.perp_down:
            raise StaleDataError("perp ticker unavailable")
        if symbol == "BTCUSD":
            market.calls.append(symbol)
            if market.perp_fetch_seconds:
                world.clock.advance(market.perp_fetch_seconds)
            return _perp_row(world.clock, age=market.perp_age)
        return plain_quote(symbol, max_age=max_age)

    market.quote = quote
    market.instrument = lambda symbol: SimpleNamespace(symbol=symbol, tick_size=0.1, min_qty=0.001)
    # Short call delta 0.3 and short put delta -0.05 at 0.1: structure delta -0.025.
    market.set(CALL, bid=100.0, ask=110.0, mark=105.0, delta=0.3)
    market.set(PUT, bid=200.0, ask=220.0, mark=210.0, delta=-0.05)
    config = delta_hedge(band=0.02, min_interval_seconds=300, max_hedge_qty=0.2).bind("BTC")
    trade = create_strangle(world, metadata={HEDGE_CONFIG_KEY: config.to_record()})
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 100.0, 0.5, at=world.clock.now())
    world.ledger.fill(trade.id, 1, Intent.OPEN, 0.1, 200.0, 0.6, at=world.clock.now())
    world.executor.last.end(JobStatus.FILLED)
    world.clock.advance(2)
    market.perp_down = True   # no hedge in the tick that opens it: each test starts from an unhedged trade
    world.poll()
    market.perp_down = False
    assert trade.state is TradeState.OPEN and not _hedge_jobs(world)
    return world, trade


def _hedge_jobs(world: World):
    return [job for job in world.executor.jobs if any(leg.symbol == "BTCUSD" for leg in job.legs)]


def _first_rebalance(world: World, trade: TradeLifecycle):
    world.clock.advance(10)
    world.poll()
    (job,) = _hedge_jobs(world)
    return job


def _long_hedge_filled(world: World, trade: TradeLifecycle, qty: float = 0.025) -> int:
    """The first rebalance buys ``qty`` on the long hedge leg, fills and is booked; returns that leg."""
    job = _first_rebalance(world, trade)
    long_index = job.legs[0].leg_index
    world.ledger.fill(trade.id, long_index, Intent.OPEN, qty, 85_004.0, 1.0, at=world.clock.now())
    job.end(JobStatus.FILLED)
    world.clock.advance(2)
    world.poll()
    return long_index


def test_outside_the_band_one_limit_job_buys_the_perp_on_the_long_hedge_leg(hedged):
    world, trade = hedged
    job = _first_rebalance(world, trade)
    assert job.mode == "limit" and job.intent is Intent.OPEN and job.best_effort
    (target,) = job.legs
    long_index = trade.metadata[HEDGE_LEGS_KEY]["long"]
    assert (target.leg_index, target.side, target.qty, target.lot) == (long_index, Side.BUY, 0.025, 0.001)
    assert job.params.max_price_pct_of_fair == pytest.approx(1.002)
    world.clock.advance(10)
    world.poll()
    assert len(_hedge_jobs(world)) == 1          # one hedge job at a time: none while it works


def test_the_hedge_is_booked_from_fills_and_recorded(hedged):
    world, trade = hedged
    job = _first_rebalance(world, trade)
    long_index = job.legs[0].leg_index
    world.ledger.fill(trade.id, long_index, Intent.OPEN, 0.02, 85_004.0, 1.02, at=world.clock.now())  # partial
    job.end(JobStatus.PARTIAL)
    world.clock.advance(2)
    world.poll()
    assert trade.hedge_qty() == pytest.approx(0.02)    # what filled, not the 0.025 asked
    state = trade.metadata[HEDGE_STATE_KEY]
    assert state["hedge_qty"] == pytest.approx(0.02) and state["rebalances"] == 1
    assert state["fees_usd"] == pytest.approx(1.02) and state["slippage_usd"] == pytest.approx(0.08)
    assert ("event", "trade", "hedge_rebalance") in world.journal
    saved = world.store.saved[-1]
    assert saved["metadata"][HEDGE_STATE_KEY]["hedge_qty"] == pytest.approx(0.02)
    restored = TradeLifecycle.from_record(saved)
    assert restored.hedge_leg_indexes() == trade.hedge_leg_indexes()


def test_a_wait_is_logged_once_and_no_order_goes_before_the_interval(hedged, caplog):
    world, trade = hedged
    job = _first_rebalance(world, trade)
    world.ledger.fill(trade.id, job.legs[0].leg_index, Intent.OPEN, 0.004, 85_004.0, 0.2, at=world.clock.now())
    job.end(JobStatus.PARTIAL)   # total delta -0.021: still outside the band
    caplog.set_level(logging.INFO, logger="trade_lifecycle")
    for _ in range(5):
        world.clock.advance(10)
        world.poll()
    assert len(_hedge_jobs(world)) == 1
    waits = [r for r in caplog.records if "hedge: wait" in r.getMessage()]
    assert len(waits) == 1
    world.clock.advance(300)
    world.poll()
    assert len(_hedge_jobs(world)) == 2 and world.executor.last.legs[0].qty == pytest.approx(0.021)


def test_a_stale_perp_quote_sends_nothing_and_says_so_once(hedged, caplog):
    world, trade = hedged
    world.market.perp_age = 60.0
    caplog.set_level(logging.INFO, logger="trade_lifecycle")
    for _ in range(3):
        world.clock.advance(10)
        world.poll()
    assert not _hedge_jobs(world)
    refused = [r for r in caplog.records if "hedge: refused" in r.getMessage()]
    assert len(refused) == 1 and "stale" in refused[0].getMessage()


def test_a_quote_read_after_the_poll_began_is_fresh_not_from_the_future(hedged, caplog):
    """On a moving clock the perp quote is stamped after the poll's ``now``: its age is read on the
    clock at decision time (a negative age once refused every hedge of a live daemon)."""
    world, trade = hedged
    world.market.perp_fetch_seconds = 0.7
    caplog.set_level(logging.INFO, logger="trade_lifecycle")
    job = _first_rebalance(world, trade)
    assert job.legs[0].qty == pytest.approx(0.025)
    assert not [r for r in caplog.records if "hedge: refused" in r.getMessage()]


def test_reducing_the_hedge_is_a_reduce_only_close_on_the_leg_that_holds_it(hedged):
    world, trade = hedged
    long_index = _long_hedge_filled(world, trade)
    world.market.set(CALL, bid=100.0, ask=110.0, mark=105.0, delta=0.05)   # the structure is now +0.000
    world.clock.advance(400)
    world.poll()
    reducing = _hedge_jobs(world)[-1]
    assert reducing.intent is Intent.CLOSE and reducing.intent.reduce_only
    assert (reducing.legs[0].leg_index, reducing.legs[0].side) == (long_index, Side.SELL)
    assert reducing.legs[0].qty == pytest.approx(0.025)


def test_the_kill_switch_closes_the_hedge_with_the_options(hedged):
    world, trade = hedged
    long_index = _long_hedge_filled(world, trade)
    assert world.manager.force_close(trade.id, EXIT_REASON_KILL)
    kill = world.executor.last
    assert kill.intent is Intent.KILL
    targets = {leg.leg_index: (leg.side, leg.qty) for leg in kill.legs}
    assert targets[long_index] == (Side.SELL, pytest.approx(0.025))
    assert set(targets) == {0, 1, long_index}
    assert trade.state is TradeState.CLOSING


def test_a_kill_stops_a_working_hedge_job_first(hedged):
    world, trade = hedged
    job = _first_rebalance(world, trade)
    assert world.manager.force_close(trade.id, EXIT_REASON_KILL)
    assert job.stop_reason == EXIT_REASON_KILL and trade.state is TradeState.PENDING_CLOSE


def test_an_unhedged_trade_never_asks_for_a_perp(world):
    trade = create_strangle(world)
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 100.0, 0.5, at=world.clock.now())
    world.ledger.fill(trade.id, 1, Intent.OPEN, 0.1, 200.0, 0.6, at=world.clock.now())
    world.executor.last.end(JobStatus.FILLED)
    for _ in range(3):
        world.clock.advance(10)
        world.poll()
    assert "BTCUSD" not in world.market.calls and HEDGE_LEGS_KEY not in trade.metadata


def test_the_hedge_stops_rebalancing_before_the_ledger_cap_and_says_so(hedged, caplog):
    world, trade = hedged
    job = _first_rebalance(world, trade)
    long_index = job.legs[0].leg_index
    job.end(JobStatus.FAILED)   # nothing filled
    for _ in range(trade_lifecycle.HEDGE_ORDER_BUDGET - 3):   # the orders earlier rebalances used
        world.ledger.order_list.append(FakeOrder(trade.id, long_index, Intent.OPEN, 0.0, world.clock.now()))
    caplog.set_level(logging.INFO, logger="trade_lifecycle")
    world.clock.advance(400)
    world.poll()
    world.clock.advance(400)
    world.poll()
    assert len(_hedge_jobs(world)) == 1
    assert [r for r in caplog.records if "budget" in r.getMessage()]


def _hedge_long(world: World, trade: TradeLifecycle, qty: float = 0.025) -> int:
    long_index = _long_hedge_filled(world, trade, qty)
    assert trade.hedge_qty() == pytest.approx(qty)
    # The structure turns to +0.025 (short call 0.05, short put -0.3): total +0.05, sell 0.05,
    # which passes through zero: reduce the long 0.025 first, then open a short 0.025.
    world.market.set(CALL, bid=100.0, ask=110.0, mark=105.0, delta=0.05)
    world.market.set(PUT, bid=200.0, ask=220.0, mark=210.0, delta=-0.3)
    world.clock.advance(400)
    world.poll()
    return long_index


def test_a_rebalance_through_zero_reduces_first_then_opens_the_other_side(hedged):
    world, trade = hedged
    long_index = _hedge_long(world, trade)
    reducing = _hedge_jobs(world)[-1]
    assert (reducing.intent, reducing.legs[0].leg_index, reducing.legs[0].qty) == (Intent.CLOSE, long_index,
                                                                                   pytest.approx(0.025))
    world.ledger.fill(trade.id, long_index, Intent.CLOSE, 0.025, 84_996.0, 1.0, at=world.clock.now())
    reducing.end(JobStatus.FILLED)
    world.clock.advance(2)
    world.poll()
    opening = _hedge_jobs(world)[-1]
    short_index = trade.metadata[HEDGE_LEGS_KEY]["short"]
    assert opening is not reducing
    assert (opening.intent, opening.legs[0].leg_index, opening.legs[0].side) == (Intent.OPEN, short_index, Side.SELL)
    world.ledger.fill(trade.id, short_index, Intent.OPEN, 0.025, 84_996.0, 1.0, at=world.clock.now())
    opening.end(JobStatus.FILLED)
    world.clock.advance(2)
    world.poll()
    assert trade.hedge_qty() == pytest.approx(-0.025)
    assert trade.metadata[HEDGE_STATE_KEY]["rebalances"] == 2     # the split is one rebalance


def test_a_partly_filled_reducing_part_drops_the_opening_part(hedged):
    world, trade = hedged
    long_index = _hedge_long(world, trade)
    reducing = _hedge_jobs(world)[-1]
    world.ledger.fill(trade.id, long_index, Intent.CLOSE, 0.01, 84_996.0, 0.4, at=world.clock.now())
    reducing.end(JobStatus.PARTIAL)
    world.clock.advance(2)
    world.poll()
    assert _hedge_jobs(world)[-1] is reducing and trade.hedge_qty() == pytest.approx(0.015)


def _reducing_part_filled(world: World, trade: TradeLifecycle, *, put_delta: float, call_delta: float = 0.05,
                          perp_age: float = 0.0):
    """The split's reducing part fills after the market moved (the structure delta is now what the
    new deltas give); returns the hedge jobs after the poll that books it."""
    long_index = _hedge_long(world, trade)
    reducing = _hedge_jobs(world)[-1]
    world.market.set(CALL, bid=100.0, ask=110.0, mark=105.0, delta=call_delta)
    world.market.set(PUT, bid=200.0, ask=220.0, mark=210.0, delta=put_delta)
    world.market.perp_age = perp_age
    world.clock.advance(80)      # the reducing part requoted for over a minute
    world.ledger.fill(trade.id, long_index, Intent.CLOSE, 0.025, 84_996.0, 1.0, at=world.clock.now())
    reducing.end(JobStatus.FILLED)
    world.clock.advance(2)
    world.poll()
    assert trade.hedge_qty() == pytest.approx(0.0)
    return reducing, _hedge_jobs(world)


def test_the_second_part_is_decided_afresh_and_dropped_when_the_delta_came_back(hedged):
    """Structure +0.015 once the reducing part filled: inside the band, so no short is opened
    (the plan of 80 s earlier sold 0.025 anyway: a perp trade, with its fees, that nothing needed)."""
    world, trade = hedged
    reducing, jobs = _reducing_part_filled(world, trade, put_delta=-0.2)
    assert jobs[-1] is reducing


def test_the_second_part_follows_a_smaller_delta(hedged):
    world, trade = hedged
    _reducing, jobs = _reducing_part_filled(world, trade, put_delta=-0.26)   # structure +0.021
    opening = jobs[-1]
    assert (opening.intent, opening.legs[0].side) == (Intent.OPEN, Side.SELL)
    assert opening.legs[0].qty == pytest.approx(0.021)


def test_the_second_part_never_exceeds_the_planned_quantity(hedged):
    world, trade = hedged
    _reducing, jobs = _reducing_part_filled(world, trade, put_delta=-0.5)    # structure +0.045
    assert jobs[-1].legs[0].qty == pytest.approx(0.025)
    world.ledger.fill(trade.id, trade.metadata[HEDGE_LEGS_KEY]["short"], Intent.OPEN, 0.025, 84_996.0, 1.0,
                      at=world.clock.now())
    jobs[-1].end(JobStatus.FILLED)
    world.clock.advance(2)
    world.poll()
    assert trade.metadata[HEDGE_STATE_KEY]["rebalances"] == 2     # still one rebalance for the split


def test_the_second_part_is_dropped_when_the_delta_turned_the_other_way(hedged, caplog):
    world, trade = hedged
    caplog.set_level(logging.INFO, logger="trade_lifecycle")
    reducing, jobs = _reducing_part_filled(world, trade, put_delta=-0.05, call_delta=0.3)   # structure -0.025
    assert jobs[-1] is reducing
    assert [r for r in caplog.records if "second part dropped" in r.getMessage()]


def test_the_second_part_needs_a_fresh_perp_quote(hedged):
    world, trade = hedged
    reducing, jobs = _reducing_part_filled(world, trade, put_delta=-0.3, perp_age=60.0)
    assert jobs[-1] is reducing


def test_an_exit_after_a_lost_hedge_job_records_the_hedge_the_fills_show(hedged):
    """A restart mid-rebalance loses the job (its fills reach the ledger, not the hedge record); an
    exit before the next hedge tick brings the record in line with the fills before the close round."""
    world, trade = hedged
    job = _first_rebalance(world, trade)
    long_index = job.legs[0].leg_index
    world.ledger.fill(trade.id, long_index, Intent.OPEN, 0.025, 85_004.0, 1.0, at=world.clock.now())
    job.end(JobStatus.FILLED)
    runtime = world.manager._runtime_of(trade)
    runtime.job, runtime.job_kind, runtime.hedge = None, None, None    # what a restart leaves: no job
    assert (trade.metadata.get(HEDGE_STATE_KEY) or {}).get("hedge_qty", 0.0) == 0.0   # nothing booked
    world.clock.advance(2)
    assert world.manager.force_close(trade.id)
    assert trade.metadata[HEDGE_STATE_KEY]["hedge_qty"] == pytest.approx(0.025)
    assert ("event", "trade", "hedge_exit_synced") in world.journal
    close = world.executor.last
    assert {leg.leg_index: leg.qty for leg in close.legs}[long_index] == pytest.approx(0.025)
    # the close's fills reduce the legs, never the recorded hedge of the exit
    world.ledger.fill(trade.id, long_index, Intent.CLOSE, 0.01, 84_990.0, 0.4, at=world.clock.now())
    close.end(JobStatus.PARTIAL)
    world.clock.advance(30)
    world.poll()
    assert trade.metadata[HEDGE_STATE_KEY]["hedge_qty"] == pytest.approx(0.025)


def test_an_exit_is_judged_while_a_rebalance_works_and_stops_it(hedged):
    """A stop must not wait for a hedge job: the exit is decided, the job asked to stop, and the
    close round (hedge legs included) follows once the job has ended and its fills are booked."""
    import conditions

    world, trade = hedged
    world.manager._runtime_of(trade).exit_conditions = (conditions.max_hold_hours(0.01),)
    job = _first_rebalance(world, trade)
    assert trade.state is TradeState.OPEN and job.stop_reason is None
    world.clock.advance(60)
    world.poll()
    assert trade.state is TradeState.PENDING_CLOSE and trade.exit_reason.startswith("max_hold_hours")
    assert job.stop_reason == trade.exit_reason
    long_index = job.legs[0].leg_index
    world.ledger.fill(trade.id, long_index, Intent.OPEN, 0.01, 85_004.0, 0.4, at=world.clock.now())
    job.end(JobStatus.PARTIAL)
    world.clock.advance(2)
    world.poll()
    close = world.executor.last
    assert close is not job and close.intent is Intent.CLOSE
    assert {leg.leg_index: leg.qty for leg in close.legs}[long_index] == pytest.approx(0.01)
    assert trade.metadata[HEDGE_STATE_KEY]["hedge_qty"] == pytest.approx(0.01)
