"""A create answered HTTP 404 is resolved by clientOrderId, never booked REJECTED on it.

A 404 from whatever answered proves nothing (rfq.definitely_refused says the same): an order
create answered 404 by a gateway during a rollout may still have reached the order service.
The ledger booked it REJECTED (final, never queried again), so an order that did reach the
book was followed by nobody: its fill never booked, the leg free for a second order. Now it
is UNKNOWN and resolved by clientOrderId like a 5xx. ``responses`` at the HTTP edge.
"""
from __future__ import annotations

import random
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from clock import SimulatedClock
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from order_ledger import Intent, OrderLedger, OrderStatus

BASE = "http://127.0.0.1:18080"
START = 1767225600.0
SYMBOL = "BTCUSD-27MAR26-100000-C"
CREATE = "/open/option/order/create/v1"
QUERY = "/open/option/order/singleQuery/v1"
ORDER_ID = 1983131927527428096


def envelope(data=None, code=0, msg="Success"):
    return {"code": code, "msg": msg, "i18nArgs": None, "data": data}


@pytest.fixture
def rig():
    clock = SimulatedClock(start=START, speed=0)
    client = CoincallClient(ClientSettings(base_url=BASE, max_retries=0),
                            Credentials("demoKey123", "demoSecret456", "COINCALL_API_KEY_TEST"), clock,
                            rng=random.Random(7))
    ledger = OrderLedger(client, clock, prefix=101, exchange_offset=lambda: client.time_offset_seconds)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield clock, client, ledger, rsps
    client.close()


def test_create_answered_404_but_placed_is_never_looked_up(rig):
    clock, client, ledger, rsps = rig
    placed: dict = {}

    def create(request):
        import json
        body = json.loads(request.body)
        placed["coid"] = body["clientOrderId"]
        # The gateway answers 404, but the order service got the order (a rollout, a misroute).
        return 404, {}, "<html>404 Not Found</html>"

    def query(request):
        import json
        params = dict(parse_qsl(urlsplit(request.url).query))
        placed.setdefault("queries", []).append(params)
        return 200, {}, json.dumps(envelope({
            "orderId": ORDER_ID, "clientOrderId": placed["coid"], "symbol": SYMBOL, "qty": 0.1,
            "fillQty": 0.1, "avgPrice": 1250.0, "price": 1250.0, "tradeSide": 1, "tradeType": 1,
            "state": 1, "fee": 0.3, "createTime": int(START * 1000) + 50, "updateTime": int(START * 1000) + 60,
        }))

    rsps.add_callback(responses.POST, BASE + CREATE, callback=create)
    rsps.add_callback(responses.GET, BASE + QUERY, callback=query)

    order = ledger.place(trade_id="t1", trade_seq=1, leg_index=0, intent=Intent.OPEN, symbol=SYMBOL,
                         side=1, qty=0.1, price=1250.0, tick_size=0.1)
    # A 404 from "whatever answered" is no proof the order was not placed (rfq.definitely_refused
    # treats it as unknown); the ledger should resolve it by clientOrderId like a 5xx.
    clock.advance(60.0)
    ledger.poll(order)
    assert order.status is not OrderStatus.REJECTED, (
        f"create answered HTTP 404 booked {order.status.value} (final, never queried again: "
        f"{len(placed.get('queries', []))} queries); the exchange holds it FILLED 0.1 and the ledger books "
        f"filled_qty={order.filled_qty}")
    assert order.filled_qty == pytest.approx(0.1)
