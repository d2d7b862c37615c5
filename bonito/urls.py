"""The project's URLs: every app's pages, the REST API, the admin. Each app owns its
urls.py; the dashboard's org pages from all of them share /o/<org_slug>/."""

from django.contrib import admin
from django.urls import include, path

from agents import urls as agents_urls
from agents.api import api as agent_api
from billing import urls as billing_urls
from gateway import urls as gateway_urls
from orgs import urls as orgs_urls

from . import health

DASHBOARD_APPS = (orgs_urls, gateway_urls, billing_urls, agents_urls)

urlpatterns = [
    path("api/health", health.health, name="health"),
    path("api/ready", health.ready, name="ready"),
    path("api/agent/", agent_api.urls),  # before /api/: the agent's own (ninja) API
    path("api/", include("bonito.api_urls")),
    path("admin/", admin.site.urls),
    path("", include("orgs.urls")),
    path(
        "o/<slug:org_slug>/",
        include([p for app in DASHBOARD_APPS for p in app.org_urlpatterns]),
    ),
]
