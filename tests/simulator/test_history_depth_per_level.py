"""Depth a fill took from the recorded book stays taken until THAT side's recorded level changes
(docs/HISTORY.md, "Depth a fill took").

The exchange once forgot the depth taken whenever anything in the symbol's book changed: with
real data the bid moves nearly every row, so a recorded ask amount a buyer took came back and
was sold again (one recorded 0.5 sold twice, a resting buy filled 0.6 against a recorded 0.3).
Depth is now kept per side and per level (price, recorded amount) and comes back only when that
level changes (its price or amount, in any row since the take) or a row arrives after a stale gap.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from clock import SimulatedClock
from simulator.exchange import ExchangeConfig, SimExchange
from simulator.history import COLUMNS, HistoryMarket, read_history, recorded_exchange_config
from simulator.market import MarketConfig

T0 = 1_736_121_600_000            # 2025-01-06 00:00 UTC, in ms
E1 = 1_736_150_400_000            # 2025-01-06 08:00 UTC: the call's (daily) expiry
CALL = "BTCUSD-6JAN25-95000-C"
BUY, SELL = 1, 2


def _row(t_ms: int, *, bid: str = "", bid_amount: str = "", ask: str = "", ask_amount: str = "") -> dict[str, str]:
    """A Deribit row of the 95,000 call; prices in BTC at an underlying of 95,000 (0.0110 -> 1045 USD)."""
    return {
        "exchange": "deribit", "symbol": "BTC-6JAN25-95000-C", "timestamp": str(t_ms * 1000),
        "local_timestamp": str(t_ms * 1000), "type": "call", "strike_price": "95000",
        "expiration": str(E1 * 1000), "open_interest": "", "last_price": "", "bid_price": bid,
        "bid_amount": bid_amount, "bid_iv": "", "ask_price": ask, "ask_amount": ask_amount, "ask_iv": "",
        "mark_price": "0.0105", "mark_iv": "50", "underlying_index": "SYN.BTC-6JAN25", "underlying_price": "95000",
        "delta": "0.5", "gamma": "0.0001", "vega": "30", "theta": "-120", "rho": "0.5",
    }


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    text = "\n".join([",".join(COLUMNS), *(",".join(row[name] for name in COLUMNS) for row in rows)]) + "\n"
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


def _exchange(path: Path, start_ms: int = T0) -> tuple[SimulatedClock, SimExchange]:
    clock = SimulatedClock(start=start_ms / 1000, speed=0)
    market = HistoryMarket(read_history(path), MarketConfig(), start_ms)
    return clock, SimExchange(recorded_exchange_config(ExchangeConfig()), market, clock)


def _order(exchange: SimExchange, price: float, qty: float, tif: str = "IOC", side: int = BUY) -> dict:
    account = exchange.default_account
    order_id = exchange.create_order(account, {"symbol": CALL, "qty": qty, "tradeSide": side, "tradeType": 1,
                                               "price": price, "timeInForce": tif})
    return exchange.query_order(account, {"orderId": str(order_id)})


def _filled(exchange: SimExchange, order_id: int) -> float:
    return exchange.query_order(exchange.default_account, {"orderId": str(order_id)})["fillQty"]


def _at(clock: SimulatedClock, exchange: SimExchange, t_ms: int) -> None:
    clock.set_time(t_ms / 1000)
    exchange.sync()


# ------------------------------------------------------------------ an unchanged level stays taken

def test_a_taker_cannot_take_an_unchanged_ask_level_twice_when_only_the_bid_moved(tmp_path: Path) -> None:
    # The ask (1045 x 0.5) is the same in both rows; only the bid moved.
    path = _write(tmp_path / "h.csv.gz", [
        _row(T0, bid="0.0100", bid_amount="2.0", ask="0.0110", ask_amount="0.5"),
        _row(T0 + 60_000, bid="0.0101", bid_amount="2.0", ask="0.0110", ask_amount="0.5"),
    ])
    clock, exchange = _exchange(path)
    first = _order(exchange, 1045, 0.5)
    assert first["fillQty"] == 0.5 and first["avgPrice"] == 1045.0
    _at(clock, exchange, T0 + 61_000)
    assert _order(exchange, 1045, 0.5)["fillQty"] == 0.0      # the recorded 0.5 is sold once
    # The bid side is its own level: nothing was taken from it.
    sold = _order(exchange, 959, 2.0, side=SELL)
    assert sold["fillQty"] == 2.0 and sold["avgPrice"] == 959.0


def test_a_resting_order_cannot_take_an_unchanged_ask_level_twice(tmp_path: Path) -> None:
    # The ask trades through a resting buy at 1040 at T0+60 (1036 x 0.3); at T0+120 only the bid changes.
    path = _write(tmp_path / "h.csv.gz", [
        _row(T0, bid="0.0100", bid_amount="2.0", ask="0.0112", ask_amount="1.0"),
        _row(T0 + 60_000, bid="0.0100", bid_amount="2.0", ask="0.0109", ask_amount="0.3"),
        _row(T0 + 120_000, bid="0.0102", bid_amount="1.0", ask="0.0109", ask_amount="0.3"),
    ])
    clock, exchange = _exchange(path)
    resting = _order(exchange, 1040, 1.0, tif="GTC")
    assert resting["fillQty"] == 0.0
    _at(clock, exchange, T0 + 90_000)
    assert _filled(exchange, resting["orderId"]) == 0.3
    _at(clock, exchange, T0 + 150_000)
    assert _filled(exchange, resting["orderId"]) == 0.3      # not 0.6 against a recorded 0.3


def test_a_bid_taken_stays_taken_while_only_the_ask_moves(tmp_path: Path) -> None:
    path = _write(tmp_path / "h.csv.gz", [
        _row(T0, bid="0.0100", bid_amount="0.4", ask="0.0110", ask_amount="0.5"),
        _row(T0 + 60_000, bid="0.0100", bid_amount="0.4", ask="0.0111", ask_amount="0.7"),
    ])
    clock, exchange = _exchange(path)
    assert _order(exchange, 950, 1.0, side=SELL)["fillQty"] == 0.4
    _at(clock, exchange, T0 + 61_000)
    assert _order(exchange, 950, 1.0, side=SELL)["fillQty"] == 0.0


def test_depth_taken_survives_a_save_and_restore(tmp_path: Path) -> None:
    path = _write(tmp_path / "h.csv.gz", [
        _row(T0, bid="0.0100", bid_amount="2.0", ask="0.0110", ask_amount="0.5"),
        _row(T0 + 60_000, bid="0.0101", bid_amount="2.0", ask="0.0110", ask_amount="0.5"),
    ])
    clock, exchange = _exchange(path)
    assert _order(exchange, 1045, 0.5)["fillQty"] == 0.5
    state = json.loads(json.dumps(exchange.to_state()))
    market = HistoryMarket(read_history(path), MarketConfig(), T0)
    restored = SimExchange.from_state(recorded_exchange_config(ExchangeConfig()), market, clock, state)
    _at(clock, restored, T0 + 61_000)
    assert _order(restored, 1045, 0.5)["fillQty"] == 0.0


# ------------------------------------------------------------------ a changed level is new depth

@pytest.mark.parametrize("later_ask, later_amount, price, qty", [
    ("0.0110", "0.4", 1045, 0.4),     # the same price, a new amount
    ("0.0111", "0.5", 1055, 0.5),     # a new price (0.0111 x 95,000 = 1054.5, rounded up to the tick)
])
def test_depth_comes_back_when_the_taken_level_itself_changes(
        tmp_path: Path, later_ask: str, later_amount: str, price: float, qty: float) -> None:
    path = _write(tmp_path / "h.csv.gz", [
        _row(T0, bid="0.0100", bid_amount="2.0", ask="0.0110", ask_amount="0.5"),
        _row(T0 + 60_000, bid="0.0100", bid_amount="2.0", ask=later_ask, ask_amount=later_amount),
    ])
    clock, exchange = _exchange(path)
    assert _order(exchange, 1045, 0.5)["fillQty"] == 0.5
    assert _order(exchange, 1045, 0.5)["fillQty"] == 0.0       # taken, in the same row
    _at(clock, exchange, T0 + 61_000)
    again = _order(exchange, price, 1.0)
    assert again["fillQty"] == qty and again["avgPrice"] == price


def test_depth_comes_back_when_the_level_changed_and_changed_back_between_two_looks(tmp_path: Path) -> None:
    # Nobody looks at T0+60, when the ask was another level: the 1045 x 0.5 of T0+120 is a new one.
    path = _write(tmp_path / "h.csv.gz", [
        _row(T0, bid="0.0100", bid_amount="2.0", ask="0.0110", ask_amount="0.5"),
        _row(T0 + 60_000, bid="0.0100", bid_amount="2.0", ask="0.0111", ask_amount="0.5"),
        _row(T0 + 120_000, bid="0.0100", bid_amount="2.0", ask="0.0110", ask_amount="0.5"),
    ])
    clock, exchange = _exchange(path)
    assert _order(exchange, 1045, 0.5)["fillQty"] == 0.5
    _at(clock, exchange, T0 + 121_000)
    assert _order(exchange, 1045, 0.5)["fillQty"] == 0.5


def test_depth_comes_back_with_a_row_after_a_stale_gap(tmp_path: Path) -> None:
    # The same level, recorded again after more than the staleness limit (300 s) without a row.
    path = _write(tmp_path / "h.csv.gz", [
        _row(T0, bid="0.0100", bid_amount="2.0", ask="0.0110", ask_amount="0.5"),
        _row(T0 + 400_000, bid="0.0100", bid_amount="2.0", ask="0.0110", ask_amount="0.5"),
    ])
    clock, exchange = _exchange(path)
    assert _order(exchange, 1045, 0.5)["fillQty"] == 0.5
    _at(clock, exchange, T0 + 350_000)
    assert _order(exchange, 1045, 0.5)["fillQty"] == 0.0       # stale: no book at all
    _at(clock, exchange, T0 + 401_000)
    assert _order(exchange, 1045, 0.5)["fillQty"] == 0.5
