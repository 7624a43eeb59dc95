"""Over-the-wire conformance of the order routes and of the order behaviour rows of API.md §13.

Shapes (API.md §8): create returns a bare int64, cancel the string "success", order
views carry ``fillQty`` (never ``executedQty``), pages carry ``list/pageTotal/total`` or
``hasNext/hasPre``. Behaviour (API.md §12, §13 10-16, 19): the 0 -> 2 -> 1 state
sequence, cancels through 3 (or 4/5 with latency) while fills still land, IOC/FOK,
post-only, reduce-only, validation codes, tick truncation, fees read back from the order
and 08:00 expiry settlement, all seen through HTTP exactly as a client sees them.

Most tests use a simulator without rate limits: the clock is frozen, so a burst of
calls inside one simulated second would otherwise be throttled (API.md §3.4).
"""
from __future__ import annotations

import math
from typing import Any

import pytest

from simulator.exchange import ExchangeConfig
from simulator.market import MarketConfig
from tests.simulator.wire_types import boolean, conforms, flag01, int64_id, integer, number, number_or_null, numeric_text, ok, present, text

CREATE = "/open/option/order/create/v1"
BATCH_CREATE = "/open/option/order/batchCreate/v1"
MODIFY = "/open/option/order/modify/v1"
CANCEL = "/open/option/order/cancel/v1"
BATCH_CANCEL = "/open/option/order/batchCancel/v1"
CANCEL_ALL = "/open/option/order/cancelOpenOrders/v1/BTCUSD"
CANCEL_BY_OPTION = "/open/option/order/batchCancelByOption/v1/{}"
QUERY = "/open/option/order/singleQuery/v1"
PENDING = "/open/option/order/pending/v1"
ORDER_HISTORY = "/open/option/order/history/v1"
TRADE_HISTORY = "/open/option/trade/history/v1"
EXERCISE_HISTORY = "/open/settle/exercise/history/v1"
POSITIONS = "/open/option/position/get/v1"
SUMMARY = "/open/account/summary/v1"
INSTRUMENTS = "/open/option/getInstruments/BTC"
CHAIN = "/open/option/get/v1/BTCUSD"
DETAIL = "/open/option/detail/v1/{}"
BOOK = "/open/option/order/orderbook/v1/{}"
FUTURES = "/open/futures/market/symbol/v1"
DELIVERY = "/open/option/get-delivery-prices/v1"
ESTIMATED = "/open/option/getEstimatedExpirationPrice/v1"

FEE_RATE = 0.0003
FEE_CAP = 0.125


# --- schemas from API.md §8 ---------------------------------------------------------------------
ORDER_FIELDS = {   # §8.4 singleQuery
    "orderId": int64_id, "clientOrderId": integer, "symbol": text, "displayName": text, "qty": number,
    "remainQty": number, "fillQty": number, "price": number, "avgPrice": number_or_null, "tradeSide": integer,
    "tradeType": integer, "createTime": integer, "updateTime": integer, "reduceOnly": flag01, "fee": number,
    "mmp": present, "state": integer,
}
PENDING_FIELDS = {   # §8.5, plus state and updateTime observed in production
    "id": int64_id, "orderId": int64_id, "clientOrderId": integer, "symbol": text, "displayName": text,
    "qty": number, "remainQty": number, "fillQty": number, "price": number, "avgPrice": number_or_null,
    "initMargin": number, "tradeSide": integer, "tradeType": integer, "createTime": integer,
    "reduceOnly": flag01, "indexPrice": number, "state": integer, "updateTime": integer,
}
HISTORY_FIELDS = {   # §8.6 order history
    "orderId": int64_id, "clientOrderId": integer, "symbol": text, "displayName": text, "qty": number,
    "fillQty": number, "price": number, "avgPrice": number_or_null, "fee": number, "rpnl": number,
    "tradeSide": integer, "tradeType": integer, "createTime": integer, "state": integer, "reduceOnly": flag01,
    "mmp": present,
}
FILL_FIELDS = {   # §8.6 fills
    "id": int64_id, "optionId": int64_id, "symbol": text, "displayName": text, "tradeSide": integer,
    "tradeType": integer, "price": number, "qty": number, "iv": number, "markPrice": number,
    "indexPrice": number, "orderId": int64_id, "tradeId": int64_id, "fee": number, "time": integer,
    "reduceOnly": flag01, "isTaker": flag01, "mmp": present,
}
EXERCISE_FIELDS = {   # §8.6 exercise/settlement
    "symbol": text, "time": integer, "qty": number, "tradeSide": integer, "strike": number,
    "exercisePrice": number, "openCashFlow": number, "settlementCashFlow": number, "netCashFlow": number,
    "fees": number,
}


