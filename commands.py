"""Operator commands that act: ``kill``, ``pause`` and ``resume`` (BEHAVIOUR.md 7.6, 7.8).

Why it looks the way it does:

* The command line and the daemon are different processes, and only the daemon may send
  orders for its trades (one process per state directory, BEHAVIOUR.md 7.5). So the command
  line never trades next to a running daemon: it writes the command into the state store's
  queue, and the daemon's ``CommandProcessor`` runs it on its next wake. Without a running
  daemon, the command line takes the instance lock and becomes that daemon for as long as
  the command needs, through the daemon's own start-up (``operator_cli.py``, ``app.py``).
* A kill is long (closing positions takes rounds of orders) and the daemon may die in the
  middle. The command is therefore ``active`` in the store until every trade it affects is
  terminal; kill mode itself lives only in the lifecycle's memory, so an ``active`` kill
  found after a restart is applied again to the trades it recorded.
* A kill touches only our exposure and our orders (BEHAVIOUR.md 8 row 40): it pauses the
  affected runners and force-closes their trades through ``LifecycleManager`` (reduce-only,
  intent kill, our client order ids). Other positions are closed only with
  ``--all-positions``, adopted into a new trade of strategy ``external`` with a fresh trade
  sequence (never one used before, so its fills and clientOrderIds are its own); orders that
  are not ours are never cancelled.
* A ``pause`` stops a strategy's entries only: its open trades keep their exits, exactly
  like any other pause. It comes from the command line or the dashboard, and its reason says
  which, so the operator reading ``status`` knows who paused it. A strategy already paused
  keeps its reason (a kill's pause is not overwritten by a later pause).
* A broken or unknown command fails with a reason; it never stops the daemon.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Container, Iterable, Mapping, Protocol

from alerts import send_alert
from clock import Clock
from order_ledger import Intent, OrderStatus
from persistence import (
    COMMAND_ACTIVE,
    COMMAND_DONE,
    COMMAND_FAILED,
    COMMAND_PENDING,
    OPEN_COMMAND_STATUSES,
)
from seams import AccountSource, AlertSender, CommandLifecycle, LedgerOrders, RunnerControl, Store, require
from strategy import RunnerState
from trade_lifecycle import EXIT_REASON_KILL

logger = logging.getLogger(__name__)

KIND_KILL = "kill"
KIND_RESUME = "resume"
KIND_PAUSE = "pause"
COMMAND_KINDS = (KIND_KILL, KIND_PAUSE, KIND_RESUME)
# Where a pause came from; its reason names it ("paused from the dashboard").
PAUSE_SOURCES = ("command line", "dashboard")

# A command that raised this many wakes in a row (not a validation failure) is failed.
MAX_COMMAND_ERRORS = 3
# A kill is never given up on errors: it is retried every wake, and said CRITICAL after
# MAX_COMMAND_ERRORS in a row, then at most this often while it lasts.
KILL_ERROR_ALERT_EVERY_SECONDS = 3600.0
# Waiting for a running daemon to take a queued command: the store is read this often.
PICKUP_CHECK_SECONDS = 0.5
FINISHED = (COMMAND_DONE, COMMAND_FAILED)
# An ``--all-positions`` kill whose positions beyond our trades are not adopted yet (its result).
ADOPT_PENDING = "adopt_pending"


class CommandError(ValueError):
    """The command cannot be carried out as written (it fails; nothing is retried)."""


def kill_pause_reason(command_id: int) -> str:
    """The pause reason a kill leaves on its runners: the operator sees which command it was."""
    return f"kill switch (command {command_id})"


# ---------------------------------------------------------------------------------------
# What a command asks for
# ---------------------------------------------------------------------------------------


def _strategy_of(payload: Mapping[str, Any]) -> str | None:
    name = payload.get("strategy")
    if name is not None and (not isinstance(name, str) or not name):
        raise CommandError(f"strategy must be a non-empty name or null, got {name!r}")
    return name


@dataclass(frozen=True)
class KillRequest:
    """``kill [--strategy NAME] [--all-positions]``: ``strategy`` None means every strategy."""

    strategy: str | None = None
    all_positions: bool = False

    def __post_init__(self) -> None:
        if self.strategy is not None and self.all_positions:
            raise CommandError("--all-positions closes the whole account: it cannot be limited to one strategy")

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "KillRequest":
        all_positions = payload.get("all_positions", False)
        if not isinstance(all_positions, bool):
            raise CommandError(f"all_positions must be true or false, got {all_positions!r}")
        return cls(_strategy_of(payload), all_positions)

    def to_payload(self) -> dict:
        return {"strategy": self.strategy, "all_positions": self.all_positions}

    def describe(self) -> str:
        if self.all_positions:
            return "every trade and every other option position of the account"
        return f"strategy {self.strategy}" if self.strategy else "every strategy"


@dataclass(frozen=True)
class ResumeRequest:
    """``resume [NAME]``: ``strategy`` None means every paused runner."""

    strategy: str | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "ResumeRequest":
        return cls(_strategy_of(payload))

    def to_payload(self) -> dict:
        return {"strategy": self.strategy}


@dataclass(frozen=True)
class PauseRequest:
    """``pause NAME`` (command line) or the dashboard's pause button: one strategy's entries stop."""

    strategy: str
    source: str = "command line"

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, str) or not self.strategy:
            raise CommandError(f"pause needs a strategy name, got {self.strategy!r}")
        if self.source not in PAUSE_SOURCES:
            raise CommandError(f"pause source must be one of {', '.join(PAUSE_SOURCES)}, got {self.source!r}")

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "PauseRequest":
        return cls(_strategy_of(payload) or "", str(payload.get("source") or "command line"))

    def to_payload(self) -> dict:
        return {"strategy": self.strategy, "source": self.source}

    @property
    def reason(self) -> str:
        """The pause reason the runner keeps: it says who paused it."""
        return f"paused from the {self.source}"


# ---------------------------------------------------------------------------------------
# Runner state kept in the store (strategies without a runner in this process)
# ---------------------------------------------------------------------------------------


def set_stored_pause(store: Store, name: str, reason: str | None, *, create: bool = False) -> bool:
    """Pause (``reason``) or resume (None) a runner through its persisted state only.

    For strategies that have no runner in this process: not in ``STRATEGIES``, or the
    command line acting while no daemon runs. False when the store has no state for it,
    unless ``create`` (a pause of a configured strategy that never ran: its runner starts
    from this state, paused, so no later start can miss the pause).
    """
    saved = store.load_runner_state(name)
    if saved is None and not (create and reason is not None):
        return False
    state = RunnerState.from_dict(saved) if saved is not None else RunnerState()
    state.paused = reason is not None
    state.pause_reason = reason or ""
    state.pause_until = None
    store.save_runner_state(name, state.to_dict())
    return True


def stored_pause_reason(store: Store, name: str) -> str | None:
    """The persisted pause reason of a runner, or None when it is not paused."""
    saved = store.load_runner_state(name) or {}
    return str(saved.get("pause_reason") or "paused") if saved.get("paused") else None


def strategy_names_in_store(store: Store) -> set[str]:
    """Every strategy the store knows: runner state and trades (unmanaged ones included)."""
    names = set(store.runner_names())
    names.update(str(record.get("strategy")) for record in store.load_trades() if record.get("strategy"))
    names.discard("external")
    return names


# ---------------------------------------------------------------------------------------
# The daemon side: one monitor callback that works the queue
# ---------------------------------------------------------------------------------------


class CommandServices(Protocol):
    """The daemon's services the command processor uses; ``app.TradingContext`` provides them."""

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def ledger(self) -> LedgerOrders: ...

    @property
    def lifecycle_manager(self) -> CommandLifecycle: ...

    @property
    def account_manager(self) -> AccountSource: ...

    @property
    def alerts(self) -> AlertSender: ...


