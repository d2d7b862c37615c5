"""Editing and rotating API keys: the services (every field, the same checks as creating,
audited without the secret, a config bump) and what /v1 does with the result, through the
real snapshot path (the refresher applying the change log's deltas)."""

import json
import time
from datetime import timedelta

import httpx
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from core.config_version import current_version
from gateway import runtime, services
from gateway.dataplane.snapshot import (
    apply_delta,
    delta_from_dict,
    delta_to_dict,
    snapshot_to_dict,
)
from gateway.models import ApiKey, GatewayConfig
from gateway.snapshot_builder import SnapshotRefresher, build_delta, build_snapshot
from gateway.tests.conftest import ACTOR, org_models, org_providers, usage_rows
from governance import services as governance_services
from orgs.models import AuditLog, Team

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(org_a):
    key, _raw = services.api_key_create(
        actor=ACTOR, org=org_a, name="ci", rpm_limit=5, expires_at="2098-01-01"
    )
    return key


def _comparable(snap) -> dict:
    out = snapshot_to_dict(snap, include_credentials=True)
    out.pop("built_at")
    return out


def _audit(key, action):
    return AuditLog.objects.filter(action=action, target_id=str(key.id)).order_by("-id").first()


# ------------------------------------------------------------------------------ services
@pytest.mark.parametrize(
    "field, value, stored",
    [
        ("name", "  backend  ", "backend"),
        ("allowed_models", ["b", "a", "a"], ["a", "b"]),
        ("allowed_providers", ["fake"], ["fake"]),
        ("rpm_limit", 9, 9),
        ("rpm_limit", None, None),
        ("tpm_limit", 1000, 1000),
        ("expires_at", "2099-01-31", "2099-01-31T23:59:59+00:00"),
        ("expires_at", None, None),
    ],
)
def test_it_edits_each_field_audited_and_bumped(key, field, value, stored):
    if field == "allowed_models":
        org_models(key.org, "a", "b")
    if field == "allowed_providers":
        org_providers(key.org, "fake")
    version = current_version()
    services.api_key_update(actor=ACTOR, key=key, **{field: value})
    key.refresh_from_db()
    got = getattr(key, field)
    assert (got.isoformat() if hasattr(got, "isoformat") else got) == stored
    assert current_version() == version + 1
    row = _audit(key, "api_key.update")
    assert row is not None and row.changes


def test_it_moves_a_key_to_a_team_of_its_org_and_refuses_another_org_s(key, org_a, org_b):
    mine = Team.objects.create(org=org_a, name="platform")
    theirs = Team.objects.create(org=org_b, name="intruders")
    services.api_key_update(actor=ACTOR, key=key, team=mine)
    assert ApiKey.objects.get(pk=key.pk).team == mine
    with pytest.raises(ValidationError, match="another organization"):
        services.api_key_update(actor=ACTOR, key=key, team=theirs)
    assert ApiKey.objects.get(pk=key.pk).team == mine


def test_an_rt_key_moves_between_policies_but_no_key_changes_kind(org_a, org_b, key):
    first = governance_services.routing_policy_save(
        actor=ACTOR, org=org_a, name="first", strategy="failover", models=["chat"]
    )
    second = governance_services.routing_policy_save(
        actor=ACTOR, org=org_a, name="second", strategy="failover", models=["chat"]
    )
    other = governance_services.routing_policy_save(
        actor=ACTOR, org=org_b, name="other", strategy="failover", models=["chat"]
    )
    rt, _raw = services.api_key_create(actor=ACTOR, org=org_a, name="r", routing_policy=first)
    services.api_key_update(actor=ACTOR, key=rt, routing_policy=second)
    assert ApiKey.objects.get(pk=rt.pk).routing_policy == second
    with pytest.raises(ValidationError, match="another organization"):
        services.api_key_update(actor=ACTOR, key=rt, routing_policy=other)
    with pytest.raises(ValidationError, match="kind"):
        services.api_key_update(actor=ACTOR, key=rt, routing_policy=None)
    with pytest.raises(ValidationError, match="kind"):
        services.api_key_update(actor=ACTOR, key=key, routing_policy=first)


