"""The Routing page summarises every smart setting that changes routing, for each policy and
for the org default, however it was set (REST, the config file, the form): the classifier,
the thresholds or aggressiveness, the A/B test as the percent the form asks for with its
arm, the keyword categories replaced (not those left as built in) and `within`. Where a form
has no field for a setting, the page says where it is set, and a save from the form keeps
it exactly (an A/B share the whole-percent box cannot show included)."""

from io import StringIO

import pytest
from django.core.management import call_command

from gateway.dataplane.smart import DEFAULT_KEYWORDS
from gateway.models import GatewayConfig
from gateway.views import keywords_changed, percent
from governance.models import RoutingPolicy

pytestmark = pytest.mark.django_db
JSON = "application/json"
API = "/api/gateway/routing-policies"


def _page(client, org):
    response = client.get(f"/o/{org.slug}/routing/")
    assert response.status_code == 200
    return response.content.decode()


def _org_summary(html):
    start = html.index('id="org-smart"')
    return html[start : html.index("</p>", start)]


def _row(html, name):
    start = html.index(f"<bdi>{name}</bdi></td>")
    return html[start : html.index("</tr>", start)]


def test_the_org_default_set_over_rest_shows_every_setting(alice_client, org_a):
    """The audit's case: only "rules, aggressiveness 0.3" was shown."""
    response = alice_client.put(
        "/api/gateway/config",
        {
            "smart_tiers": ["demo-chat-mini", "demo-chat"],
            "smart": {
                "thresholds": [0.2],
                "ab": {"share": 0.3, "classifier": "strong"},
                "keywords": {"code": ["kotlin"]},
                "within": "round_robin",
            },
        },
        content_type=JSON,
    )
    assert response.status_code == 200, response.content
    summary = _org_summary(_page(alice_client, org_a))
    assert (
        "(rules, thresholds 0.2, A/B 30 % → strong, own keywords for code, within round_robin)."
        in summary
    ), summary


def test_the_org_form_says_where_its_missing_settings_are_set_and_keeps_them(alice_client, org_a):
    stored = {
        "aggressiveness": 0.3,
        "ab": {"share": 0.125, "classifier": "strong"},
        "keywords": {"math": ["integral"], "code": list(DEFAULT_KEYWORDS["code"])},
        "within": "cost_optimized",
    }
    put = alice_client.put(
        "/api/gateway/config",
        {"smart_tiers": ["lite", "pro"], "smart": stored},
        content_type=JSON,
    )
    assert put.status_code == 200, put.content
    html = _page(alice_client, org_a)
    hint = html[html.index('id="org-smart-elsewhere"') :]
    hint = hint[: hint.index("</p>")]
    assert "PUT /api/gateway/config" in hint and "gateway: smart:" in hint
    # the built-in code list written out is no change: only math is named
    assert "set now: A/B 12.5 % → strong, own keywords for math, within cost_optimized" in hint
    saved = alice_client.post(
        f"/o/{org_a.slug}/routing/",
        {
            "form": "org_smart",
            "smart_tiers": "lite, pro",
            "auto_model_alias": "auto",
            "classifier": "rules",
            "aggressiveness": "60",
            "thresholds": "",
        },
    )
    assert saved.status_code == 302
    # (the classifier the form always sends is the default, left out as it was)
    assert GatewayConfig.objects.get(org=org_a).smart == {**stored, "aggressiveness": 0.6}


def test_a_policy_row_shows_the_a_b_share_as_a_percent_and_its_other_settings(alice_client, org_a):
    created = alice_client.post(
        API,
        {
            "name": "saver",
            "strategy": "smart",
            "models": ["lite", "mid", "pro"],
            "smart": {
                "classifier": "rules",
                "aggressiveness": 0.4,
                "ab": {"share": 0.25, "classifier": "strong"},
                "keywords": {"reasoning": ["prove"], "simple": ["HI", " hi "]},
                "within": "least_busy",
            },
        },
        content_type=JSON,
    )
    assert created.status_code == 201, created.content
    row = _row(_page(alice_client, org_a), "saver")
    assert (
        "rules, aggressiveness 0.4, A/B 25 % → strong, own keywords for reasoning, simple, "
        "within least_busy</td>"
    ) in row, row
    assert "A/B 0.25" not in row


def test_a_policy_from_the_config_file_with_a_b_off_says_so(tmp_path, alice_client, org_a):
    path = tmp_path / "bonito.yaml"
    path.write_text(
        f"orgs:\n  - slug: {org_a.slug}\n    name: Acme\n"
        "    routing_policies:\n"
        "      - {name: saver, strategy: smart, models: [lite, pro],"
        " smart: {thresholds: [0.3], ab: {share: 0, classifier: strong}}}\n"
    )
    call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())
    row = _row(_page(alice_client, org_a), "saver")
    assert "rules, thresholds 0.3, A/B off (0 % → strong)</td>" in row, row


def test_the_edit_page_says_where_keywords_and_within_are_set_and_keeps_an_exact_share(
    alice_client, org_a
):
    spec = {
        "classifier": "rules",
        "thresholds": [0.3],
        "ab": {"share": 0.125, "classifier": "strong"},
        "keywords": {"code": ["kotlin"]},
        "within": "round_robin",
    }
    created = alice_client.post(
        API,
        {"name": "saver", "strategy": "smart", "models": ["lite", "pro"], "smart": spec},
        content_type=JSON,
    )
    pk = created.json()["id"]
    edit = alice_client.get(f"/o/{org_a.slug}/routing/{pk}/").content.decode()
    hint = edit[edit.index('id="smart-elsewhere"') :]
    hint = hint[: hint.index("</p>")]
    assert f"PATCH /api/gateway/routing-policies/{pk}" in hint
    assert "set now: own keywords for code, within round_robin" in hint
    assert 'name="ab_share" inputmode="numeric" value="12"' in edit  # a whole percent
    # Saved for another field, the A/B boxes sent as shown: the share stays 0.125.
    saved = alice_client.post(
        f"/o/{org_a.slug}/routing/{pk}/",
        {
            "strategy": "smart",
            "models": "lite, pro",
            "classifier": "rules",
            "aggressiveness": "50",
            "thresholds": "0.35",
            "ab_share": "12",
            "ab_classifier": "strong",
            "is_active": "on",
        },
    )
    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert RoutingPolicy.objects.get(pk=pk).smart == {**spec, "thresholds": [0.35]}
    # A share typed anew is the share typed.
    retyped = alice_client.post(
        f"/o/{org_a.slug}/routing/{pk}/",
        {
            "strategy": "smart",
            "models": "lite, pro",
            "classifier": "rules",
            "thresholds": "0.35",
            "ab_share": "20",
            "ab_classifier": "strong",
            "is_active": "on",
        },
    )
    assert retyped.status_code == 302
    assert RoutingPolicy.objects.get(pk=pk).smart["ab"] == {"share": 0.2, "classifier": "strong"}


@pytest.mark.parametrize(
    ("share", "shown"),
    [(0.25, "25"), (0.125, "12.5"), (0.07, "7"), (1, "100"), (0.00002, "0.002")],
)
def test_percent_is_a_plain_decimal(share, shown):
    assert percent(share) == shown


def test_keywords_changed_names_only_the_replaced_categories():
    assert keywords_changed(None) == []
    assert keywords_changed({"math": []}) == []  # empty: the built-in list routes
    built_in = list(reversed(DEFAULT_KEYWORDS["math"]))
    assert keywords_changed({"math": [w.upper() for w in built_in]}) == []
    assert keywords_changed({"simple": ["hi"], "code": ["kotlin"]}) == ["code", "simple"]
