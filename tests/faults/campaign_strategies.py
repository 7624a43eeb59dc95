"""Strategies for the fault campaigns: three engines, a hedge and a perp leg, cycling through every state fast.

Why these and not the shipped strategies: a kill campaign only proves something if the
kills land in every state a trade can be in. The shipped strategies hold trades for 15-30
minutes and pause for half an hour between them; these open again a few simulated seconds
after the previous trade ends and hold for at most three minutes, so a run of a couple of
simulated hours passes through mid-open, partial fills, requotes, RFQ waits, OPEN and
mid-close many times over.

* ``camp_limit``: a long strangle of 0.1 BTC a leg worked by the phased limit engine. The
  first phase rests at fair value (passive, partial fills of 10-lot orders), repriced every
  10 s, before an aggressive phase crosses: requotes and partial fills happen every trade.
* ``camp_rfq``: a long 0.5 BTC strangle through RFQ (about 2 x 0.5 x 90k of strikes, above
  the exchange's 50k minimum); the close goes through RFQ too, with the limit fallback.
* ``camp_smart``: a long 0.2 BTC strangle worked in two chunks at mid by the smart engine.

* ``camp_hedged``: a long, lopsided 0.1 BTC strangle (0.35-delta call, 0.15-delta put: about
  +0.02 BTC of delta) on the limit engine, delta-hedged with BTCUSD in a 0.001 BTC band (one perp
  step) at most every 15 s (hedge at most 0.05 BTC). The lopsided strikes make every trade sell
  BTCUSD right after it opens, and the drift of a three-minute hold rebalances it again, so the
  kills land mid-hedge as well as mid-open and mid-close (issue 13). Its loss exit is wider than
  the others' (a balanced strangle bought at the ask starts some 10 % down at fair value and
  would leave before its first rebalance).
* ``camp_perp``: a long 0.5 ETH strangle plus a long 0.05 ETH perpetual leg (``perp``), limit
  engine: perpetual orders in the open, the close, unwinds and kills.

All the option legs buy: the account is one-way netted, so a strategy selling a symbol another one
buys would leave a reduce-only close with nothing to reduce (a strategy-design conflict,
not what this campaign is about). For the same reason the two perpetual users trade
different perpetuals: the hedge may be long or short BTCUSD, the perp leg is long ETHUSD.

Exits always include ``max_hold_hours(0.05)`` (three simulated minutes) so every trade that
opens is closed by one of its own rules, plus tight profit and loss targets that fire now
and then. ``entries`` off (the drain run) keeps the same names and exits, so trades reloaded
after a restart get their exit rules back, while no new trade opens.

Entry windows: ``time_window(8, 7)`` keeps entries out of the hour before the 08:00 daily
expiry (and its 15-minute halt), so a trade never has to be settled instead of closed.
Nothing here reads the environment: the caller decides ``entries``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from hedging import delta_hedge
from multileg_orderbook import SmartExecConfig
from option_selection import perp, strangle
from rfq import RFQParams
from strategy import (
    StrategyConfig,
    max_hold_hours,
    max_loss_pct,
    min_available_margin_pct,
    profit_target_pct,
    time_window,
)
from trade_execution import ExecutionParams, ExecutionPhase

LIMIT_STRATEGY = "camp_limit"
RFQ_STRATEGY = "camp_rfq"
SMART_STRATEGY = "camp_smart"
HEDGED_STRATEGY = "camp_hedged"
PERP_STRATEGY = "camp_perp"
CAMPAIGN_STRATEGY_NAMES: tuple[str, ...] = (LIMIT_STRATEGY, RFQ_STRATEGY, SMART_STRATEGY, HEDGED_STRATEGY,
                                            PERP_STRATEGY)
# The hedge: a band of one perp step and a short interval, so rebalances happen within a
# three-minute hold; a small cap keeps it well inside the account's margin.
HEDGE_BAND = 0.001
HEDGE_INTERVAL_SECONDS = 15.0
HEDGE_MAX_QTY = 0.05
PERP_LEG_QTY = 0.05

HOLD_HOURS = 0.05              # three simulated minutes: every opened trade leaves soon
COOLDOWN_SECONDS = 20.0
CHECK_INTERVAL_SECONDS = 1.0   # entries considered on every poll (polls are >= 1 s apart)
# Kills mid-open make FAILED trades on purpose; the default daily cap (3) would pause entries.
OPEN_FAILURES_PER_DAY = 100_000


@dataclass(frozen=True)
class CampaignEntrySwitch:
    """Entry condition that is simply on or off: the drain run turns entries off by name-stable config.

    A plain object with ``kind``/``name`` like the factory conditions, so the runner logs it
    and ``StrategyConfig`` checks its signature like any other entry condition.
    """

    enabled: bool
    kind: ClassVar[str] = "entry"

    @property
    def name(self) -> str:
        return f"campaign_entries({'on' if self.enabled else 'off'})"

    def __call__(self, snapshot: Any) -> bool:
        return self.enabled


def _common_entries(entries: bool) -> list[Any]:
    return [CampaignEntrySwitch(entries), time_window(8, 7), min_available_margin_pct(20)]


def _common_exits(profit_pct: float, loss_pct: float) -> list[Any]:
    return [profit_target_pct(profit_pct), max_loss_pct(loss_pct), max_hold_hours(HOLD_HOURS)]


def limit_strangle_config(entries: bool = True, cooldown_seconds: float = COOLDOWN_SECONDS) -> StrategyConfig:
    """Phased limit: rests at fair (passive partial fills, requotes), then crosses."""
    params = ExecutionParams(
        fill_timeout_seconds=10.0,
        max_requote_rounds=12,
        grace_seconds=2.0,
        price_wait_seconds=30.0,
        phases=(
            ExecutionPhase("fair", 30.0, 10.0, fair_aggression=0.0),
            ExecutionPhase("mid", 20.0, 10.0),
            ExecutionPhase("aggressive", 40.0, 10.0, buffer_pct=3.0),
        ),
    )
    return StrategyConfig(
        name=LIMIT_STRATEGY,
        legs=strangle(0.1, call_delta=0.30, put_delta=-0.30, dte="next", side=1),
        entry_conditions=_common_entries(entries),
        exit_conditions=_common_exits(2.0, 11.0),
        execution_mode="limit",
        execution_params=params,
        **_cycle_limits(cooldown_seconds),
    )


def _cycle_limits(cooldown_seconds: float) -> dict:
    """One trade at a time, back to back: the limits every campaign strategy shares."""
    return {"max_concurrent_trades": 1, "max_trades_per_day": 0, "cooldown_seconds": cooldown_seconds,
            "check_interval_seconds": CHECK_INTERVAL_SECONDS, "max_open_failures_per_day": OPEN_FAILURES_PER_DAY}


def rfq_strangle_config(entries: bool = True, cooldown_seconds: float = COOLDOWN_SECONDS) -> StrategyConfig:
    """RFQ open (no fallback: a missed RFQ is a FAILED trade) and RFQ close (limit fallback)."""
    return StrategyConfig(
        name=RFQ_STRATEGY,
        legs=strangle(0.5, call_delta=0.25, put_delta=-0.25, dte="next", side=1),
        entry_conditions=_common_entries(entries),
        exit_conditions=_common_exits(2.0, 16.0),
        execution_mode="rfq",
        rfq_params=RFQParams(timeout_seconds=30.0, poll_interval_seconds=3.0, min_improvement_pct=0.0,
                             open_fallback=None, close_fallback="limit"),
        execution_params=ExecutionParams(fill_timeout_seconds=10.0, aggressive_buffer_pct=3.0,
                                         max_requote_rounds=10, grace_seconds=2.0),
        **_cycle_limits(cooldown_seconds),
    )


def smart_strangle_config(entries: bool = True, cooldown_seconds: float = COOLDOWN_SECONDS) -> StrategyConfig:
    """Smart engine: two balanced chunks quoted at mid, aggressive fallback at each chunk's end."""
    return StrategyConfig(
        name=SMART_STRATEGY,
        legs=strangle(0.2, call_delta=0.15, put_delta=-0.15, dte="next", side=1),
        entry_conditions=_common_entries(entries),
        exit_conditions=_common_exits(2.0, 22.0),
        execution_mode="smart",
        smart_config=SmartExecConfig(chunk_count=2, time_per_chunk_seconds=20.0, quoting_strategy="mid",
                                     reprice_interval_seconds=10.0, aggressive_attempts=4,
                                     aggressive_wait_seconds=4.0),
        execution_params=ExecutionParams(fill_timeout_seconds=10.0, aggressive_buffer_pct=3.0,
                                         max_requote_rounds=10, grace_seconds=2.0),
        **_cycle_limits(cooldown_seconds),
    )


