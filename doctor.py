"""``python main.py doctor``: does the configured exchange behave as the daemon assumes?

Why (issue 14): everything here was proven against the project's own simulator, written from
the public docs. Before the first trade a user needs one command that says, line by line,
PASS / WARN / FAIL with the fix, whether the exchange they point at (sim, testnet or
production) is reachable, accepts their key with the right permissions, agrees on the time,
sends every field the adapter needs, and whether the state directory and the strategies are
ready. ``--orders`` adds the order round trip and the probes (``doctor_orders.py``);
``--capture DIR`` keeps every answer, redacted (``capture.py``).

Read-only by default: it sends no order; the only order action of a plain run is cancelling a
doctor order a killed ``doctor --orders`` left behind (its ids are doctor ids only, never the
daemon's). It takes no lock and runs next to a daemon. Against the embedded simulator it
starts a throwaway one (the paper account in ``SIM_STATE_FILE`` is never touched).

Exit codes: 0 when nothing FAILs (WARN is 0), 1 on a FAIL, 2 for a bad configuration
(including a broken override file and ``--orders`` in production without ``--i-understand``).
"""
from __future__ import annotations

import json
import logging
import statistics
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from app import build_context
from capture import CaptureWriter, Redactor, is_rate_limit_header
from clock import Clock
from coincall_client import GROUP_LIMITS, CoincallClient, ObservedResponse
from coincall_payloads import (
    Instrument,
    chain_rows_from_api,
    instrument_from_api,
    order_book_from_api,
    parse_account_summary,
    parse_api_key,
    parse_orders,
    read_position_rows,
)
from config import Settings, directory_problem, mask_key
from errors import (
    AuthError,
    ConfigError,
    EndpointNotFound,
    ExchangeError,
    PayloadError,
    RateLimitedError,
    StaleDataError,
    TraderError,
    TransportError,
)
from exchange_assumptions import AssumptionSet, write_overrides
from exchange_connection import ExchangeConnection, assumptions_for, open_exchange
from doctor_orders import CheckLine, OrderRunContext, ProbeAnswer, StepHook, run_orders
from option_selection import resolve_legs
from state_identity import StateIdentityError, exchange_identity, mismatch_message, read_identity
from stop_flag import StopFlag
from strategy import StrategyConfig, route_trade

logger = logging.getLogger(__name__)

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2
DEFAULT_SAMPLES = 3
SLOW_SECONDS = 2.0
CLOCK_OK_SECONDS = 0.5
# The server accepts a ts at most this far in the future (API.md 2.2).
FUTURE_TOLERANCE_SECONDS = 1.0
MARGIN_WARN_RATIO = 0.8
JOURNAL_NOTE = "doctor orders are journaled in <STATE_DIR>/doctor_journal.json"


@dataclass
class DoctorReport:
    environment: str
    exchange: str
    lines: list[CheckLine] = field(default_factory=list)
    assumptions: list[dict[str, Any]] = field(default_factory=list)
    probes: list[ProbeAnswer] = field(default_factory=list)
    overrides_written: str | None = None
    capture_dir: str | None = None

    def add(self, check: str, status: str, detail: str, fix: str = "") -> None:
        self.lines.append(CheckLine(check, status, detail, fix if status != PASS else ""))

    @property
    def exit_code(self) -> int:
        return EXIT_FAIL if any(line.status == FAIL for line in self.lines) else EXIT_OK

    def counts(self) -> dict[str, int]:
        return {status: sum(1 for line in self.lines if line.status == status) for status in (PASS, WARN, FAIL, SKIP)}

    def to_json(self) -> str:
        return json.dumps({
            "environment": self.environment, "exchange": self.exchange, "exit_code": self.exit_code,
            "counts": self.counts(), "checks": [line.to_dict() for line in self.lines],
            "assumptions": self.assumptions,
            "probes": [{"probe": p.probe, "sent": p.sent, "answer": p.answer, "assumption": p.assumption,
                        "value": p.value, "settled": p.settled} for p in self.probes],
            "overrides_written": self.overrides_written, "capture_dir": self.capture_dir,
        }, indent=2, sort_keys=True)

    def format_text(self) -> str:
        out = [f"doctor: {self.environment} at {self.exchange}"]
        for line in self.lines:
            out.append(f"{line.status:<4}  {line.check}: {line.detail}")
            if line.fix:
                out.append(f"      fix: {line.fix}")
        if self.probes:
            out.append("probes (what the exchange answered):")
            for probe in self.probes:
                settles = f" -> {probe.assumption} = {probe.value!r}" if probe.settled and probe.assumption else ""
                out.append(f"  {probe.probe}: {probe.sent}: {probe.answer}{settles}")
        out.append("assumptions in force (docs/DOCTOR.md):")
        for row in self.assumptions:
            out.append(f"  {row['name']} = {row['value']!r} ({row['source']}; {row['reference']})")
        if self.overrides_written:
            out.append(f"answers written to {self.overrides_written}: the daemon uses them from its next start")
        if self.capture_dir:
            out.append(f"capture: {self.capture_dir} (redacted; see docs/DOCTOR.md before sharing)")
        counts = self.counts()
        out.append(f"doctor: {counts[PASS]} PASS, {counts[WARN]} WARN, {counts[FAIL]} FAIL, {counts[SKIP]} SKIP; "
                   f"exit {self.exit_code}")
        return "\n".join(out)


