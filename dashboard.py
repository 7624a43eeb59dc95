"""The web dashboard: pages, a read-only JSON API and the operator's controls (docs/DASHBOARD.md).

Why it looks the way it does:

* The daemon's trading state belongs to the monitor thread. The dashboard runs on threads
  of its own (the standard library's ``ThreadingHTTPServer``: a dependency would not pay for
  itself here) and reads only two things the monitor publishes: the latest operator view
  (``ViewSource.latest_json``) and the log tail (``LogSource.lines``). It never calls a
  trading object.
* A control (pause, resume, the kill switch) only writes a command into the state store's
  queue, through the dashboard's own SQLite connection (never the daemon's store object);
  the daemon's ``CommandProcessor`` runs it on its next wake, exactly as it runs the command
  line's. The HTTP thread never waits on the trading clock (on simulated time a wait would
  move the daemon's time): it answers at once and the page shows the command's progress.
* Security is ``dashboard_security``'s: token, lock-out, sessions, CSRF, origin and host
  checks, the bind policy. The token never appears in a page, an answer, a log line or a
  repr.
* Off unless ``DASHBOARD_ENABLED``; a failure to bind is a start-up error (exit 2), never a
  crash in the middle of a run.
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import parse_qs, urlsplit

from clock import Clock, RealClock, SimulatedClock
from commands import (
    KIND_KILL,
    KIND_PAUSE,
    KIND_RESUME,
    CommandError,
    KillRequest,
    PauseRequest,
    ResumeRequest,
    describe_command,
)
from config import Settings
from dashboard_pages import (
    PageContext,
    render_alerts,
    render_kill,
    render_kill_confirm,
    render_login,
    render_message,
    render_orders,
    render_overview,
    render_strategies,
    render_trades,
)
from dashboard_security import (
    CSRF_FIELD,
    CSRF_HEADER,
    DashboardGuard,
    Session,
    bearer_token,
    bind_problem,
    cookie_value,
    host_allowed,
    is_loopback,
    same_origin,
)
from persistence import COMMAND_PENDING, StateStore, StoreError

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
REQUEST_TIMEOUT_SECONDS = 10.0
STOP_JOIN_SECONDS = 1.0
SERVE_POLL_SECONDS = 0.2
RECENT_COMMANDS = 8
# The JSON API: path -> the view's key it answers with (None: the whole view).
API_SECTIONS: dict[str, str | None] = {
    "/api/view": None, "/api/strategies": "strategies", "/api/trades": "trades", "/api/orders": "working_orders",
    "/api/positions": "positions", "/api/alerts": "alerts", "/api/health": "health",
}
PAGES: dict[str, Callable[[PageContext], str]] = {
    "/": render_overview, "/strategies": render_strategies, "/trades": render_trades, "/orders": render_orders,
    "/alerts": render_alerts, "/kill": render_kill,
}


class DashboardError(RuntimeError):
    """The dashboard cannot start (a refused address, a port in use): a start-up error."""


class ViewSource(Protocol):
    """The latest operator view as a JSON-ready dict, or None before the first poll."""

    def latest_json(self) -> dict | None: ...


class LogSource(Protocol):
    """The last lines of the daemon's log, oldest first."""

    def lines(self) -> list[str]: ...


@dataclass(frozen=True)
class DashboardConfig:
    """Where the dashboard listens and its secret (hidden from every repr)."""

    host: str
    port: int
    token: str
    allow_remote: bool = False

    def __repr__(self) -> str:
        return (f"DashboardConfig(host={self.host!r}, port={self.port}, token=<hidden>, "
                f"allow_remote={self.allow_remote})")

    __str__ = __repr__


