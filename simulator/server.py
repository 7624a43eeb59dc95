"""The HTTP face of the simulated Coincall exchange.

Real HTTP on 127.0.0.1 with real signing is the point: the daemon's exchange client
talks to this server exactly as it talks to Coincall, so signing bugs, envelope
handling, throttling, 404s and lost responses are exercised on the same code path.

Per request (``RequestPipeline.handle``, shared by both transports: the socket handler
``_SimRequestHandler`` and the in-process adapter of ``simulator.inprocess``, which
backtests use to skip the loopback round trip):

1. route (``routes.find_route``); unknown → HTTP 404;
2. parse the parameters actually sent (GET query, JSON top-level keys, form fields);
3. authenticate (API key, timestamp window, signature; API.md §2);
4. rate-limit per user or IP on the SIMULATED clock (API.md §3.4);
5. apply injected faults (``faults.FaultPlan``);
6. ``exchange.sync()``, call the handler, rewrite a successful answer when a response
   mutation is active (``mutations.MutationPlan``), wrap the envelope (API.md §3.1);
7. record the request (``RequestLog``).

The module also holds ``SimulatorHandle``/``start_simulator``: the in-process way to
run the whole simulator (market + exchange + server thread, or no thread and no socket
with ``listen=False``) for tests, paper runs and backtests.
"""
from __future__ import annotations

import email.utils
import functools
import json
import logging
import socket
import socketserver
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from email.message import Message
from typing import Any, Callable, Iterable, Mapping, TypeAlias
from urllib.parse import parse_qsl, urlsplit

import auth
from clock import Clock, RealClock, SimulatedClock
from simulator.config import ServerConfig, SimulatorConfig
from simulator.errors import SimError
from simulator.payload import RawJSON
from simulator.exchange import Account, SimExchange
from simulator.faults import (
    CODE_10000,
    DROP,
    HTTP_429,
    HTTP_5XX,
    LOST_RESPONSE,
    TIMEOUT,
    FaultDecision,
    FaultPlan,
)
from simulator.markets import Markets, build_markets
from simulator.mutations import MutationPlan, freeze_key
from simulator.routes import PUBLIC, RATE_LIMITS, Route, find_route
from simulator import state as state_io

logger = logging.getLogger(__name__)

CODE_AUTH_FAIL = 4003
CODE_TRY_AGAIN = 10000
CODE_PARAM_ILLEGAL = 10004
CODE_TS_EXPIRED = 10557
CODE_BAD_CONTENT_TYPE = 10567

JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"
_MAX_BODY_BYTES = 4 * 1024 * 1024
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


# ------------------------------------------------------------------------------------
# Signature verification (pure)
# ------------------------------------------------------------------------------------
# Request headers: a dict in tests, the HTTP server's ``email.message.Message`` when serving.
Headers: TypeAlias = "Mapping[str, str] | Message[str, str]"


class HeaderView(dict[str, str]):
    """Request headers keyed by lower-case name, with a case-insensitive ``get`` at dict speed.

    The in-process transport hands the pipeline its headers in this form; any other
    mapping (a dict in tests, ``email.message.Message`` on the wire) works as well.
    """

    @classmethod
    def of(cls, lines: Iterable[tuple[str, str]]) -> HeaderView:
        """The view of ``(name, value)`` lines; the first of two lines with one name wins, as in ``Message.get``."""
        view = cls()
        for name, value in lines:
            view.setdefault(name.lower(), value)
        return view

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)


def _header(headers: Headers, name: str) -> str | None:
    """Case-insensitive header lookup that works for dicts and ``email.message`` objects."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key in headers.keys():
        if key.lower() == lowered:
            return headers[key]
    return None


def _python_style_bools(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with top-level booleans rendered as Python prints them ("True")."""
    return {k: (str(v) if isinstance(v, bool) else v) for k, v in params.items()}


