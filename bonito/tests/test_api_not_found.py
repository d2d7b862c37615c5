"""A path under /api/ that names no endpoint is the REST API's JSON 404, not Django's HTML
page (scripts and the CLI parse the answer); one that exists with a trailing slash is
redirected there, as Django's APPEND_SLASH does."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/nope"),
        ("post", "/api/gateway/keys/"),  # the REST routes take no trailing slash
        ("delete", "/api/gateway/nothing/1"),
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
