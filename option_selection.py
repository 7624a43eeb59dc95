"""Leg selection: turn declarative leg specs into concrete option symbols (BEHAVIOUR.md §1.4-§1.6, §3).

Why this module is shaped the way it is:

* Strategies are configured once but trade many times, so a leg is described by *criteria*
  (``LegSpec``), never by a symbol; resolution happens when a trade is about to open.
* Every leg of one structure is resolved against ONE ``ChainSnapshot`` (one index price, one
  ``as_of``, one chain call per expiry): legs priced from different moments would make the
  structure checks and the deltas meaningless, and per-option detail calls are too slow and
  rate-limited.
* Selection is pure given a snapshot: everything below ``resolve_legs``/``OptionQuery.resolve``
  takes a ``ChainSnapshot`` and a ``now``, which is what makes it testable by hand.
* Configuration mistakes are found at construction (``ConfigError`` naming the field, the
  bad value and the allowed values); "the market has nothing that fits" is a
  ``SelectionError`` at trade time, all or nothing.
* Every leg names its underlying (``LegSpec.underlying``, ``find_option(underlying=)``;
  BTC by default) and resolves against that underlying's instruments, chain and index, in a
  snapshot of that underlying only. One structure trades one underlying. Quantities are
  checked at construction against the per-underlying table ``contracts.UNDERLYINGS`` (BTC
  0.01 steps, ETH 0.1), and again at resolution against the listed instrument's ``minQty``
  (a ``SelectionError``, never a silent rounding).
* A perpetual future is a leg too (``perp(qty, side, underlying=...)``, a ``PerpLegSpec``,
  which is a ``LegSpec`` so it is accepted wherever legs are): it has no strike or expiry to
  choose, so it resolves to its underlying's perpetual, quoted from the perp's ticker and
  book, and its quantity is rechecked against the exchange's ``PerpSpec``. It may stand
  next to option legs of the same underlying, or alone; the structure checks look at the
  option legs only (docs/PERPETUALS.md).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from contracts import (
    DEFAULT_UNDERLYING,
    PERPETUAL,
    UNDERLYINGS,
    Contract,
    Side,
    parse_date_token,
    perpetual_symbol,
    underlying_spec,
)
from errors import ConfigError, SelectionError, TraderError
from price_sanity import quote_problems
from seams import PerpChainSource, require
from validation import invalid, is_int, is_number, refuse_unknown_keys, refuse_unknown_keywords

if TYPE_CHECKING:  # imported for type hints only: selection works on any seams.ChainSource
    from coincall_payloads import Instrument, OptionRow
    from market_data import ChainSnapshot
    from seams import ChainSource

logger = logging.getLogger(__name__)

__all__ = [
    "LegSpec",
    "PerpLegSpec",
    "perp",
    "OptionQuery",
    "SelectedOption",
    "ResolvedLeg",
    "find_option",
    "select_option",
    "resolve_legs",
    "strangle",
    "straddle",
    "iron_condor",
    "butterfly",
    "vertical_spread",
    "DEFAULT_MIN_MINUTES_TO_EXPIRY",
]

DEFAULT_MIN_MINUTES_TO_EXPIRY = 60.0
EXCHANGE_PRE_EXPIRY_HALT_MINUTES = 15.0  # exchange rule: no trading in the last 15 minutes
STRIKE_EPSILON = 1e-9
SECONDS_PER_DAY = 86_400.0

OPTION_TYPES = ("C", "P")
RANKINGS = ("delta_mid", "delta_target", "strike_atm", "strike_otm", "strike_itm")
EXPIRY_TARGETS = ("near", "far", "mid")
SPREAD_KINDS = ("debit", "credit")
EXPIRY_KEYS = ("dte", "dte_min", "dte_max", "symbol", "min_days", "max_days", "target")
STRIKE_TYPES = ("delta", "closestStrike", "spotdistance%", "strike", "offset", "compound")
LEGACY_SPOTDISTANCE = "spotdistance %"
STRIKE_KEYS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "delta": ("type", "value"),
    "closestStrike": ("type", "value"),
    "spotdistance%": ("type", "value"),
    "strike": ("type", "value"),
    "offset": ("type", "from_leg", "value"),
    "compound": ("type", "strike", "delta", "rank_by"),
}
STRIKE_FILTER_KEYS = (
    "below_atm",
    "above_atm",
    "min_strike",
    "max_strike",
    "min_distance_pct",
    "max_distance_pct",
    "min_otm_pct",
    "max_otm_pct",
)
DELTA_FILTER_KEYS = ("min", "max", "target")
# Who is refusing: the prefix of every ConfigError this module raises (validation.invalid).
LEG_SPEC = "LegSpec"
FIND_OPTION = "find_option"
RESOLVE_LEGS = "resolve_legs"


def _default_expiry() -> dict:
    return {"dte": "next"}


# --------------------------------------------------------------------------- validation helpers
def _check_option_type(owner: str, field_name: str, option_type: Any) -> str:
    if option_type not in OPTION_TYPES:
        raise invalid(owner, field_name, option_type, "use 'C' (call) or 'P' (put)")
    return option_type


def _check_side(owner: str, field_name: str, side: Any) -> Side:
    if not is_int(side) or side not in (1, 2):
        raise invalid(owner, field_name, side, "use 1 (BUY) or 2 (SELL) (Side.BUY / Side.SELL)")
    return Side(side)


def _is_multiple(qty: float, step: float) -> bool:
    units = qty / step
    return abs(units - round(units)) <= 1e-6


def _check_qty(owner: str, field_name: str, qty: Any, underlying: str = DEFAULT_UNDERLYING) -> float:
    """Quantities are in units of the underlying, in its option steps (``contracts.UNDERLYINGS``:
    BTC from 0.01 in 0.01 steps, ETH from 0.1 in 0.1 steps); never rounded silently."""
    spec = underlying_spec(underlying)
    if not is_number(qty) or qty < spec.option_min_qty - 1e-12:
        raise invalid(owner, field_name, qty, f"use a quantity >= {spec.option_min_qty:g} {spec.name}")
    if not _is_multiple(float(qty), spec.option_qty_step):
        raise invalid(owner, field_name, qty, f"use a multiple of {spec.option_qty_step:g} {spec.name}")
    return float(qty)


def _check_delta_value(owner: str, field_name: str, value: Any, option_type: str) -> float:
    """Call deltas live in (0, 1), put deltas in (-1, 0): a sign slip picks the wrong wing."""
    if not is_number(value):
        raise invalid(owner, field_name, value, "use a number")
    if option_type == "C" and not 0.0 < value < 1.0:
        raise invalid(owner, field_name, value, "a call delta must be in (0, 1)")
    if option_type == "P" and not -1.0 < value < 0.0:
        raise invalid(owner, field_name, value, "a put delta must be in (-1, 0)")
    return float(value)


def validate_expiry_criteria(criteria: Any, field_name: str = "expiry_criteria", owner: str = LEG_SPEC) -> dict:
    """Check one of the three expiry forms of §3.2 and return a private copy."""
    if not isinstance(criteria, Mapping):
        raise invalid(owner, field_name, criteria, "use a dict such as {'dte': 'next'}")
    refuse_unknown_keys(f"{owner}.{field_name}", criteria, EXPIRY_KEYS)
    forms = [name for name, keys in (
        ("dte", ("dte", "dte_min", "dte_max")),
        ("symbol", ("symbol",)),
        ("days", ("min_days", "max_days", "target")),
    ) if any(key in criteria for key in keys)]
    if len(forms) != 1:
        raise invalid(owner, field_name, dict(criteria),
                      "use exactly one form: {'dte': 'next'|N[, 'dte_min', 'dte_max']}, {'symbol': '28MAR26'} "
                      "or {'min_days', 'max_days', 'target': near|far|mid}")
    form = forms[0]
    if form == "dte":
        _validate_dte_form(criteria, field_name, owner)
    elif form == "symbol":
        token = criteria["symbol"]
        try:
            if not isinstance(token, str):
                raise ValueError(token)
            parse_date_token(token)
        except ValueError:
            raise invalid(owner, f"{field_name}['symbol']", token,
                          "use a date token like '28MAR26' or '5FEB26'") from None
    else:
        _validate_days_form(criteria, field_name, owner)
    return dict(criteria)


def _validate_dte_form(criteria: Mapping[str, Any], field_name: str, owner: str) -> None:
    if "dte" not in criteria:
        raise invalid(owner, field_name, dict(criteria), "'dte_min'/'dte_max' need 'dte': N (int >= 0)")
    dte = criteria["dte"]
    if dte == "next":
        if "dte_min" in criteria or "dte_max" in criteria:
            raise invalid(owner, field_name, dict(criteria), "'dte_min'/'dte_max' only apply to an integer 'dte'")
        return
    if not is_int(dte) or dte < 0:
        raise invalid(owner, f"{field_name}['dte']", dte, "use 'next' or an int >= 0")
    for key in ("dte_min", "dte_max"):
        if key in criteria and (not is_int(criteria[key]) or criteria[key] < 0):
            raise invalid(owner, f"{field_name}[{key!r}]", criteria[key], "use an int >= 0")
    if criteria.get("dte_min", 0) > criteria.get("dte_max", math.inf):
        raise invalid(owner, field_name, dict(criteria), "dte_min must be <= dte_max")


def _validate_days_form(criteria: Mapping[str, Any], field_name: str, owner: str) -> None:
    for key in ("min_days", "max_days"):
        if key in criteria and (not is_number(criteria[key]) or criteria[key] < 0):
            raise invalid(owner, f"{field_name}[{key!r}]", criteria[key], "use a number >= 0")
    if criteria.get("min_days", 0) > criteria.get("max_days", 3650):
        raise invalid(owner, field_name, dict(criteria), "min_days must be <= max_days")
    target = criteria.get("target", "near")
    if target not in EXPIRY_TARGETS:
        raise invalid(owner, f"{field_name}['target']", target, f"use one of {', '.join(EXPIRY_TARGETS)}")


def _validate_strike_filter(strike: Any, field_name: str = "strike", owner: str = FIND_OPTION) -> dict:
    if strike is None:
        return {}
    if not isinstance(strike, Mapping):
        raise invalid(owner, field_name, strike, f"use a dict with keys among {', '.join(STRIKE_FILTER_KEYS)}")
    refuse_unknown_keys(f"{owner}.{field_name}", strike, STRIKE_FILTER_KEYS)
    for key in ("below_atm", "above_atm"):
        if key in strike and not isinstance(strike[key], bool):
            raise invalid(owner, f"{field_name}[{key!r}]", strike[key], "use True or False")
    if strike.get("below_atm") and strike.get("above_atm"):
        raise invalid(owner, field_name, dict(strike), "below_atm and above_atm together match nothing; use one")
    for key in STRIKE_FILTER_KEYS[2:]:
        if key in strike and not is_number(strike[key]):
            raise invalid(owner, f"{field_name}[{key!r}]", strike[key], "use a number")
    for low, high in (("min_strike", "max_strike"), ("min_distance_pct", "max_distance_pct"),
                      ("min_otm_pct", "max_otm_pct")):
        if low in strike and high in strike and strike[low] > strike[high]:
            raise invalid(owner, field_name, dict(strike), f"{low} must be <= {high}")
    return dict(strike)


def _validate_delta_filter(delta: Any, option_type: str, field_name: str = "delta", owner: str = FIND_OPTION) -> dict:
    if delta is None:
        return {}
    if not isinstance(delta, Mapping):
        raise invalid(owner, field_name, delta, f"use a dict with keys among {', '.join(DELTA_FILTER_KEYS)}")
    refuse_unknown_keys(f"{owner}.{field_name}", delta, DELTA_FILTER_KEYS)
    low_limit, high_limit = (0.0, 1.0) if option_type == "C" else (-1.0, 0.0)
    for key in DELTA_FILTER_KEYS:
        if key not in delta:
            continue
        value = delta[key]
        if not is_number(value) or not low_limit <= value <= high_limit:
            sign = "in [0, 1] for calls" if option_type == "C" else "in [-1, 0] for puts (negative)"
            raise invalid(owner, f"{field_name}[{key!r}]", value, f"use a delta {sign}")
    if "min" in delta and "max" in delta and delta["min"] > delta["max"]:
        raise invalid(owner, field_name, dict(delta), "min must be <= max")
    return dict(delta)


def _effective_rank(rank_by: Any, delta: Mapping[str, Any], field_name: str = "rank_by",
                    owner: str = FIND_OPTION) -> str:
    """``None`` picks delta_mid / delta_target / strike_atm from what the delta filter gives (§1.5)."""
    if rank_by is None:
        if "min" in delta and "max" in delta:
            return "delta_mid"
        if "target" in delta:
            return "delta_target"
        return "strike_atm"
    if rank_by not in RANKINGS:
        raise invalid(owner, field_name, rank_by, f"use one of {', '.join(RANKINGS)}")
    if rank_by == "delta_mid" and not ("min" in delta and "max" in delta):
        raise invalid(owner, field_name, rank_by, "'delta_mid' needs both delta min and max")
    if rank_by == "delta_target" and "target" not in delta:
        raise invalid(owner, field_name, rank_by, "'delta_target' needs a delta target")
    return rank_by


# --------------------------------------------------------------------------- value objects
@dataclass(frozen=True)
class SelectedOption:
    """The winner of a ``find_option`` search, with the numbers it was chosen on."""

    symbol: str
    option_type: str
    strike: float
    expiry: datetime
    expiry_ms: int
    days_to_expiry: float
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    mark: float
    mark_iv: float
    delta: float | None
    gamma: float | None
    vega: float | None
    theta: float | None
    index_price: float
    distance_pct: float
    otm_pct: float
    as_of: float


@dataclass(frozen=True)
class OptionQuery:
    """A validated, declarative ``find_option`` selector; ``resolve(market)`` runs it.

    Frozen so one query built at import time can be reused for every trade; it holds no
    market data and does no I/O until resolved.
    """

    option_type: str
    expiry: dict = field(default_factory=_default_expiry)
    strike: dict = field(default_factory=dict)
    delta: dict = field(default_factory=dict)
    rank_by: str | None = None
    underlying: str = "BTC"

    def __post_init__(self) -> None:
        option_type = _check_option_type(FIND_OPTION, "option_type", self.option_type)
        object.__setattr__(self, "expiry", validate_expiry_criteria(self.expiry, "expiry", FIND_OPTION))
        object.__setattr__(self, "strike", _validate_strike_filter(self.strike))
        object.__setattr__(self, "delta", _validate_delta_filter(self.delta, option_type))
        object.__setattr__(self, "rank_by", _effective_rank(self.rank_by, self.delta))
        _check_underlying(FIND_OPTION, "underlying", self.underlying)

    def select(self, snapshot: "ChainSnapshot", expiry_ms: int, *, now: float, side: int | None = None,
               min_minutes_to_expiry: float = DEFAULT_MIN_MINUTES_TO_EXPIRY) -> "OptionRow | None":
        """Run the §3.4 pipeline on ``snapshot`` for one expiry; pure."""
        rows = _selectable_rows(snapshot, expiry_ms, self.option_type, now, side, min_minutes_to_expiry)
        return _run_pipeline(self, rows, snapshot.index_price)

    def resolve(self, market: "ChainSource", *, now: float | None = None, side: int | None = None,
                min_minutes_to_expiry: float = DEFAULT_MIN_MINUTES_TO_EXPIRY) -> SelectedOption | None:
        """Fetch instruments and one fresh chain snapshot, then select; ``None`` = nothing matches."""
        current = _market_now(market) if now is None else now
        instruments = market.instruments(self.underlying)
        try:
            expiry_ms = choose_expiry(self.expiry, instruments, current, self.option_type, min_minutes_to_expiry)
        except SelectionError as exc:
            logger.info("find_option %s: no expiry matches: %s", self.option_type, exc)
            return None
        snapshot = market.chain_snapshot([expiry_ms], underlying=self.underlying)
        return select_option(snapshot, self, expiry_ms=expiry_ms, now=current, side=side,
                             min_minutes_to_expiry=min_minutes_to_expiry)


def _market_now(market: "ChainSource") -> float:
    """"Now" comes from the market's injected clock, so selection and data share one time."""
    return float(market.clock.now())


