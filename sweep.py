"""``python main.py sweep FILE.toml``: one strategy over one period, for every combination of parameters.

Why it is built this way (issue 11, the sweep slice; the file format is in docs/SWEEPS.md):

* **Resumable.** Each finished combination is one fsynced line of ``results.jsonl``; that line is the
  unit of resume. Re-running the same command on the same ``--out`` skips every combination with a
  line, removes the run directory of any that has none (it did not finish) and runs it again. The
  sweep file is copied into ``--out``; a resume whose file changes what runs is refused, naming the
  change (only the presentation keys, ``rank_by``, ``rank_order`` and ``[heatmap]``, may change).
* **Workers own nothing but a scratch directory.** The worker function (``run_combination``, the same
  for local processes and Dask) rebuilds the config from picklable values, runs the backtest in a
  scratch directory, and returns the result files' text; only the driver writes ``--out``. So a Dask
  worker on another machine needs the same checkout, not the same filesystem, and a worker left running
  by a killed driver can never write into a run the resumed driver has started again.

The sweep file is read and validated by ``sweep_spec``; the ranking, heat map and page are written
by ``sweep_report``.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import io
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TextIO

from atomic_file import write_text_atomically
from backtest import SUMMARY_FILE, BacktestPeriod, run_backtest
from clock import Clock, wall_seconds
from errors import ConfigError
from instance_lock import InstanceLock
from stop_flag import StopFlag
from sweep_report import HTML_FILE, RANKING_FILE, RUNS_DIR, describe, ranking_table, write_outputs
from sweep_spec import PRESENTATION_KEYS, Combination, Scalar, SweepSpec, build_config, canonical, format_params

logger = logging.getLogger(__name__)

SWEEP_COPY = "sweep.toml"
RESULTS_FILE = "results.jsonl"
SCRATCH_DIR = "scratch"
RUN_LOG = "trading.log"
LOG_TAIL_LINES = 15
WAIT_SLICE_SECONDS = 0.5        # how often the driver looks at its stop flag while runs are working
PR_SET_PDEATHSIG = 1            # prctl(2) option: the signal a process gets when its parent dies
EXIT_OK = 0
EXIT_INCOMPLETE = 1


# ---------------------------------------------------------------------------------------------
# The worker: one combination, in a local process or on a Dask worker
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What a worker needs for one combination: plain, picklable values (the factory travels by reference)."""

    run_id: str
    strategy: str
    factory: Callable[..., Any]
    params: Mapping[str, Scalar]
    seed: int
    start: float
    end: float
    poll: float
    scenario: str | None
    scratch_root: str | None    # None: the worker's own temporary directory (a Dask worker elsewhere)


def run_combination(job: Job) -> dict[str, Any]:
    """Run one combination's backtest in a scratch directory and return its result.

    The run's own failure (a refused config, an exception, a non-zero exit) is a result with
    ``status`` "failed" and its ``error``, never an exception: one bad combination must not stop
    the sweep. The result: ``id``, ``status``, ``error``, ``summary`` (summary.json), ``files``
    (name -> bytes of every file the backtest wrote at the top of its out dir: summary.json,
    trades.csv, report.html) and ``wall_seconds``. The state and log stay in the scratch
    directory, which is removed: only the driver writes the sweep's directory.
    """
    started = wall_seconds()
    scratch = Path(tempfile.mkdtemp(prefix=f"{job.run_id}-", dir=job.scratch_root))
    out_dir = scratch / "run"
    result: dict[str, Any] = {"id": job.run_id, "status": "failed", "error": None, "summary": None, "files": {}}
    try:
        config = build_config(job.strategy, job.factory, job.params)
        with contextlib.redirect_stdout(io.StringIO()):   # the backtest's own summary table
            code = run_backtest([config], BacktestPeriod(job.start, job.end), seed=job.seed, poll=job.poll,
                                out_dir=out_dir, stop=StopFlag(), scenario=job.scenario,
                                progress_stream=io.StringIO(), setup_logging=_run_logging)
        if code != EXIT_OK:
            result["error"] = f"the backtest exited with {code}; the end of its log:\n{_log_tail(out_dir)}"
        else:
            files = {path.name: path.read_bytes() for path in sorted(out_dir.iterdir()) if path.is_file()}
            result.update(status="ok", files=files, summary=json.loads(files[SUMMARY_FILE].decode("utf-8")))
    except Exception as exc:  # noqa: BLE001 - any failure of one run is that run's result
        logger.exception("combination %s failed", job.run_id)
        result["error"] = f"{type(exc).__name__}: {exc}\n{_log_tail(out_dir)}".rstrip()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result["wall_seconds"] = round(wall_seconds() - started, 1)
    return result


