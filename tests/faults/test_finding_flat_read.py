"""Issue 9, finding 1: a transient empty positions answer must not close live trades.

The exchange answers the positions endpoint with ``code 0`` and an empty list for ten
simulated minutes (the simulator's ``empty_list`` response mutation: a real mode of the
simulator, not a test mock). The real daemon (``main.main`` in-process, speed-0 clock)
holds an OPEN short strangle and an OPEN long strangle. Everything is asserted from the
exchange's own records (its request log, its positions, its fills) and from what the
daemon left for an operator (alerts.log, the store, trading.log):

* no trade is booked closed and no order goes out because of the empty answer;
* one CRITICAL ``suspect_positions_read``, entries held for the whole window (a strategy
  whose entry window lies inside it never opens), then ``positions_reappeared`` and the
  hold lifted when the positions show again;
* the trades later close by their own exit rule, with reduce-only orders, and the account
  ends flat.

A genuine close by somebody else on the account (orders that are not ours, so the trade
history holds fills that are not ours) is still booked as ``external_close``, priced from
those fills.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from option_selection import strangle
from order_ledger import parse_client_order_id
from simulator import Mutation
from strategy import StrategyConfig, max_hold_hours, utc_time_window
from trade_execution import ExecutionParams

from tests.faults.test_incident_rig import (
    OPEN_INTENTS,
    REDUCING_INTENTS,
    DaemonFiles,
    ScriptedClock,
    creates,
    daemon_env,
    intent_of,
    reduce_only_flag,
    run_daemon,
    utc,
)
from tests.integration.restart_rig import BUY, SELL, Outside

QUICK = ExecutionParams(fill_timeout_seconds=10.0, max_requote_rounds=5, grace_seconds=2.0)
START = utc(2026, 3, 3, 9, 0)
EMPTY_FROM, EMPTY_UNTIL = START + 300, START + 900        # ten minutes of "code 0, []"
HOLD_MINUTES = 30


def short_strangle() -> StrategyConfig:
    return StrategyConfig(name="flat_short", legs=strangle(0.1, side=SELL),
                          exit_conditions=[max_hold_hours(HOLD_MINUTES / 60)], execution_mode="limit",
                          max_concurrent_trades=1, max_trades_per_day=1, check_interval_seconds=60.0,
                          execution_params=QUICK)


def long_strangle() -> StrategyConfig:
    return StrategyConfig(name="flat_long", legs=strangle(0.05, call_delta=0.15, put_delta=-0.15, side=BUY),
                          exit_conditions=[max_hold_hours((HOLD_MINUTES + 5) / 60)], execution_mode="limit",
                          max_concurrent_trades=1, max_trades_per_day=1, check_interval_seconds=60.0,
                          execution_params=QUICK)


def late_entry() -> StrategyConfig:
    """Would open inside the empty window (nothing else stops it): only the entry hold does."""
    window = (datetime.fromtimestamp(EMPTY_FROM + 180, tz=timezone.utc),
              datetime.fromtimestamp(EMPTY_UNTIL - 60, tz=timezone.utc))
    return StrategyConfig(name="late_entry", legs=strangle(0.01, call_delta=0.4, put_delta=-0.4, side=BUY),
                          entry_conditions=[utc_time_window(*window)],
                          exit_conditions=[max_hold_hours(1)], execution_mode="limit", max_concurrent_trades=1,
                          max_trades_per_day=1, check_interval_seconds=60.0, execution_params=QUICK)


def trade_seq_of(record) -> int:
    return parse_client_order_id(int(record.params["clientOrderId"])).trade_seq


def alerts_of(files: DaemonFiles, kind: str) -> list[dict]:
    return [alert for alert in files.alerts() if alert["kind"] == kind]


def at_seconds(alert: dict) -> float:
    return datetime.fromisoformat(alert["time"].replace("Z", "+00:00")).timestamp()


def test_a_transient_empty_positions_answer_closes_nothing_holds_entries_and_the_trades_keep_their_exits(
        tmp_path, sim_factory):
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock)
    sim.mutations.add(Mutation("empty_list", endpoint="positions", start=EMPTY_FROM, end=EMPTY_UNTIL))
    files = DaemonFiles(tmp_path)
    held_at_start: dict[str, float] = {}

    def note_positions() -> None:
        held_at_start.update({symbol: sim.exchange.position_of(None, symbol)
                              for symbol in sim.exchange.default_account.positions})

    clock.at(EMPTY_FROM - 1, note_positions)
    code = run_daemon(["--run-for", str(HOLD_MINUTES * 60 + 900)], clock=clock, env=daemon_env(tmp_path, sim),
                      strategies=[short_strangle, long_strangle, late_entry])

    assert code == 0
    assert sim.mutations.counts["empty_list"] >= 10                # the daemon really read "[]" many times
    trades = {trade["strategy"]: trade for trade in files.trades()}
    assert set(trades) == {"flat_short", "flat_long"}              # late_entry never opened: entries were held
    assert len(held_at_start) == 4 and all(qty != 0 for qty in held_at_start.values())

    # Nothing was sent because of the empty answer: no order at all inside the window.
    assert creates(sim, since=EMPTY_FROM, until=EMPTY_UNTIL + 60) == []
    # Both trades closed later by their own exit rule, with reduce-only orders, and the account is flat.
    for trade in trades.values():
        assert trade["state"] == "CLOSED" and trade["exit_reason"].startswith("max_hold_hours("), trade
        assert trade["closed_at"] > EMPTY_UNTIL + 600
        assert "pnl_estimated" not in trade["flags"] and all(leg["external_qty"] == 0 for leg in trade["legs"])
        closes = [r for r in creates(sim) if trade_seq_of(r) == trade["seq"] and intent_of(r) in REDUCING_INTENTS]
        assert closes and all(reduce_only_flag(r) for r in closes)
        assert all(r.time_ms / 1000 >= trade["exit_decided_at"] for r in closes)
    assert all(sim.exchange.position_of(None, symbol) == 0 for symbol in held_at_start)
    assert [r for r in creates(sim) if intent_of(r) in OPEN_INTENTS and r.time_ms / 1000 >= EMPTY_FROM] == []

    # The operator was told once when it started and once when it ended; nothing was booked.
    [suspect] = alerts_of(files, "suspect_positions_read")
    assert suspect["level"] == "CRITICAL" and EMPTY_FROM <= at_seconds(suspect) <= EMPTY_FROM + 150
    assert set(suspect["detail"]["symbols"]) == set(held_at_start)
    [back] = alerts_of(files, "positions_reappeared")
    assert back["level"] == "WARNING" and EMPTY_UNTIL <= at_seconds(back) <= EMPTY_UNTIL + 90
    assert alerts_of(files, "external_close") == []
    log = files.log_text()
    assert "entries held (suspect_positions)" in log and "entry hold lifted (suspect_positions" in log
    assert all(not (files.runner_state(name) or {}).get("paused") for name in ("flat_short", "flat_long"))


def test_a_genuine_close_by_somebody_else_is_still_booked_at_the_price_of_its_fills(
        tmp_path, sim_factory, signed_request_for):
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock)
    outside = Outside(sim, signed_request_for(sim))
    files = DaemonFiles(tmp_path)
    closed_outside: dict[str, int] = {}

    def close_by_hand() -> None:                                   # another order, not ours, takes it to 0
        for symbol in list(sim.exchange.default_account.positions):
            held = sim.exchange.position_of(None, symbol)
            closed_outside[symbol] = outside.crossing(symbol, BUY if held < 0 else SELL, round(abs(held), 2))

    clock.at(START + 600, close_by_hand)
    code = run_daemon(["--run-for", "1200"], clock=clock, env=daemon_env(tmp_path, sim), strategies=[short_strangle])

    assert code == 0
    [trade] = files.trades()
    assert len(closed_outside) == 2 and all(sim.exchange.position_of(None, s) == 0 for s in closed_outside)
    assert trade["state"] == "CLOSED" and trade["exit_reason"] == "external_close"
    assert "pnl_estimated" not in trade["flags"]
    fills = {}
    for fill in sim.exchange.fills():
        fills.setdefault(int(fill["orderId"]), []).append(fill)
    for leg in trade["legs"]:
        [fill] = fills[closed_outside[leg["symbol"]]]
        assert leg["external_qty"] == pytest.approx(0.1)
        assert leg["external_price"] == pytest.approx(float(fill["price"]))
    assert len(alerts_of(files, "external_close")) == 2 and alerts_of(files, "suspect_positions_read") == []
    assert [r for r in creates(sim, since=START + 600) if "clientOrderId" in r.params] == []   # nothing of ours
    assert files.runner_state("flat_short")["paused"] is True
