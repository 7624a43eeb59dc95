"""``doctor --orders``: the smallest safe order round trip, the probes, and never an order left behind.

Why it looks the way it does (issue 14, docs/DOCTOR.md):

* **Ids of their own.** Every doctor order carries a deterministic ``clientOrderId`` in the
  daemon's 18-digit layout ``PPP RRRRRRRRR NN I AAA`` with the instance prefix ``PPP``, the
  doctor run ``R``, the probe ``N`` and the intent digit ``I = 0``. The daemon's intents are
  1 to 8 (``order_ledger.Intent``) and its parser refuses 0, so a doctor id can never be taken
  for a daemon order, nor a daemon order for a doctor one.
* **Journaled before it is sent.** ``<STATE_DIR>/doctor_journal.json`` gets the id first
  (written atomically); only then the create goes out. A doctor killed at any instant leaves
  either nothing on the exchange or an order whose id is in the journal.
* **Cleaned up.** A ``finally`` cancels every doctor order of the run that may be working, then
  lists the open orders and cancels any with a doctor id of our prefix; what it could not
  cancel becomes a FAIL line. Every doctor run starts with the same sweep, so the order of a
  killed run is cancelled by the next one.
* **Never marketable.** The round trip is a post-only buy of the minimum quantity at half the
  best bid (on the tick, above the exchange's price floor), priced from a book fetched just
  before; a missing, crossed or insane book means no order at all. The one probe that could
  fill if the exchange ignored post-only (a post-only buy at the ask) is sent only where a
  fill costs nothing real: the simulator and testnet, never production.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
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
from errors import EndpointNotFound, ExchangeError, OrderOutcomeUnknown, StaleDataError, TraderError

logger = logging.getLogger(__name__)

JOURNAL_FILE = "doctor_journal.json"
DOCTOR_INTENT = 0
ID_DIGITS = 18
FINAL_OPTION_STATES = frozenset({1, 3, 6})   # filled, canceled, invalid (API.md 8.4)
LIVE_OPTION_STATES = frozenset({-1, 0, 2, 4, 5})
CONFIRM_QUERIES = 10
CONFIRM_PAUSE_SECONDS = 0.5
MIN_HOURS_TO_EXPIRY = 2.0
# A book whose ask is more than this multiple of its bid, or of the mark, is not priced from.
INSANE_SPREAD_RATIO = 20.0

# The perpetual's price band is a few percent around the mark (API.md 4 for options; the futures
# docs say the same): 3 % below the bid rests inside it and cannot fill unless the market drops
# that much within the seconds the order lives; the amend moves it one percent further away.
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
    for name, value, low, high in (("prefix", prefix, 100, 899), ("run", run, 0, 999_999_999),
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


# ---------------------------------------------------------------------------------------
# The journal
# ---------------------------------------------------------------------------------------


@dataclass
class DoctorJournal:
    """The ids doctor may have on the exchange, written before each send (atomically)."""

    path: Path
    last_run: int = 0
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> DoctorJournal:
        path = Path(state_dir) / JOURNAL_FILE
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            logger.warning("doctor journal %s unreadable (%s): relying on the open-order listing", path, exc)
            return cls(path)
        orders = {int(k): dict(v) for k, v in (document.get("orders") or {}).items() if str(k).isdigit()}
        return cls(path, int(document.get("last_run", 0)), orders)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"last_run": self.last_run, "orders": {str(k): v for k, v in sorted(self.orders.items())}}
        write_text_atomically(self.path, json.dumps(document, indent=2, sort_keys=True) + "\n")

    def new_run(self) -> int:
        self.last_run = self.last_run % 999_999_999 + 1
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


# ---------------------------------------------------------------------------------------
# Cleanup: the journal's orders, then every open doctor order of our prefix
# ---------------------------------------------------------------------------------------


def cleanup(ctx: OrderRunContext, journal: DoctorJournal) -> list[CheckLine]:
    """Cancel every doctor order that may be working; a line for what was found and for what stays."""
    lines: list[CheckLine] = []
    cancelled: list[int] = []
    for coid, entry in journal.pending().items():
        try:
            if _cancel_if_working(ctx, coid, entry.get("product", "option")):
                cancelled.append(coid)
            journal.resolve(coid)
        except TraderError as exc:
            lines.append(CheckLine("doctor orders", "FAIL", f"could not settle doctor order {coid} on "
                                   f"{entry.get('symbol')}: {exc}", "run doctor again; if it stays, cancel it "
                                   "on the exchange's web page (its clientOrderId is in the journal)"))
    try:
        leftovers = _open_doctor_orders(ctx)
    except TraderError as exc:
        lines.append(CheckLine("doctor orders", "FAIL", f"could not list open orders to look for doctor orders: "
                               f"{exc}", "run doctor again once the exchange answers"))
        return lines
    for product, order_id, coid in leftovers:
        try:
            _cancel(ctx, product, order_id)
            cancelled.append(coid)
        except TraderError as exc:
            lines.append(CheckLine("doctor orders", "FAIL", f"could not cancel doctor order {coid}: {exc}",
                                   "cancel it on the exchange's web page"))
    remaining = _confirm_gone(ctx, set(cancelled))
    for coid in sorted(remaining):
        lines.append(CheckLine("doctor orders", "FAIL", f"doctor order {coid} is still open after its cancel",
                               "run doctor again; if it stays, cancel it on the exchange's web page"))
    if cancelled and not remaining:
        lines.append(CheckLine("doctor orders", "WARN", f"cancelled {len(set(cancelled))} doctor order(s) left by "
                               f"an earlier or this run: {', '.join(str(c) for c in sorted(set(cancelled)))}",
                               "nothing to do; a killed doctor run leaves them, the next run cancels them"))
    return lines


def _cancel_if_working(ctx: OrderRunContext, coid: int, product: str) -> bool:
    """Query a journaled id; cancel it when it is working. False when it is gone or never arrived."""
    if product == "perp":
        try:
            order = ctx.client.perp_order_by_client_id(coid)
        except ExchangeError:
            return False
        if order.is_final:
            return False
        ctx.client.perp_cancel_order(order_id=order.order_id)
        return True
    try:
        found = parse_order(ctx.client.query_order(client_order_id=coid))
    except ExchangeError:
        return False   # not found: never placed (or long gone)
    if found is None or found.state in FINAL_OPTION_STATES or found.order_id is None:
        return False
    ctx.client.cancel_order(order_id=found.order_id)
    return True


def _open_doctor_orders(ctx: OrderRunContext) -> list[tuple[str, int, int]]:
    found: list[tuple[str, int, int]] = []
    for order in parse_orders(ctx.client.all_pending_orders()):
        if order.order_id is not None and is_doctor_order_id(order.client_order_id, ctx.prefix):
            found.append(("option", order.order_id, int(order.client_order_id or 0)))
    try:
        perps = ctx.client.perp_pending_orders()
    except (EndpointNotFound, ExchangeError):
        perps = []
    for perp in perps:
        if is_doctor_order_id(perp.client_order_id, ctx.prefix):
            found.append(("perp", perp.order_id, int(perp.client_order_id or 0)))
    return found


def _cancel(ctx: OrderRunContext, product: str, order_id: int) -> None:
    if product == "perp":
        ctx.client.perp_cancel_order(order_id=order_id)
    else:
        ctx.client.cancel_order(order_id=order_id)


def _confirm_gone(ctx: OrderRunContext, coids: set[int]) -> set[int]:
    """The ids of ``coids`` still open after a few looks (the cancel ack means accepted, not done)."""
    remaining = set(coids)
    for attempt in range(CONFIRM_QUERIES):
        if not remaining:
            return remaining
        try:
            open_now = {coid for _, _, coid in _open_doctor_orders(ctx)}
        except TraderError:
            open_now = remaining
        remaining &= open_now
        if remaining and attempt + 1 < CONFIRM_QUERIES:
            ctx.clock.sleep(CONFIRM_PAUSE_SECONDS)
    return remaining


# ---------------------------------------------------------------------------------------
# Choosing a safe price
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SafeQuote:
    """An option and a price at which a post-only buy cannot trade: half the bid, on the tick."""

    symbol: str
    tick: float
    min_qty: float
    bid: float
    ask: float
    price: float


def _floor_tick(value: float, tick: float) -> float:
    steps = math.floor(value / tick + 1e-9)
    decimals = max(0, -int(math.floor(math.log10(tick)))) if tick < 1 else 0
    return round(steps * tick, decimals + 2)


def choose_safe_quote(client: CoincallClient, clock: Clock) -> tuple[SafeQuote | None, str]:
    """The cheapest option whose fresh book allows a never-marketable post-only buy, or why none."""
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
    candidates = sorted((r for r in rows if r.symbol in by_symbol and r.bid > 0 and r.ask > r.bid),
                        key=lambda r: r.bid)
    for row in candidates:
        instrument = by_symbol[row.symbol]
        tick = instrument.tick_size
        if not tick > 0 or row.bid < 4 * tick:
            continue
        book = order_book_from_api(client.orderbook(row.symbol), symbol=row.symbol, as_of=clock.now())
        if not book.bids or not book.asks:
            continue
        bid, ask = book.bids[0][0], book.asks[0][0]
        if not (bid > 0 and ask > bid and ask <= INSANE_SPREAD_RATIO * bid and row.mark > 0
                and ask <= INSANE_SPREAD_RATIO * row.mark):
            continue
        price = _floor_tick(bid / 2.0, tick)
        if price < max(tick, _band_floor(row, tick)) or price >= bid:
            continue
        return SafeQuote(row.symbol, tick, instrument.min_qty, bid, ask, price), ""
    return None, "no option with a sane two-sided book at least four ticks deep (nothing was sent)"


def _band_floor(row: OptionRow, tick: float) -> float:
    """The exchange's lowest accepted price (API.md 4): mark - 0.01 x S x max(1, 4|delta|)."""
    delta = abs(row.delta) if row.delta is not None else 1.0
    return max(tick, row.mark - 0.01 * row.underlying_price * max(1.0, 4.0 * delta))


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


