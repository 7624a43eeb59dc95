"""Issue 9, finding 6 (part): one prefix, one owner; a state directory belongs to one exchange.

docs/RECOVERY.md rows O2 (orders with our prefix the ledger does not know) and E1 (the state
directory's exchange). The real daemon in-process against simulators the test owns, over
loopback, on speed-0 clocks; verdicts from the exchange's own records:

* another party sends orders carrying our clientOrderId prefix while the daemon runs, one
  resting and one filled at once (seen only in the order history): CRITICAL
  ``prefix_conflict`` naming them, entries stop (every strategy paused), the resting order is
  left alone, no clientOrderId of ours equals one of theirs;
* a state directory records its exchange on the first start: the same exchange starts again
  (the embedded simulator too, although its port changes), another base URL, account or
  environment exits 2 with one line and sends nothing that trades.
"""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

import main as main_module
from clock import SimulatedClock
from config import STATE_DB_NAME
from option_selection import strangle
from persistence import IDENTITY_EVENT
from prefix_ownership import clock_trade_seq_floor
from order_ledger import Intent, build_client_order_id, parse_client_order_id
from state_identity import EMBEDDED_EXCHANGE, IDENTITY_FILE, normalize_base_url
from strategy import StrategyConfig, max_hold_hours
from trade_execution import ExecutionParams

from tests.faults.test_incident_rig import (
    OPEN_INTENTS,
    DaemonFiles,
    ScriptedClock,
    creates,
    daemon_env,
    intent_of,
    run_daemon,
    utc,
)
from tests.faults.test_finding_lost_store import seconds_of
from tests.integration.restart_rig import BUY, Outside

START = utc(2026, 3, 3, 9, 0)
NAME = "busy_strangle"
PREFIX = 101


def busy_strangle() -> StrategyConfig:
    """Opens again as soon as its 6-minute trade is closed: it shows when entries stop."""
    return StrategyConfig(name=NAME, legs=strangle(0.01, dte="next", side=1), exit_conditions=[max_hold_hours(0.1)],
                          execution_mode="limit", max_concurrent_trades=1, max_trades_per_day=50,
                          cooldown_seconds=0.0, check_interval_seconds=10.0,
                          execution_params=ExecutionParams(fill_timeout_seconds=10.0, aggressive_buffer_pct=3.0))


def alerts_of(files: DaemonFiles, kind: str) -> list[dict]:
    return [a for a in files.alerts() if a["kind"] == kind]


def test_row_o2_orders_with_our_prefix_sent_by_another_party_stop_entries_and_are_left_alone(
        tmp_path, sim_factory, signed_request_for):
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock)
    outside = Outside(sim, signed_request_for(sim))
    env = daemon_env(tmp_path, sim)
    files = DaemonFiles(tmp_path)
    symbol = "BTCUSD-4MAR26-92000-C"
    resting_coid = build_client_order_id(PREFIX, 1, 0, Intent.OPEN, 50)   # the other daemon's trade 1
    filled_coid = build_client_order_id(PREFIX, 2, 1, Intent.OPEN, 50)    # filled at once: history only
    placed: dict[str, int] = {}

    def another_daemon() -> None:
        placed["resting"] = outside.resting(symbol, BUY, 0.01, client_order_id=resting_coid)
        placed["filled"] = outside.crossing(symbol, BUY, 0.01, client_order_id=filled_coid)

    clock.at(START + 300, another_daemon)
    assert run_daemon(["--run-for", "1500"], clock=clock, env=env, strategies=[busy_strangle]) == 0

    conflicts = alerts_of(files, "prefix_conflict")
    assert conflicts and all(a["level"] == "CRITICAL" for a in conflicts)
    named = {coid for a in conflicts for coid in a["detail"]["client_order_ids"]}
    assert named == {resting_coid, filled_coid}
    detected_at = min(seconds_of(a) for a in conflicts)
    assert START + 300 <= detected_at <= START + 300 + 70                  # the next reconciliation
    assert all("CLIENT_ORDER_PREFIX" in a["message"] for a in conflicts)
    others = (resting_coid, filled_coid)   # the other party's, placed at START + 300 (maybe the same instant)
    assert [r for r in creates(sim, since=detected_at)
            if intent_of(r) in OPEN_INTENTS and int(r.params["clientOrderId"]) not in others] == []  # entries stopped
    assert files.runner_state(NAME)["paused"] is True
    resting = next(o for o in sim.exchange.orders() if int(o["orderId"]) == placed["resting"])
    assert int(resting["state"]) == 0                                       # not ours to cancel
    assert [r for r in sim.requests_for("cancel_order")
            if str(r.params.get("orderId")) == str(placed["resting"])] == []
    sent = [int(r.params["clientOrderId"]) for r in creates(sim, since=START)]
    assert Counter(sent)[resting_coid] == 1 and Counter(sent)[filled_coid] == 1   # only the other party's
    ours = [coid for coid in sent if coid not in (resting_coid, filled_coid)]
    assert ours and [coid for coid, count in Counter(ours).items() if count > 1] == []
    first = clock_trade_seq_floor(START) + 1                                # a new directory's first trade
    assert max(parse_client_order_id(coid).trade_seq for coid in ours) < first + 1000   # nothing after the stop


