"""The delta-hedge policy: when to trade a structure's perpetual, which way, how much, at what price.

Why this module exists (issue 13): a strategy declares its hedge (``delta_hedge(band=0.05)``)
and the daemon keeps the structure's delta near a target by trading the underlying's
perpetual. The rule that decides is kept here, apart from everything that acts on it, so it
can be read and tested on its own: no I/O, no clock (``now`` is passed in), no exchange
call. The wiring (the lifecycle, the limit engine and the ledger) asks ``decide`` on a tick
and carries out what it answers; ``docs/HEDGING.md`` says what that wiring must do.

The rule, in units of the underlying (a perp of qty q has delta q):

* total = structure delta (the option legs, signed) + hedge qty (the perp, signed);
* inside ``target ± band`` nothing is done; otherwise, once ``min_interval_seconds`` have
  passed since the last rebalance, one rebalance brings the total back to the target (or just
  inside the band edge), rounded DOWN to the perp's step so rounding never over-hedges,
  capped by ``max_order_qty`` per rebalance and ``max_hedge_qty`` on the hedge afterwards,
  and never beyond what the structure can need: an option's delta lies within ±1 per unit of
  the underlying, so ``|hedge after| ≤ structure size + |target|`` (the size is the option
  legs' quantities summed); a bigger hedge could only come from a wrong delta;
* the price is protected: no order from a missing, zero, non-finite, stale or crossed quote,
  or from a mark too far from the index (fail closed, with the reason); the limit is the far
  touch capped at mark × (1 ± max_slippage), snapped to the tick on the safe side;
* a rebalance never flips the hedge through zero in one order: the part that reduces the
  existing hedge is a reduce-only order of its own, and the part that opens the other side is
  a second, ordinary order sent only after the first has filled (``HedgeDecision.orders``).

Layer: 1 (next to ``price_sanity``, whose perpetual band it reuses); it imports only layer-0
values and helpers (``errors``, ``validation``, ``contracts``) and ``price_sanity``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Callable, Mapping

from contracts import UNDERLYINGS, Side, perpetual_symbol
from errors import ConfigError
from price_sanity import PERP_BAND_OF_INDEX, perp_band
from validation import invalid, is_int, is_number, refuse_unknown_keywords

__all__ = ["HedgeConfig", "delta_hedge", "HedgeState", "HedgeAction", "HedgeOrder", "HedgeDecision",
           "decide", "ON_CLOSE_CHOICES", "REBALANCE_TO_CHOICES", "MAX_SLIPPAGE_BPS_LIMIT",
           "floor_to_step", "ceil_to_step", "is_multiple"]

OWNER = "delta_hedge"
ON_CLOSE_CHOICES = ("flatten",)
REBALANCE_TO_CHOICES = ("target", "band_edge")
# Above the exchange's own perp price band (orders beyond mark ± 5 % are refused) a cap means
# nothing; a hedge willing to pay that much over mark should not be automatic anyway.
MAX_SLIPPAGE_BPS_LIMIT = PERP_BAND_OF_INDEX * 10_000
# Tolerance of the step arithmetic: 0.3 / 0.001 is 299.99999999999994 in binary floats.
_EPSILON = 1e-9
# A delta per contract reported a hair above 1 (deep in the money, rounding) is believable; one
# further beyond is a wrong greek.
_DELTA_BOUND = 1.001


# ---------------------------------------------------------------------------------------
# Step and tick arithmetic (in the safe direction, never by rounding to nearest)
# ---------------------------------------------------------------------------------------

def _decimals(step: float) -> int:
    """Decimal places of a step or tick (0.001 -> 3, 0.5 -> 1, 5 -> 0)."""
    text = f"{step:.12f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def floor_to_step(value: float, step: float) -> float:
    """The largest multiple of ``step`` not above ``value`` (``value`` >= 0), cleanly rounded."""
    units = math.floor(value / step + _EPSILON)
    return round(max(0, units) * step, _decimals(step))


def ceil_to_step(value: float, step: float) -> float:
    """The smallest multiple of ``step`` not below ``value`` (``value`` >= 0), cleanly rounded."""
    units = math.ceil(value / step - _EPSILON)
    return round(max(0, units) * step, _decimals(step))


def is_multiple(value: float, step: float) -> bool:
    """``value`` is a whole number of ``step`` (to float precision)."""
    ratio = value / step
    return abs(ratio - round(ratio)) < 1e-6


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HedgeConfig:
    """A structure's delta hedge, as a strategy declares it (build it with ``delta_hedge``).

    Quantities and deltas are in units of the underlying (BTC, ETH). ``underlying`` None means
    "the structure's own underlying", bound by the wiring at start-up with ``bind``; such a
    config is checked against every listed underlying's perp step so binding cannot fail later.
    """

    band: float = 0.05
    target: float = 0.0
    min_interval_seconds: float = 300.0
    max_hedge_qty: float = 1.0
    max_order_qty: float | None = None
    underlying: str | None = None
    max_slippage_bps: float = 20.0
    max_mark_index_gap: float = 0.01
    on_close: str = "flatten"
    rebalance_to: str = "target"

    def __new__(cls, *args: Any, **kwargs: Any) -> "HedgeConfig":
        # A misspelled keyword (``max_hedge=``) becomes a ConfigError with "did you mean".
        if args or kwargs:
            refuse_unknown_keywords(OWNER, [f.name for f in fields(cls)], args, kwargs)
        return super().__new__(cls)

    def __post_init__(self) -> None:
        underlying = self.underlying
        if underlying is not None and (not isinstance(underlying, str) or underlying not in UNDERLYINGS):
            raise invalid(OWNER, "underlying", underlying,
                          f"use one of {', '.join(repr(name) for name in UNDERLYINGS)}, or None for the "
                          f"structure's own underlying")
        names = [underlying] if underlying is not None else list(UNDERLYINGS)
        steps = {name: UNDERLYINGS[name].perp_qty_step for name in names}
        minimums = {name: UNDERLYINGS[name].perp_min_qty for name in names}
        coarsest = max(steps.values())
        largest_min = max(minimums.values())
        which = f"the {underlying} perpetual" if underlying is not None else "every underlying's perpetual"

        self._number("band", lambda v: v > 0, "use a positive delta in units of the underlying, e.g. 0.05")
        if self.band < coarsest - _EPSILON:
            raise invalid(OWNER, "band", self.band,
                          f"use at least {coarsest:g}: a band narrower than the perp step of {which} "
                          f"cannot be reached by a whole number of steps", rule="narrower than the perp step")
        self._number("target", lambda v: True, "use a signed delta in units of the underlying (0 = delta-neutral)")
        self._number("min_interval_seconds", lambda v: v >= 0, "use seconds >= 0 between two rebalances, e.g. 300")
        for name in ("max_hedge_qty", "max_order_qty"):
            value = getattr(self, name)
            if name == "max_order_qty" and value is None:
                continue
            self._number(name, lambda v: v > 0, "use a positive quantity in units of the underlying")
            if value < largest_min - _EPSILON:
                raise invalid(OWNER, name, value, f"use at least {largest_min:g}, the minimum order of {which}")
            bad = [f"{name_} step {step:g}" for name_, step in steps.items() if not is_multiple(value, step)]
            if bad:
                raise invalid(OWNER, name, value, f"use a multiple of the perp step ({', '.join(bad)})")
        if abs(self.target) > self.max_hedge_qty + _EPSILON:
            raise invalid(OWNER, "target", self.target,
                          f"use a target within ±max_hedge_qty ({self.max_hedge_qty:g}): the hedge never holds more "
                          f"than that, and a delta of its own is a perp() leg, not a hedge (docs/HEDGING.md)",
                          rule="beyond what the hedge may hold")
        self._number("max_slippage_bps", lambda v: 0 < v <= MAX_SLIPPAGE_BPS_LIMIT,
                     f"use basis points over/under the mark in (0, {MAX_SLIPPAGE_BPS_LIMIT:g}], e.g. 20")
        self._number("max_mark_index_gap", lambda v: 0 < v <= PERP_BAND_OF_INDEX,
                     f"use a fraction of the index in (0, {PERP_BAND_OF_INDEX:g}], e.g. 0.01")
        if self.on_close not in ON_CLOSE_CHOICES:
            raise invalid(OWNER, "on_close", self.on_close,
                          "use 'flatten': a hedge that outlives its structure is a naked perpetual position "
                          "(docs/HEDGING.md)")
        if self.rebalance_to not in REBALANCE_TO_CHOICES:
            raise invalid(OWNER, "rebalance_to", self.rebalance_to,
                          f"use one of {', '.join(repr(c) for c in REBALANCE_TO_CHOICES)}")
        for name in ("band", "target", "min_interval_seconds", "max_hedge_qty", "max_slippage_bps",
                     "max_mark_index_gap"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.max_order_qty is not None:
            object.__setattr__(self, "max_order_qty", float(self.max_order_qty))

    def _number(self, name: str, ok: Callable[[float], bool], fix: str) -> None:
        value = getattr(self, name)
        if not is_number(value) or not ok(value):
            raise invalid(OWNER, name, value, fix)

    def bind(self, underlying: str) -> "HedgeConfig":
        """This config for a structure on ``underlying``; a config naming another underlying is refused.

        The wiring calls it once at start-up with the structure's underlying, so a BTC strategy
        cannot be handed a hedge on the ETH perpetual by mistake.
        """
        if self.underlying is not None and self.underlying != underlying:
            raise invalid(OWNER, "underlying", self.underlying,
                          f"the structure trades {underlying!r}; hedge it with its own perpetual "
                          f"(underlying={underlying!r} or None)")
        return HedgeConfig(**{f.name: getattr(self, f.name) for f in fields(self)} | {"underlying": underlying})

    @property
    def perp_symbol(self) -> str:
        """The perpetual the hedge trades (``BTCUSD``); only for a bound config."""
        if self.underlying is None:
            raise ConfigError(f"{OWNER}: the hedge is not bound to an underlying yet (call bind())")
        return perpetual_symbol(self.underlying)

    def to_record(self) -> dict[str, Any]:
        """JSON-plain fields, kept in a hedged trade's record (``metadata["hedge_config"]``) so a
        restart hedges the trade by the rules it opened with."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> "HedgeConfig":
        """The config of a stored record, validated again (a bad record is a ``ConfigError``)."""
        if not isinstance(data, Mapping):
            raise invalid(OWNER, "record", data, "use the mapping written by HedgeConfig.to_record()")
        return cls(**dict(data))

    def describe(self) -> str:
        """One line for logs and the operator: what the hedge keeps and how."""
        cap = f", max {self.max_order_qty:g} per order" if self.max_order_qty is not None else ""
        return (f"delta hedge on {self.underlying or 'the structure underlying'}: keep {self.target:g} ± "
                f"{self.band:g}, rebalance to {self.rebalance_to} at most every {self.min_interval_seconds:g}s, "
                f"hedge ≤ {self.max_hedge_qty:g}{cap}, slippage ≤ {self.max_slippage_bps:g} bps")