class _HttpServer(ThreadingHTTPServer):
    """The standard server, carrying the dashboard the handlers answer for."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], dashboard: "DashboardServer") -> None:
        self.dashboard = dashboard
        super().__init__(address, _Handler)


class DashboardServer:
    """The dashboard's HTTP server on a daemon thread of its own (``start``/``stop``).

    ``clock`` is the daemon's (the store stamps commands with it); ``people_clock`` times
    what is measured in a person's time: sessions, lock-outs and the kill confirmation
    (default: ``clock``).
    """

    def __init__(self, config: DashboardConfig, clock: Clock, view: ViewSource, log: LogSource,
                 db_path: str | Path, *, people_clock: Clock | None = None) -> None:
        problem = bind_problem(config.host, config.allow_remote)
        if problem is not None:
            raise DashboardError(f"DASHBOARD_HOST={config.host!r} is refused: {problem}")
        self.config = config
        self.clock = clock
        self.view = view
        self.log = log
        self.db_path = Path(db_path)
        # Where the daemon's store is now: after a lost store it writes to a recovered copy, and
        # a command queued in the old path would never be seen (``follow_store``).
        self._store_path: Callable[[], str | Path] = lambda: self.db_path
        self.people_clock = people_clock if people_clock is not None else clock
        self.guard = DashboardGuard(config.token, self.people_clock)
        self.loopback_only = is_loopback(config.host)
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._store: StateStore | None = None
        self._store_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DashboardServer({self.config!r}, running={self.running})"

    # ---- life cycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the system chose for port 0)."""
        if self._server is None:
            return self.config.port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve on a daemon thread; a refused bind raises ``DashboardError``."""
        self.bind()
        self.serve()

    def bind(self) -> None:
        """Take the port without serving yet; a refused bind raises ``DashboardError``.

        The daemon binds before its first exchange request, so a port in use refuses the start
        before anything is asked of the exchange, and serves once its loop is about to run
        (a browser that connects in between waits in the listen queue).
        """
        if self._server is not None:
            return
        try:
            server = _HttpServer((self.config.host, self.config.port), self)
        except OSError as exc:
            raise DashboardError(f"the dashboard cannot listen on {self.config.host}:{self.config.port}: "
                                 f"{exc.strerror or exc} (choose another DASHBOARD_PORT, or stop what uses it)"
                                 ) from exc
        server.timeout = SERVE_POLL_SECONDS
        self._server = server

    def serve(self) -> None:
        """Serve the bound port on a daemon thread (``bind`` first); twice is harmless."""
        if self._server is None:
            raise DashboardError("the dashboard must bind its port before it serves")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._serve, name=f"dashboard-{self.port}", daemon=True)
        self._thread.start()
        logger.info("dashboard listening on %s (token required; docs/DASHBOARD.md)", self.url)

    def _serve(self) -> None:
        assert self._server is not None
        try:
            self._server.serve_forever(poll_interval=SERVE_POLL_SECONDS)
        except Exception:  # noqa: BLE001 - the dashboard must never take the daemon down
            logger.exception("the dashboard's server stopped on an error; the daemon goes on without it")

    def stop(self) -> None:
        """Stop serving and join the thread (within a second); close the store connection."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            if thread is not None:   # shutdown() waits for serve_forever: only when it ran
                server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(STOP_JOIN_SECONDS)
            if thread.is_alive():
                logger.warning("the dashboard's thread did not stop within %g s", STOP_JOIN_SECONDS)
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None
        if server is not None:
            logger.info("dashboard stopped")

    # ---- what the handlers use ----------------------------------------------------------

    def follow_store(self, path: Callable[[], str | Path]) -> None:
        """Read the state db's path from ``path`` before every use (the daemon's ``store.path``):
        a store relocated after a loss (``state_store_lost``) takes the dashboard's commands too."""
        self._store_path = path

    def store(self) -> StateStore:
        """The dashboard's own connection to the state db (opened on first use; reopened when
        the daemon's store moved)."""
        with self._store_lock:
            current = Path(self._store_path())
            if self._store is not None and Path(self._store.path) != current:
                logger.warning("dashboard: the state store moved to %s; the command queue follows it", current)
                self._store.close()
                self._store = None
            if self._store is None:
                self._store = StateStore(current, clock=self.clock)
            return self._store

    def queue(self, kind: str, payload: dict) -> int:
        """Write one command into the daemon's queue; the daemon runs it on its next wake."""
        command_id = self.store().add_command(kind, payload)
        logger.warning("dashboard: queued %s command %d %s", kind, command_id, payload)
        return command_id

    def recent_commands(self) -> list[str]:
        try:
            commands = self.store().commands()
        except (StoreError, OSError) as exc:
            return [f"the command queue cannot be read: {exc}"]
        return [command_text(command) for command in reversed(commands[-RECENT_COMMANDS:])]

    def command_text(self, command_id: int) -> str | None:
        try:
            command = self.store().command(command_id)
        except (StoreError, OSError):
            return None
        return command_text(command) if command is not None else None

    def latest_view(self) -> dict | None:
        try:
            return self.view.latest_json()
        except Exception:  # noqa: BLE001 - a page says "no view", the daemon is not ours to crash
            logger.exception("dashboard: the view could not be read")
            return None

    def log_lines(self) -> list[str]:
        try:
            return list(self.log.lines())
        except Exception:  # noqa: BLE001
            logger.exception("dashboard: the log tail could not be read")
            return []


