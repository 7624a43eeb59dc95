"""CoincallTrader's command line: ``python main.py`` (same as ``python main.py run``).

``run`` is the daemon: it builds and validates every strategy of ``STRATEGIES`` (a bad one
stops it with exit 2 before any request), wires the services with ``strategy.build_context``,
and runs the monitor loop on the main thread: each wake advances executions and exits (the
lifecycle, first), then lets every strategy runner consider an entry. It never exits by
itself; SIGINT/SIGTERM stop it after the current tick, with no order sent and positions left
as they are (each working order and each trade with exposure is logged).

``check`` validates the same configuration, resolves every strategy's legs against the
exchange and prints them, and sends no order. ``status`` prints a read-only report;
``kill`` and ``resume`` queue an operator command for the running daemon, or run it in this
process when none runs (``commands.py``, docs/OPERATIONS.md).

Before anything trades, the first poll reconciles the store with the exchange
(``reconciliation.py``, docs/RECOVERY.md).

With no configuration at all it runs against the embedded simulator (paper trading), so
a fresh clone works with ``pip install -r requirements.txt && python main.py``.

Exit codes (BEHAVIOUR.md 7.5): 0 after a signal or ``--run-for``; 2 for invalid
configuration or a refused key at start-up, before any request that could trade;
1 when the exchange connection cannot be opened at all; 3 when another daemon holds the
state directory's lock (nothing is sent).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from api_values import finite_number
from clock import Clock, RealClock, SimulatedClock
from commands import CommandProcessor, OperatorRun, run_operator_command
from config import Settings, check_directories, load_settings
from errors import AuthError, ConfigError, TraderError
from strategies import daily_short_strangle, iron_condor, micro_strangle, rfq_endurance, smart_strangle

# The strategies the daemon runs: factories returning a StrategyConfig or a list of them.
# Built and validated (names unique) before the first request of every start.
STRATEGIES: list[Callable[[], Any]] = [micro_strangle, daily_short_strangle, iron_condor, rfq_endurance,
                                       smart_strangle]

logger = logging.getLogger("main")

EXIT_OK = 0
EXIT_STARTUP_FAILURE = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 3

SUBCOMMANDS = ("run", "check", "status", "kill", "resume")
LOG_FILE_NAME = "trading.log"
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUP_COUNT = 5
LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
# The longest single clock.sleep() of the main loop's waits: a signal only sets a flag
# (StopFlag), so this bounds how long the loop takes to notice it (half a second of real time
# on the real clock, less on a faster simulated one).
MAX_SLEEP_SLICE_SECONDS = 0.5


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="CoincallTrader: trades BTC options on Coincall (paper trading on the embedded simulator by default).",
        epilog="With no subcommand, 'run' is assumed: `python main.py --speed 60` == `python main.py run --speed 60`.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the daemon until SIGINT/SIGTERM (the default)")
    run.add_argument(
        "--speed", type=_positive_float, default=None,
        help="simulated seconds per real second (sim only; default 1)",
    )
    run.add_argument(
        "--run-for", type=_positive_float, default=None, metavar="SECONDS",
        help="stop cleanly after this many simulated seconds (sim only)",
    )
    run.add_argument(
        "--log-level", type=str.upper, default=None, choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="overrides LOG_LEVEL",
    )
    run.add_argument(
        "--cancel-open-orders-on-exit", action="store_true",
        help="at SIGINT/SIGTERM, cancel our working open (entry) orders one by one, each logged; "
             "closes and positions are never touched (default: leave every order working)",
    )
    _add_strategy_option(run)
    check = commands.add_parser(
        "check", help="validate every strategy, resolve its legs against the exchange and print them; no order",
    )
    check.add_argument(
        "--log-level", type=str.upper, default=None, choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="overrides LOG_LEVEL",
    )
    _add_strategy_option(check)
    status = commands.add_parser(
        "status", help="trades, working orders, positions and PnL from the store and the exchange; no order",
    )
    status.add_argument("--json", action="store_true", help="one JSON document instead of text")
    kill = commands.add_parser(
        "kill", help="pause strategies and close their positions with reduce-only orders (needs --yes)",
        description="Pause the affected strategies, cancel their working orders and close every position their "
                    "trades hold with reduce-only kill orders. A running daemon executes it on its next tick; "
                    "without one, this process does it and exits when every affected trade is closed.",
    )
    kill.add_argument("--strategy", default=None, metavar="NAME",
                      help="only this strategy's trades and runner (default: every strategy)")
    kill.add_argument("--all-positions", action="store_true",
                      help="also close every other option position of the account (trade sequence 0)")
    kill.add_argument("--yes", action="store_true", help="confirm: without it nothing is done (exit 2)")
    _add_log_level_option(kill)
    resume = commands.add_parser(
        "resume", help="lift the pause of one strategy (or of every paused one)",
        description="Lift the pause left by kill (or any other pause) of strategy NAME, or of every paused "
                    "strategy. A running daemon applies it on its next tick; otherwise the stored state is updated.",
    )
    resume.add_argument("name", nargs="?", default=None, metavar="NAME", help="the strategy (default: all)")
    _add_log_level_option(resume)
    return parser


def _add_log_level_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--log-level", type=str.upper, default=None, choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="overrides LOG_LEVEL",
    )


def _add_strategy_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--strategy", action="append", default=None, metavar="NAME",
        help="only this strategy (repeatable); default: every strategy of STRATEGIES",
    )


def _with_default_command(argv: Sequence[str]) -> list[str]:
    """Insert ``run`` when no subcommand is given, so flags work without the word.

    Only a leading option triggers it: a mistyped subcommand still gets argparse's
    "invalid choice" message instead of being read as an argument of ``run``.
    """
    args = list(argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        return ["run", *args]
    return args


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return build_parser().parse_args(_with_default_command(argv))


# ---------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------


class UtcFormatter(logging.Formatter):
    """Formats each record's own timestamp in UTC (the converter only formats, never reads time)."""

    converter = time.gmtime


