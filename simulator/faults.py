"""HTTP-level fault injection for the simulated exchange.

The daemon's hardest code paths (a create whose response never arrives, a 503 in the
middle of a close, a throttled cancel) cannot be exercised against a healthy server.
A ``FaultPlan`` decides, per request and deterministically (seeded RNG, counted rules),
whether the server misbehaves and how. Exchange-level faults (frozen index, lagging
fills, empty book sides) live in the exchange and market models, not here.

Modes
-----
``latency``        sleep ``seconds`` on the simulator's clock before executing (with a
                   speed-0 test clock this moves simulated time instead of waiting).
``http_5xx``       answer HTTP ``http_status`` (500/502/503); nothing executed.
``code_10000``     answer the envelope code 10000 "Try again later"; nothing executed.
``http_429``       answer HTTP 429; nothing executed.
``drop``           close the connection without any response; nothing executed.
``lost_response``  EXECUTE the request, then close without a response: the exchange
                   accepted it but the client only sees a transport error.
``timeout``        execute or not (``execute``), then hold the connection silent for
                   ``seconds`` REAL seconds (or until the client hangs up), then close.
"""
from __future__ import annotations

import fnmatch
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

LATENCY = "latency"
HTTP_5XX = "http_5xx"
CODE_10000 = "code_10000"
HTTP_429 = "http_429"
DROP = "drop"
LOST_RESPONSE = "lost_response"
TIMEOUT = "timeout"

FAULT_MODES: frozenset[str] = frozenset(
    {LATENCY, HTTP_5XX, CODE_10000, HTTP_429, DROP, LOST_RESPONSE, TIMEOUT}
)
DEFAULT_GLOBAL_MODES: tuple[str, ...] = (HTTP_5XX, CODE_10000, HTTP_429, LATENCY)


@dataclass
class FaultRule:
    """One way the server should misbehave, and for which requests.

    A rule matches a request when every given selector matches: ``endpoint`` (handler
    name, e.g. ``"create_order"``; fnmatch patterns allowed), ``path`` (fnmatch on the
    URI path) and ``params_match`` (each key present with an equal value, compared as
    text so ``{"orderId": 5}`` matches the query string ``orderId=5``).
    It fires for the next ``count`` matching requests when ``count`` is set, otherwise
    with ``probability`` (default 1.0: every matching request).
    """

    mode: str
    endpoint: str | None = None
    path: str | None = None
    probability: float | None = None
    count: int | None = None
    params_match: dict[str, Any] | None = None
    seconds: float = 0.5          # latency: simulated seconds; timeout: real seconds
    http_status: int = 503        # http_5xx only
    execute: bool = False         # timeout only: run the handler before holding
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; expected one of {sorted(FAULT_MODES)}")
        if self.count is not None and self.count < 0:
            raise ValueError("FaultRule.count must be >= 0")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("FaultRule.probability must be within [0, 1]")
        if self.mode == HTTP_5XX and not 500 <= self.http_status <= 599:
            raise ValueError("http_5xx faults need an http_status in 500..599")
        if self.seconds < 0:
            raise ValueError("FaultRule.seconds must be >= 0")

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def matches(self, handler: str | None, path: str, params: Mapping[str, Any]) -> bool:
        if self.endpoint is not None and (handler is None or not fnmatch.fnmatchcase(handler, self.endpoint)):
            return False
        if self.path is not None and not fnmatch.fnmatchcase(path, self.path):
            return False
        for key, expected in (self.params_match or {}).items():
            if key not in params or str(params[key]) != str(expected):
                return False
        return True


@dataclass(frozen=True)
class FaultDecision:
    """What the server must do to one request: an optional delay, then an optional fault."""

    latency_seconds: float = 0.0
    rule: FaultRule | None = None

    @property
    def mode(self) -> str | None:
        return self.rule.mode if self.rule is not None else None

    @property
    def label(self) -> str | None:
        """The text recorded in the request log."""
        if self.rule is not None:
            return self.rule.mode
        return LATENCY if self.latency_seconds > 0 else None


NO_FAULT = FaultDecision()


