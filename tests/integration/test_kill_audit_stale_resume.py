"""A ``resume`` queued for a daemon that stopped before taking it is refused at the next start
(audit, 2026-12-07): that start's reconciliation may have paused every strategy for a prefix
conflict or a store behind the exchange (docs/RECOVERY.md O2, L3) that the operator has not seen
yet. Before, the stale resume lifted the safety pause and the symbol block on the first wake.
"""
from __future__ import annotations

from pathlib import Path

from order_ledger import build_client_order_id
from tests.integration.test_kill_resume_e2e import PREFIX, open_store, run, runner_state, stored
from tests.integration.test_kill_resume_e2e import clock, env, exchange  # noqa: F401 - fixtures


def test_a_stale_queued_resume_does_not_lift_the_store_behind_pause_of_the_next_start(tmp_path: Path, clock, exchange,
                                                                              env, signed_request_for):
    assert run(["--run-for", "120"], clock, env) == 0           # alpha runs and opens its trade
    [trade] = stored(tmp_path)[0]
    assert trade["state"] == "OPEN"
    call = signed_request_for(exchange)

    # While the daemon is down: an order carrying OUR prefix that our store never sent (another
    # daemon started by mistake with the same CLIENT_ORDER_PREFIX, trade sequence 900).
    symbol = trade["legs"][0]["symbol"]
    coid = build_client_order_id(PREFIX, 900, 0, 1, 1)
    answer = call("POST", "/open/option/order/create/v1", {
        "symbol": symbol, "qty": 0.1, "tradeSide": 1, "tradeType": 1, "price": 1.0, "clientOrderId": coid})
    assert answer["code"] == 0, answer

    # A resume queued earlier for a daemon that stopped before its next wake (exit 1, "stays queued").
    with open_store(tmp_path) as store:
        resume_id = store.add_command("resume", {"strategy": None})

    creates_before = len(exchange.requests_for("create_order"))
    assert run(["--run-for", "300"], clock, env) == 0

    with open_store(tmp_path) as store:
        resume = store.command(resume_id)
    state = runner_state(tmp_path, "alpha")
    trades = stored(tmp_path)[0]
    assert state["paused"] is True, (
        f"the start-up reconciliation (store_behind) paused alpha and blocked its symbol, then the stale resume (command {resume_id}, "
        f"{resume['status']}, resumed {resume['result']}) lifted it; alpha now has {len(trades)} trade(s)")
