"""What the Routing page says beside the smart settings of an org downgraded to a tier
without the learned classifier is what the gateway serves them as (core.smart.without_learned,
published by gateway.snapshot_builder): scored by rules; an A/B test whose arm is learned,
or would now be rules as the classifier is, off; an A/B test of the strong arm kept. It said
"served with rules (and without an A/B test of the learned arm)" for every one of them: of a
learned classifier with a rules arm, which names neither the arm nor why the test is off."""

import html
import re

import pytest

from gateway import services
from gateway.snapshot_builder import build_snapshot
from gateway.tests.conftest import ACTOR
from governance import services as governance_services
from orgs import services as org_services

pytestmark = pytest.mark.django_db
LEAD = "the learned classifier is not on the Free tier: until it is, served with "
FIX_CLASSIFIER = "a change of these settings needs the classifier rules"

# name: (settings saved on Pro, what is served on Free (classifier, A/B share, arm), note)
CASES = {
    "learned": (
        {"classifier": "learned"},
        ("rules", 0.0),
        f"{LEAD}rules; {FIX_CLASSIFIER}",
    ),
    "learned-ab-rules": (
        {"classifier": "learned", "ab": {"share": 0.5, "classifier": "rules"}},
        ("rules", 0.0),
        f"{LEAD}rules, A/B test off (both arms would be rules); {FIX_CLASSIFIER}",
    ),
    "learned-ab-strong": (
        {"classifier": "learned", "ab": {"share": 0.3, "classifier": "strong"}},
        ("rules", 0.3, "strong"),
        f"{LEAD}rules and the A/B test of strong as saved; {FIX_CLASSIFIER}",
    ),
    "rules-ab-learned": (
        {"classifier": "rules", "ab": {"share": 0.2, "classifier": "learned"}},
        ("rules", 0.0),
        f"{LEAD}rules, A/B test off (its arm is learned); "
        "a change of these settings needs another A/B arm than learned, or none",
    ),
    "ab-learned": (  # the classifier left at its default
        {"ab": {"share": 0.2, "classifier": "learned"}},
        ("rules", 0.0),
        f"{LEAD}rules, A/B test off (its arm is learned); "
        "a change of these settings needs another A/B arm than learned, or none",
    ),
}


def _served(policy):
    out = (policy.classifier, policy.ab_share)
    return out + (policy.ab_arm,) if policy.ab_share else out


def _notes(page: str) -> list[str]:
    return [
        html.unescape(n) for n in re.findall(r'class="error learned-off">\((.*?)\)</span', page)
    ]


def _row(page: str, name: str) -> str:
    match = re.search(rf"<tr><td><bdi>{re.escape(name)}</bdi>.*?</tr>", page, re.S)
    assert match, page
    return match.group(0)


def test_it_says_what_each_downgraded_policy_is_served_as(alice_client, org_a, charlie_client):
    for name, (spec, _, _) in CASES.items():
        governance_services.routing_policy_save(
            actor=ACTOR, org=org_a, name=name, strategy="smart", models=["a", "b"], smart=spec
        )
    governance_services.routing_policy_save(  # no learned anywhere: no note
        actor=ACTOR,
        org=org_a,
        name="rules-ab-strong",
        strategy="smart",
        models=["a", "b"],
        smart={"ab": {"share": 0.1, "classifier": "strong"}},
    )
    page = alice_client.get(f"/o/{org_a.slug}/routing/").content.decode()
    assert _notes(page) == []  # on Pro everything is served as saved

    org_services.org_update(actor=ACTOR, org=org_a, tier="free")
    served = build_snapshot().orgs[org_a.id].routing_policies
    page = alice_client.get(f"/o/{org_a.slug}/routing/").content.decode()
    for name, (_, expected, note) in CASES.items():
        assert _served(served[name].smart) == expected, name
        assert _notes(_row(page, name)) == [note], name
    assert _notes(_row(page, "rules-ab-strong")) == []
    assert _served(served["rules-ab-strong"].smart) == ("rules", 0.1, "strong")
    assert "without an A/B test of the learned arm" not in page
    assert charlie_client.get(f"/o/{org_a.slug}/routing/").status_code == 404


@pytest.mark.parametrize("name", list(CASES))
def test_it_says_what_the_downgraded_org_default_is_served_as(alice_client, org_a, name):
    spec, expected, note = CASES[name]
    services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=["a", "b"], smart=spec)
    org_services.org_update(actor=ACTOR, org=org_a, tier="free")
    assert _served(build_snapshot().orgs[org_a.id].smart) == expected
    page = alice_client.get(f"/o/{org_a.slug}/routing/").content.decode()
    section = page[page.index('id="org-smart"') :]
    assert _notes(section) == [note]
    assert _notes(page) == [note]  # no policy: the org default's line alone


