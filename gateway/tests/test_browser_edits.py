"""Edit and delete in a real browser (issue 19.1): a deployment's priority, weight and
Active box, a provider disabled then deleted, a routing policy's weights, a member moved
to another team. Every delete asks first (static/js/bonito.js reads data-confirm: no inline
script, nothing the CSP refuses); answering Cancel deletes nothing."""

import pytest

from conftest import PASSWORD
from gateway import services
from gateway.models import Deployment, ProviderConnection
from gateway.tests.conftest import ACTOR
from gateway.tests.test_browser import chromium_page, shot
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs import services as org_services

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Dialogs:
    """Answers the page's confirm() dialogs in turn (True: OK, False: Cancel), keeping
    their texts."""

    def __init__(self, page):
        self.answers, self.seen = [], []
        page.on("dialog", self._answer)

    def _answer(self, dialog):
        self.seen.append(dialog.message)
        dialog.accept() if self.answers.pop(0) else dialog.dismiss()


def test_edit_and_delete_with_confirmation(live_server_thread, org_a, alice, bob, monkeypatch):
    base, slug = live_server_thread.url, org_a.slug
    provider = services.provider_save(actor=ACTOR, org=org_a, name="p", kind="mock")
    other = services.provider_save(actor=ACTOR, org=org_a, name="q", kind="mock")
    d = services.deployment_save(
        actor=ACTOR, org=org_a, model_name="chat", provider=provider, upstream_model="m"
    )
    services.deployment_save(
        actor=ACTOR, org=org_a, model_name="chat", provider=other, upstream_model="n"
    )
    policy = governance_services.routing_policy_save(
        actor=ACTOR, org=org_a, name="rp", strategy="weighted", models=["a", "b"], weights={"a": 1}
    )
    support = org_services.team_create(actor=ACTOR, org=org_a, name="Support")

    with chromium_page(monkeypatch) as page:
        refused = []
        page.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        dialogs = Dialogs(page)
        page.goto(base + "/login/")
        page.fill("input[name=username]", alice.email)
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")

        # A deployment: priority, weight, disabled.
        page.goto(base + f"/o/{slug}/providers/")
        page.click(f"a[href$='/providers/deployments/{d.pk}/']")
        page.fill("input[name=priority]", "3")
        page.fill("input[name=weight]", "2")
        page.uncheck("input[name=is_active]")
        shot(page, "deployment-edit")
        with page.expect_navigation():
            page.click("#deployment-edit button[type=submit]")
        assert "saved" in page.content()
        d.refresh_from_db()
        assert (d.priority, d.weight, d.is_active) == (3, 2, False)

        # Its delete asks first: Cancel keeps it, OK deletes it.
        delete = f"form[action$='/providers/deployments/{d.pk}/delete/'] button"
        dialogs.answers = [False]
        page.click(delete)
        page.wait_for_timeout(300)  # a cancelled submit navigates nowhere
        # (each name isolated: U+2068 … U+2069, the plain-text <bdi>; docs/security.md)
        asked = dialogs.seen[-1] if dialogs.seen else ""
        assert "Delete the deployment \u2068chat\u2069 → \u2068p\u2069/\u2068m\u2069?" in asked
        assert Deployment.objects.filter(pk=d.pk).exists()
        dialogs.answers = [True]
        with page.expect_navigation():
            page.click(delete)
        assert "Deployment chat → p/m deleted." in page.content()
        assert not Deployment.objects.filter(pk=d.pk).exists()

        # A provider: disabled on its page, then deleted with its deployment.
        page.click(f"a[href$='/providers/{other.pk}/']")
        page.uncheck("input[name=is_active]")
        with page.expect_navigation():
            page.click("form:not([action]) button[type=submit]")
        other.refresh_from_db()
        assert other.is_active is False
        dialogs.answers = [False, True]
        delete = f"form[action$='/providers/{other.pk}/delete/'] button"
        page.click(delete)
        page.wait_for_timeout(300)
        assert "and its 1 deployment?" in dialogs.seen[-1]
        assert ProviderConnection.objects.filter(pk=other.pk).exists()
        with page.expect_navigation():
            page.click(delete)
        assert "Provider q deleted, and its deployments (chat → n)." in page.content()
        assert not ProviderConnection.objects.filter(pk=other.pk).exists()

        # A routing policy: weights edited, then deleted.
        page.goto(base + f"/o/{slug}/routing/")
        page.click(f"a[href$='/routing/{policy.pk}/']")
        assert page.input_value("input[name=weights]") == "a=1"
        page.fill("input[name=weights]", "a=1, b=4")
        shot(page, "routing-policy-edit")
        with page.expect_navigation():
            page.click("#routing-policy-edit button[type=submit]")
        policy.refresh_from_db()
        assert policy.weights == {"a": 1, "b": 4} and policy.is_active
        delete = f"form[action$='/routing/{policy.pk}/delete/'] button"
        dialogs.answers = [False, True]
        page.click(delete)
        page.wait_for_timeout(300)
        assert RoutingPolicy.objects.filter(pk=policy.pk).exists()
        with page.expect_navigation():
            page.click(delete)
        assert "Routing policy rp deleted." in page.content()
        assert not RoutingPolicy.objects.filter(pk=policy.pk).exists()

        # A member moved to a team.
        membership = bob.memberships.get()
        page.goto(base + f"/o/{slug}/team/")
        page.select_option(f"#team-{membership.pk}", str(support.pk))
        with page.expect_navigation():
            page.click(f"#member-{membership.pk} button[type=submit]")
        assert "bob@acme.test is now member in team Support." in page.content()
        membership.refresh_from_db()
        assert membership.team == support
        shot(page, "team-member-team")
        assert not refused, refused
