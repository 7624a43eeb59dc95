"""``OrderLedger._not_ours`` (order_ledger.py) called an order found by our clientOrderId another
daemon's when the exchange created it more than X-REQ-TS-DIFF before our send; the slack is now at
least ``CREATE_TIME_SLACK_SECONDS``. X-REQ-TS-DIFF is
how far BEHIND the exchange a request may be signed; the direction that matters here is how far
AHEAD it may be signed (API.md 2.2: ts < serverTime + 1000), plus the client's 0.5 s dead band
(CoincallClient.sync_time keeps offset 0 unless |offset| > 0.5 s). With COINCALL_TS_DIFF_MS below
~1000 (allowed range 100-60000) our own accepted order reads as another daemon's: never adopted
(its fill never booked), CRITICAL prefix_conflict, every strategy paused, symbol blocked.
"""

import random

import pytest
import responses

from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from order_ledger import Intent, OrderLedger, OrderStatus
from tests.unit.test_ledger_offset_at_send import BASE, SERVER_START, SYMBOL, HostClock, LostCreate


@pytest.mark.parametrize("ts_diff_ms, skew_at_sync, skew_at_send", [
    (300, 0.45, 0.45),   # host 0.45 s fast: inside the dead band, signed with offset 0, accepted
    (800, 0.0, 0.9),     # host drifts 0.9 s fast after the last sync: still accepted (< 1 s ahead)
])
def test_own_order_is_not_called_foreign_with_a_small_ts_diff(ts_diff_ms, skew_at_sync, skew_at_send):
    clock = HostClock(SERVER_START, skew=skew_at_sync)
    client = CoincallClient(ClientSettings(base_url=BASE, max_retries=0, ts_diff_ms=ts_diff_ms),
                            Credentials("demoKey123", "demoSecret456", "COINCALL_API_KEY_TEST"), clock,
                            rng=random.Random(7))
    ledger = OrderLedger(client, clock, prefix=101, ts_diff_ms=ts_diff_ms,
                         exchange_offset=lambda: client.time_offset_seconds)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        LostCreate(clock, rsps, created_after_ms=20,
                   signed_ok=lambda ts: clock.true * 1000 - ts_diff_ms <= ts < clock.true * 1000 + 1000)
        client.sync_time()
        clock.skew = skew_at_send
        order = ledger.place(trade_id="t1", trade_seq=1, leg_index=0, intent=Intent.OPEN, symbol=SYMBOL,
                             side=1, qty=0.1, price=1250.0, tick_size=0.1)
        assert order.status is OrderStatus.UNKNOWN
        clock.true += 1.0
        ledger.poll(order)
        foreign = ledger.take_foreign_orders()
        assert not foreign, f"our own order called another daemon's: {foreign[0].why}"
        assert order.status is OrderStatus.FILLED, order
    client.close()
