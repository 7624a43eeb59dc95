"""Configuration values for the simulator as a whole and for its HTTP face.

Every knob that API.md §12 leaves UNCERTAIN and that lives at the HTTP layer (RFQ body
encoding, throttling style, timestamp window) is a field here, so a test or a paper
run can choose the alternative behaviour without touching code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from simulator.exchange import ExchangeConfig
from simulator.history import DEFAULT_STALE_SECONDS, recorded_exchange_config
from simulator.market import MarketConfig
from simulator.perpetuals import PerpConfig, btc_perp_config, eth_perp_config
from simulator.underlyings import eth_market_config, follow_scenario

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Config = TypeVar("_Config", bound="DataclassInstance")

RFQ_BODY_MODES: tuple[str, ...] = ("both", "form_only", "json_only")
THROTTLE_MODES: tuple[str, ...] = ("code", "http429")


@dataclass(frozen=True)
class ServerConfig:
    """How the HTTP server listens, authenticates and throttles.

    ``rfq_body_mode``: which encodings RFQ accept/cancel take (API.md §12 #3); the other
    one gets code 10004. ``throttle_mode``: "code" = HTTP 200 + code 10000 (default),
    "http429" = HTTP 429. ``max_ts_diff_ms`` caps the client's ``X-REQ-TS-DIFF`` so a
    client cannot widen the replay window at will. ``request_log_limit`` bounds the
    in-memory request log (oldest records are dropped; ``None`` = unbounded).
    """

    host: str = "127.0.0.1"
    port: int = 0
    rfq_body_mode: str = "both"
    throttle_mode: str = "code"
    rate_limits_enabled: bool = True
    max_ts_diff_ms: int = 60_000
    default_ts_diff_ms: int = 5_000
    future_tolerance_ms: int = 1_000
    request_log_limit: int | None = 10_000

    def __post_init__(self) -> None:
        if self.rfq_body_mode not in RFQ_BODY_MODES:
            raise ValueError(f"rfq_body_mode must be one of {RFQ_BODY_MODES}, got {self.rfq_body_mode!r}")
        if self.throttle_mode not in THROTTLE_MODES:
            raise ValueError(f"throttle_mode must be one of {THROTTLE_MODES}, got {self.throttle_mode!r}")
        if self.max_ts_diff_ms <= 0 or self.default_ts_diff_ms <= 0:
            raise ValueError("timestamp windows must be positive")
        if self.request_log_limit is not None and self.request_log_limit < 0:
            raise ValueError("request_log_limit must be >= 0 or None")


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything needed to start one simulated exchange.

    ``seed`` fixes prices, quotes, fills and injected faults; it flows into the market
    and exchange configs unless those were given explicitly. ``start_time`` (epoch s)
    and ``speed`` only matter when the simulator creates its own clock. ``api_key`` /
    ``api_secret`` pin the default account's credentials (otherwise random ones are
    generated); the secret never appears in the repr.

    ``history_file``: replay a recorded ``options_chain`` CSV (docs/HISTORY.md) as the market
    instead of the synthetic one; the clock must then start inside the recording
    (``simulator.history.history_span``). ``history_stale_seconds``: a recorded quote older
    than this shows no book. ``history_thin_seconds``: keep at most one row per option per
    that many seconds when loading (memory; 0 keeps every row).

    ``eth_enabled``: list ETH options and the ETHUSD perpetual next to BTC (default; a history
    replay is BTC-only whatever this says). ``eth_market``: ETH's market config (default
    ``underlyings.eth_market_config(seed)``, shaped by the BTC market's scenario if it has one).
    ``perpetuals``: the perpetual contracts listed (default BTCUSD and ETHUSD with the documented
    contract values, ``perpetuals.btc_perp_config`` / ``eth_perp_config``); a perpetual whose
    underlying is not listed is left out.
    """

    seed: int = 7
    start_time: float | None = None
    speed: float = 1.0
    market: MarketConfig | None = None
    exchange: ExchangeConfig | None = None
    server: ServerConfig = field(default_factory=ServerConfig)
    api_key: str | None = None
    api_secret: str | None = field(default=None, repr=False)
    history_file: str | None = None
    history_stale_seconds: float = DEFAULT_STALE_SECONDS
    history_thin_seconds: float = 0.0
    eth_enabled: bool = True
    eth_market: MarketConfig | None = None
    perpetuals: tuple[PerpConfig, ...] | None = None

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError("speed must be >= 0")
        if (self.api_key is None) != (self.api_secret is None):
            raise ValueError("api_key and api_secret must be given together")
        if self.history_file is not None and (not isinstance(self.history_file, str) or not self.history_file.strip()):
            raise ValueError(f"history_file must be a path, got {self.history_file!r}")
        if not self.history_stale_seconds > 0 or not self.history_thin_seconds >= 0:
            raise ValueError("history_stale_seconds must be > 0 and history_thin_seconds >= 0")
        if self.history_file is not None and self.market is not None and self.market.scripted_path:
            raise ValueError("a scripted index path needs the synthetic market, not a history_file")

    def market_config(self) -> MarketConfig:
        """The market config to use: the explicit one, else the defaults with our seed."""
        if self.market is not None:
            return self.market
        return _with_seed(MarketConfig(), self.seed)

    def eth_market_config(self) -> MarketConfig | None:
        """ETH's market config, or None when ETH is not listed (disabled, or a BTC history replay)."""
        if not self.eth_enabled or self.history_file is not None:
            return None
        if self.eth_market is not None:
            return self.eth_market
        return follow_scenario(eth_market_config(self.seed), self.market_config(), self.seed)

    def perp_configs(self) -> list[PerpConfig]:
        """The perpetuals to list: the explicit ones, else BTCUSD and ETHUSD seeded with our seed."""
        if self.perpetuals is not None:
            return list(self.perpetuals)
        return [btc_perp_config(self.seed), eth_perp_config(self.seed)]

    def exchange_config(self) -> ExchangeConfig:
        """The exchange config to use: the explicit one, else the defaults with our seed.

        With a ``history_file`` it is adjusted so that every fill comes from the recording
        (``simulator.history.recorded_exchange_config``).
        """
        chosen = self.exchange if self.exchange is not None else _with_seed(ExchangeConfig(), self.seed)
        return recorded_exchange_config(chosen) if self.history_file is not None else chosen


def _with_seed(config: _Config, seed: int) -> _Config:
    """``config`` with its ``seed`` field replaced, if it has one."""
    if any(f.name == "seed" for f in dataclasses.fields(config)):
        return dataclasses.replace(config, seed=seed)
    return config
