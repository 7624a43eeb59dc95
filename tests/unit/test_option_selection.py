"""Pure tests of option_selection: hand-built snapshots, a fake market, no network."""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from clock import SimulatedClock
from coincall_payloads import Instrument, OptionRow
from errors import ConfigError, SelectionError
from market_data import ChainSnapshot
from option_selection import (
    LegSpec,
    OptionQuery,
    ResolvedLeg,
    SelectedOption,
    Side,
    butterfly,
    find_option,
    iron_condor,
    resolve_legs,
    select_option,
    straddle,
    strangle,
)
from tests.unit.sane_quotes import fair_quote

MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()


def ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=timezone.utc).timestamp()


NOW = ts(2026, 3, 2, 6)                     # Monday 06:00 UTC
E0 = int(ts(2026, 3, 2, 8) * 1000)          # today 08:00 (dte 0, 2 h away)
E1 = int(ts(2026, 3, 3, 8) * 1000)          # dte 1
E4 = int(ts(2026, 3, 6, 8) * 1000)          # dte 4
E25 = int(ts(2026, 3, 27, 8) * 1000)        # dte 25
ALL_EXPIRIES = (E0, E1, E4, E25)
STRIKES = tuple(range(80_000, 100_001, 2_000))
INDEX = 90_000.0


def symbol_for(expiry_ms: int, strike: float, option_type: str) -> str:
    day = datetime.fromtimestamp(expiry_ms / 1000, tz=timezone.utc)
    return f"BTCUSD-{day.day}{MONTHS[day.month - 1]}{day.year % 100:02d}-{int(strike)}-{option_type}"


def model_delta(option_type: str, strike: float, index: float = INDEX) -> float:
    call = min(0.99, max(0.01, 0.5 - (strike - index) / 40_000))
    return round(call if option_type == "C" else call - 1.0, 6)


def make_row(expiry_ms: int, strike: float, option_type: str, **changes) -> OptionRow:
    bid, ask, mark = fair_quote(option_type, strike, expiry_ms, INDEX + 50, NOW)
    row = OptionRow(
        symbol=symbol_for(expiry_ms, strike, option_type), option_type=option_type, strike=float(strike),
        expiry_ms=expiry_ms, bid=bid, ask=ask, bid_size=1.0, ask_size=1.0,
        mark=mark, mark_iv=0.5,
        bid_iv=0.49, ask_iv=0.51, delta=model_delta(option_type, strike), gamma=0.0001, vega=10.0,
        theta=-5.0, rho=0.1, underlying_price=INDEX + 50, as_of=NOW,
    )
    return replace(row, **changes)


def make_instrument(row: OptionRow, active: bool = True) -> Instrument:
    return Instrument(symbol=row.symbol, base="BTC", strike=row.strike, option_type=row.option_type,
                      expiry_ms=row.expiry_ms, tick_size=1.0, min_qty=0.01, is_active=active)


def make_snapshot(expiries=ALL_EXPIRIES, strikes=STRIKES, index: float = INDEX, rows=None,
                  changes: dict | None = None, inactive: set | None = None) -> ChainSnapshot:
    """A snapshot with calls and puts on every strike; ``changes`` patches rows by symbol."""
    if rows is None:
        rows = [make_row(e, k, t) for e in expiries for k in strikes for t in ("C", "P")]
        rows = [replace(r, delta=model_delta(r.option_type, r.strike, index)) for r in rows]
    changes = changes or {}
    rows = [replace(r, **changes.get(r.symbol, {})) for r in rows]
    inactive = inactive or set()
    instruments = {r.symbol: make_instrument(r, r.symbol not in inactive) for r in rows}
    return ChainSnapshot(index_price=index, as_of=NOW, rows=tuple(rows), instruments=instruments)


class FakeMarket:
    """Stands in for MarketData: serves one prepared snapshot and records the calls."""

    def __init__(self, snapshot: ChainSnapshot, now: float = NOW) -> None:
        self.snapshot = snapshot
        self.clock = SimulatedClock(start=now, speed=0)
        self.snapshot_calls: list[list[int]] = []
        self.instrument_calls = 0

    def instruments(self, base: str = "BTC") -> list[Instrument]:
        self.instrument_calls += 1
        return list(self.snapshot.instruments.values())

    def chain_snapshot(self, expiries, *, underlying: str | None = None,
                       max_build_seconds: float = 5.0) -> ChainSnapshot:
        wanted = sorted(set(expiries))
        self.snapshot_calls.append(wanted)
        rows = tuple(r for r in self.snapshot.rows if r.expiry_ms in wanted)
        return ChainSnapshot(self.snapshot.index_price, self.snapshot.as_of, rows, self.snapshot.instruments)


def leg(option_type="C", side=2, qty=0.1, strike=None, expiry=None) -> LegSpec:
    strike = strike if strike is not None else {"type": "closestStrike"}
    if expiry is None:
        return LegSpec(option_type, side, qty, strike)
    return LegSpec(option_type, side, qty, strike, expiry)


