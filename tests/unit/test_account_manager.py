"""AccountManager, the one adapter of API.md 7 (the scheduler's tests are test_position_monitor.py).

The adapter is exercised through the real client against canned HTTP answers
(``responses``), so the payloads are exactly what the client hands over.
"""
from __future__ import annotations

import logging
import random

import pytest
import requests
import responses

from account_manager import (
    AccountManager,
    AccountSnapshot,
    margin_utilization_pct,
)
from clock import SimulatedClock
from coincall_client import ClientSettings, CoincallClient
from coincall_payloads import PositionSnapshot
from config import Credentials
from errors import ConfigError, ExchangeError, SnapshotError, TransportError

BASE = "http://127.0.0.1:18081"
START = 1772431200.0  # 2026-03-02 06:00:00 UTC
SUMMARY_URL = BASE + "/open/account/summary/v1"
POSITIONS_URL = BASE + "/open/option/position/get/v1"
BIG_POSITION_ID = 1983131927527428097
CALL = "BTCUSD-27MAR26-100000-C"
PUT = "BTCUSD-27MAR26-60000-P"


def envelope(data=None, code=0, msg="Success"):
    return {"code": code, "msg": msg, "i18nArgs": None, "data": data}


def summary_payload(**overrides):
    """API.md 7.1 shape: margin numbers as JSON strings, totals as numbers."""
    payload = {
        "equity": "10000.5",
        "availableMargin": "8500.25",
        "imAmount": "1500",
        "mmAmount": "750.125",
        "imRatio": "0.149993",
        "mmRatio": "0.075",
        "marginBalance": "10000.5",
        "unrealizedPnL": "-42.5",
        "totalBtcValue": 0.12,
        "totalDollarValue": 10000.5,
        "totalUsdtValue": 10000.5,
        "accounts": [],
    }
    payload.update(overrides)
    return payload


def long_call_payload(**overrides):
    """A long 0.5 call; greeks per position (per-contract delta 0.4 x 0.5)."""
    payload = {
        "id": BIG_POSITION_ID, "positionId": BIG_POSITION_ID, "orderId": 1983131927527428000,
        "userId": 1695796692000001, "updateTime": 1772431100000, "symbol": CALL, "displayName": CALL,
        "qty": 0.5, "tradeSide": 1, "avgPrice": 1200.0, "markPrice": 1300.0, "lastPrice": 1250.0,
        "value": 650.0, "initMargin": 0.0, "maintMargin": 0.0, "upnl": 25.0, "roi": 0.0416,
        "upnlByMarkPrice": 50.0, "roiByMarkPrice": 0.0833, "rspl": 0.0, "lockQty": 0.0,
        "indexPrice": 70000.0, "delta": 0.2, "gamma": 0.00001, "vega": 30.0, "theta": -12.0, "rho": 5.0,
        "baseToken": "BTC", "quoteToken": "USD",
    }
    payload.update(overrides)
    return payload


def short_put_payload(**overrides):
    """A short 0.3 put with string numbers; per position greeks already signed."""
    payload = {
        "id": "1983131927527428111", "positionId": "1983131927527428111", "symbol": PUT,
        "qty": "0.3", "tradeSide": 2, "avgPrice": "800", "markPrice": "700",
        "upnl": "10", "roi": "0.02", "upnlByMarkPrice": "30", "roiByMarkPrice": "0.125",
        "delta": "0.09", "gamma": "-0.000006", "vega": "-18", "theta": "7.5", "rho": "1",
    }
    payload.update(overrides)
    return payload


@pytest.fixture
def clock():
    return SimulatedClock(start=START, speed=0)


@pytest.fixture
def client(clock):
    c = CoincallClient(ClientSettings(base_url=BASE, max_retries=0), Credentials("k3y", "s3cret", "test"), clock,
                       rng=random.Random(3))
    yield c
    c.close()


def serve(rsps, summary=None, positions=None):
    rsps.add(responses.GET, SUMMARY_URL, json=envelope(summary if summary is not None else summary_payload()))
    rsps.add(responses.GET, POSITIONS_URL, json=envelope(positions if positions is not None else []))


# ------------------------------------------------------------------------------ adapter