def test_limit_ceilings_hold_on_edit_as_on_create(key, org_a):
    GatewayConfig.objects.update_or_create(
        org=org_a, defaults={"default_key_rpm": 10, "default_key_tpm": 500}
    )
    for field, value in (("rpm_limit", 11), ("tpm_limit", 501), ("rpm_limit", 0)):
        with pytest.raises(ValidationError) as exc:
            services.api_key_update(actor=ACTOR, key=key, **{field: value})
        assert field in exc.value.message_dict
    services.api_key_update(actor=ACTOR, key=key, rpm_limit=10, tpm_limit=500)
    key.refresh_from_db()
    assert (key.rpm_limit, key.tpm_limit) == (10, 500)


def test_bad_edits_are_refused_and_change_nothing(key):
    before = ApiKey.objects.filter(pk=key.pk).values().get()
    version = current_version()
    for changes in (
        {"expires_at": "2001-01-01"},
        {"expires_at": "next tuesday"},
        {"name": "a" * 500},
        {"key_hash": "x"},
        {"org": None},
    ):
        with pytest.raises(ValidationError):
            services.api_key_update(actor=ACTOR, key=ApiKey.objects.get(pk=key.pk), **changes)
    assert ApiKey.objects.filter(pk=key.pk).values().get() == before
    assert current_version() == version and _audit(key, "api_key.update") is None


def test_a_revoked_key_is_neither_edited_nor_rotated(key):
    services.api_key_revoke(actor=ACTOR, key=key)
    with pytest.raises(ValidationError, match="revoked"):
        services.api_key_update(actor=ACTOR, key=key, name="again")
    with pytest.raises(ValidationError, match="revoked"):
        services.api_key_rotate(actor=ACTOR, key=key)


def test_rotating_keeps_the_key_and_audits_no_secret(key):
    old_hash, old_masked = key.key_hash, key.masked
    same, raw = services.api_key_rotate(actor=ACTOR, key=key, grace_seconds=3600)
    stored = ApiKey.objects.get(pk=key.pk)
    assert same.pk == key.pk and stored.matches(raw) and stored.key_hash != old_hash
    assert (stored.name, stored.rpm_limit) == ("ci", 5)
    assert stored.previous_key_hash == old_hash and stored.previous_masked == old_masked
    assert stored.previous_valid(), "the old secret is in its grace period"
    row = _audit(key, "api_key.rotate")
    text = json.dumps(row.changes)
    assert raw not in text and raw[3:-4] not in text and old_hash not in text
    assert row.changes["after"]["old_key_valid_until"]


@pytest.mark.parametrize("grace", [-1, 31 * 86400, 1.5, "3600", True])
def test_a_grace_period_out_of_range_is_refused(key, grace):
    with pytest.raises(ValidationError, match="grace_seconds"):
        services.api_key_rotate(actor=ACTOR, key=key, grace_seconds=grace)
    assert ApiKey.objects.get(pk=key.pk).key_hash == key.key_hash


def test_the_snapshot_serves_the_old_secret_only_in_its_grace(key):
    old_hash = key.key_hash
    services.api_key_rotate(actor=ACTOR, key=key, grace_seconds=60)
    key.refresh_from_db()
    snap = build_snapshot()
    assert snap.keys[old_hash].id == key.id == snap.keys[key.key_hash].id
    assert snap.keys[old_hash].expires_at == pytest.approx(key.previous_valid_until.timestamp())
    ApiKey.objects.filter(pk=key.pk).update(previous_valid_until=timezone.now())
    assert old_hash not in build_snapshot().keys
    services.api_key_rotate(actor=ACTOR, key=key)  # no grace: its hash kept, never served
    key.refresh_from_db()
    assert not key.previous_valid() and list(build_snapshot().keys) == [key.key_hash]


def _rotate(key) -> str:
    """Rotate without a grace; the new secret's hash."""
    services.api_key_rotate(actor=ACTOR, key=ApiKey.objects.get(pk=key.pk))
    return ApiKey.objects.get(pk=key.pk).key_hash


