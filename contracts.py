"""The values every trading module shares: which way an order goes, and which option it trades.

Why this module exists (issue 10): the side was numbered in three modules and an option's
identity travelled in several shapes, each re-listing the same fields. Both are defined
once here, in a module that imports nothing of the product, so the lowest module that
needs them (the order ledger, leg selection) can import them without reaching upward.

* ``Side`` is an ``IntEnum`` with the exchange's own codes (``tradeSide`` 1 = BUY, 2 = SELL,
  API.md §11.2). ``Side.BUY == 1``, so records stored as plain ints load unchanged and a
  ``Side`` serialises to the same int in the store, in JSON and on the wire.
* ``Contract`` is the identity of one listed option: its symbol and what the symbol
  encodes. A leg holds one instead of re-listing the fields. Built from a chain row or an
  instrument it carries the exchange's expiry; parsed from a symbol alone it assumes the
  08:00 UTC expiry the symbol's date stands for (the exchange's timestamp stays
  authoritative when both are known).
* The option symbol grammar (API.md §5) is written here once: ``parse_symbol`` and
  ``parse_date_token``.
* The underlyings the product trades options on, and their quantity rules, are one table
  (``UNDERLYINGS``, issue 13): every module that needs "which underlyings exist" or "what
  is the smallest ETH option order" reads it, so adding an underlying is one line here.
  ``underlying_of`` names the underlying of any symbol the exchange lists (an option, or a
  perpetual such as ``ETHUSD``) without assuming every instrument has a strike.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from enum import IntEnum
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["Side", "Contract", "parse_symbol", "parse_date_token", "MONTHS", "EXPIRY_HOUR_UTC",
           "UnderlyingSpec", "UNDERLYINGS", "DEFAULT_UNDERLYING", "underlying_spec", "underlying_of",
           "index_name", "PERPETUAL", "is_perpetual_symbol", "perpetual_symbol"]

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
EXPIRY_HOUR_UTC = 8
_DATE_TOKEN = re.compile(r"^(?P<day>\d{1,2})(?P<mon>[A-Z]{3})(?P<yy>\d{2})$")
_PERPETUAL = re.compile(r"^(?P<base>[A-Z0-9]+)USD$")
_SYMBOL = re.compile(r"^(?P<base>[A-Z0-9]+)USD-(?P<date>\d{1,2}[A-Z]{3}\d{2})-"
                     r"(?P<strike>[0-9]+(?:\.[0-9]+)?)-(?P<type>[CP])$")


@dataclass(frozen=True)
class UnderlyingSpec:
    """What the product knows of one underlying before asking the exchange anything.

    ``option_min_qty`` and ``option_qty_step`` are the option order sizes, in units of the
    underlying, that a strategy is validated against at start-up (no request is made then);
    the listed instrument's ``minQty`` is checked again when a leg resolves. BTC options trade
    from 0.01 BTC in 0.01 steps (API.md 0 #8, §4); ETH options are taken to trade from 0.1 ETH
    in 0.1 steps, the default this project chose, which the listing's ``minQty`` overrides
    upwards at resolution (a larger listed minimum refuses the leg, never rounds it).
    """

    name: str
    option_min_qty: float
    option_qty_step: float
    perp_min_qty: float = 0.001
    perp_qty_step: float = 0.001

    @property
    def index_name(self) -> str:
        """The exchange's name of this underlying's index (and of its perpetual): ``ETHUSD``."""
        return index_name(self.name)


DEFAULT_UNDERLYING = "BTC"
UNDERLYINGS: Mapping[str, UnderlyingSpec] = MappingProxyType({spec.name: spec for spec in (
    UnderlyingSpec("BTC", option_min_qty=0.01, option_qty_step=0.01, perp_min_qty=0.001, perp_qty_step=0.001),
    UnderlyingSpec("ETH", option_min_qty=0.1, option_qty_step=0.1, perp_min_qty=0.01, perp_qty_step=0.01),
)})


def underlying_spec(name: Any) -> UnderlyingSpec:
    """The table entry of ``name``; ``ValueError`` naming the supported ones for anything else."""
    spec = UNDERLYINGS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unsupported underlying {name!r}: use one of {', '.join(UNDERLYINGS)}")
    return spec


def index_name(underlying: str) -> str:
    """``BTC`` -> ``BTCUSD``: the index (and chain ``index`` parameter) of an underlying."""
    return f"{underlying.upper()}USD"


# A perpetual's ``Contract.option_type``: a perp leg is stored with the same flat keys as an
# option leg (strike 0, expiry_ms 0), so every record reader keeps working (docs/PERPETUALS.md).
PERPETUAL = "PERP"


def perpetual_symbol(underlying: str) -> str:
    """The symbol of ``underlying``'s perpetual (``ETH`` -> ``ETHUSD``): the index name."""
    return index_name(underlying)


def is_perpetual_symbol(symbol: Any) -> bool:
    """True for a perpetual's symbol (``BTCUSD``), False for an option symbol or anything else."""
    return isinstance(symbol, str) and _PERPETUAL.match(symbol.strip().upper()) is not None


def underlying_of(symbol: str) -> str | None:
    """The underlying of an option symbol or a perpetual symbol (``ETHUSD``); None when it is neither."""
    try:
        return parse_symbol(symbol).underlying
    except ValueError:
        pass
    match = _PERPETUAL.match(symbol.strip().upper()) if isinstance(symbol, str) else None
    return match["base"] if match is not None else None


class Side(IntEnum):
    """The side of an order or a leg, numbered as the exchange numbers it (``tradeSide``)."""

    BUY = 1
    SELL = 2

    @property
    def opposite(self) -> "Side":
        """The side that reduces what this side built (a short leg is closed by a buy)."""
        return Side.SELL if self is Side.BUY else Side.BUY

    @property
    def sign(self) -> int:
        """+1 for a buy (a long leg), -1 for a sell (a short leg)."""
        return 1 if self is Side.BUY else -1

    @classmethod
    def of(cls, code: Any) -> "Side":
        """The side of the code 1 or 2 (an int or a ``Side``); ``ValueError`` naming anything else."""
        try:
            return cls(code)
        except (ValueError, TypeError):
            raise ValueError(f"side must be 1 (buy) or 2 (sell), got {code!r}") from None

    @classmethod
    def from_text(cls, text: Any) -> "Side":
        """The side an exchange answer writes as ``"BUY"``/``"SELL"`` (any case).

        ``ValueError`` for anything else. The name (``side.name``) is the way back to text.
        """
        if isinstance(text, str) and text.upper() in cls.__members__:
            return cls[text.upper()]
        raise ValueError(f"side must be 'BUY' or 'SELL', got {text!r}")


@dataclass(frozen=True, slots=True)
class Contract:
    """One listed option: the symbol and what it stands for (API.md §5)."""

    symbol: str
    underlying: str
    option_type: str   # "C" | "P"
    strike: float
    expiry_ms: int

    @property
    def is_perpetual(self) -> bool:
        """A perpetual future (no strike, no expiry), not an option."""
        return self.option_type == PERPETUAL

    @property
    def kind(self) -> str:
        """``"perpetual"`` or ``"option"``: how people and records name the instrument's kind."""
        return "perpetual" if self.is_perpetual else "option"

    @property
    def expiry(self) -> datetime:
        """The expiry instant as an aware UTC datetime."""
        return datetime.fromtimestamp(self.expiry_ms / 1000.0, tz=timezone.utc)

    @property
    def expiry_seconds(self) -> float:
        """The expiry in epoch seconds (0 for a perpetual, which has none: ask ``is_perpetual``)."""
        return self.expiry_ms / 1000.0

    @classmethod
    def perpetual(cls, underlying: str) -> "Contract":
        """The contract of ``underlying``'s perpetual (``ETHUSD``): strike 0, expiry_ms 0."""
        name = underlying_spec(underlying).name
        return cls(symbol=perpetual_symbol(name), underlying=name, option_type=PERPETUAL, strike=0.0, expiry_ms=0)

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> "Contract":
        """The contract of a stored leg record (the flat keys a trade record has always had).

        Records written before the contract existed carry no ``underlying``: it is read from
        the symbol then, and left empty for a symbol outside the exchange's grammar.
        """
        symbol = str(data["symbol"])
        underlying = data.get("underlying")
        if not underlying:
            underlying = underlying_of(symbol) or ""
        return cls(symbol=symbol, underlying=str(underlying), option_type=str(data["option_type"]),
                   strike=float(data["strike"]), expiry_ms=int(data["expiry_ms"]))

    def to_record(self) -> dict:
        """The flat keys of a leg record (``expiry_ms`` as an int)."""
        return {"symbol": self.symbol, "underlying": self.underlying, "option_type": self.option_type,
                "strike": self.strike, "expiry_ms": int(self.expiry_ms)}


def parse_date_token(token: str) -> date:
    """``5FEB26``/``05FEB26`` -> date(2026, 2, 5); ``ValueError`` when it is not a date."""
    match = _DATE_TOKEN.match(token.strip().upper()) if isinstance(token, str) else None
    if match is None or match["mon"] not in MONTHS:
        raise ValueError(f"not a date token: {token!r}")
    return date(2000 + int(match["yy"]), MONTHS.index(match["mon"]) + 1, int(match["day"]))


def parse_symbol(symbol: str) -> Contract:
    """Parse ``BTCUSD-5FEB26-80000-C`` style symbols (the day may have 1 or 2 digits).

    ``ValueError`` for anything else. The expiry is the symbol's date at 08:00 UTC.
    """
    match = _SYMBOL.match(symbol.strip().upper()) if isinstance(symbol, str) else None
    if match is None:
        raise ValueError(f"not an option symbol: {symbol!r}")
    try:
        day = parse_date_token(match["date"])
    except ValueError:
        raise ValueError(f"not an option symbol: {symbol!r}") from None
    when = datetime(day.year, day.month, day.day, EXPIRY_HOUR_UTC, tzinfo=timezone.utc)
    return Contract(symbol=symbol, underlying=match["base"], option_type=match["type"],
                    strike=float(match["strike"]), expiry_ms=int(when.timestamp() * 1000))
