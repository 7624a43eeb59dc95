"""The dashboard's pages: HTML rendered on the server from the operator view (a plain dict).

Why it looks the way it does:

* Everything a page shows comes from the view dict the monitor thread published
  (``operator_view.py``; the contract is in docs/DASHBOARD.md) plus the few values the server
  adds (the session's CSRF token, the recent commands, a message). Rendering is a pure
  function of those values, so a test renders a page from a hand-written dict.
* Every value is escaped with ``html.escape``, names included: a strategy named
  ``<script>`` is shown, never run.
* No external asset: the CSS is inline, the equity curve is an inline SVG, and the one
  script (it refreshes the page's data every few seconds) is inline with the response's
  CSP nonce. A dashboard opened through an SSH tunnel on a phone needs nothing else.
* Stable hooks for tests and scripts: ``id="strategy-<name>"``, ``id="trade-<id>"``,
  ``data-state``, ``data-paused``, ``data-underlying``, ``data-kind`` and ``data-field`` attributes.
* The kill switch takes two steps: a form that arms it, then a confirmation page that says
  exactly what will happen and carries a confirmation token of its own.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

NAV: tuple[tuple[str, str], ...] = (
    ("/", "Overview"), ("/strategies", "Strategies"), ("/trades", "Trades"), ("/orders", "Orders & positions"),
    ("/alerts", "Alerts & log"), ("/kill", "Kill switch"),
)
REFRESH_SECONDS = 5
CURVE_WIDTH = 640
CURVE_HEIGHT = 180
MISSING = "—"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}
header{background:#1b2a3a;color:#fff;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:1em;align-items:center}
header a{color:#cfe3ff;text-decoration:none;margin-right:.8em}header a.current{color:#fff;font-weight:600}
.badge{padding:.1em .5em;border-radius:.3em;font-size:.85em;font-weight:600}
.sim{background:#5b8def}.testnet{background:#d9a400}.production{background:#c62828}
main{padding:1em;max-width:1200px}
table{border-collapse:collapse;width:100%;margin:.5em 0 1em;background:#fff}
th,td{border:1px solid #d8dde3;padding:.3em .5em;text-align:left;font-size:.92em;vertical-align:top}
th{background:#eef1f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{background:#fff;border:1px solid #d8dde3;border-radius:.4em;
padding:.6em .9em;min-width:10em}.card .label{font-size:.8em;color:#5c6773}.card .value{font-size:1.3em}
.pos{color:#1b7f3b}.neg{color:#c62828}.warn{background:#fff4d6;border:1px solid #e2b93b;padding:.5em;margin:.5em 0}
.flash{background:#e3f1ff;border:1px solid #5b8def;padding:.5em;margin:.5em 0}
.error{background:#fde8e8;border:1px solid #c62828;padding:.5em;margin:.5em 0}
section.trade{background:#fff;border:1px solid #d8dde3;border-radius:.4em;padding:.5em .9em;margin:.8em 0}
.bar{display:inline-block;width:8em;height:.7em;background:#e6e9ee;border-radius:.3em;vertical-align:middle}
.bar span{display:block;height:100%;background:#5b8def;border-radius:.3em}.bar span.hot{background:#c62828}
button{padding:.3em .8em;border-radius:.3em;border:1px solid #8893a0;background:#fff;cursor:pointer}
button.danger{background:#c62828;color:#fff;border-color:#8e1b1b}
pre{background:#10161d;color:#d7e0ea;padding:.6em;overflow-x:auto;font-size:.82em;white-space:pre-wrap}
svg{background:#fff;border:1px solid #d8dde3;max-width:100%;height:auto}
"""

# The page's data is refreshed in place every few seconds: the same URL is fetched and its
# data (#content, the view's time, the command's progress in #flash) swapped in, unless the
# operator is choosing something in a form.
REFRESH_SCRIPT = """
(function(){var s=parseInt(document.body.getAttribute('data-refresh')||'0',10);if(!s){return;}
setInterval(function(){var a=document.activeElement;if(a&&(a.tagName==='INPUT'||a.tagName==='SELECT')){return;}
fetch(window.location.pathname+window.location.search,{credentials:'same-origin'})
.then(function(r){if(r.status===401){window.location='/login';return null;}return r.ok?r.text():null;})
.then(function(t){if(!t){return;}var d=new DOMParser().parseFromString(t,'text/html');
['content','generated-at','flash'].forEach(function(i){var n=d.getElementById(i),o=document.getElementById(i);
if(n&&o){o.innerHTML=n.innerHTML;}});}).catch(function(){});},s*1000);})();
"""


