"""The invariants a fault campaign must leave intact, judged from the exchange's own records.

Why from the exchange: the daemon's store is what is under test, so it cannot be the judge.
After a campaign the simulator's full state (every order with its clientOrderId and
reduce-only flag, every fill in execution order, positions, block trades, exercises) is
compared with the daemon's store (trades and ledger orders). Each rule returns
``Violation`` values instead of asserting, so a campaign reports every broken rule at once
and the rules themselves can be unit-tested on hand-made records.

Rules (issue 5 acceptance, BEHAVIOUR.md 4.1, 6.1, 8 rows 5, 11, 17):

* ``duplicate_client_order_id``: a clientOrderId appears at most once on the exchange.
* ``open_overfill``: per trade and leg, the open-intent fills on the exchange never exceed
  the leg's target quantity (a trade is never opened twice).
* ``concurrency``: no two trades of one strategy are active at the same time beyond its
  ``max_concurrent_trades``.
* ``reduce_only_flag`` / ``reduce_only_growth``: every close/unwind/kill order (intent 3-8)
  carries reduceOnly, and no fill of such an order ever increased a position.
* ``unaccounted_position``: the exchange's positions equal what the ledger's fills (less
  settlements) say the daemon holds, symbol by symbol.
* ``trade_outcome``: every trade is terminal; an opened trade is CLOSED by one of its own
  strategy's exit rules; FAILED only if it never opened; nothing was closed externally.
* ``store_vs_exchange``: every exchange order with our prefix is in the ledger with the same
  final status and fill; every ledger order that reached the exchange exists there; block
  trades (RFQ) are recorded by their order id.

Perpetuals and hedging (issue 13), from the exchange's perpetual orders, fills and funding rows:

* ``perp_foreign_order``: every perpetual order on the account carries a clientOrderId with our
  prefix (nothing else trades the campaign's account).
* ``perp_client_order_id_reused``: a perpetual clientOrderId is sent once, and it names (trade,
  leg) of a perpetual leg on that very symbol and side in the store: an id never stands for two orders.
* ``perp_reduce_only_growth``: replaying each perpetual's fills in execution order, no fill of a
  reduce-only order grew or flipped the position it met.
* ``hedge_record``: each hedged trade's recorded hedge quantity (``metadata["hedge"]``) equals
  the exchange's fills of its hedge legs' rebalance orders (those sent before its exit was decided).
* ``funding_unheld``: every funding row is for a position the account held at that instant,
  on that side and of that size.
* ``not_flat`` covers the perpetual positions like the option ones.

Quantities are compared in the exchange's integer lots of each symbol (``lots_per_unit``):
0.01 BTC and 0.1 ETH for options, 0.001 BTC and 0.01 ETH for the perpetuals.
"""
from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from contracts import UNDERLYINGS, is_perpetual_symbol, underlying_of
from order_ledger import parse_client_order_id

LOTS_PER_BTC = 100
SELL = 2
QTY_TOLERANCE = 1e-9
BUY = 1
BLOCK_TRADE_TYPE = 14
OPEN_INTENTS = frozenset({1, 2})
REDUCING_INTENTS = frozenset({3, 4, 5, 6, 7, 8})
TERMINAL_TRADE_STATES = frozenset({"CLOSED", "FAILED"})
FINAL_LEDGER_STATUSES = frozenset({"FILLED", "CANCELED", "REJECTED", "NOT_PLACED", "EXPIRED", "INVALID"})
NEVER_SENT_STATUSES = frozenset({"REJECTED", "NOT_PLACED"})
UNRESOLVED_STATUSES = frozenset({"PENDING_SEND", "UNKNOWN"})
# Exchange order state -> the final ledger status it must have become (API.md 8.4).
EXCHANGE_FINAL_STATUS: dict[int, str] = {1: "FILLED", 3: "CANCELED", 6: "INVALID", -10: "INVALID", 10: "EXPIRED"}
EXCHANGE_LIVE_STATES = frozenset({0, 2, 4, 5})


