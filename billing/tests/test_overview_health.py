"""The Overview's provider health comes from recent traffic and the last connection test,
never a constant "serving"; the snippets name a model whose provider works; status is
drawn with CSS, not emoji."""

import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageRecord
from gateway import services
from gateway.models import ProviderConnection
from gateway.tests.conftest import ACTOR
from gateway.tests.fake_upstream import Behaviour

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_providers(org_a, fake_upstream):
    made = {}
    for name, model in (("alpha", "a-model"), ("beta", "b-model")):
        provider = services.provider_save(
            actor=ACTOR,
            org=org_a,
            name=name,
            kind="openai_compatible",
            api_base=fake_upstream.url,
            credentials={"api_key": "sk-test"},
        )
        services.deployment_save(
            actor=ACTOR, org=org_a, model_name=model, provider=provider, upstream_model=model
        )
        made[name] = provider
    return made


def traffic(org, provider, status, n, minutes_ago=1):
    for _ in range(n):
        UsageRecord.objects.create(
            id=uuid.uuid4(),
            org=org,
            created_at=timezone.now() - timedelta(minutes=minutes_ago),
            model_requested="m",
            model_used="m",
            provider=provider,
            status=status,
            cost=Decimal("0.001"),
        )


def overview(client, org):
    response = client.get(reverse("overview", args=[org.slug]))
    assert response.status_code == 200
    health = {p.name: p.health for p in response.context["providers"]}
    return response, health


def test_failing_traffic_marks_a_provider_failing_and_moves_the_snippets(
    alice_client, org_a, two_providers
):
    # "a-model" sorts first, but its provider fails most of its requests.
    traffic(org_a, "alpha", "error", 3)
    traffic(org_a, "alpha", "success", 1)
    traffic(org_a, "beta", "success", 2)
    traffic(org_a, "alpha", "rejected", 50)  # Bonito's own refusals are not the provider's fault
    response, health = overview(alice_client, org_a)
    assert health["alpha"].state == "failing" and "3 of 4 requests" in health["alpha"].text
    assert health["beta"].state == "ok" and "serving" in health["beta"].text
    snippets = response.context["snippets"]
    assert '"b-model"' in snippets["python"] and "a-model" not in snippets["curl"]


def test_old_traffic_says_nothing_about_now(alice_client, org_a, two_providers):
    traffic(org_a, "alpha", "error", 10, minutes_ago=20)
    _, health = overview(alice_client, org_a)
    assert health["alpha"].state == "idle" and "not tested" in health["alpha"].text


def test_a_failed_connection_test_shows_until_a_request_succeeds(
    alice_client, org_a, two_providers, fake_upstream
):
    fake_upstream.behaviours["a-model"] = Behaviour(status=401, error_message="bad key")
    ok, _ = services.provider_test(provider=two_providers["alpha"])
    assert not ok
    _, health = overview(alice_client, org_a)
    assert health["alpha"].state == "failing" and "last test failed" in health["alpha"].text
    assert "HTTP 401" in health["alpha"].text and "sk-test" not in health["alpha"].text
    traffic(org_a, "alpha", "success", 1, minutes_ago=0)
    _, health = overview(alice_client, org_a)
    assert health["alpha"].state == "ok"
    fake_upstream.behaviours.clear()
    assert services.provider_test(provider=two_providers["beta"])[0]
    _, health = overview(alice_client, org_a)
    assert health["beta"].state == "ok" and "last test passed" in health["beta"].text


def test_disabled_and_idle_providers(alice_client, org_a, two_providers):
    ProviderConnection.objects.filter(pk=two_providers["alpha"].pk).update(is_active=False)
    response, health = overview(alice_client, org_a)
    assert health["alpha"].state == "off" and health["alpha"].text == "disabled"
    html = response.content.decode()
    assert 'class="status status-off"' in html
    assert not re.search("[\u2600-\u27bf\U0001f300-\U0001faff]", html)  # no emoji


def test_the_favicon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")
