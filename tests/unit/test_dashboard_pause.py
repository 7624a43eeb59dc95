"""The ``pause`` command: queued by the dashboard or ``python main.py pause NAME``, run by the
daemon's ``CommandProcessor`` like ``resume``; a paused runner only stops entering.

The processor runs against small fakes of the runners (as in test_commands.py); the store is
a real SQLite store, so what is asserted is what ``status`` and the dashboard read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import main as main_module
from clock import SimulatedClock
from commands import CommandError, CommandProcessor, PauseRequest, describe_command
from instance_lock import InstanceLock
from persistence import StateStore
from strategy import RunnerState

START = 1_772_528_400.0  # 2026-03-03 09:00 UTC


@dataclass
class FakeRunner:
    name: str
    paused: bool = False
    reason: str = ""
    calls: list[str] = field(default_factory=list)

    @property
    def is_paused(self) -> bool:
        return self.paused

    @property
    def pause_reason(self) -> str:
        return self.reason

    @property
    def paused_for_good(self) -> bool:
        return self.paused

    def pause(self, reason: str, *, until: float | None = None) -> None:
        self.calls.append(f"pause:{reason}")
        self.paused, self.reason = True, reason

    def resume(self) -> None:
        self.calls.append("resume")
        self.paused, self.reason = False, ""


class NoTrades:
    hold_reason: str | None = None

    def trades(self, strategy: str | None = None) -> list[Any]:
        return []

    def active_trades(self, strategy: str | None = None) -> list[Any]:
        return []

    def get(self, trade_id: str) -> None:
        return None

    def force_close(self, trade_id: str, reason: str = "manual") -> bool:
        raise AssertionError("a pause never closes a trade")

    def adopt_external(self, snapshot: Any) -> str | None:
        raise AssertionError("a pause never adopts positions")

    def release_blocks(self, strategy: str | None = None) -> list[str]:
        return []


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


@pytest.fixture
def store(clock):
    opened = StateStore(":memory:", clock=clock)
    yield opened
    opened.close()


def processor_for(store: StateStore, clock: SimulatedClock, runners: list[FakeRunner]) -> CommandProcessor:
    ctx = SimpleNamespace(
        store=store, clock=clock, lifecycle_manager=NoTrades(), ledger=SimpleNamespace(orders=lambda: []),
        account_manager=SimpleNamespace(snapshot=lambda: SimpleNamespace(positions=()),
                                        reachability=SimpleNamespace(is_up=True)),
        alerts=SimpleNamespace(alert=lambda level, kind, message, **d: None))
    return CommandProcessor(ctx, runners)


def test_pause_from_the_dashboard_pauses_the_runner_and_says_who(store, clock):
    alpha, beta = FakeRunner("alpha"), FakeRunner("beta")
    processor = processor_for(store, clock, [alpha, beta])
    command_id = store.add_command("pause", PauseRequest("alpha", "dashboard").to_payload())

    processor(object())

    assert alpha.calls == ["pause:paused from the dashboard"] and beta.calls == []
    command = store.command(command_id)
    assert command["status"] == "done"
    assert command["result"] == {"paused": ["alpha"], "reason": "paused from the dashboard"}
    assert "paused alpha (paused from the dashboard); its open trades keep their exits" in describe_command(command)
    # resume lifts a dashboard pause like any other
    resume_id = store.add_command("resume", {"strategy": "alpha"})
    processor(object())
    assert store.command(resume_id)["result"] == {"resumed": ["alpha"], "kept_paused": [], "unblocked": []} and not alpha.is_paused


def test_pause_keeps_an_existing_reason_such_as_a_kill(store, clock):
    alpha = FakeRunner("alpha", paused=True, reason="kill switch (command 1)")
    processor = processor_for(store, clock, [alpha])
    command_id = store.add_command("pause", PauseRequest("alpha").to_payload())
    processor(object())
    assert alpha.calls == [] and alpha.reason == "kill switch (command 1)"
    command = store.command(command_id)
    assert command["status"] == "done"
    assert command["result"] == {"paused": [], "already_paused": {"alpha": "kill switch (command 1)"}}
    assert "alpha was already paused (kill switch (command 1)); nothing changed" in describe_command(command)


def test_pause_of_a_strategy_known_only_to_the_store_updates_its_stored_state(store, clock):
    store.save_runner_state("retired", RunnerState(opened_today=["T000000001"]).to_dict())
    processor = processor_for(store, clock, [FakeRunner("alpha")])
    command_id = store.add_command("pause", PauseRequest("retired").to_payload())
    processor(object())
    assert store.command(command_id)["status"] == "done"
    saved = store.load_runner_state("retired")
    assert saved["paused"] is True and saved["pause_reason"] == "paused from the command line"
    assert saved["opened_today"] == ["T000000001"]  # counters kept


def test_pause_of_an_unknown_strategy_fails_with_the_known_ones(store, clock):
    processor = processor_for(store, clock, [FakeRunner("alpha")])
    command_id = store.add_command("pause", {"strategy": "nope", "source": "dashboard"})
    processor(object())
    command = store.command(command_id)
    assert command["status"] == "failed" and "no strategy 'nope'; known: alpha" in command["result"]["error"]


@pytest.mark.parametrize("payload", [{"strategy": None}, {"strategy": ""}, {"strategy": "alpha", "source": "cron"}])
def test_a_malformed_pause_fails_and_changes_nothing(store, clock, payload):
    alpha = FakeRunner("alpha")
    processor = processor_for(store, clock, [alpha])
    command_id = store.add_command("pause", payload)
    processor(object())
    assert store.command(command_id)["status"] == "failed" and alpha.calls == []


def test_pause_request_validates_its_fields():
    with pytest.raises(CommandError):
        PauseRequest("")
    with pytest.raises(CommandError):
        PauseRequest("alpha", "telepathy")
    assert PauseRequest.from_payload({"strategy": "a", "source": "dashboard"}).reason == "paused from the dashboard"


# ------------------------------------------------------------------------------------- the command line


def cli_env(tmp_path: Path) -> dict[str, str]:
    return {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state"), "TRADING_ENVIRONMENT": "sim",
            "POLL_INTERVAL_SECONDS": "10"}


def alpha_strategy():
    from option_selection import strangle
    from strategy import StrategyConfig

    return StrategyConfig(name="alpha", legs=strangle(0.01, call_delta=0.25, put_delta=-0.25, dte="next", side=1),
                          hold_to_expiry=True)


def run_cli(tmp_path: Path, *argv: str, clock: Any = None) -> int:
    return main_module.main(list(argv), clock=clock or SimulatedClock(start=START, speed=0),
                            env=cli_env(tmp_path), dotenv_path=None, strategies=[alpha_strategy])


def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "trader.db"


def test_pause_needs_a_name_and_a_known_strategy(tmp_path, capsys):
    assert run_cli(tmp_path, "pause") == 2
    assert run_cli(tmp_path, "pause", "nope") == 2
    assert "no strategy 'nope'; known: alpha" in capsys.readouterr().err


def test_pause_without_a_daemon_and_without_state_does_nothing(tmp_path, capsys):
    assert run_cli(tmp_path, "pause", "alpha") == 1
    assert "no state yet" in capsys.readouterr().err and not db(tmp_path).exists()


def test_pause_without_a_daemon_updates_the_stored_runner_state(tmp_path, capsys):
    (tmp_path / "state").mkdir()
    with StateStore(db(tmp_path)) as store:
        store.save_runner_state("alpha", RunnerState(opened_today=["T000000001"]).to_dict())
    assert run_cli(tmp_path, "pause", "alpha") == 0
    assert "pause command 1 done: paused alpha (paused from the command line)" in capsys.readouterr().out
    with StateStore(db(tmp_path)) as store:
        state = store.load_runner_state("alpha")
        assert state["paused"] is True and state["opened_today"] == ["T000000001"]
        assert [c["status"] for c in store.commands()] == ["done"]


def test_pause_without_a_daemon_of_a_strategy_that_never_ran_is_stored_paused(tmp_path, capsys):
    """A queued pause was failed by a start that did not run the strategy, which then traded
    unpaused at the start after (tests/integration/test_pause_of_a_strategy_that_never_ran.py):
    the pause is the strategy's stored state at once, a fresh one, paused."""
    (tmp_path / "state").mkdir()
    StateStore(db(tmp_path)).close()
    assert run_cli(tmp_path, "pause", "alpha") == 0
    assert "pause command 1 done: paused alpha" in capsys.readouterr().out
    with StateStore(db(tmp_path)) as store:
        [command] = store.commands()
        assert (command["kind"], command["status"]) == ("pause", "done")
        state = store.load_runner_state("alpha")
        assert state is not None and state["paused"] is True and state["opened_today"] == []


def test_pause_with_a_daemon_holding_the_lock_is_queued(tmp_path, capsys):
    (tmp_path / "state").mkdir()
    StateStore(db(tmp_path)).close()
    daemon_lock = InstanceLock(tmp_path / "state")
    assert daemon_lock.acquire()
    try:
        assert run_cli(tmp_path, "pause", "alpha") == 1  # nobody takes it in time: it stays queued
        assert "queued the pause command" in capsys.readouterr().out
    finally:
        daemon_lock.release()
    with StateStore(db(tmp_path)) as store:
        [command] = store.commands()
        assert command["payload"] == {"strategy": "alpha", "source": "command line"}
        assert command["status"] == "pending"