def verify_signature(
    method: str,
    path: str,
    params: Mapping[str, Any] | None,
    headers: Headers,
    secret: str,
    default_diff_ms: int = auth.DEFAULT_TS_DIFF_MS,
) -> bool:
    """Whether ``headers['sign']`` is the signature of this request under ``secret``.

    The prehash is rebuilt from what the server parsed (API.md §2.3, §13 item 1) with
    the ``ts`` and ``X-REQ-TS-DIFF`` header strings exactly as received. A boolean
    signed as ``True`` (Python) instead of ``true`` (JSON) is also accepted (§2.4).
    """
    return _signature_ok(method, path, params, _header(headers, auth.HEADER_API_KEY),
                         _header(headers, auth.HEADER_SIGN), _header(headers, auth.HEADER_TS),
                         _header(headers, auth.HEADER_TS_DIFF), secret, default_diff_ms)


def _signature_ok(method: str, path: str, params: Mapping[str, Any] | None, key: str | None,
                  received: str | None, ts: str | None, diff_text: str | None, secret: str,
                  default_diff_ms: int) -> bool:
    """``verify_signature`` on the header values already read (the pipeline reads them once)."""
    if not key or not received or not ts:
        return False
    diff = diff_text or str(default_diff_ms)
    params = params or {}
    expected = auth.sign(secret, auth.build_prehash(method, path, params, key, ts, diff))
    if auth.signatures_match(expected, received):
        return True
    if any(isinstance(v, bool) for v in params.values()):
        python_style = auth.build_prehash(method, path, _python_style_bools(params), key, ts, diff)
        return auth.signatures_match(auth.sign(secret, python_style), received)
    return False


# ------------------------------------------------------------------------------------
# Rate limiting on the simulated clock
# ------------------------------------------------------------------------------------
@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets per (identity, group): ``n`` requests per ``window`` seconds.

    Time is the simulator's clock, so a test that advances the clock by one second
    refills an "account" bucket exactly as a second of real trading would.
    """

    def __init__(self, clock: Clock, limits: Mapping[str, tuple[int, float]] = RATE_LIMITS) -> None:
        self._clock = clock
        self._limits = dict(limits)
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def allow(self, identity: str, group: str | None) -> bool:
        """Take one token for ``identity`` in ``group``; False when the bucket is empty."""
        if group is None or group not in self._limits:
            return True
        capacity, window = self._limits[group]
        rate = capacity / window
        now = self._clock.now()
        with self._lock:
            bucket = self._buckets.get((identity, group))
            if bucket is None:
                bucket = self._buckets[(identity, group)] = _Bucket(float(capacity), now)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(capacity), bucket.tokens + elapsed * rate)
            bucket.updated = max(bucket.updated, now)
            if bucket.tokens >= 1.0 - 1e-9:
                bucket.tokens -= 1.0
                return True
            return False

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


# ------------------------------------------------------------------------------------
# Request log
# ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the server saw it; never holds the API secret.

    Slotted: the log keeps up to ``request_log_limit`` of these, and without a per-record
    ``__dict__`` each one costs about a third less memory.

    ``http_status`` is None when no response was written (drop / lost_response /
    timeout faults); ``code`` is the envelope code when there was an envelope;
    ``mutation`` names the response mutations that rewrote the answer ("a+b"), if any.
    """

    time_ms: int
    method: str
    path: str
    handler: str | None
    params: dict[str, Any]
    headers_ts: str | None
    api_key: str | None
    http_status: int | None
    code: int | None
    fault: str | None
    mutation: str | None = None


UNROUTED = "<unrouted>"


class RequestLog:
    """Thread-safe request records (bounded, oldest dropped) and per-handler counters."""

    def __init__(self, limit: int | None = 100_000) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=limit)
        self._counts: Counter[str] = Counter()

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            self._counts[record.handler or UNROUTED] += 1

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    @property
    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def for_handler(self, handler: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self._records if r.handler == handler]

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
            self._counts.clear()


# ------------------------------------------------------------------------------------
# The outcome of one request, before it is written to the socket
# ------------------------------------------------------------------------------------
@dataclass
class _Outcome:
    status: int | None                 # None: write nothing, close the connection
    body: bytes = b""
    content_type: str = JSON_TYPE
    code: int | None = None
    fault: str | None = None
    hold_seconds: float = 0.0          # timeout fault: real seconds to stay silent
    mutation: str | None = None        # response mutations applied to the body