@dataclass(frozen=True)
class PageContext:
    """What every page is rendered from besides the view: values the server adds."""

    view: Mapping[str, Any] | None
    csrf_token: str
    nonce: str
    path: str = "/"
    flash: str | None = None
    error: str | None = None
    commands: Sequence[str] = field(default_factory=tuple)
    log_lines: Sequence[str] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------
# Escaping and numbers
# ---------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """Any value as escaped text; None as a dash."""
    if value is None:
        return MISSING
    return html.escape(str(value), quote=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def num(value: Any, digits: int = 2) -> str:
    """A number with thousands separators, or a dash (never a made-up zero)."""
    number = _number(value)
    return MISSING if number is None else html.escape(f"{number:,.{digits}f}")


def qty(value: Any) -> str:
    number = _number(value)
    return MISSING if number is None else html.escape(f"{number:g}")


def signed_class(value: Any) -> str:
    number = _number(value)
    if number is None or number == 0:
        return "num"
    return "num pos" if number > 0 else "num neg"


def money_cell(value: Any, name: str) -> str:
    return f'<td class="{signed_class(value)}" data-field="{esc(name)}">{num(value)}</td>'


def hidden_csrf(csrf_token: str) -> str:
    return f'<input type="hidden" name="csrf_token" value="{esc(csrf_token)}">'


# ---------------------------------------------------------------------------------------
# The frame of every page
# ---------------------------------------------------------------------------------------


def page(title: str, body: str, ctx: PageContext, *, refresh: bool = True) -> str:
    """The whole document: head, navigation, messages, the page's body in ``#content``."""
    view = ctx.view or {}
    environment = str(view.get("environment") or "")
    badge = (f'<span class="badge {esc(environment)}" id="environment">{esc(environment.upper())}'
             f'{" (simulated time)" if view.get("simulated") else ""}</span>') if environment else ""
    links = "".join(f'<a href="{href}"{" class=current" if href == ctx.path else ""}>{esc(label)}</a>'
                    for href, label in NAV)
    messages = ""
    if ctx.flash:
        messages += f'<div class="flash" id="flash">{esc(ctx.flash)}</div>'
    if ctx.error:
        messages += f'<div class="error" id="error">{esc(ctx.error)}</div>'
    stamp = (f'<span id="generated-at">view of {esc(view.get("generated_at_text"))}</span>'
             if ctx.view is not None else '<span id="generated-at">no view yet</span>')
    logout = (f'<form method="post" action="/logout" style="margin-left:auto">{hidden_csrf(ctx.csrf_token)}'
              f'<button type="submit" id="logout">Log out</button></form>')
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · CoincallTrader</title><style>{CSS}</style></head>"
        f'<body data-refresh="{REFRESH_SECONDS if refresh else 0}" data-page="{esc(ctx.path)}">'
        f"<header><strong>CoincallTrader</strong>{badge}<nav>{links}</nav>{stamp}{logout}</header>"
        f'<main>{messages}<div id="content"><h1>{esc(title)}</h1>{body}</div></main>'
        f'<script nonce="{esc(ctx.nonce)}">{REFRESH_SCRIPT}</script></body></html>'
    )


def no_view_yet() -> str:
    return ('<p class="warn" id="no-view">The daemon has not published a view yet: it does after its first poll '
            '(within one poll interval of the start).</p>')


def render_login(nonce: str, error: str | None = None) -> str:
    """The login form; the token is posted once and exchanged for a session cookie."""
    problem = f'<div class="error" id="error">{esc(error)}</div>' if error else ""
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Log in · CoincallTrader</title><style>{CSS}</style></head><body data-refresh=0>"
        "<header><strong>CoincallTrader</strong></header><main>"
        f"<h1>Log in</h1>{problem}"
        '<form method="post" action="/login" id="login-form"><label>Dashboard token '
        '<input type="password" name="token" id="token" autocomplete="current-password" autofocus></label> '
        '<button type="submit" id="login">Log in</button></form>'
        "<p>The token is DASHBOARD_TOKEN of the daemon's environment.</p></main></body></html>"
    )


