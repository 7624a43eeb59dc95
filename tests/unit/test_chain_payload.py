"""A fetched chain is parsed row by row when read (``coincall_payloads.ChainPayload``, issue 11).

Why: a poll values a few legs of a chain of hundreds of options. The rules do not move: a
row that is read and malformed raises the same ``StaleDataError`` as a whole-chain parse did
(and the fetch is forgotten, so the next read asks the exchange again); an entry's snapshot
parses every row; a malformed row nobody reads no longer fails the others.
"""
from __future__ import annotations

import pytest

from coincall_payloads import ChainPayload, chain_rows_from_api
from errors import SelectionError, StaleDataError
from tests.unit.test_market_data import EXP1, EXP2, chain_payload, side, sym

# The fixtures of the market-data tests (a fake client and a lock-step clock).
from tests.unit.test_market_data import alerts, client, clock, market  # noqa: F401

GOOD = sym(EXP1, 70000, "C")
BAD = sym(EXP1, 68000, "P")


def with_bad_put(expiry: int = EXP1) -> list[dict]:
    """The 3MAR26 chain whose 68000 put has no mark (a field no decision may be made without)."""
    payload = chain_payload(expiry)
    payload[0]["putOption"] = side(expiry, 68000, "P", markPrice=None)
    return payload


def test_a_malformed_row_that_is_not_read_does_not_fail_another_symbols_quote(market, client):
    client.chains[EXP1] = with_bad_put()
    row = market.quote(GOOD, max_age=5)
    assert row.symbol == GOOD and row.mark == 120.5
    assert client.count("option_chain") == 1


def test_a_malformed_row_that_is_read_raises_and_the_next_read_refetches(market, client):
    client.chains[EXP1] = with_bad_put()
    with pytest.raises(StaleDataError, match="markPrice"):
        market.quote(BAD, max_age=5)
    with pytest.raises(StaleDataError, match="markPrice"):
        market.quote(BAD, max_age=5)
    assert client.count("option_chain") == 2                    # the bad fetch was not kept
    client.chains[EXP1] = chain_payload(EXP1)                    # the exchange answers well again
    assert market.quote(BAD, max_age=5).mark == 120.5
    assert client.count("option_chain") == 3


def test_a_row_of_another_index_read_raises(market, client):
    client.chains[EXP1] = chain_payload(EXP1)
    client.chains[EXP1][1]["callOption"] = side(EXP1, 70000, "C", index="ETHUSD")
    with pytest.raises(StaleDataError, match="ETHUSD"):
        market.quote(GOOD, max_age=5)


def test_the_whole_chain_still_fails_on_any_malformed_row(market, client):
    client.chains[EXP1] = with_bad_put()
    with pytest.raises(StaleDataError):
        market.chain(EXP1)
    with pytest.raises(SelectionError, match="chain snapshot failed"):
        market.chain_snapshot([EXP1])                            # an entry never selects from it


def test_one_fetch_serves_every_read_within_its_max_age_and_each_row_is_parsed_once(market, client, clock,
                                                                                    monkeypatch):
    import coincall_payloads
    parsed: list[str] = []
    real = coincall_payloads.option_row_from_api

    def counting(raw, **kwargs):
        parsed.append(raw["symbol"])
        return real(raw, **kwargs)

    monkeypatch.setattr(coincall_payloads, "option_row_from_api", counting)
    first = market.quote(GOOD, max_age=5)                       # the exit valuation
    clock.advance(2)
    assert market.quote(GOOD, max_age=30) is first              # an engine's fair value, same fetch
    assert market.quote(BAD, max_age=5).symbol == BAD
    assert client.count("option_chain") == 1
    assert parsed == [GOOD, BAD]                                 # two of six rows parsed, once each
    clock.advance(4)                                             # older than 5 s: refetched
    assert market.quote(GOOD, max_age=5).as_of > first.as_of
    assert client.count("option_chain") == 2


def test_rows_equal_a_full_parse_and_other_expiries_are_dropped_unparsed():
    payload = chain_payload(EXP1) + [{"strike": 1.0, "callOption": side(EXP2, 1, "C", markPrice=None)}]
    chain = ChainPayload(payload, as_of=5.0, expiry_ms=EXP1, index_name="BTCUSD")
    assert len(chain) == 6
    rows = chain.rows()
    assert rows == chain_rows_from_api(chain_payload(EXP1), as_of=5.0, expiry_ms=EXP1, index_name="BTCUSD")
    assert [chain.row(r.symbol) for r in rows] == list(rows)
    assert chain.row(sym(EXP2, 1, "C")) is None and chain.row("BTCUSD-3MAR26-1-C") is None


def test_a_symbol_sent_twice_resolves_as_a_full_parse_would():
    payload = chain_payload(EXP1)
    twin = side(EXP1, 70000, "C", markPrice=99.0)
    payload.append({"strike": 60000.0, "callOption": twin})     # listed again, under a lower strike row
    chain = ChainPayload(payload, as_of=0.0, expiry_ms=EXP1, index_name="BTCUSD")
    full = chain_rows_from_api(payload, as_of=0.0, expiry_ms=EXP1, index_name="BTCUSD")
    first_in_order = next(r for r in full if r.symbol == GOOD)
    assert chain.row(GOOD) == first_in_order and {r.mark for r in full if r.symbol == GOOD} == {99.0, 120.5}


@pytest.mark.parametrize("payload, message", [
    ({"not": "a list"}, "not a list"),
    (["entry"], "not an object"),
    ([{"callOption": "x"}], "not an object"),
    ([{"callOption": {"strike": 1}}], "without symbol"),
])
def test_a_payload_without_its_shape_fails_at_the_fetch(payload, message):
    with pytest.raises(StaleDataError, match=message):
        ChainPayload(payload, as_of=0.0, expiry_ms=EXP1, index_name="BTCUSD")


def test_a_chain_with_no_row_of_its_expiry_fails_at_the_fetch(market, client):
    client.chains[EXP1] = chain_payload(EXP2)
    with pytest.raises(StaleDataError, match="no options"):
        market.quote(GOOD, max_age=5)
