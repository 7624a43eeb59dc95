"""A failing or hanging notification endpoint never delays a tick and never loses a CRITICAL alert.

The daemon's own start-up and loop (``app.run_daemon``) on the embedded simulator, on lock-step
simulated time, with Telegram and a webhook configured. The endpoints are `responses` mocks (the
simulator's loopback traffic passes through): Telegram hangs on its first request until the test
lets go, or both endpoints answer 5xx to everything. A CRITICAL alert is raised before the loop.

What must hold: every tick takes exactly the simulated time it takes without notifications (the
same ticks, the same trades: the notifier's thread never moves or blocks simulated time, and the
tick never waits for it); the whole run ends while Telegram is still hanging; the CRITICAL alert
that could not be delivered is in the log at CRITICAL with its full text.
"""
from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import responses

import notifications
from app import RunPlan, run_daemon
from clock import SimulatedClock
from config import load_settings
from persistence import StateStore
from position_monitor import PositionMonitor
from stop_flag import StopFlag
from strategies.micro_strangle import micro_strangle

# Tuesday 2026-03-03 10:00 UTC: a normal trading hour, away from the 08:00 expiry.
START = datetime(2026, 3, 3, 10, 0, 0, tzinfo=timezone.utc).timestamp()
RUN_FOR = 1500.0   # one micro_strangle round trip (15-minute hold) and more
TOKEN = "123456789:AAFsecretTOKENsecretTOKEN_abc-123"
TELEGRAM_URL = f"https://api.telegram.org/bot{TOKEN}/sendMessage"
WEBHOOK = "https://hooks.example.com/services/hookSECRETpath"
DRILL = "drill: the state database is read-only; trading continues, entries paused until it is fixed"


def run(tmp_path: Path, *, notify: bool) -> dict[str, Any]:
    """One daemon run; its tick durations (simulated seconds), trades and end time."""
    env = {"TRADING_ENVIRONMENT": "sim", "STATE_DIR": str(tmp_path / "state"), "LOG_DIR": str(tmp_path / "logs"),
           "SIM_SEED": "11"}
    if notify:
        env |= {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "-1001234567", "NOTIFY_WEBHOOK_URL": WEBHOOK}
    settings = load_settings(env, dotenv_path=None)
    clock = SimulatedClock(start=START, speed=0)
    durations: list[float] = []
    original = PositionMonitor._tick

    def timed(monitor: PositionMonitor, now: float) -> bool:
        before = clock.now()
        try:
            return original(monitor, now)
        finally:
            durations.append(clock.now() - before)

    def drill(ctx: Any) -> None:
        ctx.alerts.alert("CRITICAL", "drill", DRILL)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PositionMonitor, "_tick", timed)
        patch.setattr(notifications, "STOP_DRAIN_SECONDS", 0.5)
        code = run_daemon(settings, clock, StopFlag(), [micro_strangle()],
                          RunPlan(run_for=RUN_FOR, before_loop=drill))
    store, _ = StateStore.open(tmp_path / "state" / "trader.db", clock)
    try:
        trades = sorted((t["id"], t["state"], t.get("exit_reason"), t.get("opened_at"), t.get("closed_at"))
                        for t in store.load_trades())
    finally:
        store.close()
    events = [json.loads(line) for line in (tmp_path / "logs" / "events.jsonl").read_text().splitlines()]
    return {"code": code, "durations": durations, "trades": trades, "end": clock.now(),
            "notified": [e["event"] for e in events if e["kind"] == "trade" and e["event"].endswith("_notified")]}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run(tmp_path_factory.mktemp("quiet"), notify=False)


def critical_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL and r.name == "notifications"]


def test_the_baseline_run_trades_a_round_trip(baseline):
    assert baseline["code"] == 0
    assert any(state == "CLOSED" for _, state, *_ in baseline["trades"])
    assert baseline["notified"][:2] == ["opened_notified", "closed_notified"]


def test_a_hanging_telegram_never_delays_a_tick_and_the_critical_reaches_the_log(baseline, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    entered, release = threading.Event(), threading.Event()

    def hang(request: Any) -> tuple[int, dict, str]:
        entered.set()
        release.wait(120)
        return 200, {}, json.dumps({"ok": True})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        rsps.add_callback(responses.POST, TELEGRAM_URL, callback=hang)
        rsps.add(responses.POST, WEBHOOK, status=200)
        try:
            result = run(tmp_path, notify=True)
            still_hanging = entered.is_set() and not release.is_set()
        finally:
            release.set()

    assert result["code"] == 0
    assert still_hanging                                     # the run ended with Telegram still stuck
    assert result["durations"] == baseline["durations"]      # every tick, to the simulated second
    assert result["trades"] == baseline["trades"] and result["end"] == baseline["end"]
    # The thread is stuck in Telegram's request: the stop accounts for the drill on both senders.
    lost = [line for line in critical_lines(caplog) if DRILL in line]
    assert sorted(line.split(" (")[0] for line in lost) == ["CRITICAL notification NOT delivered to telegram",
                                                           "CRITICAL notification NOT delivered to webhook"]
    assert "notifications stopped:" in caplog.text
    assert TOKEN not in caplog.text and "hookSECRETpath" not in caplog.text


def test_failing_endpoints_are_retried_without_delaying_a_tick_and_the_critical_reaches_the_log(
        baseline, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        rsps.add(responses.POST, TELEGRAM_URL, status=502)
        rsps.add(responses.POST, WEBHOOK, status=500)
        result = run(tmp_path, notify=True)
        calls = [call.request.url for call in rsps.calls]

    assert result["code"] == 0
    assert result["durations"] == baseline["durations"]
    assert result["trades"] == baseline["trades"]
    assert calls.count(WEBHOOK) >= 2 and calls.count(TELEGRAM_URL) >= 2     # retried, then drained at the stop
    lost = [line for line in critical_lines(caplog) if DRILL in line]
    assert {("telegram" in line) for line in lost} == {True, False}         # once per sender, whole
    assert TOKEN not in caplog.text and "hookSECRETpath" not in caplog.text
