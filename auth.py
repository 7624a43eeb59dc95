"""Coincall request signing (API.md section 2), as pure functions.

Both the exchange client and the simulator's verifier use these, so a signature the
client builds is checked by the very same recipe on the other side of the socket.

prehash = METHOD + path + "?" + sorted(k=v of non-null params) + "&uuid=<key>&ts=<ts>&x-req-ts-diff=<diff>"
sign    = uppercase hex HMAC-SHA256(secret, prehash)
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Mapping

HEADER_API_KEY = "X-CC-APIKEY"
HEADER_SIGN = "sign"
HEADER_TS = "ts"
HEADER_TS_DIFF = "X-REQ-TS-DIFF"
DEFAULT_TS_DIFF_MS = 5000


def _strip_nulls(value: Any) -> Any:
    """Drop None values inside nested containers (API.md 2.3 step 2, simulator default)."""
    if isinstance(value, Mapping):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_strip_nulls(v) for v in value if v is not None]
    return value


def render_value(value: Any) -> str:
    """The text of one parameter value inside the prehash.

    Containers become compact JSON in the order given; scalars their plain ``str``.
    Booleans are rendered as JSON (``true``/``false``); the client never sends them.
    """
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(_strip_nulls(value), separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_prehash(
    method: str,
    path: str,
    params: Mapping[str, Any] | None,
    api_key: str,
    ts: int | str,
    diff: int | str = DEFAULT_TS_DIFF_MS,
) -> str:
    """The exact string Coincall signs, from the parameters actually sent.

    ``params`` is the GET query, the top-level keys of a JSON body, or the form fields.
    ``path`` is the URI path only (no host, no query string).
    """
    items = sorted(
        (str(k), render_value(v)) for k, v in (params or {}).items() if v is not None
    )
    joined = "&".join(f"{k}={v}" for k, v in items)
    suffix = f"uuid={api_key}&ts={ts}&x-req-ts-diff={diff}"
    query = f"{joined}&{suffix}" if joined else suffix
    return f"{method.upper()}{path}?{query}"


def sign(secret: str, prehash: str) -> str:
    """Uppercase hex HMAC-SHA256 of ``prehash`` keyed by ``secret``.

    ``hmac.digest`` is the one-shot form of ``hmac.new(...).digest()`` (the same bytes,
    without building an HMAC object): it runs twice per request, client and verifier.
    """
    return hmac.digest(secret.encode("utf-8"), prehash.encode("utf-8"), hashlib.sha256).hex().upper()


def signed_headers(
    method: str,
    path: str,
    params: Mapping[str, Any] | None,
    api_key: str,
    secret: str,
    ts: int,
    diff: int = DEFAULT_TS_DIFF_MS,
) -> dict[str, str]:
    """The four authentication headers for one request attempt."""
    prehash = build_prehash(method, path, params, api_key, ts, diff)
    return {
        HEADER_API_KEY: api_key,
        HEADER_SIGN: sign(secret, prehash),
        HEADER_TS: str(ts),
        HEADER_TS_DIFF: str(diff),
    }


def signatures_match(expected: str, received: str) -> bool:
    """Constant-time comparison of two signatures (case-sensitive, uppercase hex)."""
    return hmac.compare_digest(expected.encode("ascii", "replace"), received.encode("ascii", "replace"))
