"""Benchmark of the simulated exchange: signed requests per second over loopback, and
the wall time needed to advance 48 simulated hours through the full expiry calendar.

Run:  python bench/bench_simulator.py [--requests 1500] [--threads 2]

Targets (issue 2): >= 500 signed requests/s for the chain and create-order endpoints on
this machine; 48 simulated hours advanced in < 60 s wall. Prints its figures; asserts
nothing (benchmarks are not tests).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests  # noqa: E402

import auth  # noqa: E402
from clock import Clock, RealClock, SimulatedClock, wall_seconds  # noqa: E402
from simulator import ServerConfig, SimulatorConfig, start_simulator  # noqa: E402

START = 1772431200.0  # 2026-03-02 06:00:00 UTC


def _signed_call(session: requests.Session, sim, method: str, path: str, params: dict | None,
                 *, parse: bool = True) -> dict:
    """One freshly signed request. With ``parse=False`` only the envelope's code is read:
    the figure then measures the simulator, not this client's JSON decoding."""
    ts = sim.clock.now_ms()
    headers = auth.signed_headers(method, path, params or {}, sim.api_key, sim.api_secret, ts)
    headers["Content-Type"] = "application/json"
    url = sim.base_url + path
    if method == "GET":
        resp = session.get(url, params=params, headers=headers, timeout=10)
    else:
        resp = session.post(url, data=json.dumps(params, separators=(",", ":")), headers=headers, timeout=10)
    resp.raise_for_status()
    if not parse and resp.content.startswith(b'{"code":0,'):
        return {"code": 0}
    return resp.json()


