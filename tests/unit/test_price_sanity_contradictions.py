"""Chain rows whose fields contradict each other are not believed (price_sanity, coincall_payloads).

* A row without a mark IV (the exchange's Double.MAX "unknown") used to be judged at the vol
  its own mark implies, so any mark fit its own band: an at-the-money call worth about 900 at
  the row's own bid and ask IVs passed at 5,000. Its book sides' IVs now judge it.
* A row whose strike contradicts its symbol (a 60000 call sent with strike 80000) was priced,
  banded and selectable on the wrong strike. It is refused.
"""
from __future__ import annotations

import math

import pytest

from coincall_payloads import option_row_from_api
from errors import StaleDataError
from price_sanity import black_scholes, quote_problems, time_to_expiry_years
from tests.unit.test_market_data import EXP1, EXP2, START, side

DOUBLE_MAX = 1.7976931348623157e308


def chain_row(strike: float = 70000, kind: str = "C", **fields):
    return option_row_from_api(side(EXP1, strike, kind, **fields), as_of=START, index_name="BTCUSD")


def test_without_a_mark_iv_the_book_sides_ivs_judge_the_mark():
    model = black_scholes("C", 70100.0, 70000.0, time_to_expiry_years(EXP1, START), 0.55)
    assert model < 1000
    insane = dict(markPrice=5000.0, bid=4900.0, ask=5100.0)
    assert quote_problems(chain_row(**insane), "with its mark IV")                   # refused as ever
    sentinel = chain_row(markIv=DOUBLE_MAX, **insane)
    assert math.isnan(sentinel.mark_iv) and (sentinel.bid_iv, sentinel.ask_iv) == (0.55, 0.6)
    assert quote_problems(sentinel, sentinel.symbol)                                 # no longer believed
    believable = chain_row(markIv=DOUBLE_MAX, markPrice=model, bid=model * 0.97, ask=model * 1.03)
    assert quote_problems(believable, believable.symbol) == []


def test_a_chain_row_whose_strike_contradicts_its_symbol_is_refused():
    raw = side(EXP2, 60000, "C", markPrice=300.0, bid=250.0, ask=350.0, markIv=0.57)
    raw["strike"] = 80000.0
    with pytest.raises(StaleDataError, match="contradicts the symbol"):
        option_row_from_api(raw, as_of=START, index_name="BTCUSD")
    raw["strike"] = "60000"
    assert option_row_from_api(raw, as_of=START, index_name="BTCUSD").strike == 60000.0
