"""PnL everywhere (issue 12), on a daemon trading on a simulator in simulated time.

A trade is open after two simulated minutes: its unrealized PnL on mark and on executable
prices is in the status line, in `status --json` (read from the view the daemon writes every
poll) and in the operator view. The daemon then runs on until the trade has closed: the
journal's close events carry the exit reason, the realized PnL and the fees, and the realized
total agrees everywhere (`status`, the store's trades summed, the view, the status line),
with a failed, unwound trade among them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import main as main_module
from contracts import Contract
from persistence import StateStore
from tests.conftest import SIM_START
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState

NUMBER = r"-?[\d,]+\.\d\d"


def env_for(tmp_path: Path, sim) -> dict[str, str]:
    return {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state"), "TRADING_ENVIRONMENT": "sim",
            "POLL_INTERVAL_SECONDS": "10", "COINCALL_BASE_URL": sim.base_url, "COINCALL_API_KEY_SIM": sim.api_key,
            "COINCALL_API_SECRET_SIM": sim.api_secret}


def status_json(env: dict[str, str], sim, capsys) -> dict:
    capsys.readouterr()
    assert main_module.main(["status", "--json"], clock=sim.clock, env=env, dotenv_path=None) == 0
    return json.loads(capsys.readouterr().out)


def view_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "state" / "operator_view.json").read_text(encoding="utf-8"))


def seed_an_unwound_trade(tmp_path: Path) -> float:
    """A trade of the day before that opened partially and was unwound at a loss (FAILED)."""
    contract = Contract(symbol="BTCUSD-2MAR26-95000-C", underlying="BTC", option_type="C", strike=95_000.0,
                        expiry_ms=int((SIM_START + 7200) * 1000))
    leg = TradeLeg(index=0, contract=contract, side=1, qty=0.01, open_filled=0.005, open_vwap=600.0, open_fees=0.9,
                   close_filled=0.005, close_vwap=400.0, close_fees=0.9)
    trade = TradeLifecycle(id="T000000900", seq=900, strategy="micro_strangle", state=TradeState.FAILED, legs=[leg],
                           created_at=SIM_START - 86_400, failed_at=SIM_START - 86_000, fees_paid=1.8,
                           failure_reason="open incomplete; unwound", opened_notified=True, closed_notified=True)
    trade.realized_pnl = trade.realized()
    with StateStore(tmp_path / "state" / "trader.db") as store:
        store.save_trade(trade.to_record())
    return trade.realized_pnl


def test_unrealized_and_realized_pnl_are_shown_everywhere_and_agree(tmp_path, sim, capsys):
    env = env_for(tmp_path, sim)
    assert main_module.main(["--run-for", "120", "--strategy", "micro_strangle"], clock=sim.clock, env=env,
                            dotenv_path=None) == 0
    log = (tmp_path / "logs" / "trading.log").read_text(encoding="utf-8")

    # While the trade is open: the status line (no time of its own, figures rounded) ...
    lines = re.findall(rf"status index=\S+ equity={NUMBER} .* trades_active=1 trades_total=1 "
                       rf"realized=({NUMBER}) upnl_mark=({NUMBER}) upnl_exec=({NUMBER}) paused=-", log)
    assert lines, "no status line with the open trade's unrealized PnL"
    assert not re.search(r"status \d{4}-\d\d-\d\d", log)
    # ... the operator view the daemon published ...
    view = view_of(tmp_path)
    [trade] = [t for t in view["trades"] if t["state"] == "OPEN"]
    assert isinstance(trade["unrealized_pnl_mark"], float) and isinstance(trade["unrealized_pnl_executable"], float)
    assert view["totals"]["unrealized_pnl_mark"] == trade["unrealized_pnl_mark"]
    assert [rule["name"].split("(")[0] for rule in trade["exit_rules"]] == [
        "profit_target_pct", "max_loss_pct", "max_hold_hours"]
    assert trade["exit_rules"][2]["fraction"] is not None and "h left" in trade["exit_rules"][2]["detail"]
    assert view["strategies"][0]["name"] == "micro_strangle" and view["strategies"][0]["open_trades"] == 1
    assert [leg["filled_qty"] for leg in trade["legs"]] == [0.01, 0.01]
    # ... and `status --json`, which reads that view and says when it was made.
    report = status_json(env, sim, capsys)
    [active] = report["store"]["active_trades"]
    assert active["id"] == trade["id"]
    assert active["unrealized_pnl_mark"] == trade["unrealized_pnl_mark"]
    assert active["unrealized_pnl_executable"] == trade["unrealized_pnl_executable"]
    assert report["valuation"]["available"] is True and report["valuation"]["generated_at"] == view["generated_at"]
    assert report["store"]["strategies"]["micro_strangle"]["unrealized_pnl_mark"] == trade["unrealized_pnl_mark"]
    capsys.readouterr()
    assert main_module.main(["status"], clock=sim.clock, env=env, dotenv_path=None) == 0
    text = capsys.readouterr().out
    assert f"uPnL mark {trade['unrealized_pnl_mark']:+,.2f}" in text and "valuation by the daemon at" in text

    # On until the trade has closed (held at most 15 minutes), with a failed trade in the store.
    failed_pnl = seed_an_unwound_trade(tmp_path)
    assert failed_pnl < 0
    assert main_module.main(["--run-for", "1200", "--strategy", "micro_strangle"], clock=sim.clock, env=env,
                            dotenv_path=None) == 0
    events = [json.loads(line) for line in (tmp_path / "logs" / "events.jsonl").read_text().splitlines()]
    ends = [e for e in events if e["kind"] == "trade" and e["trade_id"] == trade["id"]
            and (e["event"] == "closed_notified" or (e["event"] == "state" and e["state"] == "CLOSED"))]
    assert [e["event"] for e in ends] == ["state", "closed_notified"]
    for event in ends:
        assert event["exit_reason"].startswith(("max_hold_hours", "profit_target_pct", "max_loss_pct"))
        assert isinstance(event["realized_pnl"], float) and event["fees"] > 0
        assert [leg["close_filled_qty"] for leg in event["legs"]] == [0.01, 0.01]
    [opened] = [e for e in events if e["kind"] == "trade" and e["trade_id"] == trade["id"]
                and e["event"] == "opened_notified"]
    assert opened["entry_premium"] < 0 and all(leg["avg_price"] > 0 for leg in opened["legs"])
    valuations = [e for e in events if e["kind"] == "valuation"]
    assert valuations and any(v["trades"] and v["trades"][0]["unrealized_pnl_mark"] is not None for v in valuations)

    # The realized total agrees everywhere, the failed trade included.
    with StateStore(tmp_path / "state" / "trader.db") as store:
        stored = store.load_trades()
    by_store = round(sum(t["realized_pnl"] or 0.0 for t in stored if t["state"] in ("CLOSED", "FAILED")), 2)
    assert any(t["state"] == "FAILED" for t in stored) and any(t["state"] == "CLOSED" for t in stored)
    report = status_json(env, sim, capsys)
    view = view_of(tmp_path)
    assert report["store"]["realized_pnl"] == by_store == view["totals"]["realized_pnl"]
    assert report["store"]["strategies"]["micro_strangle"]["realized_pnl"] == by_store
    assert view["strategies"][0]["realized_pnl"] == by_store
    closed_view = next(t for t in view["trades"] if t["id"] == trade["id"])
    assert closed_view["state"] == "CLOSED" and closed_view["exit_reason"] == ends[0]["exit_reason"]
    assert closed_view["realized_pnl"] == ends[0]["realized_pnl"]
    log = (tmp_path / "logs" / "trading.log").read_text(encoding="utf-8")
    last_realized = re.findall(rf"status index=.* realized=({NUMBER}) upnl_mark=", log)[-1]
    assert float(last_realized.replace(",", "")) == by_store
