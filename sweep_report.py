"""What a sweep's results show: the ranking, the heat map and the page, written under ``--out``.

Why it is its own module (issue 11, the sweep slice): presenting results is one job, apart from
reading the sweep file (``sweep_spec``) and running it (``sweep``).

* **Deterministic outputs.** ``ranking.csv``, ``heatmap.svg`` and ``sweep.html`` are computed from the
  results alone, sorted, with no timestamps: the same results give the same bytes, whatever order the
  combinations finished in (``results.jsonl`` itself is in finishing order).
"""
from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from atomic_file import write_text_atomically
from clock import iso_utc
from sweep_spec import (
    LOWER_IS_BETTER,
    Combination,
    Heatmap,
    Scalar,
    SweepSpec,
    canonical,
    format_params,
    metric_names,
)

RANKING_FILE = "ranking.csv"
HEATMAP_FILE = "heatmap.svg"
HTML_FILE = "sweep.html"
RUNS_DIR = "runs"               # each run's files, under the sweep's directory (the page links to them)
TABLE_ROWS = 20                 # rows of the ranked table on stdout (ranking.csv has them all)
# The figures shown beside the ranking metric, when summary.json has them.
SHOWN_FIGURES = ("realized_pnl", "trades", "closed", "wins", "losses", "fees", "max_drawdown", "sharpe", "win_rate")


@dataclass(frozen=True)
class Ranked:
    """One parameter set of the sweep: its figures averaged over the seeds whose run succeeded."""

    rank: int | None            # None when no seed's run succeeded
    params: Mapping[str, Scalar]
    figures: Mapping[str, float | None]
    ok: int
    failed: int
    ids: tuple[str, ...]


