"""The project's own client drives the simulated exchange over loopback.

Place, query, partially fill, cancel, and watch positions and the account change:
the same path a real order takes, with real signing on both sides of the socket.
"""
from __future__ import annotations

import pytest

from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from errors import ExchangeError, OrderOutcomeUnknown


@pytest.fixture
def client(sim):
    c = CoincallClient(
        ClientSettings(base_url=sim.base_url),
        Credentials(sim.api_key, sim.api_secret, source="test"),
        sim.clock,
    )
    yield c
    c.close()


def _liquid_call(client) -> tuple[str, list[dict], list[dict]]:
    """A call near the money whose book has at least two ask levels."""
    index = client.index_price()
    instruments = client.instruments("BTC")
    expiries = sorted({i["expirationTimestamp"] for i in instruments})
    # Skip the first expiry: it may be inside the pre-expiry halt in some fixtures.
    expiry = expiries[1]
    calls = [i for i in instruments if i["expirationTimestamp"] == expiry and i["symbolName"].endswith("-C")]
    calls.sort(key=lambda i: abs(i["strike"] - index))
    for inst in calls:
        book = client.orderbook(inst["symbolName"])
        if len(book["asks"]) >= 2 and len(book["bids"]) >= 1:
            return inst["symbolName"], book["bids"], book["asks"]
    raise AssertionError("no liquid call found in the simulator chain")


def _usd(value) -> float:
    return float(value)


def test_place_partially_fill_query_cancel_and_see_account_change(sim, client):
    symbol, bids, asks = _liquid_call(client)
    best_ask = float(asks[0]["price"])
    first_level_size = float(asks[0]["size"])
    summary_before = client.account_summary()

    # Buy more than the first ask level holds, at the first level's price: a partial
    # taker fill, and the rest rests on the book.
    qty = round(first_level_size + 0.5, 2)
    client_order_id = 101000000001011001
    order_id = client.create_order(symbol, qty, 1, best_ask, client_order_id)
    assert isinstance(order_id, int) and order_id > 10**18

    by_id = client.query_order(order_id=order_id)
    by_client_id = client.query_order(client_order_id=client_order_id)
    assert by_id["orderId"] == by_client_id["orderId"] == order_id
    assert by_id["clientOrderId"] == client_order_id
    assert by_id["state"] == 2  # PARTIALLY_FILLED
    assert by_id["fillQty"] == pytest.approx(first_level_size)
    assert by_id["fillQty"] + by_id["remainQty"] == pytest.approx(qty)
    assert by_id["avgPrice"] == pytest.approx(best_ask)
    assert by_id["fee"] > 0

    pending = client.all_pending_orders()
    assert any(o["orderId"] == order_id for o in pending)

    positions = client.positions()
    mine = [p for p in positions if p["symbol"] == symbol]
    assert len(mine) == 1
    assert mine[0]["tradeSide"] == 1
    assert mine[0]["qty"] == pytest.approx(first_level_size)

    client.cancel_order(order_id=order_id)
    final = client.query_order(order_id=order_id)
    assert final["state"] == 3  # CANCELED, keeps its partial fill
    assert final["fillQty"] == pytest.approx(first_level_size)
    assert not any(o["orderId"] == order_id for o in client.all_pending_orders())

    # Cancelling again is a definitive "already cancelled".
    with pytest.raises(ExchangeError) as err:
        client.cancel_order(order_id=order_id)
    assert err.value.code == 11101

    summary_after = client.account_summary()
    # Fees were paid: equity moved, and it is reported as a string per API.md 7.1.
    assert isinstance(summary_after["equity"], str)
    assert _usd(summary_after["equity"]) != pytest.approx(_usd(summary_before["equity"]))


def test_lost_create_response_leaves_exactly_one_order_found_by_client_order_id(sim, client):
    from simulator import FaultRule

    symbol, bids, _asks = _liquid_call(client)
    resting_bid = max(1.0, float(bids[-1]["price"]) - 50.0)
    sim.faults.add(FaultRule(endpoint="create_order", mode="lost_response", count=1))
    client_order_id = 101000000002001001
    with pytest.raises(OrderOutcomeUnknown) as err:
        client.create_order(symbol, 0.1, 1, resting_bid, client_order_id)
    assert err.value.client_order_id == client_order_id
    assert sim.counts["create_order"] == 1  # never re-sent

    found = client.query_order(client_order_id=client_order_id)
    assert found["symbol"] == symbol
    assert found["state"] == 0
    # The exchange refuses a second order with the same client id while the first is open.
    with pytest.raises(ExchangeError) as dup:
        client.create_order(symbol, 0.1, 1, resting_bid, client_order_id)
    assert dup.value.code == 10577
