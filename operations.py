"""Operator commands that only read: ``python main.py status [--json]`` (BEHAVIOUR.md 7.8).

``status`` shows what the daemon's store knows (trades with their exposure and PnL, working
orders, runner state, paused runners, kill/resume commands still pending or active) and,
when the exchange is reachable from this process, the account, the positions and the open
orders there, options and perpetuals (each with its kind and whether it is ours; perps that
cannot be read are said to be unknown). It takes no lock and sends no order, so it can run
next to a live daemon. With the embedded simulator the exchange lives inside the daemon's
process, so only the store is shown (a second embedded copy would be a different exchange).

Realized PnL is ``operator_view.realized_total`` (CLOSED and FAILED trades: the daemon's own
figure). Unrealized PnL cannot be computed here: valuing a trade needs the fresh quotes that
only the daemon holds. The daemon writes its last valuation every poll to
``<state>/operator_view.json`` (``operator_view.ViewPublisher``); ``status`` reads it and says
when it was made. The same file gives the net greeks per underlying (options plus perpetuals,
issue 13): the daemon's snapshot holds the perp positions and the position greeks, which this
process would otherwise have to fetch and normalise again. The text form rounds every figure
for people and writes times as UTC text; the JSON keeps numbers (USD rounded to cents) and
epoch times beside their text.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

from api_values import finite_number
from atomic_file import write_text_atomically
from clock import Clock, iso_utc
from coincall_client import CoincallClient
from coincall_payloads import PerpOrder, PerpPosition, parse_orders, read_account_figures, read_position_rows
from config import STATE_DB_NAME, Settings
from contracts import Side
from commands import describe_command
from display import fmt
from instance_lock import InstanceLock
from operator_view import VIEW_FILE_NAME, fees_total, realized_total, time_text
from order_ledger import LedgerOrder, parse_client_order_id
from persistence import OPEN_COMMAND_STATUSES, StateStore
from trade_lifecycle import TradeLifecycle

logger = logging.getLogger(__name__)

TERMINAL = ("CLOSED", "FAILED")
SNAPSHOT_FILE_NAME = "trades_snapshot.json"
SNAPSHOT_INTERVAL_SECONDS = 60.0
USD_DIGITS = 2


def _usd(value: Any) -> float | None:
    number = finite_number(value)
    return None if number is None else round(number, USD_DIGITS)


def status_report(settings: Settings, clock: Clock) -> dict:
    """Everything ``status`` prints, as one JSON-serialisable dict."""
    now = clock.now()
    report: dict[str, Any] = {"environment": settings.environment, "time": now, "time_text": time_text(now)}
    report["store"] = _daemon_store_view(settings)
    report["valuation"] = valuation_view(Path(settings.state_dir) / VIEW_FILE_NAME, now)
    _merge_valuation(report["store"], report["valuation"])
    report["exchange"] = _exchange_view(settings, clock)
    _mark_ours(report["exchange"], report["store"])
    return report


def valuation_view(path: Path, now: float) -> dict[str, Any]:
    """The daemon's last valuation (``operator_view.json``): unrealized PnL per trade and strategy.

    ``age_seconds`` is measured on this process's clock; for a simulated run (whose view is
    stamped in simulated time) it is None, and only the view's own time is shown.
    """
    if not path.exists():
        return {"available": False, "note": f"no valuation yet ({path} is written by a running daemon every poll)"}
    try:
        view = json.loads(path.read_text(encoding="utf-8"))
        generated_at = float(view["generated_at"])
        simulated = bool(view.get("simulated"))
        totals = dict(view["totals"])
        trades = {t["id"]: {"unrealized_pnl_mark": t.get("unrealized_pnl_mark"),
                            "unrealized_pnl_executable": t.get("unrealized_pnl_executable")}
                  for t in view.get("trades") or []}
        strategies = {s["name"]: {"unrealized_pnl_mark": s.get("unrealized_pnl_mark"),
                                  "unrealized_pnl_executable": s.get("unrealized_pnl_executable")}
                      for s in view.get("strategies") or []}
        greeks = _underlying_greeks(view.get("account"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"available": False, "note": f"{path} is unreadable: {exc}"}
    return {
        "available": True, "path": str(path), "generated_at": generated_at,
        "generated_at_text": time_text(generated_at), "simulated": simulated,
        "age_seconds": None if simulated else round(now - generated_at, 1),
        "unrealized_pnl_mark": totals.get("unrealized_pnl_mark"),
        "unrealized_pnl_executable": totals.get("unrealized_pnl_executable"),
        "realized_pnl": totals.get("realized_pnl"),
        "trades": trades, "strategies": strategies, "greeks_by_underlying": greeks,
    }


def _underlying_greeks(account: Any) -> dict[str, dict[str, float | None]] | None:
    """The view's ``account.greeks_by_underlying`` as numbers; None when the view had no account
    (the daemon's last poll could not read it) or was written by a daemon without the field:
    unknown, never "flat"."""
    by_underlying = dict(account).get("greeks_by_underlying") if account is not None else None
    if by_underlying is None:
        return None
    by_underlying = dict(by_underlying)
    return {str(underlying): {name: finite_number(value) for name, value in dict(greeks).items()}
            for underlying, greeks in by_underlying.items()}


def _merge_valuation(store: dict[str, Any], valuation: Mapping[str, Any]) -> None:
    """Put the daemon's unrealized PnL beside each active trade and strategy of the store view."""
    if not store.get("available"):
        return
    trades = valuation.get("trades") or {}
    strategies = valuation.get("strategies") or {}
    for row in store["active_trades"]:
        row.update(trades.get(row["id"]) or {"unrealized_pnl_mark": None, "unrealized_pnl_executable": None})
    for name, row in store["strategies"].items():
        row.update(strategies.get(name) or {"unrealized_pnl_mark": None, "unrealized_pnl_executable": None})


def _daemon_store_view(settings: Settings) -> dict:
    """The store view of the store the daemon writes to.

    That is ``STATE_DIR/trader.db``, except after the daemon lost it while running (RECOVERY.md
    L1): it then writes to ``trader.db.recovered.<time>`` and names that copy in its lock file
    (``InstanceLock.publish_store``), which the command line's ``kill`` and ``pause`` follow
    too. The lock is only read (never taken), and no store file is ever created here: a name
    that does not exist (moved back, say) falls back to ``trader.db``.
    """
    default = Path(settings.state_db_path)
    lock = InstanceLock(settings.state_dir)
    named = lock.holder_store()
    if named is None or not named.exists() or _same_file(named, default):
        return _store_view(default)
    view = _store_view(named)
    holder = lock.holder()
    view["recovered_from"] = str(default)
    view["recovered_note"] = (f"the daemon's recovered store: {default} was lost while the daemon "
                              f"(pid {holder or '?'}) ran, and it writes to this copy since (named in {lock.path}); "
                              f"stop the daemon, move this copy to {default} and start again")
    return view


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _store_view(path: Path) -> dict:
    if not path.exists():
        return {"path": str(path), "available": False, "note": "no state yet: the daemon has not run here"}
    try:
        store = StateStore(path)
    except Exception as exc:  # noqa: BLE001 - a report, not a repair: the daemon quarantines
        return {"path": str(path), "available": False, "note": f"unreadable: {exc}"}
    try:
        trades = [TradeLifecycle.from_record(record) for record in store.load_trades()]
        orders = [LedgerOrder.from_record(record) for record in store.load_orders()]
        runners = {name: store.load_runner_state(name) for name in store.runner_names()}
        open_commands = store.commands(OPEN_COMMAND_STATUSES)
    finally:
        store.close()
    active = [t for t in trades if t.state.value not in TERMINAL]
    by_strategy: dict[str, list[TradeLifecycle]] = {}
    for trade in trades:
        by_strategy.setdefault(trade.strategy, []).append(trade)
    per_strategy = {name: {"trades": len(group), "closed": sum(1 for t in group if t.state.value == "CLOSED"),
                           "failed": sum(1 for t in group if t.state.value == "FAILED"),
                           "realized_pnl": _usd(realized_total(group)), "fees": _usd(fees_total(group))}
                    for name, group in by_strategy.items()}
    return {
        "path": str(path),
        "available": True,
        "realized_pnl": _usd(realized_total(trades)),
        "fees": _usd(fees_total(trades)),
        "active_trades": [{
            "id": t.id, "strategy": t.strategy, "state": t.state.value, "mode": t.execution_mode,
            "exit_reason": t.exit_reason, "entry_premium": _usd(t.entry_premium),
            "fees": _usd(t.fees_paid), "opened_at": t.opened_at, "opened_at_text": time_text(t.opened_at),
            "exposure": {leg.symbol: leg.side.sign * leg.net_qty for leg in t.legs
                         if abs(leg.net_qty) > 1e-9},
        } for t in active],
        "working_orders": [{
            "client_order_id": o.client_order_id, "order_id": o.order_id, "trade_id": o.trade_id,
            "symbol": o.symbol, "side": Side.of(o.side).name, "qty": o.qty, "price": o.price,
            "filled": o.filled_qty, "status": o.status.value, "reduce_only": o.reduce_only,
        } for o in orders if not o.status.is_final],
        "strategies": {name: {**per_strategy.get(name, {}), "paused": bool((state or {}).get("paused")),
                              "pause_reason": (state or {}).get("pause_reason", "")}
                       for name, state in sorted({**{n: None for n in per_strategy}, **runners}.items())},
        "paused_runners": {name: (state or {}).get("pause_reason") or "paused"
                           for name, state in sorted(runners.items()) if (state or {}).get("paused")},
        "commands": [{"id": c["id"], "kind": c["kind"], "status": c["status"], "payload": c["payload"],
                      "created_at": c["created_at"], "summary": describe_command(c)} for c in open_commands],
    }


def _exchange_view(settings: Settings, clock: Clock) -> dict:
    """The account, every position and every open order, options and perpetuals alike.

    Each row says its ``kind``; the perps come from their own endpoints (the option ones never
    list them), so without them a hedge left on the account, or a perp no trade holds, would
    read as flat. A failed perp read leaves the options shown and marks the perps unknown
    (``perpetuals.available`` False): no answer is no evidence that there are none.
    """
    if settings.embeds_simulator:
        return {"available": False,
                "note": "the embedded simulator lives inside the daemon's process; run `python -m simulator` "
                        "separately (COINCALL_BASE_URL) to see the exchange side here"}
    from exchange_connection import open_exchange

    try:
        connection = open_exchange(settings, clock)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"available": False, "note": f"exchange unreachable: {exc}"}
    try:
        client = connection.client
        summary = client.account_summary()
        positions = client.positions() or []
        pending = client.all_pending_orders()
        perp_positions, perp_orders, perpetuals = _perp_reads(client)
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "note": f"exchange request failed: {exc}"}
    finally:
        connection.close()
    figures = read_account_figures(summary)
    return {
        "available": True,
        "equity": _usd(figures.equity),
        "available_margin": _usd(figures.available_margin),
        "unrealized_pnl": _usd(figures.unrealized_pnl),
        "positions": [{"symbol": p.symbol, "kind": "option", "side": "long" if p.side == 1 else "short",
                       "qty": p.qty, "avg_price": p.avg_price, "mark": p.mark_price}
                      for p in read_position_rows(positions)]
                     + [{"symbol": p.symbol, "kind": "perpetual", "side": "long" if p.side is Side.BUY else "short",
                         "qty": p.qty, "avg_price": p.avg_price, "mark": p.mark_price}
                        for p in perp_positions if p.qty > 0],
        "open_orders": [{"order_id": o.order_id, "client_order_id": o.client_order_id, "symbol": o.symbol,
                         "kind": "option", "ours": _is_ours(o.client_order_id, settings)}
                        for o in parse_orders(pending)]
                       + [{"order_id": o.order_id, "client_order_id": o.client_order_id, "symbol": o.symbol,
                           "kind": "perpetual", "ours": _is_ours(o.client_order_id, settings)} for o in perp_orders],
        "perpetuals": perpetuals,
    }


