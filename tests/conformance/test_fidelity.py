"""A capture becomes a fidelity check of the simulator (docs/CONFORMANCE.md, "Fidelity").

For every capture folder (the one shipped in tests/data/capture_sim/, made against the
simulator, and any folder named by ``COINCALL_CAPTURE_DIRS``, separated by ``os.pathsep``):

1. the client's adapter (coincall_payloads) parses every successful answer of a route it reads;
2. a simulator started at the capture's own time answers the same GET (same route, same query)
   with the same fields and the same JSON types (numbers are one type; a null or an empty list
   in either answer is not compared further).

A user's real capture (``python main.py doctor --capture DIR``) dropped into that variable turns
every difference between Coincall and the simulator into a failing line naming the route and
the field.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

from capture import load_capture
from clock import SimulatedClock
from coincall_payloads import (
    chain_rows_from_api,
    instrument_from_api,
    order_book_from_api,
    parse_account_summary,
    parse_api_key,
    parse_funding_rates,
    parse_orders,
    parse_perp_positions,
    parse_perp_specs,
    parse_positions,
    perp_order_book_from_api,
    perp_ticker_from_api,
)
from tests.conftest import make_signed_caller

pytestmark = pytest.mark.conformance

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "capture_sim"
ENV = "COINCALL_CAPTURE_DIRS"


def capture_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    return [SHIPPED, *extra]


def _chain(data: Any, record: dict) -> Any:
    expiry = int(record["query"]["endTime"])
    return chain_rows_from_api(data, as_of=0.0, expiry_ms=expiry, index_name=record["path"].rsplit("/", 1)[-1])


PARSERS: dict[str, Callable[[Any, dict], Any]] = {
    "/open/auth/user/query-api": lambda d, r: parse_api_key(d),
    "/open/public/config/v1": lambda d, r: parse_perp_specs(d),
    "/open/option/getInstruments/{base}": lambda d, r: [instrument_from_api(x) for x in d],
    "/open/option/get/v1/{index}": _chain,
    "/open/option/order/orderbook/v1/{symbol}": lambda d, r: order_book_from_api(d, symbol=r["path"].rsplit("/", 1)[-1],
                                                                                   as_of=0.0),
    "/open/account/summary/v1": lambda d, r: parse_account_summary(d),
    "/open/option/position/get/v1": lambda d, r: parse_positions(d, timestamp=0.0),
    "/open/option/order/pending/v1": lambda d, r: parse_orders(d["list"] if isinstance(d, dict) else d),
    "/open/futures/position/get/v1": lambda d, r: parse_perp_positions(d),
    "/open/futures/market/symbol/v1": lambda d, r: perp_ticker_from_api(d, symbol=r["query"].get("symbol", "BTCUSD"),
                                                                        as_of=0.0),
    "/open/public/fundingRate/v1": lambda d, r: parse_funding_rates(d),
    "/open/futures/order/orderbook/v1/{symbol}": lambda d, r: perp_order_book_from_api(
        d, symbol=r["path"].rsplit("/", 1)[-1], as_of=0.0),
}
# Routes whose answer names state of the captured account (an order id): not replayable on a fresh simulator.
NOT_REPLAYED = {"/open/option/order/singleQuery/v1", "/open/futures/order/singleQuery/v1"}


def _records(directory: Path) -> list[dict]:
    return [r for r in load_capture(directory) if r["status"] == 200 and isinstance(r["body"], dict)
            and r["body"].get("code") == 0]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}[type(value)]


def shape_differences(captured: Any, simulated: Any, where: str = "data") -> list[str]:
    """Where the two answers differ in fields or JSON types (the capture is the reference)."""
    a, b = _kind(captured), _kind(simulated)
    if "null" in (a, b):
        return []
    if a != b:
        return [f"{where}: {a} in the capture, {b} from the simulator"]
    if a == "object":
        found = []
        for key in sorted(set(captured) | set(simulated)):
            if key not in simulated:
                found.append(f"{where}.{key}: in the capture, missing from the simulator")
            elif key not in captured:
                found.append(f"{where}.{key}: sent by the simulator, not in the capture")
            else:
                found.extend(shape_differences(captured[key], simulated[key], f"{where}.{key}"))
        return found
    if a == "array" and captured and simulated:
        return shape_differences(captured[0], simulated[0], f"{where}[0]")
    return []


@pytest.mark.parametrize("directory", capture_dirs(), ids=lambda p: p.name)
def test_the_adapter_parses_every_captured_answer(directory):
    records = _records(directory)
    assert records, f"no successful answers in {directory}"
    parsed = 0
    for record in records:
        parse = PARSERS.get(record["route"] or "")
        if parse is None:
            continue
        parse(record["body"]["data"], record)
        parsed += 1
    assert parsed >= (len(PARSERS) // 2 if directory == SHIPPED else 1)


@pytest.mark.parametrize("directory", capture_dirs(), ids=lambda p: p.name)
def test_the_simulator_answers_with_the_same_fields_and_types(directory, sim_factory):
    records = [r for r in _records(directory) if r["method"] == "GET" and r["route"] not in NOT_REPLAYED]
    start_ms = min(r["received_at_ms"] for r in records)
    sim = sim_factory(clock=SimulatedClock(start=start_ms / 1000.0, speed=0), rate_limits_enabled=False)
    call = make_signed_caller(sim)
    differences = []
    for record in records:
        answer = call("GET", record["path"], {k: str(v) for k, v in record["query"].items()}, raw=True).json()
        if answer.get("code") != 0:
            differences.append(f"{record['_file']}: the simulator answered code {answer.get('code')} "
                               f"{answer.get('msg')}")
            continue
        differences.extend(f"{record['_file']} {d}" for d in
                           shape_differences(record["body"]["data"], answer.get("data")))
    assert differences == [], "\n".join(differences)


def test_a_difference_in_fields_or_types_is_reported():
    captured = {"list": [{"orderId": 1, "price": "1.5", "gone": 1}], "total": 1}
    simulated = {"list": [{"orderId": "1", "price": "2", "extra": True}], "total": 3}
    found = shape_differences(captured, simulated)
    assert "data.list[0].orderId: number in the capture, string from the simulator" in found
    assert any(".gone: in the capture, missing" in d for d in found)
    assert any(".extra: sent by the simulator" in d for d in found)
    assert shape_differences({"a": None}, {"a": {"b": 1}}) == []
