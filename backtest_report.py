"""What a backtest's results say, the way traders read them: costs, attribution, metrics, report.html.

Why a module of its own: ``backtest.py`` runs the daemon and writes files; the figures here are
pure functions of the stored trades (and of ``trades.csv`` rows), so a test can recompute each
one independently from the CSV and a reader can check the definitions in one place
(docs/BACKTESTING.md lists them). The only I/O is ``write_report``.

Definitions, in short (the doc has them in full):

* **Execution cost vs mid**, in % of the half-spread, against the market the decision was made
  on (``leg_market.LegMarket``: the chain row a leg was chosen on for the open fills, the last
  quote when the exit was decided for the close fills): a buy at ``vwap`` costs
  ``(vwap - mid) / half_spread * 100``, a sell ``(mid - vwap) / half_spread * 100``; 0 is a fill
  at mid, 100 a fill at the touch, negative a fill better than mid. Quantity-weighted over the
  legs; None (an empty cell) when a filled leg has no snapshot or no two-sided spread there.
* **Greek attribution** of a trade's realized PnL: per leg, a second-order Taylor step from the
  entry snapshot's greeks to the leg's end (the exit snapshot, or the delivery price at expiry
  for a settled leg): ``delta*dS``, ``0.5*gamma*dS^2``, ``theta*dt`` (theta per day, dt in days),
  ``vega*dIV`` (vega per vol point, dIV in vol points), times ``sign*qty``; the residual is the
  realized PnL minus the four, so fees, execution cost, the spread and higher-order terms land
  there.
* **A perpetual leg** (a delta hedge's, or a ``perp`` leg) has delta 1 and no other greek, so
  its delta share is exact: the price PnL of its fills (open, close and closed-outside cash);
  its fees and funding stay in the residual.
* **Hedge figures** per trade: ``funding`` (every leg's funding, signed cash, + received),
  ``hedge_rebalances`` and ``hedge_cost`` (fees + slippage vs mark, from the trade's
  ``HedgeState``), ``hedge_pnl`` (the hedge legs' price PnL minus their fees, funding
  excluded; empty while the trade is active); 0 for a trade without a hedge.
* **Daily PnL** is realized PnL by the UTC day a trade ended (closed or failed), every day of
  the period present (0 when nothing ended); Sharpe and Sortino are on that series, annualised
  with sqrt(365), None when undefined.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from contracts import Side
from hedging import HedgeState
from leg_market import LegMarket

REPORT_FILE = "report.html"
DIGITS = 6
DAYS_PER_YEAR = 365.0
SECONDS_PER_DAY = 86400.0
VOL_POINTS_PER_UNIT = 100.0      # vega is per vol point (IV +0.01); mark_iv is a fraction
FINISHED_STATES = ("CLOSED", "FAILED")
COST_COLUMNS = ("exec_cost_open_pct", "exec_cost_close_pct", "exec_cost_pct")
GREEKS = ("delta", "gamma", "theta", "vega")
ATTRIBUTION_COLUMNS = ("pnl_delta", "pnl_gamma", "pnl_theta", "pnl_vega", "pnl_residual")
HEDGE_COLUMNS = ("funding", "hedge_rebalances", "hedge_cost", "hedge_pnl")
# The keys of a hedged trade's record, as ``trade_lifecycle`` writes them (HEDGE_STATE_KEY,
# HEDGE_LEGS_KEY; that layer is above this one, so a test keeps the two spellings equal).
HEDGE_STATE_KEY = "hedge"
HEDGE_LEGS_KEY = "hedge_legs"
PERPETUAL_KIND = "perpetual"


def _rounded(value: float | None) -> float | None:
    return round(value, DIGITS) if value is not None else None


def number(value: Any) -> float | None:
    """A cell or a field as a float: None for an empty cell, None or a non-finite number."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def epoch(value: Any) -> float | None:
    """An ISO instant as written in ``trades.csv`` (``2026-03-03T10:00:00.000Z``) as epoch seconds."""
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


# --------------------------------------------------------------------------------------------
# Per trade: execution cost and attribution, from the stored legs
# --------------------------------------------------------------------------------------------


def fill_cost_pct(side: Side, vwap: float, market: LegMarket | None) -> float | None:
    """One fill's cost vs mid in % of the half-spread; None without a two-sided market."""
    if market is None:
        return None
    mid, half = market.mid, market.half_spread
    if mid is None or half is None or not half > 0:
        return None
    paid = vwap - mid if side is Side.BUY else mid - vwap
    return paid / half * 100.0


