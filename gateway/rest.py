"""Management REST API for the gateway: keys, logs, usage, analytics, config, providers,
deployments and the model catalog. Every write goes through gateway.services (audited)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors
from billing.models import UsageRecord
from bonito.client_ip import client_ip
from bonito.numbers import to_decimal
from governance.audit import Actor
from governance.models import RoutingPolicy
from orgs.models import Team
from orgs.rest_auth import OrgRole

from . import services
from .dataplane import strategies
from .models import ApiKey, Deployment, GatewayConfig, ModelCatalogEntry, ProviderConnection


def actor(request) -> Actor:
    return Actor(user=request.user, ip=client_ip(request), via="api")


def django_errors(exc: DjangoValidationError) -> ValidationError:
    return ValidationError(
        exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
    )


class MoneyField(serializers.DecimalField):
    """A DecimalField that reads a JSON number or a string exactly from its text, in ASCII
    digits only (Decimal() also reads "٣" as 3), and refuses negative amounts."""

    def to_internal_value(self, data):
        try:
            number = to_decimal(data)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        if number < 0:
            raise ValidationError("must not be negative.")
        return super().to_internal_value(number)


class StrategyField(serializers.ChoiceField):
    """A routing strategy from the one registry; an unknown one is refused naming the
    allowed ones (the same message as every other way in)."""

    def __init__(self, **kwargs):
        super().__init__(choices=strategies.choices(), **kwargs)

    def to_internal_value(self, data):
        problem = strategies.error_for(data)
        if problem:
            raise ValidationError(problem)
        return data


class MoneySerializer(serializers.ModelSerializer):
    """A ModelSerializer whose model DecimalFields (money, prices) are MoneyFields."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DecimalField: MoneyField,
    }


class OrgView:
    permission_classes = [OrgRole]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication and permissions first
        # PostgreSQL refuses NUL in text: a filter holding one is a 400, never a 500.
        for name, value in request.query_params.items():
            if "\x00" in value or "\x00" in name:
                raise ValidationError(
                    {name.replace("\x00", ""): ["must not contain NUL characters."]}
                )

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request, no org
            return self.queryset
        return self.org_queryset()

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "org": getattr(self.request, "org", None)}


class OrgScopedFields:
    """Serializer mixin: relation fields named in ``org_scoped`` only accept this org's rows."""

    org_scoped: dict = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        org = self.context.get("org")
        if org is not None:
            for name, model in self.org_scoped.items():
                self.fields[name].queryset = model.objects.for_org(org)


# ------------------------------------------------------------------------------ keys
class ApiKeySerializer(OrgScopedFields, serializers.ModelSerializer):
    org_scoped = {"team": Team, "routing_policy": RoutingPolicy}
    key = serializers.CharField(source="masked", read_only=True)
    team = serializers.PrimaryKeyRelatedField(
        queryset=Team.objects.none(), allow_null=True, required=False
    )
    routing_policy = serializers.SlugRelatedField(
        slug_field="name", queryset=RoutingPolicy.objects.none(), allow_null=True, required=False
    )
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False
    )
    allowed_providers = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False
    )
    status = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "kind",
            "key",
            "allowed_models",
            "allowed_providers",
            "team",
            "routing_policy",
            "rpm_limit",
            "tpm_limit",
            "expires_at",
            "created_at",
            "revoked_at",
            "status",
        ]
        read_only_fields = ["kind", "created_at", "revoked_at"]

    def get_status(self, key) -> str:
        from django.utils import timezone

        if key.revoked_at:
            return "revoked"
        if key.expires_at and key.expires_at <= timezone.now():
            return "expired"
        return "active"


