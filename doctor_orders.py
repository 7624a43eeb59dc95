"""``doctor --orders``: the smallest safe order round trip, the probes, and never an order left behind.

Why it looks the way it does (issue 14, docs/DOCTOR.md):

* **Ids of their own.** Every doctor order carries a deterministic ``clientOrderId`` in the
  daemon's 18-digit layout ``PPP RRRRRRRRR NN I AAA`` with the instance prefix ``PPP``, the
  doctor run ``R``, the probe ``N`` and the intent digit ``I = 0``. The daemon's intents are
  1 to 8 (``order_ledger.Intent``) and its parser refuses 0, so a doctor id can never be taken
  for a daemon order, nor a daemon order for a doctor one.
* **Never reused.** The run number is ``max(journal's last run + 1, clock floor)``; the floor is
  the whole seconds since 2025-01-01 UTC (``run_floor``), which grows by one every second and
  fits the nine-digit run field until 2056-09. A lost, corrupt or other ``STATE_DIR`` journal
  therefore cannot make a later run reuse an earlier run's ids (two runs would have to start
  in the same second with no journal between them); a corrupt journal is set aside and reported.
* **Journaled before it is sent.** ``<STATE_DIR>/doctor_journal.json`` gets the id first
  (written atomically); only then the create goes out. A doctor killed at any instant leaves
  either nothing on the exchange or an order whose id is in the journal. An id leaves the
  journal only when the exchange said what became of it: a definitive refusal of the create,
  "order not found" (code 10584), or a final state whose fill quantity was read. A throttle
  or any answer whose outcome is unknown keeps it there, and the probe it belonged to settles
  nothing.
* **Cleaned up, and verified.** A ``finally`` cancels every doctor order of the run that may be
  working, then lists the open orders and cancels any with a doctor id of our prefix, then
  reads each one's final state and fill; what it could not cancel, list or read becomes a FAIL
  line. A doctor order that traded is a FAIL naming the position to close. Every doctor run
  starts with the same sweep, so the order of a killed run is cancelled by the next one, and
  no new order is sent while an earlier one is unsettled.
* **Never marketable.** The round trip is a post-only buy of the minimum quantity at half the
  lower of the best bid and the mark (on the tick, above the exchange's price floor), priced
  from a book fetched just before that must pass the project's price sanity rules
  (``price_sanity.quote_problems``: mark, bid and ask inside the band around the model value,
  not crossed) and agree with the chain's own quote; the perpetual's book must lie inside the
  index band (``price_sanity.perp_band``). A missing, crossed or insane book means no order at
  all. The one probe that could fill if the exchange ignored post-only (a post-only buy at the
  ask) is sent only where a fill costs nothing real: the simulator and testnet, never production.
* **Stoppable.** ``doctor_command`` turns SIGTERM/SIGINT into a ``StopFlag``; no new order is
  sent once it is set, and the cleanup still runs and reports.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import requests

import auth
from atomic_file import write_text_atomically
from clock import Clock
from coincall_client import CoincallClient
from coincall_payloads import (
    ExchangeOrder,
    OptionRow,
    PerpOrder,
    PerpOrderType,
    chain_rows_from_api,
    instrument_from_api,
    order_book_from_api,
    parse_order,
    parse_orders,
    read_position_rows,
)
from config import Credentials
from contracts import Side
from errors import (
    EndpointNotFound,
    ExchangeError,
    OrderOutcomeUnknown,
    RateLimitedError,
    StaleDataError,
    TraderError,
)
from price_sanity import crossed_problem, perp_band, quote_problems
from stop_flag import StopFlag

logger = logging.getLogger(__name__)

JOURNAL_FILE = "doctor_journal.json"
DOCTOR_INTENT = 0
ID_DIGITS = 18
MAX_RUN = 999_999_999
# The run-number floor counts whole seconds from this instant (2025-01-01T00:00:00Z).
# 999 999 999 s is 31.7 years: the floor fits the nine-digit run field until 2056-09-09.
RUN_EPOCH_SECONDS = 1_735_689_600
FINAL_OPTION_STATES = frozenset({1, 3, 6})   # filled, canceled, invalid (API.md 8.4)
LIVE_OPTION_STATES = frozenset({-1, 0, 2, 4, 5})
CONFIRM_QUERIES = 10
CONFIRM_PAUSE_SECONDS = 0.5
MIN_HOURS_TO_EXPIRY = 2.0
# A book whose ask is more than this multiple of its bid, or of the mark, is not priced from.
INSANE_SPREAD_RATIO = 20.0

# The perpetual's price band is a few percent around the mark (API.md 4 for options; the futures
# docs say the same): 3 % below the lower of the bid and the mark rests inside it and cannot fill
# unless the market drops that much within the seconds the order lives; the amend moves it one
# percent further away.
PERP_PRICE_FACTOR = 0.97
PERP_AMEND_FACTOR = 0.96

PROBE_ROUND_TRIP = 1
PROBE_OFF_TICK = 2
PROBE_REDUCE_ONLY = 3
PROBE_POST_ONLY_CROSS = 4
PROBE_PERP_ROUND_TRIP = 5

StepHook = Callable[[str], None]


def doctor_client_order_id(prefix: int, run: int, probe: int, attempt: int = 0) -> int:
    """``PPP RRRRRRRRR NN 0 AAA``: the daemon's layout with intent digit 0 (never a daemon intent)."""
    for name, value, low, high in (("prefix", prefix, 100, 899), ("run", run, 0, MAX_RUN),
                                   ("probe", probe, 0, 99), ("attempt", attempt, 0, 999)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an int within {low}..{high}, got {value!r}")
    return (((prefix * 1_000_000_000 + run) * 100 + probe) * 10 + DOCTOR_INTENT) * 1000 + attempt


def is_doctor_order_id(client_order_id: int | None, prefix: int) -> bool:
    """Whether ``client_order_id`` is a doctor id of this instance's prefix."""
    if client_order_id is None or isinstance(client_order_id, bool) or client_order_id <= 0:
        return False
    if len(str(client_order_id)) != ID_DIGITS:
        return False
    intent = (client_order_id // 1000) % 10
    return intent == DOCTOR_INTENT and client_order_id // 10**15 == prefix


def run_floor(now_ms: int) -> int:
    """The lowest run number a run starting at ``now_ms`` may take: whole seconds since
    ``RUN_EPOCH_SECONDS`` (at least 1). It grows by one every second, so a run that lost the
    journal's counter (corrupt file, another ``STATE_DIR``) still takes a number above that of
    every run started in an earlier second."""
    return max(1, int(now_ms) // 1000 - RUN_EPOCH_SECONDS)


class DoctorStopped(TraderError):
    """A stop signal arrived: no new doctor order is sent; the cleanup still runs."""


# ---------------------------------------------------------------------------------------
# The journal
# ---------------------------------------------------------------------------------------


@dataclass
class DoctorJournal:
    """The ids doctor may have on the exchange, written before each send (atomically).

    ``problem`` says why an existing journal could not be read (it was then moved aside to
    ``set_aside``, never silently overwritten); the cleanup reports it once.
    """

    path: Path
    last_run: int = 0
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    problem: str | None = None
    set_aside: Path | None = None
    problem_reported: bool = False

    @classmethod
    def load(cls, state_dir: Path) -> DoctorJournal:
        path = Path(state_dir) / JOURNAL_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError) as exc:
            return cls._unreadable(path, f"{type(exc).__name__}: {exc}")
        try:
            document = json.loads(text)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            raw_orders = document.get("orders")
            raw_orders = {} if raw_orders is None else raw_orders
            if not isinstance(raw_orders, dict):
                raise ValueError("'orders' is not an object")
            orders = {int(k): dict(v) for k, v in raw_orders.items() if str(k).isdigit()}
            last_run = document.get("last_run", 0)
            if isinstance(last_run, bool) or not isinstance(last_run, int) or not 0 <= last_run <= MAX_RUN:
                raise ValueError(f"'last_run' {last_run!r} is not a run number")
        except (ValueError, TypeError, AttributeError) as exc:
            return cls._unreadable(path, str(exc) or type(exc).__name__)
        return cls(path, last_run, orders)

    @classmethod
    def _unreadable(cls, path: Path, why: str) -> DoctorJournal:
        logger.warning("doctor journal %s unreadable (%s): set aside; relying on the open-order listing", path, why)
        aside: Path | None = None
        for n in range(1, 1000):
            candidate = path.with_name(f"{path.name}.unreadable-{n}")
            if not candidate.exists():
                try:
                    path.replace(candidate)
                    aside = candidate
                except OSError as exc:
                    logger.warning("could not set the doctor journal %s aside: %s", path, exc)
                break
        return cls(path, problem=why, set_aside=aside)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"last_run": self.last_run, "orders": {str(k): v for k, v in sorted(self.orders.items())}}
        write_text_atomically(self.path, json.dumps(document, indent=2, sort_keys=True) + "\n")

    def new_run(self, now_ms: int | None = None) -> int:
        """The next run number: above the last one, and (given the time) at least ``run_floor``.
        Never wraps: a run field that is used up is an error, not a reuse."""
        run = self.last_run + 1
        if now_ms is not None:
            run = max(run, run_floor(now_ms))
        if run > MAX_RUN:
            raise TraderError(f"doctor run number {run} does not fit the clientOrderId layout (at most {MAX_RUN})")
        self.last_run = run
        self.save()
        return self.last_run

    def record(self, coid: int, *, symbol: str, product: str, what: str, at_ms: int) -> None:
        self.orders[coid] = {"symbol": symbol, "product": product, "what": what, "sent_at_ms": at_ms,
                             "status": "sending"}
        self.save()

    def resolve(self, coid: int) -> None:
        if self.orders.pop(coid, None) is not None:
            self.save()

    def pending(self) -> dict[int, dict[str, Any]]:
        return dict(self.orders)


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckLine:
    """One line of the doctor's report: a check, its verdict, what was seen and, unless it passed,
    the fix. Defined here, with the orders part that writes them too; ``doctor`` imports it."""

    check: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class ProbeAnswer:
    """What the exchange answered to one probe, and the assumption value it settles (if any)."""

    probe: str
    sent: str
    answer: str
    assumption: str | None = None
    value: Any = None
    settled: bool = False


@dataclass
class OrderRunResult:
    lines: list[CheckLine] = field(default_factory=list)
    probes: list[ProbeAnswer] = field(default_factory=list)


@dataclass
class OrderRunContext:
    """What the order checks need: the client, the clock, who we are and where the journal lives."""

    client: CoincallClient
    clock: Clock
    prefix: int
    state_dir: Path
    environment: str
    base_url: str
    credentials: Credentials | None
    ts_diff_ms: int
    step: StepHook = field(default=lambda _name: None)
    stop: StopFlag | None = None


def _check_stop(ctx: OrderRunContext) -> None:
    """Raise ``DoctorStopped`` once a stop signal arrived: called before every new order."""
    if ctx.stop is not None and ctx.stop.is_set:
        raise DoctorStopped(f"{ctx.stop.reason} received: doctor stopped before sending another order")


def _outcome_unknown(exc: BaseException) -> bool:
    """Whether a failed create leaves its fate open: no answer, a throttle, or a code the
    project classes as outcome-unknown (``errors.ExchangeError.outcome_unknown``)."""
    if isinstance(exc, (OrderOutcomeUnknown, RateLimitedError)):
        return True
    return isinstance(exc, ExchangeError) and exc.outcome_unknown


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ExchangeError):
        return f"code {exc.code} {exc.msg}".strip()
    return str(exc)


