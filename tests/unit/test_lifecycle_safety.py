"""The lifecycle never ends a trade that may still gain a fill, and never mixes two trades' fills.

BEHAVIOUR.md 4.1 I2: CLOSED and FAILED are final, with no exposure and no non-final ledger
order. Each test here is a way a trade used to end (or be judged) too early, or to read
another trade's fills, found by an audit:

* an external close (RECOVERY.md S3) of the only filled leg of an open a restart interrupted
  FAILED the trade while the other leg's open order was still resting: when it filled, it
  was a naked short nobody managed;
* a job that ended with an order still working, or an engine that raised after recording
  an order, ended the trade without resolving that order;
* every ``kill --all-positions`` adopted the account's other positions as ``T000000000``
  leg 0, 1, ...: the ledger keys fills by (trade, leg), so the fills of an earlier kill of
  leg 0 counted as fills of a later, different leg 0;
* a restart right after an RFQ accept (RECOVERY.md R2) FAILED the trade on the first tick,
  and the block trade's fills found later landed on a FAILED trade;
* a restart mid-open decided on fills before the late-fill grace (API.md 11.16);
* a job step that raised on every tick was retried forever with a log line only;
* an expired leg was settled while a close order on it was still working, so a fill it
  reported afterwards was paid twice.

The fakes are those of tests/unit/test_trade_lifecycle.py, plus a ledger whose orders can be
working, cancelled, filled on the cancel, or report a fill late, and a store that survives
a restart.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Iterable

import pytest

import conditions
from clock import SimulatedClock
from execution_job import JobStatus
from order_ledger import BLOCK_ACCEPT_EVENT, LATE_FILL_STATUSES, Intent, OrderStatus
from trade_lifecycle import (
    ACCEPT_DOUBT_ALERT_SECONDS,
    EXTERNAL_TRADE_ID,
    JOB_STEP_ALERT_EVERY_SECONDS,
    JOB_STEP_FAILURES_BEFORE_ALERT,
    LifecycleManager,
    TradeLifecycle,
    TradeState,
    is_external_trade,
)
from tests.unit.test_trade_lifecycle import (
    CALL,
    FRIDAY_EXPIRY_MS,
    MONDAY_EXPIRY_MS,
    PUT,
    START,
    FakeJob,
    FakeLedger,
    FakeStore,
    Journal,
    World,
    build_world,
    create_strangle,
    family_of,
    open_trade,
    states_saved,
)
from tests.unit.test_trade_lifecycle import world  # noqa: F401 - a fixture

GRACE = 5.0   # ExecutionParams().grace_seconds, the late-fill grace of a restarted trade


# ------------------------------------------------------------------------------------- fakes


@dataclass
class Order:
    """A ledger order with what the lifecycle reads of one."""

    client_order_id: int
    trade_id: str
    leg_index: int
    symbol: str
    intent: Intent
    qty: float
    status: OrderStatus = OrderStatus.LIVE
    filled_qty: float = 0.0
    order_id: int | None = 1
    updated_at: float = START
    last_fill_at: float | None = None


class SafetyLedger(FakeLedger):
    """A ledger whose orders may still work: a cancel ends them (filling first when told to),
    and a final order polled once more may report a fill it had not shown (``late``)."""

    def __init__(self, journal: Journal, clock: SimulatedClock) -> None:
        super().__init__(journal)
        self.clock = clock
        self.next_client_order_id = 1001
        self.fill_on_cancel: dict[int, tuple[float, float]] = {}
        self.late: dict[int, tuple[float, float]] = {}
        self.no_answer: set[int] = set()
        self.rechecked: set[int] = set()

    def order(self, trade_id: str, leg_index: int, symbol: str, intent: Intent, qty: float = 0.1, *,
              status: OrderStatus = OrderStatus.LIVE) -> Order:
        order = Order(self.next_client_order_id, trade_id, leg_index, symbol, intent, qty, status,
                      updated_at=self.clock.now())
        self.next_client_order_id += 1
        self.order_list.append(order)  # type: ignore[arg-type]
        if not order.status.is_final:
            self.live.append(order)
        return order

    def book(self, order: Order, qty: float, price: float) -> None:
        """The exchange reports ``qty`` of ``order`` filled at ``price`` now."""
        now = self.clock.now()
        self.fills.setdefault((order.trade_id, order.leg_index, family_of(order.intent)), []).append(
            (qty, price, 0.0))
        order.filled_qty += qty
        order.last_fill_at = order.updated_at = now
        if order.filled_qty >= order.qty - 1e-9:
            self.end(order, OrderStatus.FILLED)

    def end(self, order: Order, status: OrderStatus) -> None:
        order.status = status
        order.updated_at = self.clock.now()
        if order in self.live:
            self.live.remove(order)

    def live_orders(self, trade_id=None):
        return [o for o in self.live if trade_id is None or o.trade_id == trade_id]

    def cancel(self, order):
        self.journal.append(("cancel", order.client_order_id))
        if order.client_order_id in self.fill_on_cancel:
            self.book(order, *self.fill_on_cancel.pop(order.client_order_id))
        if not order.status.is_final:
            self.end(order, OrderStatus.CANCELED)
        return order

    def poll(self, order):
        self.journal.append(("poll", order.client_order_id))
        return order

    def restore(self, records, *, ended_trades=frozenset()) -> None:
        pass   # the same object plays the ledger before and after the restart

    def late_fill_possible(self, order) -> bool:
        return (isinstance(order, Order) and order.status in LATE_FILL_STATUSES
                and order.filled_qty < order.qty - 1e-9 and order.client_order_id not in self.rechecked)

    def recheck_final(self, order) -> float | None:
        self.journal.append(("recheck", order.client_order_id))
        if order.client_order_id in self.no_answer:
            return None
        self.rechecked.add(order.client_order_id)
        qty, price = self.late.pop(order.client_order_id, (0.0, 0.0))
        if qty:
            status = order.status
            self.book(order, qty, price)
            order.status = OrderStatus.FILLED if order.filled_qty >= order.qty - 1e-9 else status
        return qty


class RestartStore(FakeStore):
    """The store a restart reads: every trade as last saved, and the events recorded."""

    def __init__(self, journal: Journal, saved: list[dict], recorded: Iterable[dict] = ()) -> None:
        super().__init__(journal)
        self.saved = list(saved)
        self.recorded = list(recorded)

    def load_trades(self, strategy=None):
        latest: dict[str, dict] = {}
        for record in self.saved:
            latest[record["id"]] = record
        return list(latest.values())

    def iter_orders(self):
        return iter(())

    def events(self, kind=None, *, after_id=0, limit=None) -> list[dict]:
        return [event for event in self.recorded if kind is None or event["kind"] == kind]


@dataclass
class Watch:
    """The reconciler's answer on RFQ accepts it is still looking up."""

    doubt: set[str] = field(default_factory=set)
    found: set[tuple[str, str]] = field(default_factory=set)   # (trade, RFQ) whose block trade was listed
    broken: bool = False
    asked: list[str] = field(default_factory=list)

    def accept_in_doubt(self, trade_id: str) -> bool:
        self.asked.append(trade_id)
        if self.broken:
            raise RuntimeError("the reconciler has not looked yet")
        return trade_id in self.doubt

    def block_trade_found(self, trade_id: str, request_id: str) -> bool:
        return (trade_id, request_id) in self.found


