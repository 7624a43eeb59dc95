"""Issue 9, finding 6, end to end: the simulator stops answering for three minutes.

The daemon's services as ``build_context`` wires them (so the alert hookup is the product's
own), talking over loopback to the in-process simulator, whose HTTP fault plan answers
every request with 503 for three simulated minutes. Exactly one ``exchange_unreachable``
(CRITICAL) must come, not before 120 s of outage, and one ``exchange_recovered`` with the
outage's length once the faults are removed. No trade is active: the monitor's own
(backed-off) polls are what measure the outage.
"""
from __future__ import annotations

import json

from app import build_context
from clock import iso_utc
from config import load_settings
from simulator.faults import FaultRule


def outage_alerts(ctx, kind):
    return [alert for alert in ctx.alerts.recent(200) if alert.kind == kind]


def run_monitor_until(ctx, until: float) -> None:
    while ctx.clock.now() < until:
        ctx.position_monitor.run_once()


def test_three_minutes_of_503_raise_one_unreachable_after_120_s_and_one_recovered(sim, tmp_path):
    settings = load_settings({"TRADING_ENVIRONMENT": "sim", "COINCALL_BASE_URL": sim.base_url,
                              "COINCALL_API_KEY_SIM": sim.api_key, "COINCALL_API_SECRET_SIM": sim.api_secret,
                              "STATE_DIR": str(tmp_path / "state"), "LOG_DIR": str(tmp_path / "logs")},
                             dotenv_path=None)
    assert settings.exchange_outage_alert_seconds == 120.0
    ctx = build_context(settings, clock=sim.clock, state_dir=tmp_path / "state", log_dir=tmp_path / "logs")
    try:
        run_monitor_until(ctx, sim.clock.now() + 60)             # healthy: start-up reconciliation done
        assert ctx.lifecycle_manager.hold_reason is None and ctx.alerts.recent(200) == []

        outage_from = sim.clock.now()
        rule = sim.faults.add(FaultRule(mode="http_5xx", http_status=503))   # every endpoint
        run_monitor_until(ctx, outage_from + 119)
        assert outage_alerts(ctx, "exchange_unreachable") == []     # none before 120 s
        run_monitor_until(ctx, outage_from + 180)
        [unreachable] = outage_alerts(ctx, "exchange_unreachable")
        assert unreachable.level == "CRITICAL"
        assert unreachable.time >= iso_utc(outage_from + 120)
        assert unreachable.detail["outage_seconds"] >= 120
        assert rule.fired >= 6                                       # polled all along, backed off

        sim.faults.remove(rule)
        faults_removed = sim.clock.now()
        run_monitor_until(ctx, faults_removed + 60)
        [recovered] = outage_alerts(ctx, "exchange_recovered")
        length = recovered.detail["outage_seconds"]
        assert 170 <= length <= 240                                  # first failure .. first answer
        assert f"after an outage of {length:.0f} s" in recovered.message
        assert recovered.time >= iso_utc(faults_removed)
        assert len(outage_alerts(ctx, "exchange_unreachable")) == 1  # once per outage
        assert ctx.account_manager.reachability.is_up

        kinds = [json.loads(line)["kind"] for line in (tmp_path / "logs" / "alerts.log").read_text().splitlines()]
        assert kinds.count("exchange_unreachable") == 1 and kinds.count("exchange_recovered") == 1
    finally:
        ctx.close()
