"""Unit tests of market_data.py against a fake client that returns real API shapes."""
from __future__ import annotations

import math
import threading
from datetime import datetime, timezone
from typing import Any

import pytest

from clock import SimulatedClock
from coincall_payloads import OptionRow, chain_rows_from_api, instrument_from_api, order_book_from_api
from contracts import parse_symbol
from errors import ExchangeError, SelectionError, StaleDataError, TransportError
from market_data import ChainSnapshot, MarketData

START = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc).timestamp()
EXP1 = int(datetime(2026, 3, 3, 8, tzinfo=timezone.utc).timestamp() * 1000)   # 3MAR26
EXP2 = int(datetime(2026, 3, 13, 8, tzinfo=timezone.utc).timestamp() * 1000)  # 13MAR26
DOUBLE_MAX = 1.7976931348623157e308


def sym(expiry_ms: int, strike: int, kind: str) -> str:
    when = datetime.fromtimestamp(expiry_ms / 1000, tz=timezone.utc)
    return f"BTCUSD-{when.day}{when.strftime('%b').upper()}{when.strftime('%y')}-{strike}-{kind}"


def side(expiry_ms: int, strike: int, kind: str, **over: Any) -> dict[str, Any]:
    base = {
        "optionId": 1234567890123, "index": "BTCUSD", "symbol": sym(expiry_ms, strike, kind),
        "baseToken": "BTC", "endTime": expiry_ms, "strike": float(strike), "lastPrice": 0,
        "markPrice": 120.5, "bid": 110, "bidSize": 1.5, "bidIv": 0.55, "ask": 130, "askSize": 2,
        "askIv": 0.6, "markIv": 0.57, "type": 1 if kind == "C" else 2, "lastPriceIv": DOUBLE_MAX,
        "underlyingPrice": 70100.0, "delta": 0.4 if kind == "C" else -0.6, "gamma": 0.0001,
        "vega": 12.0, "theta": -50.0, "rho": 1.0,
    }
    base.update(over)
    return base


def chain_payload(expiry_ms: int, strikes=(68000, 70000, 72000)) -> list[dict[str, Any]]:
    return [{"strike": float(k), "callOption": side(expiry_ms, k, "C"), "putOption": side(expiry_ms, k, "P")}
            for k in strikes]


def instruments_payload() -> list[dict[str, Any]]:
    out = []
    for expiry in (EXP1, EXP2):
        for strike in (68000, 70000, 72000):
            for kind in "CP":
                out.append({"baseCurrency": "BTC", "symbolName": sym(expiry, strike, kind), "strike": strike,
                            "expirationTimestamp": expiry, "isActive": True, "minQty": "0.01",
                            "tickSize": 0.1})
    return out


class FakeClient:
    """Duck-typed ``CoincallClient``: the market-data methods only, payloads in API shape."""

    def __init__(self, clock: SimulatedClock) -> None:
        self.clock = clock
        self.index = 70000.0
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, Exception] = {}
        self.chains: dict[int, Any] = {EXP1: chain_payload(EXP1), EXP2: chain_payload(EXP2)}
        self.books: dict[str, Any] = {}
        self.latency = 0.0  # simulated seconds each call takes

    def _call(self, name: str, arg: Any = None) -> None:
        self.calls.append((name, arg))
        if self.latency:
            self.clock.advance(self.latency)
        if name in self.fail:
            raise self.fail[name]

    def instruments(self, base: str = "BTC") -> Any:
        self._call("instruments", base)
        return instruments_payload()

    def option_chain(self, end_time_ms: int | None = None, index: str = "BTCUSD") -> Any:
        self._call("option_chain", end_time_ms)
        return self.chains.get(end_time_ms, [])

    def index_price(self, underlying: str = "BTC") -> float:
        self._call("index_price")
        return self.index

    def orderbook(self, symbol: str) -> Any:
        self._call("orderbook", symbol)
        return self.books.get(symbol, {"optionName": symbol, "bids": [{"price": "10.5", "size": "1.2"}],
                                       "asks": [{"price": "12", "size": "0.5"}]})

    def option_detail(self, symbol: str) -> Any:  # must never be used
        raise AssertionError("option_detail must never be called by MarketData")

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