def _check_underlying(owner: str, field_name: str, underlying: Any) -> str:
    """One of the supported underlyings (``contracts.UNDERLYINGS``), spelt as the table spells it."""
    if not isinstance(underlying, str) or underlying not in UNDERLYINGS:
        raise invalid(owner, field_name, underlying,
                      f"use one of {', '.join(repr(name) for name in UNDERLYINGS)} (upper case)")
    return underlying


@dataclass(frozen=True)
class LegSpec:
    """One leg of a structure, described by criteria and resolved at trade time (§1.4)."""

    option_type: str
    side: Side
    qty: float
    strike_criteria: dict | OptionQuery
    expiry_criteria: dict = field(default_factory=_default_expiry)
    underlying: str = "BTC"

    def __new__(cls, *args: Any, **kwargs: Any) -> "LegSpec":
        # Keyword typos become a ConfigError with "did you mean" (see refuse_unknown_keywords).
        if args or kwargs:
            refuse_unknown_keywords(LEG_SPEC, [f.name for f in fields(cls)], args, kwargs)
        return super().__new__(cls)

    def __post_init__(self) -> None:
        option_type = _check_option_type(LEG_SPEC, "option_type", self.option_type)
        object.__setattr__(self, "side", _check_side(LEG_SPEC, "side", self.side))
        _check_underlying(LEG_SPEC, "underlying", self.underlying)
        object.__setattr__(self, "qty", _check_qty(LEG_SPEC, "qty", self.qty, self.underlying))
        expiry = validate_expiry_criteria(self.expiry_criteria)
        object.__setattr__(self, "expiry_criteria", expiry)
        criteria = self.strike_criteria
        if isinstance(criteria, OptionQuery):
            self._check_query(criteria, expiry)
            return
        normalised = validate_strike_criteria(criteria, option_type)
        if normalised["type"] == "offset" and expiry != _default_expiry():
            raise invalid(LEG_SPEC, "expiry_criteria", expiry,
                          f"an offset leg uses the expiry of leg {normalised['from_leg']}; leave "
                          f"expiry_criteria at its default")
        object.__setattr__(self, "strike_criteria", normalised)

    def _check_query(self, query: OptionQuery, expiry: dict) -> None:
        if query.option_type != self.option_type:
            raise invalid(LEG_SPEC, "strike_criteria", query,
                          f"it is an OptionQuery for option_type={query.option_type!r} but the leg has "
                          f"option_type={self.option_type!r}; make them equal")
        if expiry != _default_expiry():
            raise invalid(LEG_SPEC, "expiry_criteria", expiry,
                          "an OptionQuery carries its own expiry; leave expiry_criteria at its default")
        if query.underlying != self.underlying:
            raise invalid(LEG_SPEC, "strike_criteria", query,
                          f"it is an OptionQuery on {query.underlying!r} but the leg trades "
                          f"{self.underlying!r}; make them equal")

    @property
    def is_perpetual(self) -> bool:
        """False: an option leg (``PerpLegSpec`` says True)."""
        return False

    @property
    def strike_type(self) -> str:
        """``"query"`` for an OptionQuery, else the criteria ``type``."""
        if isinstance(self.strike_criteria, OptionQuery):
            return "query"
        return self.strike_criteria["type"]

    @property
    def depends_on(self) -> int | None:
        """Index of the leg an offset leg is measured from, else ``None``."""
        if self.strike_type == "offset":
            # An offset strike's criteria is a dict (only "query" is an OptionQuery); mypy cannot see it.
            return int(self.strike_criteria["from_leg"])  # type: ignore[index]
        return None