@pytest.fixture
def rig() -> World:
    return build_world(SafetyLedger)


def restart(rig: World, *, recorded: Iterable[dict] = (), watch: Watch | None = None) -> LifecycleManager:
    """The daemon comes back on the same ledger contents and store, on hold until reconciled."""
    store = RestartStore(rig.journal, rig.store.saved, recorded)
    manager = LifecycleManager(ledger=rig.ledger, executor=rig.executor, market=rig.market, client=rig.client,
                               clock=rig.clock, store=store, alerts=rig.alerts)
    if watch is not None:
        manager.watch_block_accepts(watch)
    manager.hold("start-up")
    manager.recover()
    return manager


def tick(rig: World, manager: LifecycleManager, seconds: float = 0.0) -> None:
    rig.clock.advance(seconds)
    manager.tick(SimpleNamespace(timestamp=rig.clock.now(), net_delta=0.0, positions=()))


def transitions(rig: World, trade_id: str) -> list[str]:
    """The states the trade was saved in, each once per stay."""
    saved = states_saved(rig, trade_id)
    return [state for i, state in enumerate(saved) if i == 0 or saved[i - 1] != state]


def sent(rig: World, kind: str) -> list[Any]:
    return [entry[1] for entry in rig.journal if entry[0] == kind]


def accept_marker(trade: TradeLifecycle, intent: Intent, at: float, request_id: str = "4242") -> dict:
    """The ``rfq_accept_sent`` event ``OrderLedger.note_block_accept`` commits before an accept."""
    return {"id": 1, "ts": at, "kind": BLOCK_ACCEPT_EVENT,
            "payload": {"trade_id": trade.id, "trade_seq": trade.seq, "intent": int(intent),
                        "request_id": request_id, "quote_id": "77",
                        "legs": [[leg.index, leg.symbol, int(leg.side)] for leg in trade.legs]}}