class ApiKeyViewSet(
    OrgView,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """bn- keys. `POST` returns the raw key once (`api_key`); `DELETE` revokes."""

    serializer_class = ApiKeySerializer
    write_role = "member"

    queryset = ApiKey.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        return ApiKey.objects.for_org(self.request.org).select_related("team", "routing_policy")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            key, raw = services.api_key_create(
                actor=actor(request),
                org=request.org,
                name=data["name"],
                team=data.get("team"),
                allowed_models=data.get("allowed_models", []),
                allowed_providers=data.get("allowed_providers", []),
                rpm_limit=data.get("rpm_limit"),
                tpm_limit=data.get("tpm_limit"),
                expires_at=data.get("expires_at"),
                routing_policy=data.get("routing_policy"),
            )
        except DjangoValidationError as exc:
            raise django_errors(exc) from exc
        body = {**self.get_serializer(key).data, "api_key": raw}
        return Response(body, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        key = self.get_object()
        if not request.membership.has_role("admin") and key.created_by_id != request.user.id:
            from rest_framework.exceptions import PermissionDenied

            raise PermissionDenied(
                "Members can revoke the keys they created; admins can revoke any key."
            )
        services.api_key_revoke(actor=actor(request), key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)


# ------------------------------------------------------------------------------ logs, usage, analytics
class UsageRecordSerializer(serializers.ModelSerializer):
    key_name = serializers.CharField(source="key.name", default=None, read_only=True)
    team_name = serializers.CharField(source="team.name", default=None, read_only=True)

    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "created_at",
            "request_id",
            "endpoint",
            "status",
            "http_status",
            "error_type",
            "model_requested",
            "model_used",
            "provider",
            "deployment",
            "key",
            "key_name",
            "team",
            "team_name",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "cost",
            "latency_ms",
            "ttft_ms",
            "source",
        ]


class LogViewSet(OrgView, viewsets.ReadOnlyModelViewSet):
    """Request logs. Filters: range (1h, 24h, 7d, 30d, 90d) or since/until, model, provider,
    key, team, status; ordering (created_at, latency_ms, cost, with - for descending)."""

    serializer_class = UsageRecordSerializer

    queryset = UsageRecord.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        if self.action == "retrieve":
            return UsageRecord.objects.for_org(self.request.org).select_related("key", "team")
        try:
            qs, _since, _until = selectors.usage_records(
                self.request.org, self.request.query_params, "30d"
            )
        except DjangoValidationError as exc:
            raise django_errors(exc) from exc
        return qs.select_related("key", "team")


class _UsageBase(OrgView, APIView):
    default_range = "24h"

    def query(self, request):
        try:
            return selectors.usage_query(request.org, request.query_params, self.default_range)
        except DjangoValidationError as exc:
            raise django_errors(exc) from exc


class UsageView(_UsageBase):
    """Totals for a time range (same filters as logs), and cost by model."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        query = self.query(request)
        return Response(
            {
                "since": query.since.isoformat(),
                "until": query.until.isoformat(),
                "rolled_up_until": query.rolled_until.isoformat() if query.rolled_until else None,
                **query.totals(),
                "by_model": query.breakdown("model"),
            }
        )


class AnalyticsView(_UsageBase):
    """Requests, tokens and cost over time; latency percentiles; error rate; cost by model,
    provider, key and team."""

    default_range = "7d"

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response(self.query(request).analytics())


# ------------------------------------------------------------------------------ gateway config
class GatewayConfigSerializer(serializers.ModelSerializer):
    default_strategy = StrategyField(required=False)
    enabled_providers = serializers.ListField(child=serializers.CharField(), required=False)
    fallback_models = serializers.ListField(child=serializers.CharField(), required=False)

    class Meta:
        model = GatewayConfig
        fields = list(services.GATEWAY_CONFIG_FIELDS)


class OrgSettingsView(OrgView, APIView):
    """GET/PUT of an org's one-row settings through its audited service function."""

    model = None
    serializer = None

    @staticmethod
    def service(**kwargs):
        raise NotImplementedError

    def get(self, request):
        row = self.model.objects.filter(org=request.org).first() or self.model(org=request.org)
        return Response(self.serializer(row).data)

    def put(self, request):
        serializer = self.serializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            row = type(self).service(
                actor=actor(request), org=request.org, **serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise django_errors(exc) from exc
        return Response(self.serializer(row).data)


class GatewayConfigView(OrgSettingsView):
    """The org's gateway settings: default strategy, enabled providers, fallback models, limits."""

    model = GatewayConfig
    serializer = serializer_class = GatewayConfigSerializer
    service = staticmethod(services.gateway_config_set)


# ------------------------------------------------------------------------------ providers, deployments
class ProviderSerializer(serializers.ModelSerializer):
    credentials = serializers.DictField(
        child=serializers.CharField(), write_only=True, required=False
    )
    has_credentials = serializers.BooleanField(read_only=True)
    active_deployments = serializers.SerializerMethodField()

    class Meta:
        model = ProviderConnection
        fields = [
            "id",
            "name",
            "kind",
            "api_base",
            "settings",
            "is_active",
            "credentials",
            "has_credentials",
            "active_deployments",
            "created_at",
        ]

    def get_active_deployments(self, provider) -> int:
        return provider.n_active  # the viewset's queryset annotates it


class ProviderViewSet(OrgView, viewsets.ModelViewSet):
    """Provider connections. Credentials are write-only: no response ever includes them."""

    serializer_class = ProviderSerializer

    queryset = (
        ProviderConnection.objects.none()
    )  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        return ProviderConnection.objects.for_org(self.request.org).with_active_deployments()

    def _save(self, data, instance=None):
        try:
            provider = services.provider_save(
                actor=actor(self.request),
                org=self.request.org,
                name=data.get("name", instance and instance.name),
                kind=data.get("kind", instance and instance.kind),
                api_base=data.get("api_base", instance.api_base if instance else ""),
                settings=data.get("settings", instance.settings if instance else {}),
                credentials=data.get("credentials"),
                is_active=data.get("is_active", True),
            )
        except DjangoValidationError as exc:
            raise django_errors(exc) from exc
        return self.get_queryset().get(pk=provider.pk)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if (
            ProviderConnection.objects.for_org(request.org)
            .filter(name=serializer.validated_data["name"])
            .exists()
        ):
            raise ValidationError(
                {"name": "A provider with this name exists in this organization."}
            )
        provider = self._save(serializer.validated_data)
        return Response(self.get_serializer(provider).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        if (
            "name" in serializer.validated_data
            and serializer.validated_data["name"] != instance.name
        ):
            raise ValidationError({"name": "A provider cannot be renamed; create a new one."})
        return Response(self.get_serializer(self._save(serializer.validated_data, instance)).data)

    def destroy(self, request, *args, **kwargs):
        services.provider_delete(actor=actor(request), provider=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeploymentSerializer(OrgScopedFields, MoneySerializer):
    org_scoped = {"provider": ProviderConnection}
    provider = serializers.SlugRelatedField(
        slug_field="name", queryset=ProviderConnection.objects.none()
    )

    class Meta:
        model = Deployment
        fields = [
            "id",
            "model_name",
            "provider",
            "upstream_model",
            "region",
            "input_price_per_mtok",
            "output_price_per_mtok",
            "weight",
            "priority",
            "is_active",
            "created_at",
        ]


class DeploymentViewSet(OrgView, viewsets.ModelViewSet):
    serializer_class = DeploymentSerializer

    queryset = Deployment.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        qs = Deployment.objects.for_org(self.request.org).select_related("provider")
        if self.request.query_params.get("provider"):
            qs = qs.filter(provider__name=self.request.query_params["provider"])
        return qs

    def _save(self, data, instance=None):
        merged = {
            f: getattr(instance, f)
            for f in DeploymentSerializer.Meta.fields
            if instance is not None and f not in ("id", "created_at")
        }
        merged.update(data)
        try:
            return services.deployment_save(
                actor=actor(self.request),
                org=self.request.org,
                deployment=instance,
                model_name=merged["model_name"],
                provider=merged["provider"],
                upstream_model=merged["upstream_model"],
                region=merged.get("region", ""),
                weight=merged.get("weight", 1),
                priority=merged.get("priority"),
                is_active=merged.get("is_active", True),
                input_price_per_mtok=merged.get("input_price_per_mtok"),
                output_price_per_mtok=merged.get("output_price_per_mtok"),
            )
        except DjangoValidationError as exc:
            raise django_errors(exc) from exc

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(
            self.get_serializer(self._save(serializer.validated_data)).data,
            status=status.HTTP_201_CREATED,
        )

    def update(self, request, *args, **kwargs):
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(self.get_serializer(self._save(serializer.validated_data, instance)).data)

    def destroy(self, request, *args, **kwargs):
        services.deployment_delete(actor=actor(request), deployment=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class CatalogSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelCatalogEntry
        fields = [
            "name",
            "provider",
            "mode",
            "input_cost_per_token",
            "output_cost_per_token",
            "max_input_tokens",
            "max_output_tokens",
        ]


class CatalogViewSet(OrgView, viewsets.ReadOnlyModelViewSet):
    """The model catalog (LiteLLM's price map). Filters: search, provider, mode."""

    serializer_class = CatalogSerializer
    lookup_field = "name"
    lookup_value_regex = "[^?#]+"

    queryset = ModelCatalogEntry.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        qs = ModelCatalogEntry.objects.all()
        params = self.request.query_params
        if params.get("search"):
            qs = qs.filter(name__icontains=params["search"])
        if params.get("provider"):
            qs = qs.filter(provider=params["provider"])
        if params.get("mode"):
            qs = qs.filter(mode=params["mode"])
        return qs