def resolve_one(spec: LegSpec, snapshot: ChainSnapshot | None = None, now: float = NOW) -> ResolvedLeg:
    market = FakeMarket(snapshot or make_snapshot(), now)
    return resolve_legs([spec], market, now=now)[0]


# ------------------------------------------------------------------ LegSpec validation
class TestLegSpecValidation:
    def test_valid_spec_normalises_side_to_enum(self):
        spec = LegSpec("C", 2, 0.1, {"type": "delta", "value": 0.25})
        assert spec.side is Side.SELL and spec.side == 2
        assert spec.expiry_criteria == {"dte": "next"} and spec.underlying == "BTC"

    def test_side_enum_accepted(self):
        assert LegSpec("P", Side.BUY, 0.01, {"type": "closestStrike", "value": 0}).side == 1

    @pytest.mark.parametrize("qty", [0, 0.005, 0.015, -0.1, True, "0.1", float("nan")])
    def test_bad_qty_names_field(self, qty):
        with pytest.raises(ConfigError, match="qty"):
            LegSpec("C", 1, qty, {"type": "closestStrike"})

    @pytest.mark.parametrize("qty", [0.01, 0.07, 1.23, 5])
    def test_good_qty(self, qty):
        assert LegSpec("C", 1, qty, {"type": "closestStrike"}).qty == pytest.approx(qty)

    @pytest.mark.parametrize("side", [0, 3, "1", True, None])
    def test_bad_side(self, side):
        with pytest.raises(ConfigError, match="side"):
            LegSpec("C", side, 0.1, {"type": "closestStrike"})

    @pytest.mark.parametrize("option_type", ["c", "CALL", "X", None])
    def test_bad_option_type(self, option_type):
        with pytest.raises(ConfigError, match="option_type"):
            LegSpec(option_type, 1, 0.1, {"type": "closestStrike"})

    def test_unknown_strike_key_lists_allowed(self):
        with pytest.raises(ConfigError, match=r"strike_criteria.*'valeu'.*allowed keys: type, value"):
            LegSpec("C", 1, 0.1, {"type": "delta", "valeu": 0.2})

    def test_unknown_strike_type_lists_types(self):
        with pytest.raises(ConfigError, match=r"closestStrike.*spotdistance%.*offset"):
            LegSpec("C", 1, 0.1, {"type": "atm"})

    def test_unknown_expiry_key_lists_allowed(self):
        with pytest.raises(ConfigError, match=r"expiry_criteria.*'days'.*allowed keys: dte, dte_min"):
            LegSpec("C", 1, 0.1, {"type": "closestStrike"}, {"days": 3})

    @pytest.mark.parametrize("expiry", [
        {"dte": -1}, {"dte": "soon"}, {"dte": 1.5}, {"dte": "next", "dte_max": 3},
        {"dte": 3, "dte_min": 5, "dte_max": 2}, {"symbol": "32MAR26"}, {"symbol": "5FOO26"},
        {"min_days": 5, "max_days": 1}, {"target": "middle"}, {"dte": 1, "symbol": "5FEB26"}, {},
        "next",
    ])
    def test_bad_expiry_criteria(self, expiry):
        with pytest.raises(ConfigError, match="expiry_criteria"):
            LegSpec("C", 1, 0.1, {"type": "closestStrike"}, expiry)

    @pytest.mark.parametrize("option_type,value", [("C", -0.2), ("C", 1.0), ("P", 0.25), ("P", -1.0), ("C", 0)])
    def test_delta_sign_checked(self, option_type, value):
        with pytest.raises(ConfigError, match=r"strike_criteria\['value'\]"):
            LegSpec(option_type, 1, 0.1, {"type": "delta", "value": value})

    def test_strike_value_types_checked(self):
        with pytest.raises(ConfigError, match="value"):
            LegSpec("C", 1, 0.1, {"type": "strike", "value": "90000"})
        with pytest.raises(ConfigError, match="from_leg"):
            LegSpec("C", 1, 0.1, {"type": "offset", "from_leg": "0", "value": 1000})

    def test_legacy_spotdistance_key_accepted(self):
        spec = LegSpec("C", 1, 0.1, {"type": "spotdistance %", "value": 5})
        assert spec.strike_criteria["type"] == "spotdistance%"

    def test_offset_leg_refuses_own_expiry(self):
        with pytest.raises(ConfigError, match="offset leg"):
            LegSpec("C", 1, 0.1, {"type": "offset", "from_leg": 0, "value": 1000}, {"dte": 1})

    def test_option_query_type_must_match(self):
        query = find_option("P", delta={"min": -0.3, "max": -0.2})
        with pytest.raises(ConfigError, match="option_type"):
            LegSpec("C", 1, 0.1, query)

    def test_option_query_refuses_expiry_criteria(self):
        query = find_option("C", delta={"target": 0.3})
        with pytest.raises(ConfigError, match="expiry_criteria"):
            LegSpec("C", 1, 0.1, query, {"dte": 1})
        assert LegSpec("C", 1, 0.1, query).strike_criteria is query

    def test_compound_validated(self):
        with pytest.raises(ConfigError, match="rank_by"):
            LegSpec("C", 1, 0.1, {"type": "compound", "delta": {"min": 0.1, "max": 0.2}, "rank_by": "best"})
        with pytest.raises(ConfigError, match="'foo'"):
            LegSpec("C", 1, 0.1, {"type": "compound", "strike": {"foo": 1}})

    def test_criteria_dict_is_copied(self):
        criteria = {"type": "delta", "value": 0.25}
        spec = LegSpec("C", 1, 0.1, criteria)
        criteria["value"] = 0.9
        assert spec.strike_criteria["value"] == 0.25


