"""RFQ (block trade) requests, maker quotes and the simulated makers that answer them.

Why a module of its own: the RFQ taker flow (API.md 10, checklist 21-24) has its own
life cycle, independent of the order book: a request lives ``lifetime`` seconds, makers
answer after a few seconds with quotes valid ``validity`` seconds, quotes can be
withdrawn, expire and are refreshed, and exactly one quote can be accepted. The
exchange (``exchange.py``) owns money, orders and positions; this desk only decides
*which* quotes exist, at *which* prices and in *which* state, and tells the exchange
what an accepted quote means for the taker.

Conventions that clients get wrong and this desk reproduces on purpose:

* quote legs carry the **maker's** side (maker SELL => the taker buys);
* makers quote both directions: one quote "as asked" (the taker gets the sides it
  asked for) and one mirrored quote (the taker would do the opposite on every leg);
* request legs use ``qty``, quote legs ``quantity``; ids are strings on the wire.

Quote prices: per leg, the screen price the *taker* would pay or receive (best ask for a
taker BUY leg, best bid for a taker SELL leg, the mark when that side is empty) is the
baseline ``B = sum(sign * qty * touch)``. A maker with edge ``e`` percent prices the whole
structure at ``Q = B + e/100 * |B|`` and spreads the difference over the legs in
proportion to their screen notional. So the taker's improvement ``(B - Q) / |B| * 100``
equals ``-e``: a negative edge is better than the screen for the taker.

Everything random is drawn from ``random.Random`` seeded by ``(seed, request, maker,
round)``: the same seed and the same requests give the same quotes at the same times.
"""
from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from typing import Callable

from simulator.errors import SimError

log = logging.getLogger(__name__)

RFQ_ACTIVE = "ACTIVE"
RFQ_CANCELLED = "CANCELLED"
RFQ_FILLED = "FILLED"
RFQ_EXPIRED = "EXPIRED"

QUOTE_OPEN = "OPEN"
QUOTE_CANCELLED = "CANCELLED"
QUOTE_FILLED = "FILLED"
QUOTE_EXPIRED = "EXPIRED"

BUY = "BUY"
SELL = "SELL"
SIDES = (BUY, SELL)

AS_ASKED = "AS_ASKED"    # the taker gets the sides of its request
MIRRORED = "MIRRORED"    # the taker would do the opposite on every leg

CODE_NOT_ALLOWED = 10001
CODE_QUOTE_INVALID = 50014
LOT = 0.01


def opposite(side: str) -> str:
    """The other RFQ side string."""
    return SELL if side == BUY else BUY


@dataclass
class RfqLeg:
    """One leg of a request, with the side the taker asked for; qty in 0.01 lots."""

    symbol: str
    side: str
    lots: int


@dataclass
class QuoteLeg:
    """One leg of a quote; ``side`` is the MAKER's side."""

    symbol: str
    side: str
    price: float
    lots: int


@dataclass
class Quote:
    """A maker's firm offer on a whole request."""

    quote_id: int
    request_id: int
    maker_index: int
    maker_user_id: int
    direction: str
    legs: list[QuoteLeg]
    create_ms: int
    expiry_ms: int
    update_ms: int
    state: str = QUOTE_OPEN
    withdraw_ms: int | None = None
    include_request_id: bool = True

    def taker_side(self, leg: QuoteLeg) -> str:
        """The side the taker trades on ``leg`` if this quote is accepted."""
        return opposite(leg.side)


@dataclass
class Rfq:
    """A taker's request for quotes."""

    request_id: int
    user_id: int
    legs: list[RfqLeg]
    create_ms: int
    expiry_ms: int
    update_ms: int
    state: str = RFQ_ACTIVE
    quote_ids: list[int] = field(default_factory=list)
    maker_next_ms: list[int | None] = field(default_factory=list)
    maker_rounds: list[int] = field(default_factory=list)
    filled_quote_id: int | None = None
    block_trade_id: int | None = None


