"""Perpetual legs, piece by piece (docs/PERPETUALS.md): the leg spec and its checks, the ledger's
perp door (ids, record before send, reduce-only caps, unknown outcomes), the funding split, the
per-underlying account delta, the perp's sanity band, and what a perp leg is in a trade."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import conditions
from account_manager import AccountSnapshot, perp_position_snapshot, position_kind
from clock import SimulatedClock
from coincall_payloads import FundingPayment, PerpOrder, PerpOrderState, PerpOrderType, PerpPosition
from contracts import PERPETUAL, UNDERLYINGS, Contract, Side, is_perpetual_symbol
from errors import ConfigError, OrderOutcomeUnknown, SelectionError
from execution_job import LegTarget
from option_selection import LegSpec, PerpLegSpec, check_structure, perp, resolve_legs, strangle
from order_ledger import Intent, OrderLedger, OrderStatus, parse_client_order_id, perp_order_view
from price_sanity import PERP_BAND_OF_INDEX, sanity_band
from strategy import StrategyConfig, route_trade
from trade_fills import FUNDING_KEY, FundingAttribution, funding_instants
from trade_lifecycle import TradeLeg, TradeLifecycle, TradeState
from tests.unit.store_fakes import NoFloorsNoKeptBlocks

START = 1_772_431_200.0   # 2026-03-02 06:00 UTC


# ---- the leg spec -----------------------------------------------------------------------

def test_perp_builds_one_perpetual_leg_that_is_a_legspec():
    (leg,) = perp(0.005, Side.BUY)
    assert isinstance(leg, LegSpec) and isinstance(leg, PerpLegSpec) and leg.is_perpetual
    assert leg.option_type == PERPETUAL and leg.symbol == "BTCUSD" and leg.depends_on is None
    assert leg.side is Side.BUY and leg.qty == 0.005
    (eth,) = perp(0.03, Side.SELL, underlying="ETH")
    assert eth.symbol == "ETHUSD" and not strangle(0.1)[0].is_perpetual


@pytest.mark.parametrize("qty, underlying, words", [
    (0.0005, "BTC", ">= 0.001 BTC"), (0.0015, "BTC", "multiple of 0.001 BTC"),
    (0.005, "ETH", ">= 0.01 ETH"), (0.015, "ETH", "multiple of 0.01 ETH"), ("1", "BTC", ">= 0.001"),
])
def test_perp_quantities_are_checked_against_the_underlying_table(qty, underlying, words):
    with pytest.raises(ConfigError, match=words):
        perp(qty, 1, underlying=underlying)


def test_the_perp_sizes_are_in_the_underlying_table():
    assert (UNDERLYINGS["BTC"].perp_min_qty, UNDERLYINGS["BTC"].perp_qty_step) == (0.001, 0.001)
    assert (UNDERLYINGS["ETH"].perp_min_qty, UNDERLYINGS["ETH"].perp_qty_step) == (0.01, 0.01)


def test_bad_side_and_underlying_are_refused():
    with pytest.raises(ConfigError, match="side"):
        perp(0.01, 3)
    with pytest.raises(ConfigError, match="underlying"):
        perp(0.01, 1, underlying="SOL")


def _strategy(legs: list, **kwargs: Any) -> StrategyConfig:
    values: dict[str, Any] = {"name": "hedged", "legs": legs, "exit_conditions": [conditions.max_hold_hours(1)]}
    values.update(kwargs)
    return StrategyConfig(**values)


@pytest.mark.parametrize("mode", ["smart", "rfq"])
def test_smart_and_rfq_refuse_a_structure_with_a_perp_at_start_up(mode):
    with pytest.raises(ConfigError, match="execution_mode='limit'"):
        _strategy(strangle(0.1) + perp(0.01, 1), execution_mode=mode)
    _strategy(strangle(0.1), execution_mode=mode)   # the options alone are fine


def test_limit_and_auto_take_perps_and_a_perp_only_structure_is_allowed():
    assert _strategy(strangle(0.1) + perp(0.01, 1), execution_mode="limit").legs[2].is_perpetual
    assert len(_strategy(perp(0.01, 2), execution_mode="auto").legs) == 1


def test_a_perp_only_structure_cannot_be_held_to_expiry():
    with pytest.raises(ConfigError, match="never expires"):
        _strategy(perp(0.01, 1), exit_conditions=[], hold_to_expiry=True, execution_mode="limit")


def test_auto_routes_a_structure_with_a_perp_to_limit():
    class Router:
        def route(self, mode: str, legs: Any, index_price: float) -> str:
            return "rfq"

    resolved = [SimpleNamespace(index_price=1.0, qty=0.1)]
    assert route_trade(_strategy(strangle(0.1) + perp(0.01, 1)), resolved, Router()) == "limit"
    assert route_trade(_strategy(strangle(0.1)), resolved, Router()) == "rfq"


def test_an_offset_leg_cannot_measure_from_a_perp():
    legs = perp(0.01, 1) + [LegSpec(option_type="C", side=Side.SELL, qty=0.1,
                                    strike_criteria={"type": "offset", "from_leg": 0, "value": 1000})]
    with pytest.raises(ConfigError, match="perpetual, which has no strike"):
        resolve_legs(legs, SimpleNamespace(clock=SimulatedClock(start=START, speed=0)))


# ---- resolution ---------------------------------------------------------------------------

class PerpMarket:
    """A market with a perp only: its spec, quote and index (what a perp-only structure reads)."""

    def __init__(self, *, min_qty: float = 0.001, step: float = 0.001) -> None:
        self.clock = SimulatedClock(start=START, speed=0)
        self.spec = SimpleNamespace(min_qty=min_qty, qty_step=step, tick_size=0.1)

    def instruments(self, base: str = "BTC") -> list:
        return []

    def chain_snapshot(self, expiries: Any, *, underlying: Any = None, max_build_seconds: float = 0.0) -> Any:
        raise AssertionError("a perp-only structure reads no chain")

    def perp_spec(self, underlying: str) -> Any:
        return self.spec

    def quote(self, symbol: str, *, max_age: float = 15.0) -> Any:
        return SimpleNamespace(symbol=symbol, mark=100_000.0, bid=99_990.0, ask=100_010.0)

    def index_price(self, underlying: str | None = None, *, max_age: float | None = None) -> float:
        return 99_995.0


def test_a_perp_only_structure_resolves_on_the_index_without_a_chain():
    (leg,) = resolve_legs(perp(0.004, 2), PerpMarket())
    assert leg.contract == Contract.perpetual("BTC") and leg.contract.is_perpetual
    assert leg.index_price == 99_995.0 and leg.side is Side.SELL and leg.row.mark == 100_000.0


def test_the_listed_perp_step_is_rechecked_at_resolution():
    with pytest.raises(SelectionError, match="multiple of the listed step 0.002"):
        resolve_legs(perp(0.003, 1), PerpMarket(min_qty=0.002, step=0.002))
    with pytest.raises(SelectionError, match="below the listed minimum 0.01"):
        resolve_legs(perp(0.003, 1), PerpMarket(min_qty=0.01, step=0.001))


def test_a_market_without_perps_is_refused_clearly():
    market = SimpleNamespace(clock=SimulatedClock(start=START, speed=0), instruments=lambda base="BTC": [],
                             chain_snapshot=lambda *a, **k: None)
    with pytest.raises(TypeError, match="perp_spec"):
        resolve_legs(perp(0.01, 1), market)


def test_structure_checks_ignore_perp_legs():
    call = SimpleNamespace(symbol="C1", contract=Contract("C1", "BTC", "C", 90_000.0, 1), side=Side.SELL, qty=0.1,
                           spec=SimpleNamespace(strike_type="delta"))
    put = SimpleNamespace(symbol="P1", contract=Contract("P1", "BTC", "P", 80_000.0, 1), side=Side.SELL, qty=0.1,
                          spec=SimpleNamespace(strike_type="delta"))
    hedge = SimpleNamespace(symbol="BTCUSD", contract=Contract.perpetual("BTC"), side=Side.BUY, qty=0.01,
                            spec=SimpleNamespace(strike_type="perpetual"))
    check_structure([call, put, hedge])           # a strangle with a hedge is still a strangle
    check_structure([hedge])
    bad_put = SimpleNamespace(**{**vars(put), "contract": Contract("P1", "BTC", "P", 95_000.0, 1)})
    with pytest.raises(SelectionError, match="strangle"):
        check_structure([call, bad_put, hedge])


# ---- contracts and legs ------------------------------------------------------------------

def test_a_perpetual_contract_never_expires_and_keeps_the_flat_record_keys():
    contract = Contract.perpetual("ETH")
    assert contract.symbol == "ETHUSD" and contract.kind == "perpetual" and is_perpetual_symbol("ETHUSD")
    assert not is_perpetual_symbol("BTCUSD-5FEB26-80000-C")
    assert Contract.from_record(contract.to_record()) == contract
    assert Contract.from_record({**contract.to_record(), "underlying": ""}).underlying == "ETH"
    leg = TradeLeg(index=1, contract=contract, side=Side.SELL, qty=0.05, funding=0.25)
    assert not leg.is_frozen(4e9) and not leg.is_expired(4e9) and leg.lot == 0.01
    assert leg.open_target() == LegTarget(1, "ETHUSD", Side.SELL, 0.05, 0.01)
    restored = TradeLeg.from_record(leg.to_record())
    assert restored.funding == 0.25 and restored.is_perpetual and leg.to_record()["kind"] == "perpetual"


def test_a_perp_legs_pnl_is_price_move_times_signed_qty_minus_fees_plus_funding():
    leg = TradeLeg(index=0, contract=Contract.perpetual("BTC"), side=Side.SELL, qty=0.01, open_filled=0.01,
                   open_vwap=100_000.0, open_fees=0.6, close_filled=0.01, close_vwap=99_000.0, close_fees=0.59,
                   funding=0.4)
    trade = TradeLifecycle(id="T1", seq=1, strategy="s", state=TradeState.CLOSED, legs=[leg])
    assert trade.realized() == pytest.approx((99_000.0 - 100_000.0) * -0.01 - 1.19 + 0.4)


def test_a_held_perp_is_valued_on_its_mark_and_on_the_side_that_closes_it():
    leg = TradeLeg(index=0, contract=Contract.perpetual("BTC"), side=Side.BUY, qty=0.01, open_filled=0.01,
                   open_vwap=100_000.0)
    leg.quote = SimpleNamespace(bid=100_090.0, ask=100_110.0, mark=100_100.0, as_of=START, underlying_price=100_050.0,
                                option_type=PERPETUAL, strike=0.0, expiry_ms=0, mark_iv=0.0, delta=1.0)
    trade = TradeLifecycle(id="T1", seq=1, strategy="s", state=TradeState.OPEN, legs=[leg])
    assert trade.pnl("mark", now=START) == pytest.approx(1.0)
    executable = trade.valuation("executable", now=START)
    assert executable.value == pytest.approx(0.9 - 0.01 * 100_090.0 * 0.0006)
    assert trade.structure_delta() == pytest.approx(0.01)


# ---- the ledger's perp door ------------------------------------------------------------------

class OptionClient:
    """The option endpoints: a perp order must never reach them."""

    def create_order(self, *args: Any, **kwargs: Any) -> int:
        raise AssertionError("a perp order went to the option endpoint")

    def cancel_order(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a perp cancel went to the option endpoint")

    def query_order(self, *args: Any, **kwargs: Any) -> dict:
        raise AssertionError("a perp query went to the option endpoint")

    def order_history(self, **filters: Any) -> Any:
        raise AssertionError("a perp history read went to the option endpoint")


class PerpClient:
    def __init__(self, *, position: float = 0.0, lose_create: bool = False) -> None:
        self.position = position              # signed, BTCUSD
        self.lose_create = lose_create
        self.created: list[dict] = []
        self.cancelled: list[int] = []
        self.queries: list[dict] = []

    def perp_create_order(self, symbol: str, qty: Any, side: Any, client_order_id: Any, **kwargs: Any) -> int:
        self.created.append({"symbol": symbol, "qty": qty, "side": side, "coid": client_order_id, **kwargs})
        if self.lose_create:
            raise OrderOutcomeUnknown("POST create", "timeout", client_order_id=client_order_id)
        return 555

    def perp_cancel_order(self, *, order_id: Any = None, client_order_id: Any = None) -> None:
        self.cancelled.append(order_id)

    def perp_order(self, *, order_id: Any = None, client_order_id: Any = None) -> PerpOrder:
        self.queries.append({"order_id": order_id, "client_order_id": client_order_id})
        created = self.created[-1]
        return PerpOrder(order_id=555, client_order_id=created["coid"], symbol="BTCUSD", side=Side.of(created["side"]),
                         order_type=PerpOrderType.LIMIT, qty=float(created["qty"]), filled_qty=float(created["qty"]),
                         remaining_qty=0.0, price=created["price"], avg_price=created["price"], fee=0.03,
                         state=PerpOrderState.FILLED, reduce_only=created["reduce_only"], time_in_force="GTC",
                         leverage=10.0, create_time_ms=int(START * 1000), update_time_ms=int(START * 1000))

    def perp_order_history(self, **filters: Any) -> list:
        return []

    def perp_positions(self) -> list[PerpPosition]:
        return btc_perp_positions(self.position)


def btc_perp_positions(signed_qty: float) -> list[PerpPosition]:
    """The account's BTCUSD perp position as the client returns it: none when flat."""
    if not signed_qty:
        return []
    return [PerpPosition(position_id=1, symbol="BTCUSD", side=Side.BUY if signed_qty > 0 else Side.SELL,
                         qty=abs(signed_qty), signed_qty=signed_qty, avg_price=100_000.0, mark_price=100_000.0,
                         unrealized_pnl=0.0, initial_margin=None, maintenance_margin=None, leverage=10.0,
                         liquidation_price=None, update_time_ms=None)]


