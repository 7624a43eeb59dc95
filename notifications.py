"""Notifications for people: Telegram and a webhook, sent from a queue on a thread of their own.

Why it looks the way it does (issue 12, docs/NOTIFICATIONS.md):

* **Never in the way of a tick.** The daemon's thread only formats a short text and appends it
  to a bounded queue (``Notifier.notify``, a lock and a deque); one background thread of the
  notifier does every HTTP request. A hanging or failing endpoint therefore costs the trading
  loop nothing, and with a lock-step ``SimulatedClock`` the thread never moves or blocks
  simulated time: it only reads the clock, and waits on a ``threading.Event`` whose timeout is
  computed from it (capped at ``MAX_WAIT_SECONDS`` of real time so that a clock running faster
  than the wall is noticed).
* **Bounded, and honest about what it lost.** Each sender has its own queue of at most
  ``capacity`` messages; when it is full the oldest non-critical message goes, with one log
  line per overflow episode. A CRITICAL message is never dropped silently: when it cannot be
  delivered (retries exhausted, refused, overflow of criticals only, shutdown) its full text is
  logged at CRITICAL, so the log always holds it.
* **Polite to the endpoints.** Retries with exponential back-off and a cap; a 429's
  ``retry_after`` is honoured; at most ``max_per_window`` messages per window per sender and,
  for Telegram, at least a second between two messages to the chat.
* **No secret anywhere.** The bot token is part of Telegram's URL and a webhook URL often
  carries a token in its path, so neither URL is ever logged; every text that leaves this
  module (messages, log lines, error descriptions) goes through a ``Redactor`` that replaces
  the configured secrets, and the reprs show none of them.
* **Plain values in.** This module knows nothing of trades or alerts as objects: the alert
  sink's listener hands it ``Alert.to_dict()``, the event journal's listener ``(kind, payload)``
  (the payload keys of trade events are documented in trade_recorder.py; missing keys are
  simply left out of the text).

The thread is started and stopped by ``app.run_locked``; ``process_pending`` is the one pass
the thread repeats, and what the tests drive by hand on a simulated clock.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence
from urllib.parse import urlparse

import requests

from api_values import finite_number
from clock import Clock, iso_utc, to_utc_datetime
from display import fmt

logger = logging.getLogger(__name__)

TELEGRAM_API = "https://api.telegram.org"
# Telegram refuses a message longer than 4096 characters; ours are far shorter, but an alert's
# text is not ours to bound.
TELEGRAM_MAX_CHARS = 4000
REQUEST_TIMEOUT_SECONDS = (5.0, 10.0)        # connect, read: bounds a hanging endpoint
DEFAULT_CAPACITY = 100                       # per sender
DEFAULT_MIN_LEVEL = "CRITICAL"
# How long stop() lets the thread deliver what is queued before giving up on it (real seconds;
# the systemd unit's stop timeout must be longer).
STOP_DRAIN_SECONDS = 10.0
# The longest single wait of the thread, in real seconds: a simulated clock that runs faster
# than the wall moves the next due time closer while the thread waits.
MAX_WAIT_SECONDS = 1.0
IDLE_WAIT_SECONDS = 30.0

LEVELS: dict[str, int] = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
NOTIFY_LEVELS: tuple[str, ...] = ("INFO", "WARNING", "ERROR", "CRITICAL")
# Exchange down and back are always sent, whatever NOTIFY_MIN_LEVEL says (the recovery is a
# WARNING alert, but it is the news that ends a CRITICAL one).
ALWAYS_SENT_ALERTS: frozenset[str] = frozenset({"exchange_unreachable", "exchange_recovered"})


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """One message for people: ``text`` is what a phone shows, the rest is for machines."""

    kind: str
    level: str
    time: str                      # iso_utc of the moment it happened (simulated time in sim)
    text: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def critical(self) -> bool:
        return self.level == "CRITICAL"

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        return {"kind": self.kind, "level": self.level, "time": self.time, "text": self.text,
                "detail": dict(self.detail)}


@dataclass(frozen=True)
class SendOutcome:
    """What one attempt came to: ``sent``, ``retry`` (after ``retry_after`` when the endpoint
    said so) or ``rejected`` (a permanent refusal: retrying the same message cannot help).
    ``error`` is already free of secrets."""

    status: str
    error: str = ""
    retry_after: float | None = None

    @classmethod
    def sent(cls) -> SendOutcome:
        return cls("sent")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off per sender: ``base * 2**(failures-1)`` up to ``cap``; a message is
    given up after ``max_attempts``; a 429's ``retry_after`` is honoured up to ``retry_after_cap``."""

    base_seconds: float = 2.0
    cap_seconds: float = 300.0
    max_attempts: int = 6
    retry_after_cap_seconds: float = 600.0

    def delay(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap_seconds)
        return min(self.base_seconds * 2 ** max(failures - 1, 0), self.cap_seconds)


