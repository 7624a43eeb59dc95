"""The daemon's wiring, start-up and loop: the one place every run goes through.

Why it looks the way it does (BEHAVIOUR.md 1.7, 6.0, 7.4, 7.5; docs/RECOVERY.md):

* ``build_context`` is the one place that wires the services together. No service builds its
  own collaborators, so a test (or a backtest, or a dashboard) builds the very same
  ``TradingContext`` around a simulated clock and the simulator's URL. It sends no request
  and starts no thread.
* Start-up is one sequence, in one order, whatever asked for it: settings → lock →
  exchange → store → recover → reconcile → loop (``run_locked``). The daemon (``python
  main.py run``) and an operator's kill without a running daemon (``operator_cli.py``) both
  go through it; a ``RunPlan`` says what differs (whether runners consider entries, what
  to do before the loop, when the run is finished). Before anything trades, the first poll
  reconciles the store with the exchange (``reconciliation.py``).
* The loop is the scheduler's (``PositionMonitor.run_once``) on this thread. Each wake runs,
  in registration order: the reconciler, the lifecycle (executions and exits), the store
  watch, the operator command queue, the strategy runners (entries), the status line, the
  operator view (``operator_view.py``: the dashboard's data) and the daily summary. A
  failing iteration is logged and retried after one poll interval: the daemon never exits
  by itself. A signal only sets the ``StopFlag``; the run stops after the current wake,
  with no order sent and positions left as they are (each working order and each trade
  with exposure is logged).

The exit codes of a run (BEHAVIOUR.md 7.5): 0 after a signal, ``--run-for`` or a finished
plan; 2 for an invalid strategy, a refused key or a state directory of another exchange, before
any request that could trade; 1 when the exchange connection or the store cannot be opened
at all; 3 when another daemon holds the state directory's lock (nothing is sent).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from account_manager import AccountManager, AccountSnapshot, position_kind
from alerts import Alert, AlertSink, send_alert
from api_values import finite_number
from clock import Clock, RealClock, SimulatedClock
from coincall_payloads import (
    ChainLine,
    ListedInstrument,
    SideFigures,
    parse_api_key,
    read_account_figures,
    read_chain_lines,
    read_listing,
)
from commands import CommandProcessor
from dashboard import DashboardError, DashboardServer, bind_dashboard
from conditions import ConditionHealth
from config import STATE_DB_NAME, Settings, load_settings
from contracts import DEFAULT_UNDERLYING
from display import fmt, fmt_duration, fmt_qty, fmt_time
from errors import AuthError, ConfigError, TraderError
from events import EventJournal
from exchange_connection import ExchangeConnection, assumptions_for, open_exchange, read_server_time
from health import HealthReporter
from instance_lock import InstanceLock
from log_throttle import RepeatLimiter
from loop_guard import StepGuard
from market_data import MarketData
from multileg_orderbook import SmartOrderbookExecutor
from notifications import Notifier, build_notifier
from operations import TradesSnapshotExporter
from operator_view import DailySummary, LogTail, RunningPnl, ViewBoard, ViewPublisher, ViewSources
from order_ledger import Intent, OrderLedger
from persistence import StateStore, StoreWatch
from position_monitor import PositionMonitor
from reconciliation import Reconciler
from rfq import RFQExecutor
from seams import (
    AlertSender,
    ExchangeClient,
    ExecutionEngine,
    ExecutionRouter,
    Ledger,
    Lifecycle,
    MarketDataSource,
    Store,
)
from state_identity import StateIdentityError, check_state_identity, exchange_identity
from stop_flag import StopFlag
from strategy import StrategyConfig, StrategyRunner
from trade_execution import LimitFillManager, TradeExecutor
from trade_lifecycle import LifecycleManager

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STARTUP_FAILURE = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 3

HEALTH_INTERVAL_SECONDS = 300.0
# The longest single clock.sleep() of the loop's own waits: a signal only sets a flag
# (StopFlag), so this bounds how long a wait takes to notice it (half a second of real time
# on the real clock, less on a faster simulated one).
MAX_SLEEP_SLICE_SECONDS = 0.5
# The status line's index may come from the cache up to this old (the runners keep it fresh).
STATUS_INDEX_MAX_AGE_SECONDS = 30.0
MARGIN_UTILIZATION_WARNING_PCT = 80.0


def complain(text: str) -> None:
    """One line for the operator on the command line's stderr (a refusal at start-up)."""
    print(text, file=sys.stderr)


# ---------------------------------------------------------------------------------------
# The services: TradingContext and build_context
# ---------------------------------------------------------------------------------------


@dataclass
class TradingContext:
    """Every service of one daemon, built once by ``build_context`` (BEHAVIOUR.md 1.7).

    ``connection`` is set when ``build_context`` opened the exchange itself (``ctx.close()``
    then releases it); ``reconciler`` is set by ``build_context`` and missing only from the
    partial contexts tests build by hand around a single runner.
    """

    config: Settings | None
    clock: Clock
    http: ExchangeClient
    market_data: MarketDataSource
    account_manager: AccountManager
    ledger: Ledger
    executor: ExecutionRouter
    lifecycle_manager: Lifecycle
    position_monitor: PositionMonitor
    store: Store
    alerts: AlertSender
    health: HealthReporter
    condition_health: ConditionHealth = field(default_factory=ConditionHealth)
    connection: ExchangeConnection | None = None
    store_quarantined: Path | None = None
    reconciler: Reconciler | None = None
    # Telegram / webhook notifications (docs/NOTIFICATIONS.md); None when none is configured.
    # Built and subscribed here; its thread is started and stopped by run_locked.
    notifier: Notifier | None = None
    # The event journal every service writes to (set by build_context): the operator view's
    # valuation and daily-summary events go through the same one (and its listeners).
    journal: EventJournal | None = None

    def close(self) -> None:
        """Commit and close the store, then the connection we opened (never any position)."""
        try:
            self.store.close()
        finally:
            if self.connection is not None:
                self.connection.close()


def alert_hook(alerts: AlertSender, level: str = "WARNING") -> Callable[[str, str], None]:
    """Adapt ``AlertSink.alert`` to the ``(kind, detail)`` hooks of the data layer."""

    def hook(kind: str, detail: str) -> None:
        alerts.alert(level, kind, detail)

    return hook


