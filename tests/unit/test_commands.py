"""Operator commands: the store queue, the daemon's CommandProcessor and the command line's checks.

The processor runs against small fakes of the lifecycle, runners, ledger and account (the
real exchange path is in tests/integration/test_kill_resume_e2e.py); the store is a real
SQLite store, so what is asserted is what the command line and ``status`` will read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import main as main_module
from clock import SimulatedClock
from commands import (
    KILL_ERROR_ALERT_EVERY_SECONDS,
    CommandProcessor,
    describe_command,
    kill_pause_reason,
    queue_and_wait,
)
from instance_lock import InstanceLock
from operations import format_status, status_report
from persistence import StateStore
from strategy import RunnerState
from trade_lifecycle import TradeState

START = 1_772_528_400.0  # 2026-03-03 09:00 UTC


# ------------------------------------------------------------------------------------- fakes


@dataclass
class FakeTrade:
    id: str
    strategy: str
    state: TradeState = TradeState.OPEN
    exit_reason: str | None = None
    realized_pnl: float | None = None
    legs: list = field(default_factory=list)   # what a kill's adoption reads: the symbols it trades

    def __post_init__(self) -> None:
        self.state = TradeState(self.state)

    @property
    def is_active(self) -> bool:
        return self.state not in (TradeState.CLOSED, TradeState.FAILED)

    def finish(self, state: str = "CLOSED") -> None:
        self.state = TradeState(state)


class FakeLifecycle:
    def __init__(self, trades: list[FakeTrade]) -> None:
        self._trades = {t.id: t for t in trades}
        self.force_closed: list[tuple[str, str]] = []
        self.hold_reason: str | None = None
        self.adopt: FakeTrade | None = None
        self.adopted_from: list = []
        self.blocks: dict[str, str] = {}        # symbol -> strategy whose trade is blocked there
        self.released: list[str | None] = []

    def trades(self, strategy: str | None = None) -> list[FakeTrade]:
        return [t for t in self._trades.values() if strategy is None or t.strategy == strategy]

    def active_trades(self, strategy: str | None = None) -> list[FakeTrade]:
        return [t for t in self.trades(strategy) if t.is_active]

    def get(self, trade_id: str) -> FakeTrade | None:
        return self._trades.get(trade_id)

    def force_close(self, trade_id: str, reason: str = "manual") -> bool:
        self.force_closed.append((trade_id, reason))
        return self._trades[trade_id].is_active

    def release_blocks(self, strategy: str | None = None) -> list[str]:
        self.released.append(strategy)
        lifted = [symbol for symbol, owner in self.blocks.items() if strategy is None or owner == strategy]
        for symbol in lifted:
            del self.blocks[symbol]
        return lifted

    def adopt_external(self, snapshot, *, skip: frozenset[str] = frozenset()) -> str | None:
        self.adopted_from.append(snapshot)
        if self.adopt is None:
            return None
        self._trades[self.adopt.id] = self.adopt
        self.force_closed.append((self.adopt.id, "kill_switch"))
        return self.adopt.id


@dataclass
class FakeRunner:
    name: str
    paused: bool = False
    reason: str = ""
    calls: list[str] = field(default_factory=list)
    broken: bool = False

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
        if self.broken:
            raise RuntimeError("disk on fire")
        self.calls.append(f"pause:{reason}")
        self.paused, self.reason = True, reason

    def resume(self) -> None:
        self.calls.append("resume")
        self.paused, self.reason = False, ""


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


@pytest.fixture
def store(clock):
    opened = StateStore(":memory:", clock=clock)
    yield opened
    opened.close()


def make_ctx(store: StateStore, clock: SimulatedClock, trades: list[FakeTrade]) -> SimpleNamespace:
    positions = (SimpleNamespace(symbol="BTCUSD-4MAR26-92000-C", signed_qty=0.05),)
    return SimpleNamespace(
        store=store, clock=clock, lifecycle_manager=FakeLifecycle(trades),
        ledger=SimpleNamespace(orders=lambda trade_id=None: []),
        account_manager=SimpleNamespace(snapshot=lambda: SimpleNamespace(positions=positions, timestamp=clock.now()),
                                        reachability=SimpleNamespace(is_up=True)),
        alerts=RecordingAlerts(),
    )


class RecordingAlerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def alert(self, level: str, kind: str, message: str, **detail: object) -> None:
        self.sent.append((level, kind, message))


def alpha_beta(store, clock, *trades: FakeTrade):
    ctx = make_ctx(store, clock, list(trades))
    runners = [FakeRunner("alpha"), FakeRunner("beta")]
    return ctx, runners, CommandProcessor(ctx, runners)


# ------------------------------------------------------------------------------------- kill


def test_kill_pauses_every_runner_force_closes_every_trade_then_is_done_when_all_are_terminal(store, clock):
    a1, b1 = FakeTrade("T000000001", "alpha"), FakeTrade("T000000002", "beta", state="OPENING")
    ctx, runners, processor = alpha_beta(store, clock, a1, b1, FakeTrade("T000000003", "gone", state="CLOSED"))
    command_id = store.add_command("kill", {"strategy": None, "all_positions": False})

    processor(object())

    reason = kill_pause_reason(command_id)
    assert [r.calls for r in runners] == [[f"pause:{reason}"], [f"pause:{reason}"]]
    assert ctx.lifecycle_manager.force_closed == [("T000000001", "kill_switch"), ("T000000002", "kill_switch")]
    command = store.command(command_id)
    assert command["status"] == "active"
    assert command["result"]["trades"] == ["T000000001", "T000000002"]
    assert command["result"]["paused"] == ["alpha", "beta"] and command["result"]["applied_at"] == START

    clock.advance(2)
    a1.finish("CLOSED")
    processor(object())  # one trade still active: nothing repeated, still active
    assert len(ctx.lifecycle_manager.force_closed) == 2 and runners[0].calls == [f"pause:{reason}"]
    assert store.command(command_id)["status"] == "active"

    clock.advance(2)
    b1.finish("FAILED")
    processor(object())
    done = store.command(command_id)
    assert done["status"] == "done"
    assert {k: v["state"] for k, v in done["result"]["final"].items()} == {"T000000001": "CLOSED",
                                                                          "T000000002": "FAILED"}
    assert done["result"]["finished_at"] == START + 4
    assert done["result"]["positions_left"] == [{"symbol": "BTCUSD-4MAR26-92000-C", "qty": 0.05}]
    assert "2 trade(s) killed" in describe_command(done) and "BTCUSD-4MAR26-92000-C +0.05" in describe_command(done)


def test_kill_of_one_strategy_leaves_the_other_alone(store, clock):
    a1, b1 = FakeTrade("T000000001", "alpha"), FakeTrade("T000000002", "beta")
    ctx, (alpha, beta), processor = alpha_beta(store, clock, a1, b1)
    command_id = store.add_command("kill", {"strategy": "alpha", "all_positions": False})
    processor(object())
    assert alpha.is_paused and not beta.is_paused and beta.calls == []
    assert ctx.lifecycle_manager.force_closed == [("T000000001", "kill_switch")]
    assert store.command(command_id)["result"]["trades"] == ["T000000001"]


def test_kill_with_nothing_to_close_is_done_at_once(store, clock):
    ctx, runners, processor = alpha_beta(store, clock)
    command_id = store.add_command("kill", {"strategy": "beta", "all_positions": False})
    processor(object())
    command = store.command(command_id)
    assert command["status"] == "done" and command["result"]["final"] == {} and runners[1].is_paused


def test_kill_of_an_unknown_strategy_fails_and_names_the_known_ones(store, clock):
    ctx, runners, processor = alpha_beta(store, clock, FakeTrade("T000000001", "unmanaged_one"))
    command_id = store.add_command("kill", {"strategy": "nope", "all_positions": False})
    processor(object())
    command = store.command(command_id)
    assert command["status"] == "failed"
    assert "nope" in command["result"]["error"] and "alpha, beta, unmanaged_one" in command["result"]["error"]
    assert ctx.lifecycle_manager.force_closed == [] and not any(r.is_paused for r in runners)


def test_kill_of_an_unmanaged_strategy_closes_its_trades(store, clock):
    """A strategy no longer in STRATEGIES has no runner; the kill still closes its trades."""
    ctx, runners, processor = alpha_beta(store, clock, FakeTrade("T000000007", "retired"))
    command_id = store.add_command("kill", {"strategy": "retired", "all_positions": False})
    processor(object())
    assert ctx.lifecycle_manager.force_closed == [("T000000007", "kill_switch")]
    assert store.command(command_id)["status"] == "active" and not any(r.is_paused for r in runners)


def test_all_positions_closes_our_trades_at_once_and_adopts_from_positions_read_for_it(store, clock):
    """Even on a wake without a snapshot: our trades are closed at once, and the adoption reads
    the positions itself (the monitor's snapshot may be a poll older than the kill)."""
    a1 = FakeTrade("T000000001", "alpha")
    ctx, runners, processor = alpha_beta(store, clock, a1)
    ctx.lifecycle_manager.adopt = FakeTrade("T000000009", "external")
    command_id = store.add_command("kill", {"strategy": None, "all_positions": True})
    clock.advance(3)

    processor.on_snapshot_error(RuntimeError("positions: HTTP 503"))
    assert all(r.is_paused for r in runners)
    assert ctx.lifecycle_manager.force_closed == [("T000000001", "kill_switch"), ("T000000009", "kill_switch")]
    (read,) = ctx.lifecycle_manager.adopted_from
    assert read.timestamp == START + 3          # read by the kill, after it was asked
    command = store.command(command_id)
    assert command["status"] == "active" and command["result"]["trades"] == ["T000000001", "T000000009"]
    assert command["result"]["adopt_pending"] is False and command["result"]["adopted_from"] == START + 3


def test_all_positions_adopts_after_our_trades_ended_when_the_first_read_fails(store, clock):
    a1 = FakeTrade("T000000001", "alpha")
    ctx, runners, processor = alpha_beta(store, clock, a1)
    ctx.lifecycle_manager.adopt = FakeTrade("T000000009", "external")
    working = ctx.account_manager.snapshot

    def down():
        raise RuntimeError("positions: HTTP 503")

    ctx.account_manager.snapshot = down
    command_id = store.add_command("kill", {"strategy": None, "all_positions": True})
    processor(object())
    assert ctx.lifecycle_manager.force_closed == [("T000000001", "kill_switch")]
    assert store.command(command_id)["result"]["adopt_pending"] is True
    ctx.account_manager.snapshot = working
    clock.advance(10)
    processor(object())                  # our close still works: a fill of it could pass for outside
    assert ctx.lifecycle_manager.adopted_from == []
    a1.finish("CLOSED")
    processor(object())                  # never "done" with the adoption still owed
    command = store.command(command_id)
    assert [s.timestamp for s in ctx.lifecycle_manager.adopted_from] == [START + 10]
    assert command["status"] == "active" and command["result"]["trades"] == ["T000000001", "T000000009"]
    ctx.lifecycle_manager.get("T000000009").finish("CLOSED")
    processor(object())
    assert store.command(command_id)["status"] == "done"


def test_all_positions_with_nothing_beyond_our_trades_adopts_nothing(store, clock):
    ctx, runners, processor = alpha_beta(store, clock)
    command_id = store.add_command("kill", {"strategy": None, "all_positions": True})
    processor(object())
    command = store.command(command_id)
    assert command["status"] == "done" and command["result"]["trades"] == []
    assert len(ctx.lifecycle_manager.adopted_from) == 1


def test_kill_waits_while_the_lifecycle_is_held_at_start_up(store, clock):
    ctx, runners, processor = alpha_beta(store, clock, FakeTrade("T000000001", "alpha"))
    ctx.lifecycle_manager.hold_reason = "positions not read yet"
    command_id = store.add_command("kill", {"strategy": None, "all_positions": False})
    processor(object())
    processor(object())
    assert store.command(command_id)["status"] == "pending" and ctx.lifecycle_manager.force_closed == []
    assert [len(r.calls) for r in runners] == [1, 1]  # paused once, not once per wake
    ctx.lifecycle_manager.hold_reason = None
    processor(object())
    assert ctx.lifecycle_manager.force_closed == [("T000000001", "kill_switch")]


def test_an_active_kill_found_at_start_up_is_applied_again_once(store, clock):
    """The daemon died mid-kill: kill mode was in its memory only."""
    t1, t2 = FakeTrade("T000000001", "alpha", state="PENDING_CLOSE"), FakeTrade("T000000002", "alpha", "CLOSED")
    command_id = store.add_command("kill", {"strategy": "alpha", "all_positions": False})
    store.update_command(command_id, "active", {"applied_at": START - 60, "paused": ["alpha"],
                                                "trades": ["T000000001", "T000000002"]})
    ctx, runners, processor = alpha_beta(store, clock, t1, t2)  # a fresh process
    processor(object())
    processor(object())
    assert ctx.lifecycle_manager.force_closed == [("T000000001", "kill_switch")]
    assert runners[0].calls == []  # the pause is persisted already; a later resume must not be undone
    t1.finish()
    processor(object())
    assert store.command(command_id)["status"] == "done"


def test_a_kill_that_keeps_raising_stays_open_alerts_critical_hourly_and_the_queue_goes_on(store, clock):
    ctx, runners, processor = alpha_beta(store, clock, FakeTrade("T000000001", "alpha"))
    runners[0].broken = True
    processor(object())   # the daemon's first wake
    kill_id = store.add_command("kill", {"strategy": "alpha", "all_positions": False})
    resume_id = store.add_command("resume", {"strategy": "beta"})
    processor(object())
    assert store.command(kill_id)["status"] == "pending" and store.command(resume_id)["status"] == "done"
    for _ in range(20):
        processor(object())
        clock.advance(10)
    assert store.command(kill_id)["status"] == "pending"          # never given up: a restart applies it again
    failing = [a for a in ctx.alerts.sent if a[1] == "kill_command_failing"]
    assert len(failing) == 1 and failing[0][0] == "CRITICAL" and "disk on fire" in failing[0][2]
    clock.advance(KILL_ERROR_ALERT_EVERY_SECONDS)
    processor(object())
    assert len([a for a in ctx.alerts.sent if a[1] == "kill_command_failing"]) == 2
    runners[0].broken = False
    processor(object())
    assert store.command(kill_id)["status"] in ("active", "done")


def test_a_pause_that_keeps_raising_fails_after_three_wakes(store, clock):
    ctx, runners, processor = alpha_beta(store, clock)
    runners[0].broken = True
    processor(object())
    pause_id = store.add_command("pause", {"strategy": "alpha"})
    for _ in range(3):
        processor(object())
    failed = store.command(pause_id)
    assert failed["status"] == "failed" and "disk on fire" in failed["result"]["error"]


@pytest.mark.parametrize("kind, payload, message", [
    ("shutdown", {}, "unknown command 'shutdown'"),
    ("kill", {"strategy": 7}, "strategy must be"),
    ("kill", {"all_positions": "yes"}, "all_positions must be"),
    ("kill", {"strategy": "alpha", "all_positions": True}, "cannot be limited to one strategy"),
])
def test_invalid_commands_fail_with_a_reason(store, clock, kind, payload, message):
    ctx, runners, processor = alpha_beta(store, clock, FakeTrade("T000000001", "alpha"))
    command_id = store.add_command(kind, payload)
    processor(object())
    command = store.command(command_id)
    assert command["status"] == "failed" and message in command["result"]["error"]
    assert ctx.lifecycle_manager.force_closed == []


# ------------------------------------------------------------------------------------- resume


def test_resume_one_or_every_runner_including_one_known_only_to_the_store(store, clock):
    ctx, (alpha, beta), processor = alpha_beta(store, clock)
    alpha.pause("kill switch (command 1)")
    beta.pause("kill switch (command 1)")
    store.save_runner_state("retired", RunnerState(paused=True, pause_reason="kill switch (command 1)").to_dict())

    processor(object())   # the daemon's first wake: the resumes below are queued while it runs
    first = store.add_command("resume", {"strategy": "beta"})
    processor(object())
    assert store.command(first)["result"] == {"resumed": ["beta"], "kept_paused": [], "unblocked": []} and alpha.is_paused and not beta.is_paused

    second = store.add_command("resume", {"strategy": None})
    processor(object())
    assert store.command(second)["result"] == {"resumed": ["alpha", "retired"], "kept_paused": [], "unblocked": []}
    assert not alpha.is_paused and store.load_runner_state("retired")["paused"] is False
    assert store.load_runner_state("retired")["pause_reason"] == ""

    unknown = store.add_command("resume", {"strategy": "nope"})
    processor(object())
    assert store.command(unknown)["status"] == "failed"


def test_a_resume_queued_before_this_start_is_refused_and_lifts_nothing(store, clock):
    ctx, (alpha, beta), processor = alpha_beta(store, clock)
    stale = store.add_command("resume", {"strategy": None})      # queued while an earlier run was up
    alpha.pause("the state store is behind the exchange")          # this start's reconciliation, meanwhile
    processor(object())
    refused = store.command(stale)
    assert refused["status"] == "failed" and "queued before this start" in refused["result"]["error"]
    assert alpha.is_paused and alpha.pause_reason == "the state store is behind the exchange"
    fresh = store.add_command("resume", {"strategy": "alpha"})     # the operator, having looked
    processor(object())
    assert store.command(fresh)["result"] == {"resumed": ["alpha"], "kept_paused": [], "unblocked": []} and not alpha.is_paused


# ------------------------------------------------------------------------------------- waiting for the daemon


class DaemonInSleep(SimulatedClock):
    """A command-line clock whose sleep lets a "daemon" act on the store after N sleeps."""

    def __init__(self, store: StateStore, after_sleeps: int, status: str = "active") -> None:
        super().__init__(start=START, speed=0)
        self.store, self.after_sleeps, self.status, self.sleeps = store, after_sleeps, status, 0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.sleeps += 1
        if self.sleeps == self.after_sleeps:  # the newest command only
            newest = self.store.commands("pending")[-1]
            self.store.update_command(newest["id"], self.status, {"paused": ["alpha"], "trades": ["T1"]})


def test_queue_and_wait_returns_what_the_daemon_reported(store):
    clock = DaemonInSleep(store, after_sleeps=3)
    command_id, command = queue_and_wait(store, "kill", {"strategy": None, "all_positions": False}, clock,
                                         timeout=60.0)
    assert command is not None and command["id"] == command_id and command["status"] == "active"
    assert clock.now() == pytest.approx(START + 1.5)  # three 0.5 s checks


def test_queue_and_wait_gives_up_on_the_clock_and_leaves_the_command_queued(store):
    clock = DaemonInSleep(store, after_sleeps=10_000)
    command_id, command = queue_and_wait(store, "resume", {"strategy": None}, clock, timeout=60.0)
    assert command is None and clock.now() == pytest.approx(START + 60.0)
    assert store.command(command_id)["status"] == "pending"


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


def test_kill_without_yes_refuses_and_touches_nothing(tmp_path, capsys):
    assert run_cli(tmp_path, "kill") == 2
    assert "add --yes" in capsys.readouterr().err
    assert not (tmp_path / "state").exists() and not (tmp_path / "logs").exists()


def test_kill_strategy_with_all_positions_is_refused(tmp_path, capsys):
    assert run_cli(tmp_path, "kill", "--strategy", "alpha", "--all-positions", "--yes") == 2
    assert "whole account" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_unknown_strategy_is_refused_naming_the_known_ones_from_strategies_and_the_store(tmp_path, capsys):
    (tmp_path / "state").mkdir()
    with StateStore(tmp_path / "state" / "trader.db") as store:
        store.save_trade({"id": "T000000001", "seq": 1, "strategy": "retired", "state": "OPEN", "legs": []})
    assert run_cli(tmp_path, "kill", "--strategy", "nope", "--yes") == 2
    err = capsys.readouterr().err
    assert "no strategy 'nope'" in err and "alpha, retired" in err
    assert run_cli(tmp_path, "resume", "nope") == 2
    with StateStore(tmp_path / "state" / "trader.db") as store:
        assert store.commands() == []


def test_help_on_each_command(tmp_path, capsys):
    for command in ("kill", "resume"):
        assert run_cli(tmp_path, command, "--help") == 0
    out = capsys.readouterr().out
    assert "--all-positions" in out and "--yes" in out and "NAME" in out


def test_resume_without_a_daemon_updates_the_stored_runner_state(tmp_path, capsys):
    assert run_cli(tmp_path, "resume") == 0
    assert "nothing is paused" in capsys.readouterr().out
    (tmp_path / "state").mkdir(exist_ok=True)
    with StateStore(tmp_path / "state" / "trader.db") as store:
        store.save_runner_state("alpha", RunnerState(paused=True, pause_reason="kill switch (command 1)",
                                                     opened_today=["T000000001"]).to_dict())
    assert run_cli(tmp_path, "resume", "alpha") == 0
    assert "resume command 1 done: resumed alpha" in capsys.readouterr().out
    with StateStore(tmp_path / "state" / "trader.db") as store:
        state = store.load_runner_state("alpha")
        assert state["paused"] is False and state["opened_today"] == ["T000000001"]  # counters kept
        assert [c["status"] for c in store.commands()] == ["done"]


def test_with_a_daemon_holding_the_lock_the_command_is_queued_and_reported(tmp_path, capsys):
    (tmp_path / "state").mkdir()
    with StateStore(tmp_path / "state" / "trader.db") as store:
        store.save_runner_state("alpha", RunnerState(paused=True, pause_reason="x").to_dict())
    daemon_lock = InstanceLock(tmp_path / "state")
    assert daemon_lock.acquire()
    try:
        # Nobody answers: exit 1, the command stays queued for the daemon's next wake.
        idle = SimulatedClock(start=START, speed=0)
        assert run_cli(tmp_path, "kill", "--yes", clock=idle) == 1
        assert "stays queued" in capsys.readouterr().out
        assert idle.now() == pytest.approx(START + 3 * 10 + 30)
        # The daemon takes the next one while the command line waits.
        with StateStore(tmp_path / "state" / "trader.db") as store:
            answering = DaemonInSleep(store, after_sleeps=2, status="active")
            assert run_cli(tmp_path, "kill", "--strategy", "alpha", "--yes", clock=answering) == 0
            out = capsys.readouterr().out
            assert "queued the kill command" in out and "kill command 2 active: paused alpha; closing T1" in out
            commands = store.commands()
        assert [(c["kind"], c["status"], c["payload"]) for c in commands] == [
            ("kill", "pending", {"strategy": None, "all_positions": False}),
            ("kill", "active", {"strategy": "alpha", "all_positions": False}),
        ]
    finally:
        daemon_lock.release()


def test_status_shows_open_commands_and_paused_runners(tmp_path):
    (tmp_path / "state").mkdir()
    with StateStore(tmp_path / "state" / "trader.db") as store:
        store.save_runner_state("alpha", RunnerState(paused=True, pause_reason="kill switch (command 1)").to_dict())
        store.save_runner_state("beta", RunnerState().to_dict())
        active = store.add_command("kill", {"strategy": "alpha", "all_positions": False})
        store.update_command(active, "active", {"paused": ["alpha"], "trades": ["T000000004"]})
        store.add_command("resume", {"strategy": "alpha"})
        finished = store.add_command("resume", {"strategy": None})
        store.update_command(finished, "done", {"resumed": []})
    from config import load_settings

    report = status_report(load_settings(cli_env(tmp_path), dotenv_path=None), SimulatedClock(start=START, speed=0))
    assert report["store"]["paused_runners"] == {"alpha": "kill switch (command 1)"}
    assert [(c["id"], c["status"]) for c in report["store"]["commands"]] == [(1, "active"), (2, "pending")]
    text = format_status(report)
    assert "paused: alpha (kill switch (command 1))" in text
    assert "command kill command 1 active: paused alpha; closing T000000004" in text
    assert "resume command 2 pending" in text and "command 3" not in text


def test_resume_on_an_unreadable_store_exits_1_and_leaves_the_file_alone(tmp_path, capsys):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "trader.db").write_bytes(b"\x00" * 4096)
    assert run_cli(tmp_path, "resume") == 1
    assert "cannot open the state store" in capsys.readouterr().err
    assert (tmp_path / "state" / "trader.db").read_bytes() == b"\x00" * 4096
    assert list((tmp_path / "state").glob("*.corrupt.*")) == []  # quarantine is the daemon's job


def test_a_force_close_that_raises_is_retried_on_the_next_wake(store, clock):
    ctx, runners, processor = alpha_beta(store, clock, FakeTrade("T000000001", "alpha"),
                                         FakeTrade("T000000002", "alpha"))
    manager = ctx.lifecycle_manager
    real_force_close, failures = manager.force_close, ["T000000001"]

    def flaky(trade_id: str, reason: str = "manual") -> bool:
        if trade_id in failures:
            failures.remove(trade_id)
            raise RuntimeError("exchange hiccup")
        return real_force_close(trade_id, reason)

    manager.force_close = flaky
    command_id = store.add_command("kill", {"strategy": "alpha", "all_positions": False})
    processor(object())
    assert manager.force_closed == [("T000000002", "kill_switch")]
    assert store.command(command_id)["result"]["trades"] == ["T000000001", "T000000002"]
    processor(object())
    assert manager.force_closed == [("T000000002", "kill_switch"), ("T000000001", "kill_switch")]
    processor(object())
    assert len(manager.force_closed) == 2
