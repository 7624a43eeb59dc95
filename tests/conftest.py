"""Shared fixtures: a frozen simulated clock, a running simulator, and a signed-request helper.

The helper signs with ``auth`` and sends with ``requests`` directly, so the simulator's
own tests do not depend on the product's exchange client.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlencode

import pytest
import requests

import auth
from clock import SimulatedClock

# Monday 2026-03-02 06:00:00 UTC: two hours before the 08:00 daily expiry.
SIM_START = datetime(2026, 3, 2, 6, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def sim_clock() -> SimulatedClock:
    """A clock frozen at SIM_START; only ``advance()``/``sleep()`` move it."""
    return SimulatedClock(start=SIM_START, speed=0)


@pytest.fixture
def sim_factory(sim_clock):
    """Build customised simulators: ``sim_factory(rfq_body_mode="form_only", seed=3)``.

    Keyword arguments naming ``SimulatorConfig`` fields go there, ``ServerConfig``
    fields go into its ``server``; ``clock=`` and ``state_file=`` are passed through.
    Every simulator built is stopped after the test.
    """
    from simulator import ServerConfig, SimulatorConfig, start_simulator

    started = []
    sim_fields = {f.name for f in dataclasses.fields(SimulatorConfig)}
    server_fields = {f.name for f in dataclasses.fields(ServerConfig)}

    def build(*, clock=None, state_file: str | None = None, **overrides: Any):
        sim_kwargs: dict[str, Any] = {"seed": 7}
        server_kwargs: dict[str, Any] = {}
        for name, value in overrides.items():
            if name in sim_fields:
                sim_kwargs[name] = value
            elif name in server_fields:
                server_kwargs[name] = value
            else:
                raise TypeError(f"unknown simulator option {name!r}")
        if server_kwargs:
            base = sim_kwargs.get("server", ServerConfig())
            sim_kwargs["server"] = dataclasses.replace(base, **server_kwargs)
        handle = start_simulator(
            SimulatorConfig(**sim_kwargs),
            clock=clock if clock is not None else sim_clock,
            state_file=state_file,
        )
        started.append(handle)
        return handle

    yield build
    for handle in reversed(started):
        handle.stop()


@pytest.fixture
def sim(sim_factory):
    """The default simulator (seed 7, rate limits on) on the frozen ``sim_clock``."""
    return sim_factory()


def make_signed_caller(handle, session: requests.Session | None = None) -> Callable[..., Any]:
    """A ``call(method, path, params=None, ...)`` function bound to one simulator."""
    http = session or requests.Session()

    def call(
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        body: str = "json",
        signed: bool = True,
        key: str | None = None,
        secret: str | None = None,
        ts: int | None = None,
        diff: int | None = 5000,
        raw: bool = False,
        timeout: float = 10.0,
    ):
        method = method.upper()
        params = dict(params or {})
        headers: dict[str, str] = {}
        if signed:
            sign_diff = diff if diff is not None else auth.DEFAULT_TS_DIFF_MS
            headers.update(
                auth.signed_headers(
                    method,
                    path,
                    params,
                    key if key is not None else handle.api_key,
                    secret if secret is not None else handle.api_secret,
                    ts if ts is not None else handle.clock.now_ms(),
                    sign_diff,
                )
            )
            if diff is None:
                headers.pop(auth.HEADER_TS_DIFF)
        url = handle.base_url + path
        if method == "GET":
            response = http.get(url, params=params, headers=headers, timeout=timeout)
        elif body == "form":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            response = http.post(url, data=urlencode(params), headers=headers, timeout=timeout)
        else:
            headers["Content-Type"] = "application/json"
            response = http.request(method, url, data=json.dumps(params), headers=headers, timeout=timeout)
        if raw:
            return response
        assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:200]}"
        return response.json()

    call.session = http  # type: ignore[attr-defined]
    return call


@pytest.fixture
def signed_request(sim):
    """``signed_request(method, path, params=None, *, body="json"|"form", signed=True,
    key=None, secret=None, ts=None, diff=5000, raw=False)`` against ``sim``.

    Returns the parsed envelope (asserting HTTP 200), or the ``requests.Response``
    when ``raw=True``. ``diff=None`` omits the X-REQ-TS-DIFF header.
    """
    session = requests.Session()
    yield make_signed_caller(sim, session)
    session.close()


@pytest.fixture
def signed_request_for():
    """``signed_request_for(handle)`` → a caller like ``signed_request`` for any simulator."""
    sessions: list[requests.Session] = []

    def bind(handle):
        session = requests.Session()
        sessions.append(session)
        return make_signed_caller(handle, session)

    yield bind
    for session in sessions:
        session.close()


def resting_bid_params(handle, client_order_id: int, qty: float = 0.1) -> dict[str, Any]:
    """Create-order params for a small BUY that rests below the best bid of a liquid call.

    Picks a call near the middle of the second expiry's strikes (the first expiry may be
    close to its pre-expiry halt) and bids ten ticks under its best bid, inside the band.
    """
    base = handle.base_url
    instruments = requests.get(f"{base}/open/option/getInstruments/BTC", timeout=5).json()["data"]
    expiries = sorted({i["expirationTimestamp"] for i in instruments})
    expiry = expiries[1] if len(expiries) > 1 else expiries[0]
    calls = sorted(
        (i for i in instruments if i["expirationTimestamp"] == expiry and i["symbolName"].endswith("-C")),
        key=lambda i: i["strike"],
    )
    middle = len(calls) // 2
    for inst in calls[middle:] + calls[:middle]:
        book = requests.get(f"{base}/open/option/order/orderbook/v1/{inst['symbolName']}", timeout=5).json()["data"]
        if book["bids"]:
            tick = float(inst["tickSize"])
            price = max(tick, float(book["bids"][0]["price"]) - 10 * tick)
            return {
                "symbol": inst["symbolName"],
                "qty": qty,
                "tradeSide": 1,
                "tradeType": 1,
                "price": price,
                "clientOrderId": client_order_id,
            }
    raise AssertionError("no call with a bid in the simulator chain")


@pytest.fixture
def resting_bid(sim):
    """``resting_bid(client_order_id=..., qty=0.1)`` → create-order params for ``sim``."""

    def make(client_order_id: int, qty: float = 0.1) -> dict[str, Any]:
        return resting_bid_params(sim, client_order_id, qty)

    return make


@pytest.fixture
def resting_bid_for():
    """``resting_bid_for(handle, client_order_id, qty=0.1)`` → create-order params for any simulator."""
    return resting_bid_params

