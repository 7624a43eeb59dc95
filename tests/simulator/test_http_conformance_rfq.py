"""Over-the-wire conformance of the RFQ (block trade) taker routes (API.md §10, §11 #4-7, §12 #2-3, §13 21-24).

What a client must see over HTTP: ids and numbers as JSON strings on every RFQ payload,
request legs with ``qty`` and quote legs with ``quantity``, quote legs carrying the
MAKER's side and accept legs the TAKER's side, ``data: true`` on cancel, 50014 for a
quote that can no longer be accepted, 10001 for a single-leg SELL or a notional below
$50k, and a 404 (not an envelope) from ``rfqList`` for a taker-only key.
"""
from __future__ import annotations

import math

import pytest
from tests.simulator.wire_types import array, conforms, id_text, integer, numeric_text, ok, side_text, text

RFQ_CREATE = "/open/option/blocktrade/request/create/v1"
RFQ_QUOTES = "/open/option/blocktrade/request/getQuotesReceived/v1"
RFQ_ACCEPT = "/open/option/blocktrade/request/accept/v1"
RFQ_CANCEL = "/open/option/blocktrade/request/cancel/v1"
RFQ_LIST = "/open/option/blocktrade/rfqList/v1"
BLOCK_ORDERS = "/open/option/blocktrade/orderList/v1"
BLOCK_DETAIL = "/open/option/blocktrade/trade-detail/private/v1"
INSTRUMENTS = "/open/option/getInstruments/BTC"
FUTURES = "/open/futures/market/symbol/v1"
BOOK = "/open/option/order/orderbook/v1/{}"
QUERY = "/open/option/order/singleQuery/v1"
POSITIONS = "/open/option/position/get/v1"
TRADE_HISTORY = "/open/option/trade/history/v1"

QUOTE_WAIT_S = 6.0           # makers answer 2-5 s after the request (simulator default)
RFQ_LIFETIME_MS = 3_600_000  # API.md §12 #13 defaults
QUOTE_VALIDITY_MS = 300_000


RFQ_FIELDS = {"requestId": id_text, "createTime": integer, "expiryTime": integer, "legs": array,
              "state": text}
RFQ_LEG_FIELDS = {"instrumentName": text, "qty": numeric_text, "side": side_text}
QUOTE_FIELDS = {"quoteId": id_text, "requestId": id_text, "userId": id_text, "state": text, "createTime": integer,
                "updateTime": integer, "expiryTime": integer}
QUOTE_LEG_FIELDS = {"instrumentName": text, "side": side_text, "price": numeric_text, "quantity": numeric_text}
ACCEPT_FIELDS = {"blockTradeId": id_text, "requestId": id_text, "quoteId": id_text, "role": text}
ACCEPT_LEG_FIELDS = {
    "instrumentName": text, "baseToken": text, "quoteToken": text, "side": side_text, "price": numeric_text,
    "quantity": numeric_text, "iv": numeric_text, "markPrice": numeric_text, "indexPrice": numeric_text,
    "orderId": id_text, "tradeId": id_text, "fee": numeric_text, "createTime": integer, "profit": numeric_text,
}
RFQ_LIST_ITEM_FIELDS = {"requestId": id_text, "state": text, "role": text, "createTime": integer,
                        "expiryTime": integer, "updateTime": integer}


# --- helpers ----------------------------------------------------------------------------------------
def strikes_of(call) -> dict[tuple[float, str], str]:
    """(strike, C/P) -> symbol on the second expiry (the first may be close to its halt)."""
    instruments = ok(call("GET", INSTRUMENTS))
    expiry = sorted({i["expirationTimestamp"] for i in instruments})[1]
    return {(i["strike"], i["symbolName"][-1]): i["symbolName"] for i in instruments
            if i["expirationTimestamp"] == expiry}


def nearest(call, target: float, kind: str) -> tuple[str, float]:
    table = strikes_of(call)
    strike = min((s for s, k in table if k == kind), key=lambda s: abs(s - target))
    return table[(strike, kind)], strike


def strangle_legs(call) -> list[dict]:
    """A long strangle of 0.5 BTC a leg: notional about 0.5 x (1.05 S + 0.95 S) = S, above $50k."""
    index = ok(call("GET", FUTURES, {"symbol": "BTCUSD"}))["indexPrice"]
    call_symbol, _ = nearest(call, index * 1.05, "C")
    put_symbol, _ = nearest(call, index * 0.95, "P")
    return [{"instrumentName": call_symbol, "side": "BUY", "qty": "0.5"},
            {"instrumentName": put_symbol, "side": "BUY", "qty": "0.5"}]