@dataclass(frozen=True)
class Violation:
    """One broken rule, with enough detail to find the orders and trades involved."""

    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


# --------------------------------------------------------------------------------------------
# The exchange's records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExchangeOrder:
    order_id: int
    client_order_id: int | None
    symbol: str
    side: int
    trade_type: int
    lots: int
    filled_lots: int
    state: int
    reduce_only: bool
    create_ms: int


@dataclass(frozen=True)
class ExchangeFill:
    trade_id: int
    order_id: int
    symbol: str
    side: int
    lots: int
    time_ms: int


@dataclass(frozen=True)
class ExchangeExercise:
    symbol: str
    time_ms: int


@dataclass(frozen=True)
class ExchangeFunding:
    """One funding payment: the position it was charged on (side 1 long, 2 short; lots)."""

    symbol: str
    side: int
    lots: int
    time_ms: int


@dataclass(frozen=True)
class ExchangeRecords:
    """One account's orders, fills (execution order), exercises, final positions (lots) and funding rows."""

    orders: tuple[ExchangeOrder, ...]
    fills: tuple[ExchangeFill, ...]
    exercises: tuple[ExchangeExercise, ...]
    positions: Mapping[str, int]
    funding: tuple[ExchangeFunding, ...] = ()

    @classmethod
    def from_state(cls, state: Mapping[str, Any], api_key: str) -> "ExchangeRecords":
        """From a simulator state (``--state`` file or ``exchange.to_state()``) for the key's account."""
        exchange = state.get("exchange", state)
        account = next((a for a in exchange["accounts"] if a["api_key"] == api_key), None)
        if account is None:
            raise ValueError("no account with that API key in the simulator state")
        user = account["user_id"]
        orders = tuple(
            ExchangeOrder(order_id=int(o["order_id"]),
                          client_order_id=None if o.get("client_order_id") is None else int(o["client_order_id"]),
                          symbol=str(o["symbol"]), side=int(o["side"]), trade_type=int(o["trade_type"]),
                          lots=int(o["lots"]), filled_lots=int(o["filled_lots"]), state=int(o["state"]),
                          reduce_only=bool(o["reduce_only"]), create_ms=int(o["create_ms"]))
            for o in exchange["orders"] if o["user_id"] == user)
        fills = tuple(sorted(
            (ExchangeFill(trade_id=int(f["trade_id"]), order_id=int(f["order_id"]), symbol=str(f["symbol"]),
                          side=int(f["side"]), lots=int(f["lots"]), time_ms=int(f["time_ms"]))
             for f in exchange["fills"] if f["user_id"] == user),
            key=lambda f: f.trade_id))
        exercises = tuple(ExchangeExercise(symbol=str(r["symbol"]), time_ms=int(r["time_ms"]))
                          for r in exchange.get("exercises", []) if r["user_id"] == user)
        positions = {str(p["symbol"]): int(p["lots"]) for p in account.get("positions", []) if int(p["lots"]) != 0}
        funding = tuple(ExchangeFunding(symbol=str(r["symbol"]), side=int(r["trade_side"]), lots=int(r["lots"]),
                                        time_ms=int(r["time_ms"]))
                        for r in exchange.get("funding", []) if r["user_id"] == user)
        return cls(orders, fills, exercises, positions, funding)

    @classmethod
    def from_state_file(cls, path: str | Path, api_key: str) -> "ExchangeRecords":
        return cls.from_state(json.loads(Path(path).read_text(encoding="utf-8")), api_key)


# --------------------------------------------------------------------------------------------
# The daemon's store
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreRecords:
    """Trade documents and ledger order documents, as the daemon persisted them."""

    trades: tuple[dict, ...]
    orders: tuple[dict, ...]

    @classmethod
    def from_db(cls, path: str | Path) -> "StoreRecords":
        """Read ``trader.db`` without writing to it (no migration, no journal-mode change)."""
        connection = connect_read_only(path)
        try:
            trades = tuple(json.loads(row[0]) for row in connection.execute("SELECT doc FROM trades ORDER BY id"))
            orders = tuple(json.loads(row[0]) for row in
                           connection.execute("SELECT doc FROM orders ORDER BY client_order_id"))
        finally:
            connection.close()
        return cls(trades, orders)


