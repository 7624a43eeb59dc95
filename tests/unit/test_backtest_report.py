"""The backtest report: every figure recomputed independently from a hand-made trades.csv.

``backtest_recompute`` (plain Python of the tests) recomputes the summary from the CSV; the
known numbers of the hand-made trades are also written out here, so a definition that drifts
in both places at once is still caught. Then the formulas on hand-made legs (execution cost vs
mid, greek attribution), the degenerate cases, escaping and determinism of report.html.
"""
from __future__ import annotations

import csv
import io
import math
import re
from datetime import datetime, timezone
from typing import Any

import pytest

from backtest import TRADE_COLUMNS, BacktestPeriod, summarize, trade_row, trades_csv
import trade_lifecycle
from backtest_report import (
    HEDGE_COLUMNS,
    HEDGE_LEGS_KEY,
    HEDGE_STATE_KEY,
    PERPETUAL_KIND,
    REPORT_FILE,
    attribution,
    execution_cost,
    fill_cost_pct,
    hedge_figures,
    leg_greek_pnl,
    leg_price_cash,
    render_report,
    write_report,
)
from contracts import Contract, Side
from leg_market import LegMarket
from tests.unit.backtest_recompute import assert_matches, read_csv, recompute

START = datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()
END = datetime(2026, 3, 4, tzinfo=timezone.utc).timestamp()
PERIOD = BacktestPeriod(START, END)
ATTRIBUTION = ("pnl_delta", "pnl_gamma", "pnl_theta", "pnl_vega", "pnl_residual")
NUMERIC = ("entry_premium", "fees", "realized_pnl", "time_in_market_s", "exec_cost_open_pct",
           "exec_cost_close_pct", "exec_cost_pct", *ATTRIBUTION, *HEDGE_COLUMNS)


def t(day: int, hour: int) -> str:
    return f"2026-03-0{day}T{hour:02d}:00:00.000Z"


def trade(id_: str, strategy: str, state: str, *, opened: str = "", closed: str = "", failed: str = "",
          pnl: float = 0.0, fees: float = 0.0, cost: float | None = None,
          shares: tuple[float, float, float, float, float] | None = None, exit_reason: str = "",
          hedge: tuple[float, int, float, float | str] = (0.0, 0, 0.0, 0.0)) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(TRADE_COLUMNS, "")
    row.update({"id": id_, "strategy": strategy, "state": state, "created_at": opened or failed, "opened_at": opened,
                "closed_at": closed, "failed_at": failed, "exit_reason": exit_reason, "legs": "",
                "entry_premium": 0.0, "fees": fees, "realized_pnl": pnl,
                "exec_cost_pct": "" if cost is None else cost})
    if shares is not None:
        row.update(zip(ATTRIBUTION, shares))
    row.update(zip(HEDGE_COLUMNS, hedge))   # funding, rebalances, hedge cost, hedge PnL ("" while active)
    return row


