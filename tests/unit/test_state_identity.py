"""The state directory's exchange record (docs/RECOVERY.md row E1): pure file work."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from errors import ConfigError
from state_identity import (
    EMBEDDED_EXCHANGE,
    IDENTITY_FILE,
    ExchangeIdentity,
    StateIdentityError,
    check_state_identity,
    exchange_identity,
    normalize_base_url,
    read_identity,
)

PROD = ExchangeIdentity("production", "https://api.coincall.com", "1695796692000001")


@pytest.mark.parametrize("url, expected", [
    ("https://API.coincall.com/", "https://api.coincall.com"),
    ("  http://127.0.0.1:8765  ", "http://127.0.0.1:8765"),
    ("https://betaapi.coincall.com/v1/", "https://betaapi.coincall.com/v1"),
])
def test_one_exchange_has_one_name(url, expected):
    assert normalize_base_url(url) == expected


def test_the_embedded_simulator_is_named_by_what_it_is_not_by_its_port():
    first = exchange_identity("sim", "http://127.0.0.1:40001", embedded=True, account_id=1695796692000001)
    second = exchange_identity("sim", "http://127.0.0.1:40777", embedded=True, account_id=1695796692000001)
    assert first == second and first.exchange == EMBEDDED_EXCHANGE and first.account == "1695796692000001"


@pytest.mark.parametrize("account", [None, "", "  ", True])
def test_an_identity_needs_an_account(account):
    with pytest.raises(ValueError):
        exchange_identity("sim", "http://127.0.0.1:1", embedded=False, account_id=account)


def test_the_first_start_writes_the_record_and_later_ones_match_it(tmp_path: Path):
    first = check_state_identity(tmp_path, PROD)
    again = check_state_identity(tmp_path, PROD)
    assert first.adopted and not again.adopted and again.identity == PROD
    assert json.loads((tmp_path / IDENTITY_FILE).read_text()) == PROD.to_dict()


@pytest.mark.parametrize("field, value", [("environment", "testnet"), ("exchange", "https://betaapi.coincall.com"),
                                          ("account", "42")])
def test_another_environment_exchange_or_account_is_refused_with_the_fix(tmp_path: Path, field, value):
    check_state_identity(tmp_path, PROD)
    other = ExchangeIdentity(**{**PROD.to_dict(), field: value})
    with pytest.raises(StateIdentityError) as raised:
        check_state_identity(tmp_path, other)
    message = str(raised.value)
    assert isinstance(raised.value, ConfigError) and "\n" not in message
    assert PROD.describe() in message and other.describe() in message
    assert "STATE_DIR" in message and "aside" in message
    assert read_identity(tmp_path) == PROD                               # never rewritten


@pytest.mark.parametrize("text", ["not json", "[]", json.dumps({"environment": "sim", "exchange": "x"})])
def test_an_unreadable_record_is_refused_not_replaced(tmp_path: Path, text):
    (tmp_path / IDENTITY_FILE).write_text(text)
    with pytest.raises(StateIdentityError, match="not a valid exchange record"):
        check_state_identity(tmp_path, PROD)
    assert (tmp_path / IDENTITY_FILE).read_text() == text


# ---------------------------------------------------------------------------------------------
# app.StateIdentityGate: when the exchange cannot be read at start
# ---------------------------------------------------------------------------------------------


class _Client:
    def __init__(self, answers: list) -> None:
        self.answers = answers

    def query_api_key(self):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def user_info(self):
        return {}


class _Reconciler:
    def __init__(self) -> None:
        self.checks: list = []
        self.new_dir = False

    def add_startup_check(self, check) -> None:
        self.checks.append(check)

    def note_new_state_dir(self) -> None:
        self.new_dir = True


def _gate(tmp_path: Path, answers: list):
    from types import SimpleNamespace

    from config import load_settings
    from app import StateIdentityGate
    from stop_flag import StopFlag

    settings = load_settings({"TRADING_ENVIRONMENT": "sim", "COINCALL_BASE_URL": "http://127.0.0.1:8765",
                              "COINCALL_API_KEY_SIM": "k" * 44, "COINCALL_API_SECRET_SIM": "s" * 32,
                              "STATE_DIR": str(tmp_path / "state")}, dotenv_path=None)
    ctx = SimpleNamespace(connection=SimpleNamespace(client=_Client(answers), is_embedded=False),
                          reconciler=_Reconciler(), store=SimpleNamespace(created=True))
    stop = StopFlag()
    return StateIdentityGate(ctx, settings, stop), ctx, stop


def test_an_unreadable_account_at_start_defers_the_check_to_the_start_up_reconciliation(tmp_path: Path):
    from errors import TransportError

    down = TransportError("GET /open/auth/user/query-api", "connection refused")
    gate, ctx, stop = _gate(tmp_path, [down, down, {"userId": 7}])

    assert gate.verify_at_start() is None and ctx.reconciler.checks == [gate]
    with pytest.raises(TransportError):
        gate()                                                         # still down: nothing reconciled
    gate()                                                             # up: recorded, a first start
    gate()                                                             # verified: no further request
    assert gate.verified and ctx.reconciler.new_dir and not stop.is_set
    assert read_identity(tmp_path / "state") == ExchangeIdentity("sim", "http://127.0.0.1:8765", "7")


def test_a_mismatch_found_after_the_start_stops_the_daemon_for_exit_2(tmp_path: Path, capsys):
    from errors import TransportError

    check_state_identity(tmp_path / "state", ExchangeIdentity("sim", "http://127.0.0.1:8765", "1"))
    gate, ctx, stop = _gate(tmp_path, [TransportError("GET /open/auth/user/query-api", "timeout"), {"userId": 7}])
    assert gate.verify_at_start() is None

    with pytest.raises(StateIdentityError):
        gate()

    assert stop.is_set and gate.refusal is not None and "account 1" in gate.refusal and "account 7" in gate.refusal
    assert gate.refuse(gate.refusal) == 2
    assert capsys.readouterr().err.startswith("configuration error: state directory")
