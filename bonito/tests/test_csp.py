"""Every page carries a Content-Security-Policy that forbids inline script, and no page or
asset we ship has inline script for it to forbid (so text a user typed can never run)."""

import os
import re
import subprocess
import sys
import uuid
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.contrib import admin
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from billing.budgets import budget_save
from billing.models import Notification, UsageRecord
from bonito.tests.project_files import project_files
from gateway import services
from gateway.tests.conftest import ACTOR
from governance.services import routing_policy_save
from orgs import services as org_services

ROOT = Path(__file__).resolve().parents[2]


def csp_directives(response) -> dict[str, list[str]]:
    header = response.get("Content-Security-Policy")
    assert header, f"{response.request['PATH_INFO']} has no Content-Security-Policy"
    return {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}


def assert_strict(response):
    policy = csp_directives(response)
    assert policy["script-src"] == ["'self'"], policy
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert "'unsafe-inline'" not in policy.get("default-src", [])
    assert "'unsafe-eval'" not in " ".join(sum(policy.values(), []))


class InlineScript(HTMLParser):
    """Collects what a strict CSP blocks: inline handlers, javascript: URLs, inline scripts."""

    DATA_TYPES = {"application/json", "application/ld+json", "text/template"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found, self._inline = [], None

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=…>")
            if name in ("href", "src", "action", "formaction") and (value or "").strip().lower()[
                :11
            ].startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value}>")
        attrs = dict(attrs)
        if tag == "script" and "src" not in attrs and attrs.get("type") not in self.DATA_TYPES:
            self._inline = ""

    def handle_data(self, data):
        if self._inline is not None:
            self._inline += data

    def handle_endtag(self, tag):
        if tag == "script" and self._inline is not None:
            if self._inline.strip():
                self.found.append(f"<script>{self._inline.strip()[:60]}</script>")
            self._inline = None


def inline_script(html: str) -> list[str]:
    parser = InlineScript()
    parser.feed(html)
    return parser.found


@pytest.fixture
def everything(org_a, alice, bob):
    """One of each object a page can show, so detail and action URLs resolve."""
    provider = services.provider_save(actor=ACTOR, org=org_a, name="mock", kind="mock")
    deployment = services.deployment_save(
        actor=ACTOR, org=org_a, model_name="chat", provider=provider, upstream_model="m"
    )
    team = org_services.team_create(actor=ACTOR, org=org_a, name="Research")
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="app", team=team)
    invitation, raw_invite = org_services.invitation_create(
        actor=ACTOR, org=org_a, email="new@acme.test"
    )
    token, _raw = org_services.pat_create(actor=ACTOR, user=alice, org=org_a, name="cli")
    policy = routing_policy_save(actor=ACTOR, org=org_a, name="cheap", models=["chat"])
    budget = budget_save(actor=ACTOR, org=org_a, amount_usd=Decimal("10"))
    notice = Notification.objects.create(org=org_a, message="a notice")
    record = UsageRecord.objects.create(
        id=uuid.uuid4(),
        org=org_a,
        key=key,
        team=team,
        model_requested="chat",
        status="success",
        cost=Decimal("0.001"),
        created_at=timezone.now(),
    )
    membership = bob.memberships.get(org=org_a)
    return {
        "org_slug": org_a.slug,
        "key_id": key.id,
        "record_id": str(record.id),
        "budget_id": budget.id,
        "notice_id": notice.id,
        "provider_id": provider.id,
        "deployment_id": deployment.id,
        "policy_id": policy.id,
        "membership_id": membership.id,
        "team_id": team.id,
        "invitation_id": invitation.id,
        "token_id": token.id,
        "token": raw_invite,
        "uidb64": "MQ",
        "pk": key.id,
        "name": "chat",
        "format": "json",
    }


