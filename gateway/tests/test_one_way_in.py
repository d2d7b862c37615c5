"""One way in: the dashboard, REST and the command line read a write's input the same way
(a key's expiry, a new provider's name), and a service's ValidationError reaches a REST
client as a 400 naming the field, from every app's endpoints."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from billing.budgets import budget_save
from core.text import NAME_MESSAGE
from gateway import services
from gateway.models import ApiKey, Deployment, ProviderConnection
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs import services as org_services
from orgs.models import AuditLog, Team
from orgs.rest_base import exception_handler

pytestmark = pytest.mark.django_db

YEAR = timezone.now().year + 2  # always in the future, whenever the suite runs


# ------------------------------------------------------------------------------ key expiry
def _dashboard(client, org, text):
    response = client.post(reverse("keys", args=[org.slug]), {"name": "k", "expires_at": text})
    # Made: a redirect to the page that shows its secret once (post/redirect/get).
    if response.status_code != 302:
        raise ValidationError([str(m) for m in response.context["messages"]])


def _rest(client, org, text):
    response = client.post(
        "/api/gateway/keys", {"name": "k", "expires_at": text}, content_type="application/json"
    )
    if response.status_code != 201:
        raise ValidationError(str(response.json()))
    # What REST answers is what it stored.
    assert datetime.fromisoformat(response.json()["expires_at"]) == ApiKey.objects.get().expires_at


def _command(client, org, text):
    try:
        call_command(
            "create_api_key",
            "--org",
            org.slug,
            "--name",
            "k",
            "--expires",
            text,
            stdout=StringIO(),
            stderr=StringIO(),
        )
    except CommandError as exc:
        raise ValidationError(str(exc)) from exc


WAYS_IN = {"dashboard": _dashboard, "rest": _rest, "command": _command}


@pytest.mark.parametrize("way_in", list(WAYS_IN))
@pytest.mark.parametrize(
    "text,stored",
    [
        # A date alone is the END of that day, UTC: the key works through the 31st.
        (f"{YEAR}-01-31", datetime(YEAR, 1, 31, 23, 59, 59, tzinfo=UTC)),
        (f" {YEAR}-12-31 ", datetime(YEAR, 12, 31, 23, 59, 59, tzinfo=UTC)),
        # A time with an offset is that instant.
        (f"{YEAR}-01-31T18:00:00+02:00", datetime(YEAR, 1, 31, 16, 0, tzinfo=UTC)),
        (f"{YEAR}-01-31T18:00:00-0530", datetime(YEAR, 1, 31, 23, 30, tzinfo=UTC)),
        (f"{YEAR}-01-31T18:00Z", datetime(YEAR, 1, 31, 18, 0, tzinfo=UTC)),
        # A time without one is UTC.
        (f"{YEAR}-01-31 18:00:30", datetime(YEAR, 1, 31, 18, 0, 30, tzinfo=UTC)),
        (f"{YEAR}-01-31T18:00:30.250", datetime(YEAR, 1, 31, 18, 0, 30, 250000, tzinfo=UTC)),
    ],
)
def test_an_expiry_means_the_same_instant_from_every_way_in(
    bob_client, org_a, way_in, text, stored
):
    WAYS_IN[way_in](bob_client, org_a, text)
    key = ApiKey.objects.get(name="k")
    assert key.expires_at == stored
    assert AuditLog.objects.get(action="api_key.create").changes["after"]["expires_at"] == (
        stored.isoformat()
    )


YESTERDAY = (timezone.now() - timedelta(days=1)).date().isoformat()


@pytest.mark.parametrize("way_in", list(WAYS_IN))
@pytest.mark.parametrize(
    "text,says",
    [
        ("soon", "must be a date like"),
        (f"{YEAR}-02-30", "must be a date like"),  # no such day
        (f"{YEAR}-01-31T25:00", "must be a date like"),
        ("٢٠٣٠-01-31", "must be a date like"),  # digits are ASCII only
        (f"{YEAR}0131", "must be a date like"),  # ISO basic format: not one of the two forms
        (f"{YEAR}-01-31\x00", "must be a date like"),
        (f"{YEAR}-01-31" + "9" * 10_000, "must be a date like"),
        ("9999-12-31T23:59:59-05:00", "must be a date like"),  # past year 9999 in UTC
        (YESTERDAY, "in the future"),  # its end is past too
        ("2001-01-01T00:00:00+00:00", "in the future"),
    ],
)
def test_a_bad_or_past_expiry_is_refused_by_every_way_in(bob_client, org_a, way_in, text, says):
    with pytest.raises(ValidationError) as refused:
        WAYS_IN[way_in](bob_client, org_a, text)
    assert says in str(refused.value)
    assert "9" * 100 not in str(refused.value)  # the text is not echoed back
    assert not ApiKey.objects.exists()
    assert not AuditLog.objects.filter(action__startswith="api_key.").exists()


def test_the_rest_api_names_the_expiry_field(bob_client):
    for bad in ("soon", 20270131, [f"{YEAR}-01-31"], {"date": f"{YEAR}-01-31"}, True, YESTERDAY):
        response = bob_client.post(
            "/api/gateway/keys", {"name": "k", "expires_at": bad}, content_type="application/json"
        )
        assert response.status_code == 400 and list(response.json()) == ["expires_at"], bad
    response = bob_client.post(
        "/api/gateway/keys", {"name": "k", "expires_at": None}, content_type="application/json"
    )
    assert response.status_code == 201 and response.json()["expires_at"] is None
    assert not ApiKey.objects.exclude(expires_at=None).exists()


def test_the_service_reads_dates_and_datetimes_by_the_same_rule(org_a):
    day = datetime(YEAR, 3, 1).date()
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="a", expires_at=day)
    assert key.expires_at == datetime(YEAR, 3, 1, 23, 59, 59, tzinfo=UTC)
    naive = datetime(YEAR, 3, 1, 12, 0)
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="b", expires_at=naive)
    assert key.expires_at == datetime(YEAR, 3, 1, 12, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------ provider names
def _provider_via_dashboard(client, org, *, name, kind, **fields):
    # The form has a fieldset per kind; its fields are named "<kind>-<field>".
    posted = {"name": name, "kind": kind, **{f"{kind}-{k}": v for k, v in fields.items()}}
    response = client.post(reverse("providers", args=[org.slug]), posted, follow=True)
    return [str(m) for m in response.context["messages"]]


def _provider_via_rest(client, org, api_key, **fields):
    response = client.post(
        "/api/gateway/providers",
        {**fields, "credentials": {"api_key": api_key}},
        content_type="application/json",
    )
    return response.status_code, response.json()


def test_the_dashboard_refuses_a_new_provider_under_an_existing_name(alice_client, org_a):
    first = _provider_via_dashboard(
        alice_client, org_a, name="oai", kind="openai", api_key="sk-first-secret"
    )
    assert first == ["Provider oai saved."]
    again = _provider_via_dashboard(
        alice_client,
        org_a,
        name="oai",
        kind="openai_compatible",
        api_base="https://llm.example.com/v1",
        api_key="sk-second-secret",
    )
    assert again == [f"Name: {services.PROVIDER_NAME_TAKEN}"]
    provider = ProviderConnection.objects.get()
    assert (provider.kind, provider.api_base) == ("openai", "")
    assert provider.get_credentials() == {"api_key": "sk-first-secret"}
    provider_rows = AuditLog.objects.filter(action__startswith="provider.")
    assert list(provider_rows.values_list("action", flat=True)) == ["provider.create"]


def test_rest_and_the_dashboard_refuse_a_name_clash_the_same_way(alice_client, org_a, org_b):
    services.provider_save(
        actor=ACTOR, org=org_a, name="oai", kind="openai", credentials={"api_key": "sk-a"}
    )
    status, body = _provider_via_rest(alice_client, org_a, "sk-b", name="oai", kind="openai")
    assert (status, body) == (400, {"name": [services.PROVIDER_NAME_TAKEN]})
    shown = _provider_via_dashboard(alice_client, org_a, name="oai", kind="openai", api_key="x")
    assert shown == [f"Name: {services.PROVIDER_NAME_TAKEN}"]
    provider = ProviderConnection.objects.get(org=org_a)
    assert provider.get_credentials() == {"api_key": "sk-a"}
    assert not AuditLog.objects.filter(action="provider.update").exists()
    # Changing a provider is an explicit edit of that provider.
    response = alice_client.patch(
        f"/api/gateway/providers/{provider.id}",
        {"credentials": {"api_key": "sk-b"}},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert ProviderConnection.objects.get(org=org_a).get_credentials() == {"api_key": "sk-b"}
    # Names are per organization.
    other = services.provider_create(actor=ACTOR, org=org_b, name="oai", kind="mock")
    assert other.org == org_b and ProviderConnection.objects.filter(name="oai").count() == 2


# ------------------------------------------------------------------------------ REST errors
@pytest.mark.parametrize(
    "raised,body",
    [
        (ValidationError("Not now."), {"detail": ["Not now."]}),
        (ValidationError(["One.", "Two."]), {"detail": ["One.", "Two."]}),
        (ValidationError({"name": "Taken."}), {"name": ["Taken."]}),
        (
            ValidationError({"a": ["One."], "b": [ValidationError("Two.")]}),
            {"a": ["One."], "b": ["Two."]},
        ),
    ],
)
def test_the_rest_handler_answers_a_django_validation_error_with_400(raised, body):
    response = exception_handler(raised, {})
    assert response.status_code == 400 and response.data == body


def test_gateway_endpoints_answer_a_service_refusal_with_400(bob_client, org_a):
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    response = bob_client.post(
        "/api/gateway/keys", {"name": "k", "expires_at": past}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json() == {"expires_at": ["The expiry must be in the future."]}
    response = bob_client.post(
        "/api/gateway/keys", {"name": "a\nb"}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json() == {"name": [NAME_MESSAGE]}
    assert not ApiKey.objects.exists()


def test_governance_endpoints_answer_a_service_refusal_with_400(alice_client, org_a):
    policy = governance_services.routing_policy_save(
        actor=ACTOR, org=org_a, name="ha", models=["a"]
    )
    key, _ = services.api_key_create(actor=ACTOR, org=org_a, name="rt", routing_policy=policy)
    response = alice_client.delete(f"/api/gateway/routing-policies/{policy.id}")
    assert response.status_code == 400
    assert response.json() == {
        "detail": [
            f"Routing policy ha is used by the rt- key(s) rt ({key.masked}): "
            "revoke them first, or disable the policy instead."
        ]
    }
    assert RoutingPolicy.objects.filter(pk=policy.pk).exists()


def test_orgs_endpoints_answer_a_service_refusal_with_400(alice_client, org_a):
    team = org_services.team_create(actor=ACTOR, org=org_a, name="Platform")
    budget_save(actor=ACTOR, org=org_a, amount_usd="10", scope="team", team=team)
    response = alice_client.delete(f"/api/gateway/teams/{team.id}")
    assert response.status_code == 400
    assert response.json() == {
        "detail": ["Team Platform still has budgets; delete or move its budgets first."]
    }
    assert Team.objects.filter(pk=team.pk).exists()
    response = alice_client.post(
        "/api/gateway/teams", {"name": "a\tb"}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json() == {"name": [NAME_MESSAGE]}


def test_billing_endpoints_answer_a_selector_refusal_with_400(alice_client):
    for path in ("/api/gateway/logs", "/api/gateway/usage", "/api/gateway/analytics"):
        response = alice_client.get(path, {"range": "forever"})
        assert response.status_code == 400 and list(response.json()) == ["range"], path


@pytest.mark.parametrize(
    "path, field, body",
    [
        ("/api/gateway/keys", "routing_policy", {"name": "k"}),
        ("/api/gateway/deployments", "provider", {"model_name": "m", "upstream_model": "u"}),
    ],
)
@pytest.mark.parametrize("name", ["a\x00b", "\x00"])
def test_a_row_named_with_a_nul_is_a_400_naming_the_field(alice_client, path, field, body, name):
    """REST fields that pick a row by its name refuse a NUL before the lookup (on
    PostgreSQL the lookup itself failed, a 500), and nothing is written."""
    response = alice_client.post(path, {**body, field: name}, content_type="application/json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not ApiKey.objects.exists() and not Deployment.objects.exists()
