"""Thin Celery tasks: take arguments, call a service."""

from celery import shared_task
from django.utils import timezone

from . import services
from .budgets import budgets_check_all


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def usage_rollup_recent():
    return services.rollup_recent(now=timezone.now())


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def budgets_check():
    return budgets_check_all(now=timezone.now())


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def weekly_digests():
    """One task per org: an org whose digest fails (its mail refused) is retried alone. A
    retry of one task for every org sent the orgs before it theirs again, and never reached
    the ones after it. Retried when it fails (the database down at 08:00, the broker gone
    half-way), and redelivered when its worker is lost: each org's digest of a week is sent
    once whatever runs again (billing.models.DigestSent). Until 2026-12-04 this task was
    not acks_late, and a worker lost half-way lost the rest of the round."""
    from orgs.models import Organization

    now = timezone.now().isoformat()
    orgs = list(Organization.objects.values_list("id", flat=True))
    for org_id in orgs:
        weekly_digest.delay(org_id, now)
    return len(orgs)


# A mail server down at 08:00 Monday: retried for about an hour (60 s, 2, 4, 8, then every
# 10 min) before that week's digest is given up; it was three retries within seconds.
@shared_task(
    acks_late=True,
    autoretry_for=(Exception,),
    retry_backoff=60,
    retry_backoff_max=600,
    retry_jitter=False,
    max_retries=9,
)
def weekly_digest(org_id: int, now: str):
    from datetime import datetime

    from django.conf import settings

    from orgs.models import Organization

    from .digest import weekly_digest_send

    org = Organization.objects.filter(pk=org_id).first()
    if org is None:  # deleted since
        return 0
    return weekly_digest_send(
        org=org, now=datetime.fromisoformat(now), base_url=settings.PUBLIC_BASE_URL
    )


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def usage_partitions_maintain():
    from .partitions import usage_partitions_maintain as maintain

    return maintain(now=timezone.now())
