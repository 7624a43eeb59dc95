"""The perpetual futures of the simulated exchange (``BTCUSD``, ``ETHUSD``): contract, mark, funding, book.

Why a module of its own: a perpetual has no expiry, no strike and no volatility surface; what
it has is a mark price that differs a little from its underlying's index, a funding rate every
8 hours derived from that difference, and a tight book around the mark. The exchange model
(``exchange.py``) trades it with the same matching and passive-fill engine as the options; this
module only says what the perpetual's market looks like at any instant.

Model (docs/SIMULATOR.md, "Perpetual futures"):

* **Premium**: ``p(t)`` = ``premium_bias`` + ``premium_amplitude`` x a seeded uniform draw in
  [-1, 1] at knots every ``premium_knot_seconds``, linear in between. A pure function of
  (seed, symbol, time): no state to save, and the same whatever the slicing of time.
* **Mark price**: ``index x (1 + p(t))`` at the underlying's quote instant (the exchange's
  median of fair, moving-average and latest prices simplified to its fair-price part).
* **Funding** at 00:00, 08:00 and 16:00 UTC: ``rate = clamp(P + clamp(interest - P, +-deviation),
  +-cap)`` where ``P`` is the mean of ``p`` sampled every minute of the 8-hour period; a long pays
  ``qty x mark x rate`` when the rate is positive (a short receives it).
* **Book**: ``depth_levels`` levels a side around the mark, half-spread ``half_spread_bps`` of the
  mark (at least a tick), level gaps of 1-3 units of ``level_gap_bps``, sizes drawn uniformly from
  ``level_size``; re-drawn from (seed, symbol, bucket) every ``book_refresh_seconds``.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from simulator.side_faults import EmptySides

FUNDING_INTERVAL_MS = 8 * 3_600_000   # 00:00, 08:00, 16:00 UTC (epoch-aligned)
FUNDING_SAMPLE_MS = 60_000            # the premium is averaged once a minute over a period
_INF = float("inf")

Book = tuple[list[tuple[float, float]], list[tuple[float, float]]]


def _default_mm_tiers() -> tuple[tuple[float, float], ...]:
    """(notional up to, maintenance-margin rate) of BTC/ETH, the tiers of the exchange's help centre."""
    return ((50_000.0, 0.004), (500_000.0, 0.005), (10_000_000.0, 0.01), (75_000_000.0, 0.025), (_INF, 0.5))


