"""Settings of CoincallTrader, read from the process environment and a ``.env`` file.

Why a module of its own: every other module receives a ready ``Settings`` value and never
looks at the environment, so a test can build any configuration without touching
``os.environ``, and a bad configuration is refused once, at start-up, with one message
that names the variable, the bad value and the fix (BEHAVIOUR.md 7.5).

Nothing happens at import time: ``load_settings()`` reads the environment only when it is
called. The process environment wins over ``.env`` so that a one-off
``TRADING_ENVIRONMENT=testnet python main.py`` does what it says.

Secrets (API secrets) are never part of a repr, a log line or an error message; API keys
are shown masked (first four characters) together with the variable they came from.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Container, Mapping, TypeVar
from urllib.parse import urlparse

from dotenv import dotenv_values

from dashboard_security import bind_problem, token_weakness
from errors import ConfigError
from notifications import DEFAULT_MIN_LEVEL, NOTIFY_LEVELS, mask_url, telegram_secrets, webhook_secrets
from validation import closest

ENVIRONMENTS: tuple[str, ...] = ("sim", "testnet", "production")

# API.md section 1. Testnet may be overridden with COINCALL_BASE_URL (the docs also show
# a second beta host); production may too, but only over https.
DEFAULT_BASE_URLS: dict[str, str] = {
    "production": "https://api.coincall.com",
    "testnet": "https://betaapi.coincall.com",
}

# (key variable, secret variable) per environment. Keys are environment-specific on the
# exchange (code 10556), so each environment has its own pair and none falls back to another.
KEY_VARIABLES: dict[str, tuple[str, str]] = {
    "production": ("COINCALL_API_KEY_PROD", "COINCALL_API_SECRET_PROD"),
    "testnet": ("COINCALL_API_KEY_TEST", "COINCALL_API_SECRET_TEST"),
    "sim": ("COINCALL_API_KEY_SIM", "COINCALL_API_SECRET_SIM"),
}

LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The state store's file inside STATE_DIR: the daemon, the command line and `status` all
# open this one name, so it is defined once.
STATE_DB_NAME = "trader.db"
RFQ_BODY_ENCODINGS: tuple[str, ...] = ("form", "json")
# How the client reaches the embedded simulator: "wire" (HTTP over a loopback socket, what
# the daemon always uses) or "inprocess" (the same request pipeline called without a
# socket, for backtests; simulator/inprocess.py).
SIM_TRANSPORTS: tuple[str, ...] = ("wire", "inprocess")

# Every variable this module understands. A COINCALL_* name outside this set is almost
# certainly a typo (COINCALL_API_KEY_PRODUCTION...) and is refused rather than ignored.
KNOWN_VARIABLES: frozenset[str] = frozenset(
    {
        "TRADING_ENVIRONMENT",
        "COINCALL_BASE_URL",
        "COINCALL_TS_DIFF_MS",
        "COINCALL_TIMEOUT_SECONDS",
        "COINCALL_RFQ_BODY_ENCODING",
        "POLL_INTERVAL_SECONDS",
        "LOG_DIR",
        "STATE_DIR",
        "LOG_LEVEL",
        "SIM_SEED",
        "SIM_STATE_FILE",
        "CLIENT_ORDER_PREFIX",
        "EXCHANGE_OUTAGE_ALERT_SECONDS",
        "DASHBOARD_ENABLED",
        "DASHBOARD_HOST",
        "DASHBOARD_PORT",
        "DASHBOARD_TOKEN",
        "DASHBOARD_ALLOW_REMOTE",
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_CHAT_ID",
        "NOTIFY_WEBHOOK_URL",
        "NOTIFY_MIN_LEVEL",
        "CAPTURE_DIR",
        "CAPTURE_SECONDS",
        "EXCHANGE_OVERRIDES_FILE",
    }
    | {name for pair in KEY_VARIABLES.values() for name in pair}
)
CHECKED_PREFIX = "COINCALL_"
# Any other name this close to a known one (difflib ratio) is a typo, not somebody else's
# variable: POLL_INTERVAL_SECOND, LOGDIR, TRADING_ENVIROMENT. High enough that unrelated
# variables of the process environment (PATH, HOME, LOGNAME...) are never refused.
NEAR_MISS_CUTOFF = 0.9
# Shortest client timeout and poll interval: below a second a timeout fires on a healthy
# exchange and a poll loop hammers it (issue 9).
MIN_TIMEOUT_SECONDS = 1.0
MIN_POLL_INTERVAL_SECONDS = 1.0
# The dashboard (docs/DASHBOARD.md): off unless enabled, on the loopback interface unless a
# remote bind is allowed explicitly (it can close positions).
DEFAULT_DASHBOARD_HOST = "127.0.0.1"
DEFAULT_DASHBOARD_PORT = 8780
TRUE_WORDS: tuple[str, ...] = ("1", "true", "yes", "on")
FALSE_WORDS: tuple[str, ...] = ("0", "false", "no", "off")

# Notifications (docs/NOTIFICATIONS.md): what a bot token and a chat id look like. The token is
# checked without ever being echoed; the chat id is a number (negative for groups) or @channel.
TELEGRAM_TOKEN_PATTERN = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")
TELEGRAM_CHAT_PATTERN = re.compile(r"^(-?\d+|@[A-Za-z][A-Za-z0-9_]{3,})$")

# Payload capture by the daemon (capture.py, docs/DOCTOR.md): a window, never open-ended.
DEFAULT_CAPTURE_SECONDS = 600.0
MAX_CAPTURE_SECONDS = 86400.0
# The exchange override file doctor --orders writes (exchange_assumptions.py).
OVERRIDES_FILE_NAME = "exchange_overrides.json"
# Variables whose presence matters beyond their value: an explicit one wins over the override file.
EXPLICIT_TRACKED: tuple[str, ...] = ("COINCALL_TS_DIFF_MS", "COINCALL_RFQ_BODY_ENCODING")

T = TypeVar("T", int, float)   # a number setting: the comparisons below need one


# ---------------------------------------------------------------------------------------
# Credentials: defined here, not in the HTTP client, so configuration does not depend on it
# ---------------------------------------------------------------------------------------


def mask_key(api_key: str) -> str:
    """A recognisable but useless form of an API key for logs: at most its first 4 characters."""
    prefix = api_key[:4] if len(api_key) >= 12 else ""
    return f"{prefix}…({len(api_key)} chars)"


@dataclass(frozen=True, repr=False)
class Credentials:
    """An API key pair. ``source`` names where it came from (an env var name) for messages."""

    api_key: str
    api_secret: str = field(compare=False)
    source: str = ""

    def __post_init__(self) -> None:
        where = f" (set {self.source})" if self.source else ""
        if not isinstance(self.api_key, str) or not self.api_key.strip():
            raise ConfigError(f"Coincall API key is empty{where}")
        if not isinstance(self.api_secret, str) or not self.api_secret.strip():
            raise ConfigError(f"Coincall API secret is empty{where}")
        # A key is sent as a header and signs every request: a space or a control character (a
        # .env saved with Windows line ends leaves a \r) would fail in the HTTP library with the
        # header's value, the key itself, in its message. Refused here, naming neither value.
        for what, value in (("key", self.api_key), ("secret", self.api_secret)):
            if any(char.isspace() or not char.isprintable() for char in value):
                raise ConfigError(f"Coincall API {what} contains a space or a control character{where}: "
                                  f"copy it again without the line end or blanks (a .env saved with Windows line "
                                  f"ends leaves a carriage return)")

    def __repr__(self) -> str:
        return f"Credentials(api_key={mask_key(self.api_key)!r}, api_secret=<hidden>, source={self.source!r})"

    __str__ = __repr__


def describe_credentials(credentials: Credentials | None) -> str:
    """One safe phrase about where the key comes from; never the secret, the key masked."""
    if credentials is None:
        return "keys generated by the embedded simulator"
    source = credentials.source or "unnamed source"
    return f"key {mask_key(credentials.api_key)} from {source}"


@dataclass(frozen=True)
class Settings:
    """Everything the daemon needs to know about where and how to run.

    ``base_url`` is None exactly when the daemon embeds its own simulator (``sim`` without
    ``COINCALL_BASE_URL``); ``credentials`` is then None too, because the embedded
    simulator hands out its own key pair when it starts.
    """

    environment: str = "sim"
    base_url: str | None = None
    credentials: Credentials | None = field(default=None, repr=False)
    ts_diff_ms: int = 5000
    request_timeout_seconds: float = 30.0
    poll_interval_seconds: float = 10.0
    log_dir: Path = Path("logs")
    state_dir: Path = Path("state")
    log_level: str = "INFO"
    sim_seed: int = 7
    sim_state_file: Path = Path("state") / "simulator.json"
    client_order_prefix: int = 101
    rfq_body_encoding: str = "form"
    # An exchange unreachable this long raises the exchange_unreachable alert (issue 9).
    exchange_outage_alert_seconds: float = 120.0
    # A market scenario of the embedded simulator (simulator/scenarios.py). Set by a backtest's
    # --scenario, never read from the environment: a paper account keeps its own market.
    sim_scenario: str | None = None
    # "wire" or "inprocess" (SIM_TRANSPORTS). Set by a backtest, never read from the
    # environment: paper trading keeps exercising the real socket.
    sim_transport: str = "wire"
    # A recorded market (Tardis options_chain layout, docs/HISTORY.md) the embedded simulator
    # replays instead of its synthetic one. Set by a backtest's --market FILE, never read from
    # the environment.
    sim_history_file: Path | None = None
    # How often the embedded simulator's paper account is saved while running (None: only at
    # a clean stop). A backtest never resumes, so it saves only at the end.
    sim_checkpoint_seconds: float | None = 60.0
    # Backtests only (never from the environment): commits without an fsync each (a crash of
    # the process loses nothing, a power cut may), and no trades snapshot for people every
    # minute (the backtest writes trades.csv instead).
    durable_state: bool = True
    trades_snapshot_export: bool = True
    # The web dashboard (dashboard.py). The token is a secret: never in a repr or a log line.
    dashboard_enabled: bool = False
    dashboard_host: str = DEFAULT_DASHBOARD_HOST
    dashboard_port: int = DEFAULT_DASHBOARD_PORT
    dashboard_token: str | None = field(default=None, repr=False, compare=False)
    dashboard_allow_remote: bool = False
    # Notifications (notifications.py), all opt-in. The token and the webhook URL (which often
    # carries a token) are secrets: never in a repr or a log line.
    telegram_bot_token: str | None = field(default=None, repr=False, compare=False)
    telegram_chat_id: str | None = None
    notify_webhook_url: str | None = field(default=None, repr=False, compare=False)
    notify_min_level: str = DEFAULT_MIN_LEVEL
    # Payload capture (capture.py): the daemon writes the exchange's answers, redacted, into
    # this directory for ``capture_seconds`` after it starts (None: no capture).
    capture_dir: Path | None = None
    capture_seconds: float = DEFAULT_CAPTURE_SECONDS
    # The exchange override file (exchange_assumptions.py); None: <STATE_DIR>/exchange_overrides.json.
    exchange_overrides_file: Path | None = None
    # Which of EXPLICIT_TRACKED were set explicitly (environment or .env), not defaulted.
    explicit_settings: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self._check_dashboard()
        self._check_notifications()
        if self.sim_transport not in SIM_TRANSPORTS:
            raise ConfigError(f"sim_transport {self.sim_transport!r} is not a transport: use "
                              f"{' or '.join(SIM_TRANSPORTS)}")
        if self.sim_scenario is not None and self.sim_history_file is not None:
            raise ConfigError("a scenario and a recorded market cannot both shape the simulator: choose one")
        if self.sim_checkpoint_seconds is not None and not self.sim_checkpoint_seconds > 0:
            raise ConfigError(f"sim_checkpoint_seconds {self.sim_checkpoint_seconds!r} must be > 0 or None")

    def _check_dashboard(self) -> None:
        """An enabled dashboard needs a long token; a non-loopback bind needs the explicit setting.

        Refused here, at start-up and before any request, because the dashboard can close
        positions: a guessable token or an address reachable from the internet by mistake is
        not a warning, it is a configuration error (exit 2).
        """
        if not self.dashboard_enabled:
            return
        weakness = token_weakness(self.dashboard_token or "")
        if weakness is not None:
            raise ConfigError(f"DASHBOARD_ENABLED=true needs a strong DASHBOARD_TOKEN ({weakness}): generate one "
                              f"with `python -c \"import secrets; print(secrets.token_urlsafe(32))\"` and put it in "
                              f".env, or set DASHBOARD_ENABLED=false")
        problem = bind_problem(self.dashboard_host, self.dashboard_allow_remote)
        if problem is not None:
            raise ConfigError(f"DASHBOARD_HOST={self.dashboard_host!r} is refused: {problem}")

    def secret_values(self) -> list[str]:
        """Every secret these settings hold (API key and secret, dashboard token, bot token, webhook
        URL): the log redacts each of them, whatever logger a line comes from."""
        values = [self.dashboard_token]
        # The parts a library may quote alone: urllib3 writes a webhook's path and query (its
        # token) with the port added, so the whole URL never matches; a bot token's secret half.
        if self.telegram_bot_token:
            values += [secret for secret, _stand_in in telegram_secrets(self.telegram_bot_token)]
        if self.notify_webhook_url:
            values += [secret for secret, _stand_in in webhook_secrets(self.notify_webhook_url)]
        if self.credentials is not None:
            values += [self.credentials.api_key, self.credentials.api_secret]
        return [value for value in values if value]

    def describe_dashboard(self) -> str:
        """The dashboard's settings for the log: the token only as "set", never its value."""
        if not self.dashboard_enabled:
            return "dashboard=off"
        remote = " (remote bind allowed)" if self.dashboard_allow_remote else ""
        return f"dashboard=http://{self.dashboard_host}:{self.dashboard_port}{remote} token=<set>"

    def _check_notifications(self) -> None:
        """A bot token needs its chat (and the other way round); a webhook must be http(s).

        Refused at start-up rather than discovered at the first CRITICAL alert, when nobody
        would be told. The token and the URL are never part of the message.
        """
        token, chat = self.telegram_bot_token, self.telegram_chat_id
        if token and not chat:
            raise ConfigError("TELEGRAM_BOT_TOKEN is set but TELEGRAM_CHAT_ID is not: set TELEGRAM_CHAT_ID to the id "
                              "of the chat to notify (docs/NOTIFICATIONS.md says how to find it), or remove "
                              "TELEGRAM_BOT_TOKEN")
        if chat and not token:
            raise ConfigError("TELEGRAM_CHAT_ID is set but TELEGRAM_BOT_TOKEN is not: set TELEGRAM_BOT_TOKEN to the "
                              "token BotFather gave you (docs/NOTIFICATIONS.md), or remove TELEGRAM_CHAT_ID")
        if token and not TELEGRAM_TOKEN_PATTERN.match(token):
            raise ConfigError("TELEGRAM_BOT_TOKEN is not a bot token (the value is not shown): BotFather gives one "
                              "like 123456789:AAE…, digits, a colon, then 30-odd letters, digits, - and _; paste it "
                              "again without quotes or spaces")
        if chat and not TELEGRAM_CHAT_PATTERN.match(chat):
            raise ConfigError(f"TELEGRAM_CHAT_ID={chat!r} is not a chat id: use the number Telegram gives the chat "
                              f"(e.g. 123456789, or -100123456789 for a group) or @channelname")
        url = self.notify_webhook_url
        if url is not None:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ConfigError("NOTIFY_WEBHOOK_URL is not an http(s) URL (the value is not shown: it may hold a "
                                  "token): use a URL such as https://hooks.example.com/…, or remove it")
            try:
                port = parsed.port
            except ValueError:
                port = -1
            if port is not None and not 0 < port < 65536:
                raise ConfigError("NOTIFY_WEBHOOK_URL has no usable port (the value is not shown: it may hold a "
                                  "token): use a port from 1 to 65535, or leave the port out")
        if self.notify_min_level not in NOTIFY_LEVELS:
            raise ConfigError(f"NOTIFY_MIN_LEVEL={self.notify_min_level!r} is not valid: use {_or_list(NOTIFY_LEVELS)}")

    def describe_notifications(self) -> str:
        """Where notifications go, for the log: ``notify=telegram+webhook(https://host/…)`` or off."""
        targets = []
        if self.telegram_bot_token and self.telegram_chat_id:
            targets.append("telegram")
        if self.notify_webhook_url:
            targets.append(f"webhook({mask_url(self.notify_webhook_url)})")
        if not targets:
            return "notify=off"
        return f"notify={'+'.join(targets)} min_level={self.notify_min_level}"

    @property
    def is_sim(self) -> bool:
        return self.environment == "sim"

    @property
    def state_db_path(self) -> Path:
        """The state store's file: ``<STATE_DIR>/trader.db``."""
        return Path(self.state_dir) / STATE_DB_NAME

    @property
    def overrides_path(self) -> Path:
        """The exchange override file: EXCHANGE_OVERRIDES_FILE, else <STATE_DIR>/exchange_overrides.json."""
        if self.exchange_overrides_file is not None:
            return Path(self.exchange_overrides_file)
        return Path(self.state_dir) / OVERRIDES_FILE_NAME

    @property
    def embeds_simulator(self) -> bool:
        """True when ``open_exchange`` must start the simulator in-process."""
        return self.environment == "sim" and self.base_url is None

    def describe(self) -> str:
        """One line for the start-up log; safe to print (no secret, key masked)."""
        where = "embedded simulator" if self.base_url is None else self.base_url
        mode = " (PAPER TRADING)" if self.is_sim else ""
        return (
            f"environment={self.environment}{mode} exchange={where} "
            f"credentials=[{describe_credentials(self.credentials)}] "
            f"poll={self.poll_interval_seconds:g}s timeout={self.request_timeout_seconds:g}s "
            f"ts_diff={self.ts_diff_ms}ms log_dir={self.log_dir} state_dir={self.state_dir} "
            f"{self.describe_dashboard()} {self.describe_notifications()}"
        )

    def __repr__(self) -> str:
        # Written by hand so that a future field holding a secret cannot leak by default:
        # credentials are rendered through describe_credentials() only.
        return (
            f"Settings(environment={self.environment!r}, base_url={self.base_url!r}, "
            f"credentials={describe_credentials(self.credentials)!r}, ts_diff_ms={self.ts_diff_ms}, "
            f"request_timeout_seconds={self.request_timeout_seconds}, "
            f"poll_interval_seconds={self.poll_interval_seconds}, log_dir={str(self.log_dir)!r}, "
            f"state_dir={str(self.state_dir)!r}, log_level={self.log_level!r}, sim_seed={self.sim_seed}, "
            f"sim_state_file={str(self.sim_state_file)!r}, client_order_prefix={self.client_order_prefix}, "
            f"rfq_body_encoding={self.rfq_body_encoding!r}, dashboard_enabled={self.dashboard_enabled}, "
            f"dashboard_host={self.dashboard_host!r}, dashboard_port={self.dashboard_port}, dashboard_token="
            f"{'<hidden>' if self.dashboard_token else None}, dashboard_allow_remote={self.dashboard_allow_remote}, "
            f"notifications={self.describe_notifications()!r})"
        )

    __str__ = __repr__


