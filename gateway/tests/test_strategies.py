"""The routing-strategy registry (core/strategies.py): every strategy orders
deployments the same way the data plane uses it, weighted routing policies split by their
weights, and an unknown strategy is refused by every way in and never published."""

import collections
import logging
import random
import re
from pathlib import Path

import pytest

from core import strategies
from gateway.dataplane import routing
from gateway.dataplane.snapshot import DeploymentInfo

DRAWS = 10_000


def _dep(i, model="m", **kw):
    return DeploymentInfo(
        id=i, model=model, provider=f"p{i}", kind="openai", upstream_model=f"u{i}", **kw
    )


def _health(seed=1):
    return routing.DeploymentHealth(rng=random.Random(seed))


ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ the registry
def test_the_docs_list_exactly_the_registry():
    """The two places a user reads the strategy names (the config file's reference and the
    gateway's routing section) name every strategy and no other, so a strategy added to
    the registry cannot be left out of them."""
    config = (ROOT / "docs" / "config.md").read_text()
    line = re.search(r"strategy: \w+ +# (.*)", config).group(1)
    assert [s.strip() for s in line.split("|")] == list(strategies.STRATEGIES)

    routing = (ROOT / "docs" / "gateway.md").read_text().split("## Routing", 1)[1]
    listed = routing.split("A 429", 1)[0]
    assert re.findall(r"`(\w+)`", listed) == list(strategies.STRATEGIES)


def test_the_model_fields_offer_exactly_the_registry():
    from gateway.models import GatewayConfig
    from governance.models import RoutingPolicy

    for field in (
        RoutingPolicy._meta.get_field("strategy"),
        GatewayConfig._meta.get_field("default_strategy"),
    ):
        assert list(field.choices) == strategies.choices()
        assert field.default == strategies.DEFAULT
        assert field.max_length == strategies.NAME_MAX_LENGTH


@pytest.mark.parametrize("name", list(strategies.STRATEGIES))
def test_every_strategy_orders_a_permutation_and_cooling_deployments_go_last(name):
    health = _health()
    deps = [_dep(1, weight=3), _dep(2, model="n", input_cost=1e-6), _dep(3, model="n")]
    for _ in range(20):
        ordered = routing.order(name, deps, health, {"m": 1, "n": 1})
        assert sorted(d.id for d in ordered) == [1, 2, 3]
    for _ in range(routing.FAILURES_TO_OPEN):
        health.failure(2)
    for _ in range(20):
        assert routing.order(name, deps, health, {"m": 1, "n": 1})[-1].id == 2


@pytest.mark.parametrize("name", list(strategies.STRATEGIES))
def test_every_strategy_is_known_and_every_other_name_is_explained(name):
    assert strategies.error_for(name) is None
    for wrong in (name.upper(), name + " ", "", None, 5, ["failover"], {"a": 1}, "x" * 500):
        message = strategies.error_for(wrong)
        assert message.startswith("Unknown strategy ")
        assert all(s in message for s in strategies.STRATEGIES)
        assert len(message) < 300  # a huge value is shown shortened


@pytest.mark.parametrize(
    "entry",
    [
        strategies.Strategy("failover", "Again", strategies._failover),  # a second failover
        strategies.Strategy("two words", "Bad", strategies._failover),
        strategies.Strategy("x" * (strategies.NAME_MAX_LENGTH + 1), "Long", strategies._failover),
    ],
)
def test_the_registry_refuses_a_name_that_cannot_be_stored_or_is_taken(entry):
    with pytest.raises(ValueError):
        strategies._registry(*strategies.STRATEGIES.values(), entry)


def test_an_unknown_strategy_in_a_snapshot_is_logged_once_and_served_as_failover(caplog):
    health = _health()
    deps = [_dep(1), _dep(2), _dep(3)]
    with caplog.at_level(logging.ERROR, logger="bonito.gateway.routing"):
        for _ in range(3):
            assert [d.id for d in routing.order("psychic", deps, health)] == [1, 2, 3]
    [record] = caplog.records
    assert record.levelno == logging.ERROR and "'psychic'" in record.getMessage()


