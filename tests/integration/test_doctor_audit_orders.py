"""``doctor`` audit (findings A-E): what the doctor places is verified, never forgotten, never reused,
never priced from an insane book, and a throttle is never taken for the exchange's behaviour.

The simulator runs in this process on a frozen simulated clock (tests/conftest.py); doctor reaches it
over 127.0.0.1. No sleeping: the client's waits and the doctor's confirm pauses advance simulated time.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import coincall_client
from coincall_client import ClientSettings, CoincallClient
from coincall_payloads import PerpOrderType, order_book_from_api, parse_order, parse_orders
from config import Credentials, Settings
from contracts import Side
from doctor import EXIT_FAIL, DoctorOptions, run_doctor
from doctor_orders import (
    JOURNAL_FILE,
    PROBE_PERP_ROUND_TRIP,
    PROBE_ROUND_TRIP,
    DoctorJournal,
    choose_safe_quote,
    doctor_client_order_id,
    is_doctor_order_id,
)
from simulator.faults import CODE_10000, LOST_RESPONSE, FaultRule
from simulator.mutations import CORRUPT_PRICES, Mutation

PREFIX = 101


def _settings(sim, tmp_path: Path, state: str = "state") -> Settings:
    creds = Credentials(sim.api_key, sim.api_secret, source="COINCALL_API_KEY_SIM")
    return Settings(environment="sim", base_url=sim.base_url, credentials=creds, state_dir=tmp_path / state,
                    log_dir=tmp_path / "logs", client_order_prefix=PREFIX)


def _client(sim, clock, key: str | None = None, secret: str | None = None) -> CoincallClient:
    return CoincallClient(ClientSettings(base_url=sim.base_url, max_retries=0),
                          Credentials(key or sim.api_key, secret or sim.api_secret, source="test"), clock)


def _doctor(settings, clock, **options):
    return run_doctor(settings, clock, [], DoctorOptions(samples=1, **options))


def _open_doctor_orders(sim, clock) -> list[int]:
    clock.advance(5.0)   # a fresh per-second budget on the simulator's own rate limiter
    client = _client(sim, clock)
    try:
        options = [o.client_order_id for o in parse_orders(client.all_pending_orders())]
        perps = [o.client_order_id for o in client.perp_pending_orders()]
    finally:
        client.close()
    return [c for c in options + perps if c is not None and is_doctor_order_id(c, PREFIX)]


def _journal(settings) -> dict:
    return json.loads((settings.state_dir / JOURNAL_FILE).read_text(encoding="utf-8"))


@pytest.fixture
def sent(monkeypatch):
    """Every order create doctor sends: (clientOrderId, symbol, price)."""
    orders: list[tuple[int, str, float]] = []
    real_create, real_perp = CoincallClient.create_order, CoincallClient.perp_create_order

    def create(self, symbol, qty, side, price, client_order_id, **kw):
        orders.append((int(client_order_id), symbol, float(price)))
        return real_create(self, symbol, qty, side, price, client_order_id, **kw)

    def perp_create(self, symbol, qty, side, client_order_id, **kw):
        orders.append((int(client_order_id), symbol, float(kw["price"])))
        return real_perp(self, symbol, qty, side, client_order_id, **kw)

    monkeypatch.setattr(coincall_client.CoincallClient, "create_order", create)
    monkeypatch.setattr(coincall_client.CoincallClient, "perp_create_order", perp_create)
    return orders


# ---- A: a throttled read never makes a working doctor order vanish ------------------------------


def _seed_killed_perp_round_trip(sim, clock, settings) -> int:
    """Exactly what ``doctor --orders`` killed at step "perp:created" leaves: a journaled resting perp buy."""
    journal = DoctorJournal.load(settings.state_dir)
    coid = doctor_client_order_id(PREFIX, journal.new_run(clock.now_ms()), PROBE_PERP_ROUND_TRIP)
    client = _client(sim, clock)
    try:
        spec = client.perp_spec("BTC")
        bid = client.perp_order_book("BTC").bids[0][0]
        price = round(int(bid * 0.97 / spec.tick_size) * spec.tick_size, 8)
        journal.record(coid, symbol=spec.symbol, product="perp", what="perp_round_trip", at_ms=clock.now_ms())
        client.perp_create_order(spec.symbol, spec.min_qty, Side.BUY, coid, order_type=PerpOrderType.POST_ONLY,
                                 price=price)
    finally:
        client.close()
    return coid


def test_throttled_perp_reads_keep_the_journal_entry_and_fail_loudly(sim, sim_clock, tmp_path):
    settings = _settings(sim, tmp_path)
    coid = _seed_killed_perp_round_trip(sim, sim_clock, settings)
    assert _open_doctor_orders(sim, sim_clock) == [coid]
    sim.faults.add(FaultRule(mode=CODE_10000, path="/open/futures/order/singleQuery/v1"))
    sim.faults.add(FaultRule(mode=CODE_10000, path="/open/futures/order/pending/v1"))
    sim_clock.advance(5.0)
    report = _doctor(settings, sim_clock)
    sim.faults.clear()

    assert _open_doctor_orders(sim, sim_clock) == [coid]
    assert str(coid) in _journal(settings)["orders"], "a throttle is not 'not found': the entry stays"
    failing = [line for line in report.lines if line.check == "doctor orders" and line.status == "FAIL"]
    assert any(str(coid) in line.detail for line in failing), report.format_text()
    assert any("could not list open orders" in line.detail for line in failing), report.format_text()
    assert report.exit_code == EXIT_FAIL

    # Once the exchange answers again, the next doctor cancels it, verifies it and forgets it.
    sim_clock.advance(5.0)
    again = _doctor(settings, sim_clock)
    assert _open_doctor_orders(sim, sim_clock) == []
    assert _journal(settings)["orders"] == {}
    assert not [l for l in again.lines if l.status == "FAIL"], again.format_text()


def test_orders_are_not_sent_while_an_earlier_doctor_order_is_unsettled(sim, sim_clock, tmp_path, sent):
    settings = _settings(sim, tmp_path)
    coid = _seed_killed_perp_round_trip(sim, sim_clock, settings)
    sent.clear()   # the seeding create
    sim.faults.add(FaultRule(mode=CODE_10000, path="/open/futures/order/singleQuery/v1"))
    sim_clock.advance(5.0)
    report = _doctor(settings, sim_clock, orders=True)
    sim.faults.clear()
    assert sent == [], "no new doctor order while an earlier one's fate is unknown"
    assert report.exit_code == EXIT_FAIL
    assert any(l.check == "order round trip" and "not settled" in l.detail for l in report.lines)
    assert str(coid) in _journal(settings)["orders"]


# ---- B: a filled doctor order is a FAIL naming the position to close ----------------------------


def _journaled_round_trip(sim, sim_clock, settings, place):
    """A killed run's round-trip order: journaled as doctor does, then sent by ``place(client,
    quote, coid)`` on a safe quote; returns (coid, quote, what ``place`` returned)."""
    journal = DoctorJournal.load(settings.state_dir)
    coid = doctor_client_order_id(PREFIX, journal.new_run(sim_clock.now_ms()), PROBE_ROUND_TRIP)
    client = _client(sim, sim_clock)
    try:
        quote, why = choose_safe_quote(client, sim_clock)
        assert quote is not None, why
        journal.record(coid, symbol=quote.symbol, product="option", what="round_trip", at_ms=sim_clock.now_ms())
        return coid, quote, place(client, quote, coid)
    finally:
        client.close()


def test_a_filled_journaled_doctor_order_is_a_fail_naming_the_position(sim, sim_clock, tmp_path):
    settings = _settings(sim, tmp_path)

    def traded(client, quote, coid):
        client.create_order(quote.symbol, quote.min_qty, Side.BUY, quote.ask, coid, trade_type=1)  # it traded
        sim_clock.advance(5.0)
        return parse_order(client.query_order(client_order_id=coid))

    coid, quote, order = _journaled_round_trip(sim, sim_clock, settings, traded)
    assert order is not None and order.state == 1 and (order.fill_qty or 0) > 0

    sim_clock.advance(5.0)
    report = _doctor(settings, sim_clock)
    filled = [l for l in report.lines if l.check == "doctor order filled"]
    assert len(filled) == 1 and filled[0].status == "FAIL", report.format_text()
    text = filled[0].detail + " " + filled[0].fix
    assert str(coid) in text and quote.symbol in text and f"{order.fill_qty:g}" in text
    assert "close this position" in filled[0].fix
    assert report.exit_code == EXIT_FAIL


def test_a_doctor_order_that_fills_during_the_run_is_a_fail(sim, sim_clock, tmp_path):
    """The market trades the round trip's resting buy right after its create (state 1, filled)."""
    settings = _settings(sim, tmp_path)
    hit: list[int] = []

    def step(name: str) -> None:
        if name == "round_trip:created":
            coid = max(int(k) for k in _journal(settings)["orders"])
            order = next(o for o in sim.exchange._orders.values() if o.client_order_id == coid)
            assert sim.exchange.force_fill(order.order_id, 0.01) > 0
            hit.append(coid)

    report = run_doctor(settings, sim_clock, [], DoctorOptions(samples=1, orders=True), step=step)
    assert hit, report.format_text()
    filled = [l for l in report.lines if l.check == "doctor order filled"]
    assert len(filled) == 1 and filled[0].status == "FAIL", report.format_text()
    assert str(hit[0]) in filled[0].detail + filled[0].fix and "close this position" in filled[0].fix
    assert report.exit_code == EXIT_FAIL
    assert _journal(settings)["orders"] == {}, "its fate (filled) is known and was reported"


