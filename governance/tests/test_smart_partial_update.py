"""A partial update of the smart settings over REST changes only what it sends (the README:
PATCH changes only the fields sent): `smart` is merged as JSON Merge Patch (RFC 7396)
merges, key by key, null removing a key; sending one of aggressiveness and thresholds drops
the other (both together are refused). A PUT of a routing policy replaces `smart` whole.
The gateway settings' PUT, partial in every field, merges `smart` the same way."""

import pytest

from gateway.models import GatewayConfig
from governance.models import RoutingPolicy

pytestmark = pytest.mark.django_db
API = "/api/gateway/routing-policies"
CONFIG = "/api/gateway/config"
STORED = {
    "classifier": "rules",
    "thresholds": [0.15],
    "ab": {"share": 0.1, "classifier": "strong"},
    "keywords": {"math": ["integral"], "code": ["regex"]},
    "within": "cost_optimized",
}


def _policy(client, smart=STORED, name="saver"):
    created = client.post(
        API,
        {"name": name, "strategy": "smart", "models": ["lite", "pro"], "smart": smart},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    return created.json()["id"]


def _patch(client, pk, body):
    return client.patch(f"{API}/{pk}", body, content_type="application/json")


def _stored(pk):
    return RoutingPolicy.objects.get(pk=pk).smart


# (what a PATCH sends in `smart`, the settings stored after it)
MERGED = [
    # a key sent replaces that key; the others stay
    ({"thresholds": [0.2]}, {**STORED, "thresholds": [0.2]}),
    ({"within": "round_robin"}, {**STORED, "within": "round_robin"}),
    ({"classifier": "rules"}, STORED),
    # the exclusive pair: the one sent drops the other
    (
        {"aggressiveness": 0.8},
        {**{k: v for k, v in STORED.items() if k != "thresholds"}, "aggressiveness": 0.8},
    ),
    # null removes a key (its default applies again)
    ({"ab": None}, {k: v for k, v in STORED.items() if k != "ab"}),
    ({"thresholds": None}, {k: v for k, v in STORED.items() if k != "thresholds"}),
    (
        {"within": None, "keywords": None},
        {k: STORED[k] for k in ("classifier", "thresholds", "ab")},
    ),
    # a mapping inside is merged the same way
    ({"ab": {"share": 0.3}}, {**STORED, "ab": {"share": 0.3, "classifier": "strong"}}),
    (
        {"keywords": {"math": None, "simple": ["hi"]}},
        {**STORED, "keywords": {"code": ["regex"], "simple": ["hi"]}},
    ),
    # nothing sent in it changes nothing; `smart: null` removes every setting
    ({}, STORED),
    (None, {}),
]


@pytest.mark.parametrize(("sent", "after"), MERGED)
def test_a_patch_merges_the_smart_settings_it_sends(alice_client, org_a, sent, after):
    pk = _policy(alice_client)
    response = _patch(alice_client, pk, {"smart": sent})
    assert response.status_code == 200, response.content
    assert response.json()["smart"] == after
    assert _stored(pk) == after


def test_the_exclusive_pair_is_swapped_both_ways_and_refused_together(alice_client, org_a):
    pk = _policy(alice_client)
    assert _patch(alice_client, pk, {"smart": {"aggressiveness": 0.8}}).status_code == 200
    back = _patch(alice_client, pk, {"smart": {"thresholds": [0.3]}})
    assert back.status_code == 200, back.content
    assert "aggressiveness" not in back.json()["smart"]
    assert back.json()["smart"]["thresholds"] == [0.3]
    both = _patch(alice_client, pk, {"smart": {"aggressiveness": 0.2, "thresholds": [0.4]}})
    assert both.status_code == 400
    assert "not both" in both.json()["smart"][0]
    assert _stored(pk)["thresholds"] == [0.3]  # a refused patch changes nothing


def test_a_merged_patch_is_checked_as_a_whole(alice_client, org_a):
    """What the merge gives is checked like any save: a wrong value sent is refused, and
    so is one that makes the stored settings wrong (the A/B arm as the classifier)."""
    pk = _policy(alice_client)
    bad = _patch(alice_client, pk, {"smart": {"ab": {"classifier": "rules"}}})
    assert bad.status_code == 400
    assert bad.json()["smart"] == ["smart.ab.classifier must differ from smart.classifier."]
    wrong = _patch(alice_client, pk, {"smart": {"thresholds": [0.2, 0.4]}})
    assert wrong.status_code == 400 and "smart" in wrong.json()
    not_a_mapping = _patch(alice_client, pk, {"smart": ["thresholds"]})
    assert not_a_mapping.status_code == 400
    assert _stored(pk) == STORED


def test_a_put_replaces_the_smart_settings_whole(alice_client, org_a):
    pk = _policy(alice_client)
    body = {"strategy": "smart", "models": ["lite", "pro"], "smart": {"thresholds": [0.2]}}
    put = alice_client.put(f"{API}/{pk}", body, content_type="application/json")
    assert put.status_code == 200, put.content
    assert put.json()["smart"] == {"thresholds": [0.2]} == _stored(pk)
    # a PUT that does not send `smart` keeps it, as it keeps every field it does not send
    kept = alice_client.put(f"{API}/{pk}", {"is_active": False}, content_type="application/json")
    assert kept.status_code == 200, kept.content
    assert _stored(pk) == {"thresholds": [0.2]}


def test_switching_away_from_smart_drops_the_settings_and_a_patch_then_sends_them_alone(
    alice_client, org_a
):
    pk = _policy(alice_client)
    off = _patch(alice_client, pk, {"strategy": "failover"})
    assert off.status_code == 200 and off.json()["smart"] == {}
    on = _patch(alice_client, pk, {"strategy": "smart", "smart": {"aggressiveness": 0.7}})
    assert on.status_code == 200, on.content
    assert on.json()["smart"] == {"aggressiveness": 0.7}  # the old ones do not come back


def test_another_org_cannot_patch_the_policy(alice_client, charlie_client, org_a):
    pk = _policy(alice_client)
    assert _patch(charlie_client, pk, {"smart": {"ab": None}}).status_code == 404
    assert _stored(pk) == STORED


# ------------------------------------------------------------------------------ the org default
ORG_STORED = {
    "classifier": "rules",
    "thresholds": [0.3],
    "ab": {"share": 0.2, "classifier": "strong"},
    "keywords": {"math": ["integral"]},
}


def _config(client, body):
    return client.put(CONFIG, body, content_type="application/json")


def _org_default(client):
    on = _config(client, {"smart_tiers": ["lite", "pro"], "smart": ORG_STORED})
    assert on.status_code == 200, on.content


@pytest.mark.parametrize(
    ("sent", "after"),
    [
        ({"classifier": "rules"}, ORG_STORED),
        (
            {"aggressiveness": 0.6},
            {**{k: v for k, v in ORG_STORED.items() if k != "thresholds"}, "aggressiveness": 0.6},
        ),
        ({"keywords": None}, {k: v for k, v in ORG_STORED.items() if k != "keywords"}),
        ({"ab": {"share": 0}}, {**ORG_STORED, "ab": {"share": 0, "classifier": "strong"}}),
        (None, {}),
    ],
)
def test_the_config_put_merges_the_org_default_s_smart_settings(alice_client, org_a, sent, after):
    _org_default(alice_client)
    response = _config(alice_client, {"smart": sent})
    assert response.status_code == 200, response.content
    assert response.json()["smart"] == after
    config = GatewayConfig.objects.get(org=org_a)
    assert (config.smart_tiers, config.smart) == (["lite", "pro"], after)


def test_the_config_put_refuses_both_of_the_pair_and_still_turns_off_by_tiers(alice_client, org_a):
    _org_default(alice_client)
    both = _config(alice_client, {"smart": {"aggressiveness": 0.2, "thresholds": [0.4]}})
    assert both.status_code == 400 and "not both" in both.json()["smart"][0]
    assert GatewayConfig.objects.get(org=org_a).smart == ORG_STORED
    off = _config(alice_client, {"smart_tiers": []})
    assert off.status_code == 200 and off.json()["smart"] == {}
    # with smart routing off, settings sent alone are still refused
    alone = _config(alice_client, {"smart": {"within": "round_robin"}})
    assert alone.status_code == 400 and "smart_tiers" in alone.content.decode()


def test_another_org_s_config_put_leaves_this_one_alone(alice_client, charlie_client, org_a):
    _org_default(alice_client)
    # Charlie's PUT is about Charlie's org, whose empty settings the merge starts from.
    theirs = _config(charlie_client, {"smart": {"ab": None}})
    assert theirs.status_code == 200 and theirs.json()["smart"] == {}
    assert GatewayConfig.objects.get(org=org_a).smart == ORG_STORED
