"""Shared rigs for the incident regressions (BEHAVIOUR.md section 8); this module holds no test.

Two ways to meet the simulator, both over real HTTP on 127.0.0.1 with a speed-0 clock:

* ``run_daemon``: the real daemon, ``main.main`` in-process, talking to a simulator the test
  started (``COINCALL_BASE_URL``), so the test can inspect the exchange's request log, switch
  faults on and off, and "kill" or signal the daemon at chosen simulated instants through a
  ``ScriptedClock``. Rows about restarts, gates and the process life use it.
* ``LifecycleRig``: the product's services (client, market data, ledger, executors, lifecycle)
  wired by hand to one simulator, ticked like the monitor loop. Rows about execution and
  settlement use it, because they need to reach into one trade mid-flight.

Named ``test_incident_rig`` so that it belongs to the incident files; it defines no test.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence

import main as main_module
from alerts import AlertSink
from clock import SimulatedClock
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from market_data import MarketData
from option_selection import resolve_legs
from order_ledger import OrderLedger, parse_client_order_id
from persistence import StateStore
from app import build_engines
from trade_lifecycle import LifecycleManager, TradeState

DAY = 86_400.0
OPEN_INTENTS = frozenset({1, 2})
REDUCING_INTENTS = frozenset({3, 4, 5, 6, 7, 8})


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    """Epoch seconds of a UTC wall time (tests speak in UTC, like the daemon)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc).timestamp()


# ---------------------------------------------------------------------------------------------
# A clock that runs a script
# ---------------------------------------------------------------------------------------------


class DaemonKilled(BaseException):
    """Raised from the daemon's own wait to stop it the hard way.

    A ``BaseException`` so that no ``except Exception`` of the product catches it: no shutdown
    report, no further tick, no last write. The ``finally`` blocks still close the store and
    release the lock, which the kernel also does for a real SIGKILL (flock, SQLite WAL).
    """


@dataclass(order=True)
class _Step:
    when: float
    seq: int
    action: Callable[[], Any] = field(compare=False)


class ScriptedClock(SimulatedClock):
    """A speed-0 simulated clock that runs scheduled actions when the daemon waits on it.

    The daemon's loop only moves simulated time through ``sleep``; each sleep then runs every
    action whose time has come, on the main thread (server threads also sleep on this clock
    for latency faults; they never run the script).
    """

    def __init__(self, start: float) -> None:
        super().__init__(start=start, speed=0)
        self._steps: list[_Step] = []
        self._script_lock = threading.Lock()
        self._seq = 0

    def at(self, when: float, action: Callable[[], Any]) -> None:
        """Run ``action()`` at the first wait that reaches simulated time ``when``."""
        with self._script_lock:
            self._seq += 1
            self._steps.append(_Step(float(when), self._seq, action))
            self._steps.sort()

    def kill_at(self, when: float) -> None:
        """The daemon dies at ``when`` (see ``DaemonKilled``)."""

        def die() -> None:
            raise DaemonKilled(f"killed at {when}")

        self.at(when, die)

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if threading.current_thread() is threading.main_thread():
            self._run_due()

    def _run_due(self) -> None:
        while True:
            with self._script_lock:
                if not self._steps or self._steps[0].when > self.now():
                    return
                step = self._steps.pop(0)
            step.action()


# ---------------------------------------------------------------------------------------------
# The daemon in-process against a test simulator
# ---------------------------------------------------------------------------------------------


def daemon_env(tmp_path: Path, sim: Any, **extra: str) -> dict[str, str]:
    """Environment of a paper daemon talking to ``sim`` (its own simulator, not an embedded one)."""
    return {
        "TRADING_ENVIRONMENT": "sim",
        "COINCALL_BASE_URL": sim.base_url,
        "COINCALL_API_KEY_SIM": sim.api_key,
        "COINCALL_API_SECRET_SIM": sim.api_secret,
        "LOG_DIR": str(tmp_path / "logs"),
        "STATE_DIR": str(tmp_path / "state"),
        "POLL_INTERVAL_SECONDS": "10",
        **extra,
    }


def run_daemon(argv: Sequence[str], *, clock: SimulatedClock, env: dict[str, str],
               strategies: Sequence[Callable[[], Any]]) -> int:
    """``python main.py ARGV`` in-process with the test's clock, environment and strategies."""
    return main_module.main(list(argv), clock=clock, env=env, dotenv_path=None, strategies=list(strategies))


class DaemonFiles:
    """What a daemon left in its LOG_DIR and STATE_DIR, read the way an operator would."""

    def __init__(self, tmp_path: Path) -> None:
        self.logs = tmp_path / "logs"
        self.state = tmp_path / "state"

    def log_text(self) -> str:
        return (self.logs / "trading.log").read_text(encoding="utf-8")

    def _json_lines(self, name: str) -> list[dict]:
        path = self.logs / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def alerts(self) -> list[dict]:
        return self._json_lines("alerts.log")

    def health(self) -> list[dict]:
        return self._json_lines("health.log")

    def _store(self) -> StateStore:
        return StateStore(self.state / "trader.db")

    def trades(self) -> list[dict]:
        store = self._store()
        try:
            return store.load_trades()
        finally:
            store.close()

    def runner_state(self, name: str) -> dict | None:
        store = self._store()
        try:
            return store.load_runner_state(name)
        finally:
            store.close()


