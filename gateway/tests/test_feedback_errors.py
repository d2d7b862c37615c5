"""POST /v1/feedback refuses a bad body with a message that says what is wrong with what was
sent: a string is never told it must be a string, a number never told it must be a number,
a too-long id gets a code about length (docs/smart-routing.md *Feedback*)."""

import httpx
import pytest


def _feedback(acme, payload):
    return httpx.post(
        acme.url + "/v1/feedback",
        headers={"Authorization": f"Bearer {acme.raw}"},
        timeout=10,
        json=payload,
    )


# (body, param, code, words the message has, words it must not have)
CASES = [
    ({"request_id": "", "score": 1}, "request_id", "invalid_value", "must not be empty", "string"),
    (
        {"request_id": "   ", "score": 1},
        "request_id",
        "invalid_value",
        "must not be empty",
        "string",
    ),
    ({"request_id": 5, "score": 1}, "request_id", "invalid_type", "not a number", "empty"),
    ({"request_id": ["r"], "score": 1}, "request_id", "invalid_type", "not an array", "empty"),
    (
        {"request_id": "x" * 5000, "score": 1},
        "request_id",
        "string_above_max_length",
        "5000 characters long",
        "must be a string",
    ),
    ({"request_id": "r", "score": 1.5}, "score", "invalid_value", "it is 1.5", "a number"),
    ({"request_id": "r", "score": -1}, "score", "invalid_value", "it is -1", "a number"),
    ({"request_id": "r", "score": "high"}, "score", "invalid_type", "not a string", "it is"),
    ({"request_id": "r", "score": True}, "score", "invalid_type", "not a boolean", "it is"),
    # null is "not sent": then neither is sent
    ({"request_id": "r", "score": None}, "score", "missing_required_parameter", "required", "null"),
    ({"request_id": "r", "thumbs": "sideways"}, "thumbs", "invalid_value", "'sideways'", "string"),
    ({"request_id": "r", "thumbs": 1}, "thumbs", "invalid_type", "not a number", "'"),
    ({"request_id": "r"}, "score", "missing_required_parameter", "is required", "not both"),
    ({"request_id": "r", "score": 1, "thumbs": "up"}, "score", "invalid_value", "not both", "req"),
]


@pytest.mark.parametrize(("payload", "param", "code", "says", "never"), CASES)
def test_a_bad_feedback_field_is_told_what_is_wrong_with_it(
    acme, gw, payload, param, code, says, never
):
    response = _feedback(acme, payload)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert says in error["message"]
    assert never not in error["message"]
    assert len(error["message"]) < 300  # a 5,000-character id is not echoed


def test_an_id_of_128_characters_is_looked_up_not_refused(acme, gw):
    response = _feedback(acme, {"request_id": "x" * 128, "score": 1})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "request_not_found"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        # JSON, past a float's range: too large, and where
        (b'{"request_id": "r", "score": 1e400}', "holds a number too large to carry"),
        (b'{"request_id": "r", "score": }', "not valid JSON"),
    ],
)
def test_a_body_that_cannot_be_read_says_where_and_why(acme, gw, raw, says):
    """It said "The body must be JSON." of a body that is JSON (1e400 is a JSON number):
    now what the other endpoints say, the parser's reason and place."""
    response = httpx.post(
        acme.url + "/v1/feedback",
        headers={"Authorization": f"Bearer {acme.raw}", "Content-Type": "application/json"},
        content=raw,
        timeout=10,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_json", None)
    assert error["message"].startswith("The request body ")
    assert says in error["message"] and "line 1 column" in error["message"], error["message"]
