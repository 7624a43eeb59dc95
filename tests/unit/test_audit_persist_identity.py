"""The database itself says whose trades it holds (docs/RECOVERY.md row E1; audit P4).

Before, the exchange record of a state directory lived only beside the database
(``exchange_identity.json``): a populated ``trader.db`` carried to another directory without
that file was adopted for whatever account the start pointed at, with a WARNING. Now the
record is kept inside the database too (``StateStore.record_identity``), written at the first
good start and compared at every start: a database that belongs to another account refuses,
whatever the JSON file says or whether it is there. A store with no record anywhere (written
before there were records) keeps the documented upgrade path: adopted, WARNING by the caller.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from clock import SimulatedClock
from config import STATE_DB_NAME
from persistence import IDENTITY_EVENT, StateStore
from state_identity import (
    ExchangeIdentity,
    StateIdentityError,
    check_state_identity,
    read_identity,
    read_store_identity,
    write_identity,
)
from stop_flag import StopFlag

START = 1_772_528_400.0
PROD = "https://api.coincall.com"
ACCOUNT_111 = ExchangeIdentity("production", PROD, "111")
ACCOUNT_222 = ExchangeIdentity("production", PROD, "222")


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


def populated_store(state_dir: Path, clock: SimulatedClock) -> StateStore:
    state_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(state_dir / STATE_DB_NAME, clock=clock)
    store.save_trade({"id": "T000000007", "state": "OPEN", "strategy": "s1"})   # a live trade of its account
    return store


def carry_database_only(source: Path, target: Path) -> StateStore:
    target.mkdir(parents=True, exist_ok=True)
    (target / STATE_DB_NAME).write_bytes((source / STATE_DB_NAME).read_bytes())
    return StateStore(target / STATE_DB_NAME)


def test_row_e1_a_database_carried_without_its_file_refuses_another_account(tmp_path, clock):
    old_dir, new_dir = tmp_path / "prod_111", tmp_path / "moved"
    store = populated_store(old_dir, clock)
    first = check_state_identity(old_dir, ACCOUNT_111, store=store)       # its first good start
    assert first.adopted and read_identity(old_dir) == ACCOUNT_111 == read_store_identity(store)
    store.close()

    carried = carry_database_only(old_dir, new_dir)
    assert not carried.created and carried.load_trades()
    with pytest.raises(StateIdentityError) as refused:
        check_state_identity(new_dir, ACCOUNT_222, store=carried)

    message = str(refused.value)
    assert "account 111" in message and "account 222" in message and STATE_DB_NAME in message
    assert "use another STATE_DIR" in message and "aside" in message
    assert read_identity(new_dir) is None                                  # nothing adopted


def test_row_e1_a_carried_database_of_the_same_account_is_no_adoption_and_rewrites_the_file(tmp_path, clock):
    old_dir, new_dir = tmp_path / "prod_111", tmp_path / "moved"
    store = populated_store(old_dir, clock)
    check_state_identity(old_dir, ACCOUNT_111, store=store)
    store.close()

    carried = carry_database_only(old_dir, new_dir)
    again = check_state_identity(new_dir, ACCOUNT_111, store=carried)

    assert not again.adopted and read_identity(new_dir) == ACCOUNT_111
    assert len(carried.events(IDENTITY_EVENT)) == 1                         # not written twice


def test_row_e1_the_database_record_refuses_even_when_the_file_beside_it_agrees_with_this_start(tmp_path, clock):
    """A database of account 111 dropped into the directory of account 222."""
    old_dir, new_dir = tmp_path / "prod_111", tmp_path / "prod_222"
    store = populated_store(old_dir, clock)
    check_state_identity(old_dir, ACCOUNT_111, store=store)
    store.close()
    new_dir.mkdir()
    write_identity(new_dir, ACCOUNT_222)

    carried = carry_database_only(old_dir, new_dir)
    with pytest.raises(StateIdentityError, match="account 111"):
        check_state_identity(new_dir, ACCOUNT_222, store=carried)


def test_row_e1_a_store_from_before_the_records_is_adopted_and_recorded_so_a_later_carry_refuses(tmp_path, clock):
    old_dir, new_dir = tmp_path / "old", tmp_path / "moved"
    populated_store(old_dir, clock).close()                                 # no record anywhere: an upgrade
    store = StateStore(old_dir / STATE_DB_NAME, clock=clock)

    upgrade = check_state_identity(old_dir, ACCOUNT_111, store=store)

    assert upgrade.adopted and not store.created                           # the caller warns (row E1)
    assert read_store_identity(store) == ACCOUNT_111
    store.close()
    carried = carry_database_only(old_dir, new_dir)
    with pytest.raises(StateIdentityError):
        check_state_identity(new_dir, ACCOUNT_222, store=carried)


def test_without_a_store_the_check_is_the_file_check_it_always_was(tmp_path):
    assert check_state_identity(tmp_path, ACCOUNT_111).adopted
    assert not check_state_identity(tmp_path, ACCOUNT_111).adopted
    with pytest.raises(StateIdentityError):
        check_state_identity(tmp_path, ACCOUNT_222)


def test_an_unreadable_database_record_refuses(tmp_path, clock):
    store = populated_store(tmp_path, clock)
    store.record_identity({"environment": "production", "exchange": PROD})   # no account
    with pytest.raises(StateIdentityError, match="not valid"):
        check_state_identity(tmp_path, ACCOUNT_111, store=store)


def test_row_e1_the_start_up_gate_refuses_a_database_of_another_account(tmp_path, clock):
    from app import StateIdentityGate

    old_dir, new_dir = tmp_path / "prod_111", tmp_path / "moved"
    store = populated_store(old_dir, clock)
    check_state_identity(old_dir, ACCOUNT_111, store=store)
    store.close()
    carried = carry_database_only(old_dir, new_dir)
    client = SimpleNamespace(query_api_key=lambda: {"userId": "222"}, user_info=lambda: {"userId": "222"})
    ctx = SimpleNamespace(connection=SimpleNamespace(client=client, is_embedded=False),
                          reconciler=SimpleNamespace(note_new_state_dir=lambda: None,
                                                     add_startup_check=lambda check: None),
                          store=carried)
    settings = SimpleNamespace(environment="production", base_url=PROD, state_dir=new_dir)

    assert StateIdentityGate(ctx, settings, StopFlag()).verify_at_start() is not None
