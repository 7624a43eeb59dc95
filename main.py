"""CoincallTrader's command line: ``python main.py`` (same as ``python main.py run``).

For now ``run`` connects to the exchange, logs the account and a short option-chain
summary, then logs one status line per poll interval until SIGINT/SIGTERM (or until
``--run-for`` simulated seconds have passed). The strategy daemon grows from here: this
module wires collaborators together and decides nothing itself.

With no configuration at all it runs against the embedded simulator (paper trading), so
a fresh clone works with ``pip install -r requirements.txt && python main.py``.

Exit codes (BEHAVIOUR.md 7.5): 0 after a signal or ``--run-for``; 2 for invalid
configuration or a refused key at start-up, before any request that could trade;
1 when the exchange connection cannot be opened at all.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from clock import Clock, RealClock, SimulatedClock
from config import Settings, load_settings
from errors import AuthError, ConfigError, TraderError

logger = logging.getLogger("main")

EXIT_OK = 0
EXIT_STARTUP_FAILURE = 1
EXIT_CONFIG = 2

SUBCOMMANDS = ("run",)
LOG_FILE_NAME = "trading.log"
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUP_COUNT = 5
LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
# The longest single clock.sleep() of the main loop: bounds how long a signal waits.
MAX_SLEEP_SLICE_SECONDS = 1.0


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
    return parser


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


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between (never during) polls."""

    event: threading.Event
    reason: str = ""

    def request(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
        self.event.set()

    @property
    def is_set(self) -> bool:
        return self.event.is_set()


def install_signal_handlers(stop: StopFlag) -> Callable[[], None]:
    """Route SIGINT/SIGTERM to ``stop``; returns the undo. No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}

    def handle(signum: int, _frame: object) -> None:
        stop.request(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handle)

    def undo() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return undo


# ---------------------------------------------------------------------------------------
# Reading and formatting exchange data (display only: nothing is invented)
# ---------------------------------------------------------------------------------------


def as_number(value: Any) -> float | None:
    """A number from an API field that may be a JSON string or number; None if absent or invalid."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def fmt(value: Any, digits: int = 2) -> str:
    number = as_number(value)
    return "n/a" if number is None else f"{number:,.{digits}f}"


def fmt_time(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def account_line(summary: Mapping[str, Any]) -> str:
    im_ratio = as_number(summary.get("imRatio"))
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
    rows = [row for row in chain if as_number(row.get("strike")) is not None]
    if not rows:
        return None
    return min(rows, key=lambda row: abs(float(row["strike"]) - index_price))


def chain_summary_lines(client: Any, clock: Clock) -> Iterator[str]:
    """A few log lines about the BTC option market, from one instruments and one chain call."""
    index = as_number(client.index_price())
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
# The run command
# ---------------------------------------------------------------------------------------


def banner(settings: Settings) -> str:
    if settings.embeds_simulator:
        return "CoincallTrader starting: environment=sim, PAPER TRADING on the embedded simulator"
    if settings.is_sim:
        return f"CoincallTrader starting: environment=sim, PAPER TRADING on the simulator at {settings.base_url}"
    return f"CoincallTrader starting: environment={settings.environment}, REAL exchange at {settings.base_url}"


def choose_clock(settings: Settings, speed: float | None, injected: Clock | None) -> Clock:
    """The clock of this run: the injected one (tests), simulated time in sim, else real time."""
    if injected is not None:
        if speed is not None and hasattr(injected, "set_speed"):
            injected.set_speed(speed)
        return injected
    if settings.is_sim:
        return SimulatedClock(start=RealClock().now(), speed=speed or 1.0)
    return RealClock()


def wait_until(clock: Clock, wake_at: float, stop: StopFlag) -> None:
    """Sleep until clock time ``wake_at`` in short slices, returning early once ``stop`` is set."""
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
    """One status line per poll interval until a signal or the ``--run-for`` deadline.

    Polls keep a fixed cadence (each one starts ``poll_interval_seconds`` after the
    previous one started), so at ``--speed 600`` the requests' own duration does not
    stretch the interval. Never returns because of an error: each failure is logged
    and the next poll retries.
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


def run(args: argparse.Namespace, settings: Settings, clock: Clock, stop: StopFlag) -> int:
    from exchange_connection import open_exchange  # wiring only; keeps `--help` light

    logger.info("%s", banner(settings))
    logger.info("settings: %s", settings.describe())
    try:
        connection = open_exchange(settings, clock)
    except Exception:
        logger.exception("could not open the exchange connection")
        return EXIT_STARTUP_FAILURE
    if settings.is_sim:
        # After open_exchange: a restored paper account may have moved the clock forward.
        logger.info("simulated time %s, speed %s", fmt_time(clock.now()), getattr(clock, "speed", "n/a"))
    try:
        refused = check_key(connection, settings)
        if refused is not None:
            return refused
        log_startup_summary(connection.client, clock)
        run_loop(connection.client, clock, settings, stop, args.run_for, on_poll=connection.checkpoint)
        logger.info("stopping: %s", stop.reason or "requested")
    finally:
        connection.close()
    logger.info("stopped cleanly")
    return EXIT_OK


def main(
    argv: Sequence[str] | None = None,
    *,
    clock: Clock | None = None,
    env: Mapping[str, str] | None = None,
    dotenv_path: str | None = ".env",
) -> int:
    """Entry point; returns the exit code. Tests call it in-process with their own clock and env."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        settings = load_settings(env, dotenv_path=dotenv_path)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not settings.is_sim and (args.speed is not None or args.run_for is not None):
        print(
            f"configuration error: --speed and --run-for act on simulated time and need TRADING_ENVIRONMENT=sim "
            f"(it is {settings.environment}): remove them",
            file=sys.stderr,
        )
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
    stop = StopFlag(threading.Event())
    undo_signals = install_signal_handlers(stop)
    try:
        return run(args, settings, choose_clock(settings, args.speed, clock), stop)
    finally:
        undo_signals()
        undo_logging()


if __name__ == "__main__":
    sys.exit(main())