def test_a_partly_filled_journaled_order_is_cancelled_and_its_fill_reported(sim, sim_clock, tmp_path):
    """A killed run's resting buy partly traded (state 2): the sweep cancels it (state 3) and
    reports the filled part; a cancelled order is not 'nothing happened'."""
    settings = _settings(sim, tmp_path)
    coid, quote, order_id = _journaled_round_trip(
        sim, sim_clock, settings,
        lambda client, quote, coid: client.create_order(quote.symbol, 2 * quote.min_qty, Side.BUY, quote.price, coid,
                                                        trade_type=3))
    assert sim.exchange.force_fill(order_id, quote.min_qty) > 0
    assert sim.exchange._orders[order_id].state == 2
    sim_clock.advance(5.0)
    report = _doctor(settings, sim_clock)
    assert sim.exchange._orders[order_id].state == 3 and _open_doctor_orders(sim, sim_clock) == []
    filled = [l for l in report.lines if l.check == "doctor order filled"]
    assert len(filled) == 1 and f"FILLED {quote.min_qty:g} {quote.symbol}" in filled[0].detail, report.format_text()
    assert str(coid) in filled[0].fix and report.exit_code == EXIT_FAIL


# ---- C: clientOrderIds are never reused, whatever happened to the journal ------------------------