# --- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture
def make_venue(sim_factory, signed_request_for):
    """``make_venue(**exchange_config)`` -> (simulator without rate limits, signed caller)."""

    def build(**exchange: Any):
        options: dict[str, Any] = {"rate_limits_enabled": False}
        if exchange:
            options["exchange"] = ExchangeConfig(**exchange)
        handle = sim_factory(**options)
        return handle, signed_request_for(handle)

    return build


@pytest.fixture
def venue(make_venue):
    return make_venue()


def query(call, order_id: int) -> dict:
    return ok(call("GET", QUERY, {"orderId": order_id}))


def top_of_book(call, symbol: str) -> tuple[float, float, float, float]:
    """(best bid, its size, best ask, its size) as numbers."""
    book = ok(call("GET", BOOK.format(symbol)))
    bid, ask = book["bids"][0], book["asks"][0]
    return float(bid["price"]), float(bid["size"]), float(ask["price"]), float(ask["size"])


def expiries(call) -> list[int]:
    return sorted({i["expirationTimestamp"] for i in ok(call("GET", INSTRUMENTS))})


def chain_sides(call, expiry: int) -> list[dict]:
    rows = ok(call("GET", CHAIN, {"endTime": expiry}))
    return [side for row in rows for side in (row["callOption"], row["putOption"])]


def atm_call(call, expiry: int) -> dict:
    """The chain side of the call nearest the index (liquid on both sides)."""
    index = index_price(call)
    calls = [s for s in chain_sides(call, expiry) if s["type"] == 1]
    return min(calls, key=lambda s: abs(s["strike"] - index))


def index_price(call) -> float:
    return ok(call("GET", FUTURES, {"symbol": "BTCUSD"}))["indexPrice"]


def pending(call) -> dict:
    return ok(call("GET", PENDING, {"pageSize": 500}))


# --- create, query, pending: shapes -------------------------------------------------------------------
def test_create_returns_a_bare_int64_and_single_query_has_the_8_4_fields(sim, signed_request, resting_bid):
    params = resting_bid(client_order_id=1767225600001, qty=0.1)
    order_id = ok(signed_request("POST", CREATE, params))
    assert int64_id(order_id) and len(str(order_id)) == 19
    view = query(signed_request, order_id)
    conforms(view, ORDER_FIELDS, "singleQuery")
    assert "executedQty" not in view                              # API.md §11 #2
    assert view["orderId"] == order_id and view["clientOrderId"] == 1767225600001
    assert view["state"] == 0 and view["fillQty"] == 0 and view["remainQty"] == 0.1 and view["qty"] == 0.1
    assert view["avgPrice"] in (0, None) and view["fee"] == 0
    assert view["symbol"] == params["symbol"] and view["price"] == params["price"]
    assert view["tradeSide"] == 1 and view["tradeType"] == 1 and view["reduceOnly"] == 0
    assert view["displayName"] == params["symbol"].replace("BTCUSD-", "BTC-")
    by_client = ok(signed_request("GET", QUERY, {"clientOrderId": 1767225600001}))
    assert by_client == view

    page = ok(signed_request("GET", PENDING))
    assert set(page) >= {"list", "pageTotal", "total"}
    assert integer(page["pageTotal"]) and integer(page["total"]) and page["total"] == 1
    conforms(page["list"][0], PENDING_FIELDS, "pending item")
    assert page["list"][0]["orderId"] == order_id and page["list"][0]["state"] == 0