def command_text(command: Mapping[str, Any]) -> str:
    """A command for people: a queued one says when it runs; the others as ``status`` says them."""
    if command["status"] == COMMAND_PENDING:
        target = (command.get("payload") or {}).get("strategy") or "every strategy"
        return (f"{command['kind']} command {command['id']} ({target}) is queued: the daemon takes it on its next "
                f"wake (within one poll interval)")
    return describe_command(command)


# ---------------------------------------------------------------------------------------
# The request handler
# ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """One request: authenticate, then a page, an API answer or a control."""

    server: _HttpServer
    server_version = "CoincallTrader-dashboard"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_SECONDS

    # ---- plumbing -----------------------------------------------------------------------

    @property
    def app(self) -> DashboardServer:
        return self.server.dashboard

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        # The request line and status only: bodies (the login token) and headers are never logged.
        logger.debug("dashboard %s: " + format, self.client_address[0], *args)

    def _client(self) -> str:
        return str(self.client_address[0])

    def _send(self, status: int, body: bytes, content_type: str, *, headers: Mapping[str, str] | None = None,
              nonce: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "same-origin")
        script = f"'nonce-{nonce}'" if nonce else "'none'"
        self.send_header("Content-Security-Policy",
                         f"default-src 'none'; style-src 'unsafe-inline'; script-src {script}; connect-src 'self'; "
                         f"img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, status: int, text: str, nonce: str | None, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, text.encode("utf-8"), "text/html; charset=utf-8", headers=headers, nonce=nonce)

    def _json(self, status: int, document: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json", headers=headers)

    def _redirect(self, location: str, headers: Mapping[str, str] | None = None) -> None:
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", headers={"Location": location, **(headers or {})})

    def _session(self) -> Session | None:
        return self.app.guard.session(cookie_value(self.headers.get("Cookie")))

    def _is_api(self, path: str) -> bool:
        return path.startswith("/api/")

    def _refuse_host(self) -> bool:
        """Answer 421 (and True) when the Host header is not this machine's (DNS rebinding)."""
        if host_allowed(self.headers.get("Host"), self.app.loopback_only):
            return False
        self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "this dashboard answers only to a loopback Host"})
        return True

    def _unauthorized(self, path: str, locked_for: float = 0.0) -> None:
        if locked_for > 0:
            minutes = max(1, int(locked_for // 60) + (1 if locked_for % 60 else 0))
            text = f"too many failed logins from this address: locked out for {minutes} more minute(s)"
            headers = {"Retry-After": str(int(locked_for) + 1)}
            if self._is_api(path):
                self._json(HTTPStatus.TOO_MANY_REQUESTS, {"error": text}, headers)
            else:
                nonce = secrets.token_urlsafe(16)
                self._html(HTTPStatus.TOO_MANY_REQUESTS, render_login(nonce, text), nonce, headers)
            return
        if self._is_api(path):
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "log in, or send Authorization: Bearer <DASHBOARD_TOKEN>"},
                       {"WWW-Authenticate": 'Bearer realm="CoincallTrader"'})
        else:
            nonce = secrets.token_urlsafe(16)
            self._html(HTTPStatus.UNAUTHORIZED, render_login(nonce), nonce)

    # ---- GET ----------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802 - the base class's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        try:
            self._get()
        except Exception:  # noqa: BLE001 - one bad request never stops the server
            logger.exception("dashboard: GET %s failed", urlsplit(self.path).path)
            self._safe_error()

    def _get(self) -> None:
        if self._refuse_host():
            return
        url = urlsplit(self.path)
        path = url.path
        if path == "/login":
            nonce = secrets.token_urlsafe(16)
            self._html(HTTPStatus.OK, render_login(nonce), nonce)
            return
        session = self._session()
        if session is None:
            if not self._is_api(path):
                self._unauthorized(path)
                return
            result = self.app.guard.check_token(self._client(), bearer_token(self.headers.get("Authorization")))
            if not result.ok:
                self._unauthorized(path, result.locked_for)
                return
        if self._is_api(path):
            self._api(path)
            return
        assert session is not None
        self._page(path, parse_qs(url.query), session)

    def _api(self, path: str) -> None:
        if path == "/api/log":
            self._json(HTTPStatus.OK, {"lines": self.app.log_lines()})
            return
        if path not in API_SECTIONS:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such API: {path}", "known": sorted([*API_SECTIONS,
                                                                                                 "/api/log"])})
            return
        view = self.app.latest_view()
        if view is None:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no view yet: the daemon publishes one after its "
                                                                 "first poll"}, {"Retry-After": "5"})
            return
        key = API_SECTIONS[path]
        if key is None:
            self._json(HTTPStatus.OK, view)
        else:
            self._json(HTTPStatus.OK, {"generated_at": view.get("generated_at"), key: view.get(key)})

    def _page(self, path: str, query: Mapping[str, list[str]], session: Session) -> None:
        nonce = secrets.token_urlsafe(16)
        flash = self._flash(query)
        view = self.app.latest_view()
        ctx = PageContext(view=view, csrf_token=session.csrf_token, nonce=nonce, path=path, flash=flash,
                          commands=tuple(self.app.recent_commands()) if path in ("/", "/strategies", "/kill") else (),
                          log_lines=tuple(self.app.log_lines()) if path == "/alerts" else ())
        if path == "/kill/confirm":
            self._kill_confirm_page(ctx, session)
            return
        render = PAGES.get(path)
        if render is None:
            self._html(HTTPStatus.NOT_FOUND, render_message("Not found", f"There is no page {path}.", ctx), nonce)
            return
        self._html(HTTPStatus.OK, render(ctx), nonce)

    def _flash(self, query: Mapping[str, list[str]]) -> str | None:
        raw = (query.get("command") or [""])[0]
        if not raw.isdigit():
            return None
        return self.app.command_text(int(raw))

    def _kill_confirm_page(self, ctx: PageContext, session: Session) -> None:
        arm = self.app.guard.armed_kill(session)
        if arm is None:
            self._html(HTTPStatus.OK, render_message(
                "Kill switch not armed", "The kill switch is not armed, or its confirmation lapsed: arm it again.",
                ctx, status_id="kill-not-armed"), ctx.nonce)
            return
        request = KillRequest.from_payload(arm.payload)
        trades = [str(t.get("id")) for t in (ctx.view or {}).get("trades") or []
                  if t.get("closed_at") is None and t.get("state") not in ("CLOSED", "FAILED")
                  and (request.strategy is None or t.get("strategy") == request.strategy)]
        page = render_kill_confirm(ctx, description=request.describe(), trades=trades, confirm_token=arm.token,
                                   seconds_left=max(0.0, arm.expires_at - self.app.people_clock.now()))
        self._html(HTTPStatus.OK, page, ctx.nonce)

    # ---- POST ---------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802
        try:
            self._post()
        except Exception:  # noqa: BLE001
            logger.exception("dashboard: POST %s failed", urlsplit(self.path).path)
            self._safe_error()

    def _form(self) -> dict[str, str] | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length < 0 or length > MAX_BODY_BYTES:
            return None
        body = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
        return {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}

    def _post(self) -> None:
        if self._refuse_host():
            return
        path = urlsplit(self.path).path
        form = self._form()
        if form is None:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "the request body is too large or malformed"})
            return
        if not same_origin(self.headers.get("Origin"), self.headers.get("Referer"), self.headers.get("Host")):
            self._forbidden("the request does not come from this dashboard's pages (Origin/Referer)")
            return
        if path == "/login":
            self._login(form)
            return
        session = self._session()
        if session is None:
            self._unauthorized(path)
            return
        given = form.get(CSRF_FIELD) or self.headers.get(CSRF_HEADER)
        if not self.app.guard.csrf_ok(session, given):
            self._forbidden("missing or wrong CSRF token: reload the page and try again")
            return
        handler = {
            "/logout": self._logout, "/control/pause": self._pause, "/control/resume": self._resume,
            "/kill/arm": self._kill_arm, "/kill/confirm": self._kill_confirm,
        }.get(path)
        if handler is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such control: {path}"})
            return
        handler(form, session)

    def _forbidden(self, reason: str) -> None:
        logger.warning("dashboard: refused %s %s from %s: %s", self.command, urlsplit(self.path).path,
                       self._client(), reason)
        self._json(HTTPStatus.FORBIDDEN, {"error": reason})

    def _login(self, form: Mapping[str, str]) -> None:
        result = self.app.guard.check_token(self._client(), form.get("token"))
        if not result.ok:
            if result.locked:
                logger.warning("dashboard: login from %s locked out for %.0f s", self._client(), result.locked_for)
                self._unauthorized("/login", result.locked_for)
            else:
                logger.warning("dashboard: failed login from %s", self._client())
                nonce = secrets.token_urlsafe(16)
                self._html(HTTPStatus.UNAUTHORIZED, render_login(nonce, "wrong token"), nonce)
            return
        session = self.app.guard.new_session()
        logger.info("dashboard: login from %s", self._client())
        self._redirect("/", {"Set-Cookie": self.app.guard.cookie_header(session)})

    def _logout(self, form: Mapping[str, str], session: Session) -> None:
        self.app.guard.end_session(session.session_id)
        self._redirect("/login", {"Set-Cookie": self.app.guard.expired_cookie_header()})

    def _pause(self, form: Mapping[str, str], session: Session) -> None:
        try:
            request = PauseRequest(form.get("strategy") or "", "dashboard")
        except CommandError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._redirect(f"/strategies?command={self.app.queue(KIND_PAUSE, request.to_payload())}")

    def _resume(self, form: Mapping[str, str], session: Session) -> None:
        name = form.get("strategy") or ""
        if not name:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "resume needs a strategy name"})
            return
        self._redirect(f"/strategies?command={self.app.queue(KIND_RESUME, ResumeRequest(name).to_payload())}")

    def _kill_arm(self, form: Mapping[str, str], session: Session) -> None:
        try:
            request = KillRequest(form.get("strategy") or None, form.get("all_positions") in ("1", "on", "true"))
        except CommandError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self.app.guard.arm_kill(session, request.to_payload())
        logger.warning("dashboard: kill switch armed (%s) from %s", request.describe(), self._client())
        self._redirect("/kill/confirm")

    def _kill_confirm(self, form: Mapping[str, str], session: Session) -> None:
        payload = self.app.guard.confirm_kill(session, form.get("confirm_token"))
        if payload is None:
            self._forbidden("the kill switch is not armed, its confirmation lapsed or was used: arm it again")
            return
        self._redirect(f"/orders?command={self.app.queue(KIND_KILL, payload)}")

    def _safe_error(self) -> None:
        try:
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "the dashboard failed on this request (see the log)"})
        except Exception:  # noqa: BLE001 - the connection may be gone already
            pass


