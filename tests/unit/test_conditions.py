"""Entry and exit conditions (BEHAVIOUR.md section 2; incidents 21, 22, 41, 44).

Fakes: a snapshot and a trade with only the attributes conditions may read. Time is the
snapshot's ``timestamp``; nothing here reads the wall clock.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone

import pytest

import conditions as c
from conditions import (
    ConditionHealth, ExitVerdict, account_delta_limit, check_condition, evaluate_entry, evaluate_exit,
    judge_exit, leg_greek_limit, max_account_delta, max_hold_hours, max_loss, max_loss_pct,
    max_margin_utilization, min_available_margin_pct, min_equity, no_existing_position_in,
    profit_target, profit_target_pct, structure_delta_limit, time_exit, time_window, utc_datetime_exit,
    utc_time_window, weekday_filter,
)
from errors import ConfigError, StaleDataError


def at(text: str) -> float:
    """Epoch seconds of an ISO UTC instant, e.g. ``at("2026-03-02T09:00")`` (a Monday)."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True)
class FakePosition:
    symbol: str
    qty: float
    delta: float = 0.0
    missing_greeks: tuple[str, ...] = ()


@dataclass(frozen=True)
class FakeSnapshot:
    timestamp: float = 0.0
    equity: float = 10_000.0
    available_margin: float = 8_000.0
    initial_margin: float = 2_000.0
    net_delta: float = 0.0
    positions: tuple[FakePosition, ...] = ()


@dataclass(frozen=True)
class FakeLeg:
    index: int
    side: int
    net_qty: float
    greeks: dict = field(default_factory=dict)
    is_perpetual: bool = False

    def greek(self, name: str) -> float | None:
        return self.greeks.get(name)


@dataclass
class FakeTrade:
    opened_at: float | None = None
    entry_premium: float = -100.0
    pnl_value: float | Exception = 0.0
    delta: float = 0.0
    legs: tuple[FakeLeg, ...] = ()
    modes_asked: list = field(default_factory=list)

    def pnl(self, mode: str) -> float:
        self.modes_asked.append(mode)
        if isinstance(self.pnl_value, Exception):
            raise self.pnl_value
        return self.pnl_value

    def structure_delta(self) -> float:
        return self.delta


def snap_at(text: str, **kwargs) -> FakeSnapshot:
    return FakeSnapshot(timestamp=at(text), **kwargs)


# ------------------------------------------------------------------ time_window


@pytest.mark.parametrize("clock, passes", [
    ("2026-03-02T08:59:59", False), ("2026-03-02T09:00:00", True),
    ("2026-03-02T16:59:59", True), ("2026-03-02T17:00:00", False),
])
def test_time_window_is_start_inclusive_end_exclusive(clock, passes):
    assert time_window(9, 17)(snap_at(clock)) is passes


@pytest.mark.parametrize("hour, passes", [(21, False), (22, True), (23, True), (0, True), (1, True), (2, False)])
def test_time_window_wraps_midnight_when_start_after_end(hour, passes):
    assert time_window(22, 2)(snap_at(f"2026-03-02T{hour:02d}:30")) is passes


def test_time_window_end_24_covers_the_last_hour():
    assert time_window(20, 24)(snap_at("2026-03-02T23:59:59")) is True
    assert time_window(20, 24)(snap_at("2026-03-03T00:00:00")) is False


@pytest.mark.parametrize("args, argument", [
    ((24, 2), "start_hour"), ((-1, 2), "start_hour"), ((1, 25), "end_hour"), ((5, 5), "end_hour"),
    ((9.0, 17), "start_hour"), ((True, 17), "start_hour"), (("9", 17), "start_hour"),
])
def test_time_window_refuses_bad_hours_naming_the_argument(args, argument):
    with pytest.raises(ConfigError) as caught:
        time_window(*args)
    message = str(caught.value)
    assert f"time_window.{argument} = " in message and "Fix:" in message


# ------------------------------------------------------------------ utc_time_window


def test_utc_time_window_daily_edges_to_the_second():
    window = utc_time_window(time(9, 30), time(16, 0))
    assert window(snap_at("2026-03-02T09:29:59")) is False
    assert window(snap_at("2026-03-02T09:30:00")) is True
    assert window(snap_at("2026-03-02T15:59:59")) is True
    assert window(snap_at("2026-03-02T16:00:00")) is False


def test_utc_time_window_daily_wraps_midnight():
    window = utc_time_window(time(23, 0), time(1, 30))
    assert window(snap_at("2026-03-02T23:00")) is True
    assert window(snap_at("2026-03-03T01:29")) is True
    assert window(snap_at("2026-03-03T01:30")) is False
    assert window(snap_at("2026-03-02T12:00")) is False