def _limit_params() -> ExecutionParams:
    """A plain limit job (at fair, then crossing by 3 %): the only engine that trades perpetuals."""
    return ExecutionParams(fill_timeout_seconds=10.0, aggressive_buffer_pct=3.0, max_requote_rounds=10,
                           grace_seconds=2.0)


def hedged_strangle_config(entries: bool = True, cooldown_seconds: float = COOLDOWN_SECONDS) -> StrategyConfig:
    """A long BTC strangle kept delta-neutral with BTCUSD: rebalances within each short hold."""
    return StrategyConfig(
        name=HEDGED_STRATEGY,
        legs=strangle(0.1, call_delta=0.35, put_delta=-0.15, dte="next", side=1),
        entry_conditions=_common_entries(entries),
        exit_conditions=_common_exits(2.0, 30.0),
        execution_mode="limit",
        execution_params=_limit_params(),
        hedge=delta_hedge(band=HEDGE_BAND, target=0.0, min_interval_seconds=HEDGE_INTERVAL_SECONDS,
                          max_hedge_qty=HEDGE_MAX_QTY, underlying="BTC", max_slippage_bps=20),
        **_cycle_limits(cooldown_seconds),
    )


def perp_strangle_config(entries: bool = True, cooldown_seconds: float = COOLDOWN_SECONDS) -> StrategyConfig:
    """A long ETH strangle plus a long ETHUSD leg: perpetual orders in every job of the trade."""
    return StrategyConfig(
        name=PERP_STRATEGY,
        legs=strangle(0.5, call_delta=0.25, put_delta=-0.25, dte="next", side=1, underlying="ETH")
        + perp(PERP_LEG_QTY, 1, underlying="ETH"),
        entry_conditions=_common_entries(entries),
        exit_conditions=_common_exits(2.0, 14.0),
        execution_mode="limit",
        execution_params=_limit_params(),
        **_cycle_limits(cooldown_seconds),
    )


