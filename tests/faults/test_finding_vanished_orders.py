"""Issue 9, finding 5: an exchange that forgets its orders must not leave a trade CLOSING for ever.

The simulator restarts without its order state (``SimExchange.forget_orders``: open orders,
order history and ids are gone; positions, balances and fills survive) while our close
order rests on the book. The real daemon (``main.main`` in-process, speed-0 clock) must
verify the order (by orderId, by clientOrderId, in the order history), settle it as not
working (VANISHED, alerted once), and send a fresh reduce-only close under a new
clientOrderId for what the trade still holds; the trade reaches CLOSED and the exchange's
own positions end flat; the "unknown to the exchange" warning is written a bounded number
of times (it was written 16,000 times). Once while the daemon runs, once across a restart.
"""
from __future__ import annotations

import pytest

from option_selection import strangle
from order_ledger import parse_client_order_id
from persistence import StateStore
from simulator.exchange import ExchangeConfig
from strategy import StrategyConfig, max_hold_hours
from trade_execution import ExecutionParams, ExecutionPhase

from tests.faults.test_incident_rig import (
    OPEN_INTENTS,
    REDUCING_INTENTS,
    DaemonFiles,
    DaemonKilled,
    ScriptedClock,
    creates,
    daemon_env,
    reduce_only_flag,
    run_daemon,
    utc,
)

START = utc(2026, 3, 3, 9, 0)
HOLD_HOURS = 0.25
# Four minutes resting at the touch (the simulator fills nothing passively here), then aggressive.
RESTING_FIRST = ExecutionParams(max_requote_rounds=10, grace_seconds=2.0, phases=(
    ExecutionPhase("top_of_book", 240.0, 60.0),
    ExecutionPhase("aggressive", 300.0, 10.0, buffer_pct=5.0),
))
CLOSE_INTENTS = frozenset(REDUCING_INTENTS)


def resting_strangle() -> StrategyConfig:
    return StrategyConfig(name="forgetful", legs=strangle(0.05, side=1), exit_conditions=[max_hold_hours(HOLD_HOURS)],
                          execution_mode="limit", max_concurrent_trades=1, max_trades_per_day=1,
                          check_interval_seconds=60.0, execution_params=RESTING_FIRST)


def our_live_orders(sim, intents: frozenset[int]) -> list[dict]:
    """Orders of ours with one of ``intents``, resting on the exchange (its own view)."""
    live = []
    for order in sim.exchange.orders():
        coid = order.get("clientOrderId")
        if coid and int(order["state"]) in (0, 2) and parse_client_order_id(int(coid)).intent in intents:
            live.append(order)
    return live


class ForgetWhenOursRest:
    """A scripted watcher: the first time an order of ours with one of ``intents`` has rested 20 s,
    the exchange forgets every order (and, with ``then``, something else happens right after,
    e.g. the daemon dies)."""

    def __init__(self, sim, clock: ScriptedClock, intents: frozenset[int] = CLOSE_INTENTS, *, then=None) -> None:
        self.sim, self.clock, self.intents, self.then = sim, clock, intents, then
        self.forgotten: list[dict] = []
        self.at: float | None = None
        for step in range(0, 3600, 5):
            clock.at(START + step, self.check)

    def check(self) -> None:
        if self.at is not None:
            return
        now_ms = self.clock.now() * 1000
        if not any(now_ms - int(o["createTime"]) >= 20_000 for o in our_live_orders(self.sim, self.intents)):
            return
        self.forgotten = our_live_orders(self.sim, self.intents)
        self.at = self.clock.now()
        self.sim.exchange.forget_orders()
        if self.then is not None:
            self.then()


def our_creates(sim) -> list:
    return [r for r in creates(sim) if "clientOrderId" in r.params]


def assert_forgotten_settled_and_flat(sim, files: DaemonFiles, watcher: ForgetWhenOursRest) -> dict:
    """What every forgetting must end in: the trade's legs flat on the exchange, no clientOrderId sent
    twice, each forgotten order VANISHED in the store and alerted once. Returns the trade."""
    assert watcher.at is not None and watcher.forgotten, "no order of ours ever rested"
    [trade] = files.trades()
    symbols = [leg["symbol"] for leg in trade["legs"]]
    assert all(sim.exchange.position_of(None, symbol) == 0 for symbol in symbols)   # the exchange's own view
    sent = [int(r.params["clientOrderId"]) for r in our_creates(sim)]
    assert len(sent) == len(set(sent))                                  # no clientOrderId ever reused
    forgotten = {int(o["clientOrderId"]) for o in watcher.forgotten}
    store = StateStore(files.state / "trader.db")
    try:
        statuses = {int(o["client_order_id"]): o["status"] for o in store.load_orders()}
    finally:
        store.close()
    assert all(statuses[coid] == "VANISHED" for coid in forgotten)
    vanished = [a for a in files.alerts() if a["kind"] == "order_vanished"]
    assert sorted(a["detail"]["client_order_id"] for a in vanished) == sorted(forgotten)   # once each
    return trade