def test_utc_time_window_absolute_naive_is_utc_and_aware_is_converted():
    plus_two = timezone(timedelta(hours=2))
    window = utc_time_window(datetime(2026, 3, 2, 9, 0), datetime(2026, 3, 2, 12, 0, tzinfo=plus_two))  # 10:00Z
    assert window(snap_at("2026-03-02T08:59:59")) is False
    assert window(snap_at("2026-03-02T09:00:00")) is True
    assert window(snap_at("2026-03-02T09:59:59")) is True
    assert window(snap_at("2026-03-02T10:00:00")) is False
    assert window(snap_at("2026-03-03T09:30:00")) is False  # absolute: not the next day


def test_utc_time_window_accepts_an_explicit_utc_time():
    window = utc_time_window(time(9, tzinfo=timezone.utc), time(10, tzinfo=timezone.utc))
    assert window(snap_at("2026-03-02T09:15")) is True


@pytest.mark.parametrize("start, end, argument, words", [
    (time(9), datetime(2026, 3, 2, 10), "end", "same type"),
    (time(9), time(9), "end", "differ"),
    (datetime(2026, 3, 2, 10), datetime(2026, 3, 2, 9), "end", "after start"),
    (time(9, tzinfo=timezone(timedelta(hours=1))), time(10), "start", "UTC"),
    ("09:00", time(10), "start", "datetime.time"),
])
def test_utc_time_window_validation(start, end, argument, words):
    with pytest.raises(ConfigError) as caught:
        utc_time_window(start, end)
    assert f"utc_time_window.{argument} = " in str(caught.value) and words in str(caught.value)


def test_absolute_window_already_over_is_refused_at_start_daily_window_never():
    window = utc_time_window(datetime(2026, 3, 2, 9), datetime(2026, 3, 2, 10))
    window.validate_at_start(at("2026-03-02T09:30"))
    with pytest.raises(ConfigError, match="already in the past"):
        window.validate_at_start(at("2026-03-02T10:00"))
    utc_time_window(time(9), time(10)).validate_at_start(at("2030-01-01T00:00"))


# ------------------------------------------------------------------ weekday_filter


def test_weekday_filter_any_case_short_and_full_names():
    only = weekday_filter(["MON", "Wednesday", " fri "])
    assert only.name == "weekday_filter(days=[mon, wed, fri])"
    assert only(snap_at("2026-03-02T12:00")) is True    # Monday
    assert only(snap_at("2026-03-03T12:00")) is False   # Tuesday
    assert only(snap_at("2026-03-04T00:00")) is True    # Wednesday, first second
    assert only(snap_at("2026-03-08T23:59:59")) is False  # Sunday


def test_weekday_filter_uses_the_utc_date():
    assert weekday_filter(["sun"])(snap_at("2026-03-08T23:59:59")) is True
    assert weekday_filter(["sun"])(snap_at("2026-03-09T00:00:00")) is False


def test_weekday_filter_lists_every_unknown_name():
    with pytest.raises(ConfigError) as caught:
        weekday_filter(["mon", "Tues", "funday"])
    message = str(caught.value)
    assert "'Tues'" in message and "'funday'" in message and "weekday_filter.days = " in message


@pytest.mark.parametrize("days", [[], None, [3]])
def test_weekday_filter_refuses_empty_or_non_names(days):
    with pytest.raises(ConfigError, match=r"weekday_filter\.days = "):
        weekday_filter(days)


# ------------------------------------------------------------------ account entry filters


def test_min_available_margin_pct_boundary_and_zero_equity():
    cond = min_available_margin_pct(80)
    assert cond(FakeSnapshot(equity=10_000, available_margin=8_000)) is True   # exactly 80 %
    assert cond(FakeSnapshot(equity=10_000, available_margin=7_999.99)) is False
    assert cond(FakeSnapshot(equity=0, available_margin=0)) is False
    assert min_available_margin_pct(0)(FakeSnapshot(equity=0, available_margin=0)) is False
    assert min_available_margin_pct(0)(FakeSnapshot(equity=-5, available_margin=10)) is False


def test_max_margin_utilization_boundary_and_zero_equity():
    cond = max_margin_utilization(20)
    assert cond(FakeSnapshot(equity=10_000, initial_margin=2_000)) is True   # exactly 20 %
    assert cond(FakeSnapshot(equity=10_000, initial_margin=2_000.01)) is False
    assert max_margin_utilization(100)(FakeSnapshot(equity=0, initial_margin=0)) is False