@pytest.mark.parametrize("how", ["corrupt_journal", "other_state_dir"])
def test_doctor_client_order_ids_are_never_reused(sim, sim_clock, tmp_path, sent, how):
    first = _settings(sim, tmp_path, "state")
    report1 = _doctor(first, sim_clock, orders=True)
    assert report1.exit_code == 0, report1.format_text()
    ids_run1 = [coid for coid, _, _ in sent]
    assert ids_run1
    sim_clock.advance(60.0)
    if how == "corrupt_journal":
        (first.state_dir / JOURNAL_FILE).write_text("{", encoding="utf-8")   # e.g. a disk-full truncated copy
        second = first
    else:
        second = _settings(sim, tmp_path, "state-elsewhere")
    sent.clear()
    report2 = _doctor(second, sim_clock, orders=True)
    assert sent and not set(ids_run1) & {coid for coid, _, _ in sent}
    journal_lines = [l for l in report2.lines if l.check == "doctor journal"]
    if how == "corrupt_journal":   # never reset silently: reported, and the broken file kept
        assert len(journal_lines) == 1 and journal_lines[0].status == "FAIL", report2.format_text()
        assert list(first.state_dir.glob(JOURNAL_FILE + ".unreadable-*"))
    else:
        assert journal_lines == [] and report2.exit_code == 0, report2.format_text()


# ---- D: a throttled answer settles nothing -------------------------------------------------------


