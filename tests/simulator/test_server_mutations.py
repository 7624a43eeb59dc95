"""Response mutations over real HTTP: code 0, wrong answers, only inside their window.

Each kind is checked before its window, inside it and after it against the in-process
simulator on a speed-0 clock (docs/SIMULATOR.md "Response mutations").
"""
from __future__ import annotations

import pytest
import requests

from simulator import FaultRule, Mutation
from simulator.mutations import PRICE_FIELDS

POSITIONS = "/open/option/position/get/v1"
PENDING = "/open/option/order/pending/v1"
CREATE = "/open/option/order/create/v1"
SINGLE = "/open/option/order/singleQuery/v1"
ORDER_HISTORY = "/open/option/order/history/v1"
TRADE_HISTORY = "/open/option/trade/history/v1"
SUMMARY = "/open/account/summary/v1"
CHAIN = "/open/option/get/v1/BTCUSD"
FUTURES = "/open/futures/market/symbol/v1"
INSTRUMENTS = "/open/option/getInstruments/BTC"
NOT_FOUND = 10584


@pytest.fixture
def msim(sim_factory):
    """A simulator without rate limits: the clock is frozen, tests call many times per instant."""
    return sim_factory(rate_limits_enabled=False)


@pytest.fixture
def call(msim, signed_request_for):
    return signed_request_for(msim)


