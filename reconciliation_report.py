"""What one reconciliation saw and did: the values every part of it writes into.

Why a module of its own: the reconciler (``reconciliation.Reconciler``) hands one
``ReconcileReport`` to each of its collaborators in turn (orders, prefix ownership,
positions), and each adds what it found; the report then goes to the log, the event journal
and the health line. The collaborators cannot import the reconciler that owns them, so the
values they share live here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from display import fmt_value

# Below this a quantity is zero in every comparison (fills are 0.01 lots).
QTY_EPSILON = 1e-9

# The per-symbol verdicts of docs/RECOVERY.md (rows S1-S6).
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
    foreign_orders: list[int] = field(default_factory=list)
    late_fills: list[int] = field(default_factory=list)
    orders_vanished: list[int] = field(default_factory=list)
    block_fills_adopted: int = 0
    symbols: list[SymbolCheck] = field(default_factory=list)
    external_closes: list[str] = field(default_factory=list)
    suspect: list[str] = field(default_factory=list)
    reversed: list[str] = field(default_factory=list)
    blocked_symbols: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    quarantine: dict | None = None
    # Reads a step could not make and passed over (retried at the next run): the run is not
    # complete, and counts as failed for ``reconciliation_failing``. ``unread_no_answer``: the
    # last of them was the exchange giving no answer.
    unread: list[str] = field(default_factory=list)
    unread_no_answer: bool = False

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for check in self.symbols:
            counts[check.verdict] = counts.get(check.verdict, 0) + 1
        parts = [f"{self.kind}: {self.orders_checked} order(s) checked",
                 "symbols " + (", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none")]
        if self.block_fills_adopted:
            parts.append(f"{self.block_fills_adopted} block fill(s) adopted")
        noteworthy = (("missing orders", self.orders_missing), ("unknown orders with our prefix", self.foreign_orders),
                      ("late fills adopted on", self.late_fills), ("external closes", self.external_closes),
                      ("vanished orders", self.orders_vanished), ("suspect positions", self.suspect),
                      ("external closes reversed", self.reversed), ("blocked", self.blocked_symbols),
                      ("paused", self.paused))
        parts += [f"{label} {fmt_value(value)}" for label, value in noteworthy if value]
        if self.quarantine:   # what the quarantined store held, as counts for people
            parts.append("quarantine " + ", ".join(f"{key}={fmt_value(value)}" for key, value in self.quarantine.items()))
        return "; ".join(parts)

    def to_event(self) -> dict:
        return {
            "kind": self.kind, "orders_checked": self.orders_checked, "orders_missing": self.orders_missing,
            "foreign_orders": self.foreign_orders, "late_fills": self.late_fills,
            "block_fills_adopted": self.block_fills_adopted,
            "symbols": [check.__dict__ for check in self.symbols if check.verdict != VERDICT_OK],
            "external_closes": self.external_closes, "blocked_symbols": self.blocked_symbols,
            "paused": self.paused, "quarantine": self.quarantine,
            "orders_vanished": self.orders_vanished, "suspect": self.suspect, "reversed": self.reversed,
        }
