"""Server-side role checks for dashboard views. Non-members get 404, never 403.

A platform admin viewing an org (orgs.view_as) is admitted here with a read-only stand-in
membership: every page reads, every unsafe method is refused here, before any view runs."""

from functools import wraps

from asgiref.sync import iscoroutinefunction
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.response import TemplateResponse

from . import view_as
from .models import Membership, Organization

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class ReadOnly(PermissionDenied):
    """A write while viewing an org as platform admin."""


def _memberships(org_slug, user):
    return Membership.objects.select_related("org", "team").filter(org__slug=org_slug, user=user)


def _viewing(org_slug, user, session_slug):
    """The stand-in membership when ``user`` is viewing this org as platform admin."""
    if session_slug != org_slug or not view_as.may_view_as(user):
        return None
    org = Organization.objects.filter(slug=org_slug).first()
    return view_as.stand_in(org, user) if org else None


async def _aviewing(org_slug, user, session_slug):
    if session_slug != org_slug or not view_as.may_view_as(user):
        return None
    org = await Organization.objects.filter(slug=org_slug).afirst()
    return view_as.stand_in(org, user) if org else None


def _admit(request, membership, role: str, write_role: str | None) -> None:
    if membership is None:
        raise Http404("No such organization.")
    request.org = membership.org
    request.membership = membership
    unsafe = request.method not in SAFE_METHODS
    if getattr(membership, "view_as", False):
        if unsafe:
            raise ReadOnly(view_as.READ_ONLY_MESSAGE.format(org=membership.org.name))
        return  # a platform admin reads every page of the org, whatever its role
    needed = (write_role or role) if unsafe else role
    if not membership.has_role(needed):
        raise PermissionDenied(f"This needs the {needed} role in {membership.org.name}.")


def _read_only(request, exc: ReadOnly):
    """The refusal of a write while viewing: a 403 page saying why (with the banner)."""
    return TemplateResponse(request, "orgs/read_only.html", {"message": str(exc)}, status=403)


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
                membership = await _memberships(org_slug, user).afirst()
                if membership is None:
                    viewing = await request.session.aget(view_as.SESSION_KEY)
                    membership = await _aviewing(org_slug, user, viewing)
                try:
                    _admit(request, membership, role, write_role)
                except ReadOnly as exc:
                    return _read_only(request, exc)
                await request.session.aset("current_org", request.org.slug)
                return await view(request, *args, **kwargs)

            return async_wrapper

        @login_required
        @wraps(view)
        def wrapper(request, org_slug, *args, **kwargs):
            membership = _memberships(org_slug, request.user).first()
            if membership is None:
                viewing = request.session.get(view_as.SESSION_KEY)
                membership = _viewing(org_slug, request.user, viewing)
            try:
                _admit(request, membership, role, write_role)
            except ReadOnly as exc:
                return _read_only(request, exc)
            request.session["current_org"] = request.org.slug
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
