"""json_body.decode_body reads a response body as the standard library's json.loads does.

The client switched its response decoding to orjson for speed; these tests pin that no body
changes meaning: equal values where both readers accept, the standard reader's verdict where
orjson refuses, and ids beyond 64 bits refused rather than misread.
"""

from __future__ import annotations

import json
import math

import pytest

from api_values import int_or_none
from coincall_payloads import PayloadError, perp_order_from_api
from json_body import decode_body
from tests.simulator.exchange_builders import build


def _same_as_json(body: bytes) -> None:
    expected = json.loads(body.decode("utf-8"))
    got = decode_body(body)
    assert got == expected
    # == treats 1 and 1.0 alike: the types must match too (an id must stay an int).
    assert repr(got) == repr(expected)


@pytest.mark.parametrize("body", [
    b'{"code":0,"msg":"Success","data":[]}',
    b'{"code":0,"data":{"orderId":9223372036854775807,"clientOrderId":"ct-a1b2-000001"}}',
    b'{"code":0,"data":{"orderId":-9223372036854775808}}',
    b'{"code":0,"data":{"orderId":18446744073709551615}}',
    b'{"code":0,"data":{"price":0.1,"qty":1e-05,"big":1.7976931348623157E308,"neg":-0.0,"n":12.50}}',
    b'{"code":0,"data":{"a":1,"a":2}}',
    b' \r\n\t{"code":0,"data":null}\n',
    '{"code":0,"msg":"ok \u00e9\u4e2d \\u00e9 \\ud83d\\ude00"}'.encode("utf-8"),
    b'[1,2.5,"x",true,false,null,{"k":[{}]}]',
])
def test_equal_values_where_both_readers_accept(body: bytes) -> None:
    _same_as_json(body)


def test_a_simulator_chain_response_reads_the_same() -> None:
    _clock, _market, exchange = build()
    expiry = exchange.market.option_market("BTC").instruments()[0].expiry_ms
    chain = str(exchange.option_chain_wire(None, {"index": "BTCUSD", "endTime": str(expiry)}))
    _same_as_json(('{"code":0,"msg":"Success","data":' + chain + "}").encode("utf-8"))


@pytest.mark.parametrize("body", [
    b'{"code":0,"data":{"iv":NaN}}',
    b'{"code":0,"data":{"iv":Infinity,"x":-Infinity}}',
    b'{"code":0,"data":{"huge":1e400}}',
    b'{"code":0,"msg":"\\ud800"}',
])
def test_what_orjson_refuses_the_standard_reader_decides(body: bytes) -> None:
    expected = json.loads(body.decode("utf-8"))
    got = decode_body(body)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    values = got["data"].values() if isinstance(got.get("data"), dict) else []
    assert all(not isinstance(v, float) or not math.isfinite(v) for v in values)


@pytest.mark.parametrize("body", [b"<html>gateway</html>", b"", b'{"code":0', b"\xef\xbb\xbf{}", b'{"a":1} x'])
def test_what_is_not_json_still_raises_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(body.decode("utf-8"))
    with pytest.raises(ValueError):
        decode_body(body)


def test_invalid_utf8_raises_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode_body(b'{"msg":"\xff"}')


def test_an_id_beyond_64_bits_is_refused_never_misread() -> None:
    # orjson reads integers exactly only within 64 bits; beyond, a float. The id parsers
    # take ids only as exact integers or digit strings, so such an id is refused.
    data = decode_body(b'{"orderId":18446744073709551616,"tradeType":1}')
    assert isinstance(data["orderId"], float)
    assert int_or_none(data["orderId"]) is None
    with pytest.raises(PayloadError, match="orderId"):
        perp_order_from_api(data)