def crashed_mid_open(rig: World, **create: Any) -> tuple[TradeLifecycle, Order, Order]:
    """A short strangle opening: the call's open order filled, the put's still rests; then the crash."""
    trade = create_strangle(rig, **create)
    call = rig.ledger.order(trade.id, 0, CALL, Intent.OPEN)
    rig.ledger.book(call, 0.1, 100.0)
    put = rig.ledger.order(trade.id, 1, PUT, Intent.OPEN)
    return trade, call, put


# ------------------------------------------------- I2: never ended with an order still working


def test_row_t12_an_external_close_mid_open_cancels_the_other_legs_open_order_before_the_trade_fails(rig):
    trade, _call, put = crashed_mid_open(rig)
    manager = restart(rig)
    again = manager.get(trade.id)
    assert again.state is TradeState.OPENING

    # Start-up reconciliation: the naked call was closed by hand while the daemon was down.
    manager.record_external_close(trade.id, 0, 0.1, 90.0, detail="closed by hand")
    assert again.state is TradeState.OPENING and not again.has_exposure
    assert sent(rig, "cancel") == []                                   # on hold: this call sends nothing
    assert rig.alerts.kinds("WARNING") == ["external_close_waits"]
    assert str(put.client_order_id) in rig.alerts.sent[-1][2]

    manager.release()
    tick(rig, manager)
    assert sent(rig, "cancel") == [put.client_order_id] and again.state is TradeState.OPENING
    tick(rig, manager, GRACE)                                          # the cancelled order polled once more
    assert sent(rig, "recheck") == [put.client_order_id]
    assert again.state is TradeState.FAILED and again.exit_reason == "external_close"
    assert rig.ledger.live_orders(trade.id) == [] and not again.has_exposure


def test_row_t12_an_open_order_that_fills_while_being_cancelled_is_unwound_with_an_alert(rig):
    trade, _call, put = crashed_mid_open(rig)
    manager = restart(rig)
    manager.record_external_close(trade.id, 0, 0.1, 90.0, detail="closed by hand")
    rig.ledger.fill_on_cancel[put.client_order_id] = (0.1, 200.0)      # it filled before the cancel landed
    manager.release()
    tick(rig, manager)
    tick(rig, manager, GRACE)
    again = manager.get(trade.id)
    assert again.state is TradeState.UNWINDING                         # never OPEN: the call was closed outside
    assert "open_partial_unwind" in rig.alerts.kinds("WARNING")
    assert rig.alerts.sent[-1][3]["legs"] == {PUT: pytest.approx(0.1)}
    tick(rig, manager)
    job = rig.executor.last
    assert job.trade is again and job.intent is Intent.UNWIND
    assert [(t.symbol, t.side, t.qty) for t in job.legs] == [(PUT, 1, pytest.approx(0.1))]


