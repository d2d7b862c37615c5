"""Config by deltas: a gateway that applies the change log's deltas to its snapshot holds
exactly the snapshot a full build gives, whatever sequence of changes the services make
(keys created, rotated and revoked, orgs, teams, policies, providers, deployments, routing
policies, gateway configs, tiers, budgets; creates, updates and deletes). And when the log cannot say what changed
(an "all" change, a pruned log, a reset counter) the refresher builds in full."""

import contextlib
from decimal import Decimal

import orjson
import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError, RestrictedError
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import budgets
from billing.models import UsageRecord
from core import config_version
from core.config_version import changes_since, config_version_bump, current_version
from core.models import ConfigChange, ConfigVersion
from gateway import services as gateway_services
from gateway.dataplane.snapshot import (
    apply_delta,
    delta_from_dict,
    delta_to_dict,
    keys_by_org,
    snapshot_to_dict,
)
from gateway.dataplane.state import SnapshotSource
from gateway.models import ApiKey, Deployment, ProviderConnection
from gateway.snapshot_builder import (
    SHARE_AT_MOST,
    SnapshotRefresher,
    build_delta,
    build_snapshot,
    refresh_facts,
    share_deltas,
    stored_deltas,
)
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs import services as org_services
from orgs.audit import Actor
from orgs.models import Organization, Team

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _writers_share_deltas():
    """The writer's delta per change on, as Bonito runs by default (the suite turns it off)."""
    from django.test import override_settings

    with override_settings(GATEWAY_SHARE_DELTAS=True):
        yield


ACTOR = Actor(via="test")
MODELS = ["chat", "embed", "gpt-4o-mini"]
TIERS = ["free", "pro", "enterprise"]


def comparable(snap) -> dict:
    out = snapshot_to_dict(snap, include_credentials=True)
    out.pop("built_at")
    return out


def index_of(snap) -> dict:
    return {o: sorted(h) for o, h in snap.key_hashes.items()}


def pick(draw, queryset):
    rows = list(queryset.order_by("pk"))
    return draw(st.sampled_from(rows)) if rows else None


