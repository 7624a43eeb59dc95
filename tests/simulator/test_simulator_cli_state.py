"""Restart safety (state file) and the ``python -m simulator`` CLI (API.md §13 items 26-27)."""
from __future__ import annotations

import json
import os
import selectors
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

import auth
from clock import SimulatedClock
from simulator import SimulatorConfig, start_simulator
from simulator.__main__ import parse_start
from simulator.state import StateFileError, load_state_file, save_state_file

REPO = Path(__file__).resolve().parents[2]
SIM_START_MS = 1772431200000  # 2026-03-02 06:00:00 UTC
CREATE = "/open/option/order/create/v1"
NO_LIMITS = {"rate_limits_enabled": False}


def best_ask_buy(call, symbol: str, client_order_id: int, qty: float = 0.1) -> dict:
    book = call("GET", f"/open/option/order/orderbook/v1/{symbol}", signed=False)["data"]
    return {"symbol": symbol, "qty": qty, "tradeSide": 1, "tradeType": 1,
            "price": float(book["asks"][0]["price"]), "clientOrderId": client_order_id}


def account_view(call) -> dict:
    """What a client sees of the account: summary, positions and open orders."""
    return {
        "summary": call("GET", "/open/account/summary/v1")["data"],
        "positions": call("GET", "/open/option/position/get/v1")["data"],
        "pending": call("GET", "/open/option/order/pending/v1")["data"],
    }


# --- save → restart → same account, time continues ---------------------------------------
def test_state_survives_a_restart_and_time_continues(tmp_path, sim_factory, signed_request_for, resting_bid_for):
    state_file = str(tmp_path / "sim-state.json")
    first = sim_factory(state_file=state_file, **NO_LIMITS)
    call = signed_request_for(first)
    resting = resting_bid_for(first, client_order_id=9001)
    assert call("POST", CREATE, resting)["code"] == 0
    taker = best_ask_buy(call, resting["symbol"], client_order_id=9002)
    assert call("POST", CREATE, taker)["code"] == 0
    first.clock.advance(30)
    before = account_view(call)
    assert len(before["positions"]) == 1 and before["pending"]["total"] == 1
    saved_at = first.clock.now_ms()
    key, secret = first.api_key, first.api_secret
    first.stop()  # saves to state_file
    assert os.path.exists(state_file)

    # A fresh clock that starts earlier is moved forward to the saved instant.
    clock = SimulatedClock(start=SIM_START_MS / 1000, speed=0)
    second = sim_factory(clock=clock, state_file=state_file, **NO_LIMITS)
    assert clock.now_ms() == saved_at
    assert (second.api_key, second.api_secret) == (key, secret)
    call2 = signed_request_for(second)
    assert account_view(call2) == before

    # Time continues: the resting order is still there, new ids keep growing.
    clock.advance(5)
    found = call2("GET", "/open/option/order/singleQuery/v1", {"clientOrderId": 9001})["data"]
    assert found["state"] == 0
    new_id = call2("POST", CREATE, resting_bid_for(second, client_order_id=9003))["data"]
    assert new_id > found["orderId"]


def test_restore_keeps_a_clock_that_is_already_later(tmp_path, sim_factory):
    state_file = str(tmp_path / "later.json")
    first = sim_factory(state_file=state_file)
    saved_at = first.clock.now_ms()
    first.stop()
    clock = SimulatedClock(start=saved_at / 1000 + 3600, speed=0)
    second = sim_factory(clock=clock, state_file=state_file)
    assert clock.now_ms() == saved_at + 3_600_000
    assert second.exchange.account_for_key(first.api_key) is not None


def test_handle_save_state_writes_a_loadable_snapshot(tmp_path, sim):
    path = tmp_path / "snap.json"
    assert sim.save_state(str(path)) == str(path)
    payload = load_state_file(path)
    assert payload["saved_at_ms"] == sim.clock.now_ms()
    assert payload["seed"] == 7
    assert {"market", "exchange"} <= set(payload)
    with pytest.raises(ValueError):
        sim.save_state()  # no state_file configured and none given


def test_fixed_credentials_from_config(sim_factory, signed_request_for):
    handle = sim_factory(api_key="fixedKey==", api_secret="fixed-secret")
    assert (handle.api_key, handle.api_secret) == ("fixedKey==", "fixed-secret")
    envelope = signed_request_for(handle)("GET", "/open/auth/user/query-api")
    assert envelope["data"]["apiKey"] == "fixedKey=="
    assert "fixed-secret" not in repr(handle) and "fixed-secret" not in repr(handle.config)


def test_seed_flows_into_market_and_exchange_configs():
    config = SimulatorConfig(seed=42)
    assert config.market_config().seed == 42
    assert config.exchange_config().seed == 42
    with pytest.raises(ValueError):
        SimulatorConfig(api_key="only-a-key")


def test_start_simulator_builds_its_own_clock_from_start_time_and_speed():
    handle = start_simulator(SimulatorConfig(start_time=SIM_START_MS / 1000, speed=0))
    try:
        assert handle.clock.now_ms() == SIM_START_MS
        assert requests.get(handle.base_url + "/time", timeout=5).json()["data"]["serverTime"] == SIM_START_MS
    finally:
        handle.stop()
        handle.stop()  # idempotent