class Store(NoFloorsNoKeptBlocks):
    def __init__(self) -> None:
        self.saved: list[dict] = []

    def save_order(self, record: dict) -> None:
        self.saved.append(dict(record))

    def append_event(self, kind: str, payload: dict, ts: float) -> int:
        return 1

    def load_orders(self, trade_id: str | None = None) -> list[dict]:
        return [r for r in self.saved if trade_id is None or r["trade_id"] == trade_id]

    def load_order(self, client_order_id: int) -> dict | None:
        return next((r for r in reversed(self.saved) if r["client_order_id"] == client_order_id), None)


def _ledger(perp_client: PerpClient | None, store: Store | None = None) -> OrderLedger:
    return OrderLedger(OptionClient(), SimulatedClock(start=START, speed=0), store=store, perp_client=perp_client)


def _place(ledger: OrderLedger, intent: Intent, side: Side, qty: float) -> Any:
    return ledger.place(trade_id="T7", trade_seq=7, leg_index=2, intent=intent, symbol="BTCUSD", side=side, qty=qty,
                        price=100_000.04, tick_size=0.1, lot=0.001)


def test_a_perp_order_is_recorded_then_sent_to_the_perp_endpoint_with_a_deterministic_id():
    perps, store = PerpClient(), Store()
    order = _place(_ledger(perps, store), Intent.OPEN, Side.BUY, 0.0057)
    assert order.status is OrderStatus.LIVE and order.order_id == 555 and order.qty == pytest.approx(0.005)
    assert store.saved[0]["status"] == "PENDING_SEND"
    parts = parse_client_order_id(order.client_order_id)
    assert (parts.trade_seq, parts.leg_index, parts.intent, parts.attempt) == (7, 2, 1, 1)
    (sent,) = perps.created
    assert sent["coid"] == order.client_order_id and sent["order_type"] is PerpOrderType.LIMIT
    assert sent["time_in_force"] == "GTC" and sent["reduce_only"] is False and sent["price"] == 100_000.0
    assert sent["qty"] == pytest.approx(0.005)


