"""Positions on the exchange against our trades' (docs/RECOVERY.md rows S1-S6, X1-X2).

Why it exists: after a crash, an outage or a manual intervention the exchange may hold more,
less or the opposite of what our trades believe. Acting on a wrong picture sells a position
twice or leaves a naked leg; acting on a missing answer books a phantom close. What the
comparison decides, per symbol (signed quantities, ours = the active trades'):

* exchange covers ours on the same side: fine; anything beyond ours is somebody else's
  position, logged once and never touched;
* exchange short of ours: a disappearing position is not a close. Only the part that
  fills which are not ours explain (``close_evidence``: their net flow, closing minus
  opening side, less what the latest read that was not short showed beyond ours) is booked
  as an external close, at their price, the strategy paused; the rest is a *suspect read*
  (``SuspectReads``: an empty answer is not evidence): the trades stay as they are, entries
  are held, one CRITICAL alert, re-checked every minute until the positions show again or
  the evidence arrives;
* a position that shows again exactly as an older version's estimated external close took
  it away reopens that trade under its own exit rules (X1);
* exchange on the opposite side: CRITICAL alert, the strategy is paused and no order goes
  to that symbol until an operator resumes it.

A symbol is only judged when our view of it is settled (the reconciler passes the others as
``unsettled``); a shortfall is not judged where an order of ours is a verdict on missing data
still watched (``in_doubt``: its fill would pass for somebody else's). While running, a mismatch must also be seen on two consecutive checks
before anything is done, so a lagging positions answer never books a phantom close.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from account_manager import AccountSnapshot
from alerts import send_alert
from clock import Clock
from close_evidence import CloseEvidence, KnownPosition, vwap_of_newest
from reconciliation_report import (
    QTY_EPSILON,
    VERDICT_DEFERRED,
    VERDICT_EXTERNAL,
    VERDICT_OK,
    VERDICT_OPPOSITE,
    VERDICT_SHORTFALL,
    ReconcileReport,
    SymbolCheck,
)
from errors import TraderError
from seams import (
    AlertSender,
    KnownPositionStore,
    PerpReconcilerClient,
    ReconcilerClient,
    ReconcilerLedger,
    ReconcilerLifecycle,
    require,
)
from strategy_pauses import StrategyPauses
from trade_lifecycle import TradeState

logger = logging.getLogger(__name__)

# A suspect positions read (docs/RECOVERY.md S6) holds every strategy's entries under this key.
SUSPECT_HOLD_KEY = "suspect_positions"


@dataclass
class _Holding:
    """Our exposure on one symbol, and the (trade, leg) pairs that make it up."""

    signed: float = 0.0
    legs: list[tuple[Any, Any]] = field(default_factory=list)


def _sign(value: float) -> int:
    return 1 if value > QTY_EPSILON else -1 if value < -QTY_EPSILON else 0


def judge(ours: float, exchange: float) -> str:
    """The verdict for one symbol from the two signed quantities (pure)."""
    if _sign(ours) == 0:
        return VERDICT_OK if _sign(exchange) == 0 else VERDICT_EXTERNAL
    if _sign(exchange) == -_sign(ours):
        return VERDICT_OPPOSITE
    if abs(exchange) < abs(ours) - QTY_EPSILON:
        return VERDICT_SHORTFALL
    return VERDICT_EXTERNAL if abs(exchange) > abs(ours) + QTY_EPSILON else VERDICT_OK


class PositionReconciler:
    """The per-symbol table on one positions read: verdicts, external closes on evidence, reversals.

    Built and called by ``reconciliation.Reconciler`` (which checked the collaborators against
    their Protocols): ``compare`` once at start-up (acting at once) and every 60 s (acting on
    two consecutive checks that agree).
    """

    def __init__(self, *, client: ReconcilerClient, ledger: ReconcilerLedger, lifecycle: ReconcilerLifecycle,
                 clock: Clock, pauses: StrategyPauses, alerts: AlertSender | None,
                 evidence_interval_seconds: float, perp_client: PerpReconcilerClient | None = None) -> None:
        self.ledger = ledger
        self.lifecycle = lifecycle
        self.clock = clock
        self.pauses = pauses
        self.alerts = alerts
        self.evidence = CloseEvidence(client=client, ledger=ledger, lifecycle=lifecycle, clock=clock,
                                      interval_seconds=evidence_interval_seconds, perp_client=perp_client)
        self.suspect_reads = SuspectReads(lifecycle=lifecycle, alerts=alerts)
        self._seen_external: set[str] = set()
        self._suspects: dict[str, tuple[str, float, float]] = {}   # mismatches awaiting confirmation
        self._reversals_pending: dict[str, tuple] = {}
        self._unmatched_reported: set[str] = set()
        self._doubts_logged: dict[str, str] = {}   # symbol -> why its shortfall was deferred (logged once)
        # symbol -> (snapshot time, exchange - ours signed) of the latest judged read that was not
        # short: what was beyond ours then (S1/S2), which outside closes since may have taken away.
        # Kept in the store (``keep_known_in``) so that a restart nets against it too.
        self._known: dict[str, tuple[float, float]] = {}
        self._known_store: KnownPositionStore | None = None
        # What the store holds now; None: not known (unreadable), so the next reconciliation writes.
        self._known_stored: dict[str, tuple[float, float]] | None = {}

    def __repr__(self) -> str:
        return f"PositionReconciler(awaiting_confirmation={sorted(self._suspects)})"

    def keep_known_in(self, store: KnownPositionStore) -> None:
        """Keep the S2 memory in ``store`` from now on, and take back what it holds (before the
        first ``compare``: ``app.build_context`` calls it when it wires the reconciler).

        Why: without it a restart forgets that a position on one of our symbols was somebody
        else's, and their sale of it (while the daemon was down, or just after) would read as
        an outside close of OUR trade, which cannot be undone. The restored ``at`` is the old
        read's time, so the outside flow since then is netted against it as before the restart.
        A memory that cannot be read, or is malformed, is not used: a WARNING, and the start
        goes on without it (the window's net flow alone decides, as before the memory was
        kept). Memory can only lower what evidence explains, never raise it, so an old one errs
        towards a suspect read (S6), which is reversible, never towards a booking.
        """
        require("PositionReconciler known-position store", store, KnownPositionStore)
        self._known_store = store
        try:
            stored = store.load_known_positions()
        except TraderError as exc:
            logger.warning("reconciliation: what the positions showed beyond our trades before the restart "
                           "cannot be read (%s): starting without it, the window's net outside flow alone "
                           "explains a shortfall; the record is replaced at the next reconciliation", exc)
            self._known_stored = None
            return
        self._known_stored = dict(stored)
        for symbol, value in stored.items():
            self._known.setdefault(symbol, value)   # a read of this life is newer than the store's
        if stored:
            logger.info("reconciliation: restored what the positions showed beyond our trades on %s",
                        ", ".join(f"{symbol} {beyond:+g}" for symbol, (_at, beyond) in sorted(stored.items())))

    def known_positions(self) -> dict[str, tuple[float, float]]:
        """A copy of the S2 memory: symbol -> (read time, beyond our trades signed)."""
        return dict(self._known)

    def _keep_known(self) -> None:
        """Write the S2 memory when this reconciliation changed it: one write at most, none when
        unchanged. A failed write is retried at the next reconciliation; meanwhile the store
        holds the older memory, which can only make a restart explain less (a suspect read)."""
        if self._known_store is None or self._known == self._known_stored:
            return
        try:
            self._known_store.save_known_positions(self._known)
        except TraderError as exc:
            logger.warning("reconciliation: what the positions show beyond our trades could not be kept in the "
                           "store (%s): tried again at the next reconciliation", exc)
            return
        self._known_stored = dict(self._known)

    def compare(self, snapshot: AccountSnapshot, report: ReconcileReport, unsettled: set[str], *,
                confirm: bool, in_doubt: Mapping[str, str] | None = None) -> None:
        """The per-symbol table (docs/RECOVERY.md S1-S6, X1-X2) on one positions read.

        ``confirm``: a shortfall, an opposite side or a reappearing old estimate acts only
        when the previous check saw the same quantities (periodic runs); the start-up acts at
        once. A shortfall books an external close only for the part that fills which are not
        ours explain; the rest is a suspect read (``SuspectReads``).

        ``in_doubt``: symbols (with why) where an order of ours is a verdict on missing data
        (``Reconciler._in_doubt``): a shortfall or a reappearing close there is deferred, since
        that order's fill would pass for somebody else's. An opposite side is still acted on:
        it books nothing, and blocking the symbol is right whoever's fill caused it.

        What the read teaches about positions beyond ours (S2) is kept in the store at the end
        (``_keep_known``), also when a step failed after changing it.
        """
        try:
            self._compare(snapshot, report, unsettled, confirm=confirm, in_doubt=in_doubt)
        finally:
            self._keep_known()

    def _compare(self, snapshot: AccountSnapshot, report: ReconcileReport, unsettled: set[str], *,
                 confirm: bool, in_doubt: Mapping[str, str] | None) -> None:
        now = self.clock.now()
        in_doubt = in_doubt or {}
        positions = self._positions(snapshot)
        self._end_doubts(in_doubt)
        self._reverse_old_estimates(self._holdings(now), positions, unsettled | set(in_doubt), report,
                                    confirm=confirm)
        holdings = self._holdings(now)
        for symbol in [symbol for symbol in self._known if symbol not in holdings and symbol not in positions]:
            del self._known[symbol]   # nothing there either side: the window's net flow alone decides
        pending: dict[str, tuple[str, float, float]] = {}
        unexplained: dict[str, tuple[float, float]] = {}
        carried: set[str] = set()
        for symbol in sorted(set(holdings) | set(positions)):
            ours = holdings[symbol].signed if symbol in holdings else 0.0
            exchange, _position = positions.get(symbol, (0.0, None))
            verdict = judge(ours, exchange)
            if symbol in unsettled and verdict in (VERDICT_SHORTFALL, VERDICT_OPPOSITE):
                verdict = VERDICT_DEFERRED
            elif symbol in in_doubt and verdict == VERDICT_SHORTFALL:
                verdict = VERDICT_DEFERRED
                self._note_doubt(symbol, in_doubt[symbol], ours, exchange)
            report.symbols.append(SymbolCheck(symbol, round(ours, 8), round(exchange, 8), verdict))
            if verdict in (VERDICT_OK, VERDICT_EXTERNAL) and symbol not in unsettled and symbol not in in_doubt:
                self._known[symbol] = (float(snapshot.timestamp), exchange - ours)
            if verdict == VERDICT_DEFERRED:
                carried.add(symbol)   # not judged now: a suspicion on it stands
                continue
            if verdict == VERDICT_EXTERNAL:
                if symbol not in self._seen_external:
                    self._seen_external.add(symbol)
                    logger.info("position %s %+g is beyond our trades' %+g: external, left alone", symbol,
                                exchange, ours)
                continue
            if verdict not in (VERDICT_SHORTFALL, VERDICT_OPPOSITE):
                continue
            key = (verdict, round(ours, 8), round(exchange, 8))
            pending[symbol] = key
            if confirm and self._suspects.get(symbol) != key:
                carried.add(symbol)
                logger.warning("reconciliation: %s %s (ours %+g, exchange %+g); acting if the next check agrees",
                               symbol, verdict, ours, exchange)
                continue
            if verdict == VERDICT_OPPOSITE:
                self._opposite_side(symbol, holdings[symbol], exchange, report)
                continue
            left = self._shortfall(symbol, holdings[symbol], exchange, report)
            if left > QTY_EPSILON:   # what our trades still hold there after what evidence booked
                unexplained[symbol] = (round(exchange + _sign(ours) * left, 8), round(exchange, 8))
        self._suspects = pending
        self.suspect_reads.update(unexplained, carried, holdings, positions, report)

    def _note_doubt(self, symbol: str, why: str, ours: float, exchange: float) -> None:
        """Say once per symbol and reason that its shortfall waits for an order's verdict."""
        if self._doubts_logged.get(symbol) == why:
            return
        self._doubts_logged[symbol] = why
        logger.warning("reconciliation: %s reads short (ours %+g, exchange %+g) but %s: no external close is "
                       "judged there until the exchange shows that order or its watch ends", symbol, ours,
                       exchange, why)

    def _end_doubts(self, in_doubt: Mapping[str, str]) -> None:
        """Say when a deferral said by ``_note_doubt`` is over: its shortfall is judged again."""
        for symbol, why in list(self._doubts_logged.items()):
            if in_doubt.get(symbol) != why:
                del self._doubts_logged[symbol]
                logger.info("reconciliation: %s is judged again (no longer in doubt: %s; the verdict was reversed "
                            "or its watch ended)", symbol, why)

    def _holdings(self, now: float) -> dict[str, _Holding]:
        holdings: dict[str, _Holding] = {}
        for trade in self.lifecycle.active_trades():
            if trade.state is TradeState.SETTLING:
                continue
            for leg in trade.legs:
                if abs(leg.net_qty) <= QTY_EPSILON or leg.is_expired(now):
                    continue  # expired legs are settled by the lifecycle (BEHAVIOUR 4.5)
                holding = holdings.setdefault(leg.symbol, _Holding())
                holding.signed += leg.sign * leg.net_qty
                holding.legs.append((trade, leg))
        return holdings

    @staticmethod
    def _positions(snapshot: AccountSnapshot) -> dict[str, tuple[float, Any]]:
        positions: dict[str, tuple[float, Any]] = {}
        for position in snapshot.positions:
            signed = float(position.signed_qty)
            previous = positions.get(position.symbol, (0.0, position))[0]
            positions[position.symbol] = (previous + signed, position)
        return positions

    def _opposite_side(self, symbol: str, holding: _Holding, exchange: float, report: ReconcileReport) -> None:
        strategies = sorted({trade.strategy for trade, _leg in holding.legs})
        reason = f"position on {symbol} is {exchange:+g}, opposite to our {holding.signed:+g}"
        if self.ledger.block_symbol(symbol, reason):
            report.blocked_symbols.append(symbol)
            self._alert("CRITICAL", "opposite_position",
                        f"{reason}: no order on {symbol} and strategies {strategies} paused until an operator "
                        f"resumes them", symbol=symbol, ours=holding.signed, exchange=exchange)
        for name in strategies:
            if self.pauses.pause(name, f"opposite-side position on {symbol}"):
                report.paused.append(name)

    # ---- shortfalls: evidence before belief ----------------------------------------------------

    def _shortfall(self, symbol: str, holding: _Holding, exchange: float, report: ReconcileReport) -> float:
        """Book the part of a shortfall that fills which are not ours explain; returns the rest.

        A position that disappears is not a close: only the net flow of fills that no order of
        ours made (the exchange's trade history since the trade opened, closing side minus
        opening side) proves that somebody closed it, and no more of it than what the latest
        read that was not short leaves (what was beyond ours then, S2, is taken out first).
        That part is booked on the legs, newest trade first, at the price of the newest
        closing fills; what no fill explains is left as it is (a suspect read).
        """
        missing = abs(holding.signed) - max(0.0, abs(exchange))
        direction = _sign(holding.signed)
        legs = sorted((pair for pair in holding.legs if pair[1].sign == direction),
                      key=lambda pair: pair[0].seq, reverse=True)
        since = min(float(trade.opened_at or trade.created_at) for trade, _leg in legs)
        known = self._known.get(symbol)
        fills = self.evidence.fills(symbol, direction, since,
                                    None if known is None else KnownPosition(known[0], direction * known[1]))
        evidenced = min(missing, sum(qty for qty, _price in fills))
        if evidenced <= QTY_EPSILON:
            return missing
        price = vwap_of_newest(fills, evidenced)
        todo = evidenced
        for trade, leg in legs:
            if todo <= QTY_EPSILON:
                break
            qty = min(todo, leg.net_qty)
            self.lifecycle.record_external_close(
                trade.id, leg.index, qty, price,
                detail=f"exchange shows {exchange:+g} on {symbol} against our {holding.signed:+g}; "
                       f"{evidenced:g} explained by fills that are not ours at {price:g}")
            todo -= qty
            report.external_closes.append(f"{trade.id}:{symbol}:{qty:g}")
            if self.pauses.pause(trade.strategy, f"position on {symbol} closed outside the daemon"):
                report.paused.append(trade.strategy)
        self.evidence.forget(symbol)        # read again next time: what was booked is discounted
        if known is not None:   # what we booked left our trades: beyond them from now on
            self._known[symbol] = (known[0], known[1] + direction * evidenced)
        return max(0.0, missing - evidenced)

    # ---- reversal of external closes booked without evidence (older versions) -----------------

    def _reverse_old_estimates(self, holdings: dict[str, _Holding], positions: dict[str, tuple[float, Any]],
                               unsettled: set[str], report: ReconcileReport, *, confirm: bool) -> None:
        """A position that shows again exactly as an old estimated external close took it away.

        Older versions booked a missing position as closed at the mark (``pnl_estimated``)
        with no fill to back it. When the exchange shows, beyond what our active trades hold,
        exactly the quantities such a recent trade lost on every one of its legs, that trade
        is reopened so that its own exit rules manage the position again (docs/RECOVERY.md
        X1). Anything less than an exact match is only reported (X2): it could be somebody
        else's position, and the daemon never takes over a position on a guess.
        """
        extra = {symbol: positions.get(symbol, (0.0, None))[0] - (holdings[symbol].signed if symbol in holdings
                                                                   else 0.0)
                 for symbol in set(positions) | set(holdings)}
        pending: dict[str, tuple] = {}
        for trade in sorted(self.lifecycle.reversible_external_closes(), key=lambda t: t.seq, reverse=True):
            need: dict[str, float] = {}
            for leg in trade.legs:
                if leg.external_qty > QTY_EPSILON:
                    need[leg.symbol] = need.get(leg.symbol, 0.0) + leg.sign * leg.external_qty
            if not need or any(symbol in unsettled for symbol in need):
                continue
            if all(abs(extra.get(symbol, 0.0) - qty) <= QTY_EPSILON for symbol, qty in need.items()):
                key = tuple(sorted((symbol, round(qty, 8)) for symbol, qty in need.items()))
                pending[trade.id] = key
                if confirm and self._reversals_pending.get(trade.id) != key:
                    continue
                if self.lifecycle.reverse_external_close(
                        trade.id, f"the exchange shows {', '.join(f'{s} {q:+g}' for s, q in key)} beyond our "
                                  f"active trades again") is not None:
                    report.reversed.append(trade.id)
                    for symbol, qty in need.items():
                        extra[symbol] = extra.get(symbol, 0.0) - qty
                        if symbol in self._known:   # back in our trades: no longer beyond them
                            at, beyond = self._known[symbol]
                            self._known[symbol] = (at, beyond - qty)
                continue
            if any(_sign(extra.get(symbol, 0.0)) == _sign(qty) for symbol, qty in need.items()):
                self._report_unmatched(trade, need, extra)
        self._reversals_pending = pending

    def _report_unmatched(self, trade: Any, need: dict[str, float], extra: dict[str, float]) -> None:
        if trade.id in self._unmatched_reported:
            return
        self._unmatched_reported.add(trade.id)
        shows = ", ".join(f"{symbol} {extra.get(symbol, 0.0):+g} (trade lost {qty:+g})" for symbol, qty in need.items())
        self._alert("CRITICAL", "external_close_unmatched",
                    f"trade {trade.id} ({trade.strategy}) was booked closed outside the daemon without evidence, and "
                    f"the exchange shows positions on its symbols again beyond our trades ({shows}), but not exactly "
                    f"what it lost: not reopened. Those positions are managed by no trade. Check them; close them "
                    f"with `python main.py kill --all-positions --yes` or by hand", trade_id=trade.id,
                    need=need, shows={symbol: extra.get(symbol, 0.0) for symbol in need})

    def _alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        send_alert(self.alerts, logger, level, kind, message, **detail)


