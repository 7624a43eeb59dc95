"""One prefix, one owner, and a store that remembers it (docs/RECOVERY.md rows O2, L2-L4, Q1-Q3).

Why it exists: the ledger records every order before it is sent, so an order on the exchange
carrying our clientOrderId prefix that the ledger does not know was not sent by this store's
daemon: another daemon with the same prefix, or a store restored from an older backup. And a
store that is missing or quarantined has lost the memory of which clientOrderIds it used.
Either way, trading on as if nothing had happened risks sending a clientOrderId twice or
cancelling somebody else's order. ``PrefixOwnership`` is where the reconciler decides these:

* an unknown order with our prefix is never cancelled (not provably ours; incident 40):
  CRITICAL ``prefix_conflict`` naming it, every strategy paused, the trade sequence moved
  past it, reported once (remembered across restarts in the ``foreign_orders`` event);
* a clientOrderId the ledger recorded is no proof either: two daemons with our prefix build
  the same ids (two new state directories start at the same clock floor the same day). An
  order listed under a clientOrderId of ours with an orderId other than the one the ledger
  recorded for it, or one clientOrderId listed under two orderIds while the ledger holds none,
  is decided like an unknown order (``_reused_ids``), and the ledger is never made to adopt it
  here (``adopt_presumed`` passes it over);
* its clientOrderId is never sent by us: every id with our prefix the exchange shows and the
  ledger never recorded, on a trade sequence the store has reached, is a floor the store
  keeps (``StateStore.raise_client_id_floors``) and the ledger allocates above, after a
  restart or a resume too; a store behind the exchange (row L3) keeps its block on the
  symbols our trades hold (``OrderLedger.block_symbol_durably``) until the resume;
* the order of the writes is what makes a crash harmless: floors and trade sequence first,
  then the pause and the kept block, the alert, the ``foreign_orders`` journal ("reported"),
  and the check time last, so whatever write a crash stops at, the next start sees the same
  evidence and takes the same verdict again;
* at every start the order history since the store's last check (89 days for a store that
  never had one) is read for our prefix: the trade sequence is re-seeded above anything seen,
  so no clientOrderId is ever sent twice; unknown orders there mean the store is behind;
* a store that is missing (new or empty, never reconciled) or quarantined is a lost memory:
  if the exchange shows anything of ours, every strategy starts paused; if its history shows
  nothing of ours, the trade sequence starts at a floor the clock gives
  (``clock_trade_seq_floor``), since our older orders are out of the history's reach;
* while running, the history since the last check is read every reconciliation, so a foreign
  order that filled between two checks is still seen;
* a history read that stops before the start of its window (``HISTORY_MAX_PAGES`` reached, or
  a page that says more follow without a cursor that moves; a full page without ``hasNext``
  says more follow) is no evidence for the part it did not read: CRITICAL
  ``order_history_incomplete`` naming that part, every strategy paused, the trade sequence
  re-seeded with the margin (row L4);
* an order of ours in that history that the ledger holds as a verdict on missing data (a
  presumed NOT_PLACED, or VANISHED) is polled at once, so the ledger adopts what the exchange
  shows (docs/RECOVERY.md O9, O10; ``order_reconciliation`` alerts the reversal).

Open perpetual orders are listed with the option ones (``perp_open_order``: the same view of
an order), so an unknown perp order with our prefix is decided exactly as an option order, and
the perpetual order history is read with the option one: the trade sequence is re-seeded above
our perp orders too (a structure of perp legs alone has no option order to be found by), and a
foreign perp order that filled between two checks is still seen.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from account_manager import AccountSnapshot
from alerts import send_alert
from clock import Clock, iso_utc
from coincall_payloads import ExchangeOrder, Page, PerpOrder, history_filters, next_page_filters, parse_order_page
from errors import RateLimitedError, TraderError, TransportError
from order_ledger import TRADE_SEQ_MAX, LedgerOrder, parse_client_order_id
from order_reconciliation import presumed_not_placed
from persistence import ORDER_HISTORY_WATERMARK, TRADE_SEQ_COUNTER
from reconciliation_report import ReconcileReport
from seams import AlertSender, PerpReconcilerClient, ReconcilerClient, ReconcilerLedger, ReconcilerStore
from strategy_pauses import StrategyPauses

logger = logging.getLogger(__name__)

HISTORY_PAGE_SIZE = 500
HISTORY_MAX_PAGES = 200
QUARANTINE_PROBE_SECONDS = 24 * 3600.0
SEQ_RESEED_LOOKBACK_SECONDS = 89 * 24 * 3600.0  # the history range limit is 90 days (API.md 8.6)
# After a quarantine the trade sequence jumps past anything seen on the exchange by this
# margin: orders older than the history we can read must never share a clientOrderId
# with a new one.
SEQ_RESEED_MARGIN = 1000
# The history is read again this far before the last check: an order the history lists late
# (or stamped by a clock slightly behind ours) is not missed.
HISTORY_OVERLAP_SECONDS = 120.0
# The event that remembers orders with our prefix that are not ours (so one is reported once).
FOREIGN_ORDERS_EVENT = "foreign_orders"
# How many unknown orders an alert names (the journal keeps them all).
ALERT_NAMES_AT_MOST = 10
# The pause of a history read that did not reach the start of its window (row L4).
HISTORY_INCOMPLETE_REASON = "the order history could not be read to the end: unread orders may carry our prefix"
# The trade sequence a lost memory starts from when the history shows nothing of ours (rows L2,
# Q3): a floor that grows with the clock (``clock_trade_seq_floor``).
SEQ_CLOCK_EPOCH = 1_704_067_200           # 2024-01-01 00:00 UTC
SEQ_CLOCK_PER_DAY = 10_000                # trade sequences a day the floor leaves room for
SEQ_CLOCK_HEADROOM = 10_000_000           # sequences always left above the floor, under the 9-digit field
_DAY_SECONDS = 86_400


def clock_trade_seq_floor(now: float) -> int:
    """The lowest trade sequence a store that lost its memory may start from at ``now`` (epoch s).

    Why: after a lost or quarantined store the trade sequence is re-seeded from the exchange's
    order history, which reaches back 89 days. When it shows nothing of ours, the orders we
    sent (if any) are all older than that, and nothing left on our side says which trade
    sequences they used; restarting at 1 could send their clientOrderIds again. The floor is
    derived from the clock alone:

        floor(now) = min(days(now) * 10_000, 999_999_999 - 10_000_000)
        days(now)  = whole days since 2024-01-01 00:00 UTC (0 before it)

    * Width: the trade sequence is the 9-digit field ``TTTTTTTTT`` of ``PPP TTTTTTTTT LL I AAA``
      (0 to 999,999,999, ``TRADE_SEQ_MAX``). days * 10,000 reaches 989,999,999 (the cap, which
      leaves 10,000,000 trades of room) on day 98,999, in the year 2295: no id overflows.
    * Above what was used: a store's sequence starts at 1 (a new directory) or at an earlier
      floor(t0), and then grows by 1 a trade (plus 1,000 a re-seed). The history showing
      nothing of ours means every order we sent is older than ``now - 89 days``, so the
      sequences used are below floor(t0) + used, and that is below floor(now) as long as the
      store used fewer than 10,000 sequences a day on average since t0 (the 89 quiet days
      alone leave 890,000 more). A daemon that opens one structure a minute uses 1,440 a day.
    * It only grows with time, and asks nothing of any state: the same answer after a lost
      store, a quarantined one or a lost state directory.

    ``now`` comes from the injected clock, never from the wall clock.
    """
    days = max(0, int((float(now) - SEQ_CLOCK_EPOCH) // _DAY_SECONDS))
    return min(days * SEQ_CLOCK_PER_DAY, TRADE_SEQ_MAX - SEQ_CLOCK_HEADROOM)


def carries_prefix(client_order_id: int | None, prefix: int) -> bool:
    """Whether ``client_order_id`` was built with our ``prefix`` (None, or an id we could not
    have built, is not ours)."""
    if client_order_id is None:
        return False
    try:
        return parse_client_order_id(client_order_id).prefix == prefix
    except (ValueError, TypeError):
        return False


def perp_open_order(order: PerpOrder) -> ExchangeOrder:
    """A perp order (open, or from the history) as the reconciler compares orders (the option order's view).

    The perp open-order rows carry no state (open by definition): ``state`` stays None,
    which every reader here takes as not final.
    """
    return ExchangeOrder(
        order_id=order.order_id, client_order_id=order.client_order_id, symbol=order.symbol, side=order.side,
        qty=order.qty, price=order.price, fill_qty=order.filled_qty, avg_price=order.avg_price, fee=order.fee,
        state=None if order.state is None else int(order.state),
        reduce_only=None if order.reduce_only is None else int(order.reduce_only),
        create_time_ms=None if order.create_time_ms is None else float(order.create_time_ms),
        update_time_ms=None if order.update_time_ms is None else float(order.update_time_ms))


def _shown(value: object) -> str:
    """A value of an exchange order as an alert shows it: ``?`` when the exchange did not give it."""
    return "?" if value is None else str(value)


@dataclass(frozen=True)
class HistoryRead:
    """One read of our order history over ``[since_ms, until_ms]``, and whether it reached the start.

    Why it exists: the history is read newest first, page by page, so a read that stops early
    has read the newest part of its window and not the oldest. Not having read a part is no
    evidence that nothing of ours is there (docs/RECOVERY.md row L4): ``complete`` tells the
    callers whether what was read may stand for the whole window. When it may not, the part
    not read is ``[since_ms, unread_until_ms]`` and ``why`` says what stopped the read.
    """

    rows: tuple[ExchangeOrder, ...]   # the orders with our prefix read (options, then perps)
    since_ms: int
    until_ms: int
    complete: bool
    pages: int = 0                    # option history pages read
    rows_read: int = 0                # option history rows read, every prefix
    oldest_ms: int | None = None      # the oldest create time among the option rows read, every prefix
    why: str = ""                     # what stopped an incomplete read

    @property
    def unread_until_ms(self) -> int:
        """The end of the part not read: the oldest row read (the whole window without one)."""
        if self.oldest_ms is None:
            return self.until_ms
        return max(self.since_ms, min(self.oldest_ms, self.until_ms))


def _more_claim(page: Page[Any]) -> str:
    """Why a page is read on, for the ``why`` of a read it cut short: a full page that does not
    say whether more follow is read on as one that says so (no evidence the history ends)."""
    if page.stated:
        return "said more pages follow"
    return f"was full ({page.listed} rows) and did not say whether more pages follow"


def _highest(unknown: list[tuple[int, ExchangeOrder]]) -> int:
    """The highest trade sequence among (clientOrderId, order) pairs (0 for none)."""
    return max((parse_client_order_id(coid).trade_seq for coid, _item in unknown), default=0)


def _distinct_ids(found: Iterable[tuple[int, ExchangeOrder]]) -> list[int]:
    """The clientOrderIds of (clientOrderId, order) pairs, each once, in order (two orders of
    another daemon may share one of our ids)."""
    return list(dict.fromkeys(coid for coid, _item in found))


def _trade_seqs(orders: Iterable[ExchangeOrder]) -> list[int]:
    """The trade sequences encoded in the clientOrderIds of ``orders`` (orders without one have none)."""
    return [parse_client_order_id(order.client_order_id).trade_seq for order in orders
            if order.client_order_id is not None]


class PrefixOwnership:
    """Orders with our prefix that the ledger does not know, the trade sequence, and a lost store.

    Built and called by ``reconciliation.Reconciler`` (which checked the collaborators against
    their Protocols): ``memory_check`` once per start, ``unknown_orders`` on every read of open
    orders, ``watch_history`` on every periodic run.
    """

    def __init__(self, *, client: ReconcilerClient, ledger: ReconcilerLedger, store: ReconcilerStore | None,
                 clock: Clock, pauses: StrategyPauses, alerts: AlertSender | None,
                 journal: Callable[[str, Mapping[str, Any]], None] | None, quarantined: Path | None,
                 interval_seconds: float, perp_client: PerpReconcilerClient | None = None) -> None:
        self.client = client
        self.perp_client = perp_client
        self.ledger = ledger
        self.store = store
        self.clock = clock
        self.pauses = pauses
        self.alerts = alerts
        self.journal = journal
        self.quarantined = quarantined
        self.interval_seconds = float(interval_seconds)
        self._foreign: set[int] | None = None      # orders with our prefix known not to be ours
        # (trade_seq, leg, intent digit) -> the highest attempt whose floor is in the store (this run)
        self._floored: dict[tuple[int, int, int], int] = {}
        self._new_state_dir = False
        # An episode of incomplete history reads: alerted at its first read (and again when a
        # strategy had been resumed meanwhile); the unread windows not named in an alert yet.
        self._incomplete_alerted = False
        self._unalerted_unread: list[tuple[int, int]] = []

    def __repr__(self) -> str:
        return f"PrefixOwnership(prefix={self.ledger.prefix}, quarantined={self.quarantined})"

    def note_new_state_dir(self) -> None:
        """This start is the state directory's first (no exchange record before it).

        A new, empty store then has lost nothing: positions on the account are only
        evidence of a lost store when orders of ours show in the history too.
        """
        self._new_state_dir = True

    def is_ours(self, client_order_id: int | None) -> bool:
        return carries_prefix(client_order_id, self.ledger.prefix)

    # ---- the order history: at every start (lost memory, rows L2-L4, Q1-Q3) and while running --

    def memory_check(self, snapshot: AccountSnapshot, listed: list[ExchangeOrder], report: ReconcileReport,
                     now: float) -> dict | None:
        """At every start: does the store remember everything the exchange shows of ours?

        Reads our order history since the store's last check (89 days for a store that never
        had one), re-seeds the trade sequence above every trade sequence seen (plus
        ``SEQ_RESEED_MARGIN`` when some are unknown to the ledger), then decides:
        a quarantined or missing store is rows Q1-Q3 / L2; unknown orders behind a store
        that has a history are row L3 (store behind the exchange) or O2. Returns the probe
        for the report (None when nothing was lost or unknown).

        A read that did not reach the start of its window (row L4) decides the same from what
        it read, and then, since the unread part may hold orders of ours the ledger does not
        know: the re-seed takes the margin, every strategy starts paused and CRITICAL
        ``order_history_incomplete`` names the unread part. The check time still moves to
        ``until_ms``, so no start re-reads 200 pages: the alert and the pause hand the unread
        part to the operator, whose ``resume`` states it was checked by hand.

        A lost memory whose history shows nothing of ours starts its trade sequence at the
        clock's floor (``clock_trade_seq_floor``; the first start of a new state directory
        too, which nothing tells from one deleted whole). The writes go in the order that survives a crash between any two of them:
        clientOrderId floors and the trade sequence (row L3's after its pause and block: it is
        what tells L3 from O2), the verdict (pause, kept block, alert, then "reported"), and the
        check time last.
        """
        if self.store is None:
            return None
        lost = self._lost_memory()
        watermark = self._counter(ORDER_HISTORY_WATERMARK) / 1000.0
        since = now - SEQ_RESEED_LOOKBACK_SECONDS
        if lost is None and watermark > 0:
            since = max(since, watermark - HISTORY_OVERLAP_SECONDS)
        until_ms = self.clock.now_ms()
        read = self._prefixed_history(since, until_ms)
        history = list(read.rows)
        self.adopt_presumed(history, report, now)
        prefixed_open = [item for item in listed if self.is_ours(item.client_order_id)]
        seen = history + prefixed_open
        seqs = _trade_seqs(seen)
        unknown = self._not_yet_reported(seen)
        # What makes no clientOrderId be sent twice comes first, and is idempotent: the floors
        # of ids seen (and of those reported by earlier runs), then the trade sequence.
        self._raise_floors([item.client_order_id for item in seen], also=self._foreign_orders())
        counter_before = self._counter(TRADE_SEQ_COUNTER)
        margin = bool(unknown) or not read.complete
        # A store behind the exchange (row L3) is told by its sequence: raised before the
        # verdict is persisted, a crash in between would make the next start take it for row
        # O2 and drop the symbol block. Its re-seed comes after the pause and the block.
        behind = lost is None and bool(unknown) and _highest(unknown) > counter_before
        if not behind:
            self._reseed_logged(seqs, margin=margin)
        if lost is not None and not seqs:
            self._reseed_from_clock(lost, now)
        # Then the verdict (pauses and blocks persisted before anything is marked handled), and
        # only then the check time: a crash anywhere before it leaves a store the next start
        # checks the same way again (docs/RECOVERY.md L2-L4: the verdict is re-applied).
        if lost is not None:
            probe: dict | None = self._lost_memory_start(lost, snapshot, prefixed_open, history, unknown, report, now)
        elif behind:
            probe = self._store_behind(unknown, report, counter_before, seqs, margin=margin)
        else:
            probe = self._unknown_at_start(unknown, report, counter_before)
        if read.complete:
            self._history_complete()
        else:
            self._history_incomplete(read, report, source="start-up")
        self.store.raise_counter_to(ORDER_HISTORY_WATERMARK, until_ms)
        return probe

    def _unknown_at_start(self, unknown: list[tuple[int, ExchangeOrder]], report: ReconcileReport,
                          counter_before: int) -> dict | None:
        """Unknown orders of ours at a start with a store that has a history, none beyond its sequence: row O2."""
        if not unknown:
            return None
        highest = _highest(unknown)
        self.unknown_orders([item for _coid, item in unknown], report, source="start-up")
        return {"unknown_orders": len(unknown), "max_trade_seq": highest}

    def watch_history(self, report: ReconcileReport, now: float) -> None:
        """While running: orders of ours created since the last check that the ledger does not know.

        One history page per reconciliation as a rule (the read starts at the previous
        check), so a foreign order that filled between two checks is still seen. A failed
        read is retried at the next reconciliation from the same point.

        A read that did not reach the start of its window (row L4) is handled as at a start:
        what was read is decided as usual, then the trade sequence is re-seeded with the
        margin, every strategy is paused and CRITICAL ``order_history_incomplete`` names the
        unread part (throttled: see ``_history_incomplete``). The check time still moves to
        ``until_ms``: re-reading the same pages every minute would never get further, and the
        pause keeps entries stopped until the operator has checked that part by hand.
        """
        if self.store is None:
            return
        watermark = self._counter(ORDER_HISTORY_WATERMARK) / 1000.0
        since = max(now - SEQ_RESEED_LOOKBACK_SECONDS,
                    (watermark if watermark > 0 else now - self.interval_seconds) - HISTORY_OVERLAP_SECONDS)
        until_ms = self.clock.now_ms()
        try:
            read = self._prefixed_history(since, until_ms)
        except TraderError as exc:
            logger.warning("order history unavailable (%s): checked again at the next reconciliation", exc)
            # Not a complete run: a history that never reads must reach ``reconciliation_failing``.
            report.unread.append(f"order history: {type(exc).__name__}: {exc}")
            report.unread_no_answer = isinstance(exc, (TransportError, RateLimitedError))
            return
        history = list(read.rows)
        self.adopt_presumed(history, report, now)
        self.unknown_orders(history, report, source="history")
        if read.complete:
            self._history_complete()
        else:
            self._reseed(_trade_seqs(history), margin=True)
            self._history_incomplete(read, report, source="running")
        self.store.raise_counter_to(ORDER_HISTORY_WATERMARK, until_ms)

    def _history_complete(self) -> None:
        """A read that reached the start of its window ends an episode of incomplete ones.

        The unread windows of the episode that no alert named yet are named now (one alert),
        so the operator's check by hand covers every part that was not read.
        """
        earlier = list(self._unalerted_unread)
        self._unalerted_unread.clear()
        was_alerted, self._incomplete_alerted = self._incomplete_alerted, False
        if earlier:
            first, last = min(start for start, _end in earlier), max(end for _start, end in earlier)
            self._alert("CRITICAL", "order_history_incomplete",
                        f"the order history is read to the end again, but {len(earlier)} window(s) between "
                        f"{iso_utc(first / 1000.0)} and {iso_utc(last / 1000.0)} were not read since the last alert "
                        f"(orders with our clientOrderId prefix {self.ledger.prefix} there would go unseen). "
                        f"Strategies stay paused. Fix: check the account's order history by hand for orders whose "
                        f"clientOrderId starts with {self.ledger.prefix} created in that span, then "
                        f"`python main.py resume`",
                        source="running", unread_from=iso_utc(first / 1000.0), unread_to=iso_utc(last / 1000.0),
                        earlier_unread_windows=len(earlier))
        elif was_alerted:
            logger.warning("the order history is read to the end again; strategies paused for the unread part "
                           "stay paused until `python main.py resume`")

    def _history_incomplete(self, read: HistoryRead, report: ReconcileReport, *, source: str) -> None:
        """Row L4: part of the window was not read, so the store's memory of it is not verified.

        Every strategy is paused (fail closed: the check that guards entries could not be
        evaluated). The CRITICAL alert goes out at a start, at the first incomplete read of
        an episode while running, and again when the pause found a strategy running (resumed
        since the last alert); other reads of the episode log a WARNING and are named in the
        next alert (or the one that ends the episode, ``_history_complete``), so a paging that
        keeps failing does not alert every reconciliation and no unread part goes unnamed.
        """
        unread = (read.since_ms, read.unread_until_ms)
        paused = self.pauses.pause_every(HISTORY_INCOMPLETE_REASON)
        report.paused.extend(paused)
        if self._incomplete_alerted and not paused and source != "start-up":
            self._unalerted_unread.append(unread)
            logger.warning("order history %s to %s not read to the end again (%s): %s to %s unread; strategies "
                           "stay paused", iso_utc(read.since_ms / 1000.0), iso_utc(read.until_ms / 1000.0),
                           read.why, iso_utc(unread[0] / 1000.0), iso_utc(unread[1] / 1000.0))
            return
        earlier = list(self._unalerted_unread)
        self._unalerted_unread.clear()
        self._incomplete_alerted = True
        earlier_text = ""
        if earlier:
            earlier_text = (f" Also not read since the last alert: {len(earlier)} more window(s) between "
                            f"{iso_utc(min(start for start, _end in earlier) / 1000.0)} and "
                            f"{iso_utc(max(end for _start, end in earlier) / 1000.0)}; check those too.")
        prefix = self.ledger.prefix
        self._alert("CRITICAL", "order_history_incomplete",
                    f"the {source} check of our order history from {iso_utc(read.since_ms / 1000.0)} to "
                    f"{iso_utc(read.until_ms / 1000.0)} read {read.pages} page(s) ({read.rows_read} order(s)), newest "
                    f"first, and stopped before the start: {read.why}. Not read: {iso_utc(unread[0] / 1000.0)} to "
                    f"{iso_utc(unread[1] / 1000.0)}. Orders with our clientOrderId prefix {prefix} there that the "
                    f"ledger does not know (another daemon with our prefix, an older copy of the state store) would "
                    f"go unseen, and that part is not read again: the check time moves past it. Every strategy is "
                    f"paused; our trade sequence continues above {self._counter(TRADE_SEQ_COUNTER)}, at least "
                    f"{SEQ_RESEED_MARGIN} past the highest one read.{earlier_text} Fix: "
                    f"check the account's order history by hand for orders whose clientOrderId starts with {prefix} "
                    f"created in that unread part; if some are not this daemon's, treat them as a prefix conflict "
                    f"(give each daemon its own CLIENT_ORDER_PREFIX, or start on the newest state directory); then "
                    f"`python main.py resume`",
                    source=source, since=iso_utc(read.since_ms / 1000.0), until=iso_utc(read.until_ms / 1000.0),
                    unread_from=iso_utc(unread[0] / 1000.0), unread_to=iso_utc(unread[1] / 1000.0),
                    pages=read.pages, rows_read=read.rows_read, why=read.why, earlier_unread_windows=len(earlier))

    def _lost_memory(self) -> str | None:
        """Why the store cannot be trusted to know our orders, or None."""
        if self.quarantined is not None:
            return "quarantined"
        if self._counter(ORDER_HISTORY_WATERMARK) == 0 and self._store().holds_nothing():
            return "missing"
        return None

    def _store_behind(self, unknown: list[tuple[int, ExchangeOrder]], report: ReconcileReport,
                      counter_before: int, seqs: list[int], *, margin: bool) -> dict:
        """Row L3: the exchange shows our orders beyond the store's sequence (an older copy).

        In this order, so that a crash between any two writes leaves the next start the same
        verdict to take (or, past the re-seed, row O2's, with the pause and the kept block
        already in the store): pause, block, alert, re-seed, then the orders marked reported.
        """
        highest = _highest(unknown)
        coids = _distinct_ids(unknown)
        report.foreign_orders.extend(coids)
        report.paused.extend(self.pauses.pause_every("the state store is behind the exchange"))
        blocked = self._block_symbols(unknown, report, "the state store is behind the exchange on this symbol",
                                      every_symbol=True)
        sequence = max(self._counter(TRADE_SEQ_COUNTER), self._reseed_target(seqs, margin=margin))
        self._alert("CRITICAL", "store_behind",
                    f"the exchange shows {len(coids)} order(s) with our prefix {self.ledger.prefix} that the state "
                    f"store {self._store().path} does not know, up to trade sequence {highest} while the store had "
                    f"reached {counter_before}: {self._describe(unknown)}. The store is older than the exchange "
                    f"(restored from a backup?) or another daemon uses this prefix. Every strategy starts paused; "
                    f"trades of the missing period are not managed and their positions count as external; the trade "
                    f"sequence continues above {sequence}; no order goes to {', '.join(blocked) or 'their symbols'} "
                    f"(our picture of them is stale). Fix: stop the daemon and start it on the newest state "
                    f"directory if there is one{self._copies_text()}; otherwise check `python main.py status`, close "
                    f"or keep what those orders opened by hand, then `python main.py resume` (lifts the pause and "
                    f"the symbol block)",
                    client_order_ids=coids[:ALERT_NAMES_AT_MOST], count=len(coids), store_trade_seq=counter_before,
                    highest_trade_seq=highest)
        self._reseed_logged(seqs, margin=margin)
        # Marked handled last: a crash before this line leaves them unknown to the next start.
        self._remember_foreign(unknown, "history", keep=self._seen_again(unknown, self.clock.now()))
        return {"unknown_orders": len(coids), "max_trade_seq": highest, "store_trade_seq": counter_before}

    def _lost_memory_start(self, lost: str, snapshot: AccountSnapshot, prefixed_open: list[ExchangeOrder],
                           history: list[ExchangeOrder], unknown: list[tuple[int, ExchangeOrder]],
                           report: ReconcileReport, now: float) -> dict:
        """Rows Q1-Q3 and L2: a fresh store; pause everything if the exchange shows anything of ours."""
        positions = [p.symbol for p in snapshot.positions]
        recent = [item for item in history if self._created(item) >= now - QUARANTINE_PROBE_SECONDS]
        seqs = _trade_seqs(history + prefixed_open)
        probe = {"positions": len(positions), "open_orders": len(prefixed_open), "recent_orders": len(recent),
                 "max_trade_seq": max(seqs) if seqs else 0}
        if unknown:
            report.foreign_orders.extend(_distinct_ids(unknown))
        # A first start on an account with positions of its own has lost nothing.
        positions_count = bool(positions) and (lost == "quarantined" or not self._new_state_dir or bool(history))
        if not (positions_count or prefixed_open or recent):
            level = logging.WARNING if lost == "quarantined" or history else logging.INFO
            logger.log(level, "state store %s (%s) but the exchange shows nothing of ours: normal start",
                       "quarantined" if lost == "quarantined" else "is new or empty", self.quarantined or lost)
            self._remember_lost_memory_orders(unknown, now)
            return probe
        # The pause is persisted before anything says this start was handled (the alert may be
        # the write that fails; the journal and the check time come after both).
        self.pauses.pause_every(f"state {'quarantined' if lost == 'quarantined' else 'store missing'} at start-up")
        what = (f"the state store was quarantined ({self.quarantined})" if lost == "quarantined" else
                f"the state store {self._store().path} is new or empty (deleted or lost?)")
        kind = "quarantine_start" if lost == "quarantined" else "missing_store_start"
        self._alert("CRITICAL", kind,
                    f"{what} and the exchange shows {len(positions)} position(s), {len(prefixed_open)} open order(s) "
                    f"and {len(recent)} order(s) in the last 24 h with our prefix {self.ledger.prefix}: every strategy "
                    f"starts paused; those positions and orders are not managed by any trade and are left untouched"
                    f"{self._open_orders_text(prefixed_open)}. The trade sequence continues above "
                    f"{self._counter(TRADE_SEQ_COUNTER)}, so no clientOrderId is sent twice. What to do: "
                    f"{self._lost_memory_fix()}", **probe)
        self._remember_lost_memory_orders(unknown, now)
        return probe

    def _remember_lost_memory_orders(self, unknown: list[tuple[int, ExchangeOrder]], now: float) -> None:
        """Rows Q1, L2: the prefixed orders a lost store saw are remembered, so no ``prefix_conflict`` follows."""
        if unknown:
            self._remember_foreign(unknown, "start-up", keep=self._seen_again(unknown, now))

    def _open_orders_text(self, prefixed_open: list[ExchangeOrder]) -> str:
        if not prefixed_open:
            return ""
        named = [(item.client_order_id, item) for item in prefixed_open if item.client_order_id is not None]
        return f" (open: {self._describe(named)})"

    def _lost_memory_fix(self) -> str:
        copies = self._recovery_copies()
        restore = (f"a recovery copy exists ({', '.join(str(c) for c in copies)}): stop the daemon, move the newest "
                   f"one to {self._store().path} and start again; otherwise " if copies else "")
        return (f"{restore}check `python main.py status`; close what you do not want with `python main.py kill "
                f"--all-positions --yes` or by hand, cancel the open orders listed if they are yours, then "
                f"`python main.py resume`")

    def _reseed_from_clock(self, lost: str, now: float) -> int | None:
        """Rows L2, Q3 with nothing of ours in the history: the trade sequence starts at least at
        ``clock_trade_seq_floor(now)`` (never lowered); the new value, or None.

        The first start of a new state directory (``note_new_state_dir``) too: nothing tells it
        from a state directory deleted whole (its exchange record goes with it), and an earlier
        install of the daemon on this account may have sent orders older than the 89 days the
        history reaches back; from 1, their clientOrderIds would be sent again (a perpetual
        order is refused for any id ever used, and a lookup by id may find the old order).
        """
        floor = clock_trade_seq_floor(now)
        if floor <= self._counter(TRADE_SEQ_COUNTER):
            return None
        seeded = self._store().raise_counter_to(TRADE_SEQ_COUNTER, floor)
        if self._new_state_dir and lost != "quarantined":
            logger.info("new state directory, and the exchange's order history shows nothing of ours: trades number "
                        "from %d (the clock's floor), above any clientOrderId an earlier install on this account "
                        "can have used", seeded + 1)
        else:
            logger.warning("state store %s and the exchange's order history shows nothing of ours: the trade "
                           "sequence starts at %d (the clock's floor), above any our older orders can have used",
                           lost, seeded)
        return seeded

    def _raise_floors(self, coids: Iterable[int | None], *, also: Iterable[int] = ()) -> int:
        """Durably: no clientOrderId with our prefix that the exchange showed and the ledger never
        recorded is allocated again (docs/RECOVERY.md O2, L3).

        The ledger allocates above the floors the store keeps (``OrderLedger._id_floor``), so
        this holds after a restart and after the operator's resume, which end the symbol
        block. Only ids whose trade sequence the store has reached need a floor: the trade
        sequence is re-seeded above the others right after (every caller does so before it
        decides anything), so no trade of ours can ever carry them. ``also``: ids reported by
        earlier runs (the ``foreign_orders`` journal), whose floors a store written before the
        floors existed lacks. One write for all of them; those already written this run are
        skipped. A failed write raises: nothing is decided on this pass.
        """
        if self.store is None:
            return 0
        reached = self._counter(TRADE_SEQ_COUNTER)
        wanted: dict[tuple[int, int, int], int] = {}
        for coid in [*coids, *also]:
            if coid is None or not self.is_ours(coid) or self.ledger.is_ours(coid):
                continue
            parts = parse_client_order_id(coid)
            key = (parts.trade_seq, parts.leg_index, parts.intent)
            if parts.trade_seq > reached or self._floored.get(key, 0) >= parts.attempt:
                continue
            wanted[key] = max(wanted.get(key, 0), parts.attempt)
        if not wanted:
            return 0
        self.store.raise_client_id_floors((seq, leg, intent, attempt) for (seq, leg, intent), attempt in wanted.items())
        for key, attempt in wanted.items():
            self._floored[key] = max(self._floored.get(key, 0), attempt)
        logger.warning("%d clientOrderId(s) with our prefix %d that the ledger never recorded are on the exchange: "
                       "no later order of ours takes their ids", len(wanted), self.ledger.prefix)
        return len(wanted)

    @staticmethod
    def _reseed_target(seqs: Iterable[int], *, margin: bool) -> int:
        """The trade sequence ``_reseed`` raises to (0: none seen)."""
        highest = max(seqs, default=0)
        if highest <= 0:
            return 0
        return highest + (SEQ_RESEED_MARGIN if margin else 0)

    def _reseed(self, seqs: Iterable[int], *, margin: bool) -> int | None:
        """Raise the trade sequence above every one seen (never lowers it); the new value, or None."""
        target = self._reseed_target(seqs, margin=margin)
        if target <= 0 or target <= self._counter(TRADE_SEQ_COUNTER):
            return None
        return self._store().raise_counter_to(TRADE_SEQ_COUNTER, target)

    def _reseed_logged(self, seqs: Iterable[int], *, margin: bool) -> int | None:
        reseeded = self._reseed(seqs, margin=margin)
        if reseeded is not None:
            logger.warning("trade sequence re-seeded to %d from the exchange's order history", reseeded)
        return reseeded

    def _counter(self, name: str) -> int:
        return int(self.store.counter(name)) if self.store is not None else 0

    # ---- orders of ours the ledger concluded were not placed, or vanished ---------------------------

    def adopt_presumed(self, items: list[ExchangeOrder], report: ReconcileReport, now: float) -> None:
        """Ask the exchange again (``verify``: by orderId and clientOrderId) about every order in
        ``items`` (history rows of ours) that the ledger holds as a verdict on missing data, so
        the ledger adopts the exchange's view (rows O9, O10).

        Why here: the order history is the one read that shows an order that filled or was
        cancelled between two checks, which the open list never lists. Only rows whose orderId
        the ledger does not know can be a presumed NOT_PLACED (that verdict comes from lookups
        that never gave an id), so the rest cost nothing, and no archived trade is read back
        for a row of an order long settled. A lookup that does not find it yet, or fails,
        decides nothing: the order stays watched by ``order_reconciliation`` and is asked again.
        """
        mine = [item for item in items
                if item.client_order_id is not None and self.ledger.is_ours(item.client_order_id)]
        if not mine:
            return
        # A clientOrderId shown under an orderId that is not ours (another daemon built the same
        # id) is not looked up: the lookup by clientOrderId may answer the other daemon's order,
        # and the ledger would take its fills for ours. ``unknown_orders`` raises the conflict.
        reused = self._reused_ids(mine)
        ours = {item.client_order_id: item for item in mine if item.client_order_id not in reused}
        if not ours:
            return
        found: dict[int, LedgerOrder] = {order.client_order_id: order for order in self.ledger.vanished_orders()
                                         if order.client_order_id in ours}
        known_ids = self.ledger.known_order_ids()
        if any(item.order_id is None or item.order_id not in known_ids for item in ours.values()):
            found.update({order.client_order_id: order for order in presumed_not_placed(self.ledger, now)
                          if order.client_order_id in ours})
        for coid, order in found.items():
            was = order.status
            logger.warning("order %d, settled %s, is in the exchange's order history: adopting the exchange's view",
                           coid, was.value)
            report.orders_checked += 1
            self.ledger.verify(order)
            if order.status is was:
                logger.warning("order %d: the exchange's lookup does not show it yet; asked again at the next "
                               "reconciliation", coid)

    # ---- unknown orders with our prefix ----------------------------------------------------------

    def unknown_orders(self, items: list[ExchangeOrder], report: ReconcileReport, *, source: str) -> None:
        """Orders with our prefix that the ledger never recorded: reported once, never touched.

        The ledger records every order before sending it, so such an order was not sent by
        this store's daemon: another daemon with our prefix, or a restored older store. It is
        not provably ours, so it is not cancelled (incident 40); entries stop instead, and the
        operator is told which orders and what to do (docs/RECOVERY.md row O2). An order under
        a clientOrderId the ledger recorded, with an orderId that is not the ledger's
        (``_reused_ids``), is another daemon's that built the same id: the same verdict.
        """
        self._raise_floors([item.client_order_id for item in items])
        new = self._not_yet_reported(items)
        if not new:
            return
        coids = _distinct_ids(new)
        reused = len(_distinct_ids([(coid, item) for coid, item in new if self.ledger.is_ours(coid)]))
        report.foreign_orders.extend(coids)
        highest = max(parse_client_order_id(coid).trade_seq for coid in coids)
        reseeded = self._reseed([highest], margin=True)
        reason = f"orders with our clientOrderId prefix {self.ledger.prefix} that are not ours on the exchange"
        report.paused.extend(self.pauses.pause_every(reason))
        blocked = self._block_symbols(new, report, reason, every_symbol=False)
        block_text = (f"; no order of ours goes to {', '.join(blocked)} (one of our trade sequences is in use "
                      f"there) until a resume" if blocked else "")
        sequence = reseeded if reseeded is not None else self._counter(TRADE_SEQ_COUNTER)
        what = "are not in our ledger"
        if reused:
            what = (f"are not ours ({reused} of them reuse a clientOrderId our ledger sent itself, under another "
                    f"orderId than the one it recorded: another daemon built the same ids)")
        self._alert("CRITICAL", "prefix_conflict",
                    f"{len(coids)} {source} order(s) on the exchange carry our clientOrderId prefix "
                    f"{self.ledger.prefix} but {what}: {self._describe(new)}. Another daemon uses "
                    f"prefix {self.ledger.prefix} on this account, or this state directory was restored from an "
                    f"older copy. They are left untouched (not provably ours); every strategy is paused and our "
                    f"trade sequence continues above {sequence}{block_text}. Fix: give each daemon on the account "
                    f"its own CLIENT_ORDER_PREFIX (100-899), or, if an older state was restored, stop this daemon and "
                    f"start it on the newest state directory; cancel those orders by hand if they are yours; then "
                    f"`python main.py resume`",
                    client_order_ids=coids[:ALERT_NAMES_AT_MOST], count=len(coids), source=source,
                    highest_trade_seq=highest)
        # Reported once, and marked so last: a crash before this line leaves them unknown, so
        # the next start pauses and alerts again (the floors, the sequence and the pause are kept).
        self._remember_foreign(new, source)

    def _block_symbols(self, unknown: list[tuple[int, ExchangeOrder]], report: ReconcileReport, reason: str,
                       *, every_symbol: bool) -> list[str]:
        """No order of ours where an unknown order could be mistaken for ours, until an operator resumes.

        A trade sequence we used ourselves means its next clientOrderIds may equal the
        unknown ones (an exchange lookup by clientOrderId would then find the wrong order);
        ``every_symbol`` (a store behind the exchange) also blocks symbols whose picture is
        stale, so a reduce-only exit cannot close a position some unknown trade holds.
        """
        ours = {parse_client_order_id(coid).trade_seq for coid in self.ledger.known_client_order_ids()}
        # A store behind the exchange: the block on a symbol our trades hold orders on outlives
        # a restart (kept by the store until the resume that lifts it), since the next start no
        # longer sees those orders as unknown. Elsewhere no order of ours goes but a new entry's,
        # and entries stay paused.
        ledger = self.ledger
        held = {order.symbol for order in ledger.orders()} if every_symbol else set()
        blocked: list[str] = []
        for coid, item in unknown:
            symbol = item.symbol
            if not symbol or symbol in blocked:
                continue
            if every_symbol or parse_client_order_id(coid).trade_seq in ours:
                blocked.append(symbol)
                if symbol in held:
                    new = ledger.block_symbol_durably(symbol, reason)
                else:
                    new = ledger.block_symbol(symbol, reason)
                if new:
                    report.blocked_symbols.append(symbol)
        return blocked

    def _copies_text(self) -> str:
        copies = self._recovery_copies()
        return f" (a recovery copy exists: {', '.join(str(c) for c in copies)})" if copies else ""

    def _store(self) -> ReconcilerStore:
        """The store, for the steps that run only when there is one (the start-up memory check)."""
        if self.store is None:
            raise ValueError("this reconciliation step needs the state store")
        return self.store

    def _recovery_copies(self) -> list[Path]:
        path = Path(self._store().path)
        return sorted(path.parent.glob(path.name + ".recovered*"))

    def _not_yet_reported(self, items: Iterable[ExchangeOrder]) -> list[tuple[int, ExchangeOrder]]:
        """(clientOrderId, item) of the orders with our prefix that are not ours and were not reported
        before, in order: one entry for a clientOrderId the ledger never recorded, and one for each
        order ``_reused_ids`` tells is not the ledger's under a clientOrderId it did record (so the
        alert names every orderId; such a clientOrderId may come twice)."""
        known = self._foreign_orders()
        fresh: list[ExchangeOrder] = []
        for item in items:
            coid = item.client_order_id
            if coid is not None and coid not in known and self.is_ours(coid):
                fresh.append(item)
        reused = self._reused_ids(fresh)
        found: list[tuple[int, ExchangeOrder]] = []
        done: set[int] = set()
        for item in fresh:
            coid = item.client_order_id
            if coid is None or coid in done:
                continue
            if coid in reused:
                done.add(coid)
                found.extend((coid, other) for other in reused[coid])
            elif not self.ledger.is_ours(coid):
                done.add(coid)
                found.append((coid, item))
        return found

    def _reused_ids(self, items: Iterable[ExchangeOrder]) -> dict[int, list[ExchangeOrder]]:
        """The orders that carry a clientOrderId the ledger recorded but are not the order it recorded, by that id.

        Why: "the ledger recorded this clientOrderId" does not prove an order ours when another
        daemon with our prefix builds the same ids (two new state directories start at the
        same clock floor the same day). The orderId does: an order listed under an orderId
        other than the one the ledger holds for its clientOrderId is somebody else's. A
        clientOrderId listed under two orderIds while the ledger holds none (a create whose
        answer was lost) has one that is not ours, and nothing tells which: both are named,
        and neither is adopted here. A row without an orderId proves nothing and is passed
        over, and so is a lone row under an id the ledger holds no orderId for (our own lost
        create, most likely: ``adopt_presumed`` looks it up). A row whose orderId the ledger
        knows is ours without reading its record (``get`` brings an archived trade back from
        the store), so the ordinary case costs one set of ids a call.
        """
        shown: dict[int, dict[int, ExchangeOrder]] = {}
        for item in items:
            coid, order_id = item.client_order_id, item.order_id
            if coid is None or order_id is None or not self.is_ours(coid):
                continue
            shown.setdefault(coid, {}).setdefault(order_id, item)
        if not shown:
            return {}
        known_ids = self.ledger.known_order_ids()
        reused: dict[int, list[ExchangeOrder]] = {}
        for coid, by_id in shown.items():
            if all(order_id in known_ids for order_id in by_id) or not self.ledger.is_ours(coid):
                continue   # ours by its orderId; or an id the ledger never recorded (decided as unknown)
            order = self.ledger.get(coid)
            recorded = order.order_id if order is not None else None
            if recorded is not None:
                others = [item for order_id, item in by_id.items() if order_id != recorded]
            else:
                others = list(by_id.values()) if len(by_id) > 1 else []
            if others:
                reused[coid] = others
        return reused

    def _foreign_orders(self) -> set[int]:
        """Orders already reported as not ours: this life's, and earlier lives' from the journal."""
        if self._foreign is None:
            self._foreign = set()
            if self.store is not None:
                for event in self.store.events(FOREIGN_ORDERS_EVENT):
                    ids = (event.get("payload") or {}).get("client_order_ids") or []
                    self._foreign.update(int(coid) for coid in ids if isinstance(coid, int))
        return self._foreign

    def _remember_foreign(self, new: list[tuple[int, ExchangeOrder]], source: str,
                          keep: set[int] | None = None) -> None:
        """Reported once: in memory for this life, in the journal for the next ones.

        ``keep`` limits what the journal keeps to the orders a later start can see again
        (open ones, and history inside the re-read overlap); None keeps them all.
        """
        coids = _distinct_ids(new)
        self._foreign_orders().update(coids)
        kept = [coid for coid in coids if keep is None or coid in keep]
        if self.journal is not None and kept:
            self.journal(FOREIGN_ORDERS_EVENT, {
                "source": source, "client_order_ids": kept,
                "orders": [self._order_detail(coid, item) for coid, item in new[:ALERT_NAMES_AT_MOST]]})

    def _seen_again(self, new: list[tuple[int, ExchangeOrder]], now: float) -> set[int]:
        """The orders a later start may see again: open ones and those inside the history overlap."""
        open_states = {None, -1, 0, 2, 4, 5}   # not final (PRE, NEW, PARTIAL, cancelling), or no state
        recent = now - 2 * HISTORY_OVERLAP_SECONDS
        return {coid for coid, item in new
                if item.state in open_states or self._created(item) >= recent}

    @staticmethod
    def _order_detail(coid: int, item: ExchangeOrder) -> dict:
        return {"client_order_id": coid, "order_id": item.order_id, "symbol": item.symbol, "side": item.side,
                "qty": item.qty, "fill_qty": item.fill_qty, "price": item.price, "state": item.state,
                "reduce_only": item.reduce_only}

    @staticmethod
    def _describe(new: list[tuple[int, ExchangeOrder]]) -> str:
        parts = []
        for coid, item in new[:ALERT_NAMES_AT_MOST]:
            side = item.side.name if item.side is not None else "?"
            parts.append(f"{coid} ({_shown(item.symbol)} {side} {_shown(item.qty)} @ {_shown(item.price)}, "
                         f"orderId {_shown(item.order_id)})")
        more = f" and {len(new) - ALERT_NAMES_AT_MOST} more" if len(new) > ALERT_NAMES_AT_MOST else ""
        return ", ".join(parts) + more

    @staticmethod
    def _created(item: ExchangeOrder) -> float:
        return (item.create_time_ms or 0.0) / 1000.0

    def _prefixed_history(self, since: float, until_ms: int) -> HistoryRead:
        """Every order of ours in the history window ``[since, until_ms]``, all pages (cursor paging),
        and whether the read reached the start of the window.

        At most ``HISTORY_MAX_PAGES`` pages of ``HISTORY_PAGE_SIZE``: the cost of a start is
        one request per 500 orders of ours since the last check. The read is complete only
        when a page says no more follow, or is short without saying (``Page.more``): a full
        page that does not say is read on as one saying more follow, since a missing
        ``hasNext`` is no evidence that the history ends. The last page allowed still saying
        more follow, a page saying more follow without a cursor, or a cursor already used (the
        paging does not move) all leave the oldest part unread, and the caller must not take
        it as read.
        The perp history is read whole by its client (which raises rather than return part).
        """
        since_ms = int(since * 1000)
        found: list[ExchangeOrder] = []
        filters = history_filters(page_size=HISTORY_PAGE_SIZE, start_ms=since_ms, end_ms=int(until_ms))
        pages = rows_read = 0
        oldest: float | None = None
        used: set[int] = set()
        why = ""
        claim = ""
        complete = False
        for _page in range(HISTORY_MAX_PAGES):
            page = parse_order_page(self.client.order_history(**filters))
            pages += 1
            rows_read += len(page.rows)
            created = [item.create_time_ms for item in page.rows if item.create_time_ms is not None]
            if created:
                oldest = min(created) if oldest is None else min(oldest, *created)
            found.extend(item for item in page.rows if self.is_ours(item.client_order_id))
            if not page.more(HISTORY_PAGE_SIZE):
                complete = True
                break
            claim = _more_claim(page)
            cursor = page.next_cursor
            if cursor is None:
                why = f"page {pages} {claim} but gave no cursor to read them by"
                break
            if cursor in used:
                why = f"page {pages} gave cursor {cursor} again: the paging does not move"
                break
            used.add(cursor)
            filters = next_page_filters(filters, cursor)
        else:
            why = (f"{HISTORY_MAX_PAGES} pages of {HISTORY_PAGE_SIZE} (the most one read takes) and the last "
                   f"{claim}")
        if self.perp_client is not None:
            perp = self.perp_client.perp_order_history(start_ms=since_ms, end_ms=int(until_ms))
            found.extend(perp_open_order(order) for order in perp if self.is_ours(order.client_order_id))
        return HistoryRead(rows=tuple(found), since_ms=since_ms, until_ms=int(until_ms), complete=complete,
                           pages=pages, rows_read=rows_read, oldest_ms=None if oldest is None else int(oldest),
                           why=why)

    def _alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        send_alert(self.alerts, logger, level, kind, message, **detail)