def render_message(title: str, text: str, ctx: PageContext, *, status_id: str = "message") -> str:
    """A page that only says something (a refused request, an expired confirmation)."""
    return page(title, f'<p id="{esc(status_id)}">{esc(text)}</p><p><a href="/">Back to the overview</a></p>', ctx,
                refresh=False)


# ---------------------------------------------------------------------------------------
# Overview
# ---------------------------------------------------------------------------------------


def _card(label: str, value: str, element_id: str, css: str = "") -> str:
    return (f'<div class="card"><div class="label">{esc(label)}</div>'
            f'<div class="value {css}" id="{esc(element_id)}">{value}</div></div>')


def render_overview(ctx: PageContext) -> str:
    view = ctx.view
    if view is None:
        return page("Overview", no_view_yet(), ctx)
    account = view.get("account")
    totals = view.get("totals") or {}
    parts: list[str] = []
    if account is None:
        parts.append('<p class="warn" id="account-missing">The account could not be read at the last poll.</p>')
    else:
        greeks = account.get("greeks") or {}
        parts.append('<h2>Account</h2><div class="cards">' + "".join([
            _card("Equity (USD)", num(account.get("equity")), "equity"),
            _card("Available margin", num(account.get("available_margin")), "available-margin"),
            _card("Initial margin", num(account.get("initial_margin")), "initial-margin"),
            _card("Margin used", f'{num(account.get("margin_utilization_pct"))} %', "margin-utilization"),
        ]) + "</div>")
        parts.append('<h2>Portfolio greeks</h2><div class="cards">' + "".join(
            _card(name.capitalize(), num(greeks.get(name), 4), f"greek-{name}") for name in
            ("delta", "gamma", "theta", "vega")) + "</div>")
        parts.append(render_underlying_greeks(account.get("greeks_by_underlying") or {}))
    parts.append('<h2>PnL</h2><div class="cards">' + "".join([
        _card("Realized", num(totals.get("realized_pnl")), "total-realized", signed_class(totals.get("realized_pnl"))),
        _card("Unrealized (mark)", num(totals.get("unrealized_pnl_mark")), "total-unrealized-mark",
              signed_class(totals.get("unrealized_pnl_mark"))),
        _card("Unrealized (executable)", num(totals.get("unrealized_pnl_executable")), "total-unrealized-executable",
              signed_class(totals.get("unrealized_pnl_executable"))),
        _card("Fees", num(totals.get("fees")), "total-fees"),
        _card("Open trades", esc(totals.get("trades_open")), "trades-open"),
        _card("Trades", esc(totals.get("trades_total")), "trades-total"),
    ]) + "</div>")
    parts.append(render_health(view.get("health") or {}))
    parts.append("<h2>Equity</h2>" + equity_svg(view.get("equity_curve") or []))
    parts.append(render_commands(ctx.commands))
    return page("Overview", "".join(parts), ctx)


UNDERLYING_GREEKS = ("delta", "perp_delta", "gamma", "theta", "vega")


def render_underlying_greeks(by_underlying: Mapping[str, Any]) -> str:
    """One row per underlying: net greeks of its options and perpetuals, and the perps' delta."""
    if not isinstance(by_underlying, Mapping) or not by_underlying:
        return '<p id="no-underlying-greeks">No position: no greeks per underlying.</p>'
    rows = "".join(
        f'<tr data-underlying="{esc(underlying)}"><th>{esc(underlying)}</th>'
        + "".join(f'<td class="{signed_class(greeks.get(name))}" data-field="{name}">{num(greeks.get(name), 4)}</td>'
                  for name in UNDERLYING_GREEKS) + "</tr>"
        for underlying, greeks in by_underlying.items() if isinstance(greeks, Mapping))
    head = ("<tr><th>Underlying</th><th>Net delta</th><th>of which perpetuals</th><th>Gamma</th><th>Theta</th>"
            "<th>Vega</th></tr>")
    return f'<table id="underlying-greeks">{head}{rows}</table>'


