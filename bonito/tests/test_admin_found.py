"""Issue 19's "Found" list in the admin: plural names, view-only rows offer no bulk delete,
the System page is in the navigation of every admin page."""

import pytest
from django.test import Client
from django.urls import reverse

from conftest import PASSWORD, SETUP
from orgs import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(db):
    user = services.user_create(actor=SETUP, email="root@platform.test", password=PASSWORD)
    user.is_staff = user.is_superuser = True
    user.save(update_fields=["is_staff", "is_superuser"])
    client = Client()
    client.force_login(user)
    return client


def test_the_plural_names_read_right(superuser_client):
    index = superuser_client.get(reverse("admin:index")).content.decode()
    assert "Policies" in index and "Routing policies" in index
    assert "Policys" not in index and "policys" not in index


@pytest.mark.parametrize(
    "changelist",
    [
        "admin:billing_usagerecord_changelist",
        "admin:orgs_auditlog_changelist",
        "admin:billing_notification_changelist",
    ],
)
def test_view_only_rows_offer_no_delete_selected(superuser_client, changelist):
    page = superuser_client.get(reverse(changelist))
    assert page.status_code == 200
    assert b"delete_selected" not in page.content
    refused = superuser_client.post(
        reverse(changelist), {"action": "delete_selected", "_selected_action": ["1"]}
    )
    assert refused.status_code in (200, 302, 403)


@pytest.mark.parametrize(
    "page",
    ["admin:index", "admin:orgs_organization_changelist", "admin:billing_usagerecord_changelist"],
)
def test_the_system_page_is_in_the_admin_navigation(superuser_client, page):
    html = superuser_client.get(reverse(page)).content.decode()
    assert f'href="{reverse("admin:system")}"' in html
    assert superuser_client.get(reverse("admin:system")).status_code == 200
