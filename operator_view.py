"""The operator's view of a running daemon: one immutable value per poll, for people and the dashboard.

Why it looks the way it does (issue 12, "PnL everywhere"; ``OperatorView.to_json`` is the
contract the dashboard renders: its keys and types do not change without the dashboard):

* The view is built on the monitor thread, once per poll, by ``ViewPublisher`` (registered on
  the monitor after the status line), from what the daemon already holds: the latest account
  snapshot, the lifecycle's trades with the quotes the exits were judged on, the ledger's live
  orders, the runners' state, the alert sink's recent alerts, the reconciler's last report and
  the health warnings. It sends no request. A trade's unrealized PnL is ``trade.pnl("mark")``
  and ``trade.pnl("executable")``; a valuation that cannot be made (``StaleDataError``: no
  fresh, sane quote) is ``None``, never 0, so nobody reads "flat" where the truth is "unknown".
* The finished view is swapped into a ``ViewBoard`` by reference under a lock. Readers on other
  threads (the dashboard's HTTP threads) only ever get that immutable value or its JSON, so they
  never touch a trading object. The board also keeps the bounded equity curve.
* Every poll the view's JSON is also written atomically to ``<state>/operator_view.json``:
  ``python main.py status`` runs in another process and cannot value a trade itself (the quotes
  live in the daemon), so it reads the last valuation there and says how old it is. Why this
  file rather than the 60-s trades snapshot: it is the very figure the dashboard and the status
  line show, fresh to one poll, written whatever ``TRADES_SNAPSHOT_EXPORT`` says.
* One function, ``realized_total``, says what "realized PnL" is (every finished trade, CLOSED
  and FAILED: an unwound open lost money too, and its fees are in its PnL), and every figure
  for people (the status line, ``status``, the view, the daily summary) is computed with it.
* ``LogTail`` keeps the last formatted log lines in memory for the dashboard, and
  ``DailySummary`` writes one log line and one journal event (``daily_summary``) when the UTC
  day (simulated in sim) rolls over.
* Perpetuals share the account (issue 13): ``account.greeks`` stays the account-wide sum (as the
  dashboard always read it) and ``account.greeks_by_underlying`` splits it per underlying,
  options plus perpetuals, with ``perp_delta`` the perpetuals' part of the delta (a perp's
  delta is its signed quantity). Each position says its ``kind`` ("option" or "perpetual").
  Before the first good account read ``positions`` is None (JSON null), never ``[]``: an
  empty list would read as a flat account while our trades may hold exposure.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from account_manager import AccountSnapshot, position_kind
from alerts import Alert
from atomic_file import write_text_atomically
from clock import Clock, to_utc_datetime
from conditions import condition_name, exit_progress
from contracts import underlying_of
from display import fmt
from errors import SnapshotError, StaleDataError
from order_ledger import LedgerOrder
from reconciliation_report import ReconcileReport
from strategy import RunnerState, StrategyConfig
from trade_lifecycle import TradeLifecycle, TradeState

logger = logging.getLogger(__name__)

VIEW_FILE_NAME = "operator_view.json"
FINISHED_TRADES_SHOWN = 100
ALERTS_SHOWN = 50
LOG_TAIL_LINES = 200
# The equity curve: one point per minute at most, a day of them.
EQUITY_CURVE_POINTS = 1440
EQUITY_CURVE_SPACING_SECONDS = 60.0
# A "valuation" journal event (unrealized PnL per trade and strategy) at most this often.
VALUATION_EVENT_INTERVAL_SECONDS = 300.0
USD_DIGITS = 2
GREEK_DIGITS = 4


# ---------------------------------------------------------------------------------------
# PnL: the one definition of each figure
# ---------------------------------------------------------------------------------------


def realized_total(trades: Iterable[TradeLifecycle]) -> float:
    """Realized PnL of every finished trade, CLOSED and FAILED (fees included in each).

    Why FAILED counts: a partial open that was unwound realised a loss and paid fees; leaving
    it out (as ``status`` once did) showed -35.38 USD where the daemon's total was -47.30.
    """
    return math.fsum(float(t.realized_pnl) for t in trades
                     if t.state.is_terminal and t.realized_pnl is not None)


def fees_total(trades: Iterable[TradeLifecycle]) -> float:
    """Fees paid by every trade, finished or not (each finished trade's are also in its PnL)."""
    return math.fsum(float(t.fees_paid or 0.0) for t in trades)


def unrealized(trade: TradeLifecycle, mode: str) -> float | None:
    """``trade.pnl(mode)`` of an active trade; None when it cannot be valued now or has finished."""
    if not trade.is_active:
        return None
    try:
        return trade.pnl(mode)
    except StaleDataError:
        return None


def sum_known(values: Iterable[float | None]) -> float | None:
    """The sum, or None when any part is unknown (a total that silently skipped one would lie)."""
    parts = list(values)
    if any(value is None for value in parts):
        return None
    return math.fsum(value for value in parts if value is not None)


@dataclass(frozen=True)
class PnlTotals:
    """The PnL of a set of trades, as the status line and the view show it (USD, unrounded)."""

    realized: float
    unrealized_mark: float | None
    unrealized_executable: float | None
    fees: float
    trades_open: int
    trades_total: int


def pnl_totals(trades: Sequence[TradeLifecycle]) -> PnlTotals:
    """Realized over finished trades, unrealized (mark and executable) over active ones."""
    active = [t for t in trades if t.is_active]
    return PnlTotals(
        realized=realized_total(trades),
        unrealized_mark=sum_known(unrealized(t, "mark") for t in active),
        unrealized_executable=sum_known(unrealized(t, "executable") for t in active),
        fees=fees_total(trades), trades_open=len(active), trades_total=len(trades),
    )


class TradeSource(Protocol):
    """What ``RunningPnl`` reads of the lifecycle manager (``trade_lifecycle.LifecycleManager``)."""

    def trades(self, strategy: str | None = None) -> list[TradeLifecycle]: ...

    def active_trades(self, strategy: str | None = None) -> list[TradeLifecycle]: ...

    def trade_count(self) -> int: ...


class RunningPnl:
    """``pnl_totals`` of every trade for a line written every poll, at the cost of the active ones.

    Why: the status line is written on every poll, and summing every finished trade each time
    made a month-long backtest's polls slower as trades piled up. A finished trade's figures
    change only when it is reopened (a close booked without evidence and reversed), which makes
    it active again; so the finished part is recomputed only when the number of trades or the
    set of active trades (and their states) changes, and is the same sum ``pnl_totals`` makes.
    """

    def __init__(self, source: TradeSource) -> None:
        self._source = source
        self._fingerprint: tuple | None = None
        self._finished_realized = 0.0
        self._finished_fees = 0.0

    def totals(self) -> PnlTotals:
        active = self._source.active_trades()
        count = self._source.trade_count()
        fingerprint = (count, tuple((t.id, t.state) for t in active))
        if fingerprint != self._fingerprint:
            finished = [t for t in self._source.trades() if not t.is_active]
            self._finished_realized = realized_total(finished)
            self._finished_fees = fees_total(finished)
            self._fingerprint = fingerprint
        return PnlTotals(
            realized=self._finished_realized,
            unrealized_mark=sum_known(unrealized(t, "mark") for t in active),
            unrealized_executable=sum_known(unrealized(t, "executable") for t in active),
            fees=math.fsum((self._finished_fees, fees_total(active))), trades_open=len(active), trades_total=count,
        )


def _usd(value: float | None) -> float | None:
    return _rounded(value, USD_DIGITS)


def _rounded(value: float | None, digits: int) -> float | None:
    if value is None:
        return None
    number = float(value)
    return round(number, digits) if math.isfinite(number) else None


def time_text(epoch_seconds: float | None) -> str | None:
    """``2026-03-02 10:00:00 UTC``: the contract's ``*_text`` twin of an epoch time."""
    if epoch_seconds is None:
        return None
    return to_utc_datetime(float(epoch_seconds)).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_date(epoch_seconds: float) -> str:
    return to_utc_datetime(epoch_seconds).strftime("%Y-%m-%d")


# ---------------------------------------------------------------------------------------
# The view (keys exactly as the dashboard's contract)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GreeksView:
    delta: float | None
    gamma: float | None
    theta: float | None
    vega: float | None


@dataclass(frozen=True)
class UnderlyingGreeksView:
    """Net greeks of one underlying's positions, options and perpetuals; ``perp_delta`` is the
    perpetuals' part of ``delta`` (their other greeks are 0)."""

    delta: float | None
    gamma: float | None
    theta: float | None
    vega: float | None
    perp_delta: float | None


@dataclass(frozen=True)
class AccountView:
    equity: float | None
    available_margin: float | None
    initial_margin: float | None
    margin_utilization_pct: float | None
    greeks: GreeksView
    # Underlying -> its greeks, underlyings sorted; read-only by convention like every view part.
    greeks_by_underlying: Mapping[str, UnderlyingGreeksView]


@dataclass(frozen=True)
class TotalsView:
    realized_pnl: float | None
    unrealized_pnl_mark: float | None
    unrealized_pnl_executable: float | None
    fees: float | None
    trades_open: int
    trades_total: int


@dataclass(frozen=True)
class StrategyView:
    name: str
    state: str                       # "running" | "paused" | "stopped"
    paused: bool
    pause_reason: str | None
    next_entry_check: float | None
    next_entry_check_text: str | None
    no_entry_reason: str | None
    trades_today: int
    open_trades: int
    realized_pnl: float | None
    unrealized_pnl_mark: float | None
    unrealized_pnl_executable: float | None


@dataclass(frozen=True)
class LegView:
    symbol: str
    side: str                        # "BUY" | "SELL"
    qty: float
    filled_qty: float
    avg_fill_price: float | None
    mark: float | None


@dataclass(frozen=True)
class ExitRuleView:
    name: str
    fraction: float | None
    detail: str


@dataclass(frozen=True)
class TradeView:
    id: str
    strategy: str
    state: str
    execution_mode: str
    opened_at: float | None
    opened_at_text: str | None
    closed_at: float | None
    closed_at_text: str | None
    entry_premium: float | None
    legs: tuple[LegView, ...]
    unrealized_pnl_mark: float | None
    unrealized_pnl_executable: float | None
    exit_rules: tuple[ExitRuleView, ...]
    exit_reason: str | None
    realized_pnl: float | None
    fees: float | None


@dataclass(frozen=True)
class OrderView:
    client_order_id: int
    order_id: int | None
    trade_id: str
    symbol: str
    side: str
    qty: float
    price: float
    filled_qty: float
    status: str
    reduce_only: bool


@dataclass(frozen=True)
class PositionView:
    symbol: str
    kind: str                        # "option" | "perpetual"
    qty: float                       # signed: + long, - short
    ours: bool
    trade_ids: tuple[str, ...]


@dataclass(frozen=True)
class AlertView:
    time: float | None
    time_text: str | None
    level: str
    kind: str
    message: str


@dataclass(frozen=True)
class HealthView:
    last_poll_at: float | None
    last_poll_text: str | None
    exchange: str                    # "UP" | "DOWN"
    snapshot_error: str | None
    reconciliation: str | None
    reconciliation_age_seconds: float | None
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class OperatorView:
    """Everything the operator sees of the daemon at one poll; ``to_json`` is the contract."""

    generated_at: float
    generated_at_text: str
    environment: str                 # "sim" | "testnet" | "production"
    simulated: bool
    account: AccountView | None
    totals: TotalsView
    strategies: tuple[StrategyView, ...]
    trades: tuple[TradeView, ...]
    working_orders: tuple[OrderView, ...]
    positions: tuple[PositionView, ...] | None   # None: no account read yet, so unknown (never "none")
    alerts: tuple[AlertView, ...]
    health: HealthView
    equity_curve: tuple[tuple[float, float], ...]
    log_tail: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict with exactly the contract's keys (lists, not tuples)."""
        document = {name: _plain(getattr(self, name)) for name in self.__dataclass_fields__
                    if name not in ("equity_curve", "log_tail")}
        # The two long lists hold plain values: copied as they are, not walked item by item.
        document["equity_curve"] = [[at, equity] for at, equity in self.equity_curve]
        document["log_tail"] = list(self.log_tail)
        return document


def _plain(value: Any) -> Any:
    """A view part as plain JSON values (every dataclass of this module has fields only)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value


# ---------------------------------------------------------------------------------------
# What the builder reads (the daemon's services; fakes in tests)
# ---------------------------------------------------------------------------------------


class SnapshotSource(Protocol):
    """The monitor's latest good snapshot and the error of the latest poll."""

    @property
    def latest(self) -> AccountSnapshot | None: ...

    @property
    def current_error(self) -> SnapshotError | None: ...


class TradeBook(Protocol):
    def trades(self, strategy: str | None = None) -> list[TradeLifecycle]: ...


class WorkingOrders(Protocol):
    def live_orders(self, trade_id: str | None = None) -> list[LedgerOrder]: ...


class RecentAlerts(Protocol):
    def recent(self, n: int = 20) -> list[Alert]: ...


class ReconcileHistory(Protocol):
    @property
    def last_report(self) -> ReconcileReport | None: ...


class StrategyFace(Protocol):
    """What the view reads of a strategy runner (``strategy.StrategyRunner``)."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> StrategyConfig: ...

    @property
    def state(self) -> RunnerState: ...

    @property
    def is_paused(self) -> bool: ...

    @property
    def pause_reason(self) -> str: ...

    @property
    def no_entry_reason(self) -> str | None: ...


@dataclass(frozen=True)
class ViewSources:
    """Where the view's figures come from; ``app`` fills it from the ``TradingContext``.

    ``entries`` False (an operator's kill run without a daemon) shows every strategy as
    stopped. ``warnings`` is the health line's list of warnings (``app.health_state``).
    """

    clock: Clock
    environment: str
    simulated: bool
    snapshots: SnapshotSource
    exchange_up: Callable[[], bool]
    lifecycle: TradeBook
    ledger: WorkingOrders
    runners: Sequence[StrategyFace]
    alerts: RecentAlerts | None
    reconciler: ReconcileHistory | None
    warnings: Callable[[], Sequence[str]]
    entries: bool = True


# ---------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------


def build_view(sources: ViewSources, *, equity_curve: Sequence[tuple[float, float]] = (),
               log_tail: Sequence[str] = ()) -> OperatorView:
    """One ``OperatorView`` from the daemon's current state (no request)."""
    now = sources.clock.now()
    snapshot = sources.snapshots.latest
    trades = sources.lifecycle.trades()
    active = [t for t in trades if t.is_active]
    marks = {t.id: (unrealized(t, "mark"), unrealized(t, "executable")) for t in active}
    conditions = {runner.name: list(runner.config.exit_conditions) for runner in sources.runners}
    shown = active + [t for t in trades if not t.is_active][-FINISHED_TRADES_SHOWN:]
    shown.sort(key=lambda t: t.seq, reverse=True)
    return OperatorView(
        generated_at=now, generated_at_text=time_text(now) or "", environment=sources.environment,
        simulated=sources.simulated,
        account=_account(snapshot) if snapshot is not None else None,
        totals=TotalsView(
            realized_pnl=_usd(realized_total(trades)),
            unrealized_pnl_mark=_usd(sum_known(mark for mark, _ in marks.values())),
            unrealized_pnl_executable=_usd(sum_known(executable for _, executable in marks.values())),
            fees=_usd(fees_total(trades)), trades_open=len(active), trades_total=len(trades)),
        strategies=_strategies(sources, trades, marks),
        trades=tuple(_trade(t, marks.get(t.id, (None, None)), conditions, snapshot) for t in shown),
        working_orders=tuple(_order(o) for o in sources.ledger.live_orders()),
        positions=_positions(snapshot, active),
        alerts=_alerts(sources.alerts),
        health=_health(sources, snapshot, now),
        equity_curve=tuple(equity_curve),
        log_tail=tuple(log_tail),
    )


def _account(snapshot: AccountSnapshot) -> AccountView:
    unknown = snapshot.missing_greeks()
    return AccountView(
        equity=_usd(snapshot.equity), available_margin=_usd(snapshot.available_margin),
        initial_margin=_usd(snapshot.initial_margin),
        margin_utilization_pct=_rounded(snapshot.margin_utilization, 2),
        greeks=GreeksView(delta=_known_greek(snapshot.net_delta, "delta", unknown),
                          gamma=_known_greek(snapshot.net_gamma, "gamma", unknown),
                          theta=_known_greek(snapshot.net_theta, "theta", unknown),
                          vega=_known_greek(snapshot.net_vega, "vega", unknown)),
        greeks_by_underlying=underlying_greeks(snapshot))


def _known_greek(total: float, name: str, unknown: frozenset[str]) -> float | None:
    """A net greek for people; None (shown as unknown) when a position's share of it is missing:
    the snapshot counts that share as 0, and a total that silently skipped one would lie."""
    return None if name in unknown else _rounded(total, GREEK_DIGITS)


def underlying_greeks(snapshot: AccountSnapshot) -> dict[str, UnderlyingGreeksView]:
    """``snapshot.greeks_by_underlying()`` rounded for people, with each underlying's perp delta."""
    perp_delta: dict[str, float] = {}
    for position in snapshot.positions:
        if position_kind(position) == "perpetual":
            underlying = underlying_of(position.symbol) or "?"
            perp_delta[underlying] = math.fsum((perp_delta.get(underlying, 0.0), float(position.delta)))
    views = {}
    for underlying, greeks in snapshot.greeks_by_underlying().items():
        unknown = snapshot.missing_greeks(underlying)
        views[underlying] = UnderlyingGreeksView(
            delta=_known_greek(greeks["delta"], "delta", unknown),
            gamma=_known_greek(greeks["gamma"], "gamma", unknown),
            theta=_known_greek(greeks["theta"], "theta", unknown),
            vega=_known_greek(greeks["vega"], "vega", unknown),
            perp_delta=_rounded(perp_delta.get(underlying, 0.0), GREEK_DIGITS))
    return views


def _strategies(sources: ViewSources, trades: Sequence[TradeLifecycle],
                marks: Mapping[str, tuple[float | None, float | None]]) -> tuple[StrategyView, ...]:
    by_strategy: dict[str, list[TradeLifecycle]] = {}
    for trade in trades:
        by_strategy.setdefault(trade.strategy, []).append(trade)
    views = [_strategy(runner, by_strategy.get(runner.name, []), marks, sources.entries)
             for runner in sources.runners]
    running = {runner.name for runner in sources.runners}
    # A strategy with trades but no runner (removed from the configuration): its trades still
    # count, shown as stopped.
    for name in sorted(set(by_strategy) - running):
        views.append(_strategy(None, by_strategy[name], marks, False, name=name))
    return tuple(views)


def _strategy(runner: StrategyFace | None, trades: Sequence[TradeLifecycle],
              marks: Mapping[str, tuple[float | None, float | None]], entries: bool, *,
              name: str = "") -> StrategyView:
    open_ids = [t.id for t in trades if t.is_active]
    paused = runner is not None and runner.is_paused
    next_check: float | None = None
    if runner is not None and entries and not paused and runner.state.last_entry_check is not None:
        next_check = runner.state.last_entry_check + runner.config.check_interval_seconds
    state = "paused" if paused else ("running" if runner is not None and entries else "stopped")
    return StrategyView(
        name=runner.name if runner is not None else name, state=state, paused=paused,
        pause_reason=(runner.pause_reason or None) if runner is not None and paused else None,
        next_entry_check=next_check, next_entry_check_text=time_text(next_check),
        no_entry_reason=runner.no_entry_reason if runner is not None and entries else None,
        trades_today=len(runner.state.opened_today) if runner is not None else 0,
        open_trades=len(open_ids),
        realized_pnl=_usd(realized_total(trades)),
        unrealized_pnl_mark=_usd(sum_known(marks[i][0] for i in open_ids)),
        unrealized_pnl_executable=_usd(sum_known(marks[i][1] for i in open_ids)),
    )


def _trade(trade: TradeLifecycle, marks: tuple[float | None, float | None],
           conditions: Mapping[str, Sequence[Any]], snapshot: AccountSnapshot | None) -> TradeView:
    finished_at = trade.closed_at if trade.state is TradeState.CLOSED else trade.failed_at
    reason = trade.exit_reason
    if reason is None and trade.state is TradeState.FAILED and trade.failure_reason:
        reason = f"failed: {trade.failure_reason}"
    return TradeView(
        id=trade.id, strategy=trade.strategy, state=trade.state.value, execution_mode=trade.execution_mode,
        opened_at=trade.opened_at, opened_at_text=time_text(trade.opened_at),
        closed_at=finished_at, closed_at_text=time_text(finished_at),
        entry_premium=_usd(trade.entry_premium),
        legs=tuple(LegView(symbol=leg.symbol, side=leg.side.name, qty=leg.qty, filled_qty=leg.open_filled,
                           avg_fill_price=leg.open_vwap if leg.open_filled > 0 else None,
                           mark=_quote_mark(leg.quote)) for leg in trade.legs),
        unrealized_pnl_mark=_usd(marks[0]), unrealized_pnl_executable=_usd(marks[1]),
        exit_rules=_exit_rules(trade, conditions, snapshot),
        exit_reason=reason,
        realized_pnl=_usd(trade.realized_pnl) if trade.state.is_terminal else None,
        fees=_usd(trade.fees_paid),
    )


def _quote_mark(quote: Any) -> float | None:
    """The mark of the leg's last quote (the lifecycle's refresh), or None when there is none."""
    if quote is None:
        return None
    try:
        mark = float(quote.mark)
    except (TypeError, ValueError):
        return None
    return mark if math.isfinite(mark) else None


def _exit_rules(trade: TradeLifecycle, conditions: Mapping[str, Sequence[Any]],
                snapshot: AccountSnapshot | None) -> tuple[ExitRuleView, ...]:
    """How close each exit rule of an active trade is to firing; nothing for a finished trade."""
    if not trade.is_active:
        return ()
    rules = conditions.get(trade.strategy)
    if rules is None:
        return tuple(ExitRuleView(name, None, "strategy not running: this rule is not applied")
                     for name in trade.exit_condition_names)
    if snapshot is None:
        return tuple(ExitRuleView(condition_name(rule), None, "no account snapshot yet") for rule in rules)
    views = []
    for rule in rules:
        fraction, detail = exit_progress(rule, snapshot, trade)
        views.append(ExitRuleView(condition_name(rule), _rounded(fraction, 4), detail))
    return tuple(views)


def _order(order: LedgerOrder) -> OrderView:
    return OrderView(client_order_id=order.client_order_id, order_id=order.order_id, trade_id=order.trade_id,
                     symbol=order.symbol, side=order.side.name, qty=order.qty, price=order.price,
                     filled_qty=order.filled_qty, status=order.status.value, reduce_only=order.reduce_only)


def _positions(snapshot: AccountSnapshot | None,
               active: Sequence[TradeLifecycle]) -> tuple[PositionView, ...] | None:
    """Every position of the latest good snapshot, marked ours or foreign.

    None before the first good account read: an empty tuple would say "flat" (the page's
    "No position.", ``[]`` in /api/positions) while our trades may hold exposure. Unknown is
    said as unknown, and the page tells why (no read yet, or the reads fail).
    """
    if snapshot is None:
        return None
    holders: dict[str, list[str]] = {}
    for trade in active:
        for leg in trade.legs:
            if leg.net_qty > 0:
                holders.setdefault(leg.symbol, []).append(trade.id)
    return tuple(PositionView(symbol=p.symbol, kind=position_kind(p), qty=p.signed_qty, ours=p.symbol in holders,
                              trade_ids=tuple(holders.get(p.symbol, ()))) for p in snapshot.positions)


def _alerts(sink: RecentAlerts | None) -> tuple[AlertView, ...]:
    if sink is None:
        return ()
    views = []
    for alert in reversed(sink.recent(ALERTS_SHOWN)):
        at = _epoch_of(alert.time)
        views.append(AlertView(time=at, time_text=time_text(at) if at is not None else alert.time,
                               level=alert.level, kind=alert.kind, message=alert.message))
    return tuple(views)


def _epoch_of(text: str) -> float | None:
    """An alert's ISO time (``clock.iso_utc``) as epoch seconds; None if it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _health(sources: ViewSources, snapshot: AccountSnapshot | None, now: float) -> HealthView:
    error = sources.snapshots.current_error
    report = sources.reconciler.last_report if sources.reconciler is not None else None
    last_poll = snapshot.timestamp if snapshot is not None else None
    return HealthView(
        last_poll_at=last_poll, last_poll_text=time_text(last_poll),
        exchange="UP" if sources.exchange_up() else "DOWN",
        snapshot_error=str(error) if error is not None else None,
        reconciliation=report.summary() if report is not None else None,
        reconciliation_age_seconds=round(now - report.at, 3) if report is not None else None,
        warnings=tuple(str(w) for w in sources.warnings()),
    )


# ---------------------------------------------------------------------------------------
# The board, the log tail
# ---------------------------------------------------------------------------------------


class ViewBoard:
    """The latest published view (swapped by reference under a lock) and the equity curve.

    Written by the monitor thread only (``note_equity``, ``publish``); read from any thread
    (``latest``, ``latest_json``, ``equity_curve``). The JSON is made once, at publish: a reader
    gets the same dict until the next poll and must not change it.
    """

    def __init__(self, *, curve_points: int = EQUITY_CURVE_POINTS,
                 curve_spacing_seconds: float = EQUITY_CURVE_SPACING_SECONDS) -> None:
        self._lock = threading.Lock()
        self._view: OperatorView | None = None
        self._json: dict[str, Any] | None = None
        self._curve: deque[tuple[float, float]] = deque(maxlen=max(1, int(curve_points)))
        self._spacing = float(curve_spacing_seconds)

    def note_equity(self, at: float, equity: float) -> None:
        """Add a point to the curve unless the last one is younger than the spacing."""
        if not math.isfinite(equity):
            return
        with self._lock:
            if self._curve and at - self._curve[-1][0] < self._spacing:
                return
            self._curve.append((float(at), round(float(equity), USD_DIGITS)))

    def equity_curve(self) -> tuple[tuple[float, float], ...]:
        """The curve, oldest first."""
        with self._lock:
            return tuple(self._curve)

    def publish(self, view: OperatorView) -> dict[str, Any]:
        """Make ``view`` the latest; returns its JSON (made here, once)."""
        document = view.to_json()
        with self._lock:
            self._view, self._json = view, document
        return document

    def latest(self) -> OperatorView | None:
        with self._lock:
            return self._view

    def latest_json(self) -> dict[str, Any] | None:
        """The last published view's ``to_json()``, or None before the first poll."""
        with self._lock:
            return self._json


class LogTail(logging.Handler):
    """The last ``capacity`` log lines, formatted as the log file formats them (thread-safe).

    ``install`` adds it to a logger (the root logger, for the daemon's run) and borrows the
    formatter of that logger's first handler that has one, so the dashboard shows the very
    lines of ``trading.log``; ``remove`` takes it off at the end of the run.
    """

    def __init__(self, capacity: int = LOG_TAIL_LINES, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._lines: deque[str] = deque(maxlen=max(1, int(capacity)))
        self._lines_lock = threading.Lock()
        self._installed_on: logging.Logger | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own error path, never the caller's
            self.handleError(record)
            return
        with self._lines_lock:
            self._lines.append(line)

    def lines(self) -> list[str]:
        """The kept lines, oldest first."""
        with self._lines_lock:
            return list(self._lines)

    def install(self, target: logging.Logger) -> None:
        formatter = next((h.formatter for h in target.handlers if h.formatter is not None), None)
        if formatter is not None:
            self.setFormatter(formatter)
        target.addHandler(self)
        self._installed_on = target

    def remove(self) -> None:
        if self._installed_on is not None:
            self._installed_on.removeHandler(self)
            self._installed_on = None


# ---------------------------------------------------------------------------------------
# The monitor callbacks: the publisher, the daily summary
# ---------------------------------------------------------------------------------------


Journal = Callable[[str, dict], Any]


class ViewPublisher:
    """Registered on the monitor after the status line: builds and publishes the view each poll.

    Also writes the view to ``<state_dir>/operator_view.json`` (for ``status``; atomically, a
    failed write is logged and retried at the next poll) and, at most every
    ``VALUATION_EVENT_INTERVAL_SECONDS`` while a trade is active, a ``valuation`` journal event
    with the unrealized PnL of each trade and strategy (``events.jsonl``).
    """

    callback_name = "ViewPublisher"   # how the monitor names this callback

    def __init__(self, sources: ViewSources, board: ViewBoard, *, log_tail: LogTail | None = None,
                 journal: Journal | None = None, state_dir: str | Path | None = None) -> None:
        self._sources = sources
        self._board = board
        self._log_tail = log_tail
        self._journal = journal
        self.path = Path(state_dir) / VIEW_FILE_NAME if state_dir is not None else None
        self._last_snapshot: Any = None
        self._last_valuation_event: float | None = None
        self._write_failing = False

    def __call__(self, snapshot: AccountSnapshot) -> None:
        if snapshot is self._last_snapshot:
            return
        self._last_snapshot = snapshot
        self._board.note_equity(snapshot.timestamp, snapshot.equity)
        self.publish()

    def on_snapshot_error(self, error: Exception) -> None:
        """No snapshot this wake: the view still shows the outage (health, last good account)."""
        self.publish()

    def publish(self) -> OperatorView:
        view = build_view(self._sources, equity_curve=self._board.equity_curve(),
                          log_tail=self._log_tail.lines() if self._log_tail is not None else ())
        document = self._board.publish(view)
        self._write(document)
        self._maybe_journal(view)
        return view

    def _write(self, document: Mapping[str, Any]) -> None:
        if self.path is None:
            return
        try:
            write_text_atomically(self.path, json.dumps(document, separators=(",", ":")) + "\n")
        except OSError as error:
            if not self._write_failing:
                logger.error("could not write %s (%s); `status` shows an older valuation until it works",
                             self.path, error)
            self._write_failing = True
            return
        if self._write_failing:
            logger.warning("%s is written again", self.path)
        self._write_failing = False

    def _maybe_journal(self, view: OperatorView) -> None:
        if self._journal is None or view.totals.trades_open == 0:
            return
        last = self._last_valuation_event
        if last is not None and view.generated_at - last < VALUATION_EVENT_INTERVAL_SECONDS:
            return
        self._last_valuation_event = view.generated_at
        self._journal("valuation", valuation_event(view))


def valuation_event(view: OperatorView) -> dict[str, Any]:
    """The ``valuation`` journal event: unrealized PnL of each active trade and each strategy."""
    return {
        "unrealized_pnl_mark": view.totals.unrealized_pnl_mark,
        "unrealized_pnl_executable": view.totals.unrealized_pnl_executable,
        "realized_pnl": view.totals.realized_pnl,
        "trades": [{"trade_id": t.id, "strategy": t.strategy, "state": t.state,
                    "unrealized_pnl_mark": t.unrealized_pnl_mark,
                    "unrealized_pnl_executable": t.unrealized_pnl_executable}
                   for t in view.trades if t.state not in (TradeState.CLOSED.value, TradeState.FAILED.value)],
        "strategies": {s.name: {"unrealized_pnl_mark": s.unrealized_pnl_mark,
                                "unrealized_pnl_executable": s.unrealized_pnl_executable,
                                "realized_pnl": s.realized_pnl} for s in view.strategies},
    }


@dataclass(frozen=True)
class DaySummary:
    """One UTC day of trading, as the ``daily_summary`` log line and journal event say it."""

    date: str
    realized_pnl: float
    fees: float
    trades_opened: int
    trades_closed: int
    trades_failed: int
    unrealized_pnl_mark: float | None
    equity: float | None

    def to_event(self) -> dict[str, Any]:
        return {"date": self.date, "realized_pnl": _usd(self.realized_pnl), "fees": _usd(self.fees),
                "trades_opened": self.trades_opened, "trades_closed": self.trades_closed,
                "trades_failed": self.trades_failed, "unrealized_pnl_mark": _usd(self.unrealized_pnl_mark),
                "equity": _usd(self.equity)}

    def line(self) -> str:
        unrealized_text = "n/a" if self.unrealized_pnl_mark is None else f"{self.unrealized_pnl_mark:+,.2f} USD"
        return (f"daily summary {self.date}: realized {self.realized_pnl:+,.2f} USD (fees {fmt(self.fees)} USD), "
                f"{self.trades_opened} opened, {self.trades_closed} closed, {self.trades_failed} failed; "
                f"unrealized (mark) {unrealized_text}; equity {fmt(self.equity)} USD")


def summarize_day(date: str, trades: Sequence[TradeLifecycle], snapshot: AccountSnapshot | None) -> DaySummary:
    """What happened on UTC day ``date``: trades that opened, and those that finished, that day.

    ``realized_pnl`` and ``fees`` are those of the trades that finished that day (fees are in
    their PnL), computed with ``realized_total``; unrealized PnL and equity are as of now.
    """
    def on_day(moment: float | None) -> bool:
        return moment is not None and utc_date(moment) == date

    finished = [t for t in trades if t.state is TradeState.CLOSED and on_day(t.closed_at)
                or t.state is TradeState.FAILED and on_day(t.failed_at)]
    active = [t for t in trades if t.is_active]
    return DaySummary(
        date=date, realized_pnl=realized_total(finished), fees=fees_total(finished),
        trades_opened=sum(1 for t in trades if on_day(t.opened_at)),
        trades_closed=sum(1 for t in finished if t.state is TradeState.CLOSED),
        trades_failed=sum(1 for t in finished if t.state is TradeState.FAILED),
        unrealized_pnl_mark=sum_known(unrealized(t, "mark") for t in active),
        equity=snapshot.equity if snapshot is not None else None,
    )


class DailySummary:
    """Once per UTC day (the snapshot's time: simulated in sim): one INFO line, one journal event.

    The summary of a day is written at the first poll of the next day. A daemon that was
    down at midnight writes none for the day it missed (nothing is persisted for this).
    """

    callback_name = "DailySummary"   # how the monitor names this callback

    def __init__(self, trades: TradeBook, journal: Journal | None = None) -> None:
        self._trades = trades
        self._journal = journal
        self._day: str | None = None
        self.last: DaySummary | None = None

    def __call__(self, snapshot: AccountSnapshot) -> None:
        today = utc_date(snapshot.timestamp)
        day, self._day = self._day, today
        if day is None or day == today:
            return
        summary = summarize_day(day, self._trades.trades(), snapshot)
        self.last = summary
        logger.info("%s", summary.line())
        if self._journal is not None:
            self._journal("daily_summary", summary.to_event())

    def on_snapshot_error(self, error: Exception) -> None:
        """No snapshot, no equity: the summary waits for the next good poll."""
