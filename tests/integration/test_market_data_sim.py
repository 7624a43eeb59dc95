"""MarketData against the simulated exchange over loopback: call budgets, freshness, faults."""
from __future__ import annotations

import pytest

from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from errors import SelectionError, TransportError
from market_data import MarketData
from simulator import FaultRule


@pytest.fixture
def client(sim):
    c = CoincallClient(
        ClientSettings(base_url=sim.base_url, max_retries=1),
        Credentials(sim.api_key, sim.api_secret, source="test"),
        sim.clock,
    )
    yield c
    c.close()


@pytest.fixture
def alerts():
    return []


@pytest.fixture
def market(client, sim, alerts):
    return MarketData(client, sim.clock, on_alert=lambda kind, detail: alerts.append((kind, detail)))


def _later_expiries(market: MarketData, n: int = 2) -> list[int]:
    """Expiries after the first (the first may be close to its pre-expiry halt)."""
    expiries = sorted({i.expiry_ms for i in market.instruments()})
    assert len(expiries) > n
    return expiries[1:1 + n]


def test_chain_snapshot_one_chain_call_per_expiry_with_greeks_iv_and_book(sim, market):
    before = sim.counts
    expiries = _later_expiries(market)
    assert sim.counts["instruments"] - before["instruments"] == 1
    sim_before = sim.counts
    snap = market.chain_snapshot(expiries + expiries[:1])
    after = sim.counts
    assert after["option_chain"] - sim_before["option_chain"] == 2
    assert after["futures_symbols"] - sim_before["futures_symbols"] == 1
    assert after["instruments"] == sim_before["instruments"]  # warm cache
    assert after["option_detail"] == 0
    assert snap.expiries() == sorted(expiries)
    assert {r.as_of for r in snap.rows} == {snap.as_of} and snap.as_of == sim.clock.now()
    assert snap.index_price == pytest.approx(sim.market.index_price(), rel=1e-6)
    calls = snap.rows_for(expiries[0], "C")
    assert len(calls) > 5 and [r.strike for r in calls] == sorted(r.strike for r in calls)
    quoted = [r for r in calls if r.bid > 0 and r.ask > 0]
    assert quoted, "the simulator quotes some calls"
    for row in quoted:
        assert row.ask >= row.bid and row.mark > 0 and row.mark_iv > 0
        assert row.delta is not None and 0 <= row.delta <= 1 and row.gamma is not None
        assert row.vega is not None and row.theta is not None and row.last_price_iv is None
        assert row.symbol in snap.instruments
    assert market.stats["option_chain"] == 2 and market.stats["futures_symbols"] == 1


def test_chain_snapshot_cold_cache_adds_one_instruments_call(sim, client):
    market = MarketData(client, sim.clock)
    expiries = sorted({i["expirationTimestamp"] for i in client.instruments("BTC")})[1:4]
    base = sim.counts
    market.chain_snapshot(expiries)
    delta = {k: sim.counts[k] - base[k] for k in ("instruments", "futures_symbols", "option_chain")}
    assert delta == {"instruments": 1, "futures_symbols": 1, "option_chain": 3}


def test_ttl_enforced_with_simulated_time(sim, market):
    expiry = _later_expiries(market, 1)[0]
    market.index_price()
    market.chain(expiry)
    base = sim.counts
    sim.clock.advance(29)
    market.index_price()
    market.chain(expiry)
    assert sim.counts["futures_symbols"] == base["futures_symbols"]
    assert sim.counts["option_chain"] == base["option_chain"]
    sim.clock.advance(2)
    rows = market.chain(expiry)
    market.index_price()
    assert rows[0].as_of == sim.clock.now()
    assert sim.counts["futures_symbols"] == base["futures_symbols"] + 1
    assert sim.counts["option_chain"] == base["option_chain"] + 1
    market.index_price(max_age=0)
    assert sim.counts["futures_symbols"] == base["futures_symbols"] + 2
    assert market.index_age() == 0.0


def test_quote_via_chain_and_order_book_freshness(sim, market):
    expiry = _later_expiries(market, 1)[0]
    symbols = [i.symbol for i in market.instruments() if i.expiry_ms == expiry][:4]
    base = sim.counts
    rows = [market.quote(s) for s in symbols]
    assert [r.symbol for r in rows] == symbols
    assert sim.counts["option_chain"] - base["option_chain"] == 1
    assert sim.counts["option_detail"] == base["option_detail"]
    book = market.order_book(symbols[0])
    sim.clock.advance(3)
    assert market.order_book(symbols[0]) is book
    sim.clock.advance(0.5)
    fresh = market.order_book(symbols[0])
    assert fresh.as_of == sim.clock.now()
    assert sim.counts["orderbook"] - base["orderbook"] == 2
    if fresh.bids and fresh.asks:
        assert fresh.best_bid < fresh.best_ask


def test_empty_book_side(sim, market):
    expiry = _later_expiries(market, 1)[0]
    symbol = next(r.symbol for r in market.chain(expiry) if r.bid > 0 and r.ask > 0)
    sim.market.set_empty_side(symbol, "bid")
    row = market.quote(symbol, max_age=0)
    assert row.bid == 0.0 and row.bid_size == 0.0 and row.ask > 0
    book = market.order_book(symbol, max_age=0)
    assert book.bids == () and book.best_bid is None and book.best_ask is not None


def test_frozen_index_detected_and_cleared(sim, market, alerts, caplog):
    caplog.set_level("WARNING", logger="market_data")
    sim.market.freeze_index(True)
    values = []
    for _ in range(2):
        values.append(market.index_price(max_age=0))
        sim.clock.advance(30)
        assert not market.index_frozen
    values.append(market.index_price(max_age=0))
    assert len(set(values)) == 1
    assert market.index_frozen
    assert [kind for kind, _ in alerts] == ["index_frozen"]
    assert any(r.levelname == "WARNING" and "frozen" in r.getMessage() for r in caplog.records)
    sim.market.freeze_index(False)
    sim.clock.advance(5)
    moved = market.index_price(max_age=0)
    assert moved != values[0]
    assert not market.index_frozen


def test_index_endpoint_failing_raises_without_fallback(sim, market):
    first = market.index_price()
    sim.clock.advance(31)
    sim.faults.add(FaultRule(endpoint="futures_symbols", mode="http_5xx"))
    with pytest.raises(TransportError):
        market.index_price()
    with pytest.raises(TransportError):
        market.index_price(max_age=10_000)
    assert first > 0
    expiry = _later_expiries(market, 1)[0]
    with pytest.raises(SelectionError):
        market.chain_snapshot([expiry])


def test_chain_snapshot_too_slow_raises(sim, market):
    expiries = _later_expiries(market, 2)
    sim.faults.add(FaultRule(endpoint="option_chain", mode="latency", seconds=3.0))
    with pytest.raises(SelectionError):
        market.chain_snapshot(expiries)
