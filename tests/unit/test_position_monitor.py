"""PositionMonitor, the daemon's scheduler (BEHAVIOUR.md 6.0, 7.1, 7.3).

The monitor is exercised with a scripted account manager on a speed-0 SimulatedClock: every
wait moves simulated time instantly and the tests assert exactly when polls happened.
(Moved from test_account_manager.py with the class; the assertions are unchanged.)
"""
from __future__ import annotations

import logging
import threading
from collections import deque

import pytest

from account_manager import AccountSnapshot
from clock import SimulatedClock
from errors import ConfigError, SnapshotError
from position_monitor import PositionMonitor

START = 1772431200.0  # 2026-03-02 06:00:00 UTC


@pytest.fixture
def clock():
    return SimulatedClock(start=START, speed=0)


def make_snapshot(timestamp: float, equity: float = 1000.0) -> AccountSnapshot:
    return AccountSnapshot.build(equity=equity, available_margin=equity, initial_margin=0.0, maintenance_margin=0.0,
                                 unrealized_pnl=0.0, positions=(), timestamp=timestamp)


class FakeReachability:
    def __init__(self):
        self.is_up = True


class ScriptedAccountManager:
    """Returns fresh snapshots, or raises the SnapshotErrors queued in ``failures``."""

    def __init__(self, clock, tick_cost: float = 0.0):
        self.clock = clock
        self.calls: list[float] = []
        self.failures: deque[SnapshotError | None] = deque()
        self.reachability = FakeReachability()
        self.tick_cost = tick_cost
        self.called = threading.Event()

    def snapshot(self) -> AccountSnapshot:
        now = self.clock.now()
        self.calls.append(now)
        self.called.set()
        if self.tick_cost:
            self.clock.advance(self.tick_cost)
        if self.failures:
            failure = self.failures.popleft()
            if failure is not None:
                raise failure
        return make_snapshot(now)


class Recorder:
    """A monitor callback (``seams.MonitorCallback``) that logs each snapshot and ignores errors."""

    def __init__(self, name, log, fail_times=0):
        self.name, self.log, self.fail_times = name, log, fail_times
        self.callback_name = f"Recorder[{name}]"

    def __call__(self, snap):
        self.log.append((self.name, snap))
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError(f"{self.name} broke")

    def on_snapshot_error(self, err):
        pass


class ErrorAware(Recorder):
    def on_snapshot_error(self, err):
        self.log.append((self.name + ".error", err))


class Callback:
    """A plain function as a monitor callback, named after it; a failed poll is ignored."""

    def __init__(self, function):
        self.function = function
        self.callback_name = function.__name__

    def __call__(self, snap):
        self.function(snap)

    def on_snapshot_error(self, err):
        pass


@pytest.fixture
def manager(clock):
    return ScriptedAccountManager(clock)


def test_callbacks_run_in_registration_order_with_the_snapshot(clock, manager):
    log = []
    monitor = PositionMonitor(manager, clock)
    for name in ("lifecycle", "runner_a", "runner_b"):
        monitor.register(Recorder(name, log))

    assert monitor.run_once() is True

    assert [name for name, _ in log] == ["lifecycle", "runner_a", "runner_b"]
    assert all(snap is monitor.latest for _, snap in log)
    assert monitor.latest.timestamp == START


def test_a_failing_callback_is_isolated_and_logged_with_traceback(clock, manager, caplog):
    log = []
    monitor = PositionMonitor(manager, clock)
    monitor.register(Recorder("broken", log, fail_times=1))
    monitor.register(Recorder("healthy", log))
    with caplog.at_level(logging.ERROR, logger="position_monitor"):
        monitor.run_once()
    assert [name for name, _ in log] == ["broken", "healthy"]
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert failures and failures[0].exc_info is not None
    assert "broken broke" in caplog.text


def test_three_consecutive_failures_raise_one_health_warning_and_success_resets(clock, manager, caplog):
    alerts = []
    log = []
    monitor = PositionMonitor(manager, clock, on_alert=lambda kind, detail: alerts.append((kind, detail)))
    flaky = Recorder("flaky", log, fail_times=2)
    monitor.register(flaky)

    monitor.run_once()
    monitor.run_once()
    monitor.run_once()  # success: the streak of 2 is reset
    flaky.fail_times = 2
    monitor.run_once()
    monitor.run_once()
    assert alerts == []
    assert monitor.failing_callbacks == {}
    monitor.run_once()  # success again: streak back to 0

    flaky.fail_times = 3
    with caplog.at_level(logging.WARNING, logger="position_monitor"):
        monitor.run_once()
        monitor.run_once()
        assert alerts == []
        monitor.run_once()
    assert len(alerts) == 1
    kind, detail = alerts[0]
    assert kind == "callback_failing" and "Recorder" in detail and "3 times" in detail
    assert "HEALTH: monitor callback" in caplog.text
    assert list(monitor.failing_callbacks.values()) == [3]

    flaky.fail_times = 1
    monitor.run_once()
    assert len(alerts) == 1  # no repeated warning while it keeps failing
    monitor.run_once()
    assert monitor.failing_callbacks == {}


def test_warning_names_the_failing_callback(clock, manager):
    alerts = []

    def strategy_tick(snap):
        raise ValueError("bad strategy")

    monitor = PositionMonitor(manager, clock, on_alert=lambda kind, detail: alerts.append(detail))
    monitor.register(Callback(strategy_tick))
    for _ in range(3):
        monitor.run_once()
    assert len(alerts) == 1 and "strategy_tick" in alerts[0]


