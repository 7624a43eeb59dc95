"""The market of the simulated exchange: BTC index, listed options, marks, greeks and books.

Why it exists: the exchange model (``exchange.py``) needs prices that move on the
simulated clock, a realistic listing calendar and books to match against, and the whole
thing must be reproducible from a seed so that a 48-hour paper run and a test give the
same answers every time (API.md 13 items 6-9, 19, 26).

Model, in one paragraph: the index follows a driftless geometric random walk on a fixed
time grid (``step_seconds``) anchored at the start instant, drawn from one seeded
``random.Random`` that is consumed strictly once per grid step, so the path does not
depend on how callers slice time. Options are listed from ``calendar.expiry_schedule``
with strikes around the index; new strikes are added as the index wanders (never
delisted before expiry). Marks and greeks are Black-Scholes on a parametric smile.
Books are synthetic liquidity around the mark whose noise is a pure function of
(seed, symbol, refresh bucket), so they are deterministic too and "move" every bucket.

Fault switches (index freeze, empty book side, scripted index path) are runtime state
that tests flip; they never consume the index RNG, so a fault does not shift the path.
"""
from __future__ import annotations

import bisect
import hashlib
import logging
import math
import random
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np

from simulator import chain_pricing
from simulator.calendar import (
    KINDS,
    expiry_schedule,
    format_strike,
    format_symbol,
    raw_expiry_schedule,
)
from simulator.pricing import years_between
from simulator.side_faults import EmptySides

log = logging.getLogger(__name__)

STATE_VERSION = 1
_SECONDS_PER_YEAR = 365.0 * 86_400
_TERM_REFERENCE_YEARS = 30.0 / 365.0   # the term factor is 1 at a 30-day expiry
_MIN_TERM_YEARS = 1.0 / (365.0 * 24)   # smile inputs stop changing inside the last hour
_ITM_SPREAD_SHARE = 0.005              # ITM spreads scale with extrinsic + 0.5 % of index


def _default_strike_range_pct() -> dict[str, float]:
    return {"daily": 10.0, "weekly": 20.0, "monthly": 40.0, "quarterly": 60.0}


def _default_strike_step() -> dict[str, float]:
    return {"daily": 500.0, "weekly": 1000.0, "monthly": 1000.0, "quarterly": 2000.0}


@dataclass(frozen=True)
class MarketConfig:
    """Every knob of the market; frozen so one config can be shared by restarts and tests."""

    seed: int = 7
    base: str = "BTC"
    start_index: float = 90_000.0
    annual_vol: float = 0.50               # index random-walk vol (GBM, no drift)
    jump_intensity_per_day: float = 0.0    # optional Poisson jumps
    jump_size_pct: float = 3.0
    step_seconds: float = 1.0              # fixed grid of the index path (determinism)
    atm_vol: float = 0.50
    smile_curvature: float = 0.8           # SSVI eta (see MarketModel.surface_iv)
    smile_skew: float = -0.15              # SSVI rho, in (-1, 1)
    term_slope: float = -0.05
    tick_size: float = 1.0                 # API.md 12 #1 default
    min_qty: float = 0.01
    qty_step: float = 0.01                 # the option's quantity step: the exchange's integer lot
    strike_range_pct: dict[str, float] = field(default_factory=_default_strike_range_pct, hash=False)
    strike_step: dict[str, float] = field(default_factory=_default_strike_step, hash=False)
    spread_pct: float = 8.0                # book half-spread as % of the spread reference
    min_spread_ticks: int = 2
    depth_levels: int = 5
    level_size: tuple[float, float] = (0.5, 5.0)
    empty_bid_below: float = 5.0           # theo below this -> bid side empty (API.md 11 #21)
    book_refresh_seconds: float = 5.0
    listing_hour_utc: int = 8              # informational: the schedule rolls at the 08:00 expiry
    scripted_path: tuple[tuple[int, float], ...] | None = None
    history_seconds: float = 7200.0
    # Additions beyond the shared interface:
    rate: float = 0.0                      # BS rate; forward = index * exp(rate * T)
    iv_min: float = 0.15
    iv_max: float = 3.0
    otm_spread_widening: float = 0.75      # extra half-spread per OTM standard deviation (max 4 sd)
    delivery_window_seconds: float = 1800.0  # settlement = mean index over this window (API.md 4)
    listing_check_seconds: float = 60.0    # how often listings/strikes are re-checked (divides a day)
    scenario: str | None = None            # set by scenarios.scenario_market: other underlyings follow it

    def __post_init__(self) -> None:
        if self.start_index <= 0 or self.annual_vol < 0:
            raise ValueError("start_index must be > 0 and annual_vol >= 0")
        if self.step_seconds * 1000 < 1 or self.tick_size <= 0 or self.min_qty <= 0:
            raise ValueError("step_seconds, tick_size and min_qty must be positive")
        units = 1.0 / self.qty_step if self.qty_step > 0 else 0.0
        if self.qty_step <= 0 or abs(units - round(units)) > 1e-9:
            raise ValueError("qty_step must be positive and divide 1 (0.01, 0.1 ...)")
        steps = self.min_qty / self.qty_step
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError("min_qty must be a whole number of qty_step")
        if self.book_refresh_seconds * 1000 < 1 or self.depth_levels < 1:
            raise ValueError("book_refresh_seconds and depth_levels must be positive")
        check_ms = round(self.listing_check_seconds * 1000)
        if check_ms < 1000 or 86_400_000 % check_ms:
            raise ValueError("listing_check_seconds must be >= 1 and divide a day evenly")
        for name in ("strike_range_pct", "strike_step"):
            table = getattr(self, name)
            missing = [kind for kind in KINDS if not table.get(kind, 0) > 0]
            if missing:
                raise ValueError(f"{name} needs a positive value for {missing}")
        low, high = self.level_size
        if not 0 < low <= high:
            raise ValueError("level_size must be (low, high) with 0 < low <= high")
        if not 0 < self.iv_min <= self.iv_max:
            raise ValueError("need 0 < iv_min <= iv_max")
        # SSVI no-butterfly-arbitrage conditions (Gatheral & Jacquier): |rho| < 1 and
        # eta^2 * (1 + |rho|) <= 4 with eta = smile_curvature.
        if not -1 < self.smile_skew < 1 or self.smile_curvature < 0:
            raise ValueError("smile_skew must be in (-1, 1) and smile_curvature >= 0")
        if self.smile_curvature ** 2 * (1 + abs(self.smile_skew)) > 4:
            raise ValueError("smile_curvature too large: the smile would allow arbitrage")


