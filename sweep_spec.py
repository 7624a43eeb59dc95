"""The sweep file (``python main.py sweep FILE.toml``, docs/SWEEPS.md): read, validated, and turned into combinations.

Why it is its own module (issue 11, the sweep slice): the file format and what it means are one job,
apart from running the sweep (``sweep``) and presenting its results (``sweep_report``).

* **A sweep is many backtests.** Each combination of parameter values (and seed) is one
  ``backtest.run_backtest`` of the strategy built by its own factory with those values as keyword
  arguments (``micro_strangle(call_delta=0.3)``), or with ``StrategyConfig`` fields replaced
  (``max_concurrent_trades``, ``execution_params.fill_timeout_seconds``). The config goes through the
  daemon's own validation (``strategy_factories.build_strategy_configs``, ``StrategyConfig``), and every
  combination is built before anything runs: a typo fails at start-up, not after an hour of runs.
* **Stable ids.** A combination's id is the hash of everything that defines its run, so the same run
  keeps its id when a sweep is resumed.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import itertools
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from backtest import (
    DEFAULT_POLL_SECONDS,
    DEFAULT_SEED,
    BacktestPeriod,
    check_scenario,
    parse_instant,
    summarize,
)
from clock import iso_utc
from errors import ConfigError
from strategy import StrategyConfig
from strategy_factories import build_strategy_configs
from validation import did_you_mean

DEFAULT_RANK_BY = "realized_pnl"
# Figures where less is better: ranked ascending unless ``rank_order`` says otherwise.
LOWER_IS_BETTER = frozenset({"max_drawdown", "fees", "exec_cost_pct", "losses", "failed", "open_at_end",
                             "hedge_cost"})
PRESENTATION_KEYS = frozenset({"rank_by", "rank_order", "heatmap"})
TOP_KEYS = frozenset({"strategy", "seed", "seeds", "poll", "scenario", "period", "grid", "runs", *PRESENTATION_KEYS})
ID_LENGTH = 12
Scalar = bool | int | float | str
SCALARS = (bool, int, float, str)


# ---------------------------------------------------------------------------------------------
# The sweep file
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heatmap:
    """Two parameters as the axes of a grid of cells, coloured by ``metric`` (``aggregate`` over the rest)."""

    x: str
    y: str
    metric: str
    aggregate: str   # "best" or "mean" over the other parameters' values and the seeds


@dataclass(frozen=True)
class Combination:
    """One backtest of the sweep: parameter values and a seed; ``id`` is the hash of all that defines it."""

    id: str
    params: Mapping[str, Scalar]
    seed: int


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file: everything a run needs, and the document it came from."""

    path: Path
    text: str
    document: Mapping[str, Any]
    strategy: str
    factory: Callable[..., Any]
    period: BacktestPeriod
    seeds: tuple[int, ...]
    poll: float
    scenario: str | None
    combinations: tuple[Combination, ...]
    parameters: tuple[str, ...]          # every parameter name a combination sets, sorted
    rank_by: str
    descending: bool
    heatmap: Heatmap | None