def setup_logging(log_dir: Path, level: str) -> Callable[[], None]:
    """Send logs to ``<log_dir>/trading.log`` (rotating) and stderr; returns the undo.

    The undo matters because tests run ``main()`` in-process several times: each run
    removes exactly the handlers it added and restores the root level.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = UtcFormatter(LOG_FORMAT, LOG_DATE_FORMAT)
    file_handler = RotatingFileHandler(
        log_dir / LOG_FILE_NAME, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUP_COUNT, encoding="utf-8",
    )
    stderr_handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    previous_level = root.level
    for handler in (file_handler, stderr_handler):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)

    def undo() -> None:
        for handler in (file_handler, stderr_handler):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)

    return undo


# ---------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------


class StopFlag:
    """Whether (and why) the daemon should stop: written by signal handlers, read by the loop.

    A Python signal handler runs in the main thread between two bytecodes, so it can start
    inside another handler or while that thread holds any lock. ``threading.Event.set()``
    takes the event's lock: a second SIGTERM arriving while the first handler held it
    re-entered ``set()`` and deadlocked the daemon with its state lock held (issue 9,
    finding 3). So the handler's side, ``signalled``, is one plain attribute store: no lock,
    no logging, no I/O, no listener. The reason text and the "stopping: SIGTERM" line are
    produced by normal code after the loop has noticed the flag; waits notice it within one
    clock slice (``wait_until``, ``PositionMonitor.set_stop_check``).
    """

    __slots__ = ("signal_number", "requested")

    def __init__(self) -> None:
        self.signal_number = 0      # the first stop signal; written by the handler only
        self.requested = ""         # a stop asked for by normal code (``--run-for``)

    def signalled(self, signum: int) -> None:
        """The whole of a signal handler's work; safe to re-enter at any point."""
        if not self.signal_number:
            self.signal_number = signum

    def request(self, reason: str) -> None:
        """Stop from normal code; the first reason (signal or request) is the one reported."""
        if not self.is_set:
            self.requested = reason

    @property
    def is_set(self) -> bool:
        return bool(self.signal_number) or bool(self.requested)

    @property
    def reason(self) -> str:
        """``SIGTERM``, ``SIGINT`` or the requested reason; empty while not set."""
        if self.requested:
            return self.requested
        if self.signal_number:
            return signal.Signals(self.signal_number).name
        return ""

    def __repr__(self) -> str:
        return f"StopFlag(is_set={self.is_set}, reason={self.reason!r})"


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_signal_handlers(stop: StopFlag, *, ignore_on_undo: bool = False) -> Callable[[], None]:
    """Route SIGINT/SIGTERM to ``stop.signalled``; returns the undo. No-op outside the main thread.

    The undo restores the previous handlers (tests run ``main()`` in-process), or with
    ``ignore_on_undo`` ignores further stop signals: the process entry point uses it so that
    the second or third signal of a burst arriving after the shutdown is done cannot kill a
    process that is about to exit 0 (or print a KeyboardInterrupt traceback).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}

    def handle(signum: int, _frame: object) -> None:
        stop.signalled(signum)   # nothing else here: see StopFlag

    for signum in STOP_SIGNALS:
        previous[signum] = signal.signal(signum, handle)

    def undo() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if ignore_on_undo else handler)

    return undo


# ---------------------------------------------------------------------------------------
# Reading and formatting exchange data (display only: nothing is invented)
# ---------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    number = finite_number(value)
    return "n/a" if number is None else f"{number:,.{digits}f}"


def fmt_time(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def account_line(summary: Mapping[str, Any]) -> str:
    im_ratio = finite_number(summary.get("imRatio"))
    ratio_text = "n/a" if im_ratio is None else f"{im_ratio * 100:.2f}%"
    return (
        f"equity={fmt(summary.get('equity'))} USD available_margin={fmt(summary.get('availableMargin'))} USD "
        f"IM={fmt(summary.get('imAmount'))} MM={fmt(summary.get('mmAmount'))} IM_ratio={ratio_text} "
        f"uPnL={fmt(summary.get('unrealizedPnL'))}"
    )


def _side_quote(side: Mapping[str, Any] | None) -> str:
    if not side:
        return "n/a"
    return (
        f"bid {fmt(side.get('bid'), 1)} / ask {fmt(side.get('ask'), 1)} / "
        f"mark {fmt(side.get('markPrice'), 1)} / delta {fmt(side.get('delta'), 3)}"
    )


def nearest_expiry_ms(instruments: Sequence[Mapping[str, Any]], now_ms: int) -> int | None:
    """The earliest listed expiry still in the future, or None."""
    expiries = sorted({int(i["expirationTimestamp"]) for i in instruments if "expirationTimestamp" in i})
    upcoming = [e for e in expiries if e > now_ms]
    return upcoming[0] if upcoming else None


def atm_row(chain: Sequence[Mapping[str, Any]], index_price: float) -> Mapping[str, Any] | None:
    """The chain row whose strike is closest to the index."""
    rows = [row for row in chain if finite_number(row.get("strike")) is not None]
    if not rows:
        return None
    return min(rows, key=lambda row: abs(float(row["strike"]) - index_price))


def chain_summary_lines(client: Any, clock: Clock) -> Iterator[str]:
    """A few log lines about the BTC option market, from one instruments and one chain call."""
    index = finite_number(client.index_price())
    instruments = client.instruments("BTC")
    expiries = {int(i["expirationTimestamp"]) for i in instruments if "expirationTimestamp" in i}
    yield (
        f"market: BTC index={fmt(index)} instruments={len(instruments)} "
        f"(active {sum(1 for i in instruments if i.get('isActive', True))}) expiries={len(expiries)}"
    )
    nearest = nearest_expiry_ms(instruments, clock.now_ms())
    if nearest is None:
        yield "chain: no upcoming expiry is listed"
        return
    chain = client.option_chain(end_time_ms=nearest)
    row = atm_row(chain, index) if index is not None else None
    if row is None:
        yield f"chain: nearest expiry {fmt_time(nearest / 1000)} has {len(chain)} strikes; no ATM row (index or strikes missing)"
        return
    yield (
        f"chain: nearest expiry {fmt_time(nearest / 1000)} ({len(chain)} strikes) ATM strike {fmt(row.get('strike'), 0)}: "
        f"CALL {_side_quote(row.get('callOption'))}; PUT {_side_quote(row.get('putOption'))}"
    )


def _read(what: str, fetch: Callable[[], Any]) -> Any:
    """One exchange read for the status line; a failure is logged and becomes None.

    Typed errors (transport, exchange codes) are expected in operation and get one
    WARNING line; anything else is a bug and is logged with its traceback.
    """
    try:
        return fetch()
    except TraderError as exc:
        logger.warning("status: could not read %s: %s", what, exc)
    except Exception:
        logger.exception("status: unexpected error while reading %s", what)
    return None


def status_line(client: Any, clock: Clock, at: float | None = None) -> str:
    """The poll's one-line summary; ``at`` is the poll's start (clock time)."""
    _read("server time", client.sync_time_if_due)  # API.md 2.2: re-measure the offset every 10 min
    index = _read("index price", client.index_price)
    summary = _read("account summary", client.account_summary) or {}
    positions = _read("positions", client.positions)
    reachable = getattr(getattr(client, "reachability", None), "is_up", None)
    return (
        f"status {fmt_time(clock.now() if at is None else at)} index={fmt(index)} equity={fmt(summary.get('equity'))} "
        f"available_margin={fmt(summary.get('availableMargin'))} "
        f"positions={'n/a' if positions is None else len(positions)} "
        f"exchange={'UP' if reachable else 'DOWN' if reachable is not None else 'unknown'}"
    )


# ---------------------------------------------------------------------------------------
# Strategies: built and validated before anything else
# ---------------------------------------------------------------------------------------


def build_strategy_configs(factories: Sequence[Callable[[], Any]]) -> list[Any]:
    """Call every factory; each returns a StrategyConfig or a list of them.

    Raises ``ConfigError`` for the first invalid strategy, a factory returning something
    else, or two strategies with one name. Runs before any request (BEHAVIOUR.md 7.5).
    Every message names the strategy by its ``name``: an error raised inside a factory
    before its ``StrategyConfig`` exists is attributed by ``strategy.factory_failure``.
    """
    from strategy import StrategyConfig, check_unique_names, factory_failure

    configs: list[Any] = []
    for factory in factories:
        label = getattr(factory, "__name__", repr(factory))
        try:
            built = factory()
        except Exception as exc:  # a bug in a strategy file is a configuration error too
            raise factory_failure(factory, exc) from None
        items = built if isinstance(built, (list, tuple)) else [built]
        for item in items:
            if not isinstance(item, StrategyConfig):
                raise ConfigError(f"the factory {label} returned {type(item).__name__} instead of a strategy: "
                                  f"return a StrategyConfig or a list of them")
            configs.append(item)
    check_unique_names(configs)
    return configs


def select_strategies(configs: Sequence[Any], names: Sequence[str] | None) -> list[Any]:
    """The configs named by ``--strategy`` (all when none is given); unknown names are refused."""
    if not names:
        return list(configs)
    known = {config.name: config for config in configs}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"--strategy {', '.join(unknown)}: no such strategy; known: {', '.join(known)}")
    return [known[name] for name in dict.fromkeys(names)]


def check_start_directories(settings: Settings, command: str) -> int | None:
    """Exit 2 with one line when STATE_DIR or LOG_DIR cannot be used; None when they can.

    Before the lock, the logs, the store and the exchange: an unusable directory is a
    configuration error, not a traceback halfway through start-up (issue 9). ``status``
    only reads, so it is not refused for a directory it would never write.
    """
    if command == "status":
        return None
    try:
        check_directories(settings, embedded_state=settings.embeds_simulator)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return None


# ---------------------------------------------------------------------------------------
# The run command
# ---------------------------------------------------------------------------------------


def banner(settings: Settings) -> str:
    if settings.embeds_simulator:
        return "CoincallTrader starting: environment=sim, PAPER TRADING on the embedded simulator"
    if settings.is_sim:
        return f"CoincallTrader starting: environment=sim, PAPER TRADING on the simulator at {settings.base_url}"
    return f"CoincallTrader starting: environment={settings.environment}, REAL exchange at {settings.base_url}"


def choose_clock(settings: Settings, speed: float | None, injected: Clock | None) -> Clock:
    """The clock of this run: the injected one (tests), simulated time in sim, else real time.

    Against a simulator running in its own process (``COINCALL_BASE_URL`` in sim), the
    simulated clock starts at the simulator's own time, so that a daemon restarted an
    hour (of simulated time) later agrees with the exchange about what time it is; pass
    the simulator's ``--speed`` to the daemon too.
    """
    if injected is not None:
        if speed is not None and hasattr(injected, "set_speed"):
            injected.set_speed(speed)
        return injected
    if settings.is_sim:
        start = RealClock().now() if settings.embeds_simulator else remote_simulator_time(settings)
        return SimulatedClock(start=start, speed=speed or 1.0)
    return RealClock()


def remote_simulator_time(settings: Settings) -> float:
    """The external simulator's clock (public ``/time``), or the wall clock if it is unreachable."""
    from exchange_connection import read_server_time

    try:
        return read_server_time(settings)
    except TraderError as exc:
        logger.warning("could not read the simulator's time (%s): starting at the wall clock", exc)
        return RealClock().now()