def _perp_reads(client: CoincallClient) -> tuple[list[PerpPosition], list[PerpOrder], dict[str, Any]]:
    """The perp positions and open perp orders, and whether they could be read.

    Read apart from the option calls so that a failing perp endpoint (an account without
    futures, an outage of that route) still lets ``status`` show the options, with the perps
    said to be unknown rather than listed as none.
    """
    try:
        return client.perp_positions(), client.perp_pending_orders(), {"available": True}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return [], [], {"available": False, "note": f"perp request failed: {exc}"}


def _mark_ours(exchange: dict[str, Any], store: Mapping[str, Any]) -> None:
    """Say of each exchange position whether our active trades hold its symbol, and which ones.

    The same rule as the dashboard's positions (``operator_view``): a symbol one of our active
    trades holds is ours. Without a readable store nobody can say: ``ours`` stays None
    (unknown), never False, so a position of ours is not shown as somebody else's.
    """
    if not exchange.get("available"):
        return
    if not store.get("available"):
        for row in exchange["positions"]:
            row["ours"], row["trade_ids"] = None, None
        return
    holders: dict[str, list[str]] = {}
    for trade in store["active_trades"]:
        for symbol in trade["exposure"]:
            holders.setdefault(symbol, []).append(trade["id"])
    for row in exchange["positions"]:
        row["ours"], row["trade_ids"] = row["symbol"] in holders, holders.get(row["symbol"], [])