def delta_hedge(**options: Any) -> HedgeConfig:
    """A ``HedgeConfig`` from keywords (defaults: band 0.05, target 0, every 300 s at most, ...).

    ``delta_hedge(band=0.05, target=0.0, min_interval_seconds=300, max_hedge_qty=1.0,
    max_order_qty=None, underlying=None, max_slippage_bps=20, max_mark_index_gap=0.01,
    on_close="flatten", rebalance_to="target")``. Keywords only, so a strategy file reads as
    what it means; a misspelled one is refused with "did you mean".
    """
    return HedgeConfig(**options)


# ---------------------------------------------------------------------------------------
# State kept in the trade record
# ---------------------------------------------------------------------------------------

_STATE_KEYS = ("hedge_qty", "last_rebalance_at", "rebalances", "fees_usd", "slippage_usd")


@dataclass(frozen=True)
class HedgeState:
    """What the hedge of one trade has done so far, as stored in its record.

    ``hedge_qty`` is signed (long > 0) and comes from fills, never from what was asked.
    ``slippage_usd`` is what the fills paid against the mark at decision time (positive = a
    cost: bought above or sold below the mark), so ``cost_usd`` is fees plus slippage.
    """

    hedge_qty: float = 0.0
    last_rebalance_at: float | None = None
    rebalances: int = 0
    fees_usd: float = 0.0
    slippage_usd: float = 0.0

    @property
    def cost_usd(self) -> float:
        return self.fees_usd + self.slippage_usd

    def after_fill(self, side: Side, qty: float, price: float, fee_usd: float, mark: float,
                   *, at: float, new_rebalance: bool = True) -> "HedgeState":
        """The state once a hedge order filled ``qty`` at average ``price`` (0 filled: unchanged).

        ``new_rebalance`` False for the second order of a split rebalance (the opening part
        after the reducing part), which is the same rebalance and is not counted twice.
        """
        if qty <= 0:
            return self
        signed = Side(side).sign * qty
        slippage = (price - mark) * signed
        return HedgeState(hedge_qty=round(self.hedge_qty + signed, 12), last_rebalance_at=at,
                          rebalances=self.rebalances + (1 if new_rebalance else 0),
                          fees_usd=self.fees_usd + fee_usd, slippage_usd=self.slippage_usd + slippage)

    def to_record(self) -> dict[str, Any]:
        """JSON-plain keys for the trade record (``metadata["hedge"]``)."""
        return {"hedge_qty": self.hedge_qty, "last_rebalance_at": self.last_rebalance_at,
                "rebalances": self.rebalances, "fees_usd": self.fees_usd, "slippage_usd": self.slippage_usd}

    @classmethod
    def from_record(cls, data: Mapping[str, Any] | None) -> "HedgeState":
        """The state of a stored record; an absent record is a hedge that never traded.

        A malformed record is refused (``ValueError`` naming the key), never read as zero: a
        hedge believed flat when it is not would be re-hedged on top of itself.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"hedge record must be a mapping, got {data!r}")
        unknown = sorted(set(data) - set(_STATE_KEYS))
        if unknown:
            raise ValueError(f"hedge record has unknown key(s) {unknown}")
        values: dict[str, Any] = {}
        for key in ("hedge_qty", "fees_usd", "slippage_usd"):
            value = data.get(key, 0.0)
            if not is_number(value):
                raise ValueError(f"hedge record {key}={value!r} is not a finite number")
            values[key] = float(value)
        at = data.get("last_rebalance_at")
        if at is not None and not is_number(at):
            raise ValueError(f"hedge record last_rebalance_at={at!r} is not a time in epoch seconds")
        count = data.get("rebalances", 0)
        if not is_int(count) or count < 0:
            raise ValueError(f"hedge record rebalances={count!r} is not a count")
        return cls(last_rebalance_at=float(at) if at is not None else None, rebalances=count, **values)


# ---------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------

class HedgeAction(str, Enum):
    """What a decision asks of the wiring."""

    HOLD = "hold"          # nothing to do now (inside the band, below a step, at the cap)
    WAIT = "wait"          # outside the band but too soon after the last rebalance
    ORDER = "order"        # send ``orders``
    REFUSED = "refused"    # the market data cannot be trusted: no order (fail closed)


@dataclass(frozen=True)
class HedgeOrder:
    """One perp order: side, quantity (a whole number of steps), limit price, reduce-only."""

    side: Side
    qty: float
    price: float
    reduce_only: bool

    @property
    def signed_qty(self) -> float:
        return self.side.sign * self.qty


@dataclass(frozen=True)
class HedgeDecision:
    """The answer of ``decide``, with the reason in words for the log.

    ``orders`` is empty unless ``action`` is ORDER. With two orders the first reduces the
    existing hedge (reduce-only) and the second opens the other side; the wiring sends the
    second only after the first has fully filled and the hedge has read back at zero.
    ``allowed_at`` (WAIT) is when a rebalance becomes allowed; ``capped`` says a cap cut
    the order short, so the total may stay outside the band.
    """

    action: HedgeAction
    reason: str
    total_delta: float | None = None
    deviation: float | None = None
    orders: tuple[HedgeOrder, ...] = field(default_factory=tuple)
    allowed_at: float | None = None
    capped: bool = False

    @property
    def wants_order(self) -> bool:
        return self.action is HedgeAction.ORDER

    @property
    def signed_qty(self) -> float:
        """The change of the hedge if every order fills."""
        return round(sum(order.signed_qty for order in self.orders), 12)


def _price_problem(config: HedgeConfig, *, perp_mark: Any, perp_bid: Any, perp_ask: Any, index: Any,
                   quote_age_seconds: Any, max_quote_age_seconds: Any, perp_tick: Any) -> str | None:
    """Why these prices may not be traded on, or None. Every doubt refuses (fail closed)."""
    for name, value in (("index", index), ("mark", perp_mark), ("bid", perp_bid), ("ask", perp_ask),
                        ("tick", perp_tick)):
        if not is_number(value):
            return f"{name} {value!r} is missing or not a finite number"
        if value <= 0:
            return f"{name} {value!r} is not a positive price (an empty book side is not tradable)"
    if not is_number(max_quote_age_seconds) or max_quote_age_seconds <= 0:
        return f"max quote age {max_quote_age_seconds!r} is not a positive number of seconds"
    if not is_number(quote_age_seconds) or quote_age_seconds < 0:
        return f"quote age {quote_age_seconds!r} is not a number of seconds >= 0"
    if quote_age_seconds > max_quote_age_seconds:
        return f"quote is stale: {quote_age_seconds:g}s old, more than {max_quote_age_seconds:g}s"
    if perp_bid >= perp_ask:
        return f"book is crossed or locked: bid {perp_bid:g} >= ask {perp_ask:g}"
    gap = abs(perp_mark - index) / index
    if gap > config.max_mark_index_gap:
        return (f"mark {perp_mark:g} is {gap:.2%} from index {index:g}, more than "
                f"max_mark_index_gap {config.max_mark_index_gap:.2%}")
    band = perp_band(index)
    for name, value in (("bid", perp_bid), ("ask", perp_ask)):
        problem = band.problem(name, value)
        if problem is not None:
            return problem
    return None


def _limit_price(config: HedgeConfig, side: Side, *, mark: float, bid: float, ask: float, tick: float) -> float:
    """The far touch capped at mark × (1 ± slippage), snapped to the tick away from the cap."""
    slippage = config.max_slippage_bps / 10_000.0
    if side is Side.BUY:
        return floor_to_step(min(ask, mark * (1.0 + slippage)), tick)
    return ceil_to_step(max(bid, mark * (1.0 - slippage)), tick)


def _orders(side: Side, qty: float, hedge_qty: float, price: float, step: float) -> tuple[HedgeOrder, ...]:
    """``qty`` on ``side`` as orders that never flip the hedge: reducing part first, then the rest."""
    reduces = hedge_qty * side.sign < 0
    if not reduces:
        return (HedgeOrder(side, qty, price, reduce_only=False),)
    reducing = floor_to_step(min(qty, abs(hedge_qty)), step)
    opening = floor_to_step(qty - reducing, step)
    orders = []
    if reducing >= step - _EPSILON:
        orders.append(HedgeOrder(side, reducing, price, reduce_only=True))
    if opening >= step - _EPSILON:
        orders.append(HedgeOrder(side, opening, price, reduce_only=False))
    return tuple(orders)


def decide(config: HedgeConfig, *, structure_delta: float, hedge_qty: float, now: float,
           last_rebalance_at: float | None, perp_step: float, perp_tick: float, perp_mark: float,
           perp_bid: float, perp_ask: float, index: float, quote_age_seconds: float,
           max_quote_age_seconds: float, structure_size: float,
           perp_min_qty: float | None = None) -> HedgeDecision:
    """What the hedge should do now. Pure: the same inputs always give the same answer.

    ``structure_delta`` is the option legs' delta in units of the underlying (signed);
    ``structure_size`` the option legs' quantities summed, unsigned (the most delta they can
    ever have); ``hedge_qty`` the perp the trade holds, signed, read from fills. ``perp_step``,
    ``perp_tick`` and ``perp_min_qty`` are the listed perp's (its ``PerpSpec``); the minimum
    defaults to the step. The rule is in the module docstring.
    """
    for name, value in (("structure delta", structure_delta), ("hedge qty", hedge_qty), ("now", now),
                        ("structure size", structure_size)):
        if not is_number(value):
            return HedgeDecision(HedgeAction.REFUSED, f"{name} {value!r} is not a finite number")
    if structure_size < 0 or abs(structure_delta) > structure_size * _DELTA_BOUND + _EPSILON:
        # |delta| <= 1 per contract: a delta beyond the size is a wrong greek, never hedged.
        return HedgeDecision(HedgeAction.REFUSED, f"structure delta {structure_delta:+g} is beyond what option legs "
                                                  f"of size {structure_size:g} can have: a wrong delta")
    if not is_number(perp_step) or perp_step <= 0:
        return HedgeDecision(HedgeAction.REFUSED, f"perp step {perp_step!r} is not a positive number")
    minimum = perp_step if perp_min_qty is None else perp_min_qty
    if not is_number(minimum) or minimum <= 0:
        return HedgeDecision(HedgeAction.REFUSED, f"perp minimum {perp_min_qty!r} is not a positive number")
    total = structure_delta + hedge_qty
    deviation = total - config.target

    def answer(action: HedgeAction, reason: str, *, allowed_at: float | None = None, capped: bool = False,
               orders: tuple[HedgeOrder, ...] = ()) -> HedgeDecision:
        return HedgeDecision(action, reason, total_delta=total, deviation=deviation, orders=orders,
                             allowed_at=allowed_at, capped=capped)

    if abs(deviation) <= config.band + _EPSILON:
        return answer(HedgeAction.HOLD,
                      f"inside band: total delta {total:+g} within {config.target:g} ± {config.band:g}")
    outside = f"outside band (total delta {total:+g}, target {config.target:g} ± {config.band:g})"
    if last_rebalance_at is not None:
        if not is_number(last_rebalance_at):
            return answer(HedgeAction.REFUSED, f"last rebalance time {last_rebalance_at!r} is not a number")
        allowed_at = last_rebalance_at + config.min_interval_seconds
        if now < allowed_at:
            return answer(HedgeAction.WAIT, f"{outside} but the last rebalance was {now - last_rebalance_at:g}s ago; "
                                            f"allowed in {allowed_at - now:g}s", allowed_at=allowed_at)
    side = Side.SELL if deviation > 0 else Side.BUY
    wanted = abs(deviation)
    if config.rebalance_to == "band_edge":
        # One step inside the edge: the band is at least a step wide, so this never passes the target.
        wanted = max(0.0, wanted - config.band + perp_step)
    qty = floor_to_step(wanted, perp_step)
    capped = False
    if config.max_order_qty is not None:
        limit = floor_to_step(config.max_order_qty, perp_step)
        if qty > limit:
            qty, capped = limit, True
    limit_of_hedge = min(config.max_hedge_qty, structure_size + abs(config.target))
    room = floor_to_step(max(0.0, limit_of_hedge - side.sign * hedge_qty), perp_step)
    if qty > room:
        qty, capped = room, True
    if qty < minimum - _EPSILON:
        cap = (f"max_hedge_qty {config.max_hedge_qty:g}" if limit_of_hedge >= config.max_hedge_qty
               else f"the structure's size {structure_size:g} (+ |target| {abs(config.target):g})")
        why = (f"the hedge {hedge_qty:+g} is at {cap}" if capped
               else f"{side.name.lower()} {wanted:g} is below the perp minimum {minimum:g}")
        return answer(HedgeAction.HOLD, f"{outside} but {why}", capped=capped)
    problem = _price_problem(config, perp_mark=perp_mark, perp_bid=perp_bid, perp_ask=perp_ask, index=index,
                             quote_age_seconds=quote_age_seconds, max_quote_age_seconds=max_quote_age_seconds,
                             perp_tick=perp_tick)
    if problem is not None:
        return answer(HedgeAction.REFUSED, f"{outside}; no hedge order: {problem}", capped=capped)
    price = _limit_price(config, side, mark=perp_mark, bid=perp_bid, ask=perp_ask, tick=perp_tick)
    # A part of a split below the exchange's minimum is dropped, never rounded up.
    parts = _orders(side, qty, hedge_qty, price, perp_step)
    orders = tuple(order for order in parts if order.qty >= minimum - _EPSILON)
    if orders and any(order.reduce_only for order in parts) and not any(order.reduce_only for order in orders):
        # The opening part alone would take the hedge through zero in one ordinary order.
        return answer(HedgeAction.HOLD, f"{outside} but the part that reduces the hedge {hedge_qty:+g} is below "
                                        f"the perp minimum {minimum:g}, and opening the other side alone would "
                                        f"flip it through zero", capped=capped)
    if not orders:
        return answer(HedgeAction.HOLD, f"{outside} but each part of the split order is below the perp minimum "
                                        f"{minimum:g}", capped=capped)
    qty = round(sum(order.qty for order in orders), 12)
    note = " (capped)" if capped else ""
    split = " in two orders (reduce-only, then open)" if len(orders) == 2 else ""
    return answer(HedgeAction.ORDER, f"{outside}: {side.name.lower()} {qty:g}{note}{split} at {price:g}",
                  orders=orders, capped=capped)