def _mean(values: Sequence[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return round(math.fsum(present) / len(present), 6) if present else None


def shown_figures(spec: SweepSpec) -> list[str]:
    metrics = set(metric_names(spec.period, spec.strategy))
    return [spec.rank_by, *(name for name in SHOWN_FIGURES if name in metrics and name != spec.rank_by)]


def rank(spec: SweepSpec, rows: Sequence[Mapping[str, Any]]) -> list[Ranked]:
    """Parameter sets best first by ``rank_by`` (mean over seeds); ties and the unrankable by their parameters."""
    by_id = {row["id"]: row for row in rows}
    groups: dict[str, list[Combination]] = {}
    for combination in spec.combinations:
        groups.setdefault(canonical(dict(combination.params)), []).append(combination)
    names = shown_figures(spec)
    unsorted = []
    for key, members in groups.items():
        results = [by_id[c.id] for c in members if c.id in by_id]
        ok = [row for row in results if row["status"] == "ok"]
        if not results:
            continue
        figures = {name: _mean([row["summary"]["total"].get(name) for row in ok]) for name in names}
        unsorted.append((key, members[0].params, figures, len(ok), len(results) - len(ok),
                         tuple(row["id"] for row in results)))
    sign = -1.0 if spec.descending else 1.0

    def order(item: tuple[Any, ...]) -> tuple[Any, ...]:
        value = item[2][spec.rank_by]
        return (value is None, sign * value if value is not None else 0.0, item[0])

    ranked = []
    for position, (_, params, figures, ok_count, failed_count, ids) in enumerate(sorted(unsorted, key=order), 1):
        ranked.append(Ranked(position if ok_count and figures[spec.rank_by] is not None else None, params, figures,
                             ok_count, failed_count, ids))
    return ranked


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e9:
        return f"{value:,.0f}"   # a count (a mean of counts over seeds that agree), or a round figure
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.4g}"
    return str(value)


def _cell(value: Any) -> str:
    """A CSV cell: numbers exactly as rounded (repr), None empty."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def ranking_csv(spec: SweepSpec, ranked: Sequence[Ranked]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    figures = shown_figures(spec)
    writer.writerow(["rank", *spec.parameters, "runs_ok", "runs_failed", *figures, "ids"])
    for item in ranked:
        writer.writerow([_cell(item.rank), *(_cell(item.params.get(name)) for name in spec.parameters), item.ok,
                         item.failed, *(_cell(item.figures[name]) for name in figures), " ".join(item.ids)])
    return buffer.getvalue()


def ranking_table(spec: SweepSpec, ranked: Sequence[Ranked]) -> str:
    """The top of the ranking for the terminal (all of it is in ranking.csv)."""
    columns = [*spec.parameters, spec.rank_by, "trades", "ok", "failed"]
    body = [[_number(item.rank) if item.rank is not None else "-",
             *(str(item.params.get(name, "")) for name in spec.parameters), _number(item.figures[spec.rank_by]),
             _number(item.figures.get("trades")), str(item.ok), str(item.failed)]
            for item in ranked[:TABLE_ROWS]]
    header = ["rank", *columns]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [f"sweep {spec.strategy}: ranked by {spec.rank_by} ({'higher' if spec.descending else 'lower'} is better; "
             f"mean over {len(spec.seeds)} seed(s))",
             "  ".join(text.rjust(width) for text, width in zip(header, widths))]
    lines += ["  ".join(text.rjust(width) for text, width in zip(row, widths)) for row in body]
    if len(ranked) > TABLE_ROWS:
        lines.append(f"... {len(ranked) - TABLE_ROWS} more in {RANKING_FILE}")
    return "\n".join(lines)


def _axis_order(value: Scalar) -> tuple[Any, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def heatmap_cells(spec: SweepSpec, heatmap: Heatmap, rows: Sequence[Mapping[str, Any]]
                  ) -> tuple[list[Scalar], list[Scalar], dict[tuple[str, str], float | None]]:
    """The axes' values (sorted) and each cell's figure: ``best`` or ``mean`` of every successful run in it."""
    by_id = {row["id"]: row for row in rows}
    xs: dict[str, Scalar] = {}
    ys: dict[str, Scalar] = {}
    values: dict[tuple[str, str], list[float]] = {}
    for combination in spec.combinations:
        x, y = combination.params[heatmap.x], combination.params[heatmap.y]
        xs[canonical(x)], ys[canonical(y)] = x, y
        row = by_id.get(combination.id)
        cell = values.setdefault((canonical(x), canonical(y)), [])
        if row is not None and row["status"] == "ok":
            figure = row["summary"]["total"].get(heatmap.metric)
            if figure is not None:
                cell.append(float(figure))
    descending = (heatmap.metric not in LOWER_IS_BETTER) if heatmap.metric != spec.rank_by else spec.descending
    cells: dict[tuple[str, str], float | None] = {}
    for key, found in values.items():
        if not found:
            cells[key] = None
        elif heatmap.aggregate == "mean":
            cells[key] = _mean(list(found))
        else:
            cells[key] = max(found) if descending else min(found)
    return (sorted(xs.values(), key=_axis_order), sorted(ys.values(), key=_axis_order), cells)


def _colour(share: float) -> str:
    """Red (worst) through pale yellow to green (best), for a share in 0..1."""
    stops = ((215, 48, 39), (254, 224, 139), (26, 152, 80))
    low, high, t = (stops[0], stops[1], share * 2) if share < 0.5 else (stops[1], stops[2], share * 2 - 1)
    return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(low, high))


def heatmap_svg(spec: SweepSpec, heatmap: Heatmap, rows: Sequence[Mapping[str, Any]]) -> str:
    """An inline SVG: ``x`` across, ``y`` down, each cell coloured by its figure and showing it."""
    xs, ys, cells = heatmap_cells(spec, heatmap, rows)
    descending = (heatmap.metric not in LOWER_IS_BETTER) if heatmap.metric != spec.rank_by else spec.descending
    present = [value for value in cells.values() if value is not None]
    low, high = (min(present), max(present)) if present else (0.0, 0.0)
    width, height, left, top = 96, 36, 130, 70
    title = (f"{heatmap.metric} by {heatmap.x} and {heatmap.y} ({heatmap.aggregate} over the other parameters and "
             f"the seeds; {'higher' if descending else 'lower'} is better)")
    total_w = max(left + width * len(xs) + 20, 20 + 7 * len(title))   # about 7 px per character of the title
    total_h = top + height * len(ys) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
             f'viewBox="0 0 {total_w} {total_h}" font-family="sans-serif" font-size="12">',
             f'<text x="10" y="20" font-size="13" font-weight="bold">{html.escape(title)}</text>',
             f'<text x="{left + width * len(xs) / 2:g}" y="{top - 30}" text-anchor="middle">'
             f'{html.escape(heatmap.x)}</text>',
             f'<text x="14" y="{top + height * len(ys) / 2:g}" text-anchor="middle" '
             f'transform="rotate(-90 14 {top + height * len(ys) / 2:g})">{html.escape(heatmap.y)}</text>']
    for i, x in enumerate(xs):
        parts.append(f'<text x="{left + width * i + width / 2:g}" y="{top - 8}" text-anchor="middle">'
                     f'{html.escape(str(x))}</text>')
    for j, y in enumerate(ys):
        parts.append(f'<text x="{left - 8}" y="{top + height * j + height / 2 + 4:g}" text-anchor="end">'
                     f'{html.escape(str(y))}</text>')
        for i, x in enumerate(xs):
            value = cells.get((canonical(x), canonical(y)))
            if value is None:
                fill, label = "#dddddd", "n/a"
            else:
                share = (value - low) / (high - low) if high > low else 1.0
                fill, label = _colour(share if descending else 1.0 - share), _number(value)
            parts.append(f'<rect x="{left + width * i}" y="{top + height * j}" width="{width}" height="{height}" '
                         f'fill="{fill}" stroke="#ffffff"><title>{html.escape(heatmap.x)}={html.escape(str(x))}, '
                         f'{html.escape(heatmap.y)}={html.escape(str(y))}: {label}</title></rect>')
            parts.append(f'<text x="{left + width * i + width / 2:g}" y="{top + height * j + height / 2 + 4:g}" '
                         f'text-anchor="middle">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def sweep_html(spec: SweepSpec, ranked: Sequence[Ranked], rows: Sequence[Mapping[str, Any]], svg: str | None) -> str:
    """One page: what was swept, the heat map, the ranking (each run linked to its report), the failures."""
    figures = shown_figures(spec)
    head = "".join(f"<th>{html.escape(name)}</th>"
                   for name in ["rank", *spec.parameters, "ok", "failed", *figures, "runs"])
    body = []
    for item in ranked:
        links = " ".join(f'<a href="{RUNS_DIR}/{run_id}/report.html">{run_id}</a>' for run_id in item.ids)
        cells = [_number(item.rank) if item.rank is not None else "-",
                 *(str(item.params.get(name, "")) for name in spec.parameters), str(item.ok), str(item.failed),
                 *(_number(item.figures[name]) for name in figures)]
        body.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + f"<td>{links}</td></tr>")
    failures = [f"<li><code>{html.escape(row['id'])}</code> {html.escape(format_params(row['params']))} seed "
                f"{row['seed']}: <pre>{html.escape(str(row.get('error') or ''))}</pre></li>"
                for row in sorted(rows, key=lambda r: r["id"]) if row["status"] != "ok"]
    facts = (f"strategy <b>{html.escape(spec.strategy)}</b>, {iso_utc(spec.period.start)} to "
             f"{iso_utc(spec.period.end)}, seeds {', '.join(str(s) for s in spec.seeds)}, poll {spec.poll:g} s, "
             f"market {html.escape(spec.scenario or 'synthetic')}; {len(rows)} of {len(spec.combinations)} runs done")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>sweep {html.escape(spec.path.name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "pre{text-align:left;white-space:pre-wrap}</style>",
        "</head><body>", f"<h1>Sweep {html.escape(spec.path.name)}</h1>", f"<p>{facts}</p>",
        svg if svg is not None else "<p>No [heatmap] in the sweep file.</p>",
        f"<h2>Ranking by {html.escape(spec.rank_by)} ({'higher' if spec.descending else 'lower'} is better, mean over "
        f"the seeds)</h2>",
        f"<table><thead><tr>{head}</tr></thead><tbody>", *body, "</tbody></table>",
        *(["<h2>Failed runs</h2><ul>", *failures, "</ul>"] if failures else []),
        "<h2>The sweep file</h2>", f"<pre>{html.escape(spec.text)}</pre>", "</body></html>", ""])


def write_outputs(spec: SweepSpec, out_dir: Path, rows: Sequence[Mapping[str, Any]]) -> list[Ranked]:
    """``ranking.csv``, ``heatmap.svg`` (with a [heatmap]) and ``sweep.html``, from the results alone."""
    ranked = rank(spec, rows)
    write_text_atomically(out_dir / RANKING_FILE, ranking_csv(spec, ranked), mode=0o644)
    svg = heatmap_svg(spec, spec.heatmap, rows) if spec.heatmap is not None else None
    if svg is not None:
        write_text_atomically(out_dir / HEATMAP_FILE, svg, mode=0o644)
    write_text_atomically(out_dir / HTML_FILE, sweep_html(spec, ranked, rows, svg), mode=0o644)
    return ranked


def describe(row: Mapping[str, Any], metric: str) -> str:
    if row["status"] != "ok":
        return f"FAILED ({str(row.get('error') or '').splitlines()[0] if row.get('error') else 'no error text'})"
    total = row["summary"]["total"]
    return f"{metric} {_number(total.get(metric))}, {total.get('trades')} trades ({row.get('wall_seconds')} s)"