def test_failed_snapshot_gives_callbacks_no_snapshot_only_the_error(clock, manager, caplog):
    log = []
    monitor = PositionMonitor(manager, clock)
    monitor.register(Recorder("plain", log))
    monitor.register(ErrorAware("aware", log))
    monitor.run_once()
    good = monitor.latest
    log.clear()

    error = SnapshotError("positions request failed: HTTP 503")
    manager.failures.append(error)
    with caplog.at_level(logging.WARNING, logger="position_monitor"):
        assert monitor.run_once() is False

    assert log == [("aware.error", error)]
    assert monitor.latest is good          # the last good snapshot stays, nothing fabricated
    assert monitor.last_error is error and monitor.current_error is error
    assert monitor.last_error_at == START + 10.0
    assert "no decision" in caplog.text

    assert monitor.run_once() is True     # next poll succeeds: everyone gets the new snapshot
    assert monitor.current_error is None and monitor.last_error is error  # health shows the present
    assert [name for name, _ in log[1:]] == ["plain", "aware"]
    assert log[1][1] is monitor.latest and monitor.latest.timestamp == START + 20.0


def test_idle_cadence_polls_every_poll_interval(clock, manager):
    monitor = PositionMonitor(manager, clock, poll_interval=10.0, exec_tick_interval=2.0)
    for _ in range(3):
        monitor.run_once()
    assert manager.calls == [START, START + 10, START + 20]
    assert clock.now() == START + 30


def test_busy_cadence_wakes_every_exec_tick_and_polls_every_poll_interval(clock, manager):
    seen = []
    busy = {"on": True}
    monitor = PositionMonitor(manager, clock, poll_interval=10.0, exec_tick_interval=2.0)
    monitor.set_busy(lambda: busy["on"])
    monitor.register(Callback(lambda snap: seen.append((clock.now(), snap))))

    fresh = [monitor.run_once() for _ in range(6)]

    assert [t - START for t, _ in seen] == [0, 2, 4, 6, 8, 10]
    assert manager.calls == [START, START + 10]
    assert fresh == [True, False, False, False, False, True]
    # Between polls the callbacks get the same snapshot object again.
    assert all(snap is seen[0][1] for _, snap in seen[:5])
    assert seen[5][1].timestamp == START + 10

    busy["on"] = False
    monitor.run_once()   # at t+12: no poll due, idle wait measured from this tick
    monitor.run_once()   # at t+22: poll
    assert clock.now() == START + 32
    assert manager.calls == [START, START + 10, START + 22]


def test_busy_predicate_that_raises_counts_as_busy(clock, manager):
    monitor = PositionMonitor(manager, clock)
    monitor.set_busy(lambda: 1 / 0)
    assert monitor.current_interval() == 2.0
    monitor.set_busy(None)
    assert monitor.current_interval() == 10.0


@pytest.mark.parametrize("poll, expected", [(10.0, 30.0), (30.0, 60.0), (120.0, 120.0)])
def test_exchange_down_backs_off_polling(clock, manager, poll, expected):
    monitor = PositionMonitor(manager, clock, poll_interval=poll, exec_tick_interval=2.0)
    manager.reachability.is_up = False
    assert monitor.effective_poll_interval() == expected
    monitor.run_once()
    monitor.run_once()
    assert manager.calls == [START, START + expected]

    manager.reachability.is_up = True
    monitor.run_once()
    monitor.run_once()
    assert manager.calls[-1] - manager.calls[-2] == poll


def test_tick_longer_than_poll_interval_is_a_warning(clock, caplog):
    slow = ScriptedAccountManager(clock, tick_cost=15.0)
    monitor = PositionMonitor(slow, clock, poll_interval=10.0)
    with caplog.at_level(logging.WARNING, logger="position_monitor"):
        monitor.run_once()
    assert "longer than the poll interval" in caplog.text
    # The next wake is due already: no extra wait after an overlong tick.
    assert clock.now() == START + 15.0


def test_snapshot_on_demand_updates_latest_and_raises_on_failure(clock, manager):
    monitor = PositionMonitor(manager, clock)
    assert monitor.latest is None
    snap = monitor.snapshot()
    assert monitor.latest is snap
    manager.failures.append(SnapshotError("summary down"))
    with pytest.raises(SnapshotError):
        monitor.snapshot()
    assert monitor.latest is snap


def test_invalid_intervals_are_config_errors(clock, manager):
    with pytest.raises(ConfigError, match="poll_interval"):
        PositionMonitor(manager, clock, poll_interval=0)
    with pytest.raises(ConfigError, match="exec_tick_interval"):
        PositionMonitor(manager, clock, exec_tick_interval=-1)


def test_start_runs_one_daemon_thread_and_stop_joins_it(clock, manager):
    seen = threading.Event()
    monitor = PositionMonitor(manager, clock)
    monitor.register(Callback(lambda snap: seen.set()))

    monitor.start()
    monitor.start()  # second start is a no-op: still one thread
    threads = [t for t in threading.enumerate() if t.name == "position-monitor"]
    assert len(threads) == 1 and threads[0].daemon
    assert seen.wait(timeout=5.0)
    assert monitor.is_running

    monitor.stop()
    assert not monitor.is_running
    assert not threads[0].is_alive()
    assert monitor.latest is not None


def test_loop_survives_an_unexpected_error(clock):
    class Exploding(ScriptedAccountManager):
        def snapshot(self):
            self.calls.append(self.clock.now())
            if len(self.calls) >= 3:
                self.called.set()
            raise RuntimeError("bug, not a SnapshotError")

    broken = Exploding(clock)
    monitor = PositionMonitor(broken, clock)
    monitor.start()
    try:
        assert broken.called.wait(timeout=5.0)  # kept looping after the first crash
    finally:
        monitor.stop()
    assert not monitor.is_running