def test_min_equity_and_max_account_delta_boundaries():
    assert min_equity(1_000)(FakeSnapshot(equity=1_000)) is True
    assert min_equity(1_000)(FakeSnapshot(equity=999.99)) is False
    assert max_account_delta(0.5)(FakeSnapshot(net_delta=-0.5)) is True
    assert max_account_delta(0.5)(FakeSnapshot(net_delta=0.5001)) is False
    assert max_account_delta(0)(FakeSnapshot(net_delta=0.0)) is True


@pytest.mark.parametrize("factory, value, argument", [
    (min_available_margin_pct, 101, "pct"), (min_available_margin_pct, -1, "pct"),
    (max_margin_utilization, 100.5, "pct"), (min_equity, -1, "usd"),
    (max_account_delta, -0.1, "limit"), (max_account_delta, float("nan"), "limit"),
    (min_equity, "1000", "usd"), (min_equity, True, "usd"),
])
def test_account_filters_validate_arguments(factory, value, argument):
    with pytest.raises(ConfigError) as caught:
        factory(value)
    assert f"{factory.__name__}.{argument} = {value!r}" in str(caught.value)


# ------------------------------------------------------------------ no_existing_position_in


def test_no_existing_position_in_exact_and_patterns():
    holding = FakeSnapshot(positions=(FakePosition("BTCUSD-27MAR26-80000-P", 0.1),
                                      FakePosition("BTCUSD-5FEB26-100000-C", 0.0)))
    assert no_existing_position_in(["BTCUSD-*-P"])(holding) is False
    assert no_existing_position_in(["BTCUSD-27MAR26-80000-P"])(holding) is False
    assert no_existing_position_in(["BTCUSD-27MAR26-8000?-P"])(holding) is False
    assert no_existing_position_in(["BTCUSD-*-C"])(holding) is True           # the call has qty 0
    assert no_existing_position_in(["BTCUSD-27MAR26-80000-C"])(holding) is True
    assert no_existing_position_in(["btcusd-*-p"])(holding) is True           # case-sensitive match
    assert no_existing_position_in("BTCUSD-*")(FakeSnapshot()) is True


def test_no_existing_position_in_refuses_invalid_entries_listing_them():
    with pytest.raises(ConfigError) as caught:
        no_existing_position_in(["BTCUSD-27MAR26-80000-P", "btcusd-27mar26-80000-p", "BTC 90000", 5])
    message = str(caught.value)
    assert "'btcusd-27mar26-80000-p'" in message and "'BTC 90000'" in message and "5" in message
    assert "'BTCUSD-27MAR26-80000-P'," not in message.split("not a symbol or pattern:")[1]
    with pytest.raises(ConfigError, match="must not be empty"):
        no_existing_position_in([])


def test_no_existing_position_in_accepts_unpadded_day_and_perpetual():
    no_existing_position_in(["BTCUSD-5FEB26-80000-C", "BTCUSD", "ETHUSD-*"])


# ------------------------------------------------------------------ PnL exits


def test_profit_target_fires_exactly_at_the_target_with_its_mode():
    cond = profit_target(50, mode="mid")
    trade = FakeTrade(pnl_value=49.99)
    assert cond(FakeSnapshot(), trade) is False
    trade.pnl_value = 50.0
    assert cond(FakeSnapshot(), trade) is True
    assert trade.modes_asked == ["mid", "mid"]
    assert profit_target(50).mode == "fair"


def test_max_loss_fires_at_minus_usd():
    cond = max_loss(100, "MARK")
    assert cond.mode == "mark"
    assert cond(FakeSnapshot(), FakeTrade(pnl_value=-99.99)) is False
    assert cond(FakeSnapshot(), FakeTrade(pnl_value=-100.0)) is True
    assert cond(FakeSnapshot(), FakeTrade(pnl_value=100.0)) is False


def test_pct_exits_use_abs_entry_premium_and_boundaries():
    debit = FakeTrade(entry_premium=-200.0, pnl_value=100.0)   # +50 % of a debit
    credit = FakeTrade(entry_premium=200.0, pnl_value=-200.0)  # -100 % of a credit
    assert profit_target_pct(50)(FakeSnapshot(), debit) is True
    assert profit_target_pct(50.01)(FakeSnapshot(), debit) is False
    assert max_loss_pct(100)(FakeSnapshot(), credit) is True
    assert max_loss_pct(100.01)(FakeSnapshot(), credit) is False


