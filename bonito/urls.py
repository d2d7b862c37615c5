"""The project's URLs: every app's pages, the REST API, the admin. Each app owns its
urls.py; the dashboard's org pages from all of them share /o/<org_slug>/."""

from django.contrib import admin
from django.http import HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path, re_path

from agents import urls as agents_urls
from agents.api import api as agent_api
from agents.api import unknown_path as agent_unknown_path
from billing import urls as billing_urls
from bonito.api_urls import unknown_path as api_unknown_path
from gateway import urls as gateway_urls
from governance import urls as governance_urls
from orgs import urls as orgs_urls

from . import health

DASHBOARD_APPS = (orgs_urls, gateway_urls, governance_urls, billing_urls, agents_urls)


def favicon(request):
    """Browsers ask for /favicon.ico whatever the page links; the pages link the SVG
    (resolved per request: the static manifest exists only after collectstatic)."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


urlpatterns = [
    path("favicon.ico", favicon),
    path("api/health", health.health, name="health"),
    path("api/ready", health.ready, name="ready"),
    path("api/agent/", agent_api.urls),  # before /api/: the agent's own (ninja) API
    re_path(r"^api/agent/(?P<rest>.*)$", agent_unknown_path),
    path("api/", include("bonito.api_urls")),
    # "/api" itself: the API's JSON answers for every method (a write there was Django's
    # APPEND_SLASH error page: a 500 with DEBUG on)
    path("api", api_unknown_path),
    path("admin/", admin.site.urls),
    path("", include("orgs.urls")),
    path(
        "o/<slug:org_slug>/",
        include([p for app in DASHBOARD_APPS for p in app.org_urlpatterns]),
    ),
]
