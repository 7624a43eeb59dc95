"""The dashboard in a real browser (issue 12): headless Chromium against a daemon on the
embedded simulator, and against a server fed by a hand-written view.

The daemon runs in a thread of this process (``app.run_daemon``, the very start-up and loop of
``python main.py run``) on a lock-step simulated clock paced so that one 10-second poll takes
half a real second: the browser sees the daemon work in (accelerated) real time. The browser
logs in, reads the trades, PnL and strategy states, pauses a strategy and watches the daemon
pause it, arms and confirms the kill switch and watches the positions close. Screenshots of
every step are saved under the test's temporary folder.
"""
from __future__ import annotations

import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

import pytest
import requests

from app import RunPlan, run_daemon
from clock import RealClock, SimulatedClock
from config import load_settings
from dashboard import DashboardConfig, DashboardServer
from option_selection import strangle
from persistence import StateStore
from stop_flag import StopFlag
from strategy import StrategyConfig, max_hold_hours, min_available_margin_pct
from tests.browser.sample_view import FakeLog, FakeView, sample_view
from trade_execution import ExecutionParams

pytestmark = pytest.mark.browser

TOKEN = "browser-test-token-0123456789abcdef"
START = datetime(2026, 3, 3, 9, 0, 0, tzinfo=timezone.utc).timestamp()   # a Tuesday, 09:00 UTC
PACE = 20.0            # simulated seconds per real second of the daemon's waiting
WAIT_SECONDS = 90.0    # the longest real wait for anything the daemon does
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT_SECONDS) -> T:
    """Poll ``probe`` on the wall clock until it answers something truthy (a browser test waits
    for real: the daemon and the browser are other threads and processes)."""
    wall = RealClock()
    deadline = wall.monotonic() + timeout
    while True:
        answer = probe()
        if answer:
            return answer
        if wall.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        wall.sleep(0.2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tiny_strangle() -> StrategyConfig:
    """A long 0.01 strangle that enters at once and holds for hours (the kill e2e's alpha)."""
    return StrategyConfig(
        name="alpha", legs=strangle(0.01, call_delta=0.25, put_delta=-0.25, dte="next", side=1),
        entry_conditions=[min_available_margin_pct(50)], exit_conditions=[max_hold_hours(3)],
        execution_mode="limit", max_concurrent_trades=1, max_trades_per_day=12, cooldown_seconds=0.0,
        check_interval_seconds=60.0,
        execution_params=ExecutionParams(fill_timeout_seconds=30.0, aggressive_buffer_pct=2.0, max_requote_rounds=10),
    )


class Daemon:
    """``run_daemon`` on a thread; ``stop()`` asks it to stop after the current wake and joins."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        env = {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state"), "TRADING_ENVIRONMENT": "sim",
               "POLL_INTERVAL_SECONDS": "10", "DASHBOARD_ENABLED": "true", "DASHBOARD_TOKEN": TOKEN,
               "DASHBOARD_PORT": str(self.port)}
        self.settings = load_settings(env, dotenv_path=None)
        self.clock = SimulatedClock(start=START, speed=0, pace=PACE)
        self.flag = StopFlag()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, name="daemon-under-test", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self.code = run_daemon(self.settings, self.clock, self.flag, [tiny_strangle()], RunPlan())

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> int | None:
        self.flag.request("browser test over")
        self.thread.join(60)
        return self.code

    def api(self, path: str) -> Any:
        try:
            answer = requests.get(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        except requests.ConnectionError:
            return None
        return answer.json() if answer.status_code == 200 else None

    def commands(self) -> list[dict]:
        with StateStore(self.settings.state_db_path) as store:
            return store.commands()


@pytest.fixture
def daemon(tmp_path: Path):
    running = Daemon(tmp_path)
    running.start()
    yield running
    if running.thread.is_alive():
        running.stop()


def log_in(chrome: Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    chrome.get(url + "/")
    assert chrome.find_element(By.ID, "login-form") is not None   # not logged in: the login page
    chrome.find_element(By.ID, "token").send_keys(TOKEN)
    chrome.find_element(By.ID, "login").click()
    wait_for("the overview after login", lambda: chrome.find_elements(By.ID, "generated-at"))


def element_attribute(chrome: Any, element_id: str, name: str) -> str | None:
    """An attribute of an element, read afresh (the page refreshes its data in place)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        found = chrome.find_elements(By.ID, element_id)
        return found[0].get_attribute(name) if found else None
    except StaleElementReferenceException:
        return None


def text_of(chrome: Any, css: str) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return " ".join(e.text for e in chrome.find_elements(By.CSS_SELECTOR, css))
    except StaleElementReferenceException:
        return ""


def test_dashboard_against_a_daemon_on_the_embedded_simulator(daemon, chrome, screenshots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # The daemon opens alpha's strangle; the view says so.
    trade = wait_for("alpha's first trade to open", lambda: next(
        (t for t in (daemon.api("/api/trades") or {}).get("trades", []) if t["state"] == "OPEN"), None))
    trade_id = trade["id"]

    log_in(chrome, daemon.url)
    assert chrome.find_element(By.ID, "environment").text.startswith("SIM")
    wait_for("the equity on the overview", lambda: text_of(chrome, "#equity").replace(",", "").replace(".", "")
             .isdigit())
    chrome.save_screenshot(str(screenshots / "01-overview.png"))

    # Trades: the open trade with its legs, fills, entry premium, unrealized PnL and exit rules.
    chrome.get(daemon.url + "/trades")
    section = chrome.find_element(By.ID, f"trade-{trade_id}")
    assert section.get_attribute("data-state") == "OPEN" and section.get_attribute("data-strategy") == "alpha"
    legs = section.find_elements(By.CSS_SELECTOR, "tr[data-symbol]")
    assert len(legs) == 2 and all(leg.find_element(By.CSS_SELECTOR, '[data-field="filled_qty"]').text == "0.01"
                                  for leg in legs)
    for field in ("entry_premium", "unrealized_pnl_mark", "unrealized_pnl_executable"):
        shown = section.find_element(By.CSS_SELECTOR, f'[data-field="{field}"]').text
        assert shown != "—" and float(shown.replace(",", "")) == pytest.approx(
            float(trade[field]) if field == "entry_premium" else float(shown.replace(",", ""))), field
    assert section.find_elements(By.CSS_SELECTOR, 'tr[data-rule]'), "the exit rules are shown"
    chrome.save_screenshot(str(screenshots / "02-trades.png"))

    # Strategies: alpha runs; pause it and watch the daemon pause it (the page refreshes itself).
    chrome.get(daemon.url + "/strategies")
    assert element_attribute(chrome, "strategy-alpha", "data-paused") == "false"
    assert element_attribute(chrome, "strategy-alpha", "data-state") == "running"
    chrome.find_element(By.ID, "pause-alpha").click()
    wait_for("the queued pause to be reported", lambda: "pause command 1" in text_of(chrome, "#flash"))
    wait_for("alpha to show paused", lambda: element_attribute(chrome, "strategy-alpha", "data-paused") == "true")
    assert "paused from the dashboard" in text_of(chrome, '#strategy-alpha [data-field="pause_reason"]')
    chrome.save_screenshot(str(screenshots / "03-paused.png"))
    assert [(c["kind"], c["status"]) for c in daemon.commands()] == [("pause", "done")]

    # The kill switch: arm, read what it will do, confirm; the positions close.
    chrome.get(daemon.url + "/orders")
    held = {row.get_attribute("data-symbol") for row in
            chrome.find_elements(By.CSS_SELECTOR, '#positions tr[data-ours="true"]')}
    assert held == {leg["symbol"] for leg in trade["legs"]}, "our positions are shown before the kill"
    chrome.get(daemon.url + "/kill")
    Select(chrome.find_element(By.ID, "kill-strategy")).select_by_value("")
    chrome.find_element(By.ID, "kill-arm").click()
    description = wait_for("the confirmation page", lambda: text_of(chrome, "#kill-description"))
    assert "This will kill every strategy" in description and "reduce-only" in description
    assert trade_id in text_of(chrome, "#kill-trades")
    chrome.save_screenshot(str(screenshots / "04-kill-confirm.png"))
    chrome.find_element(By.ID, "kill-confirm").click()
    wait_for("the kill to be queued", lambda: "kill command 2" in text_of(chrome, "#flash"))
    wait_for("our positions to close", lambda: chrome.find_elements(By.ID, "no-positions")
             or (chrome.find_elements(By.CSS_SELECTOR, "#positions tr[data-ours]")
                 and not chrome.find_elements(By.CSS_SELECTOR, '#positions tr[data-ours="true"]')))
    wait_for("the kill to be reported done", lambda: "kill command 2 done" in text_of(chrome, "#flash"))
    chrome.save_screenshot(str(screenshots / "05-positions-closed.png"))
    chrome.get(daemon.url + "/trades")
    wait_for("the trade to show closed by the kill switch",
             lambda: element_attribute(chrome, f"trade-{trade_id}", "data-state") == "CLOSED")
    assert "kill_switch" in text_of(chrome, f'#trade-{trade_id} [data-field="exit_reason"]')
    assert text_of(chrome, f'#trade-{trade_id} [data-field="realized_pnl"]') not in ("", "—")
    chrome.save_screenshot(str(screenshots / "06-trade-closed.png"))

    assert daemon.stop() == 0
    kinds = [(c["kind"], c["status"]) for c in daemon.commands()]
    assert kinds == [("pause", "done"), ("kill", "done")]
    assert sorted(p.name for p in screenshots.iterdir()) == [
        "01-overview.png", "02-trades.png", "03-paused.png", "04-kill-confirm.png", "05-positions-closed.png",
        "06-trade-closed.png"]
    assert all(p.stat().st_size > 1000 for p in screenshots.iterdir())


def test_the_page_refreshes_its_data_in_place_and_escapes_what_it_shows(tmp_path, chrome, screenshots):
    """No daemon: a server fed by a hand-written view. The inline script runs under the page's
    CSP nonce and swaps the data in without a reload; hostile names stay text."""
    from selenium.webdriver.common.by import By

    db_path = tmp_path / "trader.db"
    StateStore(db_path).close()
    hostile = sample_view()
    hostile["strategies"][1]["name"] = "<img src=x onerror=document.title='pwned'>"
    view = FakeView(hostile)
    server = DashboardServer(DashboardConfig("127.0.0.1", 0, TOKEN), RealClock(), view, FakeLog(), db_path)
    server.start()
    try:
        log_in(chrome, server.url)
        chrome.get(server.url + "/strategies")
        assert element_attribute(chrome, "strategy-alpha", "data-paused") == "false"
        assert "<img src=x" in chrome.find_element(By.ID, "strategies").text and chrome.title != "pwned"
        chrome.execute_script("window.__marker = 42;")   # survives only if the page is not reloaded
        view.set(sample_view(paused="alpha"))
        wait_for("the refresh to show alpha paused", lambda: element_attribute(chrome, "strategy-alpha",
                                                                               "data-paused") == "true", timeout=30)
        assert chrome.execute_script("return window.__marker;") == 42
        chrome.save_screenshot(str(screenshots / "refreshed.png"))
    finally:
        server.stop()
