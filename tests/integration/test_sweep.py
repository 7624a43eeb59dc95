"""`python main.py sweep FILE.toml`: validation first, local processes, resume after a killed driver, Dask.

Every combination is tiny (one simulated hour of micro_strangle at a 30 s poll, a few seconds of
CPU), so a sweep of 2 x 2 combinations costs about as much as four short backtests.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import main as main_module
from sweep import RESULTS_FILE, SCRATCH_DIR, SWEEP_COPY
from sweep_report import HEATMAP_FILE, HTML_FILE, RANKING_FILE, RUNS_DIR

ROOT = Path(__file__).resolve().parents[2]
# A production configuration in the environment: a sweep must ignore it, like a backtest.
LIVE_ENV = {"TRADING_ENVIRONMENT": "production", "COINCALL_API_KEY_PROD": "PRODKEYabcdefghijklmnopqrstuvwxyz0123==",
            "COINCALL_API_SECRET_PROD": "prod-secret-never-used"}
SWEEP = """\
strategy = "micro_strangle"
seed = 5
poll = 30
rank_by = "realized_pnl"

[period]
from = "2026-03-03T10:00"
to = "2026-03-03T11:00"

[grid]
call_delta = [0.2, 0.3]
profit_target_pct = [20, 40]

[heatmap]
x = "call_delta"
y = "profit_target_pct"
"""
COMBINATIONS = 4
# The waits of the subprocess test: bounded, driven by the process and its pipe, never a sleep.
LINE_TIMEOUT_SECONDS = 180
EXIT_TIMEOUT_SECONDS = 300


def write_sweep(directory: Path, text: str = SWEEP, name: str = "grid.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def sweep(args: list[str]) -> int:
    return main_module.main(["sweep", *args], env=LIVE_ENV, dotenv_path=None)


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / RESULTS_FILE).read_text(encoding="utf-8").splitlines()]


def figures_by_id(out: Path) -> dict[str, dict]:
    return {row["id"]: {"status": row["status"], "params": row["params"], "summary": row["summary"]}
            for row in results(out)}


# ---------------------------------------------------------------------------------------------
# (a) validation: every refusal before any backtest
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "fragments"), [
    (("[grid]\ncall_delta", "[grid]\ncalldelta"),
     ["unknown parameter 'calldelta'", "did you mean 'call_delta'", "valid parameters: qty, call_delta, put_delta",
      "execution_params.fill_timeout_seconds", "max_concurrent_trades"]),
    (("[grid]\n", "[grid]\nexecution_params.fill_timeout = [10]\n"),
     ["unknown parameter 'execution_params.fill_timeout'", "did you mean 'execution_params.fill_timeout_seconds'"]),
    (('to = "2026-03-03T11:00"', 'to = "2026-03-03T09:00"'), ["period.to must come after period.from"]),
    (('to = "2026-03-03T11:00"', 'to = "yesterday"'), ["period.to 'yesterday' is not a date"]),
    (('from = "2026-03-03T10:00"\nto = "2026-03-03T11:00"', "days = 1"), ["[period] needs exactly two of"]),
    (('y = "profit_target_pct"', 'y = "qty"'),
     ["heatmap.y = 'qty' is not a parameter every combination sets", "use one of call_delta, profit_target_pct"]),
    (('rank_by = "realized_pnl"', 'rank_by = "pnl"'), ["rank_by = 'pnl' is not a figure of summary.json"]),
    (("call_delta = [0.2, 0.3]", "call_delta = [0.2, 1.5]"),
     ["the combination call_delta=1.5, profit_target_pct=20 is refused", "call_delta"]),
    (('strategy = "micro_strangle"', 'strategy = "micro_strangel"'), ["did you mean 'micro_strangle'"]),
])
def test_a_bad_sweep_file_is_refused_before_any_backtest(tmp_path, capsys, change, fragments):
    old, new = change
    assert old in SWEEP
    path = write_sweep(tmp_path, SWEEP.replace(old, new))
    out = tmp_path / "out"
    assert sweep([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"sweep {path}:" in err
    for fragment in fragments:
        assert fragment in err
    assert not out.exists()


def test_workers_and_cluster_together_are_refused(tmp_path, capsys):
    path = write_sweep(tmp_path)
    assert sweep([str(path), "--out", str(tmp_path / "out"), "--workers", "2", "--cluster", "tcp://127.0.0.1:1"]) == 2
    assert "give one of the two" in capsys.readouterr().err


def test_an_out_directory_of_something_else_is_refused(tmp_path, capsys):
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert sweep([str(path), "--out", str(out)]) == 2
    assert f"no {SWEEP_COPY}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_the_example_sweep_file_is_valid_as_shipped():
    from sweep_spec import load_sweep
    spec = load_sweep(ROOT / "sweeps" / "micro_strangle_example.toml", main_module.STRATEGIES)
    assert spec.strategy == "micro_strangle" and len(spec.combinations) == 4 and spec.heatmap is not None


def test_the_daemon_never_imports_dask():
    code = "import main, sys; print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=True)
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# (b) a sweep on local processes
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sweep")
    out = directory / "local"
    assert sweep([str(write_sweep(directory)), "--out", str(out), "--workers", "2"]) == 0
    return out


@pytest.mark.slow
def test_a_local_sweep_has_one_result_per_combination_and_ranks_them(local_sweep):
    rows = results(local_sweep)
    assert len(rows) == COMBINATIONS and len({row["id"] for row in rows}) == COMBINATIONS
    assert {(row["params"]["call_delta"], row["params"]["profit_target_pct"]) for row in rows} == {
        (0.2, 20), (0.2, 40), (0.3, 20), (0.3, 40)}
    assert all(row["status"] == "ok" and row["summary"]["total"]["trades"] >= 1 for row in rows)
    for row in rows:   # each run's own results, as a backtest writes them
        run_dir = local_sweep / RUNS_DIR / row["id"]
        assert json.loads((run_dir / "summary.json").read_text(encoding="utf-8")) == row["summary"]
        assert (run_dir / "trades.csv").exists()
    assert not (local_sweep / SCRATCH_DIR).exists()
    lines = (local_sweep / RANKING_FILE).read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["rank", "call_delta", "profit_target_pct"]
    column = header.index("realized_pnl")
    pnls = [float(line.split(",")[column]) for line in lines[1:]]
    assert len(pnls) == COMBINATIONS and pnls == sorted(pnls, reverse=True)
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3", "4"]
    by_params = {(r["params"]["call_delta"], r["params"]["profit_target_pct"]): r["summary"]["total"]["realized_pnl"]
                 for r in rows}
    assert sorted(by_params.values(), reverse=True) == pnls


@pytest.mark.slow
def test_the_heat_map_has_one_cell_per_pair_of_values(local_sweep):
    svg = (local_sweep / HEATMAP_FILE).read_text(encoding="utf-8")
    assert svg.count("<rect") == 4
    rows = results(local_sweep)
    for row in rows:
        x, y = row["params"]["call_delta"], row["params"]["profit_target_pct"]
        assert f"call_delta={x}, profit_target_pct={y}: " in svg
    page = (local_sweep / HTML_FILE).read_text(encoding="utf-8")
    assert "<svg" in page and "Ranking by realized_pnl" in page and f"{RUNS_DIR}/{rows[0]['id']}/report.html" in page


@pytest.mark.slow
def test_running_a_finished_sweep_again_runs_nothing_and_redraws_the_same_bytes(local_sweep, capsys):
    before = {name: (local_sweep / name).read_bytes() for name in (RANKING_FILE, HEATMAP_FILE, HTML_FILE, RESULTS_FILE)}
    stamps = {row["id"]: (local_sweep / RUNS_DIR / row["id"] / "summary.json").stat().st_mtime_ns
              for row in results(local_sweep)}
    assert sweep([str(local_sweep.parent / "grid.toml"), "--out", str(local_sweep)]) == 0
    assert f"{COMBINATIONS} already done, 0 to run" in capsys.readouterr().err
    assert {name: (local_sweep / name).read_bytes() for name in before} == before
    assert {i: (local_sweep / RUNS_DIR / i / "summary.json").stat().st_mtime_ns for i in stamps} == stamps


@pytest.mark.slow
def test_a_changed_sweep_file_is_refused_on_resume_naming_the_change(local_sweep, tmp_path, capsys):
    changed = write_sweep(tmp_path, SWEEP.replace("call_delta = [0.2, 0.3]", "call_delta = [0.2, 0.35]"))
    before = (local_sweep / RESULTS_FILE).read_bytes()
    assert sweep([str(changed), "--out", str(local_sweep)]) == 2
    err = capsys.readouterr().err
    assert "grid.call_delta was [0.2,0.3], now [0.2,0.35]" in err
    assert (local_sweep / RESULTS_FILE).read_bytes() == before


# ---------------------------------------------------------------------------------------------
# (c) resume after the driver is killed
# ---------------------------------------------------------------------------------------------


def wait_for_line(pipe, prefix: str) -> list[str]:
    """The driver's stderr lines up to the first that starts with ``prefix``: reads wait on the pipe
    (select, bounded per read), never a sleep; the end of the pipe (the driver exited) fails the test."""
    received = b""
    while True:
        lines = received.decode("utf-8", errors="replace").split("\n")[:-1]   # complete lines only
        if any(line.startswith(prefix) for line in lines):
            return lines
        ready, _, _ = select.select([pipe], [], [], LINE_TIMEOUT_SECONDS)
        assert ready, f"no output from the sweep driver in {LINE_TIMEOUT_SECONDS} s; so far: {lines}"
        chunk = os.read(pipe.fileno(), 65536)
        assert chunk, f"the sweep driver ended before {prefix!r}: {lines}"
        received += chunk


@pytest.mark.slow
def test_a_sweep_resumes_after_its_driver_is_killed(tmp_path):
    import psutil   # installed with distributed (requirements.txt)
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, "main.py", "sweep", str(path), "--out", str(out), "--workers", "1"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0)
    try:
        wait_for_line(driver.stderr, f"sweep 1/{COMBINATIONS} ")   # the first result is recorded
        workers = psutil.Process(driver.pid).children(recursive=True)
        driver.send_signal(signal.SIGKILL)
        assert driver.wait(timeout=EXIT_TIMEOUT_SECONDS) == -signal.SIGKILL
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=EXIT_TIMEOUT_SECONDS)
        driver.stderr.close()
    # The pool's workers die with their driver: none is left running a combination into the void.
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []

    first = results(out)
    assert 1 <= len(first) < COMBINATIONS
    finished = {row["id"]: (out / RUNS_DIR / row["id"] / "summary.json").stat().st_mtime_ns for row in first}
    # A driver killed while it wrote a run's files leaves a run directory without a results line.
    from sweep_spec import load_sweep
    spec = load_sweep(path, main_module.STRATEGIES)
    unfinished = next(c.id for c in spec.combinations if c.id not in finished)
    (out / RUNS_DIR / unfinished).mkdir(parents=True, exist_ok=True)
    (out / RUNS_DIR / unfinished / "summary.json").write_text("{\"half\": ", encoding="utf-8")

    resumed = subprocess.run([sys.executable, "main.py", "sweep", str(path), "--out", str(out), "--workers", "2"],
                             cwd=ROOT, capture_output=True, text=True, timeout=EXIT_TIMEOUT_SECONDS)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(first)} already done, {COMBINATIONS - len(first)} to run" in resumed.stderr
    rows = results(out)
    assert sorted(row["id"] for row in rows) == sorted(c.id for c in spec.combinations)   # each exactly once
    assert all(row["status"] == "ok" for row in rows)
    assert {i: (out / RUNS_DIR / i / "summary.json").stat().st_mtime_ns for i in finished} == finished
    redone = json.loads((out / RUNS_DIR / unfinished / "summary.json").read_text(encoding="utf-8"))
    assert redone == next(row["summary"] for row in rows if row["id"] == unfinished)
    assert len((out / RANKING_FILE).read_text(encoding="utf-8").splitlines()) == 1 + COMBINATIONS


# ---------------------------------------------------------------------------------------------
# (d) a sweep on a local Dask cluster
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_on_a_dask_cluster_gives_the_local_figures(local_sweep, tmp_path):
    distributed = pytest.importorskip("distributed")
    # The workers are spawned processes: they inherit this process's import path (the repository's
    # root, from pytest.ini), the local equivalent of PYTHONPATH=<checkout> on a remote worker.
    assert str(ROOT) in [os.path.abspath(entry) for entry in sys.path]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = tmp_path / "dask"
        assert sweep([str(local_sweep.parent / "grid.toml"), "--out", str(out), "--cluster",
                      cluster.scheduler_address]) == 0
    assert figures_by_id(out) == figures_by_id(local_sweep)
    assert (out / RANKING_FILE).read_bytes() == (local_sweep / RANKING_FILE).read_bytes()
    assert (out / HEATMAP_FILE).read_bytes() == (local_sweep / HEATMAP_FILE).read_bytes()
    for row in results(out):
        assert (out / RUNS_DIR / row["id"] / "trades.csv").read_bytes() == \
            (local_sweep / RUNS_DIR / row["id"] / "trades.csv").read_bytes()
