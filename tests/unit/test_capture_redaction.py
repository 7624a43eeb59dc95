"""Payload capture writes the answer, never a key, secret, signature or account identifier."""
from __future__ import annotations

import json

from capture import CaptureWriter, Redactor, capture_record, load_capture
from clock import SimulatedClock
from coincall_client import ObservedResponse

KEY = "AKplantedKEY0123456789abcd"
SECRET = "SECplantedSECRET9876543210zyxw"
SIGNATURE = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
ACCOUNT = 1695796692000001
EMAIL = "alice@example.com"


def _planted() -> ObservedResponse:
    body = {
        "code": 0, "msg": "Success",
        "data": {
            "userId": ACCOUNT, "apiKey": KEY, "readOnly": 0, "parentUid": 0,
            "nested": {"accountId": str(ACCOUNT), "list": [{"email": EMAIL, "phone": "+4915112345678",
                                                             "note": f"key {KEY} of {ACCOUNT}"}]},
            "orders": [{"orderId": 1990000000000012288, "price": 12.5, "owner": ACCOUNT}],
            "echo": f"signed with {SIGNATURE}",
        },
    }
    return ObservedResponse(
        method="GET", path="/open/option/order/pending/v1", route="/open/option/order/pending/v1",
        params={"page": 1, "apiKey": KEY, "uuid": KEY, "userId": ACCOUNT}, encoding="query", status=200,
        headers={"Content-Type": "application/json", "X-CC-APIKEY": KEY, "sign": SIGNATURE, "Set-Cookie": "s=1",
                 "X-RateLimit-Remaining": "7", "X-Echo": SECRET, "X-User-Id": str(ACCOUNT)},
        body=json.dumps(body).encode(), elapsed_seconds=0.01, received_at_ms=1, secrets=(KEY, SIGNATURE))


def test_planted_secrets_and_identifiers_never_reach_the_file(tmp_path):
    clock = SimulatedClock(start=1_800_000_000.0, speed=0)
    writer = CaptureWriter(tmp_path / "cap", clock, Redactor([KEY, SECRET])).open()
    writer.observe(_planted())
    text = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "cap").iterdir())
    for planted in (KEY, SECRET, SIGNATURE, str(ACCOUNT), EMAIL, "+4915112345678"):
        assert planted not in text, planted
    record = load_capture(tmp_path / "cap")[0]
    data = record["body"]["data"]
    assert isinstance(data["userId"], int) and data["userId"] != ACCOUNT            # same JSON type, fake value
    assert data["orders"][0]["owner"] == data["userId"]                             # stable placeholder
    assert data["nested"]["accountId"].isdigit()
    assert data["readOnly"] == 0 and data["parentUid"] == 0 and record["body"]["code"] == 0   # flags untouched
    assert data["orders"][0]["orderId"] == 1990000000000012288 and data["orders"][0]["price"] == 12.5
    assert record["headers"]["X-RateLimit-Remaining"] == "7"
    assert not {"X-CC-APIKEY", "sign", "Set-Cookie", "X-User-Id"} & set(record["headers"])
    assert SECRET not in record["headers"].get("X-Echo", "")


def test_placeholders_are_stable_across_files(tmp_path):
    redactor = Redactor()
    first = capture_record(_planted(), redactor, 1)
    second = capture_record(_planted(), redactor, 2)
    assert first["body"]["data"]["userId"] == second["body"]["data"]["userId"]
    assert "Redactor(" in repr(redactor) and KEY not in repr(redactor)


def test_the_capture_stops_at_its_bounds(tmp_path):
    clock = SimulatedClock(start=1_800_000_000.0, speed=0)
    writer = CaptureWriter(tmp_path / "cap", clock, until=clock.now() + 10, max_files=2).open()
    writer.observe(_planted())
    clock.advance(20)
    writer.observe(_planted())
    assert writer.written == 1 and len(load_capture(tmp_path / "cap")) == 1