@dataclass(frozen=True, slots=True)
class Instrument:
    """One listed option; kept after expiry so the exchange can settle it.

    Slotted, its derived names computed once at construction: a run keeps every instrument
    ever listed (hundreds a day), so a per-instrument ``__dict__`` was memory growing with it.
    """

    symbol: str
    base: str
    strike: float
    strike_token: str
    option_type: str  # 'C' | 'P'
    expiry_ms: int
    listed_ms: int
    tick_size: float
    min_qty: float
    kind: str
    qty_step: float = 0.01
    # ``BTC-5FEB26-80000-C``: the symbol without ``USD``.
    display_name: str = field(init=False, repr=False, compare=False)
    # A 19-digit int64 id derived from the symbol, stable across processes and restarts.
    option_id: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "display_name", self.symbol.replace(f"{self.base}USD-", f"{self.base}-", 1))
        digest = hashlib.sha256(self.symbol.encode("utf-8")).digest()
        object.__setattr__(self, "option_id", 10**18 + int.from_bytes(digest[:8], "big") % (8 * 10**18))

    @property
    def units(self) -> int:
        """Lots per unit of the underlying: the exchange keeps quantities as integer lots."""
        return int(round(1.0 / self.qty_step))


class OptionQuote(NamedTuple):
    """What the chain and option-detail endpoints show for one option at one instant.

    A NamedTuple, not a frozen dataclass: a chain makes one per option per quote stamp, and
    a frozen dataclass's constructor cost as much as the option's array pricing.
    """

    symbol: str
    time_ms: int
    index_price: float
    underlying_price: float  # forward
    mark: float
    iv: float  # fraction
    delta: float
    gamma: float
    vega: float
    theta: float
    rho: float
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    bid_iv: float
    ask_iv: float


class MarkValues(NamedTuple):
    """An option's mark and greeks: the fields of its ``OptionQuote`` that need no book.

    What an account summary and the positions endpoint read for every position on every poll;
    ``MarketModel`` gives them without laying out the books.
    """

    mark: float
    delta: float
    gamma: float
    vega: float
    theta: float
    rho: float

    @classmethod
    def of(cls, quote: OptionQuote) -> MarkValues:
        """The mark and greeks ``quote`` shows."""
        return cls(quote.mark, quote.delta, quote.gamma, quote.vega, quote.theta, quote.rho)


Book = tuple[list[tuple[float, float]], list[tuple[float, float]]]


class _ExpiryTerms(NamedTuple):
    """The strike-independent inputs of every quote of one expiry at one quote stamp."""

    spot: float
    quote_time_ms: int
    t_years: float
    forward: float
    atm: float
    moneyness_scale: float  # atm * sqrt(T): divides ln(K/F) into SSVI's z


class _ExpiryListing(NamedTuple):
    """The live options of one expiry as arrays for ``chain_pricing`` (one listing version)."""

    instruments: list[Instrument]
    strikes: np.ndarray
    is_call: np.ndarray
    noise_keys: np.ndarray   # uint64 per option: the (seed, symbol) key of its book noise


class _ExpiryMarks(NamedTuple):
    """The first stage of an expiry's pricing at one quote stamp: its smile and model prices.

    Enough for marks (what an account summary values positions at, every poll); the books (the
    second stage) wait until a book is asked for, and the bid/ask implied vols (the third, the
    costliest) until a quote is.
    """

    listing: _ExpiryListing
    terms: _ExpiryTerms
    ivs: np.ndarray
    theory: chain_pricing.GreekArrays
    values: dict[str, MarkValues]   # by symbol; the mark is the model price rounded to the cent


class _ExpiryDraws(NamedTuple):
    """The second stage of an expiry's pricing: every option's best prices and top sizes (with
    its half-spread, in its ``_BookDraw``), before any side fault. Enough for books (the passive engine
    reads one per resting order per engine step); the quotes' bid/ask implied vols, the costly
    third stage, wait until a quote is asked for."""

    marks: _ExpiryMarks
    has_bids: np.ndarray
    best_bid: np.ndarray
    best_ask: np.ndarray
    bid_lots: np.ndarray
    ask_lots: np.ndarray


class _BookDraw(NamedTuple):
    """One book's best prices and top sizes at one quote stamp (see ``MarketModel._price_expiry``)."""

    theo: float              # the unrounded model price the book is laid around
    half: float              # half-spread
    has_bids: bool           # False: no bid side (theo below empty_bid_below, or bid under a tick)
    best_bid: float
    best_ask: float
    bid_lots: float          # size of the best bid level, in lots of min_qty
    ask_lots: float          # size of the best ask level


class _ScriptedPath:
    """Piecewise-linear index path through (epoch_ms, price) points, flat outside them."""

    def __init__(self, points: Sequence[tuple[int, float]]) -> None:
        ordered = sorted((int(t), float(p)) for t, p in points)
        if not ordered:
            raise ValueError("a scripted path needs at least one point")
        if any(p <= 0 for _, p in ordered):
            raise ValueError("scripted index prices must be positive")
        self.times = [t for t, _ in ordered]
        self.prices = [p for _, p in ordered]

    def at(self, t_ms: int) -> float:
        times, prices = self.times, self.prices
        if t_ms <= times[0]:
            return prices[0]
        if t_ms >= times[-1]:
            return prices[-1]
        right = bisect.bisect_right(times, t_ms)
        t0, t1 = times[right - 1], times[right]
        p0, p1 = prices[right - 1], prices[right]
        if t1 == t0:
            return p1
        return p0 + (p1 - p0) * (t_ms - t0) / (t1 - t0)

    def points(self) -> list[list[float]]:
        return [[t, p] for t, p in zip(self.times, self.prices)]


def _tick_decimals(tick: float) -> int:
    text = f"{tick:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def _stable_seed(*parts: object) -> int:
    """A seed from a stable hash (``hash()`` is salted per process, so never that)."""
    text = "|".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