def connect_read_only(path: str | Path) -> sqlite3.Connection:
    """A read-only SQLite connection (URI ``mode=ro``): the campaign never writes the daemon's store."""
    return sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=10.0)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderOrigin:
    """Which trade, leg and intent an exchange order belongs to (from its id or the ledger)."""

    trade_seq: int
    leg_index: int
    intent: int


@dataclass
class _Context:
    exchange: ExchangeRecords
    store: StoreRecords
    prefix: int
    ledger_by_coid: dict[int, dict] = field(default_factory=dict)
    ledger_by_order_id: dict[int, dict] = field(default_factory=dict)
    trades_by_seq: dict[int, dict] = field(default_factory=dict)
    origins: dict[int, OrderOrigin] = field(default_factory=dict)   # exchange order_id -> origin


def lots_per_unit(symbol: str) -> int:
    """The exchange's lots per unit of the underlying for ``symbol`` (its quantity step inverted).

    A symbol of no known underlying counts in BTC option lots, as the simulator does.
    """
    spec = UNDERLYINGS.get(underlying_of(symbol) or "")
    if spec is None:
        return LOTS_PER_BTC
    step = spec.perp_qty_step if is_perpetual_symbol(symbol) else spec.option_qty_step
    return int(round(1.0 / step))


def _lots(qty: float, symbol: str) -> int:
    return int(round(float(qty) * lots_per_unit(symbol)))


def _ours(coid: int | None, prefix: int) -> OrderOrigin | None:
    if coid is None:
        return None
    try:
        parts = parse_client_order_id(coid)
    except ValueError:
        return None
    if parts.prefix != prefix:
        return None
    return OrderOrigin(parts.trade_seq, parts.leg_index, parts.intent)


def _build_context(exchange: ExchangeRecords, store: StoreRecords, prefix: int) -> _Context:
    ctx = _Context(exchange, store, prefix)
    for record in store.orders:
        ctx.ledger_by_coid[int(record["client_order_id"])] = record
        if record.get("order_id") is not None:
            ctx.ledger_by_order_id[int(record["order_id"])] = record
    for trade in store.trades:
        ctx.trades_by_seq[int(trade["seq"])] = trade
    for order in exchange.orders:
        origin = _ours(order.client_order_id, prefix)
        if origin is None and order.trade_type == BLOCK_TRADE_TYPE:
            record = ctx.ledger_by_order_id.get(order.order_id)
            if record is not None:
                origin = OrderOrigin(int(record["trade_seq"]), int(record["leg_index"]), int(record["intent"]))
        if origin is not None:
            ctx.origins[order.order_id] = origin
    return ctx


def _ledger_signed_fills(orders: Iterable[dict]) -> dict[str, float]:
    signed: dict[str, float] = defaultdict(float)
    for record in orders:
        filled = float(record.get("filled_qty") or 0.0)
        if filled > 0:
            signed[str(record["symbol"])] += filled if int(record["side"]) == BUY else -filled
    return signed


def _leg_sign(side: int) -> int:
    return 1 if int(side) == BUY else -1


# --------------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------------


def check_unique_client_order_ids(ctx: _Context) -> list[Violation]:
    counts = Counter(o.client_order_id for o in ctx.exchange.orders if o.client_order_id is not None)
    return [Violation("duplicate_client_order_id", f"clientOrderId {coid} appears {n} times on the exchange")
            for coid, n in sorted(counts.items()) if n > 1]


