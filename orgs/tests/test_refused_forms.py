"""A refused dashboard form answers 400 (the page again, the error shown, what was typed
kept), whether it creates or edits: a 200 told scripts, tests and monitoring that the
save worked. And the URL a refused form leaves the browser on answers a GET (a reload, or
Enter in the address bar): the page holding that form, never a 405.

Every URL of the dashboard's URLconf is posted refused bodies (empty, and every field
holding a bidi override), with real objects for its ids, so a new form is covered as it is
added."""

import pytest
from django.contrib.messages import constants
from django.forms import BaseForm
from django.urls import URLPattern, reverse

from billing.budgets import budget_save
from bonito.urls import DASHBOARD_APPS
from gateway import services
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from orgs import services as org_services
from orgs.models import Membership

pytestmark = pytest.mark.django_db
SPOOF = "x\u202e"
# Every field a dashboard form has that takes text, each refused.
FIELDS = (
    "name",
    "description",
    "email",
    "model_name",
    "upstream_model",
    "region",
    "provider",
    "kind",
    "api_base",
    "models",
    "smart_tiers",
    "auto_model_alias",
    "allowed_models",
    "denied_models",
    "allowed_providers",
    "denied_providers",
    "allowed_regions",
    "cors_origins",
    "amount_usd",
    "thresholds",
    "webhook_url",
    "grace_seconds",
    "strategy",
    "role",
    "team",
    "scope",
    "period",
    "policy",
    "idp_entity_id",
    "idp_sso_url",
)
BODIES = [
    {},
    dict.fromkeys(FIELDS, SPOOF),
    {**dict.fromkeys(FIELDS, SPOOF), "form": "org_smart", "action": "alerts"},
]


@pytest.fixture
def ids(org_a, alice, bob):
    provider = services.provider_create(actor=ACTOR, org=org_a, name="p", kind="mock")
    deployment = services.deployment_create(
        actor=ACTOR, org=org_a, model_name="chat", provider=provider, upstream_model="m"
    )
    team = org_services.team_create(actor=ACTOR, org=org_a, name="Platform")
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="backend")
    policy = governance_services.routing_policy_create(
        actor=ACTOR, org=org_a, name="tiers", strategy="failover", models=["chat"]
    )
    budget = budget_save(actor=ACTOR, org=org_a, amount_usd="10")
    invitation, _raw = org_services.invitation_create(
        actor=ACTOR,
        org=org_a,
        email="new@acme.test",
        role="member",
        team=None,
        base_url="http://t/",
    )
    token, _raw = org_services.pat_create(actor=ACTOR, user=alice, org=org_a, name="cli")
    return {
        "provider_id": provider.pk,
        "deployment_id": deployment.pk,
        "team_id": team.pk,
        "key_id": key.pk,
        "policy_id": policy.pk,
        "budget_id": budget.pk,
        "invitation_id": invitation.pk,
        "token_id": token.pk,
        "membership_id": Membership.objects.get(user=bob).pk,
        "record_id": "0",
        "notice_id": "0",
    }


def _urls():
    for app in DASHBOARD_APPS:
        for pattern in app.org_urlpatterns:
            assert isinstance(pattern, URLPattern)
            yield pattern.name, list(pattern.pattern.converters)


URLS = sorted(_urls())


def test_the_whole_urlconf_is_covered():
    assert len(URLS) > 40


def _refusal(response) -> str | None:
    """The error a rendered page shows (a message, a form's, the page's own), or None."""
    context = response.context
    if context is None:
        return None
    shown = [str(m) for m in context.get("messages", []) if m.level == constants.ERROR]
    contexts = context if isinstance(context, list) else [context]
    for one in contexts:
        for key, value in one.flatten().items():
            if isinstance(value, BaseForm) and value.is_bound and value.errors:
                shown.append(str(value.errors))
            elif key == "error" and value and isinstance(value, str):  # the Playground's
                shown.append(value)
    return " ".join(shown) or None


@pytest.mark.parametrize(("name", "params"), URLS, ids=[u[0] for u in URLS])
def test_a_refused_form_is_a_400_and_its_url_answers_a_get(alice_client, org_a, ids, name, params):
    url = reverse(name, args=[org_a.slug, *(ids[p] for p in params)])
    for body in BODIES:
        response = alice_client.post(url, body)
        if response.status_code in (302, 404, 405) or "html" not in response.get(
            "Content-Type", ""
        ):
            continue  # saved (or nothing to save) and redirected, or not a form
        refusal = _refusal(response)
        assert response.status_code != 200 or refusal is None, (name, body, refusal)
        if response.status_code in (400, 429):
            assert refusal, (name, body)  # the page says why
            # The browser is now on this URL: a reload (GET) shows the form's page.
            again = alice_client.get(url)
            assert again.status_code in (200, 302), (name, again.status_code)
            if again.status_code == 302:
                assert alice_client.get(again["Location"]).status_code == 200, name


def test_a_budget_s_edit_url_shows_its_form_as_stored(alice_client, org_a, ids):
    url = reverse("budget_edit", args=[org_a.slug, ids["budget_id"]])
    refused = alice_client.post(url, {"scope": "org", "period": "monthly", "amount_usd": "-1"})
    assert refused.status_code == 400
    assert refused.context["values"]["amount_usd"] == "-1"  # what was typed, kept
    page = alice_client.get(url)  # a reload after the refusal
    assert page.status_code == 200 and page.context["editing"].pk == ids["budget_id"]
    assert page.context["values"]["amount_usd"] == "10.00"  # as stored
    assert f'action="{url}"' in page.content.decode()


CREATES = [u for u in URLS if u[0].endswith("_create")]


@pytest.mark.parametrize(("name", "params"), CREATES, ids=[u[0] for u in CREATES])
def test_a_refused_create_shows_its_form_again_with_the_name_as_typed(
    alice_client, org_a, ids, name, params
):
    """Every create form answers a refusal with its page (400, the error shown, what was
    typed kept), not a redirect that loses what was typed (the token's did)."""
    url = reverse(name, args=[org_a.slug, *(ids[p] for p in params)])
    typed = "ci pipeline \u202e"  # a name with a bidi override: refused everywhere
    response = alice_client.post(url, dict.fromkeys(FIELDS, typed))
    assert response.status_code == 400, (name, response.status_code)
    assert _refusal(response), name
    assert f'value="{typed}"' in response.content.decode(), name


def test_the_whole_urlconf_has_create_forms():
    assert {"team_create", "token_create", "deployment_create", "budget_create"} <= {
        u[0] for u in CREATES
    }