def test_row_t12_an_open_trade_closed_outside_with_a_working_order_waits_in_pending_close(rig):
    trade = open_trade(rig)
    stray = rig.ledger.order(trade.id, 1, PUT, Intent.CLOSE)           # a close order a restart left behind
    manager = restart(rig)
    manager.record_external_close(trade.id, 0, 0.1, 60.0, detail="fills not ours")
    manager.record_external_close(trade.id, 1, 0.1, 150.0, detail="fills not ours")
    again = manager.get(trade.id)
    assert again.state is TradeState.PENDING_CLOSE and again.exit_reason == "external_close"
    assert sent(rig, "cancel") == [] and rig.alerts.kinds("WARNING") == ["external_close_waits"]
    manager.release()
    tick(rig, manager)
    assert sent(rig, "cancel") == [stray.client_order_id] and again.state is TradeState.PENDING_CLOSE
    tick(rig, manager, GRACE)                                          # polled once more: no late fill
    assert sent(rig, "recheck") == [stray.client_order_id]
    assert again.state is TradeState.CLOSED and again.exit_reason == "external_close"
    assert again.realized_pnl == pytest.approx(again.realized())


def test_an_external_close_without_a_working_order_still_ends_the_trade_at_once(rig):
    trade = open_trade(rig)
    rig.manager.record_external_close(trade.id, 0, 0.1, 60.0, detail="fills not ours")
    rig.manager.record_external_close(trade.id, 1, 0.1, 150.0, detail="fills not ours")
    assert trade.state is TradeState.CLOSED and states_saved(rig, trade.id)[-1] == "CLOSED"   # §4.2 row 17
    assert "external_close_waits" not in rig.alerts.kinds()


def test_an_external_close_during_a_hedge_rebalance_ends_the_trade_after_the_job(rig):
    trade = open_trade(rig)
    runtime = rig.manager._runtime_of(trade)
    runtime.job, runtime.job_kind = FakeJob(rig.journal, trade, [], Intent.OPEN, "limit", None, True), "hedge"
    rig.manager.record_external_close(trade.id, 0, 0.1, 60.0, detail="fills not ours")
    rig.manager.record_external_close(trade.id, 1, 0.1, 150.0, detail="fills not ours")
    assert trade.state is TradeState.PENDING_CLOSE and runtime.job.stop_reason == "external_close"
    runtime.job.end(JobStatus.FILLED)
    rig.poll()
    assert trade.state is TradeState.CLOSED and trade.exit_reason == "external_close"


def test_an_open_job_that_ends_with_an_order_still_working_fails_only_once_it_is_final(rig):
    trade = create_strangle(rig)
    resting = rig.ledger.order(trade.id, 0, CALL, Intent.OPEN)
    rig.executor.last.end(JobStatus.FAILED, "rounds exhausted")
    rig.poll()
    assert trade.state is TradeState.OPENING and sent(rig, "cancel") == [resting.client_order_id]
    rig.clock.advance(GRACE)
    rig.poll()
    assert trade.state is TradeState.FAILED and trade.failure_reason == "rounds exhausted"
    assert rig.alerts.kinds("WARNING") == ["open_failed"]