class SweepFileError(ConfigError):
    """A refusal of the sweep file: the message names the file."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"sweep {path}: {message}")


def load_sweep(path: Path, factories: Sequence[Callable[..., Any]]) -> SweepSpec:
    """Read and validate ``path``: the strategy, the period, seeds, the combinations, the outputs.

    ``factories`` are the strategy factories a sweep may name (``main.with_shipped_strategies``:
    the daemon's ``STRATEGIES`` and every shipped one); the sweep's ``strategy`` is the name of
    one of their strategies. Nothing runs here; every combination's
    config is built (and so validated) once.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"sweep {path}: cannot read it ({exc.strerror})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepFileError(path, f"not valid TOML ({exc})") from None
    return parse_sweep(path, text, document, factories)


def parse_sweep(path: Path, text: str, document: Mapping[str, Any],
                factories: Sequence[Callable[..., Any]]) -> SweepSpec:
    def refuse(message: str) -> SweepFileError:
        return SweepFileError(path, message)

    unknown = sorted(set(document) - TOP_KEYS)
    if unknown:
        raise refuse(f"unknown key {unknown[0]!r}{did_you_mean(unknown[0], TOP_KEYS)}; "
                     f"valid keys: {', '.join(sorted(TOP_KEYS))}")
    strategy = document.get("strategy")
    known = strategies_by_name(factories)
    if not isinstance(strategy, str) or strategy not in known:
        raise refuse(f"strategy = {strategy!r} is not a strategy{did_you_mean(str(strategy), known)}; "
                     f"use one of {', '.join(sorted(known))}")
    factory = known[strategy]
    period = parse_period(document.get("period"), refuse)
    seeds = parse_seeds(document, refuse)
    poll = document.get("poll", DEFAULT_POLL_SECONDS)
    if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not 0 < poll < math.inf:
        raise refuse(f"poll = {poll!r} must be a positive number of seconds")
    scenario = document.get("scenario")
    if scenario is not None and not isinstance(scenario, str):
        raise refuse(f"scenario = {scenario!r} must be a scenario's name")
    try:
        check_scenario(scenario)
    except ConfigError as exc:
        raise refuse(str(exc).replace("--scenario", "scenario =")) from None
    parameter_sets = parse_parameter_sets(document, refuse)
    valid = overridable_parameters(factory, strategy)
    for params in parameter_sets:
        for name in params:
            if name not in valid:
                raise refuse(f"unknown parameter {name!r} for strategy {strategy!r}{did_you_mean(name, valid)}; "
                             f"valid parameters: {', '.join(valid)}")
    for params in parameter_sets:
        try:
            build_config(strategy, factory, params)
        except ConfigError as exc:
            raise refuse(f"the combination {format_params(params)} is refused: {exc}") from None
    combinations = tuple(
        Combination(combination_id(strategy, params, seed, period, float(poll), scenario), params, seed)
        for params in parameter_sets for seed in seeds)
    parameters = tuple(sorted({name for params in parameter_sets for name in params}))
    metrics = metric_names(period, strategy)
    rank_by = document.get("rank_by", DEFAULT_RANK_BY)
    if rank_by not in metrics:
        raise refuse(f"rank_by = {rank_by!r} is not a figure of summary.json{did_you_mean(str(rank_by), metrics)}; "
                     f"use one of {', '.join(metrics)}")
    order = document.get("rank_order", "asc" if rank_by in LOWER_IS_BETTER else "desc")
    if order not in ("asc", "desc"):
        raise refuse(f"rank_order = {order!r} must be \"desc\" (higher is better) or \"asc\" (lower is better)")
    heatmap = parse_heatmap(document.get("heatmap"), parameters, parameter_sets, metrics, rank_by, refuse)
    return SweepSpec(path=path, text=text, document=document, strategy=strategy, factory=factory, period=period,
                     seeds=seeds, poll=float(poll), scenario=scenario, combinations=combinations,
                     parameters=parameters, rank_by=rank_by, descending=order == "desc", heatmap=heatmap)


def strategies_by_name(factories: Sequence[Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Each strategy's name and the factory that builds it (through the daemon's own validation)."""
    found: dict[str, Callable[..., Any]] = {}
    for factory in factories:
        for config in build_strategy_configs([factory]):
            found[config.name] = factory
    return found


def parse_period(table: Any, refuse: Callable[[str], SweepFileError]) -> BacktestPeriod:
    """``[period]``: two of ``from``/``to``/``days``, at least one a date: a sweep's period is fixed."""
    if not isinstance(table, Mapping):
        raise refuse("[period] is missing: give two of from, to, days (from = \"2026-03-02\", days = 7)")
    unknown = sorted(set(table) - {"from", "to", "days"})
    if unknown:
        raise refuse(f"[period] has an unknown key {unknown[0]!r}; use from, to, days")
    start_text, end_text, days = table.get("from"), table.get("to"), table.get("days")
    for key, value in (("from", start_text), ("to", end_text)):
        if value is not None and not isinstance(value, str):
            raise refuse(f"period.{key} = {value!r} must be a quoted date, e.g. \"2026-03-02\" or \"2026-03-02T10:00\"")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days < math.inf):
        raise refuse(f"period.days = {days!r} must be a positive number of days")
    given = sum(value is not None for value in (start_text, end_text, days))
    if given != 2:
        raise refuse("[period] needs exactly two of from, to, days (a period relative to today would change "
                     "under a resumed sweep)")
    try:
        start = parse_instant(start_text, "period.from") if start_text is not None else None
        end = parse_instant(end_text, "period.to") if end_text is not None else None
    except ConfigError as exc:
        raise refuse(str(exc)) from None
    if start is None:
        assert end is not None and days is not None
        start = end - days * 86400.0
    if end is None:
        assert days is not None
        end = start + days * 86400.0
    if not end > start:
        raise refuse(f"period.to must come after period.from (from {iso_utc(start)}, to {iso_utc(end)})")
    return BacktestPeriod(start, end)


def parse_seeds(document: Mapping[str, Any], refuse: Callable[[str], SweepFileError]) -> tuple[int, ...]:
    if "seed" in document and "seeds" in document:
        raise refuse("seed and seeds both given: use one")
    raw = document.get("seeds", [document.get("seed", DEFAULT_SEED)])
    if not isinstance(raw, list) or not raw or any(isinstance(s, bool) or not isinstance(s, int) for s in raw):
        raise refuse(f"seeds = {raw!r} must be a non-empty list of whole numbers (or seed = 7)")
    if len(set(raw)) != len(raw):
        raise refuse(f"seeds = {raw!r} lists a seed twice")
    return tuple(raw)


def parse_parameter_sets(document: Mapping[str, Any],
                         refuse: Callable[[str], SweepFileError]) -> list[dict[str, Scalar]]:
    """``[grid]`` (every combination of the listed values) or ``[[runs]]`` (an explicit list)."""
    grid, runs = document.get("grid"), document.get("runs")
    if (grid is None) == (runs is None):
        raise refuse("give the combinations as [grid] (name = [values]) or as [[runs]] tables, one of the two")
    sets: list[dict[str, Scalar]] = []
    if grid is not None:
        if not isinstance(grid, Mapping) or not grid:
            raise refuse("[grid] must be a table of parameter = [values]")
        flat = flatten(grid, "grid", refuse)
        axes: list[tuple[str, list[Scalar]]] = []
        for name in sorted(flat):
            values = flat[name] if isinstance(flat[name], list) else [flat[name]]
            if not values or not all(isinstance(v, SCALARS) for v in values):
                raise refuse(f"grid.{name} = {flat[name]!r} must be a non-empty list of numbers, strings or booleans")
            if len({canonical(v) for v in values}) != len(values):
                raise refuse(f"grid.{name} = {flat[name]!r} lists a value twice")
            axes.append((name, list(values)))
        sets = [dict(zip([name for name, _ in axes], chosen)) for chosen in itertools.product(*(v for _, v in axes))]
    else:
        if not isinstance(runs, list) or not runs or not all(isinstance(run, Mapping) for run in runs):
            raise refuse("[[runs]] must be one or more tables of parameter = value")
        seen: dict[str, int] = {}
        for index, table in enumerate(runs, 1):
            run = flatten(table, f"runs #{index}", refuse)
            for name, value in run.items():
                if not isinstance(value, SCALARS):
                    raise refuse(f"runs #{index}: {name} = {value!r} must be a number, a string or a boolean")
            key = canonical(dict(run))
            if key in seen:
                raise refuse(f"runs #{seen[key]} and #{index} are the same combination")
            seen[key] = index
            sets.append(dict(sorted(run.items())))
    return sets


def flatten(table: Mapping[str, Any], where: str, refuse: Callable[[str], SweepFileError],
            prefix: str = "") -> dict[str, Any]:
    """TOML reads ``execution_params.fill_timeout_seconds = 10`` as a nested table: back to one dotted name."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        found = flatten(value, where, refuse, f"{name}.") if isinstance(value, Mapping) else {name: value}
        for inner, item in found.items():
            if inner in flat:
                raise refuse(f"{where}: {inner} is given twice")
            flat[inner] = item
    return flat


def parse_heatmap(table: Any, parameters: Sequence[str], parameter_sets: Sequence[Mapping[str, Scalar]],
                  metrics: Sequence[str], rank_by: str, refuse: Callable[[str], SweepFileError]) -> Heatmap | None:
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise refuse("[heatmap] must be a table: x, y, and optionally metric and aggregate")
    unknown = sorted(set(table) - {"x", "y", "metric", "aggregate"})
    if unknown:
        raise refuse(f"[heatmap] has an unknown key {unknown[0]!r}; use x, y, metric, aggregate")
    axes = []
    for key in ("x", "y"):
        name = table.get(key)
        if not isinstance(name, str) or not all(name in params for params in parameter_sets):
            raise refuse(f"heatmap.{key} = {name!r} is not a parameter every combination sets"
                         f"{did_you_mean(str(name), parameters)}; use one of {', '.join(parameters)}")
        axes.append(name)
    if axes[0] == axes[1]:
        raise refuse(f"heatmap.x and heatmap.y are both {axes[0]!r}: choose two parameters")
    metric = table.get("metric", rank_by)
    if metric not in metrics:
        raise refuse(f"heatmap.metric = {metric!r} is not a figure of summary.json"
                     f"{did_you_mean(str(metric), metrics)}; use one of {', '.join(metrics)}")
    aggregate = table.get("aggregate", "best")
    if aggregate not in ("best", "mean"):
        raise refuse(f"heatmap.aggregate = {aggregate!r} must be \"best\" or \"mean\"")
    return Heatmap(axes[0], axes[1], metric, aggregate)


def metric_names(period: BacktestPeriod, strategy: str) -> list[str]:
    """The figures of summary.json's ``total`` a sweep can rank by: its numbers (read from an empty run)."""
    empty = summarize([], period, DEFAULT_SEED, DEFAULT_POLL_SECONDS, [strategy])["total"]
    return sorted(name for name, value in empty.items()
                  if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)))


