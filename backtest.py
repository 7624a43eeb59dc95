"""``python main.py backtest``: the daemon's own code over a past period, as fast as the CPU allows.

Why it is built this way (issue 11, first slice):

* **The same code as live.** A backtest is the daemon: the same start-up (``app.run_daemon``),
  runner, lifecycle, engines, ledger and signed HTTP client, against the embedded simulator. Only
  the clock differs: lock-step and unpaced (``SimulatedClock(speed=0)``), so simulated time moves
  only when the daemon waits and a run's decisions never depend on how fast the machine is.
* **Its own world.** Everything a run writes (state store, simulator state, logs, results) goes
  under ``--out``, and the environment is built here, not read from ``.env``: a backtest can never
  touch a live account or a live state directory, whatever the user's configuration says. An
  ``--out`` that already holds a run is refused: a run resumed on old state would not be the
  period asked for.
* **Deterministic results.** The same command twice gives byte-identical ``trades.csv`` and
  ``summary.json`` (same seed, same start instant, lock-step time; rows in trade-id order,
  numbers rounded once, keys sorted).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

from app import EXIT_OK, RunPlan, TradingContext, run_daemon
from backtest_report import (
    ATTRIBUTION_COLUMNS,
    COST_COLUMNS,
    HEDGE_COLUMNS,
    REPORT_FILE,
    metrics,
    trade_figures,
    write_report,
)
from clock import Clock, SimulatedClock, iso_utc, wall_seconds
from config import Settings, load_settings
from contracts import Side
from errors import ConfigError
from exchange_connection import history_span_seconds, scenario_names
from persistence import StateStore
from stop_flag import StopFlag
from strategy import StrategyConfig

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 7.0
DEFAULT_SEED = 7
DEFAULT_POLL_SECONDS = 10.0
PROGRESS_EVERY_SIMULATED_SECONDS = 6 * 3600.0
STATUS_EVERY_SECONDS = 3600.0   # the daemon's status line in the run's log: once per simulated hour
TRADES_FILE = "trades.csv"
SUMMARY_FILE = "summary.json"
MONEY_DIGITS = 6
TRADE_COLUMNS = ("id", "strategy", "state", "created_at", "opened_at", "closed_at", "failed_at", "exit_reason",
                 "failure_reason", "legs", "entry_premium", "fees", "realized_pnl", "time_in_market_s",
                 *COST_COLUMNS, *ATTRIBUTION_COLUMNS, *HEDGE_COLUMNS)


@dataclass(frozen=True)
class BacktestPeriod:
    """The simulated period: ``start`` and ``end`` in epoch seconds (UTC)."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def parse_instant(text: str, option: str) -> float:
    """``2026-03-03`` (midnight UTC) or ``2026-03-03T10:00`` (UTC) as epoch seconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def choose_period(start_text: str | None, end_text: str | None, days: float | None, now: float) -> BacktestPeriod:
    """``--from``/``--to``/``--days``: any two of them, or ``--days`` alone (ending today 00:00 UTC)."""
    if days is not None and not days > 0:
        raise ConfigError(f"--days {days!r} must be a positive number of days")
    given = sum(value is not None for value in (start_text, end_text, days))
    if given == 3:
        raise ConfigError("--from, --to and --days all given: give two of them (or --days alone)")
    start = parse_instant(start_text, "--from") if start_text is not None else None
    end = parse_instant(end_text, "--to") if end_text is not None else None
    length = (days if days is not None else DEFAULT_DAYS) * 86400.0
    if start is None and end is None:
        today = datetime.fromtimestamp(now, tz=timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        end = today.timestamp()
    if start is None:
        assert end is not None
        start = end - length
    if end is None:
        end = start + length
    if not end > start:
        raise ConfigError(f"--to must come after --from (from {iso_utc(start)}, to {iso_utc(end)})")
    return BacktestPeriod(start, end)


def default_out_dir(period: BacktestPeriod, seed: int) -> Path:
    start = datetime.fromtimestamp(period.start, tz=timezone.utc).strftime("%Y%m%dT%H%M")
    return Path("backtests") / f"{start}-{period.seconds / 86400:g}d-seed{seed}"


def check_scenario(scenario: str | None) -> None:
    if scenario is not None and scenario not in scenario_names():
        raise ConfigError(f"--scenario {scenario!r} is not a scenario: use one of {', '.join(scenario_names())}")


def market_label(scenario: str | None, history: Path | None) -> str:
    """What the simulator's market was: ``synthetic``, ``scenario:<name>`` or ``history:<file name>``."""
    if history is not None:
        return f"history:{history.name}"
    return f"scenario:{scenario}" if scenario is not None else "synthetic"