def step(draw, n: int) -> bool:
    """One random change through the services (refused ones leave nothing behind); True
    when it was usage, not config."""
    op = draw(
        st.sampled_from(
            [
                "key_create",
                "org_create",
                "org_update",
                "org_delete",
                "team_create",
                "team_delete",
                "key_revoke",
                "key_rotate",
                "policy",
                "provider",
                "provider_delete",
                "deployment",
                "deployment_delete",
                "gateway_config",
                "routing",
                "routing_delete",
                "tier",
                "budget",
                "budget_delete",
                "usage",
            ]
        )
    )
    org = pick(draw, Organization.objects.all())
    models = draw(st.lists(st.sampled_from(MODELS), unique=True, max_size=2))
    if op == "org_create" or org is None:
        org_services.org_create(
            actor=ACTOR,
            name=f"Org {n} {draw(st.integers(0, 10**6))}",
            tier=draw(st.sampled_from(TIERS)),
        )
    elif op == "org_update":
        org_services.org_update(actor=ACTOR, org=org, tier=draw(st.sampled_from(TIERS)))
    elif op == "org_delete":
        org_services.org_delete(actor=ACTOR, org=org)
    elif op == "team_create":
        org_services.team_create(actor=ACTOR, org=org, name=f"team {n}")
    elif op == "team_delete":
        team = pick(draw, Team.objects.all())
        if team is not None:
            org_services.team_delete(actor=ACTOR, team=team)
    elif op == "key_create":
        # Objects are picked among all orgs' and the key goes to theirs: sequences that
        # touch the same org (a key of a team, then the team deleted) come often.
        team = pick(draw, Team.objects.all()) if draw(st.booleans()) else None
        org = team.org if team is not None else org
        rp = pick(draw, RoutingPolicy.objects.filter(org=org)) if draw(st.booleans()) else None
        gateway_services.api_key_create(
            actor=ACTOR,
            org=org,
            name=f"key {n}",
            allowed_models=models,
            team=team,
            routing_policy=rp,
        )
    elif op == "key_rotate":  # a grace, then another rotation, ends it: the org reloads
        key = pick(draw, ApiKey.objects.filter(revoked_at__isnull=True))
        if key is not None:
            gateway_services.api_key_rotate(
                actor=ACTOR, key=key, grace_seconds=draw(st.sampled_from([0, 0, 3600]))
            )
    elif op == "key_revoke":
        key = pick(draw, ApiKey.objects.all())
        if key is not None:
            gateway_services.api_key_revoke(actor=ACTOR, key=key)
    elif op == "policy":
        governance_services.policy_set(
            actor=ACTOR,
            org=org,
            allowed_models=models,
            monthly_spend_cap_usd=draw(st.sampled_from([None, "10.10", "0.5"])),
        )
    elif op == "provider":
        gateway_services.provider_save(
            actor=ACTOR,
            org=org,
            name=draw(st.sampled_from(["oai", "backup"])),
            kind="openai",
            credentials={"api_key": f"sk-test-credential-{n:08d}"},
            is_active=draw(st.booleans()),
        )
    elif op == "provider_delete":
        provider = pick(draw, ProviderConnection.objects.all())
        if provider is not None:
            gateway_services.provider_delete(actor=ACTOR, provider=provider)
    elif op == "deployment":
        provider = pick(draw, ProviderConnection.objects.all())
        if provider is not None:
            gateway_services.deployment_save(
                actor=ACTOR,
                org=provider.org,
                model_name=draw(st.sampled_from(MODELS)),
                provider=provider,
                upstream_model="gpt-4o-mini",
                weight=draw(st.integers(1, 5)),
                input_price_per_mtok=draw(st.sampled_from([None, "0.15"])),
            )
    elif op == "deployment_delete":
        deployment = pick(draw, Deployment.objects.all())
        if deployment is not None:
            gateway_services.deployment_delete(actor=ACTOR, deployment=deployment)
    elif op == "gateway_config":
        gateway_services.gateway_config_set(
            actor=ACTOR,
            org=org,
            default_strategy=draw(st.sampled_from(["failover", "round_robin"])),
            fallback_models=models,
            org_rpm_limit=draw(st.sampled_from([None, 60])),
        )
    elif op == "routing":
        governance_services.routing_policy_save(
            actor=ACTOR,
            org=org,
            name=draw(st.sampled_from(["fast", "cheap"])),
            models=models or ["chat"],
            is_active=draw(st.booleans()),
        )
    elif op == "routing_delete":
        rp = pick(draw, RoutingPolicy.objects.all())
        if rp is not None:
            governance_services.routing_policy_delete(actor=ACTOR, routing_policy=rp)
    elif op == "tier":
        org_services.tier_limit_set(
            actor=ACTOR,
            tier=draw(st.sampled_from(TIERS)),
            monthly_requests=draw(st.sampled_from([None, 1, 1000])),  # 1: met by one row
            monthly_spend_cap_usd=draw(st.sampled_from([None, Decimal("5.00")])),
            key_rpm=draw(st.sampled_from([None, 600])),
        )
    elif op == "budget":
        scope = draw(st.sampled_from(["org", "team", "key"]))
        team = pick(draw, Team.objects.all()) if scope == "team" else None
        key = pick(draw, ApiKey.objects.all()) if scope == "key" else None
        org = team.org if team else key.org if key else org
        if scope == "org" or team or key:
            budgets.budget_save(
                actor=ACTOR,
                org=org,
                scope=scope,
                team=team,
                key=key,
                amount_usd=draw(st.sampled_from(["0", "25", "0.01"])),  # 0: spent at once, blocks
                period=draw(st.sampled_from(["monthly", "daily"])),
                hard=draw(st.booleans()),
            )
    elif op == "budget_delete":
        budget = pick(draw, budgets.Budget.objects.all())
        if budget is not None:
            budgets.budget_delete(actor=ACTOR, budget=budget)
    elif op == "usage":  # spend moves (no config change: the facts refresh carries it)
        key = pick(draw, ApiKey.objects.filter(org=org))
        UsageRecord.objects.create(
            org=org,
            key=key,
            team_id=key.team_id if key else None,
            model_requested="chat",
            created_at=timezone.now(),
            cost=draw(st.sampled_from([Decimal("0.00000001"), Decimal("0.5")])),
        )
        return True
    return False


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_deltas_applied_give_exactly_the_full_build(org_a, org_b, data):
    with transaction.atomic():  # each example starts from the same database
        snap = build_snapshot()
        for n in range(20):  # long enough for sequences on one org's objects
            # A refused change leaves nothing behind (its transaction rolled back).
            usage = False
            with contextlib.suppress(ValidationError, ProtectedError, RestrictedError):
                usage = step(data.draw, n)
            version = current_version()
            delta = build_delta(snap.version, version)
            assert delta is not None  # every service says what it touched: no full build
            how = data.draw(st.sampled_from(["built", "wire", "stored"]))
            if how == "wire":  # as an agent receives it
                wire = orjson.loads(orjson.dumps(delta_to_dict(delta, include_credentials=True)))
                delta = delta_from_dict(wire)
            if how == "stored" and version > snap.version:  # as the writer stores them
                share_deltas(range(snap.version + 1, version + 1))
                for stored in stored_deltas(snap.version, version):
                    snap = apply_delta(snap, stored)
            else:
                snap = apply_delta(snap, delta)
            if usage:  # facts move with usage: the refresher reads them again for every org
                snap = refresh_facts(snap)
            full = build_snapshot()
            assert comparable(snap) == comparable(full)
            assert index_of(snap) == {o: sorted(h) for o, h in keys_by_org(full.keys).items()}
        transaction.set_rollback(True)


