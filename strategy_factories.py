"""Building the configured strategies from their factory functions (BEHAVIOUR.md 7.5).

Why it is a module of its own: a strategy file is user code, and the operator must learn
which strategy is wrong, and how to fix it, before any request is sent. A condition factory
or a ``LegSpec`` that refuses its arguments raises while the factory is still evaluating
its ``StrategyConfig(...)`` call, so the error cannot name the strategy by itself; reading
the name back from the factory's source and frame is delicate work (AST and traceback
reading) that has nothing to do with how a strategy trades, so it lives here rather than in
``strategy.py``.
"""
from __future__ import annotations

import ast
import inspect
import linecache
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeGuard

from errors import ConfigError
from strategy import NAME_PATTERN, StrategyConfig, StrategyConfigError
from validation import did_you_mean


def check_unique_names(configs: Iterable[StrategyConfig]) -> None:
    """Strategy names identify runner state and trades: two strategies may not share one."""
    seen: set[str] = set()
    for config in configs:
        if config.name in seen:
            raise ConfigError(f"strategy name {config.name!r} is used twice: give every strategy its own name")
        seen.add(config.name)


def build_strategy_configs(factories: Sequence[Callable[[], Any]]) -> list[StrategyConfig]:
    """Call every factory; each returns a StrategyConfig or a list of them.

    Raises ``ConfigError`` for the first invalid strategy, a factory returning something
    else, or two strategies with one name. Runs before any request (BEHAVIOUR.md 7.5).
    Every message names the strategy by its ``name``: an error raised inside a factory
    before its ``StrategyConfig`` exists is attributed by ``factory_failure``.
    """
    configs: list[StrategyConfig] = []
    for factory in factories:
        label = getattr(factory, "__name__", repr(factory))
        try:
            built = factory()
        except Exception as exc:  # a bug in a strategy file is a configuration error too
            raise factory_failure(factory, exc) from None
        items = built if isinstance(built, (list, tuple)) else [built]
        for item in items:
            if not isinstance(item, StrategyConfig):
                raise ConfigError(f"the factory {label} returned {type(item).__name__} instead of a strategy: "
                                  f"return a StrategyConfig or a list of them")
            configs.append(item)
    check_unique_names(configs)
    return configs


# --------------------------------------------------------------------------------------------
# Naming the strategy of a failing factory
# --------------------------------------------------------------------------------------------
#
# A condition factory or a LegSpec raises while the strategy's factory is still evaluating the
# arguments of its StrategyConfig, so the error cannot name the strategy by itself (used on
# their own, they must keep raising plain ConfigErrors). The strategy's name is still knowable:
# the traceback holds the factory's frame and the line it was executing; the factory's source
# holds the StrategyConfig call(s) it makes. When the failing line lies inside one call (or
# the factory makes only one), and that call's ``name=`` is a string literal or a variable
# the frame can read, that is the strategy the error belongs to. Anything less certain (names
# built by expressions, several strategies in one factory) falls back to the factory function
# and its file and line, and says so.


@dataclass(frozen=True)
class FactorySite:
    """Where a strategy factory failed: its label, ``file:line``, and the strategy if known."""

    factory: str
    location: str
    strategy: str | None


def factory_failure(factory: Callable[[], Any], exc: BaseException) -> ConfigError:
    """The ``ConfigError`` to report for ``exc``, raised while calling ``factory``.

    A ``StrategyConfigError`` already names its strategy and is returned unchanged; anything
    else is prefixed with the strategy's name (or the factory and its location) and, for a
    misspelled keyword argument, gets "did you mean".
    """
    if isinstance(exc, StrategyConfigError) and exc.strategy is not None:
        return exc
    site = locate_factory_failure(factory, exc)
    detail = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}{_keyword_hint(exc)}"
    verb = "" if isinstance(exc, ConfigError) else " failed"
    if site.strategy is not None:
        return StrategyConfigError(site.strategy, f"strategy {site.strategy!r} (factory {site.factory}, "
                                                  f"{site.location}){verb}: {detail}")
    return ConfigError(f"in the factory for {site.factory} ({site.location}; the strategy's name could not be "
                       f"read there){verb}: {detail}")


