from .models import Membership


def dashboard(request):
    """The org switcher and the viewer's role on every dashboard page (the sections come
    from bonito.navigation)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    memberships = getattr(request, "_memberships", None)
    if memberships is None:
        memberships = list(Membership.objects.filter(user=user).select_related("org"))
        request._memberships = memberships
    membership = getattr(request, "membership", None)
    return {
        "my_memberships": memberships,
        "current_org": membership.org if membership else None,
        "current_membership": membership,
        "can_manage": bool(membership and membership.has_role("admin")),
        "can_use": bool(membership and membership.has_role("member")),
        # A platform admin viewing the org read-only (orgs.view_as): the banner.
        "viewing_as": bool(membership and getattr(membership, "view_as", False)),
    }