def wait_until(clock: Clock, wake_at: float, stop: StopFlag) -> None:
    """Sleep until clock time ``wake_at`` in short slices, returning early once ``stop`` is set.

    Slices rather than a blocking wait on something the handler signals: the handler may
    only set a plain flag (``StopFlag``), so the sleeper has to look at it; a slice of
    ``MAX_SLEEP_SLICE_SECONDS`` keeps that look frequent, and on a speed-0 simulated
    clock each slice only moves simulated time.
    """
    while not stop.is_set:
        remaining = wake_at - clock.now()
        if remaining <= 0:
            return
        clock.sleep(min(remaining, MAX_SLEEP_SLICE_SECONDS))


def check_key(connection: Any, settings: Settings) -> int | None:
    """Start-up key check (API.md 1): a refused or read-only key stops us (exit 2).

    An unreachable exchange does not: the daemon keeps running and reports it each poll.
    """
    key_name = settings.credentials.source if settings.credentials is not None else "the embedded simulator's key"
    try:
        info = connection.client.query_api_key()
    except AuthError as exc:
        logger.error("the exchange refused %s (code %s): check the key and TRADING_ENVIRONMENT", key_name, exc.code)
        return EXIT_CONFIG
    except TraderError as exc:
        logger.warning("could not verify the API key at start-up (%s); will keep trying", exc)
        return None
    if isinstance(info, Mapping) and str(info.get("readOnly")) == "1":
        logger.error("%s is a read-only key: create a key with Trade permission and put it in .env", key_name)
        return EXIT_CONFIG
    return None