# ---------------------------------------------------------------------------------------
# What one doctor order became
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderView:
    """One doctor order as the exchange shows it, option or perp alike."""

    product: str
    order_id: int | None
    symbol: str | None
    state: Any
    final: bool
    fill_qty: float | None


def _option_view(order: ExchangeOrder) -> OrderView:
    return OrderView("option", order.order_id, order.symbol, order.state, order.state in FINAL_OPTION_STATES,
                     order.fill_qty)


def _perp_view(order: PerpOrder) -> OrderView:
    state = None if order.state is None else int(order.state)
    return OrderView("perp", order.order_id, order.symbol, state, order.is_final, order.filled_qty)


def _look_up(ctx: OrderRunContext, coid: int, product: str) -> OrderView | None:
    """The order ``coid`` names; None only when the exchange answers "order not found"
    (``ExchangeError.is_not_found``, code 10584). Every other failure raises: a throttle or
    a timeout is not an answer."""
    try:
        if product == "perp":
            return _perp_view(ctx.client.perp_order_by_client_id(coid))
        found = parse_order(ctx.client.query_order(client_order_id=coid))
    except ExchangeError as exc:
        if exc.is_not_found:
            return None
        raise
    if found is None:
        raise StaleDataError(f"the query of clientOrderId {coid} answered no order object")
    return _option_view(found)