# ------------------------------------------------------------------------------ weighted
def _first_models(weights, models=("a", "b"), seed=1):
    health = _health(seed)
    deps = [_dep(i, model=m) for i, m in enumerate(models)]
    return collections.Counter(
        routing.order("weighted", deps, health, weights)[0].model for _ in range(DRAWS)
    )


@pytest.mark.parametrize(
    "weights",
    [{"a": 90, "b": 10}, {"a": 10, "b": 90}, {"a": 1, "b": 1}, {"a": 1, "b": 2, "c": 7}],
    ids=str,
)
def test_a_weighted_policy_splits_requests_by_its_model_weights(weights):
    firsts = _first_models(weights, models=tuple(weights))
    total = sum(weights.values())
    for model, weight in weights.items():
        assert abs(firsts[model] / DRAWS - weight / total) < 0.02, (model, firsts)


def test_a_model_without_weight_or_with_0_is_only_a_fallback():
    health = _health()
    deps = [_dep(1, model="zero"), _dep(2, model="a"), _dep(3, model="unlisted"), _dep(4, "b")]
    for _ in range(500):
        ordered = [
            d.model for d in routing.order("weighted", deps, health, {"zero": 0, "a": 3, "b": 1})
        ]
        assert set(ordered[:2]) == {"a", "b"}
        assert ordered[2:] == ["zero", "unlisted"]  # in the policy's order


def test_within_a_model_the_deployment_weights_still_split():
    health = _health()
    deps = [_dep(1, model="a", weight=3), _dep(2, model="a", weight=1), _dep(3, model="b")]
    firsts = collections.Counter(
        routing.order("weighted", deps, health, {"a": 1, "b": 1})[0].id for _ in range(DRAWS)
    )
    # a is first half the time; within a, deployment 1 three times as often as 2.
    assert abs(firsts[1] / DRAWS - 0.375) < 0.02 and abs(firsts[2] / DRAWS - 0.125) < 0.02
    assert abs(firsts[3] / DRAWS - 0.5) < 0.02


def test_without_policy_weights_the_deployment_weights_split():
    health = _health()
    deps = [_dep(1, weight=9), _dep(2, weight=1)]
    firsts = collections.Counter(
        routing.order("weighted", deps, health)[0].id for _ in range(DRAWS)
    )
    assert abs(firsts[1] / DRAWS - 0.9) < 0.02


def test_a_weighted_draw_never_puts_a_zero_weight_item_before_a_weighted_one():
    class Edge:  # rng.random() at its largest value: pick rounds to the total
        @staticmethod
        def random():
            return 1 - 2**-53

    for total in (3, 10, 0.1 + 0.2, 1e-9, 2**31 - 1):
        items = [("x", 0), ("y", total), ("z", 0)]
        out = strategies.weighted_draw(items, lambda item: item[1], Edge)
        assert out[0][0] == "y"


# ------------------------------------------------------------------------------ every way in
WRONG = "psychic"


def _assert_names_the_allowed(text):
    assert WRONG in text and all(s in text for s in strategies.STRATEGIES), text


@pytest.mark.django_db
def test_the_services_refuse_an_unknown_strategy_naming_the_field(org_a):
    from django.core.exceptions import ValidationError

    from gateway import services as gateway_services
    from gateway.tests.conftest import ACTOR
    from governance import services
    from governance.models import RoutingPolicy
    from orgs.models import AuditLog

    with pytest.raises(ValidationError) as info:
        services.routing_policy_save(actor=ACTOR, org=org_a, name="r", strategy=WRONG, models=["a"])
    assert list(info.value.message_dict) == ["strategy"]
    _assert_names_the_allowed(info.value.message_dict["strategy"][0])
    with pytest.raises(ValidationError) as info:
        gateway_services.gateway_config_set(actor=ACTOR, org=org_a, default_strategy=WRONG)
    assert list(info.value.message_dict) == ["default_strategy"]
    _assert_names_the_allowed(info.value.message_dict["default_strategy"][0])
    assert not RoutingPolicy.objects.exists()
    assert not AuditLog.objects.filter(action__startswith="routing_policy").exists()
    assert not AuditLog.objects.filter(action__startswith="gateway_config").exists()