def log_startup_summary(client: Any, clock: Clock) -> None:
    try:
        offset = client.sync_time()
        logger.info("exchange clock offset %+.3f s", offset)
    except TraderError as exc:
        logger.warning("could not read the exchange time at start-up: %s", exc)
    except Exception:
        logger.exception("reading the exchange time failed at start-up")
    try:
        logger.info("account: %s", account_line(client.account_summary()))
    except TraderError as exc:
        logger.warning("account summary unavailable at start-up: %s", exc)
    except Exception:
        logger.exception("account summary failed at start-up")
    try:
        for line in chain_summary_lines(client, clock):
            logger.info("%s", line)
    except TraderError as exc:
        logger.warning("chain summary unavailable at start-up: %s", exc)
    except Exception:
        logger.exception("chain summary failed at start-up")


def run_loop(client: Any, clock: Clock, settings: Settings, stop: StopFlag, run_for: float | None,
             on_poll: Callable[[float], Any] | None = None) -> None:
    """A plain status loop (one line per poll, no trading), kept for monitoring-only use.

    Polls keep a fixed cadence; never returns because of an error: each failure is logged
    and the next poll retries. The daemon itself runs ``daemon_loop``.
    """
    deadline = clock.now() + run_for if run_for is not None else None
    while True:
        started = clock.now()
        try:
            logger.info("%s", status_line(client, clock, started))
            if on_poll is not None:
                on_poll(started)
        except Exception:
            logger.exception("status poll failed; continuing")
        if stop.is_set:
            return
        if deadline is not None and clock.now() >= deadline:
            stop.request(f"--run-for {run_for:g}s of simulated time elapsed")
            return
        wake_at = started + settings.poll_interval_seconds
        if deadline is not None:
            wake_at = min(wake_at, deadline)
        wait_until(clock, wake_at, stop)
        if stop.is_set:
            return


class StatusReporter:
    """Registered last on the monitor: one status line per poll, from data already fetched.

    It sends no request of its own except an index read that the cache usually answers
    (the runners' data gate keeps it fresh).
    """

    def __init__(self, ctx: Any, runners: Sequence[Any]) -> None:
        self.__qualname__ = "StatusReporter"   # how the monitor names this callback
        self._ctx = ctx
        self._runners = runners
        self._last_snapshot: Any = None

    def __call__(self, snapshot: Any) -> None:
        if snapshot is self._last_snapshot:
            return
        self._last_snapshot = snapshot
        try:
            index = fmt(self._ctx.market_data.index_price(max_age=30.0))
        except TraderError:
            index = "n/a"
        trades = self._ctx.lifecycle_manager.trades()
        active = [t for t in trades if t.is_active]
        logger.info(
            "status %s index=%s equity=%s available_margin=%s positions=%d exchange=%s trades_active=%d "
            "trades_total=%d paused=%s",
            fmt_time(snapshot.timestamp), index, fmt(snapshot.equity), fmt(snapshot.available_margin),
            snapshot.position_count, _reachability_text(self._ctx), len(active), len(trades),
            ",".join(r.name for r in self._runners if r.is_paused) or "-",
        )

    def on_snapshot_error(self, error: Exception) -> None:
        logger.info("status %s snapshot unavailable: %s exchange=%s", fmt_time(self._ctx.clock.now()), error,
                    _reachability_text(self._ctx))