def fill_line(coid: int, symbol: str | None, view: OrderView) -> CheckLine | None:
    """A FAIL naming the position to close when the doctor order ``coid`` traded (or its fill
    cannot be read); None when it is final with nothing filled."""
    where = symbol or view.symbol or "?"
    if view.fill_qty is None:
        return CheckLine("doctor order filled", "FAIL",
                         f"doctor order {coid} ({view.product} {where}) is in state {view.state} and its fill "
                         f"quantity is not readable: it may have traded",
                         f"look for a {where} position on the account and close this position if there is one "
                         f"(clientOrderId {coid}); run doctor again to re-check")
    if view.fill_qty > 0:
        return CheckLine("doctor order filled", "FAIL",
                         f"doctor order {coid} FILLED {view.fill_qty:g} {where} (a doctor BUY, state {view.state}): "
                         f"the account now holds +{view.fill_qty:g} {where}",
                         f"close this position: sell {view.fill_qty:g} {where} (clientOrderId {coid}); then report "
                         f"it with a capture (docs/DOCTOR.md)")
    return None


def _settle_final(journal: DoctorJournal, coid: int, symbol: str | None, view: OrderView,
                  lines: list[CheckLine]) -> bool:
    """Report the fill of a doctor order seen final and drop it from the journal once its fill
    was read. False (the entry stays) while it is not final or its fill is unreadable."""
    if not view.final:
        return False
    line = fill_line(coid, symbol, view)
    if line is not None:
        lines.append(line)
    if view.fill_qty is None:
        return False
    journal.resolve(coid)
    return True


# ---------------------------------------------------------------------------------------
# Cleanup: the journal's orders, then every open doctor order of our prefix, then their fills
# ---------------------------------------------------------------------------------------


def journal_problem_line(journal: DoctorJournal, prefix: int) -> CheckLine | None:
    if journal.problem is None or journal.problem_reported:
        return None
    journal.problem_reported = True
    kept = f"set aside as {journal.set_aside}" if journal.set_aside is not None else "it could not be moved"
    return CheckLine("doctor journal", "FAIL",
                     f"{journal.path} was unreadable ({journal.problem}); {kept}. The doctor orders it named "
                     f"cannot be checked for fills (open ones are still found by the open-order listing); run "
                     f"numbers continue from the clock, so no clientOrderId is reused",
                     f"look at the account's positions and order history for clientOrderIds starting with "
                     f"{prefix} whose fourth-last digit is 0 (doctor ids); then delete the set-aside file")


def cleanup(ctx: OrderRunContext, journal: DoctorJournal) -> list[CheckLine]:
    """Cancel every doctor order that may be working and read each one's final state and fill;
    a line for what was found and a FAIL for what could not be verified."""
    lines: list[CheckLine] = []
    problem = journal_problem_line(journal, ctx.prefix)
    if problem is not None:
        lines.append(problem)
    cancelled: set[int] = set()
    to_check: dict[int, tuple[str, str | None]] = {}   # coid -> (product, symbol): final state still to read
    for coid, entry in sorted(journal.pending().items()):
        product, symbol = str(entry.get("product", "option")), entry.get("symbol")
        try:
            view = _look_up(ctx, coid, product)
        except TraderError as exc:
            lines.append(CheckLine("doctor orders", "FAIL", f"could not look up doctor order {coid} on {symbol}: "
                                   f"{exc}; it stays in the journal, its fate unknown",
                                   "run doctor again once the exchange answers; if it stays, look for the order "
                                   f"(clientOrderId {coid}) on the exchange's web page and cancel it"))
            continue
        if view is None:   # "order not found": never placed, or long gone
            journal.resolve(coid)
            continue
        if not view.final:
            try:
                _cancel_view(ctx, view)
            except TraderError as exc:
                lines.append(CheckLine("doctor orders", "FAIL", f"could not cancel doctor order {coid} on "
                                       f"{symbol}: {exc}", "run doctor again; if it stays, cancel it on the "
                                       f"exchange's web page (clientOrderId {coid})"))
                continue
            cancelled.add(coid)
        to_check[coid] = (product, symbol)
    try:
        leftovers = _open_doctor_orders(ctx)
    except TraderError as exc:
        lines.append(CheckLine("doctor orders", "FAIL", f"could not list open orders to look for doctor orders: "
                               f"{exc}", "run doctor again once the exchange answers; until then a doctor order "
                               "may be working: look at the open orders on the exchange's web page"))
        leftovers = []
    for product, order_id, coid, symbol in leftovers:
        if coid in cancelled:
            continue
        try:
            _cancel(ctx, product, order_id)
        except TraderError as exc:
            lines.append(CheckLine("doctor orders", "FAIL", f"could not cancel doctor order {coid}: {exc}",
                                   "cancel it on the exchange's web page"))
            continue
        cancelled.add(coid)
        to_check.setdefault(coid, (product, symbol))
    remaining, listing_error = _confirm_gone(ctx, cancelled)
    for coid in sorted(remaining):
        why = f" (the open-order listing could not be read: {listing_error})" if listing_error else ""
        lines.append(CheckLine("doctor orders", "FAIL", f"doctor order {coid} is not confirmed gone after its "
                               f"cancel{why}", "run doctor again; if it stays, cancel it on the exchange's web "
                               f"page (clientOrderId {coid})"))
    for coid, (product, symbol) in sorted(to_check.items()):
        if coid in remaining:
            continue
        try:
            view = _look_up(ctx, coid, product)
        except TraderError as exc:
            lines.append(CheckLine("doctor orders", "FAIL", f"could not read the final state of doctor order {coid} "
                                   f"on {symbol}: {exc}; whether it traded is unknown",
                                   f"run doctor again; look for a {symbol} position (clientOrderId {coid})"))
            continue
        if view is None:
            lines.append(CheckLine("doctor orders", "FAIL", f"doctor order {coid} on {symbol} was seen, then "
                                   "answered 'not found': whether it traded is unknown",
                                   f"look for a {symbol} position on the account (clientOrderId {coid})"))
            continue
        if not view.final:
            lines.append(CheckLine("doctor orders", "FAIL", f"doctor order {coid} on {symbol} is in state "
                                   f"{view.state} after its cancel", "run doctor again; if it stays, cancel it "
                                   f"on the exchange's web page (clientOrderId {coid})"))
            continue
        _settle_final(journal, coid, symbol, view, lines)
    if cancelled and not any(line.status == "FAIL" and line.check == "doctor orders" for line in lines):
        lines.append(CheckLine("doctor orders", "WARN", f"cancelled {len(cancelled)} doctor order(s) left by "
                               f"an earlier or this run: {', '.join(str(c) for c in sorted(cancelled))}",
                               "nothing to do; a killed doctor run leaves them, the next run cancels them"))
    return lines


