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
* at every start the order history since the store's last check (89 days for a store that
  never had one) is read for our prefix: the trade sequence is re-seeded above anything seen,
  so no clientOrderId is ever sent twice; unknown orders there mean the store is behind;
* a store that is missing (new or empty, never reconciled) or quarantined is a lost memory:
  if the exchange shows anything of ours, every strategy starts paused;
* while running, the history since the last check is read every reconciliation, so a foreign
  order that filled between two checks is still seen;
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
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from account_manager import AccountSnapshot
from alerts import send_alert
from clock import Clock
from coincall_payloads import ExchangeOrder, PerpOrder, history_filters, next_page_filters, parse_order_page
from errors import TraderError
from order_ledger import LedgerOrder, parse_client_order_id
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
        self._new_state_dir = False

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
        """
        if self.store is None:
            return None
        lost = self._lost_memory()
        watermark = self._counter(ORDER_HISTORY_WATERMARK) / 1000.0
        since = now - SEQ_RESEED_LOOKBACK_SECONDS
        if lost is None and watermark > 0:
            since = max(since, watermark - HISTORY_OVERLAP_SECONDS)
        until_ms = self.clock.now_ms()
        history = self._prefixed_history(since, until_ms)
        self.adopt_presumed(history, report, now)
        prefixed_open = [item for item in listed if self.is_ours(item.client_order_id)]
        seen = history + prefixed_open
        seqs = _trade_seqs(seen)
        unknown = self._not_yet_reported(seen)
        counter_before = self._counter(TRADE_SEQ_COUNTER)
        reseeded = self._reseed(seqs, margin=bool(unknown))
        self.store.raise_counter_to(ORDER_HISTORY_WATERMARK, until_ms)
        if reseeded is not None:
            logger.warning("trade sequence re-seeded to %d from the exchange's order history", reseeded)
        if lost is not None:
            return self._lost_memory_start(lost, snapshot, prefixed_open, history, unknown, report, now)
        if not unknown:
            return None
        highest = max(parse_client_order_id(coid).trade_seq for coid, _item in unknown)
        if highest <= counter_before:
            self.unknown_orders([item for _coid, item in unknown], report, source="start-up")
            return {"unknown_orders": len(unknown), "max_trade_seq": highest}
        return self._store_behind(unknown, report, counter_before, highest)

    def watch_history(self, report: ReconcileReport, now: float) -> None:
        """While running: orders of ours created since the last check that the ledger does not know.

        One history page per reconciliation as a rule (the read starts at the previous
        check), so a foreign order that filled between two checks is still seen. A failed
        read is retried at the next reconciliation from the same point.
        """
        if self.store is None:
            return
        watermark = self._counter(ORDER_HISTORY_WATERMARK) / 1000.0
        since = max(now - SEQ_RESEED_LOOKBACK_SECONDS,
                    (watermark if watermark > 0 else now - self.interval_seconds) - HISTORY_OVERLAP_SECONDS)
        until_ms = self.clock.now_ms()
        try:
            history = self._prefixed_history(since, until_ms)
        except TraderError as exc:
            logger.warning("order history unavailable (%s): checked again at the next reconciliation", exc)
            return
        self.adopt_presumed(history, report, now)
        self.unknown_orders(history, report, source="history")
        self.store.raise_counter_to(ORDER_HISTORY_WATERMARK, until_ms)

    def _lost_memory(self) -> str | None:
        """Why the store cannot be trusted to know our orders, or None."""
        if self.quarantined is not None:
            return "quarantined"
        if self._counter(ORDER_HISTORY_WATERMARK) == 0 and self._store().holds_nothing():
            return "missing"
        return None

    def _store_behind(self, unknown: list[tuple[int, ExchangeOrder]], report: ReconcileReport,
                      counter_before: int, highest: int) -> dict:
        """Row L3: the exchange shows our orders beyond the store's sequence (an older copy)."""
        coids = [coid for coid, _item in unknown]
        report.foreign_orders.extend(coids)
        self._remember_foreign(unknown, "history", keep=self._seen_again(unknown, self.clock.now()))
        report.paused.extend(self.pauses.pause_every("the state store is behind the exchange"))
        blocked = self._block_symbols(unknown, report, "the state store is behind the exchange on this symbol",
                                      every_symbol=True)
        sequence = self._counter(TRADE_SEQ_COUNTER)
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
            report.foreign_orders.extend(coid for coid, _item in unknown)
            self._remember_foreign(unknown, "start-up", keep=self._seen_again(unknown, now))
        # A first start on an account with positions of its own has lost nothing.
        positions_count = bool(positions) and (lost == "quarantined" or not self._new_state_dir or bool(history))
        if not (positions_count or prefixed_open or recent):
            level = logging.WARNING if lost == "quarantined" or history else logging.INFO
            logger.log(level, "state store %s (%s) but the exchange shows nothing of ours: normal start",
                       "quarantined" if lost == "quarantined" else "is new or empty", self.quarantined or lost)
            return probe
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
        self.pauses.pause_every(f"state {'quarantined' if lost == 'quarantined' else 'store missing'} at start-up")
        return probe

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

    def _reseed(self, seqs: Iterable[int], *, margin: bool) -> int | None:
        """Raise the trade sequence above every one seen (never lowers it); the new value, or None."""
        highest = max(seqs, default=0)
        if highest <= 0:
            return None
        target = highest + (SEQ_RESEED_MARGIN if margin else 0)
        if target <= self._counter(TRADE_SEQ_COUNTER):
            return None
        return self._store().raise_counter_to(TRADE_SEQ_COUNTER, target)

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
        ours = {item.client_order_id: item for item in items
                if item.client_order_id is not None and self.ledger.is_ours(item.client_order_id)}
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
        operator is told which orders and what to do (docs/RECOVERY.md row O2).
        """
        new = self._not_yet_reported(items)
        if not new:
            return
        coids = [coid for coid, _item in new]
        report.foreign_orders.extend(coids)
        self._remember_foreign(new, source)
        highest = max(parse_client_order_id(coid).trade_seq for coid in coids)
        reseeded = self._reseed([highest], margin=True)
        reason = f"orders with our clientOrderId prefix {self.ledger.prefix} that are not ours on the exchange"
        report.paused.extend(self.pauses.pause_every(reason))
        blocked = self._block_symbols(new, report, reason, every_symbol=False)
        block_text = (f"; no order of ours goes to {', '.join(blocked)} (one of our trade sequences is in use "
                      f"there) until a resume" if blocked else "")
        sequence = reseeded if reseeded is not None else self._counter(TRADE_SEQ_COUNTER)
        self._alert("CRITICAL", "prefix_conflict",
                    f"{len(coids)} {source} order(s) on the exchange carry our clientOrderId prefix "
                    f"{self.ledger.prefix} but are not in our ledger: {self._describe(new)}. Another daemon uses "
                    f"prefix {self.ledger.prefix} on this account, or this state directory was restored from an "
                    f"older copy. They are left untouched (not provably ours); every strategy is paused and our "
                    f"trade sequence continues above {sequence}{block_text}. Fix: give each daemon on the account "
                    f"its own CLIENT_ORDER_PREFIX (100-899), or, if an older state was restored, stop this daemon and "
                    f"start it on the newest state directory; cancel those orders by hand if they are yours; then "
                    f"`python main.py resume`",
                    client_order_ids=coids[:ALERT_NAMES_AT_MOST], count=len(coids), source=source,
                    highest_trade_seq=highest)

    def _block_symbols(self, unknown: list[tuple[int, ExchangeOrder]], report: ReconcileReport, reason: str,
                       *, every_symbol: bool) -> list[str]:
        """No order of ours where an unknown order could be mistaken for ours, until an operator resumes.

        A trade sequence we used ourselves means its next clientOrderIds may equal the
        unknown ones (an exchange lookup by clientOrderId would then find the wrong order);
        ``every_symbol`` (a store behind the exchange) also blocks symbols whose picture is
        stale, so a reduce-only exit cannot close a position some unknown trade holds.
        """
        ours = {parse_client_order_id(coid).trade_seq for coid in self.ledger.known_client_order_ids()}
        blocked: list[str] = []
        for coid, item in unknown:
            symbol = item.symbol
            if not symbol or symbol in blocked:
                continue
            if every_symbol or parse_client_order_id(coid).trade_seq in ours:
                blocked.append(symbol)
                if self.ledger.block_symbol(symbol, reason):
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
        """(clientOrderId, item) of the unknown orders of ours not reported before, in order."""
        known = self._foreign_orders()
        found: dict[int, ExchangeOrder] = {}
        for item in items:
            coid = item.client_order_id
            if coid is None or coid in known or coid in found or not self.is_ours(coid):
                continue
            if not self.ledger.is_ours(coid):
                found[coid] = item
        return list(found.items())

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
        coids = [coid for coid, _item in new]
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

    def _prefixed_history(self, since: float, until_ms: int) -> list[ExchangeOrder]:
        """Every order of ours in the history window ``[since, until_ms]``, all pages (cursor paging).

        At most ``HISTORY_MAX_PAGES`` pages of ``HISTORY_PAGE_SIZE``: the cost of a start is
        one request per 500 orders of ours since the last check.
        """
        found: list[ExchangeOrder] = []
        filters = history_filters(page_size=HISTORY_PAGE_SIZE, start_ms=int(since * 1000), end_ms=int(until_ms))
        for _page in range(HISTORY_MAX_PAGES):
            page = parse_order_page(self.client.order_history(**filters))
            found.extend(item for item in page.rows if self.is_ours(item.client_order_id))
            cursor = page.next_cursor
            if not page.has_next or cursor is None:
                break
            filters = next_page_filters(filters, cursor)
        if self.perp_client is not None:
            perp = self.perp_client.perp_order_history(start_ms=int(since * 1000), end_ms=int(until_ms))
            found.extend(perp_open_order(order) for order in perp if self.is_ours(order.client_order_id))
        return found

    def _alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        send_alert(self.alerts, logger, level, kind, message, **detail)