def test_pct_exits_never_fire_with_zero_entry_premium():
    flat = FakeTrade(entry_premium=0.0, pnl_value=1e9)
    assert profit_target_pct(1)(FakeSnapshot(), flat) is False
    flat.pnl_value = -1e9
    assert max_loss_pct(1)(FakeSnapshot(), flat) is False


def test_stale_pnl_propagates_and_counts_as_not_fired_not_as_failure():
    health = ConditionHealth()
    stale = FakeTrade(pnl_value=StaleDataError("mark 20 s old"))
    cond = max_loss(10)
    with pytest.raises(StaleDataError):
        cond(FakeSnapshot(), stale)
    for _ in range(5):
        assert judge_exit(cond, FakeSnapshot(), stale, health=health, strategy="s") is ExitVerdict.UNEVALUABLE
        assert evaluate_exit(cond, FakeSnapshot(), stale, health=health, strategy="s") is False
    assert health.consecutive_failures("s", cond.name) == 0
    assert judge_exit(profit_target_pct(5), FakeSnapshot(), FakeTrade(pnl_value=float("nan"))) \
        is ExitVerdict.UNEVALUABLE


@pytest.mark.parametrize("factory", [profit_target, max_loss, profit_target_pct, max_loss_pct])
@pytest.mark.parametrize("value", [0, -5, float("inf"), None])
def test_pnl_exits_need_a_positive_amount(factory, value):
    with pytest.raises(ConfigError, match="Fix:"):
        factory(value)


@pytest.mark.parametrize("factory", [profit_target, max_loss, profit_target_pct, max_loss_pct])
def test_pnl_exits_refuse_unknown_mode(factory):
    with pytest.raises(ConfigError) as caught:
        factory(10, mode="last")
    assert f"{factory.__name__}.mode = 'last'" in str(caught.value) and "executable" in str(caught.value)


# ------------------------------------------------------------------ time based exits


def test_max_hold_hours_boundary_and_unopened_trade():
    opened = at("2026-03-02T10:00")
    cond = max_hold_hours(1.5)
    assert cond(FakeSnapshot(timestamp=opened + 5399.999), FakeTrade(opened_at=opened)) is False
    assert cond(FakeSnapshot(timestamp=opened + 5400), FakeTrade(opened_at=opened)) is True
    assert cond(FakeSnapshot(timestamp=opened + 1e6), FakeTrade(opened_at=None)) is False
    with pytest.raises(ConfigError, match=r"max_hold_hours\.hours = 0"):
        max_hold_hours(0)


def test_incident_44_time_exit_after_an_afternoon_open_fires_next_day():
    cond = time_exit(16, 0)
    trade = FakeTrade(opened_at=at("2026-03-02T17:00"))
    assert cond(snap_at("2026-03-02T17:00:10"), trade) is False
    assert cond(snap_at("2026-03-02T23:59"), trade) is False
    assert cond(snap_at("2026-03-03T15:59:59"), trade) is False
    assert cond(snap_at("2026-03-03T16:00:00"), trade) is True


def test_time_exit_same_day_when_opened_before_and_strictly_after_when_opened_at_it():
    morning = FakeTrade(opened_at=at("2026-03-02T09:00"))
    assert time_exit(16, 30)(snap_at("2026-03-02T16:29:59"), morning) is False
    assert time_exit(16, 30)(snap_at("2026-03-02T16:30:00"), morning) is True
    exactly = FakeTrade(opened_at=at("2026-03-02T16:30"))
    assert time_exit(16, 30)(snap_at("2026-03-02T16:30:00"), exactly) is False
    assert time_exit(16, 30).deadline(at("2026-03-02T16:30")) == at("2026-03-03T16:30")


def test_time_exit_across_month_end_and_unopened():
    cond = time_exit(0, 5)
    trade = FakeTrade(opened_at=at("2026-03-31T23:00"))
    assert cond.deadline(trade.opened_at) == at("2026-04-01T00:05")
    assert cond(snap_at("2026-04-01T00:05"), FakeTrade(opened_at=None)) is False


@pytest.mark.parametrize("args, argument", [((24,), "hour"), ((-1,), "hour"), ((1, 60), "minute"),
                                            ((16.5,), "hour"), ((16, 1.0), "minute")])
def test_time_exit_validation(args, argument):
    with pytest.raises(ConfigError, match=rf"time_exit\.{argument} = "):
        time_exit(*args)