def run_orders(ctx: OrderRunContext, *, allow_crossing_probe: bool) -> OrderRunResult:
    """Clean up, then the round trip and the probes; the ``finally`` leaves no doctor order."""
    result = OrderRunResult()
    journal = DoctorJournal.load(ctx.state_dir)
    result.lines.extend(cleanup(ctx, journal))
    run = journal.new_run()
    ctx.step("run_started")
    try:
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
        result.probes.append(_probe_stale_timestamp(ctx))
    except TraderError as exc:
        result.lines.append(CheckLine("order round trip", "FAIL", f"stopped: {exc}",
                                      "see the message; the cleanup below cancelled what was placed"))
    finally:
        ctx.step("cleanup")
        left = cleanup(ctx, journal)
        result.lines.extend(line for line in left if line.status == "FAIL")
        if not any(line.status == "FAIL" for line in left):
            result.lines.append(CheckLine("no order left", "PASS", "every doctor order is cancelled"))
    return result


def _send_option(ctx: OrderRunContext, journal: DoctorJournal, coid: int, quote: SafeQuote, price: float, *,
                 what: str, post_only: bool = True, reduce_only: bool = False) -> int:
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
    ctx.client.cancel_order(order_id=order_id)
    ctx.step("cancel_sent")
    order = _query(ctx, order_id=order_id)
    for _ in range(CONFIRM_QUERIES):
        if order.state in FINAL_OPTION_STATES:
            break
        ctx.clock.sleep(CONFIRM_PAUSE_SECONDS)
        order = _query(ctx, order_id=order_id)
    return order