def check_open_fills_within_target(ctx: _Context) -> list[Violation]:
    filled: dict[tuple[int, int], int] = defaultdict(int)
    violations: list[Violation] = []
    for order in ctx.exchange.orders:
        origin = ctx.origins.get(order.order_id)
        if origin is None or origin.intent not in OPEN_INTENTS:
            continue
        filled[(origin.trade_seq, origin.leg_index)] += order.filled_lots
    for (seq, leg_index), lots in sorted(filled.items()):
        trade = ctx.trades_by_seq.get(seq)
        if trade is None:
            violations.append(Violation("open_overfill", f"trade sequence {seq} has open fills on the exchange "
                                                         f"({lots} lots) but no trade in the store"))
            continue
        legs = {int(leg["index"]): leg for leg in trade["legs"]}
        leg = legs.get(leg_index)
        target = _lots(leg["qty"], str(leg["symbol"])) if leg is not None else 0
        if lots > target:
            violations.append(Violation("open_overfill", f"{trade['id']} leg {leg_index}: {lots} lots of open fills "
                                                         f"on the exchange, target {target}"))
    return violations


def check_concurrency(ctx: _Context, max_concurrent: Mapping[str, int] | None = None) -> list[Violation]:
    """Active intervals [created_at, closed_at or failed_at) of one strategy never overlap beyond its limit."""
    by_strategy: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for trade in ctx.store.trades:
        end = trade.get("closed_at") or trade.get("failed_at")
        by_strategy[str(trade["strategy"])].append(
            (float(trade["created_at"]), float("inf") if end is None else float(end), str(trade["id"])))
    violations: list[Violation] = []
    for strategy, intervals in sorted(by_strategy.items()):
        limit = (max_concurrent or {}).get(strategy, 1)
        for start, _end, trade_id in intervals:
            overlapping = [other for s, e, other in intervals if s <= start < e]
            if len(overlapping) > limit:
                violations.append(Violation("concurrency", f"{strategy}: {', '.join(sorted(overlapping))} active "
                                                           f"together at {start:.0f} (limit {limit})"))
    return violations


def check_reduce_only(ctx: _Context) -> list[Violation]:
    """Reducing intents carry the flag; replaying every fill, none of theirs grows a position.

    The campaigns never hold opposite perp legs on one perpetual, so the one exception to the
    flag (a perp close the account nets against another of our trades, docs/PERPETUALS.md)
    never applies there: an order without it is still a violation here.
    """
    violations: list[Violation] = []
    orders = {o.order_id: o for o in ctx.exchange.orders}
    for order in ctx.exchange.orders:
        origin = ctx.origins.get(order.order_id)
        if origin is None or origin.intent not in REDUCING_INTENTS or order.trade_type == BLOCK_TRADE_TYPE:
            continue
        if not order.reduce_only:
            violations.append(Violation("reduce_only_flag", f"order {order.client_order_id} (intent {origin.intent}) "
                                                            f"on {order.symbol} was sent without reduceOnly"))
    timeline: list[tuple[int, int, int, Any]] = [(f.time_ms, 0, f.trade_id, f) for f in ctx.exchange.fills]
    timeline += [(r.time_ms, 1, index, r) for index, r in enumerate(ctx.exchange.exercises)]
    position: dict[str, int] = defaultdict(int)
    for _time, kind, _key, item in sorted(timeline, key=lambda entry: entry[:3]):
        if kind == 1:
            position[item.symbol] = 0
            continue
        before = position[item.symbol]
        after = before + (item.lots if item.side == BUY else -item.lots)
        position[item.symbol] = after
        origin = ctx.origins.get(item.order_id)
        if origin is None or origin.intent not in REDUCING_INTENTS:
            continue
        if abs(after) > abs(before) or before * after < 0:
            order = orders.get(item.order_id)
            coid = order.client_order_id if order is not None else None
            violations.append(Violation("reduce_only_growth", f"fill {item.trade_id} of order {coid or item.order_id} "
                                                              f"(intent {origin.intent}) moved {item.symbol} from "
                                                              f"{before} to {after} lots"))
    return violations