@pytest.fixture
def client(clock) -> FakeClient:
    return FakeClient(clock)


@pytest.fixture
def alerts() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def market(client, clock, alerts) -> MarketData:
    return MarketData(client, clock, on_alert=lambda kind, detail: alerts.append((kind, detail)))


# ---- symbols and the adapter ---------------------------------------------------------------

@pytest.mark.parametrize("symbol, day, month, strike, kind", [
    ("BTCUSD-5FEB26-80000-C", 5, 2, 80000.0, "C"),
    ("BTCUSD-12MAR26-64500-P", 12, 3, 64500.0, "P"),
    ("BTCUSD-03APR26-70000-C", 3, 4, 70000.0, "C"),
    ("SOLUSD-13DEC24-1925.00-P", 13, 12, 1925.0, "P"),
])
def test_parse_symbol_accepts_one_and_two_digit_days(symbol, day, month, strike, kind):
    parsed = parse_symbol(symbol)
    when = datetime.fromtimestamp(parsed.expiry_ms / 1000, tz=timezone.utc)
    assert (when.day, when.month, when.hour) == (day, month, 8)
    assert parsed.strike == strike and parsed.option_type == kind


@pytest.mark.parametrize("bad", ["BTC-5FEB26-80000-C", "BTCUSD-5XXX26-80000-C", "BTCUSD-5FEB26-80000", ""])
def test_parse_symbol_rejects_garbage(bad):
    with pytest.raises(ValueError):
        parse_symbol(bad)


def test_adapter_parses_numbers_given_as_strings_and_ignores_the_iv_sentinel():
    raw = side(EXP1, 70000, "C", bid="110.5", ask="130", bidSize="1.5", askSize="2", markPrice="120.5",
               markIv="0.57", delta="0.41", endTime=str(EXP1), type="1")
    raw["strike"] = "70000"
    row = chain_rows_from_api([{"strike": "70000", "callOption": raw, "putOption": None}],
                              as_of=5.0, expiry_ms=EXP1, index_name="BTCUSD")[0]
    assert (row.bid, row.ask, row.bid_size, row.ask_size, row.mark) == (110.5, 130.0, 1.5, 2.0, 120.5)
    assert row.delta == 0.41 and row.mark_iv == 0.57 and row.strike == 70000.0
    assert row.last_price_iv is None  # Double.MAX sentinel
    assert row.option_type == "C" and row.expiry_ms == EXP1 and row.as_of == 5.0
    real = side(EXP1, 70000, "C", lastPriceIv=0.61)
    assert chain_rows_from_api([{"callOption": real}], as_of=0, expiry_ms=EXP1,
                               index_name="BTCUSD")[0].last_price_iv == 0.61


def test_adapter_empty_side_is_zero_and_missing_greek_is_none():
    raw = side(EXP1, 70000, "P", bid=0, bidSize=0, bidIv=0, delta=None)
    del raw["rho"]
    row = chain_rows_from_api([{"putOption": raw}], as_of=0, expiry_ms=EXP1, index_name="BTCUSD")[0]
    assert row.bid == 0.0 and row.bid_size == 0.0 and not row.has_bid and row.has_ask
    assert row.delta is None and row.rho is None and row.gamma == 0.0001


def test_adapter_accepts_underlying_key_and_rejects_another_index():
    raw = side(EXP1, 70000, "C")
    raw["underlying"] = raw.pop("index")
    assert chain_rows_from_api([{"callOption": raw}], as_of=0, expiry_ms=EXP1, index_name="BTCUSD")
    with pytest.raises(StaleDataError):
        chain_rows_from_api([{"callOption": side(EXP1, 70000, "C", index="ETHUSD")}], as_of=0,
                            expiry_ms=EXP1, index_name="BTCUSD")


