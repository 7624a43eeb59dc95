"""RFQ pure rules and job decisions without the network (BEHAVIOUR.md §1.3, §6.4; §8 rows 28-29)."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from price_sanity import PriceBand

from clock import SimulatedClock
from coincall_payloads import Quote, QuoteLeg, parse_quote
from contracts import Side
from errors import ConfigError, ExchangeError, OrderOutcomeUnknown
from execution_job import JobStatus, LegTarget
from order_ledger import Intent, OrderLedger, OrderStatus, build_client_order_id
from rfq import (
    RFQExecutor,
    RFQParams,
    RFQPhase,
    improvement_pct,
    leg_baseline,
    quote_problem,
    rank_candidates,
    request_legs,
    structure_baseline,
)
from tests.unit.store_fakes import NoFloorsNoKeptBlocks

BUY, SELL = Side.BUY, Side.SELL
NOW = 1_772_431_200.0
C95, P85, C96, P84 = ("BTCUSD-6MAR26-95000-C", "BTCUSD-6MAR26-85000-P",
                      "BTCUSD-6MAR26-96000-C", "BTCUSD-6MAR26-84000-P")


def book(bid, ask):
    return SimpleNamespace(best_bid=bid, best_ask=ask)


# A known screen for a short iron condor (row 29).
CONDOR_BOOKS = {C95: book(440.0, 600.0), P85: book(490.0, 670.0), C96: book(300.0, 410.0), P84: book(350.0, 480.0)}
CONDOR = [LegTarget(0, C95, SELL, 1.0), LegTarget(1, P85, SELL, 1.0), LegTarget(2, C96, BUY, 1.0),
          LegTarget(3, P84, BUY, 1.0)]

# Every leg's sanity band wide open: these tests are about the gate, not about price sanity.
WIDE = {symbol: PriceBand(symbol, 0.0, 1e9, None, 90_000.0, 0.5) for symbol in (C95, P85, C96, P84)}


def quote(quote_id, legs, *, state="OPEN", life=300.0):
    """Legs as (symbol, maker side name, price, qty): the maker's side written as the wire writes it."""
    return Quote(quote_id, state, NOW + life, tuple(QuoteLeg(symbol, Side.from_text(maker), price, qty)
                                                   for symbol, maker, price, qty in legs))


def as_asked(legs, prices):
    """A quote in which the maker does the opposite of each of our legs (what we want)."""
    return [(leg.symbol, "SELL" if leg.side == BUY else "BUY", price, leg.qty) for leg, price in zip(legs, prices)]


# ------------------------------------------------------------------ params

def test_params_defaults_match_the_spec():
    params = RFQParams()
    assert (params.timeout_seconds, params.poll_interval_seconds, params.min_improvement_pct,
            params.min_quote_life_seconds, params.open_fallback, params.close_fallback) == (60.0, 3.0, 0.0, 1.0,
                                                                                            None, "limit")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.timeout_seconds = 5.0  # type: ignore[misc]
    assert RFQParams(min_improvement_pct=None).min_improvement_pct is None


@pytest.mark.parametrize("field, value", [
    ("timeout_seconds", 0), ("timeout_seconds", -1.0), ("timeout_seconds", "60"), ("timeout_seconds", float("nan")),
    ("poll_interval_seconds", 0.0), ("poll_interval_seconds", True),
    ("min_improvement_pct", "1"), ("min_improvement_pct", float("inf")),
    ("min_quote_life_seconds", -0.5),
    ("open_fallback", "rfq"), ("close_fallback", "LIMIT"), ("close_fallback", 1),
])
def test_params_reject_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        RFQParams(**{field: value})
    assert field in str(err.value)


def test_fallback_follows_the_intent_family():
    params = RFQParams(open_fallback="smart", close_fallback=None)
    assert params.fallback_for(Intent.OPEN) == "smart" and params.fallback_for(Intent.OPEN_REQUOTE) == "smart"
    assert params.fallback_for(Intent.CLOSE) is None and params.fallback_for(Intent.KILL) is None


# ------------------------------------------------------------------ baseline

