"""vertical_spread resolved on a live simulator chain, through CoincallClient and MarketData.

Each of the four variants must come out as one chain call, two strikes of one type and one
expiry in the right order, and the right side on each (issue 10): a call debit spread buys the
lower strike and sells the higher, a put debit spread buys the higher and sells the lower, a
credit spread is the reverse.
"""
from __future__ import annotations

import pytest

from coincall_client import ClientSettings, CoincallClient, Credentials
from contracts import Side
from market_data import MarketData
from option_selection import resolve_legs, vertical_spread

WIDTH = 1000.0


@pytest.fixture
def market(sim):
    client = CoincallClient(ClientSettings(base_url=sim.base_url),
                            Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    yield MarketData(client, sim.clock)
    client.close()


@pytest.mark.parametrize("option_type,kind,near_delta", [
    ("C", "debit", None), ("C", "credit", 0.30), ("P", "debit", None), ("P", "credit", -0.30),
])
def test_each_variant_resolves_with_ordered_strikes_and_sides(sim, market, option_type, kind, near_delta):
    market.instruments("BTC")  # warm the instrument cache: the budget below is selection's own
    sim.reset_stats()
    near, far = resolve_legs(vertical_spread(0.1, option_type, kind, near_delta=near_delta, width=WIDTH, dte=1),
                             market, now=sim.clock.now())
    assert sim.counts["option_chain"] == 1 and sim.counts["option_detail"] == 0
    near_contract, far_contract = near.contract, far.contract
    assert near_contract.option_type == far_contract.option_type == option_type
    assert near_contract.expiry_ms == far_contract.expiry_ms
    assert near.qty == far.qty == 0.1

    # The far leg is further out of the money: above the near strike for calls, below for puts.
    if option_type == "C":
        assert far_contract.strike >= near_contract.strike + WIDTH
    else:
        assert far_contract.strike <= near_contract.strike - WIDTH
    bought, sold = (near, far) if kind == "debit" else (far, near)
    assert (bought.side, sold.side) == (Side.BUY, Side.SELL)
    if kind == "debit" and option_type == "C" or kind == "credit" and option_type == "P":
        assert bought.contract.strike < sold.contract.strike
    else:
        assert bought.contract.strike > sold.contract.strike

    if near_delta is None:  # ATM: no strike of this type quoted on the near leg's side is nearer the index
        strikes = {r.strike for r in market.chain(near_contract.expiry_ms) if r.option_type == option_type
                   and (r.ask if near.side == Side.BUY else r.bid) > 0}
        assert abs(near_contract.strike - near.index_price) == min(abs(k - near.index_price) for k in strikes)
    else:
        assert near.row.delta == pytest.approx(near_delta, abs=0.05)
    assert bought.row.ask > 0 and sold.row.bid > 0  # quoted on the side each leg trades