@dataclass(frozen=True)
class ExecutionCost:
    """A trade's execution cost vs mid (% of the half-spread): open fills, close fills, all fills."""

    open_pct: float | None
    close_pct: float | None
    overall_pct: float | None


def _weighted(parts: Sequence[tuple[float | None, float]]) -> float | None:
    """Quantity-weighted mean of (cost, qty); None when nothing filled or a filled part has no cost."""
    filled = [(cost, qty) for cost, qty in parts if qty > 0]
    if not filled or any(cost is None for cost, _ in filled):
        return None
    total_qty = math.fsum(qty for _, qty in filled)
    return math.fsum(float(cost) * qty for cost, qty in filled if cost is not None) / total_qty


def execution_cost(legs: Iterable[Mapping[str, Any]]) -> ExecutionCost:
    """From leg records: open fills against ``entry_market``, close fills against ``exit_market``.

    Close fills are every reducing fill of ours (close, unwind, kill); settlement and closes
    made outside the daemon are not executions and do not count.
    """
    opens: list[tuple[float | None, float]] = []
    closes: list[tuple[float | None, float]] = []
    for leg in legs:
        side = Side.of(int(leg["side"]))
        open_qty = float(leg.get("open_filled") or 0.0)
        close_qty = float(leg.get("close_filled") or 0.0)
        entry = LegMarket.from_record(leg.get("entry_market"))
        exit_ = LegMarket.from_record(leg.get("exit_market"))
        opens.append((fill_cost_pct(side, float(leg.get("open_vwap") or 0.0), entry), open_qty))
        closes.append((fill_cost_pct(side.opposite, float(leg.get("close_vwap") or 0.0), exit_), close_qty))
    return ExecutionCost(_weighted(opens), _weighted(closes), _weighted(opens + closes))


@dataclass(frozen=True)
class Attribution:
    """A trade's realized PnL split into the greeks' shares and the rest (USD)."""

    delta: float
    gamma: float
    theta: float
    vega: float
    residual: float

    def columns(self) -> dict[str, float]:
        return dict(zip(ATTRIBUTION_COLUMNS, (self.delta, self.gamma, self.theta, self.vega, self.residual)))


def leg_price_cash(leg: Mapping[str, Any]) -> float:
    """Cash of one leg record's fills at their prices: open, close and the part closed outside the
    daemon (a buy pays, a sell receives); fees, funding and settlement excluded."""
    sign = Side.of(int(leg["side"])).sign
    return (-sign * float(leg.get("open_vwap") or 0.0) * float(leg.get("open_filled") or 0.0)
            + sign * float(leg.get("close_vwap") or 0.0) * float(leg.get("close_filled") or 0.0)
            + sign * float(leg.get("external_price") or 0.0) * float(leg.get("external_qty") or 0.0))