# The hand-made trades and their known figures (period 2026-03-01 00:00 to 03-04 00:00 UTC, 3 days).
HAND_MADE = [
    trade("T000000001", "alpha", "CLOSED", opened=t(1, 1), closed=t(1, 3), pnl=50.0, fees=2.0, cost=40.0,
          shares=(30.0, 5.0, -10.0, 20.0, 5.0), exit_reason="profit_target", hedge=(-1.5, 3, 2.25, 12.5)),
    trade("T000000002", "alpha", "CLOSED", opened=t(1, 2), closed=t(2, 2), pnl=-80.0, fees=3.0, cost=100.0,
          shares=(-60.0, 2.0, 8.0, -20.0, -10.0), exit_reason="max_loss", hedge=(0.75, 5, 4.0, -20.0)),
    trade("T000000003", "alpha", "FAILED", failed=t(2, 5), pnl=-5.0, fees=1.0),
    trade("T000000004", "alpha", "OPEN", opened=t(3, 12), fees=1.0, cost=80.0, hedge=(-0.25, 1, 0.5, "")),
    trade("T000000005", "beta", "CLOSED", opened=t(1, 10), closed=t(3, 10), pnl=30.0, fees=2.0, cost=60.0,
          shares=(10.0, 1.0, 15.0, 2.0, 2.0), exit_reason="time_exit"),
]


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRADE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def typed(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """CSV strings -> the row values ``trade_row`` gives (floats; None for an empty number)."""
    return [{key: (float(value) if value != "" else None) if key in NUMERIC else value for key, value in row.items()}
            for row in rows]


def summary_of(text: str, strategies=("alpha", "beta")) -> dict[str, Any]:
    rows = typed(read_csv(text))
    for row in rows:   # as trade_row writes them: PnL and fees are always numbers
        row["realized_pnl"], row["fees"] = row["realized_pnl"] or 0.0, row["fees"] or 0.0
    return summarize(rows, PERIOD, 7, 10.0, list(strategies))


@pytest.fixture
def hand_made() -> tuple[str, dict[str, Any]]:
    text = csv_text(HAND_MADE)
    return text, summary_of(text)


# ---- the summary against an independent recomputation -------------------------------------------


def test_every_summary_figure_equals_its_recomputation_from_trades_csv(hand_made):
    text, summary = hand_made
    rows = read_csv(text)
    for name in ("alpha", "beta"):
        assert_matches(summary["strategies"][name], recompute([r for r in rows if r["strategy"] == name], START, END))
    assert_matches(summary["total"], recompute(rows, START, END))
    expected_keys = set(recompute(rows, START, END))
    assert set(summary["total"]) == expected_keys


def test_the_known_figures_of_the_hand_made_trades(hand_made):
    _, summary = hand_made
    alpha, total = summary["strategies"]["alpha"], summary["total"]
    assert alpha["daily_pnl"] == {"2026-03-01": 50.0, "2026-03-02": -85.0, "2026-03-03": 0.0}
    assert alpha["max_drawdown"] == 85.0                     # +50, then -80 and -5
    assert alpha["win_rate"] == 0.5                          # closed: one win, one loss; the failed one is no "closed"
    assert alpha["profit_factor"] == pytest.approx(50 / 85, abs=1e-6)
    assert alpha["time_in_market"] == pytest.approx(37 / 72, abs=1e-6)   # 25 h merged + 12 h still open at the end
    assert alpha["exec_cost_pct"] == pytest.approx((40 + 100 + 80) / 3, abs=1e-6)
    assert alpha["attribution"] == {"delta": -30.0, "gamma": 7.0, "theta": -2.0, "vega": 0.0, "residual": -5.0,
                                    "trades": 2}
    daily = [50.0, -85.0, 0.0]
    mean = sum(daily) / 3
    deviation = math.sqrt(sum((x - mean) ** 2 for x in daily) / 2)
    assert alpha["sharpe"] == pytest.approx(mean / deviation * math.sqrt(365), abs=1e-6)
    assert alpha["sortino"] == pytest.approx(mean / math.sqrt(85.0 ** 2 / 3) * math.sqrt(365), abs=1e-6)
    assert total["daily_pnl"] == {"2026-03-01": 50.0, "2026-03-02": -85.0, "2026-03-03": 30.0}
    assert total["max_drawdown"] == 85.0 and total["realized_pnl"] == -5.0 and total["fees"] == 9.0
    assert total["profit_factor"] == pytest.approx(80 / 85, abs=1e-6)
    assert total["time_in_market"] == pytest.approx(69 / 72, abs=1e-6)   # 03-01 01:00..03-03 10:00, 12:00..24:00
    assert (total["trades"], total["closed"], total["failed"], total["open_at_end"]) == (5, 3, 1, 1)
    # the hedge sums: the open trade's funding and cost so far count, its hedge PnL (empty) does not
    assert (alpha["funding"], alpha["hedge_rebalances"], alpha["hedge_cost"], alpha["hedge_pnl"]) == (
        -1.0, 9, 6.75, -7.5)
    assert summary["strategies"]["beta"]["hedge_rebalances"] == 0 and summary["strategies"]["beta"]["funding"] == 0.0
    assert (total["funding"], total["hedge_rebalances"], total["hedge_cost"], total["hedge_pnl"]) == (-1.0, 9, 6.75, -7.5)


# ---- degenerate cases ----------------------------------------------------------------------------


def test_no_trades_gives_zeros_and_undefined_ratios_and_still_a_report():
    summary = summary_of(csv_text([]))
    total = summary["total"]
    figures = (total["trades"], total["realized_pnl"], total["max_drawdown"], total["time_in_market"])
    assert figures == (0, 0.0, 0.0, 0.0)
    assert total["win_rate"] is None and total["sharpe"] is None and total["sortino"] is None
    assert total["profit_factor"] is None and total["exec_cost_pct"] is None and total["exec_cost_trades"] == 0
    assert total["daily_pnl"] == {"2026-03-01": 0.0, "2026-03-02": 0.0, "2026-03-03": 0.0}
    assert_matches(total, recompute([], START, END))
    page = render_report(summary, [])
    assert "n/a" in page and "No trade has the snapshots" in page
    assert "Hedging" not in page and (total["funding"], total["hedge_rebalances"]) == (0.0, 0)


def test_one_winning_trade_has_no_loss_to_divide_by():
    text = csv_text([HAND_MADE[0]])
    total = summary_of(text)["total"]
    assert total["win_rate"] == 1.0 and total["profit_factor"] is None and total["sortino"] is None
    assert total["max_drawdown"] == 0.0 and total["sharpe"] is not None    # [50, 0, 0] varies
    assert_matches(total, recompute(read_csv(text), START, END))


def test_all_losses_give_a_zero_profit_factor_and_a_one_day_period_no_ratio():
    loser = trade("T000000009", "alpha", "CLOSED", opened=t(1, 1), closed=t(1, 2), pnl=-4.0)
    one_day = BacktestPeriod(START, START + 86400)
    rows = typed(read_csv(csv_text([loser])))
    total = summarize(rows, one_day, 7, 10.0, ["alpha"])["total"]
    assert total["profit_factor"] == 0.0 and total["win_rate"] == 0.0 and total["max_drawdown"] == 4.0
    assert total["sharpe"] is None and total["sortino"] is None and list(total["daily_pnl"]) == ["2026-03-01"]


# ---- report.html ----------------------------------------------------------------------------------


def table_row(page: str, first_cell: str) -> list[str]:
    match = re.search(rf"<tr><td>{re.escape(first_cell)}</td>(.*?)</tr>", page)
    assert match, first_cell
    return re.findall(r"<td>(.*?)</td>", match.group(1))


def test_the_reports_strategy_table_shows_the_figures_recomputed_from_the_csv(hand_made):
    text, summary = hand_made
    rows = read_csv(text)
    page = render_report(summary, typed(rows))
    for name in ("alpha", "beta", "total"):
        want = recompute([r for r in rows if name in ("total", r["strategy"])], START, END)
        cells = table_row(page, name)
        assert cells[:4] == [str(want["trades"]), str(want["closed"]), str(want["failed"]), str(want["open_at_end"])]
        assert cells[4] == f"{want['realized_pnl']:,.2f}" and cells[5] == f"{want['fees']:,.2f}"
        assert cells[6] == f"{want['win_rate'] * 100:.1f} %"
        assert cells[7] == f"{want['max_drawdown']:,.2f}"
        for cell, key in zip(cells[8:11], ("sharpe", "sortino", "profit_factor")):
            assert cell == ("n/a" if want[key] is None else f"{want[key]:,.2f}")
        assert cells[11] == f"{want['time_in_market'] * 100:.1f} %"
        assert cells[12] == f"{want['exec_cost_pct']:,.1f}"
    # every explained trade appears in the attribution chart, one bar segment per non-zero share
    assert page.count("<rect ") == sum(1 for r in rows if r["pnl_residual"] != ""
                                       for name in ATTRIBUTION if float(r[name]) != 0.0)


def test_the_hedging_table_shows_the_sums_recomputed_from_the_csv_and_only_when_something_hedged(hand_made):
    text, summary = hand_made
    rows = read_csv(text)
    page = render_report(summary, typed(rows))
    hedging = page[page.index("<caption>Hedging"):]
    for name in ("alpha", "beta", "total"):
        want = recompute([r for r in rows if name in ("total", r["strategy"])], START, END)
        cells = table_row(hedging, name)
        assert cells == [str(want["hedge_rebalances"]), f"{want['hedge_cost']:,.2f}", f"{want['hedge_pnl']:,.2f}",
                         f"{want['funding']:,.2f}", f"{want['realized_pnl']:,.2f}"]
    unhedged = [{**row, **dict.fromkeys(HEDGE_COLUMNS, "0")} for row in rows]
    plain = render_report(summary_of(csv_text(unhedged)), typed(unhedged))
    assert "Hedging" not in plain and "<b>Hedging.</b>" in page


def test_the_report_is_self_contained_and_identical_for_identical_input(hand_made, tmp_path):
    text, summary = hand_made
    first = render_report(summary, typed(read_csv(text)))
    again = render_report(summary_of(text), typed(read_csv(text)))
    assert first == again
    assert "<script" not in first and "http://" not in first.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in first and "src=" not in first
    path = write_report(tmp_path, summary, typed(read_csv(text)))
    assert path == tmp_path / REPORT_FILE and path.read_text(encoding="utf-8") == first


def test_a_hostile_strategy_name_and_exit_reason_are_escaped():
    hostile = '<script>alert("x")</script>&<img src=x onerror=1>'
    rows = [trade("T000000001", hostile, "CLOSED", opened=t(1, 1), closed=t(1, 2), pnl=1.0, cost=10.0,
                  shares=(1.0, 0.0, 0.0, 0.0, 0.0), exit_reason='"><svg onload=alert(1)>')]
    text = csv_text(rows)
    summary = summary_of(text, strategies=(hostile,))
    page = render_report(summary, typed(read_csv(text)))
    assert "<script" not in page and "<img" not in page and "onload=alert(1)>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;img src=x onerror=1&gt;" in page


# ---- execution cost vs mid -------------------------------------------------------------------------


def market(bid: float, ask: float, **changes: Any) -> LegMarket:
    values: dict[str, Any] = dict(bid=bid, ask=ask, mark=(bid + ask) / 2, mark_iv=0.5, underlying_price=85_000.0,
                                  delta=0.3, gamma=0.0001, theta=-50.0, vega=20.0, as_of=START)
    values.update(changes)
    return LegMarket(**values)


def leg(side: Side, qty: float, *, open_vwap: float = 0.0, close_filled: float = 0.0, close_vwap: float = 0.0,
        entry: LegMarket | None = None, exit_: LegMarket | None = None, settlement: dict | None = None,
        expiry_ms: int = 0, open_filled: float | None = None) -> dict[str, Any]:
    return {"index": 0, "symbol": "BTCUSD-6MAR26-90000-C", "expiry_ms": expiry_ms, "side": int(side), "qty": qty,
            "open_filled": qty if open_filled is None else open_filled, "open_vwap": open_vwap,
            "close_filled": close_filled, "close_vwap": close_vwap, "settlement": settlement,
            "entry_market": entry.to_record() if entry is not None else None,
            "exit_market": exit_.to_record() if exit_ is not None else None}


@pytest.mark.parametrize("side, vwap, expected", [
    (Side.BUY, 105.0, 0.0), (Side.BUY, 110.0, 100.0), (Side.BUY, 112.5, 150.0), (Side.BUY, 102.5, -50.0),
    (Side.SELL, 100.0, 100.0), (Side.SELL, 105.0, 0.0), (Side.SELL, 107.5, -50.0),
])
def test_a_fills_cost_is_its_distance_from_mid_in_percent_of_the_half_spread(side, vwap, expected):
    assert fill_cost_pct(side, vwap, market(100.0, 110.0)) == pytest.approx(expected)


@pytest.mark.parametrize("book", [(105.0, 105.0), (0.0, 110.0), (100.0, 0.0), (111.0, 110.0)])
def test_no_cost_without_a_two_sided_spread_or_a_snapshot(book):
    assert fill_cost_pct(Side.BUY, 105.0, market(*book)) is None
    assert fill_cost_pct(Side.BUY, 105.0, None) is None


def test_costs_are_quantity_weighted_over_legs_open_and_close_separately_and_together():
    legs = [leg(Side.BUY, 0.2, open_vwap=108.0, close_filled=0.2, close_vwap=95.0,
                entry=market(100.0, 110.0), exit_=market(94.0, 98.0)),       # open 60 %, close (sell) 50 %
            leg(Side.SELL, 0.1, open_vwap=195.0, close_filled=0.1, close_vwap=205.0,
                entry=market(190.0, 210.0), exit_=market(200.0, 206.0))]     # open 50 %, close (buy) 66.7 %
    cost = execution_cost(legs)
    assert cost.open_pct == pytest.approx((60 * 0.2 + 50 * 0.1) / 0.3)
    assert cost.close_pct == pytest.approx((50 * 0.2 + 200 / 3 * 0.1) / 0.3)
    assert cost.overall_pct == pytest.approx((60 * 0.2 + 50 * 0.1 + 50 * 0.2 + 200 / 3 * 0.1) / 0.6)


def test_a_filled_leg_without_a_usable_quote_leaves_the_figure_empty_an_unfilled_one_does_not():
    zero_spread = [leg(Side.BUY, 0.1, open_vwap=105.0, entry=market(105.0, 105.0))]
    assert execution_cost(zero_spread).open_pct is None and execution_cost(zero_spread).overall_pct is None
    unfilled = [leg(Side.BUY, 0.1, open_vwap=108.0, entry=market(100.0, 110.0)),
                leg(Side.SELL, 0.1, open_filled=0.0)]
    cost = execution_cost(unfilled)
    assert cost.open_pct == pytest.approx(60.0) and cost.close_pct is None and cost.overall_pct == pytest.approx(60.0)


# ---- greek attribution -------------------------------------------------------------------------------


def test_attribution_is_a_second_order_step_from_the_entry_greeks_to_the_exit_quote():
    entry = market(100.0, 110.0)                                               # S 85000, IV 0.50
    exit_ = market(150.0, 160.0, underlying_price=86_000.0, mark_iv=0.55, as_of=START + 43_200)   # half a day later
    long_call = leg(Side.BUY, 0.1, open_vwap=110.0, close_filled=0.1, close_vwap=150.0, entry=entry, exit_=exit_)
    delta, gamma, theta, vega = leg_greek_pnl(long_call)
    assert delta == pytest.approx(0.1 * 0.3 * 1000)                   # 30
    assert gamma == pytest.approx(0.1 * 0.5 * 0.0001 * 1000 ** 2)     # 5
    assert theta == pytest.approx(0.1 * -50.0 * 0.5)                  # -2.5: theta is USD per day
    assert vega == pytest.approx(0.1 * 20.0 * 5)                      # 10: vega per vol point, IV +5 points
    short = leg_greek_pnl({**long_call, "side": int(Side.SELL)})
    assert short == pytest.approx((-30.0, -5.0, 2.5, -10.0))
    shares = attribution([long_call], 3.25)
    assert (shares.delta, shares.gamma, shares.theta, shares.vega) == pytest.approx((30.0, 5.0, -2.5, 10.0))
    assert shares.residual == pytest.approx(3.25 - 42.5)
    assert math.fsum(shares.columns().values()) == pytest.approx(3.25)


def test_a_settled_leg_ends_at_the_delivery_price_at_expiry_with_no_vega():
    expiry = START + 2 * 86400
    entry = market(300.0, 320.0, delta=-0.2, theta=-40.0, vega=15.0)
    short_put = leg(Side.SELL, 0.1, open_vwap=300.0, entry=entry, expiry_ms=int(expiry * 1000),
                    settlement={"delivery_price": 79_000.0, "qty": 0.1, "intrinsic": 1000.0, "cash": -100.0,
                                "fee": 0.0})
    assert leg_greek_pnl(short_put) == pytest.approx((-0.1 * -0.2 * -6000, -0.1 * 0.5 * 0.0001 * 6000 ** 2,
                                                      -0.1 * -40.0 * 2, 0.0))


def test_no_attribution_without_the_snapshots_or_a_realized_pnl():
    entry, exit_ = market(100.0, 110.0), market(90.0, 96.0)
    assert attribution([leg(Side.BUY, 0.1, entry=entry, exit_=exit_)], None) is None
    assert attribution([leg(Side.BUY, 0.1, entry=None, exit_=exit_)], 1.0) is None
    assert attribution([leg(Side.BUY, 0.1, entry=entry, exit_=None)], 1.0) is None
    assert attribution([leg(Side.BUY, 0.1, entry=market(100.0, 110.0, gamma=None), exit_=exit_)], 1.0) is None
    assert attribution([leg(Side.BUY, 0.1, entry=entry, exit_=market(90.0, 96.0, mark_iv=None))], 1.0) is None
    unfilled = leg(Side.BUY, 0.1, open_filled=0.0)
    assert attribution([unfilled], -0.5) is not None and attribution([unfilled], -0.5).residual == -0.5


# ---- trades.csv rows from stored trades ------------------------------------------------------------------


def stored_trade(state: str = "CLOSED", **legs_changes: Any) -> dict[str, Any]:
    entry = market(100.0, 110.0)
    exit_ = market(90.0, 96.0, underlying_price=84_000.0, mark_iv=0.48, as_of=START + 3600)
    legs = [dict(leg(Side.BUY, 0.1, open_vwap=110.0, close_filled=0.1, close_vwap=90.0, entry=entry, exit_=exit_),
                 **legs_changes)]
    return {"id": "T000000001", "strategy": "alpha", "state": state, "created_at": START, "opened_at": START,
            "closed_at": START + 3600 if state == "CLOSED" else None, "failed_at": None, "exit_reason": "manual",
            "legs": legs, "entry_premium": -11.0, "fees_paid": 0.4, "realized_pnl": -2.4 if state == "CLOSED" else None}


def test_a_trades_csv_row_has_time_in_market_costs_and_an_attribution_that_adds_up():
    row = trade_row(stored_trade())
    assert row["time_in_market_s"] == 3600.0
    assert (row["exec_cost_open_pct"], row["exec_cost_close_pct"], row["exec_cost_pct"]) == (100.0, 100.0, 100.0)
    assert math.fsum(row[name] for name in ATTRIBUTION) == pytest.approx(row["realized_pnl"], abs=1e-6)
    assert row["pnl_delta"] == pytest.approx(0.1 * 0.3 * -1000)
    text = trades_csv([row])
    assert text.splitlines()[0] == ",".join(TRADE_COLUMNS)
    assert read_csv(text)[0]["pnl_delta"] == str(row["pnl_delta"])


def test_an_open_trade_or_a_zero_spread_leaves_its_cells_empty():
    active = trade_row(stored_trade("OPEN"))
    assert active["time_in_market_s"] is None and all(active[name] is None for name in ATTRIBUTION)
    assert active["exec_cost_open_pct"] == 100.0          # the open fills are known already
    flat = trade_row(stored_trade(entry_market=market(105.0, 105.0).to_record()))
    assert flat["exec_cost_open_pct"] is None and flat["exec_cost_pct"] is None
    assert flat["exec_cost_close_pct"] == 100.0
    cells = read_csv(trades_csv([flat]))[0]
    assert cells["exec_cost_open_pct"] == "" and cells["exec_cost_pct"] == ""


def test_a_trade_stored_before_snapshots_existed_gets_empty_cost_and_attribution():
    old = stored_trade(entry_market=None, exit_market=None)
    row = trade_row(old)
    assert row["exec_cost_pct"] is None and row["pnl_residual"] is None and row["time_in_market_s"] == 3600.0



# ---- perpetual legs and the hedge figures ---------------------------------------------------------------


def perp_leg(side: Side, qty: float, *, open_vwap: float, close_vwap: float, close_filled: float | None = None,
             external_qty: float = 0.0, external_price: float = 0.0, fees: float = 0.0, funding: float = 0.0,
             index: int = 2) -> dict[str, Any]:
    """A perp leg record as ``TradeLeg.to_record`` writes it: no snapshots (a perp has no greeks to keep)."""
    return {"index": index, "symbol": "BTCUSD", "kind": PERPETUAL_KIND, "expiry_ms": 0, "side": int(side), "qty": qty,
            "open_filled": qty, "open_vwap": open_vwap, "close_filled": qty if close_filled is None else close_filled,
            "close_vwap": close_vwap, "external_qty": external_qty, "external_price": external_price, "fees": fees,
            "funding": funding, "settlement": None, "entry_market": None, "exit_market": None}


def test_a_perpetual_legs_delta_share_is_its_price_pnl_and_it_has_no_other_greek():
    assert leg_greek_pnl(perp_leg(Side.BUY, 0.05, open_vwap=85_000.0, close_vwap=86_000.0)) == pytest.approx(
        (50.0, 0.0, 0.0, 0.0))
    assert leg_greek_pnl(perp_leg(Side.SELL, 0.05, open_vwap=86_000.0, close_vwap=85_000.0)) == pytest.approx(
        (50.0, 0.0, 0.0, 0.0))
    # part closed by us, part outside the daemon: both at their own prices
    split = perp_leg(Side.SELL, 0.06, open_vwap=84_851.6, close_vwap=78_539.5, close_filled=0.04, external_qty=0.02,
                     external_price=79_000.0)
    assert leg_greek_pnl(split) == pytest.approx((0.06 * 84_851.6 - 0.04 * 78_539.5 - 0.02 * 79_000.0, 0, 0, 0))
    assert leg_greek_pnl({**split, "open_filled": 0.0, "close_filled": 0.0, "external_qty": 0.0}) == (0, 0, 0, 0)


def test_a_hedged_trade_is_attributed_its_fees_and_funding_landing_in_the_residual():
    entry = market(100.0, 110.0)
    exit_ = market(150.0, 160.0, underlying_price=86_000.0, mark_iv=0.55, as_of=START + 43_200)
    option = leg(Side.BUY, 0.1, open_vwap=110.0, close_filled=0.1, close_vwap=150.0, entry=entry, exit_=exit_)
    hedge = perp_leg(Side.SELL, 0.03, open_vwap=85_000.0, close_vwap=86_000.0, fees=3.0, funding=-1.25)
    realized = (0.1 * 40.0) + (-30.0 - 3.0 - 1.25)           # option cash, then the perp's price PnL, fees, funding
    shares = attribution([option, hedge], realized)
    assert shares is not None                                 # a perp leg without snapshots no longer blanks it
    assert shares.delta == pytest.approx(30.0 - 30.0)         # the option's delta share, then the hedge's
    assert (shares.gamma, shares.theta, shares.vega) == pytest.approx((5.0, -2.5, 10.0))
    assert shares.residual == pytest.approx(realized - (0.0 + 5.0 - 2.5 + 10.0))
    assert math.fsum(shares.columns().values()) == pytest.approx(realized)


def test_the_price_cash_of_a_leg_record_is_the_trade_legs_own_cash_without_funding():
    contract = Contract.perpetual("BTC")
    assert contract.kind == PERPETUAL_KIND
    live = trade_lifecycle.TradeLeg(index=3, contract=contract, side=Side.SELL, qty=0.2, open_filled=0.06,
                                    open_vwap=84_851.6, close_filled=0.04, close_vwap=78_539.5, external_qty=0.02,
                                    external_price=79_000.0, funding=-0.75)
    assert leg_price_cash(live.to_record()) == pytest.approx(live.open_cash + live.close_cash + live.external_cash)
    assert live.cash == pytest.approx(leg_price_cash(live.to_record()) - 0.75)


def test_the_record_keys_are_the_lifecycles():
    assert (HEDGE_STATE_KEY, HEDGE_LEGS_KEY) == (trade_lifecycle.HEDGE_STATE_KEY, trade_lifecycle.HEDGE_LEGS_KEY)


def hedged_trade(state: str = "CLOSED") -> dict[str, Any]:
    doc = stored_trade(state)
    doc["legs"] = [
        {**doc["legs"][0], "index": 0, "funding": 0.0},
        perp_leg(Side.BUY, 0.2, open_vwap=85_000.0, close_vwap=85_500.0, close_filled=0.0, fees=0.0, index=1)
        | {"open_filled": 0.0},                               # the long hedge leg never held anything
        perp_leg(Side.SELL, 0.2, open_vwap=85_000.0, close_vwap=84_000.0, close_filled=0.05, fees=2.5,
                 funding=-0.4, index=2) | {"open_filled": 0.05},
        perp_leg(Side.BUY, 0.01, open_vwap=80_000.0, close_vwap=81_000.0, fees=0.5, funding=0.15, index=3),
    ]
    doc["metadata"] = {HEDGE_LEGS_KEY: {"long": 1, "short": 2},
                       HEDGE_STATE_KEY: {"hedge_qty": 0.0, "last_rebalance_at": START + 600, "rebalances": 4,
                                         "fees_usd": 1.75, "slippage_usd": 0.5}}
    return doc


def test_the_hedge_columns_of_a_hedged_trade():
    row = trade_row(hedged_trade())
    assert row["funding"] == pytest.approx(-0.4 + 0.15)       # every leg's funding, the structure's perp too
    assert row["hedge_rebalances"] == 4 and row["hedge_cost"] == pytest.approx(2.25)
    assert row["hedge_pnl"] == pytest.approx(0.05 * 1_000.0 - 2.5)   # the hedge legs only, fees out, funding not in
    assert list(row)[-4:] == list(HEDGE_COLUMNS) == list(TRADE_COLUMNS[-4:])


def test_an_unhedged_trade_has_zeros_and_an_active_one_no_hedge_pnl_yet():
    assert hedge_figures(stored_trade()).columns() == {"funding": 0.0, "hedge_rebalances": 0, "hedge_cost": 0.0,
                                                       "hedge_pnl": 0.0}
    active = trade_row(hedged_trade("OPEN"))
    assert active["hedge_pnl"] is None and active["hedge_rebalances"] == 4 and active["funding"] == pytest.approx(-0.25)
    assert read_csv(trades_csv([active]))[0]["hedge_pnl"] == ""


def test_a_malformed_hedge_record_is_refused_not_read_as_no_hedge():
    doc = hedged_trade()
    doc["metadata"][HEDGE_STATE_KEY] = {"rebalances": "four"}
    with pytest.raises(ValueError, match="rebalances"):
        trade_row(doc)
