"""Is this option price believable? The one sanity rule for every price the daemon decides on.

Why this module exists (issue 9, finding 4, "No decision on an insane price"): one chain snapshot with marks and prices of 0 once made a freshly opened strangle
look like a total loss, and ``max_loss_pct`` realised a loss the market never had. An exchange
that answers ``code 0`` can still answer nonsense (maintenance, failover, a unit error), so
before a price is used for an exit decision or an order it must be

* a finite number; a mark must be > 0 (an option is never worth nothing before expiry);
  a bid or ask of 0 means that book side is empty, which is legal and handled elsewhere;
* inside the **no-arbitrage bounds** of the option given the index: a call is worth at most
  the index and a put at most its strike; neither is worth less than its intrinsic value;
* inside a **band around the model value**: Black-Scholes from the row's own underlying
  price, strike, time to expiry and mark IV, widened by a factor and by an absolute
  tolerance that grows with the option's delta (like the exchange's own order price band,
  which is ``0.01 * S * max(1, 4 |delta|)`` below the mark).

The band is deliberately wide. It exists to catch zeros, unit errors (x1000, a BTC price read
as USD), a price of another strike or a stale field next to fresh ones; it is not a fair-value
model. Too tight a band would be worse than none: an exit that can never be evaluated is a
stop-loss that never fires. What a wide band lets through (say a mark doubled for one
snapshot) is caught by the other half of the rule: stop-type exits need the condition on two
consecutive sane snapshots (``conditions.STOP_CONFIRMATIONS``).

Underlyings (issue 13): the band is built from the row's OWN underlying price, and a row comes
from the chain of its symbol's underlying (``market_data`` keys chains by underlying and
refuses rows of another index), so an ETH option is always judged against ETH's index. An
ETH option measured against BTC's index would sit far outside its no-arbitrage bounds and be
refused as insane, never valued. Prices are per contract on one unit of the underlying.

Nothing here reads the clock: the time to expiry is measured from the quote's own ``as_of``.
The module imports nothing of the product but ``errors``, so market data, the lifecycle and
every execution engine can share it. The simulator has its own pricing code; the product
must not import it (``docs/ARCHITECTURE.md``), hence the few lines of Black-Scholes below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from errors import StaleDataError
from validation import is_number

SECONDS_PER_YEAR = 365.0 * 24 * 3600
CALL = "C"
PUT = "P"
PERPETUAL = "PERP"   # contracts.PERPETUAL, the option type of a perpetual's quote row
# A perpetual's believable prices: within this fraction of its index on either side. The
# exchange itself refuses perp orders beyond mark ± 5 % (docs/PERPETUALS.md); the mark sits
# within a fraction of a percent of the index, so this band is the same rule seen from the index.
PERP_BAND_OF_INDEX = 0.05

# A price may be up to this factor above or below the model value. 3 covers the gap between
# our plain Black-Scholes and the exchange's own model (smile, forward basis, day count) and
# wide quotes in thin books, while a zero, a x1000 or a /1000 price lies far outside.
MODEL_BAND_FACTOR = 3.0
# Absolute slack, as a fraction of the underlying price, times max(1, 4 |delta|), the delta
# scaling of the exchange's own order price band. 0.0002 is 20 USD at 100k: a few USD far-OTM
# option (whose model value is very sensitive to the vol) is never called insane for being a
# few ticks off, while a 400 USD option printed at 10 USD is.
MODEL_BAND_ABS_OF_INDEX = 0.0002
# Slack on the no-arbitrage bounds, as a fraction of the underlying price: the bounds are
# stated on the index while the exchange marks on its own underlying/forward.
NO_ARBITRAGE_TOLERANCE_OF_INDEX = 0.005
# Mark IVs outside this range are not market data (an annualised vol of 1 % or 1000 % is a
# broken field, not a market). A chain row without an IV (absent, or the exchange's
# Double.MAX sentinel) is judged at its book sides' IVs, else at the vol its mark implies
# (``band_of``).
MIN_SANE_IV = 0.01
MAX_SANE_IV = 10.0
# With no usable IV the delta is unknown; the widest delta scaling applies.
_UNKNOWN_DELTA = 1.0


class InsanePriceError(StaleDataError):
    """A price that is present but not believable: "no valuation", exactly like stale data.

    It is a ``StaleDataError`` on purpose: every reader that already waits on stale data
    (PnL exits, the 60 s unevaluable alert, the execution engines) waits on this too.
    """


class QuoteLike(Protocol):
    """What the rule reads from a chain row (``coincall_payloads.OptionRow``); read only."""

    @property
    def option_type(self) -> str: ...

    @property
    def strike(self) -> float: ...

    @property
    def expiry_ms(self) -> int: ...

    @property
    def bid(self) -> float: ...

    @property
    def ask(self) -> float: ...

    @property
    def mark(self) -> float: ...

    @property
    def mark_iv(self) -> float: ...

    @property
    def bid_iv(self) -> float: ...  # 0 when the side is empty or the exchange gave none

    @property
    def ask_iv(self) -> float: ...

    @property
    def underlying_price(self) -> float: ...

    @property
    def as_of(self) -> float: ...


@dataclass(frozen=True)
class PriceBand:
    """The believable prices of one option at one moment: ``low <= price <= high``.

    ``model`` is the Black-Scholes value at the row's mark IV (``band_of``: at the vol the mark
    implies when the row has no IV), ``None`` when ``sanity_band`` was given no IV (the band
    then spans every sane IV). ``delta`` is the model delta used to scale
    the absolute slack.
    """

    symbol: str
    low: float
    high: float
    model: float | None
    underlying: float
    delta: float
    # The row had no usable mark IV; ``model`` is the value at the vol its mark implies.
    iv_implied_from_mark: bool = False

    def contains(self, price: float) -> bool:
        return self.low <= price <= self.high

    def problem(self, name: str, price: float) -> str | None:
        """Why ``price`` (called ``name``) is not believable, or None when it is."""
        if self.contains(price):
            return None
        model = "no usable mark IV" if self.model is None else (
            f"model {self.model:.2f}" + (" at the vol its mark implies" if self.iv_implied_from_mark else ""))
        return (f"{name} {price:g} is outside the sanity band [{self.low:.2f}, {self.high:.2f}] "
                f"({model}, underlying {self.underlying:g})")

    def clamp_buy(self, price: float) -> float:
        """A buy never pays more than the band allows."""
        return min(price, self.high)

    def clamp_sell(self, price: float) -> float:
        """A sell never accepts less than the band allows."""
        return max(price, self.low)


# ---------------------------------------------------------------------------------------
# Black-Scholes (rate 0: the underlying price of the row is the forward the option is marked on)
# ---------------------------------------------------------------------------------------

def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def intrinsic(option_type: str, underlying: float, strike: float) -> float:
    if option_type == CALL:
        return max(0.0, underlying - strike)
    return max(0.0, strike - underlying)


def black_scholes(option_type: str, underlying: float, strike: float, t_years: float, vol: float) -> float:
    """Value of one option on one unit of the underlying; intrinsic at or after expiry."""
    if t_years <= 0 or vol <= 0:
        return intrinsic(option_type, underlying, strike)
    spread = vol * math.sqrt(t_years)
    d1 = (math.log(underlying / strike) + 0.5 * spread * spread) / spread
    d2 = d1 - spread
    if option_type == CALL:
        return underlying * _norm_cdf(d1) - strike * _norm_cdf(d2)
    return strike * _norm_cdf(-d2) - underlying * _norm_cdf(-d1)


def black_scholes_delta(option_type: str, underlying: float, strike: float, t_years: float, vol: float) -> float:
    """Model delta (per unit of the underlying); 1/0 or -1/0 at or after expiry."""
    if t_years <= 0 or vol <= 0:
        in_the_money = underlying > strike if option_type == CALL else underlying < strike
        return (1.0 if option_type == CALL else -1.0) if in_the_money else 0.0
    spread = vol * math.sqrt(t_years)
    d1 = (math.log(underlying / strike) + 0.5 * spread * spread) / spread
    return _norm_cdf(d1) if option_type == CALL else _norm_cdf(d1) - 1.0


# ---------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------

def _number(value: object) -> float | None:
    """A finite float, or None for anything else (None, bool, text, NaN, inf)."""
    return float(value) if is_number(value) else None


def time_to_expiry_years(expiry_ms: int, as_of: float) -> float:
    return max(0.0, (float(expiry_ms) / 1000.0 - float(as_of)) / SECONDS_PER_YEAR)


def sanity_band(option_type: str, strike: float, expiry_ms: int, underlying: float, mark_iv: float | None,
                as_of: float, *, symbol: str = "") -> PriceBand:
    """The band of believable prices; ``InsanePriceError`` when the inputs themselves are not sane.

    The inputs the band is built from are market data too: an underlying price of 0 or a
    mark IV of 5000 % makes the whole row unusable, not just its price.
    """
    what = symbol or f"{option_type} {strike:g}"
    kind = str(option_type).upper()
    if kind == PERPETUAL:
        return perp_band(underlying, symbol=what)
    if kind not in (CALL, PUT):
        raise InsanePriceError(f"{what}: unknown option type {option_type!r}")
    s = _number(underlying)
    if s is None or s <= 0:
        raise InsanePriceError(f"{what}: underlying price {underlying!r} is not a positive number")
    k = float(strike)
    t_years = time_to_expiry_years(expiry_ms, as_of)
    iv = _number(mark_iv)
    if iv is not None and not MIN_SANE_IV <= iv <= MAX_SANE_IV:
        raise InsanePriceError(f"{what}: mark IV {iv:g} is outside [{MIN_SANE_IV:g}, {MAX_SANE_IV:g}]")
    if iv is not None:
        model_low = model_high = black_scholes(kind, s, k, t_years, iv)
        model: float | None = model_low
        delta = abs(black_scholes_delta(kind, s, k, t_years, iv))
    else:
        model = None
        model_low = black_scholes(kind, s, k, t_years, MIN_SANE_IV)
        model_high = black_scholes(kind, s, k, t_years, MAX_SANE_IV)
        delta = _UNKNOWN_DELTA
    slack = MODEL_BAND_ABS_OF_INDEX * s * max(1.0, 4.0 * delta)
    arbitrage_slack = NO_ARBITRAGE_TOLERANCE_OF_INDEX * s
    ceiling = (s if kind == CALL else k) + arbitrage_slack
    floor = intrinsic(kind, s, k) - arbitrage_slack
    low = max(0.0, floor, model_low / MODEL_BAND_FACTOR - slack)
    high = min(ceiling, model_high * MODEL_BAND_FACTOR + slack)
    return PriceBand(symbol=symbol, low=low, high=high, model=model, underlying=s, delta=delta)


def perp_band(index: float, *, symbol: str = "") -> PriceBand:
    """A perpetual's band: its index ± ``PERP_BAND_OF_INDEX`` (no model; delta 1)."""
    s = _number(index)
    if s is None or s <= 0:
        raise InsanePriceError(f"{symbol or 'perpetual'}: index price {index!r} is not a positive number")
    return PriceBand(symbol=symbol, low=s * (1.0 - PERP_BAND_OF_INDEX), high=s * (1.0 + PERP_BAND_OF_INDEX),
                     model=s, underlying=s, delta=1.0)


