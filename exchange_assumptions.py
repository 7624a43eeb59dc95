"""The exchange behaviours the daemon assumes but the documentation leaves UNCERTAIN, as settings.

Why a module of its own (issue 14): the API notes (docs/API.md) list points where the docs are
silent or contradict each other (the RFQ body encoding, FOK on perpetuals, the error code of a
stale timestamp, of a reduce-only order with no position, what happens to an off-tick price).
The code picked a documented default for each. ``python main.py doctor --orders`` can ask the
real exchange and write its answers into a small local file,
``<STATE_DIR>/exchange_overrides.json``; every later start reads that file here, so the daemon
uses what the exchange actually did rather than what the docs guessed.

Each value knows where it came from (``default``, ``override`` or the environment variable
that set it), which ``doctor`` prints next to the value. A missing override file means "all
defaults"; an unreadable one, an unknown name or a value of the wrong kind is a
``ConfigError`` naming the file, the entry and the fix (exit 2), never a silent default.

Pure values and file work: nothing here talks to the exchange.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from atomic_file import write_text_atomically
from errors import ConfigError

logger = logging.getLogger(__name__)

OVERRIDES_FILE = "exchange_overrides.json"
OVERRIDES_VERSION = 1

SOURCE_DEFAULT = "default"
SOURCE_OVERRIDE = "override"

# Who reads an assumption: the HTTP client (wired here, through ``client_setting``), or a
# module that reads it from ``AssumptionSet`` (listed for the operator; see docs/DOCTOR.md).
OWNER_CLIENT = "client"


@dataclass(frozen=True)
class Assumption:
    """One uncertain exchange behaviour: its name, the documented default and who uses it.

    ``choices``: the allowed values (None: any value of ``kind``). ``client_setting``: the
    ``ClientSettings`` field it sets, when the client owns it. ``env``: the environment
    variable that also sets it (an explicit variable wins over the override file).
    ``probe``: the ``doctor --orders`` probe that settles it (None: no safe probe).
    """

    name: str
    question: str
    default: Any
    kind: str                      # "str", "int", "bool", "float", "code" (an int or None)
    owner: str
    reference: str
    choices: tuple[Any, ...] | None = None
    client_setting: str | None = None
    env: str | None = None
    probe: str | None = None

    def check(self, value: Any) -> Any:
        """``value`` if it is a valid value of this assumption; ``ValueError`` otherwise."""
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"must be one of {', '.join(repr(c) for c in self.choices)}")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if self.kind in ("int", "code"):
            if value is None and self.kind == "code":
                return None
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("must be a whole number" + (" or null" if self.kind == "code" else ""))
            return value
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError("must be a positive number")
            return float(value)
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty text")
        return value


# The catalogue. Defaults are the ones docs/API.md documents for each UNCERTAIN point.
ASSUMPTIONS: tuple[Assumption, ...] = (
    Assumption("signing_window_ms", "How many ms behind the server may a signed request's ts be (X-REQ-TS-DIFF)?",
               5000, "int", OWNER_CLIENT, "API.md 2.2", client_setting="ts_diff_ms", env="COINCALL_TS_DIFF_MS"),
    Assumption("rfq_body_encoding", "Which body do the RFQ accept and cancel routes take: form or JSON?",
               "form", "str", OWNER_CLIENT, "API.md 12 #3", choices=("form", "json"),
               client_setting="rfq_body_encoding", env="COINCALL_RFQ_BODY_ENCODING"),
    Assumption("order_actions_per_second", "How many order actions (creates, amends, cancels) per second?",
               15.0, "float", OWNER_CLIENT, "API.md 12 #10", client_setting="order_actions_per_second"),
    Assumption("perp_allow_fok", "Do the perpetual routes accept FOK?", False, "bool", OWNER_CLIENT,
               "API.md 14.9 #3", client_setting="perp_allow_fok"),
    Assumption("perp_sign_market_data", "Must the perpetual market-data reads be signed?", True, "bool",
               OWNER_CLIENT, "API.md 14.9 #1", client_setting="perp_sign_market_data"),
    Assumption("perp_history_direction", "Do the perpetual histories need a direction cursor?", None, "str",
               OWNER_CLIENT, "API.md 14.9 #6", choices=(None, "NEXT", "PREV"),
               client_setting="perp_history_direction"),
    Assumption("stale_timestamp_code", "Which code refuses a request signed with a stale ts?", 10557, "code",
               OWNER_CLIENT, "API.md 12 #11", probe="stale_timestamp", client_setting="timestamp_code"),
    Assumption("off_tick_price", "What does the exchange do with an option price off the tick?", "truncate",
               "str", "informational: the daemon snaps every price to the tick itself", "API.md 12 #1", choices=("truncate", "round", "reject", "accept"),
               probe="off_tick"),
    Assumption("post_only_cross_code", "Which code refuses a post-only order that would cross?", 10001, "code",
               "informational: the daemon sends no post-only order", "API.md 12", probe="post_only_cross"),
    Assumption("reduce_only_no_position_code", "Which code refuses a reduce-only order with no position?", 10536,
               "code", "informational: any refusal of a close is a rejection; the daemon caps reduce-only sizes first", "API.md 12", probe="reduce_only_no_position"),
    Assumption("position_greeks", "Are position greeks per position or per contract?", "per_position", "str",
               "account_manager (net greeks)", "API.md 12 #4", choices=("per_position", "per_contract")),
    Assumption("rfq_min_notional_usd", "Smallest RFQ notional (sum of strike x qty) the exchange accepts", 50000.0,
               "float", "rfq / app.build_engines (rfq_notional_threshold)", "API.md 12 #2"),
)
BY_NAME: dict[str, Assumption] = {a.name: a for a in ASSUMPTIONS}


@dataclass(frozen=True)
class AssumptionValue:
    """The value in force for one assumption and where it came from; ``evidence`` is the
    exchange's answer that justified an override (shown by ``doctor``)."""

    assumption: Assumption
    value: Any
    source: str
    evidence: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.assumption.name, "value": self.value, "source": self.source,
                "default": self.assumption.default, "owner": self.assumption.owner,
                "reference": self.assumption.reference, "question": self.assumption.question,
                "evidence": self.evidence}