def test_a_reduce_only_perp_order_is_capped_at_the_position_it_reduces():
    perps = PerpClient(position=0.004)
    order = _place(_ledger(perps), Intent.CLOSE, Side.SELL, 0.01)
    assert order.reduce_only and order.qty == pytest.approx(0.004)
    assert perps.created[0]["qty"] == pytest.approx(0.004) and perps.created[0]["reduce_only"] is True


@pytest.mark.parametrize("position", [0.0, -0.01])   # flat, or on the order's own side: nothing to reduce
def test_a_reduce_only_perp_order_with_nothing_to_reduce_is_never_sent(position):
    perps = PerpClient(position=position)
    order = _place(_ledger(perps), Intent.KILL, Side.SELL, 0.01)
    assert order.status is OrderStatus.NOT_PLACED and not perps.created


def test_a_lost_perp_create_stays_unknown_until_found_by_client_order_id():
    perps = PerpClient(lose_create=True)
    ledger = _ledger(perps)
    order = _place(ledger, Intent.OPEN, Side.BUY, 0.005)
    assert order.status is OrderStatus.UNKNOWN and order.order_id is None
    ledger.poll(order)
    assert perps.queries == [{"order_id": None, "client_order_id": order.client_order_id}]
    assert order.status is OrderStatus.FILLED and order.order_id == 555 and order.fee == 0.03
    assert len(perps.created) == 1


