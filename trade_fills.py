"""A trade's fills, read from our own order ledger: the only truth about its exposure and PnL.

Why this module exists: BEHAVIOUR.md 4.1 (incidents 4 and 33) rules that a leg's exposure is
its open fills minus its reducing fills (close, unwind, kill), as the ``OrderLedger`` recorded
them; account positions, ``upnl`` and pro-rating are never used. ``TradeFills`` is the one
place the lifecycle reads those fills, the times of the last ones and the orders still
working, so the rule is written once. The quantity helpers say when a sum of 0.01 lots is
zero, for every part of the lifecycle. ``FundingAttribution`` books the funding the exchange
paid or charged on our perpetual positions into the trades that held them (docs/PERPETUALS.md).
What may still change a trade's fills is read here too, because a trade must not end while
it can (BEHAVIOUR.md 4.1 I2): orders still working, final orders that may report a fill late
(API.md 11.16), and RFQ accepts a restart cut from their answer (``AcceptsInDoubt``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Container, Iterable, Mapping

from errors import TraderError
from order_ledger import Intent, OrderStatus
from seams import BlockAcceptWatch, LifecycleLedger, PerpAccountClient, ReconcilerLedger

if TYPE_CHECKING:
    from coincall_payloads import FundingPayment
    from order_ledger import LedgerOrder
    from trade_lifecycle import TradeLifecycle

logger = logging.getLogger(__name__)

QTY_EPSILON = 1e-9               # below this a quantity is zero (fills are 0.01 lots)
REDUCING_FAMILIES = (Intent.CLOSE, Intent.UNWIND, Intent.KILL)


def is_zero(qty: float) -> bool:
    return abs(qty) < QTY_EPSILON


def clean_qty(qty: float) -> float:
    """Sum of 0.01 lots without float residue; never negative."""
    value = round(float(qty), 8)
    return 0.0 if value < QTY_EPSILON else value


class TradeFills:
    """What the ledger says about one trade: its legs' fills, the time of its last fill, whether
    it ever sent an order, and the orders a restart left without a job."""

    def __init__(self, ledger: LifecycleLedger) -> None:
        self.ledger = ledger
        # The orders ``resolve_stray_orders`` cancelled or polled, per trade, until each has had
        # its late-fill poll (``strays_settled``): no engine waits the grace for those.
        self._strays: dict[str, set[int]] = {}

    def sync(self, trade: TradeLifecycle) -> list[int]:
        """Legs' fills from the ledger: open family, and close + unwind + kill together.

        A leg whose own reducing fills now cover part of what was booked as closed outside the
        daemon, or of what was settled, has that booking cut to what it still held (the external
        close first: it is an inference; then ``Settlement.shrunk_to``): returns the indexes of
        the legs so revised (the caller persists and re-books the PnL).
        """
        revised: list[int] = []
        for leg in trade.legs:
            qty, vwap, fees = self.ledger.leg_fill(trade.id, leg.index, Intent.OPEN)
            leg.open_filled, leg.open_vwap, leg.open_fees = clean_qty(qty), float(vwap or 0.0), float(fees or 0.0)
            total_qty = total_value = total_fees = 0.0
            for family in REDUCING_FAMILIES:
                qty, vwap, fees = self.ledger.leg_fill(trade.id, leg.index, family)
                total_qty += qty
                total_value += qty * (vwap or 0.0)
                total_fees += fees or 0.0
            leg.close_filled = clean_qty(total_qty)
            leg.close_vwap = total_value / total_qty if total_qty > QTY_EPSILON else 0.0
            leg.close_fees = total_fees
            if leg.external_qty > QTY_EPSILON:
                # An external close is inferred from fills that were not known to be ours; a close
                # fill of ours arriving later for the same quantity (an order whose fate rested on
                # missing data, RECOVERY.md O9, O10) proves the inference wrong for that part.
                held = leg.open_filled + leg.adopted_qty - leg.close_filled - leg.settled_qty
                if held < leg.external_qty - QTY_EPSILON:
                    logger.warning("trade %s leg %d %s: our close fills known after an external close was booked "
                                   "cover %s of the %s booked as external; the external close is cut to %s",
                                   trade.id, leg.index, leg.symbol, round(leg.external_qty - max(0.0, held), 8),
                                   leg.external_qty, clean_qty(held))
                    leg.external_qty = clean_qty(held)
                    revised.append(leg.index)
            if leg.settlement is not None:
                held = leg.open_filled + leg.adopted_qty - leg.close_filled - leg.external_qty
                if held < leg.settlement.qty - QTY_EPSILON:
                    logger.warning("trade %s leg %d %s: reducing fills known after settlement close %s of the %s "
                                   "settled; the settlement is cut to %s", trade.id, leg.index, leg.symbol,
                                   round(leg.settlement.qty - max(0.0, held), 8), leg.settlement.qty,
                                   clean_qty(held))
                    leg.settlement = leg.settlement.shrunk_to(clean_qty(held))
                    revised.append(leg.index)
        trade.fees_paid = trade.total_fees()
        return revised

    def last_fill_time(self, trade: TradeLifecycle, family: Intent, default: float) -> float:
        """When the latest fill of ``family`` happened (the exchange's time when known); ``default`` if none."""
        try:
            times = [float(o.last_fill_at or o.updated_at)
                     for o in self.ledger.orders(trade.id, family=family)
                     if float(o.filled_qty) > 0 and o.updated_at]
        except Exception:  # noqa: BLE001
            logger.exception("trade %s: reading fill times failed", trade.id)
            times = []
        return max(times) if times else default

    def orders_recorded(self, trade: TradeLifecycle) -> bool:
        """Whether the ledger holds any order of the trade (one that may have been sent); an
        unreadable ledger counts as "yes", so nothing that may exist is forgotten."""
        try:
            return bool(self.ledger.orders(trade.id))
        except Exception:  # noqa: BLE001
            logger.exception("trade %s: reading its orders failed", trade.id)
            return True

    def orders_placed(self, trade: TradeLifecycle) -> bool:
        """Whether any order of the trade may have reached the exchange (an open that failed then alerts)."""
        try:
            return any(o.order_id is not None or str(o.status).endswith("UNKNOWN")
                       for o in self.ledger.orders(trade.id))
        except Exception:  # noqa: BLE001
            return True

    def resolve_stray_orders(self, trade: TradeLifecycle) -> bool:
        """Non-final orders with no job (left by a restart): make them final before a new round.

        A working order (LIVE/PARTIAL) is cancelled; anything else (cancel requested, unknown,
        recorded but maybe unsent) is polled until the exchange gives its final state. True
        while any remains, so no new order goes out on a leg that still has one.
        """
        try:
            live = list(self.ledger.live_orders(trade.id))
        except Exception:  # noqa: BLE001
            logger.exception("trade %s: reading live orders failed", trade.id)
            return True
        if live:
            self._strays.setdefault(trade.id, set()).update(order.client_order_id for order in live)
        for order in live:
            try:
                if order.status in (OrderStatus.LIVE, OrderStatus.PARTIAL):
                    self.ledger.cancel(order)
                else:
                    self.ledger.poll(order)
            except Exception:  # noqa: BLE001 - polled again next tick
                logger.exception("trade %s: polling stray order %s failed", trade.id, order.client_order_id)
        if live:
            self.sync(trade)
        return bool(live)

    def non_final_orders(self, trade: TradeLifecycle) -> list[LedgerOrder] | None:
        """The trade's orders that are not final yet, without sending anything; None if unreadable.

        For the callers that must not act (the reconciler books an external close while the
        lifecycle may be on hold): they only learn that the trade cannot end yet, and the tick
        resolves the orders.
        """
        try:
            return list(self.ledger.live_orders(trade.id))
        except Exception:  # noqa: BLE001
            logger.exception("trade %s: reading live orders failed", trade.id)
            return None

    def has_non_final_orders(self, trade: TradeLifecycle) -> bool:
        """``non_final_orders`` as a yes or no; a ledger that cannot answer counts as "yes" (fail closed)."""
        working = self.non_final_orders(trade)
        return working is None or bool(working)

    def poll_non_final_on(self, trade: TradeLifecycle, leg_indexes: Container[int]) -> bool:
        """Poll (never cancel) the non-final orders on these legs; True while any stays non-final.

        Why: an expired or frozen leg's resting order is left for the exchange to end at expiry
        (BEHAVIOUR 4.5), and a fill it reports on the way changes what that leg still holds;
        settling the leg before the order is final would pay the same quantity twice, once as
        a close fill and once at the delivery price.
        """
        try:
            waiting = [order for order in self.ledger.live_orders(trade.id) if order.leg_index in leg_indexes]
        except Exception:  # noqa: BLE001
            logger.exception("trade %s: reading live orders failed", trade.id)
            return True
        if not waiting:
            return False
        for order in waiting:
            try:
                self.ledger.poll(order)
            except Exception:  # noqa: BLE001 - polled again next tick
                logger.exception("trade %s: polling order %s failed", trade.id, order.client_order_id)
        self.sync(trade)
        return any(not order.status.is_final for order in waiting)

    def late_fills_settled(self, trade: TradeLifecycle, now: float, grace_seconds: float, max_requests: int, *,
                           families: Container[Intent]) -> bool:
        """True once no final order of the interrupted job's ``families`` can still report a fill we have not seen.

        Why: an order can read cancelled with nothing filled and report its fill seconds later
        (API.md 11.16). The engines wait for that (their grace poll), but a restart cuts the
        wait short, and an interrupted open judged on fills that are not all in yet ends
        FAILED with a real position: the late fill then only raises an alert, with nothing
        left to unwind it. So each final, not fully filled order that has not been polled
        since the process started is polled once more, ``grace_seconds`` after its last
        update, at most ``max_requests`` of them per call; a poll with no answer proves
        nothing and is asked again at the next call. Only the intent families of the job the
        restart interrupted are asked (an open's, or a close's): the jobs that ended before it
        had their grace poll.
        """
        return self._late_fills_settled(trade, now, grace_seconds, max_requests,
                                        keep=lambda order: order.intent.family() in families)

    def late_fills_settled_on(self, trade: TradeLifecycle, leg_indexes: Container[int], now: float,
                              grace_seconds: float, max_requests: int) -> bool:
        """``late_fills_settled`` for every final order on these legs, whatever its intent.

        Why: an order that has just ended (the exchange ends a resting order at expiry; a
        restart leaves a hedge order cancelled as a stray or in its job's grace) can report its
        fill a moment later (API.md 11.16). An expired leg must not be paid at the delivery
        price for a quantity such a fill closed, and a hedge must not send again the
        rebalance such a fill already made: both wait for each order's late-fill poll.
        """
        return self._late_fills_settled(trade, now, grace_seconds, max_requests,
                                        keep=lambda order: order.leg_index in leg_indexes)

    def strays_settled(self, trade: TradeLifecycle, now: float, grace_seconds: float, max_requests: int) -> bool:
        """``late_fills_settled`` for the orders ``resolve_stray_orders`` made final: no engine
        waited the grace for those, and a trade judged flat (or sized for a new round) right
        after their cancel could miss a fill they report a moment later."""
        ids = self._strays.get(trade.id)
        if not ids:
            return True
        if not self._late_fills_settled(trade, now, grace_seconds, max_requests,
                                        keep=lambda order: order.client_order_id in ids):
            return False
        del self._strays[trade.id]
        return True

    def strays_pending(self, trade: TradeLifecycle) -> bool:
        """Whether orders ``resolve_stray_orders`` made final still wait for their late-fill poll
        (read-only: for callers that must not send anything)."""
        return bool(self._strays.get(trade.id))

    def _late_fills_settled(self, trade: TradeLifecycle, now: float, grace_seconds: float, max_requests: int, *,
                            keep: Callable[[LedgerOrder], bool]) -> bool:
        try:
            # A VANISHED order is not asked again here: the exchange has said three ways that it
            # does not know it, and the reconciler keeps re-checking that verdict (RECOVERY.md O8)
            # and has the trade re-read its fills when it is reversed.
            waiting = [order for order in self.ledger.orders(trade.id)
                       if keep(order) and order.status is not OrderStatus.VANISHED
                       and self.ledger.late_fill_possible(order)]
        except Exception:  # noqa: BLE001
            logger.exception("trade %s: reading its final orders failed", trade.id)
            return False
        if not waiting:
            return True
        asked = 0
        gained = False
        for order in waiting:
            if asked >= max_requests or now - float(order.updated_at) < grace_seconds:
                continue
            asked += 1
            try:
                found = self.ledger.recheck_final(order)
            except Exception:  # noqa: BLE001 - asked again at the next call
                logger.exception("trade %s: polling final order %s again failed", trade.id, order.client_order_id)
                continue
            gained = gained or (found is not None and found > QTY_EPSILON)
        if gained:
            self.sync(trade)
        return not any(self.ledger.late_fill_possible(order) for order in waiting)


# ---------------------------------------------------------------------------------------------
# RFQ accepts a restart may have cut from their answer (docs/RECOVERY.md R1-R3, T4)
# ---------------------------------------------------------------------------------------------

# A block trade's time is the exchange's, the accept record's is ours: a block fill counts as the
# answer to an accept when it is no older than the record by more than this.
BLOCK_FILL_CLOCK_SLACK_SECONDS = 30.0


@dataclass(frozen=True)
class AcceptMarker:
    """One accept recorded before it was sent (``OrderLedger.note_block_accept``): the trade,
    the intent its fills carry, the RFQ, the leg indexes it covers and when it was recorded.
    ``legs`` is empty when the record does not say (then only the reconciler can settle it)."""

    trade_id: str
    intent: Intent | None
    request_id: str
    legs: tuple[int, ...]
    at: float

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> AcceptMarker | None:
        """The marker of a stored ``rfq_accept_sent`` event; None without a trade to attach it to.

        A part that does not read is kept as "unknown" rather than dropped: an accept we
        cannot read is still an accept that may have happened.
        """
        payload = event.get("payload")
        if not isinstance(payload, Mapping) or not payload.get("trade_id"):
            logger.error("RFQ accept record %s names no trade; it cannot hold a trade back", event.get("id"))
            return None
        try:
            intent: Intent | None = Intent(int(payload["intent"]))
        except (KeyError, TypeError, ValueError):
            intent = None
        try:
            legs = tuple(int(leg[0]) for leg in payload.get("legs") or ())
        except (TypeError, ValueError, IndexError):
            legs = ()
        return cls(trade_id=str(payload["trade_id"]), intent=intent, request_id=str(payload.get("request_id")),
                   legs=legs, at=float(event.get("ts") or 0.0))


@dataclass(frozen=True)
class AcceptEvidence:
    """Which legs of an accept our ledger shows filled since it was recorded (``accept_evidence``).

    Why it matters: a block trade is all-or-nothing on the exchange, so one leg of it seen is
    proof that every leg traded. ``partial`` evidence (a leg of the block trade booked, others
    not) means the legs not booked are positions on the exchange that no trade knows yet: the
    accept must stay in doubt until they are booked, whatever a block-trade list that does not
    show the record seems to say (docs/RECOVERY.md R1, R3).
    """

    booked: tuple[int, ...]
    missing: tuple[int, ...]
    # Whether a booked fill can be the block trade's own: for a close, unwind or kill, a fill of
    # a reduce-only order cannot (a block trade carries no reduce-only flag; such a fill is the
    # reduce-only fallback's after the accept was refuted, rfq.RFQJob._begin_fallback).
    from_block: bool = True

    @property
    def complete(self) -> bool:
        """Every leg the accept names is booked: the accept happened and nothing of it is missing."""
        return bool(self.booked) and not self.missing

    @property
    def partial(self) -> bool:
        """Some legs of the block trade booked, some not: it happened, and legs of it are unknown to us."""
        return self.from_block and bool(self.booked) and bool(self.missing)


def accept_evidence(ledger: LifecycleLedger | ReconcilerLedger, marker: AcceptMarker) -> AcceptEvidence:
    """The legs of ``marker`` that have a fill of its exact intent in our ledger, made no earlier
    than the accept was recorded less ``BLOCK_FILL_CLOCK_SLACK_SECONDS`` (the block trade's time
    is the exchange's, the record's ours), and those that have none.

    One rule for the lifecycle (``AcceptsInDoubt``) and the reconciler
    (``order_reconciliation.OrderReconciler.adopt_block_accepts``), so both call the same fills
    "seen". A marker that does not say its intent or legs has no evidence (every leg missing).
    When only some legs are booked, ``from_block`` says whether one of those fills can be the
    block trade's (see ``AcceptEvidence``). Raises what the ledger raises: the caller decides
    that an unreadable ledger is no evidence.
    """
    intent = marker.intent
    if intent is None or not marker.legs:
        return AcceptEvidence(booked=(), missing=marker.legs)
    orders = ledger.orders(marker.trade_id)
    since = marker.at - BLOCK_FILL_CLOCK_SLACK_SECONDS
    fills = {index: [order for order in orders if _fill_of(order, index, intent, since)] for index in marker.legs}
    booked = tuple(index for index in marker.legs if fills[index])
    missing = tuple(index for index in marker.legs if not fills[index])
    from_block = True
    if booked and missing and intent.reduce_only:
        from_block = any(not order.reduce_only for index in booked for order in fills[index])
    return AcceptEvidence(booked=booked, missing=missing, from_block=from_block)


class AcceptsInDoubt:
    """The RFQ accepts a restart may have cut from their answer, per trade, until each is resolved.

    Why: an accept becomes positions on the exchange at once, but its fills reach our ledger
    only with its answer. A crash in between leaves a trade that looks as if nothing
    happened, and a trade judged on that (FAILED, or CLOSED) would own the block trade's
    fills when the reconciler finds them later: a position nobody manages. So the accepts
    recorded before the crash are read at the restart, and a trade with one is neither
    judged nor ended until that accept is resolved on evidence: its block fills are in our
    ledger (it happened), or the reconciler, which looks the block trade up, says it is no
    longer in doubt (found, or given up after the look-up window: rows R1-R3). Without the
    reconciler's watch, only the fills can resolve it: the trade waits (fail closed).

    Evidence before belief: an accept some of whose legs are booked and others not (the
    accept answer showed only part of the block trade before the crash) is kept whatever
    the reconciler says. A block trade is all-or-nothing, so its legs not booked are filled
    on the exchange; a trade released on the booked legs alone would unwind them (row T5)
    and leave the others naked. Only their fills (booked when the block-trade list shows the
    record, row R1) resolve it. A ledger that cannot be read is no evidence either way: the
    accept is kept until it can.
    """

    def __init__(self, ledger: LifecycleLedger) -> None:
        self.ledger = ledger
        self._markers: dict[str, list[AcceptMarker]] = {}
        self._watch: BlockAcceptWatch | None = None
        # The partial accepts already said to be kept against the reconciler's answer (said once).
        self._kept_said: set[AcceptMarker] = set()

    def __repr__(self) -> str:
        return f"AcceptsInDoubt(trades={sorted(self._markers)}, watched={self._watch is not None})"

    @property
    def watched(self) -> bool:
        """Whether the reconciler's answer is wired (without it a marker resolves only on fills)."""
        return self._watch is not None

    def attach(self, watch: BlockAcceptWatch) -> None:
        """The reconciler's view of the accepts it is still looking up (built after the lifecycle)."""
        self._watch = watch

    def load(self, events: Iterable[Mapping[str, Any]], trade_ids: Container[str]) -> int:
        """Keep the recorded accepts of these trades (the active ones at a restart); returns how many."""
        loaded = 0
        for event in events:
            marker = AcceptMarker.from_event(event)
            if marker is None or marker.trade_id not in trade_ids:
                continue
            self._markers.setdefault(marker.trade_id, []).append(marker)
            loaded += 1
        return loaded

    def unresolved(self, trade_id: str) -> list[AcceptMarker]:
        """The trade's accepts still in doubt; resolved ones are forgotten, never to hold it again.

        An accept is resolved by its fills (every leg booked), or by the reconciler's answer
        when none of its legs is booked. One with some legs booked and others not, or whose
        fills cannot be read, stays whatever the reconciler says (see the class docstring).
        """
        markers = self._markers.get(trade_id)
        if not markers:
            return []
        left: list[AcceptMarker] = []
        seen: list[AcceptMarker] = []       # of ``left``: a leg booked, or the ledger unreadable
        for marker in markers:
            evidence = self._evidence(marker)
            if evidence is not None and evidence.complete:
                continue
            left.append(marker)
            if evidence is None or evidence.partial:
                seen.append(marker)
        if left and self._watch is not None and not self._watch_in_doubt(trade_id):
            # A partial accept whose block trade the list has shown is settled all the same:
            # every leg the record shows was booked from it, and a leg it shows on the other
            # side is a position of no trade of ours (said CRITICAL when it was seen), not
            # one to wait for.
            seen = [marker for marker in seen if not self._found(marker)]
            for marker in seen:
                if marker not in self._kept_said:
                    self._kept_said.add(marker)
                    logger.warning("trade %s: the reconciler no longer holds the RFQ accept of RFQ %s in doubt, but "
                                   "only part of its block trade is booked (or its fills cannot be read); a block "
                                   "trade is all-or-nothing, so the accept stays in doubt until every leg is booked",
                                   trade_id, marker.request_id)
            left = seen
        if left:
            self._markers[trade_id] = left
        else:
            del self._markers[trade_id]
            self._kept_said.difference_update(markers)
            logger.info("trade %s: the RFQ accept(s) recorded before the restart are resolved (%s)", trade_id,
                        ", ".join(marker.request_id for marker in markers))
        return left

    def _found(self, marker: AcceptMarker) -> bool:
        """The reconciler found the marker's block trade (False when it cannot say: kept)."""
        watch = self._watch
        if watch is None:
            return False
        try:
            return watch.block_trade_found(marker.trade_id, marker.request_id)
        except Exception:  # noqa: BLE001 - no answer is no evidence: the accept stays in doubt
            logger.exception("trade %s: asking whether the block trade of RFQ %s was found failed", marker.trade_id,
                             marker.request_id)
            return False

    def _watch_in_doubt(self, trade_id: str) -> bool:
        watch = self._watch
        if watch is None:
            return True
        try:
            return bool(watch.accept_in_doubt(trade_id))
        except Exception:  # noqa: BLE001 - no answer is no evidence: still in doubt
            logger.exception("trade %s: asking whether its RFQ accept is resolved failed", trade_id)
            return True

    def _evidence(self, marker: AcceptMarker) -> AcceptEvidence | None:
        """``accept_evidence`` of the marker; None when the ledger cannot be read (no evidence
        either way: the caller keeps the accept in doubt)."""
        try:
            return accept_evidence(self.ledger, marker)
        except Exception:  # noqa: BLE001 - read again at the next call
            logger.exception("trade %s: reading its orders failed", marker.trade_id)
            return None


def _fill_of(order: LedgerOrder, leg_index: int, intent: Intent, since: float) -> bool:
    """``order`` is a fill on ``leg_index`` with exactly ``intent``, made at or after ``since``."""
    at = order.last_fill_at if order.last_fill_at is not None else order.updated_at
    return (order.leg_index == leg_index and order.intent == intent and float(order.filled_qty) > QTY_EPSILON
            and float(at or 0.0) >= since)


# ---------------------------------------------------------------------------------------------
# Funding of perpetual legs (issue 13, docs/PERPETUALS.md)
# ---------------------------------------------------------------------------------------------

FUNDING_HOURS_UTC = (0, 8, 16)
FUNDING_PERIOD_MS = 8 * 3600 * 1000
# A payment is read this long after its instant, so a record the exchange writes a little late
# is there; the window read around the instant is as wide on either side.
FUNDING_READ_DELAY_SECONDS = 60.0
FUNDING_WINDOW_MS = 10 * 60 * 1000
FUNDING_KEY = "funding"   # trade.metadata[FUNDING_KEY]: {"<symbol>@<instant ms>": amount booked}
# An instant at which our trades held a net perp position but whose funding record is not
# listed yet is asked again at every poll for this long; after it, "no payment" is booked with
# a warning (the exchange writes no record for a zero payment, and funding is accounting only).
FUNDING_RECORD_PATIENCE_SECONDS = 6 * 3600.0
FUNDING_RECORD_RETRY_SECONDS = 60.0
FUNDING_CHECKED_KEY = "funding_checked_ms"


def funding_instants(after_ms: int, until_ms: int) -> list[int]:
    """The funding instants (00:00, 08:00, 16:00 UTC) in ``(after_ms, until_ms]``, oldest first."""
    first = (after_ms // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS
    return list(range(first, until_ms + 1, FUNDING_PERIOD_MS)) if first <= until_ms else []


class FundingAttribution:
    """Books each funding payment of a perpetual into the trades that held it at its instant.

    The exchange pays funding on the account's net position per symbol, at 00:00, 08:00 and
    16:00 UTC. After each instant (plus ``FUNDING_READ_DELAY_SECONDS``) the payments of every
    perp a trade holds are read once (``perp_funding_records`` around the instant) and split
    pro rata over the trades' signed quantities at the instant (our own fills up to it, from
    the ledger): a trade's share is its signed quantity over the payment's position, so a
    part of the position no trade holds (an external one) keeps its share of the payment.
    Each share is written into the trade's record (``metadata["funding"]``, keyed by symbol
    and instant) and into the leg's ``funding``; a key already there is never booked again,
    which makes the attribution idempotent across restarts. A failed read is retried at the
    next poll; nothing is guessed.
    """

    def __init__(self, client: PerpAccountClient, ledger: LifecycleLedger) -> None:
        self.client = client
        self.ledger = ledger
        # (symbol, instant) whose record is awaited -> when to read it again (once a minute).
        self._awaited: dict[tuple[str, int], float] = {}

    def due(self, trade: TradeLifecycle, now: float) -> list[int]:
        """The instants this trade still has to check (after its opening, read delay passed)."""
        if not any(leg.is_perpetual for leg in trade.legs) or trade.opened_at is None:
            return []
        checked = int(trade.metadata.get(FUNDING_CHECKED_KEY) or int(float(trade.opened_at) * 1000))
        until = int((now - FUNDING_READ_DELAY_SECONDS) * 1000)
        if trade.closed_at is not None:
            until = min(until, int(float(trade.closed_at) * 1000))
        if trade.failed_at is not None:
            until = min(until, int(float(trade.failed_at) * 1000))
        return funding_instants(checked, until)

    def settled(self, trade: TradeLifecycle, now: float) -> bool:
        """True when ``due`` can never return an instant for this trade again: it has ended, and
        it holds no perp leg or its end is past the read delay (every instant up to its end was
        due by then, and ``due`` returning none means each was booked). The lifecycle skips such
        trades, so the check per poll does not grow with the trades of a long run."""
        if trade.is_active:
            return False
        if not any(leg.is_perpetual for leg in trade.legs):
            return True
        ended = trade.closed_at if trade.closed_at is not None else trade.failed_at
        return ended is not None and now - FUNDING_READ_DELAY_SECONDS >= float(ended)

    def held_at(self, trade: TradeLifecycle, leg_index: int, sign: int, instant_ms: int) -> float:
        """The leg's signed quantity at the instant: its open fills minus its reducing fills
        made by then (each order counted at its last fill's time)."""
        cutoff = instant_ms / 1000.0
        held = 0.0
        for order in self.ledger.orders(trade.id, leg_index):
            if order.filled_qty <= 0 or order.last_fill_at is None or float(order.last_fill_at) > cutoff:
                continue
            held += order.filled_qty if order.intent.family() is Intent.OPEN else -order.filled_qty
        return sign * clean_qty(held) if held > 0 else 0.0

    def attribute(self, trades: list[TradeLifecycle], now: float) -> list[tuple[TradeLifecycle, str, float]]:
        """Book every payment now due; returns (trade, key, amount) for each share booked."""
        wanted: dict[tuple[str, int], list[TradeLifecycle]] = {}
        for trade in trades:
            for instant in self.due(trade, now):
                for leg in trade.legs:
                    if not leg.is_perpetual:
                        continue
                    holders = wanted.setdefault((leg.symbol, instant), [])
                    if all(held is not trade for held in holders):
                        holders.append(trade)
        booked: list[tuple[TradeLifecycle, str, float]] = []
        failed: set[int] = set()
        for (symbol, instant), holders in sorted(wanted.items(), key=lambda item: item[0][1]):
            if now < self._awaited.get((symbol, instant), now):
                failed.update(id(trade) for trade in holders)   # its record awaited: read again later
                continue
            try:
                payments = self.client.perp_funding_records(symbol, start_ms=instant - FUNDING_WINDOW_MS,
                                                            end_ms=instant + FUNDING_WINDOW_MS)
            except (TraderError, OSError) as exc:
                logger.warning("funding records of %s at %d unavailable (%s): retried at the next poll",
                               symbol, instant, exc)
                failed.update(id(trade) for trade in holders)
                continue
            here = [p for p in payments if p.symbol == symbol and abs(p.time_ms - instant) <= FUNDING_WINDOW_MS]
            if not here and self._record_awaited(symbol, instant, holders, now):
                self._awaited[(symbol, instant)] = now + FUNDING_RECORD_RETRY_SECONDS
                failed.update(id(trade) for trade in holders)
                continue
            self._awaited.pop((symbol, instant), None)
            booked += self._split(symbol, instant, here, holders)
        for trade in trades:
            instants = self.due(trade, now)
            if instants and id(trade) not in failed:
                trade.metadata[FUNDING_CHECKED_KEY] = instants[-1]
        return booked

    def _record_awaited(self, symbol: str, instant: int, holders: list[TradeLifecycle], now: float) -> bool:
        """Whether an answer without a record for ``symbol`` at ``instant`` must be asked again.

        Why: an empty answer is no evidence that nothing was paid; the exchange may list the
        record late. When our trades together held a net position at the instant a payment is
        expected, so the instant stays unbooked until the record shows, for at most
        ``FUNDING_RECORD_PATIENCE_SECONDS`` (read once a minute); then "none" is booked with a
        warning.
        """
        ours = math.fsum(self.held_at(trade, leg.index, leg.sign, instant)
                         for trade in holders for leg in trade.legs if leg.symbol == symbol)
        if abs(ours) < QTY_EPSILON:
            return False
        if now - instant / 1000.0 < FUNDING_RECORD_PATIENCE_SECONDS:
            logger.info("funding of %s at %d: no record listed yet for a held %+g; asked again in %.0f s", symbol,
                        instant, ours, FUNDING_RECORD_RETRY_SECONDS)
            return True
        logger.warning("funding of %s at %d: no record listed %.0f h after the instant although our trades held "
                       "%+g; booked as no payment", symbol, instant, FUNDING_RECORD_PATIENCE_SECONDS / 3600, ours)
        return False

    def _split(self, symbol: str, instant: int, payments: list[FundingPayment],
               holders: list[TradeLifecycle]) -> list[tuple[TradeLifecycle, str, float]]:
        """Each payment over the holders pro rata by signed quantity: a trade's share of the fee is
        its signed quantity at the instant over the position the exchange paid on (a trade on
        the other side of the net position gets the opposite sign). When our trades together
        hold more than that position the shares are scaled down so no more than the payment
        is ever booked."""
        key = f"{symbol}@{instant}"
        held: dict[int, dict[int, float]] = {}
        for trade in holders:
            held[id(trade)] = {leg.index: self.held_at(trade, leg.index, leg.sign, instant)
                               for leg in trade.legs if leg.symbol == symbol}
        ours = math.fsum(qty for legs in held.values() for qty in legs.values())
        booked: list[tuple[TradeLifecycle, str, float]] = []
        for trade in holders:
            book = trade.metadata.setdefault(FUNDING_KEY, {})
            if key in book:
                continue
            amount = 0.0
            for payment in payments:
                position = payment.side.sign * float(payment.qty)
                if abs(position) < QTY_EPSILON:
                    continue
                scale = min(1.0, abs(position) / abs(ours)) if abs(ours) > QTY_EPSILON else 1.0
                for leg in trade.legs:
                    qty = held[id(trade)].get(leg.index, 0.0)
                    if leg.symbol != symbol or is_zero(qty):
                        continue
                    share = round(float(payment.fee) * qty / position * scale, 8)
                    leg.funding = round(leg.funding + share, 8)
                    amount += share
            book[key] = round(amount, 8)
            if amount:
                booked.append((trade, key, amount))
        return booked
