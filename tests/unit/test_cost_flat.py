"""Cost that does not grow with history (issue 11): the ledger's indexes, the lifecycle's hot
set of active trades, one quote as a dict lookup, and the simulator's incremental chain stats.

The ledger's indexes are checked property-style: after seeded random sequences of place,
exchange answers (fills, cancels, rejections, lost answers), block fills and restores, every
lookup the daemon makes equals a brute-force scan of every order in recorded order.
"""
from __future__ import annotations

import random
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from clock import SimulatedClock
from contracts import Side
from errors import ExchangeError, LedgerCapError, TransportError
import conditions
from execution_job import JobStatus
from market_data import MarketData
from tests.unit.test_trade_lifecycle import world  # noqa: F401 - a fixture
from order_ledger import Intent, LedgerOrder, OrderLedger, OrderStatus, summarize_fills
from tests.unit.store_fakes import NoFloorsNoKeptBlocks

T0 = 1_772_000_000.0
LIVE, FILLED, PARTIAL, CANCELED = 0, 1, 2, 3


class RandomExchange:
    """Answers create, query and cancel; fills and cancels orders as a seeded random walk decides."""

    def __init__(self, clock: SimulatedClock, rng: random.Random) -> None:
        self.clock = clock
        self.rng = rng
        self.rows: dict[int, dict[str, Any]] = {}
        self._next = 1_900_000_000_000_000_000

    def create_order(self, symbol: str, qty: float, side: int, price: float, client_order_id: int,
                     **_: Any) -> int:
        roll = self.rng.random()
        if roll < 0.08:
            raise ExchangeError(10001, "rejected", "POST order")
        if roll < 0.14:
            raise TransportError("POST order", "timed out")   # outcome unknown: resolved by query
        self._next += 1
        self.rows[self._next] = {"orderId": self._next, "clientOrderId": client_order_id, "qty": qty,
                                 "fillQty": 0.0, "avgPrice": 0.0, "fee": 0.0, "state": LIVE}
        return self._next

    def query_order(self, order_id: int | None = None, client_order_id: int | None = None) -> dict:
        row = self.rows.get(order_id) if order_id is not None else next(
            (r for r in self.rows.values() if r["clientOrderId"] == client_order_id), None)
        if row is None:
            raise ExchangeError(10584, "order not found", "GET order")
        if row["state"] in (LIVE, PARTIAL):
            roll = self.rng.random()
            if roll < 0.3:
                row["fillQty"], row["avgPrice"], row["state"] = row["qty"], 100.0 + self.rng.random(), FILLED
                row["fee"] = round(0.0003 * row["qty"] * 90000, 6)
            elif roll < 0.5:
                row["fillQty"], row["avgPrice"], row["state"] = round(row["qty"] / 2, 2), 99.0, PARTIAL
                row["fee"] = 0.01
        return {**row, "updateTime": int(self.clock.now() * 1000)}

    def cancel_order(self, order_id: int | None = None, **_: Any) -> None:
        row = self.rows[order_id]
        if row["state"] in (LIVE, PARTIAL):
            row["state"] = CANCELED

    def order_history(self, **_: Any) -> Any:
        return []


class MemoryStore(NoFloorsNoKeptBlocks):
    """The ledger's store: records by client order id, in the order first saved."""

    def __init__(self) -> None:
        self.records: dict[int, dict] = {}

    def save_order(self, record: dict) -> None:
        self.records[int(record["client_order_id"])] = dict(record)

    def append_event(self, kind: str, payload: dict, ts: float) -> None:
        pass

    def load_orders(self, trade_id: str | None = None) -> list[dict]:
        return [r for r in self.records.values() if trade_id is None or r["trade_id"] == trade_id]

    def load_order(self, client_order_id: int) -> dict | None:
        return self.records.get(client_order_id)


TRADES = ["T000000001", "T000000002", "T000000003"]


def _scan(ledger: OrderLedger, trade_id: str | None = None, leg_index: int | None = None,
          family: Intent | None = None) -> list[LedgerOrder]:
    """The brute-force answer: every order, in recorded order, filtered one by one."""
    everything = ledger.orders()
    return [o for o in everything
            if (trade_id is None or o.trade_id == trade_id) and (leg_index is None or o.leg_index == leg_index)
            and (family is None or o.intent.family() is Intent(family).family())]


