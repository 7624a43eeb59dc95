"""A misspelled name in ``.env`` is refused at start-up, never left silently at its default.

Before (audit of 2026-12-07), a name in ``.env`` was refused only when it began with
``COINCALL_`` or was a near miss by a case-sensitive measure: ``client_order_prefix=102`` left
two daemons on one account prefix, and ``NOTIFY_WEBHOOK=…`` left every CRITICAL alert
undelivered while the operator believed it would page them. ``.env`` is the daemon's own file:
every name in it must be known. In the process environment, which holds plenty of other
variables, a known name in another case is refused too.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from config import load_settings
from errors import ConfigError


@pytest.mark.parametrize("line, hint", [
    ("client_order_prefix=102", "did you mean CLIENT_ORDER_PREFIX"),
    ("state_dir=/tmp/x", "did you mean STATE_DIR"),
    ("NOTIFY_WEBHOOK=https://hooks.example.com/T0/B0/xyz", "did you mean NOTIFY_WEBHOOK_URL"),
    ("WEBHOOK_URL=https://hooks.example.com/T0/B0/xyz", "did you mean NOTIFY_WEBHOOK_URL"),
    ("SOMETHING_ELSE=1", "see .env.example"),
])
def test_every_unknown_name_in_the_env_file_is_refused(tmp_path, line, hint):
    dotenv = tmp_path / ".env"
    dotenv.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=hint):
        load_settings({}, dotenv_path=dotenv)


def test_the_environment_keeps_its_own_variables_but_not_ours_in_another_case():
    assert load_settings({"PATH": "/usr/bin", "HOME": "/root", "NOTIFY_WEBHOOK": "x"}, dotenv_path=None)
    with pytest.raises(ConfigError, match="did you mean CLIENT_ORDER_PREFIX"):
        load_settings({"client_order_prefix": "102"}, dotenv_path=None)


def test_the_shipped_example_file_loads():
    example = Path(__file__).resolve().parents[2] / ".env.example"
    assert load_settings({}, dotenv_path=example).environment == "sim"