@pytest.mark.django_db
def test_rest_refuses_an_unknown_strategy_naming_the_field(alice_client):
    from governance.models import RoutingPolicy

    created = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "r", "strategy": WRONG, "models": ["a"]},
        content_type="application/json",
    )
    assert created.status_code == 400
    _assert_names_the_allowed(created.json()["strategy"][0])
    for wrong in (None, 5, ["failover"]):
        response = alice_client.put(
            "/api/gateway/config", {"default_strategy": wrong}, content_type="application/json"
        )
        assert response.status_code == 400 and "default_strategy" in response.json()
    response = alice_client.put(
        "/api/gateway/config", {"default_strategy": WRONG}, content_type="application/json"
    )
    assert response.status_code == 400
    _assert_names_the_allowed(response.json()["default_strategy"][0])
    assert not RoutingPolicy.objects.exists()
    assert alice_client.get("/api/gateway/config").json()["default_strategy"] == "failover"


@pytest.mark.django_db
def test_the_openapi_schema_lists_the_registry_as_the_strategy_enum(alice_client):
    schema = alice_client.get("/api/schema/?format=json").json()
    enum = schema["components"]["schemas"]["RoutingStrategyEnum"]["enum"]
    assert enum == list(strategies.STRATEGIES)


@pytest.mark.django_db
def test_the_routing_page_offers_the_registry_and_refuses_an_unknown_strategy(alice_client, org_a):
    from django.urls import reverse

    from governance.models import RoutingPolicy

    url = reverse("routing", args=[org_a.slug])
    page = alice_client.get(url).content.decode()
    for name, label in strategies.choices():
        assert f'<option value="{name}">{label}</option>' in page
    response = alice_client.post(url, {"name": "r", "strategy": WRONG, "models": "a"}, follow=True)
    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith("Strategy: ")
    _assert_names_the_allowed(message)
    assert not RoutingPolicy.objects.exists()


@pytest.mark.django_db
def test_the_admin_refuses_an_unknown_strategy(admin_client, org_a):
    from bonito.tests.admin_forms import form_data
    from gateway import services as gateway_services
    from gateway.models import GatewayConfig
    from gateway.tests.conftest import ACTOR
    from governance import services
    from governance.models import RoutingPolicy

    policy = services.routing_policy_save(actor=ACTOR, org=org_a, name="r", models=["a"])
    config = gateway_services.gateway_config_set(actor=ACTOR, org=org_a, org_rpm_limit=10)
    for url, field in (
        (f"/admin/governance/routingpolicy/{policy.pk}/change/", "strategy"),
        (f"/admin/gateway/gatewayconfig/{config.pk}/change/", "default_strategy"),
    ):
        page = admin_client.get(url)
        field_choices = list(page.context["adminform"].form.fields[field].choices)
        assert field_choices == strategies.choices()
        response = admin_client.post(url, form_data(page, **{field: WRONG}))
        assert response.status_code == 200  # the form again, with the error at the field
        assert response.context["adminform"].form.errors[field]
    assert RoutingPolicy.objects.get().strategy == "failover"
    assert GatewayConfig.objects.get().default_strategy == "failover"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fragment,path",
    [
        ("routing_policies: [{name: r, strategy: psychic, models: [x]}]", "routing_policies[0]"),
        ("gateway: {default_strategy: psychic}", "gateway"),
    ],
)
def test_apply_config_refuses_an_unknown_strategy_naming_its_path(tmp_path, fragment, path):
    from django.core.management import CommandError, call_command

    from orgs.models import Organization

    file = tmp_path / "bonito.yaml"
    file.write_text(f"orgs:\n  - slug: acme\n    name: Acme\n    {fragment}\n")
    with pytest.raises(CommandError) as info:
        call_command("apply_config", str(file))
    message = str(info.value)
    field = "strategy" if path.startswith("routing") else "default_strategy"
    assert f"orgs[0].{path}.{field}: Unknown strategy 'psychic'" in message
    _assert_names_the_allowed(message)
    assert not Organization.objects.exists()


