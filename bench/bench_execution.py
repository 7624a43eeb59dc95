"""Benchmark of the execution engines against the seeded in-process simulator.

Run:  python bench/bench_execution.py [--trades 50] [--seed 7] [--engines naive,basic,phased,smart,rfq]

For every (engine, structure) pair, ``--trades`` trades are opened one after another on a
fresh simulator with the same seed (so every engine meets the same market), 5 simulated
minutes apart, and positions are flattened by hand between trades. Engines:

* ``naive``  - crosses the spread at once (limit 10 % through the far touch), no requotes;
* ``basic``  - the limit engine with the seed defaults (aggressive +2 %, requote every 30 s);
* ``phased`` - the limit engine with ``ExecutionParams.phased()`` (fair, fair 0.5, aggressive);
* ``smart``  - ``SmartOrderbookExecutor`` with the default ``SmartExecConfig`` (5 chunks, top of book);
* ``rfq``    - ``RFQExecutor`` with the default ``RFQParams`` (gate: no worse than the book), no fallback.

Structures: ``single`` (buy an ATM call), ``strangle`` (buy the calls/puts one strike out),
``iron_condor`` (sell one strike out, buy two strikes out). Every leg trades 0.6 BTC (so even a
single-leg RFQ clears the exchange's $50,000 minimum).

Prints one row per (engine, structure): mean cost versus mid in % of the half-spread
(0 = mid, 100 = paid the touch, negative = better than mid), fill rate, median seconds to
fill and mean orders (creates, or RFQ accepts) sent per trade. Asserts nothing (benchmarks are not tests).

Extension point: ``ENGINES`` maps a name to ``factory(rig) -> (engine, params)`` where
``engine.start(trade, legs, intent, params)`` returns a job with the shared interface
(BEHAVIOUR.md §1.7); smart and RFQ rows are added by registering their factories.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clock import SimulatedClock  # noqa: E402
from coincall_client import ClientSettings, CoincallClient  # noqa: E402
from config import Credentials  # noqa: E402
from market_data import MarketData  # noqa: E402
from multileg_orderbook import SmartExecConfig, SmartOrderbookExecutor  # noqa: E402
from rfq import RFQExecutor, RFQParams  # noqa: E402
from simulator import SimulatorConfig, start_simulator  # noqa: E402
from execution_job import JobStatus, LegTarget  # noqa: E402
from contracts import Side  # noqa: E402
from order_ledger import Intent, OrderLedger  # noqa: E402

BUY, SELL = Side.BUY, Side.SELL
from trade_execution import ExecutionParams, LimitFillManager  # noqa: E402

# Tuesday 2026-03-03 10:30 UTC: the next daily expiry is almost a day away.
START = datetime(2026, 3, 3, 10, 30, tzinfo=timezone.utc).timestamp()
LEG_QTY = 0.6
TICK_SECONDS = 2.0
MAX_TRADE_SECONDS = 900.0
SECONDS_BETWEEN_TRADES = 300.0
STRUCTURES = ("single", "strangle", "iron_condor")


@dataclass
class Rig:
    """One simulator plus the product objects wired to it (no daemon, no lifecycle)."""

    sim: Any
    clock: SimulatedClock
    client: CoincallClient
    market: MarketData
    ledger: OrderLedger
    limit: LimitFillManager
    trades_run: int = 0
    extras: dict[str, Any] = field(default_factory=dict)   # room for smart / RFQ executors

    def close(self) -> None:
        self.client.close()
        self.sim.stop()


def make_rig(seed: int = 7) -> Rig:
    clock = SimulatedClock(start=START, speed=0)
    sim = start_simulator(SimulatorConfig(seed=seed), clock=clock)
    client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                            Credentials(sim.api_key, sim.api_secret, source="bench"), clock)
    market = MarketData(client, clock)
    ledger = OrderLedger(client, clock)
    return Rig(sim, clock, client, market, ledger, LimitFillManager(ledger, market, clock))


EngineFactory = Callable[[Rig], "tuple[Any, Any]"]

ENGINES: dict[str, EngineFactory] = {
    "naive": lambda rig: (rig.limit, ExecutionParams(aggressive_buffer_pct=10.0, max_requote_rounds=0)),
    "basic": lambda rig: (rig.limit, ExecutionParams()),
    "phased": lambda rig: (rig.limit, ExecutionParams.phased()),
    "smart": lambda rig: (rig.extras.setdefault("smart", SmartOrderbookExecutor(rig.ledger, rig.market, rig.clock)),
                          SmartExecConfig()),
    "rfq": lambda rig: (rig.extras.setdefault("rfq", RFQExecutor(rig.client, rig.ledger, rig.market, rig.clock,
                                                                  limit=rig.limit)),
                        RFQParams(open_fallback=None)),
}


def structure_legs(structure: str, rig: Rig) -> list[LegTarget]:
    """The legs of ``structure`` on the next daily expiry, strikes chosen around the index."""
    index = rig.market.index_price()
    listed = [i for i in rig.market.instruments() if i.is_active and i.expiry_ms / 1000.0 > rig.clock.now() + 3600]
    expiry = min(i.expiry_ms for i in listed)
    strikes = sorted({i.strike for i in listed if i.expiry_ms == expiry})
    atm = min(range(len(strikes)), key=lambda k: abs(strikes[k] - index))
    symbol = {(i.strike, i.option_type): i.symbol for i in listed if i.expiry_ms == expiry}

    def leg(position: int, offset: int, kind: str, side: int) -> LegTarget:
        strike = strikes[max(0, min(len(strikes) - 1, atm + offset))]
        return LegTarget(position, symbol[(strike, kind)], side, LEG_QTY)

    if structure == "single":
        return [leg(0, 0, "C", BUY)]
    if structure == "strangle":
        return [leg(0, 1, "C", BUY), leg(1, -1, "P", BUY)]
    if structure == "iron_condor":
        return [leg(0, -2, "P", BUY), leg(1, -1, "P", SELL), leg(2, 1, "C", SELL), leg(3, 2, "C", BUY)]
    raise ValueError(f"unknown structure {structure!r}; use one of {', '.join(STRUCTURES)}")


def run_trade(engine_name: str, structure: str, rig: Rig) -> dict:
    """Open one ``structure`` with ``engine_name`` and measure it against the mid at the start.

    Cost versus mid, per leg, is (vwap − mid) for a buy and (mid − vwap) for a sell, weighted
    by filled quantity and expressed in % of the half-spread weighted the same way; fees are
    not included (they are the same per contract for every engine).
    """
    engine, params = ENGINES[engine_name](rig)
    legs = structure_legs(structure, rig)
    books = {leg.symbol: rig.market.order_book(leg.symbol, max_age=0.0) for leg in legs}
    rig.trades_run += 1
    trade = SimpleNamespace(id=f"B{rig.trades_run:09d}", seq=rig.trades_run)
    creates_before = _orders_sent(rig)
    started = rig.clock.now()
    job = engine.start(trade, legs, Intent.OPEN, params)
    while job.advance(rig.clock.now()) is JobStatus.WORKING:
        if rig.clock.now() - started > MAX_TRADE_SECONDS:
            job.request_stop("benchmark time limit")
        rig.clock.advance(TICK_SECONDS)
    elapsed = rig.clock.now() - started
    result = job.result()
    slippage = half_spreads = 0.0
    for fill in result.legs:
        book = books[fill.symbol]
        if book.best_bid is None or book.best_ask is None or fill.filled_qty <= 0:
            continue
        mid = (book.best_bid + book.best_ask) / 2.0
        edge = fill.vwap - mid if fill.side == BUY else mid - fill.vwap
        slippage += edge * fill.filled_qty
        half_spreads += (book.best_ask - book.best_bid) / 2.0 * fill.filled_qty
    _flatten(rig, legs)
    return {
        "cost_vs_mid_pct_of_half_spread": 100.0 * slippage / half_spreads if half_spreads > 0 else None,
        "filled": result.status is JobStatus.FILLED,
        "seconds_to_fill": elapsed if result.status is JobStatus.FILLED else None,
        "orders_sent": _orders_sent(rig) - creates_before,
    }


def _orders_sent(rig: Rig) -> int:
    return len(rig.sim.requests_for("create_order")) + len(rig.sim.requests_for("rfq_accept"))


def _flatten(rig: Rig, legs: list[LegTarget]) -> None:
    """Remove the positions by hand so margin never limits later trades."""
    for leg in legs:
        rig.sim.exchange.set_position(None, leg.symbol, 0.0, 0.0)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def bench(trades: int, seed: int, engines: list[str], structures: list[str]) -> list[dict]:
    rows = []
    for engine_name in engines:
        for structure in structures:
            rig = make_rig(seed)
            try:
                runs = []
                for _ in range(trades):
                    runs.append(run_trade(engine_name, structure, rig))
                    rig.clock.advance(SECONDS_BETWEEN_TRADES)
            finally:
                rig.close()
            rows.append({
                "engine": engine_name, "structure": structure, "trades": trades,
                "cost_vs_mid": _mean([r["cost_vs_mid_pct_of_half_spread"] for r in runs]),
                "fill_rate": sum(r["filled"] for r in runs) / len(runs),
                "seconds": _median([r["seconds_to_fill"] for r in runs]),
                "orders": _mean([r["orders_sent"] for r in runs]),
            })
    return rows


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=50, help="trades per (engine, structure)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--structures", default=",".join(STRUCTURES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    rows = bench(args.trades, args.seed, args.engines.split(","), args.structures.split(","))
    print(f"{'engine':<8} {'structure':<12} {'trades':>6} {'cost vs mid':>12} {'filled':>7} "
          f"{'s to fill':>9} {'orders':>7}")
    print("            (cost in % of the half-spread: 0 = mid, 100 = the touch)")
    for row in rows:
        print(f"{row['engine']:<8} {row['structure']:<12} {row['trades']:>6} "
              f"{_fmt(row['cost_vs_mid'], '+.1f'):>12} {row['fill_rate']:>6.0%} "
              f"{_fmt(row['seconds'], '.0f'):>9} {_fmt(row['orders'], '.1f'):>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
