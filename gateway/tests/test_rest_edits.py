"""REST PATCH/DELETE of providers, deployments and routing policies (issue 19.1): admins
only (members and viewers get 403, another org's ids 404), a bad value is a JSON 400 that
writes nothing, a disabled row stays disabled across a PATCH that does not name it, and the
lists make a fixed number of queries however many rows there are."""

import pytest

from gateway import services
from gateway.models import Deployment, ProviderConnection
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db

JSON = "application/json"


def _rows(org, n=1):
    out = {}
    for i in range(n):
        p = services.provider_save(actor=ACTOR, org=org, name=f"p{i}", kind="mock")
        d = services.deployment_save(
            actor=ACTOR, org=org, model_name=f"chat{i}", provider=p, upstream_model="m"
        )
        rp = governance_services.routing_policy_save(
            actor=ACTOR, org=org, name=f"rp{i}", strategy="weighted", models=["a", "b"]
        )
        out.setdefault("provider", p.pk)
        out.setdefault("deployment", d.pk)
        out.setdefault("policy", rp.pk)
    return out


URLS = {
    "provider": "/api/gateway/providers/{}",
    "deployment": "/api/gateway/deployments/{}",
    "policy": "/api/gateway/routing-policies/{}",
}
PATCHES = {
    "provider": {"is_active": False},
    "deployment": {"priority": 4, "weight": 9, "is_active": False},
    "policy": {"weights": {"a": 1, "b": 3}, "is_active": False},
}


def _state(org):
    return (
        list(ProviderConnection.objects.filter(org=org).values_list("is_active", flat=True)),
        list(Deployment.objects.filter(org=org).values_list("priority", "weight", "is_active")),
        list(RoutingPolicy.objects.filter(org=org).values_list("weights", "is_active")),
        AuditLog.objects.filter(org=org).count(),
    )


@pytest.mark.parametrize("row", list(URLS))
def test_an_admin_patches_and_deletes_and_each_is_audited(alice_client, org_a, row):
    ids = _rows(org_a)
    url = URLS[row].format(ids[row])
    response = alice_client.patch(url, PATCHES[row], content_type=JSON)
    assert response.status_code == 200, response.content
    for field, value in PATCHES[row].items():
        assert response.json()[field] == value
    assert AuditLog.objects.filter(action__endswith=".update", org=org_a).exists()
    assert alice_client.delete(url).status_code == 204
    assert alice_client.get(url).status_code == 404
    assert AuditLog.objects.filter(action__endswith=".delete", org=org_a).count() == 1


@pytest.mark.parametrize("row", list(URLS))
def test_members_and_viewers_cannot_patch_or_delete(bob_client, vera_client, org_a, row):
    ids = _rows(org_a)
    url = URLS[row].format(ids[row])
    before = _state(org_a)
    for client in (bob_client, vera_client):
        assert client.get(url).status_code == 200  # they read
        assert client.patch(url, PATCHES[row], content_type=JSON).status_code == 403
        assert client.delete(url).status_code == 403
    assert _state(org_a) == before


@pytest.mark.parametrize("row", list(URLS))
def test_another_orgs_ids_are_404(charlie_client, org_a, org_b, row):
    ids = _rows(org_a)
    _rows(org_b)
    url = URLS[row].format(ids[row])
    before = _state(org_a), _state(org_b)
    assert charlie_client.get(url).status_code == 404
    assert charlie_client.patch(url, PATCHES[row], content_type=JSON).status_code == 404
    assert charlie_client.delete(url).status_code == 404
    assert (_state(org_a), _state(org_b)) == before


@pytest.mark.parametrize(
    "row,body,field",
    [
        ("deployment", {"priority": -1}, "priority"),
        ("deployment", {"weight": "abc"}, "weight"),
        ("deployment", {"input_price_per_mtok": "-1"}, "input_price_per_mtok"),
        ("deployment", {"provider": "no-such"}, "provider"),
        ("provider", {"name": "renamed"}, "name"),
        ("provider", {"kind": "nope"}, "kind"),
        ("provider", {"kind": "openai"}, "kind"),
        ("policy", {"weights": {"c": 1}}, "weights"),
        ("policy", {"weights": {"a": 0, "b": 0}}, "weights"),
        ("policy", {"weights": {"a": -1}}, "weights"),
        ("policy", {"strategy": "nope"}, "strategy"),
        ("policy", {"name": "renamed"}, "name"),
    ],
)
def test_a_bad_value_is_a_json_400_naming_the_field_and_writes_nothing(
    alice_client, org_a, row, body, field
):
    ids = _rows(org_a)
    before = _state(org_a)
    response = alice_client.patch(URLS[row].format(ids[row]), body, content_type=JSON)
    assert response.status_code == 400 and response["content-type"] == JSON
    assert field in response.json(), response.json()
    assert _state(org_a) == before


def test_a_patch_that_does_not_name_is_active_keeps_a_provider_disabled(alice_client, org_a):
    ids = _rows(org_a)
    url = URLS["provider"].format(ids["provider"])
    alice_client.patch(url, {"is_active": False}, content_type=JSON)
    response = alice_client.patch(url, {"settings": {}}, content_type=JSON)
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert ProviderConnection.objects.get(pk=ids["provider"]).is_active is False


def test_creating_a_deployment_that_exists_is_a_400(alice_client, org_a):
    _rows(org_a)
    response = alice_client.post(
        "/api/gateway/deployments",
        {"model_name": "chat0", "provider": "p0", "upstream_model": "m"},
        content_type=JSON,
    )
    assert response.status_code == 400
    assert services.DEPLOYMENT_TAKEN in response.json()["upstream_model"]
    assert Deployment.objects.filter(org=org_a).count() == 1


