"""Benchmark of the daemon's monitor tick against the in-process simulator.

Run:  python bench/bench_tick.py [--ticks 200]

Set-up: three strategies (micro_strangle, daily_short_strangle, iron_condor) on one
``TradingContext``; the iron condor opens and stays open (one 4-leg trade), the other two
runners keep running their gates on every poll. The simulator lists more than 1,000 options.

Prints:
  (a) median CPU time of one monitor tick (a poll tick: snapshot, lifecycle, three runners)
      with the HTTP layer replaced by recorded answers, i.e. our own cost without network;
  (b) REST calls per poll cycle in steady state, counted by the simulator (``sim.counts``),
      and how many of them are the once-a-minute order reconciliation;
  (c) REST calls to resolve a 4-leg iron condor by delta with a cold market-data cache.
Asserts nothing (benchmarks are not tests).
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from collections import Counter
from datetime import datetime, timezone
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clock import SimulatedClock, process_cpu_seconds  # noqa: E402
from coincall_client import ClientSettings, CoincallClient  # noqa: E402
from config import Credentials  # noqa: E402
from config import load_settings  # noqa: E402
from market_data import MarketData  # noqa: E402
from option_selection import resolve_legs  # noqa: E402
from simulator import SimulatorConfig, start_simulator  # noqa: E402
from strategies import daily_short_strangle, iron_condor, micro_strangle  # noqa: E402
from app import build_context  # noqa: E402
from strategy import StrategyRunner  # noqa: E402
from trade_lifecycle import TradeState  # noqa: E402

# Tuesday 2026-03-03 10:30 UTC: inside every strategy's entry window.
START = datetime(2026, 3, 3, 10, 30, tzinfo=timezone.utc).timestamp()
READ_METHODS = frozenset({
    "account_summary", "positions", "index_price", "option_chain", "instruments", "orderbook",
    "futures_symbols", "sync_time_if_due", "server_time",
})


class ReplayClient:
    """Wraps the real client; in replay mode read calls return their last recorded answer.

    The index moves by a hair on each replayed read so the frozen-index guard (which would
    block entries and change the work done) does not trip.
    """

    def __init__(self, client: CoincallClient) -> None:
        self._client = client
        self._recorded: dict[tuple, Any] = {}
        self.replaying = False
        self.misses: Counter[str] = Counter()
        self._nudge = 0

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        target = getattr(self._client, name)
        if name not in READ_METHODS:
            return target(*args, **kwargs)
        key = (name, args, tuple(sorted(kwargs.items())))
        if self.replaying and key in self._recorded:
            value = self._recorded[key]
            if name == "index_price":
                self._nudge += 1
                return value + self._nudge * 0.01
            return value
        if self.replaying:
            self.misses[name] += 1
        value = target(*args, **kwargs)
        self._recorded[key] = value
        return value

    @property
    def reachability(self) -> Any:
        return self._client.reachability

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)   # any other plain attribute of the wrapped client


def _forwarding(name: str) -> Any:
    def method(self: ReplayClient, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)
    method.__name__ = name
    return method


# Real methods and properties (not only __getattr__), so the services' construction-time
# Protocol checks (seams.require) see every member the client has.
for _name, _member in vars(CoincallClient).items():
    if _name.startswith("_"):
        continue
    if isinstance(_member, property):
        setattr(ReplayClient, _name, property(lambda self, _n=_name: getattr(self._client, _n)))
    elif callable(_member):
        setattr(ReplayClient, _name, _forwarding(_name))


def build(ticks_to_open: int = 200) -> tuple[Any, Any, ReplayClient, list[StrategyRunner]]:
    clock = SimulatedClock(start=START, speed=0)
    sim = start_simulator(SimulatorConfig(seed=7), clock=clock)
    client = CoincallClient(ClientSettings(base_url=sim.base_url),
                            Credentials(sim.api_key, sim.api_secret, source="bench"), clock)
    replay = ReplayClient(client)
    settings = load_settings({"TRADING_ENVIRONMENT": "sim"}, dotenv_path=None)
    ctx = build_context(settings, clock=clock, client=replay, poll_interval=10.0, state_dir=":memory:")
    runners = [StrategyRunner(factory(), ctx) for factory in (micro_strangle, daily_short_strangle, iron_condor)]
    for runner in runners:
        if runner.name != "iron_condor":
            runner.pause("bench: only the iron condor trades")
        ctx.position_monitor.register(runner)
    for _ in range(ticks_to_open):
        ctx.position_monitor.run_once()
        trades = ctx.lifecycle_manager.trades("iron_condor")
        if trades and trades[0].state == TradeState.OPEN:
            break
    return sim, ctx, replay, runners


def steady_calls_per_poll(sim: Any, ctx: Any, polls: int) -> tuple[float, Counter[str]]:
    monitor = ctx.position_monitor
    for _ in range(3):  # let caches settle
        monitor.run_once()
    before = sim.counts
    for _ in range(polls):
        monitor.run_once()
    delta = sim.counts - before
    return sum(delta.values()) / polls, delta


def cold_resolution_calls(sim: Any, ctx: Any, *, instruments_cached: bool = False) -> tuple[int, Counter[str]]:
    """Calls of one iron-condor resolution on a fresh MarketData (nothing cached).

    ``instruments_cached``: the listing (30 s TTL, refreshed by any running daemon) is warm,
    chain and index are cold: the case the "1 + expiries" target describes.
    """
    cold = MarketData(ctx.http, ctx.clock)
    if instruments_cached:
        cold.instruments("BTC")
    before = sim.counts
    legs = resolve_legs(iron_condor().legs, cold)
    delta = sim.counts - before
    assert len(legs) == 4
    return sum(delta.values()), delta


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=200, help="replayed poll ticks to time (default 200)")
    parser.add_argument("--polls", type=int, default=60, help="poll cycles counted for (b) (default 60)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    sim, ctx, replay, runners = build()
    try:
        trades = ctx.lifecycle_manager.trades("iron_condor")
        instruments = len(ctx.market_data.instruments("BTC"))
        print(f"set-up: {len(runners)} strategies, {instruments} listed options, iron condor trade "
              f"{trades[0].id if trades else 'none'} in state {trades[0].state.value if trades else '-'} "
              f"with {len(trades[0].legs) if trades else 0} legs")

        per_poll, detail = steady_calls_per_poll(sim, ctx, args.polls)
        print(f"(b) REST calls per poll cycle (steady state, {args.polls} polls): {per_poll:.2f}  "
              f"{dict(sorted(detail.items()))}")
        reconcile = detail.get("pending_orders", 0)
        minutes = args.polls * ctx.position_monitor.poll_interval / 60.0
        print(f"    of which the 60 s order reconciliation (BEHAVIOUR 6.1): {reconcile} call(s) in {minutes:.0f} "
              f"simulated minutes; per poll without it: {(sum(detail.values()) - reconcile) / args.polls:.2f}")

        replay.replaying = True
        monitor = ctx.position_monitor
        samples = []
        for _ in range(args.ticks):
            started = process_cpu_seconds()
            monitor.run_once()  # poll interval 10 s, idle: every call is a poll tick
            samples.append(process_cpu_seconds() - started)
        replay.replaying = False
        print(f"(a) CPU per monitor tick without network: median {statistics.median(samples) * 1000:.3f} ms, "
              f"p90 {sorted(samples)[int(0.9 * len(samples))] * 1000:.3f} ms over {len(samples)} ticks "
              f"(unrecorded reads that went to the network: {sum(replay.misses.values())})")

        total, detail = cold_resolution_calls(sim, ctx)
        print(f"(c) REST calls to resolve a 4-leg iron condor by delta, cold cache: {total}  "
              f"{dict(sorted(detail.items()))}")
        total, detail = cold_resolution_calls(sim, ctx, instruments_cached=True)
        print(f"    same with the instrument listing cached (chain and index cold): {total}  "
              f"{dict(sorted(detail.items()))}")
    finally:
        ctx.store.close()
        ctx.http.close()
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