def _measure(sim, label: str, make_call, total: int, threads: int) -> dict:
    """Run ``total`` calls spread over ``threads`` workers, each with its own session."""
    per_thread = total // threads
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(worker_index: int) -> None:
        session = requests.Session()
        local: list[float] = []
        for n in range(per_thread):
            t0 = wall_seconds()
            envelope = make_call(session, worker_index, n)
            local.append(wall_seconds() - t0)
            if envelope.get("code") != 0:
                with lock:
                    errors.append(f"{envelope.get('code')}: {envelope.get('msg')}")
        session.close()
        with lock:
            latencies.extend(local)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = wall_seconds()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = wall_seconds() - started
    done = per_thread * threads
    return {
        "endpoint": label,
        "requests": done,
        "seconds": round(elapsed, 3),
        "req_per_s": round(done / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p95_ms": round(sorted(latencies)[int(len(latencies) * 0.95) - 1] * 1000, 2),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


@dataclass
class Target:
    """Where the benchmark sends its requests."""
    base_url: str
    api_key: str
    api_secret: str
    clock: Clock


@contextmanager
def separate_process_simulator() -> Iterator[Target]:
    """``python -m simulator`` in its own process (its own GIL), as a user would run it."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--seed", "7", "--speed", "1",
         "--no-rate-limits", "--log-level", "WARNING"],
        cwd=repo, stdout=subprocess.PIPE, text=True)
    try:
        lines = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(3))
        yield Target(lines["COINCALL_BASE_URL"], lines["COINCALL_API_KEY_SIM"],
                     lines["COINCALL_API_SECRET_SIM"], RealClock())
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def in_process_simulator() -> Iterator[Target]:
    """The embedded simulator, sharing this process (and its GIL) with the client threads."""
    clock = SimulatedClock(start=START, speed=0)
    config = SimulatorConfig(seed=7, server=ServerConfig(rate_limits_enabled=False, request_log_limit=1000))
    with start_simulator(config, clock=clock) as sim:
        yield Target(sim.base_url, sim.api_key, sim.api_secret, clock)


def bench_requests(total: int, threads: int, in_process: bool) -> list[dict]:
    results = []
    with (in_process_simulator() if in_process else separate_process_simulator()) as sim:
        session = requests.Session()
        instruments = _signed_call(session, sim, "GET", "/open/option/getInstruments/BTC", None)["data"]
        expiries = sorted({i["expirationTimestamp"] for i in instruments})
        expiry = expiries[len(expiries) // 2]
        chain_rows = _signed_call(session, sim, "GET", "/open/option/get/v1/BTCUSD", {"endTime": expiry})["data"]
        symbol = min(
            (i for i in instruments if i["expirationTimestamp"] == expiry and i["symbolName"].endswith("-C")),
            key=lambda i: abs(i["strike"] - 90_000),
        )["symbolName"]
        session.close()

        results.append(_measure(
            sim, f"chain, monthly ({len(chain_rows)} strikes)",
            lambda s, w, n: _signed_call(s, sim, "GET", "/open/option/get/v1/BTCUSD", {"endTime": expiry}, parse=False),
            total, threads))
        nearest = expiries[0]
        nearest_rows = len(_signed_call(requests.Session(), sim, "GET", "/open/option/get/v1/BTCUSD",
                                        {"endTime": nearest})["data"])
        results.append(_measure(
            sim, f"chain, nearest ({nearest_rows} strikes)",
            lambda s, w, n: _signed_call(s, sim, "GET", "/open/option/get/v1/BTCUSD", {"endTime": nearest}, parse=False),
            total, threads))
        results.append(_measure(
            sim, "orderbook",
            lambda s, w, n: _signed_call(s, sim, "GET", f"/open/option/order/orderbook/v1/{symbol}", None, parse=False),
            total, threads))

        book = _signed_call(requests.Session(), sim, "GET", f"/open/option/order/orderbook/v1/{symbol}", None)
        passive_bid = float(book["data"]["bids"][0]["price"]) - 5.0

        def create(s, w, n):
            # IOC under the best bid: validated, checked against the band, matched (no
            # cross), cancelled; orders never accumulate towards the open-order cap.
            body = {"symbol": symbol, "qty": 0.01, "tradeSide": 1, "tradeType": 1, "price": passive_bid,
                    "timeInForce": "IOC", "clientOrderId": 900_000_000_000_000_000 + w * 1_000_000 + n}
            return _signed_call(s, sim, "POST", "/open/option/order/create/v1", body, parse=False)

        results.append(_measure(sim, "create-order (IOC)", create, total, threads))
        results.append(_measure(
            sim, "account summary",
            lambda s, w, n: _signed_call(s, sim, "GET", "/open/account/summary/v1", None, parse=False),
            total, threads))
    return results


def bench_advance(hours: float) -> dict:
    """Advance a fresh simulator through ``hours`` of simulated time, with resting orders."""
    clock = SimulatedClock(start=START, speed=0)
    config = SimulatorConfig(seed=7, server=ServerConfig(rate_limits_enabled=False))
    with start_simulator(config, clock=clock) as sim:
        exchange = sim.exchange
        account = exchange.default_account
        # A few resting orders so the passive-fill model has work on every step.
        instruments = exchange.instruments(None, {"baseCurrency": "BTC"})
        later = sorted({i["expirationTimestamp"] for i in instruments})[-1]
        placed = 0
        for inst in (i for i in instruments if i["expirationTimestamp"] == later):
            bids = exchange.orderbook(None, {"symbol": inst["symbolName"]})["bids"]
            if not bids or placed >= 5:
                continue
            # Rest a few ticks under the best bid: inside the price band, off the touch.
            price = max(float(bids[0]["price"]) - 3 * inst["tickSize"], inst["tickSize"])
            exchange.create_order(account, {"symbol": inst["symbolName"], "qty": 0.1, "tradeSide": 1,
                                            "tradeType": 1, "price": price, "clientOrderId": 800 + placed})
            placed += 1
        # Long positions on the two nearest expiries, so settlement runs inside the window.
        index = exchange.market.index_price()
        for expiry in sorted({i["expirationTimestamp"] for i in instruments})[:2]:
            call = min((i for i in instruments if i["expirationTimestamp"] == expiry
                        and i["symbolName"].endswith("-C")), key=lambda i: abs(i["strike"] - index))
            asks = exchange.orderbook(None, {"symbol": call["symbolName"]})["asks"]
            exchange.create_order(account, {"symbol": call["symbolName"], "qty": 0.1, "tradeSide": 1,
                                            "tradeType": 1, "price": float(asks[0]["price"]),
                                            "timeInForce": "IOC", "clientOrderId": 900 + expiry % 1000})
        listed_before = len(instruments)
        started = wall_seconds()
        step = 3600.0
        steps = int(hours * 3600 / step)
        for _ in range(steps):
            clock.advance(step)
            exchange.sync()
        elapsed = wall_seconds() - started
        instruments_after = exchange.instruments(None, {"baseCurrency": "BTC"})
        settled = exchange.exercise_history(account, {"pageSize": "50"})
    return {
        "simulated_hours": hours,
        "wall_seconds": round(elapsed, 2),
        "instruments_before": listed_before,
        "instruments_after": len(instruments_after),
        "delivery_prices": len(exchange.delivery_prices(None, {"symbol": "BTCUSD"}).get("list", [])),
        "exercise_records": len(settled.get("list", [])) if isinstance(settled, dict) else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="requests per endpoint")
    parser.add_argument("--threads", type=int, default=2, help="concurrent client threads")
    parser.add_argument("--hours", type=float, default=48.0, help="simulated hours to advance")
    parser.add_argument("--in-process", action="store_true",
                        help="embed the simulator in this process instead of `python -m simulator`")
    args = parser.parse_args(argv)

    where = "in-process" if args.in_process else "separate process (python -m simulator)"
    print(f"Simulator benchmark: {args.requests} signed requests per endpoint, {args.threads} client threads, "
          f"simulator {where}, loopback HTTP")
    print(f"{'endpoint':<32} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'errors':>7}")
    for row in bench_requests(args.requests, args.threads, args.in_process):
        print(f"{row['endpoint']:<32} {row['req_per_s']:>8} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['errors']:>7}"
              + (f"  first error: {row['first_error']}" if row["first_error"] else ""))
    adv = bench_advance(args.hours)
    print(f"advance {adv['simulated_hours']:.0f} simulated hours: {adv['wall_seconds']} s wall "
          f"(instruments {adv['instruments_before']} -> {adv['instruments_after']}, "
          f"delivery prices {adv['delivery_prices']}, exercise records {adv['exercise_records']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