def _assert_indexes_match_a_scan(ledger: OrderLedger) -> None:
    everything = ledger.orders()
    assert [o.client_order_id for o in everything] == sorted(
        (o.client_order_id for o in everything), key=lambda c: [x.client_order_id for x in everything].index(c))
    for trade_id in TRADES + ["T999999999"]:
        assert ledger.orders(trade_id) == _scan(ledger, trade_id)
        assert ledger.live_orders(trade_id) == [o for o in _scan(ledger, trade_id) if not o.status.is_final]
        for leg in range(3):
            assert ledger.orders(trade_id, leg) == _scan(ledger, trade_id, leg)
            for family in (Intent.OPEN, Intent.CLOSE, Intent.UNWIND, Intent.KILL):
                expected = _scan(ledger, trade_id, leg, family)
                assert ledger.orders(trade_id, leg, family) == expected
                assert ledger.orders(trade_id, family=family) == _scan(ledger, trade_id, family=family)
                summary = summarize_fills(expected)
                assert ledger.leg_fill(trade_id, leg, family) == (summary.qty, summary.vwap, summary.fees)
    assert ledger.live_orders() == [o for o in everything if not o.status.is_final]
    assert ledger.orders(leg_index=1) == _scan(ledger, leg_index=1)


def _random_walk(seed: int, steps: int) -> tuple[OrderLedger, MemoryStore, SimulatedClock]:
    rng = random.Random(seed)
    clock = SimulatedClock(start=T0, speed=0)
    store = MemoryStore()
    ledger = OrderLedger(RandomExchange(clock, rng), clock, store=store, max_live_per_symbol=50)
    for step in range(steps):
        clock.advance(rng.choice((0.5, 2.0, 40.0)))
        roll = rng.random()
        trade_index = rng.randrange(len(TRADES))
        trade_id, leg = TRADES[trade_index], rng.randrange(3)
        if roll < 0.45:
            intent = rng.choice(list(Intent))
            try:
                ledger.place(trade_id=trade_id, trade_seq=trade_index + 1, leg_index=leg, intent=intent,
                             symbol=f"BTCUSD-27MAR26-{90000 + 1000 * leg}-C", side=rng.choice((1, 2)),
                             qty=rng.choice((0.01, 0.02, 0.1)), price=100.0, tick_size=1.0)
            except LedgerCapError:
                pass
        elif roll < 0.75 and ledger.live_orders():
            ledger.poll(rng.choice(ledger.live_orders()))
        elif roll < 0.85 and ledger.live_orders():
            ledger.cancel(rng.choice(ledger.live_orders()))
        elif roll < 0.92:
            ledger.record_block_fill(trade_id=trade_id, trade_seq=trade_index + 1, leg_index=leg,
                                     intent=rng.choice((Intent.OPEN, Intent.CLOSE)), symbol="BTCUSD-27MAR26-90000-P",
                                     side=1, qty=0.01, price=120.0, fee=0.02, order_id=7_000 + step,
                                     filled_at=clock.now())
        elif ledger.orders():
            ledger.recheck_final(rng.choice(ledger.orders()))
        if step % 25 == 0:
            _assert_indexes_match_a_scan(ledger)
    return ledger, store, clock


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_every_indexed_lookup_equals_a_scan_after_random_place_update_sequences(seed):
    ledger, _store, _clock = _random_walk(seed, 300)
    _assert_indexes_match_a_scan(ledger)
    assert ledger.orders() and any(o.status.is_final for o in ledger.orders())


@pytest.mark.parametrize("seed", [6, 7])
def test_a_restored_ledger_answers_every_lookup_as_the_one_that_wrote_the_store(seed):
    ledger, store, clock = _random_walk(seed, 250)
    restored = OrderLedger(RandomExchange(clock, random.Random(0)), clock, store=store, max_live_per_symbol=50)
    restored.restore(store.load_orders())
    _assert_indexes_match_a_scan(restored)
    assert [o.to_record() for o in restored.orders()] == [o.to_record() for o in ledger.orders()]
    assert [o.client_order_id for o in restored.live_orders()] == [o.client_order_id for o in ledger.live_orders()]
    for trade_index in range(len(TRADES)):
        for leg in range(3):
            assert restored.attempts_used(trade_index + 1, leg) == ledger.attempts_used(trade_index + 1, leg)
    # Restoring the same records again replaces each order in place: same order, same answers.
    restored.restore(store.load_orders())
    _assert_indexes_match_a_scan(restored)
    assert [o.client_order_id for o in restored.orders()] == [o.client_order_id for o in ledger.orders()]