def _cancel_view(ctx: OrderRunContext, view: OrderView) -> None:
    if view.order_id is None:
        raise StaleDataError("the order query carries no orderId to cancel by")
    _cancel(ctx, view.product, view.order_id)


def _open_doctor_orders(ctx: OrderRunContext) -> list[tuple[str, int, int, str | None]]:
    """(product, orderId, clientOrderId, symbol) of every open doctor order of our prefix,
    options and perpetuals. A list that cannot be read raises: it is never taken as empty."""
    found: list[tuple[str, int, int, str | None]] = []
    for order in parse_orders(ctx.client.all_pending_orders()):
        if order.order_id is not None and is_doctor_order_id(order.client_order_id, ctx.prefix):
            found.append(("option", order.order_id, int(order.client_order_id or 0), order.symbol))
    for perp in ctx.client.perp_pending_orders():
        if is_doctor_order_id(perp.client_order_id, ctx.prefix):
            found.append(("perp", perp.order_id, int(perp.client_order_id or 0), perp.symbol))
    return found


def _cancel(ctx: OrderRunContext, product: str, order_id: int) -> None:
    """Request a cancel; "already final" (11101/11102) is fine: the final state is read next."""
    try:
        if product == "perp":
            ctx.client.perp_cancel_order(order_id=order_id)
        else:
            ctx.client.cancel_order(order_id=order_id)
    except ExchangeError as exc:
        if not exc.is_already_final:
            raise


def _confirm_gone(ctx: OrderRunContext, coids: set[int]) -> tuple[set[int], str | None]:
    """The ids of ``coids`` still open (or not shown to be gone) after a few looks (the cancel
    ack means accepted, not done), and the last listing error when the listing could not be
    read: an unreadable listing confirms nothing."""
    remaining = set(coids)
    error: str | None = None
    for attempt in range(CONFIRM_QUERIES):
        if not remaining:
            return remaining, None
        try:
            open_now = {coid for _, _, coid, _ in _open_doctor_orders(ctx)}
            error = None
        except TraderError as exc:
            open_now, error = remaining, str(exc)
        remaining &= open_now
        if remaining and attempt + 1 < CONFIRM_QUERIES:
            ctx.clock.sleep(CONFIRM_PAUSE_SECONDS)
    return remaining, error


# ---------------------------------------------------------------------------------------
# Choosing a safe price
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SafeQuote:
    """An option and a price at which a post-only buy cannot trade: half the lower of the bid and
    the mark, on the tick, below both the book's and the chain's bid and ask."""

    symbol: str
    tick: float
    min_qty: float
    bid: float
    ask: float
    price: float
    mark: float = 0.0


def _floor_tick(value: float, tick: float) -> float:
    steps = math.floor(value / tick + 1e-9)
    decimals = max(0, -int(math.floor(math.log10(tick)))) if tick < 1 else 0
    return round(steps * tick, decimals + 2)


def option_book_problem(row: OptionRow, bid: float, ask: float) -> str | None:
    """Why an option may not be priced from its fresh book (``bid``/``ask``) and its chain
    ``row``, or None. The project's price sanity rules (``price_sanity.quote_problems``: mark,
    bid and ask inside the band around the model value, not crossed) on the chain row and on
    the book's touches; the book must agree with the chain's own quote (its bid not above the
    chain's ask, its ask not below the chain's bid): two answers that disagree mean one is wrong."""
    if not (bid > 0 and ask > 0):
        return f"one-sided book (bid {bid:g}, ask {ask:g})"
    problems = quote_problems(row, row.symbol)
    if problems:
        return "chain quote: " + "; ".join(problems)
    problems = quote_problems(replace(row, bid=bid, ask=ask), row.symbol)
    crossed = crossed_problem(bid, ask)
    if crossed is not None and crossed not in problems:
        problems.append(crossed)
    if problems:
        return "book: " + "; ".join(problems)
    if ask > INSANE_SPREAD_RATIO * bid or ask > INSANE_SPREAD_RATIO * row.mark:
        return f"spread too wide (bid {bid:g}, ask {ask:g}, mark {row.mark:g})"
    if bid > row.ask or ask < row.bid:
        return (f"the book ({bid:g} / {ask:g}) disagrees with the chain's quote ({row.bid:g} / {row.ask:g}): "
                "one of the two answers is wrong")
    return None


