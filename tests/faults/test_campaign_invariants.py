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
    ExchangeFunding,
    ExchangeOrder,
    ExchangeRecords,
    StoreRecords,
    check_campaign_invariants,
    lots_per_unit,
)
from tests.faults.kill_harness import FileFollower, TargetWatcher

PREFIX = 101
CALL = "BTCUSD-4MAR26-92000-C"
PUT = "BTCUSD-4MAR26-88000-P"
PERP = "BTCUSD"
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
    _journal(events, {"kind": "trade", "trade_id": "T3", "strategy": "camp", "event": "hedge_legs_added",
                      "state": "OPEN"},
             {"kind": "order_recorded", "trade_id": "T3", "intent": 1, "status": "PENDING_SEND", "filled_qty": 0.0,
              "client_order_id": 3, "symbol": "BTCUSD"})
    assert watcher.poll("mid_hedge").description == "order 3 hedge BTCUSD intent 1 recorded"
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


# ---- perpetuals and hedging (issue 13) ----------------------------------------------------------


def test_lots_are_counted_in_each_symbols_own_step():
    assert lots_per_unit(CALL) == 100 and lots_per_unit(PERP) == 1000
    assert lots_per_unit("ETHUSD") == 100 and lots_per_unit("ETHUSD-4MAR26-2000-C") == 10


def perp_round_trip() -> tuple[ExchangeRecords, StoreRecords]:
    """Trade 1: a 0.1 call and a 0.1 BTCUSD leg (100 perp lots) opened, funded once, closed reduce-only."""
    exchange = ExchangeRecords(
        orders=(ex_order(11, coid(1, 0, 1, 1)), ex_order(12, coid(1, 0, 3, 2), side=SELL, reduce_only=True),
                ex_order(13, coid(1, 1, 1, 1), symbol=PERP, lots=100, filled=100),
                ex_order(14, coid(1, 1, 3, 2), symbol=PERP, side=SELL, lots=100, filled=100, reduce_only=True)),
        fills=(ExchangeFill(101, 11, CALL, BUY, 10, 1000), ExchangeFill(103, 13, PERP, BUY, 100, 1000),
               ExchangeFill(102, 12, CALL, SELL, 10, 2000), ExchangeFill(104, 14, PERP, SELL, 100, 2000)),
        exercises=(), positions={}, funding=(ExchangeFunding(PERP, BUY, 100, 1500),))
    store = StoreRecords(trades=(trade(1, legs=((0, CALL), (1, PERP))),),
                         orders=(ledger(1, 0, 1, 1, order_id=11), ledger(1, 0, 3, 2, order_id=12, side=SELL),
                                 ledger(1, 1, 1, 1, order_id=13, symbol=PERP),
                                 ledger(1, 1, 3, 2, order_id=14, symbol=PERP, side=SELL)))
    return exchange, store


def test_a_consistent_round_trip_with_a_perp_leg_and_funding_passes_every_rule():
    assert judge(*perp_round_trip()) == []


def test_a_perp_order_without_our_prefix_is_foreign():
    exchange, store = perp_round_trip()
    stranger = ex_order(15, 555, symbol=PERP, lots=5, filled=0, state=3)
    assert judge(replace(exchange, orders=exchange.orders + (stranger,)), store) == ["perp_foreign_order"]


def test_a_perp_client_order_id_sent_twice_or_naming_another_leg_is_reused():
    exchange, store = perp_round_trip()
    twin = ex_order(15, coid(1, 1, 1, 1), symbol=PERP, lots=5, filled=0, state=3)
    rules = judge(replace(exchange, orders=exchange.orders + (twin,)), store)
    assert "perp_client_order_id_reused" in rules and "duplicate_client_order_id" in rules
    # The call leg's id (leg 0) on a perp order: the id stands for an option order too.
    borrowed = ex_order(16, coid(1, 0, 2, 9), symbol=PERP, lots=5, filled=0, state=3)
    stored = store.orders + (ledger(1, 0, 2, 9, order_id=16, symbol=PERP, status="CANCELED", filled=0.0),)
    assert judge(replace(exchange, orders=exchange.orders + (borrowed,)),
                 replace(store, orders=stored)) == ["perp_client_order_id_reused"]
    # A close id (intent 3) on the buying side of a long leg: not the order its id names.
    wrong_side = ex_order(17, coid(1, 1, 3, 9), symbol=PERP, lots=5, filled=0, state=3, reduce_only=True)
    stored = store.orders + (ledger(1, 1, 3, 9, order_id=17, symbol=PERP, status="CANCELED", filled=0.0),)
    assert judge(replace(exchange, orders=exchange.orders + (wrong_side,)),
                 replace(store, orders=stored)) == ["perp_client_order_id_reused"]