def _run_logging(log_dir: Path, _clock: Clock) -> Callable[[], None]:
    """The run's whole log in its own file (INFO and above), without time stamps (a sweep
    reads its runs' logs for their errors, not their times); returns the undo."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / RUN_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def undo() -> None:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(previous)

    return undo


def _log_tail(out_dir: Path) -> str:
    try:
        lines = (out_dir / "logs" / RUN_LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _local_worker_init(driver_pid: int) -> None:
    """Start of each local worker process: Ctrl-C is the driver's to handle, and the worker dies with it.

    A pool worker whose driver was killed (SIGKILL leaves no chance to shut the pool down) would
    otherwise finish its run and then wait forever on the pool's queue. On Linux the kernel sends
    it SIGKILL when the driver dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere such a worker ends
    when its current run ends. Its scratch directory is under the sweep's directory, which the
    next driver clears, and it never writes anything else.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # not the driver's handler, inherited by fork
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != driver_pid:   # the driver died before the line above took effect
        os._exit(1)


# ---------------------------------------------------------------------------------------------
# The driver: the sweep's directory, the executors, resume
# ---------------------------------------------------------------------------------------------


class SweepStopped(Exception):
    """The executor itself failed (a worker process died, the cluster refused a task): stop, resumable."""


def default_sweep_out(path: Path) -> Path:
    return Path("backtests") / "sweeps" / path.stem


def run_sweep(spec: SweepSpec, out_dir: Path, *, workers: int | None, cluster: str | None, stop: StopFlag,
              stdout: TextIO, stderr: TextIO) -> int:
    """Run every combination not yet in ``results.jsonl``, then write the ranking, heat map and page.

    Returns 0 when every combination has a result (failed ones included), 1 when the sweep was
    stopped (a signal, a failed executor) and can be resumed. Refusals (a used directory of
    another sweep, a changed sweep file, another driver on the directory) raise ``ConfigError``
    before anything runs.
    """
    check_out_dir(spec, out_dir)
    lock = InstanceLock(out_dir)
    if not lock.acquire():
        raise ConfigError(f"--out {str(out_dir)!r} is in use by another sweep (pid {lock.holder() or '?'})")
    try:
        write_sweep_copy(spec, out_dir)
        done = {row["id"] for row in read_results(out_dir / RESULTS_FILE)}
        pending = [c for c in spec.combinations if c.id not in done]
        for combination in pending:   # a run directory without its results line did not finish
            shutil.rmtree(out_dir / RUNS_DIR / combination.id, ignore_errors=True)
        shutil.rmtree(out_dir / SCRATCH_DIR, ignore_errors=True)
        already = len(spec.combinations) - len(pending)
        stderr.write(f"sweep {spec.path}: {len(spec.combinations)} combinations, {already} already done, "
                     f"{len(pending)} to run; results in {out_dir}\n")
        complete = True
        if pending:
            try:
                complete = execute(spec, pending, out_dir, workers=workers, cluster=cluster, stop=stop, stderr=stderr)
            except SweepStopped as exc:
                stderr.write(f"sweep stopped: {exc}\n")
                complete = False
            finally:
                shutil.rmtree(out_dir / SCRATCH_DIR, ignore_errors=True)
        rows = read_results(out_dir / RESULTS_FILE)
        ranked = write_outputs(spec, out_dir, rows)
        stdout.write(ranking_table(spec, ranked) + "\n")
        failed = sum(1 for row in rows if row["status"] != "ok")
        if failed:
            stdout.write(f"{failed} run(s) failed: their errors are in {out_dir / RESULTS_FILE} and "
                         f"{out_dir / HTML_FILE}\n")
        stdout.write(f"ranking: {out_dir / RANKING_FILE}; page: {out_dir / HTML_FILE}\n")
        if not complete:
            stdout.write(f"incomplete: {len(rows)} of {len(spec.combinations)} combinations have a result; run the "
                         f"same command again to resume\n")
            return EXIT_INCOMPLETE
        return EXIT_OK
    finally:
        lock.release()


