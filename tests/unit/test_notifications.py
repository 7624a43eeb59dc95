"""Notifications by Telegram and webhook (issue 12): what is sent, how it is retried, what is lost.

The HTTP edge is `responses`; the sender is driven by hand (`process_pending`) on a lock-step
simulated clock, so back-off and rate limits are asserted to the second without a real wait.
One test starts and stops the real thread.
"""
from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timezone

import pytest
import requests
import responses

from alerts import AlertSink
from app import build_context, settings_notifier
from clock import SimulatedClock, iso_utc
from config import load_settings
from errors import ConfigError
from events import EventJournal
from notifications import (
    Notice,
    Notifier,
    Redactor,
    RetryPolicy,
    TelegramSender,
    WebhookSender,
    build_notifier,
    mask_url,
    telegram_secrets,
    webhook_secrets,
)

START = datetime(2026, 3, 3, 10, 0, 0, tzinfo=timezone.utc).timestamp()
TOKEN = "123456789:AAFsecretTOKENsecretTOKEN_abc-123"
CHAT = "-1001234567"
WEBHOOK = "https://hooks.example.com/services/T00/B00/hookSECRETpath"
TELEGRAM_URL = f"https://api.telegram.org/bot{TOKEN}/sendMessage"
API_SECRET = "apiSECRETvalue0123456789"
SECRETS = (TOKEN, TOKEN.split(":", 1)[1], "hookSECRETpath", API_SECRET)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def make_notifier(clock, *, telegram: bool = True, webhook: bool = True, **options) -> Notifier:
    redact = Redactor([*telegram_secrets(TOKEN), *webhook_secrets(WEBHOOK), (API_SECRET, "<secret>")])
    senders = []
    if telegram:
        senders.append(TelegramSender(TOKEN, CHAT, redact=redact))
    if webhook:
        senders.append(WebhookSender(WEBHOOK, redact=redact))
    return Notifier(senders, clock, redact=redact, **options)


def ok(rsps) -> None:
    rsps.add(responses.POST, TELEGRAM_URL, json={"ok": True, "result": {}}, status=200)
    rsps.add(responses.POST, WEBHOOK, body="", status=204)


def telegram_bodies(rsps) -> list[dict]:
    return [json.loads(call.request.body) for call in rsps.calls if call.request.url == TELEGRAM_URL]


def webhook_bodies(rsps) -> list[dict]:
    return [json.loads(call.request.body) for call in rsps.calls if call.request.url == WEBHOOK]


LEGS = [{"symbol": "BTCUSD-4MAR26-70000-C", "side": "SELL", "qty": 0.01, "filled_qty": 0.01, "avg_fill_price": 120.456},
        {"symbol": "BTCUSD-4MAR26-60000-P", "side": "SELL", "qty": 0.01, "filled_qty": 0.01, "avg_fill_price": 95.1}]


# The keys trade_recorder.py writes on a trade's end (its docstring is the contract).
CLOSED_LEGS = [{"index": 0, "symbol": "BTCUSD-4MAR26-70000-C", "side": "BUY", "qty": 0.01, "filled_qty": 0.01,
                "avg_price": 120.456, "close_filled_qty": 0.01, "close_avg_price": 80.0},
               {"index": 1, "symbol": "BTCUSD-4MAR26-60000-P", "side": "BUY", "qty": 0.01, "filled_qty": 0.01,
                "avg_price": 95.1, "close_filled_qty": 0, "close_avg_price": None}]


def feed_opened(notifier, journal, alerts):
    journal.record("trade", {"trade_id": "T7", "strategy": "short_strangle", "event": "opened_notified", "state": "OPEN",
                             "legs": LEGS, "entry_premium": 2.15556, "opened_at": START})


def feed_closed(notifier, journal, alerts):
    journal.record("trade", {"trade_id": "T7", "strategy": "short_strangle", "event": "closed_notified",
                             "state": "CLOSED", "exit_reason": "profit_target", "realized_pnl": 1.234567,
                             "fees": 0.3333, "legs": CLOSED_LEGS})


def feed_failed(notifier, journal, alerts):
    journal.record("trade", {"trade_id": "T8", "strategy": "short_strangle", "event": "state", "state": "FAILED",
                             "previous": "UNWINDING", "failure_reason": "open incomplete; unwound",
                             "realized_pnl": -3.5, "fees": 0.4})