def test_adapter_never_invents_a_mark():
    with pytest.raises(StaleDataError):
        chain_rows_from_api([{"callOption": side(EXP1, 70000, "C", markPrice=None)}], as_of=0,
                            expiry_ms=EXP1, index_name="BTCUSD")


def test_adapter_drops_rows_of_other_expiries():
    payload = chain_payload(EXP1) + chain_payload(EXP2)
    rows = chain_rows_from_api(payload, as_of=0, expiry_ms=EXP2, index_name="BTCUSD")
    assert len(rows) == 6 and {r.expiry_ms for r in rows} == {EXP2}


def test_instrument_adapter_and_expiry():
    raw = {"baseCurrency": "BTC", "symbolName": "BTCUSD-3MAR26-70000-P", "strike": "70000",
           "expirationTimestamp": str(EXP1), "isActive": True, "minQty": "0.01", "tickSize": "0.1"}
    inst = instrument_from_api(raw)
    assert (inst.symbol, inst.base, inst.strike, inst.option_type) == ("BTCUSD-3MAR26-70000-P", "BTC", 70000.0, "P")
    assert inst.expiry_ms == EXP1 and inst.expiry == datetime(2026, 3, 3, 8, tzinfo=timezone.utc)
    assert inst.tick_size == 0.1 and inst.min_qty == 0.01 and inst.is_active


def test_order_book_adapter_strings_sorted_and_empty_side_absent():
    book = order_book_from_api({"optionName": "X", "displayName": None,
                                "bids": [{"price": "9", "size": "1"}, {"price": "10", "size": "2"}],
                                "asks": []}, symbol="X", as_of=3.0)
    assert book.bids == ((10.0, 2.0), (9.0, 1.0)) and book.best_bid == 10.0
    assert book.asks == () and book.best_ask is None and book.as_of == 3.0


# ---- TTL on every read path ------------------------------------------------------------------

def test_index_cached_within_ttl_and_refetched_after(market, client, clock):
    assert market.index_price() == 70000.0
    client.index = 71000.0
    clock.advance(29)
    assert market.index_price() == 70000.0 and client.count("index_price") == 1
    clock.advance(2)  # 31 s > ttl 30 s
    assert market.index_price() == 71000.0 and client.count("index_price") == 2
    assert market.stats["futures_symbols"] == 2


def test_index_max_age_tightens_and_zero_bypasses(market, client, clock):
    market.index_price()
    clock.advance(10)
    market.index_price(max_age=15)
    assert client.count("index_price") == 1
    market.index_price(max_age=5)
    assert client.count("index_price") == 2
    market.index_price(max_age=0)
    market.index_price(max_age=0)
    assert client.count("index_price") == 4
    assert market.index_age() == 0.0
    clock.advance(4)
    assert market.index_age() == 4.0


def test_max_age_above_ttl_never_extends_the_ttl(market, client, clock):
    market.index_price()
    clock.advance(40)
    market.index_price(max_age=100)
    assert client.count("index_price") == 2


def test_instruments_cached_within_ttl(market, client, clock):
    assert len(market.instruments()) == 12
    clock.advance(30)
    market.instruments()
    assert client.count("instruments") == 1
    clock.advance(0.5)
    market.instruments()
    assert client.count("instruments") == 2
    assert market.instrument(sym(EXP1, 70000, "C")).strike == 70000.0
    with pytest.raises(SelectionError):
        market.instrument("BTCUSD-3MAR26-99999-C")


