"""The daemon loop never stops supervising silently (audit of the monitor loop, 2026-12-07).

* A poll that fails on an unexpected error (a bug, not an outage) is delivered like any failed
  poll: every callback still runs (``on_snapshot_error``), and a person is told at once (CRITICAL).
* A callback failing in a row is CRITICAL: with the default ``NOTIFY_MIN_LEVEL=CRITICAL`` it
  reaches the operator's phone, not only alerts.log.
* Each step of ``app.daemon_loop`` has its own guard: a health line that fails on every wake no
  longer starves the per-wake hook, and a streak of failures is a CRITICAL ``loop_step_failing``.
* An unexpected error in the run is written to trading.log and ends with exit 1 (restartable),
  never an exception out of ``main``.
"""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import app
import main as main_module
from account_manager import AccountSnapshot
from alerts import AlertSink
from app import alert_hook, notify_alerts
from clock import SimulatedClock
from coincall_client import Reachability
from health import HealthReporter
from loop_guard import ALERT_AFTER, REALERT_SECONDS, StepGuard
from notifications import DEFAULT_MIN_LEVEL, build_notifier
from position_monitor import PositionMonitor
from stop_flag import StopFlag

START = datetime(2026, 3, 3, 10, 0, tzinfo=timezone.utc).timestamp()


def good_snapshot(clock: SimulatedClock) -> AccountSnapshot:
    return AccountSnapshot.build(equity=1000.0, available_margin=900.0, initial_margin=100.0, maintenance_margin=50.0,
                                 unrealized_pnl=0.0, positions=(), timestamp=clock.now())


class Account:
    """Good polls, then ``bug`` raised by every poll from ``fail_from`` on (a parsing bug, say)."""

    def __init__(self, clock: SimulatedClock, fail_from: int = 10**9, fail_until: int = 10**9) -> None:
        self.clock, self.fail_from, self.fail_until = clock, fail_from, fail_until
        self.reachability = Reachability()
        self.calls = 0

    def snapshot(self) -> AccountSnapshot:
        self.calls += 1
        if self.fail_from <= self.calls < self.fail_until:
            raise KeyError("equity")
        return good_snapshot(self.clock)


class Recorder:
    callback_name = "recorder"

    def __init__(self) -> None:
        self.snapshots: list[AccountSnapshot] = []
        self.errors: list[Exception] = []

    def __call__(self, snapshot: AccountSnapshot) -> None:
        self.snapshots.append(snapshot)

    def on_snapshot_error(self, error: Exception) -> None:
        self.errors.append(error)


def test_a_poll_failing_on_a_bug_still_runs_every_callback_and_alerts_critical_once():
    clock = SimulatedClock(start=START, speed=0)
    account = Account(clock, fail_from=2, fail_until=30)
    warnings: list[tuple[str, str]] = []
    critical: list[tuple[str, str]] = []
    monitor = PositionMonitor(account, clock, poll_interval=10.0, on_alert=lambda *a: warnings.append(a),
                              on_critical=lambda *a: critical.append(a))
    recorder = Recorder()
    monitor.register(recorder)
    for _ in range(20):
        monitor.run_once()
    assert account.calls == 20 and len(recorder.snapshots) == 1
    assert len(recorder.errors) == 19                    # every wake still reached the callbacks
    assert "KeyError" in str(recorder.errors[0]) and monitor.current_error is not None
    assert [kind for kind, _ in critical] == ["snapshot_unexpected_error"]   # once per streak
    assert "KeyError" in critical[0][1] and warnings == []
    for _ in range(12):                                  # polls 21-32: back from poll 30 on
        monitor.run_once()
    assert monitor.current_error is None and len(recorder.snapshots) == 1 + 3
    assert len(critical) == 1


def test_a_callback_failing_in_a_row_reaches_the_notifier_at_the_default_level(tmp_path):
    clock = SimulatedClock(start=START, speed=0)
    sink = AlertSink(tmp_path, clock)
    notifier = build_notifier(clock, telegram_bot_token=None, telegram_chat_id=None,
                              webhook_url="http://127.0.0.1:9/hook", min_level=DEFAULT_MIN_LEVEL)
    notify_alerts(sink, notifier)   # queued only: the notifier's thread is never started here

    class BrokenLifecycle(Recorder):
        callback_name = "LifecycleManager"

        def __call__(self, snapshot: AccountSnapshot) -> None:
            raise RuntimeError("exit engine bug")

    monitor = PositionMonitor(Account(clock), clock, poll_interval=10.0, on_alert=alert_hook(sink),
                              on_critical=alert_hook(sink, "CRITICAL"))
    monitor.register(BrokenLifecycle())
    for _ in range(3):
        monitor.run_once()
    failing = [alert for alert in sink.recent(10) if alert.kind == "callback_failing"]
    assert len(failing) == 1 and failing[0].level == "CRITICAL" and "LifecycleManager" in failing[0].message
    assert notifier.stats().queued == 1


