"""Configuration that refuses nonsense (issue 9): every case runs the real entry point.

Each case calls ``main.main([...], env={...}, dotenv_path=None, strategies=[factory])`` and
requires exit code 2 and one ``configuration error:`` message on stderr that names the strategy
(for a strategy) or the variable (for the environment), the field, the bad value and a fix.

How "nothing was sent" is proven, three ways at once (``no_exchange``):

* ``exchange_connection.open_exchange`` and ``read_server_time`` are replaced by recorders.
  They are the only ways the daemon reaches an exchange (``open_exchange`` is also the only
  code that starts the embedded simulator), so an empty record means no connection was
  opened and no simulator was started.
* A ``responses`` mock with no registered URL is active: any request made through
  ``requests`` by any code path would be caught and counted in ``mock.calls`` (and fail), so
  ``mock.calls == []`` means no HTTP request was made at all.
* ``COINCALL_BASE_URL`` points at ``127.0.0.1:9`` (discard; nothing listens), so even a
  request that escaped both would reach nothing; and the state and log directories must
  not exist afterwards, so no lock, store or log file was written either.

Time is not involved: every refusal happens before a clock is chosen.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime, time, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import responses

import exchange_connection
import main as main_module
import strategy as strategy_module
import strategy_factories
from account_manager import AccountSnapshot
from app import TradingContext
from clock import SimulatedClock
from conditions import (
    leg_greek_limit,
    max_account_delta,
    max_hold_hours,
    max_loss,
    max_loss_pct,
    max_margin_utilization,
    min_available_margin_pct,
    min_equity,
    no_existing_position_in,
    profit_target,
    profit_target_pct,
    time_exit,
    time_window,
    utc_time_window,
    weekday_filter,
)
from multileg_orderbook import SmartExecConfig
from option_selection import LegSpec, find_option, iron_condor, strangle
from persistence import StateStore
from rfq import RFQParams
from strategy import StrategyConfig, StrategyRunner
from trade_execution import ExecutionParams

CLOSED_URL = "http://127.0.0.1:9"
SIM_KEY = "REFUSALKEYabcdefghijklmnopqrstuvwxyz0123"
SIM_SECRET = "refusal-secret-never-used"
START = datetime(2026, 3, 3, 9, 0, tzinfo=timezone.utc).timestamp()
OMIT = object()  # a field left out of the StrategyConfig call altogether


# ---------------------------------------------------------------------------------------------
# The rig
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_exchange(monkeypatch):
    """Record every attempt to reach an exchange; see the module docstring."""
    attempts: list[str] = []

    def recorder(what: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise AssertionError(f"{what} must not be reached by a refused configuration")
        return refuse

    monkeypatch.setattr(exchange_connection, "open_exchange", recorder("open_exchange"))
    monkeypatch.setattr(exchange_connection, "read_server_time", recorder("read_server_time"))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield SimpleNamespace(attempts=attempts, http=mock)


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"TRADING_ENVIRONMENT": "sim", "COINCALL_BASE_URL": CLOSED_URL, "COINCALL_API_KEY_SIM": SIM_KEY,
           "COINCALL_API_SECRET_SIM": SIM_SECRET, "STATE_DIR": str(tmp_path / "state"),
           "LOG_DIR": str(tmp_path / "logs")}
    env.update(extra)
    return {key: value for key, value in env.items() if value is not None}


def good_strategy() -> StrategyConfig:
    return StrategyConfig(name="good_one", legs=strangle(0.1), exit_conditions=[max_hold_hours(24)],
                          execution_mode="limit")


def refused(tmp_path: Path, capsys: Any, no_exchange: Any, *, env: dict[str, str],
            strategies: list[Callable[[], Any]] | None = None, argv: tuple[str, ...] = ("run", "--run-for", "60"),
            dirs_must_not_exist: bool = True) -> str:
    """Run main; require exit 2, nothing sent, one message line; return that line."""
    code = main_module.main(list(argv), clock=SimulatedClock(start=START, speed=0), env=env, dotenv_path=None,
                            strategies=[good_strategy] if strategies is None else strategies)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert no_exchange.attempts == [], "the exchange was reached"
    assert len(no_exchange.http.calls) == 0, "an HTTP request was made"
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("configuration error: "), captured.err
    if dirs_must_not_exist:
        assert not (tmp_path / "state").exists() and not (tmp_path / "logs").exists()
    return lines[0]


def assert_names(message: str, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"


# ---------------------------------------------------------------------------------------------
# Strategy refusals: name, field, bad value and fix, through the real entry point
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One refused strategy: ``fields()`` runs inside the factory, as a strategy file would."""

    id: str
    fields: Callable[[], dict]
    field: str
    value: str
    fix: str


def base_fields() -> dict:
    return {"legs": strangle(0.1), "exit_conditions": [max_hold_hours(24)], "execution_mode": "limit"}


def factory_for(case: Case) -> Callable[[], StrategyConfig]:
    """A strategy factory named after the case; its StrategyConfig's name is ``name``."""
    name = f"refused_{case.id}"

    def factory() -> StrategyConfig:
        return StrategyConfig(name=name, **without_omitted({**base_fields(), **case.fields()}))

    factory.__name__ = factory.__qualname__ = f"make_{case.id}"
    return factory


def without_omitted(fields: dict) -> dict:
    return {key: value for key, value in fields.items() if value is not OMIT}


def nine_legs() -> list[LegSpec]:
    return [LegSpec("C", 1, 0.01, {"type": "strike", "value": 90_000.0 + 1000 * i}) for i in range(9)]


