"""Read-only view-as: a platform admin looks at an org's dashboard without being a member.

The session names the org being viewed; `org_view` (orgs.permissions) then admits the
platform admin to that org's pages with a stand-in membership of the viewer role marked
`view_as`, and refuses every unsafe method before the view runs: the read-only guarantee
lives in that one place, not in each view. Starting and stopping are audited in the org's
audit log (its admins see who looked)."""

from django.db import transaction

from .audit import Actor, audit_record
from .models import Membership, Organization, Role

SESSION_KEY = "view_as"
READ_ONLY_MESSAGE = "Viewing {org} as platform admin — read only: changes are refused."


def may_view_as(user) -> bool:
    """Platform admins (staff with access to the Django admin) may view any org."""
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def stand_in(org: Organization, user) -> Membership:
    """An unsaved membership of the viewer role, marked read-only (never saved)."""
    membership = Membership(org=org, user=user, role=Role.VIEWER)
    membership.view_as = True
    return membership


def view_as_start(*, actor: Actor, session, org: Organization) -> None:
    with transaction.atomic():
        previous = view_as_org(session)
        if previous is not None and previous.pk != org.pk:
            audit_record(actor=actor, org=previous, action="view_as.stop", target=previous)
        if previous is None or previous.pk != org.pk:
            audit_record(actor=actor, org=org, action="view_as.start", target=org)
    session[SESSION_KEY] = org.slug


def view_as_stop(*, actor: Actor, session) -> Organization | None:
    org = view_as_org(session)
    if org is not None:
        audit_record(actor=actor, org=org, action="view_as.stop", target=org)
    session.pop(SESSION_KEY, None)
    return org


def view_as_org(session) -> Organization | None:
    slug = session.get(SESSION_KEY)
    return Organization.objects.filter(slug=slug).first() if slug else None
