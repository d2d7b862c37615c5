"""A smart settings form saved after the settings changed elsewhere (REST, the config file,
a re-calibration, another tab) is refused, not applied over the newer settings: the page
sends what it was shown with (its hidden ``seen``), and a save from a stale page put back
the thresholds and A/B test the page had shown (an outside check)."""

import threading
import time

import pytest
from django.db import connection, transaction

from gateway import services as gateway_services
from gateway.models import GatewayConfig
from gateway.tests.conftest import ACTOR
from gateway.tests.page_forms import form_as_shown
from governance import services as gov
from governance.models import RoutingPolicy

pytestmark = pytest.mark.django_db


def test_a_stale_edit_page_saves_nothing_and_shows_what_is_saved(alice_client, org_a):
    policy = gov.routing_policy_save(
        actor=ACTOR,
        org=org_a,
        name="saver",
        strategy="smart",
        models=["lite", "pro"],
        smart={"thresholds": [0.1]},
    )
    url = f"/o/{org_a.slug}/routing/{policy.pk}/"
    shown = form_as_shown(alice_client.get(url).content.decode())
    assert shown["seen"] and shown["thresholds"] == "0.1"
    # Meanwhile, over REST (or a re-calibration): new thresholds and an A/B test.
    newer = {"thresholds": [0.15], "ab": {"share": 0.125, "classifier": "learned"}}
    gov.routing_policy_save(
        actor=ACTOR, org=org_a, name="saver", strategy="smart", models=["lite", "pro"], smart=newer
    )
    response = alice_client.post(url, shown)  # the page as it was shown, sent
    assert response.status_code == 409
    page = response.content.decode()
    assert "was changed after this page was opened" in page and "nothing was saved" in page
    assert RoutingPolicy.objects.get(pk=policy.pk).smart == newer
    # The page now shows the newer settings, and a save from it goes through.
    fresh = form_as_shown(page)
    assert fresh["thresholds"] == "0.15" and fresh["ab_share"] == "12"  # 0.125, shown whole
    assert fresh["seen"] != shown["seen"]
    fresh["thresholds"] = "0.2"
    assert alice_client.post(url, fresh).status_code == 302
    saved = RoutingPolicy.objects.get(pk=policy.pk).smart
    assert saved["thresholds"] == [0.2] and saved["ab"] == newer["ab"]


def test_a_refused_edit_keeps_the_version_it_was_shown(alice_client, org_a):
    """A save refused for its input and sent again after a change elsewhere is still
    stale: the page shown again carries the version the user first saw."""
    policy = gov.routing_policy_save(
        actor=ACTOR, org=org_a, name="saver", strategy="smart", models=["lite", "pro"]
    )
    url = f"/o/{org_a.slug}/routing/{policy.pk}/"
    shown = form_as_shown(alice_client.get(url).content.decode())
    refused = alice_client.post(url, {**shown, "thresholds": "2"})
    assert refused.status_code == 400
    again = form_as_shown(refused.content.decode())
    assert again["seen"] == shown["seen"]
    gov.routing_policy_save(
        actor=ACTOR, org=org_a, name="saver", strategy="smart", models=["lite", "mid", "pro"]
    )
    assert alice_client.post(url, {**again, "thresholds": ""}).status_code == 409
    assert RoutingPolicy.objects.get(pk=policy.pk).model_names == ["lite", "mid", "pro"]


def test_an_unchanged_policy_saves_and_a_form_without_seen_is_not_checked(alice_client, org_a):
    policy = gov.routing_policy_save(
        actor=ACTOR, org=org_a, name="saver", strategy="smart", models=["lite", "pro"]
    )
    url = f"/o/{org_a.slug}/routing/{policy.pk}/"
    shown = form_as_shown(alice_client.get(url).content.decode())
    assert alice_client.post(url, {**shown, "thresholds": "0.3"}).status_code == 302
    del shown["seen"]  # a script posting the form's fields, as before the check
    assert alice_client.post(url, {**shown, "thresholds": "0.4"}).status_code == 302
    assert RoutingPolicy.objects.get(pk=policy.pk).smart["thresholds"] == [0.4]


