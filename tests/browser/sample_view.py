"""A hand-written operator view (the contract of docs/DASHBOARD.md) and fake sources.

Shared by the dashboard's unit tests, the browser tests that run without a daemon and
``bench/bench_dashboard.py``: a view with N open trades, every field of the contract filled.
"""
from __future__ import annotations

import threading
from typing import Any

START = 1_772_528_400.0  # 2026-03-03 09:00 UTC


def _text(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def sample_trade(number: int, strategy: str = "alpha", *, closed: bool = False) -> dict[str, Any]:
    opened = START + 60 * number
    closed_at = opened + 3600 if closed else None
    return {
        "id": f"T{number:09d}", "strategy": strategy, "state": "CLOSED" if closed else "OPEN",
        "execution_mode": "limit", "opened_at": opened, "opened_at_text": _text(opened),
        "closed_at": closed_at, "closed_at_text": _text(closed_at), "entry_premium": 123.45,
        "legs": [
            {"symbol": "BTCUSD-4MAR26-92000-C", "side": "BUY", "qty": 0.01, "filled_qty": 0.01,
             "avg_fill_price": 640.0, "mark": 655.5},
            {"symbol": "BTCUSD-4MAR26-80000-P", "side": "BUY", "qty": 0.01, "filled_qty": 0.01,
             "avg_fill_price": 590.0, "mark": 572.25},
        ],
        "unrealized_pnl_mark": None if closed else -0.17, "unrealized_pnl_executable": None if closed else -1.92,
        "exit_rules": [
            {"name": "max_hold_hours(3)", "fraction": 0.25, "detail": "45 min of 3 h"},
            {"name": "profit_target(50%)", "fraction": None, "detail": "no executable price"},
        ],
        "exit_reason": "max_hold_hours(3)" if closed else None, "realized_pnl": -2.5 if closed else None,
        "fees": 0.42,
    }


def sample_view(open_trades: int = 2, closed_trades: int = 1, *, paused: str | None = None,
                generated_at: float = START + 600) -> dict[str, Any]:
    """A complete view: alpha and beta, ``open_trades`` open trades of alpha, some closed."""
    trades = [sample_trade(n + 1) for n in range(open_trades)]
    trades += [sample_trade(open_trades + n + 1, "beta", closed=True) for n in range(closed_trades)]

    def strategy(name: str) -> dict[str, Any]:
        is_paused = paused == name
        return {"name": name, "state": "paused" if is_paused else "running", "paused": is_paused,
                "pause_reason": "paused from the dashboard" if is_paused else None,
                "next_entry_check": START + 660, "next_entry_check_text": _text(START + 660),
                "no_entry_reason": "max_concurrent_trades reached (1)", "trades_today": 1,
                "open_trades": open_trades if name == "alpha" else 0, "realized_pnl": -2.5 if name == "beta" else 0.0,
                "unrealized_pnl_mark": -0.17 * open_trades if name == "alpha" else 0.0,
                "unrealized_pnl_executable": -1.92 * open_trades if name == "alpha" else 0.0}

    return {
        "generated_at": generated_at, "generated_at_text": _text(generated_at), "environment": "sim",
        "simulated": True,
        "account": {"equity": 99_919.52, "available_margin": 98_000.0, "initial_margin": 1_200.0,
                    "margin_utilization_pct": 1.2,
                    "greeks": {"delta": 0.0123, "gamma": 0.0001, "theta": -1.2345, "vega": 2.3456},
                    "greeks_by_underlying": {
                        "BTC": {"delta": 0.3123, "gamma": 0.0001, "theta": -1.0345, "vega": 2.1456,
                                "perp_delta": 0.25},
                        "ETH": {"delta": -0.3, "gamma": 0.0, "theta": -0.2, "vega": 0.2, "perp_delta": 0.0}}},
        "totals": {"realized_pnl": -2.5 * closed_trades, "unrealized_pnl_mark": -0.17 * open_trades,
                   "unrealized_pnl_executable": -1.92 * open_trades, "fees": 0.42 * (open_trades + closed_trades),
                   "trades_open": open_trades, "trades_total": open_trades + closed_trades},
        "strategies": [strategy("alpha"), strategy("beta")],
        "trades": trades,
        "working_orders": [{"client_order_id": 101000000001000001, "order_id": 9001, "trade_id": "T000000001",
                            "symbol": "BTCUSD-4MAR26-92000-C", "side": "SELL", "qty": 0.01, "price": 700.0,
                            "filled_qty": 0.0, "status": "NEW", "reduce_only": True}],
        "positions": [{"symbol": "BTCUSD-4MAR26-92000-C", "kind": "option", "qty": 0.01 * open_trades, "ours": True,
                       "trade_ids": [t["id"] for t in trades if t["state"] == "OPEN"]},
                      {"symbol": "BTCUSD-4MAR26-70000-P", "kind": "option", "qty": -0.05, "ours": False,
                       "trade_ids": []},
                      {"symbol": "BTCUSD", "kind": "perpetual", "qty": 0.25, "ours": False, "trade_ids": []}],
        "alerts": [{"time": START + 300, "time_text": _text(START + 300), "level": "WARNING",
                    "kind": "exchange_slow", "message": "the exchange answered slowly"}],
        "health": {"last_poll_at": generated_at, "last_poll_text": _text(generated_at), "exchange": "UP",
                   "snapshot_error": None, "reconciliation": "clean", "reconciliation_age_seconds": 12.0,
                   "warnings": []},
        "equity_curve": [[START + 60 * i, 100_000.0 - i * 1.5 + (i % 3)] for i in range(30)],
        "log_tail": ["2026-03-03 09:10:00 UTC INFO app: status line"],
    }


class FakeView:
    """``ViewSource``: a view the test swaps by hand."""

    def __init__(self, view: dict[str, Any] | None) -> None:
        self._lock = threading.Lock()
        self._view = view

    def set(self, view: dict[str, Any] | None) -> None:
        with self._lock:
            self._view = view

    def latest_json(self) -> dict[str, Any] | None:
        with self._lock:
            return self._view


class FakeLog:
    """``LogSource``: fixed lines."""

    def __init__(self, lines: list[str] | None = None) -> None:
        self._lines = list(lines or ["2026-03-03 09:10:00 UTC INFO app: one line", "<b>not bold</b>"])

    def lines(self) -> list[str]:
        return list(self._lines)
