"""Pure parts of the order ledger: client order ids, snapping, order records and fill sums."""
from __future__ import annotations

import ast
import random
from decimal import Decimal
from pathlib import Path

import pytest

from contracts import Side
from order_ledger import (
    ClientOrderIdParts,
    Intent,
    LedgerOrder,
    OrderStatus,
    build_client_order_id,
    parse_client_order_id,
    snap_price,
    snap_qty,
    summarize_fills,
)


# ---- client order ids ---------------------------------------------------------------

def test_documented_example_id():
    assert build_client_order_id(101, 42, 1, Intent.CLOSE, 7) == 101000000042013007
    assert parse_client_order_id(101000000042013007) == ClientOrderIdParts(101, 42, 1, 3, 7)


@pytest.mark.parametrize("parts", [(100, 0, 0, 1, 0), (899, 999_999_999, 99, 8, 999), (101, 7, 3, 5, 12)])
def test_id_round_trip_and_int64(parts):
    coid = build_client_order_id(*parts)
    assert isinstance(coid, int) and len(str(coid)) == 18 and coid < 2**63
    assert parse_client_order_id(coid) == ClientOrderIdParts(*parts)


def test_ids_differ_by_intent_and_attempt():
    ids = {build_client_order_id(101, 1, 0, intent, attempt) for intent in Intent for attempt in (1, 2)}
    assert len(ids) == 16


@pytest.mark.parametrize("bad", [(99, 1, 1, 1, 1), (900, 1, 1, 1, 1), (101, 10**9, 1, 1, 1),
                                 (101, 1, 100, 1, 1), (101, 1, 1, 0, 1), (101, 1, 1, 9, 1), (101, 1, 1, 1, 1000),
                                 (101, 1.0, 1, 1, 1)])
def test_build_refuses_out_of_range(bad):
    with pytest.raises(ValueError):
        build_client_order_id(*bad)


@pytest.mark.parametrize("bad", [12345, 10100000004201300, 101000000042019007, 101000000042010007, 10100000004201300.0, True])
def test_parse_refuses_foreign_ids(bad):
    with pytest.raises(ValueError):
        parse_client_order_id(bad)


def test_intent_families_requotes_and_reduce_only():
    assert Intent.OPEN_REQUOTE.family() is Intent.OPEN
    assert Intent.CLOSE.requote() is Intent.CLOSE_REQUOTE
    assert Intent.KILL_REQUOTE.requote() is Intent.KILL_REQUOTE
    assert [i.reduce_only for i in Intent] == [False, False] + [True] * 6


# ---- snapping -----------------------------------------------------------------------

def test_float_residue_is_snapped_to_the_lot():
    assert snap_qty(0.6 - 0.1 - 0.2) == 0.3
    assert snap_qty(0.29999999999999993) == 0.3
    assert snap_qty(0.0099) == 0.0
    assert snap_qty(-0.5) == 0.0
    assert snap_qty(1.239) == 1.23


def test_random_fill_sequences_never_leave_off_lot_remainders():
    rng = random.Random(1234)
    for _ in range(1000):
        target = rng.randint(1, 500) / 100
        remaining = target
        exact = Decimal(str(target))
        while remaining >= 0.01:
            fill = rng.randint(1, max(1, int(round(remaining * 100)))) / 100
            remaining = snap_qty(remaining - fill)
            exact -= Decimal(str(fill))
            # the snapped float is exactly the decimal remainder, printable with 2 decimals
            assert Decimal(repr(remaining)) == exact, (target, fill, remaining)
            assert remaining == round(remaining, 2)


def test_incident_24_sub_tick_prices_become_one_tick():
    assert snap_price(0.4, 1.0, 2) == 1.0
    assert snap_price(0.4, 1.0, 1) == 1.0
    assert snap_price(0.04, 0.1, 1) == 0.1


def test_prices_snap_buys_down_sells_up_with_tolerance():
    assert snap_price(9.5, 1.0, 1) == 9.0
    assert snap_price(9.5, 1.0, 2) == 10.0
    assert snap_price(100.00000000001, 1.0, 2) == 100.0
    assert snap_price(1274.98, 1.0, 1) == 1274.0
    assert snap_price(12.34, 0.1, 2) == 12.4


@pytest.mark.parametrize("price", [0.0, -1.0, float("nan"), None])
def test_missing_prices_are_refused(price):
    with pytest.raises(ValueError):
        snap_price(price, 1.0, 1)


# ---- records and fills ----------------------------------------------------------------

def _order(coid: int, filled: float, avg: float, fee: float) -> LedgerOrder:
    return LedgerOrder(coid, "T000000001", 1, 0, Intent.OPEN, 1, None, "S", 1, 1.0, 100.0, False,
                       OrderStatus.FILLED, order_id=1900000000000000001, filled_qty=filled, avg_price=avg, fee=fee)


def test_record_round_trip_keeps_int_ids():
    order = _order(101000000001001001, 0.5, 120.0, 0.1)
    again = LedgerOrder.from_record(order.to_record())
    assert again == order and isinstance(again.intent, Intent) and again.status is OrderStatus.FILLED


def test_an_order_record_written_before_side_was_a_side_loads_unchanged():
    # As the store held it before issue 10: the side a plain int code.
    record = {"client_order_id": 101000000007013002, "trade_id": "T000000007", "trade_seq": 7, "leg_index": 1,
              "intent": 3, "attempt": 2, "supersedes": 101000000007013001, "symbol": "BTCUSD-6MAR26-80000-P",
              "side": 1, "qty": 0.1, "price": 55.0, "reduce_only": True, "status": "FILLED",
              "order_id": 1900000000000000007, "filled_qty": 0.1, "avg_price": 55.0, "fee": 0.01, "sent_at": 1.0,
              "updated_at": 2.0, "exchange_state": 1, "error_code": None, "error_msg": "", "last_fill_at": 2.0}
    order = LedgerOrder.from_record(record)
    assert order.side is Side.BUY and order.intent is Intent.CLOSE and order.status is OrderStatus.FILLED
    again = order.to_record()
    assert again == record and type(again["side"]) is int


def test_chain_vwap_and_fees():
    summary = summarize_fills([_order(1, 0.2, 100, 0.01), _order(2, 0.3, 110, 0.02), _order(3, 0.5, 120, 0.03)])
    assert (summary.qty, summary.vwap, summary.fees) == (1.0, 113.0, 0.06)


# ---- place in the import graph ------------------------------------------------------------

def imported_modules(module: str) -> set[str]:
    path = Path(__file__).resolve().parents[2] / f"{module}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_the_ledger_sits_below_every_execution_module():
    """Execution modules -> order_ledger -> client: the ledger never reaches up into an engine."""
    above = {"execution_job", "trade_execution", "multileg_orderbook", "rfq", "trade_lifecycle"}
    assert not imported_modules("order_ledger") & above
    assert not imported_modules("execution_job") & (above - {"execution_job"})