def _round_trip(ctx: OrderRunContext, journal: DoctorJournal, run: int, quote: SafeQuote,
                result: OrderRunResult) -> None:
    coid = doctor_client_order_id(ctx.prefix, run, PROBE_ROUND_TRIP)
    try:
        order_id = _send_option(ctx, journal, coid, quote, quote.price, what="round_trip")
    except OrderOutcomeUnknown as exc:
        result.lines.append(CheckLine("order round trip", "FAIL", f"the create's outcome is unknown ({exc})",
                                      "the cleanup looks it up by clientOrderId; check the network"))
        return
    except ExchangeError as exc:
        result.lines.append(CheckLine("order round trip", "FAIL", f"post-only buy {quote.min_qty:g} {quote.symbol} "
                                      f"@ {quote.price:g} refused: code {exc.code} {exc.msg}",
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
        journal.resolve(coid)
    detail = (f"post-only buy {quote.min_qty:g} {quote.symbol} @ {quote.price:g} (bid {quote.bid:g}, ask "
              f"{quote.ask:g}): created, found by orderId and by clientOrderId, cancelled, gone")
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
    except ExchangeError as exc:
        journal.resolve(coid)
        result.probes.append(ProbeAnswer("off_tick", sent, f"refused: code {exc.code} {exc.msg}", "off_tick_price",
                                         "reject", True))
        return
    stored = _query(ctx, order_id=order_id).price
    _cancel_and_confirm(ctx, order_id)
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
    held = {row.symbol for row in read_position_rows(ctx.client.positions()) if row.qty}
    if quote.symbol in held:
        result.probes.append(ProbeAnswer("reduce_only_no_position", "not sent",
                                         f"the account holds {quote.symbol}: the probe needs a flat symbol"))
        return
    coid = doctor_client_order_id(ctx.prefix, run, PROBE_REDUCE_ONLY)
    sent = f"reduce-only post-only buy {quote.min_qty:g} {quote.symbol} @ {quote.price:g} with no position"
    try:
        order_id = _send_option(ctx, journal, coid, quote, quote.price, what="reduce_only", reduce_only=True)
    except ExchangeError as exc:
        journal.resolve(coid)
        result.probes.append(ProbeAnswer("reduce_only_no_position", sent, f"refused: code {exc.code} {exc.msg}",
                                         "reduce_only_no_position_code", exc.code, True))
        return
    final = _cancel_and_confirm(ctx, order_id)
    result.probes.append(ProbeAnswer("reduce_only_no_position", sent,
                                     f"accepted (state {final.state} after the cancel): a reduce-only order may rest "
                                     f"with no position", "reduce_only_no_position_code", None, True))


def _probe_post_only_cross(ctx: OrderRunContext, journal: DoctorJournal, run: int, quote: SafeQuote,
                           result: OrderRunResult) -> None:
    coid = doctor_client_order_id(ctx.prefix, run, PROBE_POST_ONLY_CROSS)
    sent = f"post-only buy {quote.min_qty:g} {quote.symbol} @ ask {quote.ask:g} ({ctx.environment} only)"
    try:
        order_id = _send_option(ctx, journal, coid, quote, quote.ask, what="post_only_cross")
    except ExchangeError as exc:
        journal.resolve(coid)
        result.probes.append(ProbeAnswer("post_only_cross", sent, f"refused: code {exc.code} {exc.msg}",
                                         "post_only_cross_code", exc.code, True))
        return
    order = _query(ctx, order_id=order_id)
    if order.state not in FINAL_OPTION_STATES:
        order = _cancel_and_confirm(ctx, order_id)
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
                                      "the account now holds that option on " + ctx.environment + "; report it"))


