"""Every shipped strategy can be backtested and swept by name; the daemon still runs only ``STRATEGIES``.

Why: issue 13's comparison backtests ``hedged_strangle_btc`` / ``_eth``, which are shipped but not
configured to run. ``main.with_shipped_strategies`` adds the shipped factories to the configured
ones for ``backtest --strategy`` and ``sweep`` (a configured strategy wins a shared name), and
nothing else: ``run`` and ``check`` keep refusing a name that is not in ``STRATEGIES``.
No backtest runs here: ``run_backtest`` and ``run_sweep`` are replaced by recorders.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import exchange_connection
import main as main_module
from errors import ConfigError
import strategies
from strategies import SHIPPED_STRATEGIES, hedged_strangle_btc, hedged_strangle_eth, micro_strangle
from strategy import StrategyConfig
from strategy_factories import build_strategy_configs
from sweep_spec import build_config, load_sweep

ROOT = Path(__file__).resolve().parents[2]
SWEEP = """\
strategy = "hedged_strangle_btc"
seeds = [7, 11]
poll = 60
scenario = "trend-week"

[period]
from = "2026-03-02"
days = 3.5

[[runs]]
hedged = true

[[runs]]
hedged = false
"""


def differences(a: StrategyConfig, b: StrategyConfig) -> list[str]:
    """The fields where two configs differ (a StrategyConfig compares by identity)."""
    return [item.name for item in dataclasses.fields(StrategyConfig) if getattr(a, item.name) != getattr(b, item.name)]


def names(factories: Any) -> list[str]:
    return [config.name for config in build_strategy_configs(factories)]


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The strategy names of every backtest ``main`` would have run (none runs)."""
    calls: list[list[str]] = []

    def record(configs: Any, *_args: Any, **_kwargs: Any) -> int:
        calls.append([config.name for config in configs])
        return 0

    monkeypatch.setattr(main_module, "run_backtest", record)
    return calls


def backtest(args: list[str], tmp_path: Path, **kwargs: Any) -> int:
    return main_module.main(["backtest", "--from", "2026-03-02", "--days", "1", "--out", str(tmp_path / "bt"), *args],
                            env={}, dotenv_path=None, **kwargs)


def test_the_catalogue_is_an_immutable_tuple_of_all_seven_shipped_factories():
    assert isinstance(SHIPPED_STRATEGIES, tuple)
    assert SHIPPED_STRATEGIES == (strategies.micro_strangle, strategies.daily_short_strangle, strategies.iron_condor,
                                  strategies.rfq_endurance, strategies.smart_strangle, hedged_strangle_btc,
                                  hedged_strangle_eth)
    assert len(set(names(SHIPPED_STRATEGIES))) == 7
    assert set(main_module.STRATEGIES) < set(SHIPPED_STRATEGIES)   # the daemon runs a part of them


def test_backtest_and_sweep_know_the_configured_strategies_then_the_other_shipped_ones():
    extended = main_module.with_shipped_strategies(main_module.STRATEGIES)
    assert extended == [*main_module.STRATEGIES, hedged_strangle_btc, hedged_strangle_eth]
    assert main_module.with_shipped_strategies([micro_strangle]) == [micro_strangle, *SHIPPED_STRATEGIES[1:]]


def test_a_configured_strategy_wins_the_name_it_shares_with_a_shipped_one():
    def my_hedged() -> Any:   # a user's own strategy under the shipped name
        return dataclasses.replace(micro_strangle(), name="hedged_strangle_btc")

    extended = main_module.with_shipped_strategies([my_hedged])
    assert hedged_strangle_btc not in extended and extended[0] is my_hedged
    (chosen,) = main_module.select_strategies(build_strategy_configs(extended), ["hedged_strangle_btc"])
    assert differences(chosen, my_hedged()) == [] and chosen.hedge is None


def test_an_invalid_configured_strategy_is_still_refused():
    with pytest.raises(ConfigError, match="returned str"):
        main_module.with_shipped_strategies([lambda: "not a strategy"])