# ---------------------------------------------------------------------------------------
# Reading the sources
# ---------------------------------------------------------------------------------------


def _read_dotenv(dotenv_path: str | os.PathLike[str] | None) -> dict[str, str]:
    """The ``.env`` file's values (missing file = nothing); never written into os.environ."""
    if dotenv_path is None or not Path(dotenv_path).is_file():
        return {}
    values = dotenv_values(dotenv_path)
    return {key: value for key, value in values.items() if value is not None}


def _merge_sources(env: Mapping[str, str], dotenv: Mapping[str, str]) -> dict[str, str]:
    """Process environment over ``.env``; blank values count as unset.

    Treating ``KEY=`` as unset matters because ``.env.example`` lists every variable with
    an empty value: a copied but unfilled line must behave like an absent one.
    """
    merged: dict[str, str] = {}
    for source in (dotenv, env):
        for key, value in source.items():
            if value is None:
                continue
            text = str(value).strip()
            if text:
                merged[key] = text
            else:
                merged.pop(key, None)
    return merged


def _reject_unknown(values: Mapping[str, str], from_file: Container[str] = ()) -> None:
    """Refuse a misspelled setting rather than silently running on its default.

    Every name in ``.env`` (``from_file``) must be known: that file is the daemon's own, and a
    misspelling there (``NOTIFY_WEBHOOK``, ``client_order_prefix``) would leave a safety
    setting at its default in silence. In the process environment, which holds plenty of
    variables that are not ours, every ``COINCALL_*`` name must be known, and any other name
    is refused when it is a known one in another case or a near miss (``NEAR_MISS_CUTOFF``).
    """
    for name in sorted(values):
        if name in KNOWN_VARIABLES:
            continue
        if name.upper() in KNOWN_VARIABLES:
            raise ConfigError(f"{name} is not a known setting: did you mean {name.upper()}? (names are upper case)")
        if name in from_file:
            close = closest(name.upper(), KNOWN_VARIABLES)
            hint = f"did you mean {close}?" if close is not None else "see .env.example for the known variables"
            raise ConfigError(f"{name} in .env is not a known setting: {hint} (rename it, or remove it)")
        if name.startswith(CHECKED_PREFIX):
            close = closest(name, KNOWN_VARIABLES)
            hint = f"did you mean {close}?" if close is not None else "see .env.example for the known variables"
            raise ConfigError(f"{name} is not a known setting: {hint} (remove or rename it)")
        near = closest(name, KNOWN_VARIABLES, cutoff=NEAR_MISS_CUTOFF)
        if near is not None:
            raise ConfigError(f"{name} is not a known setting: did you mean {near}? (rename it, or remove it "
                              f"to use the default)")