PERP = "perp"


@dataclass(frozen=True)
class PerpLegSpec(LegSpec):
    """A perpetual-future leg: side and quantity on an underlying's perpetual (``perp()`` builds it).

    A ``LegSpec`` so every place that takes legs takes it; it has no strike or expiry
    (``option_type`` is ``contracts.PERPETUAL``, the criteria stay empty). The quantity is
    checked against the underlying's perp sizes (``contracts.UNDERLYINGS``: BTC 0.001,
    ETH 0.01) here, and against the exchange's ``PerpSpec`` at resolution.
    """

    def __post_init__(self) -> None:
        if self.option_type != PERPETUAL:
            raise invalid(PERP, "option_type", self.option_type, f"a perp leg's option_type is {PERPETUAL!r}")
        object.__setattr__(self, "side", _check_side(PERP, "side", self.side))
        _check_underlying(PERP, "underlying", self.underlying)
        object.__setattr__(self, "qty", _check_perp_qty(PERP, "qty", self.qty, self.underlying))
        if self.strike_criteria or self.expiry_criteria != _default_expiry():
            raise invalid(PERP, "strike_criteria", self.strike_criteria,
                          "a perpetual has no strike or expiry: build the leg with perp(qty, side, underlying=...)")
        object.__setattr__(self, "strike_criteria", {})

    @property
    def is_perpetual(self) -> bool:
        return True

    @property
    def strike_type(self) -> str:
        return "perpetual"

    @property
    def depends_on(self) -> int | None:
        return None

    @property
    def symbol(self) -> str:
        """The perpetual this leg trades (``BTCUSD``)."""
        return perpetual_symbol(self.underlying)


def _check_perp_qty(owner: str, field_name: str, qty: Any, underlying: str) -> float:
    """A perp quantity: at least the underlying's perp minimum and a multiple of its step."""
    spec = underlying_spec(underlying)
    if not is_number(qty) or qty < spec.perp_min_qty - 1e-12:
        raise invalid(owner, field_name, qty, f"use a quantity >= {spec.perp_min_qty:g} {spec.name}")
    if not _is_multiple(float(qty), spec.perp_qty_step):
        raise invalid(owner, field_name, qty, f"use a multiple of {spec.perp_qty_step:g} {spec.name}")
    return float(qty)


