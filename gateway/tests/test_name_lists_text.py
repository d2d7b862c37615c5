"""A list of names (models, tiers, providers, regions) holds text on every way in. REST
took a number as its text (`"models": ["lite", 5]` stored the model "5"), where the config
file refused it with "must be a list of names, not a list" (of a list); now both refuse
the item and say where it is."""

import pytest

from gateway.tests.test_config_input import BASE, _refused
from governance.models import RoutingPolicy

pytestmark = pytest.mark.django_db
JSON = "application/json"


@pytest.mark.parametrize("bad", [5, 1.5, True, None, ["x"], {"a": 1}])
def test_rest_refuses_an_item_that_is_not_text(alice_client, org_a, bad):
    quote = " (quote it)" if type(bad) in (int, float) else ""
    policy = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "p", "strategy": "smart", "models": ["lite", bad]},
        content_type=JSON,
    )
    assert policy.status_code == 400, policy.content
    (message,) = policy.json()["models"]["1"]
    said = "This field may not be null." if bad is None else f"A name is text{quote}, not "
    assert message.startswith(said), message
    assert not RoutingPolicy.objects.filter(name="p").exists()
    for field in ("smart_tiers", "fallback_models", "enabled_providers"):
        response = alice_client.put(
            "/api/gateway/config", {field: ["lite", bad]}, content_type=JSON
        )
        assert response.status_code == 400, (field, response.content)
        assert field in response.json()
    response = alice_client.put("/api/gateway/policy", {"allowed_models": [bad]}, content_type=JSON)
    assert response.status_code == 400, response.content


def test_rest_still_takes_names(alice_client, org_a):
    response = alice_client.put(
        "/api/gateway/config", {"fallback_models": ["lite", "5"]}, content_type=JSON
    )
    assert response.status_code == 200, response.content
    assert response.json()["fallback_models"] == ["lite", "5"]


@pytest.mark.parametrize(
    ("item", "said"), [("1", "1 (quote it)"), ("true", "true"), ("[a]", "a list")]
)
def test_the_config_file_names_the_item_that_is_not_text(tmp_path, item, said):
    text = BASE.replace(
        "    providers:", f"    gateway:\n      smart_tiers: [lite, {item}]\n    providers:"
    )
    message = _refused(tmp_path, text)
    assert "smart_tiers[1]: must be a name (text)" in message, message
    assert message.rstrip(".").endswith(said.split(" (")[0]) or said in message
    assert "not a list." not in message or item == "[a]"