@dataclass
class _Context:
    """What the pipeline has learnt about a request so far (for the log record)."""

    method: str
    path: str
    time_ms: int
    handler: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    headers_ts: str | None = None
    api_key: str | None = None


class _Rejection(Exception):
    """A response decided before the handler ran (auth, parse, throttle).

    ``close``: the connection is closed after the answer (a body too large to read).
    """

    def __init__(self, outcome: _Outcome, *, close: bool = False) -> None:
        super().__init__(outcome.code)
        self.outcome = outcome
        self.close = close


# What ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` builds on every call,
# built once (the same text: ``dumps`` is this encoder's ``encode``). Immutable once built.
_ENVELOPE_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=64)
def _envelope_head(code: int, msg: str | None) -> str:
    """The text of an envelope up to its data (a pure function of its arguments, so memoised:
    nearly every answer is (0, "Success"))."""
    return _ENVELOPE_JSON.encode({"code": code, "msg": msg, "i18nArgs": None})[:-1] + ',"data":'


def _envelope(code: int, msg: str | None, data: Any = None) -> bytes:
    if isinstance(data, RawJSON):
        return (_envelope_head(code, msg) + data + "}").encode("utf-8")
    return _ENVELOPE_JSON.encode({"code": code, "msg": msg, "i18nArgs": None, "data": data}).encode("utf-8")


def _error_outcome(code: int, msg: str, http_status: int = 200) -> _Outcome:
    return _Outcome(status=http_status, body=_envelope(code, msg), code=code)


def _not_found(path: str, now_ms: int) -> _Outcome:
    """A Spring-style 404 body, like a Java gateway answers an unmapped path."""
    body = json.dumps(
        {"timestamp": now_ms, "status": 404, "error": "Not Found", "path": path},
        separators=(",", ":"),
    ).encode("utf-8")
    return _Outcome(status=404, body=body)


def _plain(status: int, text: str) -> _Outcome:
    return _Outcome(status=status, body=text.encode("utf-8"), content_type="text/plain; charset=utf-8")


# ------------------------------------------------------------------------------------
# The answer to one request, as both transports deliver it
# ------------------------------------------------------------------------------------
SERVER_VERSION = "CoincallSim/1.0"
# Where a request's body comes from: ``read(n)`` returns the next ``n`` bytes (the socket's
# ``rfile.read`` on the wire, a ``BytesIO.read`` in-process).
BodyReader: TypeAlias = "Callable[[int], bytes]"


@dataclass(frozen=True)
class SimResponse:
    """What the server answers to one request, before any transport carries it.

    ``status`` None means "no answer": the connection is closed without a response,
    after staying silent ``hold_seconds`` real seconds on the wire (drop, lost_response
    and timeout faults). ``headers`` are the response headers in the order the wire
    writes them; ``close`` is True when the server closes the connection afterwards.
    """

    status: int | None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    hold_seconds: float = 0.0
    close: bool = False

    @property
    def reason(self) -> str:
        """The status line's reason phrase, as ``http.server`` writes it."""
        if self.status is None:
            return ""
        entry = BaseHTTPRequestHandler.responses.get(self.status)
        return entry[0] if entry else ""


