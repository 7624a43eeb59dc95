"""The periodic reconciliation failing on every run is said: CRITICAL ``reconciliation_failing``.

Why these tests exist (audit of the loop, bug 1): ``Reconciler.__call__`` set the next run a
minute ahead before running the periodic pass, so a pass that raised on every run was counted
by the monitor once a minute, and the five early returns between runs counted as successes:
``callback_failing`` never fired. A ``TraderError`` in the pass was a WARNING line, for ever.
Meanwhile late fills were never booked and outside closes and foreign orders went unseen.

The pass now keeps its own count of failed runs (any exception), reset only by a run that
completes: 3 failed runs in a row over at least 3 minutes raise the CRITICAL (hourly while it
lasts), and the first completed run after it a WARNING ``reconciliation_recovered``. While the
exchange gives no answer the outage alert covers it: nothing extra is said until an account
read shows the exchange answering again.

The first tests drive the reconciler with the fakes of test_reconciliation.py; the last ones
run the daemon against the simulator (the audit's scenarios).
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from clock import iso_utc
from errors import ExchangeError, TransportError
from reconciliation import (
    PERIODIC_FAILURE_ALERT_RUNS,
    PERIODIC_FAILURE_ALERT_SECONDS,
    PERIODIC_FAILURE_REALERT_SECONDS,
)
from simulator.exchange import ExchangeConfig
from simulator.faults import FaultRule
from tests.conftest import resting_bid_params
from tests.integration.restart_rig import Lives
from tests.unit.test_reconciliation import Harness, harness, snapshot

WAKE_SECONDS = 10.0
PENDING = "GET /open/option/order/pending/v1"
FAILING = "reconciliation_failing"
RECOVERED = "reconciliation_recovered"


def started() -> Harness:
    """A reconciler past its start-up (nothing held, nothing to compare)."""
    h = harness()
    h.reconciler(snapshot(at=h.clock.now()))
    assert h.reconciler.started
    return h


def wake_for(h: Harness, seconds: float, *, account_read: Callable[[float], bool] = lambda now: True) -> None:
    """The monitor's wakes every 10 s for ``seconds``: a fresh account snapshot when
    ``account_read(now)`` says the poll succeeded, else the failed poll (``on_snapshot_error``)."""
    end = h.clock.now() + seconds
    while h.clock.now() < end:
        h.clock.advance(WAKE_SECONDS)
        now = h.clock.now()
        if account_read(now):
            h.reconciler(snapshot(at=now))
        else:
            h.reconciler.on_snapshot_error(RuntimeError("account read failed"))


def alerts_of(h: Harness, kind: str) -> list[tuple[str, str, dict]]:
    return [sent for sent in h.alerts.sent if sent[1] == kind]


class HistoryBug:
    """A bug in one step of the periodic pass: raises on every call, and counts them."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        raise KeyError("bug in the history read")


# ---------------------------------------------------------------------------------------------
# With fakes
# ---------------------------------------------------------------------------------------------


def test_a_bug_on_every_run_is_caught_and_said_once_after_three_runs_and_three_minutes(monkeypatch):
    h = started()
    bug = HistoryBug()
    monkeypatch.setattr(h.reconciler.ownership, "watch_history", bug)
    first_failure = h.clock.now() + h.reconciler.interval_seconds

    wake_for(h, 15 * 60)                                  # never raises into the monitor

    assert bug.calls >= 14
    [(level, _, detail)] = alerts_of(h, FAILING)
    assert level == "CRITICAL" and detail["runs"] >= PERIODIC_FAILURE_ALERT_RUNS
    assert detail["failing_seconds"] >= PERIODIC_FAILURE_ALERT_SECONDS
    assert detail["since"] == iso_utc(first_failure)
    message = h.alerts.messages[[kind for _, kind, _ in h.alerts.sent].index(FAILING)]
    assert "KeyError" in message and "late fills" in message and "outside" in message


def test_an_exchange_error_on_every_run_is_repeated_hourly_and_its_end_is_said():
    h = started()
    h.client.fail_pending = ExchangeError(10001, "open orders unreadable", PENDING)

    wake_for(h, 2 * 3600)

    failing = alerts_of(h, FAILING)
    assert [level for level, _, _ in failing] == ["CRITICAL", "CRITICAL"]    # at ~3 min and an hour later
    assert failing[1][2]["runs"] - failing[0][2]["runs"] >= PERIODIC_FAILURE_REALERT_SECONDS / 60 - 1
    assert alerts_of(h, RECOVERED) == []

    h.client.fail_pending = None
    wake_for(h, 120)

    [(level, _, detail)] = alerts_of(h, RECOVERED)
    assert level == "WARNING" and detail["runs"] >= failing[1][2]["runs"]
    assert "late fills" in h.alerts.messages[-1]                          # two hours: past the late-fill watch
    wake_for(h, 3600)
    assert len(alerts_of(h, FAILING)) == 2 and len(alerts_of(h, RECOVERED)) == 1


