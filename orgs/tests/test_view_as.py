"""A platform admin views an org's dashboard read-only: every page reads, every write is
refused in one place (orgs.permissions), start and stop are audited."""

import pytest
from django.apps import apps
from django.test import Client
from django.urls import URLPattern, reverse

from bonito.navigation import SECTIONS
from bonito.urls import DASHBOARD_APPS
from orgs import services
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db


@pytest.fixture
def platform_admin(db):
    from conftest import PASSWORD, SETUP

    user = services.user_create(actor=SETUP, email="ops@platform.test", password=PASSWORD)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


@pytest.fixture
def ops(platform_admin):
    c = Client()
    c.force_login(platform_admin)
    return c


def _start(client, org):
    return client.post(reverse("view_as_start", args=[org.slug]))


def _org_urls(org):
    """Every dashboard URL under /o/<org>/, its other arguments filled with a number."""
    for app in DASHBOARD_APPS:
        for pattern in app.org_urlpatterns:
            assert isinstance(pattern, URLPattern)
            extra = [1] * len(pattern.pattern.converters)
            yield pattern.name, reverse(pattern.name, args=[org.slug, *extra])


def _row_counts():
    return {m._meta.label: m.objects.count() for m in apps.get_models() if m._meta.managed}


def test_a_platform_admin_is_not_admitted_without_starting(ops, org_a, alice):
    assert ops.get(reverse("overview", args=[org_a.slug])).status_code == 404


def test_starting_shows_every_section_with_the_banner(ops, org_a, alice):
    response = _start(ops, org_a)
    assert response.status_code == 302
    assert response["Location"] == reverse("overview", args=[org_a.slug])
    for section, _label in SECTIONS:
        page = ops.get(reverse(section, args=[org_a.slug]))
        assert page.status_code == 200, section
        assert (
            "Viewing <bdi>Acme Corp</bdi> as platform admin — read only</span>"
            in page.content.decode()
        )


def test_every_write_in_the_dashboard_is_refused(ops, org_a, alice):
    _start(ops, org_a)
    before = _row_counts()
    urls = list(_org_urls(org_a))
    assert len(urls) > 20  # the whole URLconf, not a sample
    for name, url in urls:
        for method in ("post", "put", "patch", "delete"):
            response = getattr(ops, method)(url, {"name": "Hacked", "email": "x@evil.test"})
            # A view that only accepts POST answers other methods 405 before anything runs.
            expected = (403,) if method == "post" else (403, 405)
            assert response.status_code in expected, (name, method, response.status_code)
            if response.status_code == 403:
                assert "read only: changes are refused" in response.content.decode(), name
    assert _row_counts() == before
    org_a.refresh_from_db()
    assert org_a.name == "Acme Corp"


def test_the_async_playground_refuses_too(ops, org_a, alice):
    _start(ops, org_a)
    url = reverse("playground-stream", args=[org_a.slug])
    response = ops.post(url, {"model": "x", "prompt": "hi"})
    assert response.status_code == 403
    assert b"read only" in response.content


def test_viewing_one_org_shows_no_other(ops, org_a, org_b, alice, charlie):
    _start(ops, org_a)
    for section, _label in SECTIONS:
        assert ops.get(reverse(section, args=[org_b.slug])).status_code == 404


def test_start_and_stop_are_audited_in_the_org(ops, platform_admin, org_a, org_b, alice):
    _start(ops, org_a)
    _start(ops, org_a)  # already viewing: nothing new
    _start(ops, org_b)  # switching: stop acme, start globex
    response = ops.post(reverse("view_as_stop"))
    assert response.status_code == 302
    rows = AuditLog.objects.filter(action__startswith="view_as.").order_by("id")
    assert [(r.org.slug, r.action, r.actor_id) for r in rows] == [
        ("acme", "view_as.start", platform_admin.id),
        ("acme", "view_as.stop", platform_admin.id),
        ("globex", "view_as.start", platform_admin.id),
        ("globex", "view_as.stop", platform_admin.id),
    ]
    assert ops.get(reverse("overview", args=[org_b.slug])).status_code == 404


@pytest.mark.parametrize("who", ["alice", "bob", "charlie"])
def test_only_platform_admins_may_start(who, request, org_a, org_b):
    user = request.getfixturevalue(who)
    client = Client()
    client.force_login(user)
    assert _start(client, org_b if who != "charlie" else org_a).status_code == 404
    assert not AuditLog.objects.filter(action="view_as.start").exists()
    other = org_b if who != "charlie" else org_a
    assert client.get(reverse("overview", args=[other.slug])).status_code == 404


def test_losing_staff_ends_the_view_at_once(ops, platform_admin, org_a, alice):
    _start(ops, org_a)
    platform_admin.is_staff = False
    platform_admin.save(update_fields=["is_staff"])
    assert ops.get(reverse("overview", args=[org_a.slug])).status_code == 404


def test_the_admin_organization_page_offers_view_as(platform_admin, org_a):
    platform_admin.is_superuser = True
    platform_admin.save(update_fields=["is_superuser"])
    client = Client()
    client.force_login(platform_admin)
    page = client.get(reverse("admin:orgs_organization_change", args=[org_a.pk]))
    assert page.status_code == 200
    assert reverse("view_as_start", args=[org_a.slug]).encode() in page.content


def test_a_member_platform_admin_keeps_the_real_role(org_a, alice):
    alice.is_staff = True
    alice.save(update_fields=["is_staff"])
    client = Client()
    client.force_login(alice)
    _start(client, org_a)
    response = client.post(reverse("settings", args=[org_a.slug]), {"name": "Renamed"})
    assert response.status_code == 302  # her membership, not the read-only stand-in
