"""Every market of the simulated venue behind one surface: option underlyings and perpetuals.

Why: the exchange model was written against one market (BTC options). With ETH options and
the BTCUSD/ETHUSD perpetuals it needs to reach the market of any symbol, the index of any
underlying and the settlement prices of any underlying's expiries, while everything that
already speaks to "the market" (tests, the fault switches, the state file, the server's
handle) keeps meaning BTC. ``Markets`` is that: the ``MarketSource`` surface answered by the
primary underlying (BTC), plus look-ups by base and by symbol.

* Option symbols (``ETHUSD-27MAR26-3000-C``) go to their underlying's market; perpetual
  symbols (``ETHUSD``) to their ``PerpMarket``.
* ``advance_to`` moves every underlying (each on its own seeded grid, so the result does not
  depend on how time is sliced); the perpetuals are functions of their index and the time.
  On a history replay a perpetual shows no book while the recorded index is stale
  (``history.RecordedPerpMarket``); on the synthetic market it is ``PerpMarket`` unchanged.
* Fault switches: ``freeze_index`` and ``set_empty_side`` apply to every market (a stale feed
  is stale everywhere; an fnmatch pattern picks its symbols); ``set_scripted_path`` drives
  the primary index only (``set_scripted_path_of`` any other).
* ``to_state`` is the primary's state with the other underlyings and the perpetuals' switches
  nested in it, so a state file of a BTC-only simulator loads unchanged.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

from simulator.market import Book, Instrument, MarketConfig, MarketModel, MarkValues, OptionQuote
from simulator.market_source import MarketSource
from simulator.perpetuals import PerpConfig, PerpMarket, btc_perp_config

if TYPE_CHECKING:  # config imports the exchange, which imports this module
    from simulator.config import SimulatorConfig

log = logging.getLogger(__name__)

_STATE_KEY = "underlyings"
_PERP_STATE_KEY = "perpetuals"


def option_base(symbol: str) -> str | None:
    """``ETH`` for ``ETHUSD-27MAR26-3000-C``; None for anything that is not an option symbol."""
    cut = symbol.find("USD-")
    return symbol[:cut] if cut > 0 else None


class Markets:
    """The option markets by base and the perpetuals by symbol; the ``MarketSource`` of the primary."""

    def __init__(self, options: dict[str, MarketSource], perps: Sequence[PerpMarket] = (),
                 primary: str = "BTC") -> None:
        if primary not in options:
            raise ValueError(f"the primary underlying {primary!r} needs an option market")
        self._primary_base = primary
        self._primary = options[primary]
        # The primary first: listings and expiries are reported in this order.
        self._options: dict[str, MarketSource] = {primary: options[primary]}
        self._options.update((base, market) for base, market in options.items() if base != primary)
        self._perps: dict[str, PerpMarket] = {perp.symbol: perp for perp in perps}
        for perp in perps:
            if perp.base not in self._options:
                raise ValueError(f"perpetual {perp.symbol} has no {perp.base} index")

    @classmethod
    def of(cls, market: MarketSource | Markets, seed: int) -> Markets:
        """``market`` itself, or a venue of that one market and its base's default perpetual.

        Lets the exchange be built on a bare ``MarketModel`` (tests), as before perpetuals.
        """
        if isinstance(market, Markets):
            return market
        base = market.config.base
        perps = [_perp_on(btc_perp_config(seed), market)] if base == "BTC" else []
        return cls({base: market}, perps, primary=base)

    # ------------------------------------------------------------------ look-ups

    @property
    def primary(self) -> MarketSource:
        return self._primary

    @property
    def primary_base(self) -> str:
        return self._primary_base

    @property
    def bases(self) -> list[str]:
        """The underlyings with options, the primary first."""
        return list(self._options)

    def option_market(self, base: str) -> MarketSource | None:
        return self._options.get(base)

    def option_markets(self) -> list[MarketSource]:
        return list(self._options.values())

    def market_of(self, symbol: str) -> MarketSource | None:
        """The option market listing ``symbol`` (by its prefix), None for a perpetual or junk."""
        base = option_base(symbol)
        return self._options.get(base) if base is not None else None

    def perp(self, symbol: str) -> PerpMarket | None:
        return self._perps.get(symbol)

    def perps(self) -> list[PerpMarket]:
        return list(self._perps.values())

    def has_perps(self) -> bool:
        """Whether any perpetual is listed (``bool(perps())`` without building the list)."""
        return bool(self._perps)

    def index_of(self, base: str) -> float:
        """The published index of ``base`` (KeyError for an underlying the venue does not have)."""
        return self._options[base].index_price()

    def index_for(self, symbol: str) -> float:
        """The index of the underlying of ``symbol`` (option or perpetual); the primary's otherwise."""
        perp = self._perps.get(symbol)
        if perp is not None:
            return perp.index_price()
        market = self.market_of(symbol)
        return (market or self._primary).index_price()

    # ------------------------------------------------------------------ MarketSource: the primary

    @property
    def config(self) -> MarketConfig:
        return self._primary.config

    @property
    def now_ms(self) -> int:
        return self._primary.now_ms

    @property
    def quote_stamp(self) -> tuple[Any, ...]:
        if len(self._options) == 1:
            return self._primary.quote_stamp
        return tuple(market.quote_stamp for market in self._options.values())

    @property
    def index_frozen(self) -> bool:
        return self._primary.index_frozen

    def advance_to(self, now_ms: int) -> None:
        for market in self._options.values():
            market.advance_to(now_ms)

    def index_price(self) -> float:
        return self._primary.index_price()

    def index_average(self, start_ms: int, end_ms: int) -> float:
        return self._primary.index_average(start_ms, end_ms)

    def delivery_price(self, expiry_ms: int) -> float | None:
        return self._primary.delivery_price(expiry_ms)

    def delivery_prices(self) -> dict[int, float]:
        return self._primary.delivery_prices()

    def estimated_delivery_price(self, expiry_ms: int) -> float:
        return self._primary.estimated_delivery_price(expiry_ms)

    def instruments(self) -> list[Instrument]:
        if len(self._options) == 1:
            return self._primary.instruments()
        return [i for market in self._options.values() for i in market.instruments()]

    def instruments_for_expiry(self, expiry_ms: int) -> list[Instrument]:
        if len(self._options) == 1:
            return self._primary.instruments_for_expiry(expiry_ms)
        return [i for market in self._options.values() for i in market.instruments_for_expiry(expiry_ms)]

    def instrument(self, symbol: str) -> Instrument | None:
        market = self.market_of(symbol) if isinstance(symbol, str) else None
        return market.instrument(symbol) if market is not None else None

    def expiries(self) -> list[int]:
        if len(self._options) == 1:
            return self._primary.expiries()
        return sorted({e for market in self._options.values() for e in market.expiries()})

    def expiry_kind(self, expiry_ms: int) -> str | None:
        for market in self._options.values():
            kind = market.expiry_kind(expiry_ms)
            if kind is not None:
                return kind
        return None

    def is_expired(self, symbol: str) -> bool:
        market = self.market_of(symbol)
        if market is None:
            raise KeyError(symbol)
        return market.is_expired(symbol)

    def quote(self, symbol: str) -> OptionQuote:
        market = self.market_of(symbol)
        if market is None:
            raise KeyError(symbol)
        return market.quote(symbol)

    def mark_values(self, symbol: str) -> MarkValues:
        """``symbol``'s mark and greeks, at a fraction of a quote's cost where the market can."""
        market = self.market_of(symbol)
        if market is None:
            raise KeyError(symbol)
        return market.mark_values(symbol)

    def book(self, symbol: str, depth: int = 100) -> Book:
        """The synthetic book of an option or a perpetual (sizes in units of the underlying)."""
        perp = self._perps.get(symbol)
        if perp is not None:
            return perp.book(depth)
        market = self.market_of(symbol)
        if market is None:
            raise KeyError(symbol)
        return market.book(symbol, depth)

    def top_of_book(self, symbol: str) -> Book:
        """``book(symbol, 1)``, at a fraction of its cost where the market can."""
        perp = self._perps.get(symbol)
        if perp is not None:
            return perp.book(1)
        market = self.market_of(symbol)
        if market is None:
            raise KeyError(symbol)
        return market.top_of_book(symbol)

    def freeze_index(self, frozen: bool) -> None:
        for market in self._options.values():
            market.freeze_index(frozen)

    def set_empty_side(self, pattern: str, side: str | None) -> None:
        for market in self._options.values():
            market.set_empty_side(pattern, side)
        for perp in self._perps.values():
            perp.set_empty_side(pattern, side)

    def set_scripted_path(self, points: Sequence[tuple[int, float]] | None) -> None:
        self._primary.set_scripted_path(points)

    def set_scripted_path_of(self, base: str, points: Sequence[tuple[int, float]] | None) -> None:
        self._options[base].set_scripted_path(points)

    # ------------------------------------------------------------------ per underlying

    def delivery_price_of(self, base: str, expiry_ms: int) -> float | None:
        market = self._options.get(base)
        return market.delivery_price(expiry_ms) if market is not None else None

    def delivery_prices_of(self, base: str) -> dict[int, float]:
        market = self._options.get(base)
        return market.delivery_prices() if market is not None else {}

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        state = dict(self._primary.to_state())
        others = {base: market.to_state() for base, market in self._options.items() if base != self._primary_base}
        if others:
            state[_STATE_KEY] = others
        if self._perps:
            state[_PERP_STATE_KEY] = {symbol: perp.to_state() for symbol, perp in self._perps.items()}
        return state