def test_an_order_history_that_never_reads_is_a_failed_run_though_the_step_passes_over_it():
    """The history watch passes over a failed read (retried next run), so the run went on and
    counted as complete: a history endpoint refusing for good never reached the alert."""
    h = started()
    h.client.fail_history = ExchangeError(10001, "history unreadable", "GET /open/option/order/history/v1")

    wake_for(h, 6 * 60)

    [(level, _, detail)] = alerts_of(h, FAILING)
    assert level == "CRITICAL" and detail["runs"] >= PERIODIC_FAILURE_ALERT_RUNS
    assert "order history" in h.alerts.messages[[kind for _, kind, _ in h.alerts.sent].index(FAILING)]
    h.client.fail_history = None
    wake_for(h, 120)
    assert [level for level, _, _ in alerts_of(h, RECOVERED)] == ["WARNING"]


def test_the_alert_needs_three_runs_in_a_row_and_three_minutes():
    h = started()
    h.client.fail_pending = ExchangeError(10001, "open orders unreadable", PENDING)
    wake_for(h, 130)                                      # runs at 60 and 120 s failed: 2 runs, 70 s
    h.client.fail_pending = None
    wake_for(h, 60)                                       # a completed run ends the streak
    assert h.alerts.sent == []                            # (no recovery to say: nothing was alerted)
    h.client.fail_pending = ExchangeError(10001, "open orders unreadable", PENDING)
    wake_for(h, 130)                                      # 2 runs again: the count starts over
    assert alerts_of(h, FAILING) == []
    wake_for(h, 60)                                       # 3 runs, but only 2 minutes since the first
    assert alerts_of(h, FAILING) == []

    wake_for(h, 60)                                       # 4 runs over 3 minutes

    assert [level for level, _, _ in alerts_of(h, FAILING)] == ["CRITICAL"]
    assert alerts_of(h, RECOVERED) == []


def test_while_the_exchange_gives_no_answer_nothing_extra_is_said_until_it_answers():
    h = started()
    h.client.fail_pending = TransportError(PENDING, "connection refused")
    run_every = h.reconciler.interval_seconds

    # An outage: the account read fails except, now and then, right before a run, which then
    # fails too (the client's retries ran out: its Reachability is DOWN). The outage alert
    # (exchange_unreachable) is the one that speaks.
    wake_for(h, 20 * 60, account_read=lambda now: now % run_every == 0)
    assert alerts_of(h, FAILING) == []

    # The account read answers again, the open orders still do not: that is no outage.
    wake_for(h, 60)

    [(level, _, detail)] = alerts_of(h, FAILING)
    assert level == "CRITICAL" and "TransportError" in detail["error"]


# ---------------------------------------------------------------------------------------------
# Against the simulator (the audit's scenarios)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def life(sim_factory, tmp_path):
    sim = sim_factory(exchange=ExchangeConfig(passive_fill_prob_per_min_at_touch=0.0))
    lives = Lives(sim, tmp_path)
    life = lives.start([])
    assert life.run(30, until=lambda: life.reconciler.started)
    yield life
    lives.close_all()


def late_fill_order(life: Any) -> Any:
    """An order cancelled with 0.3 filled, the fill reported 40 s late (RECOVERY.md O7)."""
    from order_ledger import Intent, OrderStatus
    params = resting_bid_params(life.sim, 0, qty=1.0)
    order = life.ledger.place(trade_id="T000000007", trade_seq=7, leg_index=0, intent=Intent.OPEN,
                              symbol=params["symbol"], side=1, qty=1.0, price=params["price"], tick_size=1.0)
    assert order.status is OrderStatus.LIVE
    life.sim.exchange.faults.fill_report_lag_seconds = 40.0
    life.sim.exchange.faults.fill_on_next_cancel_qty = 0.3
    life.ledger.cancel(order)
    life.ledger.poll(order)
    assert order.status is OrderStatus.CANCELED and order.filled_qty == 0.0
    return order


def test_sim_a_pass_dying_on_a_bug_before_the_late_fill_recheck_is_critical_and_booked_once_it_works(
        life, monkeypatch):
    order = late_fill_order(life)
    bug = HistoryBug()
    monkeypatch.setattr(life.reconciler.ownership, "watch_history", bug)

    assert life.run(5 * 60, until=lambda: bool(life.alerts(FAILING)))

    assert bug.calls >= PERIODIC_FAILURE_ALERT_RUNS and order.filled_qty == 0.0   # unbooked meanwhile
    assert [a.level for a in life.alerts(FAILING)] == ["CRITICAL"]
    assert life.ctx.position_monitor.failing_callbacks == {}  # the pass's own streak, not the monitor's

    monkeypatch.undo()                                        # the pass works again, inside the watch window
    life.run(3 * 60)

    assert order.filled_qty == pytest.approx(0.3)
    assert [a.level for a in life.alerts(RECOVERED)] == ["WARNING"] and len(life.alerts(FAILING)) == 1


def test_sim_the_open_orders_answering_5xx_for_an_hour_is_critical_while_the_account_answers(life):
    life.sim.faults.add(FaultRule(mode="http_5xx", endpoint="pending_orders", http_status=502))

    life.run(60 * 60)

    [alert] = life.alerts(FAILING)
    assert alert.level == "CRITICAL" and alert.detail["runs"] >= PERIODIC_FAILURE_ALERT_RUNS
    assert life.alerts("exchange_unreachable") == []
    life.sim.faults.clear()
    life.run(3 * 60)
    assert [a.level for a in life.alerts(RECOVERED)] == ["WARNING"]
