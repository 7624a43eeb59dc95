"""The in-process transport: a ``requests`` adapter that calls the simulator without a socket.

Why: a backtest runs the daemon's own client against the embedded simulator, and over the
loopback socket most of a request's time is the round trip (two threads, a TCP stream, an
HTTP parser on each side), not the exchange. This adapter hands the request the client has
already prepared and signed to the same ``RequestPipeline`` the socket handler calls, and
builds the ``requests.Response`` from the very bytes the wire would carry, so the client
cannot tell the two transports apart:

* identical: the request (method, path and query, headers, body, signature), parsing,
  authentication, rate limits, fault and mutation plans, the request log, the status,
  headers and body bytes of every answer;
* different: no socket, so no connection set-up, keep-alive, partial reads or half-closed
  connections; an answer that never comes (``drop``, ``lost_response``, ``timeout``
  faults) is raised at once as the ``requests`` exception the wire ends in, without
  waiting for real: ``ReadTimeout`` when the client's read timeout is not longer than the
  fault's hold, ``ConnectionError`` otherwise.

``InProcessSession`` is what the client is given: ``requests.Session.request`` spends about
200 µs per call merging settings, parsing the URL and checking the environment, more than
the simulator spends answering most requests. The session prepares the request exactly
as a ``requests.Session`` without environment settings would (same method, URL, headers in
the same order, body, ``Content-Length``; ``tests/integration/test_inprocess_transport.py``
compares the two) and hands it straight to the adapter's pipeline. Its answer is an
``InProcessResponse``: the status, reason, headers and body bytes the client reads, without
the ``requests.Response`` (and its header dictionary) around them, which cost as much again
(the client reads only those through its ``HttpResponse`` protocol; a test compares them
with the wire's). It keeps no cookies and follows no redirects: the simulator sets none and
never answers 3xx.

The daemon (``python main.py``) always uses the wire: paper trading must keep exercising
the real socket. Only backtests choose this transport (``Settings.sim_transport``).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from http.client import RemoteDisconnected
from collections.abc import Mapping
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity, default_headers, get_encoding_from_headers
from urllib3.exceptions import ProtocolError

from simulator.server import HeaderView

if TYPE_CHECKING:
    from simulator.server import RequestPipeline, SimResponse, SimulatorHandle

# Where the request seems to come from: the loopback address the wire would show, so rate
# limits keyed by IP (unsigned public calls) count the same on both transports.
CLIENT_IP = "127.0.0.1"

# requests' timeout argument: seconds, (connect, read), or None.
Timeout = float | tuple[float | None, float | None] | None


class InProcessAdapter(BaseAdapter):
    """Serves every request mounted on it through ``pipeline.handle``; no socket, no thread."""

    def __init__(self, pipeline: RequestPipeline) -> None:
        super().__init__()
        self._pipeline = pipeline

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Timeout = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One request through the simulator's pipeline, answered as the wire answers it."""
        url = request.url or ""
        method = (request.method or "GET").upper()
        headers = _request_headers(request)
        answer = self.answer(method, url, headers, _body_bytes(request.body))
        if answer.status is None:
            raise _no_answer(request, answer, url, timeout)
        return _response(request, url, method, answer, _asks_to_close(headers))

    def answer(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> SimResponse:
        """The pipeline's answer to one request (``status`` None: no answer comes)."""
        split = urlsplit(url)
        target = split.path or "/"
        if split.query:
            target += "?" + split.query
        return self._pipeline.handle(method, target, headers, io.BytesIO(body).read, CLIENT_IP)

    def close(self) -> None:
        """Nothing to release: the adapter holds no connection."""


# Prepared URLs and header lines already checked, remembered per session: the client's
# URLs and most of its headers repeat; a full cache is simply emptied. History reads carry
# their time window in the URL, so most URLs are seen once: the cap bounds that garbage.
_URL_CACHE_SIZE = 1024
_HEADER_CACHE_SIZE = 512


class InProcessSession:
    """The part of ``requests.Session`` the exchange client uses, served by an ``InProcessAdapter``.

    ``request`` prepares the request as ``requests.Session.request`` does for the client's
    calls (no params, cookies, auth or hooks; ``data`` bytes or None; environment settings
    off, as nothing leaves the process), hands it to the adapter's pipeline and answers with
    an ``InProcessResponse``: the status, headers and body bytes the wire would deliver,
    without building the ``requests`` objects around them (``prepare`` builds the
    ``PreparedRequest`` from the same preparation, for tests and for the exception of an
    answer that never comes). URLs outside ``prefix`` are refused: this session reaches one
    simulator only.
    """

    def __init__(self, adapter: InProcessAdapter, prefix: str) -> None:
        # requests' own session defaults (User-Agent, Accept-Encoding, Accept, Connection),
        # by lower-case name as CaseInsensitiveDict keeps them.
        self._defaults: dict[str, tuple[str, str | None]] = {
            name.lower(): (name, value) for name, value in default_headers().items()}
        self._adapter = adapter
        self._prefix = prefix.lower()
        self._urls: dict[str, str] = {}
        self._checked_headers: set[tuple[str, str]] = set()

    def request(self, method: str, url: str, *, data: bytes | None, headers: Mapping[str, str],
                timeout: Timeout, allow_redirects: bool) -> InProcessResponse:
        """Send one request in-process; ``allow_redirects`` changes nothing (the simulator never redirects)."""
        prepared = self._prepare(method, url, data, headers)
        view = HeaderView.of(prepared.lines)
        answer = self._adapter.answer(prepared.method, prepared.url, view, prepared.body or b"")
        if answer.status is None:
            raise _no_answer(prepared.as_request(), answer, prepared.url, timeout)
        return InProcessResponse(answer, prepared.url, asked_to_close=_asks_to_close(view),
                                 head_only=prepared.method == "HEAD")

    def prepare(self, method: str, url: str, data: bytes | None, headers: Mapping[str, str]) -> requests.PreparedRequest:
        """The ``PreparedRequest`` ``requests.Session`` (``trust_env`` off) would build for these arguments."""
        return self._prepare(method, url, data, headers).as_request()

    def _prepare(self, method: str, url: str, data: bytes | None, headers: Mapping[str, str]) -> _Prepared:
        """Method, URL, header lines and body, as ``requests`` prepares them."""
        if data is not None and not isinstance(data, bytes):
            raise TypeError(f"the in-process session sends bytes bodies, not {type(data).__name__}")
        upper = method.upper()
        prepared_url = self._prepared_url(url)
        # The session's defaults, then the request's headers: a name already present keeps
        # its place and takes the request's spelling and value (CaseInsensitiveDict.update).
        merged = dict(self._defaults)
        for name, value in headers.items():
            merged[name.lower()] = (name, value)
        lines: list[tuple[str, str]] = []
        checked = self._checked_headers
        for name, text in merged.values():
            if text is None:         # a None value removes a default header, as in requests
                continue
            if not isinstance(text, str):
                raise TypeError(f"the in-process session sends text header values, not {type(text).__name__}")
            line = (name, text)
            if line not in checked:  # the check's own cache test, without a call per line
                self._check_header(line)
            lines.append(line)
        body = data if data else None
        if body is not None:
            _set_line(lines, "Content-Length", str(len(body)))
        elif upper not in ("GET", "HEAD") and not any(n.lower() == "content-length" for n, _ in lines):
            _set_line(lines, "Content-Length", "0")
        return _Prepared(upper, prepared_url, lines, body)

    def _check_header(self, line: tuple[str, str]) -> None:
        """requests' header check (``InvalidHeader`` on a bad name or value), once per distinct line."""
        if line in self._checked_headers:
            return
        check_header_validity(line)
        if len(self._checked_headers) >= _HEADER_CACHE_SIZE:
            self._checked_headers.clear()
        self._checked_headers.add(line)

    def _prepared_url(self, url: str) -> str:
        known = self._urls.get(url)
        if known is not None:
            return known
        if not url.lower().startswith(self._prefix):
            raise requests.exceptions.InvalidSchema(f"No connection adapters were found for {url!r}")
        probe = requests.PreparedRequest()
        probe.prepare_url(url, None)           # requests' own URL normalisation, once per URL
        prepared = probe.url or url
        if len(self._urls) >= _URL_CACHE_SIZE:
            self._urls.clear()
        self._urls[url] = prepared
        return prepared

    def close(self) -> None:
        """Nothing to release: no connection is ever opened."""
        self._adapter.close()


def inprocess_session_factory(handle: SimulatorHandle) -> Callable[[], InProcessSession]:
    """New sessions that reach ``handle`` in-process at its ``base_url``, for the client.

    The client rebuilds its session after repeated transport failures; every session this
    factory makes goes through the same pipeline, so a rebuilt session stays in-process.
    """
    prefix = handle.base_url.rstrip("/") + "/"
    pipeline = handle.pipeline

    def build() -> InProcessSession:
        return InProcessSession(InProcessAdapter(pipeline), prefix)

    return build


def mount_inprocess(session: requests.Session, handle: SimulatorHandle) -> requests.Session:
    """``session`` with the in-process adapter mounted for ``handle.base_url`` (environment off).

    For callers that want a real ``requests.Session`` (its full request preparation) in
    front of the in-process transport, e.g. a test comparing it with the wire.
    """
    session.trust_env = False
    session.mount(handle.base_url.rstrip("/") + "/", InProcessAdapter(handle.pipeline))
    return session


def _set_line(lines: list[tuple[str, str]], name: str, value: str) -> None:
    """``lines[name] = value`` as CaseInsensitiveDict assigns: in place when present, else appended."""
    lowered = name.lower()
    for index, (present, _) in enumerate(lines):
        if present.lower() == lowered:
            lines[index] = (name, value)
            return
    lines.append((name, value))


def _request_headers(request: requests.PreparedRequest) -> Mapping[str, str]:
    """The request's headers as the server would parse them (text values)."""
    values = list(request.headers.values())
    if all(isinstance(value, str) for value in values):
        return request.headers
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    for name, value in request.headers.items():
        headers[name] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return headers


def _body_bytes(body: bytes | str | object | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    raise TypeError(f"the in-process transport sends bytes or text bodies, not {type(body).__name__}")


def _read_timeout(timeout: Timeout) -> float | None:
    if isinstance(timeout, tuple):
        return timeout[1]
    return timeout


def _asks_to_close(headers: Mapping[str, str]) -> bool:
    """The request says ``Connection: close`` (the wire echoes it in the answer)."""
    return str(headers.get("Connection", "")).lower() == "close"


def _no_answer(request: requests.PreparedRequest, answer: SimResponse, url: str,
               timeout: Timeout) -> requests.RequestException:
    """The exception the wire ends in when the server closes without answering."""
    split = urlsplit(url)
    host, port = split.hostname or "", split.port or 80
    read_timeout = _read_timeout(timeout)
    if answer.hold_seconds > 0 and read_timeout is not None and read_timeout <= answer.hold_seconds:
        return requests.ReadTimeout(
            f"HTTPConnectionPool(host={host!r}, port={port}): Read timed out. (read timeout={read_timeout})",
            request=request,
        )
    reason = ProtocolError("Connection aborted.", RemoteDisconnected("Remote end closed connection without response"))
    return requests.ConnectionError(reason, request=request)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A request as ``requests`` prepares it: upper-case method, normalised URL, header lines, body."""

    method: str
    url: str
    lines: list[tuple[str, str]]
    body: bytes | None

    def as_request(self) -> requests.PreparedRequest:
        prepared = requests.PreparedRequest()
        prepared.method = self.method
        prepared.url = self.url
        prepared.headers = CaseInsensitiveDict(self.lines)
        prepared.body = self.body
        return prepared


class InProcessResponse:
    """What the client reads of an answer: ``status_code``, ``reason``, ``headers``, ``content``.

    The same values a ``requests.Response`` read off the wire shows (the headers as the
    server wrote them, plus the echoed ``Connection: close``); the header mapping is built
    only when read, which the client does only while capturing.
    """

    __slots__ = ("_answer", "url", "_asked_to_close", "_head_only", "_headers")

    def __init__(self, answer: SimResponse, url: str, *, asked_to_close: bool, head_only: bool) -> None:
        self._answer = answer
        self.url = url
        self._asked_to_close = asked_to_close
        self._head_only = head_only
        self._headers: CaseInsensitiveDict[str] | None = None

    @property
    def status_code(self) -> int:
        status = self._answer.status
        assert status is not None, "an answer that never came raises instead"
        return status

    @property
    def reason(self) -> str:
        return self._answer.reason

    @property
    def content(self) -> bytes:
        return b"" if self._head_only else self._answer.body

    @property
    def headers(self) -> CaseInsensitiveDict[str]:
        if self._headers is None:
            self._headers = _answer_headers(self._answer, self._asked_to_close)
        return self._headers


def _answer_headers(answer: SimResponse, asked_to_close: bool) -> CaseInsensitiveDict[str]:
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(answer.headers)
    if asked_to_close:
        headers["Connection"] = "close"          # the wire echoes a client's "Connection: close"
    return headers


def _response(request: requests.PreparedRequest, url: str, method: str, answer: SimResponse,
              asked_to_close: bool) -> requests.Response:
    """The ``requests.Response`` of an answer; its body is read from ``raw`` like the wire's."""
    response = requests.Response()
    assert answer.status is not None
    response.status_code = answer.status
    response.reason = answer.reason
    headers = _answer_headers(answer, asked_to_close)
    response.headers = headers
    response.encoding = get_encoding_from_headers(headers)
    response.raw = io.BytesIO(b"" if method == "HEAD" else answer.body)
    response.url = url
    response.request = request
    return response
