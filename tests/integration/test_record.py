"""`python main.py record` against the embedded simulator on simulated time, then the recording
replayed as the simulator's market: the replay shows exactly the quotes that were recorded."""
from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

import pytest

import main as main_module
import recorder
from clock import SimulatedClock
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from market_data import MarketData
from recorder import HEADER_COMMENT, RecordPlan, record
from simulator import SimulatorConfig, start_simulator
from simulator.history import COLUMNS, HistoryMarket, history_span, read_history
from simulator.market import MarketConfig, MarketModel
from stop_flag import StopFlag

# Tuesday 2026-03-03 10:00 UTC: away from the 08:00 expiry.
START = datetime(2026, 3, 3, 10, 0, 0, tzinfo=timezone.utc).timestamp()
START_MS = int(START * 1000)
INTERVAL = 30.0
POLLS = 4


def test_the_recorder_writes_the_history_layout() -> None:
    assert recorder.COLUMNS == COLUMNS


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    clock = SimulatedClock(start=START, speed=0)
    out = tmp_path / "coincall_chain.csv"
    with start_simulator(SimulatorConfig(seed=7), clock=clock) as sim:
        client = CoincallClient(ClientSettings(base_url=sim.base_url),
                                Credentials(sim.api_key, sim.api_secret, source="test"), clock)
        try:
            written = record(MarketData(client, clock), clock, StopFlag(),
                             RecordPlan(out=out, interval_seconds=INTERVAL, polls=POLLS))
        finally:
            client.close()
    assert written > 0
    return out


def test_recorded_polls_replay_as_the_quotes_the_simulator_showed(recording: Path) -> None:
    lines = recording.read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER_COMMENT and lines[1] == ",".join(COLUMNS)
    records = list(csv.DictReader(lines[1:]))
    stamps = sorted({int(r["timestamp"]) // 1000 for r in records})
    assert stamps == [START_MS + k * int(INTERVAL * 1000) for k in range(POLLS)]   # on simulated time
    assert {r["exchange"] for r in records} == {"coincall"}
    assert history_span(recording) == (stamps[0], stamps[-1])

    replay = HistoryMarket(read_history(recording), MarketConfig(), stamps[0])
    # The synthetic market is a pure function of seed and time: a fresh one shows what was polled.
    original = MarketModel(MarketConfig(seed=7), START_MS)
    compared = 0
    for stamp in stamps:
        replay.advance_to(stamp)
        original.advance_to(stamp)
        for row in (r for r in records if int(r["timestamp"]) // 1000 == stamp):
            shown, was = replay.quote(row["symbol"]), original.quote(row["symbol"])
            assert (shown.bid, shown.ask, shown.bid_size, shown.ask_size) == (was.bid, was.ask, was.bid_size,
                                                                              was.ask_size), row["symbol"]
            assert shown.mark == was.mark and shown.underlying_price == was.underlying_price
            assert shown.iv == pytest.approx(was.iv, abs=1e-6)
            assert shown.delta == pytest.approx(was.delta, abs=1e-8)
            assert shown.time_ms == stamp
            compared += 1
        assert replay.index_price() == pytest.approx(original.index_price(), abs=0.01)
    assert compared == len(records)


def test_main_record_polls_the_embedded_simulator_and_keeps_the_paper_account_apart(tmp_path: Path) -> None:
    out = tmp_path / "rec" / "chain.csv"
    env = {"TRADING_ENVIRONMENT": "sim", "LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state")}
    args = ["record", "--out", str(out), "--interval", "60", "--polls", "2"]
    assert main_module.main(args, clock=SimulatedClock(start=START, speed=0), env=env, dotenv_path=None) == 0
    assert len({row.split(",")[2] for row in out.read_text(encoding="utf-8").splitlines()[2:]}) == 2
    assert (tmp_path / "rec" / "chain.csv.simulator.json").exists()
    assert not (tmp_path / "state" / "simulator.json").exists()
    # A second run appends under the same header.
    assert main_module.main(args, clock=SimulatedClock(start=START + 600, speed=0), env=env, dotenv_path=None) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert sum(1 for line in lines if line.startswith("exchange,")) == 1
    assert len({row.split(",")[2] for row in lines[2:]}) == 4


def test_main_record_refuses_a_file_of_another_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "notes.csv"
    out.write_text("date,text\n", encoding="utf-8")
    env = {"TRADING_ENVIRONMENT": "sim", "LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state")}
    code = main_module.main(["record", "--out", str(out), "--polls", "1"], clock=SimulatedClock(start=START, speed=0),
                            env=env, dotenv_path=None)
    assert code == 2 and "not an options_chain file" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "date,text\n"
    assert not (tmp_path / "notes.csv.simulator.json").exists()     # refused before anything started
