"""Benchmark of the daemon's monitor tick against the in-process simulator.

Run:  python bench/bench_tick.py [--ticks 200] [--open-trades N] [--strikes default|dense]
      python bench/bench_tick.py --table        (tick CPU at 1, 10, 50 open trades x both listings)

Set-up: three strategies (micro_strangle, daily_short_strangle, iron_condor) on one
``TradingContext``; the iron condor opens and stays open (one 4-leg trade), the other two
runners keep running their gates on every poll. ``--open-trades N`` opens N - 1 more iron
condors on the same legs (in batches, within the ledger's per-symbol cap), so every poll
values and judges N open 4-leg trades. The default listing has about 1,200 options;
``--strikes dense`` narrows the strike steps to list about 9,000 (issue 11: tick CPU must
not grow with the chain or with the number of trades more than the work itself does).

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
from simulator.market import MarketConfig  # noqa: E402
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


# Strike steps (USD) of the dense listing: about 9,000 options instead of about 1,200.
DENSE_STRIKE_STEP = {"daily": 100.0, "weekly": 125.0, "monthly": 125.0, "quarterly": 250.0}
OPEN_BATCH = 3   # new trades per batch: the ledger allows 4 live orders per symbol


def simulator_config(strikes: str) -> SimulatorConfig:
    if strikes == "default":
        return SimulatorConfig(seed=7)
    return SimulatorConfig(seed=7, market=MarketConfig(seed=7, strike_step=dict(DENSE_STRIKE_STEP)))


def open_more(ctx: Any, count: int, max_ticks: int = 400) -> int:
    """Open ``count`` more iron condors on freshly resolved legs; returns how many are OPEN."""
    manager = ctx.lifecycle_manager
    for _ in range(0, count, OPEN_BATCH):
        batch = min(OPEN_BATCH, count)
        count -= batch
        legs = resolve_legs(iron_condor().legs, ctx.market_data)
        created = [manager.create("iron_condor", legs, execution_mode="limit") for _ in range(batch)]
        for _ in range(max_ticks):
            ctx.position_monitor.run_once()
            if all(trade.state != TradeState.OPENING and trade.state != TradeState.PENDING_OPEN
                   for trade in created):
                break
    return sum(1 for trade in manager.trades("iron_condor") if trade.state == TradeState.OPEN)


def build(ticks_to_open: int = 200, *, strikes: str = "default",
          open_trades: int = 1) -> tuple[Any, Any, ReplayClient, list[StrategyRunner]]:
    clock = SimulatedClock(start=START, speed=0)
    sim = start_simulator(simulator_config(strikes), clock=clock)
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
    if open_trades > 1:
        open_more(ctx, open_trades - 1)
    return sim, ctx, replay, runners


def tick_cpu(ctx: Any, replay: ReplayClient, ticks: int) -> list[float]:
    """CPU seconds of ``ticks`` replayed poll ticks (no network: recorded answers)."""
    replay.replaying = True
    monitor = ctx.position_monitor
    samples = []
    for _ in range(ticks):
        started = process_cpu_seconds()
        monitor.run_once()  # poll interval 10 s, idle: every call is a poll tick
        samples.append(process_cpu_seconds() - started)
    replay.replaying = False
    return samples


def close(sim: Any, ctx: Any) -> None:
    ctx.store.close()
    ctx.http.close()
    sim.stop()


def table(ticks: int) -> None:
    """Median tick CPU for 1, 10 and 50 open trades on the default and the dense listing."""
    print(f"{'listed options':>15} {'open trades':>12} {'median ms':>10} {'p90 ms':>8}")
    for strikes in ("default", "dense"):
        for wanted in (1, 10, 50):
            sim, ctx, replay, _runners = build(strikes=strikes, open_trades=wanted)
            try:
                listed = len(ctx.market_data.instruments("BTC"))
                open_now = sum(1 for t in ctx.lifecycle_manager.active_trades() if t.state == TradeState.OPEN)
                for _ in range(3):
                    ctx.position_monitor.run_once()   # record every read the steady state makes
                samples = sorted(tick_cpu(ctx, replay, ticks))
                print(f"{listed:>15,} {open_now:>12} {statistics.median(samples) * 1000:>10.3f} "
                      f"{samples[int(0.9 * len(samples))] * 1000:>8.3f}", flush=True)
            finally:
                close(sim, ctx)


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
    parser.add_argument("--open-trades", type=int, default=1, help="open 4-leg trades while timing (default 1)")
    parser.add_argument("--strikes", choices=("default", "dense"), default="default",
                        help="the simulator's listing: about 1,200 (default) or 9,000 (dense) options")
    parser.add_argument("--table", action="store_true", help="only the tick-CPU table (1/10/50 trades x listings)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.table:
        table(args.ticks)
        return 0

    sim, ctx, replay, runners = build(strikes=args.strikes, open_trades=args.open_trades)
    try:
        trades = ctx.lifecycle_manager.trades("iron_condor")
        instruments = len(ctx.market_data.instruments("BTC"))
        open_now = sum(1 for t in trades if t.state == TradeState.OPEN)
        print(f"set-up: {len(runners)} strategies, {instruments} listed options, iron condor trade "
              f"{trades[0].id if trades else 'none'} in state {trades[0].state.value if trades else '-'} "
              f"with {len(trades[0].legs) if trades else 0} legs; {open_now} iron condor(s) open")

        per_poll, detail = steady_calls_per_poll(sim, ctx, args.polls)
        print(f"(b) REST calls per poll cycle (steady state, {args.polls} polls): {per_poll:.2f}  "
              f"{dict(sorted(detail.items()))}")
        reconcile = detail.get("pending_orders", 0)
        minutes = args.polls * ctx.position_monitor.poll_interval / 60.0
        print(f"    of which the 60 s order reconciliation (BEHAVIOUR 6.1): {reconcile} call(s) in {minutes:.0f} "
              f"simulated minutes; per poll without it: {(sum(detail.values()) - reconcile) / args.polls:.2f}")

        samples = tick_cpu(ctx, replay, args.ticks)
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
        close(sim, ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
