"""RFQ taker flow of the simulated exchange: create, maker quotes (both directions, maker-side
legs), accept (taker-side legs as strings, block fills), cancel, expiry and the faults."""
from __future__ import annotations


import pytest

from clock import SimulatedClock
from simulator.errors import SimError
from simulator.exchange import ExchangeConfig, SimExchange
from simulator.market import MarketConfig, MarketModel
from simulator.rfq_makers import AS_ASKED, MIRRORED, LegScreen, RfqLeg, price_quote_legs
from tests.simulator.exchange_builders import START, WEEKLY_6MAR26

EDGES = (-2.0, -1.0, 1.0)


def build(**overrides):
    overrides.setdefault("passive_fill_prob_per_min_at_touch", 0.0)
    overrides.setdefault("rfq_quote_delay_seconds", (3.0, 3.0))
    overrides.setdefault("rfq_maker_edges_pct", EDGES)
    clock = SimulatedClock(start=START, speed=0)
    market = MarketModel(MarketConfig(seed=7), clock.now_ms())
    exchange = SimExchange(ExchangeConfig(**overrides), market, clock)
    return clock, market, exchange


def symbol_for(market, strike: float, kind: str) -> str:
    for instrument in market.instruments():
        if instrument.expiry_ms == WEEKLY_6MAR26 and instrument.strike == strike and instrument.option_type == kind:
            return instrument.symbol
    raise AssertionError("instrument not listed")


@pytest.fixture()
def strangle():
    clock, market, exchange = build()
    call, put = symbol_for(market, 95_000, "C"), symbol_for(market, 85_000, "P")
    legs = [{"instrumentName": call, "side": "BUY", "qty": "0.5"}, {"instrumentName": put, "side": "BUY", "qty": "0.5"}]
    return clock, market, exchange, exchange.default_account, call, put, legs


def quotes_by(exchange, account, request_id):
    quotes = exchange.rfq_quotes_received(account, {"requestId": request_id})
    return {(int(q["userId"]), tuple(leg["side"] for leg in q["legs"])): q for q in quotes}


def improvement(quote, screen_cost):
    taker_cost = sum((1 if leg["side"] == "SELL" else -1) * float(leg["price"]) * float(leg["quantity"])
                     for leg in quote["legs"])
    return (screen_cost - taker_cost) / abs(screen_cost) * 100


# ------------------------------------------------------------------ create

def test_create_returns_active_rfq_with_string_ids(strangle):
    clock, market, exchange, account, call, put, legs = strangle
    rfq = exchange.rfq_create(account, {"legs": legs})
    assert isinstance(rfq["requestId"], str) and len(rfq["requestId"]) == 19
    assert rfq["state"] == "ACTIVE" and rfq["createTime"] == clock.now_ms()
    assert rfq["expiryTime"] == clock.now_ms() + 3_600_000
    assert rfq["legs"] == [{"instrumentName": call, "qty": "0.5", "side": "BUY"},
                           {"instrumentName": put, "qty": "0.5", "side": "BUY"}]


@pytest.mark.parametrize("legs_fn, code", [
    (lambda c, p: [{"instrumentName": c, "side": "SELL", "qty": "1"}], 10001),          # single leg must BUY
    (lambda c, p: [{"instrumentName": c, "side": "BUY", "qty": "0.2"},
                   {"instrumentName": p, "side": "BUY", "qty": "0.2"}], 10001),         # 36k < 50k notional
    (lambda c, p: [{"instrumentName": "BTCUSD-6MAR26-12345-C", "side": "BUY", "qty": "1"}], 10574),
    (lambda c, p: [{"instrumentName": c, "side": "BUY", "qty": "0.001"}], 10558),
    (lambda c, p: [{"instrumentName": c, "side": "buy", "qty": "1"}], 10005),
    (lambda c, p: [], 10005),
])
def test_create_validation(strangle, legs_fn, code):
    clock, market, exchange, account, call, put, _ = strangle
    with pytest.raises(SimError) as err:
        exchange.rfq_create(account, {"legs": legs_fn(call, put)})
    assert err.value.code == code


def test_min_notional_can_be_switched_off_and_read_only_keys_cannot_create():
    clock, market, exchange = build(rfq_min_notional_usd=None)
    call = symbol_for(market, 95_000, "C")
    rfq = exchange.rfq_create(exchange.default_account,
                              {"legs": f'[{{"instrumentName":"{call}","side":"BUY","qty":"0.01"}}]'})
    assert rfq["state"] == "ACTIVE"
    viewer = exchange.add_account("viewer", read_only=True)
    with pytest.raises(SimError) as err:
        exchange.rfq_create(viewer, {"legs": [{"instrumentName": call, "side": "BUY", "qty": "1"}]})
    assert err.value.code == 7001


