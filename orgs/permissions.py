"""Server-side role checks for dashboard views. Non-members get 404, never 403."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import Membership


def org_view(role: str = "viewer", write_role: str | None = None):
    """Load the org named in the URL for a member holding at least ``role``.

    ``write_role`` is the role required for unsafe methods (POST and friends); it
    defaults to ``role``. The view receives ``request.org`` and ``request.membership``.
    """

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapper(request, org_slug, *args, **kwargs):
            membership = (
                Membership.objects.select_related("org", "team")
                .filter(org__slug=org_slug, user=request.user)
                .first()
            )
            if membership is None:
                raise Http404("No such organization.")
            needed = role if request.method in ("GET", "HEAD", "OPTIONS") else (write_role or role)
            if not membership.has_role(needed):
                raise PermissionDenied(f"This needs the {needed} role in {membership.org.name}.")
            request.org = membership.org
            request.membership = membership
            request.session["current_org"] = membership.org.slug
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