def _reachability_text(ctx: Any) -> str:
    reach = getattr(ctx.account_manager, "reachability", None)
    is_up = getattr(reach, "is_up", None)
    return "UP" if is_up else "DOWN" if is_up is not None else "unknown"


def health_state(ctx: Any, runners: Sequence[Any], started_at: float) -> dict[str, Any]:
    """What the health line shows (BEHAVIOUR.md 7.4), from data we already hold: no request."""
    now = ctx.clock.now()
    snap = ctx.position_monitor.latest
    trades = ctx.lifecycle_manager.trades()
    per_state: dict[str, int] = {}
    for trade in trades:
        per_state[trade.state.value] = per_state.get(trade.state.value, 0) + 1
    state: dict[str, Any] = {
        "uptime_seconds": round(now - started_at, 3),
        "trades_per_state": per_state,
        "index_age_seconds": ctx.market_data.index_age(),
        "index_frozen": ctx.market_data.index_frozen,
        "exchange": _reachability_text(ctx),
        "live_orders": len(ctx.ledger.live_orders()),
        "paused_runners": {r.name: r.pause_reason for r in runners if r.is_paused},
        "breaker_trips": getattr(ctx.lifecycle_manager, "breaker_trips", 0),
        "failing_conditions": [f"{f.strategy}:{f.condition} x{f.consecutive}"
                               for f in ctx.condition_health.unhealthy()],
        "failing_callbacks": ctx.position_monitor.failing_callbacks,
        "persistence_errors": getattr(ctx.store, "write_errors", 0)
        + getattr(ctx.lifecycle_manager, "persistence_errors", 0),
        "snapshot_error": str(ctx.position_monitor.current_error) if ctx.position_monitor.current_error else None,
    }
    warnings: list[str] = []
    if snap is not None:
        state.update(
            equity=snap.equity, available_margin=snap.available_margin,
            margin_utilization=round(snap.margin_utilization, 3), net_delta=round(snap.net_delta, 6),
            position_count=snap.position_count, snapshot_age_seconds=round(now - snap.timestamp, 3),
        )
        if snap.margin_utilization > 80.0:
            warnings.append(f"margin utilization {snap.margin_utilization:.1f}% is above 80%")
    else:
        state["snapshot_age_seconds"] = None
    if state["index_frozen"]:
        warnings.append("index frozen: entries blocked")
    unmanaged = [f"{t.id} ({t.strategy})" for t in ctx.lifecycle_manager.unmanaged_trades()]
    state["unmanaged_trades"] = unmanaged
    if unmanaged:
        warnings.append(f"unmanaged trades (strategy not running; no exit rule): {', '.join(unmanaged)}")
    hold = ctx.lifecycle_manager.hold_reason
    if hold is not None:
        warnings.append(f"lifecycle on hold: {hold}")
    reconciler = getattr(ctx, "reconciler", None)
    report = getattr(reconciler, "last_report", None)
    if report is not None:
        state["reconciliation"] = {"kind": report.kind, "age_seconds": round(now - report.at, 3),
                                   "summary": report.summary()}
    blocked = ctx.ledger.blocked_symbols()
    if blocked:
        state["blocked_symbols"] = blocked
        warnings.append(f"symbols blocked until an operator resumes: {', '.join(blocked)}")
    state["warnings"] = warnings
    return state


def log_shutdown_state(ctx: Any) -> None:
    """Say what stays behind: every working order and every trade holding exposure (7.5)."""
    orders = ctx.ledger.live_orders()
    trades = [t for t in ctx.lifecycle_manager.trades() if t.is_active and t.has_exposure]
    if not orders and not trades:
        logger.info("shutdown: no working order and no trade with exposure")
        return
    lines = [f"{o.symbol} {'BUY' if int(o.side) == 1 else 'SELL'} {o.qty:g} @ {o.price:g} "
             f"clientOrderId={o.client_order_id} ({o.status.value}, trade {o.trade_id})" for o in orders]
    lines += [f"trade {t.id} ({t.strategy}, {t.state.value}) exposure "
              + ", ".join(f"{t.legs[i].symbol} {qty:+g}" for i, qty in sorted(t.exposure().items()))
              for t in trades]
    logger.warning("shutdown leaves %d working order(s) and %d trade(s) with exposure, untouched "
                   "(recovery resolves them at the next start):\n  %s", len(orders), len(trades), "\n  ".join(lines))