def test_a_store_failure_before_send_leaves_the_order_final_and_out_of_the_live_set():
    clock = SimulatedClock(start=T0, speed=0)

    class BrokenStore(MemoryStore):
        def save_order(self, record: dict) -> None:
            raise OSError("disk full")

    ledger = OrderLedger(RandomExchange(clock, random.Random(1)), clock, store=BrokenStore())
    with pytest.raises(OSError):
        ledger.place(trade_id="T000000001", trade_seq=1, leg_index=0, intent=Intent.OPEN, symbol="S", side=1,
                     qty=0.01, price=100.0, tick_size=1.0)
    (order,) = ledger.orders()
    assert order.status is OrderStatus.NOT_PLACED and ledger.live_orders() == []
    # ... so the leg's cap does not count it as working.
    ledger._store = None
    ledger.place(trade_id="T000000001", trade_seq=1, leg_index=0, intent=Intent.OPEN, symbol="S", side=1,
                 qty=0.01, price=100.0, tick_size=1.0)


def test_leg_fill_follows_every_change_of_an_order_of_its_leg():
    clock = SimulatedClock(start=T0, speed=0)
    exchange = RandomExchange(clock, random.Random(3))
    exchange.rng = SimpleNamespace(random=lambda: 0.99)   # accepted, never filled on its own
    ledger = OrderLedger(exchange, clock)
    order = ledger.place(trade_id="T000000001", trade_seq=1, leg_index=0, intent=Intent.OPEN, symbol="S",
                         side=Side.BUY, qty=0.1, price=100.0, tick_size=1.0)
    assert ledger.leg_fill("T000000001", 0, Intent.OPEN) == (0.0, 0.0, 0.0)
    row = exchange.rows[order.order_id]
    row.update(fillQty=0.04, avgPrice=101.0, fee=0.5, state=PARTIAL)
    ledger.poll(order)
    assert ledger.leg_fill("T000000001", 0, Intent.OPEN_REQUOTE) == (0.04, 101.0, 0.5)
    row.update(fillQty=0.1, avgPrice=102.0, fee=0.7, state=FILLED)
    ledger.poll(order)
    assert ledger.leg_fill("T000000001", 0, Intent.OPEN) == (0.1, 102.0, 0.7)
    assert ledger.leg_fill("T000000001", 0, Intent.CLOSE) == (0.0, 0.0, 0.0)


# ---- the lifecycle: ended trades leave the hot set, never the record -----------------------------


def _manager_with(trades: list[Any]) -> Any:
    from trade_lifecycle import LifecycleManager, _Runtime
    from trade_execution import ExecutionParams

    manager = LifecycleManager.__new__(LifecycleManager)   # the indexes need no collaborator
    manager._lock = threading.RLock()
    manager.clock = SimulatedClock(start=T0, speed=0)
    manager._start_indexes()
    manager.exec_params_default = ExecutionParams()
    for trade in trades:
        manager._register(trade)
        manager._runtime[trade.id] = _Runtime(params=manager.exec_params_default)
    return manager


def _trade(seq: int, state: Any, strategy: str = "s") -> Any:
    from trade_lifecycle import TradeLifecycle

    return TradeLifecycle(id=f"T{seq:09d}", seq=seq, strategy=strategy, state=state, legs=[], created_at=T0)


def test_an_ended_trade_leaves_the_hot_set_and_its_runtime_but_stays_counted():
    from trade_lifecycle import TradeState

    trades = [_trade(3, TradeState.OPEN), _trade(1, TradeState.OPEN, "other"), _trade(2, TradeState.CLOSED)]
    manager = _manager_with(trades)
    assert [t.seq for t in manager.trades()] == [1, 2, 3]
    assert [t.seq for t in manager.trades("s")] == [2, 3]
    assert [t.seq for t in manager.active_trades()] == [1, 3]
    assert "T000000002" not in manager._active

    trades[0].state = TradeState.CLOSED          # ended: leaves the hot set at the next look
    assert [t.seq for t in manager.active_trades()] == [1]
    assert "T000000003" not in manager._runtime
    assert [t.seq for t in manager.trades()] == [1, 2, 3] and manager.get("T000000003") is trades[0]
    assert [t.seq for t in manager.trades("s")] == [2, 3]