# Bisection steps of ``implied_vol``: the vol range [1 %, 1000 %] halved 60 times is far finer
# than any price tick.
_IMPLIED_VOL_STEPS = 60


def implied_vol(option_type: str, price: float, underlying: float, strike: float, t_years: float) -> float:
    """The vol in [MIN_SANE_IV, MAX_SANE_IV] at which Black-Scholes gives ``price``.

    A price below the model at the lowest sane vol gives ``MIN_SANE_IV``, one above the model at
    the highest gives ``MAX_SANE_IV``: the band built from it then judges that price exactly as
    the every-vol band would have, with a model next to it instead of none.
    """
    low, high = MIN_SANE_IV, MAX_SANE_IV
    if price <= black_scholes(option_type, underlying, strike, t_years, low):
        return low
    if price >= black_scholes(option_type, underlying, strike, t_years, high):
        return high
    for _ in range(_IMPLIED_VOL_STEPS):
        middle = 0.5 * (low + high)
        if black_scholes(option_type, underlying, strike, t_years, middle) < price:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def band_of(quote: QuoteLike, symbol: str = "") -> PriceBand:
    """``sanity_band`` of a chain row (its own underlying, mark IV and ``as_of``).

    A row without a usable mark IV (absent, or the exchange's Double.MAX sentinel) is judged
    at the vol of its book sides (the mean of its usable bid and ask IVs) when it has one: the
    mark is then checked against an independent vol, so a mark five times the model no longer
    passes because the IV field alone was missing. Without side IVs either, it is judged
    at the vol its own mark implies. The every-vol band of a missing IV spans about [0, index]
    for a call, so an ask at 50 times the mark would pass every engine's price check: a
    missing field must never switch the guard off. The mark itself is judged exactly as
    before: a mark outside the every-vol band leaves no reference (``InsanePriceError``),
    one inside it is inside the band it implies. A row with neither a usable IV nor a positive mark has nothing to judge a price by:
    ``InsanePriceError``, and the engines wait as for any missing price.
    """
    kind = str(quote.option_type).upper()
    iv = _number(quote.mark_iv)
    if kind in (CALL, PUT) and iv is None:
        what = symbol or f"{kind} {quote.strike:g}"
        mark = _number(quote.mark)
        underlying = _number(quote.underlying_price)
        if mark is None or mark <= 0:
            raise InsanePriceError(f"{what}: no usable mark IV and no positive mark ({quote.mark!r}): "
                                   f"nothing to judge a price by")
        if underlying is None or underlying <= 0:
            raise InsanePriceError(f"{what}: underlying price {quote.underlying_price!r} is not a positive number")
        sides = [value for value in (_number(quote.bid_iv), _number(quote.ask_iv))
                 if value is not None and MIN_SANE_IV <= value <= MAX_SANE_IV]
        if sides:
            return sanity_band(kind, quote.strike, quote.expiry_ms, underlying, sum(sides) / len(sides), quote.as_of,
                               symbol=symbol)
        every_vol = sanity_band(kind, quote.strike, quote.expiry_ms, underlying, None, quote.as_of, symbol=symbol)
        problem = every_vol.problem("mark", mark)
        if problem is not None:
            raise InsanePriceError(f"{what}: {problem}")
        t_years = time_to_expiry_years(quote.expiry_ms, quote.as_of)
        iv = implied_vol(kind, mark, underlying, float(quote.strike), t_years)
        band = sanity_band(kind, quote.strike, quote.expiry_ms, underlying, iv, quote.as_of, symbol=symbol)
        # At the edges of the vol range the implied band's slack (scaled by the model delta)
        # can end a hair inside a mark the every-vol band believes: keep the mark inside.
        return PriceBand(symbol=band.symbol, low=min(band.low, mark), high=max(band.high, mark), model=band.model,
                         underlying=band.underlying, delta=band.delta, iv_implied_from_mark=True)
    return sanity_band(quote.option_type, quote.strike, quote.expiry_ms, quote.underlying_price,
                       quote.mark_iv, quote.as_of, symbol=symbol)