# ------------------------------------------------------------------ quotes

def test_makers_quote_both_directions_with_maker_side_legs_at_their_edge(strangle):
    clock, market, exchange, account, call, put, legs = strangle
    request_id = exchange.rfq_create(account, {"legs": legs})["requestId"]
    clock.advance(2.9)
    assert exchange.rfq_quotes_received(account, {"requestId": request_id}) == []
    clock.advance(0.1)
    quotes = exchange.rfq_quotes_received(account, {"requestId": request_id})
    assert len(quotes) == 6
    screen_c, screen_p = market.quote(call), market.quote(put)
    buy_cost = 0.5 * screen_c.ask + 0.5 * screen_p.ask           # the taker pays the asks
    sell_cost = -(0.5 * screen_c.bid + 0.5 * screen_p.bid)       # the taker receives the bids
    by_maker = quotes_by(exchange, account, request_id)
    makers = sorted({maker for maker, _ in by_maker})
    assert len(makers) == 3
    for maker, edge in zip(makers, EDGES):
        as_asked = by_maker[(maker, ("SELL", "SELL"))]        # maker sells what the taker buys
        mirrored = by_maker[(maker, ("BUY", "BUY"))]
        assert improvement(as_asked, buy_cost) == pytest.approx(-edge, abs=0.02)
        assert improvement(mirrored, sell_cost) == pytest.approx(-edge, abs=0.02)
    sample = quotes[0]
    assert isinstance(sample["quoteId"], str) and sample["requestId"] == request_id
    assert isinstance(sample["userId"], str) and sample["state"] == "OPEN"
    assert sample["expiryTime"] - sample["createTime"] == 300_000
    assert all(isinstance(leg["price"], str) and leg["quantity"] == "0.5" for leg in sample["legs"])
    assert [leg["instrumentName"] for leg in sample["legs"]] == [call, put]


def test_quote_pricing_is_exact_for_mixed_structures():
    screens = {"A": LegScreen(bid=100, ask=110, mark=105, tick=1), "B": LegScreen(bid=40, ask=46, mark=43, tick=1),
               "C": LegScreen(bid=0, ask=12, mark=8, tick=1)}
    legs = [RfqLeg("A", "BUY", 100), RfqLeg("B", "SELL", 100), RfqLeg("C", "SELL", 200)]
    baseline = 110 - 40 - 2 * 8          # empty bid on C -> the mark
    quoted = price_quote_legs(legs, AS_ASKED, screens, -1.5)
    assert [q.side for q in quoted] == ["SELL", "BUY", "BUY"]
    cost = sum((1 if q.side == "SELL" else -1) * q.price * q.lots / 100 for q in quoted)
    assert (baseline - cost) / abs(baseline) * 100 == pytest.approx(1.5, abs=0.05)
    mirrored = price_quote_legs(legs, MIRRORED, screens, 2.0)
    assert [q.side for q in mirrored] == ["BUY", "SELL", "SELL"]
    mirrored_baseline = -100 + 46 + 2 * 12
    cost = sum((1 if q.side == "SELL" else -1) * q.price * q.lots / 100 for q in mirrored)
    assert (mirrored_baseline - cost) / abs(mirrored_baseline) * 100 == pytest.approx(-2.0, abs=0.05)


def test_quotes_are_deterministic_for_a_seed():
    def run():
        clock, market, exchange = build(rfq_maker_edges_pct=None, rfq_quote_delay_seconds=(2.0, 5.0))
        call, put = symbol_for(market, 95_000, "C"), symbol_for(market, 85_000, "P")
        rfq = exchange.rfq_create(exchange.default_account, {"legs": [
            {"instrumentName": call, "side": "BUY", "qty": "0.5"}, {"instrumentName": put, "side": "SELL", "qty": "0.5"}]})
        clock.advance(6)
        return exchange.rfq_quotes_received(exchange.default_account, {"requestId": rfq["requestId"]})

    first, second = run(), run()
    assert first == second and len(first) == 6
    assert len({q["createTime"] for q in first}) > 1          # seeded delays differ between makers


# ------------------------------------------------------------------ accept