def settings_notifier(settings: Settings, clock: Clock) -> Notifier | None:
    """The notifier the settings ask for (not started), or None: then no thread at all.

    The API key and secret are handed over as secrets to redact too: no message may carry one.
    """
    secrets = [settings.credentials.api_key, settings.credentials.api_secret] if settings.credentials else []
    return build_notifier(clock, telegram_bot_token=settings.telegram_bot_token,
                          telegram_chat_id=settings.telegram_chat_id, webhook_url=settings.notify_webhook_url,
                          min_level=settings.notify_min_level, secrets=secrets)


def notify_alerts(alerts: AlertSink, notifier: Notifier) -> None:
    """Every alert, once written, is offered to the notifier (which only queues it)."""

    def forward(alert: Alert) -> None:
        notifier.handle_alert(alert.to_dict())

    alerts.add_listener(forward)


def _state_path(state_dir: str | Path) -> str | Path:
    if str(state_dir) == ":memory:":
        return ":memory:"
    return Path(state_dir) / STATE_DB_NAME


def build_engines(client: ExchangeClient, ledger: Ledger, market: MarketDataSource, clock: Clock, *,
                  rfq_notional_threshold: float = 50_000.0,
                  smart_notional_threshold: float = 10_000.0) -> TradeExecutor:
    """The three execution engines and the router over them, wired once.

    Every execution mode always has its engine, so a strategy's ``execution_mode`` can never
    meet a missing one at 09:00 on a trading day; the RFQ engine falls back to the other two.
    """
    limit = LimitFillManager(ledger, market, clock)
    smart = SmartOrderbookExecutor(ledger, market, clock)
    rfq = RFQExecutor(client, ledger, market, clock, limit=limit, smart=smart)
    return TradeExecutor(limit, smart=smart, rfq=rfq, rfq_notional_threshold=rfq_notional_threshold,
                         smart_notional_threshold=smart_notional_threshold)


def build_context(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    client: ExchangeClient | None = None,
    poll_interval: float = 10.0,
    rfq_notional_threshold: float | None = None,
    smart_notional_threshold: float = 10_000.0,
    state_dir: str | Path | None = None,
    log_dir: str | Path | None = None,
) -> TradingContext:
    """Build the services once and wire them (no request, no thread of our own).

    ``settings`` None loads ``.env`` and the environment now. ``client`` lets tests pass a
    ready ``CoincallClient``; otherwise the exchange is opened with
    ``exchange_connection.open_exchange`` (in ``sim`` that starts the embedded simulator)
    and the connection is kept on the context so ``ctx.close()`` releases it.
    ``state_dir`` defaults to the settings' ``STATE_DIR`` (``":memory:"`` keeps nothing);
    ``log_dir`` None means alerts and health lines go to the log only.
    ``rfq_notional_threshold`` None takes the exchange assumption ``rfq_min_notional_usd``
    (its documented default, or what the override file says); the position-greeks convention
    comes from the assumptions too (``exchange_assumptions``, docs/DOCTOR.md).
    """
    if settings is None:
        settings = load_settings()
    assumptions = assumptions_for(settings)   # a broken override file is a ConfigError, before any request
    if rfq_notional_threshold is None:
        rfq_notional_threshold = float(assumptions.value("rfq_min_notional_usd"))
    clock = clock if clock is not None else RealClock()
    connection = None
    if client is None:
        # No GET is retried inside a call: a retry would wait inside the tick and delay every
        # other trade's exits (BEHAVIOUR 6.0). Every reader tries again on its next tick.
        connection = open_exchange(settings, clock, get_retries=0)
        client = connection.client
    if state_dir is None:
        state_dir = settings.state_dir
    log_path = Path(log_dir) if log_dir is not None else None

    alerts = AlertSink(log_path, clock)
    notifier = settings_notifier(settings, clock)
    if notifier is not None:
        notify_alerts(alerts, notifier)
    on_alert = alert_hook(alerts)
    store, quarantined = StateStore.open(_state_path(state_dir), clock, durable=settings.durable_state)
    if quarantined is not None:
        alerts.alert("CRITICAL", "state_quarantined",
                     f"the state database was unusable and moved to {quarantined}; started with a fresh store")
    market = MarketData(client, clock, on_alert=on_alert, perp_client=client)
    account_manager = AccountManager(client, clock, perp_client=client,
                                     position_greeks=str(assumptions.value("position_greeks")))
    account_manager.alert_on_outages(alerts)   # exchange_unreachable / exchange_recovered (issue 9)
    journal = EventJournal(clock, store=store, log_dir=log_path)
    if notifier is not None:   # trades opened and closed, the daily summary
        journal.add_listener(notifier.handle_event)
    ledger = OrderLedger(client, clock, prefix=int(settings.client_order_prefix), ts_diff_ms=int(settings.ts_diff_ms),
                         store=store, on_event=journal, perp_client=client,
                         exchange_offset=lambda: client.time_offset_seconds)
    executor = build_engines(client, ledger, market, clock, rfq_notional_threshold=rfq_notional_threshold,
                             smart_notional_threshold=smart_notional_threshold)
    condition_health = ConditionHealth(on_alert=on_alert)
    lifecycle = LifecycleManager(ledger=ledger, executor=executor, market=market, client=client, clock=clock,
                                 store=store, alerts=alerts, health=condition_health, journal=journal,
                                 funding_client=client)
    ledger.attach_perp_books(lifecycle)   # closes our trades' perp legs net on the account
    monitor = PositionMonitor(account_manager, clock, poll_interval=poll_interval, on_alert=on_alert,
                              on_critical=alert_hook(alerts, "CRITICAL"),
                              wait_slice=monitor_wait_slice(clock, poll_interval))
    # The reconciler first: the lifecycle is on hold until the start-up reconciliation has
    # compared our trades with the positions, and each wake sees its corrections.
    reconciler = Reconciler(client=client, ledger=ledger, lifecycle=lifecycle, store=store, clock=clock,
                            alerts=alerts, journal=journal, quarantined=quarantined, perp_client=client)
    # What the positions showed beyond our trades (RECOVERY.md S2) outlives a restart: restored
    # here, before the first reconciliation uses it, and kept in the store as it changes.
    reconciler.positions.keep_known_in(store)
    monitor.register(reconciler)
    # Built after the lifecycle, the reconciler tells it which RFQ accepts recorded before a
    # restart are still unresolved: a trade waits for them before it is judged or ended.
    lifecycle.watch_block_accepts(reconciler)
    # The manager itself (its __call__ is tick) so the monitor also finds on_snapshot_error.
    # Then the lifecycle: executions and exits run before any runner considers an entry.
    monitor.register(lifecycle)
    monitor.set_busy(lifecycle.has_active_jobs)
    health = HealthReporter(clock, log_path, interval_seconds=HEALTH_INTERVAL_SECONDS)
    return TradingContext(
        config=settings, clock=clock, http=client, market_data=market, account_manager=account_manager,
        ledger=ledger, executor=executor, lifecycle_manager=lifecycle,
        position_monitor=monitor, store=store, alerts=alerts, health=health,
        condition_health=condition_health, connection=connection,
        store_quarantined=quarantined, reconciler=reconciler, notifier=notifier, journal=journal,
    )