def call_leg(**overrides: Any) -> LegSpec:
    fields: dict[str, Any] = {"option_type": "C", "side": 1, "qty": 0.1,
                              "strike_criteria": {"type": "delta", "value": 0.25}}
    fields.update(overrides)
    return LegSpec(**fields)


PERCENT_FIX = "fraction=True"
CAP_FIX_QTY = "from 0.01 to 1000"
CAP_FIX_STRUCTURE = "from 0.01 to 8000"
CAP_FIX_NOTIONAL = "from 1 to 1e+09"
INTERVAL_FIX = "poll interval"

STRATEGY_CASES: list[Case] = [
    # 1. a way out: exits, or an explicit hold_to_expiry
    Case("no_exit_list", lambda: {"exit_conditions": OMIT}, "exit_conditions", "[]", "hold_to_expiry=True"),
    Case("empty_exit_list", lambda: {"exit_conditions": []}, "exit_conditions", "[]", "max_hold_hours(24)"),
    Case("empty_exit_tuple", lambda: {"exit_conditions": ()}, "exit_conditions", "[]", "hold_to_expiry=True"),
    Case("exits_and_hold", lambda: {"hold_to_expiry": True}, "hold_to_expiry", "True",
         "remove the exit conditions"),
    Case("hold_not_bool", lambda: {"hold_to_expiry": "yes", "exit_conditions": []}, "hold_to_expiry", "'yes'",
         "use True or False"),
    Case("hold_one", lambda: {"hold_to_expiry": 1, "exit_conditions": []}, "hold_to_expiry", "1",
         "use True or False"),
    # 2. size caps
    Case("qty_1e9", lambda: {"legs": [call_leg(qty=1e9)]}, "legs[0].qty", "1000000000.0", "max_leg_qty"),
    Case("qty_11_strangle", lambda: {"legs": strangle(11)}, "legs[0].qty", "11.0", "raise max_leg_qty"),
    Case("qty_above_own_cap", lambda: {"legs": strangle(2), "max_leg_qty": 1.5}, "legs[0].qty", "2.0",
         "max_leg_qty=1.5"),
    Case("qty_second_leg", lambda: {"legs": [call_leg(), call_leg(option_type="P", qty=12.0,
                                                                  strike_criteria={"type": "delta", "value": -0.2})]},
         "legs[1].qty", "12.0", "use a smaller quantity"),
    Case("structure_24", lambda: {"legs": iron_condor(6)}, "legs", "24 BTC", "max_structure_qty=20"),
    Case("structure_own_cap", lambda: {"legs": strangle(1), "max_structure_qty": 1.5}, "legs", "2 BTC",
         "raise max_structure_qty"),
    Case("leg_cap_zero", lambda: {"max_leg_qty": 0}, "max_leg_qty", "0", CAP_FIX_QTY),
    Case("leg_cap_negative", lambda: {"max_leg_qty": -1}, "max_leg_qty", "-1", CAP_FIX_QTY),
    Case("leg_cap_nan", lambda: {"max_leg_qty": math.nan}, "max_leg_qty", "nan", CAP_FIX_QTY),
    Case("leg_cap_bool", lambda: {"max_leg_qty": True}, "max_leg_qty", "True", CAP_FIX_QTY),
    Case("leg_cap_text", lambda: {"max_leg_qty": "10"}, "max_leg_qty", "'10'", CAP_FIX_QTY),
    Case("leg_cap_huge", lambda: {"max_leg_qty": 1e9}, "max_leg_qty", "1000000000.0", CAP_FIX_QTY),
    Case("structure_cap_zero", lambda: {"max_structure_qty": 0.0}, "max_structure_qty", "0.0", CAP_FIX_STRUCTURE),
    Case("structure_cap_inf", lambda: {"max_structure_qty": math.inf}, "max_structure_qty", "inf",
         CAP_FIX_STRUCTURE),
    Case("notional_cap_zero", lambda: {"max_structure_notional_usd": 0}, "max_structure_notional_usd", "0",
         CAP_FIX_NOTIONAL),
    Case("notional_cap_negative", lambda: {"max_structure_notional_usd": -5.0}, "max_structure_notional_usd",
         "-5.0", CAP_FIX_NOTIONAL),
    Case("notional_cap_inf", lambda: {"max_structure_notional_usd": math.inf}, "max_structure_notional_usd",
         "inf", CAP_FIX_NOTIONAL),
    Case("notional_cap_text", lambda: {"max_structure_notional_usd": "2e6"}, "max_structure_notional_usd",
         "'2e6'", CAP_FIX_NOTIONAL),
    # 3. percentages written as fractions
    Case("profit_pct_fraction", lambda: {"exit_conditions": [profit_target_pct(0.3)]}, "pct", "0.3",
         "30 means 30 %"),
    Case("loss_pct_fraction", lambda: {"exit_conditions": [max_loss_pct(0.6)]}, "pct", "0.6", "60 means 60 %"),
    Case("margin_pct_fraction", lambda: {"entry_conditions": [min_available_margin_pct(0.5)]}, "pct", "0.5",
         "50 means 50 %"),
    Case("utilization_fraction", lambda: {"entry_conditions": [max_margin_utilization(0.8)]}, "pct", "0.8",
         PERCENT_FIX),
    Case("profit_pct_almost_one", lambda: {"exit_conditions": [profit_target_pct(0.999)]}, "pct", "0.999",
         PERCENT_FIX),
    Case("loss_pct_fraction_flag_text", lambda: {"exit_conditions": [max_loss_pct(0.5, fraction="yes")]},
         "fraction", "'yes'", "fraction=True"),
    Case("margin_fraction_above_one", lambda: {"entry_conditions": [min_available_margin_pct(1.5, fraction=True)]},
         "pct", "1.5", "with fraction=True write 0.5"),
    Case("utilization_above_100", lambda: {"entry_conditions": [max_margin_utilization(101)]}, "pct", "101",
         "give a percentage"),
    Case("profit_pct_zero", lambda: {"exit_conditions": [profit_target_pct(0)]}, "pct", "0", "give a percentage"),
    # 4. check interval
    Case("check_zero", lambda: {"check_interval_seconds": 0}, "check_interval_seconds", "= 0 ", INTERVAL_FIX),
    Case("check_half_second", lambda: {"check_interval_seconds": 0.5}, "check_interval_seconds", "0.5",
         INTERVAL_FIX),
    Case("check_nano", lambda: {"check_interval_seconds": 1e-9}, "check_interval_seconds", "1e-09", INTERVAL_FIX),
    Case("check_negative", lambda: {"check_interval_seconds": -5}, "check_interval_seconds", "-5", INTERVAL_FIX),
    Case("check_text", lambda: {"check_interval_seconds": "60"}, "check_interval_seconds", "'60'", INTERVAL_FIX),
    Case("check_nan", lambda: {"check_interval_seconds": math.nan}, "check_interval_seconds", "nan", INTERVAL_FIX),
    # misspelled fields, keywords and keys: "did you mean"
    Case("kw_exit_condition", lambda: {"exit_conditions": OMIT, "exit_condition": [max_hold_hours(1)]},
         "exit_condition=", "max_hold_hours", "did you mean 'exit_conditions'?"),
    Case("kw_max_trade_per_day", lambda: {"max_trade_per_day": 2}, "max_trade_per_day", "=2",
         "did you mean 'max_trades_per_day'?"),
    Case("kw_check_interval", lambda: {"check_interval": 10}, "check_interval", "=10",
         "did you mean 'check_interval_seconds'?"),
    Case("kw_hold_to_expiration", lambda: {"exit_conditions": [], "hold_to_expiration": True},
         "hold_to_expiration", "True", "did you mean 'hold_to_expiry'?"),
    Case("legspec_strike_criterea", lambda: {"legs": [LegSpec("C", 1, 0.1, strike_criterea={"type": "delta",
                                                                                             "value": 0.2})]},
         "strike_criterea", "'delta'", "did you mean 'strike_criteria'?"),
    Case("legspec_optiontype", lambda: {"legs": [LegSpec(optiontype="C", side=1, qty=0.1,
                                                          strike_criteria={"type": "delta", "value": 0.2})]},
         "optiontype", "'C'", "did you mean 'option_type'?"),
    Case("criteria_key_vlaue", lambda: {"legs": [call_leg(strike_criteria={"type": "delta", "vlaue": 0.2})]},
         "strike_criteria", "'vlaue'", "did you mean 'value'?"),
    Case("expiry_key_dtee", lambda: {"legs": [call_leg(expiry_criteria={"dtee": 3})]}, "expiry_criteria",
         "'dtee'", "did you mean 'dte'?"),
    Case("strike_filter_below_atn", lambda: {"legs": [call_leg(option_type="P", strike_criteria=find_option(
        "P", strike={"below_atn": True}, delta={"min": -0.3, "max": -0.1}))]}, "strike", "'below_atn'",
         "did you mean 'below_atm'?"),
    Case("delta_filter_mn", lambda: {"legs": [call_leg(strike_criteria=find_option("C", delta={"mn": 0.1}))]},
         "delta", "'mn'", "did you mean 'min'?"),
    Case("template_calldelta", lambda: {"legs": strangle(0.1, calldelta=0.2)}, "calldelta", "strangle()",
         "did you mean 'call_delta'?"),
    Case("condition_kw_mod", lambda: {"exit_conditions": [max_loss(usd=10, mod="fair")]}, "mod", "max_loss()",
         "did you mean 'mode'?"),
    # legs and criteria
    Case("leg_side_3", lambda: {"legs": [call_leg(side=3)]}, "side", "3", "use 1 (BUY) or 2 (SELL)"),
    Case("leg_qty_step", lambda: {"legs": [call_leg(qty=0.015)]}, "qty", "0.015", "multiple of 0.01"),
    Case("leg_qty_zero", lambda: {"legs": [call_leg(qty=0)]}, "qty", "0", "use a quantity >= 0.01"),
    Case("leg_qty_nan", lambda: {"legs": [call_leg(qty=math.nan)]}, "qty", "nan", "use a quantity >= 0.01"),
    Case("leg_option_type", lambda: {"legs": [call_leg(option_type="X")]}, "option_type", "'X'", "'C' (call)"),
    Case("strike_type_typo", lambda: {"legs": [call_leg(strike_criteria={"type": "delt", "value": 0.2})]},
         "strike_criteria['type']", "'delt'", "use one of delta"),
    Case("put_delta_positive", lambda: {"legs": [call_leg(option_type="P",
                                                          strike_criteria={"type": "delta", "value": 0.2})]},
         "strike_criteria['value']", "0.2", "a put delta must be in (-1, 0)"),
    Case("strike_value_negative", lambda: {"legs": [call_leg(strike_criteria={"type": "strike", "value": -1})]},
         "strike_criteria['value']", "-1", "use a listed strike > 0"),
    Case("spotdistance_below_minus_100", lambda: {"legs": [call_leg(strike_criteria={"type": "spotdistance%",
                                                                                     "value": -150})]},
         "strike_criteria['value']", "-150", "use a percentage > -100"),
    Case("offset_leg_missing", lambda: {"legs": [call_leg(strike_criteria={"type": "offset", "from_leg": 5,
                                                                           "value": 1000})]},
         "from_leg", "5", "use the index of another leg"),
    Case("expiry_dte_negative", lambda: {"legs": [call_leg(expiry_criteria={"dte": -1})]},
         "expiry_criteria['dte']", "-1", "use 'next' or an int >= 0"),
    Case("expiry_symbol_bad", lambda: {"legs": [call_leg(expiry_criteria={"symbol": "31FOO26"})]},
         "expiry_criteria['symbol']", "'31FOO26'", "use a date token like '28MAR26'"),
    Case("expiry_days_target", lambda: {"legs": [call_leg(expiry_criteria={"min_days": 1, "target": "soon"})]},
         "expiry_criteria['target']", "'soon'", "use one of near, far, mid"),
    Case("template_put_delta_sign", lambda: {"legs": strangle(0.1, put_delta=0.25)}, "put_delta", "0.25",
         "a put delta must be in (-1, 0)"),
    Case("legs_empty", lambda: {"legs": []}, "legs", "[]", "give at least one LegSpec"),
    Case("legs_nine", lambda: {"legs": nine_legs()}, "legs", "9 legs", "use at most 8 legs"),
    Case("legs_text", lambda: {"legs": "strangle"}, "legs", "'strangle'", "use a list of LegSpec"),
    Case("legs_dict_item", lambda: {"legs": [strangle(0.1)[0], {"type": "delta"}]}, "legs[1]", "'delta'",
         "use a LegSpec"),
    # execution settings and limits
    Case("mode_fast", lambda: {"execution_mode": "fast"}, "execution_mode", "'fast'", "use one of auto, limit"),
    Case("mode_upper", lambda: {"execution_mode": "LIMIT"}, "execution_mode", "'LIMIT'", "use one of auto"),
    Case("concurrent_zero", lambda: {"max_concurrent_trades": 0}, "max_concurrent_trades", "0",
         "whole number >= 1"),
    Case("per_day_negative", lambda: {"max_trades_per_day": -1}, "max_trades_per_day", "-1", "whole number >= 0"),
    Case("per_day_float", lambda: {"max_trades_per_day": 1.5}, "max_trades_per_day", "1.5", "whole number >= 0"),
    Case("cooldown_negative", lambda: {"cooldown_seconds": -1.0}, "cooldown_seconds", "-1.0", "seconds >= 0"),
    Case("open_failures_zero", lambda: {"max_open_failures_per_day": 0}, "max_open_failures_per_day", "0",
         "whole number >= 1"),
    Case("metadata_list", lambda: {"metadata": ["a"]}, "metadata", "['a']", "use a dict"),
    Case("metadata_nan", lambda: {"metadata": {"level": math.nan}}, "metadata['level']", "nan",
         "JSON-serialisable"),
    Case("execution_params_dict", lambda: {"execution_params": {"fill_timeout_seconds": 5}}, "execution_params",
         "'fill_timeout_seconds'", "use a trade_execution.ExecutionParams"),
    Case("execution_params_value", lambda: {"execution_params": ExecutionParams(fill_timeout_seconds=-1)},
         "fill_timeout_seconds", "-1", "must be > 0"),
    Case("smart_config_value", lambda: {"smart_config": SmartExecConfig(chunk_count=0)}, "chunk_count", "0",
         "use an int within 1..50"),
    Case("rfq_params_value", lambda: {"rfq_params": RFQParams(timeout_seconds=-1)}, "timeout_seconds", "-1",
         "must be a number > 0"),
    Case("smart_config_text", lambda: {"smart_config": "fast"}, "smart_config", "'fast'",
         "use a multileg_orderbook.SmartExecConfig"),
    Case("callback_no_args", lambda: {"on_trade_opened": lambda: None}, "on_trade_opened", "<lambda>",
         "accept two arguments (trade, snapshot)"),
    # conditions
    Case("entry_exit_shaped_lambda", lambda: {"entry_conditions": [lambda snap, trade: True]},
         "entry_conditions[0]", "takes 2 arguments", "Did you put an exit condition here?"),
    Case("exit_in_entries", lambda: {"entry_conditions": [profit_target(10)]}, "entry_conditions[0]",
         "profit_target(usd=10.0", "Move it to exit_conditions"),
    Case("entry_in_exits", lambda: {"exit_conditions": [min_equity(10)]}, "exit_conditions[0]",
         "min_equity(usd=10.0)", "Move it to entry_conditions"),
    Case("window_empty", lambda: {"entry_conditions": [time_window(9, 9)]}, "end_hour", "9", "time_window(9, 17)"),
    Case("window_hour_25", lambda: {"entry_conditions": [time_window(25, 3)]}, "start_hour", "25",
         "give whole UTC hours"),
    Case("utc_window_empty", lambda: {"entry_conditions": [utc_time_window(time(9), time(9))]}, "end",
         "datetime.time(9, 0)", "utc_time_window(time(9, 30), time(16, 0))"),
    Case("weekday_funday", lambda: {"entry_conditions": [weekday_filter(["mon", "funday"])]}, "days", "'funday'",
         "list weekdays"),
    Case("symbols_lowercase", lambda: {"entry_conditions": [no_existing_position_in(["btc"])]}, "symbols",
         "'btc'", "list exact symbols"),
    Case("account_delta_negative", lambda: {"entry_conditions": [max_account_delta(-1)]}, "limit", "-1",
         "max_account_delta(0.5)"),
    Case("min_equity_negative", lambda: {"entry_conditions": [min_equity(-1)]}, "usd", "-1", "min_equity(1000)"),
    Case("hold_hours_zero", lambda: {"exit_conditions": [max_hold_hours(0)]}, "hours", "0", "max_hold_hours(24)"),
    Case("profit_usd_negative", lambda: {"exit_conditions": [profit_target(-5)]}, "usd", "-5",
         "profit_target(50)"),
    Case("loss_usd_zero", lambda: {"exit_conditions": [max_loss(0)]}, "usd", "0", "max_loss(100)"),
    Case("loss_confirmations_zero", lambda: {"exit_conditions": [max_loss_pct(50, confirmations=0)]},
         "confirmations", "0", "confirmations=2"),
    Case("valuation_mode_bid", lambda: {"exit_conditions": [profit_target(10, mode="bid")]}, "mode", "'bid'",
         "use one of mark, mid, fair, executable"),
    Case("greek_leg_missing", lambda: {"exit_conditions": [leg_greek_limit("delta", 0.5, leg=3)]},
         "exit_conditions[0]", "leg=3", "the strategy has 2 leg(s)"),
    Case("greek_unknown", lambda: {"exit_conditions": [leg_greek_limit("vanna", 0.5)]}, "greek", "'vanna'",
         "use one of delta, gamma"),
    Case("time_exit_hour_24", lambda: {"exit_conditions": [time_exit(24)]}, "hour", "24", "time_exit(16, 30)"),
    Case("exit_not_callable", lambda: {"exit_conditions": [42]}, "exit_conditions[0]", "42", "exit conditions are"),
]