def mark_problem(mark: object, band: PriceBand) -> str | None:
    """Why the mark is not believable (missing, 0, negative, outside the band), or None."""
    value = _number(mark)
    if value is None:
        return f"mark {mark!r} is not a finite number"
    if value <= 0:
        return f"mark {value:g} is not a positive price"
    return band.problem("mark", value)


def side_problem(name: str, price: object, band: PriceBand) -> str | None:
    """Why a bid or ask is not believable, or None. 0 is an empty side: legal, not insane."""
    value = _number(price)
    if value is None:
        return f"{name} {price!r} is not a finite number"
    if value < 0:
        return f"{name} {value:g} is negative"
    if value == 0:
        return None
    return band.problem(name, value)


def crossed_problem(bid: object, ask: object) -> str | None:
    """Why a book whose believable touches are ``bid`` and ``ask`` cannot be priced from, or None.

    An option book whose best bid is at or above its best ask cannot exist on a matching
    engine: one of the two levels is wrong (a stale level, bad data), and nothing says which.
    Each touch can still lie inside the deliberately wide band (mark 100: bid 250, ask 110),
    so the band alone lets a buy join a bid of 2.5 times the mark. Every execution engine asks
    this on the touches it kept after the band check, and an answer means "no price this
    step", like a missing side. An empty side (None, 0 or anything not a positive number)
    cannot cross: one-sided books are legal and priced by the engines' own rules.
    """
    b, a = _number(bid), _number(ask)
    if b is None or a is None or b <= 0 or a <= 0 or b < a:
        return None
    return f"crossed book: best bid {b:g} is at or above best ask {a:g}, one side is wrong"


