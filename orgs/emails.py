"""The emails orgs sends from its Celery tasks (orgs.tasks): invitations, password resets."""

from django.core.mail import send_mail
from django.template.loader import render_to_string

from core.text import one_line

from .models import Invitation


def invitation_email(*, invitation_id: int, link: str, inviter: str) -> None:
    invitation = Invitation.objects.select_related("org").get(pk=invitation_id)
    context = {"org": invitation.org, "link": link, "invitation": invitation, "inviter": inviter}
    send_mail(
        subject=one_line(f"You are invited to {invitation.org.name} on Bonito"),
        message=render_to_string("emails/invitation.txt", context),
        from_email=None,
        recipient_list=[invitation.email],
    )


def password_reset_email(*, email: str, domain: str, use_https: bool) -> None:
    """Email a reset link to the active account with this email and a usable password, if
    there is one (Django's reset form decides and renders; SSO-only users have no password)."""
    from django.contrib.auth.forms import PasswordResetForm

    form = PasswordResetForm({"email": email})
    if form.is_valid():
        form.save(domain_override=domain, use_https=use_https)
