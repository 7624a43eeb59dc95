"""Account snapshots: the account summary and the positions as one typed value, or none at all
(BEHAVIOUR.md 6.0, 7.3).

Why it looks the way it does:

* A snapshot is the account summary AND the positions, both fetched successfully. A
  failed positions call must never read as a flat account (BEHAVIOUR.md 8 row 13): a
  strategy that believes it is flat opens a second trade, an exit that sees no position
  never fires. Any failure therefore raises ``SnapshotError`` and no snapshot exists.
* The exchange speaks camelCase with numbers that are sometimes JSON strings (API.md 7).
  ``coincall_payloads`` (the one adapter) reads those payloads into frozen values
  (``PositionSnapshot``, ``AccountSummary``); this module composes them into the snapshot,
  and nothing in the product reads raw position dictionaries.
* Position greeks are ambiguous on the exchange (API.md 12 #4). The adapter normalises
  them to position level (already x qty x sign) whatever the configured payload mode, so
  every consumer reads one meaning and the net greeks are a plain sum.
* An exchange that stays unreachable is an operator's problem: ``AccountManager.alert_on_outages``
  turns the client's ``Reachability`` outage events into the ``exchange_unreachable``
  (CRITICAL) and ``exchange_recovered`` alerts. The scheduler that polls these snapshots
  (``position_monitor.PositionMonitor``) keeps polling while the exchange is down (backed
  off), which is what measures the outage when no trade is active.
* Perpetual futures share the account (issue 13): with a ``perp_client`` the snapshot also
  reads the perp positions and carries them beside the options as ``PositionSnapshot``s
  (delta = signed quantity, other greeks 0; ``position_kind`` tells them apart by symbol).
  A failed perp read fails the snapshot like a failed option read. The net greeks, and
  ``greeks_by_underlying``, count options and perps together.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from alerts import send_alert
from clock import Clock, iso_utc
from coincall_client import Reachability, ReachabilityEvent
from coincall_payloads import (
    LONG,
    SHORT,
    PerpPosition,
    PositionSnapshot,
    parse_account_summary,
    parse_positions,
    positions_missing_greeks,
)
from contracts import Side, is_perpetual_symbol, underlying_of
from errors import ConfigError, PayloadError, SnapshotError
from seams import AccountClient, AlertSender, PerpAccountClient, require, require_optional

logger = logging.getLogger(__name__)

POSITION_GREEK_MODES = ("per_position", "per_contract")


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------


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

    def greeks_by_underlying(self) -> dict[str, dict[str, float]]:
        """Net delta, gamma, theta and vega per underlying (options and perps), underlyings sorted."""
        totals: dict[str, dict[str, list[float]]] = {}
        for position in self.positions:
            underlying = underlying_of(position.symbol) or "?"
            bucket = totals.setdefault(underlying, {"delta": [], "gamma": [], "theta": [], "vega": []})
            for name in bucket:
                bucket[name].append(float(getattr(position, name)))
        return {underlying: {name: math.fsum(values) for name, values in totals[underlying].items()}
                for underlying in sorted(totals)}

    def missing_greeks(self, underlying: str | None = None) -> frozenset[str]:
        """The greeks some open position (of ``underlying``, or any) came without: its share of
        those net greeks is counted as 0, so a reader that shows or gates on one must call it unknown."""
        return frozenset(name for position in self.positions if position.qty
                         and (underlying is None or (underlying_of(position.symbol) or "?") == underlying)
                         for name in position.missing_greeks)

    def delta_of(self, underlying: str | None = None) -> float:
        """Net delta of ``underlying``'s positions (options and perps), or of the whole account."""
        if underlying is None:
            return self.net_delta
        return math.fsum(p.delta for p in self.positions if underlying_of(p.symbol) == underlying)

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


def position_kind(position: PositionSnapshot) -> str:
    """``"perpetual"`` or ``"option"``: what a position of the snapshot is, read from its symbol."""
    return "perpetual" if is_perpetual_symbol(position.symbol) else "option"


