import pytest
from django.test import Client

from orgs import services
from orgs.audit import Actor
from orgs.models import AuditLog, User

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-password-for-ops"


def _login(email):
    client = Client()
    assert client.post("/login/", {"username": email, "password": PASSWORD}).status_code == 302
    return client


def test_a_listed_email_is_platform_admin_when_created(settings):
    settings.ADMIN_EMAILS = ["ops@bonito.test"]
    user = services.user_create(actor=Actor(via="test"), email="Ops@Bonito.test", password=PASSWORD)
    assert user.is_staff and user.is_superuser


def test_an_unlisted_email_is_not(settings):
    settings.ADMIN_EMAILS = ["ops@bonito.test"]
    user = services.user_create(actor=Actor(via="test"), email="dev@bonito.test", password=PASSWORD)
    assert not user.is_staff and not user.is_superuser


def test_listing_an_existing_user_grants_rights_at_login(settings):
    user = services.user_create(actor=Actor(via="test"), email="ops@bonito.test", password=PASSWORD)
    settings.ADMIN_EMAILS = ["ops@bonito.test"]
    client = _login("ops@bonito.test")
    user.refresh_from_db()
    assert user.is_superuser
    assert client.get("/admin/").status_code == 200
    assert AuditLog.objects.filter(
        action="user.platform_admin.grant", target_id=str(user.pk)
    ).exists()


def test_removing_from_the_list_revokes_at_next_login(settings):
    settings.ADMIN_EMAILS = ["ops@bonito.test"]
    user = services.user_create(actor=Actor(via="test"), email="ops@bonito.test", password=PASSWORD)
    settings.ADMIN_EMAILS = []
    client = _login("ops@bonito.test")
    user.refresh_from_db()
    assert not user.is_staff and not user.is_superuser
    assert client.get("/admin/").status_code == 302  # sent to the admin login
    assert AuditLog.objects.filter(action="user.platform_admin.revoke").exists()


def test_rights_granted_by_hand_survive_the_list(settings):
    settings.ADMIN_EMAILS = []
    user = User.objects.create_superuser(email="root@bonito.test", password=PASSWORD)
    _login("root@bonito.test")
    user.refresh_from_db()
    assert user.is_superuser
