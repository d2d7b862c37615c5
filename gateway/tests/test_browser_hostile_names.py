"""Hostile names in a real browser (Debian's chromium via Playwright): every text a user can
set and a dashboard page shows is filled with script-injection payloads; every page is
visited and every confirm-guarded button clicked. Only the intended confirm may appear
(carrying the raw text), no payload may run, and the page's own assets must work under the
Content-Security-Policy without a single violation."""

import uuid
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from billing.budgets import budget_check, budget_save
from billing.models import Notification, UsageRecord
from conftest import PASSWORD
from gateway import services
from gateway.models import ApiKey, Deployment
from gateway.tests.conftest import ACTOR, refresh_snapshot
from gateway.tests.test_browser import answered, chromium_page, shot
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs import services as org_services
from orgs.models import Invitation, Membership, PersonalAccessToken, Team, User

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Each sets window.__xss and raises an alert if it ever runs as script.
RUN = "window.__xss=1;alert(1)"
PAYLOADS = [
    f"'); {RUN}; ('",
    f'"><img src=x onerror="{RUN}">',
    f"</script><script>{RUN}</script>",
    f"javascript:{RUN}",
    f"\\'); {RUN}; //",
    f"`;{RUN};`",
]
FSI, PDI = "\u2068", "\u2069"  # around a name in a confirm question: the plain-text <bdi>
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI + " " + e.sourceFile));
"""


def hostile(i: int, tag: str) -> str:
    return f"{tag} {PAYLOADS[i % len(PAYLOADS)]}"


class Watcher:
    """Records every dialog and page error; answers the expected confirm as told."""

    def __init__(self, page):
        self.page, self.dialogs, self.errors, self.answer = page, [], [], False
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)
        page.on("response", self._response)
        page.add_init_script(WATCH)

    def _console(self, msg):
        # A failed load is reported with its URL by _response (the favicon may be missing).
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(msg.text)

    def _response(self, response):
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            self.errors.append(f"{response.status} {response.url}")

    def _dialog(self, dialog):
        self.dialogs.append((dialog.type, dialog.message))
        if dialog.type == "confirm" and self.answer:
            dialog.accept()
        else:
            dialog.dismiss()

    def clean(self, where: str):
        state = self.page.evaluate("[window.__xss || null, window.__csp || []]")
        assert state == [None, []], f"{where}: script ran or CSP was violated: {state}"
        assert self.errors == [], f"{where}: {self.errors}"
        assert self.dialogs == [], f"{where}: unexpected dialogs {self.dialogs}"

    def visit(self, url: str, name: str):
        response = self.page.goto(url)
        assert response.status == 200, url
        self.page.wait_for_load_state("networkidle")
        shot(self.page, f"hostile-{name}")
        self.clean(url)

    def confirm(self, form_action: str, expected: str, done):
        """Click the form's button: dismissing changes nothing, accepting does the action."""
        button = self.page.locator(f'form[action="{form_action}"] button')
        self.answer = False
        button.click()
        self.page.wait_for_timeout(400)
        assert self.dialogs == [("confirm", expected)], self.dialogs
        assert not done(), f"{form_action} acted although the confirm was dismissed"
        self.dialogs.clear()
        self.clean(f"{form_action} (dismissed)")
        self.answer = True
        with self.page.expect_navigation():
            button.click()
        self.page.wait_for_load_state("networkidle")
        assert self.dialogs == [("confirm", expected)], self.dialogs
        assert done(), f"{form_action} did not act after the confirm was accepted"
        self.dialogs.clear()
        self.clean(f"{form_action} (accepted)")


@pytest.fixture
def browser(live_server_thread, monkeypatch):
    with chromium_page(monkeypatch) as page:
        yield Watcher(page)