def check_positions_accounted(ctx: _Context) -> list[Violation]:
    """Exchange positions == ledger fills - settled - externally closed, per symbol (lots)."""
    expected = _ledger_signed_fills(ctx.store.orders)
    for trade in ctx.store.trades:
        for leg in trade["legs"]:
            settlement = leg.get("settlement") or {}
            removed = float(settlement.get("qty") or 0.0) + float(leg.get("external_qty") or 0.0)
            if removed:
                expected[str(leg["symbol"])] -= _leg_sign(leg["side"]) * removed
    violations: list[Violation] = []
    for symbol in sorted(set(expected) | set(ctx.exchange.positions)):
        want = _lots(expected.get(symbol, 0.0), symbol)
        have = int(ctx.exchange.positions.get(symbol, 0))
        if want != have:
            violations.append(Violation("unaccounted_position", f"{symbol}: exchange holds {have} lots, the daemon's "
                                                                f"ledger accounts for {want}"))
    return violations


def check_flat(ctx: _Context) -> list[Violation]:
    """At the end of a campaign whose trades are all closed, the account holds nothing."""
    return [Violation("not_flat", f"{symbol}: {lots} lots still held on the exchange")
            for symbol, lots in sorted(ctx.exchange.positions.items()) if lots]


def check_trade_outcomes(ctx: _Context, exit_names: Mapping[str, Iterable[str]],
                         extra_reasons: Iterable[str] = ()) -> list[Violation]:
    allowed = {strategy: set(names) | set(extra_reasons) for strategy, names in exit_names.items()}
    fills_by_trade: dict[str, list[dict]] = defaultdict(list)
    for record in ctx.store.orders:
        fills_by_trade[str(record["trade_id"])].append(record)
    violations: list[Violation] = []
    for trade in ctx.store.trades:
        trade_id, strategy, state = str(trade["id"]), str(trade["strategy"]), str(trade["state"])
        if strategy not in allowed:
            violations.append(Violation("trade_outcome", f"{trade_id} belongs to unknown strategy {strategy!r}"))
            continue
        if state not in TERMINAL_TRADE_STATES:
            violations.append(Violation("trade_outcome", f"{trade_id} ({strategy}) is still {state}"))
            continue
        exposure = {symbol: qty for symbol, qty in _ledger_signed_fills(fills_by_trade[trade_id]).items()
                    if abs(qty) > QTY_TOLERANCE}
        if exposure:
            violations.append(Violation("trade_outcome",
                                        f"{trade_id} ({strategy}) is {state} with exposure {exposure}"))
        if any(float(leg.get("external_qty") or 0.0) > QTY_TOLERANCE for leg in trade["legs"]):
            violations.append(Violation("trade_outcome", f"{trade_id} ({strategy}) recorded an external close"))
        if state == "CLOSED":
            if trade.get("opened_at") is None:
                violations.append(Violation("trade_outcome", f"{trade_id} ({strategy}) is CLOSED but never opened"))
            reason = trade.get("exit_reason")
            if reason not in allowed[strategy]:
                violations.append(Violation("trade_outcome", f"{trade_id} ({strategy}) closed by {reason!r}, not by "
                                                             f"one of its exit rules"))
        elif trade.get("opened_at") is not None:
            violations.append(Violation("trade_outcome", f"{trade_id} ({strategy}) opened but ended FAILED "
                                                         f"({trade.get('failure_reason')})"))
    return violations


def check_store_matches_exchange(ctx: _Context) -> list[Violation]:
    violations: list[Violation] = []
    exchange_by_coid = {o.client_order_id: o for o in ctx.exchange.orders if o.client_order_id is not None}
    exchange_by_id = {o.order_id: o for o in ctx.exchange.orders}
    for order in ctx.exchange.orders:
        if order.trade_type == BLOCK_TRADE_TYPE:
            if order.order_id not in ctx.ledger_by_order_id:
                violations.append(Violation("store_vs_exchange", f"block trade order {order.order_id} ({order.symbol} "
                                                                 f"{order.filled_lots} lots) is not in the ledger"))
            continue
        if _ours(order.client_order_id, ctx.prefix) is None:
            continue
        record = ctx.ledger_by_coid.get(order.client_order_id)
        if record is None:
            violations.append(Violation("store_vs_exchange", f"exchange order {order.client_order_id} is not in the "
                                                             f"ledger"))
            continue
        violations.extend(_compare_order(order, record))
    for record in ctx.store.orders:
        coid, status = int(record["client_order_id"]), str(record["status"])
        if status in UNRESOLVED_STATUSES:
            violations.append(Violation("store_vs_exchange", f"ledger order {coid} is still {status}"))
            continue
        if coid in exchange_by_coid or status in NEVER_SENT_STATUSES:
            continue
        order_id = record.get("order_id")
        block = exchange_by_id.get(int(order_id)) if order_id is not None else None
        if block is not None and block.trade_type == BLOCK_TRADE_TYPE:
            if block.filled_lots != _lots(record.get("filled_qty") or 0.0, block.symbol):
                violations.append(Violation("store_vs_exchange", f"block fill {coid}: ledger {record.get('filled_qty')}"
                                                                 f", exchange {block.filled_lots} lots"))
            continue
        violations.append(Violation("store_vs_exchange", f"ledger order {coid} ({status}) does not exist on the "
                                                         f"exchange"))
    return violations


