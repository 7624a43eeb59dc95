"""Trade lifecycle against small fakes of the executor, ledger, market, client and store.

Covers the transition table of BEHAVIOUR.md 4.2, the PnL modes of 2.3, the circuit breaker of
4.4 and the settlement math of 4.5 (incident 19). The fakes record every call into one shared
journal so that ordering rules (I5: persist before the next request) can be asserted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, Callable

import pytest

import conditions
import price_sanity
import settlement
import trade_lifecycle
from clock import SimulatedClock
from coincall_payloads import OptionRow
from contracts import Contract, Side
from errors import StaleDataError
from execution_job import JobStatus
from order_ledger import Intent, OrderStatus
from trade_lifecycle import LifecycleManager, TradeLeg, TradeLifecycle, TradeState

START = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc).timestamp()  # Monday 06:00 UTC
FRIDAY_EXPIRY_MS = int(datetime(2026, 3, 6, 8, tzinfo=timezone.utc).timestamp() * 1000)
MONDAY_EXPIRY_MS = int(datetime(2026, 3, 2, 8, tzinfo=timezone.utc).timestamp() * 1000)
CALL = "BTCUSD-6MAR26-90000-C"
PUT = "BTCUSD-6MAR26-80000-P"


def family_of(intent: Intent) -> Intent:
    return Intent(intent.value - (0 if intent.value % 2 else 1))


# ------------------------------------------------------------------------------------- fakes


class Journal(list):
    """Every externally visible action, in order."""


@dataclass
class FakeOrder:
    trade_id: str
    leg_index: int
    intent: Intent
    filled_qty: float
    updated_at: float
    order_id: int | None = 1
    status: str = "FILLED"
    last_fill_at: float | None = None
    client_order_id: int = 0


class FakeLedger:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.fills: dict[tuple[str, int, Intent], list[tuple[float, float, float]]] = {}
        self.order_list: list[FakeOrder] = []
        self.live: list[Any] = []
        self.polled: list[Any] = []
        self.blocked: set[str] = set()
        self.archived: list[str] = []
        self.archive_answer = True

    def is_blocked(self, symbol: str) -> bool:
        return symbol in self.blocked

    def blocked_symbols(self) -> dict[str, str]:
        return {symbol: "blocked by the test" for symbol in self.blocked}

    def archive_trade(self, trade_id: str) -> bool:
        if self.archive_answer:
            self.archived.append(trade_id)
        return self.archive_answer

    def unblock(self, symbols=None) -> list[str]:
        lifted = sorted(self.blocked if symbols is None else self.blocked & set(symbols))
        self.blocked -= set(lifted)
        return lifted

    def fill(self, trade_id: str, leg_index: int, intent: Intent, qty: float, price: float, fee: float,
             at: float = 0.0) -> None:
        self.fills.setdefault((trade_id, leg_index, family_of(intent)), []).append((qty, price, fee))
        self.order_list.append(FakeOrder(trade_id, leg_index, intent, qty, at))

    def leg_fill(self, trade_id: str, leg_index: int, family: Intent) -> tuple[float, float, float]:
        rows = self.fills.get((trade_id, leg_index, family), [])
        qty = sum(r[0] for r in rows)
        vwap = sum(r[0] * r[1] for r in rows) / qty if qty else 0.0
        return qty, vwap, sum(r[2] for r in rows)

    def orders(self, trade_id=None, leg_index=None, family=None):
        return [o for o in self.order_list if (trade_id is None or o.trade_id == trade_id)
                and (family is None or family_of(o.intent) == family)]

    def live_orders(self, trade_id=None):
        return list(self.live)

    def poll(self, order):
        self.polled.append(order)
        return order

    def cancel(self, order):
        raise AssertionError("not used by this test")

    def restore(self, records, *, ended_trades=frozenset()) -> None:
        raise AssertionError("not used by this test")

    def late_fill_possible(self, order) -> bool:
        return False   # the fake's orders report their fills at once

    def recheck_final(self, order) -> float | None:
        raise AssertionError("not used by this test")


class FakeJob:
    def __init__(self, journal: Journal, trade, legs, intent, mode, params, best_effort) -> None:
        self.journal = journal
        self.trade, self.legs, self.intent, self.mode = trade, legs, intent, mode
        self.params, self.best_effort = params, best_effort
        self.status = JobStatus.WORKING
        self.advances: list[float] = []
        self.stop_reason: str | None = None
        self.reason = ""
        self.phase = "quoting"   # an engine's phase, as the job_overdue alert names it

    @property
    def done(self) -> bool:
        return self.status != JobStatus.WORKING

    def advance(self, now: float) -> JobStatus:
        self.advances.append(now)
        self.journal.append(("advance", self.trade.id, self.intent, now))
        return self.status

    def result(self):
        return SimpleNamespace(status=self.status, legs=[], reason=self.reason)

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason

    def end(self, status: JobStatus, reason: str = "") -> None:
        self.status, self.reason = status, reason


class FakeExecutor:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.jobs: list[FakeJob] = []
        self.fail_start = False

    def start(self, mode, trade, legs, intent, params, *, best_effort=False):
        if self.fail_start:
            raise RuntimeError("the engine refused the job")
        job = FakeJob(self.journal, trade, list(legs), intent, mode, params, best_effort)
        self.journal.append(("start", trade.id, intent))
        self.jobs.append(job)
        return job

    def route(self, mode, legs, index_price):
        return "smart"

    @property
    def last(self) -> FakeJob:
        return self.jobs[-1]


def implied_vol(option_type: str, index: float, strike: float, expiry_ms: int, as_of: float, mark: float) -> float:
    """The vol that prices ``mark`` (bisection), so a fixture row is self-consistent for the
    price sanity rule; NaN (the exchange's "no IV") when no vol in the sane range does."""
    t_years = price_sanity.time_to_expiry_years(expiry_ms, as_of)
    low, high = price_sanity.MIN_SANE_IV, price_sanity.MAX_SANE_IV
    value = lambda vol: price_sanity.black_scholes(option_type, index, strike, t_years, vol)  # noqa: E731
    if not value(low) <= mark <= value(high):
        return math.nan
    for _ in range(80):
        middle = (low + high) / 2.0
        low, high = (middle, high) if value(middle) < mark else (low, middle)
    return (low + high) / 2.0


def make_row(symbol: str, *, bid: float, ask: float, mark: float, as_of: float, delta: float | None = 0.3,
             index: float = 85_000.0) -> OptionRow:
    strike = float(symbol.split("-")[2])
    iv = implied_vol(symbol[-1], index, strike, FRIDAY_EXPIRY_MS, as_of, mark)
    return OptionRow(symbol=symbol, option_type=symbol[-1], strike=strike,
                     expiry_ms=FRIDAY_EXPIRY_MS, bid=bid, ask=ask, bid_size=1.0, ask_size=1.0, mark=mark,
                     mark_iv=iv, bid_iv=0.5, ask_iv=0.5, delta=delta, gamma=0.0001, vega=10.0, theta=-5.0,
                     rho=1.0, underlying_price=index, as_of=as_of)


class FakeMarket:
    def __init__(self, clock) -> None:
        self.clock = clock
        self.prices: dict[str, dict] = {}
        self.calls: list[str] = []
        self.fail = False

    def set(self, symbol: str, **prices: float) -> None:
        self.prices[symbol] = prices

    def quote(self, symbol: str, *, max_age: float = 15.0) -> OptionRow:
        self.calls.append(symbol)
        if self.fail:
            raise StaleDataError("chain unavailable")
        return make_row(symbol, as_of=self.clock.now(), **self.prices[symbol])

    def order_book(self, symbol: str, *, max_age: float = 3.0):
        raise AssertionError("not used by this test")

    def instrument(self, symbol: str):
        raise AssertionError("not used by this test")


class FakeClient:
    def __init__(self) -> None:
        self.delivery: list[dict] = []
        self.exercises: list[dict] = []
        self.delivery_calls = 0

    def delivery_prices(self, symbol: str = "BTCUSD"):
        self.delivery_calls += 1
        return {"list": list(self.delivery), "records_total": len(self.delivery)}

    def exercise_history(self, **filters):
        return {"list": [e for e in self.exercises if e["symbol"] == filters.get("symbol")]}

    def estimated_expiration_price(self, end_time_ms, index="BTCUSD"):
        return [{"estimatedExpirationPrice": "81000.00", "index": index, "endTime": end_time_ms}]


class FakeStore:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.seq = 0
        self.saved: list[dict] = []

    def next_trade_seq(self) -> int:
        self.seq += 1
        return self.seq

    def save_trade(self, record: dict) -> None:
        self.saved.append(record)
        self.journal.append(("save", record["id"], record["state"]))

    def append_event(self, kind: str, payload: dict, ts: float) -> None:
        self.journal.append(("event", kind, payload.get("event")))

    def load_trades(self, strategy=None):
        raise AssertionError("not used by this test")

    def iter_orders(self):
        raise AssertionError("not used by this test")

    def events(self, kind=None, *, after_id=0, limit=None) -> list[dict]:
        return []   # no RFQ accept recorded


class FakeAlerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, dict]] = []

    def alert(self, level: str, kind: str, message: str, **detail) -> None:
        self.sent.append((level, kind, message, detail))

    def kinds(self, level: str | None = None) -> list[str]:
        return [kind for lvl, kind, _, _ in self.sent if level is None or lvl == level]


