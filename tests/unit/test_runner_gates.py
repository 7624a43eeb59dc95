"""StrategyRunner gates (BEHAVIOUR.md 5) with fakes: one test per gate, plus incidents 1, 2, 22, 41.

The runner talks to the lifecycle, market data and executor only through the interfaces of
the shared brief, so small fakes stand in for them; the store is a real ``StateStore``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

import strategy as strategy_module
from account_manager import AccountSnapshot
from app import TradingContext
from clock import SimulatedClock
from conditions import max_hold_hours, time_window, utc_datetime_exit
from errors import ConfigError, SelectionError, TransportError
from option_selection import strangle
from persistence import StateStore
from strategy import StrategyConfig, StrategyRunner
from trade_lifecycle import TradeState

# Tuesday 2026-03-03 09:00 UTC.
START = datetime(2026, 3, 3, 9, 0, tzinfo=timezone.utc).timestamp()
POLL = 10.0


@dataclass
class FakeTrade:
    id: str
    strategy: str
    state: TradeState = TradeState.OPENING
    created_at: float = 0.0
    opened_at: float | None = None
    closed_at: float | None = None
    failed_at: float | None = None
    exit_reason: str | None = None
    failure_reason: str | None = None
    realized_pnl: float | None = None
    fees_paid: float = 0.0
    legs: list = field(default_factory=list)
    entry_premium: float = 0.0
    kwargs: dict = field(default_factory=dict)


class FakeLifecycle:
    def __init__(self, clock: SimulatedClock, trades: list[FakeTrade] | None = None) -> None:
        self.clock = clock
        self._trades: list[FakeTrade] = list(trades or [])
        self.created: list[FakeTrade] = []
        self.forced: list[tuple[str, str]] = []
        self.raise_on_create: Exception | None = None
        self.hooks: list[Any] = []
        self.entry_holds: dict[str, str] = {}
        self.attached: list[tuple[str, dict]] = []

    hold_reason: str | None = None
    persistence_errors = 0

    def attach_strategy(self, strategy, **kwargs):
        self.attached.append((strategy, kwargs))

    def release_blocks(self, strategy=None):
        return []

    def create(self, strategy, resolved_legs, **kwargs):
        if self.raise_on_create is not None:
            raise self.raise_on_create
        trade = FakeTrade(id=f"T{len(self._trades) + 1:09d}", strategy=strategy, created_at=self.clock.now(),
                          kwargs=kwargs)
        self._trades.append(trade)
        self.created.append(trade)
        return trade

    def trades(self, strategy=None):
        return [t for t in self._trades if strategy is None or t.strategy == strategy]

    def active_trades(self, strategy=None):
        return [t for t in self.trades(strategy) if t.state not in (TradeState.CLOSED, TradeState.FAILED)]

    def force_close(self, trade_id, reason):
        self.forced.append((trade_id, reason))
        return True

    # Transitions the real lifecycle would make.
    def open(self, trade: FakeTrade) -> None:
        trade.state, trade.opened_at = TradeState.OPEN, self.clock.now()

    def close(self, trade: FakeTrade, pnl: float = 1.0) -> None:
        trade.state, trade.closed_at, trade.realized_pnl, trade.exit_reason = (
            TradeState.CLOSED, self.clock.now(), pnl, "max_hold_hours(hours=1.0)")

    def fail(self, trade: FakeTrade) -> None:
        trade.state, trade.failed_at, trade.failure_reason = TradeState.FAILED, self.clock.now(), "no fill"


class FakeBlocks:
    """``seams.SymbolBlocks``: the ledger's symbol blocks, none unless a test sets one."""

    def __init__(self) -> None:
        self.blocks: dict[str, str] = {}

    def blocked_symbols(self) -> dict[str, str]:
        return dict(self.blocks)


