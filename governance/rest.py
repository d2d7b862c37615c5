"""Management REST API for policies, routing policies and the audit log."""

from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from core import strategies
from orgs.models import AuditLog
from orgs.rest_base import (
    ModelSerializer,
    MoneySerializer,
    NameText,
    OrgSettingsView,
    OrgView,
    SmartSettingsField,
    StrategyField,
    actor,
)

from . import services
from .models import Policy, RoutingPolicy


class PolicySerializer(MoneySerializer):
    allowed_models = serializers.ListField(child=NameText(), required=False)
    denied_models = serializers.ListField(child=NameText(), required=False)
    allowed_providers = serializers.ListField(child=NameText(), required=False)
    denied_providers = serializers.ListField(child=NameText(), required=False)
    allowed_regions = serializers.ListField(child=NameText(), required=False)

    class Meta:
        model = Policy
        fields = list(services.POLICY_FIELDS)


class PolicyView(OrgSettingsView):
    """The org's gateway policy (allow/deny lists, regions, monthly spend cap)."""

    model = Policy
    serializer = serializer_class = PolicySerializer
    service = staticmethod(services.policy_set)


class RoutingPolicySerializer(ModelSerializer):
    models = serializers.ListField(source="model_names", child=NameText(), allow_empty=False)
    weights = serializers.DictField(child=serializers.IntegerField(min_value=0), required=False)
    strategy = StrategyField(default=strategies.DEFAULT)
    # Checked by the service (core.smart.resolve): docs/smart-routing.md lists the settings.
    # A PATCH merges it into the stored settings (services.smart_merged); null: none.
    smart = SmartSettingsField(required=False, allow_null=True)

    class Meta:
        model = RoutingPolicy
        fields = ["id", "name", "strategy", "models", "weights", "smart", "is_active", "created_at"]


class RoutingPolicyViewSet(OrgView, viewsets.ModelViewSet):
    serializer_class = RoutingPolicySerializer

    queryset = RoutingPolicy.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        return RoutingPolicy.objects.for_org(self.request.org)

    def _save(self, data, instance=None, merge=False):
        strategy = data.get("strategy", instance.strategy if instance else strategies.DEFAULT)
        # The stored smart settings stay with a smart policy; switched to another strategy
        # without naming them, it lets them go (they apply to the smart strategy only).
        kept = instance.smart if instance and strategy == "smart" else {}
        smart = data.get("smart", kept) or {}
        if merge and "smart" in data:  # a PATCH changes only the smart settings it sends
            smart = services.smart_merged(kept, data["smart"])
        return services.routing_policy_save(
            actor=actor(self.request),
            org=self.request.org,
            name=data.get("name", instance and instance.name),
            strategy=strategy,
            models=data.get("model_names", instance.model_names if instance else []),
            weights=data.get("weights", instance.weights if instance else {}),
            smart=smart,
            is_active=data.get("is_active", instance.is_active if instance else True),
        )

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if self.get_queryset().filter(name=serializer.validated_data["name"]).exists():
            from rest_framework.exceptions import ValidationError

            raise ValidationError(
                {"name": "A routing policy with this name exists in this organization."}
            )
        return Response(
            self.get_serializer(self._save(serializer.validated_data)).data,
            status=status.HTTP_201_CREATED,
        )

    def update(self, request, *args, **kwargs):
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        if serializer.validated_data.get("name", instance.name) != instance.name:
            from rest_framework.exceptions import ValidationError

            # Its rt- keys show the name; a new policy takes another.
            raise ValidationError(
                {"name": ["A routing policy cannot be renamed; create a new one."]}
            )
        data = {**serializer.validated_data, "name": instance.name}
        # PUT's `smart` is the whole of it; PATCH's is merged (fields not sent stay in both).
        merge = kwargs.get("partial", False)
        return Response(self.get_serializer(self._save(data, instance, merge=merge)).data)

    def destroy(self, request, *args, **kwargs):
        services.routing_policy_delete(actor=actor(request), routing_policy=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditLogSerializer(ModelSerializer):
    class Meta:
        model = AuditLog
        fields = [
            "id",
            "created_at",
            "actor_label",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "changes",
            "ip",
        ]


class AuditLogViewSet(OrgView, viewsets.ReadOnlyModelViewSet):
    """The org's audit log, newest first. Filter with ?action=."""

    serializer_class = AuditLogSerializer
    read_role = "admin"

    queryset = AuditLog.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        qs = AuditLog.objects.for_org(self.request.org)
        if self.request.query_params.get("action"):
            qs = qs.filter(action=self.request.query_params["action"])
        return qs
