"""The dashboard's server and pages: routes, the JSON API, rendering, start and stop.

A real server on 127.0.0.1 (port 0) fed by a hand-written view (the contract of
docs/DASHBOARD.md); the controls write into a real store's command queue.
"""
from __future__ import annotations

import re
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from clock import RealClock, SimulatedClock
from config import Settings, load_settings
from dashboard import DashboardConfig, DashboardError, DashboardServer, start_dashboard
from dashboard_pages import PageContext, equity_svg, render_kill_confirm, render_strategies, render_trades
from persistence import StateStore
from tests.browser.sample_view import START, FakeLog, FakeView, sample_view

TOKEN = "s3cret-dashboard-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "trader.db"
    StateStore(path).close()
    return path


@pytest.fixture
def view() -> FakeView:
    return FakeView(sample_view())


@pytest.fixture
def server(clock, db_path, view):
    dashboard = DashboardServer(DashboardConfig("127.0.0.1", 0, TOKEN), clock, view, FakeLog(), db_path)
    dashboard.start()
    yield dashboard
    dashboard.stop()


def logged_in(server: DashboardServer) -> requests.Session:
    session = requests.Session()
    assert session.post(server.url + "/login", data={"token": TOKEN}, allow_redirects=False).status_code == 303
    return session


# ------------------------------------------------------------------------------------- the JSON API


@pytest.mark.parametrize("path,key", [("/api/strategies", "strategies"), ("/api/trades", "trades"),
                                      ("/api/orders", "working_orders"), ("/api/positions", "positions"),
                                      ("/api/alerts", "alerts"), ("/api/health", "health")])
def test_each_api_answers_its_section_of_the_view(server, path, key):
    answer = requests.get(server.url + path, headers=BEARER)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {"generated_at": START + 600, key: sample_view()[key]}


def test_the_view_api_answers_the_whole_view_and_the_log_api_the_tail(server):
    assert requests.get(server.url + "/api/view", headers=BEARER).json() == sample_view()
    assert requests.get(server.url + "/api/log", headers=BEARER).json() == {"lines": FakeLog().lines()}


def test_before_the_first_view_the_api_says_so_and_the_pages_too(server, view):
    view.set(None)
    answer = requests.get(server.url + "/api/trades", headers=BEARER)
    assert answer.status_code == 503 and "no view yet" in answer.json()["error"]
    page = logged_in(server).get(server.url + "/trades")
    assert page.status_code == 200 and 'id="no-view"' in page.text


def test_an_unknown_api_or_page_is_404(server):
    assert requests.get(server.url + "/api/nope", headers=BEARER).status_code == 404
    assert logged_in(server).get(server.url + "/nope").status_code == 404


def test_a_session_cookie_also_reads_the_api(server):
    assert logged_in(server).get(server.url + "/api/health").json()["health"]["exchange"] == "UP"


def test_a_view_source_that_raises_is_no_view_not_a_crash(server, view, monkeypatch):
    def broken() -> None:
        raise RuntimeError("board on fire")

    monkeypatch.setattr(view, "latest_json", broken)
    assert requests.get(server.url + "/api/view", headers=BEARER).status_code == 503
    assert requests.get(server.url + "/api/log", headers=BEARER).status_code == 200


# ------------------------------------------------------------------------------------- controls and pages


def test_pause_and_resume_go_through_the_command_queue_and_the_page_reports_them(server, db_path, view):
    session = logged_in(server)
    page = session.get(server.url + "/strategies").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert 'id="strategy-alpha" data-state="running" data-paused="false"' in page and 'id="pause-alpha"' in page
    answer = session.post(server.url + "/control/pause", data={"strategy": "alpha", "csrf_token": csrf})
    assert answer.url.endswith("/strategies?command=1")
    assert "pause command 1 (alpha) is queued: the daemon takes it on its next wake" in answer.text
    # The daemon takes it (here: by hand) and publishes the next view.
    with StateStore(db_path) as store:
        store.update_command(1, "done", {"paused": ["alpha"], "reason": "paused from the dashboard"})
    view.set(sample_view(paused="alpha"))
    page = session.get(server.url + "/strategies?command=1").text
    assert 'id="strategy-alpha" data-state="paused" data-paused="true"' in page and 'id="resume-alpha"' in page
    assert "pause command 1 done: paused alpha (paused from the dashboard)" in page
    session.post(server.url + "/control/resume", data={"strategy": "alpha", "csrf_token": csrf})
    with StateStore(db_path) as store:
        assert [(c["kind"], c["status"], c["payload"]) for c in store.commands()] == [
            ("pause", "done", {"strategy": "alpha", "source": "dashboard"}),
            ("resume", "pending", {"strategy": "alpha"})]


