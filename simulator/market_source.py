"""What the simulated exchange needs from a market, whichever market it is.

Why a Protocol: the exchange (``exchange.py``), the server and the state file work the same
against the seeded synthetic market (``market.MarketModel``) and against recorded history
(``history.HistoryMarket``). Naming the members they call in one place lets the type checker
hold both to the same surface, so a member added to one market and used by the exchange is
noticed where the other one lacks it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from simulator.market import Book, Instrument, MarketConfig, MarkValues, OptionQuote


@dataclass(frozen=True)
class RecordedRows:
    """One symbol's rows in a replayed recording (``history.HistoryRow``, in time order), their
    instants in ms, and the replay's staleness limit in ms: what the exchange needs to keep the
    depth a fill took from a recorded level until that level changes (docs/HISTORY.md)."""

    rows: Sequence[Any]
    times: Sequence[int]
    stale_ms: int


class MarketSource(Protocol):
    """The market surface of the exchange, the HTTP server and the state file."""

    @property
    def config(self) -> MarketConfig: ...

    @property
    def now_ms(self) -> int: ...

    @property
    def quote_stamp(self) -> tuple[Any, ...]: ...

    @property
    def index_frozen(self) -> bool: ...

    def advance_to(self, now_ms: int) -> None: ...

    def index_price(self) -> float: ...

    def index_average(self, start_ms: int, end_ms: int) -> float: ...

    def delivery_price(self, expiry_ms: int) -> float | None: ...

    def delivery_prices(self) -> dict[int, float]: ...

    def estimated_delivery_price(self, expiry_ms: int) -> float: ...

    def instruments(self) -> list[Instrument]: ...

    def instruments_for_expiry(self, expiry_ms: int) -> list[Instrument]: ...

    def instrument(self, symbol: str) -> Instrument | None: ...

    def expiries(self) -> list[int]: ...

    def expiry_kind(self, expiry_ms: int) -> str | None: ...

    def is_expired(self, symbol: str) -> bool: ...

    def quote(self, symbol: str) -> OptionQuote: ...

    def quotes(self, symbols: Sequence[str]) -> list[OptionQuote]: ...

    def mark_values(self, symbol: str) -> MarkValues: ...

    def book(self, symbol: str, depth: int = 100) -> Book: ...

    def top_of_book(self, symbol: str) -> Book: ...

    def freeze_index(self, frozen: bool) -> None: ...

    def set_empty_side(self, pattern: str, side: str | None) -> None: ...

    def set_scripted_path(self, points: Sequence[tuple[int, float]] | None) -> None: ...

    def to_state(self) -> dict[str, Any]: ...

    def recorded_rows(self, symbol: str) -> RecordedRows | None:
        """The recording behind ``symbol`` in a replay; None for a modelled market."""
        ...

    def current_row(self, symbol: str) -> Any | None:
        """The recorded row in force for ``symbol`` now; None for a modelled market (or before its first row)."""
        ...


__all__ = ["MarketSource", "RecordedRows"]