# ------------------------------------------------------------------------------------
# The request pipeline (no socket)
# ------------------------------------------------------------------------------------
class RequestPipeline:
    """Every step of serving one request, from its parts to the answer's bytes.

    One pipeline serves both transports: the socket handler (``_SimRequestHandler``)
    and the in-process adapter (``simulator.inprocess``) call ``handle`` with the same
    method, target, headers and body, so parsing, signature checks, rate limits, faults,
    mutations, the request log and the response bytes cannot differ between them.
    """

    def __init__(
        self,
        config: ServerConfig,
        exchange: SimExchange,
        clock: Clock,
        faults: FaultPlan,
        log: RequestLog,
        mutations: MutationPlan,
    ) -> None:
        self.config = config
        self.exchange = exchange
        self.clock = clock
        self.faults = faults
        self.mutations = mutations
        self.request_log = log
        self.rate_limiter = RateLimiter(clock)
        # The last Date header and the clock reading it was made for: on a lock-step clock
        # the requests of one wake share an instant, and formatting a date is not free.
        self._date: tuple[float, str] = (float("nan"), "")

    # --- the entry point ----------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Headers, read_body: BodyReader,
               client_ip: str) -> SimResponse:
        """Serve ``method target`` (path and query, as on the request line); never raises."""
        split = urlsplit(target)
        ctx = _Context(method=method, path=split.path, time_ms=self.clock.now_ms())
        ctx.api_key = headers.get(auth.HEADER_API_KEY)
        ctx.headers_ts = headers.get(auth.HEADER_TS)
        close = False
        try:
            body = self._read_body(headers, read_body)
            outcome = self._pipeline(ctx, split.query, headers, body, client_ip)
        except _Rejection as rejection:
            outcome = rejection.outcome
            close = rejection.close
        except Exception:  # never let a bug kill the connection thread silently
            logger.exception("simulator failed on %s %s", ctx.method, ctx.path)
            outcome = _Outcome(status=500, body=_envelope(500, "Internal server error"), code=500)
        self._record(ctx, outcome)
        if outcome.status is None:
            return SimResponse(status=None, hold_seconds=outcome.hold_seconds, close=True)
        return SimResponse(
            status=outcome.status,
            headers=self._headers(outcome, close),
            body=outcome.body,
            close=close,
        )

    def _headers(self, outcome: _Outcome, close: bool) -> tuple[tuple[str, str], ...]:
        head = (
            ("Server", SERVER_VERSION),
            ("Date", self._date_header()),
            ("Content-Type", outcome.content_type),
            ("Content-Length", str(len(outcome.body))),
        )
        return head + (("Connection", "close"),) if close else head

    def _date_header(self) -> str:
        """The Date header follows the simulated clock, like everything else."""
        now = self.clock.now()
        at, text = self._date
        if at != now:
            text = email.utils.formatdate(now, usegmt=True)
            self._date = (now, text)
        return text

    @staticmethod
    def _read_body(headers: Headers, read_body: BodyReader) -> bytes:
        length_text = headers.get("Content-Length")
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise _Rejection(_plain(400, "Bad Content-Length")) from None
        if length < 0 or length > _MAX_BODY_BYTES:
            raise _Rejection(_plain(413, "Payload Too Large"), close=True)
        return read_body(length) if length else b""

    def _pipeline(self, ctx: _Context, query: str, headers: Headers, body: bytes, client_ip: str) -> _Outcome:
        found = find_route(ctx.method, ctx.path)
        if found is None:
            return _not_found(ctx.path, ctx.time_ms)
        route, path_params = found
        ctx.handler = route.handler
        try:
            sent = self.parse_params(route, ctx.method, query, headers.get("Content-Type", ""), body)
            ctx.params = {**sent, **path_params}
            account = self.authenticate(route, ctx.method, ctx.path, sent, headers, ctx.time_ms)
        except SimError as err:
            return _error_outcome(err.code, err.msg, err.http_status)
        self.throttle(route, account, client_ip)
        decision = self.faults.decide(route.handler, ctx.path, ctx.params)
        # The handler gets its own copy: whatever it does to it, the log keeps what was sent.
        return self._run_with_faults(route, account, dict(ctx.params), decision)

    def _run_with_faults(
        self, route: Route, account: Account | None, params: dict[str, Any], decision: FaultDecision
    ) -> _Outcome:
        if decision.latency_seconds > 0:
            self.clock.sleep(decision.latency_seconds)
        rule = decision.rule
        label = decision.label
        if rule is None:
            outcome = self.execute(route, account, params, mutate=True)
            outcome.fault = label
            return outcome
        if rule.mode == HTTP_5XX:
            outcome = _plain(rule.http_status, _REASONS.get(rule.http_status, "Server Error"))
        elif rule.mode == CODE_10000:
            outcome = _error_outcome(CODE_TRY_AGAIN, "Try again later")
        elif rule.mode == HTTP_429:
            outcome = _Outcome(status=429, body=_envelope(CODE_TRY_AGAIN, "Try again later"), code=CODE_TRY_AGAIN)
        elif rule.mode == DROP:
            outcome = _Outcome(status=None)
        elif rule.mode == LOST_RESPONSE:
            executed = self.execute(route, account, params)
            outcome = _Outcome(status=None, code=executed.code)
        elif rule.mode == TIMEOUT:
            code = self.execute(route, account, params).code if rule.execute else None
            outcome = _Outcome(status=None, code=code, hold_seconds=rule.seconds)
        else:  # pragma: no cover - FaultRule validates its mode
            raise AssertionError(rule.mode)
        outcome.fault = label
        return outcome

    def _record(self, ctx: _Context, outcome: _Outcome) -> None:
        self.request_log.append(
            RequestRecord(
                time_ms=ctx.time_ms,
                method=ctx.method,
                path=ctx.path,
                handler=ctx.handler,
                params=ctx.params,
                headers_ts=ctx.headers_ts,
                api_key=ctx.api_key,
                http_status=outcome.status,
                code=outcome.code,
                fault=outcome.fault,
                mutation=outcome.mutation,
            )
        )

    # --- the steps ---------------------------------------------------------------
    def parse_params(self, route: Route, method: str, query: str, content_type: str, body: bytes) -> dict[str, Any]:
        """The parameters as sent (these, and only these, are in the prehash)."""
        if method == "GET" or route.body == "query":
            return dict(parse_qsl(query, keep_blank_values=True))
        media_type = content_type.split(";", 1)[0].strip().lower()
        if not body.strip():
            encoding = media_type if media_type in (JSON_TYPE, FORM_TYPE) else None
            if encoding is not None:
                self._check_encoding(route, encoding)
            return {}
        if media_type not in (JSON_TYPE, FORM_TYPE):
            raise SimError(CODE_BAD_CONTENT_TYPE, "Invalid content_type")
        self._check_encoding(route, media_type)
        if media_type == FORM_TYPE:
            try:
                return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
            except UnicodeDecodeError as exc:
                raise SimError(CODE_PARAM_ILLEGAL, "Parameter illegal") from exc
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SimError(CODE_PARAM_ILLEGAL, "Parameter illegal") from exc
        if not isinstance(parsed, dict):
            raise SimError(CODE_PARAM_ILLEGAL, "Parameter illegal")
        return parsed

    def _check_encoding(self, route: Route, media_type: str) -> None:
        if route.body == "form":
            mode = self.config.rfq_body_mode
            if (mode == "form_only" and media_type != FORM_TYPE) or (mode == "json_only" and media_type != JSON_TYPE):
                raise SimError(CODE_PARAM_ILLEGAL, "Parameter illegal")
            return
        if media_type != JSON_TYPE:
            raise SimError(CODE_BAD_CONTENT_TYPE, "Invalid content_type")

    def authenticate(
        self, route: Route, method: str, path: str, params: Mapping[str, Any], headers: Headers, now_ms: int
    ) -> Account | None:
        """The calling account, None for an unsigned public call; SimError otherwise."""
        key = _header(headers, auth.HEADER_API_KEY)
        if key is None:
            if route.auth == PUBLIC:
                return None
            raise SimError(CODE_AUTH_FAIL, "Token auth fail")
        account = self.exchange.account_for_key(key) if key else None
        if account is None:
            raise SimError(CODE_AUTH_FAIL, "Token auth fail")
        ts_text = _header(headers, auth.HEADER_TS)
        received = _header(headers, auth.HEADER_SIGN)
        if not ts_text or not received:
            raise SimError(CODE_AUTH_FAIL, "Token auth fail")
        diff_text = _header(headers, auth.HEADER_TS_DIFF)
        if not self._timestamp_ok(ts_text, diff_text, now_ms):
            raise SimError(CODE_TS_EXPIRED, "Timestamp request expired")
        # verify_signature, on the header values read above (the same values: nothing changes them).
        if not _signature_ok(method, path, params, key, received, ts_text, diff_text, account.api_secret,
                             self.config.default_ts_diff_ms):
            raise SimError(CODE_AUTH_FAIL, "Token auth fail")
        return account

    def _timestamp_ok(self, ts_text: str, diff_text: str | None, now_ms: int) -> bool:
        """API.md §2.2: serverTime − diff ≤ ts < serverTime + 1000."""
        try:
            ts = int(ts_text.strip())
            diff = int(diff_text.strip()) if diff_text else self.config.default_ts_diff_ms
        except ValueError:
            return False
        window = min(max(diff, 0), self.config.max_ts_diff_ms)
        return now_ms - window <= ts < now_ms + self.config.future_tolerance_ms

    def throttle(self, route: Route, account: Account | None, client_ip: str) -> None:
        if not self.config.rate_limits_enabled or route.group is None:
            return
        identity = f"user:{account.user_id}" if account is not None else f"ip:{client_ip}"
        if self.rate_limiter.allow(identity, route.group):
            return
        if self.config.throttle_mode == "http429":
            raise _Rejection(_Outcome(status=429, body=_envelope(CODE_TRY_AGAIN, "Try again later"), code=CODE_TRY_AGAIN))
        raise _Rejection(_error_outcome(CODE_TRY_AGAIN, "Try again later"))

    def execute(
        self, route: Route, account: Account | None, params: dict[str, Any], *, mutate: bool = False
    ) -> _Outcome:
        """Run the exchange handler and wrap its result in the Coincall envelope.

        ``mutate``: the answer will be written, so active response mutations may rewrite
        a successful one (an answer nobody receives is never mutated, nor counted).
        """
        # A "<handler>_wire" variant returns the same data pre-serialized (RawJSON).
        handler: Callable[[Account | None, dict[str, Any]], Any] | None = (
            getattr(self.exchange, route.handler + "_wire", None) or getattr(self.exchange, route.handler, None))
        if handler is None:
            logger.warning("route %s %s has no exchange handler %r", route.method, route.path, route.handler)
            return _not_found(route.path, self.clock.now_ms())
        mutations = self.mutations
        selected: tuple = ()
        key: tuple = ()
        if mutations.engaged:
            now = self.clock.now()
            mutations.prepare(now)
            selected = mutations.select(route.handler, params, now) if mutate else ()
            key = freeze_key(account.user_id if account else None, route.handler, params) if selected else ()
        try:
            self.exchange.sync()
            data = handler(account, params)
        except SimError as err:
            if err.http_status == 404:
                # A role-gated route (rfqList for a taker-only key) answers exactly like an
                # unknown path (API.md §3.2): a gateway 404, never an envelope whose code
                # (404) is not in the exchange's code table (§3.3).
                return _not_found(route.path, self.clock.now_ms())
            return _error_outcome(err.code, err.msg, err.http_status)
        label = None
        if selected:
            data, label = mutations.apply(selected, data, key)
        return _Outcome(status=200, body=_envelope(0, "Success", data), code=0, mutation=label or None)


