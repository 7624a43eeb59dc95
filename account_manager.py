"""Account snapshots and the monitor loop that drives the daemon (BEHAVIOUR.md 6.0, 7.1, 7.3).

Why it looks the way it does:

* A snapshot is the account summary AND the positions, both fetched successfully. A
  failed positions call must never read as a flat account (BEHAVIOUR.md 8 row 13): a
  strategy that believes it is flat opens a second trade, an exit that sees no position
  never fires. Any failure therefore raises ``SnapshotError`` and no snapshot exists.
* The exchange speaks camelCase with numbers that are sometimes JSON strings (API.md 7).
  Exactly one adapter (``AccountManager``) turns those payloads into the frozen values
  below; nothing else in the product reads raw position dictionaries.
* Position greeks are ambiguous on the exchange (API.md 12 #4). The adapter normalises
  them to position level (already x qty x sign) whatever the configured payload mode, so
  every consumer reads one meaning and the net greeks are a plain sum.
* ``PositionMonitor`` is the one thread of the daemon. It never sleeps inside a tick; it
  waits between ticks on the injected clock in short slices so ``stop()`` or the daemon's
  stop flag (``set_stop_check``: a signal handler only sets a plain flag, main.StopFlag) is
  noticed quickly, and it isolates every callback so one broken strategy cannot starve the
  others.
* An exchange that stays unreachable is an operator's problem: ``AccountManager.alert_on_outages``
  turns the client's ``Reachability`` outage events into the ``exchange_unreachable``
  (CRITICAL) and ``exchange_recovered`` alerts. The monitor keeps polling while the exchange
  is down (backed off), which is what measures the outage when no trade is active.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from alerts import iso_utc, send_alert
from clock import Clock
from coincall_client import Reachability, ReachabilityEvent
from errors import ConfigError, SnapshotError

logger = logging.getLogger(__name__)

POSITION_GREEK_MODES = ("per_position", "per_contract")
LONG = "long"
SHORT = "short"
GREEK_NAMES = ("delta", "gamma", "theta", "vega")

# tradeSide codes of API.md 0 #9 (1 = BUY/long, 2 = SELL/short).
_TRADE_SIDES: dict[str, str] = {"1": LONG, "2": SHORT, "BUY": LONG, "SELL": SHORT}

# Consecutive failures of one callback that raise a health warning (BEHAVIOUR.md 7.1).
CALLBACK_FAILURE_WARN_AFTER = 3
# Reachability back-off of BEHAVIOUR.md 7.3: poll every min(3 x poll interval, 60 s) while DOWN.
DOWN_POLL_FACTOR = 3.0
DOWN_POLL_CAP_SECONDS = 60.0
# Float slack when comparing elapsed clock seconds with an interval.
_SCHEDULE_EPSILON = 1e-6


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionSnapshot:
    """One exchange position at snapshot time.

    ``qty`` is the magnitude (>= 0) and ``side`` the direction, taken from ``tradeSide``
    only (API.md 7.2). ``unrealized_pnl`` and ``roi`` are mark based. Greeks are position
    level: per-contract greek x ``signed_qty``.
    """

    position_id: int
    symbol: str
    qty: float
    side: str
    signed_qty: float
    entry_price: float
    mark_price: float
    unrealized_pnl: float
    roi: float
    delta: float
    gamma: float
    theta: float
    vega: float
    timestamp: float


@dataclass(frozen=True)
class AccountSnapshot:
    """The whole account at one instant: summary numbers, positions and net greeks.

    Build it with ``AccountSnapshot.build`` so that the derived fields (margin
    utilisation and net greeks) always agree with the parts.
    """

    equity: float
    available_margin: float
    initial_margin: float
    maintenance_margin: float
    unrealized_pnl: float
    margin_utilization: float
    positions: tuple[PositionSnapshot, ...]
    net_delta: float
    net_gamma: float
    net_theta: float
    net_vega: float
    timestamp: float

    @classmethod
    def build(
        cls,
        *,
        equity: float,
        available_margin: float,
        initial_margin: float,
        maintenance_margin: float,
        unrealized_pnl: float,
        positions: Sequence[PositionSnapshot],
        timestamp: float,
    ) -> "AccountSnapshot":
        """Derive margin utilisation (IM / equity x 100) and net greeks from the parts."""
        positions = tuple(positions)
        return cls(
            equity=equity,
            available_margin=available_margin,
            initial_margin=initial_margin,
            maintenance_margin=maintenance_margin,
            unrealized_pnl=unrealized_pnl,
            margin_utilization=margin_utilization_pct(initial_margin, equity),
            positions=positions,
            net_delta=math.fsum(p.delta for p in positions),
            net_gamma=math.fsum(p.gamma for p in positions),
            net_theta=math.fsum(p.theta for p in positions),
            net_vega=math.fsum(p.vega for p in positions),
            timestamp=timestamp,
        )

    def get_position(self, symbol: str) -> PositionSnapshot | None:
        """The position in ``symbol`` (positions are aggregated per symbol), or None."""
        return next((p for p in self.positions if p.symbol == symbol), None)

    @property
    def position_count(self) -> int:
        return len(self.positions)

    def summary_str(self) -> str:
        """One log-friendly line: the numbers an operator checks first."""
        return (
            f"equity=${self.equity:,.2f} available=${self.available_margin:,.2f} "
            f"IM=${self.initial_margin:,.2f} ({self.margin_utilization:.1f}%) MM=${self.maintenance_margin:,.2f} "
            f"uPnL=${self.unrealized_pnl:+,.2f} positions={self.position_count} "
            f"delta={self.net_delta:+.4f} gamma={self.net_gamma:+.6f} "
            f"theta={self.net_theta:+.2f} vega={self.net_vega:+.2f}"
        )


def margin_utilization_pct(initial_margin: float, equity: float) -> float:
    """IM / equity x 100; margin in use on a non-positive equity is unbounded (inf)."""
    if equity > 0:
        return initial_margin / equity * 100.0
    return 0.0 if initial_margin <= 0 else math.inf


# --------------------------------------------------------------------------------------
# The one adapter from API payloads (API.md 7.1, 7.2)
# --------------------------------------------------------------------------------------


class _PayloadError(ValueError):
    """A payload field is missing or unusable; becomes a SnapshotError."""


def _parse_number(value: Any, name: str) -> float:
    """A finite float from a JSON number or numeric string (the exchange sends both)."""
    if isinstance(value, bool) or value is None:
        raise _PayloadError(f"{name} is {value!r}, not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _PayloadError(f"{name} is {value!r}, not a number") from None
    else:
        raise _PayloadError(f"{name} is a {type(value).__name__}, not a number")
    if not math.isfinite(number):
        raise _PayloadError(f"{name} is {value!r}, not a finite number")
    return number


def _first_number(payload: Mapping[str, Any], *keys: str) -> float | None:
    """The first of ``keys`` present with a non-null value, parsed; None when all absent."""
    for key in keys:
        if payload.get(key) is not None:
            return _parse_number(payload[key], key)
    return None


def _required_number(payload: Mapping[str, Any], *keys: str) -> float:
    number = _first_number(payload, *keys)
    if number is None:
        raise _PayloadError(f"field {' / '.join(keys)} is missing")
    return number


def _parse_id(value: Any, name: str) -> int:
    """An int64 id from a JSON integer or a digit string; never through float."""
    if isinstance(value, bool):
        raise _PayloadError(f"{name} is {value!r}, not an id")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise _PayloadError(f"{name} is {value!r}, not an integer id")


def _parse_side(value: Any) -> str:
    side = _TRADE_SIDES.get(str(value).strip().upper()) if value is not None else None
    if side is None:
        raise _PayloadError(f"tradeSide is {value!r}, expected 1 (long) or 2 (short)")
    return side


def parse_position(
    payload: Mapping[str, Any], *, timestamp: float, position_greeks: str = "per_position"
) -> PositionSnapshot:
    """Normalise one position of API.md 7.2.

    Direction comes only from ``tradeSide``; ``qty`` is taken as a magnitude. The
    mark-based PnL pair (``upnlByMarkPrice``/``roiByMarkPrice``) is optional: without it
    PnL is recomputed from mark and entry (``upnl``/``roi`` are last-trade based and
    deliberately not used). ``position_greeks`` says how the payload's greeks are meant:
    "per_position" (already x qty x sign) or "per_contract" (multiplied by signed qty here).
    """
    if not isinstance(payload, Mapping):
        raise _PayloadError(f"position entry is a {type(payload).__name__}, not an object")
    symbol = payload.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise _PayloadError(f"position symbol is {symbol!r}")
    raw_id = payload.get("positionId", payload.get("id"))
    position_id = _parse_id(raw_id, f"positionId of {symbol}")
    side = _parse_side(payload.get("tradeSide"))
    sign = 1.0 if side == LONG else -1.0
    qty = abs(_required_number(payload, "qty"))
    signed_qty = qty * sign
    entry = _required_number(payload, "avgPrice")
    mark = _required_number(payload, "markPrice")
    upnl = _first_number(payload, "upnlByMarkPrice")
    if upnl is None:
        upnl = (mark - entry) * signed_qty
    roi = _first_number(payload, "roiByMarkPrice")
    if roi is None:
        cost = entry * qty
        roi = upnl / cost if cost > 0 else 0.0
    factor = 1.0 if position_greeks == "per_position" else signed_qty
    # A null greek counts as 0 (the caller warns): failing the whole snapshot over it
    # would also block every PnL exit, which is the worse outcome.
    greeks = {name: (_first_number(payload, name) or 0.0) * factor for name in GREEK_NAMES}
    return PositionSnapshot(
        position_id=position_id,
        symbol=symbol,
        qty=qty,
        side=side,
        signed_qty=signed_qty,
        entry_price=entry,
        mark_price=mark,
        unrealized_pnl=upnl,
        roi=roi,
        delta=greeks["delta"],
        gamma=greeks["gamma"],
        theta=greeks["theta"],
        vega=greeks["vega"],
        timestamp=timestamp,
    )


def parse_account(
    summary: Any, positions: Any, *, timestamp: float, position_greeks: str = "per_position"
) -> AccountSnapshot:
    """Normalise the summary (API.md 7.1) and the positions list (7.2) into one snapshot.

    Zero-quantity rows are dropped: they carry no exposure and would inflate the
    position count. Anything malformed raises ``_PayloadError``; nothing is defaulted.
    """
    if not isinstance(summary, Mapping):
        raise _PayloadError(f"account summary is a {type(summary).__name__}, not an object")
    if not isinstance(positions, list):
        raise _PayloadError(f"positions answer is a {type(positions).__name__}, not a list")
    parsed = [parse_position(p, timestamp=timestamp, position_greeks=position_greeks) for p in positions]
    return AccountSnapshot.build(
        equity=_required_number(summary, "equity", "equityAmount"),
        available_margin=_required_number(summary, "availableMargin", "availableBalance"),
        initial_margin=_required_number(summary, "imAmount"),
        maintenance_margin=_required_number(summary, "mmAmount"),
        unrealized_pnl=_required_number(summary, "unrealizedPnL", "unrealizedAmount"),
        positions=tuple(p for p in parsed if p.qty > 0),
        timestamp=timestamp,
    )


# --------------------------------------------------------------------------------------
# AccountManager
# --------------------------------------------------------------------------------------


class AccountManager:
    """Takes account snapshots through the exchange client.

    ``client`` needs ``account_summary()`` and ``positions()`` (``CoincallClient``); its
    ``reachability`` (if any) is exposed for the monitor's back-off.
    """

    def __init__(self, client: Any, clock: Clock, *, position_greeks: str = "per_position") -> None:
        if position_greeks not in POSITION_GREEK_MODES:
            raise ConfigError(
                f"position_greeks = {position_greeks!r} is invalid: use 'per_position' (greeks already "
                f"x qty x sign, the default) or 'per_contract'"
            )
        self._client = client
        self._clock = clock
        self.position_greeks = position_greeks
        self._warned_missing_greeks: set[str] = set()

    @property
    def reachability(self) -> Any:
        """The client's UP/DOWN tracker (every client has one: the entry gate reads it)."""
        return self._client.reachability

    def alert_on_outages(self, alerts: Any) -> None:
        """Send the client's outage events to the alert sink ``alerts`` (an ``AlertSink``).

        ``Reachability`` measured outages all along, but nothing listened: the DOWN/UP
        transitions only reached the log, so minutes without an exchange raised no alert
        (issue 9, finding 6).
        """
        self.reachability.add_listener(OutageAlerts(alerts))

    def snapshot(self) -> AccountSnapshot:
        """Summary + positions, both fetched and valid, or ``SnapshotError``.

        The timestamp is the clock time when the first request started: the snapshot is
        as old as its oldest part, which is what staleness checks must see.
        """
        timestamp = self._clock.now()
        summary = self._fetch("account summary", self._client.account_summary)
        positions = self._fetch("positions", self._client.positions)
        self._warn_missing_greeks(positions)
        try:
            return parse_account(summary, positions, timestamp=timestamp, position_greeks=self.position_greeks)
        except _PayloadError as exc:
            raise SnapshotError(f"account snapshot unusable: {exc}") from exc

    def _warn_missing_greeks(self, positions: Any) -> None:
        """Log once per symbol when the exchange sends a position without its greeks."""
        if not isinstance(positions, list):
            return
        for entry in positions:
            if not isinstance(entry, Mapping):
                continue
            missing = [name for name in GREEK_NAMES if entry.get(name) is None]
            symbol = str(entry.get("symbol"))
            if missing and symbol not in self._warned_missing_greeks:
                self._warned_missing_greeks.add(symbol)
                logger.warning("position %s has no %s; counted as 0 in the net greeks", symbol, "/".join(missing))

    @staticmethod
    def _fetch(what: str, call: Callable[[], Any]) -> Any:
        # Anything going wrong here means "we do not know the account"; never a default.
        try:
            return call()
        except Exception as exc:
            raise SnapshotError(f"{what} request failed: {exc}") from exc

    def __repr__(self) -> str:
        return f"AccountManager(position_greeks={self.position_greeks!r})"