def perp_position_snapshot(position: PerpPosition, *, timestamp: float) -> PositionSnapshot:
    """A perp position as a snapshot position: its delta is its signed quantity, no other greek."""
    entry = float(position.avg_price or 0.0)
    mark = float(position.mark_price if position.mark_price is not None else entry)
    upnl = position.unrealized_pnl if position.unrealized_pnl is not None else (mark - entry) * position.signed_qty
    cost = entry * position.qty
    return PositionSnapshot(
        position_id=int(position.position_id or 0), symbol=position.symbol, qty=float(position.qty),
        side=LONG if position.side is Side.BUY else SHORT, signed_qty=float(position.signed_qty),
        entry_price=entry, mark_price=mark, unrealized_pnl=float(upnl),
        roi=float(upnl) / cost if cost > 0 else 0.0, delta=float(position.signed_qty), gamma=0.0, theta=0.0,
        vega=0.0, timestamp=timestamp)


def margin_utilization_pct(initial_margin: float, equity: float) -> float:
    """IM / equity x 100; margin in use on a non-positive equity is unbounded (inf)."""
    if equity > 0:
        return initial_margin / equity * 100.0
    return 0.0 if initial_margin <= 0 else math.inf


# --------------------------------------------------------------------------------------
# Payloads -> snapshot (the payloads are read by coincall_payloads, API.md 7.1, 7.2)
# --------------------------------------------------------------------------------------


def parse_account(
    summary: Any, positions: Any, *, timestamp: float, position_greeks: str = "per_position",
    perp_positions: Sequence[PerpPosition] = (),
) -> AccountSnapshot:
    """The summary (API.md 7.1) and the positions list (7.2) as one snapshot.

    Zero-quantity rows are dropped: they carry no exposure and would inflate the
    position count. Anything malformed raises ``PayloadError``; nothing is defaulted.
    """
    parsed = list(parse_positions(positions, timestamp=timestamp, position_greeks=position_greeks))
    parsed += [perp_position_snapshot(p, timestamp=timestamp) for p in perp_positions]
    figures = parse_account_summary(summary)
    return AccountSnapshot.build(
        equity=figures.equity,
        available_margin=figures.available_margin,
        initial_margin=figures.initial_margin,
        maintenance_margin=figures.maintenance_margin,
        unrealized_pnl=figures.unrealized_pnl,
        positions=tuple(p for p in parsed if p.qty > 0),
        timestamp=timestamp,
    )


# --------------------------------------------------------------------------------------
# AccountManager
# --------------------------------------------------------------------------------------


class AccountManager:
    """Takes account snapshots through the exchange client.

    ``client`` needs ``account_summary()``, ``positions()`` and ``reachability`` (an
    ``AccountClient``: ``CoincallClient``); its ``reachability`` is exposed for the
    monitor's back-off and the entry gate.
    """

    def __init__(self, client: AccountClient, clock: Clock, *, position_greeks: str = "per_position",
                 perp_client: PerpAccountClient | None = None) -> None:
        require("AccountManager client", client, AccountClient)
        require_optional("AccountManager perp_client", perp_client, PerpAccountClient)
        self._perp_client = perp_client
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
    def reachability(self) -> Reachability:
        """The client's UP/DOWN tracker (every client has one: the entry gate reads it)."""
        return self._client.reachability

    def alert_on_outages(self, alerts: AlertSender) -> None:
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
        perp_positions: list[PerpPosition] = []
        if self._perp_client is not None:
            perp_positions = self._fetch("perp positions", self._perp_client.perp_positions)
        self._warn_missing_greeks(positions)
        try:
            return parse_account(summary, positions, timestamp=timestamp, position_greeks=self.position_greeks,
                                 perp_positions=perp_positions)
        except PayloadError as exc:
            raise SnapshotError(f"account snapshot unusable: {exc}") from exc

    def _warn_missing_greeks(self, positions: Any) -> None:
        """Log once per symbol when the exchange sends a position without its greeks."""
        for symbol, missing in positions_missing_greeks(positions):
            if symbol not in self._warned_missing_greeks:
                self._warned_missing_greeks.add(symbol)
                logger.warning("position %s has no %s; counted as 0 in the net greeks, and account delta gates are "
                               "unevaluable while its delta is missing", symbol, "/".join(missing))

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

    def __init__(self, alerts: AlertSender) -> None:
        require("OutageAlerts alerts", alerts, AlertSender)
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
