"""A path under /api/ that names no endpoint is the REST API's JSON 404, not Django's HTML
page (scripts and the CLI parse the answer); one that exists with a trailing slash is
redirected there, as Django's APPEND_SLASH does."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/nope"),
        ("delete", "/api/gateway/nothing/1"),
        ("patch", "/api/gateway/nothing"),
        ("get", "/api/schema/x/y"),
    ],
)
def test_an_unknown_api_path_is_a_json_404(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_a_path_that_exists_with_a_slash_is_redirected_there(client):
    response = client.get("/api/schema?format=json")
    assert response.status_code == 301 and response["Location"] == "/api/schema/?format=json"


def test_known_paths_still_answer_as_before(client):
    assert client.get("/api/gateway/keys").status_code in (401, 403)  # needs sign-in
    assert client.get("/api/health").status_code == 200
    response = client.get("/api/agent/nothing")  # the agent API's own JSON 404
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.parametrize("method", ["post", "patch", "put", "delete"])
def test_a_write_to_an_unknown_path_is_a_json_404_not_a_csrf_page(method, alice):
    """A REST client (a bearer token, no cookie) writing to a wrong path got Django's HTML
    "CSRF verification failed" page (403): the catch-all changes nothing, so it is
    exempt, and the answer is the JSON 404 whatever the method or the session."""
    from django.test import Client

    for client in (Client(enforce_csrf_checks=True), _signed_in(alice)):
        response = getattr(client, method)(
            "/api/gateway/nosuch", "{}", content_type="application/json"
        )
        assert response.status_code == 404, response.content[:200]
        assert response.json() == {"detail": "Not found."}


def _signed_in(user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


@pytest.mark.parametrize("method", ["post", "patch", "delete"])
def test_a_write_to_a_path_with_a_trailing_slash_names_the_path_meant(client, method):
    """The REST routes take no trailing slash: a write to one with it (which a redirect
    would turn into a GET) is a 404 that names the path meant."""
    response = getattr(client, method)("/api/gateway/keys/", "{}", content_type="application/json")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "Not found. Did you mean /api/gateway/keys (no trailing slash)?"
    }
    response = getattr(client, method)("/api/schema", "{}", content_type="application/json")
    assert response.json() == {"detail": "Not found. Did you mean /api/schema/ ?"}


@pytest.mark.parametrize(
    ("prefix", "noun"),
    [
        ("gateway/keys", "key"),
        ("gateway/providers", "provider"),
        ("gateway/routing-policies", "routing policy"),
        ("gateway/deployments", "deployment"),
        ("gateway/budgets", "budget"),
        ("gateway/members", "member"),
        ("gateway/teams", "team"),
    ],
)
def test_an_object_the_org_does_not_have_is_named_in_words(
    alice_client, charlie_client, org_a, prefix, noun
):
    """Another org's id and one that does not exist get the same 404, which said the
    server's class names ("No ApiKey matches the given query.")."""
    from gateway.tests.conftest import ACTOR
    from governance import services as gov

    theirs = gov.routing_policy_save(
        actor=ACTOR, org=org_a, name="s", strategy="failover", models=["a"]
    ).pk
    for pk in (theirs, 999_999):
        response = charlie_client.get(f"/api/{prefix}/{pk}")
        assert response.status_code == 404
        assert response.json() == {"detail": f"No {noun} {pk} in this org."}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_write_to_api_itself_is_a_json_404(client, method):
    """POST /api (no slash) was Django's APPEND_SLASH error: a 500 page with DEBUG on."""
    response = getattr(client, method)("/api", "{}", content_type="application/json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found. Did you mean /api/ ?"}
    assert client.get("/api").status_code == 301


def test_a_format_the_api_does_not_speak_is_not_said_as_no_such_object(alice_client, org_a):
    """?format=xml on a policy the org has said "No routing policy 1 in this org."."""
    from gateway.tests.conftest import ACTOR
    from governance import services as gov

    pk = gov.routing_policy_save(
        actor=ACTOR, org=org_a, name="s", strategy="failover", models=["a"]
    ).pk
    response = alice_client.get(f"/api/gateway/routing-policies/{pk}?format=xml")
    assert response.status_code == 404 and "No routing policy" not in response.json()["detail"]
    assert alice_client.get(f"/api/gateway/routing-policies/{pk}").status_code == 200


def test_a_long_text_sent_is_quoted_cut_short(alice_client, org_a):
    response = alice_client.post(
        "/api/gateway/routing-policies",
        {
            "name": "s",
            "strategy": "smart",
            "models": ["a", "b"],
            "smart": {"aggressiveness": "A" * 200_000},
        },
        content_type="application/json",
    )
    assert response.status_code == 400 and len(response.content) < 1000
    assert "… (200000 characters)" in response.json()["smart"][0]
