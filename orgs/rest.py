"""Management REST API for teams, members, invitations and personal access tokens."""

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import Throttled
from rest_framework.response import Response
from rest_framework.views import APIView

from core.show_once import no_store

from . import services, throttle
from .models import Invitation, Membership, PersonalAccessToken, Role, Team
from .rest_base import IdRelatedField, ModelSerializer, OrgScopedFields, OrgView, actor


class TeamSerializer(ModelSerializer):
    class Meta:
        model = Team
        fields = ["id", "name", "description", "created_at"]


class TeamViewSet(
    OrgView,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Teams. `PATCH` renames one or changes its description; `DELETE` refuses a team that
    still has budgets."""

    serializer_class = TeamSerializer

    queryset = Team.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        return Team.objects.for_org(self.request.org)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        team = services.team_create(
            actor=actor(request), org=request.org, **serializer.validated_data
        )
        return Response(self.get_serializer(team).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        team = self.get_object()
        serializer = self.get_serializer(team, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = services.team_update(
            actor=actor(request),
            team=team,
            name=data.get("name", team.name),
            description=data.get("description", team.description),
        )
        return Response(self.get_serializer(team).data)

    def destroy(self, request, *args, **kwargs):
        services.team_delete(actor=actor(request), team=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberSerializer(OrgScopedFields, ModelSerializer):
    org_scoped = {"team": Team}
    email = serializers.EmailField(source="user.email", read_only=True)
    name = serializers.CharField(source="user.name", read_only=True)
    role = serializers.ChoiceField(choices=Role.choices)
    team = IdRelatedField(queryset=Team.objects.none(), allow_null=True, required=False)

    class Meta:
        model = Membership
        fields = ["id", "email", "name", "role", "team", "created_at"]


class MemberViewSet(
    OrgView,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Members and their roles. Add people with invitations."""

    serializer_class = MemberSerializer

    queryset = Membership.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        return Membership.objects.for_org(self.request.org).select_related("user", "team")

    def update(self, request, *args, **kwargs):
        membership = self.get_object()
        serializer = self.get_serializer(membership, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        services.membership_set_role(
            actor=actor(request),
            membership=membership,
            role=data.get("role", membership.role),
            team=data.get("team", membership.team),
        )
        return Response(self.get_serializer(self.get_queryset().get(pk=membership.pk)).data)

    def destroy(self, request, *args, **kwargs):
        services.membership_remove(actor=actor(request), membership=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationSerializer(OrgScopedFields, ModelSerializer):
    org_scoped = {"team": Team}
    team = IdRelatedField(queryset=Team.objects.none(), allow_null=True, required=False)

    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "team", "status", "created_at", "expires_at"]
        read_only_fields = ["status", "created_at", "expires_at"]


class InvitationViewSet(
    OrgView,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Pending invitations; `POST` emails one, `DELETE` revokes it, `POST …/resend` emails
    it again with a new link (the earlier one stops working)."""

    serializer_class = InvitationSerializer

    queryset = Invitation.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        return Invitation.objects.for_org(self.request.org).pending().select_related("team")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():  # counted before another send (the limits hold rows)
            refused = throttle.invitation_send_refusal(request, request.org)
            if refused:
                raise Throttled(wait=refused[0], detail=refused[1])
            invitation, _raw = services.invitation_create(
                actor=actor(request),
                org=request.org,
                base_url=request.build_absolute_uri("/"),
                **serializer.validated_data,
            )
        return Response(self.get_serializer(invitation).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        services.invitation_revoke(actor=actor(request), invitation=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: InvitationSerializer})
    @action(detail=True, methods=["post"])
    def resend(self, request, *args, **kwargs):
        invitation = self.get_object()
        with transaction.atomic():  # counted before another send (the limits hold rows)
            refused = throttle.invitation_resend_refusal(request, invitation)
            if refused:
                raise Throttled(wait=refused[0], detail=refused[1])
            invitation, _raw = services.invitation_resend(
                actor=actor(request),
                invitation=invitation,
                base_url=request.build_absolute_uri("/"),
            )
        return Response(self.get_serializer(invitation).data)


class TokenSerializer(ModelSerializer):
    token = serializers.SerializerMethodField()

    class Meta:
        model = PersonalAccessToken
        fields = ["id", "name", "token", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["created_at", "last_used_at", "revoked_at"]

    def get_token(self, obj) -> str:
        return f"{obj.prefix}…{obj.last4}"


class TokenViewSet(
    OrgView,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Your own personal access tokens for this org. `POST` shows the raw token once."""

    serializer_class = TokenSerializer
    write_role = "viewer"

    queryset = (
        PersonalAccessToken.objects.none()
    )  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        return PersonalAccessToken.objects.filter(org=self.request.org, user=self.request.user)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, raw = services.pat_create(
            actor=actor(request),
            user=request.user,
            org=request.org,
            name=serializer.validated_data["name"],
        )
        return no_store(  # the raw token, once: never kept by a cache
            Response(
                {**self.get_serializer(token).data, "access_token": raw},
                status=status.HTTP_201_CREATED,
            )
        )

    def destroy(self, request, *args, **kwargs):
        services.pat_revoke(actor=actor(request), token=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeSerializer(serializers.Serializer):
    email = serializers.EmailField()
    name = serializers.CharField()
    org = serializers.DictField(child=serializers.CharField(), help_text="slug and name")
    role = serializers.ChoiceField(choices=Role.choices)
    auth = serializers.ChoiceField(choices=["token", "session"])


class MeView(OrgView, APIView):
    """Who this token (or session) acts as: the user, the org and the role there."""

    @extend_schema(responses={200: MeSerializer})
    def get(self, request):
        org = request.org
        return Response(
            {
                "email": request.user.email,
                "name": request.user.name,
                "org": {"slug": org.slug, "name": org.name},
                "role": request.membership.role,
                "auth": "token" if isinstance(request.auth, PersonalAccessToken) else "session",
            }
        )