@dataclass
class World:
    clock: SimulatedClock
    journal: Journal
    ledger: FakeLedger
    executor: FakeExecutor
    market: FakeMarket
    client: FakeClient
    store: FakeStore
    alerts: FakeAlerts
    manager: LifecycleManager
    opened: list = field(default_factory=list)
    closed: list = field(default_factory=list)

    def snap(self, **extra):
        return SimpleNamespace(timestamp=self.clock.now(), net_delta=extra.get("net_delta", 0.0), positions=())

    def poll(self, **extra):
        snapshot = self.snap(**extra)
        self.manager.tick(snapshot)
        return snapshot


@pytest.fixture
def world() -> World:
    return build_world(lambda journal, clock: FakeLedger(journal))


def build_world(make_ledger: Callable[[Journal, SimulatedClock], FakeLedger]) -> World:
    """The lifecycle over the fakes, a strangle's two quotes set; ``make_ledger`` picks the ledger."""
    clock = SimulatedClock(start=START, speed=0)
    journal = Journal()
    ledger, executor = make_ledger(journal, clock), FakeExecutor(journal)
    market, client, store, alerts = FakeMarket(clock), FakeClient(), FakeStore(journal), FakeAlerts()
    market.set(CALL, bid=100.0, ask=110.0, mark=105.0)
    market.set(PUT, bid=200.0, ask=220.0, mark=210.0)
    manager = LifecycleManager(ledger=ledger, executor=executor, market=market, client=client, clock=clock,
                               store=store, alerts=alerts)
    return World(clock, journal, ledger, executor, market, client, store, alerts, manager)


def contract(symbol: str, expiry_ms: int = FRIDAY_EXPIRY_MS) -> Contract:
    return Contract(symbol=symbol, underlying="BTC", option_type=symbol[-1], strike=float(symbol.split("-")[2]),
                    expiry_ms=expiry_ms)


def resolved(symbol: str, index: int, side: int, qty: float = 0.1, expiry_ms: int = FRIDAY_EXPIRY_MS):
    """A resolved leg as option_selection.resolve_legs gives it: the contract, side, qty, the row."""
    return SimpleNamespace(index=index, symbol=symbol, contract=contract(symbol, expiry_ms), side=Side(side),
                           qty=qty, row=None, index_price=85_000.0)


def create_strangle(world: World, *, side: int = 2, exits=(), expiry_ms: int = FRIDAY_EXPIRY_MS, **kwargs):
    legs = [resolved(CALL, 0, side, expiry_ms=expiry_ms), resolved(PUT, 1, side, expiry_ms=expiry_ms)]
    return world.manager.create("strat", legs, exit_conditions=exits, on_opened=world.opened.append,
                                on_closed=world.closed.append, **kwargs)


def open_trade(world: World, *, side: int = 2, exits=(), expiry_ms: int = FRIDAY_EXPIRY_MS) -> TradeLifecycle:
    trade = create_strangle(world, side=side, exits=exits, expiry_ms=expiry_ms)
    open_intent = Intent.OPEN
    world.ledger.fill(trade.id, 0, open_intent, 0.1, 100.0, 0.5, at=world.clock.now())
    world.ledger.fill(trade.id, 1, open_intent, 0.1, 200.0, 0.6, at=world.clock.now())
    world.executor.last.end(JobStatus.FILLED)
    world.clock.advance(2)
    world.poll()
    assert trade.state is TradeState.OPEN
    return trade


def fill_close(world: World, trade: TradeLifecycle) -> None:
    """The running close job fills both legs of an open strangle, then two polls settle it."""
    world.ledger.fill(trade.id, 0, Intent.CLOSE, 0.1, 60.0, 0.3)
    world.ledger.fill(trade.id, 1, Intent.CLOSE, 0.1, 150.0, 0.4)
    world.executor.last.end(JobStatus.FILLED)
    world.clock.advance(2)
    world.poll()
    world.poll()


