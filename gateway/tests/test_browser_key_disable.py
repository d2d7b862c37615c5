"""Disabling and enabling a key in a real browser: the confirmation is the page's script
(static/js/bonito.js data-confirm, nothing the CSP refuses); dismissing it changes nothing."""

import pytest

from conftest import PASSWORD
from gateway import services
from gateway.models import ApiKey
from gateway.tests.test_browser import chromium_page
from orgs.audit import Actor

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _login(page, base, user):
    page.goto(base + "/login/")
    page.fill("input[name=username]", user.email)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")


def test_a_member_disables_their_key_and_an_admin_enables_it(
    live_server_thread, org_a, alice, bob, monkeypatch
):
    base = live_server_thread.url
    key, _raw = services.api_key_create(
        actor=Actor(user=bob, via="test"), org=org_a, name="bob-key"
    )
    row = "tr:has-text('bob-key')"
    for user, verb, active_after in ((bob, "Disable", False), (alice, "Enable", True)):
        with chromium_page(monkeypatch) as page:
            refused, dialogs = [], []
            page.on(
                "console",
                lambda m, refused=refused: (
                    refused.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            answer = {"accept": False}

            def on_dialog(dialog, dialogs=dialogs, answer=answer):
                dialogs.append(dialog.message)
                dialog.accept() if answer["accept"] else dialog.dismiss()

            page.on("dialog", on_dialog)
            _login(page, base, user)
            page.goto(base + "/o/acme/keys/")
            button = f"{row} button:has-text('{verb}')"
            page.click(button)  # dismissed: nothing happens
            assert dialogs and verb in dialogs[-1]
            assert ApiKey.objects.get(pk=key.pk).is_active is not active_after
            answer["accept"] = True
            with page.expect_navigation():
                page.click(button)
            assert ApiKey.objects.get(pk=key.pk).is_active is active_after
            status = page.inner_text(row)
            assert ("disabled" in status) is (not active_after)
            assert refused == []