def canonical(value: Any) -> str:
    """The one text of a value (keys sorted, no spaces): identities and equality of parameters."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def combination_id(strategy: str, params: Mapping[str, Scalar], seed: int, period: BacktestPeriod, poll: float,
                   scenario: str | None) -> str:
    """A stable id: the hash of everything that defines the run, so the same run keeps its id on resume."""
    text = canonical({"strategy": strategy, "params": dict(params), "seed": seed, "from": iso_utc(period.start),
                      "to": iso_utc(period.end), "poll": poll, "scenario": scenario})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_LENGTH]


def format_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in sorted(params.items())) or "(defaults)"


# ---------------------------------------------------------------------------------------------
# Building one combination's strategy
# ---------------------------------------------------------------------------------------------


def factory_keywords(factory: Callable[..., Any]) -> list[str]:
    """The factory's keyword parameters (the numbers it was written to take)."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in inspect.signature(factory).parameters.values()
            if p.kind in kinds and p.default is not inspect.Parameter.empty]


def _scalar_hint(hint: Any) -> bool:
    """True for ``int``, ``float``, ``str``, ``bool`` and their optional forms."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return bool(args) and all(arg in SCALARS for arg in args)
    return hint in SCALARS


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds (``ExecutionParams | None`` gives ``ExecutionParams``), if any."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    args = typing.get_args(hint) if union else (hint,)   # not the items of a list[LegSpec]
    found = [arg for arg in args if isinstance(arg, type) and dataclasses.is_dataclass(arg)]
    return found[0] if len(found) == 1 else None


def config_overrides() -> list[str]:
    """``StrategyConfig`` fields a sweep may set (scalars, but not the name) and dotted scalar sub-fields."""
    names: list[str] = []
    for name, hint in typing.get_type_hints(StrategyConfig).items():
        if name == "name":
            continue
        if _scalar_hint(hint):
            names.append(name)
        inner = _dataclass_of(hint)
        if inner is not None:
            names.extend(f"{name}.{sub}" for sub, sub_hint in typing.get_type_hints(inner).items()
                         if _scalar_hint(sub_hint))
    return names


def overridable_parameters(factory: Callable[..., Any], strategy: str) -> list[str]:
    """Every name a sweep may set for ``strategy``: the factory's keywords first, then config fields."""
    keywords = factory_keywords(factory)
    return [*keywords, *sorted(name for name in config_overrides() if name not in keywords)]