class OutageAlerts:
    """A ``Reachability`` listener that raises the operator alerts of an exchange outage.

    ``exchange_unreachable`` (CRITICAL) comes once per outage, when it has lasted
    ``EXCHANGE_OUTAGE_ALERT_SECONDS`` from its first failed request; ``exchange_recovered``
    follows the first answer after it, with the outage's length. Shorter outages (the
    DOWN/UP transitions after a few failures) stay in the log: they are routine. Both alerts
    carry the numbers in their detail so ``alerts.log`` can be read by a machine.
    """

    def __init__(self, alerts: Any) -> None:
        self._alerts = alerts

    def __call__(self, event: ReachabilityEvent) -> None:
        if event.kind == Reachability.UNREACHABLE:
            send_alert(self._alerts, logger, "CRITICAL", "exchange_unreachable",
                       f"Coincall unreachable for {event.outage_seconds:.0f} s (since "
                       f"{_when(event.outage_started_at)}, {event.failures} failed requests in a row, last: "
                       f"{event.last_error or 'unknown'}): positions are not managed until it answers; check "
                       f"the network and the exchange's status page",
                       **self._detail(event))
        elif event.kind == Reachability.RECOVERED:
            send_alert(self._alerts, logger, "WARNING", "exchange_recovered",
                       f"Coincall reachable again after an outage of {event.outage_seconds:.0f} s (since "
                       f"{_when(event.outage_started_at)}, {event.failures} failed requests)",
                       **self._detail(event))

    @staticmethod
    def _detail(event: ReachabilityEvent) -> dict[str, Any]:
        return {"outage_seconds": round(event.outage_seconds, 3), "since": _when(event.outage_started_at),
                "failures": event.failures, "last_error": event.last_error}

    def __repr__(self) -> str:
        return f"OutageAlerts({self._alerts!r})"