def test_a_refetched_listing_reparses_only_the_entries_that_changed(market, client, clock, monkeypatch):
    first = {i.symbol: i for i in market.instruments()}
    changed, retyped = sym(EXP1, 70000, "C"), sym(EXP2, 72000, "P")
    payload = instruments_payload()
    for entry in payload:
        if entry["symbolName"] == changed:
            entry["isActive"] = False
    monkeypatch.setattr(client, "instruments", lambda base="BTC": payload)
    clock.advance(31)
    second = {i.symbol: i for i in market.instruments()}
    assert second[changed].is_active is False and first[changed].is_active is True
    assert all(second[s] is first[s] for s in first if s != changed)     # the same parse, reused
    # Equal in Python is not enough: strike 72000 -> 72000.0 parses anew (to the same value)...
    for entry in payload:
        if entry["symbolName"] == retyped:
            entry["strike"] = 72000.0
    clock.advance(31)
    third = {i.symbol: i for i in market.instruments()}
    assert third[retyped] is not second[retyped] and third[retyped] == second[retyped]
    # ... and after a strike of 1, a strike of True (== 1 in Python) is the error it always was.
    for strike in (1, True):
        for entry in payload:
            if entry["symbolName"] == retyped:
                entry["strike"] = strike
        clock.advance(31)
        if strike is True:
            with pytest.raises(StaleDataError, match="strike"):
                market.instruments()
        else:
            assert market.instrument(retyped).strike == 1.0


def test_chain_cached_then_refetched_and_max_age_zero(market, client, clock):
    rows = market.chain(EXP1)
    assert len(rows) == 6 and all(r.as_of == START for r in rows)
    clock.advance(20)
    assert market.chain(EXP1) is rows
    assert market.chain(EXP1, max_age=10) is not rows
    assert client.count("option_chain") == 2
    market.chain(EXP1, max_age=0)
    assert client.count("option_chain") == 3 and market.stats["option_chain"] == 3


def test_entries_too_old_to_be_served_are_dropped_not_kept_for_ever(market, client, clock):
    """A month-long run reads a new expiry's chain and new symbols' books every day: what can no
    longer be served (older than the TTL) is dropped at the next store, at most every 5 minutes."""
    import market_data

    market.chain(EXP1)
    market.order_book(sym(EXP1, 70000, "C"))
    clock.advance(market_data.PRUNE_EVERY_SECONDS + 1)
    market.chain(EXP2)
    assert set(market._chains) == {("BTC", EXP2)} and not market._books   # noqa: SLF001 - the memory itself
    fresh = market.order_book(sym(EXP2, 70000, "C"))
    clock.advance(1)
    market.chain(EXP1)      # within 5 minutes of the last prune: nothing is dropped yet
    assert market.order_book(sym(EXP2, 70000, "C")) is fresh
    assert len(market._chains) == 2 and client.count("option_chain") == 3   # noqa: SLF001


def test_order_book_freshness_three_seconds(market, client, clock):
    symbol = sym(EXP1, 70000, "C")
    first = market.order_book(symbol)
    clock.advance(3)
    assert market.order_book(symbol) is first
    clock.advance(0.1)
    second = market.order_book(symbol)
    assert second is not first and second.as_of == clock.now()
    assert client.count("orderbook") == 2 and market.stats["orderbook"] == 2


def test_quote_comes_from_the_chain_and_one_call_serves_the_expiry(market, client, clock):
    call = market.quote(sym(EXP1, 70000, "C"))
    put = market.quote(sym(EXP1, 68000, "P"))
    assert call.option_type == "C" and put.strike == 68000.0 and call.delta == 0.4
    assert client.count("option_chain") == 1 and client.count("instruments") == 0
    clock.advance(16)  # quote default max_age is 15 s
    market.quote(sym(EXP1, 70000, "C"))
    assert client.count("option_chain") == 2


def test_quote_unknown_symbol_raises(market, client):
    with pytest.raises(SelectionError):
        market.quote("BTCUSD-3MAR26-99999-C")


def test_invalidate_forgets_everything(market, client):
    market.index_price()
    market.chain(EXP1)
    market.invalidate()
    market.index_price()
    market.chain(EXP1)
    assert client.count("index_price") == 2 and client.count("option_chain") == 2