def build_config(strategy: str, factory: Callable[..., Any], params: Mapping[str, Scalar]) -> StrategyConfig:
    """The strategy with ``params``: factory keywords as arguments, the rest through ``dataclasses.replace``.

    A sub-config the factory left unset (``execution_params=None``) starts from its defaults, which is
    what the engines use for ``None``. Every refusal is the config's own ``ConfigError``.
    """
    keywords = set(factory_keywords(factory))
    arguments = {name: value for name, value in params.items() if name in keywords}

    def bound() -> Any:
        return factory(**arguments)

    # The factory's name and code on the wrapper: a failure inside the factory names its strategy file.
    functools.update_wrapper(bound, factory)
    chosen = [config for config in build_strategy_configs([bound]) if config.name == strategy]
    if not chosen:
        raise ConfigError(f"the factory {factory.__name__} does not build strategy {strategy!r} with "
                          f"{format_params(arguments)}")
    config = chosen[0]
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        if name in keywords:
            continue
        head, _, sub = name.partition(".")
        if sub:
            nested.setdefault(head, {})[sub] = value
        else:
            top[name] = value
    hints = typing.get_type_hints(StrategyConfig)
    for head, changes in nested.items():
        current = getattr(config, head)
        if current is None:
            inner = _dataclass_of(hints[head])
            assert inner is not None   # config_overrides only offers dataclass fields
            current = inner()
        top[head] = dataclasses.replace(current, **changes)
    return dataclasses.replace(config, **top) if top else config
