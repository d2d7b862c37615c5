"""REST API auth: the dashboard session, or a personal access token as `Authorization: Bearer pat-…`.

Every API view works inside one org: the token's org, or for a session the `X-Bonito-Org`
header, `?org=<slug>`, or the org last opened in the dashboard. Non-members get 404."""

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, permissions
from rest_framework.authentication import BaseAuthentication

from core import keys

from .models import Membership, PersonalAccessToken, hash_token


class TokenAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header[:7].lower() != "bearer ":
            return None
        raw = header[7:].strip()
        if not keys.well_formed(raw, ("pat-",)):
            raise exceptions.AuthenticationFailed(
                "Invalid token. Create a personal access token in the dashboard."
            )
        token = (
            PersonalAccessToken.objects.active()
            .select_related("user", "org")
            .filter(token_hash=hash_token(raw))
            .first()
        )
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        if token.last_used_at is None or (timezone.now() - token.last_used_at).total_seconds() > 60:
            PersonalAccessToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="bonito"'


def resolve_membership(request) -> Membership:
    memberships = Membership.objects.select_related("org", "team").filter(user=request.user)
    if isinstance(request.auth, PersonalAccessToken):
        membership = memberships.filter(org=request.auth.org_id).first()
    else:
        slug = (
            request.headers.get("X-Bonito-Org")
            or request.query_params.get("org")
            or request.session.get("current_org")
        )
        if slug:
            membership = memberships.filter(org__slug=slug).first()
        else:
            found = list(memberships[:2])
            if len(found) > 1:
                raise exceptions.ValidationError(
                    {
                        "org": "You are in several organizations: say which with ?org=<slug> or an X-Bonito-Org header."
                    }
                )
            membership = found[0] if found else None
    if membership is None:
        raise exceptions.NotFound("No such organization.")
    return membership


class OrgRole(permissions.BasePermission):
    """Viewer reads; writes need the view's `write_role` (admin unless the view says member)."""

    def has_permission(self, request, view):
        if not request.user or not request.user.is_authenticated:
            return False
        membership = resolve_membership(request)
        request.org, request.membership = membership.org, membership
        safe = request.method in permissions.SAFE_METHODS
        needed = (
            getattr(view, "read_role", "viewer") if safe else getattr(view, "write_role", "admin")
        )
        if not membership.has_role(needed):
            raise exceptions.PermissionDenied(
                f"This needs the {needed} role in {membership.org.name}."
            )
        return True


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes personal access tokens in the OpenAPI schema."""

    target_class = TokenAuthentication
    name = "personalAccessToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal access token (pat-…) created in the dashboard's Settings.",
        }
