"""Before the daemon's first good account read the positions are unknown, never "none".

The view's rule (operator_view.py): None, never 0, so nobody reads "flat" where the truth is
"unknown". Without any account snapshot (the positions request failing since the start, or
no poll read yet) the view answered ``positions: []`` and the Orders & positions page said
"No position." while our trades held exposure. Now ``positions`` is null until a snapshot
exists, and the page says the positions are unknown and why.
"""
from __future__ import annotations

import json

from dashboard_pages import PageContext, render_orders
from errors import SnapshotError
from operator_view import build_view
from tests.unit.test_operator_view import account, short_strangle, sources


def orders_page(view: dict) -> str:
    return render_orders(PageContext(view=view, csrf_token="x", nonce="n", path="/orders"))


def test_positions_are_unknown_not_empty_without_any_account_read():
    # Our trade T000000001 holds short 0.1 of two options; the positions request fails since the start.
    view = build_view(sources([short_strangle()], snapshot=None,
                              error=SnapshotError("positions request failed: 502"))).to_json()
    assert json.loads(json.dumps(view))["positions"] is None          # /api/positions answers null, not []
    page = orders_page(view)
    assert 'id="no-positions"' not in page and "No position." not in page
    assert 'id="positions-unknown"' in page
    assert "the last account read failed: positions request failed: 502" in page


def test_the_page_says_no_account_read_yet_and_flat_only_once_a_read_shows_it():
    before = build_view(sources([], snapshot=None)).to_json()
    assert before["positions"] is None
    page = orders_page(before)
    assert 'id="positions-unknown"' in page and "no account read yet" in page and "No position." not in page

    after = build_view(sources([], snapshot=account(positions=()))).to_json()
    assert after["positions"] == []
    page = orders_page(after)
    assert '<p id="no-positions">No position.</p>' in page and 'id="positions-unknown"' not in page
