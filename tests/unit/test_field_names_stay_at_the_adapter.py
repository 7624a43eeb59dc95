"""Coincall's field names stop at the adapter (issue 10): only ``coincall_client.py`` and
``coincall_payloads.py`` may spell them; the rest of the product reads typed values.

The names are every camelCase identifier of ``docs/API.md`` (the exchange notes the code
relies on), plus the few spellings the adapter reads that the notes do not list. A string
literal or a keyword argument equal to one of them, anywhere in a product module, fails
this test with its file and line; prose in docstrings and comments is not a literal equal
to a name, so it is left alone.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = {"coincall_client.py", "coincall_payloads.py"}
# Read by the adapter, not (or not in this spelling) in docs/API.md.
EXTRA_FIELD_NAMES = {"deliveryPrice"}
# A rewrite of the notes must not empty the list without anyone noticing.
MUST_BE_KNOWN = {
    "orderId", "clientOrderId", "fillQty", "avgPrice", "tradeSide", "markPrice", "instrumentName", "requestId",
    "quoteId", "pageSize", "fromId", "hasNext", "startTime", "endTime", "createTime", "blockTradeId",
    "expirationTimestamp", "settlementCashFlow", "estimatedExpirationPrice", "userId", "readOnly",
}


def coincall_field_names() -> set[str]:
    notes = (ROOT / "docs" / "API.md").read_text(encoding="utf-8")
    return set(re.findall(r"\b[a-z]+(?:[A-Z][a-z0-9]*)+\b", notes)) | EXTRA_FIELD_NAMES


def product_modules() -> list[Path]:
    top = [path for path in ROOT.glob("*.py") if path.name not in ADAPTERS]
    return sorted(top) + sorted((ROOT / "strategies").rglob("*.py"))


def field_names_in(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every string literal or keyword argument equal to a field name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.keyword) and node.arg in names:
            found.append((node.lineno, node.arg))
    return sorted(found)


def test_the_field_list_comes_from_the_api_notes_and_is_not_empty():
    assert MUST_BE_KNOWN <= coincall_field_names()


def test_no_product_module_but_the_adapters_spells_a_coincall_field_name():
    names = coincall_field_names()
    offenders = [f"{path.relative_to(ROOT)}:{line}: {name!r}"
                 for path in product_modules()
                 for line, name in field_names_in(path.read_text(encoding="utf-8"), names)]
    assert not offenders, ("Coincall field names outside coincall_client.py / coincall_payloads.py (read them "
                           "through a typed value of coincall_payloads instead):\n" + "\n".join(offenders))


def test_the_scan_finds_literals_keywords_and_f_string_parts_and_ignores_prose():
    names = coincall_field_names()
    source = '''
def f(client, row):
    """Reads the ``orderId`` of a row: prose is not a literal."""
    # fillQty in a comment is not a literal either
    client.trade_history(pageSize=10)
    return row.get("fillQty"), f"{row.get('avgPrice')}", {"tradeSide": 1}
'''
    assert field_names_in(source, names) == [(5, "pageSize"), (6, "avgPrice"), (6, "fillQty"), (6, "tradeSide")]


def test_the_adapters_are_where_the_names_are():
    names = coincall_field_names()
    for adapter in ADAPTERS:
        assert field_names_in((ROOT / adapter).read_text(encoding="utf-8"), names), adapter
