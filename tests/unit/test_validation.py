"""The one validation helper set (issue 10): every configuration check uses it, none re-rolls it."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from errors import ConfigError
from validation import (
    closest,
    did_you_mean,
    invalid,
    is_int,
    is_number,
    refuse_unknown_keys,
    refuse_unknown_keywords,
    require_number,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value, number, integer", [
    (1, True, True), (0, True, True), (-2.5, True, False), (1.0, True, False),
    (True, False, False), (False, False, False), (math.nan, False, False), (math.inf, False, False),
    ("1", False, False), (None, False, False),
])
def test_is_number_and_is_int_refuse_bools_and_non_finite_values(value, number, integer):
    assert is_number(value) is number and is_int(value) is integer


def test_did_you_mean_and_closest():
    assert did_you_mean("exit_condition", ["exit_conditions", "entry_conditions"]) == \
        " (did you mean 'exit_conditions'?)"
    assert did_you_mean("zzz", ["exit_conditions"]) == ""
    assert closest("POLL_INTERVAL_SECOND", {"POLL_INTERVAL_SECONDS", "LOG_DIR"}, cutoff=0.9) == "POLL_INTERVAL_SECONDS"
    assert closest("PATH", {"POLL_INTERVAL_SECONDS"}, cutoff=0.9) is None


def test_invalid_names_owner_field_value_and_fix():
    error = invalid("ExecutionParams", "grace_seconds", -1, "must be >= 0")
    assert isinstance(error, ConfigError)
    assert str(error) == "ExecutionParams.grace_seconds = -1 is invalid: must be >= 0"
    with_rule = invalid("max_loss", "usd", 0, "max_loss(100)", rule="must be > 0")
    assert str(with_rule) == "max_loss.usd = 0 is invalid: must be > 0. Fix: max_loss(100)"


def test_require_number_returns_a_float_or_refuses():
    assert require_number("X", "f", 3, lambda v: v > 0, "must be > 0") == 3.0
    for bad in (0, True, math.nan, "3"):
        with pytest.raises(ConfigError, match=r"X\.f = .* is invalid: must be > 0"):
            require_number("X", "f", bad, lambda v: v > 0, "must be > 0")


def test_refuse_unknown_keys_and_keywords_suggest_the_intended_spelling():
    with pytest.raises(ConfigError, match=r"LegSpec\.strike_criteria has unknown key\(s\) \['vlaue'\] "
                                          r"\(did you mean 'value'\?\); allowed keys: type, value"):
        refuse_unknown_keys("LegSpec.strike_criteria", {"type": "delta", "vlaue": 0.2}, ("type", "value"))
    with pytest.raises(ConfigError, match=r"LegSpec: optiontype='C' is not an argument \(did you mean "
                                          r"'option_type'\?\)"):
        refuse_unknown_keywords("LegSpec", ["option_type", "side"], (), {"optiontype": "C"})
    with pytest.raises(ConfigError, match="given twice"):
        refuse_unknown_keywords("LegSpec", ["option_type", "side"], ("C",), {"option_type": "C"})
    with pytest.raises(ConfigError, match="3 positional arguments given, at most 2"):
        refuse_unknown_keywords("LegSpec", ["option_type", "side"], ("C", 1, 2), {})


# The helpers each module used to re-roll, and the builders the shared set replaced.
RE_ROLLED = {"_is_number", "_is_int", "_fail", "_refuse", "_config_error", "_bad", "_require_number",
             "_check_keys", "did_you_mean", "refuse_unknown_keywords"}


def test_no_product_module_re_rolls_a_validation_helper():
    for path in sorted(ROOT.glob("*.py")):
        if path.name == "validation.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # Module-level functions only: a method such as a trade's ``_fail`` is another thing.
        defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert not defined & RE_ROLLED, f"{path.name} defines {sorted(defined & RE_ROLLED)}; use validation.py"
