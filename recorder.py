"""``python main.py record``: Coincall's option chain appended to a history file, poll by poll.

Why: Coincall publishes no historical quotes, so a backtest on Coincall's own market needs a
recording that starts the day the user starts it. Each poll takes one consistent chain
snapshot through the daemon's own market-data code (instruments, the index, one chain call
per listed expiry: ``MarketData.chain_snapshot``) and appends one row per option in the
``options_chain`` layout the history replay reads (``simulator/history.py``, docs/HISTORY.md),
with the ``exchange`` column ``coincall``: prices in USD as Coincall quotes them, amounts in
BTC, IVs in percent, timestamps in microseconds since the epoch. A comment line at the top of
a new file says so. A poll that fails is logged and skipped; the next one is tried on time.

Time goes through the injected clock (lock-step simulated time on the embedded simulator) and
a stop signal is noticed within one wait slice (``app.wait_until``).
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from app import wait_until
from clock import Clock, iso_utc
from coincall_payloads import OptionRow
from config import Settings
from errors import ConfigError, TraderError
from exchange_connection import open_exchange
from market_data import ChainSnapshot, MarketData
from seams import ChainSource
from stop_flag import StopFlag

logger = logging.getLogger(__name__)

EXCHANGE_NAME = "coincall"
# The same columns, in the same order, as Tardis.dev's ``options_chain`` (simulator.history.COLUMNS);
# spelled here too because the daemon never imports the simulator (tests/unit/test_import_boundaries.py),
# and a test holds the two equal.
COLUMNS: tuple[str, ...] = (
    "exchange", "symbol", "timestamp", "local_timestamp", "type", "strike_price", "expiration",
    "open_interest", "last_price", "bid_price", "bid_amount", "bid_iv", "ask_price", "ask_amount", "ask_iv",
    "mark_price", "mark_iv", "underlying_index", "underlying_price", "delta", "gamma", "vega", "theta", "rho",
)
HEADER_COMMENT = ("# options_chain recorded from Coincall by CoincallTrader (docs/HISTORY.md): exchange=coincall, "
                  "prices in USD, amounts in BTC, IVs in percent, timestamps in microseconds since the epoch (UTC)")


@dataclass(frozen=True)
class RecordPlan:
    """What to record: where, how often, and (tests, short runs) how many polls at most."""

    out: Path
    interval_seconds: float = 60.0
    polls: int | None = None
    base: str = "BTC"

    def __post_init__(self) -> None:
        if not self.interval_seconds > 0:
            raise ValueError(f"the interval must be positive, got {self.interval_seconds!r}")
        if self.polls is not None and self.polls < 1:
            raise ValueError(f"polls must be at least 1, got {self.polls!r}")


def _number(value: float | None, digits: int) -> str:
    """A CSV field: empty for a missing or non-finite number (the reader's "not recorded")."""
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else str(int(value))


def _side(price: float, size: float, iv: float) -> list[str]:
    if price <= 0 or size <= 0:
        return ["", "", ""]
    return [_number(price, 8), _number(size, 4), _number(iv * 100 if iv > 0 else None, 4)]


def snapshot_rows(snapshot: ChainSnapshot) -> list[list[str]]:
    """One ``options_chain`` row per option of ``snapshot``, by (expiry, strike, type)."""
    stamp_us = str(round(snapshot.as_of * 1_000_000))
    rows: list[list[str]] = []
    ordered: list[OptionRow] = sorted(snapshot.rows, key=lambda r: (r.expiry_ms, r.strike, r.option_type))
    for row in ordered:
        rows.append([
            EXCHANGE_NAME, row.symbol, stamp_us, stamp_us, "call" if row.option_type == "C" else "put",
            _number(row.strike, 8), str(row.expiry_ms * 1000), "", "",
            *_side(row.bid, row.bid_size, row.bid_iv),
            *_side(row.ask, row.ask_size, row.ask_iv),
            _number(row.mark, 8), _number(row.mark_iv * 100 if math.isfinite(row.mark_iv) else None, 4),
            f"{row.symbol.split('-', 1)[0]}", _number(row.underlying_price, 8),
            _number(row.delta, 8), _number(row.gamma, 10), _number(row.vega, 8), _number(row.theta, 8),
            _number(row.rho, 8),
        ])
    return rows


def check_output(path: Path) -> bool:
    """Whether ``path`` already holds a recording to append to; ``ConfigError`` when it may not be used.

    An existing file must be an ``options_chain`` file already (its header is checked): the
    recorder appends to it, and never writes into something else.
    """
    if path.suffix == ".gz":
        raise ConfigError(f"{path}: the recorder appends plain CSV; compress the file when the recording is done")
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, encoding="utf-8", newline="") as existing:
        header = next((line for line in existing if not line.startswith("#")), "")
    if header.strip() != ",".join(COLUMNS):
        raise ConfigError(f"{path} exists and is not an options_chain file: refusing to append to it")
    return True