def test_leg_baseline_uses_the_side_we_take():
    assert leg_baseline(BUY, 0.5, 100.0, 120.0) == 60.0        # a buy pays the ask
    assert leg_baseline(SELL, 0.5, 100.0, 120.0) == -50.0      # a sell receives the bid
    assert leg_baseline(BUY, 0.5, 100.0, None) is None         # no ask: nothing to compare with
    assert leg_baseline(SELL, 0.5, 0.0, 120.0) is None


def test_iron_condor_baseline_equals_the_hand_computation():
    # sell 95C at its bid 440, sell 85P at its bid 490, buy 96C at its ask 410, buy 84P at its ask 480
    assert structure_baseline(CONDOR, CONDOR_BOOKS, WIDE) == pytest.approx(-440 - 490 + 410 + 480)  # -40: a credit


def test_a_missing_needed_side_means_no_baseline_but_the_other_side_does_not_matter():
    books = dict(CONDOR_BOOKS, **{C95: book(440.0, None)})     # the ask of a leg we SELL is irrelevant
    assert structure_baseline(CONDOR, books, WIDE) == pytest.approx(-40.0)
    books = dict(CONDOR_BOOKS, **{C95: book(None, 600.0)})     # no bid for the leg we sell
    assert structure_baseline(CONDOR, books, WIDE) is None


def test_request_legs_keep_our_sides_and_send_a_single_sell_as_buy():
    assert request_legs(CONDOR[:2]) == [{"instrumentName": C95, "side": "SELL", "qty": "1"},
                                        {"instrumentName": P85, "side": "SELL", "qty": "1"}]
    assert request_legs([LegTarget(0, C95, SELL, 0.6)]) == [{"instrumentName": C95, "side": "BUY", "qty": "0.6"}]
    assert request_legs([LegTarget(0, C95, BUY, 12.5)])[0]["qty"] == "12.5"


# ------------------------------------------------------------------ quotes and the gate

@pytest.mark.parametrize("baseline, cost, expected", [
    (100.0, 98.0, 2.0),      # debit: paying less is better
    (100.0, 102.0, -2.0),
    (-100.0, -102.0, 2.0),   # credit: receiving more is better
    (-100.0, -98.0, -2.0),
])
def test_improvement_sign_for_debits_and_credits(baseline, cost, expected):
    assert improvement_pct(baseline, cost) == pytest.approx(expected)
    assert improvement_pct(None, cost) is None


def test_quote_cost_is_taker_view_from_maker_sides():
    q = quote("1", [(C95, "BUY", 450.0, 1.0), (P85, "BUY", 500.0, 1.0), (C96, "SELL", 400.0, 1.0),
                    (P84, "SELL", 470.0, 1.0)])
    assert q.cost == pytest.approx(-450 - 500 + 400 + 470)   # maker buys what we sell: we receive


def test_parse_quote_reads_string_values():
    raw = {"quoteId": "2004417790113628161", "state": "OPEN", "expiryTime": 1767225904500,
           "legs": [{"instrumentName": C95, "side": "SELL", "price": "2105", "quantity": "0.5"}]}
    parsed = parse_quote(raw)
    assert parsed == Quote("2004417790113628161", "OPEN", 1767225904.5, (QuoteLeg(C95, Side.SELL, 2105.0, 0.5),))
    assert parse_quote({"quoteId": "1", "legs": [{"instrumentName": C95, "side": "SELL", "price": "x",
                                                  "quantity": "0.5"}]}) is None


def test_gate_keeps_only_quotes_at_or_above_the_minimum_row_28():
    legs = [LegTarget(0, C95, BUY, 1.0), LegTarget(1, P85, BUY, 1.0)]
    baseline = 1000.0
    quotes = [quote("minus2", as_asked(legs, [510.0, 510.0])),   # cost 1020: -2 %
              quote("minus1", as_asked(legs, [505.0, 505.0])),   # cost 1010: -1 %
              quote("plus1", as_asked(legs, [495.0, 495.0]))]    # cost  990: +1 %
    picked = rank_candidates(quotes, legs, baseline, RFQParams(min_improvement_pct=0.5), NOW, bands=WIDE)
    assert [c.quote.quote_id for c in picked] == ["plus1"]
    assert picked[0].improvement == pytest.approx(1.0)
    assert rank_candidates(quotes, legs, baseline, RFQParams(min_improvement_pct=0.5), NOW, exclude=["plus1"], bands=WIDE) == []
    ungated = rank_candidates(quotes, legs, None, RFQParams(min_improvement_pct=None), NOW, bands=WIDE)
    assert [c.quote.quote_id for c in ungated] == ["plus1", "minus1", "minus2"]   # Q ascending
    assert rank_candidates(quotes, legs, None, RFQParams(), NOW, bands=WIDE) == []               # no baseline: gate closed


