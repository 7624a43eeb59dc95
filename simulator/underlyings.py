"""The second underlying of the simulated exchange: ETH's market configuration.

Why a module of its own: ETH options are a market of their own (index path, volatility
surface, strike grid, contract size), but nothing of that is documented beyond the contract
size (0.1 ETH) and the tick (0.01). The values chosen here are the simulator's defaults,
written once so the configuration, the scenarios and the documentation agree.

* Index: its own seeded walk, started at 3,000 USD, annual volatility 65 %. The seed is derived
  from the run's seed (``derived_seed``), so ETH moves independently of BTC but the same way on
  every run with the same seed.
* Surface: ATM 65 % (BTC 50 %), a little less put skew than BTC.
* Strikes: every 25 USD on dailies, 50 on weeklies and monthlies, 100 on quarterlies.
* Contract: quantity step and minimum 0.1 ETH, price tick 0.01 USD.
"""
from __future__ import annotations

import dataclasses
import hashlib

from simulator.market import MarketConfig

ETH = "ETH"
ETH_START_INDEX = 3_000.0


def derived_seed(seed: int, name: str) -> int:
    """A seed for ``name``'s random streams, fixed by the run's ``seed`` and independent of BTC's."""
    digest = hashlib.blake2b(f"{seed}|{name}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 1)


def eth_market_config(seed: int, *, start_index: float = ETH_START_INDEX) -> MarketConfig:
    """ETH options' market with the simulator's defaults (module docstring); ``seed`` is the run's seed."""
    return MarketConfig(
        seed=derived_seed(seed, ETH),
        base=ETH,
        start_index=start_index,
        annual_vol=0.65,
        atm_vol=0.65,
        smile_skew=-0.10,
        tick_size=0.01,
        min_qty=0.1,
        qty_step=0.1,
        strike_step={"daily": 25.0, "weekly": 50.0, "monthly": 50.0, "quarterly": 100.0},
        level_size=(5.0, 50.0),
        empty_bid_below=0.5,
    )


def follow_scenario(eth: MarketConfig, btc: MarketConfig, seed: int) -> MarketConfig:
    """ETH's market under the scenario ``btc`` was built for (``MarketConfig.scenario``), if any.

    The scenario shapes ETH's own seeded walk the same way (a crash is a crash of both), and
    scales ETH's implied volatility by the ratio the scenario applied to BTC's.
    """
    if btc.scenario is None or not btc.scripted_path:
        return eth
    from simulator.scenarios import scenario_market  # scenarios import the market, not this module

    start_ms = int(btc.scripted_path[0][0])
    shaped = scenario_market(btc.scenario, derived_seed(seed, ETH), start_ms, eth)
    base_atm = MarketConfig().atm_vol
    ratio = shaped.atm_vol / base_atm if shaped.atm_vol != eth.atm_vol else 1.0
    return dataclasses.replace(shaped, atm_vol=round(eth.atm_vol * ratio, 6))


__all__ = ["ETH", "ETH_START_INDEX", "derived_seed", "eth_market_config", "follow_scenario"]
