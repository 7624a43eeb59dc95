"""Expiry calendar and option-symbol rules of the simulator (API.md 4, 5; 13 item 6)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from simulator.calendar import (
    MONTHS,
    date_token,
    expiry_ms_for_date,
    expiry_schedule,
    format_symbol,
    parse_symbol,
    raw_expiry_schedule,
)


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=timezone.utc).timestamp()) * 1000


def tokens(schedule: list[tuple[int, str]]) -> list[tuple[str, str]]:
    return [(date_token(expiry), kind) for expiry, kind in schedule]


# ---------------------------------------------------------------- symbols

def test_months_are_upper_case_three_letter_names() -> None:
    assert MONTHS[0] == "JAN" and MONTHS[11] == "DEC" and len(MONTHS) == 12


def test_expiry_is_0800_utc_of_the_symbol_date() -> None:
    assert expiry_ms_for_date(2026, 3, 12) == 1773302400000  # 12MAR26 (API.md 4)
    assert parse_symbol("BTCUSD-12MAR26-64500-P").expiry_ms == 1773302400000


def test_format_does_not_zero_pad_the_day_and_drops_integer_decimals() -> None:
    assert format_symbol("BTC", utc_ms(2026, 2, 5, 8), 80000.0, "C") == "BTCUSD-5FEB26-80000-C"
    assert format_symbol("BTC", utc_ms(2026, 3, 27, 8), 100000, "P") == "BTCUSD-27MAR26-100000-P"
    assert format_symbol("KAS", utc_ms(2024, 5, 31, 8), 0.125, "C") == "KASUSD-31MAY24-0.125-C"


def test_date_token_uses_two_digit_year_and_single_digit_day() -> None:
    assert date_token(utc_ms(2026, 2, 5, 8)) == "5FEB26"
    assert date_token(utc_ms(2023, 6, 2, 8)) == "2JUN23"
    assert date_token(utc_ms(2026, 12, 31, 8)) == "31DEC26"


def test_parse_real_symbols() -> None:
    parsed = parse_symbol("BTCUSD-5FEB26-80000-C")
    assert parsed.base == "BTC"
    assert parsed.expiry_ms == utc_ms(2026, 2, 5, 8)
    assert parsed.strike == 80000.0 and parsed.strike_token == "80000"
    assert parsed.option_type == "C"
    assert parse_symbol("BTCUSD-9JUL26-56000-C").expiry_ms == utc_ms(2026, 7, 9, 8)


def test_parse_accepts_a_zero_padded_day_too() -> None:
    assert parse_symbol("BTCUSD-05FEB26-80000-C").expiry_ms == parse_symbol("BTCUSD-5FEB26-80000-C").expiry_ms


def test_parse_keeps_decimal_strike_token_opaque() -> None:
    parsed = parse_symbol("SOLUSD-13DEC24-1925.00-P")
    assert parsed.strike_token == "1925.00"
    assert parsed.strike == 1925.0
    assert parsed.base == "SOL" and parsed.option_type == "P"


@pytest.mark.parametrize("junk", [
    "",
    "BTCUSD-5FEB26-80000",
    "BTCUSD-5FEB26-80000-C-X",
    "BTC-5FEB26-80000-C",
    "USD-5FEB26-80000-C",
    "BTCUSD-5FOO26-80000-C",
    "BTCUSD-5feb26-80000-C",
    "BTCUSD-31FEB26-80000-C",
    "BTCUSD-123FEB26-80000-C",
    "BTCUSD-5FEB2026-80000-C",
    "BTCUSD-5FEB26-abc-C",
    "BTCUSD-5FEB26-0-C",
    "BTCUSD-5FEB26--80000-C",
    "BTCUSD-5FEB26-80000-X",
    "BTCUSD-5FEB26-80000-c",
])
def test_parse_rejects_junk(junk: str) -> None:
    with pytest.raises(ValueError):
        parse_symbol(junk)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        parse_symbol(None)  # type: ignore[arg-type]


def test_format_rejects_bad_parts() -> None:
    with pytest.raises(ValueError):
        format_symbol("BTC", utc_ms(2026, 2, 5, 8), 80000, "X")
    with pytest.raises(ValueError):
        format_symbol("BTC", utc_ms(2026, 2, 5, 8), 0, "C")


def test_symbols_round_trip_for_a_whole_schedule() -> None:
    for expiry, _ in expiry_schedule(utc_ms(2026, 3, 2, 6)):
        for strike in (500.0, 64500.0, 100000.0):
            for option_type in ("C", "P"):
                symbol = format_symbol("BTC", expiry, strike, option_type)
                parsed = parse_symbol(symbol)
                assert (parsed.expiry_ms, parsed.strike, parsed.option_type) == (expiry, strike, option_type)
                assert format_symbol(parsed.base, parsed.expiry_ms, parsed.strike, parsed.option_type) == symbol


# ---------------------------------------------------------------- schedule

def test_schedule_on_a_monday_morning() -> None:
    schedule = expiry_schedule(utc_ms(2026, 3, 2, 6))  # Monday 06:00 UTC
    assert tokens(schedule) == [
        ("2MAR26", "daily"), ("3MAR26", "daily"), ("4MAR26", "daily"),
        ("6MAR26", "weekly"), ("13MAR26", "weekly"), ("20MAR26", "weekly"),
        ("27MAR26", "quarterly"),  # also the March monthly: the longer-lived label wins
        ("24APR26", "monthly"), ("29MAY26", "monthly"),
        ("26JUN26", "quarterly"), ("25SEP26", "quarterly"), ("25DEC26", "quarterly"),
    ]


def test_schedule_is_sorted_unique_strictly_future_and_at_0800() -> None:
    for now in (utc_ms(2026, 3, 2, 6), utc_ms(2026, 3, 6, 8), utc_ms(2026, 12, 25, 9, 30)):
        schedule = expiry_schedule(now)
        expiries = [expiry for expiry, _ in schedule]
        assert expiries == sorted(set(expiries))
        assert all(expiry > now for expiry in expiries)
        assert all((expiry - utc_ms(2026, 1, 1, 8)) % 86_400_000 == 0 for expiry in expiries)


def test_the_daily_expiring_at_0800_leaves_the_schedule_at_0800() -> None:
    before = tokens(expiry_schedule(utc_ms(2026, 3, 2, 8) - 1))
    at = tokens(expiry_schedule(utc_ms(2026, 3, 2, 8)))
    assert ("2MAR26", "daily") in before and ("5MAR26", "daily") not in before
    assert ("2MAR26", "daily") not in at and ("5MAR26", "daily") in at
    assert [kind for _, kind in at].count("daily") == 3


def test_friday_daily_is_labelled_weekly() -> None:
    schedule = tokens(expiry_schedule(utc_ms(2026, 3, 6, 6)))  # Friday before expiry
    assert schedule[:3] == [("6MAR26", "weekly"), ("7MAR26", "daily"), ("8MAR26", "daily")]
    raw = tokens(raw_expiry_schedule(utc_ms(2026, 3, 6, 6)))
    assert ("6MAR26", "daily") in raw and ("6MAR26", "weekly") in raw


def test_monthlies_include_this_month_only_while_ahead() -> None:
    ahead = [date_token(e) for e, k in raw_expiry_schedule(utc_ms(2026, 3, 27, 7)) if k == "monthly"]
    passed = [date_token(e) for e, k in raw_expiry_schedule(utc_ms(2026, 3, 27, 9)) if k == "monthly"]
    assert ahead == ["27MAR26", "24APR26", "29MAY26"]
    assert passed == ["24APR26", "29MAY26", "26JUN26"]


def test_quarterlies_roll_over_the_year_end() -> None:
    quarterlies = [date_token(e) for e, k in raw_expiry_schedule(utc_ms(2026, 12, 25, 9)) if k == "quarterly"]
    assert quarterlies == ["26MAR27", "25JUN27", "24SEP27", "31DEC27"]


def test_schedule_rolls_day_by_day_keeping_the_next_three_days_listed() -> None:
    now = utc_ms(2026, 3, 2, 6)
    previous = {expiry for expiry, _ in expiry_schedule(now)}
    for day in range(1, 11):
        now += 86_400_000
        expiries = {expiry for expiry, _ in expiry_schedule(now)}
        next_three = {utc_ms(2026, 3, 2, 8) + (day + i) * 86_400_000 for i in range(3)}
        assert next_three <= expiries                 # a daily (or longer) for each of them
        assert min(previous) not in expiries          # yesterday's first expiry is gone
        assert max(expiries) >= max(previous)         # the far end never shrinks
        previous = expiries
