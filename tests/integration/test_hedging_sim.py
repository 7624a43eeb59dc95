"""Delta hedging end to end on the simulator (docs/HEDGING.md): real HTTP, the simulated clock.

A short strangle with ``delta_hedge`` opens on the ``trend-week`` scenario; the lifecycle
rebalances it with the BTC perpetual through the limit engine and the ledger. Checked: after
the first rebalance, at every poll where the minimum interval has passed and no hedge job
works, the total delta is inside the band plus one step; hedge orders and their
cost are counted and reported; closing flattens the hedge reduce-only in the same close and
never flips it; the kill switch leaves options and perps flat; a restart mid-hedge neither
duplicates nor loses the hedge; funding lands in the trade's PnL.
"""
from __future__ import annotations

import pytest

import conditions
from hedging import delta_hedge
from contracts import Side
from option_selection import LegSpec, resolve_legs, strangle
from simulator import FaultRule
from order_ledger import Intent
from persistence import StateStore
from simulator.scenarios import scenario_market
from trade_lifecycle import HEDGE_CONFIG_KEY, HEDGE_STATE_KEY, TradeState

from tests.integration.test_perp_legs_sim import PerpRig  # the perp-leg tests' rig: product services on one simulator

BAND = 0.02
STEP = 0.001
INTERVAL = 300.0


def _hedge():
    return delta_hedge(band=BAND, min_interval_seconds=INTERVAL, max_hedge_qty=0.2, underlying="BTC")


EXPIRY = {"min_days": 7, "max_days": 20, "target": "near"}


def _open_hedged(rig: PerpRig, *, hours: float = 400.0, qty: float = 0.1, specs=None):
    specs = specs if specs is not None else strangle(qty, call_delta=0.3, put_delta=-0.3, dte=EXPIRY, side=2)
    legs = resolve_legs(specs, rig.market)
    trade = rig.manager.create("hedged", legs, exit_conditions=[conditions.max_hold_hours(hours)],
                               metadata={HEDGE_CONFIG_KEY: _hedge().to_record()})
    assert rig.drive(180, until=lambda: trade.state is not TradeState.OPENING), trade.state
    assert trade.state is TradeState.OPEN, (trade.state, trade.failure_reason)
    return trade


def _totals(rig: PerpRig, trade) -> float:
    hedge = trade.hedge_leg_indexes()
    return trade.structure_delta(exclude=hedge) + trade.hedge_qty()


def _hedge_orders(rig: PerpRig, trade):
    hedge = set(trade.hedge_leg_indexes())
    return [o for o in rig.ledger.orders(trade.id) if o.leg_index in hedge and o.filled_qty > 0]


@pytest.fixture
def trend_sim(sim_factory, sim_clock):
    return sim_factory(market=scenario_market("trend-week", 7, int(sim_clock.now() * 1000)))


