"""``status`` shows the perpetuals of the account beside the options (docs/PERPETUALS.md, Limits).

A perp position no trade holds (a hedge left behind, a perp outside our trades) is "shown by
`status` ... among the positions that are not ours". ``status`` used to read only the option
positions and the option open orders, so an account short 0.5 BTCUSD read as flat. Every
position and open order now says its kind and whether it is ours; a perp read that fails
says the perps are unknown, never that there are none (evidence before belief).
"""
from __future__ import annotations

import json
from typing import Any

import main as main_module
from coincall_client import ClientSettings, CoincallClient
from config import Credentials
from contracts import Contract, Side
from order_ledger import Intent, build_client_order_id
from persistence import StateStore
from simulator import FaultRule
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState

PERP = "BTCUSD"
OUR_PREFIX = 101              # the default CLIENT_ORDER_PREFIX


def env_for(tmp_path, sim) -> dict[str, str]:
    """A `status` run against the simulator in its own process (not embedded): the exchange part is read."""
    return {"LOG_DIR": str(tmp_path / "logs"), "STATE_DIR": str(tmp_path / "state"), "TRADING_ENVIRONMENT": "sim",
            "POLL_INTERVAL_SECONDS": "10", "COINCALL_BASE_URL": sim.base_url, "COINCALL_API_KEY_SIM": sim.api_key,
            "COINCALL_API_SECRET_SIM": sim.api_secret}


def run_status(tmp_path, sim, capsys) -> tuple[dict[str, Any], str]:
    """The ``--json`` document and the text of one ``status`` each."""
    env = env_for(tmp_path, sim)
    assert main_module.main(["status", "--json"], clock=sim.clock, env=env, dotenv_path=None) == 0
    report = json.loads(capsys.readouterr().out)
    assert main_module.main(["status"], clock=sim.clock, env=env, dotenv_path=None) == 0
    return report, capsys.readouterr().out


def store_with_a_perp_trade(tmp_path, qty: float, price: float) -> None:
    """The daemon's store holding one OPEN trade long ``qty`` of the BTC perpetual."""
    (tmp_path / "state").mkdir()
    leg = TradeLeg(index=0, contract=Contract.perpetual("BTC"), side=Side.BUY, qty=qty, open_filled=qty,
                   open_vwap=price)
    trade = TradeLifecycle(id="T000000001", seq=1, strategy="hedged", state=TradeState.OPEN, legs=[leg],
                           opened_at=0.0, created_at=0.0)
    with StateStore(tmp_path / "state" / "trader.db") as store:
        store.save_trade(trade.to_record())


def test_status_shows_a_perp_position_held_on_the_account(tmp_path, sim, capsys):
    # A hedge / perp left on the account (after a daemon stop, or a perp outside our trades).
    mark = sim.exchange.perp_mark(PERP)
    sim.exchange.set_position(None, PERP, -0.5, mark)

    report, text = run_status(tmp_path, sim, capsys)

    exchange = report["exchange"]
    assert exchange["available"] is True and exchange["perpetuals"] == {"available": True}
    [row] = [p for p in exchange["positions"] if p["symbol"] == PERP]
    assert row["kind"] == "perpetual" and row["side"] == "short" and row["qty"] == 0.5
    assert row["ours"] is None          # no store read: whose it is cannot be said
    assert f"position {PERP} perpetual short 0.5" in text


def test_status_says_which_positions_our_trades_hold_and_which_are_not_ours(tmp_path, sim, capsys):
    mark = sim.exchange.perp_mark(PERP)
    store_with_a_perp_trade(tmp_path, 0.01, mark)
    sim.exchange.set_position(None, PERP, 0.01, mark)
    sim.exchange.set_position(None, "ETHUSD", -0.2, sim.exchange.perp_mark("ETHUSD"))

    report, text = run_status(tmp_path, sim, capsys)

    rows = {p["symbol"]: p for p in report["exchange"]["positions"]}
    assert rows[PERP]["ours"] is True and rows[PERP]["trade_ids"] == ["T000000001"]
    assert rows["ETHUSD"]["ours"] is False and rows["ETHUSD"]["trade_ids"] == []
    assert rows["ETHUSD"]["kind"] == "perpetual" and rows["ETHUSD"]["side"] == "short"
    assert f"position {PERP} perpetual long 0.01" in text and "(ours: T000000001)" in text
    assert "position ETHUSD perpetual short 0.2 avg" in text
    [foreign_line] = [line for line in text.splitlines() if "position ETHUSD" in line]
    assert foreign_line.endswith("(not ours)")


def test_status_lists_a_working_perp_order_with_its_kind_and_owner(tmp_path, sim, capsys):
    client = CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                            Credentials(sim.api_key, sim.api_secret, source="test"), sim.clock)
    try:
        coid = build_client_order_id(OUR_PREFIX, 7, 0, Intent.OPEN, 1)
        price = round(sim.exchange.perp_mark(PERP) * 0.97, 0)          # rests below the market
        order_id = client.perp_create_order(PERP, 0.002, Side.BUY, coid, price=price)
    finally:
        client.close()

    report, text = run_status(tmp_path, sim, capsys)

    [order] = report["exchange"]["open_orders"]
    assert order == {"order_id": order_id, "client_order_id": coid, "symbol": PERP, "kind": "perpetual", "ours": True}
    assert f"open order {order_id} {PERP} perpetual" in text


def test_a_failed_perp_read_shows_the_perps_as_unknown_never_as_none(tmp_path, sim, capsys):
    sim.exchange.set_position(None, PERP, -0.5, sim.exchange.perp_mark(PERP))
    sim.faults.add(FaultRule(endpoint="futures_positions", mode="http_5xx"))

    report, text = run_status(tmp_path, sim, capsys)

    exchange = report["exchange"]
    assert exchange["available"] is True                     # the options were read
    assert exchange["perpetuals"]["available"] is False and "perp" in exchange["perpetuals"]["note"]
    assert all(p["kind"] == "option" for p in exchange["positions"])
    assert "perpetual positions and orders: unknown" in text