def test_utc_datetime_exit_naive_is_utc_and_fires_at_or_after():
    cond = utc_datetime_exit(datetime(2026, 3, 5, 8, 0))
    assert cond.name == "utc_datetime_exit(dt=2026-03-05T08:00:00+00:00)"
    assert cond(snap_at("2026-03-05T07:59:59"), FakeTrade()) is False
    assert cond(snap_at("2026-03-05T08:00:00"), FakeTrade()) is True
    eastern = utc_datetime_exit(datetime(2026, 3, 5, 3, 0, tzinfo=timezone(timedelta(hours=-5))))
    assert eastern(snap_at("2026-03-05T08:00:00"), FakeTrade()) is True
    assert eastern(snap_at("2026-03-05T07:59:59"), FakeTrade()) is False


def test_utc_datetime_exit_in_the_past_is_refused_at_start_incident_41():
    cond = utc_datetime_exit(datetime(2026, 3, 5, 8, 0))
    cond.validate_at_start(at("2026-03-05T07:59:59"))
    with pytest.raises(ConfigError) as caught:
        cond.validate_at_start(at("2026-03-05T08:00:01"))
    assert "utc_datetime_exit.dt = '2026-03-05T08:00:00+00:00'" in str(caught.value) and "past" in str(caught.value)
    with pytest.raises(ConfigError, match=r"utc_datetime_exit\.dt = "):
        utc_datetime_exit("2026-03-05")


# ------------------------------------------------------------------ delta and greek exits


def test_account_and_structure_delta_limits_are_strictly_greater():
    assert account_delta_limit(1.0)(FakeSnapshot(net_delta=-1.0), FakeTrade()) is False
    assert account_delta_limit(1.0)(FakeSnapshot(net_delta=-1.0001), FakeTrade()) is True
    assert structure_delta_limit(0.3)(FakeSnapshot(), FakeTrade(delta=0.3)) is False
    assert structure_delta_limit(0.3)(FakeSnapshot(), FakeTrade(delta=-0.31)) is True
    assert judge_exit(structure_delta_limit(0.3), FakeSnapshot(), FakeTrade(delta=None)) is ExitVerdict.UNEVALUABLE
    with pytest.raises(ConfigError, match=r"structure_delta_limit\.limit = -1"):
        structure_delta_limit(-1)


def test_account_delta_gates_are_unevaluable_while_a_position_lacks_its_delta():
    """A position sent without its delta counts 0 in the snapshot's sums; a delta gate must not
    take that 0 for a value (an entry is refused, an exit waits), and evaluates again once the
    delta comes back."""
    blind = FakePosition("ETHUSD-27MAR26-3000-C", 2.0, delta=0.0, missing_greeks=("delta",))
    seen = FakePosition("BTCUSD-27MAR26-90000-C", 0.1, delta=0.03)
    snapshot = FakeSnapshot(net_delta=0.03, positions=(seen, blind))
    health = ConditionHealth()
    assert evaluate_entry(max_account_delta(0.5), snapshot, health=health, strategy="s") is False
    assert judge_exit(account_delta_limit(0.01), snapshot, FakeTrade()) is ExitVerdict.UNEVALUABLE
    with pytest.raises(StaleDataError, match="no delta for ETHUSD-27MAR26-3000-C"):
        max_account_delta(0.5)(snapshot)
    # Gates on another underlying do not add that position, so they still see everything they add.
    assert max_account_delta(0.5, underlying="BTC")(snapshot) is True
    assert account_delta_limit(0.01, underlying="BTC")(snapshot, FakeTrade()) is True
    # A closed position (qty 0) adds nothing, known delta or not.
    flat = FakeSnapshot(net_delta=0.03, positions=(seen, FakePosition(blind.symbol, 0.0, missing_greeks=("delta",))))
    assert max_account_delta(0.5)(flat) is True
    # The delta is back: the gate is evaluated on it again.
    back = FakeSnapshot(net_delta=1.03, positions=(seen, FakePosition(blind.symbol, 2.0, delta=1.0)))
    assert max_account_delta(0.5)(back) is False
    assert judge_exit(account_delta_limit(0.01), back, FakeTrade()) is ExitVerdict.FIRED


def strangle_trade() -> FakeTrade:
    return FakeTrade(legs=(
        FakeLeg(0, 2, 0.5, {"delta": 0.25, "gamma": 0.0001}),   # short call
        FakeLeg(1, 2, 0.5, {"delta": -0.45, "gamma": 0.0002}),  # short put
    ))