def check_history_period(history: Path, period: BacktestPeriod) -> None:
    """A replay's period must lie inside the recording: outside it there is no market at all."""
    _require_inside(history, period, *history_span_seconds(history))


def _require_inside(history: Path, period: BacktestPeriod, first: float, last: float) -> None:
    if period.start < first or period.end > last:
        raise ConfigError(f"--market {str(history)!r} covers {iso_utc(first)} to {iso_utc(last)}; the period "
                          f"{iso_utc(period.start)} to {iso_utc(period.end)} is not inside it: choose --from/--to "
                          f"inside the recording, or leave them out to replay all of it")


def history_period(history: Path, start_text: str | None, end_text: str | None, days: float | None) -> BacktestPeriod:
    """``--from``/``--to``/``--days`` for a replay: the whole recording unless narrowed, always inside it."""
    first, last = history_span_seconds(history)
    if start_text is None and end_text is None and days is None:
        period = BacktestPeriod(first, last)
    elif start_text is None and end_text is None:
        assert days is not None
        period = choose_period(iso_utc(first), None, days, first)
    else:
        period = choose_period(start_text, end_text, days, first)
    _require_inside(history, period, first, last)   # the span read once: a recording can be gigabytes
    return period


def backtest_settings(out_dir: Path, seed: int, poll: float, scenario: str | None = None,
                      transport: str = "inprocess", history: Path | None = None) -> Settings:
    """Settings of a backtest, built here: the embedded simulator and ``out_dir``, never ``.env``.

    ``transport``: how the client reaches the simulator; "inprocess" (the default) skips the
    loopback socket, "wire" is the daemon's own path (a test compares the two).
    """
    check_scenario(scenario)
    env = {
        "TRADING_ENVIRONMENT": "sim",
        "STATE_DIR": str(out_dir / "state"),
        "LOG_DIR": str(out_dir / "logs"),
        "SIM_SEED": str(seed),
        "POLL_INTERVAL_SECONDS": f"{poll:g}",
    }
    if scenario is not None and history is not None:
        raise ConfigError("--scenario and --market FILE both choose the market: give one of them")
    return dataclasses.replace(load_settings(env, dotenv_path=None), sim_scenario=scenario, sim_transport=transport,
                               sim_history_file=history, sim_checkpoint_seconds=None, durable_state=False,
                               trades_snapshot_export=False)


def refuse_used_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"--out {str(out_dir)!r} already holds files (a previous run?): choose another --out "
                          f"or delete it; a backtest always starts from an empty account")


class Progress:
    """One line on stderr every few simulated hours: simulated date, trades, PnL, speed-up."""

    def __init__(self, period: BacktestPeriod, stream: TextIO) -> None:
        self._period = period
        self._stream = stream
        self._started_wall = wall_seconds()
        self._next_at = period.start + PROGRESS_EVERY_SIMULATED_SECONDS

    def __call__(self, ctx: TradingContext, now: float) -> None:
        if now < self._next_at:
            return
        self._next_at = now + PROGRESS_EVERY_SIMULATED_SECONDS
        trades = ctx.lifecycle_manager.trades()
        pnl = sum(float(t.realized_pnl or 0.0) for t in trades)
        elapsed = max(wall_seconds() - self._started_wall, 1e-9)
        done = min(1.0, (now - self._period.start) / self._period.seconds)
        speed_up = (now - self._period.start) / elapsed
        self._stream.write(f"backtest {iso_utc(now)[:16]}Z {done:6.1%}  trades {len(trades):4d}  "
                           f"realized PnL {pnl:+10.2f} USD  {speed_up:,.0f}x\n")
        self._stream.flush()


