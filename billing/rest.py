"""The REST API for usage records: logs, usage totals, analytics."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.models import ApiKey
from orgs.models import Team
from orgs.rest_base import (
    IdRelatedField,
    ModelSerializer,
    MoneySerializer,
    OrgScopedFields,
    OrgView,
    actor,
)

from . import budgets, selectors
from .models import Budget, UsageRecord
from .pagination import LogPagination


class UsageRecordSerializer(ModelSerializer):
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
            *UsageRecord.SMART_FIELDS,
        ]


class LogViewSet(OrgView, viewsets.ReadOnlyModelViewSet):
    """Request logs. Filters: range (1h, 24h, 7d, 30d, 90d) or since/until, model, provider,
    key, team, policy (a smart routing policy's id or name, or "(org default)"), status,
    source (shared_gateway or vpc_agent); ordering (created_at, latency_ms, cost, with - for
    descending)."""

    serializer_class = UsageRecordSerializer
    pagination_class = LogPagination  # counts at most COUNT_LIMIT rows (count_is_exact)

    queryset = UsageRecord.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        if self.action == "retrieve":
            return UsageRecord.objects.for_org(self.request.org).select_related("key", "team")
        qs, _since, _until = selectors.usage_records(
            self.request.org, self.request.query_params, "30d"
        )
        return qs.select_related("key", "team")


class _UsageBase(OrgView, APIView):
    default_range = "24h"

    def query(self, request):
        return selectors.usage_query(request.org, request.query_params, self.default_range)


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
    provider, key and team; smart routing's savings. Same filters as logs (policy: one
    smart routing policy's requests, so its A/B arms are compared alone)."""

    default_range = "7d"

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response(self.query(request).analytics())


class BudgetSerializer(OrgScopedFields, MoneySerializer):
    org_scoped = {"team": Team, "key": ApiKey}
    team = IdRelatedField(queryset=Team.objects.none(), allow_null=True, required=False)
    key = IdRelatedField(queryset=ApiKey.objects.none(), allow_null=True, required=False)
    thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=1000), required=False
    )
    webhook_url = serializers.URLField(
        write_only=True,
        required=False,
        allow_blank=True,
        help_text="Write-only: the URL carries its secret.",
    )
    has_webhook = serializers.SerializerMethodField()
    spent_usd = serializers.SerializerMethodField()

    class Meta:
        model = Budget
        fields = [
            "id",
            "scope",
            "team",
            "key",
            "period",
            "amount_usd",
            "hard",
            "thresholds",
            "webhook_url",
            "has_webhook",
            "is_active",
            "spent_usd",
            "created_at",
        ]

    def get_has_webhook(self, budget) -> bool:
        return bool(budget.webhook_url)

    def get_spent_usd(self, budget) -> str:
        from django.utils import timezone

        # The cost column's 8 places, as every spend is written (a database's sum may
        # carry more: SQLite's did, '0.0000925000000000000').
        return f"{budgets.budget_spent(budget, timezone.now()):.8f}"


class BudgetViewSet(
    OrgView,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Spending budgets for the org, a team or a key, per month or per day. Hard budgets
    make the gateway answer 429 at 100%. Writes need the admin role."""

    serializer_class = BudgetSerializer

    queryset = Budget.objects.none()  # for the OpenAPI schema; requests use org_queryset

    def org_queryset(self):
        return Budget.objects.for_org(self.request.org).select_related("team", "key").order_by("id")

    def _save(self, data, instance=None):
        fields = ("scope", "team", "key", "period", "amount_usd", "hard", "thresholds")
        merged = {f: getattr(instance, f) for f in fields if instance is not None}
        if instance is not None:
            merged["webhook_url"], merged["is_active"] = instance.webhook_url, instance.is_active
        merged.update(data)
        budget = budgets.budget_save(
            actor=actor(self.request), org=self.request.org, budget=instance, **merged
        )
        return self.get_queryset().get(pk=budget.pk)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        budget = self._save(serializer.validated_data)
        return Response(self.get_serializer(budget).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(self.get_serializer(self._save(serializer.validated_data, instance)).data)

    def destroy(self, request, *args, **kwargs):
        budgets.budget_delete(actor=actor(request), budget=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