def feed_summary(notifier, journal, alerts):
    journal.record("daily_summary", {"date": "2026-03-03", "realized_pnl": -47.30412, "fees": 27.02333647,
                                     "trades_opened": 3, "trades_closed": 2, "trades_failed": 1, "unrealized_pnl_mark": 5.5,
                                     "equity": 99919.517847})


def feed_critical(notifier, journal, alerts):
    alerts.alert("CRITICAL", "persistence_failed", "trade T7: state write failed: disk full", trade_id="T7")


def feed_unreachable(notifier, journal, alerts):
    alerts.alert("CRITICAL", "exchange_unreachable", "Coincall unreachable for 121 s", outage_seconds=121.0)


def feed_recovered(notifier, journal, alerts):
    alerts.alert("WARNING", "exchange_recovered", "Coincall reachable again after an outage of 180 s")


def feed_started(notifier, journal, alerts):
    notifier.daemon_started("paper trading (sim); strategies: micro_strangle")


def feed_stopped(notifier, journal, alerts):
    notifier.daemon_stopped("SIGTERM")


@pytest.mark.parametrize(("feed", "kind", "level", "expected"), [
    (feed_opened, "trade_opened", "INFO",
     ["Trade opened: T7 (short_strangle)", "SELL 0.01 BTCUSD-4MAR26-70000-C, filled 0.01 @ 120.46",
      "Entry premium: 2.16 USD (credit)", "Opened at 2026-03-03 10:00:00 UTC"]),
    (feed_closed, "trade_closed", "INFO",
     ["Trade closed: T7 (short_strangle)", "Exit reason: profit_target", "Realized PnL: +1.23 USD", "Fees: 0.33 USD",
      "BUY 0.01 BTCUSD-4MAR26-70000-C, filled 0.01 @ 120.46, closed 0.01 @ 80.00",
      "BUY 0.01 BTCUSD-4MAR26-60000-P, filled 0.01 @ 95.10\n"]),
    (feed_failed, "trade_failed", "WARNING",
     ["Trade failed after fills (unwound): T8", "Reason: open incomplete; unwound", "Realized PnL: -3.50 USD"]),
    (feed_summary, "daily_summary", "INFO",
     ["Daily summary 2026-03-03 (UTC)", "Realized PnL: -47.30 USD", "Fees: 27.02 USD", "Equity: 99,919.52 USD",
      "Trades opened: 3", "Trades closed: 2", "Trades failed: 1", "Unrealized PnL (mark): +5.50 USD"]),
    (feed_critical, "persistence_failed", "CRITICAL",
     ["CRITICAL alert: persistence_failed", "trade T7: state write failed: disk full", "2026-03-03 10:00:00 UTC"]),
    (feed_unreachable, "exchange_unreachable", "CRITICAL", ["Exchange DOWN", "Coincall unreachable for 121 s"]),
    (feed_recovered, "exchange_recovered", "WARNING", ["Exchange back UP", "after an outage of 180 s"]),
    (feed_started, "daemon_started", "INFO", ["CoincallTrader started at 2026-03-03 10:00:00 UTC",
                                               "strategies: micro_strangle"]),
    (feed_stopped, "daemon_stopped", "INFO", ["CoincallTrader stopped at 2026-03-03 10:00:00 UTC: SIGTERM"]),
])
def test_every_event_kind_formats_and_sends_to_both_senders(clock, rsps, feed, kind, level, expected):
    ok(rsps)
    notifier = make_notifier(clock)
    alerts, journal = AlertSink(None, clock), EventJournal(clock)
    alerts.add_listener(lambda alert: notifier.handle_alert(alert.to_dict()))
    journal.add_listener(notifier.handle_event)

    feed(notifier, journal, alerts)
    assert notifier.process_pending() == 2

    [telegram] = telegram_bodies(rsps)
    [hook] = webhook_bodies(rsps)
    assert telegram["chat_id"] == CHAT
    for text in expected:
        assert text in telegram["text"]
    assert hook["kind"] == kind and hook["level"] == level and hook["text"] == telegram["text"]
    assert hook["time"] == iso_utc(START) and isinstance(hook["detail"], dict)
    assert "e+" not in telegram["text"] and "99919.517847" not in telegram["text"]   # figures for people
    assert notifier.stats().sent == 2 and notifier.stats().queued == 0