@dataclass(frozen=True)
class DoctorOptions:
    orders: bool = False
    i_understand: bool = False
    write_overrides: bool = False
    capture_dir: Path | None = None
    samples: int = DEFAULT_SAMPLES


class Observations:
    """Every answer doctor receives: rate-limit headers seen, and the capture when asked for."""

    def __init__(self, capture: CaptureWriter | None) -> None:
        self.capture = capture
        self.answers = 0
        self.rate_headers: dict[str, str] = {}
        self.last_elapsed: float | None = None

    def observe(self, response: ObservedResponse) -> None:
        self.answers += 1
        # The client times the HTTP exchange itself, after any wait of its own rate budget:
        # a latency figure must not count the pauses we impose on ourselves.
        self.last_elapsed = response.elapsed_seconds
        for name, value in response.headers.items():
            if is_rate_limit_header(name):
                self.rate_headers[name] = value
        if self.capture is not None:
            self.capture.observe(response)


@dataclass
class _Run:
    settings: Settings
    clock: Clock
    client: CoincallClient
    connection: ExchangeConnection
    report: DoctorReport
    options: DoctorOptions
    observations: Observations
    order_actions_per_second: float
    throttled: int = 0
    calls: int = 0
    account_id: Any = None
    instruments: list[Instrument] = field(default_factory=list)
    stop: StopFlag | None = None


def refuse_orders(settings: Settings, options: DoctorOptions) -> str | None:
    """Why ``--orders`` may not run here (exit 2 before any request), or None."""
    if options.write_overrides and not options.orders:
        return "--write-overrides writes what --orders learned: add --orders"
    if options.orders and settings.environment == "production" and not options.i_understand:
        return ("doctor --orders sends real (tiny, never marketable) orders to PRODUCTION: run it on testnet, "
                "or add --i-understand")
    return None


