"""Account reads failing while the exchange answers raise a CRITICAL ``snapshots_failing``.

An account summary answered with code 0 but without ``equity`` (a schema change, a
maintenance answer) makes every poll a ``SnapshotError``. Nothing is decided on such a tick
(incident 13), so no exit is evaluated, and before this alert nothing said so: the outage
alert needs the exchange to be unreachable, and the monitor alerted only on bugs. A trade
stayed open an hour past its time exit, silently (audit of 2026-12-07).
"""
from __future__ import annotations

from position_monitor import BLIND_ALERT_SECONDS
from simulator.mutations import Mutation
from tests.integration.restart_rig import strangle_config
from tests.integration.test_restart_reconciliation import make_rig, rig  # noqa: F401  (fixtures)
from trade_lifecycle import TradeState


def test_a_malformed_account_answer_is_said_once_within_two_minutes_and_the_exit_follows_its_return(rig):
    life = rig.lives.start([strangle_config(qty=0.01, hold_hours=0.1, cooldown_seconds=3600.0)])
    trade = life.run_until_open()
    mutation = Mutation(kind="drop_fields", endpoint="account_summary", fields=("equity",))
    rig.sim.mutations.add(mutation)
    started = rig.clock.now()
    assert life.run(BLIND_ALERT_SECONDS + 30.0, until=lambda: bool(life.alerts("snapshots_failing", "CRITICAL")))
    assert rig.clock.now() - started <= BLIND_ALERT_SECONDS + 30.0
    life.run(1800)
    assert len(life.alerts("snapshots_failing")) == 1               # once per stretch, not once per poll
    assert trade.state is TradeState.OPEN and trade.exit_reason is None   # nothing decided meanwhile
    rig.sim.mutations.clear()
    assert life.run(900, until=lambda: trade.state is TradeState.CLOSED), trade.state
    assert trade.exit_reason.startswith("max_hold_hours")
