"""Which exchange a state directory belongs to (issue 9, finding 6; docs/RECOVERY.md row E1).

Why it exists: the store holds our trades on one exchange account. Pointed at another one
(the embedded simulator's state directory reused for testnet, a production key swapped in),
the start-up reconciliation would compare those trades with somebody else's positions and
"find" external closes that never happened. So the directory records, on its first good
start, the exchange environment, the exchange and the account it belongs to, in
``<state_dir>/exchange_identity.json``, and every later start refuses (exit 2) when they
differ, before anything is reconciled or traded.

The exchange is named by its base URL, except the embedded simulator: it listens on a fresh
random port at every start, so it is named "embedded simulator" and told apart by its paper
account. The account is the ``userId`` the exchange reports for our key.

The same record is kept inside the database too (``StateStore.record_identity``), because
the database is what holds the trades: a ``trader.db`` carried to another directory without
its JSON file (or the file lost) still says whose trades it holds, and a start pointed at
another account refuses. A store that has no record anywhere (written before there was one)
adopts the current exchange with a WARNING, as docs/RECOVERY.md row E1 has always said.

Pure file work here: reading the account from the exchange is the caller's (``main``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable
from urllib.parse import urlsplit

from atomic_file import write_text_atomically
from errors import ConfigError

logger = logging.getLogger(__name__)

IDENTITY_FILE = "exchange_identity.json"
EMBEDDED_EXCHANGE = "embedded simulator"
_FIELDS = ("environment", "exchange", "account")


class StateIdentityError(ConfigError):
    """The state directory belongs to another exchange or account, or its record is unreadable."""


@runtime_checkable
class IdentityStore(Protocol):
    """A state store that keeps the identity record inside the database (``persistence.StateStore``)."""

    def stored_identity(self) -> dict | None: ...

    def record_identity(self, identity: Mapping[str, str]) -> None: ...


@dataclass(frozen=True)
class ExchangeIdentity:
    """Environment (``sim``, ``testnet``, ``production``), exchange and account of a state directory."""

    environment: str
    exchange: str
    account: str

    def describe(self) -> str:
        return f"environment {self.environment}, exchange {self.exchange}, account {self.account}"

    def to_dict(self) -> dict[str, str]:
        return {"environment": self.environment, "exchange": self.exchange, "account": self.account}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExchangeIdentity":
        values = {name: data.get(name) for name in _FIELDS}
        missing = [name for name, value in values.items() if not isinstance(value, str) or not value]
        if missing:
            raise ValueError(f"missing or empty field(s) {', '.join(missing)}")
        return cls(**{name: str(value) for name, value in values.items()})


@dataclass(frozen=True)
class IdentityCheck:
    """What ``check_state_identity`` found: the record in force and whether it was written now."""

    identity: ExchangeIdentity
    adopted: bool


def normalize_base_url(url: str) -> str:
    """``scheme://host[:port][/path]`` lower-cased, without a trailing slash: one exchange, one name."""
    parts = urlsplit(url.strip())
    netloc = parts.netloc.lower()
    path = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{netloc}{path}"


def exchange_identity(environment: str, base_url: str | None, *, embedded: bool,
                      account_id: Any) -> ExchangeIdentity:
    """The identity of the exchange this start talks to; ``account_id`` is the exchange's userId."""
    if account_id is None or isinstance(account_id, bool) or str(account_id).strip() == "":
        raise ValueError(f"the exchange reported no account id (userId {account_id!r})")
    if embedded:
        exchange = EMBEDDED_EXCHANGE
    elif base_url:
        exchange = normalize_base_url(base_url)
    else:
        raise ValueError("a remote exchange needs a base URL")
    return ExchangeIdentity(str(environment), exchange, str(account_id).strip())


def identity_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / IDENTITY_FILE


def read_identity(state_dir: str | Path) -> ExchangeIdentity | None:
    """The recorded identity, None when the directory has no record; a bad record raises."""
    path = identity_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateIdentityError(f"cannot read {path} ({exc.strerror}): fix its permissions") from None
    try:
        data = json.loads(text)
        if not isinstance(data, Mapping):
            raise ValueError("not a JSON object")
        return ExchangeIdentity.from_dict(data)
    except ValueError as exc:
        raise StateIdentityError(
            f"{path} is not a valid exchange record ({exc}): restore it, or move the state directory "
            f"{Path(state_dir)} aside if you do not know which exchange it belongs to") from None


def write_identity(state_dir: str | Path, identity: ExchangeIdentity) -> Path:
    path = identity_path(state_dir)
    write_text_atomically(path, json.dumps(identity.to_dict(), indent=2, sort_keys=True) + "\n", mode=0o644)
    return path


def mismatch_message(state_dir: str | Path, recorded: ExchangeIdentity, current: ExchangeIdentity) -> str:
    """One line: what the directory belongs to, what this start points at, and the fix."""
    return (f"state directory {Path(state_dir)} belongs to {recorded.describe()}, but this start is pointed at "
            f"{current.describe()}: refusing to reconcile one exchange's trades against another's; "
            f"use another STATE_DIR for this exchange, or move {Path(state_dir)} aside to start afresh")


def store_mismatch_message(state_dir: str | Path, database: str, recorded: ExchangeIdentity,
                           current: ExchangeIdentity) -> str:
    """One line, as ``mismatch_message``, for the record kept inside the database."""
    return (f"the state database {database} in {Path(state_dir)} holds the trades of {recorded.describe()}, but this "
            f"start is pointed at {current.describe()}: refusing to reconcile one account's trades against another's "
            f"(was the database copied from another state directory?); use another STATE_DIR for this exchange, or "
            f"move {Path(state_dir)} aside to start afresh")


def read_store_identity(store: object) -> ExchangeIdentity | None:
    """The record kept inside the database, None when it has none (or the store cannot keep one)."""
    if not isinstance(store, IdentityStore):
        return None
    data = store.stored_identity()
    if data is None:
        return None
    try:
        return ExchangeIdentity.from_dict(data)
    except ValueError as exc:
        raise StateIdentityError(f"the state database's exchange record is not valid ({exc}): move the state "
                                 f"directory aside if you do not know which exchange it belongs to") from None


def check_state_identity(state_dir: str | Path, current: ExchangeIdentity, *, store: object = None) -> IdentityCheck:
    """Compare the directory's record, and the one inside the database ``store``, with ``current``;
    write whichever is missing.

    Raises ``StateIdentityError`` (exit 2 in ``main``) when either record names another
    environment, exchange or account, or cannot be read. ``adopted`` is True only when
    neither record existed (a new directory, or a store from before the records): the caller
    tells those two apart (``StateStore.created``). A record inside the database alone (the
    JSON file lost, the database carried) is not an adoption: the file is written again
    from it once it matches.
    """
    recorded = read_identity(state_dir)
    if recorded is not None and recorded != current:
        raise StateIdentityError(mismatch_message(state_dir, recorded, current))
    in_store = read_store_identity(store)
    if in_store is not None and in_store != current:
        database = Path(str(getattr(store, "path", "trader.db"))).name
        raise StateIdentityError(store_mismatch_message(state_dir, database, in_store, current))
    if recorded is None:
        path = write_identity(state_dir, current)
        logger.info("state directory %s recorded as belonging to %s (%s)", Path(state_dir), current.describe(), path)
    if in_store is None and isinstance(store, IdentityStore):
        store.record_identity(current.to_dict())
        logger.info("state database of %s recorded as belonging to %s", Path(state_dir), current.describe())
    return IdentityCheck(current, adopted=recorded is None and in_store is None)