def open_context(settings: Settings, clock: Clock, *, state_dir: str | Path | None = None) -> TradingContext:
    """``build_context`` for a run of the command line: the settings' poll interval and directories."""
    return build_context(
        settings, clock=clock, poll_interval=settings.poll_interval_seconds,
        state_dir=settings.state_dir if state_dir is None else state_dir, log_dir=settings.log_dir,
    )


# ---------------------------------------------------------------------------------------
# The clock of a run, and waiting on it
# ---------------------------------------------------------------------------------------


def choose_clock(settings: Settings, speed: float | None, injected: Clock | None) -> Clock:
    """The clock of this run: the injected one (tests), simulated time in sim, else real time.

    With the embedded simulator the clock is lock-step: simulated time moves only while the
    daemon waits, and ``--speed N`` paces those waits (``1/N`` real seconds per simulated
    second). The daemon's own work then costs no simulated time, so the same seed gives the
    same trades at any speed, on any machine (a chain snapshot can no longer "take" longer
    than its consistency window because the CPU was slow).

    Against a simulator running in its own process (``COINCALL_BASE_URL`` in sim), the two
    processes cannot share one lock-step clock: the clock follows the wall clock scaled by
    ``--speed`` and starts at the simulator's own time, so that a daemon restarted an hour
    (of simulated time) later agrees with the exchange; pass the simulator's ``--speed`` too.
    """
    if injected is not None:
        if speed is not None and isinstance(injected, SimulatedClock):
            if injected.lockstep:
                injected.set_pace(speed)
            else:
                injected.set_speed(speed)
        return injected
    if settings.is_sim:
        if settings.embeds_simulator:
            return SimulatedClock(start=RealClock().now(), pace=speed or 1.0)
        return SimulatedClock(start=remote_simulator_time(settings), speed=speed or 1.0)
    return RealClock()


def remote_simulator_time(settings: Settings) -> float:
    """The external simulator's clock (public ``/time``), or the wall clock if it is unreachable."""
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


# ---------------------------------------------------------------------------------------
# Start-up steps
# ---------------------------------------------------------------------------------------


def banner(settings: Settings) -> str:
    if settings.embeds_simulator:
        return "CoincallTrader starting: environment=sim, PAPER TRADING on the embedded simulator"
    if settings.is_sim:
        return f"CoincallTrader starting: environment=sim, PAPER TRADING on the simulator at {settings.base_url}"
    return f"CoincallTrader starting: environment={settings.environment}, REAL exchange at {settings.base_url}"


def check_key(client: ExchangeClient, settings: Settings) -> int | None:
    """Start-up key check (API.md 1): a refused or read-only key stops us (exit 2).

    An unreachable exchange does not: the daemon keeps running and reports it each poll.
    """
    key_name = settings.credentials.source if settings.credentials is not None else "the embedded simulator's key"
    try:
        info = client.query_api_key()
    except AuthError as exc:
        logger.error("the exchange refused %s (code %s): check the key and TRADING_ENVIRONMENT", key_name, exc.code)
        return EXIT_CONFIG
    except TraderError as exc:
        logger.warning("could not verify the API key at start-up (%s); will keep trying", exc)
        return None
    if parse_api_key(info).read_only:
        logger.error("%s is a read-only key: create a key with Trade permission and put it in .env", key_name)
        return EXIT_CONFIG
    return None


class StateIdentityGate:
    """The state directory belongs to one exchange and account (docs/RECOVERY.md row E1).

    ``verify_at_start`` reads the account (the key's ``userId``) and compares it, with the
    environment and the exchange, to ``<STATE_DIR>/exchange_identity.json`` (written on the
    first start; adopted, and logged, for a directory that has none). Another exchange or
    account → exit 2 with one line, before anything is reconciled or traded. When the
    exchange cannot be read at start the run does not exit (README, exit codes): the gate
    becomes a start-up check of the reconciler, so nothing is reconciled, released or
    traded until it has passed; a mismatch found then stops the run with exit 2.
    """

    def __init__(self, ctx: TradingContext, settings: Settings, stop: StopFlag) -> None:
        if ctx.connection is None or ctx.reconciler is None:
            raise ValueError("the state directory check needs a context opened by app.build_context "
                             "(its exchange connection and its reconciler)")
        self._connection = ctx.connection
        self._reconciler = ctx.reconciler
        self._store = ctx.store
        self._settings = settings
        self._stop = stop
        self.verified = False
        self.refusal: str | None = None

    def verify_at_start(self) -> int | None:
        try:
            self._verify()
        except StateIdentityError as exc:
            return self.refuse(str(exc))
        except TraderError as exc:
            logger.warning("could not read the account to check which exchange %s belongs to (%s): nothing is "
                           "reconciled or traded until it can", self._settings.state_dir, exc)
            self._reconciler.add_startup_check(self)
        return None

    def __call__(self) -> None:
        """The reconciler's start-up check: raises ``TraderError`` until verified."""
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
        complain(f"configuration error: {message}")
        return EXIT_CONFIG

    def _verify(self) -> None:
        connection = self._connection
        current = exchange_identity(self._settings.environment, self._settings.base_url,
                                    embedded=connection.is_embedded, account_id=self._account_id(connection.client))
        result = check_state_identity(self._settings.state_dir, current, store=self._store)
        self.verified = True
        if not result.adopted:
            return
        if self._store.created:
            self._reconciler.note_new_state_dir()
        else:
            logger.warning("state directory %s had no exchange record: adopted %s", self._settings.state_dir,
                           current.describe())

    @staticmethod
    def _account_id(client: ExchangeClient) -> str:
        """The account's userId (the key query, else the user info); refused when neither has one."""
        for read in (client.query_api_key, client.user_info):
            user_id = parse_api_key(read()).user_id
            if user_id is not None:
                return user_id
        raise StateIdentityError("the exchange reported no account id (userId) for this key, so the state "
                                 "directory's exchange cannot be checked: check the key and COINCALL_BASE_URL")


