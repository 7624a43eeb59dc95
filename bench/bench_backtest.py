"""Benchmark of `python main.py backtest`: how fast, and whether cost grows with history.

Run:  python bench/bench_backtest.py [--days 30] [--strategies micro_strangle|all] [--poll 10]
                                    [--transport inprocess|wire] [--per-day]

Runs one backtest in this process (the daemon's own code against the embedded simulator on
unpaced lock-step time) and prints:
  * wall time, simulated days, speed-up (simulated seconds per wall second), and the process's
    CPU seconds in all (both transports: the simulator's server thread is in this process);
  * CPU seconds per simulated day, for the first and the last simulated day, and a per-day table
    beside the day's workload (mean open trades per poll, option-chain calls): a figure that grows
    while the workload does not means per-tick cost grows with history;
  * resident memory at the end of day 1 and at the end of the run, and the peak;
  * trades and realized PnL from summary.json;
  * a host calibration: a fixed CPU workload timed at the start, at every day's end and at the
    end. Shared virtual machines run the same work up to twice as fast or slow from one hour to
    the next, so a figure is read beside the calibration of its own run (``--per-day`` shows it
    per day: CPU that grows while the calibration grows too is the host, not the daemon).
The targets of issue 11 (30 days of micro_strangle in <= 5 minutes, all five in <= 15,
RSS growth <= 20 MB from day 1 to day 30) are printed beside the figures. Asserts nothing
(benchmarks are not tests).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backtest import SUMMARY_FILE, TRADES_FILE, BacktestPeriod, run_backtest  # noqa: E402
from clock import process_cpu_seconds, wall_seconds  # noqa: E402
from main import STRATEGIES, setup_logging  # noqa: E402
from market_data import EP_CHAIN, MarketData  # noqa: E402
from stop_flag import StopFlag  # noqa: E402
from strategy_factories import build_strategy_configs  # noqa: E402

START = datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()   # a Monday, 00:00 UTC
DAY = 86400.0
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * PAGE_BYTES / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3   # kB on Linux


CALIBRATION_ROUNDS = 3


def calibration_ms() -> float:
    """Milliseconds for a fixed workload like the backtest's own (JSON decoding of a chain-sized
    text, float formatting, small dicts), the best of ``CALIBRATION_ROUNDS``: the host's speed now."""
    text = json.dumps([{"strike": 50000.0 + 500 * i,
                        "callOption": {"symbol": f"BTCUSD-3MAR26-{50000 + 500 * i}-C", "markPrice": 1234.5 / (i + 1),
                                       "delta": 0.5 / (i + 1), "bid": 10.0 * i, "ask": 10.0 * i + 5.0}}
                       for i in range(80)])
    best = float("inf")
    for _ in range(CALIBRATION_ROUNDS):
        started = wall_seconds()
        for _ in range(20):
            rows = json.loads(text)
            formatted = [f'{row["strike"]!r},{round(row["callOption"]["delta"], 8)!r}' for row in rows]
            index = {row["callOption"]["symbol"]: row for row in rows}
            assert len(formatted) == len(index)
        best = min(best, wall_seconds() - started)
    return 1000 * best


class DailySamples:
    """CPU seconds, RSS and the day's workload at the end of every simulated day.

    The workload is what the daemon had to do that day: the mean number of open trades per wake
    (each one is valued every poll) and the option-chain calls its market data made (each renders
    and parses a whole expiry). It separates cost that follows the market from cost that follows
    history: only the second is a defect.
    """

    def __init__(self) -> None:
        self.next_day = START + DAY
        self.cpu: list[float] = [process_cpu_seconds()]
        self.rss: list[float] = []
        self.open_trades: list[float] = []
        self.chain_calls: list[int] = []
        self.calibration: list[float] = []
        self._open_sum = 0
        self._wakes = 0
        self._chains_before = 0

    def __call__(self, ctx: Any, now: float) -> None:
        self._open_sum += len(ctx.lifecycle_manager.active_trades())
        self._wakes += 1
        while now >= self.next_day:
            self.cpu.append(process_cpu_seconds())
            self.rss.append(rss_mb())
            self.open_trades.append(self._open_sum / max(1, self._wakes))
            chains = _chain_calls(ctx)
            self.chain_calls.append(chains - self._chains_before)
            self._chains_before = chains
            self._open_sum = self._wakes = 0
            calibration_started = process_cpu_seconds()
            self.calibration.append(calibration_ms())
            # The calibration's own CPU is not the day's: the next day starts after it.
            self.cpu[-1] += process_cpu_seconds() - calibration_started
            self.next_day += DAY

    def cpu_per_day(self) -> list[float]:
        """CPU seconds spent in each finished simulated day."""
        return [b - a for a, b in zip(self.cpu, self.cpu[1:])]

    def table(self) -> list[str]:
        lines = ["day   CPU s   RSS MB   open trades   chain calls   CPU ms per chain call   calibration ms"]
        for day, (cpu, rss, trades, chains, calibration) in enumerate(
                zip(self.cpu_per_day(), self.rss, self.open_trades, self.chain_calls, self.calibration), start=1):
            per_chain = f"{1000 * cpu / chains:8.2f}" if chains else "       -"
            lines.append(f"{day:3d} {cpu:7.1f} {rss:8.1f} {trades:13.2f} {chains:13d}   {per_chain}"
                         f"                {calibration:6.1f}")
        return lines