def states_saved(world: World, trade_id: str) -> list[str]:
    return [r["state"] for r in world.store.saved if r["id"] == trade_id]


# ------------------------------------------------------------------------------------ creation


def test_create_persists_pending_open_then_starts_the_open_job(world):
    trade = create_strangle(world)
    assert trade.id == "T000000001" and trade.seq == 1
    saves = [entry for entry in world.journal if entry[0] in ("save", "start", "advance")]
    assert saves[0] == ("save", trade.id, "PENDING_OPEN")
    assert saves.index(("start", trade.id, Intent.OPEN)) < saves.index(("save", trade.id, "OPENING"))
    first_advance = next(i for i, e in enumerate(saves) if e[0] == "advance")
    assert saves.index(("save", trade.id, "OPENING")) < first_advance  # I5
    job = world.executor.last
    assert job.intent is Intent.OPEN and job.best_effort is False and job.mode == "limit"
    assert [(t.leg_index, t.symbol, t.side, t.qty) for t in job.legs] == [(0, CALL, 2, 0.1), (1, PUT, 2, 0.1)]
    assert trade.state is TradeState.OPENING


def test_the_runners_mode_is_final_the_lifecycle_never_routes(world):
    world.executor.route = lambda *args: pytest.fail("the lifecycle routed again")   # route once (issue 10)
    trade = create_strangle(world, execution_mode="smart")
    assert trade.execution_mode == "smart" and world.executor.last.mode == "smart"
    saved = [r["execution_mode"] for r in world.store.saved if r["id"] == trade.id]
    assert saved and set(saved) == {"smart"}   # stored as routed, from the first write on


@pytest.mark.parametrize("mode", ["auto", "fast", ""])
def test_an_unrouted_mode_is_refused_before_anything_is_written(world, mode):
    with pytest.raises(ValueError, match="routed mode"):
        create_strangle(world, execution_mode=mode)
    assert world.store.saved == [] and world.executor.jobs == [] and world.manager.trades() == []


def test_job_that_cannot_start_fails_the_trade_without_exposure(world):
    world.executor.fail_start = True
    trade = create_strangle(world)
    assert trade.state is TradeState.FAILED and "could not start" in trade.failure_reason
    assert trade.failed_at == world.clock.now() and not trade.has_exposure


def test_row3_open_failed_with_zero_fills_is_failed_without_alert_when_nothing_was_placed(world):
    trade = create_strangle(world)
    world.executor.last.end(JobStatus.FAILED, "no price within price_wait_seconds")
    world.clock.advance(60)
    world.poll()
    assert trade.state is TradeState.FAILED and trade.failure_reason == "no price within price_wait_seconds"
    assert trade.failed_at == START + 60 and world.alerts.sent == [] and world.opened == []


def test_row3_alerts_when_orders_were_placed(world):
    trade = create_strangle(world)
    world.ledger.order_list.append(FakeOrder(trade.id, 0, Intent.OPEN, 0.0, START, order_id=77, status="CANCELED"))
    world.executor.last.end(JobStatus.FAILED, "rounds exhausted")
    world.poll()
    assert trade.state is TradeState.FAILED and world.alerts.kinds("WARNING") == ["open_failed"]


def test_row4_filled_opens_once_with_entry_premium_from_fills(world):
    trade = create_strangle(world)
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.04, 100.0, 0.2, at=START + 1)
    world.ledger.fill(trade.id, 0, Intent.OPEN_REQUOTE, 0.06, 110.0, 0.3, at=START + 5)
    world.ledger.fill(trade.id, 1, Intent.OPEN, 0.1, 200.0, 0.6, at=START + 3)
    world.executor.last.end(JobStatus.FILLED)
    world.clock.advance(8)
    world.poll()
    world.poll()
    assert trade.state is TradeState.OPEN and trade.opened_at == START + 5  # last fill time
    assert world.opened == [trade]
    assert trade.entry_premium == pytest.approx(0.04 * 100 + 0.06 * 110 + 0.1 * 200)  # short: credit
    assert trade.legs[0].open_vwap == pytest.approx(106.0)
    assert trade.fees_paid == pytest.approx(1.1)
    assert trade.exposure() == {0: pytest.approx(-0.1), 1: pytest.approx(-0.1)}


def test_row5_partial_open_unwinds_reduce_side_exact_net_qty_then_row7_failed(world):
    trade = create_strangle(world, side=1)
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 110.0, 0.5)
    world.ledger.fill(trade.id, 1, Intent.OPEN, 0.03, 220.0, 0.2)
    world.executor.last.end(JobStatus.PARTIAL, "rounds exhausted")
    world.poll()
    assert trade.state is TradeState.UNWINDING
    assert world.alerts.kinds("WARNING") == ["open_partial_unwind"]
    assert world.alerts.sent[0][3]["legs"] == {CALL: 0.1, PUT: 0.03}
    unwind = world.executor.last
    assert unwind.intent is Intent.UNWIND and unwind.best_effort is True
    assert [(t.leg_index, t.side, t.qty) for t in unwind.legs] == [(0, 2, 0.1), (1, 2, 0.03)]
    assert unwind.advances == [world.clock.now()]  # started and stepped in the same tick
    world.ledger.fill(trade.id, 0, Intent.UNWIND, 0.1, 100.0, 0.4)
    world.ledger.fill(trade.id, 1, Intent.UNWIND_REQUOTE, 0.03, 210.0, 0.1)
    unwind.end(JobStatus.FILLED)
    world.clock.advance(2)
    world.poll()
    assert trade.state is TradeState.FAILED and trade.opened_at is None and world.opened == []
    expected = -0.1 * 110 - 0.03 * 220 + 0.1 * 100 + 0.03 * 210 - (0.5 + 0.2 + 0.4 + 0.1)
    assert trade.realized_pnl == pytest.approx(expected)


def test_row8_unwind_round_with_exposure_left_starts_the_next_round_on_remaining_qty(world):
    trade = create_strangle(world, side=1)
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 110.0, 0.5)
    world.executor.last.end(JobStatus.PARTIAL)
    world.poll()
    first = world.executor.last
    world.ledger.fill(trade.id, 0, Intent.UNWIND, 0.04, 100.0, 0.1)
    first.end(JobStatus.PARTIAL)
    world.clock.advance(2)
    world.poll()
    assert trade.state is TradeState.UNWINDING and trade.unwind_rounds == 1
    second = world.executor.last
    assert second is not first and [(t.leg_index, t.qty) for t in second.legs] == [(0, pytest.approx(0.06))]


