"""Our records against the exchange's: at start-up and every minute (BEHAVIOUR.md 4.7, 6.1).

Why it exists: after a crash, a network outage or a manual intervention, the store can be
behind the exchange. Trading on a wrong picture is how a daemon sells a position twice,
leaves a naked leg, or cancels somebody else's order. The reconciler is the one place that
compares the two and applies the decision table of docs/RECOVERY.md:

* **Start-up** (first account snapshot after a start): every non-final ledger order is
  queried by its ids (fills adopted, never-sent orders become NOT_PLACED); RFQ accepts whose
  answer a crash may have lost are looked up in the block-trade list; then every symbol we
  hold is compared with the positions. Until this has succeeded the lifecycle is on hold:
  no order, no exit, no entry (a failed positions read is retried on the next poll, forever).
* **Every 60 s**: all pages of open orders against the ledger (orphans carrying our
  prefix are cancelled, live orders the list does not show are verified once they are
  30 s old), then the positions again.

What the comparison decides, per symbol (signed quantities, ours = the active trades'):

* exchange covers ours on the same side: fine; anything beyond ours is somebody else's
  position, logged once and never touched;
* exchange short of ours: the missing part was closed outside the daemon; it is booked
  as an external close (price from fills that are not ours, else the mark, flagged
  ``pnl_estimated``), CRITICAL alert, the strategy is paused;
* exchange on the opposite side: CRITICAL alert, the strategy is paused and no order goes
  to that symbol until an operator resumes it.

A symbol is only judged when our view of it is settled: no non-final order on it, no
execution job on its trades, no unresolved RFQ accept, and no order activity since the
positions were read. While running, a mismatch must also be seen on two consecutive checks
before anything is done, so a lagging positions answer never books a phantom close.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from alerts import send_alert
from api_values import finite_number, int_or_none
from errors import TraderError
from persistence import TRADE_SEQ_COUNTER
from rfq import AMBIGUOUS_RESOLVE_SECONDS, adopt_block_trade
from trade_execution import BLOCK_ACCEPT_EVENT, BUY, LATE_FILL_STATUSES, SELL, parse_client_order_id
from trade_lifecycle import TradeState

logger = logging.getLogger(__name__)

RECONCILE_INTERVAL_SECONDS = 60.0
ORDER_MIN_AGE_SECONDS = 30.0
QTY_EPSILON = 1e-9
HISTORY_PAGE_SIZE = 500
HISTORY_MAX_PAGES = 200
QUARANTINE_PROBE_SECONDS = 24 * 3600.0
SEQ_RESEED_LOOKBACK_SECONDS = 89 * 24 * 3600.0  # the history range limit is 90 days (API.md 8.6)
# After a quarantine the trade sequence jumps past anything seen on the exchange by this
# margin: orders older than the history we can read must never share a clientOrderId
# with a new one.
SEQ_RESEED_MARGIN = 1000
STARTUP_FAILURE_ALERT_AFTER = 3
# Orders cancelled or expired in this window are polled once more by the periodic run: a fill
# reported later than the engines' grace is still adopted (API.md 11.16).
LATE_FILL_WATCH_SECONDS = 600.0

VERDICT_OK = "ok"
VERDICT_EXTERNAL = "external_position"
VERDICT_SHORTFALL = "shortfall"
VERDICT_OPPOSITE = "opposite_side"
VERDICT_DEFERRED = "deferred"


@dataclass(frozen=True)
class SymbolCheck:
    """One symbol's comparison: signed quantities (+ long, - short)."""

    symbol: str
    ours: float
    exchange: float
    verdict: str