# ------------------------------------------------------------------ expiry criteria
class TestExpiryCriteria:
    def expiry_of(self, expiry, now=NOW, snapshot=None):
        return resolve_one(leg(expiry=expiry), snapshot, now).contract.expiry_ms

    def test_next_is_earliest_selectable(self):
        assert self.expiry_of({"dte": "next"}) == E0

    def test_next_skips_expiry_inside_guard(self):
        # 07:30: today's 08:00 expiry is 30 min away (< 60 min guard) -> tomorrow
        assert self.expiry_of({"dte": "next"}, now=ts(2026, 3, 2, 7, 30)) == E1

    def test_next_skips_inactive_expiry(self):
        snap = make_snapshot()
        inactive = {r.symbol for r in snap.rows if r.expiry_ms == E0}
        assert self.expiry_of({"dte": "next"}, snapshot=make_snapshot(inactive=inactive)) == E1

    def test_dte_exact(self):
        assert self.expiry_of({"dte": 4}) == E4
        assert self.expiry_of({"dte": 0}) == E0

    def test_dte_exact_missing_lists_available(self):
        with pytest.raises(SelectionError, match=r"available dtes: \[0, 1, 4, 25\]"):
            self.expiry_of({"dte": 7})

    def test_dte_window_nearest(self):
        assert self.expiry_of({"dte": 7, "dte_min": 2, "dte_max": 30}) == E4
        assert self.expiry_of({"dte": 20, "dte_min": 2}) == E25

    def test_dte_window_tie_goes_earlier(self):
        # dte 1 and dte 3 are both 1 day from the wanted 2
        e3 = int(ts(2026, 3, 5, 8) * 1000)
        snap = make_snapshot(expiries=(E1, e3))
        assert self.expiry_of({"dte": 2, "dte_min": 0, "dte_max": 10}, snapshot=snap) == E1

    def test_dte_window_empty_raises(self):
        with pytest.raises(SelectionError, match="available dtes"):
            self.expiry_of({"dte": 10, "dte_min": 5, "dte_max": 20})

    def test_dte_counts_calendar_days(self):
        # at 23:00 the next day's 08:00 expiry is 9 h away but dte 1
        later = ts(2026, 3, 2, 23)
        assert self.expiry_of({"dte": 1}, now=later) == E1

    @pytest.mark.parametrize("token", ["6MAR26", "06MAR26"])
    def test_symbol_token(self, token):
        assert self.expiry_of({"symbol": token}) == E4

    def test_symbol_token_missing(self):
        with pytest.raises(SelectionError, match="28MAR26"):
            self.expiry_of({"symbol": "28MAR26"})

    def test_days_window_targets(self):
        window = {"min_days": 0.5, "max_days": 30}
        assert self.expiry_of({**window, "target": "near"}) == E1
        assert self.expiry_of(window) == E1
        assert self.expiry_of({**window, "target": "far"}) == E25
        # midpoint 15.25 days: E4 is ~4.08 d (11.2 away), E25 ~25.08 d (9.8 away)
        assert self.expiry_of({**window, "target": "mid"}) == E25
        assert self.expiry_of({"min_days": 0, "max_days": 8, "target": "mid"}) == E4

    def test_days_window_mid_tie_goes_earlier(self):
        # E1 is 26 h away (1.0833 d), E4 98 h (4.0833 d): midpoint 2.5833 is equidistant
        assert self.expiry_of({"min_days": 1.0833333333333333, "max_days": 4.083333333333333,
                               "target": "mid"}) == E1

    def test_days_window_empty(self):
        with pytest.raises(SelectionError, match="between 40 and 50 days"):
            self.expiry_of({"min_days": 40, "max_days": 50})


