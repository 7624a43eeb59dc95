"""``doctor`` audit, the pure parts: capture ids in both JSON forms (G), run numbers that never
repeat (C), the fill verdict (B), throttles that decide nothing (D), the perpetual's book sanity (E)."""
from __future__ import annotations

import json

import pytest

from capture import Redactor, capture_record
from coincall_client import ObservedResponse
from doctor_orders import (
    JOURNAL_FILE,
    MAX_RUN,
    RUN_EPOCH_SECONDS,
    DoctorJournal,
    OrderView,
    _outcome_unknown,
    fill_line,
    perp_book_problem,
    run_floor,
)
from errors import ExchangeError, OrderOutcomeUnknown, RateLimitedError, TraderError

# ---- G -------------------------------------------------------------------------------------------


def _answer(path: str, data) -> ObservedResponse:
    body = json.dumps({"code": 0, "msg": "success", "data": data}).encode()
    return ObservedResponse(method="GET", path=path, route=path, params={}, encoding="query", status=200,
                            headers={}, body=body, elapsed_seconds=0.01, received_at_ms=1)


@pytest.mark.parametrize("first_as_text", [True, False])
def test_an_account_id_is_scrubbed_in_both_json_forms(first_as_text):
    account = 1695796692000001
    redactor = Redactor(["k" * 44, "s" * 32])
    first = {"userId": str(account) if first_as_text else account}
    records = [capture_record(_answer("/open/a/v1", [first]), redactor, 1),
               capture_record(_answer("/open/b/v1", {"makerAccount": account, "text": str(account),
                                                     "note": f"by {account}"}), redactor, 2)]
    text = json.dumps(records)
    assert str(account) not in text, text
    body = records[1]["body"]["data"]
    assert isinstance(body["makerAccount"], int) and isinstance(body["text"], str)   # same JSON types
    fake = records[0]["body"]["data"][0]["userId"]
    assert str(fake) == str(body["makerAccount"]) == body["text"]   # one id, one placeholder


def test_small_or_zero_padded_digit_texts_are_not_taken_for_numbers():
    redactor = Redactor()
    record = capture_record(_answer("/open/a/v1", {"userId": "007", "count": 7}), redactor, 1)
    assert record["body"]["data"]["count"] == 7 and record["body"]["data"]["userId"] != "007"


# ---- C -------------------------------------------------------------------------------------------


def test_the_run_floor_grows_every_second_and_fits_until_2056():
    at = (RUN_EPOCH_SECONDS + 1000) * 1000
    assert run_floor(at) == 1000 and run_floor(at + 999) == 1000 and run_floor(at + 1000) == 1001
    assert run_floor(0) == 1
    assert run_floor((RUN_EPOCH_SECONDS + MAX_RUN) * 1000) == MAX_RUN   # 2056-09-09: the last usable second


def test_a_run_number_is_above_the_journals_and_the_clock_floor(tmp_path):
    now_ms = (RUN_EPOCH_SECONDS + 5000) * 1000
    journal = DoctorJournal.load(tmp_path)
    assert journal.new_run(now_ms) == 5000
    assert journal.new_run(now_ms) == 5001           # the same second: the journal's counter
    assert DoctorJournal.load(tmp_path).new_run(now_ms + 60_000) == 5060
    journal = DoctorJournal.load(tmp_path)
    journal.last_run = MAX_RUN
    with pytest.raises(TraderError, match="does not fit"):   # never wraps around to reuse
        journal.new_run(now_ms)


@pytest.mark.parametrize("content", ["{", "[]", '{"last_run": "x", "orders": {}}', '{"last_run": 3, "orders": []}',
                                     '{"last_run": -1}'])
def test_a_corrupt_journal_is_set_aside_and_reported_never_silently_reset(tmp_path, content):
    (tmp_path / JOURNAL_FILE).write_text(content, encoding="utf-8")
    journal = DoctorJournal.load(tmp_path)
    assert journal.problem and journal.set_aside is not None
    assert journal.set_aside.read_text(encoding="utf-8") == content
    assert not (tmp_path / JOURNAL_FILE).exists()


# ---- B -------------------------------------------------------------------------------------------


def _view(fill, state=3, final=True):
    return OrderView("option", 7, "BTCUSD-3MAR26-99000-C", state, final, fill)


def test_the_fill_verdict_names_the_position_or_says_the_fill_is_unknown():
    assert fill_line(123, None, _view(0.0)) is None
    filled = fill_line(123, None, _view(0.01, state=3))
    assert filled is not None and filled.status == "FAIL"
    assert "FILLED 0.01 BTCUSD-3MAR26-99000-C" in filled.detail and "close this position" in filled.fix
    assert "123" in filled.fix
    unknown = fill_line(123, "X", _view(None, state=1))
    assert unknown is not None and unknown.status == "FAIL" and "not readable" in unknown.detail


# ---- D -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exc,unknown", [
    (RateLimitedError(10000, "Try again later", "e"), True),
    (ExchangeError(10605, "busy", "e"), True),
    (ExchangeError(500, "server", "e"), True),
    (ExchangeError(10537, "unknown", "e"), True),
    (OrderOutcomeUnknown("e", "timeout", 1), True),
    (ExchangeError(10536, "Insufficient open positions", "e"), False),
    (ExchangeError(10001, "post-only would cross", "e"), False),
])
def test_only_a_definitive_answer_settles_a_probe(exc, unknown):
    assert _outcome_unknown(exc) is unknown


# ---- E -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bid,ask,mark,index,ok", [
    (89_990.0, 90_010.0, 90_000.0, 90_000.0, True),
    (134_997.0, 135_020.0, 90_000.0, 90_000.0, False),   # the book x1.5: outside the index band
    (90_010.0, 89_990.0, 90_000.0, 90_000.0, False),     # crossed
    (None, 90_010.0, 90_000.0, 90_000.0, False),         # one-sided
    (89_990.0, 90_010.0, 99_000.0, 90_000.0, False),     # the mark far from the index
    (89_990.0, 90_010.0, 90_000.0, 0.0, False),          # no index
])
def test_the_perpetual_is_priced_only_from_a_sane_book(bid, ask, mark, index, ok):
    assert (perp_book_problem(bid, ask, mark, index) is None) is ok
