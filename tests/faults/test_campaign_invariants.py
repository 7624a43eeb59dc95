"""The campaign's judge, judged: each invariant catches the fault it names, and only that.

Hand-made exchange and store records (the shapes ``ExchangeRecords.from_state`` and
``StoreRecords.from_db`` produce), plus one round trip through a real simulator state and a
real store file, and the kill harness's event matching on journal lines.
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from clock import SimulatedClock
from order_ledger import build_client_order_id
from persistence import StateStore
from tests.faults.campaign_invariants import (
    ExchangeExercise,
    ExchangeFill,
    ExchangeOrder,
    ExchangeRecords,
    StoreRecords,
    check_campaign_invariants,
)
from tests.faults.kill_harness import FileFollower, TargetWatcher

PREFIX = 101
CALL = "BTCUSD-4MAR26-92000-C"
PUT = "BTCUSD-4MAR26-88000-P"
EXITS = {"camp": {"max_hold_hours(hours=0.05)", "max_loss_pct(pct=10.0, mode=fair)"}}
BUY, SELL = 1, 2


def coid(seq: int, leg: int, intent: int, attempt: int) -> int:
    return build_client_order_id(PREFIX, seq, leg, intent, attempt)


def trade(seq: int, *, state: str = "CLOSED", opened: bool = True, reason: str | None = "max_hold_hours(hours=0.05)",
          created: float = 100.0, ended: float = 200.0, qty: float = 0.1, legs=((0, CALL),)) -> dict:
    return {
        "id": f"T{seq:09d}", "seq": seq, "strategy": "camp", "state": state, "created_at": created,
        "opened_at": created + 10 if opened else None,
        "closed_at": ended if state == "CLOSED" else None, "failed_at": ended if state == "FAILED" else None,
        "exit_reason": reason if state == "CLOSED" else None, "failure_reason": None,
        "legs": [{"index": i, "symbol": s, "side": BUY, "qty": qty, "settlement": None, "external_qty": 0.0}
                 for i, s in legs],
    }


def ledger(seq: int, leg: int, intent: int, attempt: int, *, order_id: int | None, status: str = "FILLED",
           filled: float = 0.1, symbol: str = CALL, side: int = BUY) -> dict:
    return {"client_order_id": coid(seq, leg, intent, attempt), "trade_id": f"T{seq:09d}", "trade_seq": seq,
            "leg_index": leg, "intent": intent, "attempt": attempt, "symbol": symbol, "side": side,
            "status": status, "filled_qty": filled, "order_id": order_id}


def ex_order(order_id: int, client_order_id: int | None, *, side: int = BUY, lots: int = 10, filled: int = 10,
             state: int = 1, reduce_only: bool = False, symbol: str = CALL, trade_type: int = 1) -> ExchangeOrder:
    return ExchangeOrder(order_id, client_order_id, symbol, side, trade_type, lots, filled, state, reduce_only, 0)


def round_trip() -> tuple[ExchangeRecords, StoreRecords]:
    """Trade 1 buys 0.1 call (open), sells it back reduce-only (close): everything consistent."""
    exchange = ExchangeRecords(
        orders=(ex_order(11, coid(1, 0, 1, 1)), ex_order(12, coid(1, 0, 3, 2), side=SELL, reduce_only=True)),
        fills=(ExchangeFill(101, 11, CALL, BUY, 10, 1000), ExchangeFill(102, 12, CALL, SELL, 10, 2000)),
        exercises=(), positions={})
    store = StoreRecords(trades=(trade(1),),
                         orders=(ledger(1, 0, 1, 1, order_id=11), ledger(1, 0, 3, 2, order_id=12, side=SELL)))
    return exchange, store


def judge(exchange: ExchangeRecords, store: StoreRecords, **kwargs) -> list[str]:
    return [v.rule for v in check_campaign_invariants(exchange, store, prefix=PREFIX, exit_names=EXITS, **kwargs)]


def test_a_consistent_round_trip_passes_every_rule():
    assert judge(*round_trip()) == []


def test_a_client_order_id_seen_twice_on_the_exchange_is_a_duplicate():
    exchange, store = round_trip()
    twin = ex_order(13, coid(1, 0, 1, 1), filled=0, state=3)
    assert "duplicate_client_order_id" in judge(replace(exchange, orders=exchange.orders + (twin,)), store)


def test_open_fills_beyond_the_leg_target_are_an_overfill():
    exchange, store = round_trip()
    extra = ex_order(14, coid(1, 0, 2, 3), lots=5, filled=5)
    orders = exchange.orders + (extra,)
    stored = store.orders + (ledger(1, 0, 2, 3, order_id=14, filled=0.05),)
    assert "open_overfill" in judge(replace(exchange, orders=orders), replace(store, orders=stored))


def test_a_close_without_reduce_only_and_a_close_that_flips_the_position_are_caught():
    exchange, store = round_trip()
    unflagged = replace(exchange.orders[1], reduce_only=False)
    assert judge(replace(exchange, orders=(exchange.orders[0], unflagged)), store) == ["reduce_only_flag"]
    # The close sold 0.15 against a 0.1 long: the position went from +10 to -5 lots.
    flipped = replace(exchange, orders=(exchange.orders[0], replace(exchange.orders[1], lots=15, filled_lots=15)),
                      fills=(exchange.fills[0], replace(exchange.fills[1], lots=15)), positions={CALL: -5})
    stored = (store.orders[0], ledger(1, 0, 3, 2, order_id=12, side=SELL, filled=0.15))
    assert "reduce_only_growth" in judge(flipped, replace(store, orders=stored))


def test_an_exercise_resets_the_replayed_position():
    exchange, store = round_trip()
    # Settled at expiry between the open and a (hypothetical) later reducing fill: that fill then grows.
    settled = replace(exchange, exercises=(ExchangeExercise(CALL, 1500),))
    assert "reduce_only_growth" in judge(settled, store)


def test_a_position_the_ledger_does_not_explain_is_unaccounted_and_not_flat():
    exchange, store = round_trip()
    rules = judge(replace(exchange, positions={PUT: 3}), store)
    assert rules == ["unaccounted_position", "not_flat"]
    assert judge(replace(exchange, positions={PUT: 3}), store, require_flat=False) == ["unaccounted_position"]


@pytest.mark.parametrize("changes, text", [
    ({"state": "OPEN"}, "still OPEN"),
    ({"reason": "external_close"}, "not by one of its exit rules"),
    ({"reason": "kill_switch"}, "not by one of its exit rules"),
    ({"state": "FAILED"}, "opened but ended FAILED"),
])
def test_trade_outcomes_other_than_closed_by_its_own_exit_are_violations(changes, text):
    exchange, store = round_trip()
    violations = check_campaign_invariants(exchange, replace(store, trades=(trade(1, **changes),)), prefix=PREFIX,
                                           exit_names=EXITS)
    assert [v.rule for v in violations] == ["trade_outcome"] and text in violations[0].detail


def test_a_failed_trade_that_never_opened_and_has_no_fill_is_fine():
    exchange, store = round_trip()
    never = trade(2, state="FAILED", opened=False, created=300.0, ended=310.0)
    rejected = ledger(2, 0, 1, 1, order_id=None, status="REJECTED", filled=0.0)
    assert judge(exchange, replace(store, trades=store.trades + (never,), orders=store.orders + (rejected,))) == []


def test_two_trades_of_one_strategy_active_together_break_the_concurrency_limit():
    exchange, store = round_trip()
    overlapping = trade(2, state="FAILED", opened=False, created=150.0, ended=160.0)
    assert judge(exchange, replace(store, trades=store.trades + (overlapping,))) == ["concurrency"]


@pytest.mark.parametrize("mutate, text", [
    (lambda ex, st: (ex, replace(st, orders=st.orders[:1])), "is not in the ledger"),
    (lambda ex, st: (replace(ex, orders=ex.orders[:1], fills=ex.fills[:1], positions={CALL: 10}),
                     st), "does not exist on the exchange"),
    (lambda ex, st: (ex, replace(st, orders=(st.orders[0], {**st.orders[1], "status": "CANCELED"}))),
     "exchange state 1, ledger CANCELED"),
    (lambda ex, st: (ex, replace(st, orders=(st.orders[0], {**st.orders[1], "status": "NOT_PLACED"}))),
     "ledger says NOT_PLACED"),
    (lambda ex, st: (ex, replace(st, orders=(st.orders[0], {**st.orders[1], "status": "UNKNOWN"}))),
     "is still UNKNOWN"),
    (lambda ex, st: (replace(ex, orders=(ex.orders[0], replace(ex.orders[1], state=0, filled_lots=10))), st),
     "still working on the exchange"),
])
def test_the_store_must_agree_with_the_exchange_order_by_order(mutate, text):
    exchange, store = mutate(*round_trip())
    violations = check_campaign_invariants(exchange, store, prefix=PREFIX, exit_names=EXITS)
    matching = [v for v in violations if v.rule == "store_vs_exchange"]
    assert matching and any(text in v.detail for v in matching), violations


def test_block_trades_are_matched_by_order_id_and_an_unrecorded_one_is_caught():
    exchange, store = round_trip()
    block = ex_order(21, None, trade_type=14, symbol=PUT)
    fills = exchange.fills + (ExchangeFill(103, 21, PUT, BUY, 10, 2500),)
    with_block = replace(exchange, orders=exchange.orders + (block,), fills=fills, positions={PUT: 10})
    rules = judge(with_block, store, require_flat=False)
    assert "store_vs_exchange" in rules and "unaccounted_position" in rules
    # Recorded by the RFQ job under its own client order id (never sent), found by orderId.
    recorded = ledger(1, 1, 1, 3, order_id=21, symbol=PUT)
    two_legs = trade(1, legs=((0, CALL), (1, PUT)))
    assert judge(with_block, StoreRecords(trades=(two_legs,), orders=store.orders + (recorded,)),
                 require_flat=False) == ["trade_outcome"]   # the put leg was never closed: exposure left


def test_records_read_from_a_real_simulator_state_and_a_real_store_file(sim, signed_request, tmp_path):
    client_order_id = coid(7, 0, 1, 1)
    from tests.conftest import resting_bid_params

    params = resting_bid_params(sim, client_order_id, qty=0.1)
    assert signed_request("POST", "/open/option/order/create/v1", params)["code"] == 0
    exchange = ExchangeRecords.from_state(json.loads(json.dumps(sim.exchange.to_state())), sim.api_key)
    [order] = exchange.orders
    assert order.client_order_id == client_order_id and order.lots == 10 and order.state == 0
    assert not order.reduce_only and order.symbol == params["symbol"]

    path = tmp_path / "trader.db"
    store = StateStore(path, clock=SimulatedClock(start=0.0))
    store.save_trade(trade(7, state="OPENING"))
    store.save_order(ledger(7, 0, 1, 1, order_id=order.order_id, status="LIVE", filled=0.0,
                            symbol=params["symbol"]))
    store.close()
    records = StoreRecords.from_db(path)
    assert records.trades[0]["state"] == "OPENING" and records.orders[0]["client_order_id"] == client_order_id
    violations = check_campaign_invariants(exchange, records, prefix=PREFIX, exit_names={"camp": set()})
    assert {v.rule for v in violations} == {"trade_outcome", "store_vs_exchange"}   # still working, not final


def _journal(path, *events) -> None:
    with path.open("a", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event) + "\n")


def test_the_target_watcher_recognises_each_lifecycle_state_in_the_journal(tmp_path):
    events = tmp_path / "events.jsonl"
    watcher = TargetWatcher(tmp_path)
    _journal(events, {"kind": "trade", "trade_id": "T1", "strategy": "camp", "event": "state", "state": "OPENING"})
    assert watcher.poll("open") is None                       # consumed, not an OPEN event
    _journal(events,
             {"kind": "order_updated", "trade_id": "T1", "intent": 1, "status": "PARTIAL", "filled_qty": 0.03,
              "client_order_id": 1},
             {"kind": "order_updated", "trade_id": "T1", "intent": 1, "status": "CANCEL_REQUESTED",
              "filled_qty": 0.03, "client_order_id": 1})
    assert watcher.poll("partial_fill").description.startswith("order 1 PARTIAL")
    _journal(events, {"kind": "order_recorded", "trade_id": "T1", "intent": 2, "status": "PENDING_SEND",
                      "filled_qty": 0.0, "client_order_id": 2})
    assert "intent 2" in watcher.poll("mid_requote").description
    _journal(events, {"kind": "trade", "trade_id": "T1", "strategy": "camp", "event": "state", "state": "OPEN"})
    assert watcher.poll("open").description == "T1 OPEN"
    _journal(events, {"kind": "trade", "trade_id": "T1", "strategy": "camp", "event": "state", "state": "CLOSING"})
    assert watcher.poll("mid_close").description == "T1 CLOSING"
    (tmp_path / "trading.log").write_text("2026 INFO rfq: rfq job T000000002 OPEN: RFQ 199 created ([...])\n")
    assert watcher.poll("mid_rfq").description == "T000000002 OPEN: RFQ 199 created"


def test_the_file_follower_returns_whole_lines_once_and_survives_rotation(tmp_path):
    path = tmp_path / "trading.log"
    follower = FileFollower(path)
    assert list(follower.new_lines()) == []                 # not there yet
    path.write_bytes(b"one\ntw")
    assert list(follower.new_lines()) == ["one"]            # the half line waits
    with path.open("ab") as handle:
        handle.write(b"o\n")
    assert list(follower.new_lines()) == ["two"]
    path.rename(tmp_path / "trading.log.1")                 # rotation: a new file under the same name
    path.write_bytes(b"three\n")
    assert list(follower.new_lines()) == ["three"]