def quotes_after_wait(call, sim_clock, request_id: str) -> list[dict]:
    sim_clock.advance(QUOTE_WAIT_S)
    quotes = ok(call("GET", RFQ_QUOTES, {"requestId": request_id}))
    assert quotes, "the simulated makers should have quoted by now"
    return quotes


def all_legs(quote: dict, side: str) -> bool:
    return all(leg["side"] == side for leg in quote["legs"])


# --- create and quotes -------------------------------------------------------------------------------
def test_create_answers_an_active_rfq_with_string_ids_and_string_qty(sim, signed_request, sim_clock):
    legs = strangle_legs(signed_request)
    rfq = ok(signed_request("POST", RFQ_CREATE, {"legs": legs}))
    conforms(rfq, RFQ_FIELDS, "rfq")
    assert rfq["state"] == "ACTIVE" and rfq["createTime"] == sim_clock.now_ms()
    assert rfq["expiryTime"] - rfq["createTime"] == RFQ_LIFETIME_MS
    for leg in rfq["legs"]:
        conforms(leg, RFQ_LEG_FIELDS, "rfq leg")
    assert [(leg["instrumentName"], leg["side"], float(leg["qty"])) for leg in rfq["legs"]] == \
        [(leg["instrumentName"], leg["side"], 0.5) for leg in legs]
    # Quotes take a few seconds: none at once.
    assert ok(signed_request("GET", RFQ_QUOTES, {"requestId": rfq["requestId"]})) == []


def test_quotes_carry_maker_side_legs_in_both_directions(sim, signed_request, sim_clock):
    legs = strangle_legs(signed_request)
    request_id = ok(signed_request("POST", RFQ_CREATE, {"legs": legs}))["requestId"]
    quotes = quotes_after_wait(signed_request, sim_clock, request_id)
    wanted = {leg["instrumentName"] for leg in legs}
    for quote in quotes:
        conforms(quote, QUOTE_FIELDS, "quote")
        assert quote["requestId"] == request_id and quote["state"] == "OPEN"
        assert quote["expiryTime"] - quote["createTime"] == QUOTE_VALIDITY_MS
        assert {leg["instrumentName"] for leg in quote["legs"]} == wanted
        for leg in quote["legs"]:
            conforms(leg, QUOTE_LEG_FIELDS, "quote leg")
            assert "qty" not in leg and float(leg["quantity"]) == 0.5 and float(leg["price"]) > 0
    # Maker SELL on every leg = the taker gets the long strangle it asked for; all-BUY = the mirror.
    as_asked = [q for q in quotes if all_legs(q, "SELL")]
    mirrored = [q for q in quotes if all_legs(q, "BUY")]
    assert as_asked and mirrored and len(as_asked) + len(mirrored) == len(quotes)
    # Prices sit around the screen: a maker selling is near the asks, a maker buying near the bids.
    for quote in as_asked + mirrored:
        touch = "asks" if all_legs(quote, "SELL") else "bids"
        screen = sum(0.5 * float(ok(signed_request("GET", BOOK.format(leg["instrumentName"])))[touch][0]["price"])
                     for leg in quote["legs"])
        cost = sum(float(leg["price"]) * float(leg["quantity"]) for leg in quote["legs"])
        assert cost == pytest.approx(screen, rel=0.10)
    # Without requestId every quote on the account's requests is listed.
    assert len(ok(signed_request("GET", RFQ_QUOTES))) == len(quotes)


