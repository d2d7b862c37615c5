"""A refused new deployment (Providers page, Add deployment) comes back with what was typed:
it redirected to the Providers page with the error above empty fields."""

import pytest
from django.urls import reverse

from gateway import services
from gateway.models import Deployment
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db


@pytest.fixture
def providers(org_a):
    return [
        services.provider_save(actor=ACTOR, org=org_a, name=name, kind="mock")
        for name in ("first", "second")
    ]


def _add(client, org, provider, **fields):
    return client.post(
        reverse("deployment_create", args=[org.slug]),
        {
            "model_name": "chat <big>",
            "provider": str(provider.id),
            "upstream_model": "mock-chat",
            "region": "eu-west-1",
            **fields,
        },
    )


def _form(html):
    return html.split('action="/o/acme/providers/deployments/"')[1].split("</form>")[0]


def test_a_refused_deployment_keeps_what_was_typed(alice_client, org_a, providers):
    services.deployment_save(
        actor=ACTOR, org=org_a, model_name="chat", provider=providers[1], upstream_model="m"
    )
    # The same model, provider and upstream as an existing one: refused by the service.
    response = _add(alice_client, org_a, providers[1], model_name="chat", upstream_model="m")
    html = response.content.decode()
    assert response.status_code == 400
    assert '<div class="flash error" role="status">' in html
    form = _form(html)
    assert 'value="chat"' in form and 'value="m"' in form and 'value="eu-west-1"' in form
    assert f'<option value="{providers[1].id}" selected>' in form
    assert Deployment.objects.for_org(org_a).count() == 1


def test_a_deployment_refused_by_the_form_keeps_what_was_typed(alice_client, org_a, providers):
    response = _add(alice_client, org_a, providers[0], upstream_model="")  # required
    form = _form(response.content.decode())
    assert 'value="chat &lt;big&gt;"' in form and 'value="eu-west-1"' in form
    assert f'<option value="{providers[0].id}" selected>' in form
    assert not Deployment.objects.for_org(org_a).exists()


def test_an_outsider_s_deployment_is_refused_without_a_row(charlie_client, org_a, providers):
    assert _add(charlie_client, org_a, providers[0]).status_code == 404
    assert not Deployment.objects.exists()
