"""Writing a trade down: its record and journal event at every change, and the once-only callbacks.

Why this module exists: invariant I5 of BEHAVIOUR.md says every state change of a trade is
committed before the next request for that trade, so a crash between two steps leaves a store
that says what really happened. ``TradeRecorder`` is that write (the trade's record, then its
event in the journal), the count of the writes that failed (entries pause on it, exits go on),
and the strategy's ``on_opened``/``on_closed`` callbacks, each called once per trade: the
"already notified" mark is written before the callback runs, so a restart never repeats it.
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


class TradeRecorder:
    """The lifecycle's writes to the store (or the journal) and its strategy callbacks."""

    def __init__(self, *, store: LifecycleStore | None, clock: Clock, alerts: AlertSender | None,
                 journal: Callable[[str, dict], Any] | None) -> None:
        self.store = store
        self.clock = clock
        self.alerts = alerts
        self.journal = journal
        self.errors = 0

    def persist(self, trade: TradeLifecycle, event: str, **extra: Any) -> None:
        """I5: committed before the next request for this trade; a failed write is CRITICAL."""
        if self.store is None:
            return
        payload = {"trade_id": trade.id, "strategy": trade.strategy, "event": event, "state": trade.state.value,
                   **extra}
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


def _call_back(callback: TradeCallback | None, trade: TradeLifecycle, name: str) -> None:
    if callback is None:
        return
    try:
        callback(trade)
    except Exception:  # noqa: BLE001 - a strategy callback never breaks the lifecycle
        logger.exception("trade %s: %s callback raised", trade.id, name)