def test_clock_jump_backwards_is_not_fresh(client):
    class Jumpy:
        def __init__(self):
            self.t = 1000.0

        def now(self):
            return self.t

        def monotonic(self):
            return self.t

    jumpy = Jumpy()
    market = MarketData(client, jumpy)
    market.index_price()
    jumpy.t = 990.0
    market.index_price()
    assert client.count("index_price") == 2


# ---- errors raise, never empty ---------------------------------------------------------------

@pytest.mark.parametrize("error", [TransportError("GET /x", "boom", 503), ExchangeError(500, "err", "GET /x"),
                                   StaleDataError("no index")])
def test_index_failure_raises_and_no_fallback(market, client, clock, error):
    market.index_price()
    clock.advance(31)
    client.fail["index_price"] = error
    with pytest.raises(type(error)):
        market.index_price()
    with pytest.raises(type(error)):
        market.index_price(max_age=1000)  # the expired entry is never served


def test_failed_chain_and_book_raise(market, client):
    client.fail["option_chain"] = TransportError("GET chain", "down")
    client.fail["orderbook"] = ExchangeError(10584, "unknown", "GET book")
    with pytest.raises(TransportError):
        market.chain(EXP1)
    with pytest.raises(ExchangeError):
        market.order_book(sym(EXP1, 70000, "C"))


def test_empty_chain_raises(market, client):
    client.chains[EXP1] = []
    with pytest.raises(StaleDataError):
        market.chain(EXP1)


def test_non_positive_index_raises(market, client):
    client.index = 0.0
    with pytest.raises(StaleDataError):
        market.index_price()


# ---- chain snapshot --------------------------------------------------------------------------

def test_chain_snapshot_call_budget_and_consistency(market, client, clock):
    snap = market.chain_snapshot([EXP2, EXP1, EXP1])
    assert client.count("instruments") == 1 and client.count("index_price") == 1
    assert client.count("option_chain") == 2
    assert market.stats == {"instruments": 1, "futures_symbols": 1, "option_chain": 2}
    assert isinstance(snap, ChainSnapshot) and snap.index_price == 70000.0 and snap.as_of == START
    assert {r.as_of for r in snap.rows} == {snap.as_of}
    assert snap.expiries() == [EXP1, EXP2]
    puts = snap.rows_for(EXP1, "P")
    assert [r.strike for r in puts] == [68000.0, 70000.0, 72000.0] and all(r.option_type == "P" for r in puts)
    assert snap.row(sym(EXP2, 72000, "C")).expiry_ms == EXP2 and snap.row("nope") is None
    assert sym(EXP1, 70000, "C") in snap.instruments
    clock.advance(2)
    assert snap.age(clock.now()) == 2.0
    # Warm instruments cache: 1 index + 1 chain per expiry, even with everything cached.
    market.chain_snapshot([EXP1])
    assert client.count("instruments") == 1 and client.count("index_price") == 2
    assert client.count("option_chain") == 3


def test_chain_snapshot_rows_share_one_as_of_even_when_calls_take_time(market, client):
    client.latency = 1.0
    snap = market.chain_snapshot([EXP1, EXP2])
    assert {r.as_of for r in snap.rows} == {snap.as_of}


def test_an_answer_is_stamped_when_it_was_asked_for_so_a_slow_read_never_looks_fresher(market, client, clock):
    """A read that took 12 s is 12 s old when it arrives: asked again 5 s later with a 15 s limit,
    it is read again (stamped at the answer, it once passed for 5 s old)."""
    client.latency = 12.0
    asked = clock.now()
    market.index_price("BTC", max_age=15.0)
    book = market.order_book(sym(EXP1, 70000, "C"), max_age=15.0)
    assert book.as_of == asked + 12.0                 # the book was asked for after the index came back
    client.latency = 0.0
    clock.advance(5.0)
    market.index_price("BTC", max_age=15.0)
    assert client.count("index_price") == 2


