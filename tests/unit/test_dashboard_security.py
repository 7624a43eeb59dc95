"""The dashboard's security, against a real server on 127.0.0.1 (``requests``, no browser).

Issue 12's acceptance: no token -> 401; a wrong token repeatedly -> locked out (on the
injected clock, no sleep); a state-changing request without the CSRF token -> 403 and
nothing queued; a non-loopback bind without the explicit setting -> exit 2 before any
request; the token never appears in a page, an API answer, a log line or a repr.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import requests

import main as main_module
from clock import SimulatedClock
from config import load_settings
from dashboard import DashboardConfig, DashboardError, DashboardServer
from dashboard_security import (
    DashboardGuard,
    bind_problem,
    host_allowed,
    is_loopback,
    same_origin,
    token_weakness,
)
from errors import ConfigError
from persistence import StateStore
from tests.browser.sample_view import START, FakeLog, FakeView, sample_view

TOKEN = "s3cret-dashboard-token-0123456789"


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "trader.db"
    StateStore(path).close()
    return path


@pytest.fixture
def server(clock, db_path):
    dashboard = DashboardServer(DashboardConfig("127.0.0.1", 0, TOKEN), clock, FakeView(sample_view()), FakeLog(),
                                db_path)
    dashboard.start()
    yield dashboard
    dashboard.stop()


def commands(db_path: Path) -> list[dict]:
    with StateStore(db_path) as store:
        return store.commands()


def login(server: DashboardServer, token: str = TOKEN) -> requests.Session:
    session = requests.Session()
    answer = session.post(server.url + "/login", data={"token": token}, allow_redirects=False)
    assert answer.status_code == 303, answer.text
    return session


def csrf_of(session: requests.Session, server: DashboardServer, page: str = "/strategies") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', session.get(server.url + page).text)
    assert found is not None
    return found.group(1)


# ------------------------------------------------------------------------------------- 401 without a token


@pytest.mark.parametrize("path", ["/", "/strategies", "/trades", "/orders", "/alerts", "/kill", "/kill/confirm",
                                  "/api/view", "/api/strategies", "/api/trades", "/api/orders", "/api/positions",
                                  "/api/alerts", "/api/health", "/api/log"])
def test_without_a_token_every_page_and_api_answers_401(server, path):
    answer = requests.get(server.url + path, allow_redirects=False)
    assert answer.status_code == 401
    assert "alpha" not in answer.text and "99,919" not in answer.text  # nothing of the view leaks


def test_a_wrong_bearer_token_is_401_and_the_right_one_reads_the_api(server):
    assert requests.get(server.url + "/api/view", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert requests.get(server.url + "/api/view", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    answer = requests.get(server.url + "/api/view", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.json()["account"]["equity"] == 99_919.52


def test_a_wrong_login_is_401_and_sets_no_cookie(server):
    answer = requests.post(server.url + "/login", data={"token": "not-the-token"}, allow_redirects=False)
    assert answer.status_code == 401 and "wrong token" in answer.text and "Set-Cookie" not in answer.headers


# ------------------------------------------------------------------------------------- lock-out


def test_repeated_wrong_tokens_lock_the_address_out_on_the_injected_clock(server, clock):
    for _ in range(4):
        assert requests.post(server.url + "/login", data={"token": "guess"}).status_code == 401
    locked = requests.post(server.url + "/login", data={"token": "guess"})
    assert locked.status_code == 429 and "locked out for 15 more minute(s)" in locked.text
    # Locked: even the right token and the bearer API are refused, and nothing was compared.
    assert requests.post(server.url + "/login", data={"token": TOKEN}, allow_redirects=False).status_code == 429
    api = requests.get(server.url + "/api/view", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.status_code == 429 and int(api.headers["Retry-After"]) > 800
    clock.advance(14 * 60)
    assert requests.post(server.url + "/login", data={"token": TOKEN}, allow_redirects=False).status_code == 429
    clock.advance(61)
    assert requests.post(server.url + "/login", data={"token": TOKEN}, allow_redirects=False).status_code == 303


def test_failures_outside_the_window_do_not_add_up(clock):
    guard = DashboardGuard(TOKEN, clock)
    for _ in range(4):
        assert not guard.check_token("10.0.0.1", "guess").ok
    clock.advance(16 * 60)   # the window is 15 minutes
    for _ in range(4):
        result = guard.check_token("10.0.0.1", "guess")
        assert not result.ok and not result.locked
    assert guard.check_token("10.0.0.1", "guess").locked
    assert guard.check_token("10.0.0.2", TOKEN).ok  # per address: another client is not locked


def test_a_good_login_clears_the_failures(clock):
    guard = DashboardGuard(TOKEN, clock)
    for _ in range(4):
        guard.check_token("c", "guess")
    assert guard.check_token("c", TOKEN).ok
    for _ in range(4):
        assert not guard.check_token("c", "guess").locked


def test_the_guard_refuses_a_short_token(clock):
    with pytest.raises(ValueError):
        DashboardGuard("short", clock)


# ------------------------------------------------------------------------------------- sessions and CSRF


def test_the_session_cookie_is_httponly_samesite_strict_and_expires(server, clock):
    answer = requests.post(server.url + "/login", data={"token": TOKEN}, allow_redirects=False)
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie and "Max-Age=43200" in cookie
    assert TOKEN not in cookie
    session = requests.Session()
    session.cookies.update(answer.cookies)
    assert session.get(server.url + "/").status_code == 200
    clock.advance(12 * 3600 + 1)
    assert session.get(server.url + "/", allow_redirects=False).status_code == 401


def test_logout_ends_the_session(server):
    session = login(server)
    csrf = csrf_of(session, server)
    assert session.post(server.url + "/logout", data={"csrf_token": csrf}, allow_redirects=False).status_code == 303
    assert session.get(server.url + "/", allow_redirects=False).status_code == 401


def test_a_post_without_the_csrf_token_is_refused_and_queues_nothing(server, db_path):
    session = login(server)
    for path, form in (("/control/pause", {"strategy": "alpha"}), ("/control/resume", {"strategy": "alpha"}),
                       ("/kill/arm", {"strategy": ""}), ("/kill/confirm", {"confirm_token": "x"})):
        assert session.post(server.url + path, data=form, allow_redirects=False).status_code == 403
        wrong = {**form, "csrf_token": "not-the-csrf-token"}
        assert session.post(server.url + path, data=wrong, allow_redirects=False).status_code == 403
    assert commands(db_path) == []


def test_a_post_from_another_origin_is_refused_even_with_the_csrf_token(server, db_path):
    session = login(server)
    csrf = csrf_of(session, server)
    for header in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                   {"Referer": "http://evil.example/page"}):
        answer = session.post(server.url + "/control/pause", data={"strategy": "alpha", "csrf_token": csrf},
                              headers=header, allow_redirects=False)
        assert answer.status_code == 403
    assert commands(db_path) == []


def test_a_post_with_only_the_bearer_token_is_not_a_session_and_queues_nothing(server, db_path):
    answer = requests.post(server.url + "/control/pause", data={"strategy": "alpha"},
                           headers={"Authorization": f"Bearer {TOKEN}"}, allow_redirects=False)
    assert answer.status_code == 401 and commands(db_path) == []


def test_the_csrf_header_works_like_the_form_field(server, db_path):
    session = login(server)
    csrf = csrf_of(session, server)
    answer = session.post(server.url + "/control/pause", data={"strategy": "alpha"},
                          headers={"X-CSRF-Token": csrf, "Origin": server.url}, allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"] == "/strategies?command=1"
    assert [(c["kind"], c["payload"]) for c in commands(db_path)] == [
        ("pause", {"strategy": "alpha", "source": "dashboard"})]


def test_a_foreign_host_header_is_refused(server):
    answer = requests.get(server.url + "/api/view", headers={"Host": "evil.example", "Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 421


# ------------------------------------------------------------------------------------- the kill switch


def test_the_kill_switch_needs_an_arm_and_a_live_confirmation_used_once(server, clock, db_path):
    session = login(server)
    csrf = csrf_of(session, server, "/kill")
    # Confirming without arming does nothing.
    assert session.post(server.url + "/kill/confirm", data={"csrf_token": csrf, "confirm_token": "guess"},
                        allow_redirects=False).status_code == 403
    armed = session.post(server.url + "/kill/arm", data={"csrf_token": csrf, "strategy": "alpha"})
    assert armed.status_code == 200 and "This will kill strategy alpha" in armed.text
    confirm = re.search(r'name="confirm_token" value="([^"]+)"', armed.text).group(1)
    assert session.post(server.url + "/kill/confirm", data={"csrf_token": csrf, "confirm_token": "wrong"},
                        allow_redirects=False).status_code == 403
    assert commands(db_path) == []
    # Too late: the confirmation lapses after a minute.
    clock.advance(61)
    assert session.post(server.url + "/kill/confirm", data={"csrf_token": csrf, "confirm_token": confirm},
                        allow_redirects=False).status_code == 403
    assert commands(db_path) == []
    # Armed again and confirmed in time: queued once; the same confirmation cannot fire twice.
    armed = session.post(server.url + "/kill/arm", data={"csrf_token": csrf, "strategy": "alpha"})
    confirm = re.search(r'name="confirm_token" value="([^"]+)"', armed.text).group(1)
    fired = session.post(server.url + "/kill/confirm", data={"csrf_token": csrf, "confirm_token": confirm},
                         allow_redirects=False)
    assert fired.status_code == 303 and fired.headers["Location"] == "/orders?command=1"
    assert session.post(server.url + "/kill/confirm", data={"csrf_token": csrf, "confirm_token": confirm},
                        allow_redirects=False).status_code == 403
    assert [(c["kind"], c["payload"]) for c in commands(db_path)] == [
        ("kill", {"strategy": "alpha", "all_positions": False})]


def test_a_kill_of_one_strategy_with_all_positions_is_refused(server, db_path):
    session = login(server)
    csrf = csrf_of(session, server, "/kill")
    answer = session.post(server.url + "/kill/arm", data={"csrf_token": csrf, "strategy": "alpha",
                                                          "all_positions": "1"}, allow_redirects=False)
    assert answer.status_code == 400 and commands(db_path) == []


# ------------------------------------------------------------------------------------- the bind policy


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "localhost", "LOCALHOST"])
def test_loopback_hosts_are_allowed(host):
    assert is_loopback(host) and bind_problem(host, False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_a_non_loopback_host_needs_the_explicit_setting(host):
    problem = bind_problem(host, False)
    assert problem is not None and "DASHBOARD_ALLOW_REMOTE=true" in problem and "SSH tunnel" in problem
    assert bind_problem(host, True) is None


def test_the_server_refuses_a_non_loopback_host_without_the_setting(clock, db_path):
    with pytest.raises(DashboardError, match="not a loopback address"):
        DashboardServer(DashboardConfig("0.0.0.0", 0, TOKEN), clock, FakeView(None), FakeLog(), db_path)


def dashboard_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state"), "TRADING_ENVIRONMENT": "sim",
            "DASHBOARD_ENABLED": "true", "DASHBOARD_TOKEN": TOKEN, **extra}


def test_run_with_a_non_loopback_dashboard_exits_2_before_anything(tmp_path, capsys):
    code = main_module.main(["run"], clock=SimulatedClock(start=START, speed=0),
                            env=dashboard_env(tmp_path, DASHBOARD_HOST="0.0.0.0"), dotenv_path=None, strategies=[])
    assert code == 2
    err = capsys.readouterr().err
    assert "DASHBOARD_HOST='0.0.0.0' is refused" in err and "DASHBOARD_ALLOW_REMOTE=true" in err
    assert TOKEN not in err
    assert not (tmp_path / "state").exists() and not (tmp_path / "logs").exists()  # nothing opened, nothing sent


def test_a_remote_bind_is_accepted_with_the_explicit_setting(tmp_path):
    settings = load_settings(dashboard_env(tmp_path, DASHBOARD_HOST="0.0.0.0", DASHBOARD_ALLOW_REMOTE="true"),
                             dotenv_path=None)
    assert settings.dashboard_host == "0.0.0.0" and settings.dashboard_allow_remote


# ------------------------------------------------------------------------------------- the token never shows


def test_the_token_never_appears_in_a_page_an_answer_a_log_line_or_a_repr(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    session = login(server)
    csrf = csrf_of(session, server)
    texts = [session.get(server.url + path).text for path in ("/", "/strategies", "/trades", "/orders", "/alerts",
                                                                "/kill", "/login")]
    texts += [requests.get(server.url + path, headers={"Authorization": f"Bearer {TOKEN}"}).text
              for path in ("/api/view", "/api/strategies", "/api/trades", "/api/orders", "/api/positions",
                           "/api/alerts", "/api/health", "/api/log")]
    armed = session.post(server.url + "/kill/arm", data={"csrf_token": csrf, "strategy": ""})
    texts += [armed.text, session.post(server.url + "/control/pause", data={"strategy": "alpha",
                                                                          "csrf_token": csrf}).text]
    texts += [requests.post(server.url + "/login", data={"token": TOKEN + "x"}).text]
    settings = load_settings(dashboard_env(tmp_path), dotenv_path=None)
    texts += [repr(settings), str(settings), settings.describe(), repr(server), repr(server.config), repr(server.guard)]
    texts += [record.getMessage() for record in caplog.records]
    assert all(TOKEN not in text for text in texts)
    assert "token=<set>" in settings.describe()


def test_same_origin_rules():
    assert same_origin("http://127.0.0.1:8780", None, "127.0.0.1:8780")
    assert same_origin(None, "http://127.0.0.1:8780/strategies", "127.0.0.1:8780")
    assert same_origin(None, None, "127.0.0.1:8780")   # a script with no Origin: the CSRF token decides
    assert not same_origin("http://127.0.0.1:9999", None, "127.0.0.1:8780")
    assert not same_origin("null", None, "127.0.0.1:8780")
    assert not same_origin("http://127.0.0.1:8780", None, None)


def test_host_rules():
    assert host_allowed("127.0.0.1:8780", True) and host_allowed("localhost:8780", True)
    assert host_allowed("[::1]:8780", True) and host_allowed("localhost", True)
    assert not host_allowed("evil.example:8780", True) and not host_allowed(None, True)
    assert host_allowed("vps.example:8780", False)


def test_settings_refuse_an_enabled_dashboard_without_a_long_token(tmp_path):
    env = dashboard_env(tmp_path)
    del env["DASHBOARD_TOKEN"]
    with pytest.raises(ConfigError, match="needs a strong DASHBOARD_TOKEN \\(it is unset; at least 16 are needed\\)"
                                          ".*secrets.token_urlsafe"):
        load_settings(env, dotenv_path=None)
    with pytest.raises(ConfigError, match="it is 5 characters"):
        load_settings({**env, "DASHBOARD_TOKEN": "short"}, dotenv_path=None)


@pytest.mark.parametrize("token, weakness", [
    ("a" * 40, "only 1 different characters"),
    ("aabbccddaabbccddaabb", "only 4 different characters"),
    ("abcdefgh" * 4, "repeats a short pattern"),
    ("abcdefghijklmnopqrstuvwxyz", "run of consecutive characters"),
    ("0123456789abcdef", "run of consecutive characters"),
    ("zyxwvutsrqponmlkjihg", "run of consecutive characters"),
])
def test_settings_refuse_a_long_but_guessable_token_without_quoting_it(tmp_path, token, weakness):
    env = {**dashboard_env(tmp_path), "DASHBOARD_TOKEN": token}
    with pytest.raises(ConfigError, match=weakness) as refused:
        load_settings(env, dotenv_path=None)
    assert token.strip() not in str(refused.value)


def test_a_generated_token_is_accepted(tmp_path):
    for token in ("Q3v9Zr_k1XwLm0pT8sYbN2cE5hGa7dJu", "wiring-test-token-0123456789"):
        assert token_weakness(token) is None
        assert load_settings({**dashboard_env(tmp_path), "DASHBOARD_TOKEN": token}, dotenv_path=None).dashboard_token