def test_a_close_job_that_ends_flat_with_an_order_still_working_closes_only_once_it_is_final(rig):
    trade = open_trade(rig)
    rig.manager.force_close(trade.id)
    assert trade.state is TradeState.CLOSING
    rig.ledger.fill(trade.id, 0, Intent.CLOSE, 0.1, 60.0, 0.3)
    rig.ledger.fill(trade.id, 1, Intent.CLOSE, 0.1, 150.0, 0.4)
    leftover = rig.ledger.order(trade.id, 1, PUT, Intent.CLOSE_REQUOTE)
    rig.executor.last.end(JobStatus.FILLED)
    rig.poll()
    assert trade.state is TradeState.PENDING_CLOSE and sent(rig, "cancel") == [leftover.client_order_id]
    rig.clock.advance(GRACE)
    rig.poll()
    assert sent(rig, "recheck") == [leftover.client_order_id]
    assert trade.state is TradeState.CLOSED and trade.close_rounds == 0
    assert transitions(rig, trade.id)[-3:] == ["CLOSING", "PENDING_CLOSE", "CLOSED"]


def test_an_open_job_that_raised_after_recording_an_order_is_decided_on_its_fills(rig):
    recorded: list[Order] = []

    def start_then_raise(mode, trade, legs, intent, params, *, best_effort=False):
        recorded.append(rig.ledger.order(trade.id, 0, CALL, intent))
        raise RuntimeError("the engine broke after placing")

    rig.executor.start = start_then_raise
    trade = create_strangle(rig)
    assert trade.state is TradeState.OPENING                           # not FAILED: its order may exist
    rig.poll()
    assert sent(rig, "cancel") == [recorded[0].client_order_id]
    rig.clock.advance(GRACE)
    rig.poll()
    assert trade.state is TradeState.FAILED and "could not start" in trade.failure_reason
    assert rig.alerts.kinds("WARNING") == ["open_failed"]


# ------------------------------------------------ kill --all-positions: a new trade every time


def _instrument(symbol: str) -> SimpleNamespace:
    return SimpleNamespace(base="BTC", option_type=symbol[-1], strike=float(symbol.split("-")[2]),
                           expiry_ms=FRIDAY_EXPIRY_MS)


def _positions(world: World, held: list[tuple[str, float]]) -> SimpleNamespace:
    return SimpleNamespace(timestamp=world.clock.now(), net_delta=0.0,
                           positions=tuple(SimpleNamespace(symbol=s, signed_qty=q) for s, q in held))


def test_every_all_positions_kill_adopts_a_new_trade_whose_fills_are_its_own(world):
    world.market.instrument = _instrument
    world.manager.tick(_positions(world, [(CALL, 0.2)]))
    [first_id] = world.manager.kill_all(include_external=True)
    first = world.manager.get(first_id)
    assert first.legs[0].symbol == CALL and first.strategy == "external" and first.seq == 1
    world.ledger.fill(first.id, 0, Intent.KILL, 0.2, 90.0, 0.1, at=world.clock.now())
    world.executor.last.end(JobStatus.FILLED)
    world.clock.advance(2)
    world.manager.tick(_positions(world, []))
    assert first.state is TradeState.CLOSED

    world.clock.advance(3 * 86400)
    world.manager.tick(_positions(world, [(PUT, 0.3)]))
    [second_id] = world.manager.kill_all(include_external=True)
    second = world.manager.get(second_id)
    assert second is not first and second.id != first.id and second.seq > first.seq
    assert world.manager.get(first.id) is first                       # the first keeps its record
    job = world.executor.last
    assert job.trade is second and [(t.symbol, t.side, t.qty) for t in job.legs] == [(PUT, 2, pytest.approx(0.3))]
    world.ledger.fill(second.id, 0, Intent.KILL, 0.1, 50.0, 0.1, at=world.clock.now())
    world.executor.last.end(JobStatus.PARTIAL)
    world.clock.advance(2)
    world.manager.tick(_positions(world, [(PUT, 0.2)]))
    assert second.legs[0].net_qty == pytest.approx(0.2) and second.is_active   # the first's CALL fills: not counted


