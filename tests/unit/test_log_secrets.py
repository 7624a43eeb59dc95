"""No secret in trading.log, whatever the log level (audit of the monitor loop, 2026-12-07).

At ``LOG_LEVEL=DEBUG`` urllib3 logs each request's path, and a webhook's or a Telegram bot's path
carries its token. ``main.setup_logging`` keeps the HTTP libraries' loggers at WARNING and redacts
every configured secret from every line (tracebacks included).
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Iterator

import pytest

import main as main_module
import notifications
from clock import SimulatedClock
from config import load_settings
from notifications import Notifier, build_notifier

START = datetime(2026, 3, 3, 10, 0, tzinfo=timezone.utc).timestamp()
WEBHOOK_TOKEN = "xoxbWEBHOOKSECRET0123456789"
BOT_TOKEN = "123456789:AAEbotSECRETabcdefghijklmnopqrstuvw"


class Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def send_one_at_debug(tmp_path, notifier: Notifier) -> str:
    undo = main_module.setup_logging(tmp_path / "logs", "DEBUG", SimulatedClock(start=START))
    try:
        notifier.handle_alert({"level": "CRITICAL", "kind": "close_breaker", "message": "naked leg",
                               "time": "2026-03-03T10:00:00.000Z"})
        assert notifier.process_pending() == 1 and notifier.stats().sent == 1
        logging.getLogger("some.module").debug("debug lines are written")
    finally:
        undo()
    return (tmp_path / "logs" / "trading.log").read_text(encoding="utf-8")


def test_a_webhook_token_is_not_in_the_debug_log(tmp_path, endpoint):
    notifier = build_notifier(SimulatedClock(start=START), telegram_bot_token=None, telegram_chat_id=None,
                              webhook_url=f"{endpoint}/services/T000/{WEBHOOK_TOKEN}", min_level="CRITICAL")
    log = send_one_at_debug(tmp_path, notifier)
    assert "debug lines are written" in log and WEBHOOK_TOKEN not in log


def test_a_bot_token_is_not_in_the_debug_log(tmp_path, endpoint, monkeypatch):
    monkeypatch.setattr(notifications, "TELEGRAM_API", endpoint)   # Telegram's paths, on loopback
    notifier = build_notifier(SimulatedClock(start=START), telegram_bot_token=BOT_TOKEN, telegram_chat_id="42",
                              webhook_url=None, min_level="CRITICAL")
    log = send_one_at_debug(tmp_path, notifier)
    assert BOT_TOKEN.split(":", 1)[1] not in log


def test_the_library_loggers_get_their_level_back_on_undo(tmp_path):
    before = logging.getLogger("urllib3").level
    undo = main_module.setup_logging(tmp_path, "DEBUG", SimulatedClock(start=START))
    assert logging.getLogger("urllib3").level == logging.WARNING
    undo()
    assert logging.getLogger("urllib3").level == before


def test_every_configured_secret_is_redacted_from_any_line_and_traceback(tmp_path):
    settings = load_settings({"TRADING_ENVIRONMENT": "testnet", "COINCALL_API_KEY_TEST": "KEY-abcdef123456",
                              "COINCALL_API_SECRET_TEST": "SECRET-zyxw98765", "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
                              "TELEGRAM_CHAT_ID": "42", "NOTIFY_WEBHOOK_URL": f"https://hooks.example/{WEBHOOK_TOKEN}",
                              "DASHBOARD_ENABLED": "true", "DASHBOARD_TOKEN": "Q3v9Zr_k1XwLm0pT8sYbN2cE5hGa7dJu",
                              "STATE_DIR": str(tmp_path / "s"), "LOG_DIR": str(tmp_path / "l")}, dotenv_path=None)
    secrets = settings.secret_values()
    assert len(secrets) == 7          # the webhook's path alone and the bot token's secret half too
    undo = main_module.setup_logging(tmp_path / "logs", "INFO", SimulatedClock(start=START), secrets=secrets)
    try:
        log = logging.getLogger("some.module")
        log.info("signed with %s and %s", "KEY-abcdef123456", "SECRET-zyxw98765")
        try:
            raise ValueError(f"cannot post to https://hooks.example/{WEBHOOK_TOKEN}")
        except ValueError:
            log.exception("dashboard Q3v9Zr_k1XwLm0pT8sYbN2cE5hGa7dJu and bot %s", BOT_TOKEN)
    finally:
        undo()
    text = (tmp_path / "logs" / "trading.log").read_text(encoding="utf-8")
    assert "signed with <redacted> and <redacted>" in text and "ValueError: cannot post to" in text
    assert not [secret for secret in secrets if secret in text]


def test_a_webhook_token_quoted_with_the_port_added_is_redacted():
    """urllib3 writes ``url=http://host:80/path`` (the port added): the whole configured URL does
    not match, so the log redacts the path and query alone too, and a bot token's secret half."""
    url = f"https://hooks.example.com/services/{WEBHOOK_TOKEN}?key=q{WEBHOOK_TOKEN[::-1]}"
    settings = load_settings({"NOTIFY_WEBHOOK_URL": url, "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
                              "TELEGRAM_CHAT_ID": "42"}, dotenv_path=None)
    formatter = main_module.ClockFormatter(SimulatedClock(start=START), secrets=settings.secret_values())
    record = logging.LogRecord("urllib3.connectionpool", logging.WARNING, __file__, 1,
                               "Failed to parse headers (url=https://hooks.example.com:443/services/%s?key=q%s): x; "
                               "bot %s", (WEBHOOK_TOKEN, WEBHOOK_TOKEN[::-1], BOT_TOKEN.split(":", 1)[1]), None)
    line = formatter.format(record)
    assert WEBHOOK_TOKEN not in line and WEBHOOK_TOKEN[::-1] not in line
    assert BOT_TOKEN.split(":", 1)[1] not in line and "hooks.example.com:443" in line