# ------------------------------------------------------------------------------------ exits


def test_row9_11_35_exit_fires_on_poll_tick_and_close_starts_in_the_same_tick(world):
    trade = open_trade(world, exits=[conditions.max_hold_hours(1)])
    world.clock.advance(3600)
    marker = len(world.journal)
    world.poll()
    assert trade.state is TradeState.CLOSING
    assert trade.exit_reason == "max_hold_hours(hours=1.0)" and trade.exit_decided_at == world.clock.now()
    assert trade.exit_detail["mode"] == "fair" and set(trade.exit_detail["quotes"]) == {CALL, PUT}
    close = world.executor.last
    assert close.intent is Intent.CLOSE and close.best_effort is True
    assert [(t.leg_index, t.side, t.qty) for t in close.legs] == [(0, 1, 0.1), (1, 1, 0.1)]
    assert close.advances == [trade.exit_decided_at]  # row 35: the first step carries the decision time
    tail = world.journal[marker:]
    states = [e[2] for e in tail if e[0] == "save"]
    assert states[:2] == ["PENDING_CLOSE", "CLOSING"]
    closing_saved = tail.index(("save", trade.id, "CLOSING"))
    assert closing_saved < tail.index(("advance", trade.id, Intent.CLOSE, trade.exit_decided_at))  # I5


def test_row12_33_closed_with_realized_pnl_from_our_fills_and_on_closed_once(world):
    trade = open_trade(world, exits=[conditions.max_hold_hours(1)])
    world.clock.advance(3600)
    world.poll()
    fill_close(world, trade)
    assert trade.state is TradeState.CLOSED and trade.closed_at == world.clock.now()
    expected = (0.1 * 100 + 0.1 * 200) - (0.1 * 60 + 0.1 * 150) - (0.5 + 0.6 + 0.3 + 0.4)
    assert trade.realized_pnl == pytest.approx(expected) and trade.realized_pnl == pytest.approx(7.2)
    assert world.closed == [trade] and world.closed[0].realized_pnl == pytest.approx(7.2)
    assert not trade.has_exposure and states_saved(world, trade.id)[-1] == "CLOSED"


def test_exits_only_on_poll_ticks_and_only_for_open_trades(world):
    calls = []

    def spy(snapshot, trade):
        calls.append(trade.state)
        return False

    trade = open_trade(world, exits=[spy])
    calls.clear()
    snapshot = world.poll()
    world.manager.tick(snapshot)  # same snapshot object: an execution tick, not a poll
    world.manager.tick(snapshot)
    assert calls == [TradeState.OPEN]
    quote_calls = len(world.market.calls)
    world.manager.tick(snapshot)
    assert len(world.market.calls) == quote_calls  # quotes refreshed once per poll only
    world.poll()
    assert len(calls) == 2 and len(world.market.calls) == quote_calls + 2


def test_first_true_exit_wins_and_reason_is_never_overwritten(world):
    later = []
    trade = open_trade(world, exits=[conditions.profit_target(1.0), conditions.max_hold_hours(1),
                                     lambda s, t: later.append(1) or False])
    later.clear()
    world.market.set(CALL, bid=40.0, ask=50.0, mark=45.0)
    world.market.set(PUT, bid=90.0, ask=100.0, mark=95.0)
    world.clock.advance(3600)
    world.poll()
    assert trade.exit_reason == "profit_target(usd=1.0, mode=fair)" and later == []
    assert trade.exit_detail["pnl"] == pytest.approx(30 - 0.1 * 45 - 0.1 * 95 - 1.1)
    decided = trade.exit_decided_at
    world.clock.advance(10)
    assert world.manager.force_close(trade.id, "manual")
    assert trade.exit_reason == "profit_target(usd=1.0, mode=fair)" and trade.exit_decided_at == decided
    assert len([j for j in world.executor.jobs if j.intent is Intent.CLOSE]) == 1  # I4: one job


def test_raising_exit_counts_as_not_fired_and_the_next_one_is_evaluated(world):
    def broken(snapshot, trade):
        raise RuntimeError("bug")

    trade = open_trade(world, exits=[broken, conditions.max_hold_hours(1)])
    world.clock.advance(3600)
    world.poll()
    assert trade.exit_reason == "max_hold_hours(hours=1.0)"


def test_stale_quotes_make_pnl_exits_unevaluable_and_alert_after_60s(world):
    trade = open_trade(world, exits=[conditions.max_loss(10.0)])
    world.market.fail = True
    for _ in range(7):  # quotes stale from +20 s; unevaluable for 50 s by the 7th poll
        world.clock.advance(10)
        world.poll()
    assert trade.state is TradeState.OPEN and trade.exit_reason is None
    assert "exit_unevaluable" not in world.alerts.kinds()
    for _ in range(5):
        world.clock.advance(10)
        world.poll()
    assert world.alerts.kinds("WARNING").count("exit_unevaluable") == 1


def test_snapshot_error_advances_jobs_but_evaluates_no_exit(world):
    fired = []
    trade = open_trade(world, exits=[lambda s, t: fired.append(1) or False])
    fired.clear()
    trade2 = create_strangle(world)
    job = world.executor.last
    before = len(job.advances)
    world.manager.on_snapshot_error(RuntimeError("positions 5xx"))
    assert len(job.advances) == before + 1 and fired == []
    assert trade.state is TradeState.OPEN and trade2.state is TradeState.OPENING


# ------------------------------------------------------------------------------- closing rounds


def test_row13_close_qty_recomputed_from_fills_and_breaker_after_ten_rounds(world):
    trade = open_trade(world, side=1)
    world.manager.force_close(trade.id, "manual")
    assert trade.exit_reason == "manual"
    first = world.executor.last
    world.ledger.fill(trade.id, 0, Intent.CLOSE, 0.1, 90.0, 0.2)   # call closes, put has no bid
    world.ledger.fill(trade.id, 1, Intent.CLOSE, 0.02, 150.0, 0.1)
    first.end(JobStatus.PARTIAL)
    world.clock.advance(2)
    world.poll()
    assert trade.close_rounds == 1 and trade.state is TradeState.CLOSING
    second = world.executor.last
    assert [(t.leg_index, t.side, t.qty) for t in second.legs] == [(1, 2, pytest.approx(0.08))]
    for _ in range(9):
        world.executor.last.end(JobStatus.FAILED)
        world.clock.advance(2)
        world.poll()
    assert trade.close_rounds == 10 and trade.breaker_trips == 1
    assert trade.state is TradeState.PENDING_CLOSE and trade.breaker_until == world.clock.now() + 300
    assert world.alerts.kinds("CRITICAL") == ["close_breaker"]
    jobs = len(world.executor.jobs)
    world.clock.advance(298)
    world.poll()
    assert len(world.executor.jobs) == jobs  # waiting for breaker_until
    world.clock.advance(2)
    world.poll()
    assert len(world.executor.jobs) == jobs + 1 and trade.state is TradeState.CLOSING
    world.executor.last.end(JobStatus.FAILED)
    world.clock.advance(2)
    world.poll()
    assert trade.breaker_trips == 2 and trade.breaker_until == world.clock.now() + 600
    assert trade.state is TradeState.PENDING_CLOSE and trade.has_exposure
    assert trade.legs[0].net_qty == 0.0  # the closed call is never sold twice


