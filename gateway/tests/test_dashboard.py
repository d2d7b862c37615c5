"""Dashboard pages for keys, usage, logs, providers, policies, routing and tokens."""

import csv
import html
import io
import uuid
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageRecord
from gateway import services
from gateway.models import ApiKey, ProviderConnection
from gateway.tests.conftest import ACTOR, org_models, refresh_snapshot
from governance.models import Policy, RoutingPolicy
from orgs import services as org_services
from orgs.models import PersonalAccessToken

pytestmark = pytest.mark.django_db


def _usage(org, key=None, **fields):
    defaults = {
        "model_requested": "chat-small",
        "model_used": "chat-small",
        "provider": "fake",
        "status": "success",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": Decimal("0.002"),
        "latency_ms": 120,
    }
    return UsageRecord.objects.create(
        id=uuid.uuid4(), org=org, key=key, created_at=timezone.now(), **{**defaults, **fields}
    )


def test_a_created_key_is_shown_once(bob_client, org_a):
    org_models(org_a, "a", "b")
    response = bob_client.post(
        reverse("keys", args=[org_a.slug]),
        {"name": "web", "allowed_models": "a, b", "rpm_limit": "20"},
    )
    key = ApiKey.objects.get(name="web")
    # post/redirect/get: the secret is on the one GET after, never on a page a reload re-posts
    assert response.status_code == 302 and str(key.id) in response["Location"]
    shown = bob_client.get(response["Location"])
    raw = shown.context["created"]["raw"]
    assert raw.encode() in shown.content and b"shown only this once" in shown.content
    assert shown["Cache-Control"] == "no-store"
    assert key.matches(raw) and key.allowed_models == ["a", "b"] and key.rpm_limit == 20
    reloaded = bob_client.get(response["Location"])
    assert raw.encode() not in reloaded.content and b"already shown" in reloaded.content
    assert ApiKey.objects.count() == 1
    again = bob_client.get(reverse("keys", args=[org_a.slug]))
    assert raw.encode() not in again.content and key.masked.encode() in again.content


def test_two_keys_created_before_either_is_shown_each_show_their_own_once(bob_client, org_a):
    url = reverse("keys", args=[org_a.slug])
    first, second = (bob_client.post(url, {"name": name}) for name in ("one", "two"))
    for response, name in ((second, "two"), (first, "one")):
        raw = bob_client.get(response["Location"]).context["created"]["raw"]
        assert ApiKey.objects.get(name=name).matches(raw)
        assert raw not in str(dict(bob_client.session))  # gone from the stored session
    assert ApiKey.objects.count() == 2


def test_viewers_see_keys_but_cannot_create(vera_client, org_a):
    assert b"Create a key" not in vera_client.get(reverse("keys", args=[org_a.slug])).content
    assert vera_client.post(reverse("keys", args=[org_a.slug]), {"name": "x"}).status_code == 403
    assert not ApiKey.objects.exists()


def test_revoking_a_key(alice_client, org_a):
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="old")
    response = alice_client.post(reverse("key_revoke", args=[org_a.slug, key.id]), follow=True)
    assert b"revoked" in response.content
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_charlie_cannot_revoke_alices_key(charlie_client, org_a, org_b):
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="alice's")
    assert charlie_client.post(reverse("key_revoke", args=[org_b.slug, key.id])).status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_logs_never_show_a_blank_cell(alice_client, org_a):
    _usage(
        org_a,
        model_used="",
        provider="",
        status="rejected",
        http_status=403,
        error_type="model_not_permitted",
    )
    content = alice_client.get(reverse("logs", args=[org_a.slug])).content.decode()
    assert (
        "— (not routed)" in content and "— (no key)" in content and "model_not_permitted" in content
    )
    assert "<td></td>" not in content