def test_credit_structures_rank_the_largest_credit_first():
    baseline = structure_baseline(CONDOR, CONDOR_BOOKS, WIDE)    # -40
    small = quote("small", as_asked(CONDOR, [440.0, 490.0, 410.0, 480.0]))   # credit 40: 0 %
    large = quote("large", as_asked(CONDOR, [450.0, 500.0, 405.0, 475.0]))   # credit 70: +75 %
    picked = rank_candidates([small, large], CONDOR, baseline, RFQParams(), NOW, bands=WIDE)
    assert [c.quote.quote_id for c in picked] == ["large", "small"]
    assert picked[0].improvement == pytest.approx(75.0)


def test_a_quote_with_one_mirrored_leg_is_discarded_row_29():
    good = as_asked(CONDOR, [450.0, 500.0, 405.0, 475.0])
    mirrored = list(good)
    mirrored[2] = (C96, "BUY", 405.0, 1.0)     # the maker would buy our long wing: we would sell it
    q = quote("mixed", mirrored)
    assert "wrong way" in quote_problem(q, CONDOR, NOW, 1.0, WIDE)
    fully = quote("two-way", [(s, "BUY" if side == "SELL" else "SELL", p, qty) for s, side, p, qty in good])
    assert rank_candidates([q, fully], CONDOR, -40.0, RFQParams(min_improvement_pct=None), NOW, bands=WIDE) == []


@pytest.mark.parametrize("make, why", [
    (lambda legs: quote("x", as_asked(legs, [1.0, 1.0]), life=0.5), "life"),
    (lambda legs: quote("x", as_asked(legs, [1.0, 1.0]), state="EXPIRED"), "state"),
    (lambda legs: quote("x", as_asked(legs, [1.0, 1.0])[:1]), "missing"),
    (lambda legs: quote("x", [(C95, "SELL", 1.0, 0.9), (P85, "SELL", 1.0, 1.0)]), "quantity"),
    (lambda legs: quote("x", as_asked(legs, [1.0, 1.0]) + [(C96, "SELL", 1.0, 1.0)]), "not one of our legs"),
])
def test_quotes_that_do_not_match_exactly_are_discarded(make, why):
    legs = [LegTarget(0, C95, BUY, 1.0), LegTarget(1, P85, BUY, 1.0)]
    assert why in quote_problem(make(legs), legs, NOW, 1.0, WIDE)


def test_single_leg_sell_takes_a_maker_buy_quote():
    legs = [LegTarget(0, C95, SELL, 0.6)]
    assert quote_problem(quote("b", [(C95, "BUY", 450.0, 0.6)]), legs, NOW, 1.0, WIDE) is None
    assert quote_problem(quote("s", [(C95, "SELL", 450.0, 0.6)]), legs, NOW, 1.0, WIDE) is not None


# ------------------------------------------------------------------ the ledger method

class MemoryStore(NoFloorsNoKeptBlocks):
    def __init__(self):
        self.saved = []

    def save_order(self, record):
        self.saved.append(record)

    def load_orders(self, trade_id=None):
        raise AssertionError("not used by this test")

    def load_order(self, client_order_id):
        raise AssertionError("not used by this test")

    def append_event(self, kind, payload, ts):
        raise AssertionError("not used by this test")


class NoExchange:
    """An exchange client these tests never reach (``seams.LedgerClient`` and ``seams.RfqClient``)."""

    def _unused(self, *args, **kwargs):
        raise AssertionError("not used by this test")

    create_order = cancel_order = query_order = order_history = _unused
    rfq_create = rfq_quotes = rfq_accept = rfq_cancel = trade_history = blocktrade_orders = positions = _unused