def check_out_dir(spec: SweepSpec, out_dir: Path) -> None:
    """An empty or new ``--out``, or one of this same sweep (resume); a changed sweep is refused by name."""
    copy = out_dir / SWEEP_COPY
    if not copy.exists():
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ConfigError(f"--out {str(out_dir)!r} already holds files but no {SWEEP_COPY}: choose an empty "
                              f"directory for a new sweep")
        return
    try:
        previous = tomllib.loads(copy.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--out {str(out_dir)!r}: its {SWEEP_COPY} cannot be read ({exc})") from None
    changes = document_changes(previous, spec.document)
    if changes:
        raise ConfigError(f"sweep {spec.path} differs from the sweep in {str(out_dir)!r} ({'; '.join(changes)}): "
                          f"its results would not be this sweep's. Undo the change, or give another --out for a "
                          f"new sweep (only rank_by, rank_order and [heatmap] may change on a resume)")


def document_changes(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = "") -> list[str]:
    """What differs between two sweep documents, key by key, presentation keys left out."""
    changes = []
    for key in sorted(set(before) | set(after)):
        if not prefix and key in PRESENTATION_KEYS:
            continue
        name = f"{prefix}{key}"
        old, new = before.get(key), after.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changes.extend(document_changes(old, new, f"{name}."))
        elif key not in after:
            changes.append(f"{name} was {canonical(old)}, now absent")
        elif key not in before:
            changes.append(f"{name} is new: {canonical(new)}")
        elif canonical(old) != canonical(new):
            changes.append(f"{name} was {canonical(old)}, now {canonical(new)}")
    return changes


def write_sweep_copy(spec: SweepSpec, out_dir: Path) -> None:
    write_text_atomically(out_dir / SWEEP_COPY, spec.text, mode=0o644)


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every complete line of ``results.jsonl``; a last line cut by a crash is removed from the file.

    A line is appended and fsynced as one write, so only the last one can be incomplete. A broken
    line before it is not a crash's doing: it is refused, naming the line, rather than dropped.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    end = 0
    for number, line in enumerate(data.splitlines(keepends=True), 1):
        if not line.endswith(b"\n"):
            break
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise ValueError("not a result")
        except ValueError as exc:
            raise ConfigError(f"{path} line {number} is not a result ({exc}): fix or remove that line") from None
        end += len(line)
        if row["id"] not in seen:
            seen.add(row["id"])
            rows.append(row)
    if end < len(data):
        logger.warning("%s: removing an incomplete last line (a crash while it was written)", path)
        with path.open("r+b") as handle:
            handle.truncate(end)
            os.fsync(handle.fileno())
    return rows


def append_result(path: Path, row: Mapping[str, Any]) -> None:
    """One line, written and fsynced at once: the unit of resume."""
    line = (json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def record(out_dir: Path, combination: Combination, result: Mapping[str, Any]) -> dict[str, Any]:
    """The run's files under ``runs/<id>/``, then its line in ``results.jsonl`` (the line last)."""
    run_dir = out_dir / RUNS_DIR / combination.id
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    for name, data in sorted(result.get("files", {}).items()):
        if Path(name).name != name:
            raise SweepStopped(f"a worker returned a file named {name!r}")
        (run_dir / name).write_bytes(data)
    if result.get("error"):
        (run_dir / "error.txt").write_text(str(result["error"]) + "\n", encoding="utf-8")
    row = {"id": combination.id, "params": dict(combination.params), "seed": combination.seed,
           "status": result.get("status", "failed"), "error": result.get("error"), "summary": result.get("summary"),
           "wall_seconds": result.get("wall_seconds")}
    append_result(out_dir / RESULTS_FILE, row)
    return row


def job_of(spec: SweepSpec, combination: Combination, scratch_root: str | None) -> Job:
    return Job(run_id=combination.id, strategy=spec.strategy, factory=spec.factory, params=dict(combination.params),
               seed=combination.seed, start=spec.period.start, end=spec.period.end, poll=spec.poll,
               scenario=spec.scenario, scratch_root=scratch_root)


@contextlib.contextmanager
def open_executor(workers: int | None, cluster: str | None,
                  stderr: TextIO) -> Iterator[concurrent.futures.Executor]:
    """Local processes (``workers``, default the CPU count) or the Dask cluster at ``cluster``.

    Dask is imported here only: the daemon and a local sweep never load it.
    """
    if cluster is None:
        count = workers or os.cpu_count() or 1
        stderr.write(f"executor: {count} local process(es)\n")
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=count, initializer=_local_worker_init,
                                                      initargs=(os.getpid(),))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    import distributed   # lazy: see the docstring
    client_class: Any = distributed.Client   # distributed has no annotations: typed as Any, on purpose
    try:
        client = client_class(cluster, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"--cluster {cluster}: cannot reach the Dask scheduler ({exc})") from None
    try:
        count = len(client.scheduler_info().get("workers", {}))
        stderr.write(f"executor: Dask cluster {cluster} ({count} worker(s) now)\n")
        executor = client.get_executor(pure=False)
        try:
            yield executor
        finally:
            executor.shutdown(wait=False)
    finally:
        client.close()


def execute(spec: SweepSpec, pending: Sequence[Combination], out_dir: Path, *, workers: int | None,
            cluster: str | None, stop: StopFlag, stderr: TextIO) -> bool:
    """Run ``pending``, recording each result as it arrives; False when a stop cut the sweep short.

    A stop (SIGINT/SIGTERM) submits nothing more and cancels what has not started; runs already
    working on local processes finish and are recorded (on Dask they are dropped). Everything not
    recorded runs on the next start.
    """
    scratch = None if cluster is not None else str((out_dir / SCRATCH_DIR).resolve())
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    total, finished = len(spec.combinations), len(spec.combinations) - len(pending)
    with open_executor(workers, cluster, stderr) as executor:
        futures = {executor.submit(run_combination, job_of(spec, c, scratch)): c for c in pending}
        remaining = set(futures)
        stopping = False
        while remaining:
            if stop.is_set and not stopping:
                stopping = True
                cancelled = sum(1 for future in remaining if future.cancel())
                stderr.write(f"sweep stopping ({stop.reason}): {cancelled} combination(s) not started are left for "
                             f"the next run; waiting for the running ones\n")
                remaining = {future for future in remaining if not future.cancelled()}
            done, remaining = concurrent.futures.wait(remaining, timeout=WAIT_SLICE_SECONDS,
                                                      return_when=concurrent.futures.FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: futures[f].id):
                if future.cancelled():
                    continue
                combination = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - the executor's failure, not the run's
                    hint = (" If the workers cannot import 'sweep' or 'strategies', start them with the checkout on "
                            "PYTHONPATH (docs/SWEEPS.md)." if cluster is not None else "")
                    raise SweepStopped(f"combination {combination.id} ({format_params(combination.params)}, "
                                       f"seed {combination.seed}) could not run: {type(exc).__name__}: {exc}."
                                       f"{hint}") from exc
                row = record(out_dir, combination, result)
                finished += 1
                stderr.write(f"sweep {finished}/{total} {combination.id} {format_params(combination.params)} seed "
                             f"{combination.seed}: {describe(row, spec.rank_by)}\n")
                stderr.flush()
    return not stopping
