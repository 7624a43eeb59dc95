"""Exit evaluation: whether an OPEN trade's exit rules have decided, and the evidence they decided on.

Why this module exists: BEHAVIOUR.md 4.2 row 9 and issue 9 (``price_sanity``) make judging an
exit more than calling a condition. Quotes are refreshed once per poll for the legs we hold;
a condition decides only after ``confirmations`` consecutive sane evaluations on newer quotes;
insane or stale quotes neither count nor reset a streak (insane ones are logged once per episode);
a rule that reads the legs' quotes directly (``leg_greek_limit``, a plain callable) is not judged
on a held leg's quote that is missing or older than ``quote_max_age``: a failed refresh keeps
the last quote on the leg, which only the valuation refuses by itself;
exits that stay unevaluable for a minute raise one alert; the decision keeps its evidence
(I3). ``ExitEvaluator`` does all of that and returns an ``ExitDecision``; the lifecycle
manager writes the decision and changes the trade's state, so the state machine stays in one
place.

Underlyings (issue 13): a leg's quote is ``market.quote(symbol)``, which reads the chain of the
symbol's own underlying (an ETH option is never looked up in BTC's cache), and its sanity is
judged against that row's own underlying price (``price_sanity``). The evidence names the
underlying next to the index it shows.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from alerts import send_alert
from conditions import ConditionHealth, ExitCondition, ExitVerdict, condition_name, judge_exit
from contracts import underlying_of
from errors import StaleDataError, TraderError
from price_sanity import quote_problems
from seams import AlertSender, PriceSource
from trade_fills import is_zero

if TYPE_CHECKING:
    from trade_lifecycle import TradeLifecycle

logger = logging.getLogger(__name__)

UNEVALUABLE_ALERT_SECONDS = 60.0


@dataclass
class _Streak:
    """One exit condition's run of consecutive sane evaluations that returned True.

    ``stamps`` are the quotes' ``as_of`` of the legs we held at the last counted evaluation,
    so the same quotes seen on two polls count once; ``seen`` goes into the exit detail (I3).
    """

    condition: Any
    stamps: tuple = ()
    seen: list = field(default_factory=list)


@dataclass
class ExitWatch:
    """One trade's exit evaluation state; in memory only (after a restart, streaks start again)."""

    streaks: dict[int, _Streak] = field(default_factory=dict)   # condition position -> its streak
    unevaluable_since: float | None = None
    unevaluable_alerted: bool = False
    insane_since: float | None = None       # an episode of insane quotes (logged once, at its start)


@dataclass(frozen=True)
class ExitDecision:
    """The exit that decided: its reason (the condition's name) and the evidence for ``exit_detail``."""

    reason: str
    detail: dict


def _confirmations_of(cond: Any) -> int:
    """How many consecutive sane True results ``cond`` needs; a plain callable needs one."""
    return int(cond.confirmations) if isinstance(cond, ExitCondition) else 1


def _quote_stamps(trade: TradeLifecycle) -> tuple:
    """When each held leg's market was read: its quote's, or for an expired leg not settled yet
    its settlement price's (``ExpiryMark``), so a calendar's stop can confirm after the near expiry."""
    stamps = []
    for leg in trade.legs:
        if is_zero(leg.net_qty):
            continue
        if leg.expiry_mark is not None:
            stamps.append(float(leg.expiry_mark.as_of))
        elif leg.quote is not None:
            stamps.append(float(leg.quote.as_of))
    return tuple(stamps)


def _newer(stamps: tuple, previous: tuple) -> bool:
    """Every held leg's quote is newer than at the last counted evaluation (a leg set changed counts)."""
    if len(stamps) != len(previous):
        return True
    return all(now > before for now, before in zip(stamps, previous))


