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
    from django.conf import settings

    from orgs.models import Organization

    from .digest import weekly_digest_send

    return sum(
        weekly_digest_send(org=org, now=timezone.now(), base_url=settings.PUBLIC_BASE_URL)
        for org in Organization.objects.all()
    )


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def usage_partitions_maintain():
    from .partitions import usage_partitions_maintain as maintain

    return maintain(now=timezone.now())
