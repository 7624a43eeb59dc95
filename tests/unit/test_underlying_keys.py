"""Every market-data read, selection and gate keyed by underlying (issue 13): BTC and ETH side by side.

A fake exchange client serves BTC and ETH options on the SAME expiry (as Coincall does), each
with its own index, listing and chain, in API shapes. The tests prove that the two never mix:
not in the caches (one chain per underlying and expiry, one index and frozen tracker per
underlying), not in selection (an ETH leg resolves on ETH rows and the ETH index, a structure
is one underlying), not in the runner's gates (the notional is ETH qty x the ETH index; a frozen
BTC index does not block an ETH strategy), and not in price sanity (an ETH option is judged on
ETH's index).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from account_manager import AccountSnapshot
from app import TradingContext
from clock import SimulatedClock
from conditions import max_hold_hours
from contracts import UNDERLYINGS, Side, underlying_of, underlying_spec
from errors import ConfigError, SelectionError, StaleDataError
from exit_evaluation import ExitEvaluator
from market_data import ChainSnapshot, MarketData
from option_selection import (
    LegSpec,
    SelectedOption,
    find_option,
    iron_condor,
    resolve_legs,
    select_option,
    straddle,
    strangle,
)
from persistence import StateStore
from price_sanity import black_scholes, check_quote, quote_problems
from strategy import StrategyConfig, StrategyRunner
from strategy_factories import build_strategy_configs
from tests.unit.test_runner_gates import FakeAlerts, FakeBlocks, FakeExecutor, FakeLifecycle

START = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc).timestamp()        # Monday 06:00 UTC
EXP = int(datetime(2026, 3, 6, 8, tzinfo=timezone.utc).timestamp() * 1000)  # 6MAR26, both underlyings
STRIKES = {"BTC": (66000, 68000, 70000, 72000, 74000), "ETH": (3100, 3300, 3500, 3700, 3900)}
INDEX = {"BTC": 70000.0, "ETH": 3500.0}
IV = 0.6
T_YEARS = (EXP / 1000.0 - START) / (365.0 * 86400.0)


def symbol(underlying: str, strike: int, kind: str) -> str:
    return f"{underlying}USD-6MAR26-{strike}-{kind}"


def side_payload(underlying: str, strike: int, kind: str, position: int, index: float) -> dict[str, Any]:
    """One chain side with a Black-Scholes mark on ``index``, so price sanity passes on it."""
    call_delta = round(0.9 - 0.2 * position, 2)
    mark = black_scholes(kind, index, float(strike), T_YEARS, IV)
    return {
        "symbol": symbol(underlying, strike, kind), "index": f"{underlying}USD", "endTime": EXP,
        "strike": float(strike), "markPrice": round(mark, 2), "bid": round(mark * 0.97, 2),
        "ask": round(mark * 1.03, 2), "bidSize": 5, "askSize": 5, "markIv": IV, "bidIv": IV, "askIv": IV,
        "type": 1 if kind == "C" else 2, "underlyingPrice": index,
        "delta": call_delta if kind == "C" else round(call_delta - 1.0, 2),
        "gamma": 0.0001, "vega": 10.0, "theta": -5.0, "rho": 0.1,
    }


class TwoUnderlyingClient:
    """``seams.MarketDataClient`` serving BTC and ETH options of one expiry, in API shapes."""

    def __init__(self) -> None:
        self.index = dict(INDEX)
        self.min_qty = {"BTC": "0.01", "ETH": "0.1"}
        self.calls: list[tuple[Any, ...]] = []
        self.chain_of: dict[str, str] = {}   # index name asked -> underlying served (to fake a mix-up)

    def instruments(self, base: str = "BTC") -> Any:
        self.calls.append(("instruments", base))
        return [{"baseCurrency": base, "symbolName": symbol(base, strike, kind), "strike": strike,
                 "expirationTimestamp": EXP, "isActive": True, "minQty": self.min_qty[base], "tickSize": 0.1}
                for strike in STRIKES[base] for kind in "CP"]

    def option_chain(self, end_time_ms: int | None = None, index: str = "BTCUSD") -> Any:
        self.calls.append(("option_chain", index, end_time_ms))
        underlying = self.chain_of.get(index, index[:-3])
        price = self.index[underlying]
        return [{"strike": float(strike),
                 "callOption": side_payload(underlying, strike, "C", position, price),
                 "putOption": side_payload(underlying, strike, "P", position, price)}
                for position, strike in enumerate(STRIKES[underlying])]

    def index_price(self, underlying: str = "BTC") -> float:
        self.calls.append(("index_price", underlying))
        return self.index[underlying]

    def orderbook(self, symbol: str) -> Any:
        self.calls.append(("orderbook", symbol))
        return {"optionName": symbol, "bids": [{"price": "10", "size": "1"}], "asks": [{"price": "11", "size": "1"}]}

    def count(self, name: str, arg: Any = None) -> int:
        return sum(1 for call in self.calls if call[0] == name and (arg is None or arg in call[1:]))


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(start=START, speed=0)


@pytest.fixture
def client() -> TwoUnderlyingClient:
    return TwoUnderlyingClient()


@pytest.fixture
def alerts() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def market(client, clock, alerts) -> MarketData:
    return MarketData(client, clock, on_alert=lambda kind, detail: alerts.append((kind, detail)))


# ---------------------------------------------------------------------------------------------
# The table of underlyings
# ---------------------------------------------------------------------------------------------


def test_the_table_holds_btc_and_eth_with_their_option_sizes():
    assert list(UNDERLYINGS) == ["BTC", "ETH"]
    assert (underlying_spec("BTC").option_min_qty, underlying_spec("BTC").option_qty_step) == (0.01, 0.01)
    assert (underlying_spec("ETH").option_min_qty, underlying_spec("ETH").option_qty_step) == (0.1, 0.1)
    assert underlying_spec("ETH").index_name == "ETHUSD"
    with pytest.raises(ValueError, match="unsupported underlying 'SOL'.*BTC, ETH"):
        underlying_spec("SOL")


@pytest.mark.parametrize("text, expected", [("ETHUSD-6MAR26-3500-C", "ETH"), ("BTCUSD-6MAR26-70000-P", "BTC"),
                                            ("ETHUSD", "ETH"), ("BTCUSD", "BTC"), ("nonsense", None)])
def test_the_underlying_of_a_symbol_option_or_perpetual(text, expected):
    assert underlying_of(text) == expected


# ---------------------------------------------------------------------------------------------
# Market data: indexes, chains and frozen trackers per underlying
# ---------------------------------------------------------------------------------------------


def test_each_underlying_has_its_own_index_and_the_default_is_btc(market, client, clock):
    assert market.index_price() == 70000.0                       # a caller written for BTC alone
    assert market.index_price("ETH") == 3500.0
    assert market.index_price("BTC") == 70000.0                  # cached: the ETH read did not replace it
    assert market.index_price("eth") == 3500.0                   # any case names the same key
    assert [c for c in client.calls if c[0] == "index_price"] == [("index_price", "BTC"), ("index_price", "ETH")]
    clock.advance(5.0)
    assert market.index_age("ETH") == pytest.approx(5.0) and market.index_age() == pytest.approx(5.0)
    assert market.index_age("XRP") is None


def test_the_freshness_rule_holds_per_underlying(market, client, clock):
    market.index_price("BTC")
    clock.advance(10.0)
    market.index_price("ETH")
    clock.advance(10.0)
    market.index_price("BTC", max_age=15.0)     # BTC is 20 s old: refetched
    market.index_price("ETH", max_age=15.0)     # ETH is 10 s old: cached
    assert client.count("index_price", "BTC") == 2 and client.count("index_price", "ETH") == 1


def test_btc_and_eth_chains_of_one_expiry_never_share_a_cache_entry(market, client):
    btc = market.chain(EXP)                       # the default underlying
    eth = market.chain(EXP, underlying="ETH")
    assert {underlying_of(row.symbol) for row in btc} == {"BTC"}
    assert {underlying_of(row.symbol) for row in eth} == {"ETH"}
    assert {row.underlying_price for row in eth} == {3500.0}
    assert [c for c in client.calls if c[0] == "option_chain"] == [("option_chain", "BTCUSD", EXP),
                                                                   ("option_chain", "ETHUSD", EXP)]
    market.chain(EXP, underlying="BTC")
    market.chain(EXP, underlying="ETH")
    assert client.count("option_chain") == 2     # both served from their own entries


def test_a_quote_reads_the_chain_of_its_symbols_underlying(market, client):
    eth = market.quote(symbol("ETH", 3500, "C"))
    btc = market.quote(symbol("BTC", 70000, "C"))
    assert eth.underlying_price == 3500.0 and eth.strike == 3500.0
    assert btc.underlying_price == 70000.0 and btc.strike == 70000.0
    assert [c[1] for c in client.calls if c[0] == "option_chain"] == ["ETHUSD", "BTCUSD"]
    market.quote(symbol("ETH", 3300, "P"))
    assert client.count("option_chain") == 2     # the ETH chain serves every ETH symbol of the expiry


def test_an_instrument_and_a_book_are_found_from_the_symbol(market, client):
    assert market.instrument(symbol("ETH", 3700, "P")).base == "ETH"
    assert client.calls[-1] == ("instruments", "ETH")
    assert market.order_book(symbol("ETH", 3700, "P")).symbol == symbol("ETH", 3700, "P")


def test_a_chain_of_another_index_is_refused_never_cached_as_this_ones(market, client):
    client.chain_of["ETHUSD"] = "BTC"            # the exchange answers the ETH request with BTC rows
    with pytest.raises(StaleDataError, match="belongs to index 'BTCUSD', expected 'ETHUSD'"):
        market.chain(EXP, underlying="ETH")
    with pytest.raises(SelectionError):
        market.chain_snapshot([EXP], underlying="ETH")
    client.chain_of.clear()
    assert {underlying_of(row.symbol) for row in market.chain(EXP, underlying="ETH")} == {"ETH"}


def test_a_listing_of_another_base_is_never_kept_as_this_ones(market, client, caplog):
    original = client.instruments
    client.instruments = lambda base="BTC": original("BTC")   # every answer is BTC's listing
    with caplog.at_level(logging.WARNING, logger="market_data"):
        with pytest.raises(StaleDataError, match="lists no ETH instruments"):
            market.instruments("ETH")
    assert any("dropped 10 entries of other bases (BTC)" in r.getMessage() for r in caplog.records)
    assert len(market.instruments("BTC")) == 10


def test_a_snapshot_is_of_one_underlying_its_index_and_its_instruments(market, client):
    snapshot = market.chain_snapshot([EXP], underlying="ETH")
    assert snapshot.underlying == "ETH" and snapshot.index_price == 3500.0
    assert set(snapshot.instruments) == {symbol("ETH", k, t) for k in STRIKES["ETH"] for t in "CP"}
    assert {underlying_of(row.symbol) for row in snapshot.rows} == {"ETH"}
    assert market.chain_snapshot([EXP]).underlying == "BTC"


def _read_index(market: MarketData, clock: SimulatedClock, underlying: str, seconds: float = 30.0) -> None:
    market.index_price(underlying, max_age=0)
    clock.advance(seconds)


def test_a_frozen_eth_index_is_tracked_on_its_own(market, client, clock, alerts):
    for step in range(4):                        # ETH stuck at 3500 for 90 s; BTC moves every read
        client.index["BTC"] = 70000.0 + step
        _read_index(market, clock, "BTC", 0.0)
        _read_index(market, clock, "ETH")
    assert market.index_frozen_for("ETH") and not market.index_frozen_for("BTC") and not market.index_frozen_for()
    assert market.index_frozen                   # the health flag: some underlying is frozen
    assert [kind for kind, _ in alerts] == ["index_frozen"] and "ETHUSD index unchanged at 3500" in alerts[0][1]
    client.index["ETH"] = 3501.0
    _read_index(market, clock, "ETH")
    assert not market.index_frozen_for("ETH") and not market.index_frozen


def test_a_frozen_btc_index_does_not_mark_eth_frozen(market, client, clock):
    for step in range(4):
        client.index["ETH"] = 3500.0 + step
        _read_index(market, clock, "ETH", 0.0)
        _read_index(market, clock, "BTC")
    assert market.index_frozen_for("BTC") and market.index_frozen_for() and not market.index_frozen_for("ETH")


def test_invalidate_forgets_every_underlying(market, client):
    market.index_price("ETH")
    market.chain(EXP, underlying="ETH")
    market.invalidate()
    market.index_price("ETH")
    market.chain(EXP, underlying="ETH")
    assert client.count("index_price", "ETH") == 2 and client.count("option_chain") == 2


# ---------------------------------------------------------------------------------------------
# Selection: an ETH leg resolves on ETH, one structure is one underlying
# ---------------------------------------------------------------------------------------------


def test_an_eth_strangle_resolves_against_eth_rows_and_the_eth_index(market, client):
    legs = resolve_legs(strangle(0.2, call_delta=0.3, put_delta=-0.3, underlying="ETH"), market)
    assert [leg.symbol for leg in legs] == [symbol("ETH", 3700, "C"), symbol("ETH", 3300, "P")]
    assert {leg.contract.underlying for leg in legs} == {"ETH"}
    assert {leg.index_price for leg in legs} == {3500.0}
    assert ("instruments", "ETH") in client.calls and ("index_price", "ETH") in client.calls
    assert ("option_chain", "ETHUSD", EXP) in client.calls
    assert client.count("option_chain", "BTCUSD") == 0 and client.count("index_price", "BTC") == 0


def test_closest_strike_is_measured_on_the_legs_own_index(market):
    legs = resolve_legs(straddle(0.1, underlying="ETH"), market)
    assert [leg.contract.strike for leg in legs] == [3500.0, 3500.0]
    btc = resolve_legs(straddle(0.01), market)
    assert [leg.contract.strike for leg in btc] == [70000.0, 70000.0]


def test_find_option_resolves_on_its_underlying(market):
    found = find_option("P", strike={"below_atm": True}, rank_by="strike_atm", underlying="ETH", market=market)
    assert isinstance(found, SelectedOption)
    assert found.symbol == symbol("ETH", 3300, "P") and found.index_price == 3500.0
    query = find_option("C", underlying="ETH")
    assert query.underlying == "ETH"


def test_a_leg_spec_with_an_eth_find_option_query_resolves_on_eth(market):
    query = find_option("C", delta={"min": 0.2, "max": 0.4}, underlying="ETH")
    legs = resolve_legs([LegSpec("C", Side.SELL, 0.1, query, underlying="ETH")], market)
    assert legs[0].symbol == symbol("ETH", 3700, "C")


def test_a_snapshot_of_another_underlying_is_never_used(market):
    btc_snapshot = market.chain_snapshot([EXP])

    class WrongSnapshot:
        clock = market.clock

        def instruments(self, base: str = "BTC") -> list:
            return market.instruments(base)

        def chain_snapshot(self, expiries, *, underlying=None, max_build_seconds=5.0) -> ChainSnapshot:
            return btc_snapshot                  # whatever was asked

    with pytest.raises(SelectionError, match="snapshot is of BTC, the legs trade ETH"):
        resolve_legs(strangle(0.1, underlying="ETH"), WrongSnapshot())
    query = find_option("C", underlying="ETH")
    with pytest.raises(SelectionError, match="snapshot is of BTC"):
        select_option(btc_snapshot, query, now=START)


def test_a_mixed_structure_is_refused_before_any_request(market, client):
    mixed = [LegSpec("C", Side.SELL, 0.1, {"type": "delta", "value": 0.3}),
             LegSpec("P", Side.SELL, 0.1, {"type": "delta", "value": -0.3}, underlying="ETH")]
    with pytest.raises(ConfigError, match="one structure trades one underlying"):
        resolve_legs(mixed, market)
    assert client.calls == []


# ---- quantities ----------------------------------------------------------------------------


@pytest.mark.parametrize("qty, fix", [(0.05, "use a quantity >= 0.1 ETH"), (0.15, "use a multiple of 0.1 ETH"),
                                      (0.01, "use a quantity >= 0.1 ETH")])
def test_eth_quantities_follow_the_eth_table(qty, fix):
    with pytest.raises(ConfigError) as refused:
        LegSpec("C", Side.BUY, qty, {"type": "closestStrike"}, underlying="ETH")
    message = str(refused.value)
    assert "LegSpec" in message and "qty" in message and repr(qty) in message and fix in message


def test_the_same_quantity_is_valid_for_btc_and_eth_steps_are_checked_per_underlying():
    assert LegSpec("C", Side.BUY, 0.05, {"type": "closestStrike"}).qty == 0.05
    assert LegSpec("C", Side.BUY, 0.3, {"type": "closestStrike"}, underlying="ETH").qty == 0.3
    with pytest.raises(ConfigError, match="strangle.*qty.*0.1 ETH"):
        strangle(0.05, underlying="ETH")
    with pytest.raises(ConfigError, match="use a multiple of 0.01 BTC"):
        LegSpec("C", Side.BUY, 0.015, {"type": "closestStrike"})


@pytest.mark.parametrize("underlying", ["SOL", "eth", "", None, 3])
def test_an_unsupported_underlying_is_a_config_error(underlying):
    with pytest.raises(ConfigError, match="underlying.*use one of 'BTC', 'ETH'"):
        LegSpec("C", Side.BUY, 1.0, {"type": "closestStrike"}, underlying=underlying)
    with pytest.raises(ConfigError, match="underlying"):
        find_option("C", underlying=underlying)


def test_the_listed_minimum_is_checked_again_at_resolution(market, client):
    client.min_qty["ETH"] = "0.5"                # the exchange lists a bigger minimum than the table
    with pytest.raises(SelectionError, match=r"qty 0.2 ETH is below the listed minimum 0.5 ETH"):
        resolve_legs(strangle(0.2, underlying="ETH"), market)
    client.min_qty["ETH"] = "0.2"
    market.invalidate()
    with pytest.raises(SelectionError, match=r"qty 0.3 ETH is not a multiple of the listed step 0.2 ETH"):
        resolve_legs(strangle(0.3, underlying="ETH"), market)
    assert [leg.qty for leg in resolve_legs(strangle(0.4, underlying="ETH"), market)] == [0.4, 0.4]


# ---------------------------------------------------------------------------------------------
# StrategyConfig: one underlying per strategy, caps in its units
# ---------------------------------------------------------------------------------------------


def test_a_strategy_mixing_btc_and_eth_legs_is_refused_at_start_up_naming_everything():
    def mixed_strategy() -> StrategyConfig:
        return StrategyConfig(name="mixed", exit_conditions=[max_hold_hours(1)], legs=[
            LegSpec("C", Side.SELL, 0.1, {"type": "delta", "value": 0.3}),
            LegSpec("P", Side.SELL, 0.1, {"type": "delta", "value": -0.3}, underlying="ETH")])

    with pytest.raises(ConfigError) as refused:
        build_strategy_configs([mixed_strategy])
    message = str(refused.value)
    for fragment in ("strategy 'mixed'", "legs[1].underlying", "'ETH'", "legs[0] trades 'BTC'",
                     "give every leg underlying='BTC'"):
        assert fragment in message, message


def test_an_eth_strategy_names_eth_in_its_size_caps():
    config = StrategyConfig(name="eth", legs=strangle(0.5, underlying="ETH"), exit_conditions=[max_hold_hours(1)])
    assert config.underlying == "ETH"
    with pytest.raises(ConfigError, match=r"above max_leg_qty=10 ETH per leg"):
        StrategyConfig(name="eth", legs=strangle(12, underlying="ETH"), exit_conditions=[max_hold_hours(1)])
    with pytest.raises(ConfigError, match=r"24 ETH in total.*max_structure_qty=20 ETH"):
        StrategyConfig(name="eth", legs=iron_condor(6, wing_width=100, underlying="ETH"),
                       exit_conditions=[max_hold_hours(1)])
    with pytest.raises(ConfigError, match=r"max_leg_qty.*use a number of ETH from 0.01"):
        StrategyConfig(name="eth", legs=strangle(1, underlying="ETH"), exit_conditions=[max_hold_hours(1)],
                       max_leg_qty=0)
    btc = StrategyConfig(name="btc", legs=strangle(0.1), exit_conditions=[max_hold_hours(1)])
    assert btc.underlying == "BTC"


# ---------------------------------------------------------------------------------------------
# The runner: gates and caps on the strategy's own underlying (real MarketData, real selection)
# ---------------------------------------------------------------------------------------------


class Rig:
    """A runner on the real ``MarketData`` and ``resolve_legs``, with the test_runner_gates fakes around."""

    def __init__(self, market: MarketData, clock: SimulatedClock, config: StrategyConfig) -> None:
        self.clock = clock
        self.lifecycle = FakeLifecycle(clock)
        self.executor = FakeExecutor()
        ctx = TradingContext(
            config=None, clock=clock, http=None, market_data=market,
            account_manager=SimpleNamespace(reachability=SimpleNamespace(is_up=True)), ledger=FakeBlocks(),
            executor=self.executor, lifecycle_manager=self.lifecycle,
            position_monitor=SimpleNamespace(poll_interval=10.0), store=StateStore(":memory:"),
            alerts=FakeAlerts(), health=None,
        )
        self.runner = StrategyRunner(config, ctx)

    def tick(self) -> None:
        self.runner.tick(AccountSnapshot.build(equity=1e6, available_margin=9e5, initial_margin=0.0,
                                               maintenance_margin=0.0, unrealized_pnl=0.0, positions=(),
                                               timestamp=self.clock.now()))


def eth_config(qty: float, **fields: Any) -> StrategyConfig:
    return StrategyConfig(name="eth_strangle", legs=strangle(qty, call_delta=0.3, put_delta=-0.3, underlying="ETH"),
                          exit_conditions=[max_hold_hours(1)], execution_mode="auto", check_interval_seconds=10,
                          **fields)


def test_the_notional_cap_uses_the_eth_index_for_an_eth_structure(market, client, clock):
    # 2 legs x 10 ETH x 3,500 = 70,000 USD: inside a 100,000 cap (at the BTC index it would be 1.4 M).
    rig = Rig(market, clock, eth_config(10, max_structure_notional_usd=100_000))
    rig.tick()
    assert len(rig.lifecycle.created) == 1
    mode, legs, index = rig.executor.routed[0]
    assert index == 3500.0 and {leg.contract.underlying for leg in legs} == {"ETH"}
    assert client.count("index_price", "BTC") == 0 and client.count("option_chain", "BTCUSD") == 0
    assert rig.runner.status()["underlying"] == "ETH"


def test_an_eth_structure_above_the_cap_is_refused_with_eth_named(market, clock, caplog):
    rig = Rig(market, clock, eth_config(10, max_structure_notional_usd=50_000))
    with caplog.at_level(logging.WARNING, logger="strategy"):
        rig.tick()
    assert rig.lifecycle.created == []
    warning = next(r.getMessage() for r in caplog.records if "max_structure_notional_usd" in r.getMessage())
    assert "20 ETH x ETH index 3,500.00 = 70,000 USD" in warning, warning


def test_a_frozen_btc_index_does_not_block_an_eth_strategy(market, client, clock):
    for _ in range(4):
        _read_index(market, clock, "BTC")
    assert market.index_frozen_for("BTC")
    rig = Rig(market, clock, eth_config(1))
    rig.tick()
    assert len(rig.lifecycle.created) == 1


def test_a_frozen_eth_index_blocks_the_eth_strategy_and_says_so(market, client, clock):
    for _ in range(4):
        _read_index(market, clock, "ETH")
    rig = Rig(market, clock, eth_config(1))
    rig.tick()
    assert rig.lifecycle.created == [] and rig.runner.no_entry_reason == "index frozen (ETH)"


def test_an_unavailable_eth_index_names_eth(market, client, clock):
    client.index["ETH"] = 0.0
    rig = Rig(market, clock, eth_config(1))
    rig.tick()
    reason = rig.runner.no_entry_reason
    assert rig.lifecycle.created == [] and reason is not None and reason.startswith("index unavailable (ETH):")


# ---------------------------------------------------------------------------------------------
# Price sanity and exit evidence on the leg's own underlying
# ---------------------------------------------------------------------------------------------


def test_an_eth_quote_is_sane_on_the_eth_index(market):
    quote = market.quote(symbol("ETH", 3700, "C"))
    assert quote_problems(quote, quote.symbol) == []
    assert check_quote(quote, quote.symbol).underlying == 3500.0


@pytest.mark.parametrize("kind", ["C", "P"])
def test_an_eth_option_valued_on_the_btc_index_is_insane(market, kind):
    quote = market.quote(symbol("ETH", 3500, kind))
    mixed = replace(quote, underlying_price=INDEX["BTC"])   # the same ETH option against BTC's index
    assert quote_problems(mixed, quote.symbol) != []


def test_exit_evidence_names_the_underlying_of_its_index(market):
    quote = market.quote(symbol("ETH", 3700, "C"))
    leg = SimpleNamespace(symbol=quote.symbol, quote=quote)

    def valuation(mode: str) -> Any:
        raise ValueError("not needed here")

    trade = SimpleNamespace(legs=[leg], valuation=valuation)
    detail = ExitEvaluator._exit_detail(trade, max_hold_hours(1), SimpleNamespace(timestamp=START))
    assert detail["index"] == 3500.0 and detail["underlying"] == "ETH"