class FakeMarket:
    def __init__(self) -> None:
        self.index_error: Exception | None = None
        self.index_frozen = False
        self.index_reads: list[float | None] = []

    def index_price(self, underlying=None, *, max_age=None):
        self.index_reads.append(max_age)
        if self.index_error is not None:
            raise self.index_error
        return 90_000.0

    def index_frozen_for(self, underlying=None):
        return self.index_frozen

    def _unused(self, *args, **kwargs):
        raise AssertionError("not used by this test")

    # The rest of seams.MarketDataSource: selection is replaced by ``fake_resolution`` here.
    clock = property(_unused)
    index_age = instruments = chain_snapshot = quote = order_book = instrument = _unused


class FakeExecutor:
    def __init__(self) -> None:
        self.routed: list[tuple[str, list, float]] = []

    def route(self, mode, legs, index_price):
        self.routed.append((mode, list(legs), index_price))
        return "limit" if mode == "auto" else mode


class FakeAlerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def alert(self, level, kind, message, **detail):
        self.sent.append((level, kind, message))


def resolved_pair(specs, market, **_):
    return [SimpleNamespace(index=i, symbol=f"BTCUSD-4MAR26-9{i}000-{spec.option_type}", side=spec.side,
                            qty=spec.qty, index_price=90_000.0) for i, spec in enumerate(specs)]


@pytest.fixture(autouse=True)
def fake_resolution(monkeypatch):
    calls: list[Any] = []

    def resolve(specs, market, **kwargs):
        calls.append(specs)
        if getattr(market, "selection_error", None):
            raise SelectionError("no strike matches")
        return resolved_pair(specs, market)

    monkeypatch.setattr(strategy_module, "resolve_legs", resolve)
    return calls


class Harness:
    """A runner plus everything around it; ``tick()`` takes a fresh snapshot (a poll tick)."""

    def __init__(self, config: StrategyConfig, *, store: StateStore | None = None, start: float = START,
                 lifecycle: FakeLifecycle | None = None, clock: SimulatedClock | None = None) -> None:
        self.clock = clock or SimulatedClock(start=start, speed=0)
        self.store = store or StateStore(":memory:")
        self.market = FakeMarket()
        self.executor = FakeExecutor()
        self.lifecycle = lifecycle or FakeLifecycle(self.clock)
        self.lifecycle.clock = self.clock
        self.alerts = FakeAlerts()
        self.reach = SimpleNamespace(is_up=True)
        self.ledger = FakeBlocks()
        self.ctx = TradingContext(
            config=None, clock=self.clock, http=None, market_data=self.market,
            account_manager=SimpleNamespace(reachability=self.reach), ledger=self.ledger, executor=self.executor,
            lifecycle_manager=self.lifecycle,
            position_monitor=SimpleNamespace(poll_interval=POLL), store=self.store, alerts=self.alerts, health=None,
        )
        self.runner = StrategyRunner(config, self.ctx)
        self.last_snapshot: AccountSnapshot | None = None

    def snapshot(self) -> AccountSnapshot:
        return AccountSnapshot.build(equity=100_000.0, available_margin=90_000.0, initial_margin=0.0,
                                     maintenance_margin=0.0, unrealized_pnl=0.0, positions=(),
                                     timestamp=self.clock.now())

    def tick(self, snapshot: AccountSnapshot | None = None) -> AccountSnapshot:
        snap = snapshot if snapshot is not None else self.snapshot()
        self.last_snapshot = snap
        self.runner.tick(snap)
        return snap

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @property
    def created(self) -> list[FakeTrade]:
        return self.lifecycle.created


def config(**overrides) -> StrategyConfig:
    fields: dict[str, Any] = {"name": "gates", "legs": strangle(0.1), "exit_conditions": [max_hold_hours(1)],
                              "check_interval_seconds": 1.0, "execution_mode": "limit"}
    fields.update(overrides)
    return StrategyConfig(**fields)


class Counting:
    """An entry condition that counts its calls."""

    def __init__(self, result: bool = True) -> None:
        self.calls = 0
        self.result = result

    def __call__(self, snapshot) -> bool:
        self.calls += 1
        return self.result


