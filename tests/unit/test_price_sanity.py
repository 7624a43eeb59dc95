"""The price sanity rule (``price_sanity``), the "no valuation" it gives the lifecycle, and the
consecutive confirmations of stop-type exits (issue 9, finding 4).

The lifecycle part reuses the fakes of ``test_trade_lifecycle`` (a short strangle: call
K 90,000 sold at 100, put K 80,000 sold at 200, 0.1 each, index 85,000), whose rows carry the
IV that prices their mark, so a row is sane unless a test makes it insane.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import pytest

import conditions
import price_sanity
from errors import StaleDataError
from price_sanity import InsanePriceError, check_quote, quote_problems, sanity_band
from trade_lifecycle import TradeState

from tests.unit.test_trade_lifecycle import CALL, PUT, open_trade, world  # noqa: F401 - world is a fixture

AS_OF = 1_772_000_000.0
ONE_DAY_MS = int((AS_OF + 86_400) * 1000)
INDEX = 100_000.0


@dataclass(frozen=True)
class Row:
    option_type: str
    strike: float
    mark: float
    bid: float = 0.0
    ask: float = 0.0
    mark_iv: float = 0.6
    bid_iv: float = 0.0          # no side IVs unless a test gives them (band_of's fallback reads them)
    ask_iv: float = 0.0
    underlying_price: float = INDEX
    expiry_ms: int = ONE_DAY_MS
    as_of: float = AS_OF


def model(option_type: str, strike: float, iv: float = 0.6) -> float:
    return price_sanity.black_scholes(option_type, INDEX, strike, 1 / 365, iv)


def sane_row(option_type: str = "C", strike: float = 102_000.0, **changes) -> Row:
    value = model(option_type, strike)
    fields = {"mark": value, "bid": value * 0.9, "ask": value * 1.1, **changes}
    return Row(option_type, strike, **fields)


# ----------------------------------------------------------------------------- the model


def test_black_scholes_keeps_put_call_parity_and_is_intrinsic_at_expiry():
    call, put = model("C", 95_000.0), model("P", 95_000.0)
    assert call - put == pytest.approx(INDEX - 95_000.0)
    assert price_sanity.black_scholes("C", INDEX, 95_000.0, 0.0, 0.6) == 5_000.0
    assert price_sanity.black_scholes("P", INDEX, 95_000.0, 0.0, 0.6) == 0.0
    assert 0.2 < price_sanity.black_scholes_delta("C", INDEX, 102_000.0, 1 / 365, 0.6) < 0.35


def test_the_band_contains_the_model_and_is_a_named_factor_wide():
    band = sanity_band("C", 102_000.0, ONE_DAY_MS, INDEX, 0.6, AS_OF)
    assert band.low < band.model < band.high
    slack = price_sanity.MODEL_BAND_ABS_OF_INDEX * INDEX * max(1.0, 4 * band.delta)
    assert band.high == pytest.approx(band.model * price_sanity.MODEL_BAND_FACTOR + slack)
    assert band.low == pytest.approx(band.model / price_sanity.MODEL_BAND_FACTOR - slack)


# ----------------------------------------------------------------------------- the rule


def test_a_sane_row_has_no_problem_and_check_quote_returns_its_band():
    row = sane_row()
    assert quote_problems(row) == []
    assert check_quote(row, "X").contains(row.mark)


@pytest.mark.parametrize("mark", [0.0, -5.0, math.nan, math.inf, None])
def test_a_mark_that_is_zero_negative_or_not_a_number_is_insane(mark):
    [problem] = quote_problems(sane_row(mark=mark))
    assert "mark" in problem


def test_an_absurdly_high_mark_bid_or_ask_is_insane():
    value = model("C", 102_000.0)
    assert any("mark" in p for p in quote_problems(sane_row(mark=value * 1000)))
    assert any("bid" in p for p in quote_problems(sane_row(bid=value * 1000, ask=value * 1001)))
    assert any("ask" in p for p in quote_problems(sane_row(ask=value * 1000)))


def test_a_row_whose_believable_sides_cross_is_insane():
    """Each side inside the band, the bid above the ask: one of them is wrong, so the row gives
    no valuation and no screen (exits wait for a sane reading, as for any insane row)."""
    row = sane_row()
    crossed = sane_row(bid=row.ask * 1.2, ask=row.ask)
    assert check_quote(row, "X").contains(row.ask * 1.2)
    [problem] = quote_problems(crossed)
    assert "crossed" in problem
    assert quote_problems(sane_row(bid=row.ask, ask=row.ask)) != []          # a locked book too
    assert quote_problems(sane_row(bid=0.0, ask=row.ask)) == []              # an empty side never crosses


def test_a_price_far_below_the_model_is_insane():
    value = model("P", 98_000.0)
    assert any("mark" in p for p in quote_problems(sane_row("P", 98_000.0, mark=value / 40)))


def test_a_call_above_the_index_or_a_put_above_its_strike_is_insane_whatever_the_iv():
    assert quote_problems(Row("C", 102_000.0, mark=INDEX * 1.1, mark_iv=math.nan))
    assert quote_problems(Row("P", 98_000.0, mark=98_000.0 * 1.1, mark_iv=math.nan))


def test_a_cheap_far_out_of_the_money_option_is_sane():
    """A few USD for a strike 30 % away: the model says ~0, the tolerance keeps it believable."""
    row = Row("C", 130_000.0, mark=3.0, bid=1.0, ask=5.0, mark_iv=0.9)
    assert model("C", 130_000.0, 0.9) < 0.01
    assert quote_problems(row) == []


def test_an_in_the_money_option_near_intrinsic_is_sane_and_far_below_it_is_not():
    assert quote_problems(Row("C", 90_000.0, mark=10_000.0, bid=9_900.0, ask=10_100.0)) == []
    assert quote_problems(Row("C", 90_000.0, mark=9_800.0, bid=9_700.0, ask=10_000.0)) == []  # basis slack
    problems = quote_problems(Row("C", 90_000.0, mark=5_000.0))
    assert problems and "mark" in problems[0]


def test_an_empty_book_side_is_legal_but_a_negative_one_is_not():
    assert quote_problems(sane_row(bid=0.0)) == []
    assert quote_problems(sane_row(bid=0.0, ask=0.0)) == []
    assert any("bid" in p for p in quote_problems(sane_row(bid=-1.0)))


@pytest.mark.parametrize("underlying", [0.0, -1.0, math.nan])
def test_a_row_without_a_usable_underlying_has_no_band(underlying):
    [problem] = quote_problems(sane_row(underlying_price=underlying))
    assert "underlying" in problem


@pytest.mark.parametrize("iv", [0.0, 0.001, 50.0])
def test_an_implausible_mark_iv_makes_the_row_insane(iv):
    [problem] = quote_problems(sane_row(mark_iv=iv))
    assert "mark IV" in problem


def test_a_missing_mark_iv_widens_the_band_to_every_sane_vol():
    band = sanity_band("C", 102_000.0, ONE_DAY_MS, INDEX, math.nan, AS_OF)
    assert band.model is None and band.low == 0.0
    assert band.high >= model("C", 102_000.0, price_sanity.MAX_SANE_IV)
    assert quote_problems(sane_row(mark_iv=math.nan)) == []


def test_a_row_without_a_mark_iv_is_judged_at_the_vol_its_mark_implies():
    """An every-vol band spans about [0, index] for a call: an ask at 50 times the mark would pass.

    Judged at the vol the mark implies, the band sits around the mark, and a price the
    every-vol band let through is refused.
    """
    row = sane_row(mark_iv=math.nan, ask=model("C", 102_000.0) * 50)
    band = price_sanity.band_of(row)
    assert band.iv_implied_from_mark and band.model == pytest.approx(row.mark, rel=1e-6)
    assert band.high < row.mark * price_sanity.MODEL_BAND_FACTOR * 1.5
    assert any("ask" in p and "implies" in p for p in quote_problems(row))
    assert quote_problems(sane_row(mark_iv=math.nan)) == []


@pytest.mark.parametrize("option_type, strike", [("C", 102_000.0), ("P", 98_000.0), ("C", 90_000.0),
                                                 ("P", 130_000.0), ("C", 130_000.0)])
def test_without_a_mark_iv_the_mark_itself_is_judged_as_the_every_vol_band_judges_it(option_type, strike):
    every_vol = sanity_band(option_type, strike, ONE_DAY_MS, INDEX, math.nan, AS_OF)
    ceiling = INDEX if option_type == "C" else strike
    for step in range(1, 400):
        mark = ceiling * 1.02 * step / 400
        row = Row(option_type, strike, mark=mark, mark_iv=math.nan)
        try:
            believed = price_sanity.band_of(row).contains(mark)
        except InsanePriceError:
            believed = False
        assert believed == every_vol.contains(mark), (mark, every_vol)
        assert (quote_problems(row) == []) == every_vol.contains(mark)


@pytest.mark.parametrize("mark", [0.0, -5.0, math.nan])
def test_a_row_with_neither_a_mark_iv_nor_a_positive_mark_has_nothing_to_judge_a_price_by(mark):
    with pytest.raises(InsanePriceError, match="nothing to judge"):
        price_sanity.band_of(sane_row(mark_iv=math.nan, mark=mark))


def test_an_insane_price_is_stale_data_for_every_reader_and_names_the_reason():
    with pytest.raises(InsanePriceError) as caught:
        check_quote(sane_row(mark=0.0), "BTCUSD-X-C")
    assert isinstance(caught.value, StaleDataError)
    assert "BTCUSD-X-C" in str(caught.value) and "mark 0 is not a positive price" in str(caught.value)


def test_clamps_keep_buys_below_and_sells_above_the_band():
    band = sanity_band("C", 102_000.0, ONE_DAY_MS, INDEX, 0.6, AS_OF)
    assert band.clamp_buy(band.high * 2) == band.high and band.clamp_buy(band.low) == band.low
    assert band.clamp_sell(0.0) == band.low and band.clamp_sell(band.high) == band.high


# ----------------------------------------------------------------------------- the lifecycle: no valuation


def insane_call(world) -> None:  # noqa: F811 - world is the fixture's value
    world.market.set(CALL, bid=0.0, ask=0.0, mark=0.0)


def losing_call(world) -> None:  # noqa: F811
    """The short call marked at 300: PnL about -22 USD, beyond max_loss(10)."""
    world.market.set(CALL, bid=290.0, ask=310.0, mark=300.0)


def calm_call(world) -> None:  # noqa: F811
    world.market.set(CALL, bid=100.0, ask=110.0, mark=105.0)


def poll(world, seconds: float = 10.0) -> None:  # noqa: F811
    world.clock.advance(seconds)
    world.poll()


def test_an_insane_leg_is_no_valuation(world):  # noqa: F811
    trade = open_trade(world)
    assert trade.pnl() == pytest.approx(-2.6)
    insane_call(world)
    poll(world)
    with pytest.raises(InsanePriceError, match="no valuation"):
        trade.valuation("fair")
    with pytest.raises(StaleDataError):
        trade.pnl("mark")
    with pytest.raises(StaleDataError):
        trade.structure_delta()


def test_zero_marks_never_fire_a_stop_and_are_logged_once_per_episode(world, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, logger="exit_evaluation")
    trade = open_trade(world, side=1, exits=[conditions.max_loss(10.0)])  # long: worth 0 would be a loss
    insane_call(world)
    world.market.set(PUT, bid=0.0, ask=0.0, mark=0.0)
    for _ in range(5):
        poll(world)
    assert trade.state is TradeState.OPEN and trade.exit_reason is None
    insane = [r for r in caplog.records if "no valuation on this snapshot" in r.getMessage()]
    assert len(insane) == 1 and insane[0].levelno == logging.WARNING
    calm_call(world)
    world.market.set(PUT, bid=200.0, ask=220.0, mark=210.0)
    poll(world)
    assert any("quotes sane again" in r.getMessage() for r in caplog.records)
    insane_call(world)
    poll(world)
    assert len([r for r in caplog.records if "no valuation on this snapshot" in r.getMessage()]) == 2


def test_insane_quotes_keep_the_60s_unevaluable_alert(world):  # noqa: F811
    trade = open_trade(world, exits=[conditions.max_loss(10.0)])
    insane_call(world)
    for _ in range(6):
        poll(world)
    assert "exit_unevaluable" not in world.alerts.kinds()
    poll(world)
    assert world.alerts.kinds("WARNING").count("exit_unevaluable") == 1 and trade.state is TradeState.OPEN


def test_plain_callables_are_not_called_while_a_held_leg_is_insane(world):  # noqa: F811
    seen = []
    trade = open_trade(world, exits=[lambda snapshot, t: seen.append(t.legs[0].quote.mark) or False])
    seen.clear()
    insane_call(world)
    poll(world)
    assert seen == [] and trade.state is TradeState.OPEN
    calm_call(world)
    poll(world)
    assert seen == [105.0]


def test_time_exits_still_fire_while_a_leg_is_insane(world):  # noqa: F811
    trade = open_trade(world, exits=[conditions.max_hold_hours(1)])
    insane_call(world)
    poll(world, 3600)
    assert trade.exit_reason == "max_hold_hours(hours=1.0)"


# ----------------------------------------------------------------------------- confirmations


def test_row_p2_a_stop_needs_two_consecutive_sane_snapshots(world):  # noqa: F811
    trade = open_trade(world, exits=[conditions.max_loss(10.0)])
    losing_call(world)
    poll(world)
    assert trade.state is TradeState.OPEN and trade.exit_reason is None
    poll(world)
    assert trade.exit_reason == "max_loss(usd=10.0, mode=fair)" and trade.state is not TradeState.OPEN
    detail = trade.exit_detail["confirmations"]
    assert detail["required"] == 2 and detail["seen"] == 2
    assert [e["snapshot_ts"] for e in detail["evaluations"]] == [trade.exit_decided_at - 10, trade.exit_decided_at]
    assert all(e["pnl"] <= -10.0 for e in detail["evaluations"])


def test_an_insane_snapshot_between_two_true_ones_neither_counts_nor_resets(world):  # noqa: F811
    trade = open_trade(world, exits=[conditions.max_loss(10.0)])
    losing_call(world)
    poll(world)
    insane_call(world)
    poll(world)
    assert trade.exit_reason is None
    losing_call(world)
    poll(world)
    assert trade.exit_reason == "max_loss(usd=10.0, mode=fair)"
    assert trade.exit_detail["confirmations"]["seen"] == 2


def test_a_false_between_two_true_ones_resets_the_streak(world):  # noqa: F811
    trade = open_trade(world, exits=[conditions.max_loss(10.0)])
    losing_call(world)
    poll(world)
    calm_call(world)
    poll(world)
    losing_call(world)
    poll(world)
    assert trade.state is TradeState.OPEN and trade.exit_reason is None
    poll(world)
    assert trade.exit_reason == "max_loss(usd=10.0, mode=fair)"


def test_the_same_quotes_on_a_second_poll_are_not_a_second_confirmation(world):  # noqa: F811
    trade = open_trade(world, exits=[conditions.max_loss(10.0)])
    losing_call(world)
    poll(world)
    world.poll()                       # a new poll snapshot at the same instant: the same quotes
    assert trade.exit_reason is None
    poll(world)
    assert trade.exit_reason == "max_loss(usd=10.0, mode=fair)"


def test_one_confirmation_fires_at_once_and_plain_callables_have_one(world):  # noqa: F811
    trade = open_trade(world, exits=[conditions.max_loss(10.0, confirmations=1)])
    losing_call(world)
    poll(world)
    assert trade.exit_reason == "max_loss(usd=10.0, mode=fair, confirmations=1)"
    assert trade.exit_detail["confirmations"] == {
        "required": 1, "seen": 1, "evaluations": trade.exit_detail["confirmations"]["evaluations"]}

    armed: list[int] = []
    other = open_trade(world, exits=[lambda snapshot, t: bool(armed)])
    armed.append(1)
    poll(world)
    assert other.exit_reason == "<lambda>"


def test_three_confirmations_when_configured(world):  # noqa: F811
    trade = open_trade(world, exits=[conditions.max_loss_pct(50, confirmations=3)])
    losing_call(world)
    poll(world)
    poll(world)
    assert trade.exit_reason is None
    poll(world)
    assert trade.exit_reason is not None and trade.exit_detail["confirmations"]["seen"] == 3
