"""Thin Celery tasks: take arguments, call a service."""

from celery import shared_task
from django.utils import timezone

from . import services


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def usage_rollup_recent():
    return services.rollup_recent(now=timezone.now())
