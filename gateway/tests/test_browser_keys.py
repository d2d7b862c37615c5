"""Editing and rotating a key in a real browser: the confirmation is the page's script
(static/js, nothing the CSP refuses), the new secret is shown once."""

import pytest

from conftest import PASSWORD
from core import keys
from gateway import services
from gateway.models import ApiKey, key_hash_secret
from gateway.tests.conftest import org_models
from gateway.tests.test_browser import SHOTS, chromium_page
from orgs.audit import Actor
from orgs.models import AuditLog

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_member_edits_and_rotates_their_key(live_server_thread, org_a, bob, monkeypatch):
    base = live_server_thread.url
    org_models(org_a, "chat-small", "embed-small")
    key, old_raw = services.api_key_create(
        actor=Actor(user=bob, via="test"), org=org_a, name="bob-key", rpm_limit=5
    )
    with chromium_page(monkeypatch) as page:
        refused, dialogs = [], []
        page.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        answer = {"accept": False}

        def on_dialog(dialog):
            dialogs.append(dialog.message)
            dialog.accept() if answer["accept"] else dialog.dismiss()

        page.on("dialog", on_dialog)
        page.goto(base + "/login/")
        page.fill("input[name=username]", bob.email)
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")

        # Edit: from the key list to the key's page and back, saved.
        page.goto(base + "/o/acme/keys/")
        with page.expect_navigation():
            page.click("tr:has-text('bob-key') a:has-text('Edit')")
        page.fill("#edit-key input[name=name]", "bob-key-2")
        page.fill("#edit-key input[name=rpm_limit]", "4")  # a member may lower it
        page.fill("#edit-key input[name=allowed_models]", "chat-small, embed-small")
        with page.expect_navigation():
            page.click("#edit-key button[type=submit]")
        assert "Key bob-key-2" in page.content() and "saved" in page.content()
        key.refresh_from_db()
        assert (key.name, key.rpm_limit, key.allowed_models) == (
            "bob-key-2",
            4,
            ["chat-small", "embed-small"],
        )
        assert key.matches(old_raw)  # editing keeps the secret

        # Rotate, dismissing the confirmation first: nothing happens.
        page.goto(base + f"/o/acme/keys/{key.id}/edit/")
        page.select_option("#rotate-key select[name=grace_seconds]", "3600")
        page.click("#rotate-key button[type=submit]")
        assert dialogs and "new secret" in dialogs[-1]
        assert ApiKey.objects.get(pk=key.pk).matches(old_raw)
        # Then accepting it: the new secret once, the old one kept for the hour chosen.
        answer["accept"] = True
        with page.expect_navigation():
            page.click("#rotate-key button[type=submit]")
        new_raw = page.inner_text("#new-key").strip()
        page.screenshot(path=str(SHOTS / "key-rotated.png"), full_page=True)
        assert new_raw.startswith("bn-") and new_raw != old_raw
        assert "keeps working until" in page.content()
        key.refresh_from_db()
        assert key.matches(new_raw) and key.previous_valid()
        # Reloading the result page rotates nothing: one rotation audited, both secrets work
        # (the old one for its grace), and the secret is not shown again.
        with page.expect_navigation():
            page.reload()
        assert "already shown" in page.content() and new_raw not in page.content()
        assert AuditLog.objects.filter(action="api_key.rotate", target_id=str(key.id)).count() == 1
        key.refresh_from_db()
        assert key.matches(new_raw) and key.previous_valid()
        assert key.previous_key_hash == keys.digest(old_raw, key_hash_secret())
        page.goto(base + f"/o/acme/keys/{key.id}/edit/")
        assert new_raw not in page.content()
        page.goto(base + "/o/acme/keys/")
        assert new_raw not in page.content() and "old secret" in page.content()
        assert not refused, refused