def run_doctor(settings: Settings, clock: Clock, configs: Sequence[StrategyConfig], options: DoctorOptions, *,
               sim_config: Any = None, step: StepHook | None = None, stop: StopFlag | None = None) -> DoctorReport:
    """Every check against the configured exchange; raises ``ConfigError`` for a bad configuration
    (``--orders`` in production without ``--i-understand`` included, before any request).

    ``sim_config`` (a ``simulator.SimulatorConfig``, typed loosely: only the exchange connection
    may name the simulator) shapes the embedded simulator in tests; ``step`` is told each step
    of ``--orders`` (the kill tests stop the process there). ``stop`` (set by the SIGTERM/SIGINT
    handlers of ``main.doctor_command``) ends the run in order: the remaining checks are skipped,
    no new order is sent, the cleanup of doctor orders still runs, and a FAIL line says so."""
    refused = refuse_orders(settings, options)   # here as well as in main: no caller may skip the gate
    if refused is not None:
        raise ConfigError(refused)
    assumptions = assumptions_for(settings)   # a broken override file is a ConfigError: exit 2
    exchange = "embedded simulator" if settings.embeds_simulator else str(settings.base_url)
    report = DoctorReport(settings.environment, exchange)
    report.assumptions = [row.to_dict() for row in assumptions.rows()]
    capture = None
    if options.capture_dir is not None:
        secrets = [settings.credentials.api_key, settings.credentials.api_secret] if settings.credentials else []
        capture = CaptureWriter(options.capture_dir, clock, Redactor(secrets), environment=settings.environment,
                                max_files=100_000).open()
        report.capture_dir = str(options.capture_dir)
    observations = Observations(capture)
    with tempfile.TemporaryDirectory(prefix="doctor-sim-") as scratch:
        target = settings
        if settings.embeds_simulator:   # a throwaway paper account: the daemon's is never touched
            target = replace(settings, sim_state_file=Path(scratch) / "simulator.json", sim_checkpoint_seconds=None,
                             sim_transport="wire")
        try:
            connection = open_exchange(target, clock, sim_config=sim_config, get_retries=0, observer=observations)
        except ConfigError:
            raise
        except Exception as exc:  # the connection itself: nothing else can be checked
            report.add("connection", FAIL, f"could not open the exchange connection: {exc}",
                       "check COINCALL_BASE_URL and TRADING_ENVIRONMENT")
            return report
        if capture is not None and connection.credentials is not None:
            capture.redactor.add_secret(connection.credentials.api_key)
            capture.redactor.add_secret(connection.credentials.api_secret)
        run = _Run(settings, clock, connection.client, connection, report, options, observations,
                   order_actions_per_second=float(assumptions.value("order_actions_per_second")), stop=stop)
        try:
            _run_checks(run, configs)
            if options.orders and not _unreachable(report) and not _stopped(run):
                _run_orders(run, assumptions, step)
            elif not _unreachable(report):
                _cleanup_only(run, step)
            if _stopped(run) and not any(line.check == "stopped" for line in report.lines):
                assert stop is not None
                report.add("stopped", FAIL, f"{stop.reason} received: doctor stopped before its checks were "
                           f"complete; no new order was sent and the doctor-order cleanup ran (see its lines)",
                           "run doctor again to complete the checks")
        finally:
            connection.close()
            if capture is not None:
                capture.close()
    return report


def _stopped(run: _Run) -> bool:
    return run.stop is not None and run.stop.is_set


def _unreachable(report: DoctorReport) -> bool:
    return any(line.check == "reachability" and line.status == FAIL for line in report.lines)


def _run_checks(run: _Run, configs: Sequence[StrategyConfig]) -> None:
    run.report.add("configuration", PASS, _describe_target(run.settings, run.connection))
    if not _check_time(run):
        _skip_rest(run.report, "the exchange did not answer GET /time")
        return
    checks: list[Callable[[], None]] = [
        lambda: _check_key(run), lambda: _check_latency(run), lambda: _check_account(run),
        lambda: _check_instruments_and_chain(run), lambda: _check_perpetuals(run), lambda: _check_rate_limits(run),
        lambda: _check_state_dir(run), lambda: _check_strategies(run, configs)]
    for check in checks:
        if _stopped(run):   # a stop signal: the rest is skipped, the cleanup still runs
            return
        check()


def _skip_rest(report: DoctorReport, why: str) -> None:
    for check in ("key", "latency", "account", "instruments", "option chain", "perpetuals", "rate limits",
                  "state directory", "strategies"):
        report.add(check, SKIP, f"not checked: {why}")


def _describe_target(settings: Settings, connection: ExchangeConnection) -> str:
    if settings.credentials is not None:
        key = f"key {mask_key(settings.credentials.api_key)} from {settings.credentials.source}"
    else:
        key = "the embedded simulator's own key"
    return f"environment {settings.environment}, {connection.base_url}, {key}, prefix {settings.client_order_prefix}"


