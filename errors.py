"""The typed errors of CoincallTrader (BEHAVIOUR.md preamble).

Every failure a caller must tell apart has its own class: a definitive exchange answer
(``ExchangeError`` and its classes), no answer at all (``TransportError``), an order POST
whose fate is unknown (``OrderOutcomeUnknown``), stale or missing market data
(``StaleDataError``), bad configuration (``ConfigError``) and so on. None of them ever
carries a secret: messages name environment variables, never their values.
"""
from __future__ import annotations

from typing import Any

# Exchange codes by handling class (API.md 3.3 "Client class").
TRANSIENT_CODES = frozenset({500, 10000, 10605})
AUTH_CODES = frozenset({4002, 4003, 4004, 7001, 10006, 10008, 10551, 10554, 10555, 10556, 10560, 10562})
TIMESTAMP_CODES = frozenset({10557})
UNKNOWN_OUTCOME_CODES = frozenset({10537, 10582, 10583, 4005, 10576, 10577})
NOT_FOUND_CODES = frozenset({10584})
ALREADY_FINAL_CODES = frozenset({11101, 11102})
HALT_CODES = frozenset({10609, 10620})


class TraderError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(TraderError, ValueError):
    """Bad configuration. The message names the field, the bad value and the fix."""


class ExchangeError(TraderError):
    """The exchange answered with a non-zero ``code``: a definitive answer."""

    def __init__(self, code: int, msg: str | None, endpoint: str, data: Any = None) -> None:
        self.code = int(code)
        self.msg = msg or ""
        self.endpoint = endpoint
        self.data = data
        super().__init__(f"Coincall error {self.code} on {endpoint}: {self.msg}")

    @property
    def is_transient(self) -> bool:
        return self.code in TRANSIENT_CODES

    @property
    def is_auth(self) -> bool:
        return self.code in AUTH_CODES

    @property
    def is_timestamp(self) -> bool:
        return self.code in TIMESTAMP_CODES

    @property
    def is_not_found(self) -> bool:
        return self.code in NOT_FOUND_CODES

    @property
    def is_already_final(self) -> bool:
        return self.code in ALREADY_FINAL_CODES

    @property
    def is_halt(self) -> bool:
        return self.code in HALT_CODES

    @property
    def outcome_unknown(self) -> bool:
        """True when the code does not prove that nothing happened (query by id)."""
        return self.code in UNKNOWN_OUTCOME_CODES or self.code in TRANSIENT_CODES


class AuthError(ExchangeError):
    """The exchange refused our credentials or signature: stop trading, alert, no retry loop."""


class RateLimitedError(ExchangeError):
    """Throttled (code 10000/10605, or HTTP 429 reported as code 429)."""


class TransportError(TraderError):
    """No usable answer: connection error, timeout, HTTP 5xx or an unparseable body."""

    def __init__(self, endpoint: str, reason: str, status: int | None = None) -> None:
        self.endpoint = endpoint
        self.reason = reason
        self.status = status
        where = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"no usable answer from {endpoint}{where}: {reason}")


class EndpointNotFound(TraderError):
    """HTTP 404: the route does not exist, or the key's role may not use it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"HTTP 404 for {endpoint}")


class OrderOutcomeUnknown(TraderError):
    """A non-idempotent POST got no definitive answer: it may or may not have executed.

    Never re-send it. Resolve it by querying (by ``clientOrderId`` for orders, by the
    block-trade list for RFQ accepts).
    """

    def __init__(self, endpoint: str, reason: str, client_order_id: int | None = None) -> None:
        self.endpoint = endpoint
        self.reason = reason
        self.client_order_id = client_order_id
        extra = f" clientOrderId={client_order_id}" if client_order_id is not None else ""
        super().__init__(f"outcome unknown for {endpoint}{extra}: {reason}")


# Backwards-friendly alias used in the issue text.
AmbiguousOutcome = OrderOutcomeUnknown


class StaleDataError(TraderError):
    """Market data is missing, too old or frozen: no decision may be taken from it."""


class PayloadError(TraderError, ValueError):
    """An exchange answer lacks a field the product cannot do without, or carries it in a form
    that cannot be read (``coincall_payloads``); ``field`` names it. Never a ``KeyError``."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class SnapshotError(TraderError):
    """An account snapshot could not be taken (a failed call is never an empty account)."""


class SelectionError(TraderError):
    """Legs could not be resolved to instruments."""


class LedgerCapError(TraderError):
    """A hard order cap of the ledger would be exceeded; no order was sent."""