# ------------------------------------------------------------------ strike criteria
class TestStrikeCriteria:
    def strike_of(self, option_type, strike, side=2, snapshot=None):
        return resolve_one(leg(option_type, side, strike=strike, expiry={"dte": 1}), snapshot).contract.strike

    def test_delta_call_and_put(self):
        # call delta 0.5 - (K-90k)/40k: 0.25 -> K=100k; put -0.25 -> K=80k
        assert self.strike_of("C", {"type": "delta", "value": 0.25}) == 100_000
        assert self.strike_of("P", {"type": "delta", "value": -0.25}) == 80_000
        assert self.strike_of("C", {"type": "delta", "value": 0.4}) == 94_000

    def test_delta_tie_goes_to_lower_strike(self):
        # 0.425 sits between 92k (0.45) and 94k (0.40)
        assert self.strike_of("C", {"type": "delta", "value": 0.425}) == 92_000

    def test_delta_skips_rows_without_delta(self):
        sym = symbol_for(E1, 94_000, "C")
        snap = make_snapshot(changes={sym: {"delta": None}})
        # 92k (0.45) and 96k (0.35) are now equally near 0.40 -> lower strike
        assert self.strike_of("C", {"type": "delta", "value": 0.4}, snapshot=snap) == 92_000

    def test_closest_strike_value_and_atm(self):
        assert self.strike_of("C", {"type": "closestStrike", "value": 85_100}) == 86_000
        assert self.strike_of("P", {"type": "closestStrike", "value": 0}) == 90_000
        assert self.strike_of("P", {"type": "closestStrike"}) == 90_000
        # index 91,000 is equidistant from 90k and 92k -> lower strike
        assert self.strike_of("C", {"type": "closestStrike"}, snapshot=make_snapshot(index=91_000)) == 90_000

    @pytest.mark.parametrize("insane", [
        {"mark": 0.0},                                    # no mark
        {"bid": 9_000.0, "ask": 9_100.0},                 # sides far above the option's worth
        {"bid": 1_500.0, "ask": 1_400.0},                 # crossed
    ], ids=["zero-mark", "sides-outside-band", "crossed"])
    def test_an_insane_row_is_never_chosen_the_nearest_believable_one_is(self, insane):
        atm = symbol_for(E1, 90_000, "P")
        snap = make_snapshot(changes={atm: insane})
        assert self.strike_of("P", {"type": "closestStrike"}) == 90_000
        assert self.strike_of("P", {"type": "closestStrike"}, snapshot=snap) == 88_000   # tie 88k/92k: lower

    def test_a_strike_asked_by_value_whose_row_is_insane_is_no_selection(self):
        snap = make_snapshot(changes={symbol_for(E1, 86_000, "C"): {"mark": 0.0}})
        with pytest.raises(SelectionError, match="no selectable option"):
            resolve_one(leg("C", strike={"type": "strike", "value": 86_000}, expiry={"dte": 1}), snap)

    def test_atm_uses_index_not_underlying_price(self):
        snap = make_snapshot(index=93_900)  # rows carry underlying_price 90,050
        assert self.strike_of("C", {"type": "closestStrike"}, snapshot=snap) == 94_000

    @pytest.mark.parametrize("key", ["spotdistance%", "spotdistance %"])
    def test_spot_distance(self, key):
        # 90,000 * 1.05 = 94,500 -> 94k; -10% -> 81,000 -> tie 80k/82k -> 80k
        assert self.strike_of("C", {"type": key, "value": 5}) == 94_000
        assert self.strike_of("P", {"type": key, "value": -10}) == 80_000

    def test_exact_strike(self):
        assert self.strike_of("C", {"type": "strike", "value": 96_000}) == 96_000

    def test_exact_strike_absent(self):
        with pytest.raises(SelectionError, match="leg 0"):
            self.strike_of("C", {"type": "strike", "value": 95_000})

    def test_compound_criteria(self):
        strike = {"type": "compound", "strike": {"above_atm": True}, "delta": {"min": 0.3, "max": 0.4}}
        # candidates 94k (0.40), 96k (0.35), 98k (0.30); delta_mid 0.35 -> 96k
        assert self.strike_of("C", strike) == 96_000

    def test_option_query_as_criteria_uses_its_own_expiry(self):
        query = find_option("C", expiry={"dte": 4}, strike={"above_atm": True}, rank_by="strike_atm")
        resolved = resolve_one(LegSpec("C", 2, 0.1, query))
        assert resolved.contract.expiry_ms == E4 and resolved.contract.strike == 92_000


# ------------------------------------------------------------------ selectable rows
class TestSelectableRows:
    def test_inactive_row_skipped(self):
        snap = make_snapshot(inactive={symbol_for(E1, 90_000, "C")})
        r = resolve_one(leg("C", 2, strike={"type": "closestStrike"}, expiry={"dte": 1}), snap)
        assert r.contract.strike == 88_000

    def test_buy_leg_needs_ask_sell_leg_needs_bid(self):
        sym = symbol_for(E1, 90_000, "C")
        no_ask = make_snapshot(changes={sym: {"ask": 0.0, "ask_size": 0.0}})
        no_bid = make_snapshot(changes={sym: {"bid": 0.0, "bid_size": 0.0}})
        atm = {"type": "closestStrike"}
        assert resolve_one(leg("C", 1, strike=atm, expiry={"dte": 1}), no_ask).contract.strike == 88_000
        assert resolve_one(leg("C", 2, strike=atm, expiry={"dte": 1}), no_ask).contract.strike == 90_000
        assert resolve_one(leg("C", 2, strike=atm, expiry={"dte": 1}), no_bid).contract.strike == 88_000
        assert resolve_one(leg("C", 1, strike=atm, expiry={"dte": 1}), no_bid).contract.strike == 90_000

    def test_min_minutes_below_exchange_halt_refused(self):
        with pytest.raises(ConfigError, match="min_minutes_to_expiry"):
            resolve_legs([leg()], FakeMarket(make_snapshot()), now=NOW, min_minutes_to_expiry=10)

    def test_min_minutes_configurable(self):
        market = FakeMarket(make_snapshot())
        legs = resolve_legs([leg()], market, now=NOW, min_minutes_to_expiry=180)
        assert legs[0].contract.expiry_ms == E1


