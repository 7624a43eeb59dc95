"""StrategyConfig validation (BEHAVIOUR.md 1.2, 2.1; incidents 21 and 41) and strategy building."""
from __future__ import annotations

import math
import pathlib

import pytest

import conditions
import exchange_connection
import main as main_module
import strategy
from errors import ConfigError
from option_selection import LegSpec, iron_condor, strangle
from strategies import daily_short_strangle, iron_condor as iron_condor_strategy, micro_strangle, rfq_endurance, smart_strangle
import strategy_factories
from strategy import StrategyConfig
from strategy_factories import check_unique_names
from trade_execution import ExecutionParams


def make(**overrides) -> StrategyConfig:
    fields = {"name": "unit", "legs": strangle(0.1), "exit_conditions": [conditions.max_hold_hours(24)]}
    fields.update(overrides)
    return StrategyConfig(**fields)


def test_defaults_match_the_spec():
    config = StrategyConfig(name="unit", legs=strangle(0.1), hold_to_expiry=True)
    assert config.entry_conditions == [] and config.exit_conditions == []
    assert config.hold_to_expiry is True and make().hold_to_expiry is False
    assert config.max_leg_qty == 10.0 and config.max_structure_qty == 20.0
    assert config.max_structure_notional_usd == 2_000_000.0
    assert config.execution_mode == "auto"
    assert config.max_concurrent_trades == 1 and config.max_trades_per_day == 0
    assert config.cooldown_seconds == 0.0 and config.check_interval_seconds == 60.0
    assert config.max_open_failures_per_day == 3
    assert config.metadata == {} and config.execution_params is None
    assert config.smart_config is None and config.rfq_params is None
    assert config.on_trade_opened is None and config.on_trade_closed is None


def _nine_legs() -> list[LegSpec]:
    return [LegSpec("C", 1, 0.01, {"type": "strike", "value": 90_000.0 + 1000 * i}) for i in range(9)]


BAD_FIELDS = [
    ("name", "", "name"),
    ("name", "x" * 65, "name"),
    ("name", "has space", "name"),
    ("name", 42, "name"),
    ("legs", [], "legs"),
    ("legs", "strangle", "legs"),
    ("legs", _nine_legs(), "legs"),
    ("legs", [strangle(0.1)[0], {"type": "delta"}], "legs[1]"),
    ("legs", [LegSpec("C", 1, 0.1, {"type": "offset", "from_leg": 3, "value": 1000})], "from_leg"),
    ("entry_conditions", "not a list", "entry_conditions"),
    ("exit_conditions", [42], "exit_conditions[0]"),
    ("execution_mode", "fast", "execution_mode"),
    ("execution_mode", "AUTO", "execution_mode"),
    ("max_concurrent_trades", 0, "max_concurrent_trades"),
    ("max_concurrent_trades", 1.5, "max_concurrent_trades"),
    ("max_concurrent_trades", True, "max_concurrent_trades"),
    ("max_trades_per_day", -1, "max_trades_per_day"),
    ("cooldown_seconds", -1.0, "cooldown_seconds"),
    ("cooldown_seconds", math.nan, "cooldown_seconds"),
    ("check_interval_seconds", -5, "check_interval_seconds"),
    ("check_interval_seconds", "60", "check_interval_seconds"),
    ("max_open_failures_per_day", 0, "max_open_failures_per_day"),
    ("on_trade_opened", 5, "on_trade_opened"),
    ("on_trade_closed", lambda trade: None, "on_trade_closed"),
    ("metadata", ["a"], "metadata"),
    ("metadata", {"bad": object()}, "metadata['bad']"),
    ("metadata", {"nan": math.nan}, "metadata['nan']"),
    ("metadata", {"execution_params": "fast"}, "execution_params"),
    ("execution_params", {"fill_timeout_seconds": 5}, "execution_params"),
    ("smart_config", "fast", "smart_config"),
    ("rfq_params", 1, "rfq_params"),
]


@pytest.mark.parametrize(("field_name", "value", "named"), BAD_FIELDS,
                         ids=[f"{f}={str(v)[:20]}" for f, v, _ in BAD_FIELDS])