def choose_safe_quote(client: CoincallClient, clock: Clock) -> tuple[SafeQuote | None, str]:
    """The cheapest option whose fresh, sane book allows a never-marketable post-only buy, or why none."""
    now_ms = clock.now_ms()
    instruments = []
    for raw in client.instruments("BTC") or []:
        try:
            instruments.append(instrument_from_api(raw))
        except StaleDataError:
            continue
    alive = [i for i in instruments if i.is_active and i.expiry_ms - now_ms > MIN_HOURS_TO_EXPIRY * 3_600_000]
    if not alive:
        return None, "no active BTC option expiring in more than two hours"
    expiry = min(i.expiry_ms for i in alive)
    by_symbol = {i.symbol: i for i in alive if i.expiry_ms == expiry}
    rows = chain_rows_from_api(client.option_chain(expiry), as_of=clock.now(), expiry_ms=expiry, index_name="BTCUSD")
    candidates = sorted((r for r in rows if r.symbol in by_symbol and r.bid > 0 and r.ask > r.bid and r.mark > 0),
                        key=lambda r: r.bid)
    refused: list[str] = []
    for row in candidates:
        instrument = by_symbol[row.symbol]
        tick = instrument.tick_size
        if not tick > 0 or row.bid < 4 * tick:
            continue
        book = order_book_from_api(client.orderbook(row.symbol), symbol=row.symbol, as_of=clock.now())
        if not book.bids or not book.asks:
            continue
        bid, ask = book.bids[0][0], book.asks[0][0]
        problem = option_book_problem(row, bid, ask)
        if problem is not None:
            refused.append(f"{row.symbol}: {problem}")
            continue
        # Half the lowest of the book's bid, the chain's bid and the mark: far below every ask.
        price = _floor_tick(min(bid, row.bid, row.mark) / 2.0, tick)
        if price < max(tick, _band_floor(row, tick)) or price >= min(bid, row.bid) or price >= min(ask, row.ask):
            continue
        return SafeQuote(row.symbol, tick, instrument.min_qty, bid, ask, price, row.mark), ""
    why = "no option with a sane two-sided book at least four ticks deep (nothing was sent)"
    if refused:
        why += f"; {len(refused)} refused by the price sanity rules, e.g. {refused[0]}"
    return None, why


def _band_floor(row: OptionRow, tick: float) -> float:
    """The exchange's lowest accepted price (API.md 4): mark - 0.01 x S x max(1, 4|delta|)."""
    delta = abs(row.delta) if row.delta is not None else 1.0
    return max(tick, row.mark - 0.01 * row.underlying_price * max(1.0, 4.0 * delta))


def perp_book_problem(bid: float | None, ask: float | None, mark: float, index: float) -> str | None:
    """Why the perpetual may not be priced from this book, or None: both sides present, not
    crossed, and bid, ask and mark inside the index band (``price_sanity.perp_band``)."""
    if bid is None or ask is None or not (bid > 0 and ask > 0):
        return f"the book is empty or one-sided (bid {bid}, ask {ask})"
    crossed = crossed_problem(bid, ask)
    if crossed is not None:
        return crossed
    try:
        band = perp_band(index, symbol="BTCUSD")
    except StaleDataError as exc:
        return str(exc)
    for name, value in (("mark", mark), ("bid", bid), ("ask", ask)):
        problem = band.problem(name, value)
        if problem is not None:
            return problem
    return None


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


def run_orders(ctx: OrderRunContext, *, allow_crossing_probe: bool) -> OrderRunResult:
    """Clean up, then the round trip and the probes; the ``finally`` leaves no doctor order."""
    result = OrderRunResult()
    journal = DoctorJournal.load(ctx.state_dir)
    result.lines.extend(cleanup(ctx, journal))
    if journal.pending() or any(line.check == "doctor orders" and line.status == "FAIL" for line in result.lines):
        result.lines.append(CheckLine("order round trip", "FAIL", "not run: doctor orders of an earlier run are not "
                                      "settled (see the lines above); no new order was sent",
                                      "run doctor again once the exchange answers"))
        return result
    try:
        run = journal.new_run(ctx.clock.now_ms())
    except (OSError, TraderError) as exc:
        result.lines.append(CheckLine("order round trip", "FAIL", f"not run: the doctor journal cannot be written "
                                      f"({exc}); no order was sent", "make STATE_DIR writable"))
        return result
    ctx.step("run_started")
    try:
        _check_stop(ctx)
        quote, why = choose_safe_quote(ctx.client, ctx.clock)
        if quote is None:
            result.lines.append(CheckLine("order round trip", "FAIL", why,
                                          "run doctor --orders again when the market has two-sided books"))
        else:
            _round_trip(ctx, journal, run, quote, result)
            _probe_off_tick(ctx, journal, run, quote, result)
            _probe_reduce_only(ctx, journal, run, quote, result)
            if allow_crossing_probe:
                _probe_post_only_cross(ctx, journal, run, quote, result)
            else:
                result.probes.append(ProbeAnswer("post_only_cross", "not sent", "not probed in production: a "
                                                 "post-only buy at the ask would trade if the exchange ignored "
                                                 "post-only; run doctor --orders on testnet to settle it"))
        _perp_round_trip(ctx, journal, run, result)
        _check_stop(ctx)
        result.probes.append(_probe_stale_timestamp(ctx))
    except DoctorStopped as exc:
        result.lines.append(CheckLine("stopped", "FAIL", f"{exc}; the cleanup below ran",
                                      "run doctor --orders again to complete the checks"))
    except (TraderError, OSError) as exc:
        result.lines.append(CheckLine("order round trip", "FAIL", f"stopped: {exc}",
                                      "see the message; the cleanup below cancelled what was placed"))
    finally:
        ctx.step("cleanup")
        left = cleanup(ctx, journal)
        result.lines.extend(line for line in left if line.status == "FAIL")
        if not any(line.status == "FAIL" and line.check in ("doctor orders", "doctor journal") for line in left):
            result.lines.append(CheckLine("no order left", "PASS", "every doctor order is cancelled"))
        result.lines = _unique(result.lines)
    return result