def recover(ctx: TradingContext) -> bool:
    """Reload our trades and orders from the store before any runner exists; True if it worked."""
    try:
        report = ctx.lifecycle_manager.recover()
    except Exception as error:  # noqa: BLE001 - the daemon stays up, alerting, and does nothing
        # Half a memory is worse than none: trades not loaded and orders not restored would
        # read as flat, be ended, and leave their positions to nobody. Nothing moves until a
        # restart recovers in full.
        logger.exception("restart recovery failed: every strategy starts paused and the lifecycle is held")
        ctx.lifecycle_manager.pin_hold(f"restart recovery failed: {type(error).__name__}: {error}")
        send_alert(ctx.alerts, logger, "CRITICAL", "recovery_failed",
                   f"restart recovery failed ({type(error).__name__}: {error}): no order, exit or close is sent "
                   f"until a restart recovers in full. Operator: read the log, repair the state store, restart")
        return False
    logger.info("recovery: %d trade(s) restored, %d active; abandoned at restart: %s", report["restored"],
                len(report["active"]), ", ".join(report["abandoned"]) or "none")
    return True


def start_runners(configs: Sequence[StrategyConfig], ctx: TradingContext, *, strict: bool) -> list[StrategyRunner]:
    """One runner per strategy. ``strict``: a runner that cannot start is a ``ConfigError``
    (the daemon exits 2); otherwise it is logged and left out (a kill must not be blocked by
    a strategy that cannot run: its stored state is used)."""
    runners = []
    for config in configs:
        try:
            runners.append(StrategyRunner(config, ctx))
        except ConfigError as exc:
            if strict:
                raise
            logger.warning("strategy %s has no runner (%s); its stored state is used", config.name, exc)
    return runners


def pause_if_unsafe(ctx: TradingContext, runners: Sequence[StrategyRunner], recovered: bool) -> None:
    """No new entries after a failed recovery (exits still run).

    A quarantined store is judged by the start-up reconciliation on the first poll: every
    strategy is paused only if the exchange shows positions or orders of ours.
    """
    if not recovered:
        for runner in runners:
            runner.pause("recovery failed at start-up")
    if ctx.reconciler is None:  # the runners must be attached: the reconciler pauses them on a mismatch
        raise ValueError("a context without a reconciler cannot start: build it with app.build_context")
    ctx.reconciler.attach_runners(runners)
    for trade in ctx.lifecycle_manager.unmanaged_trades():
        logger.warning("trade %s belongs to strategy %r, which is not running: no exit rule applies (expiry "
                       "still does; `python main.py kill` can close it)", trade.id, trade.strategy)


def store_lost_reaction(ctx: TradingContext, lock: InstanceLock) -> Callable[[str, Path | None], None]:
    """What the daemon does when its store file is lost while it runs (row L1): once, and again
    when the copy is made only on a retry (``StoreWatch``): the entry hold is keyed, so a second
    call holds nothing twice, and the second alert names the copy the first could not.

    The recovered copy it writes to from then on is published in the lock file, so a ``kill``
    or ``pause`` from the command line is queued where the daemon reads (it used to create a
    new, empty store at the old path, which nobody read)."""

    def react(problem: str, copy: Path | None) -> None:
        path = ctx.store.relocated_from or ctx.store.path
        ctx.lifecycle_manager.hold_entries("state_store_lost", f"state store {path}: {problem}")
        if copy is not None:
            try:
                lock.publish_store(copy)
            except OSError as exc:
                logger.error("could not publish the recovered store %s in %s (%s): the command line cannot "
                             "queue commands for this daemon", copy, lock.path, exc)
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


# ---------------------------------------------------------------------------------------
# The start-up summary (log only)
# ---------------------------------------------------------------------------------------


def account_line(summary: Any) -> str:
    figures = read_account_figures(summary)
    ratio_text = "n/a" if figures.im_ratio is None else f"{figures.im_ratio * 100:.2f}%"
    return (
        f"equity={fmt(figures.equity)} USD available_margin={fmt(figures.available_margin)} USD "
        f"IM={fmt(figures.initial_margin)} MM={fmt(figures.maintenance_margin)} IM_ratio={ratio_text} "
        f"uPnL={fmt(figures.unrealized_pnl)}"
    )


def _side_quote(side: SideFigures | None) -> str:
    if side is None:
        return "n/a"
    return (
        f"bid {fmt(side.bid, 1)} / ask {fmt(side.ask, 1)} / "
        f"mark {fmt(side.mark, 1)} / delta {fmt(side.delta, 3)}"
    )


def nearest_expiry_ms(instruments: Sequence[ListedInstrument], now_ms: int) -> int | None:
    """The earliest listed expiry still in the future, or None."""
    expiries = sorted({i.expiry_ms for i in instruments if i.expiry_ms is not None})
    upcoming = [e for e in expiries if e > now_ms]
    return upcoming[0] if upcoming else None


def atm_row(chain: Sequence[ChainLine], index_price: float) -> ChainLine | None:
    """The chain line whose strike is closest to the index."""
    struck = [(line.strike, line) for line in chain if line.strike is not None]
    if not struck:
        return None
    return min(struck, key=lambda pair: abs(pair[0] - index_price))[1]


def chain_summary_lines(client: ExchangeClient, clock: Clock) -> Iterator[str]:
    """A few log lines about the BTC option market, from one instruments and one chain call."""
    index = finite_number(client.index_price())
    instruments = read_listing(client.instruments("BTC"))
    expiries = {i.expiry_ms for i in instruments if i.expiry_ms is not None}
    yield (
        f"market: BTC index={fmt(index)} instruments={len(instruments)} "
        f"(active {sum(1 for i in instruments if i.is_active)}) expiries={len(expiries)}"
    )
    nearest = nearest_expiry_ms(instruments, clock.now_ms())
    if nearest is None:
        yield "chain: no upcoming expiry is listed"
        return
    chain = read_chain_lines(client.option_chain(end_time_ms=nearest))
    row = atm_row(chain, index) if index is not None else None
    if row is None:
        yield f"chain: nearest expiry {fmt_time(nearest / 1000)} has {len(chain)} strikes; no ATM row (index or strikes missing)"
        return
    yield (
        f"chain: nearest expiry {fmt_time(nearest / 1000)} ({len(chain)} strikes) ATM strike {fmt(row.strike, 0)}: "
        f"CALL {_side_quote(row.call)}; PUT {_side_quote(row.put)}"
    )


def log_startup_summary(client: ExchangeClient, clock: Clock) -> None:
    """The exchange clock offset, the account and the nearest chain, logged once at start-up."""
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


# ---------------------------------------------------------------------------------------
# What the loop reports: the status line, the health line, the shutdown state
# ---------------------------------------------------------------------------------------