# ------------------------------------------------------------------ find_option pipeline
def row43_snapshot() -> ChainSnapshot:
    rows = [make_row(E1, k, "C", delta=d) for k, d in ((80_000, 0.8), (88_000, 0.58), (92_000, 0.42))]
    return make_snapshot(rows=rows)


class TestFindOption:
    def pick(self, snapshot=None, option_type="C", **kwargs):
        query = find_option(option_type, expiry={"dte": 1}, **kwargs)
        assert isinstance(query, OptionQuery)
        chosen = select_option(snapshot or make_snapshot(), query, now=NOW)
        return None if chosen is None else chosen.strike

    @pytest.mark.parametrize("rank_by,strike", [("strike_itm", 80_000), ("strike_atm", 88_000), ("strike_otm", 92_000)])
    def test_incident_43_strike_itm_ranks_the_deepest_itm_first(self, rank_by, strike):
        assert self.pick(row43_snapshot(), rank_by=rank_by) == strike

    def test_itm_on_puts_and_least_otm_when_none_itm(self):
        assert self.pick(option_type="P", rank_by="strike_itm") == 100_000
        assert self.pick(option_type="P", rank_by="strike_otm") == 80_000
        assert self.pick(strike={"above_atm": True}, rank_by="strike_itm") == 92_000

    def test_default_rank_is_atm(self):
        assert find_option("C").rank_by == "strike_atm"
        assert find_option("C", delta={"min": 0.1, "max": 0.3}).rank_by == "delta_mid"
        assert find_option("C", delta={"target": 0.3}).rank_by == "delta_target"
        assert find_option("C", delta={"min": 0.1, "max": 0.3, "target": 0.12}).rank_by == "delta_mid"

    def test_below_and_above_atm(self):
        assert self.pick(strike={"below_atm": True}) == 88_000
        assert self.pick(strike={"above_atm": True}) == 92_000
        # strictly: a strike equal to the index is neither
        assert self.pick(strike={"above_atm": True, "max_strike": 90_000}) is None

    def test_both_atm_filters_refused(self):
        with pytest.raises(ConfigError, match="below_atm"):
            find_option("C", strike={"below_atm": True, "above_atm": True})

    def test_strike_bounds_inclusive(self):
        assert self.pick(strike={"min_strike": 94_000, "max_strike": 96_000}) == 94_000
        assert self.pick(strike={"min_strike": 94_000, "max_strike": 96_000}, rank_by="strike_otm") == 96_000

    def test_distance_pct_bounds(self):
        # distance of 96k is 6.67%, of 84k 6.67% -> tie -> lower strike
        assert self.pick(strike={"min_distance_pct": 6, "max_distance_pct": 7}) == 84_000
        assert self.pick(strike={"min_distance_pct": 11.0, "max_distance_pct": 11.2}, rank_by="strike_otm") == 100_000

    def test_otm_pct_bounds_calls_and_puts(self):
        # calls: otm in [4, 7] -> 94k (4.44), 96k (6.67)
        assert self.pick(strike={"min_otm_pct": 4, "max_otm_pct": 7}) == 94_000
        # puts: otm in [4, 7] -> 86k (4.44), 84k (6.67)
        assert self.pick(option_type="P", strike={"min_otm_pct": 4, "max_otm_pct": 7}, rank_by="strike_otm") == 84_000
        # negative = ITM
        assert self.pick(strike={"max_otm_pct": -5}, rank_by="strike_atm") == 84_000

    def test_delta_filter_and_mid(self):
        # calls 0.30..0.40 -> 94k .40, 96k .35, 98k .30 ; mid .35 -> 96k
        assert self.pick(delta={"min": 0.3, "max": 0.4}) == 96_000
        assert self.pick(delta={"min": 0.3, "max": 0.4}, rank_by="strike_atm") == 94_000
        assert self.pick(option_type="P", delta={"min": -0.4, "max": -0.3}) == 84_000

    def test_delta_target(self):
        assert self.pick(delta={"target": 0.2}) == 100_000
        assert self.pick(delta={"target": 0.44}) == 92_000

    def test_delta_ranking_skips_rows_without_delta(self):
        sym = symbol_for(E1, 96_000, "C")
        snap = make_snapshot(changes={sym: {"delta": None}})
        # mid 0.35: 94k (0.40) and 98k (0.30) tie -> lower strike
        assert self.pick(snap, delta={"min": 0.3, "max": 0.4}) == 94_000

    def test_no_match_returns_none_and_logs_counts(self, caplog):
        with caplog.at_level(logging.DEBUG, logger="option_selection"):
            assert self.pick(delta={"min": 0.995, "max": 0.999}) is None
        assert "candidates: 11" in caplog.text and "delta filter: 0" in caplog.text

    @pytest.mark.parametrize("kwargs,field", [
        ({"rank_by": "best"}, "rank_by"),
        ({"rank_by": "delta_mid", "delta": {"min": 0.1}}, "delta_mid"),
        ({"rank_by": "delta_target"}, "delta_target"),
        ({"delta": {"min": 0.4, "max": 0.2}}, "min"),
        ({"delta": {"min": -0.4}}, "delta"),
        ({"delta": {"tgt": 0.4}}, "tgt"),
        ({"strike": {"min_strike": "1"}}, "min_strike"),
        ({"strike": {"near_atm": True}}, "near_atm"),
        ({"expiry": {"dte": "later"}}, "expiry"),
    ])
    def test_config_errors_name_the_field(self, kwargs, field):
        with pytest.raises(ConfigError, match=field):
            find_option("C", **kwargs)

    def test_put_delta_bounds_must_be_negative(self):
        with pytest.raises(ConfigError, match="puts"):
            find_option("P", delta={"min": 0.2, "max": 0.3})

    def test_selected_option_fields(self):
        query = find_option("P", expiry={"dte": 1}, delta={"target": -0.25})
        chosen = select_option(make_snapshot(), query, now=NOW)
        assert isinstance(chosen, SelectedOption)
        assert chosen.symbol == "BTCUSD-3MAR26-80000-P" and chosen.option_type == "P"
        assert chosen.strike == 80_000 and chosen.expiry_ms == E1
        assert chosen.expiry == datetime(2026, 3, 3, 8, tzinfo=timezone.utc)
        assert chosen.days_to_expiry == pytest.approx(26 / 24)
        row = make_row(E1, 80_000, "P")
        assert (chosen.bid, chosen.ask, chosen.bid_size, chosen.ask_size) == (row.bid, row.ask, 1.0, 1.0)
        assert chosen.mark == row.mark and chosen.mark_iv == 0.5 and chosen.delta == -0.25
        assert chosen.index_price == INDEX and chosen.as_of == NOW
        assert chosen.distance_pct == pytest.approx(100 * 10_000 / 90_000)
        assert chosen.otm_pct == pytest.approx(100 * 10_000 / 90_000)

    def test_candidates_need_a_bid_or_an_ask(self):
        sym = symbol_for(E1, 90_000, "C")
        snap = make_snapshot(changes={sym: {"bid": 0.0, "ask": 0.0}})
        assert self.pick(snap) == 88_000

    def test_query_is_frozen(self):
        query = find_option("C")
        with pytest.raises(AttributeError):
            query.rank_by = "strike_otm"  # type: ignore[misc]

    def test_with_market_resolves_with_one_snapshot(self):
        market = FakeMarket(make_snapshot())
        chosen = find_option("C", expiry={"dte": 4}, delta={"target": 0.1}, market=market)
        assert isinstance(chosen, SelectedOption) and chosen.expiry_ms == E4 and chosen.strike == 100_000
        assert market.snapshot_calls == [[E4]]

    def test_with_market_none_when_nothing_matches(self):
        market = FakeMarket(make_snapshot())
        assert find_option("C", strike={"min_strike": 200_000}, market=market) is None
        assert find_option("C", expiry={"min_days": 100, "max_days": 200}, market=market) is None

    def test_query_resolve_uses_market_clock(self):
        market = FakeMarket(make_snapshot(), now=ts(2026, 3, 2, 7, 30))
        chosen = find_option("C").resolve(market)
        assert chosen.expiry_ms == E1  # today's expiry is inside the 60-minute guard


