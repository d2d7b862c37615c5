"""The REST API for usage records: logs, usage totals, analytics."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from orgs.rest_base import OrgView

from . import selectors
from .models import UsageRecord


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
            *UsageRecord.SMART_FIELDS,
        ]


class LogViewSet(OrgView, viewsets.ReadOnlyModelViewSet):
    """Request logs. Filters: range (1h, 24h, 7d, 30d, 90d) or since/until, model, provider,
    key, team, status, source (shared_gateway or vpc_agent); ordering (created_at, latency_ms,
    cost, with - for descending)."""

    serializer_class = UsageRecordSerializer

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
    provider, key and team."""

    default_range = "7d"

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response(self.query(request).analytics())


# ------------------------------------------------------------------------------ gateway config
