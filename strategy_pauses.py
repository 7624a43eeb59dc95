"""How reconciliation stops a strategy's entries: a persisted pause, running or not.

Why it exists: every mismatch the reconciler cannot settle by itself (an order with our prefix
that is not ours, a store behind the exchange, a lost store, a position on the opposite side
or closed outside the daemon; docs/RECOVERY.md rows O2, L2, L3, Q1, S3, S4) ends in the same
act: the strategies concerned stop opening trades until an operator resumes them. A strategy
with a runner is paused through it; one without a runner (its trades are still active, but it
is not in ``STRATEGIES`` this run) gets the pause written to its stored runner state, so it
starts paused whenever it runs again.
"""
from __future__ import annotations

import logging
from typing import Iterable

from seams import ReconcilerLifecycle, ReconcilerStore, RunnerControl
from trade_lifecycle import is_external_trade

logger = logging.getLogger(__name__)


class StrategyPauses:
    """Pauses strategies by name, through their runner or in the store; shared by the reconciler's parts.

    Built by ``reconciliation.Reconciler``, which checked its collaborators against their
    Protocols and attaches the runners once they exist (``attach``).
    """

    def __init__(self, lifecycle: ReconcilerLifecycle, store: ReconcilerStore | None) -> None:
        self.lifecycle = lifecycle
        self.store = store
        self._runners: dict[str, RunnerControl] = {}

    def __repr__(self) -> str:
        return f"StrategyPauses(runners={sorted(self._runners)})"

    def attach(self, runners: Iterable[RunnerControl]) -> None:
        self._runners = {runner.name: runner for runner in runners}

    def names(self) -> list[str]:
        """Every strategy: those with a runner, and those holding an active trade (sorted)."""
        names = set(self._runners)
        names |= {trade.strategy for trade in self.lifecycle.active_trades() if not is_external_trade(trade)}
        return sorted(names)

    def pause(self, name: str, reason: str) -> bool:
        """Pause a strategy (persisted); True if it was not paused before.

        A pause that lifts itself (the daily open-failure pause, until 00:00 UTC) is replaced:
        kept, it would end at midnight and take this pause with it.
        """
        runner = self._runners.get(name)
        if runner is not None:
            if runner.paused_for_good:
                return False
            runner.pause(reason)
            return True
        if self.store is None:
            return False
        try:
            state = dict(self.store.load_runner_state(name) or {})
            if state.get("paused") and state.get("pause_until") is None:
                return False
            state.update(paused=True, pause_reason=reason, pause_until=None)
            self.store.save_runner_state(name, state)
        except Exception:  # noqa: BLE001 - logged; entries of a non-running strategy cannot happen anyway
            logger.exception("could not persist the pause of strategy %s", name)
            return False
        logger.warning("strategy %s (not running) paused in the store: %s", name, reason)
        return True

    def pause_every(self, reason: str) -> list[str]:
        """Pause every strategy (``names``), in order; the ones that were not paused before."""
        return [name for name in self.names() if self.pause(name, reason)]
