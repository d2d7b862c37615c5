"""Edit, disable and delete of providers, deployments and routing policies (issue 19.1):
through the same services from the dashboard and REST, audited with before/after, each
bumping the config version; admins only; another org's ids are 404; a bad value is a
message (dashboard) or a JSON 400 (REST) and writes nothing; a name or identity that exists
is refused, never silently replaced."""

import pytest
from django.test import Client
from django.urls import reverse

from core.config_version import current_version
from gateway import services
from gateway.models import ApiKey, Deployment, ProviderConnection
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db


def _rows(org):
    provider = services.provider_save(actor=ACTOR, org=org, name="p", kind="mock")
    other = services.provider_save(actor=ACTOR, org=org, name="q", kind="mock")
    deployment = services.deployment_save(
        actor=ACTOR, org=org, model_name="chat", provider=provider, upstream_model="m"
    )
    policy = governance_services.routing_policy_save(
        actor=ACTOR, org=org, name="rp", strategy="weighted", models=["a", "b"], weights={"a": 1}
    )
    return {"provider": provider, "other": other, "deployment": deployment, "policy": policy}


@pytest.fixture
def mine(org_a):
    return _rows(org_a)


@pytest.fixture
def theirs(org_b):
    return _rows(org_b)


def _messages(response):
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def _url(name, org, obj):
    return reverse(name, args=[org.slug, obj.pk])


DEPLOYMENT_BODY = {
    "model_name": "chat",
    "upstream_model": "m2",
    "region": "eu-west-1",
    "priority": "7",
    "weight": "3",
    "input_price_per_mtok": "0.15",
    "output_price_per_mtok": "",
    "is_active": "",
}


# ------------------------------------------------------------------------------ services
def test_it_audits_each_change_with_before_and_after_and_bumps_the_config(org_a, mine):
    version = current_version()
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        deployment=mine["deployment"],
        model_name="chat",
        provider=mine["provider"],
        upstream_model="m",
        weight=5,
        priority=2,
        is_active=False,
    )
    row = AuditLog.objects.filter(action="deployment.update").latest("id")
    assert row.changes["before"]["weight"] == 1 and row.changes["after"]["weight"] == 5
    assert row.changes["before"]["is_active"] is True and row.changes["after"]["is_active"] is False
    assert row.changes["after"]["priority"] == 2
    assert current_version() > version

    version = current_version()
    gone = services.provider_delete(actor=ACTOR, provider=mine["provider"])
    assert gone == ["chat → m"] and not Deployment.objects.filter(org=org_a).exists()
    row = AuditLog.objects.get(action="provider.delete")
    assert row.changes["before"]["deployments"] == ["chat → m"]
    assert current_version() > version


def test_it_refuses_a_new_deployment_identical_to_one_that_exists(org_a, mine):
    with pytest.raises(Exception) as exc:
        services.deployment_create(
            actor=ACTOR, org=org_a, model_name="chat", provider=mine["provider"], upstream_model="m"
        )
    assert services.DEPLOYMENT_TAKEN in str(exc.value)
    assert Deployment.objects.filter(org=org_a).count() == 1


def test_it_refuses_a_new_routing_policy_under_a_name_that_exists(org_a, mine):
    with pytest.raises(Exception) as exc:
        governance_services.routing_policy_create(
            actor=ACTOR, org=org_a, name="rp", strategy="failover", models=["z"]
        )
    assert governance_services.ROUTING_POLICY_NAME_TAKEN in str(exc.value)
    assert RoutingPolicy.objects.get(org=org_a).model_names == ["a", "b"]


def test_deleting_a_routing_policy_rt_keys_use_is_refused_naming_them(org_a, mine):
    policy = mine["policy"]
    keys = [
        services.api_key_create(actor=ACTOR, org=org_a, name=f"router-{i}", routing_policy=policy)[
            0
        ]
        for i in range(2)
    ]
    with pytest.raises(Exception) as exc:
        governance_services.routing_policy_delete(actor=ACTOR, routing_policy=policy)
    for key in keys:
        assert f"{key.name} ({key.masked})" in str(exc.value)
    assert RoutingPolicy.objects.filter(pk=policy.pk).exists()
    for key in keys:
        services.api_key_revoke(actor=ACTOR, key=key)
    governance_services.routing_policy_delete(actor=ACTOR, routing_policy=policy)
    assert not RoutingPolicy.objects.filter(pk=policy.pk).exists()
    assert ApiKey.objects.filter(pk__in=[k.pk for k in keys], routing_policy=None).count() == 2
    assert AuditLog.objects.filter(action="routing_policy.delete").count() == 1


