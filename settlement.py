"""Expiry settlement: what expiry paid a leg we held at its expiry (BEHAVIOUR.md 4.5, incident 19).

Why this module exists: the lifecycle manager decides *when* a trade settles (the pre-expiry
halt, SETTLING once every leg it holds has expired); this module says *what* a leg was paid:
the delivery price (the exchange's ``get-delivery-prices``, API.md 6.5; its estimated expiration
price after 24 hours without one), the exchange's exercise record when it describes exactly our
quantity (never pro-rated), and otherwise intrinsic value with the delivery fee of API.md 4.
Everything it computes is flagged when it is an estimate.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping

from alerts import send_alert
from coincall_payloads import (
    ExerciseRecord,
    history_filters,
    parse_delivery_prices,
    parse_estimated_expiration_price,
    parse_exercise_records,
)
from contracts import DEFAULT_UNDERLYING, index_name
from fees import DELIVERY_FEE_RATE, FEE_CAP_OF_PREMIUM
from seams import AlertSender, SettlementClient
from trade_fills import QTY_EPSILON

if TYPE_CHECKING:
    from trade_lifecycle import TradeLeg, TradeLifecycle

logger = logging.getLogger(__name__)

DELIVERY_WARN_SECONDS = 3600.0
DELIVERY_ESTIMATE_SECONDS = 24 * 3600.0
DELIVERY_RETRY_SECONDS = 10.0
# A settlement booked at the estimated expiration price is revised when the delivery price
# shows up: asked once a minute per expiry, for this long after the expiry.
REVISION_RETRY_SECONDS = 60.0
REVISION_WINDOW_SECONDS = 7 * 24 * 3600.0
# A settlement booked without the exchange's exercise record (its fee estimated) reads the
# record again: the exchange writes it hours after the expiry (its example is stamped about
# 9.5 h after 08:00), so the first read at the delivery price often misses it. Asked every 10
# minutes per symbol for two days; a daily expiry pays no delivery fee, so it is not asked.
EXERCISE_RETRY_SECONDS = 600.0
EXERCISE_WINDOW_SECONDS = 48 * 3600.0
# How often an expired leg that is not yet settled has its value (intrinsic at the estimated
# expiration price) read again; ``ExpiryMark``.
EXPIRY_MARK_RETRY_SECONDS = 10.0


@dataclass
class Settlement:
    """What expiry paid a leg: cash = sign x intrinsic x qty, fee per API.md 4."""

    delivery_price: float
    qty: float
    intrinsic: float
    cash: float
    fee: float
    fee_estimated: bool = False
    price_estimated: bool = False
    settled_at: float = 0.0

    def to_record(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def fee_revisable(self, expiry_ms: int) -> bool:
        """Its fee is an estimate the exchange's exercise record may still replace."""
        return self.fee_estimated and not is_daily_expiry(expiry_ms)

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> "Settlement":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def shrunk_to(self, qty: float) -> "Settlement":
        """This settlement cut down to ``qty`` (cash and fee pro rata), for a leg whose reducing
        fills became known after it was settled.

        Why: a close order on an expiring leg can report its fill late (a late-fill poll, a
        VANISHED or presumed NOT_PLACED verdict reversed days later). The quantity it closed was
        never delivered, so it must leave the settlement, or the same quantity counts twice:
        once as a close and once at the delivery price.
        """
        if self.qty <= 0 or qty >= self.qty:
            return self
        share = max(0.0, qty) / self.qty
        return replace(self, qty=round(max(0.0, qty), 8), cash=round(self.cash * share, 8),
                       fee=round(self.fee * share, 8))


def is_daily_expiry(expiry_ms: int) -> bool:
    """Weeklies, monthlies and quarterlies expire on Fridays; every other expiry is a daily."""
    return datetime.fromtimestamp(expiry_ms / 1000.0, tz=timezone.utc).weekday() != 4


def intrinsic_value(option_type: str, strike: float, delivery: float) -> float:
    if option_type.upper().startswith("C"):
        return max(0.0, delivery - strike)
    return max(0.0, strike - delivery)


def estimated_delivery_fee(expiry_ms: int, qty: float, delivery: float, intrinsic: float) -> float:
    """API.md 4: min(qty x index x 0.015 %, qty x |settle - strike| x 12.5 %); dailies pay none."""
    if is_daily_expiry(expiry_ms):
        return 0.0
    return round(min(qty * delivery * DELIVERY_FEE_RATE, qty * intrinsic * FEE_CAP_OF_PREMIUM), 8)


def find_delivery_price(data: Any, expiry_ms: int) -> float | None:
    """The delivery price of ``expiry_ms`` in a ``get-delivery-prices`` answer (API.md 6.5), or None.

    A row's date is matched as epoch ms, or as a calendar date of the expiry's UTC day
    (``DeliveryPrice.covers``).
    """
    return next((row.price for row in parse_delivery_prices(data) if row.covers(expiry_ms)), None)