def test_accept_fills_taker_side_legs_with_string_values(strangle):
    clock, market, exchange, account, call, put, legs = strangle
    request_id = exchange.rfq_create(account, {"legs": legs})["requestId"]
    clock.advance(3)
    by_maker = quotes_by(exchange, account, request_id)
    maker = min(m for m, _ in by_maker)
    chosen = by_maker[(maker, ("SELL", "SELL"))]
    marks = {call: market.quote(call).mark, put: market.quote(put).mark}
    index = market.index_price()
    result = exchange.rfq_accept(account, {"requestId": request_id, "quoteId": chosen["quoteId"]})
    assert result["role"] == "TAKER" and result["userId"] is None
    assert result["blockTradeId"] == chosen["quoteId"] and result["requestId"] == request_id
    quote_prices = {leg["instrumentName"]: leg["price"] for leg in chosen["legs"]}
    for leg in result["legs"]:
        assert leg["side"] == "BUY"
        assert leg["price"] == quote_prices[leg["instrumentName"]] and leg["quantity"] == "0.5"
        for key in ("price", "quantity", "iv", "markPrice", "indexPrice", "orderId", "tradeId", "fee", "profit"):
            assert isinstance(leg[key], str), key
        assert leg["baseToken"] == "BTC" and leg["quoteToken"] == "USDT"
        price = float(leg["price"])
        assert float(leg["fee"]) == pytest.approx(min(0.5 * index * 0.0003, 0.5 * price * 0.125), abs=1e-6)
        order = exchange.query_order(account, {"orderId": leg["orderId"]})
        assert order["tradeType"] == 14 and order["state"] == 1
        assert order["price"] == marks[leg["instrumentName"]] and order["avgPrice"] == pytest.approx(price)
    assert exchange.position_of(account, call) == 0.5 and exchange.position_of(account, put) == 0.5
    fills = exchange.trade_history(account, {"pageSize": "10"})["list"]
    assert {f["tradeType"] for f in fills} == {14} and {f["price"] for f in fills} == set(marks.values())
    states = {q["quoteId"]: q["state"] for q in exchange.rfq_quotes_received(account, {"requestId": request_id})}
    assert states.pop(chosen["quoteId"]) == "FILLED" and set(states.values()) == {"CANCELLED"}
    assert exchange.rfq_state(request_id) == "FILLED"
    with pytest.raises(SimError) as err:
        exchange.rfq_accept(account, {"requestId": request_id, "quoteId": chosen["quoteId"]})
    assert err.value.code == 50014
    with pytest.raises(SimError) as err:
        exchange.rfq_cancel(account, {"requestId": request_id})
    assert err.value.code == 10001
    trades = exchange.blocktrade_order_list(account, {"pageSize": "20"})["list"]
    assert len(trades) == 1 and trades[0]["blockTradeId"] == chosen["quoteId"] and len(trades[0]["legs"]) == 2
    detail = exchange.blocktrade_trade_detail(account, {"symbol": put})["list"]
    assert detail[0]["requestId"] == request_id


def test_single_leg_sell_is_a_buy_rfq_accepted_on_a_maker_buy_quote():
    clock, market, exchange = build()
    account = exchange.default_account
    call = symbol_for(market, 95_000, "C")
    request_id = exchange.rfq_create(account, {"legs": [{"instrumentName": call, "side": "BUY", "qty": "1"}]})[
        "requestId"]
    clock.advance(3)
    maker_buy = [q for q in exchange.rfq_quotes_received(account, {"requestId": request_id})
                 if q["legs"][0]["side"] == "BUY"][0]
    result = exchange.rfq_accept(account, {"requestId": int(request_id), "quoteId": int(maker_buy["quoteId"])})
    assert result["legs"][0]["side"] == "SELL"
    assert exchange.position_of(account, call) == -1.0


def test_expired_quote_is_50014_and_makers_requote(strangle):
    clock, market, exchange, account, call, put, legs = strangle
    request_id = exchange.rfq_create(account, {"legs": legs})["requestId"]
    clock.advance(3)
    first = exchange.rfq_quotes_received(account, {"requestId": request_id})[0]
    clock.advance(300)
    with pytest.raises(SimError) as err:
        exchange.rfq_accept(account, {"requestId": request_id, "quoteId": first["quoteId"]})
    assert err.value.code == 50014
    clock.advance(5)
    quotes = exchange.rfq_quotes_received(account, {"requestId": request_id})
    assert sum(q["state"] == "EXPIRED" for q in quotes) == 6
    assert sum(q["state"] == "OPEN" for q in quotes) == 6


def test_cancel_and_rfq_timeout(strangle):
    clock, market, exchange, account, call, put, legs = strangle
    cancelled = exchange.rfq_create(account, {"legs": legs})["requestId"]
    clock.advance(4)
    assert exchange.rfq_cancel(account, {"requestId": cancelled}) is True
    assert exchange.rfq_state(cancelled) == "CANCELLED"
    quotes = exchange.rfq_quotes_received(account, {"requestId": cancelled})
    assert {q["state"] for q in quotes} == {"CANCELLED"}
    with pytest.raises(SimError) as err:
        exchange.rfq_accept(account, {"requestId": cancelled, "quoteId": quotes[0]["quoteId"]})
    assert err.value.code == 50014
    with pytest.raises(SimError) as err:
        exchange.rfq_cancel(account, {"requestId": cancelled})
    assert err.value.code == 10001
    timed_out = exchange.rfq_create(account, {"legs": legs})["requestId"]
    clock.advance(3600)
    assert exchange.rfq_state(timed_out) == "EXPIRED"
    assert all(q["state"] != "OPEN" for q in exchange.rfq_quotes_received(account, {"requestId": timed_out}))