def test_build_context_wires_the_monitor_s_critical_alerts_at_critical(tmp_path):
    ctx = app.open_context(app.load_settings({"TRADING_ENVIRONMENT": "sim", "STATE_DIR": str(tmp_path / "s"),
                                              "LOG_DIR": str(tmp_path / "l")}, dotenv_path=None),
                           SimulatedClock(start=START, speed=0), state_dir=":memory:")
    try:
        ctx.position_monitor._critical("callback_failing", "probe")
        assert [(a.kind, a.level) for a in ctx.alerts.recent(5)] == [("callback_failing", "CRITICAL")]
    finally:
        ctx.close()


class FakeAlerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def alert(self, level: str, kind: str, message: str, **detail: object) -> None:
        self.sent.append((level, kind, message))


def test_a_health_line_failing_on_every_wake_starves_nothing_and_alerts(tmp_path, monkeypatch):
    def broken_health_state(ctx, runners, started_at):
        raise AttributeError("'NoneType' object has no attribute 'summary'")

    monkeypatch.setattr(app, "health_state", broken_health_state)
    clock = SimulatedClock(start=START, speed=0)
    alerts = FakeAlerts()
    monitor = PositionMonitor(Account(clock), clock, poll_interval=10.0)
    ctx = SimpleNamespace(clock=clock, position_monitor=monitor, health=HealthReporter(clock, tmp_path), alerts=alerts,
                          http=SimpleNamespace(sync_time_if_due=lambda: None))
    wakes: list[float] = []
    app.daemon_loop(ctx, [], StopFlag(), run_for=600.0, on_wake=wakes.append)
    assert len(wakes) >= 59                          # one per wake (10 s poll, 600 s)
    assert [(level, kind) for level, kind, _ in alerts.sent] == [("CRITICAL", "loop_step_failing")]
    assert "health" in alerts.sent[0][2] and "AttributeError" in alerts.sent[0][2]


def test_a_step_guard_alerts_after_a_streak_again_hourly_and_says_when_it_recovers():
    clock = SimulatedClock(start=START, speed=0)
    alerts = FakeAlerts()
    guard = StepGuard("per-wake", clock, alerts)
    outcome = {"fail": True}

    def step() -> str:
        if outcome["fail"]:
            raise OSError("disk full")
        return "ok"

    for _ in range(ALERT_AFTER - 1):
        assert guard.run(step) is None
        clock.advance(10)
    assert alerts.sent == []
    guard.run(step)
    assert [kind for _, kind, _ in alerts.sent] == ["loop_step_failing"]
    for _ in range(int(REALERT_SECONDS // 10) - 1):
        clock.advance(10)
        guard.run(step)
    assert len(alerts.sent) == 1                     # not every wake
    clock.advance(20)
    guard.run(step)
    assert len(alerts.sent) == 2                     # again an hour on
    outcome["fail"] = False
    assert guard.run(step) == "ok" and guard.failures == 0
    assert alerts.sent[-1][:2] == ("WARNING", "loop_step_recovered")


def test_an_unexpected_error_in_the_run_is_in_trading_log_and_exits_1(tmp_path, monkeypatch, capsys):
    def broken_step(*args, **kwargs):
        raise RuntimeError("UNEXPECTED-BOOM-7f3a")

    monkeypatch.setattr(app, "pause_if_unsafe", broken_step)
    env = {"TRADING_ENVIRONMENT": "sim", "LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state")}
    code = main_module.main(["--run-for", "30"], clock=SimulatedClock(start=START, speed=0), env=env,
                            dotenv_path=None, strategies=[])
    assert code == 1
    log = (tmp_path / "logs" / "trading.log").read_text(encoding="utf-8")
    assert "UNEXPECTED-BOOM-7f3a" in log and "Traceback" in log and "stopped on an unexpected error" in log
    assert "unexpected error" in capsys.readouterr().err
