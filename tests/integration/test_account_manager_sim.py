"""AccountManager and PositionMonitor against the simulated exchange (real HTTP, real signing).

Orders placed through the product's client must show up in the snapshot with the right
side, quantity, greeks and equity; a positions endpoint answering 5xx must produce no
snapshot at all (BEHAVIOUR.md 8 row 13).
"""
from __future__ import annotations

import pytest

from account_manager import AccountManager
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from errors import SnapshotError, TransportError
from position_monitor import PositionMonitor
from simulator import FaultRule


def make_client(handle, **settings):
    return CoincallClient(ClientSettings(base_url=handle.base_url, **settings),
                          Credentials(handle.api_key, handle.api_secret, source="test"), handle.clock)


@pytest.fixture
def client(sim):
    c = make_client(sim)
    yield c
    c.close()


def liquid_option(client, suffix: str) -> tuple[str, list[dict], list[dict]]:
    """A near-the-money option of the second expiry with both book sides populated."""
    index = client.index_price()
    instruments = client.instruments("BTC")
    expiry = sorted({i["expirationTimestamp"] for i in instruments})[1]
    candidates = [i for i in instruments if i["expirationTimestamp"] == expiry and i["symbolName"].endswith(suffix)]
    candidates.sort(key=lambda i: abs(i["strike"] - index))
    for inst in candidates:
        book = client.orderbook(inst["symbolName"])
        if book["asks"] and book["bids"]:
            return inst["symbolName"], book["bids"], book["asks"]
    raise AssertionError(f"no liquid {suffix} option in the simulator chain")


def cross(client, symbol: str, side: int, level: dict, coid: int) -> tuple[float, float]:
    """Take part of the first level on the other side; returns (quantity filled, fee)."""
    qty = min(0.2, float(level["size"]))
    order_id = client.create_order(symbol, qty, side, float(level["price"]), coid)
    order = client.query_order(order_id=order_id)
    assert order["fillQty"] == pytest.approx(qty)
    assert order["avgPrice"] == pytest.approx(float(level["price"]))
    return qty, float(order["fee"])


def test_snapshot_shows_positions_with_side_qty_greeks_and_equity(sim, client):
    manager = AccountManager(client, sim.clock)
    flat = manager.snapshot()
    assert flat.positions == ()
    assert flat.equity > 0

    call, _, call_asks = liquid_option(client, "-C")
    put, put_bids, _ = liquid_option(client, "-P")
    call_qty, call_fee = cross(client, call, 1, call_asks[0], 101000000001011001)
    put_qty, put_fee = cross(client, put, 2, put_bids[0], 101000000001011002)

    before = sim.clock.now()
    snap = manager.snapshot()

    assert before <= snap.timestamp <= sim.clock.now()
    assert snap.position_count == 2
    long_call, short_put = snap.get_position(call), snap.get_position(put)
    assert (long_call.side, long_call.qty, long_call.signed_qty) == ("long", call_qty, call_qty)
    assert (short_put.side, short_put.qty, short_put.signed_qty) == ("short", put_qty, -put_qty)
    assert long_call.entry_price == pytest.approx(float(call_asks[0]["price"]))
    assert short_put.entry_price == pytest.approx(float(put_bids[0]["price"]))
    assert isinstance(long_call.position_id, int) and long_call.position_id > 0

    for position in (long_call, short_put):
        detail = client.option_detail(position.symbol)   # per-contract greeks of the same instant
        assert position.delta == pytest.approx(detail["delta"] * position.signed_qty, abs=1e-6)
        assert position.vega == pytest.approx(detail["vega"] * position.signed_qty, abs=1e-6)
        assert position.theta == pytest.approx(detail["theta"] * position.signed_qty, abs=1e-6)
        assert position.mark_price == pytest.approx(float(detail["markPrice"]))
        expected_upnl = (position.mark_price - position.entry_price) * position.signed_qty
        assert position.unrealized_pnl == pytest.approx(expected_upnl, abs=1e-6)
    assert long_call.delta > 0 and short_put.delta > 0   # long call and short put are both long delta
    assert snap.net_delta == pytest.approx(long_call.delta + short_put.delta)
    assert snap.net_vega == pytest.approx(long_call.vega + short_put.vega)

    # Equity marks the positions: starting equity - fees + mark-based uPnL.
    assert snap.equity == pytest.approx(flat.equity - call_fee - put_fee + snap.unrealized_pnl, abs=1e-4)
    assert snap.initial_margin > 0                           # the short put needs margin
    assert snap.available_margin < snap.equity
    assert snap.margin_utilization == pytest.approx(snap.initial_margin / snap.equity * 100)
    assert snap.unrealized_pnl == pytest.approx(long_call.unrealized_pnl + short_put.unrealized_pnl, abs=1e-4)


def test_per_contract_simulator_and_per_contract_adapter_agree_with_the_default(sim_factory):
    from simulator.exchange import ExchangeConfig

    totals = []
    for mode in ("per_position", "per_contract"):
        handle = sim_factory(exchange=ExchangeConfig(position_greeks=mode, seed=7))
        client = make_client(handle)
        try:
            call, _, asks = liquid_option(client, "-C")
            cross(client, call, 1, asks[0], 101000000001011003)
            snap = AccountManager(client, handle.clock, position_greeks=mode).snapshot()
            totals.append((snap.net_delta, snap.net_gamma, snap.net_theta, snap.net_vega))
        finally:
            client.close()
    assert totals[0] == pytest.approx(totals[1], rel=1e-4, abs=1e-6)  # the simulator rounds to 8 places
    assert totals[0][0] != 0.0


def test_positions_5xx_is_a_snapshot_error_and_callbacks_get_no_snapshot(sim):
    client = make_client(sim, max_retries=0)
    try:
        manager = AccountManager(client, sim.clock)
        sim.faults.add(FaultRule(endpoint="positions", mode="http_5xx"))

        with pytest.raises(SnapshotError, match="positions") as info:
            manager.snapshot()
        assert isinstance(info.value.__cause__, TransportError)
        assert info.value.__cause__.status == 503

        received, errors = [], []

        class Lifecycle:
            callback_name = "Lifecycle"

            def __call__(self, snap):
                received.append(snap)

            def on_snapshot_error(self, err):
                errors.append(err)

        class Runner(Lifecycle):
            callback_name = "Runner"

            def on_snapshot_error(self, err):
                pass   # ignores the error: no snapshot, nothing to do

        monitor = PositionMonitor(manager, sim.clock)
        monitor.register(Runner())
        monitor.register(Lifecycle())
        assert monitor.run_once() is False
        assert received == []
        assert len(errors) == 1 and isinstance(errors[0], SnapshotError)
        assert monitor.latest is None
        assert monitor.last_error is errors[0]

        sim.faults.clear()
        assert monitor.run_once() is True
        assert len(received) == 2 and received[0] is monitor.latest
    finally:
        client.close()