# ---------------------------------------------------------------------------------------------
# Reading the exchange's request log
# ---------------------------------------------------------------------------------------------


def intent_of(record: Any) -> int:
    """The intent digit of a create request's clientOrderId (BEHAVIOUR.md 6.1)."""
    return parse_client_order_id(int(record.params["clientOrderId"])).intent


def reduce_only_flag(record: Any) -> bool:
    return str(record.params.get("reduceOnly")) in ("1", "True", "true")


def creates(sim: Any, *, since: float | None = None, until: float | None = None,
            accepted_only: bool = False) -> list[Any]:
    """Create-order requests the exchange received, optionally within [since, until) seconds."""
    out = []
    for record in sim.requests_for("create_order"):
        seconds = record.time_ms / 1000.0
        if since is not None and seconds < since:
            continue
        if until is not None and seconds >= until:
            continue
        if accepted_only and not (record.http_status == 200 and record.code == 0):
            continue
        out.append(record)
    return out


def exchange_orders_of(sim: Any, trade_seq: int) -> list[dict]:
    """The exchange's own view of every order of one trade (its truth, not our ledger's)."""
    return [o for o in sim.exchange.orders()
            if o.get("clientOrderId") and parse_client_order_id(int(o["clientOrderId"])).trade_seq == trade_seq]


def exchange_cash(orders: Iterable[dict]) -> tuple[float, float]:
    """Signed cash flows (sell +, buy -) and fees of exchange orders, computed independently."""
    cash = fees = 0.0
    for order in orders:
        signed = float(order["avgPrice"]) * float(order["fillQty"])
        cash += signed if int(order["tradeSide"]) == 2 else -signed
        fees += float(order["fee"])
    return cash, fees


# ---------------------------------------------------------------------------------------------
# The lifecycle wired by hand
# ---------------------------------------------------------------------------------------------


class LifecycleRig:
    """Product services wired to one simulator, plus a tick driver like PositionMonitor's loop."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.clock = sim.clock
        self.client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                                     Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
        self.market = MarketData(self.client, sim.clock)
        self.store = StateStore(":memory:")
        self.alerts = AlertSink(None, sim.clock)
        self.ledger = OrderLedger(self.client, sim.clock, store=self.store)
        self.executor = build_engines(self.client, self.ledger, self.market, sim.clock)
        self.manager = LifecycleManager(ledger=self.ledger, executor=self.executor, market=self.market,
                                        client=self.client, clock=sim.clock, store=self.store, alerts=self.alerts)
        self.snapshot: Any = None
        self.last_poll: float | None = None
        self.opened: list = []
        self.closed: list = []
        self.after_tick: list[Callable[[], Any]] = []

    def close(self) -> None:
        self.client.close()
        self.store.close()

    def poll(self) -> None:
        """A poll tick: a new snapshot object, on which the lifecycle evaluates exits."""
        self.snapshot = SimpleNamespace(timestamp=self.clock.now(), net_delta=0.0, positions=())
        self.last_poll = self.clock.now()
        self.manager.tick(self.snapshot)

    def tick(self, poll_interval: float) -> None:
        if self.last_poll is None or self.clock.now() - self.last_poll >= poll_interval:
            self.poll()
        else:
            self.manager.tick(self.snapshot)
        for check in self.after_tick:
            check()

    def drive(self, seconds: float, until: Callable[[], bool] | None = None, *, step: float = 2.0,
              poll_interval: float = 10.0, idle_step: float | None = None) -> bool:
        """Wake every ``step`` s (``idle_step`` while no job runs); stop early once ``until()`` holds."""
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            busy = self.manager.has_active_jobs()
            wait = step if busy or idle_step is None else idle_step
            self.clock.advance(min(wait, max(end - self.clock.now(), 0.001)))
            self.tick(poll_interval if busy or idle_step is None else min(poll_interval, idle_step))
            if until is not None and until():
                return True
        return until() if until is not None else True

    def create(self, specs: Any, strategy: str = "incident", **kwargs: Any):
        legs = resolve_legs(specs, self.market)
        return self.manager.create(strategy, legs, on_opened=self.opened.append, on_closed=self.closed.append,
                                   **kwargs)

    def open(self, specs: Any, **kwargs: Any):
        trade = self.create(specs, **kwargs)
        assert self.drive(180, until=lambda: trade.state is not TradeState.OPENING), trade.state
        assert trade.state is TradeState.OPEN, (trade.state, trade.failure_reason)
        return trade

    def trade_states(self, trade_id: str) -> list[str]:
        """Every state the store saw the trade in, in order (the event journal)."""
        states: list[str] = []
        for event in self.store.events("trade"):
            payload = event["payload"]
            if payload.get("trade_id") == trade_id and (not states or states[-1] != payload.get("state")):
                states.append(payload.get("state"))
        return states
