"""A config file's YAML aliases cannot expand it into millions of values (a "billion laughs"):
the REST apply refuses it with a 400 at once, and a file with a few aliases still applies."""

import time

import pytest

from orgs.config import MAX_EXPANDED_NODES, config_load

pytestmark = pytest.mark.django_db
JSON = "application/json"


def nested_aliases(depth: int, width: int = 10, where: str = "gateway") -> str:
    """Each anchor a list of `width` aliases to the one before: width**depth values."""
    lines = [f"{where}:", "  fallback_models: &a0 [x]"]
    for level in range(1, depth + 1):
        refs = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"  smart_{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("depth", [4, 5, 7, 9])
@pytest.mark.parametrize("where", ["gateway", "policy", "teams_extra"])
def test_it_refuses_nested_aliases_quickly_with_a_400(alice_client, org_a, depth, where):
    started = time.monotonic()
    response = alice_client.post(
        "/api/gateway/config/apply",
        {"yaml": nested_aliases(depth, where=where), "dry_run": True},
        content_type=JSON,
    )
    assert response.status_code == 400
    assert "aliases" in response.json()["yaml"][0]
    assert time.monotonic() - started < 5  # refused before anything walks the expansion


def test_a_recursive_alias_is_refused_not_looped_on():
    with pytest.raises(Exception, match="aliases"):
        config_load("a: &x [1, *x]\n")


def test_a_few_aliases_still_load_and_apply(alice_client, org_a):
    text = "gateway:\n  fallback_models: &f [a, b]\npolicy:\n  allowed_models: *f\n"
    assert config_load(text)["policy"]["allowed_models"] == ["a", "b"]
    # Below the bound: width 4, depth 5 is 1365 values.
    assert config_load(nested_aliases(5, width=4)) is not None
    assert MAX_EXPANDED_NODES > 4**5


@pytest.mark.parametrize(
    "text",
    ["[" * 3000, "a:\n" + "".join(f"{'  ' * i}b{i}:\n" for i in range(1, 60)), "{x: " * 1500],
)
def test_a_file_nested_too_deeply_is_a_400_naming_it(alice_client, org_a, text):
    response = alice_client.post(
        "/api/gateway/config/apply", {"yaml": text, "dry_run": True}, content_type=JSON
    )
    assert response.status_code == 400, response.content[:300]
    assert "nested more than" in response.json()["yaml"][0]


@pytest.mark.parametrize("depth", [1000, 5000])
@pytest.mark.parametrize(
    "path",
    ["/api/gateway/teams", "/api/gateway/keys", "/api/gateway/config/apply", "/api/tokens"],
)
def test_a_rest_body_nested_past_the_recursion_limit_is_a_400(alice_client, org_a, path, depth):
    response = alice_client.post(path, "[" * depth, content_type=JSON)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_a_refusal_of_a_top_level_file_names_the_path_it_has(alice_client, org_a):
    """Sections sent at the top level were refused under orgs[0]…, a path the file did not
    have (an outside check); an `orgs:` file keeps its own paths."""
    top = "gateway:\n  smart_tiers: [a, b]\n  smart: {thresholds: [0.1, 0.2]}\n"
    response = alice_client.post(
        "/api/gateway/config/apply", {"yaml": top, "dry_run": True}, content_type=JSON
    )
    assert response.status_code == 400
    said = str(response.json())
    assert "gateway.smart" in said and "orgs[0]" not in said, said
    listed = "orgs:\n  - slug: acme\n" + "".join(f"    {line}\n" for line in top.splitlines())
    response = alice_client.post(
        "/api/gateway/config/apply", {"yaml": listed, "dry_run": True}, content_type=JSON
    )
    assert response.status_code == 400 and "orgs[0].gateway.smart" in str(response.json())