def test_state_goes_0_then_2_then_1_and_every_view_agrees(venue, resting_bid_for):
    sim, call = venue
    params = resting_bid_for(sim, 501, 0.1)
    order_id = ok(call("POST", CREATE, params))
    price = params["price"]
    assert query(call, order_id)["state"] == 0

    sim.exchange.force_fill(order_id, 0.04)
    partial = query(call, order_id)
    assert partial["state"] == 2
    assert (partial["fillQty"], partial["remainQty"]) == (0.04, 0.06)
    assert partial["fillQty"] + partial["remainQty"] == pytest.approx(partial["qty"])
    assert partial["avgPrice"] == price
    [listed] = pending(call)["list"]
    assert listed["state"] == 2 and listed["fillQty"] == 0.04 and integer(listed["updateTime"])

    sim.exchange.force_fill(order_id, 0.06)
    filled = query(call, order_id)
    assert filled["state"] == 1 and filled["fillQty"] == 0.1 and filled["remainQty"] == 0
    assert pending(call) == {"list": [], "pageTotal": 0, "total": 0}

    history = ok(call("GET", ORDER_HISTORY, {"pageSize": 20}))
    assert boolean(history["hasNext"]) and boolean(history["hasPre"])
    [record] = history["list"]
    conforms(record, HISTORY_FIELDS, "order history item")
    assert record["orderId"] == order_id and record["state"] == 1 and record["fillQty"] == 0.1

    trades = ok(call("GET", TRADE_HISTORY, {"pageSize": 20}))
    assert boolean(trades["hasNext"]) and boolean(trades["hasPre"])
    assert len(trades["list"]) == 2
    index = index_price(call)
    for fill in trades["list"]:
        conforms(fill, FILL_FIELDS, "fill")
        assert fill["orderId"] == order_id and fill["isTaker"] == 0 and fill["price"] == price
        assert fill["fee"] == pytest.approx(min(fill["qty"] * index * FEE_RATE, fill["qty"] * price * FEE_CAP))
    assert filled["fee"] == pytest.approx(sum(f["fee"] for f in trades["list"]))   # cumulative

    [position] = ok(call("GET", POSITIONS))
    assert position["symbol"] == params["symbol"] and position["qty"] == 0.1 and position["tradeSide"] == 1
    assert position["avgPrice"] == price


def test_pending_pages_by_20_by_default_and_histories_page_by_cursor(venue, resting_bid_for):
    sim, call = venue
    ids = [ok(call("POST", CREATE, resting_bid_for(sim, 2000 + n, 0.01))) for n in range(23)]
    first = ok(call("GET", PENDING))                                 # no params: only the first 20
    assert (len(first["list"]), first["pageTotal"], first["total"]) == (20, 2, 23)
    second = ok(call("GET", PENDING, {"page": 2}))
    assert len(second["list"]) == 3
    assert {o["orderId"] for o in first["list"] + second["list"]} == set(ids)
    everything = pending(call)                                       # pageSize=500: one page
    assert (len(everything["list"]), everything["pageTotal"], everything["total"]) == (23, 1, 23)

    newest = ok(call("GET", ORDER_HISTORY, {"pageSize": 10}))
    assert [o["orderId"] for o in newest["list"]] == sorted(ids, reverse=True)[:10]
    assert newest["hasNext"] is True and newest["hasPre"] is False
    older = ok(call("GET", ORDER_HISTORY, {"pageSize": 10, "fromId": newest["list"][-1]["orderId"],
                                           "direction": "NEXT"}))
    assert [o["orderId"] for o in older["list"]] == sorted(ids, reverse=True)[10:20]
    assert older["hasNext"] is True and older["hasPre"] is True


def test_a_read_only_key_cannot_trade(venue, resting_bid_for):
    sim, call = venue
    viewer = sim.exchange.add_account("viewer", read_only=True)
    as_viewer = {"key": viewer.api_key, "secret": viewer.api_secret}
    assert call("POST", CREATE, resting_bid_for(sim, 1, 0.1), **as_viewer)["code"] == 7001
    assert ok(call("GET", PENDING, **as_viewer))["total"] == 0       # but it can read