def leg_greek_pnl(leg: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    """(delta, gamma, theta, vega) USD of one leg record; None when its snapshots cannot say.

    The end point is the delivery at expiry for a settled leg (index = delivery price, time =
    expiry, IV unchanged: an expired option has no vega left to earn), else the exit snapshot.
    A leg that never filled contributes nothing. A perpetual leg needs no snapshot: its delta
    is 1 and it has no other greek, so its delta share is exactly its price PnL
    (``leg_price_cash``; its fees and funding stay in the residual).
    """
    qty = float(leg.get("open_filled") or 0.0)
    if not qty > 0:
        return (0.0, 0.0, 0.0, 0.0)
    if leg.get("kind") == PERPETUAL_KIND:
        return (leg_price_cash(leg), 0.0, 0.0, 0.0)
    entry = LegMarket.from_record(leg.get("entry_market"))
    if entry is None or entry.delta is None or entry.gamma is None or entry.theta is None or entry.vega is None:
        return None
    settlement = leg.get("settlement") or {}
    if float(settlement.get("qty") or 0.0) > 0:
        end_price = float(settlement["delivery_price"])
        end_time = float(leg["expiry_ms"]) / 1000.0
        iv_change = 0.0
    else:
        exit_ = LegMarket.from_record(leg.get("exit_market"))
        if exit_ is None or exit_.mark_iv is None or entry.mark_iv is None:
            return None
        end_price, end_time = exit_.underlying_price, exit_.as_of
        iv_change = exit_.mark_iv - entry.mark_iv
    move = end_price - entry.underlying_price
    days = (end_time - entry.as_of) / SECONDS_PER_DAY
    held = Side.of(int(leg["side"])).sign * qty
    return (held * entry.delta * move, held * 0.5 * entry.gamma * move * move, held * entry.theta * days,
            held * entry.vega * iv_change * VOL_POINTS_PER_UNIT)


def attribution(legs: Iterable[Mapping[str, Any]], realized_pnl: float | None) -> Attribution | None:
    """The trade's attribution (each share rounded once; residual = realized PnL - the four), or None.

    None while the trade has no realized PnL, or when any filled leg lacks what the method needs.
    """
    if realized_pnl is None:
        return None
    totals = [0.0, 0.0, 0.0, 0.0]
    for leg in legs:
        shares = leg_greek_pnl(leg)
        if shares is None:
            return None
        totals = [total + share for total, share in zip(totals, shares)]
    delta, gamma, theta, vega = (round(total, DIGITS) for total in totals)
    residual = round(realized_pnl - math.fsum((delta, gamma, theta, vega)), DIGITS)
    return Attribution(delta, gamma, theta, vega, residual)


@dataclass(frozen=True)
class HedgeFigures:
    """What a trade's delta hedge and its perpetual legs did (USD; all 0 for a trade without them)."""

    funding: float        # every leg's funding, signed cash: + received, - paid
    rebalances: int       # HedgeState.rebalances
    cost: float           # HedgeState.cost_usd: fees + slippage against the mark at decision time
    pnl: float | None     # the hedge legs' price PnL minus their fees (funding excluded); None while active

    def columns(self) -> dict[str, Any]:
        return dict(zip(HEDGE_COLUMNS, (self.funding, self.rebalances, self.cost, self.pnl)))


def _leg_fees(leg: Mapping[str, Any]) -> float:
    if leg.get("fees") is not None:
        return float(leg["fees"])
    return float(leg.get("open_fees") or 0.0) + float(leg.get("close_fees") or 0.0)


def hedge_figures(doc: Mapping[str, Any]) -> HedgeFigures:
    """The hedge figures of one stored trade, from its legs and ``metadata`` (``hedge``, ``hedge_legs``).

    Funding, rebalances and cost are what happened so far; the hedge PnL is None while the trade
    is active (a hedge still held has paid for a position it has not sold yet), like the realized
    PnL, which counts only once a trade has ended. A malformed hedge record is refused
    (``ValueError`` from ``HedgeState.from_record``), never read as a hedge that did nothing.
    """
    legs = list(doc.get("legs", []))
    metadata = doc.get("metadata") or {}
    state = HedgeState.from_record(metadata.get(HEDGE_STATE_KEY))
    indexes = {int(index) for index in (metadata.get(HEDGE_LEGS_KEY) or {}).values()}
    hedge_legs = [leg for leg in legs if leg.get("index") is not None and int(leg["index"]) in indexes]
    return HedgeFigures(
        funding=round(math.fsum(float(leg.get("funding") or 0.0) for leg in legs), DIGITS),
        rebalances=state.rebalances,
        cost=round(state.cost_usd, DIGITS),
        pnl=(round(math.fsum(leg_price_cash(leg) - _leg_fees(leg) for leg in hedge_legs), DIGITS)
             if doc.get("state") in FINISHED_STATES else None),
    )


def trade_figures(doc: Mapping[str, Any], realized_pnl: float | None) -> dict[str, Any]:
    """The report's columns of one stored trade: time in market, execution cost, attribution, hedge.

    ``realized_pnl`` is the trade's figure as written in its row (rounded), so that the
    attribution columns add up to the row's PnL exactly.
    """
    legs = list(doc.get("legs", []))
    opened, closed = doc.get("opened_at"), doc.get("closed_at")
    held = (float(closed) - float(opened)) if opened is not None and closed is not None else None
    cost = execution_cost(legs)
    shares = attribution(legs, realized_pnl if doc.get("state") in FINISHED_STATES else None)
    row: dict[str, Any] = {
        "time_in_market_s": round(held, 3) if held is not None else None,
        "exec_cost_open_pct": _rounded(cost.open_pct), "exec_cost_close_pct": _rounded(cost.close_pct),
        "exec_cost_pct": _rounded(cost.overall_pct),
    }
    row.update(shares.columns() if shares is not None else dict.fromkeys(ATTRIBUTION_COLUMNS))
    row.update(hedge_figures(doc).columns())
    return row


# --------------------------------------------------------------------------------------------
# Over rows: equity, drawdown, daily PnL and the per-strategy metrics
# --------------------------------------------------------------------------------------------


def ended_at(row: Mapping[str, Any]) -> float | None:
    """When a finished trade ended (closed or failed), None for a trade still active."""
    if row["state"] not in FINISHED_STATES:
        return None
    return epoch(row.get("closed_at")) if row["state"] == "CLOSED" else epoch(row.get("failed_at"))


def finished(rows: Iterable[Mapping[str, Any]]) -> list[tuple[float, str, float]]:
    """(ended at, trade id, realized PnL) of every finished trade, in time order (id breaks ties)."""
    done = []
    for row in rows:
        end = ended_at(row)
        if end is not None:
            done.append((end, str(row["id"]), number(row.get("realized_pnl")) or 0.0))
    return sorted(done)


def equity_curve(rows: Iterable[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """Cumulative realized PnL after each finished trade: (instant, equity)."""
    points, equity = [], 0.0
    for end, _, pnl in finished(rows):
        equity += pnl
        points.append((end, equity))
    return points


def drawdowns(curve: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(instant, drawdown) of an equity curve: how far below its running peak (0 at the start) it is."""
    peak, result = 0.0, []
    for moment, equity in curve:
        peak = max(peak, equity)
        result.append((moment, peak - equity))
    return result


def max_drawdown(curve: Sequence[tuple[float, float]]) -> float:
    """Largest peak-to-trough fall of the equity curve, USD (>= 0)."""
    return max((dd for _, dd in drawdowns(curve)), default=0.0)


def _utc_day(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, tz=timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def period_days(start: float, end: float, extra: Iterable[float] = ()) -> list[str]:
    """Every UTC day that overlaps ``[start, end)`` (and any day in ``extra``), as ``YYYY-MM-DD``."""
    first = _utc_day(start)
    last = _utc_day(max(start, end - 1e-6))
    for moment in extra:
        first, last = min(first, _utc_day(moment)), max(last, _utc_day(moment))
    days, day = [], first
    while day <= last:
        days.append(day.strftime("%Y-%m-%d"))
        day += timedelta(days=1)
    return days


def daily_pnl(rows: Iterable[Mapping[str, Any]], start: float, end: float) -> list[tuple[str, float]]:
    """Realized PnL by the UTC day trades ended; every day of the period, 0 when nothing ended."""
    done = finished(rows)
    totals = dict.fromkeys(period_days(start, end, (moment for moment, _, _ in done)), 0.0)
    for moment, _, pnl in done:
        totals[_utc_day(moment).strftime("%Y-%m-%d")] += pnl
    return [(day, round(value, DIGITS)) for day, value in totals.items()]


def sharpe(daily: Sequence[float]) -> float | None:
    """mean / sample standard deviation of daily PnL x sqrt(365); None with < 2 days or no spread."""
    if len(daily) < 2:
        return None
    mean = math.fsum(daily) / len(daily)
    deviation = math.sqrt(math.fsum((x - mean) ** 2 for x in daily) / (len(daily) - 1))
    if not deviation > 0:
        return None
    return mean / deviation * math.sqrt(DAYS_PER_YEAR)


def sortino(daily: Sequence[float]) -> float | None:
    """mean / downside deviation (root mean square of the losing days' PnL over all days) x sqrt(365).

    None with < 2 days or no losing day (no downside to divide by).
    """
    if len(daily) < 2:
        return None
    mean = math.fsum(daily) / len(daily)
    downside = math.sqrt(math.fsum(min(x, 0.0) ** 2 for x in daily) / len(daily))
    if not downside > 0:
        return None
    return mean / downside * math.sqrt(DAYS_PER_YEAR)


def profit_factor(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """Gross wins / gross losses over finished trades; None when there is no loss."""
    pnls = [pnl for _, _, pnl in finished(rows)]
    losses = -math.fsum(pnl for pnl in pnls if pnl < 0)
    if not losses > 0:
        return None
    return math.fsum(pnl for pnl in pnls if pnl > 0) / losses


def time_in_market(rows: Iterable[Mapping[str, Any]], start: float, end: float) -> float:
    """Fraction of the period with at least one trade open: its [opened_at, ended or period end] merged."""
    intervals = []
    for row in rows:
        opened = epoch(row.get("opened_at"))
        if opened is None:
            continue
        stop = ended_at(row)
        intervals.append((max(opened, start), min(stop if stop is not None else end, end)))
    covered, reach = 0.0, start
    for begin, finish in sorted(intervals):
        begin = max(begin, reach)
        if finish > begin:
            covered += finish - begin
            reach = finish
    return covered / (end - start) if end > start else 0.0


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def metrics(rows: Sequence[Mapping[str, Any]], start: float, end: float) -> dict[str, Any]:
    """The report's figures of one set of trades (a strategy's, or all of them)."""
    closed = [number(row.get("realized_pnl")) or 0.0 for row in rows if row["state"] == "CLOSED"]
    daily = daily_pnl(rows, start, end)
    series = [value for _, value in daily]
    costs = [value for value in (number(row.get("exec_cost_pct")) for row in rows) if value is not None]
    explained = [row for row in rows if number(row.get("pnl_residual")) is not None]
    shares = {name.removeprefix("pnl_"): round(math.fsum(number(row[name]) or 0.0 for row in explained), DIGITS)
              for name in ATTRIBUTION_COLUMNS}
    return {
        "win_rate": _rounded(sum(pnl > 0 for pnl in closed) / len(closed)) if closed else None,
        "max_drawdown": round(max_drawdown(equity_curve(rows)), DIGITS),
        "sharpe": _rounded(sharpe(series)),
        "sortino": _rounded(sortino(series)),
        "profit_factor": _rounded(profit_factor(rows)),
        "time_in_market": round(time_in_market(rows, start, end), DIGITS),
        "exec_cost_pct": _rounded(_mean(costs)),
        "exec_cost_trades": len(costs),
        "attribution": {**shares, "trades": len(explained)},
        "daily_pnl": {day: value for day, value in daily},
        **hedge_sums(rows),
    }


def hedge_sums(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sums of the hedge columns over ``rows`` (an empty cell counts 0): funding, hedge cost and PnL, rebalances."""
    selected = list(rows)

    def total(column: str) -> float:
        return round(math.fsum(number(row.get(column)) or 0.0 for row in selected), DIGITS)

    return {"funding": total("funding"), "hedge_cost": total("hedge_cost"), "hedge_pnl": total("hedge_pnl"),
            "hedge_rebalances": int(round(total("hedge_rebalances")))}


# --------------------------------------------------------------------------------------------
# report.html: self-contained, inline SVG, every text escaped, nothing that changes run to run
# --------------------------------------------------------------------------------------------

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
SHARE_COLOURS = {"delta": "#1f77b4", "gamma": "#9467bd", "theta": "#2ca02c", "vega": "#ff7f0e",
                 "residual": "#7f7f7f"}
WIDTH, HEIGHT, MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 900, 260, 70, 20, 20, 30

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: bold; margin-bottom: 0.3em; }
svg { background: #fafafa; border: 1px solid #ddd; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: middle; }
p.note { max-width: 60em; line-height: 1.4; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 2) -> str:
    """A figure for people: fixed decimals, ``n/a`` for an undefined one."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.{digits}f}"
    return _esc(value)


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{float(value) * 100:.1f} %"


class _Frame:
    """Data coordinates -> SVG pixels of one chart."""

    def __init__(self, t0: float, t1: float, low: float, high: float) -> None:
        if high - low < 1e-9:
            low, high = low - 1.0, high + 1.0
        self.t0, self.t1, self.low, self.high = t0, (t1 if t1 > t0 else t0 + 1.0), low, high

    def x(self, moment: float) -> float:
        return MARGIN_LEFT + (moment - self.t0) / (self.t1 - self.t0) * (WIDTH - MARGIN_LEFT - MARGIN_RIGHT)

    def y(self, value: float) -> float:
        return MARGIN_TOP + (self.high - value) / (self.high - self.low) * (HEIGHT - MARGIN_TOP - MARGIN_BOTTOM)


def _axes(frame: _Frame, label: str, *, times: bool = True) -> list[str]:
    """Zero line, y ticks (low, zero, high), the period's ends on x (``times``), the axis label."""
    parts = [f'<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{HEIGHT - MARGIN_BOTTOM}" '
             f'stroke="#999"/>']
    for value in sorted({frame.low, 0.0, frame.high} if frame.low <= 0.0 <= frame.high else {frame.low, frame.high}):
        y = frame.y(value)
        parts.append(f'<line x1="{MARGIN_LEFT}" y1="{y:.2f}" x2="{WIDTH - MARGIN_RIGHT}" y2="{y:.2f}" '
                     f'stroke="{"#888" if value == 0.0 else "#e0e0e0"}"/>')
        parts.append(f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.2f}" font-size="11" text-anchor="end">'
                     f'{value:,.2f}</text>')
    for moment, anchor in ((frame.t0, "start"), (frame.t1, "end")) if times else ():
        stamp = datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
        parts.append(f'<text x="{frame.x(moment):.2f}" y="{HEIGHT - 8}" font-size="11" text-anchor="{anchor}">'
                     f'{stamp}Z</text>')
    parts.append(f'<text x="14" y="{MARGIN_TOP + 10}" font-size="11">{_esc(label)}</text>')
    return parts


def _step_path(frame: _Frame, points: Sequence[tuple[float, float]], end: float) -> str:
    """A step line from (t0, 0) through each point, held to ``end``: realized PnL changes at closes only."""
    coords = [(frame.x(frame.t0), frame.y(0.0))]
    level = 0.0
    for moment, value in points:
        coords.append((frame.x(moment), frame.y(level)))
        coords.append((frame.x(moment), frame.y(value)))
        level = value
    coords.append((frame.x(end), frame.y(level)))
    return " ".join(f"{x:.2f},{y:.2f}" for x, y in coords)


def _svg(parts: Sequence[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{_esc(title)}">\n'
            + "\n".join(parts) + "\n</svg>")


def equity_chart(curves: Mapping[str, Sequence[tuple[float, float]]], start: float, end: float) -> str:
    """Step lines of cumulative realized PnL, one per name (``total`` first, thicker)."""
    values = [0.0] + [value for curve in curves.values() for _, value in curve]
    frame = _Frame(start, end, min(values), max(values))
    parts = _axes(frame, "realized PnL, USD")
    for position, (name, curve) in enumerate(curves.items()):
        colour = "#000" if name == "total" else PALETTE[position % len(PALETTE)]
        width = 2.0 if name == "total" else 1.2
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" '
                     f'points="{_step_path(frame, curve, end)}"><title>{_esc(name)}</title></polyline>')
    return _svg(parts, "equity curve")


def drawdown_chart(curve: Sequence[tuple[float, float]], start: float, end: float) -> str:
    """The total's drawdown below its running peak, drawn downwards from 0."""
    below = [(moment, -dd) for moment, dd in drawdowns(curve)]
    frame = _Frame(start, end, min([0.0] + [v for _, v in below]), 0.0)
    parts = _axes(frame, "drawdown, USD")
    points = _step_path(frame, below, end)
    parts.append(f'<polygon fill="#d62728" fill-opacity="0.25" stroke="#d62728" stroke-width="1" '
                 f'points="{points} {frame.x(end):.2f},{frame.y(0.0):.2f}"/>')
    return _svg(parts, "drawdown")


def attribution_chart(rows: Sequence[Mapping[str, Any]]) -> str:
    """One stacked bar per explained trade: positive shares stacked up from 0, negative ones down."""
    explained = [row for row in rows if number(row.get("pnl_residual")) is not None]
    if not explained:
        return "<p>No trade has the snapshots an attribution needs.</p>"
    ups, downs = [], []
    for row in explained:
        shares = [number(row[f"pnl_{name}"]) or 0.0 for name in SHARE_COLOURS]
        ups.append(math.fsum(s for s in shares if s > 0))
        downs.append(math.fsum(s for s in shares if s < 0))
    frame = _Frame(0.0, float(len(explained)), min([0.0, *downs]), max([0.0, *ups]))
    parts = _axes(frame, "USD per trade", times=False)
    slot = (WIDTH - MARGIN_LEFT - MARGIN_RIGHT) / len(explained)
    bar = max(slot * 0.8, 0.5)
    for position, row in enumerate(explained):
        x = frame.x(float(position)) + (slot - bar) / 2
        up = down = 0.0
        for name, colour in SHARE_COLOURS.items():
            share = number(row[f"pnl_{name}"]) or 0.0
            if share == 0.0:
                continue
            base = up if share > 0 else down
            top, bottom = (base + share, base) if share > 0 else (base, base + share)
            if share > 0:
                up += share
            else:
                down += share
            parts.append(f'<rect x="{x:.2f}" y="{frame.y(top):.2f}" width="{bar:.2f}" '
                         f'height="{max(frame.y(bottom) - frame.y(top), 0.0):.2f}" fill="{colour}">'
                         f'<title>{_esc(row["id"])} {name} {share:+.2f} USD</title></rect>')
    return _svg(parts, "attribution per trade")


def _legend(entries: Iterable[tuple[str, str]]) -> str:
    spans = "".join(f'<span><span class="swatch" style="background:{colour}"></span>{_esc(name)}</span>'
                    for name, colour in entries)
    return f'<p class="legend">{spans}</p>'


def _table(caption: str, header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    """Cells of ``body`` are already escaped/formatted; the header and caption are escaped here."""
    lines = [f"<table><caption>{_esc(caption)}</caption>",
             "<tr>" + "".join(f"<th>{_esc(cell)}</th>" for cell in header) + "</tr>"]
    lines += ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in body]
    lines.append("</table>")
    return "\n".join(lines)


def _parameters(summary: Mapping[str, Any]) -> str:
    period = summary["period"]
    pairs = [("period", f"{period['from']} to {period['to']} ({period['days']:g} days)"),
             ("seed", summary.get("seed")), ("poll", f"{summary.get('poll_seconds')} s"),
             ("market", summary.get("market", "synthetic")), ("scenario", summary.get("scenario")),
             ("strategies", ", ".join(summary.get("strategies", {})))]
    return _table("Run", ("parameter", "value"), [(_esc(name), _esc(value)) for name, value in pairs])


def _strategy_table(summary: Mapping[str, Any]) -> str:
    header = ("strategy", "trades", "closed", "failed", "open at end", "PnL USD", "fees USD", "win rate",
              "max drawdown USD", "Sharpe", "Sortino", "profit factor", "time in market", "exec cost % half-spread")
    body = []
    for name, f in [*summary["strategies"].items(), ("total", summary["total"])]:
        body.append((_esc(name), str(f["trades"]), str(f["closed"]), str(f["failed"]), str(f["open_at_end"]),
                     _fmt(f["realized_pnl"]), _fmt(f["fees"]), _pct(f["win_rate"]), _fmt(f["max_drawdown"]),
                     _fmt(f["sharpe"]), _fmt(f["sortino"]), _fmt(f["profit_factor"]), _pct(f["time_in_market"]),
                     _fmt(f["exec_cost_pct"], 1)))
    return _table("Per strategy", header, body)


def _attribution_totals(summary: Mapping[str, Any]) -> str:
    header = ("strategy", "trades explained", "delta", "gamma", "theta", "vega", "residual")
    body = []
    for name, f in [*summary["strategies"].items(), ("total", summary["total"])]:
        a = f["attribution"]
        body.append((_esc(name), str(a["trades"]), *(_fmt(a[key]) for key in SHARE_COLOURS)))
    return _table("PnL attribution, USD (sum over the trades explained)", header, body)


def hedging_shown(summary: Mapping[str, Any]) -> bool:
    """The hedging section is shown when some trade rebalanced a hedge or booked funding."""
    total = summary["total"]
    return bool(total.get("hedge_rebalances")) or bool(total.get("funding"))


def _hedging_table(summary: Mapping[str, Any]) -> str:
    header = ("strategy", "hedge rebalances", "hedge cost USD", "hedge PnL USD", "funding USD (+ received)",
              "PnL USD")
    body = []
    for name, f in [*summary["strategies"].items(), ("total", summary["total"])]:
        body.append((_esc(name), str(f["hedge_rebalances"]), _fmt(f["hedge_cost"]), _fmt(f["hedge_pnl"]),
                     _fmt(f["funding"]), _fmt(f["realized_pnl"])))
    return _table("Hedging (sums over the trades)", header, body)


HOW_TO_READ_HEDGING = """
<p class="note"><b>Hedging.</b> <b>Hedge rebalances</b> counts the delta hedge's rebalances (a split
order is one). <b>Hedge cost</b> is what those fills paid against the perpetual's mark when each was
decided, plus their fees: a cost of trading, already inside the PnL. <b>Hedge PnL</b> is the hedge legs'
price PnL (their fills' cash) minus their fees; <b>funding</b> is every leg's funding, signed as cash
(+ received, &#8722; paid). Both are part of the trade's realized PnL, not added to it; a trade still open
at the end counts what its hedge did so far. A perpetual leg's price PnL is its delta share in the
attribution (delta 1, no other greek); its fees and funding are in the residual.</p>
"""


def _trade_table(rows: Sequence[Mapping[str, Any]]) -> str:
    header = ("trade", "strategy", "state", "opened", "ended", "exit reason", "PnL", "fees", "exec cost %",
              "delta", "gamma", "theta", "vega", "residual")
    body = []
    for row in rows:
        end = row.get("closed_at") or row.get("failed_at") or ""
        body.append((_esc(row["id"]), _esc(row["strategy"]), _esc(row["state"]), _esc(row.get("opened_at") or ""),
                     _esc(end), _esc(row.get("exit_reason") or row.get("failure_reason") or ""),
                     _fmt(number(row.get("realized_pnl"))), _fmt(number(row.get("fees"))),
                     _fmt(number(row.get("exec_cost_pct")), 1),
                     *(_fmt(number(row.get(column))) for column in ATTRIBUTION_COLUMNS)))
    return _table("Trades", header, body)


HOW_TO_READ = """
<h2>How to read this</h2>
<p class="note">Every figure comes from the daemon's own fills in this run (<code>trades.csv</code> has one row
per trade; <code>summary.json</code> the figures below). PnL is realized: a trade counts when it ends (closed,
or failed after an unwind), on the UTC day it ended; trades still open at the end count nothing.
<b>Execution cost</b> is how far the fills were from mid, in % of the half-spread, against the quote the
decision was made on (the chain row the leg was chosen on for opening fills, the quote the exit was judged on
for closing fills): 0 % is a fill at mid, 100 % a fill at the touch (bid or ask), above 100 % through it,
negative better than mid; quantity-weighted over the legs, n/a when a leg had no two-sided quote.
<b>Sharpe</b> and <b>Sortino</b> use daily realized PnL (every day of the period, 0 when nothing ended),
annualised with &#8730;365; n/a with fewer than two days or no variation (Sharpe) or no losing day (Sortino).
<b>Profit factor</b> is gross wins over gross losses (n/a without a loss). <b>Time in market</b> is the
fraction of the period with at least one trade open. <b>Max drawdown</b> is the largest fall of cumulative
realized PnL from its running peak.</p>
<p class="note"><b>Attribution</b> splits each trade's realized PnL with a second-order Taylor step from the
greeks of the entry quote to the leg's end (the exit quote, or the delivery price at expiry):
delta&#215;dS, &#189;&#215;gamma&#215;dS&#178;, theta&#215;days held (theta is USD per day) and
vega&#215;dIV (vega is USD per vol point), times side and quantity. The <b>residual</b> is the rest:
fees, execution cost and the spread, and what one step from the entry's greeks cannot capture (large moves,
greeks that changed while the trade was held, skew). A large residual on a trade means the step
did not describe it well, not that money came from nowhere.</p>
"""


def period_bounds(summary: Mapping[str, Any]) -> tuple[float, float]:
    """The period of a summary (``period.from``/``period.to``) as epoch seconds."""
    start, end = epoch(summary["period"]["from"]), epoch(summary["period"]["to"])
    if start is None or end is None:
        raise ValueError(f"a summary without its period: {summary.get('period')!r}")
    return start, end


def render_report(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """The whole report.html: a function of the summary and the rows only (no clock, no environment)."""
    start, end = period_bounds(summary)
    names = list(summary["strategies"])
    curves: dict[str, list[tuple[float, float]]] = {"total": equity_curve(rows)}
    if len(names) > 1:
        for name in names:
            curves[name] = equity_curve([row for row in rows if row["strategy"] == name])
    legend = [("total", "#000")] + [(name, PALETTE[position % len(PALETTE)])
                                    for position, name in enumerate(curves) if name != "total"]
    sections = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        "<title>Backtest report</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        "<h1>Backtest report</h1>", _parameters(summary), _strategy_table(summary),
        *([_hedging_table(summary)] if hedging_shown(summary) else []),
        "<h2>Equity curve</h2>", _legend(legend), equity_chart(curves, start, end),
        "<h2>Drawdown</h2>", drawdown_chart(curves["total"], start, end),
        "<h2>PnL attribution</h2>", _legend(SHARE_COLOURS.items()), attribution_chart(rows),
        _attribution_totals(summary), _trade_table(rows), HOW_TO_READ,
        *([HOW_TO_READ_HEDGING] if hedging_shown(summary) else []), "</body>", "</html>",
    ]
    return "\n".join(sections) + "\n"


def write_report(out_dir: Path, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``report.html`` under ``out_dir``; returns its path."""
    path = out_dir / REPORT_FILE
    path.write_text(render_report(summary, rows), encoding="utf-8")
    return path