def test_events_that_are_not_news_send_nothing(clock, rsps):
    ok(rsps)
    notifier = make_notifier(clock)
    journal = EventJournal(clock)
    journal.add_listener(notifier.handle_event)
    for event, state in (("created", "PENDING_OPEN"), ("state", "OPEN"), ("state", "CLOSED"), ("close_requested", "OPEN")):
        journal.record("trade", {"trade_id": "T1", "strategy": "s", "event": event, "state": state})
    journal.record("trade", {"trade_id": "T2", "event": "state", "state": "FAILED", "fees": 0, "realized_pnl": 0})
    journal.record("order", {"client_order_id": 1, "status": "FILLED"})
    alerts = AlertSink(None, clock)
    alerts.add_listener(lambda alert: notifier.handle_alert(alert.to_dict()))
    alerts.alert("WARNING", "open_failed", "trade T1 failed to open")   # below the default CRITICAL
    assert notifier.process_pending() == 0 and len(rsps.calls) == 0


def test_a_lower_minimum_level_sends_warnings_too(clock, rsps):
    ok(rsps)
    notifier = make_notifier(clock, telegram=False, min_level="WARNING")
    notifier.handle_alert({"time": iso_utc(START), "level": "WARNING", "kind": "open_failed", "message": "m"})
    notifier.handle_alert({"time": iso_utc(START), "level": "INFO", "kind": "note", "message": "m"})
    assert notifier.process_pending() == 1
    assert [body["kind"] for body in webhook_bodies(rsps)] == ["open_failed"]


def test_missing_keys_are_left_out_not_invented(clock, rsps):
    ok(rsps)
    notifier = make_notifier(clock, webhook=False)
    notifier.handle_event("trade", {"trade_id": "T9", "event": "closed_notified"})
    notifier.handle_event("daily_summary", {})
    notifier.process_pending()
    clock.advance(1)
    notifier.process_pending()
    closed, summary = (body["text"] for body in telegram_bodies(rsps))
    assert closed.startswith("Trade closed: T9") and "PnL" not in closed and "n/a" not in closed
    assert summary == "Daily summary 2026-03-03 (UTC)"


def test_a_failed_send_is_retried_with_exponential_back_off_then_succeeds(clock, rsps, caplog):
    caplog.set_level(logging.INFO, logger="notifications")
    rsps.add(responses.POST, WEBHOOK, status=502)
    rsps.add(responses.POST, WEBHOOK, status=503)
    rsps.add(responses.POST, WEBHOOK, status=200)
    notifier = make_notifier(clock, telegram=False)
    notifier.daemon_started("x")

    assert notifier.process_pending() == 1                 # 502
    assert notifier.next_due() == START + 2
    assert notifier.process_pending() == 0                 # backing off: nothing is sent early
    clock.advance(1.9)
    assert notifier.process_pending() == 0
    clock.advance(0.1)
    assert notifier.process_pending() == 1                 # 503: the wait doubles
    assert notifier.next_due() == START + 2 + 4
    clock.advance(4)
    assert notifier.process_pending() == 1                 # 200
    assert notifier.stats().sent == 1 and notifier.stats().dropped == 0 and len(rsps.calls) == 3
    assert "attempt 2 of 6 in 2 s" in caplog.text and "attempt 3 of 6 in 4 s" in caplog.text


def test_back_off_is_capped():
    policy = RetryPolicy(base_seconds=2, cap_seconds=60)
    assert [policy.delay(n, None) for n in (1, 2, 3, 4, 5, 6, 7)] == [2, 4, 8, 16, 32, 60, 60]
    assert policy.delay(1, 9999) == policy.retry_after_cap_seconds


