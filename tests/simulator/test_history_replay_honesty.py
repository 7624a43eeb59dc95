"""A replay trades and settles only on what the recording shows (docs/HISTORY.md).

Two ways a replay used to show what its recording did not:

* the venue's perpetual (the recording holds none) kept a synthetic book around an index that
  never went stale, so during a recording gap, with every option book rightly empty, a hedge
  could still buy the perpetual around a price nobody had refreshed for an hour;
* the index and the delivery price held the last row of an expiry however old it was: an
  expiry whose rows stopped at 00:00 settled at 08:00 on the 00:00 price while the other
  expiries' rows showed the market four thousand dollars higher.

Simulated clock throughout (no sleeps).
"""
from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from clock import SimulatedClock
from simulator import SimulatorConfig
from simulator.exchange import ExchangeConfig, SimExchange
from simulator.history import (
    COLUMNS,
    HistoryMarket,
    RecordedPerpMarket,
    read_history,
    recorded_exchange_config,
)
from simulator.market import MarketConfig, MarketModel
from simulator.markets import Markets, build_markets
from simulator.perpetuals import PerpMarket

T0 = 1_736_121_600_000            # 2025-01-06 00:00 UTC
E1 = 1_736_150_400_000            # 2025-01-06 08:00 UTC: a daily expiry
E2 = 1_736_496_000_000            # 2025-01-10 08:00 UTC
HOUR = 3_600_000
MINUTE = 60_000
STALE_MS = 300_000                # the default history_stale_seconds
CALL = "BTCUSD-6JAN25-95000-C"


def _row(t_ms: int, *, underlying: str = "95000", bid: str = "0.0100", bid_amount: str = "2.0",
         ask: str = "0.0110", ask_amount: str = "0.5") -> dict[str, str]:
    """A row of the 6JAN25 95,000 call (expiry E1)."""
    return {
        "exchange": "deribit", "symbol": "BTC-6JAN25-95000-C", "timestamp": str(t_ms * 1000),
        "local_timestamp": str(t_ms * 1000), "type": "call", "strike_price": "95000",
        "expiration": str(E1 * 1000), "open_interest": "", "last_price": "", "bid_price": bid,
        "bid_amount": bid_amount, "bid_iv": "", "ask_price": ask, "ask_amount": ask_amount, "ask_iv": "",
        "mark_price": "0.0105", "mark_iv": "50", "underlying_index": "SYN.BTC-6JAN25",
        "underlying_price": underlying, "delta": "0.5", "gamma": "0.0001", "vega": "30", "theta": "-120",
        "rho": "0.5",
    }


def _row_e2(t_ms: int, underlying: str) -> dict[str, str]:
    """A row of the 10JAN25 100,000 call (expiry E2)."""
    row = _row(t_ms, underlying=underlying, bid="0.0500", bid_amount="1.0", ask="0.0520", ask_amount="1.0")
    row.update(symbol="BTC-10JAN25-100000-C", strike_price="100000", expiration=str(E2 * 1000),
               underlying_index="SYN.BTC-10JAN25")
    return row


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    text = "\n".join([",".join(COLUMNS), *(",".join(row[name] for name in COLUMNS) for row in rows)]) + "\n"
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


def _exchange(path: Path, start_ms: int = T0) -> tuple[SimulatedClock, SimExchange, HistoryMarket]:
    clock = SimulatedClock(start=start_ms / 1000, speed=0)
    market = HistoryMarket(read_history(path), MarketConfig(), start_ms)
    return clock, SimExchange(recorded_exchange_config(ExchangeConfig()), market, clock), market


def _perp_buy(exchange: SimExchange, price: float, qty: float = 1.0) -> dict:
    account = exchange.default_account
    order_id = exchange.futures_create_order(account, {"symbol": "BTCUSD", "qty": qty, "tradeSide": 1,
                                                       "tradeType": 1, "price": round(price, 1),
                                                       "timeInForce": "IOC"})
    return exchange.futures_query_order(account, {"orderId": str(order_id)})


# ------------------------------------------------------------------ bug A: the perpetual in a gap

@pytest.fixture
def gap(tmp_path: Path) -> Path:
    """Rows at T0, then nothing for two hours; the recording resumes at 97,000 (and has no perpetual)."""
    return _write(tmp_path / "gap.csv.gz", [_row(T0), _row(T0 + 2 * HOUR, underlying="97000")])


def test_the_perpetual_trades_while_the_recorded_index_is_fresh(gap: Path) -> None:
    _clock, exchange, market = _exchange(gap)
    assert isinstance(exchange.market.perp("BTCUSD"), RecordedPerpMarket)
    assert market.index_fresh()
    bids, asks = exchange.market.book("BTCUSD")
    assert bids and asks and abs(asks[0][0] - 95_000) < 50      # the model's book around the recorded index
    view = _perp_buy(exchange, 95_000 * 1.01)
    assert float(view["fillQty"]) == 1.0