@pytest.mark.parametrize("case", STRATEGY_CASES, ids=[case.id for case in STRATEGY_CASES])
def test_a_refused_strategy_exits_2_naming_strategy_field_value_and_fix(case, tmp_path, capsys, no_exchange):
    message = refused(tmp_path, capsys, no_exchange, env=env_for(tmp_path), strategies=[factory_for(case)])
    assert_names(message, f"'refused_{case.id}'", case.field, case.value, case.fix)
    assert "strategy factory" not in message  # the strategy's name, not the factory function, leads


def test_the_case_list_is_large_enough_and_unique():
    ids = [case.id for case in STRATEGY_CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) + len(ENV_CASES) + len(DIRECTORY_CASES) >= 60


@pytest.mark.parametrize("case", [c for c in STRATEGY_CASES if c.id in
                                  ("no_exit_list", "qty_1e9", "profit_pct_fraction", "check_zero")],
                         ids=lambda case: case.id)
def test_check_refuses_the_same_strategies_before_any_request(case, tmp_path, capsys, no_exchange):
    message = refused(tmp_path, capsys, no_exchange, env=env_for(tmp_path), strategies=[factory_for(case)],
                      argv=("check",))
    assert_names(message, f"'refused_{case.id}'", case.field, case.value, case.fix)