def test_a_trade_with_a_job_or_open_to_reversal_keeps_its_runtime_when_it_ends():
    from external_closes import EXIT_REASON_EXTERNAL
    from external_closes import FLAG_PNL_ESTIMATED
    from trade_lifecycle import TradeState

    working, reversible = _trade(1, TradeState.OPEN), _trade(2, TradeState.OPEN)
    manager = _manager_with([working, reversible])
    manager._runtime[working.id].job = object()
    for trade in (working, reversible):
        trade.state = TradeState.CLOSED
    reversible.exit_reason = EXIT_REASON_EXTERNAL
    reversible.flags.append(FLAG_PNL_ESTIMATED)
    assert manager.active_trades() == []
    assert set(manager._runtime) == {working.id, reversible.id}
    assert manager.has_active_jobs()


def test_replacing_a_trade_of_the_same_id_keeps_one_entry():
    from trade_lifecycle import EXTERNAL_TRADE_ID, TradeLifecycle, TradeState

    manager = _manager_with([_trade(5, TradeState.OPEN)])
    for _ in range(2):
        manager._register(TradeLifecycle(id=EXTERNAL_TRADE_ID, seq=0, strategy="external", state=TradeState.OPEN,
                                         legs=[], created_at=T0))
    assert [t.seq for t in manager.trades()] == [0, 5]
    assert [t.id for t in manager.trades("external")] == [EXTERNAL_TRADE_ID]
    assert [t.seq for t in manager.active_trades()] == [0, 5]


def test_a_closed_trade_of_a_running_manager_is_counted_reported_and_restored_but_not_ticked(world):
    from tests.unit.test_trade_lifecycle import LifecycleManager, fill_close, open_trade
    from trade_lifecycle import TradeState

    closing = open_trade(world, exits=[conditions.max_hold_hours(1)])
    staying = open_trade(world)
    world.clock.advance(3600)
    world.poll()
    fill_close(world, closing)
    manager = world.manager
    assert closing.state is TradeState.CLOSED and staying.state is TradeState.OPEN
    assert manager.trades() == [closing, staying] and manager.get(closing.id) is closing
    assert manager.active_trades() == [staying]
    assert closing.id not in manager._active and closing.id not in manager._runtime
    ticked: list[str] = []
    tick_trade = manager._tick_trade
    manager._tick_trade = lambda trade, now, snapshot: (ticked.append(trade.id), tick_trade(trade, now, snapshot))
    world.poll()
    assert ticked == [staying.id] and manager.trades() == [closing, staying]

    # A restart reads both back from the store: the same counts, the same active set.
    latest = {record["id"]: record for record in world.store.saved}
    world.store.load_trades = lambda strategy=None: list(latest.values())
    world.store.iter_orders = lambda: iter(())
    ended: list[set[str]] = []
    world.ledger.restore = lambda records, *, ended_trades: ended.append(set(ended_trades))
    again = LifecycleManager(ledger=world.ledger, executor=world.executor, market=world.market,
                             client=world.client, clock=world.clock, store=world.store, alerts=world.alerts)
    again.recover()
    assert [t.id for t in again.trades()] == [closing.id, staying.id]
    assert [t.id for t in again.active_trades()] == [staying.id]
    assert again.get(closing.id).state is TradeState.CLOSED
    # The ledger may leave the closed trade's orders in the store; and the closed trade gets no
    # runtime, which would keep it from the archive for the life of the process.
    assert ended == [{closing.id}]
    assert closing.id not in again._runtime and staying.id in again._runtime
    world.ledger.archived.clear()
    world.ledger.archive_answer = True
    again.tick(None)
    assert world.ledger.archived == [closing.id]


# ---- one quote: a dict lookup into the cached chain ---------------------------------------------