def test_the_perpetual_shows_no_book_and_fills_nothing_during_a_recording_gap(gap: Path) -> None:
    clock, exchange, market = _exchange(gap)
    clock.advance(3600)                                          # one hour into the gap
    exchange.sync()
    assert exchange.market.primary.book(CALL) == ([], [])        # the options: nothing to trade, rightly
    assert market.index_price() == 95_000 and not market.index_fresh()
    assert exchange.market.book("BTCUSD") == ([], [])            # nor the perpetual
    ticker = exchange.market.perp("BTCUSD").ticker()
    assert (ticker.bid, ticker.ask) == (0.0, 0.0)
    view = _perp_buy(exchange, 95_000 * 1.01)
    assert float(view["fillQty"]) == 0.0
    assert exchange.futures_query_order(exchange.default_account, {"orderId": str(view["orderId"])})["fillQty"] \
        in (0, 0.0, "0")


def test_the_perpetual_turns_stale_exactly_with_the_recording_and_comes_back_with_it(gap: Path) -> None:
    clock, exchange, market = _exchange(gap)
    clock.set_time((T0 + STALE_MS) / 1000)                       # exactly the limit old: still fresh
    exchange.sync()
    assert market.index_fresh() and exchange.market.book("BTCUSD")[1]
    clock.set_time((T0 + STALE_MS + 1) / 1000)
    exchange.sync()
    assert not market.index_fresh() and exchange.market.book("BTCUSD") == ([], [])
    clock.set_time((T0 + 2 * HOUR) / 1000)                       # the recording resumes at 97,000
    exchange.sync()
    assert market.index_fresh() and market.index_price() == 97_000
    asks = exchange.market.book("BTCUSD")[1]
    assert asks and abs(asks[0][0] - 97_000) < 50
    assert float(_perp_buy(exchange, 97_000 * 1.01)["fillQty"]) == 1.0


def test_the_synthetic_market_keeps_its_perpetuals_unchanged(gap: Path) -> None:
    synthetic = Markets.of(MarketModel(MarketConfig(seed=7), T0), seed=7)
    assert [type(perp) for perp in synthetic.perps()] == [PerpMarket]
    assert all(type(perp) is PerpMarket for perp in build_markets(SimulatorConfig(), T0).perps())
    replay = build_markets(SimulatorConfig(history_file=str(gap)), T0)
    assert [type(perp) for perp in replay.perps()] == [RecordedPerpMarket]   # replays are BTC-only


# ------------------------------------------------------------------ bug B: the index and the delivery price

@pytest.fixture
def stopped_expiry(tmp_path: Path) -> Path:
    """The 6JAN25 call's rows stop at 00:00 (95,000); the 10JAN25 call is recorded every hour from
    00:00 to 09:00, its underlying rising 500 an hour (99,000 at 08:00, the 6JAN25 expiry)."""
    rows = [_row(T0)] + [_row_e2(T0 + h * HOUR, str(95_000 + 500 * h)) for h in range(10)]
    return _write(tmp_path / "stopped.csv.gz", rows)


def test_a_stale_expiry_does_not_hold_the_index(stopped_expiry: Path) -> None:
    market = HistoryMarket(read_history(stopped_expiry), MarketConfig(), T0)
    assert market.index_price() == 95_000 and market.index_fresh()
    market.advance_to(T0 + HOUR)                         # the 6JAN25 row is an hour old: the 10JAN25 one counts
    assert market.index_price() == 95_500 and market.index_fresh()
    market.advance_to(T0 + HOUR + STALE_MS + 1)          # nothing fresh: the latest recorded value, stale
    assert market.index_price() == 95_500 and not market.index_fresh()
    market.advance_to(T0 + 7 * HOUR)
    assert market.index_price() == 98_500 and market.index_fresh()


