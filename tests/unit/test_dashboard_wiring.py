"""The dashboard in the daemon's run (``app._start_and_loop``): served while the loop runs,
stopped with it, and a port it cannot bind is a start-up refusal (exit 2) before the loop.

The daemon runs in-process on the embedded simulator and a speed-0 clock; "while it runs" is
inside one of the clock's waits, where the test asks the dashboard over real HTTP.
"""
from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any, Callable

import requests

import main as main_module
from clock import SimulatedClock
from tests.browser.sample_view import START

TOKEN = "wiring-test-token-0123456789"


class HookClock(SimulatedClock):
    """``at(t, fn)`` runs ``fn`` once, inside the first wait at or after simulated time t."""

    def __init__(self) -> None:
        super().__init__(start=START, speed=0)
        self._hooks: list[tuple[float, Callable[[], Any]]] = []

    def at(self, when: float, action: Callable[[], Any]) -> None:
        self._hooks.append((when, action))

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        due = [hook for hook in self._hooks if self.now() >= hook[0]]
        self._hooks = [hook for hook in self._hooks if hook not in due]
        for _, action in due:
            action()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def env_for(tmp_path: Path, port: int) -> dict[str, str]:
    return {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state"), "TRADING_ENVIRONMENT": "sim",
            "POLL_INTERVAL_SECONDS": "10", "DASHBOARD_ENABLED": "true", "DASHBOARD_TOKEN": TOKEN,
            "DASHBOARD_PORT": str(port)}


def test_the_daemon_serves_the_dashboard_while_it_runs_and_stops_it_on_the_way_out(tmp_path):
    port = free_port()
    clock = HookClock()
    seen: dict[str, Any] = {}

    def ask() -> None:
        base = f"http://127.0.0.1:{port}"
        seen["view"] = requests.get(base + "/api/view", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        seen["log"] = requests.get(base + "/api/log", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        seen["anonymous"] = requests.get(base + "/api/view", timeout=5)
        seen["threads"] = [t.name for t in threading.enumerate()]

    clock.at(START + 35, ask)
    code = main_module.main(["--run-for", "60"], clock=clock, env=env_for(tmp_path, port), dotenv_path=None,
                            strategies=[])
    assert code == 0
    view = seen["view"].json()
    assert seen["view"].status_code == 200 and view["environment"] == "sim" and view["simulated"] is True
    assert view["account"]["equity"] > 0 and view["generated_at"] >= START
    assert seen["log"].status_code == 200 and any("CoincallTrader" in line or "status" in line
                                                  for line in seen["log"].json()["lines"])
    assert seen["anonymous"].status_code == 401
    assert f"dashboard-{port}" in seen["threads"]
    assert not any(t.name == f"dashboard-{port}" for t in threading.enumerate())   # stopped with the loop
    with socket.socket() as probe:   # nothing listens there any more (closed connections may linger)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen(1)
    log = (tmp_path / "logs" / "trading.log").read_text(encoding="utf-8")
    assert f"dashboard listening on http://127.0.0.1:{port}" in log and TOKEN not in log


def test_a_port_in_use_refuses_the_start_with_exit_2_before_the_loop(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main_module.main(["--run-for", "60"], clock=SimulatedClock(start=START, speed=0),
                                env=env_for(tmp_path, port), dotenv_path=None, strategies=[])
    assert code == 2
    err = capsys.readouterr().err
    assert f"the dashboard cannot listen on 127.0.0.1:{port}" in err and "choose another DASHBOARD_PORT" in err
    log = (tmp_path / "logs" / "trading.log").read_text(encoding="utf-8")
    assert "status" not in log.split("the dashboard cannot listen")[1]   # no wake ran after the refusal
    # Refused before the first exchange request: no store opened, no paper account made, no chain read.
    assert not (tmp_path / "state" / "trader.db").exists()
    assert "simulated time" not in log and "API key" not in log
