"""Values YAML parses but Python cannot hold as text or a date: a timestamp that is no day
(`2026-02-30` is read as a date, and raised ValueError) and a double-quoted unpaired
surrogate escape (`"\\ud800"`: a message quoting it could not be written out). Both were a
500 from POST /api/gateway/config/apply (and a traceback from `manage.py apply_config`);
both are the 400 of a file that cannot be read, saying where."""

import pytest

from orgs.config import config_load

JSON = "application/json"


@pytest.mark.parametrize(
    "text,said",
    [
        ("teams: [2026-02-30]", "2026-02-30"),
        ("policy: {allowed_models: 2026-13-01}", "2026-13-01"),
        ("providers: 2026-02-30 10:00:00", "2026-02-30"),
        ('teams: ["\\ud800"]', "surrogate"),
        ('gateway: {auto_model_alias: "a\\udfffb"}', "surrogate"),
        ('gateway: {"\\ud800": 1}', "surrogate"),
    ],
)
def test_an_unreadable_value_is_a_400_naming_it(alice_client, org_a, text, said):
    response = alice_client.post(
        "/api/gateway/config/apply", {"yaml": text, "dry_run": True}, content_type=JSON
    )
    assert response.status_code == 400, response.content[:300]
    message = response.json()["yaml"][0]
    assert message.startswith("not valid YAML") and said in message
    assert "line 1" in message


def test_a_real_date_still_loads_as_before():
    assert config_load("a: 2026-02-28")["a"].isoformat() == "2026-02-28"
    assert config_load('a: "\\U0001F600"')["a"] == "\U0001f600"
