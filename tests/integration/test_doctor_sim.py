"""``doctor`` against the simulator: a clean exchange passes; each fault gives its FAIL/WARN and exit code.

The simulator runs in this process on a frozen simulated clock (tests/conftest.py); doctor
reaches it over 127.0.0.1 like any remote exchange. No sleeping: the client's rate budget
waits on the simulated clock.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from clock import SimulatedClock
from config import Credentials, Settings
from doctor import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, DoctorOptions, refuse_orders, run_doctor
from doctor_orders import JOURNAL_FILE, doctor_client_order_id, is_doctor_order_id
from errors import ConfigError
from order_ledger import build_client_order_id
from simulator.faults import CODE_10000, FaultRule
from simulator.mutations import Mutation


def _settings(sim, tmp_path: Path, *, key: str | None = None, secret: str | None = None,
              base_url: str | None = None, environment: str = "sim") -> Settings:
    creds = Credentials(key or sim.api_key, secret or sim.api_secret, source="COINCALL_API_KEY_SIM")
    return Settings(environment=environment, base_url=base_url or sim.base_url, credentials=creds,
                    state_dir=tmp_path / "state", log_dir=tmp_path / "logs")


def _line(report, check: str):
    found = [line for line in report.lines if line.check == check]
    assert found, f"no {check!r} line in {[l.check for l in report.lines]}"
    return found[0]


def _doctor(settings, clock, **options):
    return run_doctor(settings, clock, [], DoctorOptions(samples=1, **options))


def test_doctor_passes_against_a_healthy_simulator(sim, sim_clock, tmp_path):
    report = _doctor(_settings(sim, tmp_path), sim_clock)
    failing = [l for l in report.lines if l.status in ("FAIL", "WARN")]
    assert failing == [] and report.exit_code == EXIT_OK
    for check in ("reachability", "clock", "key", "account", "instruments", "option chain", "perpetual BTCUSD",
                  "perpetual ETHUSD", "rate limits", "state directory"):
        assert _line(report, check).status == "PASS"
    document = json.loads(report.to_json())
    assert document["exit_code"] == 0 and {a["name"] for a in document["assumptions"]} >= {"rfq_body_encoding"}


def test_a_wrong_secret_fails_the_key_check_with_the_fix(sim, sim_clock, tmp_path):
    report = _doctor(_settings(sim, tmp_path, secret="not-the-secret-at-all"), sim_clock)
    key = _line(report, "key")
    assert key.status == "FAIL" and "refused" in key.detail and "TRADING_ENVIRONMENT" in key.fix
    assert report.exit_code == EXIT_FAIL


def test_a_read_only_key_fails_with_the_trade_permission_fix(sim, sim_clock, tmp_path):
    account = sim.exchange.add_account("viewer", read_only=True)
    report = _doctor(_settings(sim, tmp_path, key=account.api_key, secret=account.api_secret), sim_clock)
    key = _line(report, "key")
    assert key.status == "FAIL" and "read-only" in key.detail and "Trade permission" in key.fix
    assert report.exit_code == EXIT_FAIL


def test_a_skewed_clock_beyond_the_signing_window_fails(sim, sim_clock, tmp_path):
    skewed = SimulatedClock(start=sim_clock.now() + 30.0, speed=0)
    report = _doctor(_settings(sim, tmp_path), skewed)
    clock = _line(report, "clock")
    assert clock.status == "FAIL" and "ahead of" in clock.detail and "ntp" in clock.fix.lower()
    assert _line(report, "key").status == "PASS"   # the client corrects its signatures meanwhile
    assert report.exit_code == EXIT_FAIL


def test_a_small_skew_inside_the_window_is_a_warning(sim, sim_clock, tmp_path):
    report = _doctor(_settings(sim, tmp_path), SimulatedClock(start=sim_clock.now() - 2.0, speed=0))
    assert _line(report, "clock").status == "WARN" and report.exit_code == EXIT_OK


def test_a_field_missing_from_the_chain_fails_naming_it(sim, sim_clock, tmp_path):
    sim.mutations.add(Mutation(kind="drop_fields", endpoint="option_chain", fields=("markPrice",)))
    report = _doctor(_settings(sim, tmp_path), sim_clock)
    chain = _line(report, "option chain")
    assert chain.status == "FAIL" and "markPrice" in chain.detail and "capture" in chain.fix
    assert report.exit_code == EXIT_FAIL


def test_a_rate_limit_storm_fails_the_rate_limit_check(sim, sim_clock, tmp_path):
    sim.faults.add(FaultRule(mode=CODE_10000, path="/open/*"))
    report = _doctor(_settings(sim, tmp_path), sim_clock)
    limits = _line(report, "rate limits")
    assert limits.status == "FAIL" and "throttled" in limits.detail and "another program" in limits.fix
    assert report.exit_code == EXIT_FAIL


def test_an_unreachable_host_fails_reachability_and_skips_the_rest(sim, sim_clock, tmp_path):
    with socket.socket() as probe:   # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report = _doctor(_settings(sim, tmp_path, base_url=f"http://127.0.0.1:{port}"), sim_clock)
    assert _line(report, "reachability").status == "FAIL"
    assert _line(report, "key").status == "SKIP" and report.exit_code == EXIT_FAIL


def test_orders_in_production_are_refused_without_i_understand(sim, tmp_path):
    production = _settings(sim, tmp_path, environment="production")
    assert "i-understand" in (refuse_orders(production, DoctorOptions(orders=True)) or "")
    assert refuse_orders(production, DoctorOptions(orders=True, i_understand=True)) is None
    assert refuse_orders(production, DoctorOptions()) is None


def test_run_doctor_itself_refuses_orders_in_production_before_any_request(sim, sim_clock, tmp_path):
    production = _settings(sim, tmp_path, environment="production")
    before = len(sim.requests)
    with pytest.raises(ConfigError, match="i-understand"):
        _doctor(production, sim_clock, orders=True)
    assert len(sim.requests) == before                # not one request
    assert not (tmp_path / "state").exists()         # nothing ran: no journal, no override file


def test_a_broken_override_file_is_a_configuration_error(sim, sim_clock, tmp_path):
    settings = _settings(sim, tmp_path)
    settings.overrides_path.parent.mkdir(parents=True)
    settings.overrides_path.write_text('{"values": {"perp_allow_fok": "yes"}}', encoding="utf-8")
    with pytest.raises(ConfigError, match="perp_allow_fok"):
        _doctor(settings, sim_clock)


def test_orders_round_trip_and_probes_leave_nothing_and_write_the_overrides(sim, sim_clock, tmp_path):
    settings = _settings(sim, tmp_path)
    report = _doctor(settings, sim_clock, orders=True, write_overrides=True)
    assert report.exit_code == EXIT_OK, report.format_text()
    assert _line(report, "order round trip").status == "PASS"
    assert _line(report, "perp round trip").status == "PASS"
    assert _line(report, "no order left").status == "PASS"
    probes = {p.probe: p for p in report.probes}
    assert probes["reduce_only_no_position"].value == 10536
    assert probes["post_only_cross"].value == 10001
    assert probes["stale_timestamp"].value == 10557
    assert probes["off_tick"].value == "truncate"
    written = json.loads(settings.overrides_path.read_text(encoding="utf-8"))
    assert written["values"]["reduce_only_no_position_code"] == 10536
    assert all(sim.exchange._orders[oid].state in (1, 3, 6) for oid in [o.order_id for o in
                                                                           sim.exchange._orders.values()])
    journal = json.loads((settings.state_dir / JOURNAL_FILE).read_text(encoding="utf-8"))
    assert journal["orders"] == {}


def test_doctor_ids_never_collide_with_the_daemons():
    coid = doctor_client_order_id(101, 7, 2)
    assert len(str(coid)) == 18 and is_doctor_order_id(coid, 101) and not is_doctor_order_id(coid, 102)
    daemon = build_client_order_id(101, 7, 2, 1, 0)
    assert not is_doctor_order_id(daemon, 101)
    from order_ledger import parse_client_order_id
    with pytest.raises(ValueError):
        parse_client_order_id(coid)


def test_the_command_line_exit_codes(sim, tmp_path, capsys):
    from main import main
    env = {"TRADING_ENVIRONMENT": "sim", "COINCALL_BASE_URL": sim.base_url, "COINCALL_API_KEY_SIM": sim.api_key,
           "COINCALL_API_SECRET_SIM": sim.api_secret, "STATE_DIR": str(tmp_path / "state"),
           "LOG_DIR": str(tmp_path / "logs")}
    production = {"TRADING_ENVIRONMENT": "production", "COINCALL_API_KEY_PROD": "k" * 16,
                  "COINCALL_API_SECRET_PROD": "s" * 16, "STATE_DIR": str(tmp_path / "p"), "LOG_DIR": str(tmp_path / "l")}
    assert main(["doctor", "--orders"], env=production, dotenv_path=None, strategies=[]) == EXIT_CONFIG
    assert "i-understand" in capsys.readouterr().err
    assert main(["doctor", "--write-overrides"], env=env, dotenv_path=None, strategies=[]) == EXIT_CONFIG
    code = main(["doctor", "--json", "--samples", "1"], env=env, dotenv_path=None, strategies=[],
                clock=SimulatedClock(start=sim.clock.now(), speed=0))
    document = json.loads(capsys.readouterr().out)
    assert code == document["exit_code"] == EXIT_OK and document["counts"]["FAIL"] == 0


def test_latency_is_the_http_exchange_itself_and_a_slow_route_is_a_warning(sim, sim_clock, tmp_path):
    # 3 simulated seconds on every account-summary answer: that route is slow, the others not.
    # The rate budget's own waits (2 account reads a second, 3 samples) are not latency.
    from simulator.faults import LATENCY
    sim.faults.add(FaultRule(mode=LATENCY, path="/open/account/summary/v1", seconds=3.0))
    report = run_doctor(_settings(sim, tmp_path), sim_clock, [], DoctorOptions(samples=3))
    slow = _line(report, "latency GET /open/account/summary/v1")
    assert slow.status == "WARN" and slow.detail.startswith("median 3000 ms, worst 3000 ms of 3") and slow.fix
    positions = _line(report, "latency GET /open/futures/position/get/v1")
    assert positions.status == "PASS" and positions.detail == "median 0 ms, worst 0 ms of 3"
    assert report.exit_code == EXIT_OK   # a slow route warns, it does not fail


def test_the_daemon_takes_the_rfq_minimum_and_the_greeks_convention_from_the_override_file(sim, sim_clock,
                                                                                              tmp_path):
    from app import build_context
    from exchange_assumptions import overrides_path, write_overrides
    settings = _settings(sim, tmp_path)
    default = build_context(settings, clock=sim_clock, state_dir=":memory:")
    try:
        assert default.executor.rfq_notional_threshold == 50_000.0
        assert default.account_manager.position_greeks == "per_position"
    finally:
        default.close()
    (tmp_path / "state").mkdir(exist_ok=True)
    write_overrides(overrides_path(tmp_path / "state"), {"rfq_min_notional_usd": (25_000.0, "probe"),
                                                         "position_greeks": ("per_contract", "probe")},
                    environment="sim", written_at_ms=1)
    overridden = build_context(settings, clock=sim_clock, state_dir=":memory:")
    try:
        assert overridden.executor.rfq_notional_threshold == 25_000.0
        assert overridden.account_manager.position_greeks == "per_contract"
    finally:
        overridden.close()


def test_the_readme_commands_on_the_embedded_simulator(tmp_path, capsys):
    # README "Before going live", steps 2, 3 and 5, as written, on the default paper set-up.
    from main import main
    env = {"STATE_DIR": str(tmp_path / "state"), "LOG_DIR": str(tmp_path / "logs")}
    clock = SimulatedClock(start=1_772_438_400.0, speed=0)
    assert main(["doctor"], env=env, dotenv_path=None, strategies=[], clock=clock) == EXIT_OK
    assert "PASS  key:" in capsys.readouterr().out
    capture = tmp_path / "capture"
    code = main(["doctor", "--orders", "--write-overrides", "--capture", str(capture)], env=env,
                dotenv_path=None, strategies=[], clock=clock)
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    assert (tmp_path / "state" / "exchange_overrides.json").is_file()
    captured = sorted(capture.rglob("*.json"))
    assert len(captured) > 10   # one file per answer (redaction itself: tests/unit/test_capture_redaction.py)


def test_a_post_only_cross_whose_fill_is_unreadable_fails_instead_of_passing_as_honoured(sim, sim_clock, tmp_path,
                                                                                        monkeypatch):
    # An exchange that lets a crossing post-only order through, then answers its query without fillQty:
    # "nothing filled" would be a verdict on missing data (the account may now hold the option).
    monkeypatch.setattr(sim.exchange, "_would_cross", lambda order: False)
    sim.mutations.add(Mutation(kind="drop_fields", endpoint="query_order", fields=("fillQty",)))
    report = _doctor(_settings(sim, tmp_path), sim_clock, orders=True)
    probe = {p.probe: p for p in report.probes}["post_only_cross"]
    assert not probe.settled and probe.assumption is None and "not readable" in probe.answer
    line = _line(report, "post-only honoured")
    assert line.status == "FAIL" and "position" in line.fix
    assert report.exit_code == EXIT_FAIL
