"""Incidents of the process life (BEHAVIOUR.md section 8, rows 1-3): restarts, quotas, shutdown.

Each test runs the real daemon (``main.main`` in-process) against a simulator the test owns,
over loopback, on a speed-0 clock. "Killing" the daemon raises ``DaemonKilled`` from its own
wait: nothing of the shutdown path runs, as with SIGKILL; the exchange keeps its state.
"""
from __future__ import annotations

import signal
from datetime import time

import pytest

from option_selection import strangle
from strategy import StrategyConfig, max_hold_hours, utc_time_window
from trade_execution import ExecutionParams

from tests.faults.test_incident_rig import (
    DAY,
    OPEN_INTENTS,
    REDUCING_INTENTS,
    DaemonFiles,
    DaemonKilled,
    ScriptedClock,
    creates,
    daemon_env,
    intent_of,
    run_daemon,
    utc,
)

QUICK = ExecutionParams(fill_timeout_seconds=10.0, max_requote_rounds=5)


def windowed_strangle() -> StrategyConfig:
    """Row 1's strategy: one trade a day, only between 09:00 and 10:00 UTC.

    Two concurrent trades and no cooldown are allowed on purpose: after the restart only the
    restored daily count can keep a second trade from opening.
    """
    return StrategyConfig(
        name="window_strangle",
        legs=strangle(0.01, dte="next", side=1),
        entry_conditions=[utc_time_window(time(9, 0), time(10, 0))],
        exit_conditions=[max_hold_hours(24)],
        execution_mode="limit",
        max_concurrent_trades=2,
        max_trades_per_day=1,
        cooldown_seconds=0.0,
        check_interval_seconds=1.0,
        execution_params=QUICK,
    )


def test_incident_01_restart_inside_the_entry_window_opens_no_second_trade(tmp_path, sim_factory):
    """Window 09:00-10:00, trade opened 09:01, daemon killed, restarted 09:05: no new open order that day."""
    start = utc(2026, 3, 3, 9, 1)
    clock = ScriptedClock(start)
    sim = sim_factory(clock=clock)
    env = daemon_env(tmp_path, sim, POLL_INTERVAL_SECONDS="30")
    files = DaemonFiles(tmp_path)

    clock.kill_at(start + 120)
    with pytest.raises(DaemonKilled):
        run_daemon(["--strategy", "window_strangle"], clock=clock, env=env, strategies=[windowed_strangle])
    [trade] = files.trades()
    assert trade["state"] == "OPEN" and start <= trade["opened_at"] < start + 120
    opens_before = creates(sim)
    assert opens_before and all(intent_of(r) in OPEN_INTENTS for r in opens_before)

    clock.set_time(utc(2026, 3, 3, 9, 5))
    restarted_at = clock.now()
    code = run_daemon(["--strategy", "window_strangle", "--run-for", "3360"], clock=clock, env=env,
                      strategies=[windowed_strangle])

    assert code == 0
    after = creates(sim, since=restarted_at)
    assert [r for r in after if intent_of(r) in OPEN_INTENTS] == []   # no second open order that day
    assert [t["id"] for t in files.trades()] == [trade["id"]]
    log = files.log_text()
    assert "recovered 1 trades from the store" in log
    assert "daily quota reached (1)" in log                          # the gate saw the restored trade
    state = files.runner_state("window_strangle")
    assert state["opened_today"] == [trade["id"]] and state["day"] == "2026-03-03"


def daily_strangle() -> StrategyConfig:
    """Row 2's strategy: one trade a day, held for an hour."""
    return StrategyConfig(
        name="daily_once",
        legs=strangle(0.01, dte="next", side=1),
        exit_conditions=[max_hold_hours(1)],
        execution_mode="limit",
        max_concurrent_trades=1,
        max_trades_per_day=1,
        cooldown_seconds=0.0,
        check_interval_seconds=60.0,
        execution_params=QUICK,
    )