class ExitEvaluator:
    """Refreshes the quotes of the legs we hold and judges a trade's exit conditions on them."""

    def __init__(self, *, market: PriceSource, alerts: AlertSender | None, quote_max_age: float,
                 health: ConditionHealth | None = None) -> None:
        self.market = market
        self.alerts = alerts
        self.quote_max_age = float(quote_max_age)
        self.health = health or ConditionHealth(on_alert=self._condition_alert)

    def refresh_quotes(self, trade: TradeLifecycle, now: float) -> None:
        """Once per poll, quotes for legs we hold (the chain cache makes it one call per expiry)."""
        for leg in trade.legs:
            if is_zero(leg.net_qty) or leg.is_expired(now):
                continue
            try:
                leg.quote = self.market.quote(leg.symbol, max_age=self.quote_max_age)
            except (TraderError, OSError) as error:
                logger.warning("trade %s: quote refresh of %s failed: %s", trade.id, leg.symbol, error)

    def evaluate(self, trade: TradeLifecycle, conditions: Sequence[Any], watch: ExitWatch, snapshot: Any,
                 now: float) -> ExitDecision | None:
        """§4.2 row 9: the first exit confirmed on enough snapshots decides; None while none has.

        A condition decides only once it has returned True on ``confirmations`` consecutive
        evaluations, each on quotes newer than the last counted one (``ExitCondition.confirmations``:
        1, and 2 for ``max_loss*``; a plain callable has 1). A False or an error resets its streak.
        An unevaluable snapshot (stale or insane quotes) neither counts nor resets it: two sane
        readings that both show the loss are both real evidence, and resetting on every glitch
        would let a flapping feed postpone a genuine stop for ever (issue 9, ``price_sanity``).
        While a leg we hold has an insane quote, or one missing or older than ``quote_max_age``,
        plain callables are not called at all: they may read quote fields directly, around the
        valuation's sanity and age rules. A stale leg's greeks read as unknown meanwhile
        (``TradeLeg.quote_stale``), so ``leg_greek_limit`` is unevaluable on it, while a fresh leg
        beyond its limit still fires.
        """
        insane = self._insane_legs(trade, now)
        self._note_insane(trade, watch, insane, now)
        stale = self._stale_legs(trade, now)
        for leg in trade.legs:
            leg.quote_stale = leg.index in stale
        try:
            return self._judge(trade, conditions, watch, snapshot, now, blocked=bool(insane or stale))
        finally:
            # Only the exit rules are held to ``quote_max_age``: the valuation, the structure delta
            # and the hedge keep their own limit, and the last quote stays the exit's evidence.
            for leg in trade.legs:
                leg.quote_stale = False

    def _judge(self, trade: TradeLifecycle, conditions: Sequence[Any], watch: ExitWatch, snapshot: Any,
               now: float, *, blocked: bool) -> ExitDecision | None:
        """The loop of ``evaluate``; ``blocked``: a held leg's quote is insane or stale (no plain callable)."""
        unevaluable = False
        for position, cond in enumerate(conditions):
            name = condition_name(cond)
            if blocked and not isinstance(cond, ExitCondition):
                verdict = ExitVerdict.UNEVALUABLE
            else:
                verdict = judge_exit(cond, snapshot, trade, health=self.health, strategy=trade.strategy,
                                     name=f"exit_conditions[{position}]:{name}")
            if verdict is ExitVerdict.UNEVALUABLE:
                unevaluable = True
                continue
            if verdict is not ExitVerdict.FIRED:
                watch.streaks.pop(position, None)
                continue
            streak = self._confirm(trade, watch, position, cond, snapshot)
            required = _confirmations_of(cond)
            if len(streak.seen) < required:
                logger.info("trade %s: exit %s fired on %d of %d consecutive sane snapshots; waiting for the next",
                            trade.id, name, len(streak.seen), required)
                continue
            decision = ExitDecision(name, self._exit_detail(trade, cond, snapshot, streak, required))
            watch.unevaluable_since = None
            watch.streaks.clear()
            return decision
        self._track_unevaluable(trade, watch, unevaluable, now)
        return None

    def _stale_legs(self, trade: TradeLifecycle, now: float) -> set[int]:
        """The legs we hold whose quote is missing or older than ``quote_max_age`` at ``now``.

        Why ``quote_max_age``: every poll's refresh fetches anything older than that, so an older
        quote here means this poll's refresh failed and the leg still holds an earlier one. An
        expired leg not settled yet (a calendar's near leg) is never refreshed: its last quote is
        from before the expiry, and its greeks are not what it holds now.
        """
        found = set()
        for leg in trade.legs:
            if is_zero(leg.net_qty):
                continue
            if leg.quote is None or now - float(leg.quote.as_of) > self.quote_max_age:
                logger.debug("trade %s: leg %d %s has no quote of the last %.0f s; rules reading it wait",
                             trade.id, leg.index, leg.symbol, self.quote_max_age)
                found.add(leg.index)
        return found

    @staticmethod
    def _insane_legs(trade: TradeLifecycle, now: float) -> list[str]:
        """Why the quotes of legs we hold are not believable (``price_sanity``); empty when all are."""
        found = []
        for leg in trade.legs:
            if is_zero(leg.net_qty) or leg.is_expired(now) or leg.quote is None:
                continue
            problems = quote_problems(leg.quote, leg.symbol)
            if problems:
                found.append(f"leg {leg.index} {leg.symbol}: " + ", ".join(problems))
        return found

    @staticmethod
    def _note_insane(trade: TradeLifecycle, watch: ExitWatch, insane: list[str], now: float) -> None:
        """One WARNING when an episode of insane quotes starts and one INFO when it ends, not one per tick."""
        if insane:
            if watch.insane_since is None:
                watch.insane_since = now
                logger.warning("trade %s (%s): no valuation on this snapshot (%s); PnL exits wait for a sane one",
                               trade.id, trade.strategy, "; ".join(insane))
            return
        if watch.insane_since is not None:
            logger.info("trade %s: quotes sane again after %.0f s; exits are evaluated again",
                        trade.id, now - watch.insane_since)
            watch.insane_since = None

    @staticmethod
    def _confirm(trade: TradeLifecycle, watch: ExitWatch, position: int, cond: Any, snapshot: Any) -> _Streak:
        """Count this True toward ``cond``'s confirmations, unless its quotes are the ones already counted."""
        streak = watch.streaks.get(position)
        if streak is None or streak.condition is not cond:
            streak = _Streak(cond)
            watch.streaks[position] = streak
        stamps = _quote_stamps(trade)
        if streak.seen and not _newer(stamps, streak.stamps):
            logger.debug("trade %s: exit %s fired again on the same quotes; not a new confirmation",
                         trade.id, condition_name(cond))
            return streak
        streak.stamps = stamps
        mode = getattr(cond, "mode", None) or "fair"
        try:
            pnl: float | None = trade.valuation(mode).value
        except (StaleDataError, ValueError):
            pnl = None
        streak.seen.append({"snapshot_ts": snapshot.timestamp,
                            "quotes_as_of": min(stamps) if stamps else None, "mode": mode, "pnl": pnl})
        return streak

    @staticmethod
    def _exit_detail(trade: TradeLifecycle, cond: Any, snapshot: Any, streak: _Streak | None = None,
                     required: int = 1) -> dict:
        mode = getattr(cond, "mode", None) or "fair"
        detail: dict[str, Any] = {"condition": condition_name(cond), "snapshot_ts": snapshot.timestamp}
        try:
            detail.update(trade.valuation(mode).to_detail())
        except (StaleDataError, ValueError) as error:
            detail.update({"mode": mode, "pnl": None, "valuation_error": str(error)})
        # The legs' own underlying price (each quote comes from its own underlying's chain), and
        # which underlying that is: an ETH trade's evidence shows the ETH index, never BTC's.
        detail["index"] = next((float(leg.quote.underlying_price) for leg in trade.legs
                                if leg.quote is not None and leg.quote.underlying_price), None)
        detail["underlying"] = next((name for name in (underlying_of(leg.symbol) for leg in trade.legs)
                                     if name is not None), None)
        detail["confirmations"] = {"required": required, "seen": len(streak.seen) if streak is not None else 1,
                                   "evaluations": list(streak.seen) if streak is not None else []}
        return detail

    def _track_unevaluable(self, trade: TradeLifecycle, watch: ExitWatch, unevaluable: bool, now: float) -> None:
        if not unevaluable:
            if watch.unevaluable_alerted:
                logger.info("trade %s: exits evaluable again", trade.id)
            watch.unevaluable_since = None
            watch.unevaluable_alerted = False
            return
        if watch.unevaluable_since is None:
            watch.unevaluable_since = now
        if not watch.unevaluable_alerted and now - watch.unevaluable_since >= UNEVALUABLE_ALERT_SECONDS:
            watch.unevaluable_alerted = True
            send_alert(self.alerts, logger, "WARNING", "exit_unevaluable",
                       f"trade {trade.id} ({trade.strategy}): exits unevaluable for "
                       f"{now - watch.unevaluable_since:.0f} s (stale, missing or insane quotes)", trade_id=trade.id)

    def _condition_alert(self, kind: str, detail: str) -> None:
        send_alert(self.alerts, logger, "WARNING", kind, detail)