# ---------------------------------------------------------------------------------------------
# Strategy-level refusals that are not one field of one config
# ---------------------------------------------------------------------------------------------


def bad_name() -> StrategyConfig:
    return StrategyConfig(name="has space", legs=strangle(0.1), exit_conditions=[max_hold_hours(1)])


def twin_a() -> StrategyConfig:
    return StrategyConfig(name="twin", legs=strangle(0.1), exit_conditions=[max_hold_hours(1)])


def twin_b() -> StrategyConfig:
    return StrategyConfig(name="twin", legs=strangle(0.2), exit_conditions=[max_hold_hours(2)])


def returns_a_dict() -> Any:
    return {"name": "dict_strategy"}


def built_by_expression() -> StrategyConfig:
    prefix = "computed"
    return StrategyConfig(name=prefix + "_name", legs=strangle(0.1), exit_conditions=[max_hold_hours(0)])


def legs_built_first() -> StrategyConfig:
    legs = strangle(0.1, call_delta=1.5)
    return StrategyConfig(name="legs_first", legs=legs, exit_conditions=[max_hold_hours(1)])


def two_strategies() -> list[StrategyConfig]:
    return [StrategyConfig(name="pair_a", legs=strangle(0.1), exit_conditions=[max_hold_hours(1)]),
            StrategyConfig(name="pair_b", legs=strangle(0.1), exit_conditions=[max_loss_pct(0.2)])]


