"""Issue 9, finding 6: an exchange unreachable for minutes raises an alert, and its end another.

``Reachability`` always tracked outages, but no listener took its transitions to the alert
sink, so a dead exchange only showed as WARNING lines in the log. These tests pin the
outage alerts: ``exchange_unreachable`` (CRITICAL) once per outage after
``EXCHANGE_OUTAGE_ALERT_SECONDS`` measured on the injected clock from the outage's first
failed request, ``exchange_recovered`` with the outage's length when an answer comes back.
The HTTP edge is mocked with ``responses``; time is a speed-0 ``SimulatedClock``.
"""
from __future__ import annotations

import json
import random
import re

import pytest
import responses

from account_manager import AccountManager
from alerts import AlertSink
from clock import SimulatedClock, iso_utc
from coincall_client import ClientSettings, CoincallClient, Reachability
from config import Credentials, load_settings
from errors import ConfigError
from exchange_connection import client_settings_for
from position_monitor import PositionMonitor

BASE = "http://127.0.0.1:18081"
START = 1767225600.0          # 2026-01-01 00:00:00 UTC
ANY_PATH = re.compile(re.escape(BASE) + r"/.*")
SUMMARY = BASE + "/open/account/summary/v1"
POSITIONS = BASE + "/open/option/position/get/v1"


def envelope(data=None, code=0, msg="Success"):
    return {"code": code, "msg": msg, "i18nArgs": None, "data": data}


SUMMARY_DATA = {"equity": "10000", "availableMargin": "9000", "imAmount": "0", "mmAmount": "0",
                "unrealizedPnL": "0"}


class Recorder:
    """A Reachability listener that keeps (kind, at, outage_seconds, failures)."""

    def __init__(self) -> None:
        self.events = []

    def __call__(self, event) -> None:
        self.events.append((event.kind, event.at, event.outage_seconds, event.failures))

    def kinds(self):
        return [kind for kind, *_ in self.events]


# --------------------------------------------------------------------------- Reachability itself


def test_unreachable_once_after_the_threshold_measured_from_the_first_failure():
    reach = Reachability(down_after_failures=3, outage_alert_seconds=120)
    seen = Recorder()
    reach.add_listener(seen)
    for t in (0, 10, 20, 50, 80, 110):                     # the monitor's backed-off polls
        reach.record_failure(START + t, "HTTP 503")
    assert seen.kinds() == ["DOWN"]                         # 110 s: not yet
    reach.record_failure(START + 140, "HTTP 503")
    assert seen.kinds() == ["DOWN", "UNREACHABLE"]
    assert seen.events[-1] == ("UNREACHABLE", START + 140, 140.0, 7)
    for t in (170, 200, 230):
        reach.record_failure(START + t, "HTTP 503")
    assert seen.kinds() == ["DOWN", "UNREACHABLE"]          # once per outage

    reach.record_success(START + 245)
    assert seen.kinds() == ["DOWN", "UNREACHABLE", "UP", "RECOVERED"]
    assert seen.events[-1] == ("RECOVERED", START + 245, 245.0, 10)
    assert reach.is_up and not reach.outage_reported and reach.failing_since is None


def test_every_outage_is_reported_again_and_a_short_one_not_at_all():
    reach = Reachability(down_after_failures=3, outage_alert_seconds=120)
    seen = Recorder()
    reach.add_listener(seen)
    for t in (0, 10, 20, 50):
        reach.record_failure(START + t)
    reach.record_success(START + 80)                        # 80 s: DOWN/UP in the log only
    assert seen.kinds() == ["DOWN", "UP"]

    for t in (1000, 1010, 1020, 1050, 1080, 1110, 1140):
        reach.record_failure(START + t)
    reach.record_success(START + 1150)
    assert seen.kinds() == ["DOWN", "UP", "DOWN", "UNREACHABLE", "UP", "RECOVERED"]
    unreachable = seen.events[3]
    assert unreachable[2] == 140.0                          # measured from 1000, not from the first outage


def test_a_success_ends_the_outage_so_flapping_is_not_an_outage():
    reach = Reachability(down_after_failures=3, outage_alert_seconds=120)
    seen = Recorder()
    reach.add_listener(seen)
    for t in range(0, 600, 30):
        reach.record_failure(START + t)
        reach.record_success(START + t + 1)                  # the exchange answers every other request
    assert seen.kinds() == []


def test_the_threshold_can_come_before_down_and_recovery_is_still_reported():
    reach = Reachability(down_after_failures=3, outage_alert_seconds=5)
    seen = Recorder()
    reach.add_listener(seen)
    reach.record_failure(START)
    reach.record_failure(START + 4.9)
    assert seen.kinds() == []
    reach.record_failure(START + 5)
    assert seen.kinds() == ["DOWN", "UNREACHABLE"]
    reach = Reachability(down_after_failures=3, outage_alert_seconds=1)
    seen = Recorder()
    reach.add_listener(seen)
    reach.record_failure(START)
    reach.record_failure(START + 2)                           # still UP (2 failures) but 2 s long
    reach.record_success(START + 3)
    assert seen.kinds() == ["UNREACHABLE", "RECOVERED"]
    assert seen.events[-1][2] == 3.0


def test_a_listener_that_raises_does_not_stop_the_others():
    reach = Reachability(down_after_failures=1, outage_alert_seconds=1)
    seen = Recorder()

    def broken(event):
        raise RuntimeError("sink down")

    reach.add_listener(broken)
    reach.add_listener(seen)
    reach.record_failure(START)
    reach.record_failure(START + 1)
    assert seen.kinds() == ["DOWN", "UNREACHABLE"]


