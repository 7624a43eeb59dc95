"""Pre-serialized response payloads.

A chain call renders ~180 option rows (~125 KB of JSON); serialising them anew on every
request would make the simulator, not the daemon, the bottleneck of every benchmark.
Handlers that can cache their rows' JSON text return it wrapped in ``RawJSON`` and the
server embeds it verbatim in the envelope.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterable, TypeVar

V = TypeVar("V")


class RawJSON(str):
    """JSON text that the server inserts as the envelope's ``data`` without re-encoding."""


class SymbolTexts(dict[str, V], Generic[V]):
    """JSON text kept per symbol, with the one rule that keeps it from growing with the run.

    Why: options expire every day, so a cache keyed by symbol would otherwise keep the text of
    every option a long run ever listed. Once it holds more than a quarter (plus a floor) over
    what was live at the last pruning, it keeps only the symbols still listed; the rule is
    checked with a length comparison, so a call that finds nothing to prune pays nothing.
    """

    FLOOR = 64

    def __init__(self) -> None:
        super().__init__()
        self._limit = self.FLOOR

    def prune(self, listed: Callable[[], Iterable[str]]) -> None:
        """Drop the texts of symbols no longer listed, when there may be many of them."""
        if len(self) <= self._limit:
            return
        live = set(listed())
        for symbol in [s for s in self if s not in live]:
            del self[symbol]
        self._limit = self.FLOOR + len(self) * 5 // 4
