from django.contrib import admin
from django.urls import include, path, re_path

from gateway.api import api as v1_api
from gateway.api import not_found as v1_not_found

from . import health

urlpatterns = [
    path("api/health", health.health, name="health"),
    path("api/ready", health.ready, name="ready"),
    path("v1/", v1_api.urls),
    re_path(r"^v1/(?P<rest>.*)$", v1_not_found),
    path("admin/", admin.site.urls),
    path("", include("orgs.urls")),
]