# ------------------------------------------------------------------------------ dashboard
def test_the_deployment_edit_page_saves_every_field(alice_client, org_a, mine):
    d = mine["deployment"]
    page = alice_client.get(_url("deployment_edit", org_a, d))
    assert page.status_code == 200 and b'name="priority"' in page.content
    body = {**DEPLOYMENT_BODY, "provider": str(mine["other"].pk), "is_active": "on"}
    response = alice_client.post(_url("deployment_edit", org_a, d), body, follow=True)
    assert [level for level, _ in _messages(response)] == ["success"]
    d.refresh_from_db()
    assert (d.provider, d.upstream_model, d.region, d.priority, d.weight, d.is_active) == (
        mine["other"],
        "m2",
        "eu-west-1",
        7,
        3,
        True,
    )
    assert str(d.input_price_per_mtok) == "0.150000" and d.output_price_per_mtok is None
    # An unticked box disables it.
    alice_client.post(_url("deployment_edit", org_a, d), {**body, "is_active": ""}, follow=True)
    d.refresh_from_db()
    assert d.is_active is False


@pytest.mark.parametrize(
    "field,value,label",
    [
        ("priority", "", "Priority"),
        ("priority", "-1", "Priority"),
        ("priority", "٣", "Priority"),
        ("priority", "9" * 30, "Priority"),
        ("weight", "abc", "Weight"),
        ("weight", "a\x00b", "Weight"),
        ("input_price_per_mtok", "-1", "Input price"),
        ("input_price_per_mtok", "NaN", "Input price"),
        ("unit_price", "-1", "Unit price"),
        ("unit_price", "1e400", "Unit price"),
        ("model_name", "", "Model name"),
        ("provider", "{other_org}", "Provider"),
        ("upstream_model", "x" * 201, "Upstream model"),
    ],
)
def test_a_bad_deployment_edit_is_a_message_naming_the_field_and_writes_nothing(
    alice_client, org_a, mine, theirs, field, value, label
):
    d = mine["deployment"]
    before = AuditLog.objects.count()
    body = {**DEPLOYMENT_BODY, "provider": str(mine["provider"].pk)}
    body[field] = str(theirs["provider"].pk) if value == "{other_org}" else value
    response = alice_client.post(_url("deployment_edit", org_a, d), body)
    assert response.status_code == 400
    [(level, text)] = _messages(response)
    assert level == "error" and text.startswith(f"{label}: "), text
    assert AuditLog.objects.count() == before
    d.refresh_from_db()
    assert (d.upstream_model, d.priority, d.weight) == ("m", 0, 1)


def test_adding_a_deployment_that_exists_is_refused_with_a_message(alice_client, org_a, mine):
    body = {"provider": mine["provider"].pk, "model_name": "chat", "upstream_model": "m"}
    response = alice_client.post(reverse("deployment_create", args=[org_a.slug]), body, follow=True)
    [(level, text)] = _messages(response)
    assert level == "error" and "edit that deployment" in text
    assert Deployment.objects.filter(org=org_a).count() == 1


def test_a_provider_can_be_disabled_and_deleted_from_the_dashboard(alice_client, org_a, mine):
    p = mine["provider"]
    page = alice_client.get(reverse("providers", args=[org_a.slug]))
    assert _url("provider_delete", org_a, p).encode() in page.content
    assert b"and its 1 deployment?" in page.content  # the confirmation says what goes
    response = alice_client.post(_url("provider_edit", org_a, p), {}, follow=True)  # unticked
    assert [level for level, _ in _messages(response)] == ["success"]
    p.refresh_from_db()
    assert p.is_active is False
    assert AuditLog.objects.filter(action="provider.update").count() == 1
    response = alice_client.post(_url("provider_delete", org_a, p), follow=True)
    [(level, text)] = _messages(response)
    assert level == "success" and "chat → m" in text
    assert not ProviderConnection.objects.filter(pk=p.pk).exists()
    assert not Deployment.objects.filter(pk=mine["deployment"].pk).exists()


def test_a_new_provider_under_an_existing_name_is_refused_and_keeps_the_old_one(
    alice_client, org_a, mine
):
    response = alice_client.post(
        reverse("providers", args=[org_a.slug]), {"name": "p", "kind": "openai"}
    )
    assert response.status_code == 400
    [(level, text)] = _messages(response)
    assert level == "error" and text == f"Name: {services.PROVIDER_NAME_TAKEN}"
    assert ProviderConnection.objects.get(org=org_a, name="p").kind == "mock"


def test_the_routing_policy_edit_page_changes_weights_and_disables(alice_client, org_a, mine):
    rp = mine["policy"]
    page = alice_client.get(_url("routing_policy_edit", org_a, rp))
    assert page.status_code == 200 and b'value="a=1"' in page.content
    response = alice_client.post(
        _url("routing_policy_edit", org_a, rp),
        {"strategy": "weighted", "models": "a, b", "weights": "a=1, b=9"},
        follow=True,
    )
    assert [level for level, _ in _messages(response)] == ["success"]
    rp.refresh_from_db()
    assert (rp.name, rp.weights, rp.is_active) == ("rp", {"a": 1, "b": 9}, False)
    row = AuditLog.objects.filter(action="routing_policy.update").latest("id")
    assert row.changes["before"]["weights"] == {"a": 1}
    assert row.changes["after"]["weights"] == {"a": 1, "b": 9}


