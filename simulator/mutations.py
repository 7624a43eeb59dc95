"""Response mutations: the exchange answers ``code 0``, but wrongly.

HTTP faults (``faults.py``) make the exchange fail loudly; real exchanges also fail
quietly, during maintenance and failovers: a positions list that is briefly empty, a
chain snapshot with marks of 0, values that stop moving, an order book restarted
without its orders. The daemon's money-safety rules ("an empty answer is not evidence",
"no decision on an insane price") can only be tested against an exchange that does
this, so the simulator can, per endpoint and for a window of SIMULATED time.

Kinds (``Mutation.kind``)
-------------------------
``empty_list``      every list in the answer is empty; pagination counts say 0 and
                    ``hasNext``/``hasPre``/``hasPrev`` say false.
``drop_fields``     the ``fields`` named are removed from every object, at any depth.
``zero_prices``     price fields (``PRICE_FIELDS``, or ``fields``) are set to 0.
``corrupt_prices``  price fields are set to ``value``, or multiplied by ``factor``
                    (default ×1000 when neither is given).
``freeze``          the first successful answer inside the window, per account,
                    endpoint and parameters, is served again and again until the end.
``forget_orders``   an event at ``start``: the exchange restarts without its order state
                    (``SimExchange.forget_orders``); positions, balances, fills survive.
``forget_all``      an event at ``start``: the exchange restarts with nothing but its
                    accounts' credentials (``SimExchange.forget_everything``).

Rewrites run after the handler (the request really happened) and before the envelope
is written, on successful answers only; an HTTP fault that suppresses the body wins.
With no mutation active the server pays one attribute read per request.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import math
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from clock import Clock
from simulator.payload import RawJSON

logger = logging.getLogger(__name__)

EMPTY_LIST = "empty_list"
DROP_FIELDS = "drop_fields"
ZERO_PRICES = "zero_prices"
CORRUPT_PRICES = "corrupt_prices"
FREEZE = "freeze"
FORGET_ORDERS = "forget_orders"
FORGET_ALL = "forget_all"

REWRITE_KINDS: frozenset[str] = frozenset({EMPTY_LIST, DROP_FIELDS, ZERO_PRICES, CORRUPT_PRICES, FREEZE})
EVENT_KINDS: frozenset[str] = frozenset({FORGET_ORDERS, FORGET_ALL})
MUTATION_KINDS: frozenset[str] = REWRITE_KINDS | EVENT_KINDS

# The fields ``zero_prices``/``corrupt_prices`` touch by default: every market or trade
# price the exchange reports (marks, touch, last, index/underlying, fills, averages,
# settlement prices). Strikes, sizes, greeks and money amounts are not prices here.
PRICE_FIELDS: frozenset[str] = frozenset({
    "markPrice", "lastPrice", "indexPrice", "underlyingPrice", "price", "avgPrice",
    "bid", "ask", "premium", "estimatedExpirationPrice", "delivery_price", "exercisePrice",
})
DEFAULT_CORRUPT_FACTOR = 1000.0

_PAGE_COUNTS = frozenset({"total", "pageTotal", "records_total"})
_PAGE_FLAGS = frozenset({"hasNext", "hasPre", "hasPrev"})

_RESET_SCOPE = {FORGET_ORDERS: "orders", FORGET_ALL: "all"}


# ------------------------------------------------------------------------------------
# One mutation
# ------------------------------------------------------------------------------------
@dataclass(eq=False)
class Mutation:
    """One way the exchange answers wrongly, for which requests and when.

    ``endpoint``: handler name as in ``routes.py`` (fnmatch patterns allowed; ``"*"`` =
    all). ``start``/``end``: the window ``[start, end)`` in epoch seconds of the
    simulator's clock; ``start=None`` = from now on (an event fires at once), ``end=None``
    = until removed. ``params_match``: each key present with an equal value (as text).
    ``fields``: for ``drop_fields`` (required) and the price kinds (overrides
    ``PRICE_FIELDS``). ``value``/``factor``: ``corrupt_prices`` only, one of the two.
    ``applied`` counts the answers rewritten (1 once an event has fired).
    Identity, not value, tells two mutations apart (``remove`` takes the object added).
    """

    kind: str
    endpoint: str = "*"
    start: float | None = None
    end: float | None = None
    fields: tuple[str, ...] | None = None
    value: float | None = None
    factor: float | None = None
    params_match: dict[str, Any] | None = None
    applied: int = field(default=0)

    def __post_init__(self) -> None:
        if self.kind not in MUTATION_KINDS:
            raise ValueError(f"unknown mutation kind {self.kind!r}; expected one of {sorted(MUTATION_KINDS)}")
        if self.fields is not None:
            if isinstance(self.fields, str):
                raise ValueError("Mutation.fields is a sequence of field names, not one string")
            self.fields = tuple(self.fields)
            if not self.fields or not all(isinstance(name, str) and name for name in self.fields):
                raise ValueError("Mutation.fields must name at least one field")
        self._check_parameters()
        self._check_window()

    def _check_parameters(self) -> None:
        if self.kind == DROP_FIELDS and not self.fields:
            raise ValueError("drop_fields needs fields=(...) naming what to drop")
        if self.fields is not None and self.kind not in (DROP_FIELDS, ZERO_PRICES, CORRUPT_PRICES):
            raise ValueError(f"{self.kind} takes no fields")
        if (self.value is not None or self.factor is not None) and self.kind != CORRUPT_PRICES:
            raise ValueError(f"{self.kind} takes no value or factor (corrupt_prices does)")
        if self.value is not None and self.factor is not None:
            raise ValueError("corrupt_prices takes value= or factor=, not both")
        for name in ("value", "factor"):
            number = getattr(self, name)
            if number is not None and not math.isfinite(float(number)):
                raise ValueError(f"corrupt_prices {name} must be finite")
        if self.kind in EVENT_KINDS and (self.endpoint != "*" or self.params_match):
            raise ValueError(f"{self.kind} restarts the whole exchange, not one endpoint: use endpoint '*' "
                             f"(on the command line, start the SPEC with the kind)")

    def _check_window(self) -> None:
        for name in ("start", "end"):
            moment = getattr(self, name)
            if moment is not None and not math.isfinite(float(moment)):
                raise ValueError(f"Mutation.{name} must be a finite epoch time")
        if self.kind in EVENT_KINDS and self.end is not None:
            raise ValueError(f"{self.kind} happens at start; it takes no end")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("Mutation.end must be after start")

    @property
    def is_event(self) -> bool:
        return self.kind in EVENT_KINDS

    def active_at(self, now: float) -> bool:
        """Whether ``now`` lies in ``[start, end)``."""
        return (self.start is None or now >= self.start) and (self.end is None or now < self.end)

    def matches(self, handler: str, params: Mapping[str, Any]) -> bool:
        if not fnmatch.fnmatchcase(handler, self.endpoint):
            return False
        for key, expected in (self.params_match or {}).items():
            if key not in params or str(params[key]) != str(expected):
                return False
        return True

    def describe(self) -> str:
        """A one-line summary for logs."""
        window = f"[{self.start}, {self.end})" if not self.is_event else f"at {self.start}"
        extra = f" fields={','.join(self.fields)}" if self.fields else ""
        if self.value is not None:
            extra += f" value={self.value:g}"
        if self.factor is not None:
            extra += f" factor={self.factor:g}"
        return f"{self.kind} on {self.endpoint} {window}{extra}"


# ------------------------------------------------------------------------------------
# Rewrites (pure: they build new containers and never touch the handler's objects,
# which may be the exchange's caches)
# ------------------------------------------------------------------------------------
def empty_lists(data: Any) -> Any:
    """``data`` with every list emptied and pagination counts/flags saying "nothing"."""
    if isinstance(data, list):
        return []
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in _PAGE_COUNTS and _is_number(value):
                out[key] = 0
            elif key in _PAGE_FLAGS and isinstance(value, bool):
                out[key] = False
            else:
                out[key] = empty_lists(value)
        return out
    return data


def drop_fields(data: Any, names: frozenset[str]) -> Any:
    """``data`` without the keys in ``names``, in every object at any depth."""
    if isinstance(data, list):
        return [drop_fields(item, names) for item in data]
    if isinstance(data, dict):
        return {key: drop_fields(value, names) for key, value in data.items() if key not in names}
    return data


def map_prices(data: Any, names: frozenset[str], transform: Callable[[float], float]) -> Any:
    """``data`` with every numeric value under a key in ``names`` replaced by ``transform``.

    Numbers given as text (order books, summaries) stay text; nulls, booleans and
    non-numeric text are left alone.
    """
    if isinstance(data, list):
        return [map_prices(item, names, transform) for item in data]
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in names and not isinstance(value, (dict, list)):
                out[key] = _transform_scalar(value, transform)
            else:
                out[key] = map_prices(value, names, transform)
        return out
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _transform_scalar(value: Any, transform: Callable[[float], float]) -> Any:
    if _is_number(value):
        return transform(float(value))
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return repr(transform(number))
    return value


def _zero(_: float) -> float:
    return 0.0


def _corruption(mutation: Mutation) -> Callable[[float], float]:
    if mutation.value is not None:
        fixed = float(mutation.value)
        return lambda _number: fixed
    factor = float(mutation.factor) if mutation.factor is not None else DEFAULT_CORRUPT_FACTOR
    return lambda number: number * factor


def _materialised(data: Any) -> Any:
    """Pre-serialised answers (``RawJSON``) parsed back into objects before a rewrite."""
    return json.loads(data) if isinstance(data, RawJSON) else data


def rewrite(mutation: Mutation, data: Any) -> Any:
    """Apply one rewrite kind (not ``freeze``, which needs the plan's memory) to ``data``."""
    if mutation.kind == EMPTY_LIST:
        return empty_lists(_materialised(data))
    if mutation.kind == DROP_FIELDS:
        return drop_fields(_materialised(data), frozenset(mutation.fields or ()))
    names = frozenset(mutation.fields) if mutation.fields else PRICE_FIELDS
    if mutation.kind == ZERO_PRICES:
        return map_prices(_materialised(data), names, _zero)
    if mutation.kind == CORRUPT_PRICES:
        return map_prices(_materialised(data), names, _corruption(mutation))
    raise ValueError(f"{mutation.kind} is not a stateless rewrite")


# ------------------------------------------------------------------------------------
# A seeded random schedule of windows (campaigns "draw from it")
# ------------------------------------------------------------------------------------
# Where each kind is drawn: (handler, fields) pairs the daemon reads and relies on.
SCHEDULE_TARGETS: dict[str, tuple[tuple[str, tuple[str, ...] | None], ...]] = {
    EMPTY_LIST: (("positions", None), ("pending_orders", None), ("option_chain", None),
                 ("order_history", None), ("trade_history", None)),
    DROP_FIELDS: (("option_chain", ("markPrice", "delta")), ("positions", ("markPrice", "delta", "avgPrice")),
                  ("query_order", ("fillQty", "avgPrice")),
                  ("option_detail", ("markPrice", "bid", "ask")), ("account_summary", ("equity", "availableMargin")),
                  ("futures_symbols", ("indexPrice", "markPrice"))),
    ZERO_PRICES: (("option_chain", None), ("option_detail", None), ("orderbook", None), ("positions", None),
                  ("futures_symbols", None)),
    CORRUPT_PRICES: (("option_chain", None), ("option_detail", None), ("orderbook", None), ("positions", None),
                     ("futures_symbols", None)),
    FREEZE: (("option_chain", None), ("futures_symbols", None), ("positions", None), ("account_summary", None),
             ("orderbook", None)),
    FORGET_ORDERS: (("*", None),),
    FORGET_ALL: (("*", None),),
}
# Window lengths in simulated seconds (uniform draw): "a few minutes", as in maintenance.
SCHEDULE_DURATIONS: dict[str, tuple[float, float]] = {
    EMPTY_LIST: (30.0, 180.0), DROP_FIELDS: (30.0, 180.0), ZERO_PRICES: (10.0, 60.0),
    CORRUPT_PRICES: (10.0, 60.0), FREEZE: (30.0, 120.0),
}
SCHEDULE_LOOKAHEAD_SECONDS = 3600.0


class RandomSchedule:
    """An endless, seeded sequence of mutation windows starting after ``origin``.

    Windows open as a Poisson process of ``rate_per_hour`` per simulated hour; each draws
    its kind from ``kinds``, its target from ``SCHEDULE_TARGETS`` and its length from
    ``SCHEDULE_DURATIONS``. The sequence depends only on (rate, kinds, seed, origin),
    never on the requests, so a campaign replays exactly with the same seed.
    """

    def __init__(self, rate_per_hour: float, kinds: Sequence[str], seed: int, origin: float) -> None:
        if not rate_per_hour > 0 or not math.isfinite(rate_per_hour):
            raise ValueError("rate_per_hour must be a positive number of windows per simulated hour")
        unknown = sorted(set(kinds) - MUTATION_KINDS)
        if unknown or not kinds:
            raise ValueError(f"bad mutation kinds {unknown or list(kinds)!r}; use {sorted(MUTATION_KINDS)}")
        self.rate_per_hour = float(rate_per_hour)
        self.kinds = tuple(kinds)
        self.seed = int(seed)
        self._rng = random.Random(f"mutations:{seed}")
        self._cursor = float(origin)

    def next_window(self) -> Mutation:
        self._cursor += self._rng.expovariate(self.rate_per_hour / 3600.0)
        kind = self._rng.choice(self.kinds)
        endpoint, fields = self._rng.choice(SCHEDULE_TARGETS[kind])
        if kind in EVENT_KINDS:
            return Mutation(kind, start=self._cursor)
        low, high = SCHEDULE_DURATIONS[kind]
        end = self._cursor + self._rng.uniform(low, high)
        return Mutation(kind, endpoint=endpoint, start=self._cursor, end=end, fields=fields)

    def windows(self, count: int) -> list[Mutation]:
        """The next ``count`` windows (advances the schedule)."""
        return [self.next_window() for _ in range(count)]


# ------------------------------------------------------------------------------------
# The plan: the mutations active on one simulator
# ------------------------------------------------------------------------------------
class ResettableExchange(Protocol):
    """What the plan needs from the exchange to stage restarts without state."""

    def schedule_reset(self, at_ms: int, scope: str, on_fired: Callable[[], None] | None = None) -> int: ...

    def cancel_reset(self, token: int) -> bool: ...


FreezeKey = tuple[Any, ...]


class MutationPlan:
    """The mutations of one simulator, thread-safe like ``FaultPlan``.

    The server asks ``select`` before a handler runs (the window is judged at the
    request's simulated time) and ``apply`` after it; both are free when nothing is
    active. Event kinds are handed to the exchange's engine, which runs them at their
    exact instant; they count once fired. Lock order: exchange, then plan (the plan
    never calls the exchange while holding its own lock).
    """

    def __init__(self, clock: Clock, exchange: ResettableExchange, seed: int = 7) -> None:
        self._clock = clock
        self._exchange = exchange
        self._seed = seed
        self._lock = threading.Lock()
        self._rewrites: list[Mutation] = []       # read without the lock on the fast path
        self._events: dict[int, tuple[Mutation, int]] = {}   # id(mutation) -> (mutation, reset token)
        self._frozen: dict[int, dict[FreezeKey, RawJSON]] = {}
        self._counts: Counter[str] = Counter()
        self._schedule: RandomSchedule | None = None
        self._scheduled: list[Mutation] = []
        self._next_drawn: Mutation | None = None

    # --- configuration -------------------------------------------------------------
    def add(self, mutation: Mutation) -> Mutation:
        """Activate ``mutation`` (events are staged on the exchange); returns it."""
        if mutation.is_event:
            self._stage_event(mutation)
        else:
            with self._lock:
                self._rewrites = [*self._rewrites, mutation]
        logger.info("response mutation added: %s", mutation.describe())
        return mutation

    def add_all(self, mutations: Iterable[Mutation]) -> list[Mutation]:
        return [self.add(m) for m in mutations]

    def remove(self, mutation: Mutation) -> None:
        """Deactivate ``mutation``; an event that has not fired yet is withdrawn."""
        with self._lock:
            self._rewrites = [m for m in self._rewrites if m is not mutation]
            self._scheduled = [m for m in self._scheduled if m is not mutation]
            self._frozen.pop(id(mutation), None)
            staged = self._events.pop(id(mutation), None)
        if staged is not None:
            self._exchange.cancel_reset(staged[1])

    def clear(self) -> None:
        """Remove every mutation and the random schedule (the counters are kept)."""
        with self._lock:
            self._rewrites = []
            self._frozen.clear()
            staged = list(self._events.values())
            self._events.clear()
            self._schedule = None
            self._scheduled = []
            self._next_drawn = None
        for _mutation, token in staged:
            self._exchange.cancel_reset(token)

    def set_schedule(self, rate_per_hour: float, kinds: Sequence[str], *, seed: int | None = None,
                     origin: float | None = None) -> RandomSchedule:
        """Open random windows from now (or ``origin``) on: ``RandomSchedule`` semantics."""
        schedule = RandomSchedule(rate_per_hour, kinds, self._seed if seed is None else seed,
                                  self._clock.now() if origin is None else origin)
        with self._lock:
            self._schedule = schedule
            self._next_drawn = None
        self.prepare(self._clock.now())
        return schedule

    @property
    def mutations(self) -> list[Mutation]:
        """Every active mutation: rewrites, then events not yet fired (a snapshot)."""
        with self._lock:
            return [*self._rewrites, *(m for m, _token in self._events.values())]

    @property
    def counts(self) -> Counter[str]:
        """Answers rewritten (and events fired) per kind so far (a copy)."""
        with self._lock:
            return Counter(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    # --- evaluation ----------------------------------------------------------------
    @property
    def engaged(self) -> bool:
        """Whether any rewrite or schedule exists: the server's one check per request.

        Read without the lock (two reference reads); events need no per-request work,
        the exchange's engine runs them.
        """
        return bool(self._rewrites) or self._schedule is not None

    def prepare(self, now: float) -> None:
        """Draw the random schedule up to an hour ahead and retire its finished windows.

        Called by the server before the exchange syncs, so a drawn restart is staged
        before the engine passes its instant.
        """
        if self._schedule is None:
            return
        drawn: list[Mutation] = []
        with self._lock:
            schedule = self._schedule
            if schedule is None:
                return
            while True:
                if self._next_drawn is None:
                    self._next_drawn = schedule.next_window()
                upcoming = self._next_drawn
                if upcoming.start is not None and upcoming.start > now + SCHEDULE_LOOKAHEAD_SECONDS:
                    break
                drawn.append(upcoming)
                self._next_drawn = None
            finished = [m for m in self._scheduled if m.end is not None and m.end <= now]
            if finished:
                gone = {id(m) for m in finished}
                self._scheduled = [m for m in self._scheduled if id(m) not in gone]
                self._rewrites = [m for m in self._rewrites if id(m) not in gone]
                for key in gone:
                    self._frozen.pop(key, None)
            self._scheduled.extend(m for m in drawn if not m.is_event)
        for mutation in drawn:
            self.add(mutation)

    def select(self, handler: str, params: Mapping[str, Any], now: float) -> tuple[Mutation, ...]:
        """The rewrites that apply to this request at ``now``, in the order they were added."""
        rewrites = self._rewrites
        if not rewrites:
            return ()
        return tuple(m for m in rewrites if m.active_at(now) and m.matches(handler, params))

    def apply(self, selected: Sequence[Mutation], data: Any, key: FreezeKey) -> tuple[Any, str]:
        """``data`` rewritten by ``selected`` in order; returns it and a label for the log.

        ``key`` identifies "the same request" for ``freeze`` (account, endpoint, params).
        """
        applied: list[Mutation] = []
        for mutation in selected:
            if mutation.kind == FREEZE:
                data, replayed = self._freeze(mutation, data, key)
                if not replayed:
                    continue
            else:
                data = rewrite(mutation, data)
            applied.append(mutation)
        if applied:
            with self._lock:
                for mutation in applied:
                    mutation.applied += 1
                    self._counts[mutation.kind] += 1
        return data, "+".join(m.kind for m in applied)

    def _freeze(self, mutation: Mutation, data: Any, key: FreezeKey) -> tuple[Any, bool]:
        """The first answer seen for ``key`` in this window, and whether it replaced ``data``."""
        with self._lock:
            memory = self._frozen.setdefault(id(mutation), {})
            frozen = memory.get(key)
            if frozen is None:
                memory[key] = data if isinstance(data, RawJSON) else RawJSON(
                    json.dumps(data, separators=(",", ":"), ensure_ascii=False))
                return data, False
        return frozen, True

    # --- events ----------------------------------------------------------------------
    def _stage_event(self, mutation: Mutation) -> None:
        if mutation.start is None:
            mutation.start = self._clock.now()

        def fired() -> None:
            # Runs under the exchange lock, possibly before the token below is recorded:
            # ``applied`` then keeps the already-fired event out of ``_events``.
            with self._lock:
                mutation.applied = 1
                self._counts[mutation.kind] += 1
                self._events.pop(id(mutation), None)
            logger.warning("response mutation fired: %s", mutation.describe())

        token = self._exchange.schedule_reset(int(round(mutation.start * 1000)), _RESET_SCOPE[mutation.kind], fired)
        with self._lock:
            if not mutation.applied:
                self._events[id(mutation)] = (mutation, token)

    def __repr__(self) -> str:
        return (f"MutationPlan(rewrites={len(self._rewrites)}, events={len(self._events)}, "
                f"schedule={self._schedule is not None})")


def freeze_key(account_id: int | None, handler: str, params: Mapping[str, Any]) -> FreezeKey:
    """What makes two requests "the same" for ``freeze``: account, endpoint and parameters."""
    return (account_id, handler, json.dumps(dict(params), sort_keys=True, default=str))


# ------------------------------------------------------------------------------------
# Command-line specs: ``python -m simulator --mutate SPEC``
# ------------------------------------------------------------------------------------
DEFAULT_SCHEDULE_KINDS: tuple[str, ...] = (EMPTY_LIST, DROP_FIELDS, ZERO_PRICES, CORRUPT_PRICES, FREEZE)
_SPEC_KEYS = ("start", "end", "duration", "fields", "value", "factor")


class MutationSpecError(ValueError):
    """A ``--mutate`` SPEC that does not parse; the message says what is wrong and how to write it."""


@dataclass(frozen=True)
class _Moment:
    seconds: float
    relative: bool          # "+N": N seconds after the simulator's start

    def resolve(self, origin: float) -> float:
        return origin + self.seconds if self.relative else self.seconds


@dataclass(frozen=True)
class MutationSpec:
    """A parsed ``--mutate`` SPEC; times may be relative until ``to_mutation(origin)``."""

    kind: str
    endpoint: str = "*"
    start: _Moment | None = None
    end: _Moment | None = None
    duration: float | None = None
    fields: tuple[str, ...] | None = None
    value: float | None = None
    factor: float | None = None

    def to_mutation(self, origin: float) -> Mutation:
        """The mutation, with ``+N`` times counted from ``origin`` (the simulator's start)."""
        start = self.start.resolve(origin) if self.start is not None else None
        if start is None and (self.kind in EVENT_KINDS or self.duration is not None):
            start = origin
        end = self.end.resolve(origin) if self.end is not None else None
        if self.duration is not None:
            end = (start if start is not None else origin) + self.duration
        return Mutation(self.kind, endpoint=self.endpoint, start=start, end=end, fields=self.fields,
                        value=self.value, factor=self.factor)


SPEC_SYNTAX = ("[ENDPOINT:]KIND[:start=T][:end=T|:duration=S][:fields=a,b][:value=V|:factor=F], "
               "T = +SECONDS after the simulator's start or an absolute epoch in seconds")


def parse_mutation_spec(text: str, handlers: Iterable[str]) -> MutationSpec:
    """Parse one SPEC (``SPEC_SYNTAX``); ``handlers`` are the route handler names it may target.

    Everything a ``Mutation`` would refuse is refused here too, with the SPEC quoted,
    so the command line fails at once (exit 2) instead of when the window opens.
    """
    parts = [part.strip() for part in text.split(":")]
    if not parts or not parts[0]:
        raise MutationSpecError(f"empty mutation spec {text!r}; use {SPEC_SYNTAX}")
    if parts[0] in MUTATION_KINDS:
        endpoint, kind, options = "*", parts[0], parts[1:]
    elif len(parts) >= 2 and parts[1] in MUTATION_KINDS:
        endpoint, kind, options = parts[0], parts[1], parts[2:]
    else:
        guess = parts[1] if len(parts) >= 2 else parts[0]
        raise MutationSpecError(f"mutation spec {text!r}: unknown kind {guess!r}; "
                                f"kinds are {', '.join(sorted(MUTATION_KINDS))}")
    known = sorted(set(handlers))
    if not any(fnmatch.fnmatchcase(name, endpoint) for name in known):
        raise MutationSpecError(f"mutation spec {text!r}: endpoint {endpoint!r} matches no route handler "
                                f"(e.g. positions, pending_orders, query_order, option_chain, account_summary)")
    values = _spec_options(text, options)
    if "end" in values and "duration" in values:
        raise MutationSpecError(f"mutation spec {text!r}: give end= or duration=, not both")
    try:
        spec = MutationSpec(
            kind=kind,
            endpoint=endpoint,
            start=_spec_moment(text, "start", values.get("start")),
            end=_spec_moment(text, "end", values.get("end")),
            duration=_spec_number(text, "duration", values.get("duration"), positive=True),
            fields=_spec_fields(text, values.get("fields")),
            value=_spec_number(text, "value", values.get("value")),
            factor=_spec_number(text, "factor", values.get("factor")),
        )
        if kind in EVENT_KINDS and spec.duration is not None:
            raise ValueError(f"{kind} happens at start; it takes no duration")
        if spec.start is not None and spec.end is not None and spec.start.relative != spec.end.relative:
            raise ValueError("start and end must both be +SECONDS or both epochs")
        spec.to_mutation(0.0)   # the Mutation's own checks (fields, value/factor, end after start)
    except MutationSpecError:
        raise
    except ValueError as exc:
        raise MutationSpecError(f"mutation spec {text!r}: {exc}") from None
    return spec


def _spec_options(text: str, options: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise MutationSpecError(f"mutation spec {text!r}: {option!r} is not KEY=VALUE; use {SPEC_SYNTAX}")
        if key not in _SPEC_KEYS:
            raise MutationSpecError(f"mutation spec {text!r}: unknown key {key!r}; keys are {', '.join(_SPEC_KEYS)}")
        if key in values:
            raise MutationSpecError(f"mutation spec {text!r}: {key} given twice")
        values[key] = value.strip()
    return values


def _spec_number(text: str, name: str, raw: str | None, *, positive: bool = False) -> float | None:
    if raw is None:
        return None
    try:
        number = float(raw)
    except ValueError:
        raise MutationSpecError(f"mutation spec {text!r}: {name}={raw!r} is not a number") from None
    if not math.isfinite(number) or (positive and number <= 0):
        raise MutationSpecError(f"mutation spec {text!r}: {name}={raw!r} must be a "
                                f"{'positive ' if positive else ''}finite number")
    return number


def _spec_moment(text: str, name: str, raw: str | None) -> _Moment | None:
    if raw is None:
        return None
    relative = raw.startswith("+")
    number = _spec_number(text, name, raw[1:] if relative else raw)
    assert number is not None
    if not relative and number < 1e9:
        raise MutationSpecError(f"mutation spec {text!r}: {name}={raw!r} is neither +SECONDS (after the "
                                f"simulator's start) nor an epoch in seconds")
    return _Moment(number, relative)


def _spec_fields(text: str, raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    if not names:
        raise MutationSpecError(f"mutation spec {text!r}: fields= names no field")
    return names


def parse_mutation_kinds(text: str) -> tuple[str, ...]:
    """``k1,k2`` → kinds, refusing unknown ones (``--mutation-kinds``)."""
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(kinds) - MUTATION_KINDS)
    if not kinds or unknown:
        raise MutationSpecError(f"unknown mutation kinds {unknown or text!r}; use {', '.join(sorted(MUTATION_KINDS))}")
    return kinds