def _is_ours(client_order_id: int | None, settings: Settings) -> bool:
    if client_order_id is None:
        return False
    try:
        return parse_client_order_id(client_order_id).prefix == settings.client_order_prefix
    except (TypeError, ValueError):
        return False


def _whose(position: Mapping[str, Any]) -> str:
    """`` (ours: T000000001)``, `` (not ours)``, or unknown when the store could not be read."""
    ours = position.get("ours")
    if ours is None:
        return " (ours or not: unknown, the store was not read)"
    return f" (ours: {', '.join(position.get('trade_ids') or [])})" if ours else " (not ours)"


def _signed(value: Any) -> str:
    """``+12.30`` for a USD figure, ``n/a`` when unknown (never a made-up 0)."""
    number = finite_number(value)
    return "n/a" if number is None else f"{number:+,.2f}"


def _pnl_pair(row: Mapping[str, Any]) -> str:
    return f"mark {_signed(row.get('unrealized_pnl_mark'))} / executable {_signed(row.get('unrealized_pnl_executable'))}"


def _delta(value: Any) -> str:
    number = finite_number(value)
    return "n/a" if number is None else f"{number:+.4f}"


def _greeks_line(valuation: Mapping[str, Any]) -> str | None:
    """``net delta per underlying ...: BTC +0.3123 (perp +0.2500), ETH -0.3000 (perp +0.0000)``;
    None when the account is flat or unknown."""
    by_underlying = valuation.get("greeks_by_underlying") if valuation.get("available") else None
    if not by_underlying:
        return None
    parts = [f"{underlying} {_delta(greeks.get('delta'))} (perp {_delta(greeks.get('perp_delta'))})"
             for underlying, greeks in by_underlying.items()]
    return "  net delta per underlying (options and perpetuals): " + ", ".join(parts)


