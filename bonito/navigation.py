"""The dashboard's navigation: each app lists its sections in its urls.py (`nav`): (order,
url name, label), or (order, url name, label, role) for a section only that role reads."""

from .urls import DASHBOARD_APPS

_ENTRIES = sorted(e for a in DASHBOARD_APPS for e in a.nav)
SECTIONS = [(e[1], e[2]) for e in _ENTRIES]
# The role a section needs to read, when it is more than viewer.
SECTION_ROLES = {e[1]: e[3] for e in _ENTRIES if len(e) > 3}


def sections(request):
    membership = getattr(request, "membership", None)

    def shown(name):
        role = SECTION_ROLES.get(name)
        if role is None or membership is None or getattr(membership, "view_as", False):
            return True
        return membership.has_role(role)

    return {"nav_sections": [(name, label) for name, label in SECTIONS if shown(name)]}