def perp(qty: float, side: int = 1, *, underlying: str = DEFAULT_UNDERLYING) -> list[LegSpec]:
    """One perpetual leg, as a list so it composes with the templates (``strangle(0.1) + perp(0.005, 1)``).

    ``side`` 1 buys (long), 2 sells (short); ``qty`` in units of the underlying.
    """
    # ``side`` is checked (and made a Side) by the spec itself, as LegSpec does for its own.
    return [PerpLegSpec(option_type=PERPETUAL, side=side, qty=qty, strike_criteria={},  # type: ignore[arg-type]
                        underlying=underlying)]


def validate_strike_criteria(criteria: Any, option_type: str, field_name: str = "strike_criteria",
                             owner: str = LEG_SPEC) -> dict:
    """Check one strike criterion of §3.3 and return a normalised private copy."""
    if not isinstance(criteria, Mapping):
        raise invalid(owner, field_name, criteria, "use a dict with a 'type' or an OptionQuery from find_option()")
    kind = criteria.get("type")
    if kind == LEGACY_SPOTDISTANCE:
        kind = "spotdistance%"
    if kind not in STRIKE_TYPES:
        raise invalid(owner, f"{field_name}['type']", kind, f"use one of {', '.join(STRIKE_TYPES)}")
    refuse_unknown_keys(f"{owner}.{field_name}", criteria, STRIKE_KEYS_BY_TYPE[kind])
    result = dict(criteria)
    result["type"] = kind
    value = criteria.get("value")
    value_field = f"{field_name}['value']"
    if kind == "delta":
        result["value"] = _check_delta_value(owner, value_field, value, option_type)
    elif kind == "closestStrike":
        if value is not None and (not is_number(value) or value < 0):
            raise invalid(owner, value_field, value, "use a strike >= 0 (0 or absent = ATM)")
        result["value"] = float(value or 0.0)
    elif kind == "spotdistance%":
        if not is_number(value) or value <= -100:
            raise invalid(owner, value_field, value, "use a percentage > -100")
    elif kind == "strike":
        if not is_number(value) or value <= 0:
            raise invalid(owner, value_field, value, "use a listed strike > 0")
    elif kind == "offset":
        if not is_int(criteria.get("from_leg")) or criteria["from_leg"] < 0:
            raise invalid(owner, f"{field_name}['from_leg']", criteria.get("from_leg"),
                          "use the index (int >= 0) of another leg")
        if not is_number(value):
            raise invalid(owner, value_field, value, "use a strike distance in USD (0 = same strike)")
    else:  # compound: validated by building the query it stands for
        _validate_strike_filter(criteria.get("strike"), f"{field_name}['strike']", owner)
        delta = _validate_delta_filter(criteria.get("delta"), option_type, f"{field_name}['delta']", owner)
        _effective_rank(criteria.get("rank_by"), delta, f"{field_name}['rank_by']", owner)
    return result


@dataclass(frozen=True)
class ResolvedLeg:
    """A leg bound to one contract of one chain snapshot: the spec, the contract, the row it was chosen on.

    Side and quantity are the spec's (read through, never copied); ``index_price`` and
    ``as_of`` are the snapshot's, the same for every leg of the structure.
    """

    index: int
    spec: LegSpec
    contract: Contract
    row: "OptionRow"
    index_price: float
    as_of: float

    @property
    def symbol(self) -> str:
        return self.contract.symbol

    @property
    def side(self) -> Side:
        return self.spec.side

    @property
    def qty(self) -> float:
        return self.spec.qty


# --------------------------------------------------------------------------- expiry choice
def _utc_date(epoch_seconds: float) -> date:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).date()


def dte_of(expiry_ms: int, now: float) -> int:
    """Calendar days from today (UTC) to the expiry date; expiries are at 08:00 UTC."""
    return (_utc_date(expiry_ms / 1000.0) - _utc_date(now)).days


def selectable_expiries(instruments: Iterable["Instrument"], now: float, option_type: str | None = None,
                        min_minutes_to_expiry: float = DEFAULT_MIN_MINUTES_TO_EXPIRY) -> list[int]:
    """Sorted expiries with an active instrument (of ``option_type``) more than the guard away."""
    horizon_ms = (now + min_minutes_to_expiry * 60.0) * 1000.0
    found = {
        inst.expiry_ms
        for inst in instruments
        if inst.is_active and inst.expiry_ms > horizon_ms
        and (option_type is None or inst.option_type == option_type)
    }
    return sorted(found)


def choose_expiry(criteria: Mapping[str, Any], instruments: Iterable["Instrument"], now: float,
                  option_type: str | None = None,
                  min_minutes_to_expiry: float = DEFAULT_MIN_MINUTES_TO_EXPIRY) -> int:
    """Pick one expiry per §3.2 among the selectable ones; ``SelectionError`` when none fits."""
    expiries = selectable_expiries(instruments, now, option_type, min_minutes_to_expiry)
    if not expiries:
        raise SelectionError("no selectable expiry (none active more than "
                             f"{min_minutes_to_expiry:g} minutes before expiry)")
    if "dte" in criteria:
        return _choose_by_dte(criteria, expiries, now)
    if "symbol" in criteria:
        wanted = parse_date_token(criteria["symbol"])
        for expiry_ms in expiries:
            if _utc_date(expiry_ms / 1000.0) == wanted:
                return expiry_ms
        raise SelectionError(f"no selectable expiry on {criteria['symbol']} ({wanted}); available: "
                             f"{[_utc_date(e / 1000.0).isoformat() for e in expiries]}")
    return _choose_by_days(criteria, expiries, now)


def _choose_by_dte(criteria: Mapping[str, Any], expiries: list[int], now: float) -> int:
    if criteria["dte"] == "next":
        return expiries[0]
    wanted = int(criteria["dte"])
    by_dte = [(dte_of(e, now), e) for e in expiries]
    if "dte_min" not in criteria and "dte_max" not in criteria:
        matching = [e for d, e in by_dte if d == wanted]
    else:
        low = criteria.get("dte_min", 0)
        high = criteria.get("dte_max", math.inf)
        window = [(d, e) for d, e in by_dte if low <= d <= high]
        matching = [min(window, key=lambda de: (abs(de[0] - wanted), de[1]))[1]] if window else []
    if not matching:
        raise SelectionError(f"no expiry matches {dict(criteria)!r}; available dtes: {[d for d, _ in by_dte]}")
    return matching[0]


def _choose_by_days(criteria: Mapping[str, Any], expiries: list[int], now: float) -> int:
    low = float(criteria.get("min_days", 0.0))
    high = float(criteria.get("max_days", 3650.0))
    days = [((e / 1000.0 - now) / SECONDS_PER_DAY, e) for e in expiries]
    window = [(d, e) for d, e in days if low <= d <= high]
    if not window:
        raise SelectionError(f"no expiry between {low:g} and {high:g} days; available days: "
                             f"{[round(d, 2) for d, _ in days]}")
    target = criteria.get("target", "near")
    if target == "near":
        return window[0][1]
    if target == "far":
        return window[-1][1]
    middle = (low + high) / 2.0
    return min(window, key=lambda de: (abs(de[0] - middle), de[1]))[1]


