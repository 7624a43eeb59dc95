"""A command-line kill (no daemon) finishes every kill it takes before it exits (BEHAVIOUR.md 7.6, 7.8).

``python main.py kill --strategy alpha --yes`` with no daemon running takes the lock and is the
daemon for as long as the kill needs. A second ``kill --yes`` run meanwhile finds the lock held
and queues its command; the kill process's ``CommandProcessor`` takes it on its next wake
(pauses, alerts, force-closes beta). The process used to exit as soon as its own command was
done, leaving the second kill ``active``, beta's trade CLOSING with a leg held and a live kill
order, and no process running. Now it runs until every kill it follows is finished, and when
it must stop with one open (a signal), it says so on stdout and in a CRITICAL alert.

Everything runs on the shared speed-0 simulated clock (``HookClock``): nothing sleeps for real.
"""
from __future__ import annotations

import json
import signal

from tests.integration.test_kill_resume_e2e import (  # noqa: F401 - fixtures
    ALPHA, BETA, PREFIX, clock, cli_from_inside_the_daemon, env, exchange, pending_client_ids, positions, run,
    runner_state, stored,
)
from order_ledger import parse_client_order_id


def _alerts(tmp_path) -> list[dict]:
    path = tmp_path / "logs" / "alerts.log"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _our_working_orders(call) -> set[int]:
    return {coid for coid in pending_client_ids(call) if parse_client_order_id(coid).prefix == PREFIX}


def _two_open_trades(tmp_path, clock, env) -> None:
    assert run(["--run-for", "120"], clock, env, strategies=(ALPHA, BETA)) == 0   # the daemon, then stopped
    trades = {t["strategy"]: t for t in stored(tmp_path)[0]}
    assert trades["alpha"]["state"] == "OPEN" and trades["beta"]["state"] == "OPEN"


def _second_kill_queued_3s_in(tmp_path, clock, env, capsys) -> tuple[float, list[int]]:
    """Two open trades; then the operator kills alpha (this process becomes the daemon for it)
    and, 3 s later in another terminal, decides everything must go: `kill --yes` finds the lock
    held and queues it. Returns (when the first kill starts, the second command line's exit codes)."""
    _two_open_trades(tmp_path, clock, env)
    capsys.readouterr()
    killed_from = clock.now()
    codes: list[int] = []
    clock.at(killed_from + 3, cli_from_inside_the_daemon(["kill", "--yes"], env, codes))
    return killed_from, codes


def test_a_kill_queued_while_a_command_line_kill_runs_is_finished_before_the_process_exits(
        tmp_path, clock, exchange, env, signed_request_for, capsys):
    killed_from, codes = _second_kill_queued_3s_in(tmp_path, clock, env, capsys)

    assert run(["kill", "--strategy", "alpha", "--yes"], clock, env, strategies=(ALPHA, BETA)) == 0
    out = capsys.readouterr().out

    assert codes == [1]   # the second command line waited on its own clock: queued, not taken yet
    trades, _, commands = stored(tmp_path)
    assert [(c["id"], c["status"]) for c in commands] == [(1, "done"), (2, "done")]
    by_strategy = {t["strategy"]: t for t in trades}
    assert {name: (t["state"], t["exit_reason"]) for name, t in by_strategy.items()} == {
        "alpha": ("CLOSED", "kill_switch"), "beta": ("CLOSED", "kill_switch")}
    call = signed_request_for(exchange)
    assert positions(call) == {} and _our_working_orders(call) == set()
    assert runner_state(tmp_path, "alpha")["paused"] is True and runner_state(tmp_path, "beta")["paused"] is True

    lines = out.splitlines()
    # Progress lines cover every open kill, the second one included (with beta's trade).
    assert any(line.startswith("kill command 2: ") and "still closing" in line for line in lines)
    assert any(f"trade {by_strategy['beta']['id']} (beta) CLOSING" in line for line in lines)
    assert any(line.startswith("kill command 2 done: ") for line in lines)
    assert lines[-1] == "this process finished kill command(s) 1 (done), 2 (done); no kill command is left open"


def test_a_kill_process_stopped_with_a_taken_kill_still_open_says_so_and_alerts_critical(
        tmp_path, clock, exchange, env, signed_request_for, capsys):
    killed_from, codes = _second_kill_queued_3s_in(tmp_path, clock, env, capsys)
    # Ctrl-C once alpha's kill is done (about 20 s in) and before beta's is (about 45 s in).
    clock.at(killed_from + 30, lambda: signal.raise_signal(signal.SIGINT))

    assert run(["kill", "--strategy", "alpha", "--yes"], clock, env, strategies=(ALPHA, BETA)) == 1
    out = capsys.readouterr().out

    trades, _, commands = stored(tmp_path)
    assert [(c["id"], c["status"]) for c in commands] == [(1, "done"), (2, "active")]
    beta = next(t for t in trades if t["strategy"] == "beta")
    assert beta["state"] not in ("CLOSED", "FAILED")
    last = out.splitlines()[-1]
    assert last.startswith("interrupted (SIGINT): kill command 2 active")
    assert f"trades still closing: {beta['id']}" in last
    assert "left active" in last and "start the daemon (`python main.py`)" in last
    [left] = [a for a in _alerts(tmp_path) if a["kind"] == "kill_left_active"]
    assert left["level"] == "CRITICAL" and left["detail"]["commands"] == [2]
    assert "start the daemon (`python main.py`)" in left["message"]

    # The daemon the operator was told to start takes the kill again and finishes it.
    assert run(["--run-for", "300"], clock, env, strategies=(ALPHA, BETA)) == 0
    trades, _, commands = stored(tmp_path)
    assert [(c["id"], c["status"]) for c in commands] == [(1, "done"), (2, "done")]
    assert {t["state"] for t in trades} == {"CLOSED"}
    assert positions(signed_request_for(exchange)) == {}


def test_a_kill_queued_after_the_last_check_is_said_to_be_left_open_not_dropped(tmp_path, clock, exchange, env,
                                                                               monkeypatch, capsys):
    """The instant between the last wake's check and the lock's release: a `kill` run then found
    the lock held and queued its command, which nobody takes once this process is gone."""
    import app
    from commands import KillRequest
    from persistence import StateStore

    assert run(["--run-for", "120"], clock, env) == 0
    capsys.readouterr()
    shutdown = app.log_shutdown_state

    def queue_meanwhile(ctx) -> None:   # after the loop, before the store is closed and the lock released
        with StateStore(tmp_path / "state" / "trader.db") as store:
            store.add_command("kill", KillRequest(None, False).to_payload())
        shutdown(ctx)

    monkeypatch.setattr(app, "log_shutdown_state", queue_meanwhile)
    assert run(["kill", "--yes"], clock, env) == 1
    out = capsys.readouterr().out

    assert [(c["id"], c["status"]) for c in stored(tmp_path)[2]] == [(1, "done"), (2, "pending")]
    last = out.splitlines()[-1]
    assert last.startswith("kill command(s) 1 finished, but another kill was queued as this process ended: "
                           "kill command 2 pending")
    assert "left open" in last and "start the daemon (`python main.py`)" in last
    [left] = [a for a in _alerts(tmp_path) if a["kind"] == "kill_left_active"]
    assert left["level"] == "CRITICAL" and left["detail"]["commands"] == [2]

    monkeypatch.setattr(app, "log_shutdown_state", shutdown)
    assert run(["--run-for", "120"], clock, env) == 0        # the daemon takes it
    assert [(c["id"], c["status"]) for c in stored(tmp_path)[2]] == [(1, "done"), (2, "done")]
