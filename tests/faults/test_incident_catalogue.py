"""Every incident of BEHAVIOUR.md section 8 has exactly one named regression test.

The table is copied here (number and failure scenario) instead of being read from
``shared/coincall/BEHAVIOUR.md``, because a fresh clone of this repository does not have
that folder. Each row N must be covered by exactly one function named
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

INCIDENTS: dict[int, str] = {
    1: "A restart inside the entry window opens a second trade",
    2: "The daily quota disables the runner for good; the daemon exits when every strategy is done",
    3: "Shutdown closes positions, or persists a close that was never decided",
    4: "A close leg with no bids builds a naked reverse position",
    5: "A close, unwind or kill order is sent without reduceOnly",
    6: "A fill is lost because another leg of an open had no price",
    7: "A fill between the status poll and the cancel is lost or overfilled",
    8: "Partial fills across requotes are under-counted; the fill price is the last order's",
    9: "A fill reported just after the failure decision leads to unwinding a filled leg",
    10: "Take-profit and stop-loss closes share an idempotency key",
    11: "A timed-out create is retried into a duplicate order",
    12: "A retry carries a stale signature",
    13: "A failed positions call reads as a flat account",
    14: "A cache re-stamps an old index and the index freezes for hours",
    15: "A constant fallback price is used",
    16: "A state file full of NUL bytes crash-loops the daemon",
    17: "A crash mid-write corrupts state",
    18: "A missing position at restart crash-loops the daemon",
    19: "An expired in-the-money option is settled at zero",
    20: "Orders keep going to a halted or expired instrument",
    21: "An entry condition written with the exit signature silently never enters",
    22: "An entry condition that raises is silent",
    23: "A float residue quantity (0.5999...) is sent",
    24: "A sub-tick price is snapped to zero",
    25: "One bad leg blocks the whole close",
    26: "A sell chases a falling bid within a phase",
    27: "A floor that is not a floor",
    28: "An RFQ quote worse than the screen is accepted",
    29: "An RFQ is compared with the wrong book side, or its direction is read from the first leg",
    30: "A single-leg SELL RFQ is rejected",
    31: "RFQ fill values arrive as strings, or are mapped by list position",
    32: "Auto routing reads a book mark that does not exist",
    33: "Closed-trade PnL is recomputed from positions that have gone",
    34: "\"Trade opened, entry cost $0\" is reported before any fill",
    35: "A whole poll interval passes between the exit trigger and the close orders",
    36: "The exit reason is misclassified",
    37: "One trade's execution freezes another trade's exits",
    38: "Reconciliation reports live orders as missing (key mismatch, list lag)",
    39: "Only 20 open orders are seen; CANCELING is treated as final",
    40: "The kill switch or orphan cleanup touches someone else's position or order",
    41: "Legs or time windows are fixed at start-up",
    42: "Deltas come from one detail call per option, or only near-ATM candidates are examined",
    43: "`strike_itm` behaves like `strike_atm`",
    44: "`time_exit` fires right after an afternoon open",
    45: "Two daemons run on one state",
}


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