# --------------------------------------------------------------------------- rows and measures
def _selectable_rows(snapshot: "ChainSnapshot", expiry_ms: int, option_type: str, now: float,
                     side: int | None, min_minutes_to_expiry: float) -> list["OptionRow"]:
    """Rows we may trade (§3.1): active, far enough from expiry, quoted on our side, and
    believable (``price_sanity``: a sane mark, sane sides, not crossed).

    ``side=None`` (a bare find_option) accepts a row with a bid or an ask. An insane row is
    never chosen: the open would refuse its price anyway and count a failed open for the day,
    and its delta (computed from the same bad figures) would mislead a delta target. The
    selection picks among the believable rows instead, or finds nothing and waits.
    """
    if expiry_ms / 1000.0 - now <= min_minutes_to_expiry * 60.0:
        return []
    selectable = []
    for row in snapshot.rows_for(expiry_ms, option_type):
        instrument = snapshot.instruments.get(row.symbol)
        if instrument is None or not instrument.is_active:
            continue
        problems = quote_problems(row, row.symbol)
        if problems:
            logger.debug("selection skips %s: %s", row.symbol, "; ".join(problems))
            continue
        if side == Side.BUY:
            quoted = row.ask > 0
        elif side == Side.SELL:
            quoted = row.bid > 0
        else:
            quoted = row.bid > 0 or row.ask > 0
        if quoted:
            selectable.append(row)
    return selectable


def distance_pct(strike: float, index_price: float) -> float:
    return abs(strike - index_price) / index_price * 100.0


def otm_pct(option_type: str, strike: float, index_price: float) -> float:
    """How far out of the money, in % of the index; negative = in the money."""
    if option_type == "C":
        return (strike - index_price) / index_price * 100.0
    return (index_price - strike) / index_price * 100.0


def _tie(distance: float) -> float:
    """Round away float noise so that equal distances really tie (and the lower strike wins)."""
    return round(distance, 9)


def _nearest(rows: Iterable["OptionRow"], target: float) -> "OptionRow | None":
    """Row whose strike is nearest ``target``; ties -> lower strike."""
    return min(rows, key=lambda r: (_tie(abs(r.strike - target)), r.strike), default=None)


# --------------------------------------------------------------------------- find_option pipeline
def _passes_strike_filter(row: "OptionRow", strike: Mapping[str, Any], index_price: float) -> bool:
    k = row.strike
    if strike.get("below_atm") and not k < index_price:
        return False
    if strike.get("above_atm") and not k > index_price:
        return False
    dist = distance_pct(k, index_price)
    otm = otm_pct(row.option_type, k, index_price)
    bounds = (("min_strike", "max_strike", k), ("min_distance_pct", "max_distance_pct", dist),
              ("min_otm_pct", "max_otm_pct", otm))
    for low_key, high_key, value in bounds:
        if low_key in strike and value < strike[low_key]:
            return False
        if high_key in strike and value > strike[high_key]:
            return False
    return True


def _rank_key(rank_by: str | None, delta: Mapping[str, Any],
              index_price: float) -> Callable[[Any], tuple[float, float]]:
    if rank_by == "delta_mid":
        middle = (delta["min"] + delta["max"]) / 2.0
        return lambda r: (_tie(abs(r.delta - middle)), r.strike)
    if rank_by == "delta_target":
        return lambda r: (_tie(abs(r.delta - delta["target"])), r.strike)
    if rank_by == "strike_atm":
        return lambda r: (_tie(distance_pct(r.strike, index_price)), r.strike)
    if rank_by == "strike_otm":
        return lambda r: (_tie(-otm_pct(r.option_type, r.strike, index_price)), r.strike)
    return lambda r: (_tie(otm_pct(r.option_type, r.strike, index_price)), r.strike)  # strike_itm


def _run_pipeline(query: OptionQuery, candidates: list["OptionRow"], index_price: float) -> "OptionRow | None":
    """Steps 2-5 of §3.4 on every candidate; logs the survivor count after each step."""
    counts = [("candidates", len(candidates))]
    rows = [r for r in candidates if _passes_strike_filter(r, query.strike, index_price)]
    counts.append(("strike filter", len(rows)))
    needs_delta = bool(query.delta) or query.rank_by in ("delta_mid", "delta_target")
    if needs_delta:
        rows = [r for r in rows if r.delta is not None]
        low = query.delta.get("min", -math.inf)
        high = query.delta.get("max", math.inf)
        rows = [r for r in rows if low <= r.delta <= high]
    counts.append(("delta filter", len(rows)))
    winner = min(rows, key=_rank_key(query.rank_by, query.delta, index_price), default=None)
    summary = ", ".join(f"{name}: {n}" for name, n in counts)
    if winner is None:
        logger.debug("find_option %s rank_by=%s: no match (%s)", query.option_type, query.rank_by, summary)
    else:
        logger.debug("find_option %s rank_by=%s -> %s (%s)", query.option_type, query.rank_by,
                     winner.symbol, summary)
    return winner


def _to_selected(row: "OptionRow", snapshot: "ChainSnapshot", now: float) -> SelectedOption:
    index_price = snapshot.index_price
    return SelectedOption(
        symbol=row.symbol,
        option_type=row.option_type,
        strike=row.strike,
        expiry=datetime.fromtimestamp(row.expiry_ms / 1000.0, tz=timezone.utc),
        expiry_ms=row.expiry_ms,
        days_to_expiry=(row.expiry_ms / 1000.0 - now) / SECONDS_PER_DAY,
        bid=row.bid,
        ask=row.ask,
        bid_size=row.bid_size,
        ask_size=row.ask_size,
        mark=row.mark,
        mark_iv=row.mark_iv,
        delta=row.delta,
        gamma=row.gamma,
        vega=row.vega,
        theta=row.theta,
        index_price=index_price,
        distance_pct=distance_pct(row.strike, index_price),
        otm_pct=otm_pct(row.option_type, row.strike, index_price),
        as_of=snapshot.as_of,
    )


def select_option(snapshot: "ChainSnapshot", query: OptionQuery, *, now: float, expiry_ms: int | None = None,
                  side: int | None = None,
                  min_minutes_to_expiry: float = DEFAULT_MIN_MINUTES_TO_EXPIRY) -> SelectedOption | None:
    """Pure find_option on an existing snapshot.

    ``expiry_ms=None`` chooses the expiry from the snapshot's instruments with the query's
    expiry criteria (``None`` when no expiry fits). A snapshot of another underlying than the
    query's is refused (``SelectionError``): its strikes and index mean nothing for this query.
    """
    _check_snapshot_underlying(snapshot, query.underlying)
    if expiry_ms is None:
        try:
            in_snapshot = set(snapshot.expiries())
            listed = [i for i in snapshot.instruments.values() if i.expiry_ms in in_snapshot]
            expiry_ms = choose_expiry(query.expiry, listed, now, query.option_type, min_minutes_to_expiry)
        except SelectionError as exc:
            logger.info("find_option %s: no expiry matches: %s", query.option_type, exc)
            return None
    row = query.select(snapshot, expiry_ms, now=now, side=side, min_minutes_to_expiry=min_minutes_to_expiry)
    return None if row is None else _to_selected(row, snapshot, now)


def find_option(option_type: str, expiry: dict | None = None, strike: dict | None = None,
                delta: dict | None = None, rank_by: str | None = None, underlying: str = "BTC",
                *, market: "ChainSource | None" = None) -> OptionQuery | SelectedOption | None:
    """Validate a selector; without ``market`` return it as an ``OptionQuery``, with it resolve now.

    There is no global market-data object, so the declarative form is what a strategy
    module builds at import time; live code passes ``market=ctx.market_data``.
    """
    query = OptionQuery(
        option_type=option_type,
        expiry=_default_expiry() if expiry is None else expiry,
        strike={} if strike is None else strike,
        delta={} if delta is None else delta,
        rank_by=rank_by,
        underlying=underlying,
    )
    if market is None:
        return query
    return query.resolve(market)


