"""A small SYNTHETIC ``options_chain`` file in the Tardis.dev layout, for tests and examples.

Why synthetic: the tests of the history replay need a file that ships with the repository and
that anyone may regenerate; a real recording is neither ours to ship nor small. Everything in
it comes from the simulator's own Black-Scholes pricing (``pricing.py``) on a seeded random
walk, written exactly as Tardis.dev writes Deribit's chain (prices in BTC, amounts in BTC
contracts, IVs in percent, microsecond timestamps), so the reader's conversions are exercised
on the real layout. Some rows lack a bid or an ask, as real ones do. It is not market data:
its prices say nothing about any real day.

``python -m simulator.sample_history OUT.csv.gz`` writes it; the committed copy is
``tests/data/synthetic_deribit_options_chain_sample.csv.gz`` and a test checks that it equals
what this module makes for ``SAMPLE_SEED``.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import math
import random
import sys
from dataclasses import dataclass
from typing import Sequence

from simulator.calendar import date_token, expiry_ms_for_date
from simulator.history import COLUMNS
from simulator.pricing import bs_greeks, implied_vol, years_between

SAMPLE_SEED = 11
SAMPLE_FILE_NAME = "synthetic_deribit_options_chain_sample.csv.gz"


@dataclass(frozen=True)
class SampleSpec:
    """The shape of a synthetic recording; the defaults are the committed sample's."""

    seed: int = SAMPLE_SEED
    start_ms: int = expiry_ms_for_date(2025, 1, 6) - 8 * 3_600_000   # Monday 2025-01-06 00:00 UTC
    hours: float = 12.0
    row_seconds: int = 120                # each option gets one row every two minutes, at its own second
    start_index: float = 95_000.0
    annual_vol: float = 0.5
    atm_iv: float = 0.5
    strikes_each_side: int = 3
    strike_step: float = 1000.0
    # the first expires inside the recording (08:00), the others after it
    expiries: tuple[int, ...] = (expiry_ms_for_date(2025, 1, 6), expiry_ms_for_date(2025, 1, 7),
                                 expiry_ms_for_date(2025, 1, 10))
    half_spread: float = 0.04            # of the option's value, at least one Deribit tick
    missing_side_share: float = 0.03     # of rows that lose their bid (or their ask) at random


_BTC_TICK = 0.0001   # Deribit's BTC option tick


def _index_path(spec: SampleSpec) -> list[float]:
    """The index every second of the recording: a driftless seeded random walk."""
    rng = random.Random(spec.seed)
    seconds = int(spec.hours * 3600)
    sigma = spec.annual_vol * math.sqrt(1.0 / (365.0 * 86_400))
    price = spec.start_index
    path = [price]
    for _ in range(seconds):
        price *= math.exp(-0.5 * sigma * sigma + sigma * rng.gauss(0.0, 1.0))
        path.append(price)
    return path


def _smile_iv(spec: SampleSpec, strike: float, forward: float, t_years: float) -> float:
    """A gentle skewed smile: higher for low strikes, a little higher in both wings."""
    moneyness = math.log(strike / forward) / max(math.sqrt(t_years), 0.02)
    return max(0.2, spec.atm_iv * (1.0 - 0.08 * moneyness + 0.10 * moneyness * moneyness))


def _btc(value: float) -> str:
    return f"{value:.4f}"