@dataclass(frozen=True)
class PerpConfig:
    """One perpetual contract and its market model; frozen, so configs can be shared.

    ``qty_step`` is the contract size and quantity step (BTC 0.001, ETH 0.01), which is also
    the minimum order (``min_qty`` defaults to it). Fees are on notional (qty x price).
    ``default_leverage`` is what an account trades at until it sets another one.
    ``liquidation_fee_rate`` enters the maintenance margin (qty x (avg x mm rate + fee rate x mark)).
    """

    symbol: str = "BTCUSD"
    base: str = "BTC"
    contract_id: int = 1
    qty_step: float = 0.001
    min_qty: float | None = None
    tick_size: float = 0.1
    limit_max_qty: float = 1000.0
    market_max_qty: float = 120.0
    max_open_orders: int = 200
    position_max_qty: float = 100_000_000.0
    maker_fee_rate: float = 0.0002
    taker_fee_rate: float = 0.0006
    max_leverage: int = 125
    default_leverage: int = 10
    mm_tiers: tuple[tuple[float, float], ...] = field(default_factory=_default_mm_tiers)
    liquidation_fee_rate: float = 0.0005
    price_band_pct: float = 5.0            # limit prices beyond mark +- this % are refused (10531/10532)
    market_slippage_pct: float = 5.0       # a market order takes liquidity up to mark +- this %
    premium_bias: float = 0.0
    premium_amplitude: float = 0.0004
    premium_knot_seconds: float = 300.0
    interest_rate: float = 0.0001          # per 8 h
    funding_deviation_limit: float = 0.0005
    funding_rate_cap: float = 0.003
    half_spread_bps: float = 1.0
    level_gap_bps: float = 0.5
    depth_levels: int = 20
    level_size: tuple[float, float] = (0.05, 3.0)
    book_refresh_seconds: float = 1.0
    seed: int = 7

    def __post_init__(self) -> None:
        if not self.symbol.endswith("USD") or self.symbol[:-3] != self.base:
            raise ValueError(f"a perpetual's symbol is <BASE>USD, got {self.symbol!r} for base {self.base!r}")
        units = 1.0 / self.qty_step if self.qty_step > 0 else 0.0
        if self.qty_step <= 0 or abs(units - round(units)) > 1e-9:
            raise ValueError("qty_step must be positive and divide 1 (0.001, 0.01, 0.1 ...)")
        minimum = self.min_qty if self.min_qty is not None else self.qty_step
        if minimum < self.qty_step - 1e-12 or self.tick_size <= 0:
            raise ValueError("min_qty must be >= qty_step and tick_size positive")
        if not 1 <= self.default_leverage <= self.max_leverage:
            raise ValueError("need 1 <= default_leverage <= max_leverage")
        low, high = self.level_size
        if not 0 < low <= high or self.depth_levels < 1:
            raise ValueError("level_size must be (low, high) with 0 < low <= high, depth_levels >= 1")
        if self.premium_knot_seconds * 1000 < 1 or self.book_refresh_seconds * 1000 < 1:
            raise ValueError("premium_knot_seconds and book_refresh_seconds must be positive")
        if not self.mm_tiers or self.mm_tiers[-1][0] != _INF:
            raise ValueError("mm_tiers must end with an unbounded tier")

    @property
    def units(self) -> int:
        """Lots (qty steps) per unit of the base coin: the exchange keeps quantities as integer lots."""
        return int(round(1.0 / self.qty_step))

    @property
    def minimum_qty(self) -> float:
        return self.min_qty if self.min_qty is not None else self.qty_step

    @property
    def display_name(self) -> str:
        return f"{self.base}-PERP"

    def mm_rate(self, notional: float) -> float:
        """Maintenance-margin rate of a position of ``notional`` USD (the tier it falls in)."""
        for limit, rate in self.mm_tiers:
            if notional <= limit:
                return rate
        return self.mm_tiers[-1][1]


def btc_perp_config(seed: int = 7) -> PerpConfig:
    """BTCUSD as the public configuration documents it (tick 0.1, 0.001 BTC, maker 0.02 %, taker 0.06 %)."""
    return PerpConfig(seed=seed)


def eth_perp_config(seed: int = 7) -> PerpConfig:
    """ETHUSD: 0.01 ETH steps, tick 0.01 (no documented values: the simulator's choice, docs/SIMULATOR.md)."""
    return PerpConfig(symbol="ETHUSD", base="ETH", contract_id=2, qty_step=0.01, tick_size=0.01,
                      limit_max_qty=10_000.0, market_max_qty=1_200.0, level_size=(1.0, 60.0), seed=seed)