def _compare_order(order: ExchangeOrder, record: dict) -> list[Violation]:
    coid, status = order.client_order_id, str(record["status"])
    problems: list[str] = []
    if status in NEVER_SENT_STATUSES:
        problems.append(f"ledger says {status} but the exchange has it (state {order.state})")
    elif order.state in EXCHANGE_LIVE_STATES:
        problems.append(f"still working on the exchange (state {order.state}); ledger {status}")
    elif EXCHANGE_FINAL_STATUS.get(order.state) != status:
        problems.append(f"exchange state {order.state}, ledger {status}")
    if order.filled_lots != _lots(record.get("filled_qty") or 0.0, order.symbol):
        problems.append(f"exchange filled {order.filled_lots} lots, ledger {record.get('filled_qty')}")
    if record.get("order_id") is not None and int(record["order_id"]) != order.order_id:
        problems.append(f"orderId {order.order_id} on the exchange, {record['order_id']} in the ledger")
    return [Violation("store_vs_exchange", f"order {coid}: {problem}") for problem in problems]


# --------------------------------------------------------------------------------------------
# Perpetuals and hedging (issue 13)
# --------------------------------------------------------------------------------------------


def _perp_orders(ctx: _Context) -> list[ExchangeOrder]:
    return [o for o in ctx.exchange.orders if is_perpetual_symbol(o.symbol)]


def check_perp_order_ids(ctx: _Context) -> list[Violation]:
    """Every perp order is ours, sent once, and its id names a perp leg of that symbol and side."""
    violations: list[Violation] = []
    counts = Counter(o.client_order_id for o in ctx.exchange.orders if o.client_order_id is not None)
    for order in _perp_orders(ctx):
        origin = _ours(order.client_order_id, ctx.prefix)
        if origin is None:
            violations.append(Violation("perp_foreign_order", f"perp order {order.order_id} on {order.symbol} carries "
                                                              f"clientOrderId {order.client_order_id}, not ours"))
            continue
        sent = counts.get(order.client_order_id or 0, 0)   # ours, so the id is there
        if sent > 1:
            violations.append(Violation("perp_client_order_id_reused", f"clientOrderId {order.client_order_id} sent "
                                                                       f"{sent} times"))
        trade = ctx.trades_by_seq.get(origin.trade_seq)
        leg = None if trade is None else next((leg for leg in trade["legs"]
                                               if int(leg["index"]) == origin.leg_index), None)
        if leg is None or str(leg["symbol"]) != order.symbol:
            violations.append(Violation("perp_client_order_id_reused", f"clientOrderId {order.client_order_id} "
                                                                       f"({order.symbol}) names trade "
                                                                       f"{origin.trade_seq} leg {origin.leg_index}, "
                                                                       f"which is not that perpetual"))
            continue
        # An opening order trades the leg's side, a reducing one the opposite side.
        opening = origin.intent in OPEN_INTENTS
        want_side = int(leg["side"]) if opening else (SELL if int(leg["side"]) == BUY else BUY)
        if order.side != want_side:
            violations.append(Violation("perp_client_order_id_reused", f"clientOrderId {order.client_order_id} "
                                                                       f"(intent {origin.intent}) is side "
                                                                       f"{order.side} on a side-{leg['side']} leg"))
    return violations