def _row(spec: SampleSpec, rng: random.Random, expiry: int, strike: float, option_type: str, t_ms: int,
         index: float) -> list[str] | None:
    t_years = years_between(t_ms, expiry)
    if t_years <= 0:
        return None
    iv = _smile_iv(spec, strike, index, t_years)
    greeks = bs_greeks(option_type, index, strike, t_years, iv)
    theo_btc = greeks.price / index
    half = max(spec.half_spread * theo_btc, _BTC_TICK)
    bid = math.floor((theo_btc - half) / _BTC_TICK + 1e-9) * _BTC_TICK
    ask = math.ceil((theo_btc + half) / _BTC_TICK - 1e-9) * _BTC_TICK
    ask = max(ask, _BTC_TICK)
    bid_amount = round(rng.uniform(0.5, 25.0), 1)
    ask_amount = round(rng.uniform(0.5, 25.0), 1)
    draw = rng.random()
    has_bid = bid >= _BTC_TICK and draw >= spec.missing_side_share
    has_ask = not spec.missing_side_share <= draw < 2 * spec.missing_side_share

    def iv_text(price_btc: float) -> str:
        solved = implied_vol(option_type, price_btc * index, index, strike, t_years, guess=iv)
        return f"{solved * 100:.2f}" if solved > 0 else ""

    symbol = f"BTC-{date_token(expiry)}-{int(strike)}-{option_type}"
    stamp_us = t_ms * 1000
    return [
        "deribit", symbol, str(stamp_us), str(stamp_us + 150_000), "call" if option_type == "C" else "put",
        str(int(strike)), str(expiry * 1000), "", "",
        _btc(bid) if has_bid else "", f"{bid_amount:.1f}" if has_bid else "", iv_text(bid) if has_bid else "",
        _btc(ask) if has_ask else "", f"{ask_amount:.1f}" if has_ask else "", iv_text(ask) if has_ask else "",
        f"{theo_btc:.6f}", f"{iv * 100:.2f}", f"SYN.BTC-{date_token(expiry)}", f"{index:.2f}",
        f"{greeks.delta:.5f}", f"{greeks.gamma:.7f}", f"{greeks.vega:.5f}", f"{greeks.theta:.5f}",
        f"{greeks.rho:.5f}",
    ]


def sample_text(spec: SampleSpec = SampleSpec()) -> str:
    """The whole synthetic recording as CSV text (header first, rows in time order)."""
    path = _index_path(spec)
    rng = random.Random(f"{spec.seed}:quotes")
    centre = round(spec.start_index / spec.strike_step) * spec.strike_step
    strikes = [centre + k * spec.strike_step for k in range(-spec.strikes_each_side, spec.strikes_each_side + 1)]
    # Expiries interleaved, so every expiry's rows (and so its underlying price, which a replay's
    # index follows) are spread over the whole interval, as in a real feed: a nearest expiry
    # updated only in one burst per interval would look like a frozen index to the daemon.
    options = [(expiry, strike, option_type) for strike in strikes for option_type in ("C", "P")
               for expiry in spec.expiries]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    end_ms = spec.start_ms + int(spec.hours * 3_600_000)
    step_ms = spec.row_seconds * 1000
    rows: list[tuple[int, int, list[str]]] = []
    for number, (expiry, strike, option_type) in enumerate(options):
        # Each option at its own second of the minute, as a real feed updates them one by one.
        offset_ms = (number * step_ms // len(options)) // 1000 * 1000
        t_ms = spec.start_ms + offset_ms
        while t_ms < end_ms:
            index = path[(t_ms - spec.start_ms) // 1000]
            row = _row(spec, rng, expiry, strike, option_type, t_ms, index)
            if row is not None:
                rows.append((t_ms, number, row))
            t_ms += step_ms
    rows.sort(key=lambda item: (item[0], item[1]))
    writer.writerows(row for _t, _n, row in rows)
    return buffer.getvalue()


def write_sample(path: str, spec: SampleSpec = SampleSpec()) -> None:
    """Write the recording gzipped with no name or time in the gzip header (same bytes every time)."""
    data = sample_text(spec).encode("utf-8")
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as packed:
            packed.write(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.sample_history",
                                     description="Write the SYNTHETIC Tardis-layout options_chain sample.")
    parser.add_argument("out", help=f"where to write it (e.g. tests/data/{SAMPLE_FILE_NAME})")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED, help=f"default {SAMPLE_SEED}")
    args = parser.parse_args(argv)
    write_sample(args.out, SampleSpec(seed=args.seed))
    print(f"wrote the synthetic sample to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