# --------------------------------------------------------------------------- resolve_legs
def _dependency_order(specs: Sequence[LegSpec]) -> list[int]:
    """Leg indices with every offset leg after the leg it references; a cycle is a ConfigError."""
    for index, spec in enumerate(specs):
        ref = spec.depends_on
        if ref is None:
            continue
        if ref == index or ref >= len(specs):
            raise invalid(RESOLVE_LEGS, f"legs[{index}].strike_criteria['from_leg']", ref,
                          f"reference another leg, 0..{len(specs) - 1} except {index}")
        if specs[ref].is_perpetual:
            raise invalid(RESOLVE_LEGS, f"legs[{index}].strike_criteria['from_leg']", ref,
                          f"legs[{ref}] is a perpetual, which has no strike: measure the offset from an option leg")
        if specs[ref].underlying != spec.underlying:
            raise invalid(RESOLVE_LEGS, f"legs[{index}].underlying", spec.underlying,
                          f"it is an offset from legs[{ref}], which is on {specs[ref].underlying!r}: use the same "
                          f"underlying")
    order: list[int] = []
    placed: set[int] = set()
    while len(order) < len(specs):
        ready = [i for i, s in enumerate(specs) if i not in placed and (s.depends_on is None or s.depends_on in placed)]
        if not ready:
            stuck = sorted(set(range(len(specs))) - placed)
            raise invalid(RESOLVE_LEGS, "legs", f"<offset legs {stuck}>",
                          "they reference each other in a cycle; anchor one of them with a non-offset strike "
                          "criterion")
        order.extend(ready)
        placed.update(ready)
    return order


def _resolve_strike(index: int, spec: LegSpec, snapshot: "ChainSnapshot", expiry_ms: int, now: float,
                    resolved: Mapping[int, ResolvedLeg], min_minutes: float) -> "OptionRow":
    rows = _selectable_rows(snapshot, expiry_ms, spec.option_type, now, spec.side, min_minutes)
    index_price = snapshot.index_price
    criteria = spec.strike_criteria
    kind = spec.strike_type
    if kind == "query" or kind == "compound":
        query = criteria if isinstance(criteria, OptionQuery) else _compound_query(spec)
        row = _run_pipeline(query, rows, index_price)
    elif isinstance(criteria, OptionQuery):   # cannot happen: a query's kind is "query"
        raise TypeError(f"strike kind {kind!r} needs its criteria as a dict, got an OptionQuery")
    elif kind == "delta":
        target = criteria["value"]
        row = min((r for r in rows if r.delta is not None), key=lambda r: (_tie(abs(r.delta - target)), r.strike),
                  default=None)
    elif kind == "closestStrike":
        row = _nearest(rows, criteria["value"] or index_price)
    elif kind == "spotdistance%":
        row = _nearest(rows, index_price * (1.0 + criteria["value"] / 100.0))
    elif kind == "strike":
        row = next((r for r in rows if abs(r.strike - criteria["value"]) <= STRIKE_EPSILON), None)
    else:
        row = _resolve_offset(criteria, rows, resolved[criteria["from_leg"]].contract.strike)
    if row is None:
        raise SelectionError(
            f"leg {index} ({spec.option_type} {spec.side.name}) has no selectable option for {_describe(criteria)} "
            f"on expiry {datetime.fromtimestamp(expiry_ms / 1000.0, tz=timezone.utc):%Y-%m-%d} "
            f"({len(rows)} selectable rows, index {index_price:g})"
        )
    return row


def _resolve_offset(criteria: Mapping[str, Any], rows: list["OptionRow"], ref_strike: float) -> "OptionRow | None":
    """Nearest listed strike to ref + d, strictly beyond the reference in d's direction."""
    distance = criteria["value"]
    if distance == 0:
        return next((r for r in rows if abs(r.strike - ref_strike) <= STRIKE_EPSILON), None)
    if distance > 0:
        beyond = [r for r in rows if r.strike > ref_strike + STRIKE_EPSILON]
    else:
        beyond = [r for r in rows if r.strike < ref_strike - STRIKE_EPSILON]
    return _nearest(beyond, ref_strike + distance)


def _compound_query(spec: LegSpec) -> OptionQuery:
    criteria = spec.strike_criteria
    if isinstance(criteria, OptionQuery):   # cannot happen: a compound strike is a dict
        return criteria
    return OptionQuery(option_type=spec.option_type, expiry=spec.expiry_criteria,
                       strike=criteria.get("strike") or {}, delta=criteria.get("delta") or {},
                       rank_by=criteria.get("rank_by"), underlying=spec.underlying)


def _describe(criteria: Any) -> str:
    if isinstance(criteria, OptionQuery):
        return f"query(strike={criteria.strike}, delta={criteria.delta}, rank_by={criteria.rank_by})"
    return repr(criteria)


def _leg_expiry_criteria(spec: LegSpec) -> Mapping[str, Any]:
    if isinstance(spec.strike_criteria, OptionQuery):
        return spec.strike_criteria.expiry
    return spec.expiry_criteria


def resolve_legs(specs: Sequence[LegSpec], market: "ChainSource", *, now: float | None = None,
                 min_minutes_to_expiry: float = DEFAULT_MIN_MINUTES_TO_EXPIRY) -> list[ResolvedLeg]:
    """Resolve every leg against ONE chain snapshot, all or nothing (§3.1).

    Order of work: dependency order and expiries first (instruments only), then a single
    ``market.chain_snapshot`` for all expiries involved, then strikes, then the structure
    check. Any failure raises before anything is returned, so no partial trade exists.
    Perpetual legs resolve to their underlying's perpetual after the options, on the
    snapshot's index (or, with no option leg, on the index read once).
    """
    specs = list(specs)
    _check_specs(specs, min_minutes_to_expiry)
    order = _dependency_order(specs)
    current = _market_now(market) if now is None else now
    underlying = specs[0].underlying
    option_order = [index for index in order if not specs[index].is_perpetual]
    resolved: dict[int, ResolvedLeg] = {}
    if option_order:
        expiries = _choose_leg_expiries(specs, option_order, market, current, min_minutes_to_expiry)
        try:
            snapshot = market.chain_snapshot(sorted(set(expiries.values())), underlying=underlying)
        except (SelectionError, ConfigError):
            raise
        except TraderError as exc:
            raise SelectionError(f"chain snapshot failed: {exc}") from exc
        _check_snapshot_underlying(snapshot, underlying)
        index_price, as_of = snapshot.index_price, snapshot.as_of
        for index in option_order:
            spec = specs[index]
            row = _resolve_strike(index, spec, snapshot, expiries[index], current, resolved, min_minutes_to_expiry)
            _check_listed_qty(index, spec, snapshot.instruments.get(row.symbol), row.symbol)
            contract = Contract(symbol=row.symbol, underlying=spec.underlying, option_type=row.option_type,
                                strike=row.strike, expiry_ms=row.expiry_ms)
            resolved[index] = ResolvedLeg(index=index, spec=spec, contract=contract, row=row,
                                          index_price=index_price, as_of=as_of)
    perp_indexes = [index for index in order if specs[index].is_perpetual]
    if perp_indexes:
        perp_market = _perp_market(market)
        if not option_order:
            try:
                index_price = float(perp_market.index_price(underlying))
            except TraderError as exc:
                raise SelectionError(f"{underlying} index unavailable: {exc}") from exc
            as_of = current
        for index in perp_indexes:
            resolved[index] = _resolve_perp(index, specs[index], perp_market, index_price, as_of)
    legs = [resolved[i] for i in range(len(specs))]
    check_structure(legs)
    # Debug: every entry check resolves; the runner logs the legs when they change.
    logger.debug("resolved %d legs at %s index %.2f: %s", len(legs), underlying, index_price,
                 ", ".join(f"{leg.side.name} {leg.qty:g} {leg.symbol}" for leg in legs))
    return legs


