"""Time for the whole project, injected everywhere.

This is the only module that reads the wall clock or sleeps for real. Product code,
the simulator and the tests receive a ``Clock`` and ask it for ``now()``; this is what
lets a 48-hour paper-trading run finish in minutes and lets tests move time by hand.

Two implementations:

* ``RealClock``      - the wall clock (production, testnet).
* ``SimulatedClock`` - starts at a chosen instant. Lock-step (``speed=0``, the default):
  time moves only when someone waits (``sleep()``) or moves it (``advance()``), so the
  daemon's own work costs no simulated time and a run's decisions never depend on how fast
  the machine is; ``pace=N`` additionally makes each wait take ``1/N`` of its length in real
  seconds (``--speed N`` with the embedded simulator). Wall-coupled (``speed=N``): time
  follows the wall clock scaled by N, for a simulator running in a process of its own.
"""
from __future__ import annotations

import threading
import time as _time
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What every service may ask of time."""

    def now(self) -> float:
        """Seconds since the Unix epoch (UTC)."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, as the exchange counts them."""

    def monotonic(self) -> float:
        """A never-decreasing number of seconds, for measuring intervals."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""

    def utcnow(self) -> datetime:
        """``now()`` as an aware UTC datetime."""


def to_utc_datetime(epoch_seconds: float) -> datetime:
    """Aware UTC datetime for an epoch timestamp (pure helper)."""
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)


def iso_utc(epoch_seconds: float) -> str:
    """``2026-05-09T07:35:25.123Z`` for an epoch timestamp (milliseconds kept).

    The one spelling of an instant in every file the daemon writes for people or machines
    (alerts, health and event lines, the trades snapshot).
    """
    moment = to_utc_datetime(epoch_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class RealClock:
    """The wall clock."""

    def now(self) -> float:
        return _time.time()

    def now_ms(self) -> int:
        return int(_time.time() * 1000)

    def monotonic(self) -> float:
        return _time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            _time.sleep(seconds)

    def utcnow(self) -> datetime:
        return to_utc_datetime(self.now())

    def wall_time(self) -> float:
        """Real seconds since the epoch; the same as ``now()`` here."""
        return _time.time()

    def __repr__(self) -> str:
        return "RealClock()"


class SimulatedClock:
    """A clock that starts at ``start`` and runs ``speed`` times faster than real time.

    ``speed=0`` (the default) means simulated time only moves when ``advance()`` or
    ``sleep()`` is called, which is what deterministic tests want: a ``sleep(4)`` in a
    retry back-off then costs no wall time at all and moves the clock by exactly 4 s.

    With ``speed > 0`` the clock follows the wall clock scaled by ``speed``; ``sleep``
    then waits ``seconds / speed`` real seconds, so a daemon loop that sleeps its poll
    interval runs ``speed`` times faster. ``advance`` still works and adds an offset.
    Thread-safe: the simulator's HTTP threads and the daemon's monitor read it at once.
    """

    def __init__(self, start: float | None = None, speed: float = 0.0, *, pace: float = 0.0) -> None:
        if speed < 0:
            raise ValueError(f"SimulatedClock speed must be >= 0, got {speed!r}")
        if pace < 0 or (pace > 0 and speed > 0):
            raise ValueError(f"SimulatedClock pace must be >= 0 and only paces a lock-step clock (speed 0), "
                             f"got pace={pace!r} speed={speed!r}")
        self._lock = threading.Lock()
        self._start = float(start if start is not None else _time.time())
        self._speed = float(speed)
        self._pace = float(pace)
        self._anchor_real = _time.monotonic()
        self._offset = 0.0
        self._last = self._start

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def pace(self) -> float:
        """Simulated seconds per real second of waiting, on a lock-step clock (0: no waiting)."""
        return self._pace

    @property
    def lockstep(self) -> bool:
        """True when time moves only by ``sleep``/``advance`` (``speed`` 0)."""
        return self._speed == 0

    def set_pace(self, pace: float) -> None:
        """Pace the waits of a lock-step clock: ``sleep(s)`` also waits ``s / pace`` real seconds."""
        if pace < 0 or self._speed != 0:
            raise ValueError(f"only a lock-step clock (speed 0) is paced, with pace >= 0; got pace={pace!r}")
        self._pace = float(pace)

    def _read(self) -> float:
        if self._speed == 0:
            value = self._start + self._offset   # lock-step: no wall-clock reading (the same sum)
        else:
            value = self._start + (_time.monotonic() - self._anchor_real) * self._speed + self._offset
        # Never let time go backwards, whatever the float arithmetic does.
        if value < self._last:
            value = self._last
        self._last = value
        return value

    def now(self) -> float:
        if self._speed == 0:
            # Lock-step: only ``advance``/``set_time``/``set_speed`` move time, and each ends in
            # ``_read`` under the lock, which leaves the reading in ``_last``; one attribute read
            # needs no lock (the daemon and the simulator ask several hundred thousand times a
            # simulated day).
            return self._last
        with self._lock:
            return self._read()

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def monotonic(self) -> float:
        return self.now()

    def utcnow(self) -> datetime:
        return to_utc_datetime(self.now())

    def advance(self, seconds: float) -> float:
        """Move simulated time forward by ``seconds``; returns the new ``now()``."""
        if seconds < 0:
            raise ValueError("a clock cannot be moved backwards")
        with self._lock:
            self._offset += seconds
            return self._read()

    def set_time(self, epoch_seconds: float) -> None:
        """Jump forward to an absolute instant (never backwards)."""
        with self._lock:
            current = self._read()
            if epoch_seconds < current:
                raise ValueError("a clock cannot be moved backwards")
            self._offset += epoch_seconds - current
            self._read()

    def set_speed(self, speed: float) -> None:
        """Change the speed factor from now on, keeping time continuous."""
        if speed < 0:
            raise ValueError(f"SimulatedClock speed must be >= 0, got {speed!r}")
        with self._lock:
            current = self._read()
            self._start = current
            self._offset = 0.0
            self._anchor_real = _time.monotonic()
            self._speed = float(speed)
            if self._speed > 0:
                self._pace = 0.0

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._speed == 0:
            if self._pace > 0:
                _time.sleep(seconds / self._pace)   # pacing only: the same instants, just later
            self.advance(seconds)
            return
        _time.sleep(seconds / self._speed)

    def wall_time(self) -> float:
        """Real seconds since the epoch (for benchmarks and log rotation only)."""
        return _time.time()

    def __repr__(self) -> str:
        mode = f"pace={self._pace}" if self._speed == 0 else f"speed={self._speed}"
        return f"SimulatedClock(now={self.now():.3f}, {mode})"


def wall_seconds() -> float:
    """A real monotonic reading, for benchmarks that measure wall time."""
    return _time.perf_counter()


def process_cpu_seconds() -> float:
    """CPU time of this process, for benchmarks."""
    return _time.process_time()