def test_perp_cancels_go_to_the_perp_endpoint():
    perps = PerpClient()
    ledger = _ledger(perps)
    order = _place(ledger, Intent.OPEN, Side.BUY, 0.005)
    ledger.cancel(order)
    assert perps.cancelled == [555] and order.status is OrderStatus.CANCEL_REQUESTED


def test_a_ledger_without_perp_endpoints_refuses_a_perp_order_before_recording_it():
    store = Store()
    with pytest.raises(ValueError, match="no perpetual client"):
        _place(_ledger(None, store), Intent.OPEN, Side.BUY, 0.005)
    assert store.saved == []


def test_a_perp_orders_states_read_as_the_ledgers():
    base = PerpClient()
    base.created.append({"coid": 101000000007021001, "side": 1, "qty": 0.01, "price": 1.0, "reduce_only": False})
    order = base.perp_order()
    for state, expected in [(PerpOrderState.WAITING_EFFECT, 0), (PerpOrderState.PRE_CANCEL, 4),
                            (PerpOrderState.FILLED, 1), (None, None)]:
        view = perp_order_view(PerpOrder(**{**vars(order), "state": state}))
        assert view.state == expected and view.fill_qty == 0.01 and view.client_order_id == order.client_order_id


# ---- funding ------------------------------------------------------------------------------