def test_a_second_kill_adopts_only_what_the_earlier_adoption_does_not_hold(world):
    world.market.instrument = _instrument
    world.manager.tick(_positions(world, [(CALL, 0.2)]))
    [first_id] = world.manager.kill_all(include_external=True)
    world.manager.tick(_positions(world, [(CALL, 0.2), (PUT, 0.1)]))
    killed = world.manager.kill_all(include_external=True)
    assert killed[0] == first_id and len(killed) == 2
    assert [(leg.symbol, leg.qty) for leg in world.manager.get(killed[1]).legs] == [(PUT, 0.1)]
    assert world.manager.unmanaged_trades() == []                      # no strategy, never "unmanaged"


def test_row_t13_an_external_trade_of_an_older_version_is_still_killed_after_a_restart(rig):
    old = TradeLifecycle(id=EXTERNAL_TRADE_ID, seq=0, strategy="external", state=TradeState.OPEN,
                         legs=[], created_at=START, opened_at=START)     # before adoptions had their own id
    rig.store.saved.append(old.to_record())
    manager = restart(rig)
    again = manager.get(EXTERNAL_TRADE_ID)
    assert is_external_trade(again) and manager._runtime_of(again).kill and manager.unmanaged_trades() == []


# ------------------------------------------------------- RFQ accepts cut from their answer


def test_row_t4_an_interrupted_rfq_open_waits_while_its_accept_is_in_doubt_then_opens_on_its_block_fills(rig):
    trade = create_strangle(rig, execution_mode="rfq")
    watch = Watch(doubt={trade.id})
    manager = restart(rig, recorded=[accept_marker(trade, Intent.OPEN, rig.clock.now())], watch=watch)
    manager.release()
    again = manager.get(trade.id)
    for _ in range(3):
        tick(rig, manager, 10)
    assert again.state is TradeState.OPENING and "FAILED" not in states_saved(rig, trade.id)
    assert watch.asked and set(watch.asked) == {trade.id}
    # The reconciler finds the block trade (R1) and records its fills in our ledger.
    for leg in again.legs:
        rig.ledger.book(rig.ledger.order(trade.id, leg.index, leg.symbol, Intent.OPEN, status=OrderStatus.LIVE),
                        0.1, 100.0)
    manager.refresh_fills(trade.id)
    tick(rig, manager, 1)
    assert again.state is TradeState.OPEN and again.legs[0].open_filled == pytest.approx(0.1)


def test_row_t4_an_interrupted_rfq_open_fails_once_the_reconciler_gives_its_accept_up(rig):
    trade = create_strangle(rig, execution_mode="rfq")
    watch = Watch(doubt={trade.id})
    manager = restart(rig, recorded=[accept_marker(trade, Intent.OPEN, rig.clock.now())], watch=watch)
    manager.release()
    tick(rig, manager, 30)
    again = manager.get(trade.id)
    assert again.state is TradeState.OPENING
    watch.doubt.clear()                                                # R3: no block trade after 60 s
    tick(rig, manager, 40)
    assert again.state is TradeState.FAILED and again.failure_reason == "open interrupted by a restart"
    assert rig.alerts.kinds() == []                                    # nothing was ever placed


def test_row_t4_without_the_reconcilers_answer_an_accept_in_doubt_holds_the_trade_and_alerts_once(rig):
    trade = create_strangle(rig, execution_mode="rfq")
    manager = restart(rig, recorded=[accept_marker(trade, Intent.OPEN, rig.clock.now())])
    manager.release()
    again = manager.get(trade.id)
    tick(rig, manager)
    tick(rig, manager, ACCEPT_DOUBT_ALERT_SECONDS - 1)
    assert again.state is TradeState.OPENING and rig.alerts.kinds() == []
    tick(rig, manager, 1)
    tick(rig, manager, ACCEPT_DOUBT_ALERT_SECONDS)
    assert again.state is TradeState.OPENING and rig.alerts.kinds("CRITICAL") == ["rfq_accept_in_doubt"]
    assert "4242" in rig.alerts.sent[0][2] and "not wired" in rig.alerts.sent[0][2]