def _unique(lines: list[CheckLine]) -> list[CheckLine]:
    """The same line reported twice (by a probe, then by the cleanup) is printed once."""
    seen: set[CheckLine] = set()
    kept = []
    for line in lines:
        if line not in seen:
            seen.add(line)
            kept.append(line)
    return kept


def _send_option(ctx: OrderRunContext, journal: DoctorJournal, coid: int, quote: SafeQuote, price: float, *,
                 what: str, post_only: bool = True, reduce_only: bool = False) -> int:
    _check_stop(ctx)
    if not (0 < price < quote.ask):   # a buy at or above the ask is only the crossing probe's, which says so
        if not (what == "post_only_cross" and price == quote.ask):
            raise StaleDataError(f"refusing a buy of {quote.symbol} at {price:g}: not below the ask {quote.ask:g}")
    journal.record(coid, symbol=quote.symbol, product="option", what=what, at_ms=ctx.clock.now_ms())
    ctx.step(f"{what}:journaled")
    order_id = ctx.client.create_order(quote.symbol, quote.min_qty, Side.BUY, price, coid,
                                       reduce_only=reduce_only, trade_type=3 if post_only else 1)
    ctx.step(f"{what}:created")
    return order_id


def _query(ctx: OrderRunContext, **ref: int) -> ExchangeOrder:
    found = parse_order(ctx.client.query_order(**ref))
    if found is None:
        raise StaleDataError(f"order query by {', '.join(ref)} answered no order object")
    return found


def _cancel_and_confirm(ctx: OrderRunContext, order_id: int) -> ExchangeOrder:
    _cancel(ctx, "option", order_id)
    ctx.step("cancel_sent")
    order = _query(ctx, order_id=order_id)
    for _ in range(CONFIRM_QUERIES):
        if order.state in FINAL_OPTION_STATES:
            break
        ctx.clock.sleep(CONFIRM_PAUSE_SECONDS)
        order = _query(ctx, order_id=order_id)
    return order


def _unsettled_probe(result: OrderRunResult, probe: str, sent: str, assumption: str, coid: int,
                     exc: BaseException) -> None:
    """A throttle or an unknown outcome decides nothing: the probe is not settled (never written
    as an override) and the order stays journaled for the cleanup to look up."""
    result.probes.append(ProbeAnswer(probe, sent, f"no decision: {_describe(exc)} (throttled or outcome unknown)",
                                     assumption, None, False))
    result.lines.append(CheckLine("order probes", "WARN", f"{probe} probe not settled: {_describe(exc)}; the cleanup "
                                  f"looks up clientOrderId {coid}", "run doctor --orders again later"))


def _round_trip(ctx: OrderRunContext, journal: DoctorJournal, run: int, quote: SafeQuote,
                result: OrderRunResult) -> None:
    coid = doctor_client_order_id(ctx.prefix, run, PROBE_ROUND_TRIP)
    try:
        order_id = _send_option(ctx, journal, coid, quote, quote.price, what="round_trip")
    except (OrderOutcomeUnknown, ExchangeError) as exc:
        if _outcome_unknown(exc):
            result.lines.append(CheckLine("order round trip", "FAIL", f"the create's outcome is unknown "
                                          f"({_describe(exc)})", f"the cleanup looks it up by clientOrderId {coid}; "
                                          "check the network and the rate-limit line"))
            return
        journal.resolve(coid)   # a definitive refusal: nothing was placed
        result.lines.append(CheckLine("order round trip", "FAIL", f"post-only buy {quote.min_qty:g} {quote.symbol} "
                                      f"@ {quote.price:g} refused: {_describe(exc)}",
                                      "check the key's Trade permission and the account's margin"))
        return
    by_id = _query(ctx, order_id=order_id)
    by_coid = _query(ctx, client_order_id=coid)
    ctx.step("round_trip:queried")
    problems = []
    if by_id.order_id != order_id or by_coid.order_id != order_id:
        problems.append(f"queries disagree (by id {by_id.order_id}, by clientOrderId {by_coid.order_id})")
    if by_coid.client_order_id != coid:
        problems.append(f"clientOrderId came back as {by_coid.client_order_id}")
    if by_id.state not in LIVE_OPTION_STATES:
        problems.append(f"state {by_id.state} right after the create (expected working)")
    final = _cancel_and_confirm(ctx, order_id)
    if final.state != 3:
        problems.append(f"state {final.state} after the cancel (expected 3, canceled)")
    open_ids = {o.order_id for o in parse_orders(ctx.client.all_pending_orders())}
    if order_id in open_ids:
        problems.append("still in the open-order list after the cancel")
    else:
        _settle_final(journal, coid, quote.symbol, _option_view(final), result.lines)
    detail = (f"post-only buy {quote.min_qty:g} {quote.symbol} @ {quote.price:g} (bid {quote.bid:g}, ask "
              f"{quote.ask:g}, mark {quote.mark:g}): created, found by orderId and by clientOrderId, cancelled, gone")
    if problems:
        result.lines.append(CheckLine("order round trip", "FAIL", "; ".join(problems),
                                      "send docs/DOCTOR.md's capture of this run to the project"))
    else:
        result.lines.append(CheckLine("order round trip", "PASS", detail))


