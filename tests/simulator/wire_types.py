"""JSON type predicates for the simulator's over-the-wire conformance tests.

Named functions, so an assertion message says what was expected ("... is not numeric_text").
Shared by the three ``test_http_conformance_*`` modules.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def text(value: Any) -> bool:
    return isinstance(value, str)


def boolean(value: Any) -> bool:
    return isinstance(value, bool)


def flag01(value: Any) -> bool:
    return integer(value) and value in (0, 1)


def numeric_text(value: Any) -> bool:
    """A number sent as a JSON string, in plain decimal notation (never scientific)."""
    return isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value) is not None


def int64_id(value: Any) -> bool:
    return integer(value) and 0 < value < 2**63


def number_or_null(value: Any) -> bool:
    return value is None or number(value)


def present(value: Any) -> bool:
    return True


def id_text(value: Any) -> bool:
    """An int64 id sent as a JSON string (RFQ endpoints)."""
    return isinstance(value, str) and value.isdigit() and 0 < int(value) < 2**63


def side_text(value: Any) -> bool:
    return value in ("BUY", "SELL")


def array(value: Any) -> bool:
    return isinstance(value, list)


def conforms(obj: Any, schema: dict[str, Callable[[Any], bool]], where: str) -> None:
    """Every field of ``schema`` is present in ``obj`` and passes its type predicate."""
    assert isinstance(obj, dict), f"{where}: expected an object, got {type(obj).__name__}"
    missing = sorted(name for name in schema if name not in obj)
    assert not missing, f"{where}: missing fields {missing}"
    for name, kind in schema.items():
        assert kind(obj[name]), f"{where}.{name} = {obj[name]!r} is not {kind.__name__}"


def ok(envelope: dict) -> Any:
    """The ``data`` of a successful envelope (fails the test with the envelope otherwise)."""
    assert envelope["code"] == 0, envelope
    return envelope["data"]