def test_each_bad_field_is_refused_naming_field_and_value(field_name, value, named):
    with pytest.raises(ConfigError) as caught:
        make(**{field_name: value})
    message = str(caught.value)
    assert named in message
    if field_name != "name":
        assert "'unit'" in message  # the strategy is named too


def test_messages_give_value_and_fix():
    with pytest.raises(ConfigError) as caught:
        make(max_trades_per_day=-1)
    assert str(caught.value) == "strategy 'unit'.max_trades_per_day = -1 is invalid: use a whole number >= 0"


def test_exit_shaped_lambda_in_entry_conditions_is_refused():
    """Incident 21: it would raise TypeError on every tick and never enter."""
    with pytest.raises(ConfigError) as caught:
        make(entry_conditions=[lambda snap, trade: True])
    message = str(caught.value)
    assert "entry_conditions[0]" in message
    assert "takes 2 arguments" in message and "Did you put an exit condition here?" in message


def test_entry_shaped_lambda_in_exit_conditions_is_refused():
    with pytest.raises(ConfigError, match=r"exit_conditions\[1\]"):
        make(exit_conditions=[conditions.max_hold_hours(1), lambda snap: True])


def test_a_factory_object_of_the_wrong_kind_is_refused():
    with pytest.raises(ConfigError, match=r"entry_conditions\[0\].*profit_target.*exit condition"):
        make(entry_conditions=[conditions.profit_target(10)])
    with pytest.raises(ConfigError, match=r"exit_conditions\[0\]"):
        make(exit_conditions=[conditions.min_equity(10)])


def test_plain_functions_with_the_right_shape_are_accepted():
    def entry(snapshot):
        return True

    def leave(snapshot, trade):
        return False

    config = make(entry_conditions=[entry], exit_conditions=[leave])
    assert config.entry_conditions == [entry] and config.exit_conditions == [leave]


def test_leg_index_of_a_greek_limit_must_exist():
    with pytest.raises(ConfigError) as caught:
        make(exit_conditions=[conditions.leg_greek_limit("delta", 0.5, leg=2)])
    assert "exit_conditions[0]" in str(caught.value) and "2 leg(s)" in str(caught.value)
    make(exit_conditions=[conditions.leg_greek_limit("delta", 0.5, leg=1)])
    make(legs=iron_condor(0.01), exit_conditions=[conditions.leg_greek_limit("gamma", 0.1, leg=3)])


def test_metadata_keys_are_lifted_into_typed_fields():
    params = ExecutionParams(fill_timeout_seconds=12.0)
    config = make(metadata={"execution_params": params, "note": "kept", "levels": [1, 2.5, None]})
    assert config.execution_params is params
    assert config.metadata == {"note": "kept", "levels": [1, 2.5, None]}


def test_the_same_setting_given_both_ways_is_refused():
    with pytest.raises(ConfigError, match="execution_params.*also given as metadata"):
        make(execution_params=ExecutionParams(), metadata={"execution_params": ExecutionParams()})


def test_the_metadata_dict_of_the_caller_is_not_mutated():
    given = {"execution_params": ExecutionParams(), "note": 1}
    make(metadata=given)
    assert set(given) == {"execution_params", "note"}


def test_callbacks_must_take_trade_and_snapshot():
    def opened(trade, snapshot):
        return None

    assert make(on_trade_opened=opened).on_trade_opened is opened
    with pytest.raises(ConfigError, match="on_trade_opened"):
        make(on_trade_opened=lambda: None)


def test_tuples_are_accepted_as_lists():
    config = make(legs=tuple(strangle(0.1)), exit_conditions=(conditions.max_hold_hours(2),))
    assert isinstance(config.legs, list) and isinstance(config.exit_conditions, list)


def test_strategy_reexports_every_condition_factory_as_the_same_object():
    names = [factory.__name__ for factory in (*conditions.ENTRY_FACTORIES, *conditions.EXIT_FACTORIES)]
    assert len(names) == 18
    for name in names:
        assert getattr(strategy, name) is getattr(conditions, name)
        assert name in strategy.__all__