def test_breaker_delay_caps_at_sixty_minutes_and_trade_never_fails(world):
    trade = open_trade(world)
    world.manager.force_close(trade.id, "manual")
    delays = []
    for _ in range(20):
        while world.executor.last.done or trade.state is TradeState.PENDING_CLOSE:
            world.clock.advance(max(0.0, (trade.breaker_until or 0) - world.clock.now()) + 1)
            world.poll()
        world.executor.last.end(JobStatus.FAILED)
        world.clock.advance(1)
        world.poll()
        if trade.breaker_until and trade.breaker_until > world.clock.now():
            delays.append(round(trade.breaker_until - world.clock.now()))
    assert delays[:6] == [300, 600, 1200, 2400, 3600, 3600]
    assert trade.state is TradeState.PENDING_CLOSE and trade.failure_reason is None


def test_kill_switch_overrides_breaker_with_kill_intent(world):
    trade = open_trade(world)
    world.manager.force_close(trade.id, "manual")
    for _ in range(10):
        world.executor.last.end(JobStatus.FAILED)
        world.clock.advance(1)
        world.poll()
    assert trade.breaker_until is not None and trade.breaker_until > world.clock.now()
    killed = world.manager.kill_all()
    assert killed == [trade.id]
    job = world.executor.last
    assert job.intent is Intent.KILL and trade.state is TradeState.CLOSING
    assert trade.exit_reason == "manual"  # I3: the first decision stays


def test_force_close_during_opening_stops_the_job_then_closes_once_open(world):
    trade = create_strangle(world)
    open_job = world.executor.last
    assert world.manager.force_close(trade.id, "manual")
    assert open_job.stop_reason == "manual" and trade.state is TradeState.OPENING
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 100.0, 0.5)
    world.ledger.fill(trade.id, 1, Intent.OPEN, 0.1, 200.0, 0.5)
    open_job.end(JobStatus.FILLED)
    world.clock.advance(2)
    world.poll()
    assert world.opened == [trade] and trade.exit_reason == "manual"
    assert trade.state is TradeState.CLOSING and world.executor.last.intent is Intent.CLOSE


def test_close_in_smart_mode_falls_back_to_limit_after_a_failed_round(world):
    legs = [resolved(CALL, 0, 2), resolved(PUT, 1, 2)]
    trade = world.manager.create("s", legs, execution_mode="smart")
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 100.0, 0.5)
    world.ledger.fill(trade.id, 1, Intent.OPEN, 0.1, 200.0, 0.5)
    world.executor.last.end(JobStatus.FILLED)
    world.poll()
    world.manager.force_close(trade.id)
    assert world.executor.last.mode == "smart"
    world.executor.last.end(JobStatus.FAILED)
    world.clock.advance(2)
    world.poll()
    assert world.executor.last.mode == "limit"


def test_stray_live_orders_are_polled_before_a_new_round(world):
    trade = open_trade(world)
    world.ledger.live.append(SimpleNamespace(client_order_id=1, status=OrderStatus.UNKNOWN))
    jobs = len(world.executor.jobs)
    world.manager.force_close(trade.id)
    assert len(world.executor.jobs) == jobs and world.ledger.polled
    world.ledger.live.clear()
    world.poll()
    assert len(world.executor.jobs) == jobs + 1


# ------------------------------------------------------------------------- expiry and settlement


def settle_long_call(world: World, *, expiry_ms: int, exercise: dict | None = None):
    """Incident 19: long 0.1 call K 80,000 bought at 1,500; delivery 82,000."""
    symbol = "BTCUSD-6MAR26-80000-C" if expiry_ms == FRIDAY_EXPIRY_MS else "BTCUSD-2MAR26-80000-C"
    world.market.set(symbol, bid=1900.0, ask=2100.0, mark=2000.0)
    trade = world.manager.create("s", [resolved(symbol, 0, 1, expiry_ms=expiry_ms)],
                                 on_closed=world.closed.append)
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 1500.0, 2.0)
    world.executor.last.end(JobStatus.FILLED)
    world.poll()
    world.clock.set_time(expiry_ms / 1000.0)
    world.poll()
    assert trade.state is TradeState.SETTLING and trade.exit_reason == "expiry"
    world.client.delivery.append({"date": expiry_ms, "delivery_price": "82000.00"})
    if exercise is not None:
        world.client.exercises.append({"symbol": symbol, **exercise})
    world.clock.advance(10)
    world.poll()
    return trade


def test_row19_itm_long_call_settles_at_intrinsic_minus_estimated_delivery_fee(world):
    trade = settle_long_call(world, expiry_ms=FRIDAY_EXPIRY_MS)
    settlement = trade.legs[0].settlement
    assert settlement.cash == pytest.approx(200.0) and settlement.intrinsic == 2000.0
    assert settlement.fee == pytest.approx(1.23) and settlement.fee_estimated  # min(1.23, 25)
    assert trade.state is TradeState.CLOSED and "fee_estimated" in trade.flags
    assert trade.realized_pnl == pytest.approx(200.0 - 150.0 - 2.0 - 1.23)
    assert world.closed == [trade]


def test_row19_daily_expiry_pays_no_delivery_fee(world):
    trade = settle_long_call(world, expiry_ms=MONDAY_EXPIRY_MS)
    assert trade.legs[0].settlement.cash == pytest.approx(200.0) and trade.legs[0].settlement.fee == 0.0
    assert trade.realized_pnl == pytest.approx(200.0 - 150.0 - 2.0)


