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
    """Email a reset link to the active account with this email, if there is one (Django's
    reset form renders it). An account made without a password (`create_user` without
    BONITO_USER_PASSWORD, an invitation to an SSO org) gets one too: a reset is how such a
    user first chooses a password (README, Management commands); Django's form skips them.
    Where an org's SSO keeps a member from password sign-in, the sign-in page still does."""
    import unicodedata

    from django.contrib.auth.forms import PasswordResetForm

    from .models import User

    def same(text):
        return unicodedata.normalize("NFKC", text).casefold()

    class _Form(PasswordResetForm):
        def get_users(self, email):
            for user in User.objects.filter(email__iexact=email, is_active=True):
                # As Django's form: the stored email must match as typed (NFKC, any case),
                # not merely under the database's case folding.
                if same(email) == same(user.email):
                    yield user

    form = _Form({"email": email})
    if form.is_valid():
        form.save(domain_override=domain, use_https=use_https)