def _chain_calls(ctx: Any) -> int:
    """The option-chain calls made so far (a backtest always wires the daemon's own MarketData)."""
    market_data = ctx.market_data
    if not isinstance(market_data, MarketData):
        raise TypeError(f"the backtest wired {type(market_data).__name__}, not MarketData: no call counters")
    return market_data.stats_snapshot()[EP_CHAIN]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--strategies", choices=("micro_strangle", "all"), default="micro_strangle")
    parser.add_argument("--poll", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--per-day", action="store_true",
                        help="also print a table per simulated day: CPU, RSS, open trades, chain calls")
    parser.add_argument("--transport", choices=("inprocess", "wire"), default="inprocess",
                        help="how the client reaches the simulator (the backtest default: inprocess)")
    parser.add_argument("--paced-check", type=float, default=0.0, metavar="MINUTES",
                        help="instead: run MINUTES simulated minutes unpaced and paced at --speed 60 and compare "
                             "the trades (issue 11: the same trades at --speed 60 as in the backtest)")
    args = parser.parse_args()
    if args.paced_check > 0:
        return paced_check(args.paced_check, args.seed, args.poll)

    configs = build_strategy_configs(STRATEGIES)
    if args.strategies != "all":
        configs = [c for c in configs if c.name == args.strategies]
    period = BacktestPeriod(START, START + args.days * DAY)
    calibration_before = calibration_ms()
    samples = DailySamples()
    out_dir = Path(tempfile.mkdtemp(prefix="bench-backtest-")) / "run"
    started = wall_seconds()
    cpu_started = process_cpu_seconds()
    code = run_backtest(configs, period, seed=args.seed, poll=args.poll, out_dir=out_dir, stop=StopFlag(),
                        setup_logging=lambda log_dir, clock: setup_logging(log_dir, "INFO", clock,
                                                                           console_level="WARNING"),
                        observer=samples, transport=args.transport)
    wall = wall_seconds() - started
    cpu = process_cpu_seconds() - cpu_started
    if code != 0:
        print(f"backtest exited {code}")
        return code
    summary = json.loads((out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    per_day = samples.cpu_per_day()
    target = 300.0 if args.strategies != "all" else 900.0
    print(f"strategies: {', '.join(c.name for c in configs)}; {args.days:g} simulated days at a {args.poll:g} s poll; "
          f"transport {args.transport}")
    print(f"wall time {wall:.1f} s, speed-up {period.seconds / wall:,.0f}x "
          f"(issue-11 target for 30 days: <= {target:.0f} s, i.e. >= {30 * DAY / target:,.0f}x)")
    print(f"CPU {cpu:.1f} s in all, {cpu / args.days:.1f} s per simulated day")
    if per_day:
        print(f"CPU per simulated day: first {per_day[0]:.1f} s, last {per_day[-1]:.1f} s, "
              f"mean {sum(per_day) / len(per_day):.1f} s over {len(per_day)} day(s)")
    if args.per_day:
        print("\n".join(samples.table()))
    if samples.rss:
        print(f"RSS: end of day 1 {samples.rss[0]:.1f} MB, end of run {samples.rss[-1]:.1f} MB "
              f"(growth {samples.rss[-1] - samples.rss[0]:+.1f} MB; target <= +20 MB over 30 days), "
              f"peak {peak_rss_mb():.1f} MB")
    calibrations = [calibration_before, *samples.calibration, calibration_ms()]
    print(f"host calibration {calibration_before:.1f} ms at the start, {calibrations[-1]:.1f} ms at the end, "
          f"{min(calibrations):.1f}-{max(calibrations):.1f} ms over the run (a fixed workload: compare runs on "
          f"different hosts or hours by it)")
    total = summary["total"]
    print(f"trades {total['trades']} (closed {total['closed']}, failed {total['failed']}), "
          f"realized PnL {total['realized_pnl']:+.2f} USD, fees {total['fees']:.2f} USD; results in {out_dir}")
    return 0


def paced_check(minutes: float, seed: int, poll: float) -> int:
    """The same short window of micro_strangle unpaced and paced at 60x: identical trades.csv?"""
    configs = [c for c in build_strategy_configs(STRATEGIES) if c.name == "micro_strangle"]
    period = BacktestPeriod(START, START + minutes * 60.0)
    root = Path(tempfile.mkdtemp(prefix="bench-paced-"))
    outputs = {}
    for label, pace in (("unpaced", 0.0), ("paced 60x", 60.0)):
        started = wall_seconds()
        code = run_backtest(configs, period, seed=seed, poll=poll, out_dir=root / label.replace(" ", "-"),
                            stop=StopFlag(), pace=pace,
                            setup_logging=lambda log_dir, clock: setup_logging(log_dir, "INFO", clock,
                                                                               console_level="WARNING"))
        if code != 0:
            print(f"{label}: backtest exited {code}")
            return code
        outputs[label] = (root / label.replace(" ", "-") / TRADES_FILE).read_bytes()
        trades = len(outputs[label].splitlines()) - 1
        print(f"{label}: {minutes:g} simulated minutes in {wall_seconds() - started:.1f} s wall, {trades} trades")
    same = outputs["unpaced"] == outputs["paced 60x"]
    print(f"trades.csv identical paced and unpaced: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
