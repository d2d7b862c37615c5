"""Thin Celery tasks for orgs: take ids, call a service."""

from celery import shared_task


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=6)
def invitation_send(invitation_id: int, link: str, inviter: str):
    from .emails import invitation_email

    invitation_email(invitation_id=invitation_id, link=link, inviter=inviter)


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=6)
def password_reset_send(email: str, domain: str, use_https: bool):
    from .emails import password_reset_email

    password_reset_email(email=email, domain=domain, use_https=use_https)