def test_the_serialised_delta_carries_no_credentials(org_a):
    snap = build_snapshot()
    gateway_services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="oai",
        kind="openai",
        credentials={"api_key": "sk-secret-0123456789"},
    )
    provider = ProviderConnection.objects.get(org=org_a, name="oai")
    gateway_services.deployment_save(
        actor=ACTOR, org=org_a, model_name="chat", provider=provider, upstream_model="gpt-4o-mini"
    )
    delta = build_delta(snap.version, current_version())
    assert delta.orgs[org_a.id].deployments["chat"][0].credentials  # kept in memory
    assert b"sk-secret" not in orjson.dumps(delta_to_dict(delta))


def test_one_orgs_delta_holds_only_that_org(org_a, org_b):
    snap = build_snapshot()
    key_a, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="a")
    gateway_services.api_key_create(actor=ACTOR, org=org_b, name="b")
    governance_services.policy_set(actor=ACTOR, org=org_b, allowed_models=["chat"])
    delta = build_delta(snap.version, current_version(), org_id=org_a.id)
    assert set(delta.keys) == {key_a.key_hash} and delta.orgs == {}
    assert {k.org_id for k in build_delta(snap.version, current_version()).keys.values()} == {
        org_a.id,
        org_b.id,
    }


@pytest.mark.parametrize("how", ["all", "pruned", "reset"])
def test_the_refresher_builds_in_full_when_the_log_cannot_say_what_changed(org_a, how, settings):
    source = SnapshotSource()
    refresher = SnapshotRefresher(source, interval=60)
    refresher.refresh_once()
    start = source.current.version
    key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="k")
    if how == "all":
        config_version_bump()
        assert build_delta(start, current_version()) is None
    elif how == "pruned":
        settings.CONFIG_CHANGES_KEPT = 1
        while current_version() % 100:  # pruning runs every 100 versions
            config_version_bump(config_version.KEY, org_id=org_a.id, ref=key.id)
        assert changes_since(start, current_version()) is None
    else:  # the counter went backwards (a restored database)
        ConfigVersion.objects.filter(pk=1).update(version=start - 1)
        ConfigChange.objects.all().delete()
        assert changes_since(start, start - 1) is None
    refresher.refresh_once()
    assert key.key_hash in source.current.keys
    assert comparable(source.current) == comparable(build_snapshot(source.current.version))


def test_the_refresher_applies_a_created_and_a_revoked_key_without_a_full_build(org_a, monkeypatch):
    source = SnapshotSource()
    refresher = SnapshotRefresher(source, interval=60)
    refresher.refresh_once()
    from gateway import snapshot_builder

    def no_full_build(*a, **k):
        raise AssertionError("a full build where a delta would do")

    monkeypatch.setattr(snapshot_builder, "build_snapshot", no_full_build)
    key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="k")
    refresher.refresh_once()
    assert source.current.keys[key.key_hash].revoked is False
    gateway_services.api_key_revoke(actor=ACTOR, key=key)
    refresher.refresh_once()
    assert source.current.keys[key.key_hash].revoked is True


def test_one_orgs_policy_delta_costs_a_few_queries(
    org_a, org_b, django_assert_num_queries, settings
):
    """A change to one org's settings reloads that org and its billing facts: a fixed
    handful of queries, whatever the org holds (deployments, routing policies, budgets of
    several periods and scopes, a tier with a request allowance, spent). It was 19 here."""
    provider = gateway_services.provider_save(
        actor=ACTOR, org=org_a, name="oai", kind="openai", credentials={"api_key": "sk-t" * 8}
    )
    for model in ("chat", "gpt-4o-mini"):
        gateway_services.deployment_save(
            actor=ACTOR, org=org_a, model_name=model, provider=provider, upstream_model=model
        )
    governance_services.routing_policy_save(actor=ACTOR, org=org_a, name="fast", models=["chat"])
    gateway_services.gateway_config_set(actor=ACTOR, org=org_a, org_rpm_limit=60)
    key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="ci")
    budgets.budget_save(actor=ACTOR, org=org_a, amount_usd="0", hard=True)  # spent: blocks
    budgets.budget_save(
        actor=ACTOR, org=org_a, scope="key", key=key, amount_usd="5", period="daily", hard=True
    )
    org_services.tier_limit_set(
        actor=ACTOR, tier=org_a.tier, monthly_requests=1, monthly_spend_cap_usd=None, key_rpm=None
    )
    UsageRecord.objects.create(
        org=org_a, key=key, model_requested="chat", cost=Decimal("0.25"), created_at=timezone.now()
    )  # one request: the tier's allowance is spent too
    snap = build_snapshot()
    governance_services.policy_set(actor=ACTOR, org=org_a, allowed_models=["chat"])
    version = current_version()
    # The change log; the org with its policy and gateway config; its deployments with
    # their providers and catalog prices; its routing policies; the tiers; then the facts:
    # the rollups' watermark, the month's spend, the hard budgets, the daily budget's
    # spend, the tiers with an allowance, the month's requests, the names of the orgs past
    # it. (And the savepoint this test's transaction gives build_delta's atomic, released.)
    with django_assert_num_queries(12 + 2):
        delta = build_delta(snap.version, version)
    org = delta.orgs[org_a.id]
    assert org.allowed_models == {"chat"} and org.spent_this_month == 0.25
    assert set(org.blocked) == {"org"} and set(org.deployments) == {"chat", "gpt-4o-mini"}
    assert comparable(apply_delta(snap, delta)) == comparable(build_snapshot())


