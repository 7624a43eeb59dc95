"""Golden tests for Coincall request signing (API.md 2.3-2.5).

The four worked examples of API.md 2.5 pin the exact prehash text and signature; the
remaining tests pin the rules that make a prehash reproducible on the server side.
"""
from __future__ import annotations

import json

import pytest

import auth

KEY = "demoKey123"
SECRET = "demoSecret456"
TS = 1767225600000
DIFF = 5000

CREATE_BODY = json.loads(
    '{"symbol":"BTCUSD-27MAR26-100000-C","qty":0.1,"tradeSide":1,"tradeType":1,'
    '"price":1250.5,"clientOrderId":1767225600001}'
)
RFQ_BODY = json.loads(
    '{"legs":[{"instrumentName":"BTCUSD-27MAR26-100000-C","side":"BUY","qty":"0.5"},'
    '{"instrumentName":"BTCUSD-27MAR26-80000-P","side":"BUY","qty":"0.5"}]}'
)

VECTORS = [
    pytest.param(
        "POST",
        "/open/option/order/create/v1",
        CREATE_BODY,
        "POST/open/option/order/create/v1?clientOrderId=1767225600001&price=1250.5&qty=0.1"
        "&symbol=BTCUSD-27MAR26-100000-C&tradeSide=1&tradeType=1&uuid=demoKey123&ts=1767225600000"
        "&x-req-ts-diff=5000",
        "98AA07EEFB12E8DC1AED43297025523E0E12C72A5703CA9F9074549E99E6B681",
        id="a-create-order-json",
    ),
    pytest.param(
        "GET",
        "/open/option/order/singleQuery/v1",
        {"orderId": 1983131927527428096},
        "GET/open/option/order/singleQuery/v1?orderId=1983131927527428096&uuid=demoKey123"
        "&ts=1767225600000&x-req-ts-diff=5000",
        "3745BF68920A2DFAB8A999B8E84008BEE19FAD55DB930555940B863126B7E107",
        id="b-get-with-query",
    ),
    pytest.param(
        "GET",
        "/open/account/summary/v1",
        None,
        "GET/open/account/summary/v1?uuid=demoKey123&ts=1767225600000&x-req-ts-diff=5000",
        "330E90CE640DDAF5BCDF1A66B8BFD0DD8A9913B1D58014648B78893B1E59E713",
        id="c-get-without-params",
    ),
    pytest.param(
        "POST",
        "/open/option/blocktrade/request/create/v1",
        RFQ_BODY,
        'POST/open/option/blocktrade/request/create/v1?legs=[{"instrumentName":"BTCUSD-27MAR26-100000-C",'
        '"side":"BUY","qty":"0.5"},{"instrumentName":"BTCUSD-27MAR26-80000-P","side":"BUY","qty":"0.5"}]'
        "&uuid=demoKey123&ts=1767225600000&x-req-ts-diff=5000",
        "A41FEE06A3B504A75FDDDE2AC9828D2937EA7B9EBAEE0EBE786927FC2C79253C",
        id="d-nested-list-rfq",
    ),
]


@pytest.mark.parametrize("method, path, params, prehash, signature", VECTORS)
def test_worked_example_prehash_and_signature(method, path, params, prehash, signature):
    built = auth.build_prehash(method, path, params, KEY, TS, DIFF)
    assert built == prehash
    assert auth.sign(SECRET, built) == signature


@pytest.mark.parametrize("method, path, params, prehash, signature", VECTORS)
def test_signed_headers_carry_the_worked_signature(method, path, params, prehash, signature):
    headers = auth.signed_headers(method, path, params, KEY, SECRET, TS, DIFF)
    assert headers == {
        "X-CC-APIKEY": KEY,
        "sign": signature,
        "ts": "1767225600000",
        "X-REQ-TS-DIFF": "5000",
    }


