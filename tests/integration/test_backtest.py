"""`python main.py backtest`: the daemon's own code over a simulated period, deterministic, in --out only."""
from __future__ import annotations

import csv
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

import main as main_module
from backtest import TRADES_FILE, SUMMARY_FILE, choose_period
from backtest_report import REPORT_FILE
from clock import SimulatedClock
from errors import ConfigError
from persistence import StateStore
from tests.unit.backtest_recompute import assert_matches, instant, recompute
from trade_lifecycle import TradeLifecycle

ARGS = ["backtest", "--strategy", "micro_strangle", "--from", "2026-03-03T10:00", "--to", "2026-03-03T12:00",
        "--seed", "5"]
# A production configuration in the environment: a backtest must ignore it entirely.
LIVE_ENV = {"TRADING_ENVIRONMENT": "production", "COINCALL_API_KEY_PROD": "PRODKEYabcdefghijklmnopqrstuvwxyz0123==",
            "COINCALL_API_SECRET_PROD": "prod-secret-never-used"}


def run(out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main_module.main([*ARGS, "--out", str(out)], env=LIVE_ENV, dotenv_path=None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bt") / "first"
    assert main_module.main([*ARGS, "--out", str(out)], env=LIVE_ENV, dotenv_path=None) == 0
    return out


def read_trades(out: Path) -> list[dict[str, str]]:
    with (out / TRADES_FILE).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_backtest_trades_on_the_embedded_simulator_and_writes_its_results_under_out(first_run):
    rows = read_trades(first_run)
    assert len(rows) >= 4 and all(row["strategy"] == "micro_strangle" for row in rows)
    assert any(row["state"] == "CLOSED" for row in rows)
    assert (first_run / "state" / "trader.db").exists() and (first_run / "logs" / "trading.log").exists()
    log = (first_run / "logs" / "trading.log").read_text(encoding="utf-8")
    assert "PAPER TRADING on the embedded simulator" in log and "lock-step, unpaced" in log
    assert "simulated time 2026-03-03 10:00:00Z" in log


def test_the_same_command_twice_gives_byte_identical_results(first_run, tmp_path, capsys):
    code, out, _ = run(tmp_path / "second", capsys)
    assert code == 0 and "micro_strangle" in out and "results:" in out
    assert f"report: {tmp_path / 'second' / REPORT_FILE}" in out
    for name in (TRADES_FILE, SUMMARY_FILE, REPORT_FILE):
        assert (tmp_path / "second" / name).read_bytes() == (first_run / name).read_bytes()


def test_the_summary_adds_up_from_trades_csv(first_run):
    rows = read_trades(first_run)
    summary = json.loads((first_run / SUMMARY_FILE).read_text(encoding="utf-8"))
    total = summary["total"]
    assert total["trades"] == len(rows)
    assert total["closed"] == sum(row["state"] == "CLOSED" for row in rows)
    assert total["failed"] == sum(row["state"] == "FAILED" for row in rows)
    assert total["realized_pnl"] == pytest.approx(sum(float(row["realized_pnl"]) for row in rows), abs=1e-5)
    assert total["fees"] == pytest.approx(sum(float(row["fees"]) for row in rows), abs=1e-5)
    closed = [float(row["realized_pnl"]) for row in rows if row["state"] == "CLOSED"]
    assert total["wins"] == sum(pnl > 0 for pnl in closed) and total["losses"] == sum(pnl <= 0 for pnl in closed)
    assert summary["strategies"]["micro_strangle"] == total
    assert summary["period"] == {"from": "2026-03-03T10:00:00.000Z", "to": "2026-03-03T12:00:00.000Z",
                                 "days": pytest.approx(2 / 24, abs=1e-6)}


def test_every_report_figure_is_recomputed_from_trades_csv_alone(first_run):
    """The acceptance test of the reports: summary.json and report.html agree with an independent
    recomputation from trades.csv (tests/unit/backtest_recompute.py), on a real run."""
    rows = read_trades(first_run)
    summary = json.loads((first_run / SUMMARY_FILE).read_text(encoding="utf-8"))
    start, end = instant(summary["period"]["from"]), instant(summary["period"]["to"])
    want = recompute(rows, start, end)
    assert_matches(summary["total"], want)
    assert_matches(summary["strategies"]["micro_strangle"], recompute(rows, start, end))
    # the daemon recorded the markets it decided on: every trade that opened has a cost figure,
    # every finished one an attribution whose parts add up to its realized PnL
    opened = [row for row in rows if row["opened_at"]]
    assert opened and all(row["exec_cost_open_pct"] != "" for row in opened)
    for row in rows:
        if row["state"] == "CLOSED":
            parts = sum(float(row[name]) for name in ("pnl_delta", "pnl_gamma", "pnl_theta", "pnl_vega",
                                                       "pnl_residual"))
            assert parts == pytest.approx(float(row["realized_pnl"]), abs=1e-5)
    page = (first_run / REPORT_FILE).read_text(encoding="utf-8")
    cells = re.findall(r"<td>(.*?)</td>", re.search(r"<tr><td>total</td>(.*?)</tr>", page).group(1))
    assert cells[4] == f"{want['realized_pnl']:,.2f}" and cells[5] == f"{want['fees']:,.2f}"
    assert cells[7] == f"{want['max_drawdown']:,.2f}"
    assert cells[11] == f"{want['time_in_market'] * 100:.1f} %"
    assert cells[12] == ("n/a" if want["exec_cost_pct"] is None else f"{want['exec_cost_pct']:,.1f}")
    assert page.count("<svg ") == 3 and "<script" not in page


def test_an_out_directory_that_holds_a_run_is_refused_before_anything_runs(first_run, capsys):
    before = (first_run / TRADES_FILE).read_bytes()
    code, _, err = run(first_run, capsys)
    assert code == 2 and "already holds files" in err and "--out" in err
    assert (first_run / TRADES_FILE).read_bytes() == before


NOW = datetime(2026, 12, 3, 15, 30, tzinfo=timezone.utc).timestamp()
MIDNIGHT = datetime(2026, 12, 3, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("start, end, days, expected", [
    (None, None, None, (MIDNIGHT - 7 * 86400, MIDNIGHT)),
    (None, None, 2.0, (MIDNIGHT - 2 * 86400, MIDNIGHT)),
    ("2026-03-01", None, 1.5, (datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp(),
                               datetime(2026, 3, 2, 12, tzinfo=timezone.utc).timestamp())),
    (None, "2026-03-08T06:00", 1.0, (datetime(2026, 3, 7, 6, tzinfo=timezone.utc).timestamp(),
                                     datetime(2026, 3, 8, 6, tzinfo=timezone.utc).timestamp())),
])
def test_the_period_from_from_to_and_days(start, end, days, expected):
    period = choose_period(start, end, days, NOW)
    assert (period.start, period.end) == expected


@pytest.mark.parametrize("start, end, days, fragment", [
    ("2026-03-01", "2026-03-02", 1.0, "give two of them"),
    ("2026-03-02", "2026-03-01", None, "must come after"),
    ("yesterday", None, None, "is not a date"),
    (None, None, 0.0, "positive number of days"),
])
def test_a_bad_period_is_refused_with_the_fix(start, end, days, fragment):
    with pytest.raises(ConfigError, match=fragment):
        choose_period(start, end, days, NOW)


# ---- --market FILE: a recorded option chain replayed (docs/HISTORY.md) ----------------------

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "synthetic_deribit_options_chain_sample.csv.gz"
STALE_SECONDS = 300           # a recorded row older than this shows no book (SimulatorConfig.history_stale_seconds)
LEG = re.compile(r"(BUY|SELL) [\d.]+ (\S+) open [\d.]+@([\d.]+) close [\d.]+@([\d.]+)")


def recorded_quotes(path: Path) -> dict[str, list[tuple[float, float | None, float | None]]]:
    """Per option: (time, bid, ask) of every recorded row, in USD, converted here as docs/HISTORY.md
    says (BTC price x underlying price; asks rounded up and bids down to the 1 USD tick)."""
    import gzip
    import math
    quotes: dict[str, list[tuple[float, float | None, float | None]]] = {}
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(line for line in handle if not line.startswith("#")):
            underlying = float(row["underlying_price"])
            bid = float(math.floor(float(row["bid_price"]) * underlying)) if row["bid_price"] else None
            ask = float(math.ceil(float(row["ask_price"]) * underlying)) if row["ask_price"] else None
            quotes.setdefault(row["symbol"].replace("BTC-", "BTCUSD-", 1), []).append(
                (int(row["timestamp"]) / 1e6, bid, ask))
    return quotes


def test_a_replay_of_a_recorded_chain_trades_only_against_recorded_quotes(tmp_path, capsys):
    """Every fill is justified by the recording, never by a mid: a buy at p needs a recorded ask
    <= p in force while the trade was opening, a sell at p a recorded bid >= p while it was open (a taker
    fill is at the recorded price; a resting order fills at its own price when a later row
    trades through it)."""
    out = tmp_path / "replay"
    code = main_module.main(["backtest", "--strategy", "micro_strangle", "--market", str(SAMPLE), "--days", "0.1",
                             "--out", str(out)], env=LIVE_ENV, dotenv_path=None)
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert summary["market"] == f"history:{SAMPLE.name}"
    assert summary["period"]["from"] == "2025-01-06T00:00:00.000Z"    # the recording's first row
    rows = read_trades(out)
    assert len(rows) >= 3
    quotes = recorded_quotes(SAMPLE)
    fills = 0
    for row in rows:
        created_at, opened_at = instant(row["created_at"]), instant(row["opened_at"])
        closed_at = instant(row["closed_at"]) if row["closed_at"] else None
        for side, symbol, opened, closed in LEG.findall(row["legs"]):
            assert side == "BUY"                      # micro_strangle buys, then sells back
            assert any(ask is not None and ask <= float(opened) and created_at - STALE_SECONDS <= t <= opened_at
                       for t, _bid, ask in quotes[symbol]), (symbol, opened)
            if closed_at is not None:
                assert any(bid is not None and bid >= float(closed) and opened_at <= t <= closed_at
                           for t, bid, _ask in quotes[symbol]), (symbol, closed)
            fills += 1
    assert fills >= 6


def test_a_replay_refuses_a_period_outside_the_recording_and_a_scenario_beside_it(tmp_path, capsys):
    outside = main_module.main(["backtest", "--market", str(SAMPLE), "--from", "2025-01-07", "--days", "1",
                                "--out", str(tmp_path / "a")], env=LIVE_ENV, dotenv_path=None)
    both = main_module.main(["backtest", "--market", str(SAMPLE), "--scenario", "crash-day",
                             "--out", str(tmp_path / "b")], env=LIVE_ENV, dotenv_path=None)
    missing = main_module.main(["backtest", "--market", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "c")],
                               env=LIVE_ENV, dotenv_path=None)
    err = capsys.readouterr().err
    assert (outside, both, missing) == (2, 2, 2)
    assert "covers 2025-01-06T00:00:00.000Z to 2025-01-06T11:59:57.000Z" in err
    assert "--scenario and --market FILE both choose the market" in err
    assert "is neither 'synthetic' nor a readable file" in err
    assert not any((tmp_path / name).exists() for name in "abc")


# ---- a delta-hedged strategy: the hedge columns, the perp's attribution (issue 13) ------------------------

# A shipped strategy that is not in main.STRATEGIES, on a crash that makes the hedge work: one trade,
# three rebalances and a stop in about 8 s of CPU.
HEDGED_ARGS = ["backtest", "--strategy", "hedged_strangle_btc", "--scenario", "crash-day", "--from", "2026-03-02",
               "--days", "1", "--poll", "30", "--seed", "7"]
SHARES = ("pnl_delta", "pnl_gamma", "pnl_theta", "pnl_vega", "pnl_residual")


@pytest.fixture(scope="module")
def hedged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hedged") / "first"
    assert main_module.main([*HEDGED_ARGS, "--out", str(out)], env=LIVE_ENV, dotenv_path=None) == 0
    return out


def stored_trades(out: Path) -> dict[str, TradeLifecycle]:
    store, _ = StateStore.open(out / "state" / "trader.db", SimulatedClock(start=0.0, speed=0))
    try:
        return {doc["id"]: TradeLifecycle.from_record(doc) for doc in store.load_trades()}
    finally:
        store.close()


def test_a_hedged_backtest_reports_its_hedge_and_every_figure_is_recomputed_from_trades_csv(hedged_run):
    rows = read_trades(hedged_run)
    summary = json.loads((hedged_run / SUMMARY_FILE).read_text(encoding="utf-8"))
    start, end = instant(summary["period"]["from"]), instant(summary["period"]["to"])
    want = recompute(rows, start, end)
    assert_matches(summary["total"], want)
    assert_matches(summary["strategies"]["hedged_strangle_btc"], want)
    assert want["hedge_rebalances"] > 0 and want["hedge_cost"] > 0
    trades = stored_trades(hedged_run)
    for row in rows:
        trade = trades[row["id"]]
        hedge = trade.hedge_leg_indexes()
        legs = [leg for leg in trade.legs if leg.index in hedge]
        # the lifecycle's own leg cash (its property, not the report's formula), fees out, funding not in
        expected = sum(leg.open_cash + leg.close_cash + leg.external_cash - leg.fees for leg in legs)
        if row["state"] == "CLOSED":
            assert float(row["hedge_pnl"]) == pytest.approx(expected, abs=1e-5)
            # the perp legs no longer blank the attribution, and its parts still add up
            assert row["pnl_residual"] != ""
            assert sum(float(row[name]) for name in SHARES) == pytest.approx(float(row["realized_pnl"]), abs=1e-5)
        assert float(row["funding"]) == pytest.approx(sum(leg.funding for leg in trade.legs), abs=1e-5)
        assert int(row["hedge_rebalances"]) == int(trade.metadata.get("hedge", {}).get("rebalances", 0))
    closed = [row for row in rows if row["state"] == "CLOSED" and int(row["hedge_rebalances"]) > 0]
    assert closed, "the crash made the hedge trade and the stop close it"
    page = (hedged_run / REPORT_FILE).read_text(encoding="utf-8")
    hedging = page[page.index("<caption>Hedging"):]
    cells = re.findall(r"<td>(.*?)</td>", re.search(r"<tr><td>total</td>(.*?)</tr>", hedging).group(1))
    assert cells[:4] == [str(want["hedge_rebalances"]), f"{want['hedge_cost']:,.2f}", f"{want['hedge_pnl']:,.2f}",
                         f"{want['funding']:,.2f}"]


def test_a_hedged_backtest_twice_gives_byte_identical_results(hedged_run, tmp_path, capsys):
    code = main_module.main([*HEDGED_ARGS, "--out", str(tmp_path / "again")], env=LIVE_ENV, dotenv_path=None)
    assert code == 0, capsys.readouterr().err
    for name in (TRADES_FILE, SUMMARY_FILE, REPORT_FILE):
        assert (tmp_path / "again" / name).read_bytes() == (hedged_run / name).read_bytes()
