"""Benchmark of the dashboard's JSON API: latency with a view of 50 open trades.

Run:  python bench/bench_dashboard.py [--trades 50] [--requests 200]

Starts a ``DashboardServer`` on 127.0.0.1 (an ephemeral port) fed by a hand-written operator
view with ``--trades`` open trades (tests/browser/sample_view.py; every field of the contract
filled), then sends ``--requests`` authenticated GETs to each JSON API, one after another over
a fresh connection each (the server speaks HTTP/1.0, as a browser's refresh would meet it), and
prints the median, the 95th percentile and the worst latency per endpoint, with the page renders
for comparison. The target of issue 12 (the JSON API answers in under 50 ms with 50 open trades)
is printed beside the figures. Asserts nothing (benchmarks are not tests).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests  # noqa: E402

from clock import RealClock, wall_seconds  # noqa: E402
from dashboard import DashboardConfig, DashboardServer  # noqa: E402
from persistence import StateStore  # noqa: E402
from tests.browser.sample_view import FakeLog, FakeView, sample_view  # noqa: E402

TARGET_MS = 50.0
TOKEN = "bench-dashboard-token-0123456789"
ENDPOINTS = ("/api/view", "/api/trades", "/api/strategies", "/api/positions", "/api/health")
PAGES = ("/", "/trades")


def measure(session: requests.Session, url: str, count: int, headers: dict[str, str]) -> list[float]:
    """Latencies in milliseconds of ``count`` sequential GETs (each answer read in full)."""
    samples: list[float] = []
    for _ in range(count):
        started = wall_seconds()
        answer = session.get(url, headers=headers, timeout=10)
        answer.content  # noqa: B018 - the whole body is part of the latency
        samples.append((wall_seconds() - started) * 1000.0)
        if answer.status_code != 200:
            raise SystemExit(f"{url} answered {answer.status_code}: {answer.text[:200]}")
    return samples


def percentile_95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(round(0.95 * len(ordered))) - 1)]


def report(label: str, samples: list[float], size: int) -> str:
    ordered = sorted(samples)
    p95 = percentile_95(samples)
    return (f"{label:<18} median {statistics.median(ordered):6.2f} ms   p95 {p95:6.2f} ms   worst "
            f"{ordered[-1]:6.2f} ms   ({size:,} bytes)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=50, help="open trades in the view (default 50)")
    parser.add_argument("--requests", type=int, default=200, help="requests per endpoint (default 200)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        db_path = Path(folder) / "trader.db"
        StateStore(db_path).close()
        view = sample_view(open_trades=args.trades, closed_trades=10)
        server = DashboardServer(DashboardConfig("127.0.0.1", 0, TOKEN), RealClock(), FakeView(view), FakeLog(),
                                 db_path)
        server.start()
        try:
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            print(f"dashboard JSON API, {args.trades} open trades + 10 closed, {args.requests} requests each "
                  f"(target: under {TARGET_MS:g} ms)")
            worst_p95 = 0.0
            with requests.Session() as session:
                measure(session, server.url + "/api/view", 10, bearer)   # warm-up
                for path in ENDPOINTS:
                    samples = measure(session, server.url + path, args.requests, bearer)
                    size = len(session.get(server.url + path, headers=bearer).content)
                    worst_p95 = max(worst_p95, percentile_95(samples))
                    print(report(path, samples, size))
                session.post(server.url + "/login", data={"token": TOKEN})
                for path in PAGES:
                    samples = measure(session, server.url + path, args.requests, {})
                    print(report(f"page {path}", samples, len(session.get(server.url + path).content)))
            verdict = "meets" if worst_p95 < TARGET_MS else "MISSES"
            print(f"slowest API p95 {worst_p95:.2f} ms: {verdict} the {TARGET_MS:g} ms target")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
