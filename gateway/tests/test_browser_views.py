"""Issue 19's pages in a real browser (Debian's chromium via Playwright): the Models page's
search, the Logs filters, and a platform admin's read-only view with a refused write."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import UsageRecord
from conftest import PASSWORD, SETUP
from gateway import services
from gateway.catalog import model_catalog_sync
from gateway.tests.conftest import ACTOR
from gateway.tests.test_browser import chromium_page, shot
from orgs import services as org_services
from orgs.models import AuditLog

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _sign_in(page, base, email):
    page.goto(base + "/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_models_page_and_logs_filters(live_server_thread, monkeypatch, org_a, alice):
    base = live_server_thread.url
    model_catalog_sync()
    provider = services.provider_save(actor=ACTOR, org=org_a, name="openai", kind="mock")
    services.deployment_save(
        actor=ACTOR,
        org=org_a,
        model_name="fast",
        provider=provider,
        upstream_model="gpt-4o-mini",
        input_price_per_mtok=Decimal("0.5"),
        output_price_per_mtok=Decimal("1"),
    )
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="batch-app")
    for i, (k, status) in enumerate([(key, "success"), (None, "error"), (key, "rejected")]):
        UsageRecord.objects.create(
            id=uuid.uuid4(),
            org=org_a,
            key=k,
            model_requested="fast",
            model_used="fast",
            provider="openai",
            status=status,
            request_id=f"req-browser-{i}",
            cost=Decimal("0.001"),
            created_at=timezone.now() - timedelta(minutes=i + 1),
        )
    with chromium_page(monkeypatch) as page:
        _sign_in(page, base, alice.email)
        page.goto(base + "/o/acme/models/")
        page.fill("input[name=search]", "gpt-4o-mini")
        page.check("input[name=served]")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**served=1**")
        row = page.locator('tr[data-model="gpt-4o-mini"]')
        assert "fast" in row.inner_text() and "custom price" in row.inner_text()
        assert page.locator("#catalog tbody tr").count() == 1
        shot(page, "models-served")

        page.goto(base + "/o/acme/logs/")
        assert page.locator("#log-rows tr").count() == 3
        page.select_option("select[name=key]", label="batch-app")
        page.select_option("select[name=status]", "rejected")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**status=rejected**")
        assert page.locator("#log-rows tr").count() == 1
        page.fill("input[name=request_id]", "req-browser-1")
        page.select_option("select[name=key]", "")
        page.select_option("select[name=status]", "")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**request_id=req-browser-1**")
        assert page.locator("#log-rows tr").count() == 1
        page.click("#log-rows a")
        page.wait_for_url("**/logs/*/")
        assert "req-browser-1" in page.content()
        shot(page, "log-detail-filtered")


def test_view_as_banner_and_a_refused_write(live_server_thread, monkeypatch, org_a, alice):
    base = live_server_thread.url
    ops = org_services.user_create(actor=SETUP, email="ops@platform.test", password=PASSWORD)
    ops.is_staff = ops.is_superuser = True
    ops.save(update_fields=["is_staff", "is_superuser"])
    with chromium_page(monkeypatch) as page:
        _sign_in(page, base + "", ops.email)
        page.goto(f"{base}/admin/orgs/organization/{org_a.pk}/change/")
        page.click("form.view-as-start button")
        page.wait_for_url(f"{base}/o/acme/")
        banner = page.locator(".view-as")
        assert "Viewing Acme Corp as platform admin — read only" in banner.inner_text()
        shot(page, "view-as-overview")
        # A write (Settings' rename, posted from the page) is refused with the reason.
        page.goto(base + "/o/acme/settings/")
        with page.expect_navigation():
            page.evaluate(
                "() => { const f = document.createElement('form'); f.method = 'post';"
                " f.action = location.pathname; const t = document.createElement('input');"
                " t.name = 'csrfmiddlewaretoken';"
                " t.value = document.querySelector('[name=csrfmiddlewaretoken]').value;"
                " const n = document.createElement('input'); n.name = 'name'; n.value = 'Hacked';"
                " f.append(t, n); document.body.append(f); f.submit(); }"
            )
        assert "read only: changes are refused" in page.content()
        shot(page, "view-as-refused")
        with page.expect_navigation():
            page.click(".view-as button")
    org_a.refresh_from_db()
    assert org_a.name == "Acme Corp"
    actions = list(
        AuditLog.objects.filter(org=org_a, action__startswith="view_as.").values_list(
            "action", flat=True
        )
    )
    assert sorted(actions) == ["view_as.start", "view_as.stop"]