# ------------------------------------------------------------------ resolve_legs
class TestResolveLegs:
    def test_single_snapshot_for_all_expiries(self):
        market = FakeMarket(make_snapshot())
        specs = [leg("C", 2, strike={"type": "delta", "value": 0.3}, expiry={"dte": 1}),
                 leg("P", 2, strike={"type": "delta", "value": -0.3}, expiry={"dte": 4}),
                 leg("C", 1, strike={"type": "offset", "from_leg": 0, "value": 2000})]
        legs = resolve_legs(specs, market, now=NOW)
        assert market.snapshot_calls == [[E1, E4]]
        assert [l.contract.expiry_ms for l in legs] == [E1, E4, E1]
        assert [l.index for l in legs] == [0, 1, 2]
        assert legs[2].contract.strike == 100_000 and legs[2].side == Side.BUY
        assert all(l.index_price == INDEX and l.as_of == NOW for l in legs)
        assert legs[1].row.symbol == legs[1].symbol == "BTCUSD-6MAR26-82000-P"
        assert legs[0].spec is specs[0] and legs[0].qty == 0.1

    def test_now_defaults_to_market_clock(self):
        market = FakeMarket(make_snapshot(), now=ts(2026, 3, 2, 7, 30))
        assert resolve_legs([leg()], market)[0].contract.expiry_ms == E1

    def test_offset_leg_before_its_reference(self):
        specs = [leg("C", 1, strike={"type": "offset", "from_leg": 1, "value": 1000}),
                 leg("C", 2, strike={"type": "strike", "value": 90_000}, expiry={"dte": 4})]
        legs = resolve_legs(specs, FakeMarket(make_snapshot()), now=NOW)
        assert legs[0].contract.strike == 92_000 and legs[0].contract.expiry_ms == E4

    def test_offset_strictly_beyond_and_same_strike(self):
        base = leg("C", 2, strike={"type": "strike", "value": 90_000}, expiry={"dte": 1})
        cases = [(500, 92_000), (3000, 92_000), (3001, 94_000), (-500, 88_000), (-5000, 84_000), (0, 90_000)]
        for distance, expected in cases:
            specs = [base, leg("P", 2, strike={"type": "offset", "from_leg": 0, "value": distance})]
            legs = resolve_legs(specs, FakeMarket(make_snapshot()), now=NOW)
            assert legs[1].contract.strike == expected, distance

    def test_offset_beyond_last_strike_fails(self):
        specs = [leg("C", 2, strike={"type": "strike", "value": 100_000}, expiry={"dte": 1}),
                 leg("C", 1, strike={"type": "offset", "from_leg": 0, "value": 1000})]
        with pytest.raises(SelectionError, match="leg 1"):
            resolve_legs(specs, FakeMarket(make_snapshot()), now=NOW)

    def test_cycle_is_config_error(self):
        specs = [leg("C", 1, strike={"type": "offset", "from_leg": 1, "value": 1000}),
                 leg("C", 1, strike={"type": "offset", "from_leg": 0, "value": 1000})]
        market = FakeMarket(make_snapshot())
        with pytest.raises(ConfigError, match="cycle"):
            resolve_legs(specs, market, now=NOW)
        assert market.snapshot_calls == []

    @pytest.mark.parametrize("ref", [0, 5])
    def test_bad_reference_is_config_error(self, ref):
        specs = [leg("C", 1, strike={"type": "offset", "from_leg": ref, "value": 1000})]
        with pytest.raises(ConfigError, match="from_leg"):
            resolve_legs(specs, FakeMarket(make_snapshot()), now=NOW)

    def test_empty_legs_refused(self):
        with pytest.raises(ConfigError, match="legs"):
            resolve_legs([], FakeMarket(make_snapshot()), now=NOW)

    def test_all_or_nothing(self):
        specs = [leg("C", 2, strike={"type": "delta", "value": 0.3}),
                 leg("P", 2, strike={"type": "strike", "value": 12_345})]
        with pytest.raises(SelectionError, match="leg 1"):
            resolve_legs(specs, FakeMarket(make_snapshot()), now=NOW)

    def test_snapshot_failure_is_selection_error(self):
        from errors import TransportError

        class Broken(FakeMarket):
            def chain_snapshot(self, expiries, *, underlying=None, max_build_seconds=5.0):
                raise TransportError("/open/option/get/v1/BTCUSD", "timeout")

        with pytest.raises(SelectionError, match="timeout"):
            resolve_legs([leg()], Broken(make_snapshot()), now=NOW)

    def test_same_symbol_twice_refused(self):
        specs = [leg("C", 2, strike={"type": "closestStrike"}), leg("C", 1, strike={"type": "closestStrike"})]
        with pytest.raises(SelectionError, match="same symbol"):
            resolve_legs(specs, FakeMarket(make_snapshot()), now=NOW)

    def test_inverted_strangle_refused(self):
        specs = [leg("C", 2, strike={"type": "strike", "value": 86_000}),
                 leg("P", 2, strike={"type": "strike", "value": 94_000})]
        with pytest.raises(SelectionError, match="strangle"):
            resolve_legs(specs, FakeMarket(make_snapshot()), now=NOW)

    def test_iron_condor_order_checked(self):
        specs = iron_condor(0.1, call_delta=0.45, put_delta=-0.45, wing_width=2000, dte=1)
        # call 0.45 -> 92k, put -0.45 -> 88k: a valid condor
        legs = resolve_legs(specs, FakeMarket(make_snapshot()), now=NOW)
        assert [l.contract.strike for l in legs] == [92_000, 88_000, 94_000, 86_000]
        crossed = [leg("C", 2, strike={"type": "strike", "value": 86_000}, expiry={"dte": 1}),
                   leg("P", 2, strike={"type": "strike", "value": 94_000}, expiry={"dte": 1}),
                   leg("C", 1, strike={"type": "offset", "from_leg": 0, "value": 2000}),
                   leg("P", 1, strike={"type": "offset", "from_leg": 1, "value": -2000})]
        with pytest.raises(SelectionError, match="iron condor"):
            resolve_legs(crossed, FakeMarket(make_snapshot()), now=NOW)

    def test_butterfly_order_checked(self):
        legs = resolve_legs(butterfly(0.1, wing_width=4000, dte=1), FakeMarket(make_snapshot()), now=NOW)
        assert [l.contract.strike for l in legs] == [86_000, 90_000, 94_000]
        assert [l.qty for l in legs] == [0.1, 0.2, 0.1]
        bad = [leg("C", 1, strike={"type": "strike", "value": 94_000}),
               leg("C", 2, 0.2, strike={"type": "strike", "value": 90_000}),
               leg("C", 1, strike={"type": "strike", "value": 86_000})]
        with pytest.raises(SelectionError, match="butterfly"):
            resolve_legs(bad, FakeMarket(make_snapshot()), now=NOW)


