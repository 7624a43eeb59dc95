"""Every figure of a backtest's summary and report, recomputed from ``trades.csv`` alone.

Written on purpose without ``backtest_report``'s helpers (other algorithms where there is a
choice: a sweep over open/close events for time in market, ``statistics`` for the moments), so
that a test comparing the two checks the definitions, not one implementation against itself.
Shared by the unit tests (a hand-made CSV) and the integration test (a real run's CSV).
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from datetime import date, datetime, timedelta, timezone
from typing import Any

SHARES = ("delta", "gamma", "theta", "vega", "residual")


def instant(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _end(row: dict[str, str]) -> float | None:
    if row["state"] == "CLOSED":
        return instant(row["closed_at"])
    if row["state"] == "FAILED":
        return instant(row["failed_at"])
    return None


def _day(moment: float) -> date:
    return datetime.fromtimestamp(moment, tz=timezone.utc).date()


def _cell(row: dict[str, str], name: str) -> float:
    """A money or count cell; an empty one (a trade still active, a hand-made row) is 0."""
    return float(row[name]) if row[name] != "" else 0.0


def recompute(rows: list[dict[str, str]], start: float, end: float) -> dict[str, Any]:
    """The summary figures of ``rows`` (strings, as read from the CSV) over the period [start, end)."""
    closed = [float(r["realized_pnl"]) for r in rows if r["state"] == "CLOSED"]
    ended = sorted((_end(r), r["id"], float(r["realized_pnl"])) for r in rows if _end(r) is not None)
    # equity and drawdown
    equity, peak, worst = 0.0, 0.0, 0.0
    for _, _, pnl in ended:
        equity += pnl
        peak = max(peak, equity)
        worst = max(worst, peak - equity)
    # daily PnL: every UTC day from the start's day to the day before the end (or the end's day)
    days: dict[date, float] = {}
    day, last = _day(start), _day(end - 0.001)
    while day <= last:
        days[day] = 0.0
        day += timedelta(days=1)
    for moment, _, pnl in ended:
        days[_day(moment)] = days.get(_day(moment), 0.0) + pnl
    series = [days[key] for key in sorted(days)]
    series = [round(value, 6) for value in series]
    sharpe = sortino = None
    if len(series) >= 2:
        mean = statistics.fmean(series)
        deviation = statistics.stdev(series)
        if deviation > 0:
            sharpe = mean / deviation * math.sqrt(365)
        downside = math.sqrt(sum(x * x for x in series if x < 0) / len(series))
        if downside > 0:
            sortino = mean / downside * math.sqrt(365)
    gains = sum(pnl for _, _, pnl in ended if pnl > 0)
    losses = sum(-pnl for _, _, pnl in ended if pnl < 0)
    # time in market: sweep the open/close events, count time with at least one trade open
    events = []
    for r in rows:
        if not r["opened_at"]:
            continue
        stop = _end(r)
        events.append((max(instant(r["opened_at"]), start), +1))
        events.append((min(stop if stop is not None else end, end), -1))
    events.sort(key=lambda e: (e[0], -e[1]))
    covered, open_now, since = 0.0, 0, start
    for moment, step in events:
        if open_now > 0:
            covered += moment - since
        open_now += step
        since = moment
    costs = [float(r["exec_cost_pct"]) for r in rows if r["exec_cost_pct"] != ""]
    explained = [r for r in rows if r["pnl_residual"] != ""]
    return {
        "trades": len(rows),
        "closed": len(closed),
        "failed": sum(r["state"] == "FAILED" for r in rows),
        "open_at_end": sum(r["state"] not in ("CLOSED", "FAILED") for r in rows),
        "wins": sum(p > 0 for p in closed),
        "losses": sum(p <= 0 for p in closed),
        "realized_pnl": sum(float(r["realized_pnl"]) for r in rows),
        "fees": sum(float(r["fees"]) for r in rows),
        "win_rate": (sum(p > 0 for p in closed) / len(closed)) if closed else None,
        "max_drawdown": worst,
        "sharpe": sharpe,
        "sortino": sortino,
        "profit_factor": gains / losses if losses > 0 else None,
        "time_in_market": covered / (end - start),
        "exec_cost_pct": statistics.fmean(costs) if costs else None,
        "exec_cost_trades": len(costs),
        "attribution": {**{name: sum(float(r[f"pnl_{name}"]) for r in explained) for name in SHARES},
                        "trades": len(explained)},
        "daily_pnl": {key.isoformat(): days[key] for key in sorted(days)},
        "funding": sum(_cell(r, "funding") for r in rows),
        "hedge_cost": sum(_cell(r, "hedge_cost") for r in rows),
        "hedge_pnl": sum(_cell(r, "hedge_pnl") for r in rows),
        "hedge_rebalances": int(sum(_cell(r, "hedge_rebalances") for r in rows)),
    }


def assert_matches(summary_figures: dict[str, Any], expected: dict[str, Any], *, tolerance: float = 1e-5) -> None:
    """Every key of ``expected`` equals the summary's (numbers within ``tolerance``; None is None)."""
    for key, want in expected.items():
        got = summary_figures[key]
        if isinstance(want, dict):
            assert set(got) == set(want), key
            assert_matches(got, want, tolerance=tolerance)
        elif want is None or got is None:
            assert got is None and want is None, f"{key}: {got!r} != {want!r}"
        else:
            assert math.isclose(float(got), float(want), rel_tol=1e-6, abs_tol=tolerance), f"{key}: {got} != {want}"
