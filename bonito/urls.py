from django.contrib import admin
from django.urls import include, path

from . import health

urlpatterns = [
    path("api/health", health.health, name="health"),
    path("api/ready", health.ready, name="ready"),
    path("api/", include("bonito.api_urls")),
    path("admin/", admin.site.urls),
    path("", include("orgs.urls")),
]
