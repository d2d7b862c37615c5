"""Control-plane writes: credentials encrypted, audit rows without secrets, version bumps,
apply_config sections, create_api_key, and the demo's working key."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from core.models import ConfigVersion
from gateway import services
from gateway.dataplane.state import SnapshotSource
from gateway.models import ApiKey, Deployment, ProviderConnection
from gateway.snapshot_builder import SnapshotRefresher, build_snapshot
from gateway.tests.conftest import ACTOR, org_models
from gateway.tests.test_processes import ISSUE_EXAMPLE
from governance.models import Policy, RoutingPolicy
from orgs.models import AuditLog

pytestmark = pytest.mark.django_db


def _call(*args, **kwargs):
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


def test_credentials_are_encrypted_at_rest_and_never_audited(org_a):
    provider = services.provider_save(
        actor=ACTOR,
        org=org_a,
        name="oai",
        kind="openai",
        credentials={"api_key": "sk-live-credential-abcdef"},
    )
    stored = ProviderConnection.objects.values_list("credentials_encrypted", flat=True).get(
        pk=provider.pk
    )
    assert "sk-live-credential-abcdef" not in stored
    assert provider.get_credentials() == {"api_key": "sk-live-credential-abcdef"}
    rows = AuditLog.objects.filter(action__startswith="provider.")
    assert rows and all("sk-live" not in json.dumps(r.changes) for r in rows)


def test_changes_bump_the_config_version(org_a):
    before = ConfigVersion.objects.get(pk=1).version
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="k")
    services.api_key_revoke(actor=ACTOR, key=key)
    assert ConfigVersion.objects.get(pk=1).version == before + 2
    assert build_snapshot().keys[key.key_hash].revoked is True


def test_the_refresher_publishes_into_the_source_it_is_given_when_the_version_moves(org_a):
    source = SnapshotSource()
    refresher = SnapshotRefresher(source, interval=60)
    refresher.refresh_once()
    first = source.current
    assert first is not None and org_a.id in first.orgs
    refresher.refresh_once()
    assert source.current is first  # nothing changed: nothing rebuilt
    key, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="k")
    refresher.refresh_once()
    assert key.key_hash in source.current.keys and key.key_hash not in first.keys


def _has_cycle(root) -> bool:
    """Whether any object reachable from ``root`` (classes, modules and functions aside:
    they are not the snapshot's) reaches itself again."""
    import gc
    import types

    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    state: dict[int, int] = {}  # id -> 1 on the path, 2 done
    stack = [(root, iter(gc.get_referents(root)))]
    state[id(root)] = 1
    while stack:
        obj, children = stack[-1]
        for child in children:
            if isinstance(child, skip) or not gc.is_tracked(child):
                continue
            seen = state.get(id(child))
            if seen == 1:
                return True
            if seen is None:
                state[id(child)] = 1
                stack.append((child, iter(gc.get_referents(child))))
                break
        else:
            state[id(obj)] = 2
            stack.pop()
    return False


def test_a_full_snapshot_is_frozen_out_of_the_collector_and_can_still_be_freed(org_a):
    """The refresher freezes a full build (gateway.dataplane.memory.settle_long_lived): the
    cyclic collector no longer walks it. That frees nothing less only if the snapshot holds
    no reference cycle (reference counting frees it when it is replaced)."""
    import gc

    services.api_key_create(actor=ACTOR, org=org_a, name="k")
    services.provider_save(actor=ACTOR, org=org_a, name="oai", kind="openai",
                           credentials={"api_key": "sk-x"})  # fmt: skip
    snap = build_snapshot()
    assert snap.keys and snap.orgs[org_a.id] and not _has_cycle(snap)
    looped: list = []
    looped.append(looped)
    assert _has_cycle(looped) and not _has_cycle([[]])  # the check itself finds a cycle

    source = SnapshotSource()
    refresher = SnapshotRefresher(source, interval=60)
    try:
        refresher.refresh()  # a full build
        tracked = {id(o) for o in gc.get_objects()}  # generations 0-2: not the frozen
        assert gc.is_tracked(source.current.orgs) and id(source.current.orgs) not in tracked
        full = source.current
        services.api_key_create(actor=ACTOR, org=org_a, name="k2")
        refresher.refresh()  # a delta: a few new objects, not frozen
        assert source.current is not full
        assert id(source.current.orgs) in {id(o) for o in gc.get_objects()}
    finally:
        gc.unfreeze()


def test_a_compacted_key_table_is_frozen_and_a_delta_on_it_is_not(org_a, monkeypatch):
    """A delta that folds the key table's overlay into a new base (KeyTable.changed) makes
    a new long-lived dict of every key: frozen like a full build. A delta that only grows
    the overlay is not."""
    import gc

    from gateway.dataplane.snapshot import KeyTable

    services.api_key_create(actor=ACTOR, org=org_a, name="k0")
    source = SnapshotSource()
    refresher = SnapshotRefresher(source, interval=60)
    try:
        refresher.refresh()  # full build, frozen
        monkeypatch.setattr(KeyTable, "COMPACT_MIN", 2)
        monkeypatch.setattr(KeyTable, "COMPACT_RATIO", 1_000_000)

        def tracked():
            return {id(o) for o in gc.get_objects()}

        bases = [source.current.keys._base]
        services.api_key_create(actor=ACTOR, org=org_a, name="k1")
        refresher.refresh()  # overlay of 1 key: same base, nothing new frozen
        assert source.current.keys._base is bases[0] and source.current.keys._over
        assert id(source.current.keys._over) in tracked()
        for name in ("k2", "k3"):
            services.api_key_create(actor=ACTOR, org=org_a, name=name)
        refresher.refresh()  # overlay past COMPACT_MIN: a new base
        table = source.current.keys
        assert table._base is not bases[0] and not table._over
        assert len(table) == 4 and len(table._base) == 4
        assert gc.is_tracked(table._base) and id(table._base) not in tracked()
    finally:
        gc.unfreeze()


def test_the_issue_example_applies_exactly_as_written(tmp_path, monkeypatch, db, loopback_allowed):
    monkeypatch.setenv("FAKE_API_KEY", "sk-from-the-environment")
    path = tmp_path / "bonito.yaml"
    path.write_text(ISSUE_EXAMPLE)
    _call("apply_config", str(path))
    provider = ProviderConnection.objects.get(org__slug="acme", name="fake")
    assert provider.kind == "openai_compatible" and provider.api_base == "http://127.0.0.1:18081/v1"
    assert provider.get_credentials() == {"api_key": "sk-from-the-environment"}
    assert sorted(Deployment.objects.values_list("model_name", flat=True)) == [
        "chat-small",
        "embed-small",
        "ha-chat",
    ]
    policy = Policy.objects.get(org__slug="acme")
    assert (
        policy.allowed_models == ["chat-small", "embed-small", "ha-chat"]
        and policy.monthly_spend_cap_usd == 50
    )
    assert RoutingPolicy.objects.get(name="ha").model_names == ["ha-chat"]
    audit_rows = AuditLog.objects.count()
    _call("apply_config", str(path))  # idempotent
    assert AuditLog.objects.count() == audit_rows
    assert "sk-from-the-environment" not in json.dumps(
        list(AuditLog.objects.values("changes", "target_repr"))
    )


def test_apply_config_names_a_missing_environment_variable(tmp_path, monkeypatch, db):
    monkeypatch.delenv("FAKE_API_KEY", raising=False)
    path = tmp_path / "bonito.yaml"
    path.write_text(ISSUE_EXAMPLE)
    with pytest.raises(
        CommandError,
        match=r"orgs\[0\]\.providers\[0\]\.api_key: environment variable FAKE_API_KEY is not set",
    ):
        _call("apply_config", str(path))


@pytest.mark.parametrize(
    "fragment,message",
    [
        (
            "deployments: [{model: x, provider: nope, upstream_model: y}]",
            "provider 'nope' is not defined",
        ),
        ("providers: [{name: p, kind: watson}]", "kind: 'watson' is not a provider kind"),
        (
            "routing_policies: [{name: r, strategy: psychic, models: [x]}]",
            "Unknown strategy 'psychic'",
        ),
        ("policy: {allowed_models: chat}", "allowed_models must be a list"),
    ],
)
def test_apply_config_explains_bad_gateway_sections(tmp_path, db, fragment, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"orgs:\n  - slug: acme\n    name: Acme\n    {fragment}\n")
    with pytest.raises(CommandError, match=message):
        _call("apply_config", str(path))


def test_create_api_key_prints_the_raw_key_alone_on_the_last_line(org_a, db):
    org_models(org_a, "a", "b")
    out, err = _call(
        "create_api_key",
        "--org",
        "acme",
        "--name",
        "ci",
        "--models",
        "a,b",
        "--rpm",
        "10",
        "--expires",
        "2099-01-31",
    )
    raw = out.strip().splitlines()[-1]
    assert raw.startswith("bn-") and len(raw.split()) == 1
    key = ApiKey.objects.get(name="ci")
    assert key.matches(raw) and key.allowed_models == ["a", "b"] and key.rpm_limit == 10
    assert key.expires_at.year == 2099
    assert raw not in err


def test_create_api_key_refuses_unknown_orgs(db):
    with pytest.raises(CommandError, match="No organization"):
        _call("create_api_key", "--org", "nope", "--name", "x")


@pytest.mark.django_db(transaction=True)  # the usage writer thread must see the demo org
def test_the_demo_key_answers_at_once(live_server_thread, gw):
    import httpx

    from billing.models import UsageRecord
    from gateway import runtime

    raw = json.loads(_call("demo", "--json", "--force")[0])["api_key"]
    runtime.snapshots().publish(build_snapshot())
    headers = {"Authorization": f"Bearer {raw}"}
    response = httpx.post(
        live_server_thread.url + "/v1/chat/completions",
        headers=headers,
        json={"model": "demo-chat", "messages": [{"role": "user", "content": "hello"}]},
    )
    assert response.status_code == 200
    assert "You said: hello" in response.json()["choices"][0]["message"]["content"]
    response = httpx.post(
        live_server_thread.url + "/v1/embeddings",
        headers=headers,
        json={"model": "demo-embed", "input": "hi"},
    )
    assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 16
    # Smart routing is on for `auto`: an easy prompt goes to the cheap tier, a hard one up.
    tiers = {}
    for prompt in ("hi", "Prove step by step that there are infinitely many primes. " * 20):
        response = httpx.post(
            live_server_thread.url + "/v1/chat/completions",
            headers=headers,
            json={"model": "auto", "messages": [{"role": "user", "content": prompt}]},
        )
        assert response.status_code == 200, response.text
        assert 0 <= float(response.headers["x-bonito-route-score"]) <= 1
        tiers[prompt[:2]] = response.headers["x-bonito-route-tier"]
    assert tiers == {"hi": "demo-chat-mini", "Pr": "demo-chat"}
    assert gw.sink.flush()
    rows = UsageRecord.objects.order_by("created_at")
    assert sorted(r.endpoint for r in rows) == ["chat", "chat", "chat", "embeddings"]
    cheap = rows.get(route_tier="demo-chat-mini")
    assert cheap.model_requested == "auto" and cheap.model_used == "demo-chat-mini"
    assert 0 < cheap.cost < cheap.cost_top_tier  # what it saved shows on the Usage page


@pytest.mark.django_db(transaction=True)
def test_auto_says_smart_routing_is_off_where_it_is(live_server_thread, gw, org_a):
    import httpx

    from gateway import runtime

    _, raw = services.api_key_create(actor=ACTOR, org=org_a, name="k")
    runtime.snapshots().publish(build_snapshot())
    response = httpx.post(
        live_server_thread.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {raw}"},
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and "smart routing" in error["message"]
