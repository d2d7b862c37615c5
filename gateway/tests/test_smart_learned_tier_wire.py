"""A downgraded org's smart policy of the learned classifier, on the wire: never refused,
its prompts scored and recorded as rules (governance/tests/test_learned_tier.py has the
rest: the tiers, every way in, the Routing page)."""

import openai

from gateway import services
from gateway.tests.conftest import ACTOR, refresh_snapshot, smart_tier_deployments, usage_rows
from governance import services as governance_services
from orgs import services as org_services


def test_a_downgraded_org_s_requests_are_served_with_rules(acme, gw):
    """On the wire: never refused, scored and recorded as rules."""
    smart_tier_deployments(acme)
    policy = governance_services.routing_policy_save(
        actor=ACTOR,
        org=acme.org,
        name="saver",
        strategy="smart",
        models=["smart-lite", "smart-pro"],
        smart={"classifier": "learned", "aggressiveness": 0.5},
    )
    _key, raw = services.api_key_create(actor=ACTOR, org=acme.org, name="k", routing_policy=policy)
    org_services.org_update(actor=ACTOR, org=acme.org, tier="free")
    refresh_snapshot()
    client = openai.OpenAI(base_url=acme.base_url, api_key=raw, max_retries=0)
    answer = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello there"}]
    )
    assert answer.status_code == 200
    assert answer.headers["x-bonito-route-classifier"] == "rules"
    [row] = [r for r in usage_rows(acme.org) if r.endpoint == "chat"]
    assert row.route_classifier == "rules"
