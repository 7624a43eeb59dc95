"""Issue 9, finding 2: never trade on a lost memory (docs/RECOVERY.md rows L1-L4).

The real daemon (``main.main`` in-process) against a simulator the test owns, over loopback,
on a speed-0 ``ScriptedClock`` that acts at chosen simulated instants. Every verdict is read
from the exchange's own records (the simulator's request log, its orders and positions) or
from what an operator sees (alerts, the files in STATE_DIR):

* L1 - the store deleted, replaced or truncated under a running daemon: CRITICAL
  ``state_store_lost`` within a tick or two, no open order afterwards, the trades' exits still
  close them; a recovery copy holds everything the daemon knew;
* L2 - restarted with the store gone: every strategy paused, CRITICAL naming the fix, the trade
  sequence past everything the exchange saw; put back, the recovery copy restores the day's
  quota (no second trade on a one-per-day strategy) and no clientOrderId is ever sent twice;
* L3 - a store restored from an older copy: CRITICAL ``store_behind``, paused, re-seeded.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from option_selection import strangle
from order_ledger import parse_client_order_id
from persistence import StateStore
from prefix_ownership import clock_trade_seq_floor
from strategy import StrategyConfig, max_hold_hours
from trade_execution import ExecutionParams

from tests.faults.test_incident_rig import (
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

START = utc(2026, 3, 3, 9, 0)
QUICK = ExecutionParams(fill_timeout_seconds=10.0, max_requote_rounds=5, aggressive_buffer_pct=3.0)
DAILY, REPEAT = "daily_once", "repeat_strangle"
LOST_AT = START + 240.0


def daily_once() -> StrategyConfig:
    """One trade a day, held 15 minutes: a second trade the same day is the finding."""
    return StrategyConfig(name=DAILY, legs=strangle(0.01, dte="next", side=1), exit_conditions=[max_hold_hours(0.25)],
                          execution_mode="limit", max_concurrent_trades=1, max_trades_per_day=1,
                          check_interval_seconds=10.0, execution_params=QUICK)


def repeat_strangle() -> StrategyConfig:
    """Trades again as soon as its 6-minute trade is closed: it shows whether entries stopped."""
    return StrategyConfig(name=REPEAT, legs=strangle(0.01, call_delta=0.3, put_delta=-0.3, dte="next", side=1),
                          exit_conditions=[max_hold_hours(0.1)], execution_mode="limit", max_concurrent_trades=1,
                          max_trades_per_day=50, cooldown_seconds=0.0, check_interval_seconds=10.0,
                          execution_params=QUICK)


STRATEGIES = [daily_once, repeat_strangle]


def seconds_of(alert: dict) -> float:
    return datetime.fromisoformat(alert["time"].replace("Z", "+00:00")).timestamp()


def every_coid(sim) -> list[int]:
    return [int(r.params["clientOrderId"]) for r in creates(sim)]


def lose(db: Path, how: str) -> None:
    """What an operator, a cleanup job or a restore does to the file under the daemon."""
    if how == "deleted":
        db.unlink()
    elif how == "replaced":
        other = db.with_name("other.db")
        StateStore(other).close()                       # a valid, empty database from somewhere else
        os.replace(other, db)
    else:
        with db.open("r+b") as handle:
            handle.truncate(db.stat().st_size // 2)


def symbols_of(trades: list[dict]) -> set[str]:
    return {leg["symbol"] for trade in trades for leg in trade["legs"]}


@pytest.mark.parametrize("how", ["deleted", "replaced", "truncated"])
def test_row_l1_a_store_lost_under_a_running_daemon_stops_entries_and_exits_go_on(tmp_path, sim_factory, how):
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock)
    env = daemon_env(tmp_path, sim)
    files = DaemonFiles(tmp_path)
    db = files.state / "trader.db"
    before: list[dict] = []

    def lose_the_store() -> None:
        before.extend(StateStore(db).load_trades())     # what the store held: two OPEN trades
        lose(db, how)

    clock.at(LOST_AT, lose_the_store)
    assert run_daemon(["--run-for", "1800"], clock=clock, env=env, strategies=STRATEGIES) == 0

    assert sorted(t["strategy"] for t in before) == [DAILY, REPEAT] and {t["state"] for t in before} == {"OPEN"}
    [lost] = [a for a in files.alerts() if a["kind"] == "state_store_lost"]
    assert lost["level"] == "CRITICAL" and LOST_AT <= seconds_of(lost) <= LOST_AT + 20.0   # a tick or two
    assert "What to do" in lost["message"]
    after = creates(sim, since=LOST_AT)
    assert [r for r in after if intent_of(r) in OPEN_INTENTS] == []          # no new trade after the loss
    assert {r.params["symbol"] for r in after if intent_of(r) in REDUCING_INTENTS} == symbols_of(before)
    assert all(sim.exchange.position_of(None, symbol) == 0.0 for symbol in symbols_of(before))   # exits closed
    assert "entries held: state_store_lost" in files.log_text()
    copies = list(files.state.glob("trader.db.recovered*"))
    if how == "truncated":                                                   # our own inode lost its pages
        assert copies == []
        return
    [copy] = copies
    assert lost["detail"]["recovery_copy"] == str(copy)
    saved = StateStore(copy)
    try:
        assert {t["id"]: t["state"] for t in saved.load_trades()} == {t["id"]: "CLOSED" for t in before}
    finally:
        saved.close()


def test_row_l2_restarted_without_its_store_the_daemon_starts_paused_and_never_reuses_a_client_order_id(
        tmp_path, sim_factory):
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock)
    env = daemon_env(tmp_path, sim)
    files = DaemonFiles(tmp_path)
    clock.at(LOST_AT, lambda: (files.state / "trader.db").unlink())
    assert run_daemon(["--run-for", "1800"], clock=clock, env=env, strategies=STRATEGIES) == 0
    first_life = every_coid(sim)
    highest = max(parse_client_order_id(coid).trade_seq for coid in first_life)
    [copy] = files.state.glob("trader.db.recovered*")

    # Second life: the store is gone; the exchange remembers our orders of the last half hour.
    clock.set_time(START + 2400)
    restarted = clock.now()
    assert run_daemon(["--run-for", "600"], clock=clock, env=env, strategies=STRATEGIES) == 0

    [alert] = [a for a in files.alerts() if a["kind"] == "missing_store_start"]
    assert alert["level"] == "CRITICAL" and str(copy) in alert["message"]   # the fix names the copy
    assert "python main.py resume" in alert["message"]
    assert all(files.runner_state(name)["paused"] for name in (DAILY, REPEAT))
    assert creates(sim, since=restarted) == []
    store = StateStore(files.state / "trader.db")
    try:
        assert store.counter("trade_seq") >= highest + 1000
    finally:
        store.close()

    # Third life: the operator follows the alert and puts the recovery copy back.
    for path in files.state.glob("trader.db*"):
        if path != copy:
            path.unlink()
    shutil.move(copy, files.state / "trader.db")
    clock.set_time(START + 3600)
    third = clock.now()
    assert run_daemon(["--run-for", "900"], clock=clock, env=env, strategies=STRATEGIES) == 0

    opened = [r for r in creates(sim, since=third) if intent_of(r) in OPEN_INTENTS]
    trade_ids = {t["id"]: t["strategy"] for t in files.trades()}
    assert {trade_ids[f"T{parse_client_order_id(int(r.params['clientOrderId'])).trade_seq:09d}"]
            for r in opened} == {REPEAT}                                    # the daily quota came back with it
    assert sum(1 for strategy in trade_ids.values() if strategy == DAILY) == 1
    coids = every_coid(sim)
    assert len(coids) > len(first_life)
    assert [coid for coid, count in Counter(coids).items() if count > 1] == []   # no clientOrderId sent twice
    assert all(r.code != 10577 for r in creates(sim))                     # the exchange never saw a duplicate


def test_row_l2_a_store_deleted_while_the_daemon_was_down_holds_its_open_trade_as_external(tmp_path, sim_factory):
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock)
    env = daemon_env(tmp_path, sim)
    files = DaemonFiles(tmp_path)
    clock.kill_at(START + 120)
    with pytest.raises(DaemonKilled):
        run_daemon(["--strategy", DAILY], clock=clock, env=env, strategies=STRATEGIES)
    [trade] = files.trades()
    held = {leg["symbol"]: sim.exchange.position_of(None, leg["symbol"]) for leg in trade["legs"]}
    assert trade["state"] == "OPEN" and all(qty == pytest.approx(0.01) for qty in held.values())
    for path in files.state.glob("trader.db*"):                          # rm state/trader.db*
        path.unlink()

    clock.set_time(START + 600)
    restarted = clock.now()
    assert run_daemon(["--run-for", "1800"], clock=clock, env=env, strategies=STRATEGIES) == 0

    [alert] = [a for a in files.alerts() if a["kind"] == "missing_store_start"]
    assert alert["detail"]["positions"] == 2 and alert["detail"]["recent_orders"] >= 2
    assert creates(sim, since=restarted) == []                           # no second trade, no close invented
    assert {symbol: sim.exchange.position_of(None, symbol) for symbol in held} == held
    assert all(files.runner_state(name)["paused"] for name in (DAILY, REPEAT))
    assert files.trades() == []
    store = StateStore(files.state / "trader.db")
    try:
        assert store.counter("trade_seq") >= trade["seq"] + 1000
    finally:
        store.close()


def test_row_l3_a_store_restored_from_an_older_copy_is_behind_the_exchange(tmp_path, sim_factory):
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock)
    env = daemon_env(tmp_path, sim)
    files = DaemonFiles(tmp_path)
    backup = tmp_path / "backup"
    assert run_daemon(["--run-for", "60", "--strategy", REPEAT], clock=clock, env=env, strategies=STRATEGIES) == 0
    shutil.copytree(files.state, backup)                                 # the nightly backup: one trade
    clock.set_time(START + 120)
    assert run_daemon(["--run-for", "1200", "--strategy", REPEAT], clock=clock, env=env,
                      strategies=STRATEGIES) == 0
    newest = max(parse_client_order_id(coid).trade_seq for coid in every_coid(sim))
    assert newest >= clock_trade_seq_floor(START) + 2                    # traded again after the backup
    shutil.rmtree(files.state)
    shutil.copytree(backup, files.state)                                 # restored: behind the exchange

    clock.set_time(START + 1800)
    restarted = clock.now()
    assert run_daemon(["--run-for", "600", "--strategy", REPEAT], clock=clock, env=env,
                      strategies=STRATEGIES) == 0

    [alert] = [a for a in files.alerts() if a["kind"] == "store_behind"]
    assert alert["level"] == "CRITICAL" and alert["detail"]["highest_trade_seq"] == newest
    assert alert["detail"]["store_trade_seq"] == clock_trade_seq_floor(START) + 1   # a new directory: the floor
    assert files.runner_state(REPEAT)["paused"] is True
    # The stale trade of the backup sends nothing: not its exit (it could close a position of a trade the
    # store never heard of), not under a clientOrderId the exchange has already seen.
    assert creates(sim, since=restarted) == []
    coids = every_coid(sim)
    assert [coid for coid, count in Counter(coids).items() if count > 1] == []
    store = StateStore(files.state / "trader.db")
    try:
        assert store.counter("trade_seq") == newest + 1000
    finally:
        store.close()


def test_row_l4_every_start_reads_our_history_since_its_last_check_one_page_per_500_orders(tmp_path, sim_factory):
    """The start-up cost in requests: one history page per 500 orders of ours since the last check.

    A store that never checked reads up to 89 days (at most ``HISTORY_MAX_PAGES`` pages; the
    client's request budget for the history endpoint is 5 a second); a normal restart reads the
    downtime only, one page as a rule; a running daemon one page a minute.
    """
    from tests.integration.restart_rig import Lives, pick_legs
    from order_ledger import Intent, build_client_order_id

    clock = ScriptedClock(START - 7200)
    sim = sim_factory(clock=clock)
    account = sim.exchange.default_account
    leg = pick_legs(sim)[0]
    for n in range(1200):                                  # 1200 orders of ours two hours ago, all cancelled
        order_id = sim.exchange.create_order(account, {"symbol": leg.symbol, "qty": 0.01, "tradeSide": 1,
                                                        "tradeType": 1, "price": 5.0,
                                                        "clientOrderId": build_client_order_id(101, 1 + n // 4,
                                                                                               n % 4, Intent.OPEN, 1)})
        sim.exchange.cancel_order(account, {"orderId": order_id})
    clock.set_time(START)
    lives = Lives(sim, tmp_path)

    def history_reads(since: float) -> list:
        return [r for r in sim.requests_for("order_history") if r.time_ms >= since * 1000]

    try:
        life = lives.start([])
        life.wake()                                         # a missing store: 89 days are read
        assert life.reconciler.started and len(history_reads(START)) == 3      # 1200 orders: 3 pages of 500
        assert life.store.counter("trade_seq") == 300 + 1000
        life.crash()

        clock.set_time(START + 3600)
        restarted = clock.now()
        again = lives.start([])
        again.wake()                                        # a normal restart: the hour since the last check
        [read] = history_reads(restarted)
        assert int(read.params["startTime"]) == int((START - 120) * 1000)       # the last check, minus the overlap
        again.run(130)                                      # while running: one read per reconciliation
        assert len(history_reads(restarted)) == 3
    finally:
        lives.close_all()