class SuspectReads:
    """A suspect-read episode (docs/RECOVERY.md row S6): positions read short of our trades with
    no fill to explain it.

    Nothing is booked: our trades stay exactly as they are (exits and closes go on); entries
    are held while any symbol we hold reads short without evidence; the operator hears once
    when it starts and once when it ends. Owned by ``PositionReconciler``.
    """

    def __init__(self, *, lifecycle: ReconcilerLifecycle, alerts: AlertSender | None) -> None:
        self.lifecycle = lifecycle
        self.alerts = alerts
        self._suspect: dict[str, tuple[float, float]] = {}   # symbol -> (ours, exchange) read short, no evidence

    def __repr__(self) -> str:
        return f"SuspectReads(symbols={sorted(self._suspect)})"

    def update(self, unexplained: dict[str, tuple[float, float]], carried: set[str],
               holdings: dict[str, _Holding], positions: dict[str, tuple[float, Any]],
               report: ReconcileReport) -> None:
        """Start, extend or end the episode (docs/RECOVERY.md row S6).

        Our trades are kept exactly as they are (exits and closes go on); entries are held
        while any symbol we hold reads short without evidence; the operator hears once when
        it starts and once when it ends.
        """
        before = self._suspect
        now_suspect = {symbol: value for symbol, value in before.items() if symbol in carried}
        now_suspect.update(unexplained)
        report.suspect = sorted(now_suspect)
        if now_suspect and not before:
            self._start(now_suspect, positions)
        elif now_suspect and set(now_suspect) - set(before):
            added = sorted(set(now_suspect) - set(before))
            logger.warning("suspect positions read now also on %s", ", ".join(added))
            self.lifecycle.hold_entries(SUSPECT_HOLD_KEY, self._reason(now_suspect))
        elif before and not now_suspect:
            self._end(before, holdings, positions)
        self._suspect = now_suspect

    def _start(self, suspect: dict[str, tuple[float, float]], positions: dict[str, tuple[float, Any]]) -> None:
        reason = self._reason(suspect)
        self.lifecycle.hold_entries(SUSPECT_HOLD_KEY, reason)
        flat = "the account reads flat" if not positions else "positions read short"
        listing = "; ".join(f"{symbol}: exchange {exchange:+g}, our trades {ours:+g}"
                            for symbol, (ours, exchange) in sorted(suspect.items()))
        self._alert("CRITICAL", "suspect_positions_read",
                    f"{flat} while our trades hold exposure, and no fill that is not ours explains it ({listing}). "
                    f"Nothing is booked as closed: the trades stay as they are and keep their exit rules; new "
                    f"entries are held until the positions show again. Check the positions on the exchange "
                    f"(web UI or `python main.py status`); if they are really gone, find out who closed them: a "
                    f"close is booked as soon as its fills appear in the trade history",
                    symbols={symbol: {"ours": ours, "exchange": exchange}
                             for symbol, (ours, exchange) in sorted(suspect.items())})

    def _end(self, before: dict[str, tuple[float, float]], holdings: dict[str, _Holding],
             positions: dict[str, tuple[float, Any]]) -> None:
        self.lifecycle.release_entries(SUSPECT_HOLD_KEY)
        how: dict[str, str] = {}
        for symbol in sorted(before):
            if symbol not in holdings:
                how[symbol] = "no longer held by our trades"
            elif symbol in positions:
                how[symbol] = f"shows {positions[symbol][0]:+g} again"
            else:
                how[symbol] = "resolved"
        shown = [symbol for symbol, text in how.items() if text.startswith("shows")]
        text = "; ".join(f"{symbol} {value}" for symbol, value in how.items())
        if shown:
            self._alert("WARNING", "positions_reappeared",
                        f"the positions read as missing show again ({text}): suspicion cleared, entries resume",
                        symbols=how)
        else:
            self._alert("WARNING", "suspect_positions_resolved",
                        f"the suspect positions read is over ({text}): entries resume", symbols=how)

    @staticmethod
    def _reason(suspect: dict[str, tuple[float, float]]) -> str:
        return "positions read short of our trades without evidence on " + ", ".join(sorted(suspect))

    def _alert(self, level: str, kind: str, message: str, **detail: Any) -> None:
        send_alert(self.alerts, logger, level, kind, message, **detail)