OTHER_STRATEGY_CASES = [
    ("invalid_name", [bad_name], ("StrategyConfig.name = ", "'has space'", "use 1-64 characters")),
    ("duplicate_names", [twin_a, twin_b], ("'twin'", "used twice", "give every strategy its own name")),
    ("factory_returns_dict", [returns_a_dict], ("returns_a_dict", "returned dict", "return a StrategyConfig")),
    ("name_not_readable", [built_by_expression],
     ("in the factory for built_by_expression", "test_config_refusals.py:", "max_hold_hours.hours = 0", "max_hold_hours(24)")),
    ("error_before_the_config", [legs_built_first],
     ("'legs_first'", "call_delta", "1.5", "a call delta must be in (0, 1)")),
    ("second_of_two_in_one_factory", [two_strategies], ("'pair_b'", "pct", "0.2", "20 means 20 %")),
]


@pytest.mark.parametrize(("factories", "fragments"), [c[1:] for c in OTHER_STRATEGY_CASES],
                         ids=[c[0] for c in OTHER_STRATEGY_CASES])
def test_other_strategy_refusals_exit_2(factories, fragments, tmp_path, capsys, no_exchange):
    message = refused(tmp_path, capsys, no_exchange, env=env_for(tmp_path), strategies=factories)
    assert_names(message, *fragments)


