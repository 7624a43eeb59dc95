"""Issue 9, finding 3: bursts of SIGINT/SIGTERM never hang the daemon.

systemd stopping a cgroup, ``timeout``, or Ctrl-C twice on a process group deliver two or
three stop signals within milliseconds. The old handler set a ``threading.Event`` and a
second signal arriving inside it deadlocked the process with its state lock held, so the
supervisor's restart exited 3.

Here the real daemon (``python main.py`` on the embedded simulator, each chain of runs in
its own ``STATE_DIR``/``LOG_DIR``) receives a seeded random burst of 2-3 mixed
SIGINT/SIGTERM, back to back, milliseconds apart or a human double Ctrl-C apart, aimed at
one of three moments:

* ``startup``: a random delay after its first log line (the handlers are installed
  before it), while it opens the simulator, the store and reconciles;
* ``tick``: right after a request of a poll shows in the DEBUG log, inside the tick;
* ``sleep``: right after a status line (the last thing a tick does), at a slow speed so
  the monitor is waiting between ticks.

In a third of the bursts the last signal is held back until the daemon logs ``stopped
cleanly``: it then arrives while the process exits, after its handlers are undone (the old
code restored the default handlers there, so that signal killed an exiting daemon or
printed a KeyboardInterrupt traceback).

Every run must exit 0 within 10 s of the burst's first signal, log ``stopping: SIG...``
and ``stopped cleanly``, and print no traceback; the next run on the same state directory
is the proof that the lock was released (a held lock exits 3). Two chains run at once to
keep the file well under a minute and a half on a small machine.

Real time is used only for the subprocess deadlines, read through ``clock.wall_seconds``;
the test never sleeps: it waits on the process (``Popen.wait`` with a timeout) or on its
output (a queue fed by a reader thread).
"""
from __future__ import annotations

import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from clock import wall_seconds
from config import KNOWN_VARIABLES
from instance_lock import InstanceLock

REPO_ROOT = Path(__file__).resolve().parents[2]
MAIN = REPO_ROOT / "main.py"

SEED = 9
BURSTS = 60                     # runs; >= 50 of them must see 2+ signals (issue 9 acceptance)
MIN_BURSTS = 50
CHAINS = 2                      # daemons running at once, each on its own state directory
PHASES = ("startup", "tick", "sleep")
EXIT_DEADLINE_SECONDS = 10.0    # from the burst's first signal
OUTPUT_BOUND_SECONDS = 60.0     # a start-up on a loaded machine; only ever a bound, never a wait
STATUS_LINE = re.compile(r" app: status ")
REQUEST_LINE = re.compile(r" coincall_client: GET .* attempt \d+:")
STOPPING_LINE = re.compile(r" app: stopping: (SIGINT|SIGTERM)\b")
STOPPED_LINE = re.compile(r" app: stopped cleanly")


@dataclass(frozen=True)
class Burst:
    """One run: where to aim, how long to wait first, and the signals with the gaps between them."""

    index: int
    phase: str
    delay: float
    signals: tuple[int, ...]
    gaps: tuple[float, ...]
    tail: bool                  # the last signal waits for "stopped cleanly" (then its gap)

    @property
    def speed(self) -> str:
        # At 5x the monitor waits 2 real seconds between polls (0.4 s while busy): a burst
        # aimed at the sleep lands in it; elsewhere 60x keeps the runs short.
        return "5" if self.phase == "sleep" else "60"

    def describe(self) -> str:
        names = "+".join(signal.Signals(s).name for s in self.signals)
        gaps = ", ".join(f"{gap:.3f}" for gap in self.gaps)
        tail = ", last at the exit" if self.tail else ""
        return f"burst {self.index} ({self.phase}, delay {self.delay:.3f} s, {names}, gaps {gaps}{tail})"


