"""``LegMarket``: the market of one option at one instant, kept with the trade leg that acted on it.

Why a value of its own: the quote a decision was made on (the chain row a leg was chosen on,
the quote an exit was judged on) is otherwise overwritten by the next refresh and lost. Kept
on the leg and in its record, it answers afterwards what the fills cost against the screen
(execution cost vs mid) and how much of the PnL the greeks explain (the backtest report's
attribution), live as in a backtest.

Units are the exchange's (API.md 6.2/6.3): prices in USD per contract on one unit of the
option's underlying (1 BTC, 1 ETH), ``mark_iv`` as a fraction (0.58 = 58 %), greeks per such
contract with ``theta`` in USD per calendar day and ``vega`` in USD per vol point (IV +0.01).
``underlying_price`` is the index of the option's own underlying, as the chain row gave it
(an ETH option's is ETH's): the value keeps no separate underlying name, the leg's contract
has it. A greek the exchange did not send is None, never a made-up 0; an empty book side is
0.0, as on the wire.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from coincall_payloads import OptionRow


def _finite_or_none(value: Any) -> float | None:
    """A finite float, or None (a NaN IV or a missing greek stays unknown in the record, valid JSON)."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _number(value: Any) -> float:
    """A price or time: 0.0 when missing or not finite (an empty book side is 0.0 on the wire too)."""
    number = _finite_or_none(value)
    return number if number is not None else 0.0


@dataclass(frozen=True, slots=True)
class LegMarket:
    """Bid, ask, mark, mark IV, underlying price and greeks of one option, as of ``as_of`` (epoch seconds)."""

    bid: float
    ask: float
    mark: float
    mark_iv: float | None
    underlying_price: float
    delta: float | None
    gamma: float | None
    theta: float | None
    vega: float | None
    as_of: float

    @classmethod
    def of(cls, row: "OptionRow") -> "LegMarket":
        """The snapshot of a chain row (``OptionRow``), as the daemon saw it."""
        return cls(bid=_number(row.bid), ask=_number(row.ask), mark=_number(row.mark),
                   mark_iv=_finite_or_none(row.mark_iv), underlying_price=_number(row.underlying_price),
                   delta=_finite_or_none(row.delta), gamma=_finite_or_none(row.gamma),
                   theta=_finite_or_none(row.theta), vega=_finite_or_none(row.vega), as_of=_number(row.as_of))

    @property
    def two_sided(self) -> bool:
        """Both book sides quoted and not crossed: a mid and a half-spread exist."""
        return self.bid > 0 and self.ask > 0 and self.ask >= self.bid

    @property
    def mid(self) -> float | None:
        return (self.bid + self.ask) / 2.0 if self.two_sided else None

    @property
    def half_spread(self) -> float | None:
        return (self.ask - self.bid) / 2.0 if self.two_sided else None

    def to_record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_record(cls, data: Mapping[str, Any] | None) -> "LegMarket | None":
        """The stored form back; None for a record without one (trades written before snapshots existed)."""
        if not data:
            return None
        return cls(bid=_number(data.get("bid")), ask=_number(data.get("ask")), mark=_number(data.get("mark")),
                   mark_iv=_finite_or_none(data.get("mark_iv")), underlying_price=_number(data.get("underlying_price")),
                   delta=_finite_or_none(data.get("delta")), gamma=_finite_or_none(data.get("gamma")),
                   theta=_finite_or_none(data.get("theta")), vega=_finite_or_none(data.get("vega")),
                   as_of=_number(data.get("as_of")))
