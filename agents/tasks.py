"""Thin Celery tasks: take arguments, call a service."""

from celery import shared_task
from django.utils import timezone

from .alerts import agent_heartbeats_check as check


@shared_task(name="agents.tasks.agent_heartbeats_check", acks_late=True)
def agent_heartbeats_check():
    return check(now=timezone.now())