def _perp_market(market: "ChainSource") -> PerpChainSource:
    """The market as a source of perp quotes and specs (refused clearly when it is not one)."""
    require("resolve_legs market (a structure with a perp leg)", market, PerpChainSource)
    return market  # type: ignore[return-value]  # checked just above


def _resolve_perp(index: int, spec: LegSpec, market: PerpChainSource, index_price: float,
                  as_of: float) -> ResolvedLeg:
    """The underlying's perpetual, its quantity checked against the exchange's spec, its quote read."""
    contract = Contract.perpetual(spec.underlying)
    unit = spec.underlying
    try:
        listed = market.perp_spec(spec.underlying)
        row = market.quote(contract.symbol)
    except TraderError as exc:
        raise SelectionError(f"leg {index}: perpetual {contract.symbol} unavailable: {exc}") from exc
    minimum, step = float(listed.min_qty), float(listed.qty_step)
    if math.isfinite(minimum) and minimum > 0 and spec.qty < minimum - 1e-12:
        raise SelectionError(f"leg {index}: qty {spec.qty:g} {unit} is below the listed minimum {minimum:g} {unit} "
                             f"of {contract.symbol}")
    if math.isfinite(step) and step > 0 and not _is_multiple(spec.qty, step):
        raise SelectionError(f"leg {index}: qty {spec.qty:g} {unit} is not a multiple of the listed step "
                             f"{step:g} {unit} of {contract.symbol}")
    return ResolvedLeg(index=index, spec=spec, contract=contract, row=row, index_price=index_price, as_of=as_of)


def _check_snapshot_underlying(snapshot: "ChainSnapshot", underlying: str) -> None:
    """A snapshot is of one underlying; legs of another are never resolved on it."""
    if snapshot.underlying != underlying:
        raise SelectionError(f"the chain snapshot is of {snapshot.underlying}, the legs trade {underlying}: "
                             f"its strikes and index are not theirs")


def _check_listed_qty(index: int, spec: LegSpec, instrument: "Instrument | None", symbol: str) -> None:
    """The leg's quantity against the listed instrument, at resolution (the table was checked at start-up).

    The listing gives ``minQty`` and no separate step; on Coincall an option's minimum order is
    also its quantity step (BTC 0.01/0.01), so the quantity must be at least ``minQty`` and a
    whole number of it. Anything else is a ``SelectionError``: never an order of a rounded size.
    """
    if instrument is None:
        raise SelectionError(f"leg {index}: {symbol} is not in the instrument list of the snapshot")
    minimum = float(instrument.min_qty)
    if not math.isfinite(minimum) or minimum <= 0:
        return   # no usable listed minimum: the table's rule (checked at start-up) stands alone
    unit = spec.underlying
    if spec.qty < minimum - 1e-12:
        raise SelectionError(f"leg {index}: qty {spec.qty:g} {unit} is below the listed minimum {minimum:g} {unit} "
                             f"of {symbol}")
    if not _is_multiple(spec.qty, minimum):
        raise SelectionError(f"leg {index}: qty {spec.qty:g} {unit} is not a multiple of the listed step "
                             f"{minimum:g} {unit} of {symbol}")


def _check_specs(specs: list[LegSpec], min_minutes_to_expiry: float) -> None:
    if not specs:
        raise invalid(RESOLVE_LEGS, "legs", [], "give at least one LegSpec")
    for index, spec in enumerate(specs):
        if not isinstance(spec, LegSpec):
            raise invalid(RESOLVE_LEGS, f"legs[{index}]", spec, "use a LegSpec")
    if not is_number(min_minutes_to_expiry) or min_minutes_to_expiry < EXCHANGE_PRE_EXPIRY_HALT_MINUTES:
        raise invalid(RESOLVE_LEGS, "min_minutes_to_expiry", min_minutes_to_expiry,
                      f"use >= {EXCHANGE_PRE_EXPIRY_HALT_MINUTES:g} (the exchange halts trading before expiry)")
    underlyings = {spec.underlying for spec in specs}
    if len(underlyings) > 1:
        raise invalid(RESOLVE_LEGS, "legs", f"<legs on {', '.join(sorted(underlyings))}>",
                      "one structure trades one underlying")


def _choose_leg_expiries(specs: list[LegSpec], order: list[int], market: "ChainSource", now: float,
                         min_minutes: float) -> dict[int, int]:
    """Expiry of every leg from the instrument list alone (offset legs inherit theirs)."""
    try:
        instruments = market.instruments(specs[0].underlying)
    except TraderError as exc:
        raise SelectionError(f"instrument list unavailable: {exc}") from exc
    expiries: dict[int, int] = {}
    for index in order:
        spec = specs[index]
        if spec.depends_on is not None:
            expiries[index] = expiries[spec.depends_on]
            continue
        try:
            expiries[index] = choose_expiry(_leg_expiry_criteria(spec), instruments, now, spec.option_type, min_minutes)
        except SelectionError as exc:
            raise SelectionError(f"leg {index}: {exc}") from exc
    return expiries


# --------------------------------------------------------------------------- structure checks
def check_structure(legs: Sequence[ResolvedLeg]) -> None:
    """Refuse resolutions that would not be the structure the layout describes (§3.4 end).

    Structures are recognised by the template layouts of §1.6 (leg order, types, sides,
    quantity ratios, one expiry); any structure gets the duplicate-symbol check.
    """
    symbols = [leg.symbol for leg in legs]
    duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
    if duplicates:
        raise SelectionError(f"legs resolve to the same symbol twice: {duplicates}")
    legs = [leg for leg in legs if not leg.contract.is_perpetual]   # the layouts are of option legs
    if not legs or len({leg.contract.expiry_ms for leg in legs}) != 1:
        return
    types = [leg.contract.option_type for leg in legs]
    sides = [leg.side for leg in legs]
    qtys = [leg.qty for leg in legs]
    strikes = [leg.contract.strike for leg in legs]
    if types == ["C", "P"] and sides[0] == sides[1] and math.isclose(qtys[0], qtys[1]):
        is_straddle = legs[1].spec.strike_type == "offset" or math.isclose(strikes[0], strikes[1])
        if not is_straddle and not strikes[0] > strikes[1]:
            raise SelectionError(f"strangle needs call strike > put strike, got call {strikes[0]:g} "
                                 f"<= put {strikes[1]:g}")
    elif (types == ["C", "P", "C", "P"] and sides[0] == sides[1] and sides[2] == sides[3]
          and sides[0] != sides[2] and len(set(qtys)) == 1):
        if not strikes[3] < strikes[1] < strikes[0] < strikes[2]:
            raise SelectionError(
                "iron condor needs put wing < short put < short call < call wing, got "
                f"{strikes[3]:g} / {strikes[1]:g} / {strikes[0]:g} / {strikes[2]:g}"
            )
    elif (len(legs) == 3 and len(set(types)) == 1 and sides[0] == sides[2] != sides[1]
          and math.isclose(qtys[0], qtys[2]) and math.isclose(qtys[1], 2 * qtys[0])):
        if not strikes[0] < strikes[1] < strikes[2]:
            raise SelectionError(f"butterfly needs lower < body < upper strikes, got "
                                 f"{strikes[0]:g} / {strikes[1]:g} / {strikes[2]:g}")