def test_names_must_be_unique():
    with pytest.raises(ConfigError, match="'dup' is used twice"):
        check_unique_names([make(name="dup"), make(name="other"), make(name="dup")])


# ---------------------------------------------------------------------------------------------
# The shipped strategies and main's strategy building
# ---------------------------------------------------------------------------------------------


def test_shipped_strategies_build_and_are_the_default_list():
    assert main_module.STRATEGIES == [micro_strangle, daily_short_strangle, iron_condor_strategy, rfq_endurance,
                                      smart_strangle]
    configs = strategy_factories.build_strategy_configs(main_module.STRATEGIES)
    assert [c.name for c in configs] == ["micro_strangle", "daily_short_strangle", "iron_condor", "rfq_endurance",
                                         "smart_strangle"]
    by_name = {c.name: c for c in configs}
    assert by_name["micro_strangle"].execution_mode == "limit"
    assert all(leg.side == 1 and leg.qty == 0.01 for leg in by_name["micro_strangle"].legs)
    assert by_name["rfq_endurance"].execution_mode == "rfq" and by_name["rfq_endurance"].rfq_params is not None
    assert by_name["smart_strangle"].execution_mode == "smart" and by_name["smart_strangle"].smart_config is not None
    assert len(by_name["iron_condor"].legs) == 4
    assert all(leg.side == 2 and leg.qty == 0.1 for leg in by_name["daily_short_strangle"].legs)
    assert all(c.exit_conditions for c in configs)


def test_factories_may_return_lists_and_other_values_are_refused():
    pair = lambda: [make(name="a"), make(name="b")]  # noqa: E731
    assert [c.name for c in strategy_factories.build_strategy_configs([pair])] == ["a", "b"]
    with pytest.raises(ConfigError, match="returned dict"):
        strategy_factories.build_strategy_configs([lambda: {"name": "x"}])
    with pytest.raises(ConfigError, match="used twice"):
        strategy_factories.build_strategy_configs([pair, lambda: make(name="a")])


def test_selecting_an_unknown_strategy_is_refused():
    configs = [make(name="a"), make(name="b")]
    assert [c.name for c in main_module.select_strategies(configs, ["b"])] == ["b"]
    assert main_module.select_strategies(configs, None) == configs
    with pytest.raises(ConfigError, match="nope: no such strategy; known: a, b"):
        main_module.select_strategies(configs, ["nope"])


@pytest.fixture
def forbid_exchange(monkeypatch):
    opened: list[object] = []

    def refuse(*args, **kwargs):
        opened.append(args)
        raise AssertionError("the exchange must not be opened")

    monkeypatch.setattr(exchange_connection, "open_exchange", refuse)
    return opened


def test_incident_21_exit_shaped_entry_condition_exits_2_before_any_request(tmp_path, capsys, forbid_exchange):
    """Incident 21 end to end: the bad strategy never reaches the exchange."""
    def bad_strategy() -> StrategyConfig:
        return make(name="bad", entry_conditions=[lambda s, t: True])

    env = {"TRADING_ENVIRONMENT": "sim", "LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state")}
    code = main_module.main(["--run-for", "60"], env=env, dotenv_path=None, strategies=[bad_strategy])
    assert code == 2
    assert forbid_exchange == []
    assert "entry_conditions[0]" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_main_refuses_an_unknown_strategy_name(tmp_path, capsys, forbid_exchange):
    env = {"TRADING_ENVIRONMENT": "sim", "LOG_DIR": str(tmp_path / "logs")}
    assert main_module.main(["run", "--strategy", "nope"], env=env, dotenv_path=None) == 2
    assert "no such strategy" in capsys.readouterr().err
    assert main_module.main(["check", "--strategy", "nope"], env=env, dotenv_path=None) == 2


def test_importing_strategy_modules_has_no_side_effects():
    """No output, no thread, no settings read at import (BEHAVIOUR.md 1.1)."""
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    script = ("import threading, strategy, strategies, main\n"
              "assert threading.active_count() == 1, threading.enumerate()\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60,
                            env={"PATH": "", "COINCALL_BOGUS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
