from django.urls import path

from . import catalog_views, playground, views

# Pages under /o/<org_slug>/ and their places in the navigation (see orgs/urls.py).
org_urlpatterns = [
    path("keys/", views.keys, name="keys"),
    path("keys/<int:key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("keys/<int:key_id>/edit/", views.key_edit, name="key_edit"),
    path("keys/<int:key_id>/disable/", views.key_disable, name="key_disable"),
    path("keys/<int:key_id>/enable/", views.key_enable, name="key_enable"),
    path("keys/<int:key_id>/rotate/", views.key_rotate, name="key_rotate"),
    path("keys/<int:key_id>/rotated/", views.key_rotated, name="key_rotated"),
    path("keys/<int:key_id>/created/", views.key_created, name="key_created"),
    path("policies/", views.policies, name="policies"),
    path("routing/", views.routing, name="routing"),
    path("providers/", views.providers, name="providers"),
    path("providers/deployments/", views.deployment_create, name="deployment_create"),
    path("providers/<int:provider_id>/", views.provider_edit, name="provider_edit"),
    path("providers/<int:provider_id>/test/", views.provider_test, name="provider_test"),
    path("settings/cors/", views.cors_settings, name="cors_settings"),
    path("providers/<int:provider_id>/delete/", views.provider_delete, name="provider_delete"),
    path(
        "providers/deployments/<int:deployment_id>/",
        views.deployment_edit,
        name="deployment_edit",
    ),
    path(
        "providers/deployments/<int:deployment_id>/delete/",
        views.deployment_delete,
        name="deployment_delete",
    ),
    path("routing/<int:policy_id>/", views.routing_policy_edit, name="routing_policy_edit"),
    path(
        "routing/<int:policy_id>/delete/",
        views.routing_policy_delete,
        name="routing_policy_delete",
    ),
    path("playground/", playground.playground, name="playground"),
    path("playground/stream/", playground.playground_stream, name="playground-stream"),
    path("models/", catalog_views.catalog, name="catalog"),
]
nav = [
    (20, "keys", "Keys"),
    (50, "policies", "Policies"),
    (60, "routing", "Routing"),
    (70, "providers", "Providers"),
    (80, "playground", "Playground"),
    (75, "catalog", "Models"),
]