# ------------------------------------------------------------------------------ the snapshot
@pytest.mark.django_db
def test_the_snapshot_never_publishes_an_unknown_strategy(org_a, caplog):
    from gateway import services as gateway_services
    from gateway.models import GatewayConfig
    from gateway.snapshot_builder import build_snapshot
    from gateway.tests.conftest import ACTOR
    from governance import services
    from governance.models import RoutingPolicy

    services.routing_policy_save(
        actor=ACTOR, org=org_a, name="r", strategy="weighted", models=["a"]
    )
    gateway_services.gateway_config_set(actor=ACTOR, org=org_a, default_strategy="round_robin")
    # Rows written around the saves (by hand, or naming a strategy since removed).
    RoutingPolicy.objects.update(strategy=WRONG)
    GatewayConfig.objects.update(default_strategy="gone")
    with caplog.at_level(logging.ERROR, logger="bonito.gateway.snapshot"):
        org = build_snapshot().orgs[org_a.id]
    assert org.strategy == "failover" and org.routing_policies["r"].strategy == "failover"
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "'psychic'" in logged and "'gone'" in logged


@pytest.mark.django_db
def test_the_snapshot_keeps_only_valid_weights_of_a_row_written_around_the_saves(org_a, caplog):
    from gateway.snapshot_builder import build_snapshot
    from gateway.tests.conftest import ACTOR
    from governance import services
    from governance.models import RoutingPolicy

    services.routing_policy_save(
        actor=ACTOR, org=org_a, name="r", strategy="weighted", models=["a", "b"], weights={"a": 1}
    )
    RoutingPolicy.objects.update(weights={"a": 9, "b": "x", "c": -1, "d": True, "e": None})
    with caplog.at_level(logging.ERROR, logger="bonito.gateway.snapshot"):
        policy = build_snapshot().orgs[org_a.id].routing_policies["r"]
    assert policy.weights == {"a": 9}
    assert "invalid weights" in caplog.text


