"""``state/trades_snapshot.json``: the store's view for people, every 60 s, written atomically."""
from __future__ import annotations

import json

from contracts import Contract
from operations import TradesSnapshotExporter
from persistence import StateStore
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState

T0 = 1_772_524_800.0  # 2026-03-03 08:00 UTC


def _store_with_an_open_trade(state_dir) -> None:
    contract = Contract(symbol="BTCUSD-4MAR26-90000-C", underlying="BTC", option_type="C", strike=90_000.0,
                        expiry_ms=1_772_611_200_000)
    leg = TradeLeg(index=0, contract=contract, side=1, qty=0.1, open_filled=0.1, open_vwap=500.0)
    trade = TradeLifecycle(id="T000000001", seq=1, strategy="snap", state=TradeState.OPEN, legs=[leg],
                           created_at=T0, opened_at=T0)
    with StateStore(state_dir / "trader.db") as store:
        store.save_trade(trade.to_record())


def test_the_snapshot_is_written_at_once_then_every_60_seconds(tmp_path):
    _store_with_an_open_trade(tmp_path)
    exporter = TradesSnapshotExporter(tmp_path)

    assert exporter.maybe_export(T0) is True
    document = json.loads((tmp_path / "trades_snapshot.json").read_text(encoding="utf-8"))
    assert document["exported_at"].startswith("2026-03-03T08:00:00")
    [trade] = document["active_trades"]
    assert trade["id"] == "T000000001" and trade["exposure"] == {"BTCUSD-4MAR26-90000-C": 0.1}

    assert exporter.maybe_export(T0 + 30) is False
    assert exporter.maybe_export(T0 + 60) is True
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []   # no temp file left


def test_an_export_that_fails_is_logged_and_never_raises(tmp_path, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("x", encoding="utf-8")
    exporter = TradesSnapshotExporter(blocked)   # the state "directory" is a file: the write must fail
    assert exporter.maybe_export(T0) is False
    assert "could not export" in caplog.text