# --- cancel -------------------------------------------------------------------------------------------
def test_cancel_says_success_then_11101_and_a_filled_order_answers_11102(venue, resting_bid_for):
    sim, call = venue
    first = ok(call("POST", CREATE, resting_bid_for(sim, 601, 0.1)))
    assert call("POST", CANCEL, {"orderId": first}) == {"code": 0, "msg": "Success", "i18nArgs": None,
                                                         "data": "success"}
    assert query(call, first)["state"] == 3
    assert call("POST", CANCEL, {"orderId": first})["code"] == 11101

    second = ok(call("POST", CREATE, resting_bid_for(sim, 602, 0.1)))
    sim.exchange.force_fill(second, 0.1)
    assert call("POST", CANCEL, {"clientOrderId": 602})["code"] == 11102
    assert query(call, second)["state"] == 1

    third = ok(call("POST", CREATE, resting_bid_for(sim, 603, 0.1)))
    sim.exchange.force_fill(third, 0.03)
    assert ok(call("POST", CANCEL, {"clientOrderId": 603})) == "success"
    cancelled = query(call, third)
    assert cancelled["state"] == 3 and cancelled["fillQty"] == 0.03 and cancelled["remainQty"] == 0.07


def test_unknown_ids_are_10584_and_no_id_is_10575(venue):
    _sim, call = venue
    unknown = 1983131927527428096
    assert call("GET", QUERY, {"orderId": unknown})["code"] == 10584
    assert call("GET", QUERY, {"clientOrderId": 77})["code"] == 10584
    assert call("POST", CANCEL, {"orderId": unknown})["code"] == 10584
    assert call("GET", QUERY)["code"] == 10575
    assert call("POST", CANCEL, {})["code"] == 10575


def test_cancel_latency_goes_through_4_and_5_while_fills_still_land(make_venue, resting_bid_for, sim_clock):
    sim, call = make_venue(cancel_latency_seconds=2.0, passive_fill_prob_per_min_at_touch=0.0)
    params = resting_bid_for(sim, 701, 0.1)
    order_id = ok(call("POST", CREATE, params))
    assert ok(call("POST", CANCEL, {"orderId": order_id})) == "success"
    assert query(call, order_id)["state"] == 4                      # PRE_CANCEL: not final
    assert pending(call)["list"][0]["state"] == 4

    sim.exchange.force_fill(order_id, 0.03)                          # a fill lands during the cancel
    view = query(call, order_id)
    assert view["state"] == 4 and view["fillQty"] == 0.03

    sim_clock.advance(1.0)
    assert query(call, order_id)["state"] == 5                      # CANCELING: still not final
    assert ok(call("POST", CANCEL, {"orderId": order_id})) == "success"   # repeated cancel: no error
    sim.exchange.force_fill(order_id, 0.02)
    assert query(call, order_id)["fillQty"] == 0.05

    sim_clock.advance(1.0)
    final = query(call, order_id)
    assert final["state"] == 3 and final["fillQty"] == 0.05 and final["remainQty"] == 0.05
    assert final["avgPrice"] == params["price"]
    assert ok(call("GET", POSITIONS))[0]["qty"] == 0.05
    assert pending(call)["total"] == 0
    assert call("POST", CANCEL, {"orderId": order_id})["code"] == 11101


def test_a_fill_delivered_between_poll_and_cancel_turns_the_cancel_into_11102(venue, resting_bid_for):
    sim, call = venue
    order_id = ok(call("POST", CREATE, resting_bid_for(sim, 801, 0.1)))
    assert query(call, order_id)["state"] == 0                      # the poll
    sim.exchange.faults.fill_on_next_cancel_qty = 0.1               # the fill lands before the cancel
    assert call("POST", CANCEL, {"orderId": order_id})["code"] == 11102
    assert query(call, order_id)["state"] == 1


# --- matching: IOC, FOK, post-only -------------------------------------------------------------------
def test_ioc_fills_what_crosses_and_cancels_the_rest(venue):
    _sim, call = venue
    symbol = atm_call(call, expiries(call)[1])["symbol"]
    _bid, _bid_size, ask, ask_size = top_of_book(call, symbol)
    qty = round(ask_size + 0.2, 2)
    order_id = ok(call("POST", CREATE, {"symbol": symbol, "qty": qty, "tradeSide": 1, "tradeType": 1,
                                        "price": ask, "timeInForce": "IOC"}))
    view = query(call, order_id)
    assert view["state"] == 3 and view["fillQty"] == ask_size and view["avgPrice"] == ask
    assert view["fillQty"] + view["remainQty"] == pytest.approx(qty)
    assert pending(call)["total"] == 0
    assert ok(call("GET", TRADE_HISTORY))["list"][0]["isTaker"] == 1