def _perp_fill_timeline(ctx: _Context) -> list[ExchangeFill]:
    return sorted((f for f in ctx.exchange.fills if is_perpetual_symbol(f.symbol)),
                  key=lambda f: (f.time_ms, f.trade_id))


def check_perp_reduce_only(ctx: _Context) -> list[Violation]:
    """Each fill of a reduce-only perp order (the exchange's own flag) checked against the position before it."""
    orders = {o.order_id: o for o in ctx.exchange.orders}
    position: dict[str, int] = defaultdict(int)
    violations: list[Violation] = []
    for fill in _perp_fill_timeline(ctx):
        before = position[fill.symbol]
        after = before + (fill.lots if fill.side == BUY else -fill.lots)
        position[fill.symbol] = after
        order = orders.get(fill.order_id)
        if order is None or not order.reduce_only:
            continue
        if abs(after) > abs(before) or before * after < 0:
            violations.append(Violation("perp_reduce_only_growth", f"fill {fill.trade_id} of reduce-only order "
                                                                   f"{order.client_order_id or order.order_id} moved "
                                                                   f"{fill.symbol} from {before} to {after} lots"))
    return violations


def _hedge_leg_indexes(metadata: Mapping[str, Any]) -> set[int]:
    """The hedge legs a trade recorded (``metadata["hedge_legs"]``: ``{"long": i, "short": j}``)."""
    legs = metadata.get("hedge_legs") or {}
    return {int(legs[side]) for side in ("long", "short") if side in legs}


def check_hedge_records(ctx: _Context) -> list[Violation]:
    """A hedged trade's recorded hedge equals the exchange's fills of its rebalance orders.

    Rebalance orders are the hedge legs' orders sent before the trade's exit was decided;
    the close round that flattens the hedge afterwards does not change the recorded hedge.
    """
    exchange_by_coid = {o.client_order_id: o for o in ctx.exchange.orders if o.client_order_id is not None}
    by_trade: dict[str, list[dict]] = defaultdict(list)
    for record in ctx.store.orders:
        by_trade[str(record["trade_id"])].append(record)
    violations: list[Violation] = []
    for trade in ctx.store.trades:
        metadata = trade.get("metadata") or {}
        hedge_legs = _hedge_leg_indexes(metadata)
        if not hedge_legs:
            continue
        symbols = {str(leg["symbol"]) for leg in trade["legs"] if int(leg["index"]) in hedge_legs}
        if len(symbols) != 1:
            violations.append(Violation("hedge_record", f"{trade['id']}: hedge legs {sorted(hedge_legs)} on "
                                                        f"{sorted(symbols)}, not one perpetual"))
            continue
        symbol = symbols.pop()
        decided = trade.get("exit_decided_at")
        filled = 0
        for record in by_trade[str(trade["id"])]:
            if int(record["leg_index"]) not in hedge_legs:
                continue
            if decided is not None and float(record.get("sent_at") or 0.0) >= float(decided):
                continue
            order = exchange_by_coid.get(int(record["client_order_id"]))
            if order is not None:
                filled += order.filled_lots if order.side == BUY else -order.filled_lots
        recorded = _lots(float((metadata.get("hedge") or {}).get("hedge_qty") or 0.0), symbol)
        if recorded != filled:
            violations.append(Violation("hedge_record", f"{trade['id']} records a hedge of {recorded} lots of "
                                                        f"{symbol}; its rebalance orders filled {filled} on the "
                                                        f"exchange"))
    return violations


def check_funding_rows(ctx: _Context) -> list[Violation]:
    """Funding is charged only on a position held at its instant, of that side and size.

    A fill stamped at the very instant may come before or after the charge, so either
    position (fills before the instant, or up to it) is accepted.
    """
    fills = _perp_fill_timeline(ctx)
    violations: list[Violation] = []
    for row in ctx.exchange.funding:
        held = [sum((f.lots if f.side == BUY else -f.lots) for f in fills if f.symbol == row.symbol
                    and (f.time_ms <= row.time_ms if inclusive else f.time_ms < row.time_ms))
                for inclusive in (False, True)]
        signed = row.lots if row.side == BUY else -row.lots
        if row.lots == 0 or signed not in held:
            violations.append(Violation("funding_unheld", f"funding on {row.symbol} at {row.time_ms} for "
                                                          f"{signed} lots; the fills say the account held "
                                                          f"{held[0]}"))
    return violations