class StatusReporter:
    """Registered after the runners: one status line per poll (or per ``every`` seconds at
    most, a backtest's hour), from data already fetched.

    It sends no request of its own except an index read that the cache usually answers
    (the runners' data gate keeps it fresh). The line has no time of its own (the log line's
    stamp says when) and its figures are rounded. PnL is ``operator_view.RunningPnl`` (the sums of ``pnl_totals``), the
    figures of ``status`` and the dashboard: realized over finished trades (CLOSED and FAILED),
    unrealized on mark and on executable prices over the active ones (``n/a`` while a trade
    cannot be valued, never a made-up 0). When the account holds more than one underlying or
    any perpetual (issue 13), the line ends with the net delta per underlying, options plus
    perps (``delta=BTC:+0.012/ETH:-0.300``); an options-only BTC account keeps the line as it was.
    """

    callback_name = "StatusReporter"   # how the monitor names this callback

    def __init__(self, ctx: TradingContext, runners: Sequence[StrategyRunner], *, every: float = 0.0) -> None:
        self._ctx = ctx
        self._runners = runners
        self._every = float(every)
        self._pnl = RunningPnl(ctx.lifecycle_manager)
        self._last_snapshot: Any = None
        self._written_at: float | None = None

    def __call__(self, snapshot: Any) -> None:
        if snapshot is self._last_snapshot:
            return
        self._last_snapshot = snapshot
        now = self._ctx.clock.now()
        if self._written_at is not None and now - self._written_at < self._every:
            return
        self._written_at = now
        index = self._index_text()
        totals = self._pnl.totals()
        line = ("status index=%s equity=%s available_margin=%s positions=%d exchange=%s trades_active=%d "
                "trades_total=%d realized=%s upnl_mark=%s upnl_exec=%s paused=%s")
        args: list[Any] = [
            index, fmt(snapshot.equity), fmt(snapshot.available_margin),
            snapshot.position_count, _reachability_text(self._ctx), totals.trades_open, totals.trades_total,
            fmt(totals.realized), fmt(totals.unrealized_mark), fmt(totals.unrealized_executable),
            ",".join(r.name for r in self._runners if r.is_paused) or "-",
        ]
        delta = status_delta_text(snapshot)
        if delta is not None:
            line, args = line + " delta=%s", [*args, delta]
        logger.info(line, *args)

    def _index_text(self) -> str:
        """``90,000.00`` when every strategy trades BTC (the line as it always was); one
        ``U:price`` per underlying the strategies trade otherwise (``BTC:90,000.00/ETH:3,000.00``)."""
        underlyings = runner_underlyings(self._runners)
        texts = []
        for underlying in underlyings:
            try:
                texts.append(fmt(self._ctx.market_data.index_price(underlying,
                                                                   max_age=STATUS_INDEX_MAX_AGE_SECONDS)))
            except TraderError:
                texts.append("n/a")
        if underlyings == [DEFAULT_UNDERLYING]:
            return texts[0]
        return "/".join(f"{underlying}:{text}" for underlying, text in zip(underlyings, texts))

    def on_snapshot_error(self, error: Exception) -> None:
        logger.info("status snapshot unavailable: %s exchange=%s", error, _reachability_text(self._ctx))


def status_delta_text(snapshot: AccountSnapshot) -> str | None:
    """``BTC:+0.012/ETH:-0.300``: net delta per underlying (options and perps) for the status
    line, or None when the account holds one underlying's options only (the line as before)."""
    by_underlying = snapshot.greeks_by_underlying()
    if len(by_underlying) <= 1 and not any(position_kind(p) == "perpetual" for p in snapshot.positions):
        return None
    return "/".join(f"{underlying}:"
                    + ("n/a" if "delta" in snapshot.missing_greeks(underlying) else f"{greeks['delta']:+.3f}")
                    for underlying, greeks in by_underlying.items())


def runner_underlyings(runners: Sequence[StrategyRunner]) -> list[str]:
    """The underlyings the strategies trade, sorted; BTC when there is no strategy."""
    return sorted({runner.config.underlying for runner in runners}) or [DEFAULT_UNDERLYING]


def view_sources(ctx: TradingContext, settings: Settings, runners: Sequence[StrategyRunner],
                 plan: RunPlan) -> ViewSources:
    """What the operator view reads, from the context: services already built, no request."""
    started_at = ctx.clock.now()
    return ViewSources(
        clock=ctx.clock, environment=settings.environment, simulated=settings.is_sim,
        snapshots=ctx.position_monitor, exchange_up=lambda: ctx.account_manager.reachability.is_up,
        lifecycle=ctx.lifecycle_manager, ledger=ctx.ledger, runners=runners,
        alerts=ctx.alerts if isinstance(ctx.alerts, AlertSink) else None, reconciler=ctx.reconciler,
        warnings=lambda: health_state(ctx, runners, started_at)["warnings"], entries=plan.entries,
    )


def _reachability_text(ctx: TradingContext) -> str:
    return "UP" if ctx.account_manager.reachability.is_up else "DOWN"