def test_a_watch_that_cannot_answer_keeps_the_accept_in_doubt(rig):
    trade = create_strangle(rig, execution_mode="rfq")
    manager = restart(rig, recorded=[accept_marker(trade, Intent.OPEN, rig.clock.now())],
                      watch=Watch(broken=True))
    manager.release()
    tick(rig, manager, 10)
    tick(rig, manager, 10)
    assert manager.get(trade.id).state is TradeState.OPENING


def test_only_a_trade_with_a_recorded_accept_waits(rig):
    waiting = create_strangle(rig, execution_mode="rfq")
    other = create_strangle(rig, execution_mode="rfq")
    watch = Watch(doubt={waiting.id, other.id})
    manager = restart(rig, recorded=[accept_marker(waiting, Intent.OPEN, rig.clock.now())], watch=watch)
    manager.release()
    tick(rig, manager, 10)
    assert manager.get(waiting.id).state is TradeState.OPENING
    assert manager.get(other.id).state is TradeState.FAILED and other.id not in watch.asked


def test_an_old_accept_of_a_trade_is_answered_by_its_fills_and_never_holds_it(rig):
    trade = open_trade(rig)                                            # its open came from an answered accept
    marker = accept_marker(trade, Intent.OPEN, START)
    manager = restart(rig, recorded=[marker])
    manager.release()
    manager.force_close(trade.id)
    again = manager.get(trade.id)
    rig.ledger.fill(trade.id, 0, Intent.CLOSE, 0.1, 60.0, 0.0, at=rig.clock.now())
    rig.ledger.fill(trade.id, 1, Intent.CLOSE, 0.1, 150.0, 0.0, at=rig.clock.now())
    rig.executor.last.end(JobStatus.FILLED)
    tick(rig, manager, 2)
    assert again.state is TradeState.CLOSED and rig.alerts.kinds("CRITICAL") == []


def restart_with_a_close_accept_in_doubt(rig, trade):
    """A restart after ``trade``'s close RFQ accept was recorded and sent, the reconciler unable
    to settle it yet (its list lags or is down), then two ticks; (manager, jobs before the ticks)."""
    watch = Watch(doubt={trade.id})
    manager = restart(rig, recorded=[accept_marker(trade, Intent.CLOSE, rig.clock.now())], watch=watch)
    manager.release()
    jobs = len(rig.executor.jobs)
    tick(rig, manager, 10)
    tick(rig, manager, 10)
    return manager, jobs


def test_row_t8_an_interrupted_close_waits_for_its_accept_too(rig):
    trade = open_trade(rig)
    rig.manager.force_close(trade.id)
    assert trade.state is TradeState.CLOSING
    manager, jobs = restart_with_a_close_accept_in_doubt(rig, trade)
    again = manager.get(trade.id)
    assert again.state is TradeState.CLOSING and len(rig.executor.jobs) == jobs   # no new round meanwhile
    rig.ledger.fill(trade.id, 0, Intent.CLOSE, 0.1, 60.0, 0.0, at=rig.clock.now())
    rig.ledger.fill(trade.id, 1, Intent.CLOSE, 0.1, 150.0, 0.0, at=rig.clock.now())
    tick(rig, manager, 1)
    assert again.state is TradeState.CLOSED and len(rig.executor.jobs) == jobs


# ----------------------------------------------------- a restart keeps the late-fill grace


def test_row_t3_an_interrupted_open_polls_its_cancelled_orders_again_after_the_grace_before_deciding(rig):
    trade, _call, put = crashed_mid_open(rig)
    rig.ledger.end(put, OrderStatus.CANCELED)                          # cancelled just before the crash...
    rig.ledger.late[put.client_order_id] = (0.1, 200.0)                # ...and its fill not reported yet
    manager = restart(rig)
    manager.release()
    again = manager.get(trade.id)
    tick(rig, manager)
    assert again.state is TradeState.OPENING and sent(rig, "recheck") == []
    tick(rig, manager, GRACE)
    assert sent(rig, "recheck") == [put.client_order_id]
    assert again.state is TradeState.OPEN and "UNWINDING" not in states_saved(rig, trade.id)
    assert again.opened_at == rig.clock.now()                          # the late fill is the last one