# ---------------------------------------------------------------------------------------------
# Creation (gates 10-11) and the first check
# ---------------------------------------------------------------------------------------------


def test_the_first_check_happens_at_once_and_creates_the_trade(fake_resolution):
    params = strategy_module.ExecutionParams(fill_timeout_seconds=12.0)
    h = Harness(config(metadata={"execution_params": params, "tag": "x"}, check_interval_seconds=600.0))
    h.tick()
    assert len(h.created) == 1
    trade = h.created[0]
    assert trade.strategy == "gates"
    assert trade.kwargs["execution_mode"] == "limit"
    assert trade.kwargs["execution_params"] is params
    assert trade.kwargs["metadata"] == {"tag": "x"}
    assert [c.name for c in trade.kwargs["exit_conditions"]] == ["max_hold_hours(hours=1.0)"]
    mode, routed_legs, index_price = h.executor.routed[0]
    assert mode == "limit" and index_price == 90_000.0
    assert [(leg.index, leg.side, leg.qty) for leg in routed_legs] == [(0, 2, 0.1), (1, 2, 0.1)]


def test_auto_mode_is_routed_by_the_executor_and_the_result_is_used():
    h = Harness(config(execution_mode="auto"))
    h.tick()
    assert h.executor.routed[0][0] == "auto"
    assert h.created[0].kwargs["execution_mode"] == "limit"