def test_a_429_is_retried_after_what_telegram_and_the_webhook_say(clock, rsps):
    rsps.add(responses.POST, TELEGRAM_URL, status=429,
             json={"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 17",
                   "parameters": {"retry_after": 17}})
    rsps.add(responses.POST, TELEGRAM_URL, json={"ok": True}, status=200)
    rsps.add(responses.POST, WEBHOOK, status=429, headers={"Retry-After": "9"})
    rsps.add(responses.POST, WEBHOOK, status=200)
    notifier = make_notifier(clock)
    notifier.daemon_stopped("SIGINT")
    assert notifier.process_pending() == 2
    clock.advance(8.9)
    assert notifier.process_pending() == 0
    clock.advance(0.1)
    assert notifier.process_pending() == 1                 # the webhook, after its 9 s
    clock.advance(7.9)
    assert notifier.process_pending() == 0
    clock.advance(0.1)
    assert notifier.process_pending() == 1                 # Telegram, after its 17 s
    assert notifier.stats().sent == 2


def test_the_rate_limit_holds_each_sender_to_its_budget(clock, rsps):
    ok(rsps)
    notifier = make_notifier(clock, capacity=100)
    for number in range(30):
        notifier.daemon_stopped(f"reason {number}")
    sent_in_first_minute = {"telegram": 0, "webhook": 0}
    # A pass every quarter second for one minute: the webhook may send 20 at once, Telegram one a second.
    for _ in range(240):
        before = len(telegram_bodies(rsps)), len(webhook_bodies(rsps))
        notifier.process_pending()
        sent_in_first_minute["telegram"] += len(telegram_bodies(rsps)) - before[0]
        sent_in_first_minute["webhook"] += len(webhook_bodies(rsps)) - before[1]
        if clock.now() < START + 59.75:
            clock.advance(0.25)
    assert sent_in_first_minute == {"telegram": 20, "webhook": 20}
    assert len(telegram_bodies(rsps)) == 20 and len(webhook_bodies(rsps)) == 20
    clock.advance(60)
    for _ in range(20):
        notifier.process_pending()
        clock.advance(1)
    assert notifier.stats().sent == 60 and notifier.stats().queued == 0


def test_telegram_sends_at_most_one_message_a_second(clock, rsps):
    ok(rsps)
    notifier = make_notifier(clock, webhook=False)
    notifier.daemon_started("a")
    notifier.daemon_started("b")
    assert notifier.process_pending() == 1
    assert notifier.process_pending() == 0 and notifier.next_due() == START + 1
    clock.advance(1)
    assert notifier.process_pending() == 1


def test_a_full_queue_drops_the_oldest_non_critical_with_one_log_line(clock, rsps, caplog):
    caplog.set_level(logging.INFO, logger="notifications")
    notifier = make_notifier(clock, telegram=False, capacity=5)
    notifier.handle_alert({"time": iso_utc(START), "level": "CRITICAL", "kind": "kept", "message": "keep me"})
    for number in range(12):
        notifier.daemon_stopped(f"message {number}")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "queue full (5)" in warnings[0].getMessage()
    stats = notifier.stats()
    assert stats.queued == 5 and stats.dropped == 8
    ok(rsps)
    for _ in range(5):
        notifier.process_pending()
    texts = [body["text"] for body in webhook_bodies(rsps)]
    assert "keep me" in texts[0]                                        # the critical one survived
    assert [text.rsplit(": ", 1)[1] for text in texts[1:]] == [f"message {n}" for n in range(8, 12)]


def test_a_critical_alert_does_not_wait_behind_the_retries_of_a_trade_notice(clock, rsps):
    rsps.add(responses.POST, WEBHOOK, status=429, headers={"Retry-After": "600"})   # the first attempt
    rsps.add(responses.POST, WEBHOOK, body="", status=204)
    notifier = make_notifier(clock, telegram=False)
    notifier.daemon_stopped("a trade notice, say")
    assert notifier.process_pending() == 1                          # 429: retried in 600 s
    notifier.handle_alert({"time": iso_utc(START), "level": "CRITICAL", "kind": "close_breaker",
                           "message": "naked leg on T9"})
    clock.set_time(notifier.next_due() or clock.now())
    notifier.process_pending()
    texts = [body["text"] for body in webhook_bodies(rsps)]
    assert len(texts) == 2 and "naked leg on T9" in texts[1]        # the critical one went next
    clock.advance(5)
    notifier.process_pending()
    assert "a trade notice, say" in webhook_bodies(rsps)[2]["text"] and notifier.stats().queued == 0