def health_state(ctx: TradingContext, runners: Sequence[StrategyRunner], started_at: float) -> dict[str, Any]:
    """What the health line shows (BEHAVIOUR.md 7.4), from data we already hold: no request."""
    now = ctx.clock.now()
    snap = ctx.position_monitor.latest
    lifecycle = ctx.lifecycle_manager
    trades = lifecycle.trades()
    per_state: dict[str, int] = {}
    for trade in trades:
        per_state[trade.state.value] = per_state.get(trade.state.value, 0) + 1
    current_error = ctx.position_monitor.current_error
    state: dict[str, Any] = {
        "uptime_seconds": round(now - started_at, 3),
        "trades_per_state": per_state,
        "index_age_seconds": ctx.market_data.index_age(),          # BTC's (the default), as before
        "index_ages_seconds": {u: ctx.market_data.index_age(u) for u in runner_underlyings(runners)},
        "index_frozen": ctx.market_data.index_frozen,              # any underlying's
        "index_frozen_underlyings": [u for u in runner_underlyings(runners)
                                     if ctx.market_data.index_frozen_for(u)],
        "exchange": _reachability_text(ctx),
        "live_orders": len(ctx.ledger.live_orders()),
        "paused_runners": {r.name: r.pause_reason for r in runners if r.is_paused},
        "breaker_trips": lifecycle.breaker_trips,
        "failing_conditions": [f"{f.strategy}:{f.condition} x{f.consecutive}"
                               for f in ctx.condition_health.unhealthy()],
        "failing_callbacks": ctx.position_monitor.failing_callbacks,
        "persistence_errors": ctx.store.write_errors + lifecycle.persistence_errors,
        "snapshot_error": str(current_error) if current_error else None,
    }
    warnings: list[str] = []
    if snap is not None:
        state.update(
            equity=snap.equity, available_margin=snap.available_margin,
            margin_utilization=round(snap.margin_utilization, 3), net_delta=round(snap.net_delta, 6),
            delta_by_underlying={u: round(g["delta"], 6) for u, g in snap.greeks_by_underlying().items()},
            position_count=snap.position_count, snapshot_age_seconds=round(now - snap.timestamp, 3),
        )
        if snap.margin_utilization > MARGIN_UTILIZATION_WARNING_PCT:
            warnings.append(f"margin utilization {snap.margin_utilization:.1f}% is above "
                            f"{MARGIN_UTILIZATION_WARNING_PCT:g}%")
    else:
        state["snapshot_age_seconds"] = None
    if state["index_frozen"]:
        frozen = ", ".join(state["index_frozen_underlyings"]) or "an underlying no strategy trades"
        warnings.append(f"index frozen ({frozen}): entries on it blocked")
    unmanaged = [f"{t.id} ({t.strategy})" for t in lifecycle.unmanaged_trades()]
    state["unmanaged_trades"] = unmanaged
    if unmanaged:
        warnings.append(f"unmanaged trades (strategy not running; no exit rule): {', '.join(unmanaged)}")
    failing = lifecycle.failing_trades()
    state["failing_trades"] = {trade_id: round(seconds, 3) for trade_id, seconds in failing.items()}
    if failing:
        warnings.append("trades whose tick keeps failing (nothing drives them): "
                        + ", ".join(f"{trade_id} for {fmt_duration(seconds)}" for trade_id, seconds in failing.items()))
    hold = lifecycle.hold_reason
    if hold is not None:
        warnings.append(f"lifecycle on hold: {hold}")
    report = ctx.reconciler.last_report if ctx.reconciler is not None else None
    if report is not None:
        state["reconciliation"] = {"kind": report.kind, "age_seconds": round(now - report.at, 3),
                                   "summary": report.summary()}
    blocked = ctx.ledger.blocked_symbols()
    if blocked:
        state["blocked_symbols"] = blocked
        warnings.append(f"symbols blocked until an operator resumes: {', '.join(blocked)}")
    state["warnings"] = warnings
    return state


def log_shutdown_state(ctx: TradingContext) -> None:
    """Say what stays behind: every working order and every trade holding exposure (7.5)."""
    orders = ctx.ledger.live_orders()
    trades = [t for t in ctx.lifecycle_manager.trades() if t.is_active and t.has_exposure]
    if not orders and not trades:
        logger.info("shutdown: no working order and no trade with exposure")
        return
    lines = [f"{o.symbol} {o.side.name} {o.qty:g} @ {o.price:g} "
             f"clientOrderId={o.client_order_id} ({o.status.value}, trade {o.trade_id})" for o in orders]
    lines += [f"trade {t.id} ({t.strategy}, {t.state.value}) exposure "
              + ", ".join(f"{t.legs[i].symbol} {'+' if qty > 0 else ''}{fmt_qty(qty)}"
                          for i, qty in sorted(t.exposure().items()))
              for t in trades]
    logger.warning("shutdown leaves %d working order(s) and %d trade(s) with exposure, untouched "
                   "(recovery resolves them at the next start):", len(orders), len(trades))
    for line in lines:   # one record each: every line of the log starts with its time stamp
        logger.warning("shutdown leaves %s", line)


def cancel_open_orders_at_exit(ctx: TradingContext) -> None:
    """``--cancel-open-orders-on-exit``: our working entry orders only, one by one, each logged.

    Close, unwind and kill orders stay working: cancelling them could leave exposure
    unmanaged until the next start. Fills seen while cancelling are recorded; the next
    start decides each trade on its fills as usual.
    """
    for order in [o for o in ctx.ledger.live_orders() if o.intent.family() is Intent.OPEN]:
        logger.warning("shutdown: cancelling open order %d (%s %s %g @ %g, trade %s)", order.client_order_id,
                       order.symbol, order.side.name, order.qty, order.price,
                       order.trade_id)
        try:
            ctx.ledger.cancel_until_final(order)
        except Exception:  # noqa: BLE001 - the next start resolves whatever is left
            logger.exception("shutdown: cancelling order %d failed", order.client_order_id)
            continue
        logger.warning("shutdown: order %d is %s, filled %g", order.client_order_id, order.status.value,
                       order.filled_qty)


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


def monitor_wait_slice(clock: Clock, poll_interval: float) -> float:
    """How much clock time the monitor's wait between ticks sleeps at once.

    Half a second on a clock that waits for real (a signal or a new job cuts the wait short
    within one slice). On an unpaced lock-step clock a sleep costs no real time and nothing
    else runs while the loop sleeps, so slicing only repeated the same checks about twenty
    times per poll (a tenth of a backtest's CPU): the whole wait is one slice there.
    """
    if isinstance(clock, SimulatedClock) and clock.lockstep and clock.pace == 0:
        return max(float(poll_interval), MAX_SLEEP_SLICE_SECONDS)
    return MAX_SLEEP_SLICE_SECONDS