def assert_closed_afresh_and_flat(sim, files: DaemonFiles, watcher: ForgetWhenOursRest) -> dict:
    trade = assert_forgotten_settled_and_flat(sim, files, watcher)
    assert trade["state"] == "CLOSED" and trade["exit_reason"].startswith("max_hold_hours("), trade
    assert trade["closed_at"] > watcher.at
    forgotten = {int(o["clientOrderId"]) for o in watcher.forgotten}
    fresh = [r for r in our_creates(sim) if r.time_ms / 1000 > watcher.at]
    assert fresh and all(reduce_only_flag(r) for r in fresh)
    assert all(int(r.params["clientOrderId"]) not in forgotten for r in fresh)
    assert {parse_client_order_id(int(r.params["clientOrderId"])).intent for r in fresh} <= CLOSE_INTENTS
    vanished = [a for a in files.alerts() if a["kind"] == "order_vanished"]
    assert all(a["level"] == "WARNING" for a in vanished)
    polls = [line for line in files.log_text().splitlines()
             if ") is unknown to the exchange" in line and "settled" not in line]
    assert 1 <= len(polls) <= 2 * len(forgotten), polls             # bounded: it once was 16,000 lines
    return trade


def test_a_close_order_the_exchange_forgets_is_settled_and_a_fresh_close_goes_out(tmp_path, sim_factory):
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock, exchange=ExchangeConfig(seed=7, passive_fill_prob_per_min_at_touch=0.0))
    files = DaemonFiles(tmp_path)
    watcher = ForgetWhenOursRest(sim, clock)

    code = run_daemon(["--run-for", "3600"], clock=clock, env=daemon_env(tmp_path, sim), strategies=[resting_strangle])

    assert code == 0
    trade = assert_closed_afresh_and_flat(sim, files, watcher)
    assert trade["closed_at"] - watcher.at < 600                         # it moved on within minutes


def test_a_close_order_forgotten_while_the_daemon_is_down_is_settled_at_the_restart(tmp_path, sim_factory):
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock, exchange=ExchangeConfig(seed=7, passive_fill_prob_per_min_at_touch=0.0))
    files = DaemonFiles(tmp_path)

    def die() -> None:
        raise DaemonKilled("killed while the close order rests")

    watcher = ForgetWhenOursRest(sim, clock, then=die)
    with pytest.raises(DaemonKilled):
        run_daemon([], clock=clock, env=daemon_env(tmp_path, sim), strategies=[resting_strangle])
    [before] = files.trades()
    assert before["state"] == "CLOSING"

    clock.set_time(watcher.at + 120)
    code = run_daemon(["--run-for", "1800"], clock=clock, env=daemon_env(tmp_path, sim), strategies=[resting_strangle])

    assert code == 0
    trade = assert_closed_afresh_and_flat(sim, files, watcher)
    assert trade["closed_at"] - watcher.at < 900


# ---------------------------------------------------------------------------------------------
# The verification itself: the ledger against the simulator, with faults on the way
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def ledger_rig(sim_factory):
    from types import SimpleNamespace

    from coincall_client import ClientSettings, CoincallClient
    from config import Credentials
    from order_ledger import OrderLedger

    sim = sim_factory(exchange=ExchangeConfig(seed=7, passive_fill_prob_per_min_at_touch=0.0))
    client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                            Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    events: list[tuple[str, dict]] = []
    ledger = OrderLedger(client, sim.clock, store=StateStore(":memory:"),
                         on_event=lambda kind, payload: events.append((kind, payload)))
    yield SimpleNamespace(sim=sim, ledger=ledger, events=events)
    client.close()


def _resting(rig, seq: int = 7):
    from tests.conftest import resting_bid_params
    from order_ledger import Intent, OrderStatus

    params = resting_bid_params(rig.sim, 0, qty=0.1)
    order = rig.ledger.place(trade_id=f"T{seq:09d}", trade_seq=seq, leg_index=0, intent=Intent.OPEN,
                             symbol=params["symbol"], side=1, qty=0.1, price=params["price"], tick_size=1.0)
    assert order.status is OrderStatus.LIVE
    return order