def test_a_selection_error_creates_nothing(caplog):
    h = Harness(config())
    h.market.selection_error = True
    with caplog.at_level(logging.INFO):
        h.tick()
    assert h.created == []
    assert any("leg selection failed" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_entry_conditions_run_in_order_and_stop_at_the_first_false():
    first, second = Counting(False), Counting(True)
    h = Harness(config(entry_conditions=[first, second]))
    h.tick()
    assert (first.calls, second.calls) == (1, 0) and h.created == []
    first.result = True
    h.advance(POLL)
    h.tick()
    assert (first.calls, second.calls) == (2, 1) and len(h.created) == 1


# ---------------------------------------------------------------------------------------------
# Gate 1: callbacks
# ---------------------------------------------------------------------------------------------


def test_callbacks_are_delivered_once_even_when_paused_and_errors_are_ignored(caplog):
    opened: list[tuple[str, Any]] = []
    closed: list[str] = []

    def on_opened(trade, snapshot):
        opened.append((trade.id, snapshot))
        raise RuntimeError("a bug in the strategy's callback")

    def on_closed(trade, snapshot):
        closed.append(trade.id)

    h = Harness(config(on_trade_opened=on_opened, on_trade_closed=on_closed))
    h.tick()
    trade = h.created[0]
    h.runner.pause("operator")
    h.lifecycle.open(trade)
    h.advance(POLL)
    with caplog.at_level(logging.ERROR):
        snap = h.tick()
        h.tick(snap)  # an execution wake with the same snapshot
        h.advance(POLL)
        h.tick()
    assert opened == [(trade.id, snap)]
    assert any("on_trade_opened raised" in r.getMessage() for r in caplog.records)
    h.lifecycle.close(trade)
    h.tick()
    h.advance(POLL)
    h.tick()
    assert closed == [trade.id]
    # A restart with the same store does not deliver them again.
    again = Harness(config(on_trade_opened=on_opened, on_trade_closed=on_closed), store=h.store,
                    lifecycle=h.lifecycle, clock=h.clock)
    again.tick()
    assert len(opened) == 1 and closed == [trade.id]


def test_the_lifecycle_hooks_are_passed_at_creation():
    h = Harness(config())
    h.tick()
    kwargs = h.created[0].kwargs
    assert callable(kwargs["on_opened"]) and callable(kwargs["on_closed"])
    kwargs["on_opened"](h.created[0])  # the lifecycle calls them with the trade only


# ---------------------------------------------------------------------------------------------
# Gates 2-9
# ---------------------------------------------------------------------------------------------


def test_paused_runner_opens_nothing_until_resumed():
    h = Harness(config())
    h.runner.pause("operator says so")
    h.tick()
    assert h.created == [] and h.runner.is_paused
    assert h.runner.status()["pause_reason"] == "operator says so"
    h.runner.resume()
    h.advance(POLL)
    h.tick()
    assert len(h.created) == 1 and not h.runner.is_paused


def test_pause_survives_a_restart():
    h = Harness(config())
    h.runner.pause("operator")
    again = Harness(config(), store=h.store)
    assert again.runner.is_paused and again.runner.pause_reason == "operator"


def test_throttle_evaluates_entries_every_check_interval_only():
    cond = Counting(False)
    h = Harness(config(entry_conditions=[cond], check_interval_seconds=60.0))
    for _ in range(7):  # t = 0, 10, ..., 60
        h.tick()
        h.advance(POLL)
    assert cond.calls == 2  # t = 0 and t = 60


def test_entries_are_considered_on_poll_ticks_only():
    cond = Counting(False)
    h = Harness(config(entry_conditions=[cond]))
    snap = h.tick()
    h.advance(2)
    h.tick(snap)  # an execution wake: same snapshot object
    assert cond.calls == 1


@pytest.mark.parametrize("problem", ["unreachable", "old_snapshot", "no_index", "frozen_index"])
def test_data_gates_block_entries(problem, caplog):
    cond = Counting(True)
    h = Harness(config(entry_conditions=[cond]))
    snap = h.snapshot()
    if problem == "unreachable":
        h.reach.is_up = False
    elif problem == "old_snapshot":
        h.advance(2 * POLL + 1)
    elif problem == "no_index":
        h.market.index_error = TransportError("GET /open/futures/market/symbol/v1", "timeout")
    else:
        h.market.index_frozen = True
    with caplog.at_level(logging.INFO):
        h.tick(snap)
    assert h.created == []
    # Reachability and snapshot age are checked before the entry conditions; the index (a
    # REST read) only once they pass, right before resolution.
    assert cond.calls == (1 if problem in ("no_index", "frozen_index") else 0)
    assert h.runner.status()["blocked_by"]


def test_no_index_is_read_while_an_entry_condition_blocks():
    h = Harness(config(entry_conditions=[Counting(False)]))
    h.tick()
    assert h.market.index_reads == [] and h.created == []


def test_the_index_must_be_at_most_15_seconds_old():
    h = Harness(config())
    h.tick()
    assert h.market.index_reads == [15.0]


def test_a_snapshot_two_polls_old_is_still_usable():
    h = Harness(config())
    snap = h.snapshot()
    h.advance(2 * POLL)
    h.tick(snap)
    assert len(h.created) == 1


@pytest.mark.parametrize("state", [TradeState.PENDING_OPEN, TradeState.OPENING, TradeState.UNWINDING])
def test_single_flight_blocks_while_a_trade_is_opening(state):
    h = Harness(config(max_concurrent_trades=3))
    h.tick()
    h.created[0].state = state
    h.advance(POLL)
    h.tick()
    assert len(h.created) == 1
    assert "still opening" in h.runner.status()["blocked_by"]


def test_concurrency_limit_counts_every_active_trade():
    h = Harness(config(max_concurrent_trades=2))
    h.tick()
    h.lifecycle.open(h.created[0])
    h.advance(POLL)
    h.tick()
    assert len(h.created) == 2
    h.lifecycle.open(h.created[1])
    h.advance(POLL)
    h.tick()
    assert len(h.created) == 2
    h.lifecycle.close(h.created[0])
    h.advance(POLL)
    h.tick()
    assert len(h.created) == 3


def test_cooldown_counts_from_the_latest_close_or_failure():
    h = Harness(config(cooldown_seconds=600.0))
    h.tick()
    h.lifecycle.open(h.created[0])
    h.advance(3600)
    h.lifecycle.close(h.created[0])
    closed_at = h.clock.now()
    while h.clock.now() < closed_at + 590:
        h.advance(POLL)
        h.tick()
    assert len(h.created) == 1
    h.advance(POLL)
    h.tick()
    assert len(h.created) == 2 and h.clock.now() - closed_at >= 600


def test_daily_quota_over_three_days_opens_exactly_three_trades_and_never_disables():
    """Incident 2: max_trades_per_day=1 for 72 simulated hours -> 3 trades, runner alive."""
    h = Harness(config(max_trades_per_day=1, exit_conditions=[max_hold_hours(1)]),
                start=datetime(2026, 3, 3, 0, 0, tzinfo=timezone.utc).timestamp())
    end = h.clock.now() + 72 * 3600
    while h.clock.now() < end:
        for trade in h.lifecycle.active_trades():
            if trade.state == TradeState.OPENING:
                h.lifecycle.open(trade)
            elif trade.opened_at is not None and h.clock.now() - trade.opened_at >= 3600:
                h.lifecycle.close(trade)
        h.tick()
        assert not h.runner.is_paused
        h.advance(600)
    days = [datetime.fromtimestamp(t.created_at, tz=timezone.utc).date().isoformat() for t in h.created]
    assert days == ["2026-03-03", "2026-03-04", "2026-03-05"]
    assert "daily quota" in h.runner.status()["blocked_by"]


def test_trades_that_never_opened_do_not_count_towards_the_quota():
    h = Harness(config(max_trades_per_day=1, max_open_failures_per_day=5))
    h.tick()
    h.lifecycle.fail(h.created[0])
    h.advance(POLL)
    h.tick()
    assert len(h.created) == 2


def test_daily_open_failures_pause_until_midnight_with_an_alert(caplog):
    h = Harness(config(max_open_failures_per_day=2),
                start=datetime(2026, 3, 3, 22, 0, tzinfo=timezone.utc).timestamp())
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            h.tick()
            for trade in h.lifecycle.active_trades():
                h.lifecycle.fail(trade)
            h.advance(POLL)
    assert len(h.created) == 2
    assert h.runner.is_paused and h.runner.pause_reason == "daily_open_failures"
    assert [kind for _, kind, _ in h.alerts.sent] == ["daily_open_failures"]
    assert any(r.getMessage().startswith("health:") and "gates" in r.getMessage() for r in caplog.records)
    # Still paused just before midnight, trading again after it.
    h.clock.set_time(datetime(2026, 3, 3, 23, 59, 50, tzinfo=timezone.utc).timestamp())
    h.tick()
    assert len(h.created) == 2
    h.clock.set_time(datetime(2026, 3, 4, 0, 0, 0, tzinfo=timezone.utc).timestamp())
    h.tick()
    assert not h.runner.is_paused and len(h.created) == 3


def test_an_entry_condition_that_raises_blocks_logs_and_warns_after_three(caplog):
    """Incident 22: 3 tracebacks and a health warning naming the strategy and the condition."""
    def broken(snapshot):
        raise ZeroDivisionError("bad maths")

    h = Harness(config(entry_conditions=[broken]))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            h.tick()
            h.advance(POLL)
    assert h.created == []
    tracebacks = [r for r in caplog.records if r.exc_info and "entry condition" in r.getMessage()]
    assert len(tracebacks) == 3
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("health:")]
    assert len(warnings) == 1 and "gates" in warnings[0] and "entry_conditions[0]:broken" in warnings[0]