@pytest.mark.slow
def test_a_trending_week_keeps_the_hedged_strangle_inside_its_band(trend_sim):
    rig = PerpRig(trend_sim)
    try:
        trade = _open_hedged(rig)
        seen: list[tuple[float, float]] = []
        first_rebalance: float | None = None
        outside_after_interval: list[tuple[float, float]] = []
        days = 7.0
        end = rig.clock.now() + days * 86400
        while rig.clock.now() < end and trade.state is TradeState.OPEN:
            rig.drive(60, step=30.0, poll_interval=60.0)
            if rig.manager.has_job(trade.id):
                continue
            state = trade.metadata.get(HEDGE_STATE_KEY) or {}
            last = state.get("last_rebalance_at")
            if last is None:
                continue
            first_rebalance = first_rebalance or last
            try:
                total = _totals(rig, trade)
            except Exception:  # noqa: BLE001 - a stale quote: no reading this poll
                continue
            seen.append((rig.clock.now(), total))
            if rig.clock.now() - last >= INTERVAL + 60 and abs(total) > BAND + STEP + 1e-9:
                outside_after_interval.append((rig.clock.now(), total))
        assert trade.state is TradeState.OPEN
        orders = _hedge_orders(rig, trade)
        state = trade.metadata[HEDGE_STATE_KEY]
        cost = state["fees_usd"] + state["slippage_usd"]
        worst = max(abs(total) for _at, total in seen)
        print(f"\ntrend-week {days:g} days: {len(orders)} hedge orders, {state['rebalances']} rebalances, "
              f"cost {cost:.4f} USD (fees {state['fees_usd']:.4f}, slippage {state['slippage_usd']:.4f}), "
              f"max |delta| after the first rebalance {worst:.4f}, hedge {trade.hedge_qty():+g} BTC")
        assert first_rebalance is not None and orders and state["rebalances"] > 0 and state["fees_usd"] > 0
        assert not outside_after_interval, outside_after_interval[:5]
        assert trade.hedge_qty() == pytest.approx(rig.position("BTCUSD"), abs=1e-9)
        assert all(not o.reduce_only for o in orders if o.intent.family() is Intent.OPEN)
        hedge_legs = [leg for leg in trade.legs if leg.index in trade.hedge_leg_indexes()]
        funding = sum(leg.funding for leg in hedge_legs)
        print(f"funding booked on the hedge: {funding:+.6f} USD over {len(trade.metadata.get('funding', {}))} instants")
        assert trade.metadata.get("funding") and funding != 0.0   # funding lands on the hedge legs
        assert trade.cash_flows() == pytest.approx(sum(leg.cash for leg in trade.legs))

        rig.manager.force_close(trade.id)
        assert rig.drive(900, until=lambda: trade.state is TradeState.CLOSED), (trade.state, trade.legs)
        assert rig.position("BTCUSD") == 0.0
        closes = [o for o in rig.ledger.orders(trade.id) if o.leg_index in trade.hedge_leg_indexes()
                  and o.intent.family() is Intent.CLOSE]
        assert all(o.reduce_only for o in closes)
        assert trade.realized_pnl == pytest.approx(trade.cash_flows() - trade.total_fees())
        events = [e["payload"] for e in rig.store.events("trade") if e["payload"].get("event") == "hedge_rebalance"]
        assert events and all({"filled", "price", "reason", "delta_before", "delta_after"} <= set(e) for e in events)
    finally:
        rig.close()


def _short_call(qty: float = 0.1) -> list[LegSpec]:
    """A structure far enough from neutral (about -0.03 BTC) that the first poll hedges it."""
    return [LegSpec(option_type="C", side=Side.SELL, qty=qty, strike_criteria={"type": "delta", "value": 0.3},
                    expiry_criteria=dict(EXPIRY))]


@pytest.mark.slow
def test_a_crash_day_is_hedged_by_selling_the_perp(sim_factory, sim_clock):
    sim = sim_factory(market=scenario_market("crash-day", 7, int(sim_clock.now() * 1000)))
    rig = PerpRig(sim)
    try:
        trade = _open_hedged(rig)
        late: list[tuple[float, float]] = []
        end = rig.clock.now() + 12 * 3600
        while rig.clock.now() < end and trade.state is TradeState.OPEN:
            rig.drive(60, step=30.0, poll_interval=60.0)
            state = trade.metadata.get(HEDGE_STATE_KEY) or {}
            last = state.get("last_rebalance_at")
            if last is None or rig.manager.has_job(trade.id):
                continue
            total = _totals(rig, trade)
            if rig.clock.now() - last >= INTERVAL + 60 and abs(total) > BAND + STEP + 1e-9:
                late.append((rig.clock.now(), total))
        state = trade.metadata[HEDGE_STATE_KEY]
        print(f"\ncrash-day: {state['rebalances']} rebalances, hedge {trade.hedge_qty():+g} BTC, "
              f"cost {state['fees_usd'] + state['slippage_usd']:.4f} USD")
        assert trade.hedge_qty() < 0                      # the short put gained delta: the hedge sold
        assert not late, late[:5]
        assert rig.position("BTCUSD") == pytest.approx(trade.hedge_qty(), abs=1e-9)
    finally:
        rig.close()


