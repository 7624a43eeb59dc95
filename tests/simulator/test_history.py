"""The recorded-history market: reading the Tardis ``options_chain`` layout, converting it to
Coincall's units, serving the latest row at or before the simulated time, and the exchange
filling only against the recorded book (docs/HISTORY.md)."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from clock import SimulatedClock
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from simulator import SimulatorConfig, start_simulator
from simulator.exchange import ExchangeConfig, SimExchange
from simulator.history import (
    COLUMNS,
    HistoryFormatError,
    HistoryMarket,
    build_market,
    coincall_symbol,
    expiry_kind_of,
    history_span,
    read_history,
    recorded_exchange_config,
)
from simulator.market import MarketConfig, MarketModel
from simulator.sample_history import SAMPLE_FILE_NAME, SampleSpec, sample_text

T0 = 1_736_121_600_000            # 2025-01-06 00:00 UTC, in ms
E1 = 1_736_150_400_000            # 2025-01-06 08:00 UTC: a daily expiry
E2 = 1_736_496_000_000            # 2025-01-10 08:00 UTC: a Friday (weekly)
CALL = "BTCUSD-6JAN25-95000-C"
PUT = "BTCUSD-6JAN25-95000-P"
SAMPLE = Path(__file__).resolve().parents[1] / "data" / SAMPLE_FILE_NAME


def _row(t_ms: int, symbol: str = "BTC-6JAN25-95000-C", *, bid: str = "", bid_amount: str = "", ask: str = "",
         ask_amount: str = "", mark: str = "0.0105", underlying: str = "95000", exchange: str = "deribit",
         expiry: int = E1, kind: str = "call", strike: str = "95000") -> dict[str, str]:
    return {
        "exchange": exchange, "symbol": symbol, "timestamp": str(t_ms * 1000), "local_timestamp": str(t_ms * 1000 + 7),
        "type": kind, "strike_price": strike, "expiration": str(expiry * 1000), "open_interest": "12.5",
        "last_price": "", "bid_price": bid, "bid_amount": bid_amount, "bid_iv": "48.50" if bid else "",
        "ask_price": ask, "ask_amount": ask_amount, "ask_iv": "52.25" if ask else "", "mark_price": mark,
        "mark_iv": "50.00", "underlying_index": "SYN.BTC-6JAN25", "underlying_price": underlying,
        "delta": "0.5", "gamma": "0.0001", "vega": "30.5", "theta": "-120.25", "rho": "0.5",
    }


def _write(path: Path, rows: list[dict[str, str]], *, comment: str | None = None) -> Path:
    lines = [] if comment is None else [f"# {comment}"]
    lines.append(",".join(COLUMNS))
    lines += [",".join(row[name] for name in COLUMNS) for row in rows]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _recording() -> list[dict[str, str]]:
    """A call with four rows a minute apart (both sides, both sides, no ask, no bid) and a put."""
    return [
        _row(T0, bid="0.0100", bid_amount="2.0", ask="0.0110", ask_amount="0.5"),
        _row(T0 + 2_000, "BTC-6JAN25-95000-P", kind="put", bid="0.0090", bid_amount="3.0", ask="0.0100",
             ask_amount="1.0", mark="0.0095"),
        _row(T0 + 60_000, bid="0.0101", bid_amount="1.0", ask="0.0108", ask_amount="0.3", underlying="95100"),
        _row(T0 + 120_000, bid="0.0099", bid_amount="1.0", underlying="95000"),
        _row(T0 + 180_000, ask="0.0112", ask_amount="1.0", underlying="95000"),
        _row(T0 + 5_000, "ETH-6JAN25-3500-C", strike="3500", bid="0.01", bid_amount="1", ask="0.02",
             ask_amount="1"),
        _row(T0 + 60_000, "BTC-10JAN25-100000-C", expiry=E2, strike="100000", bid="0.0050", bid_amount="1.0",
             ask="0.0060", ask_amount="1.0", mark="0.0055", underlying="95300"),
    ]


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    return _write(tmp_path / "chain.csv.gz", _recording())


def _market(path: Path, start_ms: int = T0, **kwargs: float) -> HistoryMarket:
    return HistoryMarket(read_history(path), MarketConfig(), start_ms, **kwargs)


# ------------------------------------------------------------------ reading and converting

def test_deribit_rows_become_coincall_symbols_usd_prices_and_lots(recorded: Path) -> None:
    data = read_history(recorded)
    assert sorted(data.rows) == ["BTCUSD-10JAN25-100000-C", CALL, PUT]
    assert data.skipped_rows == 1                         # the ETH row
    first = data.rows[CALL][0]
    assert first.time_ms == T0                            # microseconds -> milliseconds
    assert first.expiry_ms == E1 and first.strike == 95_000 and first.option_type == "C"
    assert first.bid == 950.0 and first.bid_size == 2.0   # 0.0100 BTC x 95,000
    assert first.ask == 1045.0 and first.ask_size == 0.5  # 0.0110 BTC x 95,000
    assert first.mark == pytest.approx(997.5)
    assert first.mark_iv == pytest.approx(0.5) and first.bid_iv == pytest.approx(0.485)
    assert first.ask_iv == pytest.approx(0.5225)
    assert first.underlying_price == 95_000 and first.delta == 0.5 and first.theta == -120.25
    second = data.rows[CALL][1]
    # 0.0101 x 95,100 = 960.51 -> the bid floors to the tick; 0.0108 x 95,100 = 1027.08 -> the ask ceils:
    # a converted quote is never better than the recorded one.
    assert (second.bid, second.ask) == (960.0, 1028.0)
    assert (data.start_ms, data.end_ms) == (T0, T0 + 180_000)
    assert history_span(recorded) == (T0, T0 + 180_000)


def test_symbol_mapping() -> None:
    assert coincall_symbol("BTC-27DEC24-60000-C", "deribit", "BTC") == "BTCUSD-27DEC24-60000-C"
    assert coincall_symbol("BTCUSD-5FEB26-80000-P", "coincall", "BTC") == "BTCUSD-5FEB26-80000-P"
    assert coincall_symbol("BTC-05FEB26-80000-P", "deribit", "BTC") == "BTCUSD-5FEB26-80000-P"
    assert coincall_symbol("ETH-27DEC24-3000-C", "deribit", "BTC") is None
    assert coincall_symbol("BTC_USDC-27DEC24-60000-C", "deribit", "BTC") is None
    with pytest.raises(HistoryFormatError):
        coincall_symbol("BTC-PERPETUAL", "deribit", "BTC")


def test_coincall_rows_are_already_usd_and_comment_lines_are_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "coincall.csv", [
        _row(T0, "BTCUSD-6JAN25-95000-C", exchange="coincall", bid="950", bid_amount="1.23", ask="1045",
             ask_amount="0.004", mark="997.5"),
    ], comment="prices in USD")
    row = read_history(path).rows[CALL][0]
    assert (row.bid, row.bid_size, row.mark) == (950.0, 1.23, 997.5)
    assert (row.ask, row.ask_size) == (0.0, 0.0)          # less than one 0.01 lot: no side


@pytest.mark.parametrize("change, message", [
    ({"exchange": "binance"}, "unknown exchange"),
    ({"expiration": str(E2 * 1000)}, "disagree"),
    ({"type": "put"}, "disagree"),
    ({"underlying_price": ""}, "underlying_price"),
])
def test_malformed_rows_are_refused_with_their_line(tmp_path: Path, change: dict[str, str], message: str) -> None:
    path = _write(tmp_path / "bad.csv", [_row(T0, bid="0.01", bid_amount="1"), {**_row(T0 + 1), **change}])
    with pytest.raises(HistoryFormatError, match=message) as raised:
        read_history(path)
    assert "line 3" in str(raised.value)


def test_a_file_without_the_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_text("exchange,symbol,timestamp,price\nderibit,BTC-PERPETUAL,1,2\n", encoding="utf-8")
    with pytest.raises(HistoryFormatError, match="missing columns"):
        read_history(path)


def test_expiry_kinds_follow_the_calendar() -> None:
    assert expiry_kind_of(E1) == "daily"
    assert expiry_kind_of(E2) == "weekly"
    assert expiry_kind_of(1_738_310_400_000) == "monthly"      # Friday 2025-01-31
    assert expiry_kind_of(1_743_148_800_000) == "quarterly"    # Friday 2025-03-28


# ------------------------------------------------------------------ what the market shows at time t

def test_the_quote_at_t_is_the_latest_row_at_or_before_t(recorded: Path) -> None:
    market = _market(recorded)
    assert market.instrument(PUT) is None                 # first recorded 2 s later: not listed yet
    with pytest.raises(KeyError):
        market.quote(PUT)
    assert [i.symbol for i in market.instruments()] == [CALL]
    quote = market.quote(CALL)
    assert (quote.bid, quote.ask, quote.bid_size, quote.ask_size) == (950.0, 1045.0, 2.0, 0.5)
    assert quote.time_ms == T0 and quote.index_price == 95_000
    market.advance_to(T0 + 59_999)                        # one ms before the next row: still the first
    assert market.quote(CALL).ask == 1045.0
    market.advance_to(T0 + 60_000)
    assert market.quote(CALL).ask == 1028.0
    assert market.book(CALL) == ([(960.0, 1.0)], [(1028.0, 0.3)])
    assert market.index_price() == 95_100                 # the nearest expiry's underlying
    assert market.expiries() == [E1, E2]
    market.advance_to(T0 + 30_000)                        # time never goes back
    assert market.now_ms == T0 + 60_000


def test_a_missing_side_is_an_empty_side_and_a_stale_row_shows_no_book(recorded: Path) -> None:
    market = _market(recorded, T0 + 120_000, stale_seconds=300)
    assert market.book(CALL) == ([(940.0, 1.0)], [])
    assert market.quote(CALL).ask == 0.0 and market.quote(CALL).ask_size == 0.0
    market.advance_to(T0 + 180_000)
    assert market.book(CALL) == ([], [(1064.0, 1.0)])
    market.advance_to(T0 + 180_000 + 300_000)
    stamp = market.quote_stamp
    assert market.book(CALL) == ([], [(1064.0, 1.0)])      # exactly the limit old: still shown
    market.advance_to(T0 + 180_000 + 300_001)
    assert market.book(CALL) == ([], [])
    assert market.quote_stamp != stamp
    quote = market.quote(CALL)
    assert (quote.bid, quote.ask, quote.mark) == (0.0, 0.0, pytest.approx(997.5))


def test_fault_switches_act_on_the_recorded_book(recorded: Path) -> None:
    market = _market(recorded)
    market.set_empty_side("*-C", "ask")
    assert market.book(CALL) == ([(950.0, 2.0)], [])
    market.set_empty_side("*", None)
    market.freeze_index(True)
    market.advance_to(T0 + 60_000)
    assert market.index_price() == 95_000 and market.index_frozen
    with pytest.raises(ValueError, match="recorded market"):
        market.set_scripted_path([(T0, 90_000.0)])


def test_state_round_trip_continues_the_replay(recorded: Path) -> None:
    market = _market(recorded, T0 + 60_000)
    market.set_empty_side(PUT, "bid")
    again = HistoryMarket.from_state(read_history(recorded), MarketConfig(), market.to_state())
    assert again.now_ms == T0 + 60_000 and again.book(PUT)[0] == [] and again.book(CALL) == market.book(CALL)
    other = read_history(_write(recorded.parent / "other.csv", _recording()[:3]))
    with pytest.raises(ValueError, match="another recording"):
        HistoryMarket.from_state(other, MarketConfig(), market.to_state())


def test_build_market_chooses_by_configuration(recorded: Path) -> None:
    assert isinstance(build_market(SimulatorConfig(), T0), MarketModel)
    assert isinstance(build_market(SimulatorConfig(history_file=str(recorded)), T0), HistoryMarket)
    with pytest.raises(ValueError, match="outside"):
        build_market(SimulatorConfig(history_file=str(recorded)), T0 - 1)
    with pytest.raises(ValueError):
        SimulatorConfig(history_file="")
    config = SimulatorConfig(history_file=str(recorded)).exchange_config()
    assert config.passive_fill_prob_per_min_at_touch == 0.0 and config.rfq_maker_count == 0


# ------------------------------------------------------------------ fills only against the recording

def _exchange(path: Path, start_ms: int = T0) -> tuple[SimulatedClock, SimExchange]:
    clock = SimulatedClock(start=start_ms / 1000, speed=0)
    # A touch probability of 1 on the base config: the recorded market must switch it off.
    base = ExchangeConfig(passive_fill_prob_per_min_at_touch=1.0)
    exchange = SimExchange(recorded_exchange_config(base), _market(path, start_ms), clock)
    return clock, exchange


def _buy(exchange: SimExchange, price: float, qty: float, tif: str = "GTC", side: int = 1) -> dict:
    account = exchange.default_account
    order_id = exchange.create_order(account, {"symbol": CALL, "qty": qty, "tradeSide": side, "tradeType": 1,
                                               "price": price, "timeInForce": tif})
    return exchange.query_order(account, {"orderId": str(order_id)})


def test_a_buy_crossing_the_recorded_ask_fills_at_the_ask_up_to_its_amount(recorded: Path) -> None:
    _clock, exchange = _exchange(recorded)
    view = _buy(exchange, 1200, 2.0, "IOC")
    assert view["fillQty"] == 0.5 and view["avgPrice"] == 1045.0   # the recorded amount, at the recorded ask
    assert view["state"] == 3                                      # the rest cancelled, not filled at mid
    again = _buy(exchange, 1200, 1.0, "IOC")
    assert again["fillQty"] == 0.0                                 # the recorded amount is taken


def test_a_resting_order_fills_only_when_a_later_row_trades_through_it(recorded: Path) -> None:
    clock, exchange = _exchange(recorded)
    resting = _buy(exchange, 1030, 1.0)
    assert resting["fillQty"] == 0.0
    clock.advance(59.9)                        # at the touch of nothing for a minute: no fill by chance
    exchange.sync()
    assert exchange.query_order(exchange.default_account, {"orderId": str(resting["orderId"])})["fillQty"] == 0.0
    clock.advance(1.0)                         # the next row offers 0.3 at 1028 <= 1030
    exchange.sync()
    view = exchange.query_order(exchange.default_account, {"orderId": str(resting["orderId"])})
    assert view["fillQty"] == 0.3 and view["avgPrice"] == 1030.0 and view["state"] == 2


def test_a_missing_ask_gives_no_fill_for_a_buy_and_a_missing_bid_none_for_a_sell(recorded: Path) -> None:
    clock, exchange = _exchange(recorded, T0 + 120_000)
    assert _buy(exchange, 9000, 1.0, "IOC")["fillQty"] == 0.0      # no ask recorded: nothing to buy
    resting = _buy(exchange, 1500, 1.0)
    clock.advance(30)
    exchange.sync()
    assert exchange.query_order(exchange.default_account, {"orderId": str(resting["orderId"])})["fillQty"] == 0.0
    exchange.cancel_order(exchange.default_account, {"orderId": str(resting["orderId"])})
    clock.advance(60)                                              # T0 + 210 s: an ask, no bid
    exchange.sync()
    assert _buy(exchange, 1, 1.0, "IOC", side=2)["fillQty"] == 0.0  # no bid recorded: nothing to sell to


def test_expiry_settles_at_the_underlying_recorded_with_it(tmp_path: Path) -> None:
    rows = [_row(T0, bid="0.0100", bid_amount="2.0", ask="0.0110", ask_amount="0.5"),
            _row(E1 - 60_000, bid="0.0300", bid_amount="1.0", ask="0.0320", ask_amount="1.0", underlying="97250.5"),
            _row(E1 + 3_600_000, "BTC-10JAN25-100000-C", expiry=E2, strike="100000", bid="0.0050",
                 bid_amount="1.0", ask="0.0060", ask_amount="1.0", underlying="99000")]
    path = _write(tmp_path / "expiry.csv", rows)
    clock, exchange = _exchange(path)
    account = exchange.default_account
    exchange.set_position(account, CALL, 1.0, 1000.0)
    cash = exchange.cash_of(account)
    clock.set_time((E1 + 1_000) / 1000)
    exchange.sync()
    assert exchange.position_of(account, CALL) == 0.0
    # intrinsic 97,250.5 - 95,000 = 2,250.5 against an average price of 1,000; a daily pays no delivery fee
    assert exchange.cash_of(account) == pytest.approx(cash + 1250.5)
    prices = exchange.delivery_prices(None, {})["list"]
    assert [(p["date"], float(p["delivery_price"])) for p in prices] == [(E1, 97_250.5)]


# ------------------------------------------------------------------ the synthetic sample and the wire

def test_the_committed_sample_is_what_the_generator_makes() -> None:
    committed = gzip.decompress(SAMPLE.read_bytes()).decode("utf-8")
    assert committed == sample_text(SampleSpec())
    assert SAMPLE.stat().st_size < 1_000_000
    data = read_history(SAMPLE)
    rows = [row for symbol_rows in data.rows.values() for row in symbol_rows]
    assert any(row.bid == 0 for row in rows) and any(row.ask == 0 for row in rows)
    assert len({row.expiry_ms for row in rows}) == 3


def test_a_client_over_loopback_trades_at_the_recorded_price(recorded: Path) -> None:
    clock = SimulatedClock(start=T0 / 1000, speed=0)
    with start_simulator(SimulatorConfig(history_file=str(recorded)), clock=clock) as sim:
        client = CoincallClient(ClientSettings(base_url=sim.base_url),
                                Credentials(sim.api_key, sim.api_secret, source="test"), clock)
        try:
            assert client.index_price() == 95_000
            chain = client.option_chain(E1)
            call = chain[0]["callOption"]
            assert (call["symbol"], call["bid"], call["ask"], call["askSize"]) == (CALL, 950.0, 1045.0, 0.5)
            order_id = client.create_order(CALL, 1.0, 1, 1100, 101000000001011001, time_in_force="IOC")
            order = client.query_order(order_id=order_id)
            assert float(order["fillQty"]) == 0.5 and float(order["avgPrice"]) == 1045.0
        finally:
            client.close()