def _perp_round_trip(ctx: OrderRunContext, journal: DoctorJournal, run: int, result: OrderRunResult) -> None:
    """The same round trip on the BTC perpetual, with an amend (perps can be amended)."""
    client = ctx.client
    try:
        spec = client.perp_spec("BTC")
        book = client.perp_order_book("BTC")
    except (EndpointNotFound, ExchangeError, StaleDataError) as exc:
        result.lines.append(CheckLine("perp round trip", "WARN", f"not run: BTCUSD unreadable ({exc})",
                                      "perpetual hedging needs BTCUSD; see the perpetual checks above"))
        return
    if not book.bids or not book.asks or not (0 < book.bids[0][0] < book.asks[0][0]
                                               <= INSANE_SPREAD_RATIO * book.bids[0][0]):
        result.lines.append(CheckLine("perp round trip", "WARN", "not run: the BTCUSD book is empty or insane",
                                      "run doctor --orders again later"))
        return
    bid = book.bids[0][0]
    price = _floor_tick(bid * PERP_PRICE_FACTOR, spec.tick_size)
    coid = doctor_client_order_id(ctx.prefix, run, PROBE_PERP_ROUND_TRIP)
    journal.record(coid, symbol=spec.symbol, product="perp", what="perp_round_trip", at_ms=ctx.clock.now_ms())
    ctx.step("perp:journaled")
    try:
        order_id = client.perp_create_order(spec.symbol, spec.min_qty, Side.BUY, coid,
                                            order_type=PerpOrderType.POST_ONLY, price=price)
    except ExchangeError as exc:
        journal.resolve(coid)
        result.lines.append(CheckLine("perp round trip", "FAIL", f"post-only buy {spec.min_qty:g} {spec.symbol} @ "
                                      f"{price:g} refused: code {exc.code} {exc.msg}",
                                      "check the key's futures permission and the account's margin"))
        return
    ctx.step("perp:created")
    by_id = client.perp_order(order_id=order_id)
    by_coid = client.perp_order_by_client_id(coid)
    lower = _floor_tick(bid * PERP_AMEND_FACTOR, spec.tick_size)
    amended_id = client.perp_amend_order(spec.symbol, order_id=order_id, price=lower)
    amended = client.perp_order_by_client_id(coid)
    client.perp_cancel_order(client_order_id=coid)
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
    if final.is_final:
        journal.resolve(coid)
    same_id = "kept its orderId" if amended_id == order_id else f"got a new orderId {amended_id}"
    result.probes.append(ProbeAnswer("perp_amend_order_id", f"amend of perp order {order_id}",
                                     f"the amended order {same_id}"))
    if problems:
        result.lines.append(CheckLine("perp round trip", "FAIL", "; ".join(problems), "report it with a capture"))
    else:
        result.lines.append(CheckLine("perp round trip", "PASS", f"post-only buy {spec.min_qty:g} {spec.symbol} @ "
                                      f"{price:g}: created, found both ways, amended to {lower:g}, cancelled"))


def _probe_stale_timestamp(ctx: OrderRunContext) -> ProbeAnswer:
    """A read-only signed request with a ts older than the signing window: which code refuses it?"""
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
    if code == 0:
        return ProbeAnswer("stale_timestamp", sent, "ACCEPTED: the exchange did not enforce the window",
                           "stale_timestamp_code", None, True)
    if isinstance(code, int) and not isinstance(code, bool):
        return ProbeAnswer("stale_timestamp", sent, f"refused: HTTP {response.status_code} code {code} {message}",
                           "stale_timestamp_code", code, True)
    return ProbeAnswer("stale_timestamp", sent, f"HTTP {response.status_code} without an envelope code")
