"""Server-side role checks for dashboard views. Non-members get 404, never 403."""

from functools import wraps

from asgiref.sync import iscoroutinefunction
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import Membership


def _memberships(org_slug, user):
    return Membership.objects.select_related("org", "team").filter(org__slug=org_slug, user=user)


def _admit(request, membership, role: str, write_role: str | None) -> None:
    if membership is None:
        raise Http404("No such organization.")
    needed = role if request.method in ("GET", "HEAD", "OPTIONS") else (write_role or role)
    if not membership.has_role(needed):
        raise PermissionDenied(f"This needs the {needed} role in {membership.org.name}.")
    request.org = membership.org
    request.membership = membership


def org_view(role: str = "viewer", write_role: str | None = None):
    """Load the org named in the URL for a member holding at least ``role``.

    ``write_role`` is the role required for unsafe methods (POST and friends); it
    defaults to ``role``. The view receives ``request.org`` and ``request.membership``.
    Async views (the Playground) get the same check, made without blocking the loop.
    """

    def decorator(view):
        if iscoroutinefunction(view):

            @login_required
            @wraps(view)
            async def async_wrapper(request, org_slug, *args, **kwargs):
                user = await request.auser()
                _admit(request, await _memberships(org_slug, user).afirst(), role, write_role)
                await request.session.aset("current_org", request.org.slug)
                return await view(request, *args, **kwargs)

            return async_wrapper

        @login_required
        @wraps(view)
        def wrapper(request, org_slug, *args, **kwargs):
            _admit(request, _memberships(org_slug, request.user).first(), role, write_role)
            request.session["current_org"] = request.org.slug
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