# ---------------------------------------------------------------------------------------------
# Restart safety (incident 1) and runner state
# ---------------------------------------------------------------------------------------------


def test_a_restart_inside_the_entry_window_opens_no_second_trade(tmp_path):
    """Window 09:00-10:00, trade opened 09:01, restart at 09:05 -> no new trade that day."""
    db = tmp_path / "trader.db"
    cfg = dict(entry_conditions=[time_window(9, 10)], max_trades_per_day=1)
    first = Harness(config(**cfg), store=StateStore(db))
    first.advance(60)
    first.tick()
    first.lifecycle.open(first.created[0])
    first.advance(POLL)
    first.tick()
    first.store.close()  # SIGKILL-like: nothing else is saved

    clock = SimulatedClock(start=START + 5 * 60, speed=0)
    # Even a lifecycle that lost the trade sees the persisted day counters.
    again = Harness(config(**cfg), store=StateStore(db), clock=clock)
    for _ in range(30):
        again.tick()
        again.advance(POLL)
    assert again.created == []
    assert again.runner.status()["opened_today"] == 1


def test_a_restored_open_trade_blocks_through_the_concurrency_gate():
    store = StateStore(":memory:")
    clock = SimulatedClock(start=START + 300, speed=0)
    restored = FakeTrade(id="T000000001", strategy="gates", state=TradeState.OPEN, opened_at=START + 60)
    h = Harness(config(), store=store, clock=clock, lifecycle=FakeLifecycle(clock, [restored]))
    h.tick()
    assert h.created == []