def plan_bursts(seed: int, count: int) -> list[Burst]:
    rng = random.Random(seed)
    bursts = []
    for index in range(count):
        phase = PHASES[index % len(PHASES)]
        size = rng.choice((2, 3))
        signals = tuple(rng.choice((signal.SIGINT, signal.SIGTERM)) for _ in range(size))
        gaps = tuple(random_gap(rng) for _ in range(size - 1))
        delay = rng.uniform(0.0, 0.35) if phase == "startup" else rng.uniform(0.0, 0.02)
        bursts.append(Burst(index, phase, delay, signals, gaps, tail=rng.random() < 1 / 3))
    return bursts


def random_gap(rng: random.Random) -> float:
    """Back to back (one kill(1) after another), milliseconds apart, or a double Ctrl-C apart."""
    draw = rng.random()
    if draw < 0.45:
        return 0.0
    return rng.uniform(0.001, 0.05) if draw < 0.85 else rng.uniform(0.05, 0.3)


def daemon_env(workdir: Path) -> dict[str, str]:
    """The process environment without any of our settings, then a private state and log dir."""
    env = {key: value for key, value in os.environ.items() if key not in KNOWN_VARIABLES}
    env.update(TRADING_ENVIRONMENT="sim", STATE_DIR=str(workdir / "state"), LOG_DIR=str(workdir / "logs"),
               PYTHONUNBUFFERED="1")
    return env


class Daemon:
    """``python main.py`` with its stderr read line by line on a thread (so it never blocks)."""

    def __init__(self, burst: Burst, workdir: Path) -> None:
        argv = [sys.executable, str(MAIN), "--speed", burst.speed, "--run-for", "100000"]
        if burst.phase == "tick":
            argv += ["--log-level", "DEBUG"]
        self.proc = subprocess.Popen(argv, cwd=workdir, env=daemon_env(workdir), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     errors="replace")
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"stderr-{self.proc.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, pattern: re.Pattern[str] | None, bound: float = OUTPUT_BOUND_SECONDS) -> bool:
        """Block until a line matching ``pattern`` (any line for None) is read; False at EOF or the bound."""
        deadline = wall_seconds() + bound
        while True:
            remaining = deadline - wall_seconds()
            if remaining <= 0:
                return False
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                return False
            if line is None:
                return False
            if pattern is None or pattern.search(line):
                return True

    def hold(self, seconds: float) -> None:
        """Let ``seconds`` of real time pass by waiting on the process (it must not exit by itself)."""
        if seconds > 0:
            try:
                self.proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                pass

    def text(self) -> str:
        self._reader.join(timeout=OUTPUT_BOUND_SECONDS)
        return "".join(self.lines)


def aim(daemon: Daemon, burst: Burst) -> str | None:
    """Wait for the burst's moment; a problem text if the daemon never got there."""
    if not daemon.wait_for_line(None):
        return "no log line at all"
    if burst.phase == "startup":
        daemon.hold(burst.delay)
        return None
    if not daemon.wait_for_line(STATUS_LINE):
        return "no status line"
    if burst.phase == "tick" and not daemon.wait_for_line(REQUEST_LINE):
        return "no request after the status line"
    daemon.hold(burst.delay)
    return None


def fire(daemon: Daemon, burst: Burst) -> tuple[float, int]:
    """Send the burst; returns when its first signal went out and how many reached a live process."""
    first = wall_seconds()
    delivered = 0
    last = len(burst.signals) - 1
    for position, signum in enumerate(burst.signals):
        if position == last and burst.tail:
            daemon.wait_for_line(STOPPED_LINE, bound=EXIT_DEADLINE_SECONDS)
            daemon.hold(burst.gaps[position - 1] / 10)
        elif position:
            daemon.hold(burst.gaps[position - 1])
        if daemon.proc.poll() is None:
            delivered += 1
        daemon.proc.send_signal(signum)   # a no-op once the process is reaped
    return first, delivered