class CommandProcessor:
    """Executes queued operator commands, in id order, on every monitor wake.

    Registered on the monitor after the lifecycle and before the runners, so a kill pauses
    the runners before they consider an entry in the same wake. ``force_close`` starts each
    close at once; the lifecycle steps it on the following wakes (every 2 s while it works).
    """

    callback_name = "CommandProcessor"   # how the monitor names this callback

    def __init__(self, ctx: CommandServices, runners: Iterable[RunnerControl]) -> None:
        require("CommandProcessor store", ctx.store, Store)
        require("CommandProcessor clock", ctx.clock, Clock)
        require("CommandProcessor ledger", ctx.ledger, LedgerOrders)
        require("CommandProcessor lifecycle_manager", ctx.lifecycle_manager, CommandLifecycle)
        require("CommandProcessor account_manager", ctx.account_manager, AccountSource)
        require("CommandProcessor alerts", ctx.alerts, AlertSender)
        self._ctx = ctx
        self._runners: dict[str, RunnerControl] = {}
        for runner in runners:
            require("CommandProcessor runner", runner, RunnerControl)
            self._runners[runner.name] = runner
        self._applied: dict[int, set[str]] = {}     # kill id -> trades force-closed by this process
        self._errors: dict[int, int] = {}
        self._waiting_logged: set[int] = set()
        # The resume commands already queued when this daemon took its first look: queued before
        # this start, they may lift a pause the start-up checks have just set for a new reason.
        self._stale_resumes: set[int] | None = None
        self._kill_alerted_at: dict[int, float] = {}   # kill command id -> its last kill_command_failing

    def __repr__(self) -> str:
        return f"CommandProcessor(runners={sorted(self._runners)})"

    # ---- monitor callback ---------------------------------------------------------------

    def __call__(self, snapshot: Any) -> None:
        self.process()

    def on_snapshot_error(self, error: Exception) -> None:
        """No account snapshot: commands run all the same (a kill reads the positions it adopts itself)."""
        self.process()

    def process(self) -> None:
        store = self._ctx.store
        try:
            queue = store.commands(OPEN_COMMAND_STATUSES)
        except Exception:  # noqa: BLE001 - the store logged it; next wake tries again
            logger.exception("reading the command queue failed")
            return
        if self._stale_resumes is None:
            self._stale_resumes = {int(c["id"]) for c in queue
                                   if c["kind"] == KIND_RESUME and c["status"] == COMMAND_PENDING}
        for command in queue:
            self._run_one(command)

    def _run_one(self, command: dict) -> None:
        command_id = int(command["id"])
        try:
            if command["kind"] == KIND_KILL:
                self._kill(command)
            elif command["kind"] == KIND_RESUME:
                self._resume(command)
            elif command["kind"] == KIND_PAUSE:
                self._pause(command)
            else:
                raise CommandError(f"unknown command {command['kind']!r}; known: {', '.join(COMMAND_KINDS)}")
        except CommandError as exc:
            self._fail(command, str(exc))
        except Exception as exc:  # noqa: BLE001 - retried next wake, failed after a few
            count = self._errors.get(command_id, 0) + 1
            self._errors[command_id] = count
            logger.exception("command %d (%s) raised (%d in a row)", command_id, command["kind"], count)
            if count < MAX_COMMAND_ERRORS:
                pass
            elif command["kind"] == KIND_KILL:
                self._kill_failing(command_id, count, exc)
            else:
                self._fail(command, f"{type(exc).__name__}: {exc} ({count} times in a row)")
        else:
            self._errors.pop(command_id, None)

    def _kill_failing(self, command_id: int, count: int, error: Exception) -> None:
        """A kill that keeps raising stays open and is retried every wake, never marked failed.

        Why: a failed command is final, so the kill would not be applied again after a restart
        and its trades would go back to their ordinary exits. A person is told instead (CRITICAL
        ``kill_command_failing``, again at most hourly while it lasts).
        """
        now = self._ctx.clock.now()
        last = self._kill_alerted_at.get(command_id)
        if last is not None and now - last < KILL_ERROR_ALERT_EVERY_SECONDS:
            return
        self._kill_alerted_at[command_id] = now
        self._alert("CRITICAL", "kill_command_failing",
                    f"kill command {command_id} has raised {count} times in a row ({type(error).__name__}: {error}); "
                    f"it stays open and is retried every wake: check trading.log and the positions "
                    f"(`python main.py status`)", command_id=command_id, failures=count)

    def _fail(self, command: dict, reason: str) -> None:
        payload = command["payload"]
        asked = (", ".join(f"{key}={value}" for key, value in payload.items()) if isinstance(payload, Mapping)
                 else str(payload))
        logger.error("command %d (%s %s) failed: %s", command["id"], command["kind"], asked or "-", reason)
        try:
            self._ctx.store.update_command(command["id"], COMMAND_FAILED, {**(command["result"] or {}),
                                                                          "error": reason})
        except Exception:  # noqa: BLE001
            logger.exception("could not mark command %d failed", command["id"])

    def _known_strategies(self) -> set[str]:
        names = set(self._runners) | strategy_names_in_store(self._ctx.store)
        names.update(trade.strategy for trade in self._ctx.lifecycle_manager.trades())
        names.discard("external")
        return names

    def _require_known(self, name: str | None) -> None:
        if name is None:
            return
        known = self._known_strategies()
        if name not in known:
            raise CommandError(f"no strategy {name!r}; known: {', '.join(sorted(known)) or 'none'}")

    # ---- resume -------------------------------------------------------------------------

    def _resume(self, command: dict) -> None:
        if self._stale_resumes is not None and int(command["id"]) in self._stale_resumes:
            # Queued while an earlier run was up and never taken: this start's reconciliation may
            # have paused a strategy or blocked a symbol since, for a reason nobody has seen yet.
            raise CommandError("queued before this start and not taken then; the start-up checks may have paused "
                               "for a new reason since: look at the alerts and `python main.py status`, then run "
                               "`python main.py resume` again")
        request = ResumeRequest.from_payload(command["payload"])
        self._require_known(request.strategy)
        store = self._ctx.store
        kept = strategies_under_kill(store, resume_names(store, self._runners, request.strategy))
        # The blocks first, whether the strategy is paused or not (an unpaused strategy, the
        # trades a kill adopted, a strategy a kill keeps paused): a resume is the operator's lift.
        unblocked = self._ctx.lifecycle_manager.release_blocks(request.strategy)
        resumed = resume_runners(store, self._runners, request.strategy, keep_paused=kept)
        result = {"resumed": resumed, "kept_paused": kept, "unblocked": sorted(unblocked)}
        logger.warning("command %d: %s", command["id"], describe_resume(result))
        store.update_command(command["id"], COMMAND_DONE, result)

    # ---- pause --------------------------------------------------------------------------

    def _pause(self, command: dict) -> None:
        request = PauseRequest.from_payload(command["payload"])
        self._require_known(request.strategy)
        result = pause_runner(self._ctx.store, self._runners, request)
        if result is None:
            raise CommandError(f"strategy {request.strategy!r} has no runner here and no stored state to pause")
        logger.warning("command %d: %s", command["id"], describe_pause(request.strategy, result))
        self._ctx.store.update_command(command["id"], COMMAND_DONE, result)

    # ---- kill ---------------------------------------------------------------------------

    def _kill(self, command: dict) -> None:
        request = KillRequest.from_payload(command["payload"])
        if command["status"] == COMMAND_PENDING:
            self._require_known(request.strategy)
            paused = self._pause_for_kill(command["id"], request)
            if not self._may_trade(command["id"]):
                return
            self._start_kill(command, request, paused)
            self._adopt_if_pending(command, kill_just_began=True)
        else:
            if not self._may_trade(command["id"]):
                return
            self._reapply_kill(command)
            self._adopt_if_pending(command, kill_just_began=False)
        self._finish_kill_if_flat(command["id"])

    def _may_trade(self, command_id: int) -> bool:
        """Closing waits while the lifecycle is held at start-up (the positions are not known yet)."""
        hold = self._ctx.lifecycle_manager.hold_reason
        if hold is None:
            return True
        if command_id not in self._waiting_logged:
            self._waiting_logged.add(command_id)
            logger.warning("kill command %d waits: the lifecycle is on hold (%s)", command_id, hold)
        return False

    def _pause_for_kill(self, command_id: int, request: KillRequest) -> list[str]:
        """Pause the affected runners (persisted); idempotent, so a retried kill logs once."""
        reason = kill_pause_reason(command_id)
        names = {request.strategy} if request.strategy else set(self._runners) | set(self._ctx.store.runner_names())
        paused: list[str] = []
        for name in sorted(names):
            runner = self._runners.get(name)
            if runner is not None:
                if not (runner.is_paused and runner.pause_reason == reason):
                    runner.pause(reason)
                paused.append(name)
            elif stored_pause_reason(self._ctx.store, name) == reason or set_stored_pause(self._ctx.store, name,
                                                                                           reason):
                paused.append(name)
        return paused

    def _start_kill(self, command: dict, request: KillRequest, paused: list[str]) -> None:
        """First application: force-close every affected trade, record them, become active."""
        manager = self._ctx.lifecycle_manager
        now = self._ctx.clock.now()
        affected = [trade.id for trade in manager.active_trades(request.strategy)]
        applied = {trade_id for trade_id in affected if self._force_close(trade_id)}
        self._applied[command["id"]] = applied  # a force-close that raised is retried next wake
        result = {"applied_at": now, "request": request.to_payload(), "paused": paused, "trades": affected}
        if request.all_positions:
            # The positions no trade of ours explains are adopted next (``_adopt_if_pending``), from
            # positions read for it; the flag is stored, so a restart before then still adopts.
            result[ADOPT_PENDING] = True
        self._ctx.store.update_command(command["id"], COMMAND_ACTIVE, result)
        command["result"] = result
        logger.warning("kill command %d applied to %s: paused %s; closing %s", command["id"], request.describe(),
                       ", ".join(paused) or "no runner", ", ".join(affected) or "no trade")
        self._alert("CRITICAL", "kill_switch",
                    f"kill switch (command {command['id']}): {request.describe()}; paused "
                    f"{', '.join(paused) or 'no runner'}; closing {len(affected)} trade(s)",
                    command_id=command["id"], trades=affected)

    def _adopt_if_pending(self, command: dict, *, kill_just_began: bool) -> None:
        """``--all-positions``: adopt what the account holds beyond our trades, from positions read now.

        Why a read of its own and not the monitor's last snapshot: that one may be a poll older
        than the kill, and what is adopted must be what the account holds when the kill acts.
        The read is right after the kill began (no close of ours has filled yet, so our
        trades' exposure and the positions agree). When it fails, the adoption waits until
        every trade of the kill has ended, and is made then from a new read: with our closes
        done, a fill of ours on its way can no longer pass for an outside position. (The same
        wait applies to a kill found active after a restart.)
        """
        result = command.get("result") or {}
        if not result.get(ADOPT_PENDING):
            return
        command_id = int(command["id"])
        manager = self._ctx.lifecycle_manager
        if not kill_just_began and any(trade is not None and trade.is_active
                                       for trade in (manager.get(trade_id) for trade_id in result.get("trades", []))):
            return
        try:
            snapshot = self._ctx.account_manager.snapshot()
        except Exception as exc:  # noqa: BLE001 - adopted once the kill's own trades have ended
            logger.warning("kill command %d: the positions to adopt could not be read (%s); adopting once the "
                           "kill's trades have ended", command_id, exc)
            return
        # A symbol one of our active trades trades on may hold a fill of ours the ledger has not
        # polled yet (an open order that filled a moment ago): at the kill's start it would pass
        # for an outside position and be closed twice. Those symbols wait for the second read,
        # made once the kill's own trades have ended; the others are adopted at once.
        skip = frozenset(leg.symbol for trade in manager.active_trades() for leg in trade.legs) \
            if kill_just_began else frozenset()
        deferred = sorted({p.symbol for p in snapshot.positions if p.symbol in skip and abs(p.qty) > 0})
        adopted = manager.adopt_external(snapshot, skip=skip)
        result = {**result, ADOPT_PENDING: bool(deferred), "adopted_from": snapshot.timestamp}
        if adopted is not None:
            result["trades"] = [*result.get("trades", []), adopted]
            self._applied.setdefault(command_id, set()).add(adopted)
        self._ctx.store.update_command(command_id, COMMAND_ACTIVE, result)
        command["result"] = result
        done = (f"positions beyond our trades adopted as trade {adopted}" if adopted
                else "the account holds nothing beyond our trades" + (" on the other symbols" if deferred else ""))
        if deferred:
            done += f"; {', '.join(deferred)} (traded by our trades) adopted once the kill's trades have ended"
        logger.warning("kill command %d: %s", command_id, done)

    def _reapply_kill(self, command: dict) -> None:
        """An active kill this process has not applied (the daemon restarted mid-kill)."""
        applied = self._applied.setdefault(command["id"], set())
        manager = self._ctx.lifecycle_manager
        for trade_id in (command["result"] or {}).get("trades", []):
            if trade_id in applied:
                continue
            trade = manager.get(trade_id)
            if trade is not None and trade.is_active:
                logger.warning("kill command %d: re-applying kill mode to %s after a restart", command["id"],
                               trade_id)
                if not self._force_close(trade_id):
                    continue
            applied.add(trade_id)

    def _force_close(self, trade_id: str) -> bool:
        try:
            self._ctx.lifecycle_manager.force_close(trade_id, EXIT_REASON_KILL)
        except Exception:  # noqa: BLE001 - one trade never blocks the others; retried next wake
            logger.exception("kill: force-close of %s failed", trade_id)
            return False
        return True

    def _finish_kill_if_flat(self, command_id: int) -> None:
        """Done once every affected trade is terminal; the result says how it ended."""
        command = self._ctx.store.command(command_id)
        if command is None or command["status"] != COMMAND_ACTIVE:
            return
        result = dict(command["result"] or {})
        manager = self._ctx.lifecycle_manager
        trades = [manager.get(trade_id) for trade_id in result.get("trades", [])]
        if result.get(ADOPT_PENDING) or any(trade is not None and trade.is_active for trade in trades):
            return
        result.update(self._kill_outcome(result, [trade for trade in trades if trade is not None]))
        self._ctx.store.update_command(command_id, COMMAND_DONE, result)
        self._applied.pop(command_id, None)
        logger.warning("kill command %d done: %s", command_id, kill_summary(result))

    def _kill_outcome(self, result: dict, trades: list[Any]) -> dict:
        applied_at = float(result.get("applied_at") or 0.0)
        # Each trade's own orders (the ledger reads back an archived trade's from the store).
        orders = [order for trade_id in dict.fromkeys(trade.id for trade in trades)
                  for order in self._ctx.ledger.orders(trade_id)]
        return {
            "finished_at": self._ctx.clock.now(),
            "final": {trade.id: {"strategy": trade.strategy, "state": trade.state.value,
                                 "exit_reason": trade.exit_reason, "realized_pnl": trade.realized_pnl}
                      for trade in trades},
            "orders_cancelled": sum(1 for order in orders if order.status is OrderStatus.CANCELED
                                    and order.sent_at < applied_at <= order.updated_at),
            "kill_orders": sum(1 for order in orders if order.intent.family() is Intent.KILL
                               and order.sent_at >= applied_at),
            "positions_left": self._positions_left(),
        }

    def _positions_left(self) -> list[dict] | None:
        """The account's positions now (one request), for the operator's summary."""
        try:
            snapshot = self._ctx.account_manager.snapshot()
        except Exception as exc:  # noqa: BLE001 - a summary, not a decision
            logger.warning("kill summary: positions unavailable: %s", exc)
            return None
        return [{"symbol": position.symbol, "qty": position.signed_qty} for position in snapshot.positions]

    def _alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        send_alert(self._ctx.alerts, logger, level, kind, message, **detail)


