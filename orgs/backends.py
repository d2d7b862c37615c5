"""Password sign-in, refused for members of an org that requires SSO (but its break-glass
owner). Sessions made by SSO are loaded by the same backend."""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend

# What login() records for sessions this project starts itself (invitations, SSO).
BACKEND = "orgs.backends.PasswordBackend"


def stored_email(typed: str) -> str:
    """The account email that `typed` names, matched trimmed and case-insensitively (emails
    are stored lower-case, but people type `Alice@Acme.test`). What was typed, trimmed, when
    no single account matches, so the caller still runs the hasher for it."""
    typed = typed.strip()
    matches = list(
        get_user_model()
        ._default_manager.filter(email__iexact=typed)
        .values_list("email", flat=True)[:2]
    )
    if typed in matches:
        return typed
    return matches[0] if len(matches) == 1 else typed


class PasswordBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.pop(get_user_model().USERNAME_FIELD, None)
        if isinstance(username, str):
            username = stored_email(username)
        # ModelBackend runs the hasher for unknown emails too, so both paths take as long.
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None:
            from .sso import password_blocked_by

            config = password_blocked_by(user)
            if config is not None:
                # Only a right password gets this far: the sign-in page may then say that the
                # org signs in through SSO (LoginForm) without telling anyone else who is a member.
                if request is not None:
                    request.password_blocked_by = config
                return None
        return user
