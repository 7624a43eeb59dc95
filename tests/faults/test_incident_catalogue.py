"""Every incident of docs/BEHAVIOUR.md section 8 has exactly one named regression test.

The catalogue is read from the repository's own specification (``docs/BEHAVIOUR.md`` §8:
number and what went wrong). Each row N must be covered by exactly one function named
``test_incident_NN_<slug>`` anywhere under ``tests/``; the tests are found with ``ast``
(nothing is imported or run), so a row whose test is renamed, deleted or duplicated shows
up here by number and title.
"""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

TESTS_ROOT = Path(__file__).resolve().parents[1]
INCIDENT_NAME = re.compile(r"^test_incident_(\d+)_\w+$")

SPEC = TESTS_ROOT.parent / "docs" / "BEHAVIOUR.md"
INCIDENT_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|")


def read_incidents(spec: Path) -> dict[int, str]:
    """Row number -> what went wrong, from the table of section 8 of the specification."""
    text = spec.read_text(encoding="utf-8")
    section = text[text.index("\n## 8."):]
    following = re.search(r"\n## (?!8\.)", section)
    section = section[:following.start()] if following else section
    rows: dict[int, str] = {}
    for line in section.splitlines():
        match = INCIDENT_ROW.match(line)
        if match:
            rows[int(match.group(1))] = match.group(2)
    return rows


INCIDENTS: dict[int, str] = read_incidents(SPEC)


def incident_tests() -> dict[int, list[str]]:
    """Row number -> every ``test_incident_NN_*`` function (``path::name``) found under tests/."""
    by_row: dict[int, list[str]] = defaultdict(list)
    for path in sorted(TESTS_ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            match = INCIDENT_NAME.match(node.name)
            if match:
                by_row[int(match.group(1))].append(f"{path.relative_to(TESTS_ROOT)}::{node.name}")
    return dict(by_row)


@pytest.fixture(scope="module")
def found() -> dict[int, list[str]]:
    """One scan of the test tree for the whole module."""
    return incident_tests()


def test_the_catalogue_lists_the_45_rows_of_section_8():
    assert sorted(INCIDENTS) == list(range(1, 46))
    assert all(title.strip() for title in INCIDENTS.values())


@pytest.mark.parametrize("row", sorted(INCIDENTS), ids=lambda row: f"row{row:02d}")
def test_every_incident_row_has_exactly_one_named_test(row, found):
    tests = found.get(row, [])
    assert len(tests) == 1, (f"BEHAVIOUR.md 8 row {row} ({INCIDENTS[row]}) needs exactly one test named "
                             f"test_incident_{row:02d}_<slug>; found {tests or 'none'}")


def test_catalogue_names_use_two_digit_known_row_numbers(found):
    names = [name for tests in found.values() for name in tests]
    malformed = [name for name in names if not re.search(r"::test_incident_\d{2}_", name)]
    unknown = [name for row, tests in found.items() if row not in INCIDENTS for name in tests]
    assert malformed == [] and unknown == []