# --- accept ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", ["form", "json"])
def test_accept_by_form_or_json_fills_taker_side_legs_as_strings(sim, signed_request, sim_clock, body):
    legs = strangle_legs(signed_request)
    request_id = ok(signed_request("POST", RFQ_CREATE, {"legs": legs}))["requestId"]
    quotes = quotes_after_wait(signed_request, sim_clock, request_id)
    quote = next(q for q in quotes if all_legs(q, "SELL"))
    quoted = {leg["instrumentName"]: leg for leg in quote["legs"]}

    fill = ok(signed_request("POST", RFQ_ACCEPT, {"requestId": request_id, "quoteId": quote["quoteId"]}, body=body))
    conforms(fill, ACCEPT_FIELDS, "accept")
    assert "userId" in fill and fill["role"] == "TAKER"
    assert fill["requestId"] == request_id and fill["quoteId"] == quote["quoteId"]
    by_symbol = {leg["instrumentName"]: leg for leg in fill["legs"]}
    assert set(by_symbol) == set(quoted)
    for symbol, leg in by_symbol.items():
        conforms(leg, ACCEPT_LEG_FIELDS, "accept leg")
        assert leg["side"] == "BUY"                                  # the taker's side, not the maker's SELL
        assert leg["price"] == quoted[symbol]["price"] and leg["quantity"] == quoted[symbol]["quantity"]
        assert leg["createTime"] == sim_clock.now_ms()
        qty, price, index = float(leg["quantity"]), float(leg["price"]), float(leg["indexPrice"])
        assert float(leg["fee"]) == pytest.approx(min(qty * index * 0.0003, qty * price * 0.125), rel=1e-6)

        order = ok(signed_request("GET", QUERY, {"orderId": int(leg["orderId"])}))
        assert order["tradeType"] == 14 and order["state"] == 1 and order["tradeSide"] == 1
        assert order["price"] == float(leg["markPrice"])            # price = the mark at RFQ time
        assert order["avgPrice"] == price                            # avgPrice = the actual fill
        assert order["fillQty"] == qty

    positions = {p["symbol"]: p for p in ok(signed_request("GET", POSITIONS))}
    assert set(positions) == set(quoted)
    assert all(p["qty"] == 0.5 and p["tradeSide"] == 1 for p in positions.values())
    fills = ok(signed_request("GET", TRADE_HISTORY))["list"]
    assert sorted(f["tradeId"] for f in fills) == sorted(int(leg["tradeId"]) for leg in fill["legs"])
    assert all(f["tradeType"] == 14 and f["isTaker"] == 1 for f in fills)

    states = {q["quoteId"]: q["state"] for q in ok(signed_request("GET", RFQ_QUOTES, {"requestId": request_id}))}
    assert states.pop(quote["quoteId"]) == "FILLED" and set(states.values()) == {"CANCELLED"}
    other = next(q for q in quotes if q["quoteId"] != quote["quoteId"])
    again = signed_request("POST", RFQ_ACCEPT, {"requestId": request_id, "quoteId": other["quoteId"]}, body=body)
    assert again["code"] == 50014 and again["data"] is None
    assert signed_request("POST", RFQ_CANCEL, {"requestId": request_id}, body=body)["code"] == 10001

    for path in (BLOCK_ORDERS, BLOCK_DETAIL):
        page = ok(signed_request("GET", path))
        assert isinstance(page["hasNext"], bool) and isinstance(page["hasPre"], bool)
        [trade] = page["list"]
        assert trade["blockTradeId"] == fill["blockTradeId"] and id_text(trade["blockTradeId"])
        assert trade["role"] == "TAKER"
        for leg in trade["legs"]:
            conforms(leg, ACCEPT_LEG_FIELDS, f"{path} leg")


def test_an_expired_quote_is_50014_and_nothing_trades(sim, signed_request, sim_clock):
    request_id = ok(signed_request("POST", RFQ_CREATE, {"legs": strangle_legs(signed_request)}))["requestId"]
    quote = quotes_after_wait(signed_request, sim_clock, request_id)[0]
    sim_clock.set_time(quote["expiryTime"] / 1000 + 1)
    refused = signed_request("POST", RFQ_ACCEPT, {"requestId": request_id, "quoteId": quote["quoteId"]},
                             body="form")
    assert refused["code"] == 50014 and refused["data"] is None
    assert ok(signed_request("GET", POSITIONS)) == []
    states = {q["quoteId"]: q["state"] for q in ok(signed_request("GET", RFQ_QUOTES, {"requestId": request_id}))}
    assert states[quote["quoteId"]] == "EXPIRED"


# --- cancel and rfqList -------------------------------------------------------------------------------------
def test_cancel_answers_true_and_closes_every_quote(sim, signed_request, sim_clock):
    request_id = ok(signed_request("POST", RFQ_CREATE, {"legs": strangle_legs(signed_request)}))["requestId"]
    quotes = quotes_after_wait(signed_request, sim_clock, request_id)
    envelope = signed_request("POST", RFQ_CANCEL, {"requestId": request_id}, body="form")
    assert envelope["code"] == 0 and envelope["data"] is True
    after = ok(signed_request("GET", RFQ_QUOTES, {"requestId": request_id}))
    assert {q["state"] for q in after} == {"CANCELLED"}
    refused = signed_request("POST", RFQ_ACCEPT, {"requestId": request_id, "quoteId": quotes[0]["quoteId"]},
                             body="json")
    assert refused["code"] == 50014


