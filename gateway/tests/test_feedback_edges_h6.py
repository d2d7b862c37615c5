"""POST /v1/feedback's edges (docs/smart-routing.md *Feedback*): a score out of range is
quoted as sent (1.0000001 is not "1"), and -0.0 is stored and echoed as 0.0."""

import httpx
import pytest

from gateway.dataplane.errors import GatewayError
from gateway.dataplane.proxy import parse_feedback
from gateway.tests.conftest import usage_rows


def _auth(raw):
    return {"Authorization": f"Bearer {raw}"}


def _chat(acme, **headers):
    return httpx.post(
        acme.base_url + "/chat/completions",
        json={"model": "chat-small", "messages": [{"role": "user", "content": "hi"}]},
        headers={**_auth(acme.raw), **headers},
        timeout=30,
    )


def _feedback(acme, payload):
    return httpx.post(
        acme.base_url + "/feedback", json=payload, headers=_auth(acme.raw), timeout=30
    )


# ---------------------------------------------------------------------- the score
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"1.0000001", "1.0000001"),
        (b"-0.0000001", "-1e-07"),
        (b"1.5", "1.5"),
        (b"-1", "-1"),
        (b"100000000000000000000", "1e+20"),  # past 64 bits: read as a decimal
        (b"12345678901234567", "12345678901234567"),
    ],
)
def test_a_score_out_of_range_is_quoted_as_sent(raw, shown):
    with pytest.raises(GatewayError) as info:
        parse_feedback(b'{"request_id": "r", "score": ' + raw + b"}")
    assert info.value.message == f"score must be from 0 (bad) to 1 (good); it is {shown}."
    assert (info.value.code, info.value.param) == ("invalid_value", "score")


@pytest.mark.parametrize("raw", [b"-0.0", b"-0", b"0", b"0.0", b"-0e5"])
def test_a_zero_score_is_zero_whatever_its_sign(raw):
    _rid, score = parse_feedback(b'{"request_id": "r", "score": ' + raw + b"}")
    assert score == 0.0 and str(score) == "0.0"


def test_minus_zero_is_stored_and_echoed_as_zero(acme, gw):
    rid = _chat(acme).headers["x-request-id"]
    usage_rows()
    response = httpx.post(
        acme.base_url + "/feedback",
        content=b'{"request_id": "' + rid.encode() + b'", "score": -0.0}',
        headers={**_auth(acme.raw), "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert b'"score":0.0' in response.content and b"-0.0" not in response.content
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert row.feedback_score == 0.0 and str(row.feedback_score) == "0.0"


def test_a_score_just_past_1_is_told_how_far_over_v1(acme, gw):
    response = _feedback(acme, {"request_id": "r", "score": 1.0000001})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "score must be from 0 (bad) to 1 (good); it is 1.0000001."
    )