def run_burst(burst: Burst, workdir: Path) -> tuple[list[str], str, int]:
    """One daemon, one burst: the problems found (empty = clean), where it landed, signals delivered."""
    daemon = Daemon(burst, workdir)
    problems: list[str] = []
    missed = aim(daemon, burst)
    if missed is not None or daemon.proc.poll() is not None:
        daemon.proc.kill()
        daemon.proc.wait()
        text = daemon.text()
        return [f"{burst.describe()}: {missed or 'exited before the burst'} (exit {daemon.proc.returncode}); "
                f"stderr ends:\n{text[-3000:]}"], "missed", 0
    first, delivered = fire(daemon, burst)
    try:
        code = daemon.proc.wait(timeout=max(0.0, first + EXIT_DEADLINE_SECONDS - wall_seconds()))
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        daemon.proc.wait()
        code = None
    text = daemon.text()
    if code is None:
        problems.append(f"did not exit within {EXIT_DEADLINE_SECONDS:g} s of the first signal (killed)")
    elif code != 0:
        problems.append(f"exit code {code}, expected 0")
    if "Traceback" in text:
        problems.append("a traceback on stderr")
    if code is not None and not STOPPING_LINE.search(text):
        problems.append("no 'stopping: SIGINT/SIGTERM' line")
    if code == 0 and "stopped cleanly" not in text:
        problems.append("no 'stopped cleanly' line")
    landed = where_it_landed(text)
    if problems:
        return [f"{burst.describe()}: " + "; ".join(problems) + f"; stderr ends:\n{text[-3000:]}"], landed, delivered
    return [], landed, delivered


def where_it_landed(text: str) -> str:
    """``startup`` when the daemon stopped before its first status line, else ``running``."""
    before_stop = text.split(" app: stopping:", 1)[0]
    return "running" if STATUS_LINE.search(before_stop) else "startup"


def run_chain(bursts: list[Burst], workdir: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """The bursts one after another on one state directory; then the lock must be free."""
    workdir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    landings: list[tuple[str, int]] = []
    for burst in bursts:
        found, landed, delivered = run_burst(burst, workdir)
        problems += found
        landings.append((landed, delivered))
    lock = InstanceLock(workdir / "state")
    if not lock.acquire():
        problems.append(f"{workdir}: the state directory's lock is still held after the last run")
    lock.release()
    return problems, landings


@pytest.mark.slow
def test_bursts_of_stop_signals_always_end_in_a_clean_exit(tmp_path):
    bursts = plan_bursts(SEED, BURSTS)
    assert all(2 <= len(b.signals) <= 3 for b in bursts)
    assert {s for b in bursts for s in b.signals} == {signal.SIGINT, signal.SIGTERM}
    chains = [bursts[i::CHAINS] for i in range(CHAINS)]
    with ThreadPoolExecutor(max_workers=CHAINS) as pool:
        results = list(pool.map(run_chain, chains, [tmp_path / f"chain{i}" for i in range(CHAINS)]))
    problems = [problem for found, _ in results for problem in found]
    assert not problems, f"{len(problems)} of {len(bursts)} bursts failed:\n" + "\n\n".join(problems)

    landings = dict.fromkeys(PHASES, 0)
    real_bursts = 0
    for chain, (_, landed) in zip(chains, results):
        for burst, (where, delivered) in zip(chain, landed):
            real_bursts += delivered >= 2          # the process was still there for 2+ signals
            if burst.phase == "startup" and where == "startup":
                landings["startup"] += 1
            elif burst.phase != "startup" and where == "running":
                landings[burst.phase] += 1
    assert real_bursts >= MIN_BURSTS, f"only {real_bursts} runs received 2 or more signals"
    # Aimed bursts mostly land where aimed; a few in start-up and in the running loop are
    # the minimum for the run to have exercised each part.
    assert landings["startup"] >= 3 and landings["tick"] >= 3 and landings["sleep"] >= 3, landings
