"""``run --cancel-open-orders-on-exit`` (BEHAVIOUR 7.5): at SIGTERM our working entry orders are
cancelled one by one, each logged; nothing else is sent, and the next start decides the trade
on its fills. Without the flag they stay working (incident 3's test)."""
from __future__ import annotations

import signal

from option_selection import strangle
from order_ledger import parse_client_order_id
from simulator.exchange import ExchangeConfig
from strategy import StrategyConfig, max_hold_hours
from tests.faults.test_incident_rig import DaemonFiles, ScriptedClock, creates, daemon_env, run_daemon, utc
from trade_execution import ExecutionParams, ExecutionPhase

RESTING = ExecutionParams(max_requote_rounds=0, phases=(ExecutionPhase("top_of_book", 3600.0, 3600.0),))


def resting_strangle() -> StrategyConfig:
    """Bids at the touch for an hour: with no passive fills on this simulator, nothing fills."""
    return StrategyConfig(name="resting", legs=strangle(0.01, dte="next", side=1),
                          exit_conditions=[max_hold_hours(24)], execution_mode="limit", max_trades_per_day=1,
                          check_interval_seconds=1.0, execution_params=RESTING)


def test_sigterm_with_the_flag_cancels_our_working_open_orders_and_nothing_else(tmp_path, sim_factory):
    start = utc(2026, 3, 3, 9, 0)
    clock = ScriptedClock(start)
    sim = sim_factory(clock=clock, exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0))
    env = daemon_env(tmp_path, sim)
    files = DaemonFiles(tmp_path)
    clock.at(start + 60, lambda: signal.raise_signal(signal.SIGTERM))

    code = run_daemon(["--cancel-open-orders-on-exit"], clock=clock, env=env, strategies=[resting_strangle])

    assert code == 0
    [trade] = files.trades()
    assert trade["state"] == "OPENING"                                  # persisted as it was at the signal
    ours = [o for o in sim.exchange.orders() if str(o["clientOrderId"]).startswith("101")]
    assert len(ours) == 2 and all(o["state"] == 3 for o in ours)        # both entry orders cancelled
    assert len(creates(sim)) == 2                                       # and nothing was created to do it
    log = files.log_text()
    assert log.count("shutdown: cancelling open order") == 2 and log.count("is CANCELED, filled 0") == 2
    assert "shutdown: no working order and no trade with exposure" in log

    clock.set_time(start + 300)
    assert run_daemon(["--run-for", "120"], clock=clock, env=env, strategies=[resting_strangle]) == 0
    after = {t["id"]: t for t in files.trades()}
    assert after[trade["id"]]["state"] == "FAILED"                      # decided on its (zero) fills
    resent = [r for r in creates(sim) if parse_client_order_id(int(r.params["clientOrderId"])).trade_seq == trade["seq"]]
    assert len(resent) == 2                                             # nothing re-sent for that trade