# --------------------------------------------------------------------------- the setting


def test_the_setting_defaults_to_120_seconds_and_reaches_the_client():
    settings = load_settings({}, dotenv_path=None)
    assert settings.exchange_outage_alert_seconds == 120.0
    assert client_settings_for(settings, BASE).outage_alert_seconds == 120.0
    custom = load_settings({"EXCHANGE_OUTAGE_ALERT_SECONDS": "300"}, dotenv_path=None)
    client = CoincallClient(client_settings_for(custom, BASE), Credentials("k" * 8, "s" * 8), SimulatedClock(START))
    try:
        assert client.reachability.outage_alert_seconds == 300.0
    finally:
        client.close()


@pytest.mark.parametrize("raw", ["0", "0.5", "-120", "abc", "nan", "inf", "86401"])
def test_the_setting_refuses_nonsense_naming_the_variable_and_the_fix(raw):
    with pytest.raises(ConfigError) as info:
        load_settings({"EXCHANGE_OUTAGE_ALERT_SECONDS": raw}, dotenv_path=None)
    message = str(info.value)
    assert f"EXCHANGE_OUTAGE_ALERT_SECONDS={raw!r}" in message
    assert "from 1 to 86400" in message


@pytest.mark.parametrize("seconds", [0, 0.999, float("nan"), float("inf")])
def test_client_settings_refuse_a_sub_second_or_non_finite_threshold(seconds):
    with pytest.raises(ConfigError, match="outage_alert_seconds"):
        ClientSettings(base_url=BASE, outage_alert_seconds=seconds)


# --------------------------------------------------------------------------- through the monitor


class Rig:
    """A real client, account manager, monitor and alert sink on a frozen clock."""

    def __init__(self, tmp_path, outage_alert_seconds: float = 120.0) -> None:
        self.clock = SimulatedClock(start=START, speed=0)
        settings = ClientSettings(base_url=BASE, max_retries=0, outage_alert_seconds=outage_alert_seconds)
        self.client = CoincallClient(settings, Credentials("k" * 8, "s" * 8), self.clock, rng=random.Random(1))
        self.alerts = AlertSink(tmp_path / "logs", self.clock)
        accounts = AccountManager(self.client, self.clock)
        accounts.alert_on_outages(self.alerts)
        self.monitor = PositionMonitor(accounts, self.clock, poll_interval=10.0)

    def run_until(self, t: float) -> None:
        while self.clock.now() < START + t:
            self.monitor.run_once()

    def alerts_of(self, kind: str):
        return [a for a in self.alerts.recent(200) if a.kind == kind]


def exchange_down(rsps) -> None:
    rsps.add(responses.GET, ANY_PATH, status=503)


def exchange_up(rsps) -> None:
    rsps.reset()
    rsps.add(responses.GET, SUMMARY, json=envelope(SUMMARY_DATA))
    rsps.add(responses.GET, POSITIONS, json=envelope([]))


def test_monitor_polls_through_the_outage_and_the_sink_gets_both_alerts(tmp_path, rsps):
    rig = Rig(tmp_path)
    exchange_down(rsps)
    rig.run_until(119)
    assert rig.alerts.recent(200) == []                     # DOWN after 3 failures is no alert
    assert not rig.client.reachability.is_up
    rig.run_until(180)                                       # three minutes without an answer
    [unreachable] = rig.alerts_of("exchange_unreachable")
    assert unreachable.level == "CRITICAL"
    assert 120 <= unreachable.detail["outage_seconds"] <= 150   # the next backed-off poll after 120 s
    assert unreachable.detail["since"] == "2026-01-01T00:00:00.000Z"
    assert unreachable.detail["failures"] >= 5 and "503" in unreachable.detail["last_error"]
    assert f"unreachable for {unreachable.detail['outage_seconds']:.0f} s" in unreachable.message
    polls_while_down = len(rsps.calls)

    exchange_up(rsps)
    rig.run_until(240)
    [recovered] = rig.alerts_of("exchange_recovered")
    length = recovered.detail["outage_seconds"]
    assert 180 <= length <= 240
    assert recovered.time == iso_utc(START + length)          # measured up to the first answer
    assert f"after an outage of {length:.0f} s" in recovered.message
    assert len(rig.alerts_of("exchange_unreachable")) == 1
    assert polls_while_down >= 8                            # it kept polling, backed off, with no trade

    lines = [json.loads(line) for line in (tmp_path / "logs" / "alerts.log").read_text().splitlines()]
    assert [(line["level"], line["kind"]) for line in lines] == [("CRITICAL", "exchange_unreachable"),
                                                                 ("WARNING", "exchange_recovered")]
    assert lines[1]["detail"]["outage_seconds"] == length


def test_the_configured_threshold_is_the_one_used(tmp_path, rsps):
    rig = Rig(tmp_path, outage_alert_seconds=300)
    exchange_down(rsps)
    rig.run_until(290)
    assert rig.alerts_of("exchange_unreachable") == []
    rig.run_until(360)
    [unreachable] = rig.alerts_of("exchange_unreachable")
    assert unreachable.detail["outage_seconds"] >= 300


def test_an_outage_shorter_than_the_threshold_raises_no_alert(tmp_path, rsps):
    rig = Rig(tmp_path)
    exchange_down(rsps)
    rig.run_until(100)
    exchange_up(rsps)
    rig.run_until(200)
    assert rig.alerts.recent(200) == []
    assert rig.client.reachability.is_up