def _probe_off_tick(ctx: OrderRunContext, journal: DoctorJournal, run: int, quote: SafeQuote,
                    result: OrderRunResult) -> None:
    coid = doctor_client_order_id(ctx.prefix, run, PROBE_OFF_TICK)
    price = round(quote.price + quote.tick / 2.0, 8)
    sent = f"post-only buy {quote.min_qty:g} {quote.symbol} @ {price:g} (tick {quote.tick:g})"
    try:
        order_id = _send_option(ctx, journal, coid, quote, price, what="off_tick")
    except (OrderOutcomeUnknown, ExchangeError) as exc:
        if _outcome_unknown(exc):
            _unsettled_probe(result, "off_tick", sent, "off_tick_price", coid, exc)
            return
        journal.resolve(coid)
        result.probes.append(ProbeAnswer("off_tick", sent, f"refused: {_describe(exc)}", "off_tick_price",
                                         "reject", True))
        return
    stored = _query(ctx, order_id=order_id).price
    final = _cancel_and_confirm(ctx, order_id)
    _settle_final(journal, coid, quote.symbol, _option_view(final), result.lines)
    if stored is None:
        value, answer = None, "accepted; the stored price was not readable"
    elif abs(stored - price) < 1e-9:
        value, answer = "accept", f"accepted and kept at {stored:g}"
    elif abs(stored - _floor_tick(price, quote.tick)) < 1e-9:
        value, answer = "truncate", f"accepted and stored at {stored:g} (truncated to the tick)"
    else:
        value, answer = "round", f"accepted and stored at {stored:g}"
    result.probes.append(ProbeAnswer("off_tick", sent, answer, "off_tick_price", value, value is not None))


def _probe_reduce_only(ctx: OrderRunContext, journal: DoctorJournal, run: int, quote: SafeQuote,
                       result: OrderRunResult) -> None:
    _check_stop(ctx)
    held = {row.symbol for row in read_position_rows(ctx.client.positions()) if row.qty}
    if quote.symbol in held:
        result.probes.append(ProbeAnswer("reduce_only_no_position", "not sent",
                                         f"the account holds {quote.symbol}: the probe needs a flat symbol"))
        return
    coid = doctor_client_order_id(ctx.prefix, run, PROBE_REDUCE_ONLY)
    sent = f"reduce-only post-only buy {quote.min_qty:g} {quote.symbol} @ {quote.price:g} with no position"
    try:
        order_id = _send_option(ctx, journal, coid, quote, quote.price, what="reduce_only", reduce_only=True)
    except (OrderOutcomeUnknown, ExchangeError) as exc:
        if _outcome_unknown(exc):
            _unsettled_probe(result, "reduce_only_no_position", sent, "reduce_only_no_position_code", coid, exc)
            return
        journal.resolve(coid)
        result.probes.append(ProbeAnswer("reduce_only_no_position", sent, f"refused: {_describe(exc)}",
                                         "reduce_only_no_position_code", getattr(exc, "code", None), True))
        return
    final = _cancel_and_confirm(ctx, order_id)
    _settle_final(journal, coid, quote.symbol, _option_view(final), result.lines)
    result.probes.append(ProbeAnswer("reduce_only_no_position", sent,
                                     f"accepted (state {final.state} after the cancel): a reduce-only order may rest "
                                     f"with no position", "reduce_only_no_position_code", None, True))


def _probe_post_only_cross(ctx: OrderRunContext, journal: DoctorJournal, run: int, quote: SafeQuote,
                           result: OrderRunResult) -> None:
    coid = doctor_client_order_id(ctx.prefix, run, PROBE_POST_ONLY_CROSS)
    sent = f"post-only buy {quote.min_qty:g} {quote.symbol} @ ask {quote.ask:g} ({ctx.environment} only)"
    try:
        order_id = _send_option(ctx, journal, coid, quote, quote.ask, what="post_only_cross")
    except (OrderOutcomeUnknown, ExchangeError) as exc:
        if _outcome_unknown(exc):
            _unsettled_probe(result, "post_only_cross", sent, "post_only_cross_code", coid, exc)
            return
        journal.resolve(coid)
        result.probes.append(ProbeAnswer("post_only_cross", sent, f"refused: {_describe(exc)}",
                                         "post_only_cross_code", getattr(exc, "code", None), True))
        return
    order = _query(ctx, order_id=order_id)
    if order.state not in FINAL_OPTION_STATES:
        order = _cancel_and_confirm(ctx, order_id)
    _settle_final(journal, coid, quote.symbol, _option_view(order), result.lines)
    filled = order.fill_qty
    if filled is None:   # no evidence either way: neither "honoured" nor a fill to report
        answer = f"accepted, then state {order.state}; its fill quantity was not readable"
        result.probes.append(ProbeAnswer("post_only_cross", sent, answer))
        result.lines.append(CheckLine("post-only honoured", "FAIL", answer,
                                      f"look for a {quote.symbol} position on {ctx.environment}; report it"))
        return
    answer = (f"accepted, then state {order.state}" + (f", FILLED {filled:g}: post-only was not honoured"
                                                       if filled > 0 else ", nothing filled"))
    result.probes.append(ProbeAnswer("post_only_cross", sent, answer, "post_only_cross_code", None, filled == 0))
    if filled > 0:
        result.lines.append(CheckLine("post-only honoured", "FAIL", answer,
                                      f"the account now holds that option on {ctx.environment}: close this position "
                                      f"(clientOrderId {coid}); report it"))