def locate_factory_failure(factory: Callable[[], Any], exc: BaseException) -> FactorySite:
    """Find the factory's frame in ``exc``'s traceback and read the strategy's name there."""
    label = getattr(factory, "__qualname__", None) or repr(factory)
    code = getattr(inspect.unwrap(factory), "__code__", None)
    frame, line = _factory_frame(exc, code)
    if frame is None or code is None:
        return FactorySite(label, _where(code.co_filename if code else "?", code.co_firstlineno if code else 0), None)
    names = _strategy_names_at(code, line, frame)
    strategy = names.pop() if len(names) == 1 else None
    return FactorySite(label, _where(code.co_filename, line), strategy)


def _factory_frame(exc: BaseException, code: Any) -> tuple[Any, int]:
    """The innermost traceback entry that runs ``code``: its frame and line."""
    found: tuple[Any, int] = (None, 0)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            found = (tb.tb_frame, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _where(filename: str, line: int) -> str:
    path = Path(filename)
    try:
        path = path.resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        pass
    return f"{path}:{line}"


def _strategy_names_at(code: Any, line: int, frame: Any) -> set[str]:
    """The names of the StrategyConfig calls that ``line`` belongs to, when all are readable."""
    try:
        tree = ast.parse("".join(linecache.getlines(code.co_filename)))
    except (SyntaxError, ValueError):
        return set()
    calls = [call for node in ast.walk(tree) if _is_function_at(node, code.co_firstlineno)
             for call in ast.walk(node) if _is_strategy_config_call(call)]
    enclosing = [call for call in calls if call.lineno <= line <= (call.end_lineno or call.lineno)]
    chosen = enclosing[-1:] if enclosing else calls   # the innermost enclosing call, else every call
    names = [_read_name(call, frame) for call in chosen]
    if not names or any(name is None for name in names):
        return set()
    return {name for name in names if name is not None}


def _is_function_at(node: Any, first_line: int) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        starts = [node.lineno, *(decorator.lineno for decorator in node.decorator_list[:1])]
        return first_line in starts
    return isinstance(node, ast.Lambda) and node.lineno == first_line


def _is_strategy_config_call(node: Any) -> TypeGuard[ast.Call]:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "StrategyConfig") or (
        isinstance(func, ast.Attribute) and func.attr == "StrategyConfig")


def _read_name(call: Any, frame: Any) -> str | None:
    """The value of the call's ``name`` argument: a literal, or a variable the frame can see."""
    expression = next((keyword.value for keyword in call.keywords if keyword.arg == "name"),
                      call.args[0] if call.args else None)
    if isinstance(expression, ast.Constant):
        value = expression.value
    elif isinstance(expression, ast.Name):
        scopes = (frame.f_locals, frame.f_globals)
        value = next((scope[expression.id] for scope in scopes if expression.id in scope), None)
    else:
        return None
    return value if isinstance(value, str) and NAME_PATTERN.match(value) else None


_UNEXPECTED_KEYWORD = re.compile(r"^([\w.]+)\(\) got an unexpected keyword argument '(\w+)'$")


def _keyword_hint(exc: BaseException) -> str:
    """" (did you mean 'call_delta'?)" for ``strangle(calldelta=...)``, read from the callee."""
    if not isinstance(exc, TypeError):
        return ""
    match = _UNEXPECTED_KEYWORD.match(str(exc))
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if match is None or tb is None:
        return ""
    parts = match.group(1).split(".")
    frame = tb.tb_frame
    target = frame.f_locals.get(parts[0], frame.f_globals.get(parts[0]))
    for part in parts[1:]:
        target = inspect.getattr_static(target, part, None) if target is not None else None
    try:
        parameters = list(inspect.signature(target).parameters) if callable(target) else []
    except (TypeError, ValueError):
        return ""
    return did_you_mean(match.group(2), [p for p in parameters if p != "self"])