def test_snapshot_normalises_string_numbers_sides_and_sums_position_greeks(rsps, client, clock):
    serve(rsps, positions=[long_call_payload(), short_put_payload()])
    clock.advance(12.0)

    snap = AccountManager(client, clock).snapshot()

    assert snap.equity == 10000.5
    assert snap.available_margin == 8500.25
    assert snap.initial_margin == 1500.0
    assert snap.maintenance_margin == 750.125
    assert snap.unrealized_pnl == -42.5
    assert snap.margin_utilization == pytest.approx(1500 / 10000.5 * 100)
    assert snap.timestamp == START + 12.0
    assert snap.position_count == 2

    call = snap.get_position(CALL)
    assert call == PositionSnapshot(
        position_id=BIG_POSITION_ID, symbol=CALL, qty=0.5, side="long", signed_qty=0.5, entry_price=1200.0,
        mark_price=1300.0, unrealized_pnl=50.0, roi=0.0833, delta=0.2, gamma=0.00001, theta=-12.0, vega=30.0,
        timestamp=START + 12.0,
    )
    put = snap.get_position(PUT)
    assert put.side == "short"
    assert put.qty == 0.3 and put.signed_qty == -0.3
    assert put.position_id == 1983131927527428111 and isinstance(put.position_id, int)
    assert put.entry_price == 800.0 and put.mark_price == 700.0
    assert put.unrealized_pnl == 30.0 and put.roi == 0.125  # mark based, not the last-price upnl

    assert snap.net_delta == pytest.approx(0.2 + 0.09)
    assert snap.net_gamma == pytest.approx(0.00001 - 0.000006)
    assert snap.net_theta == pytest.approx(-12.0 + 7.5)
    assert snap.net_vega == pytest.approx(30.0 - 18.0)
    assert snap.get_position("BTCUSD-27MAR26-1-C") is None


def test_per_contract_greeks_are_multiplied_by_signed_qty(rsps, client, clock):
    per_contract_call = long_call_payload(delta=0.4, gamma=0.00002, vega=60.0, theta=-24.0)
    per_contract_put = short_put_payload(delta="-0.3", gamma="0.00002", vega="60", theta="-25")
    serve(rsps, positions=[per_contract_call, per_contract_put])

    snap = AccountManager(client, clock, position_greeks="per_contract").snapshot()

    call, put = snap.get_position(CALL), snap.get_position(PUT)
    assert call.delta == pytest.approx(0.4 * 0.5)
    assert call.theta == pytest.approx(-24.0 * 0.5)
    assert put.delta == pytest.approx(-0.3 * -0.3)   # short put: positive position delta
    assert put.vega == pytest.approx(60 * -0.3)
    assert put.theta == pytest.approx(-25 * -0.3)
    assert snap.net_delta == pytest.approx(0.2 + 0.09)
    assert snap.net_vega == pytest.approx(30.0 - 18.0)
    assert snap.net_gamma == pytest.approx(0.00002 * 0.5 - 0.00002 * 0.3)


def test_mark_based_pnl_falls_back_to_mark_minus_entry_when_the_extras_are_absent(rsps, client, clock):
    call = long_call_payload()
    put = short_put_payload()
    for payload in (call, put):
        del payload["upnlByMarkPrice"], payload["roiByMarkPrice"]
    serve(rsps, positions=[call, put])

    snap = AccountManager(client, clock).snapshot()

    assert snap.get_position(CALL).unrealized_pnl == pytest.approx((1300 - 1200) * 0.5)
    assert snap.get_position(CALL).roi == pytest.approx(50 / 600)
    assert snap.get_position(PUT).unrealized_pnl == pytest.approx((700 - 800) * -0.3)  # short gains as mark falls
    assert snap.get_position(PUT).roi == pytest.approx(30 / 240)


def test_direction_comes_from_trade_side_only_and_qty_is_a_magnitude(rsps, client, clock):
    serve(rsps, positions=[short_put_payload(qty=-0.3)])
    put = AccountManager(client, clock).snapshot().get_position(PUT)
    assert (put.qty, put.side, put.signed_qty) == (0.3, "short", -0.3)