# ---------------------------------------------------------------------------------------------
# E1: the state directory's exchange
# ---------------------------------------------------------------------------------------------


def identity_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / IDENTITY_FILE


def refusal_lines(capsys) -> list[str]:
    """What the operator reads on stderr besides the log: the one-line refusal."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("configuration error:")]


def trading_requests(sim, since: float) -> list:
    """Orders sent or cancelled, RFQs, and the reads the reconciliation starts with: none may happen."""
    return [r for handler in ("create_order", "cancel_order", "rfq_create", "rfq_accept", "pending_orders",
                              "order_history") for r in sim.requests_for(handler) if r.time_ms >= since * 1000]


def test_row_e1_the_same_state_directory_on_the_same_exchange_starts_again(tmp_path, sim_factory):
    clock = SimulatedClock(start=START, speed=0)
    sim = sim_factory(clock=clock)
    env = daemon_env(tmp_path, sim)
    assert run_daemon(["--run-for", "60"], clock=clock, env=env, strategies=[busy_strangle]) == 0
    record = json.loads(identity_file(tmp_path).read_text())
    assert record == {"environment": "sim", "exchange": normalize_base_url(sim.base_url),
                      "account": str(sim.exchange.default_account.user_id)}
    clock.advance(60)
    assert run_daemon(["--run-for", "60"], clock=clock, env=env, strategies=[busy_strangle]) == 0
    assert json.loads(identity_file(tmp_path).read_text()) == record


def test_row_e1_the_embedded_simulator_is_one_exchange_whatever_its_port(tmp_path):
    env = {"TRADING_ENVIRONMENT": "sim", "LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state")}
    for offset in (0, 120):
        code = main_module.main(["--run-for", "30", "--strategy", NAME], clock=SimulatedClock(start=START + offset,
                                                                                               speed=0),
                                env=env, dotenv_path=None, strategies=[busy_strangle])
        assert code == 0
    record = json.loads(identity_file(tmp_path).read_text())
    assert record["environment"] == "sim" and record["exchange"] == EMBEDDED_EXCHANGE and record["account"]


def test_row_e1_another_base_url_is_refused_with_exit_2_and_nothing_sent(tmp_path, sim_factory, capsys):
    clock = SimulatedClock(start=START, speed=0)
    first = sim_factory(clock=clock)
    assert run_daemon(["--run-for", "300"], clock=clock, env=daemon_env(tmp_path, first),
                      strategies=[busy_strangle]) == 0
    before = DaemonFiles(tmp_path).trades()
    assert before                                                          # it traded on the first exchange
    other = sim_factory(clock=clock)                                       # another exchange, same STATE_DIR
    capsys.readouterr()
    started = clock.now()

    code = run_daemon(["--run-for", "300"], clock=clock, env=daemon_env(tmp_path, other), strategies=[busy_strangle])

    assert code == 2
    [line] = refusal_lines(capsys)
    assert normalize_base_url(first.base_url) in line and normalize_base_url(other.base_url) in line
    assert "STATE_DIR" in line and "aside" in line
    assert trading_requests(other, started) == [] and trading_requests(first, started) == []
    assert DaemonFiles(tmp_path).trades() == before                        # nothing reconciled or changed


@pytest.mark.parametrize("field, value", [("account", "1695796692999999"), ("environment", "production")])
def test_row_e1_another_account_or_environment_is_refused_with_exit_2(tmp_path, sim_factory, capsys, field, value):
    clock = SimulatedClock(start=START, speed=0)
    sim = sim_factory(clock=clock)
    env = daemon_env(tmp_path, sim)
    assert run_daemon(["--run-for", "30"], clock=clock, env=env, strategies=[busy_strangle]) == 0
    path = identity_file(tmp_path)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, field: value}))
    capsys.readouterr()
    started = clock.now()

    assert run_daemon(["--run-for", "300"], clock=clock, env=env, strategies=[busy_strangle]) == 2

    [line] = refusal_lines(capsys)
    assert f"{field} {value}" in line and f"{field} {record[field]}" in line
    assert trading_requests(sim, started) == []
    assert json.loads(path.read_text())[field] == value                    # the record is never rewritten


def test_row_e1_a_state_directory_without_a_record_adopts_the_exchange_it_is_started_on(tmp_path, sim_factory,
                                                                                        caplog):
    clock = SimulatedClock(start=START, speed=0)
    sim = sim_factory(clock=clock)
    env = daemon_env(tmp_path, sim)
    assert run_daemon(["--run-for", "60"], clock=clock, env=env, strategies=[busy_strangle]) == 0
    identity_file(tmp_path).unlink()                                       # a directory from before the record:
    with sqlite3.connect(tmp_path / "state" / STATE_DB_NAME) as db:         # no file, no record in the db either
        db.execute("DELETE FROM events WHERE kind = ?", (IDENTITY_EVENT,))

    assert run_daemon(["--run-for", "60"], clock=clock, env=env, strategies=[busy_strangle]) == 0

    assert json.loads(identity_file(tmp_path).read_text())["exchange"] == normalize_base_url(sim.base_url)
    assert "had no exchange record: adopted environment sim" in DaemonFiles(tmp_path).log_text()