def test_a_resting_remainder_does_not_refill_from_the_depth_it_just_took(sim_factory, signed_request_for,
                                                                          sim_clock):
    """A level a taker consumed stays consumed for the passive engine too (API.md §13 #11).

    Flat index (the book only changes with its 5 s refresh bucket) and no touch fills: the
    remainder of a partly filled buy at the old best ask may fill only when the visible
    book trades through it, never from the 4.26 BTC it already took.
    """
    venue = sim_factory(rate_limits_enabled=False, market=MarketConfig(seed=7, annual_vol=0.0),
                        exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0))
    call = signed_request_for(venue)
    symbol = atm_call(call, expiries(call)[1])["symbol"]
    _bid, _bid_size, ask, ask_size = top_of_book(call, symbol)
    order_id = ok(call("POST", CREATE, {"symbol": symbol, "qty": round(ask_size + 0.1, 2), "tradeSide": 1,
                                        "tradeType": 1, "price": ask}))
    assert query(call, order_id)["fillQty"] == ask_size
    for _second in range(4):                                          # inside the same book bucket
        sim_clock.advance(1.0)
        book = ok(call("GET", BOOK.format(symbol)))
        visible_asks = [float(level["price"]) for level in book["asks"]]
        view = query(call, order_id)
        assert min(visible_asks) > ask                                # nobody offers at our bid ...
        assert view["state"] == 2 and view["fillQty"] == ask_size     # ... so nothing more fills


def test_fok_is_all_or_nothing(venue):
    _sim, call = venue
    symbol = atm_call(call, expiries(call)[1])["symbol"]
    _bid, _bid_size, ask, ask_size = top_of_book(call, symbol)
    killed = ok(call("POST", CREATE, {"symbol": symbol, "qty": round(ask_size + 0.01, 2), "tradeSide": 1,
                                      "tradeType": 1, "price": ask, "timeInForce": "FOK"}))
    view = query(call, killed)
    assert view["state"] == 3 and view["fillQty"] == 0
    assert ok(call("GET", POSITIONS)) == []
    filled = ok(call("POST", CREATE, {"symbol": symbol, "qty": ask_size, "tradeSide": 1, "tradeType": 1,
                                      "price": ask, "timeInForce": "FOK"}))
    view = query(call, filled)
    assert view["state"] == 1 and view["fillQty"] == ask_size


def test_post_only_that_would_cross_is_10001_and_a_passive_one_rests(venue):
    _sim, call = venue
    symbol = atm_call(call, expiries(call)[1])["symbol"]
    bid, _bid_size, ask, _ask_size = top_of_book(call, symbol)
    crossing = call("POST", CREATE, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 3, "price": ask})
    assert crossing["code"] == 10001 and crossing["data"] is None
    assert pending(call)["total"] == 0
    resting = ok(call("POST", CREATE, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 3,
                                       "price": bid}))
    view = query(call, resting)
    assert view["state"] == 0 and view["tradeType"] == 3 and view["fillQty"] == 0