def test_funding_instants_are_00_08_16_utc():
    day = 1_772_409_600_000   # 2026-03-02 00:00 UTC
    assert funding_instants(day, day + 24 * 3600_000) == [day + h * 3600_000 for h in (8, 16, 24)]
    assert funding_instants(day + 1, day + 8 * 3600_000 - 1) == []


class FundingLedger:
    def __init__(self, fills: dict[str, float]) -> None:
        self.fills = fills

    def orders(self, trade_id: str | None = None, leg_index: int | None = None, family: Any = None) -> list:
        return [SimpleNamespace(filled_qty=self.fills[trade_id], last_fill_at=START, intent=Intent.OPEN)]


class FundingClient:
    def __init__(self, payments: list[FundingPayment]) -> None:
        self.payments = payments
        self.reads = 0

    def perp_funding_records(self, symbol: str, *, start_ms: Any = None, end_ms: Any = None) -> list:
        self.reads += 1
        return list(self.payments)

    def perp_positions(self) -> list:
        return []


def _perp_trade(trade_id: str, side: Side, qty: float) -> TradeLifecycle:
    leg = TradeLeg(index=0, contract=Contract.perpetual("BTC"), side=side, qty=qty, open_filled=qty)
    return TradeLifecycle(id=trade_id, seq=1, strategy="s", state=TradeState.OPEN, legs=[leg], opened_at=START)