def render_health(health: Mapping[str, Any]) -> str:
    exchange = str(health.get("exchange") or "")
    warnings = health.get("warnings") or []
    rows = [
        ("Last poll", esc(health.get("last_poll_text")), "last-poll"),
        ("Exchange", f'<span data-state="{esc(exchange)}">{esc(exchange or None)}</span>', "exchange"),
        ("Snapshot error", esc(health.get("snapshot_error")), "snapshot-error"),
        ("Reconciliation", esc(health.get("reconciliation")), "reconciliation"),
        ("Reconciled", f'{num(health.get("reconciliation_age_seconds"), 0)} s ago', "reconciliation-age"),
    ]
    table = "".join(f'<tr><th>{esc(label)}</th><td id="{element_id}">{value}</td></tr>' for label, value, element_id
                    in rows)
    warned = "".join(f'<div class="warn">{esc(text)}</div>' for text in warnings)
    return f'<h2>Health</h2><table id="health">{table}</table>{warned}'


def equity_svg(curve: Sequence[Sequence[Any]]) -> str:
    """The equity curve as an inline SVG polyline (no library, no external asset)."""
    points = [(_number(p[0]), _number(p[1])) for p in curve if isinstance(p, (list, tuple)) and len(p) >= 2]
    clean = [(t, v) for t, v in points if t is not None and v is not None]
    if len(clean) < 2:
        return '<p id="equity-curve" data-points="%d">Not enough points for a curve yet.</p>' % len(clean)
    times = [t for t, _ in clean]
    values = [v for _, v in clean]
    t0, t1 = min(times), max(times)
    low, high = min(values), max(values)
    span_t = (t1 - t0) or 1.0
    span_v = (high - low) or 1.0
    pad = 10
    width, height = CURVE_WIDTH - 2 * pad, CURVE_HEIGHT - 2 * pad
    coords = " ".join(f"{pad + (t - t0) / span_t * width:.1f},{pad + (high - v) / span_v * height:.1f}"
                      for t, v in clean)
    return (f'<svg id="equity-curve" data-points="{len(clean)}" viewBox="0 0 {CURVE_WIDTH} {CURVE_HEIGHT}" '
            f'width="{CURVE_WIDTH}" height="{CURVE_HEIGHT}" role="img" aria-label="equity curve">'
            f'<polyline fill="none" stroke="#5b8def" stroke-width="2" points="{coords}"/>'
            f'<text x="{pad}" y="{pad + 2}" font-size="11" fill="#5c6773">{num(high)}</text>'
            f'<text x="{pad}" y="{CURVE_HEIGHT - 2}" font-size="11" fill="#5c6773">{num(low)}</text></svg>')


def render_commands(commands: Sequence[str]) -> str:
    if not commands:
        return ""
    items = "".join(f"<li>{esc(text)}</li>" for text in commands)
    return f'<h2>Recent commands</h2><ul id="commands">{items}</ul>'


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------


def _control(action: str, name: str, label: str, csrf_token: str) -> str:
    return (f'<form method="post" action="/control/{action}" style="display:inline">{hidden_csrf(csrf_token)}'
            f'<input type="hidden" name="strategy" value="{esc(name)}">'
            f'<button type="submit" id="{action}-{esc(name)}" data-action="{action}">{esc(label)}</button></form>')