@dataclass(frozen=True)
class MakerSettings:
    """How the simulated makers behave; derived from ``ExchangeConfig`` by the exchange.

    ``maker_edges_pct`` (one edge per maker, cycled) overrides ``edge_pct`` and disables
    the jitter, which lets a test ask for quotes at exactly -2 %, -1 % and +1 %.
    """

    maker_count: int = 3
    delay_range_s: tuple[float, float] = (2.0, 5.0)
    edge_pct: float = -2.0
    maker_edges_pct: tuple[float, ...] | None = None
    edge_jitter_pct: float = 0.5
    validity_ms: int = 300_000
    lifetime_ms: int = 3_600_000
    withdraw_prob: float = 0.0
    include_request_id: bool = True
    first_maker_user_id: int = 1_695_796_692_900_001


@dataclass(frozen=True)
class LegScreen:
    """What the screen shows for one instrument when a maker prices a quote."""

    bid: float
    ask: float
    mark: float
    tick: float


ScreenFn = Callable[[str], "LegScreen | None"]


def _round_price(value: float, tick: float) -> float:
    """Quote prices to the cent, never below one tick (a maker never quotes zero)."""
    return max(round(value, 2), tick)


def price_quote_legs(legs: list[RfqLeg], direction: str, screens: dict[str, LegScreen],
                     edge_pct: float) -> list[QuoteLeg]:
    """Maker-side quote legs for ``legs`` at ``edge_pct`` from the screen (module docstring)."""
    signs: list[int] = []
    touches: list[float] = []
    for leg in legs:
        taker_side = leg.side if direction == AS_ASKED else opposite(leg.side)
        screen = screens[leg.symbol]
        touch = screen.ask if taker_side == BUY else screen.bid
        if touch <= 0:
            touch = screen.mark if screen.mark > 0 else screen.tick
        signs.append(1 if taker_side == BUY else -1)
        touches.append(touch)
    qtys = [leg.lots * LOT for leg in legs]
    baseline = sum(s * q * t for s, q, t in zip(signs, qtys, touches))
    weight = sum(q * t for q, t in zip(qtys, touches))
    reference = abs(baseline) if abs(baseline) > 1e-9 else weight
    delta = edge_pct / 100.0 * reference
    quoted: list[QuoteLeg] = []
    for leg, sign, touch in zip(legs, signs, touches):
        price = touch + sign * delta * touch / weight if weight > 0 else touch
        maker_side = SELL if sign > 0 else BUY
        quoted.append(QuoteLeg(leg.symbol, maker_side, _round_price(price, screens[leg.symbol].tick), leg.lots))
    return quoted