def test_a_queue_full_of_criticals_logs_the_one_it_drops_at_critical(clock, caplog):
    caplog.set_level(logging.INFO, logger="notifications")
    notifier = make_notifier(clock, telegram=False, capacity=2)
    for number in range(3):
        notifier.handle_alert({"time": iso_utc(START), "level": "CRITICAL", "kind": "k", "message": f"critical {number}"})
    [lost] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "NOT delivered" in lost.getMessage() and "critical 0" in lost.getMessage()


def test_a_critical_alert_that_cannot_be_sent_is_logged_at_critical_with_its_text(clock, rsps, caplog):
    caplog.set_level(logging.INFO, logger="notifications")
    rsps.add(responses.POST, WEBHOOK, status=500)
    rsps.add(responses.POST, TELEGRAM_URL, status=401, json={"ok": False, "description": "Unauthorized"})
    notifier = make_notifier(clock)
    text = "trade T7: state write failed: disk full; exits go on, entries paused"
    notifier.handle_alert({"time": iso_utc(START), "level": "CRITICAL", "kind": "persistence_failed", "message": text})
    notifier.process_pending()                      # Telegram refuses at once: no retry can help
    refused = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(refused) == 1 and "telegram" in refused[0] and "HTTP 401: Unauthorized" in refused[0]
    assert text in refused[0]
    for _ in range(10):                             # the webhook: six attempts, then given up
        due = notifier.next_due()
        if due is None:
            break
        clock.set_time(max(due, clock.now()))
        notifier.process_pending()
    assert len(webhook_bodies(rsps)) == 6
    lost = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(lost) == 2 and "webhook" in lost[1] and "gave up after 6 attempts" in lost[1] and text in lost[1]
    assert notifier.stats().dropped == 2


def test_a_critical_still_queued_at_the_stop_is_logged_at_critical(clock, rsps, caplog):
    caplog.set_level(logging.INFO, logger="notifications")
    rsps.add(responses.POST, WEBHOOK, status=500)
    notifier = make_notifier(clock, telegram=False)
    notifier.handle_alert({"time": iso_utc(START), "level": "CRITICAL", "kind": "k", "message": "the whole text"})
    notifier.process_pending()                      # fails; backing off
    stats = notifier.stop(timeout=1)                # never started: nothing more is attempted
    assert stats.dropped == 1 and stats.sent == 0
    [lost] = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "the whole text" in lost
    assert "notifications stopped: 0 sent, 1 dropped" in caplog.text


def test_no_secret_in_messages_logs_errors_or_reprs(clock, rsps, caplog):
    caplog.set_level(logging.DEBUG)
    rsps.add(responses.POST, TELEGRAM_URL,
             body=requests.exceptions.ConnectionError(f"Max retries exceeded with url: /bot{TOKEN}/sendMessage"))
    rsps.add(responses.POST, TELEGRAM_URL, json={"ok": True}, status=200)
    rsps.add(responses.POST, WEBHOOK,
             body=requests.exceptions.ConnectionError(f"connection to {WEBHOOK} refused"))
    rsps.add(responses.POST, WEBHOOK, status=200)
    notifier = make_notifier(clock)
    notifier.handle_alert({"time": iso_utc(START), "level": "CRITICAL", "kind": "leak",
                           "message": f"key check failed with secret {API_SECRET} at {WEBHOOK}",
                           "detail": {"token": TOKEN, "nested": [API_SECRET]}})
    notifier.process_pending()
    clock.advance(2)
    notifier.process_pending()
    sent = json.dumps(telegram_bodies(rsps), ensure_ascii=False) + json.dumps(webhook_bodies(rsps), ensure_ascii=False)
    assert len(telegram_bodies(rsps)) == 2 and "<secret>" in sent and "hooks.example.com/…" in sent
    everything = sent + caplog.text + repr(notifier) + repr(notifier._channels) + repr(Redactor([(TOKEN, "x")]))
    for secret in SECRETS:
        assert secret not in everything
    assert "ConnectionError" in caplog.text          # the error is still told, redacted


def test_settings_never_show_the_token_or_the_webhook_path():
    settings = load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": CHAT, "NOTIFY_WEBHOOK_URL": WEBHOOK},
                             dotenv_path=None)
    assert settings.telegram_bot_token == TOKEN and settings.notify_webhook_url == WEBHOOK
    shown = repr(settings) + str(settings) + settings.describe()
    assert "notify=telegram+webhook(https://hooks.example.com/…)" in settings.describe()
    for secret in SECRETS:
        assert secret not in shown
    assert mask_url("https://user:pw@host.example:8443/a/b?token=x") == "https://host.example:8443/…"


