"""A runner's tick costs what its open trades cost, not what its history costs (issue 11).

``StrategyRunner.tick`` skips the leading trades that ended and were handled (callbacks
delivered, counted): these tests count the reads of such trades' fields, and check that the
skipping never changes a result (a new day, a reversed close, callbacks of trades that end
between two ticks, the cooldown).
"""
from __future__ import annotations

from dataclasses import dataclass

from tests.unit.test_runner_gates import POLL, START, FakeLifecycle, FakeTrade, Harness, config
from tests.unit.test_runner_gates import fake_resolution  # noqa: F401  (autouse: selection is faked)
from trade_lifecycle import TradeState

DAY = 86_400.0


@dataclass
class WatchedTrade(FakeTrade):
    """A ``FakeTrade`` that counts how often the runner reads its state."""

    reads: int = 0

    def __getattribute__(self, name: str):
        if name == "state":
            object.__setattr__(self, "reads", object.__getattribute__(self, "reads") + 1)
        return object.__getattribute__(self, name)


class IndexedLifecycle(FakeLifecycle):
    """The fake lifecycle, whose active list (like ``LifecycleManager``'s hot set) is not a read by
    the runner: only the runner's own reads of a trade are counted."""

    def active_trades(self, strategy=None):
        return [t for t in self.trades(strategy)
                if object.__getattribute__(t, "state") not in (TradeState.CLOSED, TradeState.FAILED)]


def ended(index: int, *, failed: bool = False) -> WatchedTrade:
    at = START - DAY / 2 + index                                # the day before START
    if failed:
        return WatchedTrade(id=f"T{index:09d}", strategy="gates", state=TradeState.FAILED, created_at=at,
                            failed_at=at)
    return WatchedTrade(id=f"T{index:09d}", strategy="gates", state=TradeState.CLOSED, created_at=at,
                        opened_at=at, closed_at=at + 1.0, realized_pnl=1.0)


def history_harness(count: int, **overrides) -> tuple[Harness, list[WatchedTrade]]:
    history = [ended(i + 1, failed=i % 5 == 0) for i in range(count)]
    h = Harness(config(**overrides), lifecycle=IndexedLifecycle(None, history))   # type: ignore[arg-type]
    return h, history


def test_ended_and_handled_trades_are_not_read_again_after_the_first_tick():
    h, history = history_harness(200, max_concurrent_trades=2, check_interval_seconds=POLL)
    h.tick()
    assert all(trade.reads > 0 for trade in history)             # the first tick looks at everything
    before = [trade.reads for trade in history]
    for _ in range(20):
        h.advance(POLL)
        h.tick()
    assert [trade.reads for trade in history] == before          # ...and then never at them again
    assert len(h.created) >= 1                                   # while the runner still trades


def test_the_work_of_a_tick_does_not_grow_with_ended_trades():
    def reads_per_tick(count: int) -> int:
        h, history = history_harness(count)
        h.tick()
        h.advance(POLL)
        before = sum(trade.reads for trade in history)
        h.tick()
        return sum(trade.reads for trade in history) - before

    assert reads_per_tick(10) == reads_per_tick(1_000) == 0


def test_a_trade_that_ends_between_two_ticks_is_delivered_and_counted_once():
    closed: list[str] = []
    h = Harness(config(max_concurrent_trades=1, cooldown_seconds=600.0,
                       on_trade_closed=lambda trade, snap: closed.append(trade.id)))
    h.tick()
    trade = h.created[0]
    h.lifecycle.open(trade)
    h.advance(POLL)
    h.tick()
    h.advance(POLL)
    h.lifecycle.close(trade)
    h.tick()
    assert closed == [trade.id]
    assert h.runner.state.cooldown_anchor == trade.closed_at
    assert trade.id in h.runner.state.opened_today
    for _ in range(5):
        h.advance(POLL)
        h.tick()
    assert closed == [trade.id]                                  # once, and then skipped
    assert h.runner.state.closed_sent.count(trade.id) == 1