def _hostile_org(org, alice, bob):
    """Every user-settable text a dashboard page shows, each holding a payload."""
    n = iter(range(100))
    org_services.org_update(actor=ACTOR, org=org, name=hostile(next(n), "Org"))
    for user, tag in ((alice, "Alice"), (bob, "Bob")):
        user.name = hostile(next(n), tag)
        user.save(update_fields=["name"])
    # Emails come from invitations, SSO or the admin; a quoted local part may hold anything.
    mallory = org_services.user_create(
        actor=ACTOR, email=f'"{PAYLOADS[0]}"@evil.test', name=hostile(next(n), "Mallory")
    )
    org_services.membership_add(actor=ACTOR, org=org, user=mallory, role="member")
    invitation, _raw = org_services.invitation_create(
        actor=ACTOR, org=org, email=f"x{PAYLOADS[0]}@evil.test".replace(" ", "")
    )
    team = org_services.team_create(
        actor=ACTOR, org=org, name=hostile(next(n), "Team"), description=hostile(next(n), "Desc")
    )
    spare = org_services.team_create(actor=ACTOR, org=org, name=hostile(next(n), "Spare"))
    provider = services.provider_save(actor=ACTOR, org=org, name="mock", kind="mock")
    models = [hostile(next(n), "model") for _ in range(3)]
    region = hostile(next(n), "region")[:50]
    for model in models:
        services.deployment_save(
            actor=ACTOR,
            org=org,
            model_name=model,
            provider=provider,
            upstream_model=hostile(next(n), "upstream"),
            region=region,
        )
    route = governance_services.routing_policy_save(
        actor=ACTOR, org=org, name="route", models=models
    )
    rt = governance_services.routing_policy_save(actor=ACTOR, org=org, name="rt", models=models)
    governance_services.policy_set(
        actor=ACTOR,
        org=org,
        allowed_models=[*models, hostile(next(n), "allow")],
        denied_models=[hostile(next(n), "deny")],
        allowed_regions=[region],
    )
    scope = hostile(next(n), "scope")  # a key's scope names one of the org's models
    services.deployment_save(
        actor=ACTOR, org=org, model_name=scope, provider=provider, upstream_model="mock"
    )
    key, _raw = services.api_key_create(
        actor=ACTOR,
        org=org,
        name=f"Key {PAYLOADS[0]}",  # the name that promoted a member to admin
        team=team,
        allowed_models=[scope],
    )
    rt_key, _raw = services.api_key_create(
        actor=ACTOR, org=org, name=hostile(next(n), "RtKey"), routing_policy=rt
    )
    token, _raw = org_services.pat_create(
        actor=ACTOR, user=alice, org=org, name=hostile(next(n), "Token")
    )
    # Requests name a model the caller chose: hostile text reaches Logs and Usage that way too.
    for i in range(3):
        UsageRecord.objects.create(
            id=uuid.uuid4(),
            org=org,
            key=key,
            team=team,
            model_requested=hostile(i, "asked"),
            model_used=models[i],
            provider="mock",
            deployment=hostile(i, "dep"),
            error_type=hostile(i, "err")[:100] if i else "",
            status="error" if i else "success",
            http_status=400 if i else 200,
            cost=Decimal("0.5"),
            created_at=timezone.now(),
        )
    budget = budget_save(actor=ACTOR, org=org, amount_usd=Decimal("1"), scope="team", team=team)
    budget_check(budget=budget, now=timezone.now())  # an Overview notice naming the team
    assert Notification.objects.filter(org=org).exists()
    # Provider and routing-policy names are slugs: the services refuse anything else.
    for save in (
        lambda: services.provider_save(actor=ACTOR, org=org, name=PAYLOADS[0], kind="mock"),
        lambda: governance_services.routing_policy_save(
            actor=ACTOR, org=org, name=PAYLOADS[0], models=models
        ),
    ):
        with pytest.raises(ValidationError):
            save()
    return {
        "key": key,
        "rt_key": rt_key,
        "token": token,
        "team": spare,
        "member": Membership.objects.get(org=org, user=mallory),
        "invitation": invitation,
        "record": UsageRecord.objects.filter(org=org).first(),
        "deployment": Deployment.objects.filter(org=org, model_name=models[0]).get(),
        "route": route,
    }