# ------------------------------------------------------------------------------ weights at save
BAD_WEIGHTS = {
    "a model not in the policy": ({"a": 1, "c": 1}, "'c', which is not one of this policy's"),
    "negative": ({"a": -1}, "must be from 0 to"),
    "a fraction": ({"a": 1.5}, "must be a whole number"),
    "text": ({"a": "lots"}, "must be a whole number"),
    "true": ({"a": True}, "must be a whole number"),
    "huge": ({"a": 2**40}, "must be from 0 to"),
    "all zero": ({"a": 0, "b": 0}, "all 0"),
    "not a mapping": (["a", 1], "must be a mapping"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_the_service_refuses_bad_weights_naming_the_field(org_a, case):
    from django.core.exceptions import ValidationError

    from gateway.tests.conftest import ACTOR
    from governance import services
    from governance.models import RoutingPolicy

    weights, expected = BAD_WEIGHTS[case]
    with pytest.raises(ValidationError) as info:
        services.routing_policy_save(
            actor=ACTOR,
            org=org_a,
            name="r",
            strategy="weighted",
            models=["a", "b"],
            weights=weights,
        )
    assert list(info.value.message_dict) == ["weights"]
    assert expected in info.value.message_dict["weights"][0]
    assert not RoutingPolicy.objects.exists()


@pytest.mark.django_db
def test_good_weights_are_stored_as_whole_numbers(org_a):
    from gateway.tests.conftest import ACTOR
    from governance import services

    policy = services.routing_policy_save(
        actor=ACTOR,
        org=org_a,
        name="r",
        strategy="weighted",
        models=["a", "b", "c"],
        weights={"a": 90, "b": "10", "c": 0},  # "10": the dashboard form's text
    )
    assert policy.weights == {"a": 90, "b": 10, "c": 0}


@pytest.mark.django_db
def test_rest_refuses_weights_for_a_model_outside_the_policy(alice_client):
    response = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "r", "strategy": "weighted", "models": ["a", "b"], "weights": {"a": 1, "c": 1}},
        content_type="application/json",
    )
    assert response.status_code == 400 and "'c'" in response.json()["weights"][0]
    created = alice_client.post(
        "/api/gateway/routing-policies",
        {"name": "r", "strategy": "weighted", "models": ["a", "b"], "weights": {"a": 9, "b": 1}},
        content_type="application/json",
    )
    assert created.status_code == 201 and created.json()["weights"] == {"a": 9, "b": 1}
    # Dropping a weighted model without its weight is refused, the policy unchanged.
    changed = alice_client.patch(
        f"/api/gateway/routing-policies/{created.json()['id']}",
        {"models": ["a"]},
        content_type="application/json",
    )
    assert changed.status_code == 400 and "'b'" in changed.json()["weights"][0]


@pytest.mark.django_db
def test_apply_config_refuses_bad_weights_naming_their_path(tmp_path):
    from django.core.management import CommandError, call_command

    file = tmp_path / "bonito.yaml"
    file.write_text(
        "orgs:\n  - slug: acme\n    name: Acme\n"
        "    routing_policies: [{name: r, strategy: weighted, models: [a, b], "
        "weights: {a: 0, b: 0}}]\n"
    )
    with pytest.raises(CommandError, match=r"orgs\[0\]\.routing_policies\[0\]\.weights: .*all 0"):
        call_command("apply_config", str(file))


@pytest.mark.django_db
def test_the_routing_page_saves_and_shows_weights(alice_client, org_a):
    from django.urls import reverse

    from governance.models import RoutingPolicy

    url = reverse("routing", args=[org_a.slug])
    form = {"name": "ab", "strategy": "weighted", "models": "model-a, model-b"}
    response = alice_client.post(url, {**form, "weights": "model-a=90, model-b"}, follow=True)
    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith("Weights: ") and "'model-b'" in message
    response = alice_client.post(url, {**form, "weights": "model-a=90, model-c=10"}, follow=True)
    assert "'model-c'" in str(list(response.context["messages"])[0])
    assert not RoutingPolicy.objects.exists()
    response = alice_client.post(url, {**form, "weights": "model-a=90, model-b=10"}, follow=True)
    assert RoutingPolicy.objects.get().weights == {"model-a": 90, "model-b": 10}
    assert "model-a=90, model-b=10" in response.content.decode()


@pytest.mark.django_db
def test_the_admin_refuses_bad_weights_with_a_message(admin_client, org_a):
    from bonito.tests.admin_forms import form_data
    from gateway.tests.conftest import ACTOR
    from governance import services
    from governance.models import RoutingPolicy

    policy = services.routing_policy_save(actor=ACTOR, org=org_a, name="r", models=["a", "b"])
    url = f"/admin/governance/routingpolicy/{policy.pk}/change/"
    response = admin_client.post(
        url, form_data(admin_client.get(url), strategy="weighted", weights='{"a": -5}')
    )
    assert response.status_code == 302
    messages = [str(m) for m in admin_client.get(response.url).context["messages"]]
    assert any("The weight of 'a' must be from 0" in m for m in messages), messages
    assert RoutingPolicy.objects.get().weights == {}
