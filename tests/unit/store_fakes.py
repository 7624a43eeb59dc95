"""What every hand-made ledger store of the tests shares: no clientOrderId floors, no kept blocks.

``seams.LedgerStore`` asks a store for the floors of ids seen on the exchange but never recorded
(docs/RECOVERY.md O2) and for the symbol blocks kept across restarts (L3). A test store that
has neither inherits these answers: nothing seen, nothing kept, a block kept in memory only.
"""
from __future__ import annotations

from typing import Iterable


class NoFloorsNoKeptBlocks:
    """The floors and kept blocks of a store that has seen none (``seams.LedgerStore``)."""

    def client_id_floor(self, trade_seq: int, leg_index: int, intent: int | None = None) -> int:
        return 0

    def keep_symbol_block(self, symbol: str, reason: str) -> None:
        self.__dict__.setdefault("kept_blocks", {})[symbol] = reason

    def lift_symbol_blocks(self, symbols: Iterable[str]) -> None:
        kept = self.__dict__.setdefault("kept_blocks", {})
        for symbol in symbols:
            kept.pop(symbol, None)

    def kept_symbol_blocks(self) -> dict[str, str]:
        return dict(self.__dict__.get("kept_blocks", {}))