def _perp_round_trip(ctx: OrderRunContext, journal: DoctorJournal, run: int, result: OrderRunResult) -> None:
    """The same round trip on the BTC perpetual, with an amend (perps can be amended)."""
    _check_stop(ctx)
    client = ctx.client
    try:
        spec = client.perp_spec("BTC")
        book = client.perp_order_book("BTC")
        ticker = client.perp_ticker("BTC", with_funding=False)
    except (EndpointNotFound, ExchangeError, StaleDataError) as exc:
        result.lines.append(CheckLine("perp round trip", "WARN", f"not run: BTCUSD unreadable ({exc})",
                                      "perpetual hedging needs BTCUSD; see the perpetual checks above"))
        return
    bid, ask = book.best_bid, book.best_ask
    problem = perp_book_problem(bid, ask, ticker.mark, ticker.index)
    if problem is not None or bid is None or ask is None:
        result.lines.append(CheckLine("perp round trip", "WARN", f"not run, nothing sent: the BTCUSD book is not "
                                      f"sane ({problem}; mark {ticker.mark:g}, index {ticker.index:g})",
                                      "run doctor --orders again later"))
        return
    reference = min(bid, ticker.mark)
    price = _floor_tick(reference * PERP_PRICE_FACTOR, spec.tick_size)
    lower = _floor_tick(reference * PERP_AMEND_FACTOR, spec.tick_size)
    if not (0 < lower < price < bid and price < ask):
        result.lines.append(CheckLine("perp round trip", "WARN", f"not run, nothing sent: no safe price below the "
                                      f"BTCUSD bid {bid:g} (tick {spec.tick_size:g})", "run doctor --orders again later"))
        return
    coid = doctor_client_order_id(ctx.prefix, run, PROBE_PERP_ROUND_TRIP)
    _check_stop(ctx)
    journal.record(coid, symbol=spec.symbol, product="perp", what="perp_round_trip", at_ms=ctx.clock.now_ms())
    ctx.step("perp:journaled")
    try:
        order_id = client.perp_create_order(spec.symbol, spec.min_qty, Side.BUY, coid,
                                            order_type=PerpOrderType.POST_ONLY, price=price)
    except (OrderOutcomeUnknown, ExchangeError) as exc:
        if _outcome_unknown(exc):
            result.lines.append(CheckLine("perp round trip", "FAIL", f"the create's outcome is unknown "
                                          f"({_describe(exc)})", f"the cleanup looks it up by clientOrderId {coid}"))
            return
        journal.resolve(coid)
        result.lines.append(CheckLine("perp round trip", "FAIL", f"post-only buy {spec.min_qty:g} {spec.symbol} @ "
                                      f"{price:g} refused: {_describe(exc)}",
                                      "check the key's futures permission and the account's margin"))
        return
    ctx.step("perp:created")
    by_id = client.perp_order(order_id=order_id)
    by_coid = client.perp_order_by_client_id(coid)
    amended_id = client.perp_amend_order(spec.symbol, order_id=order_id, price=lower)
    amended = client.perp_order_by_client_id(coid)
    try:
        client.perp_cancel_order(client_order_id=coid)
    except ExchangeError as exc:
        if not exc.is_already_final:
            raise
    final = client.perp_order_by_client_id(coid)
    for _ in range(CONFIRM_QUERIES):
        if final.is_final:
            break
        ctx.clock.sleep(CONFIRM_PAUSE_SECONDS)
        final = client.perp_order_by_client_id(coid)
    problems = []
    if by_id.order_id != by_coid.order_id:
        problems.append("query by id and by clientOrderId disagree")
    if amended.price is None or abs(amended.price - lower) > 1e-9:
        problems.append(f"the amend did not take (price {amended.price})")
    if not final.is_final:
        problems.append(f"state {final.state} after the cancel")
    _settle_final(journal, coid, spec.symbol, _perp_view(final), result.lines)
    same_id = "kept its orderId" if amended_id == order_id else f"got a new orderId {amended_id}"
    result.probes.append(ProbeAnswer("perp_amend_order_id", f"amend of perp order {order_id}",
                                     f"the amended order {same_id}"))
    if problems:
        result.lines.append(CheckLine("perp round trip", "FAIL", "; ".join(problems), "report it with a capture"))
    else:
        result.lines.append(CheckLine("perp round trip", "PASS", f"post-only buy {spec.min_qty:g} {spec.symbol} @ "
                                      f"{price:g} (bid {bid:g}, mark {ticker.mark:g}, index {ticker.index:g}): "
                                      f"created, found both ways, amended to {lower:g}, cancelled"))


def _probe_stale_timestamp(ctx: OrderRunContext) -> ProbeAnswer:
    """A read-only signed request with a ts older than the signing window: which code refuses it?
    A throttle (HTTP 429, code 10000/10605) or a code whose outcome is unknown settles nothing."""
    if ctx.credentials is None:
        return ProbeAnswer("stale_timestamp", "not sent", "no credentials to sign with")
    path = "/open/account/summary/v1"
    stale_ts = ctx.clock.now_ms() + int(ctx.client.time_offset_seconds * 1000) - ctx.ts_diff_ms - 60_000
    headers = auth.signed_headers("GET", path, {}, ctx.credentials.api_key, ctx.credentials.api_secret, stale_ts,
                                  ctx.ts_diff_ms)
    sent = f"GET {path} signed with a ts {ctx.ts_diff_ms + 60_000} ms in the past"
    try:
        response = requests.get(ctx.base_url.rstrip("/") + path, headers=headers, timeout=(5.0, 30.0),
                                allow_redirects=False)
        envelope = response.json()
    except (requests.RequestException, ValueError) as exc:
        return ProbeAnswer("stale_timestamp", sent, f"no usable answer ({type(exc).__name__})")
    code = envelope.get("code") if isinstance(envelope, dict) else None
    message = envelope.get("msg") if isinstance(envelope, dict) else None
    if response.status_code == 429 or response.status_code >= 500:
        return ProbeAnswer("stale_timestamp", sent, f"no decision: HTTP {response.status_code} (throttled or a "
                           f"server error)", "stale_timestamp_code", None, False)
    if code == 0:
        return ProbeAnswer("stale_timestamp", sent, "ACCEPTED: the exchange did not enforce the window",
                           "stale_timestamp_code", None, True)
    if isinstance(code, int) and not isinstance(code, bool):
        if _outcome_unknown(ExchangeError(code, message if isinstance(message, str) else "", path)):
            return ProbeAnswer("stale_timestamp", sent, f"no decision: code {code} {message} (throttled or outcome "
                               f"unknown)", "stale_timestamp_code", None, False)
        return ProbeAnswer("stale_timestamp", sent, f"refused: HTTP {response.status_code} code {code} {message}",
                           "stale_timestamp_code", code, True)
    return ProbeAnswer("stale_timestamp", sent, f"HTTP {response.status_code} without an envelope code")
