"""Static files carry the same Content-Security-Policy as the pages, and X-Frame-Options:
WhiteNoise serves them before the middleware that adds those headers to pages runs."""

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

pytestmark = pytest.mark.django_db


def _static_paths() -> list[str]:
    paths = set()
    for finder in finders.get_finders():
        for path, _storage in finder.list(ignore_patterns=[]):
            paths.add(path.replace("\\", "/"))
    return sorted(paths)


def _page_policy() -> str:
    return Client().get("/login/")["Content-Security-Policy"]


def test_every_static_file_carries_the_pages_policy_and_no_framing():
    policy = _page_policy()
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    paths = _static_paths()
    assert "drf_spectacular_sidecar/swagger-ui-dist/oauth2-redirect.html" in paths
    assert "js/bonito.js" in paths
    client = Client()
    for path in paths:
        response = client.get(f"/static/{path}")
        assert response.status_code == 200, path
        assert response.get("Content-Security-Policy") == policy, path
        assert response.get("X-Frame-Options") == "DENY", path
        if hasattr(response, "close"):
            response.close()


def test_the_static_policy_follows_the_settings(settings):
    # One source for the policy: a report URI set for pages reaches static files too.
    settings.CONTENT_SECURITY_POLICY = {
        "DIRECTIVES": {
            **settings.CONTENT_SECURITY_POLICY["DIRECTIVES"],
            "report-uri": ["https://csp.example/report"],
        }
    }
    response = Client().get("/static/drf_spectacular_sidecar/swagger-ui-dist/oauth2-redirect.html")
    assert response["Content-Security-Policy"] == _page_policy()
    assert "report-uri https://csp.example/report" in response["Content-Security-Policy"]