def test_record_block_fill_is_a_filled_ledger_order_with_a_fresh_attempt():
    store = MemoryStore()
    ledger = OrderLedger(client=NoExchange(), clock=SimulatedClock(start=NOW, speed=0), store=store)
    first = ledger.record_block_fill(trade_id="T000000042", trade_seq=42, leg_index=1, intent=Intent.OPEN,
                                     symbol=C95, side=SELL, qty=0.5, price=582.12, fee=13.5,
                                     order_id=1990000000000032768, filled_at=NOW)
    second = ledger.record_block_fill(trade_id="T000000042", trade_seq=42, leg_index=1, intent=Intent.CLOSE,
                                      symbol=C95, side=BUY, qty=0.5, price=300.0, fee=1.0, order_id=None,
                                      filled_at=NOW + 5)
    assert first.client_order_id == build_client_order_id(101, 42, 1, Intent.OPEN, 1)
    assert second.client_order_id == build_client_order_id(101, 42, 1, Intent.CLOSE, 2)
    assert first.status is OrderStatus.FILLED and first.order_id == 1990000000000032768
    assert ledger.leg_fill("T000000042", 1, Intent.OPEN) == (0.5, 582.12, 13.5)
    assert ledger.leg_fill("T000000042", 1, Intent.CLOSE) == (0.5, 300.0, 1.0)
    assert [r["client_order_id"] for r in store.saved] == [first.client_order_id, second.client_order_id]
    assert ledger.live_orders("T000000042") == []
    with pytest.raises(ValueError):
        ledger.record_block_fill(trade_id="T1", trade_seq=1, leg_index=0, intent=Intent.OPEN, symbol=C95, side=3,
                                 qty=0.5, price=1.0, fee=0.0, order_id=None, filled_at=NOW)


# ------------------------------------------------------------------ job decisions with fakes

class FakeMarket:
    def instrument(self, symbol):
        return SimpleNamespace(is_active=True, min_qty=0.01, tick_size=1.0, expiry_ms=int((NOW + 86400 * 4) * 1000))

    def order_book(self, symbol, *, max_age=3.0):
        """Every leg's screen inside the sanity band its chain row (below) implies."""
        return book(100.0, 120.0)

    def quote(self, symbol, *, max_age=30.0):
        """A chain row without a mark IV: its sanity band is the one its mark's own vol implies
        (about 15 to 318 here), so the screen and the quotes of these tests lie inside it."""
        return SimpleNamespace(option_type="C", strike=100_000.0, expiry_ms=int((NOW + 86400 * 4) * 1000),
                               underlying_price=90_000.0, mark_iv=None, bid_iv=None, ask_iv=None, as_of=NOW,
                               mark=100.0, bid=100.0, ask=120.0)


class FakeClient:
    """Quotes appear on the first poll; accept answers with ``accept_error``; records calls."""

    def __init__(self, clock, legs, accept_error=None):
        self.clock = clock
        self.legs = legs
        self.accept_error = accept_error
        self.calls: list[tuple] = []

    def rfq_create(self, legs):
        self.calls.append(("create", legs))
        return {"requestId": "77", "expiryTime": int((self.clock.now() + 3600) * 1000), "state": "ACTIVE"}

    def rfq_quotes(self, request_id):
        self.calls.append(("quotes", request_id))
        expiry = int((self.clock.now() + 300) * 1000)
        return [{"quoteId": str(n), "state": "OPEN", "expiryTime": expiry,
                 "legs": [{"instrumentName": leg.symbol, "side": "SELL", "price": str(100 - n),
                           "quantity": str(leg.qty)} for leg in self.legs]} for n in (1, 2)]

    def rfq_accept(self, request_id, quote_id):
        self.calls.append(("accept", quote_id))
        raise self.accept_error

    def rfq_cancel(self, request_id):
        self.calls.append(("cancel", request_id))
        return True

    def blocktrade_orders(self, **filters):
        self.calls.append(("blocktrades", filters))
        return {"list": []}

    def _unused(self, *args, **kwargs):
        raise AssertionError("not used by this test")

    # The rest of seams.LedgerClient and seams.RfqClient: no order is placed or queried here, and
    # an opening job never reads the positions.
    create_order = cancel_order = query_order = order_history = trade_history = positions = _unused

    def kinds(self):
        return [c[0] for c in self.calls]


