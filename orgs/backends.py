"""Password sign-in, refused for members of an org that requires SSO (but its break-glass
owner). Sessions made by SSO are loaded by the same backend."""

from django.contrib.auth.backends import ModelBackend

# What login() records for sessions this project starts itself (invitations, SSO).
BACKEND = "orgs.backends.PasswordBackend"


class PasswordBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
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
