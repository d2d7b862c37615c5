from .models import Membership

SECTIONS = [
    ("overview", "Overview"),
    ("keys", "Keys"),
    ("usage", "Usage"),
    ("logs", "Logs"),
    ("policies", "Policies"),
    ("routing", "Routing"),
    ("providers", "Providers"),
    ("playground", "Playground"),
    ("team", "Team"),
    ("settings", "Settings"),
]


def dashboard(request):
    """Navigation and the org switcher for every dashboard page."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    memberships = getattr(request, "_memberships", None)
    if memberships is None:
        memberships = list(Membership.objects.filter(user=user).select_related("org"))
        request._memberships = memberships
    membership = getattr(request, "membership", None)
    return {
        "nav_sections": SECTIONS,
        "my_memberships": memberships,
        "current_org": membership.org if membership else None,
        "current_membership": membership,
        "can_manage": bool(membership and membership.has_role("admin")),
        "can_use": bool(membership and membership.has_role("member")),
    }