def no_build(*a, **k):
    raise AssertionError("the worker built a delta the writer had stored")


def test_a_committed_change_is_built_once_and_every_worker_applies_it(
    org_a, monkeypatch, django_capture_on_commit_callbacks
):
    from gateway import snapshot_builder

    workers = [SnapshotSource(), SnapshotSource()]
    refreshers = [SnapshotRefresher(w, interval=60) for w in workers]
    for r in refreshers:
        r.refresh_once()
    with django_capture_on_commit_callbacks(execute=True):
        provider = gateway_services.provider_save(
            actor=ACTOR,
            org=org_a,
            name="oai",
            kind="openai",
            credentials={"api_key": "sk-" + "s" * 20},
        )
    # Two changes in one transaction: two deltas stored.
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        gateway_services.deployment_save(
            actor=ACTOR,
            org=org_a,
            model_name="chat",
            provider=provider,
            upstream_model="gpt-4o-mini",
        )
        key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="k")
    stored = list(ConfigChange.objects.order_by("version").values_list("delta", flat=True))
    assert all(stored[-3:]) and not any(b"sk-sss" in bytes(d) for d in stored[-3:])
    monkeypatch.setattr(snapshot_builder, "build_delta", no_build)
    monkeypatch.setattr(snapshot_builder, "build_snapshot", no_build)
    for r in refreshers:
        r.refresh_once()
    monkeypatch.undo()
    full = comparable(build_snapshot())
    for w in workers:
        assert comparable(w.current) == full
        assert w.current.keys[key.key_hash].revoked is False
        assert w.current.orgs[org_a.id].deployments["chat"][0].credentials == {
            "api_key": "sk-" + "s" * 20
        }


def test_a_bulk_change_is_left_to_the_workers(org_a, django_capture_on_commit_callbacks):
    source = SnapshotSource()
    refresher = SnapshotRefresher(source, interval=60)
    refresher.refresh_once()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        for n in range(SHARE_AT_MOST + 1):
            gateway_services.api_key_create(actor=ACTOR, org=org_a, name=f"k{n}")
    assert not ConfigChange.objects.filter(delta__isnull=False).exists()
    refresher.refresh_once()
    assert comparable(source.current) == comparable(build_snapshot())


def test_with_sharing_off_the_writer_stores_nothing_and_the_worker_builds(
    org_a, django_capture_on_commit_callbacks
):
    from django.test import override_settings

    source = SnapshotSource()
    refresher = SnapshotRefresher(source, interval=60)
    refresher.refresh_once()
    with override_settings(GATEWAY_SHARE_DELTAS=False):
        with django_capture_on_commit_callbacks(execute=True):
            key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="k")
            gateway_services.api_key_create(actor=ACTOR, org=org_a, name="k2")
        assert not ConfigChange.objects.filter(delta__isnull=False).exists()
        refresher.refresh_once()
    assert source.current.keys[key.key_hash].revoked is False
    assert comparable(source.current) == comparable(build_snapshot())


def test_a_stored_delta_that_cannot_be_read_is_built_instead(
    org_a, django_capture_on_commit_callbacks, settings
):
    source = SnapshotSource()
    refresher = SnapshotRefresher(source, interval=60)
    refresher.refresh_once()
    with django_capture_on_commit_callbacks(execute=True):
        key, _ = gateway_services.api_key_create(actor=ACTOR, org=org_a, name="k")
    assert ConfigChange.objects.get(version=current_version()).delta
    # Sealed with a key this process no longer has (ENCRYPTION_KEYS rotated away).
    from core import crypto

    settings.ENCRYPTION_KEYS = ["dG9vLW5ldy10by1yZWFkLXRoZS1vbGQtb25lLTAxMjM="]
    crypto._fernet.cache_clear()
    try:
        refresher.refresh_once()
    finally:
        crypto._fernet.cache_clear()
    assert source.current.keys[key.key_hash].revoked is False
    assert source.current.version == current_version()