def _call(run: _Run, fn: Callable[[], Any]) -> Any:
    """One request; counts throttling (the rate-limit check reports it)."""
    run.calls += 1
    try:
        return fn()
    except RateLimitedError:
        run.throttled += 1
        raise


def _check_time(run: _Run) -> bool:
    try:
        offset = _call(run, run.client.sync_time)
    except TransportError as exc:
        run.report.add("reachability", FAIL, f"{run.connection.base_url} does not answer: {exc}",
                       "check the host's network and firewall, COINCALL_BASE_URL, and the exchange's status page")
        return False
    except TraderError as exc:
        run.report.add("reachability", FAIL, f"GET /time failed: {exc}", "check COINCALL_BASE_URL")
        return False
    run.report.add("reachability", PASS, f"{run.connection.base_url} answers")
    window = run.settings.ts_diff_ms / 1000.0
    ahead = -offset   # > 0: the local clock is ahead of the exchange
    text = f"local clock {abs(offset):.3f} s {'ahead of' if ahead > 0 else 'behind'} the exchange"
    fix = "synchronise the clock (timedatectl set-ntp true, or chrony/ntpd)"
    if abs(offset) <= CLOCK_OK_SECONDS:
        run.report.add("clock", PASS, f"{text}; signing window -{window:g} s / +{FUTURE_TOLERANCE_SECONDS:g} s")
    elif ahead >= FUTURE_TOLERANCE_SECONDS or -ahead >= window:
        run.report.add("clock", FAIL, f"{text}: outside the signing window (-{window:g} s / "
                       f"+{FUTURE_TOLERANCE_SECONDS:g} s); every signed request depends on the client's correction",
                       fix)
    else:
        run.report.add("clock", WARN, f"{text}: inside the signing window, the client corrects it", fix)
    return True


def _check_key(run: _Run) -> None:
    key_name = run.settings.credentials.source if run.settings.credentials else "the embedded simulator's key"
    try:
        info = parse_api_key(_call(run, run.client.query_api_key))
    except AuthError as exc:
        run.report.add("key", FAIL, f"the exchange refused {key_name}: code {exc.code} {exc.msg}",
                       "check the key and secret, that the key belongs to this TRADING_ENVIRONMENT (10556 = "
                       "wrong environment) and that this host's IP is on the key's whitelist")
        return
    except TraderError as exc:
        run.report.add("key", WARN, f"could not verify {key_name}: {exc}", "run doctor again")
        return
    run.account_id = info.user_id
    if info.read_only:
        run.report.add("key", FAIL, f"{key_name} is read-only: the daemon cannot trade with it",
                       "give the key the Trade permission on the exchange's API page (or create one), then put it "
                       "in .env")
    else:
        run.report.add("key", PASS, f"{key_name} accepted, with Trade permission")
    try:
        _call(run, run.client.blocktrade_orders)
        run.report.add("rfq access", PASS, "the block-trade (RFQ) routes answer this key")
    except (AuthError, EndpointNotFound, ExchangeError) as exc:
        run.report.add("rfq access", WARN, f"the block-trade routes refuse this key ({exc})",
                       "strategies with execution_mode rfq or auto fall back to orders; ask Coincall for RFQ access")
    except TraderError as exc:
        run.report.add("rfq access", WARN, f"could not check the RFQ routes: {exc}", "run doctor again")


def _latency_targets(run: _Run) -> list[tuple[str, Callable[[], Any]]]:
    client = run.client
    return [
        ("GET /time", client.server_time),
        ("GET /open/public/config/v1", client.public_config),
        ("GET /open/option/getInstruments/BTC", lambda: client.instruments("BTC")),
        ("GET /open/futures/market/symbol/v1 (index)", lambda: client.index_price("BTC")),
        ("GET /open/account/summary/v1", client.account_summary),
        ("GET /open/option/position/get/v1", client.positions),
        ("GET /open/option/order/pending/v1", lambda: client.pending_orders(page=1, page_size=20)),
        ("GET /open/futures/position/get/v1", client.perp_positions),
    ]