def _money(value: Any) -> float:
    return round(float(value or 0.0), MONEY_DIGITS)


def _when(epoch_seconds: Any) -> str:
    return iso_utc(float(epoch_seconds)) if epoch_seconds is not None else ""


def trade_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One ``trades.csv`` row from a stored trade document (docs/BACKTESTING.md lists the columns)."""
    legs = "; ".join(
        f"{Side.of(leg['side']).name} {float(leg['qty']):g} {leg['symbol']} open {float(leg.get('open_filled') or 0):g}"
        f"@{_money(leg.get('open_vwap')):g} close {float(leg.get('close_filled') or 0):g}@{_money(leg.get('close_vwap')):g}"
        for leg in doc.get("legs", []))
    realized_pnl = _money(doc.get("realized_pnl"))
    return {
        "id": doc["id"], "strategy": doc.get("strategy", ""), "state": doc.get("state", ""),
        "created_at": _when(doc.get("created_at")), "opened_at": _when(doc.get("opened_at")),
        "closed_at": _when(doc.get("closed_at")), "failed_at": _when(doc.get("failed_at")),
        "exit_reason": doc.get("exit_reason") or "", "failure_reason": doc.get("failure_reason") or "", "legs": legs,
        "entry_premium": _money(doc.get("entry_premium")), "fees": _money(doc.get("fees_paid")),
        "realized_pnl": realized_pnl, **trade_figures(doc, realized_pnl),
    }


def trades_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRADE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()


def summarize(rows: Sequence[Mapping[str, Any]], period: BacktestPeriod, seed: int, poll: float,
              strategies: Sequence[str], scenario: str | None = None, history: Path | None = None) -> dict[str, Any]:
    """Per strategy and in total: trades by outcome, wins and losses, realized PnL and fees, and the
    report's metrics (``backtest_report.metrics``: win rate, drawdown, Sharpe, Sortino, profit factor,
    time in market, execution cost, attribution, daily PnL, and the sums of the hedge columns)."""
    def figures(selected: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        closed = [r for r in selected if r["state"] == "CLOSED"]
        return {
            "trades": len(selected),
            "closed": len(closed),
            "failed": sum(1 for r in selected if r["state"] == "FAILED"),
            "open_at_end": sum(1 for r in selected if r["state"] not in ("CLOSED", "FAILED")),
            "wins": sum(1 for r in closed if r["realized_pnl"] > 0),
            "losses": sum(1 for r in closed if r["realized_pnl"] <= 0),
            "realized_pnl": _money(sum(r["realized_pnl"] for r in selected)),
            "fees": _money(sum(r["fees"] for r in selected)),
            **metrics(selected, period.start, period.end),
        }
    return {
        "period": {"from": iso_utc(period.start), "to": iso_utc(period.end), "days": round(period.seconds / 86400, 6)},
        "seed": seed,
        "scenario": scenario or "synthetic",
        "market": market_label(scenario, history),
        "poll_seconds": poll,
        "strategies": {name: figures([r for r in rows if r["strategy"] == name]) for name in strategies},
        "total": figures(rows),
    }


def _figure(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "n/a"


def summary_table(summary: Mapping[str, Any]) -> str:
    lines = [f"{'strategy':<24} {'trades':>6} {'closed':>6} {'failed':>6} {'wins':>5} {'losses':>6} "
             f"{'PnL USD':>11} {'fees USD':>9} {'max DD':>9} {'Sharpe':>7} {'cost %':>7}"]
    rows = [*summary["strategies"].items(), ("total", summary["total"])]
    for name, f in rows:
        lines.append(f"{name:<24} {f['trades']:>6} {f['closed']:>6} {f['failed']:>6} {f['wins']:>5} "
                     f"{f['losses']:>6} {f['realized_pnl']:>+11.2f} {f['fees']:>9.2f} {f['max_drawdown']:>9.2f} "
                     f"{_figure(f['sharpe'], '.2f'):>7} {_figure(f['exec_cost_pct'], '.1f'):>7}")
    return "\n".join(lines)


def write_results(out_dir: Path, period: BacktestPeriod, seed: int, poll: float,
                  strategies: Sequence[str], scenario: str | None = None,
                  history: Path | None = None) -> dict[str, Any]:
    """``trades.csv``, ``summary.json`` and ``report.html`` from the run's state store; returns the summary."""
    store, _ = StateStore.open(out_dir / "state" / "trader.db", SimulatedClock(start=period.end, speed=0))
    try:
        rows = [trade_row(doc) for doc in store.load_trades()]
    finally:
        store.close()
    (out_dir / TRADES_FILE).write_text(trades_csv(rows), encoding="utf-8")
    summary = summarize(rows, period, seed, poll, strategies, scenario, history)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_report(out_dir, summary, rows)
    return summary


