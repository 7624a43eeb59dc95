"""The README's Python examples run exactly as written (BEHAVIOUR.md 1.5, issue 3 acceptance).

Each ```python block of README.md is executed; the only name provided from outside is
``market``, the market-data service a running context exposes as ``ctx.market_data``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from coincall_client import ClientSettings, CoincallClient, Credentials
from market_data import MarketData
from option_selection import LegSpec, OptionQuery, SelectedOption
from strategy import StrategyConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_a_strategy_and_a_find_option_example():
    blocks = python_blocks()
    assert any("StrategyConfig(" in b for b in blocks)
    assert any("find_option(" in b for b in blocks)


@pytest.fixture
def market(sim):
    client = CoincallClient(ClientSettings(base_url=sim.base_url), Credentials(sim.api_key, sim.api_secret), sim.clock)
    yield MarketData(client, sim.clock)
    client.close()


def test_every_readme_python_block_runs_as_written(market, capsys):
    namespace: dict = {"market": market}
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own documentation

    config = namespace["my_strategy"]()
    assert isinstance(config, StrategyConfig) and config.name == "my_strategy" and len(config.legs) == 2
    put = namespace["put"]
    assert isinstance(put, SelectedOption) and put.option_type == "P" and -0.30 <= put.delta <= -0.15
    assert put.symbol in capsys.readouterr().out
    leg = namespace["short_put"]
    assert isinstance(leg, LegSpec) and isinstance(leg.strike_criteria, OptionQuery)