def test_flat_account_is_an_empty_tuple_and_zero_rows_are_dropped(rsps, client, clock):
    serve(rsps, positions=[long_call_payload(qty="0")])
    snap = AccountManager(client, clock).snapshot()
    assert snap.positions == ()
    assert snap.position_count == 0
    assert (snap.net_delta, snap.net_gamma, snap.net_theta, snap.net_vega) == (0.0, 0.0, 0.0, 0.0)


def test_missing_greek_counts_as_zero_and_warns_once(rsps, client, clock, caplog):
    payload = long_call_payload(delta=None)
    del payload["vega"]
    serve(rsps, positions=[payload])
    serve(rsps, positions=[payload])
    manager = AccountManager(client, clock)
    with caplog.at_level(logging.WARNING, logger="account_manager"):
        first = manager.snapshot()
        manager.snapshot()
    assert first.get_position(CALL).delta == 0.0 and first.get_position(CALL).vega == 0.0
    assert first.get_position(CALL).theta == -12.0
    warnings = [r for r in caplog.records if CALL in r.getMessage() and "delta" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("failure", [
    dict(status=503, body="Service Unavailable"),
    dict(status=500, body="oops"),
    dict(json=envelope(code=10000, msg="Try again later")),
    dict(body=requests.exceptions.ConnectionError("refused")),
])
def test_failed_positions_call_raises_snapshot_error_never_an_empty_account(rsps, client, clock, failure):
    rsps.add(responses.GET, SUMMARY_URL, json=envelope(summary_payload()))
    rsps.add(responses.GET, POSITIONS_URL, **failure)

    with pytest.raises(SnapshotError, match="positions") as info:
        AccountManager(client, clock).snapshot()
    assert isinstance(info.value.__cause__, (TransportError, ExchangeError))


def test_failed_summary_call_raises_snapshot_error_and_skips_positions(rsps, client, clock):
    rsps.add(responses.GET, SUMMARY_URL, json=envelope(code=10006, msg="auth"))
    positions = rsps.add(responses.GET, POSITIONS_URL, json=envelope([]))
    with pytest.raises(SnapshotError, match="account summary") as info:
        AccountManager(client, clock).snapshot()
    assert isinstance(info.value.__cause__, ExchangeError)
    assert positions.call_count == 0


@pytest.mark.parametrize("positions, needle", [
    (None, "not a list"),
    ({"list": []}, "not a list"),
    ([long_call_payload(tradeSide=3)], "tradeSide"),
    ([long_call_payload(qty="abc")], "qty"),
    ([long_call_payload(markPrice=None)], "markPrice"),
    ([long_call_payload(avgPrice="NaN")], "avgPrice"),
    ([long_call_payload(positionId=1.98e18, id=1.98e18)], "positionId"),
    (["BTCUSD"], "not an object"),
])
def test_malformed_positions_payload_is_a_snapshot_error(rsps, client, clock, positions, needle):
    rsps.add(responses.GET, SUMMARY_URL, json=envelope(summary_payload()))
    rsps.add(responses.GET, POSITIONS_URL, json=envelope(positions))
    with pytest.raises(SnapshotError, match=needle):
        AccountManager(client, clock).snapshot()


def test_summary_without_equity_is_a_snapshot_error(rsps, client, clock):
    summary = summary_payload()
    del summary["equity"]
    serve(rsps, summary=summary)
    with pytest.raises(SnapshotError, match="equity"):
        AccountManager(client, clock).snapshot()


def test_unknown_greek_mode_is_a_config_error(client, clock):
    with pytest.raises(ConfigError, match="position_greeks"):
        AccountManager(client, clock, position_greeks="per_lot")


def test_margin_utilization_and_summary_line():
    assert margin_utilization_pct(500.0, 2000.0) == 25.0
    assert margin_utilization_pct(0.0, 0.0) == 0.0
    assert margin_utilization_pct(10.0, 0.0) == float("inf")
    snap = AccountSnapshot.build(equity=2000.0, available_margin=1500.0, initial_margin=500.0,
                                 maintenance_margin=250.0, unrealized_pnl=-3.0, positions=(), timestamp=START)
    line = snap.summary_str()
    assert "equity=$2,000.00" in line and "25.0%" in line and "positions=0" in line
    with pytest.raises(Exception):
        snap.equity = 1.0  # frozen
