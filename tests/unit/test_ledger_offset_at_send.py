"""The "not ours" test puts an order's ``sent_at`` on the exchange's clock with the offset it
was signed with, not the one in force later.

Host clock 10 s fast: the client measures offset -10 s and signs correctly (the create is
accepted). The answer is lost (UNKNOWN). The host clock is then corrected (NTP step, or
the operator fixes NTP after the daemon's own "server time is -10 s from the local clock"
WARNING and restarts): the new offset is 0. The order, our own, is found by clientOrderId,
created 0.05 s after we signed it. Converted with the offset in force now, it read as created
10 s before our send: another daemon's, never adopted (its fill never booked), prefix_conflict,
every strategy paused. ``responses`` at the HTTP edge; a host-clock fake that can be stepped.
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from typing import Any, Callable

import pytest
import requests
import responses

from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from order_ledger import Intent, OrderLedger, OrderStatus

BASE = "http://127.0.0.1:18080"
SERVER_START = 1767225600.0
SYMBOL = "BTCUSD-27MAR26-100000-C"
ORDER_ID = 1983131927527428096


class HostClock:
    """A host clock that may be stepped back (NTP); ``true`` is the exchange's time."""

    def __init__(self, true_start: float, skew: float) -> None:
        self.true = true_start
        self.skew = skew

    def now(self) -> float:
        return self.true + self.skew

    def now_ms(self) -> int:
        return int(round(self.now() * 1000))

    def monotonic(self) -> float:
        return self.true

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.true += seconds

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=timezone.utc)


def envelope(data=None, code=0, msg="Success"):
    return {"code": code, "msg": msg, "i18nArgs": None, "data": data}


class LostCreate:
    """The exchange over ``responses``: its time, a create it executes but whose answer is lost
    (stamped ``created_after_ms`` after it came in), and that order's lookup, filled 0.1.
    ``signed_ok(ts)`` is the exchange's window check of the create's signature time."""

    def __init__(self, clock: HostClock, rsps: responses.RequestsMock, *, created_after_ms: int,
                 signed_ok: Callable[[int], bool]) -> None:
        self.clock, self.signed_ok, self.created_after_ms = clock, signed_ok, created_after_ms
        self.coid: int | None = None
        self.created_ms = 0
        rsps.add_callback(responses.GET, BASE + "/time", callback=self.server_time)
        rsps.add_callback(responses.POST, BASE + "/open/option/order/create/v1", callback=self.create)
        rsps.add_callback(responses.GET, BASE + "/open/option/order/singleQuery/v1", callback=self.query)

    def server_time(self, request: Any) -> tuple[int, dict, str]:
        return 200, {}, json.dumps(envelope({"serverTime": int(round(self.clock.true * 1000))}))

    def create(self, request: Any) -> tuple[int, dict, str]:
        assert self.signed_ok(int(request.headers["ts"])), "signed inside the exchange's window"
        self.coid = json.loads(request.body)["clientOrderId"]
        self.created_ms = int(round(self.clock.true * 1000)) + self.created_after_ms
        raise requests.ConnectionError("connection reset by peer")   # executed, answer lost

    def query(self, request: Any) -> tuple[int, dict, str]:
        return 200, {}, json.dumps(envelope({
            "orderId": ORDER_ID, "clientOrderId": self.coid, "symbol": SYMBOL, "qty": 0.1,
            "fillQty": 0.1, "avgPrice": 1250.0, "price": 1250.0, "tradeSide": 1, "tradeType": 1,
            "state": 1, "fee": 0.3, "createTime": self.created_ms, "updateTime": self.created_ms + 10,
        }))


def test_own_order_found_after_clock_fix_is_not_called_foreign():
    clock = HostClock(SERVER_START, skew=10.0)     # host 10 s fast
    client = CoincallClient(ClientSettings(base_url=BASE, max_retries=0),
                            Credentials("demoKey123", "demoSecret456", "COINCALL_API_KEY_TEST"), clock,
                            rng=random.Random(7))
    ledger = OrderLedger(client, clock, prefix=101, exchange_offset=lambda: client.time_offset_seconds)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        LostCreate(clock, rsps, created_after_ms=50, signed_ok=lambda ts: abs(ts - clock.true * 1000) < 1000)
        offset = client.sync_time()
        assert offset == pytest.approx(-10.0, abs=0.01)
        order = ledger.place(trade_id="t1", trade_seq=1, leg_index=0, intent=Intent.OPEN, symbol=SYMBOL,
                             side=1, qty=0.1, price=1250.0, tick_size=0.1)
        assert order.status is OrderStatus.UNKNOWN

        clock.true += 2.0
        clock.skew = 0.0            # NTP steps the host clock back to the right time
        assert client.sync_time() == pytest.approx(0.0, abs=0.01)   # resync (10557, or a restart)

        ledger.poll(order)
        foreign = ledger.take_foreign_orders()
        assert not foreign, f"our own order called another daemon's: {foreign[0].why}"
        assert order.status is OrderStatus.FILLED and order.filled_qty == pytest.approx(0.1), order
    client.close()