def test_a_reduce_only_perp_fill_that_flips_the_position_is_caught_by_the_exchange_flag():
    exchange, store = perp_round_trip()
    # The close sold 120 lots against a 100-lot long: -20 lots, then bought back by an opening order.
    flipped_close = replace(exchange.orders[3], lots=120, filled_lots=120)
    buy_back = ex_order(15, coid(1, 1, 2, 3), symbol=PERP, lots=20, filled=20)
    fills = exchange.fills[:3] + (replace(exchange.fills[3], lots=120), ExchangeFill(105, 15, PERP, BUY, 20, 3000))
    stored = store.orders[:3] + (ledger(1, 1, 3, 2, order_id=14, symbol=PERP, side=SELL, filled=0.12),
                                 ledger(1, 1, 2, 3, order_id=15, symbol=PERP, filled=0.02))
    rules = judge(replace(exchange, orders=exchange.orders[:3] + (flipped_close, buy_back), fills=fills),
                  replace(store, orders=stored))
    assert "perp_reduce_only_growth" in rules
    # Same fills, but the exchange says the order was not reduce-only: the perp rule is quiet.
    unflagged = replace(flipped_close, reduce_only=False)
    rules = judge(replace(exchange, orders=exchange.orders[:3] + (unflagged, buy_back), fills=fills),
                  replace(store, orders=stored))
    assert "perp_reduce_only_growth" not in rules and "reduce_only_flag" in rules


def test_a_perp_position_left_after_the_drain_is_not_flat():
    exchange, store = perp_round_trip()
    assert judge(replace(exchange, positions={PERP: 7}), store) == ["unaccounted_position", "not_flat"]


def hedged_round_trip(recorded: float = 0.003) -> tuple[ExchangeRecords, StoreRecords]:
    """Trade 1 holds a call; a rebalance buys 0.003 BTCUSD on the long hedge leg (1), the close sells it."""
    exchange = ExchangeRecords(
        orders=(ex_order(11, coid(1, 0, 1, 1)), ex_order(12, coid(1, 0, 3, 2), side=SELL, reduce_only=True),
                ex_order(13, coid(1, 1, 1, 1), symbol=PERP, lots=3, filled=3),
                ex_order(14, coid(1, 1, 3, 2), symbol=PERP, side=SELL, lots=3, filled=3, reduce_only=True)),
        fills=(ExchangeFill(101, 11, CALL, BUY, 10, 1000), ExchangeFill(103, 13, PERP, BUY, 3, 1200),
               ExchangeFill(102, 12, CALL, SELL, 10, 1600), ExchangeFill(104, 14, PERP, SELL, 3, 1600)),
        exercises=(), positions={})
    hedged = trade(1, legs=((0, CALL), (1, PERP), (2, PERP)))
    hedged["legs"][2]["side"] = SELL
    hedged["exit_decided_at"] = 150.0
    hedged["metadata"] = {"hedge_legs": {"long": 1, "short": 2}, "hedge": {"hedge_qty": recorded, "rebalances": 1}}
    store = StoreRecords(trades=(hedged,), orders=(
        ledger(1, 0, 1, 1, order_id=11), ledger(1, 0, 3, 2, order_id=12, side=SELL),
        {**ledger(1, 1, 1, 1, order_id=13, symbol=PERP, filled=0.003), "sent_at": 120.0},
        {**ledger(1, 1, 3, 2, order_id=14, symbol=PERP, side=SELL, filled=0.003), "sent_at": 160.0}))
    return exchange, store


def test_the_recorded_hedge_must_equal_the_rebalance_fills_and_the_close_is_not_a_rebalance():
    assert judge(*hedged_round_trip()) == []
    violations = check_campaign_invariants(*hedged_round_trip(0.004), prefix=PREFIX, exit_names=EXITS)
    assert [v.rule for v in violations] == ["hedge_record"] and "filled 3" in violations[0].detail
    # A close order sent before the exit was decided counts as a rebalance: the hedge recorded 0.003 is wrong.
    exchange, store = hedged_round_trip()
    early = (*store.orders[:3], {**store.orders[3], "sent_at": 140.0})
    assert judge(exchange, replace(store, orders=early)) == ["hedge_record"]


@pytest.mark.parametrize("row", [
    ExchangeFunding(PERP, BUY, 100, 500),      # before the position was opened
    ExchangeFunding(PERP, BUY, 100, 2500),     # after it was closed
    ExchangeFunding(PERP, SELL, 100, 1500),    # the wrong side
    ExchangeFunding(PERP, BUY, 60, 1500),      # the wrong size
    ExchangeFunding("ETHUSD", BUY, 5, 1500),   # a perpetual never traded
])
def test_funding_charged_on_a_position_not_held_is_caught(row):
    exchange, store = perp_round_trip()
    assert judge(replace(exchange, funding=(row,)), store) == ["funding_unheld"]


def test_funding_at_the_instant_of_a_fill_accepts_the_position_on_either_side_of_it():
    exchange, store = perp_round_trip()
    assert judge(replace(exchange, funding=(ExchangeFunding(PERP, BUY, 100, 1000),)), store) == []
    assert judge(replace(exchange, funding=(ExchangeFunding(PERP, BUY, 100, 2000),)), store) == []


def test_funding_rows_are_read_from_a_simulator_state_for_the_keys_account_only():
    state = {"accounts": [{"api_key": "k1", "user_id": 1, "positions": []},
                          {"api_key": "k2", "user_id": 2, "positions": []}],
             "orders": [], "fills": [],
             "funding": [{"user_id": 1, "symbol": PERP, "trade_side": 2, "lots": 7, "time_ms": 99,
                          "record_id": 5, "fund_fee": -0.1, "fund_rate": 0.0001, "mark": 90000.0},
                         {"user_id": 2, "symbol": PERP, "trade_side": 1, "lots": 3, "time_ms": 99,
                          "record_id": 6, "fund_fee": 0.1, "fund_rate": 0.0001, "mark": 90000.0}]}
    assert ExchangeRecords.from_state(state, "k1").funding == (ExchangeFunding(PERP, SELL, 7, 99),)