def funding_boundary_at_or_before(t_ms: int) -> int:
    """The funding instant (00/08/16 UTC) at or before ``t_ms``."""
    return (int(t_ms) // FUNDING_INTERVAL_MS) * FUNDING_INTERVAL_MS


def next_funding_after(t_ms: int) -> int:
    """The first funding instant strictly after ``t_ms``."""
    return funding_boundary_at_or_before(t_ms) + FUNDING_INTERVAL_MS


def _stable_seed(*parts: object) -> int:
    text = "|".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _decimals(step: float) -> int:
    text = f"{step:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


class IndexSource(Protocol):
    """What a perpetual needs from its underlying's market: the index now and its time."""

    @property
    def now_ms(self) -> int: ...

    def index_price(self) -> float: ...


@dataclass(frozen=True)
class PerpTicker:
    """A perpetual at one instant: what the symbol, ticker and position endpoints show."""

    symbol: str
    time_ms: int
    index_price: float
    mark_price: float
    premium: float
    bid: float
    ask: float


class PerpMarket:
    """The market of one perpetual, derived from its underlying's index and the time.

    Stateless apart from caches and the empty-side fault switch: everything it shows is a
    pure function of (config, underlying index, time), so saving the underlying is enough.
    """

    def __init__(self, config: PerpConfig, underlying: IndexSource) -> None:
        self.config = config
        self.underlying = underlying
        self._tick_dp = _decimals(config.tick_size)
        self._qty_dp = _decimals(config.qty_step)
        self._knot_ms = max(1, round(config.premium_knot_seconds * 1000))
        self._refresh_ms = max(1, round(config.book_refresh_seconds * 1000))
        self._knots: dict[int, float] = {}
        self._book_cache: tuple[tuple[Any, ...], Book] | None = None
        self._rate_cache: dict[tuple[str, int, int], float] = {}
        self.empty_sides = EmptySides()
        self._fault_version = 0

    @property
    def symbol(self) -> str:
        return self.config.symbol

    @property
    def base(self) -> str:
        return self.config.base

    # ------------------------------------------------------------------ premium and mark

    def _knot(self, k: int) -> float:
        value = self._knots.get(k)
        if value is None:
            cfg = self.config
            draw = random.Random(_stable_seed(cfg.seed, cfg.symbol, "premium", k)).random()
            value = cfg.premium_bias + cfg.premium_amplitude * (2.0 * draw - 1.0)
            if len(self._knots) > 4096:
                self._knots.clear()
            self._knots[k] = value
        return value

    def premium(self, t_ms: int) -> float:
        """The mark's premium over the index at ``t_ms`` (a fraction of the index)."""
        k, offset = divmod(int(t_ms), self._knot_ms)
        left, right = self._knot(k), self._knot(k + 1)
        return left + (right - left) * offset / self._knot_ms

    def quote_time_ms(self) -> int:
        """The instant the perpetual's prices are computed at: the underlying's time, on a 1 s grid."""
        return (int(self.underlying.now_ms) // 1000) * 1000

    def index_price(self) -> float:
        return float(self.underlying.index_price())

    def mark_price(self) -> float:
        """``index x (1 + premium)`` now, 8 decimals like the exchange's marks."""
        return round(self.index_price() * (1.0 + self.premium(self.quote_time_ms())), 8)

    def ticker(self) -> PerpTicker:
        bids, asks = self.book(1)
        t_ms = self.quote_time_ms()
        return PerpTicker(symbol=self.symbol, time_ms=t_ms, index_price=self.index_price(),
                          mark_price=self.mark_price(), premium=self.premium(t_ms),
                          bid=bids[0][0] if bids else 0.0, ask=asks[0][0] if asks else 0.0)

    # ------------------------------------------------------------------ funding

    def _rate_from_premium(self, average: float) -> float:
        cfg = self.config
        deviation = cfg.funding_deviation_limit
        inner = min(deviation, max(-deviation, cfg.interest_rate - average))
        return round(min(cfg.funding_rate_cap, max(-cfg.funding_rate_cap, average + inner)), 8)

    def _average_premium(self, start_ms: int, end_ms: int) -> float:
        """Mean premium over the minute grid in (start_ms, end_ms]; the premium at end_ms if none."""
        first = start_ms // FUNDING_SAMPLE_MS + 1
        last = end_ms // FUNDING_SAMPLE_MS
        if last < first:
            return self.premium(end_ms)
        total = 0.0
        for minute in range(first, last + 1):
            total += self.premium(minute * FUNDING_SAMPLE_MS)
        return total / (last - first + 1)

    def funding_rate(self, funding_ms: int) -> float:
        """The rate settled at the funding instant ``funding_ms`` (its 8-hour period ends there)."""
        key = ("settled", int(funding_ms), 0)
        cached = self._rate_cache.get(key)
        if cached is None:
            cached = self._rate_from_premium(self._average_premium(funding_ms - FUNDING_INTERVAL_MS, funding_ms))
            if len(self._rate_cache) > 256:
                self._rate_cache.clear()
            self._rate_cache[key] = cached
        return cached

    def estimated_funding_rate(self, now_ms: int) -> float:
        """The rate the running period would settle at if it ended now (the public "current" rate)."""
        start = funding_boundary_at_or_before(now_ms)
        minute = (int(now_ms) // FUNDING_SAMPLE_MS) * FUNDING_SAMPLE_MS
        key = ("running", start, minute)
        cached = self._rate_cache.get(key)
        if cached is None:
            cached = self._rate_from_premium(self._average_premium(start, minute))
            if len(self._rate_cache) > 256:
                self._rate_cache.clear()
            self._rate_cache[key] = cached
        return cached

    # ------------------------------------------------------------------ book

    def set_empty_side(self, pattern: str, side: str | None) -> None:
        self.empty_sides.set(pattern, side)
        self._fault_version += 1

    def book(self, depth: int = 100) -> Book:
        """(bids descending, asks ascending) of (price, size in base coin), at most ``depth`` a side."""
        t_ms = self.quote_time_ms()
        index = self.index_price()
        stamp = (t_ms, index, self._fault_version)
        cached = self._book_cache
        if cached is None or cached[0] != stamp:
            cached = (stamp, self._draw_book(t_ms, index))
            self._book_cache = cached
        bids, asks = cached[1]
        depth = max(0, int(depth))
        return list(bids[:depth]), list(asks[:depth])

    def _draw_book(self, t_ms: int, index: float) -> Book:
        cfg = self.config
        mark = index * (1.0 + self.premium(t_ms))
        rng = random.Random(_stable_seed(cfg.seed, cfg.symbol, "book", t_ms // self._refresh_ms))
        tick = cfg.tick_size
        half = max(tick, mark * cfg.half_spread_bps / 10_000.0)
        best_bid = self._floor(mark - half * rng.uniform(0.8, 1.25))
        best_ask = self._ceil(mark + half * rng.uniform(0.8, 1.25))
        if best_ask <= best_bid:
            best_ask = round(best_bid + tick, self._tick_dp)
        gap_unit = max(tick, self._floor(mark * cfg.level_gap_bps / 10_000.0))
        low, high = cfg.level_size
        bids: list[tuple[float, float]] = []
        asks: list[tuple[float, float]] = []
        price = best_bid
        for _ in range(cfg.depth_levels):
            size = self._size(rng.uniform(low, high))
            if price >= tick:
                bids.append((price, size))
            price = round(price - rng.randint(1, 3) * gap_unit, self._tick_dp)
        price = best_ask
        for _ in range(cfg.depth_levels):
            asks.append((price, self._size(rng.uniform(low, high))))
            price = round(price + rng.randint(1, 3) * gap_unit, self._tick_dp)
        bid_empty, ask_empty = self.empty_sides.of(cfg.symbol)
        return ([] if bid_empty else bids), ([] if ask_empty else asks)

    def _floor(self, price: float) -> float:
        tick = self.config.tick_size
        return round(math.floor(price / tick + 1e-9) * tick, self._tick_dp)

    def _ceil(self, price: float) -> float:
        tick = self.config.tick_size
        return round(math.ceil(price / tick - 1e-9) * tick, self._tick_dp)

    def _size(self, size: float) -> float:
        step = self.config.qty_step
        return round(max(step, math.floor(size / step + 1e-9) * step), self._qty_dp)

    def snap_price(self, price: float) -> float:
        """``price`` truncated to the tick (toward zero), as the options' off-tick default."""
        return self._floor(price)

    def to_state(self) -> dict[str, Any]:
        """Only the fault switch: prices are functions of the underlying and the time."""
        return {"empty_sides": self.empty_sides.to_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.empty_sides = EmptySides(state.get("empty_sides"))
        self._fault_version += 1


__all__ = [
    "FUNDING_INTERVAL_MS",
    "PerpConfig",
    "PerpMarket",
    "PerpTicker",
    "btc_perp_config",
    "eth_perp_config",
    "funding_boundary_at_or_before",
    "next_funding_after",
]
