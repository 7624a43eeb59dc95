"""`python main.py` run in-process: embedded simulator, real client over loopback, simulated time."""
from __future__ import annotations

import signal
import threading
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

import app
import exchange_connection
import main as main_module
from clock import SimulatedClock
from config import load_settings
from stop_flag import StopFlag

# Tuesday 2026-03-03 10:00 UTC: a normal trading hour, away from the 08:00 expiry.
START = datetime(2026, 3, 3, 10, 0, 0, tzinfo=timezone.utc).timestamp()

PROD_ENV = {
    "TRADING_ENVIRONMENT": "production",
    "COINCALL_API_KEY_PROD": "PRODKEYabcdefghijklmnopqrstuvwxyz0123456789==",
    "COINCALL_API_SECRET_PROD": "prod-secret-never-printed-0xdeadbeef",
}


def sim_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "TRADING_ENVIRONMENT": "sim",
        "LOG_DIR": str(tmp_path / "logs"),
        "STATE_DIR": str(tmp_path / "state"),
        **extra,
    }


def read_log(tmp_path: Path) -> str:
    return (tmp_path / "logs" / "trading.log").read_text(encoding="utf-8")


def status_lines(log: str) -> list[str]:
    # The status line has no time of its own (issue 12): the log line's stamp is its time.
    return [line for line in log.splitlines() if " app: status " in line]


@pytest.fixture
def forbid_exchange(monkeypatch):
    """Fails the test if main tries to open any exchange connection."""
    opened: list[object] = []

    def refuse(*args, **kwargs):
        opened.append(args)
        raise AssertionError("the exchange must not be opened")

    monkeypatch.setattr(exchange_connection, "open_exchange", refuse)
    return opened


def test_main_runs_on_the_embedded_simulator_and_stops_after_run_for(tmp_path):
    clock = SimulatedClock(start=START, speed=0)

    # No strategies: this test is about the connection, the summaries and the poll cadence.
    code = main_module.main(["--run-for", "120"], clock=clock, env=sim_env(tmp_path), dotenv_path=None,
                            strategies=[])

    assert code == 0
    log = read_log(tmp_path)
    assert "PAPER TRADING on the embedded simulator" in log
    assert "environment=sim" in log
    assert "account: equity=" in log and "available_margin=" in log and "IM=" in log and "MM=" in log
    market = next(line for line in log.splitlines() if "market: BTC index=" in line)
    assert "index=n/a" not in market and "expiries=" in market
    chain = next(line for line in log.splitlines() if "chain: nearest expiry" in line)
    assert "ATM strike" in chain and "CALL bid" in chain and "PUT bid" in chain and "delta" in chain
    lines = status_lines(log)
    # Polls at t = 0, 10, ..., 110 simulated seconds; the run ends when the clock reaches 120.
    assert len(lines) == 12
    assert lines[0].startswith("2026-03-03 10:00:00 ") and lines[-1].startswith("2026-03-03 10:01:50 ")
    assert all("exchange=UP" in line and "equity=n/a" not in line and "positions=0" in line for line in lines)
    assert "stopping: --run-for 120s of simulated time elapsed" in log
    assert "stopped cleanly" in log
    assert clock.now() == pytest.approx(START + 120)
    # The paper account is saved for the next start.
    assert (tmp_path / "state" / "simulator.json").is_file()


def test_log_lines_carry_utc_timestamps(tmp_path):
    main_module.main(["--run-for", "10"], clock=SimulatedClock(start=START, speed=0), env=sim_env(tmp_path), dotenv_path=None)
    first = read_log(tmp_path).splitlines()[0]
    stamp = " ".join(first.split(" ", 2)[:2])
    # One time per line: the run's (simulated) clock, in UTC, "2026-03-03 10:00:00" (issue 12).
    assert datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp() == START


def test_a_second_start_restores_the_paper_account(tmp_path):
    env = sim_env(tmp_path)
    assert main_module.main(["--run-for", "10"], clock=SimulatedClock(start=START, speed=0), env=env, dotenv_path=None) == 0
    saved = (tmp_path / "state" / "simulator.json").read_bytes()
    assert saved
    assert main_module.main(["--run-for", "10"], clock=SimulatedClock(start=START + 60, speed=0), env=env, dotenv_path=None) == 0
    assert "account: equity=" in read_log(tmp_path)