def test_runner_state_is_persisted_under_the_strategy_name():
    h = Harness(config(cooldown_seconds=60.0, check_interval_seconds=30.0))
    h.tick()
    h.lifecycle.open(h.created[0])
    h.advance(POLL)
    h.lifecycle.close(h.created[0])
    h.tick()
    saved = h.store.load_runner_state("gates")
    assert saved["last_entry_check"] == START
    assert saved["cooldown_anchor"] == START + POLL
    assert saved["day"] == "2026-03-03" and saved["opened_today"] == ["T000000001"]
    assert saved["paused"] is False


# ---------------------------------------------------------------------------------------------
# Kill, stats, start-up checks
# ---------------------------------------------------------------------------------------------


def test_kill_pauses_and_force_closes_every_active_trade_of_the_strategy():
    other = FakeTrade(id="T000000009", strategy="other", state=TradeState.OPEN, opened_at=START)
    h = Harness(config(max_concurrent_trades=2))
    h.lifecycle._trades.append(other)
    h.tick()
    h.lifecycle.open(h.created[0])
    h.advance(POLL)
    h.tick()
    assert len(h.created) == 2
    killed = h.runner.kill("kill_switch")
    assert sorted(killed) == [t.id for t in h.created]
    assert all(reason == "kill_switch" for _, reason in h.lifecycle.forced)
    assert "T000000009" not in killed and h.runner.is_paused


def test_stats_summarise_the_strategy_trades():
    h = Harness(config(max_concurrent_trades=3, max_open_failures_per_day=5))
    for pnl in (5.0, -2.0, None):
        h.tick()
        trade = h.created[-1]
        if pnl is None:
            h.lifecycle.fail(trade)
        else:
            h.lifecycle.open(trade)
            trade.fees_paid = 0.5
            h.lifecycle.close(trade, pnl)
        h.advance(POLL)
    stats = h.runner.stats
    assert (stats.opened, stats.closed, stats.failed, stats.wins, stats.losses) == (2, 2, 1, 1, 1)
    assert stats.realized_pnl == pytest.approx(3.0) and stats.fees == pytest.approx(1.0)


def test_a_past_utc_datetime_exit_is_refused_when_the_runner_starts():
    """Incident 41: checks that need the clock run at start, not at import."""
    past = datetime.fromtimestamp(START, tz=timezone.utc) - timedelta(hours=1)
    cfg = config(exit_conditions=[utc_datetime_exit(past)])  # building it is fine
    with pytest.raises(ConfigError, match="gates"):
        Harness(cfg)
    future = datetime.fromtimestamp(START, tz=timezone.utc) + timedelta(days=2)
    Harness(config(exit_conditions=[utc_datetime_exit(future)]))


