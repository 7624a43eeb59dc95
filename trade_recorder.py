"""Writing a trade down: its record and journal event at every change, and the once-only callbacks.

Why this module exists: invariant I5 of BEHAVIOUR.md says every state change of a trade is
committed before the next request for that trade, so a crash between two steps leaves a store
that says what really happened. ``TradeRecorder`` is that write (the trade's record, then its
event in the journal), the count of the writes that failed (entries pause on it, exits go on),
and the strategy's ``on_opened``/``on_closed`` callbacks, each called once per trade: the
"already notified" mark is written before the callback runs, so a restart never repeats it.

The journal's "trade" events (kind ``"trade"``) are read by machines (the notifications, the
operator's tools), so their keys are a contract, kept stable:

* every event: ``trade_id``, ``strategy``, ``event``, ``state`` (plus the event's own extras,
  e.g. ``previous`` on ``event="state"``);
* the open, ``event="state"`` with ``state="OPEN"`` and ``event="opened_notified"`` (once per
  trade, also across a restart): ``entry_premium`` (USD, negative = a net debit), ``fees`` (USD)
  and ``legs``: ``[{index, symbol, side ("BUY"/"SELL"), qty, filled_qty, avg_price}]`` (the open
  fills);
* the end, ``event="state"`` with ``state`` ``"CLOSED"`` or ``"FAILED"`` and
  ``event="closed_notified"`` (once per trade): the open fields above, the legs' close fills
  (``close_filled_qty``, ``close_avg_price``), ``exit_reason`` (None for a trade that never
  opened), ``failure_reason`` (None unless FAILED), ``realized_pnl`` and ``fees`` (USD, fees
  included in the PnL).

USD figures are rounded to cents; prices and quantities are as filled.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from alerts import send_alert
from clock import Clock
from seams import AlertSender, LifecycleStore

if TYPE_CHECKING:
    from trade_lifecycle import TradeLifecycle

logger = logging.getLogger(__name__)

TradeCallback = Callable[["TradeLifecycle"], Any]
USD_DIGITS = 2


class TradeRecorder:
    """The lifecycle's writes to the store (or the journal) and its strategy callbacks."""

    def __init__(self, *, store: LifecycleStore | None, clock: Clock, alerts: AlertSender | None,
                 journal: Callable[[str, dict], Any] | None) -> None:
        self.store = store
        self.clock = clock
        self.alerts = alerts
        self.journal = journal
        self.errors = 0

    def persist(self, trade: TradeLifecycle, event: str, **extra: Any) -> bool:
        """I5: committed before the next request for this trade; a failed write is CRITICAL (False).

        Exits go on after a failed write (a position must still be closable with a broken
        disk); the open of a new trade does not (``LifecycleManager.create``).
        """
        if self.store is None:
            return True
        payload = {"trade_id": trade.id, "strategy": trade.strategy, "event": event, "state": trade.state.value,
                   **extra, **outcome_fields(trade, event)}
        try:
            self.store.save_trade(trade.to_record())
            if self.journal is not None:
                self.journal("trade", payload)
            else:
                self.store.append_event("trade", payload, self.clock.now())
        except Exception as error:  # noqa: BLE001 - exits go on; entries pause elsewhere
            self.errors += 1
            logger.critical("trade %s: persisting %s failed: %s", trade.id, event, error)
            send_alert(self.alerts, logger, "CRITICAL", "persistence_failed",
                       f"trade {trade.id}: state write failed: {error}", trade_id=trade.id)
            return False
        return True

    def notify_opened(self, trade: TradeLifecycle, callback: TradeCallback | None) -> None:
        if trade.opened_notified:
            return
        trade.opened_notified = True
        self.persist(trade, "opened_notified")
        _call_back(callback, trade, "on_opened")

    def notify_closed(self, trade: TradeLifecycle, callback: TradeCallback | None) -> None:
        if trade.closed_notified:
            return
        trade.closed_notified = True
        self.persist(trade, "closed_notified")
        _call_back(callback, trade, "on_closed")


def _usd(value: float | None) -> float | None:
    return None if value is None else round(float(value), USD_DIGITS)


def opened_fields(trade: TradeLifecycle) -> dict[str, Any]:
    """What the open event says: the open fills per leg, the entry premium and the fees so far."""
    return {
        "entry_premium": _usd(trade.entry_premium),
        "fees": _usd(trade.fees_paid),
        "legs": [{"index": leg.index, "symbol": leg.symbol, "side": leg.side.name, "qty": leg.qty,
                  "filled_qty": leg.open_filled, "avg_price": leg.open_vwap} for leg in trade.legs],
    }


def closed_fields(trade: TradeLifecycle) -> dict[str, Any]:
    """What the end event says: the open fields, the close fills, why it ended and what it made."""
    fields = opened_fields(trade)
    for row, leg in zip(fields["legs"], trade.legs):
        row.update(close_filled_qty=leg.close_filled, close_avg_price=leg.close_vwap)
    fields.update(exit_reason=trade.exit_reason, failure_reason=trade.failure_reason,
                  realized_pnl=_usd(trade.realized_pnl))
    return fields


def outcome_fields(trade: TradeLifecycle, event: str) -> dict[str, Any]:
    """The open or end fields a "trade" event carries (the module docstring lists them); else none."""
    if event == "closed_notified" or (event == "state" and trade.state.is_terminal):
        return closed_fields(trade)
    if event == "opened_notified" or (event == "state" and trade.state.value == "OPEN"):
        return opened_fields(trade)
    return {}


def _call_back(callback: TradeCallback | None, trade: TradeLifecycle, name: str) -> None:
    if callback is None:
        return
    try:
        callback(trade)
    except Exception:  # noqa: BLE001 - a strategy callback never breaks the lifecycle
        logger.exception("trade %s: %s callback raised", trade.id, name)
