"""Builders shared by the exchange-model tests (handlers called directly, no HTTP)."""
from __future__ import annotations

from datetime import datetime, timezone

from clock import SimulatedClock
from simulator.exchange import ExchangeConfig, SimExchange
from simulator.market import MarketConfig, MarketModel

START = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc).timestamp()
WEEKLY_6MAR26 = int(datetime(2026, 3, 6, 8, 0, tzinfo=timezone.utc).timestamp() * 1000)
DAILY_3MAR26 = int(datetime(2026, 3, 3, 8, 0, tzinfo=timezone.utc).timestamp() * 1000)


def build(**overrides):
    """Clock, market and exchange at START; passive fills off unless a test asks for them."""
    overrides.setdefault("passive_fill_prob_per_min_at_touch", 0.0)
    clock = SimulatedClock(start=START, speed=0)
    market = MarketModel(MarketConfig(seed=7), clock.now_ms())
    exchange = SimExchange(ExchangeConfig(**overrides), market, clock)
    return clock, market, exchange


def chain_symbol(exchange, expiry: int, strike: float, kind: str = "C") -> str:
    """The symbol of the listed strike nearest ``strike`` in ``expiry``'s chain."""
    rows = exchange.option_chain(None, {"index": "BTCUSD", "endTime": str(expiry)})
    row = min(rows, key=lambda r: abs(r["strike"] - strike))
    return row["callOption" if kind == "C" else "putOption"]["symbol"]
