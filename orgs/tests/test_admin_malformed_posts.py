"""The Django admin answers a malformed post with the form and its error (or the service's
message), never a 500: a related row's box holding what is no id (the autocomplete widget
looked the text up to draw the page again: ValueError), or a JSON field holding a number,
NaN or an object where a list of names or numbers belongs (the services iterated it:
TypeError; NaN reached the database: IntegrityError)."""

import pytest

from billing.budgets import budget_save
from bonito.tests.admin_forms import form_data
from gateway import services as gateway_services
from governance import services as governance_services
from orgs import sso
from orgs.audit import Actor
from orgs.models import Membership, Team

from .saml_idp import TestIdP

pytestmark = pytest.mark.django_db
SETUP = Actor(via="test-setup")


def _post(admin_client, url, **changes):
    response = admin_client.post(url, form_data(admin_client.get(url), **changes))
    assert response.status_code in (200, 302), response.status_code
    return response


@pytest.mark.parametrize("value", ["1.5", "abc", "99999999999999999999999", "a\x00b"])
def test_a_related_row_that_is_no_id_is_a_form_error(admin_client, org_a, alice, bob, value):
    Team.objects.create(org=org_a, name="core")
    membership = Membership.objects.get(user=bob)
    response = _post(admin_client, f"/admin/orgs/membership/{membership.pk}/change/", team=value)
    assert response.status_code == 200 and response.context["adminform"].form.errors
    _post(admin_client, "/admin/orgs/membership/add/", org=value, user=value)


@pytest.mark.parametrize("value", ["-1", "1.5", "NaN", '{"a": 1}', '"50"'])
def test_budget_thresholds_that_are_no_list_are_refused(admin_client, org_a, value):
    budget = budget_save(actor=SETUP, org=org_a, amount_usd="10")
    _post(admin_client, f"/admin/billing/budget/{budget.pk}/change/", thresholds=value)
    budget.refresh_from_db()
    assert budget.thresholds == [50, 80, 100]


@pytest.mark.parametrize("value", ["-1", "NaN", "1e400", '{"a": 1}', "[1]"])
def test_routing_policy_models_that_are_no_names_are_refused(admin_client, org_a, value):
    policy = governance_services.routing_policy_save(
        actor=SETUP, org=org_a, name="rp", models=["m"]
    )
    _post(admin_client, f"/admin/governance/routingpolicy/{policy.pk}/change/", model_names=value)
    policy.refresh_from_db()
    assert policy.model_names == ["m"]


@pytest.mark.parametrize("field", ["enabled_providers", "fallback_models"])
@pytest.mark.parametrize("value", ["NaN", "1e400", "-1", '{"a": 1}', "[1]"])
def test_gateway_settings_lists_that_are_no_names_are_refused(admin_client, org_a, field, value):
    config = gateway_services.gateway_config_set(actor=SETUP, org=org_a, fallback_models=[])
    _post(admin_client, f"/admin/gateway/gatewayconfig/{config.pk}/change/", **{field: value})
    config.refresh_from_db()
    assert getattr(config, field) == []


@pytest.mark.parametrize("value", ["-1", "NaN", '{"a": 1}', "[1]"])
def test_sso_email_domains_that_are_no_names_are_refused(admin_client, org_a, value):
    idp = TestIdP()
    config = sso.sso_config_save(
        actor=SETUP,
        org=org_a,
        preset="okta",
        idp_entity_id=idp.entity_id,
        idp_sso_url=idp.sso_url,
        idp_x509_cert=idp.cert,
        email_domains=["acme.test"],
    )
    _post(admin_client, f"/admin/orgs/ssoconfig/{config.pk}/change/", email_domains=value)
    config.refresh_from_db()
    assert config.email_domains == ["acme.test"]