# ---------------------------------------------------------------------------------------
# Parsing single values: each error names the variable, the bad value and the fix.
# Their form is the one a shell line has, NAME='raw as written', rather than
# validation.invalid's "owner.field = value": a variable has no owner, and the value is
# text that has not been parsed into a Python value yet.
# ---------------------------------------------------------------------------------------


def _parse_number(
    values: Mapping[str, str],
    name: str,
    default: T,
    convert: Callable[[str], T],
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    kind: str,
) -> T:
    raw = values.get(name)
    if raw is None:
        return default
    try:
        value = convert(raw)
    except ValueError:
        value = None
    fix = f"use {kind}{_range_text(minimum, maximum, exclusive_minimum)}"
    if value is None or value != value or value in (float("inf"), float("-inf")):  # unparseable, NaN, infinity
        raise ConfigError(f"{name}={raw!r} is not valid: {fix}")
    too_low = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    too_high = maximum is not None and value > maximum
    if too_low or too_high:
        raise ConfigError(f"{name}={raw!r} is out of range: {fix}")
    return value


def _range_text(minimum: float | None, maximum: float | None, exclusive_minimum: bool) -> str:
    if minimum is not None and maximum is not None and not exclusive_minimum:
        return f" from {minimum:g} to {maximum:g}"
    parts = []
    if minimum is not None:
        parts.append(f"{'above' if exclusive_minimum else 'at least'} {minimum:g}")
    if maximum is not None:
        parts.append(f"at most {maximum:g}")
    return (" " + " and ".join(parts)) if parts else ""