def test_a_rotation_reloads_its_key_not_its_org(key, org_a):
    """A big org's rotation costs one key's reload: the delta carries the key and drops the
    secret it replaced by its hash; the org's other keys are not in it."""
    others = [
        services.api_key_create(actor=ACTOR, org=org_a, name=f"other {i}")[0] for i in range(3)
    ]
    snap = build_snapshot()
    old_hash = key.key_hash
    new_hash = _rotate(key)
    delta = build_delta(snap.version, current_version())
    assert delta.key_orgs == frozenset() and delta.key_ids == {(org_a.id, key.id)}
    assert delta.dropped == {old_hash} and set(delta.keys) == {new_hash, old_hash}
    applied = apply_delta(snap, delta)
    assert old_hash not in applied.keys and applied.keys[new_hash].id == key.id
    assert {o.key_hash for o in others} <= set(applied.keys)
    assert old_hash not in applied.key_hashes[org_a.id]
    assert _comparable(applied) == _comparable(build_snapshot())


def test_a_reader_of_an_earlier_release_refuses_the_replaced_secret_by_the_clock(key):
    """An agent of an earlier release knows no ``dropped``: the replaced secret reaches it
    as the same key, expired, which every reader refuses (proxy._authenticate)."""
    snap = build_snapshot()
    old_hash = key.key_hash
    _rotate(key)
    wire = delta_to_dict(build_delta(snap.version, current_version()))
    del wire["dropped"]
    applied = apply_delta(snap, delta_from_dict(wire))
    assert applied.keys[old_hash].id == key.id
    assert applied.keys[old_hash].expires_at <= time.time()


def test_a_secret_replaced_twice_before_a_reader_looks_reloads_the_org(key, org_a):
    """The key's row keeps only the last replaced secret: when the range (or what came
    after it, as the rows are read now) replaced more than one, the org reloads whole."""
    snap = build_snapshot()
    first = key.key_hash
    second = _rotate(key)
    between = current_version()
    third = _rotate(key)
    for until in (between, current_version()):  # the later rotation is after or in range
        delta = build_delta(snap.version, until)
        assert delta.key_orgs == {org_a.id} and not delta.dropped
        applied = apply_delta(snap, delta)
        assert first not in applied.keys and second not in applied.keys
        assert applied.keys[third].id == key.id
    # a rotation that ends an earlier one's grace keeps no hash of that secret
    snap = build_snapshot()
    services.api_key_rotate(actor=ACTOR, key=ApiKey.objects.get(pk=key.pk), grace_seconds=600)
    in_grace = ApiKey.objects.get(pk=key.pk).previous_key_hash
    assert in_grace == third
    services.api_key_rotate(actor=ACTOR, key=ApiKey.objects.get(pk=key.pk))
    delta = build_delta(snap.version, current_version())
    assert delta.key_orgs == {org_a.id}
    assert in_grace not in apply_delta(snap, delta).keys


def test_a_secret_whose_grace_ended_by_the_clock_goes_with_the_next_rotation(key, org_a):
    """A grace that ends by the clock changes no row, so the workers keep the secret (every
    one refuses it by its expiry); the next rotation's delta drops it with the secret it
    replaces, and the tables are again exactly a full build's."""
    first = key.key_hash
    services.api_key_rotate(actor=ACTOR, key=ApiKey.objects.get(pk=key.pk), grace_seconds=600)
    snap = build_snapshot()
    assert first in snap.keys  # in its grace
    ApiKey.objects.filter(pk=key.pk).update(
        previous_valid_until=timezone.now() - timedelta(seconds=1)
    )
    second = ApiKey.objects.get(pk=key.pk).key_hash
    third = _rotate(key)
    delta = build_delta(snap.version, current_version())
    assert delta.key_orgs == frozenset()  # still one key's reload
    assert delta.dropped == {first, second}
    applied = apply_delta(snap, delta)
    assert first not in applied.keys and second not in applied.keys
    assert applied.keys[third].id == key.id
    assert _comparable(applied) == _comparable(build_snapshot())
    # a reader of an earlier release refuses both by the clock
    wire = delta_to_dict(delta)
    del wire["dropped"]
    earlier = apply_delta(snap, delta_from_dict(wire))
    assert all(earlier.keys[h].expires_at <= time.time() for h in (first, second))


