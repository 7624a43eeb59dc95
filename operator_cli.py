"""``python main.py kill ...``, ``pause NAME`` and ``resume ...``: the operator's side of the command queue.

Why it looks the way it does (BEHAVIOUR.md 7.6, 7.8; docs/OPERATIONS.md):

* Only the process holding the state directory's lock may send orders for its trades. So the
  command line first tries the lock: when a daemon holds it, the command goes into the
  store's queue and the command line waits (a few of the daemon's poll intervals) for the
  daemon to take it; it never trades next to a running daemon.
* With the lock, a ``resume`` or a ``pause`` only changes the stored runner state (no
  exchange is needed; a strategy with no stored state yet is paused by the daemon's first
  wake, before any entry),
  and a ``kill`` becomes the daemon for as long as the kill needs: the very same start-up
  and loop as ``run`` (``app.run_locked``), with no runner considering entries, finished
  when its command is, and every other kill it takes meanwhile too (a second ``kill`` finds
  the lock held and queues for it: ``KillHere``). SIGINT/SIGTERM stop it after the current
  wake; the open kills stay ``active``, it says so (stdout and a CRITICAL alert), and the
  next daemon start finishes them.
* What the command line owns (setting up logging, the signal handlers) is handed in as
  plain callables by ``main``: this module never reaches back into the command line.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from alerts import send_alert
from app import EXIT_OK, EXIT_STARTUP_FAILURE, RunPlan, TradingContext, choose_clock, run_locked
from clock import Clock, RealClock
from commands import (
    FINISHED,
    KIND_KILL,
    KIND_PAUSE,
    KIND_RESUME,
    CommandError,
    KillRequest,
    PauseRequest,
    ResumeRequest,
    describe_command,
    describe_pause,
    pause_runner,
    queue_and_wait,
    resume_names,
    resume_runners,
    strategies_under_kill,
    strategy_names_in_store,
)
from config import Settings
from display import fmt_duration
from errors import ConfigError
from instance_lock import InstanceLock
from persistence import COMMAND_ACTIVE, COMMAND_DONE, COMMAND_FAILED, OPEN_COMMAND_STATUSES, StateStore, StoreError
from seams import AlertSender
from stop_flag import StopFlag
from strategy import StrategyConfig
from strategy_factories import build_strategy_configs
from trade_lifecycle import kill_progress

logger = logging.getLogger(__name__)

EXIT_NOT_DONE = 1
EXIT_USAGE = 2

# Waiting for a running daemon to take a command: a few of its poll intervals plus slack.
PICKUP_POLL_INTERVALS = 3
PICKUP_SLACK_SECONDS = 30.0


@dataclass
class OperatorRun:
    """What one ``kill``/``resume`` invocation is given by the command line: values and callables."""

    settings: Settings
    factories: Sequence[Callable[[], Any]]
    setup_logging: Callable[[Path, str, Clock], Callable[[], None]]   # stamps with the clock; returns its undo
    install_signal_handlers: Callable[[StopFlag], Callable[[], None]]  # returns its undo
    clock: Clock | None = None     # injected by tests; None = the command line's real clock

    def say(self, text: str) -> None:
        # Flushed: the operator reads it now, also through a pipe (``kill --yes | tee``).
        print(text, file=sys.stdout, flush=True)

    def complain(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    @property
    def db_path(self) -> Path:
        return self.settings.state_db_path


def run_operator_command(args: argparse.Namespace, run: OperatorRun) -> int:
    """``python main.py kill ...`` / ``resume ...``: validate, then queue or run in-process."""
    if args.command == KIND_KILL:
        if not args.yes:
            run.complain("kill pauses strategies and closes positions with reduce-only orders: "
                         "add --yes to confirm (nothing was done)")
            return EXIT_USAGE
        try:
            request: KillRequest | ResumeRequest | PauseRequest = KillRequest(args.strategy,
                                                                              bool(args.all_positions))
        except CommandError as exc:
            run.complain(f"kill: {exc}")
            return EXIT_USAGE
    elif args.command == KIND_PAUSE:
        request = PauseRequest(args.name, "command line")
    else:
        request = ResumeRequest(args.name)
    configs = _strategy_configs(run)
    if request.strategy is not None:
        known = {config.name for config in configs} | _names_in_state(run.db_path)
        if request.strategy not in known:
            run.complain(f"{args.command}: no strategy {request.strategy!r}; known: "
                         f"{', '.join(sorted(known)) or 'none'}")
            return EXIT_USAGE
    if args.command == KIND_KILL:
        # A kill may run the daemon in this process, on the run's own clock (simulated in sim):
        # the log is stamped with that clock, and the queue path waits on it too.
        run = replace(run, clock=choose_clock(run.settings, None, run.clock))
    log_clock = run.clock if run.clock is not None else RealClock()
    try:
        undo_logging = run.setup_logging(run.settings.log_dir, args.log_level or run.settings.log_level, log_clock)
    except OSError as exc:
        run.complain(f"configuration error: LOG_DIR={str(run.settings.log_dir)!r} is not usable ({exc.strerror})")
        return EXIT_USAGE
    try:
        return _dispatch(args.command, request, configs, run)
    finally:
        undo_logging()


def _strategy_configs(run: OperatorRun) -> list[StrategyConfig]:
    """STRATEGIES built and validated; a broken one must not block a kill, so it is reported."""
    try:
        return build_strategy_configs(run.factories)
    except ConfigError as exc:
        run.complain(f"warning: STRATEGIES cannot be built ({exc}); acting on the stored runner state only")
        return []


def _names_in_state(db_path: Path) -> set[str]:
    if not db_path.exists():
        return set()
    try:
        store = StateStore(db_path)
    except StoreError as exc:  # the daemon (or the in-process kill) deals with a bad file
        logger.warning("cannot read strategy names from %s: %s", db_path, exc)
        return set()
    try:
        return strategy_names_in_store(store)
    finally:
        store.close()


def _dispatch(kind: str, request: Any, configs: list[StrategyConfig], run: OperatorRun) -> int:
    lock = InstanceLock(run.settings.state_dir)
    if not lock.acquire():
        return _queue_for_daemon(kind, request, run, lock)
    try:
        if kind == KIND_RESUME:
            return _resume_without_daemon(request, run)
        if kind == KIND_PAUSE:
            return _pause_without_daemon(request, run, {config.name for config in configs})
        return _kill_without_daemon(request, configs, run, lock)
    finally:
        lock.release()


def _pickup_timeout(settings: Settings) -> float:
    return PICKUP_POLL_INTERVALS * float(settings.poll_interval_seconds) + PICKUP_SLACK_SECONDS


def _queue_for_daemon(kind: str, request: Any, run: OperatorRun, lock: InstanceLock) -> int:
    """A daemon holds the lock: hand it the command through the store and report its answer.

    The store is the one the daemon says it writes to (``InstanceLock.holder_store``: a
    recovered copy after its store was lost), and it is never created here: a command queued
    into a new, empty file nobody reads is a kill that silently never happens.
    """
    clock = run.clock if run.clock is not None else RealClock()
    timeout = _pickup_timeout(run.settings)
    holder = lock.holder()
    db_path = lock.holder_store() or run.db_path
    if not db_path.exists():
        run.complain(f"{kind}: the daemon's state store {db_path} does not exist (lost while the daemon runs? its "
                     f"CRITICAL state_store_lost alert says where it writes now): nothing was queued. Stop the "
                     f"daemon (pid {holder or '?'}, SIGTERM) and run this command again: it then runs here"
                     + ("; or close the positions on the exchange" if kind == KIND_KILL else ""))
        return EXIT_NOT_DONE
    if db_path.resolve() != run.db_path.resolve():
        run.say(f"the daemon writes to {db_path} since its state store was lost: the command goes there")
    try:
        store = StateStore(db_path, clock=clock)
    except StoreError as exc:
        run.complain(f"{kind}: cannot open the daemon's state store {db_path}: {exc}; nothing was queued")
        return EXIT_NOT_DONE
    try:
        run.say(f"a daemon (pid {holder or '?'}) holds {run.settings.state_dir}: queued the {kind} command for it; "
                f"waiting up to {timeout:g} s for it to take it")
        command_id, command = queue_and_wait(store, kind, request.to_payload(), clock, timeout=timeout)
    finally:
        store.close()
    if command is None:
        run.say(f"{kind} command {command_id} was not picked up within {timeout:g} s; it stays queued and runs on "
                f"the daemon's next wake (or at its next start)")
        return EXIT_NOT_DONE
    run.say(describe_command(command))
    return EXIT_NOT_DONE if command["status"] == COMMAND_FAILED else EXIT_OK


def _lift_kept_blocks(store: StateStore, strategy: str | None) -> list[str]:
    """The symbol blocks the store keeps for the next start (L3), lifted for ``strategy``'s
    trades' symbols (every one when None): the lift a running daemon's resume makes."""
    kept = store.kept_symbol_blocks()
    if strategy is None:
        chosen = sorted(kept)
    else:
        symbols = {leg.get("symbol") for trade in store.load_trades(strategy) for leg in trade.get("legs") or []}
        chosen = sorted(symbol for symbol in kept if symbol in symbols)
    store.lift_symbol_blocks(chosen)
    return chosen


def _resume_without_daemon(request: ResumeRequest, run: OperatorRun) -> int:
    """No daemon: the pause lives in the store only, so resuming needs no exchange."""
    if not run.db_path.exists():
        run.say("no state yet: nothing is paused")
        return EXIT_OK
    try:
        store = StateStore(run.db_path, clock=run.clock if run.clock is not None else RealClock())
    except StoreError as exc:
        run.complain(f"resume: cannot open the state store {run.db_path}: {exc}; the daemon's next start "
                     f"quarantines a corrupt file and starts every strategy paused")
        return EXIT_NOT_DONE
    try:
        command_id = store.add_command(KIND_RESUME, request.to_payload())
        kept = strategies_under_kill(store, resume_names(store, {}, request.strategy))
        unblocked = _lift_kept_blocks(store, request.strategy)
        resumed = resume_runners(store, {}, request.strategy, keep_paused=kept)
        command = store.update_command(command_id, COMMAND_DONE,
                                       {"resumed": resumed, "kept_paused": kept, "unblocked": unblocked})
        queued_kills = [c["id"] for c in store.commands(OPEN_COMMAND_STATUSES) if c["kind"] == KIND_KILL]
    finally:
        store.close()
    run.say(describe_command(command))
    if queued_kills:
        run.say(f"note: kill command(s) {', '.join(map(str, queued_kills))} are still open; the daemon runs "
                f"them at its next start")
    return EXIT_OK


def _pause_without_daemon(request: PauseRequest, run: OperatorRun, configured: set[str]) -> int:
    """No daemon: pause through the stored runner state. A strategy of ``STRATEGIES`` without one
    yet (it never ran) is given one, paused: a command left queued for it was failed by a start
    that did not run it (``run --strategy OTHER``), and the start after traded it unpaused."""
    if not run.db_path.exists():
        run.complain(f"pause: no state yet in {run.settings.state_dir}: start the daemon once (or pause it while "
                     f"it runs); nothing was done")
        return EXIT_NOT_DONE
    try:
        store = StateStore(run.db_path, clock=run.clock if run.clock is not None else RealClock())
    except StoreError as exc:
        run.complain(f"pause: cannot open the state store {run.db_path}: {exc}; nothing was done")
        return EXIT_NOT_DONE
    try:
        command_id = store.add_command(KIND_PAUSE, request.to_payload())
        result = pause_runner(store, {}, request, configured=request.strategy in configured)
        if result is None:
            store.update_command(command_id, COMMAND_FAILED, {"error": f"{request.strategy} has no stored state "
                                                                       f"and is not in STRATEGIES"})
            run.complain(f"pause: {request.strategy} has no stored state and is not in STRATEGIES; nothing was done")
            return EXIT_NOT_DONE
        store.update_command(command_id, COMMAND_DONE, result)
    finally:
        store.close()
    run.say(f"pause command {command_id} done: {describe_pause(request.strategy, result)}")
    return EXIT_OK


class KillHere:
    """The kills this process runs as the daemon: its own command, queued once everything is
    started, and every other kill command of the store that is pending or active while it runs
    (a second ``kill`` finds the lock held and queues its command; this process's
    ``CommandProcessor`` takes it on its next wake, pausing and force-closing what it names).

    The run is finished only when every one of them is done or failed: leaving with a kill
    this process took half-way would leave its trades closing with nobody to close them. After
    every wake a progress line per open kill is printed every poll (what is still open, what was
    sent): a kill can take minutes, and silence reads as a hang. When the run must end with a
    kill still open (a signal), the kill is said to be left active, CRITICAL, while the
    context can still alert (``finished`` runs once more after the wake the stop came in).
    """

    def __init__(self, request: KillRequest, run: OperatorRun, stop: StopFlag | None = None) -> None:
        self._request = request
        self._run = run
        self._stop = stop
        self.command_id: int | None = None
        self.command: dict | None = None
        # Every kill command this run followed, as last read (its own first), by id.
        self.kills: dict[int, dict] = {}
        # The trades each open kill was still closing at its last progress line, by command id.
        self.closing: dict[int, list[str]] = {}
        self.store_path: Path | None = None     # where the daemon writes (moves after a store loss)
        self.alerts: AlertSender | None = None
        self.left_open_alerted = False
        self.finished_reason: str | None = None   # what ``finished`` returned to end the run
        self._progress_at: float | None = None   # clock time of the last progress line

    def queue(self, ctx: TradingContext) -> None:
        """``RunPlan.before_loop``: the command goes through the daemon's own queue."""
        self.alerts = ctx.alerts
        self.store_path = Path(ctx.store.path)
        self.command_id = ctx.store.add_command(KIND_KILL, self._request.to_payload())
        self.command = ctx.store.command(self.command_id)
        if self.command is not None:
            self.kills[self.command_id] = self.command
        self._run.say(f"no daemon is running: executing kill command {self.command_id} "
                      f"({self._request.describe()}) in this process")

    def open_kills(self) -> list[dict]:
        return [command for command in self.kills.values() if command["status"] not in FINISHED]

    def finished_kills(self) -> list[dict]:
        return [command for command in self.kills.values() if command["status"] in FINISHED]

    def _follow(self, ctx: TradingContext) -> None:
        """Every kill of the store still open (queued by another ``kill`` meanwhile, or left
        active by an earlier run), and the latest state of each one followed."""
        self.store_path = Path(ctx.store.path)
        for command in ctx.store.commands(OPEN_COMMAND_STATUSES):
            if command["kind"] == KIND_KILL:
                self.kills[int(command["id"])] = command
        for command_id, known in list(self.kills.items()):
            if known["status"] not in FINISHED:
                self.kills[command_id] = ctx.store.command(command_id) or known
        if self.command_id is not None:
            self.command = self.kills.get(self.command_id, self.command)

    def finished(self, ctx: TradingContext) -> str | None:
        """``RunPlan.finished``: the reason to stop once every kill followed is done or failed."""
        if self.command_id is None:
            return None
        self._follow(ctx)
        still_open = self.open_kills()
        if not still_open:
            self.finished_reason = (f"kill command(s) {', '.join(str(c['id']) for c in self.finished_kills())} "
                                    f"finished")
            return self.finished_reason
        self._note_closing(ctx, still_open)
        self._progress(ctx, still_open)
        if self._stop is not None and self._stop.is_set:
            # The run ends after this wake (a signal): say it while the context can still alert.
            self.alert_left_open(ctx.alerts)
        return None

    def _note_closing(self, ctx: TradingContext, still_open: list[dict]) -> None:
        """The trades each active kill is still closing, as of this wake."""
        for command in still_open:
            if command["status"] == COMMAND_ACTIVE:
                trade_ids = (command["result"] or {}).get("trades", [])
                self.closing[int(command["id"])] = [
                    trade.id for trade in (ctx.lifecycle_manager.get(trade_id) for trade_id in trade_ids)
                    if trade is not None and trade.is_active]

    def _progress(self, ctx: TradingContext, still_open: list[dict]) -> None:
        """Once per poll interval of the run's clock: where each open kill stands, trade by trade."""
        now = ctx.clock.now()
        if self._progress_at is not None and now - self._progress_at < ctx.position_monitor.poll_interval:
            return
        self._progress_at = now
        shown: set[str] = set()
        for command in still_open:
            command_id = int(command["id"])
            result = command["result"] or {}
            if command["status"] != COMMAND_ACTIVE:
                hold = ctx.lifecycle_manager.hold_reason
                self._run.say(f"kill command {command_id}: waiting to start"
                              f"{f' (the lifecycle is on hold: {hold})' if hold else ''}")
                continue
            trades = [trade for trade in (ctx.lifecycle_manager.get(trade_id)
                                          for trade_id in self.closing.get(command_id, []))
                      if trade is not None]
            since = now - float(result.get("applied_at") or now)
            self._run.say(f"kill command {command_id}: {len(trades)} trade(s) still closing after "
                          f"{fmt_duration(since)}")
            for trade in trades:
                if trade.id in shown:
                    self._run.say(f"  trade {trade.id}: see above")
                    continue
                shown.add(trade.id)
                self._run.say(f"  {kill_progress(trade, ctx.ledger.orders(trade.id))}")

    def left_open_text(self, commands: Sequence[dict] | None = None) -> str:
        """What the operator must know when this process ends with a kill still open."""
        parts = []
        chosen = self.open_kills() if commands is None else list(commands)
        left = COMMAND_ACTIVE if all(command["status"] == COMMAND_ACTIVE for command in chosen) else "open"
        for command in chosen:
            command_id = int(command["id"])
            result = command.get("result") or {}
            trades = self.closing.get(command_id, list(result.get("trades") or []))
            parts.append(f"kill command {command_id} {command['status']}"
                         + (f" (trades still closing: {', '.join(trades)})" if trades else ""))
        return (f"{'; '.join(parts)}: this process stops with the kill left {left} and its positions "
                f"(exposure) still held, with nobody closing them; start the daemon (`python main.py`) now: it "
                f"takes the kill again and finishes it")

    def alert_left_open(self, alerts: AlertSender | None, commands: Sequence[dict] | None = None) -> None:
        """CRITICAL, once: a kill is left open by this process."""
        if self.left_open_alerted:
            return
        self.left_open_alerted = True
        chosen = self.open_kills() if commands is None else list(commands)
        send_alert(alerts, logger, "CRITICAL", "kill_left_active", self.left_open_text(chosen),
                   commands=[int(c["id"]) for c in chosen])

    def open_in_store_now(self) -> list[dict]:
        """The kill commands of the store still open once the run is over (one queued after the
        last wake's check included); the store is never created here."""
        path = self.store_path
        if path is None or not path.exists():
            return self.open_kills()
        try:
            store = StateStore(path)
        except StoreError as exc:
            logger.warning("cannot read the kill commands left open in %s: %s", path, exc)
            return self.open_kills()
        try:
            for command in store.commands(OPEN_COMMAND_STATUSES):
                if command["kind"] == KIND_KILL:
                    self.kills[int(command["id"])] = command
            for command_id, known in list(self.kills.items()):
                if known["status"] not in FINISHED:
                    self.kills[command_id] = store.command(command_id) or known
        finally:
            store.close()
        if self.command_id is not None:
            self.command = self.kills.get(self.command_id, self.command)
        return self.open_kills()