def resume_names(store: Store, runners: Mapping[str, RunnerControl], name: str | None) -> list[str]:
    """The strategies a ``resume`` of ``name`` (every strategy when None) is about."""
    return [name] if name else sorted(set(runners) | set(store.runner_names()))


def strategies_under_kill(store: Store, names: Iterable[str]) -> list[str]:
    """The strategies among ``names`` that an open (pending or active) kill command is closing.

    Why: a resume is how an operator lifts a symbol block, and a kill can be stuck on one
    (``close_blocked``). Lifting the kill's pause with it would let the strategy open new
    trades while the kill is still closing the old ones; so a resume keeps those pauses (and
    lifts the blocks), and a resume after the kill is done lifts them.
    """
    wanted = set(names)
    kept: set[str] = set()
    for command in store.commands(OPEN_COMMAND_STATUSES):
        if command["kind"] == KIND_KILL:
            strategy = KillRequest.from_payload(command["payload"]).strategy
            kept |= wanted if strategy is None else wanted & {strategy}
    return sorted(kept)


def resume_runners(store: Store, runners: Mapping[str, RunnerControl], name: str | None, *,
                   keep_paused: Container[str] = ()) -> list[str]:
    """Lift the pause of one strategy or of every paused one, except those in ``keep_paused``
    (``strategies_under_kill``); returns the names resumed."""
    resumed: list[str] = []
    for each in resume_names(store, runners, name):
        if each in keep_paused:
            continue
        runner = runners.get(each)
        if runner is not None:
            if runner.is_paused:
                runner.resume()
                resumed.append(each)
        elif stored_pause_reason(store, each) is not None and set_stored_pause(store, each, None):
            logger.warning("strategy %s resumed (its runner state in the store)", each)
            resumed.append(each)
    return resumed