@pytest.mark.parametrize(("env", "names"), [
    ({"TELEGRAM_BOT_TOKEN": TOKEN}, ["TELEGRAM_BOT_TOKEN is set but TELEGRAM_CHAT_ID is not", "set TELEGRAM_CHAT_ID"]),
    ({"TELEGRAM_CHAT_ID": CHAT}, ["TELEGRAM_CHAT_ID is set but TELEGRAM_BOT_TOKEN is not", "BotFather"]),
    ({"TELEGRAM_BOT_TOKEN": "not-a-token-but-long-enough", "TELEGRAM_CHAT_ID": CHAT},
     ["TELEGRAM_BOT_TOKEN is not a bot token", "paste it again"]),
    ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "my chat"}, ["TELEGRAM_CHAT_ID='my chat' is not a chat id"]),
    ({"NOTIFY_WEBHOOK_URL": "ftp://hooks.example.com/hookSECRETpath"},
     ["NOTIFY_WEBHOOK_URL is not an http(s) URL", "or remove it"]),
    ({"NOTIFY_WEBHOOK_URL": "hooks.example.com/hookSECRETpath"}, ["NOTIFY_WEBHOOK_URL is not an http(s) URL"]),
    ({"NOTIFY_MIN_LEVEL": "loud"}, ["NOTIFY_MIN_LEVEL='loud' is not valid", "CRITICAL"]),
])
def test_settings_refuse_an_incomplete_or_malformed_notification_setup(env, names):
    with pytest.raises(ConfigError) as refused:
        load_settings(env, dotenv_path=None)
    message = str(refused.value)
    for name in names:
        assert name in message
    for secret in (*SECRETS, "not-a-token-but-long-enough"):
        assert secret not in message


def test_settings_default_to_no_notifications_and_accept_a_full_setup(clock):
    plain = load_settings({}, dotenv_path=None)
    assert plain.telegram_bot_token is None and plain.notify_webhook_url is None
    assert plain.notify_min_level == "CRITICAL" and "notify=off" in plain.describe()
    assert settings_notifier(plain, clock) is None                       # nothing configured: no notifier
    full = load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "@ops_channel",
                          "NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9000/hook", "NOTIFY_MIN_LEVEL": "warning"},
                         dotenv_path=None)
    assert full.notify_min_level == "WARNING" and full.telegram_chat_id == "@ops_channel"
    notifier = settings_notifier(full, clock)
    assert notifier is not None and not notifier.running                # built, not started
    assert repr(notifier) == "Notifier(senders=[telegram, webhook], sent=0, dropped=0)"
    only_hook = build_notifier(clock, telegram_bot_token=None, telegram_chat_id=None, webhook_url=WEBHOOK)
    assert only_hook is not None and "telegram" not in repr(only_hook)


def test_a_backtest_never_notifies_even_with_the_variables_in_the_environment(tmp_path, monkeypatch, clock):
    from backtest import backtest_settings

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", CHAT)
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", WEBHOOK)
    (tmp_path / ".env").write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nTELEGRAM_CHAT_ID={CHAT}\n")
    monkeypatch.chdir(tmp_path)
    settings = backtest_settings(tmp_path / "out", seed=1, poll=10)
    assert settings.telegram_bot_token is None and settings.notify_webhook_url is None
    assert settings_notifier(settings, clock) is None


def test_the_alert_sink_tells_its_listeners_after_writing_and_never_raises(tmp_path, clock, caplog):
    sink = AlertSink(tmp_path, clock)
    seen = []

    def listener(alert):
        seen.append((alert.kind, (tmp_path / "alerts.log").read_text().count("\n")))

    def broken(alert):
        raise RuntimeError("listener bug")

    sink.add_listener(broken)
    sink.add_listener(listener)
    record = sink.alert("CRITICAL", "k", "m")
    assert record is not None and seen == [("k", 1)]                 # after the line was written
    assert "alert listener failed on k: listener bug" in caplog.text


