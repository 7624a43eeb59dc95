"""Incidents of bad or missing data and configuration (BEHAVIOUR.md section 8, rows 13-15, 22, 41).

The real daemon runs in-process against a simulator the test owns; a ``ScriptedClock`` switches
faults on and off at chosen simulated instants, and the test then reads the exchange's request
log (what was really sent), the daemon's logs and its health lines.
"""
from __future__ import annotations

from datetime import datetime, timezone

from option_selection import straddle, strangle
from simulator import FaultRule
from strategy import StrategyConfig, max_hold_hours, utc_datetime_exit
from trade_execution import ExecutionParams

from tests.faults.test_incident_rig import (
    DAY,
    OPEN_INTENTS,
    REDUCING_INTENTS,
    DaemonFiles,
    ScriptedClock,
    creates,
    daemon_env,
    intent_of,
    run_daemon,
    utc,
)

QUICK = ExecutionParams(fill_timeout_seconds=10.0, max_requote_rounds=5)
START = utc(2026, 3, 3, 9, 0)


def health_time(line: dict) -> float:
    return datetime.fromisoformat(line["time"].replace("Z", "+00:00")).timestamp()


def eager(name: str, *, entry: list | None = None, exits: list | None = None, legs=None) -> StrategyConfig:
    """A strategy that enters whenever its gates allow: every poll, no cooldown, no daily limit."""
    return StrategyConfig(
        name=name,
        legs=legs if legs is not None else strangle(0.01, dte="next", side=1),
        entry_conditions=entry or [],
        exit_conditions=exits if exits is not None else [max_hold_hours(24)],
        execution_mode="limit",
        max_concurrent_trades=2,
        max_trades_per_day=0,
        cooldown_seconds=0.0,
        check_interval_seconds=1.0,
        execution_params=QUICK,
    )


def test_incident_13_a_failed_positions_call_never_reads_as_a_flat_account(tmp_path, sim_factory):
    """Positions answer 5xx: no entry evaluated, no PnL exit, health shows the error; all resume after."""
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock)
    files = DaemonFiles(tmp_path)
    fault_from, fault_until = START + 200, START + 500

    def entry_window(snapshot) -> bool:      # the first poll, and again from the fault's start
        return snapshot.timestamp < START + 5 or snapshot.timestamp >= fault_from

    def exit_from_fault(snapshot, trade) -> bool:     # would fire on any tick from the fault's start
        return snapshot.timestamp >= fault_from

    rule = FaultRule(endpoint="positions", mode="http_5xx", http_status=503)
    clock.at(fault_from, lambda: sim.faults.add(rule))
    clock.at(fault_until, lambda: sim.faults.remove(rule))
    code = run_daemon(["--strategy", "blind", "--run-for", "800"], clock=clock, env=daemon_env(tmp_path, sim),
                      strategies=[lambda: eager("blind", entry=[entry_window], exits=[exit_from_fault])])

    assert code == 0 and rule.fired >= 3
    first, *later = files.trades()
    assert first["opened_at"] < fault_from
    assert creates(sim, since=fault_from, until=fault_until) == []          # no entry, no exit order
    assert first["exit_decided_at"] >= fault_until                         # the exit waited for a snapshot
    assert first["state"] == "CLOSED"
    assert [r for r in creates(sim, since=fault_until) if intent_of(r) in REDUCING_INTENTS]
    assert later and all(t["created_at"] >= fault_until for t in later)    # entries came back too
    during = [line for line in files.health() if fault_from < health_time(line) < fault_until]
    shown = [line for line in during if line["snapshot_error"] and "positions" in line["snapshot_error"]]
    assert shown and shown[-1]["snapshot_age_seconds"] > 20             # the error, and no fresh snapshot
    assert "lifecycle tick without a snapshot" in files.log_text()


def test_incident_14_a_frozen_index_blocks_entries_and_alerts(tmp_path, sim_factory):
    """Index frozen 120 s: warning and entry block by the 3rd identical read >= 60 s; cleared on the next change."""
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock)
    files = DaemonFiles(tmp_path)
    frozen_at, thawed_at = START + 60, START + 180

    def after_detection(snapshot) -> bool:
        return snapshot.timestamp >= frozen_at + 90

    clock.at(frozen_at, lambda: sim.market.freeze_index(True))
    clock.at(thawed_at, lambda: sim.market.freeze_index(False))
    code = run_daemon(["--strategy", "frozen", "--run-for", "420"], clock=clock, env=daemon_env(tmp_path, sim),
                      strategies=[lambda: eager("frozen", entry=[after_detection])])

    assert code == 0
    [alert] = [a for a in files.alerts() if a["kind"] == "index_frozen"]
    assert alert["level"] == "WARNING"
    reads = [r.time_ms / 1000.0 for r in sim.requests_for("futures_symbols") if frozen_at <= r.time_ms / 1000.0]
    third_over_a_minute = next(t for n, t in enumerate(reads) if n >= 2 and t - reads[0] >= 60)
    assert frozen_at + 60 <= health_time(alert) <= third_over_a_minute  # flagged by that read, not later
    assert creates(sim, until=thawed_at) == []                           # entry blocked while frozen
    opened = [r for r in creates(sim, since=thawed_at) if intent_of(r) in OPEN_INTENTS]
    assert opened                                                        # and allowed once it moves again
    assert "no entry: index frozen" in files.log_text()