def pause_runner(store: Store, runners: Mapping[str, RunnerControl], request: PauseRequest, *,
                 configured: bool = False) -> dict | None:
    """Pause one strategy's entries (its runner here, else its stored state).

    A strategy already paused keeps its reason (a kill's pause stays a kill's pause); the
    result says so. A pause that lifts itself (the daily open-failure pause) is replaced, or
    it would end at midnight and take this one with it. None when there is neither a runner
    nor stored state to pause, unless ``configured`` (the caller checked the name is one of
    ``STRATEGIES``): then a paused state is stored for it.
    """
    name = request.strategy
    runner = runners.get(name)
    if runner is not None:
        if runner.paused_for_good:
            return {"paused": [], "already_paused": {name: runner.pause_reason}}
        runner.pause(request.reason)
        return {"paused": [name], "reason": request.reason}
    already = stored_pause_reason(store, name)
    if already is not None and (store.load_runner_state(name) or {}).get("pause_until") is None:
        return {"paused": [], "already_paused": {name: already}}
    if not set_stored_pause(store, name, request.reason, create=configured):
        return None
    logger.warning("strategy %s paused (its runner state in the store): %s", name, request.reason)
    return {"paused": [name], "reason": request.reason}


def describe_pause(name: str, result: Mapping[str, Any]) -> str:
    """What a pause did, in one phrase."""
    if result.get("paused"):
        return f"paused {name} ({result.get('reason') or 'paused'}); its open trades keep their exits"
    already = (result.get("already_paused") or {}).get(name, "paused")
    return f"{name} was already paused ({already}); nothing changed"


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------