@pytest.mark.parametrize(
    "weights,needle",
    [("a=x", "weight of 'a'"), ("c=1", "'c'"), ("a=0, b=0", "all 0"), ("a", "model=weight")],
)
def test_bad_weights_are_a_message_and_write_nothing(alice_client, org_a, mine, weights, needle):
    rp = mine["policy"]
    response = alice_client.post(
        _url("routing_policy_edit", org_a, rp),
        {"strategy": "weighted", "models": "a, b", "weights": weights, "is_active": "on"},
    )
    assert response.status_code == 400
    [(level, text)] = _messages(response)
    assert level == "error" and text.startswith("Weights: ") and needle in text, text
    rp.refresh_from_db()
    assert rp.weights == {"a": 1}


def test_a_new_routing_policy_under_an_existing_name_is_refused(alice_client, org_a, mine):
    response = alice_client.post(
        reverse("routing", args=[org_a.slug]), {"name": "rp", "models": "z"}, follow=True
    )
    [(level, text)] = _messages(response)
    assert level == "error" and governance_services.ROUTING_POLICY_NAME_TAKEN in text
    assert RoutingPolicy.objects.get(org=org_a).model_names == ["a", "b"]


def test_deleting_a_routing_policy_in_use_shows_the_keys_and_keeps_it(alice_client, org_a, mine):
    rp = mine["policy"]
    key, _ = services.api_key_create(actor=ACTOR, org=org_a, name="router", routing_policy=rp)
    page = alice_client.get(_url("routing_policy_edit", org_a, rp))
    assert key.masked in page.content.decode()
    response = alice_client.post(_url("routing_policy_delete", org_a, rp), follow=True)
    [(level, text)] = _messages(response)
    assert level == "error" and key.masked in text
    assert RoutingPolicy.objects.filter(pk=rp.pk).exists()
    services.api_key_revoke(actor=ACTOR, key=key)
    response = alice_client.post(_url("routing_policy_delete", org_a, rp), follow=True)
    assert [level for level, _ in _messages(response)] == ["success"]
    assert not RoutingPolicy.objects.filter(pk=rp.pk).exists()


def test_the_deployment_delete_removes_it_and_audits(alice_client, org_a, mine):
    d = mine["deployment"]
    second = services.deployment_save(
        actor=ACTOR, org=org_a, model_name="chat", provider=mine["other"], upstream_model="m"
    )
    governance_services.routing_policy_save(actor=ACTOR, org=org_a, name="uses", models=["chat"])
    response = alice_client.post(_url("deployment_delete", org_a, d), follow=True)
    assert [level for level, _ in _messages(response)] == ["success"]
    assert not Deployment.objects.filter(pk=d.pk).exists()
    assert AuditLog.objects.get(action="deployment.delete").changes["before"]["model"] == "chat"
    # The last one of its model: the page says what is left without a route.
    response = alice_client.post(_url("deployment_delete", org_a, second), follow=True)
    assert _messages(response)[-1] == (
        "warning",
        "chat has no deployment left: requests for it now get 404; "
        "the routing policies uses list it.",
    )


PAGES = [
    ("provider_edit", "provider", "get"),
    ("provider_edit", "provider", "post"),
    ("provider_delete", "provider", "post"),
    ("deployment_edit", "deployment", "get"),
    ("deployment_edit", "deployment", "post"),
    ("deployment_delete", "deployment", "post"),
    ("routing_policy_edit", "policy", "get"),
    ("routing_policy_edit", "policy", "post"),
    ("routing_policy_delete", "policy", "post"),
]


def _counts(org):
    return (
        ProviderConnection.objects.filter(org=org, is_active=True).count(),
        Deployment.objects.filter(org=org, is_active=True).count(),
        RoutingPolicy.objects.filter(org=org, is_active=True).count(),
        AuditLog.objects.filter(org=org).count(),
    )


@pytest.mark.parametrize("name,row,method", PAGES)
def test_another_orgs_ids_are_404_and_members_and_viewers_are_refused(
    charlie_client, bob_client, vera_client, org_a, org_b, mine, theirs, name, row, method
):
    before = _counts(org_a), _counts(org_b)
    # Charlie (org B's admin) names org A's ids under his own org, and under org A.
    for org in (org_b, org_a):
        response = getattr(charlie_client, method)(_url(name, org, mine[row]))
        assert response.status_code == 404
    for client in (bob_client, vera_client):
        assert getattr(client, method)(_url(name, org_a, mine[row])).status_code == 403
    assert (_counts(org_a), _counts(org_b)) == before