def _check_latency(run: _Run) -> None:
    samples = max(1, run.options.samples)
    for name, fn in _latency_targets(run):
        times: list[float] = []
        error: Exception | None = None
        for _ in range(samples):
            run.observations.last_elapsed = None
            try:
                _call(run, fn)
            except TraderError as exc:
                error = exc
                break
            if run.observations.last_elapsed is not None:
                times.append(run.observations.last_elapsed)
        if error is not None:
            status = WARN if isinstance(error, (RateLimitedError, AuthError, StaleDataError, PayloadError)) else FAIL
            run.report.add(f"latency {name}", status, f"failed: {error}",
                           "see the key and rate-limit lines" if status == WARN else
                           "the daemon reads this route every poll: check the URL and the exchange's status")
            continue
        if not times:
            run.report.add(f"latency {name}", WARN, "no answer was timed", "run doctor again")
            continue
        median, worst = statistics.median(times), max(times)
        text = f"median {median * 1000:.0f} ms, worst {worst * 1000:.0f} ms of {len(times)}"
        if worst > SLOW_SECONDS:
            run.report.add(f"latency {name}", WARN, text + " (slow)",
                           "a host closer to the exchange (Coincall runs in AWS Tokyo/Singapore) or a better link")
        else:
            run.report.add(f"latency {name}", PASS, text)


def _check_account(run: _Run) -> None:
    try:
        summary = parse_account_summary(_call(run, run.client.account_summary))
        positions = read_position_rows(_call(run, run.client.positions))
        open_orders = parse_orders(_call(run, run.client.all_pending_orders))
    except TraderError as exc:
        run.report.add("account", FAIL if isinstance(exc, PayloadError) else WARN,
                       f"account summary, positions or open orders unreadable: {exc}",
                       "a missing field is named above: report it with a capture (docs/DOCTOR.md)")
        return
    text = (f"equity {summary.equity:,.2f} USD, available margin {summary.available_margin:,.2f}, initial margin "
            f"{summary.initial_margin:,.2f}, {sum(1 for p in positions if p.qty)} option position(s), "
            f"{len(open_orders)} open order(s); cross margin, one account for options and perpetuals")
    if summary.equity <= 0:
        run.report.add("account", WARN, text + ": no equity", "fund the account before trading")
    elif summary.initial_margin > MARGIN_WARN_RATIO * summary.equity:
        run.report.add("account", WARN, text + ": margin use above 80 %", "reduce positions or add collateral")
    else:
        run.report.add("account", PASS, text)


def _check_instruments_and_chain(run: _Run) -> None:
    client = run.client
    try:
        raw = _call(run, lambda: client.instruments("BTC"))
        instruments = [instrument_from_api(entry) for entry in raw or []]
    except TraderError as exc:
        run.report.add("instruments", FAIL, f"BTC instruments unusable: {exc}",
                       "the adapter needs this field: report it with a capture (docs/DOCTOR.md)")
        return
    run.instruments = instruments
    now_ms = run.clock.now_ms()
    alive = [i for i in instruments if i.is_active and i.expiry_ms > now_ms + 3_600_000]
    if not alive:
        run.report.add("instruments", FAIL, f"{len(instruments)} BTC instruments, none active beyond an hour",
                       "check the exchange's status; nothing can be traded")
        return
    ticks = sorted({i.tick_size for i in alive})
    run.report.add("instruments", PASS, f"{len(instruments)} BTC options parsed, {len(alive)} active; tick "
                   f"{'/'.join(f'{t:g}' for t in ticks)}, minimum qty {min(i.min_qty for i in alive):g}")
    expiry = min(i.expiry_ms for i in alive)
    try:
        rows = chain_rows_from_api(_call(run, lambda: client.option_chain(expiry)), as_of=run.clock.now(),
                                   expiry_ms=expiry, index_name="BTCUSD")
    except TraderError as exc:
        run.report.add("option chain", FAIL, f"the chain of the nearest expiry does not parse: {exc}",
                       "the daemon cannot select legs without it: report it with a capture (docs/DOCTOR.md)")
        return
    if not rows:
        run.report.add("option chain", FAIL, "the nearest expiry's chain is empty", "check the exchange's status")
        return
    no_delta = sum(1 for row in rows if row.delta is None)
    if no_delta == len(rows):
        run.report.add("option chain", WARN, f"{len(rows)} rows parsed, but none carries a delta",
                       "strategies that choose strikes by delta cannot resolve their legs")
    else:
        run.report.add("option chain", PASS, f"{len(rows)} rows of the nearest expiry parsed with every field the "
                       f"adapter needs (mark, strike, underlying price; delta on {len(rows) - no_delta})")
    quoted = [row for row in rows if row.bid > 0 and row.ask > 0]
    if quoted:
        atm = min(quoted, key=lambda row: abs(row.strike - row.underlying_price))
        _check_book(run, atm.symbol, {i.symbol: i.tick_size for i in alive}.get(atm.symbol))
    try:
        eth = _call(run, lambda: client.instruments("ETH")) or []
        count = len([instrument_from_api(entry) for entry in eth])
    except TraderError as exc:
        run.report.add("eth options", WARN, f"ETH instruments unusable: {exc}", "ETH strategies cannot trade")
        return
    run.report.add("eth options", PASS if count else WARN, f"{count} ETH options listed",
                   "" if count else "ETH strategies cannot trade on this exchange")