def test_after_the_store_is_lost_and_relocated_a_command_goes_where_the_daemon_reads(server, db_path, clock):
    daemon_store = StateStore(db_path, clock=clock)          # the daemon's own connection
    server.follow_store(lambda: daemon_store.path)
    try:
        session = logged_in(server)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', session.get(server.url + "/").text).group(1)
        session.post(server.url + "/control/pause", data={"strategy": "alpha", "csrf_token": csrf})
        db_path.unlink()                                      # trader.db deleted under the daemon
        assert daemon_store.check_file() == "the database file was deleted"
        moved = daemon_store.relocate()
        assert moved is not None
        session.post(server.url + "/control/pause", data={"strategy": "beta", "csrf_token": csrf})
        # The daemon reads its relocated store: both commands are there, the second one included.
        assert [(c["kind"], c["payload"]["strategy"]) for c in daemon_store.commands()] == [
            ("pause", "alpha"), ("pause", "beta")]
    finally:
        daemon_store.close()


def test_pause_without_a_name_is_400_and_queues_nothing(server, db_path):
    session = logged_in(server)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', session.get(server.url + "/").text).group(1)
    assert session.post(server.url + "/control/pause", data={"csrf_token": csrf}).status_code == 400
    assert session.post(server.url + "/control/resume", data={"csrf_token": csrf}).status_code == 400
    with StateStore(db_path) as store:
        assert store.commands() == []


def test_every_page_renders_with_its_hooks_and_no_external_asset(server):
    session = logged_in(server)
    pages = {path: session.get(server.url + path) for path in ("/", "/strategies", "/trades", "/orders", "/alerts",
                                                                 "/kill")}
    for path, answer in pages.items():
        assert answer.status_code == 200, path
        text = answer.text
        assert "<link" not in text and " src=" not in text and "http://" not in text and "https://" not in text
        nonce = re.search(r'<script nonce="([^"]+)">', text).group(1)
        assert f"'nonce-{nonce}'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["Cache-Control"] == "no-store"
    overview = pages["/"].text
    assert 'id="equity">99,919.52<' in overview and 'id="greek-theta">-1.2345<' in overview
    assert 'id="exchange"><span data-state="UP">UP</span>' in overview and 'id="equity-curve" data-points="30"' in overview
    trades = pages["/trades"].text
    assert 'id="trade-T000000001" data-state="OPEN"' in trades and 'id="trade-T000000003" data-state="CLOSED"' in trades
    assert 'data-field="unrealized_pnl_mark">-0.17<' in trades and 'data-field="exit_reason">max_hold_hours(3)<' in trades
    assert 'data-fraction="0.2500"' in trades and "45 min of 3 h" in trades
    orders = pages["/orders"].text
    assert 'data-client-order-id="101000000001000001"' in orders and 'data-ours="false"' in orders
    alerts = pages["/alerts"].text
    assert "exchange_slow" in alerts and "&lt;b&gt;not bold&lt;/b&gt;" in alerts


# ------------------------------------------------------------------------------------- rendering


def ctx_for(view: dict | None) -> PageContext:
    return PageContext(view=view, csrf_token="csrf", nonce="n", path="/")


def test_every_value_is_escaped():
    hostile = sample_view()
    hostile["strategies"][0]["name"] = "<script>alert(1)</script>"
    hostile["strategies"][0]["no_entry_reason"] = '"><img src=x onerror=alert(1)>'
    hostile["trades"][0]["exit_rules"][0]["detail"] = "<b>x</b>"
    text = render_strategies(ctx_for(hostile)) + render_trades(ctx_for(hostile))
    assert "<script>alert(1)</script>" not in text and "<img src=x" not in text and "<b>x</b>" not in text
    assert 'id="strategy-&lt;script&gt;alert(1)&lt;/script&gt;"' in text