def _kill_without_daemon(request: KillRequest, configs: list[StrategyConfig], run: OperatorRun,
                         lock: InstanceLock) -> int:
    """No daemon: become one for this kill (``app.run_locked``), until the kill is finished,
    and every other kill queued meanwhile with it (``KillHere``).

    SIGINT/SIGTERM stop it after the current wake; the commands stay ``active``, it says so
    (CRITICAL alert ``kill_left_active``), and the next daemon start finishes them.
    """
    run.say(f"no daemon holds {run.settings.state_dir}: this process runs the kill ({request.describe()}) itself; "
            f"starting up first (exchange, state store, start-up reconciliation); Ctrl-C stops it and the next "
            f"daemon start finishes it")
    clock = choose_clock(run.settings, None, run.clock)
    stop = StopFlag()
    kill = KillHere(request, run, stop)
    undo_signals = run.install_signal_handlers(stop)
    try:
        code = run_locked(run.settings, clock, stop, configs,
                          RunPlan(entries=False, before_loop=kill.queue, finished=kill.finished,
                                  strategy_scope=None if request.strategy is None else frozenset({request.strategy})),
                          lock=lock)
    finally:
        undo_signals()
    if code == EXIT_STARTUP_FAILURE:
        run.complain("kill: could not open the exchange connection or the state store (see the log); nothing sent")
        return EXIT_NOT_DONE
    if kill.command is None:
        return code
    # Read with the lock still held: a kill queued by another `kill` after the last wake's check
    # found the lock held, and nobody takes it once this process is gone.
    still_open = kill.open_in_store_now()
    for command in kill.finished_kills():
        run.say(describe_command(command))
    if code != EXIT_OK or still_open:
        for command in still_open:
            run.say(describe_command(command))
        if still_open:
            kill.alert_left_open(kill.alerts, still_open)
            ending = (f"{stop.reason}, but another kill was queued as this process ended"
                      if code == EXIT_OK and kill.finished_reason is not None and stop.reason == kill.finished_reason
                      else f"interrupted ({stop.reason or 'stopped'})")
            run.say(f"{ending}: " + kill.left_open_text(still_open))
        return code if code != EXIT_OK else EXIT_NOT_DONE
    finished = kill.finished_kills()
    run.say("this process finished kill command(s) "
            + ", ".join(f"{command['id']} ({command['status']})" for command in finished)
            + "; no kill command is left open")
    return EXIT_OK if all(command["status"] == COMMAND_DONE for command in finished) else EXIT_NOT_DONE