def _when(epoch_seconds: float | None) -> str:
    return iso_utc(epoch_seconds) if epoch_seconds is not None else "unknown"


# --------------------------------------------------------------------------------------
# PositionMonitor
# --------------------------------------------------------------------------------------


SnapshotCallback = Callable[[AccountSnapshot], Any]
AlertHook = Callable[[str, str], None]


def _callback_name(callback: Any) -> str:
    """``LifecycleManager.tick`` for methods and functions, the class name for callable objects."""
    name = getattr(callback, "__qualname__", None) or getattr(callback, "__name__", None)
    if isinstance(name, str):
        return name
    return type(callback).__qualname__


@dataclass
class _Registration:
    callback: SnapshotCallback
    name: str
    consecutive_failures: int = 0
    warned: bool = field(default=False)


class PositionMonitor:
    """The daemon loop of BEHAVIOUR.md 6.0: wake, maybe poll, run callbacks, wait.

    Every wake runs the registered callbacks, in registration order, with the current
    state: the latest good snapshot, or - when the most recent poll failed - the error,
    delivered to ``callback.on_snapshot_error(err)`` where a callback has that method (a
    callback never receives a made-up snapshot). A poll (a fresh snapshot) happens when
    ``poll_interval`` has passed since the previous one; between polls callbacks get the
    same snapshot object again, so "is this a poll tick" is "did the snapshot change".

    Wakes come every ``exec_tick_interval`` while ``busy()`` is True, else every
    ``poll_interval``. While the exchange is DOWN the poll interval backs off to
    min(3 x poll_interval, 60 s) (never below ``poll_interval``).
    """

    def __init__(
        self,
        account_manager: AccountManager,
        clock: Clock,
        *,
        poll_interval: float = 10.0,
        exec_tick_interval: float = 2.0,
        wait_slice: float = 0.5,
        on_alert: AlertHook | None = None,
        join_timeout: float = 35.0,
    ) -> None:
        for name, value in (("poll_interval", poll_interval), ("exec_tick_interval", exec_tick_interval),
                            ("wait_slice", wait_slice)):
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ConfigError(f"PositionMonitor.{name} = {value!r} is invalid: use a positive number of seconds")
        self._account_manager = account_manager
        self._clock = clock
        self.poll_interval = float(poll_interval)
        self.exec_tick_interval = float(exec_tick_interval)
        self._wait_slice = float(wait_slice)
        self._on_alert = on_alert
        self._join_timeout = join_timeout
        self._lock = threading.Lock()
        self._registrations: list[_Registration] = []
        self._busy: Callable[[], bool] | None = None
        self._latest: AccountSnapshot | None = None
        self._current_error: SnapshotError | None = None
        self._last_poll_at: float | None = None
        self.last_error: SnapshotError | None = None
        self.last_error_at: float | None = None
        self.ticks = 0
        self._stop_event = threading.Event()
        self._stop_check: Callable[[], bool] | None = None
        self._thread: threading.Thread | None = None

    # ---- configuration -------------------------------------------------------------

    def register(self, callback: SnapshotCallback) -> None:
        """Add a callback; callbacks run in registration order."""
        if not callable(callback):
            raise TypeError(f"PositionMonitor.register needs a callable, got {callback!r}")
        with self._lock:
            self._registrations.append(_Registration(callback, _callback_name(callback)))

    def set_busy(self, busy: Callable[[], bool] | None) -> None:
        """``busy()`` True (execution jobs active) → wake every ``exec_tick_interval``."""
        self._busy = busy

    def set_stop_check(self, check: Callable[[], bool] | None) -> None:
        """``check()`` True ends the wait between ticks at the next slice (None: only ``stop()``).

        The daemon's signal handlers may only set a plain flag (no ``Event``, whose lock a
        re-entered handler deadlocks on), so the wait reads that flag itself, every
        ``wait_slice`` of clock time; a tick in progress is always finished.
        """
        self._stop_check = check

    def stop_requested(self) -> bool:
        """True once ``stop()`` was called or the stop check says so."""
        if self._stop_event.is_set():
            return True
        check = self._stop_check
        return check is not None and bool(check())

    # ---- state for health and callers ---------------------------------------------

    @property
    def latest(self) -> AccountSnapshot | None:
        """The last good snapshot (None before the first success)."""
        return self._latest

    @property
    def current_error(self) -> SnapshotError | None:
        """The error of the latest poll, None once a snapshot succeeded again (``last_error`` keeps it)."""
        return self._current_error

    @property
    def failing_callbacks(self) -> dict[str, int]:
        """Callbacks that failed at least 3 times in a row, with their failure counts."""
        with self._lock:
            return {r.name: r.consecutive_failures for r in self._registrations
                    if r.consecutive_failures >= CALLBACK_FAILURE_WARN_AFTER}

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> AccountSnapshot:
        """Take a snapshot now (``SnapshotError`` on failure); a good one becomes ``latest``."""
        snap = self._account_manager.snapshot()
        self._latest = snap
        return snap

    # ---- scheduling ----------------------------------------------------------------

    def is_busy(self) -> bool:
        busy = self._busy
        if busy is None:
            return False
        try:
            return bool(busy())
        except Exception:
            # Guessing "busy" only costs extra wakes; guessing "idle" could stall a fill.
            logger.exception("busy() predicate failed; assuming execution is active")
            return True

    def effective_poll_interval(self) -> float:
        """``poll_interval``, backed off while the exchange is DOWN (BEHAVIOUR.md 7.3)."""
        if not self._account_manager.reachability.is_up:
            return max(self.poll_interval, min(DOWN_POLL_FACTOR * self.poll_interval, DOWN_POLL_CAP_SECONDS))
        return self.poll_interval

    def current_interval(self) -> float:
        """Seconds between wakes right now."""
        poll = self.effective_poll_interval()
        return min(self.exec_tick_interval, poll) if self.is_busy() else poll

    def _poll_due(self, now: float) -> bool:
        last = self._last_poll_at
        return last is None or now - last >= self.effective_poll_interval() - _SCHEDULE_EPSILON

    # ---- the loop ------------------------------------------------------------------

    def run_once(self) -> bool:
        """One loop iteration: the tick, then the wait until the next wake.

        Returns True when this tick took a fresh, good snapshot. The wait is measured
        from the start of the tick (deadline based), so a slow tick does not drift the
        schedule; on a speed-0 ``SimulatedClock`` the wait moves simulated time only.
        """
        started = self._clock.monotonic()
        fresh = self._tick(started)
        duration = self._clock.monotonic() - started
        if duration > self.poll_interval:
            logger.warning("monitor tick took %.1f s, longer than the poll interval of %.1f s",
                           duration, self.poll_interval)
        self._wait_until_next_wake(started)
        return fresh

    def _tick(self, now: float) -> bool:
        self.ticks += 1
        fresh = False
        if self._poll_due(now):
            self._last_poll_at = now
            fresh = self._poll()
        error, snap = self._current_error, self._latest
        if error is not None:
            self._dispatch_error(error)
        elif snap is not None:
            self._dispatch(snap)
        return fresh

    def _poll(self) -> bool:
        try:
            snap = self._account_manager.snapshot()
        except SnapshotError as exc:
            self._current_error = exc
            self.last_error = exc
            self.last_error_at = self._clock.now()
            logger.warning("account snapshot failed, no decision this tick: %s", exc)
            return False
        self._latest = snap
        self._current_error = None
        logger.debug("snapshot: %s", snap.summary_str())
        return True

    def _registrations_copy(self) -> list[_Registration]:
        with self._lock:
            return list(self._registrations)

    def _dispatch(self, snap: AccountSnapshot) -> None:
        for registration in self._registrations_copy():
            self._run_isolated(registration, registration.callback, snap)

    def _dispatch_error(self, error: SnapshotError) -> None:
        skipped = []
        for registration in self._registrations_copy():
            handler = getattr(registration.callback, "on_snapshot_error", None)
            if callable(handler):
                self._run_isolated(registration, handler, error)
            else:
                skipped.append(registration.name)
        if skipped:
            logger.info("snapshot unavailable; skipped callbacks: %s", ", ".join(skipped))

    def _run_isolated(self, registration: _Registration, function: Callable[[Any], Any], argument: Any) -> None:
        try:
            function(argument)
        except Exception:
            registration.consecutive_failures += 1
            logger.exception("monitor callback %s failed (%d in a row)", registration.name,
                             registration.consecutive_failures)
            if registration.consecutive_failures >= CALLBACK_FAILURE_WARN_AFTER and not registration.warned:
                registration.warned = True
                self._alert("callback_failing",
                            f"monitor callback {registration.name} failed {registration.consecutive_failures} "
                            f"times in a row")
            return
        if registration.warned:
            logger.warning("monitor callback %s recovered after %d failures", registration.name,
                           registration.consecutive_failures)
        registration.consecutive_failures = 0
        registration.warned = False

    def _alert(self, kind: str, detail: str) -> None:
        logger.warning("HEALTH WARNING: %s", detail)
        if self._on_alert is not None:
            try:
                self._on_alert(kind, detail)
            except Exception:
                logger.exception("alert hook failed for %s", kind)

    def _wait_until_next_wake(self, tick_started: float) -> None:
        """Sleep on the clock in slices, re-reading the interval so a new job shortens it."""
        while not self.stop_requested():
            remaining = tick_started + self.current_interval() - self._clock.monotonic()
            if remaining <= _SCHEDULE_EPSILON:
                return
            self._clock.sleep(min(self._wait_slice, remaining))

    def _loop(self) -> None:
        logger.info("position monitor started (poll %.1f s, exec tick %.1f s)",
                    self.poll_interval, self.exec_tick_interval)
        while not self.stop_requested():
            try:
                self.run_once()
            except Exception:
                # The loop is the daemon's heartbeat: log and keep going after one interval.
                logger.exception("position monitor iteration failed")
                self._wait_until_next_wake(self._clock.monotonic())
        logger.info("position monitor stopped")

    def start(self) -> None:
        """Start the single daemon thread (no-op when it is already running)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                logger.debug("position monitor already running")
                return
            self._stop_event.clear()
            self._thread = threading.Thread(target=self._loop, name="position-monitor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the loop to stop and join it; a tick in progress is finished, not cut."""
        self._stop_event.set()
        thread = self._thread
        if thread is None:
            return
        thread.join(self._join_timeout)
        if thread.is_alive():
            logger.warning("position monitor thread still busy %.0f s after stop()", self._join_timeout)
        else:
            self._thread = None

    def __repr__(self) -> str:
        return (f"PositionMonitor(poll_interval={self.poll_interval}, exec_tick_interval={self.exec_tick_interval}, "
                f"running={self.is_running})")