def test_deleting_a_routing_policy_rt_keys_use_is_a_400_naming_them(alice_client, org_a):
    ids = _rows(org_a)
    policy = RoutingPolicy.objects.get(pk=ids["policy"])
    key, _ = services.api_key_create(actor=ACTOR, org=org_a, name="router", routing_policy=policy)
    response = alice_client.delete(URLS["policy"].format(policy.pk))
    assert response.status_code == 400
    assert key.masked in " ".join(response.json()["detail"])
    assert RoutingPolicy.objects.filter(pk=policy.pk).exists()


@pytest.mark.parametrize(
    "url", ["/api/gateway/providers", "/api/gateway/deployments", "/api/gateway/routing-policies"]
)
def test_the_lists_make_a_fixed_number_of_queries(
    alice_client, org_a, url, django_assert_max_num_queries
):
    _rows(org_a, n=1)
    with django_assert_max_num_queries(8) as few:
        assert alice_client.get(url).json()["count"] == 1
    for i in range(1, 12):
        p = services.provider_save(actor=ACTOR, org=org_a, name=f"x{i}", kind="mock")
        services.deployment_save(
            actor=ACTOR, org=org_a, model_name=f"m{i}", provider=p, upstream_model="u"
        )
        governance_services.routing_policy_save(actor=ACTOR, org=org_a, name=f"x{i}", models=["a"])
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert alice_client.get(url).json()["count"] == 12


def test_a_rename_is_refused_as_a_list_of_messages_like_every_field_error(alice_client, org_a):
    """It answered {"name": "…"}, where every other field error is a list of messages."""
    made = alice_client.post(
        "/api/gateway/providers", {"name": "oai", "kind": "mock"}, content_type="application/json"
    )
    assert made.status_code == 201, made.content
    policy = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "p", "strategy": "failover", "models": ["a"]},
        content_type="application/json",
    )
    assert policy.status_code == 201, policy.content
    for url, what in (
        (f"/api/gateway/providers/{made.json()['id']}", "A provider"),
        (f"/api/gateway/routing-policies/{policy.json()['id']}", "A routing policy"),
    ):
        response = alice_client.patch(url, {"name": "renamed"}, content_type="application/json")
        assert response.status_code == 400
        assert response.json() == {"name": [f"{what} cannot be renamed; create a new one."]}


@pytest.mark.django_db
def test_a_related_row_the_org_does_not_have_is_named_in_the_api_s_words(
    alice_client, org_a, org_b
):
    """DRF's "Object with name=2 does not exist." and 'Invalid pk "9" - object does not
    exist.' (an outside check): the row asked for, said as the API names it."""
    from governance import services as gov

    other = gov.routing_policy_save(actor=ACTOR, org=org_b, name="theirs", models=["m"])
    cases = [
        ({"routing_policy": 2}, "routing_policy", "A routing policy is given by its name (text)."),
        (
            {"routing_policy": "theirs"},
            "routing_policy",
            "No routing policy named 'theirs' in this organization.",
        ),
        (
            {"routing_policy": ["x"]},
            "routing_policy",
            "A routing policy is given by its name (text).",
        ),
        ({"team": 999999}, "team", "No team 999999 in this organization."),
        ({"team": "x"}, "team", "A team is given by its id (a whole number), not 'x'."),
        ({"team": 2.9}, "team", "A team is given by its id (a whole number), not 2.9."),
        ({"team": True}, "team", "A team is given by its id (a whole number), not true."),
        (
            {"team": "9" * 5000},
            "team",
            f"No team {'9' * 60!r}… (5000 characters) in this organization.",
        ),
        (
            {"team": 1e300},
            "team",
            "No team '1e+300' in this organization.",
        ),
        (
            {"routing_policy": "n" * 5000},
            "routing_policy",
            f"No routing policy named '{'n' * 100}' in this organization.",
        ),
    ]
    for extra, field, said in cases:
        response = alice_client.post(
            "/api/gateway/keys", {"name": "k", **extra}, content_type="application/json"
        )
        assert response.status_code == 400, extra
        assert response.json()[field] == [said], (extra, response.json())
    assert other.name == "theirs"


@pytest.mark.django_db
def test_a_number_for_text_is_refused_as_the_config_file_refuses_it(alice_client, org_a):
    """{"auto_model_alias": 5} was saved as "5" and {"model_name": 5} made the model "5"
    over REST, where apply_config refuses them (an outside check)."""
    put = alice_client.put(
        "/api/gateway/config", {"auto_model_alias": 5}, content_type="application/json"
    )
    assert put.status_code == 400
    assert put.json()["auto_model_alias"] == ["Must be text (quote it), not 5."]
    provider = services.provider_save(actor=ACTOR, org=org_a, name="p", kind="mock")
    made = alice_client.post(
        "/api/gateway/deployments",
        {"model_name": 5, "provider": provider.name, "upstream_model": "m"},
        content_type="application/json",
    )
    assert made.status_code == 400 and "Must be text (quote it)" in made.json()["model_name"][0]
    assert not Deployment.objects.filter(org=org_a).exists()
    for url, body in (
        ("/api/gateway/routing-policies", {"name": 5, "models": ["m"]}),
        ("/api/gateway/providers", {"name": 5, "kind": "mock"}),
    ):
        response = alice_client.post(url, body, content_type="application/json")
        assert response.status_code == 400, url
        assert response.json()["name"] == ["Must be text (quote it), not 5."], url
    named = alice_client.post("/api/gateway/keys", {"name": True}, content_type="application/json")
    assert named.status_code == 400 and named.json()["name"] == ["Must be text, not true."]