@pytest.mark.parametrize("name,row,method", [p for p in PAGES if p[2] == "post"])
def test_a_post_without_the_csrf_token_is_refused(alice, org_a, mine, name, row, method):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    before = _counts(org_a)
    assert client.post(_url(name, org_a, mine[row]), DEPLOYMENT_BODY).status_code == 403
    assert _counts(org_a) == before


def test_the_pages_have_no_inline_script_or_handler(alice_client, org_a, mine):
    import re

    for url in (
        reverse("providers", args=[org_a.slug]),
        reverse("routing", args=[org_a.slug]),
        _url("provider_edit", org_a, mine["provider"]),
        _url("deployment_edit", org_a, mine["deployment"]),
        _url("routing_policy_edit", org_a, mine["policy"]),
    ):
        html = alice_client.get(url).content.decode()
        assert "data-confirm=" in html, url
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert not re.search(r"\son[a-z]+\s*=", html), url


def _as_posted(initial: dict) -> dict:
    """An edit form's initial values as the browser sends them back untouched."""
    body = {}
    for name, value in initial.items():
        if isinstance(value, bool):
            if value:
                body[name] = "on"
        elif value is not None:
            body[name] = str(value)
    return body


@pytest.mark.parametrize(
    "fields",
    [
        {"strategy": "weighted", "models": ["a", "b"], "weights": {"a": 3, "b": 1}},
        {"strategy": "failover", "models": ["a"], "is_active": False},
        {
            "strategy": "smart",
            "models": ["a", "b", "c"],
            "smart": {"classifier": "rules", "aggressiveness": 0.35},
        },
        {
            "strategy": "smart",
            "models": ["a", "b", "c"],
            "smart": {"classifier": "rules", "thresholds": [0.2, 0.45]},
        },
        {
            # Settings the page has no field for are kept.
            "strategy": "smart",
            "models": ["a", "b"],
            "smart": {
                "classifier": "rules",
                "aggressiveness": 0.5,
                "ab": {"share": 0.1, "classifier": "strong"},
                "keywords": {"code": ["kubernetes"]},
                "within": "round_robin",
            },
        },
    ],
)
def test_saving_an_edit_page_untouched_changes_nothing(alice_client, org_a, mine, fields):
    """The edit pages show what is stored: saved as shown, nothing changes (no audit row)."""
    rp = governance_services.routing_policy_save(actor=ACTOR, org=org_a, name="x", **fields)
    d = mine["deployment"]
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        deployment=d,
        model_name="chat",
        provider=mine["provider"],
        upstream_model="m",
        region="eu",
        weight=4,
        priority=2,
        input_price_per_mtok="0.15",
        output_price_per_mtok="0.6",
    )
    before = AuditLog.objects.count()
    for name, obj in (("routing_policy_edit", rp), ("deployment_edit", d)):
        url = _url(name, org_a, obj)
        form = alice_client.get(url).context["form"]
        response = alice_client.post(url, _as_posted(form.initial))
        assert response.status_code == 302, _messages(response)
    assert AuditLog.objects.count() == before
    stored = RoutingPolicy.objects.get(pk=rp.pk)
    assert (stored.weights, stored.smart, stored.is_active) == (
        fields.get("weights", {}),
        fields.get("smart", {}),
        fields.get("is_active", True),
    )


@pytest.mark.parametrize("page", ["providers", "routing", "team"])
def test_the_pages_with_edit_controls_make_a_fixed_number_of_queries(
    alice_client, org_a, mine, page, django_assert_max_num_queries
):
    """Each row's controls (edit links, team choices, delete confirmations) cost no query."""
    from orgs import services as org_services
    from orgs.models import Role, User

    def add(i):
        p = services.provider_save(actor=ACTOR, org=org_a, name=f"x{i}", kind="mock")
        services.deployment_save(
            actor=ACTOR, org=org_a, model_name=f"m{i}", provider=p, upstream_model="u"
        )
        governance_services.routing_policy_save(actor=ACTOR, org=org_a, name=f"x{i}", models=["a"])
        team = org_services.team_create(actor=ACTOR, org=org_a, name=f"T{i}")
        user = User.objects.create_user(email=f"u{i}@acme.test", password="x" * 12)
        org_services.membership_add(actor=ACTOR, org=org_a, user=user, role=Role.MEMBER, team=team)
        org_services.invitation_create(actor=ACTOR, org=org_a, email=f"i{i}@acme.test", team=team)

    url = reverse(page, args=[org_a.slug])
    add(0)
    with django_assert_max_num_queries(40) as few:
        assert alice_client.get(url).status_code == 200
    for i in range(1, 8):
        add(i)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert alice_client.get(url).status_code == 200