def daemon_loop(ctx: TradingContext, runners: Sequence[StrategyRunner], stop: StopFlag, run_for: float | None,
                on_wake: Callable[[float], Any] | None = None,
                finished: Callable[[], str | None] | None = None) -> None:
    """The monitor loop on this thread until a signal, ``--run-for`` simulated seconds, or
    ``finished()`` returning the reason the run is over.

    ``monitor.run_once()`` ticks and then waits on the clock until the next wake, so on a
    speed-0 simulated clock nothing sleeps for real. A failing iteration is logged and
    retried after one poll interval: the loop never exits by itself.
    """
    clock, monitor = ctx.clock, ctx.position_monitor
    started_at = clock.now()
    deadline = started_at + run_for if run_for is not None else None
    # The monitor's wait between ticks looks at the flag in every slice: a signal cuts it
    # short, never a tick (the handler itself only sets the flag).
    monitor.set_stop_check(lambda: stop.is_set)
    # Each step under its own guard: one that fails on every wake never starves the others, and a
    # streak of failures is a CRITICAL alert, not only a traceback in the log (loop_guard.py).
    guards = {name: StepGuard(name, clock, ctx.alerts) for name in ("monitor", "health", "clock", "per-wake",
                                                                     "finished")}

    def report_health() -> None:
        if ctx.health.due():   # the state walks every trade: built only when a line is due
            ctx.health.maybe_report(health_state(ctx, runners, started_at))

    sync_failures = RepeatLimiter(clock)

    def sync_clock() -> None:
        # The signing offset is measured at start and after a 10557; a clock that drifts in
        # between got its next create refused (an open then fails half-way and is unwound).
        # Re-measured every ``time_sync_interval_seconds`` (API.md 2.2); a failed read keeps the
        # offset and is tried again at the next wake (said once per 5 minutes).
        try:
            ctx.http.sync_time_if_due()
        except TraderError as exc:
            sync_failures.warning(logger, "time_sync", "server time re-sync failed (%s); the signing offset is kept",
                                  exc)

    try:
        while not stop.is_set:
            if guards["monitor"].run(monitor.run_once) is None:
                wait_until(clock, clock.now() + monitor.poll_interval, stop)   # retried after one interval
            guards["health"].run(report_health)
            guards["clock"].run(sync_clock)
            if on_wake is not None:
                guards["per-wake"].run(lambda: on_wake(clock.now()))
            done = guards["finished"].run(finished) if finished is not None else None
            if done is not None:
                stop.request(done)
            if deadline is not None and clock.now() >= deadline and not stop.is_set:
                stop.request(f"--run-for {run_for:g}s of simulated time elapsed")
    finally:
        monitor.set_stop_check(None)


# ---------------------------------------------------------------------------------------
# One run: the start-up sequence and the loop
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """What one run does beyond the start-up every run shares: the daemon's, or a kill's.

    * ``entries``: the daemon's runners consider entries, and a strategy whose runner cannot
      start is a configuration error (exit 2). An operator's kill without a daemon
      (``entries=False``) registers no runner on the monitor, so nothing opens during a
      kill, and a strategy that cannot start is logged and left out: a kill must never be
      blocked by a broken strategy.
    * ``before_loop(ctx)``: runs once everything is registered, before the first wake (the
      kill queues its command there).
    * ``strategy_scope``: the strategies whose trades the lifecycle acts on (None: all); a
      ``kill --strategy A`` without a daemon must not run B's exits, hedges or closes.
    * ``finished(ctx)``: asked after every wake; a reason (text) ends the run like a signal.
    * ``on_wake(ctx, now)``: called after every wake (a backtest's progress line).
    """

    run_for: float | None = None
    cancel_open_orders_on_exit: bool = False
    entries: bool = True
    before_loop: Callable[[TradingContext], None] | None = None
    # An operator's ``kill --strategy A`` without a daemon: the lifecycle acts on A's trades (and
    # on trades already in kill mode) only; other strategies' trades wait for the daemon's start.
    strategy_scope: frozenset[str] | None = None
    finished: Callable[[TradingContext], str | None] | None = None
    on_wake: Callable[[TradingContext, float], None] | None = None
    # The operator view (the dashboard's data, STATE_DIR/operator_view.json, the valuation events):
    # a backtest turns it off, nobody watches it there and it costs a third of a backtest's time.
    operator_view: bool = True
    # Seconds between two status lines (0: one per poll, the daemon's). A backtest writes one per
    # simulated hour: a month at a 10 s poll would otherwise log 259,200 of them, nobody reads
    # them there (its progress line and report do that job), and they cost ~8 % of its CPU.
    status_every: float = 0.0


def started_text(settings: Settings, runners: Sequence[StrategyRunner], plan: RunPlan) -> str:
    """The "daemon started" notification's body: where, what runs, whether it trades."""
    where = "paper trading (sim)" if settings.is_sim else f"{settings.environment.upper()}, real money"
    names = ", ".join(runner.name for runner in runners) or "none"
    entries = "" if plan.entries else " (operator kill: no new entries)"
    return f"{where}; strategies: {names}{entries}"


def stop_text(code: int, stop: StopFlag) -> str:
    """The "daemon stopped" notification's reason: the stop's own, or what the exit code means."""
    if code == EXIT_OK:
        return stop.reason or "requested"
    meaning = {EXIT_CONFIG: "configuration refused", EXIT_STARTUP_FAILURE: "start-up failed",
               EXIT_LOCKED: "another daemon holds the state directory"}.get(code, "error")
    return f"exit code {code}: {meaning} (see the log)"


def run_daemon(settings: Settings, clock: Clock, stop: StopFlag, configs: Sequence[StrategyConfig],
               plan: RunPlan) -> int:
    """One daemon per state directory: the lock comes before any request or store write."""
    lock = InstanceLock(settings.state_dir)
    if not lock.acquire():
        message = (f"another CoincallTrader daemon (pid {lock.holder() or '?'}) holds {lock.path}: "
                   f"stop it first, or give this one its own STATE_DIR")
        logger.error("%s", message)
        complain(message)
        return EXIT_LOCKED
    try:
        return run_locked(settings, clock, stop, configs, plan, lock=lock)
    finally:
        lock.release()


def run_locked(settings: Settings, clock: Clock, stop: StopFlag, configs: Sequence[StrategyConfig],
               plan: RunPlan, *, lock: InstanceLock) -> int:
    """The start-up sequence and the loop, with the state directory's ``lock`` held by the caller
    (it publishes the state store's path for the command line, ``InstanceLock.publish_store``).

    exchange and store (``open_context``) → recover → runners → key check → state directory
    identity → pause what is unsafe → callbacks on the monitor (store watch, command queue,
    runners, status) → loop. Returns the exit code; ``ctx.close()`` always runs.
    """
    logger.info("%s", banner(settings))
    logger.info("settings: %s", settings.describe())
    logger.info("strategies: %s", ", ".join(config.name for config in configs) or "none")
    # The dashboard (docs/DASHBOARD.md) takes its port before the first exchange request, so a
    # port in use refuses the start (exit 2) before anything is asked of the exchange; it serves
    # once the loop is about to run. The daemon's run only (not a command-line kill).
    view_board, log_tail = ViewBoard(), LogTail()
    try:
        dashboard = (bind_dashboard(settings, clock, view_board, log_tail, _state_path(settings.state_dir))
                     if plan.entries else None)
    except DashboardError as exc:
        logger.error("configuration error: %s", exc)
        complain(f"configuration error: {exc}")
        return EXIT_CONFIG
    try:
        return _run_with_dashboard(settings, clock, stop, configs, plan,
                                   Surface(view_board, log_tail, dashboard, lock))
    finally:
        if dashboard is not None:
            dashboard.stop()