@dataclass(frozen=True)
class AssumptionSet:
    """Every assumption's value in force; built by ``load_assumptions`` (defaults without a file)."""

    values: Mapping[str, AssumptionValue] = field(default_factory=dict)
    path: Path | None = None

    def value(self, name: str) -> Any:
        if name not in BY_NAME:
            raise KeyError(f"no assumption named {name!r}")
        entry = self.values.get(name)
        return entry.value if entry is not None else BY_NAME[name].default

    def source(self, name: str) -> str:
        entry = self.values.get(name)
        return entry.source if entry is not None else SOURCE_DEFAULT

    def rows(self) -> list[AssumptionValue]:
        """One row per assumption of the catalogue, in its order."""
        return [self.values.get(a.name) or AssumptionValue(a, a.default, SOURCE_DEFAULT) for a in ASSUMPTIONS]

    def client_overrides(self) -> dict[str, Any]:
        """``ClientSettings`` field -> value, for the client-owned assumptions the file overrides.

        Only overrides: a default is already the client's own default, and a value set by an
        environment variable reaches the client through ``Settings`` already.
        """
        return {entry.assumption.client_setting: entry.value for entry in self.values.values()
                if entry.source == SOURCE_OVERRIDE and entry.assumption.client_setting is not None}


def overrides_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / OVERRIDES_FILE


def defaults() -> AssumptionSet:
    return AssumptionSet()


def load_assumptions(path: str | Path, *, environment: str,
                     explicit_env: Mapping[str, Any] | None = None) -> AssumptionSet:
    """The assumptions in force in ``environment``: defaults, the override file at ``path``
    over them, and ``explicit_env`` (variable name -> value actually set) over both.

    A missing file is "no overrides". Anything wrong with a present file is a ``ConfigError``,
    and so is a file written in another environment: what doctor learned on testnet (or on the
    simulator) is evidence about that exchange, not about production, and the default
    ``STATE_DIR`` is the same for every environment, so a file carried over by switching
    ``COINCALL_ENV`` would otherwise be applied silently.
    """
    target = Path(path)
    values: dict[str, AssumptionValue] = {}
    if target.exists():
        for name, (value, evidence) in _read_file(target, environment).items():
            values[name] = AssumptionValue(BY_NAME[name], value, SOURCE_OVERRIDE, evidence)
    for assumption in ASSUMPTIONS:
        if assumption.env is not None and explicit_env and assumption.env in explicit_env:
            values[assumption.name] = AssumptionValue(assumption, explicit_env[assumption.env],
                                                      f"setting {assumption.env}")
    return AssumptionSet(values, target)


def _read_file(path: Path, environment: str) -> dict[str, tuple[Any, str]]:
    fix = f"repair it, or delete {path} to use the documented defaults (docs/DOCTOR.md)"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"exchange override file {path} is unreadable ({exc}): {fix}") from None
    if not isinstance(document, dict) or not isinstance(document.get("values"), dict):
        raise ConfigError(f"exchange override file {path} has no 'values' object: {fix}")
    raw_evidence = document.get("evidence")
    evidence: dict[str, Any] = raw_evidence if isinstance(raw_evidence, dict) else {}
    result: dict[str, tuple[Any, str]] = {}
    for name, value in document["values"].items():
        assumption = BY_NAME.get(name)
        if assumption is None:
            raise ConfigError(f"exchange override file {path}: {name!r} is not a known assumption "
                              f"(known: {', '.join(BY_NAME)}): {fix}")
        try:
            checked = assumption.check(value)
        except ValueError as exc:
            raise ConfigError(f"exchange override file {path}: {name} = {value!r} {exc}: {fix}") from None
        result[name] = (checked, str(evidence.get(name, "")))
    written_for = document.get("environment")
    if written_for != environment:
        raise ConfigError(f"exchange override file {path} was written for environment {written_for!r}, and this "
                          f"run is {environment!r}: its answers describe that exchange, not this one. Run `python "
                          f"main.py doctor --orders --write-overrides` in {environment}, or give this environment "
                          f"its own STATE_DIR (or EXCHANGE_OVERRIDES_FILE), or delete {path} to use the documented "
                          f"defaults (docs/DOCTOR.md)")
    return result


def write_overrides(path: str | Path, answers: Mapping[str, tuple[Any, str]], *, environment: str,
                    written_at_ms: int) -> Path:
    """Merge ``answers`` (name -> (value, evidence)) into the override file, atomically.

    Values already in the file for other names are kept, so a probe that could not run this
    time does not erase what an earlier run learned.
    """
    target = Path(path)
    current: dict[str, tuple[Any, str]] = _read_file(target, environment) if target.exists() else {}
    for name, (value, evidence) in answers.items():
        assumption = BY_NAME.get(name)
        if assumption is None:
            raise ValueError(f"no assumption named {name!r}")
        current[name] = (assumption.check(value), evidence)
    document = {
        "version": OVERRIDES_VERSION,
        "environment": environment,
        "written_at_ms": int(written_at_ms),
        "values": {name: value for name, (value, _) in sorted(current.items())},
        "evidence": {name: evidence for name, (_, evidence) in sorted(current.items())},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(target, json.dumps(document, indent=2, sort_keys=True) + "\n")
    logger.info("exchange overrides written to %s (%s)", target, ", ".join(sorted(answers)))
    return target