def test_sigterm_stops_the_loop_with_exit_zero(tmp_path):
    """A real SIGTERM delivered to this process during the loop ends the run cleanly."""

    class SignallingClock(SimulatedClock):
        def __init__(self) -> None:
            super().__init__(start=START, speed=0)
            self.slept = 0.0

        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            self.slept += seconds
            if self.slept >= 35:  # after the fourth poll
                signal.raise_signal(signal.SIGTERM)

    assert threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    code = main_module.main([], clock=SignallingClock(), env=sim_env(tmp_path), dotenv_path=None)

    assert code == 0
    log = read_log(tmp_path)
    assert "stopping: SIGTERM" in log
    # one status line a poll at most (10 s); a job's own wake in between (an open filling) prints none
    assert 3 <= len(status_lines(log)) <= 5
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored


def test_invalid_configuration_exits_2_before_starting_anything(tmp_path, capsys, forbid_exchange):
    code = main_module.main([], env=sim_env(tmp_path, TRADING_ENVIRONMENT="prod"), dotenv_path=None)

    assert code == 2
    assert forbid_exchange == []
    err = capsys.readouterr().err
    assert "TRADING_ENVIRONMENT='prod' is not valid: use sim, testnet or production" in err
    assert not (tmp_path / "logs").exists()
    assert not (tmp_path / "state").exists()


def test_missing_production_keys_exit_2(tmp_path, capsys, forbid_exchange):
    code = main_module.main([], env=sim_env(tmp_path, TRADING_ENVIRONMENT="production"), dotenv_path=None)
    assert code == 2
    assert "COINCALL_API_KEY_PROD and COINCALL_API_SECRET_PROD" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--speed", "60"], ["--run-for", "30"], ["run", "--speed", "2", "--run-for", "5"]])
def test_simulated_time_flags_are_refused_outside_sim(tmp_path, capsys, forbid_exchange, flags):
    env = {**PROD_ENV, "LOG_DIR": str(tmp_path / "logs")}
    code = main_module.main(flags, env=env, dotenv_path=None)
    assert code == 2
    err = capsys.readouterr().err
    assert "--speed and --run-for" in err and "TRADING_ENVIRONMENT=sim" in err
    assert PROD_ENV["COINCALL_API_SECRET_PROD"] not in err


def test_bad_flag_values_are_usage_errors(tmp_path, forbid_exchange):
    env = sim_env(tmp_path)
    assert main_module.main(["--speed", "0"], env=env, dotenv_path=None) == 2
    assert main_module.main(["--run-for", "-5"], env=env, dotenv_path=None) == 2
    assert main_module.main(["rnu"], env=env, dotenv_path=None) == 2


def test_help_exits_zero(capsys):
    assert main_module.main(["--help"]) == 0
    assert "run" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "speed", "run_for"),
    [([], None, None), (["run"], None, None), (["--speed", "60"], 60.0, None), (["run", "--run-for", "5"], None, 5.0)],
)
def test_missing_subcommand_means_run(argv, speed, run_for):
    args = main_module.parse_args(argv)
    assert args.command == "run" and args.speed == speed and args.run_for == run_for


def test_choose_clock_uses_simulated_time_only_in_sim():
    sim_settings = load_settings({}, dotenv_path=None)
    prod_settings = load_settings(PROD_ENV, dotenv_path=None)
    sim_clock = app.choose_clock(sim_settings, 60.0, None)
    assert isinstance(sim_clock, SimulatedClock) and sim_clock.lockstep and sim_clock.pace == 60.0
    assert app.choose_clock(sim_settings, None, None).pace == 1.0
    assert not isinstance(app.choose_clock(prod_settings, None, None), SimulatedClock)


class FlakyMonitor:
    """Stands in for PositionMonitor: every other iteration raises; the others take one poll."""

    poll_interval = 10.0

    def __init__(self, clock: SimulatedClock) -> None:
        self.clock = clock
        self.calls = 0
        self.stop_check = None

    def set_stop_check(self, check) -> None:
        self.stop_check = check

    def run_once(self) -> bool:
        self.calls += 1
        if self.calls % 2 == 0:
            raise RuntimeError("a bug, not an exchange error")
        self.clock.advance(self.poll_interval)
        return True


def test_errors_inside_the_loop_are_logged_and_the_loop_keeps_polling(caplog, monkeypatch):
    clock = SimulatedClock(start=START, speed=0)
    monitor = FlakyMonitor(clock)
    reports: list[dict] = []
    ctx = SimpleNamespace(clock=clock, position_monitor=monitor, health=SimpleNamespace(due=lambda: True,
                                                                                  maybe_report=reports.append),
                          alerts=None)
    monkeypatch.setattr(app, "health_state", lambda ctx, runners, started_at: {"at": ctx.clock.now()})
    stop = StopFlag()

    with caplog.at_level("ERROR"):
        app.daemon_loop(ctx, [], stop, run_for=100)

    assert monitor.calls == 10  # t = 0..100: a failed iteration waits one poll interval, then goes on
    failures = [r for r in caplog.records if "daemon loop step 'monitor' failed" in r.getMessage()]
    assert len(failures) == 5 and failures[0].exc_info is not None  # logged with its traceback
    assert len(reports) == 10  # the health line is offered after every wake, failed ones included
    assert clock.now() == START + 100 and stop.reason == "--run-for 100s of simulated time elapsed"
    assert monitor.stop_check is None  # the wait's stop check is removed on the way out