@dataclass(frozen=True)
class Surface:
    """What the operator sees while the daemon runs: the view board and log tail the dashboard
    reads, and the dashboard itself (bound, not yet serving; None when disabled)."""

    view_board: ViewBoard
    log_tail: LogTail
    dashboard: DashboardServer | None
    lock: InstanceLock   # where the command line reads the state store's path (publish_store)


def _run_with_dashboard(settings: Settings, clock: Clock, stop: StopFlag, configs: Sequence[StrategyConfig],
                        plan: RunPlan, surface: Surface) -> int:
    try:
        ctx = open_context(settings, clock)
    except Exception:
        logger.exception("could not open the exchange connection or the state store")
        return EXIT_STARTUP_FAILURE
    if settings.is_sim:
        # After open_exchange: a restored paper account may have moved the clock forward.
        if isinstance(clock, SimulatedClock) and clock.lockstep:
            pacing = f"lock-step, paced at {clock.pace:g}x" if clock.pace > 0 else "lock-step, unpaced"
        else:
            pacing = f"speed {clock.speed:g}x" if isinstance(clock, SimulatedClock) else "n/a"
        logger.info("simulated time %s, %s: every time stamp in this log is simulated time (UTC)",
                    fmt_time(clock.now()), pacing)
    notifier = ctx.notifier
    if notifier is not None:
        notifier.start()
    ending = "stopped by an unexpected error (see the log)"
    try:
        code = _start_and_loop(ctx, settings, stop, configs, plan, surface)
        ending = stop_text(code, stop)
    except Exception:  # noqa: BLE001 - written to trading.log while its handlers still exist
        # A bug in a start-up or shutdown step: the traceback goes to the log the operator reads
        # (main removes the handlers on the way out), and the exit code is 1, which a service
        # manager restarts (deploy/coincall-trader.service), like a crash.
        logger.critical("the daemon stopped on an unexpected error", exc_info=True)
        complain("the daemon stopped on an unexpected error: see trading.log for the traceback")
        code = EXIT_STARTUP_FAILURE
    finally:
        try:
            ctx.close()
        finally:
            if notifier is not None:
                notifier.daemon_stopped(ending)
                notifier.stop()
    if code == EXIT_OK:
        logger.info("stopped cleanly")
    return code


def _start_and_loop(ctx: TradingContext, settings: Settings, stop: StopFlag, configs: Sequence[StrategyConfig],
                    plan: RunPlan, surface: Surface) -> int:
    """Everything after the context is open; the refusals (exit 2) come before any callback
    is registered, so a refused start sends nothing that could trade."""
    try:   # where the command line queues kill/pause/resume for this process
        surface.lock.publish_store(ctx.store.path)
    except OSError as exc:
        logger.error("could not publish the state store's path in %s (%s)", surface.lock.path, exc)
    recovered = recover(ctx)
    try:
        runners = start_runners(configs, ctx, strict=plan.entries)
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        complain(f"configuration error: {exc}")
        return EXIT_CONFIG
    refused = check_key(ctx.http, settings)
    if refused is not None:
        return refused
    identity = StateIdentityGate(ctx, settings, stop)
    refused = identity.verify_at_start()
    if refused is not None:
        return refused
    log_startup_summary(ctx.http, ctx.clock)
    pause_if_unsafe(ctx, runners, recovered)
    if plan.strategy_scope is not None:
        ctx.lifecycle_manager.act_only_on(plan.strategy_scope)
    monitor = ctx.position_monitor
    # Before the runners: a store lost under us stops entries in the same wake (row L1).
    monitor.register(StoreWatch(ctx.store, ctx.clock, store_lost_reaction(ctx, surface.lock)))
    monitor.register(CommandProcessor(ctx, runners))  # kill/resume queued by the command line
    if plan.entries:
        for runner in runners:
            monitor.register(runner)
    monitor.register(StatusReporter(ctx, runners, every=plan.status_every))
    # The operator view (issue 12): built after the status line each poll, published to the board
    # the dashboard reads, written to STATE_DIR/operator_view.json for `status`.
    view_board, log_tail = surface.view_board, surface.log_tail
    if plan.operator_view:
        monitor.register(ViewPublisher(view_sources(ctx, settings, runners, plan), view_board, log_tail=log_tail,
                                       journal=ctx.journal, state_dir=settings.state_dir))
    monitor.register(DailySummary(ctx.lifecycle_manager, ctx.journal))
    # The dashboard (docs/DASHBOARD.md), on a thread of its own: it reads the board and the log tail
    # and writes only the command queue, through its own connection to the state db.
    if surface.dashboard is not None:
        surface.dashboard.follow_store(lambda: ctx.store.path)   # a relocated store takes its commands too
        surface.dashboard.serve()
    if plan.before_loop is not None:
        plan.before_loop(ctx)
    exporter = TradesSnapshotExporter(settings.state_dir)

    def on_wake(now: float) -> None:
        if ctx.connection is not None:   # the embedded paper account is saved now and then
            ctx.connection.checkpoint(now)
        if settings.trades_snapshot_export and ctx.store.check_file() is None and ctx.store.relocated_from is None:
            # The exporter opens STATE_DIR/trader.db by name: never a file that is not ours (row L1).
            exporter.maybe_export(now)
        if plan.on_wake is not None:
            plan.on_wake(ctx, now)

    plan_finished = plan.finished
    finished = (lambda: plan_finished(ctx)) if plan_finished is not None else None
    if ctx.notifier is not None:
        ctx.notifier.daemon_started(started_text(settings, runners, plan))
    if plan.operator_view:
        log_tail.install(logging.getLogger())   # the dashboard's log tail, for this run only
    try:
        daemon_loop(ctx, runners, stop, plan.run_for, on_wake=on_wake, finished=finished)
    finally:
        log_tail.remove()
        if surface.dashboard is not None:
            surface.dashboard.stop()
    if identity.refusal is not None:
        return identity.refuse(identity.refusal)
    logger.info("stopping: %s", stop.reason or "requested")
    if plan.cancel_open_orders_on_exit:
        cancel_open_orders_at_exit(ctx)
    log_shutdown_state(ctx)
    for runner in runners:
        stats = runner.stats
        logger.info("strategy %s: %d opened, %d closed (%d won, %d lost), %d failed; realized PnL %s USD, "
                    "fees %s USD", runner.name, stats.opened, stats.closed, stats.wins, stats.losses, stats.failed,
                    fmt(stats.realized_pnl), fmt(stats.fees))
    return EXIT_OK