def _job_env(accept_error, params=RFQParams(timeout_seconds=300.0)):
    clock = SimulatedClock(start=NOW, speed=0)
    legs = [LegTarget(0, C95, BUY, 0.5), LegTarget(1, P85, BUY, 0.5)]
    client = FakeClient(clock, legs, accept_error)
    ledger = OrderLedger(client, clock)
    executor = RFQExecutor(client, ledger, FakeMarket(), clock)
    job = executor.start(SimpleNamespace(id="T000000005", seq=5), legs, Intent.OPEN, params)
    return clock, client, job


def _drive(job, clock, seconds, step=2.0):
    end = clock.now() + seconds
    while not job.done and clock.now() <= end:
        job.advance(clock.now())
        clock.advance(step)


def test_unanswered_accept_is_never_repeated_and_an_answered_empty_list_after_60_s_means_not_accepted():
    clock, client, job = _job_env(OrderOutcomeUnknown("POST accept", "read timeout"))
    _drive(job, clock, 120.0)
    assert client.kinds().count("accept") == 1                      # never a second accept
    assert job.phase is RFQPhase.FAILED and job.status is JobStatus.FAILED
    lookups = [c for c in client.calls if c[0] == "blocktrades"]
    assert len(lookups) >= 2                                          # looked for the block trade while waiting
    assert client.kinds()[-1] == "cancel"                             # then cancelled, no fallback for opens
    assert "not accepted" in job.result().reason and "no fallback for an open" in job.result().reason


def test_coded_rejection_tries_the_next_candidate_in_rank_order():
    clock, client, job = _job_env(ExchangeError(50014, "Block trade quote not valid", "accept"),
                                  RFQParams(timeout_seconds=10.0))
    _drive(job, clock, 30.0)
    accepted = [c[1] for c in client.calls if c[0] == "accept"]
    assert accepted == ["2", "1"]                                     # cheapest first, each tried once
    assert job.status is JobStatus.FAILED and client.kinds()[-1] == "cancel"


def test_stop_before_the_first_step_sends_nothing():
    clock, client, job = _job_env(None)
    job.request_stop("kill")
    assert job.advance(clock.now()) is JobStatus.FAILED
    assert client.calls == []


def test_start_refuses_foreign_params_and_repeated_instruments():
    clock = SimulatedClock(start=NOW, speed=0)
    executor = RFQExecutor(NoExchange(), OrderLedger(NoExchange(), clock), FakeMarket(), clock)
    trade = SimpleNamespace(id="T000000001", seq=1)
    with pytest.raises(ConfigError):
        executor.start(trade, [LegTarget(0, C95, BUY, 0.5)], Intent.OPEN, object())
    with pytest.raises(ValueError):
        executor.start(trade, [LegTarget(0, C95, BUY, 0.5), LegTarget(1, C95, SELL, 0.5)], Intent.OPEN, None)


# ------------------------------------------------------------------ price sanity (issue 9)

def test_a_touch_outside_its_sanity_band_means_no_baseline():
    tight = dict(WIDE, **{C95: PriceBand(C95, 300.0, 600.0, 450.0, 90_000.0, 0.3)})
    assert structure_baseline(CONDOR, CONDOR_BOOKS, tight) == pytest.approx(-40.0)   # bid 440 is inside
    glitched = dict(CONDOR_BOOKS, **{C95: book(44_000.0, 44_500.0)})                 # a x100 screen
    assert structure_baseline(CONDOR, glitched, tight) is None
    assert structure_baseline(CONDOR, CONDOR_BOOKS, {k: v for k, v in WIDE.items() if k != P84}) is None


def test_a_quote_leg_outside_its_band_or_without_a_band_is_never_a_candidate_even_ungated():
    legs = [LegTarget(0, C95, BUY, 1.0), LegTarget(1, P85, BUY, 1.0)]
    bands = dict(WIDE, **{C95: PriceBand(C95, 300.0, 600.0, 450.0, 90_000.0, 0.3)})
    sane = quote("sane", as_asked(legs, [495.0, 495.0]))
    insane = quote("insane", as_asked(legs, [1.0, 495.0]))          # a maker "gift" far below the model
    ungated = RFQParams(min_improvement_pct=None)
    assert [c.quote.quote_id for c in rank_candidates([sane, insane], legs, None, ungated, NOW, bands=bands)] \
        == ["sane"]
    no_band = {k: v for k, v in bands.items() if k != P85}
    assert rank_candidates([sane], legs, None, ungated, NOW, bands=no_band) == []