def test_the_kill_switch_leaves_options_and_the_hedge_flat(sim):
    rig = PerpRig(sim)
    try:
        trade = _open_hedged(rig, specs=_short_call())
        assert rig.drive(600, until=lambda: not rig.manager.has_job(trade.id) and trade.hedge_qty() != 0)
        assert rig.position("BTCUSD") == pytest.approx(trade.hedge_qty()) and trade.hedge_qty() > 0
        assert rig.manager.kill_all()
        assert rig.drive(600, until=lambda: not rig.manager.active_trades()), trade.state
        assert rig.position("BTCUSD") == 0.0 and rig.position(trade.legs[0].symbol) == 0.0
        kills = [o for o in rig.ledger.orders(trade.id) if o.leg_index in trade.hedge_leg_indexes()
                 and o.intent.family() is Intent.KILL]
        assert kills and all(o.reduce_only for o in kills)
    finally:
        rig.close()


def test_a_restart_mid_hedge_neither_duplicates_nor_loses_the_hedge(sim):
    first = PerpRig(sim)
    trade = _open_hedged(first, specs=_short_call())
    # The hedge order is sent but its answer is lost, and nothing answers before the crash.
    sim.faults.add(FaultRule(endpoint="futures_create_order", mode="lost_response", count=1))
    sim.faults.add(FaultRule(endpoint="futures_query_order", mode="http_5xx", count=50))
    first.drive(120, step=2.0, until=lambda: any(o.leg_index in trade.hedge_leg_indexes()
                                                  for o in first.ledger.orders(trade.id)))
    hedge_orders = [o for o in first.ledger.orders(trade.id) if o.leg_index in trade.hedge_leg_indexes()]
    assert len(hedge_orders) == 1
    (order,) = hedge_orders
    first.client.close()   # the daemon dies here; its store survives
    sim.faults.clear()

    second = PerpRig(sim, store=first.store)
    second.manager.recover()
    second.manager.attach_strategy("hedged", exit_conditions=[conditions.max_hold_hours(400)])
    resumed = second.manager.get(trade.id)
    assert resumed is not None and resumed.hedge_leg_indexes() == trade.hedge_leg_indexes()
    assert second.drive(900, until=lambda: (not second.manager.has_job(trade.id) and not
                                            second.ledger.live_orders(trade.id) and resumed.hedge_qty() != 0))
    creates = [r for r in sim.requests_for("futures_create_order")
               if int(r.params["clientOrderId"]) == order.client_order_id]
    assert len(creates) == 1                                    # never sent twice
    second.drive(600)
    assert second.position("BTCUSD") == pytest.approx(resumed.hedge_qty(), abs=1e-9)   # none lost, none doubled
    state = resumed.metadata[HEDGE_STATE_KEY]
    assert state["hedge_qty"] == pytest.approx(resumed.hedge_qty(), abs=1e-9)
    assert abs(resumed.structure_delta(exclude=resumed.hedge_leg_indexes()) + resumed.hedge_qty()) <= BAND + STEP
    second.close()


def test_closing_a_hedge_larger_than_the_account_holds_never_flips_it(sim):
    rig = PerpRig(sim)
    try:
        trade = _open_hedged(rig, specs=_short_call())
        assert rig.drive(600, until=lambda: not rig.manager.has_job(trade.id) and trade.hedge_qty() > 0.01)
        # Somebody else sold part of the hedge: the account holds less than the trade believes.
        rig.sim.exchange.set_position(None, "BTCUSD", 0.005, 85_000.0)
        rig.manager.force_close(trade.id)
        rig.drive(600, until=lambda: rig.position("BTCUSD") == 0.0)
        assert rig.position("BTCUSD") == 0.0
        rig.drive(300)
        assert rig.position("BTCUSD") == 0.0             # closed what existed, never went short
        closes = [o for o in rig.ledger.orders(trade.id) if o.leg_index in trade.hedge_leg_indexes()
                  and o.intent.family() is Intent.CLOSE and o.order_id is not None]
        assert closes and all(o.reduce_only and o.qty <= 0.005 + 1e-9 for o in closes)
    finally:
        rig.close()