def test_a_funding_payment_is_split_pro_rata_by_signed_quantity_once():
    instant = 1_772_438_400_000   # 08:00 UTC
    payment = FundingPayment(record_id=1, symbol="BTCUSD", side=Side.BUY, qty=0.01, rate=0.0001, fee=-1.0,
                             time_ms=instant)
    client = FundingClient([payment])
    a, b = _perp_trade("A", Side.BUY, 0.006), _perp_trade("B", Side.BUY, 0.004)
    funding = FundingAttribution(client, FundingLedger({"A": 0.006, "B": 0.004}))
    now = instant / 1000 + 120
    booked = funding.attribute([a, b], now)
    assert [(t.id, amount) for t, _key, amount in booked] == [("A", pytest.approx(-0.6)), ("B", pytest.approx(-0.4))]
    assert a.legs[0].funding == pytest.approx(-0.6) and a.metadata[FUNDING_KEY] == {f"BTCUSD@{instant}": -0.6}
    assert funding.attribute([a, b], now) == [] and client.reads == 1        # checked: never again
    a.metadata.pop("funding_checked_ms")
    assert funding.attribute([a], now) == [] and a.legs[0].funding == pytest.approx(-0.6)   # keyed: idempotent


def test_a_position_beyond_our_trades_keeps_its_share_and_the_other_side_gets_the_opposite():
    instant = 1_772_438_400_000
    payment = FundingPayment(record_id=1, symbol="BTCUSD", side=Side.BUY, qty=0.01, rate=0.0001, fee=-1.0,
                             time_ms=instant)
    long_, short = _perp_trade("A", Side.BUY, 0.008), _perp_trade("B", Side.SELL, 0.002)
    funding = FundingAttribution(FundingClient([payment]), FundingLedger({"A": 0.008, "B": 0.002}))
    funding.attribute([long_, short], instant / 1000 + 120)
    assert long_.legs[0].funding == pytest.approx(-0.8) and short.legs[0].funding == pytest.approx(0.2)


def test_funding_is_not_read_before_the_delay_nor_for_trades_without_perps():
    instant = 1_772_438_400_000
    client = FundingClient([])
    funding = FundingAttribution(client, FundingLedger({"A": 0.01}))
    trade = _perp_trade("A", Side.BUY, 0.01)
    assert funding.attribute([trade], instant / 1000 + 30) == [] and client.reads == 0
    option = TradeLifecycle(id="O", seq=2, strategy="s", state=TradeState.OPEN, opened_at=START,
                            legs=[TradeLeg(index=0, contract=Contract("X", "BTC", "C", 1.0, 1), side=Side.BUY, qty=1)])
    assert funding.due(option, instant / 1000 + 3600) == []


