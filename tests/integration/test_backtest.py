"""`python main.py backtest`: the daemon's own code over a simulated period, deterministic, in --out only."""
from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

import main as main_module
from backtest import TRADES_FILE, SUMMARY_FILE, choose_period
from errors import ConfigError

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
    for name in (TRADES_FILE, SUMMARY_FILE):
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
