"""Save and restore the whole simulated exchange to one JSON file.

Restart safety (API.md §13 item 27): a paper run restarts the daemon, and sometimes
the simulator too; balances, positions, open orders and RFQs must still be there, and
time must continue rather than jump back. The file is written atomically (temporary
file, fsync, ``os.replace``) so a crash mid-save leaves the previous state intact.
The file holds the accounts' API secrets: it is created readable by its owner only.
Active response mutations (``mutations.py``) are deliberately not saved: a restored
simulator serves honest answers until they are armed again (docs/SIMULATOR.md).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from atomic_file import write_text_atomically
from clock import Clock

if TYPE_CHECKING:  # imported lazily at runtime: config imports the models
    from simulator.config import SimulatorConfig
    from simulator.exchange import SimExchange
    from simulator.markets import Markets

logger = logging.getLogger(__name__)

STATE_FORMAT = "coincall-simulator-state"
STATE_VERSION = 1


class StateFileError(ValueError):
    """The state file exists but is not a simulator state this version can load."""


def capture_state(clock: Clock, market: Markets, exchange: SimExchange, seed: int) -> dict[str, Any]:
    """A JSON-ready snapshot of market and exchange, stamped with the simulated time.

    The market only moves inside the exchange's ``sync`` (under the exchange's lock),
    so holding that lock while both are captured keeps them at the same instant even
    while HTTP requests are in flight. The exchange's lock is re-entrant.
    """
    with getattr(exchange, "_lock", None) or contextlib.nullcontext():
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "saved_at_ms": clock.now_ms(),
            "seed": seed,
            "market": market.to_state(),
            "exchange": exchange.to_state(),
        }


def save_state_file(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: temp file in the same dir, fsync, replace."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    write_text_atomically(path, text, mode=0o600)
    logger.debug("simulator state saved to %s (%d bytes)", os.fspath(path), len(text))


def load_state_file(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """The saved payload, or None when there is no file yet (first start)."""
    if path is None or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        try:
            payload = json.load(handle)
        except ValueError as exc:
            raise StateFileError(f"simulator state file {os.fspath(path)!r} is not valid JSON") from exc
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise StateFileError(f"{os.fspath(path)!r} is not a simulator state file")
    if payload.get("version") != STATE_VERSION:
        raise StateFileError(f"unsupported simulator state version {payload.get('version')!r}")
    return payload


def continue_clock(clock: Clock, saved_at_ms: int) -> None:
    """Move ``clock`` forward to the saved instant when it is behind (never backwards)."""
    now_ms = clock.now_ms()
    if saved_at_ms <= now_ms:
        return
    set_time = getattr(clock, "set_time", None)
    if set_time is None:
        logger.warning("saved simulator time is %d ms ahead of a clock that cannot be set", saved_at_ms - now_ms)
        return
    set_time(saved_at_ms / 1000.0)


def restore_models(
    config: SimulatorConfig, clock: Clock, payload: dict[str, Any]
) -> tuple[Markets, SimExchange]:
    """Market and exchange from ``payload``, time continuing from max(saved, clock now)."""
    from simulator.exchange import SimExchange
    from simulator.markets import restore_markets

    continue_clock(clock, int(payload["saved_at_ms"]))
    market = restore_markets(config, payload["market"])
    exchange = SimExchange.from_state(config.exchange_config(), market, clock, payload["exchange"])
    return market, exchange