def test_stop_flag_interrupts_the_wait_between_polls():
    clock = SimulatedClock(start=START, speed=0)
    stop = StopFlag()
    stop.request("SIGINT")
    app.wait_until(clock, START + 3600, stop)
    assert clock.now() == START
    assert stop.reason == "SIGINT"


def test_main_talks_to_an_external_simulator_when_base_url_is_set(tmp_path, sim):
    """`python -m simulator` elsewhere + the three .env lines: no embedded simulator is started."""
    env = sim_env(
        tmp_path,
        COINCALL_BASE_URL=sim.base_url,
        COINCALL_API_KEY_SIM=sim.api_key,
        COINCALL_API_SECRET_SIM=sim.api_secret,
    )
    code = main_module.main(["--run-for", "30"], clock=sim.clock, env=env, dotenv_path=None, strategies=[])

    assert code == 0
    log = read_log(tmp_path)
    assert f"PAPER TRADING on the simulator at {sim.base_url}" in log
    assert "embedded simulator listening" not in log
    assert "account: equity=" in log and len(status_lines(log)) == 3  # polls at t = 0, 10, 20
    assert sim.api_secret not in log
    assert not (tmp_path / "state" / "simulator.json").exists()  # the external one keeps its own state
    assert sim.counts["account_summary"] >= 4  # start-up + 3 polls reached the external simulator


def test_a_wrong_key_for_the_external_simulator_exits_2(tmp_path, sim):
    env = sim_env(
        tmp_path,
        COINCALL_BASE_URL=sim.base_url,
        COINCALL_API_KEY_SIM="WRONGKEYabcdefghijklmnopqrstuvwxyz012345==",
        COINCALL_API_SECRET_SIM="wrong-secret-0123456789",
    )
    assert main_module.main(["--run-for", "30"], clock=sim.clock, env=env, dotenv_path=None) == 2
    log = read_log(tmp_path)
    assert "refused COINCALL_API_KEY_SIM" in log
    assert "wrong-secret-0123456789" not in log


def test_open_exchange_embedded_starts_and_close_stops_the_simulator(tmp_path):
    import requests

    settings = load_settings(sim_env(tmp_path), dotenv_path=None)
    connection = exchange_connection.open_exchange(settings, SimulatedClock(start=START, speed=0))
    try:
        assert connection.is_embedded and connection.base_url.startswith("http://127.0.0.1:")
        assert connection.client.server_time() == int(START * 1000)
    finally:
        connection.close()
    connection.close()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(connection.base_url + "/time", timeout=2)
    assert settings.sim_state_file.is_file()


def test_production_builds_a_client_without_importing_the_simulator(tmp_path):
    """Run in a fresh interpreter: `simulator` must not even be loaded outside the embedded case."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from clock import RealClock\n"
        "from config import load_settings\n"
        "from exchange_connection import open_exchange\n"
        f"env = {PROD_ENV!r}\n"
        "connection = open_exchange(load_settings(env, dotenv_path=None), RealClock())\n"
        "assert connection.simulator is None and connection.base_url == 'https://api.coincall.com'\n"
        "connection.close()\n"
        "import main\n"
        "print(sorted(m for m in sys.modules if m == 'simulator' or m.startswith('simulator.')))\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_incident_45_a_second_daemon_on_the_same_state_directory_exits_3_and_sends_nothing(tmp_path, capsys, forbid_exchange):
    """Incident 45: the first daemon holds state/trader.lock; the second stops before any request."""
    from instance_lock import InstanceLock

    first = InstanceLock(tmp_path / "state")
    assert first.acquire()
    try:
        code = main_module.main(["--run-for", "10"], clock=SimulatedClock(start=START, speed=0),
                                env=sim_env(tmp_path), dotenv_path=None)
    finally:
        first.release()
    assert code == 3
    assert forbid_exchange == []  # no exchange connection, so no request
    assert "holds" in capsys.readouterr().err
    # Released: the next start gets the lock.
    again = InstanceLock(tmp_path / "state")
    assert again.acquire()
    again.release()