def quote_problems(quote: QuoteLike, symbol: str = "") -> list[str]:
    """Every reason the row is not believable; an empty list means it is sane."""
    try:
        band = band_of(quote, symbol)
    except InsanePriceError as error:
        return [str(error)]
    bid_problem, ask_problem = side_problem("bid", quote.bid, band), side_problem("ask", quote.ask, band)
    # Two sides each believable on their own can still cross: then one of them is wrong.
    crossed = crossed_problem(quote.bid, quote.ask) if bid_problem is None and ask_problem is None else None
    problems = [mark_problem(quote.mark, band), bid_problem, ask_problem, crossed]
    return [problem for problem in problems if problem is not None]


def check_quote(quote: QuoteLike, symbol: str = "") -> PriceBand:
    """The row's band when its mark, bid and ask are all believable; else ``InsanePriceError``."""
    problems = quote_problems(quote, symbol)
    if problems:
        raise InsanePriceError(f"{symbol or 'quote'}: " + "; ".join(problems))
    return band_of(quote, symbol)


__all__ = [
    "MODEL_BAND_FACTOR", "MODEL_BAND_ABS_OF_INDEX", "NO_ARBITRAGE_TOLERANCE_OF_INDEX", "MIN_SANE_IV",
    "MAX_SANE_IV", "InsanePriceError", "PriceBand", "QuoteLike", "black_scholes", "black_scholes_delta", "crossed_problem",
    "intrinsic", "implied_vol", "time_to_expiry_years", "sanity_band", "perp_band", "band_of", "PERP_BAND_OF_INDEX", "mark_problem", "side_problem",
    "quote_problems", "check_quote",
]