@dataclass
class ReconcileReport:
    """What one reconciliation saw and did (logged and written to the event journal)."""

    kind: str
    at: float
    orders_checked: int = 0
    orders_missing: list[int] = field(default_factory=list)
    orphans_cancelled: list[int] = field(default_factory=list)
    late_fills: list[int] = field(default_factory=list)
    block_fills_adopted: int = 0
    symbols: list[SymbolCheck] = field(default_factory=list)
    external_closes: list[str] = field(default_factory=list)
    blocked_symbols: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    quarantine: dict | None = None

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for check in self.symbols:
            counts[check.verdict] = counts.get(check.verdict, 0) + 1
        parts = [f"{self.kind}: {self.orders_checked} order(s) checked",
                 "symbols " + (", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none")]
        if self.block_fills_adopted:
            parts.append(f"{self.block_fills_adopted} block fill(s) adopted")
        noteworthy = (("missing orders", self.orders_missing), ("orphans cancelled", self.orphans_cancelled),
                      ("late fills adopted on", self.late_fills), ("external closes", self.external_closes),
                      ("blocked", self.blocked_symbols), ("paused", self.paused), ("quarantine", self.quarantine))
        parts += [f"{label} {value}" for label, value in noteworthy if value]
        return "; ".join(parts)

    def to_event(self) -> dict:
        return {
            "kind": self.kind, "orders_checked": self.orders_checked, "orders_missing": self.orders_missing,
            "orphans_cancelled": self.orphans_cancelled, "late_fills": self.late_fills,
            "block_fills_adopted": self.block_fills_adopted,
            "symbols": [check.__dict__ for check in self.symbols if check.verdict != VERDICT_OK],
            "external_closes": self.external_closes, "blocked_symbols": self.blocked_symbols,
            "paused": self.paused, "quarantine": self.quarantine,
        }


@dataclass
class _Holding:
    """Our exposure on one symbol, and the (trade, leg) pairs that make it up."""

    signed: float = 0.0
    legs: list[tuple[Any, Any]] = field(default_factory=list)


def _sign(value: float) -> int:
    return 1 if value > QTY_EPSILON else -1 if value < -QTY_EPSILON else 0


def judge(ours: float, exchange: float) -> str:
    """The verdict for one symbol from the two signed quantities (pure)."""
    if _sign(ours) == 0:
        return VERDICT_OK if _sign(exchange) == 0 else VERDICT_EXTERNAL
    if _sign(exchange) == -_sign(ours):
        return VERDICT_OPPOSITE
    if abs(exchange) < abs(ours) - QTY_EPSILON:
        return VERDICT_SHORTFALL
    return VERDICT_EXTERNAL if abs(exchange) > abs(ours) + QTY_EPSILON else VERDICT_OK