def cancel_open_orders_at_exit(ctx: Any) -> None:
    """``--cancel-open-orders-on-exit``: our working entry orders only, one by one, each logged.

    Close, unwind and kill orders stay working: cancelling them could leave exposure
    unmanaged until the next start. Fills seen while cancelling are recorded; the next
    start decides each trade on its fills as usual.
    """
    from trade_execution import Intent

    for order in [o for o in ctx.ledger.live_orders() if o.intent.family() is Intent.OPEN]:
        logger.warning("shutdown: cancelling open order %d (%s %s %g @ %g, trade %s)", order.client_order_id,
                       order.symbol, "BUY" if int(order.side) == 1 else "SELL", order.qty, order.price,
                       order.trade_id)
        try:
            ctx.ledger.cancel_until_final(order)
        except Exception:  # noqa: BLE001 - the next start resolves whatever is left
            logger.exception("shutdown: cancelling order %d failed", order.client_order_id)
            continue
        logger.warning("shutdown: order %d is %s, filled %g", order.client_order_id, order.status.value,
                       order.filled_qty)


def daemon_loop(ctx: Any, runners: Sequence[Any], stop: StopFlag, run_for: float | None,
                on_wake: Callable[[float], Any] | None = None) -> None:
    """The monitor loop on this thread until a signal (or ``--run-for`` simulated seconds).

    ``monitor.run_once()`` ticks and then waits on the clock until the next wake, so on a
    speed-0 simulated clock nothing sleeps for real. A failing iteration is logged and
    retried after one poll interval: the daemon never exits by itself.
    """
    clock, monitor = ctx.clock, ctx.position_monitor
    started_at = clock.now()
    deadline = started_at + run_for if run_for is not None else None
    # The monitor's wait between ticks looks at the flag in every slice: a signal cuts it
    # short, never a tick (the handler itself only sets the flag).
    monitor.set_stop_check(lambda: stop.is_set)
    try:
        while not stop.is_set:
            try:
                monitor.run_once()
            except Exception:
                logger.exception("monitor iteration failed; retrying after one poll interval")
                wait_until(clock, clock.now() + monitor.poll_interval, stop)
            try:
                ctx.health.maybe_report(health_state(ctx, runners, started_at))
                if on_wake is not None:
                    on_wake(clock.now())
            except Exception:
                logger.exception("health report or checkpoint failed; continuing")
            if deadline is not None and clock.now() >= deadline and not stop.is_set:
                stop.request(f"--run-for {run_for:g}s of simulated time elapsed")
    finally:
        monitor.set_stop_check(None)


def _recover(ctx: Any) -> bool:
    """Reload our trades and orders from the store before any runner exists; True if it worked."""
    recover = getattr(ctx.lifecycle_manager, "recover", None)
    if not callable(recover):
        return True
    try:
        report = recover()
    except Exception:
        logger.exception("restart recovery failed: every strategy starts paused")
        return False
    logger.info("recovery: %s", report)
    return True


def _pause_if_unsafe(ctx: Any, runners: Sequence[Any], recovered: bool) -> None:
    """No new entries after a failed recovery (exits still run).

    A quarantined store is judged by the start-up reconciliation on the first poll: every
    strategy is paused only if the exchange shows positions or orders of ours.
    """
    if not recovered:
        for runner in runners:
            runner.pause("recovery failed at start-up")
    reconciler = getattr(ctx, "reconciler", None)
    if reconciler is not None:
        reconciler.attach_runners(runners)
    for trade in ctx.lifecycle_manager.unmanaged_trades():
        logger.warning("trade %s belongs to strategy %r, which is not running: no exit rule applies (expiry "
                       "still does; `python main.py kill` can close it)", trade.id, trade.strategy)


def _build_context(settings: Settings, clock: Clock, *, state_dir: Any = None) -> Any:
    from strategy import build_context

    return build_context(
        settings, clock=clock, poll_interval=settings.poll_interval_seconds,
        state_dir=settings.state_dir if state_dir is None else state_dir, log_dir=settings.log_dir,
    )


def run(args: argparse.Namespace, settings: Settings, clock: Clock, stop: StopFlag, configs: Sequence[Any]) -> int:
    """One daemon per state directory: the lock comes before any request or store write."""
    from instance_lock import InstanceLock

    lock = InstanceLock(settings.state_dir)
    if not lock.acquire():
        message = (f"another CoincallTrader daemon (pid {lock.holder() or '?'}) holds {lock.path}: "
                   f"stop it first, or give this one its own STATE_DIR")
        logger.error("%s", message)
        print(message, file=sys.stderr)
        return EXIT_LOCKED
    try:
        return _run_locked(args, settings, clock, stop, configs)
    finally:
        lock.release()


