"""The one error type of the simulated exchange: a Coincall error envelope to send back."""
from __future__ import annotations


class SimError(Exception):
    """Raised by exchange handlers; the server turns it into ``{"code": code, "msg": msg}``.

    ``http_status`` is 200 for every application error (API.md 3.2); a handler that must
    answer like an unrouted path (e.g. ``rfqList`` for a taker-only key) uses 404.
    """

    def __init__(self, code: int, msg: str, http_status: int = 200) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = int(code)
        self.msg = msg
        self.http_status = http_status