def a_symbol(call, option_type: str = "C") -> str:
    """A mid-strike option of the second expiry (far from the pre-expiry halt)."""
    instruments = call("GET", INSTRUMENTS, signed=False)["data"]
    expiries = sorted({i["expirationTimestamp"] for i in instruments})
    options = sorted((i for i in instruments if i["expirationTimestamp"] == expiries[1]
                      and i["symbolName"].endswith("-" + option_type)), key=lambda i: i["strike"])
    return options[len(options) // 2]["symbolName"]


def chain_sides(envelope: dict) -> list[dict]:
    return [side for row in envelope["data"] for side in (row["callOption"], row["putOption"]) if side]


def place_resting(msim, call, resting_bid_for, client_order_id: int) -> int:
    envelope = call("POST", CREATE, resting_bid_for(msim, client_order_id))
    assert envelope["code"] == 0, envelope
    return int(envelope["data"])


# --- empty_list ----------------------------------------------------------------------------
def test_empty_list_empties_positions_inside_its_window_only(msim, call):
    symbol = a_symbol(call)
    msim.exchange.set_position(None, symbol, -0.5, 120.0)
    now = msim.clock.now()
    mutation = msim.mutations.add(Mutation("empty_list", endpoint="positions", start=now + 10, end=now + 70))

    assert [p["symbol"] for p in call("GET", POSITIONS)["data"]] == [symbol]      # before start
    msim.clock.advance(10)
    inside = call("GET", POSITIONS)
    assert (inside["code"], inside["data"]) == (0, [])                            # at start
    assert msim.exchange.position_of(None, symbol) == -0.5                        # the exchange still holds it
    msim.clock.advance(59.9)
    assert call("GET", POSITIONS)["data"] == []                                   # just before end
    msim.clock.advance(0.1)
    assert [p["symbol"] for p in call("GET", POSITIONS)["data"]] == [symbol]      # end is exclusive

    assert mutation.applied == 2
    assert msim.mutations.counts == {"empty_list": 2}
    records = msim.requests_for("positions")
    assert [r.mutation for r in records] == [None, "empty_list", "empty_list", None]
    assert all(r.code == 0 and r.http_status == 200 for r in records)


def test_empty_list_keeps_pagination_consistent(msim, call, resting_bid_for):
    place_resting(msim, call, resting_bid_for, 501)
    before = call("GET", PENDING)["data"]
    assert before["total"] == 1 and before["pageTotal"] == 1 and len(before["list"]) == 1
    msim.mutations.add(Mutation("empty_list", endpoint="pending_orders"))
    msim.mutations.add(Mutation("empty_list", endpoint="order_history"))
    assert call("GET", PENDING) == {"code": 0, "msg": "Success", "i18nArgs": None,
                                    "data": {"list": [], "pageTotal": 0, "total": 0}}
    history = call("GET", ORDER_HISTORY)["data"]
    assert history == {"list": [], "hasNext": False, "hasPre": False}
    assert msim.exchange.orders()[0]["clientOrderId"] == 501     # nothing was cancelled


def test_empty_list_on_the_pre_serialised_chain(msim, call):
    assert len(call("GET", CHAIN, signed=False)["data"]) > 10
    msim.mutations.add(Mutation("empty_list", endpoint="option_chain"))
    assert call("GET", CHAIN, signed=False) == {"code": 0, "msg": "Success", "i18nArgs": None, "data": []}


# --- drop_fields ---------------------------------------------------------------------------
def test_drop_fields_removes_the_named_fields_at_any_depth(msim, call):
    symbol = a_symbol(call)
    msim.exchange.set_position(None, symbol, 0.3, 80.0)
    start = msim.clock.now() + 5
    msim.mutations.add(Mutation("drop_fields", endpoint="option_chain", start=start, end=start + 30,
                                fields=("markPrice", "delta")))
    msim.mutations.add(Mutation("drop_fields", endpoint="positions", start=start, fields=["markPrice"]))
    assert all("markPrice" in s and "delta" in s for s in chain_sides(call("GET", CHAIN, signed=False)))

    msim.clock.advance(5)
    sides = chain_sides(call("GET", CHAIN, signed=False))
    assert sides and all("markPrice" not in s and "delta" not in s for s in sides)
    assert all("bid" in s and "gamma" in s and "symbol" in s for s in sides)     # the rest is intact
    position = call("GET", POSITIONS)["data"][0]
    assert "markPrice" not in position and position["avgPrice"] == 80.0

    msim.clock.advance(30)
    assert all("markPrice" in s for s in chain_sides(call("GET", CHAIN, signed=False)))
    assert "markPrice" not in call("GET", POSITIONS)["data"][0]                    # end=None: until removed


# --- zero_prices / corrupt_prices -------------------------------------------------------------
def test_zero_prices_sets_every_price_to_zero_and_nothing_else(msim, call):
    healthy = chain_sides(call("GET", CHAIN, signed=False))
    assert any(s["markPrice"] > 0 for s in healthy)
    msim.mutations.add(Mutation("zero_prices", endpoint="option_chain"))
    zeroed = chain_sides(call("GET", CHAIN, signed=False))
    assert len(zeroed) == len(healthy)
    for before, after in zip(healthy, zeroed):
        for name, value in before.items():
            if name in PRICE_FIELDS:
                assert after[name] == 0.0, name
            else:
                assert after[name] == value, name


def test_zero_prices_keeps_text_numbers_as_text(msim, call):
    symbol = a_symbol(call)
    msim.mutations.add(Mutation("zero_prices", endpoint="orderbook"))
    book = call("GET", f"/open/option/order/orderbook/v1/{symbol}", signed=False)["data"]
    levels = book["bids"] + book["asks"]
    assert levels and all(level["price"] == "0.0" and float(level["size"]) > 0 for level in levels)


def test_price_fields_can_be_chosen(msim, call):
    healthy = chain_sides(call("GET", CHAIN, signed=False))
    msim.mutations.add(Mutation("zero_prices", endpoint="option_chain", fields=("markPrice",)))
    zeroed = chain_sides(call("GET", CHAIN, signed=False))
    assert all(s["markPrice"] == 0.0 for s in zeroed)
    assert [s["ask"] for s in zeroed] == [s["ask"] for s in healthy]


def test_corrupt_prices_multiplies_by_1000_by_default_or_sets_a_value(msim, call):
    symbol = a_symbol(call)
    msim.exchange.set_position(None, symbol, -0.2, 150.0)
    healthy = call("GET", FUTURES, signed=False)["data"][0]
    msim.mutations.add(Mutation("corrupt_prices", endpoint="futures_symbols"))
    corrupt = call("GET", FUTURES, signed=False)["data"][0]
    assert corrupt["indexPrice"] == pytest.approx(healthy["indexPrice"] * 1000)
    assert corrupt["markPrice"] == pytest.approx(healthy["markPrice"] * 1000)
    assert corrupt["symbol"] == "BTCUSD"

    msim.mutations.add(Mutation("corrupt_prices", endpoint="positions", value=-5.0))
    position = call("GET", POSITIONS)["data"][0]
    assert (position["markPrice"], position["avgPrice"], position["indexPrice"]) == (-5.0, -5.0, -5.0)
    assert position["qty"] == 0.2
    assert msim.mutations.counts == {"corrupt_prices": 2}


# --- freeze --------------------------------------------------------------------------------
def test_freeze_serves_the_first_answer_of_the_window_again_and_again(msim, call):
    start = msim.clock.now() + 10
    msim.mutations.add(Mutation("freeze", endpoint="futures_symbols", start=start, end=start + 120))
    before = call("GET", FUTURES, signed=False)["data"][0]["indexPrice"]
    msim.clock.advance(10)
    first = call("GET", FUTURES, signed=False)["data"][0]
    assert first["indexPrice"] != before                      # the window opened on a fresh answer
    first_single = call("GET", FUTURES, {"symbol": "BTCUSD"}, signed=False)["data"]
    for _ in range(3):
        msim.clock.advance(30)
        assert call("GET", FUTURES, signed=False)["data"][0] == first
        assert call("GET", FUTURES, {"symbol": "BTCUSD"}, signed=False)["data"] == first_single  # own params
    assert msim.market.index_price() != first["indexPrice"]  # the market moved on underneath
    msim.clock.advance(30)                                     # start + 120: the window is over
    assert call("GET", FUTURES, signed=False)["data"][0]["indexPrice"] == pytest.approx(
        msim.market.index_price(), abs=0.01)
    assert msim.mutations.counts == {"freeze": 6}


def test_freeze_hides_a_changed_position(msim, call):
    symbol = a_symbol(call)
    msim.exchange.set_position(None, symbol, -0.5, 120.0)
    mutation = msim.mutations.add(Mutation("freeze", endpoint="positions"))
    assert call("GET", POSITIONS)["data"][0]["qty"] == 0.5
    msim.exchange.set_position(None, symbol, 0, 0)
    assert call("GET", POSITIONS)["data"][0]["qty"] == 0.5    # stale, code 0
    msim.mutations.remove(mutation)
    assert call("GET", POSITIONS)["data"] == []


# --- selection -----------------------------------------------------------------------------
def test_endpoint_patterns_and_params_select_the_requests(msim, call):
    symbol = a_symbol(call)
    other = next(s["symbol"] for s in chain_sides(call("GET", CHAIN, signed=False)) if s["symbol"] != symbol)
    msim.mutations.add(Mutation("zero_prices", endpoint="option_*"))
    msim.mutations.add(Mutation("drop_fields", endpoint="orderbook", fields=("asks",),
                                params_match={"symbol": symbol}))
    assert all(s["markPrice"] == 0.0 for s in chain_sides(call("GET", CHAIN, signed=False)))
    assert call("GET", f"/open/option/detail/v1/{symbol}", signed=False)["data"]["markPrice"] == 0.0
    mine = call("GET", f"/open/option/order/orderbook/v1/{symbol}", signed=False)["data"]
    assert "asks" not in mine and float(mine["bids"][0]["price"]) > 0         # orderbook is not option_*
    assert "asks" in call("GET", f"/open/option/order/orderbook/v1/{other}", signed=False)["data"]
    assert call("GET", FUTURES, signed=False)["data"][0]["indexPrice"] > 0


def test_mutations_apply_in_the_order_they_were_added(msim, call):
    msim.mutations.add(Mutation("corrupt_prices", endpoint="futures_symbols", value=7.0))
    msim.mutations.add(Mutation("drop_fields", endpoint="futures_symbols", fields=("markPrice",)))
    entry = call("GET", FUTURES, signed=False)["data"][0]
    assert entry["indexPrice"] == 7.0 and "markPrice" not in entry
    assert msim.requests_for("futures_symbols")[-1].mutation == "corrupt_prices+drop_fields"


def test_errors_are_not_rewritten(msim, call):
    msim.mutations.add(Mutation("empty_list", endpoint="query_order"))
    envelope = call("GET", SINGLE, {"orderId": 123})
    assert envelope["code"] == NOT_FOUND
    assert msim.mutations.counts == {}


# --- composition with HTTP faults ----------------------------------------------------------
def test_an_http_fault_wins_over_a_mutation(msim, call, resting_bid_for):
    symbol = a_symbol(call)
    msim.exchange.set_position(None, symbol, -0.5, 120.0)
    msim.mutations.add(Mutation("empty_list", endpoint="positions"))
    msim.faults.add(FaultRule(mode="http_5xx", endpoint="positions", count=1))
    msim.faults.add(FaultRule(mode="lost_response", endpoint="positions", count=1))
    assert call("GET", POSITIONS, raw=True).status_code == 503
    with pytest.raises(requests.ConnectionError):
        call("GET", POSITIONS)
    assert msim.mutations.counts == {}                     # no body written, nothing mutated
    assert [r.mutation for r in msim.requests_for("positions")] == [None, None]
    assert call("GET", POSITIONS)["data"] == []            # the faults are spent: the mutation shows
    msim.faults.add(FaultRule(mode="latency", endpoint="positions", seconds=2.0, count=1))
    assert call("GET", POSITIONS)["data"] == []            # latency still answers, mutated
    record = msim.requests_for("positions")[-1]
    assert (record.fault, record.mutation) == ("latency", "empty_list")


# --- forget_orders -------------------------------------------------------------------------
def test_forget_orders_restarts_the_exchange_without_its_orders(msim, call, resting_bid_for):
    symbol = a_symbol(call)
    msim.exchange.set_position(None, symbol, -0.5, 120.0)
    order_id = place_resting(msim, call, resting_bid_for, 601)
    cash = msim.exchange.cash_of()
    mutation = msim.mutations.add(Mutation("forget_orders", start=msim.clock.now() + 5))
    assert mutation in msim.mutations.mutations

    msim.clock.advance(4.9)
    assert call("GET", SINGLE, {"orderId": order_id})["code"] == 0               # before start
    msim.clock.advance(0.1)
    by_id = call("GET", SINGLE, {"orderId": order_id})
    by_client = call("GET", SINGLE, {"clientOrderId": 601})
    assert (by_id["code"], by_id["msg"]) == (NOT_FOUND, "Order does not exist")
    assert by_client["code"] == NOT_FOUND
    assert call("GET", PENDING)["data"] == {"list": [], "pageTotal": 0, "total": 0}
    assert call("GET", ORDER_HISTORY)["data"]["list"] == []
    assert msim.exchange.orders() == []                                           # off the book too
    cancel = call("POST", "/open/option/order/cancel/v1", {"orderId": order_id})
    assert cancel["code"] == NOT_FOUND
    # Positions and balances survive.
    positions = call("GET", POSITIONS)["data"]
    assert [(p["symbol"], p["qty"], p["tradeSide"]) for p in positions] == [(symbol, 0.5, 2)]
    assert msim.exchange.cash_of() == cash
    # The event fired once and left the plan; the forgotten clientOrderId is accepted again.
    assert mutation.applied == 1 and msim.mutations.counts == {"forget_orders": 1}
    assert mutation not in msim.mutations.mutations
    # The exchange's own record still knows it (campaign invariants read it, the API never does).
    assert [(o["orderId"], o["clientOrderId"], o["state"]) for o in msim.exchange.forgotten_orders()] == [
        (order_id, 601, 0)]
    assert place_resting(msim, call, resting_bid_for, 601) > order_id


def test_forget_orders_happens_at_its_instant_even_without_requests(msim, call, resting_bid_for):
    order_id = place_resting(msim, call, resting_bid_for, 602)
    msim.mutations.add(Mutation("forget_orders", start=msim.clock.now() + 60))
    msim.clock.advance(600)
    assert call("GET", SINGLE, {"orderId": order_id})["code"] == NOT_FOUND


def test_forget_orders_keeps_the_fills_behind_surviving_positions(msim, call, resting_bid_for):
    order_id = place_resting(msim, call, resting_bid_for, 603)
    assert msim.exchange.force_fill(order_id, 0.1) == pytest.approx(0.1)
    symbol = msim.exchange.orders()[0]["symbol"]
    msim.mutations.add(Mutation("forget_orders"))
    assert call("GET", SINGLE, {"clientOrderId": 603})["code"] == NOT_FOUND
    fills = call("GET", TRADE_HISTORY)["data"]["list"]
    assert [(f["orderId"], f["qty"]) for f in fills] == [(order_id, 0.1)]      # by orderId (API.md 8.6)
    assert [f["clientOrderId"] for f in msim.exchange.fills()] == [603]     # the inspector still names it
    assert [(p["symbol"], p["qty"]) for p in call("GET", POSITIONS)["data"]] == [(symbol, 0.1)]


def test_a_forget_removed_before_its_start_never_happens(msim, call, resting_bid_for):
    order_id = place_resting(msim, call, resting_bid_for, 604)
    mutation = msim.mutations.add(Mutation("forget_orders", start=msim.clock.now() + 10))
    msim.mutations.remove(mutation)
    msim.clock.advance(20)
    assert call("GET", SINGLE, {"orderId": order_id})["code"] == 0
    assert msim.mutations.counts == {} and msim.mutations.mutations == []


# --- forget_all ----------------------------------------------------------------------------
def test_forget_all_restarts_with_a_fresh_account_and_the_same_keys(msim, call, resting_bid_for):
    symbol = a_symbol(call, "P")
    filled_id = place_resting(msim, call, resting_bid_for, 701)
    msim.exchange.force_fill(filled_id, 0.1)
    place_resting(msim, call, resting_bid_for, 702)
    msim.exchange.set_position(None, symbol, -0.5, 120.0)
    msim.exchange.metrics_of()  # settle everything up to now
    start = msim.clock.now() + 30
    msim.mutations.add(Mutation("forget_all", start=start))
    assert len(call("GET", POSITIONS)["data"]) == 2

    msim.clock.advance(30)
    assert call("GET", POSITIONS)["data"] == []
    assert call("GET", PENDING)["data"]["list"] == []
    assert call("GET", TRADE_HISTORY)["data"]["list"] == []
    assert call("GET", ORDER_HISTORY)["data"]["list"] == []
    assert call("GET", SINGLE, {"clientOrderId": 701})["code"] == NOT_FOUND
    summary = call("GET", SUMMARY)
    assert summary["code"] == 0                                   # the same API key still works
    assert float(summary["data"]["equity"]) == pytest.approx(100_000.0)
    assert msim.mutations.counts == {"forget_all": 1}
    forgotten = {o["clientOrderId"]: o for o in msim.exchange.forgotten_orders()}
    assert sorted(forgotten) == [701, 702] and forgotten[701]["fillQty"] == 0.1
    erased = [(f["orderId"], f["clientOrderId"]) for f in msim.exchange.forgotten_fills()]
    assert erased[0] == (filled_id, 701)           # (702 may have filled passively meanwhile)


# --- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    {"kind": "explode"},
    {"kind": "drop_fields"},                                      # needs fields
    {"kind": "drop_fields", "fields": "markPrice"},               # a string, not a sequence
    {"kind": "empty_list", "fields": ("markPrice",)},
    {"kind": "zero_prices", "value": 3.0},
    {"kind": "corrupt_prices", "value": 1.0, "factor": 2.0},
    {"kind": "corrupt_prices", "factor": float("nan")},
    {"kind": "empty_list", "start": 100.0, "end": 100.0},
    {"kind": "forget_orders", "start": 100.0, "end": 200.0},
    {"kind": "forget_all", "endpoint": "positions"},
])
def test_bad_mutations_are_refused(kwargs):
    with pytest.raises(ValueError):
        Mutation(**kwargs)


def test_clear_removes_rewrites_and_pending_events(msim, call, resting_bid_for):
    order_id = place_resting(msim, call, resting_bid_for, 801)
    msim.mutations.add(Mutation("empty_list", endpoint="pending_orders"))
    msim.mutations.add(Mutation("forget_orders", start=msim.clock.now() + 5))
    msim.mutations.clear()
    msim.clock.advance(10)
    assert [o["orderId"] for o in call("GET", PENDING)["data"]["list"]] == [order_id]
    assert msim.mutations.mutations == []