def test_an_ended_trade_is_settled_for_funding_only_once_every_instant_up_to_its_end_is_past():
    """The lifecycle stops asking about trades that can never be due again (a long run's history)."""
    instant = 1_772_438_400_000   # 08:00 UTC
    funding = FundingAttribution(FundingClient([]), FundingLedger({"A": 0.01}))
    trade = _perp_trade("A", Side.BUY, 0.01)
    assert not funding.settled(trade, instant / 1000 + 3600)                      # open: never settled
    trade.state, trade.closed_at = TradeState.CLOSED, instant / 1000 + 5           # closed just after 08:00
    assert funding.due(trade, instant / 1000 + 30) == [] and not funding.settled(trade, instant / 1000 + 30)
    assert funding.due(trade, instant / 1000 + 3600) == [instant]                  # 08:00 still to book
    trade.metadata["funding_checked_ms"] = instant                                 # booked
    assert funding.due(trade, instant / 1000 + 3600) == [] and funding.settled(trade, instant / 1000 + 3600)
    option = TradeLifecycle(id="O", seq=2, strategy="s", state=TradeState.CLOSED, opened_at=START, closed_at=START + 1,
                            legs=[TradeLeg(index=0, contract=Contract("X", "BTC", "C", 1.0, 1), side=Side.BUY, qty=1)])
    assert funding.settled(option, START + 2)                                      # no perp: nothing to book


# ---- account, conditions, sanity --------------------------------------------------------------

def _position(symbol: str, signed: float, delta: float) -> Any:
    return SimpleNamespace(symbol=symbol, qty=abs(signed), signed_qty=signed, delta=delta, gamma=0.0, theta=0.0,
                           vega=0.0, missing_greeks=())


def test_a_perp_position_is_a_snapshot_position_whose_delta_is_its_signed_qty():
    raw = PerpPosition(position_id=9, symbol="ETHUSD", side=Side.SELL, qty=0.5, signed_qty=-0.5, avg_price=2000.0,
                       mark_price=2010.0, unrealized_pnl=-5.0, initial_margin=None, maintenance_margin=None,
                       leverage=None, liquidation_price=None, update_time_ms=None)
    position = perp_position_snapshot(raw, timestamp=START)
    assert position.delta == -0.5 and position.signed_qty == -0.5 and position.gamma == 0.0
    assert position_kind(position) == "perpetual"
    snapshot = AccountSnapshot.build(equity=1.0, available_margin=1.0, initial_margin=0.0, maintenance_margin=0.0,
                                     unrealized_pnl=0.0, positions=[position, _position("BTCUSD-27MAR26-90000-C", 0.1, 0.03)],
                                     timestamp=START)
    assert snapshot.net_delta == pytest.approx(-0.47)
    assert snapshot.delta_of("ETH") == -0.5 and snapshot.delta_of("BTC") == pytest.approx(0.03)
    assert snapshot.greeks_by_underlying()["ETH"]["delta"] == -0.5


def test_account_delta_conditions_count_perps_per_underlying_when_named():
    snapshot = SimpleNamespace(net_delta=0.4, positions=[_position("ETHUSD", -0.5, -0.5),
                                                         _position("BTCUSD", 0.9, 0.9)])
    assert conditions.max_account_delta(0.45)(snapshot)
    assert not conditions.max_account_delta(0.45, underlying="BTC")(snapshot)
    assert conditions.max_account_delta(0.45, underlying="ETH").name == \
        "max_account_delta(limit=0.45, underlying=ETH)"
    assert conditions.account_delta_limit(1.0).name == "account_delta_limit(limit=1.0)"
    assert conditions.account_delta_limit(0.6, underlying="BTC")(snapshot, None)
    with pytest.raises(ConfigError, match="underlying"):
        conditions.account_delta_limit(1.0, underlying="btc")


def test_a_perps_believable_prices_are_a_band_around_its_index():
    band = sanity_band(PERPETUAL, 0.0, 0, 100_000.0, 0.0, START, symbol="BTCUSD")
    assert band.low == pytest.approx(100_000.0 * (1 - PERP_BAND_OF_INDEX))
    assert band.high == pytest.approx(100_000.0 * (1 + PERP_BAND_OF_INDEX))
    assert band.problem("bid", 90_000.0) is not None and band.problem("bid", 99_000.0) is None