def test_a_stale_org_default_form_saves_nothing(alice_client, org_a):
    gateway_services.gateway_config_set(
        actor=ACTOR, org=org_a, smart_tiers=["lite", "pro"], smart={"thresholds": [0.1]}
    )
    url = f"/o/{org_a.slug}/routing/"
    shown = form_as_shown(alice_client.get(url).content.decode(), "org_smart")
    assert shown["seen"] and shown["smart_tiers"] == "lite, pro"
    gateway_services.gateway_config_set(
        actor=ACTOR, org=org_a, smart_tiers=["lite", "pro"], smart={"thresholds": [0.15]}
    )
    response = alice_client.post(url, shown)
    assert response.status_code == 409
    page = response.content.decode()
    assert "The organization&#x27;s smart routing was changed after this page" in page
    assert GatewayConfig.objects.get(org=org_a).smart == {"thresholds": [0.15]}
    fresh = form_as_shown(page, "org_smart")
    assert fresh["thresholds"] == "0.15"
    fresh["thresholds"] = "0.2"
    assert alice_client.post(url, fresh).status_code == 302
    assert GatewayConfig.objects.get(org=org_a).smart["thresholds"] == [0.2]


def test_another_gateway_setting_saved_first_does_not_make_the_org_form_stale(alice_client, org_a):
    """With no settings row yet, a save of another gateway setting (Settings, REST) makes
    one with the defaults: the smart routing the page showed did not change, and its first
    save answered 409."""
    url = f"/o/{org_a.slug}/routing/"
    shown = form_as_shown(alice_client.get(url).content.decode(), "org_smart")
    assert not GatewayConfig.objects.filter(org=org_a).exists()
    put = alice_client.put(
        "/api/gateway/config", {"org_rpm_limit": 100}, content_type="application/json"
    )
    assert put.status_code == 200
    shown.update(smart_tiers="lite, pro")
    assert alice_client.post(url, shown).status_code == 302
    assert GatewayConfig.objects.get(org=org_a).smart_tiers == ["lite", "pro"]


def _save_held_open(save, started, release):
    """``save`` in a transaction left open (its rows locked) until ``release`` is set."""
    try:
        with transaction.atomic():
            save()
            started.set()
            release.wait(20)
    finally:
        connection.close()


def _post_in_thread(client, url, data):
    out = {}

    def post():
        try:
            out["response"] = client.post(url, data)
        finally:
            connection.close()

    thread = threading.Thread(target=post)
    thread.start()
    return thread, out


def _race(client, url, shown, newer_save):
    """A save elsewhere holds its transaction open while the stale page's save is sent; it
    commits while that save waits. The page's check must see it (a check read before the
    other commit passed and then wrote the page's settings over it)."""
    started, release = threading.Event(), threading.Event()
    other = threading.Thread(target=_save_held_open, args=(newer_save, started, release))
    other.start()
    assert started.wait(20)
    thread, out = _post_in_thread(client, url, shown)
    time.sleep(0.5)  # the page's save is under way (it waits for the row)
    assert thread.is_alive()
    release.set()
    other.join(20)
    thread.join(30)
    return out["response"]


@pytest.mark.django_db(transaction=True)
def test_a_save_elsewhere_during_the_pages_save_is_not_written_over(alice_client, org_a):
    policy = gov.routing_policy_save(
        actor=ACTOR, org=org_a, name="racer", strategy="smart", models=["lite", "pro"]
    )
    url = f"/o/{org_a.slug}/routing/{policy.pk}/"
    shown = form_as_shown(alice_client.get(url).content.decode())
    newer = {"thresholds": [0.15]}

    def save():
        gov.routing_policy_save(
            actor=ACTOR,
            org=org_a,
            name="racer",
            strategy="smart",
            models=["lite", "pro"],
            smart=newer,
        )

    response = _race(alice_client, url, {**shown, "thresholds": "0.3"}, save)
    assert response.status_code == 409
    assert RoutingPolicy.objects.get(pk=policy.pk).smart == newer


@pytest.mark.django_db(transaction=True)
def test_a_save_elsewhere_during_the_org_forms_save_is_not_written_over(alice_client, org_a):
    gateway_services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=["lite", "pro"])
    url = f"/o/{org_a.slug}/routing/"
    shown = form_as_shown(alice_client.get(url).content.decode(), "org_smart")

    def save():
        gateway_services.gateway_config_set(
            actor=ACTOR, org=org_a, smart_tiers=["lite", "pro"], smart={"thresholds": [0.15]}
        )

    response = _race(alice_client, url, {**shown, "thresholds": "0.3"}, save)
    assert response.status_code == 409
    assert GatewayConfig.objects.get(org=org_a).smart == {"thresholds": [0.15]}