# --- atomic state file ----------------------------------------------------------------------
def test_state_file_is_written_atomically_and_privately(tmp_path):
    path = tmp_path / "state.json"
    save_state_file(path, {"format": "coincall-simulator-state", "version": 1, "n": 1})
    save_state_file(path, {"format": "coincall-simulator-state", "version": 1, "n": 2})
    assert json.loads(path.read_text())["n"] == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temp file left


def test_failed_replace_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    save_state_file(path, {"format": "coincall-simulator-state", "version": 1, "n": 1})

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        save_state_file(path, {"format": "coincall-simulator-state", "version": 1, "n": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text())["n"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_loading_missing_or_foreign_files(tmp_path):
    assert load_state_file(tmp_path / "absent.json") is None
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(StateFileError):
        load_state_file(garbage)
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": 1}')
    with pytest.raises(StateFileError):
        load_state_file(foreign)
    future = tmp_path / "future.json"
    future.write_text('{"format": "coincall-simulator-state", "version": 99}')
    with pytest.raises(StateFileError):
        load_state_file(future)


# --- CLI -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-03-02T06:00:00Z", SIM_START_MS / 1000),
        ("2026-03-02T07:00:00+01:00", SIM_START_MS / 1000),
        ("2026-03-02T06:00:00", SIM_START_MS / 1000),
        ("1772431200", SIM_START_MS / 1000),
        ("1772431200000", SIM_START_MS / 1000),
    ],
)
def test_parse_start(text, expected):
    assert parse_start(text) == expected


def read_announcement(proc: subprocess.Popen, deadline_s: float = 30.0) -> dict[str, str]:
    """The three KEY=value lines, read by polling the pipe (no sleeping)."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    buffer = b""
    try:
        while buffer.count(b"\n") < 3:
            if not selector.select(timeout=deadline_s):
                raise AssertionError("the simulator did not announce itself in time")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"the simulator exited early: {proc.stderr.read().decode()[-2000:]}")
            buffer += chunk
    finally:
        selector.close()
    lines = buffer.decode().splitlines()[:3]
    return dict(line.split("=", 1) for line in lines)


def test_cli_announces_serves_signed_calls_and_exits_cleanly_on_sigterm(tmp_path):
    state_file = tmp_path / "cli-state.json"
    command = [
        sys.executable, "-m", "simulator", "--port", "0", "--seed", "7", "--speed", "0",
        "--start", "2026-03-02T06:00:00Z", "--state", str(state_file),
        "--api-key", "cliKey==", "--api-secret", "cli-secret-value", "--log-level", "DEBUG",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        announced = read_announcement(proc)
        assert list(announced) == ["COINCALL_BASE_URL", "COINCALL_API_KEY_SIM", "COINCALL_API_SECRET_SIM"]
        assert announced["COINCALL_BASE_URL"].startswith("http://127.0.0.1:")
        assert (announced["COINCALL_API_KEY_SIM"], announced["COINCALL_API_SECRET_SIM"]) == (
            "cliKey==", "cli-secret-value")
        base = announced["COINCALL_BASE_URL"]
        server_time = requests.get(base + "/time", timeout=5).json()["data"]["serverTime"]
        assert server_time == SIM_START_MS
        path = "/open/auth/user/query-api"
        headers = auth.signed_headers("GET", path, {}, "cliKey==", "cli-secret-value", server_time)
        envelope = requests.get(base + path, headers=headers, timeout=5).json()
        assert envelope["code"] == 0 and envelope["data"]["apiKey"] == "cliKey=="
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode()
    assert "cli-secret-value" not in stderr  # the secret goes to stdout only, never to logs
    assert load_state_file(state_file)["saved_at_ms"] == SIM_START_MS
    proc.stdout.close()
    proc.stderr.close()


def test_cli_fault_rate_fails_that_share_of_requests_with_the_chosen_modes(tmp_path):
    """``--fault-rate 1 --fault-modes http_5xx``: every routed request answers 5xx (campaigns use ~3 %)."""
    command = [sys.executable, "-m", "simulator", "--port", "0", "--seed", "7", "--speed", "0",
               "--start", "2026-03-02T06:00:00Z", "--fault-rate", "1", "--fault-modes", "http_5xx",
               "--log-level", "WARNING"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = read_announcement(proc)["COINCALL_BASE_URL"]
        answers = [requests.get(base + "/time", timeout=5).status_code for _ in range(5)]
        assert all(status >= 500 for status in answers), answers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("argv", [["--fault-rate", "1.5"], ["--fault-modes", "http_5xx,nonsense"]])
def test_cli_refuses_a_fault_rate_outside_0_1_and_unknown_modes(argv):
    from simulator.__main__ import main as simulator_main

    with pytest.raises(SystemExit) as exit_info:
        simulator_main(argv)
    assert exit_info.value.code == 2