def kill_summary(result: Mapping[str, Any]) -> str:
    """One line for people: trades killed, orders cancelled, positions left."""
    final = result.get("final") or {}
    trades = ", ".join(f"{trade_id} {row['state']}" for trade_id, row in final.items()) or "none"
    positions = result.get("positions_left")
    if positions is None:
        left = "positions left: unknown (the account could not be read)"
    elif positions:
        left = "positions left on the account: " + ", ".join(f"{p['symbol']} {p['qty']:+g}" for p in positions)
    else:
        left = "no position left on the account"
    return (f"{len(final)} trade(s) killed ({trades}); {result.get('orders_cancelled', 0)} working order(s) "
            f"cancelled; {result.get('kill_orders', 0)} kill order(s) sent; paused: "
            f"{', '.join(result.get('paused') or []) or 'none'}; {left}")


def describe_resume(result: Mapping[str, Any]) -> str:
    """What a done ``resume`` did: resumed, kept paused for a kill, symbols unblocked."""
    text = f"resumed {', '.join(result.get('resumed') or []) or 'nothing (none was paused)'}"
    if result.get("kept_paused"):
        text += (f"; kept paused while a kill closes their trades: {', '.join(result['kept_paused'])} (resume "
                 f"again once the kill is done)")
    if result.get("unblocked"):
        text += f"; symbols unblocked: {', '.join(result['unblocked'])}"
    return text