def test_no_exit_conditions_warns_at_start(caplog):
    with caplog.at_level(logging.WARNING):
        Harness(config(exit_conditions=[], hold_to_expiry=True))  # issue 9: no exits must be said explicitly
    assert any("closes only at expiry or by kill" in r.getMessage() or "only at expiry or by kill" in r.getMessage()
               for r in caplog.records)


def test_snapshot_errors_make_no_decision():
    h = Harness(config())
    h.runner.on_snapshot_error(RuntimeError("positions failed"))
    assert h.created == []


def test_entries_wait_while_the_lifecycle_is_held_for_the_start_up_reconciliation():
    h = Harness(config())
    h.lifecycle.hold_reason = "start-up reconciliation: positions not read yet"
    h.tick()
    assert h.created == [] and h.market.index_reads == []
    h.lifecycle.hold_reason = None
    h.advance(POLL)
    h.tick()
    assert len(h.created) == 1


def test_an_entry_hold_stops_entries_until_it_is_lifted():
    h = Harness(config())
    h.lifecycle.entry_holds = {"suspect_positions": "the account reads flat while our trades hold exposure"}
    h.tick()
    assert h.created == [] and h.market.index_reads == []
    h.lifecycle.entry_holds = {}
    h.advance(POLL)
    h.tick()
    assert len(h.created) == 1


def test_a_failed_state_write_stops_entries_until_a_restart():
    h = Harness(config())
    h.store.write_errors = 1  # what StateStore counts when a commit fails
    h.tick()
    assert h.created == []
    assert "state store write failed" in h.runner.status()["blocked_by"]
    h.store.write_errors = 0
    h.advance(POLL)
    h.tick()
    assert len(h.created) == 1


def _position(symbol: str, signed_qty: float):
    from coincall_payloads import PositionSnapshot

    return PositionSnapshot(position_id=1, symbol=symbol, qty=abs(signed_qty),
                            side="long" if signed_qty > 0 else "short", signed_qty=signed_qty, entry_price=100.0,
                            mark_price=100.0, unrealized_pnl=0.0, roi=0.0, delta=0.0, gamma=0.0, theta=0.0,
                            vega=0.0, timestamp=START)


def test_no_entry_nets_against_another_trades_opposite_side_on_one_symbol():
    """A one-way account nets a long and a short into one position: the smaller side's
    reduce-only close would be refused, so such an entry is skipped."""
    sell = config(legs=strangle(0.1, side=2))              # the fake resolution: 9 0000-C and 9 1000-P
    other = FakeTrade(id="T000000007", strategy="other", state=TradeState.OPEN,
                      legs=[SimpleNamespace(symbol="BTCUSD-4MAR26-90000-C", side=1)])
    h = Harness(sell, lifecycle=FakeLifecycle(SimulatedClock(start=START, speed=0), [other]))
    h.tick()
    assert h.created == []
    assert "T000000007" in h.runner.status()["blocked_by"]

    same_side = FakeTrade(id="T000000008", strategy="other", state=TradeState.OPEN,
                          legs=[SimpleNamespace(symbol="BTCUSD-4MAR26-90000-C", side=2)])
    ok = Harness(sell, lifecycle=FakeLifecycle(SimulatedClock(start=START, speed=0), [same_side]))
    ok.tick()
    assert len(ok.created) == 1


def test_no_entry_nets_against_an_opposite_position_of_the_account():
    h = Harness(config(legs=strangle(0.1, side=1)))
    snapshot = AccountSnapshot.build(equity=100_000.0, available_margin=90_000.0, initial_margin=0.0,
                                     maintenance_margin=0.0, unrealized_pnl=0.0,
                                     positions=(_position("BTCUSD-4MAR26-91000-P", -0.5),), timestamp=START)
    h.tick(snapshot)
    assert h.created == [] and "-0.5 position" in h.runner.status()["blocked_by"]