class ChainClient:
    """A chain of ``strikes`` strikes; counts chain calls."""

    def __init__(self, strikes: int) -> None:
        self.strikes = strikes
        self.chain_calls = 0

    def instruments(self, base: str = "BTC") -> Any:
        return [{"symbolName": f"BTCUSD-27MAR26-{80000 + 100 * i}-C", "strike": 80000 + 100 * i,
                 "expirationTimestamp": 1774598400000, "isActive": True, "minQty": 0.01, "tickSize": 1.0}
                for i in range(self.strikes)]

    def option_chain(self, end_time_ms: int | None = None, index: str = "BTCUSD") -> Any:
        self.chain_calls += 1
        return [{"strike": 80000 + 100 * i,
                 "callOption": {"symbol": f"BTCUSD-27MAR26-{80000 + 100 * i}-C", "index": index,
                                "endTime": end_time_ms, "strike": 80000 + 100 * i, "markPrice": 500.0 + i,
                                "bid": 490.0, "ask": 510.0, "bidSize": 1, "askSize": 1, "markIv": 0.5,
                                "delta": 0.5, "gamma": 0.0001, "vega": 10.0, "theta": -5.0, "type": 1,
                                "underlyingPrice": 90000.0},
                 "putOption": None}
                for i in range(self.strikes)]

    def orderbook(self, symbol: str) -> Any:
        raise AssertionError("not used")

    def index_price(self, underlying: str = "BTC") -> float:
        return 90000.0


def test_a_quote_is_the_symbols_row_of_the_one_cached_chain():
    clock = SimulatedClock(start=T0, speed=0)
    client = ChainClient(400)
    market = MarketData(client, clock)
    first = market.quote("BTCUSD-27MAR26-80000-C")
    last = market.quote("BTCUSD-27MAR26-119900-C")
    assert client.chain_calls == 1
    assert first.mark == 500.0 and last.mark == 899.0
    payload = market._chains[("BTC", 1774598400000)].value     # the one fetch, indexed by symbol
    assert payload.row("BTCUSD-27MAR26-80000-C") is first and payload.row("BTCUSD-27MAR26-119900-C") is last
    chain = market.chain(1774598400000)
    assert len(chain) == 400 and client.chain_calls == 1
    assert last is next(row for row in chain if row.symbol == "BTCUSD-27MAR26-119900-C")


def test_a_refetched_chain_gets_its_own_map_and_the_old_one_is_dropped():
    clock = SimulatedClock(start=T0, speed=0)
    client = ChainClient(50)
    market = MarketData(client, clock)
    before = market.quote("BTCUSD-27MAR26-80000-C", max_age=5.0)
    clock.advance(10.0)                                      # older than max_age: refetched
    after = market.quote("BTCUSD-27MAR26-80000-C", max_age=5.0)
    assert client.chain_calls == 2 and after is not before and after.as_of > before.as_of
    assert list(market._chains) == [("BTC", 1774598400000)]   # only the new fetch is kept, with its index
    assert market._chains[("BTC", 1774598400000)].value.row("BTCUSD-27MAR26-80000-C") is after
    with pytest.raises(Exception, match="not in the chain"):
        market._row_in_chain("BTCUSD-27MAR26-1-C", "BTC", 1774598400000, 5.0)


# ---- the simulator: 24 h volume kept incrementally --------------------------------------------


def test_the_incremental_taker_volume_equals_a_full_scan_as_time_and_fills_move():
    from simulator.exchange import DAY_MS, _TakerVolume
    from simulator.records import FillRecords

    rng = random.Random(11)
    fills = FillRecords()
    volume = _TakerVolume(fills)
    now = 0
    for trade_id in range(600):
        now += rng.randint(0, 3 * 3_600_000)
        when = now - (rng.randint(0, 60_000) if rng.random() < 0.05 else 0)   # a few out of order
        fills.add(SimpleNamespace(trade_id=trade_id, user_id=1, is_taker=rng.random() < 0.7,
                                  time_ms=when, symbol=rng.choice("ABC"), lots=rng.randint(1, 9)))
        if rng.random() < 0.3:
            continue
        since = now - DAY_MS
        expected: dict[str, int] = {}
        for fill in fills.values():
            if fill.is_taker and fill.time_ms >= since:
                expected[fill.symbol] = expected.get(fill.symbol, 0) + fill.lots
        assert volume.update(since) == expected