def render_strategies(ctx: PageContext) -> str:
    view = ctx.view
    if view is None:
        return page("Strategies", no_view_yet(), ctx)
    rows = []
    for strategy in view.get("strategies") or []:
        name = str(strategy.get("name"))
        paused = bool(strategy.get("paused"))
        control = (_control("resume", name, "Resume", ctx.csrf_token) if paused
                   else _control("pause", name, "Pause", ctx.csrf_token))
        rows.append(
            f'<tr id="strategy-{esc(name)}" data-state="{esc(strategy.get("state"))}" '
            f'data-paused="{"true" if paused else "false"}"><td>{esc(name)}</td>'
            f'<td data-field="state">{esc(strategy.get("state"))}</td>'
            f'<td data-field="pause_reason">{esc(strategy.get("pause_reason")) if paused else ""}</td>'
            f'<td data-field="next_entry_check">{esc(strategy.get("next_entry_check_text"))}</td>'
            f'<td data-field="no_entry_reason">{esc(strategy.get("no_entry_reason"))}</td>'
            f'<td class="num" data-field="trades_today">{esc(strategy.get("trades_today"))}</td>'
            f'<td class="num" data-field="open_trades">{esc(strategy.get("open_trades"))}</td>'
            + money_cell(strategy.get("realized_pnl"), "realized_pnl")
            + money_cell(strategy.get("unrealized_pnl_mark"), "unrealized_pnl_mark")
            + money_cell(strategy.get("unrealized_pnl_executable"), "unrealized_pnl_executable")
            + f"<td>{control}</td></tr>")
    head = ("<tr><th>Strategy</th><th>State</th><th>Paused because</th><th>Next entry check</th><th>No entry because"
            "</th><th>Trades today</th><th>Open</th><th>Realized</th><th>Unrealized (mark)</th>"
            "<th>Unrealized (executable)</th><th></th></tr>")
    body = (f'<table id="strategies">{head}{"".join(rows)}</table>'
            "<p>Pause stops new entries only: open trades keep their exit rules. The command goes through the "
            "daemon's queue and applies on its next wake.</p>" + render_commands(ctx.commands))
    return page("Strategies", body, ctx)


# ---------------------------------------------------------------------------------------
# Trades
# ---------------------------------------------------------------------------------------


def _fraction_bar(fraction: Any) -> str:
    number = _number(fraction)
    if number is None:
        return f'<span data-fraction="">{MISSING}</span>'
    shown = min(max(number, 0.0), 1.0)
    hot = " hot" if number >= 1.0 else ""
    return (f'<span class="bar" data-fraction="{number:.4f}"><span class="{hot.strip()}" '
            f'style="width:{shown * 100:.0f}%"></span></span> {shown * 100:.0f} %')


def render_trade(trade: Mapping[str, Any]) -> str:
    trade_id = str(trade.get("id"))
    legs = "".join(
        f'<tr data-symbol="{esc(leg.get("symbol"))}"><td>{esc(leg.get("symbol"))}</td><td>{esc(leg.get("side"))}</td>'
        f'<td class="num">{qty(leg.get("qty"))}</td><td class="num" data-field="filled_qty">'
        f'{qty(leg.get("filled_qty"))}</td><td class="num">{num(leg.get("avg_fill_price"))}</td>'
        f'<td class="num">{num(leg.get("mark"))}</td></tr>' for leg in trade.get("legs") or [])
    rules = "".join(
        f'<tr data-rule="{esc(rule.get("name"))}"><td>{esc(rule.get("name"))}</td>'
        f'<td>{_fraction_bar(rule.get("fraction"))}</td><td>{esc(rule.get("detail"))}</td></tr>'
        for rule in trade.get("exit_rules") or [])
    closed = ""
    if trade.get("closed_at") is not None or trade.get("exit_reason") is not None:
        closed = (f'<p>Closed {esc(trade.get("closed_at_text"))}: <span data-field="exit_reason">'
                  f'{esc(trade.get("exit_reason"))}</span>, realized <span class="{signed_class(trade.get("realized_pnl"))}"'
                  f' data-field="realized_pnl">{num(trade.get("realized_pnl"))}</span> USD</p>')
    return (
        f'<section class="trade" id="trade-{esc(trade_id)}" data-state="{esc(trade.get("state"))}" '
        f'data-strategy="{esc(trade.get("strategy"))}"><h3>{esc(trade_id)} · {esc(trade.get("strategy"))} · '
        f'<span data-field="state">{esc(trade.get("state"))}</span></h3>'
        f'<p>Opened {esc(trade.get("opened_at_text"))}, execution {esc(trade.get("execution_mode"))}, entry premium '
        f'<span data-field="entry_premium">{num(trade.get("entry_premium"))}</span> USD, fees '
        f'{num(trade.get("fees"))} USD. Unrealized: <span class="{signed_class(trade.get("unrealized_pnl_mark"))}" '
        f'data-field="unrealized_pnl_mark">{num(trade.get("unrealized_pnl_mark"))}</span> on mark, '
        f'<span class="{signed_class(trade.get("unrealized_pnl_executable"))}" data-field="unrealized_pnl_executable">'
        f'{num(trade.get("unrealized_pnl_executable"))}</span> on executable prices.</p>'
        "<table><tr><th>Leg</th><th>Side</th><th>Qty</th><th>Filled</th><th>Avg fill</th><th>Mark</th></tr>"
        f"{legs}</table>"
        + (f"<table><tr><th>Exit rule</th><th>How close</th><th>Detail</th></tr>{rules}</table>" if rules else
           "<p>No exit rule (expiry or kill).</p>")
        + closed + "</section>")