@dataclass(frozen=True)
class RatePolicy:
    """At most ``max_per_window`` attempts per ``window_seconds``, ``min_interval_seconds`` apart."""

    max_per_window: int = 20
    window_seconds: float = 60.0
    min_interval_seconds: float = 0.0


TELEGRAM_RATE = RatePolicy(max_per_window=20, window_seconds=60.0, min_interval_seconds=1.0)
WEBHOOK_RATE = RatePolicy(max_per_window=20, window_seconds=60.0, min_interval_seconds=0.0)


@dataclass(frozen=True)
class NotifierStats:
    sent: int
    dropped: int
    queued: int


# --------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """``https://hooks.example.com/…``: enough to recognise the endpoint, never its path or query
    (where webhook services keep their token) nor a user:password."""
    parsed = urlparse(url)
    host = parsed.hostname or "?"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}/…"


class Redactor:
    """Replaces every configured secret in a text (and in the strings of a detail dict).

    Built once with ``(secret, stand-in)`` pairs; a secret shorter than
    ``MIN_SECRET_CHARS`` is ignored (replacing ``"/"`` everywhere would say nothing useful).
    """

    MIN_SECRET_CHARS = 6

    def __init__(self, secrets: Iterable[tuple[str, str]] = ()) -> None:
        pairs = {secret: stand_in for secret, stand_in in secrets
                 if isinstance(secret, str) and len(secret) >= self.MIN_SECRET_CHARS}
        # Longest first: a URL containing the token is replaced whole, not token first.
        self._pairs = sorted(pairs.items(), key=lambda pair: -len(pair[0]))

    def __call__(self, text: str) -> str:
        for secret, stand_in in self._pairs:
            if secret in text:
                text = text.replace(secret, stand_in)
        return text

    def value(self, value: Any) -> Any:
        """A JSON-safe copy of ``value`` with every string redacted (other objects become text)."""
        if isinstance(value, str):
            return self(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, Mapping):
            return {self(str(key)): self.value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.value(item) for item in value]
        return self(str(value))

    def __repr__(self) -> str:
        return f"Redactor({len(self._pairs)} secrets)"


def telegram_secrets(token: str) -> list[tuple[str, str]]:
    """The token whole and its secret half (after the bot id), as they may appear in an error."""
    pairs = [(token, "<TELEGRAM_BOT_TOKEN>")]
    if ":" in token:
        pairs.append((token.split(":", 1)[1], "<TELEGRAM_BOT_TOKEN>"))
    return pairs


def webhook_secrets(url: str) -> list[tuple[str, str]]:
    """The URL whole, its path and query (urllib3 quotes them alone in errors), its user info."""
    parsed = urlparse(url)
    masked = mask_url(url)
    pairs = [(url, masked)]
    tail = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    if len(tail) > 1:
        pairs.append((tail, "/…"))
    if parsed.password:
        pairs.append((parsed.password, "<password>"))
    return pairs


# --------------------------------------------------------------------------------------
# Senders: one HTTP request each, never raising
# --------------------------------------------------------------------------------------


class Sender(Protocol):
    """One destination: ``send`` makes one attempt and says how it went; it never raises."""

    name: str
    rate: RatePolicy

    def send(self, notice: Notice) -> SendOutcome: ...

    def close(self) -> None: ...


def _retry_after_header(response: requests.Response) -> float | None:
    return finite_number(response.headers.get("Retry-After"))


def _classify(response: requests.Response, retry_after: float | None, description: str) -> SendOutcome:
    """2xx sent; 429 retry (after what it said); 408 and 5xx retry; any other refusal is permanent."""
    status = response.status_code
    if 200 <= status < 300:
        return SendOutcome.sent()
    text = f"HTTP {status}" + (f": {description}" if description else "")
    if status == 429:
        return SendOutcome("retry", text, retry_after if retry_after is not None else _retry_after_header(response))
    if status == 408 or status >= 500:
        return SendOutcome("retry", text)
    return SendOutcome("rejected", text)


def _request_error(exc: Exception, redact: Redactor) -> SendOutcome:
    """A connection failure or time-out: retried; its text is redacted (it quotes the URL)."""
    return SendOutcome("retry", redact(f"{type(exc).__name__}: {exc}")[:300])


class TelegramSender:
    """The Bot API's ``sendMessage`` (plain text) to one chat."""

    name = "telegram"

    def __init__(self, token: str, chat_id: str, *, redact: Redactor, rate: RatePolicy = TELEGRAM_RATE,
                 session: requests.Session | None = None,
                 timeout: tuple[float, float] = REQUEST_TIMEOUT_SECONDS) -> None:
        self._url = f"{TELEGRAM_API}/bot{token}/sendMessage"
        self._chat_id = chat_id
        self._redact = redact
        self.rate = rate
        self._session = session if session is not None else requests.Session()
        self._timeout = timeout

    def send(self, notice: Notice) -> SendOutcome:
        text = notice.text if len(notice.text) <= TELEGRAM_MAX_CHARS else notice.text[:TELEGRAM_MAX_CHARS] + "…"
        try:
            response = self._session.post(self._url, json={"chat_id": self._chat_id, "text": text,
                                                           "disable_web_page_preview": True}, timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001 - a sender never raises; the text is redacted
            return _request_error(exc, self._redact)
        description, retry_after = "", None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            description = str(body.get("description") or "")
            parameters = body.get("parameters")
            if isinstance(parameters, dict):
                retry_after = finite_number(parameters.get("retry_after"))
            if 200 <= response.status_code < 300 and body.get("ok") is False:
                return SendOutcome("rejected", self._redact(f"Telegram said not ok: {description}")[:300])
        return _classify(response, retry_after, self._redact(description)[:300])

    def close(self) -> None:
        self._session.close()

    def __repr__(self) -> str:
        return "TelegramSender(token=<hidden>, chat_id=<set>)"


class WebhookSender:
    """A JSON POST of ``{kind, level, time, text, detail}`` to one URL."""

    name = "webhook"

    def __init__(self, url: str, *, redact: Redactor, rate: RatePolicy = WEBHOOK_RATE,
                 session: requests.Session | None = None,
                 timeout: tuple[float, float] = REQUEST_TIMEOUT_SECONDS) -> None:
        self._url = url
        self._shown = mask_url(url)
        self._redact = redact
        self.rate = rate
        self._session = session if session is not None else requests.Session()
        self._timeout = timeout

    def send(self, notice: Notice) -> SendOutcome:
        try:
            response = self._session.post(self._url, json=notice.payload(), timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001 - a sender never raises; the text is redacted
            return _request_error(exc, self._redact)
        return _classify(response, None, "")

    def close(self) -> None:
        self._session.close()

    def __repr__(self) -> str:
        return f"WebhookSender(url={self._shown!r})"


# --------------------------------------------------------------------------------------
# What is sent: plain text for people, rounded figures, UTC times
# --------------------------------------------------------------------------------------


def utc_text(epoch_seconds: float) -> str:
    """``2026-03-03 10:00:00 UTC``."""
    return to_utc_datetime(epoch_seconds).strftime("%Y-%m-%d %H:%M:%S UTC")


def _usd(value: Any, *, signed: bool = False) -> str | None:
    number = finite_number(value)
    if number is None:
        return None
    text = fmt(number)
    return f"+{text} USD" if signed and number > 0 else f"{text} USD"


def _qty(value: Any) -> str | None:
    number = finite_number(value)
    return None if number is None else f"{number:g}"


def _when(value: Any) -> str | None:
    """An epoch (seconds) or an already written instant, as UTC text."""
    number = finite_number(value)
    if number is not None and number > 0:
        return utc_text(number)
    return str(value) if isinstance(value, str) and value else None


def _leg_line(leg: Any) -> str | None:
    """``  SELL 0.01 BTCUSD-…-C, filled 0.01 @ 120.50, closed 0.01 @ 80.00`` from what the leg has."""
    if not isinstance(leg, Mapping):
        return None
    symbol = leg.get("symbol")
    if not symbol:
        return None
    parts = [str(leg.get("side") or "").upper(), _qty(leg.get("qty")) or "", str(symbol)]
    line = " ".join(part for part in parts if part)
    line += _fill_text("filled", leg.get("filled_qty"), leg.get("avg_price", leg.get("avg_fill_price")))
    line += _fill_text("closed", leg.get("close_filled_qty"), leg.get("close_avg_price"))
    return f"  {line}"


def _fill_text(label: str, qty: Any, price: Any) -> str:
    shown_qty, shown_price = _qty(qty), finite_number(price)
    if shown_qty is None or (shown_qty == "0" and shown_price is None):
        return ""
    return f", {label} {shown_qty}" + (f" @ {fmt(shown_price)}" if shown_price is not None else "")


def _legs(payload: Mapping[str, Any]) -> list[str]:
    legs = payload.get("legs")
    if not isinstance(legs, (list, tuple)):
        return []
    return [line for line in (_leg_line(leg) for leg in legs) if line is not None]


def _trade_title(verb: str, payload: Mapping[str, Any]) -> str:
    trade = payload.get("trade_id") or "?"
    strategy = payload.get("strategy")
    return f"Trade {verb}: {trade}" + (f" ({strategy})" if strategy else "")


def _lines(*parts: str | None) -> str:
    return "\n".join(part for part in parts if part)


def _premium(value: Any) -> str | None:
    """The entry premium: positive is a credit received, negative a debit paid."""
    number = finite_number(value)
    if number is None:
        return None
    return f"Entry premium: {fmt(number)} USD" + (" (credit)" if number > 0 else " (debit)" if number < 0 else "")


def format_trade_opened(payload: Mapping[str, Any], at: float) -> str:
    return _lines(_trade_title("opened", payload), *_legs(payload), _premium(payload.get("entry_premium")),
                  f"Opened at {_when(payload.get('opened_at')) or utc_text(at)}")


def format_trade_closed(payload: Mapping[str, Any], at: float) -> str:
    reason = payload.get("exit_reason")
    pnl = _usd(payload.get("realized_pnl"), signed=True)
    fees = _usd(payload.get("fees"))
    return _lines(_trade_title("closed", payload),
                  f"Exit reason: {reason}" if reason else None,
                  f"Realized PnL: {pnl}" if pnl else None,
                  f"Fees: {fees}" if fees else None,
                  *_legs(payload),
                  f"Closed at {_when(payload.get('closed_at')) or utc_text(at)}")


def format_trade_failed(payload: Mapping[str, Any], at: float) -> str:
    reason = payload.get("failure_reason") or payload.get("exit_reason")
    pnl = _usd(payload.get("realized_pnl"), signed=True)
    fees = _usd(payload.get("fees"))
    return _lines(_trade_title("failed after fills (unwound)", payload),
                  f"Reason: {reason}" if reason else None,
                  f"Realized PnL: {pnl}" if pnl else None,
                  f"Fees: {fees}" if fees else None,
                  *_legs(payload),
                  f"At {utc_text(at)}")


def format_daily_summary(payload: Mapping[str, Any], at: float) -> str:
    date = payload.get("date") or to_utc_datetime(at).strftime("%Y-%m-%d")
    figures = [
        ("Realized PnL", _usd(payload.get("realized_pnl"), signed=True)),
        ("Fees", _usd(payload.get("fees"))),
        ("Unrealized PnL (mark)", _usd(payload.get("unrealized_pnl_mark"), signed=True)),
        ("Equity", _usd(payload.get("equity"))),
        ("Trades opened", _qty(payload.get("trades_opened"))),
        ("Trades closed", _qty(payload.get("trades_closed"))),
        ("Trades failed", _qty(payload.get("trades_failed"))),
    ]
    return _lines(f"Daily summary {date} (UTC)", *(f"{name}: {value}" for name, value in figures if value))


def format_alert(alert: Mapping[str, Any]) -> str:
    kind = str(alert.get("kind") or "alert")
    level = str(alert.get("level") or "WARNING")
    title = {"exchange_unreachable": "Exchange DOWN", "exchange_recovered": "Exchange back UP"}.get(kind)
    head = f"{title} ({kind})" if title else f"{level} alert: {kind}"
    return _lines(head, str(alert.get("message") or ""), _iso_text(alert.get("time")))


def _iso_text(value: Any) -> str | None:
    """``2026-03-03T10:00:00.000Z`` (the alert's own time) as ``2026-03-03 10:00:00 UTC``."""
    if not isinstance(value, str) or "T" not in value:
        return None
    return value.replace("T", " ").split(".")[0].rstrip("Z") + " UTC"


def _traded(payload: Mapping[str, Any]) -> bool:
    """A failed trade is news only when something was traded (fees paid, PnL made, a leg filled)."""
    fees, pnl = finite_number(payload.get("fees")), finite_number(payload.get("realized_pnl"))
    if (fees is not None and fees > 0) or (pnl is not None and pnl != 0):
        return True
    legs = payload.get("legs")
    return isinstance(legs, (list, tuple)) and any(
        isinstance(leg, Mapping) and (finite_number(leg.get("filled_qty")) or 0) > 0 for leg in legs)


# --------------------------------------------------------------------------------------
# The notifier
# --------------------------------------------------------------------------------------


@dataclass
class _Channel:
    """One sender's queue, rate window and back-off; changed only under the notifier's lock."""

    sender: Sender
    queue: deque[Notice] = field(default_factory=deque)
    attempts_at: deque[float] = field(default_factory=deque)
    not_before: float = 0.0
    failures: int = 0          # consecutive failed attempts of this sender (the back-off)
    head_attempts: int = 0     # attempts spent on ``head``, the message being tried
    head: Notice | None = None
    in_flight: Notice | None = None
    overflowing: bool = False

    def ready_at(self, now: float) -> float:
        rate = self.sender.rate
        while self.attempts_at and self.attempts_at[0] <= now - rate.window_seconds:
            self.attempts_at.popleft()
        ready = self.not_before
        if self.attempts_at:
            ready = max(ready, self.attempts_at[-1] + rate.min_interval_seconds)
            if len(self.attempts_at) >= rate.max_per_window:
                ready = max(ready, self.attempts_at[0] + rate.window_seconds)
        return ready


class Notifier:
    """Queues notices for its senders and delivers them from one thread of its own.

    Sources: ``handle_alert`` (an ``Alert.to_dict()``), ``handle_event`` (a journal event),
    ``daemon_started``/``daemon_stopped``. None of them blocks or raises. ``start``/``stop``
    own the thread; ``process_pending`` is one pass of it (tests call it directly).
    """

    def __init__(self, senders: Sequence[Sender], clock: Clock, *, redact: Redactor | None = None,
                 min_level: str = DEFAULT_MIN_LEVEL, capacity: int = DEFAULT_CAPACITY,
                 retry: RetryPolicy = RetryPolicy(), stop_seconds: float | None = None) -> None:
        if not senders:
            raise ValueError("a Notifier needs at least one sender")
        if min_level not in LEVELS:
            raise ValueError(f"min_level {min_level!r} is not one of {', '.join(LEVELS)}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity!r}")
        self._clock = clock
        self._redact = redact if redact is not None else Redactor()
        self._min_level = LEVELS[min_level]
        self._capacity = int(capacity)
        self._retry = retry
        self._stop_seconds = stop_seconds   # None: STOP_DRAIN_SECONDS, read when stopping
        self._channels = [_Channel(sender) for sender in senders]
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self.sent = 0
        self.dropped = 0

    # ---- sources (the daemon's thread) --------------------------------------------------

    def handle_alert(self, alert: Mapping[str, Any]) -> None:
        """An alert as ``Alert.to_dict()``: sent when at or above the minimum level, or when it is
        the exchange going down or coming back."""
        try:
            level = str(alert.get("level") or "WARNING").upper()
            kind = str(alert.get("kind") or "alert")
            if kind not in ALWAYS_SENT_ALERTS and LEVELS.get(level, LEVELS["WARNING"]) < self._min_level:
                return
            time = str(alert.get("time") or iso_utc(self._clock.now()))
            detail = alert.get("detail")
            self.notify(Notice(kind=kind, level=level, time=time, text=format_alert(alert),
                               detail=dict(detail) if isinstance(detail, Mapping) else {}))
        except Exception:  # noqa: BLE001 - a notification never breaks the alert that caused it
            logger.warning("alert %s could not be turned into a notification", alert.get("kind"), exc_info=True)

    def handle_event(self, kind: str, payload: Mapping[str, Any]) -> None:
        """A journal event: trade opened and closed (once each, on the once-only
        ``opened_notified``/``closed_notified`` events), a failed trade that traded, the daily summary."""
        try:
            notice = self._notice_for_event(kind, payload)
        except Exception:  # noqa: BLE001 - a notification never breaks the journal
            logger.warning("event %s could not be turned into a notification", kind, exc_info=True)
            return
        if notice is not None:
            self.notify(notice)

    def _notice_for_event(self, kind: str, payload: Mapping[str, Any]) -> Notice | None:
        now = self._clock.now()
        if kind == "daily_summary":
            return Notice("daily_summary", "INFO", iso_utc(now), format_daily_summary(payload, now), dict(payload))
        if kind != "trade":
            return None
        event, state = payload.get("event"), payload.get("state")
        if event == "opened_notified":
            return Notice("trade_opened", "INFO", iso_utc(now), format_trade_opened(payload, now), dict(payload))
        if event == "closed_notified":
            return Notice("trade_closed", "INFO", iso_utc(now), format_trade_closed(payload, now), dict(payload))
        if event == "state" and state == "FAILED" and _traded(payload):
            return Notice("trade_failed", "WARNING", iso_utc(now), format_trade_failed(payload, now), dict(payload))
        return None

    def daemon_started(self, description: str) -> None:
        now = self._clock.now()
        self.notify(Notice("daemon_started", "INFO", iso_utc(now),
                           _lines(f"CoincallTrader started at {utc_text(now)}", description)))

    def daemon_stopped(self, reason: str) -> None:
        now = self._clock.now()
        self.notify(Notice("daemon_stopped", "INFO", iso_utc(now),
                           f"CoincallTrader stopped at {utc_text(now)}: {reason}", {"reason": reason}))

    def notify(self, notice: Notice) -> None:
        """Queue ``notice`` (redacted) for every sender; never blocks on the network, never raises."""
        try:
            safe = Notice(kind=notice.kind, level=notice.level, time=notice.time, text=self._redact(notice.text),
                          detail=self._redact.value(notice.detail))
        except Exception:  # noqa: BLE001 - e.g. an unprintable detail: the text alone still goes
            safe = Notice(kind=notice.kind, level=notice.level, time=notice.time, text=self._redact(notice.text))
        lost: list[tuple[str, Notice, str]] = []
        overflow_started: list[str] = []
        with self._lock:
            if self._closed:
                lost = [(channel.sender.name, safe, "the notifier is stopped") for channel in self._channels]
            else:
                for channel in self._channels:
                    channel.queue.append(safe)
                    if len(channel.queue) > self._capacity:
                        victim = self._evict(channel)
                        self.dropped += 1
                        if victim.critical:
                            lost.append((channel.sender.name, victim, "the queue is full of critical messages"))
                        if not channel.overflowing:
                            channel.overflowing = True
                            overflow_started.append(channel.sender.name)
        for name in overflow_started:
            logger.warning("notifications to %s: queue full (%d); dropping the oldest non-critical messages until "
                           "it drains (CRITICAL ones are logged when dropped)", name, self._capacity)
        for name, victim, why in lost:
            self._log_undelivered(name, victim, why)
        self._wake.set()

    def _evict(self, channel: _Channel) -> Notice:
        """The oldest non-critical message not being sent; the oldest critical if there is no other."""
        candidates = [notice for notice in channel.queue if notice is not channel.in_flight]
        victim = next((notice for notice in candidates if not notice.critical), candidates[0])
        channel.queue.remove(victim)
        return victim

    # ---- delivery (the notifier's thread) -------------------------------------------------

    def process_pending(self) -> int:
        """One pass: each sender whose next message is due (back-off and rate limit allowing)
        makes one attempt. Returns the number of attempts made."""
        attempts = 0
        for channel in self._channels:
            with self._lock:
                if self._closed or self._stopping or not channel.queue or channel.in_flight is not None:
                    continue
                now = self._clock.now()
                if channel.ready_at(now) > now:
                    continue
                notice = self._next_for(channel)
                channel.in_flight = notice
                channel.attempts_at.append(now)
            outcome = self._attempt(channel.sender, notice)
            attempts += 1
            self._settle(channel, notice, outcome, final=False)
        return attempts

    @staticmethod
    def _next_for(channel: _Channel) -> Notice:
        """The oldest CRITICAL message, else the oldest: a critical one never waits behind the
        retries of a trade notice or a summary (up to six attempts, each after the endpoint's
        ``retry_after``). Changing message starts its attempt count afresh."""
        notice = next((queued for queued in channel.queue if queued.critical), channel.queue[0])
        if notice is not channel.head:
            channel.head, channel.head_attempts = notice, 0
        return notice

    def next_due(self) -> float | None:
        """The clock time at which the next attempt may be made, or None with nothing queued."""
        with self._lock:
            now = self._clock.now()
            due = [channel.ready_at(now) for channel in self._channels if channel.queue]
        return min(due) if due else None

    def _attempt(self, sender: Sender, notice: Notice) -> SendOutcome:
        try:
            return sender.send(notice)
        except Exception as exc:  # noqa: BLE001 - a sender should not raise; if it does, it is a retry
            return SendOutcome("retry", self._redact(f"{type(exc).__name__}: {exc}")[:300])

    def _settle(self, channel: _Channel, notice: Notice, outcome: SendOutcome, *, final: bool) -> None:
        """Book one attempt's outcome. ``final``: no retry (the stop drain)."""
        lost: str | None = None
        log_line: tuple[int, str, tuple[Any, ...]] | None = None
        with self._lock:
            channel.in_flight = None
            if self._closed:
                return   # stop() gave up waiting and has already accounted for this message
            now = self._clock.now()
            name = channel.sender.name
            if outcome.status == "sent":
                self._remove_head(channel, notice)
                self.sent += 1
                channel.failures = 0
                channel.head_attempts = 0
                channel.not_before = 0.0
                if channel.overflowing and len(channel.queue) <= self._capacity // 2:
                    channel.overflowing = False
            elif outcome.status == "rejected" or final:
                self._remove_head(channel, notice)
                self.dropped += 1
                channel.head_attempts = 0
                lost = f"refused: {outcome.error}" if outcome.status == "rejected" else f"failed: {outcome.error}"
                if not notice.critical:
                    log_line = (logging.WARNING, "notification %s to %s dropped (%s)", (notice.kind, name, lost))
            else:
                channel.failures += 1
                channel.head_attempts += 1
                delay = self._retry.delay(channel.failures, outcome.retry_after)
                channel.not_before = now + delay
                if channel.head_attempts >= self._retry.max_attempts:
                    self._remove_head(channel, notice)
                    self.dropped += 1
                    channel.head_attempts = 0
                    lost = f"gave up after {self._retry.max_attempts} attempts, last: {outcome.error}"
                    if not notice.critical:
                        log_line = (logging.WARNING, "notification %s to %s dropped (%s)", (notice.kind, name, lost))
                else:
                    log_line = (logging.INFO, "notification %s to %s failed (%s); attempt %d of %d in %.0f s",
                                (notice.kind, name, outcome.error, channel.head_attempts + 1,
                                 self._retry.max_attempts, delay))
                    lost = None
        if log_line is not None:
            level, fmt_text, args = log_line
            logger.log(level, fmt_text, *args)
        if lost is not None and notice.critical:
            self._log_undelivered(channel.sender.name, notice, lost)

    @staticmethod
    def _remove_head(channel: _Channel, notice: Notice) -> None:
        if channel.queue and channel.queue[0] is notice:
            channel.queue.popleft()
        elif notice in channel.queue:
            channel.queue.remove(notice)

    @staticmethod
    def _log_undelivered(sender: str, notice: Notice, why: str) -> None:
        """The promise: a CRITICAL message that does not reach a person reaches the log, whole."""
        if notice.critical:
            logger.critical("CRITICAL notification NOT delivered to %s (%s): %s", sender, why, notice.text)

    # ---- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery thread (once)."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
            self._thread.start()
        logger.info("notifications on: %s", ", ".join(channel.sender.name for channel in self._channels))

    def _run(self) -> None:
        while True:
            # Cleared before the stop flag is read: a stop() in between is seen here or wakes the wait.
            self._wake.clear()
            with self._lock:
                stopping = self._stopping
            if stopping:
                self._drain_for_stop()
                return
            try:
                self.process_pending()
                due = self.next_due()
                now = self._clock.now()
            except Exception:  # noqa: BLE001 - the thread must outlive any surprise
                logger.exception("notifier pass failed")
                due, now = None, 0.0
            if due is None:
                timeout = IDLE_WAIT_SECONDS
            else:
                timeout = min(max(due - now, 0.0), MAX_WAIT_SECONDS)
            if timeout > 0:
                self._wake.wait(timeout)

    def _drain_for_stop(self) -> None:
        """On the way out: one attempt per queued message, no back-off, until stop() gives up."""
        for channel in self._channels:
            while True:
                with self._lock:
                    if self._closed or not channel.queue:
                        break
                    notice = channel.queue[0]
                    channel.in_flight = notice
                outcome = self._attempt(channel.sender, notice)
                self._settle(channel, notice, outcome, final=True)

    def stop(self, timeout: float | None = None) -> NotifierStats:
        """Deliver what can be delivered within ``timeout`` real seconds, then account for the
        rest in the log (a CRITICAL message's full text at CRITICAL). Returns the final counts."""
        if timeout is None:
            timeout = self._stop_seconds if self._stop_seconds is not None else STOP_DRAIN_SECONDS
        bound = max(float(timeout), 0.0)
        with self._lock:
            if self._closed:
                return NotifierStats(sent=self.sent, dropped=self.dropped, queued=0)
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(bound)
        with self._lock:
            self._closed = True
            leftovers = [(channel.sender.name, notice) for channel in self._channels for notice in channel.queue]
            for channel in self._channels:
                channel.queue.clear()
            self.dropped += len(leftovers)
            stats = NotifierStats(sent=self.sent, dropped=self.dropped, queued=0)
        for name, notice in leftovers:
            self._log_undelivered(name, notice, "not delivered before the notifier stopped")
        logger.log(logging.WARNING if stats.dropped else logging.INFO,
                   "notifications stopped: %d sent, %d dropped (%d of them still queued at the stop)",
                   stats.sent, stats.dropped, len(leftovers))
        for channel in self._channels:
            try:
                channel.sender.close()
            except Exception:  # noqa: BLE001 - closing a session is best effort
                pass
        return stats

    def stats(self) -> NotifierStats:
        with self._lock:
            return NotifierStats(sent=self.sent, dropped=self.dropped,
                                 queued=sum(len(channel.queue) for channel in self._channels))

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def __repr__(self) -> str:
        return (f"Notifier(senders=[{', '.join(channel.sender.name for channel in self._channels)}], "
                f"sent={self.sent}, dropped={self.dropped})")


def build_notifier(clock: Clock, *, telegram_bot_token: str | None, telegram_chat_id: str | None,
                   webhook_url: str | None, min_level: str = DEFAULT_MIN_LEVEL,
                   secrets: Iterable[str] = ()) -> Notifier | None:
    """The notifier of the configured senders, or None when none is configured (no thread then).

    ``secrets``: other secrets of the process (the API key and secret) that must never appear in
    a message either; they are redacted like the notifier's own.
    """
    pairs: list[tuple[str, str]] = [(secret, "<secret>") for secret in secrets if secret]
    if telegram_bot_token:
        pairs += telegram_secrets(telegram_bot_token)
    if webhook_url:
        pairs += webhook_secrets(webhook_url)
    redact = Redactor(pairs)
    senders: list[Sender] = []
    if telegram_bot_token and telegram_chat_id:
        senders.append(TelegramSender(telegram_bot_token, telegram_chat_id, redact=redact))
    if webhook_url:
        senders.append(WebhookSender(webhook_url, redact=redact))
    if not senders:
        return None
    return Notifier(senders, clock, redact=redact, min_level=min_level)


def describe_notifications(telegram_bot_token: str | None, telegram_chat_id: str | None,
                           webhook_url: str | None) -> str:
    """``telegram+webhook(https://host/…)``, or ``off``: safe for the start-up log."""
    parts = []
    if telegram_bot_token and telegram_chat_id:
        parts.append("telegram")
    if webhook_url:
        parts.append(f"webhook({mask_url(webhook_url)})")
    return "+".join(parts) or "off"
