"""Management REST API for the gateway: keys, logs, usage, analytics, config, providers,
deployments and the model catalog. Every write goes through gateway.services (audited)."""

from decimal import Decimal

import yaml
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from core.show_once import no_store
from governance import rest as governance_rest
from governance import services as governance_services
from governance.models import RoutingPolicy
from orgs.config import ConfigError, config_load
from orgs.models import Team
from orgs.rest_base import (
    IdRelatedField,
    ModelSerializer,
    MoneySerializer,
    NameRelatedField,
    NameText,
    OrgScopedFields,
    OrgSettingsView,
    OrgView,
    SmartSettingsField,
    StrategyField,
    actor,
)

from . import config, selectors, services
from .dataplane import provider_kinds
from .models import ApiKey, Deployment, GatewayConfig, ModelCatalogEntry, ProviderConnection


# ------------------------------------------------------------------------------ keys
class KeyExpiryField(serializers.DateTimeField):
    """A key's expiry, read by services.key_expiry as every way in reads it (a date alone
    is the end of that day, 23:59:59 UTC); shown as an ISO 8601 time."""

    def __init__(self, **kwargs):
        super().__init__(help_text=services.KEY_EXPIRY_HELP, **kwargs)

    def to_internal_value(self, value):
        try:
            return services.key_expiry(value)
        except DjangoValidationError as exc:
            raise ValidationError(exc.messages) from None


class ApiKeySerializer(OrgScopedFields, ModelSerializer):
    org_scoped = {"team": Team, "routing_policy": RoutingPolicy}
    key = serializers.CharField(source="masked", read_only=True)
    team = IdRelatedField(queryset=Team.objects.none(), allow_null=True, required=False)
    routing_policy = NameRelatedField(
        slug_field="name", queryset=RoutingPolicy.objects.none(), allow_null=True, required=False
    )
    allowed_models = serializers.ListField(child=NameText(max_length=200), required=False)
    allowed_providers = serializers.ListField(child=NameText(max_length=100), required=False)
    expires_at = KeyExpiryField(allow_null=True, required=False)
    status = serializers.SerializerMethodField()
    spend_this_month = serializers.SerializerMethodField(
        help_text="USD this calendar month (UTC), exact: from rollups and the live edges."
    )
    old_key_valid_until = serializers.SerializerMethodField(
        help_text="After a rotation with a grace period: when the replaced secret stops "
        "working (null: it does not work)."
    )

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
            "is_active",
            "status",
            "last_used_at",
            "spend_this_month",
            "old_key_valid_until",
        ]
        read_only_fields = ["kind", "created_at", "revoked_at", "is_active", "last_used_at"]

    def get_spend_this_month(self, key) -> str:
        spend = getattr(key, "spend_this_month", None)
        if spend is None:  # one key (create, update, rotate): its own sum
            spend = selectors.key_spend_this_month(key.org_id).get(key.id, Decimal(0))
        return f"{spend:.8f}"

    def get_old_key_valid_until(self, key) -> str | None:
        return key.previous_valid_until.isoformat() if key.previous_valid() else None

    def get_status(self, key) -> str:
        from django.utils import timezone

        if key.revoked_at:
            return "revoked"
        if not key.is_active:
            return "disabled"
        if key.expires_at and key.expires_at <= timezone.now():
            return "expired"
        return "active"


def _check_may_change(request, key) -> None:
    if not services.api_key_may_change(request.membership, key):
        raise PermissionDenied(
            "Members can edit, revoke or rotate the keys they created; admins can change any key."
        )


class RotateSerializer(serializers.Serializer):
    grace_seconds = serializers.IntegerField(
        min_value=0,
        max_value=services.ROTATION_GRACE_MAX_S,
        default=0,
        help_text="How long the old secret keeps working (seconds; 0: it stops at once). "
        "The dashboard offers none, 1 hour, 24 hours and 7 days.",
    )