def test_a_late_fill_poll_without_an_answer_decides_nothing(rig):
    trade, _call, put = crashed_mid_open(rig)
    rig.ledger.end(put, OrderStatus.CANCELED)
    rig.ledger.no_answer.add(put.client_order_id)
    manager = restart(rig)
    manager.release()
    tick(rig, manager, GRACE)
    tick(rig, manager, GRACE)
    again = manager.get(trade.id)
    assert again.state is TradeState.OPENING and sent(rig, "recheck") == [put.client_order_id] * 2
    rig.ledger.no_answer.clear()
    tick(rig, manager, GRACE)
    assert again.state is TradeState.UNWINDING                         # answered: the put never filled


# ------------------------------------------------------------- a job that fails every step


def test_a_job_step_that_keeps_failing_raises_a_throttled_critical_alert(rig):
    trade = create_strangle(rig)
    job = rig.executor.last
    healthy = job.advance

    def broken(now: float) -> JobStatus:
        raise ValueError("unreadable payload")

    job.advance = broken
    for _ in range(JOB_STEP_FAILURES_BEFORE_ALERT - 1):
        rig.clock.advance(10)
        rig.poll()
    assert rig.alerts.kinds() == []
    rig.clock.advance(10)
    rig.poll()
    assert rig.alerts.kinds("CRITICAL") == ["job_step_failing"] and trade.id in rig.alerts.sent[0][2]
    rig.clock.advance(JOB_STEP_ALERT_EVERY_SECONDS - 20)
    rig.poll()
    assert len(rig.alerts.sent) == 1                                   # throttled
    rig.clock.advance(20)
    rig.poll()
    assert rig.alerts.kinds("CRITICAL") == ["job_step_failing"] * 2
    job.advance = healthy                                              # it steps again: the count restarts
    rig.poll()
    job.advance = broken
    for _ in range(JOB_STEP_FAILURES_BEFORE_ALERT):
        rig.clock.advance(10)
        rig.poll()
    assert rig.alerts.kinds("CRITICAL") == ["job_step_failing"] * 3
    assert trade.state is TradeState.OPENING


# ---------------------------------------------- settlement waits for the orders on the leg


def test_row_t9_an_expired_leg_is_settled_only_once_its_resting_order_is_final(rig):
    trade = open_trade(rig, exits=[conditions.max_hold_hours(1)], expiry_ms=MONDAY_EXPIRY_MS)
    rig.clock.set_time(MONDAY_EXPIRY_MS / 1000.0 - 600)                # 07:50: decided, both legs frozen
    rig.poll()
    assert trade.state is TradeState.PENDING_CLOSE
    rig.clock.set_time(MONDAY_EXPIRY_MS / 1000.0)
    resting = rig.ledger.order(trade.id, 0, CALL, Intent.CLOSE)        # a close a restart left on the book
    rig.client.delivery.append({"date": MONDAY_EXPIRY_MS, "delivery_price": "85000"})
    rig.poll()
    assert ("poll", resting.client_order_id) in rig.journal and sent(rig, "cancel") == []
    assert trade.state is TradeState.PENDING_CLOSE and all(leg.settlement is None for leg in trade.legs)
    rig.ledger.book(resting, 0.1, 30.0)                                # the exchange reports its fill
    rig.clock.advance(10)
    rig.poll()
    call, put = trade.legs
    assert call.settlement is None and call.close_filled == pytest.approx(0.1)   # a close, not paid twice
    assert put.settlement is not None and put.settlement.qty == pytest.approx(0.1)
    assert trade.state is TradeState.CLOSED and trade.exit_reason == "max_hold_hours(hours=1.0)"