def test_leg_greek_limit_contract_scale_any_leg_or_one_leg():
    trade = strangle_trade()
    assert leg_greek_limit("delta", 0.4)(FakeSnapshot(), trade) is True
    assert leg_greek_limit("delta", 0.45)(FakeSnapshot(), trade) is False       # not strictly above
    assert leg_greek_limit("delta", 0.4, leg=0)(FakeSnapshot(), trade) is False
    assert leg_greek_limit("delta", 0.4, leg=1)(FakeSnapshot(), trade) is True


def test_leg_greek_limit_position_scale_signs_and_quantities():
    trade = strangle_trade()
    # put: -1 x 0.5 x -0.45 = +0.225; call: -1 x 0.5 x 0.25 = -0.125
    assert leg_greek_limit("delta", 0.2, scale="position")(FakeSnapshot(), trade) is True
    assert leg_greek_limit("delta", 0.225, scale="position")(FakeSnapshot(), trade) is False
    assert leg_greek_limit("delta", 0.12, leg=0, scale="position")(FakeSnapshot(), trade) is True
    assert leg_greek_limit("delta", 0.125, leg=0, scale="position")(FakeSnapshot(), trade) is False


def test_leg_greek_limit_missing_greek_and_missing_leg():
    trade = strangle_trade()
    assert judge_exit(leg_greek_limit("vega", 1.0), FakeSnapshot(), trade) is ExitVerdict.UNEVALUABLE
    half = FakeTrade(legs=(FakeLeg(0, 1, 1.0, {"delta": 0.9}), FakeLeg(1, 1, 1.0, {})))
    assert leg_greek_limit("delta", 0.5)(FakeSnapshot(), half) is True   # a known breach still fires
    assert judge_exit(leg_greek_limit("delta", 0.5, leg=5), FakeSnapshot(), trade) is ExitVerdict.ERROR


def test_leg_greek_limit_reads_held_option_legs_not_the_hedge_nor_a_closed_leg():
    """A perp hedge has delta 1 by definition and a closed leg keeps its last quote: neither fires
    "any leg's delta above 0.4"; a perp leg named by its index is read as asked."""
    hedged = FakeTrade(legs=(FakeLeg(0, 2, 0.5, {"delta": 0.25}), FakeLeg(1, 2, 0.0, {"delta": -0.9}),
                             FakeLeg(2, 1, 0.2, {"delta": 1.0}, is_perpetual=True)))
    assert leg_greek_limit("delta", 0.4)(FakeSnapshot(), hedged) is False
    assert leg_greek_limit("delta", 0.2)(FakeSnapshot(), hedged) is True            # the held option leg
    assert leg_greek_limit("delta", 0.4, leg=2)(FakeSnapshot(), hedged) is True
    assert leg_greek_limit("delta", 0.4, leg=1)(FakeSnapshot(), hedged) is False     # not held


def test_leg_greek_limit_validation_and_max_leg_index():
    assert leg_greek_limit("Gamma", 0.01).greek == "gamma"
    assert leg_greek_limit("delta", 0.3).max_leg_index is None
    assert leg_greek_limit("delta", 0.3, leg=2).max_leg_index == 2
    assert profit_target(5).max_leg_index is None and time_window(1, 2).max_leg_index is None
    for kwargs, argument in (({"greek": "vanna", "limit": 1}, "greek"), ({"greek": "delta", "limit": -1}, "limit"),
                             ({"greek": "delta", "limit": 1, "leg": -1}, "leg"),
                             ({"greek": "delta", "limit": 1, "leg": 8}, "leg"),
                             ({"greek": "delta", "limit": 1, "leg": 1.0}, "leg"),
                             ({"greek": "delta", "limit": 1, "scale": "notional"}, "scale")):
        with pytest.raises(ConfigError, match=rf"leg_greek_limit\.{argument} = "):
            leg_greek_limit(**kwargs)


# ------------------------------------------------------------------ names, kinds, reprs


def test_every_factory_has_kind_and_name():
    entries = [time_window(9, 17), utc_time_window(time(9), time(10)), weekday_filter(["mon"]),
               min_available_margin_pct(50), min_equity(100), max_account_delta(1),
               max_margin_utilization(60), no_existing_position_in(["BTCUSD-*"])]
    exits = [profit_target(50), max_loss(100), profit_target_pct(50), max_loss_pct(80), max_hold_hours(24),
             time_exit(16), utc_datetime_exit(datetime(2030, 1, 1)), account_delta_limit(1),
             structure_delta_limit(0.3), leg_greek_limit("delta", 0.4)]
    assert {cond.kind for cond in entries} == {"entry"}
    assert {cond.kind for cond in exits} == {"exit"}
    names = [cond.name for cond in entries + exits]
    assert len(set(names)) == len(names)
    for cond in entries + exits:
        assert cond.name.startswith(cond.factory + "(")
        assert repr(cond) == f"<{cond.kind} condition {cond.name}>"
        check_condition(cond, cond.kind, "x[0]")
    assert len(c.ENTRY_FACTORIES) == 8 and len(c.EXIT_FACTORIES) == 10