def test_an_unknown_strategy_on_the_command_line_is_refused(tmp_path, capsys, no_exchange):
    message = refused(tmp_path, capsys, no_exchange, env=env_for(tmp_path),
                      argv=("run", "--strategy", "good_on", "--run-for", "60"))
    assert_names(message, "--strategy good_on", "no such strategy", "known: good_one")


# ---------------------------------------------------------------------------------------------
# Environment refusals: the variable, the value and the fix
# ---------------------------------------------------------------------------------------------


ENV_CASES: list[tuple[str, dict[str, str | None], tuple[str, ...]]] = [
    ("poll_nano", {"POLL_INTERVAL_SECONDS": "1e-9"}, ("POLL_INTERVAL_SECONDS='1e-9'", "from 1 to 3600")),
    ("poll_half", {"POLL_INTERVAL_SECONDS": "0.5"}, ("POLL_INTERVAL_SECONDS='0.5'", "from 1 to 3600")),
    ("poll_zero", {"POLL_INTERVAL_SECONDS": "0"}, ("POLL_INTERVAL_SECONDS='0'", "from 1 to 3600")),
    ("poll_negative", {"POLL_INTERVAL_SECONDS": "-3"}, ("POLL_INTERVAL_SECONDS='-3'", "use a number of seconds")),
    ("poll_too_long", {"POLL_INTERVAL_SECONDS": "3601"}, ("POLL_INTERVAL_SECONDS='3601'", "from 1 to 3600")),
    ("poll_word", {"POLL_INTERVAL_SECONDS": "soon"}, ("POLL_INTERVAL_SECONDS='soon'", "use a number of seconds")),
    ("timeout_micro", {"COINCALL_TIMEOUT_SECONDS": "0.000001"},
     ("COINCALL_TIMEOUT_SECONDS='0.000001'", "from 1 to 300")),
    ("timeout_half", {"COINCALL_TIMEOUT_SECONDS": "0.5"}, ("COINCALL_TIMEOUT_SECONDS='0.5'", "from 1 to 300")),
    ("timeout_zero", {"COINCALL_TIMEOUT_SECONDS": "0"}, ("COINCALL_TIMEOUT_SECONDS='0'", "from 1 to 300")),
    ("timeout_too_long", {"COINCALL_TIMEOUT_SECONDS": "301"}, ("COINCALL_TIMEOUT_SECONDS='301'", "from 1 to 300")),
    ("timeout_nan", {"COINCALL_TIMEOUT_SECONDS": "nan"}, ("COINCALL_TIMEOUT_SECONDS='nan'", "from 1 to 300")),
    ("typo_coincall_key", {"COINCALL_API_KEY_PRODUCTION": "x"},
     ("COINCALL_API_KEY_PRODUCTION", "not a known setting", "did you mean COINCALL_API_KEY_PROD?")),
    ("typo_poll", {"POLL_INTERVAL_SECOND": "10"},
     ("POLL_INTERVAL_SECOND", "not a known setting", "did you mean POLL_INTERVAL_SECONDS?")),
    ("typo_environment", {"TRADING_ENVIROMENT": "testnet"},
     ("TRADING_ENVIROMENT", "did you mean TRADING_ENVIRONMENT?")),
    ("typo_log_dir", {"LOGDIR": "/tmp/x"}, ("LOGDIR", "did you mean LOG_DIR?")),
    ("typo_state_dir", {"STATEDIR": "/tmp/x"}, ("STATEDIR", "did you mean STATE_DIR?")),
    ("environment_mainnet", {"TRADING_ENVIRONMENT": "mainnet"},
     ("TRADING_ENVIRONMENT='mainnet'", "use sim, testnet or production")),
    ("ts_diff_low", {"COINCALL_TS_DIFF_MS": "99"}, ("COINCALL_TS_DIFF_MS='99'", "from 100 to 60000")),
    ("prefix_900", {"CLIENT_ORDER_PREFIX": "900"}, ("CLIENT_ORDER_PREFIX='900'", "from 100 to 899")),
    ("log_level_loud", {"LOG_LEVEL": "LOUD"}, ("LOG_LEVEL='LOUD'", "use DEBUG, INFO")),
    ("base_url_ftp", {"COINCALL_BASE_URL": "ftp://127.0.0.1:9"},
     ("COINCALL_BASE_URL='ftp://127.0.0.1:9'", "http://127.0.0.1:8765")),
    ("sim_key_missing", {"COINCALL_API_SECRET_SIM": None},
     ("COINCALL_BASE_URL", "COINCALL_API_SECRET_SIM", "python -m simulator")),
    ("production_keys_missing", {"TRADING_ENVIRONMENT": "production", "COINCALL_BASE_URL": None},
     ("TRADING_ENVIRONMENT=production", "COINCALL_API_KEY_PROD", "add them to .env")),
    ("sim_seed_word", {"SIM_SEED": "x"}, ("SIM_SEED='x'", "use a whole number")),
    ("rfq_encoding_xml", {"COINCALL_RFQ_BODY_ENCODING": "xml"}, ("COINCALL_RFQ_BODY_ENCODING='xml'", "form or json")),
]


@pytest.mark.parametrize(("extra", "fragments"), [c[1:] for c in ENV_CASES], ids=[c[0] for c in ENV_CASES])
def test_a_refused_environment_exits_2_naming_variable_value_and_fix(extra, fragments, tmp_path, capsys,
                                                                   no_exchange):
    message = refused(tmp_path, capsys, no_exchange, env=env_for(tmp_path, **extra))
    assert_names(message, *fragments)
    assert SIM_SECRET not in message and SIM_KEY not in message