# ---------------------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------------------


def bind_dashboard(settings: Settings, clock: Clock, view: ViewSource, log: LogSource,
                   db_path: str | Path) -> DashboardServer | None:
    """The dashboard the settings ask for, bound to its port but not serving yet; None when
    it is disabled.

    Raises ``DashboardError`` when it cannot start (no token, a refused address, a port in
    use): the caller turns it into a start-up refusal (exit 2) before any exchange request.
    Sessions, lock-outs and the kill switch's confirmation are a person's time: on a
    simulated clock (paper trading at ``--speed 60``) they run on the wall clock, or a
    confirmation would lapse in a second.
    """
    if not settings.dashboard_enabled:
        return None
    if not settings.dashboard_token:
        raise DashboardError("DASHBOARD_ENABLED=true needs DASHBOARD_TOKEN (docs/DASHBOARD.md)")
    config = DashboardConfig(settings.dashboard_host, settings.dashboard_port, settings.dashboard_token,
                             settings.dashboard_allow_remote)
    people_clock: Clock = RealClock() if isinstance(clock, SimulatedClock) else clock
    server = DashboardServer(config, clock, view, log, db_path, people_clock=people_clock)
    server.bind()
    return server


def start_dashboard(settings: Settings, clock: Clock, view: ViewSource, log: LogSource,
                    db_path: str | Path) -> DashboardServer | None:
    """``bind_dashboard``, then serving; None when the dashboard is disabled."""
    server = bind_dashboard(settings, clock, view, log, db_path)
    if server is not None:
        server.serve()
    return server


__all__ = ["DashboardConfig", "DashboardError", "DashboardServer", "LogSource", "ViewSource", "bind_dashboard",
           "start_dashboard"]