@dataclass(frozen=True)
class ExpiryMark:
    """What an expired leg is worth while its settlement is not booked yet.

    Why: a calendar or diagonal trade still holds its far leg when the near one expires, and
    the near leg has no quote any more; until its delivery price is listed (minutes, at worst
    a day) the trade had no valuation, so its stop loss and profit target were blind. Past
    the expiry the settlement price is fixed: it is the index's mean over the window before
    the expiry, which the exchange's estimated expiration price reports (API.md 6.5). The
    leg is worth its intrinsic value at that price (at the delivery price once listed,
    ``final``); ``as_of`` is when the price was read, so a valuation can refuse an old one.
    """

    price: float
    final: bool
    as_of: float


@dataclass
class DeliveryWatch:
    """One trade's settlement retries, in memory: when to ask again, and whether a missing price was alerted."""

    next_check: float = 0.0
    warned: bool = False


class Settler:
    """Settles expired legs from the exchange's delivery prices and exercise records."""

    def __init__(self, client: SettlementClient, alerts: AlertSender | None) -> None:
        self.client = client
        self.alerts = alerts
        # Keyed by (underlying, expiry): BTC and ETH options expire at the same instant at
        # different delivery prices.
        self._delivery_prices: dict[tuple[str, int], float] = {}
        self._revision_next: dict[tuple[str, int], float] = {}   # when to ask again for a revision
        self._exercise_next: dict[str, float] = {}   # symbol -> when to read its exercise record again
        self._expiry_marks: dict[tuple[str, int], ExpiryMark] = {}
        self._expiry_mark_next: dict[tuple[str, int], float] = {}   # when to read the estimate again

    @staticmethod
    def due(watch: DeliveryWatch, now: float) -> bool:
        """Whether to try this trade's settlement now (every ``DELIVERY_RETRY_SECONDS`` until it is done)."""
        if now < watch.next_check:
            return False
        watch.next_check = now + DELIVERY_RETRY_SECONDS
        return True

    def settle_leg(self, trade: TradeLifecycle, leg: TradeLeg, watch: DeliveryWatch, now: float) -> bool:
        """Book what expiry paid ``leg`` on its trade; False while the delivery price is unknown.

        The caller persists the trade when this returns True.
        """
        qty = leg.net_qty
        contract = leg.contract
        delivery, estimated = self._delivery_price(contract.underlying or DEFAULT_UNDERLYING, contract.expiry_ms,
                                                   now, trade, watch)
        record = self._exercise_record(leg, qty)
        if delivery is None and record is not None:
            delivery = record.exercise_price
        if delivery is None:
            return False
        intrinsic = intrinsic_value(contract.option_type, contract.strike, delivery)
        cash = round(leg.sign * intrinsic * qty, 8)
        if record is not None and record.fees is not None:
            fee, fee_estimated = record.fees, False
            exact_cash = record.settlement_cash_flow
            if exact_cash is not None:
                cash = exact_cash
        else:
            fee, fee_estimated = estimated_delivery_fee(contract.expiry_ms, qty, delivery, intrinsic), True
        leg.settlement = Settlement(delivery_price=delivery, qty=qty, intrinsic=intrinsic, cash=cash, fee=fee,
                                    fee_estimated=fee_estimated, price_estimated=estimated, settled_at=now)
        for flag, on in (("fee_estimated", fee_estimated), ("settlement_estimated", estimated)):
            if on and flag not in trade.flags:
                trade.flags.append(flag)
        trade.fees_paid = trade.total_fees()
        logger.info("trade %s leg %d %s settled: %s x %.2f intrinsic at delivery %.2f, fee %.2f", trade.id,
                    leg.index, leg.symbol, qty, intrinsic, delivery, fee)
        return True

    def expiry_mark(self, underlying: str, expiry_ms: int, now: float) -> ExpiryMark | None:
        """The price an expired, unsettled leg of ``underlying`` at ``expiry_ms`` is valued at
        (``ExpiryMark``): the delivery price once this settler knows it, else the exchange's
        estimated expiration price, read at most every ``EXPIRY_MARK_RETRY_SECONDS``.

        A failed or empty read keeps the last mark, with its own ``as_of``: the valuation
        judges its age, so an outage leaves the trade unevaluable, never valued on an old price.
        """
        key = (underlying, expiry_ms)
        if key in self._delivery_prices:
            return ExpiryMark(self._delivery_prices[key], True, now)
        last = self._expiry_marks.get(key)
        if now < self._expiry_mark_next.get(key, 0.0):
            return last
        self._expiry_mark_next[key] = now + EXPIRY_MARK_RETRY_SECONDS
        try:
            estimate = parse_estimated_expiration_price(
                self.client.estimated_expiration_price(expiry_ms, index=index_name(underlying)))
        except Exception as error:  # noqa: BLE001 - read again later; the valuation waits meanwhile
            logger.info("estimated expiration price of %s %d unavailable: %s", underlying, expiry_ms, error)
            return last
        if estimate is None or not estimate > 0:
            return last
        mark = ExpiryMark(float(estimate), False, now)
        self._expiry_marks[key] = mark
        return mark

    def revise_leg(self, leg: TradeLeg, now: float) -> Settlement | None:
        """``leg``'s settlement at the exchange's delivery price, when it was booked at the estimate
        and that price is now listed; None while it is not (asked once a minute per expiry).

        Why: after 24 h without a delivery price the estimated expiration price is booked so the
        trade can end (BEHAVIOUR 4.5); it is a verdict on missing data, and the delivery price
        is what the exchange paid. The quantity stays; the intrinsic value, the cash and an
        estimated fee follow the delivery price; an exact exercise record's cash is kept.
        """
        settlement = leg.settlement
        if settlement is None:
            return None
        if not settlement.price_estimated:
            return self._revise_fee(leg, settlement, now)
        contract = leg.contract
        key = (contract.underlying or DEFAULT_UNDERLYING, contract.expiry_ms)
        delivery = self._delivery_prices.get(key)
        if delivery is None:
            if now < self._revision_next.get(key, 0.0):
                return None
            self._revision_next[key] = now + REVISION_RETRY_SECONDS
            try:
                delivery = find_delivery_price(self.client.delivery_prices(index_name(key[0])), contract.expiry_ms)
            except Exception as error:  # noqa: BLE001 - asked again later
                logger.info("delivery prices unavailable for the revision of an estimated settlement: %s", error)
                return None
            if delivery is None:
                return None
            self._delivery_prices[key] = delivery
        intrinsic = intrinsic_value(contract.option_type, contract.strike, delivery)
        if not settlement.fee_estimated:   # booked from the exchange's exercise record: its cash and fee stand
            return replace(settlement, delivery_price=delivery, intrinsic=intrinsic, price_estimated=False)
        return replace(settlement, delivery_price=delivery, intrinsic=intrinsic,
                       cash=round(leg.sign * intrinsic * settlement.qty, 8),
                       fee=estimated_delivery_fee(contract.expiry_ms, settlement.qty, delivery, intrinsic),
                       price_estimated=False)

    def _revise_fee(self, leg: TradeLeg, settlement: Settlement, now: float) -> Settlement | None:
        """``leg``'s settlement with the exchange's exercise record (its fee and cash), once the
        record shows our exact quantity; None until then (read every ``EXERCISE_RETRY_SECONDS``).

        Why: a settlement booked without the record carries an estimated fee; that is a verdict
        on missing data, and the record is what the exchange charged.
        """
        if not settlement.fee_revisable(leg.contract.expiry_ms):
            return None
        if now < self._exercise_next.get(leg.symbol, 0.0):
            return None
        self._exercise_next[leg.symbol] = now + EXERCISE_RETRY_SECONDS
        record = self._exercise_record(leg, settlement.qty)
        if record is None or record.fees is None:
            return None
        cash = record.settlement_cash_flow if record.settlement_cash_flow is not None else settlement.cash
        return replace(settlement, fee=record.fees, cash=cash, fee_estimated=False)

    def _delivery_price(self, underlying: str, expiry_ms: int, now: float, trade: TradeLifecycle,
                        watch: DeliveryWatch) -> tuple[float | None, bool]:
        """Delivery price of ``underlying`` at ``expiry_ms`` (cached); after 24 h, the estimated expiration price."""
        key = (underlying, expiry_ms)
        index = index_name(underlying)
        if key in self._delivery_prices:
            return self._delivery_prices[key], False
        try:
            price = find_delivery_price(self.client.delivery_prices(index), expiry_ms)
        except Exception as error:  # noqa: BLE001 - retried later
            logger.warning("delivery prices unavailable: %s", error)
            price = None
        if price is not None:
            self._delivery_prices[key] = price
            return price, False
        waited = now - expiry_ms / 1000.0
        if waited >= DELIVERY_WARN_SECONDS and not watch.warned:
            watch.warned = True
            send_alert(self.alerts, logger, "WARNING", "delivery_price_missing",
                       f"trade {trade.id}: no delivery price {waited / 60:.0f} min after expiry {expiry_ms}",
                       trade_id=trade.id, expiry_ms=expiry_ms)
        if waited >= DELIVERY_ESTIMATE_SECONDS:
            try:
                estimate = parse_estimated_expiration_price(self.client.estimated_expiration_price(expiry_ms,
                                                                                                   index=index))
            except Exception as error:  # noqa: BLE001
                logger.warning("estimated expiration price unavailable: %s", error)
                estimate = None
            if estimate is not None and estimate > 0:
                return estimate, True
        return None, False

    def _exercise_record(self, leg: TradeLeg, qty: float) -> ExerciseRecord | None:
        """The exchange's settlement record when it describes exactly our quantity (no pro-rating)."""
        try:
            data = self.client.exercise_history(**history_filters(symbol=leg.symbol))
        except Exception as error:  # noqa: BLE001 - the computed settlement is used instead
            logger.info("exercise history for %s unavailable: %s", leg.symbol, error)
            return None
        for record in parse_exercise_records(data):
            if record.symbol != leg.symbol:
                continue
            if record.qty is not None and abs(record.qty - qty) < QTY_EPSILON and (
                    record.side is None or record.side == leg.side):
                return record
        return None