def test_backtest_strategy_accepts_a_shipped_strategy_that_is_not_configured(tmp_path, ran):
    assert "hedged_strangle_btc" not in names(main_module.STRATEGIES)
    assert backtest(["--strategy", "hedged_strangle_btc"], tmp_path) == 0
    assert ran == [["hedged_strangle_btc"]]


def test_backtest_without_strategy_runs_only_the_configured_ones(tmp_path, ran):
    assert backtest([], tmp_path) == 0
    assert ran == [names(main_module.STRATEGIES)]
    assert backtest([], tmp_path / "other", strategies=[micro_strangle]) == 0
    assert ran[-1] == ["micro_strangle"]


def test_an_unknown_backtest_strategy_lists_every_known_name(tmp_path, ran, capsys):
    assert backtest(["--strategy", "hedged_strangel_btc"], tmp_path) == 2
    err = capsys.readouterr().err
    assert "hedged_strangel_btc: no such strategy" in err
    assert all(name in err for name in names(SHIPPED_STRATEGIES))
    assert ran == []


def test_run_and_check_still_know_only_the_configured_strategies(tmp_path, capsys, monkeypatch):
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the exchange must not be opened")

    monkeypatch.setattr(exchange_connection, "open_exchange", refuse)
    env = {"TRADING_ENVIRONMENT": "sim", "LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state")}
    for command in ("run", "check"):
        assert main_module.main([command, "--strategy", "hedged_strangle_btc"], env=env, dotenv_path=None) == 2
        err = capsys.readouterr().err
        assert "hedged_strangle_btc: no such strategy" in err and "hedged_strangle_eth" not in err


def test_a_sweep_file_naming_a_shipped_strategy_loads_through_the_command(tmp_path, monkeypatch):
    path = tmp_path / "hedged.toml"
    path.write_text(SWEEP, encoding="utf-8")
    specs: list[Any] = []
    monkeypatch.setattr(main_module, "run_sweep", lambda spec, *_args, **_kwargs: specs.append(spec) or 0)
    assert main_module.main(["sweep", str(path), "--out", str(tmp_path / "out")], env={}, dotenv_path=None) == 0
    (spec,) = specs
    assert spec.strategy == "hedged_strangle_btc" and spec.factory is hedged_strangle_btc
    assert [(dict(c.params), c.seed) for c in spec.combinations] == [
        ({"hedged": True}, 7), ({"hedged": True}, 11), ({"hedged": False}, 7), ({"hedged": False}, 11)]
    with pytest.raises(ConfigError, match="is not a strategy"):   # the configured list alone does not know it
        load_sweep(path, main_module.STRATEGIES)


def test_the_hedged_keyword_of_a_sweep_builds_the_same_strategy_with_or_without_the_hedge():
    for factory in (hedged_strangle_btc, hedged_strangle_eth):
        name = factory().name
        hedged = build_config(name, factory, {"hedged": True})
        unhedged = build_config(name, factory, {"hedged": False})
        assert differences(hedged, factory()) == [] and hedged.hedge is not None
        assert unhedged.hedge is None and differences(unhedged, hedged) == ["hedge"]
        with pytest.raises(ConfigError, match="hedged = 1 is invalid"):   # a number is not a choice of side
            build_config(name, factory, {"hedged": 1})


@pytest.mark.parametrize("path", sorted(ROOT.glob("sweeps/hedged_vs_unhedged_*.toml")), ids=lambda p: p.name)
def test_the_shipped_comparison_sweeps_are_valid(path):
    spec = load_sweep(path, main_module.with_shipped_strategies(main_module.STRATEGIES))
    assert spec.strategy in ("hedged_strangle_btc", "hedged_strangle_eth")
    assert spec.seeds == (7, 11) and spec.parameters == ("hedged",)
    assert sorted(c.params["hedged"] for c in spec.combinations) == [False, False, True, True]


def test_there_is_one_comparison_sweep_per_underlying_and_market():
    stems = sorted(path.stem for path in ROOT.glob("sweeps/hedged_vs_unhedged_*.toml"))
    markets = ["", "_crash_day", "_quiet_week", "_trend_week"]
    assert stems == [f"hedged_vs_unhedged_{u}{m}" for u in ("btc", "eth") for m in markets]
