"""Account snapshots: the adapter from the exchange's account payloads to typed values
(BEHAVIOUR.md 6.0, 7.3).

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
* An exchange that stays unreachable is an operator's problem: ``AccountManager.alert_on_outages``
  turns the client's ``Reachability`` outage events into the ``exchange_unreachable``
  (CRITICAL) and ``exchange_recovered`` alerts. The scheduler that polls these snapshots
  (``position_monitor.PositionMonitor``) keeps polling while the exchange is down (backed
  off), which is what measures the outage when no trade is active.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from alerts import send_alert
from clock import Clock, iso_utc
from coincall_client import Reachability, ReachabilityEvent
from errors import ConfigError, SnapshotError

logger = logging.getLogger(__name__)

POSITION_GREEK_MODES = ("per_position", "per_contract")
LONG = "long"
SHORT = "short"
GREEK_NAMES = ("delta", "gamma", "theta", "vega")

# tradeSide codes of API.md 0 #9 (1 = BUY/long, 2 = SELL/short).
_TRADE_SIDES: dict[str, str] = {"1": LONG, "2": SHORT, "BUY": LONG, "SELL": SHORT}


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