def test_names_are_exact():
    assert profit_target(50).name == "profit_target(usd=50.0, mode=fair)"
    assert max_loss(100, "executable").name == "max_loss(usd=100.0, mode=executable)"
    assert time_window(22, 2).name == "time_window(start_hour=22, end_hour=2)"
    assert time_exit(16).name == "time_exit(hour=16, minute=0)"
    assert no_existing_position_in(["BTCUSD-*-P"]).name == "no_existing_position_in(symbols=[BTCUSD-*-P])"
    assert leg_greek_limit("theta", 5, leg=1, scale="position").name == \
        "leg_greek_limit(greek=theta, limit=5.0, leg=1, scale=position)"


def test_conditions_are_values():
    assert profit_target(50) == profit_target(50.0, "FAIR")
    assert hash(profit_target(50)) == hash(profit_target(50.0))
    with pytest.raises(AttributeError):
        profit_target(50).usd = 1  # type: ignore[misc]


# ------------------------------------------------------------------ signature checks (incident 21)


def test_exit_shaped_lambda_in_entry_conditions_is_refused():
    with pytest.raises(ConfigError) as caught:
        check_condition(lambda snap, trade: True, "entry", "entry_conditions[0]")
    assert str(caught.value) == ("entry_conditions[0]: <lambda>(snap, trade) takes 2 arguments; entry conditions "
                                 "take (snapshot). Did you put an exit condition here?")


def test_entry_shaped_function_in_exit_conditions_is_refused():
    def calm(snapshot) -> bool:
        return True

    with pytest.raises(ConfigError) as caught:
        check_condition(calm, "exit", "exit_conditions[2]")
    assert str(caught.value) == ("exit_conditions[2]: calm(snapshot) takes 1 argument; exit conditions take "
                                 "(snapshot, trade). Did you put an entry condition here?")


def test_factory_object_of_the_wrong_kind_is_refused():
    with pytest.raises(ConfigError) as caught:
        check_condition(profit_target(50), "entry", "entry_conditions[1]")
    assert "entry_conditions[1]: profit_target(usd=50.0, mode=fair) is an exit condition" in str(caught.value)
    assert "exit_conditions" in str(caught.value)
    with pytest.raises(ConfigError, match="is an entry condition"):
        check_condition(min_equity(5), "exit", "exit_conditions[0]")


def test_signature_check_accepts_defaults_methods_and_callables():
    class Gate:
        def __call__(self, snapshot):
            return True

        def check(self, snapshot, trade):
            return False

    check_condition(lambda s: True, "entry", "e[0]")
    check_condition(lambda s, limit=3: True, "entry", "e[0]")
    check_condition(Gate(), "entry", "e[0]")
    check_condition(Gate().check, "exit", "x[0]")
    check_condition(lambda *args: True, "exit", "x[0]")


@pytest.mark.parametrize("obj, words", [
    (lambda: True, "takes 0 arguments; entry conditions take (snapshot)."),
    (lambda s, t, u: True, "takes 3 arguments"),
    (lambda s, *, extra: True, "requires keyword argument(s) extra"),
    (42, "is not callable"),
])
def test_signature_check_refuses_other_shapes(obj, words):
    with pytest.raises(ConfigError) as caught:
        check_condition(obj, "entry", "entry_conditions[0]")
    assert words in str(caught.value)
    assert "Did you put" not in str(caught.value)


# ------------------------------------------------------------------ safe evaluation and health (incident 22)


def test_entry_that_raises_blocks_logs_tracebacks_and_warns_after_three(caplog):
    health = ConditionHealth()

    def flaky(snapshot):
        raise KeyError("equity")

    caplog.set_level(logging.DEBUG, logger="conditions")
    for _ in range(3):
        assert evaluate_entry(flaky, FakeSnapshot(), health=health, strategy="short_strangle") is False
    tracebacks = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert len(tracebacks) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "short_strangle" in warnings[0].getMessage() and "flaky" in warnings[0].getMessage()
    assert health.consecutive_failures("short_strangle", "flaky") == 3
    assert [f.condition for f in health.unhealthy()] == ["flaky"]