def campaign_factories(entries: bool = True,
                       cooldown_seconds: float = COOLDOWN_SECONDS) -> list[Callable[[], StrategyConfig]]:
    """What ``main.main(strategies=...)`` takes: one zero-argument factory per strategy.

    ``cooldown_seconds`` spaces the trades: the kill campaign wants them back to back, the
    day-long HTTP campaign fewer of them (its wall time grows with every trade).
    """

    def camp_limit() -> StrategyConfig:
        return limit_strangle_config(entries, cooldown_seconds)

    def camp_rfq() -> StrategyConfig:
        return rfq_strangle_config(entries, cooldown_seconds)

    def camp_smart() -> StrategyConfig:
        return smart_strangle_config(entries, cooldown_seconds)

    def camp_hedged() -> StrategyConfig:
        return hedged_strangle_config(entries, cooldown_seconds)

    def camp_perp() -> StrategyConfig:
        return perp_strangle_config(entries, cooldown_seconds)

    return [camp_limit, camp_rfq, camp_smart, camp_hedged, camp_perp]


def exit_names_by_strategy() -> dict[str, set[str]]:
    """The exit-condition names of each campaign strategy: the only legitimate exit reasons."""
    from conditions import condition_name

    return {config.name: {condition_name(c) for c in config.exit_conditions}
            for config in (limit_strangle_config(), rfq_strangle_config(), smart_strangle_config(),
                           hedged_strangle_config(), perp_strangle_config())}