class RfqDesk:
    """All RFQs and quotes of the exchange, plus the makers' schedule.

    Not thread-safe on its own: the exchange calls it under its lock.
    """

    def __init__(self, settings: MakerSettings, seed: int, next_id: Callable[[], int]) -> None:
        self.settings = settings
        self._seed = seed
        self._next_id = next_id
        self._rfqs: dict[int, Rfq] = {}
        self._quotes: dict[int, Quote] = {}
        self._active: set[int] = set()   # ids of ACTIVE requests: the engine only walks these

    # --- requests --------------------------------------------------------------------
    def create(self, user_id: int, legs: list[RfqLeg], now_ms: int) -> Rfq:
        """Register a validated request and schedule every maker's first answer."""
        request_id = self._next_id()
        rfq = Rfq(
            request_id=request_id,
            user_id=user_id,
            legs=legs,
            create_ms=now_ms,
            expiry_ms=now_ms + self.settings.lifetime_ms,
            update_ms=now_ms,
            maker_next_ms=[None] * self.settings.maker_count,
            maker_rounds=[0] * self.settings.maker_count,
        )
        for maker in range(self.settings.maker_count):
            rfq.maker_next_ms[maker] = now_ms + self._delay_ms(rfq, maker)
        self._rfqs[request_id] = rfq
        self._active.add(request_id)
        log.debug("RFQ %s created with %d legs", request_id, len(legs))
        return rfq

    def rfq(self, request_id: int) -> Rfq | None:
        return self._rfqs.get(request_id)

    def rfqs_of(self, user_id: int) -> list[Rfq]:
        """The user's requests, newest first."""
        return sorted((r for r in self._rfqs.values() if r.user_id == user_id),
                      key=lambda r: r.request_id, reverse=True)

    def quotes_of(self, request_id: int) -> list[Quote]:
        rfq = self._rfqs.get(request_id)
        if rfq is None:
            return []
        return [self._quotes[qid] for qid in rfq.quote_ids]

    def quote(self, quote_id: int) -> Quote | None:
        return self._quotes.get(quote_id)

    def cancel(self, user_id: int, request_id: int, now_ms: int) -> Rfq:
        """ACTIVE -> CANCELLED with every open quote; anything else is 10001."""
        rfq = self._rfqs.get(request_id)
        if rfq is None or rfq.user_id != user_id:
            raise SimError(CODE_NOT_ALLOWED, "Operation not allowed: unknown requestId")
        self._expire_quotes_lazily(rfq, now_ms)
        if rfq.state != RFQ_ACTIVE:
            raise SimError(CODE_NOT_ALLOWED, f"Operation not allowed: RFQ is {rfq.state}")
        rfq.state = RFQ_CANCELLED
        self._active.discard(rfq.request_id)
        rfq.update_ms = now_ms
        rfq.maker_next_ms = [None] * len(rfq.maker_next_ms)
        self._close_open_quotes(rfq, QUOTE_CANCELLED, now_ms)
        return rfq

    def check_acceptable(self, user_id: int, request_id: int, quote_id: int, now_ms: int) -> tuple[Rfq, Quote]:
        """The request and quote an accept refers to, or 50014 when it cannot be filled."""
        rfq = self._rfqs.get(request_id)
        quote = self._quotes.get(quote_id)
        if rfq is None or rfq.user_id != user_id or quote is None or quote.request_id != request_id:
            raise SimError(CODE_QUOTE_INVALID, "Block trade quote not valid")
        self._expire_quotes_lazily(rfq, now_ms)
        if rfq.state != RFQ_ACTIVE or quote.state != QUOTE_OPEN:
            raise SimError(CODE_QUOTE_INVALID, f"Block trade quote not valid ({quote.state})")
        return rfq, quote

    def mark_filled(self, rfq: Rfq, quote: Quote, now_ms: int, block_trade_id: int) -> None:
        """The accepted quote is FILLED, the request too, every other open quote CANCELLED."""
        quote.state = QUOTE_FILLED
        quote.update_ms = now_ms
        rfq.state = RFQ_FILLED
        self._active.discard(rfq.request_id)
        rfq.update_ms = now_ms
        rfq.filled_quote_id = quote.quote_id
        rfq.block_trade_id = block_trade_id
        rfq.maker_next_ms = [None] * len(rfq.maker_next_ms)
        self._close_open_quotes(rfq, QUOTE_CANCELLED, now_ms)

    def expire_with_symbols(self, symbols: set[str], now_ms: int) -> None:
        """Requests on an instrument that just expired cannot trade any more."""
        for request_id in sorted(self._active):
            rfq = self._rfqs[request_id]
            if any(leg.symbol in symbols for leg in rfq.legs):
                self._expire_rfq(rfq, now_ms)

    # --- quotes posted by hand (tests, scripted makers) ---------------------------------
    def post_quote(self, request_id: int, legs: list[QuoteLeg], now_ms: int, maker_index: int = 0,
                   validity_ms: int | None = None, direction: str = AS_ASKED) -> Quote:
        """Post an arbitrary quote on an ACTIVE request (e.g. a quote with one mirrored leg)."""
        rfq = self._rfqs.get(request_id)
        if rfq is None or rfq.state != RFQ_ACTIVE:
            raise SimError(CODE_NOT_ALLOWED, "Operation not allowed: RFQ not active")
        validity = self.settings.validity_ms if validity_ms is None else validity_ms
        return self._add_quote(rfq, maker_index, direction, legs, now_ms, validity, None)

    # --- time --------------------------------------------------------------------------
    def next_event_ms(self) -> int | None:
        """The earliest instant at which some request or quote changes by itself."""
        best: int | None = None
        for request_id in self._active:
            rfq = self._rfqs[request_id]
            candidates = [rfq.expiry_ms] + [t for t in rfq.maker_next_ms if t is not None]
            for qid in rfq.quote_ids:
                quote = self._quotes[qid]
                if quote.state == QUOTE_OPEN:
                    candidates.append(quote.expiry_ms)
                    if quote.withdraw_ms is not None:
                        candidates.append(quote.withdraw_ms)
            earliest = min(candidates)
            best = earliest if best is None else min(best, earliest)
        return best

    def process_due(self, now_ms: int, screen: ScreenFn, quotes_enabled: bool) -> None:
        """Apply every expiry, withdrawal and maker answer due at or before ``now_ms``.

        The exchange calls this at the instant of each event, with the market already
        moved there, so a maker prices with the screen of its own arrival time.
        """
        for request_id in sorted(self._active):
            rfq = self._rfqs[request_id]
            if now_ms >= rfq.expiry_ms:
                self._expire_rfq(rfq, rfq.expiry_ms)
                continue
            self._retire_quotes(rfq, now_ms)
            for maker, due in enumerate(rfq.maker_next_ms):
                if due is not None and due <= now_ms:
                    rfq.maker_next_ms[maker] = None
                    self._maker_answers(rfq, maker, now_ms, screen, quotes_enabled)

    # --- internals -----------------------------------------------------------------------
    def _rng(self, rfq: Rfq, maker: int) -> random.Random:
        return random.Random(f"{self._seed}:rfq:{rfq.request_id}:{maker}:{rfq.maker_rounds[maker]}")

    def _delay_ms(self, rfq: Rfq, maker: int) -> int:
        low, high = self.settings.delay_range_s
        return max(1, int(round(self._rng(rfq, maker).uniform(low, high) * 1000)))

    def _edge_for(self, rfq: Rfq, maker: int) -> float:
        edges = self.settings.maker_edges_pct
        if edges:
            return float(edges[maker % len(edges)])
        jitter = self.settings.edge_jitter_pct
        rng = random.Random(f"{self._seed}:edge:{rfq.request_id}:{maker}")
        return self.settings.edge_pct + (rng.uniform(-jitter, jitter) if jitter > 0 else 0.0)

    def _maker_answers(self, rfq: Rfq, maker: int, now_ms: int, screen: ScreenFn, enabled: bool) -> None:
        """One maker's round: a quote in each direction, or a later retry if it cannot quote."""
        rng = self._rng(rfq, maker)
        rfq.maker_rounds[maker] += 1
        screens: dict[str, LegScreen] = {}
        for leg in rfq.legs:
            shown = screen(leg.symbol)
            if shown is None:
                return  # instrument gone: the request will expire with it
            screens[leg.symbol] = shown
        if not enabled:
            rfq.maker_next_ms[maker] = now_ms + self._delay_ms(rfq, maker)
            return
        edge = self._edge_for(rfq, maker)
        validity = self.settings.validity_ms
        for direction in (AS_ASKED, MIRRORED):
            legs = price_quote_legs(rfq.legs, direction, screens, edge)
            withdraw_ms = None
            if self.settings.withdraw_prob > 0 and rng.random() < self.settings.withdraw_prob:
                withdraw_ms = now_ms + int(rng.uniform(1.0, max(1.0, validity / 2000.0)) * 1000)
            self._add_quote(rfq, maker, direction, legs, now_ms, validity, withdraw_ms)

    def _add_quote(self, rfq: Rfq, maker: int, direction: str, legs: list[QuoteLeg], now_ms: int,
                   validity_ms: int, withdraw_ms: int | None) -> Quote:
        quote = Quote(
            quote_id=self._next_id(),
            request_id=rfq.request_id,
            maker_index=maker,
            maker_user_id=self.settings.first_maker_user_id + maker,
            direction=direction,
            legs=legs,
            create_ms=now_ms,
            expiry_ms=now_ms + validity_ms,
            update_ms=now_ms,
            withdraw_ms=withdraw_ms,
            include_request_id=self.settings.include_request_id,
        )
        self._quotes[quote.quote_id] = quote
        rfq.quote_ids.append(quote.quote_id)
        rfq.update_ms = now_ms
        return quote

    def _retire_quotes(self, rfq: Rfq, now_ms: int) -> None:
        """Withdraw or expire due quotes; a maker left without a live quote answers again."""
        for qid in rfq.quote_ids:
            quote = self._quotes[qid]
            if quote.state != QUOTE_OPEN:
                continue
            if quote.withdraw_ms is not None and quote.withdraw_ms <= now_ms and quote.withdraw_ms < quote.expiry_ms:
                quote.state, quote.update_ms = QUOTE_CANCELLED, quote.withdraw_ms
            elif quote.expiry_ms <= now_ms:
                quote.state, quote.update_ms = QUOTE_EXPIRED, quote.expiry_ms
            else:
                continue
            self._schedule_requote(rfq, quote.maker_index, now_ms)

    def _schedule_requote(self, rfq: Rfq, maker: int, now_ms: int) -> None:
        if maker >= len(rfq.maker_next_ms) or rfq.maker_next_ms[maker] is not None:
            return
        still_open = any(self._quotes[q].maker_index == maker and self._quotes[q].state == QUOTE_OPEN
                         for q in rfq.quote_ids)
        if not still_open:
            rfq.maker_next_ms[maker] = now_ms + self._delay_ms(rfq, maker)

    def _expire_quotes_lazily(self, rfq: Rfq, now_ms: int) -> None:
        """Make states exact at ``now_ms`` even between two engine events."""
        if rfq.state == RFQ_ACTIVE and now_ms >= rfq.expiry_ms:
            self._expire_rfq(rfq, rfq.expiry_ms)
            return
        for qid in rfq.quote_ids:
            quote = self._quotes[qid]
            if quote.state != QUOTE_OPEN:
                continue
            if quote.withdraw_ms is not None and quote.withdraw_ms <= now_ms:
                quote.state, quote.update_ms = QUOTE_CANCELLED, quote.withdraw_ms
            elif quote.expiry_ms <= now_ms:
                quote.state, quote.update_ms = QUOTE_EXPIRED, quote.expiry_ms

    def _expire_rfq(self, rfq: Rfq, when_ms: int) -> None:
        rfq.state = RFQ_EXPIRED
        self._active.discard(rfq.request_id)
        rfq.update_ms = when_ms
        rfq.maker_next_ms = [None] * len(rfq.maker_next_ms)
        self._close_open_quotes(rfq, QUOTE_EXPIRED, when_ms)

    def _close_open_quotes(self, rfq: Rfq, state: str, now_ms: int) -> None:
        for qid in rfq.quote_ids:
            quote = self._quotes[qid]
            if quote.state == QUOTE_OPEN:
                quote.state = state
                quote.update_ms = now_ms

    # --- persistence ---------------------------------------------------------------------
    def to_state(self) -> dict:
        return {
            "rfqs": [asdict(r) for r in self._rfqs.values()],
            "quotes": [asdict(q) for q in self._quotes.values()],
        }

    def load_state(self, state: dict) -> None:
        self._rfqs = {}
        self._quotes = {}
        self._active = set()
        for raw in state.get("rfqs", []):
            data = dict(raw)
            data["legs"] = [RfqLeg(**leg) for leg in data["legs"]]
            rfq = Rfq(**data)
            self._rfqs[rfq.request_id] = rfq
            if rfq.state == RFQ_ACTIVE:
                self._active.add(rfq.request_id)
        for raw in state.get("quotes", []):
            data = dict(raw)
            data["legs"] = [QuoteLeg(**leg) for leg in data["legs"]]
            quote = Quote(**data)
            self._quotes[quote.quote_id] = quote
