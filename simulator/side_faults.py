"""The "empty book side" fault switch, shared by the synthetic and the recorded market.

A test (or the fault campaign) empties the bid, the ask or both sides of every symbol matching
an ``fnmatch`` pattern; each market applies it to the books it shows. One value, so both
markets validate, combine and persist the switch the same way.
"""
from __future__ import annotations

import fnmatch
from typing import Mapping

SIDES = ("bid", "ask", "both")


class EmptySides:
    """Patterns and the side each empties; ``of(symbol)`` says which sides a symbol shows empty."""

    def __init__(self, patterns: Mapping[str, str] | None = None) -> None:
        self._patterns: dict[str, str] = dict(patterns or {})

    def set(self, pattern: str, side: str | None) -> None:
        """Empty ``side`` for ``pattern``; ``None`` removes that pattern (``"*"``: removes them all)."""
        if side not in (*SIDES, None):
            raise ValueError(f"side must be 'bid', 'ask', 'both' or None, got {side!r}")
        if side is not None:
            self._patterns[pattern] = side
        elif pattern == "*":
            self._patterns.clear()
        else:
            self._patterns.pop(pattern, None)

    @property
    def active(self) -> bool:
        """True while any pattern empties a side (lets a whole chain skip the per-symbol check)."""
        return bool(self._patterns)

    def of(self, symbol: str) -> tuple[bool, bool]:
        """(bid side emptied, ask side emptied) for ``symbol``."""
        bid_empty = ask_empty = False
        for pattern, side in self._patterns.items():
            if fnmatch.fnmatchcase(symbol, pattern):
                bid_empty = bid_empty or side in ("bid", "both")
                ask_empty = ask_empty or side in ("ask", "both")
        return bid_empty, ask_empty

    def to_state(self) -> dict[str, str]:
        return dict(self._patterns)
