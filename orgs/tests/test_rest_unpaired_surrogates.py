"""A JSON body may spell an unpaired UTF-16 surrogate (``"\\ud800"``): valid JSON, but no
Unicode text, so it cannot be stored or written back out as UTF-8. A field that echoes a
refused value in its message (a choice field: "\\ud800" is not a valid choice) made the
answer itself unencodable, and the API answered 500. The body is refused at the parser,
with a 400 naming the problem, wherever the surrogate is (a value, a key, a nested list)."""

import pytest

JSON = "application/json"
LONE = '"\\ud800"'


@pytest.mark.parametrize(
    "method,path,body",
    [
        (
            "post",
            "/api/gateway/invitations",
            '{"email": "x@acme.test", "role": LONE}'.replace("LONE", LONE),
        ),
        ("post", "/api/gateway/providers", '{"name": "p", "kind": LONE}'.replace("LONE", LONE)),
        (
            "post",
            "/api/gateway/budgets",
            '{"amount_usd": "10", "scope": LONE}'.replace("LONE", LONE),
        ),
        (
            "post",
            "/api/gateway/budgets",
            '{"amount_usd": "10", "period": LONE}'.replace("LONE", LONE),
        ),
        (
            "post",
            "/api/gateway/keys",
            '{"name": "k", "allowed_models": [LONE]}'.replace("LONE", LONE),
        ),
        (
            "post",
            "/api/gateway/routing-policies",
            '{"name": "r", "models": ["m"], "weights": {LONE: 1}}'.replace("LONE", LONE),
        ),
        ("put", "/api/gateway/config", '{"default_strategy": LONE}'.replace("LONE", LONE)),
        ("post", "/api/tokens", '{"name": "t\\udfff"}'),
    ],
)
def test_an_unpaired_surrogate_in_a_body_is_a_400(alice_client, org_a, method, path, body):
    response = getattr(alice_client, method)(path, body, content_type=JSON)
    assert response.status_code == 400, response.content[:300]
    assert "surrogate" in response.json()["detail"]


def test_a_paired_surrogate_is_a_character_like_any_other(alice_client, org_a):
    # "\ud83d\ude00" is U+1F600, written the way JSON writes characters outside the BMP.
    response = alice_client.post(
        "/api/gateway/teams", '{"name": "smile \\ud83d\\ude00"}', content_type=JSON
    )
    assert response.status_code == 201, response.content[:300]
    assert response.json()["name"] == "smile \U0001f600"