# ------------------------------------------------------------------------------ through /v1
def _chat(acme, raw, model="chat-small"):
    return httpx.post(
        f"{acme.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {raw}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )


@pytest.fixture
def refresher(acme):
    """The process's snapshot kept by a refresher, as in production: after its first full
    build, each change arrives as a delta (build_delta + apply_delta)."""
    refresher = SnapshotRefresher(runtime.snapshots(), interval=60)
    refresher.refresh_once()
    return refresher


def test_an_edited_scope_and_limit_apply_on_v1(acme, mode, refresher):
    assert _chat(acme, acme.raw).status_code == 200
    services.api_key_update(actor=ACTOR, key=acme.key, allowed_models=["embed-small"])
    refresher.refresh_once()
    refused = _chat(acme, acme.raw)
    assert refused.status_code == 403 and refused.json()["error"]["message"]
    services.api_key_update(actor=ACTOR, key=acme.key, allowed_models=[], rpm_limit=2)
    refresher.refresh_once()
    codes = [_chat(acme, acme.raw).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    # every request with a valid key is one usage row, the refused ones included
    assert len(usage_rows(acme.org)) == 5


def test_a_rotated_key_s_old_secret_works_in_its_grace_and_not_after(acme, mode, refresher):
    old = acme.raw
    key, new = services.api_key_rotate(actor=ACTOR, key=acme.key, grace_seconds=2)
    refresher.refresh_once()
    assert _chat(acme, new).status_code == 200  # the new secret at once
    assert _chat(acme, old).status_code == 200  # the old one, in its grace
    deadline = key.previous_valid_until.timestamp()
    time.sleep(max(0.0, deadline - time.time()) + 0.1)
    # No new snapshot: every worker refuses the old secret by its own clock.
    late = _chat(acme, old)
    assert late.status_code == 401 and late.json()["error"]["code"] == "invalid_api_key"
    assert _chat(acme, new).status_code == 200
    # both secrets are the one key: its usage rows, one per request it made (a secret
    # past its grace is no valid key: no row)
    rows = usage_rows(acme.org)
    assert {r.key_id for r in rows} == {key.id} and len(rows) == 3


def test_rotating_without_grace_refuses_the_old_secret_at_once(acme, mode, refresher):
    old = acme.raw
    _key, new = services.api_key_rotate(actor=ACTOR, key=acme.key)
    refresher.refresh_once()
    assert _chat(acme, old).status_code == 401
    assert _chat(acme, new).status_code == 200
    # a second rotation in a grace drops the secret the first one replaced
    _key, newer = services.api_key_rotate(actor=ACTOR, key=acme.key, grace_seconds=600)
    refresher.refresh_once()
    assert [_chat(acme, s).status_code for s in (old, new, newer)] == [401, 200, 200]
    _key, newest = services.api_key_rotate(actor=ACTOR, key=acme.key, grace_seconds=600)
    refresher.refresh_once()
    assert [_chat(acme, s).status_code for s in (new, newer, newest)] == [401, 200, 200]
    # revoking ends the grace too
    services.api_key_revoke(actor=ACTOR, key=ApiKey.objects.get(pk=acme.key.pk))
    refresher.refresh_once()
    assert [_chat(acme, s).status_code for s in (newer, newest)] == [401, 401]


def test_secrets_replaced_between_two_refreshes_are_all_refused(acme, mode, refresher):
    first = acme.raw
    _key, second = services.api_key_rotate(actor=ACTOR, key=acme.key)
    _key, third = services.api_key_rotate(actor=ACTOR, key=acme.key)
    refresher.refresh_once()
    assert [_chat(acme, s).status_code for s in (first, second, third)] == [401, 401, 200]


def test_an_expiry_moved_into_the_past_by_hand_is_still_refused(acme, refresher):
    """An edit that sets the expiry is enforced by the clock like any expiry."""
    soon = timezone.now() + timedelta(seconds=1)
    services.api_key_update(actor=ACTOR, key=acme.key, expires_at=soon)
    refresher.refresh_once()
    assert _chat(acme, acme.raw).status_code == 200
    time.sleep(max(0.0, soon.timestamp() - time.time()) + 0.1)
    assert _chat(acme, acme.raw).status_code == 401