# ------------------------------------------------------------------ templates
class TestTemplates:
    def test_strangle_layout(self):
        legs = strangle(0.5)
        assert [(l.option_type, l.side, l.qty) for l in legs] == [("C", 2, 0.5), ("P", 2, 0.5)]
        assert legs[0].strike_criteria == {"type": "delta", "value": 0.25}
        assert legs[1].strike_criteria == {"type": "delta", "value": -0.25}
        assert all(l.expiry_criteria == {"dte": "next"} for l in legs)
        long = strangle(0.1, call_delta=0.1, put_delta=-0.15, dte=7, side=1)
        assert long[0].side == Side.BUY and long[1].strike_criteria["value"] == -0.15
        assert long[0].expiry_criteria == {"dte": 7}

    def test_straddle_layout_and_resolution(self):
        legs = straddle(0.2, dte={"symbol": "6MAR26"})
        assert [(l.option_type, l.side) for l in legs] == [("C", 1), ("P", 1)]
        assert legs[0].strike_criteria == {"type": "closestStrike", "value": 0.0}
        assert legs[1].strike_criteria == {"type": "offset", "from_leg": 0, "value": 0}
        resolved = resolve_legs(legs, FakeMarket(make_snapshot(index=91_500)), now=NOW)
        assert [r.contract.strike for r in resolved] == [92_000, 92_000] and resolved[1].contract.expiry_ms == E4

    def test_iron_condor_layout(self):
        legs = iron_condor(0.1)
        assert [(l.option_type, l.side) for l in legs] == [("C", 2), ("P", 2), ("C", 1), ("P", 1)]
        assert legs[0].strike_criteria == {"type": "delta", "value": 0.20}
        assert legs[1].strike_criteria == {"type": "delta", "value": -0.20}
        assert legs[2].strike_criteria == {"type": "offset", "from_leg": 0, "value": 1000.0}
        assert legs[3].strike_criteria == {"type": "offset", "from_leg": 1, "value": -1000.0}
        reverse = iron_condor(0.1, side=1)
        assert [l.side for l in reverse] == [1, 1, 2, 2]

    def test_butterfly_layout(self):
        legs = butterfly(0.1)
        assert [(l.option_type, l.side, l.qty) for l in legs] == [("C", 1, 0.1), ("C", 2, 0.2), ("C", 1, 0.1)]
        assert legs[0].strike_criteria == {"type": "offset", "from_leg": 1, "value": -1000.0}
        assert legs[1].strike_criteria == {"type": "closestStrike", "value": 0.0}
        assert legs[2].strike_criteria == {"type": "offset", "from_leg": 1, "value": 1000.0}
        puts = butterfly(0.05, option_type="P", center_delta=-0.4, side=2)
        assert [(l.side, l.qty) for l in puts] == [(2, 0.05), (1, 0.1), (2, 0.05)]
        assert puts[1].strike_criteria == {"type": "delta", "value": -0.4}

    @pytest.mark.parametrize("build,field", [
        (lambda: strangle(0.015), "qty"),
        (lambda: strangle(0.1, call_delta=-0.2), "call_delta"),
        (lambda: strangle(0.1, put_delta=0.2), "put_delta"),
        (lambda: strangle(0.1, side=0), "side"),
        (lambda: straddle(0.1, dte="soon"), "dte"),
        (lambda: iron_condor(0.1, wing_width=0), "wing_width"),
        (lambda: iron_condor(0.1, call_delta=1.0), "call_delta"),
        (lambda: butterfly(0.1, wing_width=-5), "wing_width"),
        (lambda: butterfly(0.1, option_type="X"), "option_type"),
        (lambda: butterfly(0.1, option_type="P", center_delta=0.4), "center_delta"),
        (lambda: iron_condor(0.1, dte={"dte": 1, "foo": 2}), "foo"),
    ])
    def test_template_validation(self, build, field):
        with pytest.raises(ConfigError, match=field):
            build()
