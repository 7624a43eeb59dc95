"""The simulator's market model: seeded index, listings, quotes, books, faults, persistence.

Covers API.md 13 items 6-9, 19 (delivery average) and 26 (determinism). Every test runs
on fixed simulated instants; nothing sleeps or reads the wall clock.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np
import pytest

from simulator.calendar import date_token, expiry_schedule, parse_symbol
from simulator.chain_pricing import uniforms
from simulator.market import MarketConfig, MarketModel, _stable_seed

MINUTE = 60_000
HOUR = 3_600_000


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=timezone.utc).timestamp()) * 1000


START = utc_ms(2026, 3, 2, 6)          # Monday 06:00 UTC
FIRST_DAILY = utc_ms(2026, 3, 2, 8)    # 2MAR26 expiry


@pytest.fixture
def model() -> MarketModel:
    return MarketModel(MarketConfig(), START)


def symbols_of_expiry(model: MarketModel, expiry: int) -> list[str]:
    return [i.symbol for i in model.instruments() if i.expiry_ms == expiry]


def sample_symbols(model: MarketModel, every: int = 7) -> list[str]:
    return [i.symbol for i in model.instruments()[::every]]


def nearest_atm(model: MarketModel, expiry: int, option_type: str = "C") -> str:
    spot = model.index_price()
    candidates = [i for i in model.instruments() if i.expiry_ms == expiry and i.option_type == option_type]
    return min(candidates, key=lambda i: abs(i.strike - spot)).symbol


def is_on_tick(price: float, tick: float) -> bool:
    return abs(price / tick - round(price / tick)) < 1e-9


# ---------------------------------------------------------------- listings

def test_every_scheduled_expiry_is_listed_at_start(model: MarketModel) -> None:
    assert model.now_ms == START
    assert model.expiries() == [expiry for expiry, _ in expiry_schedule(START)]
    kinds = {expiry: kind for expiry, kind in expiry_schedule(START)}
    for instrument in model.instruments():
        assert instrument.kind == kinds[instrument.expiry_ms]
        assert instrument.listed_ms == START


def test_full_calendar_lists_at_least_1000_options(model: MarketModel) -> None:
    assert len(model.instruments()) >= 1000


def test_instruments_are_consistent_and_sorted(model: MarketModel) -> None:
    instruments = model.instruments()
    keys = [(i.expiry_ms, i.strike, i.option_type) for i in instruments]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for instrument in instruments:
        parsed = parse_symbol(instrument.symbol)
        assert (parsed.base, parsed.expiry_ms, parsed.strike, parsed.option_type) == (
            instrument.base, instrument.expiry_ms, instrument.strike, instrument.option_type)
        assert instrument.strike_token == parsed.strike_token
        assert instrument.tick_size == 1.0 and instrument.min_qty == 0.01
        assert model.instrument(instrument.symbol) == instrument
    calls = {(i.expiry_ms, i.strike) for i in instruments if i.option_type == "C"}
    puts = {(i.expiry_ms, i.strike) for i in instruments if i.option_type == "P"}
    assert calls == puts


def test_strikes_cover_the_index_with_kind_specific_ranges(model: MarketModel) -> None:
    config = model.config
    for expiry, kind in expiry_schedule(START):
        strikes = sorted({i.strike for i in model.instruments() if i.expiry_ms == expiry})
        width = config.strike_range_pct[kind] / 100
        assert strikes[0] <= 90_000 * (1 - width) + config.strike_step[kind]
        assert strikes[-1] >= 90_000 * (1 + width) - config.strike_step[kind]
        assert all(s % config.strike_step["daily"] == 0 for s in strikes)


def test_display_name_and_option_id(model: MarketModel) -> None:
    instrument = model.instruments()[0]
    assert instrument.display_name == instrument.symbol.replace("BTCUSD-", "BTC-")
    ids = [i.option_id for i in model.instruments()]
    assert all(isinstance(x, int) and len(str(x)) == 19 and x < 2**63 for x in ids)
    assert len(set(ids)) == len(ids)
    twin = MarketModel(MarketConfig(seed=99), START)
    assert twin.instrument(instrument.symbol).option_id == instrument.option_id


def test_unknown_symbols(model: MarketModel) -> None:
    assert model.instrument("BTCUSD-2MAR26-1-C") is None
    with pytest.raises(KeyError):
        model.quote("BTCUSD-2MAR26-1-C")
    with pytest.raises(KeyError):
        model.book("nonsense")
    with pytest.raises(KeyError):
        model.is_expired("nonsense")


def test_daily_expires_at_0800_and_a_new_one_is_listed(model: MarketModel) -> None:
    expiring = symbols_of_expiry(model, FIRST_DAILY)
    assert expiring
    model.advance_to(FIRST_DAILY - 1)
    assert not model.is_expired(expiring[0])
    assert model.quote(expiring[0]).mark >= 0
    model.advance_to(FIRST_DAILY)
    assert FIRST_DAILY not in model.expiries()
    assert symbols_of_expiry(model, FIRST_DAILY) == []
    assert model.is_expired(expiring[0])
    assert model.instrument(expiring[0]) is not None        # still known, for settlement
    with pytest.raises(KeyError):
        model.quote(expiring[0])
    with pytest.raises(KeyError):
        model.book(expiring[0])
    new_daily = utc_ms(2026, 3, 5, 8)
    assert new_daily in model.expiries()
    listed = [model.instrument(s) for s in symbols_of_expiry(model, new_daily)]
    assert listed and all(i.listed_ms == FIRST_DAILY and i.kind == "daily" for i in listed)
    assert all(date_token(new_daily) in i.symbol for i in listed)


def test_calendar_keeps_rolling_for_48_hours(model: MarketModel) -> None:
    for hour in range(1, 49):
        model.advance_to(START + hour * HOUR)
        assert model.expiries() == [expiry for expiry, _ in expiry_schedule(model.now_ms)]
        assert len(model.instruments()) >= 1000
    assert len(model.delivery_prices()) == 2  # 2MAR26 and 3MAR26 passed


def test_strikes_are_added_when_the_index_moves_and_never_delisted() -> None:
    path = ((START, 90_000.0), (START + HOUR, 120_000.0))
    model = MarketModel(MarketConfig(scripted_path=path), START)
    daily = utc_ms(2026, 3, 3, 8)
    before = set(symbols_of_expiry(model, daily))
    model.advance_to(START + HOUR)
    after = {model.instrument(s) for s in symbols_of_expiry(model, daily)}
    assert before <= {i.symbol for i in after}
    strikes = sorted({i.strike for i in after})
    assert strikes[-1] >= 120_000 * 1.1 - 500
    new = [i for i in after if i.symbol not in before]
    assert new and all(START < i.listed_ms <= START + HOUR for i in new)
    assert all(b - a == 500 for a, b in zip(strikes, strikes[1:]))  # contiguous grid


# ---------------------------------------------------------------- index

def test_index_starts_at_config_and_moves(model: MarketModel) -> None:
    assert model.index_price() == 90_000.0
    model.advance_to(START + 10 * MINUTE)
    assert model.index_price() != 90_000.0
    assert abs(math.log(model.index_price() / 90_000.0)) < 0.05


def test_advance_to_is_idempotent_for_past_instants(model: MarketModel) -> None:
    model.advance_to(START + HOUR)
    price, state = model.index_price(), model.to_state()
    model.advance_to(START + HOUR)
    model.advance_to(START)
    assert model.now_ms == START + HOUR and model.index_price() == price
    assert model.to_state() == state


def test_scripted_path_interpolates_linearly() -> None:
    path = ((START, 90_000.0), (START + 10 * MINUTE, 100_000.0), (START + 20 * MINUTE, 95_000.0))
    model = MarketModel(MarketConfig(scripted_path=path), START)
    assert model.index_price() == 90_000.0
    model.advance_to(START + 5 * MINUTE)
    assert model.index_price() == pytest.approx(95_000.0)
    model.advance_to(START + 15 * MINUTE)
    assert model.index_price() == pytest.approx(97_500.0)
    model.advance_to(START + HOUR)
    assert model.index_price() == pytest.approx(95_000.0)  # flat after the last point


def test_scripted_path_set_at_run_time_and_cleared(model: MarketModel) -> None:
    model.advance_to(START + MINUTE)
    now = model.now_ms
    model.set_scripted_path([(now, 80_000.0), (now + MINUTE, 81_000.0)])
    assert model.index_price() == 80_000.0
    model.advance_to(now + 30_000)
    assert model.index_price() == pytest.approx(80_500.0)
    model.advance_to(now + MINUTE)
    model.set_scripted_path(None)
    model.advance_to(now + 2 * MINUTE)
    assert model.index_price() != 81_000.0
    assert abs(model.index_price() / 81_000.0 - 1) < 0.01  # the walk continues from the script


def test_freeze_holds_the_index_while_the_walk_continues(model: MarketModel) -> None:
    twin = MarketModel(MarketConfig(), START)
    model.advance_to(START + MINUTE)
    frozen_at = model.index_price()
    model.freeze_index(True)
    assert model.index_frozen
    model.advance_to(START + 30 * MINUTE)
    assert model.index_price() == frozen_at
    assert model.quote(nearest_atm(model, FIRST_DAILY)).index_price == frozen_at
    model.freeze_index(False)
    twin.advance_to(START + 30 * MINUTE)
    assert model.index_price() == twin.index_price() != frozen_at


def test_index_average_is_the_mean_of_grid_points_in_the_window() -> None:
    path = ((START, 90_000.0), (START + 10 * MINUTE, 96_000.0))
    model = MarketModel(MarketConfig(scripted_path=path), START)
    model.advance_to(START + 20 * MINUTE)
    # grid points every second from 0 to 600 s rise linearly: mean = midpoint value
    assert model.index_average(START, START + 10 * MINUTE) == pytest.approx(93_000.0)
    assert model.index_average(START + 10 * MINUTE, START + 20 * MINUTE) == pytest.approx(96_000.0)
    assert model.index_average(START + 1000, START + 1999) == pytest.approx(90_010.0)  # one point
    with pytest.raises(ValueError):
        model.index_average(START + 1500, START + 1600)  # between two grid points
    with pytest.raises(ValueError):
        model.index_average(START + HOUR, START + 2 * HOUR)  # not observed yet
    with pytest.raises(ValueError):
        model.index_average(START + 2 * MINUTE, START + MINUTE)


def test_delivery_price_is_the_30_minute_average_before_expiry(model: MarketModel) -> None:
    model.advance_to(FIRST_DAILY - 10 * MINUTE)
    running = model.estimated_delivery_price(FIRST_DAILY)
    assert running == model.index_average(FIRST_DAILY - 30 * MINUTE, model.now_ms)
    assert model.delivery_price(FIRST_DAILY) is None
    model.advance_to(FIRST_DAILY + MINUTE)
    delivery = model.delivery_price(FIRST_DAILY)
    assert delivery == model.index_average(FIRST_DAILY - 30 * MINUTE, FIRST_DAILY)
    assert model.estimated_delivery_price(FIRST_DAILY) == delivery
    # still answered long after the history window has been trimmed
    model.advance_to(FIRST_DAILY + 5 * HOUR)
    assert model.index_average(FIRST_DAILY - 30 * MINUTE, FIRST_DAILY) == delivery
    assert model.delivery_prices()[FIRST_DAILY] == delivery


def test_delivery_price_survives_one_big_jump_past_expiry() -> None:
    sliced = MarketModel(MarketConfig(), START)
    jumped = MarketModel(MarketConfig(), START)
    for minute in range(1, 12 * 60 + 1):
        sliced.advance_to(START + minute * MINUTE)
    jumped.advance_to(START + 12 * HOUR)
    assert jumped.delivery_price(FIRST_DAILY) == sliced.delivery_price(FIRST_DAILY) is not None


# ---------------------------------------------------------------- determinism

def test_same_seed_gives_same_market_however_time_is_sliced() -> None:
    config = MarketConfig(jump_intensity_per_day=24.0)
    coarse, fine = MarketModel(config, START), MarketModel(config, START)
    target = START + 3 * HOUR + 12_345
    coarse.advance_to(target)
    slices = [1, 999, 1_001, 7_777, 60_000, 123_456, 3_333, 1]
    t, n = START, 0
    while t < target:
        t = min(target, t + slices[n % len(slices)])
        fine.advance_to(t)
        n += 1
    assert n > 100
    assert fine.index_price() == coarse.index_price()
    assert [i.symbol for i in fine.instruments()] == [i.symbol for i in coarse.instruments()]
    for symbol in sample_symbols(coarse):
        assert fine.book(symbol) == coarse.book(symbol)
        assert fine.quote(symbol) == coarse.quote(symbol)
    assert fine.to_state() == coarse.to_state()


def test_different_seeds_differ() -> None:
    first, second = MarketModel(MarketConfig(seed=1), START), MarketModel(MarketConfig(seed=2), START)
    for model in (first, second):
        model.advance_to(START + HOUR)
    assert first.index_price() != second.index_price()
    symbol = nearest_atm(first, utc_ms(2026, 3, 27, 8))
    assert first.book(symbol) != second.book(symbol)


def test_to_state_from_state_round_trip_continues_identically(model: MarketModel) -> None:
    model.advance_to(START + 90 * MINUTE + 500)
    model.set_empty_side("BTCUSD-6MAR26-*-P", "bid")
    state = json.loads(json.dumps(model.to_state()))
    restored = MarketModel.from_state(model.config, state)
    assert restored.now_ms == model.now_ms and restored.index_price() == model.index_price()
    assert restored.to_state() == model.to_state()
    for target in (START + 2 * HOUR, START + 30 * HOUR + 17):  # crosses two expiries
        model.advance_to(target)
        restored.advance_to(target)
        assert restored.index_price() == model.index_price()
        assert restored.instruments() == model.instruments()
        assert restored.delivery_prices() == model.delivery_prices()
        for symbol in sample_symbols(model, every=11):
            assert restored.quote(symbol) == model.quote(symbol)
            assert restored.book(symbol) == model.book(symbol)
    assert restored.to_state() == model.to_state()


def test_from_state_rejects_an_unknown_version(model: MarketModel) -> None:
    state = model.to_state()
    state["state_version"] = 999
    with pytest.raises(ValueError):
        MarketModel.from_state(model.config, state)


# ---------------------------------------------------------------- quotes

def test_quote_fields_are_consistent(model: MarketModel) -> None:
    model.advance_to(START + 17 * MINUTE)
    config = model.config
    for symbol in sample_symbols(model, every=5):
        quote = model.quote(symbol)
        assert quote.symbol == symbol and quote.time_ms == model.now_ms
        assert quote.index_price == model.index_price() and quote.underlying_price > 0
        assert config.iv_min <= quote.iv <= config.iv_max
        assert quote.mark >= 0 and round(quote.mark, 2) == quote.mark
        if quote.bid > 0:
            assert quote.bid < quote.mark < quote.ask
        assert quote.ask > quote.mark
        if quote.bid_iv > 0:
            assert quote.bid_iv < quote.iv
        if quote.ask_iv > 0:
            assert quote.ask_iv > quote.iv
        if symbol.endswith("-C"):
            assert 0 <= quote.delta <= 1 and quote.rho >= 0
        else:
            assert -1 <= quote.delta <= 0 and quote.rho <= 0
        assert quote.gamma >= 0 and quote.vega >= 0 and quote.theta <= 0


def test_mark_values_match_the_quote_whether_or_not_the_books_were_laid_out() -> None:
    """``mark_values`` (what account summaries read, without books) shows the quote's own numbers:
    asked first on one model, after the quote on another at the same instant, the two agree."""
    marks_first, quotes_first = MarketModel(MarketConfig(), START), MarketModel(MarketConfig(), START)
    for model in (marks_first, quotes_first):
        model.advance_to(START + 17 * MINUTE)
    for symbol in sample_symbols(marks_first, every=5):
        early = marks_first.mark_values(symbol)                 # first stage only
        quote = quotes_first.quote(symbol)
        assert early == (quote.mark, quote.delta, quote.gamma, quote.vega, quote.theta, quote.rho)
        assert quotes_first.mark_values(symbol) == early        # read back from the laid-out quote
        assert marks_first.quote(symbol) == quote               # the second stage builds on the first
    with pytest.raises(KeyError):
        marks_first.mark_values("BTCUSD-1JAN20-1000-C")


def test_top_of_book_is_the_books_first_level_whether_or_not_it_was_laid_out() -> None:
    """``top_of_book`` (what the passive engine reads every engine step) is ``book(symbol, 1)``:
    asked before any book on one model and after the books on another, with faults emptying
    sides and options too cheap to have a bid among the symbols."""
    tops_first, books_first = MarketModel(MarketConfig(), START), MarketModel(MarketConfig(), START)
    for model in (tops_first, books_first):
        model.advance_to(START + 29 * MINUTE)
        model.set_empty_side("BTCUSD-6MAR26-*-P", "bid")
        model.set_empty_side("BTCUSD-13MAR26-*-C", "both")
    symbols = sample_symbols(tops_first, every=3)
    bid_sides = set()
    for symbol in symbols:
        top = tops_first.top_of_book(symbol)                      # no book laid out yet
        bids, asks = books_first.book(symbol)
        assert top == (bids[:1], asks[:1]), symbol
        assert books_first.top_of_book(symbol) == top             # read back from the laid-out book
        assert tops_first.book(symbol, 1) == top
        bid_sides.add(bool(top[0]))
    assert bid_sides == {True, False}                             # both kinds were compared
    with pytest.raises(KeyError):
        tops_first.top_of_book("BTCUSD-1JAN20-1000-C")


def test_marks_are_free_of_strike_arbitrage(model: MarketModel) -> None:
    for hours in (0, 1.9, 25, 47):
        model.advance_to(START + int(hours * HOUR))
        for expiry in model.expiries():
            instruments = model.instruments_for_expiry(expiry)
            calls = [model.quote(i.symbol).mark for i in instruments if i.option_type == "C"]
            puts = [model.quote(i.symbol).mark for i in instruments if i.option_type == "P"]
            assert all(a >= b for a, b in zip(calls, calls[1:])), date_token(expiry)
            assert all(a <= b for a, b in zip(puts, puts[1:])), date_token(expiry)


def test_smile_has_a_put_skew_and_wings_above_atm(model: MarketModel) -> None:
    t = 30 / 365
    atm = model.surface_iv(90_000, 90_000, t)
    assert atm == pytest.approx(model.config.atm_vol)
    assert model.surface_iv(70_000, 90_000, t) > model.surface_iv(110_000, 90_000, t) > atm


# ---------------------------------------------------------------- books

def check_book(model: MarketModel, symbol: str) -> None:
    tick = model.config.tick_size
    bids, asks = model.book(symbol)
    quote = model.quote(symbol)
    assert asks, symbol                                   # synthetic liquidity always offers
    assert [p for p, _ in bids] == sorted({p for p, _ in bids}, reverse=True)
    assert [p for p, _ in asks] == sorted({p for p, _ in asks})
    for price, size in bids + asks:
        assert price >= tick and is_on_tick(price, tick)
        assert size >= 0.01 and abs(size * 100 - round(size * 100)) < 1e-9
    if bids:
        assert bids[0][0] < asks[0][0]
        assert (quote.bid, quote.bid_size) == bids[0]
    else:
        assert (quote.bid, quote.bid_size, quote.bid_iv) == (0.0, 0.0, 0.0)
    assert (quote.ask, quote.ask_size) == asks[0]
    assert len(bids) <= model.config.depth_levels and len(asks) <= model.config.depth_levels


def test_book_invariants_over_time(model: MarketModel) -> None:
    for minutes in (0, 3, 61, 600):
        model.advance_to(START + minutes * MINUTE + 250)
        for symbol in sample_symbols(model, every=3):
            check_book(model, symbol)


def test_far_otm_books_have_no_bid(model: MarketModel) -> None:
    cheap = [i.symbol for i in model.instruments() if model.quote(i.symbol).mark < 5.0]
    assert cheap
    for symbol in cheap:
        bids, asks = model.book(symbol)
        assert bids == [] and asks and asks[0][0] >= model.config.tick_size
    rich = [i.symbol for i in model.instruments() if model.quote(i.symbol).mark > 100.0]
    assert all(model.book(symbol)[0] for symbol in rich)


def test_book_depth_argument_truncates(model: MarketModel) -> None:
    symbol = nearest_atm(model, utc_ms(2026, 3, 6, 8))
    bids, asks = model.book(symbol, depth=2)
    assert len(bids) == 2 and len(asks) == 2
    assert model.book(symbol, depth=2) == (model.book(symbol)[0][:2], model.book(symbol)[1][:2])


def test_books_move_between_refresh_buckets(model: MarketModel) -> None:
    model.freeze_index(True)    # even with a still index, the liquidity is redrawn
    symbols = sample_symbols(model, every=13)
    before = [model.book(s) for s in symbols]
    model.advance_to(START + 1000)
    assert [model.book(s) for s in symbols] == before     # same 5-s bucket
    model.advance_to(START + int(model.config.book_refresh_seconds * 1000))
    assert [model.book(s) for s in symbols] != before


def test_books_are_laid_out_from_counter_noise_and_randint_draws(model: MarketModel) -> None:
    """The documented noise: the two spread scales and the two top sizes are splitmix64
    uniforms of (seed, symbol) at the refresh bucket; the deeper gaps and sizes are
    randint()/uniform() draws of a (seed, symbol, bucket) generator. The model computes them
    more cheaply (a whole expiry at once) and must still give exactly these numbers."""
    cfg = model.config
    model.advance_to(START + 7 * MINUTE + 2_500)
    bucket = model.now_ms // round(cfg.book_refresh_seconds * 1000)
    levels = cfg.depth_levels
    checked = 0

    def lot(size: float) -> float:
        return round(max(0.01, math.floor(size / 0.01 + 1e-9) * 0.01), 2)

    for symbol in sample_symbols(model, every=11):
        key = np.array([_stable_seed(cfg.seed, symbol)], dtype=np.uint64)
        bid_u, ask_u, bid_size_u, ask_size_u = (float(row[0]) for row in uniforms(key, bucket, 4))
        scales = 0.8 + 0.45 * bid_u, 0.8 + 0.45 * ask_u
        low, high = cfg.level_size
        rng = random.Random(_stable_seed(cfg.seed, symbol, bucket))
        gaps = [rng.randint(1, 3) for _ in range(2 * levels)]
        deeper = [lot(rng.uniform(low, high)) for _ in range(2 * (levels - 1))]
        bid_lots = [lot(low + (high - low) * bid_size_u), *deeper[:levels - 1]]
        ask_lots = [lot(low + (high - low) * ask_size_u), *deeper[levels - 1:]]
        bids, asks = model.book(symbol)
        assert [size for _, size in bids] == bid_lots[:len(bids)]
        assert [size for _, size in asks] == ask_lots[:len(asks)]
        for side, side_gaps in ((bids, gaps[:levels]), (asks, gaps[levels:])):
            steps = [abs(a - b) for (a, _), (b, _) in zip(side, side[1:])]
            unit = steps[0] / side_gaps[0] if steps else 1.0
            assert steps == [pytest.approx(gap * unit) for gap in side_gaps[:len(steps)]]
        instrument = model.instrument(symbol)
        assert instrument is not None
        draw = model._book_draw(instrument)
        theo, half = draw.theo, draw.half      # the unrounded mark and the half-spread
        if bids:   # the best bid is theo - half * scale rounded down to a tick
            assert theo - half * scales[0] - cfg.tick_size < bids[0][0] <= theo - half * scales[0] + 1e-6
        assert asks[0][0] >= theo + half * scales[1] - 1e-6
        checked += 1
    assert checked > 50


def test_empty_side_fault(model: MarketModel) -> None:
    weekly = utc_ms(2026, 3, 13, 8)
    call, put = nearest_atm(model, weekly, "C"), nearest_atm(model, weekly, "P")
    model.set_empty_side("BTCUSD-13MAR26-*-C", "ask")
    bids, asks = model.book(call)
    quote = model.quote(call)
    assert bids and asks == []
    assert (quote.ask, quote.ask_size, quote.ask_iv) == (0.0, 0.0, 0.0) and quote.bid > 0
    assert model.book(put)[1]
    model.set_empty_side(put, "bid")
    assert model.book(put)[0] == [] and model.quote(put).bid == 0.0
    model.set_empty_side("BTCUSD-13MAR26-*-C", None)
    assert model.book(call)[1] and model.quote(call).ask > 0
    assert model.book(put)[0] == []
    model.set_empty_side("*", None)
    assert model.book(put)[0]
    with pytest.raises(ValueError):
        model.set_empty_side("*", "middle")


def test_tick_size_is_configurable() -> None:
    model = MarketModel(replace(MarketConfig(), tick_size=0.1), START)
    assert model.instruments()[0].tick_size == 0.1
    for symbol in sample_symbols(model, every=17):
        check_book(model, symbol)


def test_config_rejects_an_arbitrage_smile() -> None:
    with pytest.raises(ValueError):
        MarketConfig(smile_curvature=3.0)
    with pytest.raises(ValueError):
        MarketConfig(strike_step={"daily": 500})
