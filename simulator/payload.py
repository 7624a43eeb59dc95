"""Pre-serialized response payloads.

A chain call renders ~180 option rows (~125 KB of JSON); serialising them anew on every
request would make the simulator, not the daemon, the bottleneck of every benchmark.
Handlers that can cache their rows' JSON text return it wrapped in ``RawJSON`` and the
server embeds it verbatim in the envelope.
"""
from __future__ import annotations


class RawJSON(str):
    """JSON text that the server inserts as the envelope's ``data`` without re-encoding."""
