"""The Providers page in a real browser: choosing a kind opens its fieldset (CSS only, no
script, nothing the CSP refuses), and a Bedrock connection is configured end to end."""

import pytest

from conftest import PASSWORD
from gateway.dataplane import provider_kinds
from gateway.models import ProviderConnection
from gateway.tests.test_browser import SHOTS, chromium_page

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def visible_kinds(page) -> list[str]:
    return [name for name in provider_kinds.KINDS if page.locator(f"#fields-{name}").is_visible()]


def test_choosing_a_kind_shows_its_fields_and_saves_them(
    live_server_thread, org_a, alice, monkeypatch
):
    base = live_server_thread.url
    with chromium_page(monkeypatch) as page:
        refused = []
        page.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(base + "/login/")
        page.fill("input[name=username]", alice.email)
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")
        page.goto(base + f"/o/{org_a.slug}/providers/")
        first = next(iter(provider_kinds.KINDS))
        assert visible_kinds(page) == [first]

        page.click("label[for=kind-bedrock]")
        assert visible_kinds(page) == ["bedrock"]
        page.fill("input[name=name]", "aws")
        page.fill("input[name=bedrock-aws_access_key_id]", "AKIDBROWSER")
        page.fill("input[name=bedrock-aws_secret_access_key]", "browser-secret-key")
        page.fill("input[name=bedrock-aws_region_name]", "eu-west-3")
        page.screenshot(path=str(SHOTS / "providers-bedrock.png"), full_page=True)
        with page.expect_navigation():
            page.click("form:has(#kind-bedrock) button[type=submit]")
        assert "Provider aws saved." in page.content()

        provider = ProviderConnection.objects.get(org=org_a, name="aws")
        assert provider.kind == "bedrock" and provider.settings == {"aws_region_name": "eu-west-3"}
        assert provider.get_credentials() == {
            "aws_access_key_id": "AKIDBROWSER",
            "aws_secret_access_key": "browser-secret-key",
        }
        page.click(f"a[href$='/providers/{provider.id}/']")
        secret = page.locator("input[name=bedrock-aws_secret_access_key]")
        assert secret.is_visible() and secret.input_value() == ""
        assert "stored" in secret.get_attribute("placeholder")
        assert "browser-secret-key" not in page.content()
        assert not refused, refused