def test_the_overview_shows_the_greeks_per_underlying_escaped_and_the_positions_their_kind(server, view):
    hostile = sample_view()
    by_underlying = hostile["account"]["greeks_by_underlying"]
    by_underlying["<script>x</script>"] = by_underlying.pop("ETH")
    view.set(hostile)
    session = logged_in(server)
    overview = session.get(server.url + "/").text
    assert "<script>x</script>" not in overview
    assert 'data-underlying="&lt;script&gt;x&lt;/script&gt;"' in overview
    btc = re.search(r'<tr data-underlying="BTC">(.*?)</tr>', overview).group(1)
    assert re.findall(r'data-field="(\w+)">([^<]*)<', btc) == [
        ("delta", "0.3123"), ("perp_delta", "0.2500"), ("gamma", "0.0001"), ("theta", "-1.0345"), ("vega", "2.1456")]
    orders = session.get(server.url + "/orders").text
    assert '<tr data-symbol="BTCUSD" data-ours="false" data-kind="perpetual">' in orders
    assert orders.count('data-kind="option"') == 2
    hostile["account"]["greeks_by_underlying"] = {}
    assert 'id="no-underlying-greeks"' in session.get(server.url + "/").text


def test_missing_numbers_are_dashes_not_zeros():
    view = sample_view()
    view["trades"][0]["unrealized_pnl_executable"] = None
    view["trades"][0]["legs"][0]["mark"] = None
    text = render_trades(ctx_for(view))
    assert 'data-field="unrealized_pnl_executable">—<' in text


def test_the_equity_curve_needs_two_points_and_scales_into_the_box():
    assert 'data-points="1"' in equity_svg([[START, 1.0]])
    svg = equity_svg([[START, 100.0], [START + 60, 110.0], [START + 120, 90.0]])
    points = re.search(r' points="([^"]+)"', svg).group(1).split()
    assert points[0] == "10.0,90.0" and points[1] == "320.0,10.0" and points[2] == "630.0,170.0"


def test_the_confirmation_page_says_exactly_what_it_will_do():
    text = render_kill_confirm(ctx_for(sample_view()), description="strategy alpha", trades=["T000000001"],
                               confirm_token="tok", seconds_left=59.6)
    assert "This will kill strategy alpha" in text and "reduce-only" in text and "never cancelled" in text
    assert "<li>T000000001</li>" in text and 'id="kill-seconds-left">60<' in text
    assert 'name="confirm_token" value="tok"' in text


# ------------------------------------------------------------------------------------- life cycle


def test_stop_joins_within_a_second_and_frees_the_port(clock, db_path):
    dashboard = DashboardServer(DashboardConfig("127.0.0.1", 0, TOKEN), clock, FakeView(None), FakeLog(), db_path)
    dashboard.start()
    port = dashboard.port
    assert port > 0 and dashboard.running
    assert any(t.name == f"dashboard-{port}" and t.daemon for t in threading.enumerate())
    wall = RealClock()
    started = wall.monotonic()
    dashboard.stop()
    assert wall.monotonic() - started < 1.0 and not dashboard.running
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))   # free again
    dashboard.stop()   # twice is harmless


def test_a_port_in_use_is_a_start_up_error_that_names_the_fix(clock, db_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        dashboard = DashboardServer(DashboardConfig("127.0.0.1", taken.getsockname()[1], TOKEN), clock,
                                    FakeView(None), FakeLog(), db_path)
        with pytest.raises(DashboardError, match="choose another DASHBOARD_PORT"):
            dashboard.start()


def test_start_dashboard_is_none_when_disabled_and_a_running_server_when_enabled(tmp_path, clock, db_path):
    assert start_dashboard(Settings(), clock, FakeView(None), FakeLog(), db_path) is None
    settings = load_settings({"STATE_DIR": str(tmp_path), "DASHBOARD_ENABLED": "yes", "DASHBOARD_TOKEN": TOKEN},
                             dotenv_path=None)
    assert settings.dashboard_port == 8780 and settings.dashboard_host == "127.0.0.1"
    server = start_dashboard(replace(settings, dashboard_port=0), clock, FakeView(sample_view()), FakeLog(), db_path)
    assert server is not None
    try:
        assert requests.get(server.url + "/api/health", headers=BEARER).status_code == 200
    finally:
        server.stop()