def test_chain_snapshot_too_slow_raises(market, client):
    client.latency = 2.0  # instruments + index + 2 chains = 8 s
    with pytest.raises(SelectionError):
        market.chain_snapshot([EXP1, EXP2])


def test_chain_snapshot_any_failure_raises_selection_error(market, client):
    client.fail["index_price"] = TransportError("GET index", "down", 502)
    with pytest.raises(SelectionError):
        market.chain_snapshot([EXP1])
    del client.fail["index_price"]
    client.chains[EXP2] = []
    with pytest.raises(SelectionError):
        market.chain_snapshot([EXP1, EXP2])
    with pytest.raises(SelectionError):
        market.chain_snapshot([])


# ---- frozen index ----------------------------------------------------------------------------

def test_frozen_index_flagged_on_third_read_spanning_60s_and_cleared_on_change(market, client, clock,
                                                                               alerts, caplog):
    for step in range(2):
        market.index_price(max_age=0)
        clock.advance(30)
    assert not market.index_frozen and alerts == []
    caplog.set_level("WARNING", logger="market_data")
    market.index_price(max_age=0)  # 3rd identical read, 60 s after the first
    assert market.index_frozen
    assert [kind for kind, _ in alerts] == ["index_frozen"]
    assert any("frozen" in rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING")
    clock.advance(30)
    market.index_price(max_age=0)
    assert len(alerts) == 1  # one alert per episode
    client.index = 70001.0
    clock.advance(1)
    market.index_price(max_age=0)
    assert not market.index_frozen


def test_cached_reads_do_not_count_towards_frozen(market, clock, alerts):
    market.index_price()
    for _ in range(30):
        clock.advance(1)
        market.index_price()  # cache hits: t = 1 .. 30 s
    assert market.stats["futures_symbols"] == 1
    clock.advance(40)
    market.index_price()  # second fresh read, 70 s after the first: still only 2 reads
    assert market.stats["futures_symbols"] == 2
    assert not market.index_frozen and alerts == []


def test_many_reads_in_short_time_are_not_frozen(market, clock, alerts):
    for _ in range(10):
        market.index_price(max_age=0)
        clock.advance(5)
    assert not market.index_frozen and alerts == []


def test_failing_alert_sink_does_not_break_reads(client, clock):
    def boom(kind, detail):
        raise RuntimeError("sink down")

    market = MarketData(client, clock, on_alert=boom)
    for _ in range(3):
        market.index_price(max_age=0)
        clock.advance(30)
    assert market.index_frozen


# ---- thread safety ---------------------------------------------------------------------------

def test_lock_not_held_during_http(clock):
    """A slow call in one thread must not block cached reads in another."""
    client = FakeClient(clock)
    market = MarketData(client, clock)
    market.index_price()
    entered, release = threading.Event(), threading.Event()
    original = client.option_chain

    def slow_chain(end_time_ms=None, index="BTCUSD"):
        entered.set()
        assert release.wait(5)
        return original(end_time_ms, index)

    client.option_chain = slow_chain
    worker = threading.Thread(target=market.chain, args=(EXP1,))
    worker.start()
    assert entered.wait(5)
    try:
        assert market.index_price() == 70000.0  # would deadlock if the lock were held
        assert market.stats_snapshot()["option_chain"] == 1
    finally:
        release.set()
        worker.join(5)
    assert len(market.chain(EXP1)) == 6 and client.count("option_chain") == 1


def test_option_row_fields_are_exact_interface():
    names = [f for f in OptionRow.__dataclass_fields__]
    assert names[:19] == ["symbol", "option_type", "strike", "expiry_ms", "bid", "ask", "bid_size", "ask_size",
                          "mark", "mark_iv", "bid_iv", "ask_iv", "delta", "gamma", "vega", "theta", "rho",
                          "underlying_price", "as_of"]
    assert math.isnan(chain_rows_from_api([{"callOption": side(EXP1, 1, "C", markIv=None)}], as_of=0,
                                          expiry_ms=EXP1, index_name="BTCUSD")[0].mark_iv)
