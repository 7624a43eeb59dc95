"""One Side and one contract identity (issue 10): the values every trading module shares."""
from __future__ import annotations

import ast
import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from contracts import Contract, Side, parse_date_token, parse_symbol

ROOT = Path(__file__).resolve().parents[2]
EXPIRY_MS = int(datetime(2026, 2, 5, 8, tzinfo=timezone.utc).timestamp() * 1000)


# ------------------------------------------------------------------ Side

def test_side_is_the_exchange_code_so_stored_and_wire_values_do_not_change():
    assert (Side.BUY, Side.SELL) == (1, 2) and Side(1) is Side.BUY and Side(2) is Side.SELL
    assert json.dumps({"side": Side.SELL}) == '{"side": 2}' and f"{Side.BUY}" == "1"


def test_side_helpers_opposite_sign_and_text():
    assert Side.BUY.opposite is Side.SELL and Side.SELL.opposite is Side.BUY
    assert (Side.BUY.sign, Side.SELL.sign) == (1, -1)
    assert Side.from_text("BUY") is Side.BUY and Side.from_text("sell") is Side.SELL
    assert Side.BUY.name == "BUY"   # the way back to text
    assert Side.of(2) is Side.SELL and Side.of(Side.BUY) is Side.BUY


@pytest.mark.parametrize("code", [0, 3, "1", "BUY", None, 2.5])
def test_side_of_refuses_anything_but_a_code(code):
    with pytest.raises(ValueError, match="side must be 1 \\(buy\\) or 2 \\(sell\\)"):
        Side.of(code)


@pytest.mark.parametrize("text", ["", "LONG", "1", None, 1, "B UY"])
def test_side_from_text_refuses_anything_but_a_name(text):
    with pytest.raises(ValueError, match="side must be 'BUY' or 'SELL'"):
        Side.from_text(text)


def _assigned_names(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and node.value.value in (1, 2):
            found |= {target.id for target in node.targets if isinstance(target, ast.Name)}
    return found


def test_side_is_defined_once_in_the_product():
    for path in sorted(ROOT.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
        if path.name == "contracts.py":
            continue
        assert "Side" not in classes, f"{path.name} defines its own Side"
        constants = _assigned_names(tree) & {"BUY", "SELL", "_BUY_SIDE", "_SELL_SIDE"}
        assert not constants, f"{path.name} numbers the side itself: {sorted(constants)}"


# ------------------------------------------------------------------ the symbol grammar

@pytest.mark.parametrize("symbol", ["BTCUSD-5FEB26-80000-C", "BTCUSD-05FEB26-80000-C"])
def test_parse_symbol_gives_the_contract(symbol):
    assert parse_symbol(symbol) == Contract(symbol=symbol, underlying="BTC", option_type="C", strike=80000.0,
                                            expiry_ms=EXPIRY_MS)


def test_parse_symbol_reads_decimal_strikes_and_other_underlyings():
    parsed = parse_symbol("SOLUSD-13DEC24-192.5-P")
    assert (parsed.underlying, parsed.strike, parsed.option_type) == ("SOL", 192.5, "P")
    assert parsed.expiry == datetime(2024, 12, 13, 8, tzinfo=timezone.utc)


@pytest.mark.parametrize("bad", ["", "BTCUSD", "BTCUSD-5FOO26-80000-C", "BTCUSD-31FEB26-80000-C",
                                 "BTCUSD-5FEB26-80000-X", "BTC-5FEB26-80000-C", None, 42])
def test_parse_symbol_refuses_what_is_not_an_option_symbol(bad):
    with pytest.raises(ValueError, match="not an option symbol"):
        parse_symbol(bad)


def test_parse_date_token():
    assert parse_date_token("5FEB26") == parse_date_token("05feb26") == date(2026, 2, 5)
    for bad in ("31FOO26", "5-FEB-26", "FEB26", ""):
        with pytest.raises(ValueError):
            parse_date_token(bad)


# ------------------------------------------------------------------ Contract records

def test_contract_record_is_the_flat_leg_keys_and_loads_records_without_underlying():
    contract = parse_symbol("BTCUSD-5FEB26-80000-C")
    record = contract.to_record()
    assert record == {"symbol": "BTCUSD-5FEB26-80000-C", "underlying": "BTC", "option_type": "C",
                      "strike": 80000.0, "expiry_ms": EXPIRY_MS}
    assert Contract.from_record(record) == contract
    older = {key: value for key, value in record.items() if key != "underlying"}
    assert Contract.from_record(older) == contract                      # read from the symbol
    assert Contract.from_record({**older, "symbol": "S1"}).underlying == ""  # not in the grammar: unknown
