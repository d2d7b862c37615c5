"""The config file reads a smart setting given as null as REST does: not set (its default
applies). It refused `classifier: null` ("Unknown classifier 'None'"), `keywords: {code:
null}` and `gateway.smart: null` while it took `ab: null`. A key written twice in one
mapping is refused where the second is, not silently the last one applied."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway.models import GatewayConfig
from gateway.tests.test_smart_routing import TWO_TIERS_FILE
from governance.models import RoutingPolicy

pytestmark = pytest.mark.django_db


def _apply(tmp_path, text):
    path = tmp_path / "bonito.yaml"
    path.write_text(TWO_TIERS_FILE + text)
    call_command("apply_config", str(path), stdout=StringIO(), stderr=StringIO())


def _policy(tmp_path, smart: str) -> dict:
    _apply(
        tmp_path,
        "    routing_policies:\n"
        f"      - {{name: saver, strategy: smart, models: [lite, pro], smart: {smart}}}\n",
    )
    return RoutingPolicy.objects.get(name="saver").smart


@pytest.mark.parametrize(
    ("smart", "stored"),
    [
        ("{classifier: null, aggressiveness: 0.7}", {"aggressiveness": 0.7}),
        ("{keywords: {code: null, math: [integral]}}", {"keywords": {"math": ["integral"]}}),
        ("{keywords: {code: null}}", {}),
        ("{ab: null, within: null, thresholds: [0.3]}", {"thresholds": [0.3]}),
        ("{ab: {share: 0, classifier: strong}}", {"ab": {"share": 0, "classifier": "strong"}}),
        ("null", {}),
    ],
)
def test_a_null_setting_is_not_set(tmp_path, smart, stored):
    assert _policy(tmp_path, smart) == stored


def test_an_ab_left_with_one_key_by_a_null_is_refused_saying_so(tmp_path):
    with pytest.raises(CommandError) as refused:
        _policy(tmp_path, "{ab: {share: null, classifier: strong}}")
    assert "smart.ab needs both share and classifier; it has only classifier" in str(refused.value)


def test_the_org_default_s_smart_null_is_no_settings(tmp_path):
    _apply(
        tmp_path, "    gateway:\n      smart_tiers: [lite, pro]\n      smart: {thresholds: [0.3]}\n"
    )
    _apply(tmp_path, "    gateway:\n      smart_tiers: [lite, pro]\n      smart: null\n")
    config = GatewayConfig.objects.get()
    assert (config.smart_tiers, config.smart) == (["lite", "pro"], {})


@pytest.mark.parametrize(
    "smart",
    [
        "{ab: {share: 0.1, classifier: strong, share: 0.2}}",
        "{aggressiveness: 0.2, aggressiveness: 0.9}",
    ],
)
def test_a_key_written_twice_is_refused_where_it_is(tmp_path, smart):
    with pytest.raises(CommandError) as refused:
        _policy(tmp_path, smart)
    message = str(refused.value)
    assert "is written twice in one mapping" in message and "line 10" in message, message
    assert not RoutingPolicy.objects.exists()


def test_a_merge_may_override_the_keys_it_brings(tmp_path):
    _apply(
        tmp_path,
        "    routing_policies:\n"
        "      - name: saver\n"
        "        strategy: smart\n"
        "        models: [lite, pro]\n"
        "        smart: &base {aggressiveness: 0.2, within: failover}\n"
        "      - name: other\n"
        "        strategy: smart\n"
        "        models: [lite, pro]\n"
        "        smart: {<<: *base, aggressiveness: 0.9}\n",
    )
    assert RoutingPolicy.objects.get(name="other").smart == {
        "aggressiveness": 0.9,
        "within": "failover",
    }