@pytest.mark.slow
def test_incident_02_daily_quota_blocks_until_midnight_for_72_hours(tmp_path, sim_factory):
    """max_trades_per_day=1 for 72 simulated hours: exactly 3 trades, one per UTC day; never exits."""
    start = utc(2026, 3, 3)
    clock = ScriptedClock(start)
    sim = sim_factory(clock=clock)
    env = daemon_env(tmp_path, sim, POLL_INTERVAL_SECONDS="300")
    files = DaemonFiles(tmp_path)

    code = run_daemon(["--strategy", "daily_once", "--run-for", "259200"], clock=clock, env=env,
                      strategies=[daily_strangle])

    assert code == 0
    assert clock.now() - start >= 3 * DAY                       # alive to the end: --run-for stopped it
    log = files.log_text()
    assert "stopping: --run-for 259200s of simulated time elapsed" in log
    trades = [t for t in files.trades() if t["opened_at"] is not None and t["opened_at"] < start + 3 * DAY]
    assert len(trades) == 3
    days = sorted(int((t["opened_at"] - start) // DAY) for t in trades)
    assert days == [0, 1, 2]
    assert all(t["state"] == "CLOSED" for t in trades)
    # Each new day the quota lifted by itself: the first entry of the day is right after midnight.
    assert all((t["opened_at"] - start) % DAY < 900 for t in trades)
    state = files.runner_state("daily_once")
    assert state["paused"] is False
    assert "daily quota reached (1); next entry after 00:00 UTC" in log


def long_hold_strangle() -> StrategyConfig:
    """Row 3's strategy: exits are a day away, so nothing but a decision could close the trade."""
    return StrategyConfig(
        name="held_strangle",
        legs=strangle(0.01, dte="next", side=1),
        exit_conditions=[max_hold_hours(24)],
        execution_mode="limit",
        max_concurrent_trades=1,
        check_interval_seconds=1.0,
        execution_params=QUICK,
    )


def test_incident_03_sigterm_with_an_open_trade_sends_nothing_and_persists_it_as_is(tmp_path, sim_factory):
    """SIGTERM with an OPEN trade: no create after the signal; stored OPEN; after restart still OPEN, no close."""
    start = utc(2026, 3, 3, 9, 0)
    clock = ScriptedClock(start)
    sim = sim_factory(clock=clock)
    env = daemon_env(tmp_path, sim)
    files = DaemonFiles(tmp_path)
    signalled: list[float] = []

    def terminate() -> None:
        signalled.append(clock.now())
        signal.raise_signal(signal.SIGTERM)

    clock.at(start + 120, terminate)
    previous_handler = signal.getsignal(signal.SIGTERM)
    code = run_daemon(["--strategy", "held_strangle"], clock=clock, env=env, strategies=[long_hold_strangle])

    assert code == 0 and signalled
    assert signal.getsignal(signal.SIGTERM) is previous_handler
    assert creates(sim, since=signalled[0]) == []                     # no create after the signal
    [trade] = files.trades()
    assert trade["state"] == "OPEN" and trade["exit_reason"] is None  # persisted as it was, no close decided
    held = {leg["symbol"]: sim.exchange.position_of(None, leg["symbol"]) for leg in trade["legs"]}
    assert all(qty == pytest.approx(0.01) for qty in held.values())
    assert "shutdown leaves 0 working order(s) and 1 trade(s) with exposure" in files.log_text()

    clock.set_time(start + 600)
    restarted_at = clock.now()
    assert run_daemon(["--strategy", "held_strangle", "--run-for", "900"], clock=clock, env=env,
                      strategies=[long_hold_strangle]) == 0
    assert [r for r in creates(sim, since=restarted_at) if intent_of(r) in REDUCING_INTENTS] == []
    assert creates(sim, since=restarted_at) == []                      # and no second trade either
    [again] = files.trades()
    assert again["id"] == trade["id"] and again["state"] == "OPEN" and again["exit_reason"] is None
    assert {leg["symbol"]: sim.exchange.position_of(None, leg["symbol"]) for leg in again["legs"]} == held
