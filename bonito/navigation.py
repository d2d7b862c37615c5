"""The dashboard's navigation: each app lists its sections in its urls.py (`nav`)."""

from .urls import DASHBOARD_APPS

SECTIONS = [
    (name, label) for _order, name, label in sorted(e for a in DASHBOARD_APPS for e in a.nav)
]


def sections(request):
    return {"nav_sections": SECTIONS}