def test_a_new_utc_day_counts_from_every_trade_again():
    h, history = history_harness(50, max_concurrent_trades=1)
    h.tick()
    trade = h.created[0]
    h.lifecycle.open(trade)
    h.advance(POLL)
    h.tick()
    assert h.runner.state.opened_today == [trade.id]              # yesterday's history is not counted
    h.lifecycle.close(trade)
    h.advance(POLL)
    h.tick()
    h.advance(DAY)
    h.tick()
    assert trade.id not in h.runner.state.opened_today            # the day rolled
    assert h.runner.state.failed_today == []


def test_a_reversed_close_makes_the_runner_look_at_every_trade_again():
    closed: list[str] = []
    h, history = history_harness(10, on_trade_closed=lambda trade, snap: closed.append(trade.id))
    h.runner.state.closed_sent.clear()                          # deliver the history's callbacks once
    h.tick()
    assert closed == [t.id for t in history]
    reversed_trade = history[3]
    reversed_trade.state, reversed_trade.closed_at = TradeState.OPEN, None   # RECOVERY.md X1
    h.advance(POLL)
    h.tick()
    assert h.runner.status()["active_trades"][:1] == [reversed_trade.id]
    reads = reversed_trade.reads
    h.advance(POLL)
    h.lifecycle.close(reversed_trade)
    h.tick()
    assert reversed_trade.reads > reads
    assert h.runner.state.cooldown_anchor == reversed_trade.closed_at   # the new close counts


def test_the_skipping_gives_the_persisted_state_a_full_walk_gives():
    def run(skip: bool):
        h, _ = history_harness(30, max_concurrent_trades=2, cooldown_seconds=30.0, check_interval_seconds=POLL)
        states = []
        for step in range(40):
            if not skip:
                h.runner._settled = 0                            # force a full walk every tick
            h.tick()
            for trade in list(h.lifecycle.active_trades("gates")):
                if trade.state == TradeState.OPENING:
                    (h.lifecycle.fail if step % 3 == 0 else h.lifecycle.open)(trade)
                elif step % 4 == 0:
                    h.lifecycle.close(trade)
            states.append(h.runner.state.to_dict())
            h.advance(POLL)
        return states

    assert run(skip=True) == run(skip=False)


def test_a_trade_stamped_after_midnight_by_a_tick_before_it_is_counted_on_the_new_day():
    # A wake's snapshot is taken before its trades move: a trade that opened and ended in the wake
    # that straddles 00:00 UTC is handled on the old day and must still count on the new one.
    midnight = START - 9 * 3_600.0 + DAY                          # START is 09:00 UTC
    h = Harness(config(max_concurrent_trades=1, check_interval_seconds=3_600.0), start=midnight - 30.0,
                lifecycle=IndexedLifecycle(None, []))             # type: ignore[arg-type]
    h.tick()
    trade = h.created[0]
    trade.state, trade.opened_at, trade.closed_at = TradeState.CLOSED, midnight + 1.0, midnight + 2.0
    h.advance(10.0)
    h.tick()                                                     # still the old day: not today's
    assert trade.id in h.runner.state.closed_sent and trade.id not in h.runner.state.opened_today
    h.advance(30.0)
    h.tick()
    assert h.runner.state.opened_today == [trade.id]


def test_the_state_is_saved_when_it_changes_and_only_then():
    h, _history = history_harness(100, max_concurrent_trades=1, check_interval_seconds=3_600.0)
    saved: list[dict] = []
    real = h.store.save_runner_state

    def counting(name, state):
        saved.append(state)
        real(name, state)

    h.store.save_runner_state = counting                          # type: ignore[method-assign]
    h.tick()                                                     # first check: a trade is created
    assert len(saved) == 1
    for _ in range(5):                                           # nothing changes: nothing written
        h.advance(POLL)
        h.tick()
    assert len(saved) == 1
    trade = h.created[0]
    h.lifecycle.open(trade)
    h.advance(POLL)
    h.tick()                                                     # an id appended to opened_sent
    assert len(saved) == 2 and saved[-1]["opened_sent"][-1] == trade.id
    assert h.store.load_runner_state("gates") == h.runner.state.to_dict()