def _valuation_line(valuation: Mapping[str, Any]) -> str:
    if not valuation.get("available"):
        return f"valuation: {valuation.get('note')}"
    age = valuation.get("age_seconds")
    when = f"{valuation['generated_at_text']}" + (" (simulated time)" if valuation.get("simulated")
                                                   else f", {age:,.0f} s ago")
    return f"valuation by the daemon at {when}: unrealized PnL {_pnl_pair(valuation)} USD"


def format_status(report: dict) -> str:
    """The human form: one block for the store, one for the exchange; figures rounded, times in UTC."""
    time_line = report.get("time_text") or ""
    lines = [f"CoincallTrader status ({report['environment']})" + (f" at {time_line}" if time_line else "")]
    store = report["store"]
    valuation = report.get("valuation") or {"available": False, "note": "not read"}
    if store.get("recovered_note"):
        lines.append(f"store: {store['recovered_note']}")
    if not store["available"]:
        lines.append(f"store {store['path']}: {store['note']}")
    else:
        lines.append(f"store {store['path']}: {len(store['active_trades'])} active trade(s), "
                     f"{len(store['working_orders'])} working order(s)")
        lines.append(f"  realized PnL {_signed(store.get('realized_pnl'))} USD (closed and failed trades, fees "
                     f"included), fees {fmt(store.get('fees'))} USD")
        for t in store["active_trades"]:
            exposure = ", ".join(f"{symbol} {qty:+g}" for symbol, qty in t["exposure"].items()) or "flat"
            opened = f" opened {t['opened_at_text']}" if t.get("opened_at_text") else ""
            lines.append(f"  {t['id']} {t['strategy']} {t['state']} ({t['mode']}){opened} entry "
                         f"{_signed(t['entry_premium'])} fees {fmt(t['fees'])} uPnL {_pnl_pair(t)}: {exposure}"
                         + (f" exit: {t['exit_reason']}" if t["exit_reason"] else ""))
        for o in store["working_orders"]:
            lines.append(f"  order {o['client_order_id']} {o['trade_id']} {o['side']} {o['qty']:g} {o['symbol']} "
                         f"@ {o['price']:g} filled {o['filled']:g} {o['status']}")
        for name, row in store["strategies"].items():
            lines.append(f"  strategy {name}: {int(row.get('trades', 0))} trades, {int(row.get('closed', 0))} closed, "
                         f"{int(row.get('failed', 0))} failed, realized {_signed(row.get('realized_pnl', 0.0))} USD, "
                         f"unrealized {_pnl_pair(row)} USD, fees {fmt(row.get('fees', 0.0))}"
                         + (f", PAUSED ({row['pause_reason']})" if row["paused"] else ""))
        paused = store.get("paused_runners") or {}
        lines.append("  paused: " + (", ".join(f"{name} ({reason})" for name, reason in paused.items()) or "none"))
        for command in store.get("commands") or []:
            lines.append(f"  command {command['summary']}")
    lines.append(_valuation_line(valuation))
    greeks_line = _greeks_line(valuation)
    if greeks_line is not None:
        lines.append(greeks_line)
    exchange = report["exchange"]
    if not exchange["available"]:
        lines.append(f"exchange: {exchange['note']}")
    else:
        lines.append(f"exchange: equity {fmt(exchange['equity'])} available margin {fmt(exchange['available_margin'])} "
                     f"uPnL {_signed(exchange['unrealized_pnl'])}")
        for p in exchange["positions"]:
            lines.append(f"  position {p['symbol']} {p.get('kind', 'option')} {p['side']} {p['qty']:g} "
                         f"avg {fmt(p['avg_price'])} mark {fmt(p['mark'])}{_whose(p)}")
        for o in exchange["open_orders"]:
            lines.append(f"  open order {o['order_id']} {o['symbol']} {o.get('kind', 'option')}"
                         + ("" if o["ours"] else " (not ours)"))
        perpetuals = exchange.get("perpetuals") or {"available": False, "note": "not read"}
        if not perpetuals["available"]:
            lines.append(f"  perpetual positions and orders: unknown ({perpetuals['note']})")
    return "\n".join(lines)