# --- reduce-only -----------------------------------------------------------------------------------
def test_reduce_only_never_grows_or_flips_a_position(venue):
    _sim, call = venue
    symbol = atm_call(call, expiries(call)[1])["symbol"]
    bid, _bid_size, ask, _ask_size = top_of_book(call, symbol)
    sell = {"symbol": symbol, "qty": 0.3, "tradeSide": 2, "tradeType": 1, "price": bid, "reduceOnly": 1}
    assert call("POST", CREATE, sell)["code"] == 10536              # nothing to reduce
    ok(call("POST", CREATE, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": ask,
                             "timeInForce": "IOC"}))
    grow = {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": bid, "reduceOnly": 1}
    assert call("POST", CREATE, grow)["code"] == 10536              # would grow the long
    closing = ok(call("POST", CREATE, sell))                        # 0.3 against a 0.1 long, crossing
    view = query(call, closing)
    assert view["fillQty"] == 0.1 and view["state"] == 3 and view["reduceOnly"] == 1
    assert ok(call("GET", POSITIONS)) == []                         # flat, never short


def test_a_resting_reduce_only_order_whose_position_went_away_becomes_invalid(venue):
    sim, call = venue
    symbol = atm_call(call, expiries(call)[1])["symbol"]
    bid, _bid_size, ask, _ask_size = top_of_book(call, symbol)
    ok(call("POST", CREATE, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": ask,
                             "timeInForce": "IOC"}))
    resting = ok(call("POST", CREATE, {"symbol": symbol, "qty": 0.1, "tradeSide": 2, "tradeType": 1,
                                       "price": ask + 50, "reduceOnly": 1}))
    ok(call("POST", CREATE, {"symbol": symbol, "qty": 0.1, "tradeSide": 2, "tradeType": 1, "price": bid,
                             "timeInForce": "IOC"}))                  # the long is closed elsewhere
    assert ok(call("GET", POSITIONS)) == []
    sim.exchange.force_fill(resting, 0.1)                             # the market reaches the offer
    view = query(call, resting)
    assert view["state"] == 6 and view["fillQty"] == 0               # INVALID: rejected after acceptance
    assert ok(call("GET", POSITIONS)) == []                          # and no short was opened


# --- validation codes -----------------------------------------------------------------------------------
def _band(detail: dict, tick: float = 1.0) -> tuple[float, float]:
    """The price band of API.md §4 from an option's detail."""
    spot = detail["underlyingPrice"]
    widen = max(1.0, 4 * abs(detail["delta"]))
    return max(tick, detail["markPrice"] - 0.01 * spot * widen), detail["markPrice"] + 0.05 * spot * widen


def _above_band(call, params):
    _low, high = _band(ok(call("GET", DETAIL.format(params["symbol"]))))
    return {**params, "price": math.floor(high) + 50}


def _below_band(call, params):
    deepest = max((s for s in chain_sides(call, expiries(call)[1]) if s["type"] == 1), key=lambda s: s["delta"])
    low, _high = _band(ok(call("GET", DETAIL.format(deepest["symbol"]))))
    assert low > 200, "the deepest ITM call should have a band floor well above one tick"
    return {**params, "symbol": deepest["symbol"], "price": math.floor(low) - 100}


