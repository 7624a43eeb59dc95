"""The one set of helpers every configuration check uses (issue 10).

Why one set: each configurable class used to re-roll its own number test and its own
message builder, and they had drifted (one accepted ``True`` as 1, messages named the
field in four different ways). A refusal is read by a person fixing a strategy file at
start-up, so it always has one shape::

    <owner>.<field> = <value> is invalid: <fix>

``owner`` is what was being built (``ExecutionParams``, ``LegSpec``, ``strategy 'name'``,
``max_loss``), ``field`` the argument or key (``legs[0].qty``, ``expiry_criteria['dte']``),
``value`` the bad value's ``repr`` and ``fix`` what to write instead. Environment
variables keep their own ``NAME='raw'`` form (``config.py``): there is no owner, and the
value is the text as written.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, TypeGuard

from errors import ConfigError

__all__ = ["is_number", "is_int", "closest", "did_you_mean", "invalid", "require_number",
           "refuse_unknown_keys", "refuse_unknown_keywords"]


def is_number(value: Any) -> TypeGuard[float]:
    """A real, finite number; ``bool`` is refused because ``True`` silently means 1."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> TypeGuard[int]:
    """An ``int`` that is not a ``bool`` (``1.0`` is not an int here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice ``word`` most likely misspells, or None when none is close enough."""
    found = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'value'?)`` for a near miss among ``choices``, else an empty string.

    A misspelled key or keyword is the commonest configuration typo; naming the intended
    spelling turns a puzzle into a one-character fix (issue 9).
    """
    near = closest(word, choices)
    return f" (did you mean {near!r}?)" if near is not None else ""


def invalid(owner: str, field: str, value: Any, fix: str, *, rule: str | None = None) -> ConfigError:
    """The refusal ``<owner>.<field> = <value!r> is invalid: <fix>`` (returned, for ``raise``).

    With ``rule`` (what the value broke, when the fix alone would not say it) the message
    ends ``is invalid: <rule>. Fix: <fix>``.
    """
    reason = fix if rule is None else f"{rule}. Fix: {fix}"
    return ConfigError(f"{owner}.{field} = {value!r} is invalid: {reason}")


def require_number(owner: str, field: str, value: Any, ok: Callable[[float], bool], fix: str) -> float:
    """``value`` as a float when it is a finite real number that ``ok`` accepts, else ``invalid``."""
    if not is_number(value) or not ok(value):
        raise invalid(owner, field, value, fix)
    return float(value)


def refuse_unknown_keys(where: str, given: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Refuse keys of a criteria dict that are not among ``allowed``, with "did you mean"."""
    unknown = sorted(str(key) for key in given if key not in allowed)
    if unknown:
        hints = "".join(did_you_mean(key, allowed) for key in unknown)
        raise ConfigError(f"{where} has unknown key(s) {unknown}{hints}; allowed keys: {', '.join(allowed)}")


def refuse_unknown_keywords(owner: str, names: Sequence[str], args: tuple, kwargs: Mapping[str, Any]) -> None:
    """Refuse keywords a dataclass does not have, with "did you mean", before ``__init__`` runs.

    The dataclass ``__init__`` would raise a bare ``TypeError`` ("unexpected keyword argument")
    that names neither the intended field nor the fix; ``StrategyConfig`` and ``LegSpec`` call
    this from ``__new__`` so a typo such as ``exit_condition=`` is a ``ConfigError``.
    """
    for key in kwargs:
        if key not in names:
            raise ConfigError(f"{owner}: {key}={kwargs[key]!r} is not an argument{did_you_mean(key, names)}; "
                              f"the arguments are {', '.join(names)}")
    if len(args) > len(names):
        raise ConfigError(f"{owner}: {len(args)} positional arguments given, at most {len(names)} "
                          f"({', '.join(names)}); pass the others by keyword")
    for key in names[:len(args)]:
        if key in kwargs:
            raise ConfigError(f"{owner}: {key} is given twice (by position and as {key}=); keep one")
