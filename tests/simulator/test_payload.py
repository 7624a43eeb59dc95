"""The simulator's kept JSON texts: bounded by what is listed, not by how long the run has been."""
from __future__ import annotations

from simulator.payload import SymbolTexts


def test_texts_of_expired_symbols_go_once_they_outgrow_the_listing_by_a_quarter() -> None:
    texts: SymbolTexts[str] = SymbolTexts()
    asked = []

    def listed() -> list[str]:
        asked.append(1)
        return [f"S{i}" for i in range(100, 140)]

    for i in range(SymbolTexts.FLOOR):
        texts[f"S{i}"] = "t"
    texts.prune(listed)
    assert len(texts) == SymbolTexts.FLOOR and not asked   # at the floor: nothing read, nothing dropped

    for i in range(100, 140):
        texts[f"S{i}"] = "t"
    texts.prune(listed)
    assert sorted(texts) == sorted(f"S{i}" for i in range(100, 140)) and len(asked) == 1

    # The next pruning waits until the cache is a quarter (plus the floor) above the 40 kept.
    for i in range(200, 200 + SymbolTexts.FLOOR + 10):
        texts[f"S{i}"] = "t"
    texts.prune(listed)
    assert len(asked) == 1 and len(texts) == 40 + SymbolTexts.FLOOR + 10
    texts["S999"] = "t"
    texts.prune(listed)
    assert len(asked) == 2 and len(texts) == 40
