"""Settings are built from an explicit environment mapping and a .env file; bad values are refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from config import DEFAULT_BASE_URLS, Settings, load_settings
from errors import ConfigError

PROD_KEY = "PRODKEYabcdefghijklmnopqrstuvwxyz0123456789=="
PROD_SECRET = "prod-secret-DO-NOT-LEAK-7f3a9c"
TEST_KEY = "TESTKEYabcdefghijklmnopqrstuvwxyz0123456789=="
TEST_SECRET = "test-secret-DO-NOT-LEAK-51be02"
SIM_KEY = "SIMKEYabcdefghijklmnopqrstuvwxyz0123456789=="
SIM_SECRET = "sim-secret-DO-NOT-LEAK-c0ffee"


def load(env: dict[str, str], dotenv_path: str | None = None) -> Settings:
    return load_settings(env, dotenv_path=dotenv_path)


def config_error(env: dict[str, str], dotenv_path: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(env, dotenv_path)
    return str(info.value)


def prod_env(**extra: str) -> dict[str, str]:
    return {"TRADING_ENVIRONMENT": "production", "COINCALL_API_KEY_PROD": PROD_KEY, "COINCALL_API_SECRET_PROD": PROD_SECRET, **extra}


# --- defaults and environments ---------------------------------------------------------


def test_empty_environment_means_paper_trading_on_the_embedded_simulator():
    settings = load({})
    assert settings.environment == "sim"
    assert settings.base_url is None
    assert settings.credentials is None
    assert settings.embeds_simulator
    assert settings.ts_diff_ms == 5000
    assert settings.request_timeout_seconds == 30.0
    assert settings.poll_interval_seconds == 10.0
    assert settings.log_dir == Path("logs")
    assert settings.state_dir == Path("state")
    assert settings.sim_state_file == Path("state") / "simulator.json"
    assert settings.log_level == "INFO"
    assert settings.sim_seed == 7
    assert settings.client_order_prefix == 101
    assert settings.rfq_body_encoding == "form"


def test_production_uses_the_production_url_and_prod_key_pair():
    settings = load(prod_env())
    assert settings.environment == "production"
    assert settings.base_url == "https://api.coincall.com" == DEFAULT_BASE_URLS["production"]
    assert settings.credentials.api_key == PROD_KEY
    assert settings.credentials.api_secret == PROD_SECRET
    assert settings.credentials.source == "COINCALL_API_KEY_PROD"
    assert not settings.embeds_simulator


def test_testnet_uses_the_beta_url_and_test_key_pair_not_the_prod_one():
    env = {
        "TRADING_ENVIRONMENT": "testnet",
        "COINCALL_API_KEY_TEST": TEST_KEY,
        "COINCALL_API_SECRET_TEST": TEST_SECRET,
        "COINCALL_API_KEY_PROD": PROD_KEY,
        "COINCALL_API_SECRET_PROD": PROD_SECRET,
    }
    settings = load(env)
    assert settings.base_url == "https://betaapi.coincall.com"
    assert settings.credentials.api_key == TEST_KEY
    assert settings.credentials.source == "COINCALL_API_KEY_TEST"


def test_environment_name_is_case_insensitive():
    assert load({"TRADING_ENVIRONMENT": "SIM"}).environment == "sim"


def test_sim_with_base_url_talks_to_an_external_simulator_with_the_sim_pair():
    settings = load(
        {
            "TRADING_ENVIRONMENT": "sim",
            "COINCALL_BASE_URL": "http://127.0.0.1:8765/",
            "COINCALL_API_KEY_SIM": SIM_KEY,
            "COINCALL_API_SECRET_SIM": SIM_SECRET,
        }
    )
    assert settings.base_url == "http://127.0.0.1:8765"
    assert settings.credentials.api_key == SIM_KEY
    assert not settings.embeds_simulator


def test_sim_keys_without_base_url_still_embed_the_simulator():
    settings = load({"COINCALL_API_KEY_SIM": SIM_KEY, "COINCALL_API_SECRET_SIM": SIM_SECRET})
    assert settings.embeds_simulator and settings.credentials is None


def test_prod_keys_never_switch_sim_to_production():
    settings = load({"COINCALL_API_KEY_PROD": PROD_KEY, "COINCALL_API_SECRET_PROD": PROD_SECRET})
    assert settings.environment == "sim" and settings.credentials is None


def test_testnet_base_url_can_be_overridden_with_https():
    env = {
        "TRADING_ENVIRONMENT": "testnet",
        "COINCALL_API_KEY_TEST": TEST_KEY,
        "COINCALL_API_SECRET_TEST": TEST_SECRET,
        "COINCALL_BASE_URL": "https://beta.example.test",
    }
    assert load(env).base_url == "https://beta.example.test"


def test_every_tunable_is_read():
    settings = load(
        {
            "COINCALL_TS_DIFF_MS": "3000",
            "COINCALL_TIMEOUT_SECONDS": "12.5",
            "POLL_INTERVAL_SECONDS": "2",
            "LOG_DIR": "/tmp/x/logs",
            "STATE_DIR": "/tmp/x/state",
            "LOG_LEVEL": "debug",
            "SIM_SEED": "42",
            "CLIENT_ORDER_PREFIX": "250",
            "COINCALL_RFQ_BODY_ENCODING": "JSON",
        }
    )
    assert settings.ts_diff_ms == 3000
    assert settings.request_timeout_seconds == 12.5
    assert settings.poll_interval_seconds == 2.0
    assert settings.log_dir == Path("/tmp/x/logs")
    assert settings.state_dir == Path("/tmp/x/state")
    assert settings.sim_state_file == Path("/tmp/x/state/simulator.json")
    assert settings.log_level == "DEBUG"
    assert settings.sim_seed == 42
    assert settings.client_order_prefix == 250
    assert settings.rfq_body_encoding == "json"


def test_sim_state_file_can_be_placed_explicitly():
    assert load({"STATE_DIR": "s", "SIM_STATE_FILE": "/tmp/paper.json"}).sim_state_file == Path("/tmp/paper.json")


def test_settings_are_frozen():
    settings = load({})
    with pytest.raises(AttributeError):
        settings.environment = "production"  # type: ignore[misc]


# --- .env file ---------------------------------------------------------------------------


def test_dotenv_file_is_read_and_the_process_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\n"
        "TRADING_ENVIRONMENT=production\n"
        f"COINCALL_API_KEY_PROD={PROD_KEY}\n"
        f"COINCALL_API_SECRET_PROD='{PROD_SECRET}'\n"
        "POLL_INTERVAL_SECONDS=5\n"
        "LOG_LEVEL=WARNING\n"
    )
    settings = load({"POLL_INTERVAL_SECONDS": "7"}, str(dotenv))
    assert settings.environment == "production"
    assert settings.credentials.api_secret == PROD_SECRET
    assert settings.poll_interval_seconds == 7.0  # env over .env
    assert settings.log_level == "WARNING"  # only in .env


def test_dotenv_is_not_written_into_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("SIM_SEED", raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text("SIM_SEED=99\n")
    assert load({}, str(dotenv)).sim_seed == 99
    import os

    assert "SIM_SEED" not in os.environ


def test_missing_dotenv_file_is_fine(tmp_path):
    assert load({}, str(tmp_path / "absent.env")).environment == "sim"


def test_blank_values_count_as_unset_like_a_copied_env_example(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("TRADING_ENVIRONMENT=\nCOINCALL_API_KEY_PROD=\nCOINCALL_BASE_URL=\nLOG_DIR=\n")
    settings = load({}, str(dotenv))
    assert settings.environment == "sim" and settings.embeds_simulator and settings.log_dir == Path("logs")


def test_a_blank_process_variable_unsets_the_dotenv_value(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("TRADING_ENVIRONMENT=production\n")
    assert load({"TRADING_ENVIRONMENT": ""}, str(dotenv)).environment == "sim"


def test_default_reads_the_process_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SIM_SEED", "123")
    assert load_settings(dotenv_path=None).sim_seed == 123


# --- refusals: one ConfigError naming the variable ------------------------------------


def test_unknown_environment_names_the_variable_value_and_choices():
    message = config_error({"TRADING_ENVIRONMENT": "prod"})
    assert message == "TRADING_ENVIRONMENT='prod' is not valid: use sim, testnet or production"


def test_production_without_keys_says_which_variables_to_add():
    message = config_error({"TRADING_ENVIRONMENT": "production"})
    assert message == (
        "TRADING_ENVIRONMENT=production needs COINCALL_API_KEY_PROD and COINCALL_API_SECRET_PROD: "
        "add them to .env (see .env.example)"
    )


def test_production_with_key_but_no_secret_is_refused_without_showing_the_key():
    message = config_error({"TRADING_ENVIRONMENT": "production", "COINCALL_API_KEY_PROD": PROD_KEY})
    assert "COINCALL_API_SECRET_PROD" in message and PROD_KEY not in message


def test_testnet_without_test_keys_is_refused_even_with_prod_keys():
    message = config_error(
        {"TRADING_ENVIRONMENT": "testnet", "COINCALL_API_KEY_PROD": PROD_KEY, "COINCALL_API_SECRET_PROD": PROD_SECRET}
    )
    assert "COINCALL_API_KEY_TEST" in message and "COINCALL_API_SECRET_TEST" in message
    assert PROD_SECRET not in message


def test_external_simulator_without_sim_keys_points_to_python_m_simulator():
    message = config_error({"COINCALL_BASE_URL": "http://127.0.0.1:8765"})
    assert "COINCALL_API_KEY_SIM" in message and "COINCALL_API_SECRET_SIM" in message
    assert "python -m simulator" in message


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:8765", "127.0.0.1:8765", "http://", "localhost"])
def test_base_url_must_be_http_or_https(url):
    message = config_error({"COINCALL_BASE_URL": url, "COINCALL_API_KEY_SIM": SIM_KEY, "COINCALL_API_SECRET_SIM": SIM_SECRET})
    assert message.startswith(f"COINCALL_BASE_URL={url!r} is not valid")
    assert "http" in message


def test_production_base_url_override_must_be_https():
    message = config_error(prod_env(COINCALL_BASE_URL="http://127.0.0.1:8765"))
    assert message.startswith("COINCALL_BASE_URL='http://127.0.0.1:8765'") and "https" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COINCALL_TS_DIFF_MS", "99"),
        ("COINCALL_TS_DIFF_MS", "60001"),
        ("COINCALL_TS_DIFF_MS", "5000.5"),
        ("COINCALL_TS_DIFF_MS", "five"),
        ("COINCALL_TIMEOUT_SECONDS", "0"),
        ("COINCALL_TIMEOUT_SECONDS", "-1"),
        ("COINCALL_TIMEOUT_SECONDS", "nan"),
        ("POLL_INTERVAL_SECONDS", "0"),
        ("POLL_INTERVAL_SECONDS", "inf"),
        ("POLL_INTERVAL_SECONDS", "soon"),
        ("LOG_LEVEL", "LOUD"),
        ("SIM_SEED", "-1"),
        ("SIM_SEED", "x"),
        ("CLIENT_ORDER_PREFIX", "99"),
        ("CLIENT_ORDER_PREFIX", "900"),
        ("COINCALL_RFQ_BODY_ENCODING", "xml"),
    ],
)
def test_invalid_values_name_the_variable_and_the_value(name, value):
    message = config_error({name: value})
    assert message.startswith(f"{name}={value!r} ")
    assert ": use " in message  # the fix


def test_boundaries_are_inclusive_where_documented():
    settings = load({"COINCALL_TS_DIFF_MS": "100", "CLIENT_ORDER_PREFIX": "899"})
    assert settings.ts_diff_ms == 100 and settings.client_order_prefix == 899
    assert load({"COINCALL_TS_DIFF_MS": "60000", "CLIENT_ORDER_PREFIX": "100"}).ts_diff_ms == 60000


def test_misspelt_coincall_variable_is_refused_with_a_suggestion():
    message = config_error({"COINCALL_API_KEY_PRODUCTION": PROD_KEY})
    assert message.startswith("COINCALL_API_KEY_PRODUCTION is not a known setting")
    assert "COINCALL_API_KEY_PROD" in message
    assert PROD_KEY not in message


def test_unrelated_variables_are_ignored():
    assert load({"PATH": "/bin", "HOME": "/root", "CI": "true"}).environment == "sim"


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        load({"TRADING_ENVIRONMENT": "mainnet"})


# --- secrets never leak -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "secret", "key"),
    [
        (prod_env(), PROD_SECRET, PROD_KEY),
        (
            {"TRADING_ENVIRONMENT": "testnet", "COINCALL_API_KEY_TEST": TEST_KEY, "COINCALL_API_SECRET_TEST": TEST_SECRET},
            TEST_SECRET,
            TEST_KEY,
        ),
        (
            {"COINCALL_BASE_URL": "http://127.0.0.1:9", "COINCALL_API_KEY_SIM": SIM_KEY, "COINCALL_API_SECRET_SIM": SIM_SECRET},
            SIM_SECRET,
            SIM_KEY,
        ),
    ],
)
def test_secret_and_full_key_absent_from_repr_str_and_describe(env, secret, key):
    settings = load(env)
    for text in (repr(settings), str(settings), settings.describe(), f"{settings}", f"{settings!r}"):
        assert secret not in text
        assert key not in text
    assert key[:4] in settings.describe()  # masked, still recognisable
    assert env_key_variable(env) in settings.describe()


def env_key_variable(env: dict[str, str]) -> str:
    return next(name for name in env if name.startswith("COINCALL_API_KEY_"))


def test_secrets_never_appear_in_error_messages():
    cases = [
        prod_env(COINCALL_BASE_URL="ftp://x"),
        {"TRADING_ENVIRONMENT": "production", "COINCALL_API_SECRET_PROD": PROD_SECRET},
        {"COINCALL_BASE_URL": "http://127.0.0.1:1", "COINCALL_API_SECRET_SIM": SIM_SECRET},
        prod_env(POLL_INTERVAL_SECONDS="-3"),
    ]
    for env in cases:
        message = config_error(env)
        assert PROD_SECRET not in message and SIM_SECRET not in message and PROD_KEY not in message


def test_describe_for_the_embedded_simulator_is_one_line():
    text = load({}).describe()
    assert "\n" not in text
    assert "environment=sim" in text and "embedded simulator" in text


def test_describe_names_the_production_url():
    text = load(prod_env()).describe()
    assert "environment=production" in text and "https://api.coincall.com" in text


# --- the documentation stays in step with the code --------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_env_example_loads_as_the_embedded_default():
    settings = load({}, str(REPO_ROOT / ".env.example"))
    assert settings.environment == "sim" and settings.embeds_simulator
    assert settings.poll_interval_seconds == 10.0 and settings.ts_diff_ms == 5000


def test_every_variable_is_documented_in_env_example_and_readme():
    from config import KNOWN_VARIABLES

    example = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for name in sorted(KNOWN_VARIABLES):
        assert f"\n{name}=" in example, f"{name} missing from .env.example"
        assert f"`{name}`" in readme, f"{name} missing from README.md"


# --- issue 9: near misses, one-second floors, usable directories ------------------------


@pytest.mark.parametrize(("typo", "meant"), [("POLL_INTERVAL_SECOND", "POLL_INTERVAL_SECONDS"), ("LOGDIR", "LOG_DIR"),
                                             ("TRADING_ENVIROMENT", "TRADING_ENVIRONMENT"), ("STATEDIR", "STATE_DIR")])
def test_a_near_miss_of_a_known_variable_is_refused_with_a_suggestion(typo, meant):
    message = config_error({typo: "x"})
    assert message.startswith(f"{typo} is not a known setting") and f"did you mean {meant}?" in message


@pytest.mark.parametrize(("name", "value"), [("POLL_INTERVAL_SECONDS", "0.999"), ("COINCALL_TIMEOUT_SECONDS", "0.3")])
def test_sub_second_poll_and_timeout_are_refused_and_one_second_is_accepted(name, value):
    assert "from 1 to" in config_error({name: value})
    settings = load({"POLL_INTERVAL_SECONDS": "1", "COINCALL_TIMEOUT_SECONDS": "1"})
    assert settings.poll_interval_seconds == 1.0 and settings.request_timeout_seconds == 1.0


def test_directory_problem_walks_up_to_the_nearest_existing_directory(tmp_path, monkeypatch):
    from config import directory_problem

    monkeypatch.chdir(tmp_path)
    (tmp_path / "plain").write_text("x")
    assert directory_problem(Path("new/deeper/state")) is None          # created later, parent writable
    assert directory_problem(Path("state")) is None
    assert directory_problem(tmp_path) is None                           # exists, writable
    assert directory_problem(Path("plain")) == "it is a file, not a directory"
    assert directory_problem(Path("plain/x/y")) == "its parent plain is a file, not a directory"
    assert "not expanded" in directory_problem(Path("~/state"))
    assert not (tmp_path / "new").exists() and not (tmp_path / "state").exists()   # no side effects


@pytest.mark.parametrize("name, value", [("COINCALL_API_KEY_PROD", PROD_KEY[:4] + "\r" + PROD_KEY[4:]),
                                         ("COINCALL_API_SECRET_PROD", PROD_SECRET[:4] + "\n" + PROD_SECRET[4:]),
                                         ("COINCALL_API_KEY_PROD", PROD_KEY[:4] + " " + PROD_KEY[4:])])
def test_a_key_with_a_line_end_or_a_blank_inside_is_refused_without_its_value(name, value):
    """Line ends and blanks around a value are trimmed; inside it, the HTTP library refused the
    header with the key itself in its message. Refused at start-up, naming neither value."""
    message = config_error(prod_env(**{name: value}))
    assert "space or a control character" in message and "COINCALL_API_KEY_PROD" in message
    assert PROD_KEY not in message and PROD_SECRET not in message and PROD_KEY[:4] + " " not in message