def run_backtest(configs: Sequence[StrategyConfig], period: BacktestPeriod, *, seed: int, poll: float,
                 out_dir: Path, stop: StopFlag, scenario: str | None = None, progress_stream: TextIO = sys.stderr,
                 setup_logging: Callable[[Path, Clock], Callable[[], None]] | None = None,
                 observer: Callable[[TradingContext, float], None] | None = None,
                 transport: str = "inprocess", history: Path | None = None, pace: float = 0.0) -> int:
    """One backtest; returns the exit code. Results are written even when a signal cut it short.

    ``transport``: "inprocess" (the default) or "wire", see ``backtest_settings``. ``history``:
    a recorded market file to replay (docs/HISTORY.md) instead of the synthetic market; the
    period must lie inside it (``history_period``). ``pace``: simulated seconds per real second
    of waiting (0: unpaced); lock-step either way, so the trades do not depend on it (a benchmark
    checks that a paced run gives the backtest's trades).

    ``observer(ctx, now)`` is called after every wake, after the progress line (a benchmark
    samples memory and CPU there).
    """
    refuse_used_out_dir(out_dir)
    settings = backtest_settings(out_dir, seed, poll, scenario, transport, history)
    if history is not None:
        check_history_period(history, period)
    clock = SimulatedClock(start=period.start, speed=0, pace=pace)
    # The log is stamped with the run's simulated clock (the instants the trades happen at).
    undo_logging = setup_logging(settings.log_dir, clock) if setup_logging is not None else None
    try:
        progress = Progress(period, progress_stream)

        def on_wake(ctx: TradingContext, now: float) -> None:
            progress(ctx, now)
            if observer is not None:
                observer(ctx, now)

        # No operator view: nobody reads a backtest's dashboard or `status`, and building it every
        # poll cost about 15 % of a backtest's CPU.
        plan = RunPlan(run_for=period.seconds, on_wake=on_wake, operator_view=False,
                       status_every=STATUS_EVERY_SECONDS)
        code = run_daemon(settings, clock, stop, configs, plan)
    finally:
        if undo_logging is not None:
            undo_logging()
    if code != EXIT_OK:
        return code
    summary = write_results(out_dir, period, seed, poll, [config.name for config in configs], scenario, history)
    print(summary_table(summary))
    print(f"results: {out_dir / TRADES_FILE}, {out_dir / SUMMARY_FILE} (log: {settings.log_dir / 'trading.log'})")
    print(f"report: {out_dir / REPORT_FILE}")
    if stop.is_set and clock.now() < period.end:
        print(f"interrupted at {iso_utc(clock.now())}: the results cover the period up to there")
    return EXIT_OK