def test_log_detail_and_charlies_404(alice_client, charlie_client, org_a, org_b):
    record = _usage(org_a, request_id="req_abc")
    detail = alice_client.get(reverse("log_detail", args=[org_a.slug, record.id]))
    assert (
        detail.status_code == 200
        and b"req_abc" in detail.content
        and b"n/a (not streamed)" in detail.content
    )
    assert (
        charlie_client.get(reverse("log_detail", args=[org_b.slug, record.id])).status_code == 404
    )
    assert (
        alice_client.get(reverse("log_detail", args=[org_a.slug, "not-a-uuid"])).status_code == 404
    )


def test_usage_page_and_csv_export(alice_client, org_a):
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="app")
    for _ in range(3):
        _usage(org_a, key)
    page = alice_client.get(reverse("usage", args=[org_a.slug]) + "?range=24h")
    assert page.status_code == 200
    assert page.context["a"]["totals"]["requests"] == 3
    assert b"usage-series" in page.content and b"chart-4.6.1" in page.content
    response = alice_client.get(
        reverse("usage_csv", args=[org_a.slug]) + "?range=24h&model=chat-small"
    )
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["created_at", "request_id", "endpoint"] and len(rows) == 4
    assert rows[1][rows[0].index("key")] == "app"


def test_bad_filters_are_explained_on_the_page(alice_client, org_a):
    response = alice_client.get(reverse("logs", args=[org_a.slug]) + "?since=yesterday")
    assert response.status_code == 400 and b"is not a date" in response.content


def test_overview_snippets_and_the_zero_deployment_warning(alice_client, org_a):
    services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="azure-east",
        kind="azure_openai",
        api_base="https://acme.openai.azure.test",
    )
    content = alice_client.get(reverse("overview", args=[org_a.slug])).content.decode()
    assert "azure-east</strong> has no active deployments" in content
    content = html.unescape(content)  # the snippets are text, escaped like any other
    assert "http://testserver/v1" in content and "BONITO_API_KEY" in content
    assert "from openai import OpenAI" in content and 'import OpenAI from "openai"' in content


def test_providers_page_never_shows_credentials(alice_client, org_a):
    response = alice_client.post(
        reverse("providers", args=[org_a.slug]),
        {"name": "oai", "kind": "openai", "openai-api_key": "sk-page-secret-value"},
        follow=True,
    )
    assert b"sk-page-secret-value" not in response.content and b"set (hidden)" in response.content
    provider = ProviderConnection.objects.get(name="oai")
    alice_client.post(
        reverse("deployment_create", args=[org_a.slug]),
        {"model_name": "chat", "provider": provider.id, "upstream_model": "gpt-4o-mini"},
    )
    assert provider.deployments.count() == 1


def test_members_cannot_change_providers_or_policy(bob_client, org_a):
    assert (
        bob_client.post(
            reverse("providers", args=[org_a.slug]), {"name": "x", "kind": "openai"}
        ).status_code
        == 403
    )
    assert (
        bob_client.post(reverse("policies", args=[org_a.slug]), {"allowed_models": "a"}).status_code
        == 403
    )


def test_admins_set_the_policy(alice_client, org_a):
    alice_client.post(
        reverse("policies", args=[org_a.slug]),
        {
            "allowed_models": "chat, embed",
            "monthly_spend_cap_usd": "75",
            "default_max_tokens_estimate": "512",
        },
    )
    policy = Policy.objects.get(org=org_a)
    assert policy.allowed_models == ["chat", "embed"] and policy.monthly_spend_cap_usd == 75


def test_routing_policies_and_rt_keys(alice_client, org_a):
    alice_client.post(
        reverse("routing", args=[org_a.slug]),
        {"name": "ha", "strategy": "failover", "models": "a, b"},
    )
    policy = RoutingPolicy.objects.get(name="ha")
    assert policy.model_names == ["a", "b"]
    response = alice_client.post(
        reverse("keys", args=[org_a.slug]),
        {"name": "router", "routing_policy": policy.id},
        follow=True,
    )
    assert response.context["created"]["raw"].startswith("rt-")
    assert b"routes via" in alice_client.get(reverse("keys", args=[org_a.slug])).content