def test_warning_only_once_per_streak_and_reset_on_clean_evaluation(caplog):
    health = ConditionHealth()
    outcomes = iter([ValueError("x")] * 2 + [True] + [ValueError("y")] * 4)

    def sometimes(snapshot):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    caplog.set_level(logging.WARNING, logger="conditions")
    results = [evaluate_entry(sometimes, FakeSnapshot(), health=health, strategy="s") for _ in range(7)]
    assert results == [False, False, True, False, False, False, False]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first streak stopped at 2; the second warns once at its 3rd failure
    assert health.consecutive_failures("s", "sometimes") == 4


def test_non_bool_results_are_errors():
    health = ConditionHealth()
    assert evaluate_entry(lambda s: 1, FakeSnapshot(), health=health, strategy="s") is False
    assert evaluate_entry(lambda s: None, FakeSnapshot(), health=health, strategy="s") is False
    assert judge_exit(lambda s, t: "yes", FakeSnapshot(), FakeTrade(), health=health, strategy="s") \
        is ExitVerdict.ERROR
    assert health.consecutive_failures("s", "<lambda>") == 3


def test_evaluate_entry_passes_true_and_false_through():
    assert evaluate_entry(min_equity(100), FakeSnapshot(equity=100)) is True
    assert evaluate_entry(min_equity(100), FakeSnapshot(equity=99)) is False


def test_exit_errors_are_not_fired_and_alert_after_three():
    alerts: list[tuple[str, str]] = []
    health = ConditionHealth(on_alert=lambda kind, detail: alerts.append((kind, detail)))

    def broken(snapshot, trade):
        raise ZeroDivisionError("boom")

    for _ in range(3):
        assert evaluate_exit(broken, FakeSnapshot(), FakeTrade(), health=health, strategy="condor") is False
    assert len(alerts) == 1 and "condor" in alerts[0][1] and "broken" in alerts[0][1]
    assert judge_exit(profit_target(1), FakeSnapshot(), FakeTrade(pnl_value=2.0), health=health,
                      strategy="condor") is ExitVerdict.FIRED
    assert judge_exit(profit_target(1), FakeSnapshot(), FakeTrade(pnl_value=0.5)) is ExitVerdict.NOT_FIRED


def test_entry_failures_do_not_alert_and_a_failing_alert_sink_is_contained():
    def sink(kind, detail):
        raise RuntimeError("sink down")

    health = ConditionHealth(on_alert=sink)
    for _ in range(3):
        evaluate_entry(lambda s: 1 / 0, FakeSnapshot(), health=health, strategy="s")
    for _ in range(3):
        assert evaluate_exit(lambda s, t: 1 / 0, FakeSnapshot(), FakeTrade(), health=health, strategy="s") is False


def test_clock_conditions_need_a_snapshot_timestamp():
    assert evaluate_entry(time_window(0, 24), FakeSnapshot(timestamp=None)) is False
    with pytest.raises(ConfigError):
        ConditionHealth(threshold=0)


def test_name_override_keeps_two_lambdas_apart():
    health = ConditionHealth()
    for _ in range(2):
        evaluate_entry(lambda s: 1 / 0, FakeSnapshot(), health=health, strategy="s", name="entry_conditions[0]")
        evaluate_entry(lambda s: 1 / 0, FakeSnapshot(), health=health, strategy="s", name="entry_conditions[1]")
    assert health.consecutive_failures("s", "entry_conditions[0]") == 2
    assert health.consecutive_failures("s", "entry_conditions[1]") == 2
    assert health.consecutive_failures("s", "<lambda>") == 0


# ------------------------------------------------------------------ issue 9: percent, not fractions


@pytest.mark.parametrize("factory", [profit_target_pct, max_loss_pct, min_available_margin_pct,
                                     max_margin_utilization])
def test_pct_arguments_below_one_are_refused_unless_marked_as_fractions(factory):
    with pytest.raises(ConfigError) as caught:
        factory(0.3)
    assert "30 means 30 %" in str(caught.value) and "fraction=True" in str(caught.value)
    assert factory(0.3, fraction=True).pct == 30.0
    assert "pct=30.0" in factory(0.3, fraction=True).name
    assert factory(30).name == factory(0.3, fraction=True).name
    with pytest.raises(ConfigError, match=rf"{factory.__name__}\.fraction = 1"):
        factory(30, fraction=1)


def test_zero_keeps_its_meaning_where_it_had_one():
    assert min_available_margin_pct(0).pct == 0.0 and max_margin_utilization(0).pct == 0.0
    assert min_available_margin_pct(0, fraction=True).pct == 0.0