# ---------------------------------------------------------------------------- building


def _perp_on(config: PerpConfig, underlying: MarketSource) -> PerpMarket:
    """A perpetual on ``underlying``'s index; on a history replay one that shows no book while the
    recorded index is stale (``history.RecordedPerpMarket``, docs/HISTORY.md)."""
    from simulator.history import perp_market

    return perp_market(config, underlying)


def _perp_markets(config: SimulatorConfig, options: dict[str, MarketSource]) -> list[PerpMarket]:
    listed: list[PerpConfig] = config.perp_configs()
    return [_perp_on(perp, options[perp.base]) for perp in listed if perp.base in options]


def build_markets(config: SimulatorConfig, start_ms: int) -> Markets:
    """Every market of a fresh simulator: BTC (synthetic or recorded), ETH unless disabled or
    replaying history (replays are BTC-only), and the perpetuals of the underlyings present."""
    from simulator.history import build_market

    options: dict[str, MarketSource] = {"BTC": build_market(config, start_ms)}
    eth = config.eth_market_config()
    if eth is not None:
        options[eth.base] = MarketModel(eth, start_ms)
    return Markets(options, _perp_markets(config, options), primary="BTC")


def restore_markets(config: SimulatorConfig, state: dict[str, Any]) -> Markets:
    """The markets saved by ``Markets.to_state`` (a BTC-only state gets a fresh ETH at its time)."""
    from simulator.history import restore_market

    options: dict[str, MarketSource] = {"BTC": restore_market(config, state)}
    eth = config.eth_market_config()
    if eth is not None:
        saved = state.get(_STATE_KEY, {}).get(eth.base)
        if saved is not None:
            options[eth.base] = MarketModel.from_state(eth, saved)
        else:
            log.warning("the state file has no %s market: %s starts afresh at the saved time", eth.base, eth.base)
            options[eth.base] = MarketModel(eth, options["BTC"].now_ms)
    markets = Markets(options, _perp_markets(config, options), primary="BTC")
    for symbol, saved_perp in state.get(_PERP_STATE_KEY, {}).items():
        perp = markets.perp(symbol)
        if perp is not None:
            perp.load_state(saved_perp)
    return markets


__all__ = ["Markets", "build_markets", "option_base", "restore_markets"]
