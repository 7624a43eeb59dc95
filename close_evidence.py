"""Evidence before belief: the fills that prove somebody else closed our position (docs/RECOVERY.md S3, S6).

Why it exists: a position that disappears is not a close. An exchange answers ``code 0`` with
an empty positions list during maintenance and failovers (issue 9, finding 1), and a daemon
that booked that as a close would leave a naked leg unmanaged. The evidence is the exchange's
trade history for the symbol since the oldest trade holding it opened (the window): the NET
flow of fills whose order is not ours (not in the ledger by ``orderId``, no clientOrderId with
our prefix), closing side minus opening side, never below zero. Somebody else on the account
who buys and sells again (a round trip) changed nothing of ours, and a sell that only undid
their own buy proves no close (an option's external close is not reversible). Fills already
used for an earlier external close of our trades on that symbol are discounted (oldest
first), so one fill never proves two closes, however often such a close was booked and
reversed (``external_closes.reversed_quantities``). And the net flow cannot prove more than
what the account held beyond our trades allows (S2): since the latest positions read that was
not short (``KnownPosition``), the net flow less what was beyond ours at that read is the most
that can have come out of our position. An unreadable history is no evidence, and is read
again at the next check.

The test "not ours" fails for an order of ours whose fate rests on missing data (a presumed
NOT_PLACED never had its orderId learnt; option fill rows carry no clientOrderId): while the
reconciler watches such an order (``verdict_in_doubt``), no shortfall on its symbol, or on its
trade's, is judged (``Reconciler._in_doubt``).

A perpetual's fills are not in the option trade history: they are read from the perp fill
history (``PerpReconcilerClient.perp_fills``), whose rows carry no clientOrderId. A perp fill
is ours when its ``orderId`` is in the ledger; one whose order the perp order history shows
with our prefix is not counted either (that order is the prefix owner's to report, row O2).
Without the perp reads there is no perp evidence: a perp shortfall stays a suspect read.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from clock import Clock
from coincall_payloads import history_filters, next_page_filters, parse_fill_page, parse_order_page
from contracts import Side, is_perpetual_symbol
from errors import TraderError
from external_closes import REVERSED_METADATA_KEY, reversed_quantities
from log_throttle import RepeatLimiter
from order_ledger import PRESUMED_VERDICT_HORIZON_SECONDS, LedgerOrder, OrderStatus
from order_reconciliation import presumed_not_placed
from prefix_ownership import HISTORY_PAGE_SIZE, carries_prefix
from reconciliation_report import QTY_EPSILON
from seams import PerpReconcilerClient, ReconcilerClient, ReconcilerLedger, ReconcilerLifecycle

logger = logging.getLogger(__name__)

# Trade-history pages read per symbol when looking for the fills that explain a shortfall.
EVIDENCE_MAX_PAGES = 20
# The history range limit is 90 days (API.md 8.6, 14.6): a perp evidence read starts no earlier.
PERP_EVIDENCE_LOOKBACK_SECONDS = 89 * 24 * 3600.0
# A positions answer may lag the fills (or the fill history the positions): the net flow since a
# read that was not short (``KnownPosition``) counts the fills of this much before it as well.
# A fill of that margin the read did show is then counted twice: an outside close makes the
# cap too high (the window's net flow still bounds it), an outside open too low (a suspect read).
KNOWN_READ_LAG_SECONDS = 60.0


def verdict_in_doubt(order: LedgerOrder, now: float) -> bool:
    """Whether ``order``'s fate rests on missing data and the reconciler still watches it.

    A VANISHED order, or a presumed NOT_PLACED one (RECOVERY.md O9, O10), less than
    ``PRESUMED_VERDICT_HORIZON_SECONDS`` after its verdict (the verdict is the order's last
    change). Why it matters here: such an order may have filled, and its fills cannot be told
    from somebody else's (an option fill row carries no clientOrderId, and the ledger never
    learnt the orderId of a presumed NOT_PLACED), so no external close is judged on its symbol
    meanwhile. Past the horizon the watch gives up (a NOT_PLACED verdict stands; a VANISHED
    order is alerted ``order_vanished_unresolved``), and so does this doubt.
    """
    status = order.status
    if status is OrderStatus.VANISHED or (status is OrderStatus.NOT_PLACED and order.presumed):
        return now - float(order.updated_at) < PRESUMED_VERDICT_HORIZON_SECONDS
    return False


def orders_in_doubt(ledger: ReconcilerLedger, now: float) -> list[LedgerOrder]:
    """The ledger's orders ``verdict_in_doubt`` at ``now``: the presumed NOT_PLACED ones changed
    within the horizon, then the VANISHED ones, each once."""
    found: dict[int, LedgerOrder] = {}
    for order in [*presumed_not_placed(ledger, now), *ledger.vanished_orders()]:
        if verdict_in_doubt(order, now):
            found.setdefault(order.client_order_id, order)
    return list(found.values())


@dataclass(frozen=True)
class ForeignFill:
    """One fill of the trade history whose order is not ours (time in epoch seconds)."""

    time: float
    side: Side
    qty: float
    price: float


@dataclass(frozen=True)
class KnownPosition:
    """What a positions read that was not short showed on a symbol beyond our trades (RECOVERY.md
    S1/S2): read at ``at`` (the snapshot's time), ``beyond`` in the direction of our holding
    (negative: somebody else held the other side). Kept by ``PositionReconciler``."""

    at: float
    beyond: float


def newest_up_to(fills: list[tuple[float, float]], qty: float) -> list[tuple[float, float]]:
    """The first ``qty`` of ``fills`` ((qty, price), newest first); nothing when ``qty`` <= 0."""
    taken: list[tuple[float, float]] = []
    remaining = qty
    for fill_qty, price in fills:
        if remaining <= QTY_EPSILON:
            break
        take = min(remaining, fill_qty)
        taken.append((take, price))
        remaining -= take
    return taken


def vwap_of_newest(fills: list[tuple[float, float]], qty: float) -> float:
    """VWAP of the first ``qty`` of ``fills`` ((qty, price), newest first)."""
    remaining, value = qty, 0.0
    for fill_qty, price in fills:
        take = min(remaining, fill_qty)
        value += take * price
        remaining -= take
        if remaining <= QTY_EPSILON:
            break
    return value / qty


class CloseEvidence:
    """The net flow of fills that are not ours on a symbol, read at most once per interval.

    Built and used by ``position_reconciliation.PositionReconciler`` (its collaborators were
    checked against their Protocols by ``reconciliation.Reconciler``).
    """

    def __init__(self, *, client: ReconcilerClient, ledger: ReconcilerLedger, lifecycle: ReconcilerLifecycle,
                 clock: Clock, interval_seconds: float, perp_client: PerpReconcilerClient | None = None) -> None:
        self.client = client
        self.perp_client = perp_client
        self.ledger = ledger
        self.lifecycle = lifecycle
        self.clock = clock
        # The trade history of a symbol is read at most once per reconciliation interval.
        self.interval_seconds = float(interval_seconds)
        self._cache: dict[tuple[str, float], tuple[float, list[ForeignFill]]] = {}
        self._repeats = RepeatLimiter(clock)

    def __repr__(self) -> str:
        return f"CloseEvidence(cached={len(self._cache)})"

    def forget(self, symbol: str) -> None:
        """Read ``symbol``'s history again next time: what was just booked is discounted then."""
        for key in [key for key in self._cache if key[0] == symbol]:
            del self._cache[key]

    def fills(self, symbol: str, direction: int, since: float,
              known: KnownPosition | None = None) -> list[tuple[float, float]]:
        """(qty, price) of the fills that explain a shortfall on ``symbol``, newest first.

        Their sum is the NET flow of fills not made by us since ``since`` (the oldest trade
        holding the symbol opened): the closing side minus the opening side, never below zero,
        less what earlier external closes of our trades there already used. A fill that only
        undid somebody else's own fill of the window (a round trip) explains nothing. When
        ``known`` is given (the latest positions read that was not short: what the account held
        there beyond our trades then), the sum is also at most the net flow since that read
        (``KNOWN_READ_LAG_SECONDS`` before it) less that quantity: a close of somebody else's
        own position is not a close of ours.
        The qty is taken from the newest closing fills, which price it.

        The history is read at most once per symbol per ``interval_seconds``; an unreadable
        history is no evidence (retried on the next check).
        """
        start = since if known is None else min(since, known.at - KNOWN_READ_LAG_SECONDS)
        key = (symbol, round(start, 3))
        cached = self._cache.get(key)
        now = self.clock.now()
        if cached is not None and now - cached[0] < self.interval_seconds:
            rows = cached[1]
        else:
            try:
                rows = self._foreign_fills(symbol, start)
            except TraderError as exc:
                self._repeats.warning(logger, ("history", symbol), "fill history of %s unavailable (%s): no "
                                      "evidence of a close this time", symbol, exc)
                rows = []
            self._cache[key] = (now, rows)
        closing_side = Side.SELL if direction > 0 else Side.BUY
        closing = sorted((row for row in rows if row.side is closing_side and row.time >= since),
                         key=lambda row: row.time)
        opened = sum(row.qty for row in rows if row.side is not closing_side and row.time >= since)
        skip = self._already_booked(symbol, since) + opened
        usable: list[tuple[float, float]] = []
        for row in closing:
            used = min(skip, row.qty)
            skip -= used
            if row.qty - used > QTY_EPSILON:
                usable.append((row.qty - used, row.price))
        usable.reverse()
        if known is None:
            return usable
        flow = sum(row.qty if row.side is closing_side else -row.qty for row in rows
                   if row.time >= known.at - KNOWN_READ_LAG_SECONDS)
        return newest_up_to(usable, flow - known.beyond)

    def _foreign_fills(self, symbol: str, since: float) -> list[ForeignFill]:
        """Every fill in the trade history of ``symbol`` since ``since`` (all pages), on either
        side, whose order is not ours (by orderId or by prefix). Rows of other symbols are
        dropped here, not trusted to the ``symbol`` filter (not in API.md 8.6's query)."""
        if is_perpetual_symbol(symbol):
            return self._foreign_perp_fills(symbol, since)
        ours = self.ledger.known_order_ids()
        start_ms, end_ms = int(since * 1000), self.clock.now_ms()
        filters = history_filters(page_size=HISTORY_PAGE_SIZE, symbol=symbol, start_ms=start_ms, end_ms=end_ms)
        found: list[tuple[ForeignFill, int | None]] = []
        elsewhere = 0
        for _page in range(EVIDENCE_MAX_PAGES):
            page = parse_fill_page(self.client.trade_history(**filters))
            for fill in page.rows:
                if fill.symbol != symbol:
                    elsewhere += 1
                    continue
                if fill.side is None:
                    continue
                if fill.order_id in ours or carries_prefix(fill.client_order_id, self.ledger.prefix):
                    continue
                when = (fill.time_ms or 0.0) / 1000.0
                qty, price = fill.qty, fill.price
                if when < since or qty is None or price is None or qty <= 0 or price < 0:
                    continue
                found.append((ForeignFill(when, fill.side, qty, price), fill.order_id))
            cursor = page.next_cursor
            if not page.more(HISTORY_PAGE_SIZE):
                break
            if cursor is None:
                raise TraderError(f"the fill history of {symbol} says more pages follow (or is full without "
                                  f"saying) but gives no way on; an unfinished read proves nothing")
            filters = next_page_filters(filters, cursor)
        else:
            # Cut short, the newest pages only: the older (opening) side of a round trip may be
            # what is missing, and the net flow would be overstated. No evidence this time.
            raise TraderError(f"the fill history of {symbol} has more than {EVIDENCE_MAX_PAGES} pages since "
                              f"the window opened; an unfinished read proves nothing")
        if elsewhere:
            # ``symbol`` is a filter API.md 8.6 does not list: an exchange that ignores it
            # answers every symbol's fills, which cost pages here and are never counted.
            logger.debug("fill history of %s: %d rows of other symbols dropped", symbol, elsewhere)
        if not found:
            return []
        # Option fill rows carry no clientOrderId (API.md 8.6): a fill of an order of ours the
        # ledger has no orderId for (its answer lost, a verdict on missing data, a restored
        # older store) is known only through the order history, joined by orderId.
        prefixed = self._prefixed_option_orders(start_ms, end_ms)
        return [row for row, order_id in found if order_id is None or order_id not in prefixed]

    def _prefixed_option_orders(self, start_ms: int, end_ms: int) -> set[int]:
        """The orderIds of the option orders of the window whose clientOrderId carries our prefix
        (every page; ``TraderError`` when the read cannot be finished: no evidence then)."""
        filters = history_filters(page_size=HISTORY_PAGE_SIZE, start_ms=start_ms, end_ms=end_ms)
        prefixed: set[int] = set()
        for _page in range(EVIDENCE_MAX_PAGES):
            page = parse_order_page(self.client.order_history(**filters))
            prefixed.update(order.order_id for order in page.rows
                            if order.order_id is not None and carries_prefix(order.client_order_id, self.ledger.prefix))
            cursor = page.next_cursor
            if not page.more(HISTORY_PAGE_SIZE):
                return prefixed
            if cursor is None:
                break
            filters = next_page_filters(filters, cursor)
        raise TraderError("the option order history of the evidence window could not be read to its end; "
                          "whose the fills are is unknown, so they prove nothing")

    def _foreign_perp_fills(self, symbol: str, since: float) -> list[ForeignFill]:
        """The same for a perpetual, from the perp fill history (every page, every symbol: the
        route takes no symbol), joined to orders by ``orderId``.

        A fill is ours when the ledger knows its orderId. The perp order history of the
        window is read only when some fill is left: a fill whose order carries our prefix is
        not evidence (another daemon with our prefix; ``prefix_ownership`` reports it). A fill
        whose order the history does not show (a liquidation, a lagging history) counts as
        not ours, as an option fill without a clientOrderId does.
        """
        if self.perp_client is None:
            self._repeats.warning(logger, ("no-perp-reads", symbol), "no perp fill reads wired: a shortfall on %s "
                                  "is never explained by fills (stays a suspect read)", symbol)
            return []
        ours = self.ledger.known_order_ids()
        start = max(since, self.clock.now() - PERP_EVIDENCE_LOOKBACK_SECONDS)
        start_ms, end_ms = int(start * 1000), self.clock.now_ms()
        found: list[tuple[ForeignFill, int]] = []
        for fill in self.perp_client.perp_fills(start_ms=start_ms, end_ms=end_ms):
            if fill.symbol != symbol or fill.order_id in ours:
                continue
            when = fill.time_ms / 1000.0
            if when < since or fill.qty <= 0 or fill.price <= 0:
                continue
            found.append((ForeignFill(when, fill.side, fill.qty, fill.price), fill.order_id))
        if not found:
            return []
        prefixed = {order.order_id for order in self.perp_client.perp_order_history(start_ms=start_ms, end_ms=end_ms)
                    if carries_prefix(order.client_order_id, self.ledger.prefix)}
        return [row for row, order_id in found if order_id not in prefixed]

    def _already_booked(self, symbol: str, since: float) -> float:
        """External quantity booked on ``symbol`` by trades active or ended since ``since``.

        A booking reversed because the position showed again (X1) still used its fills: they
        prove no second close if the position goes missing again (a suspect read then). Every
        reversal of the trade counts, not only the latest (``reversed_quantities``).
        """
        total = 0.0
        for trade in self.lifecycle.trades():
            ended = trade.closed_at if trade.closed_at is not None else trade.failed_at
            if trade.is_active or (ended is not None and float(ended) >= since):
                total += sum(leg.external_qty for leg in trade.legs if leg.symbol == symbol)
                total += reversed_quantities(trade.metadata.get(REVERSED_METADATA_KEY)).get(symbol, 0.0)
        return total