class ApiKeyViewSet(
    OrgView,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """bn- keys. `POST` returns the raw key once (`api_key`); `PATCH` edits the fields
    given; `DELETE` revokes; `POST …/rotate` gives a key a new secret; `POST …/disable` and
    `POST …/enable` turn it off and on again (reversibly)."""

    serializer_class = ApiKeySerializer
    write_role = "member"

    queryset = ApiKey.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        return ApiKey.objects.for_org(self.request.org).select_related("team", "routing_policy")

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        # The page's keys with their month's spend: a fixed number of queries for any page.
        rows = selectors.keys_with_spend(page if page is not None else queryset)
        data = self.get_serializer(rows, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    def partial_update(self, request, *args, **kwargs):
        """Change the fields given (name, scopes, team, limits, expiry, routing policy),
        with the same checks as creating. Members edit the keys they created."""
        key = self.get_object()
        _check_may_change(request, key)
        serializer = self.get_serializer(key, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        key = services.api_key_update(
            actor=actor(request),
            key=key,
            membership=request.membership,
            **serializer.validated_data,
        )
        return Response(self.get_serializer(key).data)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
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
            membership=request.membership,
        )
        body = {**self.get_serializer(key).data, "api_key": raw}
        return no_store(Response(body, status=status.HTTP_201_CREATED))

    def destroy(self, request, *args, **kwargs):
        key = self.get_object()
        _check_may_change(request, key)
        services.api_key_revoke(actor=actor(request), key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=RotateSerializer, responses={200: ApiKeySerializer})
    @action(detail=True, methods=["post"])
    def rotate(self, request, *args, **kwargs):
        """A new secret for the key (raw once, in `api_key`); the key keeps its id, settings
        and spend. The old secret works `grace_seconds` more (default 0: it stops at once;
        `old_key_valid_until` says until when). Same rule as revoking: members rotate their
        own keys."""
        key = self.get_object()
        _check_may_change(request, key)
        body = RotateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key, raw = services.api_key_rotate(
            actor=actor(request), key=key, grace_seconds=body.validated_data["grace_seconds"]
        )
        return no_store(Response({**self.get_serializer(key).data, "api_key": raw}))

    def _set_active(self, request, active: bool) -> Response:
        key = self.get_object()
        key = services.api_key_set_active(
            actor=actor(request), key=key, active=active, membership=request.membership
        )
        return Response(self.get_serializer(key).data)

    @extend_schema(request=None, responses={200: ApiKeySerializer})
    @action(detail=True, methods=["post"])
    def disable(self, request, *args, **kwargs):
        """Refuse the key on /v1 (401) until it is enabled; it keeps its secret, settings,
        spend and history. Members disable the keys they created; admins any key."""
        return self._set_active(request, False)

    @extend_schema(request=None, responses={200: ApiKeySerializer})
    @action(detail=True, methods=["post"])
    def enable(self, request, *args, **kwargs):
        """Let a disabled key work again (admins only; a revoked key stays revoked: 400)."""
        return self._set_active(request, True)


class GatewayConfigSerializer(ModelSerializer):
    default_strategy = StrategyField(required=False)
    enabled_providers = serializers.ListField(child=NameText(), required=False)
    fallback_models = serializers.ListField(child=NameText(), required=False)
    smart_tiers = serializers.ListField(child=NameText(), required=False)
    # Merged into the stored settings as a PATCH of a routing policy merges (null: none).
    smart = SmartSettingsField(required=False, allow_null=True)
    cors_origins = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Origins whose browser pages may call /v1 with this org's keys: "
        "scheme://host[:port] each, or * alone for any; empty: none (docs/gateway.md, CORS).",
    )

    class Meta:
        model = GatewayConfig
        fields = list(services.GATEWAY_CONFIG_FIELDS)


class GatewayConfigView(OrgSettingsView):
    """The org's gateway settings: default strategy, enabled providers, fallback models, limits,
    the org default's smart routing. A PUT answers with `warnings` too: what the Routing page
    warns of the smart tiers (a tier no active deployment serves, a lower tier dearer than
    the top one); saved all the same."""

    model = GatewayConfig
    serializer = serializer_class = GatewayConfigSerializer

    @staticmethod
    def service(*, actor, org, **fields):
        # Like every setting here, `smart` changes only in what it sends (the README: fields
        # not sent are kept): its keys are merged over the stored ones (JSON Merge Patch).
        if "smart" in fields:
            saved = GatewayConfig.objects.filter(org=org).values_list("smart", flat=True)
            fields["smart"] = governance_services.smart_merged(saved.first(), fields["smart"])
        return services.gateway_config_set(actor=actor, org=org, **fields)

    def put(self, request):
        response = super().put(request)
        tiers = response.data.get("smart_tiers") or []
        response.data = {
            **response.data,
            "warnings": services.smart_tier_warnings(request.org, tiers),
        }
        return response


class RoutingPolicyViewSet(governance_rest.RoutingPolicyViewSet):
    """The org's routing policies (rt- keys route through one). Creating or updating one
    answers with `warnings` too: what the Routing page warns of a smart policy's tiers (a
    tier no active deployment serves; a lower tier dearer than the top one, so its prompts
    cost more than on the top tier); the policy is saved all the same. (The governance app's view, with the gateway's prices.)"""

    def create(self, request, *args, **kwargs):
        return self._warned(super().create(request, *args, **kwargs))

    def update(self, request, *args, **kwargs):
        return self._warned(super().update(request, *args, **kwargs))

    def _warned(self, response):
        saved = response.data
        tiers = saved["models"] if saved.get("strategy") == "smart" else []
        response.data = {
            **saved,
            "warnings": services.smart_tier_warnings(self.request.org, tiers),
        }
        return response


# ------------------------------------------------------------------------------ providers, deployments
def _fields_by_kind(store: str) -> str:
    """What each kind takes in ``store`` (from dataplane/provider_kinds.py), for the schema."""
    return "; ".join(
        f"{kind.name}: "
        + (", ".join(f.name + ("*" if f.required else "") for f in kind.fields_in(store)) or "none")
        for kind in provider_kinds.KINDS.values()
    )


class ProviderSerializer(ModelSerializer):
    credentials = serializers.DictField(
        child=serializers.CharField(),
        write_only=True,
        required=False,
        help_text="Write-only, encrypted at rest; replaces the stored ones. By kind "
        f"(* required): {_fields_by_kind(provider_kinds.CREDENTIALS)}.",
    )
    settings = serializers.JSONField(
        required=False,
        help_text=f"Non-secret options. By kind: {_fields_by_kind(provider_kinds.SETTINGS)}.",
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
        extra_kwargs = {
            "kind": {"error_messages": {"invalid_choice": provider_kinds.unknown("{input}")}}
        }

    def get_active_deployments(self, provider) -> int:
        return provider.n_active  # the viewset's queryset annotates it


class ProviderTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    detail = serializers.CharField()


class ProviderViewSet(OrgView, viewsets.ModelViewSet):
    """Provider connections. Credentials are write-only: no response ever includes them."""

    serializer_class = ProviderSerializer

    queryset = (
        ProviderConnection.objects.none()
    )  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        return ProviderConnection.objects.for_org(self.request.org).with_active_deployments()

    def _save(self, data, instance=None):
        # A new provider's name must be free (provider_create); an update keeps its name.
        save = services.provider_create if instance is None else services.provider_save
        provider = save(
            actor=actor(self.request),
            org=self.request.org,
            name=data.get("name", instance and instance.name),
            kind=data.get("kind", instance and instance.kind),
            api_base=data.get("api_base", instance.api_base if instance else ""),
            settings=data.get("settings", instance.settings if instance else {}),
            credentials=data.get("credentials"),
            # A PATCH that does not name is_active keeps it (a disabled provider stays so).
            is_active=data.get("is_active", instance.is_active if instance else True),
        )
        return self.get_queryset().get(pk=provider.pk)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
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
            raise ValidationError({"name": ["A provider cannot be renamed; create a new one."]})
        if (
            "kind" in serializer.validated_data
            and serializer.validated_data["kind"] != instance.kind
        ):
            # Its settings and credentials are the old kind's (the dashboard does not offer
            # it either).
            raise ValidationError(
                {"kind": "A provider's kind cannot be changed; create a new one."}
            )
        return Response(self.get_serializer(self._save(serializer.validated_data, instance)).data)

    def destroy(self, request, *args, **kwargs):
        services.provider_delete(actor=actor(request), provider=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: ProviderTestSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, *args, **kwargs):
        """Send a 1-token request to one of the provider's active deployments (no usage row)."""
        ok, detail = services.provider_test(provider=self.get_object())
        return Response({"ok": ok, "detail": detail})


class DeploymentSerializer(OrgScopedFields, MoneySerializer):
    org_scoped = {"provider": ProviderConnection}
    provider = NameRelatedField(slug_field="name", queryset=ProviderConnection.objects.none())

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
            "unit_price",
            "weight",
            "priority",
            "timeout_s",
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
        # A new one's (model, provider, upstream) must be free (deployment_create).
        save = services.deployment_create if instance is None else services.deployment_save
        merged = {
            f: getattr(instance, f)
            for f in DeploymentSerializer.Meta.fields
            if instance is not None and f not in ("id", "created_at")
        }
        merged.update(data)
        extra = {"deployment": instance} if instance is not None else {}
        return save(
            actor=actor(self.request),
            org=self.request.org,
            **extra,
            model_name=merged["model_name"],
            provider=merged["provider"],
            upstream_model=merged["upstream_model"],
            region=merged.get("region", ""),
            weight=merged.get("weight", 1),
            priority=merged.get("priority"),
            is_active=merged.get("is_active", True),
            input_price_per_mtok=merged.get("input_price_per_mtok"),
            output_price_per_mtok=merged.get("output_price_per_mtok"),
            unit_price=merged.get("unit_price"),
            timeout_s=merged.get("timeout_s"),
        )

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


class CatalogSerializer(ModelSerializer):
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
    """The model catalog (LiteLLM's price map). Filters: search (name or provider),
    provider, mode, served=1 (only the models this org's deployments call)."""

    serializer_class = CatalogSerializer
    lookup_field = "name"
    lookup_value_regex = "[^?#]+"

    queryset = ModelCatalogEntry.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        from .selectors import catalog_entries  # the dashboard's Models page reads the same

        return catalog_entries(self.request.query_params, org=self.request.org)


# ------------------------------------------------------------------------------ config file
class ConfigApplySerializer(serializers.Serializer):
    yaml = serializers.CharField(
        trim_whitespace=False,
        help_text="An apply_config file for this org: its gateway sections (providers, "
        "deployments, policy, routing_policies, gateway), teams, name, deployment_mode and "
        "vpc_only, at the top level or as the only entry of `orgs:`. See docs/config.md.",
    )
    dry_run = serializers.BooleanField(default=False, help_text="Report the changes; keep none.")


class ConfigChangeSerializer(serializers.Serializer):
    action = serializers.CharField()
    target_type = serializers.CharField()
    target = serializers.CharField()
    changes = serializers.JSONField()


class ConfigApplyResultSerializer(serializers.Serializer):
    applied = serializers.BooleanField()
    changes = ConfigChangeSerializer(many=True)
    warnings = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Only when there are some: what the Routing page warns of the smart tiers "
        "the file sets (a lower tier dearer than the top one); the file is applied all the "
        "same.",
    )


class ConfigApplyView(OrgView, APIView):
    """Apply a config file to this org in one transaction (all of it or none of it), or with
    `dry_run` only list what it would change. Needs the admin role."""

    @extend_schema(request=ConfigApplySerializer, responses={200: ConfigApplyResultSerializer})
    def post(self, request):
        serializer = ConfigApplySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            data = config_load(serializer.validated_data["yaml"])
        except yaml.YAMLError as exc:
            raise ValidationError({"yaml": [f"not valid YAML: {exc}"]}) from None
        dry_run = serializer.validated_data["dry_run"]
        warnings: list[str] = []
        try:
            changes = config.org_config_apply(
                actor=actor(request), org=request.org, data=data, dry_run=dry_run, warnings=warnings
            )
        except ConfigError as exc:
            raise ValidationError({"yaml": [str(exc)]}) from None
        # Only when there are some: the answer of a file without them is as it always was.
        extra = {"warnings": warnings} if warnings else {}
        return Response({"applied": not dry_run, "changes": changes, **extra})


class ConfigExportSerializer(serializers.Serializer):
    yaml = serializers.CharField()


class ConfigExportView(OrgView, APIView):
    """This org's gateway sections as an apply_config file. Provider credentials are never
    included: applying the file back keeps the stored ones. Needs the admin role."""

    read_role = "admin"

    @extend_schema(responses={200: ConfigExportSerializer})
    def get(self, request):
        text = yaml.safe_dump(
            config.org_config_export(request.org), sort_keys=False, allow_unicode=True
        )
        return Response({"yaml": text})