def test_hostile_names_never_run_and_confirms_still_work(
    browser, live_server_thread, org_a, alice, bob, gw
):
    objs = _hostile_org(org_a, alice, bob)
    refresh_snapshot()
    page, base, o = browser.page, live_server_thread.url, f"/o/{org_a.slug}"

    browser.visit(base + "/login/", "login")
    page.fill("input[name=username]", alice.email)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    browser.clean("sign-in")

    for path in (
        "/",
        "/keys/",
        "/usage/",
        "/logs/",
        f"/logs/{objs['record'].id}/",
        "/policies/",
        "/routing/",
        "/providers/",
        "/playground/",
        "/team/",
        "/settings/",
        "/settings/sso/",
        f"/providers/deployments/{objs['deployment'].id}/",
        f"/routing/{objs['route'].id}/",
        f"/keys/{objs['rt_key'].id}/edit/",
        f"/providers/{objs['deployment'].provider_id}/",
    ):
        name = "log-detail" if path.startswith("/logs/") and path != "/logs/" else path
        browser.visit(base + o + path, name.strip("/").replace("/", "-") or "overview")
    browser.visit(base + "/orgs/", "switcher")

    # The pages' own scripts work under the policy: the chart, the live tail, htmx.
    page.goto(base + o + "/usage/")
    page.wait_for_selector("#usage-chart[data-ready='1']")
    page.goto(base + o + "/logs/")
    page.wait_for_selector("text=Live tail: on")
    page.goto(base + o + "/playground/")
    page.fill("textarea[name=message]", "hello")
    page.click("#playground-form button[type=submit]")
    answered(page, "#playground-result")  # streamed by the page's script
    assert "You said: hello" in page.inner_text("#playground-result")
    browser.clean("the page's own scripts")

    # Every confirm-guarded button, with the raw name in its question.
    key, token, team = objs["key"], objs["token"], objs["team"]
    member, invitation = objs["member"], objs["invitation"]
    page.goto(base + o + "/keys/")
    browser.confirm(
        f"{o}/keys/{key.id}/revoke/",
        f"Revoke {FSI}{key.name}{PDI}? Apps using it will get 401 within seconds.",
        lambda: ApiKey.objects.get(pk=key.pk).revoked_at is not None,
    )
    page.goto(base + o + "/settings/")
    browser.confirm(
        f"{o}/settings/tokens/{token.id}/revoke/",
        f"Revoke {FSI}{token.name}{PDI}?",  # the settings page isolates the name
        lambda: PersonalAccessToken.objects.get(pk=token.pk).revoked_at is not None,
    )
    page.goto(base + o + "/team/")
    browser.confirm(
        f"{o}/team/teams/{team.id}/delete/",
        f"Delete team {FSI}{team.name}{PDI}?",
        lambda: not Team.objects.filter(pk=team.pk).exists(),
    )
    browser.confirm(
        f"{o}/team/members/{member.id}/remove/",
        f"Remove {FSI}{member.user.email}{PDI}?",
        lambda: not Membership.objects.filter(pk=member.pk).exists(),
    )
    browser.confirm(
        f"{o}/team/invitations/{invitation.id}/revoke/",
        f"Revoke the invitation to {FSI}{invitation.email}{PDI}?",
        lambda: Invitation.objects.get(pk=invitation.pk).revoked_at is not None,
    )
    deployment = objs["deployment"]
    page.goto(base + o + "/providers/")
    browser.confirm(
        f"{o}/providers/deployments/{deployment.id}/delete/",
        f"Delete the deployment {FSI}{deployment.model_name}{PDI} → {FSI}mock{PDI}/"
        f"{FSI}{deployment.upstream_model}{PDI}? "
        f"Requests for {FSI}{deployment.model_name}{PDI} stop reaching it within seconds.",
        lambda: not Deployment.objects.filter(pk=deployment.pk).exists(),
    )
    # The edit pages' questions isolate the names they hold (U+2068 … U+2069, the plain-text
    # <bdi>) as the lists' do, and still act only once accepted.
    rt_key, route = objs["rt_key"], objs["route"]
    page.goto(base + o + f"/keys/{rt_key.id}/edit/")
    browser.confirm(
        f"{o}/keys/{rt_key.id}/disable/",
        f"Disable {FSI}{rt_key.name}{PDI}? Apps using it will get 401 within seconds until an"
        " admin enables it.",
        lambda: not ApiKey.objects.get(pk=rt_key.pk).is_active,
    )
    page.goto(base + o + f"/routing/{route.id}/")
    browser.confirm(
        f"{o}/routing/{route.id}/delete/",
        f"Delete the routing policy {FSI}{route.name}{PDI}? This cannot be undone.",
        lambda: not RoutingPolicy.objects.filter(pk=route.pk).exists(),
    )
    # Every destructive button on these pages asks first, through the same mechanism.
    edit_pages = (f"/keys/{rt_key.id}/edit/", f"/providers/{deployment.provider_id}/")
    for path in ("/keys/", "/settings/", "/team/", "/providers/", "/routing/", *edit_pages):
        page.goto(base + o + path)
        danger = page.locator("button.danger").count()
        assert danger == page.locator("form[data-confirm] button.danger").count(), path
    browser.clean("after the confirms")

    # The API's own pages: Swagger UI and the browsable API, same names, same policy.
    page.goto(base + "/api/docs/")
    page.wait_for_selector("text=Bonito management API")
    browser.clean("/api/docs/")
    browser.visit(base + "/api/gateway/keys", "api-keys")

    # The platform admin lists the same objects (and the audit log that names them).
    User.objects.filter(pk=alice.pk).update(is_staff=True, is_superuser=True)
    for path in (
        "/admin/",
        "/admin/orgs/organization/",
        f"/admin/orgs/organization/{org_a.id}/change/",
        "/admin/orgs/user/",
        "/admin/orgs/auditlog/",
        "/admin/gateway/apikey/",
        "/admin/gateway/deployment/",
    ):
        browser.visit(base + path, "admin" + path.replace("/", "-"))
