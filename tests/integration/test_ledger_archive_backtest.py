"""A backtest archives finished trades' orders, and its results are those of a run that never does.

Why (issue 11): the ledger's memory must not grow with the daemon's history, and letting the
state store alone keep the orders of finished trades must change no decision: the same trades,
fills and PnL, byte for byte, as a run that keeps every order in memory.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import order_ledger
from backtest import SUMMARY_FILE, TRADES_FILE, BacktestPeriod, parse_instant, run_backtest
from main import STRATEGIES
from stop_flag import StopFlag
from strategy_factories import build_strategy_configs


def _run(out: Path, checks: list[dict[str, Any]]) -> None:
    configs = [c for c in build_strategy_configs(STRATEGIES) if c.name == "micro_strangle"]
    period = BacktestPeriod(parse_instant("2026-03-03T00:00", "--from"), parse_instant("2026-03-03T05:00", "--to"))

    def look(ctx: Any, now: float) -> None:
        if checks or now < period.end - 120.0:
            return
        ledger, store = ctx.ledger, ctx.store
        stored = store.load_orders()
        archived = sorted(ledger._archived_trades)
        checks.append({
            "archived_trades": archived,
            "all_stored_are_ours": all(ledger.is_ours(int(r["client_order_id"])) for r in stored),
            "known_ids_cover_the_store": {int(r["order_id"]) for r in stored if r.get("order_id") is not None}
            <= ledger.known_order_ids(),
            "in_memory": len(ledger._orders),
            "stored": len(stored),
            "read_back_equals_store": all(
                sorted((o.to_record() for o in ledger.orders(trade_id)), key=lambda r: r["client_order_id"])
                == store.load_orders(trade_id) for trade_id in archived),
        })

    code = run_backtest(configs, period, seed=7, poll=10.0, out_dir=out, stop=StopFlag(),
                        progress_stream=io.StringIO(), observer=look)
    assert code == 0


def test_archiving_orders_changes_no_result_and_keeps_every_order_ours(tmp_path, monkeypatch):
    archiving: list[dict[str, Any]] = []
    _run(tmp_path / "archiving", archiving)
    (seen,) = archiving
    assert len(seen["archived_trades"]) >= 2
    assert seen["in_memory"] < seen["stored"]                     # memory holds fewer than the store
    assert seen["all_stored_are_ours"] and seen["known_ids_cover_the_store"] and seen["read_back_equals_store"]

    monkeypatch.setattr(order_ledger, "ARCHIVE_QUIET_SECONDS", math.inf)   # a ledger that never archives
    keeping: list[dict[str, Any]] = []
    _run(tmp_path / "keeping", keeping)
    assert keeping[0]["archived_trades"] == [] and keeping[0]["in_memory"] == keeping[0]["stored"]
    for name in (TRADES_FILE, SUMMARY_FILE):
        assert (tmp_path / "archiving" / name).read_bytes() == (tmp_path / "keeping" / name).read_bytes()