def _requests(sim, handler: str, since_ms: int) -> list:
    return [r for r in sim.requests_for(handler) if r.time_ms >= since_ms]


def test_an_order_is_settled_vanished_only_when_old_enough_and_unknown_by_id_by_client_id_and_in_history(ledger_rig):
    from simulator import FaultRule
    from order_ledger import OrderStatus

    rig = ledger_rig
    order = _resting(rig)
    rig.sim.exchange.forget_orders()

    assert rig.ledger.verify(order) == "missing"                     # right after the send: normal, not judged
    assert order.status is OrderStatus.LIVE and _requests(rig.sim, "order_history", 0) == []

    rig.sim.clock.advance(31)
    rule = rig.sim.faults.add(FaultRule("http_5xx", endpoint="query_order", count=1))
    assert rig.ledger.verify(order) == "error"                       # a failed request is not "not found"
    assert rule.fired == 1 and order.status is OrderStatus.LIVE
    rig.sim.faults.add(FaultRule("http_5xx", endpoint="order_history", count=1))
    assert rig.ledger.verify(order) == "error"                       # the history could not be read: undecided
    assert order.status is OrderStatus.LIVE

    since = rig.sim.clock.now_ms()
    assert rig.ledger.verify(order) == "vanished"
    assert order.status is OrderStatus.VANISHED and order.status.is_final and order.filled_qty == 0.0
    by_id = [r for r in _requests(rig.sim, "query_order", since) if str(r.params.get("orderId")) == str(order.order_id)]
    by_coid = [r for r in _requests(rig.sim, "query_order", since)
               if str(r.params.get("clientOrderId")) == str(order.client_order_id)]
    assert by_id and by_coid and _requests(rig.sim, "order_history", since)
    assert [kind for kind, _payload in rig.events].count("order_vanished") == 1


def test_an_order_found_by_client_order_id_under_another_order_id_is_never_taken_for_ours(ledger_rig):
    """Our record says orderId A; the exchange knows no A, and shows orderId B under our
    clientOrderId. Two daemons with one prefix build the same clientOrderIds, so B is not
    proven ours: it is neither adopted nor taken as our orderId (an older version "corrected"
    the record to B and took its fills), and it is handed on as a prefix conflict."""
    from order_ledger import LedgerOrder

    rig = ledger_rig
    real = _resting(rig)
    real_order_id, record = real.order_id, real.to_record()
    record.update(order_id=1990000000999999999)                # our record names an orderId the exchange lacks
    rig.ledger.restore([record])
    stale = rig.ledger.get(real.client_order_id)
    assert isinstance(stale, LedgerOrder) and stale.order_id == 1990000000999999999
    rig.sim.clock.advance(31)

    assert rig.ledger.verify(stale) == "vanished"                 # a verdict on missing data: watched, reversible
    assert stale.order_id == 1990000000999999999 and stale.reversible
    assert [(found.client_order_id, found.view.order_id) for found in rig.ledger.take_foreign_orders()] == [
        (real.client_order_id, real_order_id)]


def test_a_vanished_order_the_exchange_shows_again_is_believed(ledger_rig):
    from order_ledger import OrderStatus

    rig = ledger_rig
    order = _resting(rig)
    rig.ledger._update(order, status=OrderStatus.VANISHED)   # as a verdict on missing data would have left it

    rig.ledger.poll(order)                                   # the exchange answers with the order after all

    assert order.status is OrderStatus.LIVE


# ---------------------------------------------------------------------------------------------
# An OPENING trade whose open order the exchange forgets
# ---------------------------------------------------------------------------------------------

def test_an_open_order_the_exchange_forgets_is_settled_and_the_trade_is_never_stuck_opening(tmp_path, sim_factory):
    clock = ScriptedClock(START)
    sim = sim_factory(clock=clock, exchange=ExchangeConfig(seed=7, passive_fill_prob_per_min_at_touch=0.0))
    files = DaemonFiles(tmp_path)
    watcher = ForgetWhenOursRest(sim, clock, OPEN_INTENTS)

    code = run_daemon(["--run-for", "3600"], clock=clock, env=daemon_env(tmp_path, sim), strategies=[resting_strangle])

    assert code == 0
    trade = assert_forgotten_settled_and_flat(sim, files, watcher)
    # Never left OPENING: the forgotten opens are settled, fresh opens (new ids) fill, and the
    # trade later closes on its own exit.
    assert trade["state"] == "CLOSED" and trade["exit_reason"].startswith("max_hold_hours("), trade["state"]
    assert trade["opened_at"] > watcher.at
