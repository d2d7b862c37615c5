"""The management REST API (/api/) and its OpenAPI schema and docs."""

from django.http import HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, include, path, re_path, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from agents import rest as agents_rest
from billing import rest as billing_rest
from gateway import rest as gateway_rest
from governance import rest as governance_rest
from orgs import rest as orgs_rest


def _resolves(path: str) -> bool:
    try:
        return bool(resolve(path).url_name)
    except Resolver404:
        return False


@csrf_exempt  # it changes nothing: a POST to a wrong path is a 404, not a CSRF refusal
def unknown_path(request):
    """Any other path under /api/: the REST API's JSON error, not Django's HTML 404 page
    (for every method: a PATCH to a wrong path was Django's HTML "CSRF verification failed"
    page). A path that exists with a trailing slash is redirected there, as Django's
    APPEND_SLASH would (a catch-all resolves every path, so that middleware never would);
    for a write, which a redirect would turn into a GET, the 404 names the path meant."""
    here = request.path
    if not here.endswith("/") and _resolves(here + "/"):
        if request.method in ("GET", "HEAD"):
            query = request.META.get("QUERY_STRING", "")
            return HttpResponsePermanentRedirect(here + "/" + (f"?{query}" if query else ""))
        return JsonResponse({"detail": f"Not found. Did you mean {here}/ ?"}, status=404)
    if here.endswith("/") and here != "/api/" and _resolves(here.rstrip("/")):
        meant = here.rstrip("/")
        return JsonResponse(
            {"detail": f"Not found. Did you mean {meant} (no trailing slash)?"}, status=404
        )
    return JsonResponse({"detail": "Not found."}, status=404)


router = DefaultRouter(trailing_slash=False)
router.register("gateway/keys", gateway_rest.ApiKeyViewSet, basename="api-keys")
router.register("gateway/logs", billing_rest.LogViewSet, basename="api-logs")
router.register("gateway/providers", gateway_rest.ProviderViewSet, basename="api-providers")
router.register("gateway/deployments", gateway_rest.DeploymentViewSet, basename="api-deployments")
router.register("gateway/models", gateway_rest.CatalogViewSet, basename="api-models")
router.register(
    "gateway/routing-policies",
    gateway_rest.RoutingPolicyViewSet,  # governance's, with the smart tiers' price warnings
    basename="api-routing-policies",
)
router.register("gateway/audit", governance_rest.AuditLogViewSet, basename="api-audit")
router.register("gateway/teams", orgs_rest.TeamViewSet, basename="api-teams")
router.register("gateway/members", orgs_rest.MemberViewSet, basename="api-members")
router.register("gateway/invitations", orgs_rest.InvitationViewSet, basename="api-invitations")
router.register("tokens", orgs_rest.TokenViewSet, basename="api-tokens")
router.register("gateway/budgets", billing_rest.BudgetViewSet, basename="api-budgets")

urlpatterns = [
    path("gateway/usage", billing_rest.UsageView.as_view(), name="api-usage"),
    path("gateway/analytics", billing_rest.AnalyticsView.as_view(), name="api-analytics"),
    path("gateway/config", gateway_rest.GatewayConfigView.as_view(), name="api-config"),
    path("gateway/config/apply", gateway_rest.ConfigApplyView.as_view(), name="api-config-apply"),
    path(
        "gateway/config/export", gateway_rest.ConfigExportView.as_view(), name="api-config-export"
    ),
    path("me", orgs_rest.MeView.as_view(), name="api-me"),
    path("gateway/policy", governance_rest.PolicyView.as_view(), name="api-policy"),
    path("admin/agents", agents_rest.AdminAgentsView.as_view(), name="api-admin-agents"),
    path("orgs/<slug:org_slug>/agent", agents_rest.OrgAgentView.as_view(), name="api-org-agent"),
    path(
        "orgs/<slug:org_slug>/agent/token",
        agents_rest.OrgAgentTokenView.as_view(),
        name="api-org-agent-token",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file: the CSP forbids inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include(router.urls)),
    re_path(r"^.*$", unknown_path),
]