def describe_command(command: Mapping[str, Any]) -> str:
    """What the store says about one command, for the command line and ``status``."""
    result = command.get("result") or {}
    head = f"{command['kind']} command {command['id']} {command['status']}"
    if command["status"] == COMMAND_FAILED:
        return f"{head}: {result.get('error', 'no reason recorded')}"
    if command["kind"] == KIND_PAUSE and command["status"] == COMMAND_DONE:
        return f"{head}: {describe_pause(str((command.get('payload') or {}).get('strategy')), result)}"
    if command["kind"] == KIND_RESUME and command["status"] == COMMAND_DONE:
        return f"{head}: {describe_resume(result)}"
    if command["kind"] == KIND_KILL and command["status"] == COMMAND_DONE:
        return f"{head}: {kill_summary(result)}"
    if command["kind"] == KIND_KILL and command["status"] == COMMAND_ACTIVE:
        return (f"{head}: paused {', '.join(result.get('paused') or []) or 'no runner'}; closing "
                f"{', '.join(result.get('trades') or []) or 'no trade'} with reduce-only kill orders "
                f"(`python main.py status` shows the progress)")
    return f"{head} {dict(command.get('payload') or {})}"


# ---------------------------------------------------------------------------------------
# Handing a command to the running daemon (the store is the only channel)
# ---------------------------------------------------------------------------------------


