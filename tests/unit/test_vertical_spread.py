"""vertical_spread: the four variants (call/put x debit/credit), their resolution and refusals.

The rule pinned here (issue 10): a debit spread buys the leg nearer the money and sells the one
``width`` further out, so a call debit spread buys the lower strike and sells the higher, a put
debit spread buys the higher strike and sells the lower; a credit spread is the reverse. The far
leg is an offset from the near one, like the iron condor's wings, so the strikes never cross.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from coincall_payloads import Instrument, OptionRow
from contracts import Side
from errors import ConfigError
from market_data import ChainSnapshot
from option_selection import LegSpec, resolve_legs, vertical_spread
from strategy_factories import factory_failure
from tests.unit.sane_quotes import fair_quote

NOW = datetime(2026, 3, 2, 6, tzinfo=timezone.utc).timestamp()          # Monday 06:00 UTC
EXPIRY_MS = int(datetime(2026, 3, 3, 8, tzinfo=timezone.utc).timestamp() * 1000)  # dte 1
INDEX = 90_000.0
STRIKES = tuple(range(80_000, 100_001, 1_000))

# (option_type, kind) -> (near side, far side, far strike above the near one?)
VARIANTS = {
    ("C", "debit"): (Side.BUY, Side.SELL, True),
    ("C", "credit"): (Side.SELL, Side.BUY, True),
    ("P", "debit"): (Side.BUY, Side.SELL, False),
    ("P", "credit"): (Side.SELL, Side.BUY, False),
}


def call_delta(strike: float) -> float:
    """A smooth, monotone stand-in for a call delta: 0.5 at the index, 0.025 per 1,000 USD."""
    return round(min(0.99, max(0.01, 0.5 - (strike - INDEX) / 40_000)), 6)


def row(strike: float, option_type: str) -> OptionRow:
    delta = call_delta(strike) if option_type == "C" else round(call_delta(strike) - 1.0, 6)
    bid, ask, mark = fair_quote(option_type, strike, EXPIRY_MS, INDEX, NOW)
    return OptionRow(
        symbol=f"BTCUSD-3MAR26-{strike}-{option_type}", option_type=option_type, strike=float(strike),
        expiry_ms=EXPIRY_MS, bid=bid, ask=ask, bid_size=1.0, ask_size=1.0, mark=mark, mark_iv=0.5,
        bid_iv=0.49, ask_iv=0.51, delta=delta, gamma=0.0001, vega=10.0, theta=-5.0, rho=0.1,
        underlying_price=INDEX, as_of=NOW,
    )


class OneSnapshotMarket:
    """Serves one hand-built chain (one expiry, every strike quoted both sides)."""

    def __init__(self) -> None:
        rows = tuple(row(k, t) for k in STRIKES for t in ("C", "P"))
        instruments = {r.symbol: Instrument(symbol=r.symbol, base="BTC", strike=r.strike, option_type=r.option_type,
                                            expiry_ms=r.expiry_ms, tick_size=1.0, min_qty=0.01, is_active=True)
                       for r in rows}
        self.snapshot = ChainSnapshot(index_price=INDEX, as_of=NOW, rows=rows, instruments=instruments)

    def instruments(self, base: str = "BTC") -> list[Instrument]:
        return list(self.snapshot.instruments.values())

    def chain_snapshot(self, expiries, *, underlying: str | None = None,
                       max_build_seconds: float = 5.0) -> ChainSnapshot:
        return self.snapshot


@pytest.mark.parametrize("option_type,kind", sorted(VARIANTS))
def test_layout_of_each_variant(option_type, kind):
    near_side, far_side, far_above = VARIANTS[(option_type, kind)]
    near, far = vertical_spread(0.2, option_type=option_type, kind=kind, width=2000, dte=1)
    assert all(isinstance(leg, LegSpec) for leg in (near, far))
    assert (near.option_type, far.option_type) == (option_type, option_type)
    assert (near.side, far.side) == (near_side, far_side)
    assert near.qty == far.qty == 0.2
    assert near.strike_criteria == {"type": "closestStrike", "value": 0.0}  # ATM by default
    assert near.expiry_criteria == {"dte": 1}
    assert far.strike_criteria == {"type": "offset", "from_leg": 0, "value": 2000.0 if far_above else -2000.0}


@pytest.mark.parametrize("option_type,kind", sorted(VARIANTS))
def test_each_variant_resolves_to_the_right_strike_order_and_sides(option_type, kind):
    near_side, far_side, far_above = VARIANTS[(option_type, kind)]
    near, far = resolve_legs(vertical_spread(0.1, option_type, kind, width=3000, dte=1), OneSnapshotMarket(), now=NOW)
    assert near.contract.strike == INDEX and far.contract.strike == (INDEX + 3000 if far_above else INDEX - 3000)
    bought, sold = (near, far) if near_side == Side.BUY else (far, near)
    assert (bought.side, sold.side) == (Side.BUY, Side.SELL) and far.side == far_side
    bought_strike, sold_strike = bought.contract.strike, sold.contract.strike
    if kind == "debit":  # a debit spread buys the more expensive leg: lower call strike, higher put strike
        assert bought_strike < sold_strike if option_type == "C" else bought_strike > sold_strike
    else:
        assert sold_strike < bought_strike if option_type == "C" else sold_strike > bought_strike
    assert near.contract.expiry_ms == far.contract.expiry_ms == EXPIRY_MS


@pytest.mark.parametrize("option_type,near_delta,expected_near", [("C", 0.30, 98_000.0), ("P", -0.30, 82_000.0)])
def test_near_delta_anchors_the_near_leg(option_type, near_delta, expected_near):
    specs = vertical_spread(0.1, option_type, "credit", near_delta=near_delta, width=1000, dte=1)
    assert specs[0].strike_criteria == {"type": "delta", "value": near_delta}
    near, far = resolve_legs(specs, OneSnapshotMarket(), now=NOW)
    assert near.contract.strike == expected_near
    assert far.contract.strike == (expected_near + 1000 if option_type == "C" else expected_near - 1000)


def test_a_width_between_listed_strikes_takes_the_nearest_strike_strictly_beyond():
    near, far = resolve_legs(vertical_spread(0.1, "C", "debit", width=400, dte=1), OneSnapshotMarket(), now=NOW)
    assert (near.contract.strike, far.contract.strike) == (INDEX, INDEX + 1000)


@pytest.mark.parametrize("build,fragments", [
    (lambda: vertical_spread(0.1, kind="debt"), ("vertical_spread.kind = 'debt'", "'debit'", "'credit'")),
    (lambda: vertical_spread(0.1, kind=None), ("vertical_spread.kind = None", "'debit'")),
    (lambda: vertical_spread(0.1, option_type="X"), ("vertical_spread.option_type = 'X'",
                                                     "'C' (call) or 'P' (put)")),
    (lambda: vertical_spread(0.1, width=0), ("vertical_spread.width = 0", "> 0 (USD)")),
    (lambda: vertical_spread(0.1, width=True), ("vertical_spread.width = True", "> 0 (USD)")),
    (lambda: vertical_spread(0.1, option_type="P", near_delta=0.3), ("vertical_spread.near_delta = 0.3",
                                                                     "put delta")),
    (lambda: vertical_spread(0.1, option_type="C", near_delta=-0.3), ("vertical_spread.near_delta = -0.3",
                                                                      "call delta")),
    (lambda: vertical_spread(0.015), ("vertical_spread.qty = 0.015", "0.01")),
    (lambda: vertical_spread(0.1, dte="soon"), ("vertical_spread.dte = 'soon'", "'next'")),
])
def test_refusals_name_the_argument_the_value_and_the_fix(build, fragments):
    with pytest.raises(ConfigError) as refused:
        build()
    for fragment in fragments:
        assert fragment in str(refused.value)


def test_a_misspelt_keyword_in_a_factory_gets_did_you_mean():
    def factory():
        return vertical_spread(0.1, widht=500)

    with pytest.raises(TypeError) as raised:
        factory()
    message = str(factory_failure(factory, raised.value))
    assert "widht" in message and "did you mean 'width'?" in message