class Reconciler:
    """Start-up and periodic reconciliation; registered on the monitor before the lifecycle.

    Construction puts the lifecycle on hold; the first successful start-up reconciliation
    releases it. ``attach_runners`` gives it the runners it may pause (strategies without a
    runner get the pause written to their stored runner state).
    """

    def __init__(self, *, client: Any, ledger: Any, lifecycle: Any, store: Any, clock: Any, alerts: Any = None,
                 journal: Any = None, quarantined: Any = None,
                 interval_seconds: float = RECONCILE_INTERVAL_SECONDS,
                 order_min_age_seconds: float = ORDER_MIN_AGE_SECONDS) -> None:
        self.client = client
        self.ledger = ledger
        self.lifecycle = lifecycle
        self.store = store
        self.clock = clock
        self.alerts = alerts
        self.journal = journal
        self.quarantined = quarantined
        self.interval_seconds = float(interval_seconds)
        self.order_min_age_seconds = float(order_min_age_seconds)
        self.__qualname__ = "Reconciler"   # how the monitor names this callback
        self._runners: dict[str, Any] = {}
        self.started = False
        self.last_report: ReconcileReport | None = None
        self._next_run_at: float | None = None
        self._startup_failures = 0
        self._seen_external: set[str] = set()
        self._alerted_missing: set[int] = set()
        self._late_checked: set[int] = set()
        self._suspects: dict[str, tuple[str, float, float]] = {}
        self._pending_markers: list[tuple[float, dict]] = []
        lifecycle.hold("start-up reconciliation: positions not read yet")

    def __repr__(self) -> str:
        return f"Reconciler(started={self.started})"

    def attach_runners(self, runners: Iterable[Any]) -> None:
        self._runners = {runner.name: runner for runner in runners}

    # ---- monitor callbacks ---------------------------------------------------------------

    def __call__(self, snapshot: Any) -> None:
        now = self.clock.now()
        if not self.started:
            self._try_startup(snapshot, now)
            return
        if self._next_run_at is not None and now < self._next_run_at:
            return
        self._next_run_at = now + self.interval_seconds
        try:
            self.periodic(snapshot)
        except TraderError as exc:
            logger.warning("periodic reconciliation incomplete (%s); next in %.0f s", exc, self.interval_seconds)

    def on_snapshot_error(self, error: Exception) -> None:
        if not self.started:
            logger.warning("start-up reconciliation waits for the positions (%s): no order, no exit, no entry",
                           error)

    # ---- start-up ------------------------------------------------------------------------

    def _try_startup(self, snapshot: Any, now: float) -> None:
        try:
            report = self.startup(snapshot)
        except TraderError as exc:
            self._startup_failures += 1
            logger.warning("start-up reconciliation failed (%s); retrying on the next poll", exc)
            if self._startup_failures == STARTUP_FAILURE_ALERT_AFTER:
                self._alert("CRITICAL", "reconciliation_blocked",
                            f"start-up reconciliation failed {self._startup_failures} times ({exc}): the daemon "
                            f"places no order until it succeeds")
            return
        except Exception as exc:  # noqa: BLE001 - a bug here must not freeze the exits
            logger.exception("start-up reconciliation crashed")
            self._alert("CRITICAL", "reconciliation_failed",
                        f"start-up reconciliation crashed ({type(exc).__name__}: {exc}); entries paused, "
                        f"exits continue")
            for name in self._strategy_names():
                self._pause(name, "start-up reconciliation failed")
            self._finish_startup(now)
            return
        self._finish_startup(now)
        logger.info("reconciliation %s", report.summary())

    def _finish_startup(self, now: float) -> None:
        self.started = True
        self._next_run_at = now + self.interval_seconds
        self.lifecycle.release()

    def startup(self, snapshot: Any) -> ReconcileReport:
        """Apply the decision table once; raises ``TraderError`` (nothing decided) to be retried."""
        now = self.clock.now()
        report = ReconcileReport("startup", now)
        unsettled = {order.symbol for order in self.ledger.live_orders()}
        for order in self.ledger.live_orders():
            self.ledger.poll(order)
            report.orders_checked += 1
        unsettled |= self._adopt_block_accepts(report, now, startup=True)
        self._refresh_active_trades()
        listed = self.client.all_pending_orders()
        if self.quarantined is not None:
            report.quarantine = self._quarantine_start(snapshot, listed)
        self._reconcile_orders(report, now, listed)
        self._compare_positions(snapshot, report, unsettled, confirm=False)
        self._journal(report)
        self.last_report = report
        return report

    # ---- periodic ------------------------------------------------------------------------

    def periodic(self, snapshot: Any) -> ReconcileReport:
        now = self.clock.now()
        report = ReconcileReport("periodic", now)
        unsettled = self._adopt_block_accepts(report, now, startup=False)
        self._reconcile_orders(report, now)
        self._recheck_recent_finals(report, now)
        unsettled |= {order.symbol for order in self.ledger.live_orders()}
        snapshot_ts = float(getattr(snapshot, "timestamp", now))
        unsettled |= {order.symbol for order in self.ledger.orders() if float(order.updated_at) >= snapshot_ts}
        for trade in self.lifecycle.active_trades():
            if self.lifecycle.has_job(trade.id):
                unsettled |= {leg.symbol for leg in trade.legs}
        self._compare_positions(snapshot, report, unsettled, confirm=True)
        if any((report.orders_missing, report.orphans_cancelled, report.block_fills_adopted, report.late_fills,
                report.external_closes, report.blocked_symbols)):
            logger.warning("reconciliation %s", report.summary())
            self._journal(report)
        else:
            logger.debug("reconciliation %s", report.summary())
        self.last_report = report
        return report

    # ---- RFQ accepts whose answer may be lost --------------------------------------------

    def _adopt_block_accepts(self, report: ReconcileReport, now: float, *, startup: bool) -> set[str]:
        """Look up block trades for recorded accepts of active trades; returns symbols still in doubt."""
        if startup:
            self._pending_markers = self._markers_of_active_trades()
        doubtful: set[str] = set()
        still_pending: list[tuple[float, dict]] = []
        for ts, marker in self._pending_markers:
            found, recorded = adopt_block_trade(self.client, self.ledger, marker, now)
            report.block_fills_adopted += recorded
            if recorded:
                self.lifecycle.refresh_fills(str(marker["trade_id"]))
            if not found and now - ts < AMBIGUOUS_RESOLVE_SECONDS:
                still_pending.append((ts, marker))
                doubtful |= {str(symbol) for _index, symbol, _side in marker.get("legs") or []}
        self._pending_markers = still_pending
        return doubtful

    def _markers_of_active_trades(self) -> list[tuple[float, dict]]:
        active = {trade.id for trade in self.lifecycle.active_trades()}
        if not active or self.store is None:
            return []
        markers = []
        for event in self.store.events(BLOCK_ACCEPT_EVENT):
            payload = event.get("payload") or {}
            if payload.get("trade_id") in active:
                markers.append((float(event.get("ts") or 0.0), payload))
        return markers

    def _refresh_active_trades(self) -> None:
        for trade in self.lifecycle.active_trades():
            self.lifecycle.refresh_fills(trade.id)

    # ---- orders ----------------------------------------------------------------------------

    def _reconcile_orders(self, report: ReconcileReport, now: float, listed: list | None = None) -> None:
        """All pages of open orders vs the ledger (BEHAVIOUR 6.1); ``listed`` if already read."""
        if listed is None:
            listed = self.client.all_pending_orders()
        listed_ids: set[int] = set()
        for item in listed:
            if not isinstance(item, Mapping):
                continue
            coid = int_or_none(item.get("clientOrderId"))
            order_id = int_or_none(item.get("orderId"))
            if order_id is not None:
                listed_ids.add(order_id)
            if coid is None or not self._is_ours(coid) or self.ledger.get(coid) is not None:
                continue
            self._cancel_orphan(item, coid, order_id, report)
        for order in self.ledger.live_orders():
            if order.order_id is None or order.order_id in listed_ids:
                continue
            if now - float(order.sent_at) < self.order_min_age_seconds:
                continue  # the list lags behind fresh orders (incident 38)
            report.orders_checked += 1
            verdict = self.ledger.verify(order)
            if verdict == "missing" and order.client_order_id not in self._alerted_missing:
                self._alerted_missing.add(order.client_order_id)
                report.orders_missing.append(order.client_order_id)
                self._alert("WARNING", "order_missing",
                            f"order {order.client_order_id} ({order.symbol}, trade {order.trade_id}) is live in "
                            f"our ledger but unknown to the exchange", client_order_id=order.client_order_id)

    def _recheck_recent_finals(self, report: ReconcileReport, now: float) -> None:
        """Poll once more every order that ended unfilled in the last minutes (late fill reports)."""
        for order in self.ledger.orders():
            if order.status not in LATE_FILL_STATUSES or order.filled_qty >= order.qty - QTY_EPSILON:
                continue
            age = now - float(order.updated_at)
            if order.client_order_id in self._late_checked or not (
                    self.order_min_age_seconds <= age <= LATE_FILL_WATCH_SECONDS):
                continue
            self._late_checked.add(order.client_order_id)
            report.orders_checked += 1
            if self.ledger.recheck_final(order) <= QTY_EPSILON:
                continue
            report.late_fills.append(order.client_order_id)
            trade = self.lifecycle.get(order.trade_id)
            if trade is not None and trade.is_active:
                self.lifecycle.refresh_fills(trade.id)
                continue
            self._alert("CRITICAL", "late_fill_after_close",
                        f"order {order.client_order_id} of trade {order.trade_id} reported a fill of "
                        f"{order.filled_qty:g} {order.symbol} after the trade ended: that position is not managed "
                        f"by any trade; close it (`python main.py kill --all-positions --yes`) or by hand",
                        client_order_id=order.client_order_id, symbol=order.symbol)

    def _is_ours(self, client_order_id: int) -> bool:
        try:
            return parse_client_order_id(client_order_id).prefix == self.ledger.prefix
        except (ValueError, TypeError):
            return False

    def _cancel_orphan(self, item: Mapping[str, Any], coid: int, order_id: int | None,
                       report: ReconcileReport) -> None:
        """An order with our prefix that the ledger never recorded: recorded, cancelled, alerted."""
        detail = {"client_order_id": coid, "order_id": order_id, "symbol": item.get("symbol"),
                  "qty": item.get("qty"), "fill_qty": item.get("fillQty"), "price": item.get("price"),
                  "side": item.get("tradeSide"), "reduce_only": item.get("reduceOnly")}
        if self.journal is not None:
            self.journal("orphan_order", detail)
        try:
            if order_id is not None:
                self.client.cancel_order(order_id=order_id)
            else:
                self.client.cancel_order(client_order_id=coid)
        except TraderError as exc:
            logger.warning("cancel of orphan order %d failed (%s); retried at the next reconciliation", coid, exc)
            return
        report.orphans_cancelled.append(coid)
        self._alert("CRITICAL", "orphan_order",
                    f"order {coid} on {item.get('symbol')} carries our prefix but is not in our ledger: cancelled",
                    **detail)

    # ---- positions -------------------------------------------------------------------------

    def _holdings(self, now: float) -> dict[str, _Holding]:
        holdings: dict[str, _Holding] = {}
        for trade in self.lifecycle.active_trades():
            if trade.state is TradeState.SETTLING:
                continue
            for leg in trade.legs:
                if abs(leg.net_qty) <= QTY_EPSILON or leg.is_expired(now):
                    continue  # expired legs are settled by the lifecycle (BEHAVIOUR 4.5)
                holding = holdings.setdefault(leg.symbol, _Holding())
                holding.signed += leg.sign * leg.net_qty
                holding.legs.append((trade, leg))
        return holdings

    @staticmethod
    def _positions(snapshot: Any) -> dict[str, tuple[float, Any]]:
        positions: dict[str, tuple[float, Any]] = {}
        for position in getattr(snapshot, "positions", ()) or ():
            signed = float(getattr(position, "signed_qty", 0.0))
            previous = positions.get(position.symbol, (0.0, position))[0]
            positions[position.symbol] = (previous + signed, position)
        return positions

    def _compare_positions(self, snapshot: Any, report: ReconcileReport, unsettled: set[str], *,
                           confirm: bool) -> None:
        now = self.clock.now()
        holdings = self._holdings(now)
        positions = self._positions(snapshot)
        suspects: dict[str, tuple[str, float, float]] = {}
        for symbol in sorted(set(holdings) | set(positions)):
            ours = holdings[symbol].signed if symbol in holdings else 0.0
            exchange, position = positions.get(symbol, (0.0, None))
            verdict = judge(ours, exchange)
            if symbol in unsettled and verdict in (VERDICT_SHORTFALL, VERDICT_OPPOSITE):
                verdict = VERDICT_DEFERRED
            report.symbols.append(SymbolCheck(symbol, round(ours, 8), round(exchange, 8), verdict))
            if verdict == VERDICT_EXTERNAL:
                if symbol not in self._seen_external:
                    self._seen_external.add(symbol)
                    logger.info("position %s %+g is beyond our trades' %+g: external, left alone", symbol,
                                exchange, ours)
                continue
            if verdict not in (VERDICT_SHORTFALL, VERDICT_OPPOSITE):
                continue
            if confirm and self._suspects.get(symbol) != (verdict, round(ours, 8), round(exchange, 8)):
                suspects[symbol] = (verdict, round(ours, 8), round(exchange, 8))
                logger.warning("reconciliation: %s %s (ours %+g, exchange %+g); acting if the next check agrees",
                               symbol, verdict, ours, exchange)
                continue
            if verdict == VERDICT_OPPOSITE:
                self._opposite_side(symbol, holdings[symbol], exchange, report)
            else:
                self._shortfall(symbol, holdings[symbol], exchange, position, report)
        self._suspects = suspects

    def _opposite_side(self, symbol: str, holding: _Holding, exchange: float, report: ReconcileReport) -> None:
        strategies = sorted({trade.strategy for trade, _leg in holding.legs})
        reason = f"position on {symbol} is {exchange:+g}, opposite to our {holding.signed:+g}"
        if self.ledger.block_symbol(symbol, reason):
            report.blocked_symbols.append(symbol)
            self._alert("CRITICAL", "opposite_position",
                        f"{reason}: no order on {symbol} and strategies {strategies} paused until an operator "
                        f"resumes them", symbol=symbol, ours=holding.signed, exchange=exchange)
        for name in strategies:
            if self._pause(name, f"opposite-side position on {symbol}"):
                report.paused.append(name)

    def _shortfall(self, symbol: str, holding: _Holding, exchange: float, position: Any,
                   report: ReconcileReport) -> None:
        """Book the part the exchange no longer shows as closed outside the daemon, newest trade first."""
        missing = abs(holding.signed) - max(0.0, abs(exchange))
        direction = _sign(holding.signed)
        legs = sorted((pair for pair in holding.legs if pair[1].sign == direction),
                      key=lambda pair: pair[0].seq, reverse=True)
        since = min(float(trade.opened_at or trade.created_at) for trade, _leg in legs)
        price, estimated = self._external_price(symbol, direction, missing, since, position)
        for trade, leg in legs:
            if missing <= QTY_EPSILON:
                break
            qty = min(missing, leg.net_qty)
            self.lifecycle.record_external_close(
                trade.id, leg.index, qty, price, estimated=estimated,
                detail=f"exchange shows {exchange:+g} on {symbol} against our {holding.signed:+g}")
            missing -= qty
            report.external_closes.append(f"{trade.id}:{symbol}:{qty:g}")
            if self._pause(trade.strategy, f"position on {symbol} closed outside the daemon"):
                report.paused.append(trade.strategy)

    def _external_price(self, symbol: str, direction: int, qty: float, since: float,
                        position: Any) -> tuple[float, bool]:
        """VWAP of fills on ``symbol`` that are not ours, on the closing side; else the mark (estimated)."""
        closing_side = SELL if direction > 0 else BUY
        ours = {o.order_id for o in self.ledger.orders() if o.order_id is not None}
        try:
            data = self.client.trade_history(symbol=symbol, startTime=int(since * 1000), pageSize=HISTORY_PAGE_SIZE)
        except TraderError as exc:
            logger.warning("fill history of %s unavailable (%s): external close priced at the mark", symbol, exc)
            data = None
        fills = data.get("list") if isinstance(data, Mapping) else data
        remaining, value = qty, 0.0
        for fill in sorted((f for f in fills or [] if isinstance(f, Mapping)),
                           key=lambda f: -(finite_number(f.get("time")) or 0.0)):
            if str(fill.get("symbol")) != symbol or int_or_none(fill.get("orderId")) in ours:
                continue
            if int_or_none(fill.get("tradeSide")) != closing_side:
                continue
            fill_qty, fill_price = finite_number(fill.get("qty")), finite_number(fill.get("price"))
            if not fill_qty or fill_price is None or fill_qty <= 0 or fill_price < 0:
                continue
            take = min(remaining, fill_qty)
            value += take * fill_price
            remaining -= take
            if remaining <= QTY_EPSILON:
                return value / qty, False
        mark = finite_number(getattr(position, "mark_price", None)) if position is not None else None
        if mark is None:
            mark = self._mark_of(symbol)
        return (mark if mark is not None else 0.0), True

    def _mark_of(self, symbol: str) -> float | None:
        try:
            detail = self.client.option_detail(symbol)
        except TraderError:
            return None
        return finite_number(detail.get("markPrice")) if isinstance(detail, Mapping) else None

    # ---- quarantined store -------------------------------------------------------------------

    def _quarantine_start(self, snapshot: Any, listed: list) -> dict:
        """A fresh store after a quarantine: pause everything if the exchange shows anything of ours."""
        now = self.clock.now()
        positions = [p.symbol for p in getattr(snapshot, "positions", ()) or ()]
        prefixed_open = [int_or_none(item.get("clientOrderId")) for item in listed
                         if isinstance(item, Mapping) and self._coid_is_ours(item)]
        history = self._prefixed_history(now - SEQ_RESEED_LOOKBACK_SECONDS)
        recent = [coid for coid, created in history if created >= now - QUARANTINE_PROBE_SECONDS]
        seqs = [parse_client_order_id(coid).trade_seq for coid, _ in history]
        seqs += [parse_client_order_id(coid).trade_seq for coid in prefixed_open if coid is not None]
        if seqs:
            reseeded = self.store.raise_counter_to(TRADE_SEQ_COUNTER, max(seqs) + SEQ_RESEED_MARGIN)
            logger.warning("trade sequence re-seeded to %d from the exchange's order history", reseeded)
        probe = {"positions": len(positions), "open_orders": len(prefixed_open), "recent_orders": len(recent),
                 "max_trade_seq": max(seqs) if seqs else 0}
        if positions or prefixed_open or recent:
            self._alert("CRITICAL", "quarantine_start",
                        f"the state store was quarantined ({self.quarantined}) and the exchange shows "
                        f"{len(positions)} position(s), {len(prefixed_open)} open order(s) and {len(recent)} "
                        f"recent order(s) of ours: every strategy starts paused; resume after checking", **probe)
            for name in self._strategy_names():
                self._pause(name, "state quarantined at start-up")
        else:
            logger.warning("state store quarantined (%s) but the exchange shows nothing of ours: normal start",
                           self.quarantined)
        return probe

    def _coid_is_ours(self, item: Mapping[str, Any]) -> bool:
        coid = int_or_none(item.get("clientOrderId"))
        return coid is not None and self._is_ours(coid)

    def _prefixed_history(self, since: float) -> list[tuple[int, float]]:
        """(clientOrderId, created at) of every order of ours in the history window, all pages."""
        found: list[tuple[int, float]] = []
        params: dict[str, Any] = {"pageSize": HISTORY_PAGE_SIZE, "startTime": int(since * 1000),
                                  "endTime": self.clock.now_ms()}
        for _page in range(HISTORY_MAX_PAGES):
            data = self.client.order_history(**params)
            items = data.get("list") if isinstance(data, Mapping) else data
            items = [item for item in items or [] if isinstance(item, Mapping)]
            for item in items:
                if self._coid_is_ours(item):
                    created = (finite_number(item.get("createTime")) or 0.0) / 1000.0
                    found.append((int(item["clientOrderId"]), created))
            has_next = isinstance(data, Mapping) and bool(data.get("hasNext"))
            last_id = int_or_none(items[-1].get("orderId")) if items else None
            if not has_next or last_id is None:
                break
            params = {**params, "fromId": last_id, "direction": "NEXT"}
        return found

    # ---- pausing, alerts, journal ----------------------------------------------------------------

    def _strategy_names(self) -> list[str]:
        names = set(self._runners)
        names |= {trade.strategy for trade in self.lifecycle.active_trades() if trade.seq != 0}
        return sorted(names)

    def _pause(self, name: str, reason: str) -> bool:
        """Pause a strategy (persisted); True if it was not paused before."""
        runner = self._runners.get(name)
        if runner is not None:
            if runner.is_paused:
                return False
            runner.pause(reason)
            return True
        if self.store is None:
            return False
        try:
            state = dict(self.store.load_runner_state(name) or {})
            if state.get("paused"):
                return False
            state.update(paused=True, pause_reason=reason, pause_until=None)
            self.store.save_runner_state(name, state)
        except Exception:  # noqa: BLE001 - logged; entries of a non-running strategy cannot happen anyway
            logger.exception("could not persist the pause of strategy %s", name)
            return False
        logger.warning("strategy %s (not running) paused in the store: %s", name, reason)
        return True

    def _alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        send_alert(self.alerts, logger, level, kind, message, **detail)

    def _journal(self, report: ReconcileReport) -> None:
        if self.journal is None:
            return
        try:
            self.journal("reconciliation", report.to_event())
        except Exception:  # noqa: BLE001
            logger.exception("journal write of the reconciliation report failed")