@dataclass
class _GlobalChaos:
    rate: float
    modes: tuple[str, ...]
    endpoints: tuple[str, ...] | None
    seconds: float


class FaultPlan:
    """The set of active fault rules, evaluated in insertion order for every request.

    Latency rules that fire add up and evaluation continues; the first other rule
    that fires decides the request's fate. The random stream is seeded, so a given
    sequence of requests always meets the same faults.
    """

    def __init__(self, seed: int = 7) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._global: _GlobalChaos | None = None
        self._counts: Counter[str] = Counter()

    # --- configuration -------------------------------------------------------------
    def add(self, rule: FaultRule) -> FaultRule:
        """Activate ``rule``; returns it so a test can look at ``rule.fired`` later."""
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    def clear(self) -> None:
        """Remove every rule and the global chaos rate (the counters are kept)."""
        with self._lock:
            self._rules.clear()
            self._global = None

    def set_global(
        self,
        rate: float = 0.05,
        modes: tuple[str, ...] | list[str] = DEFAULT_GLOBAL_MODES,
        endpoints: tuple[str, ...] | list[str] | None = None,
        seconds: float = 0.5,
    ) -> None:
        """Make a random share ``rate`` of requests fail with a random mode from ``modes``.

        ``endpoints`` restricts the chaos to handler names (fnmatch patterns); ``None``
        means every routed request. ``rate=0`` switches it off.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        unknown = set(modes) - FAULT_MODES
        if unknown or not modes:
            raise ValueError(f"bad fault modes {sorted(unknown) or modes!r}")
        with self._lock:
            self._global = (
                _GlobalChaos(rate, tuple(modes), tuple(endpoints) if endpoints is not None else None, seconds)
                if rate > 0
                else None
            )

    def reseed(self, seed: int) -> None:
        with self._lock:
            self._rng = random.Random(seed)

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    @property
    def counts(self) -> Counter[str]:
        """How many faults of each mode have fired so far (a copy)."""
        with self._lock:
            return Counter(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    # --- evaluation ----------------------------------------------------------------
    def decide(self, handler: str | None, path: str, params: Mapping[str, Any]) -> FaultDecision:
        """The fault (if any) for one request; counts it and consumes counted rules."""
        with self._lock:
            if not self._rules and self._global is None:
                return NO_FAULT
            latency = 0.0
            chosen: FaultRule | None = None
            for rule in self._rules:
                if rule.exhausted or not rule.matches(handler, path, params):
                    continue
                if not self._fires(rule):
                    continue
                rule.fired += 1
                if rule.mode == LATENCY:
                    latency += rule.seconds
                    self._counts[LATENCY] += 1
                    continue
                chosen = rule
                break
            if chosen is None:
                chosen = self._global_fault(handler)
                if chosen is not None and chosen.mode == LATENCY:
                    latency += chosen.seconds
                    self._counts[LATENCY] += 1
                    chosen = None
            if chosen is not None:
                self._counts[chosen.mode] += 1
            self._rules = [r for r in self._rules if not r.exhausted]
            if chosen is None and latency == 0.0:
                return NO_FAULT
            return FaultDecision(latency_seconds=latency, rule=chosen)

    def _fires(self, rule: FaultRule) -> bool:
        if rule.count is not None:
            return True
        probability = 1.0 if rule.probability is None else rule.probability
        if probability >= 1.0:
            return True
        return self._rng.random() < probability

    def _global_fault(self, handler: str | None) -> FaultRule | None:
        chaos = self._global
        if chaos is None or handler is None:
            return None
        if chaos.endpoints is not None and not any(fnmatch.fnmatchcase(handler, p) for p in chaos.endpoints):
            return None
        if self._rng.random() >= chaos.rate:
            return None
        mode = self._rng.choice(chaos.modes)
        status = self._rng.choice((500, 502, 503)) if mode == HTTP_5XX else 503
        return FaultRule(mode=mode, http_status=status, seconds=chaos.seconds)

    def __repr__(self) -> str:
        return f"FaultPlan(rules={len(self._rules)}, global={self._global!r})"