def check_campaign_invariants(exchange: ExchangeRecords, store: StoreRecords, *, prefix: int,
                              exit_names: Mapping[str, Iterable[str]], extra_reasons: Iterable[str] = (),
                              max_concurrent: Mapping[str, int] | None = None,
                              require_flat: bool = True) -> list[Violation]:
    """Every rule above; an empty list means the campaign left nothing wrong."""
    ctx = _build_context(exchange, store, prefix)
    violations = [
        *check_unique_client_order_ids(ctx),
        *check_open_fills_within_target(ctx),
        *check_concurrency(ctx, max_concurrent),
        *check_reduce_only(ctx),
        *check_positions_accounted(ctx),
        *check_trade_outcomes(ctx, exit_names, extra_reasons),
        *check_store_matches_exchange(ctx),
        *check_perp_order_ids(ctx),
        *check_perp_reduce_only(ctx),
        *check_hedge_records(ctx),
        *check_funding_rows(ctx),
    ]
    if require_flat:
        violations.extend(check_flat(ctx))
    return violations


@dataclass(frozen=True)
class CampaignTally:
    """Counts for a report: trades by state and strategy, orders by intent and status."""

    trades_by_state: dict[str, int]
    trades_opened: int
    trades_closed: int
    trades_by_exit_reason: dict[str, int]
    ledger_orders: int
    ledger_orders_by_intent: dict[int, int]
    exchange_orders: int
    exchange_fills: int
    block_trade_orders: int
    unwound_trades: int
    breaker_trips: int
    close_rounds_failed: int
    perp_orders: int = 0
    perp_fills: int = 0
    hedged_trades: int = 0          # trades whose hedge legs were added (at least one hedge order)
    hedge_rebalances: int = 0       # rebalances the trades recorded (metadata["hedge"]["rebalances"])
    funding_rows: int = 0

    @classmethod
    def of(cls, exchange: ExchangeRecords, store: StoreRecords) -> "CampaignTally":
        return cls(
            trades_by_state=dict(Counter(str(t["state"]) for t in store.trades)),
            trades_opened=sum(1 for t in store.trades if t.get("opened_at") is not None),
            trades_closed=sum(1 for t in store.trades if t["state"] == "CLOSED"),
            trades_by_exit_reason=dict(Counter(str(t.get("exit_reason")).split("(")[0] for t in store.trades
                                               if t["state"] == "CLOSED")),
            ledger_orders=len(store.orders),
            ledger_orders_by_intent=dict(sorted(Counter(int(o["intent"]) for o in store.orders).items())),
            exchange_orders=len(exchange.orders),
            exchange_fills=len(exchange.fills),
            block_trade_orders=sum(1 for o in exchange.orders if o.trade_type == BLOCK_TRADE_TYPE),
            unwound_trades=len({str(o["trade_id"]) for o in store.orders if int(o["intent"]) in (5, 6)}),
            breaker_trips=sum(int(t.get("breaker_trips") or 0) for t in store.trades),
            close_rounds_failed=sum(int(t.get("close_rounds") or 0) for t in store.trades),
            perp_orders=sum(1 for o in exchange.orders if is_perpetual_symbol(o.symbol)),
            perp_fills=sum(1 for f in exchange.fills if is_perpetual_symbol(f.symbol)),
            hedged_trades=sum(1 for t in store.trades if (t.get("metadata") or {}).get("hedge_legs")),
            hedge_rebalances=sum(int(((t.get("metadata") or {}).get("hedge") or {}).get("rebalances") or 0)
                                 for t in store.trades),
            funding_rows=len(exchange.funding),
        )