def test_personal_access_tokens_from_settings(vera_client, org_a, bob):
    response = vera_client.post(reverse("token_create", args=[org_a.slug]), {"name": "cli"})
    token = PersonalAccessToken.objects.get(name="cli")
    shown_at = reverse("token_created", args=[org_a.slug, token.id])
    assert response.status_code == 302 and response["Location"] == shown_at
    assert b"pat-" not in response.content  # the POST's answer carries no secret
    response = vera_client.get(shown_at)
    raw = response.context["new_token"]
    assert raw.startswith("pat-") and raw.encode() in response.content
    assert response["Cache-Control"] == "no-store"
    assert raw not in token.token_hash
    # A reload shows it no more, and creates nothing.
    again = vera_client.get(shown_at)
    assert again.status_code == 200 and raw.encode() not in again.content
    assert "shown once" in " ".join(str(m) for m in again.context["messages"])
    assert PersonalAccessToken.objects.filter(name="cli").count() == 1
    # Another user's (or org's) token id shows nothing.
    other, _raw = org_services.pat_create(actor=ACTOR, user=bob, org=org_a, name="bob")
    assert vera_client.get(reverse("token_created", args=[org_a.slug, other.id])).status_code == 404
    vera_client.post(reverse("token_revoke", args=[org_a.slug, token.id]))
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_list_pages_make_a_fixed_number_of_queries(
    alice_client, org_a, django_assert_max_num_queries
):
    for i in range(6):
        key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name=f"k{i}")
        _usage(org_a, key)
    for name in ("keys", "logs", "usage", "providers", "overview"):
        with django_assert_max_num_queries(16):
            assert alice_client.get(reverse(name, args=[org_a.slug])).status_code == 200


@pytest.mark.django_db(transaction=True)  # the usage writer thread must see the org
def test_the_playground_sends_through_the_gateway_and_is_logged(alice_client, org_a, gw):
    mock = services.provider_save(actor=ACTOR, org=org_a, name="mock", kind="mock")
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        model_name="demo-chat",
        provider=mock,
        upstream_model="mock-chat",
        input_price_per_mtok=Decimal("2.5"),
        output_price_per_mtok=Decimal("10"),
    )
    # The deployment reaches the process's snapshot (the refresher's job within a second);
    # the Playground's own key, made on its first use, need not be in it.
    refresh_snapshot()
    response = alice_client.post(
        reverse("playground", args=[org_a.slug]), {"model": "demo-chat", "message": "ping"}
    )
    assert response.status_code == 200
    [result] = response.context["results"]
    assert result["ok"] and "You said: ping" in result["content"]
    assert result["usage"]["completion_tokens"] > 0 and result["provider"] == "mock"
    assert gw.sink.flush()
    row = UsageRecord.objects.get(org=org_a)
    assert row.key.name == "Playground (alice@acme.test)" and row.request_id == result["request_id"]
    # The cost shown is the one recorded: the data plane's, from the deployment's prices.
    usage = result["usage"]
    expected = (usage["prompt_tokens"] * 2.5 + usage["completion_tokens"] * 10) / 1e6
    assert result["cost"] == pytest.approx(expected) and float(row.cost) == pytest.approx(expected)
    # The Playground key is reused, never shown.
    alice_client.post(
        reverse("playground", args=[org_a.slug]), {"model": "demo-chat", "message": "again"}
    )
    assert ApiKey.objects.filter(name__startswith="Playground").count() == 1


def test_viewers_cannot_send_from_the_playground(vera_client, org_a):
    assert (
        vera_client.post(
            reverse("playground", args=[org_a.slug]), {"model": "x", "message": "hi"}
        ).status_code
        == 403
    )