def test_the_journal_tells_its_listeners_after_writing_and_never_raises(tmp_path, clock, caplog):
    journal = EventJournal(clock, log_dir=tmp_path)
    seen = []
    journal.add_listener(lambda kind, payload: (_ for _ in ()).throw(RuntimeError("listener bug")))
    journal.add_listener(lambda kind, payload: seen.append((kind, dict(payload),
                                                            (tmp_path / "events.jsonl").exists())))
    journal.record("trade", {"trade_id": "T1", "event": "opened_notified"})
    assert seen == [("trade", {"trade_id": "T1", "event": "opened_notified"}, True)]
    assert "event listener failed on trade: listener bug" in caplog.text


def test_the_thread_delivers_and_stops(clock, rsps, caplog):
    caplog.set_level(logging.INFO, logger="notifications")
    delivered = threading.Event()

    def answer(request):
        delivered.set()
        return 200, {}, json.dumps({"ok": True})

    rsps.add_callback(responses.POST, TELEGRAM_URL, callback=answer)
    notifier = make_notifier(clock, webhook=False)
    notifier.start()
    assert notifier.running
    notifier.daemon_started("threaded")
    assert delivered.wait(10)
    stats = notifier.stop(timeout=10)
    assert not notifier.running
    assert stats.sent == 1 and stats.dropped == 0
    assert "notifications stopped: 1 sent, 0 dropped" in caplog.text
    notifier.daemon_stopped("after the stop")        # too late: logged, never raises
    assert notifier.stats().queued == 0


def test_stop_gives_up_on_a_hanging_endpoint_in_bounded_time_and_logs_the_critical(clock, rsps, caplog):
    caplog.set_level(logging.INFO, logger="notifications")
    entered, release = threading.Event(), threading.Event()

    def hang(request):
        entered.set()
        release.wait(30)
        return 200, {}, json.dumps({"ok": True})

    rsps.add_callback(responses.POST, TELEGRAM_URL, callback=hang)
    notifier = make_notifier(clock, webhook=False)
    notifier.start()
    notifier.handle_alert({"time": iso_utc(START), "level": "CRITICAL", "kind": "k", "message": "stuck critical"})
    try:
        assert entered.wait(10)
        stats = notifier.stop(timeout=0.2)
        assert stats.dropped == 1
        [lost] = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
        assert "stuck critical" in lost and "before the notifier stopped" in lost
    finally:
        release.set()


def test_build_context_subscribes_the_notifier_to_alerts_and_the_journal(sim, tmp_path, rsps):
    settings = load_settings({"TRADING_ENVIRONMENT": "sim", "COINCALL_BASE_URL": sim.base_url,
                              "COINCALL_API_KEY_SIM": sim.api_key, "COINCALL_API_SECRET_SIM": sim.api_secret,
                              "STATE_DIR": str(tmp_path / "state"), "LOG_DIR": str(tmp_path / "logs"),
                              "NOTIFY_WEBHOOK_URL": WEBHOOK}, dotenv_path=None)
    rsps.add_passthru("http://127.0.0.1")                                  # the simulator itself
    ctx = build_context(settings, clock=sim.clock, state_dir=tmp_path / "state", log_dir=tmp_path / "logs")
    try:
        notifier = ctx.notifier
        assert notifier is not None and not notifier.running           # build_context starts no thread
        ctx.alerts.alert("CRITICAL", "state_quarantined", f"moved away; secret {sim.api_secret}")
        ctx.lifecycle_manager.recorder.journal("daily_summary", {"date": "2026-03-03", "realized_pnl": 1})
        rsps.add(responses.POST, WEBHOOK, status=200)
        notifier.process_pending()
        sim.clock.advance(1)
        notifier.process_pending()
        kinds = [body["kind"] for body in webhook_bodies(rsps)]
        assert kinds == ["state_quarantined", "daily_summary"]
        assert sim.api_secret not in json.dumps(webhook_bodies(rsps))  # the API secret is redacted too
    finally:
        ctx.close()
        if ctx.notifier is not None:
            ctx.notifier.stop(timeout=0)


def test_notice_payload_is_the_webhook_body():
    notice = Notice("k", "INFO", iso_utc(START), "text", {"a": 1})
    assert notice.payload() == {"kind": "k", "level": "INFO", "time": iso_utc(START), "text": "text",
                                "detail": {"a": 1}}