def render_trades(ctx: PageContext) -> str:
    view = ctx.view
    if view is None:
        return page("Trades", no_view_yet(), ctx)
    trades = view.get("trades") or []
    body = "".join(render_trade(trade) for trade in trades) or '<p id="no-trades">No trade yet.</p>'
    return page("Trades", f'<div id="trades">{body}</div>', ctx)


# ---------------------------------------------------------------------------------------
# Orders and positions
# ---------------------------------------------------------------------------------------


def render_orders(ctx: PageContext) -> str:
    view = ctx.view
    if view is None:
        return page("Orders & positions", no_view_yet(), ctx)
    orders = "".join(
        f'<tr data-client-order-id="{esc(o.get("client_order_id"))}"><td>{esc(o.get("client_order_id"))}</td>'
        f'<td>{esc(o.get("order_id"))}</td><td>{esc(o.get("trade_id"))}</td><td>{esc(o.get("symbol"))}</td>'
        f'<td>{esc(o.get("side"))}</td><td class="num">{qty(o.get("qty"))}</td><td class="num">{num(o.get("price"))}'
        f'</td><td class="num">{qty(o.get("filled_qty"))}</td><td>{esc(o.get("status"))}</td>'
        f'<td>{"yes" if o.get("reduce_only") else "no"}</td></tr>' for o in view.get("working_orders") or [])
    positions = "".join(
        f'<tr data-symbol="{esc(p.get("symbol"))}" data-ours="{"true" if p.get("ours") else "false"}" '
        f'data-kind="{esc(p.get("kind"))}"><td>{esc(p.get("symbol"))}</td>'
        f'<td data-field="kind">{esc(p.get("kind"))}</td><td class="num">{qty(p.get("qty"))}</td>'
        f'<td>{"ours" if p.get("ours") else "foreign"}</td><td>{esc(", ".join(map(str, p.get("trade_ids") or [])))}'
        f"</td></tr>" for p in view.get("positions") or [])
    if view.get("positions") is None:
        held = positions_unknown(view)
    elif positions:
        held = (f'<table id="positions"><tr><th>Symbol</th><th>Kind</th><th>Qty</th><th>Whose</th><th>Trades</th>'
                f'</tr>{positions}</table>')
    else:
        held = '<p id="no-positions">No position.</p>'
    body = (
        "<h2>Working orders</h2>"
        + (f'<table id="orders"><tr><th>Client order id</th><th>Order id</th><th>Trade</th><th>Symbol</th><th>Side'
           f'</th><th>Qty</th><th>Price</th><th>Filled</th><th>Status</th><th>Reduce-only</th></tr>{orders}</table>'
           if orders else '<p id="no-orders">No working order.</p>')
        + "<h2>Positions</h2>" + held)
    return page("Orders & positions", body, ctx)


def positions_unknown(view: Mapping[str, Any]) -> str:
    """What the page says while the view's ``positions`` is null (no good account read yet):
    unknown, and why, never "No position." (the account may hold our trades' exposure)."""
    error = (view.get("health") or {}).get("snapshot_error")
    why = f"the last account read failed: {error}" if error else "no account read yet"
    return f'<p class="warn" id="positions-unknown">Positions unknown: {esc(why)}.</p>'