VALIDATION_CASES = {
    "qty below the lot": (lambda call, p: {**p, "qty": 0.005}, 10558),
    "qty off the lot": (lambda call, p: {**p, "qty": 0.015}, 10558),
    "qty zero": (lambda call, p: {**p, "qty": 0}, 10558),
    "qty above the max": (lambda call, p: {**p, "qty": 1000.01}, 10534),
    "unknown symbol": (lambda call, p: {**p, "symbol": "BTCUSD-3MAR26-1-C"}, 10574),
    "price above the band": (_above_band, 10531),
    "price below the band": (_below_band, 10532),
    "insufficient margin": (lambda call, p: {**p, "qty": 1000}, 10529),
    "market order": (lambda call, p: {**p, "tradeType": 2}, 10004),
    "unknown timeInForce": (lambda call, p: {**p, "timeInForce": "GTD"}, 12012),
    "missing price": (lambda call, p: {k: v for k, v in p.items() if k != "price"}, 10530),
    "non-positive price": (lambda call, p: {**p, "price": -5}, 40035),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_create_validation_codes(venue, resting_bid_for, case):
    sim, call = venue
    change, code = VALIDATION_CASES[case]
    params = change(call, resting_bid_for(sim, 901, 0.1))
    envelope = call("POST", CREATE, params)
    assert envelope["code"] == code and envelope["data"] is None, envelope
    assert pending(call)["total"] == 0 and ok(call("GET", ORDER_HISTORY))["list"] == []


def test_duplicate_client_order_id_is_10577_only_among_open_orders(venue, resting_bid_for):
    sim, call = venue
    params = resting_bid_for(sim, 4242, 0.1)
    first = ok(call("POST", CREATE, params))
    assert call("POST", CREATE, params)["code"] == 10577
    ok(call("POST", CANCEL, {"orderId": first}))
    second = ok(call("POST", CREATE, params))                      # the id is free again
    assert second != first and ok(call("GET", QUERY, {"clientOrderId": 4242}))["orderId"] == second


def test_open_order_cap_is_10535(make_venue, resting_bid_for):
    sim, call = make_venue(max_open_orders=3)
    for client_id in (1, 2, 3):
        ok(call("POST", CREATE, resting_bid_for(sim, client_id, 0.01)))
    assert call("POST", CREATE, resting_bid_for(sim, 4, 0.01))["code"] == 10535
    assert pending(call)["total"] == 3


def test_trading_halts_15_minutes_before_expiry_with_10620(venue, sim_clock):
    _sim, call = venue
    daily, weekly = expiries(call)[0], expiries(call)[1]
    sim_clock.advance(104 * 60)                                      # 07:44 UTC, daily expires 08:00
    assert all(i["isActive"] for i in ok(call("GET", INSTRUMENTS)))
    sim_clock.advance(2 * 60)                                        # 07:46: inside the halt
    instruments = ok(call("GET", INSTRUMENTS))
    assert not any(i["isActive"] for i in instruments if i["expirationTimestamp"] == daily)
    assert all(i["isActive"] for i in instruments if i["expirationTimestamp"] != daily)
    for expiry, code in ((daily, 10620), (weekly, 0)):
        side = atm_call(call, expiry)
        bid = top_of_book(call, side["symbol"])[0]
        envelope = call("POST", CREATE, {"symbol": side["symbol"], "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                         "price": bid})
        assert envelope["code"] == code, envelope


# --- price and fee arithmetic ----------------------------------------------------------------------------
def test_off_tick_price_is_truncated_to_the_tick(venue):
    _sim, call = venue
    symbol = atm_call(call, expiries(call)[1])["symbol"]
    order_id = ok(call("POST", CREATE, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                        "price": 9.5}))
    assert query(call, order_id)["price"] == 9.0                   # $9.50 stored as $9.00 (API.md §11 #14)
    assert pending(call)["list"][0]["price"] == 9.0
    book = ok(call("GET", BOOK.format(symbol)))
    assert {"price": "9", "size": "0.1"} in book["bids"]


def test_fee_is_the_smaller_of_index_rate_and_premium_cap(venue):
    _sim, call = venue
    expiry = expiries(call)[1]
    index = index_price(call)
    dear = atm_call(call, expiry)
    cheap = min((s for s in chain_sides(call, expiry) if 5 <= s["ask"] <= 150 and s["askSize"] >= 0.1),
                key=lambda s: s["ask"])
    branches = []
    for side in (dear, cheap):
        order_id = ok(call("POST", CREATE, {"symbol": side["symbol"], "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                            "price": side["ask"], "timeInForce": "IOC"}))
        view = query(call, order_id)
        assert view["state"] == 1 and view["avgPrice"] == side["ask"]
        by_index, by_premium = 0.1 * index * FEE_RATE, 0.1 * view["avgPrice"] * FEE_CAP
        assert view["fee"] == pytest.approx(min(by_index, by_premium), abs=1e-8)
        branches.append(by_index < by_premium)
    assert branches == [True, False]                                 # both branches of the min exercised


# --- the other order routes ---------------------------------------------------------------------------------
def test_batch_create_modify_and_the_bulk_cancels(venue, resting_bid_for):
    sim, call = venue
    good = resting_bid_for(sim, 1001, 0.1)
    items = ok(call("POST", BATCH_CREATE, {"orders": [{**good, "timeInForce": "GTC"},
                                                      {**good, "clientOrderId": 1002, "qty": 0.005,
                                                       "timeInForce": "GTC"}]}))
    assert [set(item) for item in items] == [{"code", "msg", "i18nArgs", "data"}] * 2
    assert items[0]["code"] == 0 and int64_id(items[0]["data"])
    assert items[1]["code"] == 10558 and items[1]["data"] is None
    first = items[0]["data"]

    new_price = good["price"] - 5
    assert ok(call("POST", MODIFY, {"symbol": good["symbol"], "orderId": first, "price": new_price})) == first
    assert query(call, first)["price"] == new_price

    second = ok(call("POST", CREATE, {**good, "clientOrderId": 1003}))
    unknown = 1983131927527428096
    results = ok(call("POST", BATCH_CANCEL, {"orderIdList": [first, unknown]}))
    for item in results:
        conforms(item, {"clOrdId": present, "ordId": present, "ts": integer, "scode": flag01, "smsg": text},
                 "batchCancel item")
    assert [(r["ordId"], r["scode"]) for r in results] == [(first, 0), (unknown, 1)]
    assert results[0]["clOrdId"] == 1001 and query(call, first)["state"] == 3

    assert ok(call("GET", CANCEL_BY_OPTION.format(good["symbol"]))) is None
    assert query(call, second)["state"] == 3
    third = ok(call("POST", CREATE, {**good, "clientOrderId": 1004}))
    assert ok(call("GET", CANCEL_ALL)) is None
    assert query(call, third)["state"] == 3 and pending(call)["total"] == 0


# --- expiry settlement over HTTP -----------------------------------------------------------------------------
def test_expiry_at_0800_settles_positions_records_exercise_and_kills_orders(make_venue, sim_clock):
    _sim, call = make_venue(passive_fill_prob_per_min_at_touch=0.0)
    daily = expiries(call)[0]
    side = atm_call(call, daily)
    symbol, strike = side["symbol"], side["strike"]
    _bid, _bid_size, ask, ask_size = top_of_book(call, symbol)
    qty = min(0.2, ask_size)
    ok(call("POST", CREATE, {"symbol": symbol, "qty": qty, "tradeSide": 1, "tradeType": 1, "price": ask,
                             "timeInForce": "IOC"}))
    resting = ok(call("POST", CREATE, {"symbol": symbol, "qty": 0.1, "tradeSide": 2, "tradeType": 1,
                                       "price": side["markPrice"] + 3000}))   # an offer nobody reaches in 2 h
    assert [p["symbol"] for p in ok(call("GET", POSITIONS))] == [symbol]
    assert ok(call("GET", EXERCISE_HISTORY))["list"] == []
    cash_before = float(ok(call("GET", SUMMARY))["accounts"][0]["cashBalanceAmount"])

    sim_clock.set_time(daily / 1000 + 60)                            # 08:01 UTC
    assert ok(call("GET", POSITIONS)) == []
    assert query(call, resting)["state"] == 10                       # CANCEL_BY_EXERCISE
    exercises = ok(call("GET", EXERCISE_HISTORY))
    assert exercises["hasNext"] is False and "hasPrev" in exercises
    [record] = exercises["list"]
    conforms(record, EXERCISE_FIELDS, "exercise record")
    assert record["symbol"] == symbol and record["time"] == daily
    assert record["qty"] == qty and record["tradeSide"] == 1 and record["strike"] == strike
    settle = record["exercisePrice"]
    assert record["settlementCashFlow"] == pytest.approx(max(0.0, settle - strike) * qty, abs=1e-6)
    assert record["openCashFlow"] == pytest.approx(-ask * qty)
    assert record["fees"] == 0                                       # dailies pay no delivery fee
    cash_after = float(ok(call("GET", SUMMARY))["accounts"][0]["cashBalanceAmount"])
    assert cash_after == pytest.approx(cash_before + record["netCashFlow"], abs=1e-5)

    delivery = ok(call("GET", DELIVERY, {"symbol": "BTCUSD"}))
    assert delivery["records_total"] == 1
    [price] = delivery["list"]
    assert price["date"] == daily and numeric_text(price["delivery_price"])
    assert float(price["delivery_price"]) == pytest.approx(settle, abs=0.005)
    [estimate] = ok(call("GET", ESTIMATED, {"index": "BTCUSD", "endTime": daily}))
    assert estimate["estimatedExpirationPrice"] == price["delivery_price"]

    assert symbol not in {i["symbolName"] for i in ok(call("GET", INSTRUMENTS))}
    assert call("GET", DETAIL.format(symbol))["code"] == 10574
    assert call("POST", CREATE, {"symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1,
                                 "price": 10})["code"] == 10574
    assert [o["state"] for o in ok(call("GET", ORDER_HISTORY))["list"]] == [10, 1]