def test_test_connection_reports_success_and_failure(alice_client, org_a, fake_upstream):
    from gateway.tests.fake_upstream import Behaviour

    good = services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="good",
        kind="openai_compatible",
        api_base=fake_upstream.url,
        credentials={"api_key": "sk-test-conn-secret"},
    )
    services.deployment_save(
        actor=ACTOR, org=org_a, model_name="chat", provider=good, upstream_model="gpt-4o-mini"
    )
    response = alice_client.post(reverse("provider_test", args=[org_a.slug, good.id]), follow=True)
    assert b"Test of good: gpt-4o-mini answered" in response.content
    assert fake_upstream.requests[-1]["body"]["max_tokens"] == 1
    fake_upstream.behaviours["gpt-4o-mini"] = Behaviour(status=401, error_message="bad key")
    response = alice_client.post(reverse("provider_test", args=[org_a.slug, good.id]), follow=True)
    assert (
        b"HTTP 401: bad key" in response.content and b"sk-test-conn-secret" not in response.content
    )
    empty = services.provider_save(actor=ACTOR, org=org_a, name="empty", kind="openai")
    response = alice_client.post(reverse("provider_test", args=[org_a.slug, empty.id]), follow=True)
    assert b"Add a deployment first" in response.content


def test_charlie_cannot_test_alices_provider(charlie_client, org_a, org_b):
    provider = services.provider_save(actor=ACTOR, org=org_a, name="p", kind="openai")
    assert (
        charlie_client.post(reverse("provider_test", args=[org_b.slug, provider.id])).status_code
        == 404
    )


def test_the_monthly_statement_attributes_cost_by_team_and_key(alice_client, org_a):
    from orgs import services as org_services

    research = org_services.team_create(actor=ACTOR, org=org_a, name="Research")
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="lab", team=research)
    other, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="web")
    _usage(org_a, key, team=research, cost=Decimal("1.25"))
    _usage(org_a, key, team=research, cost=Decimal("0.75"))
    _usage(org_a, other, cost=Decimal("0.10"))
    response = alice_client.get(reverse("usage_statement", args=[org_a.slug]))
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["team", "key", "requests", "input_tokens", "output_tokens", "cost_usd"]
    assert rows[1:] == [  # teams by name, then the lines without one
        ["Research", f"lab ({key.prefix}…{key.last4})", "2", "20", "10", "2.000000"],
        ["(no team)", f"web ({other.prefix}…{other.last4})", "1", "10", "5", "0.100000"],
        ["TOTAL", "", "3", "30", "15", "2.100000"],
    ]
    assert (
        alice_client.get(reverse("usage_statement", args=[org_a.slug]) + "?month=soon").status_code
        == 400
    )


def test_members_see_revoke_only_on_keys_they_may_revoke(bob, bob_client, alice_client, org_a):
    from orgs.audit import Actor

    theirs, _ = services.api_key_create(actor=Actor(user=bob), org=org_a, name="bobs-key")
    others, _ = services.api_key_create(actor=ACTOR, org=org_a, name="admins-key")
    ApiKey.objects.filter(pk=theirs.pk).update(created_by=bob)

    def revocable(client):
        page = client.get(reverse("keys", args=[org_a.slug])).content.decode()
        return {
            k.name
            for k in (theirs, others)
            if reverse("key_revoke", args=[org_a.slug, k.id]) in page
        }

    assert revocable(bob_client) == {"bobs-key"}  # the server refuses the other: no button
    assert revocable(alice_client) == {"bobs-key", "admins-key"}


def test_model_list_calls_are_named_apart_in_the_cost_tables(alice_client, org_a):
    _usage(org_a, model_requested="", model_used="", provider="", cost=Decimal(0))
    _usage(org_a)
    page = alice_client.get(reverse("usage", args=[org_a.slug])).content.decode()
    assert page.count("not routed: model lists (/v1/models) and refused requests") == 2
    assert "(none)" not in page