# ------------------------------------------------------------------------------------
# The wire: a threading HTTP server on 127.0.0.1
# ------------------------------------------------------------------------------------
class SimulatorHttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that hands every request to one ``RequestPipeline``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, pipeline: RequestPipeline) -> None:
        self.pipeline = pipeline
        self.clock = pipeline.clock
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((pipeline.config.host, pipeline.config.port), _SimRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall
        # for seconds on a machine without DNS; loopback needs none of it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    # --- connection bookkeeping, so stop() can cut keep-alive clients loose -----------
    def track(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(sock)

    @property
    def open_connections(self) -> int:
        with self._connections_lock:
            return len(self._connections)

    def close_all_connections(self) -> None:
        with self._connections_lock:
            sockets = list(self._connections)
            self._connections.clear()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _SimRequestHandler(BaseHTTPRequestHandler):
    """One connection; each request goes through the server's ``RequestPipeline``."""

    protocol_version = "HTTP/1.1"
    server_version = SERVER_VERSION
    sys_version = ""
    wbufsize = -1                    # one write per response (flushed by the base class)
    disable_nagle_algorithm = True
    server: SimulatorHttpServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        response = self.server.pipeline.handle(self.command, self.path, self.headers, self.rfile.read,
                                               self.client_address[0])
        self._respond(response)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class name
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s - %s", self.client_address[0], format % args)

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header follows the simulated clock, like everything else.
        return email.utils.formatdate(self.server.clock.now() if timestamp is None else timestamp, usegmt=True)

    def _respond(self, response: SimResponse) -> None:
        if response.status is None:
            self._hang_up(response.hold_seconds)
            return
        asked_to_close = self.close_connection       # the client's "Connection: close"
        self.log_request(response.status)
        self.send_response_only(response.status)
        for name, value in response.headers:
            self.send_header(name, value)            # "Connection: close" also closes
        if asked_to_close and not response.close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _hang_up(self, hold_seconds: float) -> None:
        """Close without a response; first stay silent for ``hold_seconds`` real seconds.

        The hold ends early when the client gives up and closes its side, so a test
        with a tiny client timeout does not keep a server thread busy.
        """
        self.close_connection = True
        if hold_seconds > 0:
            try:
                self.connection.settimeout(hold_seconds)
                self.connection.recv(1)
            except OSError:
                pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# ------------------------------------------------------------------------------------
# The in-process simulator
# ------------------------------------------------------------------------------------
# The base URL of a simulator that does not listen: a valid http URL the in-process
# adapter is mounted for; no name resolution ever happens for it.
INPROCESS_HOST = "inprocess.simulator"
INPROCESS_PORT = 80


class SimulatorHandle:
    """A running simulator: its clock, market, exchange, fault and mutation plans, pipeline.

    With an HTTP server (``server``) it listens on 127.0.0.1 and ``base_url`` is that
    address; without one it serves only in-process (``simulator.inprocess``) and
    ``base_url`` is ``http://inprocess.simulator``. ``api_secret`` is available to the
    test that started the simulator but is never part of ``repr``. ``stop()`` is
    idempotent and saves state to ``state_file``.
    """

    def __init__(
        self,
        *,
        config: SimulatorConfig,
        clock: Clock,
        market: Markets,
        exchange: SimExchange,
        faults: FaultPlan,
        mutations: MutationPlan,
        pipeline: RequestPipeline,
        server: SimulatorHttpServer | None,
        request_log: RequestLog,
        state_file: str | None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.market = market
        self.exchange = exchange
        self.faults = faults
        self.mutations = mutations
        self.state_file = state_file
        self.pipeline = pipeline
        self._server = server
        self._log = request_log
        self._thread = (
            threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"coincall-sim-{self.port}",
                daemon=True,
            )
            if server is not None
            else None
        )
        self._stopped = False
        self._stop_lock = threading.Lock()

    def _start(self) -> None:
        if self._thread is not None:
            self._thread.start()

    @property
    def listening(self) -> bool:
        """True when the simulator serves HTTP on a socket (False: in-process only)."""
        return self._server is not None

    @property
    def host(self) -> str:
        if self._server is None:
            return INPROCESS_HOST
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        if self._server is None:
            return INPROCESS_PORT
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        if self._server is None:
            return f"http://{INPROCESS_HOST}"
        return f"http://{self.host}:{self.port}"

    @property
    def server_config(self) -> ServerConfig:
        return self.pipeline.config

    @property
    def api_key(self) -> str:
        return self.exchange.default_account.api_key

    @property
    def api_secret(self) -> str:
        return self.exchange.default_account.api_secret

    @property
    def open_connections(self) -> int:
        """Client connections currently held open (keep-alive included; none in-process)."""
        return self._server.open_connections if self._server is not None else 0

    @property
    def rate_limiter(self) -> RateLimiter:
        return self.pipeline.rate_limiter

    # --- inspection -----------------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        """Every request recorded so far (a snapshot list, oldest first)."""
        return self._log.records

    @property
    def counts(self) -> Counter[str]:
        """Requests received per handler name (a snapshot)."""
        return self._log.counts

    def requests_for(self, handler: str) -> list[RequestRecord]:
        return self._log.for_handler(handler)

    def reset_stats(self) -> None:
        self._log.reset()

    # --- lifecycle ------------------------------------------------------------------
    def save_state(self, path: str | None = None) -> str:
        """Write the whole simulator state atomically; returns the path written."""
        target = path or self.state_file
        if not target:
            raise ValueError("no state file given")
        state_io.save_state_file(target, state_io.capture_state(self.clock, self.market, self.exchange, self.config.seed))
        return target

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.close_all_connections()
            self._server.server_close()
            self._thread.join(timeout=5)
        if self.state_file:
            self.save_state(self.state_file)

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SimulatorHandle(base_url={self.base_url!r}, api_key={self.api_key!r}, clock={self.clock!r})"


def _default_clock(config: SimulatorConfig) -> SimulatedClock:
    start = config.start_time if config.start_time is not None else RealClock().now()
    return SimulatedClock(start=start, speed=config.speed)


def _fixed_accounts(config: SimulatorConfig) -> list[Account] | None:
    """The default account with the configured credentials, or None for random ones."""
    if config.api_key is None or config.api_secret is None:
        return None
    return [
        Account(
            user_id=config.exchange_config().default_user_id,
            api_key=config.api_key,
            api_secret=config.api_secret,
            name="paper",
            email="paper@sim.local",
        )
    ]


def _build_models(
    config: SimulatorConfig, clock: Clock, state_file: str | None
) -> tuple[Markets, SimExchange]:
    """Fresh market and exchange, or the ones saved in ``state_file`` when it exists."""
    saved = state_io.load_state_file(state_file) if state_file else None
    if saved is not None:
        market, exchange = state_io.restore_models(config, clock, saved)
        if config.api_key is not None and exchange.account_for_key(config.api_key) is None:
            logger.warning("state file %s holds other credentials than the configured ones; using the saved ones",
                           state_file)
        logger.info("simulator state restored from %s", state_file)
        return market, exchange
    market = build_markets(config, clock.now_ms())
    exchange = SimExchange(config.exchange_config(), market, clock, accounts=_fixed_accounts(config))
    return market, exchange


def start_simulator(
    config: SimulatorConfig | None = None,
    *,
    clock: Clock | None = None,
    state_file: str | None = None,
    listen: bool = True,
) -> SimulatorHandle:
    """Build market + exchange (or restore them), start the HTTP thread, return the handle.

    ``listen=False``: no socket and no thread; the simulator is reached only through the
    in-process adapter (``simulator.inprocess``), which a backtest uses for speed.
    """
    config = config or SimulatorConfig()
    clock = clock if clock is not None else _default_clock(config)
    market, exchange = _build_models(config, clock, state_file)
    faults = FaultPlan(seed=config.seed)
    # Not part of the saved state: a restored simulator starts with no mutation active.
    mutations = MutationPlan(clock, exchange, seed=config.seed)
    request_log = RequestLog(config.server.request_log_limit)
    pipeline = RequestPipeline(config.server, exchange, clock, faults, request_log, mutations)
    server = SimulatorHttpServer(pipeline) if listen else None
    handle = SimulatorHandle(
        config=config,
        clock=clock,
        market=market,
        exchange=exchange,
        faults=faults,
        mutations=mutations,
        pipeline=pipeline,
        server=server,
        request_log=request_log,
        state_file=state_file,
    )
    handle._start()
    if listen:
        logger.info("Coincall simulator listening on %s (seed %s)", handle.base_url, config.seed)
    else:
        logger.info("Coincall simulator serving in-process at %s (seed %s)", handle.base_url, config.seed)
    return handle