class MarketModel:
    """Seeded, clock-driven market state. Thread-safe: every public method takes one lock.

    ``freeze_index(True)`` publishes the index value of the moment while the hidden walk
    keeps advancing underneath (a stale feed): on unfreezing, the index jumps to where
    the walk is. The index history (hence delivery prices) records the *published* value.
    A scripted path drives the walk itself, so clearing it continues from the last
    scripted price.
    """

    # Set by ``_setup`` (shared with ``from_state``); declared here, where the type checker reads first.
    _script: _ScriptedPath | None
    _history: list[float]

    def __init__(self, config: MarketConfig, start_ms: int) -> None:
        self._setup(config, int(start_ms))
        script = self._script
        self._walk = script.at(self._start_ms) if script else float(config.start_index)
        self._history = [self._walk]
        self._roll_listing(self._start_ms)
        self._extend_strikes(self._start_ms)

    # ------------------------------------------------------------------ construction

    def _setup(self, config: MarketConfig, start_ms: int) -> None:
        """State shared by ``__init__`` and ``from_state`` before either fills it in."""
        self._config = config
        self._lock = threading.RLock()
        self._start_ms = start_ms
        self._now_ms = start_ms
        self._step_ms = max(1, round(config.step_seconds * 1000))
        self._check_ms = round(config.listing_check_seconds * 1000)
        self._refresh_ms = max(1, round(config.book_refresh_seconds * 1000))
        self._window_ms = round(config.delivery_window_seconds * 1000)
        self._history_cap = max(
            math.ceil(config.history_seconds * 1000 / self._step_ms),
            math.ceil((self._window_ms + self._check_ms) / self._step_ms),
        ) + 1
        self._tick_dp = _tick_decimals(config.tick_size)
        self._lot_dp = _tick_decimals(config.min_qty)
        self._rng = random.Random(config.seed)
        self._k = 0
        self._walk = float(config.start_index)
        self._frozen_value: float | None = None
        self._script = _ScriptedPath(config.scripted_path) if config.scripted_path else None
        self._history = []
        self._history_k0 = 0
        self._instruments: dict[str, Instrument] = {}
        self._expiry_kind: dict[int, str] = {}
        self._active: dict[int, dict[float, tuple[str, str]]] = {}
        self._strike_bounds: dict[int, dict[str, tuple[int, int] | None]] = {}
        self._delivery: dict[int, float] = {}
        self._next_roll_ms = start_ms
        self._empty_sides = EmptySides()
        self._fault_version = 0
        self._listing_version = 0
        self._sorted_cache: tuple[int, list[Instrument]] | None = None
        # (listing version, first expiry, expiries): valid until either changes
        self._expiries_cache: tuple[int, float, list[int]] | None = None
        self._cache_stamp: tuple[Any, ...] | None = None
        self._quote_cache: dict[str, OptionQuote] = {}
        self._book_cache: dict[str, Book] = {}
        self._draw_cache: dict[str, _BookDraw] = {}
        self._priced_expiries: set[int] = set()
        self._marked_expiries: dict[int, _ExpiryMarks | None] = {}
        self._drawn_expiries: dict[int, _ExpiryDraws | None] = {}
        self._listing_arrays: dict[int, tuple[int, _ExpiryListing | None]] = {}

    @property
    def config(self) -> MarketConfig:
        return self._config

    @property
    def now_ms(self) -> int:
        return self._now_ms

    @property
    def start_ms(self) -> int:
        return self._start_ms

    # ------------------------------------------------------------------ time

    def advance_to(self, now_ms: int) -> None:
        """Move the market to ``now_ms`` (no-op if not later than the current time).

        Listings, strike extensions and delivery prices are processed on fixed
        ``listing_check_seconds`` boundaries (epoch-aligned, so 08:00 expiries fall on
        one) and the index on its own grid: the result never depends on slicing.
        """
        now_ms = int(now_ms)
        with self._lock:
            if now_ms <= self._now_ms:
                return
            check = (self._now_ms // self._check_ms + 1) * self._check_ms
            while check <= now_ms:
                self._step_grid_to(self._grid_index(check))
                self._now_ms = check
                self._on_check(check)
                check += self._check_ms
            self._step_grid_to(self._grid_index(now_ms))
            self._now_ms = now_ms

    def _grid_index(self, t_ms: int) -> int:
        return (t_ms - self._start_ms) // self._step_ms

    def _step_grid_to(self, k_target: int) -> None:
        """Advance the walk to grid point ``k_target``, one RNG consumption pattern per step."""
        steps = k_target - self._k
        if steps <= 0:
            return
        cfg = self._config
        dt = self._step_ms / 1000.0 / _SECONDS_PER_YEAR
        sigma = cfg.annual_vol * math.sqrt(dt)
        mu = -0.5 * sigma * sigma  # driftless GBM: E[S_t] = S_0
        gauss, exp, append = self._rng.gauss, math.exp, self._history.append
        price = self._walk
        if cfg.jump_intensity_per_day <= 0 and self._script is None and self._frozen_value is None:
            for _ in range(steps):
                price *= exp(mu + sigma * gauss(0.0, 1.0))
                append(price)
        else:
            price = self._step_general(steps, price, mu, sigma)
        self._walk = price
        self._k = k_target
        self._trim_history()

    def _step_general(self, steps: int, price: float, mu: float, sigma: float) -> float:
        """The slow path: jumps, scripted path and/or a frozen published value."""
        cfg = self._config
        rng = self._rng
        jump_probability = cfg.jump_intensity_per_day * self._step_ms / 86_400_000
        jump = cfg.jump_size_pct / 100.0
        script = self._script
        for offset in range(1, steps + 1):
            shock = math.exp(mu + sigma * rng.gauss(0.0, 1.0))
            if jump_probability > 0 and rng.random() < jump_probability:
                shock *= (1.0 + jump) if rng.random() < 0.5 else (1.0 - jump)
            if script is not None:
                price = script.at(self._start_ms + (self._k + offset) * self._step_ms)
            else:
                price *= shock
            self._history.append(self._frozen_value if self._frozen_value is not None else price)
        return price

    def _trim_history(self) -> None:
        excess = len(self._history) - 2 * self._history_cap
        if excess > 0:
            drop = len(self._history) - self._history_cap
            del self._history[:drop]
            self._history_k0 += drop

    def _on_check(self, t_ms: int) -> None:
        """Listing-check boundary: settle-average passed expiries, roll the calendar, add strikes."""
        for expiry in sorted(e for e in self._active if e <= t_ms):
            average = self._grid_average(expiry - self._window_ms, expiry)
            self._delivery[expiry] = average if average is not None else self.index_price()
            del self._active[expiry]
            self._strike_bounds.pop(expiry, None)
            self._listing_version += 1
            log.debug("expiry %d passed, delivery price %.2f", expiry, self._delivery[expiry])
        if t_ms >= self._next_roll_ms:
            self._roll_listing(t_ms)
        self._extend_strikes(t_ms)

    # ------------------------------------------------------------------ listing

    def _roll_listing(self, t_ms: int) -> None:
        """Register every expiry of the schedule at ``t_ms`` and the strike grids it qualifies for."""
        primary = dict(expiry_schedule(t_ms))
        raw = raw_expiry_schedule(t_ms)
        for expiry, kind in raw:
            if expiry not in self._expiry_kind:
                self._expiry_kind[expiry] = primary[expiry]
                self._active[expiry] = {}
                self._strike_bounds[expiry] = {}
            if expiry in self._active:
                self._strike_bounds[expiry].setdefault(kind, None)
        self._next_roll_ms = min(expiry for expiry, _ in raw)

    def _extend_strikes(self, t_ms: int) -> None:
        """Keep each active expiry's strike grid(s) centred on the index; never delist."""
        spot = self.index_price()
        cfg = self._config
        for expiry, bounds_by_kind in self._strike_bounds.items():
            for kind, bounds in bounds_by_kind.items():
                step = float(cfg.strike_step[kind])
                width = cfg.strike_range_pct[kind] / 100.0
                low = max(1, math.ceil(spot * (1 - width) / step - 1e-9))
                high = math.floor(spot * (1 + width) / step + 1e-9)
                if high < low:
                    low = high = max(1, round(spot / step))
                if bounds is None:
                    new_range: Sequence[int] = range(low, high + 1)
                    bounds_by_kind[kind] = (low, high)
                else:
                    old_low, old_high = bounds
                    if low >= old_low and high <= old_high:
                        continue
                    new_range = [*range(low, old_low), *range(old_high + 1, high + 1)]
                    bounds_by_kind[kind] = (min(low, old_low), max(high, old_high))
                for multiple in new_range:
                    self._list_strike(expiry, round(multiple * step, 8), t_ms)

    def _list_strike(self, expiry: int, strike: float, t_ms: int) -> None:
        strikes = self._active[expiry]
        if strike in strikes:
            return
        cfg = self._config
        pair = []
        for option_type in ("C", "P"):
            symbol = format_symbol(cfg.base, expiry, strike, option_type)
            self._instruments[symbol] = Instrument(
                symbol=symbol, base=cfg.base, strike=strike, strike_token=format_strike(strike),
                option_type=option_type, expiry_ms=expiry, listed_ms=t_ms,
                tick_size=cfg.tick_size, min_qty=cfg.min_qty, kind=self._expiry_kind[expiry],
                qty_step=cfg.qty_step,
            )
            pair.append(symbol)
        strikes[strike] = (pair[0], pair[1])
        self._listing_version += 1

    # ------------------------------------------------------------------ index

    def index_price(self) -> float:
        """The published index now (the frozen value while frozen)."""
        with self._lock:
            return self._frozen_value if self._frozen_value is not None else self._walk

    def _grid_average(self, start_ms: int, end_ms: int) -> float | None:
        first = max(-(-(start_ms - self._start_ms) // self._step_ms), self._history_k0, 0)
        last = min((end_ms - self._start_ms) // self._step_ms, self._k)
        if first > last:
            return None
        points = self._history[first - self._history_k0: last - self._history_k0 + 1]
        return sum(points) / len(points)

    def index_average(self, start_ms: int, end_ms: int) -> float:
        """Mean published index over the grid points in [start_ms, end_ms].

        The exact delivery window of a passed expiry is answered from the recorded
        delivery price even after the history was trimmed. Raises ``ValueError`` when no
        observed point lies in the window: an average is never invented.
        """
        with self._lock:
            start_ms, end_ms = int(start_ms), int(end_ms)
            if end_ms < start_ms:
                raise ValueError("index_average needs start_ms <= end_ms")
            if end_ms in self._delivery and start_ms == end_ms - self._window_ms:
                return self._delivery[end_ms]
            average = self._grid_average(start_ms, end_ms)
            if average is None:
                raise ValueError(f"no index observations in [{start_ms}, {end_ms}]")
            return average

    def delivery_price(self, expiry_ms: int) -> float | None:
        """Settlement index of a passed expiry (mean over the delivery window), else None."""
        with self._lock:
            return self._delivery.get(int(expiry_ms))

    def delivery_prices(self) -> dict[int, float]:
        """All recorded settlement prices by expiry (for ``get-delivery-prices``)."""
        with self._lock:
            return dict(sorted(self._delivery.items()))

    def estimated_delivery_price(self, expiry_ms: int) -> float:
        """``getEstimatedExpirationPrice``: final if passed, running window mean, else the index."""
        with self._lock:
            expiry_ms = int(expiry_ms)
            if expiry_ms in self._delivery:
                return self._delivery[expiry_ms]
            average = self._grid_average(expiry_ms - self._window_ms, min(expiry_ms, self._now_ms))
            return average if average is not None else self.index_price()

    # ------------------------------------------------------------------ instruments

    def instruments(self) -> list[Instrument]:
        """Listed, unexpired instruments sorted by (expiry, strike, type)."""
        with self._lock:
            cached = self._sorted_cache
            if cached is None or cached[0] != self._listing_version:
                active = [self._instruments[symbol]
                          for expiry in self._active for pair in self._active[expiry].values()
                          for symbol in pair]
                active.sort(key=lambda i: (i.expiry_ms, i.strike, i.option_type))
                cached = (self._listing_version, active)
                self._sorted_cache = cached
            return [i for i in cached[1] if i.expiry_ms > self._now_ms]

    def instruments_for_expiry(self, expiry_ms: int) -> list[Instrument]:
        """Active instruments of one expiry, sorted by (strike, type); [] if none."""
        with self._lock:
            strikes = self._active.get(int(expiry_ms), {})
            if int(expiry_ms) <= self._now_ms:
                return []
            return [self._instruments[s] for strike in sorted(strikes) for s in strikes[strike]]

    def instrument(self, symbol: str) -> Instrument | None:
        """Any instrument ever listed, expired ones included; None if unknown."""
        with self._lock:
            return self._instruments.get(symbol)

    def expiries(self) -> list[int]:
        """Listed expiries still ahead, ascending (the exchange asks on every request it serves)."""
        with self._lock:
            cached = self._expiries_cache
            if cached is None or cached[0] != self._listing_version or self._now_ms >= cached[1]:
                live = sorted(e for e in self._active if e > self._now_ms)
                cached = (self._listing_version, live[0] if live else math.inf, live)
                self._expiries_cache = cached
            return list(cached[2])

    def expiry_kind(self, expiry_ms: int) -> str | None:
        with self._lock:
            return self._expiry_kind.get(int(expiry_ms))

    def is_expired(self, symbol: str) -> bool:
        """True once ``now >= expiry``; ``KeyError`` for a symbol that was never listed."""
        with self._lock:
            instrument = self._instruments.get(symbol)
            if instrument is None:
                raise KeyError(symbol)
            return self._now_ms >= instrument.expiry_ms

    def _live_instrument(self, symbol: str) -> Instrument:
        instrument = self._instruments.get(symbol)
        if instrument is None:
            raise KeyError(symbol)
        if self._now_ms >= instrument.expiry_ms:
            raise KeyError(f"{symbol} has expired")
        return instrument

    # ------------------------------------------------------------------ pricing

    def surface_iv(self, strike: float, forward: float, t_years: float) -> float:
        """Implied vol of a strike: a term-scaled ATM level shaped by an SSVI smile.

        ``atm(T) = atm_vol * (1 + term_slope * ln(T / 30d))``. The smile is Gatheral's
        SSVI in standardised moneyness ``z = curvature * ln(K/F) / (atm * sqrt(T))``:
        ``iv = atm * sqrt((1 + skew*z + sqrt((z + skew)^2 + 1 - skew^2)) / 2)``. Near the
        money it behaves like ``atm * (1 + curvature*z^2/8*(1-skew^2) + skew*z/2)``; in the
        wings it grows like sqrt(|z|), which (unlike a plain quadratic) keeps call prices
        falling and put prices rising with the strike - a smile with a price arbitrage
        would let a client "earn" money the real exchange never offers. Clamped to
        [iv_min, iv_max].
        """
        atm, moneyness_scale = self._smile_terms(t_years)
        return self._smile_iv(strike, forward, atm, moneyness_scale)

    def _smile_terms(self, t_years: float) -> tuple[float, float]:
        """The strike-independent part of ``surface_iv``: (ATM vol, ``atm * sqrt(T)``).

        Split out so a chain computes it once per expiry and step, not once per strike.
        """
        cfg = self._config
        term_t = max(t_years, _MIN_TERM_YEARS)
        atm = cfg.atm_vol * (1.0 + cfg.term_slope * math.log(term_t / _TERM_REFERENCE_YEARS))
        atm = max(atm, cfg.iv_min)
        return atm, atm * math.sqrt(max(t_years, 1e-12))

    def _smile_iv(self, strike: float, forward: float, atm: float, moneyness_scale: float) -> float:
        cfg = self._config
        z = cfg.smile_curvature * math.log(strike / forward) / moneyness_scale
        rho = cfg.smile_skew
        total_variance_ratio = 0.5 * (1.0 + rho * z + math.sqrt((z + rho) ** 2 + 1.0 - rho * rho))
        iv = atm * math.sqrt(total_variance_ratio)
        return min(cfg.iv_max, max(cfg.iv_min, iv))

    def _quote_time_ms(self) -> int:
        """The grid instant quotes and books are computed at.

        Marks, greeks and books are published once per index grid step (the index itself
        only moves on the grid), so every request inside one step shares one computation:
        this is what keeps a 180-option chain call cheap at any request rate.
        """
        return self._start_ms + ((self._now_ms - self._start_ms) // self._step_ms) * self._step_ms

    @property
    def quote_stamp(self) -> tuple[Any, ...]:
        """Identifies the current set of quotes: equal stamps mean identical quotes/books.

        Lets consumers (the exchange's chain rows) cache what they derive from quotes.
        """
        with self._lock:
            self._refresh_caches()
            stamp = self._cache_stamp
            assert stamp is not None, "set by _refresh_caches"
            return stamp

    def _refresh_caches(self) -> None:
        stamp = (self._quote_time_ms(), self.index_price(), self._fault_version)
        if stamp != self._cache_stamp:
            self._cache_stamp = stamp
            self._quote_cache.clear()
            self._book_cache.clear()
            self._draw_cache.clear()
            self._priced_expiries.clear()
            self._marked_expiries.clear()
            self._drawn_expiries.clear()

    def quote(self, symbol: str) -> OptionQuote:
        """Mark, IV, greeks and top of book now; ``KeyError`` for unknown or expired symbols."""
        with self._lock:
            self._refresh_caches()
            cached = self._quote_cache.get(symbol)
            if cached is not None:
                return cached
            instrument = self._live_instrument(symbol)
            self._price_expiry(instrument.expiry_ms)
            return self._quote_cache[symbol]

    def quotes(self, symbols: Sequence[str]) -> list[OptionQuote]:
        """``[quote(s) for s in symbols]`` under one lock and one cache check: a chain call asks
        for every option of an expiry, and the per-call overhead was a tenth of its cost."""
        with self._lock:
            self._refresh_caches()
            cache = self._quote_cache
            out = []
            for symbol in symbols:
                cached = cache.get(symbol)
                if cached is None:
                    self._price_expiry(self._live_instrument(symbol).expiry_ms)
                    cached = cache[symbol]
                out.append(cached)
            return out

    def mark_values(self, symbol: str) -> MarkValues:
        """``symbol``'s mark and greeks (as its ``quote`` shows them) at the cost of the first
        pricing stage only (no book, no bid/ask IV): an account summary and the positions
        endpoint value every position on every poll, a chain is asked for less often.
        ``KeyError`` for unknown or expired symbols."""
        with self._lock:
            self._refresh_caches()
            cached = self._quote_cache.get(symbol)
            if cached is not None:
                return MarkValues.of(cached)
            instrument = self._live_instrument(symbol)
            marked = self._mark_expiry(instrument.expiry_ms)
            assert marked is not None, "a live instrument is in its expiry's listing"
            return marked.values[symbol]

    def _expiry_terms(self, expiry_ms: int) -> _ExpiryTerms:
        """Index, time to expiry, forward and smile level shared by every strike of one expiry."""
        spot = self.index_price()
        quote_time = self._quote_time_ms()
        t_years = years_between(quote_time, expiry_ms)
        forward = spot * math.exp(self._config.rate * t_years)
        atm, moneyness_scale = self._smile_terms(t_years)
        return _ExpiryTerms(spot, quote_time, t_years, forward, atm, moneyness_scale)

    def _mark_expiry(self, expiry_ms: int) -> _ExpiryMarks | None:
        """The first pricing stage of one expiry at this stamp (cached with the quotes); None if
        nothing of it is listed."""
        if expiry_ms in self._marked_expiries:
            return self._marked_expiries[expiry_ms]
        listing = self._expiry_listing(expiry_ms)
        marked = None
        if listing is not None:
            cfg = self._config
            terms = self._expiry_terms(expiry_ms)
            ivs = chain_pricing.smile_ivs(listing.strikes, terms.forward, terms.atm, terms.moneyness_scale,
                                          curvature=cfg.smile_curvature, skew=cfg.smile_skew, iv_min=cfg.iv_min,
                                          iv_max=cfg.iv_max)
            theory = chain_pricing.greeks(listing.is_call, terms.spot, listing.strikes, terms.t_years, ivs, cfg.rate)
            values = dict(zip((i.symbol for i in listing.instruments),
                              map(MarkValues, np.round(theory.price, 2).tolist(), theory.delta.tolist(),
                                  theory.gamma.tolist(), theory.vega.tolist(), theory.theta.tolist(),
                                  theory.rho.tolist())))
            marked = _ExpiryMarks(listing, terms, ivs, theory, values)
        self._marked_expiries[expiry_ms] = marked
        return marked

    def _draw_expiry(self, expiry_ms: int) -> _ExpiryDraws | None:
        """The second pricing stage of one expiry at this stamp: every option's ``_BookDraw``
        (into the draw cache) from its model price, spread and book noise; None if nothing of it
        is listed."""
        if expiry_ms in self._drawn_expiries:
            return self._drawn_expiries[expiry_ms]
        marked = self._mark_expiry(expiry_ms)
        drawn = None
        if marked is not None:
            instruments, strikes, is_call, noise_keys = marked.listing
            cfg = self._config
            spot, _quote_time, t_years, forward, _atm, _scale = marked.terms
            theo = marked.theory.price
            half = self._half_spreads(is_call, strikes, spot, forward, t_years, marked.ivs, theo)
            noise = chain_pricing.uniforms(noise_keys, self._now_ms // self._refresh_ms, 4)
            bid_scale = 0.8 + (1.25 - 0.8) * noise[0]
            ask_scale = 0.8 + (1.25 - 0.8) * noise[1]
            size_low, size_high = cfg.level_size
            top_bid_lots = self._lots(size_low + (size_high - size_low) * noise[2])
            top_ask_lots = self._lots(size_low + (size_high - size_low) * noise[3])
            tick = cfg.tick_size
            best_bid = self._floor_ticks(theo - half * bid_scale)
            has_bids = (theo >= cfg.empty_bid_below) & ~(best_bid < tick)
            best_ask = np.maximum(self._ceil_ticks(theo + half * ask_scale), tick)
            best_ask = np.where(has_bids, np.maximum(best_ask, np.round(best_bid + tick, self._tick_dp)), best_ask)
            drawn = _ExpiryDraws(marked, has_bids, best_bid, best_ask, top_bid_lots, top_ask_lots)
            columns = zip(instruments, theo.tolist(), half.tolist(), has_bids.tolist(), best_bid.tolist(),
                          best_ask.tolist(), top_bid_lots.tolist(), top_ask_lots.tolist())
            for instrument, price, half_spread, bids_listed, top_bid, top_ask, bid_lots, ask_lots in columns:
                self._draw_cache[instrument.symbol] = _BookDraw(price, half_spread, bids_listed, top_bid, top_ask,
                                                                bid_lots, ask_lots)
        self._drawn_expiries[expiry_ms] = drawn
        return drawn

    def _price_expiry(self, expiry_ms: int) -> None:
        """Quote every live option of one expiry, at once (the third pricing stage: the quotes'
        bids and asks with their implied vols, on top of the draws).

        Why whole expiries: a chain call shows them all, and the array pricing of
        ``chain_pricing`` is ~15x cheaper per option than one option at a time. Each option's
        numbers are elementwise functions of its own inputs, so they do not depend on what
        else is listed. Filled into the per-stamp quote cache (cleared with the others).
        """
        if expiry_ms in self._priced_expiries:
            return
        self._priced_expiries.add(expiry_ms)
        drawn = self._draw_expiry(expiry_ms)
        if drawn is None:
            return
        marked = drawn.marks
        instruments, strikes, is_call, _noise_keys = marked.listing
        cfg = self._config
        spot, quote_time, t_years, forward, _atm, _scale = marked.terms
        ivs = marked.ivs
        faulted = [self._faulted_sides(i.symbol) for i in instruments] if self._empty_sides.active else None
        bid_shown = drawn.has_bids if faulted is None else drawn.has_bids & ~np.array([bid for bid, _ in faulted])
        ask_shown = np.ones(len(instruments), dtype=bool) if faulted is None \
            else ~np.array([ask for _, ask in faulted])
        bids = np.where(bid_shown, drawn.best_bid, 0.0)
        asks = np.where(ask_shown, drawn.best_ask, 0.0)
        both = chain_pricing.implied_vols(np.tile(is_call, 2), np.concatenate((bids, asks)), spot,
                                          np.tile(strikes, 2), t_years, cfg.rate, np.tile(ivs, 2))
        bid_ivs, ask_ivs = both[:len(instruments)], both[len(instruments):]
        underlying = round(forward, 2)
        columns = zip(instruments, [marked.values[i.symbol] for i in instruments], ivs.tolist(),
                      bids.tolist(), asks.tolist(), bid_shown.tolist(), ask_shown.tolist(),
                      drawn.bid_lots.tolist(), drawn.ask_lots.tolist(), bid_ivs.tolist(), ask_ivs.tolist())
        for (instrument, values, iv, bid, ask, bid_on, ask_on, bid_lots, ask_lots, bid_iv, ask_iv) in columns:
            symbol = instrument.symbol
            mark, delta, gamma, vega, theta, rho = values
            # Positional, in OptionQuote's field order (keywords cost a NamedTuple a third more).
            self._quote_cache[symbol] = OptionQuote(
                symbol, quote_time, spot, underlying, mark, iv, delta, gamma, vega, theta, rho,
                bid, ask, bid_lots if bid_on else 0.0, ask_lots if ask_on else 0.0, bid_iv, ask_iv,
            )

    def _half_spreads(self, is_call: np.ndarray, strikes: np.ndarray, spot: float, forward: float,
                      t_years: float, ivs: np.ndarray, theo: np.ndarray) -> np.ndarray:
        """Half-spread: a % of the option's extrinsic value (plus a little for ITM), wider OTM."""
        cfg = self._config
        intrinsic = np.where(is_call, np.maximum(0.0, forward - strikes), np.maximum(0.0, strikes - forward))
        extrinsic = np.maximum(0.0, theo - intrinsic)
        reference = np.minimum(theo, extrinsic + _ITM_SPREAD_SHARE * spot)
        stddev = ivs * math.sqrt(t_years)
        log_distance = np.log(strikes / forward) * np.where(is_call, 1.0, -1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            otm_sd = np.where(stddev > 0, np.maximum(0.0, log_distance) / stddev, 0.0)
        widen = 1.0 + cfg.otm_spread_widening * np.minimum(otm_sd, 4.0)
        return np.maximum(cfg.spread_pct / 100.0 * reference * widen, cfg.min_spread_ticks * cfg.tick_size)

    def _expiry_listing(self, expiry_ms: int) -> _ExpiryListing | None:
        """The live options of one expiry and their strike, type and noise-key arrays; None if none.

        Kept while the listing is unchanged (strikes are added every few hours, not every step).
        """
        cached = self._listing_arrays.get(expiry_ms)
        if cached is not None and cached[0] == self._listing_version:
            return cached[1]
        instruments = self.instruments_for_expiry(expiry_ms)
        listing = None
        if instruments:
            seed = self._config.seed
            listing = _ExpiryListing(
                instruments,
                np.array([i.strike for i in instruments]),
                np.array([i.option_type == "C" for i in instruments]),
                np.array([_stable_seed(seed, i.symbol) for i in instruments], dtype=np.uint64),
            )
        if len(self._listing_arrays) > 4 * len(self._active) + 16:
            self._listing_arrays = {e: v for e, v in self._listing_arrays.items() if e in self._active}
        self._listing_arrays[expiry_ms] = (self._listing_version, listing)
        return listing

    # ------------------------------------------------------------------ books
    #
    # A book is laid out from one _BookDraw (its best prices and top sizes), which the
    # expiry's pricing makes for every option at once. A quote needs only the top of the
    # book; the deeper levels (gaps and sizes) are drawn only when the order-book endpoint
    # or the matching engine asks for the whole book. Both read the same draw, so the top
    # of a full book is always the quote's bid and ask.

    def book(self, symbol: str, depth: int = 100) -> Book:
        """Synthetic book now: (bids descending, asks ascending), at most ``depth`` levels a side."""
        with self._lock:
            self._refresh_caches()
            instrument = self._live_instrument(symbol)
            cached = self._book_cache.get(symbol)
            if cached is None:
                cached = self._apply_side_faults(symbol, self._draw_book(instrument))
                self._book_cache[symbol] = cached
            bids, asks = cached
            depth = max(0, int(depth))
            return list(bids[:depth]), list(asks[:depth])

    def top_of_book(self, symbol: str) -> Book:
        """``book(symbol, 1)`` without laying out the deeper levels.

        The passive engine looks at every resting order's book on every engine step; unless the
        market trades through the order, only the best level of each side decides, and pricing
        the quotes and laying out the whole book for it was most of an engine step's cost.
        """
        with self._lock:
            self._refresh_caches()
            instrument = self._live_instrument(symbol)
            cached = self._book_cache.get(symbol)
            if cached is not None:
                bids, asks = cached
                return list(bids[:1]), list(asks[:1])
            draw = self._book_draw(instrument)
            # The first level of _draw_book (has_bids is False for a bid under a tick too).
            top_bid = [(draw.best_bid, draw.bid_lots)] if draw.has_bids else []
            return self._apply_side_faults(symbol, (top_bid, [(draw.best_ask, draw.ask_lots)]))

    def _book_draw(self, instrument: Instrument) -> _BookDraw:
        """The best prices and top sizes of ``instrument``'s book at this quote stamp."""
        cached = self._draw_cache.get(instrument.symbol)
        if cached is None:
            self._draw_expiry(instrument.expiry_ms)
            cached = self._draw_cache[instrument.symbol]
        return cached

    def _deeper_levels(self, symbol: str) -> tuple[list[int], list[float]]:
        """The gaps (bid side first) and the sizes below the top of one book, before lot rounding.

        A pure function of (seed, symbol, refresh bucket): a generator seeded from them draws
        2 x depth_levels randint(1, 3) gaps, then 2 x (depth_levels - 1) uniform(level_size)
        sizes (bid side first), by the formulas those methods are defined by.
        """
        cfg = self._config
        rng = random.Random(_stable_seed(cfg.seed, symbol, self._now_ms // self._refresh_ms))
        uniform01, bits = rng.random, rng.getrandbits
        gaps = []
        for _ in range(2 * cfg.depth_levels):
            draw = bits(2)
            while draw >= 3:
                draw = bits(2)
            gaps.append(1 + draw)
        size_low, size_high = cfg.level_size
        sizes = [size_low + (size_high - size_low) * uniform01() for _ in range(2 * (cfg.depth_levels - 1))]
        return gaps, sizes

    def _draw_book(self, instrument: Instrument) -> Book:
        """Every level of both sides, laid out from the draw (before side faults)."""
        draw = self._book_draw(instrument)
        cfg = self._config
        tick, tick_dp, levels = cfg.tick_size, self._tick_dp, cfg.depth_levels
        gaps, deeper = self._deeper_levels(instrument.symbol)
        gap_unit = max(tick, self._floor_tick(0.2 * draw.half))
        bids: list[tuple[float, float]] = []
        if draw.has_bids:
            price = draw.best_bid
            sizes = [draw.bid_lots, *(self._lot(size) for size in deeper[:levels - 1])]
            for gap, size in zip(gaps[:levels], sizes):
                if price < tick:
                    break
                bids.append((price, size))
                price = round(price - gap * gap_unit, tick_dp)
        asks: list[tuple[float, float]] = []
        price = draw.best_ask
        sizes = [draw.ask_lots, *(self._lot(size) for size in deeper[levels - 1:])]
        for gap, size in zip(gaps[levels:], sizes):
            asks.append((price, size))
            price = round(price + gap * gap_unit, tick_dp)
        return bids, asks

    def _faulted_sides(self, symbol: str) -> tuple[bool, bool]:
        """(bid side emptied, ask side emptied) by the ``set_empty_side`` faults."""
        return self._empty_sides.of(symbol)

    def _apply_side_faults(self, symbol: str, book: Book) -> Book:
        bid_empty, ask_empty = self._faulted_sides(symbol)
        bids, asks = book
        return ([] if bid_empty else bids), ([] if ask_empty else asks)

    def _snap(self, price: float) -> float:
        return round(price, self._tick_dp)

    def _floor_tick(self, price: float) -> float:
        tick = self._config.tick_size
        return self._snap(math.floor(price / tick + 1e-9) * tick)

    def _ceil_tick(self, price: float) -> float:
        tick = self._config.tick_size
        return self._snap(math.ceil(price / tick - 1e-9) * tick)

    def _floor_ticks(self, prices: np.ndarray) -> np.ndarray:
        tick = self._config.tick_size
        return np.round(np.floor(prices / tick + 1e-9) * tick, self._tick_dp)

    def _ceil_ticks(self, prices: np.ndarray) -> np.ndarray:
        tick = self._config.tick_size
        return np.round(np.ceil(prices / tick - 1e-9) * tick, self._tick_dp)

    def _lots(self, sizes: np.ndarray) -> np.ndarray:
        lot = self._config.min_qty
        return np.round(np.maximum(lot, np.floor(sizes / lot + 1e-9) * lot), self._lot_dp)

    def _lot(self, size: float) -> float:
        lot = self._config.min_qty
        return round(max(lot, math.floor(size / lot + 1e-9) * lot), self._lot_dp)

    # ------------------------------------------------------------------ fault switches

    def freeze_index(self, frozen: bool) -> None:
        """Freeze the published index at its current value (the walk continues underneath)."""
        with self._lock:
            if frozen and self._frozen_value is None:
                self._frozen_value = self.index_price()
            elif not frozen:
                self._frozen_value = None
            self._fault_version += 1

    @property
    def index_frozen(self) -> bool:
        return self._frozen_value is not None

    def set_empty_side(self, pattern: str, side: str | None) -> None:
        """Empty one book side of every symbol matching ``pattern`` (fnmatch).

        ``side`` is 'bid', 'ask' or 'both'; ``None`` removes that pattern's fault
        (``set_empty_side("*", None)`` removes all of them).
        """
        with self._lock:
            self._empty_sides.set(pattern, side)
            self._fault_version += 1

    def set_scripted_path(self, points: Sequence[tuple[int, float]] | None) -> None:
        """Drive the index through (epoch_ms, price) points from now on; None returns to the walk.

        Takes effect at once (the current grid point is re-evaluated); the RNG keeps being
        consumed underneath, so the seeded path after it is unaffected by its length.
        """
        with self._lock:
            self._script = _ScriptedPath(points) if points else None
            if self._script is not None:
                self._walk = self._script.at(self._start_ms + self._k * self._step_ms)
                if self._frozen_value is None and self._history:
                    self._history[-1] = self._walk
            self._fault_version += 1

    # ------------------------------------------------------------------ persistence

    def recorded_rows(self, symbol: str) -> None:
        """A modelled market replays no recording (``market_source.MarketSource``)."""
        return None

    def current_row(self, symbol: str) -> None:
        """A modelled market has no recorded row (``market_source.MarketSource``)."""
        return None

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this model is (JSON-serialisable)."""
        with self._lock:
            version, internal, gauss_next = self._rng.getstate()
            return {
                "state_version": STATE_VERSION,
                "start_ms": self._start_ms,
                "now_ms": self._now_ms,
                "grid_k": self._k,
                "walk_price": self._walk,
                "index_price": self.index_price(),
                "frozen_value": self._frozen_value,
                "rng_state": [version, list(internal), gauss_next],
                # Only the guaranteed window is saved (history_seconds, at least the delivery window).
                "history_k0": self._history_k0 + max(0, len(self._history) - self._history_cap),
                "history": self._history[-self._history_cap:],
                "instruments": [_instrument_to_dict(i) for i in self._instruments.values()],
                "expiry_kinds": {str(e): kind for e, kind in self._expiry_kind.items()},
                "active_expiries": sorted(self._active),
                "strike_bounds": {
                    str(e): {kind: (list(b) if b else None) for kind, b in bounds.items()}
                    for e, bounds in self._strike_bounds.items() if e in self._active
                },
                "delivery_prices": {str(e): p for e, p in self._delivery.items()},
                "next_roll_ms": self._next_roll_ms,
                "empty_sides": self._empty_sides.to_state(),
                "scripted_path": self._script.points() if self._script else None,
            }

    @classmethod
    def from_state(cls, config: MarketConfig, state: dict[str, Any]) -> "MarketModel":
        """Rebuild a model saved by ``to_state``; it continues exactly as the original would."""
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"unsupported market state version {state.get('state_version')!r}")
        model = cls.__new__(cls)
        model._setup(config, int(state["start_ms"]))
        model._now_ms = int(state["now_ms"])
        model._k = int(state["grid_k"])
        model._walk = float(state["walk_price"])
        frozen = state.get("frozen_value")
        model._frozen_value = float(frozen) if frozen is not None else None
        version, internal, gauss_next = state["rng_state"]
        model._rng.setstate((version, tuple(internal), gauss_next))
        model._history_k0 = int(state["history_k0"])
        model._history = [float(p) for p in state["history"]]
        for raw in state["instruments"]:
            instrument = _instrument_from_dict(raw)
            model._instruments[instrument.symbol] = instrument
        model._expiry_kind = {int(e): kind for e, kind in state["expiry_kinds"].items()}
        active = {int(e) for e in state["active_expiries"]}
        model._active = {e: {} for e in sorted(active)}
        for instrument in sorted(model._instruments.values(), key=lambda i: i.option_type):
            if instrument.expiry_ms in active:
                strikes = model._active[instrument.expiry_ms]
                call, put = strikes.get(instrument.strike, ("", ""))
                pair = (instrument.symbol, put) if instrument.option_type == "C" else (call, instrument.symbol)
                strikes[instrument.strike] = pair
        model._strike_bounds = {
            int(e): {kind: (tuple(b) if b else None) for kind, b in bounds.items()}
            for e, bounds in state["strike_bounds"].items()
        }
        model._delivery = {int(e): float(p) for e, p in state["delivery_prices"].items()}
        model._next_roll_ms = int(state["next_roll_ms"])
        model._empty_sides = EmptySides(state.get("empty_sides"))
        points = state.get("scripted_path")
        model._script = _ScriptedPath([(int(t), float(p)) for t, p in points]) if points else None
        return model


def _instrument_to_dict(instrument: Instrument) -> dict[str, Any]:
    return {
        "symbol": instrument.symbol, "base": instrument.base, "strike": instrument.strike,
        "strike_token": instrument.strike_token, "option_type": instrument.option_type,
        "expiry_ms": instrument.expiry_ms, "listed_ms": instrument.listed_ms,
        "tick_size": instrument.tick_size, "min_qty": instrument.min_qty, "kind": instrument.kind,
        "qty_step": instrument.qty_step,
    }


def _instrument_from_dict(raw: dict[str, Any]) -> Instrument:
    return Instrument(
        symbol=raw["symbol"], base=raw["base"], strike=float(raw["strike"]),
        strike_token=raw["strike_token"], option_type=raw["option_type"],
        expiry_ms=int(raw["expiry_ms"]), listed_ms=int(raw["listed_ms"]),
        tick_size=float(raw["tick_size"]), min_qty=float(raw["min_qty"]), kind=raw["kind"],
        qty_step=float(raw.get("qty_step", 0.01)),
    )


__all__ = [
    "Instrument",
    "MarketConfig",
    "MarketModel",
    "OptionQuote",
]
