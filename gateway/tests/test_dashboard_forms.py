"""The dashboard's write pages (Keys, Providers' deployments, Policies, Routing, Budgets)
read their POST bodies through Django forms: a bad value of any kind (empty where a value
is needed, not a number, negative, huge, NUL, non-ASCII digits, too long, another org's
row) is a message on the page naming the field, and nothing is written. Never a 500."""

import pytest
from django.urls import reverse

from billing.models import Budget
from gateway import services
from gateway.models import ApiKey, Deployment
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from governance.models import Policy, RoutingPolicy
from orgs import services as org_services
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db

HUGE = "9" * 30
NUL = "a\x00b"
NOT_NUMBERS = ["abc", "٣", "1.5", "1e3", HUGE, NUL, "-1"]
NOT_IDS = ["abc", "٣", "-1", "0", HUGE, NUL, "{other}"]


@pytest.fixture
def rows(org_a, org_b):
    """A provider, team, key and routing policy in org_a, and the same in org_b (whose ids
    org_a's forms must refuse as any unknown id)."""

    def make(org):
        return {
            "provider": services.provider_save(actor=ACTOR, org=org, name="p", kind="mock").id,
            "team": org_services.team_create(actor=ACTOR, org=org, name="T").id,
            "key": services.api_key_create(actor=ACTOR, org=org, name="k")[0].id,
            "routing_policy": governance_services.routing_policy_save(
                actor=ACTOR, org=org, name="rp", models=["a"]
            ).id,
        }

    return {"mine": make(org_a), "other": make(org_b)}


PAGES = {
    # page: (URL name, a valid body, the rows it writes)
    "keys": ("keys", {"name": "new"}, lambda: ApiKey.objects.filter(name="new")),
    "deployment": (
        "deployment_create",
        {"provider": "{provider}", "model_name": "chat", "upstream_model": "m"},
        lambda: Deployment.objects.all(),
    ),
    "policies": ("policies", {"allowed_models": "chat"}, lambda: Policy.objects.all()),
    "routing": (
        "routing",
        {"name": "new", "models": "a, b"},
        lambda: RoutingPolicy.objects.filter(name="new"),
    ),
    "budgets": ("budget_create", {"amount_usd": "5"}, lambda: Budget.objects.all()),
}


def _cases():
    cases = []

    def add(page, label, values, **extra):
        for value in values:
            cases.append(pytest.param(page, label, value, extra, id=f"{page}-{label}-{value!r}"))

    for label, field in (("Requests per minute", "rpm_limit"), ("Tokens per minute", "tpm_limit")):
        add("keys", label, ["0", *NOT_NUMBERS], field=field)
    add("keys", "Team", NOT_IDS, field="team")
    add("keys", "Routing policy", NOT_IDS, field="routing_policy")
    add("keys", "Allowed models", [NUL, "a, " + "x" * 201], field="allowed_models")
    add("keys", "Allowed providers", [NUL, "x" * 101], field="allowed_providers")
    add("keys", "Expires on", ["soon", HUGE, NUL, "٢٠٣٠-01-01"], field="expires_at")
    # Refused by api_key_create, whose messages the Keys page shows as they are.
    add("keys", "Expires on", ["2001-01-01"], field="expires_at", label_optional=True)
    add("keys", "Name", ["a\nb", NUL], field="name", label_optional=True)
    add("deployment", "Provider", ["", *NOT_IDS], field="provider")
    add("deployment", "Model name", ["", " ", NUL, "x" * 201], field="model_name")
    add("deployment", "Upstream model", ["", NUL], field="upstream_model")
    add("deployment", "Region", [NUL, "x" * 51], field="region")
    add(
        "policies",
        "Default max tokens estimate",
        ["0", *NOT_NUMBERS],
        field="default_max_tokens_estimate",
    )
    add(
        "policies",
        "Monthly spend cap",
        ["abc", "٣", "-1", HUGE, NUL, "NaN"],
        field="monthly_spend_cap_usd",
    )
    for field, label in (
        ("denied_models", "Denied models"),
        ("allowed_regions", "Allowed regions"),
    ):
        add("policies", label, [NUL, "x" * 201], field=field)
    add("routing", "Name", ["", NUL, "x" * 64, "not a slug"], field="name")
    add("routing", "Models", ["", " , ", NUL], field="models")
    add("routing", "Strategy", [NUL], field="strategy")
    add("budgets", "Amount", ["", "abc", "٣", "NaN", HUGE, NUL, "-5", "10.123"], field="amount_usd")
    add(
        "budgets",
        "Alert thresholds",
        ["0", "1001", "50, abc", "50, ٣", HUGE, NUL],
        field="thresholds",
    )
    add("budgets", "Team", ["", *NOT_IDS], field="team", scope="team")
    add("budgets", "Key", ["", *NOT_IDS], field="key", scope="key")
    add("budgets", "For", ["everyone", NUL], field="scope")
    add("budgets", "Period", ["yearly", NUL], field="period")
    add("budgets", "Webhook URL", [NUL, "not a url", "http://127.0.0.1/hook"], field="webhook_url")
    return cases


@pytest.mark.parametrize("page,label,value,extra", _cases())
def test_a_bad_value_is_a_message_naming_the_field_and_nothing_is_written(
    alice_client, org_a, rows, page, label, value, extra
):
    url_name, body, written = PAGES[page]
    extra = dict(extra)
    field, label_optional = extra.pop("field"), extra.pop("label_optional", False)
    ids = {name: str(pk) for name, pk in rows["mine"].items()}
    body = {name: text.format(**ids) for name, text in body.items()}
    body.update(extra)
    body[field] = value.format(other=rows["other"][field]) if value == "{other}" else value
    before = AuditLog.objects.count()

    response = alice_client.post(reverse(url_name, args=[org_a.slug]), body, follow=True)

    assert response.status_code == 400  # a refused form: the page again, not a 200
    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert len(shown) == 1 and shown[0][0] == "error", shown
    if not label_optional:  # a name's control characters have one message everywhere
        assert shown[0][1].startswith(f"{label}: "), shown
    assert "\x00" not in shown[0][1]
    assert not written().exists() and AuditLog.objects.count() == before


@pytest.mark.parametrize("page", list(PAGES))
def test_the_valid_body_of_each_page_writes(alice_client, org_a, rows, page):
    """The bodies the refusals start from are good ones: only the bad value is refused."""
    url_name, body, written = PAGES[page]
    ids = {name: str(pk) for name, pk in rows["mine"].items()}
    body = {name: text.format(**ids) for name, text in body.items()}
    response = alice_client.post(reverse(url_name, args=[org_a.slug]), body, follow=True)
    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert written().count() == 1 and [level for level, _ in shown] in ([], ["success"]), shown


def test_an_org_row_is_chosen_by_its_id(alice_client, org_a, rows):
    mine = rows["mine"]
    alice_client.post(
        reverse("keys", args=[org_a.slug]),
        {"name": "new", "team": mine["team"], "routing_policy": mine["routing_policy"]},
    )
    key = ApiKey.objects.get(name="new")
    assert (key.team_id, key.routing_policy_id) == (mine["team"], mine["routing_policy"])
    alice_client.post(
        reverse("budget_create", args=[org_a.slug]),
        {"amount_usd": "5", "scope": "key", "key": mine["key"], "thresholds": "90, 50, 90"},
    )
    budget = Budget.objects.get()
    assert budget.key_id == mine["key"] and budget.levels == [50, 90]
