"""REST (DRF, as the rest of /api/): agent status per org, token rotation, and every agent
for platform admins. The org is the one in the URL; a non-member gets 404."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from core.show_once import no_store
from orgs.models import Membership, Organization, PersonalAccessToken
from orgs.rest_base import ModelSerializer, actor
from orgs.services import org_vpc_only_set

from . import selectors, services
from .models import Agent, OrgToken, status_for


class AgentSerializer(ModelSerializer):
    org = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = Agent
        fields = [
            "org",
            "agent_id",
            "hostname",
            "version",
            "status",
            "started_at",
            "uptime_s",
            "last_heartbeat_at",
            "config_version",
            "requests",
            "errors",
            "error_rate",
            "request_rate",
            "providers",
            "spool",
            "warnings",
        ]

    def get_status(self, obj) -> str:
        return status_for(obj.last_heartbeat_at)


def _membership(request, slug: str) -> Membership:
    """The caller's membership of the org in the URL; a personal access token only works
    for its own org. Anything else is a 404, as for every other org-scoped endpoint."""
    qs = Membership.objects.select_related("org").filter(user=request.user, org__slug=slug)
    if isinstance(request.auth, PersonalAccessToken):
        qs = qs.filter(org_id=request.auth.org_id)
    membership = qs.first()
    if membership is None:
        raise exceptions.NotFound("No such organization.")
    return membership


class VpcOnlySerializer(serializers.Serializer):
    vpc_only = serializers.BooleanField(
        help_text="Serve the org's keys only through its VPC agents: the shared gateway "
        "answers them 403 vpc_only. VPC mode only."
    )


def _admin_membership(request, slug: str) -> Membership:
    membership = _membership(request, slug)
    if not membership.has_role("admin"):
        raise exceptions.PermissionDenied(f"This needs the admin role in {membership.org.name}.")
    return membership


class OrgAgentView(APIView):
    """GET /api/orgs/{slug}/agent: the org's mode, indicator colour, tokens and agents.
    PATCH {"vpc_only": true|false} (admins): serve the org's keys only through its agents."""

    @extend_schema(request=VpcOnlySerializer, responses=OpenApiTypes.OBJECT)
    def patch(self, request, org_slug):
        org = _admin_membership(request, org_slug).org
        serializer = VpcOnlySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # (a service's ValidationError is a 400: orgs.rest_base.exception_handler)
        org_vpc_only_set(
            actor=actor(request), org=org, vpc_only=serializer.validated_data["vpc_only"]
        )
        return self.get(request, org_slug)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, org_slug):
        org = _membership(request, org_slug).org
        rows = selectors.org_agents(org)
        return Response(
            {
                "org": org.slug,
                "deployment_mode": org.deployment_mode,
                "vpc_only": org.vpc_only,
                "status": selectors.org_agent_status(org),
                "tokens": [
                    {
                        "id": t.masked,
                        "created_at": t.created_at,
                        "last_used_at": t.last_used_at,
                        "valid_until": t.grace_until,
                    }
                    for t in OrgToken.objects.for_org(org).usable()
                ],
                "agents": [
                    {**AgentSerializer(r["agent"]).data, "in_sync": r["in_sync"]} for r in rows
                ],
            }
        )


class OrgAgentTokenView(APIView):
    """POST /api/orgs/{slug}/agent/token: rotate the org token (admins); the new token is
    in the answer, once. The old one works until every agent uses the new one, or the
    grace period ends."""

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request, org_slug):
        org = _admin_membership(request, org_slug).org
        if org.deployment_mode != Organization.DeploymentMode.VPC:
            raise exceptions.ValidationError(
                {
                    "detail": [
                        "Switch the organization to VPC mode first (Settings → Deployment mode)."
                    ]
                }
            )
        token, raw = services.org_token_rotate(actor=actor(request), org=org)
        return no_store(
            Response({"token": raw, "id": token.masked, "created_at": token.created_at}, status=201)
        )


class SignedInPlatformAdmin(permissions.IsAdminUser):
    """A platform admin signed in: a personal access token reaches its own org only, even
    a platform admin's (one leaked from an org's CI must not read every org)."""

    message = (
        "Platform-wide endpoints need a signed-in platform admin; a personal access token "
        "reaches its own organization only."
    )

    def has_permission(self, request, view):
        return super().has_permission(request, view) and request.auth is None


class AdminAgentsView(APIView):
    """GET /api/admin/agents: every agent across orgs (platform admins, signed in)."""

    permission_classes = [SignedInPlatformAdmin]

    @extend_schema(responses=AgentSerializer(many=True))
    def get(self, request):
        agents = Agent.objects.select_related("org").order_by("org__slug", "hostname")
        return Response(AgentSerializer(agents, many=True).data)