# ---------------------------------------------------------------------------------------
# Alerts and the log
# ---------------------------------------------------------------------------------------


def render_alerts(ctx: PageContext) -> str:
    view = ctx.view or {}
    alerts = "".join(
        f'<tr data-level="{esc(a.get("level"))}"><td>{esc(a.get("time_text"))}</td><td>{esc(a.get("level"))}</td>'
        f'<td>{esc(a.get("kind"))}</td><td>{esc(a.get("message"))}</td></tr>' for a in view.get("alerts") or [])
    lines = list(ctx.log_lines) or list(view.get("log_tail") or [])
    log = "\n".join(esc(line) for line in lines)
    body = ((f'<table id="alerts"><tr><th>Time</th><th>Level</th><th>Kind</th><th>Message</th></tr>{alerts}</table>'
             if alerts else '<p id="no-alerts">No alert.</p>')
            + f'<h2>Log</h2><pre id="log-tail">{log}</pre>')
    return page("Alerts & log", body, ctx)


# ---------------------------------------------------------------------------------------
# The kill switch
# ---------------------------------------------------------------------------------------


def strategy_names(view: Mapping[str, Any] | None) -> list[str]:
    return [str(s.get("name")) for s in (view or {}).get("strategies") or []]


def render_kill(ctx: PageContext) -> str:
    """Step one: choose the scope and arm. Nothing is sent from this page."""
    options = '<option value="">every strategy</option>' + "".join(
        f'<option value="{esc(name)}">{esc(name)} only</option>' for name in strategy_names(ctx.view))
    body = (
        "<p>The kill switch pauses the chosen strategies, cancels their working orders and closes every position "
        "their trades hold with reduce-only orders. Orders that are not ours are never cancelled. It takes two steps: "
        "arm it here, then confirm on the next page within a minute.</p>"
        f'<form method="post" action="/kill/arm" id="kill-arm-form">{hidden_csrf(ctx.csrf_token)}'
        f'<p><label>Scope <select name="strategy" id="kill-strategy">{options}</select></label></p>'
        '<p><label><input type="checkbox" name="all_positions" value="1" id="kill-all-positions"> also close every '
        "other option position of the account (positions no trade of ours explains)</label></p>"
        '<button type="submit" class="danger" id="kill-arm">Arm the kill switch</button></form>'
        + render_commands(ctx.commands))
    return page("Kill switch", body, ctx, refresh=False)


def render_kill_confirm(ctx: PageContext, *, description: str, trades: Iterable[str], confirm_token: str,
                        seconds_left: float) -> str:
    """Step two: exactly what will happen, and the one button that does it."""
    affected = list(trades)
    trade_list = ("<ul id=\"kill-trades\">" + "".join(f"<li>{esc(t)}</li>" for t in affected) + "</ul>"
                  if affected else '<p id="kill-trades">No open trade of ours in scope right now.</p>')
    body = (
        f'<div class="warn" id="kill-description"><p><strong>This will kill {esc(description)}:</strong> pause the '
        "strategies it covers, cancel our working orders of their trades and close every position those trades "
        "hold with reduce-only orders, starting on the daemon's next wake. Orders that are not ours are never "
        "cancelled. The strategies stay paused until you resume them.</p></div>"
        f"<p>Open trades it closes (from the last view):</p>{trade_list}"
        f'<form method="post" action="/kill/confirm" id="kill-confirm-form">{hidden_csrf(ctx.csrf_token)}'
        f'<input type="hidden" name="confirm_token" value="{esc(confirm_token)}">'
        f'<button type="submit" class="danger" id="kill-confirm">Confirm: kill {esc(description)}</button> '
        f'<a href="/kill" id="kill-cancel">Cancel</a></form>'
        f'<p>This confirmation lapses in <span id="kill-seconds-left">{seconds_left:.0f}</span> seconds.</p>')
    return page("Confirm the kill switch", body, ctx, refresh=False)


__all__ = [
    "PageContext", "esc", "equity_svg", "page", "render_alerts", "render_kill", "render_kill_confirm",
    "render_login", "render_message", "render_orders", "render_overview", "render_strategies", "render_trade",
    "render_trades", "render_underlying_greeks", "strategy_names",
]
