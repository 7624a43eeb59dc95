"""CoincallTrader's command line: ``python main.py`` (same as ``python main.py run``).

``run`` is the daemon: it builds and validates every strategy of ``STRATEGIES`` (a bad one
stops it with exit 2 before any request), then hands over to ``app.py``, which wires the
services, runs the start-up (lock, exchange, store, recovery, reconciliation) and the monitor
loop on the main thread: each wake advances executions and exits (the lifecycle, first),
then lets every strategy runner consider an entry. It never exits by itself; SIGINT/SIGTERM
stop it after the current tick, with no order sent and positions left as they are (each
working order and each trade with exposure is logged).

``check`` validates the same configuration, resolves every strategy's legs against the
exchange and prints them, and sends no order. ``status`` prints a read-only report;
``kill``, ``pause`` and ``resume`` queue an operator command for the running daemon, or run it
in this process when none runs (``operator_cli.py``, docs/OPERATIONS.md, docs/DASHBOARD.md). ``record`` appends the
exchange's option chain to a history file every ``--interval`` seconds (``recorder.py``,
docs/HISTORY.md) and sends no order.

This module owns what is the command line's alone: the arguments, the log handlers, the
signal handlers and what is printed; it hands the rest plain values and callables.

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
import os
import signal
import sys
import tempfile
import threading
import webbrowser
from dataclasses import replace
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from app import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_STARTUP_FAILURE,
    RunPlan,
    TradingContext,
    banner,
    check_key,
    choose_clock,
    open_context,
    run_daemon,
)
from backtest import (
    DEFAULT_DAYS,
    DEFAULT_POLL_SECONDS,
    DEFAULT_SEED,
    check_scenario,
    choose_period,
    default_out_dir,
    history_period,
    refuse_used_out_dir,
    run_backtest,
)
from backtest_report import REPORT_FILE
from clock import Clock, RealClock
from conditions import condition_name
from config import Settings, check_directories, load_settings
from display import fmt, fmt_stamp, fmt_time
from doctor import DoctorOptions, DoctorReport, refuse_orders, run_doctor
from errors import ConfigError, TraderError
from operator_cli import OperatorRun, run_operator_command
from operations import format_status, status_json, status_report
from notifications import Redactor
from option_selection import resolve_legs
from recorder import RecordPlan, run_record
from stop_flag import StopFlag
from strategies import SHIPPED_STRATEGIES
from strategies import daily_short_strangle, iron_condor, micro_strangle, rfq_endurance, smart_strangle
from strategy import StrategyConfig, route_trade
from strategy_factories import build_strategy_configs
from sweep import default_sweep_out, run_sweep
from sweep_spec import load_sweep

# The strategies the daemon runs: factories returning a StrategyConfig or a list of them.
# Built and validated (names unique) before the first request of every start.
STRATEGIES: list[Callable[[], Any]] = [micro_strangle, daily_short_strangle, iron_condor, rfq_endurance,
                                       smart_strangle]

logger = logging.getLogger("main")

LOG_FILE_NAME = "trading.log"
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUP_COUNT = 5
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Loggers of the HTTP libraries, kept at WARNING: at DEBUG they log request paths (setup_logging).
QUIET_LIBRARY_LOGGERS = ("urllib3", "requests")
# Where a record keeps its stamp once the first handler formatted it (file and stderr agree).
_STAMP_ATTRIBUTE = "clock_stamp"

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
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
        help="simulated seconds per real second of waiting (sim only; default 1; lock-step with the embedded simulator)",
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
    backtest = commands.add_parser(
        "backtest", help="run the strategies over a simulated period on the embedded simulator, as fast as possible",
        description="Runs the configured strategies (or --strategy) through the daemon's own code against the "
                    "embedded simulator on lock-step simulated time, with no pacing. Everything is written under "
                    "--out: the state, the log, trades.csv, summary.json and report.html. Never touches a live account.",
    )
    backtest.add_argument("--days", type=_positive_float, default=None,
                          help=f"length of the period (default {DEFAULT_DAYS:g}; with neither --from nor --to the "
                               f"period ends today 00:00 UTC)")
    backtest.add_argument("--from", dest="start", default=None, metavar="DATE",
                          help="start, YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")
    backtest.add_argument("--to", dest="end", default=None, metavar="DATE", help="end, same forms as --from")
    backtest.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"the simulated market's seed "
                                                                         f"(default {DEFAULT_SEED})")
    backtest.add_argument("--poll", type=_positive_float, default=DEFAULT_POLL_SECONDS,
                          help=f"seconds between two account polls (default {DEFAULT_POLL_SECONDS:g})")
    backtest.add_argument("--scenario", default=None, metavar="NAME",
                          help="a market scenario instead of the plain synthetic market: crash-day, vol-spike, "
                               "expiry-gap or quiet-week")
    backtest.add_argument("--market", default="synthetic", metavar="synthetic|FILE",
                          help="the market: the simulator's synthetic one (default) or a recorded option-chain file "
                               "(Tardis options_chain CSV, .gz allowed; docs/HISTORY.md) replayed with fills only "
                               "against its recorded quotes; the period defaults to the whole recording")
    backtest.add_argument("--out", type=Path, default=None, metavar="DIR",
                          help="where to write the run (default backtests/<start>-<days>d-seed<seed>); must be empty")
    backtest.add_argument("--open", action="store_true",
                          help="open report.html in the default browser at the end (nothing happens without one)")
    _add_log_level_option(backtest)
    _add_strategy_option(backtest)
    record = commands.add_parser(
        "record", help="append Coincall's option chain to a history file every --interval seconds, until stopped",
        description="Polls the configured exchange's public market data (instruments, index, one chain call per "
                    "expiry) and appends one row per option in the Tardis options_chain layout with exchange "
                    "'coincall' (USD prices; docs/HISTORY.md), for replay with the simulator. Sends no order.",
    )
    record.add_argument("--out", type=Path, required=True, metavar="FILE", help="the CSV to append to")
    record.add_argument("--interval", type=_positive_float, default=60.0, metavar="SECONDS",
                        help="seconds between two polls (default 60)")
    record.add_argument("--polls", type=int, default=None, metavar="N", help="stop after N polls (default: never)")
    _add_log_level_option(record)
    sweep = commands.add_parser(
        "sweep", help="backtest one strategy over a grid of parameters (FILE.toml), locally or on a Dask cluster",
        description="Runs one backtest per combination of the sweep file's parameters (docs/SWEEPS.md), on local "
                    "processes or on a Dask cluster, and writes results.jsonl (one line per finished combination), "
                    "ranking.csv, heatmap.svg and sweep.html under --out. Run it again to resume.",
    )
    sweep.add_argument("file", type=Path, metavar="FILE.toml", help="the sweep file")
    sweep.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="the sweep's directory (default backtests/sweeps/<file name>); the same one resumes")
    sweep.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="local processes (default: the CPU count)")
    sweep.add_argument("--cluster", default=None, metavar="ADDRESS",
                       help="run on this Dask scheduler instead, e.g. tcp://10.0.0.5:8786")
    doctor = commands.add_parser(
        "doctor", help="check the configured exchange, key, clock, payloads, state and strategies; no order unless "
                       "--orders",
        description="Read-only checks against the configured exchange (sim, testnet or production), one line each, "
                    "PASS / WARN / FAIL with the fix (docs/DOCTOR.md). Exit 0 when nothing FAILs, 1 on a FAIL, 2 "
                    "for a bad configuration.",
    )
    doctor.add_argument("--json", action="store_true", help="one JSON document instead of text")
    doctor.add_argument("--orders", action="store_true",
                        help="also the order round trip and the probes (tiny post-only orders, never marketable, "
                             "always cancelled)")
    doctor.add_argument("--i-understand", action="store_true",
                        help="allow --orders in production (refused without it)")
    doctor.add_argument("--write-overrides", action="store_true",
                        help="write what --orders learned into the exchange override file the daemon reads")
    doctor.add_argument("--capture", type=Path, default=None, metavar="DIR",
                        help="write every answer received, redacted, into DIR (one JSON file per request)")
    doctor.add_argument("--samples", type=_positive_int, default=3, metavar="N",
                        help="requests per endpoint for the latency figures (default 3)")
    _add_log_level_option(doctor)
    _add_strategy_option(doctor)
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
                      help="also close every other option and perpetual position of the account "
                           "(adopted as a new trade of strategy 'external')")
    kill.add_argument("--yes", action="store_true", help="confirm: without it nothing is done (exit 2)")
    _add_log_level_option(kill)
    resume = commands.add_parser(
        "resume", help="lift the pause of one strategy (or of every paused one)",
        description="Lift the pause left by kill (or any other pause) of strategy NAME, or of every paused "
                    "strategy. A running daemon applies it on its next tick; otherwise the stored state is updated.",
    )
    resume.add_argument("name", nargs="?", default=None, metavar="NAME", help="the strategy (default: all)")
    _add_log_level_option(resume)
    pause = commands.add_parser(
        "pause", help="stop one strategy's new entries (its open trades keep their exits)",
        description="Pause strategy NAME: it opens no new trade until `resume NAME`; its open trades keep their "
                    "exit rules. A running daemon applies it on its next tick; otherwise the stored state is updated.",
    )
    pause.add_argument("name", metavar="NAME", help="the strategy")
    _add_log_level_option(pause)
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


class ClockFormatter(logging.Formatter):
    """Stamps every line with the run's own clock, in UTC: ``2026-03-02 10:00:00``.

    Why: a line must carry one time only. In sim the daemon lives on simulated time (a
    backtest crosses days in seconds), and ``alerts.log``, the health line and the event
    journal are stamped by the same clock; a wall-clock stamp in front of a simulated
    instant made two clocks on one line. In testnet and production the clock is the wall
    clock, so the stamp is real UTC time. Without a clock (nothing chose one yet) the
    record's own creation time is used.

    The stamp is read once per record and kept on it, so the file and stderr show the same
    time even when a handler formats the record later than another.
    """

    def __init__(self, clock: Clock | None, secrets: Sequence[str] = ()) -> None:
        super().__init__(LOG_FORMAT)
        self._clock = clock
        self._redact = Redactor((secret, "<redacted>") for secret in secrets)

    def format(self, record: logging.LogRecord) -> str:
        """The line with every configured secret replaced, traceback included: a library's debug
        line or an exception's text may quote a URL that carries a token."""
        return self._redact(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = record.__dict__.get(_STAMP_ATTRIBUTE)
        if not isinstance(stamp, str):
            stamp = fmt_stamp(record.created if self._clock is None else self._clock.now())
            record.__dict__[_STAMP_ATTRIBUTE] = stamp
        return stamp


def setup_logging(log_dir: Path, level: str, clock: Clock | None = None, *,
                  console_level: str | None = None, secrets: Sequence[str] = ()) -> Callable[[], None]:
    """Send logs to ``<log_dir>/trading.log`` (rotating) and stderr; returns the undo.

    ``clock`` stamps the lines (``ClockFormatter``): the run's own clock, simulated in sim.
    ``console_level`` raises the bar for stderr only (a backtest keeps stderr for its
    progress line and warnings, and the whole log in the file).

    ``secrets`` are redacted from every line. The HTTP libraries' own loggers stay at WARNING
    whatever ``level`` is: at DEBUG urllib3 logs each request's path, and a Telegram bot's or a
    webhook's path carries its token.

    The undo matters because tests run ``main()`` in-process several times: each run
    removes exactly the handlers it added and restores the root level.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = ClockFormatter(clock, secrets)
    file_handler = RotatingFileHandler(
        log_dir / LOG_FILE_NAME, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUP_COUNT, encoding="utf-8",
    )
    stderr_handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    previous_level = root.level
    for handler in (file_handler, stderr_handler):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    if console_level is not None:
        stderr_handler.setLevel(console_level)
    root.setLevel(level)
    quiet = {name: logging.getLogger(name).level for name in QUIET_LIBRARY_LOGGERS}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)

    def undo() -> None:
        for handler in (file_handler, stderr_handler):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)
        for name, library_level in quiet.items():
            logging.getLogger(name).setLevel(library_level)

    return undo


# ---------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------


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
# Strategies: built and validated before anything else
# ---------------------------------------------------------------------------------------


def select_strategies(configs: Sequence[StrategyConfig], names: Sequence[str] | None) -> list[StrategyConfig]:
    """The configs named by ``--strategy`` (all when none is given); unknown names are refused."""
    if not names:
        return list(configs)
    known = {config.name: config for config in configs}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"--strategy {', '.join(unknown)}: no such strategy; known: {', '.join(known)}")
    return [known[name] for name in dict.fromkeys(names)]


def with_shipped_strategies(factories: Sequence[Callable[..., Any]]) -> list[Callable[..., Any]]:
    """The factories ``backtest --strategy`` and ``sweep`` may name: the configured ones, then every
    shipped factory (``strategies.SHIPPED_STRATEGIES``) whose strategies take no configured name.

    A configured strategy wins a name it shares with a shipped one. ``run`` and ``check`` never
    call this: the daemon trades ``STRATEGIES`` only. Raises ``ConfigError`` for an invalid
    configured strategy, as ``build_strategy_configs`` does.
    """
    taken = {config.name for config in build_strategy_configs(factories)}
    extended = list(factories)
    for factory in SHIPPED_STRATEGIES:
        if factory in extended:
            continue
        names = {config.name for config in build_strategy_configs([factory])}
        if names & taken:
            continue
        extended.append(factory)
        taken |= names
    return extended


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
# The check command
# ---------------------------------------------------------------------------------------


def check(settings: Settings, clock: Clock, configs: Sequence[StrategyConfig]) -> int:
    """Resolve every strategy's legs against the exchange and print them; no order, no state."""
    logger.info("%s", banner(settings).replace("starting", "checking"))
    with tempfile.TemporaryDirectory(prefix="check-sim-") as scratch:
        if settings.embeds_simulator:   # a throwaway paper account: a running daemon's is never rewritten
            settings = replace(settings, sim_state_file=Path(scratch) / "simulator.json", sim_checkpoint_seconds=None)
        try:
            ctx = open_context(settings, clock, state_dir=":memory:")
        except Exception:
            logger.exception("could not open the exchange connection")
            return EXIT_STARTUP_FAILURE
        failures = 0
        try:
            refused = check_key(ctx.http, settings)
            if refused is not None:
                return refused
            for config in configs:
                failures += _check_strategy(config, ctx)
        finally:
            ctx.close()
    print(f"check: {len(configs) - failures} of {len(configs)} strategies OK; no order was sent")
    return EXIT_CONFIG if failures else EXIT_OK


def _check_strategy(config: StrategyConfig, ctx: TradingContext) -> int:
    """Print one strategy's resolution; returns 1 when it cannot trade as configured."""
    try:
        config.validate_at_start(ctx.clock.now())
        legs = resolve_legs(config.legs, ctx.market_data)
    except (ConfigError, TraderError) as exc:
        print(f"{config.name}: FAILED: {exc}")
        return 1
    mode = route_trade(config, legs, ctx.executor)   # the runner's own routing call
    print(f"{config.name}: {len(legs)} legs at index {legs[0].index_price:,.2f}, execution {config.execution_mode}"
          f" -> {mode}, underlying {config.underlying}")
    for leg in legs:
        row, contract = leg.row, leg.contract
        what = ("perpetual" if contract.is_perpetual
                else f"strike {contract.strike:,.0f}, expiry {fmt_time(contract.expiry_seconds)}")
        print(f"  leg {leg.index}: {leg.side.name} {leg.qty:g} {leg.symbol} ({what}) bid {fmt(row.bid)} "
              f"ask {fmt(row.ask)} mark {fmt(row.mark)} delta {fmt(row.delta, 3)}")
    print(f"  entry: {', '.join(condition_name(c) for c in config.entry_conditions) or 'none'}")
    print(f"  exit:  {', '.join(condition_name(c) for c in config.exit_conditions) or 'none (expiry or kill)'}")
    return 0


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def status(settings: Settings, clock: Clock, *, as_json: bool = False) -> int:
    """Read-only report (no lock, no order): the store, then the exchange when reachable."""
    report = status_report(settings, clock)
    print(status_json(report) if as_json else format_status(report))
    return EXIT_OK


def quiet_on_closed_pipe(command: Callable[[], int]) -> int:
    """Run a command that prints; when its reader has gone (``status | head``), end quietly.

    Why: the reader closing the pipe is the reader's choice, not an error of ours, yet Python
    raises ``BrokenPipeError`` at the next write and once more when it flushes stdout at
    exit (a traceback and "Exception ignored" on the operator's terminal). On the first one
    stdout is pointed at ``/dev/null`` (nothing more can be read anyway) and the command ends
    with exit 0. Everything the command opened is closed by its own ``finally`` blocks on
    the way out; only the printing stops.
    """
    try:
        code = command()
        sys.stdout.flush()   # a cut pipe shows here, not at the interpreter's exit
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
        return EXIT_OK


def backtest_command(args: argparse.Namespace, factories: Sequence[Callable[[], Any]]) -> int:
    """``python main.py backtest``: validate, choose the period, run, print the summary.

    Without ``--strategy`` it runs the configured strategies; ``--strategy NAME`` may also name
    a shipped one that is not configured (``with_shipped_strategies``).
    """
    try:
        known = with_shipped_strategies(factories) if args.strategy else factories
        configs = select_strategies(build_strategy_configs(known), args.strategy)
        history = None if args.market == "synthetic" else Path(args.market)
        if history is not None and not history.is_file():
            raise ConfigError(f"--market {args.market!r} is neither 'synthetic' nor a readable file")
        if history is not None and args.scenario is not None:
            raise ConfigError("--scenario and --market FILE both choose the market: give one of them")
        if history is not None:
            period = history_period(history, args.start, args.end, args.days)
        else:
            period = choose_period(args.start, args.end, args.days, RealClock().now())
        out_dir = args.out if args.out is not None else default_out_dir(period, args.seed)
        refuse_used_out_dir(out_dir)
        check_scenario(args.scenario)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    level = args.log_level or "INFO"
    stop = StopFlag()
    undo_signals = install_signal_handlers(stop)
    try:
        code = run_backtest(configs, period, seed=args.seed, poll=args.poll, out_dir=out_dir, stop=stop,
                            scenario=args.scenario, history=history,
                            setup_logging=lambda log_dir, clock: setup_logging(log_dir, level, clock,
                                                                               console_level="WARNING"))
    finally:
        undo_signals()
    if code == EXIT_OK and args.open:
        open_in_browser(out_dir / REPORT_FILE)
    return code


def open_in_browser(page: Path) -> None:
    """``--open``: the report in the user's browser; a machine without one (a VPS) only says so."""
    if not webbrowser.open(page.resolve().as_uri()):
        print(f"no browser to open {page} here: copy it to a machine with one (it is self-contained)")


def record_command(args: argparse.Namespace, settings: Settings, clock: Clock | None) -> int:
    """``python main.py record``: poll the exchange's chain into ``--out`` until a signal (or ``--polls``)."""
    try:
        plan = RecordPlan(out=args.out, interval_seconds=args.interval, polls=args.polls)
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    chosen_clock = choose_clock(settings, None, clock)
    undo_logging = setup_logging(settings.log_dir, args.log_level or settings.log_level, chosen_clock,
                                 secrets=settings.secret_values())
    stop = StopFlag()
    undo_signals = install_signal_handlers(stop)
    try:
        rows = run_record(settings, chosen_clock, stop, plan)
    except ConfigError as exc:   # an output the recorder may not append to
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        undo_signals()
        undo_logging()
    print(f"recorded {rows} rows to {plan.out}")
    return EXIT_OK


def doctor_command(args: argparse.Namespace, settings: Settings, configs: Sequence[StrategyConfig],
                   clock: Clock | None) -> int:
    """``python main.py doctor``: the checks of docs/DOCTOR.md, printed as text or one JSON document.

    SIGTERM and SIGINT set a ``StopFlag`` for the run instead of killing it: doctor sends no new
    order, its cleanup cancels and verifies what it placed, and the report (with a FAIL line
    for the stop) is still printed. The previous handlers are restored afterwards."""
    options = DoctorOptions(orders=args.orders, i_understand=args.i_understand, write_overrides=args.write_overrides,
                            capture_dir=args.capture, samples=args.samples)
    refused = refuse_orders(settings, options)
    if refused is not None:
        print(f"configuration error: {refused}", file=sys.stderr)
        return EXIT_CONFIG
    chosen_clock = choose_clock(settings, None, clock)
    # Only warnings reach the terminal: the report is doctor's output. The file log keeps the rest.
    try:
        undo_logging = setup_logging(settings.log_dir, args.log_level or settings.log_level, chosen_clock,
                                     console_level="WARNING" if args.log_level is None else args.log_level,
                                     secrets=settings.secret_values())
    except OSError as exc:
        print(f"configuration error: LOG_DIR={str(settings.log_dir)!r} is not usable ({exc.strerror})",
              file=sys.stderr)
        return EXIT_CONFIG
    stop = StopFlag()
    undo_signals = install_signal_handlers(stop)
    try:
        report = run_doctor(settings, chosen_clock, configs, options, stop=stop)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        undo_signals()
        undo_logging()
    return quiet_on_closed_pipe(lambda: _print_report(report, as_json=args.json))


def _print_report(report: DoctorReport, *, as_json: bool) -> int:
    print(report.to_json() if as_json else report.format_text())
    return report.exit_code


def sweep_command(args: argparse.Namespace, factories: Sequence[Callable[[], Any]]) -> int:
    """``python main.py sweep FILE.toml``: validate the whole sweep, then run (or resume) it."""
    try:
        if args.workers is not None and args.cluster is not None:
            raise ConfigError("--workers is for local processes; with --cluster the cluster's workers run: "
                              "give one of the two")
        spec = load_sweep(args.file, with_shipped_strategies(factories))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stop = StopFlag()
    undo_signals = install_signal_handlers(stop)
    try:
        return run_sweep(spec, args.out if args.out is not None else default_sweep_out(args.file),
                         workers=args.workers, cluster=args.cluster, stop=stop, stdout=sys.stdout, stderr=sys.stderr)
    except ConfigError as exc:   # the directory, a changed sweep file, the cluster's address
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        undo_signals()


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
    if args.command == "backtest":   # its own settings: never the environment's exchange or state
        return backtest_command(args, STRATEGIES if strategies is None else strategies)
    if args.command == "sweep":   # like backtest: its runs build their own settings, never .env's
        return sweep_command(args, STRATEGIES if strategies is None else strategies)
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
        return quiet_on_closed_pipe(lambda: status(settings, clock or RealClock(), as_json=args.json))
    if args.command == "record":
        return record_command(args, settings, clock)
    if args.command in ("kill", "resume", "pause"):  # operator_cli.py: queue for a running daemon, or act in-process
        return run_operator_command(args, OperatorRun(
            settings=settings, factories=STRATEGIES if strategies is None else strategies,
            setup_logging=lambda log_dir, level, log_clock: setup_logging(log_dir, level, log_clock,
                                                                          secrets=settings.secret_values()),
            install_signal_handlers=install_signal_handlers, clock=clock))
    try:
        configs = select_strategies(build_strategy_configs(STRATEGIES if strategies is None else strategies),
                                    args.strategy)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "doctor":
        return doctor_command(args, settings, configs, clock)
    # The clock first: every log line is stamped with it (simulated time in sim).
    chosen_clock = choose_clock(settings, speed, clock)
    try:
        undo_logging = setup_logging(settings.log_dir, args.log_level or settings.log_level, chosen_clock,
                                     secrets=settings.secret_values())
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
        if args.command == "check":
            return quiet_on_closed_pipe(lambda: check(settings, chosen_clock, configs))
        return run_daemon(settings, chosen_clock, stop, configs,
                          RunPlan(run_for=args.run_for, cancel_open_orders_on_exit=args.cancel_open_orders_on_exit))
    finally:
        undo_signals()
        undo_logging()


if __name__ == "__main__":
    sys.exit(main(ignore_late_signals=True))