def _check_book(run: _Run, symbol: str, tick: float | None) -> None:
    try:
        book = order_book_from_api(_call(run, lambda: run.client.orderbook(symbol)), symbol=symbol,
                                   as_of=run.clock.now())
    except TraderError as exc:
        run.report.add("order book", FAIL, f"{symbol} book does not parse: {exc}", "report it with a capture")
        return
    prices = [price for price, _ in book.bids + book.asks]
    off = [p for p in prices if tick and abs(p / tick - round(p / tick)) > 1e-6]
    if off:
        run.report.add("order book", WARN, f"{symbol}: {len(off)} of {len(prices)} book prices are off the "
                       f"instrument's tick {tick:g}", "the tick the exchange enforces may differ (API.md 12 #1)")
    else:
        run.report.add("order book", PASS, f"{symbol}: {len(book.bids)} bids, {len(book.asks)} asks, on the tick")


def _check_perpetuals(run: _Run) -> None:
    for underlying, required in (("BTC", True), ("ETH", False)):
        try:
            spec = _call(run, lambda: run.client.perp_spec(underlying))
            ticker = _call(run, lambda: run.client.perp_ticker(underlying))
        except TraderError as exc:
            run.report.add(f"perpetual {underlying}USD", FAIL if required else WARN, f"unreadable: {exc}",
                           "delta hedging with the perpetual needs it" if required else
                           "ETH strategies cannot hedge with the perpetual")
            continue
        run.report.add(f"perpetual {underlying}USD", PASS, f"{spec.symbol}: tick {spec.tick_size:g}, minimum qty "
                       f"{spec.min_qty:g}, mark {ticker.mark:,.2f}, index {ticker.index:,.2f}")


def _check_rate_limits(run: _Run) -> None:
    headers = run.observations.rate_headers
    seen = (f"rate-limit headers: {', '.join(f'{k}={v}' for k, v in sorted(headers.items()))}" if headers else
            "the exchange sends no rate-limit headers")
    limits = ", ".join(f"{group} {n}/{window:g}s" for group, (n, window) in sorted(GROUP_LIMITS.items()))
    text = f"{seen}; client budget: order actions {run.order_actions_per_second:g}/s, {limits}"
    if run.throttled and run.throttled * 2 >= run.calls:
        run.report.add("rate limits", FAIL, f"throttled on {run.throttled} of {run.calls} requests; {text}",
                       "another program is using this key or IP: stop it, or use a key of its own")
    elif run.throttled:
        run.report.add("rate limits", WARN, f"throttled on {run.throttled} of {run.calls} requests; {text}",
                       "another program may share this key or IP")
    else:
        run.report.add("rate limits", PASS, f"no throttling on {run.calls} requests; {text}")