def test_exercise_record_with_our_quantity_gives_the_exact_fee(world):
    trade = settle_long_call(world, expiry_ms=FRIDAY_EXPIRY_MS, exercise={
        "qty": "0.1", "tradeSide": 1, "exercisePrice": 82000.0, "settlementCashFlow": 200.0, "fees": 1.2})
    settlement = trade.legs[0].settlement
    assert settlement.fee == pytest.approx(1.2) and not settlement.fee_estimated
    assert trade.realized_pnl == pytest.approx(200.0 - 150.0 - 2.0 - 1.2)


def test_short_put_otm_settles_at_zero_and_itm_short_call_pays(world):
    world.market.set("BTCUSD-6MAR26-90000-P", bid=1.0, ask=2.0, mark=1.5)
    trade = world.manager.create("s", [resolved(CALL, 0, 2), resolved(PUT, 1, 2)])
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 100.0, 0.0)
    world.ledger.fill(trade.id, 1, Intent.OPEN, 0.1, 200.0, 0.0)
    world.executor.last.end(JobStatus.FILLED)
    world.poll()
    world.client.delivery.append({"date": "2026-03-06", "delivery_price": "91000"})
    world.clock.set_time(FRIDAY_EXPIRY_MS / 1000.0)
    world.poll()
    call, put = trade.legs
    assert call.settlement.cash == pytest.approx(-100.0) and put.settlement.cash == 0.0
    assert trade.state is TradeState.CLOSED and trade.exit_reason == "expiry"


def test_row20_exit_during_halt_waits_for_settlement_keeping_its_reason(world):
    trade = open_trade(world, exits=[conditions.max_hold_hours(1)], expiry_ms=MONDAY_EXPIRY_MS)
    world.clock.set_time(MONDAY_EXPIRY_MS / 1000.0 - 600)  # 07:50
    jobs = len(world.executor.jobs)
    world.poll()
    assert trade.exit_reason == "max_hold_hours(hours=1.0)" and trade.state is TradeState.PENDING_CLOSE
    assert len(world.executor.jobs) == jobs  # both legs frozen: no order
    assert not world.manager.has_active_jobs()
    world.clock.set_time(MONDAY_EXPIRY_MS / 1000.0)
    world.poll()
    assert trade.state is TradeState.SETTLING
    world.client.delivery.append({"date": MONDAY_EXPIRY_MS, "delivery_price": "85000"})
    world.clock.advance(10)
    world.poll()
    assert trade.state is TradeState.CLOSED and trade.exit_reason == "max_hold_hours(hours=1.0)"
    assert len(world.executor.jobs) == jobs


def test_frozen_leg_is_left_out_of_close_targets_other_expiry_closes(world):
    near = "BTCUSD-2MAR26-90000-C"
    world.market.set(near, bid=10.0, ask=12.0, mark=11.0)
    trade = world.manager.create("s", [resolved(near, 0, 2, expiry_ms=MONDAY_EXPIRY_MS), resolved(PUT, 1, 2)])
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 10.0, 0.0)
    world.ledger.fill(trade.id, 1, Intent.OPEN, 0.1, 200.0, 0.0)
    world.executor.last.end(JobStatus.FILLED)
    world.poll()
    world.clock.set_time(MONDAY_EXPIRY_MS / 1000.0 - 800)
    world.manager.force_close(trade.id)
    assert [t.symbol for t in world.executor.last.legs] == [PUT]


def test_missing_delivery_price_warns_after_an_hour_and_estimates_after_a_day(world):
    trade = open_trade(world, expiry_ms=MONDAY_EXPIRY_MS)
    world.clock.set_time(MONDAY_EXPIRY_MS / 1000.0)
    world.poll()
    world.clock.advance(3600)
    world.poll()
    assert trade.state is TradeState.SETTLING and "delivery_price_missing" in world.alerts.kinds("WARNING")
    world.clock.advance(23 * 3600)
    world.poll()
    assert trade.state is TradeState.CLOSED and "settlement_estimated" in trade.flags
    assert trade.legs[0].settlement.delivery_price == 81000.0


def test_unwinding_trade_that_expires_is_failed_after_settlement(world):
    trade = create_strangle(world, side=1, expiry_ms=MONDAY_EXPIRY_MS)
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 110.0, 0.0)
    world.executor.last.end(JobStatus.PARTIAL)
    world.poll()
    assert trade.state is TradeState.UNWINDING
    world.clock.set_time(MONDAY_EXPIRY_MS / 1000.0)
    world.client.delivery.append({"date": MONDAY_EXPIRY_MS, "delivery_price": "85000"})
    world.poll()
    assert world.executor.last.stop_reason == "expiry"
    world.executor.last.end(JobStatus.FAILED)
    world.clock.advance(10)
    world.poll()
    world.clock.advance(10)
    world.poll()
    assert trade.state is TradeState.FAILED and not trade.has_exposure


# ----------------------------------------------------------------------------------- valuation


def valued_trade(clock, *, long_bid=100.0, long_ask=120.0, long_mark=110.0, short_bid=50.0, short_ask=60.0,
                 short_mark=55.0, as_of=None) -> TradeLifecycle:
    """Long 0.2 call bought at 100 (fee 1), short 0.1 put sold at 70 (fee 0.5)."""
    stamp = clock.now() if as_of is None else as_of
    long_leg = TradeLeg(0, contract(CALL), Side.BUY, 0.2, open_filled=0.2, open_vwap=100.0, open_fees=1.0)
    short_leg = TradeLeg(1, contract(PUT), Side.SELL, 0.1, open_filled=0.1, open_vwap=70.0, open_fees=0.5)
    long_leg.quote = make_row(CALL, bid=long_bid, ask=long_ask, mark=long_mark, as_of=stamp, delta=0.4)
    short_leg.quote = make_row(PUT, bid=short_bid, ask=short_ask, mark=short_mark, as_of=stamp, delta=-0.3)
    trade = TradeLifecycle(id="T000000009", seq=9, strategy="s", state=TradeState.OPEN, legs=[long_leg, short_leg])
    trade.bind_clock(clock)
    return trade


CASH = -0.2 * 100 + 0.1 * 70 - 1.5


@pytest.mark.parametrize("mode, long_value, short_value", [
    ("mark", 110.0, 55.0), ("mid", 110.0, 55.0), ("fair", 110.0, 55.0)])
def test_pnl_modes_with_both_sides(mode, long_value, short_value):
    trade = valued_trade(SimulatedClock(start=START))
    assert trade.pnl(mode) == pytest.approx(CASH + 0.2 * long_value - 0.1 * short_value)
    assert trade.entry_premium == pytest.approx(-20 + 7)