def _parse_int_text(raw: str) -> int:
    # int("1e3") fails, int(float) would silently truncate: accept plain integers only.
    return int(raw, 10)


def _parse_choice(values: Mapping[str, str], name: str, default: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
    raw = values.get(name)
    if raw is None:
        return default
    candidate = raw.upper() if upper else raw.lower()
    if candidate not in choices:
        raise ConfigError(f"{name}={raw!r} is not valid: use {_or_list(choices)}")
    return candidate


def _parse_flag(values: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting: true/false, yes/no, on/off or 1/0 (any case)."""
    raw = values.get(name)
    if raw is None:
        return default
    word = raw.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}={raw!r} is not valid: use true or false")


def _or_list(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]


# Hosts of the real exchange: a simulator is never reached there, and testnet never trades on
# production's host (the environment's name decides the banners, the paper-trading label,
# ``doctor --orders`` and ``--speed``: it must say what the host is).
EXCHANGE_DOMAIN = "coincall.com"


def _parse_base_url(values: Mapping[str, str], environment: str) -> str | None:
    raw = values.get("COINCALL_BASE_URL")
    if raw is None:
        return DEFAULT_BASE_URLS.get(environment)
    parsed = urlparse(raw)
    if parsed.username is not None or parsed.password is not None:
        raise ConfigError("COINCALL_BASE_URL carries a user name or password (the value is not shown: it would "
                          "be printed in every banner and log line): remove the user@ part, or remove the variable")
    allowed = ("http", "https") if environment == "sim" else ("https",)
    example = "http://127.0.0.1:8765" if environment == "sim" else DEFAULT_BASE_URLS[environment]
    if parsed.scheme not in allowed or not parsed.netloc or not parsed.hostname:
        scheme_text = "an http(s) URL" if environment == "sim" else f"an https URL in {environment}"
        raise ConfigError(f"COINCALL_BASE_URL={raw!r} is not valid: use {scheme_text} such as {example}, or remove it")
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"COINCALL_BASE_URL={raw!r} has no usable port: use a port from 1 to 65535, as in "
                          f"{example}, or leave the port out")
    host = parsed.hostname.lower().rstrip(".")
    on_exchange = host == EXCHANGE_DOMAIN or host.endswith("." + EXCHANGE_DOMAIN)
    if environment == "sim" and on_exchange:
        raise ConfigError(f"COINCALL_BASE_URL={raw!r} is the real exchange, but TRADING_ENVIRONMENT is sim (paper "
                          f"trading): set TRADING_ENVIRONMENT=testnet or production with that environment's keys, "
                          f"or point COINCALL_BASE_URL at a simulator (`python -m simulator`), or remove it")
    production_host = urlparse(DEFAULT_BASE_URLS["production"]).hostname
    if environment == "testnet" and host == production_host:
        raise ConfigError(f"COINCALL_BASE_URL={raw!r} is the production exchange, but TRADING_ENVIRONMENT is "
                          f"testnet: use {DEFAULT_BASE_URLS['testnet']} (or remove COINCALL_BASE_URL), or set "
                          f"TRADING_ENVIRONMENT=production with production keys")
    return raw.rstrip("/")


def _read_credentials(values: Mapping[str, str], environment: str, *, reason: str) -> Credentials:
    key_var, secret_var = KEY_VARIABLES[environment]
    key, secret = values.get(key_var), values.get(secret_var)
    if key is None or secret is None:
        raise ConfigError(f"{reason} needs {key_var} and {secret_var}: {_credential_fix(environment)}")
    return Credentials(api_key=key, api_secret=secret, source=key_var)


def _credential_fix(environment: str) -> str:
    if environment == "sim":
        return (
            "start the simulator with `python -m simulator` and paste the three lines it prints into .env, "
            "or remove COINCALL_BASE_URL to use the embedded simulator"
        )
    return "add them to .env (see .env.example)"


# ---------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------


def load_settings(env: Mapping[str, str] | None = None, *, dotenv_path: str | os.PathLike[str] | None = ".env") -> Settings:
    """Build and validate ``Settings`` from ``env`` (default: the process environment) and ``.env``.

    ``env`` overrides the file. Raises ``ConfigError`` with a single message on the first
    invalid or missing value; never returns a half-valid configuration.
    """
    from_file = _read_dotenv(dotenv_path)
    values = _merge_sources(os.environ if env is None else env, from_file)
    _reject_unknown(values, from_file)

    environment = _parse_choice(values, "TRADING_ENVIRONMENT", "sim", ENVIRONMENTS)
    base_url = _parse_base_url(values, environment)
    credentials: Credentials | None = None
    if environment != "sim":
        credentials = _read_credentials(values, environment, reason=f"TRADING_ENVIRONMENT={environment}")
    elif base_url is not None:
        credentials = _read_credentials(values, "sim", reason="COINCALL_BASE_URL (an external simulator)")

    state_dir = Path(values.get("STATE_DIR", "state"))
    sim_state_file = Path(values["SIM_STATE_FILE"]) if "SIM_STATE_FILE" in values else state_dir / "simulator.json"

    return Settings(
        environment=environment,
        base_url=base_url,
        credentials=credentials,
        ts_diff_ms=_parse_number(
            values, "COINCALL_TS_DIFF_MS", 5000, _parse_int_text,
            minimum=100, maximum=60000, kind="a whole number of milliseconds",
        ),
        request_timeout_seconds=_parse_number(
            values, "COINCALL_TIMEOUT_SECONDS", 30.0, float,
            minimum=MIN_TIMEOUT_SECONDS, maximum=300, kind="a number of seconds (e.g. 30)",
        ),
        poll_interval_seconds=_parse_number(
            values, "POLL_INTERVAL_SECONDS", 10.0, float,
            minimum=MIN_POLL_INTERVAL_SECONDS, maximum=3600, kind="a number of seconds (e.g. 10)",
        ),
        log_dir=Path(values.get("LOG_DIR", "logs")),
        state_dir=state_dir,
        log_level=_parse_choice(values, "LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
        sim_seed=_parse_number(values, "SIM_SEED", 7, _parse_int_text, minimum=0, maximum=2**63 - 1, kind="a whole number"),
        sim_state_file=sim_state_file,
        client_order_prefix=_parse_number(
            values, "CLIENT_ORDER_PREFIX", 101, _parse_int_text, minimum=100, maximum=899, kind="a whole number",
        ),
        rfq_body_encoding=_parse_choice(values, "COINCALL_RFQ_BODY_ENCODING", "form", RFQ_BODY_ENCODINGS),
        exchange_outage_alert_seconds=_parse_number(
            values, "EXCHANGE_OUTAGE_ALERT_SECONDS", 120.0, float,
            minimum=1, maximum=86400, kind="a number of seconds (e.g. 120)",
        ),
        dashboard_enabled=_parse_flag(values, "DASHBOARD_ENABLED", False),
        dashboard_host=values.get("DASHBOARD_HOST", DEFAULT_DASHBOARD_HOST),
        dashboard_port=_parse_number(values, "DASHBOARD_PORT", DEFAULT_DASHBOARD_PORT, _parse_int_text,
                                     minimum=1, maximum=65535, kind="a TCP port number"),
        dashboard_token=values.get("DASHBOARD_TOKEN"),
        dashboard_allow_remote=_parse_flag(values, "DASHBOARD_ALLOW_REMOTE", False),
        telegram_bot_token=values.get("TELEGRAM_BOT_TOKEN"),
        telegram_chat_id=values.get("TELEGRAM_CHAT_ID"),
        notify_webhook_url=values.get("NOTIFY_WEBHOOK_URL"),
        notify_min_level=_parse_choice(values, "NOTIFY_MIN_LEVEL", DEFAULT_MIN_LEVEL, NOTIFY_LEVELS, upper=True),
        capture_dir=Path(values["CAPTURE_DIR"]) if "CAPTURE_DIR" in values else None,
        capture_seconds=_parse_number(values, "CAPTURE_SECONDS", DEFAULT_CAPTURE_SECONDS, float, minimum=1,
                                      maximum=MAX_CAPTURE_SECONDS, kind="a number of seconds (e.g. 600)"),
        exchange_overrides_file=(Path(values["EXCHANGE_OVERRIDES_FILE"]) if "EXCHANGE_OVERRIDES_FILE" in values
                                 else None),
        explicit_settings=frozenset(name for name in EXPLICIT_TRACKED if name in values),
    )


# ---------------------------------------------------------------------------------------
# Directories: usable before anything is opened (issue 9)
# ---------------------------------------------------------------------------------------


def directory_problem(path: Path, subject: str = "it") -> str | None:
    """Why ``path`` cannot serve as a directory we create and write in, or None when it can.

    Checked without side effects (nothing is created): a directory that exists must be a
    writable directory; one that does not exist needs its nearest existing ancestor to be a
    writable directory, since the daemon creates the rest. The answer is one phrase that fits
    in one line of an error message; ``subject`` is how it refers to ``path`` itself.
    """
    text = str(path)
    if "\0" in text:
        return "it contains a NUL character"
    if text.startswith("~"):
        return "it starts with '~', which is not expanded (a directory literally named '~' would be used)"
    current = path
    while True:
        problem, exists = _existing_directory_problem(current, subject if current == path else None)
        if problem is not None:
            return problem
        if exists:
            return None
        parent = current.parent
        if parent == current:  # a root that does not exist: nothing to create it in
            return f"{current} does not exist"
        current = parent


def _existing_directory_problem(path: Path, subject: str | None) -> tuple[str | None, bool]:
    """(problem, exists) for one step of the walk up; ``subject`` None means an ancestor."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"{path} is a broken symbolic link", True
        return None, False
    except NotADirectoryError:  # a file further up: the walk reaches it and names it
        return None, False
    except OSError as exc:
        return f"{path} cannot be inspected ({exc.strerror or exc})", True
    what = subject if subject is not None else f"its parent {path}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{what} is a file, not a directory", True
    if not os.access(path, os.W_OK | os.X_OK):
        action = "write in it" if subject is not None else "create the directory in it"
        return f"{what} is not writable by this user (cannot {action})", True
    return None, True


def check_directories(settings: Settings, *, embedded_state: bool) -> None:
    """Refuse an unusable ``STATE_DIR``, ``LOG_DIR`` (or ``SIM_STATE_FILE``) with one message.

    Runs before the lock, the log files, the store and the exchange are opened, so that a
    mistyped directory is a configuration error (exit 2) naming the variable, the value, the
    reason and the fix, never a traceback halfway through start-up. ``embedded_state``: the
    embedded simulator will write ``SIM_STATE_FILE``, so its directory is checked too.
    """
    checks: list[tuple[str, Path, Path]] = [("STATE_DIR", settings.state_dir, settings.state_dir),
                                            ("LOG_DIR", settings.log_dir, settings.log_dir)]
    if embedded_state:
        checks.append(("SIM_STATE_FILE", settings.sim_state_file, settings.sim_state_file.parent))
    for name, value, directory in checks:
        subject = f"its directory {directory}" if name == "SIM_STATE_FILE" else "it"
        problem = directory_problem(directory, subject)
        if problem is None and name == "SIM_STATE_FILE":
            problem = _file_problem(value)
        if problem is not None:
            target = "a file path in a writable directory" if name == "SIM_STATE_FILE" else "a writable directory"
            raise ConfigError(f"{name}={str(value)!r} is not usable: {problem}. Fix: set {name} to {target} "
                              f"(missing directories are created), or repair the path")
    log_file = settings.log_dir / "trading.log"
    problem = _file_problem(log_file)
    if problem is not None:
        raise ConfigError(f"LOG_DIR={str(settings.log_dir)!r} is not usable: {problem}. Fix: set LOG_DIR to "
                          f"another directory, or move {log_file} away")


def _file_problem(path: Path) -> str | None:
    """A file we will append to: absent, or a writable regular file."""
    if not os.path.lexists(path):
        return None
    if not os.path.isfile(path):
        return f"{path} exists and is not a regular file"
    if not os.access(path, os.W_OK):
        return f"{path} is not writable by this user"
    return None