def test_rfq_list_is_404_for_taker_only_keys(strangle):
    clock, market, exchange, account, call, put, legs = strangle
    with pytest.raises(SimError) as err:
        exchange.rfq_list(account, {})
    assert err.value.code == 404 and err.value.http_status == 404
    maker = exchange.add_account("maker", rfq_maker_access=True)
    request_id = exchange.rfq_create(maker, {"legs": legs})["requestId"]
    listing = exchange.rfq_list(maker, {"state": "OPEN"})
    assert listing["userId"] == str(maker.user_id)
    [entry] = listing["rfqList"]
    assert entry["requestId"] == request_id and entry["state"] == "ACTIVE" and entry["role"] == "TAKER"
    assert entry["legs"][0] == {"instrumentName": call, "side": "BUY", "quantity": "0.5"}
    assert exchange.rfq_list(maker, {"state": "CLOSED"})["rfqList"] == []


# ------------------------------------------------------------------ faults and scripted quotes

def test_fault_switches(strangle):
    clock, market, exchange, account, call, put, legs = strangle
    exchange.faults.rfq_no_quotes = True
    silent = exchange.rfq_create(account, {"legs": legs})["requestId"]
    clock.advance(30)
    assert exchange.rfq_quotes_received(account, {"requestId": silent}) == []
    exchange.faults.rfq_no_quotes = False
    clock.advance(10)
    assert len(exchange.rfq_quotes_received(account, {"requestId": silent})) == 6

    quote = exchange.rfq_quotes_received(account, {"requestId": silent})[0]
    exchange.faults.rfq_accept_fail_code = 10000
    with pytest.raises(SimError) as err:
        exchange.rfq_accept(account, {"requestId": silent, "quoteId": quote["quoteId"]})
    assert err.value.code == 10000 and exchange.rfq_state(silent) == "ACTIVE"
    exchange.faults.rfq_accept_fail_code = None
    exchange.faults.rfq_reverse_accept_legs = True
    result = exchange.rfq_accept(account, {"requestId": silent, "quoteId": quote["quoteId"]})
    assert [leg["instrumentName"] for leg in result["legs"]] == [put, call]


def test_withdrawn_quotes_and_quotes_without_request_id():
    clock, market, exchange = build(rfq_withdraw_prob=1.0, rfq_quotes_include_request_id=False)
    account = exchange.default_account
    call, put = symbol_for(market, 95_000, "C"), symbol_for(market, 85_000, "P")
    request_id = exchange.rfq_create(account, {"legs": [
        {"instrumentName": call, "side": "BUY", "qty": "0.5"}, {"instrumentName": put, "side": "BUY", "qty": "0.5"}]}
    )["requestId"]
    clock.advance(3)
    quotes = exchange.rfq_quotes_received(account, {"requestId": request_id})
    assert quotes and all("requestId" not in q for q in quotes)
    clock.advance(151)
    states = [q["state"] for q in exchange.rfq_quotes_received(account, {"requestId": request_id})[:6]]
    assert states == ["CANCELLED"] * 6


def test_injected_quote_with_one_mirrored_leg_and_margin_check(strangle):
    clock, market, exchange, account, call, put, legs = strangle
    poor = exchange.add_account("poor", balance=50.0)
    request_id = exchange.rfq_create(poor, {"legs": legs})["requestId"]
    quote_id = exchange.inject_rfq_quote(request_id, [(call, "SELL", 900.0, 0.5), (put, "BUY", 700.0, 0.5)])
    [quote] = exchange.rfq_quotes_received(poor, {"requestId": request_id})
    assert quote["quoteId"] == quote_id and [leg["side"] for leg in quote["legs"]] == ["SELL", "BUY"]
    with pytest.raises(SimError) as err:   # buying 0.5 x 900 of premium with 50 USD
        exchange.rfq_accept(poor, {"requestId": request_id, "quoteId": quote_id})
    assert err.value.code == 10529
    assert exchange.rfq_state(request_id) == "ACTIVE"
    with pytest.raises(SimError) as err:   # another account's RFQ
        exchange.rfq_accept(account, {"requestId": request_id, "quoteId": quote_id})
    assert err.value.code == 50014