def test_fair_uses_mid_when_mark_is_outside_the_book_and_one_sided_rules():
    clock = SimulatedClock(start=START)
    outside = valued_trade(clock, long_mark=130.0, short_mark=45.0)
    assert outside.pnl("fair") == pytest.approx(CASH + 0.2 * 110 - 0.1 * 55)
    bid_only = valued_trade(clock, long_ask=0.0, long_mark=90.0, short_bid=0.0, short_mark=65.0)
    assert bid_only.pnl("fair") == pytest.approx(CASH + 0.2 * 100 - 0.1 * 60)  # max(m,b), min(m,a)
    neither = valued_trade(clock, long_bid=0.0, long_ask=0.0, short_bid=0.0, short_ask=0.0)
    assert neither.pnl("fair") == pytest.approx(CASH + 0.2 * 110 - 0.1 * 55)


def test_mid_degrades_to_fair_when_a_side_is_missing():
    trade = valued_trade(SimulatedClock(start=START), long_ask=0.0, long_mark=90.0)
    valuation = trade.valuation("mid")
    assert valuation.value == pytest.approx(CASH + 0.2 * 100 - 0.1 * 55) and valuation.degraded
    assert not valued_trade(SimulatedClock(start=START)).valuation("mid").degraded


def test_executable_long_at_bid_short_at_ask_minus_taker_fee():
    trade = valued_trade(SimulatedClock(start=START))
    fee_long = min(0.2 * 85_000 * 0.0003, 0.2 * 100 * 0.125)
    fee_short = min(0.1 * 85_000 * 0.0003, 0.1 * 60 * 0.125)
    valuation = trade.valuation("executable")
    assert valuation.value == pytest.approx(CASH + 0.2 * 100 - 0.1 * 60 - fee_long - fee_short)
    assert not valuation.degraded


def test_executable_degraded_cases():
    trade = valued_trade(SimulatedClock(start=START), long_bid=0.0, short_ask=0.0)
    valuation = trade.valuation("executable")
    fee_short = min(0.1 * 85_000 * 0.0003, 0.1 * 55 * 0.125)
    assert valuation.value == pytest.approx(CASH + 0.0 - 0.1 * 55 - fee_short)  # short at mark, flagged
    assert valuation.degraded and [leg.degraded for leg in valuation.legs] == [False, True]


def test_stale_quote_older_than_15s_raises_and_fresh_one_does_not():
    clock = SimulatedClock(start=START)
    trade = valued_trade(clock, as_of=START - 15.0)
    trade.pnl("fair")  # exactly 15 s: still fresh
    clock.advance(0.5)
    with pytest.raises(StaleDataError):
        trade.pnl("fair")
    with pytest.raises(StaleDataError):
        trade.structure_delta()


def test_missing_quote_or_mark_raises_but_closed_legs_need_none():
    clock = SimulatedClock(start=START)
    trade = valued_trade(clock)
    trade.legs[1].quote = None
    with pytest.raises(StaleDataError):
        trade.pnl("mark")
    trade.legs[1].close_filled, trade.legs[1].close_vwap = 0.1, 40.0
    assert trade.pnl("mark") == pytest.approx(CASH - 0.1 * 40 + 0.2 * 110)


def test_structure_delta_and_greeks_use_our_quantities():
    trade = valued_trade(SimulatedClock(start=START))
    assert trade.structure_delta() == pytest.approx(0.2 * 0.4 - 0.1 * -0.3)
    assert trade.legs[0].greek("vega") == 10.0 and trade.legs[0].greek("nope") is None


def test_net_qty_counts_every_reducing_family_and_settlement_without_float_residue(world):
    trade = open_trade(world, side=1)
    world.ledger.fill(trade.id, 0, Intent.CLOSE, 0.03, 90.0, 0.0)
    world.ledger.fill(trade.id, 0, Intent.KILL, 0.03, 90.0, 0.0)
    world.ledger.fill(trade.id, 0, Intent.UNWIND, 0.01, 90.0, 0.0)
    world.poll()
    assert trade.legs[0].net_qty == 0.03 and trade.legs[0].close_filled == 0.07


def test_record_round_trip_keeps_every_decision():
    trade = valued_trade(SimulatedClock(start=START))
    trade.exit_reason, trade.exit_decided_at, trade.exit_detail = "manual", START, {"source": "manual"}
    trade.legs[0].settlement = settlement.Settlement(82000.0, 0.2, 2000.0, 400.0, 1.0, True)
    again = TradeLifecycle.from_record(trade.to_record())
    assert again.to_record() == trade.to_record()
    assert again.state is TradeState.OPEN and again.legs[0].net_qty == 0.0 and again.legs[1].net_qty == 0.1


# A trade record exactly as the store held it before legs carried a Contract and a Side
# (issue 10): flat contract fields, the side as a plain int, no "underlying" key.
RECORD_BEFORE_CONTRACTS = {
    "id": "T000000007", "seq": 7, "strategy": "short_strangle", "state": "OPEN", "execution_mode": "limit",
    "legs": [
        {"index": 0, "symbol": CALL, "option_type": "C", "strike": 90000.0, "expiry_ms": FRIDAY_EXPIRY_MS,
         "side": 2, "qty": 0.1, "open_filled": 0.1, "open_vwap": 120.0, "open_fees": 0.03, "close_filled": 0.0,
         "close_vwap": 0.0, "close_fees": 0.0, "fees": 0.03, "net_qty": 0.1, "adopted_qty": 0.0,
         "external_qty": 0.0, "external_price": 0.0, "settlement": None},
        {"index": 1, "symbol": PUT, "option_type": "P", "strike": 80000.0, "expiry_ms": FRIDAY_EXPIRY_MS,
         "side": 2, "qty": 0.1, "open_filled": 0.1, "open_vwap": 95.0, "open_fees": 0.03, "close_filled": 0.04,
         "close_vwap": 60.0, "close_fees": 0.01, "fees": 0.04, "net_qty": 0.06, "adopted_qty": 0.0,
         "external_qty": 0.0, "external_price": 0.0,
         "settlement": {"delivery_price": 79000.0, "qty": 0.0, "intrinsic": 1000.0, "cash": 0.0, "fee": 0.0}},
    ],
    "created_at": START, "opened_at": START + 30, "exit_decided_at": None, "closed_at": None, "failed_at": None,
    "exit_reason": None, "exit_detail": {}, "failure_reason": None, "realized_pnl": None, "fees_paid": 0.07,
    "metadata": {"tag": "x"}, "entry_premium": 21.5, "close_rounds": 1, "failed_rounds": 1, "unwind_rounds": 0,
    "breaker_trips": 0, "breaker_until": None, "flags": [], "opened_notified": True, "closed_notified": False,
    "exit_condition_names": ["max_hold_hours(hours=24.0)"],
}


