"""The exchange assumptions: defaults, the override file doctor writes, and what reaches the client."""
from __future__ import annotations

import json

import pytest

from config import Settings, load_settings
from errors import ConfigError
from exchange_assumptions import SOURCE_DEFAULT, SOURCE_OVERRIDE, load_assumptions, overrides_path, write_overrides
from exchange_connection import assumptions_for, client_settings_for


def test_without_a_file_every_assumption_is_its_documented_default(tmp_path):
    assumptions = load_assumptions(tmp_path / "none.json", environment="sim")
    assert assumptions.value("stale_timestamp_code") == 10557 and assumptions.source("perp_allow_fok") == SOURCE_DEFAULT
    assert assumptions.client_overrides() == {}


def test_written_answers_are_loaded_merged_and_reach_the_client(tmp_path):
    path = overrides_path(tmp_path)
    write_overrides(path, {"perp_allow_fok": (True, "accepted")}, environment="sim", written_at_ms=1)
    write_overrides(path, {"reduce_only_no_position_code": (10536, "refused")}, environment="sim",
                    written_at_ms=2)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["values"] == {"perp_allow_fok": True, "reduce_only_no_position_code": 10536}
    settings = Settings(state_dir=tmp_path)
    assumptions = assumptions_for(settings)
    assert assumptions.source("perp_allow_fok") == SOURCE_OVERRIDE and assumptions.rows()[3].evidence == "accepted"
    client = client_settings_for(settings, "http://127.0.0.1:1", assumptions=assumptions)
    assert client.perp_allow_fok is True


def test_an_explicit_variable_wins_over_the_file(tmp_path):
    write_overrides(overrides_path(tmp_path), {"rfq_body_encoding": ("json", "probe")}, environment="sim",
                    written_at_ms=1)
    settings = load_settings({"STATE_DIR": str(tmp_path), "COINCALL_RFQ_BODY_ENCODING": "form"}, dotenv_path=None)
    assumptions = assumptions_for(settings)
    assert assumptions.value("rfq_body_encoding") == "form"
    assert client_settings_for(settings, "http://127.0.0.1:1", assumptions=assumptions).rfq_body_encoding == "form"
    plain = load_settings({"STATE_DIR": str(tmp_path)}, dotenv_path=None)
    assert client_settings_for(plain, "http://127.0.0.1:1",
                               assumptions=assumptions_for(plain)).rfq_body_encoding == "json"


@pytest.mark.parametrize("text, says", [
    ("not json", "unreadable"), ('{"values": {"nope": 1}}', "not a known assumption"),
    ('{"values": {"perp_allow_fok": 1}}', "perp_allow_fok"), ('{"values": {"off_tick_price": "sideways"}}', "sideways"),
    # A file that does not say which environment it was written for is refused too.
    ('{"values": {}}', "written for environment None"), ('{"environment": null, "values": {}}', "environment None"),
])
def test_a_broken_file_is_a_configuration_error_naming_it(tmp_path, text, says):
    path = overrides_path(tmp_path)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="exchange_overrides.json") as refused:
        load_assumptions(path, environment="sim")
    assert says in str(refused.value)


def test_a_file_written_in_another_environment_stops_the_start_naming_both_and_the_fix(tmp_path):
    write_overrides(overrides_path(tmp_path), {"rfq_body_encoding": ("json", "probe")}, environment="testnet",
                    written_at_ms=1)
    production = Settings(state_dir=tmp_path, environment="production")

    with pytest.raises(ConfigError) as refused:
        assumptions_for(production)

    message = str(refused.value)
    assert "'testnet'" in message and "'production'" in message and "--write-overrides" in message
    assert "exchange_overrides.json" in message
    testnet = Settings(state_dir=tmp_path, environment="testnet")
    assert assumptions_for(testnet).value("rfq_body_encoding") == "json"


def test_doctor_never_merges_answers_into_another_environments_file(tmp_path):
    path = overrides_path(tmp_path)
    write_overrides(path, {"perp_allow_fok": (True, "accepted")}, environment="testnet", written_at_ms=1)

    with pytest.raises(ConfigError, match="written for environment 'testnet'"):
        write_overrides(path, {"perp_allow_fok": (False, "refused")}, environment="production", written_at_ms=2)
    assert json.loads(path.read_text(encoding="utf-8"))["environment"] == "testnet"