# ---------------------------------------------------------------------------------------------
# Directories: STATE_DIR, LOG_DIR, SIM_STATE_FILE (one line, before anything is opened)
# ---------------------------------------------------------------------------------------------


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("not a directory")
    return path


def _broken_link(tmp_path: Path) -> Path:
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    return link


def _log_dir_with_directory_as_log(tmp_path: Path) -> Path:
    logs = tmp_path / "other_logs"
    (logs / "trading.log").mkdir(parents=True)
    return logs


DIRECTORY_CASES: list[tuple[str, str, Callable[[Path], str], tuple[str, ...]]] = [
    ("state_dir_is_a_file", "STATE_DIR", lambda p: str(_file(p)), ("it is a file, not a directory",)),
    ("state_dir_parent_is_a_file", "STATE_DIR", lambda p: str(_file(p) / "state"),
     ("its parent", "is a file, not a directory")),
    ("state_dir_deep_under_a_file", "STATE_DIR", lambda p: str(_file(p) / "a" / "b"),
     ("its parent", "a_file is a file")),
    ("state_dir_tilde", "STATE_DIR", lambda p: "~/trader/state", ("'~'", "not expanded")),
    ("state_dir_broken_link", "STATE_DIR", lambda p: str(_broken_link(p)), ("broken symbolic link",)),
    ("log_dir_is_a_file", "LOG_DIR", lambda p: str(_file(p)), ("it is a file, not a directory",)),
    ("log_dir_parent_is_a_file", "LOG_DIR", lambda p: str(_file(p) / "logs"), ("its parent", "is a file")),
    ("log_dir_tilde", "LOG_DIR", lambda p: "~/logs", ("not expanded",)),
    ("log_file_is_a_directory", "LOG_DIR", lambda p: str(_log_dir_with_directory_as_log(p)),
     ("trading.log exists and is not a regular file",)),
]


@pytest.mark.parametrize(("variable", "make_value", "reasons"), [c[1:] for c in DIRECTORY_CASES],
                         ids=[c[0] for c in DIRECTORY_CASES])
def test_an_unusable_directory_exits_2_with_one_line(variable, make_value, reasons, tmp_path, capsys, no_exchange):
    value = make_value(tmp_path)
    message = refused(tmp_path, capsys, no_exchange, env=env_for(tmp_path, **{variable: value}))
    assert_names(message, f"{variable}={value!r}", "is not usable", *reasons, f"Fix: set {variable} to")


