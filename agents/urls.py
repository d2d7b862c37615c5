from django.urls import path

from . import views

# Pages under /o/<org_slug>/ and their places in the navigation (see orgs/urls.py).
org_urlpatterns = [
    path("settings/deployment/", views.deployment, name="deployment"),
    path("agents/", views.agents, name="agents"),
]
nav = [(95, "agents", "Agents")]