def _check_state_dir(run: _Run) -> None:
    state_dir = Path(run.settings.state_dir)
    problem = directory_problem(state_dir)
    if problem is not None:
        run.report.add("state directory", FAIL, f"STATE_DIR={str(state_dir)!r}: {problem}",
                       "set STATE_DIR to a writable directory")
        return
    store = run.settings.state_db_path
    store_text = f"store {store} ({store.stat().st_size} bytes)" if store.exists() else "no store yet"
    try:
        recorded = read_identity(state_dir)
    except StateIdentityError as exc:
        run.report.add("state directory", FAIL, str(exc), "see the message")
        return
    if recorded is None:
        run.report.add("state directory", PASS, f"{state_dir}: {store_text}; not bound to an exchange yet (the "
                       f"daemon's first start binds it)")
        return
    if run.account_id is None:
        run.report.add("state directory", WARN, f"{state_dir} belongs to {recorded.describe()}; the account of "
                       f"this key is unknown", "see the key line")
        return
    current = exchange_identity(run.settings.environment, run.settings.base_url,
                                embedded=run.settings.embeds_simulator, account_id=run.account_id)
    if current == recorded:
        run.report.add("state directory", PASS, f"{state_dir}: {store_text}; belongs to this exchange and account")
    else:
        run.report.add("state directory", FAIL, mismatch_message(state_dir, recorded, current),
                       "the daemon would refuse to start (exit 2)")


def _check_strategies(run: _Run, configs: Sequence[StrategyConfig]) -> None:
    if not configs:
        run.report.add("strategies", SKIP, "no strategy configured")
        return
    ctx = build_context(run.settings, clock=run.clock, client=run.client, state_dir=":memory:")
    try:
        for config in configs:
            try:
                config.validate_at_start(run.clock.now())
                legs = resolve_legs(config.legs, ctx.market_data)
                mode = route_trade(config, legs, ctx.executor)
            except (ConfigError, TraderError) as exc:
                run.report.add(f"strategy {config.name}", FAIL, str(exc),
                               "python main.py check shows the same; fix the strategy or wait for the market")
                continue
            run.report.add(f"strategy {config.name}", PASS, f"{len(legs)} legs resolve now; execution "
                           f"{config.execution_mode} -> {mode}; no order sent")
    finally:
        ctx.close()


def _order_context(run: _Run, step: StepHook | None) -> OrderRunContext:
    return OrderRunContext(client=run.client, clock=run.clock, prefix=int(run.settings.client_order_prefix),
                           state_dir=Path(run.settings.state_dir), environment=run.settings.environment,
                           base_url=run.connection.base_url, credentials=run.connection.credentials,
                           ts_diff_ms=int(run.settings.ts_diff_ms),
                           step=step if step is not None else (lambda _name: None), stop=run.stop)


def _cleanup_only(run: _Run, step: StepHook | None) -> None:
    from doctor_orders import DoctorJournal, cleanup
    journal = DoctorJournal.load(Path(run.settings.state_dir))
    try:
        lines = cleanup(_order_context(run, step), journal)
    except OSError as exc:   # the journal could not be written: what it holds stays unverified
        run.report.add("doctor orders", FAIL, f"the doctor journal {journal.path} cannot be written ({exc}); doctor "
                       f"orders it names are not verified", "make STATE_DIR writable and run doctor again")
        return
    for line in lines:
        run.report.add(line.check, line.status, line.detail, line.fix)


def _run_orders(run: _Run, assumptions: AssumptionSet, step: StepHook | None) -> None:
    result = run_orders(_order_context(run, step), allow_crossing_probe=run.settings.environment != "production")
    for line in result.lines:
        run.report.add(line.check, line.status, line.detail, line.fix)
    run.report.probes = result.probes
    if run.options.write_overrides:
        answers = {p.assumption: (p.value, f"{p.sent}: {p.answer}") for p in result.probes
                   if p.settled and p.assumption is not None}
        if answers:
            path = write_overrides(run.settings.overrides_path, answers, environment=run.settings.environment,
                                   written_at_ms=run.clock.now_ms())
            run.report.overrides_written = str(path)
            run.report.assumptions = [row.to_dict() for row in assumptions_for(run.settings).rows()]