def test_an_unwritable_state_dir_is_refused(tmp_path, capsys, no_exchange, monkeypatch):
    """os.access answers for the real user; as root everything is writable, so it is stubbed here."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == locked
                        else real_access(path, mode, **kw))
    message = refused(tmp_path, capsys, no_exchange, env=env_for(tmp_path, STATE_DIR=str(locked / "state")))
    assert_names(message, f"STATE_DIR={str(locked / 'state')!r}", "its parent", "not writable",
                 "Fix: set STATE_DIR to")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere; covered by the stubbed test above")
def test_a_read_only_log_dir_is_refused(tmp_path, capsys, no_exchange):
    locked = tmp_path / "read_only"
    locked.mkdir(mode=0o500)
    try:
        message = refused(tmp_path, capsys, no_exchange, env=env_for(tmp_path, LOG_DIR=str(locked)))
    finally:
        locked.chmod(0o700)
    assert_names(message, "LOG_DIR=", "not writable", "Fix: set LOG_DIR to")


def test_the_embedded_simulators_state_file_needs_a_usable_directory(tmp_path, capsys, no_exchange):
    blocker = _file(tmp_path)
    env = env_for(tmp_path, COINCALL_BASE_URL=None, COINCALL_API_KEY_SIM=None, COINCALL_API_SECRET_SIM=None,
                  SIM_STATE_FILE=str(blocker / "simulator.json"))
    message = refused(tmp_path, capsys, no_exchange, env=env)
    assert_names(message, "SIM_STATE_FILE=", "its directory", "is a file", "Fix: set SIM_STATE_FILE to")


def test_status_reads_only_and_is_not_refused_for_a_directory(tmp_path, capsys, monkeypatch):
    """``status`` writes nothing, so a missing or odd STATE_DIR is reported, not refused."""
    monkeypatch.setattr(exchange_connection, "open_exchange",
                        lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    env = env_for(tmp_path, STATE_DIR=str(tmp_path / "never_created"))
    main_module.main(["status"], clock=SimulatedClock(start=START, speed=0), env=env, dotenv_path=None)
    assert "configuration error" not in capsys.readouterr().err
    assert not (tmp_path / "never_created").exists()


# ---------------------------------------------------------------------------------------------
# What is still accepted (the refusals must not catch the meaningful values)
# ---------------------------------------------------------------------------------------------


def test_meaningful_values_next_to_the_refusals_are_accepted():
    assert min_available_margin_pct(0).pct == 0.0                       # 0 still means "no minimum"
    assert profit_target_pct(1).pct == 1.0 and max_loss_pct(150).pct == 150.0
    assert profit_target_pct(0.3, fraction=True).name == "profit_target_pct(pct=30.0, mode=fair)"
    assert max_loss_pct(1.5, fraction=True).pct == 150.0
    assert max_margin_utilization(0.6, fraction=True).pct == 60.0
    held = StrategyConfig(name="held", legs=strangle(0.1), hold_to_expiry=True, check_interval_seconds=1)
    assert held.exit_conditions == [] and held.check_interval_seconds == 1.0
    big = StrategyConfig(name="big", legs=strangle(15), exit_conditions=[max_hold_hours(1)], max_leg_qty=15,
                         max_structure_qty=30)
    assert [leg.qty for leg in big.legs] == [15.0, 15.0]
    StrategyConfig(name="ten", legs=strangle(10), exit_conditions=[max_hold_hours(1)])   # both caps inclusive


def test_shipped_strategies_still_build():
    configs = strategy_factories.build_strategy_configs(main_module.STRATEGIES)
    assert len(configs) == 5
    assert all(config.exit_conditions and not config.hold_to_expiry for config in configs)


# ---------------------------------------------------------------------------------------------
# The trade-time notional cap (StrategyRunner): no trade, no order, logged once per change
# ---------------------------------------------------------------------------------------------


class RecordingLifecycle:
    def __init__(self) -> None:
        self.created: list[tuple[str, list]] = []
        self.entry_holds: dict[str, str] = {}
        self.attached: list[tuple[str, dict]] = []

    hold_reason: str | None = None
    persistence_errors = 0

    def attach_strategy(self, strategy, **kwargs):
        self.attached.append((strategy, kwargs))

    def release_blocks(self, strategy=None):
        return []

    def create(self, strategy: str, resolved: list, **kwargs: Any) -> Any:
        self.created.append((strategy, resolved))
        return SimpleNamespace(id=f"T{len(self.created):09d}")

    def trades(self, strategy: str | None = None) -> list:
        return []

    def active_trades(self, strategy: str | None = None) -> list:
        return []

    def force_close(self, trade_id: str, reason: str = "manual") -> bool:
        raise AssertionError("not used by this test")


def _unused(self, *args: Any, **kwargs: Any) -> Any:
    raise AssertionError("not used by this test")


class FixedIndexMarket:
    """``seams.MarketDataSource`` with a fixed index; selection is replaced in these tests."""

    def __init__(self) -> None:
        self.index_frozen = False

    def index_price(self, underlying: str | None = None, *, max_age: float | None = None) -> float:
        return 90_000.0

    def index_frozen_for(self, underlying: str | None = None) -> bool:
        return self.index_frozen

    clock = property(_unused)
    index_age = instruments = chain_snapshot = quote = order_book = instrument = _unused


class RecordingExecutor:
    def __init__(self) -> None:
        self.routed: list[str] = []

    def route(self, mode: str, legs: list, index_price: float) -> str:
        self.routed.append(mode)
        return mode


def runner_with_index(monkeypatch, index: float, **fields: Any) -> tuple[StrategyRunner, RecordingLifecycle,
                                                                         SimulatedClock, RecordingExecutor]:
    def resolve(specs, market, **_):
        return [SimpleNamespace(index=i, symbol=f"BTCUSD-4MAR26-9{i}000-{spec.option_type}", side=spec.side,
                                qty=spec.qty, index_price=index) for i, spec in enumerate(specs)]

    monkeypatch.setattr(strategy_module, "resolve_legs", resolve)
    clock = SimulatedClock(start=START, speed=0)
    lifecycle, executor = RecordingLifecycle(), RecordingExecutor()
    ctx = TradingContext(
        config=None, clock=clock, http=None, market_data=FixedIndexMarket(),
        account_manager=SimpleNamespace(reachability=SimpleNamespace(is_up=True)),
        ledger=SimpleNamespace(blocked_symbols=lambda: {}), executor=executor,
        lifecycle_manager=lifecycle, position_monitor=SimpleNamespace(poll_interval=10.0),
        store=StateStore(":memory:"), alerts=SimpleNamespace(alert=lambda *a, **k: None), health=None,
    )
    config = StrategyConfig(name="notional", legs=strangle(5), exit_conditions=[max_hold_hours(1)],
                            execution_mode="limit", check_interval_seconds=10, **fields)
    return StrategyRunner(config, ctx), lifecycle, clock, executor


def snapshot_at(clock: SimulatedClock) -> AccountSnapshot:
    return AccountSnapshot.build(equity=1e6, available_margin=9e5, initial_margin=0.0, maintenance_margin=0.0,
                                 unrealized_pnl=0.0, positions=(), timestamp=clock.now())


def test_a_structure_above_the_notional_cap_is_never_created_and_logged_once(monkeypatch, caplog):
    # 2 legs x 5 BTC x 90,000 = 900,000 USD against a cap of 500,000.
    runner, lifecycle, clock, executor = runner_with_index(monkeypatch, 90_000.0,
                                                           max_structure_notional_usd=500_000)
    with caplog.at_level(logging.INFO, logger="strategy"):
        for _ in range(5):
            runner.tick(snapshot_at(clock))
            clock.advance(10)
    assert lifecycle.created == [] and executor.routed == []     # no trade, not even routed to an engine
    warnings = [r.getMessage() for r in caplog.records if "max_structure_notional_usd" in r.getMessage()
                and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert_names(warnings[0], "notional", "10 BTC", "900,000", "500,000", "reduce the legs' qty")
    assert runner.status()["blocked_by"] == "structure notional above max_structure_notional_usd=500,000 USD"


def test_a_structure_within_the_notional_cap_is_created(monkeypatch):
    runner, lifecycle, clock, _ = runner_with_index(monkeypatch, 90_000.0)   # 900,000 <= 2,000,000 default
    runner.tick(snapshot_at(clock))
    assert len(lifecycle.created) == 1


def test_an_insane_index_never_passes_the_notional_cap(monkeypatch):
    for index in (math.inf, math.nan, 0.0, -1.0):
        runner, lifecycle, clock, _ = runner_with_index(monkeypatch, index)
        runner.tick(snapshot_at(clock))
        assert lifecycle.created == [], index
