"""COINCALL_BASE_URL says what the environment says (found by an audit, each failing before its fix).

The environment's name decides the banners, the "paper trading" label, ``doctor --orders``
and ``--speed``: "sim" pointed at the real exchange once traded it while every line said
paper trading, and "testnet" could point at production. A user:password in the URL reached
every banner, and a port that is not a number passed until the first request.
"""
from __future__ import annotations

import pytest

import main as main_module
from instance_lock import InstanceLock
from tests.unit.test_config import PROD_KEY, SIM_KEY, SIM_SECRET, config_error, load, prod_env

PASSWORD = "proxy-pass-DO-NOT-LEAK-42"


def sim_env(url: str) -> dict[str, str]:
    return {"COINCALL_BASE_URL": url, "COINCALL_API_KEY_SIM": SIM_KEY, "COINCALL_API_SECRET_SIM": SIM_SECRET}


def env_on_testnet(url: str) -> dict[str, str]:
    return {"TRADING_ENVIRONMENT": "testnet", "COINCALL_BASE_URL": url, "COINCALL_API_KEY_TEST": PROD_KEY,
            "COINCALL_API_SECRET_TEST": "test-secret-x"}


@pytest.mark.parametrize("url", ["https://api.coincall.com", "https://betaapi.coincall.com/",
                                 "http://API.Coincall.com.:443", "https://ws.coincall.com"])
def test_sim_never_points_at_the_real_exchange(url):
    message = config_error(sim_env(url))
    assert "is the real exchange, but TRADING_ENVIRONMENT is sim" in message


def test_testnet_never_points_at_production():
    assert "is the production exchange, but TRADING_ENVIRONMENT is testnet" in config_error(
        env_on_testnet("https://api.coincall.com"))
    assert load(env_on_testnet("https://betaapi.coincall.com")).base_url == "https://betaapi.coincall.com"


def test_a_simulator_elsewhere_and_production_itself_are_accepted():
    assert load(sim_env("http://127.0.0.1:8765")).base_url == "http://127.0.0.1:8765"
    assert load(sim_env("http://sim.example.test:8765")).base_url == "http://sim.example.test:8765"
    assert load(prod_env(COINCALL_BASE_URL="https://api.coincall.com")).base_url == "https://api.coincall.com"


def test_a_password_in_the_url_is_refused_and_never_shown():
    message = config_error(prod_env(COINCALL_BASE_URL=f"https://user:{PASSWORD}@api.coincall.com"))
    assert "user name or password" in message and PASSWORD not in message


@pytest.mark.parametrize("url", ["https://api.coincall.com:abc", "https://api.coincall.com:99999",
                                 "https://api.coincall.com:0"])
def test_a_port_that_cannot_be_used_is_refused_at_start(url):
    assert "no usable port" in config_error(prod_env(COINCALL_BASE_URL=url))


@pytest.mark.parametrize("port", ["abc", "99999"])
def test_a_webhook_port_that_cannot_be_used_is_refused_without_showing_the_url(port):
    url = f"https://hooks.example.test:{port}/T0KEN-DO-NOT-LEAK"
    message = config_error({"NOTIFY_WEBHOOK_URL": url})
    assert "no usable port" in message and "T0KEN-DO-NOT-LEAK" not in message


def test_check_never_rewrites_the_paper_account_of_a_running_daemon(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    paper = state / "simulator.json"
    paper.write_text('{"not": "touched"}')
    env = {"STATE_DIR": str(state), "LOG_DIR": str(tmp_path / "logs")}
    lock = InstanceLock(state)                 # a daemon runs on this state directory
    assert lock.acquire()
    try:
        assert main_module.main(["check"], env=env, dotenv_path=None, strategies=[]) == 0
    finally:
        lock.release()
    assert paper.read_text() == '{"not": "touched"}'