def status_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True, default=str)


class TradesSnapshotExporter:
    """``<state>/trades_snapshot.json`` every 60 s: the store's view, for people (BEHAVIOUR 4.6).

    Why a file when the store exists: an operator on a VPS can ``cat`` it with no tool and no
    lock. It is written atomically (temp file, fsync, rename) and never read back by the
    daemon, so a stale or damaged copy can never steer trading. A failed export is logged
    and retried at the next interval.
    """

    def __init__(self, state_dir: str | Path, *, interval_seconds: float = SNAPSHOT_INTERVAL_SECONDS) -> None:
        self.db_path = Path(state_dir) / STATE_DB_NAME
        self.path = Path(state_dir) / SNAPSHOT_FILE_NAME
        self.interval_seconds = float(interval_seconds)
        self._last: float | None = None

    def maybe_export(self, now: float) -> bool:
        """Export when the interval has passed (at once the first time); True when written."""
        if self._last is not None and now - self._last < self.interval_seconds:
            return False
        self._last = now
        try:
            document = {"exported_at": iso_utc(now), "note": "written every 60 s for people; never read back",
                        **_store_view(self.db_path)}
            write_text_atomically(self.path, json.dumps(document, indent=1, sort_keys=True, default=str) + "\n",
                                  mode=0o644)
        except Exception:  # noqa: BLE001 - a courtesy file must never stop trading
            logger.exception("could not export %s; retrying in %.0f s", self.path, self.interval_seconds)
            return False
        return True