def test_rfq_list_is_404_for_a_taker_only_key_and_typed_for_a_maker_key(sim, signed_request):
    response = signed_request("GET", RFQ_LIST, raw=True)
    assert response.status_code == 404                               # API.md §3.2, §10.5
    unrouted = signed_request("GET", "/open/option/blocktrade/noSuchList/v1", raw=True)
    assert unrouted.status_code == 404
    # Unauthorised looks exactly like unknown: no envelope with an undocumented code 404.
    assert set(response.json()) == set(unrouted.json()) and "code" not in response.json()

    desk = sim.exchange.add_account("desk", rfq_maker_access=True)
    as_desk = {"key": desk.api_key, "secret": desk.api_secret}
    legs = strangle_legs(signed_request)
    request_id = ok(signed_request("POST", RFQ_CREATE, {"legs": legs}, **as_desk))["requestId"]
    listing = ok(signed_request("GET", RFQ_LIST, **as_desk))
    assert set(listing) >= {"userId", "rfqList"}
    [item] = listing["rfqList"]
    conforms(item, RFQ_LIST_ITEM_FIELDS, "rfqList item")
    assert item["requestId"] == request_id and item["state"] == "ACTIVE"
    for leg in item["legs"]:
        conforms(leg, {"instrumentName": text, "side": side_text, "quantity": numeric_text}, "rfqList leg")
    assert ok(signed_request("GET", RFQ_LIST, {"state": "CLOSED"}, **as_desk))["rfqList"] == []
    assert ok(signed_request("POST", RFQ_CANCEL, {"requestId": request_id}, body="form", **as_desk)) is True
    [closed] = ok(signed_request("GET", RFQ_LIST, {"state": "CLOSED"}, **as_desk))["rfqList"]
    assert closed["state"] == "CANCELLED"


# --- create validation: single-leg BUY only, $50k minimum ---------------------------------------------------
def test_single_leg_must_be_buy_and_selling_goes_through_a_maker_buy_quote(sim, signed_request, sim_clock):
    symbol, strike = nearest(signed_request, 90_000, "C")
    qty = math.ceil(50_000 / strike * 100 + 1) / 100                 # just above the $50k minimum
    leg = {"instrumentName": symbol, "side": "SELL", "qty": str(qty)}
    refused = signed_request("POST", RFQ_CREATE, {"legs": [leg]})
    assert refused["code"] == 10001 and refused["data"] is None

    request_id = ok(signed_request("POST", RFQ_CREATE, {"legs": [{**leg, "side": "BUY"}]}))["requestId"]
    quotes = quotes_after_wait(signed_request, sim_clock, request_id)
    maker_buys = next(q for q in quotes if all_legs(q, "BUY"))      # the maker buys = we sell
    fill = ok(signed_request("POST", RFQ_ACCEPT, {"requestId": request_id, "quoteId": maker_buys["quoteId"]},
                             body="form"))
    assert [leg["side"] for leg in fill["legs"]] == ["SELL"]
    [position] = ok(signed_request("GET", POSITIONS))
    assert position["symbol"] == symbol and position["tradeSide"] == 2 and position["qty"] == qty


def test_notional_below_50k_is_10001_and_mixed_sides_are_allowed(sim, signed_request):
    symbol, strike = nearest(signed_request, 90_000, "C")
    small = math.floor(50_000 / strike * 100 - 1) / 100              # just below the minimum
    envelope = signed_request("POST", RFQ_CREATE, {"legs": [{"instrumentName": symbol, "side": "BUY",
                                                             "qty": str(small)}]})
    assert envelope["code"] == 10001 and envelope["data"] is None
    other, _ = nearest(signed_request, strike * 1.05, "C")
    spread = ok(signed_request("POST", RFQ_CREATE, {"legs": [
        {"instrumentName": symbol, "side": "BUY", "qty": "0.4"},
        {"instrumentName": other, "side": "SELL", "qty": "0.4"}]}))
    assert [leg["side"] for leg in spread["legs"]] == ["BUY", "SELL"] and spread["state"] == "ACTIVE"