class StateIdentityGate:
    """The state directory belongs to one exchange and account (docs/RECOVERY.md row E1).

    ``verify_at_start`` reads the account (the key's ``userId``) and compares it, with the
    environment and the exchange, to ``<STATE_DIR>/exchange_identity.json`` (written on the
    first start; adopted, and logged, for a directory that has none). Another exchange or
    account → exit 2 with one line, before anything is reconciled or traded. When the
    exchange cannot be read at start the daemon does not exit (README, exit codes): the gate
    becomes a start-up check of the reconciler, so nothing is reconciled, released or
    traded until it has passed; a mismatch found then stops the daemon with exit 2.
    """

    def __init__(self, ctx: Any, settings: Settings, stop: StopFlag) -> None:
        self._ctx = ctx
        self._settings = settings
        self._stop = stop
        self.verified = False
        self.refusal: str | None = None

    def verify_at_start(self) -> int | None:
        from state_identity import StateIdentityError

        try:
            self._verify()
        except StateIdentityError as exc:
            return self.refuse(str(exc))
        except TraderError as exc:
            logger.warning("could not read the account to check which exchange %s belongs to (%s): nothing is "
                           "reconciled or traded until it can", self._settings.state_dir, exc)
            self._ctx.reconciler.add_startup_check(self)
        return None

    def __call__(self) -> None:
        """The reconciler's start-up check: raises ``TraderError`` until verified."""
        from state_identity import StateIdentityError

        if self.verified:
            return
        try:
            self._verify()
        except StateIdentityError as exc:
            self.refusal = str(exc)
            self._stop.request("the state directory belongs to another exchange")
            raise

    def refuse(self, message: str) -> int:
        logger.error("%s", message)
        print(f"configuration error: {message}", file=sys.stderr)
        return EXIT_CONFIG

    def _verify(self) -> None:
        from state_identity import check_state_identity, exchange_identity

        connection = self._ctx.connection
        current = exchange_identity(self._settings.environment, self._settings.base_url,
                                    embedded=connection.is_embedded, account_id=self._account_id(connection.client))
        result = check_state_identity(self._settings.state_dir, current)
        self.verified = True
        if not result.adopted:
            return
        if self._ctx.store.created:
            self._ctx.reconciler.note_new_state_dir()
        else:
            logger.warning("state directory %s had no exchange record: adopted %s", self._settings.state_dir,
                           current.describe())

    @staticmethod
    def _account_id(client: Any) -> Any:
        """The account's userId (the key query, else the user info); refused when neither has one."""
        from state_identity import StateIdentityError

        for read in (client.query_api_key, client.user_info):
            info = read()
            if isinstance(info, Mapping) and info.get("userId") not in (None, ""):
                return info["userId"]
        raise StateIdentityError("the exchange reported no account id (userId) for this key, so the state "
                                 "directory's exchange cannot be checked: check the key and COINCALL_BASE_URL")


def store_lost_reaction(ctx: Any) -> Callable[[str, Path | None], None]:
    """What the daemon does when its store file is lost while it runs (row L1): once."""
    from alerts import send_alert

    def react(problem: str, copy: Path | None) -> None:
        path = ctx.store.relocated_from or ctx.store.path
        ctx.lifecycle_manager.hold_entries("state_store_lost", f"state store {path}: {problem}")
        if copy is not None:
            fix = (f"everything the daemon knew is in {copy}, where it writes from now on: stop the daemon "
                   f"(SIGTERM) when convenient, move whatever is at {path} aside, move {copy} to {path}, and start "
                   f"again; the start compares it with the exchange's order history")
        else:
            fix = (f"no copy could be made: stop the daemon when its exits allow; the next start quarantines or "
                   f"replaces {path}, starts every strategy paused and moves the trade sequence past every order "
                   f"of ours on the exchange")
        send_alert(ctx.alerts, logger, "CRITICAL", "state_store_lost",
                   f"state store {path}: {problem} while the daemon runs. No new trade is opened; exits and closes "
                   f"go on from memory. What to do: {fix}", problem=problem,
                   recovery_copy=str(copy) if copy is not None else None)

    return react