def test_apply_config_s_downgrade_reads_the_same(alice_client, org_a, tmp_path):
    """The brief's own steps: the tier set by a config file, not the model."""
    from django.core.management import call_command

    spec, _, note = CASES["learned-ab-rules"]
    governance_services.routing_policy_save(
        actor=ACTOR, org=org_a, name="s", strategy="smart", models=["lite", "pro"], smart=spec
    )
    path = tmp_path / "bonito.yaml"
    path.write_text(f"orgs:\n  - slug: {org_a.slug}\n    name: {org_a.name}\n    tier: free\n")
    call_command("apply_config", str(path))
    page = alice_client.get(f"/o/{org_a.slug}/routing/").content.decode()
    assert _notes(_row(page, "s")) == [note]


@pytest.mark.parametrize("absent", ["numpy", "all_minilm_l6_v2"])
def test_on_a_server_without_the_extra_it_says_so(alice_client, org_a, monkeypatch, absent):
    """On Pro, where this server lacks the learned classifier's optional extra (a policy
    saved where it was installed, a server set up with `make run` alone), the requests are
    scored by rules: the page said nothing of it, only the server's log did."""
    for name, (spec, _, _) in CASES.items():
        governance_services.routing_policy_save(
            actor=ACTOR, org=org_a, name=name, strategy="smart", models=["a", "b"], smart=spec
        )
    services.gateway_config_set(
        actor=ACTOR, org=org_a, smart_tiers=["a", "b"], smart={"classifier": "learned"}
    )
    monkeypatch.setitem(__import__("sys").modules, absent, None)  # the package is not there
    page = alice_client.get(f"/o/{org_a.slug}/routing/").content.decode()
    note = (
        "the learned classifier's optional extra is not installed on this server (make smart, "
        "docs/smart-routing.md): until it is, served with rules; a change of these settings "
        "or a re-calibration needs it, or the classifier rules and no learned A/B arm"
    )
    for name in CASES:
        assert _notes(_row(page, name)) == [note], name
    section = page[page.index('id="org-smart"') :]
    assert note in _notes(section)


def test_without_the_extra_a_learned_policy_can_still_be_disabled(alice_client, org_a, monkeypatch):
    """A save that leaves the learned settings as saved (disable, other models) needs no
    extra: it was refused, so a server without it could not turn such a policy off. One
    that changes them still needs it."""
    api = "/api/gateway/routing-policies"
    for name, (spec, _, _) in CASES.items():
        policy = governance_services.routing_policy_save(
            actor=ACTOR, org=org_a, name=name, strategy="smart", models=["a", "b"], smart=spec
        )
        monkeypatch.setitem(__import__("sys").modules, "numpy", None)
        off = alice_client.patch(
            f"{api}/{policy.pk}", {"is_active": False}, content_type="application/json"
        )
        assert off.status_code == 200, (name, off.content)
        moved = alice_client.patch(
            f"{api}/{policy.pk}", {"models": ["a", "c"]}, content_type="application/json"
        )
        assert moved.status_code == 200, (name, moved.content)
        changed = alice_client.patch(
            f"{api}/{policy.pk}",
            {"smart": {"aggressiveness": 0.7}},
            content_type="application/json",
        )
        assert changed.status_code == 400 and "not installed" in str(changed.json()), name
        monkeypatch.undo()


def test_a_learned_arm_refused_on_the_org_form_says_it_is_the_ab_arm(
    alice_client, org_a, monkeypatch
):
    """The org default's form has no A/B arm field: the refusal kept no path and told a
    user who had rules selected to "use the rules classifier"."""
    spec = {
        "classifier": "rules",
        "aggressiveness": 0.5,
        "ab": {"share": 0.2, "classifier": "learned"},
    }
    services.gateway_config_set(actor=ACTOR, org=org_a, smart_tiers=["a", "b"], smart=spec)
    monkeypatch.setitem(__import__("sys").modules, "numpy", None)  # the extra is gone
    response = alice_client.post(
        f"/o/{org_a.slug}/routing/",
        {"form": "org_smart", "smart_tiers": "a, b", "classifier": "rules", "aggressiveness": "60"},
    )
    page = html.unescape(response.content.decode())
    assert response.status_code == 400
    assert "smart.ab.classifier: The learned classifier needs the optional smart extra" in page
    assert "use another A/B arm (rules or strong), or none" in page
    assert "Use the rules classifier until then" not in page
