"""The HTTP fault campaign: one simulated day of trading with about 5 % of requests failing.

Why in-process: the simulator and the daemon share one speed-0 ``SimulatedClock``, so a day
of 86,400 simulated seconds costs only the CPU of its requests (tens of seconds), the
schedule of exchange-level faults is exact, and the result is the same on a slow or a fast
machine. Every request still crosses real HTTP on 127.0.0.1 with real signatures.

What fails (BEHAVIOUR.md 6.1, 7.2, 7.3; issue 5 acceptance):

* HTTP level, on every endpoint: HTTP 5xx, HTTP 429, code 10000, dropped connections and
  answers lost after execution (``FaultPlan.set_global``); on top, accepted-but-lost
  responses aimed at order create, cancel and RFQ accept, creates that time out after the
  exchange executed them, and rare timeouts anywhere. A timeout holds a server thread for
  real seconds, so the client timeout is small (``COINCALL_TIMEOUT_SECONDS``).
* Exchange level, in scheduled windows (``ScheduledClock`` runs them as simulated time
  passes): a frozen index, empty ask sides (opens cannot be priced), empty bid sides
  (closes of our long legs cannot be priced, the breaker trips) and cancels held in
  CANCELING, and fill reports lagging 5 s (``INCLUDE_FILL_REPORT_LAG``; they exposed the
  late-fill bug pinned by ``test_late_fill_after_cancel.py``, now fixed).

After the day, the same daemon state is drained (entries off, HTTP faults still on) until
every trade is terminal; then ``campaign_invariants`` judges the exchange's records.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from clock import SimulatedClock, wall_seconds
from tests.faults.campaign_invariants import (
    CampaignTally,
    ExchangeRecords,
    StoreRecords,
    Violation,
    check_campaign_invariants,
)
from tests.faults.campaign_strategies import CAMPAIGN_STRATEGY_NAMES, campaign_factories, exit_names_by_strategy

DAY_SECONDS = 86_400.0
# Tuesday 2026-03-03 09:00 UTC: the day crosses the 08:00 expiry of 4 March.
DAY_START = datetime(2026, 3, 3, 9, 0, 0, tzinfo=timezone.utc).timestamp()
DRAIN_SECONDS = 3 * 3600.0
POLL_INTERVAL_SECONDS = 60.0
COOLDOWN_SECONDS = 3600.0
CLIENT_TIMEOUT_SECONDS = 1.0   # the shortest the configuration accepts (issue 9)
TIMEOUT_HOLD_SECONDS = 1.5     # longer than the client timeout, so the client times out first
GLOBAL_FAULT_RATE = 0.045  # with the aimed faults below, about 5 % of all requests fail
GLOBAL_MODES = ("http_5xx", "code_10000", "http_429", "drop", "lost_response")
HEALTH_INTERVAL_SECONDS = 300.0
DAEMON_PREFIX = 101
# ERROR/CRITICAL lines the schedule provokes on purpose: the close breaker trips while bids are gone;
# the flat positions window is a suspect read; and with ~5 % of requests failing, a run of failed
# polls spanning the outage threshold (2 minutes) happens about once a day and is alerted. So may
# ``reconciliation_failing``: a periodic run (several reads, no retry inside a tick) fails about one
# time in six here (measured over the seeded day: 264 failed runs, 9 streaks of 2, one of 3 runs in
# 2 minutes, no alert), so a streak of 4 is a matter of luck; a crash in the pass is still an
# unexpected ERROR line ("periodic reconciliation crashed").
EXPECTED_ERROR_KINDS = ("close_breaker", "suspect_positions_read", "exchange_unreachable", "reconciliation_failing")
# Fill reports lagging 5 s for an hour: the engines' late-fill grace must keep open legs from
# over-filling (found by this campaign; pinned by test_late_fill_after_cancel.py).
INCLUDE_FILL_REPORT_LAG = True


@dataclass(frozen=True)
class FaultWindow:
    """An exchange-level fault from ``start`` to ``start + duration`` (seconds after the day starts)."""

    name: str
    start: float
    duration: float
    switch_on: Callable[[Any], None]
    switch_off: Callable[[Any], None]


def _set_exchange_fault(name: str, value: float) -> Callable[[Any], None]:
    def apply(handle: Any) -> None:
        setattr(handle.exchange.faults, name, value)
    return apply


def default_windows(*, fill_report_lag: bool = INCLUDE_FILL_REPORT_LAG) -> list[FaultWindow]:
    """Spread over the day, clear of 07:00-08:15 UTC (offsets 22 h-23.25 h), where the daily expires.

    The long windows last 65 minutes, longer than a strategy's cycle (one-hour cooldown plus
    a hold of at most three minutes), so every strategy meets each of them at least once.
    ``fill_report_lag`` adds the lagging-fill-report window (see ``INCLUDE_FILL_REPORT_LAG``).
    """
    windows = [
        FaultWindow("frozen index 10 min", 2 * 3600.0, 600.0,
                    lambda h: h.market.freeze_index(True), lambda h: h.market.freeze_index(False)),
        FaultWindow("empty ask sides 65 min", 3 * 3600.0, 3900.0,
                    lambda h: h.market.set_empty_side("*", "ask"), lambda h: h.market.set_empty_side("*", None)),
        FaultWindow("empty bid sides 65 min", 5 * 3600.0, 3900.0,
                    lambda h: h.market.set_empty_side("*", "bid"), lambda h: h.market.set_empty_side("*", None)),
        FaultWindow("cancels held in CANCELING 6 s, 65 min", 9 * 3600.0, 3900.0,
                    _set_exchange_fault("hold_canceling_seconds", 6.0),
                    _set_exchange_fault("hold_canceling_seconds", 0.0)),
        FaultWindow("frozen index 5 min", 12 * 3600.0, 300.0,
                    lambda h: h.market.freeze_index(True), lambda h: h.market.freeze_index(False)),
        FaultWindow("empty bid sides of puts 65 min", 14 * 3600.0, 3900.0,
                    lambda h: h.market.set_empty_side("*-P", "bid"), lambda h: h.market.set_empty_side("*", None)),
    ]
    if fill_report_lag:
        windows.append(FaultWindow("fill reports lag 5 s, 65 min", 7 * 3600.0, 3900.0,
                                   _set_exchange_fault("fill_report_lag_seconds", 5.0),
                                   _set_exchange_fault("fill_report_lag_seconds", 0.0)))
    return windows


# Code-0-but-wrong answers (issue 9, ``simulator/mutations.py``): aimed windows while trades
# are likely open, plus a seeded random schedule over the whole day on every endpoint the
# mutation layer knows. None of them may make the daemon book a close, realise a loss or
# place an order on an insane price.
MUTATION_WINDOWS: tuple[tuple[str, str, float, float, tuple[str, ...] | None], ...] = (
    # (kind, endpoint, start after the day starts, duration, fields)
    ("empty_list", "positions", 1 * 3600.0 + 60.0, 600.0, None),       # the account reads flat
    ("zero_prices", "option_chain", 4 * 3600.0 + 60.0, 120.0, None),  # marks and quotes of 0
    ("drop_fields", "option_chain", 6 * 3600.0 + 60.0, 180.0, ("markPrice", "delta")),
    ("freeze", "positions", 8 * 3600.0 + 60.0, 180.0, None),
    ("corrupt_prices", "orderbook", 11 * 3600.0 + 60.0, 120.0, None),  # books x1000
    ("empty_list", "pending_orders", 13 * 3600.0 + 60.0, 240.0, None),
)
RANDOM_MUTATIONS_PER_HOUR = 1.0
RANDOM_MUTATION_KINDS = ("empty_list", "drop_fields", "zero_prices", "corrupt_prices", "freeze")


def install_response_mutations(handle: Any, day_start: float, seed: int) -> None:
    """The aimed windows and the random schedule of code-0-but-wrong answers."""
    from simulator import Mutation

    for kind, endpoint, start, duration, fields in MUTATION_WINDOWS:
        handle.mutations.add(Mutation(kind, endpoint=endpoint, start=day_start + start,
                                      end=day_start + start + duration, fields=fields))
    handle.mutations.set_schedule(RANDOM_MUTATIONS_PER_HOUR, RANDOM_MUTATION_KINDS, seed=seed, origin=day_start)


def install_http_faults(handle: Any, seed: int) -> None:
    """About 5 % of all requests fail: 4.5 % across every mode and endpoint, plus aimed faults."""
    from simulator.faults import DROP, LOST_RESPONSE, TIMEOUT, FaultRule

    plan = handle.faults
    plan.reseed(seed)
    plan.set_global(rate=GLOBAL_FAULT_RATE, modes=GLOBAL_MODES)
    plan.add(FaultRule(LOST_RESPONSE, endpoint="create_order", probability=0.03))
    plan.add(FaultRule(TIMEOUT, endpoint="create_order", probability=0.01, seconds=TIMEOUT_HOLD_SECONDS,
                       execute=True))
    plan.add(FaultRule(LOST_RESPONSE, endpoint="cancel_order", probability=0.04))
    plan.add(FaultRule(DROP, endpoint="cancel_order", probability=0.01))
    plan.add(FaultRule(LOST_RESPONSE, endpoint="rfq_accept", probability=0.25))
    plan.add(FaultRule(LOST_RESPONSE, endpoint="rfq_cancel", probability=0.1))
    plan.add(FaultRule(TIMEOUT, probability=0.0008, seconds=TIMEOUT_HOLD_SECONDS))


class ScheduledClock(SimulatedClock):
    """A speed-0 simulated clock that switches fault windows on and off as its time passes.

    The daemon's loop waits through ``clock.sleep``; each call moves time and then runs the
    switches that became due, so the windows start and end at exact simulated instants
    whatever the machine's speed.
    """

    def __init__(self, start: float, windows: list[FaultWindow], handle: Any = None) -> None:
        super().__init__(start=start, speed=0)
        self._handle = handle
        self._pending: list[tuple[float, str, Callable[[Any], None]]] = sorted(
            [(start + w.start, f"{w.name}: on", w.switch_on) for w in windows]
            + [(start + w.start + w.duration, f"{w.name}: off", w.switch_off) for w in windows],
            key=lambda item: item[0])
        self.fired: list[tuple[float, str]] = []

    def attach(self, handle: Any) -> None:
        """The simulator whose faults the windows switch (it is built on this very clock)."""
        self._handle = handle

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.run_due()

    def advance(self, seconds: float) -> float:
        result = super().advance(seconds)
        self.run_due()
        return result

    def run_due(self) -> None:
        now = self.now()
        while self._handle is not None and self._pending and self._pending[0][0] <= now:
            at, label, switch = self._pending.pop(0)
            switch(self._handle)
            self.fired.append((at, label))


@dataclass
class DayReport:
    day_exit_code: int | None = None
    drain_exit_code: int | None = None
    simulated_seconds: float = 0.0
    wall_real: float = 0.0
    requests: int = 0
    requests_by_endpoint: dict[str, int] = field(default_factory=dict)
    faults_by_mode: dict[str, int] = field(default_factory=dict)
    mutations_by_kind: dict[str, int] = field(default_factory=dict)
    windows_fired: list[str] = field(default_factory=list)
    health_lines: int = 0
    largest_health_gap: float = 0.0
    logged_errors: list[str] = field(default_factory=list)
    unexpected_errors: list[str] = field(default_factory=list)
    tally: CampaignTally | None = None
    violations: list[Violation] = field(default_factory=list)

    @property
    def fault_count(self) -> int:
        return sum(self.faults_by_mode.values())

    def format(self) -> str:
        rate = self.fault_count / self.requests * 100 if self.requests else 0.0
        tally = self.tally
        lines = [
            f"HTTP fault campaign: {self.simulated_seconds:,.0f} simulated s, exit codes day {self.day_exit_code} / "
            f"drain {self.drain_exit_code}, wall {self.wall_real:.1f} s",
            f"  requests {self.requests:,}, faults {self.fault_count:,} ({rate:.1f} %): "
            + ", ".join(f"{mode} {n}" for mode, n in sorted(self.faults_by_mode.items())),
            f"  answers mutated (code 0 but wrong): "
            + (", ".join(f"{kind} {n}" for kind, n in sorted(self.mutations_by_kind.items())) or "none"),
            f"  exchange-level windows: {'; '.join(self.windows_fired)}",
            f"  health lines {self.health_lines}, largest gap {self.largest_health_gap:.0f} s; logged ERROR/CRITICAL "
            f"lines {len(self.logged_errors)} kinds, unexpected {len(self.unexpected_errors)}",
        ]
        lines += [f"    ! {line}" for line in self.unexpected_errors[:10]]
        if tally is not None:
            lines += [
                f"  trades: {sum(tally.trades_by_state.values())} {tally.trades_by_state}; opened "
                f"{tally.trades_opened}, closed {tally.trades_closed}; exits {tally.trades_by_exit_reason}",
                f"  orders: ledger {tally.ledger_orders} by intent {tally.ledger_orders_by_intent}; exchange "
                f"{tally.exchange_orders} ({tally.block_trade_orders} block-trade legs), {tally.exchange_fills} fills",
                f"  unwound trades {tally.unwound_trades}, failed close rounds {tally.close_rounds_failed}, "
                f"breaker trips {tally.breaker_trips}",
                f"  perpetuals: {tally.perp_orders} orders, {tally.perp_fills} fills, {tally.funding_rows} funding "
                f"rows; hedged trades {tally.hedged_trades}, rebalances {tally.hedge_rebalances}",
            ]
        lines.append(f"  violations: {len(self.violations)}")
        lines += [f"    - {v}" for v in self.violations[:40]]
        return "\n".join(lines)


def daemon_env(workdir: Path, handle: Any) -> dict[str, str]:
    return {
        "TRADING_ENVIRONMENT": "sim",
        "COINCALL_BASE_URL": handle.base_url,
        "COINCALL_API_KEY_SIM": handle.api_key,
        "COINCALL_API_SECRET_SIM": handle.api_secret,
        "STATE_DIR": str(workdir / "state"),
        "LOG_DIR": str(workdir / "logs"),
        "POLL_INTERVAL_SECONDS": f"{POLL_INTERVAL_SECONDS:g}",
        "COINCALL_TIMEOUT_SECONDS": f"{CLIENT_TIMEOUT_SECONDS:g}",
    }


def run_fault_day(handle: Any, clock: ScheduledClock, workdir: Path, *, seed: int = 5,
                  day_seconds: float = DAY_SECONDS) -> DayReport:
    """Trade a day under faults, drain with entries off, judge. ``handle`` runs on ``clock``."""
    import main

    report = DayReport()
    started_wall, started_sim = wall_seconds(), clock.now()
    install_http_faults(handle, seed)
    install_response_mutations(handle, started_sim, seed)
    env = daemon_env(workdir, handle)
    report.day_exit_code = main.main(["run", "--run-for", f"{day_seconds:g}"], clock=clock, env=env,
                                     dotenv_path=None,
                                     strategies=campaign_factories(True, COOLDOWN_SECONDS))
    report.simulated_seconds = clock.now() - started_sim
    for window in default_windows():  # a day shorter than the schedule must not leave one on
        window.switch_off(handle)
    report.mutations_by_kind = dict(handle.mutations.counts)
    handle.mutations.clear()  # the drain judges the day's trades on truthful answers
    report.drain_exit_code = main.main(["run", "--run-for", f"{DRAIN_SECONDS:g}"], clock=clock, env=env,
                                       dotenv_path=None,
                                       strategies=campaign_factories(False, COOLDOWN_SECONDS))
    handle.faults.clear()
    report.wall_real = wall_seconds() - started_wall
    report.requests_by_endpoint = dict(handle.counts)
    report.requests = sum(handle.counts.values())
    report.faults_by_mode = dict(handle.faults.counts)
    report.windows_fired = [f"{label} at +{(at - started_sim) / 3600:.2f} h" for at, label in clock.fired]
    _read_logs(report, workdir / "logs", started_sim, started_sim + day_seconds)
    exchange = ExchangeRecords.from_state(handle.exchange.to_state(), handle.api_key)
    store = StoreRecords.from_db(workdir / "state" / "trader.db")
    report.tally = CampaignTally.of(exchange, store)
    report.violations = check_campaign_invariants(
        exchange, store, prefix=DAEMON_PREFIX, exit_names=exit_names_by_strategy(),
        max_concurrent={name: 1 for name in CAMPAIGN_STRATEGY_NAMES})
    return report


def _read_logs(report: DayReport, log_dir: Path, day_start: float, day_end: float) -> None:
    """Health cadence over the day (proof the loop kept ticking) and every ERROR/CRITICAL line."""
    times = []
    for line in (log_dir / "health.log").read_text(encoding="utf-8").splitlines():
        stamp = json.loads(line).get("time")
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        if day_start <= moment <= day_end:
            times.append(moment)
    report.health_lines = len(times)
    edges = [day_start, *times, day_end]
    report.largest_health_gap = max(b - a for a, b in zip(edges, edges[1:]))
    pattern = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) +(\S+): (.*)$")   # "2026-03-02 10:00:00 ERROR name: ..."
    messages: Counter[str] = Counter()
    lines = [line for path in sorted(log_dir.glob("trading.log*"))
             for line in path.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        match = pattern.match(line)
        if match:
            messages[f"{match.group(1)} {match.group(2)}: {_shape(match.group(3))}"] += 1
    report.logged_errors = [f"{n} x {message}" for message, n in messages.most_common()]
    report.unexpected_errors = [line for line in report.logged_errors
                                if not any(kind in line for kind in EXPECTED_ERROR_KINDS)]


def _shape(message: str) -> str:
    """A log message with numbers and ids blanked, so repeats of one problem count together."""
    return re.sub(r"\d+(\.\d+)?", "#", message)[:160]