def test_an_expiry_settles_on_the_underlying_recorded_in_its_window_not_on_its_own_stale_row(
        stopped_expiry: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock, exchange, market = _exchange(stopped_expiry)
    account = exchange.default_account
    exchange.set_position(account, CALL, -1.0, 1045.0)   # short one 95,000 call sold at 1,045
    cash = exchange.cash_of(account)
    clock.set_time((E1 + 1_000) / 1000)
    with caplog.at_level(logging.WARNING, logger="simulator.history"):
        exchange.sync()
    assert exchange.position_of(account, CALL) == 0.0
    delivery = float(exchange.delivery_prices(None, {})["list"][0]["delivery_price"])
    # The only underlying recorded within the limit in the 30 minutes before 08:00 is 10JAN25's at 08:00.
    assert delivery == 99_000 and exchange.market.index_of("BTC") == 99_000
    # 4,000 intrinsic paid against the 1,045 premium (a daily pays no delivery fee)
    assert exchange.cash_of(account) == pytest.approx(cash + 1_045.0 - 4_000.0)
    [settled] = market.settlements()
    assert settled.covered and settled.expiry_ms == E1 and settled.fresh_ms == 1
    assert not caplog.records                             # covered (thinly): no warning


def test_an_expiry_with_nothing_fresh_in_its_window_is_reported_not_covered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 6JAN25 recorded at 00:00 only, 10JAN25 at 07:00 (97,000) and 09:00: nothing within 300 s of
    # any instant of 07:30-08:00.
    path = _write(tmp_path / "uncovered.csv.gz", [_row(T0), _row_e2(T0 + 7 * HOUR, "97000"),
                                                  _row_e2(T0 + 9 * HOUR, "98000")])
    clock, exchange, market = _exchange(path)
    account = exchange.default_account
    exchange.set_position(account, CALL, 1.0, 1000.0)
    clock.set_time((E1 + 1_000) / 1000)
    with caplog.at_level(logging.WARNING, logger="simulator.history"):
        exchange.sync()
    assert exchange.position_of(account, CALL) == 0.0
    [settled] = market.settlements()
    # The latest underlying recorded before the expiry (an hour old), not the 6JAN25 row of 00:00;
    # and said to be outside what the recording supports.
    assert not settled.covered and settled.price == 97_000 and settled.price_time_ms == T0 + 7 * HOUR
    assert market.delivery_price(E1) == 97_000
    assert any("NOT covered" in record.getMessage() for record in caplog.records)
    caplog.clear()
    market.delivery_prices()
    market.settlements()
    assert not caplog.records                             # said once


def test_a_well_covered_expiry_settles_as_before(tmp_path: Path) -> None:
    # The expiry's own rows every minute through its last 30 minutes, at one price: the mean of
    # the window is the price recorded last before the expiry, as it always settled.
    rows = [_row(T0, underlying="94000")]
    rows += [_row(E1 - m * MINUTE, underlying="97250.5") for m in range(30, 0, -1)]
    rows += [_row_e2(E1 + HOUR, "99000")]
    clock, exchange, market = _exchange(_write(tmp_path / "covered.csv.gz", rows))
    account = exchange.default_account
    exchange.set_position(account, CALL, 1.0, 1000.0)
    cash = exchange.cash_of(account)
    clock.set_time((E1 + 1_000) / 1000)
    exchange.sync()
    assert exchange.position_of(account, CALL) == 0.0
    assert exchange.cash_of(account) == pytest.approx(cash + 1_250.5)    # 2,250.5 intrinsic - 1,000 paid
    assert [(p["date"], float(p["delivery_price"])) for p in exchange.delivery_prices(None, {})["list"]] == \
        [(E1, 97_250.5)]
    [settled] = market.settlements()
    assert settled.covered and settled.fresh_ms == settled.window_ms == 1_800_000


def test_the_delivery_price_is_the_time_weighted_mean_of_the_fresh_index_over_the_window(tmp_path: Path) -> None:
    # 07:30-07:45 at 96,000, 07:45-08:00 at 98,000 (rows every minute): the mean is 97,000.
    rows = [_row(E1 - m * MINUTE, underlying="96000" if m > 15 else "98000") for m in range(30, 0, -1)]
    rows.insert(0, _row(E1 - 31 * MINUTE, underlying="96000"))
    market = HistoryMarket(read_history(_write(tmp_path / "mean.csv.gz", rows)), MarketConfig(), E1 - 31 * MINUTE)
    market.advance_to(E1 - 20 * MINUTE)
    assert market.estimated_delivery_price(E1) == 96_000          # the running mean of the window so far
    assert market.delivery_price(E1) is None                        # not passed yet
    market.advance_to(E1)
    assert market.delivery_price(E1) == pytest.approx(97_000, abs=0.01)
    assert market.estimated_delivery_price(E1) == market.delivery_price(E1)


def test_a_restored_replay_settles_the_same(stopped_expiry: Path) -> None:
    market = HistoryMarket(read_history(stopped_expiry), MarketConfig(), T0 + HOUR)
    again = HistoryMarket.from_state(read_history(stopped_expiry), MarketConfig(), market.to_state())
    for each in (market, again):
        each.advance_to(E1 + 1_000)
    assert again.delivery_price(E1) == market.delivery_price(E1) == 99_000
    assert again.index_fresh() == market.index_fresh()
