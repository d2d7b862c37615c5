"""Platform-wide numbers for the admin System page."""

from django.utils import timezone

from orgs.models import Organization, User


def platform_counts() -> dict:
    from billing.models import UsageRecord
    from gateway.models import ApiKey

    start_of_day = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "organizations": Organization.objects.count(),
        "users": User.objects.count(),
        "active API keys": ApiKey.objects.active().count(),
        "requests today": UsageRecord.objects.filter(created_at__gte=start_of_day).count(),
    }
