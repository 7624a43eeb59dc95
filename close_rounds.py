"""Close rounds: what the next unwind, close or kill round sends, and the breaker that spaces them.

Why this module exists: BEHAVIOUR.md 4.4 is one rule set. A reducing round targets every leg
we still hold, with the quantity recomputed from our fills, except legs inside the pre-expiry
halt or on a blocked symbol. An unwind and a kill use the urgent limit profile (4.3); a close
uses the trade's own engine on its first round and the limit engine after a failed one. Ten
rounds without reaching zero exposure trip the circuit breaker (5 minutes, doubling to an
hour, every failed round after that trips it again); the kill switch ignores it. The
lifecycle manager runs the rounds and changes the trade's state; this module decides them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from alerts import send_alert
from execution_job import LegTarget
from order_ledger import Intent
from seams import AlertSender, LifecycleLedger
from trade_execution import ExecutionParams
from trade_fills import is_zero

if TYPE_CHECKING:
    from trade_lifecycle import TradeLifecycle

logger = logging.getLogger(__name__)

BREAKER_ROUNDS = 10
BREAKER_FIRST_DELAY = 300.0
BREAKER_MAX_DELAY = 3600.0
# The kill switch ignores the breaker, so a kill that cannot reach zero exposure trips it on every
# failed round after the tenth, seconds apart: its alert is said at most this often per trade.
KILL_BREAKER_ALERT_EVERY_SECONDS = 900.0
# A held leg on a blocked symbol is left out of every round (nothing is sent to a blocked
# symbol), so the trade can never end: said at most this often per trade, until a resume.
BLOCKED_CLOSE_ALERT_EVERY_SECONDS = 900.0


@dataclass(frozen=True)
class Round:
    """One reducing round: the job's kind (``unwind``, ``close``, ``kill``), its intent, engine and params."""

    kind: str
    intent: Intent
    mode: str
    params: Any


class CloseRounds:
    """Targets and engine of each reducing round, and the circuit breaker between failed ones."""

    def __init__(self, *, ledger: LifecycleLedger, urgent_params: ExecutionParams, alerts: AlertSender | None) -> None:
        self.ledger = ledger
        self.urgent_params = urgent_params
        self.alerts = alerts
        self.trips = 0           # breaker trips of every trade since start-up (the health line shows them)
        self._kill_alerted_at: dict[str, float] = {}   # trade id -> its last close_breaker alert during a kill
        self._blocked_alerted_at: dict[str, float] = {}   # trade id -> its last close_blocked alert

    def targets(self, trade: TradeLifecycle, now: float) -> list[LegTarget]:
        """One target per leg with exposure outside the halt: qty recomputed from fills (4.4).

        A leg on a blocked symbol is left out, and said loudly (``_say_blocked``): a block means
        our books and the exchange disagree there (an opposite position, a store behind the
        exchange), so a reduce-only order sized on our books may be wrong, and only an operator
        who has looked may lift it (``resume``). Left out silently, a kill or close would wait
        for ever with no alert naming why.
        """
        blocks = self.ledger.blocked_symbols()
        held = [leg for leg in trade.legs if not is_zero(leg.net_qty) and not leg.is_frozen(now)]
        blocked = {leg.symbol: blocks[leg.symbol] for leg in held if leg.symbol in blocks}
        if blocked:
            self._say_blocked(trade, blocked, now)
        else:
            self._blocked_alerted_at.pop(trade.id, None)
        return [leg.reducing_target() for leg in held if leg.symbol not in blocked]

    def _say_blocked(self, trade: TradeLifecycle, blocked: dict[str, str], now: float) -> None:
        """CRITICAL ``close_blocked`` for a trade whose held legs are blocked (every 15 minutes)."""
        last = self._blocked_alerted_at.get(trade.id)
        if last is not None and now - last < BLOCKED_CLOSE_ALERT_EVERY_SECONDS:
            return
        self._blocked_alerted_at[trade.id] = now
        legs = "; ".join(f"{symbol} ({reason})" for symbol, reason in sorted(blocked.items()))
        send_alert(self.alerts, logger, "CRITICAL", "close_blocked",
                   f"trade {trade.id} ({trade.strategy}) {trade.state.value}: cannot close {legs}: the symbol is "
                   f"blocked, so no order goes there and the trade cannot end. Check the position on the exchange, "
                   f"then lift the block with `python main.py resume {trade.strategy}` (or `python main.py "
                   f"resume` for every strategy); during a kill, a resume lifts the blocks and keeps the kill's "
                   f"pause", trade_id=trade.id, symbols=sorted(blocked))

    def next_round(self, trade: TradeLifecycle, *, unwinding: bool, kill: bool,
                   params_for: Callable[[str], Any]) -> Round:
        """The round to start: unwind and kill urgent on the limit engine; a close on the trade's
        engine, or on the limit engine once a round has failed (the close fallback of 4.4).

        A close on the RFQ engine is a block trade, which cannot carry ``reduceOnly``; the RFQ
        job itself checks the exchange's positions before it creates the RFQ and before each
        accept, and hands the legs to its reduce-only fallback when they do not cover the
        close (``rfq.position_problem``), so routing the first round there stays safe."""
        if unwinding:
            return Round("unwind", Intent.KILL if kill else Intent.UNWIND, "limit", self.urgent_params)
        if kill:
            return Round("kill", Intent.KILL, "limit", self.urgent_params)
        mode = trade.execution_mode if trade.failed_rounds == 0 else "limit"
        return Round("close", Intent.CLOSE, mode, params_for(mode))

    def after_failed_round(self, trade: TradeLifecycle, *, kill: bool, now: float) -> None:
        """Circuit breaker (4.4): 10 failed rounds trip it; after that every failed round does."""
        trade.failed_rounds += 1
        if trade.failed_rounds < BREAKER_ROUNDS and trade.breaker_trips == 0:
            return
        delay = min(BREAKER_FIRST_DELAY * (2 ** trade.breaker_trips), BREAKER_MAX_DELAY)
        trade.breaker_trips += 1
        trade.breaker_until = now + delay
        self.trips += 1
        remaining = {leg.symbol: leg.net_qty for leg in trade.legs if not is_zero(leg.net_qty)}
        if kill:
            last = self._kill_alerted_at.get(trade.id)
            if last is not None and now - last < KILL_BREAKER_ALERT_EVERY_SECONDS:
                logger.warning("trade %s (%s): kill round %d without reaching zero exposure (left: %s)", trade.id,
                               trade.strategy, trade.failed_rounds, remaining)
                return
            self._kill_alerted_at[trade.id] = now
        send_alert(self.alerts, logger, "CRITICAL", "close_breaker",
                   f"trade {trade.id} ({trade.strategy}): {trade.failed_rounds} rounds without reaching zero "
                   f"exposure; next round in {delay:.0f} s" + (" (kill switch overrides)" if kill else ""),
                   trade_id=trade.id, remaining=remaining, delay_seconds=delay, trips=trade.breaker_trips)

    @staticmethod
    def breaker_active(trade: TradeLifecycle, *, kill: bool, now: float) -> bool:
        """Whether the breaker still holds the trade's next round (never for the kill switch)."""
        if kill:
            return False
        return trade.breaker_until is not None and now < trade.breaker_until