def _routes(patterns, namespace="", params=()):
    for p in patterns:
        groups = (*params, *p.pattern.regex.groupindex)
        if isinstance(p, URLResolver):
            if p.namespace == "admin":
                continue  # the admin's pages are listed from its registry below
            yield from _routes(p.url_patterns, p.namespace or namespace, groups)
        elif isinstance(p, URLPattern) and p.name:
            yield (f"{namespace}:{p.name}" if namespace else p.name), groups


def _every_url(ids) -> list[str]:
    urls = {
        reverse(name, kwargs={k: ids[k] for k in groups})
        for name, groups in _routes(get_resolver().url_patterns)
    }
    return sorted(urls)


@pytest.mark.django_db
def test_every_route_sends_the_strict_policy(client, alice, everything):
    client.force_login(alice)
    urls = _every_url(everything)
    assert len(urls) > 60  # the whole site, not a sample
    for url in urls:
        response = client.get(url)
        assert_strict(response)
        if response.status_code == 200 and "html" in response.get("Content-Type", ""):
            assert inline_script(response.content.decode()) == [], url


DASHBOARD = [
    "",
    "keys/",
    "usage/",
    "logs/",
    "policies/",
    "routing/",
    "providers/",
    "playground/",
    "team/",
    "settings/",
    "settings/deployment/",
    "agents/",
]


@pytest.mark.django_db
@pytest.mark.parametrize("page", DASHBOARD)
def test_each_dashboard_page_renders_under_the_policy(alice_client, everything, page):
    response = alice_client.get(f"/o/acme/{page}")
    assert response.status_code == 200
    assert_strict(response)
    assert inline_script(response.content.decode()) == []


@pytest.mark.django_db
def test_the_record_and_sign_in_pages_render_under_the_policy(client, everything):
    pages = [
        "/login/",
        "/password-reset/",
        "/password-reset/sent/",
        "/password-reset/done/",
        "/sso/",
        f"/invite/{everything['token']}/",
        "/api/docs/",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert_strict(response)
        assert inline_script(response.content.decode()) == [], url


@pytest.mark.django_db
def test_the_platform_admin_renders_under_the_policy(admin_client, everything):
    pages = ["/admin/", "/admin/system/"]
    for model, _model_admin in admin.site._registry.items():
        opts = model._meta
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code in (200, 403), url  # some admins forbid adding
        assert_strict(response)
        if response.status_code == 200:
            assert inline_script(response.content.decode()) == [], url


@pytest.mark.django_db
def test_the_browsable_api_renders_under_the_policy(alice_client, everything):
    for url in ("/api/", "/api/gateway/keys", "/api/tokens"):
        response = alice_client.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200 and "html" in response["Content-Type"], url
        assert_strict(response)
        assert inline_script(response.content.decode()) == [], url


INLINE_HANDLER = re.compile(r"""<[^>]*\son[a-z]+\s*=""", re.IGNORECASE)
JS_URL = re.compile(r"""(href|src|action|formaction)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(?P<body>.*?)</script>", re.S | re.I)


def test_no_template_or_static_file_has_inline_script():
    files = list(project_files("*.html", "*.js", "*.txt"))
    assert any(p.name == "base.html" for p in files) and any(p.name == "bonito.js" for p in files)
    found = []
    for path in files:
        text = path.read_text()
        for rx in (INLINE_HANDLER, JS_URL):
            found += [f"{path.relative_to(ROOT)}: {m.group(0)[:80]}" for m in rx.finditer(text)]
        for m in INLINE_SCRIPT.finditer(text):
            # {{ x|json_script:"id" }} and <script type="application/json"> are data, not code.
            if m.group("body").strip() and "application/json" not in m.group(0)[:80]:
                found.append(f"{path.relative_to(ROOT)}: {m.group(0)[:80]}")
    assert found == []


def test_it_sends_violation_reports_where_csp_report_uri_says():
    env = {**os.environ, "CSP_REPORT_URI": "https://csp.example.test/report"}
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.CONTENT_SECURITY_POLICY['DIRECTIVES'].get('report-uri'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "bonito.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.strip() == "['https://csp.example.test/report']"
