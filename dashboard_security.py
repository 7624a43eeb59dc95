"""The dashboard's security: token check, lock-out, sessions, CSRF, origin and bind policy.

Why it looks the way it does: the dashboard can pause strategies and fire the kill switch,
so it is guarded like anything that can close positions (docs/DASHBOARD.md).

* One secret, ``DASHBOARD_TOKEN``, compared in constant time (``hmac.compare_digest``) so
  the time an answer takes says nothing about how much of a guess was right.
* A client address that fails too often is locked out for a while, on the injected clock
  (tests move simulated time instead of sleeping), so a token cannot be guessed online.
* A browser logs in once and then carries a random session id in a cookie that scripts
  cannot read (``HttpOnly``) and other sites cannot send (``SameSite=Strict``); the token
  itself is never stored in the browser.
* Every state-changing request carries the session's CSRF token (a form field or the
  ``X-CSRF-Token`` header) and, when the browser says where it comes from (``Origin`` or
  ``Referer``), must come from this very host. Requests authorised by the bearer token
  (scripts) need no CSRF token: a browser never adds that header by itself.
* The kill switch needs two steps: arming returns a short-lived confirmation token of its
  own, and only that token, within its time, fires the kill.
* Binding anywhere but the loopback interface is refused unless allowed explicitly.

Nothing here reads the wall clock, touches the network or knows the trading system: the
HTTP server (``dashboard.py``) asks, this module answers. All state lives in one
``DashboardGuard`` per server, behind its lock (HTTP threads call in concurrently).
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from clock import Clock

MIN_TOKEN_LENGTH = 16
SESSION_COOKIE = "ct_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# Failed logins per client address within FAILURE_WINDOW_SECONDS before a lock-out.
MAX_FAILURES = 5
FAILURE_WINDOW_SECONDS = 15 * 60.0
LOCKOUT_SECONDS = 15 * 60.0
SESSION_SECONDS = 12 * 3600.0
# The kill switch's confirmation: valid this long after arming, used once.
KILL_CONFIRM_SECONDS = 60.0
# How many sessions and watched addresses are kept at most (an attacker cannot grow them).
MAX_SESSIONS = 256
MAX_TRACKED_CLIENTS = 4096
LOOPBACK_NAMES = ("localhost",)


# ---------------------------------------------------------------------------------------
# The bind policy
# ---------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``; a name other than localhost is not."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_problem(host: str, allow_remote: bool) -> str | None:
    """Why the dashboard may not listen on ``host``, or None when it may.

    The answer says why and how to fix it: it ends up in the start-up refusal (exit 2).
    """
    if not host or not host.strip():
        return "it is empty: use 127.0.0.1 (the default), or remove DASHBOARD_HOST"
    if is_loopback(host) or allow_remote:
        return None
    return (f"{host} is not a loopback address, so the dashboard (which can close positions) would be reachable "
            f"from other machines. Keep DASHBOARD_HOST=127.0.0.1 and reach it through an SSH tunnel "
            f"(docs/DASHBOARD.md), or set DASHBOARD_ALLOW_REMOTE=true if you really mean it")


MIN_TOKEN_DISTINCT_CHARACTERS = 8


def token_weakness(token: str) -> str | None:
    """Why ``token`` is too weak to guard the dashboard, or None when it is acceptable.

    Length alone lets ``aaaaaaaaaaaaaaaa``, ``abcabcabcabcabca`` or ``0123456789abcdef``
    through, and the dashboard can close every position. The answer describes the weakness
    without quoting the token (it is a secret even when it is a bad one).
    """
    text = token.strip()
    if len(text) < MIN_TOKEN_LENGTH:
        return f"it is {'unset' if not token else f'{len(token)} characters'}; at least {MIN_TOKEN_LENGTH} are needed"
    distinct = len(set(text))
    if distinct < MIN_TOKEN_DISTINCT_CHARACTERS:
        return f"it uses only {distinct} different characters; at least {MIN_TOKEN_DISTINCT_CHARACTERS} are needed"
    for period in range(1, len(text) // 2 + 1):
        if all(text[i] == text[i - period] for i in range(period, len(text))):
            return "it repeats a short pattern"
    steps = {ord(b) - ord(a) for a, b in zip(text, text[1:])}
    if len(steps) <= 2:
        return "it is a run of consecutive characters"
    return None


# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthResult:
    """What a login attempt or a bearer check came to; ``locked_for`` in seconds when locked."""

    ok: bool
    locked_for: float = 0.0

    @property
    def locked(self) -> bool:
        return self.locked_for > 0


@dataclass
class Session:
    """A logged-in browser: its cookie value, its CSRF token, when it expires."""

    session_id: str
    csrf_token: str
    expires_at: float

    def __repr__(self) -> str:   # ids are credentials: never printed
        return f"Session(expires_at={self.expires_at})"


@dataclass
class KillArm:
    """One armed kill switch: what it will do, its confirmation token, when it lapses."""

    token: str
    payload: dict
    expires_at: float

    def __repr__(self) -> str:
        return f"KillArm(payload={self.payload!r}, expires_at={self.expires_at})"


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


# ---------------------------------------------------------------------------------------
# The guard
# ---------------------------------------------------------------------------------------


class DashboardGuard:
    """Every security decision of one dashboard server, thread-safe, on the injected clock."""

    def __init__(self, token: str, clock: Clock, *, max_failures: int = MAX_FAILURES,
                 failure_window: float = FAILURE_WINDOW_SECONDS, lockout: float = LOCKOUT_SECONDS,
                 session_seconds: float = SESSION_SECONDS, kill_confirm_seconds: float = KILL_CONFIRM_SECONDS) -> None:
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the dashboard token must be at least {MIN_TOKEN_LENGTH} characters")
        self._token = token.encode("utf-8")
        self._clock = clock
        self._max_failures = max_failures
        self._failure_window = failure_window
        self._lockout = lockout
        self._session_seconds = session_seconds
        self._kill_confirm_seconds = kill_confirm_seconds
        self._lock = threading.Lock()
        self._failures: dict[str, _Failures] = {}
        self._sessions: dict[str, Session] = {}
        self._kill_arms: dict[str, KillArm] = {}

    def __repr__(self) -> str:
        return f"DashboardGuard(sessions={len(self._sessions)}, token=<hidden>)"

    # ---- the token ----------------------------------------------------------------------

    def lockout_remaining(self, client: str) -> float:
        """Seconds ``client`` stays locked out (0 when it is not)."""
        with self._lock:
            record = self._failures.get(client)
            if record is None:
                return 0.0
            return max(0.0, record.locked_until - self._clock.now())

    def check_token(self, client: str, candidate: str | None) -> AuthResult:
        """Compare ``candidate`` with the token in constant time; count and lock out failures.

        A locked-out client is refused without even comparing, so guessing during a
        lock-out teaches nothing; a success clears the client's failures.
        """
        now = self._clock.now()
        with self._lock:
            record = self._failures.get(client)
            if record is not None and record.locked_until > now:
                return AuthResult(False, record.locked_until - now)
            given = (candidate or "").encode("utf-8")
            if hmac.compare_digest(given, self._token):
                self._failures.pop(client, None)
                return AuthResult(True)
            if record is None:
                if len(self._failures) >= MAX_TRACKED_CLIENTS:
                    self._forget_oldest_failures(now)
                record = self._failures.setdefault(client, _Failures())
            record.times = [t for t in record.times if now - t < self._failure_window] + [now]
            if len(record.times) >= self._max_failures:
                record.locked_until = now + self._lockout
                record.times = []
                return AuthResult(False, self._lockout)
            return AuthResult(False)

    def _forget_oldest_failures(self, now: float) -> None:
        """Bounded memory: drop clients that are not locked, oldest failure first."""
        unlocked = sorted((max(r.times, default=0.0), c) for c, r in self._failures.items() if r.locked_until <= now)
        for _, client in unlocked[: max(1, len(unlocked) // 2)]:
            del self._failures[client]

    # ---- sessions -----------------------------------------------------------------------

    def new_session(self) -> Session:
        """A fresh session after a good login: random id and CSRF token, an expiry."""
        now = self._clock.now()
        with self._lock:
            self._drop_expired(now)
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.expires_at)
                del self._sessions[oldest.session_id]
            session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + self._session_seconds)
            self._sessions[session.session_id] = session
            return session

    def session(self, session_id: str | None) -> Session | None:
        """The live session of this cookie value, or None (unknown or expired)."""
        if not session_id:
            return None
        now = self._clock.now()
        with self._lock:
            self._drop_expired(now)
            for known_id, session in self._sessions.items():
                if hmac.compare_digest(known_id.encode(), session_id.encode()):
                    return session
            return None

    def end_session(self, session_id: str | None) -> None:
        if not session_id:
            return
        with self._lock:
            self._sessions.pop(session_id, None)
            self._kill_arms.pop(session_id, None)

    def _drop_expired(self, now: float) -> None:
        for session_id in [sid for sid, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[session_id]
            self._kill_arms.pop(session_id, None)

    def cookie_header(self, session: Session, *, secure: bool = False) -> str:
        """The ``Set-Cookie`` value of a session: HttpOnly, SameSite=Strict, Path=/, expiring."""
        max_age = max(0, int(session.expires_at - self._clock.now()))
        secure_flag = "; Secure" if secure else ""
        return (f"{SESSION_COOKIE}={session.session_id}; Max-Age={max_age}; Path=/; HttpOnly; "
                f"SameSite=Strict{secure_flag}")

    @staticmethod
    def expired_cookie_header() -> str:
        return f"{SESSION_COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"

    # ---- CSRF and origin ----------------------------------------------------------------

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        """The request's CSRF token is this session's (constant time)."""
        if not given:
            return False
        return hmac.compare_digest(given.encode("utf-8"), session.csrf_token.encode("utf-8"))

    # ---- the kill switch's two steps ----------------------------------------------------

    def arm_kill(self, session: Session, payload: dict) -> KillArm:
        """Step one: remember what the kill will do; the confirmation token is valid briefly."""
        arm = KillArm(secrets.token_urlsafe(24), dict(payload), self._clock.now() + self._kill_confirm_seconds)
        with self._lock:
            self._kill_arms[session.session_id] = arm
        return arm

    def armed_kill(self, session: Session) -> KillArm | None:
        """The live arm of this session (for the confirmation page), or None."""
        with self._lock:
            arm = self._kill_arms.get(session.session_id)
            if arm is None or arm.expires_at <= self._clock.now():
                return None
            return arm

    def confirm_kill(self, session: Session, confirm_token: str | None) -> dict | None:
        """Step two: the payload to queue when the token matches the live arm; used once."""
        with self._lock:
            arm = self._kill_arms.get(session.session_id)
            if arm is None or not confirm_token:
                return None
            if arm.expires_at <= self._clock.now():
                del self._kill_arms[session.session_id]
                return None
            if not hmac.compare_digest(arm.token.encode("utf-8"), confirm_token.encode("utf-8")):
                return None
            del self._kill_arms[session.session_id]
            return dict(arm.payload)


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """A state-changing request comes from this dashboard's own pages.

    The browser's ``Origin`` (or, without it, ``Referer``) must name the ``Host`` the request
    was sent to. A request that carries neither (``curl`` with the bearer token) passes here;
    the CSRF token or the bearer token is what authorises it.
    """
    if not host or origin == "null":   # an opaque origin (a sandboxed frame, a file) is never ours
        return False
    source = origin or referer
    if not source:
        return True
    try:
        parts = urlsplit(source)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def host_allowed(host_header: str | None, loopback_only: bool) -> bool:
    """The request's ``Host`` names this machine when the dashboard listens on loopback only.

    A page on another site whose name an attacker points at 127.0.0.1 (DNS rebinding) sends
    its own name as ``Host``: refusing names that are not loopback closes that door.
    """
    if not host_header:
        return False
    if not loopback_only:
        return True
    name = host_header.strip()
    if name.startswith("["):
        name = name[1:name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return is_loopback(name)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def cookie_value(cookie_header: str | None, name: str = SESSION_COOKIE) -> str | None:
    """One cookie's value from a ``Cookie`` header (no library: the format is simple)."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


__all__ = [
    "AuthResult", "CSRF_FIELD", "CSRF_HEADER", "DashboardGuard", "KillArm", "MIN_TOKEN_LENGTH",
    "token_weakness", "SESSION_COOKIE",
    "Session", "bearer_token", "bind_problem", "cookie_value", "host_allowed", "is_loopback", "same_origin",
]
