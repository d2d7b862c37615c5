"""Password sign-in, refused for members of an org that requires SSO (but its break-glass
owner). Sessions made by SSO are loaded by the same backend."""

from django.contrib.auth.backends import ModelBackend

# What login() records for sessions this project starts itself (invitations, SSO).
BACKEND = "orgs.backends.PasswordBackend"


class PasswordBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None:
            from .sso import password_blocked_by

            if password_blocked_by(user) is not None:
                return None
        return user