def test_incident_15_no_index_means_no_order_and_no_fallback_price(tmp_path, sim_factory):
    """The index endpoint fails: no order, no entry; the first trade waits for a real index."""
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock)
    files = DaemonFiles(tmp_path)
    rule = sim.faults.add(FaultRule(endpoint="futures_symbols", mode="http_5xx", http_status=502))
    healed_at = START + 300
    clock.at(healed_at, lambda: sim.faults.remove(rule))
    code = run_daemon(["--strategy", "no_index", "--run-for", "480"], clock=clock, env=daemon_env(tmp_path, sim),
                      strategies=[lambda: eager("no_index")])

    assert code == 0 and rule.fired >= 3
    assert creates(sim, until=healed_at) == []
    assert [r for r in creates(sim, since=healed_at) if intent_of(r) in OPEN_INTENTS]
    assert all(t["created_at"] >= healed_at for t in files.trades())
    log = files.log_text()
    assert "index unavailable" in log or "exchange unreachable" in log


def test_incident_22_a_raising_entry_condition_is_logged_and_raises_a_health_warning(tmp_path, sim_factory):
    """A condition raising on 3 ticks: 3 tracebacks and a health warning naming strategy and condition."""
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock)
    files = DaemonFiles(tmp_path)

    def broken_margin_check(snapshot) -> bool:
        return snapshot.equity / 0.0 > 1.0

    code = run_daemon(["--strategy", "fragile", "--run-for", "25"], clock=clock, env=daemon_env(tmp_path, sim),
                      strategies=[lambda: eager("fragile", entry=[broken_margin_check])])

    assert code == 0 and creates(sim) == []
    log = files.log_text()
    raised = "strategy fragile: entry condition entry_conditions[0]:broken_margin_check raised; entry blocked"
    assert log.count(raised) == 3
    assert log.count("ZeroDivisionError") >= 3 and log.count("Traceback (most recent call last)") >= 3
    warnings = [line for line in log.splitlines() if "WARNING" in line and "health:" in line
                and "fragile" in line and "broken_margin_check" in line]
    assert len(warnings) == 1


def test_incident_41_legs_are_resolved_at_trade_time_and_past_exit_times_are_refused(tmp_path, sim_factory, capsys):
    """A strategy built on day 1 trades on day 3 with day-3 strikes and expiry; a past utc_datetime_exit is a
    ConfigError at start, before any order."""
    day1, day3 = START, START + 2 * DAY
    clock = ScriptedClock(day1)
    sim = sim_factory(clock=clock)
    sim.market.set_scripted_path([(int((day1 - 60) * 1000), 90_000.0), (int((day1 + 3600) * 1000), 90_000.0),
                                  (int((day3 - 3600) * 1000), 100_000.0), (int((day3 + 3600) * 1000), 100_000.0)])
    env = daemon_env(tmp_path, sim)
    files = DaemonFiles(tmp_path)
    built_once = eager("atm_straddle", legs=straddle(0.01, dte="next", side=1), exits=[max_hold_hours(0.05)])
    built_once_factory = lambda: built_once  # noqa: E731 - the very same object on both days

    assert run_daemon(["--strategy", "atm_straddle", "--run-for", "300"], clock=clock, env=env,
                      strategies=[built_once_factory]) == 0
    clock.set_time(day3)
    sim.reset_stats()
    assert run_daemon(["--strategy", "atm_straddle", "--run-for", "300"], clock=clock, env=env,
                      strategies=[built_once_factory]) == 0

    first_day = [t for t in files.trades() if t["created_at"] < day1 + DAY]
    third_day = [t for t in files.trades() if t["created_at"] >= day3]
    assert first_day and third_day
    expiry_after = {0: utc(2026, 3, 4, 8), 2: utc(2026, 3, 6, 8)}
    for day, trade, index in ((0, first_day[0], 90_000.0), (2, third_day[0], 100_000.0)):
        strikes = {leg["strike"] for leg in trade["legs"]}
        assert len(strikes) == 1 and abs(strikes.pop() - index) <= 1_000.0    # ATM on that day's index
        assert {leg["expiry_ms"] for leg in trade["legs"]} == {int(expiry_after[day] * 1000)}

    def stale_exit() -> StrategyConfig:
        return eager("stale_exit", exits=[utc_datetime_exit(datetime.fromtimestamp(day1 + DAY, tz=timezone.utc))])

    sim.reset_stats()
    capsys.readouterr()
    assert run_daemon(["--strategy", "stale_exit", "--run-for", "60"], clock=clock, env=env,
                      strategies=[stale_exit]) == 2
    err = capsys.readouterr().err
    assert "stale_exit" in err and "utc_datetime_exit" in err
    assert sim.counts["create_order"] == 0