def test_header_name_constants_are_the_exchange_names():
    assert (auth.HEADER_API_KEY, auth.HEADER_SIGN, auth.HEADER_TS, auth.HEADER_TS_DIFF) == (
        "X-CC-APIKEY",
        "sign",
        "ts",
        "X-REQ-TS-DIFF",
    )
    assert auth.DEFAULT_TS_DIFF_MS == 5000


def test_signature_is_uppercase_hex_of_64_chars():
    signature = auth.sign(SECRET, "GET/x?uuid=k&ts=1&x-req-ts-diff=5000")
    assert len(signature) == 64
    assert signature == signature.upper()
    int(signature, 16)


def test_method_is_uppercased():
    assert auth.build_prehash("get", "/p", None, KEY, TS, DIFF).startswith("GET/p?")


def test_top_level_nulls_are_dropped():
    with_null = auth.build_prehash("GET", "/p", {"a": 1, "b": None}, KEY, TS, DIFF)
    without = auth.build_prehash("GET", "/p", {"a": 1}, KEY, TS, DIFF)
    assert with_null == without
    assert "b=" not in with_null


def test_all_null_params_equal_no_params():
    assert auth.build_prehash("GET", "/p", {"x": None}, KEY, TS, DIFF) == (
        "GET/p?uuid=demoKey123&ts=1767225600000&x-req-ts-diff=5000"
    )


def test_nested_nulls_are_dropped_inside_containers():
    value = auth.render_value([{"a": 1, "b": None}, None, {"c": [1, None, 2]}])
    assert value == '[{"a":1},{"c":[1,2]}]'


def test_nested_containers_are_compact_json_in_given_key_order():
    rendered = auth.render_value({"z": 1, "a": {"y": "t", "b": [1, 2]}})
    assert rendered == '{"z":1,"a":{"y":"t","b":[1,2]}}'
    assert " " not in rendered


def test_non_ascii_is_not_escaped_in_nested_json():
    assert auth.render_value({"n": "é"}) == '{"n":"é"}'


def test_scalars_render_as_plain_text():
    assert auth.render_value(0.1) == "0.1"
    assert auth.render_value(100.0) == "100.0"
    assert auth.render_value(1983131927527428096) == "1983131927527428096"
    assert auth.render_value("BTCUSD-5FEB26-80000-C") == "BTCUSD-5FEB26-80000-C"
    assert auth.render_value(True) == "true"


def test_params_are_sorted_by_name_in_ascii_order_whatever_the_input_order():
    params_a = {"qty": 1, "Zeta": 2, "alpha": 3, "clientOrderId": 4}
    params_b = dict(reversed(list(params_a.items())))
    built_a = auth.build_prehash("POST", "/p", params_a, KEY, TS, DIFF)
    built_b = auth.build_prehash("POST", "/p", params_b, KEY, TS, DIFF)
    assert built_a == built_b
    # ASCII: upper case sorts before lower case.
    assert built_a.startswith("POST/p?Zeta=2&alpha=3&clientOrderId=4&qty=1&uuid=")


def test_no_url_encoding_in_the_prehash():
    built = auth.build_prehash("GET", "/p", {"q": "a b&c"}, KEY, TS, DIFF)
    assert built.startswith("GET/p?q=a b&c&uuid=")


def test_diff_and_ts_are_part_of_the_signature():
    base = auth.sign(SECRET, auth.build_prehash("GET", "/p", None, KEY, TS, DIFF))
    assert base != auth.sign(SECRET, auth.build_prehash("GET", "/p", None, KEY, TS + 1, DIFF))
    assert base != auth.sign(SECRET, auth.build_prehash("GET", "/p", None, KEY, TS, 3000))


def test_signatures_match_is_exact_and_case_sensitive():
    signature = auth.sign(SECRET, "x")
    assert auth.signatures_match(signature, signature)
    assert not auth.signatures_match(signature, signature.lower())
    assert not auth.signatures_match(signature, signature[:-1] + ("0" if signature[-1] != "0" else "1"))