# --------------------------------------------------------------------------- templates
def _dte_criteria(owner: str, dte: Any) -> dict:
    if dte == "next":
        return {"dte": "next"}
    if is_int(dte):
        return validate_expiry_criteria({"dte": dte}, "dte", owner)
    if isinstance(dte, Mapping):
        return validate_expiry_criteria(dte, "dte", owner)
    raise invalid(owner, "dte", dte, "use 'next', an int >= 0 or an expiry_criteria dict")


def _check_wing(owner: str, wing_width: Any, field_name: str = "wing_width") -> float:
    if not is_number(wing_width) or wing_width <= 0:
        raise invalid(owner, field_name, wing_width, "use a strike distance > 0 (USD)")
    return float(wing_width)


def strangle(qty: float, call_delta: float = 0.25, put_delta: float = -0.25, dte: Any = "next",
             side: int = 2, *, underlying: str = DEFAULT_UNDERLYING) -> list[LegSpec]:
    """Call and put at the given deltas, same side; ``side=2`` sells it (credit)."""
    owner = "strangle"
    _check_underlying(owner, "underlying", underlying)
    qty = _check_qty(owner, "qty", qty, underlying)
    side = _check_side(owner, "side", side)
    _check_delta_value(owner, "call_delta", call_delta, "C")
    _check_delta_value(owner, "put_delta", put_delta, "P")
    expiry = _dte_criteria(owner, dte)
    return [
        LegSpec("C", side, qty, {"type": "delta", "value": call_delta}, dict(expiry), underlying=underlying),
        LegSpec("P", side, qty, {"type": "delta", "value": put_delta}, dict(expiry), underlying=underlying),
    ]


def straddle(qty: float, dte: Any = "next", side: int = 1, *, underlying: str = DEFAULT_UNDERLYING) -> list[LegSpec]:
    """ATM call, and the put at the very same strike (offset 0 from the call)."""
    owner = "straddle"
    _check_underlying(owner, "underlying", underlying)
    qty = _check_qty(owner, "qty", qty, underlying)
    side = _check_side(owner, "side", side)
    expiry = _dte_criteria(owner, dte)
    return [
        LegSpec("C", side, qty, {"type": "closestStrike", "value": 0}, expiry, underlying=underlying),
        LegSpec("P", side, qty, {"type": "offset", "from_leg": 0, "value": 0}, underlying=underlying),
    ]


def iron_condor(qty: float, call_delta: float = 0.20, put_delta: float = -0.20, wing_width: float = 1000.0,
                dte: Any = "next", side: int = 2, *, underlying: str = DEFAULT_UNDERLYING) -> list[LegSpec]:
    """Short (side=2) or reverse (side=1) iron condor; wings are offsets (USD) from the inner legs.

    ``wing_width`` is a strike distance in USD: 1000 suits BTC; an ETH condor needs a width on
    ETH's strike grid (say 100)."""
    owner = "iron_condor"
    _check_underlying(owner, "underlying", underlying)
    qty = _check_qty(owner, "qty", qty, underlying)
    side = _check_side(owner, "side", side)
    _check_delta_value(owner, "call_delta", call_delta, "C")
    _check_delta_value(owner, "put_delta", put_delta, "P")
    width = _check_wing(owner, wing_width)
    expiry = _dte_criteria(owner, dte)
    wing_side = side.opposite
    return [
        LegSpec("C", side, qty, {"type": "delta", "value": call_delta}, dict(expiry), underlying=underlying),
        LegSpec("P", side, qty, {"type": "delta", "value": put_delta}, dict(expiry), underlying=underlying),
        LegSpec("C", wing_side, qty, {"type": "offset", "from_leg": 0, "value": width}, underlying=underlying),
        LegSpec("P", wing_side, qty, {"type": "offset", "from_leg": 1, "value": -width}, underlying=underlying),
    ]


def butterfly(qty: float, wing_width: float = 1000.0, option_type: str = "C", center_delta: float | None = None,
              dte: Any = "next", side: int = 1, *, underlying: str = DEFAULT_UNDERLYING) -> list[LegSpec]:
    """Wings on ``side``, body (2x qty) on the opposite side; ``side=1`` is the long butterfly."""
    owner = "butterfly"
    _check_underlying(owner, "underlying", underlying)
    qty = _check_qty(owner, "qty", qty, underlying)
    side = _check_side(owner, "side", side)
    width = _check_wing(owner, wing_width)
    _check_option_type(owner, "option_type", option_type)
    expiry = _dte_criteria(owner, dte)
    if center_delta is None:
        body = {"type": "closestStrike", "value": 0}
    else:
        body = {"type": "delta", "value": _check_delta_value(owner, "center_delta", center_delta, option_type)}
    return [
        LegSpec(option_type, side, qty, {"type": "offset", "from_leg": 1, "value": -width}, underlying=underlying),
        LegSpec(option_type, side.opposite, round(qty * 2, 2), body, expiry, underlying=underlying),
        LegSpec(option_type, side, qty, {"type": "offset", "from_leg": 1, "value": width}, underlying=underlying),
    ]


def vertical_spread(qty: float, option_type: str = "C", kind: str = "debit", near_delta: float | None = None,
                    width: float = 1000.0, dte: Any = "next", *,
                    underlying: str = DEFAULT_UNDERLYING) -> list[LegSpec]:
    """Two legs of one type and expiry: the leg nearer the money, and one ``width`` further out.

    The near leg is ATM (strike nearest the index) or, with ``near_delta``, the strike at that
    delta; the far leg is an offset from it, ``width`` USD above for calls and below for puts,
    exactly like the iron condor's wings, so the two strikes can never coincide or cross
    whatever the chain lists. ``kind="debit"`` buys the near leg and sells the far one (a call
    debit spread buys the lower strike, a put debit spread the higher); ``"credit"`` sells the
    near leg and buys the far one.
    """
    owner = "vertical_spread"
    _check_underlying(owner, "underlying", underlying)
    qty = _check_qty(owner, "qty", qty, underlying)
    _check_option_type(owner, "option_type", option_type)
    if not isinstance(kind, str) or kind not in SPREAD_KINDS:
        raise invalid(owner, "kind", kind, "use 'debit' (buy the leg nearer the money, sell the far one) or "
                                           "'credit' (sell the leg nearer the money, buy the far one)")
    distance = _check_wing(owner, width, "width")
    expiry = _dte_criteria(owner, dte)
    if near_delta is None:
        near = {"type": "closestStrike", "value": 0}
    else:
        near = {"type": "delta", "value": _check_delta_value(owner, "near_delta", near_delta, option_type)}
    near_side = Side.BUY if kind == "debit" else Side.SELL
    offset = distance if option_type == "C" else -distance
    return [
        LegSpec(option_type, near_side, qty, near, expiry, underlying=underlying),
        LegSpec(option_type, near_side.opposite, qty, {"type": "offset", "from_leg": 0, "value": offset},
                underlying=underlying),
    ]