def _run_locked(args: argparse.Namespace, settings: Settings, clock: Clock, stop: StopFlag,
                configs: Sequence[Any]) -> int:
    from operations import TradesSnapshotExporter
    from persistence import StoreWatch
    from strategy import StrategyRunner

    logger.info("%s", banner(settings))
    logger.info("settings: %s", settings.describe())
    logger.info("strategies: %s", ", ".join(config.name for config in configs) or "none")
    try:
        ctx = _build_context(settings, clock)
    except Exception:
        logger.exception("could not open the exchange connection or the state store")
        return EXIT_STARTUP_FAILURE
    if settings.is_sim:
        # After open_exchange: a restored paper account may have moved the clock forward.
        logger.info("simulated time %s, speed %s", fmt_time(clock.now()), getattr(clock, "speed", "n/a"))
    try:
        recovered = _recover(ctx)
        try:
            runners = [StrategyRunner(config, ctx) for config in configs]
        except ConfigError as exc:
            logger.error("configuration error: %s", exc)
            print(f"configuration error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        refused = check_key(ctx.connection, settings)
        if refused is not None:
            return refused
        identity = StateIdentityGate(ctx, settings, stop)
        refused = identity.verify_at_start()
        if refused is not None:
            return refused
        log_startup_summary(ctx.http, clock)
        _pause_if_unsafe(ctx, runners, recovered)
        # Before the runners: a store lost under us stops entries in the same wake (row L1).
        ctx.position_monitor.register(StoreWatch(ctx.store, clock, store_lost_reaction(ctx)))
        ctx.position_monitor.register(CommandProcessor(ctx, runners))  # kill/resume queued by the command line
        for runner in runners:
            ctx.position_monitor.register(runner)
        ctx.position_monitor.register(StatusReporter(ctx, runners))
        exporter = TradesSnapshotExporter(settings.state_dir)

        def on_wake(now: float) -> None:
            ctx.connection.checkpoint(now)
            if ctx.store.check_file() is None and ctx.store.relocated_from is None:
                # The exporter opens STATE_DIR/trader.db by name: never a file that is not ours (row L1).
                exporter.maybe_export(now)

        daemon_loop(ctx, runners, stop, args.run_for, on_wake=on_wake)
        if identity.refusal is not None:
            return identity.refuse(identity.refusal)
        logger.info("stopping: %s", stop.reason or "requested")
        if getattr(args, "cancel_open_orders_on_exit", False):
            cancel_open_orders_at_exit(ctx)
        log_shutdown_state(ctx)
        for runner in runners:
            logger.info("strategy %s: %s", runner.name, runner.stats)
    finally:
        ctx.close()
    logger.info("stopped cleanly")
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# The check command
# ---------------------------------------------------------------------------------------


def check(settings: Settings, clock: Clock, configs: Sequence[Any]) -> int:
    """Resolve every strategy's legs against the exchange and print them; no order, no state."""
    from option_selection import resolve_legs
    from trade_execution import LegTarget

    logger.info("%s", banner(settings).replace("starting", "checking"))
    try:
        ctx = _build_context(settings, clock, state_dir=":memory:")
    except Exception:
        logger.exception("could not open the exchange connection")
        return EXIT_STARTUP_FAILURE
    failures = 0
    try:
        refused = check_key(ctx.connection, settings)
        if refused is not None:
            return refused
        for config in configs:
            failures += _check_strategy(config, ctx, resolve_legs, LegTarget)
    finally:
        ctx.close()
    print(f"check: {len(configs) - failures} of {len(configs)} strategies OK; no order was sent")
    return EXIT_CONFIG if failures else EXIT_OK


def _check_strategy(config: Any, ctx: Any, resolve_legs: Callable[..., Any], leg_target: Any) -> int:
    """Print one strategy's resolution; returns 1 when it cannot trade as configured."""
    try:
        for cond in config.all_conditions():
            cond_check = getattr(cond, "validate_at_start", None)
            if callable(cond_check):
                cond_check(ctx.clock.now())
        legs = resolve_legs(config.legs, ctx.market_data)
    except (ConfigError, TraderError) as exc:
        print(f"{config.name}: FAILED: {exc}")
        return 1
    targets = [leg_target(leg.index, leg.symbol, int(leg.side), leg.qty) for leg in legs]
    mode = ctx.executor.route(config.execution_mode, targets, legs[0].index_price)
    print(f"{config.name}: {len(legs)} legs at index {legs[0].index_price:,.2f}, execution {config.execution_mode}"
          f" -> {mode}")
    for leg in legs:
        row = leg.row
        print(f"  leg {leg.index}: {'BUY' if int(leg.side) == 1 else 'SELL'} {leg.qty:g} {leg.symbol} "
              f"(strike {leg.strike:,.0f}, expiry {fmt_time(leg.expiry_ms / 1000)}) bid {fmt(row.bid)} "
              f"ask {fmt(row.ask)} mark {fmt(row.mark)} delta {fmt(row.delta, 3)}")
    print(f"  entry: {[getattr(c, 'name', repr(c)) for c in config.entry_conditions]}")
    print(f"  exit:  {[getattr(c, 'name', repr(c)) for c in config.exit_conditions] or 'none (expiry or kill)'}")
    return 0


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def status(settings: Settings, clock: Clock, *, as_json: bool = False) -> int:
    """Read-only report (no lock, no order): the store, then the exchange when reachable."""
    from operations import format_status, status_json, status_report

    report = status_report(settings, clock)
    print(status_json(report) if as_json else format_status(report))
    return EXIT_OK


def main(
    argv: Sequence[str] | None = None,
    *,
    clock: Clock | None = None,
    env: Mapping[str, str] | None = None,
    dotenv_path: str | None = ".env",
    strategies: Sequence[Callable[[], Any]] | None = None,
    ignore_late_signals: bool = False,
) -> int:
    """Entry point; returns the exit code. Tests call it in-process with their own clock and env
    (and may replace ``STRATEGIES`` with ``strategies=``).

    ``ignore_late_signals`` (the ``python main.py`` process only): once the run is over, a
    SIGINT/SIGTERM is ignored instead of restoring the default handlers, which would let the
    tail of a signal burst kill the exiting process or print a KeyboardInterrupt traceback.
    """
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        settings = load_settings(env, dotenv_path=dotenv_path)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    refused = check_start_directories(settings, args.command)
    if refused is not None:
        return refused
    speed, run_for = getattr(args, "speed", None), getattr(args, "run_for", None)
    if not settings.is_sim and (speed is not None or run_for is not None):
        print(
            f"configuration error: --speed and --run-for act on simulated time and need TRADING_ENVIRONMENT=sim "
            f"(it is {settings.environment}): remove them",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.command == "status":
        return status(settings, clock or RealClock(), as_json=args.json)
    if args.command in ("kill", "resume"):  # commands.py: queue for a running daemon, or act in-process
        return run_operator_command(args, OperatorRun(
            settings=settings, factories=STRATEGIES if strategies is None else strategies,
            app=sys.modules[__name__], clock=clock))
    try:
        configs = select_strategies(build_strategy_configs(STRATEGIES if strategies is None else strategies),
                                    args.strategy)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        undo_logging = setup_logging(settings.log_dir, args.log_level or settings.log_level)
    except OSError as exc:
        print(
            f"configuration error: LOG_DIR={str(settings.log_dir)!r} is not usable ({exc.strerror}): "
            f"choose a writable directory",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    stop = StopFlag()
    undo_signals = install_signal_handlers(stop, ignore_on_undo=ignore_late_signals)
    try:
        chosen_clock = choose_clock(settings, speed, clock)
        if args.command == "check":
            return check(settings, chosen_clock, configs)
        return run(args, settings, chosen_clock, stop, configs)
    finally:
        undo_signals()
        undo_logging()


if __name__ == "__main__":
    sys.exit(main(ignore_late_signals=True))