def _open_output(path: Path) -> TextIO:
    """``path`` for appending; a new or empty file gets the comment and the header first."""
    if check_output(path):
        return open(path, "a", encoding="utf-8", newline="")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a", encoding="utf-8", newline="")
    handle.write(HEADER_COMMENT + "\n")
    csv.writer(handle, lineterminator="\n").writerow(COLUMNS)
    handle.flush()
    return handle


def record(market: ChainSource, clock: Clock, stop: StopFlag, plan: RecordPlan) -> int:
    """Poll every ``plan.interval_seconds`` until stopped (or ``plan.polls`` polls); returns rows written."""
    written = 0
    polls = 0
    with _open_output(plan.out) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        next_poll = clock.now()
        while not stop.is_set:
            polls += 1
            rows = _poll_once(market, plan)
            writer.writerows(rows)
            written += len(rows)
            handle.flush()
            os.fsync(handle.fileno())
            if plan.polls is not None and polls >= plan.polls:
                break
            next_poll += plan.interval_seconds
            wait_until(clock, next_poll, stop)
    logger.info("recording stopped after %d polls: %d rows in %s", polls, written, plan.out)
    return written


def _poll_once(market: ChainSource, plan: RecordPlan) -> list[list[str]]:
    """The rows of one snapshot; none when the poll failed (logged; the next one is tried on time)."""
    try:
        expiries = sorted({item.expiry_ms for item in market.instruments(plan.base)
                           if item.expiry_ms > market.clock.now_ms()})
        # Every expiry is one call: a long chain may take longer than a selection's 5 s to fetch.
        snapshot = market.chain_snapshot(expiries, max_build_seconds=max(5.0, plan.interval_seconds / 2))
    except TraderError as exc:
        logger.warning("poll skipped: %s", exc)
        return []
    rows = snapshot_rows(snapshot)
    logger.info("recorded %d options of %d expiries at %s", len(rows), len(expiries), iso_utc(snapshot.as_of))
    return rows


def recorder_settings(settings: Settings, plan: RecordPlan) -> Settings:
    """The embedded simulator of a recording keeps its own state next to the output, never the
    paper account's (a daemon may be running on that one)."""
    if not settings.embeds_simulator:
        return settings
    return dataclasses.replace(settings, sim_state_file=plan.out.with_name(plan.out.name + ".simulator.json"))


def run_record(settings: Settings, clock: Clock, stop: StopFlag, plan: RecordPlan) -> int:
    """``python main.py record``: connect to the configured exchange (the embedded simulator when
    no keys are configured) and record until stopped; returns the rows written."""
    check_output(plan.out)   # before anything is started
    with open_exchange(recorder_settings(settings, plan), clock) as connection:
        market = MarketData(connection.client, clock, base=plan.base)
        logger.info("recording %s options from %s every %g s to %s", plan.base, connection.base_url,
                    plan.interval_seconds, plan.out)
        return record(market, clock, stop, plan)


__all__ = ["COLUMNS", "RecordPlan", "check_output", "record", "recorder_settings", "run_record", "snapshot_rows"]