def queue_and_wait(store: Store, kind: str, payload: dict, clock: Clock, *, timeout: float,
                   check_every: float = PICKUP_CHECK_SECONDS) -> tuple[int, dict | None]:
    """Queue a command for the running daemon and wait (on ``clock``) until it takes it.

    Returns ``(command id, command)`` with the command as the daemon left it once it is
    past ``pending``, or ``(command id, None)`` when ``timeout`` passed first (the command
    stays queued: the daemon runs it on a later wake or at its next start).
    """
    command_id = store.add_command(kind, payload)
    deadline = clock.now() + timeout
    while True:
        command = store.command(command_id)
        if command is not None and command["status"] != COMMAND_PENDING:
            return command_id, command
        remaining = deadline - clock.now()
        if remaining <= 0:
            return command_id, None
        clock.sleep(min(check_every, remaining))


__all__ = [
    "CommandProcessor", "CommandError", "KillRequest", "PauseRequest", "ResumeRequest", "FINISHED",
    "queue_and_wait", "pause_runner", "resume_runners", "resume_names", "strategies_under_kill", "describe_resume", "set_stored_pause", "describe_command", "describe_pause",
    "kill_summary", "kill_pause_reason", "KIND_KILL", "KIND_PAUSE", "KIND_RESUME", "PAUSE_SOURCES",
]