def test_a_trade_record_written_before_contracts_loads_unchanged():
    trade = TradeLifecycle.from_record(RECORD_BEFORE_CONTRACTS)
    call, put = trade.legs
    assert call.contract == Contract(symbol=CALL, underlying="BTC", option_type="C", strike=90000.0,
                                     expiry_ms=FRIDAY_EXPIRY_MS)
    assert put.contract.strike == 80000.0 and put.symbol == PUT
    assert call.side is Side.SELL and put.side is Side.SELL and call.sign == -1
    assert (call.net_qty, put.net_qty) == (0.1, 0.06)
    assert trade.execution_mode == "limit" and trade.close_rounds == 1 and trade.metadata == {"tag": "x"}
    # Written back, every key it had keeps its value (the side stays the int 2); "underlying" is new.
    again = trade.to_record()
    for old, new in zip(RECORD_BEFORE_CONTRACTS["legs"], again["legs"]):
        assert {key: new[key] for key in old if key != "settlement"} == \
               {key: value for key, value in old.items() if key != "settlement"}
        assert type(new["side"]) is int and new["underlying"] == "BTC"
    assert {key: again[key] for key in RECORD_BEFORE_CONTRACTS if key != "legs"} == \
           {key: value for key, value in RECORD_BEFORE_CONTRACTS.items() if key != "legs"}
    assert TradeLifecycle.from_record(again).to_record() == again


def test_exit_factories_are_reexported_as_the_same_objects():
    for name in ("profit_target", "max_loss", "profit_target_pct", "max_loss_pct", "max_hold_hours", "time_exit",
                 "utc_datetime_exit", "account_delta_limit", "structure_delta_limit", "leg_greek_limit"):
        assert getattr(trade_lifecycle, name) is getattr(conditions, name)


def test_a_new_trade_the_store_cannot_hold_sends_nothing_and_alerts_critical(world):
    """I5: no open for a trade whose record the store refuses (before, the open went on)."""
    def broken(record):
        raise OSError("disk full")

    world.store.save_trade = broken
    trade = create_strangle(world)
    assert trade.state is TradeState.FAILED and world.manager.persistence_errors >= 2
    assert trade.failure_reason == "state write failed before the open"
    assert world.executor.jobs == []
    assert "persistence_failed" in world.alerts.kinds("CRITICAL")


def test_exits_go_on_when_the_store_fails_after_the_open(world):
    """A trade holding exposure is still closed with a broken disk (CRITICAL, not frozen)."""
    trade = open_trade(world)

    def broken(record):
        raise OSError("disk full")

    world.store.save_trade = broken
    assert world.manager.force_close(trade.id)
    assert trade.state in (TradeState.PENDING_CLOSE, TradeState.CLOSING)
    assert world.executor.last.intent is Intent.CLOSE
    assert "persistence_failed" in world.alerts.kinds("CRITICAL")


def test_kill_all_with_external_positions_adopts_only_what_is_not_ours(world):
    trade = open_trade(world)  # short 0.1 call, short 0.1 put
    world.market.instrument = lambda symbol: SimpleNamespace(base="BTC", option_type=symbol[-1], strike=90000.0,
                                                             expiry_ms=FRIDAY_EXPIRY_MS)
    positions = (SimpleNamespace(symbol=CALL, signed_qty=-0.3), SimpleNamespace(symbol=PUT, signed_qty=-0.1))
    world.manager.tick(SimpleNamespace(timestamp=world.clock.now(), net_delta=0.0, positions=positions))
    killed = world.manager.kill_all(include_external=True)
    # The adopted positions are a new trade with the next sequence of the one global sequence.
    assert killed == [trade.id, "T000000002"]
    external = world.manager.get("T000000002")
    assert external.seq == 2 and external.strategy == "external" and external.metadata == {"external": True, "kill_mode": True}
    assert [(leg.symbol, leg.side, leg.net_qty) for leg in external.legs] == [(CALL, 2, 0.2)]
    job = world.executor.last
    assert job.intent is Intent.KILL and [(t.symbol, t.side, t.qty) for t in job.legs] == [(CALL, 1, 0.2)]


# ------------------------------------------------------------------ the transition table (issue 10)

@pytest.mark.parametrize("before", list(TradeState))
@pytest.mark.parametrize("after", list(TradeState))
def test_set_state_allows_exactly_the_transition_table(before, after):
    from trade_lifecycle import TRANSITIONS, IllegalTransition, LifecycleManager

    manager = LifecycleManager.__new__(LifecycleManager)   # _set_state needs only _persist
    persisted: list[tuple[str, dict]] = []
    manager._persist = lambda trade, event, **extra: persisted.append((event, extra))
    trade = SimpleNamespace(id="T000000001", strategy="walk", state=before)
    if after in TRANSITIONS[before]:
        manager._set_state(trade, after)
        assert trade.state is after and persisted == [("state", {"previous": before.value})]
    else:
        with pytest.raises(IllegalTransition):
            manager._set_state(trade, after)
        assert trade.state is before and persisted == []


def test_the_transition_table_reaches_every_state_and_ends_only_in_terminal_ones():
    from trade_lifecycle import TRANSITIONS

    reached, frontier = {TradeState.PENDING_OPEN}, [TradeState.PENDING_OPEN]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(TradeState)
    # Every non-terminal state can end in CLOSED or FAILED; the terminal ones leave only to reopen.
    for state in TradeState:
        seen, todo = {state}, [state]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & {TradeState.CLOSED, TradeState.FAILED}, state
    assert TRANSITIONS[TradeState.CLOSED] == {TradeState.OPEN}
    assert TRANSITIONS[TradeState.FAILED] == {TradeState.OPENING}


def test_the_stored_record_follows_the_fills_not_only_the_state(world):
    """``status`` and the dashboard read trades from the store: a fill booked while the trade
    stays OPENING (or CLOSING) is written at once, or a trade holding a fill would read flat."""
    trade = create_strangle(world)
    assert trade.state is TradeState.OPENING
    world.ledger.fill(trade.id, 0, Intent.OPEN, 0.1, 100.0, 0.03)
    writes = len(world.store.saved)
    world.manager.tick(None)
    assert trade.state is TradeState.OPENING
    stored = [r for r in world.store.saved if r["id"] == trade.id][-1]
    assert len(world.store.saved) == writes + 1
    assert [leg["open_filled"] for leg in stored["legs"]] == [0.1, 0.0]
    world.manager.tick(None)
    assert len(world.store.saved) == writes + 1                 # nothing changed: nothing written