@pytest.mark.parametrize("probe,mode,assumption", [
    ("off_tick", CODE_10000, "off_tick_price"),
    ("reduce_only", CODE_10000, "reduce_only_no_position_code"),
    ("post_only_cross", CODE_10000, "post_only_cross_code"),
    ("off_tick", LOST_RESPONSE, "off_tick_price"),   # placed, the answer lost: OrderOutcomeUnknown
])
def test_a_throttled_probe_is_not_settled_nor_written(sim, sim_clock, tmp_path, probe, mode, assumption):
    settings = _settings(sim, tmp_path)

    def step(name: str) -> None:
        if name == f"{probe}:journaled":      # the exchange throttles (or loses the answer to) this create
            sim.faults.add(FaultRule(mode=mode, path="/open/option/order/create/v1", count=1))

    report = run_doctor(settings, sim_clock, [], DoctorOptions(samples=1, orders=True, write_overrides=True),
                        step=step)
    answers = [p for p in report.probes if p.assumption == assumption]
    assert len(answers) == 1 and not answers[0].settled and answers[0].value is None, report.format_text()
    written = json.loads(settings.overrides_path.read_text(encoding="utf-8"))["values"]
    assert assumption not in written, written
    assert any(l.check == "order probes" and l.status == "WARN" for l in report.lines)
    # The cleanup looked it up by clientOrderId: not found (throttled: never placed) and forgotten, or
    # working (the lost answer: it was placed) and cancelled, verified, then forgotten.
    assert _journal(settings)["orders"] == {} and _open_doctor_orders(sim, sim_clock) == []
    assert any(l.check == "no order left" and l.status == "PASS" for l in report.lines)


def test_a_throttled_stale_timestamp_probe_is_not_settled(sim, sim_clock, tmp_path, monkeypatch):
    import doctor_orders

    class _Throttled:
        status_code = 200

        @staticmethod
        def json():
            return {"code": 10000, "msg": "Try again later", "data": None}

    monkeypatch.setattr(doctor_orders.requests, "get", lambda *a, **k: _Throttled())
    settings = _settings(sim, tmp_path)
    report = _doctor(settings, sim_clock, orders=True, write_overrides=True)
    stale = [p for p in report.probes if p.probe == "stale_timestamp"]
    assert len(stale) == 1 and not stale[0].settled, report.format_text()
    written = json.loads(settings.overrides_path.read_text(encoding="utf-8"))["values"]
    assert "stale_timestamp_code" not in written


# ---- E: never a buy from an insane book ----------------------------------------------------------


@pytest.mark.parametrize("endpoint,factor,probe", [("orderbook", 5.0, PROBE_ROUND_TRIP),
                                                   ("futures_orderbook", 1.5, PROBE_PERP_ROUND_TRIP)])
def test_doctor_never_buys_at_or_above_the_real_ask_from_an_insane_book(sim, sim_clock, tmp_path, sent, endpoint,
                                                                       factor, probe):
    settings = _settings(sim, tmp_path)
    mutation = sim.mutations.add(Mutation(kind=CORRUPT_PRICES, endpoint=endpoint, factor=factor))
    report = _doctor(settings, sim_clock, orders=True)
    sim.mutations.remove(mutation)
    mine = [(coid, symbol, price) for coid, symbol, price in sent if (coid // 10_000) % 100 == probe]
    client = _client(sim, sim_clock)      # the real book (the simulated clock is frozen: same market)
    try:
        for coid, symbol, price in mine:
            if probe == PROBE_PERP_ROUND_TRIP:
                book = client.perp_order_book("BTC")
            else:
                book = order_book_from_api(client.orderbook(symbol), symbol=symbol, as_of=sim_clock.now())
            assert price < book.asks[0][0], f"doctor sent a marketable buy {symbol} @ {price:g}"
    finally:
        client.close()
    # Here the insane book is refused outright, with a line saying why.
    assert mine == [], mine
    check = "perp round trip" if probe == PROBE_PERP_ROUND_TRIP else "order round trip"
    line = [l for l in report.lines if l.check == check][0]
    assert line.status in ("WARN", "FAIL") and ("sanity" in line.detail or "not sane" in line.detail), line


def test_the_round_trip_price_is_capped_below_the_mark(sim, sim_clock, tmp_path, sent):
    settings = _settings(sim, tmp_path)
    report = _doctor(settings, sim_clock, orders=True)
    assert report.exit_code == 0, report.format_text()
    client = _client(sim, sim_clock)
    try:
        ticker = client.perp_ticker("BTC", with_funding=False)
        quote, _ = choose_safe_quote(client, sim_clock)
    finally:
        client.close()
    assert quote is not None and quote.price <= quote.mark / 2.0 and quote.price < quote.bid
    perp = [price for coid, _, price in sent if (coid // 10_000) % 100 == PROBE_PERP_ROUND_TRIP]
    assert perp and perp[0] <= ticker.mark * 0.97
